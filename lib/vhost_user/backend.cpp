#include "vhost_user/backend.hpp"

#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

namespace azote::vhost_user {
namespace {

constexpr uint32_t kTagListen = 1;
constexpr uint32_t kTagConn = 2;

Result<sockaddr_un, VuError> unix_addr(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(a.sun_path))
    return make_error(Errc::kSocket, "socket path '" + path + "' is empty or too long");
  std::memcpy(a.sun_path, path.data(), path.size());
  return a;
}

// Removes a stale socket at `path`; refuses a live one or a non-socket.
Result<void, VuError> clear_stale(const std::string& path, const sockaddr_un& addr) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return {};
    return errno_error(Errc::kSocket, "stat " + path);
  }
  if (!S_ISSOCK(st.st_mode)) return make_error(Errc::kSocket, path + " exists and is not a socket; refusing to replace it");
  UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!probe) return errno_error(Errc::kSocket, "socket");
  // SAFETY: addr is a complete sockaddr_un; the cast is the sockets API.
  if (::connect(probe.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0 || errno == EAGAIN)
    return make_error(Errc::kSocket, "another backend is listening on " + path);
  if (errno != ECONNREFUSED) return errno_error(Errc::kSocket, "probe " + path);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) return errno_error(Errc::kSocket, "remove stale socket " + path);
  return {};
}

}  // namespace

Backend::Backend(Device& device, BackendOptions options) : options_(options), session_(device) {}

Backend::~Backend() {
  session_.reset();
  // Remove our socket, unless a newer backend has already replaced it.
  if (listen_ && !path_.empty()) {
    struct stat st {};
    if (::lstat(path_.c_str(), &st) == 0 && st.st_dev == sock_dev_ && st.st_ino == sock_ino_) ::unlink(path_.c_str());
  }
}

Result<void, VuError> Backend::init_epoll() {
  epoll_ = UniqueFd(::epoll_create1(EPOLL_CLOEXEC));
  if (!epoll_) return errno_error(Errc::kSocket, "epoll_create1");
  return {};
}

Result<void, VuError> Backend::watch(int fd, uint32_t tag) {
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u32 = tag;
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) return errno_error(Errc::kSocket, "epoll_ctl add");
  return {};
}

void Backend::unwatch(int fd) { ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr); }

Result<std::unique_ptr<Backend>, VuError> Backend::listen(const std::string& path, Device& device,
                                                          BackendOptions options) {
  AZOTE_TRYV(check_device(device));
  AZOTE_TRY(addr, unix_addr(path));
  AZOTE_TRYV(clear_stale(path, addr));
  std::unique_ptr<Backend> b(new Backend(device, options));
  b->listen_ = UniqueFd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!b->listen_) return errno_error(Errc::kSocket, "socket");
  // SAFETY: addr is a complete sockaddr_un; the cast is the sockets API.
  if (::bind(b->listen_.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0)
    return errno_error(Errc::kSocket, "bind " + path);
  b->path_ = path;
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    b->sock_dev_ = st.st_dev;
    b->sock_ino_ = st.st_ino;
  }
  // Only our own user (or the socket's group, with 0660) may connect.
  if (::chmod(path.c_str(), options.socket_mode & 0660) != 0) return errno_error(Errc::kSocket, "chmod " + path);
  if (::listen(b->listen_.get(), 4) != 0) return errno_error(Errc::kSocket, "listen on " + path);
  AZOTE_TRYV(b->init_epoll());
  AZOTE_TRYV(b->watch(b->listen_.get(), kTagListen));
  return b;
}

Result<std::unique_ptr<Backend>, VuError> Backend::adopt(UniqueFd connection, Device& device, BackendOptions options) {
  AZOTE_TRYV(check_device(device));
  std::unique_ptr<Backend> b(new Backend(device, options));
  AZOTE_TRY(c, Connection::adopt(std::move(connection)));
  b->conn_ = std::move(c);
  AZOTE_TRYV(b->init_epoll());
  AZOTE_TRYV(b->watch(b->conn_.fd(), kTagConn));
  b->accepted_ = 1;
  return b;
}

Result<void, VuError> Backend::run_once(std::chrono::milliseconds timeout) {
  epoll_event ev[2];
  const int n = ::epoll_wait(epoll_.get(), ev, 2, static_cast<int>(timeout.count()));
  if (n < 0) {
    if (errno == EINTR) return {};
    return errno_error(Errc::kSocket, "epoll_wait");
  }
  for (int i = 0; i < n; ++i) {
    if (ev[i].data.u32 == kTagListen && !conn_.valid() && listen_) {
      accept_one();
    } else if (ev[i].data.u32 == kTagConn && conn_.valid()) {
      handle_readable();
    }
  }
  return {};
}

void Backend::accept_one() {
  UniqueFd c(::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
  if (!c) {
    if (errno != EAGAIN && errno != EINTR && log_limit_.allow()) LOG_WARN("vhost-user: accept on %s: %s", path_.c_str(), std::strerror(errno));
    return;
  }
  auto conn = Connection::adopt(std::move(c));
  if (!conn) return;
  conn_ = std::move(conn).value();
  if (!watch(conn_.fd(), kTagConn)) {
    conn_.close();
    return;
  }
  unwatch(listen_.get());  // one frontend at a time; others wait in the backlog
  const uint64_t n = accepted_.fetch_add(1) + 1;
  if (conn_log_limit_.allow())
    LOG_INFO("vhost-user: frontend connected on %s (connection %llu%s)", path_.c_str(),
             static_cast<unsigned long long>(n), suppressed_note().c_str());
}

std::string Backend::suppressed_note() {
  const uint64_t s = conn_log_limit_.suppressed();
  if (s == conn_suppressed_reported_) return "";
  const uint64_t since = s - conn_suppressed_reported_;
  conn_suppressed_reported_ = s;
  return "; " + std::to_string(since) + " connect/close line" + (since == 1 ? "" : "s") + " suppressed before this one";
}

void Backend::handle_readable() {
  auto m = conn_.recv(Clock::now() + options_.message_timeout);
  if (!m) {
    if (m.error().code == Errc::kClosed) {
      if (conn_log_limit_.allow())
        LOG_INFO("vhost-user: frontend closed the connection%s%s%s", path_.empty() ? "" : " on ", path_.c_str(),
                 suppressed_note().c_str());
    } else {
      rejected_.fetch_add(1);
      if (log_limit_.allow()) LOG_WARN("vhost-user: bad message from frontend: %s; disconnecting", m.error().message().c_str());
    }
    drop();
    return;
  }
  messages_.fetch_add(1);
  const Header hdr = m->hdr;
  const bool ack = session_.wants_ack(hdr);
  auto r = session_.handle(hdr, m->payload, std::move(m->fds));
  const Deadline deadline = Clock::now() + options_.message_timeout;
  if (!r) {
    rejected_.fetch_add(1);
    if (log_limit_.allow())
      LOG_WARN("vhost-user: %s rejected: %s; disconnecting frontend", request_name(hdr.request).c_str(),
               r.error().message().c_str());
    if (ack) {
      const auto nack = Session::ack_reply(hdr, 1);
      (void)conn_.send(nack.hdr, nack.payload, {}, deadline);
    }
    drop();
    return;
  }
  if (const auto& reply = *r) {
    const int fd = reply->fd;
    auto s = conn_.send(reply->hdr, reply->payload, fd >= 0 ? std::span<const int>(&fd, 1) : std::span<const int>(),
                        deadline);
    if (!s) {
      if (log_limit_.allow())
        LOG_WARN("vhost-user: reply to %s failed: %s; disconnecting frontend", request_name(hdr.request).c_str(),
                 s.error().message().c_str());
      drop();
    }
  }
}

void Backend::drop() {
  if (conn_.valid()) {
    unwatch(conn_.fd());
    conn_.close();
  }
  session_.reset();
  disconnects_.fetch_add(1);
  if (listen_) (void)watch(listen_.get(), kTagListen);
}

}  // namespace azote::vhost_user
