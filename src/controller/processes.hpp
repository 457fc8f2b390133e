// The processes the controller runs (azote-hv per instance, azote-card-blk per host):
// started in their own session so they outlive a controller restart, recognised again
// afterwards by PID and start time, watched through pidfds.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "base/error.hpp"
#include "base/unique_fd.hpp"

namespace azote::controller {

enum class ProcErrc { kSpawn = 1, kGone };
using ProcError = Error<ProcErrc>;

struct Proc {
  pid_t pid = 0;
  uint64_t starttime = 0;  // /proc/PID/stat field 22 (clock ticks since boot)
  UniqueFd pidfd;
  bool child = false;      // ours to reap (false: adopted after a restart)
};

// Starts argv[0] with stdout and stderr appended to `log_path`, stdin /dev/null, in a
// new session, with no inherited descriptors beyond 0-2.
Result<Proc, ProcError> spawn(const std::vector<std::string>& argv, const std::string& log_path);

// The process `pid` if it is still the one that started at `starttime`.
Result<Proc, ProcError> adopt(pid_t pid, uint64_t starttime);

// 0 if the process does not exist.
uint64_t proc_starttime(pid_t pid);

// Reaps a finished child; returns its exit status (128+signal if killed), or -1 when
// the process is not our child (adopted) or not finished.
int reap(const Proc& p);

// Sends a signal through the pidfd (never to a recycled PID).
bool send_signal(const Proc& p, int sig);

// Waits until the pidfd says the process ended, at most `timeout_ms`.
bool wait_exit(const Proc& p, int timeout_ms);

}  // namespace azote::controller
