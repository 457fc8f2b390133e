// Measured boot into a TPM 2.0, as a platform's firmware does it before the OS runs:
// TPM2_Startup(CLEAR), then one TPM2_PCR_Extend per measured part carrying the part's
// digest for every PCR bank the TPM has allocated (a bank left out would stay forgeable
// by the OS). Commands are marshalled by tss2-sys (tpm2-tss), sent over a Link.
//
// Which PCR measures what follows the TCG PC Client convention as a Unified Kernel Image
// boot uses it (and NitroTPM's attestable AMIs pin): PCR 4 the kernel image (boot
// code), PCR 9 the initrd, PCR 12 the kernel command line (the image's own; not what
// the platform appends). docs/design.md "NitroTPM".
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "tpm/link.hpp"

namespace azote::tpm {

inline constexpr uint32_t kPcrKernel = 4;
inline constexpr uint32_t kPcrInitrd = 9;
inline constexpr uint32_t kPcrCmdline = 12;

// TPM_ALG_ID of the banks this code can extend.
inline constexpr uint16_t kAlgSha1 = 0x0004, kAlgSha256 = 0x000B, kAlgSha384 = 0x000C, kAlgSha512 = 0x000D;
const char* bank_name(uint16_t alg);  // "sha256", ...; "" for another

// One measured part: its PCR, what it is, and its digest in every algorithm above.
struct Event {
  uint32_t pcr = 0;
  std::string what;
  std::map<uint16_t, std::vector<uint8_t>> digests;  // by TPM_ALG_ID
};
TpmResult<Event> measure(uint32_t pcr, std::string what, std::span<const uint8_t> data);

// PCR := H(PCR || digest) in the bank's algorithm (what the TPM does on an extend).
TpmResult<std::vector<uint8_t>> extend(uint16_t alg, std::span<const uint8_t> pcr, std::span<const uint8_t> digest);

struct Booted {
  std::vector<uint16_t> banks;  // the TPM's allocated banks, each extended with every event
};
// TPM2_Startup(CLEAR) (a TPM already started since its last reset is refused: the PCRs
// would not start from zero), then every event into every allocated bank (a bank whose
// algorithm has no digest here is an error: the boot is not measured), then the platform
// hierarchy disabled, as firmware leaves it to the OS. `timeout` bounds the whole boot;
// `cancel` (checked as the Link does) ends it early.
TpmResult<Booted> measure_boot(Link& link, std::span<const Event> events, std::chrono::milliseconds timeout,
                               const std::atomic<bool>* cancel = nullptr);

}  // namespace azote::tpm
