// Ethernet II with at most one 802.1Q tag. Frames reach the card without preamble or
// FCS and, from a virtio-net guest, without padding to 60 bytes: no minimum is enforced.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>

#include "base/result.hpp"
#include "net/addr.hpp"
#include "net/error.hpp"

namespace azote::net {

inline constexpr uint16_t kEtherTypeIpv4 = 0x0800;
inline constexpr uint16_t kEtherTypeArp = 0x0806;
inline constexpr uint16_t kEtherTypeVlan = 0x8100;  // 802.1Q
inline constexpr uint16_t kEtherTypeQinQ = 0x88a8;  // 802.1ad service tag
inline constexpr uint16_t kEtherTypeIpv6 = 0x86dd;
inline constexpr size_t kEthernetHeaderLen = 14;
inline constexpr size_t kVlanTagLen = 4;

struct VlanTag {
  uint8_t pcp = 0;   // priority, 3 bits
  bool dei = false;  // drop eligible
  uint16_t vid = 0;  // 12 bits
  uint16_t tci() const { return static_cast<uint16_t>((pcp & 7) << 13 | (dei ? 1 << 12 : 0) | (vid & 0xfff)); }
  static VlanTag from_tci(uint16_t tci) {
    return {static_cast<uint8_t>(tci >> 13), (tci & 0x1000) != 0, static_cast<uint16_t>(tci & 0xfff)};
  }
  friend bool operator==(const VlanTag&, const VlanTag&) = default;
};

struct EthernetView {
  MacAddress dst;
  MacAddress src;
  std::optional<VlanTag> vlan;  // the 802.1Q tag, if the frame carried one
  uint16_t ethertype = 0;       // of the payload (inside the tag)
  size_t header_len = 0;        // 14, or 18 with a tag
  std::span<const uint8_t> payload;
};

// kTruncated: shorter than the header (and tag); kUnsupported: an 802.3 length field
// (ethertype < 0x0600, LLC/SNAP), an 802.1ad outer tag or a second tag (QinQ).
Result<EthernetView, NetError> parse_ethernet(std::span<const uint8_t> frame);

struct EthernetFields {
  MacAddress dst;
  MacAddress src;
  uint16_t ethertype = kEtherTypeIpv4;
  std::optional<VlanTag> vlan;
};
inline size_t ethernet_header_len(const EthernetFields& f) { return kEthernetHeaderLen + (f.vlan ? kVlanTagLen : 0); }

// Writes the header at out[0]; the payload (payload_len bytes) is the caller's, right
// after it. Returns the frame length. kNoSpace if `out` cannot hold the whole frame.
Result<size_t, NetError> build_ethernet(std::span<uint8_t> out, const EthernetFields& f, size_t payload_len);

}  // namespace azote::net
