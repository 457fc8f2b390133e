// RefusalAggregator: every refusal in exactly one record, a flood in a bounded number.
#include "controller/refusals.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace azote::controller {
namespace {

using namespace std::chrono_literals;
using Clock = RefusalAggregator::Clock;

struct Recorder {
  std::vector<Refusal> records;
  RefusalAggregator::Sink sink() {
    return [this](const Refusal& r) { records.push_back(r); };
  }
  uint64_t total() const {
    uint64_t n = 0;
    for (const auto& r : records) n += r.count;
    return n;
  }
};

TEST(Refusals, FirstAtOnceThenCountedPerInterval) {
  Recorder rec;
  RefusalAggregator agg(rec.sink(), 60s, 8);
  const auto t0 = Clock::now();
  agg.refused("", "unix:uid=0", "not TLS", t0);
  ASSERT_EQ(rec.records.size(), 1u);
  EXPECT_EQ(rec.records[0].count, 1u);
  EXPECT_EQ(rec.records[0].peer, "unix:uid=0");
  EXPECT_EQ(rec.records[0].reason, "not TLS");

  for (int i = 0; i < 1000; ++i) agg.refused("", "unix:uid=0", "not TLS", t0 + 1s);
  agg.tick(t0 + 59s);
  EXPECT_EQ(rec.records.size(), 1u) << "written before the interval ended";
  agg.tick(t0 + 60s);
  ASSERT_EQ(rec.records.size(), 2u);
  EXPECT_EQ(rec.records[1].count, 1000u);

  // Still busy: counted for another interval, not written one by one.
  for (int i = 0; i < 10; ++i) agg.refused("", "unix:uid=0", "not TLS", t0 + 70s);
  EXPECT_EQ(rec.records.size(), 2u);
  agg.tick(t0 + 120s);
  ASSERT_EQ(rec.records.size(), 3u);
  EXPECT_EQ(rec.records[2].count, 10u);

  // A quiet interval forgets the key: the next refusal is on record at once.
  agg.tick(t0 + 180s);
  EXPECT_EQ(agg.tracked_keys(), 0u);
  agg.refused("", "unix:uid=0", "not TLS", t0 + 181s);
  ASSERT_EQ(rec.records.size(), 4u);
  EXPECT_EQ(rec.records[3].count, 1u);
  EXPECT_EQ(rec.total(), 1u + 1000 + 10 + 1);
}

TEST(Refusals, KeysAreSeparateAndFlushWritesWhatIsPending) {
  Recorder rec;
  RefusalAggregator agg(rec.sink(), 60s, 8);
  const auto t0 = Clock::now();
  agg.refused("", "tcp:10.0.0.1", "not TLS", t0);
  agg.refused("", "tcp:10.0.0.2", "not TLS", t0);
  agg.refused("", "tcp:10.0.0.1", "no ALPN h2", t0);
  agg.refused("sha256:ab", "", "client certificate expired", t0);
  EXPECT_EQ(rec.records.size(), 4u);
  agg.refused("", "tcp:10.0.0.1", "not TLS", t0 + 1s);
  agg.refused("", "tcp:10.0.0.1", "not TLS", t0 + 2s);
  agg.refused("sha256:ab", "", "client certificate expired", t0 + 3s);
  EXPECT_EQ(rec.records.size(), 4u);
  agg.flush();
  ASSERT_EQ(rec.records.size(), 6u);
  EXPECT_EQ(rec.total(), 7u);
  EXPECT_EQ(agg.tracked_keys(), 0u);
  agg.flush();  // nothing pending: nothing written
  EXPECT_EQ(rec.records.size(), 6u);
}

TEST(Refusals, AFloodOfDistinctPeersIsBounded) {
  Recorder rec;
  constexpr size_t kMax = 16;
  RefusalAggregator agg(rec.sink(), 60s, kMax);
  const auto t0 = Clock::now();
  constexpr int kPeers = 100000;
  for (int i = 0; i < kPeers; ++i) agg.refused("", "tcp:10.0." + std::to_string(i / 250) + "." + std::to_string(i % 250), "not TLS", t0);
  // kMax peers on record one by one, then the overflow key once.
  EXPECT_EQ(rec.records.size(), kMax + 1);
  EXPECT_EQ(rec.records.back().peer, "*");
  EXPECT_EQ(rec.records.back().reason, kOverflowReason);
  EXPECT_EQ(agg.tracked_keys(), kMax + 1);
  agg.tick(t0 + 60s);
  // The overflow key's count; the first kMax keys had nothing more and are forgotten.
  ASSERT_EQ(rec.records.size(), kMax + 2);
  EXPECT_EQ(rec.records.back().count, static_cast<uint64_t>(kPeers) - kMax - 1);
  EXPECT_EQ(rec.total(), static_cast<uint64_t>(kPeers));
}

}  // namespace
}  // namespace azote::controller
