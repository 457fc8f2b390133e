// azote-controller: a thin main — options, state directory, PKI, audit log, the Host,
// the gRPC server, then wait for SIGTERM/SIGINT.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <thread>
#include <filesystem>
#include <fstream>

#include <grpcpp/grpcpp.h>

#include "audit/log.hpp"
#include "audit/signing.hpp"
#include "base/log.hpp"
#include "controller/enrol.hpp"
#include "controller/gate.hpp"
#include "controller/host.hpp"
#include "controller/options.hpp"
#include "controller/processes.hpp"
#include "controller/refusals.hpp"
#include "controller/service.hpp"
#include "controller/tls.hpp"
#include "pki/files.hpp"
#include "pki/pki.hpp"
#include "sandbox/cgroup.hpp"
#include "sandbox/seccomp.hpp"

namespace azote::controller {
const sandbox::ProcessPolicy& seccomp_policy();  // generated from seccomp.json
}

using namespace azote;
using namespace azote::controller;

namespace {

constexpr int kExitUsage = 64;
constexpr int kExitSetup = 71;

int fail(const std::string& what) {
  std::fprintf(stderr, "azote-controller: error: %s\n", what.c_str());
  return kExitSetup;
}

std::string sibling(const char* name) {
  std::error_code ec;
  const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  return (ec ? std::filesystem::path(".") : self.parent_path()) / name;
}

// Started as root: become azote-launcher (same pid, so whoever started us signals and
// waits on the launcher), which starts this program again, unprivileged.
int exec_launcher(const Options& o, const std::vector<std::string>& args) {
  const std::string launcher = sibling("azote-launcher");
  std::vector<std::string> argv = {launcher,
                                   "--state-dir", o.state_dir,
                                   "--controller", sibling("azote-controller"),
                                   "--hv", o.hv_bin.empty() ? sibling("azote-hv") : o.hv_bin,
                                   "--card-blk", o.card_blk_bin.empty() ? sibling("azote-card-blk") : o.card_blk_bin,
                                   "--card-net", o.card_net_bin.empty() ? sibling("azote-card-net") : o.card_net_bin,
                                   "--card-tpm", sibling("azote-card-tpm"),
                                   "--card-nsm", sibling("azote-card-nsm"),
                                   "--card-vsock", sibling("azote-card-vsock"),
                                   "--rot", sibling("azote-rot"),
                                   "--uid-base", std::to_string(o.uid_base),
                                   "--cgroup-favordynmods", o.favordynmods ? "on" : "off",
                                   "--write-guard", o.write_guard,
                                   "--guard-rehash-seconds", std::to_string(o.guard_rehash_seconds)};
  if (!o.probe_bin.empty()) argv.insert(argv.end(), {"--probe", o.probe_bin, "--test-socket", o.test_socket});
  if (!o.release_manifest.empty() || !o.release_key.empty())
    argv.insert(argv.end(), {"--release-manifest", o.release_manifest, "--release-key", o.release_key});
  argv.push_back("--");
  argv.insert(argv.end(), args.begin(), args.end());
  std::vector<char*> raw;
  for (auto& a : argv) raw.push_back(a.data());
  raw.push_back(nullptr);
  ::execv(launcher.c_str(), raw.data());
  return fail("cannot run " + launcher + " (azote-controller starts it when run as root): " + std::strerror(errno));
}

// The cards' cores and the guests' (cpuset lists); empty strings: no split.
Result<std::pair<std::string, std::string>, OptionsError> cpu_split(const std::string& wanted) {
  const std::set<int> online = sandbox::allowed_cpus();
  if (wanted == "none") return std::pair<std::string, std::string>{};
  if (wanted.empty()) {
    if (online.size() < 4) {
      LOG_INFO("controller: %zu CPUs: no cores reserved for the cards (they share every CPU with the guests; "
               "--card-cpus LIST reserves some)", online.size());
      return std::pair<std::string, std::string>{};
    }
    std::set<int> card{*online.rbegin()}, guest = online;
    guest.erase(*online.rbegin());
    return std::pair{sandbox::format_cpu_list(card), sandbox::format_cpu_list(guest)};
  }
  auto card = sandbox::parse_cpu_list(wanted);
  if (!card) return make_error(OptionsErrc::kUsage, "--card-cpus \"" + wanted + "\": expected a CPU list such as 3 or 2-3, or none");
  std::set<int> guest = online;
  for (int c : *card) {
    if (!online.count(c))
      return make_error(OptionsErrc::kUsage, "--card-cpus \"" + wanted + "\": CPU " + std::to_string(c) +
                                                 " is not one this process may use (" + sandbox::format_cpu_list(online) + ")");
    guest.erase(c);
  }
  if (guest.empty()) return make_error(OptionsErrc::kUsage, "--card-cpus \"" + wanted + "\" leaves no CPU for the guests");
  return std::pair{sandbox::format_cpu_list(*card), sandbox::format_cpu_list(guest)};
}

}  // namespace

int main(int argc, char** argv) {
  auto parsed = parse_options(std::vector<std::string>(argv + 1, argv + argc));
  if (!parsed) {
    std::fprintf(stderr, "azote-controller: error: %s\n", parsed.error().message().c_str());
    return kExitUsage;
  }
  Options o = std::move(parsed).value();
  if (o.help) {
    std::fputs(usage_text(), stdout);
    return 0;
  }
  if (o.version) {
    std::printf("azote-controller %s\n", AZOTE_VERSION);
    return 0;
  }
  log::set_level(log::level_from_name(o.log_level));
  if (o.launcher_fd < 0) {
    if (::geteuid() != 0)
      return fail("start azote-controller as root: it runs azote-launcher (the privileged part, which builds the "
                  "jails) and then drops to uid " + std::to_string(o.uid_base));
    return exec_launcher(o, std::vector<std::string>(argv + 1, argv + argc));
  }
  auto cpus = cpu_split(o.card_cpus);
  if (!cpus) {
    std::fprintf(stderr, "azote-controller: error: %s\n", cpus.error().message().c_str());
    return kExitUsage;
  }
  Processes procs{UniqueFd(o.launcher_fd)};
  // Every thread of this process (gRPC's included: they inherit it) runs under the
  // controller's allowlist (src/controller/seccomp.json) from here on.
  if (auto s = sandbox::init_process(seccomp_policy(), sandbox::SeccompMode::kKill); !s) return fail(s.error().message());
  if (auto s = sandbox::enter_thread("controller"); !s) return fail(s.error().message());
  // Signals go to sigwait below; threads started from here on inherit the mask.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);
  ::umask(077);

  std::error_code ec;
  std::filesystem::create_directories(o.state_dir + "/audit", ec);
  if (ec) return fail("state directory " + o.state_dir + ": " + ec.message());
  ::chmod(o.state_dir.c_str(), 0700);

  auto pki = pki::HostPki::open_or_create(o.state_dir + "/pki");
  if (!pki) return fail("PKI in " + o.state_dir + "/pki: " + pki.error().message());

  // The host's audit signing key (Ed25519), and its public half next to the log for
  // `azote audit verify`.
  const std::string key_path = o.state_dir + "/pki/audit-signing.key";
  auto key = std::filesystem::exists(key_path) ? audit::SigningKey::load_pem_file(key_path) : audit::SigningKey::generate();
  if (!key) return fail("audit signing key: " + key.error().message());
  if (!std::filesystem::exists(key_path))
    if (auto s = key->save_pem_file(key_path); !s) return fail("audit signing key: " + s.error().message());
  auto pub = key->public_pem();
  if (!pub) return fail("audit signing key: " + pub.error().message());
  if (auto w = pki::write_file_atomic(o.state_dir + "/audit/signing.pub", *pub, 0644); !w)
    return fail("audit public key: " + w.error().message());
  auto audit_log = audit::AuditLog::open(o.state_dir + "/audit/audit.log", *key);
  if (!audit_log) return fail("audit log: " + audit_log.error().message());

  HostOptions ho;
  ho.state_dir = o.state_dir;
  ho.card_net_bin = o.card_net_bin.empty() ? sibling("azote-card-net") : o.card_net_bin;
  ho.uid_base = o.uid_base;
  ho.card_cpus = cpus->first;
  ho.test_launch_delay_ms = o.test_launch_delay_ms;
  ho.dedicated_per_cpu = o.dedicated_per_cpu;
  {
    const auto guest = sandbox::parse_cpu_list(cpus->second);
    ho.guest_cpu_count = guest ? static_cast<uint32_t>(guest->size()) : static_cast<uint32_t>(sandbox::allowed_cpus().size());
  }
  ho.guest_cpus = cpus->second;
  ho.region = o.region;
  ho.underlay = o.underlay;
  ho.vpc_cidr = o.vpc_cidr;
  ho.subnet_cidr = o.subnet_cidr;
  ho.capacity_vcpus = o.capacity_vcpus;
  ho.capacity_memory_mib = o.capacity_memory_mib;
  ho.stop_on_exit = o.stop_on_exit;
  ho.enclave_host_ports = o.enclave_host_ports;
  auto host = Host::open(ho, *pki, procs);
  if (!host) return fail(host.error().message());
  if (!o.join.empty()) {
    // Joining the region: once, before serving (the region probes the host afterwards).
    EnrolRequest er;
    er.url = o.join;
    er.token = o.enrolment_token;
    er.region_ca = o.region_ca;
    er.zone = o.zone;
    er.host_id = o.host_id;
    if (er.host_id.empty()) {
      char name[256] = {};
      ::gethostname(name, sizeof name - 1);
      er.host_id = name;
    }
    er.endpoint = o.listen;
    er.underlay = o.underlay;
    er.vcpus = (*host)->capacity_vcpus();
    er.memory_mib = (*host)->capacity_memory_mib();
    auto joined = enrol_once(o.state_dir, *pki, er);
    if (!joined) {
      (*host)->shutdown();
      return fail("joining the region at " + o.join + ": " + joined.error().message());
    }
    LOG_INFO("controller: a host of the region at %s: %s", o.join.c_str(), joined->c_str());
  }

  Service service(**host, *pki, **audit_log);
  (*host)->set_event_sink([&service](const std::string& m, const std::vector<std::string>& r, const std::string& e) {
    service.audit_event(m, r, e);
  });
  // Every refused connection is audited; a flood is aggregated: per (principal, peer,
  // reason) the first at once, then one record with the count per minute, at most 64
  // keys tracked one by one (refusals.hpp). A minute keeps a flood to about two records
  // per key per minute while the first refusal of anything new is on record at once.
  RefusalAggregator refusals([&service](const Refusal& r) { service.audit_refusal(r); }, std::chrono::seconds(60), 64);
  // The listening socket is ours, not gRPC's: the Gate screens each connection's
  // ClientHello and hands acceptable ones to gRPC (gate.hpp), so that refusals gRPC
  // would make silently are audited too.
  if (o.listen.rfind("unix:", 0) == 0) ::unlink(o.listen.substr(5).c_str());
  auto gate = Gate::listen(o.listen, *pki, refusals);
  if (!gate) {
    (*host)->shutdown();
    return fail("cannot listen on " + o.listen + ": " + gate.error().message());
  }
  grpc::ServerBuilder builder;
  auto acceptor = builder.experimental().AddExternalConnectionAcceptor(
      grpc::ServerBuilder::experimental_type::ExternalConnectionType::FROM_FD,
      server_credentials(*pki, [&refusals](const std::string& who, const std::string& why) {
        refusals.refused(who, "", why);
      }));
  builder.RegisterService(&service);
  builder.SetMaxReceiveMessageSize(300 << 20);  // RegisterImage carries a kernel and an initrd
  auto server = builder.BuildAndStart();
  if (!server) {
    (*host)->shutdown();
    return fail("cannot start the gRPC server");
  }
  (*gate)->start(std::move(acceptor));
  std::printf("azote-controller: ready endpoint=%s state=%s\n", o.listen.c_str(), o.state_dir.c_str());
  std::fflush(stdout);

  // Metrics for node_exporter's textfile collector: written every 5 s, atomically.
  std::mutex metrics_mu;
  std::condition_variable metrics_cv;
  bool metrics_stop = false;
  std::thread metrics_writer;
  if (!o.metrics_textfile.empty()) {
    metrics_writer = std::thread([&] {
      std::unique_lock lock(metrics_mu);
      do {
        lock.unlock();
        const std::string text = (*host)->metrics_text() + service.call_metrics();
        if (auto w = pki::write_file_atomic(o.metrics_textfile, text, 0644); !w)
          LOG_WARN("controller: --metrics-textfile: %s", w.error().message().c_str());
        lock.lock();
      } while (!metrics_cv.wait_for(lock, std::chrono::seconds(5), [&] { return metrics_stop; }));
    });
  }

  int sig = 0;
  sigwait(&set, &sig);
  LOG_INFO("azote-controller: %s: stopping", strsignal(sig));
  (*gate)->stop();  // no new connections; those still waiting for a ClientHello are refused
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  refusals.flush();  // counted refusals not written yet
  if (metrics_writer.joinable()) {
    {
      std::lock_guard lock(metrics_mu);
      metrics_stop = true;
    }
    metrics_cv.notify_all();
    metrics_writer.join();
  }
  (*host)->shutdown();
  if (o.listen.rfind("unix:", 0) == 0) ::unlink(o.listen.substr(5).c_str());
  return 0;
}
