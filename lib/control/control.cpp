#include "control/control.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <thread>

#include "base/log.hpp"
#include "base/parse.hpp"

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

// What a client's read takes at a time.
constexpr size_t kReadChunk = 8192;

// The answer line to one request line.
std::string respond(std::string_view line, const Handler& handler) {
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
  return response.dump(-1, ' ', false, Json::error_handler_t::replace) + "\n";
}

// One line the peer can read after we close: sent without waiting (a fresh or idle
// connection has room for it); if it does not fit, the peer sees only the close.
void send_parting_line(int fd, const std::string& sentence) {
  const std::string line = Json{{"ok", false}, {"error", sentence}}.dump() + "\n";
  (void)::send(fd, line.data(), line.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
}

// True if the peer sent bytes we have not read yet.
bool has_unread(int fd) {
  char ch;
  const ssize_t n = ::recv(fd, &ch, 1, MSG_PEEK | MSG_DONTWAIT);
  return n > 0;
}

}  // namespace

Json ok() { return Json{{"ok", true}}; }
Json refuse(std::string sentence) { return Json{{"ok", false}, {"error", std::move(sentence)}}; }

Result<std::unique_ptr<Server>, ControlError> Server::listen(const std::string& path) {
  if (const auto given = parse_fd_ref(path)) return adopt(UniqueFd(*given), path);
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
  if (auto w = s->watch(); !w) {
    ::unlink(path.c_str());
    return Unexpected{w.error()};
  }
  return s;
}

Result<std::unique_ptr<Server>, ControlError> Server::adopt(UniqueFd listening, const std::string& name) {
  int type = 0, accepting = 0;
  socklen_t len = sizeof type;
  socklen_t len2 = sizeof accepting;
  if (!listening || ::getsockopt(listening.get(), SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_STREAM ||
      ::getsockopt(listening.get(), SOL_SOCKET, SO_ACCEPTCONN, &accepting, &len2) != 0 || accepting == 0)
    return make_error(ControlErrc::kSocket, name + " is not a listening stream socket");
  if (::fcntl(listening.get(), F_SETFD, FD_CLOEXEC) != 0 ||
      ::fcntl(listening.get(), F_SETFL, ::fcntl(listening.get(), F_GETFL) | O_NONBLOCK) != 0)
    return errno_error(ControlErrc::kSocket, name);
  std::unique_ptr<Server> s(new Server());
  s->path_ = name;
  s->adopted_ = true;
  s->listen_fd_ = std::move(listening);
  AZOTE_TRYV(s->watch());
  return s;
}

Result<void, ControlError> Server::watch() {
  Server* s = this;
  s->epoll_ = UniqueFd(::epoll_create1(EPOLL_CLOEXEC));
  s->timer_ = UniqueFd(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = nullptr;
  epoll_event tev{};
  tev.events = EPOLLIN;
  tev.data.ptr = &s->timer_;
  if (!s->epoll_ || !s->timer_ || ::epoll_ctl(s->epoll_.get(), EPOLL_CTL_ADD, s->listen_fd_.get(), &ev) != 0 ||
      ::epoll_ctl(s->epoll_.get(), EPOLL_CTL_ADD, s->timer_.get(), &tev) != 0)
    return errno_error(ControlErrc::kSocket, "epoll");
  return {};
}

Server::~Server() {
  if (listen_fd_ && !adopted_) ::unlink(path_.c_str());
}

size_t Server::live_clients() const {
  return static_cast<size_t>(std::count_if(clients_.begin(), clients_.end(), [](const auto& c) { return !c->dead; }));
}

void Server::accept_ready(Clock::time_point now) {
  // A bounded number per call, so a stream of connections cannot keep the owner's loop
  // here; the rest are reported again at once (level-triggered).
  for (size_t accepted = 0; accepted < 2 * kMaxClients; ++accepted) {
    UniqueFd fd(::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (!fd) return;
    ucred cred{};
    socklen_t len = sizeof cred;
    // An adopted socket was made by the launcher, 0600 for the controller's uid: only
    // that uid (and root) can connect to it at all, whatever this process's uid is.
    if (::getsockopt(fd.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 ||
        (!adopted_ && cred.uid != 0 && cred.uid != ::geteuid())) {
      LOG_WARN("control %s: refused a client with uid %u", path_.c_str(), static_cast<unsigned>(cred.uid));
      continue;
    }
    // No slot is kept for the controller: the peers let in are root or our own uid, and
    // azote-hv and the cards run as root under the root controller, so "root" is every
    // client there can be (the peer's pid would not do either: a restarted controller
    // is not the cards' parent). What keeps the controller served is that nobody holds
    // a slot for nothing (kIdleTimeout, kWriteTimeout); when it still finds the server
    // full, it is told so.
    if (live_clients() >= kMaxClients) expire(now);  // a slot whose time is up is free now
    if (live_clients() >= kMaxClients) {
      // Said, not just done: the newcomer (the controller, say) would otherwise see only
      // EPIPE or a reset and report "Broken pipe".
      LOG_WARN("control %s: refused a client: %zu already connected", path_.c_str(), live_clients());
      send_parting_line(fd.get(), "too many control clients: " + path_ + " serves " + std::to_string(kMaxClients) +
                                      " at a time (idle ones are dropped after " +
                                      std::to_string(kIdleTimeout.count()) + " s); try again");
      continue;
    }
    auto c = std::make_unique<Client>();
    c->fd = std::move(fd);
    c->active = now;
    c->events = EPOLLIN | EPOLLRDHUP;
    epoll_event ev{};
    ev.events = c->events;
    ev.data.ptr = c.get();
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, c->fd.get(), &ev) != 0) continue;
    clients_.push_back(std::move(c));
  }
}

size_t Server::buffered_bytes() const {
  size_t n = 0;
  for (const auto& c : clients_) n += c->in.size() + c->out.size();
  return n;
}

bool Server::read_in(Client& c) {
  char buf[kReadChunk];
  // More than a line's worth holds either a complete request or one too long: handle it
  // before reading on, so one sender cannot grow `in` without bound.
  while (c.in.size() <= kMaxLineBytes) {
    const ssize_t n = ::recv(c.fd.get(), buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0) {
      c.in.append(buf, static_cast<size_t>(n));
      continue;
    }
    if (n == 0) {
      c.closing = true;  // answer what it sent, then close
      return true;
    }
    if (errno == EINTR) continue;
    return errno == EAGAIN || errno == EWOULDBLOCK;
  }
  return true;
}

void Server::handle_lines(Client& c, const Handler& handler) {
  size_t start = 0;
  // With kMaxPendingOutput answers waiting, the rest waits too: a client that sends
  // without reading gets no more of the server's memory or time.
  while (c.out.size() < kMaxPendingOutput) {
    const size_t nl = c.in.find('\n', start);
    if (nl == std::string::npos) break;
    c.out += respond(std::string_view(c.in).substr(start, nl - start), handler);
    start = nl + 1;
    // After the handler, not when the request came: however long it took, the client
    // was waiting for this answer, not idle.
    c.active = Clock::now();
  }
  c.in.erase(0, start);
  if (!c.closing && c.in.size() > kMaxLineBytes && c.in.find('\n') == std::string::npos) {
    // A line without end beyond the limit: refused, and nothing after it is read.
    c.out += refuse("request longer than " + std::to_string(kMaxLineBytes) + " bytes").dump() + "\n";
    c.in.clear();
    c.closing = true;
  }
}

bool Server::flush(Client& c) {
  size_t done = 0;
  while (done < c.out.size()) {
    const ssize_t n = ::send(c.fd.get(), c.out.data() + done, c.out.size() - done, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
      done += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    return false;
  }
  c.out.erase(0, done);
  if (done > 0 && c.out.empty()) c.active = Clock::now();
  return true;
}

bool Server::service(Client& c, const Handler& handler) {
  if (!flush(c)) return false;
  if (!c.closing && c.out.size() < kMaxPendingOutput && !read_in(c)) return false;
  // Until the requests already read are answered or the answers fill up: requests left
  // behind with room for their answers would wait for an event that may never come.
  bool more_requests;
  do {
    handle_lines(c, handler);
    if (!flush(c)) return false;
    more_requests = c.in.find('\n') != std::string::npos;
  } while (more_requests && c.out.size() < kMaxPendingOutput);
  if (c.closing && c.out.empty() && !more_requests) return false;
  if (c.out.empty())
    c.out_since = {};
  else if (c.out_since == Clock::time_point{})
    c.out_since = Clock::now();
  // Read while there is room for answers; wait for the socket to drain while there is
  // something to send. Level-triggered, so nothing ready is ever left unreported.
  uint32_t want = 0;
  if (!c.closing && c.out.size() < kMaxPendingOutput) want |= EPOLLIN | EPOLLRDHUP;
  if (!c.out.empty()) want |= EPOLLOUT;
  if (want != c.events) {
    epoll_event ev{};
    ev.events = want;
    ev.data.ptr = &c;
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, c.fd.get(), &ev) != 0) return false;
    c.events = want;
  }
  return true;
}

void Server::expire(Clock::time_point now) {
  for (auto& c : clients_) {
    if (c->dead) continue;
    if (!c->out.empty()) {
      // Its socket is full and it has not taken an answer for kWriteTimeout: nothing
      // more would reach it either.
      if (now - c->out_since >= kWriteTimeout) {
        LOG_WARN("control %s: dropped a client that left %zu bytes of answers unread for %lld ms", path_.c_str(),
                 c->out.size(), static_cast<long long>(kWriteTimeout.count()));
        c->dead = true;
      }
      continue;
    }
    // Bytes waiting unread are a request we have not got to yet: not idle.
    if (now - c->active < kIdleTimeout || has_unread(c->fd.get())) continue;
    send_parting_line(c->fd.get(), "control connection idle for more than " + std::to_string(kIdleTimeout.count()) +
                                       " s: closed by " + path_);
    c->dead = true;
  }
}

void Server::reap_and_rearm() {
  // Dead clients leave only here, after the event batch, so no event of the batch can
  // point at a freed Client.
  for (auto& c : clients_)
    if (c->dead) ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, c->fd.get(), nullptr);
  std::erase_if(clients_, [](const std::unique_ptr<Client>& c) { return c->dead; });
  itimerspec when{};  // all zero: disarmed
  if (!clients_.empty()) {
    Clock::time_point next = Clock::time_point::max();
    for (const auto& c : clients_)
      next = std::min(next, c->out.empty() ? c->active + kIdleTimeout : c->out_since + kWriteTimeout);
    // steady_clock is CLOCK_MONOTONIC on Linux; +1 ns keeps a deadline at 0 from disarming.
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(next.time_since_epoch()).count() + 1;
    when.it_value.tv_sec = static_cast<time_t>(ns / 1000000000);
    when.it_value.tv_nsec = static_cast<long>(ns % 1000000000);
  }
  (void)::timerfd_settime(timer_.get(), TFD_TIMER_ABSTIME, &when, nullptr);
}

void Server::serve_ready(const Handler& handler) {
  epoll_event ev[kMaxClients + 2];
  const int n = ::epoll_wait(epoll_.get(), ev, static_cast<int>(kMaxClients + 2), 0);
  for (int i = 0; i < n; ++i) {
    if (ev[i].data.ptr == nullptr) {
      accept_ready(Clock::now());
      continue;
    }
    if (ev[i].data.ptr == &timer_) {
      uint64_t expirations;
      (void)!::read(timer_.get(), &expirations, sizeof expirations);  // expire below does the work
      continue;
    }
    auto* c = static_cast<Client*>(ev[i].data.ptr);
    if (!c->dead && !service(*c, handler)) c->dead = true;
  }
  expire(Clock::now());
  reap_and_rearm();
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
  if (!write_all(fd_.get(), line, deadline)) {
    const int e = errno;
    // A server that closed on us (full, or we were idle) said why in a line that is
    // still ours to read: that sentence is the error, not the EPIPE it caused.
    auto why = read_response(Clock::now(), std::chrono::milliseconds(0));
    if (!why && why.error().code == ControlErrc::kRefused) return why;
    return make_error(ControlErrc::kClosed, "control request", e);
  }
  return read_response(deadline, timeout);
}

Result<Json, ControlError> Client::read_response(Clock::time_point deadline, std::chrono::milliseconds timeout) {
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
    const int pr = ::poll(&p, 1, left);
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
