#include "pki/keywrap.hpp"

#include <openssl/rand.h>

#include <algorithm>
#include <array>
#include <string>

#include "pki/ossl.hpp"

namespace azote::pki {
namespace {

const unsigned char* bytes(std::string_view s) { return reinterpret_cast<const unsigned char*>(s.data()); }

Unexpected<PkiError> crypto_error(const std::string& what) {
  return make_error(PkiErrc::kCrypto, what + ": " + ossl::take_errors());
}

}  // namespace

void wipe(std::span<uint8_t> secret) {
  if (!secret.empty()) OPENSSL_cleanse(secret.data(), secret.size());
}

PkiResult<std::vector<uint8_t>> wrap_key(std::span<const uint8_t, 32> master,
                                         std::span<const uint8_t> plaintext, std::string_view context) {
  if (plaintext.size() > kMaxWrapPlaintext) {
    return make_error(PkiErrc::kInvalid, "key to wrap is larger than " + std::to_string(kMaxWrapPlaintext) + " bytes");
  }
  if (context.size() > kMaxWrapContext) {
    return make_error(PkiErrc::kInvalid, "wrap context is larger than " + std::to_string(kMaxWrapContext) + " bytes");
  }
  std::vector<uint8_t> out(kWrapOverhead + plaintext.size());
  out[0] = kWrapVersion;
  uint8_t* nonce = out.data() + 1;
  uint8_t* ct = nonce + kWrapNonceBytes;
  uint8_t* tag = ct + plaintext.size();
  if (RAND_bytes(nonce, static_cast<int>(kWrapNonceBytes)) != 1) return crypto_error("wrap_key: RAND_bytes");

  ossl::CipherCtxPtr ctx(EVP_CIPHER_CTX_new());
  int len = 0;
  if (!ctx || EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, static_cast<int>(kWrapNonceBytes), nullptr) != 1 ||
      EVP_EncryptInit_ex(ctx.get(), nullptr, nullptr, master.data(), nonce) != 1) {
    return crypto_error("wrap_key: AES-256-GCM init");
  }
  if (!context.empty() &&
      EVP_EncryptUpdate(ctx.get(), nullptr, &len, bytes(context), static_cast<int>(context.size())) != 1) {
    return crypto_error("wrap_key: AAD");
  }
  if (!plaintext.empty() &&
      EVP_EncryptUpdate(ctx.get(), ct, &len, plaintext.data(), static_cast<int>(plaintext.size())) != 1) {
    return crypto_error("wrap_key: encrypt");
  }
  if (EVP_EncryptFinal_ex(ctx.get(), ct + plaintext.size(), &len) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, static_cast<int>(kWrapTagBytes), tag) != 1) {
    return crypto_error("wrap_key: finish");
  }
  return out;
}

PkiResult<std::vector<uint8_t>> unwrap_key(std::span<const uint8_t, 32> master,
                                           std::span<const uint8_t> wrapped, std::string_view context) {
  if (wrapped.size() < kWrapOverhead) {
    return make_error(PkiErrc::kUnwrap, "wrapped key is too short (" + std::to_string(wrapped.size()) +
                                            " bytes, need at least " + std::to_string(kWrapOverhead) + ")");
  }
  if (wrapped[0] != kWrapVersion) {
    return make_error(PkiErrc::kUnwrap, "wrapped key has unknown version " + std::to_string(wrapped[0]));
  }
  const size_t ct_len = wrapped.size() - kWrapOverhead;
  if (ct_len > kMaxWrapPlaintext || context.size() > kMaxWrapContext) {
    return make_error(PkiErrc::kUnwrap, "wrapped key or context is too large");
  }
  const uint8_t* nonce = wrapped.data() + 1;
  const uint8_t* ct = nonce + kWrapNonceBytes;
  std::array<uint8_t, kWrapTagBytes> tag{};
  std::copy_n(ct + ct_len, kWrapTagBytes, tag.begin());

  std::vector<uint8_t> plain(ct_len);
  ossl::CipherCtxPtr ctx(EVP_CIPHER_CTX_new());
  int len = 0;
  if (!ctx || EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, static_cast<int>(kWrapNonceBytes), nullptr) != 1 ||
      EVP_DecryptInit_ex(ctx.get(), nullptr, nullptr, master.data(), nonce) != 1) {
    return crypto_error("unwrap_key: AES-256-GCM init");
  }
  bool ok = true;
  if (!context.empty()) {
    ok = EVP_DecryptUpdate(ctx.get(), nullptr, &len, bytes(context), static_cast<int>(context.size())) == 1;
  }
  if (ok && ct_len > 0) {
    ok = EVP_DecryptUpdate(ctx.get(), plain.data(), &len, ct, static_cast<int>(ct_len)) == 1;
  }
  ok = ok && EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, static_cast<int>(kWrapTagBytes), tag.data()) == 1;
  ok = ok && EVP_DecryptFinal_ex(ctx.get(), plain.data() + ct_len, &len) == 1;
  if (!ok) {
    wipe(plain);
    ERR_clear_error();
    return make_error(PkiErrc::kUnwrap,
                      "wrapped key failed authentication (tampered, wrong master key or wrong context)");
  }
  return plain;
}

}  // namespace azote::pki
