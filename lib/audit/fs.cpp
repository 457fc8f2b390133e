#include "audit/fs.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

namespace azote::audit::detail {

std::string dir_of(const std::string& path) {
  auto slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

AuditResult<UniqueFd> open_dir_of(const std::string& path) {
  std::string dir = dir_of(path);
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) return errno_error(AuditErrc::kIo, "open directory " + dir);
  return fd;
}

bool write_all(int fd, const char* data, size_t n) {
  while (n > 0) {
    ssize_t w = ::write(fd, data, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    if (w == 0) {
      errno = EIO;
      return false;
    }
    data += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

AuditResult<void> write_file_atomic(const std::string& path, std::string_view data, mode_t mode,
                                    int dirfd) {
  std::string tmp = path + ".tmp";
  {
    UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode));
    if (!fd) return errno_error(AuditErrc::kIo, "create " + tmp);
    // O_CREAT does not change the mode of a file left over from an earlier crash.
    if (::fchmod(fd.get(), mode) != 0) return errno_error(AuditErrc::kIo, "chmod " + tmp);
    if (!write_all(fd.get(), data.data(), data.size()))
      return errno_error(AuditErrc::kIo, "write " + tmp);
    if (::fsync(fd.get()) != 0) return errno_error(AuditErrc::kIo, "fsync " + tmp);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0)
    return errno_error(AuditErrc::kIo, "rename " + tmp + " to " + path);
  UniqueFd own;
  if (dirfd < 0) {
    AZOTE_TRY(d, open_dir_of(path));
    own = std::move(d);
    dirfd = own.get();
  }
  if (::fsync(dirfd) != 0) return errno_error(AuditErrc::kIo, "fsync directory of " + path);
  return {};
}

AuditResult<std::string> read_small_file(const std::string& path, size_t max_bytes) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return errno_error(AuditErrc::kIo, "open " + path);
  std::string out;
  char buf[4096];
  for (;;) {
    ssize_t r = ::read(fd.get(), buf, sizeof buf);
    if (r < 0) {
      if (errno == EINTR) continue;
      return errno_error(AuditErrc::kIo, "read " + path);
    }
    if (r == 0) break;
    out.append(buf, static_cast<size_t>(r));
    if (out.size() > max_bytes) return make_error(AuditErrc::kInvalid, path + ": file too large");
  }
  return out;
}

}  // namespace azote::audit::detail
