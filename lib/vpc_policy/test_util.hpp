// Test helpers shared by the vpc_policy tests.
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "rate_limit/clock.hpp"
#include "vpc_policy/engine.hpp"

namespace azote::vpc::test {

using rate_limit::FakeClock;
using std::chrono::seconds;

inline uint32_t ip(const char* text) {
  auto v = parse_ipv4(text);
  EXPECT_TRUE(v.has_value()) << text;
  return v.value_or(0);
}

inline Cidr cidr(const char* text) {
  auto c = Cidr::parse(text);
  EXPECT_TRUE(c.ok()) << text;
  return c.ok() ? *c : Cidr{};
}

inline Peer sg(const char* id) { return GroupRef{id}; }

inline Packet pkt(const FlowKey& k, uint8_t flags = 0, uint32_t bytes = 60) {
  Packet p;
  p.key = k;
  p.tcp_flags = flags;
  p.bytes = bytes;
  return p;
}

constexpr Direction kIn = Direction::kIngress;
constexpr Direction kOut = Direction::kEgress;

// An engine on a fake clock with groups created on demand and one interface.
struct Fixture {
  FakeClock clock{seconds(1000)};
  PolicyEngine engine{clock};

  EniHandle add_eni(const std::string& id, std::vector<std::string> groups,
                    ConntrackConfig ct = {}, FlowLogConfig log = {}) {
    for (const std::string& g : groups) {
      if (!engine.rules(g, kIn).ok()) {
        EXPECT_TRUE(engine.create_group(g).ok()) << g;
      }
    }
    InterfaceConfig c;
    c.id = id;
    c.groups = std::move(groups);
    c.conntrack = ct;
    c.flow_log = std::move(log);
    auto h = engine.add_interface(c);
    EXPECT_TRUE(h.ok()) << (h.ok() ? "" : h.error().message());
    return h.ok() ? *h : EniHandle{};
  }
  void allow(const std::string& group, Direction d, const Rule& r) {
    auto res = engine.add_rule(group, d, r);
    ASSERT_TRUE(res.ok()) << res.error().message();
  }
  void revoke(const std::string& group, Direction d, const Rule& r) {
    auto res = engine.remove_rule(group, d, r);
    ASSERT_TRUE(res.ok()) << res.error().message();
  }
  Decision send(EniHandle e, Direction d, const FlowKey& k, uint8_t flags = 0,
                uint32_t bytes = 60) {
    return engine.process(e, d, pkt(k, flags, bytes));
  }
  bool passes(EniHandle e, Direction d, const FlowKey& k, uint8_t flags = 0) {
    return send(e, d, k, flags).accepted();
  }
};

}  // namespace azote::vpc::test
