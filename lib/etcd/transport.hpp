// Internal to lib/etcd (includes the generated etcdpb headers; not for users of the
// library): one gRPC channel and its stubs per endpoint, and the failover loop every call
// goes through.
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "etcd/client.hpp"
#include "etcd/error.hpp"
#include "etcdpb/rpc.grpc.pb.h"

namespace azote::etcd::detail {

using Clock = std::chrono::system_clock;  // what grpc::ClientContext deadlines take

struct Endpoint {
  std::string address;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<etcdserverpb::KV::Stub> kv;
  std::unique_ptr<etcdserverpb::Watch::Stub> watch;
  std::unique_ptr<etcdserverpb::Lease::Stub> lease;
  std::unique_ptr<etcdserverpb::Maintenance::Stub> maintenance;
  std::unique_ptr<etcdserverpb::Cluster::Stub> cluster;
};

// Whether a failed call may be sent again to another member.
enum class Retry {
  kIdempotent,  // reads, keep-alives, revokes: on any UNAVAILABLE
  kIfNotSent,   // writes: only when the member cannot have applied it
};

// "" when usable, otherwise why not.
std::string check_endpoint(std::string_view endpoint);

class Transport {
 public:
  Transport(std::vector<std::string> addresses, Options options);

  const Options& options() const { return options_; }
  const std::vector<std::string>& addresses() const { return addresses_; }
  size_t size() const { return endpoints_.size(); }
  Endpoint& endpoint(size_t i) { return *endpoints_[i]; }
  size_t current() const { return current_.load(); }

  // An endpoint not among this client's: a channel made for the occasion.
  std::unique_ptr<Endpoint> make_endpoint(const std::string& address) const;

  Clock::time_point deadline() const { return Clock::now() + options_.call_timeout; }

  // Waits for `e` to be connected, at most until `deadline`: false as soon as it is in
  // TRANSIENT_FAILURE (refused, or backing off after a failure).
  static bool connected(Endpoint& e, Clock::time_point deadline);

  // The first connected endpoint from index `from` on, round and round until `deadline`.
  EtcdResult<size_t> pick(size_t from, Clock::time_point deadline, const std::string& what);

  // Deadline and the "hasleader" metadata.
  static void prepare(grpc::ClientContext& ctx, Clock::time_point deadline);

  EtcdError error(const grpc::Status& st, const std::string& endpoint, const std::string& what) const;

  // fn(Endpoint&, grpc::ClientContext&) -> grpc::Status, tried on connected members in turn
  // until one answers, the error is not one to retry, or the deadline passes.
  template <class Fn>
  EtcdResult<void> call(const std::string& what, Retry retry, Fn&& fn) {
    return call_until(what, retry, deadline(), std::forward<Fn>(fn));
  }
  template <class Fn>
  EtcdResult<void> call_until(const std::string& what, Retry retry, Clock::time_point deadline, Fn&& fn) {
    const size_t n = endpoints_.size();
    const size_t start = current_.load();
    EtcdError last = local_error(EtcdErrc::kUnavailable, what, "no endpoint tried before the deadline");
    last.code = grpc::StatusCode::UNAVAILABLE;
    for (size_t attempt = 0;; ++attempt) {
      if (attempt > 0 && attempt % n == 0) pause_before_next_round(deadline);
      if (Clock::now() >= deadline) return Unexpected{give_up(std::move(last))};
      const size_t i = (start + attempt) % n;
      Endpoint& e = *endpoints_[i];
      const auto connect_deadline = std::min(deadline, Clock::now() + options_.connect_timeout);
      if (!connected(e, connect_deadline)) {
        last = local_error(EtcdErrc::kUnavailable, what, "cannot connect");
        last.code = grpc::StatusCode::UNAVAILABLE;
        last.endpoint = e.address;
        continue;
      }
      grpc::ClientContext ctx;
      prepare(ctx, deadline);
      const grpc::Status st = fn(e, ctx);
      if (st.ok()) {
        current_.store(i);
        return {};
      }
      EtcdError err = error(st, e.address, what);
      if (!retryable(err, retry)) return Unexpected{std::move(err)};
      last = std::move(err);
    }
  }

  // Only this endpoint (status, defragment).
  template <class Fn>
  EtcdResult<void> call_one(Endpoint& e, const std::string& what, Fn&& fn) {
    const auto dl = deadline();
    if (!connected(e, std::min(dl, Clock::now() + options_.connect_timeout))) {
      EtcdError err = local_error(EtcdErrc::kUnavailable, what, "cannot connect");
      err.code = grpc::StatusCode::UNAVAILABLE;
      err.endpoint = e.address;
      return Unexpected{std::move(err)};
    }
    grpc::ClientContext ctx;
    prepare(ctx, dl);
    const grpc::Status st = fn(e, ctx);
    if (!st.ok()) return Unexpected{error(st, e.address, what)};
    return {};
  }

 private:
  static bool retryable(const EtcdError& err, Retry retry);
  void pause_before_next_round(Clock::time_point deadline) const;
  static EtcdError give_up(EtcdError last);

  Options options_;
  std::vector<std::string> addresses_;
  std::vector<std::unique_ptr<Endpoint>> endpoints_;
  std::atomic<size_t> current_{0};
};

// One keep-alive of lease `id` (a LeaseKeepAlive stream opened for one request): the
// refreshed TTL, or kNotFound once the lease is gone. Defined in lease.cpp.
EtcdResult<int64_t> keep_alive_once(Transport& t, int64_t id, Clock::time_point deadline);

// Conversions from the wire types.
KeyValue from_pb(const mvccpb::KeyValue& kv);

}  // namespace azote::etcd::detail
