// azote-kms's logic, in process: key policy evaluation (allow, deny, explicit deny,
// case, missing condition keys), the ciphertexts, the replay cache, the whole document
// check with documents signed here by a DICE chain (lib/dice, as azote-rot signs) and
// forged ones, and the service's requests end to end with its audit log verified.
// tests/integration/kms_test.cpp runs the real binaries with a real azote-rot.
#include <gtest/gtest.h>
#include <openssl/ec.h>
#include <openssl/rsa.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include "attest/attest.hpp"
#include "audit/verify.hpp"
#include "base/hex.hpp"
#include "dice/dice.hpp"
#include "kms/codec.hpp"
#include "kms/crypto.hpp"
#include "kms/keystore.hpp"
#include "kms/policy.hpp"
#include "kms/recipient.hpp"
#include "kms/service.hpp"
#include "pki/ossl.hpp"

namespace azote::kms {
namespace {

using Json = nlohmann::json;
namespace ossl = pki::ossl;

std::span<const uint8_t> bytes_of(std::string_view s) { return {reinterpret_cast<const uint8_t*>(s.data()), s.size()}; }

// ---- codec ----

TEST(Codec, Base64RoundTripsAndRefusesAnythingNonCanonical) {
  for (std::string_view s : {"", "f", "fo", "foo", "foob", "fooba", "foobar"}) {
    const std::string e = base64_encode(bytes_of(s));
    const auto d = base64_decode(e);
    ASSERT_TRUE(d) << e;
    EXPECT_EQ(std::string(d->begin(), d->end()), s);
  }
  EXPECT_EQ(base64_encode(bytes_of("foobar")), "Zm9vYmFy");
  EXPECT_EQ(base64_encode(bytes_of("fo")), "Zm8=");
  for (const char* bad : {"Zm8", "Zm9=", "Zg==\n", "Z m8=", "Zm=8", "Zh==", "Zm9vYmFy====", "Zm8-", "====", "Z==="}) {
    EXPECT_FALSE(base64_decode(bad)) << bad;
    EXPECT_FALSE(base64_decode_secret(bad)) << bad;
  }
  // The secret form decodes the same, into SecretBytes.
  for (std::string_view s : {"", "f", "fo", "foo", "foob", "fooba", "foobar"}) {
    const auto d = base64_decode_secret(base64_encode(bytes_of(s)));
    ASSERT_TRUE(d) << s;
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(d->data()), d->size()), s);  // NOLINT
  }
}

// ---- policies ----

const std::string kPcr0(96, 'a'), kPcr4(96, '4');

Attestation attestation() {
  Attestation a;
  a.module_id = "i-0123456789abcdef0-enc0123456789abcdef";
  attest::Pcr p0{}, p4{};
  p0.fill(0xaa);
  p4.fill(0x44);
  a.pcrs[0] = p0;
  a.pcrs[4] = p4;
  a.pcrs[1] = attest::Pcr{};
  return a;
}

Policy must_parse(const Json& j) {
  auto p = parse_policy(j);
  EXPECT_TRUE(p) << p.error().message();
  return p ? *p : Policy{};
}

Json allow(Json condition, Json action = Json::array({"kms:Decrypt", "kms:GenerateDataKey"})) {
  Json s = {{"Effect", "Allow"}, {"Action", std::move(action)}};
  if (!condition.is_null()) s["Condition"] = std::move(condition);
  return s;
}

TEST(Policy, AnAllowWhoseConditionsMatchTheDocumentAllows) {
  const Policy p = must_parse({{"Version", "2012-10-17"},
                               {"Statement", {allow({{"StringEqualsIgnoreCase",
                                                      {{"kms:RecipientAttestation:ImageSha384", kPcr0},
                                                       {"kms:RecipientAttestation:PCR4", kPcr4}}}})}}});
  const Attestation a = attestation();
  const Decision d = evaluate(p, Action::kGenerateDataKey, &a);
  EXPECT_TRUE(d.allowed) << d.reason;
  EXPECT_NE(d.reason.find("statement 0 of the key policy allows kms:GenerateDataKey"), std::string::npos) << d.reason;
  EXPECT_TRUE(evaluate(p, Action::kDecrypt, &a).allowed);
  // Another PCR4: not allowed, and the reason says which condition failed.
  Attestation b = a;
  b.pcrs[4].fill(0x45);
  const Decision no = evaluate(p, Action::kDecrypt, &b);
  EXPECT_FALSE(no.allowed);
  EXPECT_NE(no.reason.find("no statement of the key policy allows kms:Decrypt"), std::string::npos) << no.reason;
  EXPECT_NE(no.reason.find("kms:RecipientAttestation:PCR4 does not match the document's PCR4"), std::string::npos)
      << no.reason;
}

TEST(Policy, IgnoreCaseComparesHexCaselesslyAndStringEqualsExactly) {
  std::string upper = kPcr0;
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  const Attestation a = attestation();
  EXPECT_TRUE(evaluate(must_parse({{"Statement", {allow({{"StringEqualsIgnoreCase", {{"kms:RecipientAttestation:PCR0", upper}}}})}}}),
                       Action::kDecrypt, &a)
                  .allowed);
  // Condition key names are case-insensitive, as in IAM.
  EXPECT_TRUE(evaluate(must_parse({{"Statement", {allow({{"StringEquals", {{"KMS:recipientattestation:imagesha384", kPcr0}}}})}}}),
                       Action::kDecrypt, &a)
                  .allowed);
  // StringEquals with uppercase hex could never match (values are lowercase): refused.
  auto r = parse_policy({{"Statement", {allow({{"StringEquals", {{"kms:RecipientAttestation:PCR0", upper}}}})}}});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, kMalformedPolicy);
  EXPECT_NE(r.error().sentence.find("uppercase hex digits, which never match"), std::string::npos) << r.error().sentence;
  // Any of a list of values.
  EXPECT_TRUE(evaluate(must_parse({{"Statement", {allow({{"StringEquals", {{"kms:RecipientAttestation:PCR0",
                                                                          {std::string(96, 'b'), kPcr0}}}}})}}}),
                       Action::kDecrypt, &a)
                  .allowed);
}

TEST(Policy, AnExplicitDenyWinsAndNoMatchingAllowIsADenial) {
  const Attestation a = attestation();
  const Json deny = {{"Sid", "NoThisImage"},
                     {"Effect", "Deny"},
                     {"Action", "kms:Decrypt"},
                     {"Condition", {{"StringEqualsIgnoreCase", {{"kms:RecipientAttestation:ImageSha384", kPcr0}}}}}};
  const Policy p = must_parse({{"Statement", {allow(nullptr), deny}}});
  const Decision d = evaluate(p, Action::kDecrypt, &a);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.reason, "statement 1 (Sid \"NoThisImage\") of the key policy explicitly denies kms:Decrypt");
  // The Deny names only Decrypt: GenerateDataKey is allowed by the unconditional Allow.
  EXPECT_TRUE(evaluate(p, Action::kGenerateDataKey, &a).allowed);
  // A Deny whose condition does not hold does not apply.
  Attestation other = a;
  other.pcrs[0].fill(0xbb);
  EXPECT_TRUE(evaluate(p, Action::kDecrypt, &other).allowed);
  // An Allow for another action only: denied.
  const Policy gen_only = must_parse({{"Statement", allow(nullptr, "kms:GenerateDataKey")}});
  const Decision g = evaluate(gen_only, Action::kDecrypt, &a);
  EXPECT_FALSE(g.allowed);
  EXPECT_EQ(g.reason, "no statement of the key policy allows kms:Decrypt for this recipient");
  EXPECT_TRUE(evaluate(must_parse({{"Statement", allow(nullptr, "kms:*")}}), Action::kDecrypt, &a).allowed);
}

TEST(Policy, AConditionOnAKeyTheRequestLacksFails) {
  const Policy p = must_parse({{"Statement", {allow({{"StringEqualsIgnoreCase", {{"kms:RecipientAttestation:PCR8", kPcr0}}}})}}});
  const Attestation a = attestation();  // no PCR8
  const Decision d = evaluate(p, Action::kDecrypt, &a);
  EXPECT_FALSE(d.allowed);
  EXPECT_NE(d.reason.find("the document has no PCR8"), std::string::npos) << d.reason;
  // Without a verified document every attestation condition fails...
  const Decision none = evaluate(p, Action::kDecrypt, nullptr);
  EXPECT_FALSE(none.allowed);
  EXPECT_NE(none.reason.find("needs a verified attestation document"), std::string::npos) << none.reason;
  // ...so a Deny conditioned on one does not apply either, as in IAM (the service
  // refuses requests without a valid document before any policy is read).
  const Policy deny = must_parse({{"Statement", {allow(nullptr), {{"Effect", "Deny"}, {"Action", "kms:*"},
                                                                 {"Condition", {{"StringEquals", {{"kms:RecipientAttestation:PCR0", kPcr0}}}}}}}}});
  EXPECT_FALSE(evaluate(deny, Action::kDecrypt, &a).allowed);
  EXPECT_TRUE(evaluate(deny, Action::kDecrypt, nullptr).allowed);
}

TEST(Policy, AnythingOutsideTheSubsetIsRefusedByName) {
  const std::vector<std::pair<Json, std::string>> bad = {
      {Json::array(), "not a JSON object"},
      {{{"Version", "2012-10-17"}}, "no Statement"},
      {{{"Statement", Json::array()}}, "Statement is not an object or a list"},
      {{{"Statement", allow(nullptr)}, {"Extra", 1}}, "field \"Extra\" is not supported"},
      {{{"Statement", {{"Effect", "Maybe"}, {"Action", "kms:Decrypt"}}}}, "Effect is not"},
      {{{"Statement", {{"Effect", "Allow"}}}}, "no Action"},
      {{{"Statement", {{"Action", "kms:Decrypt"}}}}, "no Effect"},
      {{{"Statement", allow(nullptr, "kms:Encrypt")}}, "action \"kms:Encrypt\" is not one of"},
      {{{"Statement", allow({{"StringLike", {{"kms:RecipientAttestation:PCR0", "a*"}}}})}},
       "condition operator \"StringLike\" is not StringEquals or StringEqualsIgnoreCase"},
      {{{"Statement", allow({{"StringEqualsIgnoreCase", {{"kms:RecipientAttestation:PCR32", kPcr0}}}})}},
       "condition key \"kms:RecipientAttestation:PCR32\" is not"},
      {{{"Statement", allow({{"StringEqualsIgnoreCase", {{"kms:RecipientAttestation:PCR04", kPcr0}}}})}}, "PCR04"},
      {{{"Statement", allow({{"StringEqualsIgnoreCase", {{"aws:SourceIp", "10.0.0.1"}}}})}}, "aws:SourceIp"},
      {{{"Statement", allow({{"StringEqualsIgnoreCase", {{"kms:RecipientAttestation:PCR0", "xyz"}}}})}}, "is not a hex string"},
      {{{"Statement", allow({{"StringEqualsIgnoreCase", {{"kms:RecipientAttestation:PCR0", Json::array()}}}})}},
       "is not a string or a list"},
      {{{"Statement", {{"Effect", "Allow"}, {"Action", "kms:*"}, {"Principal", {{"AWS", "arn:aws:iam::1:root"}}}}}},
       "Principal must be"},
      {{{"Statement", {{"Effect", "Allow"}, {"Action", "kms:*"}, {"Resource", "arn:x"}}}}, "Resource must be"},
  };
  for (const auto& [j, why] : bad) {
    auto r = parse_policy(j);
    ASSERT_FALSE(r) << j.dump();
    EXPECT_EQ(r.error().code, kMalformedPolicy);
    EXPECT_NE(r.error().sentence.find(why), std::string::npos) << j.dump() << " -> " << r.error().sentence;
  }
  // What AWS's examples write is accepted.
  EXPECT_TRUE(parse_policy({{"Version", "2012-10-17"},
                            {"Statement",
                             {{{"Sid", "Enable enclave"}, {"Effect", "Allow"}, {"Principal", {{"AWS", "*"}}},
                               {"Action", "kms:Decrypt"}, {"Resource", "*"},
                               {"Condition", {{"StringEqualsIgnoreCase", {{"kms:RecipientAttestation:ImageSha384", kPcr0}}}}}}}}}));
}

// ---- ciphertexts ----

SecretBytes secret_of(uint8_t fill, size_t n = kKeyBytes) {
  SecretBytes s(n);
  std::fill(s.data(), s.data() + n, fill);
  return s;
}

TEST(Blob, RoundTripsAndAnyChangedByteOrOtherKeyIsInvalidCiphertext) {
  const SecretBytes key = secret_of(7), other = secret_of(8), data = secret_of(0x5a);
  auto blob = seal_blob(key, "key-0123456789abcdef", data.span());
  ASSERT_TRUE(blob) << blob.error().message();
  EXPECT_EQ(blob->size(), 2 + 20 + 12 + 32 + 16u);
  auto id = blob_key_id(*blob);
  ASSERT_TRUE(id);
  EXPECT_EQ(*id, "key-0123456789abcdef");
  auto back = open_blob(key, *blob);
  ASSERT_TRUE(back);
  EXPECT_TRUE(std::equal(back->data(), back->data() + back->size(), data.data()));
  EXPECT_EQ(open_blob(other, *blob).error().code, kInvalidCiphertext);
  for (size_t i = 0; i < blob->size(); ++i) {
    Bytes b = *blob;
    b[i] ^= 1;
    auto r = open_blob(key, b);
    ASSERT_FALSE(r) << "byte " << i;
    EXPECT_EQ(r.error().code, kInvalidCiphertext) << i;
  }
  // Two seals of one data key differ (a fresh nonce each).
  EXPECT_NE(*seal_blob(key, "key-0123456789abcdef", data.span()), *blob);
  EXPECT_EQ(open_blob(key, Bytes(blob->begin(), blob->end() - 1)).error().code, kInvalidCiphertext);
  EXPECT_EQ(blob_key_id(Bytes{2, 20}).error().code, kInvalidCiphertext);
}

// ---- the replay cache ----

TEST(Replay, ANonceIsRefusedUntilItExpiresAndAFullCacheRefusesRatherThanForgets) {
  ReplayCache c(2);
  const Bytes n1{1}, n2{2}, n3{3};
  EXPECT_EQ(c.check_and_insert(n1, 1000, 0), ReplayCache::Outcome::kFresh);
  EXPECT_EQ(c.check_and_insert(n1, 1000, 10), ReplayCache::Outcome::kReplayed);
  EXPECT_EQ(c.check_and_insert(n2, 2000, 20), ReplayCache::Outcome::kFresh);
  EXPECT_EQ(c.check_and_insert(n3, 2000, 30), ReplayCache::Outcome::kFull);
  EXPECT_EQ(c.check_and_insert(n1, 1000, 40), ReplayCache::Outcome::kReplayed) << "a full cache forgot a live nonce";
  EXPECT_EQ(c.check_and_insert(n3, 3000, 1000), ReplayCache::Outcome::kFresh) << "n1 expired at 1000";
  EXPECT_EQ(c.size(), 2u);
}

// ---- attestation documents ----

ossl::PkeyPtr rsa_key(unsigned bits) {
  return ossl::PkeyPtr(EVP_RSA_gen(bits));
}
Bytes spki(EVP_PKEY* k) {
  unsigned char* der = nullptr;
  const int n = i2d_PUBKEY(k, &der);
  Bytes out(der, der + n);
  OPENSSL_free(der);
  return out;
}
const ossl::PkeyPtr& rsa2048() {
  static const ossl::PkeyPtr k = rsa_key(2048);
  return k;
}

// A DICE chain like azote-rot's (device -> layer -> attestation key) signing documents.
struct Signer {
  dice::Chain chain;
  static Signer make(std::string_view seed, int64_t not_before) {
    const dice::Secret uds(dice::sha384(bytes_of(seed)));
    std::vector<dice::LayerInput> layers{{"azote-launcher", dice::sha384(bytes_of("launcher")), {}, dice::Mode::kNormal},
                                         {"azote-controller", dice::sha384(bytes_of("controller")), {}, dice::Mode::kNormal}};
    auto c = dice::Chain::build(uds, layers, not_before);
    EXPECT_TRUE(c) << c.error().message();
    return Signer{std::move(c).value()};
  }
  std::string root_pem() const { return chain.layers()[0].cert_pem; }
  attest::Document document(int64_t ts_ms, const Bytes& nonce) const {
    attest::Document d;
    d.module_id = "i-0123456789abcdef0-enc0123456789abcdef";
    d.timestamp_ms = static_cast<uint64_t>(ts_ms);
    d.pcrs[0].fill(0xaa);
    d.pcrs[4].fill(0x44);
    d.pcrs[1] = attest::Pcr{};
    d.certificate = chain.layers().back().cert_der;
    for (size_t i = 0; i + 1 < chain.layers().size(); ++i) d.cabundle.push_back(chain.layers()[i].cert_der);
    d.public_key = spki(rsa2048().get());
    d.nonce = nonce;
    return d;
  }
  Bytes sign(const attest::Document& d) const {
    auto payload = attest::encode_payload(d);
    EXPECT_TRUE(payload) << payload.error().message();
    auto tbs = attest::to_be_signed(*payload);
    auto der = chain.attestation_key().sign(*tbs);
    auto raw = attest::der_to_raw_p384(*der);
    auto doc = attest::sign1(*payload, *raw);
    EXPECT_TRUE(doc) << doc.error().message();
    return *doc;
  }
};

const int64_t kNow = 1'800'000'000'000;  // ms
const int64_t kChainStart = kNow / 1000 - 3600;

class Documents : public ::testing::Test {
 protected:
  void SetUp() override {
    auto v = RecipientVerifier::create(signer_.root_pem(), std::chrono::seconds(300));
    ASSERT_TRUE(v) << v.error().message();
    verifier_ = std::move(v).value();
  }
  Bytes nonce() { return Bytes{0x6e, 0x6f, static_cast<uint8_t>(++n_), static_cast<uint8_t>(n_ >> 8)}; }
  KmsResult<VerifiedRecipient> check(const Bytes& doc, int64_t now = kNow) { return verifier_->verify(doc, now, &claims_); }
  void refused(const Bytes& doc, const std::string& why, const char* code = kAccessDenied, int64_t now = kNow) {
    auto r = check(doc, now);
    ASSERT_FALSE(r) << why;
    EXPECT_EQ(r.error().code, code) << r.error().message();
    EXPECT_NE(r.error().sentence.find(why), std::string::npos) << r.error().message();
    EXPECT_FALSE(claims_.verified);
  }
  Signer signer_ = Signer::make("kms_test uds", kChainStart);
  std::unique_ptr<RecipientVerifier> verifier_;
  Claims claims_;
  int n_ = 0;
};

TEST_F(Documents, AGoodDocumentPassesWithItsClaims) {
  const Bytes doc = signer_.sign(signer_.document(kNow - 5000, nonce()));
  auto r = check(doc);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->attestation.module_id, "i-0123456789abcdef0-enc0123456789abcdef");
  EXPECT_EQ(to_hex(r->attestation.pcrs.at(0)), kPcr0);
  EXPECT_EQ(EVP_PKEY_get_bits(r->public_key.get()), 2048);
  EXPECT_TRUE(claims_.verified);
  EXPECT_EQ(claims_.public_key_bits, 2048);
  // The same document again: its nonce is used.
  refused(doc, "nonce was already used: a replayed document");
  EXPECT_EQ(verifier_->replay_entries(), 1u);
}

TEST_F(Documents, AnotherRootsDocumentIsRefused) {
  const Signer other = Signer::make("another device", kChainStart);
  refused(other.sign(other.document(kNow, nonce())), "certificate chain does not lead to the pinned root");
  EXPECT_TRUE(claims_.parsed);
  EXPECT_EQ(verifier_->replay_entries(), 0u) << "a forged document used up a nonce";
  // The chain without its intermediate: no path to the root.
  attest::Document d = signer_.document(kNow, nonce());
  d.cabundle.pop_back();
  refused(signer_.sign(d), "certificate chain does not lead to the pinned root");
  // Another device's leaf with this device's bundle.
  d = signer_.document(kNow, nonce());
  d.certificate = other.chain.layers().back().cert_der;
  refused(other.sign(d), "certificate chain does not lead to the pinned root");
}

TEST_F(Documents, CertificatesOutsideTheirValidityAreRefused) {
  const Signer later = Signer::make("kms_test uds", kNow / 1000 + 3600);
  auto v = RecipientVerifier::create(later.root_pem(), std::chrono::seconds(300));
  ASSERT_TRUE(v);
  auto r = (*v)->verify(later.sign(later.document(kNow, nonce())), kNow, nullptr);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().sentence.find("certificate is not yet valid"), std::string::npos) << r.error().sentence;
}

TEST_F(Documents, ATamperedPayloadOrSignatureIsRefused) {
  Bytes doc = signer_.sign(signer_.document(kNow, nonce()));
  const std::string id = "i-0123456789abcdef0";
  auto at = std::search(doc.begin(), doc.end(), id.begin(), id.end());
  ASSERT_NE(at, doc.end());
  at[3] ^= 1;
  refused(doc, "signature does not verify with its certificate");
  doc = signer_.sign(signer_.document(kNow, nonce()));
  doc.back() ^= 1;
  refused(doc, "signature does not verify with its certificate");
  refused(Bytes{0x84, 0x40}, "is not one", kValidation);
  EXPECT_FALSE(claims_.parsed);
}

TEST_F(Documents, ZeroPcrsAreADebugEnclaveAndRefused) {
  attest::Document d = signer_.document(kNow, nonce());
  for (auto& [i, v] : d.pcrs) v.fill(0);
  refused(signer_.sign(d), "every PCR of the attestation document is zero");
}

TEST_F(Documents, StaleOrFutureDocumentsAreRefused) {
  refused(signer_.sign(signer_.document(kNow - 301'000, nonce())), "stale: 301.0 s old, over --max-age 300 s");
  EXPECT_TRUE(check(signer_.sign(signer_.document(kNow - 299'000, nonce()))));
  EXPECT_TRUE(check(signer_.sign(signer_.document(kNow + 59'000, nonce()))));
  refused(signer_.sign(signer_.document(kNow + 61'000, nonce())), "61.0 s in the future");
  // The clock never goes back: having seen kNow, an earlier "now" is kNow.
  refused(signer_.sign(signer_.document(kNow - 301'000, nonce())), "stale", kAccessDenied, kNow - 100'000);
}

TEST_F(Documents, DocumentsFromBeforeTheServiceStartedAreRefused) {
  // The replay cache is in memory: a restart forgets the nonces of before it.
  auto v = RecipientVerifier::create(signer_.root_pem(), std::chrono::seconds(300), 16, kNow);
  ASSERT_TRUE(v);
  auto r = (*v)->verify(signer_.sign(signer_.document(kNow - 1, nonce())), kNow + 1000, nullptr);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().sentence.find("made before azote-kms started"), std::string::npos) << r.error().sentence;
  EXPECT_TRUE((*v)->verify(signer_.sign(signer_.document(kNow, nonce())), kNow + 1000, nullptr));
}

TEST_F(Documents, ANonceIsRequired) {
  attest::Document d = signer_.document(kNow, nonce());
  d.nonce.reset();
  refused(signer_.sign(d), "has no nonce");
  d.nonce = Bytes{};
  refused(signer_.sign(d), "has no nonce");
}

TEST_F(Documents, ThePublicKeyMustBeRsaOf2048To4096Bits) {
  attest::Document d = signer_.document(kNow, nonce());
  d.public_key.reset();
  refused(signer_.sign(d), "has no public_key");
  d.public_key = spki(rsa_key(1024).get());
  refused(signer_.sign(d), "an RSA key of 1024 bits, outside 2048..4096");
  EXPECT_EQ(claims_.public_key_bits, 1024);
  ossl::PkeyPtr ec(EVP_EC_gen("P-256"));
  ASSERT_TRUE(ec);
  d.public_key = spki(ec.get());
  refused(signer_.sign(d), "is not an RSA key (it is id-ecPublicKey)");
  d.public_key = Bytes{1, 2, 3, 4};
  refused(signer_.sign(d), "is not a DER SubjectPublicKeyInfo");
  d.public_key = spki(rsa2048().get());
  d.public_key->push_back(0);
  refused(signer_.sign(d), "is not a DER SubjectPublicKeyInfo");
  // After all those refusals the nonce is still unused.
  d.public_key->pop_back();
  EXPECT_TRUE(check(signer_.sign(d)));
}

TEST_F(Documents, AFullReplayCacheRefusesNewDocuments) {
  auto v = RecipientVerifier::create(signer_.root_pem(), std::chrono::seconds(300), 2);
  ASSERT_TRUE(v);
  EXPECT_TRUE((*v)->verify(signer_.sign(signer_.document(kNow, nonce())), kNow, nullptr));
  EXPECT_TRUE((*v)->verify(signer_.sign(signer_.document(kNow, nonce())), kNow, nullptr));
  auto r = (*v)->verify(signer_.sign(signer_.document(kNow, nonce())), kNow, nullptr);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, kThrottling);
  // Once the first two are stale they are forgotten.
  EXPECT_TRUE((*v)->verify(signer_.sign(signer_.document(kNow + 300'500, nonce())), kNow + 301'000, nullptr));
}

// ---- the service, in process ----

Bytes oaep_decrypt(EVP_PKEY* priv, const Bytes& c) {
  std::unique_ptr<EVP_PKEY_CTX, ossl::Free<EVP_PKEY_CTX_free>> ctx(EVP_PKEY_CTX_new(priv, nullptr));
  size_t n = 0;
  EXPECT_EQ(EVP_PKEY_decrypt_init(ctx.get()), 1);
  EVP_PKEY_CTX_set_rsa_padding(ctx.get(), RSA_PKCS1_OAEP_PADDING);
  EVP_PKEY_CTX_set_rsa_oaep_md(ctx.get(), EVP_sha256());
  EVP_PKEY_CTX_set_rsa_mgf1_md(ctx.get(), EVP_sha256());
  if (EVP_PKEY_decrypt(ctx.get(), nullptr, &n, c.data(), c.size()) != 1) return {};
  Bytes out(n);
  if (EVP_PKEY_decrypt(ctx.get(), out.data(), &n, c.data(), c.size()) != 1) return {};
  out.resize(n);
  return out;
}

class ServiceTest : public Documents {
 protected:
  void SetUp() override {
    Documents::SetUp();
    dir_ = ::testing::TempDir() + "azote-kms-unit-" + std::to_string(::getpid()) + "-" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    std::ofstream(dir_ + "/root.pem") << signer_.root_pem();
    Options o;
    o.state_dir = dir_ + "/state";
    o.root = dir_ + "/root.pem";
    o.audit = dir_ + "/audit";
    auto s = Service::create(o, [this] { return now_; });
    ASSERT_TRUE(s) << s.error().message();
    service_ = std::move(s).value();
  }
  void TearDown() override {
    if (!HasFailure()) std::filesystem::remove_all(dir_);
  }
  std::string doc64(const attest::Document& d) { return base64_encode(signer_.sign(d)); }
  Json recipient(const attest::Document& d) {
    return {{"AttestationDocument", doc64(d)}, {"KeyEncryptionAlgorithm", "RSAES_OAEP_SHA_256"}};
  }
  std::string create_key(const Json& policy) {
    const Json r = service_->handle_admin({{"op", "CreateKey"}, {"Policy", policy}});
    EXPECT_EQ(r.value("ok", true), true) << r.dump();
    return r.value("KeyId", "");
  }
  std::string dir_;
  int64_t now_ = kNow;
  std::unique_ptr<Service> service_;
};

TEST_F(ServiceTest, OnlyTheAttestedKeyHolderGetsTheDataKeyAndEveryDecisionIsAudited) {
  const std::string key = create_key({{"Statement", {allow({{"StringEqualsIgnoreCase",
                                                            {{"kms:RecipientAttestation:ImageSha384", kPcr0}}}})}}});
  ASSERT_TRUE(valid_key_id(key)) << key;
  Json g = service_->handle({{"op", "GenerateDataKey"}, {"KeyId", key}, {"Recipient", recipient(signer_.document(kNow, nonce()))}});
  ASSERT_EQ(g.value("ok", true), true) << g.dump();
  EXPECT_FALSE(g.contains("Plaintext"));
  EXPECT_EQ(g["KeyId"], key);
  const Bytes data_key = oaep_decrypt(rsa2048().get(), *base64_decode(g["CiphertextForRecipient"].get<std::string>()));
  ASSERT_EQ(data_key.size(), 32u);

  Json d = service_->handle({{"op", "Decrypt"}, {"CiphertextBlob", g["CiphertextBlob"]},
                             {"Recipient", recipient(signer_.document(kNow, nonce()))}});
  ASSERT_EQ(d.value("ok", true), true) << d.dump();
  EXPECT_EQ(d["KeyId"], key);
  EXPECT_EQ(oaep_decrypt(rsa2048().get(), *base64_decode(d["CiphertextForRecipient"].get<std::string>())), data_key);

  // A data key of 16 bytes; NumberOfBytes.
  g = service_->handle({{"op", "GenerateDataKey"}, {"KeyId", key}, {"KeySpec", "AES_128"},
                        {"Recipient", recipient(signer_.document(kNow, nonce()))}});
  ASSERT_EQ(g.value("ok", true), true) << g.dump();
  EXPECT_EQ(oaep_decrypt(rsa2048().get(), *base64_decode(g["CiphertextForRecipient"].get<std::string>())).size(), 16u);

  auto refused = [&](const Json& req, const std::string& error) {
    const Json r = service_->handle(req);
    EXPECT_EQ(r.value("ok", true), false) << req.dump().substr(0, 300);
    EXPECT_NE(r.value("error", "").find(error), std::string::npos) << r.dump();
  };
  refused({{"op", "GenerateDataKey"}, {"KeyId", key}},
          "ValidationException: a recipient attestation document is required; this service never returns plaintext keys");
  refused({{"op", "Decrypt"}, {"CiphertextBlob", g["CiphertextBlob"]}}, "a recipient attestation document is required");
  refused({{"op", "GenerateDataKey"}, {"KeyId", "key-ffffffffffffffff"}, {"Recipient", recipient(signer_.document(kNow, nonce()))}},
          "NotFoundException: key key-ffffffffffffffff does not exist");
  refused({{"op", "GenerateDataKey"}, {"KeyId", "../../etc/passwd"}, {"Recipient", recipient(signer_.document(kNow, nonce()))}},
          "NotFoundException");
  attest::Document other = signer_.document(kNow, nonce());
  other.pcrs[0].fill(0xbb);
  refused({{"op", "GenerateDataKey"}, {"KeyId", key}, {"Recipient", recipient(other)}},
          "AccessDeniedException: no statement of the key policy allows kms:GenerateDataKey");
  Bytes blob = *base64_decode(g["CiphertextBlob"].get<std::string>());
  blob[30] ^= 1;
  refused({{"op", "Decrypt"}, {"CiphertextBlob", base64_encode(blob)}, {"Recipient", recipient(signer_.document(kNow, nonce()))}},
          "InvalidCiphertextException");
  refused({{"op", "Decrypt"}, {"CiphertextBlob", g["CiphertextBlob"]}, {"KeyId", "key-0000000000000000"},
           {"Recipient", recipient(signer_.document(kNow, nonce()))}},
          "IncorrectKeyException");
  refused({{"op", "GenerateDataKey"}, {"KeyId", key}, {"EncryptionContext", {{"a", "b"}}},
           {"Recipient", recipient(signer_.document(kNow, nonce()))}},
          "ValidationException: EncryptionContext is not supported");
  refused({{"op", "GenerateDataKey"}, {"KeyId", key}, {"NumberOfBytes", 65}, {"Recipient", recipient(signer_.document(kNow, nonce()))}},
          "NumberOfBytes is not an integer from 1 to 64");
  refused({{"op", "GenerateDataKey"}, {"KeyId", key},
           {"Recipient", {{"AttestationDocument", doc64(signer_.document(kNow, nonce()))}, {"KeyEncryptionAlgorithm", "RSAES_OAEP_SHA_1"}}}},
          "is not RSAES_OAEP_SHA_256");
  refused({{"op", "GenerateDataKey"}, {"KeyId", key}, {"Recipient", {{"AttestationDocument", "not base64!"}}}},
          "ValidationException: Recipient.AttestationDocument is not base64");
  refused({{"op", "Encrypt"}, {"KeyId", key}}, "UnsupportedOperationException: Encrypt is served only on the admin socket");
  // Admin ops are not on the request socket.
  refused({{"op", "CreateKey"}, {"Policy", {{"Statement", allow(nullptr)}}}}, "UnsupportedOperationException");
  // The clock moves on: a document made before is stale now.
  const attest::Document old = signer_.document(kNow, nonce());
  now_ += 301'000;
  refused({{"op", "GenerateDataKey"}, {"KeyId", key}, {"Recipient", recipient(old)}}, "AccessDeniedException: the attestation document is stale");

  const auto pub = audit::VerifyKey::from_pem(
      [&] { std::ifstream f(dir_ + "/audit/signing.pub"); return std::string(std::istreambuf_iterator<char>(f), {}); }());
  ASSERT_TRUE(pub);
  const audit::VerifyReport rep = audit::verify_file(service_->audit_path(), *pub);
  EXPECT_TRUE(rep.ok) << rep.reason;
  // kms.start, CreateKey, 3 allowed, 14 refused.
  EXPECT_EQ(rep.records, 19u);
  std::ifstream f(service_->audit_path());
  std::vector<Json> records;
  for (std::string line; std::getline(f, line);) records.push_back(Json::parse(line));
  ASSERT_EQ(records.size(), 19u);
  EXPECT_EQ(records[0]["method"], "kms.start");
  EXPECT_EQ(records[1]["method"], "kms.CreateKey");
  EXPECT_EQ(records[2]["method"], "kms.GenerateDataKey");
  EXPECT_EQ(records[2]["outcome"], "allowed");
  EXPECT_EQ(records[2]["principal"], "i-0123456789abcdef0-enc0123456789abcdef");
  EXPECT_EQ(records[2]["resources"][0], key);
  EXPECT_EQ(records[2]["detail"]["pcr0"], kPcr0);
  EXPECT_EQ(records[2]["detail"]["document"], "verified");
  EXPECT_NE(records[2]["detail"]["reason"].get<std::string>().find("allows kms:GenerateDataKey"), std::string::npos);
  EXPECT_EQ(records[3]["method"], "kms.Decrypt");
  EXPECT_EQ(records[5]["outcome"], "denied");
  EXPECT_EQ(records[5]["detail"]["document"], "absent");
  EXPECT_NE(records[5]["error"].get<std::string>().find("recipient attestation document is required"), std::string::npos);
  EXPECT_EQ(records[9]["detail"]["pcr0"], std::string(96, 'b'));
  EXPECT_EQ(records.back()["detail"]["document"], "refused");
  EXPECT_EQ(records.back()["principal"], "");
  for (const Json& r : records) EXPECT_EQ(r.dump().find(to_hex(data_key)), std::string::npos) << "a data key in the audit log";
}

// A data owner's secret, sealed on the admin socket, reaches only an attested recipient
// through Decrypt; Encrypt is refused on the request socket by name.
TEST_F(ServiceTest, EncryptOnTheAdminSocketMakesABlobThatDecryptHandsOnlyToAnAttestedRecipient) {
  const std::string key = create_key({{"Statement", {allow({{"StringEqualsIgnoreCase",
                                                            {{"kms:RecipientAttestation:ImageSha384", kPcr0}}}})}}});
  const std::string secret = "the data owner's database password: 48 bytes, ok";
  ASSERT_EQ(secret.size(), 48u);
  const Json e = service_->handle_admin({{"op", "Encrypt"}, {"KeyId", key}, {"Plaintext", base64_encode(bytes_of(secret))}});
  ASSERT_EQ(e.value("ok", false), true) << e.dump();
  EXPECT_EQ(e.size(), 3u) << e.dump();  // ok, KeyId, CiphertextBlob: nothing else
  EXPECT_EQ(e["KeyId"], key);
  const Bytes blob = *base64_decode(e["CiphertextBlob"].get<std::string>());
  EXPECT_EQ(blob.size(), 2 + 20 + 12 + secret.size() + 16);
  EXPECT_EQ(*blob_key_id(blob), key);
  EXPECT_EQ(std::search(blob.begin(), blob.end(), secret.begin(), secret.end()), blob.end());

  // Decrypt with an attested recipient: the secret, wrapped to the document's key.
  const Json d = service_->handle({{"op", "Decrypt"}, {"CiphertextBlob", e["CiphertextBlob"]},
                                   {"Recipient", recipient(signer_.document(kNow, nonce()))}});
  ASSERT_EQ(d.value("ok", false), true) << d.dump();
  EXPECT_EQ(d["KeyId"], key);
  EXPECT_FALSE(d.contains("Plaintext"));
  const Bytes back = oaep_decrypt(rsa2048().get(), *base64_decode(d["CiphertextForRecipient"].get<std::string>()));
  EXPECT_EQ(std::string(back.begin(), back.end()), secret);
  // The bounds: 1 and 64 bytes round-trip too.
  for (size_t n : {size_t{1}, kMaxPlaintextBytes}) {
    const Bytes p(n, 0x42);
    const Json en = service_->handle_admin({{"op", "Encrypt"}, {"KeyId", key}, {"Plaintext", base64_encode(p)}});
    ASSERT_EQ(en.value("ok", false), true) << en.dump();
    const Json de = service_->handle({{"op", "Decrypt"}, {"CiphertextBlob", en["CiphertextBlob"]}, {"KeyId", key},
                                      {"Recipient", recipient(signer_.document(kNow, nonce()))}});
    ASSERT_EQ(de.value("ok", false), true) << de.dump();
    EXPECT_EQ(oaep_decrypt(rsa2048().get(), *base64_decode(de["CiphertextForRecipient"].get<std::string>())), p) << n;
  }
  // The key policy still decides who gets it.
  attest::Document other = signer_.document(kNow, nonce());
  other.pcrs[0].fill(0xbb);
  const Json denied = service_->handle({{"op", "Decrypt"}, {"CiphertextBlob", e["CiphertextBlob"]}, {"Recipient", recipient(other)}});
  EXPECT_NE(denied.value("error", "").find("AccessDeniedException: no statement of the key policy allows kms:Decrypt"),
            std::string::npos)
      << denied.dump();

  auto admin_refused = [&](const Json& req, const std::string& error) {
    const Json r = service_->handle_admin(req);
    EXPECT_EQ(r.value("ok", true), false) << req.dump();
    EXPECT_FALSE(r.contains("CiphertextBlob"));
    EXPECT_NE(r.value("error", "").find(error), std::string::npos) << r.dump();
  };
  const auto enc = [&](const Json& plaintext, const std::string& k) {
    return Json{{"op", "Encrypt"}, {"KeyId", k}, {"Plaintext", plaintext}};
  };
  admin_refused(enc("", key), "ValidationException: Plaintext is 0 bytes, not 1 to 64");
  admin_refused(enc(base64_encode(Bytes(65, 0x42)), key), "ValidationException: Plaintext is 65 bytes, not 1 to 64");
  admin_refused(enc(base64_encode(bytes_of(secret)), "key-ffffffffffffffff"),
                "NotFoundException: key key-ffffffffffffffff does not exist");
  admin_refused(enc(base64_encode(bytes_of(secret)), "../../etc/passwd"), "NotFoundException");
  admin_refused(enc("not base64!", key), "ValidationException: Plaintext is not base64");
  admin_refused(enc(42, key), "ValidationException: Plaintext is not a string");
  admin_refused({{"op", "Encrypt"}, {"KeyId", key}}, "ValidationException: Plaintext is required");
  admin_refused({{"op", "Encrypt"}, {"Plaintext", base64_encode(bytes_of(secret))}}, "ValidationException: KeyId is required");
  Json with_context = enc(base64_encode(bytes_of(secret)), key);
  with_context["EncryptionContext"] = {{"a", "b"}};
  admin_refused(with_context, "ValidationException: EncryptionContext is not supported");
  Json with_alg = enc(base64_encode(bytes_of(secret)), key);
  with_alg["EncryptionAlgorithm"] = "RSAES_OAEP_SHA_256";
  admin_refused(with_alg, "ValidationException: EncryptionAlgorithm is not SYMMETRIC_DEFAULT");

  // Never on the request socket: refused by name, and no blob.
  const Json listen = service_->handle(enc(base64_encode(bytes_of(secret)), key));
  EXPECT_EQ(listen.value("error", ""),
            "UnsupportedOperationException: Encrypt is served only on the admin socket, never on this one: whoever "
            "reaches this socket could otherwise make ciphertexts that an enclave would take for its data owner's")
      << listen.dump();
  EXPECT_FALSE(listen.contains("CiphertextBlob"));

  // A key whose policy file is malformed fails closed here too.
  std::ofstream(dir_ + "/state/keys/" + key + ".policy", std::ios::trunc) << "{";
  admin_refused(enc(base64_encode(bytes_of(secret)), key), "MalformedPolicyDocumentException: key " + key);

  // Every Encrypt is audited (kms.Encrypt, the key, the outcome), the plaintext never.
  const auto pub = audit::VerifyKey::from_pem(
      [&] { std::ifstream f(dir_ + "/audit/signing.pub"); return std::string(std::istreambuf_iterator<char>(f), {}); }());
  ASSERT_TRUE(pub);
  const audit::VerifyReport rep = audit::verify_file(service_->audit_path(), *pub);
  EXPECT_TRUE(rep.ok) << rep.reason;
  std::ifstream f(service_->audit_path());
  std::vector<Json> records;
  for (std::string line; std::getline(f, line);) records.push_back(Json::parse(line));
  // kms.start, CreateKey, Encrypt, Decrypt, 2 x (Encrypt, Decrypt), Decrypt denied,
  // 10 refused Encrypts, the one on the request socket, the malformed policy.
  ASSERT_EQ(records.size(), 2 + 2 + 4 + 1 + 10 + 1 + 1u);
  const Json& first = records[2];
  EXPECT_EQ(first["method"], "kms.Encrypt");
  EXPECT_EQ(first["principal"], "admin");
  EXPECT_EQ(first["outcome"], "allowed");
  EXPECT_EQ(first["resources"][0], key);
  EXPECT_EQ(first["detail"]["op"], "Encrypt");
  EXPECT_EQ(records[3]["method"], "kms.Decrypt");
  EXPECT_EQ(records[3]["outcome"], "allowed");
  EXPECT_EQ(records[3]["principal"], "i-0123456789abcdef0-enc0123456789abcdef");
  const Json& too_short = records[9];
  EXPECT_EQ(too_short["method"], "kms.Encrypt");
  EXPECT_EQ(too_short["outcome"], "denied");
  EXPECT_EQ(too_short["resources"][0], key);
  EXPECT_NE(too_short["error"].get<std::string>().find("Plaintext is 0 bytes"), std::string::npos) << too_short.dump();
  const Json& on_listen = records[records.size() - 2];
  EXPECT_EQ(on_listen["method"], "kms.Encrypt");
  EXPECT_EQ(on_listen["outcome"], "denied");
  EXPECT_EQ(on_listen["principal"], "");
  EXPECT_EQ(on_listen["resources"][0], key);
  EXPECT_EQ(on_listen["detail"]["reason"], "Encrypt on the request socket");
  EXPECT_EQ(records.back()["outcome"], "denied");
  EXPECT_EQ(records.back()["method"], "kms.Encrypt");
  for (const Json& r : records) {
    const std::string text = r.dump();
    for (const std::string& leak : {secret, to_hex(bytes_of(secret)), base64_encode(bytes_of(secret))})
      EXPECT_EQ(text.find(leak), std::string::npos) << "the plaintext is in the audit log: " << text;
  }
}

TEST_F(ServiceTest, KeysLiveInPrivateFilesAndAreListed) {
  const std::string a = create_key({{"Statement", allow(nullptr)}});
  const Json bad = service_->handle_admin({{"op", "CreateKey"}, {"Policy", {{"Statement", allow(nullptr, "kms:Sign")}}}});
  EXPECT_NE(bad.value("error", "").find("MalformedPolicyDocumentException"), std::string::npos) << bad.dump();
  const Json l = service_->handle_admin({{"op", "ListKeys"}});
  ASSERT_EQ(l["Keys"].size(), 1u) << l.dump();
  EXPECT_EQ(l["Keys"][0]["KeyId"], a);
  const Json p = service_->handle_admin({{"op", "GetKeyPolicy"}, {"KeyId", a}});
  EXPECT_EQ(p["Policy"]["Statement"]["Effect"], "Allow") << p.dump();
  const std::string file = dir_ + "/state/keys/" + a + ".key";
  EXPECT_EQ(std::filesystem::file_size(file), 32u);
  EXPECT_EQ(std::filesystem::status(file).permissions() & std::filesystem::perms::all, std::filesystem::perms::owner_read |
                                                                                          std::filesystem::perms::owner_write);
  // A key file others may read is refused, not used.
  std::filesystem::permissions(file, std::filesystem::perms::group_read, std::filesystem::perm_options::add);
  const Json g = service_->handle({{"op", "GenerateDataKey"}, {"KeyId", a}, {"Recipient", recipient(signer_.document(kNow, nonce()))}});
  EXPECT_NE(g.value("error", "").find("KMSInternalException"), std::string::npos) << g.dump();
  EXPECT_NE(g.value("error", "").find("no access for group or others"), std::string::npos) << g.dump();
}

}  // namespace
}  // namespace azote::kms
