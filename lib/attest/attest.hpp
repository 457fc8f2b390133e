// Attestation documents in the format of AWS Nitro (ENCLAVES.md §1, the NSM API's
// AttestationDoc): a COSE_Sign1 (RFC 9052) signed with ES384, whose payload is a CBOR map
// of the module id, "SHA384", a millisecond timestamp, the PCRs, the signing certificate,
// the CA bundle (root first) and the optional public key, user data and nonce. CBOR is
// encoded and decoded by libcbor, never by hand; signatures are OpenSSL's.
//
// PCRs follow ENCLAVES.md §2: 32 SHA-384 registers starting at 48 zero bytes,
// extend(x) = SHA-384(old || x). What each register of an azote instance measures is in
// docs/design.md ("Measurements"); this library only does the arithmetic and the format.
//
// Signing lives with the key (azote-rot): this library builds the bytes to sign
// (`to_be_signed`) and wraps a signature around them (`sign1`), so no private key ever
// passes through it.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "base/error.hpp"

namespace azote::attest {

enum class AttestErrc {
  kInvalid = 1,  // a field out of the format's bounds (names which)
  kCbor,         // bytes that are not the CBOR this format needs (names where)
  kCrypto,       // OpenSSL failed, or a signature does not verify
};
using AttestError = Error<AttestErrc>;
template <class T>
using AttestResult = Result<T, AttestError>;

inline constexpr size_t kPcrBytes = 48;  // SHA-384
inline constexpr uint32_t kPcrCount = 32;
using Pcr = std::array<uint8_t, kPcrBytes>;
using Bytes = std::vector<uint8_t>;

// The register after extending `old` with `data`: SHA-384(old || data).
Pcr extend(const Pcr& old, std::span<const uint8_t> data);
// A register extended once from zero with SHA-384(data): how a measured blob (a kernel,
// a binary) enters a PCR, as nitro-cli's `pcr --input`.
Pcr measure_digest_of(std::span<const uint8_t> data);
// SHA-384 of the parts one after the other (kernel || cmdline || initrd).
Pcr sha384_of(std::initializer_list<std::span<const uint8_t>> parts);

// SHA-384 fed in parts; digest() is that of everything fed so far and the stream goes on,
// so the digests of a prefix and of the whole take one pass over the bytes.
class Sha384 {
 public:
  Sha384();
  ~Sha384();
  Sha384(const Sha384&) = delete;
  Sha384& operator=(const Sha384&) = delete;
  void update(std::span<const uint8_t> bytes);
  Pcr digest() const;

 private:
  void* ctx_;  // EVP_MD_CTX
};

// Limits of the format (ENCLAVES.md §1.2).
inline constexpr size_t kMaxPayload = 16384;
inline constexpr size_t kMaxCert = 1024;
inline constexpr size_t kMaxOptional = 1024;  // user_data, nonce, public_key

struct Document {
  std::string module_id;           // non-empty
  uint64_t timestamp_ms = 0;       // > 0, UTC milliseconds since the epoch
  std::map<uint32_t, Pcr> pcrs;    // 1..32 entries, indexes < 32
  // The PCR map's key: "pcrs" (an enclave's, an instance's) or "nitrotpm_pcrs" (a
  // NitroTPM's document: the instance's TPM's SHA-384 bank, ENCLAVES.md §8).
  std::string pcrs_key = "pcrs";
  Bytes certificate;               // DER of the leaf that signs, 1..1024 bytes
  std::vector<Bytes> cabundle;     // DER, root first, >= 1 entries, each 1..1024 bytes
  std::optional<Bytes> public_key; // 1..1024 bytes when present
  std::optional<Bytes> user_data;  // 0..1024 bytes
  std::optional<Bytes> nonce;      // 0..1024 bytes
};

// Checks every bound above; names the first field out of them.
AttestResult<void> validate(const Document& d);

// The payload: the CBOR map, keys in the reference encoder's order, the three optional
// fields as CBOR null when absent.
AttestResult<Bytes> encode_payload(const Document& d);

// The protected header: the CBOR map {1: -35} (ES384) as its encoded bytes.
Bytes protected_header();

// What the signature covers (RFC 9052 §4.4): the CBOR array
// ["Signature1", protected_header(), h'', payload].
AttestResult<Bytes> to_be_signed(std::span<const uint8_t> payload);

// A DER ECDSA-SHA384 signature (what OpenSSL and lib/dice produce) as COSE's fixed-size
// r || s (48 bytes each, big-endian, left-padded).
AttestResult<Bytes> der_to_raw_p384(std::span<const uint8_t> der);

// The COSE_Sign1 document: [protected, {}, payload, signature], untagged as the NSM emits
// it. `raw_signature` is r || s (96 bytes).
AttestResult<Bytes> sign1(std::span<const uint8_t> payload, std::span<const uint8_t> raw_signature);

// A document taken apart: the envelope's parts and the payload's fields, every bound of
// ENCLAVES.md §1 checked (tagged 18 or untagged). Nothing here trusts the certificates:
// `verify_signature` checks the signature with the key of `document.certificate`; the
// chain to a pinned root is the verifier's job (tests/tools/verify_attestation.py
// follows AWS's procedure).
struct Parsed {
  Bytes protected_bytes;
  Bytes payload;
  Bytes signature;  // r || s
  Document document;
};
AttestResult<Parsed> parse(std::span<const uint8_t> cose);
AttestResult<void> verify_signature(const Parsed& p);

// COSE_Sign1 for any ECDSA curve (RFC 9053): what signs an EIF (ENCLAVES.md §4: the
// signing key's curve picks the algorithm). The document functions above are these with
// ES384.
enum class CoseAlg : int { kEs256 = -7, kEs384 = -35, kEs512 = -36 };
size_t coordinate_bytes(CoseAlg alg);  // 32, 48, 66: half of a raw r || s
// The CoseAlg of an EC key of `bits` (256, 384, 521), or kInvalid.
AttestResult<CoseAlg> cose_alg_for_bits(int bits);
Bytes protected_header(CoseAlg alg);  // {1: alg}
AttestResult<Bytes> to_be_signed(std::span<const uint8_t> protected_bytes, std::span<const uint8_t> payload);
AttestResult<Bytes> der_to_raw(std::span<const uint8_t> der, CoseAlg alg);
AttestResult<Bytes> sign1(CoseAlg alg, std::span<const uint8_t> payload, std::span<const uint8_t> raw_signature);
struct Sign1 {
  CoseAlg alg = CoseAlg::kEs384;
  Bytes protected_bytes;
  Bytes payload;
  Bytes signature;  // r || s
};
// The envelope (tagged 18 or not) of at most `max_payload` bytes of payload; the
// protected header must be exactly {1: alg} of a CoseAlg.
AttestResult<Sign1> parse_sign1(std::span<const uint8_t> cose, size_t max_payload);
// Checks the signature with the key of a DER X.509 certificate, whose curve must be the
// algorithm's.
AttestResult<void> verify_sign1(const Sign1& s, std::span<const uint8_t> certificate_der);

}  // namespace azote::attest
