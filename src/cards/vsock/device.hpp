// One VM's virtio-vsock device (virtio 1.2 §5.10) as its vhost-user Backend sees it:
// VERSION_1 only, three queues (rx 0, tx 1, event 2), config space le64 guest_cid. The
// rx and tx rings go to the card's Switch; the event queue is only held (the card never
// sends an event: DESIGN.md). Every call comes from the vhost-user control thread.
#pragma once

#include <cstdint>

#include "cards/vsock/switch.hpp"
#include "vhost_user/device.hpp"

namespace azote::card_vsock {

inline constexpr uint32_t kNumQueues = 3;
inline constexpr uint32_t kMaxQueueSize = 256;

class VsockDevice final : public vhost_user::Device {
 public:
  // `port`: this device's index in `sw`, whose CID is `cid`.
  VsockDevice(Switch& sw, size_t port, uint32_t cid) : sw_(sw), port_(port), cid_(cid) {}

  uint64_t features() const override;
  uint64_t protocol_features() const override;
  uint32_t num_queues() const override { return kNumQueues; }
  uint32_t max_queue_size() const override { return kMaxQueueSize; }
  void set_features(uint64_t acked) override { acked_ = acked; }
  // struct virtio_vsock_config { le64 guest_cid; }: any window inside its 8 bytes.
  // Writes are refused (the Device default): the CID is the card's, never the guest's.
  Result<std::vector<uint8_t>, vhost_user::VuError> get_config(uint32_t offset, uint32_t size) override;
  void queue_started(const vhost_user::VringInfo& v) override;
  uint16_t queue_stopped(uint32_t index) override;
  void device_reset() override { sw_.device_down(port_); }
  void frontend_disconnected() override { sw_.device_down(port_); }
  bool needs_reset() const override { return sw_.needs_reset(port_); }

  uint32_t cid() const { return cid_; }
  uint64_t acked_features() const { return acked_; }

 private:
  Switch& sw_;
  size_t port_;
  uint32_t cid_;
  uint64_t acked_ = 0;
  uint16_t event_next_avail_ = 0;  // the event queue: never taken from
};

}  // namespace azote::card_vsock
