// The host's fabric process through the real azote-launcher: a spawn of role card-fabric
// runs azote-card-net as uid base + 3, in a jail and a network namespace of its own, on a
// UDP socket the launcher bound in the host's namespace; kill, release and adoption treat
// it as they treat an instance's card. Needs root (the launcher builds jails).
//
// The launcher runs as its own process, as azote-controller would exec it; its
// "controller" is a stand-in (sh -c 'exec sleep ...') holding the launcher's socket, whose
// end the test takes with pidfd_getfd and talks to with launch::Client.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "base/unique_fd.hpp"
#include "control/control.hpp"
#include "launch/protocol.hpp"

namespace azote::launcher {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using launch::Json;

constexpr uint32_t kUidBase = 2'000'000'000;

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

bool eventually(const std::function<bool()>& done, std::chrono::milliseconds within) {
  const auto end = std::chrono::steady_clock::now() + within;
  for (;;) {
    if (done()) return true;
    if (std::chrono::steady_clock::now() >= end) return false;
    std::this_thread::sleep_for(50ms);
  }
}

// The four ids of a "Uid:" or "Gid:" line of /proc/PID/status, as one string.
std::string ids_of(pid_t pid, const std::string& which) {
  std::istringstream in(slurp("/proc/" + std::to_string(pid) + "/status"));
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(which + ":", 0) == 0) {
      std::istringstream f(line.substr(which.size() + 1));
      std::string out, id;
      while (f >> id) out += (out.empty() ? "" : " ") + id;
      return out;
    }
  return "";
}

// The inode of the UDP socket bound to 127.0.0.1:port in the namespace whose
// /proc/.../net/udp this is, or 0.
uint64_t udp_inode(const std::string& proc_net_udp, uint16_t port) {
  char want[32];
  std::snprintf(want, sizeof want, "0100007F:%04X", port);
  std::istringstream in(slurp(proc_net_udp));
  std::string line;
  std::getline(in, line);  // the header
  while (std::getline(in, line)) {
    std::istringstream f(line);
    std::vector<std::string> col;
    for (std::string c; f >> c;) col.push_back(c);
    if (col.size() > 9 && col[1] == want) return std::stoull(col[9]);
  }
  return 0;
}

bool holds_socket(pid_t pid, uint64_t inode) {
  std::error_code ec;
  const std::string want = "socket:[" + std::to_string(inode) + "]";
  for (const auto& e : fs::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec))
    if (fs::read_symlink(e.path(), ec).string() == want) return true;
  return false;
}

// Not running any more (an orphan's zombie waits for whoever reaps orphans here).
bool gone_or_zombie(pid_t pid) {
  const std::string stat = slurp("/proc/" + std::to_string(pid) + "/stat");
  const size_t close = stat.rfind(')');
  return close == std::string::npos || (close + 2 < stat.size() && stat[close + 2] == 'Z');
}

uint16_t free_udp_port() {
  UniqueFd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof sa;
  if (!s || ::bind(s.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 ||  // NOLINT
      ::getsockname(s.get(), reinterpret_cast<sockaddr*>(&sa), &len) != 0)       // NOLINT
    return 0;
  return ntohs(sa.sin_port);
}

class LauncherFabric : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "SKIPPED: needs root (azote-launcher builds the jails)";
    static int n = 0;
    dir_ = "/tmp/azlf-" + std::to_string(::getpid()) + "-" + std::to_string(n++);
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    state_ = dir_ + "/state";
  }
  void TearDown() override {
    for (pid_t p : {launcher_pid_, controller_pid_})
      if (p > 0) ::kill(p, SIGKILL);
    if (launcher_pid_ > 0) ::waitpid(launcher_pid_, nullptr, 0);
    for (pid_t p : cards_) ::kill(p, SIGKILL);
    if (!dir_.empty() && !HasFailure() && !std::getenv("AZOTE_KEEP_STATE")) fs::remove_all(dir_);
  }

  // azote-launcher as azote-controller would exec it, its log in dir_/launcher.log; then
  // the launcher's socket, taken from its controller stand-in.
  void start_launcher() {
    client_.reset();
    const std::vector<std::string> argv = {AZOTE_LAUNCHER_BIN, "--state-dir", state_,   "--controller", "/bin/sh",
                                           "--hv",             "/bin/false",  "--card-blk", "/bin/false", "--card-net",
                                           AZOTE_CARD_NET_BIN, "--write-guard", "off",    "--",           "-c",
                                           "exec sleep 600",   "sh"};
    std::fflush(nullptr);
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      const int log = ::open((dir_ + "/launcher.log").c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
      if (log < 0 || ::dup2(log, 1) != 1 || ::dup2(log, 2) != 2) ::_exit(127);
      std::vector<char*> args;
      for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      ::execv(args[0], args.data());
      ::_exit(127);
    }
    launcher_pid_ = pid;
    // Its controller: the child running as the controller's uid, once it runs sleep (its
    // fd 3 is then the launcher's socket).
    controller_pid_ = 0;
    ASSERT_TRUE(eventually(
        [&] {
          std::istringstream in(slurp("/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) + "/children"));
          for (pid_t c; in >> c;)
            if (ids_of(c, "Uid").rfind(std::to_string(kUidBase) + " ", 0) == 0 &&
                slurp("/proc/" + std::to_string(c) + "/comm") == "sleep\n")
              controller_pid_ = c;
          return controller_pid_ != 0;
        },
        15s))
        << "the launcher did not start its controller: " << slurp(dir_ + "/launcher.log");
    UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, controller_pid_, 0)));
    ASSERT_TRUE(pidfd) << std::strerror(errno);
    UniqueFd sock(static_cast<int>(::syscall(SYS_pidfd_getfd, pidfd.get(), 3, 0)));
    ASSERT_TRUE(sock) << "pidfd_getfd of the controller's fd 3: " << std::strerror(errno);
    int type = 0;
    socklen_t len = sizeof type;
    ASSERT_EQ(::getsockopt(sock.get(), SOL_SOCKET, SO_TYPE, &type, &len), 0);
    ASSERT_EQ(type, SOCK_SEQPACKET);
    client_ = std::make_unique<launch::Client>(std::move(sock));
  }
  // SIGTERM: the launcher passes it to its controller and exits once that has gone.
  void stop_launcher() {
    if (launcher_pid_ <= 0) return;
    ::kill(launcher_pid_, SIGTERM);
    int status = 0;
    const bool gone = eventually([&] { return ::waitpid(launcher_pid_, &status, WNOHANG) == launcher_pid_; }, 30s);
    EXPECT_TRUE(gone) << "the launcher did not stop";
    if (gone) launcher_pid_ = 0;
    controller_pid_ = 0;
  }

  launch::SpawnRequest fabric_request(uint16_t port) {
    launch::SpawnRequest r;
    r.role = launch::Role::kCardFabric;
    r.instance = launch::kFabricInstance;
    r.slot = 5;  // ignored: the fabric process has its own uid
    r.args = {"--control", "fd:{control}", "--metrics", "fd:{metrics}", "--host-id", "7",
              "--region", "test-1", "--fabric-inbox", "/run/azote-net/fabric/inbox.sock"};
    r.listens = {{"control", state_ + "/fabric.ctl"}, {"metrics", state_ + "/fabric.metrics"}};
    r.output = state_ + "/fabric.log";
    r.limits = {256, 64, 0, ""};
    r.underlay = "127.0.0.1:" + std::to_string(port);
    return r;
  }
  Result<launch::Message, launch::LaunchError> spawn(const launch::SpawnRequest& r) {
    auto m = client_->call(launch::to_json(r));
    if (m && m->body.contains("pid")) cards_.push_back(m->body["pid"].get<pid_t>());
    return m;
  }
  std::string refusal(const Json& request) {
    auto m = client_->call(request);
    return m ? std::string("accepted: ") + m->body.dump() : m.error().message();
  }
  Json list_fabric() {
    auto r = control::call_once(state_ + "/fabric.ctl", {{"op", "list-fabric"}}, 5s);
    return r ? (*r)["fabric"] : Json();
  }
  Json describe_fabric() {
    auto d = client_->call({{"op", "describe"}});
    if (!d) return Json();
    for (const auto& p : d->body["processes"])
      if (p.value("role", "") == "card-fabric") return p;
    return Json();
  }
  bool exited(pid_t pid) {
    auto s = client_->call({{"op", "status"}, {"pid", pid}});
    return s && s->body.value("exited", false);
  }

  std::string dir_, state_;
  pid_t launcher_pid_ = 0, controller_pid_ = 0;
  std::vector<pid_t> cards_;
  std::unique_ptr<launch::Client> client_;
};

TEST_F(LauncherFabric, RunsTheFabricProcessOnAnUnderlaySocketBoundInTheHostsNamespace) {
  start_launcher();
  if (HasFatalFailure()) return;
  const uint16_t port = free_udp_port();
  ASSERT_NE(port, 0);
  const std::string underlay = "127.0.0.1:" + std::to_string(port);
  auto m = spawn(fabric_request(port));
  ASSERT_TRUE(m) << m.error().message() << "\n" << slurp(dir_ + "/launcher.log");
  const pid_t pid = m->body["pid"].get<pid_t>();
  const std::string fabric_uid = std::to_string(kUidBase + launch::kFabricId);
  EXPECT_EQ(m->body.value("uid", 0u), kUidBase + launch::kFabricId);
  ASSERT_EQ(m->fds.size(), 1u);  // its pidfd

  // It answers on its control socket: the fabric on the underlay it was given, host 7,
  // relaying from its inbox.
  Json f;
  ASSERT_TRUE(eventually([&] { return !(f = list_fabric()).is_null(); }, 10s))
      << "no list-fabric answer; the card's log: " << slurp(state_ + "/fabric.log");
  EXPECT_EQ(f.value("host_id", 0), 7) << f.dump();
  EXPECT_EQ(f.value("underlay", ""), underlay) << f.dump();
  EXPECT_TRUE(f.contains("relay")) << f.dump();

  // Its identity and its jail: uid and gid base + 3 (whatever the slot), its own network
  // namespace, the cgroup leaf host/card-fabric.
  EXPECT_EQ(ids_of(pid, "Uid"), fabric_uid + " " + fabric_uid + " " + fabric_uid + " " + fabric_uid);
  EXPECT_EQ(ids_of(pid, "Gid"), fabric_uid + " " + fabric_uid + " " + fabric_uid + " " + fabric_uid);
  std::error_code ec;
  EXPECT_NE(fs::read_symlink("/proc/" + std::to_string(pid) + "/ns/net", ec), fs::read_symlink("/proc/self/ns/net", ec));
  const Json d = describe_fabric();
  EXPECT_EQ(d.value("pid", 0), pid) << d.dump();
  EXPECT_EQ(d.value("instance", ""), "fabric") << d.dump();
  const std::string leaf = d.value("cgroup", "");
  EXPECT_EQ(leaf.substr(leaf.size() >= 17 ? leaf.size() - 17 : 0), "/host/card-fabric") << leaf;
  EXPECT_NE(slurp(leaf + "/cgroup.procs").find(std::to_string(pid)), std::string::npos) << leaf;

  // net/fabric: the fabric process's (0755), holding its relay inbox.
  struct stat st{};
  ASSERT_EQ(::stat((state_ + "/net/fabric").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, kUidBase + launch::kFabricId);
  EXPECT_EQ(st.st_mode & 07777, 0755u);
  ASSERT_EQ(::stat((state_ + "/net/fabric/inbox.sock").c_str(), &st), 0) << "no relay inbox";
  EXPECT_TRUE(S_ISSOCK(st.st_mode));

  // The socket on 127.0.0.1:PORT in this (the launcher's) namespace is the card's, and
  // its own namespace has none: a socket keeps the namespace it was made in.
  const uint64_t inode = udp_inode("/proc/self/net/udp", port);
  ASSERT_NE(inode, 0u) << "nothing bound on " << underlay << " here";
  EXPECT_TRUE(holds_socket(pid, inode)) << "the socket on " << underlay << " is not the fabric process's";
  EXPECT_EQ(udp_inode("/proc/" + std::to_string(pid) + "/net/udp", port), 0u);
  // ... and what arrives there reaches it: a datagram that is no Geneve is counted.
  const auto refused = [&] {
    const Json g = list_fabric();
    return g.value("malformed", 0) + g.value("unknown_peer", 0);
  };
  const int before = refused();
  UniqueFd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(port);
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const std::string junk(40, 'x');
  ASSERT_EQ(::sendto(s.get(), junk.data(), junk.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to),  // NOLINT
            static_cast<ssize_t>(junk.size()));
  EXPECT_TRUE(eventually([&] { return refused() > before; }, 5s)) << list_fabric().dump();

  // One per host: a second is refused while it runs, and nothing of the running one is
  // touched.
  auto again = spawn(fabric_request(free_udp_port()));
  ASSERT_FALSE(again);
  EXPECT_NE(again.error().message().find("the host's fabric process runs already (pid " + std::to_string(pid) + ")"),
            std::string::npos)
      << again.error().message();
  EXPECT_FALSE(list_fabric().is_null()) << "the running fabric process lost its control socket";
  EXPECT_EQ(::stat((state_ + "/net/fabric/inbox.sock").c_str(), &st), 0) << "the running fabric process lost its inbox";

  // Stopped like a card: signalled, seen to exit, released (its cgroup and net/fabric go).
  auto sig = client_->call({{"op", "signal"}, {"pid", pid}, {"starttime", m->body["starttime"]}, {"signal", SIGTERM}});
  ASSERT_TRUE(sig) << sig.error().message();
  EXPECT_TRUE(eventually([&] { return exited(pid); }, 10s));
  auto rel = client_->call({{"op", "release"}, {"instance", "fabric"}});
  ASSERT_TRUE(rel) << rel.error().message();
  EXPECT_TRUE(rel->body.value("cgroups_removed", false)) << rel->body.dump();
  EXPECT_FALSE(fs::exists(leaf));
  EXPECT_FALSE(fs::exists(state_ + "/net/fabric"));

  // An underlay in use (here by this test) or not the host's is refused, naming it.
  UniqueFd taken(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  const uint16_t taken_port = free_udp_port();
  sockaddr_in at{};
  at.sin_family = AF_INET;
  at.sin_port = htons(taken_port);
  at.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(taken.get(), reinterpret_cast<sockaddr*>(&at), sizeof at), 0);  // NOLINT
  auto in_use = spawn(fabric_request(taken_port));
  ASSERT_FALSE(in_use);
  EXPECT_NE(in_use.error().message().find("the underlay 127.0.0.1:" + std::to_string(taken_port) +
                                          " cannot be bound in the host's network namespace: Address already in use "
                                          "(EADDRINUSE)"),
            std::string::npos)
      << in_use.error().message();
  EXPECT_FALSE(fs::exists(state_ + "/net/fabric")) << "a refused spawn made the fabric process's directory";
  auto elsewhere = fabric_request(6081);
  elsewhere.underlay = "192.0.2.1:6081";
  auto nowhere = spawn(elsewhere);
  ASSERT_FALSE(nowhere);
  EXPECT_NE(nowhere.error().message().find("the underlay 192.0.2.1:6081 cannot be bound in the host's network namespace: "
                                           "Cannot assign requested address (EADDRNOTAVAIL)"),
            std::string::npos)
      << nowhere.error().message();

  // "fabric" is no other role's instance, an underlay no other role's, and the underlay
  // is the launcher's to give.
  EXPECT_NE(refusal({{"op", "spawn"}, {"role", "card-net"}, {"instance", "fabric"}})
                .find("\"instance\": \"fabric\" is the host's fabric process (role card-fabric), not a card-net's instance"),
            std::string::npos);
  EXPECT_NE(refusal({{"op", "spawn"}, {"role", "hv"}, {"instance", "i-0123456789abcdef0"}, {"underlay", underlay}})
                .find("\"underlay\" is for card-fabric (the host's fabric process) only, not hv"),
            std::string::npos);
  EXPECT_NE(refusal({{"op", "spawn"}, {"role", "card-fabric"}, {"instance", "i-0123456789abcdef0"}, {"underlay", underlay}})
                .find("card-fabric needs \"instance\": \"fabric\""),
            std::string::npos);
  auto own_underlay = fabric_request(free_udp_port());
  own_underlay.args.insert(own_underlay.args.end(), {"--underlay-fd", "3"});
  EXPECT_NE(refusal(launch::to_json(own_underlay)).find("\"--underlay-fd\" in \"args\": the launcher gives"), std::string::npos);

  // Started again on the same underlay (the old socket went with its process), then
  // killed with its launcher gone: the next launcher adopts it, and can end it.
  auto second = spawn(fabric_request(port));
  ASSERT_TRUE(second) << second.error().message();
  const pid_t pid2 = second->body["pid"].get<pid_t>();
  ASSERT_TRUE(eventually([&] { return !list_fabric().is_null(); }, 10s)) << slurp(state_ + "/fabric.log");
  ::kill(launcher_pid_, SIGKILL);
  ::waitpid(launcher_pid_, nullptr, 0);
  launcher_pid_ = 0;
  ::kill(controller_pid_, SIGKILL);  // the stand-in does not notice its launcher is gone
  EXPECT_FALSE(list_fabric().is_null()) << "the fabric process did not outlive its launcher";
  start_launcher();
  if (HasFatalFailure()) return;
  const Json adopted = describe_fabric();
  EXPECT_EQ(adopted.value("pid", 0), pid2) << adopted.dump();
  EXPECT_EQ(adopted.value("instance", ""), "fabric") << adopted.dump();
  EXPECT_EQ(adopted.value("uid", 0u), kUidBase + launch::kFabricId) << adopted.dump();
  auto kill = client_->call({{"op", "signal"}, {"pid", pid2}, {"signal", SIGKILL}});
  ASSERT_TRUE(kill) << kill.error().message();
  auto rel2 = client_->call({{"op", "release"}, {"instance", "fabric"}});
  ASSERT_TRUE(rel2) << rel2.error().message();
  EXPECT_TRUE(rel2->body.value("cgroups_removed", false)) << rel2->body.dump();
  EXPECT_TRUE(eventually([&] { return gone_or_zombie(pid2); }, 5s)) << "the adopted fabric process still runs";
  const std::string tree = client_->call({{"op", "describe"}})->body.value("tree", "");
  stop_launcher();
  EXPECT_FALSE(tree.empty() || fs::exists(tree)) << tree << " outlived the launcher";
}

}  // namespace
}  // namespace azote::launcher
