#include "control/control.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <thread>

#include "base/log.hpp"

namespace azote::control {
namespace {

using Clock = std::chrono::steady_clock;

Result<sockaddr_un, ControlError> unix_address(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof a.sun_path)
    return make_error(ControlErrc::kSocket, "control socket path \"" + path + "\" is empty or longer than " +
                                                std::to_string(sizeof a.sun_path - 1) + " bytes");
  std::copy(path.begin(), path.end(), a.sun_path);
  return a;
}

int ms_left(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left <= 0 ? 0 : static_cast<int>(std::min<int64_t>(left, 1 << 30));
}

// Writes all of `data` to a (possibly non-blocking) socket, waiting at most until `deadline`.
bool write_all(int fd, const std::string& data, Clock::time_point deadline) {
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::send(fd, data.data() + done, data.size() - done, MSG_NOSIGNAL);
    if (n > 0) {
      done += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pollfd p{fd, POLLOUT, 0};
      const int left = ms_left(deadline);
      if (left == 0 || ::poll(&p, 1, left) <= 0) return false;
      continue;
    }
    return false;
  }
  return true;
}

}  // namespace

Json ok() { return Json{{"ok", true}}; }
Json refuse(std::string sentence) { return Json{{"ok", false}, {"error", std::move(sentence)}}; }

Result<std::unique_ptr<Server>, ControlError> Server::listen(const std::string& path) {
  AZOTE_TRY(addr, unix_address(path));
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode))
      return make_error(ControlErrc::kSocket, "control socket path " + path + " exists and is not a socket");
    ::unlink(path.c_str());
  }
  std::unique_ptr<Server> s(new Server());
  s->path_ = path;
  s->listen_fd_ = UniqueFd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!s->listen_fd_) return errno_error(ControlErrc::kSocket, "socket");
  // The socket inode's mode becomes the file's mode at bind (umask aside): no window
  // in which another user could connect.
  (void)::fchmod(s->listen_fd_.get(), 0600);
  if (::bind(s->listen_fd_.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0)
    return errno_error(ControlErrc::kSocket, "bind " + path);
  if (::chmod(path.c_str(), 0600) != 0 || ::listen(s->listen_fd_.get(), 16) != 0) {
    const int e = errno;
    ::unlink(path.c_str());
    return make_error(ControlErrc::kSocket, "listen " + path, e);
  }
  s->epoll_ = UniqueFd(::epoll_create1(EPOLL_CLOEXEC));
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = nullptr;
  if (!s->epoll_ || ::epoll_ctl(s->epoll_.get(), EPOLL_CTL_ADD, s->listen_fd_.get(), &ev) != 0) {
    const int e = errno;
    ::unlink(path.c_str());
    return make_error(ControlErrc::kSocket, "epoll", e);
  }
  return s;
}

Server::~Server() {
  if (listen_fd_) ::unlink(path_.c_str());
}

void Server::accept_ready() {
  for (;;) {
    UniqueFd fd(::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (!fd) return;
    ucred cred{};
    socklen_t len = sizeof cred;
    if (::getsockopt(fd.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 ||
        (cred.uid != 0 && cred.uid != ::geteuid())) {
      LOG_WARN("control %s: refused a client with uid %u", path_.c_str(), static_cast<unsigned>(cred.uid));
      continue;
    }
    if (clients_.size() >= kMaxClients) {
      LOG_WARN("control %s: refused a client: %zu already connected", path_.c_str(), clients_.size());
      continue;
    }
    auto c = std::make_unique<Client>();
    c->fd = std::move(fd);
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.ptr = c.get();
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, c->fd.get(), &ev) != 0) continue;
    clients_.push_back(std::move(c));
  }
}

bool Server::read_ready(Client& c, const Handler& handler) {
  char buf[8192];
  bool eof = false;
  for (;;) {
    const ssize_t n = ::recv(c.fd.get(), buf, sizeof buf, 0);
    if (n > 0) {
      c.in.append(buf, static_cast<size_t>(n));
      if (c.in.size() > kMaxLineBytes + sizeof buf) break;  // judged below
      continue;
    }
    if (n == 0) eof = true;
    if (n < 0 && errno == EINTR) continue;
    break;
  }
  size_t start = 0;
  for (;;) {
    const size_t nl = c.in.find('\n', start);
    if (nl == std::string::npos) break;
    const std::string_view line(c.in.data() + start, nl - start);
    start = nl + 1;
    Json response;
    if (line.size() > kMaxLineBytes) {
      response = refuse("request longer than " + std::to_string(kMaxLineBytes) + " bytes");
    } else {
      Json request = Json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (request.is_discarded() || !request.is_object() || !request.contains("op") || !request["op"].is_string()) {
        response = refuse("request is not a JSON object with a string \"op\"");
      } else {
        try {
          response = handler(request);
        } catch (const std::exception& e) {
          response = refuse(std::string("bad request: ") + e.what());
        }
        if (!response.is_object()) response = refuse("internal error: handler returned no object");
        if (!response.contains("ok")) response["ok"] = true;
      }
    }
    const std::string out = response.dump(-1, ' ', false, Json::error_handler_t::replace) + "\n";
    if (!write_all(c.fd.get(), out, Clock::now() + std::chrono::seconds(1))) return false;
  }
  c.in.erase(0, start);
  if (c.in.size() > kMaxLineBytes) {
    (void)write_all(c.fd.get(), refuse("request longer than " + std::to_string(kMaxLineBytes) + " bytes").dump() + "\n",
                    Clock::now() + std::chrono::seconds(1));
    return false;
  }
  return !eof;
}

void Server::serve_ready(const Handler& handler) {
  epoll_event ev[kMaxClients + 1];
  const int n = ::epoll_wait(epoll_.get(), ev, static_cast<int>(kMaxClients + 1), 0);
  for (int i = 0; i < n; ++i) {
    if (ev[i].data.ptr == nullptr) {
      accept_ready();
      continue;
    }
    auto* c = static_cast<Client*>(ev[i].data.ptr);
    if (!read_ready(*c, handler)) {
      ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, c->fd.get(), nullptr);
      std::erase_if(clients_, [c](const std::unique_ptr<Client>& p) { return p.get() == c; });
    }
  }
}

Result<Client, ControlError> Client::connect(const std::string& path, std::chrono::milliseconds timeout) {
  AZOTE_TRY(addr, unix_address(path));
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) return errno_error(ControlErrc::kSocket, "socket");
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0) return Client(std::move(fd));
    const int e = errno;
    if ((e != ENOENT && e != ECONNREFUSED && e != EAGAIN) || Clock::now() >= deadline)
      return make_error(ControlErrc::kSocket, "connect " + path, e);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

Result<Json, ControlError> Client::call(const Json& request, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  const std::string line = request.dump() + "\n";
  if (!write_all(fd_.get(), line, deadline)) return errno_error(ControlErrc::kClosed, "control request");
  for (;;) {
    const size_t nl = in_.find('\n');
    if (nl != std::string::npos) {
      Json r = Json::parse(std::string_view(in_).substr(0, nl), nullptr, false);
      in_.erase(0, nl + 1);
      if (r.is_discarded() || !r.is_object())
        return make_error(ControlErrc::kProtocol, "control response is not a JSON object");
      if (!r.value("ok", false)) {
        const auto it = r.find("error");
        return make_error(ControlErrc::kRefused,
                          it != r.end() && it->is_string() ? it->get<std::string>() : std::string("refused"));
      }
      return r;
    }
    if (in_.size() > kMaxLineBytes) return make_error(ControlErrc::kProtocol, "control response too long");
    pollfd p{fd_.get(), POLLIN, 0};
    const int left = ms_left(deadline);
    const int pr = left == 0 ? 0 : ::poll(&p, 1, left);
    if (pr < 0 && errno == EINTR) continue;
    if (pr <= 0) return make_error(ControlErrc::kTimeout, "no control response within " +
                                                             std::to_string(timeout.count()) + " ms");
    char buf[8192];
    const ssize_t n = ::recv(fd_.get(), buf, sizeof buf, 0);
    if (n == 0) return make_error(ControlErrc::kClosed, "control connection closed");
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return errno_error(ControlErrc::kClosed, "control recv");
    }
    in_.append(buf, static_cast<size_t>(n));
  }
}

Result<Json, ControlError> call_once(const std::string& path, const Json& request, std::chrono::milliseconds timeout) {
  const auto start = Clock::now();
  AZOTE_TRY(c, Client::connect(path, timeout));
  const auto used = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
  return c.call(request, std::max(std::chrono::milliseconds(1), timeout - used));
}

}  // namespace azote::control
