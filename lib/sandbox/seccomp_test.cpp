// seccomp per thread class, in forked children (a filter never comes off): an allowed
// call goes through, a forbidden one ends the process with SIGSYS and one line naming
// the thread and the call, argument checks hold, threads get their own class on top of
// their creator's, log mode lets the call through.
#include "sandbox/seccomp.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <functional>
#include <string>
#include <thread>

namespace azote::sandbox::test {
const ProcessPolicy& policy();
}

namespace azote::sandbox {
namespace {

struct Child {
  int status = 0;
  std::string err;
  bool signalled(int sig) const { return WIFSIGNALED(status) && WTERMSIG(status) == sig; }
  int exit_code() const { return WIFEXITED(status) ? WEXITSTATUS(status) : -1; }
};

// Runs `body` in a child with stderr captured; the child exits 0 unless body exits.
Child in_child(const std::function<void()>& body) {
  int p[2];
  EXPECT_EQ(::pipe2(p, O_CLOEXEC), 0);
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(p[1], 2);
    body();
    ::_exit(0);
  }
  ::close(p[1]);
  Child c;
  char buf[512];
  ssize_t n;
  while ((n = ::read(p[0], buf, sizeof buf)) > 0) c.err.append(buf, static_cast<size_t>(n));
  ::close(p[0]);
  ::waitpid(pid, &c.status, 0);
  return c;
}

void enter(SeccompMode mode, const char* cls) {
  if (!init_process(test::policy(), mode)) ::_exit(90);
  if (!enter_thread(cls, "tester")) ::_exit(91);
}

TEST(Seccomp, AllowedCallsWorkAndAForbiddenOneKillsWithAReport) {
  const Child c = in_child([] {
    enter(SeccompMode::kKill, "main");
    if (::fcntl(0, F_GETFD) < 0) ::_exit(92);  // allowed
    ::syscall(SYS_getppid);                     // not in the list
    ::_exit(93);                                // never reached
  });
  EXPECT_TRUE(c.signalled(SIGSYS)) << "status " << c.status << ": " << c.err;
  EXPECT_NE(c.err.find("sandbox-test: seccomp: thread tester (tid "), std::string::npos) << c.err;
  EXPECT_NE(c.err.find("made forbidden system call 110 (getppid); killing the process"), std::string::npos) << c.err;
}

TEST(Seccomp, ArgumentChecksHold) {
  const Child c = in_child([] {
    enter(SeccompMode::kKill, "main");
    (void)::fcntl(0, F_SETFD, FD_CLOEXEC);  // fcntl, but not F_GETFD
    ::_exit(93);
  });
  EXPECT_TRUE(c.signalled(SIGSYS)) << c.err;
  EXPECT_NE(c.err.find("(fcntl)"), std::string::npos) << c.err;
}

TEST(Seccomp, NoExecutableMappingsAndNoNewProcesses) {
  const Child m = in_child([] {
    enter(SeccompMode::kKill, "main");
    (void)::mmap(nullptr, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ::_exit(93);
  });
  EXPECT_TRUE(m.signalled(SIGSYS)) << m.err;
  EXPECT_NE(m.err.find("(mmap)"), std::string::npos) << m.err;
  const Child f = in_child([] {
    enter(SeccompMode::kKill, "main");
    (void)::fork();  // clone without CLONE_THREAD
    ::_exit(93);
  });
  EXPECT_TRUE(f.signalled(SIGSYS)) << f.err;
  EXPECT_NE(f.err.find("(clone)"), std::string::npos) << f.err;
}

TEST(Seccomp, ThreadsAddTheirClassAndEveryThreadIsFiltered) {
  const Child c = in_child([] {
    enter(SeccompMode::kKill, "main");
    std::string modes;
    std::thread t([&] {
      if (!enter_thread("worker", "worker0")) ::_exit(94);
      modes = thread_seccomp_modes();  // openat: allowed for main, not for worker
    });
    t.join();
    ::_exit(93);
  });
  EXPECT_TRUE(c.signalled(SIGSYS)) << c.err;
  EXPECT_NE(c.err.find("thread worker0"), std::string::npos) << c.err;
  EXPECT_NE(c.err.find("(openat)"), std::string::npos) << c.err;

  const Child all = in_child([] {
    enter(SeccompMode::kKill, "main");
    std::thread t([] {
      if (!enter_thread("worker", "worker0")) ::_exit(94);
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    const std::string modes = thread_seccomp_modes();
    t.join();
    // Both threads, both in filter mode (2).
    size_t twos = 0;
    for (size_t at = modes.find(":2"); at != std::string::npos; at = modes.find(":2", at + 1)) ++twos;
    ::_exit(twos == 2 && modes.find(":0") == std::string::npos ? 0 : 95);
  });
  EXPECT_EQ(all.exit_code(), 0) << all.status << " " << all.err;
}

// A SIGSYS sent with kill() is not a filter's trap: no report, no death (a jailed process
// is PID 1 of its namespace; nobody should end it by sending a signal it handles).
TEST(Seccomp, AKilledSigsysIsNotAReport) {
  int ready[2];
  ASSERT_EQ(::pipe2(ready, O_CLOEXEC), 0);
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(p[1], 2);
    enter(SeccompMode::kKill, "main");
    (void)!::write(ready[1], "r", 1);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    ::_exit(0);
  }
  ::close(p[1]);
  ::close(ready[1]);
  char c;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  ASSERT_EQ(::kill(pid, SIGSYS), 0);
  std::string err;
  char buf[256];
  ssize_t n;
  while ((n = ::read(p[0], buf, sizeof buf)) > 0) err.append(buf, static_cast<size_t>(n));
  int status = 0;
  ::waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status << " " << err;
  EXPECT_EQ(err.find("seccomp"), std::string::npos) << err;
  ::close(p[0]);
  ::close(ready[0]);
}

TEST(Seccomp, LogModeLetsTheCallThrough) {
  const Child c = in_child([] {
    enter(SeccompMode::kLog, "main");
    ::syscall(SYS_getppid);
    ::_exit(7);
  });
  EXPECT_EQ(c.exit_code(), 7) << c.err;
}

TEST(Seccomp, UnknownClassAndModeAreRefused) {
  EXPECT_FALSE(parse_seccomp_mode("off"));
  EXPECT_EQ(*parse_seccomp_mode("log"), SeccompMode::kLog);
  const Child c = in_child([] {
    if (!init_process(test::policy(), SeccompMode::kKill)) ::_exit(90);
    auto r = enter_thread("nonesuch");
    ::_exit(!r && r.error().message().find("no thread class \"nonesuch\"") != std::string::npos ? 0 : 96);
  });
  EXPECT_EQ(c.exit_code(), 0) << c.err;
}

TEST(Seccomp, SyscallNamesComeFromTheTable) {
  EXPECT_STREQ(syscall_name(0), "read");
  EXPECT_STREQ(syscall_name(59), "execve");
  EXPECT_EQ(syscall_name(-1), nullptr);
  EXPECT_EQ(syscall_name(100000), nullptr);
}

}  // namespace
}  // namespace azote::sandbox
