// azote-card-vsock: the vsock fabric of a parent instance and its enclaves over
// vhost-user. A thin main: options, signals, seccomp, then the card (card.hpp).
#include <cstdio>
#include <string>
#include <vector>

#include "cards/vsock/card.hpp"
#include "runtime/runtime.hpp"
#include "sandbox/seccomp.hpp"

using namespace azote;

namespace azote::card_vsock {
const sandbox::ProcessPolicy& seccomp_policy();  // generated from seccomp.json
}

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  auto parsed = card_vsock::parse_args(args);
  if (auto done = runtime::handle_common_options("azote-card-vsock", AZOTE_VERSION, parsed, card_vsock::usage_text()))
    return *done;
  const card_vsock::CardOptions& o = parsed->options;
  runtime::block_stop_signals();
  if (auto s = sandbox::init_process(card_vsock::seccomp_policy(),
                                     o.seccomp == "log" ? sandbox::SeccompMode::kLog : sandbox::SeccompMode::kKill);
      !s || !sandbox::enter_thread("main")) {
    std::fprintf(stderr, "azote-card-vsock: error: seccomp: %s\n",
                 s ? "cannot install the main class" : s.error().message().c_str());
    return runtime::kExitOsErr;
  }
  return card_vsock::run_card(o);
}
