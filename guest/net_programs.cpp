// The network programs: `net-dhcp` (lease and exit), `net-ping ADDR [COUNT]`,
// `net-echo [PORT]` (UDP echo server, forever) and `net-bench ADDR [PORT] [SECONDS]
// [SIZE]` (UDP to an echo server, rates both ways). All drive the user-mode
// virtio-net driver (net.hpp) and the inet stack (inet.hpp), take an address with
// DHCP first, and answer ARP and ICMP echo requests while they wait.
#include "dhcp.hpp"
#include "inet.hpp"
#include "net.hpp"
#include "platform.hpp"
#include "programs.hpp"
#include "rt.hpp"

namespace az {
namespace {

using inet::Ip4;

constexpr uint64_t kDhcpTimeoutS = 30;
constexpr uint64_t kArpTimeoutMs = 3000;

constinit vnet::Device g_dev;
constinit inet::Stack g_stack;

// v with `decimals` digits after the point (v >= 0).
Line& fixed(Line& l, double v, unsigned decimals) {
  uint64_t scale = 1;
  for (unsigned i = 0; i < decimals; ++i) scale *= 10;
  const uint64_t x = static_cast<uint64_t>(v * static_cast<double>(scale) + 0.5);
  l.u(x / scale);
  if (decimals == 0) return l;
  l.c('.');
  uint64_t frac = x % scale, div = scale / 10;
  for (unsigned i = 0; i < decimals; ++i, div /= 10) l.c(static_cast<char>('0' + (frac / div) % 10));
  return l;
}

Line& name_or_dash(Line& l, const char* s) { return s[0] != 0 ? l.s(s) : l.c('-'); }

// Opens the device, runs DHCP and prints the lease line:
//   azote-guest: WHO ip=A/PREFIX router=R dns=D[,D...] mtu=M hostname=H lease=S
// preceded by `azote-guest: WHO dhcp server=S domain=D`. 0, or 2 without a device
// (after a line saying so), 1 when no lease comes within 30 s (ditto).
int try_bring_up(const char* who, dhcp::Lease* out) {
  vnet::Options o;
  o.who = who;
  if (g_dev.open(o) == vnet::Device::Open::kNoDevice) {
    Line().s(kPrefix).s(who).s(": no virtio-net device").print();
    return 2;
  }
  g_stack.init(&g_dev);
  dhcp::Lease lease;
  const char* why = nullptr;
  if (!dhcp::acquire(g_stack, kDhcpTimeoutS, &lease, &why)) {
    Line().s(kPrefix).s(who).s(" timeout: no DHCP lease after ").u(kDhcpTimeoutS).s(" s (").s(why).s(")").print();
    return 1;
  }
  Line l1;
  l1.s(kPrefix).s(who).s(" dhcp server=");
  inet::put_ip(l1, lease.server).s(" domain=");
  name_or_dash(l1, lease.domain).print();

  Line l;
  l.s(kPrefix).s(who).s(" ip=");
  inet::put_ip(l, lease.ip).c('/').u(static_cast<uint64_t>(inet::mask_prefix(lease.mask))).s(" router=");
  if (lease.router != 0) inet::put_ip(l, lease.router);
  else l.c('-');
  l.s(" dns=");
  if (lease.ndns == 0) l.c('-');
  for (size_t i = 0; i < lease.ndns; ++i) {
    if (i > 0) l.c(',');
    inet::put_ip(l, lease.dns[i]);
  }
  l.s(" mtu=").u(g_stack.mtu()).s(" hostname=");
  name_or_dash(l, lease.hostname).s(" lease=").u(lease.lease).print();
  *out = lease;
  return 0;
}

// The same for the programs: exit 2 without a device, 1 without a lease.
dhcp::Lease bring_up(const char* who) {
  dhcp::Lease lease;
  if (const int st = try_bring_up(who, &lease); st != 0) exit(st);
  return lease;
}

[[noreturn]] void no_arp(const char* who, Ip4 addr) {
  Line l;
  l.s(kPrefix).s(who).s(" error: no ARP answer for the next hop of ");
  inet::put_ip(l, addr).s(" within 3 s").print();
  exit(1);
}

// ------------------------------------------------------------------ net-dhcp
[[noreturn]] void prog_net_dhcp_impl(const Args&) {
  bring_up("net-dhcp");
  exit(0);
}

// ------------------------------------------------------------------ net-ping
constexpr uint32_t kPingRing = 1024;

struct Ping {
  Ip4 addr;
  uint16_t id;
  uint32_t sent;
  uint64_t sent_tsc[kPingRing];  // by seq % kPingRing (the last kPingRing requests)
  bool got[kPingRing];
  uint32_t received;
  uint64_t hz;
  uint64_t rtt_min, rtt_max, rtt_sum;  // microseconds
  bool last_answered;
};
constinit Ping g_ping{};

constexpr size_t kPingPayload = 56;

void on_echo(void* ctx, Ip4 src, uint16_t id, uint16_t seq, const uint8_t*, size_t len) {
  auto* p = static_cast<Ping*>(ctx);
  if (src != p->addr || id != p->id || seq == 0 || seq > p->sent || seq + kPingRing <= p->sent ||
      p->got[seq % kPingRing])
    return;
  p->got[seq % kPingRing] = true;
  ++p->received;
  const uint64_t us = (rdtsc() - p->sent_tsc[seq % kPingRing]) * 1000000 / p->hz;
  if (p->received == 1 || us < p->rtt_min) p->rtt_min = us;
  if (us > p->rtt_max) p->rtt_max = us;
  p->rtt_sum += us;
  if (seq == p->sent) p->last_answered = true;
  Line l;
  l.s(kPrefix).s("net-ping reply from ");
  inet::put_ip(l, src).s(" seq=").u(seq).s(" bytes=").u(len + 8).s(" rtt_us=").u(us).print();
}

[[noreturn]] void prog_net_ping_impl(const Args& a) {
  Ip4 addr = 0;
  uint64_t count = 4;
  if (a.argc < 1) usage_error("net-ping", "missing address (want a.b.c.d)", Str{});
  if (!inet::parse_ip(a.argv[0], &addr)) usage_error("net-ping", "bad address (want a.b.c.d):", a.argv[0]);
  if (a.argc > 1 && (!parse_u64(a.argv[1], 65535, &count) || count == 0))
    usage_error("net-ping", "bad count (want 1-65535):", a.argv[1]);
  bring_up("net-ping");
  Ping& p = g_ping;
  p.addr = addr;
  p.hz = g_stack.tsc_hz();
  p.id = static_cast<uint16_t>(rdtsc() >> 4);
  g_stack.set_echo_handler(on_echo, &p);
  if (!g_stack.resolve(addr, kArpTimeoutMs)) no_arp("net-ping", addr);

  // One request per second; after the last one, up to 1 s for its reply.
  for (uint32_t seq = 1; seq <= count; ++seq) {
    const uint32_t slot = seq % kPingRing;
    p.sent_tsc[slot] = rdtsc();
    p.got[slot] = false;
    p.sent = seq;
    p.last_answered = false;
    if (!g_stack.send_echo_request(addr, p.id, static_cast<uint16_t>(seq), kPingPayload)) {
      Line l;
      l.s(kPrefix).s("net-ping error: cannot send to ");
      inet::put_ip(l, addr).print();
      exit(1);
    }
    g_stack.flush();
    const uint64_t until = p.sent_tsc[slot] + p.hz;
    while (rdtsc() < until && !(seq == count && p.last_answered)) g_stack.poll();
    if (!p.got[slot]) Line().s(kPrefix).s("net-ping no reply seq=").u(seq).print();
  }
  Line l;
  l.s(kPrefix).s("net-ping ");
  inet::put_ip(l, addr).s(" sent=").u(p.sent).s(" received=").u(p.received).s(" rtt_us_min/avg/max=");
  if (p.received > 0) l.u(p.rtt_min).c('/').u(p.rtt_sum / p.received).c('/').u(p.rtt_max);
  else l.s("-/-/-");
  l.print();
  exit(p.received > 0 ? 0 : 1);
}

// ------------------------------------------------------------------ net-echo
struct Echo {
  uint16_t port;
  uint64_t datagrams;
};
constinit Echo g_echo{};

void on_echo_udp(void* ctx, const inet::Udp& u) {
  auto* e = static_cast<Echo*>(ctx);
  if (u.dport != e->port || u.dst != g_stack.ip()) return;  // no echo to broadcasts
  ++e->datagrams;
  g_stack.send_udp(u.src, e->port, u.sport, u.data, u.len);
}

[[noreturn]] void prog_net_echo_impl(const Args& a) {
  uint64_t port = 7;
  if (a.argc > 0 && (!parse_u64(a.argv[0], 65535, &port) || port == 0))
    usage_error("net-echo", "bad port (want 1-65535):", a.argv[0]);
  bring_up("net-echo");
  g_echo.port = static_cast<uint16_t>(port);
  g_stack.set_udp_handler(on_echo_udp, &g_echo);
  Line l;
  l.s(kPrefix).s("net-echo ready ip=");
  inet::put_ip(l, g_stack.ip()).s(" port=").u(port).print();
  for (;;) g_stack.poll();
}

// ------------------------------------------------------------------ net-bench
constexpr uint8_t kBenchMagic[8] = {'a', 'z', 'b', 'e', 'n', 'c', 'h', '1'};
constexpr size_t kBenchMin = 24;  // magic, run id, sequence number
constexpr uint64_t kBenchWindow = 128;

struct Bench {
  Ip4 addr;
  uint16_t port, sport;
  uint64_t run;
  size_t size;
  uint64_t sent, received, outstanding;
  uint64_t last_rx_tsc;
};
constinit Bench g_bench{};

uint64_t load64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
void store64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i, v >>= 8) p[i] = static_cast<uint8_t>(v);
}

void on_bench_udp(void* ctx, const inet::Udp& u) {
  auto* b = static_cast<Bench*>(ctx);
  if (u.src != b->addr || u.sport != b->port || u.dport != b->sport || u.len != b->size) return;
  for (size_t i = 0; i < 8; ++i)
    if (u.data[i] != kBenchMagic[i]) return;
  if (load64(u.data + 8) != b->run || load64(u.data + 16) >= b->sent) return;
  ++b->received;
  if (b->outstanding > 0) --b->outstanding;
  b->last_rx_tsc = rdtsc();
}

[[noreturn]] void prog_net_bench_impl(const Args& a) {
  Ip4 addr = 0;
  uint64_t port = 7, seconds = 5, size = inet::kMaxUdpPayload;
  if (a.argc < 1) usage_error("net-bench", "missing address (want a.b.c.d)", Str{});
  if (!inet::parse_ip(a.argv[0], &addr)) usage_error("net-bench", "bad address (want a.b.c.d):", a.argv[0]);
  if (a.argc > 1 && (!parse_u64(a.argv[1], 65535, &port) || port == 0))
    usage_error("net-bench", "bad port (want 1-65535):", a.argv[1]);
  if (a.argc > 2 && (!parse_u64(a.argv[2], 3600, &seconds) || seconds == 0))
    usage_error("net-bench", "bad seconds (want 1-3600):", a.argv[2]);
  if (a.argc > 3 && (!parse_u64(a.argv[3], inet::kMaxUdpPayload, &size) || size < kBenchMin))
    usage_error("net-bench", "bad size (want 24-1472):", a.argv[3]);
  bring_up("net-bench");
  if (size + inet::kIpHdr + inet::kUdpHdr > g_stack.mtu()) size = g_stack.mtu() - inet::kIpHdr - inet::kUdpHdr;
  if (size < kBenchMin) size = kBenchMin;
  Bench& b = g_bench;
  b.addr = addr;
  b.port = static_cast<uint16_t>(port);
  b.sport = static_cast<uint16_t>(49152 + (rdtsc() >> 4) % 16384);
  b.run = rdtsc();
  b.size = size;
  g_stack.set_udp_handler(on_bench_udp, &b);
  if (!g_stack.resolve(addr, kArpTimeoutMs)) no_arp("net-bench", addr);

  static uint8_t payload[inet::kMaxUdpPayload];
  for (size_t i = 0; i < size; ++i) payload[i] = static_cast<uint8_t>(i * 7);
  for (size_t i = 0; i < 8; ++i) payload[i] = kBenchMagic[i];
  store64(payload + 8, b.run);

  // Keep at most kBenchWindow datagrams unanswered; when the window is full and
  // nothing came back for 20 ms, the missing ones are taken as lost.
  const uint64_t hz = g_stack.tsc_hz(), t0 = rdtsc(), t_end = t0 + seconds * hz, stall = hz / 50;
  b.last_rx_tsc = t0;
  uint64_t now = t0;
  while ((now = rdtsc()) < t_end) {
    g_stack.poll();
    if (b.outstanding >= kBenchWindow) {
      if (now - b.last_rx_tsc > stall) {
        b.outstanding = 0;
        b.last_rx_tsc = now;
      }
      continue;
    }
    uint32_t burst = 0;
    while (b.outstanding < kBenchWindow && burst < 32) {
      store64(payload + 16, b.sent);
      if (!g_stack.send_udp(addr, b.sport, b.port, payload, size)) {
        Line l;
        l.s(kPrefix).s("net-bench error: cannot send to ");
        inet::put_ip(l, addr).print();
        exit(1);
      }
      ++b.sent;
      ++b.outstanding;
      ++burst;
    }
    g_stack.flush();
  }
  const uint64_t t1 = rdtsc();
  // Late echoes (up to 500 ms) still count.
  while (rdtsc() - t1 < hz / 2 && b.received < b.sent) g_stack.poll();

  const double secs = static_cast<double>(t1 - t0) / static_cast<double>(hz);
  const double tx_pps = static_cast<double>(b.sent) / secs, rx_pps = static_cast<double>(b.received) / secs;
  const double bits = static_cast<double>(size) * 8 / 1e6;
  Line l;
  l.s(kPrefix).s("net-bench addr=");
  inet::put_ip(l, addr).s(" port=").u(port).s(" size=").u(size).s(" seconds=");
  fixed(l, secs, 3).s(" sent=").u(b.sent).s(" received=").u(b.received).s(" tx_pps=");
  fixed(l, tx_pps, 0).s(" rx_pps=");
  fixed(l, rx_pps, 0).s(" tx_mbps=");
  fixed(l, tx_pps * bits, 2).s(" rx_mbps=");
  fixed(l, rx_pps * bits, 2).print();
  exit(b.received > 0 ? 0 : 1);
}

}  // namespace

[[noreturn]] void prog_net_dhcp(const Args& a) { prog_net_dhcp_impl(a); }
[[noreturn]] void prog_net_ping(const Args& a) { prog_net_ping_impl(a); }
[[noreturn]] void prog_net_echo(const Args& a) { prog_net_echo_impl(a); }
[[noreturn]] void prog_net_bench(const Args& a) { prog_net_bench_impl(a); }

bool net_lease(const char* who) {
  dhcp::Lease lease;
  return try_bring_up(who, &lease) == 0;
}

}  // namespace az
