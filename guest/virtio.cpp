#include "virtio.hpp"

#include "programs.hpp"

namespace az::virtio {

namespace {

constexpr uint64_t kMmioLo = 3ull << 30;  // the uncached top GiB of the identity map
constexpr uint64_t kMmioHi = 1ull << 32;
constexpr Str kDeviceKey{"virtio_mmio.device=", 19};

bool starts_with(Str s, Str prefix) {
  if (s.n < prefix.n) return false;
  for (size_t i = 0; i < prefix.n; ++i)
    if (s.p[i] != prefix.p[i]) return false;
  return true;
}

int digit(char ch, unsigned base) {
  int d = -1;
  if (ch >= '0' && ch <= '9') d = ch - '0';
  if (ch >= 'a' && ch <= 'f') d = ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F') d = ch - 'A' + 10;
  return d >= 0 && static_cast<unsigned>(d) < base ? d : -1;
}

// A number at s[*i] like strtoull(..., 0): 0x hex, leading 0 octal, else decimal.
bool parse_num(Str s, size_t* i, uint64_t* out) {
  unsigned base = 10;
  size_t k = *i;
  if (k + 1 < s.n && s.p[k] == '0' && (s.p[k + 1] == 'x' || s.p[k + 1] == 'X') && k + 2 < s.n &&
      digit(s.p[k + 2], 16) >= 0) {
    base = 16;
    k += 2;
  } else if (k < s.n && s.p[k] == '0') {
    base = 8;
  }
  const size_t start = k;
  uint64_t v = 0;
  for (; k < s.n; ++k) {
    const int d = digit(s.p[k], base);
    if (d < 0) break;
    if (v > (~0ull - static_cast<uint64_t>(d)) / base) return false;
    v = v * base + static_cast<uint64_t>(d);
  }
  if (k == start) return false;
  *i = k;
  *out = v;
  return true;
}

bool parse_entry(Str v, MmioWindow* w) {
  size_t i = 0;
  uint64_t size = 0, base = 0, irq = 0, id = 0;
  if (!parse_num(v, &i, &size)) return false;
  if (i < v.n) {  // memparse suffixes
    unsigned shift = 0;
    switch (v.p[i]) {
      case 'k': case 'K': shift = 10; break;
      case 'm': case 'M': shift = 20; break;
      case 'g': case 'G': shift = 30; break;
      default: break;
    }
    if (shift != 0) {
      if (size > (~0ull >> shift)) return false;
      size <<= shift;
      ++i;
    }
  }
  if (i >= v.n || v.p[i++] != '@') return false;
  if (!parse_num(v, &i, &base)) return false;
  if (i >= v.n || v.p[i++] != ':') return false;
  const size_t irq_start = i;
  while (i < v.n && v.p[i] >= '0' && v.p[i] <= '9') ++i;
  if (!parse_u64(Str{v.p + irq_start, i - irq_start}, 0xffffffffu, &irq)) return false;
  if (i < v.n) {  // optional :<id> (the Linux platform device id; unused here)
    if (v.p[i++] != ':') return false;
    if (!parse_num(v, &i, &id) || i != v.n) return false;
  }
  w->base = base;
  w->size = size;
  w->irq = static_cast<uint32_t>(irq);
  return true;
}

// Single-instruction accesses, so the hypervisor's MMIO emulation sees exactly one
// access of the right width.
inline uint32_t mmio_rd32(uint64_t a) {
  uint32_t v;
  asm volatile("movl (%1), %0" : "=r"(v) : "r"(a) : "memory");
  return v;
}
inline uint16_t mmio_rd16(uint64_t a) {
  uint16_t v;
  asm volatile("movw (%1), %0" : "=r"(v) : "r"(a) : "memory");
  return v;
}
inline uint8_t mmio_rd8(uint64_t a) {
  uint8_t v;
  asm volatile("movb (%1), %0" : "=q"(v) : "r"(a) : "memory");
  return v;
}
inline void mmio_wr32(uint64_t a, uint32_t v) { asm volatile("movl %0, (%1)" : : "r"(v), "r"(a) : "memory"); }
inline void mmio_wr8(uint64_t a, uint8_t v) { asm volatile("movb %0, (%1)" : : "q"(v), "r"(a) : "memory"); }

}  // namespace

bool is_device_word(Str word) { return starts_with(word, kDeviceKey); }

bool usable_window(const MmioWindow& w, uint32_t device_id, const char* name, uint32_t cfg_bytes) {
  const MmioDevice d(w.base);
  const uint32_t magic = d.read(kRegMagic);
  if (magic != kMagicValue) {
    Line().s(kPrefix).s("virtio-mmio at 0x").x(w.base).s(": bad magic 0x").x(magic).s(", skipped").print();
    return false;
  }
  const uint32_t version = d.read(kRegVersion), id = d.read(kRegDeviceId);
  if (id != device_id) return false;  // 0: an empty slot; anything else: not this driver's
  if (version == 1) {
    Line()
        .s(kPrefix)
        .s(name)
        .s(" at 0x")
        .x(w.base)
        .s(": legacy virtio-mmio (version 1) is not supported, need version 2; skipped")
        .print();
    return false;
  }
  if (version != 2) {
    Line().s(kPrefix).s(name).s(" at 0x").x(w.base).s(": unknown virtio-mmio version ").u(version).s(", skipped").print();
    return false;
  }
  if (w.size < kRegConfig + cfg_bytes) {
    Line().s(kPrefix).s(name).s(" at 0x").x(w.base).s(": window too small for its config space, skipped").print();
    return false;
  }
  return true;
}

size_t find_windows(Str cl, MmioWindow* out, size_t max) {
  auto space = [](char ch) { return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r'; };
  size_t n = 0, i = 0;
  while (i < cl.n) {
    while (i < cl.n && space(cl.p[i])) ++i;
    const size_t start = i;
    while (i < cl.n && !space(cl.p[i])) ++i;
    const Str word{cl.p + start, i - start};
    if (!is_device_word(word)) continue;
    const Str value{word.p + kDeviceKey.n, word.n - kDeviceKey.n};
    MmioWindow w;
    const char* problem = nullptr;
    if (!parse_entry(value, &w)) {
      problem = "does not parse (want <size>[K|M|G]@<base>:<irq>)";
    } else if (w.size < 0x100 || w.base < kMmioLo || w.base >= kMmioHi || w.size > kMmioHi - w.base) {
      problem = "window is not inside the uncached MMIO range 0xc0000000-0xffffffff (or is under 256 bytes)";
    } else if ((w.base & 3) != 0) {
      problem = "window base is not 4-byte aligned";
    } else if (n == max) {
      problem = "too many virtio-mmio devices, ignored";
    }
    if (problem != nullptr) {
      Line().s(kPrefix).s(word).s(": ").s(problem).print();
      continue;
    }
    out[n++] = w;
  }
  return n;
}

// ---------------------------------------------------------------- MmioDevice
uint32_t MmioDevice::read(uint32_t reg) const { return mmio_rd32(base_ + reg); }
void MmioDevice::write(uint32_t reg, uint32_t v) const { mmio_wr32(base_ + reg, v); }

bool MmioDevice::reset() const {
  set_status(0);
  for (int i = 0; i < 1000; ++i) {
    if (status() == 0) return true;
    cpu_relax();
  }
  return false;
}

uint64_t MmioDevice::device_features() const {
  write(kRegDeviceFeaturesSel, 0);
  const uint32_t lo = read(kRegDeviceFeatures);
  write(kRegDeviceFeaturesSel, 1);
  const uint32_t hi = read(kRegDeviceFeatures);
  return (uint64_t{hi} << 32) | lo;
}

void MmioDevice::set_driver_features(uint64_t f) const {
  write(kRegDriverFeaturesSel, 0);
  write(kRegDriverFeatures, static_cast<uint32_t>(f));
  write(kRegDriverFeaturesSel, 1);
  write(kRegDriverFeatures, static_cast<uint32_t>(f >> 32));
}

// §4.2.2.2: 8-bit fields with 8-bit accesses, 16-bit with 16-bit, 32- and 64-bit
// fields with 32-bit accesses; re-read while ConfigGeneration changes.
uint8_t MmioDevice::config8(uint32_t off) const {
  uint32_t gen;
  uint8_t v;
  do {
    gen = read(kRegConfigGeneration);
    v = mmio_rd8(base_ + kRegConfig + off);
  } while (gen != read(kRegConfigGeneration));
  return v;
}
uint16_t MmioDevice::config16(uint32_t off) const {
  uint32_t gen;
  uint16_t v;
  do {
    gen = read(kRegConfigGeneration);
    v = mmio_rd16(base_ + kRegConfig + off);
  } while (gen != read(kRegConfigGeneration));
  return v;
}
uint32_t MmioDevice::config32(uint32_t off) const {
  uint32_t gen, v;
  do {
    gen = read(kRegConfigGeneration);
    v = mmio_rd32(base_ + kRegConfig + off);
  } while (gen != read(kRegConfigGeneration));
  return v;
}
void MmioDevice::set_config8(uint32_t off, uint8_t v) const { mmio_wr8(base_ + kRegConfig + off, v); }
uint64_t MmioDevice::config64(uint32_t off) const {
  uint32_t gen, lo, hi;
  do {
    gen = read(kRegConfigGeneration);
    lo = mmio_rd32(base_ + kRegConfig + off);
    hi = mmio_rd32(base_ + kRegConfig + off + 4);
  } while (gen != read(kRegConfigGeneration));
  return (uint64_t{hi} << 32) | lo;
}

// ---------------------------------------------------------------- SplitQueue
namespace {
constexpr uint64_t kPage = 4096;
uint64_t used_offset(uint16_t size) {
  const uint64_t driver_end = uint64_t{size} * sizeof(Desc) + 6 + 2ull * size;  // + avail ring
  return (driver_end + kPage - 1) & ~(kPage - 1);
}
}  // namespace

uint64_t SplitQueue::bytes(uint16_t size) {
  const uint64_t end = used_offset(size) + 6 + 8ull * size;
  return (end + kPage - 1) & ~(kPage - 1);
}

bool SplitQueue::init(const MmioDevice& dev, uint16_t index, uint16_t size, uint64_t mem) {
  index_ = index;
  size_ = size;
  notify_reg_ = dev.base() + kRegQueueNotify;
  auto* bytes_p = phys<uint8_t>(mem);
  for (uint64_t i = 0; i < bytes(size); ++i) bytes_p[i] = 0;
  const uint64_t avail = mem + uint64_t{size} * sizeof(Desc), used = mem + used_offset(size);
  desc_ = phys<Desc>(mem);
  avail_flags_ = phys<uint16_t>(avail);
  avail_idx_ = phys<uint16_t>(avail + 2);
  avail_ring_ = phys<uint16_t>(avail + 4);
  used_flags_ = phys<uint16_t>(used);
  used_idx_ = phys<uint16_t>(used + 2);
  used_ring_ = phys<UsedElem>(used + 4);
  avail_shadow_ = avail_published_ = last_used_ = 0;
  notifies_ = 0;
  // Completions are polled: ask the device not to interrupt (we did not negotiate
  // VIRTIO_F_EVENT_IDX, so this flag is what it honours).
  __atomic_store_n(avail_flags_, kAvailFNoInterrupt, __ATOMIC_RELAXED);
  mb();

  dev.write(kRegQueueSel, index);
  if (dev.read(kRegQueueReady) != 0) return false;  // must start disabled after a reset
  dev.write(kRegQueueNum, size);
  dev.write(kRegQueueDescLow, static_cast<uint32_t>(mem));
  dev.write(kRegQueueDescHigh, static_cast<uint32_t>(mem >> 32));
  dev.write(kRegQueueDriverLow, static_cast<uint32_t>(avail));
  dev.write(kRegQueueDriverHigh, static_cast<uint32_t>(avail >> 32));
  dev.write(kRegQueueDeviceLow, static_cast<uint32_t>(used));
  dev.write(kRegQueueDeviceHigh, static_cast<uint32_t>(used >> 32));
  dev.write(kRegQueueReady, 1);
  return dev.read(kRegQueueReady) == 1;
}

void SplitQueue::publish() {
  if (avail_shadow_ == avail_published_) return;
  // Descriptors and avail ring entries before the index (release; on x86 a
  // compiler barrier, stores are not reordered with older stores).
  __atomic_store_n(avail_idx_, avail_shadow_, __ATOMIC_RELEASE);
  avail_published_ = avail_shadow_;
  // The new index must be visible before we read the device's NO_NOTIFY flag:
  // a device that is just re-enabling notifications re-checks avail idx after
  // clearing the flag, so one of the two sides always sees the other's store.
  mb();
  if ((__atomic_load_n(used_flags_, __ATOMIC_RELAXED) & kUsedFNoNotify) != 0) return;
  mmio_wr32(notify_reg_, index_);
  ++notifies_;
}

}  // namespace az::virtio
