#include "net/frame.hpp"

#include <cstring>

namespace azote::net {

Result<Frame, NetError> parse_frame(std::span<const uint8_t> bytes, L4Checksum mode) {
  AZOTE_TRY(eth, parse_ethernet(bytes));
  Frame f;
  f.eth = eth;
  if (eth.ethertype == kEtherTypeArp) {
    AZOTE_TRY(arp, parse_arp(eth.payload));
    f.arp = arp;
    return f;
  }
  if (eth.ethertype != kEtherTypeIpv4) return make_error(NetErrc::kUnsupported, "ethertype");
  AZOTE_TRY(ip, parse_ipv4(eth.payload));
  f.ip = ip;
  if (ip.is_fragment()) return f;
  switch (ip.protocol) {
    case kIpProtoUdp: {
      AZOTE_TRY(udp, parse_udp(ip, mode));
      f.l4 = udp;
      break;
    }
    case kIpProtoTcp: {
      AZOTE_TRY(tcp, parse_tcp(ip, mode));
      f.l4 = tcp;
      break;
    }
    case kIpProtoIcmp: {
      AZOTE_TRY(icmp, parse_icmp(ip, L4Checksum::kVerify));
      f.l4 = icmp;
      break;
    }
    default:
      break;
  }
  return f;
}

Result<size_t, NetError> build_ipv4_frame(std::span<uint8_t> out, const EthernetFields& eth, const Ipv4Fields& ip,
                                          std::span<const uint8_t> payload) {
  const size_t eth_len = ethernet_header_len(eth);
  const size_t at = eth_len + kIpv4HeaderLen;
  if (payload.size() > kIpv4MaxLen - kIpv4HeaderLen) return make_error(NetErrc::kBadLength, "IPv4 packet over 65535");
  if (out.size() < at || out.size() - at < payload.size()) return make_error(NetErrc::kNoSpace, "IPv4 frame");
  if (!payload.empty()) std::memmove(out.data() + at, payload.data(), payload.size());
  AZOTE_TRY(ip_len, build_ipv4(out.subspan(eth_len), ip, payload.size()));
  return build_ethernet(out, EthernetFields{eth.dst, eth.src, kEtherTypeIpv4, eth.vlan}, ip_len);
}

Result<size_t, NetError> build_udp_frame(std::span<uint8_t> out, const EthernetFields& eth, const Ipv4Fields& ip,
                                         uint16_t src_port, uint16_t dst_port, std::span<const uint8_t> payload) {
  const size_t eth_len = ethernet_header_len(eth);
  const size_t at = eth_len + kIpv4HeaderLen + kUdpHeaderLen;
  if (payload.size() > kIpv4MaxLen - kIpv4HeaderLen - kUdpHeaderLen) return make_error(NetErrc::kBadLength, "UDP datagram");
  if (out.size() < at || out.size() - at < payload.size()) return make_error(NetErrc::kNoSpace, "UDP frame");
  if (!payload.empty()) std::memmove(out.data() + at, payload.data(), payload.size());
  AZOTE_TRY(udp_len, build_udp(out.subspan(eth_len + kIpv4HeaderLen), UdpFields{ip.src, ip.dst, src_port, dst_port},
                               payload.size()));
  Ipv4Fields f = ip;
  f.protocol = kIpProtoUdp;
  AZOTE_TRY(ip_len, build_ipv4(out.subspan(eth_len), f, udp_len));
  return build_ethernet(out, EthernetFields{eth.dst, eth.src, kEtherTypeIpv4, eth.vlan}, ip_len);
}

}  // namespace azote::net
