// The virtio-blk device of one volume as a vhost-user backend sees it: feature bits,
// config space, and one QueueWorker per started queue. Every call comes from the
// vhost-user control thread (lib/vhost_user/device.hpp).
//
// Config space: read-only but for `writeback` (VIRTIO_BLK_F_CONFIG_WCE, offset 32,
// one byte, 0 = write-through, 1 = write-back), which is the driver's session state:
// a device reset (RESET_DEVICE, SET_STATUS 0) or a new frontend connection returns it
// to write-back. So is DEVICE_NEEDS_RESET (reported through GET_STATUS): set when the
// driver breaks any queue, cleared by the same device reset or new connection.
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
  // Accepts exactly one write: the `writeback` byte (offset 32, size 1, flags 0) with
  // value 0 or 1, when CONFIG_WCE is offered. Anything else is refused (a NACK to the
  // frontend), counted and logged (rate-limited).
  Result<void, vhost_user::VuError> set_config(uint32_t offset, std::span<const uint8_t> data,
                                               uint32_t flags) override;
  void queue_started(const vhost_user::VringInfo& v) override;
  uint16_t queue_stopped(uint32_t index) override;
  // A device reset or a new frontend: write-back again, and a broken queue's
  // DEVICE_NEEDS_RESET is over (every worker has stopped by now).
  void device_reset() override { new_session("device reset"); }
  void frontend_disconnected() override { new_session("frontend disconnected"); }
  // Set when the driver broke a queue (QueueWorker) or a queue could not start.
  bool needs_reset() const override { return volume_.needs_reset(); }

  uint64_t acked_features() const { return acked_; }
  bool write_through() const { return volume_.write_through(); }
  bool running(uint32_t index) const { return index < workers_.size() && workers_[index] != nullptr; }

 private:
  Volume& volume_;
  uint64_t acked_ = 0;
  std::vector<std::unique_ptr<QueueWorker>> workers_;
  std::vector<uint16_t> next_avail_;  // for a queue whose worker could not be created
  void set_mode(bool write_through, const char* why);
  void new_session(const char* why);

  log::RateLimit log_limit_{10, std::chrono::seconds(10)};
  log::RateLimit config_log_limit_{10, std::chrono::seconds(10)};
};

}  // namespace azote::card_blk
