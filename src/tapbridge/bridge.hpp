// azote-tap-bridge: a Linux TAP device as the "instance" of an ENI served by
// azote-card-net. The bridge is the virtio-net driver and the vhost-user frontend of the
// ENI's device (as azote-hv is for a VM): it shares one sealed memfd with the card,
// lays out the receive (0) and transmit (1) queues in it, and moves frames between
// them and the TAP. See DESIGN.md.
//
// Single-threaded: run() is one epoll loop. The card is not trusted (lib/virtio's
// DriverQueue validates every used element); a card that breaks a queue, reports
// DEVICE_NEEDS_RESET or hangs up ends run() with a message.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/error.hpp"
#include "base/log.hpp"
#include "base/unique_fd.hpp"
#include "guest_memory/guest_memory.hpp"
#include "tapbridge/options.hpp"
#include "vhost_user/frontend.hpp"
#include "virtio/net.hpp"
#include "virtio/driver_queue.hpp"

namespace azote::tapbridge {

enum class BridgeErrc {
  kCard = 1,  // the card: unreachable, refusing, missing a feature, bad config space
  kTap,       // the TAP device: creation, MAC, MTU, link up
  kHost,      // memfd, eventfd, epoll, signalfd
};
using BridgeError = Error<BridgeErrc>;

// Every buffer: the 12-byte virtio-net header, then one Ethernet frame.
inline constexpr uint32_t kBufferBytes = 2048;
inline constexpr uint32_t kNetHdrBytes = virtio::kNetHdrBytes;
inline constexpr uint32_t kEthHdrBytes = 14;
// The largest MTU a buffer carries (no VLAN tag, no FCS).
inline constexpr uint32_t kMaxMtu = kBufferBytes - kNetHdrBytes - kEthHdrBytes;
// Frames taken from the TAP per transmit kick.
inline constexpr uint32_t kTxBatch = 64;

struct BridgeStats {
  uint64_t tx_frames = 0, tx_bytes = 0;  // TAP -> card
  uint64_t rx_frames = 0, rx_bytes = 0;  // card -> TAP
  uint64_t rx_bad = 0;                   // runt, or a header asking for an offload not negotiated
  uint64_t rx_tap_errors = 0;            // write to the TAP refused (e.g. ENOBUFS)
  uint64_t tx_kicks = 0, rx_kicks = 0;
  uint64_t tx_ring_full = 0;  // times the TAP was paused because the transmit ring was full
};

class Bridge {
 public:
  // Connects to the card, negotiates, reads MAC and MTU, creates and configures the TAP,
  // shares the memory and starts both queues (DRIVER_OK). The caller has blocked
  // SIGTERM and SIGINT (run() takes them from a signalfd).
  static Result<std::unique_ptr<Bridge>, BridgeError> create(const BridgeOptions& options);
  ~Bridge();

  // Until SIGTERM/SIGINT (kExitOk) or a failure (kExitFailure, one line on stderr).
  int run();

  const std::string& tap_name() const { return tap_name_; }
  std::string mac_text() const;
  uint32_t mtu() const { return mtu_; }
  bool link_up() const { return link_up_; }
  uint64_t features() const { return features_; }
  const BridgeStats& stats() const { return stats_; }

 private:
  Bridge() = default;
  Result<void, BridgeError> negotiate();
  Result<void, BridgeError> create_tap();
  Result<void, BridgeError> setup_memory();
  Result<void, BridgeError> start_queues();
  Result<void, BridgeError> setup_loop();

  // One pass of the data path; false: a failure was reported (fail_).
  bool reclaim_tx();
  bool transmit();
  bool receive();
  void kick(uint32_t q);
  void set_tap_paused(bool paused);
  bool fail(std::string message);

  BridgeOptions options_;
  // mem_ outlives fe_ (the frontend keeps a pointer to it) and the queues.
  std::unique_ptr<GuestMemory> mem_;
  std::optional<vhost_user::Frontend> fe_;
  uint64_t features_ = 0;
  std::array<uint8_t, 6> mac_{};
  uint32_t mtu_ = 1500;
  bool link_up_ = true;

  std::string tap_name_;
  UniqueFd tap_;
  bool tap_paused_ = false;    // not polled while the transmit ring is full
  bool tap_readable_ = false;  // epoll said so and read() has not said EAGAIN since

  // Queue 0 receives (card -> TAP), queue 1 transmits (TAP -> card).
  std::optional<virtio::DriverQueue> rxq_, txq_;
  virtio::RingLayout rx_layout_, tx_layout_;
  GuestAddress rx_bufs_, tx_bufs_;  // queue-size buffers of kBufferBytes each
  uint8_t* rx_host_ = nullptr;
  uint8_t* tx_host_ = nullptr;
  std::vector<uint16_t> tx_free_;  // free transmit buffer slots (capacity: queue size)
  std::array<UniqueFd, 2> kick_, call_;

  UniqueFd epoll_, signal_, timer_;
  bool rx_more_ = false, tx_more_ = false;  // a budget ran out: look again without sleeping
  std::string failure_;
  BridgeStats stats_;
  log::RateLimit warn_limit_{10, std::chrono::seconds(10)};
};

}  // namespace azote::tapbridge
