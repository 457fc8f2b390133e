// Ed25519 keys for signing audit records (OpenSSL 3 EVP). A SigningKey is the host's
// private key; a VerifyKey holds only a public key and is what an auditor uses.
// Both own one EVP_PKEY (reference-counted: copies share it; it is immutable, so
// signing and verifying from many threads at once is safe).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "audit/error.hpp"

typedef struct evp_pkey_st EVP_PKEY;  // NOLINT: OpenSSL's own forward declaration

namespace azote::audit {

inline constexpr size_t kSignatureBytes = 64;
inline constexpr size_t kPublicKeyBytes = 32;
using Signature = std::array<uint8_t, kSignatureBytes>;

namespace detail {
struct PkeyFree {
  void operator()(EVP_PKEY* p) const;
};
using PkeyPtr = std::shared_ptr<EVP_PKEY>;
}  // namespace detail

class VerifyKey;

class SigningKey {
 public:
  // A fresh key from the OS random source.
  static AuditResult<SigningKey> generate();
  // An unencrypted PKCS#8 PEM private key ("-----BEGIN PRIVATE KEY-----"), Ed25519 only.
  static AuditResult<SigningKey> load_pem_file(const std::string& path);
  static AuditResult<SigningKey> from_pem(const std::string& pem);
  // Writes the private key as PEM, atomically: PATH.tmp (mode 0600) + fsync + rename +
  // fsync of the directory. An existing file at PATH is replaced only once the new one
  // is complete.
  AuditResult<void> save_pem_file(const std::string& path) const;

  // SubjectPublicKeyInfo PEM ("-----BEGIN PUBLIC KEY-----"), for VerifyKey::from_pem.
  AuditResult<std::string> public_pem() const;
  // The public half only (no private material inside).
  AuditResult<VerifyKey> verify_key() const;
  // Ed25519 (pure, no pre-hash) signature over data.
  AuditResult<Signature> sign(std::span<const uint8_t> data) const;

 private:
  explicit SigningKey(detail::PkeyPtr k) : key_(std::move(k)) {}
  detail::PkeyPtr key_;
};

class VerifyKey {
 public:
  static AuditResult<VerifyKey> from_pem(const std::string& pem);
  static AuditResult<VerifyKey> from_raw(std::span<const uint8_t> raw32);
  // True only for a valid signature of exactly this data under this key.
  bool verify(std::span<const uint8_t> data, std::span<const uint8_t> sig) const;
  std::array<uint8_t, kPublicKeyBytes> raw() const;

 private:
  explicit VerifyKey(detail::PkeyPtr k) : key_(std::move(k)) {}
  detail::PkeyPtr key_;
};

}  // namespace azote::audit
