#include "virtio_mmio/transport.hpp"

#include <cstring>

namespace azote::virtio_mmio {
namespace {

// Register offsets (virtio 1.2 §4.2.2, table "MMIO Device Register Layout").
enum : uint64_t {
  kRegMagic = 0x000, kRegVersion = 0x004, kRegDeviceId = 0x008, kRegVendorId = 0x00c,
  kRegDeviceFeatures = 0x010, kRegDeviceFeaturesSel = 0x014, kRegDriverFeatures = 0x020,
  kRegDriverFeaturesSel = 0x024, kRegQueueSel = 0x030, kRegQueueNumMax = 0x034, kRegQueueNum = 0x038,
  kRegQueueReady = 0x044, kRegQueueNotify = 0x050, kRegInterruptStatus = 0x060, kRegInterruptAck = 0x064,
  kRegStatus = 0x070, kRegQueueDescLow = 0x080, kRegQueueDescHigh = 0x084, kRegQueueDriverLow = 0x090,
  kRegQueueDriverHigh = 0x094, kRegQueueDeviceLow = 0x0a0, kRegQueueDeviceHigh = 0x0a4,
  kRegConfigGeneration = 0x0fc, kConfigSpace = 0x100,
};
constexpr uint64_t kFeatureVersion1 = uint64_t{1} << virtio::kFVersion1;
using virtio::kStatusDriverOk;
using virtio::kStatusFeaturesOk;
using virtio::kStatusNeedsReset;

void set_low(uint64_t* v, uint32_t x) { *v = (*v & ~0xffffffffull) | x; }
void set_high(uint64_t* v, uint32_t x) { *v = (*v & 0xffffffffull) | (static_cast<uint64_t>(x) << 32); }

}  // namespace

Transport::Transport(DeviceBackend& backend) : backend_(backend), queues_(backend.num_queues()) {}

uint32_t Transport::interrupt_status() const { return active_ ? 1u : 0u; }

Transport::Queue* Transport::selected() { return queue_sel_ < queues_.size() ? &queues_[queue_sel_] : nullptr; }

void Transport::read(uint64_t offset, std::span<uint8_t> data) {
  std::memset(data.data(), 0, data.size());
  if (offset >= kConfigSpace) {
    if (!backend_.read_config(static_cast<uint32_t>(offset - kConfigSpace), data)) std::memset(data.data(), 0, data.size());
    return;
  }
  if (data.size() != 4 || offset % 4 != 0) return;  // registers are 32-bit only
  const uint32_t v = read_reg(offset);
  std::memcpy(data.data(), &v, 4);
}

void Transport::write(uint64_t offset, std::span<const uint8_t> data) {
  if (offset >= kConfigSpace) {
    (void)backend_.write_config(static_cast<uint32_t>(offset - kConfigSpace), data);
    return;
  }
  if (data.size() != 4 || offset % 4 != 0) return;
  uint32_t v;
  std::memcpy(&v, data.data(), 4);
  write_reg(offset, v);
}

uint32_t Transport::read_reg(uint64_t offset) {
  const Queue* q = selected();
  switch (offset) {
    case kRegMagic: return kMagic;
    case kRegVersion: return 2;
    case kRegDeviceId: return backend_.device_id();
    case kRegVendorId: return kVendorId;
    case kRegDeviceFeatures: {
      const uint64_t f = backend_.device_features() | kFeatureVersion1;
      return device_features_sel_ == 0 ? static_cast<uint32_t>(f) : device_features_sel_ == 1 ? static_cast<uint32_t>(f >> 32) : 0;
    }
    case kRegQueueNumMax: return q != nullptr ? backend_.max_queue_size() : 0;
    case kRegQueueReady: return q != nullptr && q->ready ? 1 : 0;
    case kRegInterruptStatus: return interrupt_status();
    case kRegStatus:
      // A running device may have broken since DRIVER_OK; the backend is asked on this
      // read only (never on the data path) and, once it said so, no more: the bit stays
      // until the driver resets the device.
      if (active_ && (status_ & kStatusNeedsReset) == 0 && backend_.needs_reset()) status_ |= kStatusNeedsReset;
      return status_;
    case kRegConfigGeneration: return config_generation_;
    default: return 0;
  }
}

void Transport::write_reg(uint64_t offset, uint32_t v) {
  Queue* q = selected();
  // Queue registers may only change before the device runs (§4.2.2.1).
  const bool queue_writable = q != nullptr && !q->ready && !active_;
  switch (offset) {
    case kRegDeviceFeaturesSel: device_features_sel_ = v; return;
    case kRegDriverFeatures:
      if ((status_ & kStatusFeaturesOk) != 0) return;
      if (driver_features_sel_ == 0) set_low(&driver_features_, v);
      else if (driver_features_sel_ == 1) set_high(&driver_features_, v);
      return;
    case kRegDriverFeaturesSel: driver_features_sel_ = v; return;
    case kRegQueueSel: queue_sel_ = v; return;
    case kRegQueueNum:
      if (queue_writable) q->num = static_cast<uint16_t>(v > 0xffff ? 0 : v);
      return;
    case kRegQueueReady:
      if (q != nullptr && !active_) q->ready = v == 1;
      return;
    case kRegQueueNotify: return;  // normally an ioeventfd; a trapped notify before DRIVER_OK is harmless
    case kRegInterruptAck: return;
    case kRegStatus: write_status(v); return;
    case kRegQueueDescLow: if (queue_writable) set_low(&q->desc, v); return;
    case kRegQueueDescHigh: if (queue_writable) set_high(&q->desc, v); return;
    case kRegQueueDriverLow: if (queue_writable) set_low(&q->avail, v); return;
    case kRegQueueDriverHigh: if (queue_writable) set_high(&q->avail, v); return;
    case kRegQueueDeviceLow: if (queue_writable) set_low(&q->used, v); return;
    case kRegQueueDeviceHigh: if (queue_writable) set_high(&q->used, v); return;
    default: return;
  }
}

void Transport::write_status(uint32_t v) {
  if (v == 0) {
    // Also before DRIVER_OK: the driver may have written config fields already.
    backend_.reset();
    reset_state();
    return;
  }
  // FEATURES_OK only sticks if the driver accepted nothing the device does not offer
  // and speaks virtio 1.x (§3.1.1).
  if ((v & kStatusFeaturesOk) != 0 && (status_ & kStatusFeaturesOk) == 0) {
    const uint64_t offered = backend_.device_features() | kFeatureVersion1;
    if ((driver_features_ & ~offered) != 0 || (driver_features_ & kFeatureVersion1) == 0) v &= ~kStatusFeaturesOk;
  }
  if ((v & kStatusDriverOk) != 0 && !active_) {
    if ((v & kStatusFeaturesOk) == 0) {
      status_ = v | kStatusNeedsReset;
      return;
    }
    std::vector<std::optional<QueueConfig>> qs;
    for (const auto& q : queues_) {
      if (q.ready && q.num != 0 && q.num <= backend_.max_queue_size())
        qs.push_back(QueueConfig{q.num, q.desc, q.avail, q.used});
      else
        qs.push_back(std::nullopt);
    }
    active_ = backend_.activate(driver_features_, qs);
    if (!active_) v |= kStatusNeedsReset;
  }
  status_ = v;
}

void Transport::reset_state() {
  device_features_sel_ = driver_features_sel_ = queue_sel_ = status_ = 0;
  driver_features_ = 0;
  active_ = false;
  for (auto& q : queues_) q = Queue{};
  ++config_generation_;
}

}  // namespace azote::virtio_mmio
