// The audit module's one error type.
#pragma once

#include "base/error.hpp"

namespace azote::audit {

enum class AuditErrc {
  kIo = 1,     // a file could not be read, written, synced or renamed
  kCrypto,     // OpenSSL failed (out of memory, provider missing)
  kBadKey,     // a key file or PEM is unreadable or not Ed25519
  kInvalid,    // a caller's argument is unusable (unknown outcome, record too large)
  kCorrupt,    // the log or its head file fails verification: never extended
  kBusy,       // another AuditLog (this or another process) has the log open
  kBroken,     // an earlier append failed; the log refuses appends until reopened
};
using AuditError = Error<AuditErrc>;
template <class T>
using AuditResult = Result<T, AuditError>;

}  // namespace azote::audit
