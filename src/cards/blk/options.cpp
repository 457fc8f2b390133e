#include "cards/blk/options.hpp"

#include <nlohmann/json.hpp>

#include <fstream>
#include <set>
#include <sstream>

#include "base/parse.hpp"

namespace azote::card_blk {
namespace {

Unexpected<OptionsError> bad(std::string what) { return make_error(OptionsErrc::kUsage, std::move(what)); }

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : s) {
    if (c == sep) {
      out.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  out.push_back(cur);
  return out;
}

std::optional<bool> parse_bool(const std::string& v) {
  if (v.empty() || v == "on" || v == "true" || v == "yes" || v == "1") return true;
  if (v == "off" || v == "false" || v == "no" || v == "0") return false;
  return std::nullopt;
}

bool printable(const std::string& s) {
  for (char c : s) {
    if (c < 0x20 || c > 0x7e) return false;
  }
  return true;
}

constexpr const char* kVolumeKeys = "socket, file, readonly, key-file, iops, mbps, burst-ms, queues, serial, discard";

// Applies one key=value of a volume; `origin` prefixes every message.
Result<void, OptionsError> set_volume_key(VolumeOptions& v, const std::string& origin, const std::string& key,
                                          const std::string& val, bool has_value) {
  auto need_value = [&]() -> Result<void, OptionsError> {
    if (!has_value || val.empty()) return bad(origin + ": " + key + "= needs a value");
    return {};
  };
  auto number = [&](uint64_t lo, uint64_t hi) -> Result<uint64_t, OptionsError> {
    AZOTE_TRYV(need_value());
    auto n = parse_uint(val, lo, hi);
    if (!n)
      return bad(origin + ": " + key + "=" + val + " is not a whole number in " + std::to_string(lo) + ".." +
                 std::to_string(hi));
    return *n;
  };
  if (key == "socket") {
    AZOTE_TRYV(need_value());
    if (val.size() >= 108) return bad(origin + ": socket=" + val + " is longer than 107 bytes (a Unix socket path)");
    v.socket = val;
  } else if (key == "file") {
    AZOTE_TRYV(need_value());
    v.file = val;
  } else if (key == "readonly" || key == "discard") {
    auto b = parse_bool(has_value ? val : "");
    if (!b) return bad(origin + ": " + key + "=" + val + " is not on/off");
    if (key == "readonly") {
      v.read_only = *b;
    } else {
      v.discard = *b;
    }
  } else if (key == "key-file") {
    AZOTE_TRYV(need_value());
    v.key_file = val;
  } else if (key == "iops") {
    AZOTE_TRY(n, number(0, kMaxIops));
    v.iops = n;
  } else if (key == "mbps") {
    AZOTE_TRY(n, number(0, kMaxMbps));
    v.mbps = n;
  } else if (key == "burst-ms") {
    AZOTE_TRY(n, number(1, 60'000));
    v.burst_ms = static_cast<uint32_t>(n);
  } else if (key == "queues") {
    AZOTE_TRY(n, number(1, kMaxQueuesPerVolume));
    v.queues = static_cast<uint32_t>(n);
  } else if (key == "serial") {
    AZOTE_TRYV(need_value());
    if (val.size() > kMaxSerialBytes || !printable(val))
      return bad(origin + ": serial=" + val + " must be 1.." + std::to_string(kMaxSerialBytes) +
                 " printable ASCII characters");
    v.serial = val;
  } else {
    return bad(origin + ": unknown volume option \"" + key + "\" (known: " + kVolumeKeys + ")");
  }
  return {};
}

bool parse_hex_key(const std::string& hex, std::vector<uint8_t>* out) {
  if (hex.size() != 128) return false;
  out->clear();
  for (size_t i = 0; i < hex.size(); i += 2) {
    auto nib = [](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      return -1;
    };
    const int hi = nib(hex[i]), lo = nib(hex[i + 1]);
    if (hi < 0 || lo < 0) return false;
    out->push_back(static_cast<uint8_t>(hi << 4 | lo));
  }
  return true;
}

Result<void, OptionsError> check_volume(const VolumeOptions& v) {
  if (v.socket.empty()) return bad(v.origin + ": needs socket=PATH");
  if (v.file.empty()) return bad(v.origin + ": needs file=PATH");
  if (v.read_only && v.discard.value_or(false)) return bad(v.origin + ": discard=on on a readonly volume");
  return {};
}

Result<std::string, OptionsError> parse_metrics(const std::string& origin, const std::string& v) {
  if (parse_fd_ref(v)) return v;  // a listening socket handed over by the launcher
  if (v.rfind("unix:", 0) != 0 || v.size() == 5)
    return bad(origin + " " + v + ": expected unix:PATH or fd:N");
  std::string path = v.substr(5);
  if (path.size() >= 108) return bad(origin + " " + v + ": the socket path is longer than 107 bytes");
  return path;
}

Result<std::string, OptionsError> parse_control(const std::string& origin, const std::string& v) {
  if (v.empty() || v.size() >= 108) return bad(origin + " \"" + v + "\": expected a socket path of 1-107 bytes");
  return v;
}

Result<std::string, OptionsError> parse_log_level(const std::string& origin, const std::string& v) {
  static const std::set<std::string> kLevels = {"error", "warn", "info", "debug"};
  if (kLevels.count(v) == 0) return bad(origin + " " + v + ": expected error, warn, info or debug");
  return v;
}

}  // namespace

Result<VolumeOptions, OptionsError> parse_volume(const std::string& origin, const std::string& spec) {
  VolumeOptions v;
  v.origin = origin + " " + spec;
  if (spec.empty()) return bad(origin + ": empty volume (use e.g. socket=/run/vol0.sock,file=/srv/vol0.img)");
  std::set<std::string> seen;
  for (const std::string& item : split(spec, ',')) {
    if (item.empty()) return bad(v.origin + ": empty option between commas");
    const size_t eq = item.find('=');
    const std::string key = item.substr(0, eq);
    const bool has_value = eq != std::string::npos;
    const std::string val = has_value ? item.substr(eq + 1) : "";
    if (!seen.insert(key).second) return bad(v.origin + ": " + key + " given twice");
    AZOTE_TRYV(set_volume_key(v, v.origin, key, val, has_value));
  }
  AZOTE_TRYV(check_volume(v));
  return v;
}

Result<VolumeOptions, OptionsError> parse_volume_json(const std::string& where, const nlohmann::json& j,
                                                      bool allow_key) {
  if (j.is_string()) return parse_volume(where, j.get<std::string>());
  if (!j.is_object()) return bad(where + ": must be an object or a \"socket=...,file=...\" string");
  VolumeOptions v;
  v.origin = where;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const auto& val = it.value();
    if (it.key() == "key" && allow_key) {
      if (!val.is_string() || !parse_hex_key(val.get<std::string>(), &v.key_bytes))
        return bad(where + ": \"key\" must be 128 hex digits (64 bytes)");
      continue;
    }
    std::string s;
    if (val.is_string()) {
      s = val.get<std::string>();
    } else if (val.is_boolean()) {
      s = val.get<bool>() ? "on" : "off";
    } else if (val.is_number_unsigned()) {
      s = std::to_string(val.get<uint64_t>());
    } else {
      return bad(where + ": \"" + it.key() + "\" must be a string, a boolean or a non-negative integer");
    }
    AZOTE_TRYV(set_volume_key(v, where, it.key(), s, true));
  }
  if (!v.key_bytes.empty() && !v.key_file.empty()) return bad(where + ": both \"key\" and \"key-file\" given");
  AZOTE_TRYV(check_volume(v));
  return v;
}

Result<void, OptionsError> apply_json(const std::string& text, const std::string& origin, CardOptions* out) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    return bad(origin + ": not valid JSON: " + e.what());
  }
  if (!j.is_object()) return bad(origin + ": the top level must be an object");
  static const std::set<std::string> kKeys = {"volumes", "metrics", "log", "control"};
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (kKeys.count(it.key()) == 0)
      return bad(origin + ": unknown key \"" + it.key() + "\" (known: volumes, metrics, log, control)");
  }
  if (j.contains("metrics")) {
    if (!j["metrics"].is_string()) return bad(origin + ": \"metrics\" must be a string \"unix:PATH\"");
    AZOTE_TRY(p, parse_metrics(origin + ": metrics", j["metrics"].get<std::string>()));
    out->metrics_path = p;
  }
  if (j.contains("control")) {
    if (!j["control"].is_string()) return bad(origin + ": \"control\" must be a string PATH");
    AZOTE_TRY(c, parse_control(origin + ": control", j["control"].get<std::string>()));
    out->control_path = c;
  }
  if (j.contains("log")) {
    if (!j["log"].is_string()) return bad(origin + ": \"log\" must be a string");
    AZOTE_TRY(l, parse_log_level(origin + ": log", j["log"].get<std::string>()));
    out->log_level = l;
  }
  if (j.contains("volumes")) {
    const auto& vs = j["volumes"];
    if (!vs.is_array()) return bad(origin + ": \"volumes\" must be an array");
    out->volumes.clear();
    for (size_t i = 0; i < vs.size(); ++i) {
      const std::string where = origin + ": volumes[" + std::to_string(i) + "]";
      AZOTE_TRY(v, parse_volume_json(where, vs[i], /*allow_key=*/false));
      out->volumes.push_back(std::move(v));
    }
  }
  return {};
}

Result<void, OptionsError> validate(const CardOptions& o) {
  if (o.volumes.empty() && o.control_path.empty())
    return bad("no volume: give at least one --volume socket=PATH,file=IMG or a --control socket (see --help)");
  if (o.volumes.size() > kMaxVolumes) return bad("more than " + std::to_string(kMaxVolumes) + " volumes");
  if (!o.control_path.empty() && o.control_path == o.metrics_path)
    return bad("--control " + o.control_path + " is also the --metrics socket");
  std::set<std::string> sockets;
  for (const auto& v : o.volumes) {
    if (!sockets.insert(v.socket).second) return bad(v.origin + ": socket " + v.socket + " is used by another volume");
    if (v.socket == o.metrics_path) return bad(v.origin + ": socket " + v.socket + " is also the --metrics socket");
    if (v.socket == o.control_path) return bad(v.origin + ": socket " + v.socket + " is also the --control socket");
  }
  return {};
}

Result<ParsedArgs, OptionsError> parse_args(const std::vector<std::string>& args) {
  ParsedArgs p;
  struct Flag {
    std::string name, value;
  };
  std::vector<Flag> flags;
  std::string config_path;
  const CommandLine line = split_command_line(
      args, {"--volume", "--config", "--metrics", "--log-level", "--control", "--seccomp"}, "volumes are given with --volume");
  if (!line.error.empty()) return bad(line.error);
  p.help = line.help;
  p.version = line.version;
  if (p.help || p.version) return p;
  for (const auto& [a, value] : line.flags) {
    if (a == "--config") {
      if (!config_path.empty()) return bad("--config given twice");
      config_path = value;
    } else {
      flags.push_back({a, value});
    }
  }
  if (!config_path.empty()) {
    std::ifstream f(config_path);
    if (!f) return bad("--config " + config_path + ": cannot be read");
    std::stringstream ss;
    ss << f.rdbuf();
    AZOTE_TRYV(apply_json(ss.str(), "--config " + config_path, &p.options));
  }
  bool volumes_from_flags = false;
  for (const auto& f : flags) {
    if (f.name == "--volume") {
      if (!volumes_from_flags) p.options.volumes.clear();
      volumes_from_flags = true;
      AZOTE_TRY(v, parse_volume("--volume", f.value));
      p.options.volumes.push_back(std::move(v));
    } else if (f.name == "--metrics") {
      AZOTE_TRY(m, parse_metrics("--metrics", f.value));
      p.options.metrics_path = m;
    } else if (f.name == "--control") {
      AZOTE_TRY(c, parse_control("--control", f.value));
      p.options.control_path = c;
    } else if (f.name == "--seccomp") {
      if (f.value != "kill" && f.value != "log") return bad("--seccomp \"" + f.value + "\": expected kill or log");
      p.options.seccomp = f.value;
    } else if (f.name == "--log-level") {
      AZOTE_TRY(l, parse_log_level("--log-level", f.value));
      p.options.log_level = l;
    }
  }
  AZOTE_TRYV(validate(p.options));
  return p;
}

const char* usage_text() {
  return R"(Usage: azote-card-blk --volume socket=PATH,file=IMG[,OPTION...] [--volume ...] [options]
       azote-card-blk --config FILE.json [options]

Serves virtio-blk volumes to hypervisors (azote-hv --device blk,socket=PATH) over
vhost-user: one listening Unix socket per volume, one process for all of them. The
data path (io_uring on the backing file, AES-XTS, rate limits) runs in the card,
one thread per started queue; the hypervisor is not involved after setup.
Offered to the guest: FLUSH, WRITE_ZEROES, DISCARD (see discard=), MQ (queues=), RO
(readonly), and CONFIG_WCE on writable volumes: the driver chooses write-back (the
default: FLUSH makes writes durable) or write-through (config field writeback = 0:
every write is durable, RWF_DSYNC, when it completes) for its session; a device
reset or a new connection returns to write-back.

Volume options (comma-separated after --volume):
  socket=PATH        vhost-user socket to listen on (mode 0600; a stale one is replaced)
  file=PATH          backing regular file or block device; capacity = size / 512
                     sectors. Opened with O_DIRECT when the file system allows it
                     (else the page cache, said in the log). Locked (flock) so two
                     cards cannot serve it at once.
  readonly[=on|off]  VIRTIO_BLK_F_RO: writes fail with an I/O error, the file is
                     opened read-only
  key-file=PATH      encrypt at rest with AES-XTS-256: PATH holds exactly 64 bytes
                     (two different 32-byte halves); the sector number is the tweak.
                     Data is encrypted in card memory before it is written; the file
                     never holds plaintext.
  iops=N             at most N requests per second (0: unlimited; default 0)
  mbps=N             at most N * 10^6 bytes per second of reads + writes (0: unlimited)
  burst-ms=N         bucket size of both limits, in milliseconds at the rate
                     (default 100). Requests over the limit wait; none is dropped.
  queues=N           virtqueues offered, 1-16 (default 1; MQ when > 1)
  serial=S           GET_ID serial, up to 20 printable characters (default: derived
                     from the backing file's device and inode numbers)
  discard=on|off     offer DISCARD (hole punching). Default on, except on encrypted
                     volumes, where it would reveal which blocks are unused.

Options:
  --volume SPEC         A volume (repeatable, up to 64).
  --config FILE.json    {"volumes": [{"socket": PATH, "file": PATH, "readonly": true,
                        "key-file": PATH, "iops": N, "mbps": N, "burst-ms": N,
                        "queues": N, "serial": S, "discard": false} or "socket=...,..."],
                        "metrics": "unix:PATH", "control": PATH, "log": "info"}. --volume flags replace
                        the file's volumes; other flags override its values.
  --metrics unix:PATH|fd:N
                        Serve per-volume counters as Prometheus text on a Unix socket:
                        each connection gets the full text, then EOF (an HTTP GET gets
                        an HTTP/1.0 response, so curl --unix-socket works). fd:N: a
                        listening socket handed over by the launcher.
  --control PATH|fd:N   Listen for the host controller on a Unix socket (mode 0600,
                        JSON lines; fd:N: one handed over by the launcher):
                        {"op":"add-volume","volume":{...as in --config,
                        plus "key": 128 hex digits}[,"import":PATH]} (PATH's bytes are
                        written, encrypted if keyed, at the volume's start before it is
                        served; "file" and "import" may be fd:N, descriptors handed
                        over by the launcher), {"op":"remove-volume",
                        "socket":PATH[,"force":true]}, {"op":"list-volumes"}. With it,
                        the card may start with no volume.
  --log-level LEVEL     error, warn, info (default) or debug; logs go to stderr.
  --seccomp kill|log    Each thread under its class's allowlist (src/cards/blk/seccomp.json):
                        kill (default) ends the card with SIGSYS on a forbidden call,
                        log lets it through and the kernel logs it (debugging only).
  -h, --help            Show this help.
  --version             Show the version.

Signals: SIGTERM and SIGINT stop the card: queues are drained, sockets removed.

Exit status:
  0    stopped by SIGTERM or SIGINT
  64   bad command line or configuration
  66   a backing file or key file cannot be used
  71   a socket or other host resource cannot be set up
  75   a queue worker did not stop within 5 s (its store operations did not complete);
       restart the card: the hypervisor reconnects and the requests are resubmitted
)";
}

}  // namespace azote::card_blk
