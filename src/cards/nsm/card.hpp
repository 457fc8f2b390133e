// azote-card-nsm: one enclave's Nitro Secure Module (ENCLAVES.md §3), a virtio device
// (ID 33, one queue) served over vhost-user to the enclave's azote-hv. The card holds
// no key: the PCRs are its state (lib/nsm), documents are signed by azote-rot over the
// --rot connection the launcher bound to this enclave (module id, debug mode: the
// binding's, never the card's choice).
//
// Platform PCRs (§2), locked before the enclave runs: 0/1/2 from the EIF the enclave
// boots (lib/eif, the same file azote-hv loads), 3 the parent's IAM role (--parent-role,
// zero without one), 4 the parent instance's id (the prefix of --enclave-id), 8 the
// EIF's signing certificate (zero when unsigned).
//
// Threads: main runs the vhost-user control socket and the signals; the "queue" thread
// (started with the queue, stopped before queue_stopped returns) pops each request,
// copies it once out of guest memory, lets the engine answer (the attestation waits on
// azote-rot, at most 10 s), copies the response into the chain's writable buffers.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/error.hpp"
#include "base/unique_fd.hpp"
#include "nsm/nsm.hpp"
#include "runtime/runtime.hpp"
#include "vhost_user/device.hpp"

namespace azote::rot_link {
class RotClient;
}

namespace azote::card_nsm {

enum class CardErrc { kUsage = 1, kImage, kHost };
using CardError = Error<CardErrc>;
template <class T>
using CardResult = Result<T, CardError>;

struct CardOptions {
  std::string socket;       // --socket PATH: the vhost-user socket azote-hv connects to
  std::string eif;          // --eif PATH|fd:N
  std::string enclave_id;   // --enclave-id i-<17 hex>-enc<16 hex>
  std::string parent_role;  // --parent-role ARN ("" = none: PCR3 zero)
  int rot_fd = -1;          // --rot fd:N: a connection to azote-rot bound to this enclave
  std::string log_level = "info";
  std::string seccomp = "kill";
};
struct ParsedArgs {
  CardOptions options;
  bool help = false;
  bool version = false;
};
CardResult<ParsedArgs> parse_args(const std::vector<std::string>& args);
const char* usage_text();

// The platform's PCRs of an enclave: 0, 1, 2 (and 8) of its image, 3 and 4 of its parent.
CardResult<std::map<uint32_t, attest::Pcr>> platform_pcrs(const CardOptions& o);

// The vhost-user device: VERSION_1, one queue, no config space (an empty one is
// answered: the CONFIG protocol feature is what azote-hv needs of every card).
class NsmDevice final : public vhost_user::Device {
 public:
  explicit NsmDevice(nsm::Engine& engine);
  ~NsmDevice() override;
  uint64_t features() const override;
  uint64_t protocol_features() const override;
  uint32_t num_queues() const override { return 1; }
  uint32_t max_queue_size() const override { return 64; }
  void set_features(uint64_t acked) override { acked_ = acked; }
  Result<std::vector<uint8_t>, vhost_user::VuError> get_config(uint32_t offset, uint32_t size) override;
  void queue_started(const vhost_user::VringInfo& v) override;
  uint16_t queue_stopped(uint32_t index) override;
  void device_reset() override { needs_reset_.store(false); }
  void frontend_disconnected() override { needs_reset_.store(false); }
  bool needs_reset() const override { return needs_reset_.load(); }

  uint64_t requests() const { return requests_.load(); }

 private:
  struct Worker;
  void serve(Worker& w);
  nsm::Engine& engine_;
  uint64_t acked_ = 0;
  std::unique_ptr<Worker> worker_;
  uint16_t next_avail_ = 0;
  std::atomic<bool> needs_reset_{false};
  std::atomic<uint64_t> requests_{0};
};

// Builds the engine (with `platform`: platform_pcrs(), computed before the seccomp
// filter, which allows no file to be opened), its signer and the device, listens,
// serves until SIGTERM/SIGINT.
int run_card(const CardOptions& o, const std::map<uint32_t, attest::Pcr>& platform);

}  // namespace azote::card_nsm
