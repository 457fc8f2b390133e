#include "cards/net/limits.hpp"

#include <algorithm>

#include "cards/net/switch.hpp"

namespace azote::card_net {

using rate_limit::Nanos;

uint64_t burst_for(uint64_t per_sec, uint64_t floor) {
  const uint64_t b = per_sec / 1000 * static_cast<uint64_t>(kLimitBurst.count()) +
                     per_sec % 1000 * static_cast<uint64_t>(kLimitBurst.count()) / 1000;
  return std::max(b, floor);
}

Nanos DirectionLimiter::admit(uint64_t bytes) {
  if (!limited()) return Nanos(0);
  std::lock_guard lock(mu_);
  const Nanos now = clock_->now();
  const Nanos wait = std::max(packets_.wait_for(1, now), bytes_.wait_for(bytes, now));
  if (wait != Nanos(0)) {
    if (!throttled_) {
      throttled_ = true;
      since_ = now;
      delayed_frames_.fetch_add(1, std::memory_order_relaxed);
      delayed_bytes_.fetch_add(bytes, std::memory_order_relaxed);
    }
    return wait;
  }
  (void)packets_.try_take(1, now);
  (void)bytes_.try_take(bytes, now);
  if (throttled_) {
    throttled_ = false;
    if (now > since_) throttled_ns_.fetch_add(static_cast<uint64_t>((now - since_).count()), std::memory_order_relaxed);
  }
  return Nanos(0);
}

uint64_t DirectionLimiter::throttled_ns() const {
  std::lock_guard lock(mu_);
  uint64_t t = throttled_ns_.load(std::memory_order_relaxed);
  if (throttled_) {
    const Nanos now = clock_->now();
    if (now > since_) t += static_cast<uint64_t>((now - since_).count());
  }
  return t;
}

bool DirectionLimiter::throttled() const {
  std::lock_guard lock(mu_);
  return throttled_;
}

void DirectionLimiter::configure(uint64_t pps, uint64_t bytes_per_sec) {
  std::lock_guard lock(mu_);
  const Nanos now = clock_->now();
  packets_ = pps == 0 ? rate_limit::TokenBucket() : rate_limit::TokenBucket(pps, burst_for(pps, 1), now);
  bytes_ = bytes_per_sec == 0 ? rate_limit::TokenBucket()
                              : rate_limit::TokenBucket(bytes_per_sec, burst_for(bytes_per_sec, kMaxFrame), now);
  if (pps == 0 && bytes_per_sec == 0 && throttled_) {
    // Nothing holds the head back any more: its wait ends now.
    throttled_ = false;
    if (now > since_) throttled_ns_.fetch_add(static_cast<uint64_t>((now - since_).count()), std::memory_order_relaxed);
  }
  limited_.store(pps != 0 || bytes_per_sec != 0, std::memory_order_release);
}

void DirectionLimiter::set_clock(const rate_limit::Clock& clock) {
  std::lock_guard lock(mu_);
  clock_ = &clock;
  throttled_ = false;
}

const rate_limit::Clock& EniRateLimits::monotonic_clock() {
  static const rate_limit::MonotonicClock clock;
  return clock;
}

EniRateLimits::EniRateLimits(const std::optional<EniLimits>& limits, const rate_limit::Clock& clock)
    : limits_(limits), tx_(clock), rx_(clock) {
  std::lock_guard lock(mu_);
  apply();
}

void EniRateLimits::apply() {
  const uint64_t pps = limits_ ? limits_->pps : 0;
  const uint64_t bytes = limits_ ? limits_->bandwidth_mbps * kBytesPerMbit : 0;
  tx_.configure(pps, bytes);
  rx_.configure(pps, bytes);
}

void EniRateLimits::set(const std::optional<EniLimits>& limits) {
  std::lock_guard lock(mu_);
  limits_ = limits;
  if (limits_ && limits_->pps == 0 && limits_->bandwidth_mbps == 0) limits_.reset();
  apply();
}

std::optional<EniLimits> EniRateLimits::get() const {
  std::lock_guard lock(mu_);
  return limits_;
}

void EniRateLimits::use_clock(const rate_limit::Clock& clock) {
  std::lock_guard lock(mu_);
  tx_.set_clock(clock);
  rx_.set_clock(clock);
  apply();
}

nlohmann::json EniRateLimits::describe() const {
  nlohmann::json out = nlohmann::json::object();
  const auto l = get();
  if (l) {
    nlohmann::json lj = nlohmann::json::object();
    if (l->bandwidth_mbps != 0) lj["bandwidth_mbps"] = l->bandwidth_mbps;
    if (l->pps != 0) lj["pps"] = l->pps;
    out["limits"] = std::move(lj);
  } else {
    out["limits"] = nullptr;
  }
  auto dir = [](const DirectionLimiter& d) {
    return nlohmann::json{{"delayed_frames", d.delayed_frames()},
                          {"delayed_bytes", d.delayed_bytes()},
                          {"throttled_seconds", static_cast<double>(d.throttled_ns()) / 1e9},
                          {"throttled_now", d.throttled()}};
  };
  out["tx"] = dir(tx_);
  out["rx"] = dir(rx_);
  return out;
}

Result<std::optional<EniLimits>, OptionsError> parse_limits_json(const std::string& where, const nlohmann::json& j) {
  if (j.is_null()) return std::optional<EniLimits>();
  AZOTE_TRY(l, parse_limits(where, j));
  return std::optional<EniLimits>(l);
}

}  // namespace azote::card_net
