// The vsock fabric of a parent and its enclaves end to end, with the real processes:
// azote-card-vsock (one device per VM, under its seccomp policy) and one azote-hv per VM,
// each booting the built-in guest, whose user-mode virtio-vsock driver runs the programs
// (guest/vsock_programs.cpp). The enclave boots from an EIF, as nitro-cli run-enclave
// would; the parent from the built-in kernel.
#include <gtest/gtest.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <memory>
#include <thread>

#include "process.hpp"

namespace {

using azote::test::Outcome;
using azote::test::Process;
using azote::test::run;
using namespace std::chrono_literals;

const std::string kAzote = AZOTE_BUILD_DIR "/bin/azote";
const std::string kCard = AZOTE_BUILD_DIR "/bin/azote-card-vsock";

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

  // The card, serving the parent (3) and `enclaves`.
  void start_card(const std::vector<uint32_t>& enclaves) {
    std::vector<std::string> a{kCard, "--device", "cid=3,socket=" + sock(3)};
    for (uint32_t cid : enclaves)
      a.insert(a.end(), {"--device", "cid=" + std::to_string(cid) + ",socket=" + sock(cid)});
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

}  // namespace
