#include "rot_link/rot_link.hpp"

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "base/log.hpp"

namespace azote::rot_link {

RotClient::RotClient(UniqueFd fd, std::chrono::milliseconds timeout) : fd_(std::move(fd)), timeout_(timeout) {}

Unexpected<RotLinkError> RotClient::give_up(const std::string& why) {
  if (!gone_.exchange(true))
    LOG_ERROR("azote-rot link: the connection is gone (%s); attestation is unavailable until the card restarts",
              why.c_str());
  fd_.reset();
  in_.clear();
  return make_error(RotLinkErrc::kGone, "azote-rot: " + why);
}

RotClient::Wait RotClient::wait(short events, std::chrono::steady_clock::time_point deadline) {
  for (;;) {
    const auto left =
        std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0) return Wait::kTimeout;
    pollfd p[2] = {{fd_.get(), events, 0}, {cancel_fd_, POLLIN, 0}};
    const int n = ::poll(p, cancel_fd_ >= 0 ? 2 : 1, static_cast<int>(std::min<long long>(left, 1000)));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Wait::kError;
    if (cancel_fd_ >= 0 && (p[1].revents & POLLIN) != 0) return Wait::kCancelled;
    if (p[0].revents != 0) return Wait::kReady;  // readable, writable, or HUP/ERR (seen by recv/send)
  }
}

Result<nlohmann::json, RotLinkError> RotClient::call(const nlohmann::json& request) {
  if (gone()) return make_error(RotLinkErrc::kGone, "the connection to azote-rot is gone");
  // Anything azote-rot sent unasked belongs to no request: dropped.
  in_.clear();
  char buf[16384];
  for (;;) {
    const ssize_t n = ::recv(fd_.get(), buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0) continue;
    if (n == 0) return give_up("it closed the connection");
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) break;
    return give_up(std::string("recv: ") + std::strerror(errno));
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout_;
  const std::string line = request.dump() + "\n";
  for (size_t sent = 0; sent < line.size();) {
    const ssize_t n = ::send(fd_.get(), line.data() + sent, line.size() - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n >= 0) {
      sent += static_cast<size_t>(n);
      continue;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return give_up(std::string("send: ") + std::strerror(errno));
    const Wait w = wait(POLLOUT, deadline);
    if (w == Wait::kTimeout) return give_up("it took no request within " + std::to_string(timeout_.count()) + " ms");
    if (w == Wait::kCancelled) return give_up("the card is stopping");
    if (w == Wait::kError) return give_up(std::string("poll: ") + std::strerror(errno));
  }
  bool overlong = false;  // the reply line is over the limit: its rest is skipped
  for (;;) {
    const size_t nl = in_.find('\n');
    if (nl != std::string::npos) {
      std::string reply = in_.substr(0, nl);
      in_.erase(0, nl + 1);
      if (overlong || nl > kMaxLineBytes)
        return make_error(RotLinkErrc::kReply, "azote-rot's reply is longer than 64 KiB");
      auto j = nlohmann::json::parse(reply, nullptr, false);
      if (j.is_discarded() || !j.is_object())
        return make_error(RotLinkErrc::kReply, "azote-rot's reply is not a JSON object");
      return j;
    }
    if (in_.size() > kMaxLineBytes) {
      overlong = true;
      in_.clear();
    }
    const ssize_t n = ::recv(fd_.get(), buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0) {
      in_.append(buf, static_cast<size_t>(n));
      continue;
    }
    if (n == 0) return give_up("it closed the connection");
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return give_up(std::string("recv: ") + std::strerror(errno));
    const Wait w = wait(POLLIN, deadline);
    if (w == Wait::kTimeout) return give_up("no reply within " + std::to_string(timeout_.count()) + " ms");
    if (w == Wait::kCancelled) return give_up("the card is stopping");
    if (w == Wait::kError) return give_up(std::string("poll: ") + std::strerror(errno));
  }
}

}  // namespace azote::rot_link
