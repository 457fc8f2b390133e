// Big-endian loads and stores on byte spans. Callers check bounds first; the helpers
// only index (and assert in debug builds), so every access stays inside the span.
#pragma once

#include <cassert>
#include <cstddef>
#include <cstdint>
#include <span>

namespace azote::net::wire {

inline uint8_t u8(std::span<const uint8_t> b, size_t at) {
  assert(at < b.size());
  return b[at];
}
inline uint16_t be16(std::span<const uint8_t> b, size_t at) {
  assert(at + 2 <= b.size());
  return static_cast<uint16_t>((b[at] << 8) | b[at + 1]);
}
inline uint32_t be32(std::span<const uint8_t> b, size_t at) {
  assert(at + 4 <= b.size());
  return (uint32_t{b[at]} << 24) | (uint32_t{b[at + 1]} << 16) | (uint32_t{b[at + 2]} << 8) | b[at + 3];
}
inline void put8(std::span<uint8_t> b, size_t at, uint8_t v) {
  assert(at < b.size());
  b[at] = v;
}
inline void put16(std::span<uint8_t> b, size_t at, uint16_t v) {
  assert(at + 2 <= b.size());
  b[at] = static_cast<uint8_t>(v >> 8);
  b[at + 1] = static_cast<uint8_t>(v);
}
inline void put32(std::span<uint8_t> b, size_t at, uint32_t v) {
  assert(at + 4 <= b.size());
  b[at] = static_cast<uint8_t>(v >> 24);
  b[at + 1] = static_cast<uint8_t>(v >> 16);
  b[at + 2] = static_cast<uint8_t>(v >> 8);
  b[at + 3] = static_cast<uint8_t>(v);
}

}  // namespace azote::net::wire
