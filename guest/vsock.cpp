#include "vsock.hpp"

#include "platform.hpp"
#include "programs.hpp"

namespace az::vsock {

namespace {

using namespace az::virtio;

constexpr size_t kMaxWindows = 32;
constexpr uint16_t kQueueRx = 0, kQueueTx = 1, kQueueEvent = 2;

// Config space (struct virtio_vsock_config): le64 guest_cid.
constexpr uint32_t kCfgGuestCid = 0;
constexpr uint32_t kCfgBytes = 8;

// Device feature bits (§5.10.3). STREAM is what "no feature bit" means too; taken when
// offered. SEQPACKET is never taken.
constexpr uint64_t kFStream = 1ull << 0;
constexpr uint64_t kWanted = kFVersion1 | kFAccessPlatform | kFOrderPlatform | kFStream;

// struct virtio_vsock_event { le32 id; }: the only event is TRANSPORT_RESET.
constexpr uint32_t kEventTransportReset = 0;
constexpr uint32_t kEventBytes = 4;

// Buffer strides in the shared memory: a receive buffer is the header and up to
// kPayloadMax bytes in one descriptor; a transmit slot keeps the header at +0 and the
// payload at +64, each in its own descriptor (2s and 2s+1).
constexpr uint32_t kRxBufBytes = kHdrBytes + kPayloadMax;
constexpr uint64_t kStride = 64 + kPayloadMax;
constexpr uint64_t kTxPayload = 64;
constexpr uint64_t kEvStride = 8;

constexpr const char* kWhyRefused = "connection refused (RST)";

uint16_t pow2_floor(uint32_t v, uint16_t cap) {
  uint32_t p = 1;
  while (p * 2 <= v && p * 2 <= cap) p *= 2;
  return static_cast<uint16_t>(p);
}

// One copy out of (or into) shared memory. The barrier after it keeps the compiler
// from reading the shared bytes again in place of the copy.
void copy(uint8_t* dst, const uint8_t* src, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] = src[i];
  asm volatile("" ::: "memory");
}

}  // namespace

const char* err_text(int64_t e) {
  switch (e) {
    case kErrTimeout: return "timeout";
    case kErrRefused: return "connection refused (RST)";
    case kErrReset: return "connection reset";
    case kEof: return "the peer closed the connection";
    case kErrDevice: return "device error";
    case kErrNoSlot: return "connection table full";
    case kErrInUse: return "port already in use";
    case kErrPipe: return "the peer no longer receives (SHUTDOWN)";
    case kErrProtocol: return "protocol error (the peer answered neither RESPONSE nor RST)";
    case kErrMisuse: return "bad connection handle or state (driver misuse)";
    default: return "?";
  }
}

// ---------------------------------------------------------------- the device
bool Device::fail(const char* what, uint64_t value) {
  if (!dead_) {
    err_what_ = what;
    err_value_ = value;
  }
  dead_ = true;
  return false;
}

bool Device::setup_failed(const char* what, uint64_t value) {
  dev_.set_status(dev_.status() | kStatusFailed);
  return fail(what, value);
}

Line& Device::append_error(Line& l) const {
  l.s("virtio-vsock at 0x").x(base_).s(": ").s(err_what_);
  if (err_value_ != ~0ull) l.s(" 0x").x(err_value_);
  return l;
}

Line& Device::append_description(Line& l) const {
  l.s("virtio-vsock at 0x").x(base_).s(" irq=").u(irq_).s(" cid=").u(cid_).s(" features=0x").x(features_);
  return l.s(" rx_buffers=").u(rx_n_).s(" tx_slots=").u(tx_slots_).s(" event_buffers=").u(ev_n_);
}

Device::Open Device::open() {
  MmioWindow w[kMaxWindows];
  const size_t n = find_windows(platform::cmdline(), w, kMaxWindows);
  for (size_t i = 0; i < n; ++i) {
    if (!usable_window(w[i], kDeviceIdVsock, "virtio-vsock", kCfgBytes)) continue;
    base_ = w[i].base;
    irq_ = w[i].irq;
    return setup() ? Open::kOk : Open::kFailed;
  }
  return Open::kNoDevice;
}

bool Device::setup() {
  dev_ = MmioDevice(base_);
  tsc_hz_ = az::tsc_hz();
  if (tsc_hz_ == 0) tsc_hz_ = 3000000000ull;  // unknown: timeouts only get longer

  // §3.1.1 and §5.10.5: reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK, the three
  // queues (receive and event buffers posted), DRIVER_OK.
  if (!dev_.reset()) return setup_failed("does not complete a reset (status stays nonzero)");
  dev_.set_status(kStatusAcknowledge);
  dev_.set_status(kStatusAcknowledge | kStatusDriver);
  const uint64_t offered = dev_.device_features();
  if (!(offered & kFVersion1)) return setup_failed("does not offer VIRTIO_F_VERSION_1; features", offered);
  features_ = offered & kWanted;
  dev_.set_driver_features(features_);
  dev_.set_status(kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk);
  if (!(dev_.status() & kStatusFeaturesOk))
    return setup_failed("refused the features (FEATURES_OK clear); accepted", features_);

  // ENCLAVES.md §6: 0-2 are the hypervisor, local and host, 0xffffffff is "any";
  // anything past 32 bits cannot be a CID.
  cid_ = dev_.config64(kCfgGuestCid);
  if (cid_ < kCidParent || cid_ >= 0xffffffffull) return setup_failed("config guest_cid is reserved or too large:", cid_);

  uint16_t sizes[3] = {};
  for (uint16_t q = 0; q < 3; ++q) {
    dev_.write(kRegQueueSel, q);
    const uint32_t num_max = dev_.read(kRegQueueNumMax);
    if (num_max < (q == kQueueTx ? 2u : 1u)) return setup_failed("queue too small or missing: QueueNumMax", num_max);
    sizes[q] = pow2_floor(num_max, q == kQueueRx ? kMaxRx : q == kQueueTx ? 2 * kMaxTxSlots : kMaxEvents);
  }
  rx_n_ = sizes[kQueueRx];
  tx_slots_ = static_cast<uint16_t>(sizes[kQueueTx] / 2);
  ev_n_ = sizes[kQueueEvent];
  const uint64_t rx_ring = platform::alloc_io(SplitQueue::bytes(rx_n_), 4096);
  const uint64_t tx_ring = platform::alloc_io(SplitQueue::bytes(sizes[kQueueTx]), 4096);
  const uint64_t ev_ring = platform::alloc_io(SplitQueue::bytes(ev_n_), 4096);
  rx_bufs_ = platform::alloc_io(rx_n_ * kStride, 4096);
  tx_bufs_ = platform::alloc_io(tx_slots_ * kStride, 4096);
  ev_bufs_ = platform::alloc_io(ev_n_ * kEvStride, 64);
  // The connections' receive buffers are private: the device never sees them.
  const uint64_t rbufs = platform::alloc(uint64_t{kMaxConns} * kBufAlloc, 4096, 1ull << 20, 3ull << 30);
  if (rx_ring == 0 || tx_ring == 0 || ev_ring == 0 || rx_bufs_ == 0 || tx_bufs_ == 0 || ev_bufs_ == 0 || rbufs == 0)
    return setup_failed("no free RAM for the queues and buffers");
  if (!rxq_.init(dev_, kQueueRx, rx_n_, rx_ring)) return setup_failed("did not enable queue (QueueReady reads 0)", kQueueRx);
  if (!txq_.init(dev_, kQueueTx, sizes[kQueueTx], tx_ring))
    return setup_failed("did not enable queue (QueueReady reads 0)", kQueueTx);
  if (!evq_.init(dev_, kQueueEvent, ev_n_, ev_ring))
    return setup_failed("did not enable queue (QueueReady reads 0)", kQueueEvent);

  for (uint16_t i = 0; i < rx_n_; ++i) {
    Desc& d = rxq_.desc(i);
    d.addr = rx_bufs_ + i * kStride;
    d.len = kRxBufBytes;
    d.flags = kDescFWrite;
    d.next = 0;
    rx_posted_[i] = true;
    rxq_.push(i);
  }
  for (uint16_t i = 0; i < ev_n_; ++i) {
    Desc& d = evq_.desc(i);
    d.addr = ev_bufs_ + i * kEvStride;
    d.len = kEventBytes;
    d.flags = kDescFWrite;
    d.next = 0;
    ev_posted_[i] = true;
    evq_.push(i);
  }
  tx_nfree_ = 0;
  for (uint16_t s = 0; s < tx_slots_; ++s) {
    Desc& h = txq_.desc(static_cast<uint16_t>(2 * s));
    h.addr = tx_bufs_ + s * kStride;
    h.len = kHdrBytes;
    h.flags = 0;
    h.next = static_cast<uint16_t>(2 * s + 1);
    Desc& p = txq_.desc(static_cast<uint16_t>(2 * s + 1));
    p.addr = tx_bufs_ + s * kStride + kTxPayload;
    p.len = 0;
    p.flags = 0;
    p.next = 0;
    tx_busy_[s] = false;
    tx_free_[tx_nfree_++] = static_cast<uint16_t>(tx_slots_ - 1 - s);
  }
  for (uint32_t i = 0; i < kMaxConns; ++i) {
    conns_[i] = Conn{};
    conns_[i].rbuf = phys<uint8_t>(rbufs + uint64_t{i} * kBufAlloc);
  }
  // Ephemeral ports from a TSC-seeded point in 49152-65535, so a rerun does not meet
  // a half-closed connection of the last run at the peer.
  next_port_ = 49152 + static_cast<uint32_t>((rdtsc() * 0x9e3779b97f4a7c15ull) >> 50);

  dev_.set_status(kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk);
  const uint32_t st = dev_.status();
  if ((st & (kStatusNeedsReset | kStatusFailed)) || !(st & kStatusDriverOk))
    return fail("device status after DRIVER_OK", st);
  rxq_.publish();  // after DRIVER_OK: the device may be notified now
  evq_.publish();
  next_check_ = rdtsc() + tsc_hz_ / 10;
  return true;
}

void Device::check_status(uint64_t now) {
  next_check_ = now + tsc_hz_ / 10;
  const uint32_t st = dev_.status();
  if (st & kStatusNeedsReset) fail("device needs reset (DEVICE_NEEDS_RESET); status", st);
  else if (st & kStatusFailed) fail("device failed (FAILED); status", st);
  else if (!(st & kStatusDriverOk)) fail("device left DRIVER_OK; status", st);
}

// ------------------------------------------------------------------ transmit
void Device::reclaim_tx() {
  UsedElem e;
  while (!dead_ && txq_.pop(&e)) {
    // A chain's head is the slot's header descriptor, 2s.
    const uint32_t s = e.id / 2;
    if ((e.id & 1) != 0 || s >= tx_slots_ || !tx_busy_[s]) {
      fail("transmit used ring returned an id that is not in flight:", e.id);
      return;
    }
    tx_busy_[s] = false;
    tx_free_[tx_nfree_++] = static_cast<uint16_t>(s);
  }
}

int Device::take_slot() {
  if (tx_nfree_ == 0) reclaim_tx();
  if (dead_ || tx_nfree_ == 0) return -1;
  return tx_free_[--tx_nfree_];
}

Hdr Device::header(uint16_t op, uint32_t flags, uint32_t src_port, uint64_t dst_cid, uint32_t dst_port, uint32_t len) {
  Hdr h{};
  h.src_cid = cid_;
  h.dst_cid = dst_cid;
  h.src_port = src_port;
  h.dst_port = dst_port;
  h.len = len;
  h.type = kTypeStream;
  h.op = op;
  h.flags = flags;
  // buf_alloc and fwd_cnt of the connection (0 when there is none: an RST to a
  // stranger, as Linux sends it) -- every packet carries them.
  if (Conn* c = find(src_port, dst_cid, dst_port); c != nullptr && op != kOpRst) {
    h.buf_alloc = kBufAlloc;
    h.fwd_cnt = c->fwd_cnt;
    c->last_fwd_sent = c->fwd_cnt;
    c->credit_due = false;
  }
  return h;
}

void Device::put_packet(int s, const Hdr& h, const uint8_t* payload) {
  const auto slot = static_cast<uint16_t>(s);
  uint8_t* buf = phys<uint8_t>(tx_bufs_ + slot * kStride);
  copy(buf, reinterpret_cast<const uint8_t*>(&h), kHdrBytes);
  Desc& hd = txq_.desc(static_cast<uint16_t>(2 * slot));
  if (h.len > 0) {
    copy(buf + kTxPayload, payload, h.len);
    txq_.desc(static_cast<uint16_t>(2 * slot + 1)).len = h.len;
    hd.flags = kDescFNext;
  } else {
    hd.flags = 0;
  }
  tx_busy_[slot] = true;
  txq_.push(static_cast<uint16_t>(2 * slot));
  ++tx_packets_;
  if (h.op == kOpRst) ++rst_sent_;
}

bool Device::queue_ctl(uint16_t op, uint32_t flags, uint32_t src_port, uint64_t dst_cid, uint32_t dst_port) {
  if (ctl_n_ == kCtlRing) {
    ++ctl_lost_;
    return false;
  }
  ctl_[(ctl_head_ + ctl_n_++) % kCtlRing] = Ctl{op, flags, src_port, dst_cid, dst_port};
  return true;
}

void Device::flush_ctl() {
  bool pushed = false;
  while (!dead_ && ctl_n_ > 0) {
    const int s = take_slot();
    if (s < 0) break;
    const Ctl& k = ctl_[ctl_head_];
    put_packet(s, header(k.op, k.flags, k.src_port, k.dst_cid, k.dst_port, 0), nullptr);
    ctl_head_ = (ctl_head_ + 1) % kCtlRing;
    --ctl_n_;
    pushed = true;
  }
  // CREDIT_UPDATEs are not ordered with anything: they go after the queue.
  for (uint32_t i = 0; i < kMaxConns && !dead_ && ctl_n_ == 0; ++i) {
    Conn& c = conns_[i];
    if (!c.credit_due) continue;
    if (c.state != kEstablished || c.reset) {
      c.credit_due = false;
      continue;
    }
    const int s = take_slot();
    if (s < 0) break;
    put_packet(s, header(kOpCreditUpdate, 0, c.local_port, c.peer_cid, c.peer_port, 0), nullptr);
    pushed = true;
  }
  if (pushed) txq_.publish();
}

// ------------------------------------------------------------------- receive
bool Device::poll() {
  if (dead_) return false;
  reclaim_tx();
  UsedElem e;
  bool reposted = false;
  while (!dead_ && rxq_.pop(&e)) {
    if (e.id >= rx_n_ || !rx_posted_[e.id]) {
      fail("receive used ring returned an id that is not in flight:", e.id);
      break;
    }
    rx_posted_[e.id] = false;
    rx_one(static_cast<uint16_t>(e.id), e.len);
    rx_posted_[e.id] = true;
    rxq_.push(static_cast<uint16_t>(e.id));
    reposted = true;
  }
  if (reposted && !dead_) rxq_.publish();
  reposted = false;
  while (!dead_ && evq_.pop(&e)) {
    if (e.id >= ev_n_ || !ev_posted_[e.id]) {
      fail("event used ring returned an id that is not in flight:", e.id);
      break;
    }
    if (e.len >= kEventBytes) {
      uint8_t ev[kEventBytes];
      copy(ev, phys<const uint8_t>(ev_bufs_ + e.id * kEvStride), kEventBytes);
      handle_event(uint32_t{ev[0]} | uint32_t{ev[1]} << 8 | uint32_t{ev[2]} << 16 | uint32_t{ev[3]} << 24);
    } else {
      ++rx_dropped_;
    }
    evq_.push(static_cast<uint16_t>(e.id));
    reposted = true;
  }
  if (reposted && !dead_) evq_.publish();
  if (dead_) return false;

  const uint64_t now = rdtsc();
  for (Conn& c : conns_) {
    if (c.state == kClosing && now > c.deadline) {
      queue_ctl(c, kOpRst);
      free_conn(c);
    }
  }
  flush_ctl();
  if (now >= next_check_) check_status(now);
  return !dead_;
}

bool Device::rx_one(uint16_t id, uint32_t used_len) {
  // The device wrote used_len bytes: at least a header, never more than the buffer.
  if (used_len < kHdrBytes || used_len > kRxBufBytes) {
    ++rx_dropped_;
    return false;
  }
  const uint64_t buf = rx_bufs_ + id * kStride;
  Hdr h;
  copy(reinterpret_cast<uint8_t*>(&h), phys<const uint8_t>(buf), kHdrBytes);
  // The header's len must fit in what the device says it wrote (so <= kPayloadMax).
  if (h.len > used_len - kHdrBytes) {
    ++rx_dropped_;
    return false;
  }
  ++rx_packets_;
  handle(h, buf + kHdrBytes);
  return true;
}

Device::Conn* Device::find(uint32_t local_port, uint64_t peer_cid, uint32_t peer_port) {
  for (Conn& c : conns_)
    if (c.state != kFree && c.local_port == local_port && c.peer_cid == peer_cid && c.peer_port == peer_port) return &c;
  return nullptr;
}

bool Device::listening(uint32_t port) const {
  for (uint32_t i = 0; i < nlisteners_; ++i)
    if (listeners_[i] == port) return true;
  return false;
}

bool Device::port_in_use(uint32_t port) const {
  if (listening(port)) return true;
  for (const Conn& c : conns_)
    if (c.state != kFree && c.local_port == port) return true;
  return false;
}

int64_t Device::new_conn() {
  for (uint32_t i = 0; i < kMaxConns; ++i) {
    if (conns_[i].state != kFree) continue;
    Conn& c = conns_[i];
    uint8_t* rbuf = c.rbuf;
    c = Conn{};
    c.rbuf = rbuf;
    c.seq = next_seq_++;
    return i;
  }
  return kErrNoSlot;
}

void Device::free_conn(Conn& c) {
  uint8_t* rbuf = c.rbuf;
  c = Conn{};
  c.rbuf = rbuf;
}

void Device::mark_reset(Conn& c, const char* why) {
  if (c.reset) return;
  c.reset = true;
  c.why = why;
  c.credit_due = false;
}

void Device::copy_in(Conn& c, uint64_t src, uint32_t n) {
  // The ring has room (checked by the caller): at most two pieces.
  const uint32_t tail = (c.rhead + c.rlen) % kBufAlloc;
  const uint32_t first = n < kBufAlloc - tail ? n : kBufAlloc - tail;
  copy(c.rbuf + tail, phys<const uint8_t>(src), first);
  copy(c.rbuf, phys<const uint8_t>(src + first), n - first);
  c.rlen += n;
}

void Device::handle(const Hdr& h, uint64_t payload) {
  // The card delivers only what is addressed to us; anything else is its bug. A
  // control packet never carries a payload.
  if (h.dst_cid != cid_ || h.op < kOpRequest || h.op > kOpCreditRequest || (h.op != kOpRw && h.len != 0)) {
    ++rx_dropped_;
    return;
  }
  // Not a stream (SEQPACKET was not negotiated): refused as Linux does.
  if (h.type != kTypeStream) {
    ++rx_dropped_;
    if (h.op != kOpRst) queue_ctl(kOpRst, 0, h.dst_port, h.src_cid, h.src_port);
    return;
  }
  Conn* c = find(h.dst_port, h.src_cid, h.src_port);
  if (c == nullptr) {
    if (h.op == kOpRst) return;
    if (h.op == kOpRequest && listening(h.dst_port)) {
      const int64_t k = new_conn();
      if (k >= 0) {
        Conn& n = conns_[k];
        n.state = kEstablished;
        n.local_port = h.dst_port;
        n.peer_cid = h.src_cid;
        n.peer_port = h.src_port;
        n.peer_buf_alloc = h.buf_alloc;
        n.peer_fwd_cnt = h.fwd_cnt;
        if (queue_ctl(n, kOpResponse)) return;
        free_conn(n);  // the RESPONSE could not be queued: refuse
      }
    }
    // Nobody listens, the table is full, or a packet for a connection we do not have.
    queue_ctl(kOpRst, 0, h.dst_port, h.src_cid, h.src_port);
    return;
  }

  if (c->reset) {  // finished: like a socket that is gone
    if (h.op != kOpRst) queue_ctl(*c, kOpRst);
    return;
  }
  // Every packet carries the peer's buffer size and how much of our data it consumed.
  c->peer_buf_alloc = h.buf_alloc;
  c->peer_fwd_cnt = h.fwd_cnt;

  switch (c->state) {
    case kConnecting:
      if (h.op == kOpResponse) {
        c->state = kEstablished;
      } else if (h.op == kOpRst) {
        mark_reset(*c, kWhyRefused);
      } else {
        queue_ctl(*c, kOpRst);
        mark_reset(*c, "protocol error: the peer answered neither RESPONSE nor RST");
      }
      return;
    case kEstablished:
      switch (h.op) {
        case kOpRw:
          if (h.len > kBufAlloc - c->rlen) {
            // More than the credit we advertised: the stream cannot go on intact.
            ++rx_dropped_;
            queue_ctl(*c, kOpRst);
            mark_reset(*c, "the peer sent more than its credit (RST sent)");
            return;
          }
          copy_in(*c, payload, h.len);
          return;
        case kOpCreditRequest:
          c->credit_due = true;
          return;
        case kOpCreditUpdate:
          return;
        case kOpShutdown:
          c->peer_shutdown = static_cast<uint8_t>(c->peer_shutdown | (h.flags & kShutdownBoth));
          // Linux answers a full SHUTDOWN with RST at once when nothing is left to
          // read; otherwise close() does, after the application read it.
          if (c->peer_shutdown == kShutdownBoth && c->rlen == 0 && !c->rst_sent) {
            queue_ctl(*c, kOpRst);
            c->rst_sent = true;
          }
          return;
        case kOpRst:
          mark_reset(*c, "connection reset by the peer (RST)");
          return;
        default:  // REQUEST or RESPONSE on an established connection
          ++rx_dropped_;
          return;
      }
    case kClosing:
      if (h.op == kOpRst) {
        free_conn(*c);
      } else if (h.op == kOpShutdown) {
        c->peer_shutdown = static_cast<uint8_t>(c->peer_shutdown | (h.flags & kShutdownBoth));
        if (c->peer_shutdown == kShutdownBoth) {
          queue_ctl(*c, kOpRst);
          free_conn(*c);
        }
      }
      // Data after our SHUTDOWN is discarded; credit requests are not answered.
      return;
    case kFree:
      return;
  }
}

void Device::handle_event(uint32_t id) {
  if (id != kEventTransportReset) {
    ++rx_dropped_;
    return;
  }
  transport_reset();
}

// §5.10.6.7: after TRANSPORT_RESET the connections are gone (the peer no longer knows
// them) and the CID may have changed. Listeners stay.
void Device::transport_reset() {
  const uint64_t cid = dev_.config64(kCfgGuestCid);
  if (cid < kCidParent || cid >= 0xffffffffull) {
    fail("config guest_cid after a transport reset is reserved or too large:", cid);
    return;
  }
  cid_ = cid;
  ctl_n_ = 0;
  for (Conn& c : conns_) {
    if (c.state == kClosing) free_conn(c);
    else if (c.state != kFree) mark_reset(c, "transport reset (device event)");
  }
}

// -------------------------------------------------------------------- sockets
int64_t Device::listen(uint32_t port) {
  if (port == kPortAny || listening(port) || nlisteners_ == kMaxListeners) return kErrInUse;
  listeners_[nlisteners_++] = port;
  return 0;
}

int64_t Device::accept(uint64_t timeout) {
  int64_t found = -1;
  const int64_t r = wait(
      [&] {
        uint64_t best = ~0ull;
        for (uint32_t i = 0; i < kMaxConns; ++i) {
          const Conn& c = conns_[i];
          if ((c.state == kEstablished) && !c.accepted && c.seq < best) {
            best = c.seq;
            found = i;
          }
        }
        return found >= 0;
      },
      timeout);
  if (r < 0) return r;
  conns_[found].accepted = true;
  return found;
}

int64_t Device::connect(uint64_t cid, uint32_t port, uint64_t timeout) {
  if (dead_) return kErrDevice;
  const int64_t k = new_conn();
  if (k < 0) return k;
  uint32_t lp = next_port_;
  for (int tries = 0; port_in_use(lp); ++tries) {
    if (tries > 70000) return kErrNoSlot;
    lp = lp >= 65535 ? 49152 : lp + 1;
  }
  next_port_ = lp >= 65535 ? 49152 : lp + 1;
  Conn& c = conns_[k];
  c.state = kConnecting;
  c.accepted = true;
  c.local_port = lp;
  c.peer_cid = cid;
  c.peer_port = port;
  if (!queue_ctl(c, kOpRequest)) {
    free_conn(c);
    return kErrNoSlot;
  }
  const int64_t r = wait([&c] { return c.state != kConnecting || c.reset; }, timeout);
  if (r == kErrTimeout) {
    queue_ctl(c, kOpRst);
    free_conn(c);
    flush_ctl();
    return kErrTimeout;
  }
  if (r < 0) return r;
  if (c.reset) {
    const bool refused = c.why == kWhyRefused;
    free_conn(c);
    return refused ? kErrRefused : kErrProtocol;
  }
  return k;
}

uint32_t Device::credit_of(const Conn& c) const {
  // As Linux: the peer's buffer, capped at ours, less what is in flight; signed, so a
  // peer that shrinks its buffer (or reports a fwd_cnt ahead of what we sent) gives 0.
  const int64_t window = c.peer_buf_alloc < kBufAlloc ? c.peer_buf_alloc : kBufAlloc;
  const int64_t in_flight = static_cast<uint32_t>(c.tx_cnt - c.peer_fwd_cnt);
  const int64_t credit = window - in_flight;
  return credit > 0 ? static_cast<uint32_t>(credit) : 0;
}

uint32_t Device::credit(int64_t c) const { return valid(c) ? credit_of(conns_[c]) : 0; }
uint32_t Device::buffered(int64_t c) const { return valid(c) ? conns_[c].rlen : 0; }

int64_t Device::send(int64_t k, const uint8_t* p, size_t n) {
  if (dead_) return kErrDevice;
  if (!valid(k) || conns_[k].state != kEstablished) return kErrMisuse;
  Conn& c = conns_[k];
  if (c.reset) return kErrReset;
  if (c.peer_shutdown & kShutdownRcv) return kErrPipe;
  // Control packets queued earlier (a RESPONSE above all) go first.
  if (ctl_n_ > 0) flush_ctl();
  if (ctl_n_ > 0) return 0;
  size_t done = 0;
  while (done < n) {
    uint32_t chunk = credit_of(c);
    if (chunk == 0) {
      const uint64_t now = rdtsc();
      if (done == 0 && now - c.credit_req_at > tsc_hz_) {
        c.credit_req_at = now;
        queue_ctl(c, kOpCreditRequest);
        flush_ctl();
      }
      break;
    }
    if (chunk > kPayloadMax) chunk = kPayloadMax;
    if (chunk > n - done) chunk = static_cast<uint32_t>(n - done);
    const int s = take_slot();
    if (s < 0) break;
    put_packet(s, header(kOpRw, 0, c.local_port, c.peer_cid, c.peer_port, chunk), p + done);
    c.tx_cnt += chunk;
    done += chunk;
  }
  if (done > 0) txq_.publish();
  if (dead_) return kErrDevice;
  return static_cast<int64_t>(done);
}

void Device::consumed(Conn& c, uint32_t n) {
  c.fwd_cnt += n;
  // Tell the peer once it could be waiting on half the buffer.
  if (c.fwd_cnt - c.last_fwd_sent >= kBufAlloc / 2) {
    c.credit_due = true;
    flush_ctl();
  }
}

int64_t Device::recv(int64_t k, uint8_t* p, size_t n) {
  if (dead_) return kErrDevice;
  if (!valid(k) || (conns_[k].state != kEstablished)) return kErrMisuse;
  Conn& c = conns_[k];
  if (c.rlen > 0 && n > 0) {
    uint32_t take = c.rlen;
    if (take > n) take = static_cast<uint32_t>(n);
    const uint32_t first = take < kBufAlloc - c.rhead ? take : kBufAlloc - c.rhead;
    for (uint32_t i = 0; i < first; ++i) p[i] = c.rbuf[c.rhead + i];
    for (uint32_t i = first; i < take; ++i) p[i] = c.rbuf[i - first];
    c.rhead = (c.rhead + take) % kBufAlloc;
    c.rlen -= take;
    if (!c.reset) consumed(c, take);
    return take;
  }
  if (c.rlen > 0) return 0;
  // Drained: a shutdown (even one followed by RST) is an orderly end, RST alone is not.
  if (c.peer_shutdown & kShutdownSend) return kEof;
  if (c.reset) return kErrReset;
  return 0;
}

int64_t Device::send_all(int64_t c, const uint8_t* p, size_t n, uint64_t timeout) {
  size_t done = 0;
  uint64_t last = rdtsc();
  while (done < n) {
    const int64_t r = send(c, p + done, n - done);
    if (r < 0) return r;
    const uint64_t now = rdtsc();
    if (r > 0) {
      done += static_cast<size_t>(r);
      last = now;
      continue;
    }
    // Out of credit or of transmit slots: let the device and the peer catch up.
    if (!poll()) return kErrDevice;
    if (timeout != kForever && now - last > timeout) return kErrTimeout;
    for (int i = 0; i < 32; ++i) cpu_relax();
  }
  return static_cast<int64_t>(n);
}

int64_t Device::recv_wait(int64_t c, uint8_t* p, size_t n, uint64_t timeout) {
  int64_t got = 0;
  const int64_t r = wait(
      [&] {
        got = recv(c, p, n);
        return got != 0;
      },
      timeout);
  if (r < 0 && got == 0) return r;
  return got;
}

void Device::close(int64_t k, uint64_t linger) {
  if (!valid(k)) return;
  Conn& c = conns_[k];
  if (c.state == kClosing) return;
  if (c.state != kEstablished || c.reset) {
    if (!c.reset) queue_ctl(c, kOpRst);  // still connecting
    free_conn(c);
  } else if (c.peer_shutdown == kShutdownBoth) {
    if (!c.rst_sent) queue_ctl(c, kOpRst);
    free_conn(c);
  } else {
    queue_ctl(c, kOpShutdown, kShutdownBoth);
    c.state = kClosing;
    const uint64_t now = rdtsc();
    c.deadline = linger == kForever || now + linger < now ? ~0ull : now + linger;
  }
  flush_ctl();
}

void Device::abort(int64_t k) {
  if (!valid(k)) return;
  Conn& c = conns_[k];
  if (!c.reset && !c.rst_sent) queue_ctl(c, kOpRst);
  free_conn(c);
  flush_ctl();
}

void Device::drain(uint64_t timeout) {
  wait(
      [this] {
        for (const Conn& c : conns_)
          if (c.state == kClosing) return false;
        return ctl_n_ == 0 && tx_nfree_ == tx_slots_;
      },
      timeout);
}

void exit_with_error(const Device& dev, const char* prog) {
  Line l;
  l.s(kPrefix).s(prog).s(" error: ");
  dev.append_error(l).print();
  exit(1);
}

void open_or_exit(Device& dev, const char* prog) {
  const Device::Open o = dev.open();
  if (o == Device::Open::kNoDevice) {
    Line().s(kPrefix).s(prog).s(" no vsock device").print();
    exit(2);
  }
  if (o != Device::Open::kOk) exit_with_error(dev, prog);
}

}  // namespace az::vsock
