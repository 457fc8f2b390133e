#include "vpc_policy/engine.hpp"

#include <algorithm>
#include <utility>

namespace azote::vpc {
namespace {

constexpr uint32_t kNoGroup = 0xffffffffu;

int dir_index(Direction d) { return d == Direction::kIngress ? 0 : 1; }

// A rule as the data path reads it: no strings, no variant.
struct CompiledRule {
  int protocol;
  int from, to;
  uint32_t network, mask;
  uint32_t group;  // kNoGroup: CIDR peer
};

bool traffic(const CompiledRule& r, const FlowKey& k) {
  if (r.protocol == kAllProtocols) return true;
  if (r.protocol != k.protocol) return false;
  if (r.protocol == kProtoTcp || r.protocol == kProtoUdp) {
    return k.dst_port >= r.from && k.dst_port <= r.to;
  }
  if (r.protocol == kProtoIcmp) {
    return (r.from == -1 || k.icmp_type == r.from) && (r.to == -1 || k.icmp_code == r.to);
  }
  return true;
}

// Whether a rule opens every port of `protocol` (TCP or UDP) to 0.0.0.0/0: what makes
// the reverse direction of a flow "untracked" in EC2's terms.
bool opens_all(const CompiledRule& r, int protocol) {
  if (r.group != kNoGroup || r.mask != 0) return false;
  return r.protocol == kAllProtocols || (r.protocol == protocol && r.from == 0 && r.to == 65535);
}

}  // namespace

struct PolicyEngine::Group {
  std::string id;
  std::array<std::vector<Rule>, 2> rules;  // [ingress, egress], as authorised
  std::array<std::vector<CompiledRule>, 2> compiled;
  std::unordered_set<uint32_t> members;
  uint32_t attached = 0;    // interfaces that have this group
  uint32_t referenced = 0;  // rules of other groups that name it
  // [direction][0: tcp, 1: udp]: some rule allows every port from/to 0.0.0.0/0.
  std::array<std::array<bool, 2>, 2> open_all{};

  void recompute_open() {
    for (int d = 0; d < 2; ++d) {
      open_all[d][0] = std::any_of(compiled[d].begin(), compiled[d].end(),
                                   [](const CompiledRule& r) { return opens_all(r, kProtoTcp); });
      open_all[d][1] = std::any_of(compiled[d].begin(), compiled[d].end(),
                                   [](const CompiledRule& r) { return opens_all(r, kProtoUdp); });
    }
  }
};

struct PolicyEngine::Interface {
  Interface(const InterfaceConfig& c, std::vector<uint32_t> g, Nanos now, Nanos unix_offset)
      : id(c.id), groups(std::move(g)), ct(c.conntrack) {
    if (c.flow_log.enabled) log.emplace(c.flow_log, c.id, now, unix_offset);
  }
  std::string id;
  std::vector<uint32_t> groups;
  ConnTrack ct;
  std::optional<FlowLog> log;
  uint64_t accepted = 0;
  uint64_t rejected = 0;
};

PolicyEngine::PolicyEngine(const rate_limit::Clock& clock, EngineConfig config)
    : clock_(clock), config_(config) {}

PolicyEngine::~PolicyEngine() = default;

PolicyEngine::Group* PolicyEngine::group(const std::string& id) {
  auto it = group_ids_.find(id);
  return it == group_ids_.end() ? nullptr : groups_[it->second].get();
}

const PolicyEngine::Group* PolicyEngine::group(const std::string& id) const {
  auto it = group_ids_.find(id);
  return it == group_ids_.end() ? nullptr : groups_[it->second].get();
}

VpcResult<void> PolicyEngine::create_group(const std::string& id) {
  if (!valid_id(id)) return make_error(VpcErrc::kInvalid, "bad security group id: " + id);
  if (group_ids_.count(id)) return make_error(VpcErrc::kExists, "security group exists: " + id);
  uint32_t index;
  if (!free_groups_.empty()) {
    index = free_groups_.back();
    free_groups_.pop_back();
  } else {
    index = static_cast<uint32_t>(groups_.size());
    groups_.emplace_back();
  }
  groups_[index] = std::make_unique<Group>();
  groups_[index]->id = id;
  group_ids_.emplace(id, index);
  // EC2: a new security group allows all outbound traffic until told otherwise.
  return add_rule(id, Direction::kEgress, Rule::all(*Cidr::parse("0.0.0.0/0")));
}

VpcResult<void> PolicyEngine::delete_group(const std::string& id) {
  auto it = group_ids_.find(id);
  if (it == group_ids_.end()) return make_error(VpcErrc::kNotFound, "no security group " + id);
  const uint32_t index = it->second;
  Group& g = *groups_[index];
  if (g.attached > 0) {
    return make_error(VpcErrc::kInUse, id + " is attached to a network interface");
  }
  if (g.referenced > 0) {
    return make_error(VpcErrc::kInUse, id + " is referenced by another group's rule");
  }
  for (const auto& dir_rules : g.compiled) {
    for (const CompiledRule& r : dir_rules) {
      if (r.group != kNoGroup && r.group != index) --groups_[r.group]->referenced;
    }
  }
  groups_[index].reset();
  free_groups_.push_back(index);
  group_ids_.erase(it);
  return {};
}

VpcResult<void> PolicyEngine::add_rule(const std::string& id, Direction dir, const Rule& rule) {
  auto it = group_ids_.find(id);
  if (it == group_ids_.end()) return make_error(VpcErrc::kNotFound, "no security group " + id);
  const uint32_t index = it->second;
  Group& g = *groups_[index];
  AZOTE_TRYV(validate(rule));
  CompiledRule c{rule.protocol, rule.from_port, rule.to_port, 0, 0, kNoGroup};
  if (const auto* cidr = std::get_if<Cidr>(&rule.peer)) {
    c.network = cidr->network;
    c.mask = cidr->mask();
  } else {
    const std::string& ref = std::get<GroupRef>(rule.peer).group_id;
    auto rit = group_ids_.find(ref);
    if (rit == group_ids_.end()) {
      return make_error(VpcErrc::kNotFound, "rule references unknown security group " + ref);
    }
    c.group = rit->second;
  }
  auto& list = g.rules[dir_index(dir)];
  if (std::find(list.begin(), list.end(), rule) != list.end()) {
    return make_error(VpcErrc::kDuplicate, id + " already has rule " + rule.to_string());
  }
  if (list.size() >= config_.max_rules_per_direction) {
    return make_error(VpcErrc::kLimit, id + ": rules per direction limit reached");
  }
  list.push_back(rule);
  g.compiled[dir_index(dir)].push_back(c);
  if (c.group != kNoGroup && c.group != index) ++groups_[c.group]->referenced;
  g.recompute_open();
  return {};
}

VpcResult<void> PolicyEngine::remove_rule(const std::string& id, Direction dir,
                                          const Rule& rule) {
  auto it = group_ids_.find(id);
  if (it == group_ids_.end()) return make_error(VpcErrc::kNotFound, "no security group " + id);
  const uint32_t index = it->second;
  Group& g = *groups_[index];
  auto& list = g.rules[dir_index(dir)];
  auto pos = std::find(list.begin(), list.end(), rule);
  if (pos == list.end()) {
    return make_error(VpcErrc::kNotFound, id + " has no rule " + rule.to_string());
  }
  auto& compiled = g.compiled[dir_index(dir)];
  auto cpos = compiled.begin() + (pos - list.begin());
  if (cpos->group != kNoGroup && cpos->group != index) --groups_[cpos->group]->referenced;
  compiled.erase(cpos);
  list.erase(pos);
  g.recompute_open();
  return {};
}

VpcResult<std::vector<Rule>> PolicyEngine::rules(const std::string& id, Direction dir) const {
  const Group* g = group(id);
  if (!g) return make_error(VpcErrc::kNotFound, "no security group " + id);
  return g->rules[dir_index(dir)];
}

VpcResult<void> PolicyEngine::set_members(const std::string& id,
                                          const std::vector<uint32_t>& ips) {
  Group* g = group(id);
  if (!g) return make_error(VpcErrc::kNotFound, "no security group " + id);
  g->members = std::unordered_set<uint32_t>(ips.begin(), ips.end());
  return {};
}

VpcResult<void> PolicyEngine::add_member(const std::string& id, uint32_t ip) {
  Group* g = group(id);
  if (!g) return make_error(VpcErrc::kNotFound, "no security group " + id);
  g->members.insert(ip);
  return {};
}

VpcResult<void> PolicyEngine::remove_member(const std::string& id, uint32_t ip) {
  Group* g = group(id);
  if (!g) return make_error(VpcErrc::kNotFound, "no security group " + id);
  g->members.erase(ip);
  return {};
}

VpcResult<std::vector<uint32_t>> PolicyEngine::resolve_groups(
    const std::vector<std::string>& ids) const {
  if (ids.empty() || ids.size() > config_.max_groups_per_interface) {
    return make_error(VpcErrc::kLimit, "a network interface has 1.." +
                                           std::to_string(config_.max_groups_per_interface) +
                                           " security groups");
  }
  std::vector<uint32_t> out;
  for (const std::string& id : ids) {
    auto it = group_ids_.find(id);
    if (it == group_ids_.end()) return make_error(VpcErrc::kNotFound, "no security group " + id);
    if (std::find(out.begin(), out.end(), it->second) != out.end()) {
      return make_error(VpcErrc::kDuplicate, "security group listed twice: " + id);
    }
    out.push_back(it->second);
  }
  return out;
}

PolicyEngine::Interface* PolicyEngine::iface(EniHandle h) {
  if (h.index >= interfaces_.size()) return nullptr;
  Slot& s = interfaces_[h.index];
  return s.generation == h.generation ? s.iface.get() : nullptr;
}

const PolicyEngine::Interface* PolicyEngine::iface(EniHandle h) const {
  if (h.index >= interfaces_.size()) return nullptr;
  const Slot& s = interfaces_[h.index];
  return s.generation == h.generation ? s.iface.get() : nullptr;
}

VpcResult<EniHandle> PolicyEngine::add_interface(const InterfaceConfig& config) {
  if (!valid_id(config.id)) {
    return make_error(VpcErrc::kInvalid, "bad network interface id: " + config.id);
  }
  if (interface_ids_.count(config.id)) {
    return make_error(VpcErrc::kExists, "network interface exists: " + config.id);
  }
  AZOTE_TRYV(validate(config.conntrack));
  AZOTE_TRYV(validate(config.flow_log));
  AZOTE_TRY(groups, resolve_groups(config.groups));
  uint32_t index;
  if (!free_interfaces_.empty()) {
    index = free_interfaces_.back();
    free_interfaces_.pop_back();
  } else {
    index = static_cast<uint32_t>(interfaces_.size());
    interfaces_.emplace_back();
  }
  for (uint32_t g : groups) ++groups_[g]->attached;
  Slot& s = interfaces_[index];
  s.iface = std::make_unique<Interface>(config, std::move(groups), clock_.now(),
                                        config_.unix_offset);
  interface_ids_.emplace(config.id, index);
  return EniHandle{index, s.generation};
}

VpcResult<void> PolicyEngine::set_interface_groups(EniHandle h,
                                                   const std::vector<std::string>& ids) {
  Interface* e = iface(h);
  if (!e) return make_error(VpcErrc::kNotFound, "no such network interface");
  AZOTE_TRY(groups, resolve_groups(ids));
  for (uint32_t g : e->groups) --groups_[g]->attached;
  for (uint32_t g : groups) ++groups_[g]->attached;
  e->groups = std::move(groups);
  return {};
}

VpcResult<void> PolicyEngine::remove_interface(EniHandle h) {
  Interface* e = iface(h);
  if (!e) return make_error(VpcErrc::kNotFound, "no such network interface");
  if (e->log) e->log->close(clock_.now(), removed_lines_);
  for (uint32_t g : e->groups) --groups_[g]->attached;
  interface_ids_.erase(e->id);
  Slot& s = interfaces_[h.index];
  s.iface.reset();
  ++s.generation;
  free_interfaces_.push_back(h.index);
  return {};
}

std::optional<EniHandle> PolicyEngine::find_interface(const std::string& id) const {
  auto it = interface_ids_.find(id);
  if (it == interface_ids_.end()) return std::nullopt;
  return EniHandle{it->second, interfaces_[it->second].generation};
}

std::optional<InterfaceStats> PolicyEngine::stats(EniHandle h) const {
  const Interface* e = iface(h);
  if (!e) return std::nullopt;
  InterfaceStats s;
  s.accepted = e->accepted;
  s.rejected = e->rejected;
  s.conntrack = e->ct.stats();
  s.flow_log_skipped = e->log ? e->log->skipped_packets() : 0;
  return s;
}

PolicyEngine::Match PolicyEngine::match(const Interface& e, Direction dir,
                                        const FlowKey& key) const {
  const uint32_t peer = dir == Direction::kIngress ? key.src_ip : key.dst_ip;
  Match m;
  for (uint32_t gi : e.groups) {
    for (const CompiledRule& r : groups_[gi]->compiled[dir_index(dir)]) {
      if (!traffic(r, key)) continue;
      const bool peer_ok = r.group == kNoGroup ? (peer & r.mask) == r.network
                                               : groups_[r.group]->members.count(peer) > 0;
      if (!peer_ok) continue;
      m.allowed = true;
      if (r.group == kNoGroup && r.mask == 0) {
        m.open_peer = true;
        return m;
      }
    }
  }
  return m;
}

bool PolicyEngine::open_all(const Interface& e, Direction dir, int protocol) const {
  const int p = protocol == kProtoTcp ? 0 : 1;
  return std::any_of(e.groups.begin(), e.groups.end(),
                     [&](uint32_t gi) { return groups_[gi]->open_all[dir_index(dir)][p]; });
}

// Called for a packet some 0.0.0.0/0 rule of `dir` allows. It belongs to an untracked
// flow either as the initiator's side (the other direction is open on all ports) or as
// the response side (this direction is open on all ports and a 0.0.0.0/0 rule of the
// other direction allows the reverse packet).
bool PolicyEngine::untracked(const Interface& e, Direction dir, const FlowKey& key) const {
  if (key.protocol != kProtoTcp && key.protocol != kProtoUdp) return false;  // ICMP: always tracked
  if (open_all(e, opposite(dir), key.protocol)) return true;
  return open_all(e, dir, key.protocol) && match(e, opposite(dir), key.reversed()).open_peer;
}

bool PolicyEngine::rules_allow(EniHandle h, Direction dir, const FlowKey& key) const {
  const Interface* e = iface(h);
  return e != nullptr && match(*e, dir, key).allowed;
}

std::optional<CtState> PolicyEngine::conntrack_state(EniHandle h, Direction dir,
                                                     const FlowKey& key) const {
  const Interface* e = iface(h);
  if (!e) return std::nullopt;
  return e->ct.state(dir, key, clock_.now());
}

Decision PolicyEngine::decide(Interface& e, Direction dir, const Packet& p, Nanos now) {
  if (e.ct.track(dir, p, now)) return {Verdict::kAccept, Reason::kTracked};
  if (e.ct.related(dir, p, now)) return {Verdict::kAccept, Reason::kRelated};
  const Match m = match(e, dir, p.key);
  if (!m.allowed) return {Verdict::kReject, Reason::kNoRule};
  if (m.open_peer && e.ct.config().untracked_flows && untracked(e, dir, p.key)) {
    return {Verdict::kAccept, Reason::kUntracked};
  }
  switch (e.ct.insert(dir, p, now)) {
    case ConnTrack::Insert::kInserted: return {Verdict::kAccept, Reason::kNewFlow};
    case ConnTrack::Insert::kNotTrackable: return {Verdict::kAccept, Reason::kStateless};
    case ConnTrack::Insert::kFull: return {Verdict::kReject, Reason::kTableFull};
  }
  return {Verdict::kReject, Reason::kTableFull};
}

Decision PolicyEngine::process(EniHandle h, Direction dir, const Packet& p) {
  Interface* e = iface(h);
  if (!e) return {Verdict::kReject, Reason::kNoInterface};
  const Nanos now = clock_.now();
  const Decision d = decide(*e, dir, p, now);
  if (d.accepted()) ++e->accepted; else ++e->rejected;
  if (e->log) e->log->record(p.key, p.bytes, d.verdict, now);
  return d;
}

void PolicyEngine::expire(Nanos now) {
  for (Slot& s : interfaces_) {
    if (s.iface) s.iface->ct.expire(now);
  }
}

std::vector<std::string> PolicyEngine::flush(Nanos now) {
  std::vector<std::string> out = std::move(removed_lines_);
  removed_lines_.clear();
  for (Slot& s : interfaces_) {
    if (s.iface && s.iface->log) s.iface->log->flush(now, out);
  }
  return out;
}

}  // namespace azote::vpc
