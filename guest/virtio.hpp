// The guest's own virtio pieces (virtio 1.2): the virtio-mmio version 2 transport
// (§4.2), split virtqueues (§2.7) and the discovery of `virtio_mmio.device=`
// entries on the command line. All of it runs in user mode: the MMIO windows sit in
// the uncached top GiB of the guest's identity map, and the rings live in RAM,
// where virtual == physical, so ring addresses are the device's addresses too.
//
// Self-contained on purpose (the host side has its own definitions in lib/virtio).
#pragma once

#include <cstddef>
#include <cstdint>

#include "rt.hpp"

namespace az::virtio {

// ------------------------------------------------------- virtio-mmio registers
inline constexpr uint32_t kRegMagic = 0x000;  // "virt"
inline constexpr uint32_t kRegVersion = 0x004;
inline constexpr uint32_t kRegDeviceId = 0x008;
inline constexpr uint32_t kRegVendorId = 0x00c;
inline constexpr uint32_t kRegDeviceFeatures = 0x010;
inline constexpr uint32_t kRegDeviceFeaturesSel = 0x014;
inline constexpr uint32_t kRegDriverFeatures = 0x020;
inline constexpr uint32_t kRegDriverFeaturesSel = 0x024;
inline constexpr uint32_t kRegQueueSel = 0x030;
inline constexpr uint32_t kRegQueueNumMax = 0x034;
inline constexpr uint32_t kRegQueueNum = 0x038;
inline constexpr uint32_t kRegQueueReady = 0x044;
inline constexpr uint32_t kRegQueueNotify = 0x050;
inline constexpr uint32_t kRegInterruptStatus = 0x060;
inline constexpr uint32_t kRegInterruptAck = 0x064;
inline constexpr uint32_t kRegStatus = 0x070;
inline constexpr uint32_t kRegQueueDescLow = 0x080;
inline constexpr uint32_t kRegQueueDescHigh = 0x084;
inline constexpr uint32_t kRegQueueDriverLow = 0x090;
inline constexpr uint32_t kRegQueueDriverHigh = 0x094;
inline constexpr uint32_t kRegQueueDeviceLow = 0x0a0;
inline constexpr uint32_t kRegQueueDeviceHigh = 0x0a4;
inline constexpr uint32_t kRegConfigGeneration = 0x0fc;
inline constexpr uint32_t kRegConfig = 0x100;

inline constexpr uint32_t kMagicValue = 0x74726976;  // "virt", little endian

// Device status bits (§2.1).
inline constexpr uint32_t kStatusAcknowledge = 1;
inline constexpr uint32_t kStatusDriver = 2;
inline constexpr uint32_t kStatusDriverOk = 4;
inline constexpr uint32_t kStatusFeaturesOk = 8;
inline constexpr uint32_t kStatusNeedsReset = 0x40;
inline constexpr uint32_t kStatusFailed = 0x80;

// Transport / ring feature bits (§6).
inline constexpr uint64_t kFIndirectDesc = 1ull << 28;
inline constexpr uint64_t kFEventIdx = 1ull << 29;
inline constexpr uint64_t kFVersion1 = 1ull << 32;
inline constexpr uint64_t kFAccessPlatform = 1ull << 33;
inline constexpr uint64_t kFRingPacked = 1ull << 34;
inline constexpr uint64_t kFOrderPlatform = 1ull << 36;

inline constexpr uint32_t kDeviceIdBlock = 2;
inline constexpr uint32_t kDeviceIdVsock = 19;  // virtio-vsock (vsock.hpp)
inline constexpr uint32_t kDeviceIdNsm = 33;  // Nitro Secure Module (nsm.hpp)

// ------------------------------------------------------------ split virtqueue
struct Desc {
  uint64_t addr;
  uint32_t len;
  uint16_t flags;
  uint16_t next;
};
static_assert(sizeof(Desc) == 16);
inline constexpr uint16_t kDescFNext = 1;
inline constexpr uint16_t kDescFWrite = 2;  // device writes (driver reads) this buffer

struct UsedElem {
  uint32_t id;  // head of the completed descriptor chain
  uint32_t len;
};
static_assert(sizeof(UsedElem) == 8);

inline constexpr uint16_t kAvailFNoInterrupt = 1;
inline constexpr uint16_t kUsedFNoNotify = 1;

// ------------------------------------------------------------------- discovery
struct MmioWindow {
  uint64_t base = 0;
  uint64_t size = 0;
  uint32_t irq = 0;
};

// Every `virtio_mmio.device=<size>[KMG]@<base>:<irq>[:<id>]` word of the command
// line (Linux syntax; numbers decimal, 0x hex or 0 octal), in order. Entries that do
// not parse, or whose window is not inside the guest's uncached MMIO mapping
// (3-4 GiB), are reported on the console and skipped. Returns how many were stored.
size_t find_windows(Str cmdline, MmioWindow* out, size_t max);

// Whether window `w` holds a virtio-mmio version 2 device with `device_id` and a config
// space of at least `cfg_bytes`. A window with a bad magic, or one of this id that
// cannot be used (legacy version 1, unknown version, too small), is reported on the
// console as skipped, naming the device as `name` ("virtio-blk").
bool usable_window(const MmioWindow& w, uint32_t device_id, const char* name, uint32_t cfg_bytes);

// Whether `word` is a `virtio_mmio.device=` entry (the program's argument list
// leaves them out, wherever the hypervisor put them).
bool is_device_word(Str word);

// --------------------------------------------------------------- the transport
// One virtio-mmio window. Every access is a single 32-bit (registers) or
// width-matched (config space) `mov`, which is what the hypervisor's MMIO
// emulation expects.
class MmioDevice {
 public:
  MmioDevice() = default;
  explicit MmioDevice(uint64_t base) : base_(base) {}

  uint64_t base() const { return base_; }
  uint32_t read(uint32_t reg) const;
  void write(uint32_t reg, uint32_t v) const;
  uint32_t status() const { return read(kRegStatus); }
  void set_status(uint32_t s) const { write(kRegStatus, s); }
  // Writes 0 to Status and waits (bounded) until the device reads back 0.
  bool reset() const;
  uint64_t device_features() const;
  void set_driver_features(uint64_t f) const;

  // Device-specific configuration, read consistently (ConfigGeneration loop).
  uint8_t config8(uint32_t off) const;
  uint16_t config16(uint32_t off) const;
  uint32_t config32(uint32_t off) const;
  uint64_t config64(uint32_t off) const;
  // Writes an 8-bit config field with one 8-bit access (§4.2.2.2).
  void set_config8(uint32_t off, uint8_t v) const;

 private:
  uint64_t base_ = 0;
};

// Full memory barrier: our stores (avail idx) globally visible before our next
// loads (the device's used flags). The device is another process on another CPU.
inline void mb() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

// A split virtqueue in one block of guest RAM (descriptor table, then the driver
// area, then the device area on the next page). Single producer, single consumer,
// both on this CPU; no interrupts (VIRTQ_AVAIL_F_NO_INTERRUPT).
class SplitQueue {
 public:
  // Bytes of RAM for a queue of `size` entries (4 KiB aligned block).
  static uint64_t bytes(uint16_t size);
  // Lays the rings out at `mem` (zeroed here) and programs queue `index` of `dev`:
  // QueueSel, QueueNum, the three addresses, QueueReady. False if the device does
  // not take it (QueueReady reads back 0).
  bool init(const MmioDevice& dev, uint16_t index, uint16_t size, uint64_t mem);

  uint16_t size() const { return size_; }
  Desc& desc(uint16_t i) { return desc_[i]; }

  // Puts a chain head in the next avail slot; the device sees it after publish().
  void push(uint16_t head) {
    avail_ring_[avail_shadow_ & (size_ - 1)] = head;
    ++avail_shadow_;
  }
  // Publishes everything pushed since the last publish (release store of avail
  // idx) and writes QueueNotify unless the device asked not to be notified. The
  // notify is the only MMIO access of the data path.
  void publish();
  // Next completed chain, if any: true and *elem filled.
  bool pop(UsedElem* elem) {
    const uint16_t used = __atomic_load_n(used_idx_, __ATOMIC_ACQUIRE);
    if (used == last_used_) return false;
    const UsedElem* e = &used_ring_[last_used_ & (size_ - 1)];
    elem->id = e->id;
    elem->len = e->len;
    ++last_used_;
    return true;
  }
  // Chains pushed but not popped yet.
  uint16_t outstanding() const { return static_cast<uint16_t>(avail_shadow_ - last_used_); }
  uint64_t notifies() const { return notifies_; }

 private:
  uint64_t notify_reg_ = 0;  // address of QueueNotify
  uint16_t index_ = 0;
  uint16_t size_ = 0;
  Desc* desc_ = nullptr;
  uint16_t* avail_flags_ = nullptr;
  uint16_t* avail_idx_ = nullptr;
  uint16_t* avail_ring_ = nullptr;
  uint16_t* used_flags_ = nullptr;
  uint16_t* used_idx_ = nullptr;
  UsedElem* used_ring_ = nullptr;
  uint16_t avail_shadow_ = 0;     // next avail idx (pushed, maybe not published)
  uint16_t avail_published_ = 0;  // avail idx the device can see
  uint16_t last_used_ = 0;        // next used entry to read
  uint64_t notifies_ = 0;
};

}  // namespace az::virtio
