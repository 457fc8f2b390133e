#include "controller/refusals.hpp"

#include <utility>

namespace azote::controller {

RefusalAggregator::RefusalAggregator(Sink sink, std::chrono::seconds interval, size_t max_keys)
    : sink_(std::move(sink)), interval_(interval), max_keys_(max_keys) {}

void RefusalAggregator::emit(const Key& key, uint64_t count, std::chrono::system_clock::time_point first,
                             std::chrono::system_clock::time_point last) {
  Refusal r;
  std::tie(r.principal, r.peer, r.reason) = key;
  r.count = count;
  r.first = first;
  r.last = last;
  sink_(r);
}

void RefusalAggregator::refused(const std::string& principal, const std::string& peer, const std::string& reason,
                                Clock::time_point now) {
  const auto wall = std::chrono::system_clock::now();
  std::lock_guard lock(mu_);
  Key key{principal, peer, reason};
  auto it = keys_.find(key);
  if (it == keys_.end() && keys_.size() >= max_keys_) {
    key = Key{"", "*", kOverflowReason};
    it = keys_.find(key);
  }
  if (it == keys_.end()) {
    // The first of its key: on record at once. The overflow key may take the slot
    // after max_keys_: one more at most.
    keys_.emplace(key, Pending{now, 0, wall, wall});
    emit(key, 1, wall, wall);
    return;
  }
  Pending& p = it->second;
  if (p.count == 0) p.first = wall;
  p.last = wall;
  ++p.count;
}

void RefusalAggregator::tick(Clock::time_point now) {
  std::lock_guard lock(mu_);
  for (auto it = keys_.begin(); it != keys_.end();) {
    Pending& p = it->second;
    if (now - p.window_start < interval_) {
      ++it;
      continue;
    }
    if (p.count == 0) {
      it = keys_.erase(it);  // quiet for a whole interval: the next one is written at once
      continue;
    }
    emit(it->first, p.count, p.first, p.last);
    p.count = 0;
    p.window_start = now;  // still busy: keep counting for another interval
    ++it;
  }
}

void RefusalAggregator::flush() {
  std::lock_guard lock(mu_);
  for (const auto& [key, p] : keys_)
    if (p.count > 0) emit(key, p.count, p.first, p.last);
  keys_.clear();
}

size_t RefusalAggregator::tracked_keys() const {
  std::lock_guard lock(mu_);
  return keys_.size();
}

}  // namespace azote::controller
