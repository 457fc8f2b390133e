// DriverQueue against lib/virtio's own device side (SplitQueue) in the same memory, and
// against a hostile device writing the used ring by hand.
#include "virtio/driver_queue.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "virtio/queue.hpp"

namespace azote::virtio {
namespace {

constexpr uint64_t kMemBytes = 1 << 20;
constexpr GuestAddress kRingBase(0x1000);
constexpr uint64_t kData = 0x40000;  // buffers from here on

GuestMemory make_memory() {
  auto m = GuestMemory::create({{GuestAddress(0), kMemBytes}});
  if (!m.ok()) std::abort();  // test setup
  return std::move(m).value();
}

class DriverQueueTest : public ::testing::Test {
 protected:
  void create(uint16_t size, bool event_idx = false) {
    size_ = size;
    layout_ = ring_layout(kRingBase, size);
    auto q = DriverQueue::create(mem_, size, layout_.desc, layout_.avail, layout_.used, event_idx);
    ASSERT_TRUE(q.ok()) << q.error().message();
    q_.emplace(std::move(q).value());
    auto c = dev_.configure(size, layout_.desc, layout_.avail, layout_.used, event_idx, false);
    ASSERT_TRUE(c.ok()) << c.error().message();
  }
  static GuestAddress buf(uint32_t i) { return GuestAddress(kData + 2048ull * i); }
  uint16_t add_one(uint32_t i, uint32_t len, bool writable) {
    const DriverBuffer b{buf(i), len, writable};
    auto h = q_->add(std::span(&b, 1), i);
    EXPECT_TRUE(h.ok()) << h.error().message();
    return h.ok() ? *h : 0;
  }
  // Hostile device: one used element by hand, then used->idx.
  void push_raw(uint16_t used_idx, uint32_t id, uint32_t len) {
    const virtq_used_elem e{id, len};
    ASSERT_TRUE(mem_.write_obj(layout_.used + used_ring_offset(used_idx % size_), e).ok());
    ASSERT_TRUE(mem_.write_obj(layout_.used + used_idx_offset(), static_cast<uint16_t>(used_idx + 1)).ok());
  }
  void expect_broken(DriverQueueErrc code) {
    auto r = q_->take();
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, code) << r.error().message();
    EXPECT_TRUE(q_->broken());
    ASSERT_TRUE(q_->last_error().has_value());
    EXPECT_EQ(q_->last_error()->code, code);
    auto again = q_->take();
    ASSERT_FALSE(again.ok());
    EXPECT_EQ(again.error().code, DriverQueueErrc::kBroken);
    const DriverBuffer b{buf(0), 16, false};
    EXPECT_FALSE(q_->add(std::span(&b, 1), 0).ok());
  }

  GuestMemory mem_ = make_memory();
  uint16_t size_ = 0;
  RingLayout layout_;
  std::optional<DriverQueue> q_;
  SplitQueue dev_{mem_};
};

TEST(DriverQueueLayout, PartsAreAlignedAndDisjoint) {
  const RingLayout l = ring_layout(GuestAddress(0x1000), 256);
  EXPECT_EQ(l.desc.raw, 0x1000u);
  EXPECT_EQ(l.avail.raw, 0x1000u + 16 * 256);
  EXPECT_EQ(l.used.raw % 4, 0u);
  EXPECT_GE(l.used.raw, l.avail.raw + avail_ring_size(256));
  EXPECT_EQ(l.bytes, l.used.raw + used_ring_size(256) - 0x1000);
  const RingLayout odd = ring_layout(GuestAddress(0x1001), 4);
  EXPECT_EQ(odd.desc.raw % 16, 0u);
}

TEST(DriverQueueCreate, RefusesBadLayouts) {
  GuestMemory mem = make_memory();
  const RingLayout l = ring_layout(kRingBase, 8);
  auto refused = [&](uint16_t size, GuestAddress d, GuestAddress a, GuestAddress u) {
    auto q = DriverQueue::create(mem, size, d, a, u, false);
    return !q.ok() && q.error().code == DriverQueueErrc::kBadConfig;
  };
  EXPECT_TRUE(refused(0, l.desc, l.avail, l.used));
  EXPECT_TRUE(refused(6, l.desc, l.avail, l.used));
  EXPECT_TRUE(refused(8, l.desc + 8, l.avail, l.used));                    // desc not 16-aligned
  EXPECT_TRUE(refused(8, l.desc, l.avail + 1, l.used));                    // avail not 2-aligned
  EXPECT_TRUE(refused(8, l.desc, l.avail, l.used + 2));                    // used not 4-aligned
  EXPECT_TRUE(refused(8, l.desc, l.avail, GuestAddress(kMemBytes - 16)));  // used past the end
  EXPECT_TRUE(refused(8, l.desc, l.desc + 64, l.used));                    // avail inside desc
  EXPECT_TRUE(refused(8, GuestAddress(~0ull & ~15ull), l.avail, l.used));  // wraps
  EXPECT_TRUE(DriverQueue::create(mem, 8, l.desc, l.avail, l.used, false).ok());
}

// Chains go to the device and come back with their tokens, across 16-bit index
// wrap-around, with every descriptor reclaimed.
TEST_F(DriverQueueTest, RoundTripsWithTheDeviceSide) {
  create(8);
  EXPECT_EQ(q_->free_descriptors(), 8);
  for (uint32_t round = 0; round < 70000 / 3; ++round) {
    // One readable + writable chain of 2, one single writable buffer.
    const DriverBuffer two[2] = {{buf(0), 12, false}, {buf(1), 100, true}};
    auto h1 = q_->add(two, 1000 + round);
    ASSERT_TRUE(h1.ok()) << h1.error().message();
    const uint16_t h2 = add_one(2, 64, true);
    EXPECT_EQ(q_->in_flight(), 2);
    EXPECT_EQ(q_->free_descriptors(), 5);
    q_->publish();
    auto c1 = dev_.pop();
    ASSERT_TRUE(c1.ok() && c1->has_value());
    EXPECT_EQ((*c1)->head, *h1);
    ASSERT_EQ((*c1)->readable.size(), 1u);
    ASSERT_EQ((*c1)->writable.size(), 1u);
    EXPECT_EQ((*c1)->readable[0].gpa, buf(0));
    EXPECT_EQ((*c1)->writable[0].len, 100u);
    auto c2 = dev_.pop();
    ASSERT_TRUE(c2.ok() && c2->has_value());
    EXPECT_EQ((*c2)->head, h2);
    // Completed out of order.
    ASSERT_TRUE(dev_.push_used(h2, 64).ok());
    ASSERT_TRUE(dev_.push_used(*h1, 7).ok());
    auto u = q_->take();
    ASSERT_TRUE(u.ok() && u->has_value()) << (u.ok() ? "" : u.error().message());
    EXPECT_EQ((*u)->head, h2);
    EXPECT_EQ((*u)->len, 64u);
    EXPECT_EQ((*u)->token, 2u);
    u = q_->take();
    ASSERT_TRUE(u.ok() && u->has_value());
    EXPECT_EQ((*u)->token, 1000u + round);
    EXPECT_EQ((*u)->len, 7u);
    u = q_->take();
    ASSERT_TRUE(u.ok());
    EXPECT_FALSE(u->has_value());
    ASSERT_EQ(q_->free_descriptors(), 8);
    ASSERT_EQ(q_->in_flight(), 0);
  }
  EXPECT_FALSE(q_->broken());
}

TEST_F(DriverQueueTest, FullRingAndBadChains) {
  create(4);
  for (uint32_t i = 0; i < 4; ++i) add_one(i, 32, true);
  const DriverBuffer b{buf(5), 32, true};
  auto full = q_->add(std::span(&b, 1), 5);
  ASSERT_FALSE(full.ok());
  EXPECT_EQ(full.error().code, DriverQueueErrc::kNoSpace);
  EXPECT_FALSE(q_->broken());  // the caller's problem, not the device's

  create(4);
  EXPECT_EQ(q_->add({}, 0).error().code, DriverQueueErrc::kBadBuffer);
  const DriverBuffer outside{GuestAddress(kMemBytes - 8), 16, true};
  EXPECT_EQ(q_->add(std::span(&outside, 1), 0).error().code, DriverQueueErrc::kBadBuffer);
  const DriverBuffer order[2] = {{buf(0), 16, true}, {buf(1), 16, false}};
  EXPECT_EQ(q_->add(order, 0).error().code, DriverQueueErrc::kBadBuffer);
  const DriverBuffer five[5] = {};
  EXPECT_EQ(q_->add(five, 0).error().code, DriverQueueErrc::kBadBuffer);
  EXPECT_EQ(q_->free_descriptors(), 4);
}

TEST_F(DriverQueueTest, UsedIndexBeyondTheChainsInFlight) {
  create(8);
  add_one(0, 64, true);
  q_->publish();
  ASSERT_TRUE(mem_.write_obj(layout_.used + used_idx_offset(), uint16_t{2}).ok());
  expect_broken(DriverQueueErrc::kUsedIndex);
}

TEST_F(DriverQueueTest, UsedIdOutsideTheQueue) {
  create(8);
  add_one(0, 64, true);
  q_->publish();
  push_raw(0, 8, 0);
  expect_broken(DriverQueueErrc::kUsedId);
}

TEST_F(DriverQueueTest, UsedIdThatIsNotAHeadInFlight) {
  create(8);
  const DriverBuffer two[2] = {{buf(0), 12, false}, {buf(1), 64, true}};
  auto h = q_->add(two, 0);
  ASSERT_TRUE(h.ok());
  q_->publish();
  // The second descriptor of the chain, not its head.
  push_raw(0, static_cast<uint32_t>(*h + 1), 0);
  expect_broken(DriverQueueErrc::kUsedId);
}

TEST_F(DriverQueueTest, UsedTwice) {
  create(8);
  const uint16_t h = add_one(0, 64, true);
  add_one(1, 64, true);
  q_->publish();
  push_raw(0, h, 10);
  auto u = q_->take();
  ASSERT_TRUE(u.ok() && u->has_value());
  push_raw(1, h, 10);  // the same head again
  expect_broken(DriverQueueErrc::kUsedId);
}

TEST_F(DriverQueueTest, UsedBeforeItWasPublished) {
  create(8);
  const uint16_t h = add_one(0, 64, true);
  q_->publish();
  const uint16_t unpublished = add_one(1, 64, true);
  push_raw(0, h, 1);
  ASSERT_TRUE(q_->take().ok());
  push_raw(1, unpublished, 1);
  // used->idx is 2 with one chain published and taken: more completions than in flight.
  expect_broken(DriverQueueErrc::kUsedIndex);
}

TEST_F(DriverQueueTest, UsedLenBeyondTheWritableBytes) {
  create(8);
  const uint16_t h = add_one(0, 64, true);
  q_->publish();
  push_raw(0, h, 65);
  expect_broken(DriverQueueErrc::kUsedLen);
}

TEST_F(DriverQueueTest, ReadableOnlyChainMustReportZero) {
  create(8);
  const uint16_t h = add_one(0, 64, false);
  q_->publish();
  push_raw(0, h, 1);
  expect_broken(DriverQueueErrc::kUsedLen);
}

TEST_F(DriverQueueTest, KickSuppressionWithoutEventIdx) {
  create(8);
  EXPECT_FALSE(q_->publish());  // nothing added
  add_one(0, 64, true);
  EXPECT_TRUE(q_->publish());
  dev_.set_notification(false);  // used->flags NO_NOTIFY
  add_one(1, 64, true);
  EXPECT_FALSE(q_->publish());
  dev_.set_notification(true);
  add_one(2, 64, true);
  EXPECT_TRUE(q_->publish());
}

TEST_F(DriverQueueTest, EventIdxKicksAndInterrupts) {
  create(8, true);
  add_one(0, 64, true);
  EXPECT_TRUE(q_->publish());  // avail_event 0 crossed
  ASSERT_TRUE(dev_.pop().ok());
  // The device has not asked again (avail_event still 0): the next buffer needs no kick.
  add_one(1, 64, true);
  EXPECT_FALSE(q_->publish());
  ASSERT_TRUE(dev_.pop().ok());
  auto empty = dev_.pop();  // empty: republishes avail_event = 2
  ASSERT_TRUE(empty.ok() && !empty->has_value());
  add_one(2, 64, true);
  EXPECT_TRUE(q_->publish());

  // Interrupts: after rearm() the device interrupts at the next completion.
  ASSERT_TRUE(dev_.push_used(0, 10).ok());
  EXPECT_TRUE(dev_.needs_interrupt());  // used_event 0
  auto u = q_->take();
  ASSERT_TRUE(u.ok() && u->has_value());
  ASSERT_TRUE(q_->take().ok());
  EXPECT_FALSE(q_->rearm());  // used_event = 1, nothing pending
  ASSERT_TRUE(dev_.push_used(1, 10).ok());
  EXPECT_TRUE(dev_.needs_interrupt());
  // Without rearm() the device stays quiet; rearm() then reports what is pending.
  ASSERT_TRUE(q_->take().ok());
  ASSERT_TRUE(dev_.pop().ok());
  ASSERT_TRUE(dev_.push_used(2, 10).ok());
  EXPECT_TRUE(q_->rearm());
  auto last = q_->take();
  ASSERT_TRUE(last.ok() && last->has_value());
  EXPECT_EQ((*last)->token, 2u);
}

TEST_F(DriverQueueTest, RandomGarbageNeverEscapes) {
  // Whatever a device writes into the used ring, take() either returns a chain that was
  // in flight (with a valid len) or breaks the queue; descriptors are never lost.
  uint32_t seed = 12345;
  auto rnd = [&] { return seed = seed * 1103515245u + 12345u; };
  for (int trial = 0; trial < 200; ++trial) {
    create(16);
    for (uint32_t i = 0; i < 10; ++i) add_one(i, 128, (i & 1) != 0);
    q_->publish();
    for (uint32_t i = 0; i < 16; ++i)
      ASSERT_TRUE(mem_.write_obj(layout_.used + used_ring_offset(i), virtq_used_elem{rnd() % 20, rnd() % 200}).ok());
    ASSERT_TRUE(mem_.write_obj(layout_.used + used_idx_offset(), static_cast<uint16_t>(rnd() % 24)).ok());
    for (int k = 0; k < 40; ++k) {
      auto u = q_->take();
      if (!u.ok()) break;
      if (!u->has_value()) break;
      EXPECT_LT((*u)->token, 10u);
      EXPECT_LE((*u)->len, ((*u)->token & 1) != 0 ? 128u : 0u);
    }
    EXPECT_EQ(q_->free_descriptors() + q_->in_flight(), 16);
  }
}

}  // namespace
}  // namespace azote::virtio
