// The guest's attestation request, NitroTPM-style: the vendor command
// TPM_CC_AZOTE_ATTEST (0x20000A01), taken by the card before libtpms sees it. The card
// reads the TPM's own sha384 PCRs 0-23 through libtpms, asks azote-rot (the host's root
// of trust, over the --rot connection the launcher bound to this instance) for an
// attestation document (COSE_Sign1) carrying them, the nonce and the user data, and
// hands it to the guest in chunks of at most 2048 bytes (a document of ~5 KiB does not
// fit one TPM response). See DESIGN.md, "Attestation (vendor command)".
//
// Command (big-endian): header (tag TPM_ST_NO_SESSIONS) | u32 offset | u16 nonce_size |
// nonce (0..64) | u16 user_data_size | user_data (0..512); commandSize = bytes parsed.
// Response: header | u32 total | u16 chunk_size | document[offset, offset + chunk_size),
// chunk_size = min(2048, total - offset); errors are a bare 10-byte header.
// Offset 0 asks azote-rot for a fresh document and caches it with its nonce and user
// data; offset > 0 is served from that cache only for the same nonce and user data.
//
// Everything here runs on the card's "tpm" thread (libtpms and the azote-rot socket
// alike), one command at a time.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "cards/tpm/error.hpp"
#include "cards/tpm/metrics.hpp"
#include "rot_link/rot_link.hpp"

namespace azote::card_tpm {

inline constexpr uint32_t kTpmCcAzoteAttest = 0x20000A01;  // vendor bit 0x20000000
inline constexpr uint16_t kTpmStNoSessions = 0x8001;
inline constexpr uint32_t kTpmRcBadTag = 0x01E;
inline constexpr uint32_t kTpmRcValue = 0x084;
inline constexpr uint32_t kTpmRcSize = 0x095;
inline constexpr uint32_t kTpmRcInitialize = 0x100;
inline constexpr size_t kAttestMaxNonce = 64;
inline constexpr size_t kAttestMaxUserData = 512;
inline constexpr uint32_t kAttestChunkBytes = 2048;
inline constexpr size_t kPcrCount = 24;
inline constexpr size_t kSha384Bytes = 48;

// Whether a whole command (header included) is TPM_CC_AZOTE_ATTEST.
bool is_attest_command(std::span<const uint8_t> command);

struct AttestRequest {
  uint32_t offset = 0;
  std::vector<uint8_t> nonce;
  std::vector<uint8_t> user_data;
};
struct AttestParsed {
  uint32_t rc = 0;  // 0, or what to answer: TPM_RC_BAD_TAG, TPM_RC_SIZE
  AttestRequest request;
};
// Parses a whole TPM_CC_AZOTE_ATTEST command. TPM_RC_SIZE for a nonce or user data over
// its limit, a command that ends before its fields do, or a commandSize (or span) other
// than exactly the bytes parsed.
AttestParsed parse_attest_command(std::span<const uint8_t> command);

// A bare response: tag TPM_ST_NO_SESSIONS, responseSize 10, `rc`.
std::vector<uint8_t> tpm_error_response(uint32_t rc);
// The success response carrying document[offset, offset + min(2048, total - offset)),
// or a bare TPM_RC_VALUE when offset > document.size().
std::vector<uint8_t> attest_chunk_response(std::span<const uint8_t> document, uint32_t offset);

// TPM2_PCR_Read of the sha384 PCRs whose bits are set in `mask` (bit i: PCR i, 0-23).
std::vector<uint8_t> pcr_read_sha384_command(uint32_t mask);
using Sha384Pcrs = std::array<std::array<uint8_t, kSha384Bytes>, kPcrCount>;
// Parses a TPM2_PCR_Read response: the digests it carries go into `pcrs`, their bits
// into *got (0 if the sha384 bank gave none). Returns the response's code, or
// TPM_RC_FAILURE with *why for a malformed response.
uint32_t parse_pcr_read_sha384(std::span<const uint8_t> response, Sha384Pcrs* pcrs, uint32_t* got, std::string* why);

// Runs one whole TPM command (libtpms); the response stays valid until the next call.
using TpmProcess = std::function<std::span<const uint8_t>(std::span<uint8_t> command)>;
// Reads sha384 PCRs 0-23 through `process` (as many PCR_Read as needed: the TPM returns
// at most 8 digests a call). 0, the TPM's code (TPM_RC_INITIALIZE before TPM2_Startup),
// or TPM_RC_FAILURE with *why (bank not allocated, a PCR missing).
uint32_t read_sha384_pcrs(const TpmProcess& process, Sha384Pcrs* pcrs, std::string* why);

class Attestor {
 public:
  // `rot` may be null (no --rot): every offset-0 request then fails (TPM_RC_FAILURE).
  Attestor(TpmProcess process, rot_link::RotClient* rot, TpmMetrics& metrics)
      : process_(std::move(process)), rot_(rot), metrics_(metrics) {}
  ~Attestor();  // wipes the cached request and document
  // Answers one whole TPM_CC_AZOTE_ATTEST command; valid until the next call. Never throws.
  std::span<const uint8_t> handle(std::span<const uint8_t> command);

 private:
  std::vector<uint8_t> answer(std::span<const uint8_t> command);
  std::vector<uint8_t> fresh_document(const AttestRequest& r);  // empty: failed (logged)
  void forget();
  TpmProcess process_;
  rot_link::RotClient* rot_;
  TpmMetrics& metrics_;
  bool cached_ = false;
  uint32_t fresh_rc_ = 0;  // why fresh_document() failed
  std::vector<uint8_t> nonce_, user_data_, document_;
  std::vector<uint8_t> response_;
};

}  // namespace azote::card_tpm
