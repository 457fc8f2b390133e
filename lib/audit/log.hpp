// The tamper-evident audit log of azote-controller: every API call, accepted or denied,
// is appended as one line of JSON to a hash chain whose records the host key signs.
//
// Record (one line, '\n'-terminated, keys in sorted order):
//   {"detail":{...}, "error":"...", "hash":"<hex>", "method":"...", "outcome":"allowed",
//    "prev":"<hex>", "principal":"...", "resources":["..."], "seq":N, "sig":"<base64>",
//    "time":"2025-01-31T12:34:56.789Z"}
//   seq       1, 2, 3, ... with no gap
//   time      RFC 3339, UTC, milliseconds
//   outcome   "allowed", "denied" or "failed"
//   error     omitted when empty; detail omitted when null
//   prev      the previous record's "hash" (64 zeros for seq 1)
//   hash      hex SHA-256 of the canonical form of the record without "hash" and "sig":
//             nlohmann::json::dump() with no indentation, keys sorted (nlohmann's object
//             is an ordered std::map), UTF-8 unescaped, invalid UTF-8 replaced by U+FFFD.
//             Parsing the line and dumping it again yields the same bytes, and a
//             reader requires exactly that: a line in any other form (a repeated key,
//             keys out of order, other whitespace or escapes, a CRLF ending) is
//             refused even when its hash matches, because JSON readers disagree on
//             such text (which of two "outcome" keys counts?) and every reader must
//             see the record that was signed. The head file likewise.
//   sig       base64 (with padding) of the Ed25519 signature over the 32 raw hash bytes
//
// Head anchor PATH.head, rewritten atomically after every append so that cutting records
// off the end is detectable: {"hash":"<hex>","seq":N,"sig":"<base64>"} with the signature
// over "azote-audit-head" || seq as 8 bytes big-endian || the 32 raw hash bytes (a message
// of 56 bytes, so it can never be mistaken for a record signature). An empty log's head is
// seq 0 with a hash of 32 zero bytes.
//
// Limits: the chain and the head prove order, integrity and completeness up to the head
// the verifier holds; someone able to replace both the log and PATH.head with an older
// pair of the same log (a rollback) is caught only by comparing with a head kept
// elsewhere (ship heads off the host). Anyone with the private key can rewrite history.
#pragma once

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "audit/error.hpp"
#include "audit/signing.hpp"
#include "base/unique_fd.hpp"

namespace azote::audit {

inline constexpr size_t kHashBytes = 32;
using Hash = std::array<uint8_t, kHashBytes>;
// Upper bound of one record line; append() refuses larger entries.
inline constexpr size_t kMaxRecordBytes = 1 << 20;

struct Entry {
  std::string principal;                 // who called ("" if unauthenticated)
  std::string method;                    // the API method, e.g. "vm.create"; never empty
  std::vector<std::string> resources;    // what it touched
  std::string outcome;                   // "allowed", "denied" or "failed"
  std::string error;                     // why it was denied or failed; omitted if empty
  nlohmann::json detail = nullptr;       // optional extra fields; omitted if null
};

// SHA-256 of a record's canonical form (record without "hash" and "sig"; see above).
Hash record_hash(const nlohmann::json& record);
// The head sidecar of a log: PATH.head.
std::string head_path_for(const std::string& log_path);

class AuditLog {
 public:
  // Opens (or creates, with mode 0600) the log at path and takes an exclusive flock on it.
  // An existing log is verified in full with key's public half (the head included) and
  // continued; an incomplete last line left by a crash is cut off and an
  // "audit.recovered" record with detail {"truncated_bytes": N} is appended. Any other
  // inconsistency fails with kCorrupt: a broken chain is never extended.
  static AuditResult<std::unique_ptr<AuditLog>> open(const std::string& path,
                                                     const SigningKey& key);
  ~AuditLog();
  AuditLog(const AuditLog&) = delete;
  AuditLog& operator=(const AuditLog&) = delete;

  // Appends one record and returns its seq once the line and the head are on disk
  // (write() of the whole line with O_APPEND, fdatasync, head rewrite). Thread-safe;
  // records are written in seq order. Serializing and signing run outside any lock; a
  // short lock assigns seq/prev/time and hashes, a second one covers only the write,
  // fdatasync and head rewrite. After an I/O failure every later append fails with
  // kBroken (fail closed); reopening repairs or refuses the log.
  AuditResult<uint64_t> append(const Entry& entry);

  // The seq of the last record on disk (0 for an empty log).
  uint64_t last_seq() const;
  const std::string& path() const { return path_; }

 private:
  AuditLog(std::string path, SigningKey key, UniqueFd fd, UniqueFd dirfd);
  void mark_broken();

  const std::string path_;
  const std::string head_path_;
  const SigningKey key_;
  UniqueFd fd_;
  UniqueFd dirfd_;
  std::atomic<bool> broken_{false};

  std::mutex chain_mu_;     // guards next_seq_, last_hash_
  uint64_t next_seq_ = 0;   // the last seq handed out
  Hash last_hash_{};

  mutable std::mutex io_mu_;  // guards written_seq_, size_; held for write+fsync+head
  std::condition_variable io_cv_;
  uint64_t written_seq_ = 0;
  uint64_t size_ = 0;         // bytes of the log on disk
};

}  // namespace azote::audit
