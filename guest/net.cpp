#include "net.hpp"

#include "platform.hpp"
#include "programs.hpp"

namespace az::vnet {

namespace {

using namespace az::virtio;

constexpr size_t kMaxWindows = 32;
constexpr uint16_t kQueueRx = 0;
constexpr uint16_t kQueueTx = 1;
constexpr uint32_t kMaxResets = 3;

// Config space (struct virtio_net_config).
constexpr uint32_t kCfgMac = 0;
constexpr uint32_t kCfgStatus = 6;
constexpr uint32_t kCfgMtu = 10;
constexpr uint32_t kCfgBytes = 12;  // what this driver reads
constexpr uint16_t kStatusLinkUp = 1;

// Features this driver takes when offered; VERSION_1 is required. No CSUM/GUEST_CSUM
// (checksums are computed and verified here), no MRG_RXBUF (every receive buffer
// holds a whole frame), no GSO, no control queue, no multiqueue.
constexpr uint64_t kWanted = kFVersion1 | kFAccessPlatform | kFOrderPlatform | kFMac | kFMtu | kFStatus;

uint16_t pow2_floor(uint32_t v) {
  uint32_t p = 1;
  while (p * 2 <= v && p * 2 <= 32768) p *= 2;
  return static_cast<uint16_t>(p);
}

void zero(uint64_t addr, size_t n) {
  auto* p = phys<uint8_t>(addr);
  for (size_t i = 0; i < n; ++i) p[i] = 0;
}

}  // namespace

Line Device::error_line() const {
  Line l;
  l.s(kPrefix).s(who_).s(" io-error ");
  return l;
}

void Device::die(Line& l) const {
  l.print();
  exit(1);
}

void Device::setup_failed(const char* what, uint64_t value) {
  dev_.set_status(dev_.status() | kStatusFailed);
  Line l = error_line();
  l.s("virtio-net at 0x").x(base_).s(": ").s(what);
  if (value != ~0ull) l.s(" 0x").x(value);
  die(l);
}

void Device::device_trouble(uint32_t status) const {
  Line l = error_line();
  l.s("virtio-net at 0x").x(base_).s(": device status 0x").x(status);
  if (status & kStatusNeedsReset) l.s(" (DEVICE_NEEDS_RESET)");
  if (status & kStatusFailed) l.s(" (FAILED)");
  if (!(status & kStatusDriverOk)) l.s(" (not DRIVER_OK)");
  l.s(", ").u(resets_).s(" resets so far");
  die(l);
}

Device::Open Device::open(const Options& o) {
  who_ = o.who;
  MmioWindow w[kMaxWindows];
  const size_t n = find_windows(platform::cmdline(), w, kMaxWindows);
  for (size_t i = 0; i < n; ++i) {
    if (!usable_window(w[i], kDeviceIdNet, "virtio-net", kCfgBytes)) continue;
    opts_ = o;
    base_ = w[i].base;
    irq_ = w[i].irq;
    setup(true);
    return Open::kOk;
  }
  return Open::kNoDevice;
}

void Device::setup(bool first) {
  dev_ = MmioDevice(base_);
  tsc_hz_ = tsc_hz();
  if (tsc_hz_ == 0) tsc_hz_ = 3000000000ull;  // unknown: timeouts only get longer

  // §3.1.1 and §5.1.5: reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK, queues
  // (receive buffers posted), DRIVER_OK.
  if (!dev_.reset()) setup_failed("does not complete a reset (status stays nonzero)");
  dev_.set_status(kStatusAcknowledge);
  dev_.set_status(kStatusAcknowledge | kStatusDriver);
  const uint64_t offered = dev_.device_features();
  if (!(offered & kFVersion1)) setup_failed("does not offer VIRTIO_F_VERSION_1; features", offered);
  features_ = offered & kWanted;
  dev_.set_driver_features(features_);
  dev_.set_status(kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk);
  if (!(dev_.status() & kStatusFeaturesOk)) setup_failed("refused the features (FEATURES_OK clear); accepted", features_);

  if (features_ & kFMac) {
    for (uint32_t i = 0; i < 6; ++i) mac_[i] = dev_.config8(kCfgMac + i);
  } else if (first) {
    // §5.1.4.1: without VIRTIO_NET_F_MAC the driver picks a random address
    // (locally administered, unicast).
    uint64_t r = rdtsc() * 0x9e3779b97f4a7c15ull;
    r ^= r >> 29;
    for (auto& b : mac_) {
      b = static_cast<uint8_t>(r);
      r >>= 8;
    }
    mac_[0] = static_cast<uint8_t>((mac_[0] & 0xfc) | 0x02);
  }
  if ((mac_[0] & 1) != 0) setup_failed("config MAC address is a multicast address; first byte", mac_[0]);
  mtu_ = kDefaultMtu;
  if (features_ & kFMtu) {
    const uint16_t m = dev_.config16(kCfgMtu);
    if (m < 68) setup_failed("config mtu is below 68:", m);
    if (m < mtu_) mtu_ = m;
  }

  for (uint16_t q = 0; q < 2; ++q) {
    dev_.write(kRegQueueSel, q);
    const uint32_t num_max = dev_.read(kRegQueueNumMax);
    if (num_max == 0) setup_failed("queue is not available: QueueNumMax = 0 for queue", q);
    const uint16_t want = q == kQueueRx ? opts_.rx_buffers : opts_.tx_buffers;
    uint16_t size = pow2_floor(num_max);
    const uint16_t cap = pow2_floor(want == 0 ? 1 : (want > kMaxBuffers ? kMaxBuffers : want));
    if (size > cap) size = cap;
    uint16_t& n = q == kQueueRx ? rx_n_ : tx_n_;
    uint64_t& ring = q == kQueueRx ? rx_ring_ : tx_ring_;
    uint64_t& bufs = q == kQueueRx ? rx_bufs_ : tx_bufs_;
    if (first) {
      n = size;
      ring = platform::alloc_io(SplitQueue::bytes(size), 4096);
      bufs = platform::alloc_io(uint64_t{size} * kBufBytes, 4096);
      if (ring == 0 || bufs == 0) setup_failed("no free RAM for queue", q);
    } else if (size < n) {
      setup_failed("queue shrank after a reset; QueueNumMax", num_max);
    }
    SplitQueue& sq = q == kQueueRx ? rxq_ : txq_;
    if (!sq.init(dev_, q, n, ring)) setup_failed("did not enable queue (QueueReady reads 0) for queue", q);
  }

  // Receive: descriptor i is buffer i, device-writable, all posted. Transmit:
  // descriptor i is buffer i, device-readable, all free.
  for (uint16_t i = 0; i < rx_n_; ++i) {
    Desc& d = rxq_.desc(i);
    d.addr = rx_bufs_ + uint64_t{i} * kBufBytes;
    d.len = static_cast<uint32_t>(kBufBytes);
    d.flags = kDescFWrite;
    d.next = 0;
    rx_posted_[i] = true;
    rxq_.push(i);
  }
  tx_nfree_ = 0;
  for (uint16_t i = 0; i < tx_n_; ++i) {
    Desc& d = txq_.desc(i);
    d.addr = tx_bufs_ + uint64_t{i} * kBufBytes;
    d.len = 0;
    d.flags = 0;
    d.next = 0;
    tx_busy_[i] = false;
    tx_free_[tx_nfree_++] = static_cast<uint16_t>(tx_n_ - 1 - i);
  }
  zero(tx_bufs_, uint64_t{tx_n_} * kBufBytes);  // every header stays all-zero
  tx_have_ = false;

  dev_.set_status(kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk);
  const uint32_t st = dev_.status();
  if ((st & (kStatusNeedsReset | kStatusFailed)) || !(st & kStatusDriverOk)) device_trouble(st);
  rxq_.publish();  // after DRIVER_OK: the device may be notified now
  next_check_ = rdtsc() + tsc_hz_ / 10;

  Line l;
  l.s(kPrefix).s("virtio-net at 0x").x(base_).s(" irq=").u(irq_).s(" mac=");
  for (int i = 0; i < 6; ++i) {
    if (i > 0) l.c(':');
    l.hex2(mac_[i]);
  }
  l.s(" mtu=").u(mtu_).s(" link=").s(link_up() ? "up" : "down").s(" features=0x").x(features_).s(" rx_buffers=")
      .u(rx_n_).s(" tx_buffers=").u(tx_n_).print();
}

bool Device::link_up() const {
  if (!(features_ & kFStatus)) return true;
  return (dev_.config16(kCfgStatus) & kStatusLinkUp) != 0;
}

bool Device::rx_poll(Frame* f) {
  UsedElem e;
  while (rxq_.pop(&e)) {
    if (e.id >= rx_n_ || !rx_posted_[e.id]) {
      Line l = error_line();
      l.s("virtio-net at 0x").x(base_).s(": receive used ring returned unknown id ").u(e.id);
      die(l);
    }
    const auto id = static_cast<uint16_t>(e.id);
    rx_posted_[id] = false;
    // The device wrote e.len bytes: the header and a frame of at least an Ethernet
    // header, never more than the buffer.
    if (e.len < kHdrBytes + 14 || e.len > kBufBytes) {
      ++rx_bad_;
      rx_done(Frame{nullptr, 0, id, resets_});
      continue;
    }
    ++rx_frames_;
    f->data = phys<const uint8_t>(rx_bufs_ + uint64_t{id} * kBufBytes + kHdrBytes);
    f->len = e.len - kHdrBytes;
    f->id = id;
    f->gen = resets_;
    return true;
  }
  return false;
}

void Device::rx_done(const Frame& f) {
  if (f.gen != resets_) return;
  if (f.id >= rx_n_ || rx_posted_[f.id]) {
    Line l = error_line();
    l.s("rx_done of buffer ").u(f.id).s(" that is not ours (driver misuse)");
    die(l);
  }
  rx_posted_[f.id] = true;
  rxq_.push(f.id);
}

void Device::rx_publish() { rxq_.publish(); }

void Device::reclaim_tx() {
  UsedElem e;
  while (txq_.pop(&e)) {
    if (e.id >= tx_n_ || !tx_busy_[e.id]) {
      Line l = error_line();
      l.s("virtio-net at 0x").x(base_).s(": transmit used ring returned unknown id ").u(e.id);
      die(l);
    }
    tx_busy_[e.id] = false;
    tx_free_[tx_nfree_++] = static_cast<uint16_t>(e.id);
  }
}

uint8_t* Device::tx_buffer() {
  if (!tx_have_) {
    reclaim_tx();
    if (tx_nfree_ == 0) {
      txq_.publish();
      const uint64_t start = rdtsc();
      while (tx_nfree_ == 0) {
        for (int i = 0; i < 256 && tx_nfree_ == 0; ++i) {
          cpu_relax();
          reclaim_tx();
        }
        const uint64_t now = rdtsc();
        check_status(now);  // a reset frees every slot
        if (tx_nfree_ == 0 && now - start > tsc_hz_ * 30) {
          Line l = error_line();
          l.s("virtio-net at 0x").x(base_).s(": timeout, no transmit completion for 30 s with ").u(tx_n_).s(
              " frames in flight (device status 0x").x(dev_.status()).s(")");
          die(l);
        }
      }
    }
    tx_cur_ = tx_free_[--tx_nfree_];
    tx_have_ = true;
  }
  return phys<uint8_t>(tx_bufs_ + uint64_t{tx_cur_} * kBufBytes + kHdrBytes);
}

void Device::tx_queue(size_t len) {
  if (!tx_have_ || len > kMaxFrame || len < 14) {
    Line l = error_line();
    l.s("bad tx_queue: len=").u(len).s(tx_have_ ? "" : " without a buffer").s(" (driver misuse)");
    die(l);
  }
  const uint16_t id = tx_cur_;
  tx_have_ = false;
  // The header (flags, gso_type, hdr_len, gso_size, csum_start, csum_offset,
  // num_buffers) is all zero: no offload; it was zeroed at setup and never written.
  txq_.desc(id).len = static_cast<uint32_t>(kHdrBytes + len);
  tx_busy_[id] = true;
  txq_.push(id);
  ++tx_frames_;
}

void Device::tx_publish() { txq_.publish(); }

void Device::check() {
  const uint64_t now = rdtsc();
  if (now >= next_check_) check_status(now);
}

void Device::check_status(uint64_t now) {
  if (now < next_check_) return;
  next_check_ = now + tsc_hz_ / 10;
  const uint32_t st = dev_.status();
  if ((st & kStatusNeedsReset) && !(st & kStatusFailed) && resets_ < kMaxResets) {
    Line().s(kPrefix).s("net device needs reset").print();
    ++resets_;
    // Frames the program holds (rx) or queued (tx) are abandoned: after a reset the
    // device uses none of them, and setup() posts every buffer again.
    setup(false);
    return;
  }
  if ((st & (kStatusNeedsReset | kStatusFailed)) || !(st & kStatusDriverOk)) device_trouble(st);
}

}  // namespace az::vnet
