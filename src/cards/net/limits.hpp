// Per-ENI rate limits (bandwidth and packets per second), each direction on its own:
// transmit (guest -> card) and receive (card -> guest). lib/rate_limit's token buckets
// decide *when* a frame may pass; the ENI's worker (worker.hpp) does the waiting: a
// transmit frame the limiter refuses stays in the guest's ring, a receive frame in the
// ENI's Inbox, and a timerfd armed with the wait reported here wakes the worker to ask
// again. Nothing is dropped here.
//
// A frame costs one packet and its Ethernet length (header through payload, no FCS, no
// virtio-net header). Buckets hold kBurst worth of their rate (at least one maximum
// frame, or one packet) and start full. Limits may change at any time (control thread):
// the buckets are replaced by full ones at the new rates, and the worker is woken so a
// long wait computed at the old rate does not outlive it.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "base/error.hpp"
#include "cards/net/options.hpp"
#include "rate_limit/clock.hpp"
#include "rate_limit/token_bucket.hpp"

namespace azote::card_net {

// How much a bucket holds: this long at its rate.
inline constexpr std::chrono::milliseconds kLimitBurst{10};
inline constexpr uint64_t kBytesPerMbit = 125'000;  // 10^6 bits / 8

// One direction of one ENI: the two buckets (packets, bytes) and what throttling cost.
class DirectionLimiter {
 public:
  explicit DirectionLimiter(const rate_limit::Clock& clock) : clock_(&clock) {}
  DirectionLimiter(const DirectionLimiter&) = delete;
  DirectionLimiter& operator=(const DirectionLimiter&) = delete;

  // The next frame of `bytes` in this direction's FIFO: zero when admitted (charged),
  // else how long to wait before asking again (nothing charged). The frame refused stays
  // at the head of its FIFO, so the first refusal counts it (and its bytes) as delayed
  // and opens a throttled interval that its admission closes. Worker thread.
  rate_limit::Nanos admit(uint64_t bytes);
  bool limited() const { return limited_.load(std::memory_order_acquire); }

  uint64_t delayed_frames() const { return delayed_frames_.load(std::memory_order_relaxed); }
  uint64_t delayed_bytes() const { return delayed_bytes_.load(std::memory_order_relaxed); }
  // Total time the head of this direction waited, the wait still running included.
  uint64_t throttled_ns() const;
  bool throttled() const;

 private:
  friend class EniRateLimits;
  void configure(uint64_t pps, uint64_t bytes_per_sec);  // any thread
  void set_clock(const rate_limit::Clock& clock);

  const rate_limit::Clock* clock_;
  mutable std::mutex mu_;
  std::atomic<bool> limited_{false};
  rate_limit::TokenBucket packets_, bytes_;
  bool throttled_ = false;  // the head was refused and not admitted since
  rate_limit::Nanos since_{0};
  std::atomic<uint64_t> delayed_frames_{0}, delayed_bytes_{0}, throttled_ns_{0};
};

// Both directions of one ENI: the same limits apply to each, separately.
class EniRateLimits {
 public:
  explicit EniRateLimits(const std::optional<EniLimits>& limits,
                         const rate_limit::Clock& clock = monotonic_clock());
  EniRateLimits(const EniRateLimits&) = delete;
  EniRateLimits& operator=(const EniRateLimits&) = delete;

  // New limits (nullopt: none); full buckets at the new rates. Any thread.
  void set(const std::optional<EniLimits>& limits);
  std::optional<EniLimits> get() const;
  // For tests, before any traffic: the clock the buckets refill from (reset full).
  void use_clock(const rate_limit::Clock& clock);

  DirectionLimiter& tx() { return tx_; }
  DirectionLimiter& rx() { return rx_; }
  const DirectionLimiter& tx() const { return tx_; }
  const DirectionLimiter& rx() const { return rx_; }

  // {"bandwidth_mbps", "pps"} (absent keys: no limit; null when none) and, per direction,
  // delayed frames/bytes, throttled seconds, throttled now: for list-enis.
  nlohmann::json describe() const;

  static const rate_limit::Clock& monotonic_clock();

 private:
  void apply();  // with mu_ held

  mutable std::mutex mu_;
  std::optional<EniLimits> limits_;
  DirectionLimiter tx_, rx_;
};

// The buckets' sizes for a rate: kLimitBurst worth, at least `floor`.
uint64_t burst_for(uint64_t per_sec, uint64_t floor);

// set-eni-limits' "limits": {"bandwidth_mbps": 1..400000, "pps": 1..100000000} (at least
// one), or null (no limits).
Result<std::optional<EniLimits>, OptionsError> parse_limits_json(const std::string& where, const nlohmann::json& j);

}  // namespace azote::card_net
