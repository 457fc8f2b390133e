// The vsock fabric of a parent and its enclaves end to end, with the real processes:
// azote-card-vsock (one device per VM, under its seccomp policy) and one azote-hv per VM,
// each booting the built-in guest, whose user-mode virtio-vsock driver runs the programs
// (guest/vsock_programs.cpp). The enclave boots from an EIF, as nitro-cli run-enclave
// would; the parent from the built-in kernel. The card is also driven as the controller
// drives it: started with the parent's device only, an enclave's device added through
// its control socket when the enclave runs and removed when it ends.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <atomic>
#include <memory>
#include <thread>

#include <nlohmann/json.hpp>

#include "process.hpp"

namespace {

using azote::test::Outcome;
using azote::test::Process;
using azote::test::run;
using namespace std::chrono_literals;

const std::string kAzote = AZOTE_BUILD_DIR "/bin/azote";
const std::string kCard = AZOTE_BUILD_DIR "/bin/azote-card-vsock";

// One request on a card's control socket (JSON lines, as control::call_once sends it):
// the answer, or {"ok": false, "error": why} if there was none within 10 s.
nlohmann::json control_call(const std::string& path, const nlohmann::json& request) {
  const auto fail = [](const std::string& why) { return nlohmann::json{{"ok", false}, {"error", why}}; };
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return fail("socket");
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::memcpy(a.sun_path, path.data(), std::min(path.size(), sizeof a.sun_path - 1));
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return fail("connect " + path + ": " + std::strerror(errno));
  }
  const std::string line = request.dump() + "\n";
  if (::send(fd, line.data(), line.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(line.size())) {
    ::close(fd);
    return fail("send");
  }
  std::string in;
  const auto end = std::chrono::steady_clock::now() + 10s;
  while (in.find('\n') == std::string::npos && std::chrono::steady_clock::now() < end) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    char buf[4096];
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    in.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  if (in.find('\n') == std::string::npos) return fail("no answer to " + request.dump());
  return nlohmann::json::parse(in.substr(0, in.find('\n')), nullptr, false);
}

class EnclaveVsock : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (!azote::test::kvm_usable(&why)) GTEST_SKIP() << "SKIPPED: " << why;
    dir_ = ::testing::TempDir() + "azote-vsock-" + std::to_string(::getpid()) + "-" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override {
    for (auto& p : guests_) {
      p->signal(SIGKILL);
      (void)p->wait(5s);
    }
    if (card_) {
      card_->signal(SIGTERM);
      const Outcome o = card_->wait(10s);
      EXPECT_EQ(o.status, 0) << "a clean stop: " << o.err;
      card_log_ = o.err;
    }
    std::error_code ec;
    if (!HasFailure() && !dir_.empty()) std::filesystem::remove_all(dir_, ec);
  }
  std::string path(const std::string& n) const { return dir_ + "/" + n; }
  std::string sock(uint32_t cid) const { return path("cid" + std::to_string(cid) + ".sock"); }

  // The card, serving the parent (3) and `enclaves`; `control`: its --control PATH.
  void start_card(const std::vector<uint32_t>& enclaves, const std::string& control = "",
                  const std::vector<std::string>& extra = {}) {
    std::vector<std::string> a{kCard, "--device", "cid=3,socket=" + sock(3)};
    a.insert(a.end(), extra.begin(), extra.end());
    for (uint32_t cid : enclaves)
      a.insert(a.end(), {"--device", "cid=" + std::to_string(cid) + ",socket=" + sock(cid)});
    if (!control.empty()) a.insert(a.end(), {"--control", control});
    card_ = std::make_unique<Process>(a);
    for (int i = 0; i < 100 && !azote::test::file_exists(sock(3)); ++i) std::this_thread::sleep_for(50ms);
    ASSERT_TRUE(azote::test::file_exists(sock(3))) << card_->wait(1s).err;
  }
  // azote-hv for the VM of `cid` running the built-in guest's `program` ARGS.
  std::vector<std::string> hv(uint32_t cid, const std::string& program, const std::string& args = "") const {
    std::vector<std::string> a{AZOTE_HV_BIN, "--kernel", "builtin:" + program, "--memory", "64M", "--device",
                               "vsock,socket=" + sock(cid)};
    if (!args.empty()) a.insert(a.end(), {"--cmdline", args});
    return a;
  }
  // A VM in the background; `ready`: a line it prints once it listens.
  Process& background(std::vector<std::string> argv, const std::string& ready) {
    guests_.push_back(std::make_unique<Process>(std::move(argv)));
    EXPECT_TRUE(guests_.back()->wait_for_output(ready, 30s)) << guests_.back()->wait(1s).out;
    return *guests_.back();
  }

  std::string dir_;
  std::unique_ptr<Process> card_;
  std::vector<std::unique_ptr<Process>> guests_;
  std::string card_log_;
};

// nitro-cli's boot heartbeat (ENCLAVES.md §5): the parent listens on (3, 9000), the
// enclave, booted from its EIF, connects and sends 0xB7, the parent echoes it.
TEST_F(EnclaveVsock, TheBootHeartbeatCrossesTheCard) {
  std::ofstream(path("boot.cpio"), std::ios::binary) << "bootstrap ramdisk";
  const Outcome b = run({kAzote, "enclave", "build-enclave", "--kernel", AZOTE_GUEST_ELF, "--initrd", path("boot.cpio"),
                         "--cmdline", "azote.run=vsock-heartbeat", "--output-file", path("enclave.eif")});
  ASSERT_EQ(b.status, 0) << b.err;
  start_card({16});
  Process& parent = background(hv(3, "vsock-heartbeat-server", "1"), "vsock-heartbeat-server ready cid=3 port=9000");
  const Outcome e =
      run({AZOTE_HV_BIN, "--eif", path("enclave.eif"), "--memory", "64M", "--device", "vsock,socket=" + sock(16)}, 60s);
  EXPECT_EQ(e.status, 0) << e.out << e.err;
  EXPECT_NE(e.out.find("azote-guest: vsock-heartbeat ok cid=16 "), std::string::npos) << e.out;
  const Outcome p = parent.wait(30s);
  EXPECT_EQ(p.status, 0) << p.out << p.err;
  EXPECT_NE(p.out.find("azote-guest: vsock-heartbeat from cid=16"), std::string::npos) << p.out;
}

// An enclave reaches its parent, never another enclave or the host (the card answers
// those with RST: connection refused at once); the parent reaches each of its enclaves;
// a 1 MB stream comes back intact through the card both ways.
TEST_F(EnclaveVsock, AnEnclaveReachesOnlyItsParent) {
  start_card({5, 6});
  Process& parent = background(hv(3, "vsock-echo", "5000 1"), "vsock-echo ready cid=3 port=5000");
  Process& six = background(hv(6, "vsock-echo", "5000 1"), "vsock-echo ready cid=6 port=5000");
  for (const char* target : {"6 5000 hi", "2 5000 hi", "0 5000 hi"}) {
    const Outcome o = run(hv(5, "vsock-send", target), 60s);
    EXPECT_EQ(o.status, 1) << target << ": " << o.out;
    EXPECT_NE(o.out.find("connection refused (RST)"), std::string::npos) << target << ": " << o.out;
  }
  Outcome o = run(hv(5, "vsock-send", "3 5000 0123456789abcdef 65536"), 120s);
  EXPECT_EQ(o.status, 0) << o.out << o.err;
  EXPECT_NE(o.out.find("azote-guest: vsock-send echoed bytes=1048576 "), std::string::npos) << o.out;
  const Outcome p = parent.wait(30s);
  EXPECT_EQ(p.status, 0) << p.out;
  EXPECT_NE(p.out.find("azote-guest: vsock-echo peer=5:"), std::string::npos) << p.out;
  // The parent reaches an enclave (a new VM on the parent's device: a reboot, say).
  o = run(hv(3, "vsock-send", "6 5000 hello 100"), 60s);
  EXPECT_EQ(o.status, 0) << o.out << o.err;
  EXPECT_NE(o.out.find("azote-guest: vsock-send echoed bytes=500 "), std::string::npos) << o.out;
  EXPECT_EQ(six.wait(30s).status, 0);
  // Enclave 5 is not running now (no VM behind its device): refused at once.
  o = run(hv(3, "vsock-send", "5 5000 hi"), 60s);
  EXPECT_EQ(o.status, 1) << o.out;
  EXPECT_NE(o.out.find("connection refused (RST)"), std::string::npos) << o.out;
}

// An enclave that dies mid-stream: the card resets its connection at the parent, whose
// echo server ends that connection at once (not after its 60 s idle timeout).
TEST_F(EnclaveVsock, AnEnclaveThatDiesResetsItsConnectionAtTheParent) {
  start_card({7});
  Process& parent = background(hv(3, "vsock-echo", "5000 1"), "vsock-echo ready cid=3 port=5000");
  Process& enclave = background(hv(7, "vsock-bench", "3 5000 60"), "");
  std::this_thread::sleep_for(2s);
  enclave.signal(SIGKILL);
  const auto t0 = std::chrono::steady_clock::now();
  const Outcome p = parent.wait(30s);
  EXPECT_EQ(p.status, 0) << p.out << p.err;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 15s);
  EXPECT_NE(p.out.find("azote-guest: vsock-echo peer=7:"), std::string::npos) << p.out;
  EXPECT_NE(p.out.find(" error: connection reset by the peer (RST)"), std::string::npos) << "the card's RST: " << p.out;
}

// As the controller runs it: the card starts with the parent's device only; an enclave's
// device is added when it runs (add-device, mode 0666), the enclave booted from its EIF
// reaches the parent's echo server; another run holds a connection open, and
// remove-device resets it at the parent at once (the enclave's hv is still running).
TEST_F(EnclaveVsock, AnEnclaveAddedAndRemovedThroughTheControlSocket) {
  std::ofstream(path("boot.cpio"), std::ios::binary) << "bootstrap ramdisk";
  const Outcome b = run({kAzote, "enclave", "build-enclave", "--kernel", AZOTE_GUEST_ELF, "--initrd", path("boot.cpio"),
                         "--cmdline", "azote.run=vsock-send 3 5000 hi", "--output-file", path("enclave.eif")});
  ASSERT_EQ(b.status, 0) << b.err;
  const std::string ctl = path("card.ctl");
  start_card({}, ctl);
  for (int i = 0; i < 100 && !azote::test::file_exists(ctl); ++i) std::this_thread::sleep_for(50ms);
  ASSERT_EQ(control_call(ctl, {{"op", "ping"}}), (nlohmann::json{{"ok", true}}));
  // Nothing behind CID 12 yet: refused.
  Outcome o = run(hv(3, "vsock-send", "12 5000 hi"), 60s);
  EXPECT_EQ(o.status, 1) << o.out;
  EXPECT_NE(o.out.find("connection refused (RST)"), std::string::npos) << o.out;
  Process& parent = background(hv(3, "vsock-echo", "5000 2"), "vsock-echo ready cid=3 port=5000");

  nlohmann::json r = control_call(ctl, {{"op", "add-device"}, {"cid", 12}, {"socket", sock(12)}});
  ASSERT_EQ(r, (nlohmann::json{{"ok", true}})) << r.dump();
  struct stat st {};
  ASSERT_EQ(::stat(sock(12).c_str(), &st), 0) << "it listens once answered";
  EXPECT_EQ(st.st_mode & 0777, 0666u);
  o = run({AZOTE_HV_BIN, "--eif", path("enclave.eif"), "--memory", "64M", "--device", "vsock,socket=" + sock(12)}, 60s);
  EXPECT_EQ(o.status, 0) << o.out << o.err;
  EXPECT_NE(o.out.find("azote-guest: vsock-send echoed bytes=2 "), std::string::npos) << o.out;

  // The enclave runs again (its hv reconnects to the same device) and streams.
  Process& enclave = background(hv(12, "vsock-bench", "3 5000 60"), "");
  bool open = false;
  for (int i = 0; i < 300 && !open; ++i) {
    r = control_call(ctl, {{"op", "describe"}});
    for (const auto& d : r["devices"])
      if (d["cid"] == 12 && d["connections"] == 1 && d["rx_packets"].get<uint64_t>() > 10) open = true;
    if (!open) std::this_thread::sleep_for(50ms);
  }
  ASSERT_TRUE(open) << r.dump() << enclave.wait(1s).out;
  r = control_call(ctl, {{"op", "remove-device"}, {"cid", 12}});
  ASSERT_EQ(r, (nlohmann::json{{"ok", true}})) << r.dump();
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(azote::test::file_exists(sock(12))) << "its socket removed";
  const Outcome p = parent.wait(30s);
  EXPECT_EQ(p.status, 0) << p.out << p.err;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 15s) << "the card's RST, not the echo's idle timeout";
  EXPECT_NE(p.out.find("azote-guest: vsock-echo peer=12:"), std::string::npos) << p.out;
  EXPECT_NE(p.out.find(" error: connection reset by the peer (RST)"), std::string::npos) << "the card's RST: " << p.out;
  r = control_call(ctl, {{"op", "describe"}});
  EXPECT_EQ(r["devices"].size(), 1u) << r.dump();
  EXPECT_EQ(r["enclaves"], 0) << r.dump();
  EXPECT_EQ(control_call(ctl, {{"op", "remove-device"}, {"cid", 12}}).value("ok", true), false);
}

// The host bridge: the parent (never an enclave) reaches a host Unix socket through the
// card (--host-port 5000=PATH): the built-in guest's vsock-send to (2, 5000) is echoed
// by a Unix echo server this test runs, 5 bytes and then 1 MiB.
TEST_F(EnclaveVsock, TheParentReachesAHostUnixSocket) {
  const std::string echo_path = path("echo.sock");
  int lfd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(lfd, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::memcpy(a.sun_path, echo_path.data(), echo_path.size());
  ASSERT_EQ(::bind(lfd, reinterpret_cast<const sockaddr*>(&a), sizeof a), 0) << std::strerror(errno);
  ASSERT_EQ(::listen(lfd, 8), 0);
  std::atomic<bool> stop{false};
  std::atomic<int> connections{0};
  std::thread echo([&] {
    while (!stop) {
      pollfd p{lfd, POLLIN, 0};
      if (::poll(&p, 1, 50) != 1) continue;
      const int c = ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      ++connections;
      char buf[65536];
      for (;;) {
        const ssize_t r = ::read(c, buf, sizeof buf);
        if (r <= 0) break;
        for (ssize_t off = 0; off < r;) {
          const ssize_t w = ::send(c, buf + off, static_cast<size_t>(r - off), MSG_NOSIGNAL);
          if (w <= 0) break;
          off += w;
        }
      }
      ::close(c);
    }
  });
  start_card({9}, "", {"--host-port", "5000=" + echo_path});
  Outcome o = run(hv(3, "vsock-send", "2 5000 hello"), 60s);
  EXPECT_EQ(o.status, 0) << o.out << o.err;
  EXPECT_NE(o.out.find("azote-guest: vsock-send echoed bytes=5 "), std::string::npos) << o.out;
  o = run(hv(3, "vsock-send", "2 5000 0123456789abcdef 65536"), 120s);
  EXPECT_EQ(o.status, 0) << o.out << o.err;
  EXPECT_NE(o.out.find("azote-guest: vsock-send echoed bytes=1048576 "), std::string::npos) << o.out;
  // An unmapped host port, and an enclave towards the mapped one: refused at once.
  o = run(hv(3, "vsock-send", "2 5001 hi"), 60s);
  EXPECT_EQ(o.status, 1) << o.out;
  EXPECT_NE(o.out.find("connection refused (RST)"), std::string::npos) << o.out;
  o = run(hv(9, "vsock-send", "2 5000 hi"), 60s);
  EXPECT_EQ(o.status, 1) << o.out;
  EXPECT_NE(o.out.find("connection refused (RST)"), std::string::npos) << o.out;
  EXPECT_EQ(connections.load(), 2) << "the enclave never reached the host socket";
  stop = true;
  echo.join();
  ::close(lfd);
}

}  // namespace
