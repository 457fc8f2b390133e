#include "kms/codec.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <cstdlib>
#include <utility>

#include "base/hex.hpp"

namespace azote::kms {

SecretBytes::SecretBytes(size_t n) : data_(n == 0 ? nullptr : static_cast<uint8_t*>(std::calloc(n, 1))), size_(n) {
  if (data_ == nullptr) size_ = 0;
}
SecretBytes::SecretBytes(SecretBytes&& o) noexcept
    : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}
SecretBytes& SecretBytes::operator=(SecretBytes&& o) noexcept {
  if (this != &o) {
    wipe();
    data_ = std::exchange(o.data_, nullptr);
    size_ = std::exchange(o.size_, 0);
  }
  return *this;
}
SecretBytes::~SecretBytes() { wipe(); }
void SecretBytes::wipe() {
  if (data_ != nullptr) {
    OPENSSL_cleanse(data_, size_);
    std::free(data_);
  }
  data_ = nullptr;
  size_ = 0;
}
void SecretBytes::shrink(size_t n) {
  if (n >= size_) return;
  OPENSSL_cleanse(data_ + n, size_ - n);
  size_ = n;
}

std::optional<SecretBytes> random_secret(size_t n) {
  SecretBytes s(n);
  if (s.size() != n || n > static_cast<size_t>(INT32_MAX) || RAND_bytes(s.data(), static_cast<int>(n)) != 1)
    return std::nullopt;
  return s;
}

namespace {
constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
int value_of(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}
}  // namespace

std::string base64_encode(std::span<const uint8_t> b) {
  std::string out;
  out.reserve((b.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= b.size(); i += 3) {
    const uint32_t v = (uint32_t{b[i]} << 16) | (uint32_t{b[i + 1]} << 8) | b[i + 2];
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  if (const size_t rest = b.size() - i; rest > 0) {
    const uint32_t v = (uint32_t{b[i]} << 16) | (rest == 2 ? uint32_t{b[i + 1]} << 8 : 0u);
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += rest == 2 ? kAlphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

namespace {
// Decodes canonical base64 into `out` (room for t.size() / 4 * 3 bytes); the number of
// bytes, or nullopt.
std::optional<size_t> decode_into(std::string_view t, uint8_t* out) {
  if (t.size() % 4 != 0) return std::nullopt;
  size_t n = 0;
  for (size_t i = 0; i < t.size(); i += 4) {
    const bool last = i + 4 == t.size();
    const int pad = last ? (t[i + 3] == '=' ? (t[i + 2] == '=' ? 2 : 1) : 0) : 0;
    int v[4] = {0, 0, 0, 0};
    for (int k = 0; k < 4 - pad; ++k) {
      v[k] = value_of(t[i + static_cast<size_t>(k)]);
      if (v[k] < 0) return std::nullopt;
    }
    const uint32_t w = (static_cast<uint32_t>(v[0]) << 18) | (static_cast<uint32_t>(v[1]) << 12) |
                       (static_cast<uint32_t>(v[2]) << 6) | static_cast<uint32_t>(v[3]);
    out[n++] = static_cast<uint8_t>(w >> 16);
    if (pad == 2) {
      if ((w & 0xffff) != 0) return std::nullopt;  // unused bits must be zero
      break;
    }
    out[n++] = static_cast<uint8_t>(w >> 8);
    if (pad == 1) {
      if ((w & 0xff) != 0) return std::nullopt;
      break;
    }
    out[n++] = static_cast<uint8_t>(w);
  }
  return n;
}
}  // namespace

std::optional<Bytes> base64_decode(std::string_view t) {
  Bytes out(t.size() / 4 * 3);
  const auto n = decode_into(t, out.data());
  if (!n) return std::nullopt;
  out.resize(*n);
  return out;
}

std::optional<SecretBytes> base64_decode_secret(std::string_view t) {
  if (t.empty()) return SecretBytes();
  SecretBytes out(t.size() / 4 * 3);
  if (out.size() != t.size() / 4 * 3) return std::nullopt;  // out of memory
  const auto n = decode_into(t, out.data());
  if (!n) return std::nullopt;  // `out` is wiped as it goes
  out.shrink(*n);
  return out;
}

std::string sha256_hex(std::span<const uint8_t> b) {
  uint8_t d[32];
  unsigned int n = 0;
  if (EVP_Digest(b.data(), b.size(), d, &n, EVP_sha256(), nullptr) != 1) return {};
  return to_hex(std::span<const uint8_t>(d, n));
}

}  // namespace azote::kms
