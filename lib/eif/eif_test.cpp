#include "eif/eif.hpp"

#include <gtest/gtest.h>
#include <openssl/ec.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <zlib.h>

#include <cstring>
#include <ctime>

#include "pki/ossl.hpp"

namespace azote::eif {
namespace {

namespace ossl = pki::ossl;

Bytes bytes_of(std::string_view s) { return Bytes(s.begin(), s.end()); }

BuildSpec spec_with(size_t ramdisks) {
  BuildSpec s;
  s.kernel = bytes_of("KERNEL-BYTES");
  s.cmdline = "console=ttyS0 quiet";
  for (size_t i = 0; i < ramdisks; ++i) s.ramdisks.push_back(bytes_of("ramdisk-" + std::to_string(i)));
  s.metadata_json = R"({"ImageName":"t","ImageVersion":"1"})";
  return s;
}

// A self-signed certificate and its key on `curve`, valid from now-60 s for `days`.
Signer make_signer(const char* curve, long days = 30, long not_before_offset = -60) {
  ossl::PkeyPtr key(EVP_EC_gen(curve));
  EXPECT_TRUE(key);
  ossl::X509Ptr cert(X509_new());
  X509_set_version(cert.get(), 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), 7);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), not_before_offset);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), days * 86400);
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("eif test signer"), -1, -1, 0);
  X509_set_issuer_name(cert.get(), name);
  X509_set_pubkey(cert.get(), key.get());
  EXPECT_GT(X509_sign(cert.get(), key.get(), EVP_sha384()), 0);
  ossl::BioPtr cb(BIO_new(BIO_s_mem()));
  ossl::BioPtr kb(BIO_new(BIO_s_mem()));
  PEM_write_bio_X509(cb.get(), cert.get());
  PEM_write_bio_PrivateKey(kb.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr);
  char* p = nullptr;
  Signer s;
  long n = BIO_get_mem_data(cb.get(), &p);
  s.certificate_pem.assign(p, static_cast<size_t>(n));
  n = BIO_get_mem_data(kb.get(), &p);
  s.private_key_pem.assign(p, static_cast<size_t>(n));
  return s;
}

uint64_t be64(const Bytes& b, size_t at) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = v << 8 | b[at + i];
  return v;
}
void set16(Bytes& b, size_t at, uint16_t v) {
  b[at] = static_cast<uint8_t>(v >> 8);
  b[at + 1] = static_cast<uint8_t>(v);
}
// Recomputes the CRC (header 0..543, then everything after the header), so that a test
// reaches the check it aims at rather than the CRC's.
void fix_crc(Bytes& b) {
  uLong c = crc32(0, b.data(), 544);
  c = crc32(c, b.data() + 548, static_cast<uInt>(b.size() - 548));
  for (int i = 0; i < 4; ++i) b[544 + i] = static_cast<uint8_t>(c >> (24 - 8 * i));
}

TEST(eif, BuildWritesTheReferenceLayoutAndParseReadsItBack) {
  BuildSpec s = spec_with(2);
  auto img_bytes = build(s);
  ASSERT_TRUE(img_bytes.ok()) << img_bytes.error().message();
  const Bytes& b = *img_bytes;
  EXPECT_EQ(0, std::memcmp(b.data(), ".eif", 4));
  EXPECT_EQ(4, b[5]);                     // version 4, big-endian
  EXPECT_EQ(1ull << 30, be64(b, 8));      // default memory
  EXPECT_EQ(2u, be64(b, 16));             // default CPUs
  EXPECT_EQ(5, b[27]);                    // num_sections
  EXPECT_EQ(548u, be64(b, 28));           // first section right after the header
  auto img = parse(b);
  ASSERT_TRUE(img.ok()) << img.error().message();
  ASSERT_EQ(5u, img->sections.size());
  const SectionType order[] = {SectionType::kKernel, SectionType::kCmdline, SectionType::kMetadata,
                               SectionType::kRamdisk, SectionType::kRamdisk};
  for (size_t i = 0; i < 5; ++i) EXPECT_EQ(order[i], img->sections[i].type) << i;
  EXPECT_EQ(s.kernel, Bytes(img->kernel.begin(), img->kernel.end()));
  EXPECT_EQ(s.cmdline, std::string(img->cmdline.begin(), img->cmdline.end()));
  ASSERT_EQ(2u, img->ramdisks.size());
  EXPECT_EQ(s.ramdisks[1], Bytes(img->ramdisks[1].begin(), img->ramdisks[1].end()));
  EXPECT_FALSE(img->signature);
  EXPECT_EQ(crc32(crc32(0, b.data(), 544), b.data() + 548, static_cast<uInt>(b.size() - 548)), img->crc);
}

TEST(eif, MeasurementsAreThoseOfEnclavesSection2) {
  BuildSpec s = spec_with(3);
  const std::span<const uint8_t> cmd(reinterpret_cast<const uint8_t*>(s.cmdline.data()), s.cmdline.size());
  const Pcr image = attest::sha384_of({s.kernel, cmd, s.ramdisks[0], s.ramdisks[1], s.ramdisks[2]});
  const Pcr boot = attest::sha384_of({s.kernel, cmd, s.ramdisks[0]});
  const Pcr app = attest::sha384_of({s.ramdisks[1], s.ramdisks[2]});
  const Measurements m = measure(s);
  EXPECT_EQ(attest::extend(Pcr{}, image), m.pcr0);
  EXPECT_EQ(attest::extend(Pcr{}, boot), m.pcr1);
  EXPECT_EQ(attest::extend(Pcr{}, app), m.pcr2);
  EXPECT_FALSE(m.pcr8);
  auto b = build(s);
  ASSERT_TRUE(b.ok());
  auto img = parse(*b);
  ASSERT_TRUE(img.ok());
  const Measurements read = measure(*img, nullptr);
  EXPECT_EQ(m.pcr0, read.pcr0);
  EXPECT_EQ(m.pcr1, read.pcr1);
  EXPECT_EQ(m.pcr2, read.pcr2);

  // One ramdisk: PCR2 is the extend of the digest of nothing.
  EXPECT_EQ(attest::extend(Pcr{}, attest::sha384_of({})), measure(spec_with(1)).pcr2);
  // Metadata is not measured.
  BuildSpec other = spec_with(3);
  other.metadata_json = R"({"ImageName":"else"})";
  EXPECT_EQ(m.pcr0, measure(other).pcr0);
}

TEST(eif, ASignedImageVerifiesAndCarriesPcr8OfItsCertificate) {
  for (const char* curve : {"P-256", "P-384", "P-521"}) {
    BuildSpec s = spec_with(2);
    s.signer = make_signer(curve);
    auto b = build(s);
    ASSERT_TRUE(b.ok()) << curve << ": " << b.error().message();
    auto img = parse(*b);
    ASSERT_TRUE(img.ok()) << img.error().message();
    ASSERT_TRUE(img->signature);
    EXPECT_EQ(SectionType::kSignature, img->sections.back().type);
    auto sig = read_signature(*img->signature);
    ASSERT_TRUE(sig.ok()) << sig.error().message();
    const Measurements m = measure(*img, &*sig);
    EXPECT_EQ(measure(s).pcr0, m.pcr0);  // signing does not move PCR0
    ASSERT_TRUE(m.pcr8);
    auto p8 = pcr8_of_certificate(s.signer->certificate_pem);
    ASSERT_TRUE(p8.ok());
    EXPECT_EQ(*p8, *m.pcr8);
    EXPECT_EQ(attest::measure_digest_of(sig->certificate_der), *m.pcr8);
    const auto expected_alg = std::string(curve) == "P-256"   ? attest::CoseAlg::kEs256
                              : std::string(curve) == "P-384" ? attest::CoseAlg::kEs384
                                                              : attest::CoseAlg::kEs512;
    EXPECT_EQ(expected_alg, sig->cose.alg) << curve;
    auto ok = verify_signature(*sig, m.pcr0, std::time(nullptr));
    EXPECT_TRUE(ok.ok()) << curve << ": " << ok.error().message();
    // Another image's PCR0 is not what was signed.
    auto wrong = verify_signature(*sig, measure(spec_with(1)).pcr0, std::time(nullptr));
    ASSERT_FALSE(wrong.ok());
    EXPECT_EQ(EifErrc::kSignature, wrong.error().code);
  }
}

TEST(eif, ASignatureOutsideTheCertificatesValidityIsRefused) {
  BuildSpec s = spec_with(1);
  s.signer = make_signer("P-384", 1);
  auto b = build(s);
  ASSERT_TRUE(b.ok());
  auto img = parse(*b);
  ASSERT_TRUE(img.ok());
  auto sig = read_signature(*img->signature);
  ASSERT_TRUE(sig.ok());
  const Pcr pcr0 = measure(*img, nullptr).pcr0;
  auto late = verify_signature(*sig, pcr0, std::time(nullptr) + 3 * 86400);
  ASSERT_FALSE(late.ok());
  EXPECT_NE(std::string::npos, late.error().context.find("expired")) << late.error().context;
  auto early = verify_signature(*sig, pcr0, std::time(nullptr) - 3600);
  ASSERT_FALSE(early.ok());
  EXPECT_NE(std::string::npos, early.error().context.find("not valid yet")) << early.error().context;
}

TEST(eif, AKernelChangedUnderASignatureIsCaught) {
  BuildSpec s = spec_with(2);
  s.signer = make_signer("P-384");
  auto b = build(s);
  ASSERT_TRUE(b.ok());
  Bytes t = *b;
  t[548 + 12] ^= 1;  // first kernel byte
  auto crc = parse(t);
  ASSERT_FALSE(crc.ok());
  EXPECT_EQ(EifErrc::kCrc, crc.error().code);
  fix_crc(t);  // an attacker recomputes the CRC: the signature still catches it
  auto img = parse(t);
  ASSERT_TRUE(img.ok()) << img.error().message();
  auto sig = read_signature(*img->signature);
  ASSERT_TRUE(sig.ok());
  auto v = verify_signature(*sig, measure(*img, nullptr).pcr0, std::time(nullptr));
  ASSERT_FALSE(v.ok());
  EXPECT_NE(std::string::npos, v.error().context.find("not the image's PCR0")) << v.error().context;
}

TEST(eif, BuildRefusesBadInputsNamingThem) {
  BuildSpec s = spec_with(0);
  auto r = build(s);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(std::string::npos, r.error().context.find("ramdisk"));
  s = spec_with(1);
  s.kernel.clear();
  EXPECT_FALSE(build(s).ok());
  s = spec_with(1);
  s.metadata_json = "{not json";
  r = build(s);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(std::string::npos, r.error().context.find("metadata"));
  s = spec_with(31);
  EXPECT_FALSE(build(s).ok());
  s = spec_with(1);
  Signer a = make_signer("P-384");
  Signer b = make_signer("P-384");
  s.signer = Signer{a.certificate_pem, b.private_key_pem};
  r = build(s);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(std::string::npos, r.error().context.find("not the signing certificate's")) << r.error().context;
  s.signer = Signer{"not a certificate", a.private_key_pem};
  EXPECT_FALSE(build(s).ok());
}

TEST(eif, ParseRefusesMalformedImagesNamingWhatIsWrong) {
  auto good = build(spec_with(2));
  ASSERT_TRUE(good.ok());
  const Bytes g = *good;
  struct Case {
    const char* name;
    std::function<void(Bytes&)> mutate;
    const char* expect;
  };
  const std::vector<Case> cases = {
      {"short", [](Bytes& b) { b.resize(100); }, "shorter than"},
      {"magic", [](Bytes& b) { b[0] = 'x'; }, "magic"},
      {"version", [](Bytes& b) { set16(b, 4, 3); }, "version 3"},
      {"flags", [](Bytes& b) { set16(b, 6, 2); }, "flags"},
      {"no sections", [](Bytes& b) { set16(b, 26, 0); }, "num_sections 0"},
      {"33 sections", [](Bytes& b) { set16(b, 26, 33); }, "num_sections 33"},
      {"fewer sections than written", [](Bytes& b) { set16(b, 26, 4); }, "beyond num_sections"},
      {"trailing byte", [](Bytes& b) { b.push_back(0); }, "after the last section"},
      {"truncated", [](Bytes& b) { b.pop_back(); }, "past the end"},
      {"unknown type", [](Bytes& b) { set16(b, 548, 9); }, "unknown section type 9"},
      {"section flags", [](Bytes& b) { set16(b, 550, 1); }, "section flags"},
      {"size mismatch", [](Bytes& b) { b[284 + 7] ^= 1; }, "the table"},
      {"gap", [](Bytes& b) { b[28 + 8 + 7] += 1; }, "expected at"},
      {"two kernels", [](Bytes& b) { set16(b, static_cast<size_t>(be64(b, 36)), 1); }, "a second kernel"},
      {"two metadata", [](Bytes& b) { set16(b, static_cast<size_t>(be64(b, 28 + 8 * 3)), 5); }, "second metadata"},
  };
  for (const auto& c : cases) {
    Bytes b = g;
    c.mutate(b);
    if (std::string(c.name) != "short") fix_crc(b);
    auto r = parse(b);
    ASSERT_FALSE(r.ok()) << c.name;
    EXPECT_NE(std::string::npos, r.error().context.find(c.expect)) << c.name << ": " << r.error().context;
  }
  // The only ramdisk retyped as a signature: no ramdisk left.
  auto one = build(spec_with(1));
  ASSERT_TRUE(one.ok());
  Bytes none = *one;
  set16(none, static_cast<size_t>(be64(none, 28 + 8 * 3)), 4);
  fix_crc(none);
  auto nr = parse(none);
  ASSERT_FALSE(nr.ok());
  EXPECT_NE(std::string::npos, nr.error().context.find("no ramdisk")) << nr.error().context;

  Bytes crc = g;
  crc[g.size() - 1] ^= 0x80;
  auto r = parse(crc);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(EifErrc::kCrc, r.error().code);
}

TEST(eif, TheSignatureSectionIsDecodedStrictly) {
  // A well-formed image whose signature section is garbage parses, but its signature
  // does not read.
  EXPECT_FALSE(read_signature(bytes_of("\x81\xa0")).ok());                 // [{}]
  EXPECT_FALSE(read_signature(bytes_of("\x80")).ok());                     // []
  EXPECT_FALSE(read_signature(bytes_of("\x9a\xff\xff\xff\xff")).ok());    // a huge declared array
  EXPECT_FALSE(read_signature({}).ok());
}

TEST(eif, CertificateInfoDescribesTheSigner) {
  const Signer s = make_signer("P-384");
  BuildSpec spec = spec_with(1);
  spec.signer = s;
  auto b = build(spec);
  ASSERT_TRUE(b.ok());
  auto img = parse(*b);
  ASSERT_TRUE(img.ok());
  auto sig = read_signature(*img->signature);
  ASSERT_TRUE(sig.ok());
  auto info = certificate_info(sig->certificate_der);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ("CN=eif test signer", info->issuer);
  EXPECT_EQ("ecdsa-with-SHA384", info->algorithm);
  EXPECT_EQ(20u, info->not_before.size());
  EXPECT_NE(std::string::npos, info->signature.find(':'));
}

}  // namespace
}  // namespace azote::eif
