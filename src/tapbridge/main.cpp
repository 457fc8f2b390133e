// azote-tap-bridge: a Linux TAP device attached to an ENI of azote-card-net, the bridge
// being the ENI's virtio-net driver and vhost-user frontend. A thin main: options,
// signals, then the Bridge (bridge.hpp, DESIGN.md).
#include <cstdio>
#include <string>
#include <vector>

#include "runtime/runtime.hpp"
#include "tapbridge/bridge.hpp"
#include "tapbridge/options.hpp"

using namespace azote;
using namespace azote::tapbridge;

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  auto parsed = parse_args(args);
  if (auto done = runtime::handle_common_options("azote-tap-bridge", AZOTE_VERSION, parsed, usage_text(), kExitUsage))
    return *done;
  const BridgeOptions& o = parsed->options;

  // SIGTERM/SIGINT go to the loop's signalfd, also while the card is being reached.
  runtime::block_stop_signals();

  auto bridge = Bridge::create(o);
  if (!bridge) {
    std::fprintf(stderr, "azote-tap-bridge: error: %s\n", bridge.error().message().c_str());
    return kExitFailure;
  }
  std::printf("azote-tap-bridge: %s up mac=%s mtu=%u\n", (*bridge)->tap_name().c_str(), (*bridge)->mac_text().c_str(),
              (*bridge)->mtu());
  std::fflush(stdout);
  return (*bridge)->run();
}
