// The Nitro Secure Module API (ENCLAVES.md §3): the transport-independent engine a NSM
// card (virtio device 33) calls with each request buffer it pops from its virtqueue.
//
// DESIGN
// - State: 32 SHA-384 PCRs, each with a lock bit (ENCLAVES.md §2). PCRs 0..15 hold the
//   platform's measurements and are locked from the start; 16..31 start at Z, unlocked.
//   Locks are never undone (no reset). Version 1.0.0, digest "SHA384".
// - Wire: serde's externally tagged CBOR, as aws-nitro-enclaves-nsm-api's Request and
//   Response enums. Responses are encoded with libcbor's streaming encoder (no item
//   allocation), keys in the reference struct's field order, integers in their shortest
//   form, as ciborium/serde_cbor emit them.
// - Untrusted input: the request comes from the enclave. Over 4096 bytes → InputTooLarge.
//   Before libcbor builds anything a streaming pass refuses what is not exactly one
//   well-formed item, any tag, indefinite length or nesting deeper than 4, and any
//   array or map that declares more elements than bytes are left; only then cbor_load.
// - Decisions where the references are silent or disagree (QEMU = hw/virtio/virtio-nsm.c,
//   nsm-api = aws-nitro-enclaves-nsm-api src/api/mod.rs and nsm-test/src/bin/nsm-check.rs):
//   * Anything that does not decode as one of the request shapes (not CBOR, trailing
//     bytes, a top-level map of ≠ 1 entry, a non-text name, a known name in the wrong
//     form such as bare "ExtendPCR" or {"GetRandom": null}, a field of the wrong type,
//     a missing required field, an unknown or duplicated field, an index or range that
//     is not an unsigned integer ≤ 65535) → InvalidArgument, as nsm-api's ErrorCode
//     ("input argument(s) invalid") and serde's u16 / deny-duplicates behaviour; QEMU
//     answers InvalidOperation there. Unknown request names → InvalidOperation (both).
//     Integers in a longer-than-needed encoding are accepted (serde accepts them).
//   * Index ≥ 32 → InvalidIndex; LockPCRs{range > 32} → InvalidIndex (QEMU; nsm-check
//     only wants an error). LockPCRs locks [0, range) and is idempotent (nsm-check locks
//     32 after every PCR is already locked and expects success).
//   * LockPCR on any locked PCR (0..15, or 16..31 locked before) → ReadOnlyIndex (QEMU;
//     nsm-check wants an error for 0..15). ExtendPCR on a locked PCR → ReadOnlyIndex.
//   * ExtendPCR data: a byte string of any length the 4096-byte request can carry, empty
//     included (QEMU and nsm-api set no other bound); text is refused (the API says bstr;
//     QEMU also takes text).
//   * Attestation: each of user_data, nonce, public_key is a bstr or null, a missing key
//     is null (serde's Option). Over 1024 bytes (attest::kMaxOptional, ENCLAVES.md §1.2)
//     or an empty public_key (the format wants 1..1024) → InvalidArgument. The document's
//     PCRs are every locked one: 0..15 and the locked ones of 16..31 (§1.2, QEMU).
//     No signer → InvalidOperation ("missing capabilities"); the signer failing or
//     returning no bytes → InternalError.
//   * GetRandom: always 256 bytes from OpenSSL's RAND_bytes; its failure → InternalError.
//   * A response longer than `response_capacity` → {"Error":"BufferTooSmall"}, and the
//     request changes no state (the extend or lock is not done), so a retry is safe.
//     A capacity below kMinResponseCapacity cannot hold even that: the one case where
//     handle() returns no bytes (the card reports a device error).
// - Errors: handle() never throws and returns a response for every input; C++ allocation
//   failure terminates (noexcept), as elsewhere in azote. The signer must not throw.
// - Thread-safety: none. One Engine per enclave, called from one thread (the card's
//   virtqueue thread); the signer is called on that thread.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "attest/attest.hpp"
#include "base/error.hpp"

namespace azote::nsm {

enum class NsmErrc {
  kInvalid = 1,  // a construction parameter out of bounds (names which)
};
using NsmError = Error<NsmErrc>;
template <class T>
using NsmResult = Result<T, NsmError>;

using Bytes = attest::Bytes;
using Pcr = attest::Pcr;

// The error names on the wire (ENCLAVES.md §3), numbered as libnsm's C enum.
// InvalidResponse is the client's own (a reply that does not match the request); the
// engine never sends it.
enum class ErrorCode : uint8_t {
  kInvalidArgument = 1,
  kInvalidIndex = 2,
  kInvalidResponse = 3,
  kReadOnlyIndex = 4,
  kInvalidOperation = 5,
  kBufferTooSmall = 6,
  kInputTooLarge = 7,
  kInternalError = 8,
};
// "InvalidArgument", …; "InternalError" for a value outside the enum.
std::string_view error_name(ErrorCode code);

inline constexpr size_t kMaxRequestBytes = 0x1000;      // the driver's request limit
inline constexpr size_t kResponseBufferBytes = 0x3000;  // the driver's response buffer
inline constexpr size_t kRandomBytes = 256;             // per GetRandom
inline constexpr uint32_t kPlatformPcrs = 16;           // 0..15: the platform's, locked
inline constexpr size_t kMaxModuleId = 99;              // what libnsm's description holds
inline constexpr uint16_t kVersionMajor = 1;
inline constexpr uint16_t kVersionMinor = 0;
inline constexpr uint16_t kVersionPatch = 0;
// The length of {"Error":"BufferTooSmall"}: the smallest capacity that always gets a
// CBOR response.
inline constexpr size_t kMinResponseCapacity = 22;

// What the signer puts in the document besides the certificate, its bundle and the
// timestamp: the engine holds no key.
struct AttestationRequest {
  std::string module_id;
  std::map<uint32_t, Pcr> pcrs;  // every locked PCR: 0..15 and the locked ones of 16..31
  std::optional<Bytes> user_data;   // 0..1024 bytes
  std::optional<Bytes> nonce;       // 0..1024 bytes
  std::optional<Bytes> public_key;  // 1..1024 bytes
};
// Returns the COSE_Sign1 document (the bytes of the Attestation response's `document`)
// or why it could not.
using Signer = std::function<Result<Bytes, std::string>(const AttestationRequest&)>;

// A decoded request (nsm.cpp).
struct ParsedRequest;

struct PcrState {
  Pcr value{};
  bool locked = false;
};

class Engine {
 public:
  // `module_id`: 1..99 printable ASCII bytes. `platform_pcrs`: the values of PCRs 0..15
  // that are not Z (indexes < 16). `signer` may be empty: Attestation then answers
  // InvalidOperation.
  static NsmResult<Engine> create(std::string module_id, const std::map<uint32_t, Pcr>& platform_pcrs,
                                  Signer signer);

  // One request in, one CBOR response out, at most `response_capacity` bytes (empty only
  // when the capacity is below kMinResponseCapacity).
  [[nodiscard]] Bytes handle(std::span<const uint8_t> request, size_t response_capacity = kResponseBufferBytes) noexcept;

  // The register at `index` (< 32), nullopt past the bank.
  std::optional<PcrState> pcr(uint32_t index) const;
  const std::string& module_id() const { return module_id_; }
  // Why the last InternalError was answered (the signer's or OpenSSL's message), for the
  // card's log; the guest only ever sees the error name.
  const std::string& last_internal_error() const { return last_internal_error_; }

 private:
  Engine(std::string module_id, Signer signer) : module_id_(std::move(module_id)), signer_(std::move(signer)) {}
  Bytes dispatch(const ParsedRequest& r, size_t capacity);
  Bytes describe_nsm() const;
  Bytes attestation(const ParsedRequest& r);
  Bytes get_random();

  std::string module_id_;
  std::array<PcrState, attest::kPcrCount> pcrs_{};
  Signer signer_;
  std::string last_internal_error_;
};

}  // namespace azote::nsm
