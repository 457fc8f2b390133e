#include "dhcp.hpp"

#include "programs.hpp"

namespace az::dhcp {

namespace {

using inet::be16;
using inet::be32;
using inet::Ip4;
using inet::put16;
using inet::put32;

constexpr size_t kFixed = 236;       // op .. file
constexpr size_t kOptions = 240;     // after the magic cookie
constexpr size_t kMinMessage = 300;  // BOOTP minimum (RFC 1542 §2.1)
constexpr uint32_t kCookie = 0x63825363;
constexpr uint16_t kFlagBroadcast = 0x8000;

constexpr uint8_t kOptPad = 0;
constexpr uint8_t kOptMask = 1;
constexpr uint8_t kOptRouter = 3;
constexpr uint8_t kOptDns = 6;
constexpr uint8_t kOptHostname = 12;
constexpr uint8_t kOptDomain = 15;
constexpr uint8_t kOptMtu = 26;
constexpr uint8_t kOptRequestedIp = 50;
constexpr uint8_t kOptLease = 51;
constexpr uint8_t kOptOverload = 52;
constexpr uint8_t kOptType = 53;
constexpr uint8_t kOptServer = 54;
constexpr uint8_t kOptParams = 55;
constexpr uint8_t kOptMaxSize = 57;
constexpr uint8_t kOptClientId = 61;
constexpr uint8_t kOptEnd = 255;

constexpr uint8_t kParams[] = {kOptMask, kOptRouter, kOptDns, kOptHostname, kOptDomain, kOptMtu, kOptLease, kOptServer};

// A name option (12, 15): trailing NULs dropped (some servers send C strings), then
// 1-63 bytes of printable ASCII without spaces (it ends up in a console line).
const char* take_name(const uint8_t* v, size_t len, char* out) {
  while (len > 0 && v[len - 1] == 0) --len;
  if (len == 0) return "empty name option";
  if (len > kMaxName) return "name option longer than 63 bytes";
  for (size_t i = 0; i < len; ++i) {
    if (v[i] < 0x21 || v[i] > 0x7e) return "name option with a byte that is not printable ASCII";
    out[i] = static_cast<char>(v[i]);
  }
  out[len] = 0;
  return nullptr;
}

Ip4 classful_mask(Ip4 ip) {
  if ((ip >> 31) == 0) return 0xff000000;
  if ((ip >> 30) == 2) return 0xffff0000;
  return 0xffffff00;
}

}  // namespace

size_t build(uint8_t* out, size_t cap, uint8_t type, uint32_t xid, uint16_t secs, const uint8_t* mac, Ip4 requested,
             Ip4 server) {
  if (cap < kMinMessage) return 0;
  for (size_t i = 0; i < kMinMessage; ++i) out[i] = 0;
  out[0] = 1;  // BOOTREQUEST
  out[1] = 1;  // Ethernet
  out[2] = 6;
  put32(out + 4, xid);
  put16(out + 8, secs);
  put16(out + 10, kFlagBroadcast);  // no address yet: ask for broadcast replies
  for (int i = 0; i < 6; ++i) out[28 + i] = mac[i];
  put32(out + kFixed, kCookie);
  size_t o = kOptions;
  out[o++] = kOptType;
  out[o++] = 1;
  out[o++] = type;
  out[o++] = kOptClientId;
  out[o++] = 7;
  out[o++] = 1;  // hardware type Ethernet, then the MAC
  for (int i = 0; i < 6; ++i) out[o++] = mac[i];
  out[o++] = kOptMaxSize;
  out[o++] = 2;
  put16(out + o, 1500);
  o += 2;
  if (type == kRequest) {
    out[o++] = kOptRequestedIp;
    out[o++] = 4;
    put32(out + o, requested);
    o += 4;
    out[o++] = kOptServer;
    out[o++] = 4;
    put32(out + o, server);
    o += 4;
  }
  out[o++] = kOptParams;
  out[o++] = sizeof kParams;
  for (uint8_t p : kParams) out[o++] = p;
  out[o++] = kOptEnd;
  return o < kMinMessage ? kMinMessage : o;  // zero padded
}

const char* parse(const uint8_t* p, size_t n, uint32_t xid, const uint8_t* mac, Message* m) {
  *m = Message{};
  if (n < kOptions + 1) return "shorter than a DHCP message";
  if (p[0] != 2) return "not a BOOTREPLY";
  if (p[1] != 1 || p[2] != 6) return "hardware type is not Ethernet";
  if (be32(p + 4) != xid) return "another transaction (xid)";
  for (int i = 0; i < 6; ++i)
    if (p[28 + i] != mac[i]) return "another client (chaddr)";
  if (be32(p + kFixed) != kCookie) return "bad magic cookie";
  m->yiaddr = be32(p + 16);

  bool seen[256] = {};
  bool end = false;
  size_t i = kOptions;
  while (i < n) {
    const uint8_t code = p[i];
    if (code == kOptPad) {
      ++i;
      continue;
    }
    if (code == kOptEnd) {
      end = true;
      break;
    }
    if (i + 2 > n) return "option header runs past the end";
    const size_t len = p[i + 1];
    if (i + 2 + len > n) return "option runs past the end";
    const uint8_t* v = p + i + 2;
    i += 2 + len;
    switch (code) {
      case kOptMask: case kOptRouter: case kOptDns: case kOptHostname: case kOptDomain:
      case kOptMtu: case kOptLease: case kOptType: case kOptServer: case kOptOverload:
        if (seen[code]) return "repeated option";
        seen[code] = true;
        break;
      default:
        continue;  // not read here
    }
    switch (code) {
      case kOptMask:
        if (len != 4) return "subnet mask (1) length is not 4";
        m->mask = be32(v);
        if (inet::mask_prefix(m->mask) < 0) return "subnet mask (1) is not contiguous";
        m->has_mask = true;
        break;
      case kOptRouter:
        if (len < 4 || len % 4 != 0) return "router (3) length is not a multiple of 4";
        m->router = be32(v);
        break;
      case kOptDns:
        if (len < 4 || len % 4 != 0) return "DNS (6) length is not a multiple of 4";
        for (size_t k = 0; k < len / 4 && m->ndns < kMaxDns; ++k) m->dns[m->ndns++] = be32(v + 4 * k);
        break;
      case kOptHostname:
        if (const char* why = take_name(v, len, m->hostname); why != nullptr) return why;
        break;
      case kOptDomain:
        if (const char* why = take_name(v, len, m->domain); why != nullptr) return why;
        break;
      case kOptMtu:
        if (len != 2) return "MTU (26) length is not 2";
        m->mtu = be16(v);
        if (m->mtu < 68) return "MTU (26) below 68";
        break;
      case kOptLease:
        if (len != 4) return "lease time (51) length is not 4";
        m->lease = be32(v);
        m->has_lease = true;
        break;
      case kOptOverload:
        return "option overload (52) is not supported";
      case kOptType:
        if (len != 1) return "message type (53) length is not 1";
        m->type = v[0];
        if (m->type != kOffer && m->type != kAck && m->type != kNak) return "not an OFFER, ACK or NAK";
        break;
      case kOptServer:
        if (len != 4) return "server identifier (54) length is not 4";
        m->server = be32(v);
        break;
      default:
        break;
    }
  }
  if (!end) return "no END option";
  if (m->type == 0) return "no message type (53)";
  return nullptr;
}

// ------------------------------------------------------------------ client
namespace {

struct Wait {
  uint32_t xid;
  const uint8_t* mac;
  bool have;
  Message msg;
  unsigned reported;  // ignored messages reported so far
};

void on_udp(void* ctx, const inet::Udp& u) {
  auto* w = static_cast<Wait*>(ctx);
  if (w->have || u.sport != 67 || u.dport != 68) return;
  Message m;
  if (const char* why = parse(u.data, u.len, w->xid, w->mac, &m); why != nullptr) {
    if (w->reported++ < 3) {
      Line l;
      l.s(kPrefix).s("dhcp: ignored a message from ");
      inet::put_ip(l, u.src).s(": ").s(why).print();
    }
    return;
  }
  w->msg = m;
  w->have = true;
}

bool unicast_ip(Ip4 a) { return a != 0 && a != inet::kBroadcast && (a >> 28) != 0xe && (a >> 24) != 127; }

bool exchange(inet::Stack& st, Wait& w, uint64_t timeout_s, Lease* out, const char** why) {
  const uint64_t hz = st.tsc_hz(), start = rdtsc(), deadline = start + timeout_s * hz;
  uint8_t buf[kMinMessage + 64];
  uint64_t x = rdtsc() ^ 0x6468637063ull;
  x *= 0x9e3779b97f4a7c15ull;
  *why = "no OFFER";

  for (;;) {
    // DISCOVER until an acceptable OFFER.
    w.xid = static_cast<uint32_t>(x >> 32);
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    Message offer;
    bool offered = false;
    for (uint64_t interval = 1; !offered;) {
      if (rdtsc() > deadline) return false;
      const auto secs = static_cast<uint16_t>((rdtsc() - start) / hz);
      const size_t len = build(buf, sizeof buf, kDiscover, w.xid, secs, w.mac, 0, 0);
      st.send_dhcp_broadcast(buf, len);
      st.flush();
      const uint64_t until = rdtsc() + interval * hz;
      while (!offered && rdtsc() < until && rdtsc() < deadline) {
        st.poll();
        if (!w.have) continue;
        w.have = false;
        if (w.msg.type == kOffer && unicast_ip(w.msg.yiaddr) && w.msg.server != 0) {
          offer = w.msg;
          offered = true;
        }
      }
      if (interval < 4) interval *= 2;
    }

    // REQUEST the offered address until that server ACKs or NAKs (4 tries).
    *why = "no ACK";
    bool restart = false;
    for (int tries = 0, interval = 1; tries < 4 && !restart; ++tries) {
      if (rdtsc() > deadline) return false;
      const auto secs = static_cast<uint16_t>((rdtsc() - start) / hz);
      const size_t len = build(buf, sizeof buf, kRequest, w.xid, secs, w.mac, offer.yiaddr, offer.server);
      st.send_dhcp_broadcast(buf, len);
      st.flush();
      const uint64_t until = rdtsc() + static_cast<uint64_t>(interval) * hz;
      while (!restart && rdtsc() < until && rdtsc() < deadline) {
        st.poll();
        if (!w.have) continue;
        w.have = false;
        const Message& m = w.msg;
        if (m.server != offer.server) continue;  // another server's answer
        if (m.type == kNak) {
          Line().s(kPrefix).s("dhcp: NAK, starting over").print();
          *why = "NAK";
          restart = true;
          break;
        }
        if (m.type != kAck) continue;
        if (m.yiaddr != offer.yiaddr || !m.has_lease) {
          Line l;
          l.s(kPrefix).s("dhcp: ignored an ACK: ").s(m.yiaddr != offer.yiaddr ? "another address than offered"
                                                                                : "no lease time (51)");
          l.print();
          continue;
        }
        *out = Lease{};
        out->ip = m.yiaddr;
        out->mask = m.has_mask ? m.mask : classful_mask(m.yiaddr);
        out->router = m.router;
        out->server = m.server;
        out->ndns = m.ndns;
        for (size_t k = 0; k < m.ndns; ++k) out->dns[k] = m.dns[k];
        out->mtu = m.mtu;
        out->lease = m.lease;
        for (size_t k = 0; k <= kMaxName; ++k) {
          out->hostname[k] = m.hostname[k];
          out->domain[k] = m.domain[k];
        }
        st.configure(out->ip, out->mask, out->router, out->mtu == 0 ? vnet::kDefaultMtu : out->mtu);
        *why = nullptr;
        return true;
      }
      if (interval < 4) interval *= 2;
    }
    if (!restart) *why = "no ACK";
  }
}

}  // namespace

bool acquire(inet::Stack& st, uint64_t timeout_s, Lease* out, const char** why) {
  Wait w{};
  w.mac = st.mac();
  st.set_udp_handler(on_udp, &w);
  const bool ok = exchange(st, w, timeout_s, out, why);
  st.set_udp_handler(nullptr, nullptr);
  return ok;
}

}  // namespace az::dhcp
