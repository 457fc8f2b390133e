// Engine-level properties: counters, no allocation per packet in steady state, and the
// lookup micro-benchmark (logged, not asserted).
#include "vpc_policy/engine.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>

#include "vpc_policy/alloc_counter.hpp"
#include "vpc_policy/test_util.hpp"

namespace azote::vpc {
namespace {

using namespace test;

const uint32_t kMe = 0x0a00000a;    // 10.0.0.10
const uint32_t kPeer = 0xcb007105;  // 203.0.113.5

FlowLogConfig log_on() {
  FlowLogConfig c;
  c.enabled = true;
  c.account_id = "123456789010";
  return c;
}

TEST(Engine, CountsAcceptedAndRejected) {
  Fixture f;
  const EniHandle eni = f.add_eni("eni-1", {"sg-1"});
  EXPECT_TRUE(f.passes(eni, kOut, FlowKey::udp(kMe, 1, kPeer, 2)));
  EXPECT_TRUE(f.passes(eni, kIn, FlowKey::udp(kPeer, 2, kMe, 1)));
  EXPECT_FALSE(f.passes(eni, kIn, FlowKey::udp(kPeer, 3, kMe, 1)));
  const auto s = f.engine.stats(eni);
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->accepted, 2u);
  EXPECT_EQ(s->rejected, 1u);
  EXPECT_EQ(s->conntrack.inserted, 1u);
  EXPECT_EQ(s->conntrack.entries, 1u);
}

TEST(Engine, NoAllocationPerPacketInSteadyState) {
  Fixture f;
  const EniHandle eni = f.add_eni("eni-1", {"sg-1", "sg-2"}, {}, log_on());
  f.allow("sg-2", kIn, Rule::tcp(22, 22, sg("sg-1")));
  ASSERT_TRUE(f.engine.add_member("sg-1", 0x0a000001).ok());
  std::vector<Packet> packets;
  for (uint16_t p = 0; p < 64; ++p) {
    const FlowKey k = FlowKey::tcp(kMe, static_cast<uint16_t>(30000 + p), kPeer, 443);
    packets.push_back(pkt(k, tcp::kAck, 1500));
    packets.push_back(pkt(k.reversed(), tcp::kAck, 1500));
  }
  const Packet denied = pkt(FlowKey::tcp(kPeer, 1, kMe, 22), tcp::kSyn);
  auto run = [&] {
    for (int round = 0; round < 100; ++round) {
      for (size_t i = 0; i < packets.size(); ++i) {
        const Direction d = i % 2 == 0 ? kOut : kIn;
        ASSERT_TRUE(f.engine.process(eni, d, packets[i]).accepted());
      }
      ASSERT_FALSE(f.engine.process(eni, kIn, denied).accepted());
    }
  };
  run();  // warm-up: tables and flow-log window reach their size
  const uint64_t before = test::allocation_count();
  run();
  EXPECT_EQ(test::allocation_count() - before, 0u);
}

double lookups_per_second(PolicyEngine& engine, EniHandle eni, const std::vector<Packet>& pk,
                          const std::vector<Direction>& dirs, int n) {
  uint64_t accepted = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < n; ++i) {
    const size_t j = static_cast<size_t>(i) % pk.size();
    accepted += engine.process(eni, dirs[j], pk[j]).accepted() ? 1 : 0;
  }
  const std::chrono::duration<double> dt = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(accepted, static_cast<uint64_t>(n));
  return n / dt.count();
}

// Micro-benchmark: process() for packets of an established flow (hash probe, state
// update, timer re-arm, counters). Logged, not asserted: machines differ.
TEST(Benchmark, EstablishedFlowLookups) {
  constexpr int kN = 2'000'000;
  Fixture f;
  const EniHandle plain = f.add_eni("eni-plain", {"sg-1"});
  const EniHandle logged = f.add_eni("eni-logged", {"sg-1"}, {}, log_on());
  const FlowKey k = FlowKey::tcp(kMe, 40000, kPeer, 443);
  for (EniHandle e : {plain, logged}) {
    ASSERT_TRUE(f.passes(e, kOut, k, tcp::kSyn));
    ASSERT_TRUE(f.passes(e, kIn, k.reversed(), tcp::kSyn | tcp::kAck));
    ASSERT_TRUE(f.passes(e, kOut, k, tcp::kAck));
  }
  const std::vector<Packet> one = {pkt(k, tcp::kAck, 1500), pkt(k.reversed(), tcp::kAck, 1500)};
  const std::vector<Direction> dirs = {kOut, kIn};
  const double r1 = lookups_per_second(f.engine, plain, one, dirs, kN);
  const double r2 = lookups_per_second(f.engine, logged, one, dirs, kN);

  // 50,000 established flows, visited in a random order (cache misses included).
  const EniHandle many = f.add_eni("eni-many", {"sg-1"});
  std::vector<Packet> flows;
  std::vector<Direction> fdirs;
  for (uint32_t i = 0; i < 50000; ++i) {
    const FlowKey fk = FlowKey::tcp(kMe, static_cast<uint16_t>(10000 + i), kPeer + i % 7, 443);
    ASSERT_EQ(f.send(many, kOut, fk, tcp::kAck).reason, Reason::kNewFlow);
    flows.push_back(pkt(fk.reversed(), tcp::kAck, 1500));
    fdirs.push_back(kIn);
  }
  std::mt19937 rng(7);
  std::vector<size_t> order(flows.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), rng);
  std::vector<Packet> shuffled;
  for (size_t i : order) shuffled.push_back(flows[i]);
  const double r3 = lookups_per_second(f.engine, many, shuffled, fdirs, kN);

  std::printf("[ bench    ] established flow, 1 entry:          %.1f M lookups/s (%.0f ns)\n",
              r1 / 1e6, 1e9 / r1);
  std::printf("[ bench    ] established flow + flow log:        %.1f M lookups/s (%.0f ns)\n",
              r2 / 1e6, 1e9 / r2);
  std::printf("[ bench    ] 50k established flows, random order: %.1f M lookups/s (%.0f ns)\n",
              r3 / 1e6, 1e9 / r3);
  RecordProperty("established_lookups_per_s", static_cast<int>(r1));
  RecordProperty("established_flow_log_lookups_per_s", static_cast<int>(r2));
  RecordProperty("random_50k_lookups_per_s", static_cast<int>(r3));
}

}  // namespace
}  // namespace azote::vpc
