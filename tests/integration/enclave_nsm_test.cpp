// An enclave's Nitro Secure Module end to end, with the real processes: azote-rot (the
// host's root of trust), azote-card-nsm bound to one enclave the way the launcher binds
// it (a connection to rot's card socket, its first line naming the enclave), and
// azote-hv booting the built-in guest from an EIF with the NSM as its only device. The
// guest's user-mode NSM driver asks; documents are checked by the independent verifier
// (tests/tools/verify_attestation.py) against azote-rot's device certificate.
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "process.hpp"

namespace {

using azote::test::Outcome;
using azote::test::Process;
using azote::test::run;
using Json = nlohmann::json;
using namespace std::chrono_literals;

const std::string kAzote = AZOTE_BUILD_DIR "/bin/azote";
const std::string kCard = AZOTE_BUILD_DIR "/bin/azote-card-nsm";
const std::string kVerifier = AZOTE_SOURCE_DIR "/tests/tools/verify_attestation.py";
const std::string kInstance = "i-0123456789abcdef0";
const std::string kEnclave = kInstance + "-enc00000000000000a1";

std::string hex(const unsigned char* p, size_t n) {
  static const char* d = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < n; ++i) {
    s += d[p[i] >> 4];
    s += d[p[i] & 15];
  }
  return s;
}
std::string sha384(const std::string& data) {
  unsigned char out[48];
  SHA384(reinterpret_cast<const unsigned char*>(data.data()), data.size(), out);
  return std::string(reinterpret_cast<char*>(out), sizeof out);
}
// extend(Z, data): a register extended once from zero with `data` (ENCLAVES.md §2).
std::string extend_from_zero(const std::string& data) {
  const std::string d = sha384(std::string(48, '\0') + data);
  return hex(reinterpret_cast<const unsigned char*>(d.data()), d.size());
}
std::string unbase64(const std::string& b64) {
  std::string out(b64.size() / 4 * 3 + 3, '\0');
  const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(b64.data()), static_cast<int>(b64.size()));
  if (n < 0) return "";
  size_t len = static_cast<size_t>(n);
  if (!b64.empty() && b64.back() == '=') --len;
  if (b64.size() > 1 && b64[b64.size() - 2] == '=') --len;
  out.resize(len);
  return out;
}
// The text after "azote-guest: KEY " on the console, "" if absent.
std::string line_value(const std::string& out, const std::string& key) {
  const std::string needle = "azote-guest: " + key + " ";
  const size_t at = out.find(needle);
  if (at == std::string::npos) return "";
  const size_t end = out.find('\n', at);
  return out.substr(at + needle.size(), end == std::string::npos ? std::string::npos : end - at - needle.size());
}

class EnclaveNsm : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (!azote::test::kvm_usable(&why)) GTEST_SKIP() << "SKIPPED: " << why;
    if (::access("/usr/bin/python3", X_OK) != 0) GTEST_SKIP() << "SKIPPED: needs /usr/bin/python3 (cbor2, cryptography)";
    dir_ = ::testing::TempDir() + "azote-nsm-" + std::to_string(::getpid()) + "-" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    std::ofstream(path("launcher.bin")) << "the launcher's code";
    std::ofstream(path("hv.bin")) << "the hypervisor's code";
    std::ofstream(path("boot.cpio"), std::ios::binary) << "bootstrap ramdisk";
    std::ofstream(path("app.cpio"), std::ios::binary) << "application ramdisk";
    rot_ = std::make_unique<Process>(std::vector<std::string>{
        AZOTE_ROT_BIN, "--state-dir", path("state"), "--layer", "azote-launcher=" + path("launcher.bin"), "--layer",
        "azote-hv=" + path("hv.bin"), "--control", path("rot.ctl"), "--tpm-listen", path("rot-cards.sock")});
    ASSERT_TRUE(rot_->wait_for_output("\"layers\"", 15s)) << rot_->wait(1s).err;
  }
  void TearDown() override {
    for (auto* p : {card_.get(), rot_.get()}) {
      if (p == nullptr) continue;
      p->signal(SIGTERM);
      const Outcome o = p->wait(10s);
      EXPECT_EQ(o.status, 0) << "a clean stop: " << o.err;
    }
    std::error_code ec;
    if (!HasFailure() && !dir_.empty()) std::filesystem::remove_all(dir_, ec);
  }
  std::string path(const std::string& n) const { return dir_ + "/" + n; }

  // The enclave image of the built-in guest running `program`; its build-enclave output.
  Json build(const std::string& program, const std::string& name = "enclave.eif") {
    const Outcome o = run({kAzote, "enclave", "build-enclave", "--kernel", AZOTE_GUEST_ELF, "--initrd", path("boot.cpio"),
                           "--initrd", path("app.cpio"), "--cmdline", "azote.run=" + program, "--output-file", path(name)});
    EXPECT_EQ(o.status, 0) << o.err;
    return Json::parse(o.out, nullptr, false)["Measurements"];
  }
  // What the launcher does: a connection to rot's card socket, bound to the enclave,
  // handed to the card as --rot fd:N.
  int bound_rot_connection(bool debug) {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);  // no CLOEXEC: the card inherits it
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    const std::string p = path("rot-cards.sock");
    p.copy(a.sun_path, sizeof a.sun_path - 1);
    EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);  // NOLINT
    const std::string line =
        Json{{"op", "bind"}, {"instance", kInstance}, {"enclave", kEnclave}, {"debug", debug}}.dump() + "\n";
    EXPECT_EQ(::send(fd, line.data(), line.size(), MSG_NOSIGNAL), static_cast<ssize_t>(line.size()));
    std::string in;
    char c = 0;
    while (::recv(fd, &c, 1, 0) == 1 && c != '\n') in += c;
    EXPECT_NE(in.find("\"ok\":true"), std::string::npos) << in;
    return fd;
  }
  void start_card(const std::string& eif, bool debug = false, const std::vector<std::string>& extra = {}) {
    const int rot = bound_rot_connection(debug);
    std::vector<std::string> a{kCard, "--socket", path("nsm.sock"), "--eif", path(eif), "--enclave-id", kEnclave,
                               "--rot", "fd:" + std::to_string(rot)};
    a.insert(a.end(), extra.begin(), extra.end());
    card_ = std::make_unique<Process>(a);
    ::close(rot);
    for (int i = 0; i < 100 && !azote::test::file_exists(path("nsm.sock")); ++i) std::this_thread::sleep_for(50ms);
    ASSERT_TRUE(azote::test::file_exists(path("nsm.sock"))) << card_->wait(1s).err;
  }
  // The enclave booted once from `eif` (the card keeps its PCRs across boots).
  Outcome boot(const std::string& eif = "enclave.eif") {
    return run({AZOTE_HV_BIN, "--eif", path(eif), "--memory", "64M", "--device", "nsm,socket=" + path("nsm.sock")}, 60s);
  }
  std::string root_pem() {
    const Outcome o = run({AZOTE_ROT_BIN, "--state-dir", path("state"), "--layer", "azote-launcher=" + path("launcher.bin"),
                           "--layer", "azote-hv=" + path("hv.bin")},
                          30s);
    const Json d = Json::parse(o.out, nullptr, false);
    std::ofstream(path("root.pem")) << d["layers"][0]["certificate"].get<std::string>();
    return path("root.pem");
  }

  std::string dir_;
  std::unique_ptr<Process> rot_, card_;
};

TEST_F(EnclaveNsm, DescribeNsmAndThePlatformPcrsAreTheEnclaves) {
  const Json m = build("nsm-describe");
  build("nsm-pcrs 16", "pcrs.eif");
  start_card("enclave.eif");
  Outcome o = boot();
  ASSERT_EQ(o.status, 0) << o.out << o.err;
  EXPECT_NE(o.out.find("azote-guest: nsm-describe module_id=" + kEnclave +
                       " version=1.0.0 max_pcrs=32 locked=0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15 digest=SHA384"),
            std::string::npos)
      << o.out;

  // The card measured enclave.eif: its registers, not pcrs.eif's, whatever image asks.
  o = boot("pcrs.eif");
  ASSERT_EQ(o.status, 0) << o.out << o.err;
  EXPECT_NE(o.out.find("nsm-pcr 0 locked=1 " + m["PCR0"].get<std::string>()), std::string::npos) << o.out;
  EXPECT_NE(o.out.find("nsm-pcr 1 locked=1 " + m["PCR1"].get<std::string>()), std::string::npos) << o.out;
  EXPECT_NE(o.out.find("nsm-pcr 2 locked=1 " + m["PCR2"].get<std::string>()), std::string::npos) << o.out;
  EXPECT_NE(o.out.find("nsm-pcr 3 locked=1 " + std::string(96, '0')), std::string::npos) << "no role: " << o.out;
  EXPECT_NE(o.out.find("nsm-pcr 4 locked=1 " + extend_from_zero(kInstance)), std::string::npos) << o.out;
  EXPECT_NE(o.out.find("nsm-pcr 8 locked=1 " + std::string(96, '0')), std::string::npos) << "unsigned: " << o.out;
  EXPECT_NE(o.out.find("nsm-pcr 15 locked=1 " + std::string(96, '0')), std::string::npos) << o.out;
}

TEST_F(EnclaveNsm, ExtendAndLockFollowTheNsmRules) {
  build("nsm-extend 16 c0ffee");
  build("nsm-extend 3 c0ffee", "platform.eif");
  build("nsm-lock 16", "lock.eif");
  start_card("enclave.eif");
  Outcome o = boot();
  ASSERT_EQ(o.status, 0) << o.out << o.err;
  EXPECT_NE(o.out.find("azote-guest: nsm-extend 16 " + extend_from_zero(std::string("\xc0\xff\xee", 3))),
            std::string::npos)
      << o.out;
  o = boot("platform.eif");
  EXPECT_EQ(o.status, 1) << o.out;
  EXPECT_NE(o.out.find("nsm-extend error: ReadOnlyIndex"), std::string::npos) << o.out;
  o = boot("lock.eif");
  ASSERT_EQ(o.status, 0) << o.out << o.err;
  o = boot();  // PCR16 is locked now
  EXPECT_EQ(o.status, 1) << o.out;
  EXPECT_NE(o.out.find("nsm-extend error: ReadOnlyIndex"), std::string::npos) << o.out;
}

TEST_F(EnclaveNsm, AttestationDocumentsPassTheIndependentVerifier) {
  const Json m = build("nsm-attest 00112233445566778899 cafe");
  start_card("enclave.eif");
  const Outcome o = boot();
  ASSERT_EQ(o.status, 0) << o.out << o.err;
  const std::string doc = unbase64(line_value(o.out, "nsm-attestation-document"));
  ASSERT_FALSE(doc.empty()) << o.out;
  std::ofstream(path("doc.cbor"), std::ios::binary) << doc;
  const Outcome v = run({"/usr/bin/python3", kVerifier, "--root", root_pem(), path("doc.cbor"), "--nonce",
                         "00112233445566778899", "--max-age", "120", "--expect-pcr", "0=" + m["PCR0"].get<std::string>(),
                         "--expect-pcr", "4=" + extend_from_zero(kInstance)},
                        30s);
  ASSERT_EQ(v.status, 0) << v.err;
  const Json out = Json::parse(v.out);
  EXPECT_EQ(out["module_id"], kEnclave);
  EXPECT_EQ(out["pcrs_key"], "pcrs");
  EXPECT_EQ(out["user_data"], "cafe");
  EXPECT_EQ(out["pcrs"].size(), 16u) << "PCR0-15, locked by the platform";
  EXPECT_EQ(out["pcrs"]["1"], m["PCR1"]);
  EXPECT_EQ(out["pcrs"]["2"], m["PCR2"]);
  // Another nonce is not this document's.
  const Outcome other = run({"/usr/bin/python3", kVerifier, "--root", path("root.pem"), path("doc.cbor"), "--nonce", "ff"}, 30s);
  EXPECT_EQ(other.status, 1) << other.out;
}

TEST_F(EnclaveNsm, ADebugModeEnclavesDocumentsCarryZeroPcrs) {
  build("nsm-attest 0badc0de");
  start_card("enclave.eif", /*debug=*/true);
  const Outcome o = boot();
  ASSERT_EQ(o.status, 0) << o.out << o.err;
  std::ofstream(path("doc.cbor"), std::ios::binary) << unbase64(line_value(o.out, "nsm-attestation-document"));
  Outcome v = run({"/usr/bin/python3", kVerifier, "--root", root_pem(), path("doc.cbor"), "--nonce", "0badc0de"}, 30s);
  EXPECT_EQ(v.status, 1) << "a verifier refuses it: " << v.out;
  v = run({"/usr/bin/python3", kVerifier, "--root", path("root.pem"), path("doc.cbor"), "--nonce", "0badc0de",
           "--allow-debug"},
          30s);
  ASSERT_EQ(v.status, 0) << v.err;
  const Json out = Json::parse(v.out);
  EXPECT_EQ(out["debug"], true);
  EXPECT_EQ(out["pcrs"]["0"], std::string(96, '0'));
}

TEST_F(EnclaveNsm, HostileRequestsGetErrorsAndTheCardGoesOn) {
  // A map declaring 2^32 entries; a float where a PCR index goes.
  build("nsm-raw bbffffffff", "huge.eif");
  build("nsm-raw a16b4465736372696265504352a165696e646578f93c00", "float.eif");
  build("nsm-describe");
  start_card("enclave.eif");
  for (const char* eif : {"huge.eif", "float.eif"}) {
    const Outcome o = boot(eif);
    ASSERT_EQ(o.status, 0) << eif << ": " << o.out << o.err;
    const std::string r = unbase64(line_value(o.out, "nsm-response"));
    EXPECT_NE(r.find("InvalidArgument"), std::string::npos) << eif << ": " << o.out;
  }
  const Outcome o = boot();
  ASSERT_EQ(o.status, 0) << o.out << o.err;
  EXPECT_NE(o.out.find("nsm-describe module_id=" + kEnclave), std::string::npos) << o.out;
}

}  // namespace
