#include "cards/tpm/data_server.hpp"

#include <openssl/crypto.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <cerrno>
#include <cstring>

#include "base/log.hpp"
#include "cards/tpm/engine.hpp"
#include "tpm/wire.hpp"

namespace azote::card_tpm {
namespace {

constexpr uint64_t kListenId = 0;
constexpr uint64_t kStopId = 1;
constexpr size_t kMaxAcceptsPerWake = 16;

// Connections closing or refused are the clients' doing: a few lines, then a count.
log::RateLimit g_client_log(10, std::chrono::seconds(10));

TpmResult<sockaddr_un> unix_addr(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(a.sun_path))
    return make_error(TpmErrc::kUsage, "socket path \"" + path + "\" is empty or longer than 107 bytes");
  std::memcpy(a.sun_path, path.data(), path.size());
  return a;
}

// Removes a stale socket at `path`; refuses a live one or anything else.
TpmResult<void> clear_stale(const std::string& path, const sockaddr_un& addr) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return {};
    return errno_error(TpmErrc::kHost, "stat " + path);
  }
  if (!S_ISSOCK(st.st_mode)) return make_error(TpmErrc::kHost, path + " exists and is not a socket; refusing to replace it");
  UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!probe) return errno_error(TpmErrc::kHost, "socket");
  // SAFETY: addr is a complete sockaddr_un; the cast is the sockets API.
  if (::connect(probe.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0 || errno == EAGAIN)
    return make_error(TpmErrc::kHost, "another process is listening on " + path);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) return errno_error(TpmErrc::kHost, "remove stale socket " + path);
  return {};
}

}  // namespace

Frame check_frame(std::span<const uint8_t> buffered, uint32_t max_bytes) {
  if (buffered.size() < kTpmHeaderBytes) return {FrameStatus::kNeedMore, 0};
  const uint32_t size = tpm::be32(buffered.data() + 2);
  if (size < kTpmHeaderBytes || size > max_bytes) return {FrameStatus::kBad, size};
  return {buffered.size() >= size ? FrameStatus::kComplete : FrameStatus::kNeedMore, size};
}

TpmResult<std::unique_ptr<DataServer>> DataServer::listen(const std::string& path, uint32_t max_command_bytes,
                                                          Process process, TpmMetrics& metrics) {
  AZOTE_TRY(addr, unix_addr(path));
  AZOTE_TRYV(clear_stale(path, addr));
  std::unique_ptr<DataServer> s(new DataServer(metrics));
  s->process_ = std::move(process);
  s->max_command_bytes_ = max_command_bytes;
  s->listen_ = UniqueFd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!s->listen_) return errno_error(TpmErrc::kHost, "socket");
  // SAFETY: addr is a complete sockaddr_un; the cast is the sockets API.
  if (::bind(s->listen_.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0)
    return errno_error(TpmErrc::kHost, "bind " + path);
  s->path_ = path;
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    s->sock_dev_ = st.st_dev;
    s->sock_ino_ = st.st_ino;
  }
  if (::chmod(path.c_str(), 0600) != 0) return errno_error(TpmErrc::kHost, "chmod " + path);
  if (::listen(s->listen_.get(), 8) != 0) return errno_error(TpmErrc::kHost, "listen on " + path);
  s->epoll_ = UniqueFd(::epoll_create1(EPOLL_CLOEXEC));
  s->stop_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!s->epoll_ || !s->stop_) return errno_error(TpmErrc::kHost, "epoll_create1/eventfd");
  for (const auto& [fd, id] : {std::pair{s->listen_.get(), kListenId}, std::pair{s->stop_.get(), kStopId}}) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = id;
    if (::epoll_ctl(s->epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) return errno_error(TpmErrc::kHost, "epoll_ctl");
  }
  return s;
}

DataServer::~DataServer() {
  if (thread_.running()) {
    const uint64_t one = 1;
    [[maybe_unused]] const ssize_t w = ::write(stop_.get(), &one, sizeof one);
    thread_.join_within(runtime::kWorkerStopDeadline, "the TPM thread (a TPM command in progress)");
  }
  while (!clients_.empty()) drop(clients_.begin()->first);
  metrics_.clients.store(0, std::memory_order_relaxed);
  if (!path_.empty()) {  // ours, unless a newer card has replaced it
    struct stat st {};
    if (::lstat(path_.c_str(), &st) == 0 && st.st_dev == sock_dev_ && st.st_ino == sock_ino_) ::unlink(path_.c_str());
  }
}

void DataServer::start(std::function<void()> failed) {
  thread_.start("tpm", "tpm", [this, failed = std::move(failed)] {
    if (!run() && failed) failed();
  });
}

bool DataServer::run() {
  epoll_event events[16];
  for (;;) {
    const int n = ::epoll_wait(epoll_.get(), events, 16, -1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      LOG_ERROR("tpm: epoll_wait: %s; the TPM stops serving", std::strerror(errno));
      return false;
    }
    for (int i = 0; i < n; ++i) {
      const uint64_t id = events[i].data.u64;
      if (id == kStopId) return true;
      if (id == kListenId) {
        accept_ready();
      } else {
        service(id);
      }
    }
  }
}

void DataServer::accept_ready() {
  for (size_t i = 0; i < kMaxAcceptsPerWake; ++i) {
    UniqueFd fd(::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (!fd) return;  // EAGAIN, or a connection that went away
    if (clients_.size() >= kMaxDataClients) {
      metrics_.refused_connections.fetch_add(1, std::memory_order_relaxed);
      if (g_client_log.allow()) LOG_WARN("tpm: %zu clients already connected; a new connection is closed", clients_.size());
      continue;  // closed
    }
    auto c = std::make_unique<Client>();
    c->fd = std::move(fd);
    c->in.resize(max_command_bytes_);
    c->out.reserve(std::max<size_t>(max_command_bytes_, 4096));
    const uint64_t id = next_id_++;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = id;
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, c->fd.get(), &ev) != 0) {
      LOG_ERROR("tpm: epoll_ctl for a new client: %s", std::strerror(errno));
      continue;
    }
    c->events = EPOLLIN;
    clients_.emplace(id, std::move(c));
    metrics_.connections.fetch_add(1, std::memory_order_relaxed);
    metrics_.clients.store(clients_.size(), std::memory_order_relaxed);
  }
}

void DataServer::service(uint64_t id) {
  const auto it = clients_.find(id);
  if (it == clients_.end()) return;  // dropped earlier in this batch
  Client& c = *it->second;
  if (!flush(c)) return drop(id);
  if (c.sent < c.out.size()) return arm(id, c, EPOLLOUT);
  if (!c.eof && !read_once(c)) return drop(id);
  if (!run_buffered(id, c)) return drop(id);
  if (c.sent < c.out.size()) return arm(id, c, EPOLLOUT);
  if (c.eof) return drop(id);  // a partial command at EOF is discarded
  arm(id, c, EPOLLIN);
}

bool DataServer::read_once(Client& c) {
  // Full only with whole commands buffered behind a response still being sent: those
  // run first (a read of 0 bytes would look like EOF).
  if (c.have == c.in.size()) return true;
  for (;;) {
    const ssize_t n = ::recv(c.fd.get(), c.in.data() + c.have, c.in.size() - c.have, MSG_DONTWAIT);
    if (n > 0) {
      c.have += static_cast<size_t>(n);
      return true;
    }
    if (n == 0) {
      c.eof = true;
      return true;
    }
    if (errno == EINTR) continue;
    return errno == EAGAIN || errno == EWOULDBLOCK;
  }
}

bool DataServer::run_buffered(uint64_t id, Client& c) {
  while (c.sent >= c.out.size()) {
    const Frame f = check_frame({c.in.data(), c.have}, max_command_bytes_);
    if (f.status == FrameStatus::kNeedMore) return true;
    if (f.status == FrameStatus::kBad) {
      metrics_.bad_commands.fetch_add(1, std::memory_order_relaxed);
      if (g_client_log.allow())
        LOG_WARN("tpm: client %llu sent a command of %u bytes (accepted: %u..%u); closing the connection",
                 static_cast<unsigned long long>(id), f.size, kTpmHeaderBytes, max_command_bytes_);
      return false;
    }
    const std::span<const uint8_t> response = process_({c.in.data(), f.size});
    metrics_.commands.fetch_add(1, std::memory_order_relaxed);
    if (TpmEngine::response_code(response) != 0) metrics_.command_errors.fetch_add(1, std::memory_order_relaxed);
    c.out.assign(response.begin(), response.end());
    c.sent = 0;
    std::memmove(c.in.data(), c.in.data() + f.size, c.have - f.size);
    c.have -= f.size;
    if (!flush(c)) return false;
  }
  return true;
}

bool DataServer::flush(Client& c) {
  while (c.sent < c.out.size()) {
    const ssize_t n = ::send(c.fd.get(), c.out.data() + c.sent, c.out.size() - c.sent, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n >= 0) {
      c.sent += static_cast<size_t>(n);
      continue;
    }
    if (errno == EINTR) continue;
    return errno == EAGAIN || errno == EWOULDBLOCK;  // the rest when the socket drains
  }
  if (!c.out.empty()) {  // a response may carry secrets (unsealed data)
    OPENSSL_cleanse(c.out.data(), c.out.size());
    c.out.clear();
    c.sent = 0;
  }
  return true;
}

void DataServer::arm(uint64_t id, Client& c, uint32_t events) {
  if (c.events == events) return;
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = id;
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, c.fd.get(), &ev) != 0) {
    LOG_ERROR("tpm: epoll_ctl: %s; closing client %llu", std::strerror(errno), static_cast<unsigned long long>(id));
    return drop(id);
  }
  c.events = events;
}

void DataServer::drop(uint64_t id) {
  const auto it = clients_.find(id);
  if (it == clients_.end()) return;
  Client& c = *it->second;
  (void)::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, c.fd.get(), nullptr);
  OPENSSL_cleanse(c.in.data(), c.in.size());  // commands may carry secrets (sensitive data)
  if (!c.out.empty()) OPENSSL_cleanse(c.out.data(), c.out.size());
  clients_.erase(it);
  metrics_.clients.store(clients_.size(), std::memory_order_relaxed);
}

}  // namespace azote::card_tpm
