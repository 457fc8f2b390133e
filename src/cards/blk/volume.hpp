// One served volume: its backing store, key, rate limiter, block parameters and
// counters, and the store queues its virtqueue workers will use. Everything that can
// fail for host reasons (opening the file, the key, io_uring rings) happens here, at
// startup, before the first vhost-user message.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cards/blk/crypto.hpp"
#include "cards/blk/metrics.hpp"
#include "cards/blk/options.hpp"
#include "cards/blk/store.hpp"
#include "rate_limit/token_bucket.hpp"
#include "virtio/blk.hpp"

namespace azote::card_blk {

enum class VolumeErrc {
  kFile = 1,  // backing file unusable (open, lock, size)
  kKey,       // key file unusable
  kHost,      // host resources (io_uring, memory)
};
using VolumeError = Error<VolumeErrc>;

// Largest virtqueue the card accepts (azote-hv uses 256). seg_max is this minus 2: a
// driver puts the header and the status byte in two more descriptors and a chain is at
// most a queue long (virtio 1.2 §2.7.5.3; lib/virtio DESIGN.md).
inline constexpr uint32_t kMaxQueueSize = 256;
inline constexpr uint32_t kDiscardMaxSectors = 1u << 21;      // 1 GiB per segment
inline constexpr uint32_t kDiscardMaxSegments = 32;
inline constexpr uint32_t kWriteZeroesMaxSectors = 1u << 16;  // 32 MiB per segment (may be written out)
inline constexpr uint32_t kWriteZeroesMaxSegments = 8;

struct VolumeParams {
  std::string name;  // the serial (GET_ID), also the metrics label
  std::string socket;
  uint32_t queues = 1;
  bool read_only = false;
  bool encrypted = false;
  bool discard = false;
};

class Volume {
 public:
  // Opens everything the volume needs. `clock` drives the rate limiter and must
  // outlive the volume. `allow_direct` false forces the page cache (tests).
  static Result<std::unique_ptr<Volume>, VolumeError> open(const VolumeOptions& o, const rate_limit::Clock& clock,
                                                           bool allow_direct = true);
  // For tests: a volume over a given store (and optional key), no files opened here.
  static Result<std::unique_ptr<Volume>, VolumeError> create(const VolumeOptions& o, std::unique_ptr<Store> store,
                                                             std::optional<XtsKey> key,
                                                             const rate_limit::Clock& clock);

  const VolumeParams& params() const { return params_; }
  const virtio::BlkConfig& blk() const { return blk_; }
  const StoreInfo& store_info() const { return store_->info(); }
  const XtsKey* key() const { return key_ ? &*key_ : nullptr; }
  rate_limit::Limiter* limiter() { return limiter_.unlimited() ? nullptr : &limiter_; }
  const rate_limit::Clock& clock() const { return clock_; }
  VolumeMetrics& metrics() { return metrics_; }
  const VolumeMetrics& metrics() const { return metrics_; }
  // The store queue of virtqueue `index` (created at open, reused across restarts).
  StoreQueue& store_queue(uint32_t index) { return *queues_[index]; }

  // Set once a ZERO_RANGE fallocate came back EOPNOTSUPP: write zeroes are then written
  // out as data. Any worker may set it.
  std::atomic<bool> zero_range_unsupported{false};

  // The cache mode the driver chose through VIRTIO_BLK_F_CONFIG_WCE (config field
  // `writeback`): false = write-back (the default; FLUSH makes writes durable), true =
  // write-through (every write and write-zeroes is durable when it completes). Set by
  // BlkDevice on the control thread (set_write_through also updates the gauge); read by
  // the queue workers when they take a request off the ring.
  bool write_through() const { return write_through_.load(std::memory_order_acquire); }
  void set_write_through(bool on) {
    write_through_.store(on, std::memory_order_release);
    metrics_.write_cache_writeback.store(on ? 0 : 1, std::memory_order_relaxed);
  }

  // DEVICE_NEEDS_RESET (virtio 1.2 §2.1.2), also driver session state: set by a queue
  // worker when the driver breaks its queue (or by BlkDevice when a queue cannot start),
  // reported to the frontend through GET_STATUS, cleared by a device reset or a new
  // frontend connection (BlkDevice, on the control thread, once every worker stopped).
  bool needs_reset() const { return needs_reset_.load(std::memory_order_acquire); }
  void set_needs_reset(bool on) {
    needs_reset_.store(on, std::memory_order_release);
    metrics_.needs_reset.store(on ? 1 : 0, std::memory_order_relaxed);
  }

 private:
  Volume(const rate_limit::Clock& clock, const rate_limit::LimiterConfig& lc) : clock_(clock), limiter_(lc, clock) {}

  const rate_limit::Clock& clock_;
  VolumeParams params_;
  virtio::BlkConfig blk_{0};
  std::unique_ptr<Store> store_;
  std::optional<XtsKey> key_;
  rate_limit::Limiter limiter_;
  VolumeMetrics metrics_;
  std::vector<std::unique_ptr<StoreQueue>> queues_;
  std::atomic<bool> write_through_{false};
  std::atomic<bool> needs_reset_{false};
};

// "az" + 16 hex digits of a hash of the file's device and inode numbers: stable for one
// file across card restarts, different for two files.
std::string default_serial(const StoreInfo& info);

}  // namespace azote::card_blk
