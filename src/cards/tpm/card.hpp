// The azote-card-tpm process: the control loop (control socket, signals) on the main
// thread, the metrics endpoint, and once opened the instance's TPM: its state file and
// key, libtpms (TpmEngine) and the data socket served on the "tpm" thread.
#pragma once

#include <atomic>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include "cards/tpm/attest.hpp"
#include "cards/tpm/data_server.hpp"
#include "cards/tpm/engine.hpp"
#include "cards/tpm/metrics.hpp"
#include "cards/tpm/options.hpp"
#include "cards/tpm/secret.hpp"
#include "cards/tpm/state_file.hpp"
#include "control/control.hpp"
#include "runtime/runtime.hpp"

namespace azote::card_tpm {

using runtime::kExitOk;
using runtime::kExitOsErr;
using runtime::kExitUsage;

class Card {
 public:
  // Listens on the control and metrics sockets. SIGTERM and SIGINT must already be
  // blocked in the calling thread (run() takes them through a signalfd).
  static TpmResult<std::unique_ptr<Card>> create(const CardOptions& options);
  ~Card();  // stops the TPM thread, then libtpms; removes the sockets

  // Serves until SIGTERM/SIGINT or request_stop(). Returns the exit status.
  int run();
  void request_stop();  // thread-safe

  struct Opened {
    bool manufactured = false;  // the state file was empty: a new TPM
    uint64_t state_bytes = 0;   // size of the TPM's permanent state
  };
  // The control socket's "open" (tests may call it directly). Once per card.
  TpmResult<Opened> open(const OpenRequest& request, StateKey key);
  control::Json describe() const;

 private:
  Card() = default;
  control::Json handle_control(const control::Json& request);
  control::Json handle_open(const control::Json& request);
  // libtpms's permanent state to the state file (the TPM thread, or open()).
  bool persist(std::span<const uint8_t> permall);
  void close_tpm();  // in the right order: data socket, attestor, libtpms, state file, key

  TpmMetrics metrics_;
  bool open_ = false;
  bool manufactured_ = false;
  std::string instance_, socket_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<bool> tpm_failed_{false};
  // The key is kept only to encrypt the state writes to come.
  std::optional<StateKey> key_;
  std::unique_ptr<StateFile> state_;
  std::unique_ptr<rot_link::RotClient> rot_;  // --rot; kept across a refused open
  std::unique_ptr<TpmEngine> engine_;
  std::unique_ptr<Attestor> attestor_;  // TPM_CC_AZOTE_ATTEST, on the TPM thread
  std::unique_ptr<DataServer> data_;
  std::unique_ptr<runtime::TextEndpoint> metrics_endpoint_;
  std::unique_ptr<control::Server> control_;
  std::unique_ptr<runtime::Loop> loop_;
};

}  // namespace azote::card_tpm
