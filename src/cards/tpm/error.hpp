// The one error type of azote-card-tpm: a code, the errno (0 if none) and a sentence
// naming what failed (the state file, the socket, the request field).
#pragma once

#include "base/error.hpp"

namespace azote::card_tpm {

enum class TpmErrc {
  kUsage = 1,  // a bad command line or control request
  kState,      // the state file cannot be read, written or parsed, or the state does not fit a slot
  kAuth,       // the state file does not authenticate under the key given (wrong key or tampering)
  kBusy,       // a TPM is already open in this card
  kHost,       // sockets, epoll, memory
  kTpm,        // libtpms failed
  kRot,        // azote-rot could not be reached, refused or answered badly
};
using TpmError = Error<TpmErrc>;
template <class T>
using TpmResult = Result<T, TpmError>;

}  // namespace azote::card_tpm
