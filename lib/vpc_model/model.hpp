// A VPC as EC2 models it, without any I/O (the host's controller and azote-region both use it): which addresses of a
// subnet an ENI may get, MAC addresses, security group rules as EC2 validates them
// (from the API's IpPermission to lib/vpc_policy rules, with EC2's error codes), the
// rule JSON of azote-card-net's control socket (also how rules are stored), and
// base64 for the user data the card's metadata service serves.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/error.hpp"
#include "vpc_policy/security_group.hpp"

namespace azote::vpc_model {

// An EC2 error of the model: its code ("InvalidParameterValue", ...), whether it says that
// something named does not exist (the APIs answer those as not found), one sentence.
struct ModelError {
  std::string code;
  std::string sentence;
  bool not_found = false;
  std::string message() const { return code + ": " + sentence; }
};
template <class T>
using ModelResult = Result<T, ModelError>;
inline Unexpected<ModelError> model_error(bool not_found, std::string code, std::string sentence) {
  return Unexpected<ModelError>(ModelError{std::move(code), std::move(sentence), not_found});
}

// "a.b.c.d/n" with the host bits zero.
std::optional<vpc::Cidr> parse_cidr(std::string_view text);
// A VPC CIDR (/16 to /28, as EC2) and a subnet inside it (/16 to /28, the card's
// limits); the sentence of an error otherwise.
std::optional<std::string> check_network_layout(std::string_view vpc_cidr, std::string_view subnet_cidr);

// EC2 reserves five addresses of every subnet: the network address, .1 (the router),
// .2 (DNS), .3 (future use) and the broadcast address.
bool reserved_address(const vpc::Cidr& subnet, uint32_t ip);
// Addresses an ENI of the subnet may have: its size minus the five reserved ones.
uint32_t usable_addresses(const vpc::Cidr& subnet);
// The lowest usable address of the subnet not in `used`; nullopt when it is full.
std::optional<uint32_t> next_free_address(const vpc::Cidr& subnet, const std::set<uint32_t>& used);
// "ip-10-0-1-4.<region>.compute.internal", the name the card's DHCP and DNS give it.
std::string private_dns_name(uint32_t ip, std::string_view region);

// A random locally administered unicast MAC, "02:xx:xx:xx:xx:xx", never one of the
// card's gateway MACs ("02:a2:" + the subnet's network address) nor one in `used`.
std::string new_mac(const std::set<std::string>& used);
bool valid_mac(std::string_view mac);

// One IpPermission of Authorize/RevokeSecurityGroupIngress/Egress.
struct Permission {
  std::string protocol;  // "tcp", "udp", "icmp", "-1"/"all" or a number 0-255
  std::optional<int> from_port, to_port;
  std::vector<std::string> cidrs, groups;
};
// Every (protocol, ports, peer) of `perms` as a rule, or EC2's error: MissingParameter,
// InvalidParameterValue (protocol, ports, CIDR), InvalidGroupId.Malformed,
// InvalidGroup.NotFound (`group_exists` says which group ids may be named).
ModelResult<std::vector<vpc::Rule>> rules_of(const std::vector<Permission>& perms,
                                           const std::function<bool(const std::string&)>& group_exists);
// A rule as EC2 describes it, one peer per permission.
Permission permission_of(const vpc::Rule& r);
// The protocol as EC2 prints it: "tcp", "udp", "icmp", "-1", or the number.
std::string protocol_name(int protocol);

// The rule as azote-card-net's set-security-group-rules takes it ({"protocol",
// "from_port", "to_port", "cidr" | "group"}); the store keeps rules in this form too.
nlohmann::json rule_json(const vpc::Rule& r);
std::optional<vpc::Rule> rule_from_json(const nlohmann::json& j);
nlohmann::json rules_json(const std::vector<vpc::Rule>& rules);
std::vector<vpc::Rule> rules_from_json(const std::string& text);  // unreadable entries are skipped

// The rules of a VPC's "default" group (EC2): inbound from members of the group
// itself, all outbound. A new group: no inbound, all outbound.
std::vector<vpc::Rule> default_group_ingress(const std::string& group_id);
std::vector<vpc::Rule> default_egress();

std::string base64(std::string_view bytes);

}  // namespace azote::vpc_model
