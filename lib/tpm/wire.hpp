// The TPM 2.0 wire format's few fixed fields, shared by everything here that frames TPM
// commands and responses (lib/tpm's Link, azote-card-tpm): big-endian integers and the
// 10-byte header (tag u16, size u32, command or response code u32). Header-only, no
// dependencies: azote-card-tpm uses it without lib/tpm's tss2 and OpenSSL.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace azote::tpm {

inline constexpr size_t kHeaderBytes = 10;

inline uint16_t be16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }
inline uint32_t be32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

// The size field of a command or response header; 0 when `bytes` is shorter than a header.
inline uint32_t header_size(std::span<const uint8_t> bytes) { return bytes.size() < kHeaderBytes ? 0 : be32(bytes.data() + 2); }
// The code field (bytes 6-9: a command's code, a response's code); ~0u when shorter.
inline uint32_t header_code(std::span<const uint8_t> bytes) { return bytes.size() < kHeaderBytes ? ~0u : be32(bytes.data() + 6); }
inline uint32_t response_code(std::span<const uint8_t> bytes) { return header_code(bytes); }

}  // namespace azote::tpm
