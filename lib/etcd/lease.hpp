// LeaseKeeper: keeps one lease alive for as long as it exists (RAII), from its own thread:
// a keep-alive every TTL/3 (failing over between members like any call), and a report
// through on_lost, once, when the lease is gone:
//   - etcd says it does not exist (it expired, or was revoked): kNotFound;
//   - no keep-alive has succeeded for a whole TTL (no member reachable): kUnavailable. The
//     lease must then be taken as expired: whoever holds it (a host's heartbeat, a
//     leader's lock) stops acting on it before someone else is given its place.
// After a loss the keeper refreshes no more; it never revokes the lease (Client::revoke).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>

#include "etcd/client.hpp"
#include "etcd/error.hpp"

namespace azote::etcd {

// Called from the keeper's thread, at most once. It must not destroy the keeper.
using LeaseLostFn = std::function<void(int64_t lease_id, const EtcdError& why)>;

class LeaseKeeper {
 public:
  // Refreshes `lease_id` once right away (so an unknown lease fails here, kNotFound), then
  // every TTL/3 on a thread of its own.
  static EtcdResult<LeaseKeeper> start(const Client& client, int64_t lease_id, LeaseLostFn on_lost);

  LeaseKeeper(LeaseKeeper&&) noexcept;
  LeaseKeeper& operator=(LeaseKeeper&&) noexcept;
  ~LeaseKeeper();  // stops refreshing (the lease then expires after its TTL unless revoked)

  int64_t id() const;
  int64_t ttl() const;  // the TTL of the last successful keep-alive, in seconds
  bool lost() const;
  int64_t refreshes() const;  // successful keep-alives so far

  struct State;

 private:
  explicit LeaseKeeper(std::unique_ptr<State> s);
  std::unique_ptr<State> s_;
};

}  // namespace azote::etcd
