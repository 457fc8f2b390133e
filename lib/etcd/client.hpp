// An etcd v3 client over gRPC, for azote-region's control plane: KV (get, prefix pages,
// put, delete), transactions (compares on mod/create revision, version, value; put/get/
// delete ops), leases, maintenance. Watches are in watch.hpp, lease keep-alive in lease.hpp.
//
// Failover: one gRPC channel per endpoint; a call goes to the member that last answered,
// and moves on to the next one that is connected when a member cannot be reached or says
// it has no leader. Reads are retried on any UNAVAILABLE answer; writes only when they
// cannot have been applied (the member was not connected, or refused before proposing:
// "no leader"), so a write that fails with kUnavailable may or may not have been applied.
// Every call has a deadline (Options::call_timeout) covering its failover. Every call
// carries etcd's "hasleader" metadata: a member cut off from its leader refuses at once
// instead of serving stale reads or queueing writes.
//
// Values over Options::max_value_bytes (default 1 MiB) and requests over max_request_bytes
// (just under etcd's 1.5 MiB --max-request-bytes) are refused before sending (kTooLarge):
// etcd is for small metadata (see docs: FLEET.md "etcd limits").
//
// A Client is cheap to copy (copies share its channels), safe to use from several threads,
// and shares its channels with the Watchers, PrefixSyncs and LeaseKeepers made from it
// (they keep them alive).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "etcd/error.hpp"

namespace azote::etcd {

namespace detail {
class Transport;
}

struct TlsOptions {
  std::string ca_pem;       // the CA the members' certificates must chain to
  std::string cert_pem;     // this client's certificate (members run with --client-cert-auth)
  std::string key_pem;      // its private key
  std::string server_name;  // the name checked in the members' certificates; "" = endpoint host
};

struct Options {
  std::chrono::milliseconds call_timeout{5000};     // one call, failover included
  std::chrono::milliseconds connect_timeout{1000};  // one endpoint's connection attempt
  std::chrono::milliseconds reconnect_backoff_max{1000};
  // HTTP/2 keepalive pings while a stream (watch) is open, so a dead member is noticed
  // without traffic. etcd answers pings closer than 5 s apart with GOAWAY.
  std::chrono::milliseconds keepalive_time{10000};
  std::chrono::milliseconds keepalive_timeout{5000};
  size_t max_value_bytes = size_t{1} << 20;           // a value bigger than this is refused
  size_t max_request_bytes = 1536 * 1024 - 4096;      // etcd's cap less room for its envelope
  size_t max_txn_ops = 128;                           // etcd's --max-txn-ops default
  int max_receive_bytes = 64 << 20;                   // largest answer (a big range page)
  std::optional<TlsOptions> tls;                      // none: plain TCP (loopback)
};

struct KeyValue {
  std::string key;
  std::string value;
  int64_t create_revision = 0;
  int64_t mod_revision = 0;
  int64_t version = 0;  // 1 at creation, +1 at every put; 0 for a deleted key
  int64_t lease = 0;
};

// One page of a range: `more` when the limit cut it short; `revision` is the revision the
// page was read at (the store's latest when none was asked for): pass it back to read the
// next page at the same one.
struct Page {
  std::vector<KeyValue> kvs;
  bool more = false;
  int64_t count = 0;  // keys in the whole range
  int64_t revision = 0;
};

// A whole prefix at one revision.
struct Snapshot {
  std::vector<KeyValue> kvs;
  int64_t revision = 0;
};

struct DeleteResult {
  int64_t deleted = 0;
  int64_t revision = 0;
};

struct Compare {
  enum class Target { kVersion, kCreateRevision, kModRevision, kValue, kLease };
  enum class Cmp { kEqual, kNotEqual, kGreater, kLess };
  std::string key;
  Target target = Target::kModRevision;
  Cmp cmp = Cmp::kEqual;
  int64_t number = 0;  // version, revisions, lease
  std::string value;   // kValue
  std::string range_end;  // "" = the key alone

  static Compare version(std::string key, Cmp cmp, int64_t v);
  static Compare create_revision(std::string key, Cmp cmp, int64_t rev);
  static Compare mod_revision(std::string key, Cmp cmp, int64_t rev);
  static Compare value_of(std::string key, Cmp cmp, std::string value);
  static Compare lease(std::string key, Cmp cmp, int64_t lease_id);
};

struct Op {
  enum class Type { kGet, kPut, kDelete };
  Type type = Type::kGet;
  std::string key;
  std::string range_end;  // "" = the key alone
  std::string value;      // kPut
  int64_t lease = 0;      // kPut
  int64_t limit = 0;      // kGet

  static Op get(std::string key);
  static Op get_prefix(std::string prefix, int64_t limit = 0);
  static Op put(std::string key, std::string value, int64_t lease = 0);
  static Op del(std::string key);
  static Op del_prefix(std::string prefix);
};

struct OpResult {
  Op::Type type = Op::Type::kGet;
  Page page;            // kGet
  int64_t deleted = 0;  // kDelete
};

struct TxnResult {
  bool succeeded = false;           // the compares held: the success ops ran
  std::vector<OpResult> responses;  // of the ops that ran, in order
  int64_t revision = 0;
};

struct CreateResult {
  bool created = false;
  int64_t revision = 0;
  std::optional<KeyValue> existing;  // when not created: what is there
};

struct CasResult {
  bool swapped = false;
  int64_t revision = 0;
  std::optional<KeyValue> current;  // when not swapped: what is there (none if absent)
};

struct Lease {
  int64_t id = 0;
  int64_t ttl = 0;  // seconds, as granted
};

struct LeaseInfo {
  int64_t id = 0;
  int64_t ttl = 0;          // seconds left
  int64_t granted_ttl = 0;  // seconds at grant / last keep-alive
  std::vector<std::string> keys;
};

struct MemberStatus {
  std::string endpoint;
  std::string version;
  int64_t db_size = 0;         // bytes allocated on disk
  int64_t db_size_in_use = 0;  // bytes in use (db_size after a defragment)
  uint64_t member_id = 0;
  uint64_t leader = 0;  // 0: this member knows no leader
  uint64_t raft_index = 0;
  uint64_t raft_term = 0;
  uint64_t raft_applied_index = 0;
  bool is_learner = false;
  std::vector<std::string> errors;  // alarms ("NOSPACE") and health problems
};

struct Member {
  uint64_t id = 0;
  std::string name;
  std::vector<std::string> peer_urls;
  std::vector<std::string> client_urls;
  bool is_learner = false;
};

// The end of the range holding every key that starts with `prefix` ("\0" for "" or all 0xff).
std::string prefix_end(std::string_view prefix);

class Client {
 public:
  // endpoints: "host:port" each (127.0.0.1:2379). Returns once one of them is connected,
  // or kUnavailable after Options::call_timeout; kInvalidArgument for a malformed endpoint.
  static EtcdResult<Client> connect(const std::vector<std::string>& endpoints, Options options = {});

  Client(const Client&);
  Client& operator=(const Client&);
  Client(Client&&) noexcept;
  Client& operator=(Client&&) noexcept;
  ~Client();

  const std::vector<std::string>& endpoints() const;
  const Options& options() const;

  // KV. A revision of 0 reads the latest; an older one fails kCompacted once compacted.
  EtcdResult<std::optional<KeyValue>> get(std::string_view key, int64_t revision = 0);
  // One page of the keys under `prefix`, in key order, from `from_key` (inclusive; "" =
  // the start). The next page: from_key = last key + '\0', revision = page.revision.
  EtcdResult<Page> get_prefix(std::string_view prefix, int64_t limit = 0, int64_t revision = 0,
                              std::string_view from_key = {});
  // Every key under `prefix` at one revision, read in pages of `page_size`.
  EtcdResult<Snapshot> list_prefix(std::string_view prefix, int64_t page_size = 1000);
  // The revision of the put.
  EtcdResult<int64_t> put(std::string_view key, std::string_view value, int64_t lease = 0);
  EtcdResult<DeleteResult> del(std::string_view key);
  EtcdResult<DeleteResult> del_prefix(std::string_view prefix);

  // If every compare holds, the success ops run, otherwise the failure ops; atomically.
  EtcdResult<TxnResult> txn(const std::vector<Compare>& compares, const std::vector<Op>& success,
                            const std::vector<Op>& failure = {});
  // Puts key only if it does not exist (create_revision == 0).
  EtcdResult<CreateResult> create_if_absent(std::string_view key, std::string_view value,
                                            int64_t lease = 0);
  // Puts key only if its mod_revision is still `expected_mod_revision` (0: only if absent).
  EtcdResult<CasResult> compare_and_swap(std::string_view key, int64_t expected_mod_revision,
                                         std::string_view value, int64_t lease = 0);

  // Leases. keep_alive_once returns the refreshed TTL; kNotFound once the lease is gone.
  EtcdResult<Lease> grant(int64_t ttl_s);
  EtcdResult<int64_t> keep_alive_once(int64_t id);
  EtcdResult<void> revoke(int64_t id);
  // kNotFound when the lease does not exist (any more).
  EtcdResult<LeaseInfo> time_to_live(int64_t id, bool with_keys = false);

  // Maintenance. compact drops history before `revision` (physical: wait until the space
  // is reclaimable). status and defragment address one member (an endpoint of this client
  // or any other "host:port"), without failover.
  EtcdResult<void> compact(int64_t revision, bool physical = false);
  EtcdResult<MemberStatus> status(std::string_view endpoint);
  EtcdResult<void> defragment(std::string_view endpoint);
  EtcdResult<std::vector<Member>> member_list();

  // For Watcher, PrefixSync, LeaseKeeper.
  const std::shared_ptr<detail::Transport>& transport() const { return t_; }

 private:
  explicit Client(std::shared_ptr<detail::Transport> t);
  std::shared_ptr<detail::Transport> t_;
};

}  // namespace azote::etcd
