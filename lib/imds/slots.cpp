#include "imds/slots.hpp"

#include <mutex>

namespace azote::imds {

SlotTable::SlotTable(uint32_t capacity, std::chrono::nanoseconds quarantine)
    : slots_(capacity), quarantine_(quarantine) {}

Result<uint32_t, ImdsError> SlotTable::add(const InstanceMetadata& md, TimePoint now) {
  AZOTE_TRY(checked, check_metadata(md));
  std::unique_lock lock(mu_);
  const auto n = static_cast<uint32_t>(slots_.size());
  for (uint32_t i = 0; i < n; ++i) {
    const uint32_t s = (cursor_ + i) % n;
    Slot& slot = slots_[s];
    if (slot.entry || slot.free_from > now) continue;
    slot.entry = std::make_shared<const Entry>(Entry{s, next_incarnation_++, std::move(checked)});
    cursor_ = (s + 1) % n;
    ++used_;
    return s;
  }
  return make_error(ImdsErrc::kFull, "all " + std::to_string(n) + " slots in use or in quarantine");
}

Result<void, ImdsError> SlotTable::update(uint32_t slot, const InstanceMetadata& md) {
  AZOTE_TRY(checked, check_metadata(md));
  std::unique_lock lock(mu_);
  if (slot >= slots_.size() || !slots_[slot].entry) {
    return make_error(ImdsErrc::kNoSlot, "slot " + std::to_string(slot));
  }
  auto& e = slots_[slot].entry;
  e = std::make_shared<const Entry>(Entry{slot, e->incarnation, std::move(checked)});
  return {};
}

Result<void, ImdsError> SlotTable::remove(uint32_t slot, TimePoint now) {
  std::unique_lock lock(mu_);
  if (slot >= slots_.size() || !slots_[slot].entry) {
    return make_error(ImdsErrc::kNoSlot, "slot " + std::to_string(slot));
  }
  slots_[slot].entry.reset();
  slots_[slot].free_from = now + quarantine_;
  --used_;
  return {};
}

std::shared_ptr<const SlotTable::Entry> SlotTable::get(uint32_t slot) const {
  std::shared_lock lock(mu_);
  if (slot >= slots_.size()) return nullptr;
  return slots_[slot].entry;
}

size_t SlotTable::size() const {
  std::shared_lock lock(mu_);
  return used_;
}

}  // namespace azote::imds
