#include "kms/recipient.hpp"

#include <openssl/rsa.h>
#include <openssl/sha.h>

#include <algorithm>
#include <cstdio>
#include <vector>

namespace azote::kms {

namespace ossl = pki::ossl;

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

ReplayCache::Outcome ReplayCache::check_and_insert(std::span<const uint8_t> nonce, int64_t expires_ms, int64_t now) {
  while (!by_expiry_.empty() && by_expiry_.begin()->first <= now) {
    expiry_of_.erase(by_expiry_.begin()->second);
    by_expiry_.erase(by_expiry_.begin());
  }
  uint8_t d[SHA256_DIGEST_LENGTH];
  SHA256(nonce.data(), nonce.size(), d);
  std::string key(reinterpret_cast<const char*>(d), sizeof d);  // NOLINT: bytes as a map key
  if (expiry_of_.count(key) != 0) return Outcome::kReplayed;
  if (expiry_of_.size() >= capacity_) return Outcome::kFull;
  expiry_of_.emplace(key, expires_ms);
  by_expiry_.emplace(expires_ms, std::move(key));
  return Outcome::kFresh;
}

KmsResult<std::unique_ptr<RecipientVerifier>> RecipientVerifier::create(const std::string& root_pem,
                                                                        std::chrono::seconds max_age,
                                                                        size_t replay_capacity,
                                                                        int64_t not_before_ms) {
  ossl::X509Ptr root = ossl::parse_cert(root_pem);
  if (!root) return fail(kUsage, "--root: no PEM certificate in it (" + ossl::take_errors() + ")");
  if (X509_check_ca(root.get()) == 0) return fail(kUsage, "--root: the certificate is not a CA");
  ossl::StorePtr store(X509_STORE_new());
  if (!store || X509_STORE_add_cert(store.get(), root.get()) != 1)
    return fail(kInternal, "X509_STORE: " + ossl::take_errors());
  if (max_age.count() <= 0) return fail(kUsage, "--max-age must be at least 1 second");
  return std::unique_ptr<RecipientVerifier>(new RecipientVerifier(std::move(store), max_age, replay_capacity, not_before_ms));
}

KmsResult<void> RecipientVerifier::check_chain(const attest::Document& d, int64_t now) const {
  auto der_cert = [](const attest::Bytes& der) {
    const unsigned char* p = der.data();
    ossl::X509Ptr c(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
    if (c && p != der.data() + der.size()) c.reset();  // bytes after the certificate
    return c;
  };
  const std::string denied = "the attestation document's certificate chain does not lead to the pinned root: ";
  ossl::X509Ptr leaf = der_cert(d.certificate);
  if (!leaf) return fail(kAccessDenied, denied + "its certificate is not DER X.509");
  std::unique_ptr<STACK_OF(X509), void (*)(STACK_OF(X509)*)> untrusted(
      sk_X509_new_null(), [](STACK_OF(X509)* s) { sk_X509_pop_free(s, X509_free); });
  if (!untrusted) return fail(kInternal, "out of memory");
  for (size_t i = 0; i < d.cabundle.size(); ++i) {
    ossl::X509Ptr c = der_cert(d.cabundle[i]);
    if (!c) return fail(kAccessDenied, denied + "cabundle[" + std::to_string(i) + "] is not DER X.509");
    if (sk_X509_push(untrusted.get(), c.get()) == 0) return fail(kInternal, "out of memory");
    c.release();
  }
  ossl::StoreCtxPtr ctx(X509_STORE_CTX_new());
  if (!ctx || X509_STORE_CTX_init(ctx.get(), store_.get(), leaf.get(), untrusted.get()) != 1)
    return fail(kInternal, "X509_STORE_CTX: " + ossl::take_errors());
  X509_VERIFY_PARAM* param = X509_STORE_CTX_get0_param(ctx.get());
  // The service's clock (never going back), not OpenSSL's; no CRLs (ENCLAVES.md §1.4);
  // RFC 5280's stricter checks.
  X509_VERIFY_PARAM_set_time(param, static_cast<time_t>(now / 1000));
  X509_VERIFY_PARAM_set_flags(param, X509_V_FLAG_X509_STRICT);
  X509_VERIFY_PARAM_clear_flags(param, X509_V_FLAG_PARTIAL_CHAIN | X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL);
  if (X509_verify_cert(ctx.get()) != 1) {
    const int err = X509_STORE_CTX_get_error(ctx.get());
    const int depth = X509_STORE_CTX_get_error_depth(ctx.get());
    ossl::take_errors();
    return fail(kAccessDenied, denied + X509_verify_cert_error_string(err) + " (certificate at depth " +
                                   std::to_string(depth) + ")");
  }
  // The leaf signs documents: digitalSignature, and no CA.
  if (X509_check_ca(leaf.get()) != 0) return fail(kAccessDenied, denied + "the document's certificate is a CA");
  if ((X509_get_extension_flags(leaf.get()) & EXFLAG_KUSAGE) == 0 ||
      (X509_get_key_usage(leaf.get()) & KU_DIGITAL_SIGNATURE) == 0)
    return fail(kAccessDenied, denied + "the document's certificate lacks the digitalSignature key usage");
  return {};
}

KmsResult<VerifiedRecipient> RecipientVerifier::verify(std::span<const uint8_t> document, int64_t now_in,
                                                       Claims* claims) {
  latest_now_ms_ = std::max(latest_now_ms_, now_in);
  const int64_t now = latest_now_ms_;
  Claims scratch;
  Claims& c = claims != nullptr ? *claims : scratch;
  c = Claims{};

  auto parsed = attest::parse(document);
  if (!parsed) return fail(kValidation, "the recipient's attestation document is not one: " + parsed.error().message());
  const attest::Document& d = parsed->document;
  c.parsed = true;
  c.module_id = d.module_id;
  c.pcrs = d.pcrs;
  c.timestamp_ms = d.timestamp_ms;
  if (d.nonce && !d.nonce->empty()) c.nonce_sha256 = sha256_hex(*d.nonce);

  AZOTE_TRYV(check_chain(d, now));
  if (auto s = attest::verify_signature(*parsed); !s)
    return fail(kAccessDenied, "the attestation document's signature does not verify with its certificate: " +
                                   s.error().message());

  if (!d.public_key || d.public_key->empty())
    return fail(kAccessDenied, "the attestation document has no public_key (an RSA key to encrypt the data key to)");
  const unsigned char* p = d.public_key->data();
  ossl::PkeyPtr key(d2i_PUBKEY(nullptr, &p, static_cast<long>(d.public_key->size())));
  if (!key || p != d.public_key->data() + d.public_key->size()) {
    ossl::take_errors();
    return fail(kAccessDenied, "the attestation document's public_key is not a DER SubjectPublicKeyInfo");
  }
  if (EVP_PKEY_get_base_id(key.get()) != EVP_PKEY_RSA)
    return fail(kAccessDenied, std::string("the attestation document's public_key is not an RSA key (it is ") +
                                   OBJ_nid2sn(EVP_PKEY_get_base_id(key.get())) + "): RSAES_OAEP_SHA_256 needs one");
  const int bits = EVP_PKEY_get_bits(key.get());
  c.public_key_bits = bits;
  if (bits < kMinRsaBits || bits > kMaxRsaBits)
    return fail(kAccessDenied, "the attestation document's public_key is an RSA key of " + std::to_string(bits) +
                                   " bits, outside " + std::to_string(kMinRsaBits) + ".." + std::to_string(kMaxRsaBits));

  if (std::all_of(d.pcrs.begin(), d.pcrs.end(), [](const auto& kv) {
        return std::all_of(kv.second.begin(), kv.second.end(), [](uint8_t b) { return b == 0; });
      }))
    return fail(kAccessDenied, "every PCR of the attestation document is zero: a debug-mode enclave's document, never accepted");

  const int64_t ts = static_cast<int64_t>(std::min<uint64_t>(d.timestamp_ms, INT64_MAX / 2));
  const int64_t max_age_ms = max_age_.count() * 1000;
  if (ts > now + kFutureSkewMs) {
    char s[64];
    std::snprintf(s, sizeof s, "%.1f", static_cast<double>(ts - now) / 1000.0);
    return fail(kAccessDenied, std::string("the attestation document is dated ") + s +
                                   " s in the future (more than 60 s ahead of this service's clock)");
  }
  if (now - ts > max_age_ms) {
    char s[64];
    std::snprintf(s, sizeof s, "%.1f", static_cast<double>(now - ts) / 1000.0);
    return fail(kAccessDenied, std::string("the attestation document is stale: ") + s + " s old, over --max-age " +
                                   std::to_string(max_age_.count()) + " s");
  }

  if (ts < not_before_ms_)
    return fail(kAccessDenied, "the attestation document was made before azote-kms started: the nonces of "
                               "that time are forgotten, so it could be a replay");
  if (!d.nonce || d.nonce->empty())
    return fail(kAccessDenied, "the attestation document has no nonce (one is required, and used only once)");
  switch (replay_.check_and_insert(*d.nonce, ts + max_age_ms + 1, now)) {
    case ReplayCache::Outcome::kFresh: break;
    case ReplayCache::Outcome::kReplayed:
      return fail(kAccessDenied, "the attestation document's nonce was already used: a replayed document");
    case ReplayCache::Outcome::kFull:
      return fail(kThrottling, "too many documents within --max-age (the replay cache holds " +
                                   std::to_string(replay_.size()) + " live nonces): try again later");
  }
  c.verified = true;
  VerifiedRecipient v;
  v.attestation.module_id = d.module_id;
  v.attestation.pcrs = d.pcrs;
  v.public_key = std::move(key);
  return v;
}

}  // namespace azote::kms
