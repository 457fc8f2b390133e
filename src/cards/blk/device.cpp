#include "cards/blk/device.hpp"

#include <cstddef>
#include <cstring>

#include "virtio/spec.hpp"

namespace azote::card_blk {

BlkDevice::BlkDevice(Volume& volume)
    : volume_(volume), workers_(volume.params().queues), next_avail_(volume.params().queues, 0) {}

BlkDevice::~BlkDevice() {
  for (uint32_t i = 0; i < workers_.size(); ++i) (void)queue_stopped(i);
}

uint64_t BlkDevice::features() const {
  using virtio::feature_bit;
  return feature_bit(virtio::kFVersion1) | feature_bit(virtio::kFRingEventIdx) |
         feature_bit(virtio::kFRingIndirectDesc) | volume_.blk().features();
}

uint64_t BlkDevice::protocol_features() const {
  using vhost_user::bit;
  // RESET_DEVICE: a driver's device reset returns the cache mode to write-back.
  // STATUS: GET_STATUS tells the frontend DEVICE_NEEDS_RESET when the driver broke a queue.
  return bit(vhost_user::kPfMq) | bit(vhost_user::kPfConfig) | bit(vhost_user::kPfReplyAck) |
         bit(vhost_user::kPfInflightShmfd) | bit(vhost_user::kPfResetDevice) | bit(vhost_user::kPfStatus);
}

Result<std::vector<uint8_t>, vhost_user::VuError> BlkDevice::get_config(uint32_t offset, uint32_t size) {
  virtio::virtio_blk_config c = volume_.blk().config();
  if (volume_.blk().has_config_wce()) c.writeback = volume_.write_through() ? 0 : 1;
  if (uint64_t{offset} + size > sizeof c)
    return make_error(vhost_user::Errc::kDevice, "config read past virtio_blk_config");
  std::vector<uint8_t> out(size);
  // SAFETY: the config struct is trivially copyable; [offset, offset+size) is inside it.
  std::memcpy(out.data(), reinterpret_cast<const uint8_t*>(&c) + offset, size);  // NOLINT(reinterpret-cast)
  return out;
}

Result<void, vhost_user::VuError> BlkDevice::set_config(uint32_t offset, std::span<const uint8_t> data,
                                                        uint32_t flags) {
  constexpr uint32_t kWriteback = offsetof(virtio::virtio_blk_config, writeback);
  const char* why = nullptr;
  if (!volume_.blk().has_config_wce()) {
    why = "the config space is read-only (no VIRTIO_BLK_F_CONFIG_WCE on this volume)";
  } else if (flags != 0) {
    why = "live-migration config writes are not supported";
  } else if (offset != kWriteback || data.size() != 1) {
    why = "only the writeback byte (offset 32, 1 byte) is writable";
  } else if (data[0] > 1) {
    why = "writeback must be 0 (write-through) or 1 (write-back)";
  }
  if (why != nullptr) {
    volume_.metrics().config_write_refusals.fetch_add(1, std::memory_order_relaxed);
    if (config_log_limit_.allow())
      LOG_WARN("volume %s: config write of %zu byte(s) at offset %u (flags %u) refused: %s",
               volume_.params().name.c_str(), data.size(), offset, flags, why);
    return make_error(vhost_user::Errc::kDevice, why);
  }
  set_mode(data[0] == 0, "driver");
  return {};
}

void BlkDevice::set_mode(bool write_through, const char* why) {
  if (volume_.write_through() == write_through) return;
  // Requests taken off the ring from now on follow the new mode; ones already taken
  // finish in the mode they were taken in.
  volume_.set_write_through(write_through);
  if (config_log_limit_.allow())
    LOG_INFO("volume %s: cache mode %s (%s)", volume_.params().name.c_str(),
             write_through ? "write-through: every write is durable when it completes" : "write-back", why);
}

void BlkDevice::new_session(const char* why) {
  set_mode(false, why);
  if (volume_.needs_reset()) {
    volume_.set_needs_reset(false);
    if (log_limit_.allow()) LOG_INFO("volume %s: DEVICE_NEEDS_RESET cleared (%s)", volume_.params().name.c_str(), why);
  }
}

void BlkDevice::queue_started(const vhost_user::VringInfo& v) {
  if (v.index >= workers_.size()) return;  // the session bounds indices by num_queues()
  (void)queue_stopped(v.index);
  next_avail_[v.index] = v.next_avail;
  auto w = QueueWorker::create(volume_, v);
  if (!w) {
    // Host resources (or a ring the queue code refuses): this queue stays silent and the
    // driver is told to reset the device; the other queues and volumes go on.
    volume_.set_needs_reset(true);
    if (log_limit_.allow())
      LOG_ERROR("volume %s: cannot start %s", volume_.params().name.c_str(), w.error().message().c_str());
    return;
  }
  workers_[v.index] = std::move(w).value();
  workers_[v.index]->start();
  volume_.metrics().queue_starts.fetch_add(1, std::memory_order_relaxed);
  volume_.metrics().queues_running.fetch_add(1, std::memory_order_relaxed);
  LOG_DEBUG("volume %s: queue %u started (size %u, next avail %u, %zu to resubmit)", volume_.params().name.c_str(),
            v.index, v.size, v.next_avail, v.resubmit.size());
}

uint16_t BlkDevice::queue_stopped(uint32_t index) {
  if (index >= workers_.size()) return 0;
  if (workers_[index] == nullptr) return next_avail_[index];
  next_avail_[index] = workers_[index]->stop();
  workers_[index].reset();
  volume_.metrics().queues_running.fetch_sub(1, std::memory_order_relaxed);
  return next_avail_[index];
}

}  // namespace azote::card_blk
