// Runs one measured process: fork/exec, output through a pipe, wait4 for its rusage.
//
// Two modes. Timing mode (the default) adds nothing between the child and the kernel: the parent
// sleeps in poll() on the output pipe and a pidfd, so the wall time ends when the child exits, not
// when the parent next looks. Exit-snapshot mode (smaps_at_exit) traces the child with ptrace and
// stops every thread at PTRACE_EVENT_EXIT, which the kernel reports before it tears down the
// address space; /proc/TID/smaps read there still lists every guest page the process had mapped.
// Tracing slows the child, so runs in that mode are never used for timing.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace azote::bench {

struct RunSpec {
  std::vector<std::string> argv;
  // When set, the run ends as soon as the child's output (stdout and stderr, merged) contains this
  // text: the time is recorded, then the child gets SIGTERM (SIGKILL 2 s later).
  std::string until;
  double timeout_s = 60.0;
  bool smaps_at_exit = false;
  // With smaps_at_exit: also trace system calls and take a snapshot at the entry of every
  // munmap of at least this many bytes, i.e. just before a VMM that tidies up on exit unmaps
  // guest RAM (0 = do not trace system calls).
  std::uint64_t snapshot_before_munmap_bytes = 0;
  std::size_t output_limit = 1 << 20;  // bytes kept; the rest is read and dropped
};

struct RunResult {
  bool started = false;
  std::string error;        // why the run could not be made (exec failure, timeout, ...)
  int exit_code = -1;       // when the child exited
  int term_signal = 0;      // when a signal killed it
  bool timed_out = false;
  bool matched = false;     // RunSpec::until was seen
  bool stopped_by_us = false;
  double wall_s = 0;        // fork to exit (as seen by wait4)
  double match_s = 0;       // fork to the first byte that completed RunSpec::until
  double user_s = 0;        // ru_utime of the child
  double sys_s = 0;         // ru_stime of the child
  long maxrss_kib = 0;      // ru_maxrss of the child
  std::string output;
  std::optional<std::string> smaps;  // /proc/TID/smaps at the last thread exit that still had an mm
  std::vector<std::string> munmap_snapshots;  // /proc/TID/smaps before each large munmap
};

[[nodiscard]] RunResult run_process(const RunSpec& spec);

// "exit 0", "signal 15", "timeout" ... for messages and JSON.
[[nodiscard]] std::string describe_status(const RunResult& r);

}  // namespace azote::bench
