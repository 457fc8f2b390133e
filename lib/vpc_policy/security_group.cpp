#include "vpc_policy/security_group.hpp"

#include <charconv>

namespace azote::vpc {
namespace {

bool parse_int(std::string_view text, int& out) {
  if (text.empty()) return false;
  const char* end = text.data() + text.size();
  auto [p, ec] = std::from_chars(text.data(), end, out);
  return ec == std::errc() && p == end;
}

}  // namespace

VpcResult<Cidr> Cidr::parse(std::string_view text) {
  const size_t slash = text.find('/');
  if (slash == std::string_view::npos) {
    return make_error(VpcErrc::kInvalid, "CIDR without /prefix: " + std::string(text));
  }
  const auto ip = parse_ipv4(text.substr(0, slash));
  int prefix = -1;
  const std::string_view ptext = text.substr(slash + 1);
  if (!ip || ptext.size() > 2 || (ptext.size() == 2 && ptext[0] == '0') ||
      !parse_int(ptext, prefix) || prefix < 0 || prefix > 32) {
    return make_error(VpcErrc::kInvalid, "malformed CIDR: " + std::string(text));
  }
  Cidr c{*ip, static_cast<uint8_t>(prefix)};
  if ((c.network & c.mask()) != c.network) {
    return make_error(VpcErrc::kInvalid, "CIDR has host bits set: " + std::string(text));
  }
  return c;
}

std::string Cidr::to_string() const {
  return format_ipv4(network) + "/" + std::to_string(prefix);
}

Rule Rule::all(Peer peer) { return Rule{kAllProtocols, -1, -1, std::move(peer)}; }
Rule Rule::tcp(int from_port, int to_port, Peer peer) {
  return Rule{kProtoTcp, from_port, to_port, std::move(peer)};
}
Rule Rule::udp(int from_port, int to_port, Peer peer) {
  return Rule{kProtoUdp, from_port, to_port, std::move(peer)};
}
Rule Rule::icmp(int type, int code, Peer peer) {
  return Rule{kProtoIcmp, type, code, std::move(peer)};
}
Rule Rule::proto(int protocol, Peer peer) { return Rule{protocol, -1, -1, std::move(peer)}; }

std::string Rule::to_string() const {
  std::string s;
  switch (protocol) {
    case kAllProtocols: s = "-1 all"; break;
    case kProtoTcp: s = "tcp "; break;
    case kProtoUdp: s = "udp "; break;
    case kProtoIcmp: s = "icmp "; break;
    default: s = std::to_string(protocol) + " all"; break;
  }
  if (protocol == kProtoTcp || protocol == kProtoUdp) {
    s += std::to_string(from_port) + "-" + std::to_string(to_port);
  } else if (protocol == kProtoIcmp) {
    s += "type " + std::to_string(from_port) + " code " + std::to_string(to_port);
  }
  s += ' ';
  if (const auto* c = std::get_if<Cidr>(&peer)) {
    s += c->to_string();
  } else {
    s += std::get<GroupRef>(peer).group_id;
  }
  return s;
}

VpcResult<int> parse_protocol(std::string_view text) {
  if (text == "tcp") return int{kProtoTcp};
  if (text == "udp") return int{kProtoUdp};
  if (text == "icmp") return int{kProtoIcmp};
  if (text == "-1" || text == "all") return int{kAllProtocols};
  int n = -1;
  if (text.size() <= 3 && parse_int(text, n) && n >= 0 && n <= 255) return n;
  return make_error(VpcErrc::kInvalid, "unknown protocol: " + std::string(text));
}

VpcResult<void> validate(const Rule& r) {
  auto bad = [&r](const char* why) {
    return make_error(VpcErrc::kInvalid, std::string(why) + ": " + r.to_string());
  };
  if (r.protocol < kAllProtocols || r.protocol > 255) return bad("protocol out of range");
  if (r.protocol == kProtoTcp || r.protocol == kProtoUdp) {
    if (r.from_port < 0 || r.to_port > 65535 || r.from_port > r.to_port) {
      return bad("port range must be 0 <= from <= to <= 65535");
    }
  } else if (r.protocol == kProtoIcmp) {
    if (r.from_port < -1 || r.from_port > 255 || r.to_port < -1 || r.to_port > 255) {
      return bad("ICMP type and code must be -1 or 0..255");
    }
    if (r.from_port == -1 && r.to_port != -1) return bad("an ICMP code needs a type");
  } else if (r.from_port != -1 || r.to_port != -1) {
    return bad("ports apply to tcp, udp and icmp only");
  }
  if (const auto* c = std::get_if<Cidr>(&r.peer)) {
    if (c->prefix > 32 || (c->network & c->mask()) != c->network) return bad("bad CIDR");
  } else if (!valid_id(std::get<GroupRef>(r.peer).group_id)) {
    return bad("bad security group id");
  }
  return {};
}

bool traffic_matches(const Rule& r, const FlowKey& key) {
  if (r.protocol == kAllProtocols) return true;
  if (r.protocol != key.protocol) return false;
  if (r.protocol == kProtoTcp || r.protocol == kProtoUdp) {
    return key.dst_port >= r.from_port && key.dst_port <= r.to_port;
  }
  if (r.protocol == kProtoIcmp) {
    if (r.from_port != -1 && key.icmp_type != r.from_port) return false;
    if (r.to_port != -1 && key.icmp_code != r.to_port) return false;
  }
  return true;
}

bool valid_id(std::string_view id) {
  if (id.empty() || id.size() > 255) return false;
  for (char c : id) {
    if (c <= ' ' || c > '~') return false;
  }
  return true;
}

}  // namespace azote::vpc
