#include "imds/token.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <cstring>

namespace azote::imds {
namespace {

constexpr uint8_t kVersion = 1;
constexpr size_t kBodyLen = 1 + 4 + 8 + 8;
constexpr size_t kMacLen = 16;
constexpr size_t kRawLen = kBodyLen + kMacLen;  // 37 bytes: 50 base64url characters
static_assert((kRawLen * 8 + 5) / 6 == kTokenTextLen);

constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

int decode_char(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '-') return 62;
  if (c == '_') return 63;
  return -1;
}

void put_be(uint8_t* p, uint64_t v, size_t n) {
  for (size_t i = 0; i < n; ++i) p[i] = static_cast<uint8_t>(v >> (8 * (n - 1 - i)));
}
uint64_t get_be(const uint8_t* p, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n; ++i) v = v << 8 | p[i];
  return v;
}

int64_t ns_since_epoch(TimePoint t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

void mac_of(const std::array<uint8_t, kTokenKeyLen>& key, const uint8_t* body, uint8_t* out) {
  uint8_t full[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), body, kBodyLen, full, &len);
  std::memcpy(out, full, kMacLen);
  OPENSSL_cleanse(full, sizeof full);
}

}  // namespace

const char* to_string(TokenCheck c) {
  switch (c) {
    case TokenCheck::kValid: return "valid";
    case TokenCheck::kMalformed: return "malformed";
    case TokenCheck::kBadMac: return "bad_mac";
    case TokenCheck::kOtherSlot: return "other_slot";
    case TokenCheck::kRevoked: return "revoked";
    case TokenCheck::kExpired: return "expired";
  }
  return "?";
}

std::string base64url_encode(const uint8_t* data, size_t len) {
  std::string out;
  out.reserve((len * 8 + 5) / 6);
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < len; ++i) {
    acc = (acc << 8) | data[i];
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out.push_back(kAlphabet[(acc >> bits) & 63]);
    }
  }
  if (bits > 0) out.push_back(kAlphabet[(acc << (6 - bits)) & 63]);
  return out;
}

bool base64url_decode(std::string_view text, uint8_t* out, size_t out_len) {
  if (text.size() != (out_len * 8 + 5) / 6) return false;
  uint32_t acc = 0;
  int bits = 0;
  size_t n = 0;
  for (char c : text) {
    const int v = decode_char(c);
    if (v < 0) return false;
    acc = ((acc << 6) | static_cast<uint32_t>(v)) & 0xffffff;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[n++] = static_cast<uint8_t>(acc >> bits);
    }
  }
  // Leftover bits must be zero: one text per byte string.
  return n == out_len && (acc & ((1u << bits) - 1)) == 0;
}

Result<TokenService, ImdsError> TokenService::create() {
  std::array<uint8_t, kTokenKeyLen> key{};
  if (RAND_bytes(key.data(), static_cast<int>(key.size())) != 1) {
    return make_error(ImdsErrc::kCrypto, "RAND_bytes for the token key");
  }
  TokenService s(key);
  OPENSSL_cleanse(key.data(), key.size());
  return s;
}

std::string TokenService::issue(uint32_t slot, uint64_t incarnation, TimePoint now, uint32_t ttl_seconds) const {
  uint8_t raw[kRawLen];
  raw[0] = kVersion;
  put_be(raw + 1, slot, 4);
  put_be(raw + 5, incarnation, 8);
  const int64_t expiry = ns_since_epoch(now) + int64_t{ttl_seconds} * 1'000'000'000;
  put_be(raw + 13, static_cast<uint64_t>(expiry), 8);
  mac_of(key_, raw, raw + kBodyLen);
  return base64url_encode(raw, kRawLen);
}

TokenVerdict TokenService::verify(std::string_view token, uint32_t slot, uint64_t incarnation, TimePoint now) const {
  uint8_t raw[kRawLen];
  if (!base64url_decode(token, raw, kRawLen) || raw[0] != kVersion) return {TokenCheck::kMalformed, 0};
  uint8_t mac[kMacLen];
  mac_of(key_, raw, mac);
  if (CRYPTO_memcmp(mac, raw + kBodyLen, kMacLen) != 0) return {TokenCheck::kBadMac, 0};
  if (get_be(raw + 1, 4) != slot) return {TokenCheck::kOtherSlot, 0};
  if (get_be(raw + 5, 8) != incarnation) return {TokenCheck::kRevoked, 0};
  const int64_t expiry = static_cast<int64_t>(get_be(raw + 13, 8));
  const int64_t t = ns_since_epoch(now);
  if (t >= expiry) return {TokenCheck::kExpired, 0};
  const int64_t left = expiry - t;
  return {TokenCheck::kValid, static_cast<uint32_t>((left + 999'999'999) / 1'000'000'000)};
}

}  // namespace azote::imds
