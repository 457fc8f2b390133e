// Runs a real binary for an integration test: captures stdout/stderr, enforces a
// deadline (a hang is a failure, never a wait forever), and can deliver signals.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace azote::test {

struct Outcome {
  int status = -1;        // exit status, or 128+signal if killed by one
  bool timed_out = false;
  std::string out, err;
  double seconds = 0;
};

class Process {
 public:
  explicit Process(std::vector<std::string> argv);
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  void signal(int sig);
  // Reads output until `needle` appears on stdout (true) or the deadline passes.
  bool wait_for_output(const std::string& needle, std::chrono::milliseconds timeout);
  // Waits for exit, collecting output; kills with SIGKILL `timeout` after this call.
  Outcome wait(std::chrono::milliseconds timeout);

 private:
  bool pump(int timeout_ms);
  pid_t pid_ = -1;
  int out_fd_ = -1, err_fd_ = -1;
  Outcome o_;
  std::chrono::steady_clock::time_point start_;
};

inline Outcome run(std::vector<std::string> argv, std::chrono::milliseconds timeout = std::chrono::seconds(60)) {
  Process p(std::move(argv));
  return p.wait(timeout);
}

// Lines of `text` (without the newline).
std::vector<std::string> lines(const std::string& text);
bool file_exists(const std::string& path);
bool kvm_usable(std::string* why);
// QEMU's -cpu for tests: the host's CPU without arch-capabilities (MSR 0x10a), which
// some KVMs (nested backends, AMD hosts) refuse to set, aborting QEMU at start.
inline constexpr const char* kQemuCpu = "host,-arch-capabilities";
std::optional<std::string> find_in_path(const std::string& name);

}  // namespace azote::test
