// Watches against real etcd: order, compaction, list-then-watch, resume after a member dies.
#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <mutex>

#include "etcd/test_util.hpp"
#include "etcd/watch.hpp"

namespace azote::etcd {
namespace {

using std::chrono::milliseconds;

// What a watcher delivered, for the test thread to look at.
struct Recorder {
  std::mutex mu;
  std::vector<Event> events;
  std::vector<size_t> batch_sizes;
  std::optional<WatchStop> stop;

  EventsFn on_events() {
    return [this](const std::vector<Event>& evs) {
      std::lock_guard lock(mu);
      events.insert(events.end(), evs.begin(), evs.end());
      batch_sizes.push_back(evs.size());
    };
  }
  StopFn on_stop() {
    return [this](const WatchStop& s) {
      std::lock_guard lock(mu);
      stop = s;
    };
  }
  size_t count() {
    std::lock_guard lock(mu);
    return events.size();
  }
  bool stopped() {
    std::lock_guard lock(mu);
    return stop.has_value();
  }
  std::vector<Event> snapshot() {
    std::lock_guard lock(mu);
    return events;
  }
};

class WatchTest : public EtcdTest {};

TEST_F(WatchTest, SeesPutsAndDeletesInOrder) {
  start_cluster();
  Recorder rec;
  auto w = Watcher::start(client(), "/w/", {.prefix = true, .start_revision = 0, .prev_kv = true}, rec.on_events(), rec.on_stop());
  ASSERT_TRUE(w.ok()) << w.error().describe();
  ASSERT_TRUE(client().put("/w/a", "1").ok());
  ASSERT_TRUE(client().put("/elsewhere", "x").ok());
  ASSERT_TRUE(client().put("/w/b", "1").ok());
  ASSERT_TRUE(client().put("/w/a", "2").ok());
  ASSERT_TRUE(client().del("/w/a").ok());
  auto t = client().txn({}, {Op::put("/w/c", "1"), Op::del("/w/b")});  // one revision, two events
  ASSERT_TRUE(t.ok());
  ASSERT_TRUE(eventually([&] { return rec.count() >= 6; }, milliseconds(5000))) << rec.count();
  std::this_thread::sleep_for(milliseconds(100));
  const auto evs = rec.snapshot();
  ASSERT_EQ(evs.size(), 6u);
  using T = Event::Type;
  const std::vector<std::pair<T, std::string>> want = {{T::kPut, "/w/a"},    {T::kPut, "/w/b"},
                                                       {T::kPut, "/w/a"},    {T::kDelete, "/w/a"},
                                                       {T::kPut, "/w/c"},    {T::kDelete, "/w/b"}};
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(evs[i].type, want[i].first) << i;
    EXPECT_EQ(evs[i].kv.key, want[i].second) << i;
    if (i > 0) {
      EXPECT_GE(evs[i].revision(), evs[i - 1].revision()) << i;
    }
  }
  EXPECT_EQ(evs[2].kv.value, "2");
  EXPECT_EQ(evs[2].kv.version, 2);
  ASSERT_TRUE(evs[2].prev_kv.has_value());
  EXPECT_EQ(evs[2].prev_kv->value, "1");
  ASSERT_TRUE(evs[3].prev_kv.has_value());  // what was deleted
  EXPECT_EQ(evs[3].prev_kv->value, "2");
  EXPECT_FALSE(evs[0].prev_kv.has_value());  // a creation has none
  EXPECT_EQ(evs[4].revision(), t->revision);
  EXPECT_EQ(evs[5].revision(), t->revision);
  EXPECT_EQ(w->last_revision(), t->revision);
  EXPECT_FALSE(rec.stopped());
  EXPECT_EQ(w->reconnects(), 0);

  // From a past revision: history replayed first.
  Recorder past;
  auto w2 = Watcher::start(client(), "/w/a", {.start_revision = evs[0].revision()}, past.on_events());
  ASSERT_TRUE(w2.ok());
  ASSERT_TRUE(eventually([&] { return past.count() >= 3; }, milliseconds(5000)));
  EXPECT_EQ(past.snapshot()[0].revision(), evs[0].revision());
}

TEST_F(WatchTest, FromACompactedRevisionReportsCompacted) {
  start_cluster();
  int64_t first = 0;
  int64_t last = 0;
  for (int i = 0; i < 5; ++i) {
    auto r = client().put("/c/k", std::to_string(i));
    ASSERT_TRUE(r.ok());
    if (i == 0) first = *r;
    last = *r;
  }
  ASSERT_TRUE(client().compact(last).ok());
  Recorder rec;
  auto w = Watcher::start(client(), "/c/", {.prefix = true, .start_revision = first}, rec.on_events(), rec.on_stop());
  ASSERT_TRUE(w.ok()) << w.error().describe();
  ASSERT_TRUE(eventually([&] { return rec.stopped(); }, milliseconds(5000)));
  std::lock_guard lock(rec.mu);
  ASSERT_TRUE(std::holds_alternative<Compacted>(*rec.stop));
  EXPECT_EQ(std::get<Compacted>(*rec.stop).compact_revision, last);
  EXPECT_TRUE(rec.events.empty());  // nothing half-delivered
  EXPECT_TRUE(w->stopped());
}

// A copy of a prefix kept by PrefixSync: the snapshot replaces it, events update it.
struct Copy {
  std::mutex mu;
  std::map<std::string, std::string> kvs;
  int64_t revision = 0;
  int snapshots = 0;

  SnapshotFn on_snapshot() {
    return [this](const Snapshot& s) {
      std::lock_guard lock(mu);
      kvs.clear();
      for (const auto& kv : s.kvs) kvs[kv.key] = kv.value;
      revision = s.revision;
      ++snapshots;
    };
  }
  EventsFn on_events() {
    return [this](const std::vector<Event>& evs) {
      std::lock_guard lock(mu);
      for (const auto& e : evs) {
        EXPECT_GT(e.revision(), revision);  // never an event the copy already has
        if (e.type == Event::Type::kPut) {
          kvs[e.kv.key] = e.kv.value;
        } else {
          kvs.erase(e.kv.key);
        }
        revision = e.revision();
      }
    };
  }
  std::map<std::string, std::string> get() {
    std::lock_guard lock(mu);
    return kvs;
  }
};

std::map<std::string, std::string> listed(Client& c, const std::string& prefix) {
  auto s = c.list_prefix(prefix);
  EXPECT_TRUE(s.ok());
  std::map<std::string, std::string> m;
  if (s.ok()) {
    for (const auto& kv : s->kvs) m[kv.key] = kv.value;
  }
  return m;
}

TEST_F(WatchTest, SyncPrefixListsWatchesAndRelistsAfterCompaction) {
  start_cluster();
  // The ordinary cycle: a snapshot, then events.
  ASSERT_TRUE(client().put("/s/a", "1").ok());
  Copy live;
  auto sync = PrefixSync::start(client(), "/s/", live.on_snapshot(), live.on_events(), {.page_size = 2});
  ASSERT_TRUE(sync.ok()) << sync.error().describe();
  EXPECT_EQ(live.get(), (std::map<std::string, std::string>{{"/s/a", "1"}}));
  ASSERT_TRUE(client().put("/s/b", "2").ok());
  ASSERT_TRUE(client().put("/s/c", "3").ok());
  ASSERT_TRUE(client().del("/s/a").ok());
  ASSERT_TRUE(eventually([&] { return live.get() == listed(client(), "/s/"); }, milliseconds(5000)));

  // A copy kept elsewhere as of `old`, while history moved on and was compacted away: the
  // watch from old+1 is refused as compacted, and the sync lists again and goes on.
  auto old = client().put("/s/d", "4");
  ASSERT_TRUE(old.ok());
  ASSERT_TRUE(client().del("/s/b").ok());
  ASSERT_TRUE(client().put("/s/e", "5").ok());
  auto now = client().put("/s/c", "33");
  ASSERT_TRUE(now.ok());
  ASSERT_TRUE(client().compact(*now).ok());
  Copy resumed;
  {
    std::lock_guard lock(resumed.mu);
    resumed.kvs = {{"/s/c", "3"}, {"/s/d", "4"}, {"/s/b", "2"}};
    resumed.revision = *old;
  }
  auto sync2 = PrefixSync::start(client(), "/s/", resumed.on_snapshot(), resumed.on_events(),
                                 {.resume_revision = *old});
  ASSERT_TRUE(sync2.ok()) << sync2.error().describe();
  ASSERT_TRUE(eventually([&] { return sync2->snapshots() == 1; }, milliseconds(5000)));
  EXPECT_EQ(resumed.get(), (std::map<std::string, std::string>{{"/s/c", "33"}, {"/s/d", "4"}, {"/s/e", "5"}}));
  // And it goes on after the re-list.
  ASSERT_TRUE(client().put("/s/f", "6").ok());
  ASSERT_TRUE(client().del("/s/d").ok());
  const auto want = std::map<std::string, std::string>{{"/s/c", "33"}, {"/s/e", "5"}, {"/s/f", "6"}};
  ASSERT_TRUE(eventually([&] { return resumed.get() == want && live.get() == want; }, milliseconds(5000)));
  EXPECT_EQ(sync2->snapshots(), 1);
  EXPECT_EQ(sync->snapshots(), 1);  // the live one never needed a re-list
  EXPECT_EQ(sync2->revision(), sync->revision());
}

TEST_F(WatchTest, ResumesOnAnotherMemberWhenItsMemberIsKilled) {
  start_cluster({.members = 3});
  // The watch on a follower, the writes on the leader: killing the watch's member leaves
  // the writes running while the watch is down, so a resume from "now" would lose some.
  auto leader = cluster_->wait_leader();
  ASSERT_TRUE(leader.ok()) << leader.error().message();
  const int follower = (*leader + 1) % 3;
  const int other = (*leader + 2) % 3;
  auto watch_client = cluster_->client(
      {cluster_->endpoint(follower), cluster_->endpoint(*leader), cluster_->endpoint(other)});
  auto writer = cluster_->client({cluster_->endpoint(*leader), cluster_->endpoint(other)});
  ASSERT_TRUE(watch_client.ok() && writer.ok());
  auto start = writer->put("/r/start", "x");
  ASSERT_TRUE(start.ok());
  Recorder rec;
  auto w = Watcher::start(*watch_client, "/r/k", {.prefix = true, .start_revision = *start + 1}, rec.on_events(),
                          rec.on_stop());
  ASSERT_TRUE(w.ok()) << w.error().describe();
  ASSERT_EQ(w->endpoint(), cluster_->endpoint(follower));
  auto key = [](int i) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "/r/k%03d", i);
    return std::string(buf);
  };
  constexpr int kWrites = 300;
  std::atomic<int> written{0};
  std::string write_error;
  std::thread writes([&] {
    for (int i = 0; i < kWrites; ++i) {
      auto r = writer->put(key(i), std::to_string(i));
      if (!r.ok()) {
        write_error = r.error().describe();
        return;
      }
      written = i + 1;
    }
  });
  ASSERT_TRUE(eventually([&] { return rec.count() >= 50; }, milliseconds(5000)));
  ASSERT_TRUE(cluster_->kill(follower).ok());
  const int written_at_kill = written.load();
  writes.join();
  ASSERT_EQ(written.load(), kWrites) << write_error;
  EXPECT_LT(written_at_kill, kWrites - 20) << "the writes ended before the kill: the test shows nothing";
  ASSERT_TRUE(eventually([&] { return rec.count() >= kWrites; }, milliseconds(10000))) << rec.count();
  std::this_thread::sleep_for(milliseconds(200));
  const auto evs = rec.snapshot();
  ASSERT_EQ(evs.size(), static_cast<size_t>(kWrites));  // none lost, none twice
  for (int i = 0; i < kWrites; ++i) {
    EXPECT_EQ(evs[static_cast<size_t>(i)].kv.key, key(i)) << i;
    if (i > 0) {
      EXPECT_GT(evs[static_cast<size_t>(i)].revision(), evs[static_cast<size_t>(i) - 1].revision()) << i;
    }
  }
  EXPECT_GE(w->reconnects(), 1);
  EXPECT_NE(w->endpoint(), cluster_->endpoint(follower));
  EXPECT_FALSE(rec.stopped());
}

}  // namespace
}  // namespace azote::etcd
