#include "virtio/queue.hpp"

#include <atomic>
#include <limits>
#include <string>

#include "virtio/shared_memory.hpp"

namespace azote::virtio {
namespace {

using shared::load;
using shared::store;
using std::to_string;

constexpr uint64_t kMaxChainBytes = uint64_t{1} << 32;  // §2.7.5.2: at most 2^32 bytes per chain

bool wraps(uint64_t addr, uint64_t len) { return addr > std::numeric_limits<uint64_t>::max() - len; }

bool overlap(GuestAddress a, uint64_t alen, GuestAddress b, uint64_t blen) {
  return a.raw < b.raw + blen && b.raw < a.raw + alen;  // callers checked that neither wraps
}

std::string range_str(uint64_t addr, uint64_t len) {
  return "[" + to_string(addr) + ", +" + to_string(len) + ")";
}

}  // namespace

const char* to_string(QueueErrc c) {
  switch (c) {
    case QueueErrc::kNotReady: return "not-ready";
    case QueueErrc::kBadConfig: return "bad-config";
    case QueueErrc::kAvailIndex: return "avail-index";
    case QueueErrc::kDescIndex: return "desc-index";
    case QueueErrc::kChainTooLong: return "chain-too-long";
    case QueueErrc::kBadBuffer: return "bad-buffer";
    case QueueErrc::kBadIndirect: return "bad-indirect";
    case QueueErrc::kBadOrder: return "bad-order";
    case QueueErrc::kTooLarge: return "too-large";
    case QueueErrc::kBadCompletion: return "bad-completion";
    case QueueErrc::kBroken: return "broken";
  }
  return "?";
}

Result<void, QueueError> SplitQueue::configure(uint16_t size, GuestAddress desc, GuestAddress avail,
                                               GuestAddress used, bool event_idx, bool indirect_desc) {
  // vhost-user may send SET_VRING_BASE before SET_VRING_ADDR: the indices survive.
  const uint16_t next_avail = last_avail_, next_used = used_idx_;
  reset();
  set_next_avail(next_avail);
  set_next_used(next_used);
  auto bad = [&](std::string why) {
    ++stats_.errors[static_cast<size_t>(QueueErrc::kBadConfig)];
    return make_error(QueueErrc::kBadConfig, std::move(why));
  };
  if (size == 0 || !std::has_single_bit(size) || size > kMaxQueueSize)
    return bad("queue size " + to_string(size) + " is not a power of two in [1, 32768]");

  struct Part {
    const char* name;
    GuestAddress gpa;
    uint64_t len;
    uint64_t align;
    uint8_t* host = nullptr;
  };
  Part parts[3] = {{"descriptor table", desc, desc_table_size(size), kDescTableAlign},
                   {"available ring", avail, avail_ring_size(size), kAvailRingAlign},
                   {"used ring", used, used_ring_size(size), kUsedRingAlign}};
  for (Part& p : parts) {
    if (p.gpa.raw % p.align != 0)
      return bad(std::string(p.name) + " at " + to_string(p.gpa.raw) + " is not " + to_string(p.align) +
                 "-byte aligned");
    if (wraps(p.gpa.raw, p.len))
      return bad(std::string(p.name) + " " + range_str(p.gpa.raw, p.len) + " wraps around");
    p.host = mem_->range(p.gpa, p.len);
    if (p.host == nullptr)
      return bad(std::string(p.name) + " " + range_str(p.gpa.raw, p.len) + " is not inside guest memory");
    // Atomic accesses need the host address aligned too (a vhost-user mapping with an odd
    // mmap offset could break that).
    if (reinterpret_cast<uintptr_t>(p.host) % p.align != 0)  // NOLINT(reinterpret-cast)
      return bad(std::string(p.name) + " is mapped at a misaligned host address");
  }
  for (int i = 0; i < 3; ++i) {
    for (int j = i + 1; j < 3; ++j) {
      if (overlap(parts[i].gpa, parts[i].len, parts[j].gpa, parts[j].len))
        return bad(std::string(parts[i].name) + " overlaps the " + parts[j].name);
    }
  }

  size_ = size;
  desc_ = parts[0].host;
  avail_ = parts[1].host;
  used_ = parts[2].host;
  event_idx_ = event_idx;
  indirect_desc_ = indirect_desc;
  // The private copy of an indirect table never exceeds size entries (walk_indirect), so
  // this one allocation serves every pop.
  if (indirect_desc) indirect_.resize(size_);
  ready_ = true;
  return {};
}

void SplitQueue::reset() {
  ready_ = false;
  broken_ = false;
  event_idx_ = false;
  indirect_desc_ = false;
  notify_enabled_ = true;
  size_ = 0;
  desc_ = avail_ = used_ = nullptr;
  last_avail_ = avail_cache_ = used_idx_ = signalled_used_ = 0;
  indirect_.clear();
  indirect_.shrink_to_fit();
  last_error_.reset();
}

Unexpected<QueueError> SplitQueue::fail(QueueErrc code, std::string context) {
  broken_ = true;
  ++stats_.errors[static_cast<size_t>(code)];
  last_error_ = QueueError{code, 0, std::move(context)};
  return Unexpected{*last_error_};
}

Result<uint16_t, QueueError> SplitQueue::load_avail_idx() {
  // Acquire: the ring entries and descriptors the driver published before this idx are
  // visible to the reads that follow (§2.7.13: the driver's barrier before its idx update).
  const uint16_t idx = load<uint16_t>(avail_ + avail_idx_offset(), std::memory_order_acquire);
  const uint16_t pending = static_cast<uint16_t>(idx - last_avail_);
  if (pending > size_)
    return fail(QueueErrc::kAvailIndex, "avail idx " + to_string(idx) + " is " + to_string(pending) +
                                            " entries ahead of " + to_string(last_avail_) +
                                            ", more than the queue size " + to_string(size_));
  avail_cache_ = idx;
  return idx;
}

Result<std::optional<Chain>, QueueError> SplitQueue::pop() {
  Chain c;
  AZOTE_TRY(got, pop_into(c));
  if (!got) return std::optional<Chain>();
  return std::optional<Chain>(std::move(c));
}

Result<bool, QueueError> SplitQueue::pop_into(Chain& out) {
  if (!ready_) {
    ++stats_.errors[static_cast<size_t>(QueueErrc::kNotReady)];
    return make_error(QueueErrc::kNotReady, "queue is not configured");
  }
  if (broken_) {
    ++stats_.errors[static_cast<size_t>(QueueErrc::kBroken)];
    return make_error(QueueErrc::kBroken, "queue is broken");
  }
  // avail->idx is read only when every entry below the previous value has been taken.
  if (avail_cache_ == last_avail_) {
    AZOTE_TRY(idx, load_avail_idx());
    if (idx == last_avail_) {
      if (!event_idx_ || !notify_enabled_) return false;
      // Empty with EVENT_IDX: ask for a notification at the next entry, then look again
      // (the driver may have added one before it could see our avail_event).
      store<uint16_t>(used_ + avail_event_offset(size_), last_avail_, std::memory_order_relaxed);
      std::atomic_thread_fence(std::memory_order_seq_cst);
      AZOTE_TRY(again, load_avail_idx());
      if (again == last_avail_) return false;
    }
  }

  const uint16_t head =
      load<uint16_t>(avail_ + avail_ring_offset(last_avail_ & (size_ - 1)), std::memory_order_relaxed);
  if (head >= size_)
    return fail(QueueErrc::kDescIndex, "avail ring entry " + to_string(last_avail_) + " names head " +
                                           to_string(head) + " >= queue size " + to_string(size_));
  out.clear();
  out.head = head;
  AZOTE_TRYV(walk_chain(head, out));
  ++last_avail_;
  ++stats_.popped;
  return true;
}

// Direct descriptors: at most size_ steps, each descriptor copied once per step; an
// indirect descriptor ends the walk (§2.7.5.3: "zero or more normal chained descriptors
// followed by a single descriptor with VIRTQ_DESC_F_INDIRECT").
Result<void, QueueError> SplitQueue::walk_chain(uint16_t head, Chain& out) {
  uint32_t buffers = 0;
  uint16_t idx = head;
  for (uint32_t steps = 1;; ++steps) {
    if (steps > size_)
      return fail(QueueErrc::kChainTooLong, "chain from head " + to_string(head) + " has more than " +
                                                to_string(size_) + " descriptors (a loop?)");
    virtq_desc d;
    shared::copy_in(&d, desc_ + 16 * uint64_t{idx}, sizeof d);
    if ((d.flags & kDescFIndirect) != 0) return walk_indirect(d, out, buffers);
    AZOTE_TRYV(add_buffer(d, out, buffers));
    if ((d.flags & kDescFNext) == 0) return {};
    if (d.next >= size_)
      return fail(QueueErrc::kDescIndex, "descriptor " + to_string(idx) + " chains to " + to_string(d.next) +
                                             " >= queue size " + to_string(size_));
    idx = d.next;
  }
}

// Indirect table (§2.7.5.3). Our rule: VIRTIO_F_INDIRECT_DESC negotiated; the descriptor
// pointing at the table has no NEXT (its WRITE flag is ignored, as the spec requires);
// the table length is a non-zero multiple of 16 and at most queue size * 16 (the spec
// bounds a chain by the queue size), lies inside guest memory and is copied once; entries
// may not be indirect themselves; the walk inside the table takes at most len/16 steps;
// buffers of the whole chain (direct plus indirect) are at most queue size.
Result<void, QueueError> SplitQueue::walk_indirect(const virtq_desc& d, Chain& out, uint32_t& buffers) {
  if (!indirect_desc_)
    return fail(QueueErrc::kBadIndirect, "indirect descriptor but VIRTIO_F_INDIRECT_DESC was not negotiated");
  if ((d.flags & kDescFNext) != 0)
    return fail(QueueErrc::kBadIndirect, "indirect descriptor also has VIRTQ_DESC_F_NEXT");
  if (d.len == 0 || d.len % sizeof(virtq_desc) != 0 || d.len > desc_table_size(size_))
    return fail(QueueErrc::kBadIndirect, "indirect table length " + to_string(d.len) +
                                             " is not a non-zero multiple of 16 up to " +
                                             to_string(desc_table_size(size_)));
  const uint8_t* table = wraps(d.addr, d.len) ? nullptr : mem_->range(GuestAddress(d.addr), d.len);
  if (table == nullptr)
    return fail(QueueErrc::kBadIndirect,
                "indirect table " + range_str(d.addr, d.len) + " is not inside guest memory");
  const uint32_t n = d.len / sizeof(virtq_desc);
  shared::copy_in(indirect_.data(), table, d.len);

  uint32_t i = 0;
  for (uint32_t steps = 1;; ++steps) {
    if (steps > n)
      return fail(QueueErrc::kChainTooLong, "indirect chain takes more than " + to_string(n) + " steps (a loop?)");
    const virtq_desc& e = indirect_[i];
    if ((e.flags & kDescFIndirect) != 0)
      return fail(QueueErrc::kBadIndirect, "indirect table entry " + to_string(i) + " is itself indirect");
    AZOTE_TRYV(add_buffer(e, out, buffers));
    if ((e.flags & kDescFNext) == 0) return {};
    if (e.next >= n)
      return fail(QueueErrc::kDescIndex, "indirect entry " + to_string(i) + " chains to " + to_string(e.next) +
                                             " outside its table of " + to_string(n));
    i = e.next;
  }
}

Result<void, QueueError> SplitQueue::add_buffer(const virtq_desc& d, Chain& out, uint32_t& buffers) {
  if (++buffers > size_)
    return fail(QueueErrc::kChainTooLong, "chain has more than " + to_string(size_) + " buffers");
  uint8_t* host = wraps(d.addr, d.len) ? nullptr : mem_->range(GuestAddress(d.addr), d.len);
  if (host == nullptr)
    return fail(QueueErrc::kBadBuffer, "buffer " + range_str(d.addr, d.len) + " is not inside guest memory");
  const Buffer b{GuestAddress(d.addr), d.len, host};
  if ((d.flags & kDescFWrite) != 0) {
    out.writable.push_back(b);
    out.writable_bytes += d.len;
  } else {
    // §2.7.4.2: device-writable elements come after all device-readable ones.
    if (!out.writable.empty())
      return fail(QueueErrc::kBadOrder, "device-readable buffer " + range_str(d.addr, d.len) +
                                            " follows a device-writable one");
    out.readable.push_back(b);
    out.readable_bytes += d.len;
  }
  if (out.readable_bytes + out.writable_bytes > kMaxChainBytes)
    return fail(QueueErrc::kTooLarge, "chain describes more than 2^32 bytes");
  return {};
}

Result<void, QueueError> SplitQueue::push_used(uint16_t head, uint32_t written) {
  if (!ready_) {
    ++stats_.errors[static_cast<size_t>(QueueErrc::kNotReady)];
    return make_error(QueueErrc::kNotReady, "queue is not configured");
  }
  if (head >= size_) {
    ++stats_.errors[static_cast<size_t>(QueueErrc::kBadCompletion)];
    return make_error(QueueErrc::kBadCompletion,
                      "completion for head " + to_string(head) + " >= queue size " + to_string(size_));
  }
  uint8_t* elem = used_ + used_ring_offset(used_idx_ & (size_ - 1));
  store<uint32_t>(elem + offsetof(virtq_used_elem, id), head, std::memory_order_relaxed);
  store<uint32_t>(elem + offsetof(virtq_used_elem, len), written, std::memory_order_relaxed);
  ++used_idx_;
  // Release: the element (and the data the device wrote into the buffers) is visible
  // before the driver can see the new idx (§2.7.8: len is set before idx is updated).
  store<uint16_t>(used_ + used_idx_offset(), used_idx_, std::memory_order_release);
  ++stats_.completed;
  return {};
}

bool SplitQueue::needs_interrupt() {
  if (!ready_) return false;
  // Our used->idx store must be globally visible before we read the driver's suppression
  // field, or we could miss a notification the driver is waiting for (store -> load order).
  std::atomic_thread_fence(std::memory_order_seq_cst);
  const uint16_t old = signalled_used_;
  const uint16_t now = used_idx_;
  signalled_used_ = now;
  if (event_idx_) {
    // §2.7.7: notify when the used idx passed used_event (16-bit arithmetic, wraps).
    const uint16_t used_event = load<uint16_t>(avail_ + used_event_offset(size_), std::memory_order_relaxed);
    return need_event(used_event, now, old);
  }
  if (old == now) return false;
  const uint16_t flags = load<uint16_t>(avail_ + avail_flags_offset(), std::memory_order_relaxed);
  return (flags & kAvailFNoInterrupt) == 0;
}

void SplitQueue::set_notification(bool enable) {
  notify_enabled_ = enable;
  if (!ready_) return;
  if (event_idx_) {
    // §2.7.10: with EVENT_IDX used->flags stays 0; avail_event says where to notify us.
    if (enable) store<uint16_t>(used_ + avail_event_offset(size_), last_avail_, std::memory_order_relaxed);
  } else {
    store<uint16_t>(used_ + used_flags_offset(), enable ? 0 : kUsedFNoNotify, std::memory_order_relaxed);
  }
  // Publish before the caller looks at avail->idx again.
  std::atomic_thread_fence(std::memory_order_seq_cst);
}

}  // namespace azote::virtio
