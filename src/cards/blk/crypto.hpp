// Encryption at rest: AES-XTS-256 over 512-byte sectors (IEEE 1619), the tweak being
// the sector number as a 16-byte little-endian integer (the "plain64" IV of dm-crypt),
// so an image written here can be opened with
//   cryptsetup open --type plain --cipher aes-xts-plain64 --key-size 512 --key-file K
//
// The key lives only in this process: read once from its file into locked memory that
// is excluded from core dumps and wiped on destruction; it is never written anywhere.
// Encryption and decryption always run on card-owned buffers (bounce buffers), never
// in guest memory and never in the backing file.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "base/error.hpp"

namespace azote::card_blk {

enum class CryptoErrc {
  kKeyFile = 1,  // the key file cannot be read
  kBadKey,       // not exactly 64 bytes, or both halves equal
  kCipher,       // OpenSSL refused to set up or run the cipher (host failure)
};
using CryptoError = Error<CryptoErrc>;

inline constexpr size_t kXtsKeyBytes = 64;   // two AES-256 keys
inline constexpr size_t kSectorBytes = 512;  // XTS data unit

// The volume key. Move-only; the bytes are in an mlock'ed page, MADV_DONTDUMP, and
// wiped (OPENSSL_cleanse) when the key is destroyed.
class XtsKey {
 public:
  // Reads exactly 64 bytes from `path` (a larger or smaller file is refused, as is a
  // key whose two 32-byte halves are equal: XTS is then insecure, IEEE 1619-2018 5.1).
  static Result<XtsKey, CryptoError> load(const std::string& path);
  static Result<XtsKey, CryptoError> from_bytes(std::span<const uint8_t> bytes);

  XtsKey(XtsKey&&) noexcept;
  XtsKey& operator=(XtsKey&&) noexcept;
  ~XtsKey();

  std::span<const uint8_t> bytes() const;

 private:
  XtsKey() = default;
  void wipe();
  uint8_t* page_ = nullptr;  // one page from mmap; the key is its first 64 bytes
};

// One cipher context per thread (an OpenSSL context must not be shared between threads).
// Holds its own copy of the key schedule inside OpenSSL, freed (and wiped) on destruction.
class XtsCipher {
 public:
  static Result<std::unique_ptr<XtsCipher>, CryptoError> create(const XtsKey& key);
  ~XtsCipher();
  XtsCipher(const XtsCipher&) = delete;
  XtsCipher& operator=(const XtsCipher&) = delete;

  // Encrypts/decrypts len bytes (a multiple of 512) from `in` to `out`, sector by sector,
  // the first one being `sector`. in == out is allowed (in-place in a card buffer).
  // Fails only if OpenSSL fails (a host problem, not a guest one).
  Result<void, CryptoError> encrypt(uint64_t sector, const uint8_t* in, uint8_t* out, size_t len);
  Result<void, CryptoError> decrypt(uint64_t sector, const uint8_t* in, uint8_t* out, size_t len);

 private:
  XtsCipher() = default;
  Result<void, CryptoError> run(bool enc, uint64_t sector, const uint8_t* in, uint8_t* out, size_t len);
  void* enc_ = nullptr;  // EVP_CIPHER_CTX*, keyed for encryption
  void* dec_ = nullptr;  // EVP_CIPHER_CTX*, keyed for decryption
};

}  // namespace azote::card_blk
