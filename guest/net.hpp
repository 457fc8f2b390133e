// A polling, user-mode virtio-net driver (virtio 1.2 §5.1) over virtio-mmio version
// 2: one receive queue kept full of 2 KiB buffers, one transmit queue with a fixed
// 2 KiB buffer per descriptor, the 12-byte virtio_net_hdr (VERSION_1 layout) in front
// of every frame. No offloads: the guest computes every checksum itself and never
// sends or takes a frame over 1514 bytes (MTU 1500). Nothing on the data path enters
// CPL0; the only MMIO accesses are QueueNotify writes and, every 100 ms while the
// driver waits, one Status read.
#pragma once

#include <cstddef>
#include <cstdint>

#include "rt.hpp"
#include "virtio.hpp"

namespace az::vnet {

inline constexpr uint32_t kDeviceIdNet = 1;

// Feature bits (§5.1.3).
inline constexpr uint64_t kFCsum = 1ull << 0;
inline constexpr uint64_t kFGuestCsum = 1ull << 1;
inline constexpr uint64_t kFMtu = 1ull << 3;
inline constexpr uint64_t kFMac = 1ull << 5;
inline constexpr uint64_t kFMrgRxbuf = 1ull << 15;
inline constexpr uint64_t kFStatus = 1ull << 16;

inline constexpr size_t kHdrBytes = 12;        // struct virtio_net_hdr with num_buffers
inline constexpr size_t kBufBytes = 2048;      // one buffer per descriptor, both queues
inline constexpr size_t kMaxFrame = 1514;      // Ethernet header + 1500, no FCS, no tag
inline constexpr uint16_t kMaxBuffers = 256;   // per queue
inline constexpr uint16_t kDefaultMtu = 1500;

struct Options {
  const char* who = "net";   // program name in messages
  uint16_t rx_buffers = 256;  // receive buffers kept posted (at most QueueNumMax)
  uint16_t tx_buffers = 256;  // frames that may be in flight
};

// A received frame: Ethernet header first, virtio-net header removed. Stays valid
// (and the buffer stays the driver's) until rx_done(frame).
struct Frame {
  const uint8_t* data;
  size_t len;
  uint16_t id;
  uint32_t gen;  // resets() when received: a frame from before a reset is stale
};

class Device {
 public:
  enum class Open { kOk, kNoDevice };
  // Finds the first usable virtio-net device among the command line's
  // virtio_mmio.device= windows and brings it to DRIVER_OK with the receive queue
  // full. kNoDevice if there is none (a legacy version 1 device is reported and
  // skipped). A device that fails during setup is fatal (an io-error line, exit 1).
  Open open(const Options& o);

  const uint8_t* mac() const { return mac_; }
  uint16_t mtu() const { return mtu_; }
  uint64_t features() const { return features_; }
  // VIRTIO_NET_S_LINK_UP from the config space when STATUS was negotiated, else true.
  bool link_up() const;

  // The next frame the device delivered, if any (RAM only). A frame whose length
  // is impossible is dropped and counted; a used id that is not a posted buffer is
  // fatal.
  bool rx_poll(Frame* f);
  // Gives the frame's buffer back to the device; it sees it at rx_publish(). A
  // frame from before a device reset is ignored (setup() posted its buffer again).
  void rx_done(const Frame& f);
  void rx_publish();

  // A transmit buffer for one frame of up to kMaxFrame bytes (the same one until
  // tx_queue()). Reclaims completed frames; when all are in flight it waits, and 30 s
  // without a completion (or device trouble) is fatal.
  uint8_t* tx_buffer();
  // Queues the frame written into the last tx_buffer() (len <= kMaxFrame); the
  // device sees it at tx_publish() (one QueueNotify unless it asked for none).
  void tx_queue(size_t len);
  void tx_publish();

  // Called by a polling loop: at most every 100 ms reads Status. DEVICE_NEEDS_RESET:
  // prints "azote-guest: net device needs reset", resets the device and sets it up
  // again (frames in flight are lost, as on a wire); after 3 of them, or on FAILED or
  // a device that left DRIVER_OK, an io-error line and exit 1.
  void check();

  uint64_t rx_frames() const { return rx_frames_; }
  uint64_t tx_frames() const { return tx_frames_; }
  uint64_t rx_bad() const { return rx_bad_; }
  uint64_t notifies() const { return rxq_.notifies() + txq_.notifies(); }
  uint32_t resets() const { return resets_; }

  // "azote-guest: WHO io-error " -- the caller appends details, then die() prints the
  // line and exits 1.
  Line error_line() const;
  [[noreturn]] void die(Line& l) const;

 private:
  [[noreturn]] void setup_failed(const char* what, uint64_t value = ~0ull);
  [[noreturn]] void device_trouble(uint32_t status) const;
  void setup(bool first);
  void reclaim_tx();
  void check_status(uint64_t now);

  // Everything starts zero, so a constinit Device lives in .bss, not in the image.
  const char* who_ = nullptr;
  Options opts_{nullptr, 0, 0};
  uint64_t base_ = 0;
  uint32_t irq_ = 0;
  virtio::MmioDevice dev_;
  virtio::SplitQueue rxq_, txq_;
  uint64_t features_ = 0;
  uint8_t mac_[6] = {};
  uint16_t mtu_ = 0;
  uint16_t rx_n_ = 0, tx_n_ = 0;
  uint64_t rx_ring_ = 0, tx_ring_ = 0;  // queue memory, kept across a reset
  uint64_t rx_bufs_ = 0, tx_bufs_ = 0;
  bool rx_posted_[kMaxBuffers] = {};
  bool tx_busy_[kMaxBuffers] = {};
  uint16_t tx_free_[kMaxBuffers] = {};
  uint16_t tx_nfree_ = 0;
  uint16_t tx_cur_ = 0;  // slot handed out by tx_buffer(), not queued yet (if tx_have_)
  bool tx_have_ = false;
  uint64_t tsc_hz_ = 0;
  uint64_t next_check_ = 0;
  uint64_t rx_frames_ = 0, tx_frames_ = 0, rx_bad_ = 0;
  uint32_t resets_ = 0;
};

}  // namespace az::vnet
