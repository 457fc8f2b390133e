// SplitQueue against a mock driver: normal chains, index wrap-around, notification
// suppression, indirect tables, and a hostile driver (bad indices, loops, buffers outside
// memory, moving indices, concurrent scribbling over the rings).
#include "virtio/queue.hpp"

#include <gtest/gtest.h>
#include <time.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>

#include "virtio/blk.hpp"
#include "virtio/testing/driver.hpp"

namespace azote::virtio {
namespace {

using testing::MockDriver;
using testing::Seg;

constexpr uint64_t kMemBytes = 1 << 20;
constexpr GuestAddress kRingBase(0x1000);
constexpr uint64_t kSpan = 0x80000;

GuestMemory make_memory(uint64_t bytes = kMemBytes) {
  auto m = GuestMemory::create({{GuestAddress(0), bytes}});
  if (!m.ok()) std::abort();  // test setup
  return std::move(m).value();
}

class QueueTest : public ::testing::Test {
 protected:
  explicit QueueTest(uint16_t size = 8) : mem_(make_memory()), drv_(mem_, size, kRingBase, kSpan), q_(mem_) {}

  void configure(bool event_idx = false, bool indirect = true) {
    auto r = q_.configure(drv_.size(), drv_.desc_addr(), drv_.avail_addr(), drv_.used_addr(), event_idx, indirect);
    ASSERT_TRUE(r.ok()) << r.error().message();
  }
  // Publishes one chain and pops it.
  Result<std::optional<Chain>, QueueError> add_and_pop(const std::vector<Seg>& segs) {
    EXPECT_TRUE(drv_.add_chain(segs).has_value());
    drv_.publish();
    return q_.pop();
  }
  // Expects the next pop to fail with `code` and the queue to stay broken.
  void expect_broken(QueueErrc code) {
    auto r = q_.pop();
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, code) << r.error().message();
    EXPECT_TRUE(q_.broken());
    ASSERT_TRUE(q_.last_error().has_value());
    EXPECT_EQ(q_.last_error()->code, code);
    EXPECT_EQ(q_.stats().errors_of(code), 1u);
    auto again = q_.pop();
    ASSERT_FALSE(again.ok());
    EXPECT_EQ(again.error().code, QueueErrc::kBroken);
  }
  Seg rd(uint32_t len) { return Seg{drv_.alloc(len), len, false}; }
  Seg wr(uint32_t len) { return Seg{drv_.alloc(len), len, true}; }

  GuestMemory mem_;
  MockDriver drv_;
  SplitQueue q_;
};

// ---- configure --------------------------------------------------------------------------

TEST_F(QueueTest, ConfigureRejectsBadLayouts) {
  const auto d = drv_.desc_addr(), a = drv_.avail_addr(), u = drv_.used_addr();
  EXPECT_EQ(q_.configure(0, d, a, u, false).error().code, QueueErrc::kBadConfig);
  EXPECT_FALSE(q_.configure(3, d, a, u, false).ok());       // not a power of two
  EXPECT_FALSE(q_.configure(65535, d, a, u, false).ok());   // above 32768, not a power of two
  EXPECT_FALSE(q_.configure(8, d + 8, a, u, false).ok());   // descriptor table not 16-aligned
  EXPECT_FALSE(q_.configure(8, d, a + 1, u, false).ok());   // avail not 2-aligned
  EXPECT_FALSE(q_.configure(8, d, a, u + 2, false).ok());   // used not 4-aligned
  EXPECT_FALSE(q_.configure(8, GuestAddress(kMemBytes - 64), a, u, false).ok());  // runs past RAM
  EXPECT_FALSE(q_.configure(8, GuestAddress(~uint64_t{0} - 15), a, u, false).ok());  // wraps
  EXPECT_FALSE(q_.configure(8, d, GuestAddress(4 * kMemBytes), u, false).ok());   // outside RAM
  EXPECT_FALSE(q_.configure(8, d, d + 64, u, false).ok());  // avail inside the descriptor table
  EXPECT_FALSE(q_.configure(8, d, a, a + 4, false).ok());   // used overlaps avail
  EXPECT_FALSE(q_.ready());
  EXPECT_EQ(q_.stats().errors_of(QueueErrc::kBadConfig), 11u);
  // Not configured: pop and push refuse, nothing breaks.
  EXPECT_EQ(q_.pop().error().code, QueueErrc::kNotReady);
  EXPECT_EQ(q_.push_used(0, 0).error().code, QueueErrc::kNotReady);
  EXPECT_FALSE(q_.needs_interrupt());
  EXPECT_TRUE(q_.configure(8, d, a, u, false).ok());
  EXPECT_TRUE(q_.ready());
}

TEST(QueueConfig, LargestQueueFits) {
  GuestMemory mem = make_memory(2 << 20);
  SplitQueue q(mem);
  const uint64_t n = kMaxQueueSize;
  ASSERT_TRUE(q.configure(32768, GuestAddress(0), GuestAddress(16 * n), GuestAddress(16 * n + 8 * n), true).ok());
  EXPECT_EQ(q.size(), 32768);
}

// ---- normal operation -----------------------------------------------------------------------

TEST_F(QueueTest, PopsAChainAndCompletesIt) {
  configure();
  const Seg a = rd(16), b = rd(512), c = wr(512), d = wr(1);
  auto r = add_and_pop({a, b, c, d});
  ASSERT_TRUE(r.ok()) << r.error().message();
  ASSERT_TRUE(r->has_value());
  const Chain& ch = **r;
  ASSERT_EQ(ch.readable.size(), 2u);
  ASSERT_EQ(ch.writable.size(), 2u);
  EXPECT_EQ(ch.readable_bytes, 528u);
  EXPECT_EQ(ch.writable_bytes, 513u);
  EXPECT_EQ(ch.readable[1].gpa, b.gpa);
  EXPECT_EQ(ch.readable[1].len, 512u);
  EXPECT_EQ(ch.readable[1].host, mem_.range(b.gpa, 512));
  EXPECT_EQ(ch.writable[1].host, mem_.range(d.gpa, 1));

  // Nothing more.
  auto empty = q_.pop();
  ASSERT_TRUE(empty.ok());
  EXPECT_FALSE(empty->has_value());

  ASSERT_TRUE(q_.push_used(ch.head, 513).ok());
  const auto used = drv_.take_used();
  ASSERT_EQ(used.size(), 1u);
  EXPECT_EQ(used[0].id, ch.head);
  EXPECT_EQ(used[0].len, 513u);
  EXPECT_EQ(q_.stats().popped, 1u);
  EXPECT_EQ(q_.stats().completed, 1u);
  EXPECT_EQ(drv_.free_descriptors(), 8u);
}

TEST_F(QueueTest, PopsInAvailOrderAndReusesChainStorage) {
  configure();
  std::vector<uint16_t> heads;
  for (int i = 0; i < 4; ++i) heads.push_back(*drv_.add_chain({rd(64), wr(8)}));
  drv_.publish();
  Chain c;
  for (int i = 0; i < 4; ++i) {
    auto r = q_.pop_into(c);
    ASSERT_TRUE(r.ok());
    ASSERT_TRUE(*r);
    EXPECT_EQ(c.head, heads[i]);
    EXPECT_EQ(c.readable.size(), 1u);
    EXPECT_EQ(c.writable.size(), 1u);
  }
  auto r = q_.pop_into(c);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(*r);
  EXPECT_EQ(q_.next_avail(), 4);
}

TEST_F(QueueTest, ZeroLengthAndOnlyWritableBuffersAreFine) {
  configure();
  auto r = add_and_pop({Seg{GuestAddress(0x9000), 0, false}, wr(4)});
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ((*r)->readable_bytes, 0u);
  auto w = add_and_pop({wr(4), wr(4)});
  ASSERT_TRUE(w.ok());
  EXPECT_TRUE((*w)->readable.empty());
  EXPECT_EQ((*w)->writable_bytes, 8u);
}

TEST_F(QueueTest, FullRingOfChains) {
  configure();
  for (int i = 0; i < 8; ++i) ASSERT_TRUE(drv_.add_chain({wr(4)}).has_value());
  drv_.publish();  // avail idx exactly queue size ahead: allowed
  for (int i = 0; i < 8; ++i) {
    auto r = q_.pop();
    ASSERT_TRUE(r.ok()) << r.error().message();
    ASSERT_TRUE(r->has_value());
    ASSERT_TRUE(q_.push_used((*r)->head, 4).ok());
  }
  EXPECT_EQ(drv_.take_used().size(), 8u);
}

TEST_F(QueueTest, IndicesWrapAround) {
  configure();
  drv_.start_at(65533);
  q_.set_next_avail(65533);
  q_.set_next_used(65533);
  for (int round = 0; round < 12; ++round) {
    // Two chains per round so the avail and used rings both wrap inside a batch.
    const uint16_t h1 = *drv_.add_chain({rd(8), wr(8)});
    const uint16_t h2 = *drv_.add_chain({wr(16)});
    drv_.publish();
    auto a = q_.pop();
    auto b = q_.pop();
    ASSERT_TRUE(a.ok() && b.ok());
    ASSERT_TRUE(a->has_value() && b->has_value());
    EXPECT_EQ((*a)->head, h1);
    EXPECT_EQ((*b)->head, h2);
    ASSERT_TRUE(q_.push_used(h1, 8).ok());
    ASSERT_TRUE(q_.push_used(h2, 16).ok());
    const auto used = drv_.take_used();
    ASSERT_EQ(used.size(), 2u);
    EXPECT_EQ(used[0].id, h1);
    EXPECT_EQ(used[1].len, 16u);
  }
  EXPECT_EQ(q_.next_avail(), static_cast<uint16_t>(65533 + 24));
  EXPECT_EQ(drv_.used_idx(), static_cast<uint16_t>(65533 + 24));
}

TEST_F(QueueTest, BaseSetBeforeAddressIsKept) {
  // vhost-user front ends may send SET_VRING_BASE before SET_VRING_ADDR.
  drv_.start_at(500);
  q_.set_next_avail(500);
  q_.set_next_used(500);
  configure();
  EXPECT_EQ(q_.next_avail(), 500);
  const uint16_t h = *drv_.add_chain({wr(4)});
  drv_.publish();
  auto r = q_.pop();
  ASSERT_TRUE(r.ok() && r->has_value());
  EXPECT_EQ((*r)->head, h);
  ASSERT_TRUE(q_.push_used(h, 4).ok());
  EXPECT_EQ(drv_.used_idx(), 501);
  q_.reset();
  EXPECT_EQ(q_.next_avail(), 0);
  EXPECT_EQ(q_.next_used(), 0);
}

TEST_F(QueueTest, AvailIdxJumpAcrossWrapIsCheckedModulo) {
  configure();
  drv_.start_at(65530);
  q_.set_next_avail(65530);
  drv_.set_avail_idx(static_cast<uint16_t>(65530 + 9));  // 9 ahead of 8-entry queue, across the wrap
  expect_broken(QueueErrc::kAvailIndex);
}

// ---- notifications ---------------------------------------------------------------------------

TEST(NeedEvent, SpecArithmeticWithWrap) {
  EXPECT_TRUE(need_event(0, 1, 0));        // first buffer used, used_event 0 (spec example)
  EXPECT_FALSE(need_event(1, 1, 0));       // not yet: notify when idx reaches used_event + 1
  EXPECT_TRUE(need_event(1, 2, 0));        // batch crossed it
  EXPECT_TRUE(need_event(5, 6, 5));
  EXPECT_FALSE(need_event(5, 5, 4));
  EXPECT_FALSE(need_event(7, 7, 7));       // nothing new
  EXPECT_TRUE(need_event(65535, 0, 65535));  // crossing the wrap
  EXPECT_TRUE(need_event(65535, 3, 65534));
  EXPECT_FALSE(need_event(65534, 1, 65535));  // event already behind: no
  EXPECT_TRUE(need_event(2, 3, 65535));       // batch across the wrap crosses event 2
  EXPECT_FALSE(need_event(4, 3, 65535));
}

TEST_F(QueueTest, InterruptWithoutEventIdxHonoursNoInterruptFlag) {
  configure(/*event_idx=*/false);
  EXPECT_FALSE(q_.needs_interrupt());  // nothing used yet
  auto r = add_and_pop({wr(4)});
  ASSERT_TRUE(r.ok() && r->has_value());
  ASSERT_TRUE(q_.push_used((*r)->head, 0).ok());
  EXPECT_TRUE(q_.needs_interrupt());
  EXPECT_FALSE(q_.needs_interrupt());  // already accounted for
  drv_.set_avail_flags(kAvailFNoInterrupt);
  auto r2 = add_and_pop({wr(4)});
  ASSERT_TRUE(q_.push_used((*r2)->head, 0).ok());
  EXPECT_FALSE(q_.needs_interrupt());
}

TEST_F(QueueTest, InterruptWithEventIdxFollowsUsedEvent) {
  configure(/*event_idx=*/true);
  drv_.set_avail_flags(kAvailFNoInterrupt);  // must be ignored with EVENT_IDX
  drv_.set_used_event(2);                    // notify when used idx passes 2 (i.e. reaches 3)
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(drv_.add_chain({wr(4)}).has_value());
  drv_.publish();
  std::vector<bool> irq;
  for (int i = 0; i < 4; ++i) {
    auto r = q_.pop();
    ASSERT_TRUE(r.ok() && r->has_value());
    ASSERT_TRUE(q_.push_used((*r)->head, 4).ok());
    irq.push_back(q_.needs_interrupt());
  }
  EXPECT_EQ(irq, (std::vector<bool>{false, false, true, false}));
}

TEST_F(QueueTest, InterruptWithEventIdxAcrossWrap) {
  configure(/*event_idx=*/true);
  drv_.start_at(65534);
  q_.set_next_avail(65534);
  q_.set_next_used(65534);
  drv_.set_used_event(65535);  // notify when the used idx goes from 65535 to 0
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(drv_.add_chain({wr(4)}).has_value());
  drv_.publish();
  std::vector<bool> irq;
  for (int i = 0; i < 3; ++i) {
    auto r = q_.pop();
    ASSERT_TRUE(r.ok() && r->has_value());
    ASSERT_TRUE(q_.push_used((*r)->head, 4).ok());
    irq.push_back(q_.needs_interrupt());
  }
  EXPECT_EQ(irq, (std::vector<bool>{false, true, false}));
}

TEST_F(QueueTest, NotificationSuppressionWithoutEventIdx) {
  configure(false);
  q_.set_notification(false);
  EXPECT_EQ(drv_.used_flags(), kUsedFNoNotify);
  q_.set_notification(true);
  EXPECT_EQ(drv_.used_flags(), 0);
}

TEST_F(QueueTest, NotificationWithEventIdxPublishesAvailEvent) {
  configure(true);
  drv_.start_at(100);
  q_.set_next_avail(100);
  q_.set_next_used(100);
  q_.set_notification(true);
  EXPECT_EQ(drv_.avail_event(), 100);
  EXPECT_EQ(drv_.used_flags(), 0);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(drv_.add_chain({wr(4)}).has_value());
  drv_.publish();
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(q_.pop().ok());
  // Finding the ring empty republishes avail_event at the next index.
  auto r = q_.pop();
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->has_value());
  EXPECT_EQ(drv_.avail_event(), 103);
  // Disabled (polling): an empty pop leaves avail_event alone.
  q_.set_notification(false);
  ASSERT_TRUE(drv_.add_chain({wr(4)}).has_value());
  drv_.publish();
  ASSERT_TRUE(q_.pop().ok());
  ASSERT_TRUE(q_.pop().ok());
  EXPECT_EQ(drv_.avail_event(), 103);
}

// ---- indirect ---------------------------------------------------------------------------------

TEST_F(QueueTest, IndirectTable) {
  configure();
  const Seg a = rd(16), b = wr(4096), c = wr(1);
  ASSERT_TRUE(drv_.add_indirect_chain({a, b, c}).has_value());
  drv_.publish();
  auto r = q_.pop();
  ASSERT_TRUE(r.ok()) << r.error().message();
  const Chain& ch = **r;
  ASSERT_EQ(ch.readable.size(), 1u);
  ASSERT_EQ(ch.writable.size(), 2u);
  EXPECT_EQ(ch.writable[0].gpa, b.gpa);
  EXPECT_EQ(ch.writable_bytes, 4097u);
  EXPECT_EQ(drv_.free_descriptors(), 7u);  // one ring descriptor for the whole request
}

TEST_F(QueueTest, DirectDescriptorsThenIndirectTable) {
  configure();
  // §2.7.5.3: zero or more normal descriptors followed by one indirect descriptor.
  const Seg hdr = rd(16);
  const virtq_desc table[2] = {{drv_.alloc(64).raw, 64, kDescFNext, 1}, {drv_.alloc(1).raw, 1, kDescFWrite, 0}};
  const GuestAddress t = drv_.put(std::span(reinterpret_cast<const uint8_t*>(table), sizeof table));
  drv_.write_desc(5, virtq_desc{hdr.gpa.raw, 16, kDescFNext, 6});
  drv_.write_desc(6, virtq_desc{t.raw, sizeof table, kDescFIndirect | kDescFWrite, 0});  // WRITE ignored
  drv_.set_avail_entry(0, 5);
  drv_.set_avail_idx(1);
  auto r = q_.pop();
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ((*r)->head, 5);
  EXPECT_EQ((*r)->readable.size(), 2u);
  EXPECT_EQ((*r)->writable.size(), 1u);
}

// ---- hostile drivers --------------------------------------------------------------------------

TEST_F(QueueTest, HeadIndexOutOfRange) {
  configure();
  drv_.set_avail_entry(0, 8);
  drv_.set_avail_idx(1);
  expect_broken(QueueErrc::kDescIndex);
}

TEST_F(QueueTest, NextIndexOutOfRange) {
  configure();
  drv_.write_desc(0, virtq_desc{0x9000, 16, kDescFNext, 200});
  drv_.set_avail_entry(0, 0);
  drv_.set_avail_idx(1);
  expect_broken(QueueErrc::kDescIndex);
}

TEST_F(QueueTest, SelfLoopTerminates) {
  configure();
  drv_.write_desc(3, virtq_desc{0x9000, 16, kDescFNext, 3});
  drv_.set_avail_entry(0, 3);
  drv_.set_avail_idx(1);
  expect_broken(QueueErrc::kChainTooLong);
}

TEST_F(QueueTest, CycleTerminates) {
  configure();
  drv_.write_desc(0, virtq_desc{0x9000, 16, kDescFNext, 1});
  drv_.write_desc(1, virtq_desc{0x9000, 16, kDescFNext, 2});
  drv_.write_desc(2, virtq_desc{0x9000, 16, kDescFNext, 0});
  drv_.set_avail_entry(0, 1);
  drv_.set_avail_idx(1);
  expect_broken(QueueErrc::kChainTooLong);
}

TEST(QueueHostile, CycleInLargestQueueEndsAfterQueueSizeSteps) {
  GuestMemory mem = make_memory(2 << 20);
  MockDriver drv(mem, 32768, GuestAddress(0), 2 << 20);
  SplitQueue q(mem);
  ASSERT_TRUE(q.configure(32768, drv.desc_addr(), drv.avail_addr(), drv.used_addr(), false).ok());
  for (uint32_t i = 0; i < 32768; ++i)
    drv.write_desc(static_cast<uint16_t>(i),
                   virtq_desc{0x1f0000, 1, kDescFNext, static_cast<uint16_t>((i + 1) % 32768)});
  drv.set_avail_entry(0, 0);
  drv.set_avail_idx(1);
  const auto t0 = std::chrono::steady_clock::now();
  auto r = q.pop();
  const auto dt = std::chrono::steady_clock::now() - t0;
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, QueueErrc::kChainTooLong);
  EXPECT_LT(dt, std::chrono::seconds(1));
}

TEST_F(QueueTest, LongestLegalChainIsAccepted) {
  configure();
  std::vector<Seg> segs;
  for (int i = 0; i < 8; ++i) segs.push_back(wr(1));
  auto r = add_and_pop(segs);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ((*r)->writable.size(), 8u);
}

TEST_F(QueueTest, BufferOutsideMemory) {
  configure();
  drv_.write_desc(0, virtq_desc{kMemBytes, 16, 0, 0});
  drv_.set_avail_entry(0, 0);
  drv_.set_avail_idx(1);
  expect_broken(QueueErrc::kBadBuffer);
}

TEST_F(QueueTest, BufferRunningPastTheEndOfMemory) {
  configure();
  drv_.write_desc(0, virtq_desc{kMemBytes - 8, 16, kDescFWrite, 0});
  drv_.set_avail_entry(0, 0);
  drv_.set_avail_idx(1);
  expect_broken(QueueErrc::kBadBuffer);
}

TEST_F(QueueTest, BufferAddressOverflow) {
  configure();
  drv_.write_desc(0, virtq_desc{~uint64_t{0} - 3, 0x100, 0, 0});
  drv_.set_avail_entry(0, 0);
  drv_.set_avail_idx(1);
  expect_broken(QueueErrc::kBadBuffer);
}

TEST(QueueHostile, BufferAcrossTwoRegions) {
  auto m = GuestMemory::create({{GuestAddress(0), 1 << 20}, {GuestAddress(1 << 20), 1 << 20}});
  ASSERT_TRUE(m.ok());
  MockDriver drv(*m, 8, kRingBase, kSpan);
  SplitQueue q(*m);
  ASSERT_TRUE(q.configure(8, drv.desc_addr(), drv.avail_addr(), drv.used_addr(), false).ok());
  drv.write_desc(0, virtq_desc{(1 << 20) - 8, 16, 0, 0});  // adjacent regions, still two regions
  drv.set_avail_entry(0, 0);
  drv.set_avail_idx(1);
  auto r = q.pop();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, QueueErrc::kBadBuffer);
}

TEST_F(QueueTest, AvailIdxJumpsByMoreThanQueueSize) {
  configure();
  drv_.set_avail_idx(9);
  expect_broken(QueueErrc::kAvailIndex);
}

TEST_F(QueueTest, AvailIdxMovingBackwardsIsAHugeJump) {
  configure();
  ASSERT_TRUE(drv_.add_chain({wr(4)}).has_value());
  drv_.publish();
  ASSERT_TRUE(q_.pop().ok());
  drv_.set_avail_idx(0);  // "unexposes" a buffer: 65535 ahead of next_avail
  expect_broken(QueueErrc::kAvailIndex);
}

TEST_F(QueueTest, ReadableAfterWritable) {
  configure();
  ASSERT_TRUE(drv_.add_chain({rd(16), wr(16), rd(16)}).has_value());
  drv_.publish();
  expect_broken(QueueErrc::kBadOrder);
}

TEST_F(QueueTest, ReadableAfterWritableInsideIndirectTable) {
  configure();
  ASSERT_TRUE(drv_.add_indirect_chain({wr(16), rd(16)}).has_value());
  drv_.publish();
  expect_broken(QueueErrc::kBadOrder);
}

TEST_F(QueueTest, NestedIndirect) {
  configure();
  const virtq_desc inner[1] = {{drv_.alloc(16).raw, 16, 0, 0}};
  const GuestAddress t_inner = drv_.put(std::span(reinterpret_cast<const uint8_t*>(inner), sizeof inner));
  const virtq_desc outer[1] = {{t_inner.raw, sizeof inner, kDescFIndirect, 0}};
  const GuestAddress t_outer = drv_.put(std::span(reinterpret_cast<const uint8_t*>(outer), sizeof outer));
  ASSERT_TRUE(drv_.add_raw_indirect(t_outer, sizeof outer).has_value());
  drv_.publish();
  expect_broken(QueueErrc::kBadIndirect);
}

TEST_F(QueueTest, IndirectWithNext) {
  configure();
  const virtq_desc table[1] = {{drv_.alloc(16).raw, 16, 0, 0}};
  const GuestAddress t = drv_.put(std::span(reinterpret_cast<const uint8_t*>(table), sizeof table));
  ASSERT_TRUE(drv_.add_raw_indirect(t, sizeof table, kDescFNext).has_value());
  drv_.publish();
  expect_broken(QueueErrc::kBadIndirect);
}

TEST_F(QueueTest, ZeroLengthIndirectTable) {
  configure();
  ASSERT_TRUE(drv_.add_raw_indirect(drv_.alloc(16), 0).has_value());
  drv_.publish();
  expect_broken(QueueErrc::kBadIndirect);
}

TEST_F(QueueTest, IndirectTableLengthNotAMultipleOf16) {
  configure();
  ASSERT_TRUE(drv_.add_raw_indirect(drv_.alloc(64), 24).has_value());
  drv_.publish();
  expect_broken(QueueErrc::kBadIndirect);
}

TEST_F(QueueTest, IndirectTableLargerThanQueue) {
  configure();
  ASSERT_TRUE(drv_.add_raw_indirect(drv_.alloc(16 * 9), 16 * 9).has_value());
  drv_.publish();
  expect_broken(QueueErrc::kBadIndirect);
}

TEST_F(QueueTest, IndirectTableOutsideMemory) {
  configure();
  ASSERT_TRUE(drv_.add_raw_indirect(GuestAddress(kMemBytes - 16), 32).has_value());
  drv_.publish();
  expect_broken(QueueErrc::kBadIndirect);
}

TEST_F(QueueTest, IndirectWithoutTheFeature) {
  configure(false, /*indirect=*/false);
  ASSERT_TRUE(drv_.add_indirect_chain({wr(16)}).has_value());
  drv_.publish();
  expect_broken(QueueErrc::kBadIndirect);
}

TEST_F(QueueTest, IndirectCycleTerminates) {
  configure();
  const uint64_t buf = drv_.alloc(16).raw;
  const virtq_desc table[2] = {{buf, 16, kDescFNext, 1}, {buf, 16, kDescFNext, 0}};
  const GuestAddress t = drv_.put(std::span(reinterpret_cast<const uint8_t*>(table), sizeof table));
  ASSERT_TRUE(drv_.add_raw_indirect(t, sizeof table).has_value());
  drv_.publish();
  expect_broken(QueueErrc::kChainTooLong);
}

TEST_F(QueueTest, IndirectNextOutsideTable) {
  configure();
  const virtq_desc table[2] = {{drv_.alloc(16).raw, 16, kDescFNext, 2}, {drv_.alloc(16).raw, 16, 0, 0}};
  const GuestAddress t = drv_.put(std::span(reinterpret_cast<const uint8_t*>(table), sizeof table));
  ASSERT_TRUE(drv_.add_raw_indirect(t, sizeof table).has_value());
  drv_.publish();
  expect_broken(QueueErrc::kDescIndex);
}

TEST_F(QueueTest, DirectPlusIndirectBuffersBoundedByQueueSize) {
  configure();
  // 2 direct buffers + an 8-entry table = 10 buffers > queue size 8.
  std::vector<virtq_desc> table;
  for (uint16_t i = 0; i < 8; ++i) {
    table.push_back({drv_.alloc(4).raw, 4, static_cast<uint16_t>(i < 7 ? kDescFNext : 0),
                     static_cast<uint16_t>(i + 1)});
  }
  const GuestAddress t = drv_.put(std::span(reinterpret_cast<const uint8_t*>(table.data()), 16 * table.size()));
  drv_.write_desc(0, virtq_desc{drv_.alloc(4).raw, 4, kDescFNext, 1});
  drv_.write_desc(1, virtq_desc{drv_.alloc(4).raw, 4, kDescFNext, 2});
  drv_.write_desc(2, virtq_desc{t.raw, 128, kDescFIndirect, 0});
  drv_.set_avail_entry(0, 0);
  drv_.set_avail_idx(1);
  expect_broken(QueueErrc::kChainTooLong);
}

TEST(QueueHostile, ChainOfMoreThan4GiB) {
  // Sparse memfd: nothing but the ring pages is ever touched.
  auto m = GuestMemory::create({{GuestAddress(0), 12ull << 30}});
  if (!m.ok()) GTEST_SKIP() << "cannot create 12 GiB of sparse guest memory: " << m.error().message();
  MockDriver drv(*m, 8, kRingBase, kSpan);
  SplitQueue q(*m);
  ASSERT_TRUE(q.configure(8, drv.desc_addr(), drv.avail_addr(), drv.used_addr(), false).ok());
  ASSERT_TRUE(drv.add_chain({Seg{GuestAddress(1ull << 30), 0x80000000u, false},
                             Seg{GuestAddress(4ull << 30), 0x80000000u, true},
                             Seg{GuestAddress(8ull << 30), 1, true}})
                  .has_value());
  drv.publish();
  auto r = q.pop();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, QueueErrc::kTooLarge);
}

TEST_F(QueueTest, PoppedChainIsAPrivateCopy) {
  configure();
  const Seg a = rd(16);
  ASSERT_TRUE(drv_.add_chain({a, wr(8)}).has_value());
  drv_.publish();
  auto r = q_.pop();
  ASSERT_TRUE(r.ok() && r->has_value());
  drv_.write_desc((*r)->head, virtq_desc{~uint64_t{0}, ~0u, 0xffff, 0xffff});  // rewritten after the pop
  EXPECT_EQ((*r)->readable[0].gpa, a.gpa);
  EXPECT_EQ((*r)->readable[0].len, 16u);
}

TEST_F(QueueTest, BrokenUntilResetCompletionsStillAllowed) {
  configure();
  ASSERT_TRUE(drv_.add_chain({wr(4)}).has_value());
  drv_.publish();
  auto ok = q_.pop();
  ASSERT_TRUE(ok.ok() && ok->has_value());
  drv_.set_avail_entry(1, 42);
  drv_.set_avail_idx(2);
  expect_broken(QueueErrc::kDescIndex);
  // The in-flight request may still complete.
  EXPECT_TRUE(q_.push_used((*ok)->head, 4).ok());
  EXPECT_EQ(drv_.take_used().size(), 1u);
  // A device bug (bad head) is refused without counting against the guest.
  EXPECT_EQ(q_.push_used(8, 0).error().code, QueueErrc::kBadCompletion);
  // Device reset, driver re-initialises, queue works again; stats survive.
  q_.reset();
  EXPECT_FALSE(q_.broken());
  EXPECT_FALSE(q_.last_error().has_value());
  MockDriver fresh(mem_, 8, kRingBase, kSpan);
  ASSERT_TRUE(q_.configure(8, fresh.desc_addr(), fresh.avail_addr(), fresh.used_addr(), false).ok());
  ASSERT_TRUE(fresh.add_chain({Seg{fresh.alloc(4), 4, true}}).has_value());
  fresh.publish();
  auto again = q_.pop();
  ASSERT_TRUE(again.ok() && again->has_value());
  EXPECT_EQ(q_.stats().errors_of(QueueErrc::kDescIndex), 1u);
  EXPECT_EQ(q_.stats().errors_of(QueueErrc::kBadCompletion), 1u);
  EXPECT_EQ(q_.stats().popped, 2u);
}

std::chrono::nanoseconds thread_cpu_time() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec);
}

// ---- concurrency ------------------------------------------------------------------------------

// The guest rewrites the rings from another vCPU while the device pops. One thread
// scribbles (random bytes, plausible descriptors, ring entries, idx moves); the device
// thread pops, checks every buffer it is handed, parses it as a blk request, completes it,
// and re-configures when the queue breaks. Nothing may crash or hang, and every buffer
// handed out must lie inside guest memory.
TEST(QueueConcurrency, ScribblingDriverNeverYieldsBadBuffers) {
  constexpr uint64_t kMem = 256 << 10;
  constexpr uint16_t kSize = 64;
  GuestMemory mem = make_memory(kMem);
  MockDriver drv(mem, kSize, GuestAddress(0x1000), 0x10000);
  uint8_t* const base = mem.range(GuestAddress(0), kMem);
  const uint64_t ring_lo = drv.desc_addr().raw;
  const uint64_t ring_hi = drv.used_addr().raw + used_ring_size(kSize);

  std::atomic<bool> stop{false};
  std::thread guest([&] {
    uint64_t x = 0x9e3779b97f4a7c15ull;
    auto rnd = [&x] {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      return x;
    };
    uint16_t idx = 0;
    while (!stop.load(std::memory_order_relaxed)) {
      const uint64_t r = rnd();
      switch (r % 10) {
        case 0: {  // any byte of the rings
          const uint64_t at = ring_lo + (rnd() % (ring_hi - ring_lo));
          std::atomic_ref<uint8_t>(base[at]).store(static_cast<uint8_t>(rnd()), std::memory_order_relaxed);
          break;
        }
        case 1:
        case 2:
        case 3: {  // a plausible descriptor, sometimes pointing out of memory or at a table
          virtq_desc d{rnd() % (kMem + 8192), static_cast<uint32_t>(rnd() % 2048),
                       static_cast<uint16_t>(rnd() % 8), static_cast<uint16_t>(rnd() % (kSize + 2))};
          if (r % 64 == 1) d.len = static_cast<uint32_t>(16 * (rnd() % (kSize + 2)));
          std::memcpy(base + drv.desc_addr().raw + 16 * (rnd() % kSize), &d, sizeof d);
          break;
        }
        case 4:
        case 5: {  // a ring entry
          const uint64_t at = drv.avail_addr().raw + avail_ring_offset(static_cast<uint32_t>(rnd() % kSize));
          std::atomic_ref<uint16_t>(*reinterpret_cast<uint16_t*>(base + at))
              .store(static_cast<uint16_t>(rnd() % (kSize + 1)), std::memory_order_relaxed);
          break;
        }
        case 6: {  // now and then a well-formed blk request, published at once
          const uint16_t slot = static_cast<uint16_t>(rnd() % (kSize - 2));
          const uint32_t types[3] = {kBlkTIn, kBlkTOut, kBlkTFlush};
          const virtio_blk_req_hdr h{types[rnd() % 3], 0, rnd() % 300};
          const uint64_t hdr_at = 0x20000 + 16 * (rnd() % 64), data_at = 0x30000, status_at = 0x3f000;
          std::memcpy(base + hdr_at, &h, sizeof h);
          const uint32_t len = static_cast<uint32_t>(512 * (1 + rnd() % 4));
          const bool flush = h.type == kBlkTFlush;
          const virtq_desc ds[3] = {
              {hdr_at, 16, kDescFNext, static_cast<uint16_t>(slot + 1)},
              flush ? virtq_desc{status_at, 1, kDescFWrite, 0}
                    : virtq_desc{data_at, len, static_cast<uint16_t>(kDescFNext | (h.type == kBlkTIn ? kDescFWrite : 0)),
                                 static_cast<uint16_t>(slot + 2)},
              {status_at, 1, kDescFWrite, 0}};
          std::memcpy(base + drv.desc_addr().raw + 16 * slot, ds, sizeof ds);
          const uint64_t at = drv.avail_addr().raw + avail_ring_offset(idx % kSize);
          std::atomic_ref<uint16_t>(*reinterpret_cast<uint16_t*>(base + at)).store(slot, std::memory_order_relaxed);
          idx = static_cast<uint16_t>(idx + 1);
          std::atomic_ref<uint16_t>(*reinterpret_cast<uint16_t*>(base + drv.avail_addr().raw + 2))
              .store(idx, std::memory_order_release);
          break;
        }
        default: {  // publish a few, rarely jump
          idx = static_cast<uint16_t>(idx + ((r % 256) == 7 ? rnd() : rnd() % 4));
          std::atomic_ref<uint16_t>(*reinterpret_cast<uint16_t*>(base + drv.avail_addr().raw + 2))
              .store(idx, std::memory_order_release);
          break;
        }
      }
    }
  });

  // Stops and joins the guest thread however this test exits (a failed ASSERT returns).
  struct Joiner {
    std::atomic<bool>& stop;
    std::thread& t;
    ~Joiner() {
      stop.store(true);
      t.join();
    }
  } joiner{stop, guest};

  SplitQueue q(mem);
  const BlkConfig blk = BlkConfig(256).discard(64, 4, 1).write_zeroes(64, 4, true);
  const uint64_t negotiated = blk.features();
  BlkRequest req;
  Chain c;
  uint64_t pops = 0, breaks = 0, buffers = 0, configures = 0, parsed = 0;
  auto max_pop = std::chrono::nanoseconds(0);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(1500);
  while (std::chrono::steady_clock::now() < deadline) {
    if (!q.ready() || q.broken()) {
      ASSERT_TRUE(q.configure(kSize, drv.desc_addr(), drv.avail_addr(), drv.used_addr(), (configures & 1) != 0).ok());
      // Resume wherever the guest's idx is, as a reconnecting backend would.
      const uint16_t now = std::atomic_ref<uint16_t>(*reinterpret_cast<uint16_t*>(base + drv.avail_addr().raw + 2))
                               .load(std::memory_order_acquire);
      q.set_next_avail(now);
      q.set_next_used(now);
      ++configures;
    }
    // CPU time of this thread, so that being preempted on a busy machine does not count.
    const auto t0 = thread_cpu_time();
    auto r = q.pop_into(c);
    max_pop = std::max(max_pop, thread_cpu_time() - t0);
    if (!r.ok()) {
      ++breaks;
      continue;
    }
    if (!*r) continue;
    ++pops;
    ASSERT_LT(c.head, kSize);
    ASSERT_LE(c.readable.size() + c.writable.size(), kSize);
    uint64_t rb = 0, wb = 0;
    for (const auto* list : {&c.readable, &c.writable}) {
      for (const Buffer& b : *list) {
        ++buffers;
        ASSERT_LE(b.gpa.raw, kMem);
        ASSERT_LE(b.len, kMem - b.gpa.raw);
        ASSERT_EQ(b.host, base + b.gpa.raw);
        (list == &c.readable ? rb : wb) += b.len;
      }
    }
    ASSERT_EQ(rb, c.readable_bytes);
    ASSERT_EQ(wb, c.writable_bytes);
    auto p = parse_blk(c, blk, negotiated, req);
    uint32_t written = 0;
    if (p.ok()) {
      ++parsed;
      for (const iovec& v : req.iov) {
        ASSERT_GE(static_cast<uint8_t*>(v.iov_base), base);
        ASSERT_LE(static_cast<uint8_t*>(v.iov_base) + v.iov_len, base + kMem);
      }
      written = req.complete(kBlkSOk, req.op == BlkOp::kIn ? req.data_bytes : 0);
    } else {
      written = p.error().complete();
    }
    ASSERT_TRUE(q.push_used(c.head, written).ok());
    (void)q.needs_interrupt();
    if (pops % 16 == 0) q.set_notification((pops / 16) % 2 == 0);
  }
  std::printf("concurrency: %llu chains popped (%llu buffers, %llu parsed as blk), %llu breaks, %llu configures, "
              "slowest pop %lld us of CPU\n",
              static_cast<unsigned long long>(pops), static_cast<unsigned long long>(buffers),
              static_cast<unsigned long long>(parsed), static_cast<unsigned long long>(breaks),
              static_cast<unsigned long long>(configures),
              static_cast<long long>(std::chrono::duration_cast<std::chrono::microseconds>(max_pop).count()));
  EXPECT_GT(pops + breaks, 0u);
  EXPECT_LT(max_pop, std::chrono::milliseconds(500));
}

}  // namespace
}  // namespace azote::virtio
