// Virtio ABI used by azote's devices: split virtqueues and the block device.
//
// Everything here is wire format shared with a guest driver, so it is written
// down once, against the virtio 1.2 specification (section numbers below), and
// every layout is pinned with static_assert. Field values are little-endian in
// the spec (non-legacy interface, §1.4); azote hosts are x86-64, so the structs
// use native integers and the static_assert on std::endian keeps that honest.
//
// Names of ABI structs follow the spec (virtq_desc, virtio_blk_config, ...) so
// they can be grepped against it; constants use the project's kName style with
// the spec's name in a comment.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>

namespace azote::virtio {

static_assert(std::endian::native == std::endian::little,
              "virtio 1.x fields are little-endian; these structs assume a little-endian host");

constexpr uint64_t feature_bit(unsigned bit) { return uint64_t{1} << bit; }

// ---- Device status field, §2.1 ------------------------------------------------------------
inline constexpr uint8_t kStatusAcknowledge = 1;   // ACKNOWLEDGE
inline constexpr uint8_t kStatusDriver = 2;        // DRIVER
inline constexpr uint8_t kStatusDriverOk = 4;      // DRIVER_OK
inline constexpr uint8_t kStatusFeaturesOk = 8;    // FEATURES_OK
inline constexpr uint8_t kStatusNeedsReset = 64;   // DEVICE_NEEDS_RESET
inline constexpr uint8_t kStatusFailed = 128;      // FAILED

// ---- Device IDs, §5 -----------------------------------------------------------------------
inline constexpr uint32_t kDeviceIdNet = 1;
inline constexpr uint32_t kDeviceIdBlock = 2;
inline constexpr uint32_t kDeviceIdVsock = 19;
inline constexpr uint32_t kDeviceIdNsm = 33;  // Nitro Secure Module (ENCLAVES.md §3)

// ---- Reserved (device-independent) feature bits, §6 ----------------------------------------
inline constexpr unsigned kFRingIndirectDesc = 28;  // VIRTIO_F_INDIRECT_DESC (§2.7.5.3)
inline constexpr unsigned kFRingEventIdx = 29;      // VIRTIO_F_EVENT_IDX (§2.7.7, §2.7.10)
inline constexpr unsigned kFVersion1 = 32;          // VIRTIO_F_VERSION_1

// ---- Split virtqueues, §2.7 ---------------------------------------------------------------
// Queue Size is a power of two, at most 32768 (§2.7).
inline constexpr uint32_t kMaxQueueSize = 32768;

// §2.7.5 The Virtqueue Descriptor Table.
inline constexpr uint16_t kDescFNext = 1;      // VIRTQ_DESC_F_NEXT
inline constexpr uint16_t kDescFWrite = 2;     // VIRTQ_DESC_F_WRITE (device write-only)
inline constexpr uint16_t kDescFIndirect = 4;  // VIRTQ_DESC_F_INDIRECT (§2.7.5.3)

struct virtq_desc {
  uint64_t addr;   // guest-physical address of the buffer
  uint32_t len;    // length in bytes
  uint16_t flags;  // kDescF*
  uint16_t next;   // next descriptor index when flags & kDescFNext
};
static_assert(sizeof(virtq_desc) == 16);
static_assert(offsetof(virtq_desc, addr) == 0 && offsetof(virtq_desc, len) == 8);
static_assert(offsetof(virtq_desc, flags) == 12 && offsetof(virtq_desc, next) == 14);

// §2.7.6 The Virtqueue Available Ring:
//   le16 flags; le16 idx; le16 ring[Queue Size]; le16 used_event (only with EVENT_IDX).
inline constexpr uint16_t kAvailFNoInterrupt = 1;  // VIRTQ_AVAIL_F_NO_INTERRUPT
struct virtq_avail_hdr {
  uint16_t flags;
  uint16_t idx;
};
static_assert(sizeof(virtq_avail_hdr) == 4);
constexpr uint64_t avail_flags_offset() { return 0; }
constexpr uint64_t avail_idx_offset() { return 2; }
constexpr uint64_t avail_ring_offset(uint32_t i) { return 4 + 2 * uint64_t{i}; }
constexpr uint64_t used_event_offset(uint32_t queue_size) { return avail_ring_offset(queue_size); }

// §2.7.8 The Virtqueue Used Ring:
//   le16 flags; le16 idx; virtq_used_elem ring[Queue Size]; le16 avail_event (only with EVENT_IDX).
inline constexpr uint16_t kUsedFNoNotify = 1;  // VIRTQ_USED_F_NO_NOTIFY
struct virtq_used_hdr {
  uint16_t flags;
  uint16_t idx;
};
static_assert(sizeof(virtq_used_hdr) == 4);
struct virtq_used_elem {
  uint32_t id;   // head of the used descriptor chain (le32 for padding reasons)
  uint32_t len;  // bytes written into the chain's device-writable buffers
};
static_assert(sizeof(virtq_used_elem) == 8);
constexpr uint64_t used_flags_offset() { return 0; }
constexpr uint64_t used_idx_offset() { return 2; }
constexpr uint64_t used_ring_offset(uint32_t i) { return 4 + 8 * uint64_t{i}; }
constexpr uint64_t avail_event_offset(uint32_t queue_size) { return used_ring_offset(queue_size); }

// §2.7: sizes and alignments of the three parts (the sizes include the event fields).
inline constexpr uint64_t kDescTableAlign = 16;
inline constexpr uint64_t kAvailRingAlign = 2;
inline constexpr uint64_t kUsedRingAlign = 4;
constexpr uint64_t desc_table_size(uint32_t queue_size) { return 16 * uint64_t{queue_size}; }
constexpr uint64_t avail_ring_size(uint32_t queue_size) { return 6 + 2 * uint64_t{queue_size}; }
constexpr uint64_t used_ring_size(uint32_t queue_size) { return 6 + 8 * uint64_t{queue_size}; }

// §2.7.7/§2.7.10 notification suppression with EVENT_IDX: true when moving an index from
// old_idx to new_idx crossed event_idx (all arithmetic modulo 2^16), i.e. when the entry at
// index event_idx was among those just added.
constexpr bool need_event(uint16_t event_idx, uint16_t new_idx, uint16_t old_idx) {
  return static_cast<uint16_t>(new_idx - event_idx - 1) < static_cast<uint16_t>(new_idx - old_idx);
}

// ---- Block device, §5.2 -------------------------------------------------------------------
// §5.2.3 Feature bits.
inline constexpr unsigned kBlkFSizeMax = 1;       // VIRTIO_BLK_F_SIZE_MAX
inline constexpr unsigned kBlkFSegMax = 2;        // VIRTIO_BLK_F_SEG_MAX
inline constexpr unsigned kBlkFGeometry = 4;      // VIRTIO_BLK_F_GEOMETRY
inline constexpr unsigned kBlkFRo = 5;            // VIRTIO_BLK_F_RO
inline constexpr unsigned kBlkFBlkSize = 6;       // VIRTIO_BLK_F_BLK_SIZE
inline constexpr unsigned kBlkFFlush = 9;         // VIRTIO_BLK_F_FLUSH
inline constexpr unsigned kBlkFTopology = 10;     // VIRTIO_BLK_F_TOPOLOGY
inline constexpr unsigned kBlkFConfigWce = 11;    // VIRTIO_BLK_F_CONFIG_WCE
inline constexpr unsigned kBlkFMq = 12;           // VIRTIO_BLK_F_MQ
inline constexpr unsigned kBlkFDiscard = 13;      // VIRTIO_BLK_F_DISCARD
inline constexpr unsigned kBlkFWriteZeroes = 14;  // VIRTIO_BLK_F_WRITE_ZEROES

// The protocol's sector is always 512 bytes, whatever blk_size says (§5.2.5).
inline constexpr uint32_t kBlkSectorSize = 512;
inline constexpr uint32_t kBlkSectorShift = 9;
// VIRTIO_BLK_T_GET_ID returns a NUL-padded string of up to 20 bytes (§5.2.6).
inline constexpr uint32_t kBlkIdBytes = 20;

// §5.2.4 Device configuration layout. The fields after write_zeroes_may_unmap belong to
// features azote never offers (SECURE_ERASE 16, ZONED 17); they are here so the layout and
// size match the spec text and stay zero.
struct virtio_blk_geometry {
  uint16_t cylinders;
  uint8_t heads;
  uint8_t sectors;
};
struct virtio_blk_topology {
  uint8_t physical_block_exp;  // log2 of logical blocks per physical block
  uint8_t alignment_offset;    // offset of the first aligned logical block
  uint16_t min_io_size;        // suggested minimum I/O size in blocks
  uint32_t opt_io_size;        // optimal (suggested maximum) I/O size in blocks
};
struct virtio_blk_zoned_characteristics {
  uint32_t zone_sectors;
  uint32_t max_open_zones;
  uint32_t max_active_zones;
  uint32_t max_append_sectors;
  uint32_t write_granularity;
  uint8_t model;
  uint8_t unused2[3];
};
struct virtio_blk_config {
  uint64_t capacity;  // in 512-byte sectors, always present
  uint32_t size_max;  // VIRTIO_BLK_F_SIZE_MAX
  uint32_t seg_max;   // VIRTIO_BLK_F_SEG_MAX
  virtio_blk_geometry geometry;
  uint32_t blk_size;  // VIRTIO_BLK_F_BLK_SIZE
  virtio_blk_topology topology;
  uint8_t writeback;  // VIRTIO_BLK_F_CONFIG_WCE
  uint8_t unused0;
  uint16_t num_queues;  // VIRTIO_BLK_F_MQ
  uint32_t max_discard_sectors;
  uint32_t max_discard_seg;
  uint32_t discard_sector_alignment;
  uint32_t max_write_zeroes_sectors;
  uint32_t max_write_zeroes_seg;
  uint8_t write_zeroes_may_unmap;
  uint8_t unused1[3];
  uint32_t max_secure_erase_sectors;
  uint32_t max_secure_erase_seg;
  uint32_t secure_erase_sector_alignment;
  virtio_blk_zoned_characteristics zoned;
};
static_assert(sizeof(virtio_blk_geometry) == 4 && sizeof(virtio_blk_topology) == 8);
static_assert(sizeof(virtio_blk_zoned_characteristics) == 24);
static_assert(offsetof(virtio_blk_config, capacity) == 0);
static_assert(offsetof(virtio_blk_config, size_max) == 8);
static_assert(offsetof(virtio_blk_config, seg_max) == 12);
static_assert(offsetof(virtio_blk_config, geometry) == 16);
static_assert(offsetof(virtio_blk_config, blk_size) == 20);
static_assert(offsetof(virtio_blk_config, topology) == 24);
static_assert(offsetof(virtio_blk_config, writeback) == 32);
static_assert(offsetof(virtio_blk_config, unused0) == 33);
static_assert(offsetof(virtio_blk_config, num_queues) == 34);
static_assert(offsetof(virtio_blk_config, max_discard_sectors) == 36);
static_assert(offsetof(virtio_blk_config, max_discard_seg) == 40);
static_assert(offsetof(virtio_blk_config, discard_sector_alignment) == 44);
static_assert(offsetof(virtio_blk_config, max_write_zeroes_sectors) == 48);
static_assert(offsetof(virtio_blk_config, max_write_zeroes_seg) == 52);
static_assert(offsetof(virtio_blk_config, write_zeroes_may_unmap) == 56);
static_assert(offsetof(virtio_blk_config, unused1) == 57);
static_assert(offsetof(virtio_blk_config, max_secure_erase_sectors) == 60);
static_assert(offsetof(virtio_blk_config, zoned) == 72);
static_assert(sizeof(virtio_blk_config) == 96);

// §5.2.6 Device Operation: request types.
inline constexpr uint32_t kBlkTIn = 0;            // VIRTIO_BLK_T_IN (read)
inline constexpr uint32_t kBlkTOut = 1;           // VIRTIO_BLK_T_OUT (write)
inline constexpr uint32_t kBlkTFlush = 4;         // VIRTIO_BLK_T_FLUSH
inline constexpr uint32_t kBlkTGetId = 8;         // VIRTIO_BLK_T_GET_ID
inline constexpr uint32_t kBlkTDiscard = 11;      // VIRTIO_BLK_T_DISCARD
inline constexpr uint32_t kBlkTWriteZeroes = 13;  // VIRTIO_BLK_T_WRITE_ZEROES

// §5.2.6 status byte values.
inline constexpr uint8_t kBlkSOk = 0;      // VIRTIO_BLK_S_OK
inline constexpr uint8_t kBlkSIoErr = 1;   // VIRTIO_BLK_S_IOERR
inline constexpr uint8_t kBlkSUnsupp = 2;  // VIRTIO_BLK_S_UNSUPP

// §5.2.6 struct virtio_blk_req starts with this header (device-readable), followed by
// data[] and a final device-writable u8 status.
struct virtio_blk_req_hdr {
  uint32_t type;
  uint32_t reserved;  // "ioprio" in the legacy interface; ignored
  uint64_t sector;
};
static_assert(sizeof(virtio_blk_req_hdr) == 16);
static_assert(offsetof(virtio_blk_req_hdr, sector) == 8);

// §5.2.6 data of DISCARD / WRITE_ZEROES: one or more of these segments.
inline constexpr uint32_t kBlkDwzFUnmap = 1;  // flags.unmap (bit 0); bits 1..31 reserved
struct virtio_blk_discard_write_zeroes {
  uint64_t sector;
  uint32_t num_sectors;
  uint32_t flags;
};
static_assert(sizeof(virtio_blk_discard_write_zeroes) == 16);
static_assert(offsetof(virtio_blk_discard_write_zeroes, num_sectors) == 8);
static_assert(offsetof(virtio_blk_discard_write_zeroes, flags) == 12);

}  // namespace azote::virtio
