// The check of a Recipient's attestation document, all of it, fail-closed
// (ENCLAVES.md §1.4 and §7; src/kms/DESIGN.md "The document check"):
//   1. COSE_Sign1 / payload bounds (lib/attest parse)
//   2. the certificate chain: the document's certificate up to the pinned root, the
//      cabundle as untrusted intermediates (OpenSSL X509_verify_cert: validity dates,
//      basicConstraints and pathLen, keyCertSign, X509_STRICT; no CRLs); the leaf
//      carries digitalSignature and is no CA
//   3. the ES384 signature with the leaf's key (lib/attest verify_signature)
//   4. public_key present: an RSA SubjectPublicKeyInfo (DER, nothing after it) of
//      2048..4096 bits
//   5. PCRs not all zero (a debug enclave's document: always refused)
//   6. timestamp no older than max_age and no more than 60 s ahead
//   7. nonce present and not seen before: the replay cache remembers each nonce until
//      the documents that could carry it are stale anyway; when it is full of live
//      nonces, requests are refused (never an old nonce forgotten early). The cache is
//      in memory, so documents dated before this verifier was made are refused: a
//      restart forgets nonces, and must not let their documents be replayed.
// The clock never goes back: the verifier keeps the latest time it has seen, so a wall
// clock stepped backwards cannot make a document fresh again after its nonce was
// forgotten.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>

#include "attest/attest.hpp"
#include "kms/codec.hpp"
#include "kms/errors.hpp"
#include "kms/policy.hpp"
#include "pki/ossl.hpp"

namespace azote::kms {

inline constexpr int64_t kFutureSkewMs = 60'000;
inline constexpr int kMinRsaBits = 2048;
inline constexpr int kMaxRsaBits = 4096;
inline constexpr size_t kDefaultReplayCapacity = 65536;

// Nonces seen, each kept until `expires_ms`; bounded.
class ReplayCache {
 public:
  explicit ReplayCache(size_t capacity) : capacity_(capacity) {}
  enum class Outcome { kFresh, kReplayed, kFull };
  // Forgets what expired by `now_ms`, then records `nonce` (kFresh) unless it is there
  // (kReplayed) or the cache is full (kFull, nothing recorded).
  Outcome check_and_insert(std::span<const uint8_t> nonce, int64_t expires_ms, int64_t now_ms);
  size_t size() const { return expiry_of_.size(); }

 private:
  size_t capacity_;
  std::unordered_map<std::string, int64_t> expiry_of_;  // SHA-256 of the nonce -> expiry
  std::multimap<int64_t, std::string> by_expiry_;
};

// What the document says, filled in as far as it could be read: the audit record's
// claims even when the document is refused ("verified" says whether they may be
// trusted).
struct Claims {
  bool parsed = false;
  bool verified = false;
  std::string module_id;
  std::map<uint32_t, attest::Pcr> pcrs;
  uint64_t timestamp_ms = 0;
  std::string nonce_sha256;  // "" when absent
  int public_key_bits = 0;
};

struct VerifiedRecipient {
  Attestation attestation;
  pki::ossl::PkeyPtr public_key;  // RSA, 2048..4096 bits
};

class RecipientVerifier {
 public:
  // `root_pem`: the pinned root certificate (the first in the text; it must be a CA).
  // Documents dated before `not_before_ms` (the service's start) are refused.
  static KmsResult<std::unique_ptr<RecipientVerifier>> create(const std::string& root_pem,
                                                             std::chrono::seconds max_age,
                                                             size_t replay_capacity = kDefaultReplayCapacity,
                                                             int64_t not_before_ms = 0);
  // The whole check at wall-clock time `now_ms`. Errors: kValidation (not a document at
  // all), kAccessDenied (a document that fails a check: the sentence says which),
  // kThrottling (the replay cache is full). The nonce is recorded only once every
  // other check passed, so forged documents cannot use up a client's nonce.
  KmsResult<VerifiedRecipient> verify(std::span<const uint8_t> document, int64_t now_ms, Claims* claims);
  std::chrono::seconds max_age() const { return max_age_; }
  size_t replay_entries() const { return replay_.size(); }

 private:
  RecipientVerifier(pki::ossl::StorePtr store, std::chrono::seconds max_age, size_t cap, int64_t not_before)
      : store_(std::move(store)), max_age_(max_age), replay_(cap), not_before_ms_(not_before) {}
  KmsResult<void> check_chain(const attest::Document& d, int64_t now_ms) const;
  pki::ossl::StorePtr store_;
  std::chrono::seconds max_age_;
  ReplayCache replay_;
  int64_t not_before_ms_ = 0;
  int64_t latest_now_ms_ = 0;
};

// Wall-clock milliseconds since the epoch.
int64_t now_ms();

}  // namespace azote::kms
