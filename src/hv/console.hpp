// The far end of COM1: stdout, a file, or a Unix socket that azote-hv listens on.
// Output is written from vCPU threads (under the platform lock); input and client
// connections are serviced by the main thread's poll loop.
#pragma once

#include <poll.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "base/error.hpp"
#include "base/unique_fd.hpp"
#include "hv/config.hpp"

namespace azote::hv {

enum class ConsoleErrc { kOpen = 1 };
using ConsoleError = Error<ConsoleErrc>;

class Console {
 public:
  // `max_bytes` caps a console that is a regular file (0: no cap): see capped_write.
  static Result<Console, ConsoleError> open(const ConsoleConfig& cfg, uint64_t max_bytes = 0);
  Console(Console&&) = default;
  ~Console();

  void write(std::span<const uint8_t> bytes);
  void flush();
  // Bytes of output a capped file console has dropped (the oldest) so far.
  uint64_t dropped_bytes() const;

  // Poll integration for the main loop: fds to watch, then what to do when ready.
  // `on_input` receives bytes typed at the console.
  void poll_fds(std::vector<pollfd>* out) const;
  template <class F>
  void service(const std::vector<pollfd>& fds, F&& on_input);

 private:
  Console() = default;
  void accept_client();
  void drop_client();
  void read_input(int fd, bool is_stdin, std::vector<uint8_t>* out);
  void send_to_client(std::span<const uint8_t> bytes);
  // A regular-file console at its cap keeps the newest half of (file + bytes), moved to
  // the start of the file, and drops the rest: the guest's output can never take more
  // than max_ bytes of the host's disk, and what a reader of the file's tail (the
  // controller's GetConsoleOutput) sees is still the newest output.
  void capped_write(std::span<const uint8_t> bytes);

  ConsoleConfig cfg_;
  UniqueFd out_;       // stdio: dup of fd 1; file: the file
  UniqueFd listen_;    // unix
  UniqueFd client_;    // unix: the connected client, if any
  bool stdin_open_ = false;
  std::unique_ptr<std::mutex> mu_ = std::make_unique<std::mutex>();
  uint64_t max_ = 0;      // the cap of a regular-file console (0: none); writes at size_
  uint64_t size_ = 0;     // bytes in that file
  uint64_t dropped_ = 0;  // bytes dropped to stay under max_
  std::vector<uint8_t> backlog_;  // unix: output kept for the next client (bounded)
  static constexpr size_t kBacklog = 64 * 1024;
};

template <class F>
void Console::service(const std::vector<pollfd>& fds, F&& on_input) {
  for (const auto& p : fds) {
    if (p.revents == 0) continue;
    std::vector<uint8_t> in;
    if (p.fd == listen_.get()) {
      accept_client();
    } else if (client_ && p.fd == client_.get()) {
      read_input(p.fd, false, &in);
    } else if (stdin_open_ && p.fd == 0) {
      read_input(0, true, &in);
    }
    if (!in.empty()) on_input(std::span<const uint8_t>(in));
  }
}

}  // namespace azote::hv
