// The launcher protocol's codec and transport: requests round-trip, bad ones are named,
// descriptors travel, a late reply is not taken for the next one.
#include "launch/protocol.hpp"

#include <fcntl.h>
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <thread>
#include <vector>

namespace azote::launch {
namespace {

TEST(Protocol, SpawnRequestRoundTrips) {
  SpawnRequest r;
  r.role = Role::kCardBlk;
  r.instance = "i-0123456789abcdef0";
  r.slot = 7;
  r.args = {"--control", "fd:{control}"};
  r.files = {{"vol", "/s/volumes/vol-1.img", "rw"}};
  r.listens = {{"control", "/s/instances/i-1/card-blk.ctl"}};
  r.output = "/s/instances/i-1/card-blk.log";
  r.limits = {512, 64, 100, "1"};
  r.enis = {"eni-1"};
  auto back = spawn_request_from_json(to_json(r));
  ASSERT_TRUE(back) << back.error().message();
  EXPECT_EQ(back->role, Role::kCardBlk);
  EXPECT_EQ(back->instance, r.instance);
  EXPECT_EQ(back->slot, 7u);
  EXPECT_EQ(back->args, r.args);
  EXPECT_EQ(back->files[0].access, "rw");
  EXPECT_EQ(back->listens[0].name, "control");
  EXPECT_EQ(back->limits.memory_mib, 512u);
  EXPECT_EQ(back->limits.cpus, "1");
  EXPECT_EQ(back->enis, r.enis);
}

TEST(Protocol, BadRequestsAreNamed) {
  const std::pair<Json, std::string> cases[] = {
      {{{"role", "root-shell"}}, "unknown role \"root-shell\""},
      {{{"role", "hv"}, {"args", {1, 2}}}, "\"args\" must be an array of strings"},
      {{{"role", "hv"}, {"slot", -1}}, "\"slot\" out of range"},
      {{{"role", "hv"}, {"files", {{{"name", "k"}}}}}, "needs \"path\""},
      {{{"role", "probe"}, {"probe_as", "probe"}},
       "\"probe_as\" must be hv, card-blk, card-net, card-tpm, card-nsm, card-vsock or card-fabric"},
      {{{"role", "card-nsm"}, {"enclave_debug", "yes"}}, "\"enclave_debug\" must be a boolean"},
      {{{"role", "hv"}, {"limits", {{"pids", "many"}}}}, "limits.pids must be a non-negative integer"},
  };
  for (const auto& [j, want] : cases) {
    auto r = spawn_request_from_json(j);
    ASSERT_FALSE(r) << j.dump();
    EXPECT_NE(r.error().message().find(want), std::string::npos) << r.error().message();
  }
}

// The host's fabric process: role card-fabric, instance "fabric" (and nothing else is),
// its underlay address (and no other role has one).
TEST(Protocol, FabricProcessRequestRoundTrips) {
  EXPECT_STREQ(to_string(Role::kCardFabric), "card-fabric");
  EXPECT_EQ(parse_role("card-fabric"), Role::kCardFabric);
  EXPECT_EQ(kFabricId, 3u);
  SpawnRequest r;
  r.role = Role::kCardFabric;
  r.instance = kFabricInstance;
  r.args = {"--control", "fd:{control}", "--host-id", "7", "--fabric-inbox", "/run/azote-net/fabric/inbox.sock"};
  r.listens = {{"control", "/s/host/fabric.ctl"}};
  r.output = "/s/host/fabric.log";
  r.limits = {256, 64, 0, ""};
  r.underlay = "192.168.0.10:6081";
  const Json j = to_json(r);
  EXPECT_EQ(j["role"], "card-fabric");
  EXPECT_EQ(j["underlay"], "192.168.0.10:6081");
  auto back = spawn_request_from_json(j);
  ASSERT_TRUE(back) << back.error().message();
  EXPECT_EQ(back->role, Role::kCardFabric);
  EXPECT_EQ(back->instance, "fabric");
  EXPECT_EQ(back->underlay, "192.168.0.10:6081");
  EXPECT_EQ(back->args, r.args);
  EXPECT_EQ(back->limits.memory_mib, 256u);
  // Other roles carry no "underlay" at all.
  SpawnRequest hv;
  hv.instance = "i-0123456789abcdef0";
  EXPECT_FALSE(to_json(hv).contains("underlay"));
  // A probe joins the fabric process's jail by the same name.
  auto probe = spawn_request_from_json({{"role", "probe"}, {"probe_as", "card-fabric"}, {"instance", "fabric"}});
  ASSERT_TRUE(probe) << probe.error().message();
  EXPECT_EQ(probe->probe_as, Role::kCardFabric);
  auto sa = parse_underlay("127.0.0.1:6081");
  ASSERT_TRUE(sa) << sa.error().message();
  EXPECT_EQ(ntohs(sa->sin_port), 6081);
  EXPECT_EQ(ntohl(sa->sin_addr.s_addr), 0x7f000001u);
}

TEST(Protocol, FabricProcessBadRequestsAreNamed) {
  const Json fabric = {{"role", "card-fabric"}, {"instance", "fabric"}, {"underlay", "10.0.0.1:6081"}};
  auto with = [&](Json base, const char* key, Json value) {
    base[key] = std::move(value);
    return base;
  };
  const std::pair<Json, std::string> cases[] = {
      {with(fabric, "instance", "i-0123456789abcdef0"), "card-fabric needs \"instance\": \"fabric\""},
      {with(fabric, "instance", ""), "card-fabric needs \"instance\": \"fabric\""},
      {{{"role", "card-net"}, {"instance", "fabric"}}, "\"instance\": \"fabric\" is the host's fabric process"},
      {{{"role", "hv"}, {"instance", "fabric"}}, "not a hv's instance"},
      {{{"role", "probe"}, {"probe_as", "card-net"}, {"instance", "fabric"}}, "not a card-net's instance"},
      {{{"role", "probe"}, {"probe_as", "card-fabric"}, {"instance", "i-0123456789abcdef0"}}, "a probe of card-fabric needs"},
      {{{"role", "card-net"}, {"instance", "i-0123456789abcdef0"}, {"underlay", "10.0.0.1:6081"}},
       "\"underlay\" is for card-fabric (the host's fabric process) only, not card-net"},
      {{{"role", "card-fabric"}, {"instance", "fabric"}}, "card-fabric needs \"underlay\""},
      {with(fabric, "underlay", 6081), "\"underlay\" must be a string"},
      {with(fabric, "underlay", "10.0.0.1"), "\"underlay\" \"10.0.0.1\" is not IPV4:PORT"},
      {with(fabric, "underlay", "host.example:6081"), "\"host.example\" is not an IPv4 address"},
      {with(fabric, "underlay", "10.0.0.1:0"), "\"underlay\" \"10.0.0.1:0\": the port must be 1 to 65535"},
      {with(fabric, "underlay", "10.0.0.1:65536"), "the port must be 1 to 65535"},
      {with(fabric, "underlay", "10.0.0.1:60x"), "the port must be 1 to 65535"},
      {with(fabric, "enis", {"eni-0123456789abcdef0"}), "card-fabric serves no ENI"},
  };
  for (const auto& [j, want] : cases) {
    auto r = spawn_request_from_json(j);
    ASSERT_FALSE(r) << j.dump();
    EXPECT_NE(r.error().message().find(want), std::string::npos) << j.dump() << ": " << r.error().message();
  }
}

TEST(Protocol, DescriptorsTravelAndLateRepliesAreDropped) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
  Client c{UniqueFd(sv[0])};
  UniqueFd server(sv[1]);
  std::thread t([&] {
    // First request: answered late (after the client gave up), then the second one.
    auto a = recv_message(server.get(), std::chrono::milliseconds(5000));
    ASSERT_TRUE(a);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    ASSERT_TRUE(send_message(server.get(), {{"ok", true}, {"seq", a->body["seq"]}, {"which", "first"}}));
    auto b = recv_message(server.get(), std::chrono::milliseconds(5000));
    ASSERT_TRUE(b);
    const int devnull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    ASSERT_TRUE(send_message(server.get(), {{"ok", true}, {"seq", b->body["seq"]}, {"which", "second"}}, {devnull}));
    ::close(devnull);
    auto c3 = recv_message(server.get(), std::chrono::milliseconds(5000));
    ASSERT_TRUE(c3);
    ASSERT_TRUE(send_message(server.get(), {{"ok", false}, {"seq", c3->body["seq"]}, {"error", "no such thing"}}));
  });
  auto first = c.call({{"op", "describe"}}, std::chrono::milliseconds(100));
  EXPECT_FALSE(first);
  auto second = c.call({{"op", "describe"}}, std::chrono::milliseconds(5000));
  ASSERT_TRUE(second) << second.error().message();
  EXPECT_EQ(second->body["which"], "second");
  ASSERT_EQ(second->fds.size(), 1u);
  EXPECT_GE(::fcntl(second->fds[0].get(), F_GETFD), 0);
  auto third = c.call({{"op", "x"}});
  ASSERT_FALSE(third);
  EXPECT_EQ(third.error().code, LaunchErrc::kRefused);
  EXPECT_EQ(third.error().message(), "no such thing");
  t.join();
  server.reset();
  auto gone = c.call({{"op", "x"}});
  ASSERT_FALSE(gone);
}

// Calls from several threads overlap: the server answers them in the reverse order of
// their asking, and each caller gets its own reply (with its own descriptor).
TEST(Protocol, OverlappingCallsEachGetTheirOwnReply) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
  Client c{UniqueFd(sv[0])};
  UniqueFd server(sv[1]);
  constexpr int kCalls = 4;
  std::thread srv([&] {
    std::vector<Json> asked;
    for (int i = 0; i < kCalls; ++i) {
      auto m = recv_message(server.get(), std::chrono::milliseconds(5000));
      ASSERT_TRUE(m);
      asked.push_back(m->body);
    }
    for (auto it = asked.rbegin(); it != asked.rend(); ++it) {
      const int devnull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
      ASSERT_TRUE(send_message(server.get(), {{"ok", true}, {"seq", (*it)["seq"]}, {"who", (*it)["who"]}}, {devnull}));
      ::close(devnull);
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  std::vector<std::thread> callers;
  std::vector<std::string> got(kCalls);
  std::vector<size_t> fds(kCalls);
  for (int i = 0; i < kCalls; ++i)
    callers.emplace_back([&, i] {
      auto r = c.call({{"op", "describe"}, {"who", i}}, std::chrono::milliseconds(5000));
      if (!r) {
        got[i] = "error: " + r.error().message();
        return;
      }
      got[i] = std::to_string(r->body.value("who", -1));
      fds[i] = r->fds.size();
    });
  for (auto& t : callers) t.join();
  srv.join();
  for (int i = 0; i < kCalls; ++i) {
    EXPECT_EQ(got[i], std::to_string(i));
    EXPECT_EQ(fds[i], 1u);
  }
  // A closed socket ends every call at once, with kClosed.
  server.reset();
  auto gone = c.call({{"op", "x"}}, std::chrono::milliseconds(5000));
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().code, LaunchErrc::kClosed);
}

}  // namespace
}  // namespace azote::launch
