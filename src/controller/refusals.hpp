// Refused connections on their way to the audit log, aggregated so that a flood of
// them cannot grow the log faster than a fixed rate.
//
// Every refusal is accounted for in exactly one record. Refusals are grouped by key
// (principal, peer, reason):
//  - the first refusal of a key is written at once, with count 1;
//  - further refusals of that key within `interval` of the key's first are counted,
//    and written as one record with their count when the interval ends (tick) or at
//    shutdown (flush). While refusals keep coming, a key so costs one record per
//    interval; a key with nothing counted in its interval is forgotten, so the next
//    refusal is written at once again.
//  - at most `max_keys` keys are tracked; refusals of any further key are counted
//    under one overflow key (peer "*", principal "", kOverflowReason) until keys free
//    up. A peer cannot avoid aggregation by varying what it sends.
// So the log gets at most about 2 * (max_keys + 1) refusal records per interval,
// however many connections are refused.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <tuple>

namespace azote::controller {

struct Refusal {
  std::string principal;  // "sha256:<certificate fingerprint>" when a certificate was seen, else ""
  std::string peer;       // "tcp:ADDRESS", "unix:uid=N", "*" (overflow), "" (unknown)
  std::string reason;
  uint64_t count = 1;     // refusals this record stands for
  // Wall-clock times of the first and last refusal counted (equal when count is 1).
  std::chrono::system_clock::time_point first, last;
};

inline constexpr const char* kOverflowReason = "refused (more distinct peers and reasons than are tracked one by one)";

class RefusalAggregator {
 public:
  using Sink = std::function<void(const Refusal&)>;
  using Clock = std::chrono::steady_clock;

  RefusalAggregator(Sink sink, std::chrono::seconds interval, size_t max_keys);
  RefusalAggregator(const RefusalAggregator&) = delete;
  RefusalAggregator& operator=(const RefusalAggregator&) = delete;

  // One refused connection. Thread-safe; may call the sink (under the aggregator's
  // lock, so records keep the order of events).
  void refused(const std::string& principal, const std::string& peer, const std::string& reason,
               Clock::time_point now = Clock::now());
  // Writes the counts of keys whose interval has ended and forgets idle keys.
  void tick(Clock::time_point now = Clock::now());
  // Writes every pending count (at shutdown).
  void flush();

  size_t tracked_keys() const;

 private:
  using Key = std::tuple<std::string, std::string, std::string>;  // principal, peer, reason
  struct Pending {
    Clock::time_point window_start;
    uint64_t count = 0;  // refusals not written yet
    std::chrono::system_clock::time_point first, last;
  };
  void emit(const Key& key, uint64_t count, std::chrono::system_clock::time_point first,
            std::chrono::system_clock::time_point last);

  const Sink sink_;
  const std::chrono::seconds interval_;
  const size_t max_keys_;
  mutable std::mutex mu_;
  std::map<Key, Pending> keys_;
};

}  // namespace azote::controller
