// SHA-384 and hex for tests that recompute measurements themselves (with OpenSSL, not
// through the code under test).
#pragma once

#include <openssl/evp.h>

#include <string>

namespace azote::test {

inline std::string sha384(const std::string& bytes) {
  unsigned char d[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_Digest(bytes.data(), bytes.size(), d, &n, EVP_sha384(), nullptr);
  return std::string(reinterpret_cast<char*>(d), n);
}

inline std::string hex(const std::string& bytes) {
  static const char* x = "0123456789abcdef";
  std::string s;
  for (unsigned char c : bytes) s += {x[c >> 4], x[c & 15]};
  return s;
}

// A PCR extended once from zero with `data`: SHA-384(48 zero bytes || data).
inline std::string pcr_from_zero(const std::string& data) { return hex(sha384(std::string(48, '\0') + data)); }

}  // namespace azote::test
