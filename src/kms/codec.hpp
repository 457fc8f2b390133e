// Bytes that hold a secret (wiped when they go), strict base64 (RFC 4648 §4, padded)
// and SHA-256, for azote-kms.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace azote::kms {

using Bytes = std::vector<uint8_t>;

// A fixed-size buffer of secret bytes (a key, a data key): never copied, wiped with
// OPENSSL_cleanse when destroyed or moved from.
class SecretBytes {
 public:
  SecretBytes() = default;
  explicit SecretBytes(size_t n);
  SecretBytes(const SecretBytes&) = delete;
  SecretBytes& operator=(const SecretBytes&) = delete;
  SecretBytes(SecretBytes&& o) noexcept;
  SecretBytes& operator=(SecretBytes&& o) noexcept;
  ~SecretBytes();
  uint8_t* data() { return data_; }
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  std::span<const uint8_t> span() const { return {data_, size_}; }
  // Shortens the secret (the bytes past `n` are wiped).
  void shrink(size_t n);

 private:
  void wipe();
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// `n` random bytes (OpenSSL's RAND_bytes, seeded from getrandom); nullopt if it failed.
std::optional<SecretBytes> random_secret(size_t n);

std::string base64_encode(std::span<const uint8_t> bytes);
// Only the canonical encoding: the standard alphabet, '=' padding to a multiple of 4,
// no whitespace, zero unused bits. nullopt for anything else.
std::optional<Bytes> base64_decode(std::string_view text);
// The same, for a secret (Encrypt's Plaintext): decoded straight into wiped memory, so
// no copy of it is left behind, not even of a half-decoded refusal.
std::optional<SecretBytes> base64_decode_secret(std::string_view text);

// Lowercase hex SHA-256.
std::string sha256_hex(std::span<const uint8_t> bytes);

}  // namespace azote::kms
