// Command line of azote-tap-bridge. Pure parsing: nothing here opens a file, a socket
// or a device; errors name the bad input.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/error.hpp"

namespace azote::tapbridge {

enum class OptionsErrc { kUsage = 1 };
using OptionsError = Error<OptionsErrc>;

inline constexpr int kExitOk = 0;       // stopped by SIGTERM/SIGINT
inline constexpr int kExitFailure = 1;  // the card, the TAP or the host failed
inline constexpr int kExitUsage = 2;    // bad command line

inline constexpr uint16_t kDefaultQueueSize = 256;
inline constexpr uint16_t kMinQueueSize = 2;
inline constexpr uint16_t kMaxQueueSize = 4096;

struct BridgeOptions {
  std::string socket;  // the card's vhost-user socket for the ENI (the card listens)
  std::string tap;     // TAP device to create in the current network namespace
  uint16_t queue_size = kDefaultQueueSize;  // entries per virtqueue (power of two)
  std::string log_level = "warn";
};

struct ParsedArgs {
  BridgeOptions options;
  bool help = false;
  bool version = false;
};

// --socket PATH --tap NAME [--queue-size N] [--log-level LEVEL]; "--flag=value" too.
Result<ParsedArgs, OptionsError> parse_args(const std::vector<std::string>& args);

const char* usage_text();

}  // namespace azote::tapbridge
