#include "cards/blk/queue_worker.hpp"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "base/eventfd.hpp"
#include "virtio/blk.hpp"
#include "virtio/shared_memory.hpp"
#include "virtio/spec.hpp"

namespace azote::card_blk {
namespace {

constexpr uint32_t kTagStop = 1;
constexpr uint32_t kTagKick = 2;
constexpr uint32_t kTagCompletion = 3;
constexpr uint32_t kTagTimer = 4;
constexpr uint64_t kSector = virtio::kBlkSectorSize;

void notify_fd(int fd) {
  if (fd < 0) return;
  const uint64_t one = 1;
  // A full eventfd counter (EAGAIN) already means "notified".
  (void)!::write(fd, &one, sizeof one);
}

OpKind kind_of(virtio::BlkOp op) {
  switch (op) {
    case virtio::BlkOp::kIn: return OpKind::kRead;
    case virtio::BlkOp::kOut: return OpKind::kWrite;
    case virtio::BlkOp::kFlush: return OpKind::kFlush;
    case virtio::BlkOp::kGetId: return OpKind::kGetId;
    case virtio::BlkOp::kDiscard: return OpKind::kDiscard;
    case virtio::BlkOp::kWriteZeroes: return OpKind::kWriteZeroes;
  }
  return OpKind::kRead;
}

uint64_t segment_bytes(const virtio::BlkRequest& r) {
  uint64_t n = 0;
  for (const auto& s : r.segments) n += uint64_t{s.num_sectors} * kSector;
  return n;
}

// Copies between a guest scatter list (data bytes only; never interpreted) and a card
// buffer, starting `off` bytes into the scatter list.
void gather(const std::vector<iovec>& iov, uint64_t off, uint8_t* dst, uint64_t len) {
  for (const iovec& v : iov) {
    if (len == 0) return;
    if (off >= v.iov_len) {
      off -= v.iov_len;
      continue;
    }
    const uint64_t take = std::min<uint64_t>(v.iov_len - off, len);
    virtio::shared::copy_in(dst, static_cast<const uint8_t*>(v.iov_base) + off, take);
    dst += take;
    len -= take;
    off = 0;
  }
}
void scatter(const std::vector<iovec>& iov, uint64_t off, const uint8_t* src, uint64_t len) {
  for (const iovec& v : iov) {
    if (len == 0) return;
    if (off >= v.iov_len) {
      off -= v.iov_len;
      continue;
    }
    const uint64_t take = std::min<uint64_t>(v.iov_len - off, len);
    virtio::shared::copy_out(static_cast<uint8_t*>(v.iov_base) + off, src, take);
    src += take;
    len -= take;
    off = 0;
  }
}

// The scatter list without its first `off` bytes.
void remainder(const std::vector<iovec>& iov, uint64_t off, std::vector<iovec>& out) {
  out.clear();
  for (const iovec& v : iov) {
    if (off >= v.iov_len) {
      off -= v.iov_len;
      continue;
    }
    out.push_back(iovec{static_cast<uint8_t*>(v.iov_base) + off, v.iov_len - off});
    off = 0;
  }
}

// Guest memory plus, while armed, a card-private area at a guest-physical address no
// guest RAM uses. Used once per queue start to walk resubmitted heads with the
// validated SplitQueue code: a private avail ring lists the heads, the descriptor table
// is the guest's. The area is armed only during configure() (which caches the ring
// pointers), so no guest descriptor can ever point into it.
class OverlayMemory final : public GuestMemoryView {
 public:
  static constexpr uint64_t kBase = uint64_t{1} << 62;
  OverlayMemory(const GuestMemoryView& inner, uint64_t bytes) : inner_(inner), area_((bytes + 7) / 8, 0) {}
  uint8_t* range(GuestAddress gpa, uint64_t len) const override {
    const uint64_t size = area_.size() * 8;
    if (armed_ && gpa.raw >= kBase && gpa.raw - kBase <= size && len <= size - (gpa.raw - kBase))
      return bytes() + (gpa.raw - kBase);
    return inner_.range(gpa, len);
  }
  // SAFETY: viewing the u64 storage as bytes (any object may be accessed as bytes).
  uint8_t* bytes() const { return reinterpret_cast<uint8_t*>(area_.data()); }  // NOLINT(reinterpret-cast)
  void arm(bool on) { armed_ = on; }

 private:
  const GuestMemoryView& inner_;
  mutable std::vector<uint64_t> area_;  // 8-byte aligned: ring fields are accessed atomically
  bool armed_ = false;
};

}  // namespace

// ---- BouncePool ----------------------------------------------------------------------

QueueWorker::BouncePool::~BouncePool() {
  for (uint8_t* p : all_) std::free(p);
}

uint8_t* QueueWorker::BouncePool::get() {
  if (!free_.empty()) {
    uint8_t* p = free_.back();
    free_.pop_back();
    return p;
  }
  if (all_.size() >= kBounceChunks) return nullptr;
  // 4 KiB alignment satisfies every O_DIRECT memory alignment we accept.
  auto* p = static_cast<uint8_t*>(std::aligned_alloc(4096, kBounceChunkBytes));
  if (p == nullptr) return nullptr;
  all_.push_back(p);
  return p;
}

// ---- lifecycle -----------------------------------------------------------------------

QueueWorker::QueueWorker(Volume& volume, const vhost_user::VringInfo& v)
    : vol_(volume),
      store_(volume.store_queue(v.index)),
      index_(v.index),
      size_(v.size),
      features_(v.features),
      inflight_(v.inflight),
      resubmit_(v.resubmit),
      ring_(v),
      queue_(*v.memory) {}

QueueWorker::~QueueWorker() {
  if (thread_.running()) (void)stop();
}

Result<std::unique_ptr<QueueWorker>, WorkerError> QueueWorker::create(Volume& volume, const vhost_user::VringInfo& v) {
  std::unique_ptr<QueueWorker> w(new QueueWorker(volume, v));
  const std::string q = "queue " + std::to_string(v.index);
  auto c = w->queue_.configure(v.size, v.desc, v.avail, v.used,
                               (v.features & virtio::feature_bit(virtio::kFRingEventIdx)) != 0,
                               (v.features & virtio::feature_bit(virtio::kFRingIndirectDesc)) != 0);
  if (!c) return make_error(WorkerErrc::kSetup, q + ": " + c.error().message());
  w->queue_.set_next_avail(v.next_avail);
  // With an inflight area, next_avail = used idx + the heads to resubmit; without one,
  // every request taken was completed before the queue stopped.
  const auto resub = static_cast<uint16_t>(v.inflight != nullptr ? v.resubmit.size() : 0);
  w->queue_.set_next_used(static_cast<uint16_t>(v.next_avail - resub));
  if (const XtsKey* key = volume.key()) {
    auto ci = XtsCipher::create(*key);
    if (!ci) return make_error(WorkerErrc::kSetup, q + ": " + ci.error().message());
    w->cipher_ = std::move(ci).value();
  }
  w->slots_.resize(v.size);
  w->waiting_.init(v.size);
  w->stalled_.init(v.size);
  w->completions_.resize(64);
  w->epoll_ = UniqueFd(::epoll_create1(EPOLL_CLOEXEC));
  w->timer_ = UniqueFd(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
  w->stop_fd_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!w->epoll_ || !w->timer_ || !w->stop_fd_) return errno_error(WorkerErrc::kSetup, q + ": epoll/timerfd/eventfd");
  auto watch = [&](int fd, uint32_t tag) -> Result<void, WorkerError> {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u32 = tag;
    if (::epoll_ctl(w->epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) return errno_error(WorkerErrc::kSetup, q + ": epoll_ctl");
    return {};
  };
  AZOTE_TRYV(watch(w->stop_fd_.get(), kTagStop));
  AZOTE_TRYV(watch(w->store_.completion_fd(), kTagCompletion));
  AZOTE_TRYV(watch(w->timer_.get(), kTagTimer));
  if (v.kick_fd >= 0) AZOTE_TRYV(watch(v.kick_fd, kTagKick));
  // Completions left over from an earlier start cannot exist (stop() drains them), but
  // a stale eventfd count can: clear it.
  (void)drain_eventfd(w->store_.completion_fd());
  return w;
}

void QueueWorker::start() { thread_.start("blk-q" + std::to_string(index_), "queue", [this] { run(); }); }

uint16_t QueueWorker::stop(std::chrono::milliseconds deadline) {
  if (thread_.running()) {
    notify_fd(stop_fd_.get());
    thread_.join_within(deadline, "volume " + vol_.params().name + " queue " + std::to_string(index_));
  }
  return queue_.next_avail();
}

uint64_t QueueWorker::now_ns() const { return static_cast<uint64_t>(vol_.clock().now().count()); }

// ---- event loop ----------------------------------------------------------------------

void QueueWorker::run() {
  if (!resubmit_.empty()) take_resubmitted();
  kick_pending_ = true;  // the driver may have queued requests before we started
  for (;;) {
    if (!stopping_) {
      if (kick_pending_ || ring_.kick_fd < 0) {
        kick_pending_ = false;
        poll_avail();
      }
    }
    dispatch();
    submit();
    signal_driver();
    if (stopping_ && busy_ == 0) break;

    const int timeout = (ring_.kick_fd < 0 || retry_soon_) ? 1 : -1;
    epoll_event ev[4];
    const int n = ::epoll_wait(epoll_.get(), ev, 4, timeout);
    if (n < 0 && errno != EINTR) {
      // Unlikely host failure: no way to serve this queue any more.
      LOG_ERROR("volume %s queue %u: epoll_wait: %s", vol_.params().name.c_str(), index_, std::strerror(errno));
      std::abort();
    }
    retry_soon_ = false;
    for (int i = 0; i < n; ++i) {
      // One read per fd and wakeup (drain_eventfd): the kick fd is the frontend's and may
      // be a semaphore eventfd that a read only decrements by 1; what is left wakes us
      // again after this round, which has seen the stop if there is one.
      switch (ev[i].data.u32) {
        case kTagStop:
          (void)drain_eventfd(stop_fd_.get());
          stopping_ = true;
          break;
        case kTagKick:
          (void)drain_eventfd(ring_.kick_fd);
          kick_pending_ = true;
          break;
        case kTagCompletion:
          (void)drain_eventfd(store_.completion_fd());
          break;
        case kTagTimer:
          (void)drain_eventfd(timer_.get());
          timer_armed_ = false;
          break;
        default:
          break;
      }
    }
    reap();
  }
}

void QueueWorker::take_resubmitted() {
  const uint64_t avail_bytes = virtio::avail_ring_size(size_);
  const uint64_t used_off = (avail_bytes + 63) / 64 * 64;
  OverlayMemory overlay(*ring_.memory, used_off + virtio::used_ring_size(size_));
  const auto n = static_cast<uint16_t>(std::min<size_t>(resubmit_.size(), size_));
  uint8_t* avail = overlay.bytes();
  for (uint16_t i = 0; i < n; ++i) std::memcpy(avail + virtio::avail_ring_offset(i), &resubmit_[i], 2);
  std::memcpy(avail + virtio::avail_idx_offset(), &n, 2);
  virtio::SplitQueue rq(overlay);
  overlay.arm(true);
  auto c = rq.configure(size_, ring_.desc, GuestAddress(OverlayMemory::kBase),
                        GuestAddress(OverlayMemory::kBase + used_off), false,
                        (features_ & virtio::feature_bit(virtio::kFRingIndirectDesc)) != 0);
  overlay.arm(false);
  if (!c) {
    break_queue("resubmission: " + c.error().message());
    return;
  }
  for (uint16_t i = 0; i < n; ++i) {
    auto r = rq.pop_into(chain_);
    if (!r || !*r) {
      break_queue("resubmitted head " + std::to_string(resubmit_[i]) + ": " +
                  (r ? std::string("missing") : r.error().message()));
      return;
    }
    vol_.metrics().resubmitted.fetch_add(1, std::memory_order_relaxed);
    take(chain_);
  }
  resubmit_.clear();
}

void QueueWorker::poll_avail() {
  if (broken_) return;
  // Notifications off while we drain, back on before the ring is found empty once more
  // (buffers added in between raised none).
  for (;;) {
    queue_.set_notification(false);
    drain_avail();
    if (broken_) return;
    queue_.set_notification(true);
    auto r = queue_.pop_into(chain_);
    if (!r) {
      break_queue(r.error().message());
      return;
    }
    if (!*r) return;
    take(chain_);
  }
}

void QueueWorker::drain_avail() {
  while (!broken_) {
    auto r = queue_.pop_into(chain_);
    if (!r) {
      break_queue(r.error().message());
      return;
    }
    if (!*r) return;
    take(chain_);
  }
}

void QueueWorker::take(const virtio::Chain& chain) {
  const uint16_t head = chain.head;  // < size_: checked by SplitQueue
  Slot& s = slots_[head];
  if (s.state != Slot::State::kFree) {
    // The driver made the same head available twice while we still own it: a broken
    // driver. The first one completes; this one cannot (its head is not free).
    break_queue("head " + std::to_string(head) + " made available again while in flight");
    return;
  }
  if (inflight_ != nullptr) (void)inflight_->begin(head);
  s.state = Slot::State::kRunning;
  ++busy_;
  s.popped_ns = now_ns();
  s.throttled_ns = 0;
  s.throttled = false;
  s.admitted = s.bounce_waited = s.force_bounce = s.zero_writes = s.zero_fallback = s.synced = false;
  s.write_through = false;
  s.ops = 0;
  s.err = 0;
  s.done = s.chunk_off = s.chunk_len = s.chunk_done = s.seg_done = 0;
  s.seg = 0;
  auto parsed = virtio::parse_blk(chain, vol_.blk(), features_, s.req);
  if (!parsed) {
    // A request the guest got wrong: the status the spec asks for, no I/O.
    vol_.metrics().reject(parsed.error().reason);
    s.state = Slot::State::kFree;
    --busy_;
    publish(head, parsed.error().complete());
    return;
  }
  if (s.req.op == virtio::BlkOp::kGetId) {
    (void)virtio::blk_write_id(s.req, vol_.params().name);
    finish(head, virtio::kBlkSOk);
    return;
  }
  // The cache mode when the request is taken decides how its writes go to the store.
  s.write_through = (s.req.op == virtio::BlkOp::kOut || s.req.op == virtio::BlkOp::kWriteZeroes) &&
                    vol_.write_through();
  s.state = Slot::State::kWaiting;
  waiting_.push_back(head);
}

// ---- admission and execution ---------------------------------------------------------

uint64_t QueueWorker::cost_bytes(const Slot& s) const {
  switch (s.req.op) {
    case virtio::BlkOp::kIn:
    case virtio::BlkOp::kOut:
      return s.req.data_bytes;
    case virtio::BlkOp::kWriteZeroes:
      // Charged as bytes only when they are really written out.
      return (cipher_ || vol_.zero_range_unsupported.load(std::memory_order_relaxed)) ? segment_bytes(s.req) : 0;
    default:
      return 0;
  }
}

void QueueWorker::dispatch() {
  // Requests already executing whose next step found no room come first.
  while (!stalled_.empty()) {
    const uint16_t head = stalled_.front();
    if (!ensure_room(1)) return;
    stalled_.pop_front();
    prepare_chunk(head);
  }
  rate_limit::Limiter* limiter = vol_.limiter();
  while (!waiting_.empty()) {
    const uint16_t head = waiting_.front();
    Slot& s = slots_[head];
    if (!s.admitted) {
      if (limiter != nullptr && stopping_) {
        // Stopping: what was taken completes now; the limiter is charged (into debt if
        // need be), so the volume's long-run rate still holds.
        limiter->charge(cost_bytes(s));
      } else if (limiter != nullptr) {
        const auto wait = limiter->admit(cost_bytes(s));
        if (wait.count() > 0) {
          if (!s.throttled) {
            s.throttled = true;
            s.throttled_ns = now_ns();
            vol_.metrics().throttled.fetch_add(1, std::memory_order_relaxed);
          }
          arm_timer(static_cast<uint64_t>(wait.count()));
          return;
        }
      }
      if (s.throttled)
        vol_.metrics().throttle_wait_ns.fetch_add(now_ns() - s.throttled_ns, std::memory_order_relaxed);
      s.admitted = true;
    }
    if (!start_request(head)) return;  // no room or no bounce memory: retried after completions
    waiting_.pop_front();
  }
}

bool QueueWorker::ensure_room(uint32_t n) {
  if (store_.room() >= n) return true;
  submit();
  return store_.room() >= n;
}

bool QueueWorker::prepare_op(const StoreOp& op, Slot& s) {
  if (!store_.prepare(op)) return false;  // callers checked the room
  ++s.ops;
  return true;
}

bool QueueWorker::zero_copy_ok(const Slot& s) const {
  if (cipher_ || s.force_bounce) return false;
  const StoreInfo& info = vol_.store_info();
  if (!info.direct) return true;
  if (s.req.iov.size() > virtio::kBlkMaxDataSegments) return false;
  for (const iovec& v : s.req.iov) {
    // SAFETY: the pointer is only inspected for its alignment, never dereferenced here.
    if (reinterpret_cast<uintptr_t>(v.iov_base) % info.mem_align != 0 || v.iov_len % info.offset_align != 0)  // NOLINT
      return false;
  }
  return true;
}

bool QueueWorker::start_request(uint16_t head) {
  Slot& s = slots_[head];
  const virtio::BlkRequest& r = s.req;
  switch (r.op) {
    case virtio::BlkOp::kIn:
    case virtio::BlkOp::kOut: {
      if (zero_copy_ok(s)) {
        if (!ensure_room(1)) return false;
        s.state = Slot::State::kRunning;
        StoreOp op;
        op.kind = r.op == virtio::BlkOp::kIn ? StoreOpKind::kRead : StoreOpKind::kWrite;
        op.offset = r.sector * kSector;
        op.iov = r.iov.data();
        op.iovcnt = static_cast<uint32_t>(r.iov.size());
        op.tag = head;
        op.durable = s.write_through;
        (void)prepare_op(op, s);
        return true;
      }
      break;
    }
    case virtio::BlkOp::kFlush: {
      if (!ensure_room(1)) return false;
      s.state = Slot::State::kRunning;
      StoreOp op;
      op.kind = StoreOpKind::kFlush;
      op.tag = head;
      (void)prepare_op(op, s);
      return true;
    }
    case virtio::BlkOp::kDiscard:
    case virtio::BlkOp::kWriteZeroes: {
      const bool discard = r.op == virtio::BlkOp::kDiscard;
      if (s.synced) {
        // Write-through: the zeroed ranges are done; make them durable before completing.
        if (!ensure_room(1)) return false;
        s.state = Slot::State::kRunning;
        StoreOp op;
        op.kind = StoreOpKind::kFlush;
        op.tag = head;
        (void)prepare_op(op, s);
        return true;
      }
      if (!discard && (cipher_ || s.zero_writes || vol_.zero_range_unsupported.load(std::memory_order_relaxed))) {
        s.zero_writes = true;
        break;  // written out as data through a bounce buffer
      }
      if (!ensure_room(static_cast<uint32_t>(r.segments.size()))) return false;
      s.state = Slot::State::kRunning;
      for (const auto& seg : r.segments) {
        if (seg.num_sectors == 0) continue;
        StoreOp op;
        op.kind = discard ? StoreOpKind::kPunchHole : StoreOpKind::kZeroRange;
        op.offset = seg.sector * kSector;
        op.length = uint64_t{seg.num_sectors} * kSector;
        op.tag = head;
        (void)prepare_op(op, s);
      }
      if (s.ops == 0) finish(head, virtio::kBlkSOk);  // only empty segments
      return true;
    }
    case virtio::BlkOp::kGetId:
      finish(head, virtio::kBlkSOk);  // not reached: completed in take()
      return true;
  }
  // Through a card buffer, chunk by chunk.
  if (!ensure_room(1)) return false;
  s.bounce = pool_.get();
  if (s.bounce == nullptr) {
    if (!s.bounce_waited) {
      s.bounce_waited = true;
      vol_.metrics().bounce_waits.fetch_add(1, std::memory_order_relaxed);
    }
    return false;
  }
  s.state = Slot::State::kRunning;
  s.done = 0;
  s.seg = 0;
  s.seg_done = 0;
  if (!next_chunk(head)) finish(head, virtio::kBlkSOk);  // nothing to write (empty segments)
  return true;
}

// Sets up the next chunk of a bounce-buffer request and prepares it; false when the
// request has no data left. Room for one operation was checked by the caller.
bool QueueWorker::next_chunk(uint16_t head) {
  Slot& s = slots_[head];
  const virtio::BlkRequest& r = s.req;
  uint64_t sector = 0, len = 0;
  if (s.zero_writes) {
    while (s.seg < r.segments.size() && s.seg_done >= uint64_t{r.segments[s.seg].num_sectors} * kSector) {
      ++s.seg;
      s.seg_done = 0;
    }
    if (s.seg >= r.segments.size()) return false;
    const auto& seg = r.segments[s.seg];
    len = std::min(uint64_t{seg.num_sectors} * kSector - s.seg_done, kBounceChunkBytes);
    sector = seg.sector + s.seg_done / kSector;
    std::memset(s.bounce, 0, len);
  } else {
    if (s.done >= r.data_bytes) return false;
    len = std::min(r.data_bytes - s.done, kBounceChunkBytes);
    sector = r.sector + s.done / kSector;
    if (r.op == virtio::BlkOp::kOut) gather(r.iov, s.done, s.bounce, len);
  }
  const bool writing = s.zero_writes || r.op == virtio::BlkOp::kOut;
  if (writing && cipher_) {
    // Encrypt the card's private copy; what reaches the file is ciphertext only.
    if (auto e = cipher_->encrypt(sector, s.bounce, s.bounce, len); !e) {
      LOG_ERROR("volume %s: %s", vol_.params().name.c_str(), e.error().message().c_str());
      std::abort();  // OpenSSL failing on valid input: a host problem, never a guest one
    }
  }
  s.chunk_off = sector * kSector;
  s.chunk_len = len;
  s.chunk_done = 0;
  prepare_chunk(head);
  return true;
}

void QueueWorker::prepare_chunk(uint16_t head) {
  Slot& s = slots_[head];
  if (store_.room() == 0) {
    stalled_.push_back(head);
    return;
  }
  const bool writing = s.zero_writes || s.req.op == virtio::BlkOp::kOut;
  s.one = iovec{s.bounce + s.chunk_done, s.chunk_len - s.chunk_done};
  StoreOp op;
  op.kind = writing ? StoreOpKind::kWrite : StoreOpKind::kRead;
  op.offset = s.chunk_off + s.chunk_done;
  op.iov = &s.one;
  op.iovcnt = 1;
  op.tag = head;
  op.durable = writing && s.write_through;
  (void)prepare_op(op, s);
}

// ---- completion ----------------------------------------------------------------------

void QueueWorker::reap() {
  for (;;) {
    const uint32_t n = store_.reap(completions_);
    for (uint32_t i = 0; i < n; ++i) {
      const uint64_t tag = completions_[i].tag;
      if (tag < size_) on_completion(static_cast<uint16_t>(tag), completions_[i].result);
    }
    if (n < completions_.size()) return;
  }
}

void QueueWorker::on_completion(uint16_t head, int64_t res) {
  Slot& s = slots_[head];
  if (s.state != Slot::State::kRunning || s.ops == 0) return;  // cannot happen: tags are ours
  --s.ops;
  const virtio::BlkOp op = s.req.op;
  if (op == virtio::BlkOp::kIn || op == virtio::BlkOp::kOut || s.zero_writes) {
    on_data_completion(head, res);
    return;
  }
  if (res < 0 && s.err == 0) s.err = static_cast<int>(-res);
  if (op == virtio::BlkOp::kWriteZeroes && !s.synced && (res == -EOPNOTSUPP || res == -EINVAL))
    s.zero_fallback = true;
  if (s.ops != 0) return;
  if (s.zero_fallback) {
    // The file system cannot zero a range: write zeroes out, now and from now on.
    if (!vol_.zero_range_unsupported.exchange(true))
      LOG_INFO("volume %s: ZERO_RANGE is not supported here; write-zeroes requests write zeroes out",
               vol_.params().name.c_str());
    s.zero_writes = true;
    requeue(head);
    return;
  }
  if (s.err == 0 && s.write_through && op == virtio::BlkOp::kWriteZeroes && !s.synced) {
    // ZERO_RANGE has no per-operation FUA: an fdatasync follows it (start_request).
    s.synced = true;
    requeue(head);
    return;
  }
  finish(head, s.err == 0 ? virtio::kBlkSOk : virtio::kBlkSIoErr);
}

void QueueWorker::on_data_completion(uint16_t head, int64_t res) {
  Slot& s = slots_[head];
  const virtio::BlkRequest& r = s.req;
  if (s.bounce == nullptr) {
    // Zero-copy into guest memory.
    if (res == -EINVAL && vol_.store_info().direct && !s.force_bounce) {
      // The kernel wanted stricter alignment than it advertised: redo through a card buffer.
      s.force_bounce = true;
      requeue(head);
      return;
    }
    if (res <= 0) {
      s.err = res < 0 ? static_cast<int>(-res) : EIO;  // 0: the file shrank under us
      finish(head, virtio::kBlkSIoErr);
      return;
    }
    s.done += static_cast<uint64_t>(res);
    if (s.done >= r.data_bytes) {
      finish(head, virtio::kBlkSOk);
      return;
    }
    // Short transfer: go on with what is left.
    remainder(r.iov, s.done, s.rest);
    StoreOp op;
    op.kind = r.op == virtio::BlkOp::kIn ? StoreOpKind::kRead : StoreOpKind::kWrite;
    op.offset = r.sector * kSector + s.done;
    op.iov = s.rest.data();
    op.iovcnt = static_cast<uint32_t>(std::min<size_t>(s.rest.size(), virtio::kBlkMaxDataSegments));
    op.tag = head;
    op.durable = s.write_through && op.kind == StoreOpKind::kWrite;
    if (!ensure_room(1) || !prepare_op(op, s)) {
      s.err = EAGAIN;  // SQ full right after a completion freed an entry: cannot happen
      finish(head, virtio::kBlkSIoErr);
    }
    return;
  }
  // Through the bounce buffer.
  if (res <= 0) {
    s.err = res < 0 ? static_cast<int>(-res) : EIO;
    finish(head, virtio::kBlkSIoErr);
    return;
  }
  s.chunk_done += static_cast<uint64_t>(res);
  if (s.chunk_done < s.chunk_len) {
    prepare_chunk(head);
    return;
  }
  if (s.zero_writes) {
    s.seg_done += s.chunk_len;
  } else {
    if (r.op == virtio::BlkOp::kIn) {
      if (cipher_) {
        // Decrypt in the card's buffer, then hand the plaintext to the guest.
        if (auto e = cipher_->decrypt(s.chunk_off / kSector, s.bounce, s.bounce, s.chunk_len); !e) {
          LOG_ERROR("volume %s: %s", vol_.params().name.c_str(), e.error().message().c_str());
          std::abort();
        }
      }
      scatter(r.iov, s.done, s.bounce, s.chunk_len);
    }
    s.done += s.chunk_len;
  }
  if (!next_chunk(head)) finish(head, virtio::kBlkSOk);
}

void QueueWorker::requeue(uint16_t head) {
  Slot& s = slots_[head];
  release(s);
  s.state = Slot::State::kWaiting;
  s.ops = 0;
  s.err = 0;
  waiting_.push_front(head);  // already admitted: goes first
}

void QueueWorker::release(Slot& s) {
  if (s.bounce != nullptr) {
    pool_.put(s.bounce);
    s.bounce = nullptr;
  }
}

void QueueWorker::finish(uint16_t head, uint8_t status) {
  Slot& s = slots_[head];
  const virtio::BlkRequest& r = s.req;
  const OpKind kind = kind_of(r.op);
  OpCounters& c = vol_.metrics().of(kind);
  uint64_t written = 0;
  if (status == virtio::kBlkSOk) {
    c.ops.fetch_add(1, std::memory_order_relaxed);
    uint64_t bytes = r.data_bytes;
    if (r.op == virtio::BlkOp::kDiscard || r.op == virtio::BlkOp::kWriteZeroes) bytes = segment_bytes(r);
    if (r.op != virtio::BlkOp::kGetId) c.bytes.fetch_add(bytes, std::memory_order_relaxed);
    if (r.op == virtio::BlkOp::kOut && s.write_through)
      vol_.metrics().write_through_writes.fetch_add(1, std::memory_order_relaxed);
    if (r.op == virtio::BlkOp::kIn || r.op == virtio::BlkOp::kGetId) written = r.data_bytes;
  } else {
    c.errors.fetch_add(1, std::memory_order_relaxed);
    if (log_limit_.allow())
      LOG_WARN("volume %s queue %u: %s of %llu bytes at sector %llu failed: %s", vol_.params().name.c_str(), index_,
               to_string(kind), static_cast<unsigned long long>(r.data_bytes),
               static_cast<unsigned long long>(r.sector), std::strerror(s.err != 0 ? s.err : EIO));
  }
  c.latency.record(now_ns() - s.popped_ns);
  release(s);
  s.state = Slot::State::kFree;
  --busy_;
  publish(head, r.complete(status, written));
}

void QueueWorker::publish(uint16_t head, uint32_t len) {
  if (inflight_ != nullptr) (void)inflight_->prepare_used(head);
  (void)queue_.push_used(head, len);  // head < size_: cannot fail
  if (inflight_ != nullptr) inflight_->commit_used(queue_.next_used());
  interrupt_pending_ = true;
}

void QueueWorker::submit() {
  if (store_.unsubmitted() == 0) return;
  auto r = store_.submit();
  if (!r) {
    // The kernel refused for a reason other than "busy": nothing sensible is left to do
    // for this volume's queue, and silently hanging its requests would be worse.
    LOG_ERROR("volume %s queue %u: %s", vol_.params().name.c_str(), index_, r.error().message().c_str());
    std::abort();
  }
  if (store_.unsubmitted() != 0) retry_soon_ = true;
}

void QueueWorker::signal_driver() {
  if (!interrupt_pending_) return;
  interrupt_pending_ = false;
  if (queue_.needs_interrupt()) notify_fd(ring_.call_fd);
}

void QueueWorker::arm_timer(uint64_t ns) {
  itimerspec its{};
  ns = std::max<uint64_t>(ns, 1000);  // 0 would disarm
  its.it_value.tv_sec = static_cast<time_t>(ns / 1'000'000'000);
  its.it_value.tv_nsec = static_cast<long>(ns % 1'000'000'000);
  (void)::timerfd_settime(timer_.get(), 0, &its, nullptr);
  timer_armed_ = true;
}

void QueueWorker::break_queue(const std::string& why) {
  if (broken_) return;
  broken_ = true;
  // DEVICE_NEEDS_RESET for the driver (GET_STATUS), until it resets the device.
  vol_.set_needs_reset(true);
  vol_.metrics().queue_errors.fetch_add(1, std::memory_order_relaxed);
  if (log_limit_.allow())
    LOG_WARN("volume %s queue %u: the driver broke the queue (%s); no more requests are taken until it resets the "
             "device (DEVICE_NEEDS_RESET)",
             vol_.params().name.c_str(), index_, why.c_str());
  notify_fd(ring_.err_fd);
}

}  // namespace azote::card_blk
