#include "virtio/driver_queue.hpp"

#include <atomic>
#include <bit>
#include <cstring>
#include <limits>
#include <string>

#include "virtio/shared_memory.hpp"

namespace azote::virtio {
namespace {

using shared::load;
using shared::store;
using std::to_string;

uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

bool wraps(uint64_t addr, uint64_t len) { return addr > std::numeric_limits<uint64_t>::max() - len; }

}  // namespace

const char* to_string(DriverQueueErrc c) {
  switch (c) {
    case DriverQueueErrc::kBadConfig: return "bad-config";
    case DriverQueueErrc::kNoSpace: return "no-space";
    case DriverQueueErrc::kBadBuffer: return "bad-buffer";
    case DriverQueueErrc::kUsedIndex: return "used-index";
    case DriverQueueErrc::kUsedId: return "used-id";
    case DriverQueueErrc::kUsedLen: return "used-len";
    case DriverQueueErrc::kBroken: return "broken";
  }
  return "?";
}

RingLayout ring_layout(GuestAddress base, uint16_t size) {
  RingLayout l;
  l.desc = GuestAddress(align_up(base.raw, kDescTableAlign));
  l.avail = GuestAddress(l.desc.raw + desc_table_size(size));
  l.used = GuestAddress(align_up(l.avail.raw + avail_ring_size(size), kUsedRingAlign));
  l.bytes = l.used.raw + used_ring_size(size) - base.raw;
  return l;
}

Result<DriverQueue, DriverQueueError> DriverQueue::create(const GuestMemoryView& mem, uint16_t size, GuestAddress desc,
                                                          GuestAddress avail, GuestAddress used, bool event_idx) {
  auto bad = [](std::string why) { return make_error(DriverQueueErrc::kBadConfig, std::move(why)); };
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
    if (wraps(p.gpa.raw, p.len)) return bad(std::string(p.name) + " at " + to_string(p.gpa.raw) + " wraps around");
    p.host = mem.range(p.gpa, p.len);
    if (p.host == nullptr)
      return bad(std::string(p.name) + " [" + to_string(p.gpa.raw) + ", +" + to_string(p.len) +
                 ") is not inside the shared memory");
    if (reinterpret_cast<uintptr_t>(p.host) % p.align != 0)  // NOLINT(reinterpret-cast)
      return bad(std::string(p.name) + " is mapped at a misaligned host address");
  }
  for (int i = 0; i < 3; ++i)
    for (int j = i + 1; j < 3; ++j)
      if (parts[i].gpa.raw < parts[j].gpa.raw + parts[j].len && parts[j].gpa.raw < parts[i].gpa.raw + parts[i].len)
        return bad(std::string(parts[i].name) + " overlaps the " + parts[j].name);

  DriverQueue q;
  q.mem_ = &mem;
  q.size_ = size;
  q.event_idx_ = event_idx;
  q.desc_ = parts[0].host;
  q.avail_ = parts[1].host;
  q.used_ = parts[2].host;
  // The device is not running yet: plain writes. Flags 0 (interrupts wanted), indices 0,
  // event fields 0.
  std::memset(q.desc_, 0, parts[0].len);
  std::memset(q.avail_, 0, parts[1].len);
  std::memset(q.used_, 0, parts[2].len);
  q.next_.resize(size);
  for (uint32_t i = 0; i < size; ++i) q.next_[i] = static_cast<uint16_t>((i + 1) % size);
  q.state_.assign(size, kFree);
  q.chain_len_.assign(size, 0);
  q.writable_.assign(size, 0);
  q.token_.assign(size, 0);
  q.avail_shadow_.assign(size, 0);
  q.free_head_ = 0;
  q.num_free_ = size;
  return q;
}

Unexpected<DriverQueueError> DriverQueue::fail(DriverQueueErrc code, std::string context) {
  broken_ = true;
  DriverQueueError e{code, 0, std::move(context)};
  last_error_ = e;
  return Unexpected{std::move(e)};
}

Result<uint16_t, DriverQueueError> DriverQueue::add(std::span<const DriverBuffer> bufs, uint64_t token) {
  if (broken_) return make_error(DriverQueueErrc::kBroken, "the device broke the queue earlier");
  if (bufs.empty()) return make_error(DriverQueueErrc::kBadBuffer, "an empty chain");
  if (bufs.size() > size_)
    return make_error(DriverQueueErrc::kBadBuffer,
                      "a chain of " + to_string(bufs.size()) + " buffers in a queue of " + to_string(size_));
  if (bufs.size() > num_free_)
    return make_error(DriverQueueErrc::kNoSpace,
                      to_string(bufs.size()) + " descriptors wanted, " + to_string(num_free_) + " free");
  uint64_t writable = 0;
  bool seen_writable = false;
  for (const auto& b : bufs) {
    if (mem_->range(b.gpa, b.len) == nullptr)
      return make_error(DriverQueueErrc::kBadBuffer, "buffer [" + to_string(b.gpa.raw) + ", +" + to_string(b.len) +
                                                         ") is not inside the shared memory");
    if (!b.device_writable && seen_writable)
      return make_error(DriverQueueErrc::kBadBuffer, "a device-readable buffer after a device-writable one");
    seen_writable |= b.device_writable;
    if (b.device_writable) writable += b.len;
  }
  const uint16_t head = free_head_;
  uint16_t d = head;
  for (size_t i = 0; i < bufs.size(); ++i) {
    const bool last = i + 1 == bufs.size();
    const virtq_desc out{bufs[i].gpa.raw, bufs[i].len,
                         static_cast<uint16_t>((bufs[i].device_writable ? kDescFWrite : 0) | (last ? 0 : kDescFNext)),
                         last ? uint16_t{0} : next_[d]};
    shared::copy_out(desc_ + desc_table_size(d), &out, sizeof out);
    if (!last) d = next_[d];
  }
  free_head_ = next_[d];  // the chain keeps its private links in next_
  num_free_ = static_cast<uint16_t>(num_free_ - bufs.size());
  state_[head] = kAdded;
  chain_len_[head] = static_cast<uint16_t>(bufs.size());
  writable_[head] = writable;
  token_[head] = token;
  const uint16_t slot = static_cast<uint16_t>((avail_idx_ + pending_) & (size_ - 1));
  avail_shadow_[slot] = head;
  store<uint16_t>(avail_ + avail_ring_offset(slot), head, std::memory_order_relaxed);
  ++pending_;
  ++in_flight_;
  return head;
}

bool DriverQueue::publish() {
  if (pending_ == 0 || broken_) return false;
  const uint16_t old = avail_idx_;
  for (uint16_t i = 0; i < pending_; ++i) state_[avail_shadow_[static_cast<uint16_t>(old + i) & (size_ - 1)]] = kPublished;
  avail_idx_ = static_cast<uint16_t>(old + pending_);
  published_ = static_cast<uint16_t>(published_ + pending_);
  pending_ = 0;
  // Descriptors and ring entries before the index (§2.7.13.3).
  store<uint16_t>(avail_ + avail_idx_offset(), avail_idx_, std::memory_order_release);
  // The index must be visible before we read the device's suppression field, or we could
  // skip a kick the device is waiting for (§2.7.13.4).
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (event_idx_) {
    const uint16_t avail_event = load<uint16_t>(used_ + avail_event_offset(size_), std::memory_order_relaxed);
    return need_event(avail_event, avail_idx_, old);
  }
  const uint16_t flags = load<uint16_t>(used_ + used_flags_offset(), std::memory_order_relaxed);
  return (flags & kUsedFNoNotify) == 0;
}

Result<std::optional<UsedChain>, DriverQueueError> DriverQueue::take() {
  if (broken_) return make_error(DriverQueueErrc::kBroken, "the device broke the queue earlier");
  if (last_used_ == used_cache_) {
    // One acquire load: the elements below it are complete (§2.7.8).
    const uint16_t idx = load<uint16_t>(used_ + used_idx_offset(), std::memory_order_acquire);
    const uint16_t ahead = static_cast<uint16_t>(idx - last_used_);
    if (ahead > published_)
      return fail(DriverQueueErrc::kUsedIndex, "used->idx " + to_string(idx) + " is " + to_string(ahead) +
                                                   " ahead of the last completion taken, with " +
                                                   to_string(published_) + " chain(s) in flight");
    used_cache_ = idx;
    if (ahead == 0) return std::optional<UsedChain>{};
  }
  const uint32_t slot = last_used_ & (size_ - 1);
  const uint32_t id = load<uint32_t>(used_ + used_ring_offset(slot), std::memory_order_relaxed);
  const uint32_t len = load<uint32_t>(used_ + used_ring_offset(slot) + 4, std::memory_order_relaxed);
  if (id >= size_ || state_[id] != kPublished)
    return fail(DriverQueueErrc::kUsedId, "used element " + to_string(last_used_) + " names descriptor " +
                                              to_string(id) + ", which is not the head of a chain in flight");
  if (len > writable_[id])
    return fail(DriverQueueErrc::kUsedLen, "used element " + to_string(last_used_) + " says " + to_string(len) +
                                               " bytes written into chain " + to_string(id) + ", which has " +
                                               to_string(writable_[id]) + " device-writable bytes");
  // Give the chain's descriptors back, following the private links.
  uint16_t d = static_cast<uint16_t>(id);
  for (uint16_t i = 1; i < chain_len_[id]; ++i) d = next_[d];
  next_[d] = free_head_;
  free_head_ = static_cast<uint16_t>(id);
  num_free_ = static_cast<uint16_t>(num_free_ + chain_len_[id]);
  state_[id] = kFree;
  chain_len_[id] = 0;
  --in_flight_;
  --published_;
  ++last_used_;
  return std::optional<UsedChain>{UsedChain{static_cast<uint16_t>(id), len, token_[id]}};
}

bool DriverQueue::rearm() {
  if (broken_) return false;
  if (last_used_ != used_cache_) return true;
  // §2.7.10: with EVENT_IDX, interrupt us when the entry at last_used_ is used. Without
  // it, avail->flags stays 0: every completion interrupts.
  if (event_idx_) store<uint16_t>(avail_ + used_event_offset(size_), last_used_, std::memory_order_relaxed);
  // used_event must be visible before we look at used->idx again: a completion the
  // device made before seeing it raised no interrupt.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  return load<uint16_t>(used_ + used_idx_offset(), std::memory_order_acquire) != last_used_;
}

}  // namespace azote::virtio
