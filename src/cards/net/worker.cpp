#include "cards/net/worker.hpp"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "base/eventfd.hpp"
#include "cards/net/inbox.hpp"
#include "virtio/net.hpp"
#include "virtio/shared_memory.hpp"

namespace azote::card_net {
namespace {

constexpr uint64_t kTagStop = 100;
constexpr uint64_t kTagInbox = 101;  // rings: their index
constexpr uint64_t kTagTimer = 102;  // a rate limit's wait is over
constexpr uint64_t kTagNeighbours = 103;  // the inbox socket: other cards' frames
// The shortest wait armed: tokens keep accruing meanwhile (buckets hold 10 ms), so a
// floor only batches admissions, it never lowers the rate.
constexpr rate_limit::Nanos kMinTimer = std::chrono::microseconds(50);

// Copies [offset, offset + n) of the chain's readable bytes into `dst`.
void gather(const virtio::Chain& c, uint64_t offset, uint8_t* dst, uint64_t n) {
  for (const auto& b : c.readable) {
    if (n == 0) return;
    if (offset >= b.len) {
      offset -= b.len;
      continue;
    }
    const uint64_t take = std::min<uint64_t>(b.len - offset, n);
    virtio::shared::copy_in(dst, b.host + offset, take);
    dst += take;
    n -= take;
    offset = 0;
  }
}

// Writes `src` into the chain's writable buffers from `offset` on.
void scatter(const virtio::Chain& c, uint64_t offset, const uint8_t* src, uint64_t n) {
  for (const auto& b : c.writable) {
    if (n == 0) return;
    if (offset >= b.len) {
      offset -= b.len;
      continue;
    }
    const uint64_t put = std::min<uint64_t>(b.len - offset, n);
    virtio::shared::copy_out(b.host + offset, src, put);
    src += put;
    n -= put;
    offset = 0;
  }
}

}  // namespace

Worker::Worker(Port& port, Switch& sw, std::atomic<bool>& needs_reset)
    : port_(port), sw_(sw), needs_reset_(needs_reset), frames_(kBatch) {
  if (port.inbox_socket() >= 0) in_ = std::make_unique<InboxBatch>();
}

Worker::~Worker() { (void)stop(); }

Result<std::unique_ptr<Worker>, WorkerError> Worker::start(Port& port, Switch& sw,
                                                           const std::optional<vhost_user::VringInfo>& rx,
                                                           const std::optional<vhost_user::VringInfo>& tx,
                                                           std::atomic<bool>& needs_reset) {
  std::unique_ptr<Worker> w(new Worker(port, sw, needs_reset));
  w->epoll_ = UniqueFd(::epoll_create1(EPOLL_CLOEXEC));
  w->stop_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  w->timer_ = UniqueFd(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
  if (!w->epoll_ || !w->stop_ || !w->timer_) return make_error(WorkerErrc::kSetup, "epoll/eventfd/timerfd", errno);
  auto watch = [&](int fd, uint64_t tag) -> Result<void, WorkerError> {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = tag;
    if (::epoll_ctl(w->epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) return make_error(WorkerErrc::kSetup, "epoll_ctl", errno);
    return {};
  };
  AZOTE_TRYV(watch(w->stop_.get(), kTagStop));
  AZOTE_TRYV(watch(port.inbox().notify_fd(), kTagInbox));
  AZOTE_TRYV(watch(w->timer_.get(), kTagTimer));
  if (port.inbox_socket() >= 0) AZOTE_TRYV(watch(port.inbox_socket(), kTagNeighbours));
  if (rx) AZOTE_TRYV(w->setup(virtio::kRxQueue, *rx));
  if (tx) AZOTE_TRYV(w->setup(virtio::kTxQueue, *tx));
  for (uint32_t i = 0; i < 2; ++i)
    if (w->rings_[i] && w->rings_[i]->info.kick_fd >= 0) AZOTE_TRYV(watch(w->rings_[i]->info.kick_fd, i));
  port.rx_ready.store(w->rings_[virtio::kRxQueue] && !w->rings_[virtio::kRxQueue]->broken, std::memory_order_release);
  w->thread_.start("eni-" + port.id(), "worker", [p = w.get()] { p->run(); });
  return w;
}

Result<void, WorkerError> Worker::setup(uint32_t index, const vhost_user::VringInfo& v) {
  Ring r;
  r.info = v;
  r.queue = std::make_unique<virtio::SplitQueue>(*v.memory);
  const bool event_idx = (v.features & virtio::feature_bit(virtio::kFRingEventIdx)) != 0;
  const bool indirect = (v.features & virtio::feature_bit(virtio::kFRingIndirectDesc)) != 0;
  r.queue->set_next_avail(v.next_avail);
  r.queue->set_next_used(v.next_avail);
  rings_[index] = std::move(r);
  if (auto c = rings_[index]->queue->configure(v.size, v.desc, v.avail, v.used, event_idx, indirect); !c)
    break_queue(*rings_[index], c.error().message());
  return {};
}

std::array<uint16_t, 2> Worker::stop() {
  if (thread_.running()) {
    const uint64_t one = 1;
    (void)!::write(stop_.get(), &one, sizeof one);
    thread_.join_within(runtime::kWorkerStopDeadline, "eni " + port_.id() + " worker");
  }
  port_.rx_ready.store(false, std::memory_order_release);
  std::array<uint16_t, 2> next{};
  for (uint32_t i = 0; i < 2; ++i)
    if (rings_[i]) next[i] = rings_[i]->queue->next_avail();
  return next;
}

void Worker::break_queue(Ring& r, const std::string& why) {
  r.broken = true;
  if (r.info.index == virtio::kRxQueue) port_.rx_ready.store(false, std::memory_order_release);
  port_.counters().queue_errors.fetch_add(1, std::memory_order_relaxed);
  needs_reset_.store(true, std::memory_order_release);
  if (r.info.err_fd >= 0) {
    const uint64_t one = 1;
    (void)!::write(r.info.err_fd, &one, sizeof one);
  }
  if (log_limit_.allow())
    LOG_WARN("eni %s: the driver broke queue %u: %s; the device needs a reset", port_.id().c_str(), r.info.index,
             why.c_str());
}

void Worker::interrupt(Ring& r) {
  if (r.info.call_fd < 0 || !r.queue->needs_interrupt()) return;
  const uint64_t one = 1;
  (void)!::write(r.info.call_fd, &one, sizeof one);
}

void Worker::arm_timer(rate_limit::Nanos wait) {
  const auto ns = static_cast<uint64_t>(std::max(wait, kMinTimer).count());
  itimerspec its{};
  its.it_value.tv_sec = static_cast<time_t>(ns / 1'000'000'000);
  its.it_value.tv_nsec = static_cast<long>(ns % 1'000'000'000);
  (void)::timerfd_settime(timer_.get(), 0, &its, nullptr);
}

bool Worker::transmit(rate_limit::Nanos& wait) {
  if (!rings_[virtio::kTxQueue] || rings_[virtio::kTxQueue]->broken) return false;
  Ring& r = *rings_[virtio::kTxQueue];
  size_t n = 0;
  bool used = false;
  PortCounters& c = port_.counters();
  DirectionLimiter& limit = port_.limits().tx();
  while (n < kBatch) {
    auto got = r.queue->pop_into(chain_);
    if (!got) {
      break_queue(r, got.error().message());
      break;
    }
    if (!*got) break;
    const uint64_t total = chain_.readable_bytes;
    // Every frame the guest sends passes the limiter, refused ones included (they cost
    // the card as much); costs are the Ethernet frame, without the virtio-net header.
    if (limit.limited()) {
      const uint64_t cost = total > sizeof(virtio::virtio_net_hdr) ? total - sizeof(virtio::virtio_net_hdr) : 0;
      if (const auto w = limit.admit(cost); w != rate_limit::Nanos(0)) {
        // Put back: the chain stays the guest's, read again when the wait is over.
        r.queue->set_next_avail(static_cast<uint16_t>(r.queue->next_avail() - 1));
        wait = w;
        break;
      }
    }
    bool take = false;
    if (total < sizeof(virtio::virtio_net_hdr)) {
      c.drop(Drop::kBadHeader);
    } else if (total - sizeof(virtio::virtio_net_hdr) > kMaxFrame) {
      c.drop(Drop::kOversized);
    } else {
      virtio::virtio_net_hdr h{};
      gather(chain_, 0, reinterpret_cast<uint8_t*>(&h), sizeof h);  // NOLINT(reinterpret-cast)
      // No offload was offered: a header asking for one is a driver bug.
      if (h.flags != 0 || h.gso_type != virtio::kNetHdrGsoNone) {
        c.drop(Drop::kBadHeader);
      } else {
        frames_[n].len = total - sizeof h;
        gather(chain_, sizeof h, frames_[n].bytes.data(), frames_[n].len);
        take = true;
      }
    }
    if (!take) {
      c.tx_packets.fetch_add(1, std::memory_order_relaxed);
      c.tx_bytes.fetch_add(total, std::memory_order_relaxed);
    }
    // Copied (or refused): the guest may reuse the buffers at once.
    (void)r.queue->push_used(chain_.head, 0);
    used = true;
    if (take) ++n;
  }
  if (used) interrupt(r);
  if (n > 0) sw_.transmit(port_, std::span(frames_.data(), n));
  return n == kBatch;
}

void Worker::receive(rate_limit::Nanos& wait) {
  if (!rings_[virtio::kRxQueue] || rings_[virtio::kRxQueue]->broken) return;
  Ring& r = *rings_[virtio::kRxQueue];
  Inbox& in = port_.inbox();
  PortCounters& c = port_.counters();
  DirectionLimiter& limit = port_.limits().rx();
  bool used = false;
  for (;;) {
    const auto frame = in.front();
    if (frame.empty()) break;
    // Admitted once, before a buffer is taken: a frame waiting for a buffer is not
    // charged again.
    if (!rx_admitted_) {
      if (const auto w = limit.admit(frame.size()); w != rate_limit::Nanos(0)) {
        wait = w;
        break;
      }
      rx_admitted_ = true;
    }
    auto got = r.queue->pop_into(chain_);
    if (!got) {
      break_queue(r, got.error().message());
      break;
    }
    if (!*got) break;  // no buffer posted: the frame waits for the next rx kick
    const uint64_t need = sizeof(virtio::virtio_net_hdr) + frame.size();
    uint32_t written = 0;
    if (chain_.writable_bytes < need) {
      c.drop(Drop::kRxBufferTooSmall);
    } else {
      virtio::virtio_net_hdr h{};
      h.num_buffers = 1;
      scatter(chain_, 0, reinterpret_cast<const uint8_t*>(&h), sizeof h);  // NOLINT(reinterpret-cast)
      scatter(chain_, sizeof h, frame.data(), frame.size());
      written = static_cast<uint32_t>(need);
      c.rx_packets.fetch_add(1, std::memory_order_relaxed);
      c.rx_bytes.fetch_add(frame.size(), std::memory_order_relaxed);
    }
    (void)r.queue->push_used(chain_.head, written);
    used = true;
    in.pop();
    rx_admitted_ = false;
  }
  if (used) interrupt(r);
}

void Worker::take_from_neighbours() {
  const size_t n = in_->receive(port_.inbox_socket());
  for (size_t i = 0; i < n; ++i) {
    const auto uid = in_->uid(i);
    if (!uid) {
      port_.counters().drop(Drop::kNeighbourRefused);
      continue;
    }
    (void)sw_.receive_neighbour(port_, *uid, in_->frame(i));
  }
}

void Worker::run() {
  // Rings without a kick fd are polled.
  const bool polled = (rings_[0] && rings_[0]->info.kick_fd < 0) || (rings_[1] && rings_[1]->info.kick_fd < 0);
  bool more = true;  // look at the rings once at start: kicks may predate us
  for (;;) {
    epoll_event ev[8];
    const int n = ::epoll_wait(epoll_.get(), ev, 8, more ? 0 : (polled ? 1 : -1));
    if (n < 0 && errno != EINTR) {
      LOG_ERROR("eni %s: epoll_wait: %s", port_.id().c_str(), std::strerror(errno));
      return;
    }
    for (int i = 0; i < n; ++i) {
      const uint64_t tag = ev[i].data.u64;
      if (tag == kTagStop) return;
      // One non-blocking read per fd and wakeup (drain_eventfd): a kick fd is the
      // frontend's, may be a semaphore eventfd and may have been switched back to
      // blocking mode by it; what one read leaves wakes us again.
      if (tag == kTagInbox) (void)drain_eventfd(port_.inbox().notify_fd());
      else if (tag == kTagNeighbours) take_from_neighbours();
      else if (tag == kTagTimer) (void)drain_eventfd(timer_.get());
      else if (tag < 2 && rings_[tag]) (void)drain_eventfd(rings_[tag]->info.kick_fd);
    }
    rate_limit::Nanos tx_wait{0}, rx_wait{0};
    more = transmit(tx_wait);
    receive(rx_wait);
    if (tx_wait != rate_limit::Nanos(0) || rx_wait != rate_limit::Nanos(0)) {
      const rate_limit::Nanos zero{0};
      arm_timer(tx_wait == zero ? rx_wait : rx_wait == zero ? tx_wait : std::min(tx_wait, rx_wait));
    }
  }
}

}  // namespace azote::card_net
