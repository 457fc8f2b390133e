// The backend session driven directly with (header, payload, fds): protocol state,
// semantic checks, fd ownership. No sockets.
#include "vhost_user/session.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/timerfd.h>

#include <cstdio>
#include <string>

#include "vhost_user/test_util.hpp"

namespace azote::vhost_user {
namespace {

using testing::count_open_fds;
using testing::FakeDevice;
using testing::make_eventfd;
using testing::mem_table_payload;
using testing::pod_bytes;
using testing::sealed_memfd;

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kUser0 = 0x7f0000000000;  // frontend user address of region 0
constexpr uint64_t kUser1 = 0x7f0000100000;  // region 1
constexpr uint64_t kGpa1 = 1ull << 32;

class SessionTest : public ::testing::Test {
 protected:
  Result<std::optional<Session::Reply>, VuError> send(Request r, std::vector<uint8_t> payload,
                                                     std::vector<UniqueFd> fds = {}, uint32_t flags = kVersion) {
    Header h{static_cast<uint32_t>(r), flags, static_cast<uint32_t>(payload.size())};
    return session.handle(h, payload, std::move(fds));
  }
  Errc code(const Result<std::optional<Session::Reply>, VuError>& r) { return r ? Errc{} : r.error().code; }
  std::vector<UniqueFd> fds(UniqueFd a) {
    std::vector<UniqueFd> v;
    v.push_back(std::move(a));
    return v;
  }
  UniqueFd dup_mem() { return UniqueFd(::fcntl(memfd.get(), F_DUPFD_CLOEXEC, 0)); }

  void negotiate(uint64_t pf = kBackendProtocolFeatures) {
    ASSERT_TRUE(send(Request::kGetFeatures, {}));
    ASSERT_TRUE(send(Request::kSetProtocolFeatures, pod_bytes(pf)));
    ASSERT_TRUE(send(Request::kSetFeatures, pod_bytes(dev.feats | bit(kFProtocolFeatures))));
  }
  void mem_table() {
    std::vector<UniqueFd> f;
    f.push_back(dup_mem());
    f.push_back(dup_mem());
    auto r = send(Request::kSetMemTable,
                  mem_table_payload({{0, kMiB, kUser0, 0}, {kGpa1, kMiB, kUser1, kMiB}}), std::move(f));
    ASSERT_TRUE(r) << r.error().message();
  }
  VringAddr ring_addr(uint32_t index, uint64_t user_base) {
    VringAddr a;
    a.index = index;
    a.desc_user_addr = user_base;
    a.avail_user_addr = user_base + 0x1000;
    a.used_user_addr = user_base + 0x2000;
    return a;
  }
  // Queue `index` with rings at user_base, started and enabled.
  void run_queue(uint32_t index, uint64_t user_base, uint16_t num = 256, uint16_t base = 0) {
    ASSERT_TRUE(send(Request::kSetVringNum, pod_bytes(VringState{index, num})));
    ASSERT_TRUE(send(Request::kSetVringBase, pod_bytes(VringState{index, base})));
    auto a = send(Request::kSetVringAddr, pod_bytes(ring_addr(index, user_base)));
    ASSERT_TRUE(a) << a.error().message();
    ASSERT_TRUE(send(Request::kSetVringCall, pod_bytes(uint64_t{index}), fds(make_eventfd())));
    ASSERT_TRUE(send(Request::kSetVringKick, pod_bytes(uint64_t{index}), fds(make_eventfd())));
    ASSERT_TRUE(send(Request::kSetVringEnable, pod_bytes(VringState{index, 1})));
  }

  FakeDevice dev;
  Session session{dev};
  UniqueFd memfd = sealed_memfd(2 * kMiB);
};

TEST_F(SessionTest, RunsQueueWithTranslatedRings) {
  negotiate();
  EXPECT_EQ(dev.acked, dev.feats);  // bit 30 removed
  mem_table();
  ASSERT_TRUE(send(Request::kSetVringNum, pod_bytes(VringState{1, 128})));
  ASSERT_TRUE(send(Request::kSetVringBase, pod_bytes(VringState{1, 7})));
  ASSERT_TRUE(send(Request::kSetVringAddr, pod_bytes(ring_addr(1, kUser1 + 0x4000))));
  ASSERT_TRUE(send(Request::kSetVringKick, pod_bytes(uint64_t{1}), fds(make_eventfd())));
  // PROTOCOL_FEATURES acked: started but disabled until SET_VRING_ENABLE.
  EXPECT_FALSE(dev.running(1));
  ASSERT_TRUE(send(Request::kSetVringEnable, pod_bytes(VringState{1, 1})));
  ASSERT_TRUE(dev.running(1));
  const VringInfo& v = dev.started[1].info;
  EXPECT_EQ(v.size, 128);
  EXPECT_EQ(v.next_avail, 7);
  EXPECT_EQ(v.desc.raw, kGpa1 + 0x4000);
  EXPECT_EQ(v.avail.raw, kGpa1 + 0x5000);
  EXPECT_EQ(v.used.raw, kGpa1 + 0x6000);
  EXPECT_GE(v.kick_fd, 0);
  EXPECT_EQ(v.call_fd, -1);
  EXPECT_EQ(v.inflight, nullptr);
  // The backend's view of guest memory is the frontend's memfd at each region's offset.
  uint8_t* m = static_cast<uint8_t*>(::mmap(nullptr, 2 * kMiB, PROT_READ | PROT_WRITE, MAP_SHARED, memfd.get(), 0));
  ASSERT_NE(m, MAP_FAILED);
  m[kMiB + 0x4000] = 0x5a;
  m[0x123] = 0x77;
  EXPECT_EQ(*v.memory->range(v.desc, 16), 0x5a);
  EXPECT_EQ(*v.memory->range(GuestAddress(0x123), 1), 0x77);
  EXPECT_EQ(v.memory->range(GuestAddress(kMiB - 1), 2), nullptr);  // crosses the end of region 0
  EXPECT_EQ(v.memory->range(GuestAddress(kGpa1 + kMiB), 1), nullptr);
  ::munmap(m, 2 * kMiB);

  dev.next_avail_on_stop[1] = 42;
  auto r = send(Request::kGetVringBase, pod_bytes(VringState{1, 0}));
  ASSERT_TRUE(r && *r);
  EXPECT_EQ(load<VringState>((*r)->payload).num, 42u);
  EXPECT_EQ((*r)->hdr.flags, kVersion | kFlagReply);
  EXPECT_FALSE(dev.running(1));
  // Stopped: it needs a new kick to start again, and may be reconfigured meanwhile.
  ASSERT_TRUE(send(Request::kSetVringNum, pod_bytes(VringState{1, 64})));
  ASSERT_TRUE(send(Request::kSetVringKick, pod_bytes(uint64_t{1}), fds(make_eventfd())));
  ASSERT_TRUE(dev.running(1));
  EXPECT_EQ(dev.started[1].info.next_avail, 42);
}

TEST_F(SessionTest, WithoutProtocolFeaturesRingsStartEnabled) {
  ASSERT_TRUE(send(Request::kSetFeatures, pod_bytes(dev.feats)));
  mem_table();
  ASSERT_TRUE(send(Request::kSetVringNum, pod_bytes(VringState{0, 256})));
  ASSERT_TRUE(send(Request::kSetVringAddr, pod_bytes(ring_addr(0, kUser0))));
  ASSERT_TRUE(send(Request::kSetVringKick, pod_bytes(uint64_t{kVringNoFd}), {}));
  ASSERT_TRUE(dev.running(0));
  EXPECT_EQ(dev.started[0].info.kick_fd, -1);  // polling
}

TEST_F(SessionTest, ChangesUnderARunningQueueRestartIt) {
  negotiate();
  mem_table();
  run_queue(0, kUser0);
  run_queue(1, kUser1);
  ASSERT_EQ(dev.starts, 2);
  // A new call fd restarts only that queue.
  ASSERT_TRUE(send(Request::kSetVringCall, pod_bytes(uint64_t{1}), fds(make_eventfd())));
  EXPECT_EQ(dev.stopped, (std::vector<uint32_t>{1}));
  EXPECT_EQ(dev.starts, 3);
  // A new memory table restarts every running queue, re-validating the rings.
  mem_table();
  EXPECT_EQ(dev.stopped.size(), 3u);
  EXPECT_EQ(dev.starts, 5);
  EXPECT_TRUE(dev.running(0) && dev.running(1));
  // A table that no longer holds queue 1's rings is refused when it restarts.
  std::vector<UniqueFd> f;
  f.push_back(dup_mem());
  EXPECT_EQ(code(send(Request::kSetMemTable, mem_table_payload({{0, kMiB, kUser0, 0}}), std::move(f))),
            Errc::kBadVring);
  // Disabling stops; SET_FEATURES under a started queue is out of order.
  ASSERT_TRUE(send(Request::kSetVringEnable, pod_bytes(VringState{0, 0})));
  EXPECT_FALSE(dev.running(0));
  EXPECT_EQ(code(send(Request::kSetFeatures, pod_bytes(dev.feats))), Errc::kBadState);
  session.reset();
  EXPECT_FALSE(dev.running(0) || dev.running(1));
  EXPECT_EQ(dev.disconnects, 1);
  EXPECT_TRUE(session.memory().empty());
}

TEST_F(SessionTest, RejectedMessagesCloseTheirFds) {
  negotiate();
  const size_t before = count_open_fds();
  {
    std::vector<UniqueFd> f;
    f.push_back(sealed_memfd(kMiB));
    // Region larger than its fd.
    EXPECT_EQ(code(send(Request::kSetMemTable, mem_table_payload({{0, 2 * kMiB, kUser0, 0}}), std::move(f))),
              Errc::kBadRegion);
  }
  {
    std::vector<UniqueFd> f;
    f.push_back(make_eventfd());
    f.push_back(make_eventfd());
    EXPECT_EQ(code(send(Request::kSetVringKick, pod_bytes(uint64_t{0}), std::move(f))), Errc::kBadFds);
  }
  EXPECT_EQ(code(send(Request::kGetFeatures, {}, fds(make_eventfd()))), Errc::kBadFds);
  EXPECT_EQ(count_open_fds(), before);
}

TEST_F(SessionTest, RegionFdChecks) {
  auto table = [&](UniqueFd fd, uint64_t size, uint64_t off) {
    return code(send(Request::kSetMemTable, mem_table_payload({{0, size, kUser0, off}}), fds(std::move(fd))));
  };
  EXPECT_EQ(table(sealed_memfd(kMiB), 2 * kMiB, 0), Errc::kBadRegion);        // larger than the fd
  EXPECT_EQ(table(sealed_memfd(kMiB), kMiB, 4096), Errc::kBadRegion);         // offset + size past the end
  EXPECT_EQ(table(sealed_memfd(kMiB, false), kMiB, 0), Errc::kBadRegion);     // not sealed
  EXPECT_EQ(table(make_eventfd(), 4096, 0), Errc::kBadRegion);                // not a file
  EXPECT_EQ(table(sealed_memfd(kMiB), kMiB - 4096, 4096), Errc{});            // inside
  EXPECT_EQ(table(sealed_memfd(kMiB), 100, 4000), Errc{});                    // unaligned offset is fine
  EXPECT_NE(session.memory().range(GuestAddress(0), 100), nullptr);
}

TEST_F(SessionTest, VringChecks) {
  negotiate();
  // Ring address before a memory table / before a size.
  ASSERT_TRUE(send(Request::kSetVringNum, pod_bytes(VringState{0, 256})));
  EXPECT_EQ(code(send(Request::kSetVringAddr, pod_bytes(ring_addr(0, kUser0)))), Errc::kBadState);
  mem_table();
  EXPECT_EQ(code(send(Request::kSetVringAddr, pod_bytes(ring_addr(1, kUser0)))), Errc::kBadState);
  for (uint32_t bad : {0u, 100u, 512u, 65536u})
    EXPECT_EQ(code(send(Request::kSetVringNum, pod_bytes(VringState{0, bad}))), Errc::kBadVring) << bad;
  EXPECT_EQ(code(send(Request::kSetVringNum, pod_bytes(VringState{2, 8}))), Errc::kBadVring);  // no queue 2
  EXPECT_EQ(code(send(Request::kSetVringKick, pod_bytes(uint64_t{7}), fds(make_eventfd()))), Errc::kBadVring);
  EXPECT_EQ(code(send(Request::kSetVringBase, pod_bytes(VringState{0, 70000}))), Errc::kBadVring);
  EXPECT_EQ(code(send(Request::kSetVringEnable, pod_bytes(VringState{0, 2}))), Errc::kBadVring);
  auto addr = [&](VringAddr a) { return code(send(Request::kSetVringAddr, pod_bytes(a))); };
  VringAddr a = ring_addr(0, 0x1000);  // outside every region
  EXPECT_EQ(addr(a), Errc::kBadVring);
  a = ring_addr(0, kUser0 + kMiB - 0x800);  // descriptor table crosses the end of region 0
  a.avail_user_addr = kUser0;
  a.used_user_addr = kUser0 + 0x1000;
  EXPECT_EQ(addr(a), Errc::kBadVring);
  a = ring_addr(0, kUser0 + 8);  // misaligned descriptor table
  EXPECT_EQ(addr(a), Errc::kBadVring);
  a = ring_addr(0, kUser0);
  a.used_user_addr = kUser0 + 0x2002;  // misaligned used ring
  EXPECT_EQ(addr(a), Errc::kBadVring);
  a = ring_addr(0, kUser0);
  a.flags = 1;  // dirty logging
  EXPECT_EQ(addr(a), Errc::kBadVring);
  EXPECT_EQ(addr(ring_addr(0, kUser0)), Errc{});
  // Reconfiguring a started ring is out of order.
  ASSERT_TRUE(send(Request::kSetVringKick, pod_bytes(uint64_t{0}), fds(make_eventfd())));
  EXPECT_EQ(code(send(Request::kSetVringNum, pod_bytes(VringState{0, 64}))), Errc::kBadState);
}

// Kick/call/err fds are checked for what they are before any ring gets them: plain
// eventfds only (fstat + /proc/self/fdinfo), put in non-blocking mode for the workers.
TEST_F(SessionTest, RingFdsMustBePlainEventfds) {
  negotiate();
  mem_table();
  ASSERT_TRUE(send(Request::kSetVringNum, pod_bytes(VringState{0, 256})));
  ASSERT_TRUE(send(Request::kSetVringAddr, pod_bytes(ring_addr(0, kUser0))));
  auto refused = [&](Request r, UniqueFd fd, const std::string& says) {
    auto res = send(r, pod_bytes(uint64_t{0}), fds(std::move(fd)));
    ASSERT_FALSE(res) << says;
    EXPECT_EQ(res.error().code, Errc::kBadVring);
    EXPECT_NE(res.error().message().find(says), std::string::npos) << res.error().message();
  };
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  ::close(p[1]);
  refused(Request::kSetVringKick, UniqueFd(p[0]), "a pipe");
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  ::close(sv[1]);
  refused(Request::kSetVringCall, UniqueFd(sv[0]), "a socket");
  refused(Request::kSetVringErr, sealed_memfd(4096), "a regular file");
  UniqueFd timer(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC));
  refused(Request::kSetVringKick, std::move(timer), "not an eventfd");
  UniqueFd sem(::eventfd(0, EFD_CLOEXEC | EFD_SEMAPHORE));
  const uint64_t huge = uint64_t{1} << 63;
  ASSERT_EQ(::write(sem.get(), &huge, sizeof huge), 8);
  char info[64];
  std::snprintf(info, sizeof info, "/proc/self/fdinfo/%d", sem.get());
  std::string text(4096, '\0');
  {
    UniqueFd f(::open(info, O_RDONLY | O_CLOEXEC));
    const ssize_t n = f ? ::read(f.get(), text.data(), text.size()) : -1;
    text.resize(n > 0 ? static_cast<size_t>(n) : 0);
  }
  if (text.find("eventfd-semaphore:") != std::string::npos)
    refused(Request::kSetVringKick, std::move(sem), "semaphore eventfd");
  EXPECT_FALSE(dev.running(0));
  // A plain eventfd, even a blocking one, is taken and made non-blocking (the file
  // description is shared with the frontend, which only hands it to KVM).
  UniqueFd kick(::eventfd(0, EFD_CLOEXEC));
  UniqueFd mine(::fcntl(kick.get(), F_DUPFD_CLOEXEC, 0));
  ASSERT_TRUE(send(Request::kSetVringCall, pod_bytes(uint64_t{0}), fds(make_eventfd())));
  ASSERT_TRUE(send(Request::kSetVringKick, pod_bytes(uint64_t{0}), fds(std::move(kick))));
  ASSERT_TRUE(send(Request::kSetVringEnable, pod_bytes(VringState{0, 1})));
  EXPECT_TRUE(dev.running(0));
  EXPECT_NE(::fcntl(mine.get(), F_GETFL) & O_NONBLOCK, 0);
}

TEST_F(SessionTest, FeatureGating) {
  EXPECT_EQ(code(send(Request::kSetFeatures, pod_bytes(bit(40)))), Errc::kBadPayload);  // not offered
  EXPECT_EQ(code(send(Request::kSetFeatures, pod_bytes(bit(kFLogAll)))), Errc::kBadPayload);
  EXPECT_EQ(code(send(Request::kSetProtocolFeatures, pod_bytes(bit(kPfLogShmfd)))), Errc::kBadPayload);
  std::vector<uint8_t> cfg = pod_bytes(ConfigHeader{0, 4, 0});
  cfg.resize(cfg.size() + 4);  // a GET_CONFIG request carries the window's size in bytes
  EXPECT_EQ(code(send(Request::kGetConfig, cfg)), Errc::kUnsupported);  // CONFIG not negotiated
  EXPECT_EQ(code(send(Request::kGetMaxMemSlots, {})), Errc::kUnsupported);
  EXPECT_EQ(code(send(Request::kGetInflightFd, pod_bytes(InflightDesc{0, 0, 1, 8, 0}))), Errc::kUnsupported);
  EXPECT_EQ(code(send(Request::kSetLogBase, pod_bytes(LogDesc{}), fds(sealed_memfd(4096)))), Errc::kUnsupported);
  EXPECT_EQ(code(send(Request::kSetBackendReqFd, {}, fds(make_eventfd()))), Errc::kUnsupported);
  EXPECT_EQ(code(send(Request::kResetDevice, {})), Errc::kUnsupported);
  auto gf = send(Request::kGetFeatures, {});
  ASSERT_TRUE(gf && *gf);
  const uint64_t offered = load<uint64_t>((*gf)->payload);
  EXPECT_EQ(offered, dev.feats | bit(kFProtocolFeatures));
  auto gq = send(Request::kGetQueueNum, {});
  ASSERT_TRUE(gq && *gq);
  EXPECT_EQ(load<uint64_t>((*gq)->payload), 2u);
}

TEST_F(SessionTest, ReplyAckAndConfig) {
  // NEED_REPLY before REPLY_ACK is negotiated: no reply.
  auto r = send(Request::kSetOwner, {}, {}, kVersion | kFlagNeedReply);
  ASSERT_TRUE(r);
  EXPECT_FALSE(*r);
  negotiate();
  r = send(Request::kSetOwner, {}, {}, kVersion | kFlagNeedReply);
  ASSERT_TRUE(r && *r);
  EXPECT_EQ((*r)->hdr.request, static_cast<uint32_t>(Request::kSetOwner));
  EXPECT_EQ(load<uint64_t>((*r)->payload), 0u);
  // A request with its own reply is not acked twice.
  r = send(Request::kGetFeatures, {}, {}, kVersion | kFlagNeedReply);
  ASSERT_TRUE(r && *r);
  EXPECT_EQ((*r)->payload.size(), 8u);
  EXPECT_NE(load<uint64_t>((*r)->payload), 0u);

  std::vector<uint8_t> get = pod_bytes(ConfigHeader{4, 8, 0});
  get.resize(get.size() + 8);
  r = send(Request::kGetConfig, get);
  ASSERT_TRUE(r && *r);
  ASSERT_EQ((*r)->payload.size(), 20u);
  EXPECT_EQ((*r)->payload[12], 0xa4);
  EXPECT_EQ((*r)->payload[19], 0xab);
  // Past the device's 16 bytes: the device refuses, the reply is the empty config, the
  // session continues.
  get = pod_bytes(ConfigHeader{12, 8, 0});
  get.resize(get.size() + 8);
  r = send(Request::kGetConfig, get);
  ASSERT_TRUE(r && *r);
  EXPECT_EQ((*r)->payload.size(), 12u);
  EXPECT_EQ(load<ConfigHeader>((*r)->payload).size, 0u);

  std::vector<uint8_t> set = pod_bytes(ConfigHeader{0, 2, 0});
  set.push_back(1);
  set.push_back(2);
  r = send(Request::kSetConfig, set, {}, kVersion | kFlagNeedReply);
  ASSERT_TRUE(r && *r);
  EXPECT_EQ(load<uint64_t>((*r)->payload), 0u);
  EXPECT_EQ(dev.config[1], 2);
  dev.refuse_set_config = true;
  r = send(Request::kSetConfig, set, {}, kVersion | kFlagNeedReply);
  ASSERT_TRUE(r && *r);
  EXPECT_EQ(load<uint64_t>((*r)->payload), 1u);  // NACK, not a disconnect
}

TEST_F(SessionTest, ResetDeviceStopsAndForgetsRingsButKeepsTheRest) {
  negotiate(kBackendProtocolFeatures & ~bit(kPfResetDevice));
  EXPECT_EQ(code(send(Request::kResetDevice, {})), Errc::kUnsupported);  // not negotiated
  session.reset();
  negotiate();
  mem_table();
  run_queue(0, kUser0);
  run_queue(1, kUser1);
  ASSERT_TRUE(dev.running(0) && dev.running(1));
  const auto r = send(Request::kResetDevice, {}, {}, kVersion | kFlagNeedReply);
  ASSERT_TRUE(r && *r) << (r ? "" : r.error().message());
  EXPECT_EQ(load<uint64_t>((*r)->payload), 0u);
  EXPECT_FALSE(dev.running(0));
  EXPECT_FALSE(dev.running(1));
  EXPECT_EQ(dev.device_resets, 1);
  EXPECT_EQ(dev.disconnects, 1);  // only the session.reset() above
  // The rings are forgotten: disabled, and without size or addresses they cannot start.
  ASSERT_TRUE(send(Request::kSetVringKick, pod_bytes(uint64_t{0}), fds(make_eventfd())));
  EXPECT_FALSE(dev.running(0));
  EXPECT_EQ(code(send(Request::kSetVringEnable, pod_bytes(VringState{0, 1}))), Errc::kBadState);
  // Memory table and negotiation stay: the queue runs again once it is set up anew.
  session.reset();
  negotiate();
  mem_table();
  ASSERT_TRUE(send(Request::kResetDevice, {}));
  run_queue(0, kUser0);
  EXPECT_TRUE(dev.running(0));
  EXPECT_EQ(dev.device_resets, 2);
}

// Device status (protocol feature STATUS): gated by its negotiation, exact sizes, an
// 8-bit status stored as the frontend sent it (without NEEDS_RESET, which is the
// device's), GET_STATUS adding NEEDS_RESET while the device says so, and SET_STATUS 0
// resetting the device like RESET_DEVICE.
TEST_F(SessionTest, DeviceStatus) {
  negotiate(kBackendProtocolFeatures & ~bit(kPfStatus));
  EXPECT_EQ(code(send(Request::kGetStatus, {})), Errc::kUnsupported);  // not negotiated
  session.reset();
  negotiate(kBackendProtocolFeatures & ~bit(kPfStatus));
  EXPECT_EQ(code(send(Request::kSetStatus, pod_bytes(uint64_t{15}))), Errc::kUnsupported);
  session.reset();
  negotiate();
  auto get = [&]() -> uint64_t {
    auto r = send(Request::kGetStatus, {});
    EXPECT_TRUE(r && *r) << (r ? "no reply" : r.error().message());
    if (!r || !*r) return ~0ull;
    EXPECT_EQ((*r)->hdr.request, static_cast<uint32_t>(Request::kGetStatus));
    EXPECT_EQ((*r)->payload.size(), 8u);
    return load<uint64_t>((*r)->payload);
  };
  EXPECT_EQ(get(), 0u);
  // REPLY_ACK applies to SET_STATUS; GET_STATUS has its own reply only.
  auto r = send(Request::kSetStatus, pod_bytes(uint64_t{1 | 2 | 8}), {}, kVersion | kFlagNeedReply);
  ASSERT_TRUE(r && *r);
  EXPECT_EQ(load<uint64_t>((*r)->payload), 0u);
  EXPECT_EQ(get(), 11u);
  ASSERT_TRUE(send(Request::kSetStatus, pod_bytes(uint64_t{1 | 2 | 8 | 4 | 0x40})));
  EXPECT_EQ(session.status(), 15u);  // NEEDS_RESET is not the frontend's to set
  EXPECT_EQ(get(), 15u);
  {
    std::lock_guard l(dev.mu);
    dev.broken = true;
  }
  EXPECT_EQ(get(), 15u | 0x40u);
  // Sizes and values: each a protocol error.
  EXPECT_EQ(code(send(Request::kGetStatus, pod_bytes(uint64_t{0}))), Errc::kBadPayload);
  EXPECT_EQ(code(send(Request::kSetStatus, pod_bytes(uint32_t{15}))), Errc::kBadPayload);
  EXPECT_EQ(code(send(Request::kSetStatus, {})), Errc::kBadPayload);
  EXPECT_EQ(code(send(Request::kSetStatus, pod_bytes(uint64_t{0x10f}))), Errc::kBadPayload);
  EXPECT_EQ(code(send(Request::kSetStatus, pod_bytes(uint64_t{15}), fds(make_eventfd()))), Errc::kBadFds);
  EXPECT_EQ(session.status(), 15u);  // refused messages changed nothing

  // SET_STATUS 0: a device reset, as RESET_DEVICE (rings stopped and forgotten).
  mem_table();
  run_queue(0, kUser0);
  ASSERT_TRUE(dev.running(0));
  const int resets = dev.device_resets;
  ASSERT_TRUE(send(Request::kSetStatus, pod_bytes(uint64_t{0})));
  EXPECT_FALSE(dev.running(0));
  EXPECT_EQ(dev.device_resets, resets + 1);
  EXPECT_EQ(session.status(), 0u);
  // The ring is forgotten: without size or addresses it cannot start again.
  ASSERT_TRUE(send(Request::kSetVringKick, pod_bytes(uint64_t{0}), fds(make_eventfd())));
  EXPECT_EQ(code(send(Request::kSetVringEnable, pod_bytes(VringState{0, 1}))), Errc::kBadState);
  session.reset();
  negotiate();
  // RESET_DEVICE and a disconnect forget the status too.
  ASSERT_TRUE(send(Request::kSetStatus, pod_bytes(uint64_t{15})));
  ASSERT_TRUE(send(Request::kResetDevice, {}));
  EXPECT_EQ(session.status(), 0u);
  ASSERT_TRUE(send(Request::kSetStatus, pod_bytes(uint64_t{15})));
  session.reset();
  EXPECT_EQ(session.status(), 0u);
}

TEST_F(SessionTest, MemorySlots) {
  negotiate();
  auto r = send(Request::kGetMaxMemSlots, {});
  ASSERT_TRUE(r && *r);
  EXPECT_EQ(load<uint64_t>((*r)->payload), 8u);
  auto add = [&](MemoryRegionDesc d) {
    return code(send(Request::kAddMemReg, pod_bytes(SingleMemoryRegion{0, d}), fds(dup_mem())));
  };
  EXPECT_EQ(add({0, kMiB, kUser0, 0}), Errc{});
  EXPECT_EQ(add({kGpa1, kMiB, kUser1, kMiB}), Errc{});
  EXPECT_EQ(add({0x1000, 0x1000, 0x1000, 0}), Errc::kBadRegion);  // overlaps region 0's gpa
  EXPECT_EQ(session.memory().size(), 2u);
  EXPECT_EQ(code(send(Request::kRemMemReg, pod_bytes(SingleMemoryRegion{0, {0, kMiB, kUser0, 0}}), fds(dup_mem()))),
            Errc{});
  EXPECT_EQ(session.memory().size(), 1u);
  EXPECT_EQ(code(send(Request::kRemMemReg, pod_bytes(SingleMemoryRegion{0, {0, kMiB, kUser0, 0}}))),
            Errc::kBadRegion);
  for (uint64_t i = 1; i < 8; ++i) EXPECT_EQ(add({i * 4 * kMiB, 4096, kUser0 + i * 4 * kMiB, 0}), Errc{});
  EXPECT_EQ(add({40 * kMiB, 4096, kUser0 + 40 * kMiB, 0}), Errc::kBadRegion);  // all 8 slots used
}

TEST_F(SessionTest, InflightArea) {
  negotiate();
  mem_table();
  auto get = [&](uint16_t nq, uint16_t qs) { return send(Request::kGetInflightFd, pod_bytes(InflightDesc{0, 0, nq, qs, 0})); };
  EXPECT_EQ(code(get(0, 8)), Errc::kBadPayload);
  EXPECT_EQ(code(get(3, 8)), Errc::kBadPayload);    // device has 2 queues
  EXPECT_EQ(code(get(2, 100)), Errc::kBadPayload);  // not a power of two
  EXPECT_EQ(code(get(2, 512)), Errc::kBadPayload);  // over the device's max
  auto r = get(2, 256);
  ASSERT_TRUE(r && *r) << r.error().message();
  const auto d = load<InflightDesc>((*r)->payload);
  EXPECT_EQ(d.mmap_size, inflight_region_bytes(2, 256));
  EXPECT_EQ(d.mmap_offset, 0u);
  ASSERT_GE((*r)->fd, 0);
  UniqueFd area(::fcntl((*r)->fd, F_DUPFD_CLOEXEC, 0));
  // The area is sealed: the frontend cannot shrink it under the backend.
  EXPECT_NE(::ftruncate(area.get(), 0), 0);

  run_queue(0, kUser0, 128);
  ASSERT_TRUE(dev.running(0));
  ASSERT_NE(dev.started[0].info.inflight, nullptr);
  EXPECT_TRUE(dev.started[0].info.resubmit.empty());

  auto set = [&](InflightDesc x, UniqueFd fd) { return code(send(Request::kSetInflightFd, pod_bytes(x), fds(std::move(fd)))); };
  InflightDesc bad_size = d;
  bad_size.mmap_size += 64;
  EXPECT_EQ(set(bad_size, UniqueFd(::fcntl(area.get(), F_DUPFD_CLOEXEC, 0))), Errc::kBadPayload);
  EXPECT_EQ(set(d, sealed_memfd(d.mmap_size, false)), Errc::kBadRegion);  // unsealed
  EXPECT_EQ(set(d, sealed_memfd(d.mmap_size / 2)), Errc::kBadRegion);     // too small
  {
    UniqueFd foreign = sealed_memfd(d.mmap_size);
    const uint16_t v = 7;
    ASSERT_EQ(::pwrite(foreign.get(), &v, 2, 8), 2);
    EXPECT_EQ(set(d, std::move(foreign)), Errc::kBadPayload);  // unknown version
  }
}

TEST_F(SessionTest, InflightRingLargerThanAreaIsRefused) {
  negotiate();
  mem_table();
  ASSERT_TRUE(send(Request::kGetInflightFd, pod_bytes(InflightDesc{0, 0, 1, 64, 0})));
  ASSERT_TRUE(send(Request::kSetVringNum, pod_bytes(VringState{0, 128})));
  ASSERT_TRUE(send(Request::kSetVringAddr, pod_bytes(ring_addr(0, kUser0))));
  ASSERT_TRUE(send(Request::kSetVringEnable, pod_bytes(VringState{0, 1})));
  EXPECT_EQ(code(send(Request::kSetVringKick, pod_bytes(uint64_t{0}), fds(make_eventfd()))), Errc::kBadVring);
}

}  // namespace
}  // namespace azote::vhost_user
