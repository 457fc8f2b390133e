#include "audit/signing.hpp"

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "audit/fs.hpp"

namespace azote::audit {

namespace detail {
void PkeyFree::operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
}  // namespace detail

namespace {

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;
struct MdCtxFree {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};
using MdCtxPtr = std::unique_ptr<EVP_MD_CTX, MdCtxFree>;

detail::PkeyPtr own(EVP_PKEY* p) { return detail::PkeyPtr(p, detail::PkeyFree{}); }

// The oldest queued OpenSSL error as text (and clear the queue).
std::string ssl_error(const std::string& what) {
  unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return what;
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  return what + ": " + buf;
}

bool is_ed25519(EVP_PKEY* p) { return EVP_PKEY_get_id(p) == EVP_PKEY_ED25519; }

// Everything a BIO holds, as a string.
std::string bio_string(BIO* b) {
  char* data = nullptr;
  long n = BIO_get_mem_data(b, &data);
  return n > 0 ? std::string(data, static_cast<size_t>(n)) : std::string();
}

}  // namespace

AuditResult<SigningKey> SigningKey::generate() {
  EVP_PKEY* p = EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519");
  if (!p) return make_error(AuditErrc::kCrypto, ssl_error("Ed25519 key generation"));
  return SigningKey(own(p));
}

AuditResult<SigningKey> SigningKey::from_pem(const std::string& pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return make_error(AuditErrc::kCrypto, ssl_error("BIO_new_mem_buf"));
  EVP_PKEY* p = PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr);
  if (!p) return make_error(AuditErrc::kBadKey, ssl_error("not a PEM private key"));
  auto key = own(p);
  if (!is_ed25519(p)) return make_error(AuditErrc::kBadKey, "private key is not Ed25519");
  return SigningKey(std::move(key));
}

AuditResult<SigningKey> SigningKey::load_pem_file(const std::string& path) {
  auto text = detail::read_small_file(path, 64 * 1024);
  if (!text) {
    auto e = std::move(text).error();
    e.code = e.code == AuditErrc::kInvalid ? AuditErrc::kBadKey : e.code;
    return Unexpected{std::move(e)};
  }
  auto key = from_pem(*text);
  OPENSSL_cleanse(text->data(), text->size());
  if (!key) {
    auto e = std::move(key).error();
    e.context = path + ": " + e.context;
    return Unexpected{std::move(e)};
  }
  return std::move(key).value();
}

AuditResult<void> SigningKey::save_pem_file(const std::string& path) const {
  // A secure-memory BIO so the PEM text is wiped when freed.
  BioPtr bio(BIO_new(BIO_s_secmem()));
  if (!bio) return make_error(AuditErrc::kCrypto, ssl_error("BIO_new"));
  if (PEM_write_bio_PrivateKey(bio.get(), key_.get(), nullptr, nullptr, 0, nullptr, nullptr) != 1)
    return make_error(AuditErrc::kCrypto, ssl_error("PEM_write_bio_PrivateKey"));
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  if (n <= 0) return make_error(AuditErrc::kCrypto, "empty PEM");
  return detail::write_file_atomic(path, std::string_view(data, static_cast<size_t>(n)), 0600);
}

AuditResult<std::string> SigningKey::public_pem() const {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio) return make_error(AuditErrc::kCrypto, ssl_error("BIO_new"));
  if (PEM_write_bio_PUBKEY(bio.get(), key_.get()) != 1)
    return make_error(AuditErrc::kCrypto, ssl_error("PEM_write_bio_PUBKEY"));
  return bio_string(bio.get());
}

AuditResult<VerifyKey> SigningKey::verify_key() const {
  std::array<uint8_t, kPublicKeyBytes> raw{};
  size_t len = raw.size();
  if (EVP_PKEY_get_raw_public_key(key_.get(), raw.data(), &len) != 1 || len != raw.size())
    return make_error(AuditErrc::kCrypto, ssl_error("EVP_PKEY_get_raw_public_key"));
  return VerifyKey::from_raw(raw);
}

AuditResult<Signature> SigningKey::sign(std::span<const uint8_t> data) const {
  MdCtxPtr ctx(EVP_MD_CTX_new());
  if (!ctx) return make_error(AuditErrc::kCrypto, "EVP_MD_CTX_new");
  if (EVP_DigestSignInit(ctx.get(), nullptr, nullptr, nullptr, key_.get()) != 1)
    return make_error(AuditErrc::kCrypto, ssl_error("EVP_DigestSignInit"));
  Signature sig{};
  size_t len = sig.size();
  if (EVP_DigestSign(ctx.get(), sig.data(), &len, data.data(), data.size()) != 1 ||
      len != sig.size())
    return make_error(AuditErrc::kCrypto, ssl_error("EVP_DigestSign"));
  return sig;
}

AuditResult<VerifyKey> VerifyKey::from_pem(const std::string& pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return make_error(AuditErrc::kCrypto, ssl_error("BIO_new_mem_buf"));
  EVP_PKEY* p = PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr);
  if (!p) return make_error(AuditErrc::kBadKey, ssl_error("not a PEM public key"));
  auto key = own(p);
  if (!is_ed25519(p)) return make_error(AuditErrc::kBadKey, "public key is not Ed25519");
  return VerifyKey(std::move(key));
}

AuditResult<VerifyKey> VerifyKey::from_raw(std::span<const uint8_t> raw32) {
  if (raw32.size() != kPublicKeyBytes)
    return make_error(AuditErrc::kBadKey, "Ed25519 public key must be 32 bytes");
  EVP_PKEY* p = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nullptr, raw32.data(), raw32.size());
  if (!p) return make_error(AuditErrc::kBadKey, ssl_error("EVP_PKEY_new_raw_public_key"));
  return VerifyKey(own(p));
}

bool VerifyKey::verify(std::span<const uint8_t> data, std::span<const uint8_t> sig) const {
  if (sig.size() != kSignatureBytes) return false;
  MdCtxPtr ctx(EVP_MD_CTX_new());
  if (!ctx) return false;
  bool ok = EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, key_.get()) == 1 &&
            EVP_DigestVerify(ctx.get(), sig.data(), sig.size(), data.data(), data.size()) == 1;
  ERR_clear_error();  // a bad signature queues an error we do not report
  return ok;
}

std::array<uint8_t, kPublicKeyBytes> VerifyKey::raw() const {
  std::array<uint8_t, kPublicKeyBytes> out{};
  size_t len = out.size();
  if (EVP_PKEY_get_raw_public_key(key_.get(), out.data(), &len) != 1) out.fill(0);
  return out;
}

}  // namespace azote::audit
