// The block programs: `blk-check [MIB]` (write a per-run pattern, flush, read it
// back, verify), `blk-fua [MIB]` (switch the device to write-through, confirm it,
// write the pattern with no flush, read it back, verify), `blk-bench [QD] [SECONDS]
// [QUEUES]` (4 KiB random and 1 MiB sequential reads and writes at a queue depth), all
// with many requests in flight, and `blk-hostile` (break the device with a buffer
// outside guest RAM, see DEVICE_NEEDS_RESET, reset, then a working round trip). All
// drive the user-mode virtio-blk driver (blk.hpp).
#include "blk.hpp"
#include "platform.hpp"
#include "programs.hpp"
#include "rt.hpp"

namespace az {
namespace {

using blk::Completion;
using blk::Device;

constexpr uint64_t kSector = blk::kSectorBytes;

constinit Device g_dev;

struct Req {
  uint32_t type;
  uint64_t sector;
  uint64_t buf;
  uint32_t len;
};
constinit Req g_reqs[blk::kMaxSlots];

// Keeps every slot busy: next(slot, &req) gives a slot its next request (false:
// no more work), done(slot, req, status) sees each completion. Completions that
// are ready together are refilled together and published with one kick.
template <class Next, class Done>
void pump(Next next, Done done) {
  for (uint32_t s = 0; s < g_dev.slots(); ++s) {
    if (!next(s, &g_reqs[s])) break;
    g_dev.submit(s, g_reqs[s].type, g_reqs[s].sector, g_reqs[s].buf, g_reqs[s].len);
  }
  g_dev.kick();
  while (g_dev.in_flight() > 0) {
    Completion c = g_dev.wait();
    do {
      done(c.slot, g_reqs[c.slot], c.status);
      if (next(c.slot, &g_reqs[c.slot]))
        g_dev.submit(c.slot, g_reqs[c.slot].type, g_reqs[c.slot].sector, g_reqs[c.slot].buf, g_reqs[c.slot].len);
    } while (g_dev.poll(&c));
    g_dev.kick();
  }
}

const char* op_name(uint32_t type) {
  return type == blk::kTypeIn ? "read" : type == blk::kTypeOut ? "write" : type == blk::kTypeFlush ? "flush" : "?";
}

const char* status_name(uint8_t s) {
  return s == blk::kStatusIoErr ? "IOERR" : s == blk::kStatusUnsupp ? "UNSUPP" : s == 0xff ? "not written" : "unknown";
}

[[noreturn]] void request_failed(const Req& r, uint8_t status) {
  Line l = g_dev.error_line();
  l.s("op=").s(op_name(r.type)).s(" sector=").u(r.sector).s(" len=").u(r.len).s(" status=").u(status).s(" (").s(
      status_name(status)).s(")");
  g_dev.die(l);
}

void open_or_exit(const blk::Options& o) {
  if (g_dev.open(o) == Device::Open::kNoDevice) {
    Line().s(kPrefix).s(o.who).s(": no virtio-blk device").print();
    exit(2);
  }
}

Line& hex64(Line& l, uint64_t v) {
  for (int sh = 56; sh >= 0; sh -= 8) l.hex2(static_cast<uint8_t>(v >> sh));
  return l;
}

// v with `decimals` digits after the point (v >= 0).
Line& fixed(Line& l, double v, unsigned decimals) {
  uint64_t scale = 1;
  for (unsigned i = 0; i < decimals; ++i) scale *= 10;
  const uint64_t x = static_cast<uint64_t>(v * static_cast<double>(scale) + 0.5);
  l.u(x / scale);
  if (decimals == 0) return l;
  l.c('.');
  char digits[20];
  uint64_t frac = x % scale;
  for (unsigned i = decimals; i-- > 0;) {
    digits[i] = static_cast<char>('0' + frac % 10);
    frac /= 10;
  }
  for (unsigned i = 0; i < decimals; ++i) l.c(digits[i]);
  return l;
}

// ------------------------------------------------------------------ blk-check
// Word i (0-63) of sector s holds mix(seed ^ (s << 6 | i)): different for every
// word, sector and run, so neither stale data nor a misdirected sector passes.
inline uint64_t mix(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return x;
}
inline uint64_t pattern(uint64_t seed, uint64_t sector, uint64_t word) { return mix(seed ^ ((sector << 6) | word)); }

void fill(uint64_t seed, uint64_t sector, uint64_t buf, uint32_t len) {
  auto* w = phys<uint64_t>(buf);
  for (uint64_t s = 0; s < len / kSector; ++s)
    for (uint64_t i = 0; i < kSector / 8; ++i) w[s * (kSector / 8) + i] = pattern(seed, sector + s, i);
}

void verify(const char* who, uint64_t seed, const Req& r) {
  const auto* w = phys<const uint64_t>(r.buf);
  for (uint64_t s = 0; s < r.len / kSector; ++s) {
    for (uint64_t i = 0; i < kSector / 8; ++i) {
      const uint64_t want = pattern(seed, r.sector + s, i), got = w[s * (kSector / 8) + i];
      if (want == got) continue;
      Line l;
      l.s(kPrefix).s(who).s(" mismatch sector=").u(r.sector + s).s(" offset=").u(i * 8).s(" expected=0x");
      hex64(l, want).s(" got=0x");
      hex64(l, got).print();
      exit(1);
    }
  }
}

// The pattern over the first `total` sectors, in requests of `chunk` bytes, one
// buffer per slot: written (fill) or read back and verified.
struct PatternRun {
  const char* who;
  uint64_t seed;
  uint64_t total;
  uint32_t chunk;
  uint64_t bufs;

  void pass(uint32_t type) const {
    const uint64_t chunk_sec = chunk / kSector;
    uint64_t next = 0;
    pump(
        [&](uint32_t slot, Req* r) {
          if (next >= total) return false;
          const uint64_t n = total - next < chunk_sec ? total - next : chunk_sec;
          r->type = type;
          r->sector = next;
          r->buf = bufs + uint64_t{slot} * chunk;
          r->len = static_cast<uint32_t>(n * kSector);
          if (type == blk::kTypeOut) fill(seed, r->sector, r->buf, r->len);
          next += n;
          return true;
        },
        [&](uint32_t, const Req& r, uint8_t st) {
          if (st != blk::kStatusOk) request_failed(r, st);
          if (type == blk::kTypeIn) verify(who, seed, r);
        });
  }
};

// Sizes the run (the whole disk, or its first MIB MiB when `limited`), checks the
// device can take it, allocates one buffer per slot and draws the seed.
PatternRun prepare_pattern(const char* who, bool limited, uint64_t mib) {
  const uint64_t bsec = g_dev.block_size() / kSector;  // sectors per logical block
  uint64_t total = g_dev.capacity();
  if (limited && mib * 2048 < total) total = mib * 2048;
  total -= total % bsec;
  uint32_t chunk = g_dev.max_request() & ~(g_dev.block_size() - 1);
  if (chunk == 0) {
    Line l = g_dev.error_line();
    l.s("device request limit ").u(g_dev.max_request()).s(" is below its block size ").u(g_dev.block_size());
    g_dev.die(l);
  }
  if (g_dev.read_only() && total > 0) {
    Line l = g_dev.error_line();
    l.s("device is read-only (VIRTIO_BLK_F_RO)");
    g_dev.die(l);
  }
  const uint32_t slots = g_dev.slots();
  const uint64_t bufs = platform::alloc_io(uint64_t{slots} * chunk, 4096);
  if (bufs == 0) {
    Line l = g_dev.error_line();
    l.s("no free RAM for ").u(slots).s(" buffers of ").u(chunk).s(" bytes");
    g_dev.die(l);
  }
  return PatternRun{who, mix(rdtsc() ^ 0x617a6f7465ull), total, chunk, bufs};
}

void print_seed(const PatternRun& p) {
  Line l;
  l.s(kPrefix).s(p.who).s(" seed=0x");
  hex64(l, p.seed).s(" sectors=").u(p.total).s(" request=").u(p.chunk).s(" slots=").u(g_dev.slots()).print();
}

[[noreturn]] void prog_blk_check_impl(const Args& a) {
  uint64_t mib = 0;
  const bool limited = a.argc > 0;
  if (limited && !parse_u64(a.argv[0], 1ull << 40, &mib)) usage_error("blk-check", "bad MiB count:", a.argv[0]);

  blk::Options o;
  o.who = "blk-check";
  o.slots = 16;
  o.max_request = 256 << 10;
  open_or_exit(o);

  const PatternRun run = prepare_pattern("blk-check", limited, mib);
  const uint64_t total = run.total;
  print_seed(run);

  const uint64_t t0 = rdtsc();
  run.pass(blk::kTypeOut);
  const uint64_t t1 = rdtsc();
  bool flushed = false;
  if (g_dev.can_flush()) {
    bool issued = false;
    pump(
        [&](uint32_t, Req* r) {
          if (issued) return false;
          issued = true;
          *r = Req{blk::kTypeFlush, 0, 0, 0};
          return true;
        },
        [](uint32_t, const Req& r, uint8_t st) {
          if (st != blk::kStatusOk) request_failed(r, st);
        });
    flushed = true;
  }
  const uint64_t t2 = rdtsc();
  run.pass(blk::kTypeIn);
  const uint64_t t3 = rdtsc();

  const uint64_t hz = tsc_hz();
  if (hz != 0) {
    Line t;
    t.s(kPrefix).s("blk-check write_ms=").u((t1 - t0) * 1000 / hz).s(" flush_ms=");
    if (flushed)
      t.u((t2 - t1) * 1000 / hz);
    else
      t.s("none");
    t.s(" read_verify_ms=").u((t3 - t2) * 1000 / hz).s(" notifies=").u(g_dev.notifies()).print();
  }
  Line().s(kPrefix).s("blk-check ok sectors=").u(total).print();
  exit(0);
}

// ------------------------------------------------------------------ blk-fua
// Write-through (VIRTIO_BLK_F_CONFIG_WCE): the driver writes 0 to the config field
// `writeback`, reads it back, then every write it makes is durable when it completes
// (FUA on every write), so none of this run's writes is followed by a FLUSH.
[[noreturn]] void prog_blk_fua_impl(const Args& a) {
  uint64_t mib = 4;
  if (a.argc > 0 && (!parse_u64(a.argv[0], 1ull << 40, &mib) || mib == 0))
    usage_error("blk-fua", "bad MiB count:", a.argv[0]);

  blk::Options o;
  o.who = "blk-fua";
  o.slots = 16;
  o.max_request = 256 << 10;
  open_or_exit(o);
  if (!g_dev.config_wce()) {
    Line l = g_dev.error_line();
    l.s("device does not offer VIRTIO_BLK_F_CONFIG_WCE (no write-through mode to choose)");
    g_dev.die(l);
  }
  const PatternRun run = prepare_pattern("blk-fua", true, mib);
  const uint8_t was = g_dev.writeback();
  const uint8_t now = g_dev.set_writeback(0);
  if (now != 0) {
    Line l = g_dev.error_line();
    l.s("device kept writeback=").u(now).s(" after the driver wrote 0 (write-through refused)");
    g_dev.die(l);
  }
  Line().s(kPrefix).s("blk write-through on").print();
  print_seed(run);

  const uint64_t t0 = rdtsc();
  run.pass(blk::kTypeOut);  // no FLUSH: each write was durable when it completed
  const uint64_t t1 = rdtsc();
  run.pass(blk::kTypeIn);
  const uint64_t t2 = rdtsc();
  const uint64_t hz = tsc_hz();
  if (hz != 0) {
    Line()
        .s(kPrefix)
        .s("blk-fua writeback_was=")
        .u(was)
        .s(" write_ms=")
        .u((t1 - t0) * 1000 / hz)
        .s(" read_verify_ms=")
        .u((t2 - t1) * 1000 / hz)
        .print();
  }
  Line().s(kPrefix).s("blk-fua ok sectors=").u(run.total).print();
  exit(0);
}

// ------------------------------------------------------------------ blk-hostile
// A driver that breaks its own device on purpose, then recovers the standard way: a
// read whose data buffer lies outside guest RAM makes the device stop that queue and
// report DEVICE_NEEDS_RESET (virtio 1.2 §2.1.2); the driver sees it in the Status
// register when the request does not complete, resets the device, sets it up again,
// and a write + read round trip works.
[[noreturn]] void prog_blk_hostile_impl(const Args& a) {
  if (a.argc > 0) usage_error("blk-hostile", "takes no arguments, got", a.argv[0]);
  blk::Options o;
  o.who = "blk-hostile";
  o.slots = 2;
  o.max_request = 4096;
  open_or_exit(o);
  if (g_dev.read_only() || g_dev.capacity() < 16) {
    Line l = g_dev.error_line();
    l.s("needs a writable device of at least 16 sectors");
    g_dev.die(l);
  }
  const uint64_t bufs = platform::alloc_io(2 * 4096, 4096);
  if (bufs == 0) {
    Line l = g_dev.error_line();
    l.s("no free RAM for two 4 KiB buffers");
    g_dev.die(l);
  }

  // (a) 0xd0000000 is in the MMIO hole below 4 GiB, never RAM (and no device window).
  constexpr uint64_t kOutsideRam = 0xd0000000;
  g_dev.submit(0, blk::kTypeIn, 0, kOutsideRam, 4096);
  g_dev.kick();
  Line().s(kPrefix).s("blk-hostile read into 0x").x(kOutsideRam).s(" (outside guest RAM) submitted").print();
  // (b) The driver prints "blk device needs reset" when it sees the bit.
  Completion c;
  if (g_dev.wait_or_needs_reset(&c)) {
    Line l = g_dev.error_line();
    l.s("the device completed a read into memory outside guest RAM (status ").u(c.status).s(")");
    g_dev.die(l);
  }
  // (c)
  g_dev.recover();
  Line().s(kPrefix).s("blk-hostile device reset and set up again").print();

  // (d) A pattern written to sectors 8-15, read back into the other buffer.
  const uint64_t seed = mix(rdtsc() ^ 0x686f7374ull);
  const Req w{blk::kTypeOut, 8, bufs, 4096}, r{blk::kTypeIn, 8, bufs + 4096, 4096};
  fill(seed, w.sector, w.buf, w.len);
  auto* rd = phys<uint64_t>(r.buf);
  for (uint64_t i = 0; i < 4096 / 8; ++i) rd[i] = 0;
  const Req* const round_trip[] = {&w, &r};
  for (const Req* q : round_trip) {
    g_dev.submit(0, q->type, q->sector, q->buf, q->len);
    g_dev.kick();
    const Completion done = g_dev.wait();
    if (done.status != blk::kStatusOk) request_failed(*q, done.status);
  }
  verify("blk-hostile", seed, r);
  Line().s(kPrefix).s("blk-hostile recovered").print();
  exit(0);
}

// ------------------------------------------------------------------ blk-bench
struct Rng {
  uint64_t s;
  uint64_t next() {  // xorshift64*
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 0x2545f4914f6cdd1dull;
  }
};

struct Test {
  const char* name;
  uint32_t type;
  bool random;
  uint32_t bs;
};

// Runs one test and prints its line; returns how many QueueNotify writes it took.
uint64_t run_test(const Test& t, uint64_t bufs, uint64_t seconds, uint64_t hz, Rng& rng) {
  const uint64_t notifies0 = g_dev.notifies();
  const uint64_t cap_bytes = g_dev.capacity() * kSector;
  const uint64_t nblocks = cap_bytes / t.bs;  // bs-aligned positions on the disk
  uint64_t seq = 0, ops = 0;
  const uint64_t t0 = rdtsc(), deadline = t0 + seconds * hz;
  uint64_t t_last = t0;
  pump(
      [&](uint32_t slot, Req* r) {
        if (rdtsc() >= deadline) return false;
        uint64_t pos;
        if (t.random) {
          pos = rng.next() % nblocks;
        } else {
          pos = seq;
          seq = seq + 1 == nblocks ? 0 : seq + 1;
        }
        *r = Req{t.type, pos * (t.bs / kSector), bufs + uint64_t{slot} * t.bs, t.bs};
        return true;
      },
      [&](uint32_t, const Req& r, uint8_t st) {
        if (st != blk::kStatusOk) request_failed(r, st);
        ++ops;
        t_last = rdtsc();
      });
  const double secs = static_cast<double>(t_last - t0) / static_cast<double>(hz);
  const double iops = secs > 0 ? static_cast<double>(ops) / secs : 0;
  Line l;
  l.s(kPrefix).s("blk-bench test=").s(t.name).s(" bs=").u(t.bs).s(" qd=").u(g_dev.slots()).s(" ops=").u(ops).s(
      " seconds=");
  fixed(l, secs, 3).s(" iops=");
  fixed(l, iops, 0).s(" mbps=");
  fixed(l, iops * t.bs / 1e6, 1).print();
  return g_dev.notifies() - notifies0;
}

[[noreturn]] void prog_blk_bench_impl(const Args& a) {
  uint64_t qd = 32, seconds = 2, queues = 1;
  if (a.argc > 0 && !parse_u64(a.argv[0], blk::kMaxSlots, &qd)) usage_error("blk-bench", "bad queue depth (want 1-1024):", a.argv[0]);
  if (a.argc > 1 && !parse_u64(a.argv[1], 3600, &seconds)) usage_error("blk-bench", "bad seconds (want 1-3600):", a.argv[1]);
  if (a.argc > 2 && !parse_u64(a.argv[2], blk::kMaxQueues, &queues)) usage_error("blk-bench", "bad queue count (want 1-8):", a.argv[2]);
  if (qd == 0) usage_error("blk-bench", "bad queue depth (want 1-1024):", a.argv[0]);
  if (seconds == 0) usage_error("blk-bench", "bad seconds (want 1-3600):", a.argv[1]);
  if (queues == 0) usage_error("blk-bench", "bad queue count (want 1-8):", a.argv[2]);
  const uint64_t hz = tsc_hz();
  if (hz == 0) {
    Line().s(kPrefix).s("blk-bench: no TSC frequency (CPUID and pvclock are silent)").print();
    exit(1);
  }

  blk::Options o;
  o.who = "blk-bench";
  o.slots = static_cast<uint32_t>(qd);
  o.max_request = 1 << 20;
  o.queues = static_cast<uint16_t>(queues);
  open_or_exit(o);
  if (g_dev.slots() < qd)
    Line().s(kPrefix).s("blk-bench: queue depth ").u(qd).s(" does not fit the queue, using ").u(g_dev.slots()).print();
  if (g_dev.read_only()) {
    Line l = g_dev.error_line();
    l.s("device is read-only (VIRTIO_BLK_F_RO)");
    g_dev.die(l);
  }

  uint32_t small = 4096, large = g_dev.max_request() & ~4095u;
  if (g_dev.block_size() > small) small = g_dev.block_size();
  if (large < small) large = small;
  if (g_dev.capacity() * kSector < large) {
    Line l = g_dev.error_line();
    l.s("disk of ").u(g_dev.capacity()).s(" sectors is smaller than one ").u(large).s("-byte request");
    g_dev.die(l);
  }
  const uint64_t bytes = uint64_t{g_dev.slots()} * large;
  const uint64_t bufs = platform::alloc_io(bytes, 4096);
  if (bufs == 0) {
    Line().s(kPrefix).s("blk-bench: no free RAM for ").u(g_dev.slots()).s(" buffers of ").u(large).s(" bytes").print();
    exit(1);
  }
  // Touch every buffer page now, so no first-touch fault lands in a measurement.
  auto* b = phys<uint8_t>(bufs);
  for (uint64_t i = 0; i < bytes; ++i) b[i] = static_cast<uint8_t>(i * 7 + 1);

  Rng rng{mix(rdtsc()) | 1};
  const Test tests[] = {
      {"randread", blk::kTypeIn, true, small},
      {"randwrite", blk::kTypeOut, true, small},
      {"seqread", blk::kTypeIn, false, large},
      {"seqwrite", blk::kTypeOut, false, large},
  };
  uint64_t notifies[4];
  for (size_t i = 0; i < 4; ++i) notifies[i] = run_test(tests[i], bufs, seconds, hz, rng);
  // How many requests each MMIO notify carried (the device suppresses notifies
  // with VIRTQ_USED_F_NO_NOTIFY while it is busy).
  Line l;
  l.s(kPrefix).s("blk-bench notifies");
  for (size_t i = 0; i < 4; ++i) l.c(' ').s(tests[i].name).c('=').u(notifies[i]);
  l.print();
  exit(0);
}

}  // namespace

[[noreturn]] void prog_blk_check(const Args& args) { prog_blk_check_impl(args); }
[[noreturn]] void prog_blk_fua(const Args& args) { prog_blk_fua_impl(args); }
[[noreturn]] void prog_blk_bench(const Args& args) { prog_blk_bench_impl(args); }
[[noreturn]] void prog_blk_hostile(const Args& args) { prog_blk_hostile_impl(args); }

}  // namespace az
