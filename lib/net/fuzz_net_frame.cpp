// libFuzzer target for the frame parsers: the input is one frame as a guest transmits it
// (Ethernet first). It runs the whole chain (Ethernet -> ARP/IPv4 -> UDP/TCP/ICMP) in both
// checksum modes, each parser alone on the raw bytes, and for what parses, the replies the
// card would build (ARP reply, echo reply, destination unreachable, a UDP frame carrying the
// same payload), which must parse back to what was put in. Also the text forms of addresses.
#include <array>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>

#include "net/addr.hpp"
#include "net/arp.hpp"
#include "net/checksum.hpp"
#include "net/frame.hpp"
#include "net/ipv4.hpp"
#include "net/l4.hpp"

using namespace azote::net;

namespace {

void check(bool ok) {
  if (!ok) __builtin_trap();
}

bool inside(std::span<const uint8_t> part, std::span<const uint8_t> whole) {
  return part.data() >= whole.data() && part.data() + part.size() <= whole.data() + whole.size();
}

std::array<uint8_t, 70000> g_out;

void replies(const Frame& f, std::span<const uint8_t> in) {
  const EthernetFields eth{f.eth.src, f.eth.dst, kEtherTypeIpv4, f.eth.vlan};
  if (f.arp) {
    auto n = build_arp_reply(g_out, *f.arp, MacAddress({2, 0, 0, 0, 0, 1}));
    check(n.ok() && *n == kArpLen);
    auto back = parse_arp(std::span(g_out).first(*n));
    check(back.ok() && *back == arp_reply(*f.arp, MacAddress({2, 0, 0, 0, 0, 1})));
  }
  if (!f.ip) return;
  const Ipv4View& ip = *f.ip;
  check(inside(ip.header, in) && inside(ip.payload, in) && ip.header_len >= kIpv4HeaderLen);
  check(ip.header_len + ip.payload.size() == ip.total_len);

  // NAT-style rewrite of a copy keeps the header valid.
  std::memcpy(g_out.data(), ip.header.data(), ip.header.size());
  std::memcpy(g_out.data() + ip.header.size(), ip.payload.data(), ip.payload.size());
  const auto hdr = std::span(g_out).first(ip.header_len);
  ipv4_set_ttl(hdr, 1);
  ipv4_set_src(hdr, Ipv4Address(169, 254, 169, 254));
  ipv4_set_dst(hdr, ip.src);
  auto rewritten = parse_ipv4(std::span(g_out).first(ip.total_len));
  check(rewritten.ok() && rewritten->ttl == 1 && rewritten->dst == ip.src);

  // Destination unreachable quoting the packet parses as such.
  auto n = build_icmp_dest_unreachable(g_out, kIcmpPortUnreachable, in.subspan(f.eth.header_len, ip.total_len));
  check(n.ok());
  auto unreach = parse_icmp(std::span(g_out).first(*n));
  check(unreach.ok() && unreach->type == kIcmpDestUnreachable && unreach->code == kIcmpPortUnreachable);

  if (const auto* u = std::get_if<UdpView>(&f.l4)) {
    check(inside(u->payload, ip.payload) && u->length == ip.payload.size());
    Ipv4Fields out_ip{ip.dst, ip.src, kIpProtoUdp, 1, 0, 0, true};
    auto len = build_udp_frame(g_out, eth, out_ip, u->dst_port, u->src_port, u->payload);
    check(len.ok());
    auto back = parse_frame(std::span(g_out).first(*len));
    check(back.ok());
    const auto* bu = std::get_if<UdpView>(&back->l4);
    check(bu && bu->src_port == u->dst_port && bu->dst_port == u->src_port && back->ip->ttl == 1);
    check(bu->payload.size() == u->payload.size() &&
          std::memcmp(bu->payload.data(), u->payload.data(), u->payload.size()) == 0);
  } else if (const auto* t = std::get_if<TcpView>(&f.l4)) {
    check(t->header_len >= kTcpHeaderLen && t->header_len + t->payload.size() == ip.payload.size());
    check(inside(t->options, ip.payload) && inside(t->payload, ip.payload));
  } else if (const auto* icmp = std::get_if<IcmpView>(&f.l4)) {
    check(inside(icmp->body, ip.payload));
    if (icmp->type == kIcmpEchoRequest) {
      auto m = build_icmp_echo_reply(g_out, *icmp);
      check(m.ok());
      auto reply = parse_icmp(std::span(g_out).first(*m));
      check(reply.ok() && reply->type == kIcmpEchoReply && reply->echo_id() == icmp->echo_id() &&
            reply->echo_seq() == icmp->echo_seq() && reply->body.size() == icmp->body.size());
    }
  }
}

void text(std::span<const uint8_t> in) {
  if (in.size() > 40) return;
  const std::string_view s(reinterpret_cast<const char*>(in.data()), in.size());
  if (auto m = MacAddress::parse(s); m.ok()) check(MacAddress::parse(m->to_string()).ok());
  if (auto a = Ipv4Address::parse(s); a.ok()) check(a->to_string() == s);
  if (auto p = Ipv4Prefix::parse(s); p.ok()) check(p->to_string() == s && p->contains(p->network()));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const uint8_t> in(data, size);
  for (L4Checksum mode : {L4Checksum::kVerify, L4Checksum::kSkip}) {
    auto f = parse_frame(in, mode);
    if (!f.ok()) continue;
    check(inside(f->eth.payload, in) && (f->eth.header_len == 14 || f->eth.header_len == 18));
    replies(*f, in);
  }
  // Every parser alone on the raw bytes.
  (void)parse_arp(in);
  if (auto ip = parse_ipv4(in); ip.ok()) {
    (void)parse_udp(*ip);
    (void)parse_tcp(*ip);
    (void)parse_icmp(*ip);
  }
  const Ipv4Address a(10, 0, 1, 5), b(10, 0, 1, 1);
  (void)parse_udp(in, a, b);
  (void)parse_tcp(in, a, b);
  (void)parse_icmp(in);
  // Checksum pieces at an input-chosen split equal the one-shot sum.
  const size_t cut = size == 0 ? 0 : data[0] % (size + 1);
  check(Checksum().add(in.first(cut)).add(in.subspan(cut)).sum() == Checksum().add(in).sum());
  text(in);
  return 0;
}
