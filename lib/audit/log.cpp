#include "audit/log.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

#include "audit/chain.hpp"
#include "audit/fs.hpp"

namespace azote::audit {

using nlohmann::json;

namespace {

// "2025-01-31T12:34:56.789Z"
std::string now_rfc3339() {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  tm t{};
  ::gmtime_r(&ts.tv_sec, &t);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", t.tm_year + 1900,
                t.tm_mon + 1, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec,
                static_cast<int>(ts.tv_nsec / 1000000));
  return buf;
}

bool valid_outcome(const std::string& o) {
  return o == "allowed" || o == "denied" || o == "failed";
}

// Room a record line needs beyond its canonical body: "hash", "sig" and the newline.
constexpr size_t kLineOverhead = 256;

AuditResult<void> write_head(const std::string& head_path, const SigningKey& key, uint64_t seq,
                             const Hash& hash, int dirfd) {
  AZOTE_TRY(sig, key.sign(detail::head_message(seq, hash)));
  return detail::write_file_atomic(head_path, detail::head_text(seq, hash, sig), 0600, dirfd);
}

}  // namespace

AuditLog::AuditLog(std::string path, SigningKey key, UniqueFd fd, UniqueFd dirfd)
    : path_(std::move(path)),
      head_path_(head_path_for(path_)),
      key_(std::move(key)),
      fd_(std::move(fd)),
      dirfd_(std::move(dirfd)) {}

AuditLog::~AuditLog() = default;

AuditResult<std::unique_ptr<AuditLog>> AuditLog::open(const std::string& path,
                                                      const SigningKey& key) {
  AZOTE_TRY(vk, key.verify_key());
  const std::string head_path = head_path_for(path);
  AZOTE_TRY(dirfd, detail::open_dir_of(path));

  UniqueFd fd(::open(path.c_str(), O_RDWR | O_APPEND | O_CLOEXEC));
  if (!fd && errno == ENOENT) {
    // A new log. Its head (seq 0) is written first, so that from then on a missing head
    // next to a log is always someone's doing, never a crash.
    detail::HeadRead head = detail::read_head(head_path, vk);
    if (head.status == detail::HeadRead::kMissing) {
      AZOTE_TRYV(write_head(head_path, key, 0, Hash{}, dirfd.get()));
    } else if (head.status == detail::HeadRead::kBad) {
      return make_error(AuditErrc::kCorrupt, path + ": " + head.reason);
    } else if (head.head.seq != 0) {
      return make_error(AuditErrc::kCorrupt, path + " is missing but its head says seq " +
                                                 std::to_string(head.head.seq) + ": log deleted");
    }
    fd.reset(::open(path.c_str(), O_RDWR | O_APPEND | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!fd) return errno_error(AuditErrc::kIo, "create " + path);
    if (::fsync(dirfd.get()) != 0) return errno_error(AuditErrc::kIo, "fsync directory of " + path);
  } else if (!fd) {
    return errno_error(AuditErrc::kIo, "open " + path);
  }
  if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK)
      return make_error(AuditErrc::kBusy, path + " is already open for appending", errno);
    return errno_error(AuditErrc::kIo, "flock " + path);
  }

  detail::ScanOutcome scan = detail::scan_log(fd.get(), vk);
  if (!scan.ok && !scan.bad_tail) return make_error(AuditErrc::kCorrupt, path + ": " + scan.reason);

  detail::HeadRead head = detail::read_head(head_path, vk);
  bool rewrite_head = false;
  if (head.status == detail::HeadRead::kMissing && scan.state.records == 0) {
    rewrite_head = true;  // an empty log has nothing to lose; anchor it again
  } else if (head.status != detail::HeadRead::kOk) {
    return make_error(AuditErrc::kCorrupt, path + ": " + head.reason);
  } else if (auto why = detail::compare_head(head.head, scan.state, &rewrite_head)) {
    return make_error(AuditErrc::kCorrupt, path + ": " + *why);
  }

  uint64_t truncated = 0;
  if (scan.bad_tail) {
    struct stat st{};
    if (::fstat(fd.get(), &st) != 0) return errno_error(AuditErrc::kIo, "stat " + path);
    truncated = static_cast<uint64_t>(st.st_size) - scan.good_bytes;
    if (::ftruncate(fd.get(), static_cast<off_t>(scan.good_bytes)) != 0)
      return errno_error(AuditErrc::kIo, "truncate the incomplete last line of " + path);
    if (::fsync(fd.get()) != 0) return errno_error(AuditErrc::kIo, "fsync " + path);
  }

  std::unique_ptr<AuditLog> log(new AuditLog(path, key, std::move(fd), std::move(dirfd)));
  log->next_seq_ = log->written_seq_ = scan.state.last_seq;
  log->last_hash_ = scan.state.last_hash;
  log->size_ = scan.good_bytes;
  if (rewrite_head)
    AZOTE_TRYV(write_head(head_path, key, scan.state.last_seq, scan.state.last_hash,
                          log->dirfd_.get()));
  if (scan.bad_tail) {
    Entry e;
    e.principal = "azote-audit";
    e.method = "audit.recovered";
    e.resources = {path};
    e.outcome = "allowed";
    e.detail = {{"truncated_bytes", truncated}};
    AZOTE_TRY(seq, log->append(e));
    (void)seq;
  }
  return log;
}

void AuditLog::mark_broken() {
  {
    std::lock_guard lk(io_mu_);
    broken_ = true;
  }
  io_cv_.notify_all();
}

uint64_t AuditLog::last_seq() const {
  std::lock_guard lk(io_mu_);
  return written_seq_;
}

AuditResult<uint64_t> AuditLog::append(const Entry& entry) {
  if (entry.method.empty()) return make_error(AuditErrc::kInvalid, "audit entry without a method");
  if (!valid_outcome(entry.outcome))
    return make_error(AuditErrc::kInvalid,
                      "audit outcome \"" + entry.outcome + "\" is not allowed, denied or failed");

  // Everything that does not depend on the chain, outside any lock.
  json body = json::object();
  body["principal"] = entry.principal;
  body["method"] = entry.method;
  body["resources"] = entry.resources;
  body["outcome"] = entry.outcome;
  if (!entry.error.empty()) body["error"] = entry.error;
  if (!entry.detail.is_null()) {
    // Round trip through text so the record holds exactly what a verifier will parse
    // (number kinds, replaced invalid UTF-8, binary values as objects).
    json d = json::parse(detail::canonical(entry.detail), nullptr, false);
    if (d.is_discarded()) return make_error(AuditErrc::kInvalid, "audit detail is not JSON");
    body["detail"] = std::move(d);
  }

  // Take the next link of the chain: seq, time, prev and the record hash.
  uint64_t seq = 0;
  Hash hash{};
  {
    std::lock_guard lk(chain_mu_);
    if (broken_) return make_error(AuditErrc::kBroken, path_ + ": an earlier append failed");
    seq = next_seq_ + 1;
    body["seq"] = seq;
    body["time"] = now_rfc3339();
    body["prev"] = detail::to_hex(last_hash_);
    std::string canon = detail::canonical(body);
    if (canon.size() + kLineOverhead > kMaxRecordBytes)
      return make_error(AuditErrc::kInvalid, "audit record of " + std::to_string(canon.size()) +
                                                 " bytes is too large");
    hash = detail::sha256(canon);
    next_seq_ = seq;
    last_hash_ = hash;
  }

  // From here seq is taken: it must reach the disk or the log is broken (a later seq
  // already links to it).
  auto sig = key_.sign(hash);
  auto head_sig = key_.sign(detail::head_message(seq, hash));
  if (!sig || !head_sig) {
    mark_broken();
    return Unexpected{!sig ? std::move(sig).error() : std::move(head_sig).error()};
  }
  body["hash"] = detail::to_hex(hash);
  body["sig"] = detail::to_base64(*sig);
  std::string line = detail::canonical(body);
  line.push_back('\n');
  const std::string head = detail::head_text(seq, hash, *head_sig);

  std::unique_lock lk(io_mu_);
  io_cv_.wait(lk, [&] { return written_seq_ + 1 == seq || broken_; });
  if (broken_) return make_error(AuditErrc::kBroken, path_ + ": an earlier append failed");
  auto fail = [&](const std::string& what, int err) -> AuditResult<uint64_t> {
    broken_ = true;
    lk.unlock();
    io_cv_.notify_all();
    return make_error(AuditErrc::kIo, path_ + ": " + what, err);
  };
  ssize_t w = ::write(fd_.get(), line.data(), line.size());
  if (w != static_cast<ssize_t>(line.size())) {
    int err = w < 0 ? errno : EIO;
    if (w > 0) {
      // Learn why (ENOSPC, EFBIG) from writing the rest, then take the partial line back
      // so the file stays a clean chain (open() would cut it off too).
      size_t done = static_cast<size_t>(w);
      if (::write(fd_.get(), line.data() + done, line.size() - done) < 0) err = errno;
      if (::ftruncate(fd_.get(), static_cast<off_t>(size_)) != 0) err = errno;
    }
    return fail("write record " + std::to_string(seq), err);
  }
  if (::fdatasync(fd_.get()) != 0) return fail("fdatasync record " + std::to_string(seq), errno);
  size_ += line.size();
  auto hr = detail::write_file_atomic(head_path_, head, 0600, dirfd_.get());
  if (!hr) return fail("head: " + hr.error().message(), 0);
  written_seq_ = seq;
  lk.unlock();
  io_cv_.notify_all();
  return seq;
}

}  // namespace azote::audit
