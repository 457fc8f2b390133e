// DICE layering (TCG DICE; the Open Profile for DICE's derivation) for azote's root of
// trust: a chain of layers, each with a secret (its CDI, Compound Device Identifier)
// derived from the layer below's and the measurement of its own code and config, a
// P-384 key pair derived from that secret, and an X.509 certificate signed by the key
// of the layer below.
//
//   CDI_0 = UDS (the host's unique device secret; layer 0 is the device itself)
//   CDI_n = HKDF-SHA384(ikm = CDI_{n-1}, salt = measurement_n, info = "azote DICE CDI")
//   key_n = P-384 private scalar d = s mod (n - 1) + 1, s the 64 bytes of
//           HKDF-SHA384(ikm = CDI_n, no salt, info = "azote DICE key P-384")
//   measurement_n = SHA-384("azote DICE measurement" 0x00 || code digest || config digest
//                           || mode byte)
//
// A layer's identity (its CDI and its key pair) is a pure function of the UDS and the
// measurements of it and every layer below: change one byte of any layer's code,
// config or mode and that layer's identity changes, and so does every layer's above it,
// while the layers below keep theirs. The last layer's key is the host's attestation key.
//
// Certificates: layer 0's is self-signed (the device identity, to be endorsed by a
// fleet root later); layer n's is issued by layer n-1's key, subject "azote DICE
// layer n: NAME", serial from its public key, valid from `not_before` with no expiry
// (99991231235959Z, RFC 5280 §4.1.2.5), CA for every layer but the last, and carries the
// TCG DiceTcbInfo extension (2.23.133.5.4.1, not critical so that generic verifiers such
// as `openssl verify` accept the chain) with the layer index, its name as model, its
// measurement as a SHA-384 FWID and the debug flag for development mode. The DER of
// that extension is built by OpenSSL's ASN1_generate_nconf, not by hand.
//
// Secrets (the UDS, CDIs, private keys) stay inside this library's objects and are wiped
// when they go; nothing here reads or writes files (azote-rot keeps the UDS).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "base/error.hpp"

namespace azote::dice {

enum class DiceErrc {
  kInvalid = 1,  // a bad argument (empty name, no layers, a name too long)
  kCrypto,       // OpenSSL failed (the context carries its error string)
  kIo,           // reading a file to hash failed (errnum set)
};
using DiceError = Error<DiceErrc>;
template <class T>
using DiceResult = Result<T, DiceError>;

inline constexpr size_t kDigestBytes = 48;  // SHA-384
using Digest = std::array<uint8_t, kDigestBytes>;

Digest sha384(std::span<const uint8_t> bytes);
// SHA-384 of what `fd` reads from offset 0 (pread: its file position is left alone): a
// binary's code digest, the same that a release manifest names (lib/release).
DiceResult<Digest> sha384_fd(int fd);

// The Open Profile for DICE's modes.
enum class Mode : uint8_t {
  kNotConfigured = 0,
  kNormal = 1,
  kDebug = 2,  // development: an unsigned build/ tree, debug tooling; shown in the certificate
  kRecovery = 3,
};

// What a layer is, as measured by the layer below: the digests of its code (the binary
// or image) and of its configuration, and its mode.
struct LayerInput {
  std::string name;  // 1..64 characters, for the certificate ("azote-launcher", "azote-hv")
  Digest code{};
  Digest config{};
  Mode mode = Mode::kNormal;
};

Digest measure(const LayerInput& layer);

// A secret of kDigestBytes, wiped when it goes.
class Secret {
 public:
  Secret() = default;
  explicit Secret(std::span<const uint8_t, kDigestBytes> bytes);
  Secret(const Secret&) = delete;
  Secret& operator=(const Secret&) = delete;
  Secret(Secret&& o) noexcept;
  Secret& operator=(Secret&& o) noexcept;
  ~Secret();
  std::span<const uint8_t, kDigestBytes> bytes() const { return bytes_; }
  bool operator==(const Secret& o) const;

 private:
  std::array<uint8_t, kDigestBytes> bytes_{};
};

// CDI_n from CDI_{n-1} and measurement_n.
DiceResult<Secret> next_cdi(const Secret& previous, const Digest& measurement);

// A P-384 key pair derived from a CDI (OpenSSL EVP_PKEY inside).
class KeyPair {
 public:
  KeyPair() = default;  // empty: no key until derive()
  static DiceResult<KeyPair> derive(const Secret& cdi);
  KeyPair(KeyPair&&) noexcept;
  KeyPair& operator=(KeyPair&&) noexcept;
  ~KeyPair();
  // The public key as SubjectPublicKeyInfo DER: the layer's identity.
  const std::vector<uint8_t>& public_der() const { return public_der_; }
  // ECDSA-SHA384 signature (DER) of `message`.
  DiceResult<std::vector<uint8_t>> sign(std::span<const uint8_t> message) const;
  void* pkey() const { return pkey_; }  // EVP_PKEY*, for this library's certificates

 private:
  void* pkey_ = nullptr;
  std::vector<uint8_t> public_der_;
};

struct Layer {
  std::string name;
  Digest measurement{};  // zero for layer 0 (the device: its CDI is the UDS)
  Mode mode = Mode::kNormal;
  Secret cdi;
  KeyPair key;
  std::string cert_pem;
  std::vector<uint8_t> cert_der;  // the same certificate, DER
};

class Chain {
 public:
  // Layer 0 ("device", CDI = uds) and one layer per input, in order. `not_before_unix`
  // starts every certificate's validity.
  static DiceResult<Chain> build(const Secret& uds, std::span<const LayerInput> layers, int64_t not_before_unix);
  const std::vector<Layer>& layers() const { return layers_; }
  // The host's attestation key: the last layer's.
  const KeyPair& attestation_key() const { return layers_.back().key; }
  // Every certificate, leaf (the last layer) first, PEM, concatenated.
  std::string chain_pem() const;

 private:
  std::vector<Layer> layers_;
};

}  // namespace azote::dice
