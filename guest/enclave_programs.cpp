// The enclave demo (ENCLAVES.md §5-§7): an enclave that asks azote-kms for a data key
// with its own attestation document and never lets the key out, and the parent's side.
//
//   enclave-kms-server PORT          the enclave: an RSA-2048 key seeded from the NSM,
//                                    one "DECRYPT <b64>" per connection from the parent,
//                                    answered "RESULT sha256=<hex> bytes=<n>" or "ERROR ..."
//   kms-proxy PORT HOST_PORT         the parent: relays each enclave connection on PORT
//                                    to the host's (2, HOST_PORT), bytes only
//   enclave-ask CID PORT B64         the parent: one DECRYPT to the enclave, its answer
//   kms-parent PORT HOST_PORT CID PORT B64   both at once, in one poll loop
//
// Wire lines (each ends with '\n'):
//   parent -> enclave   DECRYPT <CiphertextBlob, base64>                        <= 8 KiB
//   enclave -> parent   RESULT sha256=<64 hex> bytes=<n> | ERROR <reason>     <= 1 KiB
//   enclave -> KMS      {"op":"Decrypt","CiphertextBlob":"..","Recipient":{"AttestationDocument":
//                        "..","KeyEncryptionAlgorithm":"RSAES_OAEP_SHA_256"}}  (through the proxy)
//   KMS -> enclave      {... "CiphertextForRecipient":"<b64>" ... "ok":true} or
//                       {"error":"Code: sentence","ok":false}                   <= 16 KiB
//
// The KMS reply reaches the enclave through the parent, so it is untrusted: it is read as
// one flat JSON object (strings, literals and numbers only), exactly the keys it needs,
// every length checked, the ciphertext strict base64 of exactly one RSA block.
#include "crypto.hpp"
#include "nsm.hpp"
#include "platform.hpp"
#include "programs.hpp"
#include "rt.hpp"
#include "vsock.hpp"

namespace az {
namespace {

using vsock::kEof;
using vsock::kErrDevice;
using vsock::kErrReset;
using vsock::kErrTimeout;
using vsock::kForever;

constexpr uint32_t kKmsProxyPort = 8000;        // the parent's proxy (ENCLAVES.md §7)
constexpr size_t kRequestLineMax = 8192;        // "DECRYPT <b64>\n"
constexpr size_t kReplyLineMax = 16384;         // the KMS's answer line
constexpr size_t kAnswerLineMax = 1024;         // "RESULT ..." / "ERROR ..."
constexpr size_t kReasonMax = 200;              // an ERROR reason, printable ASCII
constexpr size_t kBlobMax = kRequestLineMax / 4 * 3;
constexpr size_t kNonceBytes = 32;
constexpr size_t kRsaBytes = crypto::kRsaBits / 8;
constexpr uint64_t kConnectS = 10;   // RESPONSE or RST within this
constexpr uint64_t kIoS = 10;        // no progress for this long: timeout
constexpr uint64_t kLingerS = 2;
constexpr uint64_t kAnswerS = 60;    // the enclave's answer (an NSM call and a KMS round trip)
constexpr uint64_t kRelayIdleS = 60;
constexpr uint64_t kWaitEnclaveS = 60;  // kms-parent: how long the enclave may take to listen
constexpr uint64_t kRetryMs = 200;
constexpr uint64_t kAskConnectS = 2;    // kms-parent: one connect attempt
constexpr uint32_t kChunk = vsock::kPayloadMax;
constexpr uint32_t kMaxRelays = vsock::kMaxConns / 2;
constexpr int64_t kTooLong = -100;   // read_line: no '\n' within the bound

constinit vsock::Device g_vs;
constinit nsm::Device g_nsm;
const char* g_prog = "enclave";

// ------------------------------------------------------------------ helpers
// A bounded text buffer (a wire line or a reason); what does not fit is dropped.
class Text {
 public:
  Text(char* p, size_t cap) : p_(p), cap_(cap) {}
  Text& c(char ch) {
    if (n_ < cap_) p_[n_++] = ch;
    return *this;
  }
  Text& s(const char* str) {
    while (*str != 0) c(*str++);
    return *this;
  }
  Text& s(Str str) {
    for (size_t i = 0; i < str.n; ++i) c(str.p[i]);
    return *this;
  }
  Text& u(uint64_t v) {
    char tmp[20];
    size_t k = 0;
    do {
      tmp[k++] = static_cast<char>('0' + v % 10);
      v /= 10;
    } while (v != 0);
    while (k > 0) c(tmp[--k]);
    return *this;
  }
  Text& hex2(uint8_t v) { return c("0123456789abcdef"[v >> 4]).c("0123456789abcdef"[v & 15]); }
  // Printable ASCII only: anything else becomes '?'.
  Text& printable(Str str) {
    for (size_t i = 0; i < str.n; ++i) c(str.p[i] >= 0x20 && str.p[i] <= 0x7e ? str.p[i] : '?');
    return *this;
  }
  void clear() { n_ = 0; }
  size_t n() const { return n_; }
  Str str() const { return Str{p_, n_}; }

 private:
  char* p_;
  size_t cap_;
  size_t n_ = 0;
};

// A console line of any length (flushed in pieces), printable ASCII only.
void put_printable(Line& l, Str text) {
  for (size_t i = 0; i < text.n; ++i) {
    if (l.room() < 1) l.flush();
    const char ch = text.p[i];
    l.c(ch >= 0x20 && ch <= 0x7e ? ch : '?');
  }
}

bool starts_with(Str s, const char* prefix) {
  const size_t n = strlen(prefix);
  if (s.n < n) return false;
  for (size_t i = 0; i < n; ++i)
    if (s.p[i] != prefix[i]) return false;
  return true;
}

uint64_t us(uint64_t ticks) { return g_vs.tsc_hz() == 0 ? 0 : ticks * 1000000 / g_vs.tsc_hz(); }

[[noreturn]] void vsock_died() { vsock::exit_with_error(g_vs, g_prog); }

void open_vsock(const char* prog) {
  g_prog = prog;
  vsock::open_or_exit(g_vs, prog);
}

// What a failed socket call on c means.
const char* what(int64_t c, int64_t err) {
  if (err == kTooLong) return "line too long";
  return err == kErrReset ? g_vs.why(c) : vsock::err_text(err);
}

uint64_t cid_arg(const char* prog, Str arg) {
  uint64_t v = 0;
  if (!parse_u64(arg, 0xfffffffeull, &v)) usage_error(prog, "bad CID (want 0-4294967294):", arg);
  return v;
}
uint32_t port_arg(const char* prog, const char* name, Str arg) {
  uint64_t v = 0;
  if (!parse_u64(arg, 0xfffffffeull, &v)) {
    Line l;
    l.s(kPrefix).s(prog).s(": bad ").s(name).s(" (want 0-4294967294): '").s(arg).s("'").print();
    exit(126);
  }
  return static_cast<uint32_t>(v);
}

// Reads from c into buf until a '\n' (kept): the line's length with it; kTooLong if cap
// bytes came without one; kEof if the peer ended first; kErrTimeout after idle ticks
// without a byte; a socket error. Bytes after the '\n' are read and ignored (one line per
// connection).
int64_t read_line(int64_t c, uint8_t* buf, size_t cap, uint64_t idle) {
  size_t got = 0;
  uint64_t last = rdtsc();
  for (;;) {
    const int64_t r = g_vs.recv(c, buf + got, cap - got);
    if (r == kErrDevice) vsock_died();
    if (r < 0) return r;
    if (r > 0) {
      for (size_t i = got; i < got + static_cast<size_t>(r); ++i)
        if (buf[i] == '\n') return static_cast<int64_t>(i + 1);
      got += static_cast<size_t>(r);
      if (got == cap) return kTooLong;
      last = rdtsc();
      continue;
    }
    if (!g_vs.poll()) vsock_died();
    if (rdtsc() - last > idle) return kErrTimeout;
    for (int i = 0; i < 32; ++i) cpu_relax();
  }
}

// Graceful close that does not wait (poll() finishes it).
void close_conn(int64_t c) { g_vs.close(c, g_vs.ticks(kLingerS)); }

// ------------------------------------------------------- the KMS reply (strict)
// One flat JSON object: members whose values are strings, true, false, null or numbers;
// nothing nested, no key with an escape, nothing after the object but spaces. Of it,
// exactly "ok" (a boolean), "CiphertextForRecipient" and "error" (strings) are used, each
// at most once; other keys are skipped. Strings stay as they are on the wire (escapes not
// decoded): callers decode what they use.
struct KmsReply {
  int ok = -1;  // -1 absent, 0 false, 1 true
  bool have_cfr = false, have_error = false;
  Str cfr, error;
};

class JsonReader {
 public:
  JsonReader(const uint8_t* p, size_t n) : p_(p), n_(n) {}
  const char* parse(KmsReply* out) {
    ws();
    if (!eat('{')) return "not a JSON object";
    ws();
    if (eat('}')) return end();
    for (;;) {
      Str key;
      bool escaped = false;
      if (!string(&key, &escaped)) return why_ != nullptr ? why_ : "a key is not a string";
      if (escaped) return "a key has an escape";
      ws();
      if (!eat(':')) return "no ':' after a key";
      ws();
      if (key == "ok") {
        if (out->ok >= 0) return "\"ok\" twice";
        if (word("true")) out->ok = 1;
        else if (word("false")) out->ok = 0;
        else return "\"ok\" is not a boolean";
      } else if (key == "CiphertextForRecipient" || key == "error") {
        const bool cfr = key == "CiphertextForRecipient";
        if (cfr ? out->have_cfr : out->have_error) return cfr ? "\"CiphertextForRecipient\" twice" : "\"error\" twice";
        Str v;
        bool esc = false;
        if (!string(&v, &esc)) return why_ != nullptr ? why_ : cfr ? "\"CiphertextForRecipient\" is not a string"
                                                                   : "\"error\" is not a string";
        (cfr ? out->cfr : out->error) = v;
        (cfr ? out->have_cfr : out->have_error) = true;
      } else if (const char* bad = skip_value()) {
        return bad;
      }
      ws();
      if (eat('}')) return end();
      if (!eat(',')) return "no ',' or '}' after a value";
      ws();
    }
  }

 private:
  bool at_end() const { return i_ >= n_; }
  bool eat(char ch) {
    if (at_end() || p_[i_] != static_cast<uint8_t>(ch)) return false;
    ++i_;
    return true;
  }
  void ws() {
    while (!at_end() && (p_[i_] == ' ' || p_[i_] == '\t' || p_[i_] == '\r' || p_[i_] == '\n')) ++i_;
  }
  const char* end() {
    ws();
    return at_end() ? nullptr : "bytes after the object";
  }
  bool word(const char* w) {
    const size_t k = strlen(w);
    if (n_ - i_ < k) return false;
    for (size_t j = 0; j < k; ++j)
      if (p_[i_ + j] != static_cast<uint8_t>(w[j])) return false;
    i_ += k;
    return true;
  }
  static bool hex_digit(uint8_t ch) { return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F'); }
  // A JSON string; *out is its raw content between the quotes.
  bool string(Str* out, bool* escaped) {
    if (!eat('"')) return false;
    const size_t start = i_;
    while (!at_end()) {
      const uint8_t ch = p_[i_];
      if (ch == '"') {
        *out = Str{reinterpret_cast<const char*>(p_ + start), i_ - start};
        ++i_;
        return true;
      }
      if (ch < 0x20) return bad("a control character in a string");
      if (ch == '\\') {
        *escaped = true;
        if (n_ - i_ < 2) break;
        const uint8_t e = p_[i_ + 1];
        if (e == 'u') {
          if (n_ - i_ < 6) break;
          for (size_t j = 2; j < 6; ++j)
            if (!hex_digit(p_[i_ + j])) return bad("a bad \\u escape");
          i_ += 6;
          continue;
        }
        if (e != '"' && e != '\\' && e != '/' && e != 'b' && e != 'f' && e != 'n' && e != 'r' && e != 't')
          return bad("a bad escape");
        i_ += 2;
        continue;
      }
      ++i_;
    }
    return bad("an unterminated string");
  }
  bool digits() {
    const size_t start = i_;
    while (!at_end() && p_[i_] >= '0' && p_[i_] <= '9') ++i_;
    return i_ > start;
  }
  const char* skip_value() {
    if (at_end()) return "a missing value";
    const uint8_t ch = p_[i_];
    if (ch == '"') {
      Str s;
      bool e = false;
      return string(&s, &e) ? nullptr : why_;
    }
    if (ch == '{' || ch == '[') return "a nested value (not expected here)";
    if (word("true") || word("false") || word("null")) return nullptr;
    if (ch == '-' || (ch >= '0' && ch <= '9')) {
      eat('-');
      if (!digits()) return "a bad number";
      if (eat('.') && !digits()) return "a bad number";
      if (eat('e') || eat('E')) {
        if (!eat('+')) eat('-');
        if (!digits()) return "a bad number";
      }
      return nullptr;
    }
    return "a value that is not a string, literal or number";
  }
  bool bad(const char* why) {
    why_ = why;
    return false;
  }

  const uint8_t* p_;
  size_t n_;
  size_t i_ = 0;
  const char* why_ = nullptr;
};

// The KMS's error sentence (raw JSON string content) into t: escapes decoded, printable
// ASCII kept, everything else '?'.
void decode_sentence(Str raw, Text& t) {
  auto nib = [](char ch) -> uint32_t {
    return static_cast<uint32_t>(ch <= '9' ? ch - '0' : (ch | 0x20) - 'a' + 10);
  };
  for (size_t i = 0; i < raw.n; ++i) {
    char ch = raw.p[i];
    if (ch == '\\' && i + 1 < raw.n) {  // the reader checked every escape
      const char e = raw.p[++i];
      if (e == 'u' && i + 4 < raw.n) {
        const uint32_t v = nib(raw.p[i + 1]) << 12 | nib(raw.p[i + 2]) << 8 | nib(raw.p[i + 3]) << 4 | nib(raw.p[i + 4]);
        i += 4;
        ch = v >= 0x20 && v <= 0x7e ? static_cast<char>(v) : '?';
      } else {
        ch = e == '"' || e == '\\' || e == '/' ? e : '?';
      }
    }
    t.c(ch >= 0x20 && ch <= 0x7e ? ch : '?');
  }
}

// ============================================================ enclave-kms-server
constinit crypto::RsaKey g_key;
constinit crypto::Drbg g_drbg;
constinit uint8_t g_spki[crypto::kSpkiMax];
size_t g_spki_len;
constinit uint8_t g_nsm_req[nsm::kRequestMax];
constinit uint8_t g_nsm_rsp[nsm::kResponseBytes];
constinit uint8_t g_in[kRequestLineMax];
constinit uint8_t g_blob[kBlobMax];
constinit uint8_t g_reply[kReplyLineMax];
// The KMS request: the fixed text, the blob (<= 8 KiB of base64) and the document
// (< 12 KiB, so < 16 KiB of base64).
constinit char g_json[32 * 1024];
constinit char g_b64[200];

void wipe(void* p, size_t n) {
  auto* v = static_cast<volatile uint8_t*>(p);
  for (size_t i = 0; i < n; ++i) v[i] = 0;
}

// An NSM call with the request in g_nsm_req: the response length in g_nsm_rsp, or 0 if
// the device failed (it is then unusable: the caller answers and the program ends).
bool g_nsm_dead;
uint32_t nsm_call(uint32_t len) {
  uint32_t n = 0;
  uint64_t ticks = 0;
  if (len == 0 || !g_nsm.call(g_nsm_req, len, g_nsm_rsp, &n, &ticks)) {
    Line l;
    l.s(kPrefix).s(g_prog).s(" error: ");
    if (len == 0) l.s("an NSM request does not fit");
    else g_nsm.append_error(l);
    l.print();
    g_nsm_dead = true;
    return 0;
  }
  return n;
}

// GetRandom: at least `want` and at most `cap` bytes into out, their count; 0 with why
// set otherwise.
size_t nsm_random(uint8_t* out, size_t want, size_t cap, Text& why) {
  const uint32_t n = nsm_call(nsm::req_get_random(g_nsm_req, sizeof g_nsm_req));
  if (n == 0) {
    why.s("nsm: device error");
    return 0;
  }
  nsm::Bytes r;
  if (const char* bad = nsm::parse_get_random(g_nsm_rsp, n, &r)) {
    why.s("nsm: GetRandom: ").s(bad);
    return 0;
  }
  if (r.n < want) {
    why.s("nsm: GetRandom gave ").u(r.n).s(" bytes, want at least ").u(want);
    return 0;
  }
  const size_t k = r.n < cap ? r.n : cap;
  for (size_t i = 0; i < k; ++i) out[i] = r.p[i];
  wipe(g_nsm_rsp, n);
  return k;
}

// Appends base64 of p[0, n) to t.
void put_base64(Text& t, const uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; i += 150) {
    const size_t k = base64(p + i, n - i < 150 ? n - i : 150, g_b64);
    t.s(Str{g_b64, k});
  }
}

// One request from the parent on connection c: true with the plaintext's digest and
// length, or false with the reason (printable, bounded).
bool serve_request(int64_t c, uint8_t digest[32], size_t* bytes, Text& why) {
  // 1. "DECRYPT <b64>\n".
  const int64_t n = read_line(c, g_in, sizeof g_in, g_vs.ticks(kIoS));
  if (n < 0) {
    why.s("bad request: ");
    if (n == kTooLong) why.s("no line within ").u(kRequestLineMax).s(" bytes");
    else if (n == kErrTimeout) why.s("no full line within ").u(kIoS).s(" s");
    else why.s(what(c, n));
    return false;
  }
  const Str line{reinterpret_cast<const char*>(g_in), static_cast<size_t>(n) - 1};
  if (!starts_with(line, "DECRYPT ")) {
    why.s("bad request: want 'DECRYPT <CiphertextBlob base64>'");
    return false;
  }
  const Str b64{line.p + 8, line.n - 8};
  size_t blob_len = 0;
  if (!base64_decode(b64, g_blob, sizeof g_blob, &blob_len) || blob_len == 0) {
    why.s("bad request: the CiphertextBlob is not canonical base64 of 1 or more bytes");
    return false;
  }

  // 2. An attestation document with a fresh nonce and our public key.
  uint8_t nonce[kNonceBytes];
  if (nsm_random(nonce, sizeof nonce, sizeof nonce, why) == 0) return false;
  const uint32_t alen = nsm_call(nsm::req_attestation(g_nsm_req, sizeof g_nsm_req, nsm::Bytes{},
                                                      nsm::Bytes{nonce, kNonceBytes},
                                                      nsm::Bytes{g_spki, static_cast<uint32_t>(g_spki_len)}));
  if (alen == 0) {
    why.s("nsm: device error");
    return false;
  }
  nsm::Bytes doc;
  if (const char* bad = nsm::parse_attestation(g_nsm_rsp, alen, &doc)) {
    why.s("nsm: Attestation: ").s(bad);
    return false;
  }

  // 3. The KMS request: one JSON line. Both values are base64 (checked or made here),
  // so nothing in them needs escaping.
  Text req(g_json, sizeof g_json);
  req.s("{\"op\":\"Decrypt\",\"CiphertextBlob\":\"").s(b64).s("\",\"Recipient\":{\"AttestationDocument\":\"");
  put_base64(req, doc.p, doc.n);
  req.s("\",\"KeyEncryptionAlgorithm\":\"RSAES_OAEP_SHA_256\"}}\n");
  if (req.n() == sizeof g_json) {  // cannot happen with the bounds above; never send a cut line
    why.s("the KMS request does not fit");
    return false;
  }

  // 4. Through the parent's proxy: connect, send, one reply line.
  const int64_t k = g_vs.connect(vsock::kCidParent, kKmsProxyPort, g_vs.ticks(kConnectS));
  if (k == kErrDevice) vsock_died();
  if (k < 0) {
    why.s("kms: connect to 3:").u(kKmsProxyPort).s(": ");
    // The driver reports a connection reset in the same batch as its RESPONSE (what the
    // proxy does when the host refuses it) as a protocol error: say both.
    if (k == vsock::kErrProtocol) why.s("reset as soon as it was accepted, or a protocol error");
    else why.s(k == kErrTimeout ? "timeout (no RESPONSE in 10 s)" : vsock::err_text(k));
    return false;
  }
  int64_t r = g_vs.send_all(k, reinterpret_cast<const uint8_t*>(g_json), req.n(), g_vs.ticks(kIoS));
  if (r == kErrDevice) vsock_died();
  if (r < 0) {
    why.s("kms: sending the request through 3:").u(kKmsProxyPort).s(": ").s(r == kErrTimeout ? "timeout" : what(k, r));
    g_vs.abort(k);
    return false;
  }
  r = read_line(k, g_reply, sizeof g_reply, g_vs.ticks(kIoS));
  if (r < 0) {
    why.s("kms: no reply through 3:").u(kKmsProxyPort).s(": ");
    if (r == kTooLong) why.s("no line within ").u(kReplyLineMax).s(" bytes");
    else if (r == kErrTimeout) why.s("timeout (").u(kIoS).s(" s without a byte)");
    else why.s(what(k, r));
    g_vs.abort(k);
    return false;
  }
  close_conn(k);

  // 5. The reply: {"ok":true,...,"CiphertextForRecipient":..} or {"ok":false,"error":..}.
  KmsReply rep;
  if (const char* bad = JsonReader(g_reply, static_cast<size_t>(r) - 1).parse(&rep)) {
    why.s("malformed KMS reply: ").s(bad);
    return false;
  }
  if (rep.ok < 0) {
    why.s("malformed KMS reply: no \"ok\"");
    return false;
  }
  if (rep.ok == 0) {
    if (!rep.have_error) {
      why.s("malformed KMS reply: \"ok\":false without an \"error\"");
      return false;
    }
    decode_sentence(rep.error, why);
    if (why.n() == 0) why.s("the KMS refused (an empty error)");
    return false;
  }
  if (!rep.have_cfr) {
    why.s("malformed KMS reply: no \"CiphertextForRecipient\"");
    return false;
  }
  uint8_t block[kRsaBytes];
  size_t block_len = 0;
  if (!base64_decode(rep.cfr, block, sizeof block, &block_len) || block_len != kRsaBytes) {
    why.s("malformed KMS reply: \"CiphertextForRecipient\" is not base64 of one ").u(kRsaBytes).s("-byte RSA block");
    return false;
  }

  // 6. Only this enclave's key opens it; the plaintext never leaves: its digest does.
  if (!crypto::rsa_oaep_sha256_decrypt(g_key.sk, block, &block_len)) {
    wipe(block, sizeof block);
    why.s("decrypt: CiphertextForRecipient does not decrypt with this enclave's key (RSA-OAEP-SHA256)");
    return false;
  }
  crypto::sha256(block, block_len, digest);
  *bytes = block_len;
  wipe(block, sizeof block);
  return true;
}

[[noreturn]] void prog_server(const Args& a) {
  constexpr const char* kProg = "enclave-kms-server";
  if (a.argc < 1) usage_error(kProg, "missing PORT (want PORT)", Str{});
  if (a.argc > 1) usage_error(kProg, "too many arguments (want PORT), got", a.argv[1]);
  const uint32_t port = port_arg(kProg, "PORT", a.argv[0]);
  g_prog = kProg;
  const nsm::Device::Open o = g_nsm.open();
  if (o == nsm::Device::Open::kNoDevice) {
    Line().s(kPrefix).s(kProg).s(" no NSM device").print();
    exit(2);
  }
  if (o != nsm::Device::Open::kOk) {
    Line l;
    l.s(kPrefix).s(kProg).s(" error: ");
    g_nsm.append_error(l).print();
    exit(1);
  }
  open_vsock(kProg);
  crypto::init_cpu();

  // The DRBG's seed: two GetRandom answers (256 bytes each from azote's card; at least
  // 32 taken), the NSM's entropy as on Nitro: never RDRAND here.
  {
    static uint8_t seed[2 * nsm::kMaxRandom];
    size_t seed_len = 0;
    char whyb[kReasonMax];
    Text why(whyb, sizeof whyb);
    for (size_t i = 0; i < 2; ++i) {
      const size_t k = nsm_random(seed + seed_len, kNonceBytes, nsm::kMaxRandom, why);
      if (k == 0) {
        Line().s(kPrefix).s(kProg).s(" error: seeding the DRBG: ").s(why.str()).print();
        exit(1);
      }
      seed_len += k;
    }
    g_drbg.seed(seed, seed_len);
    wipe(seed, sizeof seed);
  }
  const uint64_t t0 = rdtsc();
  if (!crypto::rsa_keygen(g_drbg, &g_key)) {
    Line().s(kPrefix).s(kProg).s(" error: RSA key generation failed").print();
    exit(1);
  }
  const uint64_t keygen = rdtsc() - t0;
  g_spki_len = crypto::rsa_spki_der(g_key.pk, g_spki, sizeof g_spki);
  if (g_spki_len == 0) {
    Line().s(kPrefix).s(kProg).s(" error: public key encoding failed").print();
    exit(1);
  }
  if (g_vs.listen(port) < 0) {
    Line().s(kPrefix).s(kProg).s(" error: cannot listen on port ").u(port).print();
    exit(1);
  }
  Line().s(kPrefix).s(kProg).s(" key rsa-2048 cid=").u(g_vs.cid()).s(" keygen_ms=").u(us(keygen) / 1000).print();
  Line().s(kPrefix).s(kProg).s(" ready port=").u(port).print();

  for (;;) {
    const int64_t c = g_vs.accept(kForever);
    if (c < 0) vsock_died();
    const uint64_t start = rdtsc();
    const uint64_t peer_cid = g_vs.peer_cid(c);
    const uint32_t peer_port = g_vs.peer_port(c);
    uint8_t digest[32];
    size_t bytes = 0;
    char whyb[kReasonMax];
    Text why(whyb, sizeof whyb);
    bool ok = false;
    bool answer = true;
    if (peer_cid != vsock::kCidParent) {
      why.s("not the parent (CID 3): reset");
      answer = false;
    } else {
      ok = serve_request(c, digest, &bytes, why);
    }

    // The answer line, then a graceful close.
    char out[kAnswerLineMax];
    Text t(out, sizeof out);
    if (ok) {
      t.s("RESULT sha256=");
      for (uint8_t b : digest) t.hex2(b);
      t.s(" bytes=").u(bytes);
    } else {
      t.s("ERROR ").printable(why.str());
    }
    t.c('\n');
    const char* undelivered = nullptr;
    if (answer) {
      const int64_t r = g_vs.send_all(c, reinterpret_cast<const uint8_t*>(out), t.n(), g_vs.ticks(kIoS));
      if (r == kErrDevice) vsock_died();
      if (r < 0) undelivered = r == kErrTimeout ? "timeout" : what(c, r);
    }
    if (answer && undelivered == nullptr) close_conn(c);
    else g_vs.abort(c);

    Line l;
    l.s(kPrefix).s(kProg).s(ok ? " answered ok" : " answered error").s(" peer=").u(peer_cid).c(':').u(peer_port);
    if (ok) l.s(" bytes=").u(bytes);
    l.s(" us=").u(us(rdtsc() - start));
    if (!ok) {
      l.c(' ');
      put_printable(l, why.str());
    }
    if (undelivered != nullptr) {
      l.flush();
      l.s(" (not delivered: ").s(undelivered).c(')');
    }
    l.print();
    if (g_nsm_dead) {  // the NSM failed: no more documents
      g_vs.drain(g_vs.ticks(kLingerS + 1));
      exit(1);
    }
  }
}

// ===================================================================== the proxy
// Each connection an enclave makes to PORT is paired with one to (2, HOST_PORT) and bytes
// are copied both ways, 4 KiB at a time, as the credits allow; nothing is parsed. A pair
// ends when both sides ended sending, or one ended and no longer receives (the usual
// close), with a graceful close of both; or on a reset, the host refusing, or 60 s without
// a byte, with RST to both. A half close is not passed on (the socket layer has none).
struct Relay {
  bool on;
  int64_t a, b;  // a: the enclave's (accepted), b: the host's
  uint64_t peer_cid;
  uint32_t peer_port;
  uint8_t up[kChunk];    // a -> b, read and not sent yet: [up_off, up_len)
  uint8_t down[kChunk];  // b -> a
  uint32_t up_off, up_len, down_off, down_len;
  bool a_eof, b_eof;
  uint64_t up_bytes, down_bytes, last;
};
constinit Relay g_relays[kMaxRelays];

class Proxy {
 public:
  void start(uint32_t port, uint32_t host_port) {
    port_ = port;
    host_port_ = host_port;
    if (g_vs.listen(port) < 0) {
      Line().s(kPrefix).s(g_prog).s(" error: cannot listen on port ").u(port).print();
      exit(1);
    }
    Line().s(kPrefix).s("kms-proxy ready port=").u(port).s(" host_port=").u(host_port).print();
  }

  // Takes new connections (one host connect each: a bounded wait, RST at once when
  // nothing listens) and moves what the credits allow. Never waits otherwise.
  void step() {
    accept_new();
    const uint64_t now = rdtsc();
    for (Relay& r : g_relays)
      if (r.on) pump(r, now);
  }

 private:
  void accept_new() {
    for (Relay& r : g_relays) {
      if (r.on) continue;
      const int64_t c = g_vs.accept(0);
      if (c == kErrTimeout) return;
      if (c < 0) vsock_died();
      r = Relay{};
      r.a = c;
      r.peer_cid = g_vs.peer_cid(c);
      r.peer_port = g_vs.peer_port(c);
      const int64_t h = g_vs.connect(vsock::kCidHost, host_port_, g_vs.ticks(kConnectS));
      if (h == kErrDevice) vsock_died();
      if (h < 0) {
        g_vs.abort(c);
        Line l;
        l.s(kPrefix).s("kms-proxy relayed peer=").u(r.peer_cid).c(':').u(r.peer_port).s(" up=0 down=0 error: connect to 2:")
            .u(host_port_).s(": ");
        if (h == kErrTimeout) l.s("timeout (no RESPONSE in ").u(kConnectS).s(" s)");
        else l.s(vsock::err_text(h));
        l.print();
        continue;
      }
      r.b = h;
      r.on = true;
      r.last = rdtsc();
    }
  }

  // One direction: send what is pending, or read more. 0, or the failing side's error.
  struct Dir {
    int64_t src, dst;
    uint8_t* buf;
    uint32_t* off;
    uint32_t* len;
    bool* src_eof;
    uint64_t* count;
  };
  int64_t move(const Dir& d, bool* progress, int64_t* side) {
    if (*d.off < *d.len) {
      const int64_t r = g_vs.send(d.dst, d.buf + *d.off, *d.len - *d.off);
      if (r < 0) {
        *side = d.dst;
        return r;
      }
      *d.off += static_cast<uint32_t>(r);
      *d.count += static_cast<uint64_t>(r);
      if (r > 0) *progress = true;
    }
    if (*d.off == *d.len && !*d.src_eof) {
      const int64_t r = g_vs.recv(d.src, d.buf, kChunk);
      if (r == kEof) {
        *d.src_eof = true;
        *progress = true;
      } else if (r < 0) {
        *side = d.src;
        return r;
      } else if (r > 0) {
        *d.off = 0;
        *d.len = static_cast<uint32_t>(r);
        *progress = true;
      }
    }
    return 0;
  }

  void pump(Relay& r, uint64_t now) {
    bool progress = false;
    int64_t side = -1;
    int64_t err = move(Dir{r.a, r.b, r.up, &r.up_off, &r.up_len, &r.a_eof, &r.up_bytes}, &progress, &side);
    if (err == 0)
      err = move(Dir{r.b, r.a, r.down, &r.down_off, &r.down_len, &r.b_eof, &r.down_bytes}, &progress, &side);
    if (err == kErrDevice) vsock_died();
    if (err < 0) return finish(r, side == r.a ? "enclave side: " : "host side: ", what(side, err));
    if (progress) r.last = now;
    const bool up_done = r.a_eof && r.up_off == r.up_len;
    const bool down_done = r.b_eof && r.down_off == r.down_len;
    // Ended sending and no longer receiving (a probe: a zero-byte send) is a full close.
    if ((up_done && down_done) || (up_done && g_vs.send(r.a, r.up, 0) < 0) ||
        (down_done && g_vs.send(r.b, r.down, 0) < 0))
      return finish(r, nullptr, nullptr);
    if (now - r.last > g_vs.ticks(kRelayIdleS)) finish(r, "idle timeout (60 s), reset", "");
  }

  void finish(Relay& r, const char* where, const char* why) {
    if (where == nullptr) {
      close_conn(r.a);
      close_conn(r.b);
    } else {
      g_vs.abort(r.a);
      g_vs.abort(r.b);
    }
    Line l;
    l.s(kPrefix).s("kms-proxy relayed peer=").u(r.peer_cid).c(':').u(r.peer_port).s(" up=").u(r.up_bytes).s(" down=")
        .u(r.down_bytes);
    if (where != nullptr) l.s(" error: ").s(where).s(why);
    l.print();
    r.on = false;
  }

  uint32_t port_ = 0, host_port_ = 0;
};

constinit Proxy g_proxy;

// =================================================================== the ask
// "DECRYPT <b64>\n" to the enclave and its one answer line, as a state machine the
// caller steps from its poll loop (kms-parent also relays in that loop: the enclave's
// answer depends on its KMS request getting through the proxy).
constinit char g_ask_line[kRequestLineMax];
constinit uint8_t g_answer[kAnswerLineMax];

class Ask {
 public:
  enum State { kConnecting, kSending, kReading, kDone };

  // b64: the blob, already checked.
  void start(uint64_t cid, uint32_t port, Str b64, bool retry) {
    cid_ = cid;
    port_ = port;
    retry_ = retry;
    Text t(g_ask_line, sizeof g_ask_line);
    t.s("DECRYPT ").s(b64).c('\n');
    len_ = t.n();
    state_ = kConnecting;
    start_ = next_try_ = rdtsc();
  }
  State state() const { return state_; }
  bool ok() const { return ok_; }

  void step() {
    const uint64_t now = rdtsc();
    switch (state_) {
      case kConnecting: {
        if (now < next_try_) return;
        const int64_t c = g_vs.connect(cid_, port_, g_vs.ticks(retry_ ? kAskConnectS : kConnectS));
        if (c == kErrDevice) vsock_died();
        if (c >= 0) {
          c_ = c;
          state_ = kSending;
          off_ = 0;
          got_ = 0;
          last_ = rdtsc();
          return;
        }
        if (retry_ && (c == vsock::kErrRefused || c == kErrTimeout) && rdtsc() - start_ < g_vs.ticks(kWaitEnclaveS)) {
          next_try_ = rdtsc() + g_vs.tsc_hz() / 1000 * kRetryMs;
          return;
        }
        Line l;
        l.s(kPrefix).s("enclave-ask error: connect to ").u(cid_).c(':').u(port_).s(": ");
        if (c == kErrTimeout) l.s("timeout (no RESPONSE)");
        else l.s(vsock::err_text(c));
        if (retry_) l.s(" (tried for ").u(kWaitEnclaveS).s(" s)");
        l.print();
        state_ = kDone;
        return;
      }
      case kSending: {
        const int64_t r = g_vs.send(c_, reinterpret_cast<const uint8_t*>(g_ask_line) + off_, len_ - off_);
        if (r < 0) return fail(r, "sending");
        off_ += static_cast<size_t>(r);
        if (off_ == len_) state_ = kReading;
        [[fallthrough]];
      }
      case kReading: {
        if (state_ == kReading) {
          const int64_t r = g_vs.recv(c_, g_answer + got_, sizeof g_answer - got_);
          if (r < 0) return fail(r, "no answer");
          for (size_t i = got_; i < got_ + static_cast<size_t>(r); ++i)
            if (g_answer[i] == '\n') return answered(i);
          got_ += static_cast<size_t>(r);
          if (got_ == sizeof g_answer) return fail(kTooLong, "no answer");
        }
        if (now - last_ > g_vs.ticks(kAnswerS)) return fail(kErrTimeout, "no answer");
        return;
      }
      case kDone:
        return;
    }
  }

 private:
  void answered(size_t nl) {
    const Str line{reinterpret_cast<const char*>(g_answer), nl};
    Line l;
    l.s(kPrefix).s("enclave-ask ");
    // The enclave's line, printable and bounded.
    put_printable(l, Str{line.p, line.n < kReasonMax + 64 ? line.n : kReasonMax + 64});
    l.print();
    ok_ = starts_with(line, "RESULT ");
    close_conn(c_);
    state_ = kDone;
  }
  void fail(int64_t err, const char* doing) {
    if (err == kErrDevice) vsock_died();
    Line l;
    l.s(kPrefix).s("enclave-ask error: ").s(doing).s(" (").u(cid_).c(':').u(port_).s("): ");
    if (err == kTooLong) l.s("no line within ").u(kAnswerLineMax).s(" bytes");
    else if (err == kErrTimeout) l.s("timeout (").u(kAnswerS).s(" s)");
    else if (err == kEof) l.s("the enclave closed the connection before a full line");
    else l.s(what(c_, err));
    l.print();
    g_vs.abort(c_);
    state_ = kDone;
  }

  uint64_t cid_ = 0;
  uint32_t port_ = 0;
  bool retry_ = false;
  bool ok_ = false;
  State state_ = kDone;
  int64_t c_ = -1;
  size_t len_ = 0, off_ = 0, got_ = 0;
  uint64_t start_ = 0, next_try_ = 0, last_ = 0;
};

constinit Ask g_ask;

// CIPHERTEXT_B64: canonical base64 of 1 or more bytes, fitting the request line.
Str blob_arg(const char* prog, Str arg) {
  size_t n = 0;
  if (arg.n + 9 > kRequestLineMax || !base64_decode(arg, g_blob, sizeof g_blob, &n) || n == 0) {
    Line().s(kPrefix).s(prog).s(": CIPHERTEXT_B64 is not canonical base64 of 1 or more bytes in at most ")
        .u(kRequestLineMax - 9).s(" characters").print();
    exit(126);
  }
  return arg;
}

// ------------------------------------------------------------------ kms-proxy
[[noreturn]] void prog_proxy(const Args& a) {
  constexpr const char* kProg = "kms-proxy";
  if (a.argc < 2) usage_error(kProg, "missing arguments (want PORT HOST_PORT)", Str{});
  if (a.argc > 2) usage_error(kProg, "too many arguments (want PORT HOST_PORT), got", a.argv[2]);
  const uint32_t port = port_arg(kProg, "PORT", a.argv[0]);
  const uint32_t host_port = port_arg(kProg, "HOST_PORT", a.argv[1]);
  open_vsock(kProg);
  g_proxy.start(port, host_port);
  for (;;) {
    if (!g_vs.poll()) vsock_died();
    g_proxy.step();
  }
}

// ---------------------------------------------------------------- enclave-ask
[[noreturn]] void prog_ask(const Args& a) {
  constexpr const char* kProg = "enclave-ask";
  if (a.argc < 3) usage_error(kProg, "missing arguments (want CID PORT CIPHERTEXT_B64)", Str{});
  if (a.argc > 3) usage_error(kProg, "too many arguments (want CID PORT CIPHERTEXT_B64), got", a.argv[3]);
  const uint64_t cid = cid_arg(kProg, a.argv[0]);
  const uint32_t port = port_arg(kProg, "PORT", a.argv[1]);
  const Str b64 = blob_arg(kProg, a.argv[2]);
  open_vsock(kProg);
  g_ask.start(cid, port, b64, false);
  while (g_ask.state() != Ask::kDone) {
    if (!g_vs.poll()) vsock_died();
    g_ask.step();
  }
  g_vs.drain(g_vs.ticks(kLingerS + 1));
  exit(g_ask.ok() ? 0 : 1);
}

// ----------------------------------------------------------------- kms-parent
[[noreturn]] void prog_parent(const Args& a) {
  constexpr const char* kProg = "kms-parent";
  if (a.argc < 5) usage_error(kProg, "missing arguments (want PORT HOST_PORT ENCLAVE_CID ENCLAVE_PORT CIPHERTEXT_B64)", Str{});
  if (a.argc > 5)
    usage_error(kProg, "too many arguments (want PORT HOST_PORT ENCLAVE_CID ENCLAVE_PORT CIPHERTEXT_B64), got", a.argv[5]);
  const uint32_t port = port_arg(kProg, "PORT", a.argv[0]);
  const uint32_t host_port = port_arg(kProg, "HOST_PORT", a.argv[1]);
  const uint64_t cid = cid_arg(kProg, a.argv[2]);
  const uint32_t enclave_port = port_arg(kProg, "ENCLAVE_PORT", a.argv[3]);
  const Str b64 = blob_arg(kProg, a.argv[4]);
  open_vsock(kProg);
  g_proxy.start(port, host_port);
  g_ask.start(cid, enclave_port, b64, true);
  // One loop, nothing in it waits for the other: the ask is stepped (its connect
  // attempts are the only bounded waits), and the proxy moves the enclave's KMS traffic
  // while the ask waits for the answer that traffic produces.
  for (;;) {
    if (!g_vs.poll()) vsock_died();
    g_proxy.step();
    g_ask.step();
  }
}

}  // namespace

[[noreturn]] void prog_enclave_kms_server(const Args& args) { prog_server(args); }
[[noreturn]] void prog_kms_proxy(const Args& args) { prog_proxy(args); }
[[noreturn]] void prog_enclave_ask(const Args& args) { prog_ask(args); }
[[noreturn]] void prog_kms_parent(const Args& args) { prog_parent(args); }

}  // namespace az
