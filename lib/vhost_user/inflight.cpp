#include "vhost_user/inflight.hpp"

#include <algorithm>
#include <utility>

namespace azote::vhost_user {
namespace {

// Shared-memory field access. The area is shared with another process, so fields are
// read and written with single atomic accesses (never torn, never re-read by the
// compiler). SAFETY: every offset used below is naturally aligned for its type, because
// areas are kInflightQueueAlign-aligned and the layout keeps fields aligned.
template <class T>
T ld(const uint8_t* p) {
  return __atomic_load_n(reinterpret_cast<const T*>(p), __ATOMIC_ACQUIRE);  // NOLINT
}
template <class T>
void st(uint8_t* p, T v) {
  __atomic_store_n(reinterpret_cast<T*>(p), v, __ATOMIC_RELEASE);  // NOLINT
}

constexpr size_t kVersionOff = 8, kDescNumOff = 10, kBatchHeadOff = 12, kUsedIdxOff = 14;
constexpr size_t kInflightOff = 0, kNextOff = 6, kCounterOff = 8;

}  // namespace

InflightQueue::InflightQueue(uint8_t* area, uint16_t desc_num) : area_(area), desc_num_(desc_num) {}

void InflightQueue::initialize() {
  st<uint64_t>(area_, 0);
  st<uint16_t>(area_ + kDescNumOff, desc_num_);
  st<uint16_t>(area_ + kBatchHeadOff, 0);
  st<uint16_t>(area_ + kUsedIdxOff, 0);
  for (uint32_t i = 0; i < desc_num_; ++i) {
    uint8_t* d = desc(static_cast<uint16_t>(i));
    st<uint8_t>(d + kInflightOff, 0);
    st<uint16_t>(d + kNextOff, 0);
    st<uint64_t>(d + kCounterOff, 0);
  }
  st<uint16_t>(area_ + kVersionOff, kInflightVersion);  // last: marks the area initialised
  counter_ = 1;
  batch_.clear();
}

bool InflightQueue::header_ok(bool& valid) const {
  const uint16_t version = ld<uint16_t>(area_ + kVersionOff);
  const uint16_t n = ld<uint16_t>(area_ + kDescNumOff);
  if (version == 0) {
    valid = true;  // never initialised: the caller initialises it
    return false;
  }
  valid = version == kInflightVersion && n == desc_num_;
  return valid;
}

InflightQueue::Recovery InflightQueue::recover(uint16_t used_ring_idx, uint32_t ring_size) {
  Recovery r;
  batch_.clear();
  const uint16_t recorded = ld<uint16_t>(area_ + kUsedIdxOff);
  if (recorded != used_ring_idx) {
    // The old process published a batch (used->idx moved) but died before clearing its
    // in-flight marks: walk the batch list, at most `batch` and at most desc_num steps.
    const uint16_t batch = static_cast<uint16_t>(used_ring_idx - recorded);
    uint16_t h = ld<uint16_t>(area_ + kBatchHeadOff);
    for (uint32_t step = 0; step < batch && step < desc_num_ && h < desc_num_; ++step) {
      st<uint8_t>(desc(h) + kInflightOff, 0);
      h = ld<uint16_t>(desc(h) + kNextOff);
    }
    st<uint16_t>(area_ + kUsedIdxOff, used_ring_idx);
  }
  std::vector<std::pair<uint64_t, uint16_t>> taken;
  uint64_t max_counter = 0;
  for (uint32_t i = 0; i < desc_num_; ++i) {
    uint8_t* d = desc(static_cast<uint16_t>(i));
    const uint8_t flag = ld<uint8_t>(d + kInflightOff);
    if (flag == 0) continue;
    if (flag != 1 || i >= ring_size) {  // not a value we write, or not a head of this ring: forget it
      st<uint8_t>(d + kInflightOff, 0);
      continue;
    }
    const uint64_t c = ld<uint64_t>(d + kCounterOff);
    taken.emplace_back(c, static_cast<uint16_t>(i));
    max_counter = std::max(max_counter, c);
  }
  std::sort(taken.begin(), taken.end());
  r.heads.reserve(taken.size());
  for (const auto& t : taken) r.heads.push_back(t.second);
  r.next_avail = static_cast<uint16_t>(used_ring_idx + r.heads.size());
  counter_ = max_counter + 1;
  return r;
}

bool InflightQueue::begin(uint16_t head) {
  if (head >= desc_num_) return false;
  uint8_t* d = desc(head);
  st<uint64_t>(d + kCounterOff, counter_++);
  st<uint8_t>(d + kInflightOff, 1);
  return true;
}

bool InflightQueue::prepare_used(uint16_t head) {
  if (head >= desc_num_) return false;
  const uint16_t prev = batch_.empty() ? ld<uint16_t>(area_ + kBatchHeadOff) : batch_.back();
  st<uint16_t>(desc(head) + kNextOff, prev);
  st<uint16_t>(area_ + kBatchHeadOff, head);
  batch_.push_back(head);
  return true;
}

void InflightQueue::commit_used(uint16_t used_ring_idx) {
  for (uint16_t h : batch_) st<uint8_t>(desc(h) + kInflightOff, 0);
  st<uint16_t>(area_ + kUsedIdxOff, used_ring_idx);
  batch_.clear();
}

uint32_t InflightQueue::count_inflight() const {
  uint32_t n = 0;
  for (uint32_t i = 0; i < desc_num_; ++i) n += ld<uint8_t>(desc(static_cast<uint16_t>(i)) + kInflightOff) == 1 ? 1 : 0;
  return n;
}

}  // namespace azote::vhost_user
