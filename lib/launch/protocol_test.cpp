// The launcher protocol's codec and transport: requests round-trip, bad ones are named,
// descriptors travel, a late reply is not taken for the next one.
#include "launch/protocol.hpp"

#include <fcntl.h>
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
      {{{"role", "probe"}, {"probe_as", "probe"}}, "\"probe_as\" must be hv, card-blk, card-net, card-tpm, card-nsm or card-vsock"},
      {{{"role", "card-nsm"}, {"enclave_debug", "yes"}}, "\"enclave_debug\" must be a boolean"},
      {{{"role", "hv"}, {"limits", {{"pids", "many"}}}}, "limits.pids must be a non-negative integer"},
  };
  for (const auto& [j, want] : cases) {
    auto r = spawn_request_from_json(j);
    ASSERT_FALSE(r) << j.dump();
    EXPECT_NE(r.error().message().find(want), std::string::npos) << r.error().message();
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
