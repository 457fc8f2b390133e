// SHA-384 and hex for tests that recompute measurements themselves (with OpenSSL, not
// through the code under test).
#pragma once

#include <openssl/evp.h>

#include <map>
#include <sstream>
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

// `bytes` under `md` (raw).
inline std::string digest(const EVP_MD* md, const std::string& bytes) {
  unsigned char d[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_Digest(bytes.data(), bytes.size(), d, &n, md, nullptr);
  return std::string(reinterpret_cast<char*>(d), n);
}

// A TPM PCR of `md`'s bank extended once from zero with the digest of `data` (what a
// measured boot leaves in it), hex.
inline std::string tpm_pcr_of(const EVP_MD* md, const std::string& data) {
  const std::string d = digest(md, data);
  return hex(digest(md, std::string(d.size(), '\0') + d));
}

// Upper-case hex, as tpm2-tools prints PCR values.
inline std::string upper(std::string s) {
  for (char& c : s)
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  return s;
}

// "bank index" -> hex, from the built-in guest's "azote-guest: tpm-pcr BANK INDEX HEX"
// lines (a later line wins: the last boot's).
inline std::map<std::string, std::string> guest_tpm_pcrs(const std::string& out) {
  std::map<std::string, std::string> m;
  std::istringstream in(out);
  for (std::string l; std::getline(in, l);) {
    std::istringstream s(l);
    std::string tag, word, bank, index, value;
    s >> tag >> word >> bank >> index >> value;
    if (tag == "azote-guest:" && word == "tpm-pcr") m[bank + " " + index] = value;
  }
  return m;
}

}  // namespace azote::test
