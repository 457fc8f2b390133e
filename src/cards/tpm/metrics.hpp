// The TPM card's counters (relaxed atomics: the TPM thread counts, the metrics thread
// and describe read) and their Prometheus text (exposition format 0.0.4), served like
// the block card's on a Unix socket by runtime::TextEndpoint.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

namespace azote::card_tpm {

struct TpmMetrics {
  std::atomic<uint64_t> commands{0};         // commands processed (whole, by libtpms)
  std::atomic<uint64_t> command_errors{0};   // of which answered with a response code other than 0
  std::atomic<uint64_t> state_writes{0};     // permanent states written to the state file
  std::atomic<uint64_t> state_write_errors{0};
  std::atomic<uint64_t> clients{0};          // gauge: connections on the data socket now
  std::atomic<uint64_t> connections{0};      // connections accepted
  std::atomic<uint64_t> refused_connections{0};  // closed at once: too many clients
  std::atomic<uint64_t> bad_commands{0};     // connections closed for a command size out of range
  std::atomic<uint64_t> open{0};             // gauge: 1 once a TPM is open
  std::atomic<uint64_t> attestations{0};     // TPM_CC_AZOTE_ATTEST commands answered
  std::atomic<uint64_t> attestation_errors{0};  // of which answered with a response code other than 0
  std::atomic<uint64_t> rot_requests{0};     // attest-tpm requests sent to azote-rot
  std::atomic<uint64_t> rot_connected{0};    // gauge: 1 while the --rot connection is usable
};

std::string render_prometheus(const TpmMetrics& m);

}  // namespace azote::card_tpm
