// The virtio-blk device of one volume as a vhost-user backend sees it: feature bits,
// config space, and one QueueWorker per started queue. Every call comes from the
// vhost-user control thread (lib/vhost_user/device.hpp).
#pragma once

#include <memory>
#include <vector>

#include "cards/blk/queue_worker.hpp"
#include "cards/blk/volume.hpp"
#include "vhost_user/device.hpp"

namespace azote::card_blk {

class BlkDevice final : public vhost_user::Device {
 public:
  explicit BlkDevice(Volume& volume);
  ~BlkDevice() override;

  uint64_t features() const override;
  uint64_t protocol_features() const override;
  uint32_t num_queues() const override { return volume_.params().queues; }
  uint32_t max_queue_size() const override { return kMaxQueueSize; }
  void set_features(uint64_t acked) override { acked_ = acked; }
  Result<std::vector<uint8_t>, vhost_user::VuError> get_config(uint32_t offset, uint32_t size) override;
  void queue_started(const vhost_user::VringInfo& v) override;
  uint16_t queue_stopped(uint32_t index) override;
  void frontend_disconnected() override {}

  uint64_t acked_features() const { return acked_; }
  bool running(uint32_t index) const { return index < workers_.size() && workers_[index] != nullptr; }

 private:
  Volume& volume_;
  uint64_t acked_ = 0;
  std::vector<std::unique_ptr<QueueWorker>> workers_;
  std::vector<uint16_t> next_avail_;  // for a queue whose worker could not be created
  log::RateLimit log_limit_{10, std::chrono::seconds(10)};
};

}  // namespace azote::card_blk
