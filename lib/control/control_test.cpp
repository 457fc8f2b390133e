#include "control/control.hpp"

#include <poll.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <thread>

#include <gtest/gtest.h>

namespace azote::control {
namespace {

using namespace std::chrono_literals;

// A server on its own thread, answering {"op":"echo"} with the request and refusing
// anything else.
class ServerThread {
 public:
  explicit ServerThread(const std::string& path) {
    auto s = Server::listen(path);
    EXPECT_TRUE(s.ok()) << s.error().message();
    server_ = std::move(s).value();
    thread_ = std::thread([this] {
      while (!stop_) {
        pollfd p{server_->poll_fd(), POLLIN, 0};
        if (::poll(&p, 1, 20) > 0)
          server_->serve_ready([this](const Json& r) -> Json {
            ++calls_;
            if (r["op"] == "echo") return Json{{"echo", r}};
            if (r["op"] == "throw") return Json{{"x", r.at("missing").get<int>()}};
            // Bytes the server holds, seen from inside it (no race with serve_ready).
            max_buffered_ = std::max(max_buffered_.load(), server_->buffered_bytes());
            if (r["op"] == "blob")
              return Json{{"blob", std::string(r.at("n").get<size_t>(), 'b')}, {"i", r.value("i", 0)}};
            if (r["op"] == "sleep") {
              std::this_thread::sleep_for(std::chrono::milliseconds(r.at("ms").get<int>()));
              return ok();
            }
            return refuse("unknown op " + r["op"].get<std::string>());
          });
      }
    });
  }
  ~ServerThread() {
    stop_ = true;
    thread_.join();
  }
  Server& server() { return *server_; }
  int calls() const { return calls_; }
  size_t max_buffered() const { return max_buffered_; }

 private:
  std::unique_ptr<Server> server_;
  std::atomic<bool> stop_{false};
  std::atomic<int> calls_{0};
  std::atomic<size_t> max_buffered_{0};
  std::thread thread_;
};

std::string temp_path(const char* name) { return "/tmp/azote-control-test-" + std::to_string(::getpid()) + "-" + name; }

TEST(Control, RoundTripInOrderAndRefusals) {
  const std::string path = temp_path("a");
  ServerThread st(path);
  auto c = Client::connect(path, 1s);
  ASSERT_TRUE(c.ok()) << c.error().message();
  for (int i = 0; i < 50; ++i) {
    auto r = c->call(Json{{"op", "echo"}, {"i", i}}, 2s);
    ASSERT_TRUE(r.ok()) << r.error().message();
    EXPECT_EQ((*r)["ok"], true);
    EXPECT_EQ((*r)["echo"]["i"], i);
  }
  auto bad = c->call(Json{{"op", "nope"}}, 2s);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code, ControlErrc::kRefused);
  EXPECT_EQ(bad.error().context, "unknown op nope");
  auto thrown = c->call(Json{{"op", "throw"}}, 2s);
  ASSERT_FALSE(thrown.ok());
  EXPECT_NE(thrown.error().context.find("bad request"), std::string::npos);
  auto once = call_once(path, Json{{"op", "echo"}, {"x", "y"}}, 2s);
  ASSERT_TRUE(once.ok());
  EXPECT_EQ((*once)["echo"]["x"], "y");
}

// Raw socket helpers to send what Client never would.
int raw_connect(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
  EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  return fd;
}
std::string raw_read_line(int fd) {
  std::string s;
  char ch;
  pollfd p{fd, POLLIN, 0};
  while (::poll(&p, 1, 2000) > 0 && ::recv(fd, &ch, 1, 0) == 1) {
    if (ch == '\n') return s;
    s += ch;
  }
  return s;
}

TEST(Control, MalformedAndOversizedRequests) {
  const std::string path = temp_path("b");
  ServerThread st(path);
  const int fd = raw_connect(path);
  ASSERT_GE(fd, 0);
  ASSERT_GT(::send(fd, "not json\n[1,2]\n{\"op\":3}\n", 24, 0), 0);
  for (int i = 0; i < 3; ++i) {
    const Json r = Json::parse(raw_read_line(fd));
    EXPECT_EQ(r["ok"], false);
    EXPECT_NE(r["error"].get<std::string>().find("JSON object"), std::string::npos);
  }
  // The connection still works after malformed lines.
  ASSERT_GT(::send(fd, "{\"op\":\"echo\"}\n", 14, 0), 0);
  EXPECT_EQ(Json::parse(raw_read_line(fd))["ok"], true);
  // A line without end beyond the limit: refused and disconnected.
  const std::string big(kMaxLineBytes + 100, 'x');
  (void)::send(fd, big.data(), big.size(), MSG_NOSIGNAL);
  const Json r = Json::parse(raw_read_line(fd));
  EXPECT_EQ(r["ok"], false);
  EXPECT_NE(r["error"].get<std::string>().find("longer than"), std::string::npos);
  char ch;
  pollfd p{fd, POLLIN, 0};
  ASSERT_GT(::poll(&p, 1, 2000), 0);
  EXPECT_EQ(::recv(fd, &ch, 1, 0), 0);  // closed by the server
  ::close(fd);
}

TEST(Control, SocketIsPrivateAndOtherUsersGetNoAnswer) {
  const std::string path = temp_path("c");
  ServerThread st(path);
  struct stat s {};
  ASSERT_EQ(::stat(path.c_str(), &s), 0);
  EXPECT_EQ(s.st_mode & 0777, 0600u);
  if (::geteuid() != 0) GTEST_SKIP() << "SKIPPED: needs root to try the socket as another user";
  const pid_t child = ::fork();
  if (child == 0) {
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) _exit(3);
    auto r = call_once(path, Json{{"op", "echo"}}, 500ms);
    _exit(r.ok() ? 1 : 0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "a uid-65534 client got an answer";
  EXPECT_EQ(st.calls(), 0);
}

TEST(Control, ListenReplacesStaleSocketButNotOtherFiles) {
  const std::string path = temp_path("d");
  { ServerThread st(path); }
  EXPECT_NE(::access(path.c_str(), F_OK), 0) << "socket file left behind";
  FILE* f = std::fopen(path.c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fclose(f);
  auto s = Server::listen(path);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().context.find("not a socket"), std::string::npos);
  ::unlink(path.c_str());
  auto c = Client::connect(path, 50ms);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().code, ControlErrc::kSocket);
}

TEST(Control, CallTimesOutWhenServerIsSilent) {
  const std::string path = temp_path("e");
  auto s = Server::listen(path);  // nobody serves it
  ASSERT_TRUE(s.ok());
  auto c = Client::connect(path, 1s);
  ASSERT_TRUE(c.ok());
  const auto t0 = std::chrono::steady_clock::now();
  auto r = c->call(Json{{"op", "echo"}}, 200ms);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ControlErrc::kTimeout);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 190ms);
}

// Idle clients filling every slot: a newcomer is told why in one line (and Client reports
// that sentence, not the EPIPE or EOF it met), idle clients are dropped after kIdleTimeout
// with a line saying so, and a client whose request is being handled is not idle.
TEST(Control, FullServerRefusesClearlyAndIdleClientsAreDropped) {
  const std::string path = temp_path("f");
  ServerThread st(path);
  // kMaxClients - 1 raw idle clients and one Client, idle too.
  auto c = Client::connect(path, 1s);
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE(c->call(Json{{"op", "echo"}}, 2s).ok());
  std::vector<int> idle;
  for (size_t i = 0; i + 1 < kMaxClients; ++i) {
    idle.push_back(raw_connect(path));
    // A round trip: the server has accepted it.
    ASSERT_GT(::send(idle.back(), "{\"op\":\"echo\"}\n", 14, 0), 0);
    ASSERT_EQ(Json::parse(raw_read_line(idle.back()))["ok"], true) << "client " << i;
  }
  for (int attempt = 0; attempt < 2; ++attempt) {
    auto r = call_once(path, Json{{"op", "echo"}}, 2s);
    ASSERT_FALSE(r.ok()) << "a 17th client was served";
    EXPECT_EQ(r.error().code, ControlErrc::kRefused) << r.error().message();
    EXPECT_NE(r.error().message().find("too many control clients"), std::string::npos) << r.error().message();
  }
  // The first client asks for a request that outlasts everyone's idle timeout: while it
  // is handled that client is busy, not idle, and stays usable after its answer.
  const auto t0 = std::chrono::steady_clock::now();
  const std::string slow = Json{{"op", "sleep"}, {"ms", (kIdleTimeout + 500ms) / 1ms}}.dump() + "\n";
  ASSERT_GT(::send(idle[0], slow.data(), slow.size(), 0), 0);
  pollfd p{idle[0], POLLIN, 0};
  ASSERT_GT(::poll(&p, 1, static_cast<int>((kIdleTimeout + 3s) / 1ms)), 0);
  EXPECT_EQ(Json::parse(raw_read_line(idle[0])), ok());
  EXPECT_GE(std::chrono::steady_clock::now() - t0, kIdleTimeout);
  ASSERT_GT(::send(idle[0], "{\"op\":\"echo\"}\n", 14, MSG_NOSIGNAL), 0);
  EXPECT_EQ(Json::parse(raw_read_line(idle[0]))["ok"], true) << "the busy client was dropped as idle";
  // The others were idle all along: one line saying why, then the end of the connection.
  for (size_t i = 1; i < idle.size(); ++i) {
    const std::string line = raw_read_line(idle[i]);
    ASSERT_FALSE(line.empty()) << "client " << i << " got no line";
    const Json r = Json::parse(line);
    EXPECT_EQ(r["ok"], false);
    EXPECT_NE(r["error"].get<std::string>().find("idle"), std::string::npos) << line;
    char ch;
    pollfd q{idle[i], POLLIN, 0};
    ASSERT_GT(::poll(&q, 1, 2000), 0);
    EXPECT_EQ(::recv(idle[i], &ch, 1, 0), 0) << "client " << i << " still connected";
  }
  // A Client whose idle connection was closed reports the server's sentence.
  auto late = c->call(Json{{"op", "echo"}}, 2s);
  ASSERT_FALSE(late.ok());
  EXPECT_EQ(late.error().code, ControlErrc::kRefused) << late.error().message();
  EXPECT_NE(late.error().message().find("idle"), std::string::npos) << late.error().message();
  // Their slots are free again.
  auto again = call_once(path, Json{{"op", "echo"}, {"n", 1}}, 2s);
  ASSERT_TRUE(again.ok()) << again.error().message();
  EXPECT_EQ((*again)["echo"]["n"], 1);
  for (int fd : idle) ::close(fd);
}

// A client that sends many requests at once and reads as it goes (a pipeline) gets every
// answer, in order, however often the server had to hold back its reading meanwhile:
// small requests, big answers.
TEST(Control, PipelinedRequestsAreAllAnsweredInOrder) {
  const std::string path = temp_path("h");
  ServerThread st(path);
  const int fd = raw_connect(path);
  constexpr int kRequests = 3000;
  std::thread sender([fd] {
    std::string all;
    for (int i = 0; i < kRequests; ++i) all += Json{{"op", "blob"}, {"i", i}, {"n", 4096}}.dump() + "\n";
    for (size_t sent = 0; sent < all.size();) {
      const ssize_t n = ::send(fd, all.data() + sent, all.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return;
      sent += static_cast<size_t>(n);
    }
  });
  std::string in;
  int next = 0;
  char buf[65536];
  while (next < kRequests) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 3000) <= 0) break;
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    in.append(buf, static_cast<size_t>(n));
    for (size_t nl; (nl = in.find('\n')) != std::string::npos; in.erase(0, nl + 1)) {
      const Json r = Json::parse(in.substr(0, nl));
      ASSERT_EQ(r["i"], next) << r.dump().substr(0, 200);
      ++next;
    }
  }
  sender.join();
  EXPECT_EQ(next, kRequests) << "answers stopped after " << next;
  ::close(fd);
}

// Clients that send requests and never read the answers: the server keeps what does not
// fit for them and serves everyone else at once (it used to block up to a second on each,
// stalling a card's whole main loop); each is dropped once its answers have waited
// kWriteTimeout, and the server holds no more than its bound for each meanwhile.
TEST(Control, NonReadingClientsDoNotStallTheOthers) {
  const std::string path = temp_path("g");
  ServerThread st(path);
  auto good = Client::connect(path, 1s);
  ASSERT_TRUE(good.ok());
  ASSERT_TRUE(good->call(Json{{"op", "echo"}}, 2s).ok());
  // Small requests for big answers: what a client that does not read cannot take.
  const std::string request = Json{{"op", "blob"}, {"n", 4096}}.dump() + "\n";
  std::string burst;
  while (burst.size() < 1024 * 1024) burst += request;
  std::vector<int> hogs;
  for (size_t i = 0; i + 1 < kMaxClients; ++i) {
    hogs.push_back(raw_connect(path));
    // As many requests as the socket takes without waiting.
    size_t sent = 0;
    for (ssize_t n; sent < burst.size(); sent += static_cast<size_t>(n)) {
      n = ::send(hogs.back(), burst.data() + sent, burst.size() - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n <= 0) break;
    }
    EXPECT_GT(sent, 1000 * request.size()) << "client " << i;
  }
  const auto burst_end = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(100ms);  // the server is in the middle of them
  for (int i = 0; i < 5; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    auto r = good->call(Json{{"op", "echo"}, {"i", i}}, 5s);
    const auto took = std::chrono::steady_clock::now() - t0;
    ASSERT_TRUE(r.ok()) << r.error().message();
    EXPECT_EQ((*r)["echo"]["i"], i);
    EXPECT_LT(took, 300ms) << "call " << i << " waited " << took / 1ms << " ms behind clients that do not read";
    std::this_thread::sleep_for(100ms);
  }
  // Each non-reader is closed by the server within about kWriteTimeout (seen without
  // reading, which would make it a reader); what it gets is what was sent before that.
  for (size_t i = 0; i < hogs.size(); ++i) {
    pollfd p{hogs[i], POLLRDHUP, 0};
    const auto left = burst_end + kWriteTimeout + 1500ms - std::chrono::steady_clock::now();
    EXPECT_GT(::poll(&p, 1, static_cast<int>(std::max(left / 1ms, int64_t{0}))), 0) << "client " << i << " not dropped";
    size_t got = 0;
    char buf[65536];
    for (ssize_t n; (n = ::recv(hogs[i], buf, sizeof buf, MSG_DONTWAIT)) > 0;) got += static_cast<size_t>(n);
    EXPECT_GT(got, 0u) << "client " << i;
    ::close(hogs[i]);
  }
  const size_t per_client = kMaxLineBytes + 8192 + kMaxPendingOutput + 8192;
  EXPECT_LE(st.max_buffered(), kMaxClients * per_client);
  auto after = good->call(Json{{"op", "echo"}, {"after", true}}, 2s);
  ASSERT_TRUE(after.ok()) << after.error().message();
}

}  // namespace
}  // namespace azote::control
