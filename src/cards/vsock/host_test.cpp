// The host bridge (DESIGN.md "The host bridge"): the parent's streams to (2, PORT) ended
// by the card and relayed to a Unix stream socket. The parent is a MockDriver VM playing
// a Linux-like vsock endpoint (credit both ways); the host side a real Unix socket: an
// echo server thread, or a listener whose connection the test holds itself.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <thread>

#include "base/temp_dir.hpp"
#include "cards/vsock/device.hpp"
#include "cards/vsock/test_vm.hpp"

namespace azote::card_vsock {
namespace {

using namespace std::chrono_literals;
using namespace testing;

constexpr uint32_t kPort = 5005;
constexpr uint32_t kCardBuf = 64 * 1024;  // the card's buf_alloc (Limits)

UniqueFd listen_unix(const std::string& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
  ::unlink(path.c_str());
  EXPECT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0) << std::strerror(errno);
  EXPECT_EQ(::listen(fd.get(), 16), 0);
  return fd;
}

// Accepts one connection within `timeout` (invalid fd if none).
UniqueFd accept_one(int lfd, std::chrono::milliseconds timeout = 5000ms) {
  pollfd p{lfd, POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1) return UniqueFd();
  return UniqueFd(::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC));
}

// Reads until `n` bytes or EOF/timeout.
Bytes read_n(int fd, size_t n, std::chrono::milliseconds timeout = 5000ms) {
  Bytes out;
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (out.size() < n && std::chrono::steady_clock::now() < end) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 20) != 1) continue;
    uint8_t buf[65536];
    const ssize_t r = ::read(fd, buf, std::min(sizeof buf, n - out.size()));
    if (r <= 0) break;
    out.insert(out.end(), buf, buf + r);
  }
  return out;
}

// A Unix echo server: each connection echoed until EOF, then closed.
class EchoServer {
 public:
  explicit EchoServer(const std::string& path) : lfd_(listen_unix(path)) {
    t_ = std::thread([this] {
      while (!stop_) {
        UniqueFd c = accept_one(lfd_.get(), 50ms);
        if (!c) continue;
        uint8_t buf[65536];
        for (;;) {
          const ssize_t r = ::read(c.get(), buf, sizeof buf);
          if (r <= 0) break;
          for (ssize_t off = 0; off < r;) {
            const ssize_t w = ::send(c.get(), buf + off, static_cast<size_t>(r - off), MSG_NOSIGNAL);
            if (w <= 0) break;
            off += w;
          }
        }
      }
    });
  }
  ~EchoServer() {
    stop_ = true;
    t_.join();
  }

 private:
  UniqueFd lfd_;
  std::atomic<bool> stop_{false};
  std::thread t_;
};

class HostBridge : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = Switch::start({3, 5});
    ASSERT_TRUE(s.ok()) << s.error().message();
    sw_ = std::move(s).value();
    for (size_t i = 0; i < 2; ++i) {
      vms_.push_back(std::make_unique<Vm>(i == 0 ? 3 : 5));
      devs_.push_back(std::make_unique<VsockDevice>(*sw_, i, i == 0 ? 3 : 5));
      devs_[i]->set_features(virtio::feature_bit(virtio::kFVersion1));
      for (uint32_t q = 0; q < kNumQueues; ++q) devs_[i]->queue_started(vms_[i]->info(q));
    }
    parent().post_rx(200);
    enclave().post_rx(16);
  }
  void TearDown() override {
    devs_.clear();
    sw_.reset();
  }
  Vm& parent() { return *vms_[0]; }
  Vm& enclave() { return *vms_[1]; }
  std::string path(const std::string& n) const { return dir_.file(n); }

  // The parent's packet to (2, port) from guest port `gport`, with its credit.
  Bytes to_host(uint16_t op, uint32_t buf_alloc, uint32_t fwd_cnt, const Bytes& payload = {}, uint32_t flags = 0,
                uint32_t port = kPort, uint32_t gport = 1234) {
    Header h = hdr(3, gport, kCidHost, port, op, static_cast<uint32_t>(payload.size()));
    h.buf_alloc = buf_alloc;
    h.fwd_cnt = fwd_cnt;
    h.flags = flags;
    return pkt(h, payload);
  }
  // REQUEST, then the card's answer.
  Header connect(uint32_t buf_alloc, uint32_t port = kPort) {
    parent().send(to_host(kOpRequest, buf_alloc, 0, {}, 0, port));
    const auto got = parent().wait_rx(1);
    EXPECT_EQ(got.size(), 1u);
    return got.empty() ? Header{} : header_of(got[0]);
  }
  void post_rx_back(size_t n) { parent().post_rx(n); }

  std::unique_ptr<Switch> sw_;
  std::vector<std::unique_ptr<Vm>> vms_;
  std::vector<std::unique_ptr<VsockDevice>> devs_;
  TempDir dir_{"card-vsock-host"};
};

TEST_F(HostBridge, AMappedPortIsAnsweredWithResponse) {
  const UniqueFd l = listen_unix(path("h.sock"));
  ASSERT_TRUE(sw_->add_host_port(kPort, path("h.sock")).ok());
  const Header r = connect(262144);
  EXPECT_EQ(r.op, kOpResponse);
  EXPECT_EQ(r.src_cid, kCidHost);
  EXPECT_EQ(r.src_port, kPort);
  EXPECT_EQ(r.dst_cid, 3u);
  EXPECT_EQ(r.dst_port, 1234u);
  EXPECT_EQ(r.buf_alloc, kCardBuf);
  EXPECT_EQ(r.fwd_cnt, 0u);
  EXPECT_EQ(r.len, 0u);
  EXPECT_TRUE(accept_one(l.get())) << "the card connected";
  const auto s = sw_->stats();
  EXPECT_EQ(s.host.opened, 1u);
  EXPECT_EQ(s.host.open, 1u);
}

TEST_F(HostBridge, UnmappedMissingAndEnclaveRequestsAreReset) {
  const UniqueFd l = listen_unix(path("h.sock"));
  ASSERT_TRUE(sw_->add_host_port(kPort, path("h.sock")).ok());
  ASSERT_TRUE(sw_->add_host_port(7, path("missing.sock")).ok());
  // Unmapped port.
  Header r = connect(65536, 6000);
  EXPECT_EQ(r.op, kOpRst);
  EXPECT_EQ(r.src_cid, kCidHost);
  EXPECT_EQ(r.src_port, 6000u);
  // Mapped, but nothing listens there.
  r = connect(65536, 7);
  EXPECT_EQ(r.op, kOpRst);
  // An enclave never reaches the host, mapped port or not.
  enclave().send(pkt(5, 1111, kCidHost, kPort, kOpRequest));
  const auto got = enclave().wait_rx(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(header_of(got[0]).op, kOpRst);
  EXPECT_EQ(header_of(got[0]).src_cid, kCidHost);
  EXPECT_FALSE(accept_one(l.get(), 200ms)) << "nothing connected for the enclave";
  // A packet for no stream: RST; an RST for none: nothing.
  parent().send(to_host(kOpRw, 65536, 0, {1, 2, 3}));
  const auto rw = parent().wait_rx(1);
  ASSERT_EQ(rw.size(), 1u);
  EXPECT_EQ(header_of(rw[0]).op, kOpRst);
  parent().send(to_host(kOpRst, 65536, 0));
  EXPECT_TRUE(parent().rx_after().empty());
  const auto s = sw_->stats();
  EXPECT_EQ(s.host.refused, 2u);
  EXPECT_EQ(s.host.opened, 0u);
}

// More than 64 KiB each way through the echo server, byte-exact: the parent (a
// well-behaved driver) never sends past the card's buf_alloc, and the card never sends
// past the parent's (16 KiB here, advertised again as it consumes).
TEST_F(HostBridge, EchoBothWaysWithinCredit) {
  EchoServer echo(path("echo.sock"));
  ASSERT_TRUE(sw_->add_host_port(kPort, path("echo.sock")).ok());
  constexpr uint32_t kParentBuf = 16 * 1024;
  const Header r = connect(kParentBuf);
  ASSERT_EQ(r.op, kOpResponse);
  const Bytes data = pattern(300 * 1024, 7);
  uint32_t card_buf = r.buf_alloc, card_fwd = r.fwd_cnt;  // the card's credit for us
  uint32_t sent = 0;
  Bytes back;
  uint32_t fwd = 0;  // what we consumed (all we receive, at once), last advertised `told`
  uint32_t told = 0;
  const auto end = std::chrono::steady_clock::now() + 20s;
  while (back.size() < data.size() && std::chrono::steady_clock::now() < end) {
    // Send within the card's credit, 4 KiB per packet.
    while (sent < data.size()) {
      const uint32_t credit = card_buf - (sent - card_fwd);
      const uint32_t n = std::min<uint32_t>({credit, 4096, static_cast<uint32_t>(data.size() - sent)});
      if (n == 0) break;
      parent().send(to_host(kOpRw, kParentBuf, fwd, Bytes(data.begin() + sent, data.begin() + sent + n)));
      told = fwd;
      sent += n;
    }
    for (const Bytes& p : parent().take_rx()) {
      const Header h = header_of(p);
      ASSERT_TRUE(h.op == kOpRw || h.op == kOpCreditUpdate) << "op " << h.op;
      card_buf = h.buf_alloc;
      card_fwd = h.fwd_cnt;
      const Bytes pl = payload_of(p);
      back.insert(back.end(), pl.begin(), pl.end());
      ASSERT_LE(static_cast<uint32_t>(back.size()) - told, kParentBuf) << "the card sent past our credit";
      post_rx_back(1);
    }
    fwd = static_cast<uint32_t>(back.size());
    if (fwd - told >= kParentBuf / 2) {
      parent().send(to_host(kOpCreditUpdate, kParentBuf, fwd));
      told = fwd;
    }
    std::this_thread::sleep_for(1ms);
  }
  ASSERT_EQ(back.size(), data.size());
  EXPECT_TRUE(back == data) << "byte-exact";
  const auto s = sw_->stats();
  EXPECT_EQ(s.host.bytes_to_host, data.size());
  EXPECT_EQ(s.host.bytes_from_host, data.size());
  EXPECT_EQ(s.host.resets_sent, 0u);
  // The parent closes: SHUTDOWN both ways, the card answers RST (as Linux does).
  parent().send(to_host(kOpShutdown, kParentBuf, fwd, {}, kShutdownBoth));
  const auto got = parent().wait_rx(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(header_of(got[0]).op, kOpRst);
  EXPECT_TRUE(sw_->stats().host.open == 0);
}

// A parent that gives no more credit stalls the host -> parent direction: the card
// sends exactly its credit, nothing is lost, and each CREDIT_UPDATE lets more through.
TEST_F(HostBridge, NoCreditStallsTheHostWithoutDrops) {
  const UniqueFd l = listen_unix(path("h.sock"));
  ASSERT_TRUE(sw_->add_host_port(kPort, path("h.sock")).ok());
  constexpr uint32_t kParentBuf = 8192;
  ASSERT_EQ(connect(kParentBuf).op, kOpResponse);
  const UniqueFd c = accept_one(l.get());
  ASSERT_TRUE(c);
  const Bytes data = pattern(100 * 1024, 3);
  std::thread writer([&] {
    for (size_t off = 0; off < data.size();) {
      const ssize_t w = ::send(c.get(), data.data() + off, data.size() - off, MSG_NOSIGNAL);
      if (w <= 0) break;
      off += static_cast<size_t>(w);
    }
  });
  Bytes back;
  uint32_t fwd = 0;
  while (back.size() < data.size()) {
    Bytes window;
    const auto end = std::chrono::steady_clock::now() + 5s;
    const size_t want = std::min<size_t>(kParentBuf, data.size() - back.size());
    while (window.size() < want && std::chrono::steady_clock::now() < end) {
      for (const Bytes& p : parent().take_rx()) {
        ASSERT_EQ(header_of(p).op, kOpRw);
        const Bytes pl = payload_of(p);
        window.insert(window.end(), pl.begin(), pl.end());
        post_rx_back(1);
      }
      std::this_thread::sleep_for(1ms);
    }
    ASSERT_EQ(window.size(), want);
    // No credit left: nothing more comes.
    if (back.size() + window.size() < data.size()) {
      EXPECT_TRUE(parent().rx_after(100ms).empty());
    }
    back.insert(back.end(), window.begin(), window.end());
    fwd += static_cast<uint32_t>(window.size());
    parent().send(to_host(kOpCreditUpdate, kParentBuf, fwd));
  }
  writer.join();
  EXPECT_TRUE(back == data);
  EXPECT_EQ(sw_->stats().host.bytes_from_host, data.size());
}

// The parent sending past the buf_alloc the card advertised: reset.
TEST_F(HostBridge, AParentExceedingTheCardsBufferIsReset) {
  const UniqueFd l = listen_unix(path("h.sock"));
  ASSERT_TRUE(sw_->add_host_port(kPort, path("h.sock")).ok());
  ASSERT_EQ(connect(65536).op, kOpResponse);
  const UniqueFd c = accept_one(l.get());
  ASSERT_TRUE(c);
  // 17 x 4 KiB in one batch: 68 KiB before the card writes any of it.
  for (int i = 0; i < 17; ++i) parent().send(to_host(kOpRw, 65536, 0, pattern(4096, i)), /*publish=*/i == 16);
  auto got = parent().wait_rx(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(header_of(got[0]).op, kOpRst);
  EXPECT_EQ(header_of(got[0]).src_cid, kCidHost);
  const auto s = sw_->stats();
  EXPECT_EQ(s.host.resets_sent, 1u);
  EXPECT_EQ(s.host.open, 0u);
  // The Unix side is closed (what came before the overrun, then EOF).
  const Bytes rest = read_n(c.get(), 1u << 20, 2000ms);
  EXPECT_LE(rest.size(), 64u * 1024);
}

// The host side closing: its last bytes then SHUTDOWN(SEND) at the parent; the parent's
// SHUTDOWN(SEND) becomes SHUT_WR; CREDIT_REQUEST is answered; an RST from the parent
// closes the Unix side.
TEST_F(HostBridge, ShutdownsCreditRequestAndResets) {
  const UniqueFd l = listen_unix(path("h.sock"));
  ASSERT_TRUE(sw_->add_host_port(kPort, path("h.sock")).ok());
  ASSERT_EQ(connect(65536).op, kOpResponse);
  UniqueFd c = accept_one(l.get());
  ASSERT_TRUE(c);
  parent().send(to_host(kOpCreditRequest, 65536, 0));
  auto got = parent().wait_rx(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(header_of(got[0]).op, kOpCreditUpdate);
  EXPECT_EQ(header_of(got[0]).buf_alloc, kCardBuf);
  parent().send(to_host(kOpRw, 65536, 0, {'h', 'i'}));
  parent().send(to_host(kOpShutdown, 65536, 0, {}, kShutdownSend));
  EXPECT_EQ(read_n(c.get(), 3), (Bytes{'h', 'i'})) << "the bytes, then EOF (SHUT_WR)";
  ASSERT_EQ(::send(c.get(), "bye", 3, MSG_NOSIGNAL), 3);
  c.reset();
  got = parent().wait_rx(2);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(header_of(got[0]).op, kOpRw);
  EXPECT_EQ(payload_of(got[0]), (Bytes{'b', 'y', 'e'}));
  EXPECT_EQ(header_of(got[0]).fwd_cnt, 2u) << "the card's fwd_cnt: the 2 bytes written";
  EXPECT_EQ(header_of(got[1]).op, kOpShutdown);
  EXPECT_EQ(header_of(got[1]).flags, kShutdownSend);

  // A second stream, reset by the parent: the Unix side sees EOF.
  ASSERT_EQ(connect(65536).op, kOpResponse);  // same ports: a new stream
  c = accept_one(l.get());
  ASSERT_TRUE(c);
  parent().send(to_host(kOpRst, 65536, 0));
  EXPECT_TRUE(read_n(c.get(), 1, 2000ms).empty());
  EXPECT_TRUE(parent().rx_after().empty()) << "an RST is not answered";
  // A third, its parent's device going away: the Unix side sees EOF.
  ASSERT_EQ(connect(65536).op, kOpResponse);
  c = accept_one(l.get());
  ASSERT_TRUE(c);
  for (uint32_t q = 0; q < kNumQueues; ++q) (void)devs_[0]->queue_stopped(q);
  devs_[0]->frontend_disconnected();
  EXPECT_TRUE(read_n(c.get(), 1, 2000ms).empty());
  const auto s = sw_->stats();
  EXPECT_EQ(s.host.opened, 3u);
  EXPECT_EQ(s.host.resets_received, 1u);
  EXPECT_EQ(s.host.open, 0u);
}

TEST_F(HostBridge, TheMapIsBounded) {
  EXPECT_FALSE(sw_->add_host_port(0, "/x").ok());
  EXPECT_FALSE(sw_->add_host_port(1, "rel").ok());
  EXPECT_FALSE(sw_->add_host_port(1, "/" + std::string(107, 'a')).ok());
  for (uint32_t p = 1; p <= 8; ++p) EXPECT_TRUE(sw_->add_host_port(p, "/s" + std::to_string(p)).ok());
  EXPECT_FALSE(sw_->add_host_port(9, "/s9").ok()) << "a ninth";
  EXPECT_FALSE(sw_->add_host_port(1, "/again").ok()) << "mapped already";
  EXPECT_TRUE(sw_->remove_host_port(1));
  EXPECT_FALSE(sw_->remove_host_port(1));
  EXPECT_TRUE(sw_->add_host_port(4294967295u, "/max").ok());
  EXPECT_EQ(sw_->host_ports().size(), 8u);
}

}  // namespace
}  // namespace azote::card_vsock
