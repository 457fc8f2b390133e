// Command line and JSON configuration of azote-card-net: the VPC model (VPCs, subnets,
// security groups, ENIs) and the card's own sockets and files. Pure parsing: nothing
// here opens a file or a socket, and cross-object checks (an ENI's address inside its
// subnet, ...) are the Switch's (switch.hpp), so the control socket gets the same ones.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/error.hpp"
#include "net/addr.hpp"
#include "vpc_policy/security_group.hpp"

namespace azote::card_net {

enum class OptionsErrc { kUsage = 1 };
using OptionsError = Error<OptionsErrc>;

inline constexpr uint32_t kMaxEnis = 64;

struct VpcSpec {
  std::string id;        // "vpc-..."
  net::Ipv4Prefix cidr;  // /8 .. /28
};

struct SubnetSpec {
  std::string id;  // "subnet-..." (an implicit subnet from --eni is named by its CIDR)
  std::string vpc;
  net::Ipv4Prefix cidr;  // inside the VPC's, /16 .. /28
};

struct GroupSpec {
  std::string id;  // "sg-..."
  // nullopt: left as they are (a new group: no inbound rule, and EC2's default
  // outbound rule, all traffic to 0.0.0.0/0).
  std::optional<std::vector<vpc::Rule>> ingress;
  std::optional<std::vector<vpc::Rule>> egress;
};

struct EniSpec {
  std::string origin;  // for messages: "--eni id=..." or "FILE: enis[1]"
  std::string id;      // "eni-..."
  std::string socket;  // vhost-user socket (the card listens)
  net::MacAddress mac;
  net::Ipv4Address ip;
  std::string subnet;  // a subnet id, or a CIDR ("10.0.1.0/24")
  std::string vpc;     // may be empty when `subnet` names a declared subnet
  std::vector<std::string> groups;  // 1..5
  bool source_dest_check = true;
};

struct CardOptions {
  std::string region = "local-1";  // DNS: ip-a-b-c-d.<region>.compute.internal
  std::string account = "000000000000";  // flow-log account id
  std::vector<VpcSpec> vpcs;
  std::vector<SubnetSpec> subnets;
  std::vector<GroupSpec> groups;
  std::vector<EniSpec> enis;
  std::string metrics_path;   // --metrics unix:PATH
  std::string control_path;   // --control PATH
  std::string flow_log_path;  // --flow-log FILE (appended)
  uint32_t flow_log_window_s = 60;  // --flow-log-window SECONDS (1..3600)
  std::string log_level = "info";
};

struct ParsedArgs {
  CardOptions options;
  bool help = false;
  bool version = false;
};
// --config is applied first wherever it appears; --eni flags add to the file's ENIs.
Result<ParsedArgs, OptionsError> parse_args(const std::vector<std::string>& args);

// "socket=PATH,id=eni-a,mac=02:..,ip=10.0.1.5,subnet=10.0.1.0/24,sg=sg-a+sg-b,vpc=vpc-1
// [,source-dest-check=off]".
Result<EniSpec, OptionsError> parse_eni(const std::string& origin, const std::string& spec);
// An ENI as JSON: an object with the same keys ("security_groups" may be an array,
// "source_dest_check" a boolean) or the --eni string.
Result<EniSpec, OptionsError> parse_eni_json(const std::string& where, const nlohmann::json& j);
// One security group rule: {"protocol": "udp"|"tcp"|"icmp"|"-1"|N, "from_port": N,
// "to_port": N (or "port": N), "cidr": "a.b.c.d/n" | "group": "sg-..."}; ICMP uses
// from_port = type, to_port = code (-1: any).
Result<vpc::Rule, OptionsError> parse_rule_json(const std::string& where, const nlohmann::json& j);
Result<std::vector<vpc::Rule>, OptionsError> parse_rules_json(const std::string& where, const nlohmann::json& j);

Result<void, OptionsError> apply_json(const std::string& text, const std::string& origin, CardOptions* out);

const char* usage_text();

}  // namespace azote::card_net
