#include "cards/vsock/device.hpp"

#include "cards/vsock/packet.hpp"
#include "virtio/spec.hpp"

namespace azote::card_vsock {

uint64_t VsockDevice::features() const {
  // VERSION_1 only: no VIRTIO_VSOCK_F_SEQPACKET (stream is what Nitro enclaves use), no
  // EVENT_IDX or INDIRECT_DESC (the rings are short and Linux's vsock driver uses
  // neither to any gain here).
  return virtio::feature_bit(virtio::kFVersion1);
}

uint64_t VsockDevice::protocol_features() const {
  using vhost_user::bit;
  // MQ: GET_QUEUE_NUM tells the frontend there are three queues. No INFLIGHT_SHMFD: every
  // chain is completed when it is taken (tx) or filled (rx), so the used index is exact.
  return bit(vhost_user::kPfMq) | bit(vhost_user::kPfConfig) | bit(vhost_user::kPfReplyAck) |
         bit(vhost_user::kPfResetDevice) | bit(vhost_user::kPfStatus);
}

Result<std::vector<uint8_t>, vhost_user::VuError> VsockDevice::get_config(uint32_t offset, uint32_t size) {
  constexpr uint32_t kConfigBytes = 8;
  if (offset > kConfigBytes || size > kConfigBytes - offset)
    return make_error(vhost_user::Errc::kDevice, "config read past virtio_vsock_config (8 bytes)");
  uint8_t cfg[kConfigBytes];
  store_le(cfg, cid_, kConfigBytes);
  return std::vector<uint8_t>(cfg + offset, cfg + offset + size);
}

void VsockDevice::queue_started(const vhost_user::VringInfo& v) {
  if (v.index == kEventQueue) {
    event_next_avail_ = v.next_avail;
    return;
  }
  if (v.index >= kNumQueues) return;
  // A ring the switch cannot use is logged there (rate-limited) and reported as
  // DEVICE_NEEDS_RESET.
  (void)sw_.queue_started(port_, v);
}

uint16_t VsockDevice::queue_stopped(uint32_t index) {
  if (index == kEventQueue) return event_next_avail_;
  if (index >= kNumQueues) return 0;
  return sw_.queue_stopped(port_, index);
}

}  // namespace azote::card_vsock
