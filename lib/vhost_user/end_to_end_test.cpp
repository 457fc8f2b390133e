// Frontend <-> Backend over a real Unix socket path, in one process: handshake, memory
// table, rings, kick/call, config, REPLY_ACK, inflight, reconnect after a card restart,
// and the frontend's defences against a dead or lying backend.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "guest_memory/guest_memory.hpp"
#include "vhost_user/backend.hpp"
#include "vhost_user/frontend.hpp"
#include "vhost_user/test_util.hpp"

namespace azote::vhost_user {
namespace {

using namespace testing;

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kHigh = 1ull << 32;

class EndToEnd : public ::testing::Test {
 protected:
  void SetUp() override {
    auto m = GuestMemory::create({{GuestAddress(0), 2 * kMiB}, {GuestAddress(kHigh), kMiB}});
    ASSERT_TRUE(m.ok()) << m.error().message();
    mem = std::make_unique<GuestMemory>(std::move(m).value());
    start_backend(dev);
  }
  void start_backend(FakeDevice& d) {
    auto b = Backend::listen(path, d, BackendOptions{std::chrono::milliseconds(300)});
    ASSERT_TRUE(b.ok()) << b.error().message();
    thread = std::make_unique<BackendThread>(std::move(b).value());
  }
  Frontend connect() {
    auto f = Frontend::connect(path, FrontendOptions{std::chrono::milliseconds(2000)});
    EXPECT_TRUE(f.ok()) << f.error().message();
    return std::move(f).value();
  }
  VringConfig ring(uint32_t index, GuestAddress base, uint16_t num = 256) {
    VringConfig c;
    c.index = index;
    c.num = num;
    c.desc_user_addr = *Frontend::user_addr(*mem, base, 16 * num);
    c.avail_user_addr = *Frontend::user_addr(*mem, base + 0x1000, 6 + 2 * num);
    c.used_user_addr = *Frontend::user_addr(*mem, base + 0x2000, 6 + 8 * num);
    c.kick_fd = kick[index].get();
    c.call_fd = call[index].get();
    return c;
  }
  // Handshake, features, memory, both queues set up and enabled.
  void full_setup(Frontend& f, bool inflight) {
    ASSERT_TRUE(f.set_features(dev.feats));
    ASSERT_TRUE(f.set_mem_table(*mem));
    if (inflight) {
      auto g = f.get_inflight_fd(2, 256);
      ASSERT_TRUE(g) << g.error().message();
      ASSERT_TRUE(f.set_inflight_fd());
    }
    auto s0 = f.setup_vring(ring(0, GuestAddress(0x10000)));
    ASSERT_TRUE(s0) << s0.error().message();
    ASSERT_TRUE(f.setup_vring(ring(1, GuestAddress(kHigh + 0x4000))));
    ASSERT_TRUE(f.set_vring_enable(0, true));
    ASSERT_TRUE(f.set_vring_enable(1, true));
  }

  TempDir dir;
  std::string path = dir.file("blk.sock");
  std::unique_ptr<GuestMemory> mem;
  FakeDevice dev;
  FakeDevice dev2;  // the restarted card (outlives `thread`)
  std::unique_ptr<BackendThread> thread;
  UniqueFd kick[2] = {make_eventfd(), make_eventfd()};
  UniqueFd call[2] = {make_eventfd(), make_eventfd()};
};

TEST_F(EndToEnd, HandshakeNegotiatesFeatures) {
  Frontend f = connect();
  EXPECT_EQ(f.backend_features(), dev.feats | bit(kFProtocolFeatures));
  EXPECT_EQ(f.protocol_features(), bit(kPfMq) | bit(kPfReplyAck) | bit(kPfConfig) | bit(kPfInflightShmfd) |
                                       bit(kPfResetDevice) | bit(kPfStatus));
  EXPECT_TRUE(f.can_reset_device());
  EXPECT_TRUE(f.has_status());
  EXPECT_EQ(f.queue_num(), 2u);
  EXPECT_FALSE(f.set_features(bit(50)));  // not offered: refused before sending
  ASSERT_TRUE(f.set_features(dev.feats & ~bit(1)));
  // REPLY_ACK: set_features returned only after the backend acknowledged it.
  std::lock_guard l(dev.mu);
  EXPECT_TRUE(dev.features_set);
  EXPECT_EQ(dev.acked, dev.feats & ~bit(1));
  EXPECT_EQ(thread->backend().accepted(), 1u);
}

TEST_F(EndToEnd, RingsKickAndCall) {
  Frontend f = connect();
  full_setup(f, false);
  ASSERT_TRUE(wait_for([&] { return dev.running(0) && dev.running(1); }));
  {
    std::lock_guard l(dev.mu);
    const auto& v0 = dev.started[0].info;
    const auto& v1 = dev.started[1].info;
    EXPECT_EQ(v0.desc.raw, 0x10000u);
    EXPECT_EQ(v0.avail.raw, 0x11000u);
    EXPECT_EQ(v0.used.raw, 0x12000u);
    EXPECT_EQ(v1.desc.raw, kHigh + 0x4000);
    EXPECT_EQ(v1.used.raw, kHigh + 0x6000);
    EXPECT_EQ(v0.size, 256);
    // The card sees the guest's bytes through its own mapping of the memfd.
    ASSERT_TRUE(mem->write(GuestAddress(kHigh + 0x4000), std::vector<uint8_t>{1, 2, 3}));
    const uint8_t* p = v1.memory->range(v1.desc, 3);
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(p[2], 3);
  }
  // Kick: the guest's notify write signals the ioeventfd; the card's fd is readable.
  const uint64_t one = 1;
  ASSERT_EQ(::write(kick[1].get(), &one, 8), 8);
  uint64_t got = 0;
  {
    std::lock_guard l(dev.mu);
    ASSERT_EQ(::read(dev.started[1].kick.get(), &got, 8), 8);
  }
  EXPECT_EQ(got, 1u);
  // Call: the card signals; the frontend's irqfd sees it.
  {
    std::lock_guard l(dev.mu);
    const uint64_t three = 3;
    ASSERT_EQ(::write(dev.started[0].call.get(), &three, 8), 8);
  }
  ASSERT_EQ(::read(call[0].get(), &got, 8), 8);
  EXPECT_EQ(got, 3u);

  {
    std::lock_guard l(dev.mu);
    dev.next_avail_on_stop[0] = 17;
  }
  auto b = f.get_vring_base(0);
  ASSERT_TRUE(b) << b.error().message();
  EXPECT_EQ(*b, 17);
  EXPECT_FALSE(dev.running(0));
  EXPECT_TRUE(dev.running(1));
}

TEST_F(EndToEnd, ConfigAndReplyAck) {
  Frontend f = connect();
  auto c = f.get_config(4, 8);
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_EQ(*c, (std::vector<uint8_t>{0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xab}));
  // Outside the device's 16 bytes: the backend answers with an empty config.
  auto e = f.get_config(12, 8);
  ASSERT_FALSE(e);
  EXPECT_EQ(e.error().code, Errc::kDevice);
  EXPECT_TRUE(f.connected());
  // Outside the protocol's 256 bytes: refused before sending.
  EXPECT_EQ(f.get_config(250, 16).error().code, Errc::kBadPayload);
  const std::vector<uint8_t> w{9, 9};
  ASSERT_TRUE(f.set_config(2, w));
  EXPECT_EQ((*f.get_config(0, 4))[2], 9);
  {
    std::lock_guard l(dev.mu);
    dev.refuse_set_config = true;
  }
  auto n = f.set_config(2, w);
  ASSERT_FALSE(n);
  EXPECT_EQ(n.error().code, Errc::kNack);
  EXPECT_TRUE(f.connected());
  // A protocol violation is NACKed and the backend disconnects: the next request fails.
  ASSERT_TRUE(f.set_features(dev.feats));
  ASSERT_TRUE(f.set_mem_table(*mem));
  VringConfig bad = ring(0, GuestAddress(0x10000), 128);
  bad.used_user_addr += 2;  // misaligned used ring
  auto s = f.setup_vring(bad);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, Errc::kNack) << s.error().message();
  EXPECT_FALSE(f.get_config(0, 4));
  EXPECT_TRUE(wait_for([&] { return thread->backend().disconnects() == 1; }));
}

TEST_F(EndToEnd, ReplyAckOnTheWire) {
  auto c = Connection::connect(path, std::chrono::milliseconds(1000));
  ASSERT_TRUE(c);
  auto dl = [] { return Clock::now() + std::chrono::milliseconds(1000); };
  auto u64 = pod_bytes(bit(kPfReplyAck));
  ASSERT_TRUE(c->send(Header{16, kVersion, 8}, u64, {}, dl()));  // SET_PROTOCOL_FEATURES
  auto feats = pod_bytes(dev.feats);
  ASSERT_TRUE(c->send(Header{2, kVersion | kFlagNeedReply, 8}, feats, {}, dl()));  // SET_FEATURES
  auto ack = c->recv(dl());
  ASSERT_TRUE(ack) << ack.error().message();
  EXPECT_EQ(ack->hdr.request, 2u);
  EXPECT_EQ(ack->hdr.flags, kVersion | kFlagReply);
  EXPECT_EQ(load<uint64_t>(ack->payload), 0u);
  // Invalid request with NEED_REPLY: a failure ack, then the connection closes.
  auto st = pod_bytes(VringState{0, 3});
  ASSERT_TRUE(c->send(Header{8, kVersion | kFlagNeedReply, 8}, st, {}, dl()));
  auto nack = c->recv(dl());
  ASSERT_TRUE(nack);
  EXPECT_NE(load<uint64_t>(nack->payload), 0u);
  auto eof = c->recv(dl());
  ASSERT_FALSE(eof);
  EXPECT_EQ(eof.error().code, Errc::kClosed);
}

TEST_F(EndToEnd, InflightFdRoundTrip) {
  Frontend f = connect();
  dev.take_on_start = {5};
  full_setup(f, true);
  ASSERT_TRUE(wait_for([&] { return dev.running(0); }));
  const auto& inf = *f.setup().inflight;
  EXPECT_EQ(inf.num_queues, 2);
  EXPECT_EQ(inf.queue_size, 256);
  EXPECT_EQ(inf.mmap_size, inflight_region_bytes(2, 256));
  ASSERT_TRUE(f.setup().inflight_fd.valid());
  // What the card recorded is in the fd the frontend holds (mapped here by the test only).
  void* p = ::mmap(nullptr, inf.mmap_size, PROT_READ, MAP_SHARED, f.setup().inflight_fd.get(), 0);
  ASSERT_NE(p, MAP_FAILED);
  const uint8_t* q0 = static_cast<const uint8_t*>(p);
  uint16_t version = 0;
  std::memcpy(&version, q0 + 8, 2);
  EXPECT_EQ(version, kInflightVersion);
  EXPECT_EQ(q0[16 + 16 * 5], 1);  // queue 0, desc 5: in flight
  const uint8_t* q1 = q0 + inflight_queue_bytes(256);
  EXPECT_EQ(q1[16 + 16 * 5], 1);  // queue 1 as well
  ::munmap(p, inf.mmap_size);
  std::lock_guard l(dev.mu);
  ASSERT_NE(dev.started[0].info.inflight, nullptr);
  EXPECT_EQ(dev.started[0].info.inflight->count_inflight(), 1u);
}

TEST_F(EndToEnd, ReconnectReplaysAfterCardRestart) {
  Frontend f = connect();
  dev.take_on_start = {3, 9};
  full_setup(f, true);
  ASSERT_TRUE(wait_for([&] { return dev.running(0) && dev.running(1); }));
  {
    // Queue 0 completes head 9: used ring idx 0 -> 1 (written as the card would).
    std::lock_guard l(dev.mu);
    InflightQueue* iq = dev.started[0].info.inflight;
    ASSERT_TRUE(iq->prepare_used(9));
    ASSERT_TRUE(mem->write_obj<uint16_t>(GuestAddress(0x12000 + 2), 1));
    iq->commit_used(1);
  }
  // The card dies (its process state is gone) and comes back on the same path.
  thread.reset();
  start_backend(dev2);
  auto r = f.reconnect(path);
  ASSERT_TRUE(r) << r.error().message();
  ASSERT_TRUE(wait_for([&] { return dev2.running(0) && dev2.running(1); }));
  std::lock_guard l(dev2.mu);
  EXPECT_EQ(dev2.acked, dev.feats);
  const auto& v0 = dev2.started[0].info;
  EXPECT_EQ(v0.desc.raw, 0x10000u);
  EXPECT_EQ(v0.used.raw, 0x12000u);
  EXPECT_EQ(v0.resubmit, (std::vector<uint16_t>{3}));  // taken, never completed
  EXPECT_EQ(v0.next_avail, 2);                         // used idx 1 + 1 in flight
  const auto& v1 = dev2.started[1].info;
  EXPECT_EQ(v1.resubmit, (std::vector<uint16_t>{3, 9}));
  EXPECT_EQ(v1.next_avail, 2);
  // The same kick ioeventfd reaches the new card.
  const uint64_t one = 1;
  ASSERT_EQ(::write(kick[0].get(), &one, 8), 8);
  uint64_t got = 0;
  EXPECT_EQ(::read(dev2.started[0].kick.get(), &got, 8), 8);
  EXPECT_EQ(got, 1u);
}

// The driver's accepted config writes survive a card restart (a new backend session
// starts from the device's defaults) and are forgotten at a device reset.
TEST_F(EndToEnd, ConfigWritesReplayedAfterReconnectUntilReset) {
  Frontend f = connect();
  full_setup(f, true);
  const std::vector<uint8_t> w{7, 8};
  ASSERT_TRUE(f.set_config(2, w));
  ASSERT_TRUE(f.set_config(3, std::vector<uint8_t>{9}));  // overlaps: both kept, in order
  {
    std::lock_guard l(dev.mu);
    dev.refuse_set_config = true;
  }
  EXPECT_EQ(f.set_config(6, std::vector<uint8_t>{1}).error().code, Errc::kNack);  // refused: not recorded
  ASSERT_EQ(f.setup().config_writes.size(), 2u);
  thread.reset();
  start_backend(dev2);
  auto r = f.reconnect(path);
  ASSERT_TRUE(r) << r.error().message();
  ASSERT_TRUE(wait_for([&] { return dev2.running(0) && dev2.running(1); }));
  {
    std::lock_guard l(dev2.mu);
    EXPECT_EQ(dev2.config[2], 7);
    EXPECT_EQ(dev2.config[3], 9);       // replayed in the order they were accepted
    EXPECT_EQ(dev2.config[6], 0xa6);    // the refused one was not
  }
  // The driver resets the device: the backend is told, rings and writes are forgotten.
  ASSERT_TRUE(f.get_vring_base(0));
  ASSERT_TRUE(f.get_vring_base(1));
  ASSERT_TRUE(f.reset_device());
  EXPECT_TRUE(f.setup().config_writes.empty());
  EXPECT_TRUE(f.setup().vrings.empty());
  {
    std::lock_guard l(dev2.mu);
    EXPECT_EQ(dev2.device_resets, 1);
  }
  // A backend that cannot be reset keeps its state: nothing is forgotten.
  thread.reset();
  FakeDevice dev3;
  dev3.pfeats = kBackendProtocolFeatures & ~bit(kPfResetDevice);
  start_backend(dev3);
  ASSERT_TRUE(f.reconnect(path));
  EXPECT_EQ(dev3.config[2], 0xa2);  // nothing replayed after the reset
  EXPECT_FALSE(f.can_reset_device());
  ASSERT_TRUE(f.set_config(2, w));
  EXPECT_EQ(f.reset_device().error().code, Errc::kUnsupported);
  EXPECT_EQ(f.setup().config_writes.size(), 1u);
  thread.reset();  // before dev3 goes
}

// Device status (STATUS): GET_STATUS shows what the driver set plus the device's
// DEVICE_NEEDS_RESET; the status is sent again to a restarted backend after the rings;
// SET_STATUS 0 is a device reset (rings and config writes forgotten, as with
// RESET_DEVICE); without STATUS nothing is sent.
TEST_F(EndToEnd, DeviceStatusReportedReplayedAndReset) {
  Frontend f = connect();
  auto status = [&f]() -> int {
    auto r = f.get_status();
    EXPECT_TRUE(r) << r.error().message();
    return r ? *r : -1;
  };
  ASSERT_TRUE(f.has_status());
  full_setup(f, true);
  auto st = f.get_status();
  ASSERT_TRUE(st) << st.error().message();
  EXPECT_EQ(*st, 0u);
  ASSERT_TRUE(f.set_status(1 | 2 | 8 | 4));
  EXPECT_EQ(status(), 15u);
  {
    std::lock_guard l(dev.mu);
    dev.broken = true;  // e.g. the driver broke a queue
  }
  EXPECT_EQ(status(), 15u | 0x40u);
  ASSERT_TRUE(f.set_config(2, std::vector<uint8_t>{7}));

  thread.reset();
  start_backend(dev2);
  auto r = f.reconnect(path);
  ASSERT_TRUE(r) << r.error().message();
  ASSERT_TRUE(wait_for([&] { return dev2.running(0) && dev2.running(1); }));
  EXPECT_EQ(status(), 15u);  // replayed; the new device is fine

  // The driver resets the device through its status.
  ASSERT_TRUE(f.get_vring_base(0));
  ASSERT_TRUE(f.get_vring_base(1));
  ASSERT_TRUE(f.set_status(0));
  EXPECT_TRUE(f.setup().vrings.empty());
  EXPECT_TRUE(f.setup().config_writes.empty());
  EXPECT_EQ(f.setup().status, 0u);
  EXPECT_EQ(status(), 0u);
  {
    std::lock_guard l(dev2.mu);
    EXPECT_EQ(dev2.device_resets, 1);
  }

  // A backend without STATUS: nothing is asked or sent, and the connection stays.
  thread.reset();
  FakeDevice dev3;
  dev3.pfeats = kBackendProtocolFeatures & ~bit(kPfStatus);
  start_backend(dev3);
  ASSERT_TRUE(f.reconnect(path));
  EXPECT_FALSE(f.has_status());
  EXPECT_EQ(f.get_status().error().code, Errc::kUnsupported);
  EXPECT_EQ(f.set_status(15).error().code, Errc::kUnsupported);
  EXPECT_TRUE(f.connected());
  EXPECT_EQ(thread->backend().rejected(), 0u);
  thread.reset();  // before dev3 goes
}

TEST_F(EndToEnd, ConfigWritesToReplayAreBounded) {
  {
    std::lock_guard l(dev.mu);
    dev.config.assign(64, 0);
  }
  Frontend f = connect();
  for (uint32_t i = 0; i < kMaxConfigWrites; ++i) ASSERT_TRUE(f.set_config(i, std::vector<uint8_t>{1})) << i;
  ASSERT_TRUE(f.set_config(5, std::vector<uint8_t>{2}));  // the same field again: replaces
  auto r = f.set_config(kMaxConfigWrites, std::vector<uint8_t>{1});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kBadState);  // refused before it was sent
  EXPECT_TRUE(f.connected());
  {
    std::lock_guard l(dev.mu);
    EXPECT_EQ(dev.config[kMaxConfigWrites], 0);
    EXPECT_EQ(dev.config[5], 2);
  }
  // A write covering all of them supersedes them.
  ASSERT_TRUE(f.set_config(0, std::vector<uint8_t>(64, 3)));
  EXPECT_EQ(f.setup().config_writes.size(), 1u);
  // Live-migration writes (flags 1) are not the driver's: never recorded.
  ASSERT_TRUE(f.set_config(0, std::vector<uint8_t>{4}, 1));
  EXPECT_EQ(f.setup().config_writes.size(), 1u);
}

TEST_F(EndToEnd, ReconnectWithoutInflightResumesFromUsedIdx) {
  Frontend f = connect();
  full_setup(f, false);
  ASSERT_TRUE(mem->write_obj<uint16_t>(GuestAddress(kHigh + 0x6000 + 2), 5));
  ASSERT_TRUE(wait_for([&] { return dev.running(1); }));
  thread.reset();
  start_backend(dev2);
  ASSERT_TRUE(f.reconnect(path));
  ASSERT_TRUE(wait_for([&] { return dev2.running(0) && dev2.running(1); }));
  std::lock_guard l(dev2.mu);
  EXPECT_EQ(dev2.started[1].info.next_avail, 5);
  EXPECT_EQ(dev2.started[0].info.next_avail, 0);
  EXPECT_EQ(dev2.started[1].info.inflight, nullptr);
}

TEST_F(EndToEnd, ReconnectRefusesABackendThatLostFeatures) {
  Frontend f = connect();
  full_setup(f, true);
  thread.reset();
  dev2.pfeats = bit(kPfMq) | bit(kPfReplyAck);  // no INFLIGHT_SHMFD any more
  start_backend(dev2);
  auto r = f.reconnect(path);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kBadState);
  EXPECT_FALSE(f.connected());
}

TEST_F(EndToEnd, ListenRefusesLiveSocketsAndNonSockets) {
  FakeDevice other;
  auto live = Backend::listen(path, other);
  ASSERT_FALSE(live);  // the fixture's backend is listening there
  const std::string file = dir.file("regular");
  ASSERT_EQ(::close(::open(file.c_str(), O_CREAT | O_WRONLY, 0600)), 0);
  EXPECT_FALSE(Backend::listen(file, other));
  struct stat st {};
  EXPECT_EQ(::stat(file.c_str(), &st), 0);  // untouched
  // A stale socket (bound, then abandoned) is replaced.
  const std::string stale = dir.file("stale.sock");
  {
    UniqueFd s(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::memcpy(a.sun_path, stale.data(), stale.size());
    ASSERT_EQ(::bind(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  }
  auto b = Backend::listen(stale, other);
  ASSERT_TRUE(b) << b.error().message();
  // A device with impossible limits is refused.
  FakeDevice odd;
  odd.qsize = 100;
  EXPECT_FALSE(Backend::listen(dir.file("odd.sock"), odd));
}

TEST_F(EndToEnd, SecondFrontendWaitsForTheFirst) {
  Frontend f1 = connect();
  auto c2 = Connection::connect(path, std::chrono::milliseconds(500));
  ASSERT_TRUE(c2);  // sits in the backlog
  auto dl = Clock::now() + std::chrono::milliseconds(200);
  ASSERT_TRUE(c2->send(Header{1, kVersion, 0}, {}, {}, dl));
  auto none = c2->recv(dl);
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code, Errc::kTimeout);
  ASSERT_TRUE(f1.get_config(0, 1));
  { Frontend gone = std::move(f1); }  // first frontend closes
  auto reply = c2->recv(Clock::now() + std::chrono::milliseconds(2000));
  ASSERT_TRUE(reply) << reply.error().message();
  EXPECT_EQ(reply->hdr.request, 1u);
}

// ---- A dead or lying backend -------------------------------------------------------

class FakeBackendPeer : public ::testing::Test {
 protected:
  void SetUp() override {
    auto p = socket_pair();
    ASSERT_TRUE(p);
    ours = std::move(p->first);
    theirs = std::move(p->second);
  }
  UniqueFd ours, theirs;
};

TEST_F(FakeBackendPeer, DeadBackendTimesOut) {
  const auto t0 = Clock::now();
  auto f = Frontend::adopt(std::move(ours), FrontendOptions{std::chrono::milliseconds(200)});
  ASSERT_FALSE(f);
  EXPECT_EQ(f.error().code, Errc::kTimeout) << f.error().message();
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(2));
}

// A backend that offers STATUS (handshake replies queued up front), then answers
// GET_STATUS with something that is no status, or not at all: the frontend refuses the
// reply or gives up within its timeout, and drops the connection either way.
TEST_F(FakeBackendPeer, BadOrMissingStatusReplies) {
  auto handshake = [](int peer) {
    return send_raw(peer, raw_message(1, kVersion | kFlagReply, pod_bytes(bit(kFProtocolFeatures) | bit(kFVersion1)))) &&
           send_raw(peer, raw_message(15, kVersion | kFlagReply, pod_bytes(bit(kPfStatus))));
  };
  ASSERT_TRUE(handshake(theirs.get()));
  auto f = Frontend::adopt(std::move(ours), FrontendOptions{std::chrono::milliseconds(300)});
  ASSERT_TRUE(f) << f.error().message();
  ASSERT_TRUE(f->has_status());
  ASSERT_TRUE(send_raw(theirs.get(), raw_message(40, kVersion | kFlagReply, pod_bytes(uint64_t{0x14f}))));
  auto st = f->get_status();
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, Errc::kBadReply) << st.error().message();
  EXPECT_FALSE(f->connected());
  for (const auto& bad : {raw_message(40, kVersion | kFlagReply, pod_bytes(uint32_t{15})),  // short
                          raw_message(39, kVersion | kFlagReply, pod_bytes(uint64_t{15}))}) {  // another request
    auto p = socket_pair();
    ASSERT_TRUE(p);
    ASSERT_TRUE(handshake(p->second.get()));
    auto g = Frontend::adopt(std::move(p->first), FrontendOptions{std::chrono::milliseconds(300)});
    ASSERT_TRUE(g);
    ASSERT_TRUE(send_raw(p->second.get(), bad));
    auto s2 = g->get_status();
    ASSERT_FALSE(s2);
    EXPECT_EQ(s2.error().code, Errc::kBadReply) << s2.error().message();
    EXPECT_FALSE(g->connected());
  }
  // Silence: bounded by the timeout.
  auto p = socket_pair();
  ASSERT_TRUE(p);
  ASSERT_TRUE(handshake(p->second.get()));
  auto g = Frontend::adopt(std::move(p->first), FrontendOptions{std::chrono::milliseconds(300)});
  ASSERT_TRUE(g);
  const auto t0 = Clock::now();
  auto s3 = g->get_status();
  ASSERT_FALSE(s3);
  EXPECT_EQ(s3.error().code, Errc::kTimeout);
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(2));
  EXPECT_FALSE(g->connected());
}

TEST_F(FakeBackendPeer, MalformedRepliesAreRefused) {
  struct Case {
    const char* name;
    std::vector<uint8_t> bytes;
    bool with_fd;
  };
  const auto feat = pod_bytes(uint64_t{1});
  std::vector<Case> cases = {
      {"short payload", raw_message(1, kVersion | kFlagReply, std::vector<uint8_t>(4)), false},
      {"no reply flag", raw_message(1, kVersion, feat), false},
      {"wrong request", raw_message(15, kVersion | kFlagReply, feat), false},
      {"stray fd", raw_message(1, kVersion | kFlagReply, feat), true},
      {"oversized", raw_message(1, kVersion | kFlagReply, {}, 100000), false},
  };
  for (auto& c : cases) {
    const size_t before = count_open_fds();
    {
      auto p = socket_pair();
      ASSERT_TRUE(p);
      UniqueFd peer = std::move(p->second);
      UniqueFd efd = make_eventfd();
      const int fd = efd.get();
      ASSERT_TRUE(send_raw(peer.get(), c.bytes, c.with_fd ? std::span<const int>(&fd, 1) : std::span<const int>()));
      auto f = Frontend::adopt(std::move(p->first), FrontendOptions{std::chrono::milliseconds(500)});
      ASSERT_FALSE(f) << c.name;
      EXPECT_NE(f.error().code, Errc::kTimeout) << c.name;
    }
    EXPECT_EQ(count_open_fds(), before) << c.name;
  }
}

}  // namespace
}  // namespace azote::vhost_user
