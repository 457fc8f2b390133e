// The azote-card-net process: the Switch (the host's VPC), one vhost-user Backend and
// NetDevice per ENI, the control loop serving every socket on the calling thread, a
// 1 s timer for flow logs, conntrack and fabric key expiry, the metrics endpoint and the
// control socket, the fabric link to other hosts (--underlay), the instance metadata
// service (lib/imds, one slot per ENI with metadata; --imds), and a clean stop on
// SIGTERM/SIGINT.
#pragma once

#include <map>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "base/unique_fd.hpp"
#include "cards/net/device.hpp"
#include "cards/net/fabric_link.hpp"
#include "cards/net/metrics.hpp"
#include "cards/net/options.hpp"
#include "cards/net/switch.hpp"
#include "control/control.hpp"
#include "imds/service.hpp"
#include "rate_limit/clock.hpp"
#include "runtime/runtime.hpp"
#include "vhost_user/backend.hpp"

namespace azote::card_net {

enum class CardErrc {
  kModel = 1,  // the VPC model or an ENI is inconsistent
  kHost,       // sockets, epoll, files
};
using CardError = Error<CardErrc>;

using runtime::kExitNoInput;
using runtime::kExitOk;
using runtime::kExitOsErr;
using runtime::kExitUsage;

class Card {
 public:
  // Builds the model (declared VPCs, subnets, groups; implicit ones for what --eni
  // names), listens on every ENI socket, the metrics and control sockets, opens the
  // flow log. SIGTERM/SIGINT must already be blocked in the calling thread.
  static Result<std::unique_ptr<Card>, CardError> create(const CardOptions& options);
  ~Card();  // stops every queue, writes the last flow-log lines, removes the sockets

  int run();
  void request_stop();

  Result<void, CardError> add_eni(const EniSpec& e);
  Result<void, CardError> remove_eni(const std::string& id, bool force);
  nlohmann::json describe_enis() const;
  nlohmann::json describe_fabric() const;
  Result<void, CardError> add_mapping(const FabricMappingSpec& m);
  // New metadata for an ENI (its IMDS tokens stay valid), or none (nullopt: its slot and
  // tokens go; its packets to 169.254.169.254 are dropped). Returns whether it is served.
  Result<bool, CardError> set_eni_metadata(const std::string& id, const std::optional<InstanceMetadata>& md);
  nlohmann::json describe_imds() const;

 private:
  Card() = default;
  struct Served {
    std::shared_ptr<Port> port;
    std::unique_ptr<NetDevice> device;
    std::unique_ptr<vhost_user::Backend> backend;  // destroyed first: stops the queues
    std::optional<InstanceMetadata> metadata;      // as given (add-eni, set-eni-metadata)
  };
  // What lib/imds serves for `port`: `md` and what the card knows (address, MAC, region,
  // account, groups, the VPC DNS name when no hostname is given).
  imds::InstanceMetadata imds_metadata(const Port& port, const InstanceMetadata& md) const;
  // A slot for the port (nothing without a service). kModel when the service refuses.
  Result<void, CardError> attach_imds(const Port& port, const InstanceMetadata& md);
  void detach_imds(const Port& port);
  void update_metrics();
  void tick();                      // every second: flow-log windows, conntrack and fabric key expiry
  void serve_backend(uint64_t id);  // an ENI's vhost-user socket is readable
  void write_flow_log(const std::vector<std::string>& lines);
  control::Json handle_control(const control::Json& request);
  control::Json handle_fabric_control(const std::string& op, const control::Json& request);

  rate_limit::MonotonicClock clock_;
  std::unique_ptr<Switch> switch_;  // outlives every Served and the fabric link
  std::unique_ptr<FabricLink> fabric_;  // null without --underlay
  std::string region_, account_;
  std::unique_ptr<imds::Service> imds_;      // null: --imds off, or it could not start
  std::unique_ptr<MetadataSink> imds_sink_;  // imds_ as the Switch sees it
  std::string imds_state_;                   // "running", "off", "unavailable: why"
  std::string metrics_path_, control_path_;
  uint64_t next_id_ = 0;
  std::map<uint64_t, std::unique_ptr<Served>> served_;
  std::unique_ptr<MetricsServer> metrics_;
  std::unique_ptr<control::Server> control_;
  UniqueFd flow_log_;
  std::unique_ptr<runtime::Loop> loop_;  // signals, stop, the 1 s tick, control and vhost-user sockets
};

}  // namespace azote::card_net
