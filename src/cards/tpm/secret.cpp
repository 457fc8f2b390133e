#include "cards/tpm/secret.hpp"

#include <openssl/crypto.h>
#include <sys/mman.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <utility>

#include "base/log.hpp"

namespace azote::card_tpm {
namespace {

constexpr size_t kKeyPage = 4096;

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

SecretBytes::SecretBytes(SecretBytes&& o) noexcept : bytes_(std::move(o.bytes_)) { o.bytes_.clear(); }

SecretBytes& SecretBytes::operator=(SecretBytes&& o) noexcept {
  if (this != &o) {
    clear();
    bytes_ = std::move(o.bytes_);
    o.bytes_.clear();
  }
  return *this;
}

void SecretBytes::clear() {
  if (!bytes_.empty()) OPENSSL_cleanse(bytes_.data(), bytes_.size());
  bytes_.clear();
}

TpmResult<StateKey> StateKey::from_bytes(std::span<const uint8_t> bytes) {
  if (bytes.size() != kStateKeyBytes)
    return make_error(TpmErrc::kUsage, "the state key is " + std::to_string(bytes.size()) + " bytes, expected " +
                                           std::to_string(kStateKeyBytes));
  void* p = ::mmap(nullptr, kKeyPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return errno_error(TpmErrc::kHost, "mmap for the state key");
  // Best effort: mlock may fail under a small RLIMIT_MEMLOCK; the key is still wiped.
  if (::mlock(p, kKeyPage) != 0) LOG_WARN("state key: mlock failed (%s); its page may be swapped", std::strerror(errno));
  (void)::madvise(p, kKeyPage, MADV_DONTDUMP);
  StateKey k;
  k.page_ = static_cast<uint8_t*>(p);
  std::memcpy(k.page_, bytes.data(), kStateKeyBytes);
  return k;
}

TpmResult<StateKey> StateKey::from_hex(std::string_view hex, std::string_view what) {
  const std::string bad = std::string(what) + " must be " + std::to_string(2 * kStateKeyBytes) + " hex digits (" +
                          std::to_string(kStateKeyBytes) + " bytes)";
  if (hex.size() != 2 * kStateKeyBytes) return make_error(TpmErrc::kUsage, bad);
  uint8_t raw[kStateKeyBytes];
  for (size_t i = 0; i < kStateKeyBytes; ++i) {
    const int hi = hex_digit(hex[2 * i]), lo = hex_digit(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) {
      OPENSSL_cleanse(raw, sizeof raw);
      return make_error(TpmErrc::kUsage, bad);
    }
    raw[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  auto k = from_bytes(raw);
  OPENSSL_cleanse(raw, sizeof raw);
  return k;
}

StateKey::StateKey(StateKey&& o) noexcept : page_(std::exchange(o.page_, nullptr)) {}

StateKey& StateKey::operator=(StateKey&& o) noexcept {
  if (this != &o) {
    release();
    page_ = std::exchange(o.page_, nullptr);
  }
  return *this;
}

void StateKey::release() {
  if (page_ == nullptr) return;
  OPENSSL_cleanse(page_, kKeyPage);
  (void)::munlock(page_, kKeyPage);
  ::munmap(page_, kKeyPage);
  page_ = nullptr;
}

}  // namespace azote::card_tpm
