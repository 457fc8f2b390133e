// Frames a guest would send, built with lib/net, for the card's unit and integration
// tests (header-only; needs azote_net).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "net/arp.hpp"
#include "net/dhcp.hpp"
#include "net/dns.hpp"
#include "net/ethernet.hpp"
#include "net/frame.hpp"
#include "net/ipv4.hpp"
#include "net/l4.hpp"

namespace azote::card_net::testing {

struct Guest {
  net::MacAddress mac;
  net::Ipv4Address ip;
  net::MacAddress gateway_mac;  // learnt from ARP (the card's: 02:a2 + subnet)
};

inline std::vector<uint8_t> udp(const Guest& g, net::Ipv4Address src, net::Ipv4Address dst, uint16_t sport,
                                uint16_t dport, std::span<const uint8_t> payload, net::MacAddress eth_src = {},
                                uint8_t ttl = 64) {
  std::vector<uint8_t> out(1600);
  net::Ipv4Fields f{src, dst, net::kIpProtoUdp, ttl, 0, 0, true};
  auto n = net::build_udp_frame(out, {g.gateway_mac, eth_src.is_zero() ? g.mac : eth_src, net::kEtherTypeIpv4, {}}, f,
                                sport, dport, payload);
  out.resize(n ? *n : 0);
  return out;
}

inline std::vector<uint8_t> arp_request(const Guest& g, net::Ipv4Address target) {
  std::vector<uint8_t> out(64);
  net::Arp a{net::ArpOp::kRequest, g.mac, g.ip, net::MacAddress(), target};
  (void)net::build_arp(std::span(out).subspan(net::kEthernetHeaderLen), a);
  auto n = net::build_ethernet(out, {net::MacAddress::broadcast(), g.mac, net::kEtherTypeArp, {}}, net::kArpLen);
  out.resize(n ? *n : 0);
  return out;
}

inline std::vector<uint8_t> ping(const Guest& g, net::Ipv4Address dst, uint16_t id, uint16_t seq) {
  std::vector<uint8_t> out(256);
  const uint8_t data[] = {'a', 'z', 'o', 't', 'e', '!', 0, 1};
  constexpr size_t at = net::kEthernetHeaderLen + net::kIpv4HeaderLen;
  auto m = net::build_icmp_echo(std::span(out).subspan(at), net::kIcmpEchoRequest, id, seq, data);
  net::Ipv4Fields f{g.ip, dst, net::kIpProtoIcmp, 64, 0, 0, true};
  auto n = net::build_ipv4_frame(out, {g.gateway_mac, g.mac, net::kEtherTypeIpv4, {}}, f,
                                 std::span(out).subspan(at, m ? *m : 0));
  out.resize(n ? *n : 0);
  return out;
}

// DHCPDISCOVER (broadcast, from 0.0.0.0), as a client without an address sends it.
inline std::vector<uint8_t> dhcp_discover(const Guest& g, uint32_t xid) {
  std::vector<uint8_t> p(300, 0);
  p[0] = 1;  // BOOTREQUEST
  p[1] = 1;
  p[2] = 6;
  p[4] = static_cast<uint8_t>(xid >> 24);
  p[5] = static_cast<uint8_t>(xid >> 16);
  p[6] = static_cast<uint8_t>(xid >> 8);
  p[7] = static_cast<uint8_t>(xid);
  g.mac.store(std::span(p).subspan(28, 6));
  const uint8_t tail[] = {0x63, 0x82, 0x53, 0x63, 53, 1, 1, 55, 4, 1, 3, 6, 26, 255};
  std::copy(std::begin(tail), std::end(tail), p.begin() + 236);
  Guest b = g;
  b.gateway_mac = net::MacAddress::broadcast();
  return udp(b, net::Ipv4Address::any(), net::Ipv4Address::broadcast(), net::kDhcpClientPort, net::kDhcpServerPort, p);
}

// A standard query with one question.
inline std::vector<uint8_t> dns_query(uint16_t id, const std::string& name, uint16_t qtype = net::kDnsTypeA) {
  std::vector<uint8_t> q = {static_cast<uint8_t>(id >> 8), static_cast<uint8_t>(id), 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0};
  size_t start = 0;
  while (start <= name.size()) {
    size_t dot = name.find('.', start);
    if (dot == std::string::npos) dot = name.size();
    q.push_back(static_cast<uint8_t>(dot - start));
    q.insert(q.end(), name.begin() + static_cast<long>(start), name.begin() + static_cast<long>(dot));
    start = dot + 1;
  }
  q.push_back(0);
  q.insert(q.end(), {static_cast<uint8_t>(qtype >> 8), static_cast<uint8_t>(qtype), 0, 1});
  return q;
}

// The A records and rcode of a DNS response (enough for the tests).
struct DnsResult {
  uint16_t id = 0;
  uint8_t rcode = 0xff;
  std::vector<net::Ipv4Address> a;
};
inline DnsResult parse_dns_response(std::span<const uint8_t> m) {
  DnsResult r;
  if (m.size() < 12) return r;
  r.id = static_cast<uint16_t>(m[0] << 8 | m[1]);
  r.rcode = m[3] & 0x0f;
  const unsigned an = static_cast<unsigned>(m[6] << 8 | m[7]);
  auto q = net::decode_name(m, 12);
  if (!q) return r;
  size_t at = q->next + 4;
  for (unsigned i = 0; i < an; ++i) {
    auto n = net::decode_name(m, at);
    if (!n || n->next + 10 > m.size()) return r;
    at = n->next;
    const unsigned type = static_cast<unsigned>(m[at] << 8 | m[at + 1]);
    const size_t rdlen = static_cast<size_t>(m[at + 8] << 8 | m[at + 9]);
    at += 10;
    if (at + rdlen > m.size()) return r;
    if (type == net::kDnsTypeA && rdlen == 4) r.a.push_back(net::Ipv4Address::from_bytes(m.subspan(at, 4)));
    at += rdlen;
  }
  return r;
}

}  // namespace azote::card_net::testing
