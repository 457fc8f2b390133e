// A virtio device whose model lives in a card: the virtio-mmio transport's backend
// implemented over a vhost-user connection. azote-hv only wires the channel: guest
// RAM (the memfd) goes to the card once; at DRIVER_OK each queue gets an ioeventfd on
// the QueueNotify register (guest kick -> card, no exit to azote-hv) and an irqfd
// (card -> guest interrupt). After that the data path never runs azote-hv code.
//
// With the STATUS protocol feature the driver's device status is mirrored to the card
// (SET_STATUS: FEATURES_OK and DRIVER_OK at activation, 0 at a reset, which is then the
// device reset instead of RESET_DEVICE), and a Status read of a running device asks the
// card for DEVICE_NEEDS_RESET (GET_STATUS).
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "base/error.hpp"
#include "base/unique_fd.hpp"
#include "guest_memory/guest_memory.hpp"
#include "hv/config.hpp"
#include "kvm/kvm.hpp"
#include "vhost_user/frontend.hpp"
#include "virtio_mmio/transport.hpp"

namespace azote::hv {

class VhostUserBackend final : public virtio_mmio::DeviceBackend {
 public:
  // Connects to the card (retrying while it starts) and negotiates; errors name the
  // --device (or, for a device attached over the control socket, the device) and the
  // socket.
  static Result<std::unique_ptr<VhostUserBackend>, std::string> create(const DeviceConfig& cfg, kvm::VmFd& vm,
                                                                       const GuestMemory& mem, uint64_t mmio_base,
                                                                       uint32_t gsi);
  ~VhostUserBackend() override;

  uint32_t device_id() const override { return device_id_; }
  uint64_t device_features() const override { return features_; }
  uint16_t num_queues() const override { return num_queues_; }
  uint16_t max_queue_size() const override { return kMaxQueueSize; }
  bool read_config(uint32_t offset, std::span<uint8_t> out) override;
  bool write_config(uint32_t offset, std::span<const uint8_t> in) override;
  bool activate(uint64_t acked, const std::vector<std::optional<virtio_mmio::QueueConfig>>& queues) override;
  void reset() override;
  // A card that negotiated STATUS is asked (GET_STATUS, bounded by the frontend's
  // timeout) whether it marked the device DEVICE_NEEDS_RESET, e.g. because the driver
  // broke a queue; at most once per kStatusQueryInterval, so a driver spinning on the
  // Status register costs the card a bounded number of control messages. Without STATUS:
  // false (the card cannot say; its broken queue just stays silent).
  bool needs_reset() override;

  // Card restart: the connection's socket (watch it for hangup), and a reconnect
  // attempt that redoes the handshake and replays memory, inflight fd and vrings.
  // Both are called with the device lock held.
  int socket_fd() const { return fe_.connected() ? fe_.socket_fd() : -1; }
  bool connected() const { return fe_.connected(); }
  void disconnected();
  enum class Reconnect { kNotYet, kReplayed, kNeedsReset };
  // kReplayed: the card tracks in-flight requests (INFLIGHT_SHMFD), so the vrings were
  // replayed and the guest continues. kNeedsReset: the card cannot say which requests
  // it had taken (replaying from the used index would redo completed ones and lose
  // others when it completes out of order), so the queues are dropped and the caller
  // sets DEVICE_NEEDS_RESET; the driver reinitialises against the new card.
  Reconnect try_reconnect();
  const std::string& socket_path() const { return cfg_.socket; }
  uint64_t reconnects() const { return reconnects_; }

  static constexpr uint16_t kMaxQueueSize = 256;
  static constexpr std::chrono::milliseconds kStatusQueryInterval{10};
  static constexpr uint32_t kQueueNotifyOffset = 0x50;

 private:
  VhostUserBackend(const DeviceConfig& cfg, kvm::VmFd& vm, const GuestMemory& mem, vhost_user::Frontend fe,
                   uint64_t mmio_base, uint32_t gsi);
  struct Wiring {
    uint32_t index;
    UniqueFd kick, call;
  };
  void unwire();
  void fail(const std::string& what, const std::string& why);

  DeviceConfig cfg_;
  kvm::VmFd& vm_;
  const GuestMemory& mem_;
  vhost_user::Frontend fe_;
  uint64_t mmio_base_;
  uint32_t gsi_;
  uint32_t device_id_ = 0;
  uint64_t features_ = 0;
  uint16_t num_queues_ = 1;
  bool mem_table_sent_ = false;
  // Negotiated at attach time. Kept here because a failed reconnect attempt leaves the
  // frontend's view of the protocol features half-reset.
  bool inflight_tracked_ = false;
  uint64_t reconnects_ = 0;
  std::chrono::steady_clock::time_point next_status_query_{};
  std::vector<Wiring> wired_;
};

}  // namespace azote::hv
