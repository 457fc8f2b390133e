// Command line and JSON configuration of azote-card-blk. Pure parsing: nothing here
// opens a file or a socket. Errors are one sentence naming the option and the value.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/error.hpp"

namespace azote::card_blk {

enum class OptionsErrc { kUsage = 1 };
using OptionsError = Error<OptionsErrc>;

inline constexpr uint32_t kMaxVolumes = 64;
inline constexpr uint32_t kMaxQueuesPerVolume = 16;  // azote-hv drives at most 16 per device
inline constexpr uint64_t kMaxIops = 10'000'000;
inline constexpr uint64_t kMaxMbps = 1'000'000;  // 1 TB/s: "unlimited" in practice
inline constexpr uint32_t kMaxSerialBytes = 20;  // VIRTIO_BLK_T_GET_ID (virtio 1.2 §5.2.6)

struct VolumeOptions {
  std::string origin;      // where it came from, for messages: "--volume socket=..." or "FILE: volumes[2]"
  std::string socket;      // vhost-user socket path (the card listens)
  std::string file;        // backing file or block device
  bool read_only = false;
  std::string key_file;    // AES-XTS-256 key (64 bytes); empty: not encrypted
  uint64_t iops = 0;       // 0: unlimited
  uint64_t mbps = 0;       // 10^6 bytes per second; 0: unlimited
  uint32_t burst_ms = 100; // bucket sizes: this many milliseconds at the rate
  uint32_t queues = 1;     // virtqueues offered (MQ when > 1)
  std::string serial;      // GET_ID; empty: derived from the file's identity
  std::optional<bool> discard;  // default: on for plain volumes, off for encrypted ones
  // The key itself (64 bytes), handed over at attach time through the control socket
  // ("key": hex); never from the command line or a configuration file.
  std::vector<uint8_t> key_bytes;
};

struct CardOptions {
  std::vector<VolumeOptions> volumes;
  std::string metrics_path;  // --metrics unix:PATH; empty: no metrics endpoint
  std::string control_path;  // --control PATH; empty: the volume set is fixed at startup
  std::string log_level = "info";
  std::string seccomp = "kill";  // --seccomp kill|log
};

struct ShowHelp {};
struct ShowVersion {};

// Parses argv[1..]. --config is applied first wherever it appears; --volume flags
// replace the file's volume list as a whole, other flags override the file's values.
// Returns nullopt in `help`/`version` cases through the out flags.
struct ParsedArgs {
  CardOptions options;
  bool help = false;
  bool version = false;
};
Result<ParsedArgs, OptionsError> parse_args(const std::vector<std::string>& args);

// One --volume value: "socket=PATH,file=IMG[,readonly][,key-file=K][,iops=N][,mbps=N]...".
Result<VolumeOptions, OptionsError> parse_volume(const std::string& origin, const std::string& spec);

// Applies a JSON configuration (see usage_text()) on top of `out`.
Result<void, OptionsError> apply_json(const std::string& text, const std::string& origin, CardOptions* out);

// One volume given as JSON: an object of volume keys or a "socket=...,file=..." string.
// "key" (128 hex digits) is accepted only when `allow_key` (the control socket).
Result<VolumeOptions, OptionsError> parse_volume_json(const std::string& where, const nlohmann::json& j,
                                                      bool allow_key);

// Checks what only the whole set can tell: at least one volume (unless a control
// socket can add them later), distinct sockets.
Result<void, OptionsError> validate(const CardOptions& o);

const char* usage_text();

}  // namespace azote::card_blk
