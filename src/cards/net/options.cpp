#include "cards/net/options.hpp"

#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include "base/parse.hpp"

namespace azote::card_net {
namespace {

Unexpected<OptionsError> bad(std::string sentence) { return make_error(OptionsErrc::kUsage, std::move(sentence)); }

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string part;
  while (std::getline(ss, part, sep)) out.push_back(part);
  return out;
}

Result<bool, OptionsError> on_off(const std::string& where, const std::string& v) {
  if (v == "on" || v == "true" || v == "1") return true;
  if (v == "off" || v == "false" || v == "0") return false;
  return bad(where + ": \"" + v + "\" is not on or off");
}

// Sets one ENI key from its text value; shared by --eni and JSON.
Result<void, OptionsError> set_eni_key(const std::string& where, EniSpec& e, const std::string& key,
                                       const std::string& val) {
  if (key == "socket") {
    if (val.empty() || val.size() >= 108) return bad(where + ": socket= needs a path shorter than 108 bytes");
    e.socket = val;
  } else if (key == "id") {
    if (!vpc::valid_id(val)) return bad(where + ": id \"" + val + "\" is not a printable id without spaces");
    e.id = val;
  } else if (key == "mac") {
    auto m = net::MacAddress::parse(val);
    if (!m) return bad(where + ": mac \"" + val + "\" is not a MAC address (e.g. 02:00:0a:00:01:05)");
    if (!m->is_unicast() || m->is_zero()) return bad(where + ": mac " + val + " is not a unicast address");
    e.mac = *m;
  } else if (key == "ip") {
    auto a = net::Ipv4Address::parse(val);
    if (!a) return bad(where + ": ip \"" + val + "\" is not an IPv4 address");
    e.ip = *a;
  } else if (key == "subnet") {
    if (val.empty()) return bad(where + ": subnet= needs a CIDR or a subnet id");
    e.subnet = val;
  } else if (key == "vpc") {
    if (!vpc::valid_id(val)) return bad(where + ": vpc \"" + val + "\" is not a printable id without spaces");
    e.vpc = val;
  } else if (key == "sg" || key == "security_groups") {
    e.groups.clear();
    for (const auto& g : split(val, '+')) {
      if (!vpc::valid_id(g)) return bad(where + ": security group \"" + g + "\" is not a printable id without spaces");
      e.groups.push_back(g);
    }
  } else if (key == "source-dest-check" || key == "source_dest_check") {
    AZOTE_TRY(b, on_off(where + ": source-dest-check", val));
    e.source_dest_check = b;
  } else if (key == "inbox") {
    if (val.empty() || val.size() >= 108 || val.front() != '/')
      return bad(where + ": inbox= needs an absolute path shorter than 108 bytes");
    e.inbox = val;
  } else {
    return bad(where + ": unknown ENI key \"" + key +
               "\" (known: socket, id, mac, ip, subnet, vpc, sg, source-dest-check, inbox)");
  }
  return {};
}

Result<void, OptionsError> check_eni(const std::string& where, const EniSpec& e, bool neighbour = false) {
  if (neighbour) {
    if (!e.socket.empty() || e.limits || e.metadata)
      return bad(where + ": a neighbour is served by another card: no socket, limits or metadata here");
    if (e.inbox.empty()) return bad(where + ": a neighbour needs \"inbox\": the path of its inbox socket");
    if (!e.uid) return bad(where + ": a neighbour needs \"uid\": the uid of the card that serves it");
  } else if (e.uid) {
    return bad(where + ": \"uid\" is for neighbours (an ENI this card serves has this card's)");
  }
  for (const auto& [name, missing] : {std::pair{"socket", e.socket.empty() && !neighbour}, std::pair{"id", e.id.empty()},
                                      std::pair{"mac", e.mac.is_zero()}, std::pair{"ip", e.ip.is_any()},
                                      std::pair{"subnet", e.subnet.empty()}})
    if (missing) return bad(where + ": the ENI needs " + name + "=");
  if (e.groups.empty()) return bad(where + ": the ENI needs at least one security group (sg=sg-a[+sg-b])");
  return {};
}

Result<net::Ipv4Prefix, OptionsError> cidr_of(const std::string& where, const nlohmann::json& j) {
  if (!j.is_string()) return bad(where + " must be a CIDR string such as \"10.0.0.0/16\"");
  auto p = net::Ipv4Prefix::parse(j.get<std::string>());
  if (!p) return bad(where + ": \"" + j.get<std::string>() + "\" is not a CIDR with zero host bits");
  return *p;
}

Result<std::string, OptionsError> id_of(const std::string& where, const nlohmann::json& j, const char* key) {
  if (!j.contains(key) || !j[key].is_string() || !vpc::valid_id(j[key].get<std::string>()))
    return bad(where + ": needs \"" + key + "\": a printable id without spaces");
  return j[key].get<std::string>();
}

Result<void, OptionsError> only_keys(const std::string& where, const nlohmann::json& j,
                                     const std::set<std::string>& keys) {
  if (!j.is_object()) return bad(where + " must be an object");
  for (auto it = j.begin(); it != j.end(); ++it)
    if (keys.count(it.key()) == 0) return bad(where + ": unknown key \"" + it.key() + "\"");
  return {};
}

Result<uint64_t, OptionsError> uint_in(const std::string& where, const nlohmann::json& j, uint64_t lo, uint64_t hi) {
  if (!j.is_number_unsigned() || j.get<uint64_t>() < lo || j.get<uint64_t>() > hi)
    return bad(where + " must be an integer from " + std::to_string(lo) + " to " + std::to_string(hi));
  return j.get<uint64_t>();
}

// Standard base64 (RFC 4648 §4) with padding; nullopt when it is not.
std::optional<std::string> base64_decode(const std::string& in) {
  if (in.size() % 4 != 0) return std::nullopt;
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::string out;
  for (size_t i = 0; i < in.size(); i += 4) {
    const bool last = i + 4 == in.size();
    int v[4];
    int pad = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = in[i + static_cast<size_t>(k)];
      if (c == '=' && last && k >= 2) {
        v[k] = 0;
        ++pad;
        continue;
      }
      if (pad > 0) return std::nullopt;  // data after padding
      v[k] = value(c);
      if (v[k] < 0) return std::nullopt;
    }
    const uint32_t n = static_cast<uint32_t>(v[0] << 18 | v[1] << 12 | v[2] << 6 | v[3]);
    out += static_cast<char>(n >> 16);
    if (pad < 2) out += static_cast<char>((n >> 8) & 0xff);
    if (pad < 1) out += static_cast<char>(n & 0xff);
  }
  return out;
}

bool valid_hostname(const std::string& h) {
  if (h.empty() || h.size() > 253) return false;
  size_t label = 0;
  for (size_t i = 0; i < h.size(); ++i) {
    const char c = h[i];
    if (c == '.') {
      if (label == 0 || h[i - 1] == '-') return false;
      label = 0;
      continue;
    }
    const bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    if (!alnum && !(c == '-' && label > 0)) return false;
    if (++label > 63) return false;
  }
  return h.back() != '-' && h.back() != '.';
}

}  // namespace

Result<EniLimits, OptionsError> parse_limits(const std::string& where, const nlohmann::json& j) {
  if (!j.is_object()) return bad(where + " must be an object {\"bandwidth_mbps\", \"pps\"}");
  AZOTE_TRYV(only_keys(where, j, {"bandwidth_mbps", "pps"}));
  if (j.empty()) return bad(where + ": needs \"bandwidth_mbps\" and/or \"pps\"");
  EniLimits l;
  if (j.contains("bandwidth_mbps")) {
    AZOTE_TRY(v, uint_in(where + ": \"bandwidth_mbps\"", j["bandwidth_mbps"], 1, 400'000));
    l.bandwidth_mbps = v;
  }
  if (j.contains("pps")) {
    AZOTE_TRY(v, uint_in(where + ": \"pps\"", j["pps"], 1, 100'000'000));
    l.pps = v;
  }
  return l;
}


Result<InstanceMetadata, OptionsError> parse_metadata_json(const std::string& where, const nlohmann::json& j) {
  if (!j.is_object()) return bad(where + " must be an object");
  AZOTE_TRYV(only_keys(where, j, {"instance_id", "instance_type", "ami_id", "availability_zone", "hostname",
                                  "user_data_b64", "http_tokens"}));
  InstanceMetadata m;
  for (auto it = j.begin(); it != j.end(); ++it)
    if (!it.value().is_string()) return bad(where + ": \"" + it.key() + "\" must be a string");
  auto id = [&](const char* key, const char* prefix, std::string* dst) -> Result<void, OptionsError> {
    if (!j.contains(key)) return {};
    const std::string v = j[key].get<std::string>();
    if (!vpc::valid_id(v) || v.size() > 64 || v.rfind(prefix, 0) != 0 || v.size() == std::strlen(prefix))
      return bad(where + ": \"" + key + "\": \"" + v + "\" is not " + prefix + "... (printable, no spaces, at most 64)");
    *dst = v;
    return {};
  };
  AZOTE_TRYV(id("instance_id", "i-", &m.instance_id));
  AZOTE_TRYV(id("ami_id", "ami-", &m.ami_id));
  AZOTE_TRYV(id("instance_type", "", &m.instance_type));
  AZOTE_TRYV(id("availability_zone", "", &m.availability_zone));
  if (j.contains("hostname")) {
    m.hostname = j["hostname"].get<std::string>();
    if (!valid_hostname(m.hostname)) return bad(where + ": \"hostname\": \"" + m.hostname + "\" is not a DNS name");
  }
  if (j.contains("user_data_b64")) {
    auto d = base64_decode(j["user_data_b64"].get<std::string>());
    if (!d) return bad(where + ": \"user_data_b64\" is not padded base64 (RFC 4648)");
    if (d->size() > 16384) return bad(where + ": user data is " + std::to_string(d->size()) + " bytes, over 16384");
    m.user_data = std::move(*d);
  }
  if (j.contains("http_tokens")) {
    const std::string t = j["http_tokens"].get<std::string>();
    if (t != "optional" && t != "required") return bad(where + ": \"http_tokens\" must be \"optional\" or \"required\"");
    m.http_tokens_required = t == "required";
  }
  return m;
}

Result<EniSpec, OptionsError> parse_eni(const std::string& origin, const std::string& spec) {
  EniSpec e;
  e.origin = origin;
  for (const auto& part : split(spec, ',')) {
    const auto eq = part.find('=');
    if (eq == std::string::npos) return bad(origin + ": \"" + part + "\" is not KEY=VALUE");
    AZOTE_TRYV(set_eni_key(origin, e, part.substr(0, eq), part.substr(eq + 1)));
  }
  AZOTE_TRYV(check_eni(origin, e));
  return e;
}

namespace {
Result<EniSpec, OptionsError> eni_json(const std::string& where, const nlohmann::json& j, bool neighbour) {
  if (!j.is_object()) return bad(where + " must be an object");
  EniSpec e;
  e.origin = where;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& key = it.key();
    const auto& v = it.value();
    if ((key == "security_groups" || key == "sg") && v.is_array()) {
      std::string joined;
      for (const auto& g : v) {
        if (!g.is_string()) return bad(where + ": \"" + key + "\" must list group ids");
        joined += (joined.empty() ? "" : "+") + g.get<std::string>();
      }
      AZOTE_TRYV(set_eni_key(where, e, key, joined));
    } else if ((key == "source_dest_check" || key == "source-dest-check") && v.is_boolean()) {
      e.source_dest_check = v.get<bool>();
    } else if (key == "limits") {
      AZOTE_TRY(l, parse_limits(where + ": limits", v));
      e.limits = l;
    } else if (key == "metadata") {
      AZOTE_TRY(m, parse_metadata_json(where + ": metadata", v));
      e.metadata = std::move(m);
    } else if (key == "uid") {
      AZOTE_TRY(u, uint_in(where + ": uid", v, 0, 0xfffffffe));
      e.uid = static_cast<uint32_t>(u);
    } else if (v.is_string()) {
      AZOTE_TRYV(set_eni_key(where, e, key, v.get<std::string>()));
    } else {
      return bad(where + ": \"" + key + "\" has the wrong type");
    }
  }
  AZOTE_TRYV(check_eni(where, e, neighbour));
  return e;
}
}  // namespace

Result<EniSpec, OptionsError> parse_eni_json(const std::string& where, const nlohmann::json& j) {
  if (j.is_string()) return parse_eni(where, j.get<std::string>());
  if (!j.is_object()) return bad(where + " must be an object or an --eni string");
  return eni_json(where, j, false);
}

Result<EniSpec, OptionsError> parse_neighbour_json(const std::string& where, const nlohmann::json& j) {
  return eni_json(where, j, true);
}

Result<vpc::Rule, OptionsError> parse_rule_json(const std::string& where, const nlohmann::json& j) {
  AZOTE_TRYV(only_keys(where, j, {"protocol", "from_port", "to_port", "port", "cidr", "group"}));
  vpc::Rule r;
  if (!j.contains("protocol")) return bad(where + ": needs \"protocol\" (tcp, udp, icmp, -1 or a number)");
  std::string proto = j["protocol"].is_number_integer() ? std::to_string(j["protocol"].get<int64_t>())
                      : j["protocol"].is_string()       ? j["protocol"].get<std::string>()
                                                        : "";
  auto p = vpc::parse_protocol(proto);
  if (!p) return bad(where + ": protocol: " + p.error().message());
  r.protocol = *p;
  auto port = [&](const char* key, int* out) -> Result<void, OptionsError> {
    if (!j.contains(key)) return {};
    if (!j[key].is_number_integer()) return bad(where + ": \"" + key + "\" must be an integer");
    const int64_t v = j[key].get<int64_t>();
    if (v < -1 || v > 65535) return bad(where + ": \"" + key + "\" is out of range");
    *out = static_cast<int>(v);
    return {};
  };
  if (j.contains("port")) {
    AZOTE_TRYV(port("port", &r.from_port));
    r.to_port = r.from_port;
  }
  AZOTE_TRYV(port("from_port", &r.from_port));
  AZOTE_TRYV(port("to_port", &r.to_port));
  const bool ported = r.protocol == vpc::kProtoTcp || r.protocol == vpc::kProtoUdp;
  if (ported && !j.contains("port") && !j.contains("from_port") && !j.contains("to_port")) {
    r.from_port = 0;
    r.to_port = 65535;
  }
  if (j.contains("cidr") == j.contains("group")) return bad(where + ": needs exactly one of \"cidr\" and \"group\"");
  if (j.contains("cidr")) {
    if (!j["cidr"].is_string()) return bad(where + ": \"cidr\" must be a string");
    auto c = vpc::Cidr::parse(j["cidr"].get<std::string>());
    if (!c) return bad(where + ": cidr: " + c.error().message());
    r.peer = *c;
  } else {
    AZOTE_TRY(g, id_of(where, j, "group"));
    r.peer = vpc::GroupRef{g};
  }
  if (auto v = vpc::validate(r); !v) return bad(where + ": " + v.error().message());
  return r;
}

Result<std::vector<vpc::Rule>, OptionsError> parse_rules_json(const std::string& where, const nlohmann::json& j) {
  if (!j.is_array()) return bad(where + " must be an array of rules");
  std::vector<vpc::Rule> out;
  for (size_t i = 0; i < j.size(); ++i) {
    AZOTE_TRY(r, parse_rule_json(where + "[" + std::to_string(i) + "]", j[i]));
    out.push_back(r);
  }
  return out;
}

uint32_t vni_for(const std::string& vpc_id) {
  uint32_t h = 2166136261u;  // FNV-1a
  for (unsigned char c : vpc_id) {
    h ^= c;
    h *= 16777619u;
  }
  const uint32_t v = (h >> 24) ^ (h & 0xffffff);
  return v == 0 ? 1 : v;
}

Result<Endpoint, OptionsError> parse_endpoint(const std::string& where, const std::string& text) {
  Endpoint e;
  std::string host = text;
  if (const auto colon = text.find(':'); colon != std::string::npos) {
    host = text.substr(0, colon);
    auto port = parse_uint(text.substr(colon + 1), 1, 65535);
    if (!port) return bad(where + ": port in \"" + text + "\" is not 1..65535");
    e.port = static_cast<uint16_t>(*port);
  }
  auto a = net::Ipv4Address::parse(host);
  if (!a) return bad(where + ": \"" + text + "\" is not IPV4[:PORT]");
  if (a->is_broadcast() || a->is_multicast()) return bad(where + ": " + host + " is not a unicast address");
  e.addr = *a;
  return e;
}

Result<fabric::HostId, OptionsError> parse_host_id(const std::string& where, const nlohmann::json& j) {
  std::optional<uint64_t> v;
  if (j.is_number_unsigned()) v = j.get<uint64_t>();
  else if (j.is_string()) v = parse_uint(j.get<std::string>(), 1, 0xfffffffeu);
  if (!v || *v < 1 || *v > 0xfffffffeu) return bad(where + ": a host id is an integer from 1 to 4294967294");
  return static_cast<fabric::HostId>(*v);
}

Result<fabric::PeerKey, OptionsError> parse_key_json(const std::string& where, const nlohmann::json& j) {
  fabric::PeerKey k;
  if (j.contains("cipher")) {
    auto c = j["cipher"].is_string() ? fabric::parse_cipher(j["cipher"].get<std::string>()) : std::nullopt;
    if (!c) return bad(where + ": \"cipher\" must be \"aes-256-gcm\" or \"none\"");
    k.cipher = *c;
  }
  if (!j.contains("key_id")) return bad(where + ": needs \"key_id\" (0 .. 4294967295)");
  AZOTE_TRY(id, uint_in(where + ": \"key_id\"", j["key_id"], 0, 0xffffffffu));
  k.key_id = static_cast<uint32_t>(id);
  if (k.cipher == fabric::Cipher::kNone) {
    if (j.contains("key")) return bad(where + ": \"key\" is meaningless with \"cipher\": \"none\"");
    return k;
  }
  if (!j.contains("key") || !j["key"].is_string()) return bad(where + ": needs \"key\": 64 hex digits (32 bytes)");
  const std::string hex = j["key"].get<std::string>();
  if (hex.size() != 2 * fabric::kSecretLen) return bad(where + ": \"key\" must be 64 hex digits, not " + std::to_string(hex.size()) + " characters");
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  bool zero = true;
  for (size_t i = 0; i < fabric::kSecretLen; ++i) {
    const int hi = nibble(hex[2 * i]), lo = nibble(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return bad(where + ": \"key\" has a character that is not a hex digit");
    k.secret[i] = static_cast<uint8_t>(hi << 4 | lo);
    zero = zero && k.secret[i] == 0;
  }
  if (zero) return bad(where + ": \"key\" is all zeros");
  return k;
}

Result<FabricPeerSpec, OptionsError> parse_peer_json(const std::string& where, const nlohmann::json& j) {
  AZOTE_TRYV(only_keys(where, j, {"host", "address", "key", "key_id", "cipher"}));
  FabricPeerSpec p;
  p.origin = where;
  if (!j.contains("host")) return bad(where + ": needs \"host\"");
  AZOTE_TRY(h, parse_host_id(where + ": host", j["host"]));
  p.host = h;
  if (!j.contains("address") || !j["address"].is_string()) return bad(where + ": needs \"address\": \"IPV4[:PORT]\"");
  AZOTE_TRY(a, parse_endpoint(where + ": address", j["address"].get<std::string>()));
  p.address = a;
  AZOTE_TRY(k, parse_key_json(where, j));
  p.key = k;
  return p;
}

Result<FabricMappingSpec, OptionsError> parse_mapping_json(const std::string& where, const nlohmann::json& j) {
  AZOTE_TRYV(only_keys(where, j, {"vpc", "ip", "host"}));
  FabricMappingSpec m;
  AZOTE_TRY(v, id_of(where, j, "vpc"));
  m.vpc = v;
  if (!j.contains("ip") || !j["ip"].is_string()) return bad(where + ": needs \"ip\": an IPv4 address");
  auto a = net::Ipv4Address::parse(j["ip"].get<std::string>());
  if (!a) return bad(where + ": ip \"" + j["ip"].get<std::string>() + "\" is not an IPv4 address");
  m.ip = *a;
  if (!j.contains("host")) return bad(where + ": needs \"host\"");
  AZOTE_TRY(h, parse_host_id(where + ": host", j["host"]));
  m.host = h;
  return m;
}

Result<VpcSpec, OptionsError> parse_vpc_json(const std::string& where, const nlohmann::json& j) {
  AZOTE_TRYV(only_keys(where, j, {"id", "cidr", "vni"}));
  AZOTE_TRY(id, id_of(where, j, "id"));
  if (!j.contains("cidr")) return bad(where + ": needs \"cidr\"");
  AZOTE_TRY(c, cidr_of(where + ": cidr", j["cidr"]));
  VpcSpec v{id, c, std::nullopt};
  if (j.contains("vni")) {
    AZOTE_TRY(n, uint_in(where + ": \"vni\"", j["vni"], 1, fabric::kMaxVni));
    v.vni = static_cast<uint32_t>(n);
  }
  return v;
}

Result<void, OptionsError> apply_json(const std::string& text, const std::string& origin, CardOptions* out) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    return bad(origin + ": invalid JSON: " + e.what());
  }
  AZOTE_TRYV(only_keys(origin, j, {"region", "account", "vpcs", "subnets", "security_groups", "enis", "neighbours",
                                   "metrics", "control", "flow_log", "flow_log_window", "log_level", "fabric", "imds", "relay"}));
  auto str = [&](const char* key, std::string* dst) -> Result<void, OptionsError> {
    if (!j.contains(key)) return {};
    if (!j[key].is_string() || j[key].get<std::string>().empty()) return bad(origin + ": \"" + key + "\" must be a string");
    *dst = j[key].get<std::string>();
    return {};
  };
  AZOTE_TRYV(str("region", &out->region));
  AZOTE_TRYV(str("account", &out->account));
  AZOTE_TRYV(str("control", &out->control_path));
  AZOTE_TRYV(str("flow_log", &out->flow_log_path));
  AZOTE_TRYV(str("log_level", &out->log_level));
  if (j.contains("metrics")) {
    std::string m;
    AZOTE_TRYV(str("metrics", &m));
    if (m.rfind("unix:", 0) != 0 || m.size() <= 5) return bad(origin + ": \"metrics\" must be unix:PATH");
    out->metrics_path = m.substr(5);
  }
  if (j.contains("imds")) {
    if (!j["imds"].is_boolean()) return bad(origin + ": \"imds\" must be true or false");
    out->imds = j["imds"].get<bool>();
  }
  if (j.contains("flow_log_window")) {
    if (!j["flow_log_window"].is_number_unsigned() || j["flow_log_window"].get<uint64_t>() < 1 ||
        j["flow_log_window"].get<uint64_t>() > 3600)
      return bad(origin + ": \"flow_log_window\" must be 1..3600 seconds");
    out->flow_log_window_s = static_cast<uint32_t>(j["flow_log_window"].get<uint64_t>());
  }
  auto array = [&](const char* key) -> Result<nlohmann::json, OptionsError> {
    if (!j.contains(key)) return nlohmann::json::array();
    if (!j[key].is_array()) return bad(origin + ": \"" + std::string(key) + "\" must be an array");
    return j[key];
  };
  AZOTE_TRY(vpcs, array("vpcs"));
  for (size_t i = 0; i < vpcs.size(); ++i) {
    AZOTE_TRY(v, parse_vpc_json(origin + ": vpcs[" + std::to_string(i) + "]", vpcs[i]));
    out->vpcs.push_back(std::move(v));
  }
  AZOTE_TRY(subnets, array("subnets"));
  for (size_t i = 0; i < subnets.size(); ++i) {
    const std::string w = origin + ": subnets[" + std::to_string(i) + "]";
    AZOTE_TRYV(only_keys(w, subnets[i], {"id", "vpc", "cidr"}));
    AZOTE_TRY(id, id_of(w, subnets[i], "id"));
    AZOTE_TRY(v, id_of(w, subnets[i], "vpc"));
    if (!subnets[i].contains("cidr")) return bad(w + ": needs \"cidr\"");
    AZOTE_TRY(c, cidr_of(w + ": cidr", subnets[i]["cidr"]));
    out->subnets.push_back({id, v, c});
  }
  AZOTE_TRY(groups, array("security_groups"));
  for (size_t i = 0; i < groups.size(); ++i) {
    const std::string w = origin + ": security_groups[" + std::to_string(i) + "]";
    AZOTE_TRYV(only_keys(w, groups[i], {"id", "ingress", "egress"}));
    GroupSpec g;
    AZOTE_TRY(id, id_of(w, groups[i], "id"));
    g.id = id;
    if (groups[i].contains("ingress")) {
      AZOTE_TRY(r, parse_rules_json(w + ": ingress", groups[i]["ingress"]));
      g.ingress = r;
    }
    if (groups[i].contains("egress")) {
      AZOTE_TRY(r, parse_rules_json(w + ": egress", groups[i]["egress"]));
      g.egress = r;
    }
    out->groups.push_back(std::move(g));
  }
  AZOTE_TRY(enis, array("enis"));
  for (size_t i = 0; i < enis.size(); ++i) {
    AZOTE_TRY(e, parse_eni_json(origin + ": enis[" + std::to_string(i) + "]", enis[i]));
    out->enis.push_back(std::move(e));
  }
  if (j.contains("relay")) {
    const nlohmann::json& r = j["relay"];
    const std::string w = origin + ": relay";
    AZOTE_TRYV(only_keys(w, r, {"inbox", "uid"}));
    if (!r.contains("inbox") || !r["inbox"].is_string() || r["inbox"].get<std::string>().empty() ||
        r["inbox"].get<std::string>().front() != '/' || r["inbox"].get<std::string>().size() >= 108)
      return bad(w + ": needs \"inbox\": an absolute path shorter than 108 bytes");
    if (!r.contains("uid")) return bad(w + ": needs \"uid\": the fabric process's");
    AZOTE_TRY(u, uint_in(w + ": uid", r["uid"], 0, 0xfffffffe));
    out->relay_inbox = r["inbox"].get<std::string>();
    out->relay_uid = static_cast<uint32_t>(u);
  }
  AZOTE_TRY(neighbours, array("neighbours"));
  for (size_t i = 0; i < neighbours.size(); ++i) {
    AZOTE_TRY(e, parse_neighbour_json(origin + ": neighbours[" + std::to_string(i) + "]", neighbours[i]));
    out->neighbours.push_back(std::move(e));
  }
  if (j.contains("fabric")) {
    const nlohmann::json& f = j["fabric"];
    const std::string w = origin + ": fabric";
    AZOTE_TRYV(only_keys(w, f, {"host_id", "underlay", "peers", "mappings", "inbox"}));
    if (f.contains("inbox")) {
      if (!f["inbox"].is_string() || f["inbox"].get<std::string>().empty() || f["inbox"].get<std::string>().front() != '/' ||
          f["inbox"].get<std::string>().size() >= 108)
        return bad(w + ": \"inbox\" must be an absolute path shorter than 108 bytes");
      out->fabric_inbox = f["inbox"].get<std::string>();
    }
    if (f.contains("host_id")) {
      AZOTE_TRY(h, parse_host_id(w + ": host_id", f["host_id"]));
      out->host_id = h;
    }
    if (f.contains("underlay")) {
      if (!f["underlay"].is_string()) return bad(w + ": \"underlay\" must be \"IPV4[:PORT]\"");
      AZOTE_TRY(u, parse_endpoint(w + ": underlay", f["underlay"].get<std::string>()));
      out->underlay = u;
    }
    for (const char* key : {"peers", "mappings"})
      if (f.contains(key) && !f[key].is_array()) return bad(w + ": \"" + key + "\" must be an array");
    if (f.contains("peers"))
      for (size_t i = 0; i < f["peers"].size(); ++i) {
        AZOTE_TRY(p, parse_peer_json(w + ": peers[" + std::to_string(i) + "]", f["peers"][i]));
        for (const auto& q : out->peers)
          if (q.host == p.host) return bad(p.origin + ": host " + std::to_string(p.host) + " is listed twice");
        out->peers.push_back(std::move(p));
      }
    if (f.contains("mappings"))
      for (size_t i = 0; i < f["mappings"].size(); ++i) {
        AZOTE_TRY(m, parse_mapping_json(w + ": mappings[" + std::to_string(i) + "]", f["mappings"][i]));
        out->mappings.push_back(std::move(m));
      }
  }
  return {};
}

Result<ParsedArgs, OptionsError> parse_args(const std::vector<std::string>& args) {
  ParsedArgs p;
  std::vector<std::pair<std::string, std::string>> flags;
  std::string config;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string a = args[i];
    if (a == "-h" || a == "--help") {
      p.help = true;
      return p;
    }
    if (a == "--version") {
      p.version = true;
      return p;
    }
    std::string value;
    const auto eq = a.find('=');
    if (a.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = a.substr(eq + 1);
      a = a.substr(0, eq);
    } else {
      static const std::set<std::string> kWithValue = {
          "--eni", "--config", "--metrics", "--flow-log", "--flow-log-window", "--control", "--log-level", "--region",
          "--underlay", "--host-id", "--imds", "--imds-fds", "--seccomp",
          "--datagram-fd", "--underlay-fd", "--fabric-inbox"};
      if (kWithValue.count(a) == 0) return bad("unknown option \"" + a + "\" (see --help)");
      if (i + 1 >= args.size()) return bad(a + " needs a value");
      value = args[++i];
    }
    if (a == "--config") config = value;
    else flags.emplace_back(a, value);
  }
  if (!config.empty()) {
    std::ifstream f(config);
    if (!f) return bad("--config: cannot read " + config);
    std::stringstream ss;
    ss << f.rdbuf();
    AZOTE_TRYV(apply_json(ss.str(), "--config " + config, &p.options));
  }
  CardOptions& o = p.options;
  for (const auto& [flag, value] : flags) {
    if (flag == "--eni") {
      AZOTE_TRY(e, parse_eni("--eni " + value, value));
      o.enis.push_back(std::move(e));
    } else if (flag == "--metrics") {
      if (parse_fd_ref(value)) {
        o.metrics_path = value;  // a listening socket handed over by the launcher
      } else {
        if (value.rfind("unix:", 0) != 0 || value.size() <= 5) return bad("--metrics: \"" + value + "\" is not unix:PATH or fd:N");
        o.metrics_path = value.substr(5);
      }
    } else if (flag == "--flow-log") {
      if (value.empty()) return bad("--flow-log: empty path");
      o.flow_log_path = value;
    } else if (flag == "--flow-log-window") {
      auto n = parse_uint(value, 1, 3600);
      if (!n) return bad("--flow-log-window: \"" + value + "\" is not 1..3600 seconds");
      o.flow_log_window_s = static_cast<uint32_t>(*n);
    } else if (flag == "--control") {
      if (value.empty() || value.size() >= 108) return bad("--control: needs a socket path shorter than 108 bytes");
      o.control_path = value;
    } else if (flag == "--log-level") {
      o.log_level = value;
    } else if (flag == "--region") {
      o.region = value;
    } else if (flag == "--underlay") {
      AZOTE_TRY(u, parse_endpoint("--underlay", value));
      o.underlay = u;
    } else if (flag == "--imds") {
      if (value != "on" && value != "off") return bad("--imds: \"" + value + "\" is not on or off");
      o.imds = value == "on";
    } else if (flag == "--seccomp") {
      if (value != "kill" && value != "log") return bad("--seccomp: \"" + value + "\" is not kill or log");
      o.seccomp = value;
    } else if (flag == "--imds-fds") {
      const size_t comma = value.find(',');
      const auto tun = parse_fd_ref("fd:" + value.substr(0, comma));
      const auto listen = comma == std::string::npos ? std::nullopt : parse_fd_ref("fd:" + value.substr(comma + 1));
      if (!tun || !listen) return bad("--imds-fds: \"" + value + "\" is not TUN,LISTEN (two descriptor numbers from 3)");
      o.imds_tun_fd = *tun;
      o.imds_listen_fd = *listen;
    } else if (flag == "--datagram-fd") {
      const auto fd = parse_fd_ref("fd:" + value);
      if (!fd) return bad("--datagram-fd: \"" + value + "\" is not a descriptor number from 3");
      o.datagram_fd = *fd;
    } else if (flag == "--host-id") {
      AZOTE_TRY(h, parse_host_id("--host-id", nlohmann::json(value)));
      o.host_id = h;
    } else if (flag == "--underlay-fd") {
      const auto fd = parse_fd_ref("fd:" + value);
      if (!fd) return bad("--underlay-fd: \"" + value + "\" is not a descriptor number from 3");
      o.underlay_fd = *fd;
    } else if (flag == "--fabric-inbox") {
      if (value.empty() || value.front() != '/' || value.size() >= 108)
        return bad("--fabric-inbox: \"" + value + "\" is not an absolute path shorter than 108 bytes");
      o.fabric_inbox = value;
    }
  }
  if (o.underlay_fd >= 0 && !o.underlay)
    return bad("--underlay-fd needs --underlay ADDR:PORT: the address the socket it names is bound to");
  if (o.underlay.has_value() != (o.host_id != 0))
    return bad("the fabric needs both --underlay ADDR[:PORT] and --host-id ID (or \"fabric\": {\"underlay\", \"host_id\"})");
  if (!o.underlay && (!o.peers.empty() || !o.mappings.empty()))
    return bad("fabric peers and mappings need --underlay and --host-id");
  for (const auto& peer : o.peers)
    if (peer.host == o.host_id) return bad(peer.origin + ": host " + std::to_string(peer.host) + " is this host (--host-id)");
  if (!o.fabric_inbox.empty() && !o.underlay) return bad("\"fabric\": {\"inbox\"} (the relay) needs the fabric (--underlay, --host-id)");
  // Fabric keys never where guest memory is mapped: the relay serves no ENI, and a card
  // that relays holds no fabric of its own.
  if (!o.fabric_inbox.empty() && !o.enis.empty())
    return bad("the fabric process (\"fabric\": {\"inbox\"}) holds the fabric's keys: it serves no ENI (each instance's card does)");
  if (!o.relay_inbox.empty() && o.underlay)
    return bad("\"relay\": a card that relays to the fabric process holds no fabric keys itself (no --underlay)");
  if (o.enis.size() > kMaxEnis) return bad("more than " + std::to_string(kMaxEnis) + " ENIs");
  if (o.enis.empty() && o.control_path.empty())
    return bad("no ENI to serve: give --eni, \"enis\" in --config, or --control to add them later");
  return p;
}

const char* usage_text() {
  return R"(Usage: azote-card-net [--eni SPEC]... [--config FILE.json] [options]

Serves virtio-net devices (ENIs) to hypervisors over vhost-user, one socket per ENI,
and is their VPC: ARP, DHCP, DNS and the gateway are answered by the card; traffic
between ENIs of the same VPC is routed through security groups, on this host or, with
the fabric, to the card of another host (Geneve over UDP, AES-256-GCM).

Options:
  --eni SPEC                One ENI (repeatable):
                              socket=PATH,id=eni-...,mac=02:..,ip=10.0.1.5,
                              subnet=10.0.1.0/24|subnet-id,sg=sg-a[+sg-b],vpc=vpc-1
                              [,source-dest-check=off]
                            A VPC or security group named here and not declared in
                            --config is created: the VPC as the smallest CIDR holding
                            its ENIs' subnets, the group with EC2's defaults (all
                            outbound allowed, nothing inbound).
  --config FILE.json        The VPC model: {"region", "account", "vpcs": [{"id",
                            "cidr"}], "subnets": [{"id", "vpc", "cidr"}],
                            "security_groups": [{"id", "ingress": [RULE],
                            "egress": [RULE]}], "enis": [{"socket", "id", "mac", "ip",
                            "subnet", "vpc", "security_groups": [...],
                            "source_dest_check", "limits": {"bandwidth_mbps", "pps"},
                            "metadata": {"instance_id", "instance_type", "ami_id",
                            "availability_zone", "hostname", "user_data_b64",
                            "http_tokens"}, "inbox"}], "neighbours": [{"id", "mac",
                            "ip", "subnet", "vpc", "security_groups", "inbox",
                            "uid"}], "relay": {"inbox", "uid"}, "metrics",
                            "control", "flow_log",
                            "flow_log_window", "imds": true|false, "fabric": {"host_id", "underlay",
                            "peers": [PEER], "mappings": [{"vpc", "ip", "host"}],
                            "inbox"}}.
                            A VPC may give "vni" (1..16777215, the same on every
                            host); by default it is derived from its id. PEER:
                            {"host": ID, "address": "IPV4[:PORT]", "key": 64 hex
                            digits, "key_id": N, "cipher": "aes-256-gcm"|"none"}. RULE: {"protocol": "tcp"|"udp"|"icmp"|
                            "-1"|N, "from_port", "to_port" (or "port"), "cidr" |
                            "group"}.
  --metrics unix:PATH|fd:N  Prometheus text on a Unix socket (fd:N: one handed over by
                            the launcher): per ENI packets and bytes
                            (tx = sent by the guest, rx = delivered to it), drops by
                            reason, connections.
  --flow-log FILE           VPC flow-log records (version 2) appended to FILE.
  --flow-log-window SECONDS Capture window, 1..3600 (default 60).
  --control PATH            JSON-lines control socket: add-vpc, add-eni, remove-eni,
                            list-enis, set-security-group-rules, list-security-groups,
                            set-fabric-peer, rotate-fabric-key, add-fabric-mapping,
                            remove-fabric-mapping, list-fabric, set-eni-metadata,
                            describe-imds, add-neighbour, remove-neighbour,
                            list-neighbours, set-fabric-relay,
                            describe-fabric-relay.
                            An ENI with "inbox" binds a datagram socket there that
                            other card processes on this host (one per instance)
                            send its frames to; a neighbour is an ENI such a card
                            serves: frames for it go to its "inbox", and frames
                            claiming its address are taken only from its "uid".
                            One card per instance and the fabric's keys in a process
                            that maps no guest memory: the fabric process is a card
                            with "fabric" and its "inbox" (the relay), neighbours and
                            no ENI; each instance's card has "relay" (that inbox and
                            the fabric process's uid) and sends it frames for
                            addresses no ENI of this host owns (set-fabric-relay).
  --region NAME             DNS zone <NAME>.compute.internal (default local-1).
  --imds on|off             The instance metadata service (IMDSv2) at 169.254.169.254
                            for ENIs with "metadata" (default on; needs root, network
                            namespaces and /dev/net/tun, else the card runs without it).
  --seccomp kill|log        Each thread under its class's allowlist
                            (src/cards/net/seccomp.json): kill (default) ends the card
                            with SIGSYS on a forbidden call; log lets it through and the
                            kernel logs it (debugging only).
  --datagram-fd N           The unix datagram socket frames for other cards' inboxes
                            leave from, made by azote-launcher with a 4 MiB send buffer.
  --imds-fds TUN,LISTEN     The metadata service's namespace as two descriptors, made
                            by azote-launcher in the card's own network namespace (the
                            card then needs no privilege for it).
  --underlay IPV4[:PORT]    The fabric: the UDP address (default port 6081) this card
                            binds, in its network namespace (or that the socket of
                            --underlay-fd is bound to), to reach other hosts' cards. Their packets are Geneve with an IPv4 datagram of up
                            to 1586 bytes: the underlay's MTU must allow it.
  --underlay-fd N           The underlay's UDP socket, already bound to --underlay by
                            azote-launcher in the host's network namespace (the fabric
                            process runs in a namespace of its own): the card checks it
                            is an IPv4 UDP socket bound to exactly that address and
                            binds nothing itself.
  --host-id ID              This host's id on the fabric (1..4294967294).
  --fabric-inbox PATH       The fabric process: the relay inbox it binds (as "fabric":
                            {"inbox"} in --config), where the instances' cards send
                            frames for other hosts. Needs the fabric; no ENI.
  --log-level LEVEL         error, warn, info (default), debug.
  -h, --help                This text.    --version   The version.

Exit status: 0 stopped by SIGTERM/SIGINT; 64 usage; 66 an ENI or the VPC model is
inconsistent; 71 host failure (sockets, threads); 75 an ENI's worker did not stop
within 5 s (restart the card).
)";
}

}  // namespace azote::card_net
