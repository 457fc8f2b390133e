// The EC2 shapes the region answers with, as plain structs (botocore's member names in
// snake_case). Conventions for the XML writers (responses.hpp): an empty string is left out
// of the document, and so is an empty optional; a few strings EC2 always sends, empty or
// not, say so. Defaults are what EC2 answers for a plain Linux instance on Nitro.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ec2api/timestamp.hpp"

namespace azote::ec2api {

struct Tag {
  std::string key;
  std::string value;  // always written (EC2 sends <value/> for an empty value)
};

struct TagDescription {
  std::string resource_id;
  std::string resource_type;  // "instance", "volume", "image", "vpc", "subnet", "security-group", ...
  std::string key;
  std::string value;  // always written
};

struct GroupIdentifier {
  std::string group_id;
  std::string group_name;
};

// EC2's instance states and their codes.
enum class InstanceStateName { kPending, kRunning, kShuttingDown, kTerminated, kStopping, kStopped };
struct InstanceState {
  int code = 0;      // 0 pending, 16 running, 32 shutting-down, 48 terminated, 64 stopping, 80 stopped
  std::string name;  // "pending", "running", ...
};
InstanceState instance_state(InstanceStateName s);
std::optional<InstanceStateName> parse_instance_state_name(std::string_view name);

struct StateReason {
  std::string code;  // e.g. "Client.UserInitiatedShutdown"
  std::string message;
};

// ---- instances ----

struct EbsInstanceBlockDevice {
  std::string volume_id;
  std::string status = "attached";  // attaching | attached | detaching | detached
  Timestamp attach_time{};
  bool delete_on_termination = true;
};

struct InstanceBlockDeviceMapping {
  std::string device_name;  // "/dev/xvda"
  EbsInstanceBlockDevice ebs;
};

struct InstanceNetworkInterfaceAttachment {
  std::string attachment_id;  // "eni-attach-..."
  int device_index = 0;
  std::string status = "attached";
  Timestamp attach_time{};
  bool delete_on_termination = true;
  int network_card_index = 0;
};

// Minimal: one private address (written as the interface's privateIpAddressesSet too).
struct InstanceNetworkInterface {
  std::string network_interface_id;
  std::string subnet_id;
  std::string vpc_id;
  std::string description;  // always written
  std::string owner_id;
  std::string status = "in-use";
  std::string mac_address;
  std::string private_ip_address;
  std::string private_dns_name;
  bool source_dest_check = true;
  std::vector<GroupIdentifier> groups;
  InstanceNetworkInterfaceAttachment attachment;
  std::string interface_type = "interface";
};

struct Placement {
  std::string availability_zone;
  std::string group_name;  // always written, as EC2 (empty for none)
  std::string tenancy = "default";
};

struct CpuOptions {
  int core_count = 1;
  int threads_per_core = 2;
};

struct InstanceMetadataOptions {
  std::string state = "applied";       // pending | applied
  std::string http_tokens = "optional";  // optional | required
  int http_put_response_hop_limit = 1;
  std::string http_endpoint = "enabled";
  std::string http_protocol_ipv6 = "disabled";
  std::string instance_metadata_tags = "disabled";
};

struct Instance {
  std::string instance_id;
  std::string image_id;
  InstanceState state;
  std::string private_dns_name;         // always written
  std::string public_dns_name;          // always written (<dnsName/> without a public address)
  std::string state_transition_reason;  // always written (<reason/>)
  std::string key_name;
  int ami_launch_index = 0;
  std::string instance_type;
  Timestamp launch_time{};
  Placement placement;
  std::string monitoring_state = "disabled";
  std::string subnet_id;
  std::string vpc_id;
  std::string private_ip_address;
  std::string public_ip_address;
  std::optional<StateReason> state_reason;
  std::string architecture = "x86_64";
  std::string root_device_type = "ebs";
  std::string root_device_name = "/dev/xvda";
  std::vector<InstanceBlockDeviceMapping> block_device_mappings;  // always written
  std::string virtualization_type = "hvm";
  std::string hypervisor = "xen";  // EC2 says "xen" for Nitro instances too (the model knows ovm | xen)
  std::string client_token;
  std::vector<Tag> tags;                      // left out when empty, as EC2
  std::vector<GroupIdentifier> security_groups;  // always written
  std::vector<InstanceNetworkInterface> network_interfaces;  // always written
  bool source_dest_check = true;
  bool ebs_optimized = false;
  bool ena_support = true;
  std::optional<CpuOptions> cpu_options;
  InstanceMetadataOptions metadata_options;
  bool enclave_options_enabled = false;
  bool hibernation_configured = false;
  std::string boot_mode;    // "legacy-bios" | "uefi" | "uefi-preferred"
  std::string tpm_support;  // "v2.0"
  std::string platform_details = "Linux/UNIX";
  std::string usage_operation = "RunInstances";
};

struct Reservation {
  std::string reservation_id;  // "r-..."
  std::string owner_id;        // the account, 12 digits
  std::string requester_id;
  std::vector<GroupIdentifier> groups;  // always written (empty in a VPC)
  std::vector<Instance> instances;
};

struct InstanceStateChange {
  std::string instance_id;
  InstanceState current_state;
  InstanceState previous_state;
};

struct InstanceStatusDetails {
  std::string name = "reachability";
  std::string status = "passed";  // passed | failed | insufficient-data | initializing
  std::optional<Timestamp> impaired_since;
};

struct InstanceStatusSummary {
  std::string status = "ok";  // ok | impaired | insufficient-data | not-applicable | initializing
  std::vector<InstanceStatusDetails> details{InstanceStatusDetails{}};
};

struct InstanceStatus {
  std::string instance_id;
  std::string availability_zone;
  InstanceState instance_state;
  InstanceStatusSummary instance_status;
  InstanceStatusSummary system_status;
};

// ---- volumes and block devices ----

struct VolumeAttachment {
  std::string volume_id;
  std::string instance_id;
  std::string device;
  std::string state = "attached";  // attaching | attached | detaching | detached | busy
  Timestamp attach_time{};
  std::optional<bool> delete_on_termination;
};

struct Volume {
  std::string volume_id;
  int64_t size = 0;  // GiB
  std::string snapshot_id;  // always written (EC2 sends <snapshotId/>)
  std::string availability_zone;
  std::string state = "available";  // creating | available | in-use | deleting | deleted | error
  Timestamp create_time{};
  std::vector<VolumeAttachment> attachments;  // always written
  std::string volume_type = "gp3";
  std::optional<int64_t> iops;
  std::optional<int64_t> throughput;
  bool encrypted = false;
  std::string kms_key_id;
  bool multi_attach_enabled = false;
  std::vector<Tag> tags;
};

// Also a request shape (RunInstances, RegisterImage: request.hpp reads it).
struct EbsBlockDevice {
  std::optional<bool> delete_on_termination;
  std::optional<int64_t> iops;
  std::string snapshot_id;
  std::optional<int64_t> volume_size;
  std::string volume_type;
  std::string kms_key_id;
  std::optional<int64_t> throughput;
  std::optional<bool> encrypted;
};

struct BlockDeviceMapping {
  std::string device_name;
  std::string virtual_name;
  std::string no_device;
  std::optional<EbsBlockDevice> ebs;
};

// ---- images ----

struct Image {
  std::string image_id;
  std::string image_location;
  std::string state = "available";  // pending | available | invalid | deregistered | transient | failed | error
  std::string owner_id;
  std::optional<Timestamp> creation_date;  // the model's string, in EC2's timestamp format
  bool is_public = false;
  std::string architecture = "x86_64";
  std::string image_type = "machine";
  std::string name;
  std::string description;
  std::string root_device_type = "ebs";
  std::string root_device_name = "/dev/xvda";
  std::vector<BlockDeviceMapping> block_device_mappings;  // always written
  std::string virtualization_type = "hvm";
  std::string hypervisor = "xen";
  bool ena_support = true;
  std::string sriov_net_support;
  std::string boot_mode;
  std::string tpm_support;
  std::string imds_support;  // "v2.0" when only IMDSv2 may be used
  std::string platform_details = "Linux/UNIX";
  std::string usage_operation = "RunInstances";
  std::optional<StateReason> state_reason;
  std::vector<Tag> tags;
};

// ---- VPCs, subnets, security groups ----

struct VpcCidrBlockAssociation {
  std::string association_id;  // "vpc-cidr-assoc-..."
  std::string cidr_block;
  std::string state = "associated";
};

struct Vpc {
  std::string vpc_id;
  std::string owner_id;
  std::string cidr_block;
  std::string state = "available";  // pending | available
  std::string dhcp_options_id = "default";
  std::string instance_tenancy = "default";
  bool is_default = false;
  std::vector<VpcCidrBlockAssociation> cidr_block_associations;
  std::vector<Tag> tags;
};

struct Subnet {
  std::string subnet_id;
  std::string vpc_id;
  std::string owner_id;
  std::string cidr_block;
  std::string availability_zone;
  std::string availability_zone_id;
  std::string state = "available";
  int64_t available_ip_address_count = 0;
  bool default_for_az = false;
  bool map_public_ip_on_launch = false;
  bool assign_ipv6_address_on_creation = false;
  std::string subnet_arn;
  std::vector<Tag> tags;
};

struct IpRange {
  std::string cidr_ip;
  std::string description;
};
struct Ipv6Range {
  std::string cidr_ipv6;
  std::string description;
};
struct PrefixListId {
  std::string prefix_list_id;
  std::string description;
};
struct UserIdGroupPair {
  std::string group_id;
  std::string group_name;
  std::string user_id;
  std::string vpc_id;
  std::string description;
};

// A security group rule set as EC2 describes it and as requests give it (request.hpp).
struct IpPermission {
  std::string ip_protocol;  // "tcp" | "udp" | "icmp" | "icmpv6" | "-1" (all) | a number
  std::optional<int64_t> from_port;  // ICMP type for icmp, -1 for all
  std::optional<int64_t> to_port;    // ICMP code for icmp
  std::vector<IpRange> ip_ranges;
  std::vector<Ipv6Range> ipv6_ranges;
  std::vector<PrefixListId> prefix_list_ids;
  std::vector<UserIdGroupPair> user_id_group_pairs;
};

struct SecurityGroup {
  std::string group_id;
  std::string group_name;
  std::string description;
  std::string owner_id;
  std::string vpc_id;
  std::vector<IpPermission> ip_permissions;         // always written
  std::vector<IpPermission> ip_permissions_egress;  // always written
  std::vector<Tag> tags;
};

// One rule of AuthorizeSecurityGroupIngress/Egress's answer.
struct SecurityGroupRule {
  std::string security_group_rule_id;  // "sgr-..."
  std::string group_id;
  std::string group_owner_id;
  bool is_egress = false;
  std::string ip_protocol;
  std::optional<int64_t> from_port;
  std::optional<int64_t> to_port;
  std::string cidr_ipv4;
  std::string cidr_ipv6;
  std::string prefix_list_id;
  std::string referenced_group_id;  // referencedGroupInfo
  std::string description;
  std::vector<Tag> tags;
};

// ---- instance types, zones, regions ----

struct InstanceTypeInfo {
  std::string instance_type;
  bool current_generation = true;
  bool free_tier_eligible = false;
  std::vector<std::string> supported_usage_classes{"on-demand"};
  std::vector<std::string> supported_root_device_types{"ebs"};
  std::vector<std::string> supported_virtualization_types{"hvm"};
  bool bare_metal = false;
  std::string hypervisor = "nitro";
  std::vector<std::string> supported_architectures{"x86_64"};
  std::optional<double> sustained_clock_speed_ghz;
  int default_vcpus = 1;
  std::optional<int> default_cores;
  std::optional<int> default_threads_per_core;
  int64_t memory_mib = 0;
  bool instance_storage_supported = false;
  std::string ebs_optimized_support = "default";  // unsupported | supported | default
  std::string ebs_encryption_support = "supported";
  std::string ebs_nvme_support = "required";
  std::string network_performance;  // "Up to 5 Gigabit"
  int maximum_network_interfaces = 1;
  int ipv4_addresses_per_interface = 1;
  int ipv6_addresses_per_interface = 0;
  bool ipv6_supported = false;
  std::string ena_support = "required";  // unsupported | supported | required
  bool hibernation_supported = false;
  bool burstable_performance_supported = false;
  bool dedicated_hosts_supported = false;
  bool auto_recovery_supported = true;
  std::vector<std::string> supported_boot_modes{"legacy-bios", "uefi"};
};

struct AvailabilityZone {
  std::string zone_name;  // "az1-a"
  std::string zone_id;
  std::string region_name;
  std::string state = "available";  // available | information | impaired | unavailable
  std::string opt_in_status = "opt-in-not-required";
  std::string group_name;  // the region's name, as EC2
  std::string network_border_group;
  std::string zone_type = "availability-zone";
  std::vector<std::string> messages;
};

struct Region {
  std::string region_name;
  std::string endpoint;  // "ec2.az1.example"
  std::string opt_in_status = "opt-in-not-required";
};

}  // namespace azote::ec2api
