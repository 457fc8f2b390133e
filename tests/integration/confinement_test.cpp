// Confinement, from the outside (/proc, the cgroup files) and from the inside (a probe
// started in each jail): the invariants of docs/threat-model.md's table, each shown on
// a running host with two instances. Needs root and KVM, as the controller does.
#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <cstdio>
#include <thread>

#include "controller_fixture.hpp"
#include "digest.hpp"

namespace azote::test {
namespace {

std::string status_field(pid_t pid, const std::string& name, const std::string& task = "") {
  const std::string path = "/proc/" + std::to_string(pid) + (task.empty() ? "" : "/task/" + task) + "/status";
  std::smatch m;
  const std::string s = slurp(path);
  if (std::regex_search(s, m, std::regex("\\n" + name + ":\\s*([^\\n]*)"))) return m[1];
  return "";
}

std::vector<std::string> dir_entries(const std::string& path) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(path, ec)) out.push_back(e.path().filename());
  std::sort(out.begin(), out.end());
  return out;
}

std::string ns_of(pid_t pid, const char* kind) {
  std::error_code ec;
  return std::filesystem::read_symlink("/proc/" + std::to_string(pid) + "/ns/" + kind, ec).string();
}

// The inodes of the memfds a process holds descriptors to (a hypervisor: its guest's
// memory and I/O window).
std::set<uint64_t> memfd_inodes_held(pid_t pid) {
  std::set<uint64_t> out;
  const std::string dir = "/proc/" + std::to_string(pid) + "/fd/";
  for (const auto& fd : dir_entries(dir)) {
    std::error_code ec;
    if (std::filesystem::read_symlink(dir + fd, ec).string().rfind("/memfd:", 0) != 0) continue;
    struct stat st{};
    if (::stat((dir + fd).c_str(), &st) == 0) out.insert(st.st_ino);
  }
  return out;
}

// The inodes of the memfds a process maps (/proc/PID/maps: the fifth field).
std::set<uint64_t> memfd_inodes_mapped(pid_t pid) {
  std::set<uint64_t> out;
  std::istringstream in(slurp("/proc/" + std::to_string(pid) + "/maps"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.find("/memfd:") == std::string::npos) continue;
    std::istringstream f(line);
    std::string range, perms, offset, dev;
    uint64_t ino = 0;
    if (f >> range >> perms >> offset >> dev >> ino) out.insert(ino);
  }
  return out;
}

// A sysctl of the network namespace `pid` is in (read from a thread that joins it).
std::string netns_sysctl(pid_t pid, const std::string& name) {
  std::string out;
  std::thread t([&] {
    UniqueFd ns(::open(("/proc/" + std::to_string(pid) + "/ns/net").c_str(), O_RDONLY | O_CLOEXEC));
    if (ns && ::setns(ns.get(), CLONE_NEWNET) == 0) out = slurp("/proc/sys/" + name);
  });
  t.join();
  return out;
}

// The network devices a process sees (its network namespace's).
std::set<std::string> net_devices(pid_t pid) {
  std::set<std::string> out;
  std::istringstream in(slurp("/proc/" + std::to_string(pid) + "/net/dev"));
  std::string line;
  while (std::getline(in, line)) {
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string name = line.substr(0, colon);
    name.erase(0, name.find_first_not_of(' '));
    out.insert(name);
  }
  return out;
}

// The controller: the launcher's child named azote-controller (its other children are
// the jailed processes).
class Confinement : public ControllerTest {
 protected:
  bool write_guard_on() { return slurp(dir_ + "/controller.log").find("write guard on (") != std::string::npos; }
  // errno of opening `path` for writing (0: it opened; nothing is written either way).
  static int write_open_errno(const std::string& path) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
    const int e = fd < 0 ? errno : 0;
    if (fd >= 0) ::close(fd);
    return e;
  }
  // The audit record of `method` whose error contains `needle`, waited for (the
  // controller collects the launcher's guard events every 3 s).
  Json audited(const std::string& method, const std::string& needle, std::chrono::seconds timeout = 20s) {
    Json found;
    eventually([&] {
      for (const auto& r : audit_records())
        if (r.value("method", "") == method && r.dump().find(needle) != std::string::npos) {
          found = r;
          return true;
        }
      return false;
    }, timeout);
    return found;
  }
  // The built-in guest that writes a marker into its private memory and takes a DHCP
  // lease (so that its network card maps its memory too).
  std::string marker_image() {
    auto o = cli(cp_, {"register-image", "--name", "marker", "--kernel", AZOTE_GUEST_ELF, "--cmdline",
                       "azote.run=init --marker", "--output", "json"});
    EXPECT_EQ(o.status, 0) << o.out << o.err;
    return o.status == 0 ? Json::parse(o.out).value("image_id", "") : "";
  }
  std::pair<std::string, std::string> two_instances(const std::string& image = "ami-builtin") {
    auto o = cli(cp_, {"run-instances", "--image-id", image, "--instance-type", "t3.nano", "--count", "2",
                       "--wait", "--output", "json"});
    EXPECT_EQ(o.status, 0) << o.out << o.err;
    const Json j = Json::parse(o.out, nullptr, false);
    if (j.is_discarded() || j["instances"].size() != 2) return {};
    return {j["instances"][0]["instance_id"], j["instances"][1]["instance_id"]};
  }
  // The invariants every jailed process holds.
  void expect_confined(pid_t pid, const std::string& what) {
    SCOPED_TRACE(what + " (pid " + std::to_string(pid) + ")");
    ASSERT_GT(pid, 0);
    const std::string uid = status_field(pid, "Uid");
    EXPECT_EQ(uid.rfind("0\t", 0), std::string::npos) << uid;
    EXPECT_NE(status_field(pid, "Gid").rfind("0\t", 0), 0u);
    for (const char* cap : {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"})
      EXPECT_EQ(status_field(pid, cap), "0000000000000000") << cap;
    EXPECT_EQ(status_field(pid, "NoNewPrivs"), "1");
    // Every thread under a filter.
    const auto tasks = dir_entries("/proc/" + std::to_string(pid) + "/task");
    EXPECT_FALSE(tasks.empty());
    for (const auto& t : tasks) EXPECT_EQ(status_field(pid, "Seccomp", t), "2") << "thread " << t;
    // Namespaces of its own.
    for (const char* ns : {"mnt", "pid", "ipc", "uts", "net", "cgroup"})
      EXPECT_NE(ns_of(pid, ns), ns_of(::getpid(), ns)) << ns;
    // A root holding only the system's code, /dev, /proc and /run.
    for (const auto& e : dir_entries("/proc/" + std::to_string(pid) + "/root")) {
      static const std::set<std::string> kAllowed = {"bin", "dev", "etc", "lib", "lib32", "lib64", "libx32", "proc", "run", "sbin", "usr"};
      EXPECT_TRUE(kAllowed.count(e)) << "/" << e << " in its root";
    }
    EXPECT_EQ(dir_entries("/proc/" + std::to_string(pid) + "/root/dev"),
              (std::vector<std::string>{"null", "random", "urandom", "zero"}));
  }
};

TEST_F(Confinement, EveryProcessRunsUnprivilegedInItsOwnJailAndCgroup) {
  const auto [a, b] = two_instances(marker_image());
  ASSERT_FALSE(a.empty());
  const pid_t hv_a = jailed_pid("hv", a), hv_b = jailed_pid("hv", b);
  const pid_t blk_a = jailed_pid("card-blk", a), blk_b = jailed_pid("card-blk", b);
  const pid_t net_a = jailed_pid("card-net", a), net_b = jailed_pid("card-net", b);
  for (auto [pid, what] : std::vector<std::pair<pid_t, std::string>>{{hv_a, "azote-hv of A"},
                                                                     {hv_b, "azote-hv of B"},
                                                                     {blk_a, "block card of A"},
                                                                     {blk_b, "block card of B"},
                                                                     {net_a, "network card of A"},
                                                                     {net_b, "network card of B"}})
    expect_confined(pid, what);
  // One identity per instance: its hv and its cards.
  EXPECT_EQ(status_field(hv_a, "Uid"), status_field(blk_a, "Uid"));
  EXPECT_EQ(status_field(hv_a, "Uid"), status_field(net_a, "Uid"));
  EXPECT_EQ(status_field(hv_b, "Uid"), status_field(net_b, "Uid"));
  EXPECT_NE(status_field(hv_a, "Uid"), status_field(hv_b, "Uid"));
  // A card of each kind per instance: A's cards are not B's.
  EXPECT_NE(blk_a, blk_b);
  EXPECT_NE(net_a, net_b);
  // A process that maps a guest's memory serves that one guest: every memfd a card of A
  // maps is one A's hypervisor holds, none of B's.
  const auto held_a = memfd_inodes_held(hv_a), held_b = memfd_inodes_held(hv_b);
  ASSERT_FALSE(held_a.empty());
  for (auto [pid, what] : std::vector<std::pair<pid_t, std::string>>{{blk_a, "block card of A"}, {net_a, "network card of A"}}) {
    // A card maps the guest's memory once the guest's driver set its device up.
    std::set<uint64_t> mapped;
    EXPECT_TRUE(eventually([&, pid = pid] { return !(mapped = memfd_inodes_mapped(pid)).empty(); }))
        << what << " maps no guest memory (the test would prove nothing)";
    for (const auto ino : mapped) {
      EXPECT_TRUE(held_a.count(ino)) << what << " maps memfd inode " << ino << ", not A's";
      EXPECT_FALSE(held_b.count(ino)) << what << " maps B's memory (inode " << ino << ")";
    }
  }
  // Jails apart from each other too.
  EXPECT_NE(ns_of(hv_a, "mnt"), ns_of(blk_a, "mnt"));
  EXPECT_NE(ns_of(hv_a, "pid"), ns_of(hv_b, "pid"));
  // azote-hv has no network at all; the block card neither; the network card only its
  // metadata service's TUN.
  EXPECT_EQ(net_devices(hv_a), (std::set<std::string>{"lo"}));
  EXPECT_EQ(net_devices(blk_a), (std::set<std::string>{"lo"}));
  EXPECT_EQ(net_devices(net_a), (std::set<std::string>{"lo", "imds0"}));
  EXPECT_NE(ns_of(net_a, "net"), ns_of(net_b, "net"));
  // The launcher sized the datagram queues of the card's namespace for its inbox sockets.
  EXPECT_EQ(netns_sysctl(net_a, "net/unix/max_dgram_qlen"), "1024\n");
  EXPECT_EQ(netns_sysctl(hv_a, "net/unix/max_dgram_qlen"), "10\n") << "only the network card's namespace";
  // cgroups: a leaf per process with the instance type's limits (t3.nano: 512 MiB, 2
  // vCPUs; azote-hv gets 96 MiB and 16 threads beyond that).
  const std::string cg = slurp("/proc/" + std::to_string(hv_a) + "/cgroup");
  EXPECT_NE(cg.find("/" + a + "/hv\n"), std::string::npos) << cg;
  for (const auto& p : jailed())
    if (p.value("pid", 0) == hv_a) {
      const std::string dir = p.value("cgroup", "");
      EXPECT_NE(dir.find("/" + a + "/hv"), std::string::npos) << dir;
    }
  std::smatch m;
  ASSERT_TRUE(std::regex_search(cg, m, std::regex("\\d+:memory:([^\\n]*)"))) << cg;
  EXPECT_EQ(slurp("/sys/fs/cgroup/memory" + std::string(m[1]) + "/memory.limit_in_bytes"),
            std::to_string((512ull + 96) << 20) + "\n");
  ASSERT_TRUE(std::regex_search(cg, m, std::regex("\\d+:pids:([^\\n]*)"))) << cg;
  EXPECT_EQ(slurp("/sys/fs/cgroup/pids" + std::string(m[1]) + "/pids.max"), "18\n");
  // The controller: unprivileged, filtered, no capabilities, in the host's namespaces
  // (it serves the network) but not the launcher's uid.
  const pid_t launcher = ctl_->pid();
  const pid_t controller = controller_of(launcher);
  ASSERT_GT(controller, 0);
  EXPECT_EQ(status_field(launcher, "Uid").rfind("0\t", 0), 0u) << "the launcher is the one root process";
  EXPECT_EQ(status_field(controller, "Uid").rfind("0\t", 0), std::string::npos);
  for (const char* cap : {"CapPrm", "CapEff", "CapBnd"}) EXPECT_EQ(status_field(controller, cap), "0000000000000000") << cap;
  EXPECT_EQ(status_field(controller, "NoNewPrivs"), "1");
  for (const auto& t : dir_entries("/proc/" + std::to_string(controller) + "/task"))
    EXPECT_EQ(status_field(controller, "Seccomp", t), "2") << "controller thread " << t;
  // The controller maps no guest memory and holds no descriptor to it (memfds).
  EXPECT_EQ(slurp("/proc/" + std::to_string(controller) + "/maps").find("memfd:"), std::string::npos);
  for (const auto& fd : dir_entries("/proc/" + std::to_string(controller) + "/fd")) {
    std::error_code ec;
    const std::string target = std::filesystem::read_symlink("/proc/" + std::to_string(controller) + "/fd/" + fd, ec).string();
    EXPECT_EQ(target.find("memfd:"), std::string::npos) << "fd " << fd << " -> " << target;
  }
}

TEST_F(Confinement, AProbeInEachJailIsRefusedEverythingThenKilledByTheFilter) {
  const auto [a, b] = two_instances();
  ASSERT_FALSE(a.empty());
  const pid_t hv_b = jailed_pid("hv", b);
  // B's guest memory: a memfd descriptor of B's hypervisor.
  std::string memfd;
  for (const auto& fd : dir_entries("/proc/" + std::to_string(hv_b) + "/fd")) {
    std::error_code ec;
    if (std::filesystem::read_symlink("/proc/" + std::to_string(hv_b) + "/fd/" + fd, ec).string().rfind("/memfd:", 0) == 0)
      memfd = "/proc/" + std::to_string(hv_b) + "/fd/" + fd;
  }
  ASSERT_FALSE(memfd.empty()) << "no memfd found in B's hypervisor";
  const Json bi = instance(b);
  ASSERT_FALSE(bi["block_device_mappings"].empty()) << bi.dump();
  const std::string b_volume = bi["block_device_mappings"][0]["volume_id"];
  // B's ENI socket, where A's network card jail has the directory (its hypervisor's
  // socket: only B's uid may connect).
  const std::string eni_b = bi["network_interfaces"][0]["network_interface_id"];
  for (const std::string role : {"hv", "card-blk", "card-net"}) {
    SCOPED_TRACE("probe in the jail of " + role);
    const std::string out = dir_ + "/probe-" + role + ".out";
    launch::SpawnRequest r;
    r.role = launch::Role::kProbe;
    r.probe_as = *launch::parse_role(role);
    r.instance = a;
    r.output = out;
    r.args = {"--as", role,
              "--try-open", dir_ + "/volumes/" + b_volume + ".img",
              "--try-open", memfd,
              "--try-open", dir_ + "/controller.db",
              "--try-open", dir_ + "/audit/audit.log",
              "--try-open", dir_ + "/pki/ca.key",
              "--try-open", "/proc/" + std::to_string(ctl_->pid()) + "/environ",
              "--try-connect", dir_ + "/api.sock",
              "--try-connect", dir_ + "/instances/" + b + "/card-net.ctl",
              "--try-connect", "/run/azote-net/" + eni_b + "/eni.sock"};
    launch::Message m = launcher(launch::to_json(r));
    ASSERT_TRUE(m.body.value("ok", false)) << m.body.dump();
    ASSERT_EQ(m.fds.size(), 1u);
    pollfd p{m.fds[0].get(), POLLIN, 0};
    ASSERT_EQ(::poll(&p, 1, 30'000), 1) << "the probe did not end";
    const std::string text = slurp(out);
    EXPECT_NE(text.find("probe: 17 attempts, 17 refused, 0 allowed"), std::string::npos) << text;
    EXPECT_EQ(text.find("ALLOWED"), std::string::npos) << text;
    EXPECT_NE(text.find("seccomp: thread probe (tid "), std::string::npos) << text;
    EXPECT_NE(text.find("made forbidden system call 59 (execve)"), std::string::npos) << text;
    EXPECT_EQ(text.find("the filter did not stop it"), std::string::npos) << text;
  }
}

// A hypervisor killed by its seccomp filter: the instance's state reason names the thread
// and the call, and the audit log has a "process.seccomp" record. (The stand-in azote-hv
// is the probe, which makes a forbidden call under azote-hv's own policy at once.)
TEST_F(Confinement, ASeccompDeathIsInTheStateReasonAndTheAuditLog) {
  stop_controller(SIGTERM);
  start_controller({"--hv", AZOTE_PROBE_BIN});
  auto o = cli(cp_, {"run-instances", "--image-id", "ami-builtin", "--instance-type", "t3.nano", "--output", "json"});
  ASSERT_EQ(o.status, 0) << o.out << o.err;
  const std::string id = Json::parse(o.out)["instances"][0]["instance_id"];
  ASSERT_TRUE(wait_state(id, "terminated", 60s)) << instance(id).dump();
  const std::string reason = instance(id)["state_reason"].value("message", "");
  EXPECT_NE(reason.find("killed by its seccomp filter"), std::string::npos) << reason;
  EXPECT_NE(reason.find("made forbidden system call 59 (execve)"), std::string::npos) << reason;
  bool audited = false;
  for (const auto& r : audit_records())
    if (r.value("method", "") == "process.seccomp" && r.value("error", "").find("(execve)") != std::string::npos &&
        r.dump().find(id) != std::string::npos)
      audited = true;
  EXPECT_TRUE(audited) << "no process.seccomp record for " << id;
  EXPECT_EQ(audit_verify().status, 0);
}

// kill -9 of the unprivileged controller while launches are under way: its launcher
// starts it again, the new controller adopts what runs and finishes what was pending;
// nothing acknowledged is lost (both instances run, the audit log verifies), and no jailed
// process is outside its cgroup leaf (the tree holds exactly the processes the launcher
// describes, each in the leaf of its role).
TEST_F(Confinement, KilledControllerIsRestartedByItsLauncherAndLosesNothing) {
  const pid_t launcher_pid = ctl_->pid();
  const pid_t controller = controller_of(launcher_pid);
  ASSERT_GT(controller, 0);
  std::vector<std::string> ids;
  for (int i = 0; i < 2; ++i) {
    Json r = cli_json(cp_, {"run-instances", "--image-id", "ami-builtin", "--instance-type", "t3.nano"});
    ids.push_back(r["instances"][0]["instance_id"]);
  }
  ASSERT_EQ(::kill(controller, SIGKILL), 0);
  pid_t again = 0;
  ASSERT_TRUE(eventually([&] {
    again = controller_of(launcher_pid);
    return again != 0 && again != controller && std::filesystem::exists(dir_ + "/api.sock") &&
           cli(cp_, {"describe-instances"}).status == 0;
  })) << "the launcher did not start the controller again";
  for (const auto& id : ids) {
    EXPECT_TRUE(wait_state(id, "running", 60s)) << id << " " << state(id);
    EXPECT_TRUE(console_has(id, "azote-guest: ready")) << console(id);
  }
  EXPECT_EQ(audit_verify().status, 0);
  // Every process in this host's cgroup tree is one the launcher knows, in its own leaf.
  std::set<pid_t> described;
  for (const auto& p : jailed()) {
    const pid_t pid = p.value("pid", 0);
    described.insert(pid);
    const std::string leaf = p.value("cgroup", "");
    const std::string procs = slurp(leaf + "/cgroup.procs");
    EXPECT_NE(procs.find(std::to_string(pid) + "\n"), std::string::npos) << p.dump() << " not in " << leaf;
  }
  for (const auto& id : ids) {
    EXPECT_TRUE(described.count(jailed_pid("hv", id)));
    EXPECT_TRUE(described.count(jailed_pid("card-blk", id)));
  }
  const Json rot = launcher({{"op", "describe"}}).body.value("rot", Json());
  ASSERT_TRUE(rot.is_object()) << "the launcher does not know its azote-rot";
  described.insert(rot.value("pid", 0));
  for (pid_t p : procs_in(cgroup_tree_)) {
    if (p == again) continue;  // the controller's own leaf
    EXPECT_TRUE(described.count(p)) << "pid " << p << " (" << slurp("/proc/" + std::to_string(p) + "/comm") << ", " << slurp("/proc/" + std::to_string(p) + "/cgroup") << ") is in the tree but the launcher does not know it";
  }
}


// The guest writes 64 random bytes into its private memory (init --marker) and does I/O
// through both cards. The bytes are in azote-hv (it maps all of guest RAM for KVM: the
// scan's positive control) and in no other process: the block card and the network
// card map only the I/O window, the controller maps no guest memory at all.
TEST_F(Confinement, AGuestsPrivateBytesAreInNoCardNorTheController) {
  const std::string image = marker_image();
  ASSERT_FALSE(image.empty());
  auto o = cli(cp_, {"run-instances", "--image-id", image, "--instance-type", "t3.nano", "--wait", "--output", "json"});
  ASSERT_EQ(o.status, 0) << o.out << o.err;
  const std::string id = Json::parse(o.out)["instances"][0]["instance_id"];
  ASSERT_TRUE(console_has(id, "azote-guest: ready", 60s)) << console(id);
  const std::string text = console(id);
  // The I/O the guest did through both cards verified: the boot record written, read
  // back and compared; a DHCP lease from the network card.
  EXPECT_NE(text.find("root volume boot-count=1 "), std::string::npos) << text;
  EXPECT_NE(text.find("azote-guest: init ip=10.0.1."), std::string::npos) << text;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(text, m, std::regex("azote-guest: marker ([0-9a-f]{128})"))) << text;
  std::string marker;
  for (size_t i = 0; i < 128; i += 2) marker += static_cast<char>(std::stoi(std::string(m[1]).substr(i, 2), nullptr, 16));
  const pid_t hv = jailed_pid("hv", id), blk = jailed_pid("card-blk", id), net = jailed_pid("card-net", id);
  const pid_t controller = controller_of(ctl_->pid());
  ASSERT_GT(hv, 0);
  ASSERT_GT(blk, 0);
  ASSERT_GT(net, 0);
  ASSERT_GT(controller, 0);
  uint64_t scanned = 0;
  EXPECT_TRUE(memory_holds(hv, marker, &scanned)) << "the scan cannot find the marker even in azote-hv (" << scanned
                                                  << " bytes read)";
  for (auto [pid, what] : std::vector<std::pair<pid_t, std::string>>{
           {blk, "the block card"}, {net, "the network card"}, {controller, "the controller"}, {ctl_->pid(), "the launcher"}}) {
    EXPECT_FALSE(memory_holds(pid, marker, &scanned)) << what << " holds the guest's private bytes";
    EXPECT_GT(scanned, 0u) << what << ": nothing could be read";
  }
}

// Verified launch: under a signed release manifest every binary the launcher runs is
// hashed through the descriptor it then executes. The release's own binaries run; a
// release whose azote-hv differs by one byte from what is installed makes every launch
// fail with the launcher's reason (and the controller and launcher, which match, still
// serve); a manifest signed with another key stops the host at start.
// azote-rot, started by the launcher at host start: its own uid (base + 2), jail,
// seccomp allowlist and state directory, the device secret readable by it alone, its DICE layers the binaries that
// run (itself, the launcher, the controller) in development mode here, a chain openssl
// verifies from the device certificate; the operator may read it; killed, it is
// restarted with the same identities (same secret, same binaries).
TEST_F(Confinement, RootOfTrustRunsAsItsOwnUidAndDescribesTheHostsLayers) {
  const std::string ops = issue("operator", "ops");
  const Json d = cli_json(ops, {"describe-host-attestation"});
  ASSERT_EQ(d["layers"].size(), 4u) << d.dump();
  const std::vector<std::string> names{"device", "azote-rot", "azote-launcher", "azote-controller"};
  for (size_t i = 0; i < names.size(); ++i) {
    EXPECT_EQ(d["layers"][i]["name"], names[i]);
    EXPECT_EQ(d["layers"][i]["mode"], i == 0 ? "device" : "development") << i;
  }
  EXPECT_EQ(d["mode"], "development");
  EXPECT_EQ(d["release"], "");
  EXPECT_EQ(cli(ops, {"describe-host-attestation"}).out.find("PRIVATE"), std::string::npos);
  if (write_guard_on()) {
    EXPECT_EQ(d["write_guard"]["active"], true) << d.dump();
    bool rot_guarded = false;
    for (const auto& p : d["write_guard"]["protected_paths"]) rot_guarded = rot_guarded || p == dir_ + "/rot";
    EXPECT_TRUE(rot_guarded) << d["write_guard"].dump();
  }

  const auto rot = procs_in(cgroup_tree_ + "/rot");
  ASSERT_EQ(rot.size(), 1u);
  EXPECT_EQ(status_field(rot[0], "Uid").substr(0, 10), "2000000002") << status_field(rot[0], "Uid");
  expect_confined(rot[0], "azote-rot");  // its own jail and seccomp allowlist, like the instances' processes
  struct stat st{};
  ASSERT_EQ(::stat((dir_ + "/rot").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 2000000002u);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  ASSERT_EQ(::stat((dir_ + "/rot/uds").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 2000000002u);
  EXPECT_EQ(st.st_mode & 0777, 0400u);
  ASSERT_EQ(::stat((dir_ + "/rot.sock").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 2000000000u) << "only the controller may call it";
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  if (::access("/usr/bin/openssl", X_OK) == 0) {
    std::ofstream(dir_ + "/root.pem") << d["layers"][0]["certificate_pem"].get<std::string>();
    std::ofstream(dir_ + "/inter.pem") << d["layers"][1]["certificate_pem"].get<std::string>()
                                       << d["layers"][2]["certificate_pem"].get<std::string>();
    std::ofstream(dir_ + "/leaf.pem") << d["layers"][3]["certificate_pem"].get<std::string>();
    auto v = run({"/usr/bin/openssl", "verify", "-x509_strict", "-CAfile", dir_ + "/root.pem", "-untrusted",
                  dir_ + "/inter.pem", dir_ + "/leaf.pem"});
    EXPECT_EQ(v.status, 0) << v.out << v.err;
  }

  ASSERT_EQ(::kill(rot[0], SIGKILL), 0);
  EXPECT_TRUE(eventually([&] {
    const auto now = procs_in(cgroup_tree_ + "/rot");
    return now.size() == 1 && now[0] != rot[0] && cli(ops, {"describe-host-attestation"}).status == 0;
  }, 20s)) << slurp(dir_ + "/controller.log");
  const Json again = cli_json(ops, {"describe-host-attestation"});
  ASSERT_EQ(again["layers"].size(), 4u);
  for (size_t i = 0; i < 4; ++i)
    EXPECT_EQ(again["layers"][i]["public_key_sha256"], d["layers"][i]["public_key_sha256"]) << i;
}

// Measured instance launch: a host under a signed release attests each running instance
// with a document the independent verifier (cbor2 + cryptography) accepts against the
// host's device certificate, carrying the nonce, PCR 4 = the instance id, and PCRs 0/1
// recomputed here from the image's bytes; one byte more in the kernel or one byte of the
// command line changes PCR 0 and 1. A stopped instance is not attested.
// The write guard (BPF LSM) while the host runs: azote-rot's state refuses root itself
// (write, unlink, create, rename), each refusal an audit record naming the pid and the
// executable, counted in the metrics; azote-rot's own uid still works there (it restarts
// and reads its secret). Without the BPF LSM: SKIPPED, with the launcher's reason.
TEST_F(Confinement, WriteGuardRefusesRootOnTheRootOfTrustsStateAndAuditsIt) {
  if (!write_guard_on()) {
    const std::string log = slurp(dir_ + "/controller.log");
    const size_t at = log.find("no write guard:");
    GTEST_SKIP() << "SKIPPED: " << (at == std::string::npos ? "the launcher did not start the write guard"
                                                          : log.substr(at, log.find('\n', at) - at));
  }
  const std::string uds = dir_ + "/rot/uds";
  EXPECT_EQ(write_open_errno(uds), EPERM);
  EXPECT_EQ(::open(uds.c_str(), O_RDONLY | O_TRUNC | O_CLOEXEC) >= 0 ? 0 : errno, EPERM);
  EXPECT_EQ(::open(uds.c_str(), O_RDWR | O_APPEND | O_CLOEXEC) >= 0 ? 0 : errno, EPERM);
  int expected_denials = 3;
  // What does not open the file is trapped by the BPF LSM only (fanotify sees opens).
  const bool bpf = slurp(dir_ + "/controller.log").find("write guard on (bpf-lsm)") != std::string::npos;
  if (bpf) {
    EXPECT_EQ(::unlink(uds.c_str()) == 0 ? 0 : errno, EPERM);
    EXPECT_EQ(::open((dir_ + "/rot/planted").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600) >= 0 ? 0 : errno, EPERM);
    EXPECT_EQ(::rename((dir_ + "/rot").c_str(), (dir_ + "/rot.old").c_str()) == 0 ? 0 : errno, EPERM);
    expected_denials += 3;
  }
  struct stat st{};
  EXPECT_EQ(::stat(uds.c_str(), &st), 0) << "the device secret is gone";
  const std::string me = std::to_string(::getpid());
  if (!bpf) {
    // What fanotify cannot refuse is still seen and audited (who did it is not known).
    ASSERT_EQ(::chmod(uds.c_str(), 0400), 0);  // the same mode: a metadata change all the same
    const Json seen = audited("host.protected-changed", "metadata changed");
    EXPECT_FALSE(seen.is_null()) << "no host.protected-changed record for the chmod";
  }
  const Json r = audited("host.write-denied", "by pid " + me);
  ASSERT_FALSE(r.is_null()) << "no host.write-denied record for pid " << me;
  EXPECT_EQ(r["outcome"], "denied");
  EXPECT_NE(r.dump().find("confinement_test"), std::string::npos) << r.dump();
  EXPECT_NE(r.dump().find(dir_ + "/rot"), std::string::npos) << r.dump();
  EXPECT_TRUE(eventually([&] {
    return cli(cp_, {"get-metrics"}).out.find("azote_write_guard_denials_total " + std::to_string(expected_denials)) !=
           std::string::npos;
  }, 20s)) << cli(cp_, {"get-metrics"}).out;
  // azote-rot itself is not locked out: killed, it comes back and reads its secret.
  const auto rot = procs_in(cgroup_tree_ + "/rot");
  ASSERT_EQ(rot.size(), 1u);
  const Json before = cli_json(cp_, {"describe-host-attestation"});
  ASSERT_EQ(::kill(rot[0], SIGKILL), 0);
  EXPECT_TRUE(eventually([&] {
    const auto now = procs_in(cgroup_tree_ + "/rot");
    return now.size() == 1 && now[0] != rot[0] && cli(cp_, {"describe-host-attestation"}).status == 0;
  }, 20s));
  EXPECT_EQ(cli_json(cp_, {"describe-host-attestation"})["layers"][0]["public_key_sha256"],
            before["layers"][0]["public_key_sha256"]);
  EXPECT_EQ(audit_verify().status, 0);
}

TEST_F(Confinement, InstanceAttestationCarriesWhatWasLoadedAndPassesAnIndependentVerifier) {
  const std::string rel = dir_ + "-release";
  Json host;
  ASSERT_NO_FATAL_FAILURE(restart_under_release(rel, &host));
  if (IsSkipped()) return;
  if (write_guard_on()) {
    // Under a release the guard covers its binaries, the manifest and the key too.
    const std::string bin = std::filesystem::path(AZOTE_CONTROLLER_BIN).parent_path();
    // (Not the controller or azote-rot: they run from their files, which the kernel keeps
    // from writers anyway, ETXTBSY; azote-hv and the cards run from sealed copies.)
    for (const std::string& f : {bin + "/azote-hv", bin + "/azote-card-blk", rel + "/good.json", rel + "/key.pub"})
      EXPECT_EQ(write_open_errno(f), EPERM) << f;
    EXPECT_FALSE(audited("host.write-denied", bin + "/azote-hv").is_null());
  }

  const std::string zero(48, '\0');
  const std::string kernel = slurp(AZOTE_GUEST_ELF);
  // 8: the release key (its DER), 9: the azote-hv binary, each extended once from zero.
  auto der = run({"/usr/bin/openssl", "pkey", "-pubin", "-in", rel + "/key.pub", "-outform", "DER", "-out", rel + "/key.der"});
  ASSERT_EQ(der.status, 0) << der.err;
  const std::string pcr8 = hex(sha384(zero + sha384(slurp(rel + "/key.der"))));
  const std::string pcr9 =
      hex(sha384(zero + sha384(slurp(std::filesystem::path(AZOTE_CONTROLLER_BIN).parent_path() / "azote-hv"))));
  std::ofstream(rel + "/kernel+1", std::ios::binary) << kernel << '\0';
  struct Case {
    std::string kernel_file, cmdline, image, instance;
    Json pcrs;
  };
  std::vector<Case> cases{{AZOTE_GUEST_ELF, "a azote.run=init", "", "", {}},
                          {AZOTE_GUEST_ELF, "b azote.run=init", "", "", {}},
                          {rel + "/kernel+1", "a azote.run=init", "", "", {}}};
  for (auto& c : cases) {
    auto o = cli(cp_, {"register-image", "--name", "m-" + c.cmdline.substr(0, 1) + std::to_string(c.kernel_file.size()),
                       "--kernel", c.kernel_file, "--cmdline", c.cmdline, "--output", "json"});
    ASSERT_EQ(o.status, 0) << o.out << o.err;
    c.image = Json::parse(o.out).value("image_id", "");
    o = cli(cp_, {"run-instances", "--image-id", c.image, "--instance-type", "t3.nano", "--wait", "--output", "json"});
    ASSERT_EQ(o.status, 0) << o.out << o.err;
    c.instance = Json::parse(o.out)["instances"][0]["instance_id"];
    ASSERT_TRUE(wait_state(c.instance, "running", 60s)) << instance(c.instance).dump();
    const Json a = cli_json(cp_, {"get-instance-attestation", "--instance-id", c.instance, "--nonce", "a1b2c3"});
    ASSERT_EQ(a["mode"], "normal") << a.dump();
    c.pcrs = a["pcrs"];
    // The document as the CLI prints it (base64), through the verifier.
    o = cli(cp_, {"get-instance-attestation", "--instance-id", c.instance, "--nonce", "a1b2c3"});
    ASSERT_EQ(o.status, 0) << o.err;
    std::ofstream(rel + "/doc.b64") << o.out;
    const std::string pcr4 = hex(sha384(zero + c.instance));
    o = run({"/usr/bin/python3", AZOTE_SOURCE_DIR "/tests/tools/verify_attestation.py", "--root", rel + "/root.pem",
             rel + "/doc.b64", "--nonce", "a1b2c3", "--max-age", "120", "--expect-pcr", "4=" + pcr4},
            30s);
    ASSERT_EQ(o.status, 0) << o.out << o.err;
    const Json v = Json::parse(o.out);
    EXPECT_EQ(v["module_id"], c.instance);
    EXPECT_EQ(v["debug"], false);
    EXPECT_EQ(v["chain_length"], 4);
    const std::string k = c.kernel_file == AZOTE_GUEST_ELF ? kernel : kernel + std::string(1, '\0');
    EXPECT_EQ(v["pcrs"]["0"], hex(sha384(zero + sha384(k + c.cmdline)))) << c.cmdline;
    EXPECT_EQ(v["pcrs"]["1"], hex(sha384(zero + sha384(k + c.cmdline))));
    EXPECT_EQ(v["pcrs"]["2"], hex(sha384(zero + sha384(""))));
    EXPECT_EQ(v["pcrs"]["3"], hex(zero));
    EXPECT_EQ(v["pcrs"]["8"], pcr8);
    EXPECT_EQ(v["pcrs"]["9"], pcr9);
    EXPECT_EQ(v["pcrs"].size(), 16u);
    EXPECT_EQ(v["pcrs"]["0"], c.pcrs["0"]) << "the CLI's PCRs are not the document's";
  }
  // The host's description names the release, its key and what each instance runs.
  const Json after = cli_json(cp_, {"describe-host-attestation"});
  EXPECT_EQ(after["release"], "test-1");
  EXPECT_EQ(after["release_key_sha384"], hex(sha384(slurp(rel + "/key.der"))));
  int hvs = 0;
  for (const auto& comp : after["components"])
    if (comp["name"] == "azote-hv") {
      ++hvs;
      EXPECT_EQ(comp["sha384"], hex(sha384(slurp(std::filesystem::path(AZOTE_CONTROLLER_BIN).parent_path() / "azote-hv"))));
    }
  EXPECT_EQ(hvs, 3) << after["components"].dump();
  for (const Case* other : {&cases[1], &cases[2]}) {
    EXPECT_NE(other->pcrs["0"], cases[0].pcrs["0"]) << other->cmdline;
    EXPECT_NE(other->pcrs["1"], cases[0].pcrs["1"]) << other->cmdline;
    EXPECT_EQ(other->pcrs["2"], cases[0].pcrs["2"]);
    EXPECT_NE(other->pcrs["4"], cases[0].pcrs["4"]);
  }
  ASSERT_EQ(cli(cp_, {"stop-instances", "--instance-ids", cases[0].instance, "--wait"}).status, 0);
  const Outcome stopped = cli(cp_, {"get-instance-attestation", "--instance-id", cases[0].instance});
  EXPECT_NE(stopped.status, 0);
  EXPECT_NE(stopped.err.find("IncorrectInstanceState"), std::string::npos) << stopped.err;
  stop_controller(SIGTERM);
  start_controller();  // for TearDown
  std::filesystem::remove_all(rel);
}

TEST_F(Confinement, VerifiedLaunchRunsOnlyTheSignedReleasesBinaries) {
  if (::access("/usr/bin/openssl", X_OK) != 0) GTEST_SKIP() << "SKIPPED: no /usr/bin/openssl to make a release key";
  stop_controller(SIGTERM);
  const std::string bin = std::filesystem::path(AZOTE_CONTROLLER_BIN).parent_path();
  const std::string rel = dir_ + "-release";
  ASSERT_NO_FATAL_FAILURE(sign_release(rel));
  std::filesystem::create_directories(rel + "/other-bin");
  Outcome o;
  o = run({AZOTE_CLI_BIN, "admin", "verify-release", "--manifest", rel + "/good.json", "--public-key", rel + "/key.pub",
           "--bin-dir", bin});
  ASSERT_EQ(o.status, 0) << o.out << o.err;

  // The hypervisor from a copy of the release's file, which is then changed under the
  // running host: what runs is the copy the launcher sealed and checked at start.
  for (const auto& name : {"azote-launcher", "azote-controller", "azote-hv", "azote-card-blk", "azote-card-net",
                            "azote-card-tpm", "azote-card-nsm", "azote-card-vsock", "azote-rot"})
    std::filesystem::copy_file(bin + "/" + name, rel + "/other-bin/" + name);
  // The write guard off: this part changes a binary of the release under the running
  // host, which the guard would refuse; the launcher's re-hash notices it (every second).
  start_controller({"--release-manifest", rel + "/good.json", "--release-key", rel + "/key.pub", "--hv",
                    rel + "/other-bin/azote-hv", "--write-guard", "off", "--guard-rehash-seconds", "1"});
  EXPECT_NE(slurp(dir_ + "/controller.log").find("verified launch: release test-1"), std::string::npos)
      << slurp(dir_ + "/controller.log");
  // The root of trust runs under the release too: its layers are in normal mode.
  const Json rot = cli_json(cp_, {"describe-host-attestation"});
  EXPECT_EQ(rot["mode"], "normal") << rot.dump();
  EXPECT_EQ(rot["layers"].size(), 4u);
  std::ofstream(rel + "/other-bin/azote-hv", std::ios::app) << '\0';
  o = cli(cp_, {"run-instances", "--image-id", "ami-builtin", "--instance-type", "t3.nano", "--wait", "--output", "json"});
  ASSERT_EQ(o.status, 0) << o.out << o.err;
  const std::string good = Json::parse(o.out)["instances"][0]["instance_id"];
  EXPECT_TRUE(wait_state(good, "running", 30s)) << instance(good).dump();
  const pid_t hv = jailed_pid("hv", good);
  ASSERT_GT(hv, 0);
  std::error_code ec;
  const std::string exe = std::filesystem::read_symlink("/proc/" + std::to_string(hv) + "/exe", ec).string();
  EXPECT_NE(exe.find("memfd:azote-hv"), std::string::npos) << exe;
  const Json mismatch = audited("host.rehash-mismatch", rel + "/other-bin/azote-hv");
  EXPECT_FALSE(mismatch.is_null()) << "the changed binary was not reported";
  EXPECT_TRUE(eventually([&] {
    return cli(cp_, {"get-metrics"}).out.find("azote_write_guard_rehash_mismatches_total 0") == std::string::npos;
  }, 10s));
  stop_controller(SIGTERM);

  // A release whose azote-hv is that changed file: one byte longer than the installed one.
  o = run({AZOTE_CLI_BIN, "admin", "sign-release", "--key", rel + "/key.pem", "--bin-dir", rel + "/other-bin",
           "--release", "test-2", "--out", rel + "/other-hv.json"});
  ASSERT_EQ(o.status, 0) << o.out << o.err;
  o = run({AZOTE_CLI_BIN, "admin", "verify-release", "--manifest", rel + "/other-hv.json", "--public-key",
           rel + "/key.pub", "--bin-dir", bin});
  EXPECT_EQ(o.status, 1) << o.out << o.err;
  EXPECT_NE(o.out.find("mismatch: azote-hv"), std::string::npos) << o.out;
  start_controller({"--release-manifest", rel + "/other-hv.json", "--release-key", rel + "/key.pub"});
  o = cli(cp_, {"run-instances", "--image-id", "ami-builtin", "--instance-type", "t3.nano", "--output", "json"});
  ASSERT_EQ(o.status, 0) << o.out << o.err;
  const std::string bad = Json::parse(o.out)["instances"][0]["instance_id"];
  ASSERT_TRUE(wait_state(bad, "terminated", 60s)) << instance(bad).dump();
  const std::string reason = instance(bad)["state_reason"].value("message", "");
  EXPECT_NE(reason.find("verified launch refused"), std::string::npos) << reason;
  EXPECT_NE(reason.find("azote-hv"), std::string::npos) << reason;
  EXPECT_NE(reason.find("test-2"), std::string::npos) << reason;
  bool audited = false;
  for (const auto& r : audit_records())
    if (r.dump().find("verified launch refused") != std::string::npos && r.dump().find(bad) != std::string::npos) audited = true;
  EXPECT_TRUE(audited) << "no audit record names the refused binary for " << bad;
  EXPECT_EQ(jailed_pid("hv", bad), 0) << "a hypervisor outside the release runs";
  stop_controller(SIGTERM);

  // Signed with another key: the host does not start.
  o = run({AZOTE_CONTROLLER_BIN, "--state-dir", dir_, "--on-exit", "stop", "--release-manifest", rel + "/good.json",
           "--release-key", rel + "/other.pub"},
          30s);
  EXPECT_EQ(o.status, 71) << o.out << o.err;
  EXPECT_NE(o.err.find("the signature does not verify"), std::string::npos) << o.err;
  EXPECT_EQ(o.out.find("ready"), std::string::npos) << o.out;
  start_controller();  // for TearDown
  std::filesystem::remove_all(rel);
}

}  // namespace
}  // namespace azote::test
