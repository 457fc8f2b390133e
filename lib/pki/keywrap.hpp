// Wrapping of per-volume keys under the host master key: AES-256-GCM with a random
// 96-bit nonce and the caller's `context` (e.g. "volume:vol-0123") as additional
// authenticated data, so a wrapped key only unwraps for the volume it was made for.
//
// Wrapped format: version (1 byte, kWrapVersion) | nonce (12) | ciphertext | tag (16).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "pki/pki_error.hpp"

namespace azote::pki {

inline constexpr uint8_t kWrapVersion = 1;
inline constexpr size_t kWrapNonceBytes = 12;
inline constexpr size_t kWrapTagBytes = 16;
inline constexpr size_t kWrapOverhead = 1 + kWrapNonceBytes + kWrapTagBytes;
inline constexpr size_t kMaxWrapPlaintext = size_t{1} << 20;   // keys are small
inline constexpr size_t kMaxWrapContext = size_t{1} << 16;

// kInvalid if plaintext or context is too large, kCrypto if OpenSSL (RNG) fails.
PkiResult<std::vector<uint8_t>> wrap_key(std::span<const uint8_t, 32> master,
                                         std::span<const uint8_t> plaintext, std::string_view context);

// The plaintext, or kUnwrap with a clear reason: too short, unknown version, or failed
// authentication (tampered, wrong master key or wrong context). The caller owns the
// returned secret and should wipe() it when done.
PkiResult<std::vector<uint8_t>> unwrap_key(std::span<const uint8_t, 32> master,
                                           std::span<const uint8_t> wrapped, std::string_view context);

// Zeroes a secret buffer in a way the compiler cannot elide (OPENSSL_cleanse).
void wipe(std::span<uint8_t> secret);

}  // namespace azote::pki
