// The NSM programs, over the user-mode virtio-nsm driver (nsm.hpp): `nsm-describe`,
// `nsm-pcrs [N]`, `nsm-extend INDEX DATA_HEX`, `nsm-lock INDEX`, `nsm-lock-range
// RANGE`, `nsm-attest NONCE_HEX [USER_DATA_HEX [PUBLIC_KEY_HEX]]`, `nsm-random` and
// `nsm-raw REQUEST_HEX` (any bytes, for the host's hostile-input tests). Each sends
// one API request per call and waits for its response (10 s at most).
#include "nsm.hpp"
#include "platform.hpp"
#include "programs.hpp"
#include "rt.hpp"

namespace az {
namespace {

using nsm::Bytes;

// What the programs share: the device, the request being built, the private copy of
// the last response (the only one ever parsed), and the running program's name (in
// every line the helpers below print). Static: the user stack is small.
constinit nsm::Device g_dev;
constinit uint8_t g_req[nsm::kRawRequestMax];
constinit uint8_t g_rsp[nsm::kResponseBytes];
const char* g_prog = "nsm";

// Argument buffers.
constexpr uint32_t kMaxOptional = 1024;  // user_data, nonce, public_key (ENCLAVES.md §1.2)
constinit uint8_t g_data[nsm::kRequestMax];
constinit uint8_t g_nonce[kMaxOptional], g_user_data[kMaxOptional], g_public_key[kMaxOptional];

// "PROG error: virtio-nsm at 0x...: WHAT", exit 1.
[[noreturn]] void device_error() {
  Line l;
  l.s(kPrefix).s(g_prog).s(" error: ");
  g_dev.append_error(l).print();
  exit(1);
}

// Finds and sets up the device for program `prog`: "PROG no NSM device" and exit 2
// without one, a device error line and exit 1 if it refuses. `announce` prints the
// device line.
void open_or_exit(const char* prog, bool announce) {
  g_prog = prog;
  const nsm::Device::Open o = g_dev.open();
  if (o == nsm::Device::Open::kNoDevice) {
    Line().s(kPrefix).s(prog).s(" no NSM device").print();
    exit(2);
  }
  if (o != nsm::Device::Open::kOk) device_error();
  if (!announce) return;
  Line l;
  l.s(kPrefix);
  g_dev.append_description(l).print();
}

// One call with the `len` request bytes in g_req (0: the request did not fit, a bug
// here); returns the response length in g_rsp and sets *ticks. Device trouble ends
// the program.
uint32_t call(uint32_t len, uint64_t* ticks) {
  if (len == 0) {
    Line().s(kPrefix).s(g_prog).s(" error: the request does not fit in ").u(nsm::kRequestMax).s(" bytes").print();
    exit(1);
  }
  uint32_t n = 0;
  if (!g_dev.call(g_req, len, g_rsp, &n, ticks)) device_error();
  return n;
}

// Characters that may not fit go out in pieces (Line holds 239): flush first.
void room(Line& l, size_t need) {
  if (l.room() < need) l.flush();
}

// " us=N": the TSC time of a call (nothing when the TSC frequency is unknown).
Line& put_us(Line& l, uint64_t ticks) {
  const uint64_t hz = tsc_hz();
  room(l, 24);
  if (hz != 0) l.s(" us=").u(ticks * 1000000 / hz);
  return l;
}

Line& put_hex(Line& l, Bytes b) {
  if (b.n == 0) return l.c('-');
  for (uint32_t i = 0; i < b.n; ++i) {
    room(l, 2);
    l.hex2(b.p[i]);
  }
  return l;
}

// "azote-guest: LABEL <base64>" on one console line of any length, 200 characters
// (150 bytes) at a time.
void print_base64(const char* label, const uint8_t* p, uint32_t n) {
  Line l;
  l.s(kPrefix).s(label).c(' ');
  char b64[200];
  for (uint32_t i = 0; i < n; i += 150) {
    const size_t k = base64(p + i, n - i < 150 ? n - i : 150, b64);
    room(l, k);
    l.s(Str{b64, k});
  }
  l.print();
}

void print_response(uint32_t n) { print_base64("nsm-response", g_rsp, n); }

// A response the parser refused: "PROG error: NAME" (the device's {"Error": NAME})
// or "PROG error: malformed response: WHY" -- before that one, the response itself,
// unless the program printed it already. Exit 1.
[[noreturn]] void refused(const char* text, uint32_t n, bool printed) {
  constexpr char kMalformed[] = "malformed";
  bool is_malformed = true;
  for (size_t i = 0; i + 1 < sizeof kMalformed; ++i)
    if (text[i] != kMalformed[i]) is_malformed = false;
  if (is_malformed && !printed) print_response(n);
  Line().s(kPrefix).s(g_prog).s(" error: ").s(text).print();
  exit(1);
}

void no_arguments(const char* prog, const Args& a) {
  if (a.argc > 0) usage_error(prog, "takes no arguments, got", a.argv[0]);
}

// INDEX / RANGE: 0-65535.
uint16_t u16_arg(const char* prog, const char* what, Str arg) {
  uint64_t v = 0;
  if (!parse_u64(arg, 0xffff, &v)) usage_error(prog, what, arg);
  return static_cast<uint16_t>(v);
}

// A hex argument: two digits a byte (either case), 1..cap bytes; with `dash`, "-" is
// absent (p == nullptr). Anything else is a usage error (exit 126, nothing sent).
Bytes hex_arg(const char* prog, const char* name, Str arg, uint8_t* out, uint32_t cap, bool dash) {
  if (dash && arg == "-") return Bytes{};
  if (arg.n > 2 * size_t{cap}) {
    Line().s(kPrefix).s(prog).s(": ").s(name).s(" has ").u(arg.n).s(" hex digits, more than ").u(2 * uint64_t{cap})
        .s(" (").u(cap).s(" bytes)").print();
    exit(126);
  }
  size_t len = 0;
  if (arg.n % 2 != 0) {
    Line().s(kPrefix).s(prog).s(": ").s(name).s(" has an odd number of hex digits").print();
    exit(126);
  }
  if (!parse_hex(arg, out, cap, &len) || len == 0) {
    Line l;
    l.s(kPrefix).s(prog).s(": ").s(name).s(" is not hex digits: '");
    for (size_t i = 0; i < arg.n && i < 64; ++i) l.c(arg.p[i]);
    l.s(arg.n > 64 ? "...'" : "'").print();
    exit(126);
  }
  return Bytes{out, static_cast<uint32_t>(len)};
}

// ---------------------------------------------------------------- nsm-describe
[[noreturn]] void prog_nsm_describe_impl(const Args& a) {
  no_arguments("nsm-describe", a);
  open_or_exit("nsm-describe", true);
  uint64_t ticks = 0;
  const uint32_t n = call(nsm::req_describe_nsm(g_req, nsm::kRequestMax), &ticks);
  print_response(n);
  nsm::Description d;
  if (const char* bad = nsm::parse_describe_nsm(g_rsp, n, &d)) refused(bad, n, true);
  Line l;
  l.s(kPrefix).s("nsm-describe module_id=").s(d.module_id);  // at most 99 characters: fits
  l.s(" version=").u(d.major).c('.').u(d.minor).c('.').u(d.patch).s(" max_pcrs=").u(d.max_pcrs).s(" locked=");
  if (d.nlocked == 0) l.c('-');
  for (uint32_t i = 0; i < d.nlocked; ++i) {
    room(l, 6);
    if (i > 0) l.c(',');
    l.u(d.locked[i]);
  }
  room(l, 16);
  l.s(" digest=").s(d.digest);
  put_us(l, ticks).print();
  exit(0);
}

// -------------------------------------------------------------------- nsm-pcrs
[[noreturn]] void prog_nsm_pcrs_impl(const Args& a) {
  uint64_t count = 32;
  if (a.argc > 1) usage_error("nsm-pcrs", "too many arguments (want [N]), got", a.argv[1]);
  if (a.argc > 0 && (!parse_u64(a.argv[0], 65536, &count) || count == 0))
    usage_error("nsm-pcrs", "bad PCR count (want 1-65536):", a.argv[0]);
  open_or_exit("nsm-pcrs", false);
  uint64_t total = 0;
  for (uint64_t i = 0; i < count; ++i) {
    const auto index = static_cast<uint16_t>(i);
    uint64_t ticks = 0;
    const uint32_t n = call(nsm::req_describe_pcr(g_req, nsm::kRequestMax, index), &ticks);
    total += ticks;
    bool locked = false;
    Bytes data;
    if (const char* bad = nsm::parse_describe_pcr(g_rsp, n, &locked, &data)) refused(bad, n, false);
    Line l;
    l.s(kPrefix).s("nsm-pcr ").u(index).s(" locked=").c(locked ? '1' : '0').c(' ');
    put_hex(l, data).print();
  }
  Line l;
  l.s(kPrefix).s("nsm-pcrs ok pcrs=").u(count);
  const uint64_t hz = tsc_hz();
  if (hz != 0) l.s(" us_per_call=").u(total / count * 1000000 / hz);
  l.print();
  exit(0);
}

// ------------------------------------------------------------------ nsm-extend
[[noreturn]] void prog_nsm_extend_impl(const Args& a) {
  if (a.argc < 2) usage_error("nsm-extend", "missing arguments (want INDEX DATA_HEX)", Str{});
  if (a.argc > 2) usage_error("nsm-extend", "too many arguments (want INDEX DATA_HEX), got", a.argv[2]);
  const uint16_t index = u16_arg("nsm-extend", "bad INDEX (want 0-65535):", a.argv[0]);
  const Bytes data = hex_arg("nsm-extend", "DATA_HEX", a.argv[1], g_data, sizeof g_data, false);
  const uint32_t len = nsm::req_extend_pcr(g_req, nsm::kRequestMax, index, data);
  if (len == 0) {
    Line().s(kPrefix).s("nsm-extend: DATA_HEX makes a request over ").u(nsm::kRequestMax).s(" bytes").print();
    exit(126);
  }
  open_or_exit("nsm-extend", false);
  uint64_t ticks = 0;
  const uint32_t n = call(len, &ticks);
  Bytes value;
  if (const char* bad = nsm::parse_extend_pcr(g_rsp, n, &value)) refused(bad, n, false);
  Line l;
  l.s(kPrefix).s("nsm-extend ").u(index).c(' ');
  put_us(put_hex(l, value), ticks).print();
  exit(0);
}

// --------------------------------------------------------- nsm-lock, nsm-lock-range
// `nsm-lock INDEX` (LockPCR) or `nsm-lock-range RANGE` (LockPCRs): "PROG ok".
[[noreturn]] void lock(const char* prog, const Args& a, bool range) {
  const char* missing = range ? "missing RANGE (want 0-65535)" : "missing INDEX (want 0-65535)";
  const char* bad_value = range ? "bad RANGE (want 0-65535):" : "bad INDEX (want 0-65535):";
  if (a.argc < 1) usage_error(prog, missing, Str{});
  if (a.argc > 1) usage_error(prog, "too many arguments, got", a.argv[1]);
  const uint16_t v = u16_arg(prog, bad_value, a.argv[0]);
  open_or_exit(prog, false);
  uint64_t ticks = 0;
  const uint32_t n = call(range ? nsm::req_lock_pcrs(g_req, nsm::kRequestMax, v)
                                : nsm::req_lock_pcr(g_req, nsm::kRequestMax, v),
                          &ticks);
  if (const char* bad = nsm::parse_unit(g_rsp, n, range ? "LockPCRs" : "LockPCR")) refused(bad, n, false);
  Line l;
  l.s(kPrefix).s(prog).s(" ok");
  put_us(l, ticks).print();
  exit(0);
}

// ------------------------------------------------------------------ nsm-attest
[[noreturn]] void prog_nsm_attest_impl(const Args& given) {
  constexpr const char* kProg = "nsm-attest";
  // --park: stay up after the document (an enclave that attests, then keeps running).
  Args a = given;
  const bool stay = a.argc > 0 && a.argv[0] == "--park";
  if (stay) {
    for (size_t i = 1; i < a.argc; ++i) a.argv[i - 1] = a.argv[i];
    --a.argc;
  }
  if (a.argc < 1) usage_error(kProg, "missing NONCE_HEX (want NONCE_HEX [USER_DATA_HEX [PUBLIC_KEY_HEX]])", Str{});
  if (a.argc > 3)
    usage_error(kProg, "too many arguments (want NONCE_HEX [USER_DATA_HEX [PUBLIC_KEY_HEX]]), got", a.argv[3]);
  const Bytes nonce = hex_arg(kProg, "NONCE_HEX", a.argv[0], g_nonce, kMaxOptional, true);
  const Bytes user_data =
      a.argc > 1 ? hex_arg(kProg, "USER_DATA_HEX", a.argv[1], g_user_data, kMaxOptional, true) : Bytes{};
  const Bytes public_key =
      a.argc > 2 ? hex_arg(kProg, "PUBLIC_KEY_HEX", a.argv[2], g_public_key, kMaxOptional, true) : Bytes{};
  // Three fields of at most 1024 bytes and their names always fit in 4096.
  const uint32_t len = nsm::req_attestation(g_req, nsm::kRequestMax, user_data, nonce, public_key);
  open_or_exit(kProg, false);
  uint64_t ticks = 0;
  const uint32_t n = call(len, &ticks);
  Bytes doc;
  if (const char* bad = nsm::parse_attestation(g_rsp, n, &doc)) refused(bad, n, false);
  print_base64("nsm-attestation-document", doc.p, doc.n);
  Line l;
  l.s(kPrefix).s("nsm-attest ok bytes=").u(doc.n);
  put_us(l, ticks).print();
  if (stay) park();
  exit(0);
}

// ------------------------------------------------------------------ nsm-random
[[noreturn]] void prog_nsm_random_impl(const Args& a) {
  no_arguments("nsm-random", a);
  open_or_exit("nsm-random", false);
  uint64_t ticks = 0;
  const uint32_t n = call(nsm::req_get_random(g_req, nsm::kRequestMax), &ticks);
  Bytes random;
  if (const char* bad = nsm::parse_get_random(g_rsp, n, &random)) refused(bad, n, false);
  Line l;
  l.s(kPrefix).s("nsm-random bytes=").u(random.n).c(' ');
  put_us(put_hex(l, random), ticks).print();
  exit(0);
}

// ------------------------------------------------------------------- nsm-bench
// `nsm-bench [SECONDS]`: Attestation requests (a fresh 8-byte nonce each) for SECONDS
// (default 2, 1-60), then DescribePCR 0 for as long; one line with the rates and the
// per-call times (TSC). What a benchmark needs to compare an enclave's NSM with peers.
[[noreturn]] void prog_nsm_bench_impl(const Args& a) {
  constexpr const char* kProg = "nsm-bench";
  uint64_t seconds = 2;
  if (a.argc > 1) usage_error(kProg, "too many arguments (want [SECONDS]), got", a.argv[1]);
  if (a.argc == 1 && (!parse_u64(a.argv[0], 60, &seconds) || seconds < 1))
    usage_error(kProg, "SECONDS must be 1 to 60, got", a.argv[0]);
  open_or_exit(kProg, false);
  const uint64_t hz = tsc_hz();
  if (hz == 0) {
    Line().s(kPrefix).s(kProg).s(" error: the TSC frequency is unknown").print();
    exit(1);
  }
  struct Stats {
    uint64_t calls = 0, ticks = 0, min = ~0ull, max = 0;
    void add(uint64_t t) {
      ++calls;
      ticks += t;
      if (t < min) min = t;
      if (t > max) max = t;
    }
  };
  const auto run = [&](bool attest, Stats* st) {
    const uint64_t end = rdtsc() + seconds * hz;
    uint8_t nonce[8] = {};
    while (rdtsc() < end) {
      uint32_t len = 0;
      if (attest) {
        for (int i = 0; i < 8; ++i) nonce[i] = static_cast<uint8_t>(st->calls >> (8 * i));
        len = nsm::req_attestation(g_req, nsm::kRequestMax, Bytes{}, Bytes{nonce, 8}, Bytes{});
      } else {
        len = nsm::req_describe_pcr(g_req, nsm::kRequestMax, 0);
      }
      uint64_t ticks = 0;
      const uint32_t n = call(len, &ticks);
      Bytes out;
      bool locked = false;
      const char* bad = attest ? nsm::parse_attestation(g_rsp, n, &out) : nsm::parse_describe_pcr(g_rsp, n, &locked, &out);
      if (bad != nullptr) refused(bad, n, false);
      st->add(ticks);
    }
  };
  Stats at, dp;
  run(true, &at);
  run(false, &dp);
  const auto us = [hz](uint64_t t) { return t * 1000000 / hz; };
  Line l;
  l.s(kPrefix).s("nsm-bench attestations=").u(at.calls).s(" attest_per_s=").u(at.calls / seconds)
      .s(" attest_us_avg=").u(us(at.ticks / (at.calls ? at.calls : 1))).s(" attest_us_min=").u(us(at.min))
      .s(" attest_us_max=").u(us(at.max));
  room(l, 120);
  l.s(" describe_pcr_per_s=").u(dp.calls / seconds).s(" describe_pcr_us_avg=").u(us(dp.ticks / (dp.calls ? dp.calls : 1)))
      .s(" seconds=").u(seconds);
  l.print();
  exit(0);
}

// --------------------------------------------------------------------- nsm-raw
// Any bytes, even ones no API request looks like or over the 4096-byte limit (up to
// 16 KiB): the host's hostile-input tests. The response is printed, never parsed.
[[noreturn]] void prog_nsm_raw_impl(const Args& a) {
  constexpr const char* kProg = "nsm-raw";
  if (a.argc < 1) usage_error(kProg, "missing REQUEST_HEX", Str{});
  if (a.argc > 1) usage_error(kProg, "too many arguments (want REQUEST_HEX), got", a.argv[1]);
  const Bytes req = hex_arg(kProg, "REQUEST_HEX", a.argv[0], g_req, sizeof g_req, false);
  open_or_exit(kProg, false);
  uint64_t ticks = 0;
  const uint32_t n = call(req.n, &ticks);
  print_response(n);
  Line l;
  l.s(kPrefix).s("nsm-raw ok request=").u(req.n).s(" response=").u(n);
  put_us(l, ticks).print();
  exit(0);
}

}  // namespace

[[noreturn]] void prog_nsm_describe(const Args& args) { prog_nsm_describe_impl(args); }
[[noreturn]] void prog_nsm_pcrs(const Args& args) { prog_nsm_pcrs_impl(args); }
[[noreturn]] void prog_nsm_extend(const Args& args) { prog_nsm_extend_impl(args); }
[[noreturn]] void prog_nsm_lock(const Args& args) { lock("nsm-lock", args, false); }
[[noreturn]] void prog_nsm_lock_range(const Args& args) { lock("nsm-lock-range", args, true); }
[[noreturn]] void prog_nsm_attest(const Args& args) { prog_nsm_attest_impl(args); }
[[noreturn]] void prog_nsm_random(const Args& args) { prog_nsm_random_impl(args); }
[[noreturn]] void prog_nsm_raw(const Args& args) { prog_nsm_raw_impl(args); }
[[noreturn]] void prog_nsm_bench(const Args& args) { prog_nsm_bench_impl(args); }

}  // namespace az
