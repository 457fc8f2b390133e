// azote-hv: one process per VM. Parses the configuration, builds the VM, runs it, and
// exits with the guest's status (see --help for the table).
#include <cstdio>
#include <variant>

#include "base/log.hpp"
#include "hv/config.hpp"
#include "hv/exit_status.hpp"
#include "hv/vm.hpp"
#include "sandbox/seccomp.hpp"

namespace azote::hv {
const sandbox::ProcessPolicy& seccomp_policy();  // generated from seccomp.json
}

using namespace azote;

int main(int argc, char** argv) {
  auto parsed = hv::parse_args(argc, argv);
  if (!parsed.ok()) {
    std::fprintf(stderr, "azote-hv: error: %s\n", parsed.error().message().c_str());
    return hv::kExitUsage;
  }
  if (std::holds_alternative<hv::ShowHelp>(*parsed)) {
    std::fputs(hv::usage_text(), stdout);
    return 0;
  }
  if (std::holds_alternative<hv::ShowVersion>(*parsed)) {
    std::printf("azote-hv %s\n", AZOTE_VERSION);
    return 0;
  }
  const auto& cfg = std::get<hv::VmConfig>(*parsed);
  // Also non-dumpable from here on: guest memory is never in a core dump, and no other
  // process of this uid may ptrace this one or read its memory through /proc.
  if (auto s = sandbox::init_process(hv::seccomp_policy(), cfg.seccomp); !s) {
    std::fprintf(stderr, "azote-hv: error: %s\n", s.error().message().c_str());
    return hv::kExitHostSetup;
  }
  if (cfg.verbose) log::set_level(log::Level::kInfo);
  std::FILE* logf = nullptr;
  if (!cfg.log_path.empty()) {
    logf = std::fopen(cfg.log_path.c_str(), "ae");
    if (logf == nullptr) {
      std::fprintf(stderr, "azote-hv: error: --log: cannot open %s\n", cfg.log_path.c_str());
      return hv::kExitUsage;
    }
    log::set_sink(logf);
  }

  auto vm = hv::Vm::create(cfg);
  if (!vm.ok()) {
    std::fprintf(stderr, "azote-hv: error: %s\n", vm.error().message().c_str());
    switch (vm.error().code) {
      case hv::VmErrc::kImage: return hv::kExitImage;
      case hv::VmErrc::kConsole: return hv::kExitUsage;
      case hv::VmErrc::kHost: return hv::kExitHostSetup;
      case hv::VmErrc::kDevice: return hv::kExitDevice;
    }
    return hv::kExitHostSetup;
  }
  const int status = (*vm)->run();
  vm.value().reset();
  if (logf != nullptr) std::fclose(logf);
  return status;
}
