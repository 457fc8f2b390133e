// azote-hv configuration: from flags, from --config FILE.json, or both (flags win).
// Every error names the flag or JSON key and the bad value.
#pragma once

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "base/error.hpp"
#include "sandbox/seccomp.hpp"
#include "virtio/spec.hpp"

namespace azote::hv {

enum class ConsoleKind { kStdio, kFile, kUnix, kFd };

struct ConsoleConfig {
  ConsoleKind kind = ConsoleKind::kStdio;
  std::string path;
  int fd = -1;  // kFd: a descriptor open for writing, handed over at start
};

// A device served by a card over vhost-user: "--device KIND,socket=PATH". The kind
// gives only the device's identity (the virtio device id the transport shows the
// driver); the transport and the vhost-user wiring are the same for every kind.
struct DeviceConfig {
  std::string type;    // a kind from kDeviceKinds: "blk", "net"
  std::string socket;  // the card's vhost-user socket
  bool from_control = false;  // attached by an "attach-device" request (--control), not --device
};
inline constexpr size_t kMaxDevices = 16;

struct DeviceKind {
  const char* name;    // --device NAME,..., "kind" of attach-device
  uint32_t device_id;  // virtio device id (virtio 1.2 §5)
};
// Every kind azote-hv can wire to a card. Queues, features and config space come from
// the card (GET_QUEUE_NUM, GET_FEATURES, GET_CONFIG), never from this table.
inline constexpr DeviceKind kDeviceKinds[] = {{"blk", virtio::kDeviceIdBlock},
                                              {"net", virtio::kDeviceIdNet},
                                              {"vsock", virtio::kDeviceIdVsock},
                                              {"nsm", virtio::kDeviceIdNsm}};
// The kind called `name`, or nullptr.
const DeviceKind* find_device_kind(const std::string& name);
// "blk, net": for messages.
std::string known_device_kinds();

struct VmConfig {
  std::string kernel;          // a path, "builtin:NAME", or "fd:N" (a descriptor handed over)
  std::string cmdline;
  std::string initrd;          // empty: none; a path or "fd:N"
  // --eif PATH|fd:N: boot an Enclave Image File instead (its kernel, its command line,
  // its ramdisks concatenated as the initrd; lib/eif checks it whole, signature
  // included, before anything is loaded). Excludes --kernel, --cmdline, --initrd, --tpm.
  std::string eif;
  uint32_t vcpus = 1;
  uint64_t memory = 256ull << 20;
  ConsoleConfig console;
  // A file console's cap in bytes (--console-max; 0: none): past it the oldest half goes.
  uint64_t console_max = 1ull << 20;
  std::vector<DeviceConfig> devices;
  // --tpm PATH: a TPM 2.0 served on this Unix socket (azote-card-tpm, swtpm's unixio):
  // measured boot into it before the vCPUs run, then a CRB window for the guest.
  std::string tpm_socket;
  bool pit = true;             // in-kernel i8254 PIT (--no-pit leaves it out)
  std::string log_path;        // empty: stderr
  std::string stats_path;      // empty: none
  std::string control_path;    // --control: empty shell, vCPUs parked until "start"
  int control_fd = -1;         // --control fd:N: a listening socket handed over (the launcher's)
  int kvm_fd = -1;             // --kvm-fd N: an open /dev/kvm handed over (the jail has none)
  bool verbose = false;
  // Thread-class allowlists (src/hv/seccomp.json); kLog only for finding a missing rule.
  sandbox::SeccompMode seccomp = sandbox::SeccompMode::kKill;
  // Read guest memory after boot for diagnostics (the faulting instruction's bytes). Off
  // by default: once the images are loaded, azote-hv reads no guest memory.
  bool debug_guest = false;
  // The I/O window (--io-window): 0 off; kIoWindowAuto half of low memory (at most
  // 1 GiB); else a size. Made only for a kernel whose ELF notes say it uses one (the
  // built-in guest): cards then map the window and nothing else of guest RAM.
  uint64_t io_window = kIoWindowAuto;
  static constexpr uint64_t kIoWindowAuto = ~0ull;
  // Resolved by the VM at setup: where the window is (0 size: none). Announced to the
  // guest as azote.iowin=START,SIZE on its command line.
  uint64_t io_window_start = 0, io_window_size = 0;
  // What backs the private RAM (--private-memory): a memfd, or a KVM guest_memfd (memory
  // only this VM's fd can make or map; mapped by this process too, as KVM's own accesses
  // need). kAuto: guest_memfd where KVM offers it and the guest has an I/O window.
  enum class PrivateMemory { kAuto, kMemfd, kGuestMemfd };
  PrivateMemory private_memory = PrivateMemory::kAuto;

  bool builtin() const { return kernel.rfind("builtin:", 0) == 0; }
  std::string builtin_name() const { return kernel.substr(8); }
  // The command line the guest sees: builtin: "azote.run=NAME" + cmdline, then one
  // virtio_mmio.device= entry per device (the Linux syntax; the built-in guest reads it too).
  std::string effective_cmdline() const;
};

enum class ConfigErrc { kUsage = 1, kBadValue, kBadFile };
using ConfigError = Error<ConfigErrc>;

struct ShowHelp {};
struct ShowVersion {};
using ParseOutcome = std::variant<VmConfig, ShowHelp, ShowVersion>;

Result<ParseOutcome, ConfigError> parse_args(int argc, const char* const* argv);
// Applies a JSON document's fields over `cfg` (used by --config).
// Parses "blk,socket=PATH" (the --device value); `origin` names the flag or key.
Result<DeviceConfig, ConfigError> parse_device(const std::string& origin, const std::string& value);
Result<void, ConfigError> apply_json(const std::string& text, const std::string& origin, VmConfig* cfg);

const char* usage_text();

}  // namespace azote::hv
