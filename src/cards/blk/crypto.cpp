#include "cards/blk/crypto.hpp"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <utility>

#include "base/log.hpp"
#include "base/unique_fd.hpp"

namespace azote::card_blk {
namespace {

constexpr size_t kKeyPage = 4096;

EVP_CIPHER_CTX* ctx(void* p) { return static_cast<EVP_CIPHER_CTX*>(p); }

}  // namespace

Result<XtsKey, CryptoError> XtsKey::from_bytes(std::span<const uint8_t> bytes) {
  if (bytes.size() != kXtsKeyBytes)
    return make_error(CryptoErrc::kBadKey, "the key is " + std::to_string(bytes.size()) + " bytes, expected exactly " +
                                               std::to_string(kXtsKeyBytes) + " (two AES-256 keys)");
  if (CRYPTO_memcmp(bytes.data(), bytes.data() + kXtsKeyBytes / 2, kXtsKeyBytes / 2) == 0)
    return make_error(CryptoErrc::kBadKey, "the two 32-byte halves of the key are equal (insecure for XTS)");
  void* p = ::mmap(nullptr, kKeyPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return errno_error(CryptoErrc::kCipher, "mmap for the key");
  // Best effort: a key should not reach swap or a core dump. mlock may fail under a
  // small RLIMIT_MEMLOCK; the key is still wiped on destruction.
  if (::mlock(p, kKeyPage) != 0) LOG_WARN("key-file: mlock failed (%s); the key page may be swapped", std::strerror(errno));
  (void)::madvise(p, kKeyPage, MADV_DONTDUMP);
  XtsKey k;
  k.page_ = static_cast<uint8_t*>(p);
  std::memcpy(k.page_, bytes.data(), kXtsKeyBytes);
  return k;
}

Result<XtsKey, CryptoError> XtsKey::load(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
  if (!fd) return errno_error(CryptoErrc::kKeyFile, "key-file " + path);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return errno_error(CryptoErrc::kKeyFile, "key-file " + path);
  if (!S_ISREG(st.st_mode)) return make_error(CryptoErrc::kKeyFile, "key-file " + path + " is not a regular file");
  if ((st.st_mode & 0077) != 0)
    LOG_WARN("key-file %s is readable or writable by group or others (mode %03o)", path.c_str(),
             static_cast<unsigned>(st.st_mode & 0777));
  // Read one byte more than a key, so a longer file is recognised without a size race.
  uint8_t buf[kXtsKeyBytes + 1];
  size_t got = 0;
  while (got < sizeof buf) {
    const ssize_t n = ::read(fd.get(), buf + got, sizeof buf - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      OPENSSL_cleanse(buf, sizeof buf);
      return errno_error(CryptoErrc::kKeyFile, "key-file " + path);
    }
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  auto k = from_bytes(std::span<const uint8_t>(buf, got));
  OPENSSL_cleanse(buf, sizeof buf);
  if (!k) {
    auto e = std::move(k).error();
    e.context = "key-file " + path + ": " + e.context;
    if (got > kXtsKeyBytes) e.context = "key-file " + path + ": the file is longer than 64 bytes (expected exactly 64)";
    return Unexpected{std::move(e)};
  }
  return k;
}

XtsKey::XtsKey(XtsKey&& o) noexcept : page_(std::exchange(o.page_, nullptr)) {}
XtsKey& XtsKey::operator=(XtsKey&& o) noexcept {
  if (this != &o) {
    wipe();
    page_ = std::exchange(o.page_, nullptr);
  }
  return *this;
}
XtsKey::~XtsKey() { wipe(); }

void XtsKey::wipe() {
  if (page_ == nullptr) return;
  OPENSSL_cleanse(page_, kKeyPage);
  (void)::munlock(page_, kKeyPage);
  ::munmap(page_, kKeyPage);
  page_ = nullptr;
}

std::span<const uint8_t> XtsKey::bytes() const { return {page_, page_ != nullptr ? kXtsKeyBytes : 0}; }

Result<std::unique_ptr<XtsCipher>, CryptoError> XtsCipher::create(const XtsKey& key) {
  if (key.bytes().size() != kXtsKeyBytes) return make_error(CryptoErrc::kBadKey, "no key");
  std::unique_ptr<XtsCipher> c(new XtsCipher());
  c->enc_ = EVP_CIPHER_CTX_new();
  c->dec_ = EVP_CIPHER_CTX_new();
  if (c->enc_ == nullptr || c->dec_ == nullptr) return make_error(CryptoErrc::kCipher, "EVP_CIPHER_CTX_new failed");
  if (EVP_EncryptInit_ex(ctx(c->enc_), EVP_aes_256_xts(), nullptr, key.bytes().data(), nullptr) != 1 ||
      EVP_DecryptInit_ex(ctx(c->dec_), EVP_aes_256_xts(), nullptr, key.bytes().data(), nullptr) != 1)
    return make_error(CryptoErrc::kCipher, "OpenSSL refused the AES-256-XTS key");
  return c;
}

XtsCipher::~XtsCipher() {
  EVP_CIPHER_CTX_free(ctx(enc_));  // frees and wipes the key schedule
  EVP_CIPHER_CTX_free(ctx(dec_));
}

Result<void, CryptoError> XtsCipher::encrypt(uint64_t sector, const uint8_t* in, uint8_t* out, size_t len) {
  return run(true, sector, in, out, len);
}
Result<void, CryptoError> XtsCipher::decrypt(uint64_t sector, const uint8_t* in, uint8_t* out, size_t len) {
  return run(false, sector, in, out, len);
}

Result<void, CryptoError> XtsCipher::run(bool enc, uint64_t sector, const uint8_t* in, uint8_t* out, size_t len) {
  if (len % kSectorBytes != 0) return make_error(CryptoErrc::kCipher, "length is not a multiple of 512");
  EVP_CIPHER_CTX* c = ctx(enc ? enc_ : dec_);
  uint8_t tweak[16] = {};
  for (size_t off = 0; off < len; off += kSectorBytes, ++sector) {
    // Tweak: the 512-byte sector number, 128-bit little-endian.
    for (int i = 0; i < 8; ++i) tweak[i] = static_cast<uint8_t>(sector >> (8 * i));
    int outl = 0;
    // Re-initialising with only an IV keeps the key schedule; one Update = one XTS data unit.
    const int ok = enc ? (EVP_EncryptInit_ex(c, nullptr, nullptr, nullptr, tweak) == 1 &&
                          EVP_EncryptUpdate(c, out + off, &outl, in + off, static_cast<int>(kSectorBytes)) == 1)
                       : (EVP_DecryptInit_ex(c, nullptr, nullptr, nullptr, tweak) == 1 &&
                          EVP_DecryptUpdate(c, out + off, &outl, in + off, static_cast<int>(kSectorBytes)) == 1);
    if (!ok || outl != static_cast<int>(kSectorBytes))
      return make_error(CryptoErrc::kCipher, "AES-XTS failed at sector " + std::to_string(sector));
  }
  return {};
}

}  // namespace azote::card_blk
