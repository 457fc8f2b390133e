// The Internet checksum (RFC 1071): the 16-bit ones'-complement of the ones'-complement
// sum of 16-bit big-endian words, and its incremental update (RFC 1624) for rewrites of
// a few fields (TTL, addresses, ports) without summing the packet again.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "net/addr.hpp"

namespace azote::net {

// Accumulates a ones'-complement sum over pieces; a piece of odd length is continued
// correctly by the next one (byte positions are tracked across add() calls).
class Checksum {
 public:
  Checksum& add(std::span<const uint8_t> bytes);
  Checksum& add16(uint16_t word);  // at an even position (call only after even-length pieces)
  Checksum& add32(uint32_t v) { return add16(static_cast<uint16_t>(v >> 16)).add16(static_cast<uint16_t>(v)); }
  Checksum& add(Ipv4Address a) { return add32(a.value()); }
  // The folded sum (0..0xffff, not complemented). Over data that holds a correct checksum
  // it is 0xffff.
  uint16_t sum() const;
  // The checksum to store: ~sum().
  uint16_t finish() const { return static_cast<uint16_t>(~sum()); }

 private:
  uint64_t acc_ = 0;
  bool odd_ = false;  // the next byte is the low half of a word
};

// RFC 1071 over one buffer: the value to store in a zeroed checksum field.
uint16_t internet_checksum(std::span<const uint8_t> bytes);
// Whether `bytes` (checksum field included) sums to 0xffff.
bool checksum_ok(std::span<const uint8_t> bytes);

// The TCP/UDP pseudo-header sum for IPv4 (RFC 768, RFC 9293 §3.1), to be continued over
// the transport header and payload.
Checksum ipv4_pseudo_header(Ipv4Address src, Ipv4Address dst, uint8_t protocol, uint16_t length);

// RFC 1624 eqn. 3: the new checksum after a 16-bit word covered by `checksum` changed from
// `old_word` to `new_word`: HC' = ~(~HC + ~m + m'). Verifies exactly as a full recomputation
// does (RFC 1141's eqn. 2 got the 0x0000/0xffff cases wrong); the two may differ only as
// 0x0000 vs 0xffff over data whose every word is zero, both valid in ones' complement.
uint16_t checksum_update16(uint16_t checksum, uint16_t old_word, uint16_t new_word);
// Same for an aligned 32-bit field (an IPv4 address in the IP header or pseudo-header).
uint16_t checksum_update32(uint16_t checksum, uint32_t old_value, uint32_t new_value);
// UDP: a computed checksum of 0 is sent as 0xffff (0 means "no checksum", RFC 768).
inline uint16_t udp_checksum_field(uint16_t checksum) { return checksum == 0 ? 0xffff : checksum; }

}  // namespace azote::net
