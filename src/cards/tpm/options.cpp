#include "cards/tpm/options.hpp"

#include <set>

#include "base/parse.hpp"

namespace azote::card_tpm {
namespace {

Unexpected<TpmError> bad(std::string what) { return make_error(TpmErrc::kUsage, std::move(what)); }

TpmResult<std::string> socket_path(const std::string& origin, const std::string& v) {
  if (v.empty() || v.size() >= 108) return bad(origin + " \"" + v + "\": expected a socket path of 1-107 bytes or fd:N");
  return v;
}

TpmResult<std::string> parse_control(const std::string& v) {
  if (v.rfind("fd:", 0) == 0 && !parse_fd_ref(v)) return bad("--control " + v + ": expected fd:N with N >= 3");
  return socket_path("--control", v);
}

TpmResult<std::string> parse_metrics(const std::string& v) {
  if (v.rfind("fd:", 0) == 0) {
    if (!parse_fd_ref(v)) return bad("--metrics " + v + ": expected fd:N with N >= 3");
    return v;
  }
  return socket_path("--metrics", v.rfind("unix:", 0) == 0 ? v.substr(5) : v);
}

TpmResult<std::string> string_field(const nlohmann::json& r, const char* name) {
  if (!r.contains(name) || !r[name].is_string()) return bad(std::string("open needs \"") + name + "\" (a string)");
  return r[name].get<std::string>();
}

}  // namespace

bool valid_instance_id(const std::string& id) {
  if (id.size() < 3 || id.size() > 34 || id.rfind("i-", 0) != 0) return false;
  for (size_t i = 2; i < id.size(); ++i) {
    const char c = id[i];
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

TpmResult<OpenRequest> parse_open(const nlohmann::json& r, std::optional<StateKey>* key) {
  static const std::set<std::string> kKeys = {"op", "instance", "state", "key", "socket"};
  for (auto it = r.begin(); it != r.end(); ++it) {
    if (kKeys.count(it.key()) == 0)
      return bad("open: unknown field \"" + it.key() + "\" (known: instance, state, key, socket)");
  }
  OpenRequest o;
  AZOTE_TRY(instance, string_field(r, "instance"));
  if (!valid_instance_id(instance))
    return bad("open: \"instance\" \"" + instance + "\" is not an instance id (i- and 1-32 lowercase hex digits)");
  o.instance = instance;
  AZOTE_TRY(state, string_field(r, "state"));
  const auto fd = parse_fd_ref(state);
  if (!fd) return bad("open: \"state\" \"" + state + "\" must be fd:N, a descriptor the card was given (N >= 3)");
  o.state_fd = *fd;
  o.state_name = "state " + state;
  AZOTE_TRY(socket, string_field(r, "socket"));
  AZOTE_TRY(sock, socket_path("open: \"socket\"", socket));
  o.socket = sock;
  AZOTE_TRY(hex, string_field(r, "key"));
  auto k = StateKey::from_hex(hex, "open: \"key\"");
  if (!k) return Unexpected{std::move(k).error()};
  key->emplace(std::move(k).value());
  return o;
}

TpmResult<ParsedArgs> parse_args(const std::vector<std::string>& args) {
  ParsedArgs p;
  const CommandLine line = split_command_line(args, {"--control", "--metrics", "--rot", "--seccomp", "--log-level"});
  if (!line.error.empty()) return bad(line.error);
  p.help = line.help;
  p.version = line.version;
  if (p.help || p.version) return p;
  std::set<std::string> seen;
  for (const auto& [a, value] : line.flags) {
    if (!seen.insert(a).second) return bad(a + " given twice");
    if (a == "--control") {
      AZOTE_TRY(c, parse_control(value));
      p.options.control_path = c;
    } else if (a == "--metrics") {
      AZOTE_TRY(m, parse_metrics(value));
      p.options.metrics_path = m;
    } else if (a == "--rot") {
      const auto fd = parse_fd_ref(value);
      if (!fd)
        return bad("--rot " + value + ": expected fd:N with N >= 3 (a connected socket to azote-rot from the launcher)");
      p.options.rot_fd = *fd;
    } else if (a == "--seccomp") {
      if (value != "kill" && value != "log") return bad("--seccomp \"" + value + "\": expected kill or log");
      p.options.seccomp = value;
    } else if (a == "--log-level") {
      if (value != "error" && value != "warn" && value != "info" && value != "debug")
        return bad("--log-level " + value + ": expected error, warn, info or debug");
      p.options.log_level = value;
    }
  }
  if (p.options.control_path.empty())
    return bad("--control PATH|fd:N is required (the TPM is opened through it; see --help)");
  if (p.options.control_path == p.options.metrics_path)
    return bad("--control " + p.options.control_path + " is also the --metrics socket");
  if (p.options.rot_fd >= 0) {
    const std::string rot = "fd:" + std::to_string(p.options.rot_fd);
    if (parse_fd_ref(p.options.control_path) == p.options.rot_fd || parse_fd_ref(p.options.metrics_path) == p.options.rot_fd)
      return bad("--rot " + rot + " is also the --control or --metrics socket");
  }
  return p;
}

const char* usage_text() {
  return R"(Usage: azote-card-tpm --control PATH|fd:N [--metrics PATH|fd:N] [--rot fd:N] [options]

One instance's TPM 2.0 (libtpms), like the NitroTPM of an EC2 instance: the card starts
empty; the controller opens the instance's TPM through the control socket, with its
state file (a descriptor) and its state key, and the card then serves the TPM on a Unix
socket with swtpm's "unixio" data protocol: a client writes one raw TPM 2.0 command
(10-byte header, commandSize big-endian, at most 4096 bytes), the card answers the raw
response. Several clients may connect; commands run one at a time. The card never sends
a command itself: the hypervisor, as firmware, sends TPM2_Startup and the measured-boot
PCR extends. tpm2-tools reach it with
  tpm2_pcrread -T "cmd:socat - UNIX-CONNECT:/path/tpm.sock" sha256:0,4

Attestation, NitroTPM-style: the vendor command TPM_CC_AZOTE_ATTEST (0x20000A01, tag
TPM_ST_NO_SESSIONS) is answered by the card itself, never by libtpms:
  command  header | u32 offset | u16 nonce_size | nonce (0-64 bytes)
           | u16 user_data_size | user_data (0-512 bytes)
  response header | u32 total | u16 chunk_size | chunk (at most 2048 bytes of the document
           from offset)
Offset 0 reads the TPM's sha384 PCRs 0-23 and asks azote-rot (--rot) for a fresh
attestation document (COSE_Sign1) over them, the nonce and the user data; offsets > 0
read the rest of that document (same nonce and user data). Errors: TPM_RC_SIZE (a size
over its limit, a length mismatch), TPM_RC_VALUE (no document for this nonce and user
data, offset past the end), TPM_RC_INITIALIZE (no TPM2_Startup yet), TPM_RC_FAILURE (no
--rot, azote-rot refused or did not answer within 10 s).

The state (libtpms's permanent state: seeds, hierarchies, NV, persistent objects) is
kept across stops and starts of the instance, encrypted with AES-256-GCM under the
state key, in two slots of one file so that a crash while writing never loses it
(src/cards/tpm/DESIGN.md). Plaintext state is never written.

Control requests (JSON lines):
  {"op":"open","instance":"i-<hex>","state":"fd:N","key":"<64 hex digits>",
   "socket":PATH}     fd N: the state file, open read-write (empty: a new TPM is
                      manufactured). The key is the instance's 32-byte state key. A state
                      that does not authenticate (wrong key, tampering) is refused, never
                      replaced. Answers {"ok":true,"manufactured":B,"state_bytes":N}.
                      Once only.
  {"op":"describe"}   {"ok":true,"open":B,"instance":ID,"commands_total":N,
                      "state_writes_total":N,"clients":N,"manufactured":B,...}

Options:
  --control PATH|fd:N   Listen for the host controller on a Unix socket (mode 0600, JSON
                        lines; fd:N: a listening socket handed over by the launcher).
  --metrics PATH|fd:N   Serve counters as Prometheus text on a Unix socket: each
                        connection gets the full text, then EOF (an HTTP GET gets an
                        HTTP/1.0 response). "unix:PATH" is accepted too.
  --rot fd:N            A connected stream socket to azote-rot, bound to this instance by
                        the launcher: attestation documents are asked for on it (one JSON
                        line each way). Without it the attestation command answers
                        TPM_RC_FAILURE; once it is closed or silent for 10 s it is given
                        up until the card restarts.
  --log-level LEVEL     error, warn, info (default) or debug; logs go to stderr.
  --seccomp kill|log    Each thread under its class's allowlist (src/cards/tpm/seccomp.json):
                        kill (default) ends the card with SIGSYS on a forbidden call, log
                        lets it through and the kernel logs it (debugging only).
  -h, --help            Show this help.
  --version             Show the version.

Signals: SIGTERM and SIGINT stop the card (the state is already on disk: every change
is written before its command is answered).

Exit status:
  0    stopped by SIGTERM or SIGINT
  64   bad command line
  71   a socket or other host resource cannot be set up
  75   the TPM thread did not stop within 5 s (a command still running)
)";
}

}  // namespace azote::card_tpm
