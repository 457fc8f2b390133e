// Randomized: the engine against a deliberately naive reference model.
//  - Stateless: rules_allow() vs a rule-by-rule, bit-by-bit evaluation, under random
//    groups, rules, memberships and changes to all three.
//  - Stateful: process() vs a reference that remembers every tracked packet in a list
//    and scans it (TCP without handshake flags, UDP, GRE; a fixed clock, so no expiry).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "vpc_policy/test_util.hpp"

namespace azote::vpc {
namespace {

using namespace test;

// ---- reference model ----

struct RefGroup {
  std::vector<Rule> in, out;
  std::set<uint32_t> members;
};

struct Reference {
  std::map<std::string, RefGroup> groups;
  std::vector<std::string> eni_groups;

  static bool same_prefix(uint32_t a, uint32_t b, int prefix) {
    for (int i = 0; i < prefix; ++i) {
      if (((a >> (31 - i)) & 1) != ((b >> (31 - i)) & 1)) return false;
    }
    return true;
  }
  const std::vector<Rule>& rules(const std::string& g, Direction d) const {
    return d == kIn ? groups.at(g).in : groups.at(g).out;
  }
  bool rule_allows(const Rule& r, Direction d, const FlowKey& k) const {
    if (r.protocol != -1) {
      if (k.protocol != r.protocol) return false;
      if (r.protocol == 6 || r.protocol == 17) {
        if (k.dst_port < r.from_port || k.dst_port > r.to_port) return false;
      } else if (r.protocol == 1) {
        if (r.from_port >= 0 && k.icmp_type != r.from_port) return false;
        if (r.to_port >= 0 && k.icmp_code != r.to_port) return false;
      }
    }
    const uint32_t addr = d == kIn ? k.src_ip : k.dst_ip;
    if (const Cidr* c = std::get_if<Cidr>(&r.peer)) return same_prefix(addr, c->network, c->prefix);
    return groups.at(std::get<GroupRef>(r.peer).group_id).members.count(addr) > 0;
  }
  bool allows(Direction d, const FlowKey& k) const {
    for (const std::string& g : eni_groups) {
      for (const Rule& r : rules(g, d)) {
        if (rule_allows(r, d, k)) return true;
      }
    }
    return false;
  }
  static bool everywhere(const Rule& r) {
    const Cidr* c = std::get_if<Cidr>(&r.peer);
    return c && c->prefix == 0;
  }
  // EC2: a flow allowed by a 0.0.0.0/0 rule whose other direction has a 0.0.0.0/0
  // rule for all ports of the protocol is not tracked, nor are its responses.
  bool untracked(Direction d, const FlowKey& k) const {
    if (k.protocol != 6 && k.protocol != 17) return false;
    auto some = [&](Direction dir, auto pred) {
      for (const std::string& g : eni_groups) {
        for (const Rule& r : rules(g, dir)) {
          if (pred(r)) return true;
        }
      }
      return false;
    };
    auto all_ports = [&](const Rule& r) {
      return everywhere(r) &&
             (r.protocol == -1 || (r.protocol == k.protocol && r.from_port == 0 && r.to_port == 65535));
    };
    const Direction o = opposite(d);
    const bool here_from_anywhere = some(d, [&](const Rule& r) { return everywhere(r) && rule_allows(r, d, k); });
    if (!here_from_anywhere) return false;
    if (some(o, all_ports)) return true;
    const FlowKey back = k.reversed();
    return some(d, all_ports) &&
           some(o, [&](const Rule& r) { return everywhere(r) && rule_allows(r, o, back); });
  }

  // Stateful part: every packet that started a tracked flow.
  std::vector<std::pair<Direction, FlowKey>> tracked;
  static bool same_flow(Direction d1, const FlowKey& a, Direction d2, const FlowKey& b) {
    if (a.protocol != b.protocol) return false;
    const bool ports = a.protocol == 6 || a.protocol == 17;
    if (d1 == d2) {
      return a.src_ip == b.src_ip && a.dst_ip == b.dst_ip &&
             (!ports || (a.src_port == b.src_port && a.dst_port == b.dst_port));
    }
    return a.src_ip == b.dst_ip && a.dst_ip == b.src_ip &&
           (!ports || (a.src_port == b.dst_port && a.dst_port == b.src_port));
  }
  bool process(Direction d, const FlowKey& k) {
    for (const auto& [td, tk] : tracked) {
      if (same_flow(td, tk, d, k)) return true;
    }
    if (!allows(d, k)) return false;
    if (!untracked(d, k)) tracked.emplace_back(d, k);
    return true;
  }
};

// ---- random scenario ----

class Scenario {
 public:
  explicit Scenario(uint64_t seed) : rng_(seed) {}

  template <class T>
  const T& pick(const std::vector<T>& v) {
    return v[std::uniform_int_distribution<size_t>(0, v.size() - 1)(rng_)];
  }
  int uniform(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }
  bool chance(int percent) { return uniform(1, 100) <= percent; }

  uint32_t address() { return pick(addresses_); }
  uint16_t port() { return chance(80) ? pick(ports_) : static_cast<uint16_t>(uniform(0, 65535)); }
  Cidr random_cidr() {
    const int prefix = pick(std::vector<int>{0, 0, 1, 8, 16, 23, 24, 31, 32, 32});
    const uint32_t mask = prefix == 0 ? 0 : ~0u << (32 - prefix);
    return Cidr{address() & mask, static_cast<uint8_t>(prefix)};
  }
  Peer peer() {
    if (chance(25)) return GroupRef{pick(group_names_)};
    return random_cidr();
  }
  Rule rule() {
    switch (uniform(0, 5)) {
      case 0: return Rule::all(peer());
      case 1:
      case 2: {
        int a = port(), b = port();
        if (a > b) std::swap(a, b);
        if (chance(15)) a = 0, b = 65535;
        return uniform(0, 1) ? Rule::tcp(a, b, peer()) : Rule::udp(a, b, peer());
      }
      case 3: {
        const int type = pick(std::vector<int>{-1, 0, 3, 8, 11});
        const int code = type == -1 ? -1 : pick(std::vector<int>{-1, 0, 1, 4});
        return Rule::icmp(type, code, peer());
      }
      default: return Rule::proto(pick(std::vector<int>{47, 50}), peer());
    }
  }
  FlowKey packet(bool stateful) {
    const uint8_t proto = stateful ? pick(std::vector<uint8_t>{6, 6, 17, 17, 47})
                                   : pick(std::vector<uint8_t>{1, 6, 6, 17, 17, 47, 50});
    const uint32_t s = address(), d = address();
    switch (proto) {
      case 6: return FlowKey::tcp(s, port(), d, port());
      case 17: return FlowKey::udp(s, port(), d, port());
      case 1:
        return FlowKey::icmp(s, d, static_cast<uint8_t>(pick(std::vector<int>{0, 3, 8, 11, 13})),
                             static_cast<uint8_t>(pick(std::vector<int>{0, 1, 4})),
                             static_cast<uint16_t>(uniform(0, 3)));
      default: return FlowKey::other(proto, s, d);
    }
  }
  const std::vector<std::string>& group_names() const { return group_names_; }

 private:
  std::mt19937_64 rng_;
  const std::vector<uint32_t> addresses_ = {
      0x0a000001, 0x0a000002, 0x0a000003, 0x0a000101, 0x0a000102, 0x0a00ff01,
      0xc0a80101, 0xcb007105, 0xcb007106, 0x00000000, 0xffffffff, 0x80000000, 0x7fffffff};
  const std::vector<uint16_t> ports_ = {0, 1, 22, 53, 79, 80, 81, 443, 1023, 1024, 65534, 65535};
  const std::vector<std::string> group_names_ = {"sg-0", "sg-1", "sg-2", "sg-3", "sg-4", "sg-5"};
};

// Random groups, rules, members; engine and reference built from the same calls.
struct World {
  FakeClock clock{seconds(1)};
  PolicyEngine engine{clock};
  Reference ref;
  EniHandle eni;

  void add_rule(Scenario& s) {
    const std::string& g = s.pick(s.group_names());
    const Direction d = s.chance(50) ? kIn : kOut;
    const Rule r = s.rule();
    auto res = engine.add_rule(g, d, r);
    auto& list = d == kIn ? ref.groups[g].in : ref.groups[g].out;
    if (res.ok()) {
      list.push_back(r);
    } else {
      ASSERT_EQ(res.error().code, VpcErrc::kDuplicate) << res.error().message();
    }
  }
  void remove_rule(Scenario& s) {
    const std::string& g = s.pick(s.group_names());
    const Direction d = s.chance(50) ? kIn : kOut;
    auto& list = d == kIn ? ref.groups[g].in : ref.groups[g].out;
    if (list.empty()) return;
    const size_t i = static_cast<size_t>(s.uniform(0, static_cast<int>(list.size()) - 1));
    ASSERT_TRUE(engine.remove_rule(g, d, list[i]).ok());
    list.erase(list.begin() + static_cast<std::ptrdiff_t>(i));
  }
  void change_members(Scenario& s) {
    const std::string& g = s.pick(s.group_names());
    const uint32_t a = s.address();
    if (s.chance(50)) {
      ASSERT_TRUE(engine.add_member(g, a).ok());
      ref.groups[g].members.insert(a);
    } else {
      ASSERT_TRUE(engine.remove_member(g, a).ok());
      ref.groups[g].members.erase(a);
    }
  }
  void change_groups(Scenario& s) {
    std::vector<std::string> names = s.group_names();
    std::vector<std::string> chosen;
    const int n = s.uniform(1, 5);
    while (static_cast<int>(chosen.size()) < n) {
      const std::string& g = s.pick(names);
      if (std::find(chosen.begin(), chosen.end(), g) == chosen.end()) chosen.push_back(g);
    }
    ASSERT_TRUE(engine.set_interface_groups(eni, chosen).ok());
    ref.eni_groups = chosen;
  }
  void mutate(Scenario& s) {
    switch (s.uniform(0, 3)) {
      case 0: add_rule(s); break;
      case 1: remove_rule(s); break;
      case 2: change_members(s); break;
      default: change_groups(s); break;
    }
  }

  void build(Scenario& s) {
    for (const std::string& g : s.group_names()) {
      ASSERT_TRUE(engine.create_group(g).ok());
      ref.groups[g].out.push_back(Rule::all(Cidr{0, 0}));  // EC2's default egress rule
      if (s.chance(40)) {
        ASSERT_TRUE(engine.remove_rule(g, kOut, Rule::all(Cidr{0, 0})).ok());
        ref.groups[g].out.clear();
      }
    }
    for (int i = s.uniform(0, 30); i > 0; --i) add_rule(s);
    for (int i = s.uniform(0, 15); i > 0; --i) change_members(s);
    InterfaceConfig c;
    c.id = "eni-prop";
    c.groups = {"sg-0"};
    auto h = engine.add_interface(c);
    ASSERT_TRUE(h.ok());
    eni = *h;
    ref.eni_groups = c.groups;
    change_groups(s);
  }
};

TEST(Property, StatelessDecisionsMatchTheReference) {
  uint64_t checked = 0, allowed = 0;
  for (uint64_t seed = 1; seed <= 300; ++seed) {
    Scenario s(seed);
    World w;
    ASSERT_NO_FATAL_FAILURE(w.build(s));
    for (int i = 0; i < 400; ++i) {
      if (s.chance(3)) {
        ASSERT_NO_FATAL_FAILURE(w.mutate(s));
      }
      const FlowKey k = s.packet(/*stateful=*/false);
      for (Direction d : {kIn, kOut}) {
        const bool want = w.ref.allows(d, k);
        ASSERT_EQ(w.engine.rules_allow(w.eni, d, k), want)
            << "seed " << seed << " packet " << i << (d == kIn ? " in " : " out ")
            << "proto " << int{k.protocol} << " " << format_ipv4(k.src_ip) << ":" << k.src_port
            << " -> " << format_ipv4(k.dst_ip) << ":" << k.dst_port;
        ++checked;
        allowed += want ? 1 : 0;
      }
    }
  }
  std::printf("[ info     ] %llu decisions, %llu allowed\n",
              static_cast<unsigned long long>(checked), static_cast<unsigned long long>(allowed));
  // The generator must exercise both outcomes substantially.
  EXPECT_GT(allowed, checked / 10);
  EXPECT_LT(allowed, checked - checked / 10);
}

TEST(Property, StatefulDecisionsMatchTheReference) {
  uint64_t checked = 0, tracked_only = 0;
  for (uint64_t seed = 1; seed <= 200; ++seed) {
    Scenario s(seed * 7919);
    World w;
    ASSERT_NO_FATAL_FAILURE(w.build(s));
    std::vector<std::pair<Direction, FlowKey>> seen;
    for (int i = 0; i < 300; ++i) {
      if (s.chance(3)) {
        ASSERT_NO_FATAL_FAILURE(w.mutate(s));
      }
      Direction d = s.chance(50) ? kIn : kOut;
      FlowKey k = s.packet(/*stateful=*/true);
      if (!seen.empty() && s.chance(50)) {  // answer or repeat an earlier packet
        const auto& [pd, pk] = s.pick(seen);
        if (s.chance(70)) {
          d = opposite(pd);
          k = pk.reversed();
        } else {
          d = pd;
          k = pk;
        }
      }
      seen.emplace_back(d, k);
      const bool stateless = w.ref.allows(d, k);
      const bool want = w.ref.process(d, k);
      const Decision got = w.engine.process(w.eni, d, pkt(k, tcp::kAck));
      ASSERT_EQ(got.accepted(), want)
          << "seed " << seed * 7919 << " packet " << i << (d == kIn ? " in " : " out ")
          << "proto " << int{k.protocol} << " " << format_ipv4(k.src_ip) << ":" << k.src_port
          << " -> " << format_ipv4(k.dst_ip) << ":" << k.dst_port << " reason "
          << static_cast<int>(got.reason);
      ++checked;
      tracked_only += (want && !stateless) ? 1 : 0;
    }
  }
  std::printf("[ info     ] %llu packets, %llu passed only thanks to conntrack\n",
              static_cast<unsigned long long>(checked),
              static_cast<unsigned long long>(tracked_only));
  // Conntrack must have made a difference often enough to mean something.
  EXPECT_GT(tracked_only, checked / 50);
}

}  // namespace
}  // namespace azote::vpc
