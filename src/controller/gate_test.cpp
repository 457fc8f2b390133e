// Gate: the controller's listening socket lets OpenSSL parse each connection's
// ClientHello, hands acceptable ones (with the bytes read) to gRPC's acceptor and
// refuses the rest with a reason. gRPC is played by a fake acceptor that keeps what it
// gets; the ClientHellos come from OpenSSL clients over memory BIOs.
#include "controller/gate.hpp"
#include "base/temp_dir.hpp"

#include <gtest/gtest.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/slice.h>

namespace azote::controller {
namespace {

using namespace std::chrono_literals;


// What the fake gRPC acceptor and the refusal sink saw.
struct Seen {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::string> handed;  // the bytes that came with each connection
  std::vector<UniqueFd> fds;
  std::vector<Refusal> refusals;

  template <class Pred>
  bool wait(Pred pred, std::chrono::milliseconds timeout = 5s) {
    std::unique_lock lock(mu);
    return cv.wait_for(lock, timeout, pred);
  }
};

class FakeAcceptor final : public grpc::experimental::ExternalConnectionAcceptor {
 public:
  explicit FakeAcceptor(Seen& seen) : seen_(seen) {}
  void HandleNewConnection(NewConnectionParameters* p) override {
    std::vector<grpc::Slice> slices;
    std::string bytes;
    if (p->read_buffer.Valid() && p->read_buffer.Dump(&slices).ok())
      for (const auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
    std::lock_guard lock(seen_.mu);
    seen_.handed.push_back(std::move(bytes));
    seen_.fds.emplace_back(p->fd);
    seen_.cv.notify_all();
  }

 private:
  Seen& seen_;
};

using SslCtxPtr = std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)>;
using SslPtr = std::unique_ptr<SSL, decltype(&SSL_free)>;

// The first flight of an OpenSSL client: its ClientHello. alpn in wire format ("\x02h2").
std::string client_hello(const std::string& alpn, int max_version = 0) {
  SslCtxPtr ctx(SSL_CTX_new(TLS_client_method()), SSL_CTX_free);
  if (max_version != 0) {
    SSL_CTX_set_security_level(ctx.get(), 0);  // OpenSSL 3 refuses TLS < 1.2 otherwise
    SSL_CTX_set_min_proto_version(ctx.get(), TLS1_VERSION);
    SSL_CTX_set_max_proto_version(ctx.get(), max_version);
  }
  SslPtr ssl(SSL_new(ctx.get()), SSL_free);
  BIO* rbio = BIO_new(BIO_s_mem());
  BIO* wbio = BIO_new(BIO_s_mem());
  SSL_set_bio(ssl.get(), rbio, wbio);
  if (!alpn.empty())
    SSL_set_alpn_protos(ssl.get(), reinterpret_cast<const unsigned char*>(alpn.data()), static_cast<unsigned>(alpn.size()));
  EXPECT_EQ(SSL_connect(ssl.get()), -1);  // wants the server's answer
  std::string out(static_cast<size_t>(BIO_ctrl_pending(wbio)), '\0');
  EXPECT_EQ(BIO_read(wbio, out.data(), static_cast<int>(out.size())), static_cast<int>(out.size()));
  ERR_clear_error();
  return out;
}

UniqueFd connect_to(const std::string& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
  EXPECT_EQ(::connect(fd.get(), reinterpret_cast<const sockaddr*>(&a), sizeof a), 0) << std::strerror(errno);
  return fd;
}

// True once the other end closed (after whatever it sent).
bool closed_by_peer(int fd, std::chrono::milliseconds timeout = 5s) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  char buf[512];
  while (std::chrono::steady_clock::now() < end) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n == 0 || (n < 0 && errno == ECONNRESET)) return true;
  }
  return false;
}

class GateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto p = pki::HostPki::open_or_create(dir_ / "pki");
    ASSERT_TRUE(p.ok()) << p.error().message();
    pki_.emplace(std::move(p).value());
  }
  void TearDown() override {
    if (gate_) gate_->stop();
  }
  void start(GateLimits limits = {}) {
    auto g = Gate::listen("unix:" + sock_, *pki_, agg_, limits);
    ASSERT_TRUE(g.ok()) << g.error().message();
    gate_ = std::move(g).value();
    gate_->start(std::make_unique<FakeAcceptor>(seen_));
  }
  // The reasons refused so far (each with count 1 here: every reason is new).
  std::vector<std::string> reasons() {
    std::lock_guard lock(seen_.mu);
    std::vector<std::string> out;
    for (const auto& r : seen_.refusals) out.push_back(r.reason);
    return out;
  }
  bool wait_refusals(size_t n, std::chrono::milliseconds timeout = 5s) {
    return seen_.wait([&] { return seen_.refusals.size() >= n; }, timeout);
  }

  TempDir dir_;
  const std::string sock_ = dir_ / "api.sock";
  std::optional<pki::HostPki> pki_;
  Seen seen_;
  RefusalAggregator agg_{[this](const Refusal& r) {
                           std::lock_guard lock(seen_.mu);
                           seen_.refusals.push_back(r);
                           seen_.cv.notify_all();
                         },
                         60s, 64};
  std::unique_ptr<Gate> gate_;
};

TEST_F(GateTest, AClientHelloOfferingH2GoesToGrpcWithItsBytes) {
  start();
  for (const std::string& alpn : {std::string("\x02h2"), std::string("\x08http/1.1\x02h2")}) {
    const std::string hello = client_hello(alpn);
    ASSERT_FALSE(hello.empty());
    const size_t before = [&] {
      std::lock_guard lock(seen_.mu);
      return seen_.handed.size();
    }();
    UniqueFd c = connect_to(sock_);
    // In two pieces: the Gate waits for the whole ClientHello.
    ASSERT_EQ(::send(c.get(), hello.data(), 10, 0), 10);
    std::this_thread::sleep_for(50ms);
    ASSERT_EQ(::send(c.get(), hello.data() + 10, hello.size() - 10, 0), static_cast<ssize_t>(hello.size() - 10));
    ASSERT_TRUE(seen_.wait([&] { return seen_.handed.size() > before; })) << testing::PrintToString(reasons());
    std::lock_guard lock(seen_.mu);
    EXPECT_EQ(seen_.handed.back(), hello);  // gRPC gets every byte, unchanged
  }
  EXPECT_TRUE(reasons().empty()) << testing::PrintToString(reasons());
  // TLS 1.2 with h2 and a cipher gRPC allows passes too.
  UniqueFd c = connect_to(sock_);
  const std::string hello12 = client_hello("\x02h2", TLS1_2_VERSION);
  ASSERT_EQ(::send(c.get(), hello12.data(), hello12.size(), 0), static_cast<ssize_t>(hello12.size()));
  ASSERT_TRUE(seen_.wait([&] { return seen_.handed.size() == 3; })) << testing::PrintToString(reasons());
}

TEST_F(GateTest, EverythingElseIsRefusedWithItsReason) {
  start();
  const std::string peer = "unix:uid=" + std::to_string(::getuid());
  struct Case {
    std::string bytes, reason;
  };
  const std::vector<Case> cases = {
      {client_hello(""), "no ALPN h2 (the client offered no ALPN)"},
      {client_hello("\x08http/1.1"), "no ALPN h2 (the client offered only other protocols)"},
      {"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "not TLS (http request)"},
      {std::string(64, '\x01'), "not TLS (wrong version number)"},
      {client_hello("\x02h2", TLS1_1_VERSION), "TLS handshake refused (unsupported protocol)"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    UniqueFd c = connect_to(sock_);
    ASSERT_EQ(::send(c.get(), cases[i].bytes.data(), cases[i].bytes.size(), 0),
              static_cast<ssize_t>(cases[i].bytes.size()));
    EXPECT_TRUE(closed_by_peer(c.get())) << cases[i].reason;
    ASSERT_TRUE(wait_refusals(i + 1)) << cases[i].reason;
    std::lock_guard lock(seen_.mu);
    EXPECT_EQ(seen_.refusals[i].reason, cases[i].reason);
    EXPECT_EQ(seen_.refusals[i].peer, peer);
    EXPECT_EQ(seen_.refusals[i].principal, "");
    EXPECT_EQ(seen_.refusals[i].count, 1u);
  }
  // Gone before a ClientHello.
  { UniqueFd c = connect_to(sock_); }
  ASSERT_TRUE(wait_refusals(cases.size() + 1));
  EXPECT_EQ(reasons().back(), "closed before a complete ClientHello");
  EXPECT_TRUE(seen_.handed.empty());
}

TEST_F(GateTest, SlowClientsTimeOutAndTheOldestMakesRoom) {
  start(GateLimits{500ms, 3});
  std::vector<UniqueFd> idle;
  for (int i = 0; i < 3; ++i) {
    idle.push_back(connect_to(sock_));
    std::this_thread::sleep_for(20ms);  // a known order of age
  }
  // A fourth: the first (oldest) is closed for it.
  idle.push_back(connect_to(sock_));
  EXPECT_TRUE(closed_by_peer(idle[0].get(), 400ms));
  ASSERT_TRUE(wait_refusals(1, 400ms));
  EXPECT_EQ(reasons()[0], "closed to make room: 3 connections were waiting for their ClientHello");
  // The others run out of time: the first of them on record at once, the other two
  // counted (same peer, same reason) and written by flush().
  for (size_t i = 1; i < idle.size(); ++i) EXPECT_TRUE(closed_by_peer(idle[i].get(), 2s)) << i;
  ASSERT_TRUE(wait_refusals(2));
  EXPECT_EQ(reasons()[1], "no complete ClientHello within 0.5 s");
  gate_->stop();
  agg_.flush();
  std::lock_guard lock(seen_.mu);
  ASSERT_EQ(seen_.refusals.size(), 3u);
  EXPECT_EQ(seen_.refusals[2].reason, "no complete ClientHello within 0.5 s");
  EXPECT_EQ(seen_.refusals[2].count, 2u);
}

TEST_F(GateTest, StoppingRefusesWhatStillWaits) {
  start();
  UniqueFd c = connect_to(sock_);
  std::this_thread::sleep_for(100ms);
  gate_->stop();
  EXPECT_TRUE(closed_by_peer(c.get(), 1s));
  ASSERT_TRUE(wait_refusals(1));
  EXPECT_EQ(reasons()[0], "controller stopping");
}

TEST(Gate, ListenErrorsNameTheEndpoint) {
  TempDir dir;
  auto p = pki::HostPki::open_or_create(dir / "pki");
  ASSERT_TRUE(p.ok());
  RefusalAggregator agg([](const Refusal&) {}, 60s, 4);
  auto g = Gate::listen("unix:" + (dir / "no-such-dir/api.sock"), *p, agg);
  ASSERT_FALSE(g.ok());
  EXPECT_NE(g.error().message().find("no-such-dir/api.sock"), std::string::npos) << g.error().message();
  g = Gate::listen("256.1.1.1:1", *p, agg);
  ASSERT_FALSE(g.ok());
  EXPECT_NE(g.error().message().find("256.1.1.1:1"), std::string::npos) << g.error().message();
}

}  // namespace
}  // namespace azote::controller
