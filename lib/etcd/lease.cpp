#include "etcd/lease.hpp"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <utility>

#include "etcd/transport.hpp"

namespace azote::etcd {

using detail::Clock;

namespace detail {

EtcdResult<int64_t> keep_alive_once(Transport& t, int64_t id, Clock::time_point deadline) {
  const std::string what = "lease keep-alive " + std::to_string(id);
  etcdserverpb::LeaseKeepAliveRequest req;
  req.set_id(id);
  etcdserverpb::LeaseKeepAliveResponse resp;
  AZOTE_TRYV(t.call_until(what, Retry::kIdempotent, deadline, [&](Endpoint& e, grpc::ClientContext& ctx) {
    auto stream = e.lease->LeaseKeepAlive(&ctx);
    const bool answered = stream->Write(req) && stream->Read(&resp);
    stream->WritesDone();
    if (answered) ctx.TryCancel();  // the answer is in: no need to wait for the end of the stream
    grpc::Status st = stream->Finish();
    if (answered) return grpc::Status::OK;
    if (st.ok()) st = grpc::Status(grpc::StatusCode::UNAVAILABLE, "keep-alive stream closed without an answer");
    return st;
  }));
  if (resp.ttl() <= 0) {
    EtcdError err = local_error(EtcdErrc::kNotFound, what, "etcdserver: requested lease not found (expired or revoked)");
    err.code = grpc::StatusCode::NOT_FOUND;
    return Unexpected{std::move(err)};
  }
  return resp.ttl();
}

}  // namespace detail

struct LeaseKeeper::State {
  std::shared_ptr<detail::Transport> t;
  int64_t id = 0;
  LeaseLostFn on_lost;
  std::atomic<int64_t> ttl{0};
  std::atomic<int64_t> refreshes{0};
  std::atomic<bool> lost{false};
  std::mutex mu;
  std::condition_variable cv;
  bool stop = false;
  std::thread thread;

  // Sleeps `d` unless stopped: false when stopped.
  bool sleep(std::chrono::milliseconds d) {
    std::unique_lock lock(mu);
    return !cv.wait_for(lock, d, [&] { return stop; });
  }

  void run(std::chrono::steady_clock::time_point last_ok) {
    using std::chrono::milliseconds;
    for (;;) {
      const milliseconds ttl_ms(ttl.load() * 1000);
      const milliseconds period = std::max(milliseconds(200), ttl_ms / 3);
      // After a failure, try again sooner (but not in a tight loop).
      const bool failing = std::chrono::steady_clock::now() - last_ok > period;
      if (!sleep(failing ? std::min(period, milliseconds(500)) : period)) return;
      // One attempt may not outlive the lease.
      const auto left = ttl_ms - std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - last_ok);
      const auto budget = std::clamp(left, milliseconds(100), t->options().call_timeout);
      // The lease lives at least TTL from when etcd gets the keep-alive, so from this send.
      const auto sent = std::chrono::steady_clock::now();
      auto r = detail::keep_alive_once(*t, id, Clock::now() + budget);
      if (r.ok()) {
        ttl.store(*r);
        refreshes.fetch_add(1);
        last_ok = sent;
        continue;
      }
      EtcdError err = std::move(r).error();
      const bool expired = std::chrono::steady_clock::now() - last_ok >= ttl_ms;
      if (err.kind == EtcdErrc::kNotFound || expired) {
        if (err.kind != EtcdErrc::kNotFound) {
          err.message = "no keep-alive succeeded for the lease's whole TTL (" + std::to_string(ttl.load()) +
                        " s): taken as expired; last error: " + err.message;
        }
        lost.store(true);
        if (on_lost) on_lost(id, err);
        return;
      }
    }
  }
};

LeaseKeeper::LeaseKeeper(std::unique_ptr<State> s) : s_(std::move(s)) {}
LeaseKeeper::LeaseKeeper(LeaseKeeper&&) noexcept = default;
LeaseKeeper& LeaseKeeper::operator=(LeaseKeeper&& o) noexcept {
  if (this != &o) {
    LeaseKeeper old(std::move(*this));
    s_ = std::move(o.s_);
  }
  return *this;
}

LeaseKeeper::~LeaseKeeper() {
  if (!s_) return;
  {
    std::lock_guard lock(s_->mu);
    s_->stop = true;
  }
  s_->cv.notify_all();
  if (s_->thread.joinable()) s_->thread.join();
}

EtcdResult<LeaseKeeper> LeaseKeeper::start(const Client& client, int64_t lease_id, LeaseLostFn on_lost) {
  auto s = std::make_unique<State>();
  s->t = client.transport();
  s->id = lease_id;
  s->on_lost = std::move(on_lost);
  const auto sent = std::chrono::steady_clock::now();
  AZOTE_TRY(ttl, detail::keep_alive_once(*s->t, lease_id, s->t->deadline()));
  s->ttl.store(ttl);
  s->refreshes.store(1);
  State* raw = s.get();
  s->thread = std::thread([raw, sent] { raw->run(sent); });
  return LeaseKeeper(std::move(s));
}

int64_t LeaseKeeper::id() const { return s_->id; }
int64_t LeaseKeeper::ttl() const { return s_->ttl.load(); }
bool LeaseKeeper::lost() const { return s_->lost.load(); }
int64_t LeaseKeeper::refreshes() const { return s_->refreshes.load(); }

}  // namespace azote::etcd
