#include <fcntl.h>
#include <sys/resource.h>
#include <csignal>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>

#include "audit/chain.hpp"
#include "audit/log.hpp"
#include "audit/signing.hpp"
#include "audit/verify.hpp"

namespace azote::audit {
namespace {

using nlohmann::json;

std::span<const uint8_t> bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}
void write_file(const std::string& path, const std::string& data) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << data;
}
std::vector<std::string> read_lines(const std::string& path) {
  std::vector<std::string> lines;
  std::istringstream in(read_file(path));
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  return lines;
}
void write_lines(const std::string& path, const std::vector<std::string>& lines) {
  std::string out;
  for (const auto& l : lines) out += l + "\n";
  write_file(path, out);
}

Entry sample(int i) {
  Entry e;
  e.principal = "user-" + std::to_string(i % 7);
  e.method = i % 3 == 0 ? "vm.create" : "volume.attach";
  e.resources = {"vm/" + std::to_string(i), "vol/" + std::to_string(i * 2)};
  e.outcome = i % 5 == 0 ? "denied" : i % 11 == 0 ? "failed" : "allowed";
  if (e.outcome != "allowed") e.error = "policy says no to #" + std::to_string(i);
  if (i % 4 == 0) e.detail = {{"vcpus", i}, {"ratio", 0.1 * i}, {"tags", {"a", "b"}}};
  return e;
}

class AuditTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/azote-audit-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/audit.log";
    auto k = SigningKey::generate();
    ASSERT_TRUE(k.ok()) << k.error().message();
    key_.emplace(std::move(k).value());
    auto vk = key_->verify_key();
    ASSERT_TRUE(vk.ok());
    vkey_.emplace(std::move(vk).value());
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::unique_ptr<AuditLog> open_log() {
    auto log = AuditLog::open(path_, *key_);
    EXPECT_TRUE(log.ok()) << log.error().message();
    return log.ok() ? std::move(log).value() : nullptr;
  }
  void make_log(int n) {
    auto log = open_log();
    ASSERT_TRUE(log);
    for (int i = 1; i <= n; ++i) {
      auto seq = log->append(sample(i));
      ASSERT_TRUE(seq.ok()) << seq.error().message();
      ASSERT_EQ(*seq, static_cast<uint64_t>(i));
    }
  }
  VerifyReport verify() { return verify_file(path_, *vkey_); }
  // The reason, after checking that open() refuses the same log.
  void expect_open_refuses(const std::string& what) {
    auto log = AuditLog::open(path_, *key_);
    ASSERT_FALSE(log.ok());
    EXPECT_EQ(log.error().code, AuditErrc::kCorrupt);
    EXPECT_NE(log.error().message().find(what), std::string::npos) << log.error().message();
  }
  // Re-signs a record with the real key (a forger who holds the key, for prev tests).
  std::string resign(json j) {
    Hash h = record_hash(j);
    j["hash"] = detail::to_hex(h);
    j["sig"] = detail::to_base64(*key_->sign(h));
    return j.dump();
  }

  std::string dir_, path_;
  std::optional<SigningKey> key_;
  std::optional<VerifyKey> vkey_;
};

// ---- keys ----

TEST_F(AuditTest, SignAndVerify) {
  std::string msg = "hello audit";
  auto sig = key_->sign(bytes(msg));
  ASSERT_TRUE(sig.ok());
  EXPECT_TRUE(vkey_->verify(bytes(msg), *sig));
  std::string other = "hello audiT";
  EXPECT_FALSE(vkey_->verify(bytes(other), *sig));
  auto bad = *sig;
  bad[10] ^= 1;
  EXPECT_FALSE(vkey_->verify(bytes(msg), bad));
  EXPECT_FALSE(vkey_->verify(bytes(msg), std::span<const uint8_t>(sig->data(), 63)));
}

TEST_F(AuditTest, PemFilesRoundTrip) {
  std::string kpath = dir_ + "/host.key";
  ASSERT_TRUE(key_->save_pem_file(kpath).ok());
  struct stat st{};
  ASSERT_EQ(::stat(kpath.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_FALSE(std::filesystem::exists(kpath + ".tmp"));
  auto loaded = SigningKey::load_pem_file(kpath);
  ASSERT_TRUE(loaded.ok()) << loaded.error().message();
  std::string msg = "x";
  auto pem = key_->public_pem();
  ASSERT_TRUE(pem.ok());
  EXPECT_NE(pem->find("BEGIN PUBLIC KEY"), std::string::npos);
  auto vk = VerifyKey::from_pem(*pem);
  ASSERT_TRUE(vk.ok());
  EXPECT_TRUE(vk->verify(bytes(msg), *loaded->sign(bytes(msg))));
  EXPECT_EQ(vk->raw(), vkey_->raw());
  // Saving again replaces the file atomically.
  auto other = SigningKey::generate();
  ASSERT_TRUE(other->save_pem_file(kpath).ok());
  auto reloaded = SigningKey::load_pem_file(kpath);
  ASSERT_TRUE(reloaded.ok());
  EXPECT_FALSE(vk->verify(bytes(msg), *reloaded->sign(bytes(msg))));
}

TEST_F(AuditTest, RejectsBadKeys) {
  EXPECT_EQ(VerifyKey::from_pem("not a key").error().code, AuditErrc::kBadKey);
  EXPECT_EQ(SigningKey::from_pem("not a key").error().code, AuditErrc::kBadKey);
  EXPECT_EQ(SigningKey::load_pem_file(dir_ + "/nope").error().code, AuditErrc::kIo);
  // An EC key is a valid PEM but not Ed25519.
  EVP_PKEY* ec = EVP_EC_gen("P-256");
  ASSERT_NE(ec, nullptr);
  BIO* bio = BIO_new(BIO_s_mem());
  ASSERT_EQ(PEM_write_bio_PrivateKey(bio, ec, nullptr, nullptr, 0, nullptr, nullptr), 1);
  char* data = nullptr;
  long n = BIO_get_mem_data(bio, &data);
  std::string pem(data, static_cast<size_t>(n));
  BIO_free(bio);
  EVP_PKEY_free(ec);
  auto k = SigningKey::from_pem(pem);
  ASSERT_FALSE(k.ok());
  EXPECT_EQ(k.error().code, AuditErrc::kBadKey);
  EXPECT_NE(k.error().message().find("not Ed25519"), std::string::npos);
}

// ---- the log ----

TEST_F(AuditTest, FreshLogHasAnchoredHead) {
  ASSERT_TRUE(open_log());
  EXPECT_TRUE(std::filesystem::exists(path_ + ".head"));
  auto rep = verify();
  EXPECT_TRUE(rep.ok) << rep.reason;
  EXPECT_EQ(rep.records, 0u);
}

TEST_F(AuditTest, RoundTripManyRecordsVerifies) {
  constexpr int kRecords = 2000;
  auto log = open_log();
  ASSERT_TRUE(log);
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 1; i <= kRecords; ++i) ASSERT_EQ(*log->append(sample(i)), static_cast<uint64_t>(i));
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("[   PERF   ] 1 thread: %d appends in %.3f s = %.0f appends/s\n", kRecords, secs,
              kRecords / secs);
  // Unusual content: invalid UTF-8, control characters, numbers of every kind.
  Entry odd;
  odd.principal = std::string("bad\xff\xfeutf8\n\"q\"");
  odd.method = "vm.\x01odd";
  odd.outcome = "failed";
  odd.error = "é ✓";
  odd.detail = {{"neg", -5}, {"big", 18446744073709551615ull}, {"pi", 3.141592653589793},
                {"tiny", 1e-300}, {"nan", std::nan("")}, {"empty", json::object()}, {"n", nullptr}};
  ASSERT_EQ(*log->append(odd), kRecords + 1u);
  EXPECT_EQ(log->last_seq(), kRecords + 1u);

  auto rep = verify();
  EXPECT_TRUE(rep.ok) << rep.reason;
  EXPECT_EQ(rep.records, kRecords + 1u);
  EXPECT_EQ(rep.last_seq, kRecords + 1u);
  EXPECT_TRUE(rep.reason.empty());

  auto lines = read_lines(path_);
  ASSERT_EQ(lines.size(), kRecords + 1u);
  std::regex time_re(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)");
  std::string prev(64, '0');
  for (size_t i = 0; i < lines.size(); ++i) {
    json j = json::parse(lines[i]);
    EXPECT_EQ(j["seq"], i + 1);
    EXPECT_EQ(j["prev"], prev);
    EXPECT_TRUE(std::regex_match(j["time"].get<std::string>(), time_re));
    EXPECT_EQ(j["hash"], detail::to_hex(record_hash(j)));
    EXPECT_EQ(j.contains("error"), j["outcome"] != "allowed");
    EXPECT_EQ(j.contains("detail"), i == lines.size() - 1 || (i + 1) % 4 == 0);
    prev = j["hash"];
  }
  json last = json::parse(lines.back());
  EXPECT_EQ(last["principal"], "bad\xEF\xBF\xBD\xEF\xBF\xBDutf8\n\"q\"");
  EXPECT_TRUE(last["detail"]["nan"].is_null());
  json head = json::parse(read_file(path_ + ".head"));
  EXPECT_EQ(head["seq"], kRecords + 1u);
  EXPECT_EQ(head["hash"], prev);
}

TEST_F(AuditTest, ConcurrentAppendsFromEightThreads) {
  constexpr int kThreads = 8, kPer = 250;
  auto log = open_log();
  ASSERT_TRUE(log);
  std::vector<std::vector<uint64_t>> seqs(kThreads);
  std::atomic<int> failures{0};
  auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPer; ++i) {
        auto s = log->append(sample(t * kPer + i));
        if (!s) {
          ++failures;
          return;
        }
        seqs[t].push_back(*s);
      }
    });
  for (auto& th : threads) th.join();
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("[   PERF   ] %d threads: %d appends in %.3f s = %.0f appends/s\n", kThreads,
              kThreads * kPer, secs, kThreads * kPer / secs);
  ASSERT_EQ(failures, 0);
  std::set<uint64_t> all;
  for (auto& v : seqs) {
    EXPECT_TRUE(std::is_sorted(v.begin(), v.end()));  // a thread's appends stay in order
    all.insert(v.begin(), v.end());
  }
  ASSERT_EQ(all.size(), static_cast<size_t>(kThreads * kPer));  // no duplicate seq
  EXPECT_EQ(*all.begin(), 1u);
  EXPECT_EQ(*all.rbegin(), static_cast<uint64_t>(kThreads * kPer));
  auto rep = verify();
  EXPECT_TRUE(rep.ok) << rep.reason;
  EXPECT_EQ(rep.records, static_cast<uint64_t>(kThreads * kPer));
}

TEST_F(AuditTest, RejectsBadEntries) {
  auto log = open_log();
  Entry e = sample(1);
  e.outcome = "maybe";
  EXPECT_EQ(log->append(e).error().code, AuditErrc::kInvalid);
  e = sample(1);
  e.method.clear();
  EXPECT_EQ(log->append(e).error().code, AuditErrc::kInvalid);
  e = sample(1);
  e.detail = {{"blob", std::string(kMaxRecordBytes, 'x')}};
  EXPECT_EQ(log->append(e).error().code, AuditErrc::kInvalid);
  EXPECT_EQ(*log->append(sample(2)), 1u);  // refusals consume no seq
  EXPECT_TRUE(verify().ok);
}

TEST_F(AuditTest, SecondOpenIsBusy) {
  auto log = open_log();
  auto again = AuditLog::open(path_, *key_);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code, AuditErrc::kBusy);
}

TEST_F(AuditTest, ReopenContinuesTheChain) {
  make_log(5);
  {
    auto log = open_log();
    ASSERT_TRUE(log);
    EXPECT_EQ(log->last_seq(), 5u);
    for (int i = 6; i <= 9; ++i) EXPECT_EQ(*log->append(sample(i)), static_cast<uint64_t>(i));
  }
  auto rep = verify();
  EXPECT_TRUE(rep.ok) << rep.reason;
  EXPECT_EQ(rep.records, 9u);
  auto lines = read_lines(path_);
  EXPECT_EQ(json::parse(lines[5])["prev"], json::parse(lines[4])["hash"]);
}

TEST_F(AuditTest, CrashMidWriteIsRepairedAndOnRecord) {
  make_log(5);
  // What a crash during the write of record 6 leaves: part of a line, no newline.
  std::string partial = read_lines(path_)[2].substr(0, 57);
  write_file(path_, read_file(path_) + partial);
  EXPECT_EQ(verify().reason, "line 6: incomplete last line");
  {
    auto log = open_log();
    ASSERT_TRUE(log);
    EXPECT_EQ(log->last_seq(), 6u);
    EXPECT_EQ(*log->append(sample(7)), 7u);
  }
  auto rep = verify();
  EXPECT_TRUE(rep.ok) << rep.reason;
  EXPECT_EQ(rep.records, 7u);
  json rec = json::parse(read_lines(path_)[5]);
  EXPECT_EQ(rec["method"], "audit.recovered");
  EXPECT_EQ(rec["seq"], 6);
  EXPECT_EQ(rec["detail"], json({{"truncated_bytes", partial.size()}}));
}

TEST_F(AuditTest, GarbageLastLineIsRepaired) {
  make_log(3);
  write_file(path_, read_file(path_) + std::string("\0\0\0\0\n", 5));  // zeros + a newline
  EXPECT_EQ(verify().reason, "line 4: not JSON");
  ASSERT_TRUE(open_log());
  auto rep = verify();
  EXPECT_TRUE(rep.ok) << rep.reason;
  EXPECT_EQ(json::parse(read_lines(path_)[3])["detail"]["truncated_bytes"], 5);
}

TEST_F(AuditTest, HeadOneBehindIsACrashNotTampering) {
  make_log(5);
  std::string head5 = read_file(path_ + ".head");
  {
    auto log = open_log();
    ASSERT_EQ(*log->append(sample(6)), 6u);
  }
  write_file(path_ + ".head", head5);  // crash between the log write and the head rewrite
  EXPECT_TRUE(verify().ok) << verify().reason;
  ASSERT_TRUE(open_log());  // rewrites the head
  EXPECT_EQ(json::parse(read_file(path_ + ".head"))["seq"], 6);
  EXPECT_TRUE(verify().ok);
}

TEST_F(AuditTest, FailedWriteBreaksTheLogUntilReopened) {
  make_log(3);
  auto log = open_log();
  ASSERT_TRUE(log);
  // The file may grow by only a few bytes: the next write is cut short (EFBIG).
  auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  rlimit old{};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old), 0);
  rlimit small = old;
  small.rlim_cur = std::filesystem::file_size(path_) + 10;
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
  auto r = log->append(sample(4));
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &old), 0);
  std::signal(SIGXFSZ, old_handler);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, AuditErrc::kIo);
  EXPECT_EQ(r.error().errnum, EFBIG);
  EXPECT_EQ(log->append(sample(5)).error().code, AuditErrc::kBroken);  // fail closed
  log.reset();
  EXPECT_TRUE(verify().ok) << verify().reason;  // the partial line was taken back
  log = open_log();
  ASSERT_TRUE(log);
  EXPECT_EQ(*log->append(sample(4)), 4u);
}

// ---- tampering: verify_file names it, open() refuses it ----

class TamperTest : public AuditTest {
 protected:
  void SetUp() override {
    AuditTest::SetUp();
    make_log(10);
    lines_ = read_lines(path_);
    ASSERT_EQ(lines_.size(), 10u);
    ASSERT_TRUE(verify().ok);
  }
  void expect_fails(const std::string& reason, uint64_t bad_line) {
    auto rep = verify();
    EXPECT_FALSE(rep.ok);
    EXPECT_EQ(rep.reason, reason);
    EXPECT_EQ(rep.bad_line, bad_line);
  }
  std::vector<std::string> lines_;
};

TEST_F(TamperTest, ModifiedField) {
  json j = json::parse(lines_[4]);
  j["outcome"] = "allowed";
  j["principal"] = "someone-else";
  lines_[4] = j.dump();
  write_lines(path_, lines_);
  expect_fails("line 5: record modified (hash mismatch)", 5);
  expect_open_refuses("line 5: record modified (hash mismatch)");
}

TEST_F(TamperTest, ModifiedAndRehashedButNotResigned) {
  json j = json::parse(lines_[4]);
  j["principal"] = "someone-else";
  j["hash"] = detail::to_hex(record_hash(j));
  lines_[4] = j.dump();
  write_lines(path_, lines_);
  expect_fails("line 5: bad signature", 5);
  expect_open_refuses("line 5: bad signature");
}

TEST_F(TamperTest, RemovedMiddleRecord) {
  lines_.erase(lines_.begin() + 4);
  write_lines(path_, lines_);
  expect_fails("line 5: seq 6 follows seq 4: record(s) removed", 5);
  expect_open_refuses("record(s) removed");
}

TEST_F(TamperTest, RemovedLastRecordCaughtByHead) {
  lines_.pop_back();
  write_lines(path_, lines_);
  auto rep = verify();
  EXPECT_FALSE(rep.ok);
  EXPECT_TRUE(rep.chain_ok);
  EXPECT_EQ(rep.reason, "log ends at seq 9 but the head says seq 10: truncated");
  EXPECT_EQ(rep.bad_line, 0u);
  expect_open_refuses("truncated");
}

TEST_F(TamperTest, SwappedRecords) {
  std::swap(lines_[4], lines_[5]);
  write_lines(path_, lines_);
  expect_fails("line 5: seq 6 follows seq 4: records reordered (seq 5 is at line 6)", 5);
  expect_open_refuses("records reordered");
}

TEST_F(TamperTest, RecordMovedToTheEnd) {
  std::string moved = lines_[2];
  lines_.erase(lines_.begin() + 2);
  lines_.push_back(moved);
  write_lines(path_, lines_);
  expect_fails("line 3: seq 4 follows seq 2: records reordered (seq 3 is at line 10)", 3);
}

TEST_F(TamperTest, DuplicatedRecord) {
  lines_.insert(lines_.begin() + 7, lines_[6]);
  write_lines(path_, lines_);
  expect_fails("line 8: seq 7 repeated: record duplicated", 8);
}

TEST_F(TamperTest, TruncatedInsideTheLastLine) {
  std::string all = read_file(path_);
  write_file(path_, all.substr(0, all.size() - 30));
  expect_fails("line 10: incomplete last line", 10);
  // Not a crash: the head says record 10 was complete, so open() must not cut it off.
  expect_open_refuses("log ends at seq 9 but the head says seq 10: truncated");
}

TEST_F(TamperTest, DeletedHeadFile) {
  std::filesystem::remove(path_ + ".head");
  auto rep = verify();
  EXPECT_FALSE(rep.ok);
  EXPECT_TRUE(rep.chain_ok);
  EXPECT_EQ(rep.records, 10u);
  EXPECT_EQ(rep.reason, "head file " + path_ + ".head missing: truncation cannot be ruled out");
  expect_open_refuses("missing");
}

TEST_F(TamperTest, WrongPublicKey) {
  auto other = SigningKey::generate();
  auto vk = other->verify_key();
  auto rep = verify_file(path_, *vk);
  EXPECT_FALSE(rep.ok);
  EXPECT_EQ(rep.reason, "line 1: bad signature (no record verifies with this key: wrong public key?)");
  EXPECT_EQ(rep.bad_line, 1u);
  auto log = AuditLog::open(path_, *other);
  ASSERT_FALSE(log.ok());
  EXPECT_EQ(log.error().code, AuditErrc::kCorrupt);
}

TEST_F(TamperTest, HeadFileForged) {
  json h = json::parse(read_file(path_ + ".head"));
  h["seq"] = 9;
  write_file(path_ + ".head", h.dump());
  auto rep = verify();
  EXPECT_EQ(rep.reason, "head file signature invalid");
  EXPECT_TRUE(rep.chain_ok);
  expect_open_refuses("head file signature invalid");
}

TEST_F(TamperTest, StaleHeadFile) {
  // A genuine older head, more than one record behind: not what a crash leaves.
  std::filesystem::copy_file(path_ + ".head", dir_ + "/head10");
  {
    auto log = open_log();
    ASSERT_EQ(*log->append(sample(11)), 11u);
    ASSERT_EQ(*log->append(sample(12)), 12u);
  }
  std::filesystem::copy_file(dir_ + "/head10", path_ + ".head",
                             std::filesystem::copy_options::overwrite_existing);
  EXPECT_EQ(verify().reason,
            "the head says seq 10 but the log goes on to seq 12: head file stale or replaced");
  expect_open_refuses("stale or replaced");
}

TEST_F(TamperTest, NotJson) {
  lines_[2] = "{\"seq\": 3, oops";
  write_lines(path_, lines_);
  expect_fails("line 3: not JSON", 3);
  expect_open_refuses("line 3: not JSON");
}

TEST_F(TamperTest, PrevLinkBroken) {
  // Even with the signing key, a record that does not link to its predecessor shows.
  json j = json::parse(lines_[4]);
  j["prev"] = json::parse(lines_[2])["hash"];
  lines_[4] = resign(j);
  write_lines(path_, lines_);
  expect_fails("line 5: prev does not match line 4's hash", 5);
  expect_open_refuses("prev does not match");
}

TEST_F(TamperTest, MalformedRecord) {
  json j = json::parse(lines_[1]);
  j["seq"] = "2";
  lines_[1] = resign(j);
  write_lines(path_, lines_);
  expect_fails("line 2: malformed record (field \"seq\" missing or not a positive integer)", 2);
}

// ---- canonical form: the exact bytes the writer produces, nothing else ----
//
// The hash covers the record as nlohmann parses it. A line that parses to the same
// record but is written differently would verify, yet other JSON readers may read it
// differently (a repeated key: some take the first value, nlohmann the last). So a
// record must be byte for byte what the writer wrote.

TEST_F(TamperTest, RepeatedKeyIsRefused) {
  // Record 5 was denied. A second, earlier "outcome" makes first-value readers see
  // "allowed" while the hash and signature still verify with nlohmann (last wins).
  const std::string real = "\"outcome\":\"denied\"";
  const size_t at = lines_[4].find(real);
  ASSERT_NE(at, std::string::npos) << lines_[4];
  lines_[4].insert(at, "\"outcome\":\"allowed\",");
  write_lines(path_, lines_);
  expect_fails("line 5: record not in canonical form (key \"outcome\" repeated)", 5);
  expect_open_refuses("line 5: record not in canonical form (key \"outcome\" repeated)");
}

TEST_F(TamperTest, ReorderedKeysAreRefused) {
  // The same record with "seq" moved to the front: same parsed value, other bytes.
  const std::string seq = ",\"seq\":5";
  const size_t at = lines_[4].find(seq);
  ASSERT_NE(at, std::string::npos) << lines_[4];
  lines_[4].erase(at, seq.size());
  lines_[4].insert(1, seq.substr(1) + ",");
  write_lines(path_, lines_);
  const std::string first_key = json::parse(lines_[4]).begin().key();
  expect_fails("line 5: record not in canonical form (keys not in sorted order: \"" + first_key +
                   "\" after \"seq\")",
               5);
  expect_open_refuses("line 5: record not in canonical form (keys not in sorted order");
}

TEST_F(TamperTest, CrlfLineEndingIsRefused) {
  std::string crlf;
  for (const auto& l : lines_) crlf += l + "\r\n";
  write_file(path_, crlf);
  expect_fails("line 1: record not in canonical form (CRLF line ending: carriage return before the newline)", 1);
  expect_open_refuses("line 1: record not in canonical form (CRLF line ending");
}

TEST_F(TamperTest, OtherSerializationsAreRefused) {
  // Whitespace and escapes that parse to the same value.
  struct Case {
    std::string from, to;
  };
  for (const auto& c : std::vector<Case>{{"\"seq\":5", "\"seq\": 5"},
                                         {"\"vm/5\"", "\"vm\\/5\""},
                                         {"\"method\":\"", "\"m\\u0065thod\":\""},
                                         {"{", " {"}}) {
    std::vector<std::string> lines = lines_;
    const size_t at = lines[4].find(c.from);
    ASSERT_NE(at, std::string::npos) << c.from;
    lines[4].replace(at, c.from.size(), c.to);
    write_lines(path_, lines);
    auto rep = verify();
    EXPECT_FALSE(rep.ok) << c.to;
    EXPECT_EQ(rep.bad_line, 5u) << c.to;
    EXPECT_EQ(rep.reason.rfind("line 5: record not in canonical form (", 0), 0u) << rep.reason;
  }
}

TEST_F(TamperTest, HeadFileMustBeCanonicalToo) {
  const std::string head = read_file(path_ + ".head");
  ASSERT_EQ(head.back(), '\n');
  write_file(path_ + ".head", head.substr(0, head.size() - 1) + "\r\n");
  auto rep = verify();
  EXPECT_FALSE(rep.ok);
  EXPECT_TRUE(rep.chain_ok);
  EXPECT_EQ(rep.reason, "head file not in canonical form");
  expect_open_refuses("head file not in canonical form");
}

TEST_F(AuditTest, EveryRecordTheWriterProducesIsCanonical) {
  // Details with every JSON kind, escapes, invalid UTF-8 (replaced) and big numbers.
  {
    auto log = open_log();
    ASSERT_TRUE(log);
    for (int i = 1; i <= 40; ++i) {
      Entry e = sample(i);
      e.error = i % 2 ? std::string("bad \xff\xfe byte \"quoted\" \\ \t\n") : "";
      e.detail = {{"n", -i},
                  {"u", 18446744073709551615ull},
                  {"f", 1.0 / 3},
                  {"z", -0.0},
                  {"s", "caf\xc3\xa9 \x01"},
                  {"nested", {{"b", true}, {"a", nullptr}, {"list", {1, "x", 2.5}}}}};
      ASSERT_TRUE(log->append(e).ok());
    }
  }
  auto rep = verify();
  EXPECT_TRUE(rep.ok) << rep.reason;
  EXPECT_EQ(rep.records, 40u);
  EXPECT_TRUE(open_log());
}

TEST_F(TamperTest, DeletedLogWithHeadIsRefused) {
  std::filesystem::remove(path_);
  expect_open_refuses("log deleted");
  EXPECT_FALSE(std::filesystem::exists(path_));
}

}  // namespace
}  // namespace azote::audit
