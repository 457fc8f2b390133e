// TCP/IPv4 packets for the imds tests and the fuzz seeds' checks, built with lib/net.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "net/checksum.hpp"
#include "net/ipv4.hpp"
#include "net/wire.hpp"

namespace azote::imds::testing {

struct Segment {
  net::Ipv4Address src;
  net::Ipv4Address dst;
  uint16_t src_port = 40000;
  uint16_t dst_port = 80;
  uint32_t seq = 0x01020304;
  uint16_t flags = 0x002;  // SYN
  uint8_t ttl = 64;
  uint8_t protocol = 6;
  std::vector<uint8_t> tcp_options;  // a multiple of 4
  std::vector<uint8_t> payload;
};

inline std::vector<uint8_t> tcp_packet(const Segment& s) {
  const size_t tcp_len = 20 + s.tcp_options.size() + s.payload.size();
  std::vector<uint8_t> p(20 + tcp_len);
  auto seg = std::span<uint8_t>(p).subspan(20);
  net::wire::put16(seg, 0, s.src_port);
  net::wire::put16(seg, 2, s.dst_port);
  net::wire::put32(seg, 4, s.seq);
  net::wire::put32(seg, 8, 0);
  net::wire::put16(seg, 12, static_cast<uint16_t>(((20 + s.tcp_options.size()) / 4) << 12 | s.flags));
  net::wire::put16(seg, 14, 64240);
  std::copy(s.tcp_options.begin(), s.tcp_options.end(), seg.begin() + 20);
  std::copy(s.payload.begin(), s.payload.end(), seg.begin() + 20 + static_cast<long>(s.tcp_options.size()));
  auto sum = net::ipv4_pseudo_header(s.src, s.dst, s.protocol, static_cast<uint16_t>(tcp_len));
  net::wire::put16(seg, 16, sum.add(seg).finish());
  net::Ipv4Fields f;
  f.src = s.src;
  f.dst = s.dst;
  f.protocol = s.protocol;
  f.ttl = s.ttl;
  f.id = 0x1234;
  (void)net::build_ipv4(p, f, tcp_len);
  return p;
}

}  // namespace azote::imds::testing
