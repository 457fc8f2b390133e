#include "vhost_user/connection.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <algorithm>
#include <cstring>
#include <thread>

#include "base/scm.hpp"

namespace azote::vhost_user {
namespace {

int remaining_ms(Deadline deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  if (left <= 0) return 0;
  return static_cast<int>(std::min<int64_t>(left, 60'000));
}

Result<void, VuError> set_nonblocking(int fd) {
  const int fl = ::fcntl(fd, F_GETFL);
  if (fl < 0 || ::fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) return errno_error(Errc::kSocket, "set O_NONBLOCK");
  return {};
}

}  // namespace

Result<Connection, VuError> Connection::adopt(UniqueFd sock) {
  if (!sock) return make_error(Errc::kSocket, "invalid socket");
  AZOTE_TRYV(set_nonblocking(sock.get()));
  return Connection(std::move(sock));
}

Result<Connection, VuError> Connection::connect(const std::string& path, std::chrono::milliseconds timeout) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr.sun_path))
    return make_error(Errc::kSocket, "socket path '" + path + "' is empty or too long");
  std::memcpy(addr.sun_path, path.data(), path.size());
  const Deadline deadline = Clock::now() + timeout;
  for (;;) {
    // Non-blocking: a backend that never accepts (full backlog) yields EAGAIN, retried
    // until the deadline, instead of blocking the caller.
    UniqueFd s(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!s) return errno_error(Errc::kSocket, "socket");
    // SAFETY: addr is a fully initialised sockaddr_un; the cast is the sockets API.
    if (::connect(s.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0) return adopt(std::move(s));
    const int e = errno;
    if (e == EINTR) continue;
    const bool retry = e == ENOENT || e == ECONNREFUSED || e == EAGAIN;
    if (!retry) return make_error(Errc::kSocket, "connect to " + path, e);
    if (Clock::now() >= deadline) return make_error(Errc::kTimeout, "connect to " + path, e);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

Result<void, VuError> Connection::wait(short events, Deadline deadline) {
  for (;;) {
    pollfd p{sock_.get(), events, 0};
    const int r = ::poll(&p, 1, remaining_ms(deadline));
    if (r > 0) return {};  // readable/writable, or HUP/ERR: the next call reports it
    if (r == 0) return make_error(Errc::kTimeout, "peer did not complete the message in time");
    if (errno != EINTR) return errno_error(Errc::kSocket, "poll");
  }
}

Result<void, VuError> Connection::send(const Header& hdr, std::span<const uint8_t> payload, std::span<const int> fds,
                                       Deadline deadline) {
  if (!sock_) return make_error(Errc::kClosed, "not connected");
  if (hdr.size != payload.size() || payload.size() > kMaxPayloadSize || fds.size() > kMaxFds)
    return make_error(Errc::kTooLarge, "outgoing " + request_name(hdr.request) + " exceeds the message limits");
  uint8_t buf[kMaxMessageSize];
  std::memcpy(buf, &hdr, kHeaderSize);
  if (!payload.empty()) std::memcpy(buf + kHeaderSize, payload.data(), payload.size());
  const size_t total = kHeaderSize + payload.size();

  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)] = {};
  size_t sent = 0;
  bool fds_sent = fds.empty();
  while (sent < total) {
    iovec iov{buf + sent, total - sent};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (!fds_sent) attach_fds(msg, control, fds);
    const ssize_t n = ::sendmsg(sock_.get(), &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        AZOTE_TRYV(wait(POLLOUT, deadline));
        continue;
      }
      if (errno == EPIPE || errno == ECONNRESET) return errno_error(Errc::kClosed, "send " + request_name(hdr.request));
      return errno_error(Errc::kSocket, "send " + request_name(hdr.request));
    }
    fds_sent = true;
    sent += static_cast<size_t>(n);
  }
  return {};
}

Result<void, VuError> Connection::read_exact(uint8_t* buf, size_t len, bool message_start, std::vector<UniqueFd>& fds,
                                             Deadline deadline) {
  size_t got = 0;
  while (got < len) {
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
    iovec iov{buf + got, len - got};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    const ssize_t n = ::recvmsg(sock_.get(), &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        AZOTE_TRYV(wait(POLLIN, deadline));
        continue;
      }
      if (errno == ECONNRESET) return errno_error(Errc::kTruncated, "connection reset");
      return errno_error(Errc::kSocket, "recvmsg");
    }
    // Adopt every installed fd first, so any error below closes them.
    const bool foreign = take_fds(msg, fds);
    if ((msg.msg_flags & MSG_CTRUNC) != 0)
      return make_error(Errc::kBadFds, "control data truncated (more than " + std::to_string(kMaxFds) + " fds)");
    if (foreign) return make_error(Errc::kBadFds, "unexpected ancillary data");
    if (fds.size() > kMaxFds) return make_error(Errc::kBadFds, "more than " + std::to_string(kMaxFds) + " fds");
    if (n == 0) {
      if (message_start && got == 0) return make_error(Errc::kClosed, "peer closed the connection");
      return make_error(Errc::kTruncated, "peer closed the connection after " + std::to_string(got) + " of " +
                                              std::to_string(len) + " bytes");
    }
    got += static_cast<size_t>(n);
  }
  return {};
}

Result<Message, VuError> Connection::recv(Deadline deadline) {
  if (!sock_) return make_error(Errc::kClosed, "not connected");
  Message m;
  uint8_t hb[kHeaderSize];
  AZOTE_TRYV(read_exact(hb, kHeaderSize, true, m.fds, deadline));
  std::memcpy(&m.hdr, hb, kHeaderSize);
  if (m.hdr.size > kMaxPayloadSize)
    return make_error(Errc::kTooLarge, request_name(m.hdr.request) + " claims a " + std::to_string(m.hdr.size) +
                                           "-byte payload (limit " + std::to_string(kMaxPayloadSize) + ")");
  m.payload.resize(m.hdr.size);
  if (m.hdr.size > 0) AZOTE_TRYV(read_exact(m.payload.data(), m.hdr.size, false, m.fds, deadline));
  return m;
}

Result<std::pair<UniqueFd, UniqueFd>, VuError> socket_pair() {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return errno_error(Errc::kSocket, "socketpair");
  return std::pair<UniqueFd, UniqueFd>(UniqueFd(sv[0]), UniqueFd(sv[1]));
}

}  // namespace azote::vhost_user
