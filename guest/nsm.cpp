#include "nsm.hpp"

#include "platform.hpp"
#include "programs.hpp"

namespace az::nsm {

namespace {

using namespace az::virtio;

constexpr size_t kMaxWindows = 32;

// Features this driver takes when offered; VERSION_1 is required. The NSM defines
// none of its own; ACCESS_PLATFORM and ORDER_PLATFORM need nothing more here (no
// IOMMU, real barriers), as for virtio-blk and virtio-net.
constexpr uint64_t kWanted = kFVersion1 | kFAccessPlatform | kFOrderPlatform;

// A call is two one-descriptor chains: descriptor 0 the request, 1 the response.
constexpr uint16_t kQueueSize = 2;
constexpr uint16_t kReqDesc = 0;
constexpr uint16_t kRspDesc = 1;

}  // namespace

// ---------------------------------------------------------------- the driver
bool Device::fail(const char* what, uint64_t value) {
  err_what_ = what;
  err_value_ = value;
  return false;
}

bool Device::setup_failed(const char* what, uint64_t value) {
  dev_.set_status(dev_.status() | kStatusFailed);
  return fail(what, value);
}

Line& Device::append_error(Line& l) const {
  l.s("virtio-nsm at 0x").x(base_).s(": ").s(err_what_);
  if (err_value_ != ~0ull) l.s(" 0x").x(err_value_);
  return l;
}

Line& Device::append_description(Line& l) const {
  l.s("virtio-nsm at 0x").x(base_).s(" irq=").u(irq_).s(" features=0x").x(features_);
  return l.s(" queue_size=").u(q_.size());
}

Device::Open Device::open() {
  MmioWindow w[kMaxWindows];
  const size_t n = find_windows(platform::cmdline(), w, kMaxWindows);
  for (size_t i = 0; i < n; ++i) {
    if (!usable_window(w[i], kDeviceIdNsm, "virtio-nsm", 0)) continue;  // no config space
    base_ = w[i].base;
    irq_ = w[i].irq;
    return setup() ? Open::kOk : Open::kFailed;
  }
  return Open::kNoDevice;
}

bool Device::setup() {
  dev_ = MmioDevice(base_);
  tsc_hz_ = tsc_hz();
  if (tsc_hz_ == 0) tsc_hz_ = 3000000000ull;  // unknown: timeouts only get longer

  // §3.1.1: reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK, the queue, DRIVER_OK.
  if (!dev_.reset()) return setup_failed("does not complete a reset (status stays nonzero)");
  dev_.set_status(kStatusAcknowledge);
  dev_.set_status(kStatusAcknowledge | kStatusDriver);
  const uint64_t offered = dev_.device_features();
  if (!(offered & kFVersion1)) return setup_failed("does not offer VIRTIO_F_VERSION_1; features", offered);
  features_ = offered & kWanted;
  dev_.set_driver_features(features_);
  dev_.set_status(kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk);
  if (!(dev_.status() & kStatusFeaturesOk))
    return setup_failed("refused the features (FEATURES_OK clear); accepted", features_);

  dev_.write(kRegQueueSel, 0);
  const uint32_t num_max = dev_.read(kRegQueueNumMax);
  if (num_max < kQueueSize)
    return setup_failed("queue 0 cannot hold a call (a request and a response buffer); QueueNumMax", num_max);
  const uint64_t ring = platform::alloc_io(SplitQueue::bytes(kQueueSize), 4096);
  req_buf_ = platform::alloc_io(kRawRequestMax, 4096);
  rsp_buf_ = platform::alloc_io(kResponseBytes, 4096);
  if (ring == 0 || req_buf_ == 0 || rsp_buf_ == 0)
    return setup_failed("no free RAM for the queue and the request and response buffers");
  if (!q_.init(dev_, 0, kQueueSize, ring)) return setup_failed("did not enable queue 0 (QueueReady reads 0)");

  dev_.set_status(kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk);
  const uint32_t st = dev_.status();
  if ((st & (kStatusNeedsReset | kStatusFailed)) || !(st & kStatusDriverOk))
    return fail("device status after DRIVER_OK", st);
  return true;
}

bool Device::call(const uint8_t* req, uint32_t req_len, uint8_t* rsp, uint32_t* rsp_len, uint64_t* ticks) {
  if (req_len == 0 || req_len > kRawRequestMax) return fail("request length out of range (driver misuse):", req_len);
  if (q_.outstanding() != 0) return fail("a call is still in flight (driver misuse); chains", q_.outstanding());
  auto* shared = phys<uint8_t>(req_buf_);
  for (uint32_t i = 0; i < req_len; ++i) shared[i] = req[i];

  // Two chains, as Linux's nsm.c queues them (an out buffer, then an in buffer) and
  // QEMU's virtio-nsm pops them: the request, then the whole response buffer.
  Desc& d = q_.desc(kReqDesc);
  d.addr = req_buf_;
  d.len = req_len;
  d.flags = 0;
  d.next = 0;
  Desc& r = q_.desc(kRspDesc);
  r.addr = rsp_buf_;
  r.len = kResponseBytes;
  r.flags = kDescFWrite;
  r.next = 0;
  q_.push(kReqDesc);
  q_.push(kRspDesc);
  const uint64_t t0 = rdtsc();
  q_.publish();

  // Spin on the used ring (RAM); every 100 ms without both completions, one Status read.
  bool got_req = false, got_rsp = false;
  uint32_t len = 0;
  uint64_t done = t0;
  const uint64_t check_every = tsc_hz_ / 10, give_up = tsc_hz_ * kCallTimeoutS;
  uint64_t next_check = t0 + check_every;
  while (!got_req || !got_rsp) {
    UsedElem e;
    bool popped = false;
    for (int i = 0; i < 256 && !popped; ++i) {
      popped = q_.pop(&e);
      if (!popped) cpu_relax();
    }
    const uint64_t now = rdtsc();
    if (popped) {
      if (e.id == kReqDesc && !got_req) {
        // §2.7.8: len counts the bytes written into device-writable buffers; this
        // chain has none.
        if (e.len != 0) return fail("the device reports bytes written into the read-only request; used len", e.len);
        got_req = true;
      } else if (e.id == kRspDesc && !got_rsp) {
        if (e.len == 0) return fail("empty response (used len 0)");
        if (e.len > kResponseBytes) return fail("used len over the 0x3000-byte response buffer:", e.len);
        len = e.len;
        got_rsp = true;
      } else {
        return fail("used ring returned an id that is not in flight:", e.id);
      }
      done = now;
      continue;
    }
    if (now < next_check) continue;
    next_check = now + check_every;
    const uint32_t st = dev_.status();
    if (st & kStatusNeedsReset) return fail("device needs reset (DEVICE_NEEDS_RESET); status", st);
    if (st & kStatusFailed) return fail("device failed (FAILED); status", st);
    if (!(st & kStatusDriverOk)) return fail("device left DRIVER_OK; status", st);
    if (now - t0 > give_up) {
      return fail(got_req ? "no response within 10 s (the request completed); device status"
                          : "no response within 10 s; device status",
                  st);
    }
  }

  // One copy out of the shared buffer; only the copy is parsed.
  const auto* src = phys<const uint8_t>(rsp_buf_);
  for (uint32_t i = 0; i < len; ++i) rsp[i] = src[i];
  *rsp_len = len;
  *ticks = done - t0;
  return true;
}

// ------------------------------------------------------------- CBOR requests
namespace {

constexpr uint8_t kMajorUint = 0, kMajorBytes = 2, kMajorText = 3, kMajorArray = 4, kMajorMap = 5;
constexpr uint8_t kFalse = 0xf4, kTrue = 0xf5, kNull = 0xf6;

// Definite lengths, shortest heads (RFC 8949 §4.2.1), into a fixed buffer; any
// overflow makes the whole request fail (length 0). head() and put() stay out of line:
// small code matters more here than speed.
class Writer {
 public:
  Writer(uint8_t* out, uint32_t cap) : out_(out), cap_(cap) {}

  [[gnu::noinline]] Writer& head(uint8_t major, uint64_t v) {
    uint8_t b[9];
    uint32_t n = 1;
    const auto m = static_cast<uint8_t>(major << 5);
    if (v < 24) {
      b[0] = static_cast<uint8_t>(m | v);
    } else {
      const uint32_t k = v <= 0xff ? 1 : v <= 0xffff ? 2 : v <= 0xffffffffull ? 4 : 8;
      b[0] = static_cast<uint8_t>(m | (k == 1 ? 24 : k == 2 ? 25 : k == 4 ? 26 : 27));
      for (uint32_t i = 0; i < k; ++i) b[1 + i] = static_cast<uint8_t>(v >> (8 * (k - 1 - i)));
      n = 1 + k;
    }
    return put(b, n);
  }
  [[gnu::noinline]] Writer& put(const uint8_t* p, uint32_t n) {
    if (!ok_ || n > cap_ - len_) {
      ok_ = false;
      return *this;
    }
    for (uint32_t i = 0; i < n; ++i) out_[len_ + i] = p[i];
    len_ += n;
    return *this;
  }
  Writer& uint(uint64_t v) { return head(kMajorUint, v); }
  Writer& text(const char* s) {
    const auto n = static_cast<uint32_t>(strlen(s));
    head(kMajorText, n);
    return put(reinterpret_cast<const uint8_t*>(s), n);
  }
  Writer& bytes(Bytes b) {
    head(kMajorBytes, b.n);
    return put(b.p, b.n);
  }
  Writer& bytes_or_null(Bytes b) {
    if (b.p != nullptr) return bytes(b);
    const uint8_t v = kNull;
    return put(&v, 1);
  }
  Writer& map(uint32_t n) { return head(kMajorMap, n); }
  uint32_t done() const { return ok_ ? len_ : 0; }

 private:
  uint8_t* out_;
  uint32_t cap_;
  uint32_t len_ = 0;
  bool ok_ = true;
};

// {"NAME": {"FIELD": index}}
uint32_t req_index(uint8_t* out, uint32_t cap, const char* name, const char* field, uint16_t index) {
  Writer w(out, cap);
  w.map(1).text(name).map(1).text(field).uint(index);
  return w.done();
}

}  // namespace

uint32_t req_describe_nsm(uint8_t* out, uint32_t cap) { return Writer(out, cap).text("DescribeNSM").done(); }
uint32_t req_get_random(uint8_t* out, uint32_t cap) { return Writer(out, cap).text("GetRandom").done(); }
uint32_t req_describe_pcr(uint8_t* out, uint32_t cap, uint16_t index) {
  return req_index(out, cap, "DescribePCR", "index", index);
}
uint32_t req_lock_pcr(uint8_t* out, uint32_t cap, uint16_t index) {
  return req_index(out, cap, "LockPCR", "index", index);
}
uint32_t req_lock_pcrs(uint8_t* out, uint32_t cap, uint16_t range) {
  return req_index(out, cap, "LockPCRs", "range", range);
}

uint32_t req_extend_pcr(uint8_t* out, uint32_t cap, uint16_t index, Bytes data) {
  Writer w(out, cap);
  w.map(1).text("ExtendPCR").map(2).text("index").uint(index).text("data").bytes(data);
  return w.done();
}

uint32_t req_attestation(uint8_t* out, uint32_t cap, Bytes user_data, Bytes nonce, Bytes public_key) {
  Writer w(out, cap);
  w.map(1).text("Attestation").map(3);
  w.text("user_data").bytes_or_null(user_data);
  w.text("nonce").bytes_or_null(nonce);
  w.text("public_key").bytes_or_null(public_key);
  return w.done();
}

// ------------------------------------------------------------ CBOR responses
namespace {

constexpr int kMaxDepth = 8;
constexpr const char* kTruncated = "an item runs past the end of the response";

// A bounded reader over one response copy: every length is checked against what is
// left before anything is read, the first problem is kept and everything after it
// fails.
class Reader {
 public:
  Reader(const uint8_t* p, uint32_t n) : p_(p), n_(n) {}

  const char* why() const { return why_ != nullptr ? why_ : "?"; }
  bool at_end() const { return pos_ == n_; }
  uint32_t left() const { return n_ - pos_; }
  // The next item's major type (without reading it); -1 at the end.
  int peek() const { return pos_ < n_ ? p_[pos_] >> 5 : -1; }
  bool bad(const char* why) {
    if (why_ == nullptr) why_ = why;
    return false;
  }

  // An item head: major type and argument (value, length or count). Indefinite
  // lengths (and break) and the reserved additional information 28-30 are refused.
  [[gnu::noinline]] bool head(uint8_t* major, uint64_t* arg) {
    if (why_ != nullptr) return false;
    if (pos_ >= n_) return bad(kTruncated);
    const uint8_t ib = p_[pos_++];
    *major = static_cast<uint8_t>(ib >> 5);
    const uint8_t ai = ib & 31;
    if (ai < 24) {
      *arg = ai;
      return true;
    }
    if (ai == 31) return bad("an indefinite length (or a break)");
    if (ai > 27) return bad("reserved additional information (28-30)");
    const uint32_t k = 1u << (ai - 24);
    if (k > left()) return bad(kTruncated);
    uint64_t v = 0;
    for (uint32_t i = 0; i < k; ++i) v = v << 8 | p_[pos_++];
    *arg = v;
    return true;
  }

  bool uint(uint64_t max, uint64_t* v, const char* wrong) {
    uint8_t major = 0;
    if (!head(&major, v)) return false;
    if (major != kMajorUint || *v > max) return bad(wrong);
    return true;
  }
  [[gnu::noinline]] bool string(uint8_t want, const uint8_t** p, uint32_t* n, const char* wrong) {
    uint8_t major = 0;
    uint64_t len = 0;
    if (!head(&major, &len)) return false;
    if (major != want) return bad(wrong);
    if (len > left()) return bad(kTruncated);
    *p = p_ + pos_;
    *n = static_cast<uint32_t>(len);
    pos_ += *n;
    return true;
  }
  bool text(Str* s, const char* wrong) {
    const uint8_t* p = nullptr;
    uint32_t n = 0;
    if (!string(kMajorText, &p, &n, wrong)) return false;
    *s = Str{reinterpret_cast<const char*>(p), n};
    return true;
  }
  bool bytes(Bytes* b, const char* wrong) { return string(kMajorBytes, &b->p, &b->n, wrong); }
  // A map or array head; its count is at most the bytes left (each entry takes one).
  bool container(uint8_t want, uint64_t* count, const char* wrong) {
    uint8_t major = 0;
    if (!head(&major, count)) return false;
    if (major != want) return bad(wrong);
    if (*count > left()) return bad(kTruncated);
    return true;
  }
  bool boolean(bool* v, const char* wrong) {
    if (why_ != nullptr) return false;
    if (pos_ >= n_) return bad(kTruncated);
    if (p_[pos_] != kFalse && p_[pos_] != kTrue) return bad(wrong);
    *v = p_[pos_++] == kTrue;
    return true;
  }
  // Any one well-formed item without tags, nesting at most kMaxDepth deep.
  bool skip(int depth) {
    if (depth > kMaxDepth) return bad("nested deeper than 8");
    uint8_t major = 0;
    uint64_t arg = 0;
    if (!head(&major, &arg)) return false;
    switch (major) {
      case kMajorBytes:
      case kMajorText:
        if (arg > left()) return bad(kTruncated);
        pos_ += static_cast<uint32_t>(arg);
        return true;
      case kMajorArray:
      case kMajorMap: {
        if (arg > left()) return bad(kTruncated);
        const uint64_t items = major == kMajorMap ? 2 * arg : arg;
        for (uint64_t i = 0; i < items; ++i)
          if (!skip(depth + 1)) return false;
        return true;
      }
      case 6:
        return bad("a tag");
      default:  // 0, 1 (integers), 7 (simple values, floats: the head held them)
        return true;
    }
  }

 private:
  const uint8_t* p_;
  uint32_t n_;
  uint32_t pos_ = 0;
  const char* why_ = nullptr;
};

// The text the parsers return (see nsm.hpp).
char g_msg[160];

bool is_name(Str s) {
  if (s.n == 0 || s.n > 32) return false;
  for (size_t i = 0; i < s.n; ++i) {
    const char ch = s.p[i];
    if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9'))) return false;
  }
  return true;
}

// g_msg = a + b + c + d (b only when it is a name: the device's text never reaches the
// console otherwise).
const char* message(const char* a, Str b = Str{}, const char* c = "", const char* d = "") {
  size_t k = 0;
  auto add = [&k](const char* p, size_t n) {
    for (size_t i = 0; i < n && k + 1 < sizeof g_msg; ++i) g_msg[k++] = p[i];
  };
  add(a, strlen(a));
  if (!b.empty()) {
    if (is_name(b))
      add(b.p, b.n);
    else
      add("?", 1);
  }
  add(c, strlen(c));
  add(d, strlen(d));
  g_msg[k] = 0;
  return g_msg;
}

const char* malformed(const char* why) { return message("malformed response: ", Str{}, why); }

// The top level of a response to request `name`: {"Error": NAME} (returns the name),
// the bare text `name` for a field-less success (has_fields false), or {name: {...}}
// with *nfields set to the inner map's count and the reader at its first key
// (has_fields true). nullptr: go on.
const char* open_response(Reader& r, const char* name, bool has_fields, uint64_t* nfields) {
  const int major = r.peek();
  if (major == kMajorText) {
    Str s;
    if (!r.text(&s, "")) return malformed(r.why());
    if (has_fields || !(s == name)) return message("malformed response: the text ", s, " is not an answer to ", name);
    if (!r.at_end()) return malformed("bytes after the response");
    return nullptr;
  }
  if (major != kMajorMap) return malformed("not a map or a text string");
  uint64_t n = 0;
  Str key;
  if (!r.container(kMajorMap, &n, "")) return malformed(r.why());
  if (n != 1) return malformed("the top-level map does not have exactly one entry");
  if (!r.text(&key, "the top-level key is not a text string")) return malformed(r.why());
  if (key == "Error") {
    Str e;
    if (!r.text(&e, "the Error value is not a text string")) return malformed(r.why());
    if (!r.at_end()) return malformed("bytes after the response");
    if (!is_name(e)) return malformed("the Error value is not a name (1-32 letters and digits)");
    return message("", e);
  }
  if (!(key == name)) return message("malformed response: an answer to ", key, " rather than ", name);
  if (!has_fields) return message("malformed response: not an answer to ", Str{}, name);
  if (!r.container(kMajorMap, nfields, "the response's fields are not a map")) return malformed(r.why());
  return nullptr;
}

// Reads the n fields of a response body (the reader at the first key). names: the
// fields this parser knows (at most 8); field(i, r) reads the value of names[i]
// (false: r.bad() says why). Unknown fields are skipped; every known one must come
// exactly once; nothing may follow the body.
template <class F>
const char* read_fields(Reader& r, uint64_t n, const char* const* names, uint32_t count, F field) {
  bool seen[8] = {};
  for (uint64_t i = 0; i < n; ++i) {
    Str key;
    if (!r.text(&key, "a field name is not a text string")) return malformed(r.why());
    uint32_t f = 0;
    while (f < count && !(key == names[f])) ++f;
    if (f == count) {
      if (!r.skip(2)) return malformed(r.why());
      continue;
    }
    if (seen[f]) return message("malformed response: field ", Str{}, names[f], " appears twice");
    seen[f] = true;
    if (!field(f, r)) return malformed(r.why());
  }
  for (uint32_t f = 0; f < count; ++f)
    if (!seen[f]) return message("malformed response: field ", Str{}, names[f], " is missing");
  if (!r.at_end()) return malformed("bytes after the response");
  return nullptr;
}

bool digest_size(uint32_t n) { return n == 32 || n == 48 || n == 64; }

}  // namespace

const char* parse_describe_nsm(const uint8_t* rsp, uint32_t len, Description* out) {
  Reader r(rsp, len);
  uint64_t n = 0;
  if (const char* e = open_response(r, "DescribeNSM", true, &n)) return e;
  static constexpr const char* kNames[] = {"version_major", "version_minor", "version_patch", "module_id",
                                           "max_pcrs",      "locked_pcrs",   "digest"};
  Description d;
  const char* e = read_fields(r, n, kNames, 7, [&d](uint32_t f, Reader& rr) {
    uint64_t v = 0;
    switch (f) {
      case 0:
      case 1:
      case 2:
        if (!rr.uint(0xffff, &v, "a version field is not an unsigned integer <= 65535")) return false;
        (f == 0 ? d.major : f == 1 ? d.minor : d.patch) = static_cast<uint16_t>(v);
        return true;
      case 3:
        if (!rr.text(&d.module_id, "module_id is not a text string")) return false;
        if (d.module_id.n == 0 || d.module_id.n > kMaxModuleId)
          return rr.bad("module_id is not 1-99 bytes");
        for (size_t i = 0; i < d.module_id.n; ++i)
          if (d.module_id.p[i] < 0x20 || d.module_id.p[i] > 0x7e) return rr.bad("module_id is not printable ASCII");
        return true;
      case 4:
        if (!rr.uint(0xffff, &v, "max_pcrs is not an unsigned integer <= 65535")) return false;
        d.max_pcrs = static_cast<uint16_t>(v);
        return true;
      case 5: {
        uint64_t count = 0;
        if (!rr.container(kMajorArray, &count, "locked_pcrs is not an array")) return false;
        if (count > kMaxLocked) return rr.bad("locked_pcrs has more than 64 entries");
        for (uint64_t i = 0; i < count; ++i) {
          if (!rr.uint(0xffff, &v, "a locked_pcrs entry is not an unsigned integer <= 65535")) return false;
          d.locked[d.nlocked++] = static_cast<uint16_t>(v);
        }
        return true;
      }
      case 6:
        if (!rr.text(&d.digest, "digest is not a text string")) return false;
        if (!(d.digest == "SHA256") && !(d.digest == "SHA384") && !(d.digest == "SHA512"))
          return rr.bad("digest is not SHA256, SHA384 or SHA512");
        return true;
      default:
        return rr.bad("?");
    }
  });
  if (e != nullptr) return e;
  for (uint32_t i = 0; i < d.nlocked; ++i)
    if (d.locked[i] >= d.max_pcrs) return malformed("a locked_pcrs entry is not below max_pcrs");
  *out = d;
  return nullptr;
}

const char* parse_describe_pcr(const uint8_t* rsp, uint32_t len, bool* locked, Bytes* data) {
  Reader r(rsp, len);
  uint64_t n = 0;
  if (const char* e = open_response(r, "DescribePCR", true, &n)) return e;
  static constexpr const char* kNames[] = {"lock", "data"};
  return read_fields(r, n, kNames, 2, [locked, data](uint32_t f, Reader& rr) {
    if (f == 0) return rr.boolean(locked, "lock is not a boolean");
    if (!rr.bytes(data, "data is not a byte string")) return false;
    return digest_size(data->n) || rr.bad("data is not 32, 48 or 64 bytes");
  });
}

const char* parse_extend_pcr(const uint8_t* rsp, uint32_t len, Bytes* data) {
  Reader r(rsp, len);
  uint64_t n = 0;
  if (const char* e = open_response(r, "ExtendPCR", true, &n)) return e;
  static constexpr const char* kNames[] = {"data"};
  return read_fields(r, n, kNames, 1, [data](uint32_t, Reader& rr) {
    if (!rr.bytes(data, "data is not a byte string")) return false;
    return digest_size(data->n) || rr.bad("data is not 32, 48 or 64 bytes");
  });
}

const char* parse_unit(const uint8_t* rsp, uint32_t len, const char* name) {
  Reader r(rsp, len);
  return open_response(r, name, false, nullptr);
}

const char* parse_get_random(const uint8_t* rsp, uint32_t len, Bytes* random) {
  Reader r(rsp, len);
  uint64_t n = 0;
  if (const char* e = open_response(r, "GetRandom", true, &n)) return e;
  static constexpr const char* kNames[] = {"random"};
  return read_fields(r, n, kNames, 1, [random](uint32_t, Reader& rr) {
    if (!rr.bytes(random, "random is not a byte string")) return false;
    return random->n <= kMaxRandom || rr.bad("random is longer than 256 bytes");
  });
}

const char* parse_attestation(const uint8_t* rsp, uint32_t len, Bytes* document) {
  Reader r(rsp, len);
  uint64_t n = 0;
  if (const char* e = open_response(r, "Attestation", true, &n)) return e;
  static constexpr const char* kNames[] = {"document"};
  return read_fields(r, n, kNames, 1, [document](uint32_t, Reader& rr) {
    if (!rr.bytes(document, "document is not a byte string")) return false;
    return document->n != 0 || rr.bad("document is empty");
  });
}

}  // namespace az::nsm
