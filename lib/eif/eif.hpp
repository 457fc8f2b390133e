// Enclave Image Files (EIF), the image format of AWS Nitro Enclaves, as
// ../shared/ref/ENCLAVES.md §4 describes it: a 548-byte big-endian header (magic ".eif",
// version 4, flags, default memory and CPUs, up to 32 section offsets and sizes, CRC-32
// over the header and every section), then sections of a 12-byte header and a payload:
// kernel, cmdline, metadata (JSON), ramdisks, and an optional signature (a CBOR array of
// {signing_certificate, signature: COSE_Sign1 over PCR0}).
//
// This library writes images the way nitro-cli's builder lays them out (so nitro-cli's
// reader, which decodes the signature's byte fields as arrays of integers, reads ours),
// reads them strictly (every offset, size, type, count and the CRC checked; nothing in
// the file is trusted before that), and computes the measurements an enclave's PCRs
// carry (ENCLAVES.md §2): PCR0 image, PCR1 kernel + cmdline + first ramdisk, PCR2 the
// other ramdisks, PCR8 the signing certificate. Only section payloads are hashed, so
// new metadata or a new signature never moves PCR0.
//
// The tests read what `build` writes with tests/tools/eif_reader.py, a reader written
// from the format description alone.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "attest/attest.hpp"
#include "base/error.hpp"

namespace azote::eif {

enum class EifErrc {
  kInvalid = 1,  // a build input out of bounds (names which)
  kFormat,       // bytes that are not a well-formed EIF (names the field and offset)
  kCrc,          // the CRC-32 does not match
  kSignature,    // the signature section does not decode, verify, or match PCR0
  kCrypto,       // OpenSSL failed on a key or certificate given to build
};
using EifError = Error<EifErrc>;
template <class T>
using EifResult = Result<T, EifError>;
using Bytes = std::vector<uint8_t>;
using attest::Pcr;

inline constexpr uint8_t kMagic[4] = {0x2e, 0x65, 0x69, 0x66};  // ".eif"
inline constexpr uint16_t kVersion = 4;
inline constexpr size_t kHeaderSize = 548;
inline constexpr size_t kSectionHeaderSize = 12;
inline constexpr size_t kMaxSections = 32;
inline constexpr uint16_t kFlagAarch64 = 1;

enum class SectionType : uint16_t { kInvalid = 0, kKernel = 1, kCmdline = 2, kRamdisk = 3, kSignature = 4, kMetadata = 5 };
const char* section_name(SectionType t);

// A local signing key and its certificate (PEM), as `build-enclave --signing-certificate
// --private-key`: an EC key on P-256, P-384 or P-521 (the COSE algorithm follows the curve).
struct Signer {
  std::string certificate_pem;
  std::string private_key_pem;
};

struct BuildSpec {
  Bytes kernel;                 // non-empty
  std::string cmdline;          // may be empty
  std::vector<Bytes> ramdisks;  // 1..30 (nitro-cli: bootstrap first, then the application)
  std::string metadata_json;    // the metadata section's payload: valid JSON, non-empty
  std::optional<Signer> signer;
  uint64_t default_mem = 1ull << 30;  // what nitro-cli's builder writes
  uint64_t default_cpus = 2;
};

struct Measurements {
  Pcr pcr0{}, pcr1{}, pcr2{};
  std::optional<Pcr> pcr8;  // signed images only
};

// The image: sections in file order; payload spans point into the bytes given to parse.
struct Section {
  SectionType type = SectionType::kInvalid;
  uint64_t offset = 0;  // of the section header
  std::span<const uint8_t> payload;
};
struct Image {
  uint16_t version = 0;
  uint16_t flags = 0;
  uint64_t default_mem = 0;
  uint64_t default_cpus = 0;
  uint32_t crc = 0;
  std::vector<Section> sections;
  std::span<const uint8_t> kernel;
  std::span<const uint8_t> cmdline;
  std::vector<std::span<const uint8_t>> ramdisks;
  std::optional<std::span<const uint8_t>> metadata;
  std::optional<std::span<const uint8_t>> signature;
};

// The signature section taken apart (one PCR signature, over PCR0).
struct Signature {
  std::string certificate_pem;
  Bytes certificate_der;
  attest::Sign1 cose;
  uint32_t register_index = 0;
  Pcr register_value{};
};

// Writes the image: header, kernel, cmdline, metadata, ramdisks, signature (if signed).
EifResult<Bytes> build(const BuildSpec& spec);

// Reads an image, checking: magic, version 4, num_sections 1..32, every section inside
// the file, after the header, in increasing offsets without overlap or gap, its header's
// size equal to the table's, a known type with zero flags; exactly one kernel, one
// cmdline, at least one ramdisk, at most one metadata and one signature; no bytes after
// the last section; the CRC-32. Signatures are decoded by `read_signature`, not here.
EifResult<Image> parse(std::span<const uint8_t> bytes);

// PCR0, PCR1, PCR2 from the sections; PCR8 when `signature` is given.
Measurements measure(const Image& image, const Signature* signature);
// PCR0/1/2 of the parts before they are written (what build-enclave prints).
Measurements measure(const BuildSpec& spec);
// nitro-cli `pcr --signing-certificate`: H(Z || H(DER)) of a PEM certificate.
EifResult<Pcr> pcr8_of_certificate(const std::string& certificate_pem);

EifResult<Signature> read_signature(std::span<const uint8_t> payload);
// The signature's COSE verifies with its certificate's key, it signs register 0 with the
// image's PCR0, and the certificate is valid at `now_unix`.
EifResult<void> verify_signature(const Signature& s, const Pcr& pcr0, int64_t now_unix);

// Facts of a certificate for describe-eif.
struct CertificateInfo {
  std::string issuer;      // one line, RFC 2253
  std::string algorithm;   // the certificate's signature algorithm, e.g. ecdsa-with-SHA384
  std::string not_before;  // ISO 8601 UTC
  std::string not_after;
  std::string signature;   // hex, colon-separated bytes
};
EifResult<CertificateInfo> certificate_info(std::span<const uint8_t> certificate_der);

std::string hex(std::span<const uint8_t> bytes);

}  // namespace azote::eif
