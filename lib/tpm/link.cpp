#include "tpm/link.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <thread>

namespace azote::tpm {

namespace {

using Clock = std::chrono::steady_clock;

// Waits for `events` on fd until the deadline (or cancel); true when ready.
TpmResult<void> wait_for(int fd, short events, Clock::time_point deadline, const std::atomic<bool>* cancel) {
  for (;;) {
    if (cancel && cancel->load()) return make_error(TpmErrc::kTimeout, "the TPM command was cancelled");
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return make_error(TpmErrc::kTimeout, "no answer from the TPM in time");
    pollfd p{fd, events, 0};
    const int n = ::poll(&p, 1, static_cast<int>(std::min<long long>(left, 100)));
    if (n < 0 && errno != EINTR) return errno_error(TpmErrc::kIo, "poll on the TPM's socket");
    if (n > 0) return {};
  }
}

}  // namespace


TpmResult<Link> Link::connect(const std::string& path, std::chrono::milliseconds timeout) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof a.sun_path) return make_error(TpmErrc::kConnect, "TPM socket path \"" + path + "\" is empty or too long");
  path.copy(a.sun_path, path.size());
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    UniqueFd s(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!s) return errno_error(TpmErrc::kConnect, "socket for the TPM at " + path);
    if (::connect(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) return Link(std::move(s));  // NOLINT
    const int e = errno;
    if ((e != ENOENT && e != ECONNREFUSED) || Clock::now() >= deadline)
      return make_error(TpmErrc::kConnect, "cannot reach the TPM at " + path, e);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

TpmResult<size_t> Link::transact(std::span<const uint8_t> command, std::span<uint8_t> response,
                                 std::chrono::milliseconds timeout, const std::atomic<bool>* cancel) {
  if (command.size() < kHeaderBytes || header_size(command) != command.size())
    return make_error(TpmErrc::kProtocol, "a TPM command's size field must be its length (" + std::to_string(command.size()) + " bytes)");
  if (response.size() < kHeaderBytes) return make_error(TpmErrc::kProtocol, "no room for a TPM response header");
  const auto deadline = Clock::now() + timeout;
  for (size_t sent = 0; sent < command.size();) {
    const ssize_t n = ::send(fd_.get(), command.data() + sent, command.size() - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      sent += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno != EAGAIN && errno != EINTR) return errno_error(TpmErrc::kIo, "sending a command to the TPM");
    if (auto w = wait_for(fd_.get(), POLLOUT, deadline, cancel); !w) return make_error(w.error().code, w.error().context);
  }
  size_t got = 0, want = kHeaderBytes;
  while (got < want) {
    const ssize_t n = ::recv(fd_.get(), response.data() + got, want - got, MSG_DONTWAIT);
    if (n == 0) return make_error(TpmErrc::kIo, "the TPM closed the connection mid-response");
    if (n < 0) {
      if (errno != EAGAIN && errno != EINTR) return errno_error(TpmErrc::kIo, "reading the TPM's response");
      if (auto w = wait_for(fd_.get(), POLLIN, deadline, cancel); !w) return make_error(w.error().code, w.error().context);
      continue;
    }
    got += static_cast<size_t>(n);
    if (got == kHeaderBytes) {
      want = header_size(response.first(kHeaderBytes));
      if (want < kHeaderBytes || want > response.size())
        return make_error(TpmErrc::kProtocol, "the TPM's response claims " + std::to_string(want) + " bytes (room for " +
                                                  std::to_string(response.size()) + ")");
    }
  }
  return got;
}

}  // namespace azote::tpm
