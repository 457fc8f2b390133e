// The host's side of the region's leases: fencing by epoch.
//
// azote-region holds one etcd lease per host while the host answers its probes, and sends
// the lease's epoch (the etcd revision that made it, so a later lease has a larger one) and
// its time to live with every call (metadata azote-region-epoch, azote-region-lease-ms).
// The host admits a region call only if
//   - its epoch is not older than one already admitted (a region replica or a request
//     still in flight from before a new lease cannot act), and
//   - it is a newer epoch, or the same one heard from within one lease: a host the region
//     has not reached for a whole lease considers that lease lost (the region has by then
//     marked the host lost) and waits for a new one before acting for the region again.
// Once a principal (a client certificate's role/name) has presented an epoch, every call
// of that principal must carry one: the region cannot step around the fence by leaving it
// out. Other principals (the host's own operators, the azote CLI) are not fenced. The
// fence lives in memory: a restarted controller admits the next epoch it is shown.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>

namespace azote::controller {

class RegionFence {
 public:
  using Clock = std::chrono::steady_clock;
  // nullopt: admitted; otherwise why not (one sentence).
  std::optional<std::string> admit(uint64_t epoch, std::chrono::milliseconds lease, Clock::time_point now,
                                   const std::string& principal = "");
  // A call of `principal` without an epoch: nullopt if admitted (it never presented one).
  std::optional<std::string> admit_without_epoch(const std::string& principal) const;
  uint64_t epoch() const;

 private:
  mutable std::mutex mu_;
  uint64_t epoch_ = 0;
  std::chrono::milliseconds lease_{0};
  Clock::time_point last_{};
  std::string principal_;  // who presented the epochs (empty: nobody yet)
};

}  // namespace azote::controller
