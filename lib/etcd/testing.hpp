// Test support (target azote_etcd_testing): EtcdCluster, real etcd members (Debian's
// /usr/bin/etcd) on 127.0.0.1, for lib/etcd's tests and azote-region's.
//
//   auto cluster = EtcdCluster::start({.members = 3});   // ASSERT_TRUE(cluster.ok())
//   auto client = (*cluster)->client();                  // every member's endpoint
//   (*cluster)->kill(1); ... (*cluster)->restart(1);
//
// Each member gets free ports (etcd cannot bind port 0: ports are found by binding and
// releasing, and the start is tried again on a conflict), its own data directory and log
// file in the cluster's temp dir, and short raft timings (heartbeat 50 ms, election 500 ms)
// so failover tests stay fast. start() returns once every member is serving (a status
// with a leader and a read). Members run in their own process groups and die with the
// process (SIGKILL on parent death), and the destructor kills and reaps them all: no etcd
// is left behind. On a failed test, print log_tail().
//
// With tls, the client URLs are https with a CA, a member certificate (SAN 127.0.0.1 and
// localhost) and a client certificate made by `openssl` in the temp dir; members require
// client certificates. client_options() carries the PEMs.
//
// Not thread-safe; call from the test's main thread (the parent-death signal follows the
// thread that started a member).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "base/error.hpp"
#include "base/result.hpp"
#include "base/temp_dir.hpp"
#include "etcd/client.hpp"

namespace azote::etcd::testing {

enum class ClusterErrc {
  kSpawn = 1,   // etcd (or openssl) could not be started, or exited
  kPorts,       // no free ports after several tries
  kNotHealthy,  // members did not serve before the timeout
  kBadMember,   // no such member, or not in the state the call needs
};
using ClusterError = Error<ClusterErrc>;
template <class T>
using ClusterResult = Result<T, ClusterError>;

struct ClusterOptions {
  int members = 1;
  bool tls = false;
  std::vector<std::string> extra_args{};  // given to every member ("--quota-backend-bytes=...")
  std::chrono::milliseconds start_timeout{20000};
  std::string etcd_binary = "/usr/bin/etcd";
};

class EtcdCluster {
 public:
  static ClusterResult<std::unique_ptr<EtcdCluster>> start(ClusterOptions options = {});
  ~EtcdCluster();
  EtcdCluster(const EtcdCluster&) = delete;
  EtcdCluster& operator=(const EtcdCluster&) = delete;

  int size() const { return static_cast<int>(members_.size()); }
  const std::string& endpoint(int i) const;  // "127.0.0.1:port"
  std::vector<std::string> endpoints() const;
  int index_of(const std::string& endpoint) const;  // -1 if none
  // Options for a Client of this cluster: TLS when started with it, short timeouts.
  Options client_options() const;
  // A Client of every member (or of `only`).
  EtcdResult<Client> client() const;
  EtcdResult<Client> client(const std::vector<std::string>& only) const;

  // SIGKILL to member i's process group, reaped.
  ClusterResult<void> kill(int i);
  // Member i again on its ports and data dir; returns once it serves again.
  ClusterResult<void> restart(int i);
  // Waits until every running member reports the same leader, itself running; returns its
  // index. After a leader is killed, writes sent before the election can fail with an
  // ambiguous kUnavailable ("request timed out, possibly due to previous leader failure").
  ClusterResult<int> wait_leader();
  bool running(int i) const;
  pid_t pid(int i) const;

  const std::string& dir() const { return dir_.path(); }
  std::string log_path(int i) const;
  // The last `lines` lines of every member's log, each headed by its name.
  std::string log_tail(size_t lines = 40) const;

 private:
  struct MemberProc {
    std::string name;
    int client_port = 0;
    int peer_port = 0;
    std::string endpoint;
    std::string data_dir;
    pid_t pid = -1;
  };
  explicit EtcdCluster(ClusterOptions options);
  ClusterResult<void> make_tls();
  ClusterResult<void> spawn(int i, bool new_cluster);
  ClusterResult<void> wait_serving(const std::vector<int>& which);
  void kill_all();

  ClusterOptions options_;
  TempDir dir_;
  std::string token_;
  std::vector<MemberProc> members_;
  std::string ca_pem_, client_cert_pem_, client_key_pem_;
};

}  // namespace azote::etcd::testing
