// Attestation documents: PCR arithmetic against AWS's published vectors, the envelope's
// fixed bytes, a signed round trip with a DICE chain's key, and refusals of every bound.
// The independent check (a verifier written on Python's cbor2 and cryptography from the
// format description) is tests/tools/verify_attestation.py, run by the Rot tests.
#include "attest/attest.hpp"

#include <gtest/gtest.h>

#include <string>
#include <string_view>

#include "base/hex.hpp"
#include "dice/dice.hpp"

namespace azote::attest {
namespace {

std::span<const uint8_t> bytes_of(std::string_view s) { return {reinterpret_cast<const uint8_t*>(s.data()), s.size()}; }

TEST(Pcr, ExtendMatchesAwsPublishedVectors) {
  // ENCLAVES.md §2: PCR3 of a parent's IAM role and PCR4 of a parent instance id.
  EXPECT_EQ(to_hex(extend(Pcr{}, bytes_of("arn:aws:iam::123456789012:role/Webserver"))),
            "78fce75db17cd4e0a3fb8dad3ad128ca5e77edbb2b2c7f75329dccd99aa5f6ef4fc1f1a452e315b9e98f9e312e6921e6");
  EXPECT_EQ(to_hex(extend(Pcr{}, bytes_of("i-1234567890abcdef0"))),
            "08f996b5d43e047a9eb51e7f548bfee7e164fd7dc8f65541f2ac09d6545ac812719327281c401a67a10fcba87ae79ce0");
  // measure_digest_of(x) = extend(Z, SHA-384(x)).
  const auto d = dice::sha384(bytes_of("kernel"));
  EXPECT_EQ(measure_digest_of(bytes_of("kernel")), extend(Pcr{}, d));
  EXPECT_NE(measure_digest_of(bytes_of("kernel")), measure_digest_of(bytes_of("kernem")));
}

TEST(Cose, ProtectedHeaderIsEs384) {
  EXPECT_EQ(to_hex(protected_header()), "a1013822");
}

struct Signer {
  dice::Chain chain;
  static Signer make() {
    const dice::Digest uds_bytes = dice::sha384(bytes_of("attest_test uds"));
    const dice::Secret uds(uds_bytes);
    std::vector<dice::LayerInput> layers{{"azote-rot", dice::sha384(bytes_of("rot")), {}, dice::Mode::kNormal},
                                         {"host", dice::sha384(bytes_of("host")), {}, dice::Mode::kNormal}};
    auto c = dice::Chain::build(uds, layers, 1796601600);
    EXPECT_TRUE(c) << c.error().message();
    return Signer{std::move(c).value()};
  }
  Document document() const {
    Document d;
    d.module_id = "i-0123456789abcdef0";
    d.timestamp_ms = 1796601600123;
    d.pcrs[0] = measure_digest_of(bytes_of("image"));
    d.pcrs[4] = extend(Pcr{}, bytes_of(d.module_id));
    d.certificate = chain.layers().back().cert_der;
    for (size_t i = 0; i + 1 < chain.layers().size(); ++i) d.cabundle.push_back(chain.layers()[i].cert_der);
    d.nonce = Bytes{1, 2, 3};
    return d;
  }
  Bytes sign(const Document& d) const {
    auto payload = encode_payload(d);
    EXPECT_TRUE(payload) << payload.error().message();
    auto tbs = to_be_signed(*payload);
    EXPECT_TRUE(tbs);
    auto der = chain.attestation_key().sign(*tbs);
    EXPECT_TRUE(der);
    auto raw = der_to_raw_p384(*der);
    EXPECT_TRUE(raw) << raw.error().message();
    auto doc = sign1(*payload, *raw);
    EXPECT_TRUE(doc) << doc.error().message();
    return *doc;
  }
};

TEST(Document, SignedRoundTripKeepsEveryFieldAndVerifies) {
  const Signer s = Signer::make();
  const Document d = s.document();
  const Bytes doc = s.sign(d);
  // The NSM's documents start 84 44 A1 01 38 22 A0: an untagged array of 4, the 4-byte
  // protected header, an empty unprotected map.
  ASSERT_GT(doc.size(), 7u);
  EXPECT_EQ(to_hex(std::span(doc).first(7)), "8444a1013822a0");
  auto p = parse(doc);
  ASSERT_TRUE(p) << p.error().message();
  EXPECT_EQ(p->document.module_id, d.module_id);
  EXPECT_EQ(p->document.timestamp_ms, d.timestamp_ms);
  EXPECT_EQ(p->document.pcrs, d.pcrs);
  EXPECT_EQ(p->document.certificate, d.certificate);
  EXPECT_EQ(p->document.cabundle, d.cabundle);
  EXPECT_EQ(p->document.nonce, d.nonce);
  EXPECT_FALSE(p->document.user_data.has_value());
  EXPECT_FALSE(p->document.public_key.has_value());
  auto v = verify_signature(*p);
  EXPECT_TRUE(v) << v.error().message();
}

// A NitroTPM document names its PCR map "nitrotpm_pcrs" (ENCLAVES.md §8); it round-trips
// under that name, and a map under no known name is refused.
TEST(Document, NitroTpmDocumentsCarryNitrotpmPcrs) {
  const Signer s = Signer::make();
  Document d = s.document();
  d.pcrs_key = "nitrotpm_pcrs";
  const Bytes doc = s.sign(d);
  const std::string text(doc.begin(), doc.end());
  EXPECT_NE(text.find("nitrotpm_pcrs"), std::string::npos);
  auto p = parse(doc);
  ASSERT_TRUE(p) << p.error().message();
  EXPECT_EQ(p->document.pcrs_key, "nitrotpm_pcrs");
  EXPECT_EQ(p->document.pcrs, d.pcrs);
  EXPECT_TRUE(verify_signature(*p));
  d.pcrs_key = "other_pcrs";
  EXPECT_FALSE(encode_payload(d));
}

TEST(Document, AnyFlippedByteInPayloadOrSignatureFailsVerification) {
  const Signer s = Signer::make();
  const Bytes doc = s.sign(s.document());
  auto p = parse(doc);
  ASSERT_TRUE(p);
  // Every byte of the signature, and a spread of payload bytes: each flip either stops the
  // parse or fails the signature, never passes.
  for (size_t i = 0; i < doc.size(); i += (i >= doc.size() - 96 ? 1 : 13)) {
    Bytes bad = doc;
    bad[i] ^= 0x01;
    auto q = parse(bad);
    if (!q) continue;
    EXPECT_FALSE(verify_signature(*q)) << "flipping byte " << i << " still verifies";
  }
}

TEST(Document, TaggedFormIsAcceptedAndTrailingBytesAreNot) {
  const Signer s = Signer::make();
  Bytes doc = s.sign(s.document());
  Bytes tagged{0xd2};  // tag 18
  tagged.insert(tagged.end(), doc.begin(), doc.end());
  auto p = parse(tagged);
  ASSERT_TRUE(p) << p.error().message();
  EXPECT_TRUE(verify_signature(*p));
  doc.push_back(0x00);
  auto q = parse(doc);
  ASSERT_FALSE(q);
  EXPECT_NE(q.error().context.find("trailing"), std::string::npos) << q.error().context;
}

TEST(Document, BoundsAreRefusedNamingTheField) {
  const Signer s = Signer::make();
  auto expect_refused = [&](Document d, const char* field) {
    auto r = encode_payload(d);
    ASSERT_FALSE(r) << field;
    EXPECT_NE(r.error().context.find(field), std::string::npos) << r.error().context;
  };
  Document d = s.document();
  d.module_id.clear();
  expect_refused(d, "module_id");
  d = s.document();
  d.timestamp_ms = 0;
  expect_refused(d, "timestamp");
  d = s.document();
  d.pcrs.clear();
  expect_refused(d, "pcrs");
  d = s.document();
  d.pcrs[32] = Pcr{};
  expect_refused(d, "index 32");
  d = s.document();
  d.cabundle.clear();
  expect_refused(d, "cabundle");
  d = s.document();
  d.nonce = Bytes(1025);
  expect_refused(d, "nonce");
  d = s.document();
  d.public_key = Bytes{};
  expect_refused(d, "public_key");
  d = s.document();
  d.user_data = Bytes(1024);  // the maximum is fine
  EXPECT_TRUE(encode_payload(d));
}

TEST(Document, WrongAlgorithmOrShapeIsRefused) {
  const Signer s = Signer::make();
  Bytes doc = s.sign(s.document());
  Bytes es256 = doc;
  es256[5] = 0x26;  // {1: -7}: ES256
  EXPECT_FALSE(parse(es256));
  EXPECT_FALSE(parse(Bytes{0x83, 0x40, 0xa0, 0x40}));  // an array of 3
  EXPECT_FALSE(parse(Bytes{}));
  EXPECT_FALSE(der_to_raw_p384(Bytes{0x30, 0x00}));
}

// A header declaring 2^32 elements in 9 bytes (fuzz_attest found libcbor allocating
// for it): refused before anything is built, at the top level and inside the payload.
TEST(Document, CollectionsLongerThanTheirBytesAreRefusedUpFront) {
  const Bytes huge_array{0x9b, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00};
  auto r = parse(huge_array);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().context.find("declares more elements"), std::string::npos) << r.error().context;
  const Bytes huge_map{0xbb, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00};
  EXPECT_FALSE(parse(huge_map));
  // A payload whose pcrs map claims 2^32 entries, inside a well-formed envelope.
  Bytes payload{0xa1, 0x64, 'p', 'c', 'r', 's', 0xbb, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00};
  auto doc = sign1(payload, Bytes(96, 1));
  ASSERT_TRUE(doc);
  auto q = parse(*doc);
  ASSERT_FALSE(q);
  EXPECT_NE(q.error().context.find("payload"), std::string::npos) << q.error().context;
}

}  // namespace
}  // namespace azote::attest
