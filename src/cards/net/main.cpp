// azote-card-net: the VPC card. Serves virtio-net devices (ENIs) to hypervisors over
// vhost-user. A thin main: options, signals, then the Card (card.hpp, DESIGN.md).
#include <cstdio>
#include <string>
#include <vector>

#include "cards/net/card.hpp"
#include "cards/net/options.hpp"
#include "runtime/runtime.hpp"

using namespace azote;
using namespace azote::card_net;

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  auto parsed = parse_args(args);
  if (auto done = runtime::handle_common_options("azote-card-net", AZOTE_VERSION, parsed, usage_text())) return *done;
  const CardOptions& o = parsed->options;

  // Before any thread exists: SIGTERM/SIGINT go to the control loop's signalfd.
  runtime::block_stop_signals();

  auto card = Card::create(o);
  if (!card) {
    std::fprintf(stderr, "azote-card-net: error: %s\n", card.error().message().c_str());
    return card.error().code == CardErrc::kModel ? kExitNoInput : kExitOsErr;
  }
  const int status = (*card)->run();
  card.value().reset();
  return status;
}
