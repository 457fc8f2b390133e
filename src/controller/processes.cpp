#include "controller/processes.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

extern char** environ;

namespace azote::controller {
namespace {

int pidfd_open(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }

}  // namespace

uint64_t proc_starttime(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const size_t close = s.rfind(')');  // the command name may hold spaces and parentheses
  if (close == std::string::npos) return 0;
  std::istringstream in(s.substr(close + 2));
  std::string field;
  // Fields after the name start at 3 (state); starttime is field 22.
  for (int i = 3; i <= 22; ++i)
    if (!(in >> field)) return 0;
  if (field.empty() || s[close + 2] == 'Z') return 0;  // a zombie is gone for our purposes
  return std::stoull(field);
}

Result<Proc, ProcError> spawn(const std::vector<std::string>& argv, const std::string& log_path) {
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&fa);
  posix_spawnattr_init(&attr);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  posix_spawn_file_actions_addclosefrom_np(&fa, 3);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  const int rc = ::posix_spawn(&pid, argv[0].c_str(), &fa, &attr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) return make_error(ProcErrc::kSpawn, "start " + argv[0], rc);
  Proc p;
  p.pid = pid;
  p.child = true;
  p.pidfd = UniqueFd(pidfd_open(pid));
  p.starttime = proc_starttime(pid);
  if (!p.pidfd) return errno_error(ProcErrc::kSpawn, "pidfd_open " + std::to_string(pid));
  return p;
}

Result<Proc, ProcError> adopt(pid_t pid, uint64_t starttime) {
  if (pid <= 0 || starttime == 0) return make_error(ProcErrc::kGone, "no process recorded");
  Proc p;
  p.pid = pid;
  p.pidfd = UniqueFd(pidfd_open(pid));
  if (!p.pidfd) return errno_error(ProcErrc::kGone, "process " + std::to_string(pid));
  // Checked after pidfd_open: the pidfd now pins this very process.
  if (proc_starttime(pid) != starttime)
    return make_error(ProcErrc::kGone, "process " + std::to_string(pid) + " is not the one recorded");
  p.starttime = starttime;
  int status = 0;
  // Still our child if this controller process started it (not across restarts).
  p.child = ::waitpid(pid, &status, WNOHANG) == 0;
  return p;
}

int reap(const Proc& p) {
  if (!p.child) return -1;
  siginfo_t si{};
  if (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(p.pidfd.get()), &si, WEXITED | WNOHANG) != 0)
    return -1;
  if (si.si_pid == 0) return -1;
  if (si.si_code == CLD_EXITED) return si.si_status;
  return 128 + si.si_status;
}

bool send_signal(const Proc& p, int sig) {
  return ::syscall(SYS_pidfd_send_signal, p.pidfd.get(), sig, nullptr, 0) == 0;
}

bool wait_exit(const Proc& p, int timeout_ms) {
  pollfd fd{p.pidfd.get(), POLLIN, 0};
  return ::poll(&fd, 1, timeout_ms) > 0;
}

}  // namespace azote::controller
