// The virtio-net device of one ENI as its vhost-user Backend sees it: features,
// config space (MAC, link up, MTU), two queues (rx 0, tx 1) run by one Worker. Every
// call comes from the card's control thread (lib/vhost_user/device.hpp).
#pragma once

#include <array>
#include <atomic>
#include <memory>
#include <optional>

#include "cards/net/switch.hpp"
#include "virtio/net.hpp"
#include "cards/net/worker.hpp"
#include "vhost_user/device.hpp"

namespace azote::card_net {

inline constexpr uint32_t kMaxQueueSize = 1024;

class NetDevice final : public vhost_user::Device {
 public:
  NetDevice(std::shared_ptr<Port> port, Switch& sw) : port_(std::move(port)), sw_(sw) {}
  ~NetDevice() override;

  uint64_t features() const override;
  uint64_t protocol_features() const override;
  uint32_t num_queues() const override { return virtio::kNumQueues; }
  uint32_t max_queue_size() const override { return kMaxQueueSize; }
  void set_features(uint64_t acked) override { acked_ = acked; }
  // virtio_net_config: mac, status (link up), max_virtqueue_pairs 1, mtu. Read-only.
  Result<std::vector<uint8_t>, vhost_user::VuError> get_config(uint32_t offset, uint32_t size) override;
  void queue_started(const vhost_user::VringInfo& v) override;
  uint16_t queue_stopped(uint32_t index) override;
  void device_reset() override { new_session(); }
  void frontend_disconnected() override { new_session(); }
  bool needs_reset() const override { return needs_reset_.load(std::memory_order_acquire); }

  uint64_t acked_features() const { return acked_; }

 private:
  void restart();
  void new_session();

  std::shared_ptr<Port> port_;
  Switch& sw_;
  uint64_t acked_ = 0;
  std::array<std::optional<vhost_user::VringInfo>, 2> rings_;
  std::unique_ptr<Worker> worker_;
  std::atomic<bool> needs_reset_{false};
  log::RateLimit log_limit_{10, std::chrono::seconds(10)};
};

}  // namespace azote::card_net
