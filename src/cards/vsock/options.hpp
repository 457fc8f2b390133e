// azote-card-vsock's command line: one --device per VM of the fabric known at start (the
// parent, cid 3, and up to four enclaves), each with its vhost-user socket; --control for
// enclaves added and removed later. Every error names the flag and the bad value.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/error.hpp"

namespace azote::card_vsock {

enum class CardErrc { kUsage = 1, kHost };
using CardError = Error<CardErrc>;
template <class T>
using CardResult = Result<T, CardError>;

// Up to 4 enclaves per parent (ENCLAVES.md §5).
inline constexpr size_t kMaxEnclaves = 4;
inline constexpr size_t kMaxDevices = 1 + kMaxEnclaves;

struct DeviceSpec {
  uint32_t cid = 0;    // 3: the parent; 4..2^32-2: an enclave
  std::string socket;  // the vhost-user socket that VM's azote-hv connects to (0600)
};

inline constexpr size_t kMaxHostPortSpecs = 8;  // Switch's kMaxHostPorts

// --host-port PORT=PATH: the parent's streams to (2, PORT) reach the Unix socket PATH.
struct HostPortSpec {
  uint32_t port = 0;  // 1..4294967295
  std::string path;   // absolute, 1-107 bytes
};

struct CardOptions {
  std::vector<DeviceSpec> devices;  // in command-line order; exactly one has cid 3
  std::vector<HostPortSpec> host_ports;  // at most 8, ports distinct
  std::string control;              // --control: a socket path, "fd:N" (the launcher's), or "" (none)
  std::string log_level = "info";
  std::string seccomp = "kill";
};
struct ParsedArgs {
  CardOptions options;
  bool help = false;
  bool version = false;
};
CardResult<ParsedArgs> parse_args(const std::vector<std::string>& args);
// "cid=N,socket=PATH" (either order).
CardResult<DeviceSpec> parse_device(const std::string& value);
// "PORT=PATH".
CardResult<HostPortSpec> parse_host_port(const std::string& value);
const char* usage_text();

}  // namespace azote::card_vsock
