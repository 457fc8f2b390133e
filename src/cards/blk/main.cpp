// azote-card-blk: serves virtio-blk volumes to hypervisors over vhost-user. A thin
// main: options, signals, then the Card (see card.hpp and DESIGN.md).
#include <cstdio>
#include <string>
#include <vector>

#include "cards/blk/card.hpp"
#include "cards/blk/options.hpp"
#include "runtime/runtime.hpp"
#include "sandbox/seccomp.hpp"

using namespace azote;
using namespace azote::card_blk;

namespace azote::card_blk {
const sandbox::ProcessPolicy& seccomp_policy();  // generated from seccomp.json
}

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  auto parsed = parse_args(args);
  if (auto done = runtime::handle_common_options("azote-card-blk", AZOTE_VERSION, parsed, usage_text())) return *done;
  const CardOptions& o = parsed->options;

  // Before any thread exists: SIGTERM/SIGINT go to the control loop's signalfd.
  runtime::block_stop_signals();
  // Every thread from here on runs under this card's allowlists (seccomp.json): main's,
  // plus its own class (queue workers, the metrics endpoint).
  if (auto s = sandbox::init_process(seccomp_policy(), o.seccomp == "log" ? sandbox::SeccompMode::kLog
                                                                           : sandbox::SeccompMode::kKill);
      !s || !sandbox::enter_thread("main")) {
    std::fprintf(stderr, "azote-card-blk: error: seccomp: %s\n", s ? "cannot install the main class" : s.error().message().c_str());
    return kExitOsErr;
  }

  auto card = Card::create(o);
  if (!card) {
    std::fprintf(stderr, "azote-card-blk: error: %s\n", card.error().message().c_str());
    return card.error().code == CardErrc::kVolume ? kExitNoInput : kExitOsErr;
  }
  const int status = (*card)->run();
  card.value().reset();
  return status;
}
