// The VPC card's policy engine: EC2 security groups, stateful, per network interface,
// with VPC flow logs. Pure: no I/O, no threads; the card parses packets, asks
// process() for a verdict, and writes what flush() returns to its flow-log file.
//
// Security groups (EC2 semantics): allow-only rules, inbound and outbound, each a
// protocol + ports (or ICMP type/code) + a peer CIDR or security group. A new group
// has one outbound rule, all traffic to 0.0.0.0/0, and no inbound rule, which the
// caller may remove like any other. An interface has 1..5 groups (EngineConfig); a
// packet is allowed if any rule of any of them allows it, so with no rule it is
// denied. A group-referencing rule matches the addresses the caller put in that
// group's member set (the private IPv4 addresses of the interfaces in it).
//
// Stateful (ConnTrack): a packet of a tracked flow passes in either direction whatever
// the rules say; an allowed packet that starts a flow creates the entry; ICMP errors
// quoting a tracked flow pass. Rule, membership and group changes apply to the next
// new flow at once; tracked flows continue until idle for their timeout (EC2: "When
// you change a security group rule, its tracked connections are not immediately
// interrupted"). EC2's untracked flows are modelled: a TCP or UDP flow allowed by a
// rule whose peer is 0.0.0.0/0 while the reverse direction has a 0.0.0.0/0 rule for
// all ports of that protocol (or all traffic) takes no entry, nor do its responses,
// so each of its packets is judged by the rules and removing the rule cuts it at
// once, as EC2 documents.
// There is deliberately no "flush tracked flows after a change" switch: EC2 has none.
//
// Not thread-safe: the card serialises calls (one engine per data-path thread, or a lock).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "rate_limit/clock.hpp"
#include "vpc_policy/conntrack.hpp"
#include "vpc_policy/error.hpp"
#include "vpc_policy/flow.hpp"
#include "vpc_policy/flow_log.hpp"
#include "vpc_policy/security_group.hpp"

namespace azote::vpc {

struct EngineConfig {
  // Flow-log timestamps are monotonic time + unix_offset (CLOCK_REALTIME - CLOCK_MONOTONIC).
  Nanos unix_offset{0};
  uint32_t max_groups_per_interface = 5;  // EC2 default quota
  uint32_t max_rules_per_direction = 60;  // EC2 default quota, per group, inbound and outbound
};

struct InterfaceConfig {
  std::string id;                   // "eni-...": unique, printable, no spaces
  std::vector<std::string> groups;  // 1..max_groups_per_interface existing groups
  ConntrackConfig conntrack;
  FlowLogConfig flow_log;
};

// Names an interface on the data path; a handle of a removed interface stays invalid
// even when its slot is reused.
struct EniHandle {
  uint32_t index = 0xffffffffu;
  uint32_t generation = 0;
};

enum class Reason : uint8_t {
  kTracked,      // part of a tracked flow, either direction; rules not consulted
  kRelated,      // an ICMP error quoting a tracked flow
  kNewFlow,      // allowed by a rule; now tracked
  kUntracked,    // allowed by a rule; an EC2 untracked flow (no entry)
  kStateless,    // allowed by a rule; nothing to track (ICMP other than a query request, RST)
  kNoRule,       // no rule allows it (includes unsolicited inbound)
  kTableFull,    // a rule allows it but the interface's conntrack table is full
  kNoInterface,  // unknown or removed interface
};

struct Decision {
  Verdict verdict = Verdict::kReject;
  Reason reason = Reason::kNoInterface;
  bool accepted() const { return verdict == Verdict::kAccept; }
};

struct InterfaceStats {
  uint64_t accepted = 0;
  uint64_t rejected = 0;
  ConnTrack::Stats conntrack;  // .refused: new flows refused with a full table
  uint64_t flow_log_skipped = 0;  // packets of flows a full flow-log window could not record
};

class PolicyEngine {
 public:
  // `clock` (monotonic) must outlive the engine; process() reads it once per packet.
  explicit PolicyEngine(const rate_limit::Clock& clock, EngineConfig config = {});
  ~PolicyEngine();
  PolicyEngine(const PolicyEngine&) = delete;
  PolicyEngine& operator=(const PolicyEngine&) = delete;

  // --- security groups ---
  // A new group, with EC2's default outbound rule (all traffic to 0.0.0.0/0).
  VpcResult<void> create_group(const std::string& id);
  // kInUse while an interface has the group or another group's rule references it.
  VpcResult<void> delete_group(const std::string& id);
  // kDuplicate for an identical rule, kLimit past max_rules_per_direction, kNotFound
  // for an unknown group or referenced group.
  VpcResult<void> add_rule(const std::string& group, Direction dir, const Rule& rule);
  VpcResult<void> remove_rule(const std::string& group, Direction dir, const Rule& rule);
  VpcResult<std::vector<Rule>> rules(const std::string& group, Direction dir) const;
  // The addresses a rule referencing this group matches. Idempotent.
  VpcResult<void> set_members(const std::string& group, const std::vector<uint32_t>& ips);
  VpcResult<void> add_member(const std::string& group, uint32_t ip);
  VpcResult<void> remove_member(const std::string& group, uint32_t ip);

  // --- network interfaces ---
  VpcResult<EniHandle> add_interface(const InterfaceConfig& config);
  // ModifyNetworkInterfaceAttribute --groups: new flows see the new set at once.
  VpcResult<void> set_interface_groups(EniHandle eni, const std::vector<std::string>& groups);
  // Drops its conntrack table; its flow log's current window ends now (lines go out
  // with the next flush()).
  VpcResult<void> remove_interface(EniHandle eni);
  std::optional<EniHandle> find_interface(const std::string& id) const;
  std::optional<InterfaceStats> stats(EniHandle eni) const;

  // --- data path ---
  // The verdict for one packet crossing `eni` in `dir`; updates conntrack, counters and
  // the flow log. O(1) for tracked flows; a new flow also walks the interface's rules
  // (at most groups x rules). No allocation except when a table grows or a flow-log
  // window ends.
  Decision process(EniHandle eni, Direction dir, const Packet& packet);
  // The rules alone (no conntrack, no side effects): does any rule allow this packet?
  bool rules_allow(EniHandle eni, Direction dir, const FlowKey& key) const;
  // For tests and diagnostics: the conntrack state of the flow of `key` in `dir`.
  std::optional<CtState> conntrack_state(EniHandle eni, Direction dir, const FlowKey& key) const;

  // --- maintenance (timer driven) ---
  // Reclaims expired conntrack entries of every interface.
  void expire(Nanos now);
  // Flow-log lines of every window that ended at or before `now`, all interfaces.
  std::vector<std::string> flush(Nanos now);

 private:
  struct Group;
  struct Interface;
  struct Match {
    bool allowed = false;
    bool open_peer = false;  // allowed by a rule whose peer is 0.0.0.0/0
  };

  Group* group(const std::string& id);
  const Group* group(const std::string& id) const;
  Interface* iface(EniHandle h);
  const Interface* iface(EniHandle h) const;
  VpcResult<std::vector<uint32_t>> resolve_groups(const std::vector<std::string>& ids) const;
  Match match(const Interface& e, Direction dir, const FlowKey& key) const;
  bool open_all(const Interface& e, Direction dir, int protocol) const;
  bool untracked(const Interface& e, Direction dir, const FlowKey& key) const;
  Decision decide(Interface& e, Direction dir, const Packet& p, Nanos now);

  const rate_limit::Clock& clock_;
  EngineConfig config_;
  std::vector<std::unique_ptr<Group>> groups_;  // index stable while the group lives
  std::vector<uint32_t> free_groups_;
  std::unordered_map<std::string, uint32_t> group_ids_;
  struct Slot {
    uint32_t generation = 0;
    std::unique_ptr<Interface> iface;
  };
  std::vector<Slot> interfaces_;
  std::vector<uint32_t> free_interfaces_;
  std::unordered_map<std::string, uint32_t> interface_ids_;
  std::vector<std::string> removed_lines_;  // flow-log lines of removed interfaces
};

}  // namespace azote::vpc
