// The region's VPCs, subnets and security groups as records (etcd values) and as EC2
// shapes, without I/O. The checks of addresses and rules are lib/vpc_model's, the same
// the hosts apply.
//
//   vpcs/<vpc-id>              {"id", "cidr", "owner", "default", "tags"}
//   subnets/<subnet-id>        {"id", "vpc", "cidr", "zone", "owner", "default", "tags"}
//   security-groups/<sg-id>    {"id", "vpc", "name", "description", "owner", "ingress", "egress", "tags"}
//                              (rules in the card's JSON, vpc_model::rules_json)
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/result.hpp"
#include "ec2api/error.hpp"
#include "ec2api/shapes.hpp"
#include "vpc_model/model.hpp"

namespace azote::region {

using Tags = std::vector<std::pair<std::string, std::string>>;

struct VpcRec {
  std::string id, cidr, owner_key;
  bool is_default = false;
  Tags tags;
};
struct SubnetRec {
  std::string id, vpc, cidr, zone, owner_key;
  bool is_default = false;
  Tags tags;
};
struct GroupRec {
  std::string id, vpc, name, description, owner_key;
  std::vector<vpc::Rule> ingress, egress;
  Tags tags;
};

nlohmann::json tags_json(const Tags& tags);
Tags tags_from(const nlohmann::json& j);

nlohmann::json vpc_json(const VpcRec& v);
nlohmann::json subnet_json(const SubnetRec& s);
nlohmann::json group_json(const GroupRec& g);
// nullopt for a record that does not read (a field of the wrong type, no id): skipped,
// never fatal (anyone with etcd access may have written it).
std::optional<VpcRec> vpc_from(std::string_view text);
std::optional<SubnetRec> subnet_from(std::string_view text);
std::optional<GroupRec> group_from(std::string_view text);

// The default VPC of a region (EC2: 172.31.0.0/16) and its subnet for the n-th zone
// (172.31.0.0/20, 172.31.16.0/20, ...; nullopt past the sixteenth).
inline constexpr std::string_view kDefaultVpcCidr = "172.31.0.0/16";
std::optional<std::string> default_subnet_cidr(size_t n);

// Two CIDR blocks share an address.
bool overlaps(const vpc::Cidr& a, const vpc::Cidr& b);

// EC2's IpPermissions as lib/vpc_model's permissions: IPv6 ranges and prefix lists are
// refused (InvalidParameterValue naming them): the card has neither.
Result<std::vector<vpc_model::Permission>, ec2api::Ec2Error> permissions_of(
    const std::vector<ec2api::IpPermission>& in);
// The flat form of Authorize/RevokeSecurityGroupIngress (IpProtocol, FromPort, ToPort,
// CidrIp or SourceSecurityGroupName) has been folded into `in` by the caller.
// A rule as EC2 describes it (one peer per permission).
ec2api::IpPermission ip_permission_of(const vpc::Rule& r);

// The fabric key of hosts a and b (fabric ids; the same for (a, b) and (b, a)): 32 bytes,
// HKDF-SHA256 of the region's fabric secret with info "azote fabric pair <lo> <hi>"
// (OpenSSL). Empty if OpenSSL fails.
std::string pair_key(std::string_view secret, uint32_t a, uint32_t b);

ec2api::Vpc to_ec2(const VpcRec& v, std::string_view account);
ec2api::Subnet to_ec2(const SubnetRec& s, std::string_view account, std::string_view region, int64_t available);
ec2api::SecurityGroup to_ec2(const GroupRec& g, std::string_view account);

}  // namespace azote::region
