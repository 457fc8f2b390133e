// Block devices through azote-hv's vhost-user transport, with a backend nobody here
// wrote: qemu-storage-daemon exporting a vhost-user-blk device. The built-in guest's
// user-mode virtio-blk driver writes, reads back and verifies the disk; azote-hv's
// --stats shows the data path never exited to azote-hv (kicks arrive by ioeventfd).
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <fstream>
#include <regex>
#include <thread>

#include "process.hpp"

namespace azote::test {
namespace {

using namespace std::chrono_literals;

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

class QsdBlk : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (!kvm_usable(&why)) GTEST_SKIP() << "SKIPPED: needs KVM (" << why << ")";
    qsd_ = find_in_path("qemu-storage-daemon");
    if (!qsd_) GTEST_SKIP() << "SKIPPED: qemu-storage-daemon not installed (make deps installs qemu-system-x86)";
    dir_ = ::testing::TempDir();
    img_ = dir_ + "/azote-qsd.img";
    sock_ = dir_ + "/azote-qsd.sock";
    std::remove(img_.c_str());
    std::remove(sock_.c_str());
    ASSERT_EQ(run({"truncate", "-s", "32M", img_}).status, 0);
    daemon_ = std::make_unique<Process>(std::vector<std::string>{
        *qsd_, "--blockdev", "driver=file,node-name=f,filename=" + img_ + ",cache.direct=on", "--export",
        "type=vhost-user-blk,id=e,node-name=f,addr.type=unix,addr.path=" + sock_ + ",writable=on"});
    for (int i = 0; i < 100 && !file_exists(sock_); ++i) std::this_thread::sleep_for(20ms);
    ASSERT_TRUE(file_exists(sock_)) << "qemu-storage-daemon did not create " << sock_;
  }
  void TearDown() override {
    daemon_.reset();
    std::remove(img_.c_str());
  }
  std::optional<std::string> qsd_;
  std::string dir_, img_, sock_;
  std::unique_ptr<Process> daemon_;
};

TEST_F(QsdBlk, BlkCheckPassesAndDataPathStaysOutOfTheHypervisor) {
  const std::string stats = dir_ + "/azote-qsd-stats.json";
  auto o = run({AZOTE_HV_BIN, "--kernel", "builtin:blk-check", "--memory", "128M", "--device", "blk,socket=" + sock_,
                "--stats", stats},
               120s);
  ASSERT_FALSE(o.timed_out) << o.out << o.err;
  EXPECT_EQ(o.status, 0) << o.out << o.err;
  EXPECT_NE(o.out.find("azote-guest: blk-check ok sectors=65536"), std::string::npos) << o.out << o.err;
  // The guest's writes reached the backing file (it started as all zeros).
  const std::string data = slurp(img_);
  ASSERT_EQ(data.size(), 32u << 20);
  EXPECT_NE(data.find_first_not_of('\0'), std::string::npos);
  EXPECT_NE(data.find_first_not_of('\0', (32u << 20) - 512), std::string::npos) << "last sector never written";
  // Hundreds of requests, but MMIO exits only for device setup: every queue
  // notification was absorbed by the ioeventfd.
  std::smatch m;
  const std::string j = slurp(stats);
  ASSERT_TRUE(std::regex_search(j, m, std::regex(R"re("mmio": ([0-9]+))re"))) << j;
  const unsigned long mmio = std::stoul(m[1]);
  ASSERT_TRUE(std::regex_search(o.out, m, std::regex(R"(notifies=([0-9]+))"))) << o.out;
  const unsigned long notifies = std::stoul(m[1]);
  // Device setup takes ~40 MMIO exits. With EVENT_IDX the number of kicks depends on
  // timing (a busy host coalesces more: 75 seen under CI load, hundreds when idle), so
  // the check is relative: had the kicks exited to azote-hv, MMIO exits would be at
  // least setup + notifies.
  EXPECT_GE(notifies, 25u) << o.out;
  EXPECT_LT(mmio, 40u + notifies) << j;
  EXPECT_LT(mmio, 64u) << j;
}

// kill -9 of a card that has no in-flight tracking (qemu-storage-daemon offers no
// INFLIGHT_SHMFD) while the guest is writing, then a restart: azote-hv reconnects but
// cannot know which requests the dead card had taken, so instead of replaying the
// rings (which would redo some completed requests and drop others) it reports
// DEVICE_NEEDS_RESET and the guest's driver fails loudly rather than silently.
TEST_F(QsdBlk, CardWithoutInflightTrackingKilledMidWriteNeedsReset) {
  daemon_.reset();
  ASSERT_EQ(run({"truncate", "-s", "1G", img_}).status, 0);
  auto start_daemon = [&] {
    return std::make_unique<Process>(std::vector<std::string>{
        *qsd_, "--blockdev", "driver=file,node-name=f,filename=" + img_ + ",cache.direct=on", "--export",
        "type=vhost-user-blk,id=e,node-name=f,addr.type=unix,addr.path=" + sock_ + ",writable=on"});
  };
  std::remove(sock_.c_str());
  daemon_ = start_daemon();
  for (int i = 0; i < 100 && !file_exists(sock_); ++i) std::this_thread::sleep_for(20ms);
  Process vm({AZOTE_HV_BIN, "--kernel", "builtin:blk-check", "--memory", "256M", "--device", "blk,socket=" + sock_});
  // blk-check announces its seed, then writes 1 GiB (hundreds of ms here).
  ASSERT_TRUE(vm.wait_for_output("blk-check seed=", 30s));
  std::this_thread::sleep_for(100ms);
  daemon_->signal(SIGKILL);
  daemon_.reset();
  std::this_thread::sleep_for(300ms);
  daemon_ = start_daemon();
  auto o = vm.wait(120s);
  ASSERT_FALSE(o.timed_out) << o.out << o.err;
  EXPECT_EQ(o.status, 1) << o.out << o.err;
  EXPECT_NE(o.out.find("NEEDS_RESET"), std::string::npos) << o.out << o.err;
  EXPECT_NE(o.err.find("without in-flight tracking"), std::string::npos) << o.err;
}

// The issue's restart case with our card, which tracks in-flight requests: kill -9
// while the guest is writing, restart, azote-hv reconnects and replays (inflight
// area, memory, vrings), the guest carries on, and its read-back of every sector
// finds no acknowledged write missing.
TEST(CardBlk, KilledMidWriteRestartsWithoutLoss) {
  std::string why;
  if (!kvm_usable(&why)) GTEST_SKIP() << "SKIPPED: needs KVM (" << why << ")";
  const std::string dir = ::testing::TempDir();
  const std::string img = dir + "/azote-card-restart.img", sock = dir + "/azote-card-restart.sock";
  std::remove(sock.c_str());
  std::remove(img.c_str());
  ASSERT_EQ(run({"truncate", "-s", "1G", img}).status, 0);
  const std::vector<std::string> card_argv{AZOTE_CARD_BLK_BIN, "--volume", "socket=" + sock + ",file=" + img};
  auto card = std::make_unique<Process>(card_argv);
  for (int i = 0; i < 100 && !file_exists(sock); ++i) std::this_thread::sleep_for(20ms);
  ASSERT_TRUE(file_exists(sock));
  Process vm({AZOTE_HV_BIN, "--kernel", "builtin:blk-check", "--memory", "256M", "--device", "blk,socket=" + sock});
  ASSERT_TRUE(vm.wait_for_output("blk-check seed=", 30s));
  std::this_thread::sleep_for(150ms);
  card->signal(SIGKILL);
  card.reset();
  std::this_thread::sleep_for(300ms);
  card = std::make_unique<Process>(card_argv);
  auto o = vm.wait(120s);
  ASSERT_FALSE(o.timed_out) << o.out << o.err;
  EXPECT_EQ(o.status, 0) << o.out << o.err;
  EXPECT_NE(o.out.find("azote-guest: blk-check ok sectors=2097152"), std::string::npos) << o.out << o.err;
  EXPECT_NE(o.err.find("reconnected to the card; 1 queue(s) replayed"), std::string::npos) << o.err;
  card->signal(SIGTERM);
  card.reset();
  std::remove(img.c_str());
}

TEST_F(QsdBlk, UnreachableCardIsAClearError) {
  auto o = run({AZOTE_HV_BIN, "--kernel", "builtin:blk-check", "--memory", "64M", "--device",
                "blk,socket=" + dir_ + "/nobody-listens.sock"},
               30s);
  EXPECT_EQ(o.status, 74) << o.err;
  EXPECT_NE(o.err.find("--device blk,socket="), std::string::npos) << o.err;
  EXPECT_NE(o.err.find("cannot reach the card"), std::string::npos) << o.err;
}

}  // namespace
}  // namespace azote::test
