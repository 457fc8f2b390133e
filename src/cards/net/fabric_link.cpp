#include "cards/net/fabric_link.hpp"

#include "runtime/runtime.hpp"

#include <arpa/inet.h>
#include <sys/epoll.h>

#include "cards/net/inbox.hpp"
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace azote::card_net {
namespace {

constexpr size_t kBatchMax = 64;    // frames per send() (the Switch hands at most a batch)
constexpr unsigned kRecvBatch = 32;  // datagrams per recvmmsg()
constexpr size_t kRxBuf = 2048;     // > kUnderlayDatagram: a longer datagram is truncated, refused

sockaddr_in to_sockaddr(const Endpoint& e) {
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(e.port);
  sa.sin_addr.s_addr = htonl(e.addr.value());
  return sa;
}

// Per sending thread: sealed datagrams of one batch and their sendmmsg() headers.
struct TxScratch {
  std::array<std::array<uint8_t, kUnderlayDatagram>, kBatchMax> buf;
  std::array<mmsghdr, kBatchMax> msg;
  std::array<iovec, kBatchMax> iov;
  std::array<sockaddr_in, kBatchMax> to;
  std::array<fabric::HostId, kBatchMax> host;
  std::array<const RemoteFrame*, kBatchMax> from;
};

// A frame the fabric did not take: counted at its ENI, or where a relayed frame counts.
void failed(const RemoteFrame& f) {
  if (f.from != nullptr) f.from->counters().drop(Drop::kFabricError);
  else if (f.errors != nullptr) f.errors->fetch_add(1, std::memory_order_relaxed);
}

}  // namespace

FabricLink::FabricLink(Switch& sw, const rate_limit::Clock& clock, fabric::HostId self, const Endpoint& underlay)
    : sw_(sw), self_(self), underlay_(underlay), session_(self, clock) {}

Result<void, LinkError> check_underlay_socket(int fd, const Endpoint& underlay, const std::string& what) {
  int domain = 0, type = 0;
  socklen_t len = sizeof domain;
  if (::getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0)
    return make_error(LinkErrc::kConfig, what + " does not name an open socket", errno);
  len = sizeof type;
  if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0)
    return make_error(LinkErrc::kConfig, what + ": SO_TYPE", errno);
  if (domain != AF_INET || type != SOCK_DGRAM)
    return make_error(LinkErrc::kConfig, what + " is not an IPv4 UDP socket (domain " + std::to_string(domain) + ", type " +
                                             std::to_string(type) + "; expected AF_INET " + std::to_string(AF_INET) +
                                             ", SOCK_DGRAM " + std::to_string(SOCK_DGRAM) + ")");
  sockaddr_in sa{};
  len = sizeof sa;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len) != 0)  // NOLINT
    return make_error(LinkErrc::kConfig, what + ": getsockname", errno);
  const Endpoint bound{net::Ipv4Address::from_u32(ntohl(sa.sin_addr.s_addr)), ntohs(sa.sin_port)};
  if (bound.port == 0) return make_error(LinkErrc::kConfig, what + " is not bound (--underlay " + underlay.to_string() + " expected)");
  if (bound.addr != underlay.addr || bound.port != underlay.port)
    return make_error(LinkErrc::kConfig, what + " is bound to " + bound.to_string() + ", not to --underlay " + underlay.to_string());
  return {};
}

Result<std::unique_ptr<FabricLink>, LinkError> FabricLink::start(Switch& sw, const rate_limit::Clock& clock,
                                                                 fabric::HostId self, const Endpoint& underlay,
                                                                 UniqueFd bound) {
  std::unique_ptr<FabricLink> l(new FabricLink(sw, clock, self, underlay));
  const bool given = static_cast<bool>(bound);
  if (given) {
    const std::string what = "--underlay-fd " + std::to_string(bound.get());
    AZOTE_TRYV(check_underlay_socket(bound.get(), underlay, what));
    l->socket_ = std::move(bound);
  } else {
    l->socket_ = UniqueFd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  }
  l->stop_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  l->epoll_ = UniqueFd(::epoll_create1(EPOLL_CLOEXEC));
  if (!l->socket_ || !l->stop_ || !l->epoll_) return make_error(LinkErrc::kHost, "fabric: socket/eventfd/epoll", errno);
  // Never fragment: a datagram over the underlay's MTU fails with EMSGSIZE (counted as a
  // send error and logged) instead of travelling as IP fragments.
  const int pmtu = IP_PMTUDISC_DO;
  (void)::setsockopt(l->socket_.get(), IPPROTO_IP, IP_MTU_DISCOVER, &pmtu, sizeof pmtu);
  // 4 MiB to receive into (the kernel caps it at net.core.rmem_max). A socket handed over
  // may have more already (the launcher forces 4 MiB past rmem_max): never lowered.
  const int rcvbuf = 4 << 20;
  int have = 0;
  socklen_t have_len = sizeof have;
  if (!given || ::getsockopt(l->socket_.get(), SOL_SOCKET, SO_RCVBUF, &have, &have_len) != 0 || have < 2 * rcvbuf)
    (void)::setsockopt(l->socket_.get(), SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  const sockaddr_in sa = to_sockaddr(underlay);
  if (!given && ::bind(l->socket_.get(), reinterpret_cast<const sockaddr*>(&sa), sizeof sa) != 0)  // NOLINT
    return make_error(LinkErrc::kHost, "--underlay " + underlay.to_string() + ": bind", errno);
  for (auto [fd, tag] : {std::pair{l->socket_.get(), 0}, std::pair{l->stop_.get(), 1}}) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = static_cast<uint64_t>(tag);
    if (::epoll_ctl(l->epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0)
      return make_error(LinkErrc::kHost, "fabric: epoll_ctl", errno);
  }
  l->thread_ = std::thread([p = l.get()] {
    if (runtime::enter_thread_class("fabric", "fabric")) p->run();
  });
  LOG_INFO("fabric: host %u on udp %s%s (underlay MTU needed: %zu)", self, underlay.to_string().c_str(),
           given ? " (a socket bound by the launcher)" : "", kUnderlayMtu);
  return l;
}

FabricLink::~FabricLink() {
  if (relay_) unlink_inbox(relay_path_, relay_dev_, relay_ino_);
  if (thread_.joinable()) {
    const uint64_t one = 1;
    (void)!::write(stop_.get(), &one, sizeof one);
    thread_.join();
  }
}

Result<void, LinkError> FabricLink::set_peer(const FabricPeerSpec& p) {
  const std::string w = p.origin.empty() ? "peer " + std::to_string(p.host) : p.origin;
  if (p.host == self_) return make_error(LinkErrc::kConfig, w + ": host " + std::to_string(p.host) + " is this host");
  if (p.address.addr == underlay_.addr && p.address.port == underlay_.port)
    return make_error(LinkErrc::kConfig, w + ": address " + p.address.to_string() + " is this card's underlay");
  if (auto r = session_.set_peer(p.host, p.key); !r) return make_error(LinkErrc::kConfig, w + ": " + r.error().message());
  std::unique_lock lock(mu_);
  auto& peer = peers_[p.host];
  if (!peer) peer = std::make_unique<Peer>();
  peer->address = p.address;
  peer->sa = to_sockaddr(p.address);
  LOG_INFO("fabric: peer %u at %s, key id %u, %s", p.host, p.address.to_string().c_str(), p.key.key_id,
           fabric::to_string(p.key.cipher));
  return {};
}

Result<void, LinkError> FabricLink::rotate(fabric::HostId host, const fabric::PeerKey& key) {
  if (auto r = session_.rotate(host, key); !r) return make_error(LinkErrc::kConfig, r.error().message());
  LOG_INFO("fabric: peer %u rotated to key id %u (%s)", host, key.key_id, fabric::to_string(key.cipher));
  return {};
}

bool FabricLink::has_peer(fabric::HostId host) const { return session_.has_peer(host); }

void FabricLink::tick() { session_.expire(); }

void FabricLink::send(std::span<const RemoteFrame> frames) {
  thread_local std::unique_ptr<TxScratch> scratch;  // once per worker thread
  if (!scratch) scratch = std::make_unique<TxScratch>();
  TxScratch& t = *scratch;
  size_t n = 0;
  {
    std::shared_lock lock(mu_);
    for (const RemoteFrame& f : frames) {
      if (n == kBatchMax) {
        failed(f);
        continue;
      }
      auto it = peers_.find(f.host);
      if (it == peers_.end()) {
        send_unknown_peer_.fetch_add(1, std::memory_order_relaxed);
        failed(f);
        continue;
      }
      auto len = session_.seal(f.host, f.vni, f.frame, t.buf[n]);  // counted by the session on failure
      if (!len) {
        failed(f);
        if (log_limit_.allow())
          LOG_WARN("fabric: cannot seal for host %u: %s", f.host, len.error().message().c_str());
        continue;
      }
      t.to[n] = it->second->sa;
      t.iov[n] = iovec{t.buf[n].data(), *len};
      t.msg[n] = mmsghdr{};
      t.msg[n].msg_hdr.msg_name = &t.to[n];
      t.msg[n].msg_hdr.msg_namelen = sizeof(sockaddr_in);
      t.msg[n].msg_hdr.msg_iov = &t.iov[n];
      t.msg[n].msg_hdr.msg_iovlen = 1;
      t.host[n] = f.host;
      t.from[n] = &f;
      ++n;
    }
  }
  size_t done = 0;
  while (done < n) {
    const int r = ::sendmmsg(socket_.get(), t.msg.data() + done, static_cast<unsigned>(n - done), 0);
    if (r > 0) {
      done += static_cast<size_t>(r);
      continue;
    }
    if (r < 0 && errno == EINTR) continue;
    // The first datagram failed: count it, go on with the rest (a wire loses frames).
    const int e = errno;
    failed(*t.from[done]);
    {
      std::shared_lock lock(mu_);
      if (auto it = peers_.find(t.host[done]); it != peers_.end())
        it->second->send_errors.fetch_add(1, std::memory_order_relaxed);
    }
    if (log_limit_.allow())
      LOG_WARN("fabric: send to host %u: %s%s", t.host[done], std::strerror(e),
               e == EMSGSIZE ? " (the underlay's MTU must be at least 1586)" : "");
    ++done;
  }
}

void FabricLink::run() {
  struct Rx {
    std::array<std::array<uint8_t, kRxBuf>, kRecvBatch> buf;
    std::array<mmsghdr, kRecvBatch> msg;
    std::array<iovec, kRecvBatch> iov;
    std::array<sockaddr_in, kRecvBatch> from;
    std::array<uint8_t, kRxBuf> plain;
  };
  auto rx = std::make_unique<Rx>();  // once, for the thread's life
  for (;;) {
    epoll_event ev[3];
    const int n = ::epoll_wait(epoll_.get(), ev, 3, -1);
    if (n < 0 && errno != EINTR) {
      LOG_ERROR("fabric: epoll_wait: %s", std::strerror(errno));
      return;
    }
    bool readable = false;
    for (int i = 0; i < n; ++i) {
      if (ev[i].data.u64 == 1) return;
      if (ev[i].data.u64 == 2) serve_relay_once();
      else readable = true;
    }
    while (readable) {
      for (unsigned i = 0; i < kRecvBatch; ++i) {
        rx->iov[i] = iovec{rx->buf[i].data(), rx->buf[i].size()};
        rx->msg[i] = mmsghdr{};
        rx->msg[i].msg_hdr.msg_iov = &rx->iov[i];
        rx->msg[i].msg_hdr.msg_iovlen = 1;
        rx->msg[i].msg_hdr.msg_name = &rx->from[i];
        rx->msg[i].msg_hdr.msg_namelen = sizeof(sockaddr_in);
      }
      const int got = ::recvmmsg(socket_.get(), rx->msg.data(), kRecvBatch, MSG_DONTWAIT, nullptr);
      if (got < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && log_limit_.allow())
          LOG_WARN("fabric: recvmmsg: %s", std::strerror(errno));
        break;
      }
      for (int i = 0; i < got; ++i) {
        const mmsghdr& m = rx->msg[static_cast<size_t>(i)];
        if ((m.msg_hdr.msg_flags & MSG_TRUNC) != 0) {
          truncated_.fetch_add(1, std::memory_order_relaxed);
          continue;
        }
        const std::span<const uint8_t> dgram(rx->buf[static_cast<size_t>(i)].data(), m.msg_len);
        auto o = session_.open(dgram, rx->plain);  // refusals are counted by the session
        if (!o) {
          if (log_limit_.allow()) {
            char addr[INET_ADDRSTRLEN] = "?";
            ::inet_ntop(AF_INET, &rx->from[static_cast<size_t>(i)].sin_addr, addr, sizeof addr);
            LOG_WARN("fabric: refused a datagram from %s: %s (%s)", addr, fabric::to_string(o.error().code),
                     o.error().message().c_str());
          }
          continue;
        }
        const RemoteVerdict v = sw_.receive_remote(o->from, o->vni, std::span(rx->plain.data(), o->len));
        std::shared_lock lock(mu_);
        if (auto it = peers_.find(o->from); it != peers_.end())
          it->second->verdicts[static_cast<size_t>(v)].fetch_add(1, std::memory_order_relaxed);
      }
      if (static_cast<unsigned>(got) < kRecvBatch) break;
    }
  }
}

Result<void, LinkError> FabricLink::serve_relay(const std::string& inbox) {
  if (relay_) return make_error(LinkErrc::kConfig, "fabric: the relay inbox is set already");
  auto s = bind_inbox(inbox, &relay_dev_, &relay_ino_);
  if (!s) return make_error(LinkErrc::kHost, "fabric: relay inbox " + inbox + ": " + s.error().message());
  relay_ = std::move(s).value();
  relay_path_ = inbox;
  relay_batch_ = std::make_unique<InboxBatch>();
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = 2;
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, relay_.get(), &ev) != 0)
    return make_error(LinkErrc::kHost, "fabric: epoll_ctl", errno);
  LOG_INFO("fabric: relaying for the instances' cards of this host from %s", inbox.c_str());
  return {};
}

void FabricLink::serve_relay_once() {
  const size_t n = relay_batch_->receive(relay_.get());
  for (size_t i = 0; i < n; ++i) {
    const auto uid = relay_batch_->uid(i);
    if (!uid) {
      relay_no_credentials_.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    (void)sw_.relay_out(*uid, relay_batch_->frame(i));
  }
}

nlohmann::json FabricLink::describe() const {
  nlohmann::json peers = nlohmann::json::array();
  std::shared_lock lock(mu_);
  for (const auto& s : session_.status()) {
    auto it = peers_.find(s.host);
    nlohmann::json p{{"host", s.host},
                     {"address", it != peers_.end() ? it->second->address.to_string() : ""},
                     {"cipher", fabric::to_string(s.cipher)},
                     {"key_id", s.key_id},
                     {"previous_key_id", s.previous_key_id ? nlohmann::json(*s.previous_key_id) : nlohmann::json()},
                     {"previous_grace_ms", std::chrono::duration_cast<std::chrono::milliseconds>(s.previous_remaining).count()},
                     {"sealed_with_key", s.sealed},
                     {"key_remaining", s.remaining},
                     {"tx_packets", s.tx_packets},
                     {"tx_bytes", s.tx_bytes},
                     {"rx_packets", s.rx_packets},
                     {"rx_bytes", s.rx_bytes},
                     {"auth_failures", s.errors[static_cast<size_t>(fabric::FabricErrc::kAuth)]},
                     {"replays", s.errors[static_cast<size_t>(fabric::FabricErrc::kReplay)]},
                     {"too_old", s.errors[static_cast<size_t>(fabric::FabricErrc::kTooOld)]},
                     {"unknown_key", s.errors[static_cast<size_t>(fabric::FabricErrc::kUnknownKey)]},
                     {"plaintext_refused", s.errors[static_cast<size_t>(fabric::FabricErrc::kPlaintextRefused)]},
                     {"sequence_exhausted", s.errors[static_cast<size_t>(fabric::FabricErrc::kSeqExhausted)]},
                     {"send_errors", it != peers_.end() ? it->second->send_errors.load() : 0}};
    nlohmann::json rx = nlohmann::json::object();
    if (it != peers_.end())
      for (size_t v = 0; v < kRemoteVerdictCount; ++v)
        rx[to_string(static_cast<RemoteVerdict>(v))] = it->second->verdicts[v].load();
    p["received"] = rx;
    peers.push_back(std::move(p));
  }
  nlohmann::json refused = nlohmann::json::object();
  uint64_t malformed = 0;
  for (size_t c = 1; c < fabric::kFabricErrcCount; ++c) {
    const uint64_t v = session_.unattributed(static_cast<fabric::FabricErrc>(c));
    if (v == 0) continue;
    refused[fabric::to_string(static_cast<fabric::FabricErrc>(c))] = v;
    if (static_cast<fabric::FabricErrc>(c) != fabric::FabricErrc::kUnknownPeer) malformed += v;
  }
  return {{"host_id", self_},
          {"underlay", underlay_.to_string()},
          {"peers", std::move(peers)},
          {"unknown_peer", session_.unattributed(fabric::FabricErrc::kUnknownPeer)},
          {"malformed", malformed + truncated_.load()},
          {"refused_before_peer", std::move(refused)},
          {"send_unknown_peer", send_unknown_peer_.load()}};
}

}  // namespace azote::card_net
