// The azote-card-blk process: every volume with its vhost-user Backend, the control
// loop that serves all their sockets on the calling thread, the metrics endpoint, and
// a clean stop on SIGTERM/SIGINT.
#pragma once

#include <map>
#include <memory>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/unique_fd.hpp"
#include "cards/blk/device.hpp"
#include "cards/blk/metrics.hpp"
#include "cards/blk/options.hpp"
#include "cards/blk/volume.hpp"
#include "control/control.hpp"
#include "rate_limit/clock.hpp"
#include "runtime/runtime.hpp"
#include "vhost_user/backend.hpp"

namespace azote::card_blk {

enum class CardErrc {
  kVolume = 1,  // a backing file or key file cannot be used
  kHost,        // sockets, epoll, signalfd, io_uring
};
using CardError = Error<CardErrc>;

using runtime::kExitNoInput;
using runtime::kExitOk;
using runtime::kExitOsErr;
using runtime::kExitUsage;

class Card {
 public:
  // Opens every volume (files, keys, io_uring rings), then listens on every socket and
  // on the metrics socket. SIGTERM and SIGINT must already be blocked in the calling
  // thread (run() takes them through a signalfd; threads started later inherit the mask).
  static Result<std::unique_ptr<Card>, CardError> create(const CardOptions& options);
  ~Card();  // stops every queue and removes the sockets

  // Serves until SIGTERM/SIGINT or request_stop(). Returns the exit status.
  int run();
  // Makes run() return (thread-safe).
  void request_stop();

  size_t volumes() const { return served_.size(); }

  // Run-time changes (the control socket calls these; so can tests).
  // `import_from`: a plain image written (encrypted with the volume's key, if any) at
  // the start of the volume before it is served; returns the bytes imported.
  Result<uint64_t, CardError> add_volume(VolumeOptions o, const std::string& import_from = {});
  // Refuses a volume a hypervisor is connected to unless `force`.
  Result<void, CardError> remove_volume(const std::string& socket, bool force);
  nlohmann::json describe_volumes() const;

 private:
  Card() = default;
  struct Served {
    VolumeOptions options;  // as given, minus the key
    std::unique_ptr<Volume> volume;  // destroyed last
    std::unique_ptr<BlkDevice> device;
    std::unique_ptr<vhost_user::Backend> backend;  // destroyed first: stops the queues
  };
  Result<void, CardError> check_new(const VolumeOptions& o) const;
  void update_metrics();
  void serve_backend(uint64_t id);  // its socket is readable
  control::Json handle_control(const control::Json& request);

  rate_limit::MonotonicClock clock_;
  std::string metrics_path_, control_path_;
  uint64_t next_id_ = 0;
  std::map<uint64_t, std::unique_ptr<Served>> served_;  // by id
  std::unique_ptr<MetricsServer> metrics_;
  std::unique_ptr<control::Server> control_;
  std::unique_ptr<runtime::Loop> loop_;
};

}  // namespace azote::card_blk
