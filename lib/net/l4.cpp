#include "net/l4.hpp"

#include <cstring>

#include "net/checksum.hpp"
#include "net/wire.hpp"

namespace azote::net {
namespace {

Result<void, NetError> whole_packet(const Ipv4View& ip, uint8_t protocol) {
  if (ip.protocol != protocol) return make_error(NetErrc::kUnsupported, "IP protocol");
  if (ip.is_fragment()) return make_error(NetErrc::kFragment, "IPv4 fragment");
  return {};
}

bool pseudo_checksum_ok(std::span<const uint8_t> bytes, Ipv4Address src, Ipv4Address dst, uint8_t protocol) {
  return ipv4_pseudo_header(src, dst, protocol, static_cast<uint16_t>(bytes.size())).add(bytes).sum() == 0xffff;
}

}  // namespace

// ---- UDP

Result<UdpView, NetError> parse_udp(std::span<const uint8_t> d, Ipv4Address src, Ipv4Address dst, L4Checksum mode) {
  if (d.size() < kUdpHeaderLen) return make_error(NetErrc::kTruncated, "UDP header");
  UdpView v;
  v.src_port = wire::be16(d, 0);
  v.dst_port = wire::be16(d, 2);
  v.length = wire::be16(d, 4);
  v.checksum = wire::be16(d, 6);
  if (v.length < kUdpHeaderLen) return make_error(NetErrc::kBadLength, "UDP length < 8");
  if (d.size() < v.length) return make_error(NetErrc::kTruncated, "UDP length");
  if (d.size() > v.length) return make_error(NetErrc::kBadLength, "UDP length < IP payload");
  if (mode == L4Checksum::kVerify && v.checksum != 0 && !pseudo_checksum_ok(d, src, dst, kIpProtoUdp)) {
    return make_error(NetErrc::kBadChecksum, "UDP checksum");
  }
  v.payload = d.subspan(kUdpHeaderLen);
  return v;
}

Result<UdpView, NetError> parse_udp(const Ipv4View& ip, L4Checksum mode) {
  AZOTE_TRYV(whole_packet(ip, kIpProtoUdp));
  return parse_udp(ip.payload, ip.src, ip.dst, mode);
}

Result<size_t, NetError> build_udp(std::span<uint8_t> out, const UdpFields& f, size_t payload_len) {
  if (payload_len > kIpv4MaxLen - kIpv4HeaderLen - kUdpHeaderLen) return make_error(NetErrc::kBadLength, "UDP datagram");
  const size_t len = kUdpHeaderLen + payload_len;
  if (out.size() < len) return make_error(NetErrc::kNoSpace, "UDP datagram");
  wire::put16(out, 0, f.src_port);
  wire::put16(out, 2, f.dst_port);
  wire::put16(out, 4, static_cast<uint16_t>(len));
  wire::put16(out, 6, 0);
  const uint16_t c =
      ipv4_pseudo_header(f.src, f.dst, kIpProtoUdp, static_cast<uint16_t>(len)).add(out.subspan(0, len)).finish();
  wire::put16(out, 6, udp_checksum_field(c));
  return len;
}

// ---- TCP

Result<TcpView, NetError> parse_tcp(std::span<const uint8_t> s, Ipv4Address src, Ipv4Address dst, L4Checksum mode) {
  if (s.size() < kTcpHeaderLen) return make_error(NetErrc::kTruncated, "TCP header");
  TcpView v;
  v.header_len = static_cast<size_t>(wire::u8(s, 12) >> 4) * 4;
  if (v.header_len < kTcpHeaderLen) return make_error(NetErrc::kBadLength, "TCP data offset < 5");
  if (s.size() < v.header_len) return make_error(NetErrc::kTruncated, "TCP options");
  if (s.size() > kIpv4MaxLen) return make_error(NetErrc::kBadLength, "TCP segment over 65535");
  if (mode == L4Checksum::kVerify && !pseudo_checksum_ok(s, src, dst, kIpProtoTcp)) {
    return make_error(NetErrc::kBadChecksum, "TCP checksum");
  }
  v.src_port = wire::be16(s, 0);
  v.dst_port = wire::be16(s, 2);
  v.seq = wire::be32(s, 4);
  v.ack = wire::be32(s, 8);
  v.flags = static_cast<uint16_t>(wire::be16(s, 12) & 0x1ff);
  v.window = wire::be16(s, 14);
  v.checksum = wire::be16(s, 16);
  v.urgent = wire::be16(s, 18);
  v.options = s.subspan(kTcpHeaderLen, v.header_len - kTcpHeaderLen);
  v.payload = s.subspan(v.header_len);
  return v;
}

Result<TcpView, NetError> parse_tcp(const Ipv4View& ip, L4Checksum mode) {
  AZOTE_TRYV(whole_packet(ip, kIpProtoTcp));
  return parse_tcp(ip.payload, ip.src, ip.dst, mode);
}

// ---- ICMP

Result<IcmpView, NetError> parse_icmp(std::span<const uint8_t> m, L4Checksum mode) {
  if (m.size() < kIcmpHeaderLen) return make_error(NetErrc::kTruncated, "ICMP header");
  IcmpView v;
  v.type = wire::u8(m, 0);
  v.code = wire::u8(m, 1);
  v.checksum = wire::be16(m, 2);
  v.rest = wire::be32(m, 4);
  v.body = m.subspan(kIcmpHeaderLen);
  if (mode == L4Checksum::kVerify && !checksum_ok(m)) return make_error(NetErrc::kBadChecksum, "ICMP checksum");
  switch (v.type) {
    case kIcmpEchoRequest:
    case kIcmpEchoReply:
      if (v.code != 0) return make_error(NetErrc::kMalformed, "ICMP echo code");
      break;
    case kIcmpDestUnreachable:
      if (v.code > 15) return make_error(NetErrc::kMalformed, "ICMP unreachable code");
      if (v.body.size() < kIpv4HeaderLen) return make_error(NetErrc::kMalformed, "ICMP unreachable quote");
      break;
    default:
      break;
  }
  return v;
}

Result<IcmpView, NetError> parse_icmp(const Ipv4View& ip, L4Checksum mode) {
  AZOTE_TRYV(whole_packet(ip, kIpProtoIcmp));
  return parse_icmp(ip.payload, mode);
}

namespace {

// Header with `type`, `code`, `rest` and the checksum over out[0, len); body already in place.
size_t finish_icmp(std::span<uint8_t> out, uint8_t type, uint8_t code, uint32_t rest, size_t len) {
  wire::put8(out, 0, type);
  wire::put8(out, 1, code);
  wire::put16(out, 2, 0);
  wire::put32(out, 4, rest);
  wire::put16(out, 2, internet_checksum(out.subspan(0, len)));
  return len;
}

}  // namespace

Result<size_t, NetError> build_icmp_echo(std::span<uint8_t> out, uint8_t type, uint16_t id, uint16_t seq,
                                         std::span<const uint8_t> data) {
  if (type != kIcmpEchoRequest && type != kIcmpEchoReply) return make_error(NetErrc::kMalformed, "ICMP echo type");
  if (data.size() > kIpv4MaxLen - kIpv4HeaderLen - kIcmpHeaderLen) return make_error(NetErrc::kBadLength, "ICMP echo");
  const size_t len = kIcmpHeaderLen + data.size();
  if (out.size() < len) return make_error(NetErrc::kNoSpace, "ICMP echo");
  if (!data.empty()) std::memmove(out.data() + kIcmpHeaderLen, data.data(), data.size());
  return finish_icmp(out, type, 0, uint32_t{id} << 16 | seq, len);
}

Result<size_t, NetError> build_icmp_echo_reply(std::span<uint8_t> out, const IcmpView& request) {
  return build_icmp_echo(out, kIcmpEchoReply, request.echo_id(), request.echo_seq(), request.body);
}

Result<size_t, NetError> build_icmp_dest_unreachable(std::span<uint8_t> out, uint8_t code,
                                                     std::span<const uint8_t> offending, uint16_t next_hop_mtu) {
  if (code > 15) return make_error(NetErrc::kMalformed, "ICMP unreachable code");
  if (offending.size() < kIpv4HeaderLen) return make_error(NetErrc::kMalformed, "ICMP quote shorter than IPv4 header");
  const size_t quote = offending.size() < kIcmpMaxQuote ? offending.size() : kIcmpMaxQuote;
  const size_t len = kIcmpHeaderLen + quote;
  if (out.size() < len) return make_error(NetErrc::kNoSpace, "ICMP unreachable");
  std::memmove(out.data() + kIcmpHeaderLen, offending.data(), quote);
  return finish_icmp(out, kIcmpDestUnreachable, code, code == kIcmpFragNeeded ? next_hop_mtu : 0, len);
}

}  // namespace azote::net
