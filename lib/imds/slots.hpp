// The slot table: one entry per ENI, its checked metadata and incarnation. Thread-safe
// (a shared mutex; readers get a shared_ptr to an immutable entry, so an update never
// changes what a request already being answered reads).
//
// Slots are handed out next-fit (a cursor that moves on) and a removed slot rests for a
// quarantine before it is reused: segments the kernel still sends to a removed slot's
// alias are dropped meanwhile, and never reach the next ENI given that slot.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <shared_mutex>
#include <vector>

#include "base/result.hpp"
#include "imds/error.hpp"
#include "imds/metadata.hpp"
#include "imds/token.hpp"

namespace azote::imds {

class SlotTable {
 public:
  struct Entry {
    uint32_t slot = 0;
    uint64_t incarnation = 0;  // unique per add(), kept by update(); tokens are bound to it
    CheckedMetadata meta;
  };

  // `capacity` in 1..kMaxSlots (the caller checks).
  SlotTable(uint32_t capacity, std::chrono::nanoseconds quarantine);

  // kBadMetadata (check_metadata), kFull.
  Result<uint32_t, ImdsError> add(const InstanceMetadata& md, TimePoint now);
  // Same incarnation: tokens stay valid. kNoSlot, kBadMetadata.
  Result<void, ImdsError> update(uint32_t slot, const InstanceMetadata& md);
  // Its tokens die with it. kNoSlot.
  Result<void, ImdsError> remove(uint32_t slot, TimePoint now);
  // Null when the slot is not in use.
  std::shared_ptr<const Entry> get(uint32_t slot) const;
  size_t size() const;
  uint32_t capacity() const { return static_cast<uint32_t>(slots_.size()); }

 private:
  struct Slot {
    std::shared_ptr<const Entry> entry;
    TimePoint free_from = TimePoint::min();  // reusable from then on
  };
  mutable std::shared_mutex mu_;
  std::vector<Slot> slots_;
  std::chrono::nanoseconds quarantine_;
  uint32_t cursor_ = 0;
  uint64_t next_incarnation_ = 1;
  size_t used_ = 0;
};

}  // namespace azote::imds
