#include "rate_limit/token_bucket.hpp"

#include <algorithm>
#include <limits>

namespace azote::rate_limit {
namespace {

constexpr uint64_t kNanosPerSec = 1'000'000'000;
// Costs are clamped here so level_ - cost can never overflow an int64_t.
constexpr uint64_t kMaxCost = uint64_t{1} << 62;

}  // namespace

TokenBucket::TokenBucket(uint64_t rate, uint64_t burst, Nanos now)
    : rate_(rate),
      burst_(std::clamp<uint64_t>(burst, 1, kMaxCost)),
      level_(static_cast<int64_t>(burst_)),
      last_(now) {}

void TokenBucket::refill(Nanos now) {
  if (now <= last_) return;
  const auto elapsed = static_cast<unsigned __int128>(now.count() - last_.count());
  last_ = now;
  const auto cap = static_cast<int64_t>(burst_);
  if (level_ >= cap) {
    carry_ = 0;
    return;
  }
  const unsigned __int128 acc = elapsed * rate_ + carry_;
  const unsigned __int128 whole = acc / kNanosPerSec;
  const auto room = static_cast<uint64_t>(cap - level_);  // > 0
  if (whole >= room) {
    level_ = cap;
    carry_ = 0;
  } else {
    level_ += static_cast<int64_t>(whole);
    carry_ = static_cast<uint64_t>(acc % kNanosPerSec);
  }
}

uint64_t TokenBucket::available(Nanos now) {
  if (unlimited()) return std::numeric_limits<uint64_t>::max();
  refill(now);
  return level_ > 0 ? static_cast<uint64_t>(level_) : 0;
}

Nanos TokenBucket::wait_for(uint64_t n, Nanos now) {
  if (unlimited()) return Nanos(0);
  refill(now);
  const auto need = static_cast<int64_t>(std::min(n, burst_));
  if (level_ >= need) return Nanos(0);
  // deficit whole tokens, minus what the carry already holds, at rate_ per second.
  const auto deficit = static_cast<unsigned __int128>(need - level_);
  const unsigned __int128 token_ns = deficit * kNanosPerSec - carry_;
  const unsigned __int128 ns = (token_ns + rate_ - 1) / rate_;
  const auto max = static_cast<unsigned __int128>(std::numeric_limits<int64_t>::max());
  return Nanos(static_cast<int64_t>(std::min(ns, max)));
}

bool TokenBucket::try_take(uint64_t n, Nanos now) {
  if (unlimited()) return true;
  if (wait_for(n, now) != Nanos(0)) return false;
  level_ -= static_cast<int64_t>(std::min(n, kMaxCost));
  return true;
}

void TokenBucket::take(uint64_t n, Nanos now) {
  if (unlimited()) return;
  refill(now);
  // Debt is bounded so level_ stays far from overflow whatever is charged.
  const int64_t floor = -static_cast<int64_t>(kMaxCost);
  const auto cost = static_cast<int64_t>(std::min(n, kMaxCost));
  level_ = level_ - floor < cost ? floor : level_ - cost;
}

Limiter::Limiter(const LimiterConfig& config, const Clock& clock)
    : clock_(clock),
      unlimited_(config.ops_per_sec == 0 && config.bytes_per_sec == 0),
      ops_(config.ops_per_sec, config.ops_burst, clock.now()),
      bytes_(config.bytes_per_sec, config.bytes_burst, clock.now()) {}

Nanos Limiter::admit(uint64_t bytes) {
  if (unlimited_) return Nanos(0);
  std::lock_guard lock(mu_);
  const Nanos now = clock_.now();
  const Nanos wait = std::max(ops_.wait_for(1, now), bytes_.wait_for(bytes, now));
  if (wait != Nanos(0)) return wait;
  (void)ops_.try_take(1, now);
  (void)bytes_.try_take(bytes, now);
  return Nanos(0);
}

void Limiter::charge(uint64_t bytes) {
  if (unlimited_) return;
  std::lock_guard lock(mu_);
  const Nanos now = clock_.now();
  ops_.take(1, now);
  bytes_.take(bytes, now);
}

}  // namespace azote::rate_limit
