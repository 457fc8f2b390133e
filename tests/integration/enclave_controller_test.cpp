// Enclaves through a whole host, the nitro-cli surface on the controller's API: a parent
// launched with --enclave-options Enabled=true; azote enclave run-enclave from an EIF of
// the built-in guest; its own azote-hv and azote-card-nsm in a jail and uid apart from
// the parent's, no other card; describe-enclaves (nitro-cli's JSON, the image's PCRs);
// the console of a debug-mode enclave only, whose attestation document (asked by the
// guest through its NSM, signed by azote-rot) the independent verifier refuses unless
// told to accept debug documents; nitro-cli's refusals; terminate, and enclaves ending
// with their parent; roles and audit as for every call.
#include <openssl/evp.h>

#include "controller_fixture.hpp"

namespace azote::test {
namespace {

// The CPU time a process's cgroup allows per 100 ms period, in µs ("max" or "" if none
// can be read): cgroup v1's cpu.cfs_quota_us, or v2's cpu.max.
std::string cpu_quota_of(pid_t pid) {
  const std::string cg = slurp("/proc/" + std::to_string(pid) + "/cgroup");
  std::smatch m;
  if (std::regex_search(cg, m, std::regex("\\d+:([^:\\n]*\\bcpu\\b[^:\\n]*):([^\\n]*)"))) {
    std::string q = slurp("/sys/fs/cgroup/" + std::string(m[1]) + std::string(m[2]) + "/cpu.cfs_quota_us");
    while (!q.empty() && q.back() == '\n') q.pop_back();
    return q == "-1" ? "max" : q;
  }
  if (std::regex_search(cg, m, std::regex("0::([^\\n]*)"))) {
    std::string q = slurp("/sys/fs/cgroup" + std::string(m[1]) + "/cpu.max");
    return q.substr(0, q.find(' '));
  }
  return "";
}

// The memory limit of the cgroup that holds `pid`, in bytes ("max" when none).
std::string memory_limit_of(pid_t pid) {
  const std::string cg = slurp("/proc/" + std::to_string(pid) + "/cgroup");
  std::smatch m;
  if (std::regex_search(cg, m, std::regex("\\d+:([^:\\n]*\\bmemory\\b[^:\\n]*):([^\\n]*)"))) {
    std::string v = slurp("/sys/fs/cgroup/" + std::string(m[1]) + std::string(m[2]) + "/memory.limit_in_bytes");
    while (!v.empty() && v.back() == '\n') v.pop_back();
    return v;
  }
  if (std::regex_search(cg, m, std::regex("0::([^\\n]*)"))) {
    std::string v = slurp("/sys/fs/cgroup" + std::string(m[1]) + "/memory.max");
    while (!v.empty() && v.back() == '\n') v.pop_back();
    return v;
  }
  return "";
}

class EnclaveHost : public ControllerTest {
 protected:
  // A parent instance; `enclaves` is its --enclave-options ("": none).
  std::string parent(const std::string& enclaves = "Enabled=true", const std::string& type = "t3.micro") {
    std::vector<std::string> args{"run-instances", "--image-id", "ami-builtin", "--instance-type", type,
                                  "--no-network-interface", "--output", "json"};
    if (!enclaves.empty()) args.insert(args.end(), {"--enclave-options", enclaves});
    auto o = cli(cp_, args);
    EXPECT_EQ(o.status, 0) << o.out << o.err;
    if (o.status != 0) return "";
    const std::string id = Json::parse(o.out)["instances"][0].value("instance_id", "");
    EXPECT_TRUE(wait_state(id, "running", 60s)) << instance(id).dump();
    return id;
  }
  Json build(const std::string& program, const std::string& name) {
    std::ofstream(dir_ + "/boot.cpio") << "bootstrap";
    std::ofstream(dir_ + "/app.cpio") << "application";
    auto o = run({AZOTE_CLI_BIN, "enclave", "build-enclave", "--kernel", AZOTE_GUEST_ELF, "--initrd", dir_ + "/boot.cpio",
                  "--initrd", dir_ + "/app.cpio", "--cmdline", "azote.run=" + program, "--output-file", dir_ + "/" + name});
    EXPECT_EQ(o.status, 0) << o.err;
    return Json::parse(o.out, nullptr, false)["Measurements"];
  }
  Outcome run_enclave(const std::string& parent_id, const std::string& eif, std::vector<std::string> extra = {}) {
    std::vector<std::string> args{"enclave", "run-enclave", "--instance-id", parent_id, "--eif-path", dir_ + "/" + eif,
                                  "--cpu-count", "1", "--memory", "128"};
    args.insert(args.end(), extra.begin(), extra.end());
    return cli(cp_, args);
  }
  Json describe(const std::string& parent_id = "") {
    std::vector<std::string> args{"enclave", "describe-enclaves"};
    if (!parent_id.empty()) args.insert(args.end(), {"--instance-id", parent_id});
    auto o = cli(cp_, args);
    EXPECT_EQ(o.status, 0) << o.err;
    return Json::parse(o.out, nullptr, false);
  }
  std::string root_pem() {
    const Json h = cli_json(cp_, {"describe-host-attestation"});
    std::ofstream(dir_ + "/root.pem") << h["layers"][0].value("certificate_pem", "");
    return dir_ + "/root.pem";
  }
};

TEST_F(EnclaveHost, ADebugEnclaveRunsApartFromItsParentAndAttestsThroughItsNsm) {
  const std::string p = parent();
  ASSERT_FALSE(p.empty());
  // The default pool (t3.micro: 2 vCPUs, 1024 MiB): half its vCPUs, min(512, half its
  // memory), set aside when it started: its guest runs on the rest, its hv's cgroup
  // sized to match.
  const Json eo = instance(p)["enclave_options"];
  EXPECT_EQ(eo.value("enabled", false), true) << eo.dump();
  EXPECT_EQ(eo.value("cpu_count", 0), 1) << eo.dump();
  EXPECT_EQ(eo.value("memory_mib", "0"), "512") << eo.dump();
  EXPECT_TRUE(console_has(p, "azote-guest: init vcpus=1 memory=512MiB")) << console(p);
  const pid_t parent_hv = jailed_pid("hv", p);
  EXPECT_EQ(cpu_quota_of(parent_hv), "100000") << "the parent's hv has one CPU's time";
  const std::string parent_mem = memory_limit_of(parent_hv);
  ASSERT_NE(parent_mem, "max");
  ASSERT_FALSE(parent_mem.empty());
  EXPECT_LT(std::stoull(parent_mem), 1024ull << 20) << "the parent's hv is not allowed its type's whole memory";
  EXPECT_GE(std::stoull(parent_mem), 512ull << 20);
  const Json m = build("nsm-attest --park 5eed cafe", "attest.eif");  // attests, then stays up
  Outcome o = run_enclave(p, "attest.eif", {"--debug-mode", "--enclave-cid", "16"});
  ASSERT_EQ(o.status, 0) << o.out << o.err << slurp(dir_ + "/controller.log");
  const Json started = Json::parse(o.out);
  const std::string id = started["EnclaveID"];
  EXPECT_EQ(id.rfind(p + "-enc", 0), 0u) << id;
  EXPECT_EQ(started["EnclaveCID"], 16);
  EXPECT_EQ(started["NumberOfCPUs"], 1);
  EXPECT_EQ(started["MemoryMiB"], 128);
  EXPECT_GT(started["ProcessID"].get<int64_t>(), 0);

  const Json all = describe(p);
  ASSERT_EQ(all.size(), 1u) << all.dump();
  EXPECT_EQ(all[0]["State"], "RUNNING");
  EXPECT_EQ(all[0]["Flags"], "DEBUG_MODE");
  EXPECT_EQ(all[0]["Measurements"]["PCR0"], m["PCR0"]);
  EXPECT_EQ(all[0]["Measurements"]["PCR1"], m["PCR1"]);
  EXPECT_EQ(all[0]["Measurements"]["PCR2"], m["PCR2"]);

  // Its own processes, under a uid of its own: an hv and an NSM card, nothing else.
  const Json procs = launcher({{"op", "describe"}}).body["processes"];
  std::set<std::string> roles;
  uint32_t enclave_uid = 0, parent_uid = 0;
  for (const auto& q : procs) {
    if (q.value("instance", "") == id) {
      roles.insert(q.value("role", ""));
      enclave_uid = q.value("uid", 0u);
    }
    if (q.value("instance", "") == p && q.value("role", "") == "hv") parent_uid = q.value("uid", 0u);
  }
  EXPECT_EQ(roles, (std::set<std::string>{"hv", "card-nsm"})) << procs.dump();
  // Its vCPU and memory are its own hv's, out of the pool: the parent's hv has no more.
  EXPECT_EQ(cpu_quota_of(parent_hv), "100000") << "the parent's hv keeps one CPU's time";
  EXPECT_EQ(memory_limit_of(parent_hv), parent_mem);
  EXPECT_EQ(cpu_quota_of(jailed_pid("hv", id)), "100000") << "the enclave's hv gets its one";
  const std::string enclave_mem = memory_limit_of(jailed_pid("hv", id));
  ASSERT_FALSE(enclave_mem.empty());
  ASSERT_NE(enclave_mem, "max");
  EXPECT_GE(std::stoull(enclave_mem), 128ull << 20);
  EXPECT_LT(std::stoull(enclave_mem), 512ull << 20) << "the enclave's hv has its 128 MiB (and overhead), not the pool";
  EXPECT_NE(enclave_uid, 0u);
  EXPECT_NE(enclave_uid, parent_uid) << "an enclave is not its parent's uid";

  // The guest's document, from the console a debug-mode enclave alone shows.
  // The line after the document's says it was printed whole.
  std::string c;
  ASSERT_TRUE(eventually([&] {
    c = cli(cp_, {"enclave", "console", "--enclave-id", id}).out;
    return c.find("azote-guest: nsm-attest ok") != std::string::npos;
  }, 60s)) << c;
  std::string b64;
  for (const auto& l : lines(c))
    if (l.rfind("azote-guest: nsm-attestation-document ", 0) == 0)
      b64 = l.substr(std::string("azote-guest: nsm-attestation-document ").size());
  std::ofstream(dir_ + "/doc.b64") << b64;
  o = run({"/usr/bin/python3", AZOTE_SOURCE_DIR "/tests/tools/verify_attestation.py", "--root", root_pem(),
           dir_ + "/doc.b64", "--nonce", "5eed"},
          30s);
  EXPECT_EQ(o.status, 1) << "a debug enclave's document is refused: " << o.out;
  o = run({"/usr/bin/python3", AZOTE_SOURCE_DIR "/tests/tools/verify_attestation.py", "--root", dir_ + "/root.pem",
           dir_ + "/doc.b64", "--nonce", "5eed", "--allow-debug"},
          30s);
  ASSERT_EQ(o.status, 0) << o.out << o.err;
  const Json v = Json::parse(o.out);
  EXPECT_EQ(v["module_id"], id);
  EXPECT_EQ(v["debug"], true);
  EXPECT_EQ(v["user_data"], "cafe");

  // Terminated: gone from describe, its processes gone.
  o = cli(cp_, {"enclave", "terminate-enclave", "--enclave-id", id});
  ASSERT_EQ(o.status, 0) << o.err;
  EXPECT_EQ(Json::parse(o.out)["Terminated"], true);
  EXPECT_TRUE(describe(p).empty());
  EXPECT_EQ(jailed_pid("hv", id), 0);
  EXPECT_EQ(jailed_pid("card-nsm", id), 0);
  EXPECT_EQ(cpu_quota_of(parent_hv), "100000") << "back in the pool, not the parent's (as nitro's allocator)";
  expect_code({"enclave", "terminate-enclave", "--enclave-id", id}, "InvalidEnclaveID.NotFound");

  // Every call audited.
  bool ran = false, ended = false;
  for (const auto& r : audit_records()) {
    ran = ran || r.value("method", "") == "RunEnclave";
    ended = ended || r.value("method", "") == "TerminateEnclave";
  }
  EXPECT_TRUE(ran && ended);
}

TEST_F(EnclaveHost, NitroClisRefusalsAndNobodyReadsANonDebugConsole) {
  const std::string plain = parent("", "t3.nano");
  const std::string p = parent();
  ASSERT_FALSE(plain.empty());
  ASSERT_FALSE(p.empty());
  build("init", "describe.eif");  // idles: the enclave runs until ended
  expect_code({"enclave", "run-enclave", "--instance-id", plain, "--eif-path", dir_ + "/describe.eif", "--cpu-count", "1",
               "--memory", "128"},
              "UnsupportedOperation");
  expect_code({"enclave", "run-enclave", "--instance-id", p, "--eif-path", dir_ + "/describe.eif", "--cpu-count", "1",
               "--memory", "32"},
              "InvalidParameterValue");
  expect_code({"enclave", "run-enclave", "--instance-id", p, "--eif-path", dir_ + "/describe.eif", "--cpu-count", "2",
               "--memory", "128"},
              "InsufficientCpu");
  expect_code({"enclave", "run-enclave", "--instance-id", p, "--eif-path", dir_ + "/describe.eif", "--cpu-count", "1",
               "--memory", "4096"},
              "InsufficientMemory");
  // 640 MiB would fit the parent's 1024 but not its 512 MiB pool.
  expect_code({"enclave", "run-enclave", "--instance-id", p, "--eif-path", dir_ + "/describe.eif", "--cpu-count", "1",
               "--memory", "640"},
              "InsufficientMemory");
  // Pools the type cannot give: every vCPU, too little memory left to the parent, none
  // without enclave support.
  for (const char* pool : {"Enabled=true,CpuCount=2", "Enabled=true,MemoryMiB=960", "Enabled=true,MemoryMiB=63"})
    expect_code({"run-instances", "--image-id", "ami-builtin", "--instance-type", "t3.micro", "--no-network-interface",
                 "--enclave-options", pool},
                "InvalidParameterValue");
  expect_code({"enclave", "run-enclave", "--instance-id", p, "--eif-path", dir_ + "/describe.eif", "--cpu-count", "1",
               "--memory", "128", "--enclave-cid", "3"},
              "InvalidParameterValue");
  {
    std::ofstream(dir_ + "/bad.eif", std::ios::binary) << slurp(dir_ + "/describe.eif") << "x";
    expect_code({"enclave", "run-enclave", "--instance-id", p, "--eif-path", dir_ + "/bad.eif", "--cpu-count", "1",
                 "--memory", "128"},
                "InvalidParameterValue");
  }
  // An operator reads, never starts; nobody reads a non-debug enclave's console.
  const std::string op = issue("operator", "watcher");
  auto o = cli(op, {"enclave", "run-enclave", "--instance-id", p, "--eif-path", dir_ + "/describe.eif", "--cpu-count", "1",
                    "--memory", "128"});
  EXPECT_EQ(o.status, 254);
  EXPECT_NE(o.err.find("UnauthorizedOperation"), std::string::npos) << o.err;
  o = run_enclave(p, "describe.eif");
  ASSERT_EQ(o.status, 0) << o.err << slurp(dir_ + "/controller.log");
  const std::string id = Json::parse(o.out)["EnclaveID"];
  EXPECT_EQ(cli(op, {"enclave", "describe-enclaves"}).status, 0);
  expect_code({"enclave", "console", "--enclave-id", id}, "UnsupportedOperation");
  EXPECT_EQ(describe()[0]["Flags"], "NONE");
  // Its files are out of the controller's reach too: the console log is the enclave's.
  // The parent's stop ends its enclaves.
  o = cli(cp_, {"stop-instances", "--instance-ids", p});
  ASSERT_EQ(o.status, 0) << o.err;
  ASSERT_TRUE(wait_state(p, "stopped", 60s));
  EXPECT_TRUE(describe().empty()) << describe().dump();
  EXPECT_EQ(jailed_pid("hv", id), 0);
  EXPECT_EQ(jailed_pid("card-nsm", id), 0);
}

// At most four enclaves per parent (nitro-cli's limit), whatever room its pool has left;
// one more after one ends. (A t3.2xlarge parent: 8 vCPUs, 32 GiB, a 6-vCPU 2 GiB pool;
// most of it never touched.)
TEST_F(EnclaveHost, AParentRunsAtMostFourEnclaves) {
  stop_controller(SIGTERM);
  start_controller({"--capacity-vcpus", "16", "--capacity-memory", "40G"});
  const std::string p = parent("Enabled=true,CpuCount=6,MemoryMiB=2048", "t3.2xlarge");
  ASSERT_FALSE(p.empty());
  build("init", "idle.eif");
  std::vector<std::string> ids;
  for (int i = 0; i < 4; ++i) {
    auto o = run_enclave(p, "idle.eif");
    ASSERT_EQ(o.status, 0) << i << ": " << o.err;
    ids.push_back(Json::parse(o.out)["EnclaveID"]);
  }
  EXPECT_EQ(describe(p).size(), 4u);
  expect_code({"enclave", "run-enclave", "--instance-id", p, "--eif-path", dir_ + "/idle.eif", "--cpu-count", "1",
               "--memory", "128"},
              "EnclaveLimitExceeded");
  ASSERT_EQ(cli(cp_, {"enclave", "terminate-enclave", "--enclave-id", ids[0]}).status, 0);
  auto o = run_enclave(p, "idle.eif");
  EXPECT_EQ(o.status, 0) << o.err;
  EXPECT_EQ(describe(p).size(), 4u);
}

// The enclave's guest writes 64 random bytes into its private memory (init --marker):
// they are in its own azote-hv (the scan's positive control) and in no other process —
// not its parent's hv, not its NSM card nor the parent's vsock card (they map only its
// I/O window), not the controller, not the launcher.
TEST_F(EnclaveHost, AnEnclavesPrivateBytesAreInItsOwnHypervisorOnly) {
  const std::string p = parent();
  ASSERT_FALSE(p.empty());
  build("init --marker", "marker.eif");
  auto o = run_enclave(p, "marker.eif");
  ASSERT_EQ(o.status, 0) << o.err;
  const std::string id = Json::parse(o.out)["EnclaveID"];
  // Not in debug mode: the console is read here as root from its file, as nobody can
  // through the API.
  const std::string console_file = dir_ + "/instances/" + id + "/console.log";
  std::smatch m;
  std::string text;
  ASSERT_TRUE(eventually([&] {
    text = slurp(console_file);
    return text.find("azote-guest: ready") != std::string::npos;
  }, 60s)) << text;
  ASSERT_TRUE(std::regex_search(text, m, std::regex("azote-guest: marker ([0-9a-f]{128})"))) << text;
  std::string marker;
  for (size_t i = 0; i < 128; i += 2) marker += static_cast<char>(std::stoi(std::string(m[1]).substr(i, 2), nullptr, 16));
  const pid_t hv = jailed_pid("hv", id), nsm = jailed_pid("card-nsm", id), parent_hv = jailed_pid("hv", p);
  const pid_t vsock = jailed_pid("card-vsock", p);
  ASSERT_GT(vsock, 0);
  ASSERT_GT(hv, 0);
  ASSERT_GT(nsm, 0);
  ASSERT_GT(parent_hv, 0);
  uint64_t scanned = 0;
  EXPECT_TRUE(memory_holds(hv, marker, &scanned)) << "the scan cannot find the marker even in the enclave's azote-hv";
  for (auto [pid, what] : std::vector<std::pair<pid_t, std::string>>{{parent_hv, "the parent's azote-hv"},
                                                                     {nsm, "the enclave's NSM card"},
                                                                     {vsock, "the parent's vsock card (it maps the "
                                                                             "enclave's I/O window, nothing else)"},
                                                                     {controller_of(ctl_->pid()), "the controller"},
                                                                     {ctl_->pid(), "the launcher"}}) {
    EXPECT_FALSE(memory_holds(pid, marker, &scanned)) << what << " holds the enclave's private bytes";
    EXPECT_GT(scanned, 0u) << what << ": nothing could be read";
  }
}

// vsock: the parent (CID 3 for its enclaves) and its enclave talk through the parent's
// vsock card — nitro-cli's boot heartbeat, then an echo — and the enclave reaches
// nothing else (the host, CID 2, is refused with a reset).
TEST_F(EnclaveHost, TheParentAndItsEnclaveTalkOverVsockAndNothingElse) {
  auto o = cli(cp_, {"register-image", "--name", "vsock-parent", "--kernel", AZOTE_GUEST_ELF, "--cmdline",
                     "azote.run=vsock-echo 5000", "--output", "json"});
  ASSERT_EQ(o.status, 0) << o.err;
  const std::string image = Json::parse(o.out).value("image_id", "");
  o = cli(cp_, {"run-instances", "--image-id", image, "--instance-type", "t3.micro", "--no-network-interface",
                "--enclave-options", "Enabled=true", "--output", "json"});
  ASSERT_EQ(o.status, 0) << o.err;
  const std::string p = Json::parse(o.out)["instances"][0].value("instance_id", "");
  ASSERT_TRUE(wait_state(p, "running", 60s));
  ASSERT_TRUE(console_has(p, "azote-guest: vsock-echo ready cid=3 port=5000", 60s)) << console(p);
  EXPECT_NE(jailed_pid("card-vsock", p), 0) << "an enclave-enabled parent has its vsock card";

  build("vsock-send 3 5000 hello-from-the-enclave", "send.eif");
  o = run_enclave(p, "send.eif", {"--debug-mode", "--enclave-cid", "21"});
  ASSERT_EQ(o.status, 0) << o.err << slurp(dir_ + "/controller.log");
  const std::string id = Json::parse(o.out)["EnclaveID"];
  EXPECT_TRUE(console_has(p, "azote-guest: vsock-echo peer=21:", 60s)) << console(p);
  std::string c;
  EXPECT_TRUE(eventually([&] {
    c = cli(cp_, {"enclave", "console", "--enclave-id", id}).out;
    return c.find("azote-guest: vsock-send echoed bytes=22") != std::string::npos;
  }, 60s)) << c;

  // An enclave cannot reach the host (CID 2) nor anything but its parent.
  build("vsock-send 2 5000 out", "host.eif");
  o = run_enclave(p, "host.eif", {"--debug-mode"});
  ASSERT_EQ(o.status, 0) << o.err;
  const std::string id2 = Json::parse(o.out)["EnclaveID"];
  EXPECT_TRUE(eventually([&] {
    c = cli(cp_, {"enclave", "console", "--enclave-id", id2}).out;
    return c.find("azote-guest: vsock-send error:") != std::string::npos;
  }, 60s)) << c;
  EXPECT_NE(c.find("RST"), std::string::npos) << c;

  // Nor any disk or network: its guest finds neither device.
  for (const auto& [program, line] : std::vector<std::pair<std::string, std::string>>{
           {"blk-check", "azote-guest: blk-check: no virtio-blk device"},
           {"net-dhcp", "azote-guest: net-dhcp: no virtio-net device"}}) {
    build(program, program + ".eif");
    o = run_enclave(p, program + ".eif", {"--debug-mode"});
    ASSERT_EQ(o.status, 0) << o.err;
    const std::string e = Json::parse(o.out)["EnclaveID"];
    EXPECT_TRUE(eventually([&] {
      c = cli(cp_, {"enclave", "console", "--enclave-id", e}).out;
      return c.find(line) != std::string::npos;
    }, 60s)) << program << ": " << c;
  }
}

// The whole story (issue 12): azote-kms on the host holds a key whose policy names one
// enclave image's PCR0; a data owner's secret sealed under it; a parent that relays its
// enclaves' KMS traffic (bytes only, through its vsock card to the host) and hands the
// sealed secret to its enclave; the enclave makes a key from its NSM's randomness, gets
// an attestation document carrying it, asks azote-kms through the proxy, opens the
// answer and returns the secret's SHA-256. An image changed by one byte, or a
// debug-mode enclave, gets AccessDenied and nothing.
class EnclaveKms : public EnclaveHost {
 protected:
  void SetUp() override {
    EnclaveHost::SetUp();
    if (IsSkipped()) return;
    if (::access("/usr/bin/python3", X_OK) != 0) GTEST_SKIP() << "SKIPPED: needs /usr/bin/python3";
    // Under a signed release (development mode zeroes every PCR: nothing would match a
    // key policy), the parents reaching <state>/host/kms.sock as CID 2 port 8000.
    Json host;
    rel_ = dir_ + "-release";  // outside the state directory, whose files the controller owns
    ASSERT_NO_FATAL_FAILURE(restart_under_release(rel_, &host, {"--enclave-host-port", "8000=kms.sock"}));
    if (IsSkipped()) return;
    const std::string root = rel_ + "/root.pem";
    // The host socket the parents' vsock cards connect to: made here, 0666 in
    // <state>/host (0711), handed to azote-kms as its listening socket.
    kms_fd_ = ::socket(AF_UNIX, SOCK_STREAM, 0);  // inherited by azote-kms
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    const std::string path = dir_ + "/host/kms.sock";
    path.copy(a.sun_path, sizeof a.sun_path - 1);
    ::unlink(path.c_str());
    ASSERT_EQ(::bind(kms_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0) << std::strerror(errno);  // NOLINT
    ASSERT_EQ(::listen(kms_fd_, 16), 0);
    ASSERT_EQ(::chmod(path.c_str(), 0666), 0);
    kms_ = std::make_unique<Process>(std::vector<std::string>{AZOTE_BUILD_DIR "/bin/azote-kms", "--state-dir",
                                                              dir_ + "/kms", "--root", root, "--listen",
                                                              "fd:" + std::to_string(kms_fd_), "--audit",
                                                              dir_ + "/kms-audit"});
    ASSERT_TRUE(kms_->wait_for_output("ready", 15s)) << kms_->wait(1s).err;
  }
  void TearDown() override {
    if (kms_) {
      kms_->signal(SIGTERM);
      kms_->wait(10s);
    }
    if (kms_fd_ >= 0) ::close(kms_fd_);
    EnclaveHost::TearDown();
    if (!rel_.empty()) std::filesystem::remove_all(rel_);
  }
  // A key whose policy allows Decrypt to the image with this PCR0 only; the secret
  // sealed under it (base64 CiphertextBlob).
  std::string seal(const std::string& pcr0, const std::string& secret) {
    std::ofstream(dir_ + "/policy.json")
        << Json{{"Statement",
                 {{{"Effect", "Allow"},
                   {"Action", {"kms:Decrypt"}},
                   {"Condition", {{"StringEqualsIgnoreCase", {{"kms:RecipientAttestation:ImageSha384", pcr0}}}}}}}}}
               .dump();
    Outcome o = run({AZOTE_BUILD_DIR "/bin/azote-kms", "create-key", "--state-dir", dir_ + "/kms", "--policy",
                     dir_ + "/policy.json"});
    EXPECT_EQ(o.status, 0) << o.err;
    std::string key = o.out;
    while (!key.empty() && (key.back() == '\n' || key.back() == ' ')) key.pop_back();
    std::ofstream(dir_ + "/secret", std::ios::binary) << secret;
    o = run({AZOTE_BUILD_DIR "/bin/azote-kms", "encrypt", "--state-dir", dir_ + "/kms", "--key-id", key,
             "--plaintext-file", dir_ + "/secret"});
    EXPECT_EQ(o.status, 0) << o.err;
    std::string blob = o.out;
    while (!blob.empty() && (blob.back() == '\n' || blob.back() == ' ')) blob.pop_back();
    return blob;
  }
  // A parent that relays for its enclave (CID `cid`) and asks it to open `blob`; the
  // enclave from `eif`; the parent's console line with the enclave's answer.
  std::string ask(const std::string& eif, const std::string& blob, uint64_t cid, bool debug = false) {
    auto o = cli(cp_, {"register-image", "--name", "kms-parent-" + std::to_string(cid), "--kernel", AZOTE_GUEST_ELF,
                       "--cmdline",
                       "azote.run=kms-parent 8000 8000 " + std::to_string(cid) + " 5000 " + blob, "--output", "json"});
    EXPECT_EQ(o.status, 0) << o.err;
    o = cli(cp_, {"run-instances", "--image-id", Json::parse(o.out).value("image_id", ""), "--instance-type", "t3.micro",
                  "--no-network-interface", "--enclave-options", "Enabled=true", "--output", "json"});
    EXPECT_EQ(o.status, 0) << o.err;
    const std::string p = Json::parse(o.out)["instances"][0].value("instance_id", "");
    EXPECT_TRUE(console_has(p, "azote-guest: kms-proxy ready", 60s)) << console(p);
    std::vector<std::string> extra{"--enclave-cid", std::to_string(cid)};
    if (debug) extra.push_back("--debug-mode");
    o = run_enclave(p, eif, extra);
    EXPECT_EQ(o.status, 0) << o.err << slurp(dir_ + "/controller.log");
    EXPECT_TRUE(console_has(p, "azote-guest: enclave-ask ", 90s)) << console(p);
    for (const auto& l : lines(console(p)))
      if (l.rfind("azote-guest: enclave-ask ", 0) == 0) return l.substr(std::string("azote-guest: enclave-ask ").size());
    return "";
  }

  std::unique_ptr<Process> kms_;
  int kms_fd_ = -1;
  std::string rel_;
};

std::string sha256_hex_of(const std::string& data) {
  unsigned char d[32];
  unsigned int n = 0;
  EVP_Digest(data.data(), data.size(), d, &n, EVP_sha256(), nullptr);
  std::string h;
  static const char* x = "0123456789abcdef";
  for (unsigned i = 0; i < n; ++i) {
    h += x[d[i] >> 4];
    h += x[d[i] & 15];
  }
  return h;
}

TEST_F(EnclaveKms, TheSecretIsReleasedToTheRightEnclaveAndRefusedToATamperedOrDebugOne) {
  const std::string secret = "the enclave alone may read this";
  const Json m = build("enclave-kms-server 5000", "server.eif");
  const std::string blob = seal(m["PCR0"], secret);
  ASSERT_FALSE(blob.empty());

  // The right image: the enclave answers the secret's SHA-256 (it never sends the secret).
  std::string answer = ask("server.eif", blob, 20);
  EXPECT_EQ(answer, "RESULT sha256=" + sha256_hex_of(secret) + " bytes=" + std::to_string(secret.size())) << answer;

  // One byte more on its command line: a new PCR0, refused by the key's policy.
  build("enclave-kms-server 5000 ", "tampered.eif");
  answer = ask("tampered.eif", blob, 21);
  EXPECT_EQ(answer.rfind("ERROR ", 0), 0u) << answer;
  EXPECT_NE(answer.find("AccessDenied"), std::string::npos) << answer;

  // The right image in debug mode: its document's PCRs are zeros, refused.
  answer = ask("server.eif", blob, 22, /*debug=*/true);
  EXPECT_EQ(answer.rfind("ERROR ", 0), 0u) << answer;

  // Every decision in azote-kms's audit log, which verifies.
  const std::string log = slurp(dir_ + "/kms-audit/audit.log");
  EXPECT_NE(log.find("\"allowed\""), std::string::npos) << log;
  const Outcome v = run({AZOTE_CLI_BIN, "audit", "verify", dir_ + "/kms-audit/audit.log"});
  EXPECT_EQ(v.status, 0) << v.out << v.err;
}

}  // namespace
}  // namespace azote::test
