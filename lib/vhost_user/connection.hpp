// One vhost-user Unix stream connection: sends and receives whole messages with their
// SCM_RIGHTS fds, under hard limits and deadlines.
//
// Receiving: the header is read first and its size checked against the 4 KiB message
// limit before any payload is read. Every recvmsg uses MSG_CMSG_CLOEXEC and a control
// buffer with room for exactly kMaxFds fds; every fd the kernel installs is adopted
// into a UniqueFd before anything else is looked at, so a message rejected for any
// reason closes its fds. Truncated control data (MSG_CTRUNC: more fds than the buffer
// holds), ancillary data other than SCM_RIGHTS, EOF and deadlines are errors.
//
// The socket is non-blocking; every wait is a poll() bounded by the caller's deadline,
// so a peer that stops mid-message (or never replies) cannot hang the caller.
#pragma once

#include <chrono>
#include <span>
#include <string>
#include <vector>

#include "base/unique_fd.hpp"
#include "vhost_user/message.hpp"

namespace azote::vhost_user {

using Clock = std::chrono::steady_clock;
using Deadline = Clock::time_point;

// A received message: payload is exactly hdr.size bytes, fds are owned.
struct Message {
  Header hdr{};
  std::vector<uint8_t> payload;
  std::vector<UniqueFd> fds;
};

class Connection {
 public:
  Connection() = default;
  // Takes a connected AF_UNIX stream socket and makes it non-blocking.
  static Result<Connection, VuError> adopt(UniqueFd sock);
  // Connects to a listening socket, retrying (ENOENT, ECONNREFUSED, EAGAIN: the peer
  // may be restarting) until `timeout` has passed.
  static Result<Connection, VuError> connect(const std::string& path, std::chrono::milliseconds timeout);

  Connection(Connection&&) = default;
  Connection& operator=(Connection&&) = default;

  // Sends header + payload in one stream write (fds ride on the first byte).
  // hdr.size must equal payload.size(); at most kMaxFds fds, borrowed.
  Result<void, VuError> send(const Header& hdr, std::span<const uint8_t> payload, std::span<const int> fds,
                             Deadline deadline);
  // Receives one message. kClosed if the peer closed cleanly before its first byte.
  Result<Message, VuError> recv(Deadline deadline);

  int fd() const { return sock_.get(); }
  bool valid() const { return sock_.valid(); }
  void close() { sock_.reset(); }

 private:
  explicit Connection(UniqueFd s) : sock_(std::move(s)) {}
  Result<void, VuError> read_exact(uint8_t* buf, size_t len, bool message_start, std::vector<UniqueFd>& fds,
                                   Deadline deadline);
  Result<void, VuError> wait(short events, Deadline deadline);

  UniqueFd sock_;
};

// Creates a connected pair (tests, and a controller handing one end to each side).
Result<std::pair<UniqueFd, UniqueFd>, VuError> socket_pair();

}  // namespace azote::vhost_user
