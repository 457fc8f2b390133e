// A polling, user-mode driver for the Nitro Secure Module (virtio device 33,
// ENCLAVES.md §3) over virtio-mmio version 2, and the few CBOR shapes its API needs,
// encoded and decoded by hand (no libcbor in a freestanding guest).
//
// Transport, as Linux's drivers/misc/nsm.c and QEMU's hw/virtio/virtio-nsm.c have it:
// one virtqueue (0), no config space, VERSION_1 required. A call is two chains of one
// descriptor each, queued in this order and published together: the request (device-
// readable, 1-4096 bytes of CBOR) and the response buffer (device-writable, exactly
// 0x3000 bytes). The device completes both: the request with used len 0, the response
// with the length of the one CBOR item it wrote. Nothing else is in flight, so the
// queue has 2 entries. Both buffers come from platform::alloc_io (memory the card maps).
//
// The device is untrusted: the used ids must be the two heads in flight, each once; the
// request's used len must be 0 and the response's 1..0x3000; the response is copied
// once out of the shared buffer into the caller's and only that copy is parsed, every
// length checked against the length the device reported. Nothing on the data path
// enters CPL0; the only MMIO accesses are the QueueNotify write and, every 100 ms
// while a call waits, one Status read.
#pragma once

#include <cstddef>
#include <cstdint>

#include "rt.hpp"
#include "virtio.hpp"

namespace az::nsm {

inline constexpr uint32_t kRequestMax = 0x1000;     // the API's request limit
inline constexpr uint32_t kResponseBytes = 0x3000;  // the response buffer, exactly
// nsm-raw may send more than kRequestMax on purpose (the device must refuse it).
inline constexpr uint32_t kRawRequestMax = 0x4000;
inline constexpr uint64_t kCallTimeoutS = 10;  // attestation is a round trip to another process

// A byte string inside a response copy (or the caller's memory).
struct Bytes {
  const uint8_t* p = nullptr;
  uint32_t n = 0;
};

class Device {
 public:
  enum class Open { kOk, kNoDevice, kFailed };
  // Finds the first usable virtio-nsm device among the command line's
  // virtio_mmio.device= windows (a legacy version 1 one is reported and skipped) and
  // brings it to DRIVER_OK. kFailed: the device refused the setup (FAILED is set;
  // append_error() says why).
  Open open();

  // One call: `req` (1..kRawRequestMax bytes) into the shared request buffer, both
  // chains published, then a bounded wait (kCallTimeoutS) for both completions. On
  // success the response is copied into rsp (room for kResponseBytes), *rsp_len is its
  // length (1..kResponseBytes) and *ticks the TSC time from publishing to the second
  // completion. False on device trouble (append_error() says what); the device is then
  // left as it is (the programs end).
  bool call(const uint8_t* req, uint32_t req_len, uint8_t* rsp, uint32_t* rsp_len, uint64_t* ticks);

  // "virtio-nsm at 0xBASE: WHAT[ 0xVALUE]" for the last failure.
  Line& append_error(Line& l) const;
  // "virtio-nsm at 0xBASE irq=N features=0x.. queue_size=S".
  Line& append_description(Line& l) const;

 private:
  bool setup();
  bool fail(const char* what, uint64_t value = ~0ull);
  bool setup_failed(const char* what, uint64_t value = ~0ull);

  virtio::MmioDevice dev_;
  virtio::SplitQueue q_;
  uint64_t base_ = 0;
  uint32_t irq_ = 0;
  uint64_t features_ = 0;
  uint64_t req_buf_ = 0, rsp_buf_ = 0;  // shared buffers (alloc_io)
  uint64_t tsc_hz_ = 0;
  const char* err_what_ = "";
  uint64_t err_value_ = ~0ull;
};

// ------------------------------------------------------------- CBOR requests
// Each writes one request into out (cap bytes) and returns its length; 0 if it does
// not fit. Definite lengths, shortest encodings, keys in the order of the reference
// structs (aws-nitro-enclaves-nsm-api's Request enum, serde externally tagged).
uint32_t req_describe_nsm(uint8_t* out, uint32_t cap);  // "DescribeNSM"
uint32_t req_get_random(uint8_t* out, uint32_t cap);    // "GetRandom"
uint32_t req_describe_pcr(uint8_t* out, uint32_t cap, uint16_t index);
uint32_t req_extend_pcr(uint8_t* out, uint32_t cap, uint16_t index, Bytes data);
uint32_t req_lock_pcr(uint8_t* out, uint32_t cap, uint16_t index);
uint32_t req_lock_pcrs(uint8_t* out, uint32_t cap, uint16_t range);
// An absent field (p == nullptr) is CBOR null; n may be 0 with a non-null p (empty bstr).
uint32_t req_attestation(uint8_t* out, uint32_t cap, Bytes user_data, Bytes nonce, Bytes public_key);

// ------------------------------------------------------------ CBOR responses
// Each parses a whole response (rsp[0, len): one CBOR item, nothing after it) as the
// answer to its request. nullptr: parsed, the outputs filled (byte strings point into
// rsp). Otherwise the text for "PROG error: TEXT", in a static buffer until the next
// parse: the device's error name for {"Error": NAME} ("ReadOnlyIndex"), else
// "malformed response: WHY". Unknown fields are skipped; a known field twice, a
// missing one, a wrong type, an out-of-range value, a tag, an indefinite length or
// nesting deeper than 8 is malformed.
inline constexpr uint32_t kMaxModuleId = 99;  // libnsm's description holds 99 characters
inline constexpr uint32_t kMaxLocked = 64;    // and 64 locked PCRs
inline constexpr uint32_t kMaxRandom = 256;   // GetRandom's bytes per call

struct Description {
  uint16_t major = 0, minor = 0, patch = 0;
  Str module_id;  // 1..99 bytes of printable ASCII
  uint16_t max_pcrs = 0;
  uint16_t locked[kMaxLocked] = {};  // each < max_pcrs, in the device's order
  uint32_t nlocked = 0;
  Str digest;  // "SHA256", "SHA384" or "SHA512"
};

const char* parse_describe_nsm(const uint8_t* rsp, uint32_t len, Description* out);
// DescribePCR {lock: bool, data: bstr of 32, 48 or 64 bytes}.
const char* parse_describe_pcr(const uint8_t* rsp, uint32_t len, bool* locked, Bytes* data);
// ExtendPCR {data: bstr of 32, 48 or 64 bytes}: the new value.
const char* parse_extend_pcr(const uint8_t* rsp, uint32_t len, Bytes* data);
// The bare text `name` ("LockPCR", "LockPCRs").
const char* parse_unit(const uint8_t* rsp, uint32_t len, const char* name);
// GetRandom {random: bstr of 0..256 bytes}.
const char* parse_get_random(const uint8_t* rsp, uint32_t len, Bytes* random);
// Attestation {document: bstr of at least 1 byte}: the COSE_Sign1 document.
const char* parse_attestation(const uint8_t* rsp, uint32_t len, Bytes* document);

}  // namespace az::nsm
