// The fixture of the controller's end-to-end tests (controller_test, confinement_test):
// a real azote-controller (as root: with its launcher and jails) in a state directory
// of its own, the azote CLI with a control-plane certificate, and ways to look at what
// runs (the launcher's test socket, the cards' control sockets, /proc).
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "pki/pki.hpp"
#include "process.hpp"

#include "base/unique_fd.hpp"
#include "launch/protocol.hpp"

namespace azote::test {

using namespace std::chrono_literals;
using Json = nlohmann::json;

inline std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

// The azote-controller a launcher runs (its child), or 0.
inline pid_t controller_of(pid_t launcher) {
  std::istringstream in(slurp("/proc/" + std::to_string(launcher) + "/task/" + std::to_string(launcher) + "/children"));
  pid_t p = 0;
  while (in >> p)
    if (slurp("/proc/" + std::to_string(p) + "/comm") == "azote-controlle\n") return p;
  return 0;
}

// PIDs of processes whose command line mentions `needle` (our state directory).
inline std::vector<pid_t> processes_mentioning(const std::string& needle) {
  std::vector<pid_t> out;
  DIR* d = ::opendir("/proc");
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    const pid_t pid = static_cast<pid_t>(std::atoi(e->d_name));
    if (pid <= 0 || pid == ::getpid()) continue;
    std::string cmd = slurp("/proc/" + std::to_string(pid) + "/cmdline");
    std::replace(cmd.begin(), cmd.end(), '\0', ' ');
    const std::string stat = slurp("/proc/" + std::to_string(pid) + "/stat");
    const size_t close = stat.rfind(')');
    if (close != std::string::npos && close + 2 < stat.size() && stat[close + 2] == 'Z') continue;
    if (cmd.find(needle) != std::string::npos) out.push_back(pid);
  }
  ::closedir(d);
  return out;
}

// One request on a card's JSON-lines control socket (lib/control's protocol: one
// object per line, one answer line). Written out here because this test links no
// azote library beyond pki; an empty object when the card cannot be reached.
inline Json card_call(const std::string& path, const Json& request) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
  if (fd < 0 || ::connect(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0) {
    if (fd >= 0) ::close(fd);
    return Json::object();
  }
  const std::string line = request.dump() + "\n";
  std::string in;
  if (::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size())) {
    const auto end = std::chrono::steady_clock::now() + 10s;
    char buf[4096];
    while (in.find('\n') == std::string::npos && std::chrono::steady_clock::now() < end) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 1000) <= 0) continue;
      const ssize_t n = ::read(fd, buf, sizeof buf);
      if (n <= 0) break;
      in.append(buf, static_cast<size_t>(n));
    }
  }
  ::close(fd);
  if (in.find('\n') == std::string::npos) return Json::object();
  Json j = Json::parse(in.substr(0, in.find('\n')), nullptr, false);
  return j.is_discarded() ? Json::object() : j;
}

// Whether `needle` is anywhere in the readable memory of `pid` (root reads any process's
// /proc/PID/mem; unreadable mappings such as [vvar] are skipped).
inline bool memory_holds(pid_t pid, const std::string& needle, uint64_t* scanned = nullptr) {
  const std::string base = "/proc/" + std::to_string(pid);
  UniqueFd mem(::open((base + "/mem").c_str(), O_RDONLY | O_CLOEXEC));
  if (!mem) return false;
  std::istringstream maps(slurp(base + "/maps"));
  std::string line;
  std::vector<char> buf(8 << 20);
  uint64_t total = 0;
  while (std::getline(maps, line)) {
    unsigned long long lo = 0, hi = 0;
    char perms[8] = {};
    if (std::sscanf(line.c_str(), "%llx-%llx %7s", &lo, &hi, perms) != 3 || perms[0] != 'r') continue;
    // Overlapping reads so that a needle across a chunk boundary is seen.
    for (unsigned long long at = lo; at < hi;) {
      const size_t want = static_cast<size_t>(std::min<unsigned long long>(buf.size(), hi - at));
      const ssize_t n = ::pread(mem.get(), buf.data(), want, static_cast<off_t>(at));
      if (n <= 0) break;
      total += static_cast<uint64_t>(n);
      if (std::search(buf.begin(), buf.begin() + n, needle.begin(), needle.end()) != buf.begin() + n) {
        if (scanned) *scanned = total;
        return true;
      }
      if (static_cast<size_t>(n) < want) break;
      at += static_cast<unsigned long long>(n) > needle.size() ? static_cast<unsigned long long>(n) - needle.size() : n;
    }
  }
  if (scanned) *scanned = total;
  return false;
}

class ControllerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (!kvm_usable(&why)) GTEST_SKIP() << "SKIPPED: needs KVM (" << why << ")";
    static int n = 0;
    // Short: the API socket path must fit in 107 bytes.
    dir_ = "/tmp/azc-" + std::to_string(::getpid()) + "-" + std::to_string(n++);
    std::filesystem::remove_all(dir_);
    start_controller();
    cp_ = issue("control-plane", "fleet");
  }
  void TearDown() override {
    if (dir_.empty()) return;
    const std::string tree = cgroup_tree_;
    stop_controller(SIGTERM);
    // --on-exit stop: nothing of this host may outlive its controller, jailed or not.
    auto left = processes_mentioning(dir_);
    for (pid_t p : procs_in(tree)) left.push_back(p);
    for (pid_t p : left) ::kill(p, SIGKILL);
    EXPECT_TRUE(left.empty()) << left.size() << " process(es) left behind, e.g. pid " << left.front();
    // Nor its cgroups: the launcher removes the host's tree as it exits.
    if (left.empty() && !tree.empty()) {
      EXPECT_FALSE(std::filesystem::exists(tree)) << tree << " outlived the host";
    }
    if (!HasFailure() && !std::getenv("AZOTE_KEEP_STATE")) std::filesystem::remove_all(dir_);
  }

  // Every pid in a cgroup directory and below (the launcher's tree for this host).
  static std::vector<pid_t> procs_in(const std::string& dir) {
    std::vector<pid_t> out;
    if (dir.empty() || !std::filesystem::is_directory(dir)) return out;
    std::error_code ec;
    for (auto it = std::filesystem::recursive_directory_iterator(dir, ec); it != std::filesystem::recursive_directory_iterator();
         it.increment(ec)) {
      if (ec) break;
      if (it->path().filename() != "cgroup.procs") continue;
      std::istringstream in(slurp(it->path()));
      pid_t p;
      while (in >> p) out.push_back(p);
    }
    return out;
  }

  // CPUs this process may run on (the controller's guests get all of them on a host
  // with fewer than 4 and no --card-cpus).
  static unsigned sandbox_guest_cpus() {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (::sched_getaffinity(0, sizeof set, &set) != 0) return 0;
    const unsigned n = static_cast<unsigned>(CPU_COUNT(&set));
    return n >= 4 ? n - 1 : n;
  }

  // One request on the launcher's test socket (root only; probes and describe).
  launch::Message launcher(const Json& req) {
    UniqueFd s(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, (dir_ + "/launcher-test.sock").c_str(), sizeof a.sun_path - 1);
    launch::Message m;
    if (!s || ::connect(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return m;  // NOLINT
    if (!launch::send_message(s.get(), req)) return m;
    auto r = launch::recv_message(s.get(), 30s);
    if (r) m = std::move(r).value();
    return m;
  }
  // The processes the launcher runs for this host: {pid, role, instance, uid, cgroup}.
  Json jailed() {
    const Json d = launcher({{"op", "describe"}}).body;
    return d.contains("processes") ? d["processes"] : Json::array();
  }
  pid_t jailed_pid(const std::string& role, const std::string& instance = "") {
    for (const auto& p : jailed())
      if (p.value("role", "") == role && p.value("instance", "") == instance) return p.value("pid", 0);
    return 0;
  }

  void start_controller(const std::vector<std::string>& extra = {}) {
    std::string cmd = "exec " + std::string(AZOTE_CONTROLLER_BIN) + " --state-dir " + dir_ +
                      " --on-exit stop --capacity-vcpus 8 --capacity-memory 8G";
    for (const auto& e : extra) cmd += " " + e;
    std::filesystem::create_directories(dir_);
    cmd += " --probe " + std::string(AZOTE_PROBE_BIN) + " --test-socket " + dir_ + "/launcher-test.sock";
    cmd += " 2>>" + dir_ + "/controller.log";
    ctl_ = std::make_unique<Process>(std::vector<std::string>{"/bin/sh", "-c", cmd});
    ASSERT_TRUE(ctl_->wait_for_output("azote-controller: ready", 15s)) << slurp(dir_ + "/controller.log");
    cgroup_tree_ = launcher({{"op", "describe"}}).body.value("tree", "");
  }
  void stop_controller(int sig) {
    if (!ctl_) return;
    ctl_->signal(sig);
    auto o = ctl_->wait(30s);
    EXPECT_FALSE(o.timed_out);
    ctl_.reset();
  }

  std::string issue(const std::string& role, const std::string& name) {
    const std::string out = dir_ + "/creds-" + role + "-" + name;
    auto o = run({AZOTE_CLI_BIN, "admin", "issue-cert", "--state-dir", dir_, "--role", role, "--name", name, "--out", out});
    EXPECT_EQ(o.status, 0) << o.out << o.err;
    return out;
  }

  Outcome cli(const std::string& creds, std::vector<std::string> args, std::chrono::milliseconds timeout = 90s) {
    std::vector<std::string> argv{AZOTE_CLI_BIN, "--endpoint", "unix:" + dir_ + "/api.sock", "--credentials", creds};
    argv.insert(argv.end(), args.begin(), args.end());
    return run(argv, timeout);
  }
  Json cli_json(const std::string& creds, std::vector<std::string> args) {
    args.push_back("--output");
    args.push_back("json");
    auto o = cli(creds, args);
    EXPECT_EQ(o.status, 0) << o.out << o.err;
    Json j = Json::parse(o.out, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << o.out;
    return j;
  }
  Json instance(const std::string& id) {
    Json j = cli_json(cp_, {"describe-instances", "--instance-ids", id});
    if (!j.contains("instances") || j["instances"].empty()) return Json::object();
    return j["instances"][0];
  }
  std::string state(const std::string& id) {
    const Json i = instance(id);
    return i.contains("state") ? i["state"].value("name", "") : "";
  }
  bool wait_state(const std::string& id, const std::string& want, std::chrono::seconds timeout = 60s) {
    const auto end = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < end) {
      if (state(id) == want) return true;
      std::this_thread::sleep_for(100ms);
    }
    return false;
  }
  std::string run_one(const std::string& type = "t3.nano") {
    Json j = cli_json(cp_, {"run-instances", "--image-id", "ami-builtin", "--instance-type", type});
    if (!j.contains("instances") || j["instances"].size() != 1) return "";
    return j["instances"][0]["instance_id"];
  }
  // A release of build/bin signed with a new P-384 key: <rel>/key.pem, key.pub, another
  // key other.pem/other.pub, the manifest good.json (release "test-1").
  void sign_release(const std::string& rel) {
    std::filesystem::remove_all(rel);
    std::filesystem::create_directories(rel);
    for (const char* k : {"key", "other"}) {
      auto o = run({"/usr/bin/openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384", "-out",
                    rel + "/" + k + ".pem"});
      ASSERT_EQ(o.status, 0) << o.err;
      o = run({"/usr/bin/openssl", "pkey", "-in", rel + "/" + k + ".pem", "-pubout", "-out", rel + "/" + k + ".pub"});
      ASSERT_EQ(o.status, 0) << o.err;
    }
    const std::string bin = std::filesystem::path(AZOTE_CONTROLLER_BIN).parent_path();
    auto o = run({AZOTE_CLI_BIN, "admin", "sign-release", "--key", rel + "/key.pem", "--bin-dir", bin, "--release",
                  "test-1", "--out", rel + "/good.json"});
    ASSERT_EQ(o.status, 0) << o.out << o.err;
  }
  // The host restarted under a release of build/bin signed into `rel` (sign_release):
  // its describe-host-attestation in *host, its root certificate in <rel>/root.pem.
  void restart_under_release(const std::string& rel, Json* host, const std::vector<std::string>& extra = {}) {
    if (::access("/usr/bin/openssl", X_OK) != 0 || ::access("/usr/bin/python3", X_OK) != 0)
      GTEST_SKIP() << "SKIPPED: needs /usr/bin/openssl (a release key) and /usr/bin/python3 (the verifier)";
    stop_controller(SIGTERM);
    ASSERT_NO_FATAL_FAILURE(sign_release(rel));
    std::vector<std::string> args{"--release-manifest", rel + "/good.json", "--release-key", rel + "/key.pub"};
    args.insert(args.end(), extra.begin(), extra.end());
    start_controller(args);
    *host = cli_json(cp_, {"describe-host-attestation"});
    ASSERT_EQ((*host)["mode"], "normal") << host->dump();
    std::ofstream(rel + "/root.pem") << (*host)["layers"][0]["certificate_pem"].get<std::string>();
  }
  std::string console(const std::string& id) { return cli(cp_, {"get-console-output", "--instance-id", id}).out; }
  bool console_has(const std::string& id, const std::string& needle, std::chrono::seconds timeout = 30s) {
    const auto end = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < end) {
      if (console(id).find(needle) != std::string::npos) return true;
      std::this_thread::sleep_for(100ms);
    }
    return false;
  }
  std::vector<Json> audit_records() {
    std::vector<Json> out;
    for (const auto& l : lines(slurp(dir_ + "/audit/audit.log")))
      if (!l.empty()) out.push_back(Json::parse(l, nullptr, false));
    return out;
  }
  Outcome audit_verify() { return run({AZOTE_CLI_BIN, "audit", "verify", dir_ + "/audit/audit.log"}); }
  int64_t hv_pid(const std::string& id) {  // proto3 JSON writes 64-bit integers as strings
    const Json i = instance(id);
    if (!i.contains("hypervisor_pid")) return 0;
    const Json& p = i["hypervisor_pid"];
    return p.is_string() ? std::stoll(p.get<std::string>()) : p.get<int64_t>();
  }

  // The network cards (one per instance with an ENI), through their control sockets in
  // the instances' directories; a card that is not running does not answer.
  std::vector<std::string> net_card_sockets() {
    std::vector<std::string> out;
    std::error_code ec;
    for (const auto& d : std::filesystem::directory_iterator(dir_ + "/instances", ec))
      if (std::filesystem::exists(d.path() / "card-net.ctl")) out.push_back(d.path() / "card-net.ctl");
    return out;
  }
  Json card_net(const std::string& instance, const Json& request) {
    return card_call(dir_ + "/instances/" + instance + "/card-net.ctl", request);
  }
  // Every ENI the running cards serve (each serves its instance's).
  Json enis_on_card() {
    Json all = Json::array();
    for (const auto& s : net_card_sockets()) {
      Json r = card_call(s, {{"op", "list-enis"}});
      if (r.value("ok", false))
        for (const auto& e : r["enis"]) all.push_back(e);
    }
    return all;
  }
  Json card_eni(const std::string& eni_id) {
    for (const auto& e : enis_on_card())
      if (e.value("id", "") == eni_id) return e;
    return Json::object();
  }
  // The neighbours (ENI ids) the network card of `instance` knows.
  std::set<std::string> neighbours_of(const std::string& instance) {
    std::set<std::string> out;
    Json r = card_net(instance, {{"op", "list-neighbours"}});
    if (r.value("ok", false))
      for (const auto& n : r["neighbours"]) out.insert(n.value("id", ""));
    return out;
  }
  // The rules of one group ("tcp 22-22 10.0.0.0/16", ...), "ingress" or "egress", as every
  // running network card has them ({"<the cards disagree>"} when they do not agree).
  std::set<std::string> card_rules(const std::string& group, const std::string& dir) {
    std::optional<std::set<std::string>> agreed;
    for (const auto& s : net_card_sockets()) {
      Json r = card_call(s, {{"op", "list-security-groups"}});
      if (!r.value("ok", false)) continue;
      std::set<std::string> out;
      for (const auto& g : r["security_groups"])
        if (g.value("id", "") == group)
          for (const auto& rule : g[dir]) out.insert(rule.get<std::string>());
      if (agreed && *agreed != out) return {"<the cards disagree>"};
      agreed = out;
    }
    return agreed.value_or(std::set<std::string>{});
  }
  template <class Pred>
  bool eventually(Pred pred, std::chrono::seconds timeout = 30s) {
    const auto end = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < end) {
      if (pred()) return true;
      std::this_thread::sleep_for(100ms);
    }
    return pred();
  }
  std::string default_group() {
    const Json all = cli_json(cp_, {"describe-security-groups"});
    for (const auto& g : all["security_groups"])
      if (g["group_name"] == "default") return g["group_id"];
    return "";
  }
  // A call that must fail with EC2's code: exit 254 and "Code: ..." on stderr.
  void expect_code(const std::vector<std::string>& args, const std::string& code) {
    auto o = cli(cp_, args);
    EXPECT_EQ(o.status, 254) << testing::PrintToString(args) << "\n" << o.out << o.err;
    EXPECT_NE(o.err.find("azote: " + code + ": "), std::string::npos) << testing::PrintToString(args) << "\n" << o.err;
  }

  std::string dir_, cp_;
  std::string cgroup_tree_;  // the launcher's cgroup tree for this host (its membership hierarchy)
  std::unique_ptr<Process> ctl_;
};

}  // namespace azote::test
