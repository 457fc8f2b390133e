// azote-launcher: options, then the Launcher (see launcher.hpp and DESIGN.md).
#include <cstdio>

#include "base/log.hpp"
#include "launcher/launcher.hpp"

using namespace azote;

int main(int argc, char** argv) {
  auto o = launcher::parse_args(std::vector<std::string>(argv + 1, argv + argc));
  if (!o) {
    std::fprintf(stderr, "azote-launcher: error: %s\n", o.error().message().c_str());
    return 64;
  }
  if (o->help) {
    std::fputs(launcher::usage_text(), stdout);
    return 0;
  }
  if (o->version) {
    std::printf("azote-launcher %s\n", AZOTE_VERSION);
    return 0;
  }
  log::set_level(log::Level::kInfo);
  auto l = launcher::Launcher::create(std::move(o).value());
  if (!l) {
    std::fprintf(stderr, "azote-launcher: error: %s\n", l.error().message().c_str());
    return l.error().code == launcher::LauncherErrc::kUsage ? 64 : 71;
  }
  return (*l)->run();
}
