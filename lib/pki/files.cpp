#include "pki/files.hpp"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <utility>

#include "base/unique_fd.hpp"

namespace azote::pki {
namespace {

// Unlinks a temp file unless the rename that publishes it succeeded.
class TempFile {
 public:
  explicit TempFile(std::string path) : path_(std::move(path)) {}
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  ~TempFile() {
    if (!path_.empty()) ::unlink(path_.c_str());
  }
  void keep() { path_.clear(); }

 private:
  std::string path_;
};

PkiResult<void> fsync_dir(const std::string& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) return errno_error(PkiErrc::kIo, "open directory " + dir);
  if (::fsync(fd.get()) != 0) return errno_error(PkiErrc::kIo, "fsync directory " + dir);
  return {};
}

// The stack buffer may have held a secret (a key file): wipe it on every exit.
struct WipedBuffer {
  char data[4096];
  WipedBuffer() = default;
  WipedBuffer(const WipedBuffer&) = delete;
  WipedBuffer& operator=(const WipedBuffer&) = delete;
  ~WipedBuffer() { OPENSSL_cleanse(data, sizeof data); }
};

}  // namespace

PkiResult<std::string> read_file(const std::string& path, size_t max_bytes) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return errno_error(PkiErrc::kIo, "cannot open " + path);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return errno_error(PkiErrc::kIo, "cannot stat " + path);
  if (!S_ISREG(st.st_mode)) return make_error(PkiErrc::kInvalid, path + " is not a regular file");
  std::string out;
  out.reserve(std::min(static_cast<size_t>(st.st_size), max_bytes));
  WipedBuffer buf;
  for (;;) {
    const ssize_t n = ::read(fd.get(), buf.data, sizeof buf.data);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno_error(PkiErrc::kIo, "cannot read " + path);
    }
    if (n == 0) break;
    if (out.size() + static_cast<size_t>(n) > max_bytes) {
      return make_error(PkiErrc::kInvalid, path + " is larger than " + std::to_string(max_bytes) + " bytes");
    }
    out.append(buf.data, static_cast<size_t>(n));
  }
  return out;
}

PkiResult<std::string> read_pem_file(const std::string& path) {
  AZOTE_TRY(text, read_file(path, size_t{1} << 20));
  if (text.empty()) return make_error(PkiErrc::kCorrupt, path + " is empty");
  if (text.find("-----BEGIN ") == std::string::npos) {
    return make_error(PkiErrc::kCorrupt, path + " is not PEM (no -----BEGIN line)");
  }
  return text;
}

PkiResult<void> write_file_atomic(const std::string& path, std::string_view data, mode_t mode) {
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  const std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  if (base.empty()) return make_error(PkiErrc::kInvalid, "no file name in " + path);

  std::string tmp = dir + "/." + base + ".tmp.XXXXXX";
  UniqueFd fd(::mkostemp(tmp.data(), O_CLOEXEC));  // created 0600
  if (!fd) return errno_error(PkiErrc::kIo, "cannot create a temp file for " + path);
  TempFile guard(tmp);
  if (::fchmod(fd.get(), mode) != 0) return errno_error(PkiErrc::kIo, "chmod " + tmp);
  // Written by root (azote admin, next to a running host): the file belongs to whoever
  // owns its directory (the controller's uid in a state directory), or the unprivileged
  // controller could no longer read its own CRL or keys.
  if (::geteuid() == 0) {
    struct stat st{};
    if (::stat(dir.c_str(), &st) == 0 && st.st_uid != 0 && ::fchown(fd.get(), st.st_uid, st.st_gid) != 0)
      return errno_error(PkiErrc::kIo, "chown " + tmp);
  }
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd.get(), data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno_error(PkiErrc::kIo, "write " + tmp);
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd.get()) != 0) return errno_error(PkiErrc::kIo, "fsync " + tmp);
  if (::close(fd.release()) != 0) return errno_error(PkiErrc::kIo, "close " + tmp);
  if (::rename(tmp.c_str(), path.c_str()) != 0) return errno_error(PkiErrc::kIo, "rename " + tmp + " to " + path);
  guard.keep();
  return fsync_dir(dir);
}

}  // namespace azote::pki
