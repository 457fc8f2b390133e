#include "inet.hpp"

namespace az::inet {

namespace {

constexpr uint16_t kEtherArp = 0x0806;
constexpr uint16_t kEtherIpv4 = 0x0800;
constexpr uint16_t kArpRequest = 1;
constexpr uint16_t kArpReply = 2;
constexpr size_t kArpLen = 28;
constexpr uint8_t kProtoIcmp = 1;
constexpr uint8_t kProtoUdp = 17;
constexpr uint8_t kIcmpEchoReply = 0;
constexpr uint8_t kIcmpEchoRequest = 8;
constexpr uint16_t kDhcpClientPort = 68;
constexpr uint16_t kDhcpServerPort = 67;
constexpr uint8_t kTtl = 64;
constexpr uint64_t kArpMaxAgeS = 300;
constexpr uint8_t kArpTries = 3;

constexpr uint8_t kBroadcastMac[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
constexpr uint8_t kZeroMac[6] = {};

bool mac_eq(const uint8_t* a, const uint8_t* b) {
  for (int i = 0; i < 6; ++i)
    if (a[i] != b[i]) return false;
  return true;
}
void copy(uint8_t* dst, const uint8_t* src, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] = src[i];
}
bool multicast_or_broadcast_ip(Ip4 a) { return a == kBroadcast || (a >> 28) == 0xe; }

// The UDP checksum over the pseudo-header and the datagram at `udp` (its checksum
// field included as it is).
uint16_t udp_checksum(Ip4 src, Ip4 dst, const uint8_t* udp, size_t len) {
  uint64_t acc = uint64_t{src >> 16} + (src & 0xffff) + (dst >> 16) + (dst & 0xffff) + kProtoUdp + len;
  return fold(sum16(udp, len, acc));
}

}  // namespace

uint64_t sum16(const uint8_t* p, size_t n, uint64_t acc) {
  size_t i = 0;
  for (; i + 1 < n; i += 2) acc += static_cast<uint32_t>((p[i] << 8) | p[i + 1]);
  if (i < n) acc += static_cast<uint32_t>(p[i]) << 8;
  return acc;
}

uint16_t fold(uint64_t acc) {
  while (acc >> 16) acc = (acc & 0xffff) + (acc >> 16);
  return static_cast<uint16_t>(~acc);
}

bool parse_ip(Str s, Ip4* out) {
  Ip4 v = 0;
  size_t i = 0;
  for (int part = 0; part < 4; ++part) {
    if (part > 0) {
      if (i >= s.n || s.p[i] != '.') return false;
      ++i;
    }
    const size_t start = i;
    while (i < s.n && s.p[i] >= '0' && s.p[i] <= '9') ++i;
    uint64_t octet = 0;
    if (i - start > 3 || (i - start > 1 && s.p[start] == '0')) return false;
    if (!parse_u64(Str{s.p + start, i - start}, 255, &octet)) return false;
    v = (v << 8) | static_cast<Ip4>(octet);
  }
  if (i != s.n) return false;
  *out = v;
  return true;
}

Line& put_ip(Line& l, Ip4 ip) {
  return l.u(ip >> 24).c('.').u((ip >> 16) & 0xff).c('.').u((ip >> 8) & 0xff).c('.').u(ip & 0xff);
}

Line& put_mac(Line& l, const uint8_t* mac) {
  for (int i = 0; i < 6; ++i) {
    if (i > 0) l.c(':');
    l.hex2(mac[i]);
  }
  return l;
}

int mask_prefix(Ip4 mask) {
  int n = 0;
  while (n < 32 && (mask & (0x80000000u >> n)) != 0) ++n;
  const Ip4 want = n == 0 ? 0 : ~Ip4{0} << (32 - n);
  return mask == want ? n : -1;
}

// ------------------------------------------------------------------ Stack
void Stack::init(vnet::Device* dev) {
  dev_ = dev;
  hz_ = az::tsc_hz();
  if (hz_ == 0) hz_ = 3000000000ull;
  ip_id_ = static_cast<uint16_t>(rdtsc());
  mtu_ = dev->mtu();
}

void Stack::configure(Ip4 ip, Ip4 mask, Ip4 router, uint16_t mtu) {
  ip_ = ip;
  mask_ = mask;
  router_ = router;
  mtu_ = mtu < dev_->mtu() ? mtu : dev_->mtu();
  if (mtu_ < 68) mtu_ = 68;
}

void Stack::poll() {
  vnet::Frame f;
  uint32_t budget = vnet::kMaxBuffers;
  bool got = false;
  while (budget-- > 0 && dev_->rx_poll(&f)) {
    got = true;
    ++stats_.rx_frames;
    handle(f.data, f.len);
    dev_->rx_done(f);
  }
  if (got) dev_->rx_publish();

  const uint64_t now = rdtsc();
  for (auto& r : resolving_) {
    if (!r.active || now - r.last < hz_) continue;
    if (r.tries >= kArpTries) {
      r.active = false;
      for (auto& p : pending_) {
        if (p.used && p.hop == r.hop) {
          p.used = false;
          ++stats_.unresolved_drops;
        }
      }
      continue;
    }
    r.last = now;
    ++r.tries;
    send_arp(kArpRequest, kBroadcastMac, kZeroMac, r.hop);
  }
  dev_->tx_publish();
  dev_->check();
}

void Stack::handle(const uint8_t* f, size_t n) {
  // Ethernet II: destination us or broadcast, no 802.1Q tag, at most 1514 bytes.
  if (n < kEthHdr || n > vnet::kMaxFrame || (!mac_eq(f, dev_->mac()) && !mac_eq(f, kBroadcastMac))) {
    ++stats_.rx_dropped;
    return;
  }
  const uint16_t type = be16(f + 12);
  if (type == kEtherArp) {
    handle_arp(f + kEthHdr, n - kEthHdr);
  } else if (type == kEtherIpv4) {
    handle_ipv4(f + kEthHdr, n - kEthHdr);
  } else {
    ++stats_.rx_dropped;
  }
}

void Stack::handle_arp(const uint8_t* p, size_t n) {
  // RFC 826 for Ethernet / IPv4 only. Link padding after the 28 bytes is ignored.
  if (n < kArpLen || be16(p) != 1 || be16(p + 2) != kEtherIpv4 || p[4] != 6 || p[5] != 4) {
    ++stats_.rx_dropped;
    return;
  }
  const uint16_t op = be16(p + 6);
  const uint8_t* sha = p + 8;
  const Ip4 spa = be32(p + 14), tpa = be32(p + 24);
  if ((op != kArpRequest && op != kArpReply) || (sha[0] & 1) != 0 || spa == 0 || multicast_or_broadcast_ip(spa)) {
    ++stats_.rx_dropped;
    return;
  }
  bool wanted = false;
  for (const auto& r : resolving_) wanted |= r.active && r.hop == spa;
  for (const auto& e : arp_) wanted |= e.valid && e.ip == spa;
  const bool for_us = configured() && tpa == ip_;
  if (for_us || wanted) learn(spa, sha);
  if (for_us && op == kArpRequest) {
    send_arp(kArpReply, sha, sha, spa);
    ++stats_.arp_requests_answered;
  }
}

void Stack::handle_ipv4(const uint8_t* p, size_t n) {
  if (n < 20 || (p[0] >> 4) != 4) {
    ++stats_.rx_dropped;
    return;
  }
  const size_t hl = size_t{p[0] & 0xfu} * 4, total = be16(p + 2);
  const uint16_t frag = be16(p + 6);
  // Header inside the packet, total length inside the frame (link padding cut off),
  // header checksum, reserved flag clear, not a fragment (no reassembly here).
  if (hl < 20 || total < hl || total > n || fold(sum16(p, hl)) != 0 || (frag & 0x8000) != 0 ||
      (frag & 0x3fff) != 0) {
    ++stats_.rx_dropped;
    return;
  }
  const uint8_t proto = p[9];
  const Ip4 src = be32(p + 12), dst = be32(p + 16);
  if (multicast_or_broadcast_ip(src)) {
    ++stats_.rx_dropped;
    return;
  }
  const uint8_t* l4 = p + hl;
  const size_t l4n = total - hl;
  if (!configured()) {
    // Before DHCP binds an address only DHCP replies are taken, whatever their
    // destination (a server may unicast to the offered address).
    if (proto == kProtoUdp) handle_udp(src, dst, l4, l4n);
    else ++stats_.rx_dropped;
    return;
  }
  if (dst != ip_ && dst != kBroadcast && dst != (ip_ | ~mask_)) {
    ++stats_.rx_dropped;
    return;
  }
  if (proto == kProtoIcmp) handle_icmp(src, dst, l4, l4n);
  else if (proto == kProtoUdp) handle_udp(src, dst, l4, l4n);
  else ++stats_.rx_dropped;
}

void Stack::handle_icmp(Ip4 src, Ip4 dst, const uint8_t* p, size_t n) {
  if (n < kIcmpHdr || fold(sum16(p, n)) != 0) {
    ++stats_.rx_dropped;
    return;
  }
  const uint8_t type = p[0], code = p[1];
  if (type == kIcmpEchoRequest && code == 0 && dst == ip_) {
    if (kEthHdr + kIpHdr + n > size_t{kEthHdr} + mtu_) {
      ++stats_.rx_dropped;
      return;
    }
    uint8_t* r = frame_ + kEthHdr + kIpHdr;
    copy(r, p, n);
    r[0] = kIcmpEchoReply;
    r[2] = r[3] = 0;
    put16(r + 2, fold(sum16(r, n)));
    if (emit(ip_, src, kProtoIcmp, n, false)) ++stats_.echo_requests_answered;
    return;
  }
  if (type == kIcmpEchoReply && code == 0) {
    if (echo_fn_ != nullptr) echo_fn_(echo_ctx_, src, be16(p + 4), be16(p + 6), p + kIcmpHdr, n - kIcmpHdr);
    return;
  }
  ++stats_.rx_dropped;  // other ICMP types are not handled
}

void Stack::handle_udp(Ip4 src, Ip4 dst, const uint8_t* p, size_t n) {
  // The UDP length must be the IP payload length exactly; a nonzero checksum must
  // verify (0: the sender computed none).
  if (n < kUdpHdr || be16(p + 4) != n || (be16(p + 6) != 0 && udp_checksum(src, dst, p, n) != 0)) {
    ++stats_.rx_dropped;
    return;
  }
  const uint16_t sport = be16(p), dport = be16(p + 2);
  if (!configured() && (dport != kDhcpClientPort || sport != kDhcpServerPort)) {
    ++stats_.rx_dropped;
    return;
  }
  if (udp_fn_ == nullptr) return;
  udp_fn_(udp_ctx_, Udp{src, dst, sport, dport, p + kUdpHdr, n - kUdpHdr});
}

// ------------------------------------------------------------------ ARP
const Stack::ArpEntry* Stack::lookup(Ip4 ip) const {
  const uint64_t now = rdtsc();
  for (const auto& e : arp_)
    if (e.valid && e.ip == ip && now - e.tsc < kArpMaxAgeS * hz_) return &e;
  return nullptr;
}

void Stack::learn(Ip4 ip, const uint8_t* mac) {
  ArpEntry* slot = nullptr;
  for (auto& e : arp_) {
    if (e.valid && e.ip == ip) {
      slot = &e;
      break;
    }
  }
  if (slot == nullptr) {
    for (auto& e : arp_) {  // a free entry, else the oldest
      if (!e.valid) {
        slot = &e;
        break;
      }
      if (slot == nullptr || e.tsc < slot->tsc) slot = &e;
    }
  }
  slot->ip = ip;
  copy(slot->mac, mac, 6);
  slot->tsc = rdtsc();
  slot->valid = true;
  // Frames waiting for this next hop go out now.
  for (auto& r : resolving_)
    if (r.active && r.hop == ip) r.active = false;
  for (auto& p : pending_) {
    if (!p.used || p.hop != ip) continue;
    transmit(slot->mac, p.frame, p.len);
    p.used = false;
  }
}

void Stack::send_arp(uint16_t op, const uint8_t* dst_mac, const uint8_t* target_mac, Ip4 target_ip) {
  uint8_t f[kEthHdr + kArpLen];
  uint8_t* a = f + kEthHdr;
  put16(f + 12, kEtherArp);
  put16(a, 1);
  put16(a + 2, kEtherIpv4);
  a[4] = 6;
  a[5] = 4;
  put16(a + 6, op);
  copy(a + 8, dev_->mac(), 6);
  put32(a + 14, ip_);
  copy(a + 18, target_mac, 6);
  put32(a + 24, target_ip);
  transmit(dst_mac, f, sizeof f);
}

void Stack::start_resolving(Ip4 hop) {
  for (const auto& r : resolving_)
    if (r.active && r.hop == hop) return;
  for (auto& r : resolving_) {
    if (r.active) continue;
    r = Resolving{hop, rdtsc(), 1, true};
    send_arp(kArpRequest, kBroadcastMac, kZeroMac, hop);
    return;
  }
}

bool Stack::next_hop(Ip4 dst, Ip4* hop) const {
  if (!configured() || dst == 0) return false;
  if ((dst & mask_) == (ip_ & mask_)) {
    *hop = dst;
    return true;
  }
  if (router_ == 0) return false;
  *hop = router_;
  return true;
}

bool Stack::resolve(Ip4 dst, uint64_t timeout_ms) {
  Ip4 hop = 0;
  if (dst == kBroadcast || (configured() && dst == (ip_ | ~mask_))) return true;
  if (!next_hop(dst, &hop)) return false;
  const uint64_t deadline = rdtsc() + timeout_ms * (hz_ / 1000);
  while (lookup(hop) == nullptr) {
    if (rdtsc() > deadline) return false;
    start_resolving(hop);  // again after a round of tries gave up
    dev_->tx_publish();
    poll();
  }
  return true;
}

// ------------------------------------------------------------------ send
void Stack::transmit(const uint8_t* dst_mac, const uint8_t* frame, size_t len) {
  uint8_t* b = dev_->tx_buffer();
  copy(b, dst_mac, 6);
  copy(b + 6, dev_->mac(), 6);
  copy(b + 12, frame + 12, len - 12);
  dev_->tx_queue(len);
}

bool Stack::emit(Ip4 src, Ip4 dst, uint8_t proto, size_t l4len, bool l2_broadcast) {
  if (kIpHdr + l4len > mtu_) return false;
  uint8_t* ip = frame_ + kEthHdr;
  put16(frame_ + 12, kEtherIpv4);
  ip[0] = 0x45;
  ip[1] = 0;
  put16(ip + 2, static_cast<uint16_t>(kIpHdr + l4len));
  put16(ip + 4, ip_id_++);
  put16(ip + 6, 0x4000);  // DF: this stack never fragments
  ip[8] = kTtl;
  ip[9] = proto;
  put16(ip + 10, 0);
  put32(ip + 12, src);
  put32(ip + 16, dst);
  put16(ip + 10, fold(sum16(ip, kIpHdr)));
  const size_t len = kEthHdr + kIpHdr + l4len;

  if (l2_broadcast || dst == kBroadcast || (configured() && dst == (ip_ | ~mask_))) {
    transmit(kBroadcastMac, frame_, len);
    return true;
  }
  Ip4 hop = 0;
  if (!next_hop(dst, &hop)) return false;
  if (const ArpEntry* e = lookup(hop); e != nullptr) {
    transmit(e->mac, frame_, len);
    return true;
  }
  for (auto& p : pending_) {
    if (p.used) continue;
    p.hop = hop;
    p.len = static_cast<uint16_t>(len);
    copy(p.frame, frame_, len);
    p.used = true;
    start_resolving(hop);
    return true;
  }
  ++stats_.unresolved_drops;
  return false;
}

bool Stack::send_udp(Ip4 dst, uint16_t sport, uint16_t dport, const uint8_t* data, size_t len) {
  if (!configured() || kIpHdr + kUdpHdr + len > mtu_) return false;
  uint8_t* u = frame_ + kEthHdr + kIpHdr;
  put16(u, sport);
  put16(u + 2, dport);
  put16(u + 4, static_cast<uint16_t>(kUdpHdr + len));
  put16(u + 6, 0);
  copy(u + kUdpHdr, data, len);
  const uint16_t c = udp_checksum(ip_, dst, u, kUdpHdr + len);
  put16(u + 6, c == 0 ? 0xffff : c);
  return emit(ip_, dst, kProtoUdp, kUdpHdr + len, false);
}

bool Stack::send_dhcp_broadcast(const uint8_t* data, size_t len) {
  if (kIpHdr + kUdpHdr + len > vnet::kDefaultMtu) return false;
  uint8_t* u = frame_ + kEthHdr + kIpHdr;
  put16(u, kDhcpClientPort);
  put16(u + 2, kDhcpServerPort);
  put16(u + 4, static_cast<uint16_t>(kUdpHdr + len));
  put16(u + 6, 0);
  copy(u + kUdpHdr, data, len);
  const uint16_t c = udp_checksum(0, kBroadcast, u, kUdpHdr + len);
  put16(u + 6, c == 0 ? 0xffff : c);
  return emit(0, kBroadcast, kProtoUdp, kUdpHdr + len, true);
}

bool Stack::send_echo_request(Ip4 dst, uint16_t id, uint16_t seq, size_t len) {
  if (!configured() || kIpHdr + kIcmpHdr + len > mtu_) return false;
  uint8_t* m = frame_ + kEthHdr + kIpHdr;
  m[0] = kIcmpEchoRequest;
  m[1] = 0;
  put16(m + 2, 0);
  put16(m + 4, id);
  put16(m + 6, seq);
  for (size_t i = 0; i < len; ++i) m[kIcmpHdr + i] = static_cast<uint8_t>(i);
  put16(m + 2, fold(sum16(m, kIcmpHdr + len)));
  return emit(ip_, dst, kProtoIcmp, kIcmpHdr + len, false);
}

}  // namespace az::inet
