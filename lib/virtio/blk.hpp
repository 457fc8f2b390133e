// virtio-blk request parsing (virtio 1.2 §5.2.6), shared by every block backend and
// independent of the transport: a popped Chain goes in, and out comes either a request to
// execute (data segments as struct iovec, ready for preadv/pwritev or io_uring) or a
// rejection carrying the status to complete the chain with. Nothing here does I/O.
//
// The 16-byte header and any discard / write-zeroes segments are copied once out of guest
// memory (they may span several buffers) and only the copies are checked and used. Data
// bytes stay in guest memory: backends read or write them through the iovecs.
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <string_view>
#include <vector>

#include "base/result.hpp"
#include "virtio/queue.hpp"
#include "virtio/spec.hpp"

namespace azote::virtio {

// Upper bound on data segments per request whatever seg_max says: IOV_MAX on Linux, the
// most preadv/pwritev (and io_uring readv/writev) accept.
inline constexpr uint32_t kBlkMaxDataSegments = 1024;

// The device's block parameters: builds the config space and the feature bits to offer,
// and is what parse_blk() validates requests against. Inputs come from the operator's
// volume configuration (trusted), not from the guest.
class BlkConfig {
 public:
  explicit BlkConfig(uint64_t capacity_sectors) : capacity_(capacity_sectors) {}

  // Most data segments per request (VIRTIO_BLK_F_SEG_MAX), clamped to [1, 1024]. A driver
  // puts header and status in two more descriptors, so a card passes at most
  // queue size - 2 here (the spec bounds a chain by the queue size, §2.7.5.3).
  BlkConfig& seg_max(uint32_t n);
  // Number of request queues; above 1 offers VIRTIO_BLK_F_MQ. Clamped to at least 1.
  BlkConfig& num_queues(uint16_t n);
  BlkConfig& read_only(bool ro);
  // VIRTIO_BLK_F_FLUSH (on by default: §5.2.5, devices SHOULD always offer it).
  BlkConfig& flush(bool on);
  // VIRTIO_BLK_F_DISCARD with its limits; max_seg clamped to at least 1.
  BlkConfig& discard(uint32_t max_sectors, uint32_t max_seg, uint32_t sector_alignment);
  // VIRTIO_BLK_F_WRITE_ZEROES with its limits; max_seg clamped to at least 1.
  BlkConfig& write_zeroes(uint32_t max_sectors, uint32_t max_seg, bool may_unmap);
  // VIRTIO_BLK_F_CONFIG_WCE: the driver reads and sets the cache mode through the
  // config field `writeback` (1 write-back, 0 write-through). config() reports the
  // default mode (write-back); the device overlays its current one.
  BlkConfig& config_wce(bool on);

  // Block-device feature bits to offer (VERSION_1 and the ring features are the card's).
  uint64_t features() const;
  // The config space, little-endian, unused fields zero.
  virtio_blk_config config() const;

  uint64_t capacity() const { return capacity_; }
  uint32_t seg_max() const { return seg_max_; }
  bool is_read_only() const { return read_only_; }
  bool has_flush() const { return flush_; }
  bool has_discard() const { return discard_; }
  bool has_write_zeroes() const { return write_zeroes_; }
  bool has_config_wce() const { return config_wce_; }
  uint32_t max_discard_sectors() const { return max_discard_sectors_; }
  uint32_t max_discard_seg() const { return max_discard_seg_; }
  uint32_t max_write_zeroes_sectors() const { return max_write_zeroes_sectors_; }
  uint32_t max_write_zeroes_seg() const { return max_write_zeroes_seg_; }

 private:
  uint64_t capacity_;
  uint32_t seg_max_ = 126;
  uint16_t num_queues_ = 1;
  bool read_only_ = false;
  bool flush_ = true;
  bool discard_ = false;
  uint32_t max_discard_sectors_ = 0, max_discard_seg_ = 1, discard_sector_alignment_ = 0;
  bool write_zeroes_ = false;
  uint32_t max_write_zeroes_sectors_ = 0, max_write_zeroes_seg_ = 1;
  bool write_zeroes_may_unmap_ = false;
  bool config_wce_ = false;
};

enum class BlkOp : uint8_t { kIn, kOut, kFlush, kGetId, kDiscard, kWriteZeroes };

// Why a request was rejected (for the card's counters; the guest only sees the status).
enum class BlkErrc : uint8_t {
  kNoStatus = 1,      // no device-writable byte for the status: complete with 0 bytes
  kNoHeader,          // fewer than 16 device-readable bytes
  kUnsupported,       // unknown type, or a feature the device did not offer/negotiate
  kReadOnly,          // a write to a read-only device (§5.2.6: IOERR, nothing written)
  kBadLayout,         // data in the wrong direction, or data where none belongs
  kBadLength,         // data length zero, not a multiple of 512 / 16, or GET_ID < 20 bytes
  kOutOfRange,        // sectors beyond capacity (or overflowing)
  kTooManySegments,   // more data segments than seg_max, or discard segments than max_seg
  kSegmentTooLarge,   // a discard / write-zeroes segment above max_*_sectors
  kBadFlags,          // unknown segment flags, or unmap on a discard (§5.2.6: UNSUPP)
};
const char* to_string(BlkErrc c);

// A rejected request: write `status` into the chain's status byte (if it has one) and
// complete the chain with complete()'s length.
struct BlkReject {
  BlkErrc reason = BlkErrc::kNoStatus;
  uint8_t status = kBlkSIoErr;
  uint8_t* status_ptr = nullptr;  // last device-writable byte, or nullptr
  // Writes the status byte; returns the used length for push_used (1, or 0 without status).
  uint32_t complete() const;
};

struct BlkRequest {
  BlkOp op = BlkOp::kIn;
  uint16_t head = 0;     // the chain to complete
  uint64_t sector = 0;   // kIn / kOut: first sector
  uint64_t data_bytes = 0;  // sum of iov lengths
  // kIn, kGetId: device-writable data, status byte excluded. kOut: device-readable data
  // after the header. Empty for the other ops. Zero-length pieces are left out.
  std::vector<iovec> iov;
  // kDiscard / kWriteZeroes: private copies of the segments, each validated.
  std::vector<virtio_blk_discard_write_zeroes> segments;
  uint8_t* status_ptr = nullptr;  // last device-writable byte of the chain

  // Writes the status byte and returns the used length for push_used: data_written
  // (clamped to data_bytes; only meaningful for kIn / kGetId) + 1.
  uint32_t complete(uint8_t status, uint64_t data_written = 0) const;
};

// Parses `chain` against the device's config and the negotiated feature bits. On success
// `out` (whose vectors are reused) describes the request; on failure the BlkReject says
// how to complete the chain. Work is O(buffers in the chain).
Result<void, BlkReject> parse_blk(const Chain& chain, const BlkConfig& cfg, uint64_t negotiated,
                                  BlkRequest& out);
Result<BlkRequest, BlkReject> parse_blk(const Chain& chain, const BlkConfig& cfg, uint64_t negotiated);

// For kGetId: copies `id` (NUL-padded, at most 20 bytes) into the request's data; returns
// the bytes written (20).
uint32_t blk_write_id(const BlkRequest& req, std::string_view id);

}  // namespace azote::virtio
