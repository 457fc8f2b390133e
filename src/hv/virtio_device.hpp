// One virtio-mmio device window in azote-hv: the transport register file plus the
// backend that gives it identity (a card over vhost-user). Register accesses trap
// to the vCPU thread; queue notifications and interrupts never do (ioeventfd/irqfd).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <span>

#include "virtio_mmio/transport.hpp"

namespace azote::hv {

class VirtioMmioDevice {
 public:
  VirtioMmioDevice(uint64_t base, uint32_t gsi, std::unique_ptr<virtio_mmio::DeviceBackend> backend)
      : base_(base), gsi_(gsi), backend_(std::move(backend)), transport_(*backend_) {}

  uint64_t base() const { return base_; }
  // Held by vCPU threads during register accesses; the main thread takes it to
  // reconnect a card.
  std::mutex& mutex() { return mu_; }
  // Call with mutex() held.
  void set_needs_reset() { transport_.set_needs_reset(); }
  uint32_t gsi() const { return gsi_; }
  bool contains(uint64_t addr, uint64_t len) const {
    return addr >= base_ && len <= virtio_mmio::kWindowSize && addr - base_ <= virtio_mmio::kWindowSize - len;
  }
  void access(uint64_t addr, bool is_write, std::span<uint8_t> data) {
    std::lock_guard lock(mu_);
    if (is_write) transport_.write(addr - base_, data);
    else transport_.read(addr - base_, data);
  }

 private:
  uint64_t base_;
  uint32_t gsi_;
  std::mutex mu_;
  std::unique_ptr<virtio_mmio::DeviceBackend> backend_;
  virtio_mmio::Transport transport_;
};

}  // namespace azote::hv
