#include "net/arp.hpp"

#include "net/ethernet.hpp"
#include "net/wire.hpp"

namespace azote::net {

Result<Arp, NetError> parse_arp(std::span<const uint8_t> p) {
  if (p.size() < kArpLen) return make_error(NetErrc::kTruncated, "ARP packet");
  if (wire::be16(p, 0) != 1 || wire::u8(p, 4) != 6) return make_error(NetErrc::kUnsupported, "ARP hardware type");
  if (wire::be16(p, 2) != kEtherTypeIpv4 || wire::u8(p, 5) != 4) {
    return make_error(NetErrc::kUnsupported, "ARP protocol type");
  }
  const uint16_t op = wire::be16(p, 6);
  if (op != 1 && op != 2) return make_error(NetErrc::kUnsupported, "ARP operation");
  Arp a;
  a.op = static_cast<ArpOp>(op);
  a.sender_mac = MacAddress::from_bytes(p.subspan(8, 6));
  a.sender_ip = Ipv4Address::from_bytes(p.subspan(14, 4));
  a.target_mac = MacAddress::from_bytes(p.subspan(18, 6));
  a.target_ip = Ipv4Address::from_bytes(p.subspan(24, 4));
  return a;
}

Result<size_t, NetError> build_arp(std::span<uint8_t> out, const Arp& a) {
  if (out.size() < kArpLen) return make_error(NetErrc::kNoSpace, "ARP packet");
  wire::put16(out, 0, 1);
  wire::put16(out, 2, kEtherTypeIpv4);
  wire::put8(out, 4, 6);
  wire::put8(out, 5, 4);
  wire::put16(out, 6, static_cast<uint16_t>(a.op));
  a.sender_mac.store(out.subspan(8, 6));
  a.sender_ip.store(out.subspan(14, 4));
  a.target_mac.store(out.subspan(18, 6));
  a.target_ip.store(out.subspan(24, 4));
  return kArpLen;
}

Arp arp_reply(const Arp& request, MacAddress owner_mac) {
  return Arp{ArpOp::kReply, owner_mac, request.target_ip, request.sender_mac, request.sender_ip};
}

}  // namespace azote::net
