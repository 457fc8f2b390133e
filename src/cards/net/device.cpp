#include "cards/net/device.hpp"

#include <cstring>

#include "virtio/net.hpp"

namespace azote::card_net {

NetDevice::~NetDevice() {
  if (worker_) worker_->stop();
}

uint64_t NetDevice::features() const {
  using virtio::feature_bit;
  return feature_bit(virtio::kFVersion1) | feature_bit(virtio::kFRingEventIdx) |
         feature_bit(virtio::kFRingIndirectDesc) | feature_bit(virtio::kNetFMac) | feature_bit(virtio::kNetFStatus) |
         feature_bit(virtio::kNetFMtu);
}

uint64_t NetDevice::protocol_features() const {
  using vhost_user::bit;
  // MQ: GET_QUEUE_NUM tells the frontend there are two queues. No INFLIGHT_SHMFD: a
  // frame lost in a card restart is a lost frame, as on any network.
  return bit(vhost_user::kPfMq) | bit(vhost_user::kPfConfig) | bit(vhost_user::kPfReplyAck) |
         bit(vhost_user::kPfResetDevice) | bit(vhost_user::kPfStatus);
}

Result<std::vector<uint8_t>, vhost_user::VuError> NetDevice::get_config(uint32_t offset, uint32_t size) {
  virtio::virtio_net_config c{};
  port_->mac().store(c.mac);
  c.status = virtio::kNetSLinkUp;
  c.max_virtqueue_pairs = 1;
  c.mtu = kMtu;
  if (uint64_t{offset} + size > sizeof c) return make_error(vhost_user::Errc::kDevice, "config read past virtio_net_config");
  std::vector<uint8_t> out(size);
  // SAFETY: trivially copyable; [offset, offset + size) lies inside it.
  std::memcpy(out.data(), reinterpret_cast<const uint8_t*>(&c) + offset, size);  // NOLINT(reinterpret-cast)
  return out;
}

void NetDevice::restart() {
  if (worker_) {
    worker_->stop();
    worker_.reset();
  }
  if (!rings_[0] && !rings_[1]) return;
  auto w = Worker::start(*port_, sw_, rings_[0], rings_[1], needs_reset_);
  if (!w) {
    needs_reset_.store(true, std::memory_order_release);
    if (log_limit_.allow())
      LOG_ERROR("eni %s: cannot start the queues: %s", port_->id().c_str(), w.error().message().c_str());
    return;
  }
  worker_ = std::move(w).value();
}

void NetDevice::queue_started(const vhost_user::VringInfo& v) {
  if (v.index >= virtio::kNumQueues) return;
  // The worker owns both rings: stop it, take the new ring, start it again.
  if (worker_) {
    const auto next = worker_->stop();
    for (uint32_t i = 0; i < 2; ++i)
      if (rings_[i]) rings_[i]->next_avail = next[i];
    worker_.reset();
  }
  rings_[v.index] = v;  // features: the acked set, from the session
  restart();
}

uint16_t NetDevice::queue_stopped(uint32_t index) {
  if (index >= virtio::kNumQueues || !rings_[index]) return 0;
  uint16_t next = rings_[index]->next_avail;
  if (worker_) {
    const auto n = worker_->stop();
    for (uint32_t i = 0; i < 2; ++i)
      if (rings_[i]) rings_[i]->next_avail = n[i];
    next = n[index];
    worker_.reset();
  }
  rings_[index].reset();
  restart();
  return next;
}

void NetDevice::new_session() {
  // Every queue has stopped by now.
  needs_reset_.store(false, std::memory_order_release);
  port_->inbox().clear();
}

}  // namespace azote::card_net
