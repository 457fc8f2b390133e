#include "etcd/watch.hpp"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <utility>

#include "etcd/transport.hpp"

namespace azote::etcd {

using detail::Clock;
using detail::Endpoint;
using detail::Transport;
using std::chrono::milliseconds;

namespace {

Event event_of(const mvccpb::Event& e) {
  Event ev;
  ev.type = e.type() == mvccpb::Event::DELETE ? Event::Type::kDelete : Event::Type::kPut;
  ev.kv = detail::from_pb(e.kv());
  if (e.has_prev_kv() && !e.prev_kv().key().empty()) ev.prev_kv = detail::from_pb(e.prev_kv());
  return ev;
}

}  // namespace

struct Watcher::State {
  std::shared_ptr<Transport> t;
  std::string key;
  std::string range_end;
  WatchOptions options;
  EventsFn on_events;
  StopFn on_stop;
  std::string what;

  std::mutex mu;
  std::condition_variable cv;
  bool stop = false;                   // the owner is going
  grpc::ClientContext* ctx = nullptr;  // the open stream's, to cancel it
  std::string endpoint;
  bool created = false;                      // the first stream's watch exists
  std::optional<EtcdError> start_error;      // or why it could not be made

  std::atomic<int64_t> next_revision{0};  // the first revision not yet delivered
  std::atomic<int64_t> reconnects{0};
  std::atomic<bool> stopped{false};
  std::thread thread;

  bool stopping() {
    std::lock_guard lock(mu);
    return stop;
  }
  // Sleeps `d` unless stopped: false when stopped.
  bool sleep(milliseconds d) {
    std::unique_lock lock(mu);
    return !cv.wait_for(lock, d, [&] { return stop; });
  }
  void fail_start(EtcdError err) {
    std::lock_guard lock(mu);
    start_error = std::move(err);
    cv.notify_all();
  }
  bool has_started() {
    std::lock_guard lock(mu);
    return created;
  }

  // How one stream ended.
  enum class End { kBroken, kStopped, kFinal };

  End stream_on(Endpoint& e, EtcdError& broken) {
    grpc::ClientContext call;
    call.AddMetadata("hasleader", "true");  // a member cut off from its leader ends the stream
    {
      std::lock_guard lock(mu);
      if (stop) return End::kStopped;
      ctx = &call;
      endpoint = e.address;
    }
    End end = End::kBroken;
    auto stream = e.watch->Watch(&call);
    etcdserverpb::WatchRequest req;
    auto* c = req.mutable_create_request();
    c->set_key(key);
    c->set_range_end(range_end);
    c->set_start_revision(next_revision.load());
    c->set_prev_kv(options.prev_kv);
    c->set_progress_notify(options.progress_notify);
    if (stream->Write(req)) {
      etcdserverpb::WatchResponse resp;
      while (stream->Read(&resp)) {
        if (resp.created() && !resp.canceled()) {
          // From now on: this revision is what a resume must start after.
          if (next_revision.load() == 0) next_revision.store(resp.header().revision() + 1);
          std::lock_guard lock(mu);
          created = true;
          cv.notify_all();
        }
        if (resp.compact_revision() != 0) {
          stopped.store(true);
          if (!has_started()) {
            std::lock_guard lock(mu);
            created = true;
            cv.notify_all();
          }
          if (on_stop) on_stop(Compacted{resp.compact_revision()});
          end = End::kFinal;
          break;
        }
        if (resp.canceled()) {
          EtcdError err = local_error(EtcdErrc::kCanceled, what,
                                      resp.cancel_reason().empty() ? "etcdserver: watch canceled" : resp.cancel_reason());
          err.endpoint = e.address;
          stopped.store(true);
          if (!has_started()) {
            fail_start(std::move(err));
          } else if (on_stop) {
            on_stop(err);
          }
          end = End::kFinal;
          break;
        }
        const int64_t from = next_revision.load();
        std::vector<Event> events;
        events.reserve(static_cast<size_t>(resp.events_size()));
        for (const auto& pe : resp.events()) {
          // Never twice: anything before the resume point was delivered already.
          if (pe.kv().mod_revision() >= from) events.push_back(event_of(pe));
        }
        if (!events.empty()) {
          next_revision.store(events.back().revision() + 1);
          if (on_events) on_events(events);
        } else if (!resp.created() && resp.events_size() == 0 && resp.header().revision() >= from) {
          // A progress notification: everything up to this revision has been sent.
          next_revision.store(resp.header().revision() + 1);
        }
      }
    }
    if (end == End::kFinal) call.TryCancel();
    const grpc::Status st = stream->Finish();
    {
      std::lock_guard lock(mu);
      ctx = nullptr;
      endpoint.clear();
      if (stop) return End::kStopped;
    }
    if (end == End::kBroken) {
      broken = t->error(st.ok() ? grpc::Status(grpc::StatusCode::UNAVAILABLE, "watch stream closed by the member") : st,
                        e.address, what);
    }
    return end;
  }

  void run() {
    size_t from = t->current();
    milliseconds backoff(50);
    for (;;) {
      if (stopping()) return;
      auto picked = t->pick(from, Clock::now() + t->options().connect_timeout, what);
      if (!picked.ok()) {
        if (!sleep(backoff)) return;
        backoff = std::min(backoff * 2, milliseconds(1000));
        from = (from + 1) % t->size();
        continue;
      }
      const size_t i = *picked;
      EtcdError broken;
      const bool was_created = has_started();
      const End end = stream_on(t->endpoint(i), broken);
      if (end != End::kBroken) return;
      // A member that answers with an error that is no connection problem (a bad key, no
      // permission) would answer it again: the first stream reports it.
      if (!was_created && !has_started() && broken.kind != EtcdErrc::kUnavailable && broken.kind != EtcdErrc::kCanceled &&
          broken.kind != EtcdErrc::kDeadline) {
        fail_start(std::move(broken));
        return;
      }
      if (was_created || has_started()) reconnects.fetch_add(1);
      if (has_started()) backoff = milliseconds(50);
      if (!sleep(backoff)) return;
      backoff = std::min(backoff * 2, milliseconds(1000));
      from = (i + 1) % t->size();  // a broken stream: another member, if one is up
    }
  }
};

Watcher::Watcher(std::unique_ptr<State> s) : s_(std::move(s)) {}
Watcher::Watcher(Watcher&&) noexcept = default;
Watcher& Watcher::operator=(Watcher&& o) noexcept {
  if (this != &o) {
    Watcher old(std::move(*this));
    s_ = std::move(o.s_);
  }
  return *this;
}

Watcher::~Watcher() {
  if (!s_) return;
  {
    std::lock_guard lock(s_->mu);
    s_->stop = true;
    if (s_->ctx != nullptr) s_->ctx->TryCancel();
  }
  s_->cv.notify_all();
  if (s_->thread.joinable()) s_->thread.join();
}

EtcdResult<Watcher> Watcher::start(const Client& client, std::string key, WatchOptions options, EventsFn on_events,
                                   StopFn on_stop) {
  auto s = std::make_unique<State>();
  s->what = std::string("watch ") + (options.prefix ? "prefix " : "") + key;
  if (key.empty() && !options.prefix) {
    return Unexpected{local_error(EtcdErrc::kInvalidArgument, s->what, "the key is empty")};
  }
  if (options.start_revision < 0) {
    return Unexpected{local_error(EtcdErrc::kInvalidArgument, s->what, "negative start revision")};
  }
  s->t = client.transport();
  if (options.prefix) {
    s->range_end = prefix_end(key);
    if (key.empty()) key.assign(1, '\0');
  }
  s->key = std::move(key);
  s->options = options;
  s->on_events = std::move(on_events);
  s->on_stop = std::move(on_stop);
  s->next_revision.store(options.start_revision);
  State* raw = s.get();
  s->thread = std::thread([raw] { raw->run(); });
  Watcher w(std::move(s));
  // Wait for the first stream's watch, or its failure.
  const auto deadline = std::chrono::steady_clock::now() + w.s_->t->options().call_timeout;
  std::unique_lock lock(w.s_->mu);
  const bool settled = w.s_->cv.wait_until(lock, deadline, [&] { return w.s_->created || w.s_->start_error; });
  if (w.s_->start_error) {
    EtcdError err = *w.s_->start_error;
    lock.unlock();
    return Unexpected{std::move(err)};  // w's destructor joins the thread
  }
  if (!settled) {
    lock.unlock();
    EtcdError err = local_error(EtcdErrc::kUnavailable, w.s_->what, "no member created the watch before the deadline");
    err.code = grpc::StatusCode::UNAVAILABLE;
    return Unexpected{std::move(err)};
  }
  lock.unlock();
  return w;
}

int64_t Watcher::last_revision() const { return s_->next_revision.load() - 1; }
std::string Watcher::endpoint() const {
  std::lock_guard lock(s_->mu);
  return s_->endpoint;
}
int64_t Watcher::reconnects() const { return s_->reconnects.load(); }
bool Watcher::stopped() const { return s_->stopped.load(); }

// PrefixSync

struct PrefixSync::State {
  Client client;
  std::string prefix;
  SnapshotFn on_snapshot;
  EventsFn on_events;
  SyncOptions options;

  std::mutex mu;
  std::condition_variable cv;
  bool stop = false;
  bool watch_ended = false;  // compacted or canceled: the watcher must be replaced
  bool compacted = false;
  std::optional<Watcher> watcher;
  std::atomic<int64_t> revision{0};
  std::atomic<int64_t> snapshots{0};
  std::thread thread;

  explicit State(const Client& c) : client(c) {}

  bool sleep(milliseconds d) {
    std::unique_lock lock(mu);
    return !cv.wait_for(lock, d, [&] { return stop; });
  }

  EtcdResult<void> list() {
    AZOTE_TRY(snap, client.list_prefix(prefix, options.page_size));
    revision.store(snap.revision);
    snapshots.fetch_add(1);
    if (on_snapshot) on_snapshot(snap);
    return {};
  }

  EtcdResult<void> watch() {
    WatchOptions wo;
    wo.prefix = true;
    wo.start_revision = revision.load() + 1;
    wo.prev_kv = options.prev_kv;
    wo.progress_notify = true;
    AZOTE_TRY(w, Watcher::start(
                     client, prefix, wo,
                     [this](const std::vector<Event>& evs) {
                       revision.store(evs.back().revision());
                       if (on_events) on_events(evs);
                     },
                     [this](const WatchStop& why) {
                       std::lock_guard lock(mu);
                       watch_ended = true;
                       compacted = std::holds_alternative<Compacted>(why);
                       cv.notify_all();
                     }));
    std::lock_guard lock(mu);
    watcher.emplace(std::move(w));
    return {};
  }

  void run() {
    for (;;) {
      bool relist = false;
      {
        std::unique_lock lock(mu);
        cv.wait(lock, [&] { return stop || watch_ended; });
        if (stop) return;
        watch_ended = false;
        relist = compacted;
      }
      std::optional<Watcher> old;
      {
        std::lock_guard lock(mu);
        old.swap(watcher);
      }
      old.reset();  // joins its thread (it has reported and returns)
      milliseconds backoff(100);
      while (relist) {
        if (list().ok()) break;
        if (!sleep(backoff)) return;
        backoff = std::min(backoff * 2, milliseconds(2000));
      }
      backoff = milliseconds(100);
      while (!watch().ok()) {
        if (!sleep(backoff)) return;
        backoff = std::min(backoff * 2, milliseconds(2000));
      }
    }
  }
};

PrefixSync::PrefixSync(std::unique_ptr<State> s) : s_(std::move(s)) {}
PrefixSync::PrefixSync(PrefixSync&&) noexcept = default;
PrefixSync& PrefixSync::operator=(PrefixSync&& o) noexcept {
  if (this != &o) {
    PrefixSync old(std::move(*this));
    s_ = std::move(o.s_);
  }
  return *this;
}

PrefixSync::~PrefixSync() {
  if (!s_) return;
  {
    std::lock_guard lock(s_->mu);
    s_->stop = true;
  }
  s_->cv.notify_all();
  if (s_->thread.joinable()) s_->thread.join();
  s_->watcher.reset();
}

EtcdResult<PrefixSync> PrefixSync::start(const Client& client, std::string prefix, SnapshotFn on_snapshot,
                                         EventsFn on_events, SyncOptions options) {
  if (options.page_size <= 0) {
    return Unexpected{local_error(EtcdErrc::kInvalidArgument, "sync prefix " + prefix, "page size must be positive")};
  }
  auto s = std::make_unique<State>(client);
  s->prefix = std::move(prefix);
  s->on_snapshot = std::move(on_snapshot);
  s->on_events = std::move(on_events);
  s->options = options;
  if (options.resume_revision > 0) {
    s->revision.store(options.resume_revision);
  } else {
    AZOTE_TRYV(s->list());
  }
  AZOTE_TRYV(s->watch());
  State* raw = s.get();
  s->thread = std::thread([raw] { raw->run(); });
  return PrefixSync(std::move(s));
}

int64_t PrefixSync::revision() const { return s_->revision.load(); }
int64_t PrefixSync::snapshots() const { return s_->snapshots.load(); }

}  // namespace azote::etcd
