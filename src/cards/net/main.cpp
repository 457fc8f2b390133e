// azote-card-net: the VPC card. Serves virtio-net devices (ENIs) to hypervisors over
// vhost-user. A thin main: options, signals, then the Card (card.hpp, DESIGN.md).
#include <signal.h>

#include <cstdio>
#include <string>
#include <vector>

#include "base/log.hpp"
#include "cards/net/card.hpp"
#include "cards/net/options.hpp"

using namespace azote;
using namespace azote::card_net;

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  auto parsed = parse_args(args);
  if (!parsed) {
    std::fprintf(stderr, "azote-card-net: error: %s\n", parsed.error().message().c_str());
    return kExitUsage;
  }
  if (parsed->help) {
    std::fputs(usage_text(), stdout);
    return kExitOk;
  }
  if (parsed->version) {
    std::printf("azote-card-net %s\n", AZOTE_VERSION);
    return kExitOk;
  }
  const CardOptions& o = parsed->options;
  log::set_level(log::level_from_name(o.log_level));

  // Before any thread exists: SIGTERM/SIGINT go to the control loop's signalfd, and a
  // peer closing a socket is an error return, not a signal.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);

  auto card = Card::create(o);
  if (!card) {
    std::fprintf(stderr, "azote-card-net: error: %s\n", card.error().message().c_str());
    return card.error().code == CardErrc::kModel ? kExitNoInput : kExitOsErr;
  }
  const int status = (*card)->run();
  card.value().reset();
  return status;
}
