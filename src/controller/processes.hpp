// The processes the controller runs (azote-hv and the block card per instance,
// azote-card-net per host), all through the privileged launcher (lib/launch): it
// starts them in their jails, is their parent (it reaps them and keeps their exit
// statuses), and signals only processes it started. The controller holds a pidfd for
// each, so it sees an exit at once, and recognises them again after its own restart by
// PID and start time.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "base/error.hpp"
#include "base/unique_fd.hpp"
#include "launch/protocol.hpp"

namespace azote::controller {

enum class ProcErrc { kSpawn = 1, kGone, kLauncher };
using ProcError = Error<ProcErrc>;

struct Proc {
  pid_t pid = 0;
  uint64_t starttime = 0;  // /proc/PID/stat field 22 (clock ticks since boot)
  uint32_t uid = 0;        // the identity the launcher gave it
  UniqueFd pidfd;
};

// 0 if the process does not exist.
uint64_t proc_starttime(pid_t pid);
// The real uid of `pid`, or 0 if it cannot be read.
uint32_t proc_uid(pid_t pid);

class Processes {
 public:
  explicit Processes(UniqueFd launcher) : launcher_(std::move(launcher)) {}

  // Starts a jailed process; the error is the launcher's sentence.
  Result<Proc, ProcError> spawn(const launch::SpawnRequest& r);
  // The process `pid` if it is still the one that started at `starttime`.
  Result<Proc, ProcError> adopt(pid_t pid, uint64_t starttime) const;
  // Its exit status once it has ended (128+signal if killed), or -1 (still running, or
  // started by a launcher that is gone).
  int reap(const Proc& p);
  // Through the launcher (the processes run under other uids).
  bool send_signal(const Proc& p, int sig);
  // Waits until the pidfd says the process ended, at most `timeout_ms`.
  static bool wait_exit(const Proc& p, int timeout_ms);
  // Kills whatever is left of the instance's processes and removes its cgroups.
  void release(const std::string& instance);
  // The launcher's own description of what it runs (describe op).
  Result<launch::Json, ProcError> describe();
  // The write guard's state and the refusals since the last call (guard op).
  Result<launch::Json, ProcError> guard();
  // Readable (EOF) when the launcher is gone.
  int launcher_fd() { return launcher_.fd(); }

 private:
  launch::Client launcher_;
};

}  // namespace azote::controller
