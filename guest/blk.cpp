#include "blk.hpp"

#include "platform.hpp"
#include "programs.hpp"

namespace az::blk {

namespace {

using namespace az::virtio;

constexpr size_t kMaxWindows = 32;

// Config space offsets (struct virtio_blk_config).
constexpr uint32_t kCfgCapacity = 0;
constexpr uint32_t kCfgSizeMax = 8;
constexpr uint32_t kCfgSegMax = 12;
constexpr uint32_t kCfgBlkSize = 20;
constexpr uint32_t kCfgWriteback = 32;
constexpr uint32_t kCfgNumQueues = 34;
constexpr uint32_t kCfgBytes = 36;  // what this driver reads

// Features this driver takes when offered. VERSION_1 is required; ACCESS_PLATFORM
// and ORDER_PLATFORM need nothing more here (no IOMMU: guest-physical addresses
// are bus addresses; the barriers are real ones anyway).
// CONFIG_WCE changes nothing by itself: the device keeps its default cache mode
// until a program writes `writeback`.
constexpr uint64_t kWanted = kFVersion1 | kFAccessPlatform | kFOrderPlatform | kFSizeMax | kFSegMax | kFRo |
                             kFBlkSize | kFFlush | kFConfigWce | kFMq;

struct ReqHeader {
  uint32_t type;
  uint32_t reserved;
  uint64_t sector;
};
static_assert(sizeof(ReqHeader) == 16);

uint16_t pow2_floor(uint32_t v) {
  uint32_t p = 1;
  while (p * 2 <= v && p * 2 <= 32768) p *= 2;
  return static_cast<uint16_t>(p);
}

}  // namespace

Line Device::error_line() const {
  Line l;
  l.s(kPrefix).s(who_).s(" io-error ");
  return l;
}

void Device::die(Line& l) const {
  l.print();
  if (on_fatal_ != nullptr) on_fatal_();
  exit(1);
}

void Device::setup_failed(const char* what, uint64_t value) {
  dev_.set_status(dev_.status() | kStatusFailed);
  Line l = error_line();
  l.s("virtio-blk at 0x").x(dev_.base()).s(": ").s(what);
  if (value != ~0ull) l.s(" 0x").x(value);
  die(l);
}

void Device::device_trouble(uint32_t status) const {
  Line l = error_line();
  l.s("virtio-blk at 0x").x(dev_.base()).s(": device status 0x").x(status);
  if (status & kStatusNeedsReset) l.s(" (DEVICE_NEEDS_RESET)");
  if (status & kStatusFailed) l.s(" (FAILED)");
  if (!(status & kStatusDriverOk)) l.s(" (not DRIVER_OK)");
  l.s(", ").u(in_flight_).s(" requests in flight");
  die(l);
}

uint64_t Device::notifies() const {
  uint64_t n = 0;
  for (uint16_t q = 0; q < nqueues_; ++q) n += q_[q].notifies();
  return n;
}

Device::Open Device::open(const Options& o) {
  who_ = o.who;
  on_fatal_ = o.on_fatal;
  MmioWindow w[kMaxWindows];
  const size_t n = find_windows(platform::cmdline(), w, kMaxWindows);
  for (size_t i = 0; i < n; ++i) {
    if (!usable_window(w[i], kDeviceIdBlock, "virtio-blk", kCfgBytes)) continue;
    opts_ = o;
    setup(w[i].base, w[i].irq, o);
    return Open::kOk;
  }
  return Open::kNoDevice;
}

void Device::setup(uint64_t base, uint32_t irq, const Options& o) {
  dev_ = MmioDevice(base);
  irq_ = irq;
  tsc_hz_ = tsc_hz();
  if (tsc_hz_ == 0) tsc_hz_ = 3000000000ull;  // unknown: timeouts only get longer

  // §3.1.1: reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK, queues, DRIVER_OK.
  if (!dev_.reset()) setup_failed("does not complete a reset (status stays nonzero)");
  dev_.set_status(kStatusAcknowledge);
  dev_.set_status(kStatusAcknowledge | kStatusDriver);
  const uint64_t offered = dev_.device_features();
  if (!(offered & kFVersion1)) setup_failed("does not offer VIRTIO_F_VERSION_1; features", offered);
  features_ = offered & kWanted;
  dev_.set_driver_features(features_);
  dev_.set_status(kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk);
  if (!(dev_.status() & kStatusFeaturesOk)) setup_failed("refused the features (FEATURES_OK clear); accepted", features_);

  capacity_ = dev_.config64(kCfgCapacity);
  blk_size_ = 512;
  if (features_ & kFBlkSize) {
    const uint32_t b = dev_.config32(kCfgBlkSize);
    if (b >= 512 && b <= 65536 && (b & (b - 1)) == 0) blk_size_ = b;
  }
  uint32_t seg_max = ~0u;
  if (features_ & kFSegMax) {
    seg_max = dev_.config32(kCfgSegMax);
    if (seg_max == 0) seg_max = 1;
  }
  uint32_t size_max = ~0u;
  if (features_ & kFSizeMax) {
    // 0 is taken as "no limit": qemu-storage-daemon's vhost-user-blk export offers
    // SIZE_MAX with size_max = 0.
    const uint32_t v = dev_.config32(kCfgSizeMax);
    if (v != 0) size_max = v < 512 ? 512 : v & ~511u;
  }
  uint16_t dev_queues = 1;
  if (features_ & kFMq) {
    dev_queues = dev_.config16(kCfgNumQueues);
    if (dev_queues == 0) dev_queues = 1;
  }

  // Requests of up to o.max_request bytes, in segments of at most size_max and
  // at most seg_max segments; a smaller max_request() if the device needs it.
  uint32_t want = o.max_request < 512 ? 512 : o.max_request & ~511u;
  seg_bytes_ = want < size_max ? want : size_max;
  uint32_t segs = (want + seg_bytes_ - 1) / seg_bytes_;
  if (segs > seg_max) {
    segs = seg_max;
    want = segs * seg_bytes_;
  }
  if (segs > 256) {  // keep chains bounded: at most 258 descriptors per slot
    segs = 256;
    want = segs * seg_bytes_;
  }
  max_request_ = want;
  descs_per_slot_ = static_cast<uint16_t>(2 + segs);

  nqueues_ = o.queues == 0 ? 1 : o.queues;
  if (nqueues_ > dev_queues) nqueues_ = dev_queues;
  if (nqueues_ > kMaxQueues) nqueues_ = kMaxQueues;
  uint32_t want_slots = o.slots == 0 ? 1 : o.slots;
  if (want_slots > kMaxSlots) want_slots = kMaxSlots;
  if (want_slots < nqueues_) nqueues_ = static_cast<uint16_t>(want_slots);
  const uint32_t per_queue_want = (want_slots + nqueues_ - 1) / nqueues_;

  uint32_t per_queue = per_queue_want;
  for (uint16_t q = 0; q < nqueues_; ++q) {
    dev_.write(kRegQueueSel, q);
    const uint32_t num_max = dev_.read(kRegQueueNumMax);
    if (num_max == 0) setup_failed("queue is not available: QueueNumMax = 0 for queue", q);
    uint16_t size = pow2_floor(num_max);
    const uint32_t need = per_queue_want * descs_per_slot_;
    while (size / 2 >= need) size = static_cast<uint16_t>(size / 2);
    if (size < descs_per_slot_) setup_failed("queue too small for one request; QueueNumMax", num_max);
    const uint32_t fits = size / descs_per_slot_;
    if (fits < per_queue) per_queue = fits;
    const uint64_t mem = platform::alloc_io(SplitQueue::bytes(size), 4096);
    if (mem == 0) setup_failed("no free RAM for queue", q);
    if (!q_[q].init(dev_, q, size, mem)) setup_failed("did not enable queue (QueueReady reads 0) for queue", q);
  }
  nslots_ = per_queue * nqueues_;
  if (nslots_ > want_slots) nslots_ = want_slots;

  // Slot headers and status bytes.
  const uint64_t slot_mem = platform::alloc_io(uint64_t{nslots_} * (sizeof(ReqHeader) + 1), 64);
  if (slot_mem == 0) setup_failed("no free RAM for request headers");
  hdr_base_ = slot_mem;
  status_base_ = slot_mem + uint64_t{nslots_} * sizeof(ReqHeader);
  for (uint32_t k = 0; k < nslots_; ++k) busy_[k] = false;
  in_flight_ = 0;

  dev_.set_status(kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk);
  const uint32_t st = dev_.status();
  if ((st & (kStatusNeedsReset | kStatusFailed)) || !(st & kStatusDriverOk)) device_trouble(st);

  Line()
      .s(kPrefix)
      .s("virtio-blk at 0x")
      .x(base)
      .s(" irq=")
      .u(irq)
      .s(" capacity=")
      .u(capacity_)
      .s(" blk_size=")
      .u(blk_size_)
      .s(" features=0x")
      .x(features_)
      .s(" queues=")
      .u(nqueues_)
      .s(" queue_size=")
      .u(q_[0].size())
      .s(" slots=")
      .u(nslots_)
      .s(" max_request=")
      .u(max_request_)
      .print();
}

uint8_t Device::writeback() const { return dev_.config8(kCfgWriteback); }

uint8_t Device::set_writeback(uint8_t v) {
  dev_.set_config8(kCfgWriteback, v);
  return writeback();
}

void Device::submit(uint32_t slot, uint32_t type, uint64_t sector, uint64_t buf, uint32_t len) {
  if (slot >= nslots_ || busy_[slot] || len > max_request_ || (len & 511) != 0) {
    Line l = error_line();
    l.s("bad submit: slot=").u(slot).s(" len=").u(len).s(" (driver misuse)");
    die(l);
  }
  SplitQueue& q = q_[slot % nqueues_];
  const uint16_t head = static_cast<uint16_t>((slot / nqueues_) * descs_per_slot_);
  auto* hdr = phys<ReqHeader>(hdr_base_ + uint64_t{slot} * sizeof(ReqHeader));
  hdr->type = type;
  hdr->reserved = 0;
  hdr->sector = sector;
  const uint64_t status = status_base_ + slot;
  *phys<volatile uint8_t>(status) = 0xff;

  uint16_t d = head;
  Desc* e = &q.desc(d);
  e->addr = reinterpret_cast<uint64_t>(hdr);
  e->len = sizeof(ReqHeader);
  e->flags = kDescFNext;
  const bool device_writes = type == kTypeIn || type == kTypeGetId;
  const uint16_t data_flags = static_cast<uint16_t>(kDescFNext | (device_writes ? kDescFWrite : 0));
  for (uint32_t off = 0; off < len; off += seg_bytes_) {
    e->next = ++d;
    e = &q.desc(d);
    e->addr = buf + off;
    e->len = len - off < seg_bytes_ ? len - off : seg_bytes_;
    e->flags = data_flags;
  }
  e->next = ++d;
  e = &q.desc(d);
  e->addr = status;
  e->len = 1;
  e->flags = kDescFWrite;
  e->next = 0;

  busy_[slot] = true;
  ++in_flight_;
  q.push(head);
}

void Device::kick() {
  for (uint16_t q = 0; q < nqueues_; ++q) q_[q].publish();
}

bool Device::poll(Completion* c) {
  for (uint16_t qi = 0; qi < nqueues_; ++qi) {
    UsedElem e;
    if (!q_[qi].pop(&e)) continue;
    const uint32_t local = e.id / descs_per_slot_, slot = local * nqueues_ + qi;
    if (e.id % descs_per_slot_ != 0 || slot >= nslots_ || !busy_[slot]) {
      Line l = error_line();
      l.s("virtio-blk at 0x").x(dev_.base()).s(": used ring of queue ").u(qi).s(" returned unknown id ").u(e.id);
      die(l);
    }
    busy_[slot] = false;
    --in_flight_;
    c->slot = slot;
    c->status = *phys<volatile const uint8_t>(status_base_ + slot);
    return true;
  }
  return false;
}

Completion Device::wait() {
  Completion c;
  (void)wait_impl(&c, true);
  return c;
}

bool Device::wait_or_needs_reset(Completion* c) { return wait_impl(c, false); }

void Device::recover() {
  // setup() starts with the reset (status 0, then waiting until it reads back 0); the
  // old queues and slots are left behind (the allocator never frees): a recovery is
  // rare, and the memory is small.
  for (uint32_t k = 0; k < kMaxSlots; ++k) busy_[k] = false;
  in_flight_ = 0;
  setup(dev_.base(), irq_, opts_);
}

bool Device::wait_impl(Completion* out, bool fatal_needs_reset) {
  Completion& c = *out;
  if (poll(&c)) return true;
  if (in_flight_ == 0) {
    Line l = error_line();
    l.s("waiting with nothing in flight (driver misuse)");
    die(l);
  }
  // Spin on the used rings (RAM). Only when nothing completes for a while, look
  // at the device status register (one MMIO read per 100 ms) for NEEDS_RESET.
  const uint64_t start = rdtsc(), check_every = tsc_hz_ / 10, give_up = tsc_hz_ * 30;
  uint64_t next_check = start + check_every;
  for (;;) {
    for (int i = 0; i < 256; ++i) {
      if (poll(&c)) return true;
      cpu_relax();
    }
    const uint64_t now = rdtsc();
    if (now < next_check) continue;
    next_check = now + check_every;
    const uint32_t st = dev_.status();
    if (st & kStatusNeedsReset) {
      Line().s(kPrefix).s("blk device needs reset").print();
      if (!fatal_needs_reset) return false;
    }
    if ((st & (kStatusNeedsReset | kStatusFailed)) || !(st & kStatusDriverOk)) device_trouble(st);
    if (now - start > give_up) {
      Line l = error_line();
      l.s("virtio-blk at 0x").x(dev_.base()).s(": timeout, no completion for 30 s with ").u(in_flight_).s(
          " requests in flight (device status 0x").x(st).s(")");
      die(l);
    }
  }
}

}  // namespace az::blk
