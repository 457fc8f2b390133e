#include "nsm/nsm.hpp"

#include <cbor.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/rand.h>

#include <algorithm>
#include <memory>
#include <utility>

namespace azote::nsm {

std::string_view error_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument: return "InvalidArgument";
    case ErrorCode::kInvalidIndex: return "InvalidIndex";
    case ErrorCode::kInvalidResponse: return "InvalidResponse";
    case ErrorCode::kReadOnlyIndex: return "ReadOnlyIndex";
    case ErrorCode::kInvalidOperation: return "InvalidOperation";
    case ErrorCode::kBufferTooSmall: return "BufferTooSmall";
    case ErrorCode::kInputTooLarge: return "InputTooLarge";
    case ErrorCode::kInternalError: return "InternalError";
  }
  return "InternalError";
}

enum class Kind { kDescribePcr, kExtendPcr, kLockPcr, kLockPcrs, kDescribeNsm, kAttestation, kGetRandom };

namespace {

// ---- Responses: libcbor's streaming encoder into one growing buffer -------------------

class Writer {
 public:
  Writer& map(size_t n) { return head(cbor_encode_map_start(n, tmp_, sizeof tmp_)); }
  Writer& array(size_t n) { return head(cbor_encode_array_start(n, tmp_, sizeof tmp_)); }
  Writer& uint(uint64_t v) { return head(cbor_encode_uint(v, tmp_, sizeof tmp_)); }
  Writer& boolean(bool v) { return head(cbor_encode_bool(v, tmp_, sizeof tmp_)); }
  Writer& text(std::string_view s) {
    head(cbor_encode_string_start(s.size(), tmp_, sizeof tmp_));
    out_.insert(out_.end(), s.begin(), s.end());
    return *this;
  }
  Writer& bytes(std::span<const uint8_t> b) {
    head(cbor_encode_bytestring_start(b.size(), tmp_, sizeof tmp_));
    out_.insert(out_.end(), b.begin(), b.end());
    return *this;
  }
  Bytes take() { return std::move(out_); }

 private:
  // A header is at most 9 bytes, so the encoder never runs out of room; a 0 would be a
  // libcbor bug and is not papered over.
  Writer& head(size_t n) {
    if (n == 0 || n > sizeof tmp_) std::abort();
    out_.insert(out_.end(), tmp_, tmp_ + n);
    return *this;
  }
  unsigned char tmp_[9]{};
  Bytes out_;
};

Bytes error_response(ErrorCode code) { return Writer().map(1).text("Error").text(error_name(code)).take(); }

// {"Name": {one field}} headers; the caller writes the field values.
Writer tagged(std::string_view name, size_t fields) {
  Writer w;
  w.map(1).text(name).map(fields);
  return w;
}

// ---- Requests: bounded decoding --------------------------------------------------------

constexpr size_t kMaxDepth = 4;  // requests need 2 (the name's map, the fields' map)

// One pass of libcbor's streaming decoder over the headers, before cbor_load builds
// anything: libcbor 0.8 allocates a definite array or map of the length its header
// declares (9 bytes can ask for gigabytes), and frees items recursively, so the lengths, the
// depth and the kinds of item are all bounded here. `open` holds, per open collection,
// how many items are still to come.
struct Scan {
  size_t left = 0;  // bytes from the current header to the end of the input
  std::array<size_t, kMaxDepth> open{};
  size_t depth = 0;
  bool bad = false;
};
Scan& scan_of(void* ctx) { return *static_cast<Scan*>(ctx); }

// A complete item has been read: it fills one place of its collection, and closes every
// collection it completes.
void item_done(Scan& s) {
  if (s.depth > 0) --s.open[s.depth - 1];
  while (s.depth > 0 && s.open[s.depth - 1] == 0) --s.depth;
}
void collection(Scan& s, size_t items) {
  if (items == 0) return item_done(s);
  if (s.depth > 0) --s.open[s.depth - 1];  // its place in the parent; the parent stays open
  if (s.depth == kMaxDepth) {
    s.bad = true;
    return;
  }
  s.open[s.depth++] = items;
}

void on_item(void* ctx) { item_done(scan_of(ctx)); }
void on_refused(void* ctx) { scan_of(ctx).bad = true; }
template <class T>
void on_value(void* ctx, T) {
  item_done(scan_of(ctx));
}
void on_string(void* ctx, cbor_data, size_t) { item_done(scan_of(ctx)); }
void on_tag(void* ctx, uint64_t) { scan_of(ctx).bad = true; }
void on_array(void* ctx, size_t n) {
  Scan& s = scan_of(ctx);
  if (n > s.left) {  // every element takes at least one byte
    s.bad = true;
    return;
  }
  collection(s, n);
}
void on_map(void* ctx, size_t n) {
  Scan& s = scan_of(ctx);
  if (n > s.left / 2) {
    s.bad = true;
    return;
  }
  collection(s, 2 * n);
}

cbor_callbacks scan_callbacks() {
  cbor_callbacks cb = cbor_empty_callbacks;
  cb.uint8 = on_value<uint8_t>;
  cb.uint16 = on_value<uint16_t>;
  cb.uint32 = on_value<uint32_t>;
  cb.uint64 = on_value<uint64_t>;
  cb.negint8 = on_value<uint8_t>;
  cb.negint16 = on_value<uint16_t>;
  cb.negint32 = on_value<uint32_t>;
  cb.negint64 = on_value<uint64_t>;
  cb.byte_string = on_string;  // definite: libcbor reads the content with the header
  cb.string = on_string;
  cb.byte_string_start = on_refused;  // indefinite-length items
  cb.string_start = on_refused;
  cb.indef_array_start = on_refused;
  cb.indef_map_start = on_refused;
  cb.indef_break = on_refused;
  cb.array_start = on_array;
  cb.map_start = on_map;
  cb.tag = on_tag;
  cb.float2 = on_value<float>;
  cb.float4 = on_value<float>;
  cb.float8 = on_value<double>;
  cb.undefined = on_item;
  cb.null = on_item;
  cb.boolean = on_value<bool>;
  return cb;
}

// True if `bytes` is exactly one item within the bounds above.
bool well_formed(std::span<const uint8_t> bytes) {
  static const cbor_callbacks cb = scan_callbacks();
  if (bytes.empty()) return false;
  Scan s;
  size_t at = 0;
  do {
    if (at == bytes.size()) return false;  // truncated inside a collection
    s.left = bytes.size() - at;
    const cbor_decoder_result r = cbor_stream_decode(bytes.data() + at, bytes.size() - at, &cb, &s);
    if (r.status != CBOR_DECODER_FINISHED || r.read == 0 || s.bad) return false;
    at += r.read;
  } while (s.depth > 0);
  return at == bytes.size();
}

struct ItemFree {
  void operator()(cbor_item_t* p) const { cbor_decref(&p); }
};
using Item = std::unique_ptr<cbor_item_t, ItemFree>;

std::optional<std::string_view> text_of(const cbor_item_t* i) {
  if (!cbor_isa_string(i) || !cbor_string_is_definite(i)) return std::nullopt;
  return std::string_view(reinterpret_cast<const char*>(cbor_string_handle(i)), cbor_string_length(i));
}
std::optional<Bytes> bytes_of(const cbor_item_t* i) {
  if (!cbor_isa_bytestring(i) || !cbor_bytestring_is_definite(i)) return std::nullopt;
  const unsigned char* h = cbor_bytestring_handle(i);
  return Bytes(h, h + cbor_bytestring_length(i));
}
// libcbor 0.8's cbor_is_null asserts (aborts) when given a float: ask only of a ctrl
// item (found by fuzz_nsm).
bool is_null(const cbor_item_t* i) {
  return cbor_isa_float_ctrl(i) && cbor_float_ctrl_is_ctrl(i) && cbor_is_null(i);
}
std::optional<uint16_t> u16_of(const cbor_item_t* i) {
  if (!cbor_isa_uint(i)) return std::nullopt;
  const uint64_t v = cbor_get_int(i);
  if (v > 0xffff) return std::nullopt;
  return static_cast<uint16_t>(v);
}

struct Name {
  std::string_view text;
  Kind kind;
  bool has_fields;  // a {"Name": {fields}} map, or else a bare text string
};
constexpr std::array<Name, 7> kNames{{
    {"DescribePCR", Kind::kDescribePcr, true},
    {"ExtendPCR", Kind::kExtendPcr, true},
    {"LockPCR", Kind::kLockPcr, true},
    {"LockPCRs", Kind::kLockPcrs, true},
    {"DescribeNSM", Kind::kDescribeNsm, false},
    {"Attestation", Kind::kAttestation, true},
    {"GetRandom", Kind::kGetRandom, false},
}};
const Name* find_name(std::string_view s) {
  for (const auto& n : kNames)
    if (n.text == s) return &n;
  return nullptr;
}

}  // namespace

struct ParsedRequest {
  Kind kind = Kind::kDescribeNsm;
  uint16_t index = 0;  // DescribePCR, ExtendPCR, LockPCR: the index; LockPCRs: the range
  Bytes data;          // ExtendPCR
  std::optional<Bytes> user_data, nonce, public_key;
};

namespace {

using ParseResult = Result<ParsedRequest, ErrorCode>;
Unexpected<ErrorCode> refuse(ErrorCode c) { return Unexpected{c}; }

// An Attestation field into `out`: bstr or null, within 1024 bytes (public_key: not
// empty), given at most once.
bool optional_field(const cbor_item_t* v, size_t min, bool& seen, std::optional<Bytes>& out) {
  if (std::exchange(seen, true)) return false;
  if (is_null(v)) return true;
  if (!cbor_isa_bytestring(v) || !cbor_bytestring_is_definite(v)) return false;
  const size_t n = cbor_bytestring_length(v);
  if (n < min || n > attest::kMaxOptional) return false;
  out.emplace(cbor_bytestring_handle(v), cbor_bytestring_handle(v) + n);
  return true;
}

// The fields' map of a named request: every field known, none twice, the required ones
// present.
ParseResult parse_fields(Kind kind, const cbor_item_t* body) {
  if (!cbor_isa_map(body) || !cbor_map_is_definite(body)) return refuse(ErrorCode::kInvalidArgument);
  ParsedRequest r;
  r.kind = kind;
  bool seen_index = false, seen_data = false, seen_user_data = false, seen_nonce = false, seen_public_key = false;
  auto once = [](bool& seen) { return !std::exchange(seen, true); };
  const cbor_pair* pairs = cbor_map_handle(body);
  for (size_t i = 0; i < cbor_map_size(body); ++i) {
    const auto key = text_of(pairs[i].key);
    if (!key) return refuse(ErrorCode::kInvalidArgument);
    const cbor_item_t* v = pairs[i].value;
    const bool index_key = (kind == Kind::kLockPcrs) ? *key == "range" : *key == "index";
    if (kind != Kind::kAttestation && index_key) {
      auto n = u16_of(v);
      if (!n || !once(seen_index)) return refuse(ErrorCode::kInvalidArgument);
      r.index = *n;
    } else if (kind == Kind::kExtendPcr && *key == "data") {
      auto b = bytes_of(v);
      if (!b || !once(seen_data)) return refuse(ErrorCode::kInvalidArgument);
      r.data = std::move(*b);
    } else if (kind == Kind::kAttestation && *key == "user_data") {
      if (!optional_field(v, 0, seen_user_data, r.user_data)) return refuse(ErrorCode::kInvalidArgument);
    } else if (kind == Kind::kAttestation && *key == "nonce") {
      if (!optional_field(v, 0, seen_nonce, r.nonce)) return refuse(ErrorCode::kInvalidArgument);
    } else if (kind == Kind::kAttestation && *key == "public_key") {
      if (!optional_field(v, 1, seen_public_key, r.public_key)) return refuse(ErrorCode::kInvalidArgument);
    } else {
      return refuse(ErrorCode::kInvalidArgument);  // a field this request does not have
    }
  }
  if (kind != Kind::kAttestation && !seen_index) return refuse(ErrorCode::kInvalidArgument);
  if (kind == Kind::kExtendPcr && !seen_data) return refuse(ErrorCode::kInvalidArgument);
  return r;
}

ParseResult parse_request(std::span<const uint8_t> bytes) {
  if (!well_formed(bytes)) return refuse(ErrorCode::kInvalidArgument);
  cbor_load_result lr{};
  Item top(cbor_load(bytes.data(), bytes.size(), &lr));
  if (!top || lr.error.code != CBOR_ERR_NONE || lr.read != bytes.size())
    return refuse(lr.error.code == CBOR_ERR_MEMERROR ? ErrorCode::kInternalError : ErrorCode::kInvalidArgument);
  const cbor_item_t* t = top.get();
  if (auto s = text_of(t)) {
    const Name* n = find_name(*s);
    if (n == nullptr) return refuse(ErrorCode::kInvalidOperation);
    if (n->has_fields) return refuse(ErrorCode::kInvalidArgument);
    ParsedRequest r;
    r.kind = n->kind;
    return r;
  }
  if (!cbor_isa_map(t) || !cbor_map_is_definite(t) || cbor_map_size(t) != 1) return refuse(ErrorCode::kInvalidArgument);
  const cbor_pair& p = cbor_map_handle(t)[0];
  const auto s = text_of(p.key);
  if (!s) return refuse(ErrorCode::kInvalidArgument);
  const Name* n = find_name(*s);
  if (n == nullptr) return refuse(ErrorCode::kInvalidOperation);
  if (!n->has_fields) return refuse(ErrorCode::kInvalidArgument);
  return parse_fields(n->kind, p.value);
}

}  // namespace

NsmResult<Engine> Engine::create(std::string module_id, const std::map<uint32_t, Pcr>& platform_pcrs, Signer signer) {
  if (module_id.empty() || module_id.size() > kMaxModuleId)
    return make_error(NsmErrc::kInvalid, "module_id must be 1.." + std::to_string(kMaxModuleId) + " bytes");
  if (!std::all_of(module_id.begin(), module_id.end(), [](char c) { return c >= 0x20 && c <= 0x7e; }))
    return make_error(NsmErrc::kInvalid, "module_id must be printable ASCII");
  Engine e(std::move(module_id), std::move(signer));
  for (const auto& [index, value] : platform_pcrs) {
    if (index >= kPlatformPcrs)
      return make_error(NsmErrc::kInvalid, "platform PCR " + std::to_string(index) + " is not one of 0..15");
    e.pcrs_[index].value = value;
  }
  for (uint32_t i = 0; i < kPlatformPcrs; ++i) e.pcrs_[i].locked = true;
  return e;
}

std::optional<PcrState> Engine::pcr(uint32_t index) const {
  if (index >= attest::kPcrCount) return std::nullopt;
  return pcrs_[index];
}

Bytes Engine::handle(std::span<const uint8_t> request, size_t response_capacity) noexcept {
  Bytes out;
  if (request.size() > kMaxRequestBytes) {
    out = error_response(ErrorCode::kInputTooLarge);
  } else {
    auto parsed = parse_request(request);
    out = parsed ? dispatch(*parsed, response_capacity) : error_response(parsed.error());
  }
  if (out.size() > response_capacity) out = error_response(ErrorCode::kBufferTooSmall);
  if (out.size() > response_capacity) out.clear();
  return out;
}

Bytes Engine::dispatch(const ParsedRequest& r, size_t capacity) {
  const bool in_bank = r.index < attest::kPcrCount;
  // State changes only when the success response fits the caller's buffer.
  auto fits = [capacity](const Bytes& b) { return b.size() <= capacity; };
  switch (r.kind) {
    case Kind::kDescribePcr: {
      if (!in_bank) return error_response(ErrorCode::kInvalidIndex);
      const PcrState& p = pcrs_[r.index];
      Writer w = tagged("DescribePCR", 2);
      return w.text("lock").boolean(p.locked).text("data").bytes(p.value).take();
    }
    case Kind::kExtendPcr: {
      if (!in_bank) return error_response(ErrorCode::kInvalidIndex);
      PcrState& p = pcrs_[r.index];
      if (p.locked) return error_response(ErrorCode::kReadOnlyIndex);
      const Pcr next = attest::extend(p.value, r.data);
      Writer w = tagged("ExtendPCR", 1);
      Bytes out = w.text("data").bytes(next).take();
      if (fits(out)) p.value = next;
      return out;
    }
    case Kind::kLockPcr: {
      if (!in_bank) return error_response(ErrorCode::kInvalidIndex);
      PcrState& p = pcrs_[r.index];
      if (p.locked) return error_response(ErrorCode::kReadOnlyIndex);
      Bytes out = Writer().text("LockPCR").take();
      if (fits(out)) p.locked = true;
      return out;
    }
    case Kind::kLockPcrs: {
      if (r.index > attest::kPcrCount) return error_response(ErrorCode::kInvalidIndex);
      Bytes out = Writer().text("LockPCRs").take();
      if (fits(out))
        for (uint32_t i = 0; i < r.index; ++i) pcrs_[i].locked = true;
      return out;
    }
    case Kind::kDescribeNsm:
      return describe_nsm();
    case Kind::kAttestation:
      return attestation(r);
    case Kind::kGetRandom:
      return get_random();
  }
  return error_response(ErrorCode::kInternalError);
}

Bytes Engine::describe_nsm() const {
  size_t locked = 0;
  for (const auto& p : pcrs_) locked += p.locked ? 1 : 0;
  Writer w = tagged("DescribeNSM", 7);
  w.text("version_major").uint(kVersionMajor);
  w.text("version_minor").uint(kVersionMinor);
  w.text("version_patch").uint(kVersionPatch);
  w.text("module_id").text(module_id_);
  w.text("max_pcrs").uint(attest::kPcrCount);
  w.text("locked_pcrs").array(locked);
  for (uint32_t i = 0; i < attest::kPcrCount; ++i)
    if (pcrs_[i].locked) w.uint(i);
  w.text("digest").text("SHA384");
  return w.take();
}

Bytes Engine::attestation(const ParsedRequest& r) {
  if (!signer_) return error_response(ErrorCode::kInvalidOperation);
  AttestationRequest a;
  a.module_id = module_id_;
  for (uint32_t i = 0; i < attest::kPcrCount; ++i)
    if (pcrs_[i].locked) a.pcrs.emplace(i, pcrs_[i].value);
  a.user_data = r.user_data;
  a.nonce = r.nonce;
  a.public_key = r.public_key;
  auto doc = signer_(a);
  if (!doc) {
    last_internal_error_ = "signer: " + doc.error();
    return error_response(ErrorCode::kInternalError);
  }
  if (doc->empty()) {
    last_internal_error_ = "signer: an empty document";
    return error_response(ErrorCode::kInternalError);
  }
  Writer w = tagged("Attestation", 1);
  return w.text("document").bytes(*doc).take();
}

Bytes Engine::get_random() {
  std::array<uint8_t, kRandomBytes> rnd{};
  if (RAND_bytes(rnd.data(), static_cast<int>(rnd.size())) != 1) {
    char buf[256] = "RAND_bytes failed";
    if (const unsigned long e = ERR_get_error(); e != 0) ERR_error_string_n(e, buf, sizeof buf);
    ERR_clear_error();
    last_internal_error_ = buf;
    return error_response(ErrorCode::kInternalError);
  }
  Writer w = tagged("GetRandom", 1);
  Bytes out = w.text("random").bytes(rnd).take();
  OPENSSL_cleanse(rnd.data(), rnd.size());
  return out;
}

}  // namespace azote::nsm
