// IMDSv2 session tokens: HMAC-SHA-256 over (slot, incarnation, expiry) with a key drawn
// from RAND_bytes when the service starts. Nothing is stored per token: a guest that asks
// for a million tokens costs no memory, and a token dies when its slot does (remove() or a
// reuse of the slot gives a new incarnation, which no old token names). See DESIGN.md.
//
// Text form (base64url, no padding, 50 characters):
//   version(1) = 1 | slot(4) | incarnation(8) | expiry(8, ns on the service clock) | mac(16)
// mac = HMAC-SHA-256(key, the 21 bytes before it), truncated to 128 bits.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "base/result.hpp"
#include "imds/error.hpp"

namespace azote::imds {

// The service's clock: monotonic (expiry must not move with wall-clock changes). Tests
// inject any time point.
using Clock = std::chrono::steady_clock;
using TimePoint = Clock::time_point;

inline constexpr uint32_t kMinTokenTtl = 1;
inline constexpr uint32_t kMaxTokenTtl = 21600;  // 6 hours, as EC2
inline constexpr size_t kTokenKeyLen = 32;
inline constexpr size_t kTokenTextLen = 50;

enum class TokenCheck {
  kValid,
  kMalformed,  // not a token of this format (length, alphabet, version)
  kBadMac,     // forged, altered, or issued under another key (another service run)
  kOtherSlot,  // authentic, for another slot (another instance's token)
  kRevoked,    // authentic, for this slot number but an earlier incarnation (slot removed since)
  kExpired,    // authentic, this slot, expired
};
const char* to_string(TokenCheck c);

struct TokenVerdict {
  TokenCheck check = TokenCheck::kMalformed;
  uint32_t remaining_seconds = 0;  // for kValid: whole seconds left, rounded up
};

class TokenService {
 public:
  // A fresh random key (RAND_bytes). kCrypto if the RNG fails.
  static Result<TokenService, ImdsError> create();
  // A fixed key: for tests and the fuzz target.
  explicit TokenService(const std::array<uint8_t, kTokenKeyLen>& key) : key_(key) {}

  // `ttl_seconds` must be within [kMinTokenTtl, kMaxTokenTtl] (the handler checks it).
  std::string issue(uint32_t slot, uint64_t incarnation, TimePoint now, uint32_t ttl_seconds) const;
  TokenVerdict verify(std::string_view token, uint32_t slot, uint64_t incarnation, TimePoint now) const;

 private:
  std::array<uint8_t, kTokenKeyLen> key_{};
};

// RFC 4648 §5 without padding; decode refuses padding, other alphabets and non-canonical
// trailing bits. Exposed for the tests.
std::string base64url_encode(const uint8_t* data, size_t len);
bool base64url_decode(std::string_view text, uint8_t* out, size_t out_len);

}  // namespace azote::imds
