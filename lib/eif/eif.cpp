#include "eif/eif.hpp"

#include <zlib.h>

#include <cstring>
#include <ctime>
#include <limits>
#include <nlohmann/json.hpp>

#include "cbor/cbor.hpp"
#include "pki/ossl.hpp"

namespace azote::eif {
namespace {

namespace ossl = pki::ossl;
using cbor::Item;

Unexpected<EifError> invalid(std::string what) { return make_error(EifErrc::kInvalid, std::move(what)); }
Unexpected<EifError> format(std::string what) { return make_error(EifErrc::kFormat, std::move(what)); }
Unexpected<EifError> bad_signature(std::string what) { return make_error(EifErrc::kSignature, std::move(what)); }
Unexpected<EifError> crypto(std::string what) {
  const std::string e = ossl::take_errors();
  return make_error(EifErrc::kCrypto, e.empty() ? std::move(what) : what + ": " + e);
}

// Header layout (ENCLAVES.md §4), big-endian.
constexpr size_t kOffVersion = 4, kOffFlags = 6, kOffMem = 8, kOffCpus = 16, kOffCount = 26, kOffOffsets = 28,
                 kOffSizes = 284, kOffCrc = 544;
// Every section type but the signature is bounded only by the file; the signature
// section holds one certificate and one COSE document.
constexpr size_t kMaxSignatureSection = 64 * 1024;
constexpr size_t kMaxCertificatePem = 16 * 1024;
constexpr size_t kMaxRamdisks = kMaxSections - 2;

void put16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}
void put64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (56 - 8 * i));
}
void put32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (24 - 8 * i));
}
uint16_t get16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }
uint32_t get32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) << 24 | static_cast<uint32_t>(p[1]) << 16 | static_cast<uint32_t>(p[2]) << 8 | p[3];
}
uint64_t get64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = v << 8 | p[i];
  return v;
}

// zlib's crc32 takes uInt lengths: feed in chunks.
uint32_t crc_update(uint32_t crc, std::span<const uint8_t> b) {
  uLong c = crc;
  while (!b.empty()) {
    const size_t n = std::min<size_t>(b.size(), 1u << 30);
    c = ::crc32(c, b.data(), static_cast<uInt>(n));
    b = b.subspan(n);
  }
  return static_cast<uint32_t>(c);
}

std::span<const uint8_t> as_bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// PCR0/1/2 from the payloads (ENCLAVES.md §2).
Measurements measure_parts(std::span<const uint8_t> kernel, std::span<const uint8_t> cmdline,
                           const std::vector<std::span<const uint8_t>>& ramdisks) {
  attest::Sha384 image;   // kernel || cmdline || ramdisk1 || ... || ramdiskN
  attest::Sha384 app;     // ramdisk2 || ... || ramdiskN
  image.update(kernel);
  image.update(cmdline);
  Pcr boot{};
  for (size_t i = 0; i < ramdisks.size(); ++i) {
    image.update(ramdisks[i]);
    if (i == 0) boot = image.digest();  // kernel || cmdline || ramdisk1
    if (i > 0) app.update(ramdisks[i]);
  }
  Measurements m;
  m.pcr0 = attest::extend(Pcr{}, image.digest());
  m.pcr1 = attest::extend(Pcr{}, boot);
  m.pcr2 = attest::extend(Pcr{}, app.digest());
  return m;
}

// A byte string as nitro-cli's encoder writes Vec<u8>: an array of small integers.
cbor_item_t* int_array(std::span<const uint8_t> b) {
  cbor_item_t* a = cbor_new_definite_array(b.size());
  if (a == nullptr) return nullptr;
  for (uint8_t v : b) {
    if (!cbor::push(a, cbor::uint_item(v))) {
      cbor_decref(&a);
      return nullptr;
    }
  }
  return a;
}
// ... and read back either way (bstr or such an array).
std::optional<Bytes> bytes_or_int_array(const cbor_item_t* i) {
  if (i == nullptr) return std::nullopt;
  if (auto b = cbor::definite_bytes(i)) return b;
  if (!cbor_isa_array(i) || !cbor_array_is_definite(i)) return std::nullopt;
  Bytes out;
  out.reserve(cbor_array_size(i));
  for (size_t k = 0; k < cbor_array_size(i); ++k) {
    const cbor_item_t* e = cbor_array_handle(i)[k];
    if (!cbor_isa_uint(e) || cbor_get_int(e) > 0xff) return std::nullopt;
    out.push_back(static_cast<uint8_t>(cbor_get_int(e)));
  }
  return out;
}

EifResult<ossl::X509Ptr> x509_of_pem(const std::string& pem) {
  if (pem.size() > kMaxCertificatePem) return invalid("the signing certificate is over 16 KiB");
  auto bio = ossl::mem_bio(pem);
  ossl::X509Ptr cert(bio ? PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  if (!cert) return crypto("the signing certificate is not a PEM X.509 certificate");
  return cert;
}
EifResult<Bytes> der_of(X509* cert) {
  unsigned char* der = nullptr;
  const int n = i2d_X509(cert, &der);
  ossl::BytesPtr owner(der);
  if (n <= 0) return crypto("certificate DER");
  return Bytes(der, der + n);
}

// The signature section: [{signing_certificate, signature: COSE_Sign1 of
// {register_index: 0, register_value: PCR0}}].
EifResult<Bytes> signature_section(const Signer& signer, const Pcr& pcr0) {
  AZOTE_TRY(cert, x509_of_pem(signer.certificate_pem));
  auto kbio = ossl::mem_bio(signer.private_key_pem);
  ossl::PkeyPtr key(kbio ? PEM_read_bio_PrivateKey(kbio.get(), nullptr, nullptr, nullptr) : nullptr);
  if (!key) return crypto("the private key is not an unencrypted PEM private key");
  if (EVP_PKEY_get_base_id(key.get()) != EVP_PKEY_EC) return invalid("the private key is not an EC key");
  if (X509_check_private_key(cert.get(), key.get()) != 1) {
    ossl::take_errors();
    return invalid("the private key is not the signing certificate's");
  }
  auto alg = attest::cose_alg_for_bits(EVP_PKEY_get_bits(key.get()));
  if (!alg.ok()) return invalid(alg.error().context);

  Item payload_map(cbor_new_definite_map(2));
  if (!payload_map || !cbor::put(payload_map.get(), cbor::text_item("register_index"), cbor::uint_item(0)) ||
      !cbor::put(payload_map.get(), cbor::text_item("register_value"), int_array(pcr0)))
    return invalid("out of memory");
  auto payload = cbor::serialize(payload_map.get());
  if (!payload.ok()) return invalid(payload.error().context);
  const Bytes prot = attest::protected_header(*alg);
  auto tbs = attest::to_be_signed(prot, *payload);
  if (!tbs.ok()) return invalid(tbs.error().context);

  const EVP_MD* md = *alg == attest::CoseAlg::kEs256   ? EVP_sha256()
                     : *alg == attest::CoseAlg::kEs384 ? EVP_sha384()
                                                       : EVP_sha512();
  std::unique_ptr<EVP_MD_CTX, ossl::Free<EVP_MD_CTX_free>> ctx(EVP_MD_CTX_new());
  size_t der_len = 0;
  if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, md, nullptr, key.get()) != 1 ||
      EVP_DigestSign(ctx.get(), nullptr, &der_len, tbs->data(), tbs->size()) != 1)
    return crypto("signing PCR0");
  Bytes der(der_len);
  if (EVP_DigestSign(ctx.get(), der.data(), &der_len, tbs->data(), tbs->size()) != 1) return crypto("signing PCR0");
  der.resize(der_len);
  auto raw = attest::der_to_raw(der, *alg);
  if (!raw.ok()) return crypto(raw.error().context);
  auto cose = attest::sign1(*alg, *payload, *raw);
  if (!cose.ok()) return invalid(cose.error().context);

  Item list(cbor_new_definite_array(1));
  Item entry(cbor_new_definite_map(2));
  if (!list || !entry ||
      !cbor::put(entry.get(), cbor::text_item("signing_certificate"), int_array(as_bytes(signer.certificate_pem))) ||
      !cbor::put(entry.get(), cbor::text_item("signature"), int_array(*cose)) ||
      !cbor::push(list.get(), cbor_incref(entry.get())))
    return invalid("out of memory");
  auto out = cbor::serialize(list.get());
  if (!out.ok()) return invalid(out.error().context);
  return std::move(*out);
}

std::string iso8601(const ASN1_TIME* t) {
  struct tm tm {};
  if (ASN1_TIME_to_tm(t, &tm) != 1) return "";
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace

const char* section_name(SectionType t) {
  switch (t) {
    case SectionType::kKernel: return "kernel";
    case SectionType::kCmdline: return "cmdline";
    case SectionType::kRamdisk: return "ramdisk";
    case SectionType::kSignature: return "signature";
    case SectionType::kMetadata: return "metadata";
    case SectionType::kInvalid: break;
  }
  return "invalid";
}

std::string hex(std::span<const uint8_t> bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (uint8_t b : bytes) {
    out += kDigits[b >> 4];
    out += kDigits[b & 15];
  }
  return out;
}

Measurements measure(const BuildSpec& spec) {
  std::vector<std::span<const uint8_t>> ramdisks(spec.ramdisks.begin(), spec.ramdisks.end());
  return measure_parts(spec.kernel, as_bytes(spec.cmdline), ramdisks);
}

Measurements measure(const Image& image, const Signature* signature) {
  Measurements m = measure_parts(image.kernel, image.cmdline, image.ramdisks);
  if (signature != nullptr) m.pcr8 = attest::measure_digest_of(signature->certificate_der);
  return m;
}

EifResult<Pcr> pcr8_of_certificate(const std::string& certificate_pem) {
  AZOTE_TRY(cert, x509_of_pem(certificate_pem));
  AZOTE_TRY(der, der_of(cert.get()));
  return attest::measure_digest_of(der);
}

EifResult<Bytes> build(const BuildSpec& spec) {
  if (spec.kernel.empty()) return invalid("the kernel is empty");
  if (spec.ramdisks.empty()) return invalid("an enclave image needs at least one ramdisk");
  if (spec.ramdisks.size() > kMaxRamdisks)
    return invalid(std::to_string(spec.ramdisks.size()) + " ramdisks: an EIF holds at most " +
                   std::to_string(kMaxRamdisks));
  if (spec.metadata_json.empty() || !nlohmann::json::accept(spec.metadata_json))
    return invalid("the metadata is not JSON");
  if (spec.default_mem == 0 || spec.default_cpus == 0) return invalid("default memory and CPUs must be > 0");

  struct Part {
    SectionType type;
    std::span<const uint8_t> payload;
  };
  std::vector<Part> parts{{SectionType::kKernel, spec.kernel},
                          {SectionType::kCmdline, as_bytes(spec.cmdline)},
                          {SectionType::kMetadata, as_bytes(spec.metadata_json)}};
  for (const auto& r : spec.ramdisks) parts.push_back({SectionType::kRamdisk, r});
  Bytes signature;
  if (spec.signer) {
    AZOTE_TRY(sig, signature_section(*spec.signer, measure(spec).pcr0));
    signature = std::move(sig);
    parts.push_back({SectionType::kSignature, signature});
  }

  uint64_t total = kHeaderSize;
  for (const auto& p : parts) total += kSectionHeaderSize + p.payload.size();
  Bytes out;
  out.reserve(total);
  out.resize(kHeaderSize);
  uint8_t* h = out.data();
  std::memcpy(h, kMagic, 4);
  put16(h + kOffVersion, kVersion);
  put16(h + kOffFlags, 0);  // x86_64
  put64(h + kOffMem, spec.default_mem);
  put64(h + kOffCpus, spec.default_cpus);
  put16(h + kOffCount, static_cast<uint16_t>(parts.size()));
  uint64_t at = kHeaderSize;
  for (size_t i = 0; i < parts.size(); ++i) {
    put64(h + kOffOffsets + 8 * i, at);
    put64(h + kOffSizes + 8 * i, parts[i].payload.size());
    at += kSectionHeaderSize + parts[i].payload.size();
  }
  uint32_t crc = crc_update(0, std::span<const uint8_t>(out.data(), kOffCrc));
  for (const auto& p : parts) {
    uint8_t sh[kSectionHeaderSize] = {};
    put16(sh, static_cast<uint16_t>(p.type));
    put64(sh + 4, p.payload.size());
    out.insert(out.end(), sh, sh + kSectionHeaderSize);
    out.insert(out.end(), p.payload.begin(), p.payload.end());
    crc = crc_update(crc, sh);
    crc = crc_update(crc, p.payload);
  }
  put32(out.data() + kOffCrc, crc);
  return out;
}

EifResult<Image> parse(std::span<const uint8_t> bytes) {
  if (bytes.size() < kHeaderSize)
    return format("the file is " + std::to_string(bytes.size()) + " bytes, shorter than the 548-byte header");
  const uint8_t* h = bytes.data();
  if (std::memcmp(h, kMagic, 4) != 0) return format("no \".eif\" magic at offset 0");
  Image img;
  img.version = get16(h + kOffVersion);
  if (img.version != kVersion)
    return format("version " + std::to_string(img.version) + " at offset 4 (this reader knows version 4)");
  img.flags = get16(h + kOffFlags);
  if ((img.flags & ~kFlagAarch64) != 0) return format("unknown flags " + std::to_string(img.flags) + " at offset 6");
  img.default_mem = get64(h + kOffMem);
  img.default_cpus = get64(h + kOffCpus);
  const uint16_t count = get16(h + kOffCount);
  if (count == 0 || count > kMaxSections)
    return format("num_sections " + std::to_string(count) + " at offset 26 (1 to 32)");
  for (size_t i = count; i < kMaxSections; ++i) {
    if (get64(h + kOffOffsets + 8 * i) != 0 || get64(h + kOffSizes + 8 * i) != 0)
      return format("section table entry " + std::to_string(i) + " is set beyond num_sections");
  }
  img.crc = get32(h + kOffCrc);

  uint32_t crc = crc_update(0, bytes.first(kOffCrc));
  uint64_t expected_at = kHeaderSize;  // sections follow each other, no gaps
  int kernels = 0, cmdlines = 0;
  for (size_t i = 0; i < count; ++i) {
    const uint64_t off = get64(h + kOffOffsets + 8 * i);
    const uint64_t size = get64(h + kOffSizes + 8 * i);
    const std::string where = "section " + std::to_string(i) + " at offset " + std::to_string(off);
    if (off != expected_at)
      return format(where + ": expected at " + std::to_string(expected_at) + " (sections follow one another)");
    if (off > bytes.size() || bytes.size() - off < kSectionHeaderSize)
      return format(where + ": its header runs past the end of the file");
    const uint8_t* sh = bytes.data() + off;
    const uint16_t type = get16(sh);
    const uint16_t sflags = get16(sh + 2);
    const uint64_t ssize = get64(sh + 4);
    if (ssize != size)
      return format(where + ": its header says " + std::to_string(ssize) + " bytes, the table " + std::to_string(size));
    if (size > bytes.size() - off - kSectionHeaderSize) return format(where + ": its payload runs past the end of the file");
    if (type == 0 || type > static_cast<uint16_t>(SectionType::kMetadata))
      return format(where + ": unknown section type " + std::to_string(type));
    if (sflags != 0) return format(where + ": section flags " + std::to_string(sflags) + " (must be 0)");
    const auto t = static_cast<SectionType>(type);
    const std::span<const uint8_t> payload = bytes.subspan(off + kSectionHeaderSize, size);
    img.sections.push_back({t, off, payload});
    crc = crc_update(crc, bytes.subspan(off, kSectionHeaderSize));
    crc = crc_update(crc, payload);
    expected_at = off + kSectionHeaderSize + size;
    switch (t) {
      case SectionType::kKernel:
        if (++kernels > 1) return format(where + ": a second kernel");
        if (payload.empty()) return format(where + ": an empty kernel");
        img.kernel = payload;
        break;
      case SectionType::kCmdline:
        if (++cmdlines > 1) return format(where + ": a second cmdline");
        img.cmdline = payload;
        break;
      case SectionType::kRamdisk:
        img.ramdisks.push_back(payload);
        break;
      case SectionType::kMetadata:
        if (img.metadata) return format(where + ": a second metadata section");
        img.metadata = payload;
        break;
      case SectionType::kSignature:
        if (img.signature) return format(where + ": a second signature section");
        if (payload.size() > kMaxSignatureSection) return format(where + ": a signature section over 64 KiB");
        img.signature = payload;
        break;
      case SectionType::kInvalid: break;
    }
  }
  if (expected_at != bytes.size())
    return format(std::to_string(bytes.size() - expected_at) + " byte(s) after the last section, at offset " +
                  std::to_string(expected_at));
  if (kernels == 0) return format("no kernel section");
  if (cmdlines == 0) return format("no cmdline section");
  if (img.ramdisks.empty()) return format("no ramdisk section");
  if (crc != img.crc)
    return make_error(EifErrc::kCrc, "CRC-32 " + std::to_string(crc) + " of the file is not the header's " +
                                         std::to_string(img.crc) + " (offset 544)");
  return img;
}

EifResult<Signature> read_signature(std::span<const uint8_t> payload) {
  auto top = cbor::load(payload, "signature section");
  if (!top.ok()) return bad_signature(top.error().context);
  const cbor_item_t* list = top->get();
  if (!cbor_isa_array(list) || !cbor_array_is_definite(list) || cbor_array_size(list) != 1)
    return bad_signature("the signature section is not an array of one PCR signature");
  const cbor_item_t* entry = cbor_array_handle(list)[0];
  auto pem = bytes_or_int_array(cbor::map_get(entry, "signing_certificate"));
  auto cose_bytes = bytes_or_int_array(cbor::map_get(entry, "signature"));
  if (!pem || !cose_bytes) return bad_signature("the PCR signature lacks signing_certificate or signature bytes");
  Signature s;
  s.certificate_pem.assign(pem->begin(), pem->end());
  auto cert = x509_of_pem(s.certificate_pem);
  if (!cert.ok()) return bad_signature(cert.error().context);
  AZOTE_TRY(der, der_of(cert->get()));
  s.certificate_der = std::move(der);
  auto cose = attest::parse_sign1(*cose_bytes, 4096);
  if (!cose.ok()) return bad_signature("signature: " + cose.error().context);
  s.cose = std::move(*cose);
  auto body = cbor::load(s.cose.payload, "signed payload");
  if (!body.ok()) return bad_signature(body.error().context);
  const cbor_item_t* index = cbor::map_get(body->get(), "register_index");
  auto value = bytes_or_int_array(cbor::map_get(body->get(), "register_value"));
  if (index == nullptr || !cbor_isa_uint(index) || cbor_get_int(index) >= attest::kPcrCount)
    return bad_signature("the signed payload has no register_index below 32");
  if (!value || value->size() != attest::kPcrBytes)
    return bad_signature("the signed payload's register_value is not 48 bytes");
  s.register_index = static_cast<uint32_t>(cbor_get_int(index));
  std::memcpy(s.register_value.data(), value->data(), attest::kPcrBytes);
  return s;
}

EifResult<void> verify_signature(const Signature& s, const Pcr& pcr0, int64_t now_unix) {
  auto ok = attest::verify_sign1(s.cose, s.certificate_der);
  if (!ok.ok()) return bad_signature(ok.error().context);
  if (s.register_index != 0) return bad_signature("the signature is over PCR" + std::to_string(s.register_index) + ", not PCR0");
  if (s.register_value != pcr0) return bad_signature("the signed PCR0 is not the image's PCR0");
  const unsigned char* p = s.certificate_der.data();
  ossl::X509Ptr cert(d2i_X509(nullptr, &p, static_cast<long>(s.certificate_der.size())));
  if (!cert) return bad_signature("certificate DER");
  time_t now = static_cast<time_t>(now_unix);
  if (X509_cmp_time(X509_get0_notBefore(cert.get()), &now) > 0)
    return bad_signature("the signing certificate is not valid yet (notBefore " +
                         iso8601(X509_get0_notBefore(cert.get())) + ")");
  if (X509_cmp_time(X509_get0_notAfter(cert.get()), &now) < 0)
    return bad_signature("the signing certificate expired (notAfter " + iso8601(X509_get0_notAfter(cert.get())) + ")");
  return {};
}

EifResult<CertificateInfo> certificate_info(std::span<const uint8_t> certificate_der) {
  const unsigned char* p = certificate_der.data();
  ossl::X509Ptr cert(d2i_X509(nullptr, &p, static_cast<long>(certificate_der.size())));
  if (!cert) return crypto("certificate DER");
  CertificateInfo info;
  ossl::BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || X509_NAME_print_ex(bio.get(), X509_get_issuer_name(cert.get()), 0, XN_FLAG_RFC2253) < 0)
    return crypto("issuer name");
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);
  info.issuer.assign(data, static_cast<size_t>(n));
  info.algorithm = OBJ_nid2ln(X509_get_signature_nid(cert.get()));
  info.not_before = iso8601(X509_get0_notBefore(cert.get()));
  info.not_after = iso8601(X509_get0_notAfter(cert.get()));
  const ASN1_BIT_STRING* sig = nullptr;
  X509_get0_signature(&sig, nullptr, cert.get());
  if (sig != nullptr) {
    const std::string h = hex({ASN1_STRING_get0_data(sig), static_cast<size_t>(ASN1_STRING_length(sig))});
    for (size_t i = 0; i < h.size(); i += 2) {
      if (i != 0) info.signature += ':';
      info.signature += h.substr(i, 2);
    }
  }
  return info;
}

}  // namespace azote::eif
