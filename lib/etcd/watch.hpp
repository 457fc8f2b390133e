// Watches. A Watcher follows one key or prefix from a start revision on a thread of its
// own, delivering every change in revision order, exactly once:
//   - when its stream breaks (the member died, lost its leader, the connection dropped),
//     it opens a new one on the next reachable member from last delivered revision + 1;
//     events already delivered are never delivered again, and none is skipped;
//   - when etcd answers that the revision it needs has been compacted away, it cannot go
//     on without losing events: it stops and reports Compacted{compact_revision}; the
//     caller must re-list (PrefixSync does that cycle).
// Callbacks run on the watcher's thread, one at a time; they must not destroy the watcher.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "etcd/client.hpp"
#include "etcd/error.hpp"

namespace azote::etcd {

struct Event {
  enum class Type { kPut, kDelete };
  Type type = Type::kPut;
  KeyValue kv;  // a delete: the key, with mod_revision the deletion's revision
  std::optional<KeyValue> prev_kv;  // with WatchOptions::prev_kv, unless compacted away
  int64_t revision() const { return kv.mod_revision; }
};

// The watch cannot go on: history before compact_revision is gone.
struct Compacted {
  int64_t compact_revision = 0;
};

// Why a watcher stopped by itself: compaction, or etcd canceled the watch (its reason).
using WatchStop = std::variant<Compacted, EtcdError>;

struct WatchOptions {
  bool prefix = false;         // every key starting with the key given
  int64_t start_revision = 0;  // first revision to deliver; 0 = from now on
  bool prev_kv = false;        // events carry the value before them
  bool progress_notify = false;  // let etcd send empty progress answers (advance the resume point)
};

// One batch: the events of one or more whole revisions (etcd never splits a revision).
using EventsFn = std::function<void(const std::vector<Event>&)>;
using StopFn = std::function<void(const WatchStop&)>;

class Watcher {
 public:
  // Returns once etcd has created the watch (or kUnavailable when no member could create
  // it before the call timeout). Events before that moment with a revision ≥
  // start_revision are delivered too: nothing is missed between listing and watching.
  static EtcdResult<Watcher> start(const Client& client, std::string key, WatchOptions options,
                                   EventsFn on_events, StopFn on_stop = {});

  Watcher(Watcher&&) noexcept;
  Watcher& operator=(Watcher&&) noexcept;
  ~Watcher();  // cancels the stream and joins the thread

  int64_t last_revision() const;  // of the last event delivered (or start - 1)
  std::string endpoint() const;   // the member the current stream is on ("" between streams)
  int64_t reconnects() const;     // streams opened again after a break
  bool stopped() const;           // by a Compacted or a cancel (on_stop was called)

  struct State;

 private:
  explicit Watcher(std::unique_ptr<State> s);
  std::unique_ptr<State> s_;
};

struct SyncOptions {
  int64_t page_size = 1000;
  bool prev_kv = false;
  // Resume a copy the caller already holds as of this revision (one kept on disk):
  // watches from resume_revision + 1 without listing first; if that history has been
  // compacted, lists (on_snapshot) and goes on. 0: list first.
  int64_t resume_revision = 0;
};

// A whole prefix at one revision: replaces whatever copy the caller had.
using SnapshotFn = std::function<void(const Snapshot&)>;

// The list-then-watch cycle that keeps a copy of a prefix: on_snapshot with everything
// under the prefix at revision R, then on_events for every change after R, in order; when
// the watch is compacted away, a new on_snapshot, then events after it again. on_snapshot
// and on_events are never called at the same time (though not always from one thread).
class PrefixSync {
 public:
  // Returns after the first snapshot was delivered (or, resuming, the watch was created).
  static EtcdResult<PrefixSync> start(const Client& client, std::string prefix, SnapshotFn on_snapshot,
                                      EventsFn on_events, SyncOptions options = {});

  PrefixSync(PrefixSync&&) noexcept;
  PrefixSync& operator=(PrefixSync&&) noexcept;
  ~PrefixSync();

  int64_t revision() const;   // of the copy: last snapshot or event delivered
  int64_t snapshots() const;  // snapshots delivered so far (re-lists + 1)

  struct State;

 private:
  explicit PrefixSync(std::unique_ptr<State> s);
  std::unique_ptr<State> s_;
};

}  // namespace azote::etcd
