// RAII owners for the OpenSSL objects lib/pki uses (unique_ptr with the matching free
// function), and two small helpers. Used by the library and its tests; nothing here
// is needed by callers of pki.hpp / keywrap.hpp.
#pragma once

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <limits>
#include <memory>
#include <string>
#include <string_view>

namespace azote::pki::ossl {

template <auto Fn>
struct Free {
  template <class T>
  void operator()(T* p) const {
    if (p != nullptr) Fn(p);
  }
};

inline void free_string(char* p) { OPENSSL_free(p); }
inline void free_bytes(unsigned char* p) { OPENSSL_free(p); }

using BioPtr = std::unique_ptr<BIO, Free<BIO_free_all>>;
using X509Ptr = std::unique_ptr<X509, Free<X509_free>>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, Free<EVP_PKEY_free>>;
using StorePtr = std::unique_ptr<X509_STORE, Free<X509_STORE_free>>;
using StoreCtxPtr = std::unique_ptr<X509_STORE_CTX, Free<X509_STORE_CTX_free>>;
using CipherCtxPtr = std::unique_ptr<EVP_CIPHER_CTX, Free<EVP_CIPHER_CTX_free>>;
using BnPtr = std::unique_ptr<BIGNUM, Free<BN_free>>;
using ExtPtr = std::unique_ptr<X509_EXTENSION, Free<X509_EXTENSION_free>>;
using StringPtr = std::unique_ptr<char, Free<free_string>>;
using BytesPtr = std::unique_ptr<unsigned char, Free<free_bytes>>;

// Drains this thread's OpenSSL error queue into one line ("" if it was empty).
inline std::string take_errors() {
  std::string out;
  char buf[256];
  while (unsigned long e = ERR_get_error()) {
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out;
}

// A read-only memory BIO over `s` (which must outlive it).
inline BioPtr mem_bio(std::string_view s) {
  if (s.size() > static_cast<size_t>(std::numeric_limits<int>::max())) return nullptr;
  return BioPtr(BIO_new_mem_buf(s.data(), static_cast<int>(s.size())));
}

// The first certificate in `pem`, or nullptr.
inline X509Ptr parse_cert(std::string_view pem) {
  BioPtr bio = mem_bio(pem);
  if (!bio) return nullptr;
  return X509Ptr(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
}

}  // namespace azote::pki::ossl
