// The vsock programs, over the user-mode virtio-vsock driver and its stream sockets
// (vsock.hpp): `vsock-cid`, `vsock-echo PORT [COUNT]`, `vsock-send CID PORT TEXT
// [REPEAT]`, `vsock-bench CID PORT SECONDS [SIZE]`, and both sides of nitro-cli's boot
// heartbeat (ENCLAVES.md §5): `vsock-heartbeat` (the enclave) and
// `vsock-heartbeat-server [COUNT]` (the parent). Exit 0 ok, 1 error (the line names
// it), 2 without a device, 126 on bad arguments.
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

constexpr uint32_t kHeartbeatPort = 9000;
constexpr uint8_t kHeartbeatByte = 0xb7;
constexpr uint64_t kConnectS = 10;  // RESPONSE or RST within this
constexpr uint64_t kIoS = 10;       // no progress for this long: timeout
constexpr uint64_t kLingerS = 2;    // a close waits this long for the peer's RST
constexpr uint64_t kEchoIdleS = 60;
constexpr uint32_t kChunk = 4096;

constinit vsock::Device g_dev;
const char* g_prog = "vsock";
constinit uint8_t g_buf[vsock::kBufAlloc];               // receive side of the clients
constinit uint8_t g_out[vsock::kBufAlloc + kChunk];      // send side of the clients
constinit uint8_t g_pending[vsock::kMaxConns][kChunk];   // vsock-echo: read, not echoed yet

[[noreturn]] void device_error() { vsock::exit_with_error(g_dev, g_prog); }

void open_or_exit(const char* prog) {
  g_prog = prog;
  vsock::open_or_exit(g_dev, prog);
}

// What a failed socket call means, for an error line.
const char* what(int64_t c, int64_t err) { return err == kErrReset ? g_dev.why(c) : vsock::err_text(err); }

// "PROG error: TEXT" (the device's own failure for kErrDevice), exit 1.
[[noreturn]] void die(int64_t c, int64_t err, const char* context = nullptr) {
  if (err == kErrDevice) device_error();
  Line l;
  l.s(kPrefix).s(g_prog).s(" error: ");
  if (context != nullptr) l.s(context).s(": ");
  l.s(what(c, err)).print();
  exit(1);
}

uint64_t us(uint64_t ticks) { return g_dev.tsc_hz() == 0 ? 0 : ticks * 1000000 / g_dev.tsc_hz(); }

uint64_t cid_arg(const char* prog, Str arg) {
  uint64_t v = 0;
  if (!parse_u64(arg, 0xfffffffeull, &v)) usage_error(prog, "bad CID (want 0-4294967294):", arg);
  return v;
}
uint32_t port_arg(const char* prog, Str arg) {
  uint64_t v = 0;
  if (!parse_u64(arg, 0xfffffffeull, &v)) usage_error(prog, "bad PORT (want 0-4294967294):", arg);
  return static_cast<uint32_t>(v);
}
uint64_t count_arg(const char* prog, Str arg, uint64_t max, const char* bad) {
  uint64_t v = 0;
  if (!parse_u64(arg, max, &v) || v == 0) usage_error(prog, bad, arg);
  return v;
}

// Connects or ends the program ("PROG error: connect to CID:PORT: WHY").
int64_t connect_or_die(uint64_t cid, uint32_t port) {
  const int64_t c = g_dev.connect(cid, port, g_dev.ticks(kConnectS));
  if (c >= 0) return c;
  if (c == kErrDevice) device_error();
  Line l;
  l.s(kPrefix).s(g_prog).s(" error: connect to ").u(cid).c(':').u(port).s(": ");
  if (c == kErrTimeout)
    l.s("timeout (no RESPONSE in ").u(kConnectS).s(" s)");
  else
    l.s(vsock::err_text(c));
  l.print();
  exit(1);
}

// Graceful close, then every packet out before the VM ends.
void close_and_drain(int64_t c) {
  g_dev.close(c, g_dev.ticks(kLingerS));
  g_dev.drain(g_dev.ticks(kLingerS + 1));
}

void no_arguments(const char* prog, const Args& a) {
  if (a.argc > 0) usage_error(prog, "takes no arguments, got", a.argv[0]);
}

// ------------------------------------------------------------------ vsock-cid
[[noreturn]] void prog_cid(const Args& a) {
  no_arguments("vsock-cid", a);
  open_or_exit("vsock-cid");
  Line().s(kPrefix).s("vsock cid=").u(g_dev.cid()).print();
  exit(0);
}

// ----------------------------------------------------------------- vsock-echo
// Every connection is served at once (up to the driver's table): what comes in is
// echoed back as the peer's credit allows; a connection ends at the peer's shutdown
// (one line each).
[[noreturn]] void prog_echo(const Args& a) {
  constexpr const char* kProg = "vsock-echo";
  if (a.argc < 1) usage_error(kProg, "missing PORT (want PORT [COUNT])", Str{});
  if (a.argc > 2) usage_error(kProg, "too many arguments (want PORT [COUNT]), got", a.argv[2]);
  const uint32_t port = port_arg(kProg, a.argv[0]);
  const uint64_t count = a.argc > 1 ? count_arg(kProg, a.argv[1], 1000000000ull, "bad COUNT (want 1-1000000000):") : 0;
  open_or_exit(kProg);
  if (g_dev.listen(port) < 0) die(-1, vsock::kErrInUse);
  Line().s(kPrefix).s("vsock-echo ready cid=").u(g_dev.cid()).s(" port=").u(port).print();

  struct Active {
    bool on;
    uint32_t off, len;  // g_pending[c][off, len): read, not echoed yet
    uint64_t bytes;
    uint64_t last;
  };
  Active act[vsock::kMaxConns] = {};
  const uint64_t idle = g_dev.ticks(kEchoIdleS);
  uint64_t done = 0;
  auto finish = [&](int64_t c, int64_t err) {
    Line l;
    l.s(kPrefix).s("vsock-echo peer=").u(g_dev.peer_cid(c)).c(':').u(g_dev.peer_port(c)).s(" bytes=").u(act[c].bytes);
    if (err == kEof) {
      g_dev.close(c, g_dev.ticks(kLingerS));
    } else {
      l.s(" error: ").s(err == kErrTimeout ? "idle timeout (60 s), reset" : what(c, err));
      g_dev.abort(c);
    }
    l.print();
    act[c].on = false;
    ++done;
  };
  for (;;) {
    if (!g_dev.poll()) device_error();
    for (;;) {
      const int64_t c = g_dev.accept(0);
      if (c == kErrTimeout) break;
      if (c < 0) die(-1, c);
      act[c] = Active{true, 0, 0, 0, rdtsc()};
    }
    const uint64_t now = rdtsc();
    for (int64_t c = 0; c < static_cast<int64_t>(vsock::kMaxConns); ++c) {
      Active& s = act[c];
      if (!s.on) continue;
      if (s.off < s.len) {
        const int64_t r = g_dev.send(c, g_pending[c] + s.off, s.len - s.off);
        if (r < 0) {
          finish(c, r);
          continue;
        }
        if (r > 0) {
          s.off += static_cast<uint32_t>(r);
          s.bytes += static_cast<uint64_t>(r);
          s.last = now;
        }
      } else {
        const int64_t r = g_dev.recv(c, g_pending[c], kChunk);
        if (r < 0) {
          finish(c, r);
          continue;
        }
        if (r > 0) {
          s.off = 0;
          s.len = static_cast<uint32_t>(r);
          s.last = now;
        }
      }
      if (s.on && now - s.last > idle) finish(c, kErrTimeout);
    }
    if (count != 0 && done >= count) {
      g_dev.drain(g_dev.ticks(kLingerS + 1));
      exit(0);
    }
  }
}

// ----------------------------------------------------------------- vsock-send
// "vsock-send error: WHY after N of M bytes" (N: echoed bytes received), exit 1.
[[noreturn]] void stream_error(int64_t c, int64_t err, uint64_t got, uint64_t total) {
  if (err == kErrDevice) device_error();
  Line l;
  l.s(kPrefix).s(g_prog).s(" error: ").s(what(c, err));
  l.s(" after ").u(got).s(" of ").u(total).s(" bytes").print();
  exit(1);
}

// TEXT repeated REPEAT times is streamed while the echo is read back and compared, so
// any amount fits through the two 64 KiB windows.
[[noreturn]] void prog_send(const Args& a) {
  constexpr const char* kProg = "vsock-send";
  if (a.argc < 3) usage_error(kProg, "missing arguments (want CID PORT TEXT [REPEAT])", Str{});
  if (a.argc > 4) usage_error(kProg, "too many arguments (want CID PORT TEXT [REPEAT]), got", a.argv[4]);
  const uint64_t cid = cid_arg(kProg, a.argv[0]);
  const uint32_t port = port_arg(kProg, a.argv[1]);
  const Str text = a.argv[2];
  if (text.n == 0 || text.n > kChunk) usage_error(kProg, "TEXT must be 1-4096 bytes", Str{});
  const uint64_t repeat = a.argc > 3 ? count_arg(kProg, a.argv[3], 1000000, "bad REPEAT (want 1-1000000):") : 1;
  const uint64_t total = text.n * repeat;
  // g_out[i] = text[i % n]: any stream offset o starts a contiguous run at o % n.
  for (size_t i = 0; i < sizeof g_out; ++i) g_out[i] = static_cast<uint8_t>(text.p[i % text.n]);

  open_or_exit(kProg);
  const int64_t c = connect_or_die(cid, port);
  const uint64_t t0 = rdtsc(), limit = g_dev.ticks(kIoS);
  uint64_t sent = 0, got = 0, last = t0;
  while (got < total) {
    bool progress = false;
    if (sent < total) {
      const uint64_t left = total - sent;
      const int64_t r = g_dev.send(c, g_out + sent % text.n, left < kChunk ? left : kChunk);
      if (r < 0) stream_error(c, r, got, total);
      sent += static_cast<uint64_t>(r);
      progress = r > 0;
    }
    const uint64_t want = total - got;
    const int64_t r = g_dev.recv(c, g_buf, want < sizeof g_buf ? want : sizeof g_buf);
    if (r < 0) stream_error(c, r, got, total);
    for (int64_t i = 0; i < r; ++i) {
      const uint8_t want_byte = static_cast<uint8_t>(text.p[(got + static_cast<uint64_t>(i)) % text.n]);
      if (g_buf[i] != want_byte) {
        Line()
            .s(kPrefix)
            .s(kProg)
            .s(" error: mismatch at byte ")
            .u(got + static_cast<uint64_t>(i))
            .s(": expected 0x")
            .hex2(want_byte)
            .s(" got 0x")
            .hex2(g_buf[i])
            .print();
        exit(1);
      }
    }
    got += static_cast<uint64_t>(r);
    const uint64_t now = rdtsc();
    if (progress || r > 0) {
      last = now;
      continue;
    }
    if (!g_dev.poll()) device_error();
    if (now - last > limit) {
      Line().s(kPrefix).s(kProg).s(" error: timeout: no progress for ").u(kIoS).s(" s (sent=").u(sent).s(" received=")
          .u(got).s(" of ").u(total).s(")").print();
      exit(1);
    }
  }
  const uint64_t rtt = rdtsc() - t0;
  close_and_drain(c);
  Line().s(kPrefix).s("vsock-send echoed bytes=").u(total).s(" rtt_us=").u(us(rtt)).print();
  exit(0);
}

// ---------------------------------------------------------------- vsock-bench
uint8_t pattern(uint64_t o) { return static_cast<uint8_t>((o * 131) ^ (o >> 11)); }

// Sends stream bytes [sent, sent + n) of the pattern (without waiting); returns the count.
int64_t bench_send(int64_t c, uint64_t sent, uint64_t n) {
  if (n > kChunk) n = kChunk;
  for (uint64_t i = 0; i < n; ++i) g_out[i] = pattern(sent + i);
  return g_dev.send(c, g_out, n);
}

// Reads what is there into g_buf and checks it against the pattern at `got`; the count.
int64_t bench_recv(int64_t c, uint64_t got, uint64_t max) {
  if (max > sizeof g_buf) max = sizeof g_buf;
  const int64_t r = g_dev.recv(c, g_buf, max);
  if (r < 0) die(c, r, "echo");
  for (int64_t i = 0; i < r; ++i) {
    if (g_buf[i] != pattern(got + static_cast<uint64_t>(i))) {
      Line().s(kPrefix).s(g_prog).s(" error: mismatch at byte ").u(got + static_cast<uint64_t>(i)).print();
      exit(1);
    }
  }
  return r;
}

constinit uint64_t g_rtt[1000];

[[noreturn]] void prog_bench(const Args& a) {
  constexpr const char* kProg = "vsock-bench";
  if (a.argc < 3) usage_error(kProg, "missing arguments (want CID PORT SECONDS [SIZE])", Str{});
  if (a.argc > 4) usage_error(kProg, "too many arguments (want CID PORT SECONDS [SIZE]), got", a.argv[4]);
  const uint64_t cid = cid_arg(kProg, a.argv[0]);
  const uint32_t port = port_arg(kProg, a.argv[1]);
  const uint64_t seconds = count_arg(kProg, a.argv[2], 3600, "bad SECONDS (want 1-3600):");
  const uint64_t size =
      a.argc > 3 ? count_arg(kProg, a.argv[3], vsock::kBufAlloc, "bad SIZE (want 1-65536):") : kChunk;
  open_or_exit(kProg);
  const int64_t c = connect_or_die(cid, port);
  const uint64_t limit = g_dev.ticks(kIoS);
  uint64_t sent = 0, got = 0;

  // 1. Round trips: one SIZE-byte write outstanding at a time, for up to 1000 of them
  // or a quarter of SECONDS.
  uint32_t trips = 0;
  const uint64_t lat_end = rdtsc() + g_dev.ticks(seconds) / 4;
  while (trips < 1000 && (trips == 0 || rdtsc() < lat_end)) {
    const uint64_t t0 = rdtsc();
    const uint64_t target = sent + size;
    uint64_t last = t0;
    while (got < target) {
      int64_t progress = 0;
      if (sent < target) {
        const int64_t r = bench_send(c, sent, target - sent);
        if (r < 0) die(c, r, "round trip");
        sent += static_cast<uint64_t>(r);
        progress += r;
      }
      const int64_t r = bench_recv(c, got, target - got);
      got += static_cast<uint64_t>(r);
      progress += r;
      const uint64_t now = rdtsc();
      if (progress > 0) {
        last = now;
      } else {
        if (!g_dev.poll()) device_error();
        if (now - last > limit) die(c, kErrTimeout, "round trip");
      }
    }
    g_rtt[trips++] = rdtsc() - t0;
  }

  // 2. Throughput: stream for SECONDS while reading the echo back, then collect the rest.
  const uint64_t base = got;
  const uint64_t start = rdtsc(), stop = start + g_dev.ticks(seconds);
  uint64_t last = start, end = start;
  for (;;) {
    const uint64_t now = rdtsc();
    const bool sending = now < stop;
    if (!sending && got == sent) break;
    int64_t progress = 0;
    if (sending) {
      const int64_t r = bench_send(c, sent, size);
      if (r < 0) die(c, r, "stream");
      sent += static_cast<uint64_t>(r);
      progress += r;
    }
    const int64_t r = bench_recv(c, got, sent - got);
    if (r > 0) {
      got += static_cast<uint64_t>(r);
      end = rdtsc();
    }
    progress += r;
    if (progress > 0) {
      last = now;
    } else {
      if (!g_dev.poll()) device_error();
      if (now - last > limit) die(c, kErrTimeout, "stream");
    }
  }
  close_and_drain(c);

  // Insertion sort of the round trips (at most 1000).
  for (uint32_t i = 1; i < trips; ++i)
    for (uint32_t j = i; j > 0 && g_rtt[j - 1] > g_rtt[j]; --j) {
      const uint64_t t = g_rtt[j];
      g_rtt[j] = g_rtt[j - 1];
      g_rtt[j - 1] = t;
    }
  const uint64_t bytes = got - base;
  const uint64_t elapsed_us = us(end - start) == 0 ? 1 : us(end - start);
  const uint64_t mbps10 = bytes * 80 / elapsed_us;  // megabits per second, x10
  Line()
      .s(kPrefix)
      .s("vsock-bench bytes=")
      .u(bytes)
      .s(" mbps=")
      .u(mbps10 / 10)
      .c('.')
      .u(mbps10 % 10)
      .s(" rtt_us_p50=")
      .u(us(g_rtt[trips / 2]))
      .s(" rtt_us_p99=")
      .u(us(g_rtt[trips * 99 / 100]))
      .s(" rtt_us_min=")
      .u(us(g_rtt[0]))
      .s(" round_trips=")
      .u(trips)
      .s(" size=")
      .u(size)
      .s(" seconds=")
      .u(seconds)
      .s(" dropped=")
      .u(g_dev.rx_dropped())
      .print();
  exit(0);
}

// ------------------------------------------------------------ vsock-heartbeat
[[noreturn]] void prog_heartbeat(const Args& a) {
  constexpr const char* kProg = "vsock-heartbeat";
  no_arguments(kProg, a);
  open_or_exit(kProg);
  const int64_t c = connect_or_die(vsock::kCidParent, kHeartbeatPort);
  const uint64_t t0 = rdtsc();
  const uint8_t beat = kHeartbeatByte;
  int64_t r = g_dev.send_all(c, &beat, 1, g_dev.ticks(kIoS));
  if (r < 0) die(c, r, "send");
  uint8_t back = 0;
  r = g_dev.recv_wait(c, &back, 1, g_dev.ticks(kIoS));
  if (r < 0) die(c, r, "no answer from the parent");
  const uint64_t rtt = rdtsc() - t0;
  if (back != kHeartbeatByte) {
    g_dev.abort(c);
    g_dev.drain(g_dev.ticks(1));
    Line().s(kPrefix).s(kProg).s(" error: the parent answered 0x").hex2(back).s(" (want 0xb7)").print();
    exit(1);
  }
  close_and_drain(c);
  Line().s(kPrefix).s("vsock-heartbeat ok cid=").u(g_dev.cid()).s(" rtt_us=").u(us(rtt)).print();
  exit(0);
}

// One connection at a time (others wait in the driver's table, already answered).
[[noreturn]] void prog_heartbeat_server(const Args& a) {
  constexpr const char* kProg = "vsock-heartbeat-server";
  if (a.argc > 1) usage_error(kProg, "too many arguments (want [COUNT]), got", a.argv[1]);
  const uint64_t count = a.argc > 0 ? count_arg(kProg, a.argv[0], 1000000000ull, "bad COUNT (want 1-1000000000):") : 0;
  open_or_exit(kProg);
  if (g_dev.listen(kHeartbeatPort) < 0) die(-1, vsock::kErrInUse);
  Line().s(kPrefix).s("vsock-heartbeat-server ready cid=").u(g_dev.cid()).s(" port=").u(kHeartbeatPort).print();
  uint64_t done = 0, bad = 0;
  while (count == 0 || done < count) {
    const int64_t c = g_dev.accept(kForever);
    if (c < 0) die(-1, c);
    ++done;
    uint8_t beat = 0;
    int64_t r = g_dev.recv_wait(c, &beat, 1, g_dev.ticks(kIoS));
    if (r == 1 && beat == kHeartbeatByte) r = g_dev.send_all(c, &beat, 1, g_dev.ticks(kIoS));
    if (r == kErrDevice) device_error();
    Line l;
    l.s(kPrefix);
    if (r == 1 && beat == kHeartbeatByte) {
      l.s("vsock-heartbeat from cid=").u(g_dev.peer_cid(c));
      g_dev.close(c, g_dev.ticks(kLingerS));
    } else {
      ++bad;
      l.s(kProg).s(" error: from cid=").u(g_dev.peer_cid(c)).s(": ");
      if (r == 1)
        l.s("got 0x").hex2(beat).s(" (want 0xb7)");
      else
        l.s(r == kEof ? "the peer closed the connection" : r == kErrTimeout ? "no byte in 10 s" : what(c, r));
      g_dev.abort(c);
    }
    l.print();
  }
  g_dev.drain(g_dev.ticks(kLingerS + 1));
  exit(bad == 0 ? 0 : 1);
}

}  // namespace

[[noreturn]] void prog_vsock_cid(const Args& args) { prog_cid(args); }
[[noreturn]] void prog_vsock_echo(const Args& args) { prog_echo(args); }
[[noreturn]] void prog_vsock_send(const Args& args) { prog_send(args); }
[[noreturn]] void prog_vsock_bench(const Args& args) { prog_bench(args); }
[[noreturn]] void prog_vsock_heartbeat(const Args& args) { prog_heartbeat(args); }
[[noreturn]] void prog_vsock_heartbeat_server(const Args& args) { prog_heartbeat_server(args); }

}  // namespace az
