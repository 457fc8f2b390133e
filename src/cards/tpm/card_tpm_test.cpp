// azote-card-tpm end to end: the real card binary (its seccomp policy in kill mode: a
// missing rule kills it and fails the test), opened through its control socket with a
// state file handed over as a descriptor, and tpm2-tools as the TPM's clients through
// the cmd TCTI (socat to the data socket), as a guest's or an operator's tools would be.
// Every expected value is computed here independently (OpenSSL), or checked by
// tpm2_checkquote, never taken from the card.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <mutex>
#include <thread>
#include <vector>

#include "base/hex.hpp"
#include "base/temp_dir.hpp"
#include "base/unique_fd.hpp"
#include "control/control.hpp"

extern char** environ;

namespace azote::card_tpm {
namespace {

using namespace std::chrono_literals;
using Bytes = std::vector<uint8_t>;

constexpr int kStateFd = 5;  // where the card finds its state file ("state": "fd:5")
constexpr int kRotFd = 6;    // where the card finds its azote-rot connection (--rot fd:6)

struct Ran {
  int status = -1;  // exit status, or 128 + signal
  std::string out, err;
};

int decode_status(int st) { return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st); }

// Runs argv to completion (killed at the deadline), collecting stdout and stderr.
Ran run(const std::vector<std::string>& argv, std::chrono::milliseconds timeout = 20s) {
  Ran r;
  int out[2], err[2];
  if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0) return r;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_adddup2(&fa, err[1], 2);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  const int rc = posix_spawnp(&pid, args[0], &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(out[1]);
  ::close(err[1]);
  UniqueFd o(out[0]), e(err[0]);
  if (rc != 0) return r;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  bool o_open = true, e_open = true;
  while ((o_open || e_open) && std::chrono::steady_clock::now() < deadline) {
    pollfd p[2] = {{o_open ? o.get() : -1, POLLIN, 0}, {e_open ? e.get() : -1, POLLIN, 0}};
    if (::poll(p, 2, 100) <= 0) continue;
    for (int i = 0; i < 2; ++i) {
      if (p[i].revents == 0) continue;
      char buf[8192];
      const ssize_t n = ::read(p[i].fd, buf, sizeof buf);
      if (n > 0) {
        (i == 0 ? r.out : r.err).append(buf, static_cast<size_t>(n));
      } else {
        (i == 0 ? o_open : e_open) = false;
      }
    }
  }
  if (o_open || e_open) ::kill(pid, SIGKILL);
  int st = 0;
  ::waitpid(pid, &st, 0);
  r.status = decode_status(st);
  return r;
}

std::optional<std::string> find_in_path(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::string dirs = path != nullptr ? path : "/usr/bin:/bin";
  size_t start = 0;
  while (start <= dirs.size()) {
    const size_t end = dirs.find(':', start);
    const std::string dir = dirs.substr(start, end == std::string::npos ? std::string::npos : end - start);
    const std::string full = dir + "/" + name;
    if (!dir.empty() && ::access(full.c_str(), X_OK) == 0) return full;
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return std::nullopt;
}

// What the end-to-end tests need besides the card; empty if all is there.
std::string missing_tools() {
  for (const char* t : {"socat", "tpm2_startup", "tpm2_pcrextend", "tpm2_pcrread", "tpm2_createek", "tpm2_createak",
                        "tpm2_quote", "tpm2_checkquote", "tpm2_flushcontext", "tpm2_evictcontrol", "tpm2_nvdefine",
                        "tpm2_nvwrite", "tpm2_nvread", "tpm2_readpublic"}) {
    if (!find_in_path(t)) return std::string(t) + " is not installed (apt-get install tpm2-tools socat; scripts/deps.sh)";
  }
  return {};
}

#define SKIP_WITHOUT_TOOLS()                          \
  do {                                                \
    const std::string why = missing_tools();          \
    if (!why.empty()) {                               \
      std::printf("SKIPPED: %s\n", why.c_str());      \
      GTEST_SKIP() << why;                            \
    }                                                 \
  } while (0)

Bytes read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

void write_file(const std::string& path, const Bytes& b) {
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(reinterpret_cast<const char*>(b.data()),
                                                                 static_cast<std::streamsize>(b.size()));
}

bool contains(const Bytes& hay, const Bytes& needle) {
  return std::search(hay.begin(), hay.end(), needle.begin(), needle.end()) != hay.end();
}

Bytes sha256(const Bytes& data) {
  Bytes out(32);
  unsigned int n = 0;
  EXPECT_EQ(EVP_Digest(data.data(), data.size(), out.data(), &n, EVP_sha256(), nullptr), 1);
  return out;
}

Bytes random_bytes(size_t n) {
  Bytes b(n);
  EXPECT_EQ(RAND_bytes(b.data(), static_cast<int>(n)), 1);
  return b;
}

// One azote-card-tpm process with its state file as descriptor 5; stderr in a log file.
class CardProcess {
 public:
  // `rot`: the card's end of a connection to (a fake) azote-rot, given as --rot fd:6; -1: none.
  CardProcess(const TempDir& dir, const std::string& state_path, const std::string& name, int rot = -1)
      : control_(dir / (name + ".ctl")), metrics_(dir / (name + ".metrics")), log_(dir / (name + ".log")) {
    // O_CLOEXEC here: only the card gets it (as fd 5), not the tools run later, so the
    // card's flock is its own.
    UniqueFd state(::open(state_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    EXPECT_TRUE(state.valid());
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    posix_spawn_file_actions_adddup2(&fa, state.get(), kStateFd);
    std::vector<std::string> argv = {AZOTE_CARD_TPM_BIN, "--control", control_, "--metrics", metrics_};
    if (rot >= 0) {
      posix_spawn_file_actions_adddup2(&fa, rot, kRotFd);
      argv.insert(argv.end(), {"--rot", "fd:" + std::to_string(kRotFd)});
    }
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    EXPECT_EQ(posix_spawn(&pid_, args[0], &fa, nullptr, args.data(), environ), 0);
    posix_spawn_file_actions_destroy(&fa);
  }
  ~CardProcess() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }

  Result<control::Json, control::ControlError> call(const control::Json& request) {
    return control::call_once(control_, request, 10s);
  }
  // Sends `sig` and waits for the exit status (128 + signal if killed by one).
  int stop(int sig) {
    ::kill(pid_, sig);
    int st = 0;
    for (int i = 0; i < 500; ++i) {
      if (::waitpid(pid_, &st, WNOHANG) == pid_) {
        pid_ = -1;
        return decode_status(st);
      }
      std::this_thread::sleep_for(10ms);
    }
    return -1;
  }
  std::string log() const {
    const Bytes b = read_file(log_);
    return std::string(b.begin(), b.end());
  }
  const std::string& metrics_path() const { return metrics_; }

 private:
  std::string control_, metrics_, log_;
  pid_t pid_ = -1;
};

class TpmCardTest : public ::testing::Test {
 protected:
  TempDir dir_{"azote-card-tpm"};
  std::string state_ = dir_ / "tpm.state";
  std::string socket_ = dir_ / "tpm.sock";
  std::string tcti_ = "cmd:socat - UNIX-CONNECT:" + socket_;
  Bytes key_ = random_bytes(32);

  control::Json open_request(const Bytes& key) const {
    return {{"op", "open"}, {"instance", "i-0abc123"}, {"state", "fd:5"}, {"key", to_hex(key)}, {"socket", socket_}};
  }

  // Opens the TPM; returns the answer (fails the test on a refusal).
  control::Json open(CardProcess& card) {
    auto r = card.call(open_request(key_));
    EXPECT_TRUE(r) << r.error().message() << "\n" << card.log();
    return r ? *r : control::Json();
  }

  // One tpm2-tools command against the card; fails the test unless it succeeds.
  std::string tpm2(std::vector<std::string> argv, const CardProcess& card) {
    argv.insert(argv.begin() + 1, {"-T", tcti_});
    const Ran r = run(argv);
    EXPECT_EQ(r.status, 0) << argv[0] << ": " << r.err << "\ncard log:\n" << card.log();
    return r.out;
  }
  // Whether a tpm2-tools command succeeds (for the ones that must fail).
  bool tpm2_ok(std::vector<std::string> argv) {
    argv.insert(argv.begin() + 1, {"-T", tcti_});
    return run(argv).status == 0;
  }
  // Without a resource manager, transient objects and sessions stay loaded between tools.
  void flush(const CardProcess& card) {
    for (const char* what : {"-t", "-s", "-l"}) tpm2({"tpm2_flushcontext", what}, card);
  }
  std::string file(const std::string& name) const { return dir_ / name; }

  std::string metrics_text(const CardProcess& card) {
    const Ran r = run({"socat", "-", "UNIX-CONNECT:" + card.metrics_path()});
    return r.out;
  }
};

// The x and y coordinates of an ECC P-256 public key saved by tpm2-tools (TPM2B_PUBLIC,
// whose last field is the point: x and y, each a 2-byte size and 32 bytes).
std::pair<Bytes, Bytes> ecc_point(const Bytes& pub) {
  if (pub.size() < 68) return {};
  const size_t at = pub.size() - 68;
  EXPECT_EQ(pub[at], 0);
  EXPECT_EQ(pub[at + 1], 32);
  EXPECT_EQ(pub[at + 34], 0);
  EXPECT_EQ(pub[at + 35], 32);
  return {Bytes(pub.begin() + static_cast<long>(at) + 2, pub.begin() + static_cast<long>(at) + 34),
          Bytes(pub.begin() + static_cast<long>(at) + 36, pub.end())};
}

TEST_F(TpmCardTest, OpensANewTpmAndExtendsPcrsAsComputedIndependently) {
  SKIP_WITHOUT_TOOLS();
  CardProcess card(dir_, state_, "card");
  auto before = card.call({{"op", "describe"}});
  ASSERT_TRUE(before) << before.error().message() << card.log();
  EXPECT_FALSE((*before)["open"].get<bool>());

  const control::Json opened = open(card);
  EXPECT_TRUE(opened["manufactured"].get<bool>());
  EXPECT_GT(opened["state_bytes"].get<uint64_t>(), 1000u);
  struct stat st {};
  ASSERT_EQ(::stat(socket_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  tpm2({"tpm2_startup", "-c"}, card);  // what the hypervisor does as firmware
  const Bytes digest = random_bytes(32);
  tpm2({"tpm2_pcrextend", "4:sha256=" + to_hex(digest)}, card);
  tpm2({"tpm2_pcrread", "sha256:0,4", "-o", file("pcrs.bin")}, card);
  const Bytes pcrs = read_file(file("pcrs.bin"));
  ASSERT_EQ(pcrs.size(), 64u);
  EXPECT_EQ(Bytes(pcrs.begin(), pcrs.begin() + 32), Bytes(32, 0));  // PCR 0 untouched
  Bytes extend_input(32, 0);
  extend_input.insert(extend_input.end(), digest.begin(), digest.end());
  EXPECT_EQ(to_hex(Bytes(pcrs.begin() + 32, pcrs.end())), to_hex(sha256(extend_input)));  // PCR 4

  auto d = card.call({{"op", "describe"}});
  ASSERT_TRUE(d) << d.error().message();
  EXPECT_TRUE((*d)["open"].get<bool>());
  EXPECT_EQ((*d)["instance"], "i-0abc123");
  EXPECT_TRUE((*d)["manufactured"].get<bool>());
  EXPECT_GE((*d)["commands_total"].get<uint64_t>(), 3u);
  EXPECT_GE((*d)["state_writes_total"].get<uint64_t>(), 1u);
  EXPECT_EQ((*d)["clients"].get<uint64_t>(), 0u);
  const std::string m = metrics_text(card);
  EXPECT_NE(m.find("azote_tpm_commands_total " + std::to_string((*d)["commands_total"].get<uint64_t>())),
            std::string::npos) << m;
  EXPECT_NE(m.find("azote_tpm_state_writes_total "), std::string::npos) << m;
  EXPECT_NE(m.find("azote_tpm_command_errors_total "), std::string::npos) << m;
  EXPECT_NE(m.find("azote_tpm_clients 0"), std::string::npos) << m;

  EXPECT_EQ(card.stop(SIGTERM), 0) << card.log();
  EXPECT_NE(::stat(socket_.c_str(), &st), 0);  // removed
}

TEST_F(TpmCardTest, QuotesVerifyOnlyWithTheirNonceAndMessage) {
  SKIP_WITHOUT_TOOLS();
  CardProcess card(dir_, state_, "card");
  open(card);
  tpm2({"tpm2_startup", "-c"}, card);
  tpm2({"tpm2_pcrextend", "4:sha256=" + to_hex(random_bytes(32))}, card);
  tpm2({"tpm2_createek", "-G", "ecc", "-c", file("ek.ctx"), "-u", file("ek.pub")}, card);
  flush(card);
  tpm2({"tpm2_createak", "-C", file("ek.ctx"), "-c", file("ak.ctx"), "-G", "ecc", "-g", "sha256", "-s", "ecdsa", "-u",
        file("ak.pem"), "-f", "pem", "-n", file("ak.name")},
       card);
  flush(card);
  const std::string nonce = to_hex(random_bytes(16));
  tpm2({"tpm2_quote", "-c", file("ak.ctx"), "-l", "sha256:0,4", "-q", nonce, "-m", file("quote.msg"), "-s",
        file("quote.sig"), "-o", file("quote.pcrs"), "-g", "sha256"},
       card);
  auto check = [&](const std::string& msg, const std::string& q) {
    return run({"tpm2_checkquote", "-u", file("ak.pem"), "-m", msg, "-s", file("quote.sig"), "-f", file("quote.pcrs"),
                "-g", "sha256", "-q", q})
               .status == 0;
  };
  EXPECT_TRUE(check(file("quote.msg"), nonce));
  EXPECT_FALSE(check(file("quote.msg"), to_hex(random_bytes(16))));  // another nonce
  Bytes msg = read_file(file("quote.msg"));
  ASSERT_GT(msg.size(), 40u);
  msg[msg.size() - 5] ^= 0x01;  // one bit of the quoted PCR digest
  write_file(file("quote.bad"), msg);
  EXPECT_FALSE(check(file("quote.bad"), nonce));
  EXPECT_EQ(card.stop(SIGTERM), 0) << card.log();
}

TEST_F(TpmCardTest, StateSurvivesARestartEncryptedAndAWrongKeyIsRefused) {
  SKIP_WITHOUT_TOOLS();
  const Bytes marker = [] {
    const std::string s = "AZOTE-NV-PLAINTEXT-MARKER-0123456789";
    return Bytes(s.begin(), s.begin() + 32);
  }();
  write_file(file("marker.bin"), marker);
  {
    CardProcess card(dir_, state_, "first");
    EXPECT_TRUE(open(card)["manufactured"].get<bool>());
    tpm2({"tpm2_startup", "-c"}, card);
    tpm2({"tpm2_createek", "-G", "ecc", "-c", file("ek.ctx"), "-u", file("ek1.pub")}, card);
    flush(card);
    // Into NV (so into the state file): the EK as a persistent object, and an NV index.
    tpm2({"tpm2_evictcontrol", "-C", "o", "-c", file("ek.ctx"), "0x81010001"}, card);
    flush(card);
    tpm2({"tpm2_nvdefine", "-C", "o", "-s", "32", "-a", "ownerread|ownerwrite", "0x1500016"}, card);
    tpm2({"tpm2_nvwrite", "-C", "o", "-i", file("marker.bin"), "0x1500016"}, card);
    EXPECT_EQ(card.stop(SIGKILL), 128 + SIGKILL);  // no clean stop: every change is already on disk
  }
  // At rest: two slots of ciphertext, neither the NV data nor the EK's point in the clear.
  const Bytes at_rest = read_file(state_);
  EXPECT_EQ(std::string(at_rest.begin(), at_rest.begin() + 8), "AZTPMST1");
  EXPECT_FALSE(contains(at_rest, marker));
  const auto [x, y] = ecc_point(read_file(file("ek1.pub")));
  ASSERT_EQ(x.size(), 32u);
  EXPECT_FALSE(contains(at_rest, x));
  EXPECT_FALSE(contains(at_rest, y));

  CardProcess card(dir_, state_, "second");
  Bytes wrong = key_;
  wrong[7] ^= 0x40;
  auto refused = card.call(open_request(wrong));
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, control::ControlErrc::kRefused);
  EXPECT_NE(refused.error().context.find("state fd:5"), std::string::npos) << refused.error().context;
  EXPECT_NE(refused.error().context.find("authentication failed"), std::string::npos) << refused.error().context;
  EXPECT_EQ(read_file(state_), at_rest);  // nothing written over it

  const control::Json opened = open(card);  // the right key, same card, same descriptor
  EXPECT_FALSE(opened["manufactured"].get<bool>());
  tpm2({"tpm2_startup", "-c"}, card);
  tpm2({"tpm2_createek", "-G", "ecc", "-c", file("ek2.ctx"), "-u", file("ek2.pub")}, card);
  flush(card);
  EXPECT_EQ(to_hex(read_file(file("ek2.pub"))), to_hex(read_file(file("ek1.pub"))));  // the same endorsement seed
  tpm2({"tpm2_readpublic", "-c", "0x81010001", "-o", file("persistent.pub")}, card);
  EXPECT_EQ(to_hex(read_file(file("persistent.pub"))), to_hex(read_file(file("ek1.pub"))));
  tpm2({"tpm2_nvread", "-C", "o", "-s", "32", "0x1500016", "-o", file("nv.bin")}, card);
  EXPECT_EQ(read_file(file("nv.bin")), marker);

  auto second = card.call(open_request(key_));
  ASSERT_FALSE(second);
  EXPECT_NE(second.error().context.find("already serves"), std::string::npos) << second.error().context;
  EXPECT_EQ(card.stop(SIGTERM), 0) << card.log();
}

// A raw client of the data socket.
UniqueFd connect_to(const std::string& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::memcpy(a.sun_path, path.data(), path.size());
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0) return UniqueFd();
  timeval tv{5, 0};
  ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

void send_bytes(int fd, const Bytes& b) {
  ASSERT_EQ(::send(fd, b.data(), b.size(), MSG_NOSIGNAL), static_cast<ssize_t>(b.size()));
}

uint32_t be32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) << 24 | static_cast<uint32_t>(p[1]) << 16 | static_cast<uint32_t>(p[2]) << 8 | p[3];
}

// Exactly `n` bytes, or fewer if the connection ends first.
Bytes receive(int fd, size_t n) {
  Bytes r(n);
  size_t got = 0;
  while (got < n) {
    const ssize_t k = ::recv(fd, r.data() + got, n - got, 0);
    if (k <= 0) break;
    got += static_cast<size_t>(k);
  }
  r.resize(got);
  return r;
}

// One whole response (its size from its header), or what came before EOF.
Bytes response(int fd) {
  Bytes r = receive(fd, 10);
  if (r.size() < 10) return r;
  const size_t size = be32(r.data() + 2);
  if (size < 10) return r;
  const Bytes rest = receive(fd, size - 10);
  r.insert(r.end(), rest.begin(), rest.end());
  return r;
}

uint32_t rc_of(const Bytes& r) { return r.size() < 10 ? 0xffffffff : be32(r.data() + 6); }

const Bytes kStartupClear = {0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x44, 0x00, 0x00};
const Bytes kGetRandom16 = {0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x7b, 0x00, 0x10};

TEST_F(TpmCardTest, DataSocketFramingAndSeveralClients) {
  CardProcess card(dir_, state_, "card");  // no tpm2-tools needed: raw commands
  open(card);
  // A command in pieces waits for its remaining bytes.
  UniqueFd a = connect_to(socket_);
  ASSERT_TRUE(a.valid());
  send_bytes(a.get(), Bytes(kStartupClear.begin(), kStartupClear.begin() + 7));
  std::this_thread::sleep_for(100ms);
  send_bytes(a.get(), Bytes(kStartupClear.begin() + 7, kStartupClear.end()));
  EXPECT_EQ(rc_of(response(a.get())), 0u);
  // Two clients, interleaved, each answered whole; two commands in one write, two answers.
  UniqueFd b = connect_to(socket_);
  ASSERT_TRUE(b.valid());
  send_bytes(b.get(), kGetRandom16);
  send_bytes(a.get(), kGetRandom16);
  const Bytes ra = response(a.get()), rb = response(b.get());
  EXPECT_EQ(ra.size(), 10u + 2u + 16u);
  EXPECT_EQ(rb.size(), 10u + 2u + 16u);
  EXPECT_NE(ra, rb);
  Bytes two = kGetRandom16;
  two.insert(two.end(), kGetRandom16.begin(), kGetRandom16.end());
  send_bytes(b.get(), two);
  EXPECT_EQ(response(b.get()).size(), 28u);
  EXPECT_EQ(response(b.get()).size(), 28u);
  // Sizes out of range close that connection only.
  for (const uint32_t size : {5u, 4097u, 0xffffffffu}) {
    UniqueFd c = connect_to(socket_);
    ASSERT_TRUE(c.valid());
    send_bytes(c.get(), {0x80, 0x01, static_cast<uint8_t>(size >> 24), static_cast<uint8_t>(size >> 16),
                         static_cast<uint8_t>(size >> 8), static_cast<uint8_t>(size), 0, 0, 0x01, 0x7b});
    EXPECT_TRUE(response(c.get()).empty()) << size;  // EOF, no answer
  }
  send_bytes(a.get(), kGetRandom16);
  EXPECT_EQ(response(a.get()).size(), 28u);  // the others are unaffected
  // A client that sends many commands before reading any answer gets every answer, in
  // order, as it reads them (the card holds its further commands while one waits).
  Bytes many;
  for (int i = 0; i < 300; ++i) many.insert(many.end(), kGetRandom16.begin(), kGetRandom16.end());
  send_bytes(b.get(), many);
  std::this_thread::sleep_for(200ms);
  send_bytes(b.get(), many);
  for (int i = 0; i < 600; ++i) {
    const Bytes r = response(b.get());
    ASSERT_EQ(r.size(), 28u) << i;
    ASSERT_EQ(rc_of(r), 0u) << i;
  }
  const std::string m = metrics_text(card);
  EXPECT_NE(m.find("azote_tpm_bad_commands_total 3"), std::string::npos) << m;
  EXPECT_NE(m.find("azote_tpm_clients 2"), std::string::npos) << m;
  EXPECT_EQ(card.stop(SIGTERM), 0) << card.log();
}

TEST_F(TpmCardTest, RefusesBadOpensClearly) {
  CardProcess card(dir_, state_, "card");
  auto r = card.call({{"op", "open"}, {"instance", "i-1"}, {"state", "fd:9"}, {"key", std::string(64, 'a')},
                      {"socket", socket_}});
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().context.find("state fd:9"), std::string::npos) << r.error().context;  // not a descriptor it has
  auto k = card.call({{"op", "open"}, {"instance", "i-1"}, {"state", "fd:5"}, {"key", "00"}, {"socket", socket_}});
  ASSERT_FALSE(k);
  EXPECT_NE(k.error().context.find("64 hex digits"), std::string::npos) << k.error().context;
  auto u = card.call({{"op", "reset"}});
  ASSERT_FALSE(u);
  EXPECT_NE(u.error().context.find("unknown op"), std::string::npos);
  auto d = card.call({{"op", "describe"}});
  ASSERT_TRUE(d);
  EXPECT_FALSE((*d)["open"].get<bool>());
  EXPECT_EQ(card.stop(SIGTERM), 0) << card.log();
}

TEST(TpmCardCommandLine, HelpAndUsageErrors) {
  const Ran help = run({AZOTE_CARD_TPM_BIN, "--help"});
  EXPECT_EQ(help.status, 0);
  EXPECT_NE(help.out.find("Usage: azote-card-tpm"), std::string::npos);
  const Ran none = run({AZOTE_CARD_TPM_BIN});
  EXPECT_EQ(none.status, 64);
  EXPECT_NE(none.err.find("--control"), std::string::npos) << none.err;
  const Ran version = run({AZOTE_CARD_TPM_BIN, "--version"});
  EXPECT_EQ(version.status, 0);
  EXPECT_NE(version.out.find("azote-card-tpm "), std::string::npos);
}

// --- Attestation: the vendor command TPM_CC_AZOTE_ATTEST, with a fake azote-rot ---

// TPM_CC_AZOTE_ATTEST as a guest builds it: header | offset | nonce | user_data.
Bytes attest_command(uint32_t offset, const Bytes& nonce, const Bytes& user_data) {
  Bytes c = {0x80, 0x01, 0, 0, 0, 0, 0x20, 0x00, 0x0a, 0x01};
  for (int s = 24; s >= 0; s -= 8) c.push_back(static_cast<uint8_t>(offset >> s));
  c.push_back(static_cast<uint8_t>(nonce.size() >> 8));
  c.push_back(static_cast<uint8_t>(nonce.size()));
  c.insert(c.end(), nonce.begin(), nonce.end());
  c.push_back(static_cast<uint8_t>(user_data.size() >> 8));
  c.push_back(static_cast<uint8_t>(user_data.size()));
  c.insert(c.end(), user_data.begin(), user_data.end());
  c[5] = static_cast<uint8_t>(c.size());
  c[4] = static_cast<uint8_t>(c.size() >> 8);
  return c;
}

// azote-rot as the card sees it: a socketpair whose card end the card gets as --rot;
// each attest-tpm request is kept, its PCRs compared with the ones the test expects
// (mismatch: {"ok":false}), and answered with `document`.
class FakeRot {
 public:
  explicit FakeRot(Bytes document) : document_(std::move(document)) {
    int sv[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    card_.reset(sv[0]);
    ours_.reset(sv[1]);
    thread_ = std::thread([this] { serve(); });
  }
  ~FakeRot() { close(); }
  int card_end() const { return card_.get(); }
  void release_card_end() { card_.reset(); }  // the card has its copy
  void expect_pcrs(std::vector<std::string> hex) {
    std::lock_guard<std::mutex> l(mu_);
    expected_pcrs_ = std::move(hex);
  }
  std::vector<control::Json> requests() {
    std::lock_guard<std::mutex> l(mu_);
    return requests_;
  }
  void close() {  // EOF for the card
    if (ours_) ::shutdown(ours_.get(), SHUT_RDWR);
    if (thread_.joinable()) thread_.join();
  }

 private:
  void serve() {
    std::string in;
    char buf[4096];
    for (;;) {
      const ssize_t n = ::recv(ours_.get(), buf, sizeof buf, 0);
      if (n <= 0) return;
      in.append(buf, static_cast<size_t>(n));
      for (size_t nl; (nl = in.find('\n')) != std::string::npos;) {
        const control::Json r = control::Json::parse(in.substr(0, nl), nullptr, false);
        in.erase(0, nl + 1);
        control::Json reply = {{"ok", true}, {"document", to_hex(document_)}};
        {
          std::lock_guard<std::mutex> l(mu_);
          requests_.push_back(r);
          if (r.is_discarded() || r.value("op", "") != "attest-tpm") {
            reply = {{"ok", false}, {"error", "not an attest-tpm request"}};
          } else {
            for (size_t i = 0; i < expected_pcrs_.size(); ++i) {
              if (!r["pcrs"].contains(std::to_string(i)) || r["pcrs"][std::to_string(i)] != expected_pcrs_[i])
                reply = {{"ok", false}, {"error", "PCR " + std::to_string(i) + " is not the TPM's"}};
            }
          }
        }
        const std::string line = reply.dump() + "\n";
        if (::send(ours_.get(), line.data(), line.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(line.size())) return;
      }
    }
  }
  Bytes document_;
  UniqueFd card_, ours_;
  std::mutex mu_;
  std::vector<std::string> expected_pcrs_;
  std::vector<control::Json> requests_;
  std::thread thread_;
};

struct Chunk {
  uint32_t rc = 0xffffffff;
  uint32_t total = 0;
  Bytes data;
};
// One vendor command on its own connection; the response parsed.
Chunk attest(const std::string& socket, uint32_t offset, const Bytes& nonce, const Bytes& user_data) {
  Chunk c;
  UniqueFd fd = connect_to(socket);
  if (!fd) return c;
  send_bytes(fd.get(), attest_command(offset, nonce, user_data));
  const Bytes r = response(fd.get());
  c.rc = rc_of(r);
  if (c.rc != 0) {
    EXPECT_EQ(r.size(), 10u);  // errors are a bare header
    return c;
  }
  EXPECT_GE(r.size(), 16u);
  if (r.size() < 16) return c;
  c.total = be32(r.data() + 10);
  const size_t n = static_cast<size_t>(r[14]) << 8 | r[15];
  EXPECT_EQ(r.size(), 16 + n);
  c.data.assign(r.begin() + 16, r.end());
  return c;
}

TEST_F(TpmCardTest, AttestationDocumentThroughTheVendorCommand) {
  SKIP_WITHOUT_TOOLS();
  const Bytes document = random_bytes(5003);
  FakeRot rot(document);
  CardProcess card(dir_, state_, "card", rot.card_end());
  rot.release_card_end();
  open(card);
  const Bytes nonce = random_bytes(32), user_data = random_bytes(100);
  // Before TPM2_Startup the PCRs cannot be read: TPM_RC_INITIALIZE, azote-rot not asked.
  EXPECT_EQ(attest(socket_, 0, nonce, user_data).rc, 0x100u) << card.log();
  EXPECT_TRUE(rot.requests().empty());

  tpm2({"tpm2_startup", "-c"}, card);
  tpm2({"tpm2_pcrextend", "4:sha384=" + to_hex(random_bytes(48))}, card);
  std::string all = "sha384:0";
  for (int i = 1; i < 24; ++i) all += "," + std::to_string(i);
  tpm2({"tpm2_pcrread", all, "-o", file("pcrs384.bin")}, card);
  const Bytes pcrs = read_file(file("pcrs384.bin"));
  ASSERT_EQ(pcrs.size(), 24u * 48u);
  std::vector<std::string> expected;
  for (size_t i = 0; i < 24; ++i) expected.push_back(to_hex(Bytes(pcrs.begin() + 48 * i, pcrs.begin() + 48 * (i + 1))));
  EXPECT_NE(expected[4], std::string(96, '0'));  // the extend is there
  rot.expect_pcrs(expected);

  // Offsets 0, 2048, 4096: the document, byte-exact.
  Bytes back;
  for (const uint32_t offset : {0u, 2048u, 4096u}) {
    const Chunk c = attest(socket_, offset, nonce, user_data);
    ASSERT_EQ(c.rc, 0u) << offset << "\n" << card.log();
    EXPECT_EQ(c.total, document.size());
    EXPECT_EQ(c.data.size(), std::min<size_t>(2048, document.size() - offset));
    back.insert(back.end(), c.data.begin(), c.data.end());
  }
  EXPECT_EQ(back, document);
  auto requests = rot.requests();
  ASSERT_EQ(requests.size(), 1u);  // offsets > 0 came from the card's cache
  EXPECT_EQ(requests[0]["op"], "attest-tpm");
  EXPECT_EQ(requests[0]["nonce"], to_hex(nonce));
  EXPECT_EQ(requests[0]["user_data"], to_hex(user_data));
  ASSERT_EQ(requests[0]["pcrs"].size(), 24u);
  for (size_t i = 0; i < 24; ++i) EXPECT_EQ(requests[0]["pcrs"][std::to_string(i)], expected[i]) << "PCR " << i;

  // Errors: another nonce past offset 0, an offset past the end, a nonce over 64 bytes.
  EXPECT_EQ(attest(socket_, 2048, random_bytes(32), user_data).rc, 0x084u);
  EXPECT_EQ(attest(socket_, 6000, nonce, user_data).rc, 0x084u);
  EXPECT_EQ(attest(socket_, 0, random_bytes(65), user_data).rc, 0x095u);
  EXPECT_EQ(attest(socket_, 0, nonce, random_bytes(513)).rc, 0x095u);
  EXPECT_EQ(rot.requests().size(), 1u);

  // A second request at offset 0 asks azote-rot again, even with the same nonce.
  EXPECT_EQ(attest(socket_, 0, nonce, user_data).rc, 0u);
  EXPECT_EQ(rot.requests().size(), 2u);
  // A changed PCR is what azote-rot sees next.
  tpm2({"tpm2_pcrextend", "7:sha384=" + to_hex(random_bytes(48))}, card);
  EXPECT_EQ(attest(socket_, 0, nonce, user_data).rc, 0x101u);  // the fake refuses: PCR 7 is not what it expects
  ASSERT_EQ(rot.requests().size(), 3u);
  EXPECT_NE(rot.requests()[2]["pcrs"]["7"], expected[7]);
  EXPECT_EQ(rot.requests()[2]["pcrs"]["4"], expected[4]);

  auto d = card.call({{"op", "describe"}});
  ASSERT_TRUE(d) << d.error().message();
  EXPECT_EQ((*d)["attestations_total"].get<uint64_t>(), 10u);
  EXPECT_EQ((*d)["attestation_errors_total"].get<uint64_t>(), 6u);
  EXPECT_EQ((*d)["rot_requests_total"].get<uint64_t>(), 3u);
  EXPECT_TRUE((*d)["rot"].get<bool>());
  const std::string m = metrics_text(card);
  EXPECT_NE(m.find("azote_tpm_attestations_total 10"), std::string::npos) << m;
  EXPECT_NE(m.find("azote_tpm_attestation_errors_total 6"), std::string::npos) << m;

  // azote-rot gone (EOF): TPM_RC_FAILURE, then at once for later requests.
  rot.close();
  EXPECT_EQ(attest(socket_, 0, nonce, user_data).rc, 0x101u);
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(attest(socket_, 0, nonce, user_data).rc, 0x101u);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
  d = card.call({{"op", "describe"}});
  ASSERT_TRUE(d);
  EXPECT_FALSE((*d)["rot"].get<bool>());
  // Other commands are unaffected.
  UniqueFd raw = connect_to(socket_);
  send_bytes(raw.get(), kGetRandom16);
  EXPECT_EQ(response(raw.get()).size(), 28u);
  EXPECT_EQ(card.stop(SIGTERM), 0) << card.log();
  EXPECT_NE(card.log().find("connection to azote-rot is gone"), std::string::npos) << card.log();
}

TEST_F(TpmCardTest, AttestationWithoutRotIsAFailure) {
  CardProcess card(dir_, state_, "card");  // raw commands only
  open(card);
  UniqueFd a = connect_to(socket_);
  send_bytes(a.get(), kStartupClear);
  EXPECT_EQ(rc_of(response(a.get())), 0u);
  EXPECT_EQ(attest(socket_, 0, random_bytes(16), {}).rc, 0x101u);
  EXPECT_EQ(attest(socket_, 2048, random_bytes(16), {}).rc, 0x084u);
  EXPECT_EQ(attest(socket_, 0, random_bytes(16), random_bytes(513)).rc, 0x095u);
  auto d = card.call({{"op", "describe"}});
  ASSERT_TRUE(d);
  EXPECT_FALSE((*d)["rot"].get<bool>());
  EXPECT_EQ((*d)["attestation_errors_total"].get<uint64_t>(), 3u);
  EXPECT_EQ(card.stop(SIGTERM), 0) << card.log();
  EXPECT_NE(card.log().find("no --rot"), std::string::npos) << card.log();
}

TEST(TpmCardCommandLine, RotMustBeAStreamSocket) {
  const Ran bad = run({AZOTE_CARD_TPM_BIN, "--control", "/tmp/x.ctl", "--rot", "/tmp/rot.sock"});
  EXPECT_EQ(bad.status, 64);
  EXPECT_NE(bad.err.find("--rot"), std::string::npos) << bad.err;
  const Ran help = run({AZOTE_CARD_TPM_BIN, "--help"});
  EXPECT_NE(help.out.find("--rot fd:N"), std::string::npos);
  EXPECT_NE(help.out.find("0x20000A01"), std::string::npos);
}

}  // namespace
}  // namespace azote::card_tpm
