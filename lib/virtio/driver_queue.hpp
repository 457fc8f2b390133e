// The driver side of one split virtqueue (virtio 1.2 §2.7), for processes that drive a
// device served by a card (azote-tap-bridge is the first): lays out the descriptor
// table, available and used rings in memory it is given (memory shared with the
// device), adds chains of buffers, publishes them and takes completions.
//
// The device is NOT trusted. Everything this queue decides on is private: the free
// list, which heads are in flight, each chain's descriptors and writable length. The
// shared rings are only written (descriptors, avail entries, avail->idx, used_event)
// except for three device-written fields, each read once into a private copy:
//  - used->idx (acquire): it may move ahead by at most the number of chains in flight;
//  - each used element (id, len): id must be the head of a chain in flight, len at most
//    that chain's device-writable bytes;
//  - used->flags / avail_event: hints for kick suppression, any value is legal.
// A violation breaks the queue: take() returns the reason once, then kBroken. Nothing is
// ever read or written outside the rings and the caller's buffers (whose addresses come
// from the caller, never from the device).
//
// Ordering: descriptors and avail entries are written, then avail->idx is stored with
// release; a full fence separates that store from reading the device's suppression
// field (and used_event from the re-check of used->idx in rearm()); used elements are
// read after an acquire load of used->idx.
//
// No allocation after create(): add(), publish() and take() use fixed arrays sized by
// the queue. One DriverQueue is used by one thread.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "base/error.hpp"
#include "guest_memory/guest_memory.hpp"
#include "virtio/spec.hpp"

namespace azote::virtio {

enum class DriverQueueErrc {
  kBadConfig = 1,  // create(): size, alignment or placement of the rings
  kNoSpace,        // add(): not enough free descriptors (retry after take())
  kBadBuffer,      // add(): empty chain, a buffer outside memory, readable after writable
  kUsedIndex,      // the device moved used->idx past the chains in flight
  kUsedId,         // a used element names no chain in flight
  kUsedLen,        // a used element's len exceeds the chain's device-writable bytes
  kBroken,         // the device broke the queue earlier
};
using DriverQueueError = Error<DriverQueueErrc>;
const char* to_string(DriverQueueErrc c);

// One buffer of a chain, as the driver posts it.
struct DriverBuffer {
  GuestAddress gpa;
  uint32_t len = 0;
  bool device_writable = false;
};

// A completed chain: its head, the bytes the device says it wrote (validated), and the
// token the caller gave add().
struct UsedChain {
  uint16_t head = 0;
  uint32_t len = 0;
  uint64_t token = 0;
};

// Where the three parts of a ring of `size` entries go when laid out from `base`
// (16-byte aligned): descriptor table, available ring (with used_event), used ring
// (4-byte aligned, with avail_event). `bytes`: from base to the end of the used ring.
struct RingLayout {
  GuestAddress desc, avail, used;
  uint64_t bytes = 0;
};
RingLayout ring_layout(GuestAddress base, uint16_t size);

class DriverQueue {
 public:
  // Validates the layout (size a power of two in [1, 32768]; parts aligned 16/2/4 in
  // guest and host address, each inside one region of `mem`, pairwise disjoint) and
  // zeroes the rings. `event_idx`: VIRTIO_F_EVENT_IDX was negotiated. `mem` must
  // outlive the queue.
  static Result<DriverQueue, DriverQueueError> create(const GuestMemoryView& mem, uint16_t size, GuestAddress desc,
                                                      GuestAddress avail, GuestAddress used, bool event_idx);

  DriverQueue(DriverQueue&&) = default;
  DriverQueue& operator=(DriverQueue&&) = default;

  // Puts `bufs` (device-readable ones first) in free descriptors as one chain and
  // queues its head; visible to the device at the next publish(). Returns the head.
  Result<uint16_t, DriverQueueError> add(std::span<const DriverBuffer> bufs, uint64_t token);
  // Makes every chain added since the last publish() visible (avail->idx, release).
  // True when the device asked to be notified of them (§2.7.13.4: EVENT_IDX
  // avail_event, or used->flags without NO_NOTIFY); false when nothing was added.
  bool publish();

  // The next completion: nullopt when there is none, an error when the device broke a
  // rule (the queue is then broken). The chain's descriptors are free again.
  Result<std::optional<UsedChain>, DriverQueueError> take();
  // After take() returned nullopt, before sleeping on the call eventfd: asks for an
  // interrupt at the next completion (EVENT_IDX: used_event = what was taken), then
  // looks again. True: completions arrived meanwhile, take() again (no interrupt may
  // come for them).
  bool rearm();

  uint16_t size() const { return static_cast<uint16_t>(size_); }
  bool event_idx() const { return event_idx_; }
  uint16_t free_descriptors() const { return num_free_; }
  uint16_t in_flight() const { return in_flight_; }  // chains added and not yet taken
  bool broken() const { return broken_; }
  const std::optional<DriverQueueError>& last_error() const { return last_error_; }
  // avail->idx as last published (= the vhost-user vring base after a clean stop).
  uint16_t avail_idx() const { return avail_idx_; }

 private:
  enum HeadState : uint8_t { kFree = 0, kAdded, kPublished };
  DriverQueue() = default;
  Unexpected<DriverQueueError> fail(DriverQueueErrc code, std::string context);

  const GuestMemoryView* mem_ = nullptr;
  uint32_t size_ = 0;
  bool event_idx_ = false;
  bool broken_ = false;
  uint8_t* desc_ = nullptr;
  uint8_t* avail_ = nullptr;
  uint8_t* used_ = nullptr;
  // Private state, indexed by descriptor: the next descriptor (free list and chains).
  std::vector<uint16_t> next_;
  // Indexed by head: its state, chain length, writable bytes, token.
  std::vector<HeadState> state_;
  std::vector<uint16_t> chain_len_;
  std::vector<uint64_t> writable_;
  std::vector<uint64_t> token_;
  std::vector<uint16_t> avail_shadow_;  // what we wrote into the avail ring
  uint16_t free_head_ = 0;
  uint16_t num_free_ = 0;
  uint16_t in_flight_ = 0;   // added, not yet taken
  uint16_t published_ = 0;   // published, not yet taken
  uint16_t avail_idx_ = 0;   // avail->idx as published
  uint16_t pending_ = 0;     // chains added since the last publish()
  uint16_t last_used_ = 0;   // next used ring index to take
  uint16_t used_cache_ = 0;  // last used->idx read (validated)
  std::optional<DriverQueueError> last_error_;
};

}  // namespace azote::virtio
