// Header views and builders: golden frames written from the RFC layouts, every error
// reason, truncation at every byte offset, and builder -> parser round trips.
#include <gtest/gtest.h>

#include <array>
#include <vector>

#include "net/arp.hpp"
#include "net/checksum.hpp"
#include "net/ethernet.hpp"
#include "net/frame.hpp"
#include "net/ipv4.hpp"
#include "net/l4.hpp"
#include "net/test_util.hpp"

namespace azote::net {
namespace {

using testing::cat;
using testing::hex;
using testing::prefix;

const MacAddress kGuestMac({0x02, 0x00, 0x0a, 0x00, 0x01, 0x05});
const MacAddress kRouterMac({0x02, 0x00, 0x0a, 0x00, 0x01, 0x01});
constexpr Ipv4Address kGuest(10, 0, 1, 5);
constexpr Ipv4Address kRouter(10, 0, 1, 1);

// The guest asks who has 10.0.1.1 (RFC 826 layout), unpadded as virtio-net delivers it.
const std::vector<uint8_t> kArpRequest = hex(
    "ffff ffff ffff  0200 0a00 0105  0806"   // Ethernet: broadcast, from the guest, ARP
    "0001 0800 06 04 0001"                   // Ethernet/IPv4, request
    "0200 0a00 0105  0a00 0105"              // sender: guest MAC, 10.0.1.5
    "0000 0000 0000  0a00 0101");            // target: unknown, 10.0.1.1
const std::vector<uint8_t> kArpReplyPayload = hex(
    "0001 0800 06 04 0002"
    "0200 0a00 0101  0a00 0101"              // sender: the router's MAC and address
    "0200 0a00 0105  0a00 0105");            // target: the guest

// ping -c1 10.0.1.1: echo request id 0x1c2b seq 1, 56 data bytes 0x10..0x47.
const std::vector<uint8_t> kIcmpEcho = hex(
    "0200 0a00 0101  0200 0a00 0105  0800"
    "4500 0054 04d2 4000 4001 1fd2 0a00 0105 0a00 0101"  // IPv4, DF, TTL 64, ICMP
    "08 00 22ff 1c2b 0001"                               // echo request
    "1011 1213 1415 1617 1819 1a1b 1c1d 1e1f 2021 2223 2425 2627 2829 2a2b 2c2d 2e2f"
    "3031 3233 3435 3637 3839 3a3b 3c3d 3e3f 4041 4243 4445 4647");

// A Linux SYN 10.0.1.5:40000 -> 10.0.2.7:443 with MSS, SACK-permitted, timestamps, NOP, wscale.
const std::vector<uint8_t> kTcpSynFrame = hex(
    "0200 0a00 0101  0200 0a00 0105  0800"
    "4500 003c 1234 4000 4006 117d 0a00 0105 0a00 0207"
    "9c40 01bb 0102 0304 0000 0000 a002 f507 99ea 0000"  // ports, seq, ack, offset 10, SYN, window
    "0204 05b4 0402 080a 0000 0001 0000 0000 01 030307");

// dig @10.0.0.2 ip-10-0-1-5.eu-west-1.compute.internal: RD+AD, EDNS 1232 with a cookie.
const std::vector<uint8_t> kDnsFrame = hex(
    "0200 0a00 0101  0200 0a00 0105  0800"
    "4500 006b 2222 4000 4011 035a 0a00 0105 0a00 0002"
    "cf08 0035 0057 4c3b"                                 // UDP 53000 -> 53, length 87
    "b3a1 0120 0001 0000 0000 0001"
    "0b 69702d31302d302d312d35 09 65752d776573742d31 07 636f6d70757465 08 696e7465726e616c 00"
    "0001 0001"
    "00 0029 04d0 00000000 000c 000a 0008 0123456789abcdef");

TEST(Ethernet, GoldenArpRequest) {
  auto f = parse_frame(kArpRequest);
  ASSERT_TRUE(f.ok()) << f.error().context;
  EXPECT_TRUE(f->eth.dst.is_broadcast());
  EXPECT_EQ(f->eth.src, kGuestMac);
  EXPECT_EQ(f->eth.ethertype, kEtherTypeArp);
  EXPECT_FALSE(f->eth.vlan);
  ASSERT_TRUE(f->arp);
  EXPECT_EQ(f->arp->op, ArpOp::kRequest);
  EXPECT_EQ(f->arp->sender_mac, kGuestMac);
  EXPECT_EQ(f->arp->sender_ip, kGuest);
  EXPECT_TRUE(f->arp->target_mac.is_zero());
  EXPECT_EQ(f->arp->target_ip, kRouter);
  EXPECT_FALSE(f->arp->is_probe());
  EXPECT_FALSE(f->arp->is_announcement());

  std::array<uint8_t, 64> out{};
  auto n = build_arp_reply(out, *f->arp, kRouterMac);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(std::vector<uint8_t>(out.begin(), out.begin() + static_cast<long>(*n)), kArpReplyPayload);
}

TEST(Ethernet, PaddedFrameFromTheWire) {
  auto padded = kArpRequest;
  padded.resize(60, 0);  // minimum frame size, padding after the ARP packet
  auto f = parse_frame(padded);
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->arp->target_ip, kRouter);
}

TEST(Ethernet, VlanTagRecognisedAndReported) {
  auto tagged = cat({std::span(kArpRequest).first(12), hex("8100 a07b"), std::span(kArpRequest).subspan(12)});
  auto e = parse_ethernet(tagged);
  ASSERT_TRUE(e.ok());
  ASSERT_TRUE(e->vlan);
  EXPECT_EQ(e->vlan->pcp, 5);
  EXPECT_FALSE(e->vlan->dei);
  EXPECT_EQ(e->vlan->vid, 0x07b);
  EXPECT_EQ(e->ethertype, kEtherTypeArp);
  EXPECT_EQ(e->header_len, 18u);
  EXPECT_EQ(e->payload.size(), kArpReplyPayload.size());
  EXPECT_TRUE(parse_frame(tagged).ok());
}

TEST(Ethernet, Refusals) {
  auto with_type = [](const char* type_and_more) {
    return cat({std::span(kArpRequest).first(12), hex(type_and_more)});
  };
  struct Case {
    std::vector<uint8_t> frame;
    NetErrc code;
  } cases[] = {
      {with_type("0040 aaaa"), NetErrc::kUnsupported},            // 802.3 length field
      {with_type("05ff aaaa"), NetErrc::kUnsupported},            // below 0x0600
      {with_type("88a8 0001 8100 0002 0800"), NetErrc::kUnsupported},  // 802.1ad
      {with_type("8100 0001 8100 0002 0800"), NetErrc::kUnsupported},  // two 802.1Q tags
      {with_type("8100 0001"), NetErrc::kTruncated},              // tag without inner type
      {with_type("86dd 6000"), NetErrc::kUnsupported},            // IPv6: parse_frame only
  };
  for (const auto& c : cases) {
    auto r = parse_frame(c.frame);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, c.code) << r.error().context;
  }
  EXPECT_TRUE(parse_ethernet(with_type("86dd 6000")).ok());
}

TEST(Arp, Refusals) {
  const auto good = std::vector<uint8_t>(kArpRequest.begin() + 14, kArpRequest.end());
  auto patched = [&](size_t at, std::vector<uint8_t> bytes) {
    auto p = good;
    std::copy(bytes.begin(), bytes.end(), p.begin() + static_cast<long>(at));
    return p;
  };
  EXPECT_EQ(parse_arp(patched(0, {0x00, 0x06})).error().code, NetErrc::kUnsupported);  // IEEE 802 hardware
  EXPECT_EQ(parse_arp(patched(2, {0x86, 0xdd})).error().code, NetErrc::kUnsupported);  // not IPv4
  EXPECT_EQ(parse_arp(patched(4, {0x08})).error().code, NetErrc::kUnsupported);        // hlen 8
  EXPECT_EQ(parse_arp(patched(5, {0x10})).error().code, NetErrc::kUnsupported);        // plen 16
  EXPECT_EQ(parse_arp(patched(6, {0x00, 0x03})).error().code, NetErrc::kUnsupported);  // RARP
  EXPECT_EQ(parse_arp(patched(6, {0x00, 0x08})).error().code, NetErrc::kUnsupported);  // InARP
  EXPECT_TRUE(parse_arp(patched(6, {0x00, 0x02})).ok());
  // Probe (RFC 5227) and announcement.
  auto probe = parse_arp(patched(14, {0, 0, 0, 0}));
  ASSERT_TRUE(probe.ok());
  EXPECT_TRUE(probe->is_probe());
  auto announce = parse_arp(patched(24, {10, 0, 1, 5}));
  ASSERT_TRUE(announce.ok());
  EXPECT_TRUE(announce->is_announcement());
}

TEST(Ipv4, GoldenIcmpEcho) {
  auto f = parse_frame(kIcmpEcho);
  ASSERT_TRUE(f.ok()) << f.error().context;
  ASSERT_TRUE(f->ip);
  const Ipv4View& ip = *f->ip;
  EXPECT_EQ(ip.header_len, 20u);
  EXPECT_EQ(ip.total_len, 84);
  EXPECT_EQ(ip.id, 0x04d2);
  EXPECT_TRUE(ip.dont_fragment);
  EXPECT_FALSE(ip.is_fragment());
  EXPECT_EQ(ip.ttl, 64);
  EXPECT_EQ(ip.protocol, kIpProtoIcmp);
  EXPECT_EQ(ip.checksum, 0x1fd2);
  EXPECT_EQ(ip.src, kGuest);
  EXPECT_EQ(ip.dst, kRouter);
  EXPECT_FALSE(ip.has_options());
  ASSERT_TRUE(std::holds_alternative<IcmpView>(f->l4));
  const auto& icmp = std::get<IcmpView>(f->l4);
  EXPECT_EQ(icmp.type, kIcmpEchoRequest);
  EXPECT_EQ(icmp.code, 0);
  EXPECT_EQ(icmp.echo_id(), 0x1c2b);
  EXPECT_EQ(icmp.echo_seq(), 1);
  ASSERT_EQ(icmp.body.size(), 56u);
  EXPECT_EQ(icmp.body[0], 0x10);
  EXPECT_EQ(icmp.body[55], 0x47);
}

// Patches the IPv4 header of kIcmpEcho (bytes 14..33) and fixes its checksum unless told not to.
std::vector<uint8_t> icmp_with(size_t at, std::vector<uint8_t> bytes, bool fix_checksum = true) {
  auto f = kIcmpEcho;
  std::copy(bytes.begin(), bytes.end(), f.begin() + 14 + static_cast<long>(at));
  if (fix_checksum) {
    f[24] = f[25] = 0;
    const uint16_t c = internet_checksum(std::span(f).subspan(14, size_t{f[14] & 0xfu} * 4));
    f[24] = static_cast<uint8_t>(c >> 8);
    f[25] = static_cast<uint8_t>(c);
  }
  return f;
}

TEST(Ipv4, Refusals) {
  auto code = [](const std::vector<uint8_t>& frame) {
    auto r = parse_ipv4(std::span(frame).subspan(14));
    return r.ok() ? NetErrc{} : r.error().code;
  };
  EXPECT_EQ(code(icmp_with(0, {0x65})), NetErrc::kUnsupported);   // version 6
  EXPECT_EQ(code(icmp_with(0, {0x44})), NetErrc::kBadLength);     // IHL 4
  EXPECT_EQ(code(prefix(icmp_with(0, {0x4f}), 14 + 40)), NetErrc::kTruncated);  // IHL 15 in 40 bytes
  EXPECT_EQ(code(icmp_with(2, {0x00, 0x13})), NetErrc::kBadLength);  // total 19 < header
  EXPECT_EQ(code(icmp_with(2, {0x00, 0x55})), NetErrc::kTruncated);  // total 85 > 84 in the buffer
  EXPECT_EQ(code(icmp_with(8, {0x3f}, false)), NetErrc::kBadChecksum);
  EXPECT_EQ(code(icmp_with(6, {0xc0, 0x00})), NetErrc::kMalformed);  // reserved flag
}

TEST(Ipv4, LinkPaddingTrimmedAndOptionsReported) {
  auto padded = kTcpSynFrame;
  padded.resize(padded.size() + 6, 0xee);
  auto f = parse_frame(padded);
  ASSERT_TRUE(f.ok()) << f.error().context;
  EXPECT_EQ(f->ip->payload.size(), 40u);

  // IHL 6 with a 4-byte option (NOP NOP NOP EOL) before an ICMP echo without data.
  auto opt = hex("4600 0020 0001 0000 4001 0000 0a00 0105 0a00 0101  0101 0100  0800 f7ff 0000 0000");
  const uint16_t c = internet_checksum(std::span(opt).first(24));
  opt[10] = static_cast<uint8_t>(c >> 8);
  opt[11] = static_cast<uint8_t>(c);
  auto ip = parse_ipv4(opt);
  ASSERT_TRUE(ip.ok()) << ip.error().context;
  EXPECT_EQ(ip->header_len, 24u);
  EXPECT_TRUE(ip->has_options());
  EXPECT_EQ(ip->options.size(), 4u);
  auto icmp = parse_icmp(*ip);
  ASSERT_TRUE(icmp.ok()) << icmp.error().context;
  EXPECT_EQ(icmp->type, kIcmpEchoRequest);
}

TEST(Ipv4, FragmentsFlaggedAndTransportRefused) {
  // MF set: the first fragment.
  auto first = icmp_with(6, {0x20, 0x00});
  auto f = parse_frame(first);
  ASSERT_TRUE(f.ok());
  EXPECT_TRUE(f->ip->is_fragment());
  EXPECT_TRUE(f->ip->more_fragments);
  EXPECT_TRUE(std::holds_alternative<std::monostate>(f->l4));
  EXPECT_EQ(parse_icmp(*f->ip).error().code, NetErrc::kFragment);
  // Offset 185 * 8, no MF: the last fragment.
  auto last = icmp_with(6, {0x00, 0xb9});
  f = parse_frame(last);
  ASSERT_TRUE(f.ok());
  EXPECT_TRUE(f->ip->is_fragment());
  EXPECT_EQ(f->ip->fragment_offset, 1480);
  EXPECT_EQ(parse_udp(*f->ip).error().code, NetErrc::kUnsupported);  // protocol is ICMP
}

TEST(Ipv4, RewritesKeepTheChecksum) {
  auto f = kIcmpEcho;
  std::span<uint8_t> h = std::span(f).subspan(14, 20);
  ipv4_set_ttl(h, 1);
  ipv4_set_src(h, Ipv4Address(169, 254, 169, 254));
  ipv4_set_dst(h, Ipv4Address(192, 0, 2, 200));
  auto ip = parse_ipv4(std::span(f).subspan(14));
  ASSERT_TRUE(ip.ok()) << ip.error().context;
  EXPECT_EQ(ip->ttl, 1);
  EXPECT_EQ(ip->src, Ipv4Address(169, 254, 169, 254));
  EXPECT_EQ(ip->dst, Ipv4Address(192, 0, 2, 200));
  const uint16_t incremental = ip->checksum;
  h[10] = h[11] = 0;
  EXPECT_EQ(internet_checksum(h), incremental);
}

TEST(Udp, GoldenDnsQueryFrame) {
  auto f = parse_frame(kDnsFrame);
  ASSERT_TRUE(f.ok()) << f.error().context;
  ASSERT_TRUE(std::holds_alternative<UdpView>(f->l4));
  const auto& u = std::get<UdpView>(f->l4);
  EXPECT_EQ(u.src_port, 53000);
  EXPECT_EQ(u.dst_port, 53);
  EXPECT_EQ(u.length, 87);
  EXPECT_EQ(u.checksum, 0x4c3b);
  EXPECT_EQ(u.payload.size(), 79u);
  EXPECT_EQ(u.payload[0], 0xb3);
}

TEST(Udp, Refusals) {
  const auto ip = *parse_ipv4(std::span(kDnsFrame).subspan(14));
  std::vector<uint8_t> d(ip.payload.begin(), ip.payload.end());
  auto with = [&](size_t at, std::vector<uint8_t> bytes) {
    auto p = d;
    std::copy(bytes.begin(), bytes.end(), p.begin() + static_cast<long>(at));
    return p;
  };
  auto code = [&](const std::vector<uint8_t>& p, L4Checksum m = L4Checksum::kVerify) {
    auto r = parse_udp(p, ip.src, ip.dst, m);
    return r.ok() ? NetErrc{} : r.error().code;
  };
  EXPECT_EQ(code(d), NetErrc{});
  EXPECT_EQ(code(with(4, {0x00, 0x07})), NetErrc::kBadLength);   // length < 8
  EXPECT_EQ(code(with(4, {0x00, 0x58})), NetErrc::kTruncated);   // 88 > 87
  EXPECT_EQ(code(with(4, {0x00, 0x56}), L4Checksum::kSkip), NetErrc::kBadLength);  // 86 < 87
  EXPECT_EQ(code(with(20, {0xff})), NetErrc::kBadChecksum);
  EXPECT_EQ(code(with(20, {0xff}), L4Checksum::kSkip), NetErrc{});  // offloaded: not checked
  EXPECT_EQ(code(with(6, {0x00, 0x00})), NetErrc{});                // no checksum (IPv4)
  // Another pseudo-header (a spoofed source) breaks the checksum.
  EXPECT_EQ(parse_udp(d, Ipv4Address(10, 0, 1, 6), ip.dst).error().code, NetErrc::kBadChecksum);
}

TEST(Tcp, GoldenSyn) {
  auto f = parse_frame(kTcpSynFrame);
  ASSERT_TRUE(f.ok()) << f.error().context;
  ASSERT_TRUE(std::holds_alternative<TcpView>(f->l4));
  const auto& t = std::get<TcpView>(f->l4);
  EXPECT_EQ(t.src_port, 40000);
  EXPECT_EQ(t.dst_port, 443);
  EXPECT_EQ(t.seq, 0x01020304u);
  EXPECT_EQ(t.ack, 0u);
  EXPECT_EQ(t.header_len, 40u);
  EXPECT_EQ(t.flags, kTcpSyn);
  EXPECT_TRUE(t.has(kTcpSyn));
  EXPECT_FALSE(t.has(kTcpAck));
  EXPECT_EQ(t.window, 62727);
  EXPECT_EQ(t.checksum, 0x99ea);
  EXPECT_EQ(t.options.size(), 20u);
  EXPECT_EQ(t.options[0], 2);  // MSS
  EXPECT_TRUE(t.payload.empty());
}

TEST(Tcp, Refusals) {
  const auto ip = *parse_ipv4(std::span(kTcpSynFrame).subspan(14));
  std::vector<uint8_t> s(ip.payload.begin(), ip.payload.end());
  auto code = [&](std::vector<uint8_t> p, L4Checksum m = L4Checksum::kVerify) {
    auto r = parse_tcp(p, ip.src, ip.dst, m);
    return r.ok() ? NetErrc{} : r.error().code;
  };
  auto off = s;
  off[12] = 0x40;  // data offset 4
  EXPECT_EQ(code(off, L4Checksum::kSkip), NetErrc::kBadLength);
  off[12] = 0xf0;  // 60 bytes of header in a 40-byte segment
  EXPECT_EQ(code(off, L4Checksum::kSkip), NetErrc::kTruncated);
  auto flags = s;
  flags[13] = 0x03;  // SYN+FIN: parsed (policy is the tracker's), but the checksum now fails
  EXPECT_EQ(code(flags), NetErrc::kBadChecksum);
  auto ok = parse_tcp(flags, ip.src, ip.dst, L4Checksum::kSkip);
  ASSERT_TRUE(ok.ok());
  EXPECT_TRUE(ok->has(kTcpFin) && ok->has(kTcpSyn));
  auto ae = s;
  ae[12] |= 0x01;  // AE (ex-NS), 9th flag bit
  EXPECT_TRUE(parse_tcp(ae, ip.src, ip.dst, L4Checksum::kSkip)->has(kTcpAe));
}

TEST(Icmp, Refusals) {
  auto msg = [](const char* h) {
    auto m = hex(h);
    m[2] = m[3] = 0;
    const uint16_t c = internet_checksum(m);
    m[2] = static_cast<uint8_t>(c >> 8);
    m[3] = static_cast<uint8_t>(c);
    return m;
  };
  EXPECT_EQ(parse_icmp(msg("0801 0000 0001 0001")).error().code, NetErrc::kMalformed);  // echo code 1
  EXPECT_EQ(parse_icmp(msg("0310 0000 0000 0000 4500 0014 0000 0000 4011 0000 0a000105 0a000101")).error().code,
            NetErrc::kMalformed);  // unreachable code 16
  EXPECT_EQ(parse_icmp(msg("0303 0000 0000 0000 4500")).error().code, NetErrc::kMalformed);  // quote too short
  EXPECT_EQ(parse_icmp(hex("0800 0000 0001 0001")).error().code, NetErrc::kBadChecksum);
  EXPECT_TRUE(parse_icmp(hex("0800 0000 0001 0001"), L4Checksum::kSkip).ok());
  // Other types parse generically: security groups match on type and code.
  auto te = parse_icmp(msg("0b00 0000 0000 0000 4500 0014 0000 0000 0111 0000 0a000105 0a000101"));
  ASSERT_TRUE(te.ok());
  EXPECT_EQ(te->type, kIcmpTimeExceeded);
}

// Every parser, on every proper prefix of its golden input, refuses and reads nothing past
// the prefix (each prefix lives in a buffer of exactly its size, so ASan would see it).
TEST(Truncation, EveryOffsetOfEveryGoldenFrame) {
  for (const auto* frame : {&kArpRequest, &kIcmpEcho, &kTcpSynFrame, &kDnsFrame}) {
    for (size_t n = 0; n < frame->size(); ++n) {
      const auto p = prefix(*frame, n);
      auto r = parse_frame(p);
      ASSERT_FALSE(r.ok()) << "frame of " << frame->size() << " cut at " << n;
      EXPECT_EQ(r.error().code, NetErrc::kTruncated) << n << ": " << r.error().context;
    }
    EXPECT_TRUE(parse_frame(*frame).ok());
  }
  for (const auto* frame : {&kArpRequest, &kIcmpEcho, &kTcpSynFrame, &kDnsFrame}) {
    const auto body = std::vector<uint8_t>(frame->begin() + 14, frame->end());
    for (size_t n = 0; n < body.size(); ++n) {
      const auto p = prefix(body, n);
      if (frame == &kArpRequest) {
        ASSERT_EQ(parse_arp(p).error().code, NetErrc::kTruncated) << n;
        continue;
      }
      ASSERT_EQ(parse_ipv4(p).error().code, NetErrc::kTruncated) << n;
    }
  }
  // Transport parsers on their own: no length field in TCP or ICMP, so a cut segment is
  // refused as truncated (header) or by its checksum (payload) — never accepted.
  const auto icmp_ip = *parse_ipv4(std::span(kIcmpEcho).subspan(14));
  const auto tcp_ip = *parse_ipv4(std::span(kTcpSynFrame).subspan(14));
  const auto udp_ip = *parse_ipv4(std::span(kDnsFrame).subspan(14));
  for (size_t n = 0; n < icmp_ip.payload.size(); ++n) {
    auto r = parse_icmp(prefix(icmp_ip.payload, n));
    ASSERT_FALSE(r.ok()) << n;
    EXPECT_EQ(r.error().code, n < kIcmpHeaderLen ? NetErrc::kTruncated : NetErrc::kBadChecksum) << n;
  }
  for (size_t n = 0; n < tcp_ip.payload.size(); ++n) {
    auto r = parse_tcp(prefix(tcp_ip.payload, n), tcp_ip.src, tcp_ip.dst);
    ASSERT_FALSE(r.ok()) << n;
    EXPECT_EQ(r.error().code, NetErrc::kTruncated) << n;  // the SYN has no payload: all in the header
  }
  for (size_t n = 0; n < udp_ip.payload.size(); ++n) {
    auto r = parse_udp(prefix(udp_ip.payload, n), udp_ip.src, udp_ip.dst);
    ASSERT_FALSE(r.ok()) << n;
    EXPECT_EQ(r.error().code, NetErrc::kTruncated) << n;
  }
}

TEST(Build, UdpFrameRoundTripWithTtl1) {
  const std::vector<uint8_t> payload = hex("7b22 6f6b 223a 7472 7565 7d");  // {"ok":true}
  std::array<uint8_t, 128> out{};
  Ipv4Fields ip;
  ip.src = Ipv4Address(169, 254, 169, 254);
  ip.dst = kGuest;
  ip.ttl = 1;  // IMDS
  ip.id = 7;
  auto n = build_udp_frame(out, EthernetFields{kGuestMac, kRouterMac, kEtherTypeIpv4, std::nullopt}, ip, 80, 40000,
                           payload);
  ASSERT_TRUE(n.ok()) << n.error().context;
  EXPECT_EQ(*n, 14u + 20 + 8 + payload.size());
  auto f = parse_frame(std::span(out).first(*n));
  ASSERT_TRUE(f.ok()) << f.error().context;
  EXPECT_EQ(f->eth.dst, kGuestMac);
  EXPECT_EQ(f->eth.src, kRouterMac);
  EXPECT_EQ(f->ip->ttl, 1);
  EXPECT_EQ(f->ip->id, 7);
  EXPECT_TRUE(f->ip->dont_fragment);
  EXPECT_EQ(f->ip->src, ip.src);
  EXPECT_EQ(f->ip->dst, kGuest);
  const auto& u = std::get<UdpView>(f->l4);
  EXPECT_EQ(u.src_port, 80);
  EXPECT_EQ(u.dst_port, 40000);
  EXPECT_NE(u.checksum, 0);
  EXPECT_EQ(std::vector<uint8_t>(u.payload.begin(), u.payload.end()), payload);
}

TEST(Build, VlanFrameRoundTripAndInPlacePayload) {
  std::array<uint8_t, 128> out{};
  const EthernetFields eth{kGuestMac, kRouterMac, kEtherTypeIpv4, VlanTag{3, true, 42}};
  const size_t at = ethernet_header_len(eth) + 20 + 8;
  const auto payload = hex("0102 0304 05");
  std::copy(payload.begin(), payload.end(), out.begin() + static_cast<long>(at));  // already in place
  Ipv4Fields ip{kRouter, kGuest, kIpProtoUdp, 64, 0, 0, false};
  auto n = build_udp_frame(out, eth, ip, 53, 5353, std::span(out).subspan(at, payload.size()));
  ASSERT_TRUE(n.ok());
  auto f = parse_frame(std::span(out).first(*n));
  ASSERT_TRUE(f.ok()) << f.error().context;
  ASSERT_TRUE(f->eth.vlan);
  EXPECT_EQ(*f->eth.vlan, (VlanTag{3, true, 42}));
  EXPECT_FALSE(f->ip->dont_fragment);
  const auto& u = std::get<UdpView>(f->l4);
  EXPECT_EQ(std::vector<uint8_t>(u.payload.begin(), u.payload.end()), payload);
}

TEST(Build, IcmpEchoReplyRoundTrip) {
  auto req = parse_frame(kIcmpEcho);
  ASSERT_TRUE(req.ok());
  const auto& echo = std::get<IcmpView>(req->l4);
  std::array<uint8_t, 256> icmp{};
  auto n = build_icmp_echo_reply(icmp, echo);
  ASSERT_TRUE(n.ok());
  std::array<uint8_t, 256> out{};
  Ipv4Fields ip{kRouter, kGuest, kIpProtoIcmp, 64, 0, 0, true};
  auto len = build_ipv4_frame(out, EthernetFields{kGuestMac, kRouterMac, kEtherTypeIpv4, std::nullopt}, ip,
                              std::span(icmp).first(*n));
  ASSERT_TRUE(len.ok());
  EXPECT_EQ(*len, kIcmpEcho.size());
  auto f = parse_frame(std::span(out).first(*len));
  ASSERT_TRUE(f.ok()) << f.error().context;
  const auto& reply = std::get<IcmpView>(f->l4);
  EXPECT_EQ(reply.type, kIcmpEchoReply);
  EXPECT_EQ(reply.echo_id(), 0x1c2b);
  EXPECT_EQ(reply.echo_seq(), 1);
  EXPECT_TRUE(std::equal(reply.body.begin(), reply.body.end(), echo.body.begin(), echo.body.end()));
  // The reply's ICMP checksum differs from the request's by the type word alone (RFC 1624).
  EXPECT_EQ(reply.checksum, checksum_update16(echo.checksum, 0x0800, 0x0000));
}

TEST(Build, IcmpDestUnreachableQuotesTheOffender) {
  const auto offending = std::span(kTcpSynFrame).subspan(14);
  std::array<uint8_t, 1024> out{};
  auto n = build_icmp_dest_unreachable(out, kIcmpAdminProhibited, offending);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 8 + offending.size());
  auto icmp = parse_icmp(std::span(out).first(*n));
  ASSERT_TRUE(icmp.ok()) << icmp.error().context;
  EXPECT_EQ(icmp->type, kIcmpDestUnreachable);
  EXPECT_EQ(icmp->code, kIcmpAdminProhibited);
  auto quoted = parse_ipv4(icmp->body);
  ASSERT_TRUE(quoted.ok());
  EXPECT_EQ(quoted->src, kGuest);

  // Frag-needed carries the MTU; a large offender is cut to 548 bytes.
  std::vector<uint8_t> big(1500, 0x45);
  n = build_icmp_dest_unreachable(out, kIcmpFragNeeded, big, 1400);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 8 + kIcmpMaxQuote);
  EXPECT_EQ(parse_icmp(std::span(out).first(*n))->next_hop_mtu(), 1400);
  EXPECT_EQ(build_icmp_dest_unreachable(out, 3, std::span(big).first(19)).error().code, NetErrc::kMalformed);
  EXPECT_EQ(build_icmp_dest_unreachable(out, 16, big).error().code, NetErrc::kMalformed);
}

TEST(Build, NoSpaceAndLengthLimits) {
  std::array<uint8_t, 40> small{};
  const EthernetFields eth{kGuestMac, kRouterMac, kEtherTypeIpv4, std::nullopt};
  EXPECT_EQ(build_ethernet(std::span(small).first(13), eth, 0).error().code, NetErrc::kNoSpace);
  EXPECT_EQ(build_ethernet(small, eth, 27).error().code, NetErrc::kNoSpace);
  EXPECT_EQ(*build_ethernet(small, eth, 26), 40u);
  EXPECT_EQ(build_arp(std::span(small).first(27), Arp{}).error().code, NetErrc::kNoSpace);
  EXPECT_EQ(build_ipv4(small, Ipv4Fields{}, 21).error().code, NetErrc::kNoSpace);
  EXPECT_EQ(build_ipv4(small, Ipv4Fields{}, 65516).error().code, NetErrc::kBadLength);
  EXPECT_EQ(build_udp(small, UdpFields{}, 33).error().code, NetErrc::kNoSpace);
  EXPECT_EQ(build_icmp_echo(small, kIcmpEchoRequest, 1, 1, std::span(small).first(33)).error().code,
            NetErrc::kNoSpace);
  EXPECT_EQ(build_icmp_echo(small, kIcmpDestUnreachable, 1, 1, {}).error().code, NetErrc::kMalformed);
  EXPECT_EQ(build_udp_frame(small, eth, Ipv4Fields{}, 1, 2, std::span(small).first(0)).error().code,
            NetErrc::kNoSpace);
  // An ARP reply frame built from parts round-trips.
  std::array<uint8_t, 64> frame{};
  auto n = build_arp(std::span(frame).subspan(14), Arp{ArpOp::kReply, kRouterMac, kRouter, kGuestMac, kGuest});
  ASSERT_TRUE(n.ok());
  auto len = build_ethernet(frame, EthernetFields{kGuestMac, kRouterMac, kEtherTypeArp, std::nullopt}, *n);
  ASSERT_TRUE(len.ok());
  auto f = parse_frame(std::span(frame).first(*len));
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->arp->op, ArpOp::kReply);
  EXPECT_EQ(f->arp->sender_ip, kRouter);
}

}  // namespace
}  // namespace azote::net
