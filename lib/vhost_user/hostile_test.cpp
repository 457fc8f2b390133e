// A hostile frontend against a listening Backend over a real socket. Every bad input
// must end in: the connection closed by the backend, one rejection counted, no fd
// leaked (whole-process /proc/self/fd count), and the backend still serving the next
// frontend.
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <cstdio>
#include <string>
#include <tuple>

#include "guest_memory/guest_memory.hpp"
#include "vhost_user/backend.hpp"
#include "vhost_user/frontend.hpp"
#include "vhost_user/test_util.hpp"

namespace azote::vhost_user {
namespace {

using namespace testing;

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kUser0 = 0x7f0000000000;

enum class Prelude { kNone, kNegotiated, kMemory };

class Hostile : public ::testing::Test {
 protected:
  void SetUp() override {
    auto m = GuestMemory::create({{GuestAddress(0), 2 * kMiB}});
    ASSERT_TRUE(m.ok());
    mem = std::make_unique<GuestMemory>(std::move(m).value());
    auto b = Backend::listen(path, dev, BackendOptions{std::chrono::milliseconds(200)});
    ASSERT_TRUE(b.ok()) << b.error().message();
    thread = std::make_unique<BackendThread>(std::move(b).value());
    baseline = count_open_fds();
  }

  static Deadline soon() { return Clock::now() + std::chrono::milliseconds(2000); }

  void prelude(Connection& c, Prelude p) {
    if (p == Prelude::kNone) return;
    ASSERT_TRUE(c.send(Header{16, kVersion, 8}, pod_bytes(kBackendProtocolFeatures), {}, soon()));
    ASSERT_TRUE(c.send(Header{2, kVersion, 8}, pod_bytes(dev.feats | bit(kFProtocolFeatures)), {}, soon()));
    if (p == Prelude::kMemory) {
      UniqueFd fd = sealed_memfd(kMiB);
      const int raw = fd.get();
      const auto table = mem_table_payload({{0, kMiB, kUser0, 0}});
      ASSERT_TRUE(c.send(Header{5, kVersion, static_cast<uint32_t>(table.size())}, table, std::span<const int>(&raw, 1),
                         soon()));
    }
    // A request with a reply proves the prelude was accepted.
    ASSERT_TRUE(c.send(Header{1, kVersion, 0}, {}, {}, soon()));
    auto r = c.recv(soon());
    ASSERT_TRUE(r) << "prelude rejected: " << r.error().message();
  }

  // Sends `bytes` (+ fds) after the prelude and expects the backend to hang up.
  void attack(Prelude p, std::vector<uint8_t> bytes, std::vector<UniqueFd> fds = {}, bool shut_wr = false) {
    {
      auto c = Connection::connect(path, std::chrono::milliseconds(1000));
      ASSERT_TRUE(c);
      ASSERT_NO_FATAL_FAILURE(prelude(*c, p));
      std::vector<int> raw;
      for (const auto& f : fds) raw.push_back(f.get());
      ASSERT_TRUE(send_raw(c->fd(), bytes, raw));
      fds.clear();  // our copies; the backend received (and must close) its own
      if (shut_wr) ::shutdown(c->fd(), SHUT_WR);
      for (;;) {  // a REPLY_ACK failure may come first, then EOF
        auto m = c->recv(Clock::now() + std::chrono::milliseconds(3000));
        if (m) continue;
        // EOF, or a reset when the backend hung up with our bytes still unread.
        EXPECT_TRUE(m.error().code == Errc::kClosed || m.error().code == Errc::kTruncated) << m.error().message();
        break;
      }
    }
    ASSERT_TRUE(wait_for([&] { return thread->backend().disconnects() == 1; }));
    EXPECT_EQ(thread->backend().rejected(), 1u);
    EXPECT_EQ(count_open_fds(), baseline) << "fd leak";
    // Still serving: a well-behaved frontend gets through.
    auto f = Frontend::connect(path, FrontendOptions{std::chrono::milliseconds(2000)});
    ASSERT_TRUE(f) << f.error().message();
    ASSERT_TRUE(f->set_features(dev.feats));
    ASSERT_TRUE(f->set_mem_table(*mem));
  }

  static std::vector<UniqueFd> memfds(size_t n, uint64_t size = kMiB) {
    std::vector<UniqueFd> v;
    for (size_t i = 0; i < n; ++i) v.push_back(sealed_memfd(size));
    return v;
  }
  static std::vector<uint8_t> table(std::vector<MemoryRegionDesc> r, std::optional<uint32_t> n = std::nullopt) {
    auto p = mem_table_payload(r, n);
    return raw_message(5, kVersion, p);
  }

  TempDir dir;
  std::string path = dir.file("hostile.sock");
  std::unique_ptr<GuestMemory> mem;
  FakeDevice dev;
  std::unique_ptr<BackendThread> thread;
  size_t baseline = 0;
};

TEST_F(Hostile, OversizedSizeField) { attack(Prelude::kNone, raw_message(1, kVersion, {}, 5000)); }

TEST_F(Hostile, HugeSizeField) { attack(Prelude::kNegotiated, raw_message(5, kVersion, {}, 0xffffffff)); }

TEST_F(Hostile, PayloadSizeMismatchingTheRequest) {
  attack(Prelude::kNone, raw_message(2, kVersion, std::vector<uint8_t>(4)));
}

TEST_F(Hostile, TooManyFds) {
  // Nine fds: more than the receive buffer holds (MSG_CTRUNC).
  attack(Prelude::kNegotiated, table({{0, kMiB, kUser0, 0}}, 1), memfds(9));
}

TEST_F(Hostile, MoreFdsThanRegions) { attack(Prelude::kNegotiated, table({{0, kMiB, kUser0, 0}}), memfds(8)); }

TEST_F(Hostile, FdOnAMessageThatTakesNone) {
  std::vector<UniqueFd> f;
  f.push_back(make_eventfd());
  attack(Prelude::kNone, raw_message(1, kVersion, {}), std::move(f));
}

TEST_F(Hostile, RegionOverflow) {
  attack(Prelude::kNegotiated, table({{~uint64_t{0} - 4095, 2 * 4096, kUser0, 0}}), memfds(1));
}

TEST_F(Hostile, RegionOverlap) {
  attack(Prelude::kNegotiated, table({{0, kMiB, kUser0, 0}, {kMiB / 2, kMiB, kUser0 + 4 * kMiB, 0}}), memfds(2, 2 * kMiB));
}

TEST_F(Hostile, RegionLargerThanItsFd) {
  attack(Prelude::kNegotiated, table({{0, 4 * kMiB, kUser0, 0}}), memfds(1));
}

TEST_F(Hostile, TooManyRegions) {
  std::vector<MemoryRegionDesc> r;
  for (uint64_t i = 0; i < 9; ++i) r.push_back({i * kMiB, 4096, kUser0 + i * kMiB, 0});
  attack(Prelude::kNegotiated, table(r));
}

class HostileVringNum : public Hostile, public ::testing::WithParamInterface<uint32_t> {};

TEST_P(HostileVringNum, Refused) {
  attack(Prelude::kMemory, raw_message(8, kVersion, pod_bytes(VringState{0, GetParam()})));
}
INSTANTIATE_TEST_SUITE_P(ZeroNotPowerOfTwoTooBig, HostileVringNum, ::testing::Values(0u, 100u, 512u, 65536u));

TEST_F(Hostile, RingAddressOutsideEveryRegion) {
  VringAddr a;
  a.desc_user_addr = kUser0 + 2 * kMiB;  // past the only region
  a.avail_user_addr = kUser0 + 0x1000;
  a.used_user_addr = kUser0 + 0x2000;
  auto bytes = raw_message(8, kVersion, pod_bytes(VringState{0, 256}));
  auto addr = raw_message(9, kVersion | kFlagNeedReply, pod_bytes(a));
  bytes.insert(bytes.end(), addr.begin(), addr.end());
  attack(Prelude::kMemory, bytes);
}

TEST_F(Hostile, UnknownRequestCode) { attack(Prelude::kNone, raw_message(99, kVersion, {})); }

TEST_F(Hostile, UnimplementedRequestCode) {
  attack(Prelude::kNegotiated, raw_message(22, kVersion, std::vector<uint8_t>(24)));  // IOTLB_MSG
}

TEST_F(Hostile, BadVersion) { attack(Prelude::kNone, raw_message(1, 0x2, {})); }

TEST_F(Hostile, TruncatedMessageThenSilence) {
  // Header promises 8 bytes, 4 arrive, the peer stays connected: the message timeout fires.
  auto b = raw_message(2, kVersion, std::vector<uint8_t>(8));
  b.resize(b.size() - 4);
  attack(Prelude::kNone, b);
}

TEST_F(Hostile, EofInsideTheHeader) {
  auto b = raw_message(1, kVersion, {});
  b.resize(6);
  attack(Prelude::kNone, b, {}, true);
}

TEST_F(Hostile, EofInsideThePayload) {
  auto b = raw_message(5, kVersion, mem_table_payload({{0, kMiB, kUser0, 0}}));
  b.resize(b.size() - 10);
  attack(Prelude::kNegotiated, b, memfds(1), true);
}

TEST_F(Hostile, KickWithoutItsFd) { attack(Prelude::kMemory, raw_message(12, kVersion, pod_bytes(uint64_t{0}))); }

// Device status messages: not negotiated, wrong sizes, a value that is no status, an fd.
TEST_F(Hostile, GetStatusWithoutStatusNegotiated) { attack(Prelude::kNone, raw_message(40, kVersion, {})); }
TEST_F(Hostile, GetStatusWithAPayload) {
  attack(Prelude::kNegotiated, raw_message(40, kVersion, pod_bytes(uint64_t{0})));
}
TEST_F(Hostile, SetStatusTooShort) { attack(Prelude::kNegotiated, raw_message(39, kVersion, pod_bytes(uint32_t{15}))); }
TEST_F(Hostile, SetStatusOverEightBits) {
  attack(Prelude::kNegotiated, raw_message(39, kVersion | kFlagNeedReply, pod_bytes(uint64_t{1} << 40)));
}
TEST_F(Hostile, SetStatusWithAnFd) {
  std::vector<UniqueFd> f;
  f.push_back(make_eventfd());
  attack(Prelude::kNegotiated, raw_message(39, kVersion, pod_bytes(uint64_t{15})), std::move(f));
}

// Kick, call and err fds must be plain eventfds: a worker reads and writes them on its
// data path, and anything else (a pipe, a socket, a file, a semaphore eventfd that one
// read decrements by 1 only) could make it block, spin or read forever.
class HostileRingFd : public Hostile, public ::testing::WithParamInterface<std::tuple<int, const char*>> {};

UniqueFd ring_fd_of_kind(const std::string& kind) {
  if (kind == "pipe") {
    int p[2];
    if (::pipe2(p, O_CLOEXEC | O_NONBLOCK) != 0) return UniqueFd();
    ::close(p[1]);
    return UniqueFd(p[0]);
  }
  if (kind == "socket") {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return UniqueFd();
    ::close(sv[1]);
    return UniqueFd(sv[0]);
  }
  if (kind == "file") return sealed_memfd(4096);
  if (kind == "semaphore") {
    UniqueFd fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK | EFD_SEMAPHORE));
    const uint64_t huge = uint64_t{1} << 63;
    if (::write(fd.get(), &huge, sizeof huge) != 8) return UniqueFd();
    return fd;
  }
  return UniqueFd();
}

bool kernel_shows_eventfd_semaphore() {
  UniqueFd fd(::eventfd(0, EFD_CLOEXEC | EFD_SEMAPHORE));
  char path[64];
  std::snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd.get());
  UniqueFd info(::open(path, O_RDONLY | O_CLOEXEC));
  char buf[512] = {};
  const ssize_t n = info ? ::read(info.get(), buf, sizeof buf - 1) : -1;
  return n > 0 && std::strstr(buf, "eventfd-semaphore:") != nullptr;
}

TEST_P(HostileRingFd, Refused) {
  const auto [request, kind] = GetParam();
  if (std::string(kind) == "semaphore" && !kernel_shows_eventfd_semaphore())
    GTEST_SKIP() << "SKIPPED: this kernel's fdinfo does not show eventfd-semaphore";
  std::vector<UniqueFd> f;
  f.push_back(ring_fd_of_kind(kind));
  ASSERT_TRUE(f[0]);
  attack(Prelude::kMemory, raw_message(static_cast<uint32_t>(request), kVersion | kFlagNeedReply, pod_bytes(uint64_t{0})),
         std::move(f));
}
INSTANTIATE_TEST_SUITE_P(KickCallErr, HostileRingFd,
                         ::testing::Combine(::testing::Values(12, 13, 14),
                                            ::testing::Values("pipe", "socket", "file", "semaphore")));

}  // namespace
}  // namespace azote::vhost_user
