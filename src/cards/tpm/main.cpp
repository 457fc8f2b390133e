// azote-card-tpm: one instance's TPM 2.0 (libtpms) on a Unix socket. A thin main:
// options, signals, seccomp, then the Card (see card.hpp and DESIGN.md).
#include <openssl/crypto.h>

#include <cstdio>
#include <string>
#include <vector>

#include "cards/tpm/card.hpp"
#include "cards/tpm/options.hpp"
#include "runtime/runtime.hpp"
#include "sandbox/seccomp.hpp"

using namespace azote;
using namespace azote::card_tpm;

namespace azote::card_tpm {
const sandbox::ProcessPolicy& seccomp_policy();  // generated from seccomp.json
}

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  auto parsed = parse_args(args);
  if (auto done = runtime::handle_common_options("azote-card-tpm", AZOTE_VERSION, parsed, usage_text())) return *done;
  const CardOptions& o = parsed->options;

  // OpenSSL (libtpms's crypto, the state's AES-GCM) reads its configuration file at its
  // first use: now, while the card may still open files (its filter allows no openat).
  if (OPENSSL_init_crypto(OPENSSL_INIT_LOAD_CONFIG, nullptr) != 1) {
    std::fprintf(stderr, "azote-card-tpm: error: OpenSSL cannot be initialised\n");
    return kExitOsErr;
  }
  // Before any thread exists: SIGTERM/SIGINT go to the control loop's signalfd.
  runtime::block_stop_signals();
  // Every thread from here on runs under this card's allowlists (seccomp.json): main's,
  // plus its own class (the TPM thread, the metrics endpoint).
  if (auto s = sandbox::init_process(seccomp_policy(), o.seccomp == "log" ? sandbox::SeccompMode::kLog
                                                                           : sandbox::SeccompMode::kKill);
      !s || !sandbox::enter_thread("main")) {
    std::fprintf(stderr, "azote-card-tpm: error: seccomp: %s\n", s ? "cannot install the main class" : s.error().message().c_str());
    return kExitOsErr;
  }

  auto card = Card::create(o);
  if (!card) {
    std::fprintf(stderr, "azote-card-tpm: error: %s\n", card.error().message().c_str());
    return kExitOsErr;
  }
  const int status = (*card)->run();
  card.value().reset();
  return status;
}
