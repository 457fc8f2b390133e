#include "vpc_policy/flow.hpp"

#include <utility>

namespace azote::vpc {

FlowKey FlowKey::tcp(uint32_t src, uint16_t sport, uint32_t dst, uint16_t dport) {
  FlowKey k;
  k.protocol = kProtoTcp;
  k.src_ip = src;
  k.dst_ip = dst;
  k.src_port = sport;
  k.dst_port = dport;
  return k;
}

FlowKey FlowKey::udp(uint32_t src, uint16_t sport, uint32_t dst, uint16_t dport) {
  FlowKey k = tcp(src, sport, dst, dport);
  k.protocol = kProtoUdp;
  return k;
}

FlowKey FlowKey::icmp(uint32_t src, uint32_t dst, uint8_t type, uint8_t code, uint16_t id) {
  FlowKey k;
  k.protocol = kProtoIcmp;
  k.src_ip = src;
  k.dst_ip = dst;
  k.icmp_type = type;
  k.icmp_code = code;
  k.icmp_id = id;
  return k;
}

FlowKey FlowKey::other(uint8_t protocol, uint32_t src, uint32_t dst) {
  FlowKey k;
  k.protocol = protocol;
  k.src_ip = src;
  k.dst_ip = dst;
  return k;
}

FlowKey FlowKey::reversed() const {
  FlowKey k = *this;
  std::swap(k.src_ip, k.dst_ip);
  std::swap(k.src_port, k.dst_port);
  return k;
}

bool is_icmp_error(uint8_t type) { return type == 3 || type == 4 || type == 11 || type == 12; }

std::optional<IcmpQuery> icmp_query(uint8_t type) {
  switch (type) {
    case 8: return IcmpQuery{8, true};
    case 0: return IcmpQuery{8, false};
    case 13: return IcmpQuery{13, true};
    case 14: return IcmpQuery{13, false};
    case 15: return IcmpQuery{15, true};
    case 16: return IcmpQuery{15, false};
    case 17: return IcmpQuery{17, true};
    case 18: return IcmpQuery{17, false};
    default: return std::nullopt;
  }
}

std::optional<uint32_t> parse_ipv4(std::string_view text) {
  uint32_t ip = 0;
  size_t pos = 0;
  for (int part = 0; part < 4; ++part) {
    if (part > 0) {
      if (pos >= text.size() || text[pos] != '.') return std::nullopt;
      ++pos;
    }
    const size_t start = pos;
    uint32_t value = 0;
    while (pos < text.size() && text[pos] >= '0' && text[pos] <= '9' && pos - start < 3) {
      value = value * 10 + static_cast<uint32_t>(text[pos] - '0');
      ++pos;
    }
    const size_t digits = pos - start;
    if (digits == 0 || value > 255 || (digits > 1 && text[start] == '0')) return std::nullopt;
    ip = (ip << 8) | value;
  }
  if (pos != text.size()) return std::nullopt;
  return ip;
}

std::string format_ipv4(uint32_t ip) {
  std::string s;
  s.reserve(15);
  for (int shift = 24; shift >= 0; shift -= 8) {
    s += std::to_string((ip >> shift) & 0xff);
    if (shift > 0) s += '.';
  }
  return s;
}

}  // namespace azote::vpc
