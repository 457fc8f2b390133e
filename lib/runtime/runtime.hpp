// The process scaffolding every long-running azote service shares (the cards, the tap
// bridge): stop signals routed to a signalfd, the control thread's event loop (epoll:
// signals, a stop eventfd, periodic timers and the fds a service watches), a plain-text
// endpoint on a Unix socket (Prometheus metrics) and the exposition-format builder.
//
// The loop runs handlers on its own thread, one at a time; only request_stop() is
// thread-safe. Handlers must not block (the control socket, vhost-user sockets and
// timers all share the thread).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "base/error.hpp"
#include "base/unique_fd.hpp"

namespace azote::runtime {

enum class RuntimeErrc { kHost = 1, kSocket };
using RuntimeError = Error<RuntimeErrc>;

// Exit statuses (sysexits.h) the services share.
inline constexpr int kExitOk = 0;
inline constexpr int kExitUsage = 64;
inline constexpr int kExitNoInput = 66;
inline constexpr int kExitOsErr = 71;
// A worker thread did not stop within its deadline (EX_TEMPFAIL): see BoundedThread.
inline constexpr int kExitStuckWorker = 75;

// Blocks SIGTERM and SIGINT in the calling thread (threads started later inherit the
// mask; the Loop takes them through a signalfd) and ignores SIGPIPE (a peer closing a
// socket is an error return). Call in main() before any thread exists.
void block_stop_signals();

// The start every service's main() shares, for a parse result (Result<P, E>) whose P has
// `help`, `version` and `options.log_level`: a parse error is printed as "NAME: error:
// MESSAGE" and ends the process with `usage_status`; --help prints the usage and
// --version "NAME VERSION" (status 0). Otherwise the log level is set and nullopt
// returned: the service goes on.
void set_log_level(const std::string& name);
template <class ParseResult>
std::optional<int> handle_common_options(const char* name, const char* version, const ParseResult& parsed,
                                         const char* usage, int usage_status = kExitUsage) {
  if (!parsed) {
    std::fprintf(stderr, "%s: error: %s\n", name, parsed.error().message().c_str());
    return usage_status;
  }
  if (parsed->help) {
    std::fputs(usage, stdout);
    return kExitOk;
  }
  if (parsed->version) {
    std::printf("%s %s\n", name, version);
    return kExitOk;
  }
  set_log_level(parsed->options.log_level);
  return std::nullopt;
}

class Loop {
 public:
  using Handler = std::function<void()>;
  // `name` prefixes the loop's own log lines ("azote-card-net: Terminated: stopping").
  static Result<std::unique_ptr<Loop>, RuntimeError> create(std::string name);
  Loop(const Loop&) = delete;
  Loop& operator=(const Loop&) = delete;

  // Calls `h` on the loop thread whenever `fd` is readable (level-triggered). One
  // handler per fd; the caller keeps the fd open until unwatch().
  Result<void, RuntimeError> watch(int fd, Handler h);
  // Safe from inside a handler: events already fetched for `fd` are dropped.
  void unwatch(int fd);
  // Calls `h` every `period` (a timerfd; missed periods are coalesced into one call).
  Result<void, RuntimeError> every(std::chrono::milliseconds period, Handler h);
  // Makes run() return kExitOk after the current handler (any thread).
  void request_stop();
  // Until SIGTERM/SIGINT (logged) or request_stop(): kExitOk; kExitOsErr if epoll fails.
  int run();

 private:
  explicit Loop(std::string name) : name_(std::move(name)) {}
  Result<void, RuntimeError> add(int fd, uint64_t token);

  std::string name_;
  UniqueFd epoll_, signal_fd_, stop_fd_;
  struct Watch {
    int fd;
    std::shared_ptr<Handler> handler;
  };
  std::map<uint64_t, Watch> watches_;  // by epoll token (never reused)
  std::map<int, uint64_t> token_of_;   // fd -> token
  std::map<uint64_t, UniqueFd> timers_;  // token -> timerfd
  uint64_t next_token_ = 16;
};

// Serves a text document on a Unix socket (mode 0600) from a thread of its own: one
// connection, the whole text, EOF. A request starting "GET " (an HTTP scraper through a
// proxy) gets an HTTP/1.0 header first; anything else, or nothing within 100 ms, gets
// the plain text. A slow reader is given 1 s. Refuses to replace a socket another
// process is serving; removes a stale one.
class TextEndpoint {
 public:
  using Render = std::function<std::string()>;
  // `what` names the option in errors ("--metrics unix:PATH"). "fd:N" as `path`
  // adopts an already listening socket (the launcher's).
  static Result<std::unique_ptr<TextEndpoint>, RuntimeError> start(const std::string& path, Render render,
                                                                   const std::string& what = "--metrics");
  ~TextEndpoint();  // stops the thread, removes the socket
  TextEndpoint(const TextEndpoint&) = delete;
  TextEndpoint& operator=(const TextEndpoint&) = delete;
  uint64_t served() const { return served_.load(); }

 private:
  TextEndpoint() = default;
  void run();
  void serve(UniqueFd client);

  std::string path_;  // removed at the end; empty for an adopted socket
  std::string name_;  // for messages: the path, or "fd:N"
  Render render_;
  UniqueFd listen_, stop_;
  std::thread thread_;
  std::atomic<uint64_t> served_{0};
};

// Every thread a service starts calls this first: it names the thread and, when the
// process runs under a seccomp policy (lib/sandbox), installs the thread's class `cls`
// ("metrics" for the TextEndpoint, "queue", "worker", "fabric", "imds" in the cards).
// False (logged): the class could not be entered and the thread must not go on.
bool enter_thread_class(const std::string& cls, const std::string& name);

// A worker thread the control thread must be able to stop within a bound (a card's queue
// worker). A plain join has none: a worker held in the kernel (a store that never
// completes, a write to an fd another process controls) would hold the control thread
// too, and with it every device the process serves. join_within() waits up to a
// deadline. A worker still running then may still use what the caller is about to
// release (guest memory, rings, fds), so it can neither be abandoned nor waited for
// longer: the process logs which worker did not stop and ends with kExitStuckWorker
// (_exit: no destructor runs under the worker), and its supervisor starts a new one,
// which the vhost-user frontends reconnect to (with INFLIGHT_SHMFD no request is lost).
// start() and join_within() belong to one thread (the control thread).
class BoundedThread {
 public:
  BoundedThread() = default;
  ~BoundedThread();  // join_within(kWorkerStopDeadline, "a worker thread") if still running
  BoundedThread(const BoundedThread&) = delete;
  BoundedThread& operator=(const BoundedThread&) = delete;

  // Runs `body` on a new thread named `name` (at most 15 characters are kept). With a
  // seccomp policy in force (lib/sandbox), the thread first enters its class `cls` (the
  // process's seccomp.json must have it); if it cannot, the body does not run.
  void start(const std::string& name, const std::string& cls, std::function<void()> body);
  bool running() const { return thread_.joinable(); }
  // Returns once the body has returned and the thread is joined, within `deadline`; the
  // caller must have asked the body to return first. Past the deadline: one error line
  // naming `what` and the deadline, then _exit(kExitStuckWorker). Nothing if not running.
  void join_within(std::chrono::milliseconds deadline, const std::string& what);

 private:
  std::thread thread_;
  struct State {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
  };
  std::shared_ptr<State> state_;
};

// How long a card's control thread waits for a worker to stop. A blk queue worker first
// completes the store operations it started (the kernel may be writing into guest memory
// the caller unmaps next): a few seconds allow for a slow flush, not for a dead store.
inline constexpr std::chrono::milliseconds kWorkerStopDeadline{5000};

// Prometheus text exposition format 0.0.4.
class PromText {
 public:
  void header(const char* name, const char* type, const char* help);
  // `labels` without braces: `volume="vol-1",op="read"` (values escaped by label());
  // empty: the sample has no label set.
  void sample(const std::string& name, const std::string& labels, uint64_t v);
  void sample(const std::string& name, const std::string& labels, double v);
  // Nanoseconds as seconds with 6 decimals.
  void seconds(const std::string& name, const std::string& labels, uint64_t ns);
  std::string take() { return std::move(out_); }
  // `key="value"` with the value escaped.
  static std::string label(const char* key, const std::string& value);

 private:
  void line(const std::string& name, const std::string& labels, const char* value);
  std::string out_;
};

}  // namespace azote::runtime
