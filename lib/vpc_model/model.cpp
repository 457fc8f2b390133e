#include "vpc_model/model.hpp"

#include <sys/random.h>

#include <cstdio>
#include <cstdlib>

#include "base/hex.hpp"
#include "vpc_policy/flow.hpp"

namespace azote::vpc_model {
namespace {

uint64_t subnet_size(const vpc::Cidr& c) { return uint64_t{1} << (32 - c.prefix); }

std::string port_text(const std::optional<int>& p) { return p ? std::to_string(*p) : std::string("(none)"); }

}  // namespace

std::optional<vpc::Cidr> parse_cidr(std::string_view text) {
  auto c = vpc::Cidr::parse(text);
  if (!c) return std::nullopt;
  return *c;
}

std::optional<std::string> check_network_layout(std::string_view vpc_cidr, std::string_view subnet_cidr) {
  const auto v = parse_cidr(vpc_cidr);
  if (!v) return "VPC CIDR \"" + std::string(vpc_cidr) + "\" is not a CIDR block with zero host bits (e.g. 10.0.0.0/16)";
  if (v->prefix < 16 || v->prefix > 28) return "VPC CIDR " + v->to_string() + " must be /16 to /28";
  const auto s = parse_cidr(subnet_cidr);
  if (!s) return "subnet CIDR \"" + std::string(subnet_cidr) + "\" is not a CIDR block with zero host bits (e.g. 10.0.1.0/24)";
  if (s->prefix < 16 || s->prefix > 28) return "subnet CIDR " + s->to_string() + " must be /16 to /28";
  if (s->prefix < v->prefix || !v->contains(s->network))
    return "subnet " + s->to_string() + " is not inside the VPC " + v->to_string();
  return std::nullopt;
}

bool reserved_address(const vpc::Cidr& subnet, uint32_t ip) {
  if (!subnet.contains(ip)) return true;
  const uint64_t host = ip - subnet.network;
  return host <= 3 || host == subnet_size(subnet) - 1;
}

uint32_t usable_addresses(const vpc::Cidr& subnet) {
  const uint64_t n = subnet_size(subnet);
  return n > 5 ? static_cast<uint32_t>(n - 5) : 0;
}

std::optional<uint32_t> next_free_address(const vpc::Cidr& subnet, const std::set<uint32_t>& used) {
  const uint64_t n = subnet_size(subnet);
  for (uint64_t host = 4; host + 1 < n; ++host) {
    const uint32_t ip = subnet.network + static_cast<uint32_t>(host);
    if (!used.count(ip)) return ip;
  }
  return std::nullopt;
}

std::string private_dns_name(uint32_t ip, std::string_view region) {
  std::string s = "ip-" + vpc::format_ipv4(ip);
  for (char& c : s)
    if (c == '.') c = '-';
  return s + "." + std::string(region) + ".compute.internal";
}

std::string new_mac(const std::set<std::string>& used) {
  for (;;) {
    uint8_t b[5];
    if (::getrandom(b, sizeof b, 0) != static_cast<ssize_t>(sizeof b)) std::abort();  // never fails for 5 bytes
    if (b[0] == 0xa2) continue;  // 02:a2:... are the card's gateway MACs
    char buf[18];
    std::snprintf(buf, sizeof buf, "02:%02x:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3], b[4]);
    if (!used.count(buf)) return buf;
  }
}

bool valid_mac(std::string_view mac) {
  if (mac.size() != 17) return false;
  for (size_t i = 0; i < mac.size(); ++i) {
    const char c = mac[i];
    if (i % 3 == 2) {
      if (c != ':') return false;
    } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
      return false;
    }
  }
  return true;
}

std::string protocol_name(int protocol) {
  switch (protocol) {
    case vpc::kAllProtocols: return "-1";
    case vpc::kProtoTcp: return "tcp";
    case vpc::kProtoUdp: return "udp";
    case vpc::kProtoIcmp: return "icmp";
    default: return std::to_string(protocol);
  }
}

ModelResult<std::vector<vpc::Rule>> rules_of(const std::vector<Permission>& perms,
                                           const std::function<bool(const std::string&)>& group_exists) {
  if (perms.empty()) return model_error(false, "MissingParameter", "no IP permission given");
  std::vector<vpc::Rule> out;
  for (const Permission& p : perms) {
    if (p.protocol.empty())
      return model_error(false, "MissingParameter", "the request must contain the parameter ipProtocol");
    auto proto = vpc::parse_protocol(p.protocol);
    if (!proto)
      return model_error(false, "InvalidParameterValue",
                       "invalid value '" + p.protocol + "' for IP protocol: unknown protocol (tcp, udp, icmp, -1 or 0-255)");
    vpc::Rule base;
    base.protocol = *proto;
    if (base.protocol == vpc::kProtoTcp || base.protocol == vpc::kProtoUdp) {
      if (!p.from_port || !p.to_port)
        return model_error(false, "InvalidParameterValue",
                         "invalid value 'Must specify both from and to ports with TCP/UDP.' for portRange");
      if (*p.from_port < 0 || *p.to_port > 65535 || *p.from_port > *p.to_port)
        return model_error(false, "InvalidParameterValue",
                         "invalid TCP/UDP port range " + port_text(p.from_port) + "-" + port_text(p.to_port) +
                             " (0 <= from <= to <= 65535)");
      base.from_port = *p.from_port;
      base.to_port = *p.to_port;
    } else if (base.protocol == vpc::kProtoIcmp) {
      base.from_port = p.from_port.value_or(-1);
      base.to_port = p.to_port.value_or(-1);
      if (base.from_port < -1 || base.from_port > 255 || base.to_port < -1 || base.to_port > 255 ||
          (base.from_port == -1 && base.to_port != -1))
        return model_error(false, "InvalidParameterValue",
                         "invalid ICMP type " + std::to_string(base.from_port) + " and code " +
                             std::to_string(base.to_port) + " (-1 or 0-255; a code needs a type)");
    }
    // Other protocols (and -1, all traffic) have no ports; EC2 ignores any given.
    if (p.cidrs.empty() && p.groups.empty())
      return model_error(false, "MissingParameter",
                       "the permission names no peer: give a CIDR block or a security group");
    for (const auto& c : p.cidrs) {
      auto cidr = parse_cidr(c);
      if (!cidr)
        return model_error(false, "InvalidParameterValue",
                         "value (" + c + ") for parameter cidrIp is invalid: not a CIDR block with zero host bits");
      vpc::Rule r = base;
      r.peer = *cidr;
      out.push_back(r);
    }
    for (const auto& g : p.groups) {
      if (!valid_resource_id(g, "sg")) return model_error(false, "InvalidGroupId.Malformed", "invalid id: \"" + g + "\"");
      if (!group_exists(g))
        return model_error(true, "InvalidGroup.NotFound", "the security group '" + g + "' does not exist");
      vpc::Rule r = base;
      r.peer = vpc::GroupRef{g};
      out.push_back(r);
    }
  }
  for (const auto& r : out)
    if (auto v = vpc::validate(r); !v) return model_error(false, "InvalidParameterValue", v.error().message());
  return out;
}

Permission permission_of(const vpc::Rule& r) {
  Permission p;
  p.protocol = protocol_name(r.protocol);
  if (r.protocol == vpc::kProtoTcp || r.protocol == vpc::kProtoUdp || r.protocol == vpc::kProtoIcmp) {
    p.from_port = r.from_port;
    p.to_port = r.to_port;
  }
  if (const auto* c = std::get_if<vpc::Cidr>(&r.peer)) p.cidrs.push_back(c->to_string());
  else p.groups.push_back(std::get<vpc::GroupRef>(r.peer).group_id);
  return p;
}

nlohmann::json rule_json(const vpc::Rule& r) {
  nlohmann::json j = {{"protocol", protocol_name(r.protocol)}};
  if (r.protocol == vpc::kProtoTcp || r.protocol == vpc::kProtoUdp || r.protocol == vpc::kProtoIcmp) {
    j["from_port"] = r.from_port;
    j["to_port"] = r.to_port;
  }
  if (const auto* c = std::get_if<vpc::Cidr>(&r.peer)) j["cidr"] = c->to_string();
  else j["group"] = std::get<vpc::GroupRef>(r.peer).group_id;
  return j;
}

std::optional<vpc::Rule> rule_from_json(const nlohmann::json& j) {
  if (!j.is_object() || !j.contains("protocol") || !j["protocol"].is_string()) return std::nullopt;
  auto proto = vpc::parse_protocol(j["protocol"].get<std::string>());
  if (!proto) return std::nullopt;
  vpc::Rule r;
  r.protocol = *proto;
  if (j.contains("from_port") && j["from_port"].is_number_integer()) r.from_port = j["from_port"].get<int>();
  if (j.contains("to_port") && j["to_port"].is_number_integer()) r.to_port = j["to_port"].get<int>();
  if (j.contains("cidr") && j["cidr"].is_string()) {
    auto c = parse_cidr(j["cidr"].get<std::string>());
    if (!c) return std::nullopt;
    r.peer = *c;
  } else if (j.contains("group") && j["group"].is_string()) {
    r.peer = vpc::GroupRef{j["group"].get<std::string>()};
  } else {
    return std::nullopt;
  }
  if (!vpc::validate(r)) return std::nullopt;
  return r;
}

nlohmann::json rules_json(const std::vector<vpc::Rule>& rules) {
  nlohmann::json a = nlohmann::json::array();
  for (const auto& r : rules) a.push_back(rule_json(r));
  return a;
}

std::vector<vpc::Rule> rules_from_json(const std::string& text) {
  std::vector<vpc::Rule> out;
  const auto j = nlohmann::json::parse(text, nullptr, false);
  if (!j.is_array()) return out;
  for (const auto& e : j)
    if (auto r = rule_from_json(e)) out.push_back(*r);
  return out;
}

std::vector<vpc::Rule> default_group_ingress(const std::string& group_id) { return {vpc::Rule::all(vpc::GroupRef{group_id})}; }
std::vector<vpc::Rule> default_egress() { return {vpc::Rule::all(vpc::Cidr{0, 0})}; }

std::string base64(std::string_view in) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    const uint32_t v = static_cast<uint8_t>(in[i]) << 16 | static_cast<uint8_t>(in[i + 1]) << 8 | static_cast<uint8_t>(in[i + 2]);
    out += kAlphabet[v >> 18], out += kAlphabet[(v >> 12) & 63], out += kAlphabet[(v >> 6) & 63], out += kAlphabet[v & 63];
  }
  if (i + 1 == in.size()) {
    const uint32_t v = static_cast<uint8_t>(in[i]) << 16;
    out += kAlphabet[v >> 18], out += kAlphabet[(v >> 12) & 63], out += "==";
  } else if (i + 2 == in.size()) {
    const uint32_t v = static_cast<uint8_t>(in[i]) << 16 | static_cast<uint8_t>(in[i + 1]) << 8;
    out += kAlphabet[v >> 18], out += kAlphabet[(v >> 12) & 63], out += kAlphabet[(v >> 6) & 63], out += '=';
  }
  return out;
}

}  // namespace azote::vpc_model
