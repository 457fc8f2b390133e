// INFLIGHT_SHMFD: a shared region in which the backend records which descriptor heads
// it has taken from each avail ring and not yet returned through the used ring. The
// frontend only stores the fd (it never maps it) and hands it back with
// SET_INFLIGHT_FD after a card restart, so the new card process can resubmit those
// requests instead of losing them.
//
// Layout (ours; it follows the split-ring layout described in vhost-user.rst
// "Inflight I/O tracking"): num_queues queue areas back to back, each
// kInflightQueueAlign-aligned, of inflight_queue_bytes(queue_size) bytes:
//
//   +0   u64 features        0
//   +8   u16 version         1 (0: not initialised yet)
//   +10  u16 desc_num        queue_size
//   +12  u16 last_batch_head head of the last batch of completed heads (linked via next)
//   +14  u16 used_idx        used ring idx once that batch was fully recorded
//   +16  desc[desc_num], 16 bytes each:
//          +0 u8 inflight (1: taken, not completed)  +1..+5 padding
//          +6 u16 next (batch link)                  +8 u64 counter (take order)
//
// Protocol, per queue (one thread at a time, the queue's worker):
//   take head h from avail            -> begin(h)
//   for each completed head h         -> prepare_used(h)     (before used->idx moves)
//   publish used->idx = n             -> commit_used(n)
// After a restart, recover(used->idx) repairs a batch that was being completed when
// the old process died, and lists the heads still in flight, oldest first.
//
// The region is shared with the frontend, which is not trusted by the card: every
// field is read once into a local copy and checked; head indices coming out of the
// region are bounded by desc_num (from the validated SET_INFLIGHT_FD message, never
// re-read), and the batch walk takes at most desc_num steps.
#pragma once

#include <cstdint>
#include <vector>

namespace azote::vhost_user {

inline constexpr uint64_t kInflightQueueAlign = 64;
inline constexpr uint16_t kInflightVersion = 1;
inline constexpr uint64_t kInflightHeaderBytes = 16;
inline constexpr uint64_t kInflightDescBytes = 16;

// Bytes of one queue's area (header + descriptors, rounded up to the alignment).
constexpr uint64_t inflight_queue_bytes(uint32_t queue_size) {
  const uint64_t raw = kInflightHeaderBytes + kInflightDescBytes * queue_size;
  return (raw + kInflightQueueAlign - 1) / kInflightQueueAlign * kInflightQueueAlign;
}
constexpr uint64_t inflight_region_bytes(uint32_t num_queues, uint32_t queue_size) {
  return inflight_queue_bytes(queue_size) * num_queues;
}

class InflightQueue {
 public:
  // `area` is the queue's area inside a mapping that outlives this object, aligned to
  // kInflightQueueAlign. desc_num comes from the validated message.
  InflightQueue(uint8_t* area, uint16_t desc_num);

  // Writes a fresh header (version 1, desc_num) and clears every descriptor.
  void initialize();
  // True if the header says version 1 with our desc_num; false if uninitialised (version 0).
  // Other contents are reported as invalid through `valid`.
  bool header_ok(bool& valid) const;

  uint16_t desc_num() const { return desc_num_; }

  struct Recovery {
    std::vector<uint16_t> heads;  // taken before the restart and never completed, oldest first
    uint16_t next_avail = 0;      // used_ring_idx + heads.size(): where the avail walk resumes
  };
  // Repairs the last batch if the old process died between publishing used->idx and
  // recording it, then collects the in-flight heads. `used_ring_idx` is the ring's
  // current used->idx (read by the caller from guest memory); heads >= ring_size (the
  // vring's size, which may be smaller than desc_num) cannot be real and are dropped.
  Recovery recover(uint16_t used_ring_idx, uint32_t ring_size);

  // Head `head` was taken from the avail ring. False if head >= desc_num (caller bug).
  bool begin(uint16_t head);
  // Head `head` is about to be returned through the used ring (call for each head of a
  // batch, before the used->idx store that publishes them).
  bool prepare_used(uint16_t head);
  // used->idx now equals `used_ring_idx`; clears the batch's in-flight marks.
  void commit_used(uint16_t used_ring_idx);

  // Number of heads currently marked in flight (a scan; for tests and metrics).
  uint32_t count_inflight() const;

 private:
  uint8_t* desc(uint16_t i) const { return area_ + kInflightHeaderBytes + kInflightDescBytes * i; }

  uint8_t* area_;
  uint16_t desc_num_;
  uint64_t counter_ = 1;
  std::vector<uint16_t> batch_;  // heads prepared since the last commit (private copy)
};

}  // namespace azote::vhost_user
