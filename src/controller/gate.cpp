#include "controller/gate.hpp"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>

#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/slice.h>

#include "base/log.hpp"
#include "pki/ossl.hpp"

namespace azote::controller {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr size_t kMaxHelloBytes = 64 * 1024;  // a ClientHello is a few hundred bytes to a few KiB
constexpr auto kAcceptPause = 100ms;  // after accept() ran out of fds or memory
// What gRPC's TLS server allows (TlsServerCredentialsOptions' defaults, and
// GRPC_SSL_CIPHER_SUITES' default for TLS 1.2), so that what passes here is what gRPC
// would accept, as far as the ClientHello shows.
constexpr const char* kTls12Ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-RSA-AES256-GCM-SHA384";

using SslCtxPtr = std::unique_ptr<SSL_CTX, pki::ossl::Free<SSL_CTX_free>>;
using SslPtr = std::unique_ptr<SSL, pki::ossl::Free<SSL_free>>;

// What OpenSSL's callbacks learnt about one connection's ClientHello.
struct Verdict {
  bool hello_parsed = false;
  enum Alpn { kUndecided, kH2, kNoAlpn, kNoH2 } alpn = kUndecided;
};

Verdict* verdict_of(SSL* ssl) { return static_cast<Verdict*>(SSL_get_app_data(ssl)); }

// OpenSSL parsed a ClientHello (nothing negotiated yet). No ALPN at all: refuse now,
// with the alert TLS has for it.
int on_client_hello(SSL* ssl, int* alert, void* /*arg*/) {
  Verdict* v = verdict_of(ssl);
  v->hello_parsed = true;
  const unsigned char* ext = nullptr;
  size_t len = 0;
  if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_application_layer_protocol_negotiation, &ext, &len) != 1) {
    v->alpn = Verdict::kNoAlpn;
    *alert = SSL_AD_NO_APPLICATION_PROTOCOL;
    return SSL_CLIENT_HELLO_ERROR;
  }
  return SSL_CLIENT_HELLO_SUCCESS;
}

// OpenSSL got as far as ALPN (TLS 1.3: after version and cipher suite; TLS 1.2: also
// after the cipher and the signature algorithm for our certificate): h2 or not decides.
// Either way the throw-away handshake stops here; the real one is gRPC's.
int on_alpn(SSL* ssl, const unsigned char** /*out*/, unsigned char* /*outlen*/, const unsigned char* in,
            unsigned int inlen, void* /*arg*/) {
  static const unsigned char kH2[] = {2, 'h', '2'};
  unsigned char* selected = nullptr;
  unsigned char selected_len = 0;
  const int r = SSL_select_next_proto(&selected, &selected_len, kH2, sizeof kH2, in, inlen);
  verdict_of(ssl)->alpn = r == OPENSSL_NPN_NEGOTIATED ? Verdict::kH2 : Verdict::kNoH2;
  return SSL_TLSEXT_ERR_ALERT_FATAL;
}

Result<SslCtxPtr, GateError> make_ssl_ctx(const pki::HostPki& pki) {
  auto tls_error = [](const std::string& what) {
    return make_error(GateErrc::kTls, what + ": " + pki::ossl::take_errors());
  };
  SslCtxPtr ctx(SSL_CTX_new(TLS_server_method()));
  if (!ctx) return tls_error("SSL_CTX_new");
  if (SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION) != 1 ||
      SSL_CTX_set_max_proto_version(ctx.get(), TLS1_3_VERSION) != 1 ||
      SSL_CTX_set_cipher_list(ctx.get(), kTls12Ciphers) != 1)
    return tls_error("TLS versions and ciphers");
  pki::ossl::X509Ptr cert = pki::ossl::parse_cert(pki.server_cert_pem());
  pki::ossl::BioPtr key_bio = pki::ossl::mem_bio(pki.server_key_pem());
  pki::ossl::PkeyPtr key(key_bio ? PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr) : nullptr);
  if (!cert || !key || SSL_CTX_use_certificate(ctx.get(), cert.get()) != 1 ||
      SSL_CTX_use_PrivateKey(ctx.get(), key.get()) != 1 || SSL_CTX_check_private_key(ctx.get()) != 1)
    return tls_error("server certificate");
  SSL_CTX_set_session_cache_mode(ctx.get(), SSL_SESS_CACHE_OFF);
  SSL_CTX_set_options(ctx.get(), SSL_OP_NO_TICKET);
  SSL_CTX_set_client_hello_cb(ctx.get(), on_client_hello, nullptr);
  SSL_CTX_set_alpn_select_cb(ctx.get(), on_alpn, nullptr);
  return ctx;
}

// "tcp:ADDRESS" (an IPv4-mapped address as IPv4), "unix:uid=N".
std::string peer_of(int fd, const sockaddr_storage& ss) {
  char buf[INET6_ADDRSTRLEN] = {};
  switch (ss.ss_family) {
    case AF_INET: {
      const auto& a = reinterpret_cast<const sockaddr_in&>(ss);
      return std::string("tcp:") + (inet_ntop(AF_INET, &a.sin_addr, buf, sizeof buf) ? buf : "?");
    }
    case AF_INET6: {
      const auto& a = reinterpret_cast<const sockaddr_in6&>(ss);
      if (IN6_IS_ADDR_V4MAPPED(&a.sin6_addr))
        return std::string("tcp:") + (inet_ntop(AF_INET, &a.sin6_addr.s6_addr[12], buf, sizeof buf) ? buf : "?");
      return std::string("tcp:") + (inet_ntop(AF_INET6, &a.sin6_addr, buf, sizeof buf) ? buf : "?");
    }
    case AF_UNIX: {
      ucred cred{};
      socklen_t len = sizeof cred;
      if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) return "unix:uid=" + std::to_string(cred.uid);
      return "unix";
    }
    default:
      return "";
  }
}

Result<std::vector<UniqueFd>, GateError> bind_unix(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof a.sun_path)
    return make_error(GateErrc::kListen, "unix socket path \"" + path + "\" must be 1-107 bytes");
  std::memcpy(a.sun_path, path.data(), path.size());
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) return make_error(GateErrc::kListen, "socket", errno);
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0 || ::listen(fd.get(), SOMAXCONN) != 0)
    return make_error(GateErrc::kListen, "listen on unix:" + path, errno);
  std::vector<UniqueFd> out;
  out.push_back(std::move(fd));
  return out;
}

// HOST:PORT, [IPV6]:PORT or :PORT (every address). Every address HOST resolves to
// gets a socket; with several, IPv6 sockets are IPv6-only so that they do not collide
// with the IPv4 ones.
Result<std::vector<UniqueFd>, GateError> bind_tcp(const std::string& endpoint) {
  const size_t colon = endpoint.rfind(':');
  if (colon == std::string::npos) return make_error(GateErrc::kListen, "\"" + endpoint + "\" is not HOST:PORT");
  std::string host = endpoint.substr(0, colon);
  const std::string port = endpoint.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  if (const int rc = ::getaddrinfo(host.empty() ? nullptr : host.c_str(), port.c_str(), &hints, &res); rc != 0)
    return make_error(GateErrc::kListen, "resolve " + endpoint + ": " + gai_strerror(rc));
  std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> owner(res, freeaddrinfo);
  const bool several = res->ai_next != nullptr;
  std::vector<UniqueFd> out;
  int last_errno = 0;
  for (const addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    UniqueFd fd(::socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd) {
      last_errno = errno;
      continue;
    }
    const int one = 1, v6only = several ? 1 : 0;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (ai->ai_family == AF_INET6) ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof v6only);
    if (::bind(fd.get(), ai->ai_addr, ai->ai_addrlen) != 0 || ::listen(fd.get(), SOMAXCONN) != 0) {
      last_errno = errno;
      continue;
    }
    out.push_back(std::move(fd));
    if (port == "0") break;  // another address would get another port
  }
  if (out.empty()) return make_error(GateErrc::kListen, "listen on " + endpoint, last_errno);
  return out;
}

// "10", "0.5": a timeout in seconds for a reason.
std::string seconds(std::chrono::milliseconds ms) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", static_cast<double>(ms.count()) / 1000);
  return buf;
}

// One accepted connection waiting for its ClientHello.
struct Waiting {
  UniqueFd fd;
  int listener_fd = -1;
  std::string peer;
  Clock::time_point deadline;
  std::string bytes;  // everything read: handed to gRPC with the connection
  SslPtr ssl;         // the throw-away TLS server over memory BIOs
  Verdict verdict;
};

}  // namespace

struct Gate::Impl {
  Impl(RefusalAggregator& r, SslCtxPtr c, GateLimits l) : refusals(r), ctx(std::move(c)), limits(l) {}

  RefusalAggregator& refusals;
  SslCtxPtr ctx;
  const GateLimits limits;
  std::vector<UniqueFd> listeners;
  UniqueFd epoll, wake;
  std::unique_ptr<grpc::experimental::ExternalConnectionAcceptor> acceptor;
  std::thread thread;
  std::atomic<bool> stopping{false};
  std::map<int, std::unique_ptr<Waiting>> waiting;  // by fd
  bool paused = false;
  Clock::time_point resume_at;

  void run();
  void set_listeners(uint32_t events);
  void accept_all(int listener);
  void readable(Waiting& w);
  enum class Step { kMore, kPass, kRefuse };
  Step feed(Waiting& w, const char* data, size_t n, std::string* why);
  void hand_over(int fd);
  void refuse(int fd, const std::string& why);
};

void Gate::Impl::set_listeners(uint32_t events) {
  for (const auto& l : listeners) {
    epoll_event ev{};
    ev.events = events;
    ev.data.fd = l.get();
    ::epoll_ctl(epoll.get(), EPOLL_CTL_MOD, l.get(), &ev);
  }
}

void Gate::Impl::accept_all(int listener) {
  for (;;) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    UniqueFd fd(::accept4(listener, reinterpret_cast<sockaddr*>(&ss), &len, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!fd) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      // Out of fds or memory: the connection stays queued and the listener readable;
      // stop polling it for a moment rather than spin.
      LOG_WARN("controller: accept: %s; not accepting for %lld ms", std::strerror(errno),
               static_cast<long long>(kAcceptPause.count()));
      set_listeners(0);
      paused = true;
      resume_at = Clock::now() + kAcceptPause;
      return;
    }
    std::string peer = peer_of(fd.get(), ss);
    if (waiting.size() >= limits.max_waiting) {
      // Make room by closing the connection that has waited longest: an honest client
      // sends its ClientHello at once, so under pressure the oldest are those that
      // hold a slot and send nothing (slowloris), not the newcomer.
      const auto oldest = std::min_element(waiting.begin(), waiting.end(), [](const auto& a, const auto& b) {
        return a.second->deadline < b.second->deadline;
      });
      refuse(oldest->first, "closed to make room: " + std::to_string(limits.max_waiting) +
                                " connections were waiting for their ClientHello");
    }
    if (ss.ss_family == AF_INET || ss.ss_family == AF_INET6) {
      const int one = 1;
      ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  // as gRPC does
    }
    auto w = std::make_unique<Waiting>();
    w->listener_fd = listener;
    w->peer = std::move(peer);
    w->deadline = Clock::now() + limits.hello_timeout;
    w->ssl.reset(SSL_new(ctx.get()));
    BIO* rbio = BIO_new(BIO_s_mem());
    BIO* wbio = BIO_new(BIO_s_mem());
    if (!w->ssl || rbio == nullptr || wbio == nullptr) {
      BIO_free(rbio);
      BIO_free(wbio);
      LOG_ERROR("controller: cannot screen a connection: %s", pki::ossl::take_errors().c_str());
      refusals.refused("", w->peer, "internal error (out of memory)");
      continue;
    }
    SSL_set_bio(w->ssl.get(), rbio, wbio);  // the SSL owns both now
    SSL_set_accept_state(w->ssl.get());
    SSL_set_app_data(w->ssl.get(), &w->verdict);
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.fd = fd.get();
    if (::epoll_ctl(epoll.get(), EPOLL_CTL_ADD, fd.get(), &ev) != 0) {
      LOG_ERROR("controller: epoll_ctl: %s", std::strerror(errno));
      refusals.refused("", w->peer, "internal error (epoll)");
      continue;
    }
    const int key = fd.get();
    w->fd = std::move(fd);
    waiting.emplace(key, std::move(w));
  }
}

Gate::Impl::Step Gate::Impl::feed(Waiting& w, const char* data, size_t n, std::string* why) {
  ERR_clear_error();
  if (BIO_write(SSL_get_rbio(w.ssl.get()), data, static_cast<int>(n)) != static_cast<int>(n)) {
    *why = "internal error (out of memory)";
    return Step::kRefuse;
  }
  const int r = SSL_do_handshake(w.ssl.get());
  switch (w.verdict.alpn) {
    case Verdict::kH2:
      return Step::kPass;
    case Verdict::kNoAlpn:
      *why = "no ALPN h2 (the client offered no ALPN)";
      return Step::kRefuse;
    case Verdict::kNoH2:
      *why = "no ALPN h2 (the client offered only other protocols)";
      return Step::kRefuse;
    case Verdict::kUndecided:
      break;
  }
  if (r == 1) return Step::kPass;  // cannot happen (on_alpn stops every handshake); acceptable if it did
  if (SSL_get_error(w.ssl.get(), r) == SSL_ERROR_WANT_READ) {
    // OpenSSL answered without reaching ALPN (a HelloRetryRequest): nothing more can
    // be judged from this side; gRPC does the real retry.
    if (BIO_ctrl_pending(SSL_get_wbio(w.ssl.get())) > 0) return Step::kPass;
    return Step::kMore;
  }
  const unsigned long e = ERR_peek_last_error();
  const char* reason = e != 0 ? ERR_reason_error_string(e) : nullptr;
  const std::string what = reason != nullptr ? reason : "unknown error";
  *why = w.verdict.hello_parsed ? "TLS handshake refused (" + what + ")" : "not TLS (" + what + ")";
  ERR_clear_error();
  return Step::kRefuse;
}

void Gate::Impl::readable(Waiting& w) {
  const int fd = w.fd.get();
  char buf[16 * 1024];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    if (n <= 0) return refuse(fd, "closed before a complete ClientHello");
    if (w.bytes.size() + static_cast<size_t>(n) > kMaxHelloBytes)
      return refuse(fd, "ClientHello larger than " + std::to_string(kMaxHelloBytes / 1024) + " KiB");
    w.bytes.append(buf, static_cast<size_t>(n));
    std::string why;
    switch (feed(w, buf, static_cast<size_t>(n), &why)) {
      case Step::kMore: continue;
      case Step::kPass: return hand_over(fd);
      case Step::kRefuse: return refuse(fd, why);
    }
  }
}

void Gate::Impl::hand_over(int fd) {
  auto it = waiting.find(fd);
  if (it == waiting.end()) return;
  std::unique_ptr<Waiting> w = std::move(it->second);
  waiting.erase(it);
  ::epoll_ctl(epoll.get(), EPOLL_CTL_DEL, fd, nullptr);
  grpc::experimental::ExternalConnectionAcceptor::NewConnectionParameters p;
  p.listener_fd = w->listener_fd;
  p.fd = w->fd.release();  // gRPC's from here on
  grpc::Slice bytes(w->bytes.data(), w->bytes.size());
  p.read_buffer = grpc::ByteBuffer(&bytes, 1);
  acceptor->HandleNewConnection(&p);
}

void Gate::Impl::refuse(int fd, const std::string& why) {
  auto it = waiting.find(fd);
  if (it == waiting.end()) return;
  std::unique_ptr<Waiting> w = std::move(it->second);
  waiting.erase(it);
  ::epoll_ctl(epoll.get(), EPOLL_CTL_DEL, fd, nullptr);
  // Whatever OpenSSL answered (an alert, e.g. no_application_protocol) tells an
  // honest client why; best effort, never waited for.
  char out[512];
  const int n = BIO_read(SSL_get_wbio(w->ssl.get()), out, sizeof out);
  if (n > 0) (void)!::send(fd, out, static_cast<size_t>(n), MSG_NOSIGNAL | MSG_DONTWAIT);
  w->fd.reset();
  refusals.refused("", w->peer, why);
}

void Gate::Impl::run() {
  epoll_event events[64];
  while (!stopping.load()) {
    const auto now = Clock::now();
    auto next = now + 1s;  // the aggregator's tick
    for (const auto& [fd, w] : waiting) next = std::min(next, w->deadline);
    if (paused) next = std::min(next, resume_at);
    const auto wait_ms = std::chrono::duration_cast<std::chrono::milliseconds>(next - now).count();
    const int n = ::epoll_wait(epoll.get(), events, 64, static_cast<int>(std::max<int64_t>(0, wait_ms) + 1));
    if (n < 0 && errno != EINTR) {
      LOG_ERROR("controller: epoll_wait: %s", std::strerror(errno));
      std::this_thread::sleep_for(10ms);
    }
    for (int i = 0; i < n; ++i) {
      const int fd = events[i].data.fd;
      if (fd == wake.get()) continue;
      if (std::any_of(listeners.begin(), listeners.end(), [&](const UniqueFd& l) { return l.get() == fd; })) {
        accept_all(fd);
        continue;
      }
      if (auto it = waiting.find(fd); it != waiting.end()) readable(*it->second);
    }
    const auto after = Clock::now();
    std::vector<int> late;
    for (const auto& [fd, w] : waiting)
      if (w->deadline <= after) late.push_back(fd);
    for (int fd : late) refuse(fd, "no complete ClientHello within " + seconds(limits.hello_timeout) + " s");
    if (paused && after >= resume_at) {
      paused = false;
      set_listeners(EPOLLIN);
    }
    refusals.tick(after);
  }
  listeners.clear();
  std::vector<int> left;
  for (const auto& [fd, w] : waiting) left.push_back(fd);
  for (int fd : left) refuse(fd, "controller stopping");
}

Gate::Gate(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Gate::~Gate() { stop(); }

Result<std::unique_ptr<Gate>, GateError> Gate::listen(const std::string& endpoint, const pki::HostPki& pki,
                                                      RefusalAggregator& refusals, GateLimits limits) {
  AZOTE_TRY(ctx, make_ssl_ctx(pki));
  auto impl = std::make_unique<Impl>(refusals, std::move(ctx), limits);
  if (endpoint.rfind("unix:", 0) == 0) {
    AZOTE_TRY(l, bind_unix(endpoint.substr(5)));
    impl->listeners = std::move(l);
  } else {
    AZOTE_TRY(l, bind_tcp(endpoint));
    impl->listeners = std::move(l);
  }
  impl->epoll.reset(::epoll_create1(EPOLL_CLOEXEC));
  impl->wake.reset(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!impl->epoll || !impl->wake) return make_error(GateErrc::kListen, "epoll", errno);
  std::vector<int> fds{impl->wake.get()};
  for (const auto& l : impl->listeners) fds.push_back(l.get());
  for (int fd : fds) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    if (::epoll_ctl(impl->epoll.get(), EPOLL_CTL_ADD, fd, &ev) != 0) return make_error(GateErrc::kListen, "epoll_ctl", errno);
  }
  return std::unique_ptr<Gate>(new Gate(std::move(impl)));
}

void Gate::start(std::unique_ptr<grpc::experimental::ExternalConnectionAcceptor> acceptor) {
  if (impl_->thread.joinable()) return;
  impl_->acceptor = std::move(acceptor);
  impl_->thread = std::thread([this] { impl_->run(); });
}

void Gate::stop() {
  if (!impl_ || !impl_->thread.joinable()) return;
  impl_->stopping.store(true);
  const uint64_t one = 1;
  (void)!::write(impl_->wake.get(), &one, sizeof one);
  impl_->thread.join();
}

}  // namespace azote::controller
