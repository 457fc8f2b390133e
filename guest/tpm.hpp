// A user-mode TPM 2.0 driver for the TCG PC Client PTP CRB interface (locality 0
// only; the flow of Linux's tpm_crb.c) and the few TPM 2.0 commands the programs
// send, encoded by hand (no TSS in a freestanding guest). Every device access is
// one 32-bit `mov` (each one is a VM exit). A response is copied once out of the
// device's buffer into the caller's and only that copy is parsed, strictly: a
// hostile device cannot make the guest read or write outside its buffers.
#pragma once

#include <cstddef>
#include <cstdint>

namespace az::tpm {

// QEMU's tpm-crb (and azote-hv's) window; an ACPI TPM2 table may name another.
inline constexpr uint64_t kCrbDefaultBase = 0xfed40000;
inline constexpr uint64_t kCrbWindow = 0x1000;

// TPM 2.0 Part 2 constants.
inline constexpr uint32_t kHeaderBytes = 10;  // tag u16, size u32, code u32
inline constexpr uint16_t kStNoSessions = 0x8001;
inline constexpr uint32_t kCcGetCapability = 0x17a;
inline constexpr uint32_t kCcPcrRead = 0x17e;
inline constexpr uint32_t kCapPcrs = 5;
inline constexpr uint32_t kRcValue = 0x084;
inline constexpr uint32_t kRcSize = 0x095;
inline constexpr uint32_t kRcInitialize = 0x100;  // no TPM2_Startup yet
inline constexpr uint32_t kRcFailure = 0x101;
inline constexpr uint32_t kRcCommandCode = 0x143;  // command not implemented
inline constexpr uint32_t kRcTesting = 0x90a;
inline constexpr uint32_t kRcRetry = 0x922;
inline constexpr uint16_t kAlgSha1 = 0x0004;
inline constexpr uint16_t kAlgSha256 = 0x000b;
inline constexpr uint16_t kAlgSha384 = 0x000c;
inline constexpr uint32_t kMaxDigestBytes = 48;
inline constexpr uint32_t kMaxReadDigests = 8;  // TPML_DIGEST in PCR_Read
inline constexpr uint32_t kMaxBanks = 16;

class Crb {
 public:
  enum class Open : uint8_t { kOk, kNoDevice, kBadDevice };
  enum class Err : uint8_t { kOk, kTooBig, kNotReady, kTimeout, kFatal, kBadSize };

  // Checks the interface at `base` (INTF_ID InterfaceType CRB, LOC_STATE
  // tpmRegValidSts within 1 s: else kNoDevice), takes locality 0, asks for
  // cmdReady and reads the buffer registers: kBadDevice (*why says) when locality 0
  // or cmdReady does not come within 1 s, or a buffer is unaligned, smaller than a
  // header, outside the device space between 3 and 4 GiB, over the registers
  // [base, base + 0x80) or partly overlapping the other.
  Open open(uint64_t base, const char** why);
  // One command: cmdReady, CTRL_CANCEL = 0, command written, CTRL_START = 1, wait
  // (10 s; on timeout CTRL_CANCEL = 1), CTRL_STS.tpmSts, the response copied into
  // rsp (its size field checked: >= 10, <= RSP_SIZE, <= cap), then goIdle. kOk:
  // *rsp_len = that size; the response code is not looked at.
  Err transact(const uint8_t* cmd, uint32_t cmd_len, uint8_t* rsp, uint32_t cap, uint32_t* rsp_len);
  // goIdle if needed, then locality 0 relinquished.
  void close();

  uint64_t base() const { return base_; }
  uint32_t intf_id() const { return intf_id_; }  // low half
  uint64_t cmd_addr() const { return cmd_; }
  uint32_t cmd_size() const { return cmd_size_; }
  uint64_t rsp_addr() const { return rsp_; }
  uint32_t rsp_size() const { return rsp_size_; }

 private:
  uint32_t rd(uint32_t reg) const;
  void wr(uint32_t reg, uint32_t v) const;
  // Polls until (reg & mask) == want, at most `ms` milliseconds.
  bool wait(uint32_t reg, uint32_t mask, uint32_t want, uint64_t ms) const;
  bool cmd_ready();
  void go_idle();

  uint64_t base_ = 0, cmd_ = 0, rsp_ = 0, hz_ = 0;
  uint32_t intf_id_ = 0, cmd_size_ = 0, rsp_size_ = 0;
  bool ready_ = false, locality_ = false;
};

const char* err_text(Crb::Err e);

// ----------------------------------------------------------------- commands
// Big-endian builders; `out` must hold 32 bytes. They return the length.
uint32_t cmd_get_capability_pcrs(uint8_t* out);
// PCR_Read of the PCRs in bitmap `pcrs` (bit i = PCR i, 0-23) of bank `hash`.
uint32_t cmd_pcr_read(uint8_t* out, uint16_t hash, uint32_t pcrs);

// TPM_CC_AZOTE_ATTEST (azote's vendor command, served by the TPM card): one chunk of
// the instance's attestation document. Command: header | u32 offset | u16 nonce_size |
// nonce (<= 64) | u16 user_data_size | user_data (<= 512). Response: header | u32 total
// | u16 chunk_size | document[offset, offset + chunk_size) (<= 2048 bytes).
inline constexpr uint32_t kCcAzoteAttest = 0x20000a01;
inline constexpr uint32_t kAttestMaxNonce = 64;
inline constexpr uint32_t kAttestMaxUserData = 512;
inline constexpr uint32_t kAttestMaxChunk = 2048;
inline constexpr uint32_t kAttestMaxDocument = 16384;  // the guest refuses larger
inline constexpr uint32_t kAttestCmdMax = kHeaderBytes + 4 + 2 + kAttestMaxNonce + 2 + kAttestMaxUserData;
// `out` must hold kAttestCmdMax bytes; nonce_len <= 64, user_data_len <= 512 (0 if not).
uint32_t cmd_azote_attest(uint8_t* out, uint32_t offset, const uint8_t* nonce, uint32_t nonce_len,
                          const uint8_t* user_data, uint32_t user_data_len);

// The response code of a response transact() returned (>= 10 bytes).
uint32_t response_code(const uint8_t* rsp);
// Digest bytes of sha1/sha256/sha384 (0 for any other algorithm); bank name.
uint32_t digest_bytes(uint16_t hash);
const char* alg_name(uint16_t hash);

// The parsers take a whole successful response (code 0) of n bytes and return
// nullptr, or what is wrong with it. Every field is bounds-checked, counts are
// capped, and the response must end exactly where its last field does.
struct Banks {
  uint32_t count = 0;
  struct {
    uint16_t hash;
    uint32_t pcrs;  // allocated PCRs 0-31 (bit i = PCR i)
  } bank[kMaxBanks];
};
// GetCapability(TPM_CAP_PCRS): moreData, capability 5, TPML_PCR_SELECTION
// (count <= 16, sizeofSelect 1-8, no bank listed twice).
const char* parse_cap_pcrs(const uint8_t* r, uint32_t n, Banks* out);

struct PcrValues {
  uint32_t pcrs = 0;   // the PCRs returned (bit i = PCR i), ascending in digest[]
  uint32_t count = 0;  // digests
  uint8_t digest[kMaxReadDigests][kMaxDigestBytes];
};
// PCR_Read of bank `hash`, PCRs `asked`: pcrUpdateCounter, pcrSelectionOut (0 or 1
// selection, of `hash`, a subset of `asked`), TPML_DIGEST (<= 8, as many as PCRs
// selected, each exactly digest_bytes(hash) long).
const char* parse_pcr_read(const uint8_t* r, uint32_t n, uint16_t hash, uint32_t asked, PcrValues* out);

struct AttestChunk {
  uint32_t total = 0;             // the document's length
  uint32_t size = 0;              // chunk_size
  const uint8_t* data = nullptr;  // inside r: document[offset, offset + size)
};
inline constexpr uint32_t kAttestAnyTotal = ~0u;
// TPM_CC_AZOTE_ATTEST for `offset`: total <= 16384 and equal to `want_total` (unless
// kAttestAnyTotal: the first chunk), offset <= total, chunk_size <= 2048 and <= total -
// offset, chunk_size >= 1 unless offset == total, nothing after the chunk.
const char* parse_attest_chunk(const uint8_t* r, uint32_t n, uint32_t offset, uint32_t want_total, AttestChunk* out);

}  // namespace az::tpm
