#include "hv/config.hpp"

#include <nlohmann/json.hpp>

#include <fstream>
#include <set>
#include <sstream>
#include <vector>

#include "base/parse.hpp"
#include "x86/layout.hpp"

namespace azote::hv {
namespace {

constexpr uint32_t kMaxVcpus = 254;

Unexpected<ConfigError> bad(const std::string& what) { return make_error(ConfigErrc::kBadValue, what); }

Result<uint32_t, ConfigError> check_vcpus(const std::string& origin, const std::string& v) {
  auto n = parse_uint(v, 1, kMaxVcpus);
  if (!n) return bad(origin + ": \"" + v + "\" is not a vCPU count between 1 and " + std::to_string(kMaxVcpus));
  return static_cast<uint32_t>(*n);
}

Result<uint64_t, ConfigError> check_memory(const std::string& origin, const std::string& v) {
  auto n = parse_size(v);
  if (!n) return bad(origin + ": \"" + v + "\" is not a size (use e.g. 128M, 2G)");
  if (*n < x86::kMinMemory) return bad(origin + ": " + v + " is below the minimum of 8M");
  if (*n > x86::kMaxMemory) return bad(origin + ": " + v + " is above the maximum of 1T");
  if (*n % (1ull << 20) != 0) return bad(origin + ": " + v + " is not a whole number of MiB");
  return *n;
}

Result<ConsoleConfig, ConfigError> check_console(const std::string& origin, const std::string& v) {
  ConsoleConfig c;
  if (v == "stdio") return c;
  if (v.rfind("file:", 0) == 0 && v.size() > 5) {
    c.kind = ConsoleKind::kFile;
    c.path = v.substr(5);
    return c;
  }
  if (v.rfind("fd:", 0) == 0) {
    const auto fd = parse_fd_ref(v);
    if (!fd) return bad(origin + ": \"" + v + "\" is not fd:N with N a descriptor number from 3");
    c.kind = ConsoleKind::kFd;
    c.fd = *fd;
    return c;
  }
  if (v.rfind("unix:", 0) == 0 && v.size() > 5) {
    c.kind = ConsoleKind::kUnix;
    c.path = v.substr(5);
    if (c.path.size() >= 108) return bad(origin + ": socket path is longer than 107 bytes");
    return c;
  }
  return bad(origin + ": \"" + v + "\" is not stdio, file:PATH, unix:PATH or fd:N");
}

Result<void, ConfigError> check_control(const std::string& origin, const std::string& v) {
  if (v.empty()) return bad(origin + ": empty socket path");
  if (v.size() >= 108) return bad(origin + ": socket path \"" + v + "\" is longer than 107 bytes");
  return {};
}

Result<void, ConfigError> check_kernel(const std::string& origin, const std::string& v) {
  if (v.empty()) return bad(origin + ": empty kernel");
  if (v.rfind("fd:", 0) == 0 && !parse_fd_ref(v)) return bad(origin + ": \"" + v + "\" is not fd:N with N a descriptor number from 3");
  if (v.rfind("builtin:", 0) == 0 && v.size() == 8) return bad(origin + ": builtin: needs a program name, e.g. builtin:hello");
  return {};
}

}  // namespace

const DeviceKind* find_device_kind(const std::string& name) {
  for (const auto& k : kDeviceKinds)
    if (name == k.name) return &k;
  return nullptr;
}

std::string known_device_kinds() {
  std::string s;
  for (const auto& k : kDeviceKinds) {
    if (!s.empty()) s += ", ";
    s += k.name;
  }
  return s;
}

Result<DeviceConfig, ConfigError> parse_device(const std::string& origin, const std::string& value) {
  DeviceConfig d;
  std::stringstream ss(value);
  std::string part;
  bool first = true;
  while (std::getline(ss, part, ',')) {
    if (first) {
      d.type = part;
      first = false;
      if (find_device_kind(d.type) == nullptr)
        return bad(origin + ": device type \"" + d.type + "\" is not supported (known: " + known_device_kinds() + ")");
      continue;
    }
    const auto eq = part.find('=');
    const std::string key = part.substr(0, eq);
    const std::string val = eq == std::string::npos ? "" : part.substr(eq + 1);
    if (key == "socket") {
      if (val.empty()) return bad(origin + ": socket= needs a path");
      if (val.size() >= 108) return bad(origin + ": socket path is longer than 107 bytes");
      d.socket = val;
    } else {
      return bad(origin + ": unknown device option \"" + key + "\" (known: socket)");
    }
  }
  if (d.type.empty()) return bad(origin + ": empty device (use e.g. blk,socket=/run/vol0.sock)");
  if (d.socket.empty()) return bad(origin + ": " + d.type + " needs socket=PATH");
  return d;
}

std::string VmConfig::effective_cmdline() const {
  std::string c;
  if (builtin()) {
    c = "azote.run=" + builtin_name();
    if (!cmdline.empty()) c += " " + cmdline;
  } else {
    c = cmdline;
  }
  if (io_window_size > 0) {
    char w[80];
    std::snprintf(w, sizeof w, "azote.iowin=%#llx,%#llx", static_cast<unsigned long long>(io_window_start),
                  static_cast<unsigned long long>(io_window_size));
    if (!c.empty()) c += ' ';
    c += w;
  }
  for (size_t i = 0; i < devices.size(); ++i) {
    char entry[64];
    std::snprintf(entry, sizeof entry, "virtio_mmio.device=4K@%#llx:%u",
                  static_cast<unsigned long long>(x86::kVirtioMmioBase + i * x86::kVirtioMmioStride),
                  static_cast<unsigned>(x86::kVirtioFirstGsi + i));
    if (!c.empty()) c += ' ';
    c += entry;
  }
  return c;
}

const char* usage_text() {
  return R"(Usage: azote-hv --kernel PATH|builtin:NAME [options]
       azote-hv --config FILE.json [options]

Runs one virtual machine on KVM until the guest ends it.

Options:
  --kernel PATH|builtin:NAME  Kernel to boot: an ELF with a PVH note (Xen note 18),
                              an uncompressed Linux vmlinux (through its PVH note), or
                              a Linux bzImage (64-bit boot protocol).
                              builtin:NAME boots the built-in guest with azote.run=NAME
                              (programs: hello, exit CODE, smp, cpu MIB, fault KIND,
                              blk-check [MIB], blk-bench [QD] [SECONDS], init, net-*,
                              tpm-pcrs and attest NONCE_HEX [USER_DATA_HEX] with
                              --tpm; the list: guest/README.md).
  --cmdline STR               Kernel command line. With builtin:NAME, the program's
                              arguments (appended after azote.run=NAME).
                              fd:N reads it from descriptor N (handed over by the launcher).
  --initrd PATH|fd:N          Initial ramdisk (bzImage: ramdisk fields; PVH: module 0).
  --eif PATH|fd:N             Boot an Enclave Image File (azote enclave build-enclave,
                              nitro-cli build-enclave) instead of --kernel: its kernel,
                              its command line, its ramdisks one after the other as the
                              initrd. The whole file is checked first (layout, CRC-32,
                              the signature over PCR0 if signed); its PCR0/1/2/8 are
                              those describe reports. Excludes --kernel, --cmdline,
                              --initrd and --tpm.
  --vcpus N                   Number of vCPUs, 1-254 (default 1). One thread each.
  --memory SIZE               Guest RAM, e.g. 128M or 2G; 8M to 1T, whole MiB
                              (default 256M). Backed by a memfd.
  --console stdio|file:PATH|unix:PATH|fd:N
                              Where the COM1 UART goes (default stdio; fd:N: a descriptor
                              open for writing, handed over). unix:PATH listens
                              on a new socket at PATH; output before a client connects is
                              kept (last 64 KiB) and replayed to it; input is forwarded.
  --console-max SIZE          A file console (file:PATH, or fd:N of a regular file) keeps
                              at most SIZE bytes (default 1M; 8K to 1G, e.g. 64K): when
                              the guest's output would pass it, the newest half is
                              moved to the start of the file and the rest dropped, so a
                              guest cannot fill the host's disk (a descriptor not open
                              for reading cannot be read back: the file then restarts
                              with the newest output; fd:N's O_APPEND is cleared, so do
                              not share its file description with other writers).
                              0: no cap.
  --device blk,socket=PATH    A virtio-blk device served by a card (azote-card-blk,
                              qemu-storage-daemon, ...) over the vhost-user socket PATH.
  --device net,socket=PATH    A virtio-net device (an ENI) served by azote-card-net over
                              the vhost-user socket PATH: queues rx=0, tx=1; MAC, link
                              status and MTU come from the card's config space.
  --device nsm,socket=PATH    A Nitro Secure Module (virtio id 33; azote-card-nsm).
  --device vsock,socket=PATH  A virtio-vsock device (virtio id 19) served by a card.
                              Repeatable (up to 16 devices in all, any kinds). Each appears as a virtio-mmio device
                              at 0xc0000000 + 4K*i, interrupt 5+i, announced on the
                              kernel command line as virtio_mmio.device=4K@ADDR:IRQ.
  --tpm PATH                  A TPM 2.0 served on the Unix socket PATH (azote-card-tpm, or
                              swtpm socket --server type=unixio,path=PATH --flags
                              not-need-init): before the vCPUs run, azote-hv sends
                              TPM2_Startup(CLEAR) and measures the kernel into PCR 4,
                              the initrd into PCR 9 and the image's command line into
                              PCR 12 of every allocated bank; the guest then reaches
                              it through a TCG CRB window at 0xfed40000 (4K, locality
                              0; an ACPI TPM2 table points to it). Without the TPM
                              (10 s) the VM does not start.
  --kvm-fd N                  Use descriptor N, an open /dev/kvm handed over by the
                              launcher, instead of opening /dev/kvm.
  --control PATH|fd:N         Empty-shell mode: set the VM up (memory, kernel, vCPUs,
                              --device cards) but keep the vCPUs parked, and take
                              requests on a new unix socket at PATH (mode 0600), one
                              JSON object per line: {"op": "describe"}, {"op":
                              "attach-device", "kind": "blk"|"net", "socket": PATH},
                              {"op": "start"}, {"op": "stop"}. The socket is served
                              while the guest runs and removed at exit. fd:N: a listening
                              socket handed over (the launcher's; not removed).
  --config FILE.json          Read the same fields from JSON: {"kernel", "cmdline",
                              "initrd", "vcpus", "memory", "console", "devices", "pit",
                              "log", "control"}; memory may be a string ("256M") or a
                              number of MiB; devices an array of "KIND,socket=PATH" or
                              {"type": KIND, "socket": PATH} (KIND blk or net).
                              Flags given on the command line override the file.
  --no-pit                    Leave out the in-kernel i8254 PIT. Guests that use the LAPIC
                              timer and kvm-clock (the built-in guest; Linux with this
                              platform's hardware-reduced ACPI) do not need it, and KVM's
                              PIT costs ~16 ms of VM teardown on some hosts.
  --log PATH                  Diagnostics (register dumps, warnings) go to PATH instead of
                              stderr.
  --stats PATH                At exit, write JSON with each vCPU's exits to this process
                              (port I/O, MMIO, other) and each thread's CPU time.
  --seccomp kill|log          Each thread runs under its class's allowlist (main, vcpu:
                              src/hv/seccomp.json). kill (default): a forbidden system
                              call ends the process with SIGSYS after one line on stderr
                              naming the thread and the call. log: the kernel logs it and
                              lets it through (debugging only; azote-controller refuses it).
  --io-window auto|off|SIZE   The I/O window: the part of guest RAM cards are given
                              (their own memfd); the rest of RAM is never shared with a
                              card. Made only for a kernel that says (an ELF note) it
                              keeps its virtqueues and buffers there: the built-in guest.
                              auto (default): half of the memory below 3 GiB, at most 1G.
  --private-memory auto|memfd|guest_memfd
                              What backs guest RAM outside the I/O window. guest_memfd:
                              memory made by and bound to this VM's KVM fd (needs
                              KVM_CAP_GUEST_MEMFD with the MMAP and INIT_SHARED flags,
                              Linux 6.18, and a guest with an I/O window; exit 71 when
                              the host lacks it); memfd: a memfd. Either way azote-hv
                              maps it, as KVM's own accesses (kvmclock, emulation) need,
                              and no card is given it. auto (default): guest_memfd where
                              possible, else memfd; "describe" on the control socket
                              says which and why.
  --debug-guest               On a fatal guest event, read the faulting instruction's bytes
                              from guest memory for the report. Without it azote-hv reads
                              no guest memory once the images are loaded.
  -v, --verbose               Log boot steps.
  -h, --help                  Show this help.
  --version                   Show the version.

Exit status:
  0       the guest powered off, reset (i8042) or wrote 0 to the debug-exit port
  N       the guest wrote N to the debug-exit port (I/O port 0xf4, 1-byte write)
  64      bad command line or configuration (including a --control socket that
          cannot be created)
  65      the kernel or initrd cannot be loaded
  71      host or KVM setup failed
  74      a --device card cannot be reached or negotiated with
  80      triple fault (KVM_EXIT_SHUTDOWN)
  81      KVM could not emulate an instruction
  82      other KVM internal error
  83      port I/O to a port no device owns
  84      MMIO access to an address no device owns
  85      VM entry failed
  86      unexpected KVM exit reason
  143     stopped by SIGTERM or SIGINT, or by a "stop" control request
On a failure, one line on stderr names the reason, vCPU and RIP (and, with
--debug-guest, the instruction bytes); the full register dump follows in the log.
A forbidden system call ends the process with SIGSYS (shell status 159).
)";
}

Result<void, ConfigError> apply_json(const std::string& text, const std::string& origin, VmConfig* cfg) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    return make_error(ConfigErrc::kBadFile, origin + ": invalid JSON: " + e.what());
  }
  if (!j.is_object()) return make_error(ConfigErrc::kBadFile, origin + ": must be a JSON object");
  static const std::set<std::string> kKeys = {"kernel", "cmdline", "initrd", "vcpus", "memory", "console", "devices",
                                              "pit", "log", "control"};
  for (auto it = j.begin(); it != j.end(); ++it)
    if (kKeys.count(it.key()) == 0) return make_error(ConfigErrc::kBadFile, origin + ": unknown key \"" + it.key() + "\"");
  auto str = [&](const char* key, std::string* out) -> Result<void, ConfigError> {
    if (!j.contains(key)) return {};
    if (!j[key].is_string()) return make_error(ConfigErrc::kBadFile, origin + ": \"" + key + "\" must be a string");
    *out = j[key].get<std::string>();
    return {};
  };
  AZOTE_TRYV(str("kernel", &cfg->kernel));
  if (j.contains("kernel")) AZOTE_TRYV(check_kernel(origin + ": kernel", cfg->kernel));
  AZOTE_TRYV(str("cmdline", &cfg->cmdline));
  AZOTE_TRYV(str("initrd", &cfg->initrd));
  AZOTE_TRYV(str("log", &cfg->log_path));
  AZOTE_TRYV(str("control", &cfg->control_path));
  if (j.contains("control")) AZOTE_TRYV(check_control(origin + ": control", cfg->control_path));
  if (j.contains("vcpus")) {
    const auto& v = j["vcpus"];
    if (!v.is_number_unsigned()) return make_error(ConfigErrc::kBadFile, origin + ": \"vcpus\" must be a positive integer");
    AZOTE_TRY(n, check_vcpus(origin + ": vcpus", std::to_string(v.get<uint64_t>())));
    cfg->vcpus = n;
  }
  if (j.contains("memory")) {
    const auto& v = j["memory"];
    std::string s;
    if (v.is_string()) s = v.get<std::string>();
    else if (v.is_number_unsigned()) s = std::to_string(v.get<uint64_t>()) + "M";
    else return make_error(ConfigErrc::kBadFile, origin + ": \"memory\" must be a size string or a number of MiB");
    AZOTE_TRY(m, check_memory(origin + ": memory", s));
    cfg->memory = m;
  }
  if (j.contains("pit")) {
    if (!j["pit"].is_boolean()) return make_error(ConfigErrc::kBadFile, origin + ": \"pit\" must be true or false");
    cfg->pit = j["pit"].get<bool>();
  }
  if (j.contains("devices")) {
    const auto& v = j["devices"];
    if (!v.is_array()) return make_error(ConfigErrc::kBadFile, origin + ": \"devices\" must be an array");
    cfg->devices.clear();
    for (size_t i = 0; i < v.size(); ++i) {
      const std::string where = origin + ": devices[" + std::to_string(i) + "]";
      std::string spec;
      if (v[i].is_string()) {
        spec = v[i].get<std::string>();
      } else if (v[i].is_object() && v[i].contains("type") && v[i]["type"].is_string()) {
        spec = v[i]["type"].get<std::string>();
        for (auto it = v[i].begin(); it != v[i].end(); ++it) {
          if (it.key() == "type") continue;
          if (!it.value().is_string()) return make_error(ConfigErrc::kBadFile, where + ": \"" + it.key() + "\" must be a string");
          spec += "," + it.key() + "=" + it.value().get<std::string>();
        }
      } else {
        return make_error(ConfigErrc::kBadFile, where + ": must be \"blk,socket=PATH\" or {\"type\": \"blk\", \"socket\": PATH}");
      }
      AZOTE_TRY(d, parse_device(where, spec));
      cfg->devices.push_back(d);
    }
    if (cfg->devices.size() > kMaxDevices) return make_error(ConfigErrc::kBadFile, origin + ": more than " + std::to_string(kMaxDevices) + " devices");
  }
  if (j.contains("console")) {
    std::string s;
    AZOTE_TRYV(str("console", &s));
    AZOTE_TRY(c, check_console(origin + ": console", s));
    cfg->console = c;
  }
  return {};
}

Result<ParseOutcome, ConfigError> parse_args(int argc, const char* const* argv) {
  VmConfig cfg;
  std::string config_file;
  std::vector<std::pair<std::string, std::string>> flags;  // applied after the file
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-h" || a == "--help") return ParseOutcome{ShowHelp{}};
    if (a == "--version") return ParseOutcome{ShowVersion{}};
    if (a == "-v" || a == "--verbose") {
      cfg.verbose = true;
      continue;
    }
    if (a == "--no-pit") {
      cfg.pit = false;
      continue;
    }
    if (a == "--debug-guest") {
      cfg.debug_guest = true;
      continue;
    }
    std::string value;
    const auto eq = a.find('=');
    if (a.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = a.substr(eq + 1);
      a = a.substr(0, eq);
    } else {
      static const std::set<std::string> kWithValue = {"--kernel", "--cmdline", "--initrd", "--vcpus", "--memory",
                                                       "--console", "--config", "--log", "--device", "--stats",
                                                       "--control", "--seccomp", "--kvm-fd", "--io-window",
                                                       "--private-memory", "--console-max", "--tpm", "--eif"};
      if (kWithValue.count(a) == 0)
        return make_error(ConfigErrc::kUsage, "unknown option \"" + a + "\" (see --help)");
      if (i + 1 >= argc) return make_error(ConfigErrc::kUsage, a + " needs a value");
      value = argv[++i];
    }
    if (a == "--config") config_file = value;
    else flags.emplace_back(a, value);
  }
  if (!config_file.empty()) {
    std::ifstream f(config_file);
    if (!f) return make_error(ConfigErrc::kBadFile, "--config: cannot read " + config_file, errno);
    std::stringstream ss;
    ss << f.rdbuf();
    AZOTE_TRYV(apply_json(ss.str(), "--config " + config_file, &cfg));
  }
  bool devices_from_flags = false;
  for (const auto& [flag, value] : flags) {
    if (flag == "--device") {
      // --device flags replace the file's device list as a whole.
      if (!devices_from_flags) cfg.devices.clear();
      devices_from_flags = true;
      AZOTE_TRY(d, parse_device(flag, value));
      cfg.devices.push_back(d);
      if (cfg.devices.size() > kMaxDevices) return bad("--device: more than " + std::to_string(kMaxDevices) + " devices");
    } else if (flag == "--tpm") {
      if (value.empty() || value.size() >= 108 || value.find('\0') != std::string::npos)
        return bad("--tpm: \"" + value + "\" is not a socket path of 1-107 bytes");
      cfg.tpm_socket = value;
    } else if (flag == "--eif") {
      if (value.empty()) return bad("--eif: empty path");
      if (value.rfind("fd:", 0) == 0 && !parse_fd_ref(value)) return bad("--eif: \"" + value + "\" is not fd:N");
      cfg.eif = value;
    } else if (flag == "--kernel") {
      AZOTE_TRYV(check_kernel(flag, value));
      cfg.kernel = value;
    } else if (flag == "--cmdline") {
      cfg.cmdline = value;
    } else if (flag == "--initrd") {
      if (value.empty()) return bad("--initrd: empty path");
      if (value.rfind("fd:", 0) == 0 && !parse_fd_ref(value)) return bad("--initrd: \"" + value + "\" is not fd:N");
      cfg.initrd = value;
    } else if (flag == "--vcpus") {
      AZOTE_TRY(n, check_vcpus(flag, value));
      cfg.vcpus = n;
    } else if (flag == "--memory") {
      AZOTE_TRY(m, check_memory(flag, value));
      cfg.memory = m;
    } else if (flag == "--console") {
      AZOTE_TRY(c, check_console(flag, value));
      cfg.console = c;
    } else if (flag == "--log") {
      cfg.log_path = value;
    } else if (flag == "--stats") {
      cfg.stats_path = value;
    } else if (flag == "--io-window") {
      if (value == "auto") {
        cfg.io_window = VmConfig::kIoWindowAuto;
      } else if (value == "off") {
        cfg.io_window = 0;
      } else {
        const auto n = parse_size(value);
        if (!n || *n == 0 || *n % (1ull << 20) != 0)
          return bad("--io-window: \"" + value + "\" is not auto, off or a whole number of MiB such as 64M");
        cfg.io_window = *n;
      }
    } else if (flag == "--console-max") {
      const auto n = parse_size(value);
      if (!n || (*n != 0 && (*n < (8u << 10) || *n > (1ull << 30))))
        return bad("--console-max: \"" + value + "\" is not 0 or a size from 8K to 1G such as 1M");
      cfg.console_max = *n;
    } else if (flag == "--private-memory") {
      using P = VmConfig::PrivateMemory;
      if (value == "auto") cfg.private_memory = P::kAuto;
      else if (value == "memfd") cfg.private_memory = P::kMemfd;
      else if (value == "guest_memfd") cfg.private_memory = P::kGuestMemfd;
      else return bad("--private-memory: \"" + value + "\" is not auto, memfd or guest_memfd");
    } else if (flag == "--seccomp") {
      auto m = sandbox::parse_seccomp_mode(value);
      if (!m) return bad(m.error().message());
      cfg.seccomp = *m;
    } else if (flag == "--control") {
      if (value.rfind("fd:", 0) == 0) {
        const auto fd = parse_fd_ref(value);
        if (!fd) return bad("--control: \"" + value + "\" is not fd:N with N a descriptor number from 3");
        cfg.control_fd = *fd;
      } else {
        AZOTE_TRYV(check_control(flag, value));
      }
      cfg.control_path = value;
    } else if (flag == "--kvm-fd") {
      const auto fd = parse_fd_ref("fd:" + value);
      if (!fd) return bad("--kvm-fd: \"" + value + "\" is not a descriptor number from 3");
      cfg.kvm_fd = *fd;
    } else {
      return make_error(ConfigErrc::kUsage, "unknown option \"" + flag + "\" (see --help)");
    }
  }
  if (!cfg.eif.empty()) {
    // An enclave image brings its own kernel, command line and ramdisks, and has no TPM.
    for (const auto& [set, name] : {std::pair{!cfg.kernel.empty(), "--kernel"}, std::pair{!cfg.cmdline.empty(), "--cmdline"},
                                    std::pair{!cfg.initrd.empty(), "--initrd"}, std::pair{!cfg.tpm_socket.empty(), "--tpm"}})
      if (set) return make_error(ConfigErrc::kUsage, std::string("--eif excludes ") + name + " (the image holds the kernel, its command line and ramdisks; an enclave has no TPM)");
    return ParseOutcome{cfg};
  }
  if (cfg.kernel.empty()) return make_error(ConfigErrc::kUsage, "--kernel or --eif is required (or \"kernel\" in --config); see --help");
  return ParseOutcome{cfg};
}

}  // namespace azote::hv
