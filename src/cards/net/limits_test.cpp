// Per-ENI rate limits: the limiter's arithmetic on a fake clock (bursts, waits, long-run
// rates, run-time changes, counters), and the worker holding frames back: transmit
// chains left in the guest's ring (a MockDriver's), receive frames left in the inbox,
// released as the fake clock moves.
#include "cards/net/limits.hpp"

#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "cards/net/switch.hpp"
#include "cards/net/test_frames.hpp"
#include "virtio/net.hpp"
#include "cards/net/worker.hpp"
#include "guest_memory/guest_memory.hpp"
#include "virtio/testing/driver.hpp"

namespace azote::card_net {
namespace {

using namespace std::chrono_literals;
using rate_limit::FakeClock;
using rate_limit::Nanos;

EniLimits limits(uint64_t mbps, uint64_t pps) {
  EniLimits l;
  l.bandwidth_mbps = mbps;
  l.pps = pps;
  return l;
}

TEST(EniRateLimits, BurstIsTenMillisecondsAtLeastOneFrame) {
  EXPECT_EQ(burst_for(1000, 1), 10u);           // 1000 pps: 10 packets
  EXPECT_EQ(burst_for(50, 1), 1u);              // 0.5 packet: one
  EXPECT_EQ(burst_for(50 * kBytesPerMbit, kMaxFrame), 62'500u);  // 50 Mbit/s: 62.5 kB
  EXPECT_EQ(burst_for(1 * kBytesPerMbit, kMaxFrame), kMaxFrame);  // 1 Mbit/s: 1250 B < one frame
  EXPECT_EQ(burst_for(1'999, 1), 19u);          // exact integer arithmetic
}

TEST(EniRateLimits, UnlimitedAdmitsEverythingAndCountsNothing) {
  FakeClock clock(1000s);
  EniRateLimits l(std::nullopt, clock);
  EXPECT_FALSE(l.tx().limited());
  for (int i = 0; i < 10'000; ++i) EXPECT_EQ(l.tx().admit(1514), Nanos(0));
  EXPECT_EQ(l.tx().delayed_frames(), 0u);
  EXPECT_EQ(l.describe()["limits"], nullptr);
}

TEST(EniRateLimits, PpsBurstThenExactWaits) {
  FakeClock clock(1000s);
  EniRateLimits l(limits(0, 1000), clock);
  ASSERT_TRUE(l.tx().limited());
  for (int i = 0; i < 10; ++i) ASSERT_EQ(l.tx().admit(64), Nanos(0)) << i;  // the burst: 10 ms at 1000 pps
  EXPECT_EQ(l.tx().admit(64), Nanos(1ms));  // one packet per millisecond
  EXPECT_EQ(l.tx().admit(64), Nanos(1ms));  // asked again: still one delayed frame
  EXPECT_EQ(l.tx().delayed_frames(), 1u);
  EXPECT_EQ(l.tx().delayed_bytes(), 64u);
  EXPECT_TRUE(l.tx().throttled());
  clock.advance(400us);
  EXPECT_EQ(l.tx().admit(64), Nanos(600us));
  EXPECT_EQ(l.tx().throttled_ns(), 400'000u);  // the running wait counts
  clock.advance(600us);
  EXPECT_EQ(l.tx().admit(64), Nanos(0));
  EXPECT_FALSE(l.tx().throttled());
  EXPECT_EQ(l.tx().throttled_ns(), 1'000'000u);
  // The directions are separate: receive still has its whole burst.
  for (int i = 0; i < 10; ++i) EXPECT_EQ(l.rx().admit(64), Nanos(0)) << i;
  EXPECT_NE(l.rx().admit(64), Nanos(0));
  EXPECT_EQ(l.tx().delayed_frames(), 1u);
  EXPECT_EQ(l.rx().delayed_frames(), 1u);
}

TEST(EniRateLimits, BandwidthBurstAndWaitForOneFrame) {
  FakeClock clock(1000s);
  EniRateLimits l(limits(8, 0), clock);  // 8 Mbit/s = 1 MB/s, burst 10 kB
  for (int i = 0; i < 10; ++i) ASSERT_EQ(l.tx().admit(1000), Nanos(0)) << i;
  EXPECT_EQ(l.tx().admit(1000), Nanos(1ms));  // 1000 B at 10^6 B/s
  EXPECT_EQ(l.tx().admit(100), Nanos(100us));  // a smaller head waits less
}

// Admitting as fast as the waits allow, for 2 s of fake time: the rate holds exactly
// (burst + rate * T), both limits at once.
TEST(EniRateLimits, LongRunRatesHold) {
  struct Case {
    uint64_t mbps, pps, frame;
  };
  for (const Case c : {Case{50, 0, 1514}, Case{0, 2000, 64}, Case{10, 100'000, 1514}, Case{100, 2000, 1514}}) {
    FakeClock clock(1000s);
    EniRateLimits l(limits(c.mbps, c.pps), clock);
    const Nanos end = clock.now() + 2s;
    uint64_t frames = 0;
    while (clock.now() < end) {
      const Nanos w = l.tx().admit(c.frame);
      if (w == Nanos(0)) ++frames;
      else clock.advance(w);
    }
    uint64_t max_frames = UINT64_MAX;
    if (c.pps != 0) max_frames = std::min(max_frames, burst_for(c.pps, 1) + c.pps * 2);
    if (c.mbps != 0)
      max_frames = std::min(max_frames, (burst_for(c.mbps * kBytesPerMbit, kMaxFrame) + c.mbps * kBytesPerMbit * 2) /
                                            c.frame + 1);
    EXPECT_LE(frames, max_frames) << c.mbps << " Mbit/s, " << c.pps << " pps";
    EXPECT_GE(static_cast<double>(frames), 0.99 * static_cast<double>(max_frames)) << c.mbps << " Mbit/s, " << c.pps;
  }
}

TEST(EniRateLimits, ChangesApplyAtOnceWithFullBuckets) {
  FakeClock clock(1000s);
  EniRateLimits l(limits(0, 100), clock);  // burst 1
  EXPECT_EQ(l.tx().admit(64), Nanos(0));
  EXPECT_EQ(l.tx().admit(64), Nanos(10ms));
  l.set(limits(0, 10'000));  // burst 100, full
  for (int i = 0; i < 100; ++i) ASSERT_EQ(l.tx().admit(64), Nanos(0)) << i;
  EXPECT_EQ(l.tx().admit(64), Nanos(100us));
  clock.advance(50us);
  l.set(std::nullopt);  // no limit: the running wait ends now
  EXPECT_FALSE(l.tx().throttled());
  EXPECT_EQ(l.tx().throttled_ns(), 50'000u);
  EXPECT_EQ(l.tx().admit(64), Nanos(0));
  EXPECT_FALSE(l.get());
  l.set(limits(0, 0));  // nothing given: none
  EXPECT_FALSE(l.get());
  EXPECT_FALSE(l.tx().limited());
  l.set(limits(25, 0));
  const auto d = l.describe();
  EXPECT_EQ(d["limits"], (nlohmann::json{{"bandwidth_mbps", 25}}));
  EXPECT_EQ(d["tx"]["delayed_frames"], 2u);
  EXPECT_EQ(d["rx"]["delayed_frames"], 0u);
  EXPECT_EQ(d["tx"]["throttled_now"], false);
}

TEST(EniRateLimits, ParseLimitsJson) {
  auto ok = parse_limits_json("x", nlohmann::json::parse(R"({"bandwidth_mbps": 50, "pps": 2000})"));
  ASSERT_TRUE(ok) << ok.error().message();
  ASSERT_TRUE(*ok);
  EXPECT_EQ((*ok)->bandwidth_mbps, 50u);
  EXPECT_EQ((*ok)->pps, 2000u);
  auto none = parse_limits_json("x", nullptr);
  ASSERT_TRUE(none);
  EXPECT_FALSE(*none);
  for (const char* bad : {R"({})", R"({"bandwidth_mbps": 0})", R"({"pps": 1.5})", R"({"pps": -1})",
                          R"({"bandwidth_mbps": 400001})", R"({"burst": 1})", R"(5)", R"("fast")"}) {
    auto r = parse_limits_json("set-eni-limits: limits", nlohmann::json::parse(bad));
    ASSERT_FALSE(r) << bad;
    EXPECT_NE(r.error().message().find("set-eni-limits: limits"), std::string::npos) << r.error().message();
  }
}

// ---- The worker: a MockDriver plays the guest of eni-a (transmit) or eni-b (receive).

net::Ipv4Address ip(const char* s) { return *net::Ipv4Address::parse(s); }

class WorkerLimits : public ::testing::Test {
 protected:
  static constexpr uint16_t kQ = 256;

  void SetUp() override {
    sw_ = std::make_unique<Switch>(clock_, SwitchConfig{});
    ASSERT_TRUE(sw_->add_vpc({"vpc-1", *net::Ipv4Prefix::parse("10.0.0.0/16")}));
    ASSERT_TRUE(sw_->add_subnet({"subnet-a", "vpc-1", *net::Ipv4Prefix::parse("10.0.1.0/24")}));
    GroupSpec g{"sg-udp", std::vector<vpc::Rule>{vpc::Rule::udp(5000, 5000, *vpc::Cidr::parse("10.0.0.0/16"))}, {}};
    ASSERT_TRUE(sw_->set_group(g));
    a_ = add("eni-a", "02:00:00:00:00:0a", "10.0.1.5");
    b_ = add("eni-b", "02:00:00:00:00:0b", "10.0.1.6");
    ASSERT_TRUE(a_ && b_);
    for (auto* p : {a_.get(), b_.get()}) p->limits().use_clock(clock_);
    auto m = GuestMemory::create({{GuestAddress(0), 8 << 20}});
    ASSERT_TRUE(m) << m.error().message();
    mem_ = std::make_unique<GuestMemory>(std::move(m).value());
    drv_ = std::make_unique<virtio::testing::MockDriver>(*mem_, kQ, GuestAddress(0x100000), 4 << 20);
    kick_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    ASSERT_TRUE(kick_);
  }
  void TearDown() override {
    if (worker_) worker_->stop();
  }

  std::shared_ptr<Port> add(const char* id, const char* m, const char* a) {
    EniSpec e;
    e.id = id;
    e.socket = std::string("/tmp/") + id;
    e.mac = *net::MacAddress::parse(m);
    e.ip = ip(a);
    e.subnet = "subnet-a";
    e.groups = {"sg-udp"};
    auto p = sw_->add_eni(e);
    return p ? *p : nullptr;
  }

  // Starts `port`'s worker with the MockDriver's ring as queue `index`.
  void start(Port& port, uint32_t index, uint16_t next_avail = 0) {
    vhost_user::VringInfo v;
    v.index = index;
    v.size = kQ;
    v.next_avail = next_avail;
    v.desc = drv_->desc_addr();
    v.avail = drv_->avail_addr();
    v.used = drv_->used_addr();
    v.memory = mem_.get();
    v.kick_fd = kick_.get();
    v.features = virtio::feature_bit(virtio::kFVersion1) | virtio::feature_bit(virtio::kFRingEventIdx);
    std::optional<vhost_user::VringInfo> rx, tx;
    (index == virtio::kRxQueue ? rx : tx) = v;
    auto w = Worker::start(port, *sw_, rx, tx, needs_reset_);
    ASSERT_TRUE(w) << w.error().message();
    worker_ = std::move(w).value();
  }

  void kick() {
    drv_->publish();
    const uint64_t one = 1;
    ASSERT_EQ(::write(kick_.get(), &one, sizeof one), 8);
  }

  // UDP A -> B:5000 with the virtio-net header, as one readable buffer.
  void add_tx_frame() {
    const std::vector<uint8_t> payload(100, 0x5a);
    const testing::Guest ga{a_->mac(), a_->ip(), a_->gateway_mac()};
    const auto frame = testing::udp(ga, a_->ip(), b_->ip(), 4000, 5000, payload);
    std::vector<uint8_t> bytes(sizeof(virtio::virtio_net_hdr) + frame.size(), 0);
    std::copy(frame.begin(), frame.end(), bytes.begin() + sizeof(virtio::virtio_net_hdr));
    frame_bytes_ = frame.size();
    const GuestAddress at = drv_->put(bytes);
    ASSERT_TRUE(drv_->add_chain({{at, static_cast<uint32_t>(bytes.size()), false}}));
  }

  // Polls `cond` for up to 5 s.
  template <class F>
  bool eventually(F cond) {
    for (int i = 0; i < 500; ++i) {
      if (cond()) return true;
      std::this_thread::sleep_for(10ms);
    }
    return cond();
  }

  FakeClock clock_{std::chrono::seconds(1000)};
  std::unique_ptr<Switch> sw_;
  std::shared_ptr<Port> a_, b_;
  std::unique_ptr<GuestMemory> mem_;
  std::unique_ptr<virtio::testing::MockDriver> drv_;
  UniqueFd kick_;
  std::atomic<bool> needs_reset_{false};
  std::unique_ptr<Worker> worker_;
  size_t frame_bytes_ = 0;
};

// Transmit: the burst goes, the rest stays in the guest's ring (not popped: stop()
// reports the avail index after the last frame sent) until the clock moves.
TEST_F(WorkerLimits, TransmitLeavesTheRestInTheRing) {
  b_->rx_ready = true;  // B's inbox takes frames (no worker reads it)
  a_->limits().set(limits(0, 1000));  // burst 10, then one per millisecond
  ASSERT_NO_FATAL_FAILURE(start(*a_, virtio::kTxQueue));
  for (int i = 0; i < 30; ++i) ASSERT_NO_FATAL_FAILURE(add_tx_frame());
  ASSERT_NO_FATAL_FAILURE(kick());
  size_t used = 0;
  ASSERT_TRUE(eventually([&] { return b_->inbox().size() == 10; })) << b_->inbox().size();
  std::this_thread::sleep_for(50ms);  // the worker's timer fires, the fake clock has not moved
  used += drv_->take_used().size();
  EXPECT_EQ(b_->inbox().size(), 10u);
  EXPECT_EQ(used, 10u);
  EXPECT_EQ(a_->limits().tx().delayed_frames(), 1u);
  EXPECT_EQ(a_->limits().tx().delayed_bytes(), frame_bytes_);
  EXPECT_TRUE(a_->limits().tx().throttled());

  clock_.advance(5ms);  // five more tokens: the timer's next wake sends five
  ASSERT_TRUE(eventually([&] { return b_->inbox().size() == 15; })) << b_->inbox().size();
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(b_->inbox().size(), 15u);
  EXPECT_GE(a_->limits().tx().throttled_ns(), 5'000'000u);

  // Stopped while throttled: the untouched chains are still the guest's.
  const auto next = worker_->stop();
  worker_.reset();
  EXPECT_EQ(next[virtio::kTxQueue], 15);
  used += drv_->take_used().size();
  EXPECT_EQ(used, 15u);

  // Without limits, a restarted worker (resuming at 15) sends the rest.
  a_->limits().set(std::nullopt);
  ASSERT_NO_FATAL_FAILURE(start(*a_, virtio::kTxQueue, next[virtio::kTxQueue]));
  ASSERT_TRUE(eventually([&] { return b_->inbox().size() == 30; })) << b_->inbox().size();
  EXPECT_EQ(a_->counters().tx_packets.load(), 30u);
}

// Receive: frames wait in the inbox, not in guest buffers; a limit change wakes the
// worker at once.
TEST_F(WorkerLimits, ReceiveHoldsFramesInTheInbox) {
  b_->limits().set(limits(0, 1000));
  for (int i = 0; i < 64; ++i) {
    const GuestAddress at = drv_->alloc(2048);
    ASSERT_TRUE(drv_->add_chain({{at, 2048, true}}));
  }
  ASSERT_NO_FATAL_FAILURE(start(*b_, virtio::kRxQueue));
  ASSERT_NO_FATAL_FAILURE(kick());
  const std::vector<uint8_t> frame(60, 0xab);
  for (int i = 0; i < 30; ++i) ASSERT_TRUE(b_->inbox().push(frame));
  b_->inbox().notify();
  size_t used = 0;
  ASSERT_TRUE(eventually([&] {
    used += drv_->take_used().size();
    return used == 10;
  })) << used;
  std::this_thread::sleep_for(50ms);
  used += drv_->take_used().size();
  EXPECT_EQ(used, 10u);
  EXPECT_EQ(b_->inbox().size(), 20u);
  EXPECT_EQ(b_->counters().rx_packets.load(), 10u);
  EXPECT_EQ(b_->limits().rx().delayed_frames(), 1u);
  EXPECT_EQ(b_->limits().rx().delayed_bytes(), 60u);
  EXPECT_EQ(b_->limits().tx().delayed_frames(), 0u);

  clock_.advance(3ms);
  ASSERT_TRUE(eventually([&] {
    used += drv_->take_used().size();
    return used == 13;
  })) << used;
  EXPECT_EQ(b_->inbox().size(), 17u);

  b_->limits().set(limits(0, 100'000));  // burst 1000: the rest at once
  b_->inbox().notify();
  ASSERT_TRUE(eventually([&] {
    used += drv_->take_used().size();
    return used == 30;
  })) << used;
  EXPECT_EQ(b_->inbox().size(), 0u);
  EXPECT_FALSE(b_->limits().rx().throttled());
  EXPECT_EQ(b_->counters().rx_packets.load(), 30u);
}

}  // namespace
}  // namespace azote::card_net
