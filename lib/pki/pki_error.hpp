// The one error type of lib/pki. Every refusal of a client certificate is kRefused with a
// one-sentence reason as the context (safe to log and to return to the peer).
#pragma once

#include "base/error.hpp"

namespace azote::pki {

enum class PkiErrc {
  kIo = 1,     // a file or directory operation failed (errnum set)
  kMissing,    // a PKI directory is incomplete (context names the missing files)
  kCorrupt,    // a file exists but does not parse, or does not match its pair
  kInsecure,   // a private key file is readable by group or others
  kInvalid,    // a bad argument (role, name, serial, validity, sizes)
  kCrypto,     // OpenSSL failed (context carries its error string)
  kRefused,    // verify_client refused the certificate (context says why)
  kUnwrap,     // unwrap_key: short, unknown version, tampered, wrong key or context
  kNotIssued,  // revoke: a serial this CA never issued (not in its `issued` list)
};
using PkiError = Error<PkiErrc>;
template <class T>
using PkiResult = Result<T, PkiError>;

}  // namespace azote::pki
