// InflightQueue: tracking, crash recovery, and robustness against a scribbled area.
#include "vhost_user/inflight.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

namespace azote::vhost_user {
namespace {

struct Area {
  explicit Area(uint16_t n) : bytes(inflight_queue_bytes(n) + kInflightQueueAlign) {
    auto p = reinterpret_cast<uintptr_t>(bytes.data());
    base = bytes.data() + (kInflightQueueAlign - p % kInflightQueueAlign) % kInflightQueueAlign;
  }
  std::vector<uint8_t> bytes;
  uint8_t* base;
};

TEST(VhostUserInflight, Layout) {
  EXPECT_EQ(inflight_queue_bytes(1), 64u);
  EXPECT_EQ(inflight_queue_bytes(256), 4160u);  // 16 + 16 * 256, rounded up to 64
  EXPECT_EQ(inflight_region_bytes(2, 3), 2u * 64u);
}

TEST(VhostUserInflight, TracksAndRecoversInOrderOfTaking) {
  Area a(16);
  InflightQueue q(a.base, 16);
  q.initialize();
  bool valid = false;
  EXPECT_TRUE(q.header_ok(valid));
  EXPECT_TRUE(q.begin(5));
  EXPECT_TRUE(q.begin(2));
  EXPECT_TRUE(q.begin(9));
  EXPECT_FALSE(q.begin(16));  // out of range
  EXPECT_EQ(q.count_inflight(), 3u);
  // Complete 2 (used->idx 0 -> 1).
  EXPECT_TRUE(q.prepare_used(2));
  q.commit_used(1);
  EXPECT_EQ(q.count_inflight(), 2u);

  // A new process over the same area.
  InflightQueue again(a.base, 16);
  EXPECT_TRUE(again.header_ok(valid));
  auto r = again.recover(1, 16);
  EXPECT_EQ(r.heads, (std::vector<uint16_t>{5, 9}));  // taking order, not index order
  EXPECT_EQ(r.next_avail, 3);
  // New heads are ordered after the recovered ones.
  EXPECT_TRUE(again.begin(1));
  auto r2 = InflightQueue(a.base, 16).recover(1, 16);
  EXPECT_EQ(r2.heads, (std::vector<uint16_t>{5, 9, 1}));
}

TEST(VhostUserInflight, RepairsABatchPublishedBeforeTheCrash) {
  Area a(8);
  InflightQueue q(a.base, 8);
  q.initialize();
  for (uint16_t h : {0, 1, 2, 3}) q.begin(h);
  // Batch {1, 3} prepared, used->idx moved 0 -> 2 in the ring, then the process died
  // before commit_used().
  q.prepare_used(1);
  q.prepare_used(3);
  auto r = InflightQueue(a.base, 8).recover(2, 8);
  EXPECT_EQ(r.heads, (std::vector<uint16_t>{0, 2}));
  EXPECT_EQ(r.next_avail, 4);
  // Died before publishing used->idx: the batch is still in flight.
  Area b(8);
  InflightQueue p(b.base, 8);
  p.initialize();
  p.begin(4);
  p.prepare_used(4);
  auto r3 = InflightQueue(b.base, 8).recover(0, 8);
  EXPECT_EQ(r3.heads, (std::vector<uint16_t>{4}));
  EXPECT_EQ(r3.next_avail, 1);
}

TEST(VhostUserInflight, HeadsBeyondTheRingAreDropped) {
  Area a(16);
  InflightQueue q(a.base, 16);
  q.initialize();
  q.begin(3);
  q.begin(12);
  auto r = InflightQueue(a.base, 16).recover(0, 8);  // ring of 8: head 12 cannot be real
  EXPECT_EQ(r.heads, (std::vector<uint16_t>{3}));
}

TEST(VhostUserInflight, ScribbledAreaStaysBounded) {
  std::mt19937 rng(1234);
  for (int iter = 0; iter < 200; ++iter) {
    Area a(64);
    for (auto& b : a.bytes) b = static_cast<uint8_t>(rng());
    InflightQueue q(a.base, 64);
    bool valid = true;
    (void)q.header_ok(valid);
    auto r = q.recover(static_cast<uint16_t>(rng()), 32);
    EXPECT_LE(r.heads.size(), 32u);
    for (uint16_t h : r.heads) EXPECT_LT(h, 32);
  }
}

}  // namespace
}  // namespace azote::vhost_user
