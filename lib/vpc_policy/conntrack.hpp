// Connection tracking of one network interface: what makes security groups stateful.
//
// An entry is keyed by the flow as seen from the interface: (protocol, local address,
// remote address, local port, remote port), local being the instance's end, so a
// packet and its reply find the same entry with one hash probe and a packet that
// merely claims the instance's address from outside does not. What is tracked:
//   TCP, UDP   both ports;
//   ICMP       queries only (echo, timestamp, information, address mask), by identifier
//              and exchange, so an echo reply matches the echo request it answers
//              (ICMP errors are not entries: they pass when they quote a tracked flow);
//   others     the addresses and protocol number only (EC2: "only the IP address and
//              protocol number is tracked").
// Any packet of a tracked flow passes in either direction, whatever the rules say,
// until the entry has been idle for its state's timeout (ConntrackTimeouts).
//
// Expiry is O(1) amortised: entries sit on one LRU list per timeout class, ordered by
// the time they were queued; a class has one timeout and time only moves forward, so
// the head is the first to expire and expire() pops expired heads. To spare the list
// relinking (two random cache lines) on every packet, a packet re-queues its entry
// only when the entry was queued over kRequeue (1 s) ago or its state's timeout class
// changed; otherwise it only stamps the entry. Lookups honour the exact timeout; an
// expired entry's memory is reclaimed less than kRequeue late.
//
// The table is bounded (max_entries): when full, insert() reclaims expired entries
// and otherwise refuses the new flow (counted in stats().refused). Nothing tracked is
// ever evicted to make room: a guest opening flows cannot break the flows it already
// has, and it cannot grow the card's memory past max_entries x ~112 bytes (a 48-byte
// entry with vector slack, and 16 bytes of index).
//
// Not thread-safe: one ConnTrack per interface, used by one thread at a time.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <optional>
#include <vector>

#include "rate_limit/clock.hpp"
#include "vpc_policy/error.hpp"
#include "vpc_policy/flow.hpp"
#include "vpc_policy/hash_index.hpp"

namespace azote::vpc {

using rate_limit::Nanos;
using std::chrono::seconds;

// Idle timeouts, by state. The first three are EC2's per-interface settings
// (ConnectionTrackingSpecification) with its defaults and allowed ranges; the rest
// are not EC2 settings and are chosen here (see DESIGN.md).
struct ConntrackTimeouts {
  Nanos tcp_established = seconds(432000);  // EC2 default, 5 days; 60..432000 s
  Nanos udp_stream = seconds(180);          // EC2 default; 60..180 s
  Nanos udp = seconds(30);                  // EC2 default; 30..60 s (one direction or
                                            // a single request-response)
  Nanos tcp_half_open = seconds(60);        // SYN seen, handshake not complete
  Nanos tcp_closing = seconds(120);         // FIN seen from one side
  Nanos tcp_closed = seconds(10);           // FIN from both sides, or RST
  Nanos icmp = seconds(30);                 // ICMP query exchanges
  Nanos other = seconds(600);               // other protocols (EC2 documents 600 s)
};

struct ConntrackConfig {
  ConntrackTimeouts timeouts;
  uint32_t max_entries = 65536;  // 1..(1 << 24)
  // EC2's untracked flows (see PolicyEngine): TCP/UDP flows allowed from/to 0.0.0.0/0
  // whose reverse direction is open to 0.0.0.0/0 on every port take no entry.
  // false: every allowed flow is tracked.
  bool untracked_flows = true;
  // Seeds the hash so a guest cannot aim its flows at one probe run; the card passes
  // a random value per interface.
  uint64_t hash_seed = 0;
};

VpcResult<void> validate(const ConntrackConfig& config);

enum class CtState : uint8_t {
  kTcpSynSent,      // initiator's SYN seen
  kTcpSynReceived,  // responder's SYN+ACK seen
  kTcpEstablished,  // handshake done, or picked up mid-stream
  kTcpClosing,      // FIN from one side
  kTcpClosed,       // FIN from both sides, or RST; a new SYN starts over
  kUdp,             // one direction, or a single request-response
  kUdpStream,       // more than one request-response
  kIcmp,
  kOther,
};

class ConnTrack {
 public:
  struct Stats {
    uint64_t entries = 0;   // in the table now (some may be expired and not reclaimed yet)
    uint64_t inserted = 0;  // flows ever tracked
    uint64_t expired = 0;   // entries reclaimed after their timeout
    uint64_t refused = 0;   // new flows refused because the table was full
  };
  enum class Insert : uint8_t {
    kInserted,
    kNotTrackable,  // nothing to track: ICMP other than a query request, a TCP RST
    kFull,          // refused: table full (counted)
  };

  explicit ConnTrack(const ConntrackConfig& config);

  // If the packet belongs to a tracked, unexpired flow, advances the flow's state,
  // re-arms its timeout and returns true. A SYN on a closed TCP entry ends that entry
  // and returns false: the new connection is judged afresh.
  bool track(Direction dir, const Packet& p, Nanos now);
  // Starts tracking the flow of a packet the rules allowed (track() returned false).
  Insert insert(Direction dir, const Packet& p, Nanos now);
  // Whether an ICMP error packet quotes a tracked flow: the quoted datagram must have
  // travelled the opposite way and come from the error's destination. Touches nothing.
  bool related(Direction dir, const Packet& p, Nanos now) const;
  // Reclaims up to `budget` expired entries.
  void expire(Nanos now, size_t budget = SIZE_MAX);
  void clear();

  // For tests and diagnostics: the state of the flow `key` travelling `dir` belongs to.
  std::optional<CtState> state(Direction dir, const FlowKey& key, Nanos now) const;
  const Stats& stats() const { return stats_; }
  const ConntrackConfig& config() const { return config_; }

 private:
  struct Key {
    uint32_t local_ip = 0;
    uint32_t remote_ip = 0;
    uint16_t local_port = 0;
    uint16_t remote_port = 0;
    uint8_t protocol = 0;
    friend bool operator==(const Key&, const Key&) = default;
  };
  static constexpr uint32_t kNil = 0xffffffffu;
  static constexpr Nanos kRequeue = std::chrono::seconds(1);
  static constexpr int kClasses = 8;
  struct Entry {
    Key key;
    int64_t last = 0;   // ns: the flow's last packet
    int64_t armed = 0;  // ns: when the entry was (re)queued at the tail of its list
    uint32_t prev = kNil;  // on the list of its timeout class; `next` also links free entries
    uint32_t next = kNil;
    CtState state = CtState::kOther;
    uint8_t flags = 0;
  };
  struct List {
    uint32_t head = kNil;
    uint32_t tail = kNil;
  };

  // false: not a trackable packet (ICMP error or non-query).
  static bool make_key(Direction dir, const FlowKey& k, Key& out);
  uint64_t hash(const Key& k) const;
  uint32_t find(const Key& k, uint64_t h) const;
  static int timeout_class(CtState s);
  Nanos timeout(CtState s) const;
  void arm(uint32_t id, Nanos now);  // queue at the tail of its class list, armed = now
  bool expired(const Entry& e, Nanos now) const {
    return e.last + timeout(e.state).count() <= now.count();
  }
  void unlink(uint32_t id, int cls);  // from the list of timeout class `cls`
  void erase(uint32_t id);
  static void advance(Entry& e, bool original, const Packet& p);

  ConntrackConfig config_;
  std::vector<Entry> entries_;
  uint32_t free_ = kNil;
  detail::HashIndex index_;
  std::array<List, kClasses> lists_{};
  Stats stats_;
};

}  // namespace azote::vpc
