#include "tapbridge/options.hpp"

#include <net/if.h>

#include <bit>

#include "base/parse.hpp"

namespace azote::tapbridge {
namespace {

Unexpected<OptionsError> bad(std::string sentence) { return make_error(OptionsErrc::kUsage, std::move(sentence)); }

// What the kernel takes as an interface name: 1..15 bytes, no '/', ':' or white space,
// not "." or "..".
bool valid_ifname(const std::string& n) {
  if (n.empty() || n.size() >= IFNAMSIZ || n == "." || n == "..") return false;
  for (char c : n)
    if (c == '/' || c == ':' || c <= ' ' || c == 0x7f) return false;
  return true;
}

}  // namespace

Result<ParsedArgs, OptionsError> parse_args(const std::vector<std::string>& args) {
  ParsedArgs p;
  BridgeOptions& o = p.options;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string a = args[i];
    if (a == "-h" || a == "--help") {
      p.help = true;
      return p;
    }
    if (a == "--version") {
      p.version = true;
      return p;
    }
    std::string value;
    const auto eq = a.find('=');
    if (a.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = a.substr(eq + 1);
      a = a.substr(0, eq);
    } else if (a == "--socket" || a == "--tap" || a == "--queue-size" || a == "--log-level") {
      if (i + 1 >= args.size()) return bad(a + " needs a value");
      value = args[++i];
    } else {
      return bad("unknown option \"" + a + "\" (see --help)");
    }
    if (a == "--socket") {
      if (value.empty() || value.size() >= 108)
        return bad("--socket: \"" + value + "\" is not a socket path of 1 to 107 bytes");
      o.socket = value;
    } else if (a == "--tap") {
      if (!valid_ifname(value))
        return bad("--tap: \"" + value + "\" is not an interface name (1 to " + std::to_string(IFNAMSIZ - 1) +
                   " bytes, no '/', ':' or spaces)");
      o.tap = value;
    } else if (a == "--queue-size") {
      auto n = parse_uint(value, kMinQueueSize, kMaxQueueSize);
      if (!n || !std::has_single_bit(*n))
        return bad("--queue-size: \"" + value + "\" is not a power of two from " + std::to_string(kMinQueueSize) +
                   " to " + std::to_string(kMaxQueueSize));
      o.queue_size = static_cast<uint16_t>(*n);
    } else if (a == "--log-level") {
      if (value != "error" && value != "warn" && value != "info" && value != "debug")
        return bad("--log-level: \"" + value + "\" is not error, warn, info or debug");
      o.log_level = value;
    } else {
      return bad("unknown option \"" + a + "\" (see --help)");
    }
  }
  if (o.socket.empty()) return bad("--socket PATH is required (the card's vhost-user socket of the ENI)");
  if (o.tap.empty()) return bad("--tap NAME is required (the TAP device to create)");
  return p;
}

const char* usage_text() {
  return R"(Usage: azote-tap-bridge --socket PATH --tap NAME [--queue-size N] [--log-level LEVEL]

Attaches a Linux TAP device to an ENI of azote-card-net: connects to the card's
vhost-user socket as the virtio-net driver (like a VM would), creates the TAP in the
current network namespace (run it under `ip netns exec NS` for another one) with the
ENI's MAC address and MTU from the device's config space, brings it up and carries
frames both ways: TAP -> transmit queue, receive queue -> TAP. Prints
"azote-tap-bridge: NAME up mac=MAC mtu=MTU" on stdout once frames flow.

The card is not trusted: a used ring entry naming no buffer in flight, or claiming more
bytes than the buffer holds, stops the bridge with a message.

Options:
  --socket PATH       The card's vhost-user socket for the ENI (required).
  --tap NAME          The TAP device to create (required, at most 15 bytes). It exists
                      while the bridge runs.
  --queue-size N      Entries per virtqueue, a power of two from 2 to 4096 (default
                      256; the card may accept less). Each entry has a 2048-byte buffer.
  --log-level LEVEL   error, warn (default), info, debug; on stderr.
  -h, --help          This text.    --version   The version.

Needs CAP_NET_ADMIN (TAP creation) and access to /dev/net/tun.

Exit status: 0 stopped by SIGTERM/SIGINT; 1 a runtime failure (the card unreachable,
refusing or hanging up, a queue broken by the card, the TAP failing); 2 usage.
)";
}

}  // namespace azote::tapbridge
