// azote-controller end to end, through the azote CLI, as people and the fleet use it:
// real processes (controller, azote-hv per instance, azote-card-blk), real mutual TLS,
// the real audit log. What each test checks is named in its title.
#include "controller_fixture.hpp"

namespace azote::test {
namespace {

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
  EXPECT_EQ(jailed_pid("hv", id), 0) << "the hypervisor outlived termination";
  EXPECT_EQ(jailed_pid("card-blk", id), 0) << "the block card outlived termination";
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

// Roles: control-plane does everything, operator only reads the host's own facts (not
// a tenant's console), anything else nothing; every decision is in the audit log with
// the principal and the outcome.
TEST_F(ControllerTest, AuthorizationMatrixIsEnforcedAndAudited) {
  const std::string op = issue("operator", "ops-alice");
  const std::string other = issue("auditor", "bob");
  const std::string id = run_one();
  ASSERT_FALSE(id.empty());
  ASSERT_TRUE(wait_state(id, "running"));
  const std::vector<std::vector<std::string>> reads = {
      {"describe-instances"}, {"describe-instance-types"}, {"describe-images"},
      {"describe-volumes"},   {"get-metrics"},          {"describe-host-attestation"},
      {"get-instance-attestation", "--instance-id", id, "--nonce", "00"}};
  const std::vector<std::vector<std::string>> writes = {
      {"get-console-output", "--instance-id", id},
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

// Connects to the controller's socket (unix:PATH or 127.0.0.1:PORT), sends `bytes`
// and waits for the controller to close. True if it did within 20 s.
bool send_and_expect_close(const std::string& endpoint, const std::string& bytes) {
  int fd = -1;
  if (endpoint.rfind("unix:", 0) == 0) {
    fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, endpoint.c_str() + 5, sizeof a.sun_path - 1);
    if (fd < 0 || ::connect(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0) {
      if (fd >= 0) ::close(fd);
      return false;
    }
  } else {
    fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(std::stoi(endpoint.substr(endpoint.rfind(':') + 1))));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || ::connect(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0) {
      if (fd >= 0) ::close(fd);
      return false;
    }
  }
  bool closed = false;
  if (bytes.empty() || ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size())) {
    const auto end = std::chrono::steady_clock::now() + 20s;
    char buf[4096];
    while (!closed && std::chrono::steady_clock::now() < end) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 500) <= 0) continue;
      const ssize_t n = ::read(fd, buf, sizeof buf);
      closed = n == 0 || (n < 0 && errno == ECONNRESET);
    }
  }
  ::close(fd);
  return closed;
}

// A free TCP port on 127.0.0.1 (bound, read back, released).
int free_loopback_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  int port = 0;
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0)
    port = ntohs(a.sin_port);
  ::close(fd);
  return port;
}

// Refused connections that never reach certificate verification — a TLS client
// offering no ALPN "h2", plain bytes that are not TLS — are audited too, once per
// connection; a flood is aggregated (one record at once, then one with the count),
// so the log grows by a bounded number of records whatever the number of attempts.
TEST_F(ControllerTest, EveryRefusedConnectionIsAuditedOnce) {
  const std::string sock = dir_ + "/api.sock";
  // TLS without ALPN and without a certificate; then ALPN without h2.
  for (const std::string alpn : {"", " -alpn http/1.1"}) {
    auto s = run({"/bin/sh", "-c",
                  "echo | openssl s_client -unix " + sock + " -CAfile " + cp_ +
                      "/ca.pem -servername azote-controller" + alpn + " 2>&1"},
                 30s);
    EXPECT_FALSE(s.timed_out) << s.out;
  }
  // Not TLS at all.
  EXPECT_TRUE(send_and_expect_close("unix:" + sock, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
  // A good client is not a refusal.
  EXPECT_EQ(cli(cp_, {"describe-instances"}).status, 0);

  // Each refusal is on record at once (the first of its kind from this peer).
  auto reasons_now = [&] {
    std::multiset<std::string> out;
    for (const auto& rec : audit_records())
      if (rec["method"] == "tls.handshake") out.insert(rec.value("error", ""));
    return out;
  };
  auto has = [](const std::multiset<std::string>& in, const std::string& frag) {
    return std::any_of(in.begin(), in.end(), [&](const std::string& x) { return x.find(frag) != std::string::npos; });
  };
  EXPECT_TRUE(eventually([&] { return has(reasons_now(), "no ALPN h2") && has(reasons_now(), "not TLS"); }, 10s))
      << testing::PrintToString(reasons_now());

  // A flood of garbage connections: each is refused, the log grows by at most two
  // records for them (the first at once, then the aggregate with the count, written at
  // the end of the interval or at shutdown).
  constexpr int kFlood = 60;
  int closed = 0;
  for (int i = 0; i < kFlood; ++i) closed += send_and_expect_close("unix:" + sock, std::string(64, '\x01')) ? 1 : 0;
  EXPECT_EQ(closed, kFlood);
  EXPECT_EQ(cli(cp_, {"describe-instances"}).status, 0);  // still serving
  stop_controller(SIGTERM);

  // Exactly one accounting per refused connection: the counts add up.
  std::map<std::string, uint64_t> counted, records;
  for (const auto& rec : audit_records()) {
    if (rec["method"] != "tls.handshake") continue;
    const std::string why = rec.value("error", "");
    const std::string key = why.find("no ALPN h2") != std::string::npos ? "alpn"
                            : why.find("not TLS") != std::string::npos  ? "not-tls"
                                                                        : why;
    ASSERT_TRUE(rec.contains("detail")) << rec.dump();
    EXPECT_EQ(rec["outcome"], "denied") << rec.dump();
    EXPECT_EQ(rec["detail"].value("peer", ""), "unix:uid=0") << rec.dump();
    counted[key] += rec["detail"].value("count", 0ull);
    ++records[key];
  }
  EXPECT_EQ(counted["alpn"], 2u) << testing::PrintToString(counted);
  EXPECT_EQ(counted["not-tls"], 1u + kFlood) << testing::PrintToString(counted);
  EXPECT_LE(records["not-tls"], 3u) << testing::PrintToString(records);
  EXPECT_EQ(counted.size(), 2u) << "refusals of other kinds: " << testing::PrintToString(counted);
  EXPECT_EQ(audit_verify().status, 0);

  // Over TCP the peer is the client's address.
  const int port = free_loopback_port();
  ASSERT_GT(port, 0);
  const std::string tcp = "127.0.0.1:" + std::to_string(port);
  start_controller({"--listen", tcp});
  EXPECT_TRUE(send_and_expect_close(tcp, "\x16\x03\x01\x00\x05hello"));
  auto s = run({"/bin/sh", "-c",
                "echo | openssl s_client -connect " + tcp + " -CAfile " + cp_ + "/ca.pem -servername azote-controller 2>&1"},
               30s);
  EXPECT_FALSE(s.timed_out) << s.out;
  auto o = run({AZOTE_CLI_BIN, "--endpoint", tcp, "--credentials", cp_, "describe-instances"}, 60s);
  EXPECT_EQ(o.status, 0) << o.out << o.err;
  EXPECT_TRUE(eventually(
      [&] {
        int tcp_refusals = 0;
        for (const auto& rec : audit_records())
          if (rec["method"] == "tls.handshake" && rec.contains("detail") &&
              rec["detail"].value("peer", "") == "tcp:127.0.0.1")
            ++tcp_refusals;
        return tcp_refusals == 2;
      },
      10s))
      << slurp(dir_ + "/audit/audit.log");
  stop_controller(SIGTERM);
  EXPECT_EQ(audit_verify().status, 0);
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

  // One block card per instance: a's went with its hypervisor, b's runs.
  EXPECT_EQ(jailed_pid("card-blk", a), 0);
  const pid_t card = jailed_pid("card-blk", b);
  ASSERT_GT(card, 0);
  ::kill(card, SIGKILL);
  // A new card, serving b's root volume again.
  pid_t now = 0;
  ASSERT_TRUE(eventually([&] {
    now = jailed_pid("card-blk", b);
    return now != 0 && now != card;
  }));
  std::this_thread::sleep_for(1s);
  EXPECT_EQ(state(b), "running");
  // The restarted card serves b again and a stopped/started instance can use it.
  EXPECT_EQ(cli(cp_, {"start-instances", "--instance-ids", a, "--wait"}).status, 0);
  ASSERT_TRUE(console_has(a, "boot-count=2 ")) << console(a);
  auto m = cli(cp_, {"get-metrics"});
  EXPECT_NE(m.out.find("azote_card_restarts_total 1"), std::string::npos) << m.out;
}

// Dedicated-vCPU types (not t) are sold 1:1 with the host's guest CPUs; burstable ones
// share (--capacity-vcpus). A dedicated type bigger than what is left is refused with
// the reason; a burstable one of the same size fits.
TEST_F(ControllerTest, DedicatedTypesAreNotOvercommitted) {
  stop_controller(SIGTERM);
  start_controller({"--capacity-memory", "32G"});  // memory is not what is measured here
  const std::string m = cli(cp_, {"get-metrics"}).out;
  std::smatch mm;
  ASSERT_TRUE(std::regex_search(m, mm, std::regex("azote_dedicated_vcpus_capacity (\\d+)"))) << m;
  const int dedicated = std::stoi(mm[1]);
  EXPECT_EQ(dedicated, static_cast<int>(sandbox_guest_cpus())) << "1 dedicated vCPU per guest CPU";
  auto o = cli(cp_, {"run-instances", "--image-id", "ami-builtin", "--instance-type", "c5.xlarge", "--no-network-interface"});
  if (dedicated < 4) {
    EXPECT_EQ(o.status, 254) << o.out << o.err;
    EXPECT_NE(o.err.find("InsufficientInstanceCapacity"), std::string::npos) << o.err;
    EXPECT_NE(o.err.find("dedicated-vCPU types get 1 vCPU per guest CPU"), std::string::npos) << o.err;
  } else {
    EXPECT_EQ(o.status, 0) << o.out << o.err;
  }
  o = cli(cp_, {"run-instances", "--image-id", "ami-builtin", "--instance-type", "t3.xlarge", "--no-network-interface"});
  EXPECT_EQ(o.status, 0) << o.out << o.err;
}

// Liveness, not just exit: a card that runs but answers nothing (stopped here with
// SIGSTOP, as a hung control loop would be) is killed and restarted; its instance keeps
// running and is served again.
TEST_F(ControllerTest, HungCardIsKilledAndRestarted) {
  const std::string id = run_one();
  ASSERT_TRUE(wait_state(id, "running"));
  ASSERT_TRUE(console_has(id, "azote-guest: ready"));
  const pid_t card = jailed_pid("card-blk", id);
  ASSERT_GT(card, 0);
  ASSERT_EQ(::kill(card, SIGSTOP), 0);
  pid_t now = 0;
  ASSERT_TRUE(eventually([&] {
    now = jailed_pid("card-blk", id);
    return now != 0 && now != card;
  }, 40s)) << "the hung card was not replaced";
  EXPECT_EQ(state(id), "running");
  EXPECT_NE(slurp(dir_ + "/controller.log").find("has not answered its control socket 3 times in a row"), std::string::npos);
  // The new card serves the instance's volume again (the hypervisor reconnected).
  EXPECT_TRUE(eventually([&] {
    const Json v = card_call(dir_ + "/instances/" + id + "/card-blk.ctl", {{"op", "list-volumes"}});
    return v.value("ok", false) && !v["volumes"].empty() && v["volumes"][0].value("connected", false);
  })) << "the restarted card is not serving the instance";
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

  // Mid-launch: a launch that pauses 2 s after the empty shell; the controller (and its
  // launcher) die during it.
  stop_controller(SIGKILL);
  start_controller({"--test-launch-delay", "2000"});
  Json r = cli_json(cp_, {"run-instances", "--image-id", "ami-builtin", "--instance-type", "t3.nano"});
  const std::string mid = r["instances"][0]["instance_id"];
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(state(mid), "pending");
  const pid_t half = jailed_pid("hv", mid);
  EXPECT_GT(half, 0);
  stop_controller(SIGKILL);
  start_controller();
  ASSERT_TRUE(wait_state(mid, "running", 60s)) << state(mid);
  ASSERT_TRUE(console_has(mid, "azote-guest: ready"));
  EXPECT_NE(jailed_pid("hv", mid), half);
  // Gone (a zombie until whoever inherited it from the dead launcher reaps it).
  const std::string st = slurp("/proc/" + std::to_string(half) + "/stat");
  EXPECT_TRUE(st.empty() || st.find(") Z ") != std::string::npos) << "the interrupted launch left its hypervisor behind: " << st;
  // Keep is still the same process, and terminate works on everything.
  EXPECT_EQ(hv_pid(keep), keep_pid);
  EXPECT_EQ(cli(cp_, {"terminate-instances", "--instance-ids", keep, dies, mid, "--wait"}).status, 0);
  EXPECT_EQ(audit_verify().status, 0);
}


// ---- the VPC: ENIs, private addresses, security groups, the network card -----------

// Two instances get distinct addresses and MACs in the default subnet, each a primary
// ENI the network card serves with the right groups; describe shows what EC2 shows.
TEST_F(ControllerTest, InstancesGetEnisInTheDefaultSubnet) {
  const std::string sg_default = default_group();
  ASSERT_FALSE(sg_default.empty());
  Json web = cli_json(cp_, {"create-security-group", "--group-name", "web", "--description", "web servers"});
  const std::string sg_web = web["group_id"];
  auto a = cli(cp_, {"run-instances", "--image-id", "ami-builtin", "--instance-type", "t3.nano", "--wait", "--output", "json"});
  ASSERT_EQ(a.status, 0) << a.out << a.err;
  auto b = cli(cp_, {"run-instances", "--image-id", "ami-builtin", "--instance-type", "t3.nano", "--security-group-ids",
                     sg_web, sg_default, "--metadata-options", "HttpTokens=required", "--wait", "--output", "json"});
  ASSERT_EQ(b.status, 0) << b.out << b.err;
  const std::string ia = Json::parse(a.out)["instances"][0]["instance_id"];
  const std::string ib = Json::parse(b.out)["instances"][0]["instance_id"];
  const Json da = instance(ia), db = instance(ib);
  const Json vpcs = cli_json(cp_, {"describe-vpcs"});
  ASSERT_EQ(vpcs["vpcs"].size(), 1u) << vpcs.dump();
  EXPECT_EQ(vpcs["vpcs"][0]["cidr_block"], "10.0.0.0/16");
  EXPECT_EQ(vpcs["vpcs"][0]["is_default"], true);
  const std::string vpc = vpcs["vpcs"][0]["vpc_id"];
  EXPECT_TRUE(std::regex_match(vpc, std::regex("vpc-[0-9a-f]{17}"))) << vpc;
  const Json subnets = cli_json(cp_, {"describe-subnets"});
  ASSERT_EQ(subnets["subnets"].size(), 1u);
  const Json& sn = subnets["subnets"][0];
  EXPECT_EQ(sn["cidr_block"], "10.0.1.0/24");
  EXPECT_EQ(sn["vpc_id"], vpc);
  EXPECT_EQ(sn["availability_zone"], "local-1a");
  EXPECT_EQ(sn["available_ip_address_count"], 251 - 2) << sn.dump();
  EXPECT_TRUE(std::regex_match(sn["subnet_id"].get<std::string>(), std::regex("subnet-[0-9a-f]{17}")));

  std::set<std::string> ips, macs;
  for (const Json* d : {&da, &db}) {
    const Json& i = *d;
    const std::string ip = i["private_ip_address"];
    EXPECT_TRUE(std::regex_match(ip, std::regex(R"(10\.0\.1\.([4-9]|[1-9][0-9]|1[0-9][0-9]|2[0-4][0-9]|25[0-4]))"))) << ip;
    ips.insert(ip);
    macs.insert(i["mac_address"].get<std::string>());
    EXPECT_TRUE(std::regex_match(i["mac_address"].get<std::string>(), std::regex("02(:[0-9a-f]{2}){5}"))) << i.dump();
    std::string dashed = ip;
    std::replace(dashed.begin(), dashed.end(), '.', '-');
    EXPECT_EQ(i["private_dns_name"], "ip-" + dashed + ".local-1.compute.internal");
    EXPECT_EQ(i["subnet_id"], sn["subnet_id"]);
    EXPECT_EQ(i["vpc_id"], vpc);
    ASSERT_EQ(i["network_interfaces"].size(), 1u) << i.dump();
    const Json& n = i["network_interfaces"][0];
    EXPECT_TRUE(std::regex_match(n["network_interface_id"].get<std::string>(), std::regex("eni-[0-9a-f]{17}")));
    EXPECT_EQ(n["private_ip_address"], ip);
    EXPECT_EQ(n["mac_address"], i["mac_address"]);
    EXPECT_EQ(n["status"], "in-use");
    EXPECT_EQ(n["attachment"]["device_index"], 0);
  }
  EXPECT_EQ(ips.size(), 2u);
  EXPECT_EQ(macs.size(), 2u);
  EXPECT_EQ(da["private_ip_address"], "10.0.1.4") << "the first free address";
  ASSERT_EQ(da["security_groups"].size(), 1u);
  EXPECT_EQ(da["security_groups"][0]["group_id"], sg_default);
  EXPECT_EQ(da["security_groups"][0]["group_name"], "default");
  ASSERT_EQ(db["security_groups"].size(), 2u);
  EXPECT_EQ(db["security_groups"][0]["group_name"], "web");
  EXPECT_EQ(da["metadata_options"]["http_tokens"], "optional");
  EXPECT_EQ(db["metadata_options"]["http_tokens"], "required");

  // The card serves both ENIs with these addresses, MACs and groups, and each
  // hypervisor is connected to its ENI.
  for (const Json* d : {&da, &db}) {
    const std::string eni = (*d)["network_interfaces"][0]["network_interface_id"];
    ASSERT_TRUE(eventually([&] { return card_eni(eni).value("connected", false); })) << enis_on_card().dump();
    const Json e = card_eni(eni);
    EXPECT_EQ(e["ip"], (*d)["private_ip_address"]);
    EXPECT_EQ(e["mac"], (*d)["mac_address"]);
    EXPECT_EQ(e["vpc"], vpc);
    EXPECT_EQ(e["subnet"], "10.0.1.0/24");
    EXPECT_EQ(e["socket"], "/run/azote-net/" + eni + "/eni.sock");
    std::vector<std::string> want;
    for (const auto& g : (*d)["security_groups"]) want.push_back(g["group_id"]);
    EXPECT_EQ(e["security_groups"].get<std::vector<std::string>>(), want) << e.dump();
  }
  EXPECT_EQ(enis_on_card().size(), 2u);
  // One card per instance: each serves its ENI and knows the other's as a neighbour.
  EXPECT_EQ(neighbours_of(ia), std::set<std::string>{db["network_interfaces"][0]["network_interface_id"].get<std::string>()});
  EXPECT_EQ(neighbours_of(ib), std::set<std::string>{da["network_interfaces"][0]["network_interface_id"].get<std::string>()});
  // The default group as EC2 makes it, on the cards too.
  EXPECT_EQ(card_rules(sg_default, "ingress"), std::set<std::string>{"-1 all " + sg_default});
  EXPECT_EQ(card_rules(sg_default, "egress"), std::set<std::string>{"-1 all 0.0.0.0/0"});
  EXPECT_TRUE(card_rules(sg_web, "ingress").empty());

  // Rules: every change reaches the card at once.
  auto o = cli(cp_, {"authorize-security-group-ingress", "--group-id", sg_web, "--protocol", "tcp", "--port", "22",
                     "--cidr", "10.0.0.0/16"});
  ASSERT_EQ(o.status, 0) << o.err;
  EXPECT_NE(o.out.find("inbound"), std::string::npos) << o.out;
  EXPECT_EQ(card_rules(sg_web, "ingress"), std::set<std::string>{"tcp 22-22 10.0.0.0/16"});
  EXPECT_EQ(cli(cp_, {"authorize-security-group-ingress", "--group-id", sg_web, "--protocol", "icmp", "--port", "8--1",
                      "--source-group", sg_default})
                .status,
            0);
  EXPECT_EQ(card_rules(sg_web, "ingress"),
            (std::set<std::string>{"tcp 22-22 10.0.0.0/16", "icmp type 8 code -1 " + sg_default}));
  EXPECT_EQ(cli(cp_, {"revoke-security-group-egress", "--group-id", sg_web, "--protocol", "-1", "--cidr", "0.0.0.0/0"}).status, 0);
  EXPECT_TRUE(card_rules(sg_web, "egress").empty());
  EXPECT_EQ(cli(cp_, {"authorize-security-group-egress", "--group-id", sg_web, "--protocol", "udp", "--port", "53",
                      "--cidr", "10.0.0.2/32"})
                .status,
            0);
  EXPECT_EQ(card_rules(sg_web, "egress"), std::set<std::string>{"udp 53-53 10.0.0.2/32"});
  EXPECT_EQ(cli(cp_, {"revoke-security-group-ingress", "--group-id", sg_web, "--protocol", "tcp", "--port", "22",
                      "--cidr", "10.0.0.0/16"})
                .status,
            0);
  EXPECT_EQ(card_rules(sg_web, "ingress"), std::set<std::string>{"icmp type 8 code -1 " + sg_default});
  const Json g = cli_json(cp_, {"describe-security-groups", "--group-ids", sg_web});
  ASSERT_EQ(g["security_groups"].size(), 1u);
  EXPECT_EQ(g["security_groups"][0]["ip_permissions"].size(), 1u) << g.dump();
  EXPECT_EQ(g["security_groups"][0]["ip_permissions"][0]["ip_protocol"], "icmp");
  EXPECT_EQ(g["security_groups"][0]["ip_permissions_egress"][0]["cidr_ips"][0], "10.0.0.2/32");
  // In use: not deletable.
  expect_code({"delete-security-group", "--group-id", sg_web}, "DependencyViolation");

  // The CLI shows addresses in its table and text forms.
  auto table = cli(cp_, {"describe-instances"});
  EXPECT_NE(table.out.find("PRIVATE IP"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find(da["private_ip_address"].get<std::string>()), std::string::npos) << table.out;
  auto text = cli(cp_, {"describe-instances", "--instance-ids", ib, "--output", "text"});
  EXPECT_NE(text.out.find("NETWORKINTERFACES\t" + db["network_interfaces"][0]["network_interface_id"].get<std::string>()),
            std::string::npos)
      << text.out;
  EXPECT_NE(text.out.find("GROUPS\t" + sg_web + "\tweb"), std::string::npos) << text.out;
  EXPECT_EQ(audit_verify().status, 0);
}

// EC2 keeps an instance's private address across stop/start and releases it at
// termination; the card serves the ENI only while the instance runs.
TEST_F(ControllerTest, StopStartKeepsTheAddressTerminateFreesIt) {
  auto r = cli(cp_, {"run-instances", "--image-id", "ami-builtin", "--instance-type", "t3.nano", "--count", "2", "--wait",
                     "--output", "json"});
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  const Json rj = Json::parse(r.out);
  const std::string a = rj["instances"][0]["instance_id"], b = rj["instances"][1]["instance_id"];
  const Json before = instance(a);
  const std::string ip = before["private_ip_address"], mac = before["mac_address"];
  const std::string eni = before["network_interfaces"][0]["network_interface_id"];
  ASSERT_FALSE(card_eni(eni).empty());

  ASSERT_EQ(cli(cp_, {"stop-instances", "--instance-ids", a, "--wait"}).status, 0);
  Json stopped = instance(a);
  EXPECT_EQ(stopped["private_ip_address"], ip) << stopped.dump();
  EXPECT_EQ(stopped["network_interfaces"][0]["network_interface_id"], eni);
  EXPECT_TRUE(card_eni(eni).empty()) << "a stopped instance's ENI is still on the card";
  ASSERT_EQ(cli(cp_, {"start-instances", "--instance-ids", a, "--wait"}).status, 0);
  const Json started = instance(a);
  EXPECT_EQ(started["private_ip_address"], ip);
  EXPECT_EQ(started["mac_address"], mac);
  EXPECT_TRUE(eventually([&] { return card_eni(eni).value("connected", false); })) << enis_on_card().dump();
  EXPECT_EQ(card_eni(eni)["ip"], ip);

  ASSERT_EQ(cli(cp_, {"terminate-instances", "--instance-ids", a, "--wait"}).status, 0);
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/net/" + eni)) << "the ENI's socket directory outlived the instance";
  const Json gone = instance(a);
  EXPECT_EQ(gone.value("private_ip_address", ""), "") << gone.dump();
  EXPECT_TRUE(!gone.contains("network_interfaces") || gone["network_interfaces"].empty()) << gone.dump();
  EXPECT_TRUE(card_eni(eni).empty());
  EXPECT_EQ(enis_on_card().size(), 1u) << "b's ENI stays: " << enis_on_card().dump();
  EXPECT_EQ(cli_json(cp_, {"describe-subnets"})["subnets"][0]["available_ip_address_count"], 250);
  // The released address is the lowest free one again.
  const std::string c = run_one();
  ASSERT_FALSE(c.empty());
  EXPECT_EQ(instance(c)["private_ip_address"], ip);
  EXPECT_NE(instance(c)["network_interfaces"][0]["network_interface_id"], eni);
  ASSERT_TRUE(wait_state(c, "running"));
  EXPECT_EQ(cli(cp_, {"terminate-instances", "--instance-ids", b, c, "--wait"}).status, 0);
  EXPECT_TRUE(enis_on_card().empty()) << enis_on_card().dump();
}

// kill -9 of an instance's network card: restarted, the VPC, the groups with their
// rules, its ENI and its neighbours re-added; the other instance's card is untouched;
// a controller restart adopts the cards.
TEST_F(ControllerTest, KilledNetworkCardIsRestartedWithItsEnis) {
  auto r = cli(cp_, {"run-instances", "--image-id", "ami-builtin", "--instance-type", "t3.nano", "--count", "2", "--wait",
                     "--output", "json"});
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  const Json rj = Json::parse(r.out);
  const std::string a = rj["instances"][0]["instance_id"], b = rj["instances"][1]["instance_id"];
  const std::string sg = default_group();
  ASSERT_EQ(cli(cp_, {"authorize-security-group-ingress", "--group-id", sg, "--protocol", "tcp", "--port", "80",
                      "--cidr", "0.0.0.0/0"})
                .status,
            0);
  std::set<std::string> enis;
  for (const auto& id : {a, b}) enis.insert(instance(id)["network_interfaces"][0]["network_interface_id"].get<std::string>());
  auto on_card = [&] {
    std::set<std::string> got;
    for (const auto& e : enis_on_card()) got.insert(e.value("id", ""));
    return got;
  };
  ASSERT_EQ(on_card(), enis);
  const std::string eni_a = instance(a)["network_interfaces"][0]["network_interface_id"];
  const std::string eni_b = instance(b)["network_interfaces"][0]["network_interface_id"];
  // One card per instance, each knowing the other's ENI as a neighbour.
  EXPECT_EQ(neighbours_of(a), std::set<std::string>{eni_b});
  EXPECT_EQ(neighbours_of(b), std::set<std::string>{eni_a});
  const pid_t card = jailed_pid("card-net", a), card_b = jailed_pid("card-net", b);
  ASSERT_GT(card, 0);
  ASSERT_GT(card_b, 0);
  ASSERT_NE(card, card_b);
  ::kill(card, SIGKILL);
  pid_t now = 0;
  ASSERT_TRUE(eventually([&] {
    now = jailed_pid("card-net", a);
    return now != 0 && now != card && on_card() == enis && neighbours_of(a) == std::set<std::string>{eni_b};
  })) << "ENIs on the new card: " << enis_on_card().dump();
  EXPECT_EQ(jailed_pid("card-net", b), card_b) << "B's card was touched";
  EXPECT_EQ(neighbours_of(b), std::set<std::string>{eni_a});
  EXPECT_EQ(card_rules(sg, "ingress"), (std::set<std::string>{"-1 all " + sg, "tcp 80-80 0.0.0.0/0"}));
  // The hypervisors reconnect by themselves; the instances never stopped.
  EXPECT_TRUE(eventually([&] {
    for (const auto& e : enis_on_card())
      if (!e.value("connected", false)) return false;
    return true;
  })) << enis_on_card().dump();
  EXPECT_EQ(state(a), "running");
  EXPECT_EQ(state(b), "running");
  auto m = cli(cp_, {"get-metrics"});
  EXPECT_NE(m.out.find("azote_card_net_restarts_total 1"), std::string::npos) << m.out;
  EXPECT_NE(m.out.find("azote_network_interfaces 2"), std::string::npos) << m.out;

  // The controller dies; the card and its ENIs live on and are adopted, not replaced.
  stop_controller(SIGKILL);
  start_controller();
  EXPECT_EQ(jailed_pid("card-net", a), now);
  EXPECT_EQ(jailed_pid("card-net", b), card_b);
  EXPECT_EQ(on_card(), enis);
  EXPECT_TRUE(eventually([&] { return neighbours_of(a) == std::set<std::string>{eni_b}; })) << "after adoption";
  ASSERT_EQ(cli(cp_, {"stop-instances", "--instance-ids", a, "--wait"}).status, 0);
  EXPECT_EQ(on_card().size(), 1u);
  EXPECT_EQ(jailed_pid("card-net", a), 0) << "a stopped instance's card runs on";
  EXPECT_TRUE(neighbours_of(b).empty()) << "B's card still knows the stopped instance's ENI";
  EXPECT_EQ(cli(cp_, {"terminate-instances", "--instance-ids", a, b, "--wait"}).status, 0);
  EXPECT_TRUE(on_card().empty());
}

// Two instances, each with its own network card: the built-in guest of one pings the
// other's. The frames cross from one card process to the other through the receiver's
// inbox socket; the receiving card applies its ENI's groups, whose member addresses it
// knows from its neighbours: without the default group's rule for its own members, the
// pings are refused there.
TEST_F(ControllerTest, InstancesPingEachOtherThroughTheirOwnNetworkCards) {
  auto image = [&](const std::string& name, const std::string& cmdline) {
    auto o = cli(cp_, {"register-image", "--name", name, "--kernel", AZOTE_GUEST_ELF, "--cmdline", cmdline, "--output", "json"});
    EXPECT_EQ(o.status, 0) << o.out << o.err;
    return o.status == 0 ? Json::parse(o.out).value("image_id", "") : "";
  };
  const std::string echo_image = image("echo", "azote.run=net-echo");
  ASSERT_FALSE(echo_image.empty());
  auto r = cli(cp_, {"run-instances", "--image-id", echo_image, "--instance-type", "t3.nano", "--wait", "--output", "json"});
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  const std::string echo = Json::parse(r.out)["instances"][0]["instance_id"];
  const std::string echo_ip = instance(echo)["private_ip_address"];
  ASSERT_TRUE(console_has(echo, "net-echo ready ip=" + echo_ip, 60s)) << console(echo);
  const std::string ping_image = image("ping", "azote.run=net-ping " + echo_ip + " 3");
  ASSERT_FALSE(ping_image.empty());
  r = cli(cp_, {"run-instances", "--image-id", ping_image, "--instance-type", "t3.nano", "--wait", "--output", "json"});
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  const std::string ping = Json::parse(r.out)["instances"][0]["instance_id"];
  ASSERT_TRUE(console_has(ping, "sent=3 received=", 90s)) << console(ping);
  EXPECT_NE(console(ping).find("sent=3 received=3"), std::string::npos) << console(ping);
  EXPECT_NE(jailed_pid("card-net", echo), jailed_pid("card-net", ping));
  const std::string echo_eni = instance(echo)["network_interfaces"][0]["network_interface_id"];
  EXPECT_GE(card_eni(echo_eni).value("from_neighbours", 0), 3) << card_eni(echo_eni).dump();

  // The default group lets its members in; without that rule the echo's card refuses.
  const std::string sg = default_group();
  ASSERT_EQ(cli(cp_, {"revoke-security-group-ingress", "--group-id", sg, "--protocol", "-1", "--source-group", sg}).status, 0);
  ASSERT_TRUE(wait_state(ping, "stopped", 60s)) << instance(ping).dump();
  ASSERT_EQ(cli(cp_, {"start-instances", "--instance-ids", ping, "--wait"}).status, 0);
  ASSERT_TRUE(eventually([&] { return console(ping).find("sent=3 received=0") != std::string::npos; }, 90s)) << console(ping);
  EXPECT_GE(card_eni(echo_eni)["drops"].value("sg_ingress", 0), 3) << card_eni(echo_eni).dump();
  EXPECT_EQ(cli(cp_, {"terminate-instances", "--instance-ids", echo, ping, "--wait"}).status, 0);
}

// Without a usable network card, only instances that ask for no network interface
// launch; the others fail with an EC2 error that says why.
TEST_F(ControllerTest, WithoutANetworkCardOnlyInstancesWithoutInterfaceRun) {
  // A card that exists but cannot start: the launch ends with the reason; an instance
  // without a network interface runs.
  stop_controller(SIGTERM);
  start_controller({"--card-net", "/bin/false"});
  auto o = cli(cp_, {"run-instances", "--image-id", "ami-builtin", "--instance-type", "t3.nano", "--no-network-interface",
                     "--wait", "--output", "json"});
  ASSERT_EQ(o.status, 0) << o.out << o.err;
  const std::string bare = Json::parse(o.out)["instances"][0]["instance_id"];
  const Json i = instance(bare);
  EXPECT_EQ(i.value("private_ip_address", ""), "") << i.dump();
  EXPECT_TRUE(!i.contains("network_interfaces") || i["network_interfaces"].empty());
  Json r = cli_json(cp_, {"run-instances", "--image-id", "ami-builtin", "--instance-type", "t3.nano"});
  const std::string id = r["instances"][0]["instance_id"];
  ASSERT_TRUE(wait_state(id, "terminated", 30s)) << instance(id).dump();
  const Json t = instance(id);
  EXPECT_EQ(t["state_reason"]["code"], "Server.InternalError") << t.dump();
  EXPECT_NE(t["state_reason"]["message"].get<std::string>().find("network card"), std::string::npos) << t.dump();
  EXPECT_EQ(state(bare), "running") << "the instance without a network interface was affected";
  EXPECT_EQ(cli_json(cp_, {"describe-subnets"})["subnets"][0]["available_ip_address_count"], 251) << "address kept";
  // No card binary at all: refused at once.
  stop_controller(SIGTERM);
  start_controller({"--card-net", dir_ + "/no-such-card"});
  expect_code({"run-instances", "--image-id", "ami-builtin", "--instance-type", "t3.nano"}, "Unsupported");
  o = cli(cp_, {"run-instances", "--image-id", "ami-builtin", "--instance-type", "t3.nano", "--no-network-interface",
                "--wait"});
  EXPECT_EQ(o.status, 0) << o.out << o.err;
  for (const auto& p : jailed()) EXPECT_NE(p.value("role", ""), "card-net") << p.dump();
}

// Bad network inputs get EC2's codes, exit 254 and change nothing; the new calls are
// audited and follow the roles (operator: describe only).
TEST_F(ControllerTest, NetworkBadInputsGiveEc2Codes) {
  const std::string sg = default_group();
  const std::string app = cli_json(cp_, {"create-security-group", "--group-name", "app", "--description", "d"})["group_id"];
  const std::string db = cli_json(cp_, {"create-security-group", "--group-name", "db", "--description", "d"})["group_id"];
  ASSERT_EQ(cli(cp_, {"authorize-security-group-ingress", "--group-id", db, "--protocol", "tcp", "--port", "5432",
                      "--source-group", app})
                .status,
            0);
  const Json before = cli_json(cp_, {"describe-security-groups"});
  const std::string nf = "0123456789abcdef0";
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"run-instances", "--image-id", "ami-builtin", "--subnet-id", "subnet-x"}, "InvalidSubnetID.Malformed"},
      {{"run-instances", "--image-id", "ami-builtin", "--subnet-id", "subnet-" + nf}, "InvalidSubnetID.NotFound"},
      {{"run-instances", "--image-id", "ami-builtin", "--security-group-ids", "sg-x"}, "InvalidGroupId.Malformed"},
      {{"run-instances", "--image-id", "ami-builtin", "--security-group-ids", sg, "sg-" + nf}, "InvalidGroup.NotFound"},
      {{"run-instances", "--image-id", "ami-builtin", "--metadata-options", "HttpTokens=maybe"}, "InvalidParameterValue"},
      {{"run-instances", "--image-id", "ami-builtin", "--no-network-interface", "--security-group-ids", sg},
       "InvalidParameterCombination"},
      {{"create-security-group", "--group-name", "default", "--description", "d"}, "InvalidGroup.Reserved"},
      {{"create-security-group", "--group-name", "app", "--description", "d"}, "InvalidGroup.Duplicate"},
      {{"create-security-group", "--group-name", "sg-app", "--description", "d"}, "InvalidParameterValue"},
      {{"create-security-group", "--group-name", "x", "--description", "d", "--vpc-id", "vpc-" + nf}, "InvalidVpcID.NotFound"},
      {{"delete-security-group", "--group-id", sg}, "CannotDelete"},
      {{"delete-security-group", "--group-id", app}, "DependencyViolation"},  // db's rule names it
      {{"delete-security-group", "--group-id", "sg-" + nf}, "InvalidGroup.NotFound"},
      {{"delete-security-group", "--group-id", "sg-zz"}, "InvalidGroupId.Malformed"},
      {{"authorize-security-group-ingress", "--group-id", app, "--protocol", "tcp", "--cidr", "0.0.0.0/0"},
       "InvalidParameterValue"},  // TCP needs ports
      {{"authorize-security-group-ingress", "--group-id", app, "--protocol", "gre2", "--cidr", "0.0.0.0/0"},
       "InvalidParameterValue"},
      {{"authorize-security-group-ingress", "--group-id", app, "--protocol", "tcp", "--port", "22", "--cidr", "10.0.0.1/8"},
       "InvalidParameterValue"},
      {{"authorize-security-group-ingress", "--group-id", app, "--protocol", "tcp", "--port", "22"}, "MissingParameter"},
      {{"authorize-security-group-ingress", "--group-id", app, "--port", "22", "--cidr", "0.0.0.0/0"}, "MissingParameter"},
      {{"authorize-security-group-ingress", "--group-id", app, "--protocol", "tcp", "--port", "22", "--source-group",
        "sg-" + nf},
       "InvalidGroup.NotFound"},
      {{"authorize-security-group-ingress", "--group-id", "sg-" + nf, "--protocol", "-1", "--cidr", "0.0.0.0/0"},
       "InvalidGroup.NotFound"},
      {{"authorize-security-group-ingress", "--group-id", db, "--protocol", "tcp", "--port", "5432", "--source-group", app},
       "InvalidPermission.Duplicate"},
      {{"authorize-security-group-egress", "--group-id", app, "--protocol", "-1", "--cidr", "0.0.0.0/0"},
       "InvalidPermission.Duplicate"},  // a new group's default egress rule
      {{"revoke-security-group-ingress", "--group-id", app, "--protocol", "tcp", "--port", "22", "--cidr", "0.0.0.0/0"},
       "InvalidPermission.NotFound"},
      {{"revoke-security-group-egress", "--group-id", app, "--protocol", "udp", "--port", "53", "--cidr", "0.0.0.0/0"},
       "InvalidPermission.NotFound"},
      {{"describe-security-groups", "--group-ids", "sg-" + nf}, "InvalidGroup.NotFound"},
      {{"describe-subnets", "--subnet-ids", "subnet-" + nf}, "InvalidSubnetID.NotFound"},
      {{"describe-vpcs", "--vpc-ids", "vpc-x"}, "InvalidVpcID.Malformed"},
  };
  for (const auto& [args, code] : cases) expect_code(args, code);
  // Six groups on one interface.
  std::vector<std::string> six{"run-instances", "--image-id", "ami-builtin", "--security-group-ids", sg, app, db};
  for (int i = 0; i < 3; ++i)
    six.push_back(cli_json(cp_, {"create-security-group", "--group-name", "g" + std::to_string(i), "--description", "d"})["group_id"]);
  expect_code(six, "SecurityGroupsPerInterfaceLimitExceeded");
  EXPECT_EQ(cli_json(cp_, {"describe-instances"}).value("instances", Json::array()).size(), 0u) << "an instance was made";
  const Json after = cli_json(cp_, {"describe-security-groups"});
  EXPECT_EQ(after["security_groups"].size(), before["security_groups"].size() + 3);
  for (const auto& g : before["security_groups"]) {
    for (const auto& h : after["security_groups"]) {
      if (h["group_id"] == g["group_id"]) {
        EXPECT_EQ(h.dump(), g.dump()) << "a refused call changed a group";
      }
    }
  }
  // A group no one uses goes.
  EXPECT_EQ(cli(cp_, {"delete-security-group", "--group-id", six.back()}).status, 0);
  expect_code({"describe-security-groups", "--group-ids", six.back()}, "InvalidGroup.NotFound");

  // Roles and audit.
  const std::string op = issue("operator", "net-ops");
  for (const std::vector<std::string>& read :
       {std::vector<std::string>{"describe-vpcs"}, {"describe-subnets"}, {"describe-security-groups"}})
    EXPECT_EQ(cli(op, read).status, 0) << read[0];
  for (const std::vector<std::string>& write :
       {std::vector<std::string>{"create-security-group", "--group-name", "x", "--description", "d"},
        {"delete-security-group", "--group-id", app},
        {"authorize-security-group-ingress", "--group-id", app, "--protocol", "-1", "--cidr", "0.0.0.0/0"},
        {"authorize-security-group-egress", "--group-id", app, "--protocol", "-1", "--cidr", "0.0.0.0/0"},
        {"revoke-security-group-ingress", "--group-id", db, "--protocol", "-1", "--cidr", "0.0.0.0/0"},
        {"revoke-security-group-egress", "--group-id", app, "--protocol", "-1", "--cidr", "0.0.0.0/0"}}) {
    auto o = cli(op, write);
    EXPECT_EQ(o.status, 254) << write[0];
    EXPECT_NE(o.err.find("UnauthorizedOperation"), std::string::npos) << o.err;
  }
  std::map<std::string, std::set<std::string>> outcomes;
  for (const auto& rec : audit_records()) outcomes[rec.value("method", "")].insert(rec.value("outcome", ""));
  for (const char* m : {"CreateSecurityGroup", "DeleteSecurityGroup", "AuthorizeSecurityGroupIngress",
                        "AuthorizeSecurityGroupEgress", "RevokeSecurityGroupIngress", "RevokeSecurityGroupEgress"})
    EXPECT_TRUE(outcomes[m].count("denied") && outcomes[m].count("failed")) << m;
  for (const char* m : {"DescribeVpcs", "DescribeSubnets", "DescribeSecurityGroups"})
    EXPECT_TRUE(outcomes[m].count("allowed") && outcomes[m].count("failed")) << m;
  EXPECT_TRUE(outcomes["CreateSecurityGroup"].count("allowed"));
  EXPECT_EQ(audit_verify().status, 0);
}

}  // namespace
}  // namespace azote::test
