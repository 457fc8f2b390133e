// azote-controller's command line. Pure parsing.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/error.hpp"

namespace azote::controller {

enum class OptionsErrc { kUsage = 1 };
using OptionsError = Error<OptionsErrc>;

struct Options {
  std::string state_dir = "/var/lib/azote";
  std::string listen;  // "unix:PATH" or "HOST:PORT"; default unix:STATE/api.sock
  std::string hv_bin, card_blk_bin, card_net_bin;  // default: next to this program
  std::string region = "local-1";
  std::string vpc_cidr = "10.0.0.0/16", subnet_cidr = "10.0.1.0/24";
  uint32_t capacity_vcpus = 0;
  uint64_t capacity_memory_mib = 0;
  bool stop_on_exit = false;
  std::string metrics_textfile;  // written every 5 s for node_exporter's textfile collector
  std::string log_level = "info";
  bool help = false, version = false;
};

Result<Options, OptionsError> parse_options(const std::vector<std::string>& args);
const char* usage_text();

}  // namespace azote::controller
