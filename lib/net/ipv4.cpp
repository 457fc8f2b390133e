#include "net/ipv4.hpp"

#include "net/checksum.hpp"
#include "net/wire.hpp"

namespace azote::net {

Result<Ipv4View, NetError> parse_ipv4(std::span<const uint8_t> p) {
  if (p.size() < kIpv4HeaderLen) return make_error(NetErrc::kTruncated, "IPv4 header");
  const uint8_t vihl = wire::u8(p, 0);
  if (vihl >> 4 != 4) return make_error(NetErrc::kUnsupported, "IP version");
  Ipv4View v;
  v.header_len = size_t{vihl & 0xfu} * 4;
  if (v.header_len < kIpv4HeaderLen) return make_error(NetErrc::kBadLength, "IPv4 IHL < 5");
  if (p.size() < v.header_len) return make_error(NetErrc::kTruncated, "IPv4 options");
  v.total_len = wire::be16(p, 2);
  if (v.total_len < v.header_len) return make_error(NetErrc::kBadLength, "IPv4 total length < header");
  if (p.size() < v.total_len) return make_error(NetErrc::kTruncated, "IPv4 total length");
  v.header = p.subspan(0, v.header_len);
  if (!checksum_ok(v.header)) return make_error(NetErrc::kBadChecksum, "IPv4 header checksum");
  const uint16_t frag = wire::be16(p, 6);
  if (frag & 0x8000) return make_error(NetErrc::kMalformed, "IPv4 reserved flag");
  v.tos = wire::u8(p, 1);
  v.id = wire::be16(p, 4);
  v.dont_fragment = (frag & 0x4000) != 0;
  v.more_fragments = (frag & 0x2000) != 0;
  v.fragment_offset = static_cast<uint16_t>((frag & 0x1fff) * 8);
  v.ttl = wire::u8(p, 8);
  v.protocol = wire::u8(p, 9);
  v.checksum = wire::be16(p, 10);
  v.src = Ipv4Address::from_bytes(p.subspan(12, 4));
  v.dst = Ipv4Address::from_bytes(p.subspan(16, 4));
  v.options = p.subspan(kIpv4HeaderLen, v.header_len - kIpv4HeaderLen);
  v.payload = p.subspan(v.header_len, v.total_len - v.header_len);
  return v;
}

Result<size_t, NetError> build_ipv4(std::span<uint8_t> out, const Ipv4Fields& f, size_t payload_len) {
  if (payload_len > kIpv4MaxLen - kIpv4HeaderLen) return make_error(NetErrc::kBadLength, "IPv4 packet over 65535");
  const size_t total = kIpv4HeaderLen + payload_len;
  if (out.size() < total) return make_error(NetErrc::kNoSpace, "IPv4 packet");
  wire::put8(out, 0, 0x45);
  wire::put8(out, 1, f.tos);
  wire::put16(out, 2, static_cast<uint16_t>(total));
  wire::put16(out, 4, f.id);
  wire::put16(out, 6, f.dont_fragment ? 0x4000 : 0);
  wire::put8(out, 8, f.ttl);
  wire::put8(out, 9, f.protocol);
  wire::put16(out, 10, 0);
  f.src.store(out.subspan(12, 4));
  f.dst.store(out.subspan(16, 4));
  wire::put16(out, 10, internet_checksum(out.subspan(0, kIpv4HeaderLen)));
  return total;
}

void ipv4_set_ttl(std::span<uint8_t> h, uint8_t ttl) {
  const uint16_t old_word = wire::be16(h, 8);
  const uint16_t new_word = static_cast<uint16_t>(ttl << 8 | (old_word & 0xff));
  wire::put8(h, 8, ttl);
  wire::put16(h, 10, checksum_update16(wire::be16(h, 10), old_word, new_word));
}

void ipv4_set_src(std::span<uint8_t> h, Ipv4Address src) {
  const uint32_t old_value = wire::be32(h, 12);
  src.store(h.subspan(12, 4));
  wire::put16(h, 10, checksum_update32(wire::be16(h, 10), old_value, src.value()));
}

void ipv4_set_dst(std::span<uint8_t> h, Ipv4Address dst) {
  const uint32_t old_value = wire::be32(h, 16);
  dst.store(h.subspan(16, 4));
  wire::put16(h, 10, checksum_update32(wire::be16(h, 10), old_value, dst.value()));
}

}  // namespace azote::net
