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
#include "fabric/session.hpp"
#include "net/addr.hpp"
#include "vpc_policy/security_group.hpp"

namespace azote::card_net {

enum class OptionsErrc { kUsage = 1 };
using OptionsError = Error<OptionsErrc>;

inline constexpr uint32_t kMaxEnis = 64;

struct VpcSpec {
  std::string id;        // "vpc-..."
  net::Ipv4Prefix cidr;  // /8 .. /28
  // The Geneve VNI of the VPC on the fabric (1 .. 0xffffff), the same on every host;
  // nullopt: derived from the id (vni_for(), FNV-1a folded to 24 bits).
  std::optional<uint32_t> vni = std::nullopt;
};
uint32_t vni_for(const std::string& vpc_id);

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

// Per-ENI limits, per direction (enforced by the worker: limits.hpp, DESIGN.md "Limits").
struct EniLimits {
  uint64_t bandwidth_mbps = 0;  // 0: not given
  uint64_t pps = 0;
};

// What the instance metadata service (169.254.169.254, lib/imds) serves for the ENI's
// instance, besides what the card knows itself: the ENI's address and MAC, the region and
// account (card options), the security groups (the ENI's group ids). An absent field is
// served empty. "http_tokens" absent is "optional": IMDSv1 (no token) is answered too, as
// for EC2 instances launched without MetadataOptions; a token, when sent, is checked.
struct InstanceMetadata {
  std::string instance_id;  // "i-..."
  std::string instance_type;
  std::string ami_id;       // "ami-..."
  std::string availability_zone;
  std::string hostname;
  std::string user_data;    // decoded from "user_data_b64" (at most 16 KiB, as EC2)
  bool http_tokens_required = false;  // "http_tokens": "optional" (default) | "required"
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
  std::optional<EniLimits> limits = std::nullopt;          // "limits" (JSON only)
  std::optional<InstanceMetadata> metadata = std::nullopt;  // "metadata" (JSON only): IMDS
  // The ENI's inbox on this host ("inbox": a unix datagram socket path): where card
  // processes serving other instances put frames routed to it (DESIGN.md "One card per
  // instance"). An ENI this card serves binds it; a neighbour's is where it sends.
  std::string inbox;
  // A neighbour only ("uid", JSON only): the uid of the card process serving it; a frame
  // in this card's inbox that claims the neighbour's address must come from that uid.
  std::optional<uint32_t> uid = std::nullopt;
};

// An IPv4 address and UDP port on the underlay ("ADDR[:PORT]", default port 6081).
struct Endpoint {
  net::Ipv4Address addr;
  uint16_t port = 6081;
  std::string to_string() const { return addr.to_string() + ":" + std::to_string(port); }
};

// A host at the other end of the fabric and the key this host shares with it.
struct FabricPeerSpec {
  std::string origin;  // for messages
  fabric::HostId host = 0;
  Endpoint address;
  fabric::PeerKey key;
};

// Where an address of a VPC lives: (VPC, private IPv4) -> host.
struct FabricMappingSpec {
  std::string vpc;
  net::Ipv4Address ip;
  fabric::HostId host = 0;
};

struct CardOptions {
  std::string region = "local-1";  // DNS: ip-a-b-c-d.<region>.compute.internal
  std::string account = "000000000000";  // flow-log account id
  std::vector<VpcSpec> vpcs;
  std::vector<SubnetSpec> subnets;
  std::vector<GroupSpec> groups;
  std::vector<EniSpec> enis;
  // ENIs of this host served by other card processes ("neighbours" in --config): no
  // socket, an "inbox" and a "uid" each.
  std::vector<EniSpec> neighbours;
  std::string metrics_path;   // --metrics unix:PATH
  std::string control_path;   // --control PATH
  std::string flow_log_path;  // --flow-log FILE (appended)
  uint32_t flow_log_window_s = 60;  // --flow-log-window SECONDS (1..3600)
  std::string log_level = "info";
  std::string seccomp = "kill";  // --seccomp kill|log
  // The fabric (--host-id, --underlay, "fabric" in --config): both or neither.
  fabric::HostId host_id = 0;
  std::optional<Endpoint> underlay = std::nullopt;
  // --underlay-fd N: the underlay's UDP socket, already bound to `underlay` by whoever
  // started the card (azote-launcher, in the host's network namespace, for the fabric
  // process); the card checks it is and binds nothing itself. -1: the card makes and
  // binds its own, in its own network namespace.
  int underlay_fd = -1;
  std::vector<FabricPeerSpec> peers;
  std::vector<FabricMappingSpec> mappings;
  // The fabric process of a host with one card per instance ("fabric": {"inbox"} or
  // --fabric-inbox PATH): the relay inbox it binds; such a card holds the keys and serves
  // no ENI (neighbours only).
  std::string fabric_inbox;
  // An instance's card ("relay": {"inbox", "uid"}): the fabric process's relay inbox and
  // uid; frames for VPC addresses no ENI of this host owns go there.
  std::string relay_inbox;
  uint32_t relay_uid = 0;
  // The instance metadata service (--imds on|off, "imds": true|false; default on). When
  // it cannot start (not root, no network namespaces or /dev/net/tun) the card runs
  // without it.
  bool imds = true;
  // --imds-fds TUN,LISTEN: the metadata service's namespace prepared by the launcher
  // (the card runs in it, unprivileged); -1: make one (needs root).
  int imds_tun_fd = -1, imds_listen_fd = -1;
  // --datagram-fd N: the unix datagram socket to send other cards' inboxes frames from,
  // made by the launcher with a 4 MiB send buffer; -1: the card makes one (4 MiB when it
  // may, i.e. run by hand as root; else the host's default).
  int datagram_fd = -1;
  // Not an option: why main() could not make the namespace itself (no root, ...).
  std::string imds_unavailable;
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
// "source_dest_check" a boolean, and "inbox" a path) or the --eni string.
Result<EniSpec, OptionsError> parse_eni_json(const std::string& where, const nlohmann::json& j);
// A neighbour: an ENI of this host another card process serves: the ENI keys without
// "socket", "limits" or "metadata", with "inbox" (its path) and "uid" (of its card).
Result<EniSpec, OptionsError> parse_neighbour_json(const std::string& where, const nlohmann::json& j);
// One security group rule: {"protocol": "udp"|"tcp"|"icmp"|"-1"|N, "from_port": N,
// "to_port": N (or "port": N), "cidr": "a.b.c.d/n" | "group": "sg-..."}; ICMP uses
// from_port = type, to_port = code (-1: any).
Result<vpc::Rule, OptionsError> parse_rule_json(const std::string& where, const nlohmann::json& j);
Result<std::vector<vpc::Rule>, OptionsError> parse_rules_json(const std::string& where, const nlohmann::json& j);

// "ADDR[:PORT]" (IPv4; port 1..65535, default 6081).
Result<Endpoint, OptionsError> parse_endpoint(const std::string& where, const std::string& text);
// A host id: 1 .. 4294967294 (a JSON number or a decimal string).
Result<fabric::HostId, OptionsError> parse_host_id(const std::string& where, const nlohmann::json& j);
// {"host": ID, "address": "ADDR[:PORT]", "key": 64 hex digits, "key_id": N,
//  "cipher": "aes-256-gcm" (default) | "none"}; "key" is not needed with "none".
Result<FabricPeerSpec, OptionsError> parse_peer_json(const std::string& where, const nlohmann::json& j);
// {"host": ID, "key": hex, "key_id": N, "cipher"}: a rotation (no address).
Result<fabric::PeerKey, OptionsError> parse_key_json(const std::string& where, const nlohmann::json& j);
// {"vpc": "vpc-1", "ip": "10.0.1.6", "host": ID}.
Result<FabricMappingSpec, OptionsError> parse_mapping_json(const std::string& where, const nlohmann::json& j);
// An ENI's "metadata": {"instance_id", "instance_type", "ami_id", "availability_zone",
// "hostname", "user_data_b64", "http_tokens": "optional"|"required"} (all optional).
Result<InstanceMetadata, OptionsError> parse_metadata_json(const std::string& where, const nlohmann::json& j);
// `{"bandwidth_mbps": 1..400000, "pps": 1..100000000}`, at least one of them.
Result<EniLimits, OptionsError> parse_limits(const std::string& where, const nlohmann::json& j);
// {"id", "cidr", "vni"?}.
Result<VpcSpec, OptionsError> parse_vpc_json(const std::string& where, const nlohmann::json& j);

Result<void, OptionsError> apply_json(const std::string& text, const std::string& origin, CardOptions* out);

const char* usage_text();

}  // namespace azote::card_net
