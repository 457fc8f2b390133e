// azote-tap-bridge: a Linux TAP device attached to an ENI of azote-card-net, the bridge
// being the ENI's virtio-net driver and vhost-user frontend. A thin main: options,
// signals, then the Bridge (bridge.hpp, DESIGN.md).
#include <signal.h>

#include <cstdio>
#include <string>
#include <vector>

#include "base/log.hpp"
#include "tapbridge/bridge.hpp"
#include "tapbridge/options.hpp"

using namespace azote;
using namespace azote::tapbridge;

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  auto parsed = parse_args(args);
  if (!parsed) {
    std::fprintf(stderr, "azote-tap-bridge: error: %s\n", parsed.error().message().c_str());
    return kExitUsage;
  }
  if (parsed->help) {
    std::fputs(usage_text(), stdout);
    return kExitOk;
  }
  if (parsed->version) {
    std::printf("azote-tap-bridge %s\n", AZOTE_VERSION);
    return kExitOk;
  }
  const BridgeOptions& o = parsed->options;
  log::set_level(log::level_from_name(o.log_level));

  // SIGTERM/SIGINT go to the loop's signalfd, also while the card is being reached;
  // a card closing its socket is an error return, not a signal.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigprocmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);

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
