#include "virtio/blk.hpp"

#include <algorithm>
#include <atomic>
#include <cstring>

#include "virtio/shared_memory.hpp"

namespace azote::virtio {
namespace {

constexpr uint64_t kHdrBytes = sizeof(virtio_blk_req_hdr);
constexpr uint64_t kSegBytes = sizeof(virtio_blk_discard_write_zeroes);

Unexpected<BlkReject> reject(BlkErrc why, uint8_t status, uint8_t* status_ptr) {
  return Unexpected{BlkReject{why, status, status_ptr}};
}

// Copies `n` bytes starting `offset` bytes into the concatenation of `bufs`. The caller
// checked that the buffers hold offset + n bytes.
void gather(const std::vector<Buffer>& bufs, uint64_t offset, uint8_t* dst, uint64_t n) {
  for (const Buffer& b : bufs) {
    if (n == 0) return;
    if (offset >= b.len) {
      offset -= b.len;
      continue;
    }
    const uint64_t take = std::min<uint64_t>(b.len - offset, n);
    shared::copy_in(dst, b.host + offset, take);
    dst += take;
    n -= take;
    offset = 0;
  }
}

// Appends iovecs for the byte range [offset, offset + n) of the concatenation of `bufs`;
// false when that takes more than max_iov pieces.
bool to_iov(const std::vector<Buffer>& bufs, uint64_t offset, uint64_t n, uint32_t max_iov,
            std::vector<iovec>& iov) {
  for (const Buffer& b : bufs) {
    if (n == 0) break;
    if (offset >= b.len) {
      offset -= b.len;
      continue;
    }
    const uint64_t take = std::min<uint64_t>(b.len - offset, n);
    if (iov.size() >= max_iov) return false;
    iov.push_back(iovec{b.host + offset, take});
    n -= take;
    offset = 0;
  }
  return true;
}

// [sector, sector + count) inside [0, capacity), without overflow.
bool in_range(uint64_t sector, uint64_t count, uint64_t capacity) {
  return sector <= capacity && count <= capacity - sector;
}

}  // namespace

const char* to_string(BlkErrc c) {
  switch (c) {
    case BlkErrc::kNoStatus: return "no-status";
    case BlkErrc::kNoHeader: return "no-header";
    case BlkErrc::kUnsupported: return "unsupported";
    case BlkErrc::kReadOnly: return "read-only";
    case BlkErrc::kBadLayout: return "bad-layout";
    case BlkErrc::kBadLength: return "bad-length";
    case BlkErrc::kOutOfRange: return "out-of-range";
    case BlkErrc::kTooManySegments: return "too-many-segments";
    case BlkErrc::kSegmentTooLarge: return "segment-too-large";
    case BlkErrc::kBadFlags: return "bad-flags";
  }
  return "?";
}

// ---- BlkConfig -----------------------------------------------------------------------------

BlkConfig& BlkConfig::seg_max(uint32_t n) {
  seg_max_ = std::clamp<uint32_t>(n, 1, kBlkMaxDataSegments);
  return *this;
}
BlkConfig& BlkConfig::num_queues(uint16_t n) {
  num_queues_ = std::max<uint16_t>(n, 1);
  return *this;
}
BlkConfig& BlkConfig::read_only(bool ro) {
  read_only_ = ro;
  return *this;
}
BlkConfig& BlkConfig::flush(bool on) {
  flush_ = on;
  return *this;
}
BlkConfig& BlkConfig::discard(uint32_t max_sectors, uint32_t max_seg, uint32_t sector_alignment) {
  discard_ = true;
  max_discard_sectors_ = max_sectors;
  max_discard_seg_ = std::max<uint32_t>(max_seg, 1);
  discard_sector_alignment_ = sector_alignment;
  return *this;
}
BlkConfig& BlkConfig::write_zeroes(uint32_t max_sectors, uint32_t max_seg, bool may_unmap) {
  write_zeroes_ = true;
  max_write_zeroes_sectors_ = max_sectors;
  max_write_zeroes_seg_ = std::max<uint32_t>(max_seg, 1);
  write_zeroes_may_unmap_ = may_unmap;
  return *this;
}

BlkConfig& BlkConfig::config_wce(bool on) {
  config_wce_ = on;
  return *this;
}

uint64_t BlkConfig::features() const {
  uint64_t f = feature_bit(kBlkFSegMax);
  if (read_only_) f |= feature_bit(kBlkFRo);
  if (flush_) f |= feature_bit(kBlkFFlush);
  if (num_queues_ > 1) f |= feature_bit(kBlkFMq);
  if (discard_) f |= feature_bit(kBlkFDiscard);
  if (write_zeroes_) f |= feature_bit(kBlkFWriteZeroes);
  if (config_wce_) f |= feature_bit(kBlkFConfigWce);
  return f;
}

virtio_blk_config BlkConfig::config() const {
  virtio_blk_config c{};
  c.capacity = capacity_;
  c.seg_max = seg_max_;
  c.num_queues = num_queues_;
  if (config_wce_) c.writeback = 1;
  if (discard_) {
    c.max_discard_sectors = max_discard_sectors_;
    c.max_discard_seg = max_discard_seg_;
    c.discard_sector_alignment = discard_sector_alignment_;
  }
  if (write_zeroes_) {
    c.max_write_zeroes_sectors = max_write_zeroes_sectors_;
    c.max_write_zeroes_seg = max_write_zeroes_seg_;
    c.write_zeroes_may_unmap = write_zeroes_may_unmap_ ? 1 : 0;
  }
  return c;
}

// ---- Completion ------------------------------------------------------------------------------

uint32_t BlkReject::complete() const {
  if (status_ptr == nullptr) return 0;
  shared::store<uint8_t>(status_ptr, status, std::memory_order_relaxed);
  return 1;
}

uint32_t BlkRequest::complete(uint8_t status, uint64_t data_written) const {
  if (status_ptr == nullptr) return 0;  // not a parsed request
  shared::store<uint8_t>(status_ptr, status, std::memory_order_relaxed);
  // data_bytes < 2^32 (a chain holds at most 2^32 bytes, one of them the status byte).
  return static_cast<uint32_t>(std::min(data_written, data_bytes)) + 1;
}

uint32_t blk_write_id(const BlkRequest& req, std::string_view id) {
  uint8_t buf[kBlkIdBytes] = {};
  std::memcpy(buf, id.data(), std::min<size_t>(id.size(), kBlkIdBytes));
  size_t done = 0;
  for (const iovec& v : req.iov) {
    if (done == kBlkIdBytes) break;
    const size_t take = std::min(v.iov_len, kBlkIdBytes - done);
    shared::copy_out(static_cast<uint8_t*>(v.iov_base), buf + done, take);
    done += take;
  }
  return static_cast<uint32_t>(done);
}

// ---- Parsing (§5.2.6) ------------------------------------------------------------------------

Result<void, BlkReject> parse_blk(const Chain& chain, const BlkConfig& cfg, uint64_t negotiated,
                                  BlkRequest& out) {
  out.iov.clear();
  out.segments.clear();
  out.head = chain.head;
  out.sector = 0;
  out.data_bytes = 0;
  out.status_ptr = nullptr;

  // The status byte is the last device-writable byte of the chain.
  uint8_t* status = nullptr;
  for (auto it = chain.writable.rbegin(); it != chain.writable.rend(); ++it) {
    if (it->len != 0) {
      status = it->host + it->len - 1;
      break;
    }
  }
  if (status == nullptr) return reject(BlkErrc::kNoStatus, kBlkSIoErr, nullptr);
  out.status_ptr = status;
  auto fail = [status](BlkErrc why, uint8_t st = kBlkSIoErr) { return reject(why, st, status); };

  if (chain.readable_bytes < kHdrBytes) return fail(BlkErrc::kNoHeader);
  virtio_blk_req_hdr hdr;
  gather(chain.readable, 0, reinterpret_cast<uint8_t*>(&hdr), kHdrBytes);  // NOLINT(reinterpret-cast)

  const uint64_t in_data = chain.writable_bytes - 1;           // device-writable, minus status
  const uint64_t out_data = chain.readable_bytes - kHdrBytes;  // device-readable, after header
  const bool ro = cfg.is_read_only();

  switch (hdr.type) {
    case kBlkTIn:
    case kBlkTOut: {
      const bool write = hdr.type == kBlkTOut;
      out.op = write ? BlkOp::kOut : BlkOp::kIn;
      if (write && ro) return fail(BlkErrc::kReadOnly);
      // Data in one direction only: a read has nothing after the header, a write nothing
      // before the status byte.
      if ((write ? in_data : out_data) != 0) return fail(BlkErrc::kBadLayout);
      const uint64_t len = write ? out_data : in_data;
      if (len == 0 || len % kBlkSectorSize != 0) return fail(BlkErrc::kBadLength);
      if (!in_range(hdr.sector, len >> kBlkSectorShift, cfg.capacity())) return fail(BlkErrc::kOutOfRange);
      const bool fits = write ? to_iov(chain.readable, kHdrBytes, len, cfg.seg_max(), out.iov)
                              : to_iov(chain.writable, 0, len, cfg.seg_max(), out.iov);
      if (!fits) return fail(BlkErrc::kTooManySegments);
      out.sector = hdr.sector;
      out.data_bytes = len;
      return {};
    }
    case kBlkTFlush:
      out.op = BlkOp::kFlush;
      if (!cfg.has_flush()) return fail(BlkErrc::kUnsupported, kBlkSUnsupp);
      // §5.2.6: the driver SHOULD NOT include data and MUST set sector to 0; we reject
      // data and ignore the sector.
      if (in_data != 0 || out_data != 0) return fail(BlkErrc::kBadLayout);
      return {};
    case kBlkTGetId:
      out.op = BlkOp::kGetId;
      if (out_data != 0) return fail(BlkErrc::kBadLayout);
      // §5.2.6: the data is 20 bytes; a larger buffer is accepted, 20 bytes are written.
      if (in_data < kBlkIdBytes) return fail(BlkErrc::kBadLength);
      if (!to_iov(chain.writable, 0, kBlkIdBytes, kBlkMaxDataSegments, out.iov))
        return fail(BlkErrc::kTooManySegments);
      out.data_bytes = kBlkIdBytes;
      return {};
    case kBlkTDiscard:
    case kBlkTWriteZeroes: {
      const bool discard = hdr.type == kBlkTDiscard;
      out.op = discard ? BlkOp::kDiscard : BlkOp::kWriteZeroes;
      const unsigned bit = discard ? kBlkFDiscard : kBlkFWriteZeroes;
      if (!(discard ? cfg.has_discard() : cfg.has_write_zeroes()) || (negotiated & feature_bit(bit)) == 0)
        return fail(BlkErrc::kUnsupported, kBlkSUnsupp);
      if (ro) return fail(BlkErrc::kReadOnly);
      if (in_data != 0) return fail(BlkErrc::kBadLayout);
      if (out_data == 0 || out_data % kSegBytes != 0) return fail(BlkErrc::kBadLength);
      const uint64_t count = out_data / kSegBytes;
      const uint32_t max_seg = discard ? cfg.max_discard_seg() : cfg.max_write_zeroes_seg();
      if (count > max_seg) return fail(BlkErrc::kTooManySegments);
      out.segments.resize(count);
      gather(chain.readable, kHdrBytes, reinterpret_cast<uint8_t*>(out.segments.data()),  // NOLINT
             count * kSegBytes);
      const uint32_t max_sectors = discard ? cfg.max_discard_sectors() : cfg.max_write_zeroes_sectors();
      // §5.2.6: UNSUPP for unknown flags, and for unmap on a discard.
      const uint32_t allowed_flags = discard ? 0 : kBlkDwzFUnmap;
      for (const auto& s : out.segments) {
        if ((s.flags & ~allowed_flags) != 0) return fail(BlkErrc::kBadFlags, kBlkSUnsupp);
        if (s.num_sectors > max_sectors) return fail(BlkErrc::kSegmentTooLarge);
        if (!in_range(s.sector, s.num_sectors, cfg.capacity())) return fail(BlkErrc::kOutOfRange);
      }
      return {};
    }
    default:
      return fail(BlkErrc::kUnsupported, kBlkSUnsupp);
  }
}

Result<BlkRequest, BlkReject> parse_blk(const Chain& chain, const BlkConfig& cfg, uint64_t negotiated) {
  BlkRequest req;
  AZOTE_TRYV(parse_blk(chain, cfg, negotiated, req));
  return req;
}

}  // namespace azote::virtio
