// The device side of one split virtqueue (virtio 1.2 §2.7) over guest memory that a
// malicious driver may rewrite at any moment, from another vCPU, while we read it.
//
// Rules (see DESIGN.md):
//  - every shared field is read once into a private copy, and only the copy is validated
//    and used (avail->idx once per refill, each ring entry once, each descriptor once per
//    step of the walk, an indirect table once as a whole);
//  - all work per pop() is bounded by O(queue size), whatever the guest wrote;
//  - a chain that breaks a rule breaks the queue: pop() fails with the reason, and every
//    later pop() fails with kBroken until reset()/configure(). The device then sets
//    DEVICE_NEEDS_RESET (§2.1.2); nothing here aborts, logs or blocks.
//
// One SplitQueue is used by one thread at a time. It holds host pointers to the rings that
// GuestMemoryView::range() returned at configure(); after the memory table changes
// (vhost-user SET_MEM_TABLE) the owner must configure() again.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <vector>

#include "base/error.hpp"
#include "guest_memory/guest_memory.hpp"
#include "virtio/spec.hpp"

namespace azote::virtio {

enum class QueueErrc {
  kNotReady = 1,   // pop()/push_used() before a successful configure()
  kBadConfig,      // configure(): size, alignment or placement of the rings
  kAvailIndex,     // avail->idx moved by more than the queue size
  kDescIndex,      // a head or next index outside the (direct or indirect) table
  kChainTooLong,   // more than queue-size descriptors or buffers: a loop or an oversized chain
  kBadBuffer,      // a buffer outside guest memory, crossing a region or wrapping
  kBadIndirect,    // indirect table misuse: nested, with NEXT, bad length, outside memory
  kBadOrder,       // a device-readable buffer after a device-writable one
  kTooLarge,       // the chain describes more than 2^32 bytes (§2.7.5.2)
  kBadCompletion,  // push_used() with a head outside the queue (a device bug)
  kBroken,         // the queue broke earlier; reset() or configure() it
};
inline constexpr size_t kQueueErrcCount = static_cast<size_t>(QueueErrc::kBroken) + 1;
using QueueError = Error<QueueErrc>;
const char* to_string(QueueErrc c);

// One guest buffer of a chain, validated when popped: [gpa, gpa+len) lies inside one
// region of guest memory and `host` points at its first byte. The bytes themselves are
// still guest-shared: copy what you parse (blk.hpp does), use the pointer for bulk data.
struct Buffer {
  GuestAddress gpa;
  uint32_t len = 0;
  uint8_t* host = nullptr;
};

// A popped descriptor chain: device-readable buffers (in chain order), then
// device-writable ones. Complete it with push_used(head, bytes_written).
struct Chain {
  uint16_t head = 0;
  std::vector<Buffer> readable;
  std::vector<Buffer> writable;
  uint64_t readable_bytes = 0;
  uint64_t writable_bytes = 0;

  void clear() {
    head = 0;
    readable.clear();
    writable.clear();
    readable_bytes = writable_bytes = 0;
  }
};

struct QueueStats {
  uint64_t popped = 0;     // chains handed to the device
  uint64_t completed = 0;  // push_used() calls that reached the used ring
  std::array<uint64_t, kQueueErrcCount> errors{};  // by QueueErrc (kBroken: pops refused)
  uint64_t errors_of(QueueErrc c) const { return errors[static_cast<size_t>(c)]; }
};

class SplitQueue {
 public:
  // `mem` must outlive the queue.
  explicit SplitQueue(const GuestMemoryView& mem) : mem_(&mem) {}

  // Validates and adopts a ring layout (the vhost-user SET_VRING_NUM + SET_VRING_ADDR data):
  // size a power of two in [1, 32768]; desc/avail/used aligned to 16/2/4 (in guest and
  // host address); each part, event fields included, inside one region of guest memory
  // without wrapping; the three parts pairwise disjoint. Clears the broken flag and the
  // notification state; keeps next_avail()/next_used() (vhost-user may send SET_VRING_BASE
  // before SET_VRING_ADDR) and the stats. `indirect_desc` says whether
  // VIRTIO_F_INDIRECT_DESC was negotiated; an indirect descriptor without it breaks the queue.
  Result<void, QueueError> configure(uint16_t size, GuestAddress desc, GuestAddress avail,
                                     GuestAddress used, bool event_idx, bool indirect_desc = true);
  // Back to the unconfigured state (device reset): indices to 0, not broken. Stats are kept.
  void reset();

  bool ready() const { return ready_; }
  uint16_t size() const { return static_cast<uint16_t>(size_); }
  bool event_idx() const { return event_idx_; }

  // vhost-user SET_VRING_BASE / GET_VRING_BASE: the next avail ring index the device will
  // read. A backend that resumes a running queue also sets the used index (normally to the
  // same value: all in-flight chains were completed before the queue was stopped).
  void set_next_avail(uint16_t idx) {
    last_avail_ = idx;
    avail_cache_ = idx;
  }
  uint16_t next_avail() const { return last_avail_; }
  void set_next_used(uint16_t idx) {
    used_idx_ = idx;
    signalled_used_ = idx;
  }
  uint16_t next_used() const { return used_idx_; }

  // Takes the next available chain: nullopt when the ring is empty, an error when the
  // guest broke a rule (the queue is then broken). Allocates the Chain's vectors; the
  // data path uses pop_into() with a reused Chain instead.
  Result<std::optional<Chain>, QueueError> pop();
  // Same, into `out` (its capacity is reused): true if a chain was taken, false if empty.
  // `out` is unspecified after an error.
  Result<bool, QueueError> pop_into(Chain& out);

  // Returns the chain `head` to the driver with `written` bytes written into its writable
  // buffers: the used element first, then used->idx with release ordering. Allowed on a
  // broken queue so in-flight requests can finish; refused only for a head >= size (a
  // device bug, counted, does not break the queue) or an unconfigured queue.
  Result<void, QueueError> push_used(uint16_t head, uint32_t written);

  // After one or more push_used(): should the driver be notified (interrupt / call fd)?
  // EVENT_IDX: whether used->idx crossed used_event since the last call (§2.7.7, with
  // 16-bit wrap-around); otherwise whether anything was used and avail->flags lacks
  // VIRTQ_AVAIL_F_NO_INTERRUPT. Full barrier before reading the driver's field.
  bool needs_interrupt();

  // Asks the driver to (not) notify us of new buffers (§2.7.10): used->flags NO_NOTIFY
  // without EVENT_IDX; with EVENT_IDX, enabling publishes avail_event = next_avail(), and
  // pop() republishes it whenever it finds the ring empty, so a device never sleeps on a
  // stale avail_event. Disabling with EVENT_IDX writes nothing (the stale avail_event lets
  // through at most one notification per 2^16 buffers; spurious ones are allowed).
  // After enabling, pop() until empty before sleeping: buffers added meanwhile raised no
  // notification.
  void set_notification(bool enable);

  bool broken() const { return broken_; }
  const std::optional<QueueError>& last_error() const { return last_error_; }
  const QueueStats& stats() const { return stats_; }

 private:
  Unexpected<QueueError> fail(QueueErrc code, std::string context);
  Result<void, QueueError> walk_chain(uint16_t head, Chain& out);
  Result<void, QueueError> add_buffer(const virtq_desc& d, Chain& out, uint32_t& buffers);
  Result<void, QueueError> walk_indirect(const virtq_desc& d, Chain& out, uint32_t& buffers);
  // Loads avail->idx (acquire) and checks it against last_avail_.
  Result<uint16_t, QueueError> load_avail_idx();

  const GuestMemoryView* mem_;
  bool ready_ = false;
  bool broken_ = false;
  bool event_idx_ = false;
  bool indirect_desc_ = false;
  bool notify_enabled_ = true;
  uint32_t size_ = 0;
  uint8_t* desc_ = nullptr;
  uint8_t* avail_ = nullptr;
  uint8_t* used_ = nullptr;
  uint16_t last_avail_ = 0;      // next avail ring index to read
  uint16_t avail_cache_ = 0;     // last avail->idx read (validated); entries below it are ours
  uint16_t used_idx_ = 0;        // next used ring index to write (the device owns used->idx)
  uint16_t signalled_used_ = 0;  // used_idx_ at the last needs_interrupt()
  std::vector<virtq_desc> indirect_;  // private copy of one indirect table (capacity: size)
  std::optional<QueueError> last_error_;
  QueueStats stats_;
};

}  // namespace azote::virtio
