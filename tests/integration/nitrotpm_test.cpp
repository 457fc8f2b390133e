// NitroTPM through a whole host: an image registered with --tpm-support v2.0 gets, per
// instance, an azote-card-tpm (libtpms) in the instance's jail, its boot measured into
// it by azote-hv, read back by the built-in guest through the CRB window and printed on
// the console the CLI shows; the values recomputed here with OpenSSL from the files.
// The TPM's state is kept (encrypted) across stop and start and removed at terminate.
#include <openssl/evp.h>

#include "controller_fixture.hpp"
#include "digest.hpp"

namespace azote::test {
namespace {



size_t count(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

class NitroTpm : public ControllerTest {
 protected:
  std::string register_image(const std::string& name, const std::string& cmdline, bool tpm) {
    std::vector<std::string> args = {"register-image", "--name", name, "--kernel", AZOTE_GUEST_ELF, "--cmdline", cmdline,
                                     "--output", "json"};
    if (tpm) args.insert(args.end(), {"--tpm-support", "v2.0"});
    auto o = cli(cp_, args);
    EXPECT_EQ(o.status, 0) << o.out << o.err;
    return o.status == 0 ? Json::parse(o.out).value("image_id", "") : "";
  }
  // A running instance of the built-in init program with a TPM (idles once "ready").
  std::string running_tpm_instance() {
    const std::string id = launch(register_image("tpm-init", "azote.run=init", true));
    EXPECT_FALSE(id.empty());
    if (id.empty()) return id;
    EXPECT_TRUE(wait_state(id, "running", 60s)) << instance(id).dump();
    EXPECT_TRUE(console_has(id, "azote-guest: ready", 60s)) << console(id);
    return id;
  }
  // tpm2-tools' TCTI for the instance's TPM card (its socket, which root reaches).
  std::string tcti(const std::string& id) const { return "cmd:socat - UNIX-CONNECT:" + dir_ + "/instances/" + id + "/run/tpm.sock"; }
  std::string launch(const std::string& image) {
    auto o = cli(cp_, {"run-instances", "--image-id", image, "--instance-type", "t3.nano", "--no-network-interface",
                       "--output", "json"});
    EXPECT_EQ(o.status, 0) << o.out << o.err;
    return o.status == 0 ? Json::parse(o.out)["instances"][0].value("instance_id", "") : "";
  }
};

TEST_F(NitroTpm, TheGuestReadsItsMeasuredBootFromItsOwnTpmKeptAcrossStopAndStart) {
  const std::string kernel = slurp(AZOTE_GUEST_ELF);
  const std::string a = register_image("tpm-a", "azote.run=tpm-pcrs", true);
  const std::string b = register_image("tpm-b", "azote.run=tpm-pcrs ", true);  // one byte more
  ASSERT_FALSE(a.empty());
  ASSERT_FALSE(b.empty());
  const Json images = cli_json(cp_, {"describe-images", "--image-ids", a});
  EXPECT_EQ(images["images"][0].value("tpm_support", ""), "v2.0") << images.dump();
  EXPECT_NE(register_image("tpm-a-plain", "azote.run=tpm-pcrs", false), a) << "TPM support is part of the image";
  auto bad = cli(cp_, {"register-image", "--name", "x", "--kernel", AZOTE_GUEST_ELF, "--tpm-support", "v1.2"});
  EXPECT_NE(bad.status, 0);
  EXPECT_NE(bad.err.find("--tpm-support \"v1.2\": the only value is v2.0"), std::string::npos) << bad.err;

  const std::string id = launch(a);
  ASSERT_FALSE(id.empty());
  ASSERT_TRUE(console_has(id, "azote-guest: tpm-pcrs ok", 60s)) << console(id);
  auto p = guest_tpm_pcrs(console(id));
  EXPECT_EQ(p["sha256 4"], tpm_pcr_of(EVP_sha256(), kernel));
  EXPECT_EQ(p["sha256 12"], tpm_pcr_of(EVP_sha256(), "azote.run=tpm-pcrs"));
  if (p.count("sha384 4")) {
    EXPECT_EQ(p["sha384 4"], tpm_pcr_of(EVP_sha384(), kernel));
  }
  EXPECT_EQ(p["sha256 9"], std::string(64, '0')) << "no initrd";
  ASSERT_TRUE(wait_state(id, "stopped", 60s)) << "the program exits: the instance stops";

  // Its state: in the instance's directory, encrypted (the card's format, no plaintext
  // TPM state), made once.
  const std::string state = dir_ + "/instances/" + id + "/tpm.state";
  const std::string s = slurp(state);
  ASSERT_GT(s.size(), 16u);
  EXPECT_EQ(s.substr(0, 8), "AZTPMST1");
  const std::string log = dir_ + "/instances/" + id + "/card-tpm.log";
  EXPECT_EQ(count(slurp(log), "manufactured a new TPM"), 1u) << slurp(log);

  // Started again: the same TPM (not manufactured again), reset, measured afresh.
  auto o = cli(cp_, {"start-instances", "--instance-ids", id});
  ASSERT_EQ(o.status, 0) << o.err;
  ASSERT_TRUE(wait_state(id, "stopped", 60s));
  EXPECT_EQ(count(console(id), "azote-guest: tpm-pcrs ok"), 2u) << console(id);
  const auto again = guest_tpm_pcrs(console(id));
  EXPECT_EQ(again.at("sha256 4"), p["sha256 4"]) << "a fresh boot: extended once, from zero";
  EXPECT_EQ(again.at("sha256 12"), p["sha256 12"]);
  EXPECT_EQ(count(slurp(log), "manufactured a new TPM"), 1u) << slurp(log);

  // One byte of command line: PCR 12 moves, PCR 4 does not.
  const std::string other = launch(b);
  ASSERT_TRUE(console_has(other, "azote-guest: tpm-pcrs ok", 60s)) << console(other);
  const auto q = guest_tpm_pcrs(console(other));
  EXPECT_EQ(q.at("sha256 4"), p["sha256 4"]);
  EXPECT_EQ(q.at("sha256 12"), tpm_pcr_of(EVP_sha256(), "azote.run=tpm-pcrs "));
  EXPECT_NE(q.at("sha256 12"), p["sha256 12"]);

  // Terminated: its TPM goes with it.
  o = cli(cp_, {"terminate-instances", "--instance-ids", id, "--wait"});
  ASSERT_EQ(o.status, 0) << o.err;
  EXPECT_FALSE(std::filesystem::exists(state));
}

// A quote of the running instance's TPM (its card's socket, reached by root on the host as
// a verifier's agent would reach NitroTPM through the guest), made and checked by
// tpm2-tools: tpm2_checkquote accepts it with its nonce, the quoted PCRs are the
// measured boot as recomputed here, and another nonce is refused.
TEST_F(NitroTpm, AQuoteOfTheRunningInstancesTpmPassesTpm2Checkquote) {
  for (const char* tool : {"socat", "tpm2_createek", "tpm2_createak", "tpm2_quote", "tpm2_checkquote", "tpm2_flushcontext"})
    if (!find_in_path(tool)) GTEST_SKIP() << "SKIPPED: " << tool << " is not installed (scripts/deps.sh installs tpm2-tools and socat)";
  const std::string id = running_tpm_instance();
  ASSERT_FALSE(HasFailure());
  const std::string f = dir_ + "/quote-";
  auto tpm2 = [&](std::vector<std::string> argv) {
    argv.insert(argv.begin() + 1, {"-T", tcti(id)});
    auto o = run(argv, 60s);
    EXPECT_EQ(o.status, 0) << argv[0] << ": " << o.err;
    return o.out;
  };
  auto flush = [&] {
    for (const char* what : {"-t", "-s", "-l"}) tpm2({"tpm2_flushcontext", what});
  };
  tpm2({"tpm2_createek", "-G", "ecc", "-c", f + "ek.ctx", "-u", f + "ek.pub"});
  flush();
  tpm2({"tpm2_createak", "-C", f + "ek.ctx", "-c", f + "ak.ctx", "-G", "ecc", "-g", "sha256", "-s", "ecdsa", "-u",
        f + "ak.pem", "-f", "pem", "-n", f + "ak.name"});
  flush();
  const std::string nonce = "a1b2c3d4e5f60718";
  const std::string quoted = tpm2({"tpm2_quote", "-c", f + "ak.ctx", "-l", "sha256:4,9,12", "-q", nonce, "-m", f + "msg",
                                   "-s", f + "sig", "-o", f + "pcrs", "-g", "sha256"});
  flush();
  EXPECT_NE(quoted.find("4 : 0x" + upper(tpm_pcr_of(EVP_sha256(), slurp(AZOTE_GUEST_ELF)))), std::string::npos) << quoted;
  EXPECT_NE(quoted.find("12: 0x" + upper(tpm_pcr_of(EVP_sha256(), "azote.run=init"))), std::string::npos) << quoted;
  auto check = [&](const std::string& q) {
    return run({"tpm2_checkquote", "-u", f + "ak.pem", "-m", f + "msg", "-s", f + "sig", "-f", f + "pcrs", "-g", "sha256",
                "-q", q},
               30s);
  };
  const auto good = check(nonce);
  EXPECT_EQ(good.status, 0) << good.out << good.err;
  EXPECT_NE(check("00112233").status, 0) << "another nonce";
  // The guest keeps running beside it.
  EXPECT_EQ(state(id), "running");

  // The card is confined as the instance's other processes: its uid, its own cgroup
  // leaf, no capabilities, its seccomp filter, no new privileges.
  Json card, hv;
  for (const auto& p : jailed()) {
    if (p.value("instance", "") != id) continue;
    if (p.value("role", "") == "card-tpm") card = p;
    if (p.value("role", "") == "hv") hv = p;
  }
  ASSERT_TRUE(card.is_object()) << jailed().dump();
  ASSERT_TRUE(hv.is_object()) << jailed().dump();
  EXPECT_EQ(card["uid"], hv["uid"]);
  EXPECT_NE(card["uid"].get<int64_t>(), 0);
  EXPECT_NE(card.value("cgroup", "").find(id + "/card-tpm"), std::string::npos) << card.dump();
  const std::string status = slurp("/proc/" + std::to_string(card.value("pid", 0)) + "/status");
  EXPECT_NE(status.find("\nCapEff:\t0000000000000000"), std::string::npos) << status;
  EXPECT_NE(status.find("\nSeccomp:\t2"), std::string::npos) << status;
  EXPECT_NE(status.find("\nNoNewPrivs:\t1"), std::string::npos) << status;
}

// A controller killed and restarted by its launcher adopts the running instance's TPM
// card: the same process goes on serving the guest's TPM (its PCRs still the boot's);
// stop ends it, start gives the instance a new card on the same state and a new boot.
TEST_F(NitroTpm, ARestartedControllerAdoptsTheTpmCardAndTheGuestKeepsItsPcrs) {
  for (const char* tool : {"socat", "tpm2_pcrread"})
    if (!find_in_path(tool)) GTEST_SKIP() << "SKIPPED: " << tool << " is not installed (scripts/deps.sh installs tpm2-tools and socat)";
  const std::string id = running_tpm_instance();
  ASSERT_FALSE(HasFailure());
  const std::string want = "4 : 0x" + upper(tpm_pcr_of(EVP_sha256(), slurp(AZOTE_GUEST_ELF)));
  auto pcr4 = [&] {
    auto o = run({"tpm2_pcrread", "-T", tcti(id), "sha256:4"}, 30s);
    return o.out + o.err;
  };
  EXPECT_NE(pcr4().find(want), std::string::npos) << pcr4();
  const pid_t card = jailed_pid("card-tpm", id);
  ASSERT_GT(card, 0);

  const pid_t controller = controller_of(ctl_->pid());
  ASSERT_GT(controller, 0);
  ASSERT_EQ(::kill(controller, SIGKILL), 0);
  ASSERT_TRUE(eventually([&] {
    const pid_t again = controller_of(ctl_->pid());
    return again != 0 && again != controller && cli(cp_, {"describe-instances"}).status == 0;
  })) << "the launcher did not start the controller again";
  EXPECT_EQ(state(id), "running");
  EXPECT_EQ(jailed_pid("card-tpm", id), card) << "the same card serves the guest's TPM";
  EXPECT_NE(pcr4().find(want), std::string::npos) << "its PCRs are still the boot's: " << pcr4();
  EXPECT_NE(slurp(dir_ + "/controller.log").find("adopted the TPM card of " + id), std::string::npos)
      << slurp(dir_ + "/controller.log");

  auto o = cli(cp_, {"stop-instances", "--instance-ids", id, "--wait"});
  ASSERT_EQ(o.status, 0) << o.err;
  EXPECT_TRUE(eventually([&] { return jailed_pid("card-tpm", id) == 0; })) << "stop ends the TPM card";
  o = cli(cp_, {"start-instances", "--instance-ids", id, "--wait"});
  ASSERT_EQ(o.status, 0) << o.err;
  ASSERT_TRUE(wait_state(id, "running", 60s));
  const pid_t second = jailed_pid("card-tpm", id);
  EXPECT_GT(second, 0);
  EXPECT_NE(second, card);
  EXPECT_TRUE(eventually([&] { return pcr4().find(want) != std::string::npos; })) << "a new boot, measured once: " << pcr4();
}

// The guest's own attestation document, NitroTPM-style: `attest NONCE` in the guest asks
// its TPM card (vendor command), which asks azote-rot over the connection the launcher
// bound to the instance; the document the guest prints on its console passes the
// independent verifier against the host's pinned root, carries the nonce, the module id
// "<instance>-tpm" and, under "nitrotpm_pcrs", the TPM's SHA-384 PCRs as the measured
// boot left them, which move with one byte of kernel or command line. Under a signed
// release (in development mode every PCR in a document is zero).
TEST_F(NitroTpm, TheGuestsAttestationDocumentPassesTheIndependentVerifier) {
  const std::string rel = dir_ + "-release";
  Json host;
  ASSERT_NO_FATAL_FAILURE(restart_under_release(rel, &host));
  if (IsSkipped()) return;

  const std::string kernel = slurp(AZOTE_GUEST_ELF);
  std::ofstream(rel + "/kernel+1", std::ios::binary) << kernel << '\0';
  struct Case {
    std::string kernel_file, cmdline, id;
    Json verified;
  };
  std::vector<Case> cases{{AZOTE_GUEST_ELF, "azote.run=attest a1b2c3d4 cafe", "", {}},
                          {AZOTE_GUEST_ELF, "azote.run=attest a1b2c3d4 cafd", "", {}},
                          {rel + "/kernel+1", "azote.run=attest a1b2c3d4 cafe", "", {}}};
  for (auto& c : cases) {
    auto o = cli(cp_, {"register-image", "--name", "att-" + std::to_string(&c - cases.data()), "--kernel", c.kernel_file,
                       "--cmdline", c.cmdline, "--tpm-support", "v2.0", "--output", "json"});
    ASSERT_EQ(o.status, 0) << o.out << o.err;
    c.id = launch(Json::parse(o.out).value("image_id", ""));
    ASSERT_FALSE(c.id.empty());
    ASSERT_TRUE(console_has(c.id, "azote-guest: attestation-document ", 60s)) << console(c.id) << slurp(dir_ + "/controller.log");
    ASSERT_TRUE(wait_state(c.id, "stopped", 60s)) << "the program prints the whole line, then exits";
    std::string b64;
    for (const auto& l : lines(console(c.id)))
      if (l.rfind("azote-guest: attestation-document ", 0) == 0) b64 = l.substr(std::string("azote-guest: attestation-document ").size());
    std::ofstream(rel + "/doc.b64") << b64;
    const std::string sha384_kernel = tpm_pcr_of(EVP_sha384(), slurp(c.kernel_file));
    const std::string sha384_cmdline = tpm_pcr_of(EVP_sha384(), c.cmdline);
    o = run({"/usr/bin/python3", AZOTE_SOURCE_DIR "/tests/tools/verify_attestation.py", "--root", rel + "/root.pem",
             rel + "/doc.b64", "--nonce", "a1b2c3d4", "--max-age", "120", "--expect-pcr", "4=" + sha384_kernel,
             "--expect-pcr", "12=" + sha384_cmdline},
            30s);
    ASSERT_EQ(o.status, 0) << c.cmdline << ": " << o.out << o.err;
    c.verified = Json::parse(o.out);
    EXPECT_EQ(c.verified["module_id"], c.id + "-tpm");
    EXPECT_EQ(c.verified["pcrs_key"], "nitrotpm_pcrs");
    EXPECT_EQ(c.verified["debug"], false);
    // Another nonce, or the document from another host's root: refused.
    o = run({"/usr/bin/python3", AZOTE_SOURCE_DIR "/tests/tools/verify_attestation.py", "--root", rel + "/root.pem",
             rel + "/doc.b64", "--nonce", "a1b2c3d5"},
            30s);
    EXPECT_EQ(o.status, 1) << o.out << o.err;
  }
  EXPECT_EQ(cases[0].verified["user_data"], "cafe");
  EXPECT_EQ(cases[1].verified["user_data"], "cafd");
  // One byte of command line moves PCR 12 only; one byte of kernel PCR 4 only.
  EXPECT_NE(cases[1].verified["pcrs"]["12"], cases[0].verified["pcrs"]["12"]);
  EXPECT_EQ(cases[1].verified["pcrs"]["4"], cases[0].verified["pcrs"]["4"]);
  EXPECT_NE(cases[2].verified["pcrs"]["4"], cases[0].verified["pcrs"]["4"]);
  EXPECT_EQ(cases[2].verified["pcrs"]["12"], cases[0].verified["pcrs"]["12"]);
  // A document for one instance names that instance: the card cannot ask for another's.
  EXPECT_NE(cases[0].verified["module_id"], cases[1].verified["module_id"]);
  std::filesystem::remove_all(rel);
}

// An image without TPM support gets no TPM card and no TPM window.
TEST_F(NitroTpm, AnImageWithoutTpmSupportHasNoTpm) {
  const std::string plain = register_image("plain", "azote.run=tpm-pcrs", false);
  const std::string id = launch(plain);
  ASSERT_FALSE(id.empty());
  ASSERT_TRUE(wait_state(id, "stopped", 60s));
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/instances/" + id + "/card-tpm.log"));
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/instances/" + id + "/tpm.state"));
  // Its guest's first touch of 0xfed40000 is an MMIO nothing claims: the VM ends (84).
  EXPECT_NE(instance(id).dump().find("the hypervisor exited with status 84"), std::string::npos) << instance(id).dump();
}

}  // namespace
}  // namespace azote::test
