// azote-card-nsm: one enclave's Nitro Secure Module over vhost-user. A thin main:
// options, signals, seccomp, then the card (card.hpp).
#include <openssl/crypto.h>

#include <cstdio>
#include <string>
#include <vector>

#include "cards/nsm/card.hpp"
#include "runtime/runtime.hpp"
#include "sandbox/seccomp.hpp"

using namespace azote;

namespace azote::card_nsm {
const sandbox::ProcessPolicy& seccomp_policy();  // generated from seccomp.json
}

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  auto parsed = card_nsm::parse_args(args);
  if (auto done = runtime::handle_common_options("azote-card-nsm", AZOTE_VERSION, parsed, card_nsm::usage_text()))
    return *done;
  const card_nsm::CardOptions& o = parsed->options;
  // OpenSSL (SHA-384, RAND_bytes) reads its configuration at first use: now, while
  // files may still be opened.
  if (OPENSSL_init_crypto(OPENSSL_INIT_LOAD_CONFIG, nullptr) != 1) {
    std::fprintf(stderr, "azote-card-nsm: error: OpenSSL cannot be initialised\n");
    return runtime::kExitOsErr;
  }
  // The image is read and measured while files may still be opened.
  auto pcrs = card_nsm::platform_pcrs(o);
  if (!pcrs.ok()) {
    std::fprintf(stderr, "azote-card-nsm: error: %s\n", pcrs.error().message().c_str());
    return runtime::kExitNoInput;
  }
  runtime::block_stop_signals();
  if (auto s = sandbox::init_process(card_nsm::seccomp_policy(),
                                     o.seccomp == "log" ? sandbox::SeccompMode::kLog : sandbox::SeccompMode::kKill);
      !s || !sandbox::enter_thread("main")) {
    std::fprintf(stderr, "azote-card-nsm: error: seccomp: %s\n",
                 s ? "cannot install the main class" : s.error().message().c_str());
    return runtime::kExitOsErr;
  }
  return card_nsm::run_card(o, *pcrs);
}
