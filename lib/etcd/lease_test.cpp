// Leases against one real etcd member: expiry, LeaseKeeper, loss reports.
#include <gtest/gtest.h>

#include <atomic>
#include <mutex>

#include "etcd/lease.hpp"
#include "etcd/test_util.hpp"

namespace azote::etcd {
namespace {

using std::chrono::milliseconds;
using Steady = std::chrono::steady_clock;

class LeaseTest : public EtcdTest {
 protected:
  void SetUp() override { start_cluster(); }
  bool present(const std::string& key) {
    auto r = client().get(key);
    EXPECT_TRUE(r.ok()) << r.error().describe();
    return r.ok() && r->has_value();
  }
};

TEST_F(LeaseTest, KeyVanishesWhenItsLeaseIsNotKeptAlive) {
  auto lease = client().grant(2);
  ASSERT_TRUE(lease.ok()) << lease.error().describe();
  EXPECT_EQ(lease->ttl, 2);
  const auto granted = Steady::now();
  ASSERT_TRUE(client().put("/hb/host-1", "alive", lease->id).ok());
  auto info = client().time_to_live(lease->id, /*with_keys=*/true);
  ASSERT_TRUE(info.ok()) << info.error().describe();
  EXPECT_EQ(info->granted_ttl, 2);
  EXPECT_LE(info->ttl, 2);
  ASSERT_EQ(info->keys.size(), 1u);
  EXPECT_EQ(info->keys[0], "/hb/host-1");
  auto kv = client().get("/hb/host-1");
  ASSERT_TRUE(kv.ok() && kv->has_value());
  EXPECT_EQ((*kv)->lease, lease->id);

  ASSERT_TRUE(eventually([&] { return !present("/hb/host-1"); }, milliseconds(6000)));
  EXPECT_GE(Steady::now() - granted, milliseconds(1500));  // not before its TTL
  auto ttl = client().time_to_live(lease->id);
  ASSERT_FALSE(ttl.ok());
  EXPECT_EQ(ttl.error().kind, EtcdErrc::kNotFound);
  auto ka = client().keep_alive_once(lease->id);
  ASSERT_FALSE(ka.ok());
  EXPECT_EQ(ka.error().kind, EtcdErrc::kNotFound);
  // Putting with a lease that is gone is refused by etcd.
  auto put = client().put("/hb/host-1", "again", lease->id);
  ASSERT_FALSE(put.ok());
  EXPECT_EQ(put.error().kind, EtcdErrc::kNotFound);
}

TEST_F(LeaseTest, KeeperHoldsTheKeyAndItGoesWhenTheKeeperDoes) {
  auto lease = client().grant(2);
  ASSERT_TRUE(lease.ok()) << lease.error().describe();
  ASSERT_TRUE(client().put("/hb/host-2", "alive", lease->id).ok());
  std::atomic<bool> lost{false};
  {
    auto keeper = LeaseKeeper::start(client(), lease->id, [&](int64_t, const EtcdError&) { lost = true; });
    ASSERT_TRUE(keeper.ok()) << keeper.error().describe();
    std::this_thread::sleep_for(milliseconds(4500));  // more than twice the TTL
    EXPECT_TRUE(present("/hb/host-2"));
    EXPECT_FALSE(lost.load());
    EXPECT_FALSE(keeper->lost());
    EXPECT_GE(keeper->refreshes(), 5);  // every TTL/3
    EXPECT_EQ(keeper->ttl(), 2);
    auto info = client().time_to_live(lease->id);
    ASSERT_TRUE(info.ok());
    EXPECT_GE(info->ttl, 1);
  }
  // No keeper: the lease runs out.
  EXPECT_TRUE(eventually([&] { return !present("/hb/host-2"); }, milliseconds(5000)));
  EXPECT_FALSE(lost.load());  // a keeper stopped by its owner reports nothing
}

TEST_F(LeaseTest, KeeperReportsLossAfterRevoke) {
  auto lease = client().grant(3);
  ASSERT_TRUE(lease.ok());
  ASSERT_TRUE(client().put("/hb/host-3", "alive", lease->id).ok());
  std::mutex mu;
  std::optional<EtcdError> why;
  int64_t lost_id = 0;
  std::atomic<int> calls{0};
  auto keeper = LeaseKeeper::start(client(), lease->id, [&](int64_t id, const EtcdError& e) {
    std::lock_guard lock(mu);
    lost_id = id;
    why = e;
    ++calls;
  });
  ASSERT_TRUE(keeper.ok()) << keeper.error().describe();
  ASSERT_TRUE(client().revoke(lease->id).ok());
  EXPECT_FALSE(present("/hb/host-3"));  // revoking deletes the lease's keys at once
  ASSERT_TRUE(eventually([&] { return keeper->lost(); }, milliseconds(4000)));
  std::this_thread::sleep_for(milliseconds(300));
  std::lock_guard lock(mu);
  EXPECT_EQ(calls.load(), 1);
  EXPECT_EQ(lost_id, lease->id);
  ASSERT_TRUE(why.has_value());
  EXPECT_EQ(why->kind, EtcdErrc::kNotFound) << why->describe();
  // Revoking again: etcd says the lease is not found.
  auto again = client().revoke(lease->id);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().kind, EtcdErrc::kNotFound);
}

TEST_F(LeaseTest, KeeperReportsLossWhenNoMemberAnswersForATtl) {
  auto lease = client().grant(2);
  ASSERT_TRUE(lease.ok());
  std::atomic<bool> lost{false};
  std::optional<EtcdError> why;
  std::mutex mu;
  auto keeper = LeaseKeeper::start(client(), lease->id, [&](int64_t, const EtcdError& e) {
    std::lock_guard lock(mu);
    why = e;
    lost = true;
  });
  ASSERT_TRUE(keeper.ok());
  const auto killed = Steady::now();
  ASSERT_TRUE(cluster_->kill(0).ok());
  // Reported once the lease may have expired (TTL after the last keep-alive sent), not
  // much later: a holder must stop acting on it by then.
  ASSERT_TRUE(eventually([&] { return lost.load(); }, milliseconds(4000)));
  EXPECT_LE(Steady::now() - killed, milliseconds(3000));
  std::lock_guard lock(mu);
  ASSERT_TRUE(why.has_value());
  EXPECT_EQ(why->kind, EtcdErrc::kUnavailable) << why->describe();
  EXPECT_NE(why->describe().find("taken as expired"), std::string::npos) << why->describe();
}

TEST_F(LeaseTest, KeeperOfAnUnknownLeaseFailsAtOnce) {
  auto keeper = LeaseKeeper::start(client(), 0x1234567, [](int64_t, const EtcdError&) {});
  ASSERT_FALSE(keeper.ok());
  EXPECT_EQ(keeper.error().kind, EtcdErrc::kNotFound);
  EXPECT_FALSE(client().grant(0).ok());
}

}  // namespace
}  // namespace azote::etcd
