// azote-rot, the real binary: the device secret is made once and guarded, every layer's
// identity follows its measurement (the DICE property, end to end), and its control
// socket signs with the attestation key, checked by openssl, never revealing a secret.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
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

}  // namespace
}  // namespace azote::test
