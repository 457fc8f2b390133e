// azote-rot: the host's root of trust (rot.hpp). A thin main: options, the device
// secret and the DICE chain, then the control socket until SIGTERM/SIGINT.
#include <sys/prctl.h>
#include <sys/resource.h>

#include <cstdio>
#include <string>
#include <vector>

#include "rot/rot.hpp"
#include "runtime/runtime.hpp"
#include "sandbox/seccomp.hpp"

using namespace azote;

namespace azote::rot {
const sandbox::ProcessPolicy& seccomp_policy();  // generated from seccomp.json
}

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  auto parsed = rot::parse_args(args);
  if (auto done = runtime::handle_common_options("azote-rot", AZOTE_VERSION, parsed, rot::usage_text())) return *done;
  runtime::block_stop_signals();
  // The device secret and the layers' secrets live in this process: no core dump, no
  // ptrace or /proc/PID/mem from this uid.
  ::prctl(PR_SET_DUMPABLE, 0);
  const rlimit no_core{0, 0};
  ::setrlimit(RLIMIT_CORE, &no_core);
  auto r = rot::Rot::start(parsed->options);
  if (!r) {
    std::fprintf(stderr, "azote-rot: error: %s\n", r.error().message().c_str());
    switch (r.error().code) {
      case rot::RotErrc::kUsage: return runtime::kExitUsage;
      case rot::RotErrc::kLayer: return runtime::kExitNoInput;
      case rot::RotErrc::kState:
      case rot::RotErrc::kCrypto: break;
    }
    return runtime::kExitOsErr;
  }
  std::printf("%s\n", (*r)->describe().dump().c_str());
  std::fflush(stdout);
  // Set up: from here it only serves its socket, under its seccomp allowlist.
  if (auto s = sandbox::init_process(rot::seccomp_policy(), parsed->options.seccomp); !s) {
    std::fprintf(stderr, "azote-rot: error: %s\n", s.error().message().c_str());
    return runtime::kExitOsErr;
  }
  if (auto s = sandbox::enter_thread("main", "azote-rot"); !s) {
    std::fprintf(stderr, "azote-rot: error: %s\n", s.error().message().c_str());
    return runtime::kExitOsErr;
  }
  return (*r)->run();
}
