// Local control channel between azote-controller and the processes it runs (azote-hv,
// the cards): one JSON object per line over a unix stream socket, one response line per
// request line, strictly in order. The socket is created 0600 and a peer whose uid is
// neither root nor the server's own is refused (SO_PEERCRED), so the filesystem
// permissions are not the only guard.
//
// Requests are {"op": NAME, ...}; responses are {"ok": true, ...} or
// {"ok": false, "error": SENTENCE}. The server never blocks on a client: answers the
// socket has no room for wait in a per-client buffer, sent as the socket drains; while
// that buffer holds kMaxPendingOutput bytes the client's further requests stay unread,
// and a client that has not taken all of its waiting answers one second (kWriteTimeout)
// after the first began to wait is dropped.
//
// Slots are few (kMaxClients) and nobody may keep one by doing nothing: a client that
// has sent no complete request and been answered nothing for kIdleTimeout is dropped.
// Whenever the server closes a connection on its own (it is full, the client was idle)
// it first sends one {"ok": false, "error": SENTENCE} line saying why, and Client
// reports that sentence (a kRefused error) rather than the EPIPE or EOF that follows.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/error.hpp"
#include "base/unique_fd.hpp"

namespace azote::control {

enum class ControlErrc {
  kSocket = 1,  // socket, bind, listen, connect
  kTimeout,     // no (complete) response in time
  kClosed,      // the peer closed the connection
  kProtocol,    // a line that is not a JSON object, or too long
  kRefused,     // the server answered {"ok": false}
};
using ControlError = Error<ControlErrc>;

inline constexpr size_t kMaxLineBytes = 64 * 1024;
inline constexpr size_t kMaxClients = 16;
// The controller's connections carry a request every few milliseconds while it works
// and are closed when it is done; a handler that takes longer (an import) does not
// count, the clock starts again when its answer is sent.
inline constexpr std::chrono::seconds kIdleTimeout{5};
// A Client reads its answer as soon as it is sent: one waiting this long is not reading.
inline constexpr std::chrono::milliseconds kWriteTimeout{1000};
// Answers kept for one client that is not reading them: two of the longest a Client
// accepts. What the server holds per client is at most kMaxLineBytes + 8 KiB of requests
// and this plus the one answer that crossed it.
inline constexpr size_t kMaxPendingOutput = 2 * kMaxLineBytes;

using Json = nlohmann::json;
// Returns the response object; the server adds "ok": true unless the handler set "ok".
using Handler = std::function<Json(const Json& request)>;

// A successful response with no more fields, and a refusal, for handlers.
Json ok();
Json refuse(std::string sentence);

class Server {
 public:
  // Listens on `path` (a stale socket file there is replaced; any other file is an
  // error). The socket file is removed again in the destructor.
  // "fd:N" adopts descriptor N instead (see adopt()).
  static Result<std::unique_ptr<Server>, ControlError> listen(const std::string& path);
  // A listening socket the launcher made (0600, owned by the controller's uid) and
  // handed over: served as is, never unlinked; any peer that could connect is let in
  // (the file's mode is the guard: this process's own uid is not the controller's).
  static Result<std::unique_ptr<Server>, ControlError> adopt(UniqueFd listening, const std::string& name);
  ~Server();

  // Readable when a client connects or sends, when a waiting answer can be sent and at
  // a client's deadline: add it to the owner's epoll set.
  int poll_fd() const { return epoll_.get(); }
  // Accepts, reads and answers whatever is ready, calling `handler` once per complete
  // request line, sends waiting answers and drops idle and non-reading clients. Never
  // blocks, on input or on output.
  void serve_ready(const Handler& handler);
  const std::string& path() const { return path_; }
  size_t clients() const { return live_clients(); }
  // Requests not yet handled and answers not yet sent, over all clients.
  size_t buffered_bytes() const;

 private:
  using Clock = std::chrono::steady_clock;
  struct Client {
    UniqueFd fd;
    std::string in;            // received, not yet handled
    std::string out;           // answers the socket had no room for yet
    Clock::time_point active;  // last complete request received or answered
    Clock::time_point out_since;  // since when `out` has not been empty
    bool closing = false;      // nothing more to read (EOF, an over-long line): close once answered
    bool dead = false;         // closed at the end of this serve_ready
    uint32_t events = 0;       // what epoll watches on fd now
  };
  Server() = default;
  void accept_ready(Clock::time_point now);
  // Sends what it can, reads and answers what there is room for. False: drop the client.
  bool service(Client& c, const Handler& handler);
  bool flush(Client& c);
  bool read_in(Client& c);
  void handle_lines(Client& c, const Handler& handler);
  // Marks dead every client idle for kIdleTimeout (after telling it so) or with answers
  // waiting for kWriteTimeout.
  void expire(Clock::time_point now);
  size_t live_clients() const;
  // Closes the dead clients and arms timer_ for the next deadline.
  void reap_and_rearm();

  Result<void, ControlError> watch();  // epoll over the listening socket and the timer
  std::string path_;
  bool adopted_ = false;
  UniqueFd listen_fd_, epoll_;
  // In the epoll set: fires at the earliest idle or write deadline, so the owner's loop
  // calls serve_ready then even when no client does anything.
  UniqueFd timer_;
  std::vector<std::unique_ptr<Client>> clients_;
};

class Client {
 public:
  // Connects, retrying until `timeout` while the socket does not exist yet or refuses
  // (the server process may still be starting).
  static Result<Client, ControlError> connect(const std::string& path, std::chrono::milliseconds timeout);
  // Sends one request and waits for its response. {"ok": false} becomes a kRefused
  // error whose context is the server's sentence.
  Result<Json, ControlError> call(const Json& request, std::chrono::milliseconds timeout);
  // The connection, for a caller that hands it on once a call set it up (the launcher
  // binding a TPM card's connection to azote-rot). Only when nothing more is expected
  // from the server: bytes it sent past the last answer are not handed on.
  UniqueFd release() && { return std::move(fd_); }

 private:
  explicit Client(UniqueFd fd) : fd_(std::move(fd)) {}
  // The next response line, parsed; {"ok": false} becomes kRefused.
  Result<Json, ControlError> read_response(std::chrono::steady_clock::time_point deadline,
                                           std::chrono::milliseconds timeout);
  UniqueFd fd_;
  std::string in_;
};

// Connect, one call, close: for the occasional request.
Result<Json, ControlError> call_once(const std::string& path, const Json& request, std::chrono::milliseconds timeout);

}  // namespace azote::control
