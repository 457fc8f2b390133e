#include "sandbox/seccomp.hpp"

#include <dirent.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <seccomp.h>
#include <signal.h>
#include <sys/mman.h>
#include <malloc.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <vector>

#include "base/unique_fd.hpp"

namespace azote::sandbox {
namespace {

struct State {
  const ProcessPolicy* policy = nullptr;
  SeccompMode mode = SeccompMode::kKill;
  // Each class compiled once, before any filter exists (compiling needs memfd and
  // read, which a worker's filter may not allow).
  std::map<std::string, std::vector<sock_filter>, std::less<>> programs;
};
State& state() {
  static State s;
  return s;
}
char g_process[32];  // for the SIGSYS handler: no allocation there
constexpr int kSysSeccomp = 1;  // si_code SYS_SECCOMP (asm-generic/siginfo.h; glibc does not name it)

scmp_compare to_scmp(ArgOp op) {
  switch (op) {
    case ArgOp::kEq: return SCMP_CMP_EQ;
    case ArgOp::kNe: return SCMP_CMP_NE;
    case ArgOp::kLt: return SCMP_CMP_LT;
    case ArgOp::kLe: return SCMP_CMP_LE;
    case ArgOp::kGt: return SCMP_CMP_GT;
    case ArgOp::kGe: return SCMP_CMP_GE;
    case ArgOp::kMaskedEq: return SCMP_CMP_MASKED_EQ;
  }
  return SCMP_CMP_EQ;
}

Result<std::vector<sock_filter>, SandboxError> compile(const ClassPolicy& cls, SeccompMode mode) {
  const std::string what = "seccomp class \"" + std::string(cls.name) + "\"";
  scmp_filter_ctx ctx = seccomp_init(mode == SeccompMode::kLog ? SCMP_ACT_LOG : SCMP_ACT_TRAP);
  if (ctx == nullptr) return make_error(SandboxErrc::kSeccomp, what + ": seccomp_init failed");
  struct Release {
    scmp_filter_ctx c;
    ~Release() { seccomp_release(c); }
  } release{ctx};
  if (int rc = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS); rc != 0)
    return make_error(SandboxErrc::kSeccomp, what + ": bad-arch action", -rc);
  for (const Rule& r : cls.rules) {
    std::vector<scmp_arg_cmp> cmps;
    for (const ArgCheck& a : r.args) {
      scmp_arg_cmp c{};
      c.arg = a.index;
      c.op = to_scmp(a.op);
      if (a.op == ArgOp::kMaskedEq) {
        c.datum_a = a.mask;
        c.datum_b = a.value;
      } else {
        c.datum_a = a.value;
      }
      cmps.push_back(c);
    }
    const uint32_t action = r.errno_value == 0 ? SCMP_ACT_ALLOW : SCMP_ACT_ERRNO(static_cast<uint16_t>(r.errno_value));
    const int rc = seccomp_rule_add_array(ctx, action, static_cast<int>(r.nr),
                                          static_cast<unsigned>(cmps.size()), cmps.empty() ? nullptr : cmps.data());
    // -EEXIST: the same unconditional rule twice (two inherited classes both allow
    // it) is harmless.
    if (rc != 0 && rc != -EEXIST) {
      const char* n = syscall_name(r.nr);
      return make_error(SandboxErrc::kSeccomp,
                        what + ": rule for " + (n ? n : std::to_string(r.nr)) + " refused by libseccomp", -rc);
    }
  }
  UniqueFd mem(static_cast<int>(::syscall(SYS_memfd_create, "seccomp-bpf", MFD_CLOEXEC)));
  if (!mem) return errno_error(SandboxErrc::kSeccomp, what + ": memfd_create");
  if (int rc = seccomp_export_bpf(ctx, mem.get()); rc != 0)
    return make_error(SandboxErrc::kSeccomp, what + ": exporting the BPF program", -rc);
  const off_t size = ::lseek(mem.get(), 0, SEEK_END);
  if (size <= 0 || size % static_cast<off_t>(sizeof(sock_filter)) != 0)
    return make_error(SandboxErrc::kSeccomp, what + ": libseccomp exported " + std::to_string(size) + " bytes");
  std::vector<sock_filter> prog(static_cast<size_t>(size) / sizeof(sock_filter));
  if (::pread(mem.get(), prog.data(), static_cast<size_t>(size), 0) != size)
    return errno_error(SandboxErrc::kSeccomp, what + ": reading the BPF program back");
  return prog;
}

long install(const std::vector<sock_filter>& prog) {
  sock_fprog fprog{};
  fprog.len = static_cast<unsigned short>(prog.size());
  fprog.filter = const_cast<sock_filter*>(prog.data());
  return ::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &fprog);
}

// --- the SIGSYS reporter: async-signal-safe only ----------------------------------

size_t put(char* buf, size_t at, size_t cap, const char* s) {
  while (*s != '\0' && at + 1 < cap) buf[at++] = *s++;
  return at;
}
size_t put_num(char* buf, size_t at, size_t cap, long v) {
  char tmp[24];
  size_t n = 0;
  unsigned long u = v < 0 ? static_cast<unsigned long>(-v) : static_cast<unsigned long>(v);
  do {
    tmp[n++] = static_cast<char>('0' + u % 10);
    u /= 10;
  } while (u != 0 && n < sizeof tmp);
  if (v < 0 && at + 1 < cap) buf[at++] = '-';
  while (n > 0 && at + 1 < cap) buf[at++] = tmp[--n];
  return at;
}

void on_sigsys(int, siginfo_t* info, void*) {
  // Only a filter's trap: a SIGSYS sent with kill() is not a report (and, for a PID-1
  // process, would otherwise be a way for anyone with kill rights to end it).
  if (info->si_code != kSysSeccomp) return;
  const int saved = errno;
  char name[17] = {};
  (void)::prctl(PR_GET_NAME, name, 0, 0, 0);
  char line[256];
  size_t n = 0;
  n = put(line, n, sizeof line, g_process);
  n = put(line, n, sizeof line, ": seccomp: thread ");
  n = put(line, n, sizeof line, name);
  n = put(line, n, sizeof line, " (tid ");
  n = put_num(line, n, sizeof line, static_cast<long>(::syscall(SYS_gettid)));
  n = put(line, n, sizeof line, ") made forbidden system call ");
  n = put_num(line, n, sizeof line, info->si_syscall);
  const char* sn = syscall_name(info->si_syscall);
  n = put(line, n, sizeof line, " (");
  n = put(line, n, sizeof line, sn ? sn : "unknown");
  n = put(line, n, sizeof line, "); killing the process\n");
  (void)!::write(STDERR_FILENO, line, n);
  // From here on every system call kills the process with SIGSYS; the first is the
  // rt_sigreturn that ends this handler.
  static sock_filter kill_all[] = {BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS)};
  sock_fprog prog{1, kill_all};
  (void)::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog);
  errno = saved;
}

}  // namespace

Result<SeccompMode, SandboxError> parse_seccomp_mode(std::string_view s) {
  if (s == "kill") return SeccompMode::kKill;
  if (s == "log") return SeccompMode::kLog;
  return make_error(SandboxErrc::kUsage, "--seccomp " + std::string(s) +
                                             ": expected \"kill\" (the default) or \"log\" (debugging only)");
}

const char* to_string(SeccompMode m) { return m == SeccompMode::kLog ? "log" : "kill"; }

namespace {
constexpr int kNoTrim = 0x7fffffff;  // M_TRIM_THRESHOLD (an int): larger than any top chunk here
}  // namespace

Result<void, SandboxError> init_process(const ProcessPolicy& policy, SeccompMode mode) {
  State& s = state();
  if (s.policy != nullptr) return make_error(SandboxErrc::kSeccomp, "seccomp: init_process called twice");
  for (const ClassPolicy& c : policy.classes) {
    auto prog = compile(c, mode);
    if (!prog) return Unexpected{prog.error()};
    s.programs.emplace(std::string(c.name), std::move(prog).value());
  }
  std::strncpy(g_process, std::string(policy.process).c_str(), sizeof g_process - 1);
  struct sigaction sa{};
  sa.sa_sigaction = on_sigsys;
  sa.sa_flags = SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  if (::sigaction(SIGSYS, &sa, nullptr) != 0) return errno_error(SandboxErrc::kSeccomp, "sigaction(SIGSYS)");
  sigset_t sys;
  sigemptyset(&sys);
  sigaddset(&sys, SIGSYS);
  ::pthread_sigmask(SIG_UNBLOCK, &sys, nullptr);  // a blocked SIGSYS would kill unreported
  // Required to install filters without CAP_SYS_ADMIN; inherited by every thread.
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return errno_error(SandboxErrc::kSeccomp, "PR_SET_NO_NEW_PRIVS");
  // No core dump (guest memory, keys), and no other process of this uid may ptrace this
  // one or open its /proc/PID/mem.
  if (::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) return errno_error(SandboxErrc::kSeccomp, "PR_SET_DUMPABLE");
  // glibc's malloc, the first time it gives a thread arena's free top back (heap_trim ->
  // shrink_heap), opens /proc/sys/vm/overcommit_memory: an openat no filtered thread may
  // make (a card's fabric thread died of it at exit). No trimming, so no such call: freed
  // memory stays the process's (bounded by its peak and its cgroup's limit).
  if (::mallopt(M_TRIM_THRESHOLD, kNoTrim) != 1) return make_error(SandboxErrc::kSeccomp, "mallopt(M_TRIM_THRESHOLD)");
  s.policy = &policy;
  s.mode = mode;
  return {};
}

bool active() { return state().policy != nullptr; }

Result<void, SandboxError> enter_thread(std::string_view cls, std::string_view thread_name) {
  State& s = state();
  if (s.policy == nullptr) return make_error(SandboxErrc::kSeccomp, "seccomp: enter_thread before init_process");
  const auto it = s.programs.find(cls);
  if (it == s.programs.end())
    return make_error(SandboxErrc::kSeccomp, "seccomp: " + std::string(s.policy->process) + " has no thread class \"" +
                                                 std::string(cls) + "\"");
  if (!thread_name.empty()) {
    char n[16] = {};
    std::memcpy(n, thread_name.data(), std::min(thread_name.size(), sizeof n - 1));
    (void)::prctl(PR_SET_NAME, n, 0, 0, 0);
  }
  if (install(it->second) != 0)
    return errno_error(SandboxErrc::kSeccomp, "seccomp: installing class \"" + std::string(cls) + "\"");
  return {};
}

std::string thread_seccomp_modes() {
  std::string out;
  DIR* d = ::opendir("/proc/self/task");
  if (d == nullptr) return out;
  while (const dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::ifstream f(std::string("/proc/self/task/") + e->d_name + "/status");
    std::string line;
    while (std::getline(f, line))
      if (line.rfind("Seccomp:", 0) == 0) {
        if (!out.empty()) out += ' ';
        out += std::string(e->d_name) + ":" + line.substr(line.find_first_not_of(" \t", 8));
      }
  }
  ::closedir(d);
  return out;
}

}  // namespace azote::sandbox
