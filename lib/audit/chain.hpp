// Internal: the record and head codecs and the chain walk shared by AuditLog::open()
// and verify_file().
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "audit/log.hpp"
#include "audit/signing.hpp"

namespace azote::audit::detail {

Hash sha256(std::string_view data);
std::string to_hex(std::span<const uint8_t> bytes);
bool from_hex(std::string_view text, std::span<uint8_t> out);  // lowercase, exact length
std::string to_base64(std::span<const uint8_t> bytes);
bool signature_from_base64(std::string_view text, Signature& out);  // canonical only
// The canonical serialization the record hash covers (see log.hpp).
std::string canonical(const nlohmann::json& record_without_hash_and_sig);
// "azote-audit-head" || seq (big-endian) || hash.
std::vector<uint8_t> head_message(uint64_t seq, const Hash& hash);
// The head file's text for (seq, hash, signature).
std::string head_text(uint64_t seq, const Hash& hash, const Signature& sig);

struct ChainState {
  uint64_t records = 0;
  uint64_t last_seq = 0;
  Hash last_hash{};    // zeros for an empty log
  Hash before_last{};  // the hash of record last_seq - 1 (the last record's prev)
};

struct ScanOutcome {
  bool ok = false;
  ChainState state;       // everything verified before the failure
  uint64_t bad_line = 0;
  std::string reason;
  uint64_t good_bytes = 0;  // length of the verified prefix of the file
  // The only failure is the last line, which has no '\n' or is not JSON: what a crash
  // in the middle of a write leaves. open() cuts it off; verify_file() reports it.
  bool bad_tail = false;
};
// Walks the whole log from its start (pread, so fd's offset is irrelevant).
ScanOutcome scan_log(int fd, const VerifyKey& key);

struct Head {
  uint64_t seq = 0;
  Hash hash{};
};
struct HeadRead {
  enum Status { kOk, kMissing, kBad } status = kBad;
  Head head;
  std::string reason;
};
HeadRead read_head(const std::string& path, const VerifyKey& key);
// nullopt if head agrees with the log (equal, or exactly one record behind: then
// *behind_by_one is set); otherwise the reason.
std::optional<std::string> compare_head(const Head& head, const ChainState& log,
                                        bool* behind_by_one);

}  // namespace azote::audit::detail
