// A polling, user-mode virtio-blk driver (virtio 1.2 §5.2) over virtio-mmio
// version 2. Requests live in fixed slots: slot k owns one descriptor chain
// (header -> data segments -> status byte) on queue k % queues, so submitting is a
// few stores to RAM plus one QueueNotify per batch, and completing is reading the
// used ring. Nothing on the data path enters CPL0 or reads MMIO.
#pragma once

#include <cstddef>
#include <cstdint>

#include "rt.hpp"
#include "virtio.hpp"

namespace az::blk {

// Request types and status values (§5.2.6).
inline constexpr uint32_t kTypeIn = 0;
inline constexpr uint32_t kTypeOut = 1;
inline constexpr uint32_t kTypeFlush = 4;
inline constexpr uint32_t kTypeGetId = 8;  // the device writes its serial (kIdBytes) into the data
inline constexpr uint32_t kIdBytes = 20;
inline constexpr uint8_t kStatusOk = 0;
inline constexpr uint8_t kStatusIoErr = 1;
inline constexpr uint8_t kStatusUnsupp = 2;

// Feature bits (§5.2.3).
inline constexpr uint64_t kFSizeMax = 1ull << 1;
inline constexpr uint64_t kFSegMax = 1ull << 2;
inline constexpr uint64_t kFRo = 1ull << 5;
inline constexpr uint64_t kFBlkSize = 1ull << 6;
inline constexpr uint64_t kFFlush = 1ull << 9;
inline constexpr uint64_t kFConfigWce = 1ull << 11;  // cache mode in the config field `writeback`
inline constexpr uint64_t kFMq = 1ull << 12;

inline constexpr uint64_t kSectorBytes = 512;
inline constexpr uint32_t kMaxSlots = 1024;
inline constexpr uint16_t kMaxQueues = 8;

struct Options {
  const char* who = "blk";        // program name in messages
  uint32_t slots = 32;            // requests the program wants in flight
  uint32_t max_request = 1 << 20;  // largest data length it will submit, bytes
  uint16_t queues = 1;            // queues it wants (more only if the device offers MQ)
  // Called after a fatal device error's io-error line instead of exit(1), for a
  // program that must go on without its device (init). Must not return.
  void (*on_fatal)() = nullptr;
};

struct Completion {
  uint32_t slot;
  uint8_t status;  // kStatusOk, kStatusIoErr, kStatusUnsupp (0xff: never written)
};

class Device {
 public:
  enum class Open { kOk, kNoDevice };
  // Finds the first usable virtio-blk device among the command line's
  // virtio_mmio.device= windows and brings it to DRIVER_OK. kNoDevice if there is
  // none (a legacy version 1 device is reported and skipped). A device that fails
  // during setup is fatal (an io-error line, exit 1).
  Open open(const Options& o);

  uint64_t capacity() const { return capacity_; }  // 512-byte sectors
  uint32_t block_size() const { return blk_size_; }
  bool can_flush() const { return (features_ & kFFlush) != 0; }
  bool read_only() const { return (features_ & kFRo) != 0; }
  // VIRTIO_BLK_F_CONFIG_WCE negotiated: the cache mode can be read and set. The device
  // starts in its default mode; only a program that asks changes it.
  bool config_wce() const { return (features_ & kFConfigWce) != 0; }
  // The config field `writeback` (1 write-back, 0 write-through: every write is
  // durable when it completes). Only meaningful with config_wce().
  uint8_t writeback() const;
  // Writes `writeback` (one 8-bit config write), then reads it back: what the device
  // reports now (a device may refuse the change).
  uint8_t set_writeback(uint8_t v);
  uint32_t slots() const { return nslots_; }
  uint32_t max_request() const { return max_request_; }
  uint16_t queues() const { return nqueues_; }
  uint64_t notifies() const;

  // Queues a request on idle `slot`: type, first sector, guest-physical buffer and
  // its length in bytes (a multiple of 512, at most max_request(); 0 for a flush).
  // The data is device-writable for kTypeIn and kTypeGetId, device-readable otherwise.
  // The device sees it at the next kick().
  void submit(uint32_t slot, uint32_t type, uint64_t sector, uint64_t buf, uint32_t len);
  // Publishes everything submitted: at most one QueueNotify per queue.
  void kick();
  // A completion, if one is ready (no MMIO).
  bool poll(Completion* c);
  // Waits for the next completion. Device trouble (NEEDS_RESET, FAILED, no
  // completion for 30 s) is fatal.
  Completion wait();
  // Like wait(), but a device that reports DEVICE_NEEDS_RESET (virtio 1.2 §2.1.2: it
  // cannot go on, e.g. because this driver broke a queue) is not fatal: prints
  // "azote-guest: blk device needs reset" and returns false. recover() then resets it.
  bool wait_or_needs_reset(Completion* c);
  // Resets the device and sets it up again (new queues, same options and window),
  // like open() did. Every request in flight is abandoned: after a reset the device
  // completes none of them. A device that fails to come back is fatal.
  void recover();
  uint32_t in_flight() const { return in_flight_; }

  // "azote-guest: WHO io-error " -- the caller appends details, then calls die(),
  // which prints the line and exits 1 (or calls Options::on_fatal).
  Line error_line() const;
  [[noreturn]] void die(Line& l) const;

 private:
  [[noreturn]] void setup_failed(const char* what, uint64_t value = ~0ull);
  // Brings the device to DRIVER_OK; any failure is fatal.
  void setup(uint64_t base, uint32_t irq, const Options& o);
  [[noreturn]] void device_trouble(uint32_t status) const;
  // wait() and wait_or_needs_reset(): false only when NEEDS_RESET was seen and
  // `fatal_needs_reset` is false.
  bool wait_impl(Completion* c, bool fatal_needs_reset);

  const char* who_ = "blk";
  void (*on_fatal_)() = nullptr;
  Options opts_;      // as given to open(), for recover()
  uint32_t irq_ = 0;  // the window's interrupt line (only reported)
  virtio::MmioDevice dev_;
  virtio::SplitQueue q_[kMaxQueues];
  uint16_t nqueues_ = 0;
  uint16_t descs_per_slot_ = 0;  // 2 + data segments
  uint32_t seg_bytes_ = 0;       // largest data segment
  uint32_t nslots_ = 0;
  uint32_t max_request_ = 0;
  uint32_t blk_size_ = 512;
  uint64_t capacity_ = 0;
  uint64_t features_ = 0;
  uint64_t hdr_base_ = 0;     // slot k header at hdr_base_ + 16 k
  uint64_t status_base_ = 0;  // slot k status byte at status_base_ + k
  uint64_t tsc_hz_ = 0;
  uint32_t in_flight_ = 0;
  bool busy_[kMaxSlots] = {};
};

}  // namespace az::blk
