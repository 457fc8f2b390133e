// IPv4 (RFC 791). parse_ipv4 validates the header completely (version, IHL, total length
// against the buffer, header checksum, the reserved flag) and flags fragments; whether a
// fragment or an option is acceptable is the card's policy, not this parser's.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "base/result.hpp"
#include "net/addr.hpp"
#include "net/error.hpp"

namespace azote::net {

inline constexpr uint8_t kIpProtoIcmp = 1;
inline constexpr uint8_t kIpProtoTcp = 6;
inline constexpr uint8_t kIpProtoUdp = 17;
inline constexpr size_t kIpv4HeaderLen = 20;  // without options
inline constexpr size_t kIpv4MaxLen = 65535;

struct Ipv4View {
  size_t header_len = 0;  // IHL * 4, 20..60
  uint8_t tos = 0;        // DSCP << 2 | ECN
  uint16_t total_len = 0;
  uint16_t id = 0;
  bool dont_fragment = false;
  bool more_fragments = false;
  uint16_t fragment_offset = 0;  // in bytes (the field times 8)
  uint8_t ttl = 0;
  uint8_t protocol = 0;
  uint16_t checksum = 0;
  Ipv4Address src;
  Ipv4Address dst;
  std::span<const uint8_t> header;   // header_len bytes, options included
  std::span<const uint8_t> options;  // header_len - 20 bytes, not interpreted
  std::span<const uint8_t> payload;  // total_len - header_len bytes; link padding excluded

  bool is_fragment() const { return more_fragments || fragment_offset != 0; }
  bool has_options() const { return !options.empty(); }
};

// The payload of an Ethernet frame with ethertype 0x0800 (bytes past total_len are link
// padding and ignored). kTruncated: buffer shorter than 20, than IHL*4, or than total length;
// kUnsupported: version != 4; kBadLength: IHL < 5 or total length < IHL*4;
// kMalformed: the reserved flag bit set; kBadChecksum: the header checksum.
Result<Ipv4View, NetError> parse_ipv4(std::span<const uint8_t> packet);

struct Ipv4Fields {
  Ipv4Address src;
  Ipv4Address dst;
  uint8_t protocol = kIpProtoUdp;
  uint8_t ttl = 64;  // IMDS replies use 1: they must not leave the host's first hop
  uint8_t tos = 0;
  uint16_t id = 0;
  bool dont_fragment = true;
};

// Writes a 20-byte header (no options) at out[0], total length 20 + payload_len, with its
// checksum; the payload is the caller's, at out[20, 20 + payload_len). Returns the packet
// length. kBadLength over 65535 bytes; kNoSpace if `out` cannot hold the packet.
Result<size_t, NetError> build_ipv4(std::span<uint8_t> out, const Ipv4Fields& f, size_t payload_len);

// NAT-style rewrites of a parsed, writable header (`header` is Ipv4View::header's bytes in a
// buffer the card owns), keeping the checksum right with RFC 1624 updates.
void ipv4_set_ttl(std::span<uint8_t> header, uint8_t ttl);
void ipv4_set_src(std::span<uint8_t> header, Ipv4Address src);
void ipv4_set_dst(std::span<uint8_t> header, Ipv4Address dst);

}  // namespace azote::net
