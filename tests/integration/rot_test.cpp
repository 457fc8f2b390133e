// azote-rot, the real binary: the device secret is made once and guarded, every layer's
// identity follows its measurement (the DICE property, end to end), and its control
// socket signs with the attestation key, checked by openssl, never revealing a secret.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "control/control.hpp"
#include "process.hpp"

namespace azote::test {
namespace {

using namespace std::chrono_literals;
using control::Json;

const std::string kRot = AZOTE_ROT_BIN;

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

std::string hex(const std::string& b) {
  static const char* d = "0123456789abcdef";
  std::string s;
  for (unsigned char x : b) {
    s += d[x >> 4];
    s += d[x & 15];
  }
  return s;
}

class Rot : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "azote-rot-" + std::to_string(::getpid()) + "-" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    std::ofstream(path("launcher.bin")) << "the launcher's code";
    std::ofstream(path("hv.bin")) << "the hypervisor's code";
  }
  void TearDown() override {
    if (!HasFailure()) std::filesystem::remove_all(dir_);
  }
  std::string path(const std::string& n) const { return dir_ + "/" + n; }
  std::vector<std::string> argv(const std::vector<std::string>& extra = {}) const {
    std::vector<std::string> a{kRot, "--state-dir", path("state"), "--layer", "azote-launcher=" + path("launcher.bin"),
                               "--layer", "azote-hv=" + path("hv.bin") + ",config=--vcpus 2"};
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  }
  // One run without --control: its description.
  Json describe(const std::vector<std::string>& extra = {}) {
    const Outcome o = run(argv(extra), 30s);
    EXPECT_EQ(o.status, 0) << o.err;
    if (o.status != 0) return Json();
    return Json::parse(o.out);
  }
  static std::vector<std::string> keys(const Json& d) {
    std::vector<std::string> k;
    for (const auto& l : d["layers"]) k.push_back(l["public_key_sha256"]);
    return k;
  }
  std::string dir_;
};

TEST_F(Rot, DeviceSecretIsMadeOnceAndEachIdentityFollowsTheMeasurementsBelowIt) {
  const Json first = describe();
  ASSERT_EQ(first["layers"].size(), 3u) << first.dump();
  struct stat st{};
  ASSERT_EQ(::stat(path("state/uds").c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 48);
  EXPECT_EQ(st.st_mode & 0777, 0400u);
  EXPECT_EQ(st.st_uid, ::geteuid());
  const std::string uds = slurp(path("state/uds"));
  EXPECT_EQ(keys(describe()), keys(first)) << "a second start made other identities";
  EXPECT_EQ(slurp(path("state/uds")), uds) << "the device secret changed";

  // One byte of the hypervisor's code: its identity changes, the launcher's and the
  // device's do not.
  std::ofstream(path("hv.bin")) << "the hypervisor's codE";
  const auto hv_changed = keys(describe());
  EXPECT_EQ(hv_changed[0], keys(first)[0]);
  EXPECT_EQ(hv_changed[1], keys(first)[1]);
  EXPECT_NE(hv_changed[2], keys(first)[2]);
  // One byte of the launcher's: it and the hypervisor above it change.
  std::ofstream(path("launcher.bin")) << "the launcher's codE";
  const auto l_changed = keys(describe());
  EXPECT_EQ(l_changed[0], keys(first)[0]);
  EXPECT_NE(l_changed[1], hv_changed[1]);
  EXPECT_NE(l_changed[2], hv_changed[2]);
  // Development mode is another identity for every measured layer, and says so.
  const Json dev = describe({"--mode", "development"});
  EXPECT_EQ(keys(dev)[0], l_changed[0]);
  EXPECT_NE(keys(dev)[1], l_changed[1]);
  EXPECT_NE(keys(dev)[2], l_changed[2]);
  EXPECT_EQ(dev["layers"][2]["mode"], "development");
  // Another device (a new secret) is another identity for everything.
  std::filesystem::remove_all(path("state"));
  const auto other = keys(describe({"--mode", "development"}));
  for (size_t i = 0; i < 3; ++i) EXPECT_NE(other[i], keys(dev)[i]) << i;
}

TEST_F(Rot, AnUnguardedOrForeignDeviceSecretIsRefused) {
  ASSERT_FALSE(describe().is_null());
  const std::string uds = path("state/uds");
  ASSERT_EQ(::chmod(uds.c_str(), 0440), 0);
  Outcome o = run(argv(), 30s);
  EXPECT_EQ(o.status, 71) << o.err;
  EXPECT_NE(o.err.find(uds + " must be owned by uid"), std::string::npos) << o.err;
  EXPECT_EQ(o.out, "");

  ASSERT_EQ(::chmod(uds.c_str(), 0600), 0);
  std::ofstream(uds, std::ios::app) << "x";
  o = run(argv(), 30s);
  EXPECT_EQ(o.status, 71) << o.err;
  EXPECT_NE(o.err.find("holds 49 bytes"), std::string::npos) << o.err;

  std::filesystem::remove(uds);
  std::filesystem::create_symlink(path("hv.bin"), uds);
  o = run(argv(), 30s);
  EXPECT_EQ(o.status, 71) << o.err;
  EXPECT_NE(o.err.find("open " + uds), std::string::npos) << o.err;

  ASSERT_EQ(::chmod(path("state").c_str(), 0755), 0);
  o = run(argv(), 30s);
  EXPECT_EQ(o.status, 71) << o.err;
  EXPECT_NE(o.err.find("no access for group or others"), std::string::npos) << o.err;
}

TEST_F(Rot, BadCommandLinesAndUnmeasurableLayersAreRefusedByName) {
  Outcome o = run({kRot, "--state-dir", path("state")}, 30s);
  EXPECT_EQ(o.status, 64) << o.err;
  EXPECT_NE(o.err.find("--layer"), std::string::npos) << o.err;
  o = run({kRot, "--state-dir", path("state"), "--layer", "azote hv=" + path("hv.bin")}, 30s);
  EXPECT_EQ(o.status, 64) << o.err;
  EXPECT_NE(o.err.find("\"azote hv\""), std::string::npos) << o.err;
  o = run({kRot, "--state-dir", path("state"), "--layer", "azote-hv=" + path("missing")}, 30s);
  EXPECT_EQ(o.status, 66) << o.err;
  EXPECT_NE(o.err.find(path("missing")), std::string::npos) << o.err;
  o = run({kRot, "--state-dir", path("state"), "--layer", "azote-hv=" + dir_}, 30s);
  EXPECT_EQ(o.status, 66) << o.err;
  o = run(argv({"--mode", "debug"}), 30s);
  EXPECT_EQ(o.status, 64) << o.err;
  o = run({kRot, "--help"}, 30s);
  EXPECT_EQ(o.status, 0);
  for (const char* opt : {"--state-dir", "--layer", "--mode", "--control", "--log-level"})
    EXPECT_NE(o.out.find(opt), std::string::npos) << opt;
}

// The control socket: the chain verifies with openssl from the device's certificate;
// the attestation key's signature verifies with the leaf's public key; nothing it says
// contains the device secret.
TEST_F(Rot, ControlSocketSignsWithTheAttestationKeyAndNeverRevealsTheDeviceSecret) {
  if (::access("/usr/bin/openssl", X_OK) != 0) GTEST_SKIP() << "SKIPPED: no /usr/bin/openssl";
  const std::string ctl = path("rot.ctl");
  Process rot(argv({"--control", ctl}));
  ASSERT_TRUE(rot.wait_for_output("\"layers\"", 15s)) << rot.wait(1s).err;
  // It holds the device secret: no core dump of it, ever.
  const std::string limits = slurp("/proc/" + std::to_string(rot.pid()) + "/limits");
  const size_t core = limits.find("Max core file size");
  ASSERT_NE(core, std::string::npos) << limits;
  std::istringstream line(limits.substr(core + 18, limits.find('\n', core) - core - 18));
  std::string soft, hard;
  line >> soft >> hard;
  EXPECT_EQ(soft, "0") << limits;
  EXPECT_EQ(hard, "0") << limits;
  auto d = control::call_once(ctl, {{"op", "describe"}}, 5s);
  ASSERT_TRUE(d.ok()) << d.error().message();
  ASSERT_EQ((*d)["layers"].size(), 3u);
  const auto& L = (*d)["layers"];
  std::ofstream(path("root.pem")) << L[0]["certificate"].get<std::string>();
  std::ofstream(path("inter.pem")) << L[1]["certificate"].get<std::string>();
  std::ofstream(path("leaf.pem")) << L[2]["certificate"].get<std::string>();
  Outcome v = run({"/usr/bin/openssl", "verify", "-x509_strict", "-CAfile", path("root.pem"), "-untrusted",
                   path("inter.pem"), path("leaf.pem")});
  EXPECT_EQ(v.status, 0) << v.out << v.err;

  const std::string payload = "an attestation document's payload";
  auto s = control::call_once(ctl, {{"op", "sign"}, {"payload", hex(payload)}}, 5s);
  ASSERT_TRUE(s.ok()) << s.error().message();
  EXPECT_EQ((*s)["algorithm"], "ECDSA-SHA384");
  std::string sig;
  const std::string sig_hex = (*s)["signature"];
  for (size_t i = 0; i + 1 < sig_hex.size(); i += 2) sig += static_cast<char>(std::stoi(sig_hex.substr(i, 2), nullptr, 16));
  std::ofstream(path("sig"), std::ios::binary) << sig;
  std::ofstream(path("msg"), std::ios::binary) << std::string("azote-rot sign v1", 18) << payload;
  v = run({"/usr/bin/openssl", "x509", "-pubkey", "-noout", "-in", path("leaf.pem")});
  ASSERT_EQ(v.status, 0) << v.err;
  std::ofstream(path("leaf.pub")) << v.out;
  v = run({"/usr/bin/openssl", "dgst", "-sha384", "-verify", path("leaf.pub"), "-signature", path("sig"), path("msg")});
  EXPECT_EQ(v.status, 0) << v.out << v.err;

  for (const Json& bad : {Json{{"op", "sign"}}, Json{{"op", "sign"}, {"payload", "xyz"}}, Json{{"op", "uds"}},
                          Json{{"nop", 1}}}) {
    auto r = control::call_once(ctl, bad, 5s);
    EXPECT_FALSE(r.ok()) << bad.dump() << " was accepted";
  }
  const std::string uds_hex = hex(slurp(path("state/uds")));
  ASSERT_EQ(uds_hex.size(), 96u);
  EXPECT_EQ(d->dump().find(uds_hex), std::string::npos);
  EXPECT_EQ(s->dump().find(uds_hex), std::string::npos);
  EXPECT_EQ(d->dump().find("PRIVATE"), std::string::npos);
  rot.signal(SIGTERM);
  EXPECT_EQ(rot.wait(10s).status, 0);
}

std::string unhex(const std::string& h) {
  std::string b;
  for (size_t i = 0; i + 1 < h.size(); i += 2) b += static_cast<char>(std::stoi(h.substr(i, 2), nullptr, 16));
  return b;
}

// A connection to a Unix stream socket, -1 if refused.
int connect_unix(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  path.copy(a.sun_path, sizeof a.sun_path - 1);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {  // NOLINT
    ::close(fd);
    return -1;
  }
  return fd;
}
// One JSON line out, one back (the control protocol, by hand: the test is the peer).
Json ask_line(int fd, const Json& req) {
  const std::string line = req.dump() + "\n";
  EXPECT_EQ(::send(fd, line.data(), line.size(), MSG_NOSIGNAL), static_cast<ssize_t>(line.size()));
  std::string in;
  char c = 0;
  while (::recv(fd, &c, 1, 0) == 1 && c != '\n') in += c;
  return Json::parse(in, nullptr, false);
}

// Attestation documents (the AWS Nitro format, ENCLAVES.md §1) checked by a verifier
// written on Python's cbor2 and cryptography from the format description
// (tests/tools/verify_attestation.py), against the device certificate pinned as root,
// and its refusals: a flipped byte in the payload, the signature or the leaf certificate,
// another device's root, a stale timestamp, another nonce, a development-mode document.
TEST_F(Rot, AttestationDocumentsPassAnIndependentVerifierAndNothingTamperedDoes) {
  if (::access("/usr/bin/python3", X_OK) != 0 || ::access("/usr/bin/openssl", X_OK) != 0)
    GTEST_SKIP() << "SKIPPED: needs /usr/bin/python3 (cbor2, cryptography) and /usr/bin/openssl";
  const std::string ctl = path("rot.ctl");
  Process rot(argv({"--control", ctl}));
  ASSERT_TRUE(rot.wait_for_output("\"layers\"", 15s)) << rot.wait(1s).err;
  auto d = control::call_once(ctl, {{"op", "describe"}}, 5s);
  ASSERT_TRUE(d.ok()) << d.error().message();
  std::ofstream(path("root.pem")) << (*d)["layers"][0]["certificate"].get<std::string>();
  std::ofstream(path("leaf.pem")) << (*d)["layers"][2]["certificate"].get<std::string>();
  Outcome o = run({"/usr/bin/openssl", "x509", "-in", path("leaf.pem"), "-outform", "DER", "-out", path("leaf.der")});
  ASSERT_EQ(o.status, 0) << o.err;

  const std::string pcr0(96, 'a'), pcr4(96, '4');
  auto attest = [&](const std::string& socket, const std::string& nonce) {
    auto r = control::call_once(socket, {{"op", "attest"}, {"module_id", "i-0123456789abcdef0"},
                                         {"pcrs", {{"0", pcr0}, {"4", pcr4}}}, {"nonce", nonce}, {"user_data", "cafe"}},
                                5s);
    EXPECT_TRUE(r.ok()) << r.error().message();
    return r.ok() ? unhex((*r)["document"].get<std::string>()) : std::string();
  };
  auto verify = [&](const std::string& doc, std::vector<std::string> extra = {}) {
    std::ofstream(path("doc.cbor"), std::ios::binary) << doc;
    std::vector<std::string> a{"/usr/bin/python3", AZOTE_VERIFY_ATTESTATION, "--root", path("root.pem"), path("doc.cbor")};
    a.insert(a.end(), extra.begin(), extra.end());
    return run(a, 30s);
  };
  const std::string doc = attest(ctl, "00112233");
  ASSERT_FALSE(doc.empty());
  o = verify(doc, {"--nonce", "00112233", "--max-age", "60", "--expect-pcr", "0=" + pcr0, "--expect-pcr", "4=" + pcr4});
  ASSERT_EQ(o.status, 0) << o.err;
  const Json out = Json::parse(o.out);
  EXPECT_EQ(out["module_id"], "i-0123456789abcdef0");
  EXPECT_EQ(out["pcrs"]["0"], pcr0);
  EXPECT_EQ(out["user_data"], "cafe");
  EXPECT_EQ(out["debug"], false);
  EXPECT_EQ(out["chain_length"], 3);

  auto refused = [&](const std::string& bad, const std::string& why, std::vector<std::string> extra = {}) {
    const Outcome r = verify(bad, std::move(extra));
    EXPECT_EQ(r.status, 1) << why << ": " << r.out << r.err;
    EXPECT_NE(r.err.find(why), std::string::npos) << r.err;
  };
  // The payload's module id (its text is in the clear in the CBOR).
  std::string bad = doc;
  const size_t module = bad.find("i-0123456789abcdef0");
  ASSERT_NE(module, std::string::npos);
  bad[module + 5] ^= 1;
  refused(bad, "signature does not verify with the leaf");
  bad = doc;
  bad.back() ^= 1;
  refused(bad, "signature does not verify with the leaf");
  // The leaf certificate's subject key, inside the payload: the certificate's own
  // signature (by the layer below) no longer holds.
  bad = doc;
  const std::string leaf = slurp(path("leaf.der"));
  const size_t cert = bad.find(leaf);
  ASSERT_NE(cert, std::string::npos);
  bad[cert + leaf.size() / 2] ^= 1;
  refused(bad, "certificate 0's signature does not verify");
  refused(doc, "nonce is not the one asked for", {"--nonce", "00112234"});
  refused(doc, "PCR 4 is not the expected value", {"--expect-pcr", "4=" + pcr0});
  std::this_thread::sleep_for(1200ms);
  refused(doc, "s old", {"--max-age", "1"});

  // Another device: its documents do not chain to this root.
  const std::string other_ctl = path("other.ctl");
  Process other({kRot, "--state-dir", path("other"), "--layer", "azote-launcher=" + path("launcher.bin"), "--layer",
                 "azote-hv=" + path("hv.bin") + ",config=--vcpus 2", "--control", other_ctl});
  ASSERT_TRUE(other.wait_for_output("\"layers\"", 15s)) << other.wait(1s).err;
  refused(attest(other_ctl, "00"), "cabundle[0] is not the pinned root");
  other.signal(SIGTERM);
  EXPECT_EQ(other.wait(10s).status, 0);

  // Development mode: the same device, but every PCR reads zero, so no policy on
  // measurements can accept it; a verifier that allows debug documents sees them as such.
  rot.signal(SIGTERM);
  EXPECT_EQ(rot.wait(10s).status, 0);
  Process dev(argv({"--control", ctl, "--mode", "development"}));
  ASSERT_TRUE(dev.wait_for_output("\"layers\"", 15s)) << dev.wait(1s).err;
  const std::string dev_doc = attest(ctl, "00");
  refused(dev_doc, "every PCR is zero");
  o = verify(dev_doc, {"--allow-debug"});
  ASSERT_EQ(o.status, 0) << o.err;
  EXPECT_EQ(Json::parse(o.out)["debug"], true);
  EXPECT_EQ(Json::parse(o.out)["pcrs"]["0"], std::string(96, '0'));

  for (const Json& req : {Json{{"op", "attest"}}, Json{{"op", "attest"}, {"module_id", "i-1"}},
                          Json{{"op", "attest"}, {"module_id", "i-1"}, {"pcrs", {{"32", pcr0}}}},
                          Json{{"op", "attest"}, {"module_id", "i-1"}, {"pcrs", {{"0", "00"}}}},
                          Json{{"op", "attest"}, {"module_id", "i-1"}, {"pcrs", {{"0", pcr0}}}, {"nonce", std::string(2050, 'a')}}}) {
    auto r = control::call_once(ctl, req, 5s);
    EXPECT_FALSE(r.ok()) << req.dump() << " was accepted";
  }
  dev.signal(SIGTERM);
  EXPECT_EQ(dev.wait(10s).status, 0);
}

// The TPM cards' socket: a connection serves nothing until bound to an instance (the
// launcher's first line), is bound once, then only gives NitroTPM documents of that
// instance (module_id "<instance>-tpm", the PCRs under "nitrotpm_pcrs"), which the
// independent verifier accepts.
TEST_F(Rot, TpmCardConnectionsAreBoundOnceAndGetNitroTpmDocumentsOfTheirInstanceOnly) {
  if (::access("/usr/bin/python3", X_OK) != 0) GTEST_SKIP() << "SKIPPED: needs /usr/bin/python3 (cbor2, cryptography)";
  const std::string ctl = path("rot.ctl"), tpm = path("rot-tpm.sock");
  Process rot(argv({"--control", ctl, "--tpm-listen", tpm}));
  ASSERT_TRUE(rot.wait_for_output("\"layers\"", 15s)) << rot.wait(1s).err;
  struct stat st{};
  ASSERT_EQ(::stat(tpm.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto d = control::call_once(ctl, {{"op", "describe"}}, 5s);
  ASSERT_TRUE(d.ok());
  std::ofstream(path("root.pem")) << (*d)["layers"][0]["certificate"].get<std::string>();

  const int fd = connect_unix(tpm);
  ASSERT_GE(fd, 0);
  auto ask = [&](const Json& req) { return ask_line(fd, req); };
  std::string pcr4(96, '0');
  pcr4[0] = 'f';
  const Json pcrs = {{"0", std::string(96, '0')}, {"4", pcr4}};
  Json r = ask({{"op", "attest-tpm"}, {"pcrs", pcrs}});
  EXPECT_EQ(r.value("ok", true), false) << "unbound: " << r.dump();
  r = ask({{"op", "bind"}, {"instance", "i-0123"}});
  EXPECT_EQ(r.value("ok", true), false) << "not an instance id: " << r.dump();
  r = ask({{"op", "bind"}, {"instance", "i-0123456789abcdef0"}});
  ASSERT_EQ(r.value("ok", false), true) << r.dump();
  r = ask({{"op", "bind"}, {"instance", "i-fffffffffffffffff"}});
  EXPECT_EQ(r.value("ok", true), false) << "bound once: " << r.dump();
  r = ask({{"op", "attest"}, {"module_id", "i-fffffffffffffffff"}, {"pcrs", pcrs}});
  EXPECT_EQ(r.value("ok", true), false) << "only attest-tpm: " << r.dump();
  r = ask({{"op", "attest-tpm"}, {"module_id", "i-fffffffffffffffff"}, {"pcrs", pcrs}, {"nonce", "a1b2"}});
  ASSERT_EQ(r.value("ok", false), true) << r.dump();
  ::close(fd);
  std::ofstream(path("doc.cbor"), std::ios::binary) << unhex(r["document"]);
  const Outcome o = run({"/usr/bin/python3", AZOTE_VERIFY_ATTESTATION, "--root", path("root.pem"), path("doc.cbor"),
                         "--nonce", "a1b2", "--expect-pcr", "4=" + pcr4},
                        30s);
  ASSERT_EQ(o.status, 0) << o.err;
  const Json v = Json::parse(o.out);
  EXPECT_EQ(v["module_id"], "i-0123456789abcdef0-tpm") << "the bound instance, whatever the request says";
  EXPECT_EQ(v["pcrs_key"], "nitrotpm_pcrs");
}

// An enclave's NSM card reaches azote-rot through the same root-only socket, bound by
// the launcher to one enclave of one instance: it gets only "attest-nsm", documents
// whose module_id is that enclave's id and whose PCRs sit under "pcrs", and a
// debug-mode enclave's documents carry zeros whatever the card reports.
TEST_F(Rot, NsmCardConnectionsAreBoundToOneEnclaveAndDebugModeZeroesItsPcrs) {
  if (::access("/usr/bin/python3", X_OK) != 0) GTEST_SKIP() << "SKIPPED: needs /usr/bin/python3 (cbor2, cryptography)";
  const std::string ctl = path("rot.ctl"), sock = path("rot-tpm.sock");
  Process rot(argv({"--control", ctl, "--tpm-listen", sock}));
  ASSERT_TRUE(rot.wait_for_output("\"layers\"", 15s)) << rot.wait(1s).err;
  auto d = control::call_once(ctl, {{"op", "describe"}}, 5s);
  ASSERT_TRUE(d.ok());
  std::ofstream(path("root.pem")) << (*d)["layers"][0]["certificate"].get<std::string>();
  const std::string instance = "i-0123456789abcdef0", enclave = instance + "-enc0123456789abcdef";
  std::string pcr0(96, '0');
  pcr0[0] = 'e';
  const Json pcrs = {{"0", pcr0}, {"1", std::string(96, '1')}};

  for (const bool debug : {false, true}) {
    const int fd = connect_unix(sock);
    ASSERT_GE(fd, 0);
    Json r = ask_line(fd, {{"op", "bind"}, {"instance", instance}, {"enclave", "i-fffffffffffffffff-enc0123456789abcdef"}});
    EXPECT_EQ(r.value("ok", true), false) << "another instance's enclave: " << r.dump();
    r = ask_line(fd, {{"op", "bind"}, {"instance", instance}, {"enclave", instance + "-enc01"}});
    EXPECT_EQ(r.value("ok", true), false) << "not an enclave id: " << r.dump();
    r = ask_line(fd, {{"op", "bind"}, {"instance", instance}, {"enclave", enclave}, {"debug", "yes"}});
    EXPECT_EQ(r.value("ok", true), false) << "debug is a boolean: " << r.dump();
    r = ask_line(fd, {{"op", "bind"}, {"instance", instance}, {"enclave", enclave}, {"debug", debug}});
    ASSERT_EQ(r.value("ok", false), true) << r.dump();
    r = ask_line(fd, {{"op", "attest-tpm"}, {"pcrs", pcrs}});
    EXPECT_EQ(r.value("ok", true), false) << "an NSM connection is not a TPM's: " << r.dump();
    r = ask_line(fd, {{"op", "attest-nsm"}, {"module_id", "i-fffffffffffffffff"}, {"pcrs", pcrs}, {"nonce", "c0ffee"}});
    ASSERT_EQ(r.value("ok", false), true) << r.dump();
    ::close(fd);
    std::ofstream(path("doc.cbor"), std::ios::binary) << unhex(r["document"]);
    std::vector<std::string> a{"/usr/bin/python3", AZOTE_VERIFY_ATTESTATION, "--root", path("root.pem"), path("doc.cbor"),
                               "--nonce", "c0ffee"};
    if (!debug) a.insert(a.end(), {"--expect-pcr", "0=" + pcr0});
    if (debug) {
      const Outcome refused = run(a, 30s);
      EXPECT_EQ(refused.status, 1) << "a verifier refuses a debug enclave's document: " << refused.out;
      a.push_back("--allow-debug");
    }
    const Outcome o = run(a, 30s);
    ASSERT_EQ(o.status, 0) << o.err;
    const Json v = Json::parse(o.out);
    EXPECT_EQ(v["module_id"], enclave) << "the bound enclave, whatever the request says";
    EXPECT_EQ(v["pcrs_key"], "pcrs");
    EXPECT_EQ(v["debug"], debug) << o.out;
    EXPECT_EQ(v["pcrs"]["0"], debug ? std::string(96, '0') : pcr0);
  }
}

}  // namespace
}  // namespace azote::test
