// The built-in guest's `init` program (guest/init.cpp), the one an instance runs:
// real azote-hv, real azote-card-blk serving the root volume. It counts boots in a
// record in sector 0 that survives a stop/start (new hv, new card), says `ready`,
// and then idles in HLT without costing host CPU until azote-hv gets SIGTERM, which
// azote-hv reports as exit status 143 (src/hv/exit_status.hpp, kExitSignal).
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <thread>

#include "process.hpp"

namespace azote::test {
namespace {

using namespace std::chrono_literals;

constexpr int kExitSigterm = 143;
constexpr auto kBoot = 60s;  // generous: the machine is shared and CPL0 is emulated

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// The boot record as guest/init.cpp documents it, written independently here:
// "AZOTEBOOT\0\0\0", u32 version 1, u64 count, u64 FNV-1a 64 of bytes 0-23.
uint64_t fnv1a64(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}
std::string le(uint64_t v, int bytes) {
  std::string s;
  for (int i = 0; i < bytes; ++i) s.push_back(static_cast<char>(v >> (8 * i)));
  return s;
}
std::string record(uint64_t count) {
  std::string r = std::string("AZOTEBOOT\0\0\0", 12) + le(1, 4) + le(count, 8);
  return r + le(fnv1a64(r), 8);
}
// The count in an image's sector 0, if it holds a valid record.
std::optional<uint64_t> count_in(const std::string& image) {
  const std::string d = slurp(image);
  if (d.size() < 32) return std::nullopt;
  uint64_t count = 0;
  std::memcpy(&count, d.data() + 16, 8);
  if (d.substr(0, 32) != record(count)) return std::nullopt;
  return count;
}

// utime + stime of a process (all its threads), in milliseconds; nullopt once it
// has exited (a zombie counts as exited).
std::optional<double> cpu_ms(pid_t pid) {
  const std::string stat = slurp("/proc/" + std::to_string(pid) + "/stat");
  const size_t paren = stat.rfind(')');
  if (paren == std::string::npos) return std::nullopt;
  std::istringstream in(stat.substr(paren + 2));
  std::string state;
  in >> state;  // field 3
  if (state == "Z" || state == "X") return std::nullopt;
  std::string skip;
  for (int field = 4; field <= 13; ++field) in >> skip;
  uint64_t utime = 0, stime = 0;  // fields 14 and 15, clock ticks
  in >> utime >> stime;
  return static_cast<double>(utime + stime) * 1000.0 / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

bool has_line(const std::string& out, const std::string& line) {
  for (const auto& l : lines(out))
    if (l == line) return true;
  return false;
}

class GuestInit : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (!kvm_usable(&why)) GTEST_SKIP() << "SKIPPED: needs KVM (" << why << ")";
    dir_ = ::testing::TempDir() + "azote-guest-init-" + std::to_string(::getpid()) + "-" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(dir_);
    ASSERT_TRUE(std::filesystem::create_directories(dir_)) << dir_;
  }
  void TearDown() override {
    hv_.reset();
    card_.reset();
    if (!dir_.empty() && !HasFailure()) std::filesystem::remove_all(dir_);
  }

  std::string path(const std::string& name) const { return dir_ + "/" + name; }

  // A new card process serving `image` (options appended to its --volume) on sock().
  void start_card(const std::string& image, const std::string& options) {
    std::filesystem::remove(sock());
    card_ = std::make_unique<Process>(std::vector<std::string>{
        AZOTE_CARD_BLK_BIN, "--volume", "socket=" + sock() + ",file=" + image + options});
    for (int i = 0; i < 250 && !file_exists(sock()); ++i) std::this_thread::sleep_for(20ms);
    if (!file_exists(sock())) {
      auto o = card_->wait(1s);
      FAIL() << "the card did not create " << sock() << " (status " << o.status << "): " << o.err;
    }
  }
  Outcome stop_card(int sig) {
    card_->signal(sig);
    Outcome o = card_->wait(10s);
    card_.reset();
    return o;
  }
  std::string sock() const { return path("root.sock"); }

  std::vector<std::string> hv_argv(bool device, const std::string& args) const {
    std::vector<std::string> argv{AZOTE_HV_BIN, "--kernel", "builtin:init", "--memory", "128M", "--vcpus", "2"};
    if (!args.empty()) argv.insert(argv.end(), {"--cmdline", args});
    if (device) argv.insert(argv.end(), {"--device", "blk,socket=" + sock()});
    return argv;
  }

  // Boots init (idling) and waits for `ready`; the VM keeps running in hv_.
  void boot(bool device) {
    hv_ = std::make_unique<Process>(hv_argv(device, ""));
    if (!hv_->wait_for_output("azote-guest: ready\n", kBoot)) {
      auto o = hv_->wait(1s);
      FAIL() << "no 'ready' (status " << o.status << "):\n" << o.out << o.err;
    }
  }
  // SIGTERM to azote-hv, as the host stops an instance: 143, and what it printed.
  Outcome stop_hv() {
    hv_->signal(SIGTERM);
    Outcome o = hv_->wait(10s);
    hv_.reset();
    EXPECT_FALSE(o.timed_out) << "azote-hv ignored SIGTERM\n" << o.out << o.err;
    EXPECT_EQ(o.status, kExitSigterm) << o.out << o.err;
    return o;
  }

  std::string dir_;
  std::unique_ptr<Process> card_, hv_;
};

// (a) First boot on a fresh zeroed volume: boot-count=1, ready; then the idle
// instance costs (almost) no host CPU; SIGTERM stops it with 143.
TEST_F(GuestInit, FirstBootCountsOneThenIdlesWithoutCpu) {
  const std::string img = path("root.img");
  write_file(img, std::string(16 << 20, '\0'));
  ASSERT_NO_FATAL_FAILURE(start_card(img, ",serial=root-a"));
  ASSERT_NO_FATAL_FAILURE(boot(true));

  const pid_t pid = hv_->pid();
  const auto before = cpu_ms(pid);
  ASSERT_TRUE(before) << "azote-hv exited after ready";
  std::this_thread::sleep_for(1s);
  const auto after = cpu_ms(pid);
  ASSERT_TRUE(after) << "azote-hv exited while the guest should idle";
  const double idle_ms = *after - *before;
  std::cout << "azote-hv CPU while idle: " << idle_ms << " ms over 1 s (boot to ready: " << *before << " ms)\n";
  EXPECT_LT(idle_ms, 100.0) << "the idle guest keeps a host CPU busy";

  const Outcome o = stop_hv();
  const auto l = lines(o.out);
  const std::vector<std::string> want = {
      "azote-guest: init vcpus=2 memory=128MiB",
      "azote-guest: root volume boot-count=1 serial=root-a sectors=32768",
      "azote-guest: ready",
  };
  size_t at = 0;  // the wanted lines, in this order (the driver's device line is in between)
  for (const auto& line : l)
    if (at < want.size() && line == want[at]) ++at;
  EXPECT_EQ(at, want.size()) << "missing or out of order: '" << (at < want.size() ? want[at] : "") << "'\n" << o.out;
  EXPECT_EQ(o.out.find("io-error"), std::string::npos) << o.out;
  // The record is on the volume, in the documented format, and nothing else changed.
  EXPECT_EQ(count_in(img), std::optional<uint64_t>(1));
  const std::string data = slurp(img);
  EXPECT_EQ(data.find_first_not_of('\0', 32), std::string::npos) << "init wrote beyond the 32-byte record";
}

// (b) Stop/start: the instance comes back with a new azote-hv and a new card process
// (the old card killed with SIGKILL, so only what was flushed counts): boot-count=2.
TEST_F(GuestInit, BootCountSurvivesStopStart) {
  const std::string img = path("root.img");
  write_file(img, std::string(16 << 20, '\0'));
  for (uint64_t n = 1; n <= 2; ++n) {
    SCOPED_TRACE("boot " + std::to_string(n));
    ASSERT_NO_FATAL_FAILURE(start_card(img, ",serial=root-b"));
    ASSERT_NO_FATAL_FAILURE(boot(true));
    const Outcome o = stop_hv();
    EXPECT_TRUE(has_line(o.out, "azote-guest: root volume boot-count=" + std::to_string(n) +
                                    " serial=root-b sectors=32768"))
        << o.out;
    stop_card(SIGKILL);
    EXPECT_EQ(count_in(img), std::optional<uint64_t>(n));
  }
}

// A record already on the volume is continued; a damaged one (bad checksum) is not a
// record, so the count restarts at 1. The rest of sector 0 is left alone.
TEST_F(GuestInit, ExistingRecordContinuesDamagedOneRestarts) {
  const std::string img = path("root.img");
  std::string disk(16 << 20, '\0');
  const std::string tail = "partition table stays\x55\xaa";
  disk.replace(512 - tail.size(), tail.size(), tail);
  disk.replace(0, 32, record(41));
  write_file(img, disk);
  ASSERT_NO_FATAL_FAILURE(start_card(img, ",serial=root-c"));
  auto o = run(hv_argv(true, "--no-idle"), kBoot);
  EXPECT_EQ(o.status, 0) << o.out << o.err;
  EXPECT_TRUE(has_line(o.out, "azote-guest: root volume boot-count=42 serial=root-c sectors=32768")) << o.out;
  EXPECT_EQ(count_in(img), std::optional<uint64_t>(42));
  EXPECT_EQ(slurp(img).substr(512 - tail.size(), tail.size()), tail) << "the rest of sector 0 changed";

  ASSERT_EQ(stop_card(SIGTERM).status, 0);
  disk.replace(0, 32, record(41));
  disk[24] = static_cast<char>(disk[24] ^ 1);  // checksum off by one bit
  write_file(img, disk);
  ASSERT_NO_FATAL_FAILURE(start_card(img, ",serial=root-c"));
  o = run(hv_argv(true, "--no-idle"), kBoot);
  EXPECT_EQ(o.status, 0) << o.out << o.err;
  EXPECT_TRUE(has_line(o.out, "azote-guest: root volume boot-count=1 serial=root-c sectors=32768")) << o.out;
  EXPECT_EQ(count_in(img), std::optional<uint64_t>(1));
}

// (c) No block device: says so, then ready and idle until SIGTERM.
TEST_F(GuestInit, NoDeviceNoRootVolume) {
  ASSERT_NO_FATAL_FAILURE(boot(false));
  std::this_thread::sleep_for(200ms);
  ASSERT_TRUE(cpu_ms(hv_->pid())) << "azote-hv exited after ready";
  const Outcome o = stop_hv();
  EXPECT_TRUE(has_line(o.out, "azote-guest: init vcpus=2 memory=128MiB")) << o.out;
  EXPECT_TRUE(has_line(o.out, "azote-guest: no root volume")) << o.out;
  EXPECT_LT(o.out.find("no root volume"), o.out.find("azote-guest: ready")) << o.out;
}

// (d) A read-only root volume: no count is recorded and the image is untouched.
TEST_F(GuestInit, ReadOnlyVolumeRecordsNothing) {
  const std::string img = path("ro.img");
  std::string disk(16 << 20, '\0');
  disk.replace(0, 32, record(7));
  write_file(img, disk);
  ASSERT_NO_FATAL_FAILURE(start_card(img, ",readonly"));
  ASSERT_NO_FATAL_FAILURE(boot(true));
  const Outcome o = stop_hv();
  EXPECT_TRUE(has_line(o.out, "azote-guest: root volume read-only, boot-count not recorded")) << o.out;
  EXPECT_EQ(o.out.find("boot-count="), std::string::npos) << o.out;
  EXPECT_EQ(o.out.find("io-error"), std::string::npos) << o.out;
  EXPECT_TRUE(slurp(img) == disk) << "the read-only image changed";
}

// (e) --no-idle: the same steps, then exit 0 instead of idling; a bad argument is a
// usage error (126).
TEST_F(GuestInit, NoIdleExitsZero) {
  const std::string img = path("root.img");
  write_file(img, std::string(16 << 20, '\0'));
  ASSERT_NO_FATAL_FAILURE(start_card(img, ",serial=root-e"));
  auto o = run(hv_argv(true, "--no-idle"), kBoot);
  ASSERT_FALSE(o.timed_out) << o.out << o.err;
  EXPECT_EQ(o.status, 0) << o.out << o.err;
  EXPECT_TRUE(has_line(o.out, "azote-guest: root volume boot-count=1 serial=root-e sectors=32768")) << o.out;
  EXPECT_TRUE(has_line(o.out, "azote-guest: ready")) << o.out;
  auto none = run(hv_argv(false, "--no-idle"), kBoot);
  EXPECT_EQ(none.status, 0) << none.out << none.err;
  EXPECT_TRUE(has_line(none.out, "azote-guest: no root volume")) << none.out;
  auto bad = run(hv_argv(false, "--idle-not"), kBoot);
  EXPECT_EQ(bad.status, 126) << bad.out << bad.err;
  EXPECT_NE(bad.out.find("unknown argument"), std::string::npos) << bad.out;
  EXPECT_EQ(bad.out.find("ready"), std::string::npos) << bad.out;
}

}  // namespace
}  // namespace azote::test
