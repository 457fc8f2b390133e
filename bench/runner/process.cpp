#include "process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

namespace azote::bench {
namespace {

double now_s() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

double tv_s(const timeval& tv) {
  return static_cast<double>(tv.tv_sec) + static_cast<double>(tv.tv_usec) * 1e-6;
}

// Owns one fd; the runner is small enough that this is all the RAII it needs.
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }
  int get() const { return fd_; }
  void reset(int fd = -1) {
    if (fd_ >= 0) {
      close(fd_);
    }
    fd_ = fd;
  }

 private:
  int fd_;
};

// Mirrors struct ptrace_syscall_info of <linux/ptrace.h> (entry part), which cannot be included
// together with <sys/ptrace.h>.
struct SyscallInfo {
  std::uint8_t op;
  std::uint8_t pad[3];
  std::uint32_t arch;
  std::uint64_t instruction_pointer;
  std::uint64_t stack_pointer;
  std::uint64_t nr;
  std::uint64_t args[6];
  std::uint32_t ret_data;
};
constexpr std::uint8_t kSyscallInfoEntry = 1;  // PTRACE_SYSCALL_INFO_ENTRY

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Child side of fork: only async-signal-safe calls until execvp.
[[noreturn]] void exec_child(const RunSpec& spec, char* const* argv, int out_w, int err_w,
                             int devnull, const sigset_t& old_mask) {
  sigprocmask(SIG_SETMASK, &old_mask, nullptr);  // the mask survives exec: give back the caller's
  if (spec.smaps_at_exit && ptrace(PTRACE_TRACEME, 0, nullptr, nullptr) != 0) {
    int e = errno;
    (void)!write(err_w, &e, sizeof e);
    _exit(127);
  }
  setpgid(0, 0);
  dup2(devnull, 0);
  dup2(out_w, 1);
  dup2(out_w, 2);
  execvp(argv[0], argv);
  int e = errno;
  (void)!write(err_w, &e, sizeof e);
  _exit(127);
}

}  // namespace

std::string describe_status(const RunResult& r) {
  if (!r.started) {
    return "not started: " + r.error;
  }
  std::string s;
  if (r.term_signal != 0) {
    s = "signal " + std::to_string(r.term_signal);
  } else {
    s = "exit " + std::to_string(r.exit_code);
  }
  if (r.timed_out) {
    s += " (timeout)";
  } else if (r.stopped_by_us) {
    s += " (stopped after match)";
  }
  return s;
}

RunResult run_process(const RunSpec& spec) {
  RunResult r;
  if (spec.argv.empty()) {
    r.error = "empty argv";
    return r;
  }
  std::vector<char*> argv;
  argv.reserve(spec.argv.size() + 1);
  for (const auto& a : spec.argv) {
    argv.push_back(const_cast<char*>(a.c_str()));
  }
  argv.push_back(nullptr);

  int out[2];
  int errp[2];
  if (pipe2(out, O_CLOEXEC) != 0 || pipe2(errp, O_CLOEXEC) != 0) {
    r.error = std::string("pipe: ") + std::strerror(errno);
    return r;
  }
  Fd out_r(out[0]);
  Fd out_w(out[1]);
  Fd err_r(errp[0]);
  Fd err_w(errp[1]);
  Fd devnull(open("/dev/null", O_RDONLY | O_CLOEXEC));

  // Traced runs: every ptrace stop sends SIGCHLD; reading it from a signalfd in the same poll()
  // as the output pipe wakes the runner at once instead of on a timer.
  sigset_t chld;
  sigset_t old_mask;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  sigprocmask(SIG_BLOCK, &chld, &old_mask);
  Fd sigfd(spec.smaps_at_exit ? signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK) : -1);
  struct MaskRestore {
    const sigset_t& m;
    ~MaskRestore() { sigprocmask(SIG_SETMASK, &m, nullptr); }
  } restore{old_mask};

  const double t0 = now_s();
  const pid_t pid = fork();
  if (pid < 0) {
    r.error = std::string("fork: ") + std::strerror(errno);
    return r;
  }
  if (pid == 0) {
    exec_child(spec, argv.data(), out_w.get(), err_w.get(), devnull.get(), old_mask);
  }
  out_w.reset();
  err_w.reset();

  // exec failures come back through the close-on-exec pipe; a successful exec closes it empty.
  int child_errno = 0;
  ssize_t n = read(err_r.get(), &child_errno, sizeof child_errno);
  if (n == static_cast<ssize_t>(sizeof child_errno)) {
    int st = 0;
    waitpid(pid, &st, 0);
    r.error = "exec " + spec.argv[0] + ": " + std::strerror(child_errno);
    return r;
  }
  r.started = true;
  fcntl(out_r.get(), F_SETFL, O_NONBLOCK);

  // Timing mode waits on a pidfd so the exit wakes us at once. Traced children are reaped with
  // wait4(__WALL) instead, polled every millisecond.
  Fd pidfd(spec.smaps_at_exit ? -1 : static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));

  const double deadline = t0 + spec.timeout_s;
  double kill_at = 0;  // when set: SIGKILL the child at this time if it is still there
  bool out_open = true;
  bool options_set = false;
  std::set<pid_t> known_threads{pid};
  const bool trace_syscalls = spec.smaps_at_exit && spec.snapshot_before_munmap_bytes > 0;
  std::string window;  // tail of the output, to match `until` across read boundaries
  char buf[65536];

  auto signal_child = [&](int sig) {
    kill(pid, sig);
  };

  rusage ru{};
  int status = 0;
  bool reaped = false;

  while (!reaped) {
    const double t = now_s();
    if (!r.timed_out && t >= deadline) {
      r.timed_out = true;
      signal_child(SIGKILL);
    }
    if (kill_at > 0 && t >= kill_at) {
      signal_child(SIGKILL);
      kill_at = 0;
    }

    pollfd fds[3];
    nfds_t nfds = 0;
    if (sigfd.get() >= 0) {
      fds[nfds++] = {sigfd.get(), POLLIN, 0};
    }
    if (out_open) {
      fds[nfds++] = {out_r.get(), POLLIN, 0};
    }
    if (pidfd.get() >= 0) {
      fds[nfds++] = {pidfd.get(), POLLIN, 0};
    }
    double wait_s = deadline - t;
    if (kill_at > 0) {
      wait_s = std::min(wait_s, kill_at - t);
    }
    if (pidfd.get() < 0) {
      // No pidfd and no signalfd: poll the child. With a signalfd, still look now and then in
      // case a SIGCHLD was merged with one already read.
      wait_s = std::min(wait_s, sigfd.get() >= 0 ? 0.05 : 0.001);
    }
    int timeout_ms = wait_s <= 0 ? 0 : static_cast<int>(wait_s * 1000) + 1;
    if (r.timed_out) {
      timeout_ms = 10;
    }
    poll(fds, nfds, timeout_ms);
    if (sigfd.get() >= 0) {
      signalfd_siginfo si[16];
      while (read(sigfd.get(), si, sizeof si) > 0) {
      }
    }

    // Drain output.
    while (out_open) {
      ssize_t got = read(out_r.get(), buf, sizeof buf);
      if (got > 0) {
        const double t_read = now_s();
        const std::string_view chunk(buf, static_cast<std::size_t>(got));
        if (r.output.size() < spec.output_limit) {
          r.output.append(chunk.substr(0, spec.output_limit - r.output.size()));
        }
        if (!spec.until.empty() && !r.matched) {
          window.append(chunk);
          if (window.find(spec.until) != std::string::npos) {
            r.matched = true;
            r.match_s = t_read - t0;
            r.stopped_by_us = true;
            signal_child(SIGTERM);
            kill_at = t_read + 2.0;
          } else if (window.size() > spec.until.size()) {
            window.erase(0, window.size() - spec.until.size());
          }
        }
        continue;
      }
      if (got == 0) {
        out_open = false;
      }
      break;  // EAGAIN or EOF or error
    }

    // Reap / handle ptrace stops.
    for (;;) {
      int st = 0;
      rusage tru{};
      const pid_t w = wait4(spec.smaps_at_exit ? -1 : pid, &st, __WALL | WNOHANG, &tru);
      if (w <= 0) {
        break;
      }
      if (WIFEXITED(st) || WIFSIGNALED(st)) {
        if (w == pid) {
          r.wall_s = now_s() - t0;
          status = st;
          ru = tru;
          reaped = true;
          break;
        }
        known_threads.erase(w);
        continue;
      }
      if (!WIFSTOPPED(st)) {
        continue;
      }
      const int sig = WSTOPSIG(st);
      const int event = st >> 16;
      int deliver = 0;
      if (!options_set && w == pid) {
        // The SIGTRAP after exec: from here on, follow threads and stop them at exit.
        ptrace(PTRACE_SETOPTIONS, pid, nullptr,
               PTRACE_O_TRACEEXIT | PTRACE_O_TRACECLONE | PTRACE_O_EXITKILL |
                   (trace_syscalls ? PTRACE_O_TRACESYSGOOD : 0));
        options_set = true;
      } else if (trace_syscalls && sig == (SIGTRAP | 0x80)) {
        SyscallInfo info{};
        const long got = ptrace(PTRACE_GET_SYSCALL_INFO, w, reinterpret_cast<void*>(sizeof info), &info);
        if (got > 0 && info.op == kSyscallInfoEntry && info.nr == SYS_munmap &&
            info.args[1] >= spec.snapshot_before_munmap_bytes) {
          std::string snap = read_file("/proc/" + std::to_string(w) + "/smaps");
          if (!snap.empty()) {
            r.munmap_snapshots.push_back(std::move(snap));
          }
        }
      } else if (event == PTRACE_EVENT_EXIT) {
        std::string s = read_file("/proc/" + std::to_string(w) + "/smaps");
        if (!s.empty()) {
          r.smaps = std::move(s);
        }
      } else if (event != 0) {
        // clone and other events: just continue
      } else if (sig == SIGSTOP && known_threads.count(w) == 0) {
        known_threads.insert(w);  // a new thread's first stop
      } else if (sig != SIGTRAP) {
        deliver = sig;  // an ordinary signal: pass it on
      }
      ptrace(trace_syscalls ? PTRACE_SYSCALL : PTRACE_CONT, w, nullptr,
             reinterpret_cast<void*>(static_cast<long>(deliver)));
    }
  }
  // Whatever is left in the pipe (the child is gone, so this ends).
  while (out_open) {
    ssize_t got = read(out_r.get(), buf, sizeof buf);
    if (got <= 0) {
      break;
    }
    if (r.output.size() < spec.output_limit) {
      r.output.append(buf, std::min(static_cast<std::size_t>(got), spec.output_limit - r.output.size()));
    }
  }

  if (WIFEXITED(status)) {
    r.exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    r.term_signal = WTERMSIG(status);
  }
  r.user_s = tv_s(ru.ru_utime);
  r.sys_s = tv_s(ru.ru_stime);
  r.maxrss_kib = ru.ru_maxrss;
  if (r.timed_out) {
    r.error = "timed out after " + std::to_string(spec.timeout_s) + " s";
  }
  return r;
}

}  // namespace azote::bench
