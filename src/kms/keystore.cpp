#include "kms/keystore.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "base/hex.hpp"
#include "kms/crypto.hpp"

namespace azote::kms {
namespace {

constexpr size_t kMaxPolicyBytes = 32 * 1024;  // AWS's key policy limit

std::string err_text(int e) { return std::strerror(e); }

KmsResult<UniqueFd> open_private_dir(int at, const std::string& name, const std::string& shown) {
  if (::mkdirat(at, name.c_str(), 0700) != 0 && errno != EEXIST) return fail(kState, shown + ": " + err_text(errno));
  UniqueFd d(::openat(at, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!d) return fail(kState, shown + ": " + err_text(errno));
  struct stat st{};
  if (::fstat(d.get(), &st) != 0 || st.st_uid != ::geteuid() || (st.st_mode & 077) != 0)
    return fail(kState, shown + " must be a directory of uid " + std::to_string(::geteuid()) +
                            " with no access for group or others (it holds keys)");
  return d;
}

bool write_all(int fd, const uint8_t* p, size_t n) {
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

// NAME written whole under NAME.tmp, fsynced, renamed into place without replacing
// anything, and the directory fsynced: a crash leaves no half-written file.
KmsResult<void> create_file(int dirfd, const std::string& name, std::span<const uint8_t> bytes) {
  const std::string tmp = name + ".tmp";
  ::unlinkat(dirfd, tmp.c_str(), 0);
  UniqueFd f(::openat(dirfd, tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!f) return fail(kInternal, "create " + tmp + ": " + err_text(errno));
  if (!write_all(f.get(), bytes.data(), bytes.size()) || ::fsync(f.get()) != 0 ||
      ::renameat2(dirfd, tmp.c_str(), dirfd, name.c_str(), RENAME_NOREPLACE) != 0) {
    const int e = errno;
    ::unlinkat(dirfd, tmp.c_str(), 0);
    return fail(kInternal, "write " + name + ": " + err_text(e));
  }
  ::fsync(dirfd);
  return {};
}

}  // namespace

bool valid_key_id(const std::string& id) {
  return id.size() == 20 && id.rfind("key-", 0) == 0 &&
         std::all_of(id.begin() + 4, id.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

KmsResult<SecretBytes> read_private_file(int dirfd, const std::string& name, const std::string& shown, size_t max,
                                         int* errnum) {
  if (errnum != nullptr) *errnum = 0;
  UniqueFd f(::openat(dirfd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!f) {
    if (errnum != nullptr) *errnum = errno;
    return fail(kInternal, "open " + shown + ": " + err_text(errno));
  }
  struct stat st{};
  if (::fstat(f.get(), &st) != 0) return fail(kInternal, "stat " + shown + ": " + err_text(errno));
  if (!S_ISREG(st.st_mode) || st.st_uid != ::geteuid() || (st.st_mode & 077) != 0)
    return fail(kInternal, shown + " must be a regular file of uid " + std::to_string(::geteuid()) +
                               " with no access for group or others");
  if (st.st_size < 0 || static_cast<size_t>(st.st_size) > max)
    return fail(kInternal, shown + " is larger than " + std::to_string(max) + " bytes");
  SecretBytes out(static_cast<size_t>(st.st_size) + 1);  // one more: a file that grew shows
  size_t got = 0;
  while (got < out.size()) {
    const ssize_t r = ::read(f.get(), out.data() + got, out.size() - got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return fail(kInternal, "read " + shown + ": " + err_text(errno));
    if (r == 0) break;
    got += static_cast<size_t>(r);
  }
  if (got != static_cast<size_t>(st.st_size)) return fail(kInternal, shown + " changed while it was read");
  out.shrink(got);
  return out;
}

KmsResult<KeyStore> KeyStore::open(const std::string& state_dir) {
  if (state_dir.empty()) return fail(kUsage, "--state-dir is required");
  AZOTE_TRY(dir, open_private_dir(AT_FDCWD, state_dir, "--state-dir " + state_dir));
  AZOTE_TRY(keys, open_private_dir(dir.get(), "keys", state_dir + "/keys"));
  return KeyStore(state_dir, std::move(keys));
}

KmsResult<std::string> KeyStore::create_key(const nlohmann::json& policy) {
  AZOTE_TRY(parsed, parse_policy(policy));
  (void)parsed;
  auto id_bytes = random_secret(8);
  auto key = random_secret(kKeyBytes);
  if (!id_bytes || !key) return fail(kInternal, "no random bytes");
  const std::string id = "key-" + to_hex(id_bytes->span());
  const std::string text = policy.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  // The policy first: a key file is what makes a key exist, and it never exists
  // without its policy.
  AZOTE_TRYV(create_file(keys_.get(), id + ".policy",
                         std::span(reinterpret_cast<const uint8_t*>(text.data()), text.size())));  // NOLINT
  if (auto w = create_file(keys_.get(), id + ".key", key->span()); !w) {
    ::unlinkat(keys_.get(), (id + ".policy").c_str(), 0);
    return Unexpected{w.error()};
  }
  return id;
}

KmsResult<SecretBytes> KeyStore::load_key(const std::string& id) const {
  if (!valid_key_id(id)) return fail(kNotFound, "key \"" + id.substr(0, 64) + "\" does not exist (key ids are key-<16 hex>)");
  int e = 0;
  auto k = read_private_file(keys_.get(), id + ".key", dir_ + "/keys/" + id + ".key", kKeyBytes, &e);
  if (!k && e == ENOENT) return fail(kNotFound, "key " + id + " does not exist");
  if (!k) return k;
  if (k->size() != kKeyBytes) return fail(kInternal, "key " + id + "'s file does not hold 32 bytes");
  return k;
}

KmsResult<Policy> KeyStore::load_policy(const std::string& id, nlohmann::json* raw) const {
  if (!valid_key_id(id)) return fail(kNotFound, "key \"" + id.substr(0, 64) + "\" does not exist (key ids are key-<16 hex>)");
  int e = 0;
  auto text = read_private_file(keys_.get(), id + ".policy", dir_ + "/keys/" + id + ".policy", kMaxPolicyBytes, &e);
  if (!text && e == ENOENT) return fail(kNotFound, "key " + id + " does not exist");
  if (!text) return Unexpected{text.error()};
  const auto* b = text->data();
  nlohmann::json j = nlohmann::json::parse(b, b + text->size(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return fail(kMalformedPolicy, "key " + id + "'s policy file is not JSON");
  auto p = parse_policy(j);
  if (!p) return fail(kMalformedPolicy, "key " + id + "'s policy: " + p.error().sentence);
  if (raw != nullptr) *raw = std::move(j);
  return p;
}

KmsResult<std::vector<std::string>> KeyStore::list() const {
  const int fd = ::openat(keys_.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return fail(kInternal, "open " + dir_ + "/keys: " + err_text(errno));
  DIR* d = ::fdopendir(fd);
  if (d == nullptr) {
    ::close(fd);
    return fail(kInternal, "open " + dir_ + "/keys: " + err_text(errno));
  }
  std::vector<std::string> ids;
  while (const dirent* e = ::readdir(d)) {
    const std::string n = e->d_name;
    if (n.size() == 24 && n.compare(20, 4, ".key") == 0 && valid_key_id(n.substr(0, 20))) ids.push_back(n.substr(0, 20));
  }
  ::closedir(d);
  std::sort(ids.begin(), ids.end());
  return ids;
}

}  // namespace azote::kms
