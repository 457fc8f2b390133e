#include "cards/tpm/metrics.hpp"

#include "runtime/runtime.hpp"

namespace azote::card_tpm {

std::string render_prometheus(const TpmMetrics& m) {
  runtime::PromText t;
  auto one = [&t](const char* name, const char* type, const char* help, const std::atomic<uint64_t>& v) {
    t.header(name, type, help);
    t.sample(name, "", v.load(std::memory_order_relaxed));
  };
  one("azote_tpm_open", "gauge", "1 once the instance's TPM is open (its state loaded or manufactured).", m.open);
  one("azote_tpm_commands_total", "counter", "TPM commands processed.", m.commands);
  one("azote_tpm_command_errors_total", "counter", "TPM commands answered with a response code other than 0.",
      m.command_errors);
  one("azote_tpm_state_writes_total", "counter", "Permanent states written (encrypted) to the state file.",
      m.state_writes);
  one("azote_tpm_state_write_errors_total", "counter", "Permanent states that could not be written.",
      m.state_write_errors);
  one("azote_tpm_clients", "gauge", "Connections on the TPM data socket now.", m.clients);
  one("azote_tpm_connections_total", "counter", "Connections accepted on the TPM data socket.", m.connections);
  one("azote_tpm_refused_connections_total", "counter", "Connections closed at once: the card had too many clients.",
      m.refused_connections);
  one("azote_tpm_bad_commands_total", "counter",
      "Connections closed for a command whose size is out of range (under 10 bytes or over the buffer size).",
      m.bad_commands);
  one("azote_tpm_attestations_total", "counter",
      "Attestation vendor commands (TPM_CC_AZOTE_ATTEST) answered, errors included.", m.attestations);
  one("azote_tpm_attestation_errors_total", "counter",
      "Attestation vendor commands answered with a response code other than 0.", m.attestation_errors);
  one("azote_tpm_rot_requests_total", "counter", "Attestation documents asked of azote-rot.", m.rot_requests);
  one("azote_tpm_rot_connected", "gauge",
      "1 while the card has a usable connection to azote-rot (--rot), 0 without one or once it is gone.",
      m.rot_connected);
  return t.take();
}

}  // namespace azote::card_tpm
