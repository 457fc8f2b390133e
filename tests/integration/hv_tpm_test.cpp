// azote-hv --tpm against a TPM nobody here wrote (Debian's swtpm on a unixio socket):
// the measured boot (PCR 4 kernel, 9 initrd, 12 the image's command line, every
// allocated bank) as the built-in guest reads it back through the CRB window, each
// value recomputed here with OpenSSL from the files; one byte of kernel or command line
// moves its PCR and nothing else; a TPM that is absent or already started stops the
// boot before the guest runs.
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <sstream>
#include <string>
#include <thread>

#include "digest.hpp"
#include "process.hpp"

using namespace azote::test;
using namespace std::chrono_literals;

namespace {

std::string slurp(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}



class HvTpm : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!find_in_path("swtpm")) GTEST_SKIP() << "SKIPPED: swtpm is not installed (scripts/deps.sh installs it)";
    std::string why;
    if (!kvm_usable(&why)) GTEST_SKIP() << "SKIPPED: " << why;
    char tmpl[] = "/tmp/azote-hvtpm.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    std::filesystem::create_directory(dir_ + "/state");
  }
  void TearDown() override {
    stop_tpm();
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }
  // A freshly reset TPM (its state kept in the directory): swtpm restarted.
  void start_tpm() {
    stop_tpm();
    std::filesystem::remove(sock());
    tpm_ = ::fork();
    if (tpm_ == 0) {
      ::execlp("swtpm", "swtpm", "socket", "--tpm2", "--server", ("type=unixio,path=" + sock()).c_str(), "--tpmstate",
               ("dir=" + dir_ + "/state").c_str(), "--flags", "not-need-init", nullptr);
      ::_exit(127);
    }
    for (int i = 0; i < 200 && !file_exists(sock()); ++i) std::this_thread::sleep_for(10ms);
  }
  void stop_tpm() {
    if (tpm_ > 0) {
      ::kill(tpm_, SIGKILL);
      ::waitpid(tpm_, nullptr, 0);
      tpm_ = -1;
    }
  }
  std::string sock() const { return dir_ + "/tpm.sock"; }
  Outcome boot(const std::vector<std::string>& extra) {
    start_tpm();
    std::vector<std::string> argv = {AZOTE_HV_BIN, "--memory", "64M", "--tpm", sock()};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return run(argv, 60s);
  }

  std::string dir_;
  pid_t tpm_ = -1;
};

TEST_F(HvTpm, TheGuestReadsTheMeasuredBootThroughTheCrbWindow) {
  const std::string kernel = slurp(AZOTE_GUEST_ELF);
  ASSERT_FALSE(kernel.empty());
  auto o = boot({"--kernel", "builtin:tpm-pcrs"});
  ASSERT_EQ(o.status, 0) << o.out << o.err;
  EXPECT_NE(o.out.find("azote-guest: tpm-crb at 0xfed40000 (acpi)"), std::string::npos) << "found through the TPM2 table:\n" << o.out;
  const auto p = guest_tpm_pcrs(o.out);
  const std::string cmdline = "azote.run=tpm-pcrs";
  int banks = 0;
  for (const auto& [name, md] : {std::pair{"sha1", EVP_sha1()}, std::pair{"sha256", EVP_sha256()}, std::pair{"sha384", EVP_sha384()}}) {
    if (!p.count(std::string(name) + " 4")) continue;
    ++banks;
    const std::string b = name;
    EXPECT_EQ(p.at(b + " 4"), tpm_pcr_of(md, kernel)) << b;
    EXPECT_EQ(p.at(b + " 12"), tpm_pcr_of(md, cmdline)) << b;
    const std::string zero(2 * EVP_MD_get_size(md), '0');
    for (const char* untouched : {"0", "1", "2", "3", "5", "7", "8", "9", "11", "13"})
      EXPECT_EQ(p.at(b + " " + untouched), zero) << b << " PCR " << untouched << " (no initrd; nothing else measured)";
  }
  EXPECT_GE(banks, 1) << o.out;
  EXPECT_TRUE(p.count("sha256 4")) << "swtpm allocates sha256:\n" << o.out;
}

TEST_F(HvTpm, OneByteOfKernelOrCommandLineMovesItsPcrAndNothingElse) {
  const std::string kernel = slurp(AZOTE_GUEST_ELF);
  const std::string initrd = "an initial ramdisk";
  std::ofstream(dir_ + "/initrd", std::ios::binary) << initrd;
  std::ofstream(dir_ + "/kernel", std::ios::binary) << kernel;
  std::ofstream(dir_ + "/kernel1", std::ios::binary) << kernel << '\0';
  auto a = boot({"--kernel", dir_ + "/kernel", "--initrd", dir_ + "/initrd", "--cmdline", "azote.run=tpm-pcrs a"});
  auto b = boot({"--kernel", dir_ + "/kernel1", "--initrd", dir_ + "/initrd", "--cmdline", "azote.run=tpm-pcrs a"});
  auto c = boot({"--kernel", dir_ + "/kernel", "--initrd", dir_ + "/initrd", "--cmdline", "azote.run=tpm-pcrs b"});
  for (const Outcome* o : {&a, &b, &c}) ASSERT_EQ(o->status, 0) << o->out << o->err;
  const auto pa = guest_tpm_pcrs(a.out), pb = guest_tpm_pcrs(b.out), pc = guest_tpm_pcrs(c.out);
  EXPECT_EQ(pa.at("sha256 4"), tpm_pcr_of(EVP_sha256(), kernel));
  EXPECT_EQ(pa.at("sha256 9"), tpm_pcr_of(EVP_sha256(), initrd));
  EXPECT_EQ(pa.at("sha256 12"), tpm_pcr_of(EVP_sha256(), "azote.run=tpm-pcrs a"));
  EXPECT_EQ(pb.at("sha256 4"), tpm_pcr_of(EVP_sha256(), kernel + std::string(1, '\0')));
  EXPECT_EQ(pb.at("sha256 12"), pa.at("sha256 12"));
  EXPECT_EQ(pb.at("sha256 9"), pa.at("sha256 9"));
  EXPECT_EQ(pc.at("sha256 4"), pa.at("sha256 4"));
  EXPECT_EQ(pc.at("sha256 12"), tpm_pcr_of(EVP_sha256(), "azote.run=tpm-pcrs b"));
  EXPECT_NE(pc.at("sha256 12"), pa.at("sha256 12"));
}

TEST_F(HvTpm, NoTpmOrAnAlreadyStartedOneAndTheGuestNeverRuns) {
  auto absent = run({AZOTE_HV_BIN, "--memory", "64M", "--tpm", dir_ + "/absent.sock", "--kernel", "builtin:hello"}, 60s);
  EXPECT_EQ(absent.status, 74) << absent.err;
  EXPECT_NE(absent.err.find("cannot reach the TPM at " + dir_ + "/absent.sock"), std::string::npos) << absent.err;
  EXPECT_EQ(absent.out.find("azote-guest"), std::string::npos) << absent.out;

  // The same TPM twice without a reset: its PCRs carry the first boot.
  auto first = boot({"--kernel", "builtin:hello"});
  ASSERT_EQ(first.status, 0) << first.err;
  auto second = run({AZOTE_HV_BIN, "--memory", "64M", "--tpm", sock(), "--kernel", "builtin:hello"}, 60s);
  EXPECT_EQ(second.status, 74) << second.err;
  EXPECT_NE(second.err.find("started already"), std::string::npos) << second.err;
  EXPECT_EQ(second.out.find("azote-guest"), std::string::npos) << second.out;
}

// Without --tpm nothing answers at 0xfed40000: the window is not there for a guest
// to find (the access is an unhandled MMIO, as any other unclaimed address).
TEST_F(HvTpm, WithoutTpmThereIsNoWindow) {
  auto o = run({AZOTE_HV_BIN, "--memory", "64M", "--kernel", "builtin:tpm-pcrs"}, 60s);
  EXPECT_EQ(o.status, 84) << o.err;
  EXPECT_NE(o.err.find("unhandled MMIO: 4-byte read at guest-physical 0xfed40030"), std::string::npos) << o.err;
}

}  // namespace
