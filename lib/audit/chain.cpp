#include "audit/chain.hpp"

#include <openssl/evp.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <exception>
#include <set>

#include "audit/fs.hpp"
#include "base/hex.hpp"

namespace azote::audit {

Hash record_hash(const nlohmann::json& record) {
  nlohmann::json body = record;
  if (body.is_object()) {
    body.erase("hash");
    body.erase("sig");
  }
  return detail::sha256(detail::canonical(body));
}

std::string head_path_for(const std::string& log_path) { return log_path + ".head"; }

namespace detail {

using nlohmann::json;

Hash sha256(std::string_view data) {
  Hash h{};
  unsigned int len = 0;
  // EVP_Digest fails only when OpenSSL cannot allocate; a zero hash then never matches.
  if (EVP_Digest(data.data(), data.size(), h.data(), &len, EVP_sha256(), nullptr) != 1 ||
      len != h.size())
    h.fill(0);
  return h;
}

std::string to_hex(std::span<const uint8_t> bytes) { return azote::to_hex(bytes); }

bool from_hex(std::string_view text, std::span<uint8_t> out) {
  if (text.size() != out.size() * 2) return false;
  const auto bytes = azote::from_hex(text, true);
  if (!bytes) return false;
  std::copy(bytes->begin(), bytes->end(), out.begin());
  return true;
}

std::string to_base64(std::span<const uint8_t> bytes) {
  std::string s(4 * ((bytes.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(s.data()), bytes.data(),
                          static_cast<int>(bytes.size()));
  s.resize(n > 0 ? static_cast<size_t>(n) : 0);
  return s;
}

bool signature_from_base64(std::string_view text, Signature& out) {
  constexpr size_t kChars = 4 * ((kSignatureBytes + 2) / 3);  // 88
  if (text.size() != kChars) return false;
  unsigned char buf[kChars];
  int n = EVP_DecodeBlock(buf, reinterpret_cast<const unsigned char*>(text.data()),
                          static_cast<int>(text.size()));
  if (n < static_cast<int>(kSignatureBytes)) return false;
  std::copy_n(buf, kSignatureBytes, out.begin());
  return to_base64(out) == text;  // one encoding per signature: no padding games
}

std::string canonical(const json& record) {
  return record.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::vector<uint8_t> head_message(uint64_t seq, const Hash& hash) {
  static constexpr char kDomain[] = "azote-audit-head";
  std::vector<uint8_t> m(kDomain, kDomain + sizeof kDomain - 1);
  for (int shift = 56; shift >= 0; shift -= 8) m.push_back(static_cast<uint8_t>(seq >> shift));
  m.insert(m.end(), hash.begin(), hash.end());
  return m;
}

std::string head_text(uint64_t seq, const Hash& hash, const Signature& sig) {
  json j = {{"seq", seq}, {"hash", to_hex(hash)}, {"sig", to_base64(sig)}};
  return j.dump() + "\n";
}

namespace {

// Newline-separated lines of a file read with pread from an offset, in large chunks.
class LineReader {
 public:
  struct Line {
    std::string_view text;  // without the '\n'; empty for a too-long line
    uint64_t offset = 0;    // of the line's first byte
    uint64_t length = 0;    // bytes including the '\n' if any
    bool newline = false;
    bool too_long = false;
  };

  LineReader(int fd, uint64_t offset) : fd_(fd), pos_(offset), buf_offset_(offset) {}

  // False at the end of the file or on a read error (error() then is the errno).
  bool next(Line& out) {
    size_t scan = head_;
    for (;;) {
      auto nl = buf_.find('\n', scan);
      if (nl != std::string::npos) {
        out = Line{std::string_view(buf_).substr(head_, nl - head_), buf_offset_ + head_,
                   nl - head_ + 1, true, false};
        head_ = nl + 1;
        return true;
      }
      if (buf_.size() - head_ > kMaxRecordBytes) return skip_long(out);
      if (eof_) {
        if (head_ == buf_.size()) return false;
        out = Line{std::string_view(buf_).substr(head_), buf_offset_ + head_,
                   buf_.size() - head_, false, false};
        head_ = buf_.size();
        return true;
      }
      compact();
      scan = buf_.size();
      if (!fill()) return false;
    }
  }
  int error() const { return err_; }

 private:
  static constexpr size_t kChunk = 1 << 20;

  void compact() {
    buf_.erase(0, head_);
    buf_offset_ += head_;
    head_ = 0;
  }
  bool fill() {
    size_t old = buf_.size();
    buf_.resize(old + kChunk);
    ssize_t r;
    do {
      r = ::pread(fd_, buf_.data() + old, kChunk, static_cast<off_t>(pos_));
    } while (r < 0 && errno == EINTR);
    if (r < 0) {
      err_ = errno;
      buf_.resize(old);
      return false;
    }
    buf_.resize(old + static_cast<size_t>(r));
    pos_ += static_cast<uint64_t>(r);
    if (r == 0) eof_ = true;
    return true;
  }
  // The line at head_ is longer than any record: skip to its end.
  bool skip_long(Line& out) {
    out = Line{{}, buf_offset_ + head_, 0, false, true};
    for (;;) {
      auto nl = buf_.find('\n', head_);
      if (nl != std::string::npos) {
        out.length += nl - head_ + 1;
        out.newline = true;
        head_ = nl + 1;
        return true;
      }
      out.length += buf_.size() - head_;
      head_ = buf_.size();
      if (eof_) return true;
      compact();
      if (!fill()) return false;
    }
  }

  int fd_;
  uint64_t pos_;         // next file offset to read
  uint64_t buf_offset_;  // file offset of buf_[0]
  std::string buf_;
  size_t head_ = 0;      // start of the next line in buf_
  bool eof_ = false;
  int err_ = 0;
};

struct Record {
  uint64_t seq = 0;
  Hash prev{};
  Hash hash{};
  Signature sig{};
};

// Checks the shape of a record and takes out "hash" and "sig" (leaving the body the
// hash covers). why names the first problem.
bool parse_record(json& j, Record& r, std::string& why) {
  if (!j.is_object()) {
    why = "not a JSON object";
    return false;
  }
  static const char* const kKnown[] = {"seq",     "time",  "principal", "method", "resources",
                                       "outcome", "error", "detail",    "prev",   "hash",
                                       "sig"};
  for (const auto& item : j.items()) {
    if (std::none_of(std::begin(kKnown), std::end(kKnown),
                     [&](const char* k) { return item.key() == k; })) {
      why = "unexpected field \"" + item.key() + "\"";
      return false;
    }
  }
  auto string_field = [&](const char* name, bool required) -> const std::string* {
    auto it = j.find(name);
    if (it == j.end()) {
      if (required) why = std::string("field \"") + name + "\" missing";
      return nullptr;
    }
    if (!it->is_string()) {
      why = std::string("field \"") + name + "\" is not a string";
      return nullptr;
    }
    return it->get_ptr<const std::string*>();
  };

  auto seq = j.find("seq");
  if (seq == j.end() || !seq->is_number_unsigned() || seq->get<uint64_t>() == 0) {
    why = "field \"seq\" missing or not a positive integer";
    return false;
  }
  r.seq = seq->get<uint64_t>();

  const std::string* time = string_field("time", true);
  if (!time) return false;
  // YYYY-MM-DDTHH:MM:SS.mmmZ
  static constexpr std::string_view kShape = "dddd-dd-ddTdd:dd:dd.dddZ";
  bool time_ok = time->size() == kShape.size();
  for (size_t i = 0; time_ok && i < kShape.size(); ++i)
    time_ok = kShape[i] == 'd' ? ((*time)[i] >= '0' && (*time)[i] <= '9') : (*time)[i] == kShape[i];
  if (!time_ok) {
    why = "field \"time\" is not RFC 3339 UTC with milliseconds";
    return false;
  }
  if (!string_field("principal", true)) return false;
  const std::string* method = string_field("method", true);
  if (!method) return false;
  if (method->empty()) {
    why = "field \"method\" is empty";
    return false;
  }
  auto res = j.find("resources");
  if (res == j.end() || !res->is_array() ||
      !std::all_of(res->begin(), res->end(), [](const json& v) { return v.is_string(); })) {
    why = "field \"resources\" missing or not an array of strings";
    return false;
  }
  const std::string* outcome = string_field("outcome", true);
  if (!outcome) return false;
  if (*outcome != "allowed" && *outcome != "denied" && *outcome != "failed") {
    why = "field \"outcome\" is not allowed, denied or failed";
    return false;
  }
  if (j.contains("error") && !string_field("error", false)) return false;

  const std::string* prev = string_field("prev", true);
  if (!prev) return false;
  if (!from_hex(*prev, r.prev)) {
    why = "field \"prev\" is not 64 lowercase hex digits";
    return false;
  }
  const std::string* hash = string_field("hash", true);
  if (!hash) return false;
  if (!from_hex(*hash, r.hash)) {
    why = "field \"hash\" is not 64 lowercase hex digits";
    return false;
  }
  const std::string* sig = string_field("sig", true);
  if (!sig) return false;
  if (!signature_from_base64(*sig, r.sig)) {
    why = "field \"sig\" is not a base64 Ed25519 signature";
    return false;
  }
  j.erase("hash");
  j.erase("sig");
  return true;
}

// A key as it may appear in a reason: printable ASCII, others as \xNN, truncated.
std::string shown(std::string_view s) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < s.size() && i < 40; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += kDigits[c >> 4];
      out += kDigits[c & 0xf];
    }
  }
  if (s.size() > 40) out += "...";
  return out;
}

// Finds the first repeated key or pair of keys out of order, at any depth, in the
// order the text has them (a parsed json has already lost both).
class KeyCheck final : public nlohmann::json_sax<json> {
 public:
  std::string problem;

  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool string(string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }
  bool start_object(std::size_t) override {
    objects_.emplace_back();
    return true;
  }
  bool key(string_t& k) override {
    Object& o = objects_.back();
    if (!o.seen.insert(k).second) {
      problem = "key \"" + shown(k) + "\" repeated";
      return false;
    }
    // The writer's objects are std::maps: keys in std::string order.
    if (o.last && k < *o.last) {
      problem = "keys not in sorted order: \"" + shown(k) + "\" after \"" + shown(*o.last) + "\"";
      return false;
    }
    o.last = k;
    return true;
  }
  bool end_object() override {
    objects_.pop_back();
    return true;
  }
  bool start_array(std::size_t) override { return true; }
  bool end_array() override { return true; }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override { return false; }

 private:
  struct Object {
    std::set<std::string> seen;
    std::optional<std::string> last;
  };
  std::vector<Object> objects_;
};

// Why `text` is not `canon`, the writer's serialization of the value it parses to.
std::string canonical_problem(std::string_view text, std::string_view canon) {
  if (!text.empty() && text.back() == '\r') return "CRLF line ending: carriage return before the newline";
  KeyCheck keys;
  json::sax_parse(text.begin(), text.end(), &keys);
  if (!keys.problem.empty()) return keys.problem;
  size_t i = 0;
  while (i < text.size() && i < canon.size() && text[i] == canon[i]) ++i;
  return "whitespace, escapes or number spelling differ from the writer's at column " + std::to_string(i + 1);
}

// Parses and authenticates one line: canonical form, hash and signature.
enum class LineCheck { kGood, kNotJson, kMalformed, kNotCanonical, kHash, kSignature };
LineCheck check_line(std::string_view text, const VerifyKey& key, Record& r, std::string& why) {
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded()) return LineCheck::kNotJson;
  // The hash covers the record as parsed here; other readers may parse other bytes
  // differently (a repeated key: first or last value?). Only the exact bytes the
  // writer produces are accepted, so every reader sees the record that was signed.
  const std::string canon = canonical(j);
  if (!parse_record(j, r, why)) return LineCheck::kMalformed;
  if (canon != text) {
    why = canonical_problem(text, canon);
    return LineCheck::kNotCanonical;
  }
  if (sha256(canonical(j)) != r.hash) return LineCheck::kHash;
  if (!key.verify(r.hash, r.sig)) return LineCheck::kSignature;
  return LineCheck::kGood;
}

// The line number at or after (offset, line_no) whose record has this seq, or 0.
uint64_t find_seq(int fd, uint64_t offset, uint64_t line_no, uint64_t seq) {
  LineReader reader(fd, offset);
  LineReader::Line line;
  for (; reader.next(line); ++line_no) {
    json j = json::parse(line.text, nullptr, false);
    if (!j.is_object()) continue;
    auto it = j.find("seq");
    if (it != j.end() && it->is_number_unsigned() && it->get<uint64_t>() == seq) return line_no;
  }
  return 0;
}

// Whether any record of the file (the first 10000 lines) carries a good signature.
bool any_signature_verifies(int fd, const VerifyKey& key) {
  LineReader reader(fd, 0);
  LineReader::Line line;
  for (int n = 0; n < 10000 && reader.next(line); ++n) {
    Record r;
    std::string why;
    if (check_line(line.text, key, r, why) == LineCheck::kGood) return true;
  }
  return false;
}

void scan_lines(int fd, const VerifyKey& key, ScanOutcome& out) {
  LineReader reader(fd, 0);
  LineReader::Line line;
  uint64_t line_no = 0;
  ChainState& st = out.state;
  auto fail = [&](const std::string& why) {
    out.bad_line = line_no;
    out.reason = "line " + std::to_string(line_no) + ": " + why;
  };
  while (reader.next(line)) {
    ++line_no;
    if (!line.newline) {
      fail("incomplete last line");
      out.bad_tail = true;
      return;
    }
    if (line.too_long) return fail("record longer than " + std::to_string(kMaxRecordBytes) + " bytes");
    Record r;
    std::string why;
    switch (check_line(line.text, key, r, why)) {
      case LineCheck::kGood:
        break;
      case LineCheck::kNotJson: {
        fail("not JSON");
        LineReader::Line rest;
        out.bad_tail = !reader.next(rest) && reader.error() == 0;
        return;
      }
      case LineCheck::kMalformed:
        return fail("malformed record (" + why + ")");
      case LineCheck::kNotCanonical:
        return fail("record not in canonical form (" + why + ")");
      case LineCheck::kHash:
        return fail("record modified (hash mismatch)");
      case LineCheck::kSignature:
        if (line_no == 1 && !any_signature_verifies(fd, key))
          return fail("bad signature (no record verifies with this key: wrong public key?)");
        return fail("bad signature");
    }

    const uint64_t expected = st.last_seq + 1;
    const std::string seq_s = std::to_string(r.seq);
    const std::string follows = st.records == 0
                                    ? "the log starts at seq " + seq_s
                                    : "seq " + seq_s + " follows seq " + std::to_string(st.last_seq);
    if (r.seq > expected) {
      uint64_t at = find_seq(fd, line.offset + line.length, line_no + 1, expected);
      if (at != 0)
        return fail(follows + ": records reordered (seq " + std::to_string(expected) +
                    " is at line " + std::to_string(at) + ")");
      return fail(follows + ": record(s) removed");
    }
    if (r.seq < expected) {
      if (r.seq == st.last_seq) return fail("seq " + seq_s + " repeated: record duplicated");
      return fail(follows + ": records reordered");
    }
    if (r.prev != st.last_hash) {
      if (st.records == 0) return fail("prev of the first record is not 64 zeros");
      return fail("prev does not match line " + std::to_string(line_no - 1) + "'s hash");
    }
    st.before_last = st.last_hash;
    st.last_hash = r.hash;
    st.last_seq = r.seq;
    ++st.records;
    out.good_bytes = line.offset + line.length;
  }
  if (reader.error() != 0) {
    out.bad_line = 0;
    out.reason = std::string("read error after line ") + std::to_string(line_no) + ": " +
                 std::strerror(reader.error());
    return;
  }
  out.ok = true;
}

}  // namespace

ScanOutcome scan_log(int fd, const VerifyKey& key) {
  ScanOutcome out;
  try {
    scan_lines(fd, key, out);
  } catch (const std::exception& e) {  // nlohmann or allocation failure: never escapes
    out.ok = false;
    out.bad_tail = false;
    out.reason = std::string("verification aborted: ") + e.what();
  }
  return out;
}

HeadRead read_head(const std::string& path, const VerifyKey& key) {
  HeadRead out;
  auto text = read_small_file(path, 4096);
  if (!text) {
    if (text.error().errnum == ENOENT) {
      out.status = HeadRead::kMissing;
      out.reason = "head file " + path + " missing: truncation cannot be ruled out";
    } else {
      out.reason = "head file unreadable: " + text.error().message();
    }
    return out;
  }
  json j = json::parse(*text, nullptr, false);
  Signature sig{};
  bool shape = j.is_object() && j.size() == 3 && j.contains("seq") && j["seq"].is_number_unsigned() &&
               j.contains("hash") && j["hash"].is_string() && j.contains("sig") &&
               j["sig"].is_string() &&
               from_hex(j["hash"].get_ref<const std::string&>(), out.head.hash) &&
               signature_from_base64(j["sig"].get_ref<const std::string&>(), sig);
  if (!shape) {
    out.reason = "head file malformed";
    return out;
  }
  out.head.seq = j["seq"].get<uint64_t>();
  if (!key.verify(head_message(out.head.seq, out.head.hash), sig)) {
    out.reason = "head file signature invalid";
    return out;
  }
  // As for records: only the writer's bytes, so that no reader can take another seq
  // out of the same file (a repeated key).
  if (*text != head_text(out.head.seq, out.head.hash, sig)) {
    out.reason = "head file not in canonical form";
    return out;
  }
  out.status = HeadRead::kOk;
  return out;
}

std::optional<std::string> compare_head(const Head& head, const ChainState& log,
                                        bool* behind_by_one) {
  if (behind_by_one) *behind_by_one = false;
  const std::string h = std::to_string(head.seq), l = std::to_string(log.last_seq);
  if (head.seq == log.last_seq) {
    if (head.hash == log.last_hash) return std::nullopt;
    return "the head's hash for seq " + h + " differs from the log's: log or head replaced";
  }
  if (head.seq + 1 == log.last_seq) {
    if (head.hash == log.before_last) {
      if (behind_by_one) *behind_by_one = true;
      return std::nullopt;
    }
    return "the head's hash for seq " + h + " differs from the log's: log or head replaced";
  }
  if (head.seq > log.last_seq) {
    if (log.records == 0) return "log is empty but the head says seq " + h + ": truncated";
    return "log ends at seq " + l + " but the head says seq " + h + ": truncated";
  }
  return "the head says seq " + h + " but the log goes on to seq " + l +
         ": head file stale or replaced";
}

}  // namespace detail
}  // namespace azote::audit
