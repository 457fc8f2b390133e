#include "runtime/runtime.hpp"
#include "base/temp_dir.hpp"

#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>

#include <gtest/gtest.h>

namespace azote::runtime {
namespace {

using namespace std::chrono_literals;


std::string fetch(const std::string& path, const std::string& request) {
  UniqueFd s(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::memcpy(a.sun_path, path.data(), path.size());
  if (::connect(s.get(), reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0) return "connect failed";
  if (!request.empty()) (void)!::send(s.get(), request.data(), request.size(), MSG_NOSIGNAL);
  std::string out;
  char b[4096];
  for (ssize_t n; (n = ::recv(s.get(), b, sizeof b, 0)) > 0;) out.append(b, static_cast<size_t>(n));
  return out;
}

TEST(Loop, RunsHandlersOfReadableFdsAndStopsOnRequest) {
  auto loop = Loop::create("test");
  ASSERT_TRUE(loop) << loop.error().message();
  UniqueFd ev(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  int calls = 0;
  ASSERT_TRUE((*loop)->watch(ev.get(), [&] {
    uint64_t v;
    (void)!::read(ev.get(), &v, sizeof v);
    if (++calls == 3) (*loop)->request_stop();
    else (void)!::write(ev.get(), &v, sizeof v);
  }));
  EXPECT_FALSE((*loop)->watch(ev.get(), [] {})) << "a second handler for one fd is refused";
  const uint64_t one = 1;
  (void)!::write(ev.get(), &one, sizeof one);
  EXPECT_EQ((*loop)->run(), kExitOk);
  EXPECT_EQ(calls, 3);
}

TEST(Loop, UnwatchInsideAHandlerDropsPendingEventsOfThatFd) {
  auto loop = Loop::create("test");
  ASSERT_TRUE(loop);
  UniqueFd a(::eventfd(1, EFD_CLOEXEC | EFD_NONBLOCK)), b(::eventfd(1, EFD_CLOEXEC | EFD_NONBLOCK));
  int a_calls = 0, b_calls = 0;
  // Whichever runs first unwatches the other: exactly one of them runs.
  ASSERT_TRUE((*loop)->watch(a.get(), [&] { ++a_calls; (*loop)->unwatch(b.get()); (*loop)->unwatch(a.get()); }));
  ASSERT_TRUE((*loop)->watch(b.get(), [&] { ++b_calls; (*loop)->unwatch(a.get()); (*loop)->unwatch(b.get()); }));
  ASSERT_TRUE((*loop)->every(20ms, [&] { (*loop)->request_stop(); }));
  EXPECT_EQ((*loop)->run(), kExitOk);
  EXPECT_EQ(a_calls + b_calls, 1);
}

TEST(Loop, TimersFireRepeatedly) {
  auto loop = Loop::create("test");
  ASSERT_TRUE(loop);
  int ticks = 0;
  ASSERT_TRUE((*loop)->every(5ms, [&] {
    if (++ticks == 4) (*loop)->request_stop();
  }));
  EXPECT_FALSE((*loop)->every(0ms, [] {}));
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ((*loop)->run(), kExitOk);
  EXPECT_EQ(ticks, 4);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 15ms);
}

TEST(Loop, StopsOnSigterm) {
  block_stop_signals();
  auto loop = Loop::create("test");
  ASSERT_TRUE(loop);
  ASSERT_TRUE((*loop)->every(5ms, [] { ::raise(SIGTERM); }));
  EXPECT_EQ((*loop)->run(), kExitOk);
}

TEST(TextEndpoint, ServesPlainTextOrHttpAndRemovesItsSocket) {
  TempDir d;
  const std::string path = d.path() + "/m.sock";
  int renders = 0;
  auto e = TextEndpoint::start(path, [&] { ++renders; return std::string("a_total{x=\"1\"} 7\n"); });
  ASSERT_TRUE(e) << e.error().message();
  EXPECT_EQ(fetch(path, ""), "a_total{x=\"1\"} 7\n");
  const std::string http = fetch(path, "GET /metrics HTTP/1.1\r\n\r\n");
  EXPECT_EQ(http.rfind("HTTP/1.0 200 OK\r\n", 0), 0u) << http;
  EXPECT_NE(http.find("\r\n\r\na_total{x=\"1\"} 7\n"), std::string::npos) << http;
  EXPECT_EQ(renders, 2);
  EXPECT_EQ((*e)->served(), 2u);
  // A live socket is not taken over.
  auto second = TextEndpoint::start(path, [] { return std::string(); });
  ASSERT_FALSE(second);
  EXPECT_NE(second.error().message().find("another process is serving it"), std::string::npos);
  e->reset();
  EXPECT_NE(::access(path.c_str(), F_OK), 0) << "the socket is removed at the end";
}

TEST(TextEndpoint, RefusesAFileThatIsNotASocketAndReplacesAStaleOne) {
  TempDir d;
  const std::string file = d.path() + "/plain";
  std::ofstream(file) << "x";
  auto e = TextEndpoint::start(file, [] { return std::string(); }, "--metrics");
  ASSERT_FALSE(e);
  EXPECT_NE(e.error().message().find("--metrics unix:" + file + ": exists and is not a socket"), std::string::npos);
  // A socket nobody listens on (left by a killed process).
  const std::string stale = d.path() + "/stale.sock";
  {
    UniqueFd s(::socket(AF_UNIX, SOCK_STREAM, 0));
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::memcpy(a.sun_path, stale.data(), stale.size());
    ASSERT_EQ(::bind(s.get(), reinterpret_cast<const sockaddr*>(&a), sizeof a), 0);
  }
  auto f = TextEndpoint::start(stale, [] { return std::string("ok\n"); });
  ASSERT_TRUE(f) << f.error().message();
  EXPECT_EQ(fetch(stale, ""), "ok\n");
}

TEST(BoundedThread, JoinsAWorkerThatReturnsInTime) {
  std::atomic<bool> stop{false};
  BoundedThread t;
  EXPECT_FALSE(t.running());
  t.start("bounded-test", "worker", [&] {
    while (!stop.load()) std::this_thread::sleep_for(1ms);
  });
  EXPECT_TRUE(t.running());
  stop = true;
  t.join_within(2s, "the test worker");
  EXPECT_FALSE(t.running());
  t.join_within(1ms, "nothing");  // not running: nothing to wait for
}

// A worker that does not return by the deadline cannot be left running under memory the
// caller releases next: the process says so and ends with kExitStuckWorker.
TEST(BoundedThread, EndsTheProcessWhenAWorkerDoesNotStop) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        BoundedThread t;
        t.start("stuck", "worker", [] {
          for (;;) std::this_thread::sleep_for(1s);
        });
        t.join_within(100ms, "the stuck worker");
        std::_Exit(0);
      },
      ::testing::ExitedWithCode(kExitStuckWorker), "the stuck worker did not stop within 100 ms");
}

TEST(PromText, HeadersSamplesAndEscapedLabels) {
  PromText t;
  t.header("a_total", "counter", "Things.");
  t.sample("a_total", PromText::label("v", "x\"y\\z\nw"), uint64_t{3});
  t.sample("b_seconds", PromText::label("v", "1"), 0.5);
  t.sample("c_up", "", uint64_t{1});
  t.seconds("d_seconds_total", PromText::label("v", "1"), 1500000);
  EXPECT_EQ(t.take(),
            "# HELP a_total Things.\n# TYPE a_total counter\n"
            "a_total{v=\"x\\\"y\\\\z\\nw\"} 3\n"
            "b_seconds{v=\"1\"} 0.5\n"
            "c_up 1\n"
            "d_seconds_total{v=\"1\"} 0.001500\n");
}

}  // namespace
}  // namespace azote::runtime
