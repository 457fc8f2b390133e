// azote-card-vsock end to end: the real binary (seccomp in kill mode: a missing rule
// kills it) serving a parent and an enclave over vhost-user, each played by lib/vhost_user's
// Frontend (as azote-hv) and MockDriver rings (as the guest's driver).
#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <fstream>
#include <sstream>

#include "base/temp_dir.hpp"
#include "cards/vsock/device.hpp"
#include "cards/vsock/test_vm.hpp"
#include "control/control.hpp"
#include "vhost_user/frontend.hpp"

extern char** environ;

namespace azote::card_vsock {
namespace {

using namespace std::chrono_literals;
using namespace testing;

class CardProcess {
 public:
  // `fd3`: a descriptor the card gets as 3 (as the launcher hands one over), or -1.
  CardProcess(std::vector<std::string> args, const std::string& log, int fd3 = -1) : log_(log) {
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    if (fd3 >= 0) posix_spawn_file_actions_adddup2(&fa, fd3, 3);
    args.insert(args.begin(), AZOTE_CARD_VSOCK_BIN);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    EXPECT_EQ(posix_spawn(&pid_, argv[0], &fa, nullptr, argv.data(), environ), 0);
    posix_spawn_file_actions_destroy(&fa);
  }
  ~CardProcess() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  // Sends `sig` (0: none) and waits for the exit status (128 + signal if killed by one).
  int stop(int sig) {
    if (sig != 0) ::kill(pid_, sig);
    int st = 0;
    for (int i = 0; i < 1000; ++i) {
      if (::waitpid(pid_, &st, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
      }
      std::this_thread::sleep_for(10ms);
    }
    return -1;
  }
  std::string log() const {
    std::ifstream f(log_);
    std::stringstream s;
    s << f.rdbuf();
    return s.str();
  }

 private:
  std::string log_;
  pid_t pid_ = -1;
};

Result<vhost_user::Frontend, vhost_user::VuError> wire(const std::string& path, Vm& vm) {
  vhost_user::FrontendOptions o;
  o.timeout = 5000ms;  // the card may still be starting
  AZOTE_TRY(fe, vhost_user::Frontend::connect(path, o));
  AZOTE_TRYV(fe.set_features(virtio::feature_bit(virtio::kFVersion1)));
  AZOTE_TRYV(fe.set_mem_table(vm.mem()));
  for (uint32_t q = 0; q < kNumQueues; ++q) {
    const vhost_user::VringInfo i = vm.info(q);
    vhost_user::VringConfig c;
    c.index = q;
    c.num = i.size;
    c.desc_user_addr = *vhost_user::Frontend::user_addr(vm.mem(), i.desc, 16ull * i.size);
    c.avail_user_addr = *vhost_user::Frontend::user_addr(vm.mem(), i.avail, 6 + 2ull * i.size);
    c.used_user_addr = *vhost_user::Frontend::user_addr(vm.mem(), i.used, 6 + 8ull * i.size);
    c.kick_fd = vm.kick_fd(q);
    c.call_fd = vm.call_fd(q);
    AZOTE_TRYV(fe.setup_vring(c));
    AZOTE_TRYV(fe.set_vring_enable(q, true));
  }
  return fe;
}

TEST(Process, AParentAndAnEnclaveUnderSeccomp) {
  TempDir dir("card-vsock-process");
  const std::string p = dir.path() + "/parent.sock", e = dir.path() + "/enclave.sock";
  CardProcess card({"--device", "cid=3,socket=" + p, "--device", "cid=17,socket=" + e, "--seccomp", "kill"},
                   dir.path() + "/card.log");
  Vm pvm(3), evm(17);
  auto pfe = wire(p, pvm);
  ASSERT_TRUE(pfe.ok()) << pfe.error().message() << "\n" << card.log();
  auto efe = wire(e, evm);
  ASSERT_TRUE(efe.ok()) << efe.error().message() << "\n" << card.log();
  EXPECT_EQ(*efe->get_config(0, 8), (Bytes{17, 0, 0, 0, 0, 0, 0, 0}));
  pvm.post_rx(32);
  evm.post_rx(32);
  // The boot heartbeat, then 20 KiB each way.
  evm.send(pkt(17, 1024, 3, 9000, kOpRequest));
  ASSERT_EQ(pvm.wait_rx(1).size(), 1u) << card.log();
  pvm.send(pkt(3, 9000, 17, 1024, kOpResponse));
  ASSERT_EQ(evm.wait_rx(1).size(), 1u);
  const Bytes data = pattern(20000, 9);
  evm.send(pkt(17, 1024, 3, 9000, kOpRw, data));
  pvm.send(pkt(3, 9000, 17, 1024, kOpRw, data));
  for (Vm* vm : {&pvm, &evm}) {
    const auto got = vm->wait_rx(5);
    ASSERT_EQ(got.size(), 5u) << card.log();
    Bytes joined;
    for (const Bytes& b : got) joined.insert(joined.end(), b.begin() + kHeaderBytes, b.end());
    EXPECT_EQ(joined, data);
  }
  // The enclave tries the host: refused.
  evm.send(pkt(17, 1025, 2, 80, kOpRequest));
  auto got = evm.wait_rx(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0], pkt(rst_header(2, 80, 17, 1025)));
  // The enclave's hypervisor goes away: the parent's connection is reset.
  { vhost_user::Frontend gone = std::move(efe).value(); }
  got = pvm.wait_rx(1);
  ASSERT_EQ(got.size(), 1u) << card.log();
  EXPECT_EQ(got[0], pkt(rst_header(17, 1024, 3, 9000)));
  EXPECT_EQ(card.stop(SIGTERM), 0) << card.log();
  const std::string log = card.log();
  EXPECT_NE(log.find("vsock: cid 17: sent 2 packets (20000 bytes)"), std::string::npos) << log;
  EXPECT_NE(log.find("unroutable 1"), std::string::npos) << log;
  EXPECT_EQ(log.find("seccomp"), std::string::npos) << log;
  EXPECT_EQ(::access(p.c_str(), F_OK), -1) << "the sockets are removed at the end";
}

// A listening socket at `path`, as the launcher makes the control socket.
UniqueFd listening(const std::string& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::memcpy(a.sun_path, path.data(), path.size());
  EXPECT_EQ(::bind(fd.get(), reinterpret_cast<const sockaddr*>(&a), sizeof a), 0);
  EXPECT_EQ(::listen(fd.get(), 16), 0);
  return fd;
}

// As the controller runs it: the parent's device only, the control socket handed over
// as fd:3; an enclave added, used, and removed through it, all under --seccomp kill.
TEST(Process, EnclavesAddedAndRemovedThroughTheControlSocket) {
  TempDir dir("card-vsock-process");
  const std::string p = dir.path() + "/parent.sock", e = dir.path() + "/enclave.sock", ctl = dir.path() + "/ctl";
  UniqueFd control = listening(ctl);
  CardProcess card({"--device", "cid=3,socket=" + p, "--control", "fd:3", "--seccomp", "kill"},
                   dir.path() + "/card.log", control.get());
  control.reset();
  Vm pvm(3);
  auto pfe = wire(p, pvm);
  ASSERT_TRUE(pfe.ok()) << pfe.error().message() << "\n" << card.log();
  auto ping = control::call_once(ctl, {{"op", "ping"}}, 5s);
  ASSERT_TRUE(ping.ok()) << ping.error().message() << "\n" << card.log();
  auto a = control::call_once(ctl, {{"op", "add-device"}, {"cid", 17}, {"socket", e}}, 5s);
  ASSERT_TRUE(a.ok()) << a.error().message() << "\n" << card.log();
  struct stat st {};
  ASSERT_EQ(::stat(e.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0666u);
  Vm evm(17);
  auto efe = wire(e, evm);
  ASSERT_TRUE(efe.ok()) << efe.error().message() << "\n" << card.log();
  pvm.post_rx(8);
  evm.post_rx(8);
  evm.send(pkt(17, 1024, 3, 9000, kOpRequest));
  ASSERT_EQ(pvm.wait_rx(1).size(), 1u) << card.log();
  pvm.send(pkt(3, 9000, 17, 1024, kOpResponse));
  ASSERT_EQ(evm.wait_rx(1).size(), 1u);
  auto d = control::call_once(ctl, {{"op", "describe"}}, 5s);
  ASSERT_TRUE(d.ok()) << d.error().message();
  ASSERT_EQ((*d)["devices"].size(), 2u) << d->dump();
  EXPECT_EQ((*d)["devices"][1]["connections"], 1) << d->dump();
  auto bad = control::call_once(ctl, {{"op", "add-device"}, {"cid", 3}, {"socket", e + "2"}}, 5s);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message().find("\"cid\" 3 is the parent's"), std::string::npos) << bad.error().message();
  auto r = control::call_once(ctl, {{"op", "remove-device"}, {"cid", 17}}, 5s);
  ASSERT_TRUE(r.ok()) << r.error().message() << "\n" << card.log();
  const auto got = pvm.wait_rx(1);
  ASSERT_EQ(got.size(), 1u) << card.log();
  EXPECT_EQ(got[0], pkt(rst_header(17, 1024, 3, 9000)));
  EXPECT_EQ(::access(e.c_str(), F_OK), -1) << "its socket removed";
  EXPECT_EQ(card.stop(SIGTERM), 0) << card.log();
  const std::string log = card.log();
  EXPECT_NE(log.find("cid 17 removed"), std::string::npos) << log;
  EXPECT_EQ(log.find("seccomp"), std::string::npos) << log;
  EXPECT_EQ(::access(ctl.c_str(), F_OK), 0) << "the launcher's socket is the launcher's to remove";
}

TEST(Process, ABadCommandLineNamesTheValue) {
  TempDir dir("card-vsock-process");
  CardProcess card({"--device", "cid=3,socket=" + dir.path() + "/p", "--device", "cid=4294967296,socket=/x"},
                   dir.path() + "/card.log");
  EXPECT_EQ(card.stop(0), 64);
  EXPECT_NE(card.log().find("cid 4294967296 does not fit in 32 bits"), std::string::npos) << card.log();
}

}  // namespace
}  // namespace azote::card_vsock
