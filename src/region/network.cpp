#include "region/network.hpp"

#include <openssl/evp.h>
#include <openssl/kdf.h>

#include <memory>

#include "vpc_policy/flow.hpp"

namespace azote::region {

using Json = nlohmann::json;

Json tags_json(const Tags& tags) {
  Json out = Json::array();
  for (const auto& [k, v] : tags) out.push_back({k, v});
  return out;
}
Tags tags_from(const Json& j) {
  Tags out;
  if (j.is_array())
    for (const auto& t : j)
      if (t.is_array() && t.size() == 2 && t[0].is_string() && t[1].is_string()) out.emplace_back(t[0], t[1]);
  return out;
}

Json vpc_json(const VpcRec& v) {
  return {{"id", v.id}, {"cidr", v.cidr}, {"owner", v.owner_key}, {"default", v.is_default}, {"tags", tags_json(v.tags)}};
}
Json subnet_json(const SubnetRec& s) {
  return {{"id", s.id},          {"vpc", s.vpc},   {"cidr", s.cidr},
          {"zone", s.zone},      {"owner", s.owner_key}, {"default", s.is_default},
          {"tags", tags_json(s.tags)}};
}
Json group_json(const GroupRec& g) {
  return {{"id", g.id},
          {"vpc", g.vpc},
          {"name", g.name},
          {"description", g.description},
          {"owner", g.owner_key},
          {"ingress", vpc_model::rules_json(g.ingress)},
          {"egress", vpc_model::rules_json(g.egress)},
          {"tags", tags_json(g.tags)}};
}

namespace {

// json::value throws on a field of the wrong type: such a record does not read.
template <class F>
auto reading(std::string_view text, F f) -> decltype(f(Json())) {
  try {
    const Json j = Json::parse(text, nullptr, false);
    if (!j.is_object()) return std::nullopt;
    return f(j);
  } catch (const Json::exception&) {
    return std::nullopt;
  }
}

}  // namespace

std::optional<VpcRec> vpc_from(std::string_view text) {
  return reading(text, [](const Json& j) -> std::optional<VpcRec> {
    VpcRec v{j.value("id", ""), j.value("cidr", ""), j.value("owner", ""), j.value("default", false),
             tags_from(j.value("tags", Json::array()))};
    if (v.id.empty() || !vpc_model::parse_cidr(v.cidr)) return std::nullopt;
    return v;
  });
}
std::optional<SubnetRec> subnet_from(std::string_view text) {
  return reading(text, [](const Json& j) -> std::optional<SubnetRec> {
    SubnetRec s{j.value("id", ""),    j.value("vpc", ""),       j.value("cidr", ""),
                j.value("zone", ""),  j.value("owner", ""),     j.value("default", false),
                tags_from(j.value("tags", Json::array()))};
    if (s.id.empty() || s.vpc.empty() || !vpc_model::parse_cidr(s.cidr)) return std::nullopt;
    return s;
  });
}
std::optional<GroupRec> group_from(std::string_view text) {
  return reading(text, [](const Json& j) -> std::optional<GroupRec> {
    GroupRec g;
    g.id = j.value("id", "");
    g.vpc = j.value("vpc", "");
    g.name = j.value("name", "");
    g.description = j.value("description", "");
    g.owner_key = j.value("owner", "");
    g.ingress = vpc_model::rules_from_json(j.value("ingress", Json::array()).dump());
    g.egress = vpc_model::rules_from_json(j.value("egress", Json::array()).dump());
    g.tags = tags_from(j.value("tags", Json::array()));
    if (g.id.empty() || g.vpc.empty()) return std::nullopt;
    return g;
  });
}

std::optional<std::string> default_subnet_cidr(size_t n) {
  if (n >= 16) return std::nullopt;
  return "172.31." + std::to_string(16 * n) + ".0/20";
}

bool overlaps(const vpc::Cidr& a, const vpc::Cidr& b) {
  const uint8_t p = std::min(a.prefix, b.prefix);
  const uint32_t mask = p == 0 ? 0u : ~0u << (32 - p);
  return (a.network & mask) == (b.network & mask);
}

Result<std::vector<vpc_model::Permission>, ec2api::Ec2Error> permissions_of(const std::vector<ec2api::IpPermission>& in) {
  std::vector<vpc_model::Permission> out;
  for (const auto& p : in) {
    if (!p.ipv6_ranges.empty())
      return ec2api::api_error("InvalidParameterValue", "IPv6 ranges are not supported: azote's VPCs are IPv4 only");
    if (!p.prefix_list_ids.empty())
      return ec2api::api_error("InvalidParameterValue", "prefix lists are not supported");
    vpc_model::Permission x;
    x.protocol = p.ip_protocol;
    if (p.from_port) x.from_port = static_cast<int>(*p.from_port);
    if (p.to_port) x.to_port = static_cast<int>(*p.to_port);
    for (const auto& r : p.ip_ranges) x.cidrs.push_back(r.cidr_ip);
    for (const auto& g : p.user_id_group_pairs) {
      if (g.group_id.empty())
        return ec2api::api_error("InvalidParameterValue", "a group pair needs a GroupId (group names are not supported)");
      x.groups.push_back(g.group_id);
    }
    out.push_back(std::move(x));
  }
  return out;
}

ec2api::IpPermission ip_permission_of(const vpc::Rule& r) {
  const vpc_model::Permission p = vpc_model::permission_of(r);
  ec2api::IpPermission o;
  o.ip_protocol = p.protocol;
  if (p.from_port) o.from_port = *p.from_port;
  if (p.to_port) o.to_port = *p.to_port;
  for (const auto& c : p.cidrs) o.ip_ranges.push_back({c, ""});
  for (const auto& g : p.groups) o.user_id_group_pairs.push_back({g, "", "", "", ""});
  return o;
}

std::string pair_key(std::string_view secret, uint32_t a, uint32_t b) {
  const std::string info = "azote fabric pair " + std::to_string(std::min(a, b)) + " " + std::to_string(std::max(a, b));
  std::unique_ptr<EVP_PKEY_CTX, decltype(&EVP_PKEY_CTX_free)> ctx(EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, nullptr),
                                                                  &EVP_PKEY_CTX_free);
  std::string out(32, '\0');
  size_t len = out.size();
  static constexpr unsigned char kSalt[] = "azote-region fabric";
  if (!ctx || EVP_PKEY_derive_init(ctx.get()) <= 0 || EVP_PKEY_CTX_set_hkdf_md(ctx.get(), EVP_sha256()) <= 0 ||
      EVP_PKEY_CTX_set1_hkdf_salt(ctx.get(), kSalt, sizeof kSalt - 1) <= 0 ||
      EVP_PKEY_CTX_set1_hkdf_key(ctx.get(), reinterpret_cast<const unsigned char*>(secret.data()),
                                 static_cast<int>(secret.size())) <= 0 ||
      EVP_PKEY_CTX_add1_hkdf_info(ctx.get(), reinterpret_cast<const unsigned char*>(info.data()),
                                  static_cast<int>(info.size())) <= 0 ||
      EVP_PKEY_derive(ctx.get(), reinterpret_cast<unsigned char*>(out.data()), &len) <= 0 || len != out.size())
    return {};
  return out;
}

ec2api::Vpc to_ec2(const VpcRec& v, std::string_view account) {
  ec2api::Vpc o;
  o.vpc_id = v.id;
  o.owner_id = account;
  o.cidr_block = v.cidr;
  o.is_default = v.is_default;
  o.cidr_block_associations.push_back({"vpc-cidr-assoc-" + v.id.substr(4), v.cidr, "associated"});
  for (const auto& [k, val] : v.tags) o.tags.push_back({k, val});
  return o;
}

ec2api::Subnet to_ec2(const SubnetRec& s, std::string_view account, std::string_view region, int64_t available) {
  ec2api::Subnet o;
  o.subnet_id = s.id;
  o.vpc_id = s.vpc;
  o.owner_id = account;
  o.cidr_block = s.cidr;
  o.availability_zone = s.zone;
  o.availability_zone_id = s.zone;
  o.available_ip_address_count = available;
  o.default_for_az = s.is_default;
  o.subnet_arn = "arn:aws:ec2:" + std::string(region) + ":" + std::string(account) + ":subnet/" + s.id;
  for (const auto& [k, val] : s.tags) o.tags.push_back({k, val});
  return o;
}

ec2api::SecurityGroup to_ec2(const GroupRec& g, std::string_view account) {
  ec2api::SecurityGroup o;
  o.group_id = g.id;
  o.group_name = g.name;
  o.description = g.description;
  o.owner_id = account;
  o.vpc_id = g.vpc;
  for (const auto& r : g.ingress) o.ip_permissions.push_back(ip_permission_of(r));
  for (const auto& r : g.egress) o.ip_permissions_egress.push_back(ip_permission_of(r));
  for (const auto& [k, val] : g.tags) o.tags.push_back({k, val});
  return o;
}

}  // namespace azote::region
