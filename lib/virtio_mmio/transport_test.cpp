#include "virtio_mmio/transport.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <utility>
#include <vector>

namespace azote::virtio_mmio {
namespace {

struct FakeBackend : DeviceBackend {
  uint32_t device_id() const override { return 2; }
  uint64_t device_features() const override { return (1ull << 9) | (1ull << 29); }
  uint16_t num_queues() const override { return 2; }
  uint16_t max_queue_size() const override { return 256; }
  bool read_config(uint32_t offset, std::span<uint8_t> out) override {
    if (offset + out.size() > sizeof config) return false;
    std::memcpy(out.data(), config + offset, out.size());
    return true;
  }
  bool write_config(uint32_t offset, std::span<const uint8_t> in) override {
    writes.push_back({offset, std::vector<uint8_t>(in.begin(), in.end())});
    if (offset + in.size() > sizeof config || offset != 7) return false;  // only byte 7 is writable
    std::memcpy(config + offset, in.data(), in.size());
    return true;
  }
  bool activate(uint64_t acked, const std::vector<std::optional<QueueConfig>>& q) override {
    activations++;
    acked_features = acked;
    queues = q;
    return accept;
  }
  void reset() override { resets++; }
  bool needs_reset() override {
    status_queries++;
    return broken;
  }
  bool broken = false;  // what needs_reset() answers
  int status_queries = 0;
  uint8_t config[8] = {0x00, 0x10, 0, 0, 0, 0, 0, 0};  // capacity 4096 sectors
  int activations = 0, resets = 0;
  bool accept = true;
  uint64_t acked_features = 0;
  std::vector<std::optional<QueueConfig>> queues;
  std::vector<std::pair<uint32_t, std::vector<uint8_t>>> writes;
};

struct Rig {
  FakeBackend be;
  Transport t{be};
  uint32_t rd(uint64_t off) {
    uint8_t b[4];
    t.read(off, b);
    uint32_t v;
    std::memcpy(&v, b, 4);
    return v;
  }
  void wr(uint64_t off, uint32_t v) {
    uint8_t b[4];
    std::memcpy(b, &v, 4);
    t.write(off, b);
  }
  // The driver initialisation sequence of virtio 1.2 §3.1.1 for queue 0.
  void init(uint64_t features, bool ready_queue = true) {
    wr(0x70, 1);
    wr(0x70, 1 | 2);
    wr(0x24, 0); wr(0x20, static_cast<uint32_t>(features));
    wr(0x24, 1); wr(0x20, static_cast<uint32_t>(features >> 32));
    wr(0x70, 1 | 2 | 8);
    wr(0x30, 0);
    wr(0x38, 128);
    wr(0x80, 0x10000); wr(0x84, 0);
    wr(0x90, 0x11000); wr(0x94, 0);
    wr(0xa0, 0x12000); wr(0xa4, 1);
    if (ready_queue) wr(0x44, 1);
    wr(0x70, 1 | 2 | 8 | 4);
  }
};

TEST(VirtioMmio, IdentityRegisters) {
  Rig r;
  EXPECT_EQ(r.rd(0x0), 0x74726976u);
  EXPECT_EQ(r.rd(0x4), 2u);
  EXPECT_EQ(r.rd(0x8), 2u);
  r.wr(0x14, 1);
  EXPECT_EQ(r.rd(0x10), 1u);  // VERSION_1 is bit 32
  r.wr(0x14, 0);
  EXPECT_EQ(r.rd(0x10), (1u << 9) | (1u << 29));
  r.wr(0x30, 0);
  EXPECT_EQ(r.rd(0x34), 256u);
  r.wr(0x30, 7);  // no such queue
  EXPECT_EQ(r.rd(0x34), 0u);
  uint8_t cap[2];
  r.t.read(0x100, cap);
  EXPECT_EQ(cap[1], 0x10);
}

TEST(VirtioMmio, DriverOkActivatesReadyQueues) {
  Rig r;
  r.init((1ull << 32) | (1ull << 9));
  ASSERT_EQ(r.be.activations, 1);
  EXPECT_EQ(r.be.acked_features, (1ull << 32) | (1ull << 9));
  ASSERT_EQ(r.be.queues.size(), 2u);
  ASSERT_TRUE(r.be.queues[0].has_value());
  EXPECT_EQ(r.be.queues[0]->size, 128);
  EXPECT_EQ(r.be.queues[0]->desc, 0x10000u);
  EXPECT_EQ(r.be.queues[0]->used, 0x100012000u);
  EXPECT_FALSE(r.be.queues[1].has_value());
  EXPECT_TRUE(r.t.active());
  EXPECT_EQ(r.rd(0x60), 1u);
  // Queue addresses are frozen while running.
  r.wr(0x30, 0);
  r.wr(0x80, 0xdead0000);
  r.wr(0x70, 0);
  EXPECT_EQ(r.be.resets, 1);
  EXPECT_EQ(r.rd(0x70), 0u);
  EXPECT_FALSE(r.t.active());
}

TEST(VirtioMmio, FeaturesNotOfferedAreRefused) {
  Rig r;
  r.init((1ull << 32) | (1ull << 5));  // bit 5 is not offered
  EXPECT_EQ(r.rd(0x70) & 8, 0u);       // FEATURES_OK did not stick
  EXPECT_EQ(r.be.activations, 0);
  EXPECT_NE(r.rd(0x70) & 64, 0u);      // NEEDS_RESET
}

TEST(VirtioMmio, DriverWithoutVersion1IsRefused) {
  Rig r;
  r.init(1ull << 9);
  EXPECT_EQ(r.be.activations, 0);
}

TEST(VirtioMmio, BackendFailureSetsNeedsReset) {
  Rig r;
  r.be.accept = false;
  r.init((1ull << 32));
  EXPECT_NE(r.rd(0x70) & 64, 0u);
  EXPECT_FALSE(r.t.active());
}

// A device that breaks while running (a card whose queue the driver broke) shows
// DEVICE_NEEDS_RESET on the driver's next Status read. The device is asked only on
// Status reads of a running device, not once more after it said yes, and a reset
// clears the bit.
TEST(VirtioMmio, RunningDeviceThatBreaksReportsNeedsReset) {
  Rig r;
  r.be.broken = true;
  r.wr(0x70, 1 | 2);
  EXPECT_EQ(r.rd(0x70), 3u);  // not running: not asked
  EXPECT_EQ(r.be.status_queries, 0);
  r.wr(0x70, 0);
  r.be.broken = false;
  r.init((1ull << 32));
  ASSERT_TRUE(r.t.active());
  EXPECT_EQ(r.rd(0x60), 1u);  // InterruptStatus, QueueNotify...: never a query
  r.wr(0x50, 0);
  EXPECT_EQ(r.be.status_queries, 0);
  EXPECT_EQ(r.rd(0x70) & 64, 0u);  // fine so far
  EXPECT_EQ(r.be.status_queries, 1);
  r.be.broken = true;
  EXPECT_NE(r.rd(0x70) & 64, 0u);
  EXPECT_EQ(r.rd(0x70), 1u | 2u | 4u | 8u | 64u);
  EXPECT_EQ(r.be.status_queries, 2);  // latched: the second read did not ask
  r.wr(0x70, 0);
  EXPECT_EQ(r.rd(0x70), 0u);
  r.be.broken = false;
  r.init((1ull << 32));
  EXPECT_EQ(r.rd(0x70) & 64, 0u);  // a fresh start
}

// Config writes reach the device with the driver's offset and width, and reads show
// what the device kept; a reset reaches the device whether or not it was running (the
// driver may have written config fields before DRIVER_OK).
TEST(VirtioMmio, ConfigWritesAndResetsReachTheDevice) {
  Rig r;
  r.wr(0x70, 1 | 2);
  const uint8_t one[1] = {0x5a};
  r.t.write(0x100 + 7, one);
  const uint8_t wide[4] = {1, 2, 3, 4};
  r.t.write(0x100 + 0, wide);  // refused by the device: nothing changes
  ASSERT_EQ(r.be.writes.size(), 2u);
  EXPECT_EQ(r.be.writes[0].first, 7u);
  EXPECT_EQ(r.be.writes[0].second, std::vector<uint8_t>{0x5a});
  EXPECT_EQ(r.be.writes[1].second.size(), 4u);
  uint8_t b[8];
  r.t.read(0x100, b);
  EXPECT_EQ(b[0], 0);  // the refused write left capacity alone
  EXPECT_EQ(b[1], 0x10);
  EXPECT_EQ(b[7], 0x5a);
  r.wr(0x70, 0);  // reset before DRIVER_OK
  EXPECT_EQ(r.be.resets, 1);
  r.init((1ull << 32));
  r.wr(0x70, 0);  // and after
  EXPECT_EQ(r.be.resets, 2);
}

TEST(VirtioMmio, OddAccessesAreHarmless) {
  Rig r;
  uint8_t one[1] = {0xff};
  r.t.write(0x70, one);  // byte write to a register: ignored
  EXPECT_EQ(r.rd(0x70), 0u);
  uint8_t two[2];
  r.t.read(0x2, two);
  EXPECT_EQ(two[0], 0);
  uint8_t big[8];
  r.t.read(0x100 + 4, big);  // beyond the fake's config: zeros
  EXPECT_EQ(big[7], 0);
  r.wr(0xff0, 5);            // unknown register
  r.wr(0x30, 0xffffffff);
  r.wr(0x38, 64);            // queue select out of range: ignored
  EXPECT_EQ(r.rd(0x34), 0u);
}

}  // namespace
}  // namespace azote::virtio_mmio
