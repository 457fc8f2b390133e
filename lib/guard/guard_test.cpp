// The write guard in the running kernel, as root (the strongest caller): with each
// mechanism the host offers, opening a protected file for writing is refused and
// reported while reading is not, a protected directory admits only its writer, and
// nothing is guarded once the guard is gone; with the BPF LSM also truncate, unlink,
// rename and mounting over. A mechanism the kernel lacks: SKIPPED with its reason.
#include "guard/guard.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

namespace azote::guard {
namespace {

class Guard : public ::testing::TestWithParam<Mechanism> {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "SKIPPED: the write guard needs root";
    dir_ = "/tmp/azote-guard-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++);
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_ + "/d");
    std::ofstream(dir_ + "/bin") << "a binary";
    std::ofstream(dir_ + "/other") << "another";
    std::ofstream(dir_ + "/d/secret") << "a secret";
    auto g = WriteGuard::start(GetParam());
    if (!g && g.error().code == GuardErrc::kUnavailable)
      GTEST_SKIP() << "SKIPPED: no " << to_string(GetParam()) << " here: " << g.error().message();
    ASSERT_TRUE(g) << g.error().message();
    guard_ = std::move(g).value();
    ASSERT_EQ(guard_->mechanism(), GetParam());
  }
  void TearDown() override {
    guard_.reset();  // nothing guarded any more: the files can go
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }
  std::string p(const std::string& n) const { return dir_ + "/" + n; }
  static int attempt(int r) { return r < 0 ? errno : 0; }
  static int open_errno(const std::string& path, int flags) {
    const int fd = ::open(path.c_str(), flags | O_CLOEXEC, 0600);
    const int e = fd < 0 ? errno : 0;
    if (fd >= 0) ::close(fd);
    return e;
  }
  std::vector<Denial> denials() {
    // fanotify's refusals are queued by its thread as it answers: already there.
    return guard_->drain();
  }
  static inline int counter_ = 0;
  std::string dir_;
  std::unique_ptr<WriteGuard> guard_;
};

TEST_P(Guard, WriteOpensOfAProtectedFileAreRefusedEvenToRootAndReported) {
  ASSERT_TRUE(guard_->protect(p("bin"), std::nullopt, false));
  EXPECT_EQ(open_errno(p("bin"), O_RDONLY), 0) << "reading must stay possible";
  EXPECT_EQ(open_errno(p("bin"), O_WRONLY), EPERM);
  EXPECT_EQ(open_errno(p("bin"), O_RDWR | O_APPEND), EPERM);
  EXPECT_EQ(open_errno(p("bin"), O_RDONLY | O_TRUNC), EPERM);
  std::ifstream in(p("bin"));
  EXPECT_EQ(std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>()), "a binary");
  const auto ds = denials();
  ASSERT_EQ(ds.size(), 3u);
  for (const auto& d : ds) {
    EXPECT_EQ(d.op, "write");
    EXPECT_EQ(d.path, p("bin"));
    EXPECT_EQ(d.uid, 0u);
    EXPECT_EQ(d.exe, std::filesystem::read_symlink("/proc/self/exe").string());
    EXPECT_FALSE(d.entry);
  }
  EXPECT_TRUE(guard_->drain().empty());
  EXPECT_EQ(open_errno(p("other"), O_WRONLY), 0) << "an unprotected neighbour";
}

TEST_P(Guard, AProtectedDirectoryAdmitsOnlyItsWriter) {
  constexpr uid_t kWriter = 2000000002;
  ASSERT_EQ(::chown(p("d").c_str(), kWriter, kWriter), 0);
  ASSERT_EQ(::chown(p("d/secret").c_str(), kWriter, kWriter), 0);
  ASSERT_TRUE(guard_->protect(p("d"), kWriter, true));
  EXPECT_EQ(open_errno(p("d/secret"), O_WRONLY), EPERM);
  EXPECT_EQ(open_errno(p("d/secret"), O_RDONLY), 0);
  bool entry = false;
  for (const auto& d : denials()) entry = entry || (d.entry && d.path == p("d"));
  EXPECT_TRUE(entry);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    if (::setresgid(kWriter, kWriter, kWriter) != 0 || ::setresuid(kWriter, kWriter, kWriter) != 0) ::_exit(2);
    if (open_errno(p("d/secret"), O_WRONLY | O_TRUNC) != 0) ::_exit(3);
    if (open_errno(p("d/made"), O_WRONLY | O_CREAT) != 0) ::_exit(4);
    ::_exit(0);
  }
  int st = 0;
  ASSERT_EQ(::waitpid(child, &st, 0), child);
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "the writer was refused (step " << WEXITSTATUS(st) << ")";
  // Nothing of the writer's was refused (fanotify's helper may have seen its new entry).
  for (const auto& d : guard_->drain()) EXPECT_FALSE(d.refused) << d.op << " " << d.why;
}

TEST_P(Guard, NothingIsGuardedOnceTheGuardIsGone) {
  ASSERT_TRUE(guard_->protect(p("bin"), std::nullopt, false));
  EXPECT_EQ(open_errno(p("bin"), O_WRONLY), EPERM);
  guard_.reset();
  EXPECT_EQ(open_errno(p("bin"), O_WRONLY), 0);
}

// fanotify's helper process dies (killed): its group goes with it, so opens are neither
// refused nor left waiting, and the guard says it is gone.
class GuardFanotify : public Guard {};
TEST_P(GuardFanotify, AHelperThatDiesLeavesNothingWaitingAndSaysSo) {
  ASSERT_TRUE(guard_->protect(p("bin"), std::nullopt, false));
  EXPECT_EQ(open_errno(p("bin"), O_WRONLY), EPERM);
  (void)guard_->drain();
  pid_t helper = 0;
  for (const auto& e : std::filesystem::directory_iterator("/proc")) {
    std::ifstream stat(e.path() / "stat");
    std::string line;
    if (!std::getline(stat, line)) continue;
    const size_t close = line.rfind(')');
    if (close == std::string::npos || line.find("(azote-guard)") == std::string::npos) continue;
    std::istringstream rest(line.substr(close + 2));
    char state;
    pid_t ppid = 0;
    rest >> state >> ppid;
    if (ppid == ::getpid()) helper = static_cast<pid_t>(std::stol(e.path().filename().string()));
  }
  ASSERT_GT(helper, 0) << "no azote-guard helper among this process's children";
  ASSERT_EQ(::kill(helper, SIGKILL), 0);
  ASSERT_EQ(::waitpid(helper, nullptr, 0), helper);
  EXPECT_EQ(open_errno(p("bin"), O_WRONLY), 0) << "unguarded once the helper is gone, and not hung";
  EXPECT_TRUE(guard_->drain().empty());
  EXPECT_TRUE(guard_->gone());
}
// What fanotify cannot refuse is still seen and reported as such: a protected file
// unlinked or renamed, its mode changed; an entry created or removed in a protected
// directory.
TEST_P(GuardFanotify, WhatItCannotRefuseIsSeenAndReportedAsNotRefused) {
  ASSERT_TRUE(guard_->protect(p("bin"), std::nullopt, false));
  ASSERT_TRUE(guard_->protect(p("other"), std::nullopt, false));
  ASSERT_TRUE(guard_->protect(p("d"), 2000000002u, true));
  ASSERT_EQ(::chmod(p("bin").c_str(), 0600), 0);
  ASSERT_EQ(::truncate(p("bin").c_str(), 1), 0);
  ASSERT_EQ(::rename(p("other").c_str(), p("other.moved").c_str()), 0);
  ASSERT_EQ(::unlink(p("d/secret").c_str()), 0);
  std::ofstream(p("d/planted")) << "x";  // created (then its open for writing refused)
  std::multiset<std::string> seen;
  for (int i = 0; i < 50 && seen.size() < 5; ++i) {
    for (const auto& d : guard_->drain())
      if (!d.refused) seen.insert(d.path + " " + d.why);
    if (seen.size() < 5) ::usleep(10'000);
  }
  EXPECT_EQ(seen.count(p("bin") + " metadata changed"), 1u);
  EXPECT_GE(seen.count(p("bin") + " modified"), 1u) << "truncate(2) by path";
  EXPECT_EQ(seen.count(p("other") + " renamed"), 1u);
  EXPECT_EQ(seen.count(p("d") + " entry removed: secret"), 1u);
  EXPECT_EQ(seen.count(p("d") + " entry created: planted"), 1u);
}

INSTANTIATE_TEST_SUITE_P(Mechanisms, GuardFanotify, ::testing::Values(Mechanism::kFanotify),
                         [](const auto&) { return std::string("Fanotify"); });

// Only the BPF LSM traps what does not open the file (fanotify traps opens only).
class GuardBpfLsm : public Guard {};
TEST_P(GuardBpfLsm, NoOtherChangeGetsThroughEither) {
  ASSERT_TRUE(guard_->protect(p("bin"), std::nullopt, false));
  ASSERT_TRUE(guard_->protect(p("d"), 2000000002u, true));
  EXPECT_EQ(attempt(::truncate(p("bin").c_str(), 0)), EPERM);
  EXPECT_EQ(attempt(::unlink(p("bin").c_str())), EPERM);
  EXPECT_EQ(attempt(::rename(p("bin").c_str(), p("moved").c_str())), EPERM);
  EXPECT_EQ(attempt(::rename(p("other").c_str(), p("bin").c_str())), EPERM) << "replaced by a rename";
  EXPECT_EQ(attempt(::mount(p("other").c_str(), p("bin").c_str(), nullptr, MS_BIND, nullptr)), EPERM);
  EXPECT_EQ(open_errno(p("d/new"), O_WRONLY | O_CREAT), EPERM);
  EXPECT_FALSE(std::filesystem::exists(p("d/new")));
  EXPECT_EQ(attempt(::unlink(p("d/secret").c_str())), EPERM);
  EXPECT_EQ(attempt(::mkdir(p("d/sub").c_str(), 0700)), EPERM);
  EXPECT_EQ(attempt(::rmdir(p("d").c_str())), EPERM);
  std::multiset<std::string> ops;
  for (const auto& d : denials()) ops.insert(d.op);
  EXPECT_EQ(ops.count("truncate"), 1u);
  EXPECT_EQ(ops.count("rename"), 2u);
  EXPECT_EQ(ops.count("mount"), 1u);
  EXPECT_GE(ops.count("create"), 2u);
}

INSTANTIATE_TEST_SUITE_P(Mechanisms, GuardBpfLsm, ::testing::Values(Mechanism::kBpfLsm),
                         [](const auto&) { return std::string("BpfLsm"); });
INSTANTIATE_TEST_SUITE_P(Mechanisms, Guard, ::testing::Values(Mechanism::kBpfLsm, Mechanism::kFanotify),
                         [](const auto& p) { return std::string(p.param == Mechanism::kBpfLsm ? "BpfLsm" : "Fanotify"); });

}  // namespace
}  // namespace azote::guard
