// What a card implements to sit behind a vhost-user Backend.
//
// Threading: every call comes from the thread that runs the Backend (its
// run_once()). A device normally runs each started queue on its own worker; the
// contract that makes that safe is queue_stopped(): it returns only once the worker no
// longer touches that queue's ring, guest memory pointers or fds.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "guest_memory/guest_memory.hpp"
#include "vhost_user/inflight.hpp"
#include "vhost_user/message.hpp"

namespace azote::vhost_user {

// A queue that is ready to run: memory mapped, ring placed and validated, fds set.
// Everything here stays valid until queue_stopped(index) returns; fds are borrowed
// (dup them to keep them longer).
struct VringInfo {
  uint32_t index = 0;
  uint16_t size = 0;        // number of descriptors (power of two, <= max_queue_size)
  uint16_t next_avail = 0;  // avail ring position to resume from
  GuestAddress desc;        // descriptor table, 16-byte aligned, 16 * size bytes
  GuestAddress avail;       // avail ring, 2-byte aligned, 6 + 2 * size bytes
  GuestAddress used;        // used ring, 4-byte aligned, 6 + 8 * size bytes
  const GuestMemoryView* memory = nullptr;  // guest RAM as mapped by the backend
  // Eventfds the Session checked (fstat + /proc/self/fdinfo: an eventfd, not a
  // semaphore one where the kernel says so) and made non-blocking. The frontend keeps
  // its own descriptor of each and may still switch it back to blocking mode or leave a
  // semaphore count the kernel did not show: read them once per wakeup with
  // drain_eventfd() (base/eventfd.hpp), never in a loop until EAGAIN.
  int kick_fd = -1;  // readable when the driver kicked; -1: none (the device polls)
  int call_fd = -1;  // write 8 bytes to interrupt the driver; -1: none
  int err_fd = -1;   // write 8 bytes to report a queue error; -1: none
  // INFLIGHT_SHMFD tracking for this queue, or nullptr when not negotiated. When set,
  // next_avail was recomputed from it and `resubmit` lists heads the previous card
  // process (or an earlier start of this queue) took and never completed, oldest first:
  // process them before taking new ones from the avail ring.
  InflightQueue* inflight = nullptr;
  std::vector<uint16_t> resubmit;
  uint64_t features = 0;  // acked virtio features
};

class Device {
 public:
  virtual ~Device() = default;

  // Virtio feature bits offered to the driver. The backend adds
  // VHOST_USER_F_PROTOCOL_FEATURES itself and never offers VHOST_F_LOG_ALL.
  virtual uint64_t features() const = 0;
  // Protocol features the device wants offered; masked with what the backend
  // implements (kBackendProtocolFeatures). Offering INFLIGHT_SHMFD means the device
  // tracks every head through VringInfo::inflight.
  virtual uint64_t protocol_features() const = 0;
  virtual uint32_t num_queues() const = 0;      // 1..kMaxQueues
  virtual uint32_t max_queue_size() const = 0;  // power of two, 1..kMaxQueueSize

  // Virtio features acked by the driver (a subset of features(); bit 30 removed).
  virtual void set_features(uint64_t acked) = 0;

  // Config space read (GET_CONFIG). Must return exactly `size` bytes; any error makes
  // the backend answer with an empty config (the protocol's error signal).
  virtual Result<std::vector<uint8_t>, VuError> get_config(uint32_t offset, uint32_t size) {
    (void)offset;
    (void)size;
    return make_error(Errc::kUnsupported, "device has no config space");
  }
  // Config space write (SET_CONFIG); flags as in ConfigHeader. Refuse writes to
  // read-only fields. A refusal is a NACK to the frontend, not a disconnect.
  virtual Result<void, VuError> set_config(uint32_t offset, std::span<const uint8_t> data, uint32_t flags) {
    (void)offset;
    (void)data;
    (void)flags;
    return make_error(Errc::kUnsupported, "device config space is read-only");
  }

  // The queue may now be processed (started and enabled).
  virtual void queue_started(const VringInfo& v) = 0;
  // Stop processing the queue: return only when its worker no longer touches it, with
  // every request taken from the ring either completed (used) or, with INFLIGHT_SHMFD,
  // left marked in flight for resubmission. Returns the next avail index it would
  // have taken (the value GET_VRING_BASE reports). It runs on the backend's thread:
  // wait for the worker with a deadline (runtime::BoundedThread), never without one.
  virtual uint16_t queue_stopped(uint32_t index) = 0;

  // RESET_DEVICE (protocol feature RESET_DEVICE), or SET_STATUS 0 (protocol feature
  // STATUS): the driver reset the device. All queues are already stopped; return every
  // piece of driver-visible state (config fields the driver wrote, modes it chose, a
  // needs_reset() condition) to its initial value. The connection, memory table and
  // negotiated protocol features stay.
  virtual void device_reset() {}

  // GET_STATUS (protocol feature STATUS): true once the device has entered an error
  // state that only a device reset ends (virtio 1.2 §2.1.2, DEVICE_NEEDS_RESET), e.g.
  // the driver broke one of its queues. The backend ORs kDeviceStatusNeedsReset into
  // the status it reports. device_reset() and frontend_disconnected() clear it. Called
  // on the backend's thread; may read a flag the device's queue workers set (an atomic).
  virtual bool needs_reset() const { return false; }

  // The frontend went away; all queues are already stopped. The next frontend starts
  // a fresh negotiation (and a fresh device state, as after device_reset()).
  virtual void frontend_disconnected() {}
};

}  // namespace azote::vhost_user
