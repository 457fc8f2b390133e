// lib/tpm against a TPM nobody here wrote: Debian's swtpm (libtpms) on a unixio socket,
// read back with tpm2-tools (tpm2_pcrread through the cmd TCTI and socat), expected
// values computed here with OpenSSL directly.
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>

#include "base/temp_dir.hpp"
#include "tpm/link.hpp"
#include "tpm/measured_boot.hpp"

using namespace azote;
using namespace azote::tpm;
using namespace std::chrono_literals;

namespace {

bool have(const char* tool) { return std::system((std::string("command -v ") + tool + " >/dev/null 2>&1").c_str()) == 0; }

std::vector<uint8_t> sha256(std::span<const uint8_t> a, std::span<const uint8_t> b = {}) {
  std::vector<uint8_t> out(32);
  EVP_MD_CTX* c = EVP_MD_CTX_new();
  unsigned n = 0;
  EVP_DigestInit_ex(c, EVP_sha256(), nullptr);
  EVP_DigestUpdate(c, a.data(), a.size());
  EVP_DigestUpdate(c, b.data(), b.size());
  EVP_DigestFinal_ex(c, out.data(), &n);
  EVP_MD_CTX_free(c);
  return out;
}

std::string hex(std::span<const uint8_t> b) {
  std::string s;
  char x[3];
  for (uint8_t v : b) {
    std::snprintf(x, sizeof x, "%02x", v);
    s += x;
  }
  return s;
}

std::string run(const std::string& cmd) {
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return out;
  char buf[512];
  while (size_t n = std::fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  ::pclose(p);
  return out;
}

// A swtpm of its own: state in the test's directory, data channel on a unixio socket.
class Swtpm {
 public:
  explicit Swtpm(const TempDir& d) : sock_(d.file("tpm.sock")) {
    std::filesystem::create_directory(d.file("state"));
    pid_ = ::fork();
    if (pid_ == 0) {
      ::execlp("swtpm", "swtpm", "socket", "--tpm2", "--server", ("type=unixio,path=" + sock_).c_str(), "--tpmstate",
               ("dir=" + d.file("state")).c_str(), "--flags", "not-need-init", nullptr);
      ::_exit(127);
    }
  }
  ~Swtpm() {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  const std::string& socket() const { return sock_; }

 private:
  std::string sock_;
  pid_t pid_ = -1;
};

// A Link and the other end of its connection (the test plays the TPM).
std::pair<Link, UniqueFd> connected_pair() {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) std::abort();
  return {Link{UniqueFd(sv[0])}, UniqueFd(sv[1])};
}

}  // namespace

TEST(Link, HeaderFieldsAreBigEndian) {
  const uint8_t rsp[] = {0x80, 0x01, 0, 0, 0, 10, 0, 0, 0x01, 0x00};
  EXPECT_EQ(header_size(rsp), 10u);
  EXPECT_EQ(response_code(rsp), 0x100u);
  EXPECT_EQ(header_size(std::span(rsp, 9)), 0u);
}

TEST(Link, AResponseClaimingMoreThanTheBufferIsRefusedNotRead) {
  auto [link, peer] = connected_pair();
  std::thread tpm([&] {
    uint8_t cmd[12];
    (void)!::read(peer.get(), cmd, sizeof cmd);
    const uint8_t lie[] = {0x80, 0x01, 0x00, 0x10, 0x00, 0x00, 0, 0, 0, 0};  // 1 MiB
    (void)!::write(peer.get(), lie, sizeof lie);
  });
  const uint8_t cmd[] = {0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x7b, 0, 8};
  std::vector<uint8_t> rsp(kMaxMessageBytes);
  auto r = link.transact(cmd, rsp, 2s);
  tpm.join();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, TpmErrc::kProtocol) << r.error().message();
}

TEST(Link, ACommandWhoseSizeFieldLiesIsNotSent) {
  auto [link, peer] = connected_pair();
  const uint8_t cmd[] = {0x80, 0x01, 0, 0, 0, 40, 0, 0, 0x01, 0x7b, 0, 8};
  std::vector<uint8_t> rsp(kMaxMessageBytes);
  auto r = link.transact(cmd, rsp, 1s);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, TpmErrc::kProtocol);
}

TEST(Link, ACardThatNeverAnswersTimesOut) {
  auto [link, peer] = connected_pair();
  const uint8_t cmd[] = {0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x7b, 0, 8};
  std::vector<uint8_t> rsp(kMaxMessageBytes);
  const auto t0 = std::chrono::steady_clock::now();
  auto r = link.transact(cmd, rsp, 300ms);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, TpmErrc::kTimeout);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 300ms);
}

TEST(MeasuredBoot, ExtendsEveryAllocatedBankAsTpm2ToolsReadsIt) {
  if (!have("swtpm") || !have("tpm2_pcrread") || !have("socat")) GTEST_SKIP() << "SKIPPED: swtpm, tpm2-tools or socat not installed";
  TempDir d("azote-tpm");
  Swtpm tpm(d);
  auto link = Link::connect(tpm.socket(), 5s);
  ASSERT_TRUE(link) << link.error().message();
  const std::string kernel = "a kernel image", cmdline = "console=ttyS0 azote.run=hello";
  std::vector<Event> events;
  for (auto [pcr, what, data] : {std::tuple{kPcrKernel, "kernel", kernel}, std::tuple{kPcrCmdline, "cmdline", cmdline}}) {
    auto e = measure(pcr, what, std::span(reinterpret_cast<const uint8_t*>(data.data()), data.size()));
    ASSERT_TRUE(e);
    events.push_back(std::move(e).value());
  }
  auto booted = measure_boot(*link, events, 10s);
  ASSERT_TRUE(booted) << booted.error().message();
  ASSERT_FALSE(booted->banks.empty());
  bool has256 = false;
  for (uint16_t b : booted->banks) has256 = has256 || b == kAlgSha256;
  ASSERT_TRUE(has256) << "swtpm allocates sha256 by default";

  // A second boot on the same (not reset) TPM is refused: its PCRs are not fresh.
  auto again = measure_boot(*link, events, 10s);
  ASSERT_FALSE(again);
  EXPECT_NE(again.error().message().find("started already"), std::string::npos) << again.error().message();

  // swtpm serves one connection at a time: this one ends before tpm2-tools connects.
  link = make_error(TpmErrc::kIo, "closed");
  const std::vector<uint8_t> zero(32, 0);
  const std::string out = run("timeout 20 tpm2_pcrread -T 'cmd:socat - UNIX-CONNECT:" + tpm.socket() + "' sha256:4,12,9 2>&1");
  const auto b = [](const std::string& s) { return std::span(reinterpret_cast<const uint8_t*>(s.data()), s.size()); };
  auto up = [](std::string s) {
    for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    return s;
  };
  // Twice extended: the second boot's Startup failed before any extend.
  EXPECT_NE(out.find("4 : 0x" + up(hex(sha256(zero, sha256(b(kernel)))))), std::string::npos) << out;
  EXPECT_NE(out.find("12: 0x" + up(hex(sha256(zero, sha256(b(cmdline)))))), std::string::npos) << out;
  EXPECT_NE(out.find("9 : 0x" + up(hex(zero))), std::string::npos) << out;
  // The platform hierarchy is closed to whoever comes after the firmware: a PCR bank
  // reallocation (platform authority) is refused.
  const std::string realloc = run("timeout 20 tpm2_pcrallocate -T 'cmd:socat - UNIX-CONNECT:" + tpm.socket() +
                                  "' sha256:all 2>&1; echo status=$?");
  EXPECT_EQ(realloc.find("status=0"), std::string::npos) << realloc;
  // And the library's own arithmetic agrees with the TPM.
  auto ours = extend(kAlgSha256, zero, sha256(b(kernel)));
  ASSERT_TRUE(ours);
  EXPECT_NE(out.find(up(hex(*ours))), std::string::npos);
}

TEST(MeasuredBoot, NoTpmAtThePathIsAClearError) {
  TempDir d("azote-tpm");
  auto link = Link::connect(d.file("absent.sock"), 100ms);
  ASSERT_FALSE(link);
  EXPECT_EQ(link.error().code, TpmErrc::kConnect);
  EXPECT_NE(link.error().message().find("absent.sock"), std::string::npos);
}
