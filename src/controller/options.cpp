#include "controller/options.hpp"

#include <algorithm>

#include "base/parse.hpp"
#include "vpc_model/model.hpp"
#include "vpc_policy/flow.hpp"

namespace azote::controller {

using namespace vpc_model;  // the VPC as EC2 models it (lib/vpc_model)
namespace {

Unexpected<OptionsError> bad(std::string s) { return make_error(OptionsErrc::kUsage, std::move(s)); }

}  // namespace

Result<Options, OptionsError> parse_options(const std::vector<std::string>& args) {
  Options o;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string a = args[i], v;
    bool has_inline = false;
    if (const size_t eq = a.find('='); a.rfind("--", 0) == 0 && eq != std::string::npos) {
      v = a.substr(eq + 1);
      a = a.substr(0, eq);
      has_inline = true;
    }
    if (a == "-h" || a == "--help") {
      o.help = true;
      return o;
    }
    if (a == "--version") {
      o.version = true;
      return o;
    }
    const bool wants_value = a == "--state-dir" || a == "--listen" || a == "--hv" || a == "--card-blk" ||
                             a == "--card-net" || a == "--region" || a == "--vpc-cidr" || a == "--subnet-cidr" ||
                             a == "--capacity-vcpus" || a == "--capacity-memory" || a == "--on-exit" ||
                             a == "--log-level" || a == "--metrics-textfile" || a == "--launcher-fd" ||
                             a == "--uid-base" || a == "--probe" || a == "--test-socket" || a == "--card-cpus" ||
                             a == "--test-launch-delay" || a == "--dedicated-vcpus-per-cpu" ||
                             a == "--cgroup-favordynmods" || a == "--release-manifest" || a == "--release-key" ||
                             a == "--write-guard" || a == "--guard-rehash-seconds" || a == "--enclave-host-port" ||
                             a == "--underlay" || a == "--join" || a == "--enrolment-token" || a == "--region-ca" ||
                             a == "--zone" || a == "--host-id";
    if (!wants_value) return bad("unknown option \"" + args[i] + "\" (see --help)");
    if (!has_inline) {
      if (i + 1 >= args.size()) return bad(a + " needs a value");
      v = args[++i];
    }
    const std::string& x = v;
    if (a == "--state-dir") {
      if (x.empty() || x[0] != '/') return bad("--state-dir \"" + x + "\": give an absolute path");
      o.state_dir = x;
    } else if (a == "--listen") {
      if (x.rfind("unix:", 0) != 0 && x.find(':') == std::string::npos)
        return bad("--listen \"" + x + "\": expected unix:PATH or HOST:PORT");
      if (x.rfind("unix:", 0) == 0 && (x.size() == 5 || x.size() - 5 >= 108))
        return bad("--listen \"" + x + "\": the socket path must be 1-107 bytes");
      o.listen = x;
    } else if (a == "--hv") {
      o.hv_bin = x;
    } else if (a == "--card-blk") {
      o.card_blk_bin = x;
    } else if (a == "--card-net") {
      o.card_net_bin = x;
    } else if (a == "--region") {
      const bool ok = !x.empty() && x.size() <= 32 && std::all_of(x.begin(), x.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
      }) && x.front() != '-' && x.back() != '-';
      if (!ok) return bad("--region \"" + x + "\": expected 1-32 lowercase letters, digits and inner dashes (e.g. local-1)");
      o.region = x;
    } else if (a == "--underlay") {
      const size_t colon = x.rfind(':');
      const auto port = colon == std::string::npos ? std::nullopt : parse_uint(x.substr(colon + 1), 1, 65535);
      if (colon == std::string::npos || !port || !vpc::parse_ipv4(x.substr(0, colon)))
        return bad("--underlay \"" + x + "\": expected IPV4:PORT (e.g. 192.168.0.10:6081)");
      o.underlay = x;
    } else if (a == "--join") {
      if (x.rfind("https://", 0) != 0 || x.size() <= 8) return bad("--join \"" + x + "\": expected the region's https://HOST:PORT");
      o.join = x;
    } else if (a == "--enrolment-token") {
      o.enrolment_token = x;
    } else if (a == "--region-ca") {
      if (x.empty() || x[0] != '/') return bad("--region-ca \"" + x + "\": give an absolute path (the region's pki/ca.crt)");
      o.region_ca = x;
    } else if (a == "--zone") {
      o.zone = x;
    } else if (a == "--host-id") {
      const bool ok = !x.empty() && x.size() <= 64 && std::all_of(x.begin(), x.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '-' || c == '_';
      });
      if (!ok) return bad("--host-id \"" + x + "\": 1-64 letters, digits, - and _");
      o.host_id = x;
    } else if (a == "--vpc-cidr") {
      o.vpc_cidr = x;
    } else if (a == "--subnet-cidr") {
      o.subnet_cidr = x;
    } else if (a == "--capacity-vcpus") {
      const auto n = parse_uint(x, 1, 4096);
      if (!n) return bad("--capacity-vcpus \"" + x + "\": expected 1-4096");
      o.capacity_vcpus = static_cast<uint32_t>(*n);
    } else if (a == "--capacity-memory") {
      auto bytes = parse_size(x);
      if (!bytes || *bytes < (64ull << 20)) return bad("--capacity-memory \"" + x + "\": expected a size such as 16G (at least 64M)");
      o.capacity_memory_mib = *bytes >> 20;
    } else if (a == "--on-exit") {
      if (x != "keep" && x != "stop") return bad("--on-exit \"" + x + "\": expected keep or stop");
      o.stop_on_exit = x == "stop";
    } else if (a == "--metrics-textfile") {
      if (x.empty() || x[0] != '/' || x.back() == '/')
        return bad("--metrics-textfile \"" + x + "\": give an absolute file path (e.g. ending in .prom)");
      o.metrics_textfile = x;
    } else if (a == "--launcher-fd") {
      const auto n = parse_uint(x, 3, 1 << 20);
      if (!n) return bad("--launcher-fd \"" + x + "\": expected a descriptor number (set by azote-launcher)");
      o.launcher_fd = static_cast<int>(*n);
    } else if (a == "--uid-base") {
      const auto n = parse_uint(x, 65536, 0xfffffffeull - 65536 - 16);
      if (!n) return bad("--uid-base \"" + x + "\": expected a number from 65536 up");
      o.uid_base = static_cast<uint32_t>(*n);
    } else if (a == "--release-manifest") {
      o.release_manifest = x;
    } else if (a == "--release-key") {
      o.release_key = x;
    } else if (a == "--guard-rehash-seconds") {
      const auto n = parse_uint(x, 1, 86400);
      if (!n) return bad("--guard-rehash-seconds \"" + x + "\": expected 1 to 86400");
      o.guard_rehash_seconds = static_cast<int>(*n);
    } else if (a == "--write-guard") {
      if (x != "auto" && x != "on" && x != "off") return bad("--write-guard \"" + x + "\": expected auto, on or off");
      o.write_guard = x;
    } else if (a == "--cgroup-favordynmods") {
      if (x != "on" && x != "off") return bad("--cgroup-favordynmods \"" + x + "\": expected on or off");
      o.favordynmods = x == "on";
    } else if (a == "--probe") {
      o.probe_bin = x;
    } else if (a == "--test-socket") {
      o.test_socket = x;
    } else if (a == "--card-cpus") {
      o.card_cpus = x;
    } else if (a == "--enclave-host-port") {
      const size_t eq = x.find('=');
      const auto port = eq == std::string::npos ? std::nullopt : parse_uint(x.substr(0, eq), 1, 4294967295ull);
      const std::string name = eq == std::string::npos ? "" : x.substr(eq + 1);
      if (!port || name.empty() || name.size() > 64 || name.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789._-") != std::string::npos)
        return bad("--enclave-host-port \"" + x + "\": expected PORT=NAME (a socket name in <state>/host: a-z 0-9 . _ -)");
      if (o.enclave_host_ports.size() >= 8) return bad("--enclave-host-port: at most 8");
      o.enclave_host_ports.emplace_back(static_cast<uint32_t>(*port), name);
    } else if (a == "--dedicated-vcpus-per-cpu") {
      const auto n = parse_uint(x, 1, 64);
      if (!n) return bad("--dedicated-vcpus-per-cpu \"" + x + "\": expected 1-64");
      o.dedicated_per_cpu = static_cast<uint32_t>(*n);
    } else if (a == "--test-launch-delay") {
      const auto n = parse_uint(x, 0, 60'000);
      if (!n) return bad("--test-launch-delay \"" + x + "\": expected milliseconds, 0-60000");
      o.test_launch_delay_ms = static_cast<uint32_t>(*n);
    } else if (a == "--log-level") {
      if (x != "error" && x != "warn" && x != "info" && x != "debug")
        return bad("--log-level \"" + x + "\": expected error, warn, info or debug");
      o.log_level = x;
    }
  }
  if (auto e = check_network_layout(o.vpc_cidr, o.subnet_cidr)) return bad("--vpc-cidr/--subnet-cidr: " + *e);
  if (!o.join.empty() && (o.enrolment_token.empty() || o.region_ca.empty() || o.zone.empty()))
    return bad("--join needs --enrolment-token, --region-ca and --zone");
  if (o.join.empty() && (!o.enrolment_token.empty() || !o.region_ca.empty() || !o.zone.empty()))
    return bad("--enrolment-token, --region-ca and --zone go with --join URL");
  if (o.listen.empty()) o.listen = "unix:" + o.state_dir + "/api.sock";
  if (o.listen.rfind("unix:", 0) == 0 && o.listen.size() - 5 >= 108)
    return bad("the API socket path " + o.listen.substr(5) + " is longer than 107 bytes; use a shorter --state-dir or --listen");
  return o;
}

const char* usage_text() {
  return R"(Usage: azote-controller [--state-dir DIR] [--listen unix:PATH|HOST:PORT] [options]

The host controller: the only management interface of this host. Serves the Nitro
API (lib/api/azote.proto) over gRPC with mutual TLS 1.3: clients present a certificate
issued by this host's CA (azote admin issue-cert) whose role is control-plane (every
call) or operator (read-only calls). Nothing listens in plaintext. Every call,
accepted or denied, and every refused connection (not TLS, no ALPN h2, no or a bad
certificate; a flood is counted, one record per peer and reason per minute) is
appended to a hash-chained, signed audit log (azote audit verify). Runs per instance
one azote-hv, one azote-card-blk (that instance's volumes and keys only) and one
azote-card-net (that instance's network interface in the host's VPC: a default VPC
and subnet, security groups; the cards of one host reach each other's interfaces
through their inbox sockets); state is kept in SQLite and survives restarts, which
re-adopt running processes.

Start it as root: it execs azote-launcher (next to it), the only process that keeps
root, which starts the controller again under uid --uid-base with no capabilities
and, on its requests, every azote-hv and card in a jail of its own (namespaces, a
minimal read-only root, cgroups, a uid per instance, no capabilities, seccomp).

Options:
  --state-dir DIR         State: controller.db, pki/ (CA, server and host keys),
                          audit/ (audit.log, audit.log.head, signing.pub), volumes/,
                          images/, instances/ (per instance: hv.log, console.log,
                          card-blk.log, control sockets, run/ with its vhost-user
                          sockets), net/ (ENI sockets), card-net.*. Default
                          /var/lib/azote. Owned by the controller's uid, 0700.
  --listen EP             unix:PATH or HOST:PORT (default unix:DIR/api.sock)
  --hv PATH               azote-hv binary (default: next to this program)
  --card-blk PATH         azote-card-blk binary (default: next to this program)
  --card-net PATH         azote-card-net binary (default: next to this program). If it
                          is missing or cannot start, only instances launched without a
                          network interface (--no-network-interface) can run
  --region NAME           region name: DNS names ip-a-b-c-d.NAME.compute.internal, the
                          availability zone NAMEa (default local-1)
  --underlay IPV4:PORT    this host's address on the encrypted fabric between hosts: with
                          it, a host of azote-region runs the fabric process (keys, peers
                          and where each VPC address lives, all pushed by the region) and
                          instances reach those on other hosts (default: none)
  --join URL              join azote-region at URL (https://HOST:PORT) once, before
                          serving: with --enrolment-token TOKEN (azote-region
                          create-enrolment-token), --region-ca FILE (the region's CA)
                          and --zone ZONE (--host-id ID, default the hostname); the
                          region then calls this host with a certificate of its own
                          CA it sent; <state>/region.json records it (not again)
  --vpc-cidr CIDR         the default VPC, made with a new state directory
                          (default 10.0.0.0/16; /16 to /28)
  --subnet-cidr CIDR      its default subnet (default 10.0.1.0/24; inside the VPC,
                          /16 to /28); an instance gets the next free address (EC2
                          reserves the network address, .1, .2, .3 and broadcast)
  --capacity-vcpus N      vCPUs this host sells in all (default 8 per guest CPU: the
                          burstable t types share CPUs)
  --dedicated-vcpus-per-cpu N
                          vCPUs of dedicated (non-t) types per guest CPU (default 1:
                          no overcommit, as EC2 sells them)
  --capacity-memory SIZE  guest memory this host sells, e.g. 16G (default 80% of RAM)
  --on-exit keep|stop     on SIGTERM/SIGINT, leave instances and the cards running for
                          the next controller (keep, default) or stop them (stop)
  --metrics-textfile PATH write the Prometheus text (instances by state, vCPU and
                          memory allocated, API calls by method and outcome, the card's
                          counters) to PATH every 5 s, atomically, for node_exporter's
                          textfile collector; the same text is the GetMetrics call
                          (azote get-metrics). There is no plaintext scrape port.
  --uid-base N            identities (uid = gid): N the controller, N+16+S the
                          instance in slot S: its azote-hv and both its cards
                          (default 2000000000)
  --release-manifest FILE --release-key PUB
                          verified launch (passed to azote-launcher): every binary
                          the host runs, the launcher and this controller included,
                          must be in FILE, a release manifest signed with the key
                          whose public half is PUB (azote admin sign-release); a
                          launch whose hypervisor or card is not fails with the
                          launcher's reason. Without them: development mode
  --write-guard auto|on|off
                          passed to azote-launcher: refuse to every process (root
                          included) changes to azote-rot's state and, under a release
                          manifest, to the release's binaries, manifest and key; each
                          refusal is audited (host.write-denied). BPF LSM where the
                          kernel loads it (every kind of change), else fanotify
                          (opening for writing only). auto (default): the strongest
                          available; on: required; off: nothing guarded
  --guard-rehash-seconds N
                          passed to azote-launcher: under a release manifest, re-hash
                          the release's binaries every N seconds (default 60); a
                          mismatch is audited (host.rehash-mismatch)
  --cgroup-favordynmods on|off
                          passed to azote-launcher: on (default) sets the cgroup2
                          mount option favordynmods on hosts whose cpu/memory/pids/
                          cpuset controllers are in v1 hierarchies (host-wide, left
                          set), so that moving a new process into its cgroups does not
                          wait ~8 ms for an RCU grace period; off leaves it alone
  --enclave-host-port PORT=NAME
                          an enclave-enabled parent reaches the host socket
                          <state>/host/NAME (its owner makes it, e.g. azote-kms's)
                          as vsock CID 2 port PORT, through its vsock card (the
                          parent only; enclaves reach their parent alone), e.g.
                          8000=kms.sock for the parent's KMS proxy; repeatable (8)
  --card-cpus LIST        host CPUs for the cards (cpuset list such as 3 or 2-3);
                          the guests' vCPUs get the others. "none": no split. The
                          default reserves the last CPU for the cards on hosts with
                          4 or more CPUs and splits nothing on smaller ones
  --log-level LEVEL       error, warn, info (default) or debug; logs go to stderr
  --probe PATH, --test-socket PATH, --test-launch-delay MS
                          tests only: the boundary probe and the launcher's root-only
                          socket that starts it in a jail; a pause in every launch
                          after the empty shell starts (to interrupt a launch)
  -h, --help              show this help
  --version               show the version

Prints "azote-controller: ready endpoint=EP" on stdout once it serves.

Exit status: 0 stopped by SIGTERM/SIGINT, 64 bad command line, 71 the state
directory, PKI, audit log or listening socket cannot be set up.
)";
}

}  // namespace azote::controller
