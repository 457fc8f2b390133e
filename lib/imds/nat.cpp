#include "imds/nat.hpp"

#include <algorithm>

#include "net/checksum.hpp"
#include "net/ipv4.hpp"
#include "net/l4.hpp"
#include "net/wire.hpp"

namespace azote::imds {
namespace {

constexpr size_t kTcpChecksumOffset = 16;

// A TCP segment over IPv4 without fragments or options, fully validated.
Result<std::pair<net::Ipv4View, net::TcpView>, Drop> parse_tcp_packet(std::span<const uint8_t> pkt) {
  auto ip = net::parse_ipv4(pkt);
  if (!ip.ok()) return Unexpected{Drop::kMalformed};
  if (ip->total_len > kMtu) return Unexpected{Drop::kTooBig};
  if (ip->is_fragment()) return Unexpected{Drop::kFragment};
  if (ip->has_options()) return Unexpected{Drop::kOptions};
  if (ip->protocol != net::kIpProtoTcp) return Unexpected{Drop::kNotTcp};
  auto tcp = net::parse_tcp(*ip, net::L4Checksum::kVerify);
  if (!tcp.ok()) return Unexpected{Drop::kMalformed};
  return std::pair{*ip, *tcp};
}

// RFC 1624 over the TCP checksum for an address of the pseudo-header that changed.
void tcp_update_address(std::span<uint8_t> pkt, size_t ip_header_len, uint32_t old_value, uint32_t new_value) {
  auto seg = pkt.subspan(ip_header_len);
  net::wire::put16(seg, kTcpChecksumOffset,
                   net::checksum_update32(net::wire::be16(seg, kTcpChecksumOffset), old_value, new_value));
}

}  // namespace

const char* to_string(Drop d) {
  switch (d) {
    case Drop::kMalformed: return "malformed";
    case Drop::kTooBig: return "too_big";
    case Drop::kFragment: return "fragment";
    case Drop::kOptions: return "ip_options";
    case Drop::kNotTcp: return "not_tcp";
    case Drop::kWrongAddress: return "wrong_address";
    case Drop::kWrongPort: return "wrong_port";
    case Drop::kWrongSource: return "wrong_source";
    case Drop::kNoSlot: return "no_slot";
    case Drop::kQueueFull: return "queue_full";
    case Drop::kIoError: return "io_error";
    case Drop::kNoOutput: return "no_output";
    case Drop::kNotIpv4: return "not_ipv4";
  }
  return "?";
}

net::Ipv4Address alias_of(uint32_t slot) { return net::Ipv4Address::from_u32(kAliasBase.value() + slot + 1); }

std::optional<uint32_t> slot_of(net::Ipv4Address a) {
  const uint32_t mask = ~uint32_t{0} << (32 - kAliasPrefixLen);
  if ((a.value() & mask) != kAliasBase.value()) return std::nullopt;
  const uint32_t host = a.value() & ~mask;
  if (host == 0 || host > kMaxSlots) return std::nullopt;  // the network and broadcast addresses
  return host - 1;
}

Result<size_t, Drop> nat_inbound(std::span<const uint8_t> in, std::span<uint8_t> out, net::Ipv4Address eni,
                                 net::Ipv4Address alias) {
  auto parsed = parse_tcp_packet(in);
  if (!parsed.ok()) return Unexpected{parsed.error()};
  const auto& [ip, tcp] = *parsed;
  if (ip.dst != kImdsAddress) return Unexpected{Drop::kWrongAddress};
  if (tcp.dst_port != kImdsPort) return Unexpected{Drop::kWrongPort};
  if (ip.src != eni) return Unexpected{Drop::kWrongSource};
  const size_t len = ip.total_len;
  if (out.size() < len) return Unexpected{Drop::kTooBig};
  std::copy_n(in.begin(), len, out.begin());
  auto pkt = out.first(len);
  net::ipv4_set_src(pkt.first(ip.header_len), alias);
  tcp_update_address(pkt, ip.header_len, eni.value(), alias.value());
  return len;
}

Result<Outbound, Drop> nat_outbound_parse(std::span<const uint8_t> pkt) {
  if (pkt.empty() || (pkt[0] >> 4) != 4) return Unexpected{Drop::kNotIpv4};
  auto parsed = parse_tcp_packet(pkt);
  if (!parsed.ok()) return Unexpected{parsed.error()};
  const auto& [ip, tcp] = *parsed;
  if (ip.src != kImdsAddress) return Unexpected{Drop::kWrongAddress};
  if (tcp.src_port != kImdsPort) return Unexpected{Drop::kWrongPort};
  const auto slot = slot_of(ip.dst);
  if (!slot) return Unexpected{Drop::kWrongAddress};
  return Outbound{*slot, ip.total_len};
}

bool nat_outbound_rewrite(std::span<uint8_t> pkt, net::Ipv4Address eni) {
  const size_t header_len = size_t{pkt[0] & 0x0fu} * 4;
  auto header = pkt.first(header_len);
  const uint32_t old_dst = net::wire::be32(header, 16);
  net::ipv4_set_dst(header, eni);
  tcp_update_address(pkt, header_len, old_dst, eni.value());
  const bool ttl_changed = header[8] != 1;
  if (ttl_changed) net::ipv4_set_ttl(header, 1);
  return ttl_changed;
}

}  // namespace azote::imds
