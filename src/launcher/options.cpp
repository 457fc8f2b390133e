#include <charconv>

#include "base/parse.hpp"
#include "launcher/launcher.hpp"

namespace azote::launcher {

Result<Options, LauncherError> parse_args(const std::vector<std::string>& args) {
  Options o;
  auto bad = [](const std::string& w) { return make_error(LauncherErrc::kUsage, w); };
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--") {
      o.controller_args.assign(args.begin() + static_cast<long>(i) + 1, args.end());
      break;
    }
    if (a == "-h" || a == "--help") {
      o.help = true;
      return o;
    }
    if (a == "--version") {
      o.version = true;
      return o;
    }
    std::string flag = a, value;
    if (const size_t eq = a.find('='); a.rfind("--", 0) == 0 && eq != std::string::npos) {
      flag = a.substr(0, eq);
      value = a.substr(eq + 1);
    } else {
      if (i + 1 >= args.size()) return bad(a + " needs a value (see --help)");
      value = args[++i];
    }
    if (flag == "--state-dir") o.state_dir = value;
    else if (flag == "--controller") o.controller_bin = value;
    else if (flag == "--hv") o.hv_bin = value;
    else if (flag == "--card-blk") o.card_blk_bin = value;
    else if (flag == "--card-net") o.card_net_bin = value;
    else if (flag == "--card-tpm") o.card_tpm_bin = value;
    else if (flag == "--card-nsm") o.card_nsm_bin = value;
    else if (flag == "--card-vsock") o.card_vsock_bin = value;
    else if (flag == "--probe") o.probe_bin = value;
    else if (flag == "--rot") o.rot_bin = value;
    else if (flag == "--test-socket") o.test_socket = value;
    else if (flag == "--uid-base") {
      uint64_t n = 0;
      const auto r = std::from_chars(value.data(), value.data() + value.size(), n);
      if (r.ec != std::errc() || r.ptr != value.data() + value.size() || n < 65536 ||
          n + launch::kFirstInstanceId + launch::kMaxSlots >= 0xffffffffull)
        return bad("--uid-base \"" + value + "\": expected a number from 65536 to " +
                   std::to_string(0xfffffffeull - launch::kFirstInstanceId - launch::kMaxSlots));
      o.uid_base = static_cast<uint32_t>(n);
    } else if (flag == "--release-manifest") {
      o.release_manifest = value;
    } else if (flag == "--release-key") {
      o.release_key = value;
    } else if (flag == "--write-guard") {
      if (value != "auto" && value != "on" && value != "off") return bad("--write-guard \"" + value + "\": expected auto, on or off");
      o.write_guard = value;
    } else if (flag == "--guard-rehash-seconds") {
      const auto n = parse_uint(value, 1, 86400);
      if (!n) return bad("--guard-rehash-seconds \"" + value + "\": expected 1 to 86400");
      o.guard_rehash_seconds = static_cast<int>(*n);
    } else if (flag == "--cgroup-favordynmods") {
      if (value != "on" && value != "off") return bad("--cgroup-favordynmods \"" + value + "\": expected on or off");
      o.favordynmods = value == "on";
    } else {
      return bad("unknown option \"" + flag + "\" (see --help)");
    }
  }
  if (o.state_dir.empty()) return bad("--state-dir is required");
  if (o.release_manifest.empty() != o.release_key.empty())
    return bad("--release-manifest and --release-key go together (a signed manifest and the key that checks it)");
  for (const auto* b : {&o.controller_bin, &o.hv_bin, &o.card_blk_bin, &o.card_net_bin})
    if (b->empty()) return bad("--controller, --hv, --card-blk and --card-net are required");
  return o;
}

const char* usage_text() {
  return R"(Usage: azote-launcher --state-dir DIR --controller BIN --hv BIN --card-blk BIN
                     --card-net BIN [--card-tpm BIN] [--card-nsm BIN] [--card-vsock BIN] [--uid-base N] [--cgroup-favordynmods on|off]
                     [--rot BIN] [--write-guard auto|on|off] [--guard-rehash-seconds N]
                     [--probe BIN --test-socket PATH]
                     -- CONTROLLER-ARGS...

The privileged part of an azote host. azote-controller starts it when run as root
(you do not normally run it yourself): it keeps root, starts the controller
unprivileged (uid and gid N), and on the controller's requests starts azote-hv and
the cards in jails of their own (namespaces, a minimal read-only root, cgroups, a
non-root uid, no capabilities), opening the files they need for them.

  --state-dir DIR    the host's state directory (owned by the controller's uid)
  --controller BIN   azote-controller; --hv, --card-blk, --card-net, --card-tpm,
                     --card-nsm, --card-vsock: the processes it may start (nothing else;
                     --card-net also runs as the host's fabric process);
                     without --card-tpm no instance gets a TPM, without
                     --card-nsm no enclave starts
  --rot BIN          azote-rot, the host's root of trust: started at start as uid
                     N+2 with <state>/rot (0700) as its state, serving the
                     controller on <state>/rot.sock; its layers: itself, this
                     launcher (and the release it runs under), the controller.
                     Restarted if it exits; without it nothing can be attested
  --uid-base N       identities: N the controller, N+2 azote-rot, N+3 the host's
                     fabric process (azote-card-net holding the fabric's keys), N+16+S
                     the instance in slot S (its azote-hv, its block card and its
                     network card); default 2000000000
  --release-manifest FILE --release-key PUB
                     verified launch: FILE is a release manifest (azote admin
                     sign-release) signed with the key whose public half is PUB
                     (PEM), both owned by root and not writable by others. The
                     launcher checks them and itself at start (exit 71), runs
                     azote-hv and the cards from copies sealed and checked then
                     (SHA-384), the controller through the descriptor it hashed,
                     and refuses a binary that is not the release's. Without them:
                     development mode, logged at start
  --write-guard auto|on|off
                     refuse to every process, root included, changes to azote-rot's
                     state (but by azote-rot) and, under a release manifest, to the
                     release's binaries, the manifest and the key; each refusal
                     logged and audited by the controller. With BPF LSM programs
                     where the kernel loads them (write, truncate, unlink, rename,
                     mount over, new entries), else with fanotify (opening for
                     writing only). auto (default): the strongest available, else a
                     warning; on: exit 71 without any; off: nothing guarded
  --guard-rehash-seconds N
                     under a release manifest, re-hash the guarded binaries every N
                     seconds (default 60); a mismatch is logged and audited
  --cgroup-favordynmods on|off
                     on (default): where processes must be moved into v1 cgroup
                     hierarchies (a hybrid host), set the cgroup2 mount option
                     favordynmods, host-wide and left set: each move otherwise waits
                     for an RCU grace period (~8 ms here) holding the kernel's cgroup
                     lock. off: leave the host's cgroup mounts as they are
  --probe BIN        tests only: the boundary probe, started on request from
  --test-socket PATH a root-only socket in the jail of a running process
  -h, --help         this help;  --version  the version

Exit status: the controller's, after SIGTERM/SIGINT was passed on to it; 64 bad
usage; 71 setup failed (not root, state directory, cgroups).
)";
}

}  // namespace azote::launcher
