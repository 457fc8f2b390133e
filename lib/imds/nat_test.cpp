// The NAT between a guest and the private namespace: rewrites keep both checksums exactly
// what a full recomputation gives, and whatever is not TCP to 169.254.169.254:80 from the
// ENI (or, back, from 169.254.169.254:80 to an alias) is refused with its reason.
#include <gtest/gtest.h>

#include "imds/nat.hpp"
#include "imds/test_packets.hpp"
#include "net/l4.hpp"

namespace azote::imds {
namespace {

using testing::Segment;
using testing::tcp_packet;

const net::Ipv4Address kEni(10, 0, 1, 5);

Segment seg(net::Ipv4Address src, net::Ipv4Address dst) {
  Segment s;
  s.src = src;
  s.dst = dst;
  return s;
}

// Both checksums of `p`, recomputed from scratch (fields zeroed first).
std::pair<uint16_t, uint16_t> full_checksums(std::vector<uint8_t> p) {
  const size_t ihl = size_t{p[0] & 0x0fu} * 4;
  auto bytes = std::span<uint8_t>(p);
  net::wire::put16(bytes, 10, 0);
  const uint16_t ip = net::internet_checksum(bytes.first(ihl));
  auto l4 = bytes.subspan(ihl);
  net::wire::put16(l4, 16, 0);
  const auto src = net::Ipv4Address::from_bytes(bytes.subspan(12));
  const auto dst = net::Ipv4Address::from_bytes(bytes.subspan(16));
  const uint16_t tcp = net::ipv4_pseudo_header(src, dst, 6, static_cast<uint16_t>(l4.size())).add(l4).finish();
  return {ip, tcp};
}
std::pair<uint16_t, uint16_t> stored_checksums(std::span<const uint8_t> p) {
  const size_t ihl = size_t{p[0] & 0x0fu} * 4;
  return {net::wire::be16(p, 10), net::wire::be16(p, ihl + 16)};
}

TEST(Nat, AliasesMapToSlotsAndBack) {
  EXPECT_EQ(alias_of(0), net::Ipv4Address(100, 64, 0, 1));
  EXPECT_EQ(alias_of(255), net::Ipv4Address(100, 64, 1, 0));
  EXPECT_EQ(alias_of(kMaxSlots - 1), net::Ipv4Address(100, 127, 255, 254));
  for (uint32_t s : {0u, 1u, 254u, 255u, 65535u, kMaxSlots - 1}) EXPECT_EQ(slot_of(alias_of(s)), s);
  EXPECT_FALSE(slot_of(net::Ipv4Address(100, 64, 0, 0)));
  EXPECT_FALSE(slot_of(net::Ipv4Address(100, 127, 255, 255)));
  EXPECT_FALSE(slot_of(net::Ipv4Address(100, 128, 0, 1)));
  EXPECT_FALSE(slot_of(net::Ipv4Address(10, 0, 1, 5)));
}

TEST(Nat, InboundRewritesSourceWithExactChecksums) {
  // Many addresses, ports and payload shapes (odd lengths, options): the incremental
  // update always equals the full recomputation.
  uint32_t seed = 12345;
  auto next = [&seed] { return seed = seed * 1103515245 + 12345; };
  for (int i = 0; i < 2000; ++i) {
    Segment s;
    s.src = net::Ipv4Address::from_u32(0x0a000000 | (next() & 0xffffff));
    s.dst = kImdsAddress;
    s.src_port = static_cast<uint16_t>(next());
    s.seq = next();
    s.flags = static_cast<uint16_t>(next() & 0x1ff);
    s.ttl = static_cast<uint8_t>(next() | 1);
    if (i % 3 == 0) s.tcp_options = {2, 4, 0x05, 0xb4, 1, 1, 4, 2};  // MSS, NOP, NOP, SACK-permitted
    s.payload.resize(next() % 700);
    for (auto& b : s.payload) b = static_cast<uint8_t>(next() >> 8);
    const auto in = tcp_packet(s);
    const uint32_t slot = next() % 100000;
    std::vector<uint8_t> out(kMtu);
    auto n = nat_inbound(in, out, s.src, alias_of(slot));
    ASSERT_TRUE(n.ok()) << to_string(n.error());
    ASSERT_EQ(*n, in.size());
    out.resize(*n);
    EXPECT_EQ(stored_checksums(out), full_checksums(out)) << i;
    auto ip = net::parse_ipv4(out);
    ASSERT_TRUE(ip.ok());
    EXPECT_EQ(ip->src, alias_of(slot));
    EXPECT_EQ(ip->dst, kImdsAddress);
    EXPECT_EQ(ip->ttl, s.ttl);  // inbound keeps the guest's TTL
    auto tcp = net::parse_tcp(*ip);
    ASSERT_TRUE(tcp.ok());
    EXPECT_EQ(tcp->seq, s.seq);
    EXPECT_TRUE(std::equal(tcp->payload.begin(), tcp->payload.end(), s.payload.begin(), s.payload.end()));
  }
}

TEST(Nat, InboundIgnoresLinkPadding) {
  auto in = tcp_packet(seg(kEni, kImdsAddress));
  const size_t len = in.size();
  in.resize(len + 6, 0);  // an Ethernet minimum frame's padding
  std::vector<uint8_t> out(kMtu);
  auto n = nat_inbound(in, out, kEni, alias_of(0));
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, len);
}

TEST(Nat, OutboundRewritesDestinationAndTtlWithExactChecksums) {
  for (uint8_t ttl : {uint8_t{1}, uint8_t{64}, uint8_t{255}}) {
    for (uint32_t slot : {0u, 3u, 70000u}) {
      Segment s;
      s.src = kImdsAddress;
      s.dst = alias_of(slot);
      s.src_port = 80;
      s.dst_port = 51234;
      s.flags = 0x018;
      s.ttl = ttl;
      s.payload.assign(333, 'x');
      auto p = tcp_packet(s);
      auto o = nat_outbound_parse(p);
      ASSERT_TRUE(o.ok()) << to_string(o.error());
      EXPECT_EQ(o->slot, slot);
      EXPECT_EQ(o->length, p.size());
      EXPECT_EQ(nat_outbound_rewrite(p, kEni), ttl != 1);
      EXPECT_EQ(stored_checksums(p), full_checksums(p));
      auto ip = net::parse_ipv4(p);
      ASSERT_TRUE(ip.ok());
      EXPECT_EQ(ip->dst, kEni);
      EXPECT_EQ(ip->src, kImdsAddress);
      EXPECT_EQ(ip->ttl, 1);
      EXPECT_TRUE(net::parse_tcp(*ip).ok());
    }
  }
}

Drop inbound_drop(const std::vector<uint8_t>& in, net::Ipv4Address eni = kEni) {
  std::vector<uint8_t> out(kMtu);
  auto n = nat_inbound(in, out, eni, alias_of(0));
  EXPECT_FALSE(n.ok());
  return n.ok() ? Drop::kIoError : n.error();
}

TEST(Nat, InboundRefusesWhatIsNotTcpToPort80FromTheEni) {
  const auto good = tcp_packet(seg(kEni, kImdsAddress));
  EXPECT_EQ(inbound_drop(good, net::Ipv4Address(10, 0, 1, 6)), Drop::kWrongSource);
  Segment s = seg(kEni, kImdsAddress);
  s.dst_port = 443;
  EXPECT_EQ(inbound_drop(tcp_packet(s)), Drop::kWrongPort);
  s = seg(kEni, net::Ipv4Address(169, 254, 169, 253));
  EXPECT_EQ(inbound_drop(tcp_packet(s)), Drop::kWrongAddress);
  s = seg(kEni, kImdsAddress);
  s.protocol = 17;  // a UDP datagram would not parse as TCP anyway: checked before
  EXPECT_EQ(inbound_drop(tcp_packet(s)), Drop::kNotTcp);
  s.protocol = 6;
  s.payload.assign(kMtu, 'x');  // 1540 bytes
  EXPECT_EQ(inbound_drop(tcp_packet(s)), Drop::kTooBig);

  // Malformed: every truncation, a bad IP checksum, a bad TCP checksum, IHL < 5, version 6.
  for (size_t n = 0; n < good.size(); ++n) {
    EXPECT_EQ(inbound_drop(std::vector<uint8_t>(good.begin(), good.begin() + static_cast<long>(n))), Drop::kMalformed)
        << n;
  }
  auto bad = good;
  bad[10] ^= 1;
  EXPECT_EQ(inbound_drop(bad), Drop::kMalformed);
  bad = good;
  bad[20 + 16] ^= 1;
  EXPECT_EQ(inbound_drop(bad), Drop::kMalformed);
  bad = good;
  bad[good.size() - 1] ^= 0x40;  // any byte of the segment
  EXPECT_EQ(inbound_drop(bad), Drop::kMalformed);
  bad = good;
  bad[0] = 0x44;
  EXPECT_EQ(inbound_drop(bad), Drop::kMalformed);
  bad = good;
  bad[0] = 0x65;
  EXPECT_EQ(inbound_drop(bad), Drop::kMalformed);

  // A fragment (MF set), with a valid header checksum.
  auto frag = good;
  net::wire::put16(frag, 6, 0x2000);
  net::wire::put16(frag, 10, 0);
  net::wire::put16(frag, 10, net::internet_checksum(std::span<const uint8_t>(frag).first(20)));
  EXPECT_EQ(inbound_drop(frag), Drop::kFragment);

  // IPv4 options (a record-route): refused.
  std::vector<uint8_t> opt(good.size() + 4);
  for (size_t i = 0; i < good.size(); ++i) opt[i < 20 ? i : i + 4] = good[i];
  opt[20] = 7;  // record route, length 4, pointer 4: no room for any address
  opt[21] = 4;
  opt[22] = 4;
  opt[23] = 0;
  opt[0] = 0x46;
  net::wire::put16(opt, 2, static_cast<uint16_t>(opt.size()));
  net::wire::put16(opt, 10, 0);
  net::wire::put16(opt, 10, net::internet_checksum(std::span<const uint8_t>(opt).first(24)));
  EXPECT_EQ(inbound_drop(opt), Drop::kOptions);

  std::vector<uint8_t> small(10);
  EXPECT_FALSE(nat_inbound(good, small, kEni, alias_of(0)).ok());
}

TEST(Nat, OutboundRefusesAnythingButReplies) {
  Segment s = seg(kImdsAddress, alias_of(1));
  s.src_port = 80;
  s.dst_port = 40000;
  ASSERT_TRUE(nat_outbound_parse(tcp_packet(s)).ok());
  Segment t = s;
  t.src_port = 81;
  EXPECT_EQ(nat_outbound_parse(tcp_packet(t)).error(), Drop::kWrongPort);
  t = s;
  t.dst = net::Ipv4Address(10, 0, 1, 5);
  EXPECT_EQ(nat_outbound_parse(tcp_packet(t)).error(), Drop::kWrongAddress);
  t = s;
  t.dst = net::Ipv4Address(100, 64, 0, 0);
  EXPECT_EQ(nat_outbound_parse(tcp_packet(t)).error(), Drop::kWrongAddress);
  t = s;
  t.src = net::Ipv4Address(169, 254, 169, 1);
  EXPECT_EQ(nat_outbound_parse(tcp_packet(t)).error(), Drop::kWrongAddress);
  t = s;
  t.protocol = 1;
  EXPECT_EQ(nat_outbound_parse(tcp_packet(t)).error(), Drop::kNotTcp);
  const std::vector<uint8_t> v6 = {0x60, 0, 0, 0, 0, 0, 58, 255};
  EXPECT_EQ(nat_outbound_parse(v6).error(), Drop::kNotIpv4);
  EXPECT_EQ(nat_outbound_parse({}).error(), Drop::kNotIpv4);
  auto p = tcp_packet(s);
  p[p.size() - 1] ^= 1;
  EXPECT_EQ(nat_outbound_parse(p).error(), Drop::kMalformed);
}

}  // namespace
}  // namespace azote::imds
