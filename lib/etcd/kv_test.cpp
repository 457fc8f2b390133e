// KV and transactions against one real etcd member; local refusals; compaction and status.
#include <gtest/gtest.h>

#include <string>

#include "etcd/client.hpp"
#include "etcd/test_util.hpp"

namespace azote::etcd {
namespace {

using Cmp = Compare::Cmp;
using std::chrono::milliseconds;

std::string key_n(const std::string& prefix, int i) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "k%03d", i);
  return prefix + buf;
}

class KvTest : public EtcdTest {
 protected:
  void SetUp() override { start_cluster(); }
};

TEST_F(KvTest, PutGetAndPrefixPagesAtOneRevision) {
  for (int i = 0; i < 25; ++i) ASSERT_TRUE(client().put(key_n("/p/", i), std::string("v").append(std::to_string(i))).ok());
  ASSERT_TRUE(client().put("/q/outside", "x").ok());
  ASSERT_TRUE(client().put("/p", "not under /p/").ok());

  auto one = client().get("/p/k007");
  ASSERT_TRUE(one.ok()) << one.error().describe();
  ASSERT_TRUE(one->has_value());
  EXPECT_EQ((*one)->value, "v7");
  EXPECT_EQ((*one)->version, 1);
  EXPECT_GT((*one)->mod_revision, 0);
  auto missing = client().get("/p/nope");
  ASSERT_TRUE(missing.ok());
  EXPECT_FALSE(missing->has_value());

  auto first = client().get_prefix("/p/", 10);
  ASSERT_TRUE(first.ok()) << first.error().describe();
  ASSERT_EQ(first->kvs.size(), 10u);
  EXPECT_TRUE(first->more);
  EXPECT_EQ(first->count, 25);
  EXPECT_EQ(first->kvs.front().key, "/p/k000");
  EXPECT_EQ(first->kvs.back().key, "/p/k009");

  // A key written after the first page is not in the later ones: they are read at its revision.
  ASSERT_TRUE(client().put("/p/k010a", "late").ok());
  std::vector<KeyValue> all = first->kvs;
  Page page = *first;
  while (page.more) {
    auto next = client().get_prefix("/p/", 10, first->revision, all.back().key + '\0');
    ASSERT_TRUE(next.ok()) << next.error().describe();
    EXPECT_EQ(next->revision, first->revision);
    for (auto& kv : next->kvs) all.push_back(kv);
    page = *next;
  }
  ASSERT_EQ(all.size(), 25u);
  for (int i = 0; i < 25; ++i) EXPECT_EQ(all[static_cast<size_t>(i)].key, key_n("/p/", i));

  auto snap = client().list_prefix("/p/", 7);
  ASSERT_TRUE(snap.ok()) << snap.error().describe();
  EXPECT_EQ(snap->kvs.size(), 26u);  // with the late one, read at the latest revision
  EXPECT_GT(snap->revision, first->revision);

  auto d = client().del("/p/k000");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->deleted, 1);
  auto dp = client().del_prefix("/p/");
  ASSERT_TRUE(dp.ok());
  EXPECT_EQ(dp->deleted, 25);
  auto after = client().get_prefix("/p/");
  ASSERT_TRUE(after.ok());
  EXPECT_TRUE(after->kvs.empty());
  auto q = client().get("/q/outside");
  ASSERT_TRUE(q.ok());
  EXPECT_TRUE(q->has_value());
  auto p = client().get("/p");
  ASSERT_TRUE(p.ok());
  EXPECT_TRUE(p->has_value());
  EXPECT_EQ(client().del_prefix("").error().kind, EtcdErrc::kInvalidArgument);
}

TEST_F(KvTest, CompareAndSwapSucceedsThenConflicts) {
  auto r1 = client().put("/cas", "one");
  ASSERT_TRUE(r1.ok());
  auto swap = client().compare_and_swap("/cas", *r1, "two");
  ASSERT_TRUE(swap.ok()) << swap.error().describe();
  EXPECT_TRUE(swap->swapped);
  EXPECT_GT(swap->revision, *r1);

  // Someone else's view, still at r1: refused, and told what is there now.
  auto stale = client().compare_and_swap("/cas", *r1, "three");
  ASSERT_TRUE(stale.ok()) << stale.error().describe();
  EXPECT_FALSE(stale->swapped);
  ASSERT_TRUE(stale->current.has_value());
  EXPECT_EQ(stale->current->value, "two");
  EXPECT_EQ(stale->current->mod_revision, swap->revision);
  auto now = client().get("/cas");
  ASSERT_TRUE(now.ok() && now->has_value());
  EXPECT_EQ((*now)->value, "two");
  EXPECT_EQ((*now)->version, 2);

  // expected 0: only if absent.
  auto absent = client().compare_and_swap("/cas-new", 0, "fresh");
  ASSERT_TRUE(absent.ok());
  EXPECT_TRUE(absent->swapped);

  // A general txn: value and version compares, then get + put + delete in one revision.
  ASSERT_TRUE(client().put("/t/gone", "x").ok());
  auto t = client().txn({Compare::value_of("/cas", Cmp::kEqual, "two"), Compare::version("/cas", Cmp::kGreater, 1)},
                        {Op::get("/cas"), Op::put("/t/new", "n"), Op::del_prefix("/t/g")}, {Op::get("/cas")});
  ASSERT_TRUE(t.ok()) << t.error().describe();
  EXPECT_TRUE(t->succeeded);
  ASSERT_EQ(t->responses.size(), 3u);
  EXPECT_EQ(t->responses[0].type, Op::Type::kGet);
  ASSERT_EQ(t->responses[0].page.kvs.size(), 1u);
  EXPECT_EQ(t->responses[0].page.kvs[0].value, "two");
  EXPECT_EQ(t->responses[1].type, Op::Type::kPut);
  EXPECT_EQ(t->responses[2].deleted, 1);
  auto n = client().get("/t/new");
  ASSERT_TRUE(n.ok() && n->has_value());
  EXPECT_EQ((*n)->mod_revision, t->revision);

  auto f = client().txn({Compare::value_of("/cas", Cmp::kEqual, "one")}, {Op::put("/t/never", "x")},
                        {Op::get_prefix("/t/")});
  ASSERT_TRUE(f.ok());
  EXPECT_FALSE(f->succeeded);
  ASSERT_EQ(f->responses.size(), 1u);
  EXPECT_EQ(f->responses[0].page.kvs.size(), 1u);  // /t/new
  auto never = client().get("/t/never");
  ASSERT_TRUE(never.ok());
  EXPECT_FALSE(never->has_value());
}

TEST_F(KvTest, CreateIfAbsentOnlyOnce) {
  auto a = client().create_if_absent("/lock", "first");
  ASSERT_TRUE(a.ok()) << a.error().describe();
  EXPECT_TRUE(a->created);
  auto b = client().create_if_absent("/lock", "second");
  ASSERT_TRUE(b.ok()) << b.error().describe();
  EXPECT_FALSE(b->created);
  ASSERT_TRUE(b->existing.has_value());
  EXPECT_EQ(b->existing->value, "first");
  EXPECT_EQ(b->existing->create_revision, a->revision);
  auto v = client().get("/lock");
  ASSERT_TRUE(v.ok() && v->has_value());
  EXPECT_EQ((*v)->value, "first");
  // Once deleted, it can be created again.
  ASSERT_TRUE(client().del("/lock").ok());
  auto c = client().create_if_absent("/lock", "third");
  ASSERT_TRUE(c.ok());
  EXPECT_TRUE(c->created);
}

TEST_F(KvTest, ValueOverTheCapIsRefusedBeforeSending) {
  const std::string cap(client().options().max_value_bytes, 'a');
  auto ok = client().put("/big", cap);  // exactly the cap: fine
  ASSERT_TRUE(ok.ok()) << ok.error().describe();

  auto big = client().put("/big2", cap + "b");
  ASSERT_FALSE(big.ok());
  EXPECT_EQ(big.error().kind, EtcdErrc::kTooLarge);
  EXPECT_EQ(big.error().code, grpc::StatusCode::OK);  // not an answer from etcd
  EXPECT_TRUE(big.error().endpoint.empty());
  EXPECT_NE(big.error().describe().find("1048576"), std::string::npos) << big.error().describe();
  auto absent = client().get("/big2");
  ASSERT_TRUE(absent.ok());
  EXPECT_FALSE(absent->has_value());

  // Two values under the cap that make a request over etcd's 1.5 MiB.
  const std::string half(900 * 1024, 'h');
  auto t = client().txn({}, {Op::put("/h1", half), Op::put("/h2", half)});
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.error().kind, EtcdErrc::kTooLarge);
  EXPECT_EQ(t.error().code, grpc::StatusCode::OK);

  // In a txn too, and with a smaller configured cap.
  Options o = cluster_->client_options();
  o.max_value_bytes = 100;
  auto small = Client::connect(cluster_->endpoints(), o);
  ASSERT_TRUE(small.ok());
  auto refused = small->txn({}, {Op::put("/s", std::string(101, 's'))});
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().kind, EtcdErrc::kTooLarge);
  EXPECT_TRUE(small->put("/s", std::string(100, 's')).ok());
}

TEST_F(KvTest, CompactionStatusAndMembers) {
  const std::string value(8 * 1024, 'v');
  int64_t first = 0;
  int64_t last = 0;
  for (int i = 0; i < 200; ++i) {
    auto r = client().put("/hot", value + std::to_string(i));
    ASSERT_TRUE(r.ok()) << r.error().describe();
    if (i == 0) first = *r;
    last = *r;
  }
  // Every revision is kept (once the backend has committed its batch).
  std::optional<MemberStatus> before;
  EXPECT_TRUE(eventually(
      [&] {
        auto st = client().status(cluster_->endpoint(0));
        if (st.ok()) before = *st;
        return st.ok() && st->db_size_in_use > 200 * 8 * 1024;
      },
      milliseconds(3000)));
  ASSERT_TRUE(before.has_value());
  EXPECT_GE(before->db_size, before->db_size_in_use);
  EXPECT_NE(before->leader, 0u);
  EXPECT_EQ(before->leader, before->member_id);
  EXPECT_GT(before->raft_index, 200u);
  EXPECT_FALSE(before->version.empty());

  auto old = client().get("/hot", first);
  ASSERT_TRUE(old.ok()) << old.error().describe();
  EXPECT_EQ((*old)->value, value + "0");

  auto c = client().compact(last, /*physical=*/true);
  ASSERT_TRUE(c.ok()) << c.error().describe();
  auto gone = client().get("/hot", first);
  ASSERT_FALSE(gone.ok());
  EXPECT_EQ(gone.error().kind, EtcdErrc::kCompacted);
  EXPECT_EQ(gone.error().code, grpc::StatusCode::OUT_OF_RANGE);
  EXPECT_EQ(gone.error().endpoint, cluster_->endpoint(0));
  EXPECT_NE(gone.error().describe().find("compacted"), std::string::npos);
  auto again = client().compact(last);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().kind, EtcdErrc::kCompacted);
  auto future = client().get("/hot", last + 1000);
  ASSERT_FALSE(future.ok());
  EXPECT_EQ(future.error().kind, EtcdErrc::kFutureRevision);

  // Compaction frees pages inside the file (etcd 3.4 counts them in use until a later
  // write); defragment gives them back to the file system.
  auto d = client().defragment(cluster_->endpoint(0));
  ASSERT_TRUE(d.ok()) << d.error().describe();
  auto defragged = client().status(cluster_->endpoint(0));
  ASSERT_TRUE(defragged.ok());
  EXPECT_LT(defragged->db_size, before->db_size);
  EXPECT_LT(defragged->db_size, 200 * 8 * 1024);

  auto members = client().member_list();
  ASSERT_TRUE(members.ok()) << members.error().describe();
  ASSERT_EQ(members->size(), 1u);
  EXPECT_EQ((*members)[0].name, "m0");
  EXPECT_EQ((*members)[0].id, before->member_id);
  ASSERT_EQ((*members)[0].client_urls.size(), 1u);
  EXPECT_EQ((*members)[0].client_urls[0], "http://" + cluster_->endpoint(0));
}

TEST(EtcdClient, RefusesBadEndpointsAndReportsUnreachableOnes) {
  for (const char* bad : {"", "localhost", "http://127.0.0.1:2379", "127.0.0.1:0", "127.0.0.1:99999", "::1:2379",
                          "127.0.0.1:2379,127.0.0.1:2380"}) {
    auto c = Client::connect({bad});
    ASSERT_FALSE(c.ok()) << bad;
    EXPECT_EQ(c.error().kind, EtcdErrc::kInvalidArgument) << bad;
  }
  EXPECT_FALSE(Client::connect({}).ok());
  // A port nothing listens on (found free, then released).
  auto ports = [] {
    testing::ClusterOptions o;
    o.etcd_binary = "/nonexistent/etcd";
    auto c = testing::EtcdCluster::start(o);
    return c.ok() ? std::string("unexpected") : c.error().message();
  }();
  EXPECT_NE(ports.find("/nonexistent/etcd"), std::string::npos) << ports;
  Options o;
  o.call_timeout = std::chrono::milliseconds(400);
  auto none = Client::connect({"127.0.0.1:1"}, o);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.error().kind, EtcdErrc::kUnavailable);
  EXPECT_NE(none.error().describe().find("127.0.0.1:1"), std::string::npos) << none.error().describe();
}

}  // namespace
}  // namespace azote::etcd
