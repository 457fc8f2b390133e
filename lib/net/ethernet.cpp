#include "net/ethernet.hpp"

#include "net/wire.hpp"

namespace azote::net {

Result<EthernetView, NetError> parse_ethernet(std::span<const uint8_t> frame) {
  if (frame.size() < kEthernetHeaderLen) return make_error(NetErrc::kTruncated, "ethernet header");
  EthernetView v;
  v.dst = MacAddress::from_bytes(frame.subspan(0, 6));
  v.src = MacAddress::from_bytes(frame.subspan(6, 6));
  uint16_t type = wire::be16(frame, 12);
  size_t len = kEthernetHeaderLen;
  if (type == kEtherTypeQinQ) return make_error(NetErrc::kUnsupported, "802.1ad tag");
  if (type == kEtherTypeVlan) {
    if (frame.size() < kEthernetHeaderLen + kVlanTagLen) return make_error(NetErrc::kTruncated, "802.1Q tag");
    v.vlan = VlanTag::from_tci(wire::be16(frame, 14));
    type = wire::be16(frame, 16);
    len += kVlanTagLen;
    if (type == kEtherTypeVlan || type == kEtherTypeQinQ) return make_error(NetErrc::kUnsupported, "stacked VLAN tags");
  }
  if (type < 0x0600) return make_error(NetErrc::kUnsupported, "802.3 length field");
  v.ethertype = type;
  v.header_len = len;
  v.payload = frame.subspan(len);
  return v;
}

Result<size_t, NetError> build_ethernet(std::span<uint8_t> out, const EthernetFields& f, size_t payload_len) {
  const size_t hdr = ethernet_header_len(f);
  if (out.size() < hdr || out.size() - hdr < payload_len) return make_error(NetErrc::kNoSpace, "ethernet frame");
  f.dst.store(out.subspan(0, 6));
  f.src.store(out.subspan(6, 6));
  size_t at = 12;
  if (f.vlan) {
    wire::put16(out, at, kEtherTypeVlan);
    wire::put16(out, at + 2, f.vlan->tci());
    at += 4;
  }
  wire::put16(out, at, f.ethertype);
  return hdr + payload_len;
}

}  // namespace azote::net
