// The time source a rate limiter refills from: a monotonic clock in production, a
// clock that only moves when told to in tests (so the rate arithmetic is tested
// exactly, without sleeping).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace azote::rate_limit {

using Nanos = std::chrono::nanoseconds;

class Clock {
 public:
  virtual ~Clock() = default;
  // Monotonic time: never goes backwards, unrelated to wall-clock time.
  virtual Nanos now() const = 0;
};

// CLOCK_MONOTONIC (std::chrono::steady_clock on Linux), the clock timerfd_create()
// takes, so a wait computed here can be armed on a CLOCK_MONOTONIC timerfd.
class MonotonicClock final : public Clock {
 public:
  Nanos now() const override {
    return std::chrono::duration_cast<Nanos>(std::chrono::steady_clock::now().time_since_epoch());
  }
};

// For tests: starts at `start` and moves only through advance()/set(). Thread-safe.
class FakeClock final : public Clock {
 public:
  explicit FakeClock(Nanos start = Nanos(0)) : now_(start.count()) {}
  Nanos now() const override { return Nanos(now_.load(std::memory_order_relaxed)); }
  void advance(Nanos d) { now_.fetch_add(d.count(), std::memory_order_relaxed); }
  void set(Nanos t) { now_.store(t.count(), std::memory_order_relaxed); }

 private:
  std::atomic<int64_t> now_;
};

}  // namespace azote::rate_limit
