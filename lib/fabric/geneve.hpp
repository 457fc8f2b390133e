// Geneve (RFC 8926) as the fabric uses it: a strict parser and a builder, over byte
// spans, no allocation. The fabric carries Ethernet frames (protocol type 0x6558),
// the VNI is the VPC, and every packet has exactly one azote security option
// (class 0xFF2A from the experimental range 0xFF00-0xFFFF of RFC 8926 §8, critical)
// carrying the sender's host id, the key id and the 64-bit sequence number.
//
//   0                   1                   2                   3
//   |Ver|  Opt Len  |O|C|    Rsvd.  |  Protocol Type = 0x6558       |
//   |        Virtual Network Identifier (VNI)       |    Reserved   |
//   | Option Class = 0xFF2A         |C| Type = 1/2  |R|R|R| Len = 4 |
//   |                  sender host id                               |
//   |                  key id                                       |
//   |                  sequence number (64 bits)                    |
//   |                                                               |
//   payload: the inner Ethernet frame, AES-256-GCM ciphertext + 16-byte tag (type 1)
//            or plaintext (type 2, only between peers configured "cipher: none")
//
// Parsing checks: version 0, protocol 0x6558, options tiling the option area exactly,
// the C bit set iff a critical option is present; reserved bits are ignored as the
// RFC says (the whole header is authenticated data, so they cannot be altered).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>

#include "base/result.hpp"
#include "fabric/error.hpp"

namespace azote::fabric {

inline constexpr uint16_t kGenevePort = 6081;
inline constexpr uint16_t kProtoEthernet = 0x6558;
inline constexpr size_t kGeneveBaseLen = 8;
inline constexpr size_t kOptionHeaderLen = 4;
inline constexpr size_t kMaxOptionsLen = 63 * 4;      // 6-bit length in 4-byte words
inline constexpr size_t kMaxOptionDataLen = 31 * 4;   // 5-bit length in 4-byte words
inline constexpr uint32_t kMaxVni = 0xffffff;

inline constexpr uint16_t kAzoteOptionClass = 0xFF2A;
inline constexpr uint8_t kCriticalType = 0x80;
inline constexpr uint8_t kTypeSealed = 0x01;     // AES-256-GCM payload + tag
inline constexpr uint8_t kTypePlaintext = 0x02;  // cipher "none"
inline constexpr size_t kSecurityDataLen = 16;
inline constexpr size_t kSecurityOptionLen = kOptionHeaderLen + kSecurityDataLen;
// The header every fabric packet has: base + the security option.
inline constexpr size_t kFabricHeaderLen = kGeneveBaseLen + kSecurityOptionLen;  // 28
inline constexpr size_t kTagLen = 16;

struct GeneveOption {
  uint16_t cls = 0;
  uint8_t type = 0;  // high bit: critical
  std::span<const uint8_t> data;  // a multiple of 4 bytes, at most 124
  bool critical() const { return (type & kCriticalType) != 0; }
};

struct GeneveView {
  uint32_t vni = 0;
  bool oam = false;
  bool critical = false;                 // the C bit
  std::span<const uint8_t> header;       // base header + options (the AAD)
  std::span<const uint8_t> options;      // the option area
  std::span<const uint8_t> payload;      // after the options
};

// Strict parse (see above). Views point into `packet`.
Result<GeneveView, FabricError> parse_geneve(std::span<const uint8_t> packet);

// Iterates the options of a parsed header: `*at` starts at 0; nullopt at the end.
// parse_geneve() has checked that the options tile the area, so this cannot fail.
std::optional<GeneveOption> next_option(std::span<const uint8_t> options, size_t* at);

// Writes the base header and `options` into `out`; returns the header length. The C
// bit is set iff one option is critical. kNoSpace when `out` is too small, kBadLength
// for options over the format's limits, kBadConfig for a VNI over 24 bits.
Result<size_t, FabricError> build_geneve(std::span<uint8_t> out, uint32_t vni, std::span<const GeneveOption> options,
                                         bool oam = false);

// The azote security option's fields.
struct SecurityOption {
  bool sealed = true;  // type 1 (AES-256-GCM) or 2 (plaintext)
  uint32_t sender = 0;
  uint32_t key_id = 0;
  uint64_t seq = 0;
};
// Finds the one azote option of a parsed header: kBadOption when missing, repeated
// or of the wrong length or type; kCriticalOption for any other critical option.
Result<SecurityOption, FabricError> find_security_option(const GeneveView& v);
// The fabric header (base + security option) into out[0, kFabricHeaderLen).
Result<size_t, FabricError> build_fabric_header(std::span<uint8_t> out, uint32_t vni, const SecurityOption& o);

}  // namespace azote::fabric
