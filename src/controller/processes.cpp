#include "controller/processes.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

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

uint32_t proc_uid(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("Uid:", 0) == 0) {
      std::istringstream in(line.substr(4));
      uint32_t uid = 0;
      in >> uid;
      return uid;
    }
  return 0;
}

Result<Proc, ProcError> Processes::spawn(const launch::SpawnRequest& r) {
  auto reply = launcher_.call(launch::to_json(r));
  if (!reply) {
    return make_error(reply.error().code == launch::LaunchErrc::kRefused ? ProcErrc::kSpawn : ProcErrc::kLauncher,
                      reply.error().code == launch::LaunchErrc::kRefused ? reply.error().message()
                                                                          : "the launcher: " + reply.error().message());
  }
  if (reply->fds.size() != 1 || !reply->body.contains("pid"))
    return make_error(ProcErrc::kLauncher, "the launcher's spawn reply has no pid or pidfd");
  Proc p;
  p.pid = reply->body["pid"].get<pid_t>();
  p.starttime = reply->body.value("starttime", uint64_t{0});
  p.uid = reply->body.value("uid", uint32_t{0});
  p.pidfd = std::move(reply->fds[0]);
  return p;
}

Result<Proc, ProcError> Processes::adopt(pid_t pid, uint64_t starttime) const {
  if (pid <= 0 || starttime == 0) return make_error(ProcErrc::kGone, "no process recorded");
  Proc p;
  p.pid = pid;
  p.pidfd = UniqueFd(pidfd_open(pid));
  if (!p.pidfd) return errno_error(ProcErrc::kGone, "process " + std::to_string(pid));
  // Checked after pidfd_open: the pidfd now pins this very process.
  if (proc_starttime(pid) != starttime)
    return make_error(ProcErrc::kGone, "process " + std::to_string(pid) + " is not the one recorded");
  p.starttime = starttime;
  p.uid = proc_uid(pid);
  return p;
}

int Processes::reap(const Proc& p) {
  if (!wait_exit(p, 0)) return -1;
  auto r = launcher_.call({{"op", "status"}, {"pid", p.pid}}, std::chrono::seconds(5));
  if (!r || !r->body.value("exited", false)) return -1;
  return r->body.value("status", -1);
}

bool Processes::send_signal(const Proc& p, int sig) {
  auto r = launcher_.call({{"op", "signal"}, {"pid", p.pid}, {"starttime", p.starttime}, {"signal", sig}},
                          std::chrono::seconds(5));
  return r.ok();
}

bool Processes::wait_exit(const Proc& p, int timeout_ms) {
  pollfd fd{p.pidfd.get(), POLLIN, 0};
  return ::poll(&fd, 1, timeout_ms) > 0;
}

void Processes::release(const std::string& instance) {
  (void)launcher_.call({{"op", "release"}, {"instance", instance}}, std::chrono::seconds(10));
}

Result<launch::Json, ProcError> Processes::describe() {
  auto r = launcher_.call({{"op", "describe"}});
  if (!r) return make_error(ProcErrc::kLauncher, "the launcher: " + r.error().message());
  return r->body;
}

Result<launch::Json, ProcError> Processes::guard() {
  auto r = launcher_.call({{"op", "guard"}});
  if (!r) return make_error(ProcErrc::kLauncher, "the launcher: " + r.error().message());
  return r->body;
}

}  // namespace azote::controller
