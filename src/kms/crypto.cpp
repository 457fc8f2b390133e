#include "kms/crypto.hpp"

#include <openssl/rand.h>
#include <openssl/rsa.h>

#include <memory>

#include "pki/ossl.hpp"

namespace azote::kms {

namespace ossl = pki::ossl;

namespace {
constexpr size_t kHeaderFixed = 2;  // version, key id length

struct BlobParts {
  std::string key_id;
  std::span<const uint8_t> nonce, ciphertext, tag;
};

KmsResult<BlobParts> split(std::span<const uint8_t> b) {
  const auto bad = [](const std::string& why) { return fail(kInvalidCiphertext, "the CiphertextBlob " + why); };
  if (b.size() < kHeaderFixed) return bad("is too short to be one of this service's");
  if (b[0] != kBlobVersion) return bad("is not one of this service's (unknown format version " + std::to_string(b[0]) + ")");
  const size_t id_len = b[1];
  if (id_len == 0 || b.size() < kHeaderFixed + id_len + kGcmNonceBytes + 1 + kGcmTagBytes ||
      b.size() > kHeaderFixed + id_len + kGcmNonceBytes + kMaxDataKeyBytes + kGcmTagBytes)
    return bad("has the wrong length for one of this service's");
  BlobParts p;
  p.key_id.assign(reinterpret_cast<const char*>(b.data() + kHeaderFixed), id_len);  // NOLINT
  const size_t n = kHeaderFixed + id_len;
  p.nonce = b.subspan(n, kGcmNonceBytes);
  p.ciphertext = b.subspan(n + kGcmNonceBytes, b.size() - n - kGcmNonceBytes - kGcmTagBytes);
  p.tag = b.subspan(b.size() - kGcmTagBytes);
  return p;
}
}  // namespace

KmsResult<Bytes> seal_blob(const SecretBytes& key, const std::string& key_id, std::span<const uint8_t> data_key) {
  if (key.size() != kKeyBytes) return fail(kInternal, "the key is not 32 bytes");
  if (key_id.empty() || key_id.size() > 255) return fail(kInternal, "key id length");
  if (data_key.empty() || data_key.size() > kMaxDataKeyBytes) return fail(kInternal, "data key length");
  Bytes out;
  out.push_back(kBlobVersion);
  out.push_back(static_cast<uint8_t>(key_id.size()));
  out.insert(out.end(), key_id.begin(), key_id.end());
  const size_t nonce_at = out.size();
  out.resize(out.size() + kGcmNonceBytes);
  if (RAND_bytes(out.data() + nonce_at, static_cast<int>(kGcmNonceBytes)) != 1) return fail(kInternal, "RAND_bytes failed");
  const size_t ct_at = out.size();
  out.resize(out.size() + data_key.size() + kGcmTagBytes);
  ossl::CipherCtxPtr ctx(EVP_CIPHER_CTX_new());
  int len = 0, fin = 0;
  if (!ctx || EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, static_cast<int>(kGcmNonceBytes), nullptr) != 1 ||
      EVP_EncryptInit_ex(ctx.get(), nullptr, nullptr, key.data(), out.data() + nonce_at) != 1 ||
      EVP_EncryptUpdate(ctx.get(), nullptr, &len, reinterpret_cast<const unsigned char*>(key_id.data()),  // NOLINT
                        static_cast<int>(key_id.size())) != 1 ||
      EVP_EncryptUpdate(ctx.get(), out.data() + ct_at, &len, data_key.data(), static_cast<int>(data_key.size())) != 1 ||
      EVP_EncryptFinal_ex(ctx.get(), out.data() + ct_at + len, &fin) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, static_cast<int>(kGcmTagBytes),
                          out.data() + ct_at + data_key.size()) != 1) {
    return fail(kInternal, "AES-256-GCM: " + ossl::take_errors());
  }
  return out;
}

KmsResult<std::string> blob_key_id(std::span<const uint8_t> blob) {
  AZOTE_TRY(p, split(blob));
  return p.key_id;
}

KmsResult<SecretBytes> open_blob(const SecretBytes& key, std::span<const uint8_t> blob) {
  if (key.size() != kKeyBytes) return fail(kInternal, "the key is not 32 bytes");
  AZOTE_TRY(p, split(blob));
  SecretBytes out(p.ciphertext.size());
  if (out.size() != p.ciphertext.size()) return fail(kInternal, "out of memory");
  ossl::CipherCtxPtr ctx(EVP_CIPHER_CTX_new());
  int len = 0, fin = 0;
  if (!ctx || EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, static_cast<int>(kGcmNonceBytes), nullptr) != 1 ||
      EVP_DecryptInit_ex(ctx.get(), nullptr, nullptr, key.data(), p.nonce.data()) != 1 ||
      EVP_DecryptUpdate(ctx.get(), nullptr, &len, reinterpret_cast<const unsigned char*>(p.key_id.data()),  // NOLINT
                        static_cast<int>(p.key_id.size())) != 1 ||
      EVP_DecryptUpdate(ctx.get(), out.data(), &len, p.ciphertext.data(), static_cast<int>(p.ciphertext.size())) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, static_cast<int>(kGcmTagBytes),
                          const_cast<uint8_t*>(p.tag.data())) != 1) {  // NOLINT: OpenSSL's API is not const
    return fail(kInternal, "AES-256-GCM: " + ossl::take_errors());
  }
  if (EVP_DecryptFinal_ex(ctx.get(), out.data() + len, &fin) != 1) {
    ossl::take_errors();
    return fail(kInvalidCiphertext, "the CiphertextBlob does not decrypt under its key (altered, or not made by this key)");
  }
  return out;
}

KmsResult<Bytes> oaep_sha256_encrypt(EVP_PKEY* rsa_public, std::span<const uint8_t> plain) {
  std::unique_ptr<EVP_PKEY_CTX, ossl::Free<EVP_PKEY_CTX_free>> ctx(EVP_PKEY_CTX_new(rsa_public, nullptr));
  size_t n = 0;
  if (!ctx || EVP_PKEY_encrypt_init(ctx.get()) != 1 ||
      EVP_PKEY_CTX_set_rsa_padding(ctx.get(), RSA_PKCS1_OAEP_PADDING) != 1 ||
      EVP_PKEY_CTX_set_rsa_oaep_md(ctx.get(), EVP_sha256()) != 1 ||
      EVP_PKEY_CTX_set_rsa_mgf1_md(ctx.get(), EVP_sha256()) != 1 ||
      EVP_PKEY_encrypt(ctx.get(), nullptr, &n, plain.data(), plain.size()) != 1)
    return fail(kInternal, "RSA-OAEP: " + ossl::take_errors());
  Bytes out(n);
  if (EVP_PKEY_encrypt(ctx.get(), out.data(), &n, plain.data(), plain.size()) != 1)
    return fail(kInternal, "RSA-OAEP: " + ossl::take_errors());
  out.resize(n);
  return out;
}

}  // namespace azote::kms
