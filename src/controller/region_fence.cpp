#include "controller/region_fence.hpp"

namespace azote::controller {

std::optional<std::string> RegionFence::admit(uint64_t epoch, std::chrono::milliseconds lease, Clock::time_point now,
                                              const std::string& principal) {
  std::lock_guard lock(mu_);
  if (!principal.empty()) principal_ = principal;
  if (epoch == 0) return std::string("the region's epoch is missing or zero");
  if (epoch < epoch_)
    return "the region's epoch " + std::to_string(epoch) + " is older than " + std::to_string(epoch_) +
           " (a newer lease of this host was seen)";
  if (epoch == epoch_ && now - last_ > lease_)
    return "the region's lease " + std::to_string(epoch) + " lapsed: not heard from for more than " +
           std::to_string(lease_.count()) + " ms; a new lease is needed";
  epoch_ = epoch;
  lease_ = lease;
  last_ = now;
  return std::nullopt;
}

std::optional<std::string> RegionFence::admit_without_epoch(const std::string& principal) const {
  std::lock_guard lock(mu_);
  if (principal_.empty() || principal != principal_) return std::nullopt;
  return principal + " acts for a region here: its calls must carry the region's epoch";
}

uint64_t RegionFence::epoch() const {
  std::lock_guard lock(mu_);
  return epoch_;
}

}  // namespace azote::controller
