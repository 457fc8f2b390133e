// azote-hv's process exit statuses (documented in --help and docs/design.md).
#pragma once

namespace azote::hv {

enum ExitStatus : int {
  kExitOk = 0,
  kExitUsage = 64,
  kExitImage = 65,
  kExitHostSetup = 71,
  kExitDevice = 74,  // a --device card cannot be reached or negotiated with
  kExitTripleFault = 80,
  kExitEmulationFailure = 81,
  kExitInternalError = 82,
  kExitUnhandledIo = 83,
  kExitUnhandledMmio = 84,
  kExitEntryFailure = 85,
  kExitUnexpected = 86,
  kExitSignal = 143,
};

}  // namespace azote::hv
