// The deterministic byte stream of the `cpu` benchmark, shared by azote-guest's
// `cpu MIB` program and its host twin azote-cpu-host so both hash identical bytes:
// a 1 MiB buffer with byte i = (i * 131 + (i >> 12)) & 0xff, fed MIB times.
#pragma once

#include <cstddef>
#include <cstdint>

#include "sha256/sha256.hpp"

namespace azote::cpu_stream {

inline constexpr std::size_t kBufferBytes = std::size_t{1} << 20;

inline void fill(std::uint8_t* buf) {
  for (std::size_t i = 0; i < kBufferBytes; ++i) buf[i] = static_cast<std::uint8_t>(i * 131 + (i >> 12));
}

// SHA-256 of `mib` copies of the filled buffer.
inline void hash(const std::uint8_t* buf, std::uint64_t mib, std::uint8_t* out) {
  Sha256 h;
  for (std::uint64_t m = 0; m < mib; ++m) h.update(buf, kBufferBytes);
  h.finish(out);
}

}  // namespace azote::cpu_stream
