// virtio-mmio (version 2) transport: the register file a driver programs (virtio 1.2
// §4.2.2). It knows nothing of what the device is: identity, features, config space
// and queue activation come from a DeviceBackend (in azote-hv: a card reached over
// vhost-user). A virtio-pci transport can later sit on the same interface.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "virtio/spec.hpp"

namespace azote::virtio_mmio {

inline constexpr uint64_t kWindowSize = 0x1000;
inline constexpr uint32_t kMagic = 0x74726976;  // "virt"
inline constexpr uint32_t kVendorId = 0x544f5a41; // "AZOT"

struct QueueConfig {
  uint16_t size = 0;
  uint64_t desc = 0, avail = 0, used = 0;  // guest-physical
};

class DeviceBackend {
 public:
  virtual ~DeviceBackend() = default;
  virtual uint32_t device_id() const = 0;
  virtual uint64_t device_features() const = 0;
  virtual uint16_t num_queues() const = 0;
  virtual uint16_t max_queue_size() const = 0;
  // Config space access; false if the range is outside the device's config (reads),
  // or the device refused the write (a read-only field, a value it does not take).
  // Writes reach the device as the driver made them (offset and width).
  virtual bool read_config(uint32_t offset, std::span<uint8_t> out) = 0;
  virtual bool write_config(uint32_t offset, std::span<const uint8_t> in) = 0;
  // DRIVER_OK: start every queue that is ready. false = the device cannot run
  // (the transport then sets DEVICE_NEEDS_RESET).
  virtual bool activate(uint64_t acked_features, const std::vector<std::optional<QueueConfig>>& queues) = 0;
  // The driver wrote 0 to Status (a device reset, §2.4), whether or not the device was
  // running: stop all queues and return the device's state, config fields the driver
  // wrote included, to its initial values.
  virtual void reset() = 0;
  // Asked when the driver reads Status while the device runs (after a successful
  // activate(), until reset()), and only until it first says yes: whether the device
  // has entered an error state only a reset ends (§2.1.2, e.g. the driver broke one of
  // its queues). The transport then reports DEVICE_NEEDS_RESET until the driver resets
  // the device. May ask another process, so it must bound its own wait.
  virtual bool needs_reset() { return false; }
};

class Transport {
 public:
  explicit Transport(DeviceBackend& backend);

  // `offset` is relative to the window; accesses outside registers read as 0 and
  // writes are ignored (a misbehaving driver only confuses its own device).
  void read(uint64_t offset, std::span<uint8_t> data);
  void write(uint64_t offset, std::span<const uint8_t> data);

  uint32_t status() const { return status_; }
  // The device can no longer run its queues (e.g. its card restarted without state):
  // report DEVICE_NEEDS_RESET; the driver must reset it (§2.1.2). (A device that
  // breaks while running says so through DeviceBackend::needs_reset() instead.)
  void set_needs_reset() {
    status_ |= virtio::kStatusNeedsReset;
    active_ = false;
  }
  bool active() const { return active_; }
  // Interrupt status as the driver sees it. With irqfd the card raises the line
  // directly, so "used buffer" is reported whenever the device is running.
  uint32_t interrupt_status() const;


 private:
  struct Queue {
    uint16_t num = 0;
    bool ready = false;
    uint64_t desc = 0, avail = 0, used = 0;
  };
  uint32_t read_reg(uint64_t offset);
  void write_reg(uint64_t offset, uint32_t value);
  void write_status(uint32_t value);
  void reset_state();
  Queue* selected();

  DeviceBackend& backend_;
  uint32_t device_features_sel_ = 0;
  uint32_t driver_features_sel_ = 0;
  uint64_t driver_features_ = 0;
  uint32_t queue_sel_ = 0;
  uint32_t status_ = 0;
  uint32_t config_generation_ = 0;
  bool active_ = false;
  std::vector<Queue> queues_;
};

}  // namespace azote::virtio_mmio
