// Token buckets: the rate limiter of a card (per volume: IOPS and bytes per second).
//
// TokenBucket: `rate` tokens per second drip into a bucket that holds at most `burst`.
// An operation costing n tokens may start when the bucket holds min(n, burst) tokens;
// it then takes all n, so a cost larger than the burst drives the bucket into debt
// that later refills pay back. That way a single large request is never refused
// forever, and the long-run rate is exact: over any interval T, at most
// burst + rate * T tokens are taken.
//
// Arithmetic is integer only: elapsed nanoseconds * rate is carried exactly (128-bit),
// so no rounding drift accumulates, whatever the refill pattern. A clock that reads
// the same or an earlier time refills nothing.
//
// Limiter: the two buckets of a volume (operations and bytes) behind one mutex. An
// operation is admitted only when both buckets allow it, and then charged to both at
// once; otherwise nothing is charged and the caller learns how long to wait before
// asking again. Requests are never dropped: the card keeps them queued and re-checks
// when a timer fires (see src/cards/blk/DESIGN.md).
#pragma once

#include <cstdint>
#include <mutex>

#include "rate_limit/clock.hpp"

namespace azote::rate_limit {

class TokenBucket {
 public:
  // Unlimited: every take succeeds at once.
  TokenBucket() = default;
  // `rate` tokens per second (0: unlimited), at most `burst` held (clamped to at least 1).
  // The bucket starts full at `now`.
  TokenBucket(uint64_t rate, uint64_t burst, Nanos now);

  bool unlimited() const { return rate_ == 0; }
  uint64_t rate() const { return rate_; }
  uint64_t burst() const { return burst_; }

  // Whole tokens held at `now` (0 while in debt).
  uint64_t available(Nanos now);
  // Time from `now` until take(n) would succeed; zero if it would succeed now.
  Nanos wait_for(uint64_t n, Nanos now);
  // Takes n tokens if wait_for(n, now) is zero and returns true; otherwise takes
  // nothing and returns false.
  bool try_take(uint64_t n, Nanos now);
  // Takes n tokens whatever the bucket holds (into debt if need be): for work that
  // must happen now but still counts against the rate.
  void take(uint64_t n, Nanos now);

 private:
  void refill(Nanos now);

  uint64_t rate_ = 0;
  uint64_t burst_ = 0;
  int64_t level_ = 0;   // whole tokens; negative while in debt
  uint64_t carry_ = 0;  // token-nanoseconds not yet worth a whole token (< 10^9)
  Nanos last_{0};
};

struct LimiterConfig {
  uint64_t ops_per_sec = 0;  // 0: no operation limit
  uint64_t ops_burst = 0;
  uint64_t bytes_per_sec = 0;  // 0: no byte limit
  uint64_t bytes_burst = 0;
};

// Thread-safe: one Limiter is shared by every queue of a volume.
class Limiter {
 public:
  // `clock` must outlive the limiter.
  Limiter(const LimiterConfig& config, const Clock& clock);

  bool unlimited() const { return unlimited_; }
  // One operation moving `bytes`: zero when admitted (one op and `bytes` taken), else
  // how long to wait before asking again (nothing taken).
  Nanos admit(uint64_t bytes);
  // One operation that runs now regardless: charged to both buckets, which may go into
  // debt, so later operations wait for it and the long-run rate still holds.
  void charge(uint64_t bytes);

 private:
  const Clock& clock_;
  const bool unlimited_;
  std::mutex mu_;
  TokenBucket ops_;
  TokenBucket bytes_;
};

}  // namespace azote::rate_limit
