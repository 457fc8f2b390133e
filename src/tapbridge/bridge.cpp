#include "tapbridge/bridge.hpp"

#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "base/eventfd.hpp"
#include "virtio/shared_memory.hpp"
#include "virtio/net.hpp"
#include "virtio/spec.hpp"

namespace azote::tapbridge {
namespace {

using virtio::feature_bit;

using virtio::kNetFMac;
using virtio::kNetFMtu;
using virtio::kNetFStatus;
using virtio::kNetSLinkUp;
using virtio::kRxQueue;
using virtio::kTxQueue;
constexpr uint32_t kConfigMacOffset = virtio::kNetConfigMacOffset, kConfigStatusOffset = virtio::kNetConfigStatusOffset,
                   kConfigMtuOffset = virtio::kNetConfigMtuOffset, kConfigBytes = virtio::kNetConfigBytes;
using NetHdr = virtio::virtio_net_hdr;

constexpr uint64_t kPage = 4096;
uint64_t page_up(uint64_t v) { return (v + kPage - 1) / kPage * kPage; }

// Epoll tags.
enum Tag : uint64_t { kTagTap = 1, kTagRxCall, kTagTxCall, kTagCard, kTagSignal, kTagTimer };

Unexpected<BridgeError> card_error(std::string s) { return make_error(BridgeErrc::kCard, std::move(s)); }
Unexpected<BridgeError> host_error(std::string s) { return make_error(BridgeErrc::kHost, std::move(s), errno); }

}  // namespace

Bridge::~Bridge() = default;

std::string Bridge::mac_text() const {
  char s[18];
  std::snprintf(s, sizeof s, "%02x:%02x:%02x:%02x:%02x:%02x", mac_[0], mac_[1], mac_[2], mac_[3], mac_[4], mac_[5]);
  return s;
}

Result<std::unique_ptr<Bridge>, BridgeError> Bridge::create(const BridgeOptions& options) {
  std::unique_ptr<Bridge> b(new Bridge());
  b->options_ = options;
  AZOTE_TRYV(b->negotiate());
  AZOTE_TRYV(b->create_tap());
  AZOTE_TRYV(b->setup_memory());
  AZOTE_TRYV(b->start_queues());
  AZOTE_TRYV(b->setup_loop());
  return b;
}

Result<void, BridgeError> Bridge::negotiate() {
  const std::string& sock = options_.socket;
  vhost_user::FrontendOptions fo;
  fo.timeout = std::chrono::milliseconds(5000);
  auto fe = vhost_user::Frontend::connect(sock, fo);
  if (!fe) return card_error("cannot reach the card at " + sock + ": " + fe.error().message());
  fe_.emplace(std::move(fe).value());

  const uint64_t offered = fe_->backend_features();
  if ((offered & feature_bit(virtio::kFVersion1)) == 0)
    return card_error("the card at " + sock + " does not offer VIRTIO_F_VERSION_1");
  if ((offered & feature_bit(kNetFMac)) == 0)
    return card_error("the card at " + sock + " does not offer VIRTIO_NET_F_MAC (the ENI's address)");
  if ((fe_->protocol_features() & vhost_user::bit(vhost_user::kPfConfig)) == 0)
    return card_error("the card at " + sock + " does not offer the CONFIG protocol feature (needed to read the MAC)");
  if (fe_->queue_num() != 0 && fe_->queue_num() < 2)
    return card_error("the card at " + sock + " offers " + std::to_string(fe_->queue_num()) +
                      " queue(s); virtio-net needs 2 (receive, transmit)");
  // What the bridge handles; no offloads, no MRG_RXBUF, no control queue, no indirect
  // descriptors (every chain is one buffer).
  const uint64_t handled = feature_bit(virtio::kFVersion1) | feature_bit(kNetFMac) | feature_bit(kNetFMtu) |
                           feature_bit(kNetFStatus) | feature_bit(virtio::kFRingEventIdx);
  features_ = offered & handled;
  if (auto r = fe_->set_features(features_); !r) return card_error("SET_FEATURES: " + r.error().message());
  constexpr uint8_t kFeaturesOk = virtio::kStatusAcknowledge | virtio::kStatusDriver | virtio::kStatusFeaturesOk;
  if (fe_->has_status()) {
    if (auto r = fe_->set_status(kFeaturesOk); !r) return card_error("SET_STATUS: " + r.error().message());
    // §3.1.1: the device may refuse the features by clearing FEATURES_OK.
    auto st = fe_->get_status();
    if (!st) return card_error("GET_STATUS: " + st.error().message());
    if ((*st & virtio::kStatusFeaturesOk) == 0)
      return card_error("the card refused the features " + std::to_string(features_) + " (FEATURES_OK cleared)");
  }

  const uint32_t want = (features_ & feature_bit(kNetFMtu)) != 0 ? kConfigBytes : kConfigMtuOffset;
  auto cfg = fe_->get_config(0, want);
  if (!cfg) return card_error("GET_CONFIG: " + cfg.error().message());
  if (cfg->size() != want)
    return card_error("GET_CONFIG returned " + std::to_string(cfg->size()) + " bytes, not " + std::to_string(want));
  std::memcpy(mac_.data(), cfg->data() + kConfigMacOffset, 6);
  if ((mac_[0] & 1) != 0 || (mac_[0] | mac_[1] | mac_[2] | mac_[3] | mac_[4] | mac_[5]) == 0)
    return card_error("the card's config space holds MAC " + mac_text() + ", not a unicast address");
  if ((features_ & feature_bit(kNetFStatus)) != 0) {
    uint16_t status = 0;
    std::memcpy(&status, cfg->data() + kConfigStatusOffset, 2);
    link_up_ = (status & kNetSLinkUp) != 0;
  }
  if ((features_ & feature_bit(kNetFMtu)) != 0) {
    uint16_t mtu = 0;
    std::memcpy(&mtu, cfg->data() + kConfigMtuOffset, 2);
    if (mtu < 68 || mtu > kMaxMtu)
      return card_error("the card's MTU " + std::to_string(mtu) + " is outside 68.." + std::to_string(kMaxMtu) +
                        " (what " + std::to_string(kBufferBytes) + "-byte buffers carry)");
    mtu_ = mtu;
  }
  LOG_INFO("card %s: features %#llx, protocol features %#llx, mac %s, mtu %u, link %s", sock.c_str(),
           static_cast<unsigned long long>(features_), static_cast<unsigned long long>(fe_->protocol_features()),
           mac_text().c_str(), mtu_, link_up_ ? "up" : "down");
  return {};
}

Result<void, BridgeError> Bridge::create_tap() {
  const std::string& name = options_.tap;
  auto tap_error = [&](const std::string& what) {
    return make_error(BridgeErrc::kTap, "TAP " + name + ": " + what, errno);
  };
  tap_ = UniqueFd(::open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC));
  if (!tap_) return tap_error("cannot open /dev/net/tun");
  ifreq ifr{};
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
  std::memcpy(ifr.ifr_name, name.data(), std::min<size_t>(name.size(), IFNAMSIZ - 1));
  if (::ioctl(tap_.get(), TUNSETIFF, &ifr) != 0) return tap_error("cannot create it (TUNSETIFF)");
  tap_name_.assign(ifr.ifr_name, strnlen(ifr.ifr_name, IFNAMSIZ));
  // No offloads: every frame read from the TAP is complete, checksums included.
  if (::ioctl(tap_.get(), TUNSETOFFLOAD, 0) != 0) return tap_error("cannot turn offloads off (TUNSETOFFLOAD)");

  UniqueFd sock(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!sock) return tap_error("socket for interface ioctls");
  ifreq req{};
  std::memcpy(req.ifr_name, tap_name_.data(), tap_name_.size());
  req.ifr_hwaddr.sa_family = ARPHRD_ETHER;
  std::memcpy(req.ifr_hwaddr.sa_data, mac_.data(), 6);
  if (::ioctl(sock.get(), SIOCSIFHWADDR, &req) != 0) return tap_error("cannot set MAC " + mac_text());
  req = ifreq{};
  std::memcpy(req.ifr_name, tap_name_.data(), tap_name_.size());
  req.ifr_mtu = static_cast<int>(mtu_);
  if (::ioctl(sock.get(), SIOCSIFMTU, &req) != 0) return tap_error("cannot set MTU " + std::to_string(mtu_));
  if (!link_up_ && ::ioctl(tap_.get(), TUNSETCARRIER, 0) != 0) LOG_WARN("TAP %s: cannot set carrier off", name.c_str());
  req = ifreq{};
  std::memcpy(req.ifr_name, tap_name_.data(), tap_name_.size());
  if (::ioctl(sock.get(), SIOCGIFFLAGS, &req) != 0) return tap_error("cannot read its flags");
  req.ifr_flags = static_cast<short>(req.ifr_flags | IFF_UP);
  if (::ioctl(sock.get(), SIOCSIFFLAGS, &req) != 0) return tap_error("cannot bring it up");
  return {};
}

Result<void, BridgeError> Bridge::setup_memory() {
  const uint16_t n = options_.queue_size;
  // [rx rings][tx rings][rx buffers][tx buffers], each part page-aligned.
  rx_layout_ = virtio::ring_layout(GuestAddress(0), n);
  tx_layout_ = virtio::ring_layout(GuestAddress(page_up(rx_layout_.bytes)), n);
  rx_bufs_ = GuestAddress(page_up(tx_layout_.desc.raw + tx_layout_.bytes));
  tx_bufs_ = GuestAddress(rx_bufs_.raw + uint64_t{n} * kBufferBytes);
  const uint64_t total = page_up(tx_bufs_.raw + uint64_t{n} * kBufferBytes);
  // One memfd, sealed against shrinking and growing, mapped once (lib/guest_memory).
  auto m = GuestMemory::create({{GuestAddress(0), total}});
  if (!m) return make_error(BridgeErrc::kHost, "shared memory of " + std::to_string(total) + " bytes: " + m.error().message());
  mem_ = std::make_unique<GuestMemory>(std::move(m).value());
  rx_host_ = mem_->range(rx_bufs_, uint64_t{n} * kBufferBytes);
  tx_host_ = mem_->range(tx_bufs_, uint64_t{n} * kBufferBytes);
  if (rx_host_ == nullptr || tx_host_ == nullptr) return make_error(BridgeErrc::kHost, "buffer layout outside the memory");

  const bool event_idx = (features_ & feature_bit(virtio::kFRingEventIdx)) != 0;
  auto rx = virtio::DriverQueue::create(*mem_, n, rx_layout_.desc, rx_layout_.avail, rx_layout_.used, event_idx);
  auto tx = virtio::DriverQueue::create(*mem_, n, tx_layout_.desc, tx_layout_.avail, tx_layout_.used, event_idx);
  if (!rx || !tx) return make_error(BridgeErrc::kHost, "queue layout: " + (rx ? tx.error() : rx.error()).message());
  rxq_.emplace(std::move(rx).value());
  txq_.emplace(std::move(tx).value());
  // The receive ring starts full; the card sees it at start.
  for (uint16_t i = 0; i < n; ++i) {
    const virtio::DriverBuffer b{rx_bufs_ + uint64_t{i} * kBufferBytes, kBufferBytes, true};
    if (auto r = rxq_->add(std::span(&b, 1), i); !r)
      return make_error(BridgeErrc::kHost, "receive buffer " + std::to_string(i) + ": " + r.error().message());
  }
  (void)rxq_->publish();
  tx_free_.reserve(n);
  for (uint16_t i = n; i > 0; --i) tx_free_.push_back(static_cast<uint16_t>(i - 1));
  return {};
}

Result<void, BridgeError> Bridge::start_queues() {
  if (auto r = fe_->set_mem_table(*mem_); !r) return card_error("SET_MEM_TABLE: " + r.error().message());
  const virtio::RingLayout* layouts[2] = {&rx_layout_, &tx_layout_};
  for (uint32_t q = 0; q < 2; ++q) {
    kick_[q] = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    call_[q] = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!kick_[q] || !call_[q]) return host_error("eventfd");
    const auto& l = *layouts[q];
    const uint16_t n = options_.queue_size;
    auto desc = vhost_user::Frontend::user_addr(*mem_, l.desc, virtio::desc_table_size(n));
    auto avail = vhost_user::Frontend::user_addr(*mem_, l.avail, virtio::avail_ring_size(n));
    auto used = vhost_user::Frontend::user_addr(*mem_, l.used, virtio::used_ring_size(n));
    if (!desc || !avail || !used) return make_error(BridgeErrc::kHost, "ring outside the shared memory");
    vhost_user::VringConfig vc;
    vc.index = q;
    vc.num = n;
    vc.base = 0;
    vc.desc_user_addr = *desc;
    vc.avail_user_addr = *avail;
    vc.used_user_addr = *used;
    vc.kick_fd = kick_[q].get();
    vc.call_fd = call_[q].get();
    const std::string what = std::string(q == kRxQueue ? "receive" : "transmit") + " queue " + std::to_string(q) +
                             " (size " + std::to_string(n) + ")";
    if (auto r = fe_->setup_vring(vc); !r) return card_error(what + ": the card refused it: " + r.error().message());
    if (fe_->protocol_features() != 0) {
      if (auto r = fe_->set_vring_enable(q, true); !r) return card_error(what + ": enable: " + r.error().message());
    }
  }
  if (fe_->has_status()) {
    constexpr uint8_t kAll = virtio::kStatusAcknowledge | virtio::kStatusDriver | virtio::kStatusFeaturesOk |
                             virtio::kStatusDriverOk;
    if (auto r = fe_->set_status(kAll); !r) return card_error("SET_STATUS DRIVER_OK: " + r.error().message());
  }
  kick(kRxQueue);  // the buffers are there
  return {};
}

Result<void, BridgeError> Bridge::setup_loop() {
  epoll_ = UniqueFd(::epoll_create1(EPOLL_CLOEXEC));
  if (!epoll_) return host_error("epoll_create1");
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  signal_ = UniqueFd(::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!signal_) return host_error("signalfd");
  // Once a second: is the device still well (DEVICE_NEEDS_RESET)?
  timer_ = UniqueFd(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
  if (!timer_) return host_error("timerfd_create");
  itimerspec its{};
  its.it_interval.tv_sec = 1;
  its.it_value.tv_sec = 1;
  if (::timerfd_settime(timer_.get(), 0, &its, nullptr) != 0) return host_error("timerfd_settime");
  auto watch = [&](int fd, uint32_t events, Tag tag) -> Result<void, BridgeError> {
    epoll_event ev{};
    ev.events = events;
    ev.data.u64 = tag;
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) return host_error("epoll_ctl");
    return {};
  };
  AZOTE_TRYV(watch(tap_.get(), EPOLLIN, kTagTap));
  AZOTE_TRYV(watch(call_[kRxQueue].get(), EPOLLIN, kTagRxCall));
  AZOTE_TRYV(watch(call_[kTxQueue].get(), EPOLLIN, kTagTxCall));
  AZOTE_TRYV(watch(fe_->socket_fd(), EPOLLIN | EPOLLRDHUP, kTagCard));
  AZOTE_TRYV(watch(signal_.get(), EPOLLIN, kTagSignal));
  AZOTE_TRYV(watch(timer_.get(), EPOLLIN, kTagTimer));
  return {};
}

bool Bridge::fail(std::string message) {
  if (failure_.empty()) failure_ = std::move(message);
  return false;
}

void Bridge::kick(uint32_t q) {
  const uint64_t one = 1;
  (void)!::write(kick_[q].get(), &one, sizeof one);
  ++(q == kRxQueue ? stats_.rx_kicks : stats_.tx_kicks);
}

void Bridge::set_tap_paused(bool paused) {
  if (paused == tap_paused_) return;
  epoll_event ev{};
  ev.events = paused ? 0u : static_cast<uint32_t>(EPOLLIN);
  ev.data.u64 = kTagTap;
  (void)::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, tap_.get(), &ev);
  tap_paused_ = paused;
  if (paused) ++stats_.tx_ring_full;
}

bool Bridge::reclaim_tx() {
  // Only chains in flight can complete: bounded by the queue size.
  for (;;) {
    for (;;) {
      auto u = txq_->take();
      if (!u) return fail("the card broke the transmit queue: " + u.error().message());
      if (!u->has_value()) break;
      tx_free_.push_back(static_cast<uint16_t>((*u)->token));
    }
    if (!txq_->rearm()) break;
  }
  if (tap_paused_ && !tx_free_.empty()) set_tap_paused(false);
  return true;
}

bool Bridge::transmit() {
  const bool look = tap_readable_ || tx_more_;
  tx_more_ = false;
  if (tap_paused_ || !look) return true;
  uint32_t n = 0;
  while (n < kTxBatch) {
    if (tx_free_.empty()) {
      set_tap_paused(true);  // until the card completes some
      break;
    }
    const uint16_t slot = tx_free_.back();
    uint8_t* buf = tx_host_ + uint64_t{slot} * kBufferBytes;
    // Straight into the shared buffer, behind the header.
    const ssize_t r = ::read(tap_.get(), buf + kNetHdrBytes, kBufferBytes - kNetHdrBytes);
    if (r < 0) {
      if (errno == EAGAIN || errno == EINTR) {
        tap_readable_ = false;
        break;
      }
      return fail("TAP " + tap_name_ + ": read: " + std::strerror(errno));
    }
    if (r == 0) break;
    const NetHdr h{};  // no offload: all zero (num_buffers is the device's, §5.1.6.2)
    virtio::shared::copy_out(buf, &h, sizeof h);
    const virtio::DriverBuffer b{tx_bufs_ + uint64_t{slot} * kBufferBytes, static_cast<uint32_t>(kNetHdrBytes + r),
                                 false};
    if (auto a = txq_->add(std::span(&b, 1), slot); !a)
      return fail("transmit queue: " + a.error().message());  // cannot happen: one descriptor per slot
    tx_free_.pop_back();
    ++stats_.tx_frames;
    stats_.tx_bytes += static_cast<uint64_t>(r);
    ++n;
  }
  if (n > 0 && txq_->publish()) kick(kTxQueue);
  tx_more_ = n == kTxBatch;
  return true;
}

bool Bridge::receive() {
  rx_more_ = false;
  const uint32_t budget = options_.queue_size;
  uint32_t done = 0;
  for (;;) {
    while (done < budget) {
      auto u = rxq_->take();
      if (!u) return fail("the card broke the receive queue: " + u.error().message());
      if (!u->has_value()) break;
      const uint16_t slot = static_cast<uint16_t>((*u)->token);
      const uint32_t len = (*u)->len;  // <= kBufferBytes: checked by the queue
      uint8_t* buf = rx_host_ + uint64_t{slot} * kBufferBytes;
      NetHdr h{};
      if (len >= kNetHdrBytes + kEthHdrBytes) virtio::shared::copy_in(&h, buf, sizeof h);
      if (len < kNetHdrBytes + kEthHdrBytes || h.flags != 0 || h.gso_type != 0 || h.num_buffers != 1) {
        ++stats_.rx_bad;
        if (warn_limit_.allow())
          LOG_WARN("the card delivered a bad frame (%u bytes, header flags %u gso %u num_buffers %u): dropped", len,
                   h.flags, h.gso_type, h.num_buffers);
      } else if (::write(tap_.get(), buf + kNetHdrBytes, len - kNetHdrBytes) < 0) {
        // The TAP's queue is full or it is down: the frame is lost, as on a wire.
        ++stats_.rx_tap_errors;
        if (errno != EAGAIN && errno != ENOBUFS && errno != EIO && warn_limit_.allow())
          LOG_WARN("TAP %s: write: %s", tap_name_.c_str(), std::strerror(errno));
      } else {
        ++stats_.rx_frames;
        stats_.rx_bytes += len - kNetHdrBytes;
      }
      // The same buffer goes back at once.
      const virtio::DriverBuffer b{rx_bufs_ + uint64_t{slot} * kBufferBytes, kBufferBytes, true};
      if (auto a = rxq_->add(std::span(&b, 1), slot); !a) return fail("receive queue: " + a.error().message());
      ++done;
    }
    if (done >= budget) {
      rx_more_ = true;
      break;
    }
    if (!rxq_->rearm()) break;
  }
  if (rxq_->publish()) kick(kRxQueue);
  return true;
}

int Bridge::run() {
  for (;;) {
    epoll_event ev[8];
    const int n = ::epoll_wait(epoll_.get(), ev, 8, (rx_more_ || tx_more_) ? 0 : -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      std::fprintf(stderr, "azote-tap-bridge: error: epoll_wait: %s\n", std::strerror(errno));
      return kExitFailure;
    }
    for (int i = 0; i < n; ++i) {
      switch (ev[i].data.u64) {
        case kTagSignal: {
          signalfd_siginfo si{};
          (void)!::read(signal_.get(), &si, sizeof si);
          LOG_INFO("signal %u: stopping; tx %llu frames, rx %llu frames, rx bad %llu, rx TAP errors %llu",
                   si.ssi_signo, static_cast<unsigned long long>(stats_.tx_frames),
                   static_cast<unsigned long long>(stats_.rx_frames), static_cast<unsigned long long>(stats_.rx_bad),
                   static_cast<unsigned long long>(stats_.rx_tap_errors));
          return kExitOk;
        }
        case kTagCard: {
          // The card never speaks first: readable means it hung up (or broke the protocol).
          char c;
          const ssize_t r = ::recv(fe_->socket_fd(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
          if (r < 0 && (errno == EAGAIN || errno == EINTR) && (ev[i].events & (EPOLLHUP | EPOLLRDHUP)) == 0) break;
          std::fprintf(stderr, "azote-tap-bridge: error: the card closed the connection on %s%s\n",
                       options_.socket.c_str(), r > 0 ? " (after an unexpected message)" : "");
          return kExitFailure;
        }
        case kTagTimer: {
          (void)drain_eventfd(timer_.get());
          if (!fe_->has_status()) break;
          auto st = fe_->get_status();
          if (!st) {
            std::fprintf(stderr, "azote-tap-bridge: error: the card on %s stopped answering: %s\n",
                         options_.socket.c_str(), st.error().message().c_str());
            return kExitFailure;
          }
          if ((*st & virtio::kStatusNeedsReset) != 0) {
            std::fprintf(stderr, "azote-tap-bridge: error: the card on %s reports DEVICE_NEEDS_RESET\n",
                         options_.socket.c_str());
            return kExitFailure;
          }
          break;
        }
        // The call eventfds are shared with the card, which may switch them to blocking
        // mode: one non-blocking read each (drain_eventfd).
        case kTagRxCall: (void)drain_eventfd(call_[kRxQueue].get()); break;
        case kTagTxCall: (void)drain_eventfd(call_[kTxQueue].get()); break;
        case kTagTap: tap_readable_ = true; break;
        default: break;
      }
    }
    if (!reclaim_tx() || !receive() || !transmit()) {
      std::fprintf(stderr, "azote-tap-bridge: error: %s\n", failure_.c_str());
      return kExitFailure;
    }
  }
}

}  // namespace azote::tapbridge
