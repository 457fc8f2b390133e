// SHA-256 (FIPS 180-4) in portable C++20 with no libc dependency: the same source
// is compiled into the freestanding guest (azote-guest's `cpu` program) and into
// host code (the azote_sha256 library, the azote-cpu-host benchmark twin).
#pragma once

#include <cstddef>
#include <cstdint>

namespace azote {

class Sha256 {
 public:
  static constexpr std::size_t kDigestBytes = 32;
  static constexpr std::size_t kBlockBytes = 64;

  Sha256() { reset(); }

  void reset();
  void update(const void* data, std::size_t len);
  // Pads, writes the 32-byte digest to `out`, and resets the object.
  void finish(std::uint8_t* out);

  // One-shot digest of [data, data + len).
  static void digest(const void* data, std::size_t len, std::uint8_t* out);

 private:
  std::uint32_t state_[8];
  std::uint64_t total_bytes_;
  std::uint8_t block_[kBlockBytes];
  std::size_t block_len_;
};

}  // namespace azote
