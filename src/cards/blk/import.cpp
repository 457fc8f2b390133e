#include "cards/blk/import.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <memory>
#include <span>
#include <vector>

#include "base/parse.hpp"
#include "base/unique_fd.hpp"

namespace azote::card_blk {

namespace {

// A path, or "fd:N" (a descriptor the launcher handed over: duplicated, it stays open).
UniqueFd open_file(const std::string& where, int flags) {
  if (const auto fd = parse_fd_ref(where)) return UniqueFd(::fcntl(*fd, F_DUPFD_CLOEXEC, 3));
  return UniqueFd(::open(where.c_str(), flags | O_CLOEXEC));
}

}  // namespace

Result<uint64_t, ImportError> import_content(const std::string& source, const std::string& target,
                                             uint64_t capacity_bytes, const XtsKey* key) {
  UniqueFd in = open_file(source, O_RDONLY);
  if (!in) return errno_error(ImportErrc::kSource, "import " + source);
  struct stat st {};
  if (::fstat(in.get(), &st) != 0 || !S_ISREG(st.st_mode))
    return make_error(ImportErrc::kSource, "import " + source + ": not a regular file");
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size > capacity_bytes)
    return make_error(ImportErrc::kTooBig, "import " + source + ": " + std::to_string(size) +
                                               " bytes do not fit a volume of " + std::to_string(capacity_bytes));
  UniqueFd out = open_file(target, O_WRONLY);
  if (!out) return errno_error(ImportErrc::kTarget, "import into " + target);
  std::unique_ptr<XtsCipher> cipher;
  if (key) {
    auto c = XtsCipher::create(*key);
    if (!c) return make_error(ImportErrc::kCrypto, c.error().message());
    cipher = std::move(c).value();
  }
  constexpr size_t kChunk = 1 << 20;
  // Page-aligned: the target may be open with O_DIRECT (a volume handed over by fd).
  struct Free {
    void operator()(uint8_t* p) const { std::free(p); }
  };
  std::unique_ptr<uint8_t[], Free> mem(static_cast<uint8_t*>(std::aligned_alloc(4096, kChunk)));
  if (!mem) return make_error(ImportErrc::kTarget, "import: out of memory");
  std::span<uint8_t> buf(mem.get(), kChunk);
  uint64_t done = 0;
  while (done < size) {
    const size_t want = static_cast<size_t>(std::min<uint64_t>(kChunk, size - done));
    size_t got = 0;
    while (got < want) {
      const ssize_t n = ::pread(in.get(), buf.data() + got, want - got, static_cast<off_t>(done + got));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return errno_error(ImportErrc::kSource, "import " + source + ": read");
      got += static_cast<size_t>(n);
    }
    const size_t padded = (want + 511) & ~size_t{511};
    std::fill(buf.begin() + static_cast<std::ptrdiff_t>(want), buf.begin() + static_cast<std::ptrdiff_t>(padded), 0);
    if (cipher)
      if (auto e = cipher->encrypt(done / 512, buf.data(), buf.data(), padded); !e)
        return make_error(ImportErrc::kCrypto, e.error().message());
    size_t put = 0;
    while (put < padded) {
      const ssize_t n = ::pwrite(out.get(), buf.data() + put, padded - put, static_cast<off_t>(done + put));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return errno_error(ImportErrc::kTarget, "import into " + target + ": write");
      put += static_cast<size_t>(n);
    }
    done += want;
  }
  if (::fdatasync(out.get()) != 0) return errno_error(ImportErrc::kTarget, "import into " + target + ": fdatasync");
  return size;
}

}  // namespace azote::card_blk
