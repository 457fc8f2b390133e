#include "controller/host_shared.hpp"

#include <signal.h>

#include <fstream>
#include <iterator>

#include "control/control.hpp"

namespace azote::controller::host_shared {

std::string read_tail(const std::string& path, size_t max) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return {};
  f.seekg(0, std::ios::end);
  const std::streamoff size = f.tellg();
  const std::streamoff from = size > static_cast<std::streamoff>(max) ? size - static_cast<std::streamoff>(max) : 0;
  f.seekg(from);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

bool answers(const std::string& ctl, std::chrono::milliseconds timeout) {
  auto r = control::call_once(ctl, {{"op", "ping"}}, timeout);
  return r.ok() || r.error().code == control::ControlErrc::kRefused;
}

std::string exit_reason(int status) {
  switch (status) {
    case 64: return "the hypervisor refused its configuration (status 64)";
    case 65: return "the kernel image could not be loaded (status 65)";
    case 71: return "the hypervisor could not set up host resources (status 71)";
    case 74: return "a card could not be reached (status 74)";
    case 80: return "the guest triple-faulted (status 80)";
    case 81: return "the guest ran an instruction the hypervisor cannot emulate (status 81)";
    case 137: return "the hypervisor was killed (SIGKILL)";
    case 128 + SIGSYS: return "the hypervisor was killed by its seccomp filter (SIGSYS)";
    case -1: return "the hypervisor exited; its status is unknown (adopted after a controller restart)";
    default: return "the hypervisor exited with status " + std::to_string(status);
  }
}

}  // namespace azote::controller::host_shared
