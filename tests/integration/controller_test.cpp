// azote-controller end to end, through the azote CLI, as people and the fleet use it:
// real processes (controller, azote-hv per instance, azote-card-blk), real mutual TLS,
// the real audit log. What each test checks is named in its title.
#include <dirent.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include "pki/pki.hpp"
#include "process.hpp"

namespace azote::test {
namespace {

using namespace std::chrono_literals;
using Json = nlohmann::json;

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

// PIDs of processes whose command line mentions `needle` (our state directory).
std::vector<pid_t> processes_mentioning(const std::string& needle) {
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
    stop_controller(SIGTERM);
    // --on-exit stop: nothing of this host may outlive its controller.
    const auto left = processes_mentioning(dir_);
    for (pid_t p : left) ::kill(p, SIGKILL);
    EXPECT_TRUE(left.empty()) << left.size() << " process(es) left behind, e.g. pid " << left.front();
    if (!HasFailure()) std::filesystem::remove_all(dir_);
  }

  void start_controller(const std::vector<std::string>& extra = {}) {
    std::string cmd = "exec " + std::string(AZOTE_CONTROLLER_BIN) + " --state-dir " + dir_ +
                      " --on-exit stop --capacity-vcpus 8 --capacity-memory 8G";
    for (const auto& e : extra) cmd += " " + e;
    std::filesystem::create_directories(dir_);
    cmd += " 2>>" + dir_ + "/controller.log";
    ctl_ = std::make_unique<Process>(std::vector<std::string>{"/bin/sh", "-c", cmd});
    ASSERT_TRUE(ctl_->wait_for_output("azote-controller: ready", 15s)) << slurp(dir_ + "/controller.log");
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

  std::string dir_, cp_;
  std::unique_ptr<Process> ctl_;
};

// The Done-when cycle: run → stop → start → terminate, with the root volume's data
// (the guest's boot count) surviving stop/start, and a second volume that outlives
// the instance.
TEST_F(ControllerTest, RunStopStartTerminateKeepsTheRootVolume) {
  auto o = cli(cp_, {"run-instances", "--image-id", "ami-builtin", "--instance-type", "t3.nano", "--wait", "--output", "json"});
  ASSERT_EQ(o.status, 0) << o.out << o.err;
  const std::string id = Json::parse(o.out)["instances"][0]["instance_id"];
  EXPECT_EQ(state(id), "running");
  ASSERT_TRUE(console_has(id, "azote-guest: ready")) << console(id);
  EXPECT_NE(console(id).find("boot-count=1 "), std::string::npos) << console(id);
  const Json inst = instance(id);
  ASSERT_EQ(inst["block_device_mappings"].size(), 1u) << inst.dump();
  const std::string root = inst["block_device_mappings"][0]["volume_id"];
  EXPECT_EQ(inst["block_device_mappings"][0]["device_name"], "/dev/vda");

  o = cli(cp_, {"stop-instances", "--instance-ids", id, "--wait"});
  ASSERT_EQ(o.status, 0) << o.out << o.err;
  Json stopped = instance(id);
  EXPECT_EQ(stopped["state"]["name"], "stopped");
  EXPECT_EQ(stopped["state_reason"]["code"], "Client.UserInitiatedShutdown") << stopped.dump();

  // A data volume attaches to the stopped instance, not to a running one.
  Json vol = cli_json(cp_, {"create-volume", "--size", "1"});
  const std::string vid = vol["volume_id"];
  EXPECT_EQ(vol["encrypted"], true);
  o = cli(cp_, {"attach-volume", "--volume-id", vid, "--instance-id", id});
  EXPECT_EQ(o.status, 0) << o.out << o.err;

  o = cli(cp_, {"start-instances", "--instance-ids", id, "--wait"});
  ASSERT_EQ(o.status, 0) << o.out << o.err;
  ASSERT_TRUE(console_has(id, "boot-count=2 ")) << console(id);
  EXPECT_EQ(instance(id)["block_device_mappings"].size(), 2u);
  o = cli(cp_, {"attach-volume", "--volume-id", vid, "--instance-id", id});
  EXPECT_EQ(o.status, 254);
  EXPECT_NE(o.err.find("VolumeInUse"), std::string::npos) << o.err;

  o = cli(cp_, {"terminate-instances", "--instance-ids", id, "--wait"});
  ASSERT_EQ(o.status, 0) << o.out << o.err;
  EXPECT_EQ(state(id), "terminated");
  // The root volume (DeleteOnTermination) is gone with its key; the data volume is free.
  o = cli(cp_, {"describe-volumes", "--volume-ids", root});
  EXPECT_EQ(o.status, 254);
  EXPECT_NE(o.err.find("InvalidVolume.NotFound"), std::string::npos) << o.err;
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/volumes/" + root + ".img"));
  // Its wrapped key is gone from the database files too (secure_delete + checkpoint):
  // the volume id, stored next to the key, appears nowhere any more.
  const std::string db = slurp(dir_ + "/controller.db") + slurp(dir_ + "/controller.db-wal");
  EXPECT_EQ(db.find(root), std::string::npos) << "the deleted volume's record lingers in the database files";
  Json v = cli_json(cp_, {"describe-volumes", "--volume-ids", vid});
  EXPECT_EQ(v["volumes"][0]["state"], "available") << v.dump();
  EXPECT_TRUE(processes_mentioning(dir_ + "/instances/" + id).empty()) << "the hypervisor outlived termination";
  EXPECT_EQ(cli(cp_, {"delete-volume", "--volume-id", vid}).status, 0);
  // Every call above is in the audit log, which verifies.
  auto ver = audit_verify();
  EXPECT_EQ(ver.status, 0) << ver.out << ver.err;
}

// Bad inputs get EC2's error codes, exit 254, and change nothing.
TEST_F(ControllerTest, BadInputsChangeNothing) {
  auto before = cli_json(cp_, {"describe-instances"});
  struct Case {
    std::vector<std::string> args;
    std::string expect;
  };
  const std::string big(16 * 1024 + 1, 'x');
  std::filesystem::create_directories(dir_ + "/in");
  std::ofstream(dir_ + "/in/ud") << big;
  const std::vector<Case> cases = {
      {{"run-instances", "--image-id", "ami-builtin", "--instance-type", "t9.huge"},
       "InvalidParameterValue: instance type \"t9.huge\" does not exist"},
      {{"run-instances", "--image-id", "ami-nope"}, "InvalidAMIID.Malformed"},
      {{"run-instances", "--image-id", "ami-0123456789abcdef0"}, "InvalidAMIID.NotFound"},
      {{"run-instances", "--image-id", "ami-builtin", "--user-data", "file://" + dir_ + "/in/ud"},
       "InvalidParameterValue: user data is 16385 bytes"},
      {{"run-instances", "--image-id", "ami-builtin", "--instance-type", "t3.2xlarge"}, "InsufficientInstanceCapacity"},
      {{"describe-instances", "--instance-ids", "i-xyz"}, "InvalidInstanceID.Malformed"},
      {{"stop-instances", "--instance-ids", "i-0123456789abcdef0"}, "InvalidInstanceID.NotFound"},
      {{"terminate-instances", "--instance-ids", "i-0123456789abcdef0'; --"}, "InvalidInstanceID.Malformed"},
      {{"create-volume", "--size", "1", "--volume-type", "io1"}, "InvalidParameterValue"},
      {{"create-volume", "--size", "99999"}, "InvalidParameterValue"},
      {{"delete-volume", "--volume-id", "vol-0123456789abcdef0"}, "InvalidVolume.NotFound"},
      {{"describe-instance-types", "--instance-types", "z9.big"}, "InvalidInstanceType"},
  };
  for (const auto& c : cases) {
    auto o = cli(cp_, c.args);
    EXPECT_EQ(o.status, 254) << c.args[0] << " " << o.out << o.err;
    EXPECT_NE(o.err.find(c.expect), std::string::npos) << c.args[0] << ": " << o.err;
  }
  // Client tokens: the same request returns the same reservation; a different one
  // with the same token is refused.
  auto a = cli_json(cp_, {"run-instances", "--image-id", "ami-builtin", "--instance-type", "t3.nano", "--client-token", "tok-1"});
  auto b = cli_json(cp_, {"run-instances", "--image-id", "ami-builtin", "--instance-type", "t3.nano", "--client-token", "tok-1"});
  EXPECT_EQ(a["reservation_id"], b["reservation_id"]);
  EXPECT_EQ(a["instances"][0]["instance_id"], b["instances"][0]["instance_id"]);
  auto c = cli(cp_, {"run-instances", "--image-id", "ami-builtin", "--instance-type", "t3.micro", "--client-token", "tok-1"});
  EXPECT_EQ(c.status, 254);
  EXPECT_NE(c.err.find("IdempotentParameterMismatch"), std::string::npos) << c.err;
  auto after = cli_json(cp_, {"describe-instances"});
  EXPECT_EQ(after["instances"].size(), before.value("instances", Json::array()).size() + 1) << after.dump();
  auto vols = cli_json(cp_, {"describe-volumes"});
  EXPECT_EQ(vols["volumes"].size(), 1u) << "only the one instance's root volume: " << vols.dump();
  const std::string id = a["instances"][0]["instance_id"];
  ASSERT_TRUE(wait_state(id, "running"));
  auto st = cli(cp_, {"start-instances", "--instance-ids", id, "i-0123456789abcdef0"});
  EXPECT_EQ(st.status, 254);
  EXPECT_NE(st.err.find("InvalidInstanceID.NotFound"), std::string::npos);
  EXPECT_EQ(state(id), "running");
}

// Images are content-addressed; an image azote-hv cannot boot ends its instance as
// terminated with a reason that says why, at once (no wait for a control socket).
TEST_F(ControllerTest, RegisteredImageThatCannotBootIsTerminatedWithTheReason) {
  // /bin/true is an ELF, so the controller accepts it, but it has no PVH entry.
  auto r1 = cli_json(cp_, {"register-image", "--name", "not-a-kernel", "--kernel", "/bin/true"});
  auto r2 = cli_json(cp_, {"register-image", "--name", "not-a-kernel", "--kernel", "/bin/true"});
  const std::string ami = r1["image_id"];
  EXPECT_EQ(r1["image_id"], r2["image_id"]) << "same content, same id";
  EXPECT_TRUE(std::regex_match(ami, std::regex("ami-[0-9a-f]{17}"))) << ami;
  auto bad = cli(cp_, {"register-image", "--name", "text", "--kernel", AZOTE_SOURCE_DIR "/README.md"});
  EXPECT_EQ(bad.status, 254);
  EXPECT_NE(bad.err.find("neither an ELF"), std::string::npos) << bad.err;

  const auto t0 = std::chrono::steady_clock::now();
  Json r = cli_json(cp_, {"run-instances", "--image-id", ami, "--instance-type", "t3.nano"});
  const std::string id = r["instances"][0]["instance_id"];
  ASSERT_TRUE(wait_state(id, "terminated", 30s)) << state(id);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  const Json i = instance(id);
  EXPECT_EQ(i["state_reason"]["code"], "Server.InternalError") << i.dump();
  EXPECT_NE(i["state_reason"]["message"].get<std::string>().find("kernel image could not be loaded"), std::string::npos)
      << i.dump();
  auto vols = cli_json(cp_, {"describe-volumes"});
  EXPECT_TRUE(!vols.contains("volumes") || vols["volumes"].empty()) << "root volume left behind: " << vols.dump();
}

// Reboot keeps the instance running on a new hypervisor process, with the same root
// volume; the metrics text file follows the host's state.
TEST_F(ControllerTest, RebootRestartsTheGuestAndMetricsFileFollows) {
  stop_controller(SIGTERM);
  start_controller({"--metrics-textfile", dir_ + "/metrics.prom"});
  const std::string id = run_one();
  ASSERT_TRUE(wait_state(id, "running"));
  ASSERT_TRUE(console_has(id, "boot-count=1 "));
  const int64_t before = hv_pid(id);
  auto o = cli(cp_, {"reboot-instances", "--instance-ids", id, "--wait"});
  ASSERT_EQ(o.status, 0) << o.out << o.err;
  ASSERT_TRUE(console_has(id, "boot-count=2 ")) << console(id);
  EXPECT_EQ(state(id), "running");
  EXPECT_NE(hv_pid(id), before);
  EXPECT_GT(hv_pid(id), 0);
  o = cli(cp_, {"reboot-instances", "--instance-ids", "i-0123456789abcdef0"});
  EXPECT_EQ(o.status, 254);
  std::string text;
  for (int i = 0; i < 80 && text.find("azote_instances{state=\"running\"} 1") == std::string::npos; ++i) {
    std::this_thread::sleep_for(100ms);
    text = slurp(dir_ + "/metrics.prom");
  }
  EXPECT_NE(text.find("azote_instances{state=\"running\"} 1"), std::string::npos) << text;
  EXPECT_NE(text.find("azote_api_calls_total{method=\"RebootInstances\",outcome=\"allowed\"} 1"), std::string::npos)
      << text;
}

// An image with a kernel file and root-volume content: the content reaches the guest
// through the card's encryption (the guest reads the boot record we put there), and the
// volume file never holds it in clear.
TEST_F(ControllerTest, ImageRootContentReachesTheGuestEncrypted) {
  // The built-in guest's boot record (guest/init.cpp): "AZOTEBOOT" + 3 NULs, u32 version 1,
  // u64 count, u64 FNV-1a-64 of the first 24 bytes; little-endian.
  std::string rec(32, '\0');
  std::memcpy(rec.data(), "AZOTEBOOT", 9);
  const uint32_t version = 1;
  const uint64_t count = 41;
  std::memcpy(rec.data() + 12, &version, 4);
  std::memcpy(rec.data() + 16, &count, 8);
  uint64_t h = 0xcbf29ce484222325ull;
  for (int i = 0; i < 24; ++i) h = (h ^ static_cast<uint8_t>(rec[i])) * 0x100000001b3ull;
  std::memcpy(rec.data() + 24, &h, 8);
  std::filesystem::create_directories(dir_ + "/in");
  std::ofstream(dir_ + "/in/root.img", std::ios::binary) << rec << std::string(4096 - 32, 'z');
  Json img = cli_json(cp_, {"register-image", "--name", "guest-with-content", "--kernel", AZOTE_GUEST_ELF,
                            "--cmdline", "azote.run=init", "--root-content", dir_ + "/in/root.img"});
  const std::string ami = img["image_id"];
  Json desc = cli_json(cp_, {"describe-images", "--image-ids", ami});
  EXPECT_EQ(desc["images"][0]["root_content_sha256"].get<std::string>().size(), 64u) << desc.dump();
  Json r = cli_json(cp_, {"run-instances", "--image-id", ami, "--instance-type", "t3.nano"});
  const std::string id = r["instances"][0]["instance_id"];
  ASSERT_TRUE(wait_state(id, "running")) << instance(id).dump();
  ASSERT_TRUE(console_has(id, "boot-count=42 ")) << console(id);
  const std::string root = instance(id)["block_device_mappings"][0]["volume_id"];
  std::string data(1 << 20, '\0');  // the first MiB; the file is a sparse 1 GiB
  std::ifstream(dir_ + "/volumes/" + root + ".img", std::ios::binary).read(data.data(), 1 << 20);
  EXPECT_EQ(data.find("AZOTEBOOT"), std::string::npos) << "the root content is in clear in the volume file";
  EXPECT_EQ(data.find("zzzzzzzz"), std::string::npos);
  // Stop/start does not import again: the count goes on.
  EXPECT_EQ(cli(cp_, {"stop-instances", "--instance-ids", id, "--wait"}).status, 0);
  EXPECT_EQ(cli(cp_, {"start-instances", "--instance-ids", id, "--wait"}).status, 0);
  ASSERT_TRUE(console_has(id, "boot-count=43 ")) << console(id);
}

// Roles: control-plane does everything, operator only reads, anything else nothing;
// every decision is in the audit log with the principal and the outcome.
TEST_F(ControllerTest, AuthorizationMatrixIsEnforcedAndAudited) {
  const std::string op = issue("operator", "ops-alice");
  const std::string other = issue("auditor", "bob");
  const std::string id = run_one();
  ASSERT_FALSE(id.empty());
  ASSERT_TRUE(wait_state(id, "running"));
  const std::vector<std::vector<std::string>> reads = {
      {"describe-instances"}, {"describe-instance-types"}, {"describe-images"},
      {"describe-volumes"},   {"get-console-output", "--instance-id", id}, {"get-metrics"}};
  const std::vector<std::vector<std::string>> writes = {
      {"run-instances", "--image-id", "ami-builtin"}, {"stop-instances", "--instance-ids", id},
      {"reboot-instances", "--instance-ids", id},     {"terminate-instances", "--instance-ids", id},
      {"create-volume", "--size", "1"}};
  for (const auto& r : reads) {
    EXPECT_EQ(cli(op, r).status, 0) << "operator " << r[0];
    auto o = cli(other, r);
    EXPECT_EQ(o.status, 254) << "auditor " << r[0];
    EXPECT_NE(o.err.find("UnauthorizedOperation"), std::string::npos) << o.err;
  }
  for (const auto& w : writes) {
    auto o = cli(op, w);
    EXPECT_EQ(o.status, 254) << "operator " << w[0] << o.out;
    EXPECT_NE(o.err.find("UnauthorizedOperation"), std::string::npos) << o.err;
    EXPECT_EQ(cli(other, w).status, 254) << "auditor " << w[0];
  }
  EXPECT_EQ(state(id), "running") << "a denied call changed state";
  int op_denied = 0, op_allowed = 0, other_denied = 0;
  for (const auto& r : audit_records()) {
    if (r["principal"] == "operator/ops-alice") (r["outcome"] == "denied" ? op_denied : op_allowed)++;
    if (r["principal"] == "auditor/bob") other_denied += r["outcome"] == "denied";
  }
  EXPECT_EQ(op_denied, static_cast<int>(writes.size()));
  EXPECT_EQ(op_allowed, static_cast<int>(reads.size()));
  EXPECT_EQ(other_denied, static_cast<int>(reads.size() + writes.size()));
  auto m = cli(cp_, {"get-metrics"});
  EXPECT_NE(m.out.find("azote_instances{state=\"running\"} 1"), std::string::npos) << m.out;
  EXPECT_NE(m.out.find("azote_api_calls_total{method=\"RunInstances\",outcome=\"denied\"} 2"), std::string::npos) << m.out;
  EXPECT_NE(m.out.find("azote_blk_"), std::string::npos) << "no card counters:\n" << m.out;
  EXPECT_EQ(audit_verify().status, 0);
}

// No certificate, another CA, expired, revoked: refused in the handshake, and each
// refusal is an audit record with its reason.
TEST_F(ControllerTest, AuthenticationRefusalsAreLogged) {
  // Another host's CA.
  const std::string other = dir_ + "-other";
  std::filesystem::remove_all(other);
  std::filesystem::create_directories(other);
  auto foreign = run({AZOTE_CLI_BIN, "admin", "issue-cert", "--state-dir", other, "--role", "control-plane", "--name",
                      "mallory", "--out", other + "/creds"});
  ASSERT_EQ(foreign.status, 0) << foreign.err;
  // Trust our CA but present the foreign certificate.
  std::filesystem::copy_file(cp_ + "/ca.pem", other + "/creds/ca.pem", std::filesystem::copy_options::overwrite_existing);
  // Expired: issued by our CA, valid a year ago.
  auto pki = pki::HostPki::open_or_create(dir_ + "/pki");
  ASSERT_TRUE(pki.ok()) << pki.error().message();
  const int64_t now = ::time(nullptr);
  auto expired = pki->issue_client("control-plane", "old", now - 400 * 86400, now - 35 * 86400);
  ASSERT_TRUE(expired.ok());
  const std::string exp_dir = dir_ + "/creds-expired";
  std::filesystem::create_directories(exp_dir);
  std::filesystem::copy_file(cp_ + "/ca.pem", exp_dir + "/ca.pem");
  std::ofstream(exp_dir + "/cert.pem") << expired->cert_pem;
  std::ofstream(exp_dir + "/key.pem") << expired->key_pem;
  // Revoked.
  const std::string rev = issue("control-plane", "leaver");
  EXPECT_EQ(cli(rev, {"describe-instances"}).status, 0);
  std::smatch sm;
  const std::string rev_cert = slurp(rev + "/cert.pem");
  auto issued_serial = pki->verify_client(rev_cert);
  ASSERT_TRUE(issued_serial.ok());
  auto r = run({AZOTE_CLI_BIN, "admin", "revoke-cert", "--state-dir", dir_, "--serial", issued_serial->serial_hex});
  ASSERT_EQ(r.status, 0) << r.err;

  for (const auto& creds : {other + "/creds", exp_dir, rev}) {
    auto o = cli(creds, {"describe-instances"}, 30s);
    EXPECT_EQ(o.status, 255) << creds << ": " << o.out << o.err;
  }
  // No certificate at all: openssl s_client without one (the CLI always sends one).
  auto s = run({"/bin/sh", "-c",
                "echo | openssl s_client -unix " + dir_ + "/api.sock -CAfile " + cp_ +
                    "/ca.pem -servername azote-controller -alpn h2 2>&1"},
               30s);
  // TLS 1.3 is what both ends negotiate.
  EXPECT_NE(s.out.find("TLSv1.3"), std::string::npos) << s.out;

  std::set<std::string> reasons;
  for (const auto& rec : audit_records())
    if (rec["method"] == "tls.handshake" && rec["outcome"] == "denied") reasons.insert(rec.value("error", ""));
  auto has = [&](const std::string& frag) {
    return std::any_of(reasons.begin(), reasons.end(), [&](const std::string& x) { return x.find(frag) != std::string::npos; });
  };
  EXPECT_TRUE(has("no client certificate")) << testing::PrintToString(reasons);
  EXPECT_TRUE(has("not issued by this host")) << testing::PrintToString(reasons);
  EXPECT_TRUE(has("expired")) << testing::PrintToString(reasons);
  EXPECT_TRUE(has("revoked")) << testing::PrintToString(reasons);
  EXPECT_EQ(audit_verify().status, 0);
  std::filesystem::remove_all(other);
}

// The audit log detects tampering with the records this controller wrote.
TEST_F(ControllerTest, AuditLogTamperingIsDetected) {
  for (int i = 0; i < 3; ++i) EXPECT_EQ(cli(cp_, {"describe-instances"}).status, 0);
  ASSERT_EQ(audit_verify().status, 0);
  stop_controller(SIGTERM);
  const std::string log = dir_ + "/audit/audit.log";
  const std::string good = slurp(log);
  auto tampered = [&](const std::string& text) {
    std::ofstream(log, std::ios::trunc) << text;
    auto o = audit_verify();
    std::ofstream(log, std::ios::trunc) << good;
    return o;
  };
  auto ls = lines(good);
  ASSERT_GE(ls.size(), 3u);
  std::string modified = good;
  modified.replace(modified.find("DescribeInstances"), 17, "TerminateInstance");
  auto o = tampered(modified);
  EXPECT_EQ(o.status, 1);
  EXPECT_NE((o.out + o.err).find("modified"), std::string::npos) << o.out << o.err;
  o = tampered(ls[0] + "\n" + ls[2] + "\n");
  EXPECT_EQ(o.status, 1);
  o = tampered(ls[1] + "\n" + ls[0] + "\n" + ls[2] + "\n");
  EXPECT_EQ(o.status, 1);
  o = tampered(ls[0] + "\n" + ls[1] + "\n");
  EXPECT_EQ(o.status, 1);
  EXPECT_NE((o.out + o.err).find("truncated"), std::string::npos) << o.out << o.err;
  EXPECT_EQ(audit_verify().status, 0);
  start_controller();  // the restored log is continued
  EXPECT_EQ(cli(cp_, {"describe-instances"}).status, 0);
  EXPECT_EQ(audit_verify().status, 0);
}

// Supervision: kill -9 of an instance's hypervisor stops the instance with a reason;
// kill -9 of the card restarts it and the instance keeps running (its hypervisor
// reconnects to the re-added volume).
TEST_F(ControllerTest, KilledHypervisorAndCardAreHandled) {
  const std::string a = run_one(), b = run_one();
  ASSERT_TRUE(wait_state(a, "running"));
  ASSERT_TRUE(wait_state(b, "running"));
  ASSERT_TRUE(console_has(b, "azote-guest: ready"));
  const int64_t pa = hv_pid(a);
  ASSERT_GT(pa, 0);
  ::kill(static_cast<pid_t>(pa), SIGKILL);
  ASSERT_TRUE(wait_state(a, "stopped", 30s));
  const Json ia = instance(a);
  EXPECT_EQ(ia["state_reason"]["code"], "Server.InternalError") << ia.dump();
  EXPECT_NE(ia["state_reason"]["message"].get<std::string>().find("killed"), std::string::npos) << ia.dump();

  auto cards = processes_mentioning(dir_ + "/card-blk.ctl");
  ASSERT_EQ(cards.size(), 1u);
  ::kill(cards[0], SIGKILL);
  // A new card, serving b's root volume again.
  std::vector<pid_t> now;
  for (int i = 0; i < 100; ++i) {
    now = processes_mentioning(dir_ + "/card-blk.ctl");
    if (now.size() == 1 && now[0] != cards[0] && std::filesystem::exists(dir_ + "/s")) break;
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_EQ(now.size(), 1u);
  EXPECT_NE(now[0], cards[0]);
  std::this_thread::sleep_for(1s);
  EXPECT_EQ(state(b), "running");
  // The restarted card serves b again and a stopped/started instance can use it.
  EXPECT_EQ(cli(cp_, {"start-instances", "--instance-ids", a, "--wait"}).status, 0);
  ASSERT_TRUE(console_has(a, "boot-count=2 ")) << console(a);
  auto m = cli(cp_, {"get-metrics"});
  EXPECT_NE(m.out.find("azote_card_restarts_total 1"), std::string::npos) << m.out;
}

// A controller restart loses nothing: a running instance is re-adopted (same
// hypervisor), one whose hypervisor died meanwhile is reported stopped with a reason,
// and a launch interrupted half-way is completed without orphans.
TEST_F(ControllerTest, ControllerRestartReadoptsAndReconciles) {
  const std::string keep = run_one(), dies = run_one();
  ASSERT_TRUE(wait_state(keep, "running"));
  ASSERT_TRUE(wait_state(dies, "running"));
  const int64_t keep_pid = hv_pid(keep), dies_pid = hv_pid(dies);
  stop_controller(SIGKILL);
  ::kill(static_cast<pid_t>(dies_pid), SIGKILL);
  start_controller();
  EXPECT_EQ(state(keep), "running");
  EXPECT_EQ(hv_pid(keep), keep_pid) << "not the same hypervisor: re-adoption failed";
  EXPECT_EQ(state(dies), "stopped");
  EXPECT_EQ(instance(dies)["state_reason"]["code"], "Server.InternalError");

  // Mid-launch: a hypervisor that takes 2 s to start; the controller dies during it.
  stop_controller(SIGKILL);
  const std::string slow = dir_ + "/slow-hv.sh";
  std::ofstream(slow) << "#!/bin/sh\nsleep 2\nexec " << AZOTE_HV_BIN << " \"$@\"\n";
  ::chmod(slow.c_str(), 0755);
  start_controller({"--hv", slow});
  Json r = cli_json(cp_, {"run-instances", "--image-id", "ami-builtin", "--instance-type", "t3.nano"});
  const std::string mid = r["instances"][0]["instance_id"];
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(state(mid), "pending");
  stop_controller(SIGKILL);
  start_controller();
  ASSERT_TRUE(wait_state(mid, "running", 60s)) << state(mid);
  ASSERT_TRUE(console_has(mid, "azote-guest: ready"));
  EXPECT_TRUE(processes_mentioning("slow-hv.sh").empty()) << "the interrupted launch left its hypervisor behind";
  // Keep is still the same process, and terminate works on everything.
  EXPECT_EQ(hv_pid(keep), keep_pid);
  EXPECT_EQ(cli(cp_, {"terminate-instances", "--instance-ids", keep, dies, mid, "--wait"}).status, 0);
  EXPECT_EQ(audit_verify().status, 0);
}

}  // namespace
}  // namespace azote::test
