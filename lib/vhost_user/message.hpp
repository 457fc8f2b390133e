// vhost-user wire format: header, request codes, payload layouts, feature bits, limits,
// and the syntax validators both sides run before any field of a message is used.
//
// Reference: QEMU docs/interop/vhost-user.rst ("Message Specification", "Front-end
// message types", "Protocol features"). All numbers are host byte order; every payload
// struct below is a plain, naturally aligned layout whose size and offsets are
// static_assert'ed against the specification.
//
// Validation happens in two places: here (syntax: sizes, fd counts, flags, region
// arithmetic and overlap; no state, no fds touched) and in the backend session
// (semantics: negotiated features, queue indices and sizes, ring placement inside the
// mapped regions, fd types and sizes).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <type_traits>

#include "base/error.hpp"

namespace azote::vhost_user {

// ---- Errors -----------------------------------------------------------------------

enum class Errc {
  kSocket = 1,   // socket/bind/connect/accept/epoll/send failure on our side
  kTimeout,      // the peer did not complete a message or reply in time
  kClosed,       // the peer closed the connection between two messages
  kTruncated,    // the peer closed the connection in the middle of a message
  kTooLarge,     // header size field over the message limit
  kBadFds,       // wrong number of fds, truncated control data, unexpected ancillary data
  kBadHeader,    // unknown request code, bad version or flags
  kBadPayload,   // payload size or content invalid for the request
  kBadRegion,    // memory region invalid, overlapping, or not backed by its fd
  kBadVring,     // vring index, size, base, address or fd invalid
  kUnsupported,  // a request this implementation does not implement or did not negotiate
  kBadState,     // request out of order for the current protocol state
  kBadReply,     // (frontend) reply malformed or not matching the request
  kNack,         // (frontend) the backend answered a REPLY_ACK request with failure
  kDevice,       // the device refused the request
  kMap,          // memfd/mmap failure on our side
};
using VuError = Error<Errc>;

// ---- Limits -------------------------------------------------------------------------

inline constexpr uint32_t kVersion = 0x1;
inline constexpr uint32_t kVersionMask = 0x3;
inline constexpr uint32_t kFlagReply = 0x4;
inline constexpr uint32_t kFlagNeedReply = 0x8;

inline constexpr size_t kHeaderSize = 12;
inline constexpr size_t kMaxMessageSize = 4096;  // header + payload
inline constexpr size_t kMaxPayloadSize = kMaxMessageSize - kHeaderSize;
inline constexpr size_t kMaxFds = 8;             // per message
inline constexpr uint32_t kMaxMemRegions = 8;    // SET_MEM_TABLE and the backend's slot count
inline constexpr uint32_t kMaxConfigSize = 256;  // virtio config space window
inline constexpr uint32_t kMaxQueues = 256;      // vring index is bits 0-7 of kick/call/err u64
inline constexpr uint32_t kMaxQueueSize = 32768; // split virtqueue limit (virtio 1.x 2.7)
inline constexpr uint64_t kVringIndexMask = 0xff;
inline constexpr uint64_t kVringNoFd = 0x100;    // "invalid FD flag" in kick/call/err u64

// ---- Request codes (front-end -> back-end) ------------------------------------------

enum class Request : uint32_t {
  kNone = 0,
  kGetFeatures = 1,
  kSetFeatures = 2,
  kSetOwner = 3,
  kResetOwner = 4,
  kSetMemTable = 5,
  kSetLogBase = 6,
  kSetLogFd = 7,
  kSetVringNum = 8,
  kSetVringAddr = 9,
  kSetVringBase = 10,
  kGetVringBase = 11,
  kSetVringKick = 12,
  kSetVringCall = 13,
  kSetVringErr = 14,
  kGetProtocolFeatures = 15,
  kSetProtocolFeatures = 16,
  kGetQueueNum = 17,
  kSetVringEnable = 18,
  kSendRarp = 19,
  kNetSetMtu = 20,
  kSetBackendReqFd = 21,
  kIotlbMsg = 22,
  kSetVringEndian = 23,
  kGetConfig = 24,
  kSetConfig = 25,
  kCreateCryptoSession = 26,
  kCloseCryptoSession = 27,
  kPostcopyAdvise = 28,
  kPostcopyListen = 29,
  kPostcopyEnd = 30,
  kGetInflightFd = 31,
  kSetInflightFd = 32,
  kGpuSetSocket = 33,
  kResetDevice = 34,
  kVringKick = 35,
  kGetMaxMemSlots = 36,
  kAddMemReg = 37,
  kRemMemReg = 38,
  kSetStatus = 39,
  kGetStatus = 40,
};

// "GET_FEATURES" etc., or "REQUEST_<n>" for codes this table does not know.
std::string request_name(uint32_t code);
inline std::string request_name(Request r) { return request_name(static_cast<uint32_t>(r)); }

// ---- Feature bits -------------------------------------------------------------------

inline constexpr uint64_t bit(unsigned n) { return uint64_t{1} << n; }

// Virtio/vhost feature bits the protocol layer itself cares about.
inline constexpr unsigned kFProtocolFeatures = 30;  // VHOST_USER_F_PROTOCOL_FEATURES
inline constexpr unsigned kFLogAll = 26;             // VHOST_F_LOG_ALL (never offered here)
inline constexpr unsigned kFVersion1 = 32;           // VIRTIO_F_VERSION_1

// Protocol feature bits (vhost-user.rst "Protocol features").
enum ProtocolFeature : unsigned {
  kPfMq = 0,
  kPfLogShmfd = 1,
  kPfRarp = 2,
  kPfReplyAck = 3,
  kPfMtu = 4,
  kPfBackendReq = 5,
  kPfCrossEndian = 6,
  kPfCryptoSession = 7,
  kPfPagefault = 8,
  kPfConfig = 9,
  kPfBackendSendFd = 10,
  kPfHostNotifier = 11,
  kPfInflightShmfd = 12,
  kPfResetDevice = 13,
  kPfInbandNotifications = 14,
  kPfConfigureMemSlots = 15,
  kPfStatus = 16,
};

// Virtio device status bits the protocol layer itself uses (GET/SET_STATUS carry the
// virtio 1.2 §2.1 device status byte in a u64).
inline constexpr uint64_t kDeviceStatusMask = 0xff;        // anything above is not a status
inline constexpr uint64_t kDeviceStatusNeedsReset = 0x40;  // DEVICE_NEEDS_RESET (set by the device)

// ---- Payload layouts ----------------------------------------------------------------

struct Header {
  uint32_t request = 0;
  uint32_t flags = 0;
  uint32_t size = 0;  // payload bytes that follow
};

struct VringState {  // SET_VRING_NUM/BASE/ENABLE, GET_VRING_BASE
  uint32_t index = 0;
  uint32_t num = 0;
};

struct VringAddr {  // SET_VRING_ADDR: frontend user (virtual) addresses
  uint32_t index = 0;
  uint32_t flags = 0;  // bit 0: VHOST_VRING_F_LOG (logging is not supported)
  uint64_t desc_user_addr = 0;
  uint64_t used_user_addr = 0;
  uint64_t avail_user_addr = 0;
  uint64_t log_guest_addr = 0;
};

struct MemoryRegionDesc {
  uint64_t guest_phys_addr = 0;
  uint64_t memory_size = 0;
  uint64_t userspace_addr = 0;  // frontend virtual address of the region
  uint64_t mmap_offset = 0;     // offset of the region inside the fd
};

struct MemoryTableHeader {  // SET_MEM_TABLE: followed by nregions MemoryRegionDesc
  uint32_t nregions = 0;
  uint32_t padding = 0;
};

struct SingleMemoryRegion {  // ADD_MEM_REG, REM_MEM_REG
  uint64_t padding = 0;
  MemoryRegionDesc region;
};

struct LogDesc {  // SET_LOG_BASE (syntax only; logging is not supported)
  uint64_t mmap_size = 0;
  uint64_t mmap_offset = 0;
};

struct ConfigHeader {  // GET_CONFIG/SET_CONFIG: followed by `size` bytes
  uint32_t offset = 0;
  uint32_t size = 0;
  uint32_t flags = 0;  // 0: writable fields, 1: live migration
};

struct InflightDesc {  // GET_INFLIGHT_FD/SET_INFLIGHT_FD
  uint64_t mmap_size = 0;
  uint64_t mmap_offset = 0;
  uint16_t num_queues = 0;
  uint16_t queue_size = 0;
  uint32_t padding = 0;  // the C struct's tail padding; sizeof is 24 on the wire
};

static_assert(sizeof(Header) == kHeaderSize);
static_assert(sizeof(VringState) == 8);
static_assert(sizeof(VringAddr) == 40 && offsetof(VringAddr, desc_user_addr) == 8 &&
              offsetof(VringAddr, used_user_addr) == 16 && offsetof(VringAddr, avail_user_addr) == 24 &&
              offsetof(VringAddr, log_guest_addr) == 32);
static_assert(sizeof(MemoryRegionDesc) == 32 && offsetof(MemoryRegionDesc, mmap_offset) == 24);
static_assert(sizeof(MemoryTableHeader) == 8);
static_assert(sizeof(SingleMemoryRegion) == 40 && offsetof(SingleMemoryRegion, region) == 8);
static_assert(sizeof(LogDesc) == 16);
static_assert(sizeof(ConfigHeader) == 12);
static_assert(sizeof(InflightDesc) == 24 && offsetof(InflightDesc, num_queues) == 16 &&
              offsetof(InflightDesc, queue_size) == 18);
static_assert(sizeof(MemoryTableHeader) + kMaxMemRegions * sizeof(MemoryRegionDesc) <= kMaxPayloadSize);
static_assert(sizeof(ConfigHeader) + kMaxConfigSize <= kMaxPayloadSize);

// Payload shapes and fd rules, one entry per request this implementation knows.
enum class PayloadKind : uint8_t {
  kNone,          // size 0
  kU64,           // 8
  kVringState,    // 8
  kVringAddr,     // 40
  kMemTable,      // 8 + 32 * nregions, 1 <= nregions <= 8
  kLog,           // 16
  kConfig,        // 12 + size, size <= 256, offset + size <= 256
  kInflight,      // 24
  kSingleRegion,  // 40
};
enum class FdRule : uint8_t {
  kNone,         // no fds
  kOne,          // exactly one
  kVringFd,      // one, or none when the u64 has the NOFD bit
  kPerRegion,    // exactly nregions
  kOptionalOne,  // zero or one (REM_MEM_REG: a stray fd is closed unused)
};
struct RequestSpec {
  PayloadKind payload = PayloadKind::kNone;
  FdRule fds = FdRule::kNone;
  PayloadKind reply = PayloadKind::kNone;  // kNone: no explicit reply (REPLY_ACK may add a u64)
  bool reply_fd = false;                   // the reply carries exactly one fd
};

// nullopt for codes this implementation does not know (IOTLB, crypto, postcopy, GPU...).
std::optional<RequestSpec> request_spec(uint32_t code);

// ---- Validators ---------------------------------------------------------------------

// Front-end request as seen by the back-end: flags (version 1, no REPLY, only NEED_REPLY
// besides), known code, exact payload size, fd count, and the payload's own arithmetic
// (region sizes non-zero, no wrap of gpa/user/offset + size, no overlap between regions,
// config window inside 256 bytes, no reserved bits in kick/call/err).
Result<void, VuError> validate_request(const Header& hdr, std::span<const uint8_t> payload, size_t nfds);

// Back-end reply as seen by the front-end, for a request `sent`. `ack` says the reply is
// a REPLY_ACK u64 rather than the request's own reply. For GET_CONFIG, `config_size`
// is the size that was asked for; a reply with size 0 is the back-end's error signal
// and is reported as kDevice.
Result<void, VuError> validate_reply(Request sent, bool ack, const Header& hdr, std::span<const uint8_t> payload,
                                     size_t nfds, uint32_t config_size = 0);

// Region arithmetic shared by SET_MEM_TABLE, ADD_MEM_REG and the backend's table.
Result<void, VuError> validate_region(const MemoryRegionDesc& r);
bool regions_overlap(const MemoryRegionDesc& a, const MemoryRegionDesc& b);

// Copy a payload struct out of a byte span (copy, then validate). The caller has already
// checked the size with a validator; a short span is a bug and aborts.
template <class T>
T load(std::span<const uint8_t> bytes, size_t offset = 0) {
  static_assert(std::is_trivially_copyable_v<T>);
  if (offset > bytes.size() || bytes.size() - offset < sizeof(T)) std::abort();
  T v;
  std::memcpy(&v, bytes.data() + offset, sizeof(T));
  return v;
}

// Size of the payload for a fixed-size kind (0 for kNone; variable kinds return 0).
size_t fixed_payload_size(PayloadKind k);

}  // namespace azote::vhost_user
