// Secrets of the TPM card: the instance's state key (32 bytes in an mlock'ed page kept
// out of core dumps, wiped when destroyed) and SecretBytes, a byte buffer that is wiped
// (OPENSSL_cleanse) whenever it is released: the decrypted TPM state on its way to
// libtpms, the key while it is parsed from the control request.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "cards/tpm/error.hpp"

namespace azote::card_tpm {

inline constexpr size_t kStateKeyBytes = 32;  // AES-256-GCM (lib/pki keywrap)

class SecretBytes {
 public:
  SecretBytes() = default;
  explicit SecretBytes(std::span<const uint8_t> bytes) : bytes_(bytes.begin(), bytes.end()) {}
  explicit SecretBytes(std::vector<uint8_t>&& bytes) : bytes_(std::move(bytes)) {}
  SecretBytes(SecretBytes&& o) noexcept;
  SecretBytes& operator=(SecretBytes&& o) noexcept;
  SecretBytes(const SecretBytes&) = delete;
  SecretBytes& operator=(const SecretBytes&) = delete;
  ~SecretBytes() { clear(); }

  std::span<const uint8_t> bytes() const { return bytes_; }
  size_t size() const { return bytes_.size(); }
  bool empty() const { return bytes_.empty(); }
  void clear();  // wipes, then empties

 private:
  std::vector<uint8_t> bytes_;
};

// The state key. Move-only; wiped, unlocked and unmapped on destruction.
class StateKey {
 public:
  // Exactly 32 bytes.
  static TpmResult<StateKey> from_bytes(std::span<const uint8_t> bytes);
  // Exactly 64 hex digits; `what` names the field in the error ("\"key\"").
  static TpmResult<StateKey> from_hex(std::string_view hex, std::string_view what);

  StateKey(StateKey&& o) noexcept;
  StateKey& operator=(StateKey&& o) noexcept;
  StateKey(const StateKey&) = delete;
  StateKey& operator=(const StateKey&) = delete;
  ~StateKey() { release(); }

  std::span<const uint8_t, kStateKeyBytes> bytes() const {
    return std::span<const uint8_t, kStateKeyBytes>(page_, kStateKeyBytes);
  }

 private:
  StateKey() = default;
  void release();
  uint8_t* page_ = nullptr;  // one page from mmap; the key is its first 32 bytes
};

}  // namespace azote::card_tpm
