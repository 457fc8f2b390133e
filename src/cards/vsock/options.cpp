#include "cards/vsock/options.hpp"

#include <limits>
#include <set>

#include "base/parse.hpp"
#include "cards/vsock/packet.hpp"

namespace azote::card_vsock {
namespace {

Unexpected<CardError> usage(std::string what) { return make_error(CardErrc::kUsage, std::move(what)); }

}  // namespace

const char* usage_text() {
  return R"(usage: azote-card-vsock --device cid=3,socket=PATH [--device cid=N,socket=PATH ...]
                        [--host-port PORT=PATH ...] [--control PATH|fd:N]
                        [--log-level LEVEL] [--seccomp kill|log]

The vsock fabric of one parent instance and its enclaves (ENCLAVES.md §6): one
virtio-vsock device (virtio id 19) per VM over vhost-user, stream packets switched
between them. The parent is always CID 3; each enclave has a CID >= 4 and talks only
to its parent (never to another enclave, never to the host); the parent talks to its
enclaves. Anything else is answered with a reset (RST). Connections are not
terminated here: credit flow control stays between the two guests.

  --device cid=N,socket=PATH
                      one VM's device: cid 3 for the parent (exactly one), 4..4294967294
                      for an enclave (at most 4, distinct); its azote-hv connects to the
                      vhost-user socket PATH (created with mode 0600; `azote-hv --device
                      vsock,socket=PATH`). A path may not contain a comma.
                      Only the parent's is needed: enclaves may come later through
                      --control.
  --control PATH|fd:N Listen for the host controller on a Unix socket (mode 0600, JSON
                      lines; fd:N: a listening socket handed over by the launcher):
                      {"op":"add-device","cid":N,"socket":"/abs/path"} serves a new
                      enclave (its socket made with mode 0666: its directory decides
                      who reaches it), {"op":"remove-device","cid":N} takes one away
                      (the parent's connections with it reset), {"op":"describe"},
                      {"op":"ping"}.
  --host-port PORT=PATH
                      The host bridge (the parent only, at most 8): the parent's stream
                      connections to the host (CID 2) port PORT (1-4294967295) are ended
                      by the card and relayed to the Unix stream socket PATH (absolute,
                      1-107 bytes); enclaves never reach the host. Control ops:
                      {"op":"add-host-port","port":N,"socket":"/abs/path"},
                      {"op":"remove-host-port","port":N}.
  --log-level LEVEL   error, warn, info (default), debug
  --seccomp MODE      kill (default) or log (src/cards/vsock/seccomp.json)
  --help, --version
)";
}

CardResult<DeviceSpec> parse_device(const std::string& value) {
  const std::string origin = "--device \"" + value + "\"";
  DeviceSpec d;
  bool have_cid = false, have_socket = false;
  size_t pos = 0;
  while (pos <= value.size()) {
    const size_t comma = value.find(',', pos);
    const std::string part = value.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    pos = comma == std::string::npos ? value.size() + 1 : comma + 1;
    const size_t eq = part.find('=');
    if (eq == std::string::npos) return usage(origin + ": \"" + part + "\" is not KEY=VALUE (known keys: cid, socket)");
    const std::string key = part.substr(0, eq);
    const std::string val = part.substr(eq + 1);
    if (key == "cid") {
      if (have_cid) return usage(origin + ": cid given twice");
      have_cid = true;
      // Parsed as 64 bits first, so a value past 32 bits is named as such.
      const auto n = parse_uint(val, 0, std::numeric_limits<uint64_t>::max());
      if (!n) return usage(origin + ": cid \"" + val + "\" is not a decimal number");
      if (*n > std::numeric_limits<uint32_t>::max())
        return usage(origin + ": cid " + val +
                     " does not fit in 32 bits (CIDs are 3 for the parent, 4-4294967294 for enclaves)");
      if (*n == std::numeric_limits<uint32_t>::max())
        return usage(origin + ": cid " + val + " (VMADDR_CID_ANY, u32::MAX) is reserved");
      if (*n < kCidParent)
        return usage(origin + ": cid " + val +
                     " is reserved (0 hypervisor, 1 local, 2 host); 3 is the parent, 4 and up enclaves");
      d.cid = static_cast<uint32_t>(*n);
    } else if (key == "socket") {
      if (have_socket) return usage(origin + ": socket given twice");
      have_socket = true;
      if (val.empty() || val.size() >= 108)
        return usage(origin + ": socket \"" + val + "\" is not a socket path of 1-107 bytes");
      d.socket = val;
    } else {
      return usage(origin + ": unknown key \"" + key + "\" (known: cid, socket)");
    }
  }
  if (!have_cid) return usage(origin + ": cid=N is required");
  if (!have_socket) return usage(origin + ": socket=PATH is required");
  return d;
}

CardResult<HostPortSpec> parse_host_port(const std::string& value) {
  const std::string origin = "--host-port \"" + value + "\"";
  const size_t eq = value.find('=');
  if (eq == std::string::npos) return usage(origin + ": expected PORT=PATH");
  const std::string port = value.substr(0, eq);
  const std::string path = value.substr(eq + 1);
  const auto n = parse_uint(port, 0, std::numeric_limits<uint64_t>::max());
  if (!n || *n == 0 || *n > std::numeric_limits<uint32_t>::max())
    return usage(origin + ": port \"" + port + "\" is not a port (1-4294967295)");
  if (path.empty() || path.front() != '/' || path.size() >= 108)
    return usage(origin + ": \"" + path + "\" is not an absolute socket path of 1-107 bytes");
  return HostPortSpec{static_cast<uint32_t>(*n), path};
}

CardResult<ParsedArgs> parse_args(const std::vector<std::string>& args) {
  ParsedArgs p;
  const CommandLine line = split_command_line(args, {"--device", "--host-port", "--control", "--log-level", "--seccomp"});
  if (!line.error.empty()) return usage(line.error);
  p.help = line.help;
  p.version = line.version;
  if (p.help || p.version) return p;
  CardOptions& o = p.options;
  std::set<std::string> seen;
  for (const auto& [flag, value] : line.flags) {
    if (flag == "--device") {
      AZOTE_TRY(d, parse_device(value));
      for (const DeviceSpec& e : o.devices) {
        if (e.cid == d.cid) return usage("--device \"" + value + "\": cid " + std::to_string(d.cid) + " given twice");
        if (e.socket == d.socket) return usage("--device \"" + value + "\": socket " + d.socket + " given twice");
      }
      o.devices.push_back(d);
      continue;
    }
    if (flag == "--host-port") {
      AZOTE_TRY(h, parse_host_port(value));
      for (const HostPortSpec& e : o.host_ports)
        if (e.port == h.port) return usage("--host-port \"" + value + "\": port " + std::to_string(h.port) + " given twice");
      if (o.host_ports.size() >= kMaxHostPortSpecs)
        return usage("--host-port \"" + value + "\": at most " + std::to_string(kMaxHostPortSpecs) + " host ports");
      o.host_ports.push_back(h);
      continue;
    }
    if (!seen.insert(flag).second) return usage(flag + " given twice");
    if (flag == "--control") {
      if (value.rfind("fd:", 0) == 0) {
        if (!parse_fd_ref(value)) return usage("--control \"" + value + "\": expected fd:N with N >= 3");
      } else if (value.empty() || value.size() >= 108) {
        return usage("--control \"" + value + "\": expected a socket path of 1-107 bytes or fd:N");
      }
      o.control = value;
    } else if (flag == "--log-level") {
      if (value != "error" && value != "warn" && value != "info" && value != "debug")
        return usage("--log-level \"" + value + "\": expected error, warn, info or debug");
      o.log_level = value;
    } else if (flag == "--seccomp") {
      if (value != "kill" && value != "log") return usage("--seccomp \"" + value + "\": expected kill or log");
      o.seccomp = value;
    }
  }
  size_t parents = 0;
  for (const DeviceSpec& d : o.devices) parents += d.cid == kCidParent ? 1 : 0;
  if (parents == 0) return usage("--device cid=3,socket=PATH (the parent) is required");
  for (const DeviceSpec& d : o.devices)
    if (!o.control.empty() && d.socket == o.control)
      return usage("--control " + o.control + ": also the socket of cid " + std::to_string(d.cid));
  if (o.devices.size() - parents > kMaxEnclaves)
    return usage(std::to_string(o.devices.size() - parents) + " enclave devices: a parent has at most " +
                 std::to_string(kMaxEnclaves));
  return p;
}

}  // namespace azote::card_vsock
