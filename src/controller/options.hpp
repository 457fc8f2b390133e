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
  std::string underlay;  // "IPV4:PORT": this host's address on the fabric between hosts (region hosts)
  // Joining azote-region by itself (enrol.hpp): its URL, a one-time token, the region's
  // CA, this host's zone and id there (default: the machine's hostname).
  std::string join, enrolment_token, region_ca, zone, host_id;
  std::string vpc_cidr = "10.0.0.0/16", subnet_cidr = "10.0.1.0/24";
  uint32_t capacity_vcpus = 0;
  uint64_t capacity_memory_mib = 0;
  bool stop_on_exit = false;
  std::string metrics_textfile;  // written every 5 s for node_exporter's textfile collector
  std::string log_level = "info";
  // The privileged launcher: azote-controller started as root execs azote-launcher,
  // which starts it again unprivileged with --launcher-fd (its end of the launcher's
  // socket).
  int launcher_fd = -1;
  uint32_t uid_base = 2'000'000'000;
  bool favordynmods = true;  // --cgroup-favordynmods, passed to azote-launcher
  std::string write_guard = "auto";  // --write-guard auto|on|off, passed to azote-launcher
  int guard_rehash_seconds = 60;     // --guard-rehash-seconds, passed to azote-launcher
  std::string release_manifest, release_key;  // verified launch, passed to azote-launcher
  std::string probe_bin, test_socket;  // tests only: passed to the launcher
  std::string card_cpus;               // --card-cpus: "" default, "none", or a list
  uint32_t test_launch_delay_ms = 0;
  uint32_t dedicated_per_cpu = 1;      // --dedicated-vcpus-per-cpu   // tests only: a pause in every launch after the empty shell
  // --enclave-host-port PORT=NAME: a parent's connections to the host (vsock CID 2) on
  // PORT reach the host socket <state>/host/NAME (e.g. azote-kms's), through its vsock card.
  std::vector<std::pair<uint32_t, std::string>> enclave_host_ports;
  bool help = false, version = false;
};

Result<Options, OptionsError> parse_options(const std::vector<std::string>& args);
const char* usage_text();

}  // namespace azote::controller
