#include "runtime/runtime.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <pthread.h>
#include <sys/un.h>
#include <unistd.h>

#include <fcntl.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

#include "base/log.hpp"
#include "base/parse.hpp"
#include "sandbox/seccomp.hpp"

namespace azote::runtime {
namespace {

constexpr uint64_t kTokenSignal = 0;
constexpr uint64_t kTokenStop = 1;
constexpr std::chrono::milliseconds kRequestWait{100};
constexpr std::chrono::milliseconds kSendDeadline{1000};

sigset_t stop_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  return set;
}

}  // namespace

void set_log_level(const std::string& name) { log::set_level(log::level_from_name(name)); }

void block_stop_signals() {
  const sigset_t set = stop_signals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);
}

// ---- Loop -----------------------------------------------------------------------------

Result<std::unique_ptr<Loop>, RuntimeError> Loop::create(std::string name) {
  std::unique_ptr<Loop> l(new Loop(std::move(name)));
  l->epoll_ = UniqueFd(::epoll_create1(EPOLL_CLOEXEC));
  l->stop_fd_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  const sigset_t set = stop_signals();
  l->signal_fd_ = UniqueFd(::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!l->epoll_ || !l->stop_fd_ || !l->signal_fd_) return errno_error(RuntimeErrc::kHost, "epoll/eventfd/signalfd");
  AZOTE_TRYV(l->add(l->signal_fd_.get(), kTokenSignal));
  AZOTE_TRYV(l->add(l->stop_fd_.get(), kTokenStop));
  return l;
}

Result<void, RuntimeError> Loop::add(int fd, uint64_t token) {
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = token;
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0)
    return errno_error(RuntimeErrc::kHost, "epoll_ctl add fd " + std::to_string(fd));
  return {};
}

Result<void, RuntimeError> Loop::watch(int fd, Handler h) {
  if (token_of_.count(fd) != 0) return make_error(RuntimeErrc::kHost, "fd " + std::to_string(fd) + " is already watched");
  const uint64_t token = next_token_++;
  AZOTE_TRYV(add(fd, token));
  watches_[token] = Watch{fd, std::make_shared<Handler>(std::move(h))};
  token_of_[fd] = token;
  return {};
}

void Loop::unwatch(int fd) {
  const auto it = token_of_.find(fd);
  if (it == token_of_.end()) return;
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
  watches_.erase(it->second);
  timers_.erase(it->second);
  token_of_.erase(it);
}

Result<void, RuntimeError> Loop::every(std::chrono::milliseconds period, Handler h) {
  if (period.count() <= 0) return make_error(RuntimeErrc::kHost, "timer period must be positive");
  UniqueFd t(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
  if (!t) return errno_error(RuntimeErrc::kHost, "timerfd_create");
  itimerspec spec{};
  spec.it_interval.tv_sec = period.count() / 1000;
  spec.it_interval.tv_nsec = (period.count() % 1000) * 1000000;
  spec.it_value = spec.it_interval;
  if (::timerfd_settime(t.get(), 0, &spec, nullptr) != 0) return errno_error(RuntimeErrc::kHost, "timerfd_settime");
  const int fd = t.get();
  AZOTE_TRYV(watch(fd, [fd, h = std::move(h)] {
    uint64_t expirations = 0;
    if (::read(fd, &expirations, sizeof expirations) == static_cast<ssize_t>(sizeof expirations)) h();
  }));
  timers_[token_of_[fd]] = std::move(t);
  return {};
}

void Loop::request_stop() {
  const uint64_t one = 1;
  (void)!::write(stop_fd_.get(), &one, sizeof one);
}

int Loop::run() {
  for (;;) {
    epoll_event ev[16];
    const int n = ::epoll_wait(epoll_.get(), ev, 16, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      LOG_ERROR("%s: epoll_wait: %s", name_.c_str(), std::strerror(errno));
      return kExitOsErr;
    }
    for (int i = 0; i < n; ++i) {
      const uint64_t token = ev[i].data.u64;
      if (token == kTokenSignal) {
        signalfd_siginfo si{};
        if (::read(signal_fd_.get(), &si, sizeof si) == static_cast<ssize_t>(sizeof si))
          LOG_INFO("%s: %s: stopping", name_.c_str(), strsignal(static_cast<int>(si.ssi_signo)));
        return kExitOk;
      }
      if (token == kTokenStop) return kExitOk;
      // Unwatched earlier in this batch: not found. The handler is kept alive while it
      // runs even if it unwatches itself.
      const auto it = watches_.find(token);
      if (it == watches_.end()) continue;
      const std::shared_ptr<Handler> h = it->second.handler;
      (*h)();
    }
  }
}

// ---- TextEndpoint ---------------------------------------------------------------------

Result<std::unique_ptr<TextEndpoint>, RuntimeError> TextEndpoint::start(const std::string& path, Render render,
                                                                        const std::string& what) {
  std::unique_ptr<TextEndpoint> e(new TextEndpoint());
  e->render_ = std::move(render);
  if (const auto given = parse_fd_ref(path)) {
    // A listening socket the launcher made (0600 for the controller's uid): served as
    // is, never unlinked.
    int accepting = 0;
    socklen_t len = sizeof accepting;
    e->listen_ = UniqueFd(*given);
    if (::getsockopt(*given, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &len) != 0 || accepting == 0 ||
        ::fcntl(*given, F_SETFD, FD_CLOEXEC) != 0 || ::fcntl(*given, F_SETFL, ::fcntl(*given, F_GETFL) | O_NONBLOCK) != 0)
      return make_error(RuntimeErrc::kSocket, what + " " + path + ": not a listening socket");
    e->name_ = path;
    e->stop_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!e->stop_) return errno_error(RuntimeErrc::kSocket, what + ": eventfd");
    e->thread_ = std::thread([p = e.get()] { p->run(); });
    return e;
  }
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof a.sun_path)
    return make_error(RuntimeErrc::kSocket, what + " unix:" + path + ": empty or too long a path");
  std::memcpy(a.sun_path, path.data(), path.size());
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) return make_error(RuntimeErrc::kSocket, what + " unix:" + path + ": exists and is not a socket");
    UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    // SAFETY: `a` is a complete sockaddr_un; the cast is the sockets API.
    if (probe && ::connect(probe.get(), reinterpret_cast<const sockaddr*>(&a), sizeof a) == 0)
      return make_error(RuntimeErrc::kSocket, what + " unix:" + path + ": another process is serving it");
    ::unlink(path.c_str());  // a stale socket from an earlier run
  }
  e->listen_ = UniqueFd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!e->listen_) return errno_error(RuntimeErrc::kSocket, what + ": socket");
  // SAFETY: `a` is a complete sockaddr_un; the cast is the sockets API.
  if (::bind(e->listen_.get(), reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0)
    return errno_error(RuntimeErrc::kSocket, what + ": bind " + path);
  e->path_ = path;  // from here on the destructor removes it
  e->name_ = path;
  if (::chmod(path.c_str(), 0600) != 0 || ::listen(e->listen_.get(), 16) != 0)
    return errno_error(RuntimeErrc::kSocket, what + ": listen on " + path);
  e->stop_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!e->stop_) return errno_error(RuntimeErrc::kSocket, what + ": eventfd");
  e->thread_ = std::thread([p = e.get()] { p->run(); });
  return e;
}

TextEndpoint::~TextEndpoint() {
  if (thread_.joinable()) {
    const uint64_t one = 1;
    (void)!::write(stop_.get(), &one, sizeof one);
    thread_.join();
  }
  if (!path_.empty()) ::unlink(path_.c_str());
}

void TextEndpoint::run() {
  if (!enter_thread_class("metrics", "metrics")) return;
  for (;;) {
    pollfd p[2] = {{listen_.get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
    if (::poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      LOG_ERROR("%s: poll: %s", name_.c_str(), std::strerror(errno));
      return;
    }
    if (p[1].revents != 0) return;
    if (p[0].revents != 0) {
      UniqueFd c(::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
      if (c) serve(std::move(c));
    }
  }
}

void TextEndpoint::serve(UniqueFd client) {
  using Clock = std::chrono::steady_clock;
  // The request, if any: waited for briefly; it only selects HTTP or plain text.
  char req[512];
  size_t got = 0;
  const auto req_end = Clock::now() + kRequestWait;
  while (got < 4) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(req_end - Clock::now()).count();
    if (left <= 0) break;
    pollfd p{client.get(), POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left)) <= 0) break;
    const ssize_t n = ::recv(client.get(), req + got, sizeof req - got, 0);
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  const std::string body = render_();
  std::string out;
  if (got >= 4 && std::memcmp(req, "GET ", 4) == 0)
    out = "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: " +
          std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n";
  out += body;
  size_t sent = 0;
  const auto send_end = Clock::now() + kSendDeadline;
  while (sent < out.size()) {
    const ssize_t n = ::send(client.get(), out.data() + sent, out.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno != EAGAIN && errno != EINTR) return;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(send_end - Clock::now()).count();
    if (left <= 0) return;
    pollfd p{client.get(), POLLOUT, 0};
    (void)::poll(&p, 1, static_cast<int>(left));
  }
  // Counted before the client can see its EOF: a client (a test) that reads the text
  // and then asks served() must find its own request counted.
  served_.fetch_add(1);
  ::shutdown(client.get(), SHUT_WR);
}

// ---- PromText -------------------------------------------------------------------------

void PromText::header(const char* name, const char* type, const char* help) {
  out_ += "# HELP ";
  out_ += name;
  out_ += ' ';
  out_ += help;
  out_ += "\n# TYPE ";
  out_ += name;
  out_ += ' ';
  out_ += type;
  out_ += '\n';
}

void PromText::line(const std::string& name, const std::string& labels, const char* value) {
  out_ += name;
  if (!labels.empty()) {
    out_ += '{';
    out_ += labels;
    out_ += '}';
  }
  out_ += ' ';
  out_ += value;
  out_ += '\n';
}

void PromText::sample(const std::string& name, const std::string& labels, uint64_t v) {
  line(name, labels, std::to_string(v).c_str());
}

void PromText::sample(const std::string& name, const std::string& labels, double v) {
  char b[64];
  std::snprintf(b, sizeof b, "%.9g", v);
  line(name, labels, b);
}

void PromText::seconds(const std::string& name, const std::string& labels, uint64_t ns) {
  char b[64];
  std::snprintf(b, sizeof b, "%.6f", static_cast<double>(ns) / 1e9);
  line(name, labels, b);
}

std::string PromText::label(const char* key, const std::string& value) {
  std::string o = key;
  o += "=\"";
  for (char c : value) {
    if (c == '\\' || c == '"') {
      o += '\\';
      o += c;
    } else if (c == '\n') {
      o += "\\n";
    } else {
      o += c;
    }
  }
  o += '"';
  return o;
}

// ---- BoundedThread -------------------------------------------------------------------

BoundedThread::~BoundedThread() { join_within(kWorkerStopDeadline, "a worker thread"); }

void BoundedThread::start(const std::string& name, const std::string& cls, std::function<void()> body) {
  state_ = std::make_shared<State>();
  thread_ = std::thread([st = state_, name, cls, body = std::move(body)] {
    if (enter_thread_class(cls, name)) body();
    std::lock_guard l(st->mu);
    st->done = true;
    st->cv.notify_all();
  });
}

bool enter_thread_class(const std::string& cls, const std::string& name) {
  if (!sandbox::active()) {
    (void)::prctl(PR_SET_NAME, name.substr(0, 15).c_str(), 0, 0, 0);
    return true;
  }
  if (auto s = sandbox::enter_thread(cls, name.substr(0, 15)); !s) {
    LOG_ERROR("thread %s: %s; it does not run", name.c_str(), s.error().message().c_str());
    return false;
  }
  return true;
}

void BoundedThread::join_within(std::chrono::milliseconds deadline, const std::string& what) {
  if (!thread_.joinable()) return;
  bool done = false;
  {
    std::unique_lock l(state_->mu);
    done = state_->cv.wait_for(l, deadline, [&] { return state_->done; });
  }
  if (!done) {
    LOG_ERROR("%s did not stop within %lld ms; it may still use memory that is about to be released, so the "
              "process exits with status %d for its supervisor to restart it",
              what.c_str(), static_cast<long long>(deadline.count()), kExitStuckWorker);
    std::fflush(nullptr);
    ::_exit(kExitStuckWorker);
  }
  thread_.join();  // the body has returned: only the thread's exit is left
}

}  // namespace azote::runtime
