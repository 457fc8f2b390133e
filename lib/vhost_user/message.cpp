#include "vhost_user/message.hpp"

#include <array>
#include <cstdio>
#include <limits>

namespace azote::vhost_user {
namespace {

constexpr uint64_t kU64Max = std::numeric_limits<uint64_t>::max();

// a + b would not wrap past 2^64 - 1.
bool fits(uint64_t a, uint64_t b) { return b <= kU64Max - a; }

// [a, a+alen) and [b, b+blen) intersect; both lengths non-zero and non-wrapping.
bool ranges_overlap(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen) {
  return a < b + blen && b < a + alen;
}

struct NamedSpec {
  const char* name;
  std::optional<RequestSpec> spec;
};

using PK = PayloadKind;
using FR = FdRule;

// Index = request code. Codes with no spec are known by name only and are rejected by
// the validators (this implementation never sends or accepts them).
const std::array<NamedSpec, 41>& table() {
  static const std::array<NamedSpec, 41> t = {{
      {"NONE", std::nullopt},
      {"GET_FEATURES", RequestSpec{PK::kNone, FR::kNone, PK::kU64, false}},
      {"SET_FEATURES", RequestSpec{PK::kU64, FR::kNone, PK::kNone, false}},
      {"SET_OWNER", RequestSpec{PK::kNone, FR::kNone, PK::kNone, false}},
      {"RESET_OWNER", RequestSpec{PK::kNone, FR::kNone, PK::kNone, false}},
      {"SET_MEM_TABLE", RequestSpec{PK::kMemTable, FR::kPerRegion, PK::kNone, false}},
      {"SET_LOG_BASE", RequestSpec{PK::kLog, FR::kOne, PK::kU64, false}},
      {"SET_LOG_FD", RequestSpec{PK::kNone, FR::kOne, PK::kNone, false}},
      {"SET_VRING_NUM", RequestSpec{PK::kVringState, FR::kNone, PK::kNone, false}},
      {"SET_VRING_ADDR", RequestSpec{PK::kVringAddr, FR::kNone, PK::kNone, false}},
      {"SET_VRING_BASE", RequestSpec{PK::kVringState, FR::kNone, PK::kNone, false}},
      {"GET_VRING_BASE", RequestSpec{PK::kVringState, FR::kNone, PK::kVringState, false}},
      {"SET_VRING_KICK", RequestSpec{PK::kU64, FR::kVringFd, PK::kNone, false}},
      {"SET_VRING_CALL", RequestSpec{PK::kU64, FR::kVringFd, PK::kNone, false}},
      {"SET_VRING_ERR", RequestSpec{PK::kU64, FR::kVringFd, PK::kNone, false}},
      {"GET_PROTOCOL_FEATURES", RequestSpec{PK::kNone, FR::kNone, PK::kU64, false}},
      {"SET_PROTOCOL_FEATURES", RequestSpec{PK::kU64, FR::kNone, PK::kNone, false}},
      {"GET_QUEUE_NUM", RequestSpec{PK::kNone, FR::kNone, PK::kU64, false}},
      {"SET_VRING_ENABLE", RequestSpec{PK::kVringState, FR::kNone, PK::kNone, false}},
      {"SEND_RARP", RequestSpec{PK::kU64, FR::kNone, PK::kNone, false}},
      {"NET_SET_MTU", RequestSpec{PK::kU64, FR::kNone, PK::kNone, false}},
      {"SET_BACKEND_REQ_FD", RequestSpec{PK::kNone, FR::kOne, PK::kNone, false}},
      {"IOTLB_MSG", std::nullopt},
      {"SET_VRING_ENDIAN", RequestSpec{PK::kVringState, FR::kNone, PK::kNone, false}},
      {"GET_CONFIG", RequestSpec{PK::kConfig, FR::kNone, PK::kConfig, false}},
      {"SET_CONFIG", RequestSpec{PK::kConfig, FR::kNone, PK::kNone, false}},
      {"CREATE_CRYPTO_SESSION", std::nullopt},
      {"CLOSE_CRYPTO_SESSION", std::nullopt},
      {"POSTCOPY_ADVISE", std::nullopt},
      {"POSTCOPY_LISTEN", std::nullopt},
      {"POSTCOPY_END", std::nullopt},
      {"GET_INFLIGHT_FD", RequestSpec{PK::kInflight, FR::kNone, PK::kInflight, true}},
      {"SET_INFLIGHT_FD", RequestSpec{PK::kInflight, FR::kOne, PK::kNone, false}},
      {"GPU_SET_SOCKET", std::nullopt},
      {"RESET_DEVICE", RequestSpec{PK::kNone, FR::kNone, PK::kNone, false}},
      {"VRING_KICK", RequestSpec{PK::kVringState, FR::kNone, PK::kNone, false}},
      {"GET_MAX_MEM_SLOTS", RequestSpec{PK::kNone, FR::kNone, PK::kU64, false}},
      {"ADD_MEM_REG", RequestSpec{PK::kSingleRegion, FR::kOne, PK::kNone, false}},
      {"REM_MEM_REG", RequestSpec{PK::kSingleRegion, FR::kOptionalOne, PK::kNone, false}},
      {"SET_STATUS", RequestSpec{PK::kU64, FR::kNone, PK::kNone, false}},
      {"GET_STATUS", RequestSpec{PK::kNone, FR::kNone, PK::kU64, false}},
  }};
  return t;
}

std::string hex(uint64_t v) {
  char b[24];
  std::snprintf(b, sizeof b, "0x%llx", static_cast<unsigned long long>(v));
  return b;
}

Unexpected<VuError> bad(Errc c, const std::string& what) { return make_error(c, what); }

// Payload size and content rules shared by requests and replies.
Result<void, VuError> check_payload(const std::string& name, PayloadKind kind, std::span<const uint8_t> p) {
  const size_t fixed = fixed_payload_size(kind);
  switch (kind) {
    case PK::kNone:
    case PK::kU64:
    case PK::kVringState:
    case PK::kVringAddr:
    case PK::kLog:
    case PK::kInflight:
    case PK::kSingleRegion:
      if (p.size() != fixed)
        return bad(Errc::kBadPayload, name + " payload is " + std::to_string(p.size()) + " bytes, expected " +
                                          std::to_string(fixed));
      if (kind == PK::kSingleRegion) {
        AZOTE_TRYV(validate_region(load<SingleMemoryRegion>(p).region));
      }
      return {};
    case PK::kMemTable: {
      if (p.size() < sizeof(MemoryTableHeader))
        return bad(Errc::kBadPayload, name + " payload is shorter than the table header");
      const auto th = load<MemoryTableHeader>(p);
      if (th.nregions == 0 || th.nregions > kMaxMemRegions)
        return bad(Errc::kBadRegion,
                   name + " has " + std::to_string(th.nregions) + " regions (1.." + std::to_string(kMaxMemRegions) + ")");
      const size_t want = sizeof(MemoryTableHeader) + th.nregions * sizeof(MemoryRegionDesc);
      if (p.size() != want)
        return bad(Errc::kBadPayload, name + " payload is " + std::to_string(p.size()) + " bytes for " +
                                          std::to_string(th.nregions) + " regions, expected " + std::to_string(want));
      std::array<MemoryRegionDesc, kMaxMemRegions> r{};
      for (uint32_t i = 0; i < th.nregions; ++i) {
        r[i] = load<MemoryRegionDesc>(p, sizeof(MemoryTableHeader) + i * sizeof(MemoryRegionDesc));
        auto v = validate_region(r[i]);
        if (!v) return bad(Errc::kBadRegion, "region " + std::to_string(i) + ": " + v.error().context);
        for (uint32_t j = 0; j < i; ++j) {
          if (regions_overlap(r[i], r[j]))
            return bad(Errc::kBadRegion, "region " + std::to_string(i) + " overlaps region " + std::to_string(j));
        }
      }
      return {};
    }
    case PK::kConfig: {
      if (p.size() < sizeof(ConfigHeader)) return bad(Errc::kBadPayload, name + " payload is shorter than the config header");
      const auto ch = load<ConfigHeader>(p);
      if (ch.size > kMaxConfigSize)
        return bad(Errc::kBadPayload, name + " config size " + std::to_string(ch.size) + " is over " +
                                          std::to_string(kMaxConfigSize));
      if (uint64_t{ch.offset} + ch.size > kMaxConfigSize)
        return bad(Errc::kBadPayload, name + " config window [" + std::to_string(ch.offset) + ", +" +
                                          std::to_string(ch.size) + ") is outside the config space");
      if (ch.flags > 1) return bad(Errc::kBadPayload, name + " config flags " + std::to_string(ch.flags) + " unknown");
      if (p.size() != sizeof(ConfigHeader) + ch.size)
        return bad(Errc::kBadPayload, name + " payload is " + std::to_string(p.size()) + " bytes for a " +
                                          std::to_string(ch.size) + "-byte config access");
      return {};
    }
  }
  return bad(Errc::kBadPayload, name + " has an unknown payload kind");
}

}  // namespace

std::string request_name(uint32_t code) {
  if (code < table().size()) return table()[code].name;
  return "REQUEST_" + std::to_string(code);
}

std::optional<RequestSpec> request_spec(uint32_t code) {
  if (code >= table().size()) return std::nullopt;
  return table()[code].spec;
}

size_t fixed_payload_size(PayloadKind k) {
  switch (k) {
    case PK::kNone: return 0;
    case PK::kU64: return sizeof(uint64_t);
    case PK::kVringState: return sizeof(VringState);
    case PK::kVringAddr: return sizeof(VringAddr);
    case PK::kLog: return sizeof(LogDesc);
    case PK::kInflight: return sizeof(InflightDesc);
    case PK::kSingleRegion: return sizeof(SingleMemoryRegion);
    case PK::kMemTable:
    case PK::kConfig: return 0;
  }
  return 0;
}

Result<void, VuError> validate_region(const MemoryRegionDesc& r) {
  if (r.memory_size == 0) return bad(Errc::kBadRegion, "region size is 0");
  if (!fits(r.guest_phys_addr, r.memory_size)) return bad(Errc::kBadRegion, "guest address + size wraps");
  if (!fits(r.userspace_addr, r.memory_size)) return bad(Errc::kBadRegion, "user address + size wraps");
  if (!fits(r.mmap_offset, r.memory_size)) return bad(Errc::kBadRegion, "mmap offset + size wraps");
  return {};
}

bool regions_overlap(const MemoryRegionDesc& a, const MemoryRegionDesc& b) {
  // Both address spaces must be unambiguous: guest addresses for GuestMemoryView, user
  // addresses for ring translation.
  return ranges_overlap(a.guest_phys_addr, a.memory_size, b.guest_phys_addr, b.memory_size) ||
         ranges_overlap(a.userspace_addr, a.memory_size, b.userspace_addr, b.memory_size);
}

Result<void, VuError> validate_request(const Header& hdr, std::span<const uint8_t> payload, size_t nfds) {
  const std::string name = request_name(hdr.request);
  if ((hdr.flags & kVersionMask) != kVersion)
    return bad(Errc::kBadHeader, name + " has protocol version " + std::to_string(hdr.flags & kVersionMask));
  if ((hdr.flags & ~(kVersionMask | kFlagNeedReply)) != 0)
    return bad(Errc::kBadHeader, name + " has unexpected flags " + hex(hdr.flags));
  const auto spec = request_spec(hdr.request);
  if (!spec) return bad(Errc::kBadHeader, "unknown or unsupported request " + name);
  if (hdr.size != payload.size()) return bad(Errc::kBadPayload, name + " header size does not match the payload");
  AZOTE_TRYV(check_payload(name, spec->payload, payload));

  size_t want_min = 0, want_max = 0;
  switch (spec->fds) {
    case FR::kNone: break;
    case FR::kOne: want_min = want_max = 1; break;
    case FR::kOptionalOne: want_max = 1; break;
    case FR::kPerRegion: want_min = want_max = load<MemoryTableHeader>(payload).nregions; break;
    case FR::kVringFd: {
      const auto v = load<uint64_t>(payload);
      if ((v & ~(kVringIndexMask | kVringNoFd)) != 0)
        return bad(Errc::kBadPayload, name + " value has reserved bits set");
      want_min = want_max = (v & kVringNoFd) != 0 ? 0 : 1;
      break;
    }
  }
  if (nfds < want_min || nfds > want_max)
    return bad(Errc::kBadFds, name + " carries " + std::to_string(nfds) + " fds, expected " +
                                  (want_min == want_max ? std::to_string(want_min)
                                                        : std::to_string(want_min) + ".." + std::to_string(want_max)));
  return {};
}

Result<void, VuError> validate_reply(Request sent, bool ack, const Header& hdr, std::span<const uint8_t> payload,
                                     size_t nfds, uint32_t config_size) {
  const std::string name = request_name(sent);
  if (hdr.request != static_cast<uint32_t>(sent))
    return bad(Errc::kBadReply, "reply to " + name + " carries request " + request_name(hdr.request));
  if (hdr.flags != (kVersion | kFlagReply))
    return bad(Errc::kBadReply, "reply to " + name + " has flags " + hex(hdr.flags));
  if (hdr.size != payload.size()) return bad(Errc::kBadReply, "reply to " + name + " size does not match its payload");
  const auto spec = request_spec(static_cast<uint32_t>(sent));
  if (!spec) return bad(Errc::kBadReply, "reply to unknown request " + name);
  const PayloadKind kind = ack ? PK::kU64 : spec->reply;
  if (!ack && kind == PK::kNone) return bad(Errc::kBadReply, name + " has no reply");
  const size_t want_fds = (!ack && spec->reply_fd) ? 1 : 0;
  if (nfds != want_fds)
    return bad(Errc::kBadReply, "reply to " + name + " carries " + std::to_string(nfds) + " fds, expected " +
                                    std::to_string(want_fds));
  if (kind == PK::kConfig) {
    if (payload.size() < sizeof(ConfigHeader)) return bad(Errc::kBadReply, "reply to " + name + " is too short");
    const auto ch = load<ConfigHeader>(payload);
    if (ch.size == 0 && payload.size() == sizeof(ConfigHeader))
      return bad(Errc::kDevice, "backend refused " + name);
    if (ch.size != config_size || payload.size() != sizeof(ConfigHeader) + config_size)
      return bad(Errc::kBadReply, "reply to " + name + " has " + std::to_string(payload.size()) + " bytes for a " +
                                      std::to_string(config_size) + "-byte config read");
    return {};
  }
  if (payload.size() != fixed_payload_size(kind))
    return bad(Errc::kBadReply, "reply to " + name + " is " + std::to_string(payload.size()) + " bytes, expected " +
                                    std::to_string(fixed_payload_size(kind)));
  return {};
}

}  // namespace azote::vhost_user
