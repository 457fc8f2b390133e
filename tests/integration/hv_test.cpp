// Integration tests: the real azote-hv binary booting the built-in guest and small
// PVH payloads on /dev/kvm. Without /dev/kvm they report SKIPPED with the reason.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <thread>

#include "process.hpp"

namespace azote::test {
namespace {

using namespace std::chrono_literals;

const std::string kHv = AZOTE_HV_BIN;

#define REQUIRE_KVM()                                   \
  do {                                                  \
    std::string why;                                    \
    if (!kvm_usable(&why)) GTEST_SKIP() << "SKIPPED: needs KVM (" << why << ")"; \
  } while (0)

int count_lines(const std::string& out, const std::string& line) {
  int n = 0;
  for (const auto& l : lines(out)) n += l == line ? 1 : 0;
  return n;
}

TEST(Hv, HelloPrintsExactLineAndExitsZero) {
  REQUIRE_KVM();
  auto o = run({kHv, "--kernel", "builtin:hello", "--vcpus", "2", "--memory", "128M"});
  ASSERT_FALSE(o.timed_out);
  EXPECT_EQ(o.status, 0) << o.err;
  EXPECT_EQ(count_lines(o.out, "azote-guest: hello vcpus=2 memory=128MiB"), 1) << o.out;
  EXPECT_EQ(o.err, "");
}

TEST(Hv, HelloSeesConfiguredSizes) {
  REQUIRE_KVM();
  for (auto [vcpus, mem, expect] : {std::tuple{"1", "64M", "azote-guest: hello vcpus=1 memory=64MiB"},
                                    std::tuple{"3", "1G", "azote-guest: hello vcpus=3 memory=1024MiB"},
                                    std::tuple{"1", "4G", "azote-guest: hello vcpus=1 memory=4096MiB"}}) {
    auto o = run({kHv, "--kernel", "builtin:hello", "--vcpus", vcpus, "--memory", mem});
    EXPECT_EQ(o.status, 0) << o.err;
    EXPECT_EQ(count_lines(o.out, expect), 1) << "vcpus=" << vcpus << " memory=" << mem << "\n" << o.out;
  }
}

TEST(Hv, RunsWithoutThePit) {
  REQUIRE_KVM();
  auto o = run({kHv, "--kernel", "builtin:smp", "--vcpus", "2", "--memory", "64M", "--no-pit"});
  EXPECT_EQ(o.status, 0) << o.err;
  EXPECT_EQ(count_lines(o.out, "azote-guest: cpu 1 online"), 1) << o.out;
}

TEST(Hv, ExitCodePropagates) {
  REQUIRE_KVM();
  for (int code : {0, 1, 7, 42, 255}) {
    auto o = run({kHv, "--kernel", "builtin:exit", "--cmdline", std::to_string(code), "--memory", "64M"});
    EXPECT_EQ(o.status, code) << o.out << o.err;
  }
}

TEST(Hv, AnyPvhElfWritingToDebugPortExits) {
  REQUIRE_KVM();
  // Minimal 32-bit PVH payloads assembled by the build (tests/integration/payloads).
  auto zero = run({kHv, "--kernel", AZOTE_PVH_EXIT0, "--memory", "32M"});
  EXPECT_EQ(zero.status, 0) << zero.err;
  auto answer = run({kHv, "--kernel", AZOTE_PVH_EXIT42, "--memory", "32M", "--vcpus", "2"});
  EXPECT_EQ(answer.status, 42) << answer.err;
}

TEST(Hv, SmpBringsUpEveryVcpu) {
  REQUIRE_KVM();
  auto o = run({kHv, "--kernel", "builtin:smp", "--vcpus", "2", "--memory", "64M"}, 120s);
  ASSERT_FALSE(o.timed_out) << o.out;
  EXPECT_EQ(o.status, 0) << o.out << o.err;
  EXPECT_EQ(count_lines(o.out, "azote-guest: cpu 0 online"), 1) << o.out;
  EXPECT_EQ(count_lines(o.out, "azote-guest: cpu 1 online"), 1) << o.out;
}

TEST(Hv, CpuProgramMatchesHostDigest) {
  REQUIRE_KVM();
  auto g = run({kHv, "--kernel", "builtin:cpu", "--cmdline", "4", "--memory", "64M"});
  ASSERT_EQ(g.status, 0) << g.err;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(g.out, m, std::regex("azote-guest: cpu mib=4 sha256=([0-9a-f]{64}) cycles=[0-9]+"))) << g.out;
  const std::string guest_digest = m[1];
  auto h = run({AZOTE_CPU_HOST_BIN, "4"});
  ASSERT_EQ(h.status, 0) << h.err;
  ASSERT_TRUE(std::regex_search(h.out, m, std::regex("host: cpu mib=4 sha256=([0-9a-f]{64})"))) << h.out;
  EXPECT_EQ(guest_digest, std::string(m[1]));
}

// One clear line on stderr naming the reason, the vCPU, RIP and instruction bytes;
// the register dump follows (in the log, which is stderr by default).
void expect_diagnostic(const Outcome& o, int status, const std::string& reason) {
  EXPECT_EQ(o.status, status) << o.out << o.err;
  const auto l = lines(o.err);
  ASSERT_FALSE(l.empty());
  EXPECT_NE(l[0].find("azote-hv: vCPU 0: " + reason), std::string::npos) << l[0];
  EXPECT_TRUE(std::regex_search(l[0], std::regex("at rip=0x[0-9a-f]+ .*instruction bytes: [0-9a-f]{2}( [0-9a-f]{2})*$"))) << l[0];
  EXPECT_NE(o.err.find("register dump"), std::string::npos);
  EXPECT_NE(o.err.find("cr3="), std::string::npos);
}

TEST(Hv, TripleFaultIsDiagnosed) {
  REQUIRE_KVM();
  auto o = run({kHv, "--kernel", "builtin:fault", "--cmdline", "triple", "--memory", "64M", "--debug-guest"});
  expect_diagnostic(o, 80, "triple fault");
}

TEST(Hv, UnhandledPortIsDiagnosed) {
  REQUIRE_KVM();
  auto o = run({kHv, "--kernel", "builtin:fault", "--cmdline", "io", "--memory", "64M", "--debug-guest"});
  expect_diagnostic(o, 83, "unhandled port I/O");
  EXPECT_NE(o.err.find("port 0x5a5"), std::string::npos) << o.err;
}

TEST(Hv, UnhandledMmioIsDiagnosed) {
  REQUIRE_KVM();
  auto o = run({kHv, "--kernel", "builtin:fault", "--cmdline", "mmio", "--memory", "64M", "--debug-guest"});
  expect_diagnostic(o, 84, "unhandled MMIO");
  EXPECT_NE(o.err.find("0xd0000000"), std::string::npos) << o.err;
}

// Without --debug-guest azote-hv reads no guest memory once the images are loaded, not
// even the faulting instruction's bytes; the line says so.
TEST(Hv, FaultReportReadsNoGuestMemoryByDefault) {
  REQUIRE_KVM();
  auto o = run({kHv, "--kernel", "builtin:fault", "--cmdline", "triple", "--memory", "64M"});
  EXPECT_EQ(o.status, 80) << o.err;
  const auto l = lines(o.err);
  ASSERT_FALSE(l.empty());
  EXPECT_NE(l[0].find("instruction bytes: not read (azote-hv reads no guest memory after boot; --debug-guest reads them)"),
            std::string::npos)
      << l[0];
  EXPECT_NE(o.err.find("register dump"), std::string::npos);
}

TEST(Hv, GuestExceptionsAreReportedByTheGuest) {
  REQUIRE_KVM();
  auto ud = run({kHv, "--kernel", "builtin:fault", "--cmdline", "ud", "--memory", "64M"});
  EXPECT_EQ(ud.status, 134) << ud.out;
  EXPECT_NE(ud.out.find("azote-guest: exception #UD (vector 6)"), std::string::npos) << ud.out;
  auto pf = run({kHv, "--kernel", "builtin:fault", "--cmdline", "unmapped", "--memory", "64M"});
  EXPECT_EQ(pf.status, 142) << pf.out;
  EXPECT_NE(pf.out.find("azote-guest: exception #PF (vector 14)"), std::string::npos) << pf.out;
  EXPECT_NE(pf.out.find("cr2=0x"), std::string::npos) << pf.out;
}

TEST(Hv, SigtermStopsTheVmCleanly) {
  REQUIRE_KVM();
  // A long user-mode computation, stopped from outside.
  Process p({kHv, "--kernel", "builtin:cpu", "--cmdline", "1000000", "--vcpus", "2", "--memory", "64M"});
  std::this_thread::sleep_for(500ms);
  p.signal(SIGTERM);
  auto o = p.wait(10s);
  EXPECT_FALSE(o.timed_out);
  EXPECT_EQ(o.status, 143) << o.err;
  EXPECT_LT(o.seconds, 5.0);
}

TEST(Hv, ConsoleToFile) {
  REQUIRE_KVM();
  const std::string path = ::testing::TempDir() + "/azote-console.txt";
  auto o = run({kHv, "--kernel", "builtin:hello", "--memory", "64M", "--console", "file:" + path});
  EXPECT_EQ(o.status, 0) << o.err;
  EXPECT_EQ(o.out, "");
  std::ifstream f(path);
  std::string content((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  EXPECT_EQ(count_lines(content, "azote-guest: hello vcpus=1 memory=64MiB"), 1) << content;
}

std::string slurp(const std::string& path) {
  std::ifstream f(path);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

// A guest flooding its console cannot fill the host's disk: a file console keeps at most
// --console-max bytes, the newest, so its tail (what GetConsoleOutput returns) is the
// guest's latest output. Shown for the descriptor the launcher hands over (opened for
// appending, with output from an earlier run in it) and, as the positive control, the
// same flood uncapped.
TEST(Hv, FileConsoleIsCappedKeepingTheNewestOutput) {
  REQUIRE_KVM();
  const std::string dir = ::testing::TempDir() + "/azote-console-cap-" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  const std::string full = dir + "/full.txt", capped = dir + "/capped.txt";
  constexpr int kLines = 1000;
  std::string expect;
  for (int i = 1; i <= kLines; ++i) expect += "azote-guest: line " + std::to_string(i) + "\n";
  ASSERT_GT(expect.size(), 16u << 10);

  auto o = run({kHv, "--kernel", "builtin:print", "--cmdline", std::to_string(kLines), "--memory", "64M", "--console",
                "file:" + full, "--console-max", "0"}, 120s);
  ASSERT_EQ(o.status, 0) << o.err;
  EXPECT_EQ(slurp(full), expect) << "uncapped, the file holds every line";

  // As the launcher hands it over: read-write, appending, with an earlier run's output.
  { std::ofstream(capped) << "from an earlier run\n"; }
  const int fd = ::open(capped.c_str(), O_RDWR | O_APPEND);  // inherited by azote-hv
  ASSERT_GE(fd, 3);
  o = run({kHv, "--kernel", "builtin:print", "--cmdline", std::to_string(kLines), "--memory", "64M", "--console",
           "fd:" + std::to_string(fd), "--console-max", "8K"}, 120s);
  ::close(fd);
  ASSERT_EQ(o.status, 0) << o.err;
  std::string got = slurp(capped);
  EXPECT_LE(got.size(), 8u << 10);
  EXPECT_GE(got.size(), 4u << 10) << "at least the newest half of the cap is kept";
  // The newest bytes, contiguous: the kept text is exactly the end of the whole output.
  ASSERT_LE(got.size(), expect.size());
  EXPECT_TRUE(got == expect.substr(expect.size() - got.size())) << got.substr(0, 200);
  EXPECT_EQ(got.find("from an earlier run"), std::string::npos);

  // file:PATH, opened by azote-hv itself, is capped the same way.
  const std::string own = dir + "/own.txt";
  o = run({kHv, "--kernel", "builtin:print", "--cmdline", std::to_string(kLines), "--memory", "64M", "--console",
           "file:" + own, "--console-max", "16K"}, 120s);
  ASSERT_EQ(o.status, 0) << o.err;
  got = slurp(own);
  EXPECT_LE(got.size(), 16u << 10);
  // 21.9 KB through a 16 KiB cap: restarting at the cap instead of keeping the newest
  // half would leave 5.5 KB.
  EXPECT_GE(got.size(), 8u << 10) << "file:PATH kept less than the newest half";
  EXPECT_TRUE(got == expect.substr(expect.size() - std::min(got.size(), expect.size()))) << got.substr(0, 200);

  // A descriptor open for writing only cannot be read back: still capped, still the
  // newest output, restarted at the cap.
  const std::string wronly = dir + "/wronly.txt";
  o = run({"/bin/sh", "-c", "exec \"$0\" \"$@\" 3>>" + wronly, kHv, "--kernel", "builtin:print", "--cmdline",
           std::to_string(kLines), "--memory", "64M", "--console", "fd:3", "--console-max", "8K"}, 120s);
  ASSERT_EQ(o.status, 0) << o.err;
  got = slurp(wronly);
  EXPECT_LE(got.size(), 8u << 10);
  ASSERT_FALSE(got.empty());
  EXPECT_TRUE(got == expect.substr(expect.size() - got.size())) << got.substr(0, 200);
  std::filesystem::remove_all(dir);
}

TEST(Hv, ConsoleToUnixSocketKeepsEarlyOutput) {
  REQUIRE_KVM();
  const std::string path = ::testing::TempDir() + "/azote-console.sock";
  // smp prints its first line at once and then takes a while on this machine.
  Process p({kHv, "--kernel", "builtin:cpu", "--cmdline", "256", "--memory", "64M", "--console", "unix:" + path});
  int fd = -1;
  for (int i = 0; i < 100 && fd < 0; ++i) {
    std::this_thread::sleep_for(20ms);
    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
    if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      close(fd);
      fd = -1;
    }
  }
  ASSERT_GE(fd, 0) << "could not connect to " << path;
  std::string got;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) got.append(buf, static_cast<size_t>(n));
  close(fd);
  auto o = p.wait(60s);
  EXPECT_EQ(o.status, 0) << o.err;
  EXPECT_NE(got.find("azote-guest: cpu mib=256 sha256="), std::string::npos) << got;
  EXPECT_FALSE(file_exists(path)) << "socket left behind";
}

TEST(Hv, ConfigFileGivesTheSameFields) {
  REQUIRE_KVM();
  const std::string path = ::testing::TempDir() + "/azote-vm.json";
  std::ofstream(path) << R"({"kernel": "builtin:hello", "vcpus": 2, "memory": "96M"})";
  auto o = run({kHv, "--config", path});
  EXPECT_EQ(o.status, 0) << o.err;
  EXPECT_EQ(count_lines(o.out, "azote-guest: hello vcpus=2 memory=96MiB"), 1) << o.out;
  // Flags override the file.
  auto o2 = run({kHv, "--config", path, "--vcpus", "1"});
  EXPECT_EQ(count_lines(o2.out, "azote-guest: hello vcpus=1 memory=96MiB"), 1) << o2.out;
}

TEST(Hv, BadInputGetsClearErrors) {
  struct Case {
    std::vector<std::string> args;
    int status;
    std::string needle;
  };
  const std::string junk = ::testing::TempDir() + "/azote-junk.bin";
  std::ofstream(junk) << std::string(8192, 'x');
  for (const auto& c : std::vector<Case>{
           {{"--vcpus", "0", "--kernel", "builtin:hello"}, 64, "--vcpus"},
           {{"--memory", "lots", "--kernel", "builtin:hello"}, 64, "--memory"},
           {{"--console", "serial", "--kernel", "builtin:hello"}, 64, "--console"},
           {{"--kernel", "/nonexistent/vmlinux"}, 65, "/nonexistent/vmlinux"},
           {{"--kernel", junk}, 65, "neither an ELF"},
           {{"--kernel", "builtin:hello", "--initrd", "/nonexistent/initrd"}, 65, "--initrd"},
           {{"--config", "/nonexistent.json"}, 64, "--config"},
           {{"--frobnicate"}, 64, "--frobnicate"},
       }) {
    std::vector<std::string> argv{kHv};
    argv.insert(argv.end(), c.args.begin(), c.args.end());
    auto o = run(argv);
    EXPECT_EQ(o.status, c.status) << c.needle << ": " << o.err;
    EXPECT_NE(o.err.find(c.needle), std::string::npos) << o.err;
    EXPECT_EQ(lines(o.err).size(), 1u) << o.err;
  }
}

// A named pipe (or anything else that is not a regular file) as --kernel or --initrd:
// opening a FIFO for reading waits for a writer, so a plain open() hung azote-hv for
// ever. It must be refused at once, exit 65, one line naming the option and the path.
TEST(Hv, KernelOrInitrdThatIsNotARegularFileIsRefusedAtOnce) {
  REQUIRE_KVM();
  const std::string fifo = ::testing::TempDir() + "/azote-fifo-" + std::to_string(::getpid());
  std::remove(fifo.c_str());
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0) << std::strerror(errno);
  const std::string dir = ::testing::TempDir();
  struct Case {
    std::vector<std::string> args;
    std::string option, path;
  };
  for (const auto& c : std::vector<Case>{
           {{"--kernel", fifo}, "--kernel", fifo},
           {{"--kernel", "builtin:hello", "--initrd", fifo}, "--initrd", fifo},
           {{"--kernel", dir}, "--kernel", dir},
           {{"--kernel", "builtin:hello", "--initrd", "/dev/null"}, "--initrd", "/dev/null"},
       }) {
    std::vector<std::string> argv{kHv, "--memory", "64M"};
    argv.insert(argv.end(), c.args.begin(), c.args.end());
    auto o = run(argv, 10s);
    EXPECT_FALSE(o.timed_out) << c.option << " " << c.path << ": azote-hv hung";
    EXPECT_EQ(o.status, 65) << o.err;
    EXPECT_NE(o.err.find(c.option), std::string::npos) << o.err;
    EXPECT_NE(o.err.find(c.path + " is not a regular file"), std::string::npos) << o.err;
    EXPECT_EQ(lines(o.err).size(), 1u) << o.err;
  }
  std::remove(fifo.c_str());
}

TEST(Hv, StatsFileCountsExitsAndThreadTime) {
  REQUIRE_KVM();
  const std::string path = ::testing::TempDir() + "/azote-stats.json";
  std::remove(path.c_str());
  auto o = run({kHv, "--kernel", "builtin:cpu", "--cmdline", "16", "--vcpus", "2", "--memory", "64M", "--stats", path});
  ASSERT_EQ(o.status, 0) << o.err;
  std::ifstream f(path);
  std::string j((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  // vCPU 0 printed a line through COM1 (port I/O exits); the computation ran in vCPU 0's
  // thread, so almost all CPU time is there and little elsewhere.
  std::smatch m;
  ASSERT_TRUE(std::regex_search(j, m, std::regex(R"(\{"id": 0, "user_s": ([0-9.]+), "sys_s": ([0-9.]+), "exits": \{"io": ([0-9]+))"))) << j;
  EXPECT_GT(std::stoul(m[3]), 10u);
  const double vcpu0 = std::stod(m[1]) + std::stod(m[2]);
  ASSERT_TRUE(std::regex_search(j, m, std::regex(R"("non_vcpu_cpu_s": ([0-9.]+))"))) << j;
  EXPECT_LT(std::stod(m[1]), vcpu0) << j;
  EXPECT_NE(j.find(R"({"id": 1,)"), std::string::npos) << j;
}

TEST(Hv, HelpDocumentsEveryOption) {
  auto o = run({kHv, "--help"});
  EXPECT_EQ(o.status, 0);
  for (const char* flag : {"--kernel", "builtin:NAME", "--cmdline", "--initrd", "--vcpus", "--memory", "--console",
                           "file:PATH", "unix:PATH", "--config", "--log", "--stats", "--device", "--no-pit", "Exit status"})
    EXPECT_NE(o.out.find(flag), std::string::npos) << flag;
}

}  // namespace
}  // namespace azote::test
