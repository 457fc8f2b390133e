// azote-card-net: the VPC card. Serves virtio-net devices (ENIs) to hypervisors over
// vhost-user. A thin main: options, signals, then the Card (card.hpp, DESIGN.md).
#include <cstdio>
#include <string>
#include <vector>

#include "cards/net/card.hpp"
#include "cards/net/options.hpp"
#include "imds/service.hpp"
#include "runtime/runtime.hpp"
#include "sandbox/seccomp.hpp"

using namespace azote;
using namespace azote::card_net;

namespace azote::card_net {
const sandbox::ProcessPolicy& seccomp_policy();  // generated from seccomp.json
}

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  auto parsed = parse_args(args);
  if (auto done = runtime::handle_common_options("azote-card-net", AZOTE_VERSION, parsed, usage_text())) return *done;
  CardOptions o = parsed->options;

  // Before any thread exists: SIGTERM/SIGINT go to the control loop's signalfd.
  runtime::block_stop_signals();
  // The metadata service's namespace: handed over by the launcher (--imds-fds), or made
  // here while this process may still (root, run by hand) and before its filter exists.
  if (o.imds && o.imds_tun_fd < 0) {
    if (auto ns = imds::Service::private_namespace()) {
      o.imds_tun_fd = ns->tun.release();
      o.imds_listen_fd = ns->listen.release();
    } else {
      o.imds_unavailable = ns.error().message();
    }
  }
  // Every thread from here on (the metadata service's and the workers' included) runs
  // under this card's allowlists (seccomp.json): main's, plus its own class.
  if (auto s = sandbox::init_process(seccomp_policy(), o.seccomp == "log" ? sandbox::SeccompMode::kLog
                                                                           : sandbox::SeccompMode::kKill);
      !s || !sandbox::enter_thread("main")) {
    std::fprintf(stderr, "azote-card-net: error: seccomp: %s\n", s ? "cannot install the main class" : s.error().message().c_str());
    return kExitOsErr;
  }

  auto card = Card::create(o);
  if (!card) {
    std::fprintf(stderr, "azote-card-net: error: %s\n", card.error().message().c_str());
    return card.error().code == CardErrc::kModel ? kExitNoInput : kExitOsErr;
  }
  const int status = (*card)->run();
  card.value().reset();
  return status;
}
