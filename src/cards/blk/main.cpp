// azote-card-blk: serves virtio-blk volumes to hypervisors over vhost-user. A thin
// main: options, signals, then the Card (see card.hpp and DESIGN.md).
#include <cstdio>
#include <string>
#include <vector>

#include "base/log.hpp"
#include "cards/blk/card.hpp"
#include "cards/blk/options.hpp"
#include "runtime/runtime.hpp"

using namespace azote;
using namespace azote::card_blk;

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  auto parsed = parse_args(args);
  if (!parsed) {
    std::fprintf(stderr, "azote-card-blk: error: %s\n", parsed.error().message().c_str());
    return kExitUsage;
  }
  if (parsed->help) {
    std::fputs(usage_text(), stdout);
    return kExitOk;
  }
  if (parsed->version) {
    std::printf("azote-card-blk %s\n", AZOTE_VERSION);
    return kExitOk;
  }
  const CardOptions& o = parsed->options;
  log::set_level(log::level_from_name(o.log_level));

  // Before any thread exists: SIGTERM/SIGINT go to the control loop's signalfd.
  runtime::block_stop_signals();

  auto card = Card::create(o);
  if (!card) {
    std::fprintf(stderr, "azote-card-blk: error: %s\n", card.error().message().c_str());
    return card.error().code == CardErrc::kVolume ? kExitNoInput : kExitOsErr;
  }
  const int status = (*card)->run();
  card.value().reset();
  return status;
}
