#include "hv/console.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace azote::hv {
namespace {

void write_all(int fd, const uint8_t* p, size_t n) {
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;  // the reader went away: console output is best effort
    p += w;
    n -= static_cast<size_t>(w);
  }
}

bool pwrite_all(int fd, const uint8_t* p, size_t n, uint64_t off) {
  while (n > 0) {
    const ssize_t w = ::pwrite(fd, p, n, static_cast<off_t>(off));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<size_t>(w);
    off += static_cast<uint64_t>(w);
  }
  return true;
}

bool pread_all(int fd, uint8_t* p, size_t n, uint64_t off) {
  while (n > 0) {
    const ssize_t r = ::pread(fd, p, n, static_cast<off_t>(off));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    n -= static_cast<size_t>(r);
    off += static_cast<uint64_t>(r);
  }
  return true;
}

}  // namespace

Result<Console, ConsoleError> Console::open(const ConsoleConfig& cfg, uint64_t max_bytes) {
  Console c;
  c.cfg_ = cfg;
  switch (cfg.kind) {
    case ConsoleKind::kStdio:
      c.out_ = UniqueFd(::fcntl(1, F_DUPFD_CLOEXEC, 3));
      if (!c.out_) return errno_error(ConsoleErrc::kOpen, "--console stdio: dup stdout");
      // Forward stdin only when it is something a person types into.
      c.stdin_open_ = ::isatty(0) != 0;
      break;
    case ConsoleKind::kFile:
      // Read-write: a capped console reads its newest half back (capped_write).
      c.out_ = UniqueFd(::open(cfg.path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0640));
      if (!c.out_) return errno_error(ConsoleErrc::kOpen, "--console file:" + cfg.path);
      break;
    case ConsoleKind::kFd:
      c.out_ = UniqueFd(cfg.fd);
      if (::fcntl(cfg.fd, F_SETFD, FD_CLOEXEC) != 0) return errno_error(ConsoleErrc::kOpen, "--console fd:" + std::to_string(cfg.fd));
      break;
    case ConsoleKind::kUnix: {
      c.listen_ = UniqueFd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
      if (!c.listen_) return errno_error(ConsoleErrc::kOpen, "--console unix: socket");
      sockaddr_un addr{};
      addr.sun_family = AF_UNIX;
      std::strncpy(addr.sun_path, cfg.path.c_str(), sizeof(addr.sun_path) - 1);
      struct stat st{};
      // Replace a stale socket from an earlier run, but never another kind of file.
      if (::lstat(cfg.path.c_str(), &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) return make_error(ConsoleErrc::kOpen, "--console unix:" + cfg.path + " exists and is not a socket");
        ::unlink(cfg.path.c_str());
      }
      if (::bind(c.listen_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)  // NOLINT
        return errno_error(ConsoleErrc::kOpen, "--console unix:" + cfg.path + ": bind");
      if (::listen(c.listen_.get(), 1) != 0) return errno_error(ConsoleErrc::kOpen, "--console unix: listen");
      break;
    }
  }
  struct stat st{};
  if (max_bytes > 0 && c.out_ && cfg.kind != ConsoleKind::kStdio && ::fstat(c.out_.get(), &st) == 0 && S_ISREG(st.st_mode)) {
    // Writes go to explicit offsets (the launcher opens console.log for appending).
    const int fl = ::fcntl(c.out_.get(), F_GETFL);
    if (fl < 0 || ::fcntl(c.out_.get(), F_SETFL, fl & ~O_APPEND) != 0)
      return errno_error(ConsoleErrc::kOpen, "--console: clear O_APPEND to cap the file");
    c.max_ = max_bytes;
    c.size_ = static_cast<uint64_t>(st.st_size);
  }
  return c;
}

Console::~Console() {
  if (cfg_.kind == ConsoleKind::kUnix && listen_) ::unlink(cfg_.path.c_str());
}

void Console::write(std::span<const uint8_t> bytes) {
  std::lock_guard lock(*mu_);
  if (max_ > 0) {
    capped_write(bytes);
    return;
  }
  if (out_) {
    write_all(out_.get(), bytes.data(), bytes.size());
    return;
  }
  if (client_) {
    send_to_client(bytes);
    return;
  }
  backlog_.insert(backlog_.end(), bytes.begin(), bytes.end());
  if (backlog_.size() > kBacklog) backlog_.erase(backlog_.begin(), backlog_.end() - kBacklog);
}

void Console::capped_write(std::span<const uint8_t> bytes) {
  const int fd = out_.get();
  const uint64_t n = bytes.size();
  // After a failed step (a full disk) the file's real size is what counts from there on.
  auto resync = [&] {
    struct stat st{};
    if (::fstat(fd, &st) == 0) size_ = static_cast<uint64_t>(st.st_size);
  };
  if (size_ + n <= max_) {
    if (pwrite_all(fd, bytes.data(), n, size_)) size_ += n;
    else resync();
    return;
  }
  const uint64_t keep = max_ / 2;
  if (n >= keep) {
    const auto newest = bytes.last(keep);
    if (!pwrite_all(fd, newest.data(), keep, 0) || ::ftruncate(fd, static_cast<off_t>(keep)) != 0) {
      resync();
      return;
    }
    dropped_ += size_ + n - keep;
    size_ = keep;
    return;
  }
  // The newest keep - n bytes of the file, then the new bytes, at the start. A console
  // descriptor not open for reading (fd:N from a shell's >>) cannot be read back: then
  // the file starts again with the new bytes.
  uint64_t from_file = std::min(keep - n, size_);
  std::vector<uint8_t> tail(from_file);
  if (!pread_all(fd, tail.data(), tail.size(), size_ - from_file)) {
    from_file = 0;
    tail.clear();
  }
  if (!pwrite_all(fd, tail.data(), tail.size(), 0) || !pwrite_all(fd, bytes.data(), n, from_file) ||
      ::ftruncate(fd, static_cast<off_t>(from_file + n)) != 0) {
    resync();
    return;
  }
  dropped_ += size_ - from_file;
  size_ = from_file + n;
}

uint64_t Console::dropped_bytes() const {
  std::lock_guard lock(*mu_);
  return dropped_;
}

void Console::flush() {
  std::lock_guard lock(*mu_);
  if (out_ && (cfg_.kind == ConsoleKind::kFile || cfg_.kind == ConsoleKind::kFd)) ::fsync(out_.get());
}

void Console::send_to_client(std::span<const uint8_t> bytes) {
  size_t off = 0;
  while (off < bytes.size()) {
    const ssize_t w = ::send(client_.get(), bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;  // slow reader: drop, never block a vCPU
    if (w <= 0) {
      drop_client();
      return;
    }
    off += static_cast<size_t>(w);
  }
}

void Console::poll_fds(std::vector<pollfd>* out) const {
  if (listen_ && !client_) out->push_back({listen_.get(), POLLIN, 0});
  if (client_) out->push_back({client_.get(), POLLIN, 0});
  if (stdin_open_) out->push_back({0, POLLIN, 0});
}

void Console::accept_client() {
  UniqueFd c(::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
  if (!c) return;
  std::lock_guard lock(*mu_);
  client_ = std::move(c);
  std::vector<uint8_t> backlog;
  backlog.swap(backlog_);
  send_to_client(backlog);
}

void Console::drop_client() { client_.reset(); }

void Console::read_input(int fd, bool is_stdin, std::vector<uint8_t>* out) {
  uint8_t buf[256];
  const ssize_t n = ::read(fd, buf, sizeof buf);
  if (n > 0) {
    out->assign(buf, buf + n);
    return;
  }
  if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
  if (is_stdin) {
    stdin_open_ = false;
  } else {
    std::lock_guard lock(*mu_);
    drop_client();
  }
}

}  // namespace azote::hv
