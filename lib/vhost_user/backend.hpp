// A card's vhost-user endpoint: listens on a Unix socket path (or adopts one connected
// socket), serves one frontend at a time and hands every message to a Session.
//
// Event loop: the Backend owns one epoll fd watching only its control sockets (the
// listening socket while idle, the connection while connected; never both, so a
// second frontend waits in the listen backlog until the first is gone). A card adds
// poll_fd() to its own loop and calls run_once(0) when it is readable, or simply
// calls run_once(timeout) in a thread of its own. Kick fds are not watched here: they
// go to the device's queue workers through VringInfo, so the data path never passes
// through this loop.
//
// A frontend that breaks the protocol (any validation failure, bad fds, oversized or
// truncated message, timeout mid-message) gets one rate-limited log line and is
// disconnected: its fds are closed, queues stopped, mappings dropped, and the Backend
// keeps listening for the next one. Nothing a frontend sends can crash the card.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>

#include "base/log.hpp"
#include "base/unique_fd.hpp"
#include "vhost_user/connection.hpp"
#include "vhost_user/device.hpp"
#include "vhost_user/session.hpp"

namespace azote::vhost_user {

struct BackendOptions {
  // Once a message's first byte is readable, the rest (and our reply) must go through
  // within this time, or the frontend is disconnected.
  std::chrono::milliseconds message_timeout{1000};
  // The socket file's mode. 0600: only this process's uid (and root) may connect.
  // 0660 when the frontend runs under another uid of the socket's group: azote-card-net
  // serves each instance's hypervisor through a set-group-id directory of that
  // instance's group, which alone decides who reaches the socket.
  mode_t socket_mode = 0600;
};

class Backend {
 public:
  // Binds `path` (options.socket_mode). An existing socket there is removed if nobody is
  // listening on it (stale, e.g. left by a crashed card); a live one, or anything that
  // is not a socket, is refused.
  static Result<std::unique_ptr<Backend>, VuError> listen(const std::string& path, Device& device,
                                                          BackendOptions options = {});
  // Serves one already connected socket (e.g. inherited with --fd); no reconnection.
  static Result<std::unique_ptr<Backend>, VuError> adopt(UniqueFd connection, Device& device,
                                                         BackendOptions options = {});
  ~Backend();
  Backend(const Backend&) = delete;
  Backend& operator=(const Backend&) = delete;

  // epoll fd: readable when run_once() has work.
  int poll_fd() const { return epoll_.get(); }
  // Waits up to `timeout` for control-socket events and handles them (accept, one
  // message per readable event, disconnect). Errors are host failures (epoll), never
  // frontend misbehaviour.
  Result<void, VuError> run_once(std::chrono::milliseconds timeout);

  bool connected() const { return conn_.valid(); }
  // Counters, readable from any thread.
  uint64_t accepted() const { return accepted_.load(); }
  uint64_t disconnects() const { return disconnects_.load(); }
  uint64_t rejected() const { return rejected_.load(); }
  uint64_t messages() const { return messages_.load(); }

  Session& session() { return session_; }

 private:
  Backend(Device& device, BackendOptions options);
  Result<void, VuError> init_epoll();
  Result<void, VuError> watch(int fd, uint32_t tag);
  void unwatch(int fd);
  void accept_one();
  void handle_readable();
  void drop();

  BackendOptions options_;
  Session session_;
  UniqueFd epoll_;
  UniqueFd listen_;
  Connection conn_;
  std::string path_;
  dev_t sock_dev_ = 0;
  ino_t sock_ino_ = 0;
  // " (N connection lines suppressed)" when conn_log_limit_ dropped some since the last
  // connection line; empty otherwise.
  std::string suppressed_note();

  log::RateLimit log_limit_{10, std::chrono::seconds(1)};
  // Connect and close lines: a frontend connecting and closing in a loop (each costs it
  // a connect() and a close()) must not grow the card's log without bound; accepted()
  // still counts every connection.
  log::RateLimit conn_log_limit_{5, std::chrono::seconds(10)};
  uint64_t conn_suppressed_reported_ = 0;  // conn_log_limit_.suppressed() at the last line
  std::atomic<uint64_t> accepted_{0}, disconnects_{0}, rejected_{0}, messages_{0};
};

}  // namespace azote::vhost_user
