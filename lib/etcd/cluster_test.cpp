// Three members, one killed; TLS; the fixture itself.
#include <gtest/gtest.h>
#include <signal.h>

#include <cerrno>

#include "etcd/test_util.hpp"

namespace azote::etcd {
namespace {

using std::chrono::milliseconds;

class ClusterTest : public EtcdTest {};

TEST_F(ClusterTest, ThreeMembersKeepServingWritesWithOneKilled) {
  start_cluster({.members = 3});
  auto members = client().member_list();
  ASSERT_TRUE(members.ok()) << members.error().describe();
  EXPECT_EQ(members->size(), 3u);
  ASSERT_TRUE(client().put("/c/before", "1").ok());

  // The leader is the hardest one to lose: a new one must be elected. (A write sent to a
  // follower before it notices can time out, ambiguously: the client reports that and does
  // not send it again. Writes resume once the two others agree on a new leader.)
  auto leader_r = cluster_->wait_leader();
  ASSERT_TRUE(leader_r.ok()) << leader_r.error().message();
  const int leader = *leader_r;
  auto old_leader = client().status(cluster_->endpoint(leader));
  ASSERT_TRUE(old_leader.ok());
  ASSERT_TRUE(cluster_->kill(leader).ok());
  auto new_leader = cluster_->wait_leader();
  ASSERT_TRUE(new_leader.ok()) << new_leader.error().message();
  EXPECT_NE(*new_leader, leader);

  for (int i = 0; i < 20; ++i) {
    auto r = client().put(std::string("/c/during/").append(std::to_string(i)), std::to_string(i));
    ASSERT_TRUE(r.ok()) << r.error().describe();
  }
  auto during = client().get_prefix("/c/during/");
  ASSERT_TRUE(during.ok());
  EXPECT_EQ(during->kvs.size(), 20u);
  auto cas = client().create_if_absent("/c/lock", "me");
  ASSERT_TRUE(cas.ok());
  EXPECT_TRUE(cas->created);

  auto dead = client().status(cluster_->endpoint(leader));
  ASSERT_FALSE(dead.ok());
  EXPECT_EQ(dead.error().kind, EtcdErrc::kUnavailable);
  EXPECT_EQ(dead.error().endpoint, cluster_->endpoint(leader));

  // Back, it catches up: a client of that member alone reads what was written without it.
  ASSERT_TRUE(cluster_->restart(leader).ok());
  auto only = cluster_->client({cluster_->endpoint(leader)});
  ASSERT_TRUE(only.ok());
  auto back = only->get_prefix("/c/during/");
  ASSERT_TRUE(back.ok()) << back.error().describe();
  EXPECT_EQ(back->kvs.size(), 20u);
}

TEST_F(ClusterTest, TlsMembersServeOnlyClientsWithACertificateOfTheirCa) {
  start_cluster({.members = 1, .tls = true});
  ASSERT_TRUE(client().put("/tls/k", "v").ok());
  auto v = client().get("/tls/k");
  ASSERT_TRUE(v.ok() && v->has_value());
  EXPECT_EQ((*v)->value, "v");

  Options o = cluster_->client_options();
  o.call_timeout = milliseconds(1500);
  Options no_cert = o;
  no_cert.tls->cert_pem.clear();
  no_cert.tls->key_pem.clear();
  auto anon = Client::connect(cluster_->endpoints(), no_cert);
  // The handshake completes (TLS 1.3 checks the client certificate after it), so the
  // refusal may come at connect or at the first call.
  if (anon.ok()) {
    auto r = anon->get("/tls/k");
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().kind, EtcdErrc::kUnavailable) << r.error().describe();
  } else {
    EXPECT_EQ(anon.error().kind, EtcdErrc::kUnavailable) << anon.error().describe();
  }

  Options plain = o;
  plain.tls.reset();
  auto insecure = Client::connect(cluster_->endpoints(), plain);
  if (insecure.ok()) {
    EXPECT_FALSE(insecure->get("/tls/k").ok());
  }

  Options other_ca = o;
  other_ca.tls->ca_pem = other_ca.tls->cert_pem;  // not the CA
  auto wrong = Client::connect(cluster_->endpoints(), other_ca);
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.error().kind, EtcdErrc::kUnavailable);
}

TEST(EtcdCluster, LeavesNoProcessBehind) {
  std::vector<pid_t> pids;
  {
    auto c = testing::EtcdCluster::start({.members = 3});
    ASSERT_TRUE(c.ok()) << c.error().message();
    for (int i = 0; i < 3; ++i) {
      pids.push_back((*c)->pid(i));
      EXPECT_EQ(::kill((*c)->pid(i), 0), 0);
    }
    EXPECT_EQ((*c)->endpoints().size(), 3u);
    EXPECT_FALSE((*c)->kill(3).ok());
    ASSERT_TRUE((*c)->kill(2).ok());
    EXPECT_FALSE((*c)->running(2));
    EXPECT_FALSE((*c)->kill(2).ok());
    EXPECT_NE((*c)->log_tail(5).find("m1"), std::string::npos);
  }
  for (pid_t p : pids) {
    EXPECT_EQ(::kill(p, 0), -1) << p;
    EXPECT_EQ(errno, ESRCH) << p;
  }
}

}  // namespace
}  // namespace azote::etcd
