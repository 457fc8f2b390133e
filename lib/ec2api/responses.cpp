#include "ec2api/responses.hpp"

namespace azote::ec2api {

namespace {

void write_state(Element e, const InstanceState& s) { e.integer("code", s.code).text("name", s.name); }

void write_group(Element e, const GroupIdentifier& g) { e.text("groupId", g.group_id).text("groupName", g.group_name); }

void write_state_reason(Element e, const StateReason& r) { e.text("code", r.code).text("message", r.message); }

void write_network_interface(Element e, const InstanceNetworkInterface& n) {
  e.text("networkInterfaceId", n.network_interface_id)
      .text_if("subnetId", n.subnet_id)
      .text_if("vpcId", n.vpc_id)
      .text("description", n.description)
      .text_if("ownerId", n.owner_id)
      .text("status", n.status)
      .text_if("macAddress", n.mac_address)
      .text_if("privateIpAddress", n.private_ip_address)
      .text_if("privateDnsName", n.private_dns_name)
      .boolean("sourceDestCheck", n.source_dest_check)
      .list("groupSet", n.groups, write_group);
  const auto& a = n.attachment;
  e.child("attachment")
      .text("attachmentId", a.attachment_id)
      .integer("deviceIndex", a.device_index)
      .text("status", a.status)
      .timestamp("attachTime", a.attach_time)
      .boolean("deleteOnTermination", a.delete_on_termination)
      .integer("networkCardIndex", a.network_card_index);
  Element ips = e.child("privateIpAddressesSet");
  if (!n.private_ip_address.empty())
    ips.item()
        .text("privateIpAddress", n.private_ip_address)
        .text_if("privateDnsName", n.private_dns_name)
        .boolean("primary", true);
  e.child("ipv6AddressesSet");
  e.text_if("interfaceType", n.interface_type);
}

void write_status_summary(Element e, const InstanceStatusSummary& s) {
  e.text("status", s.status).list("details", s.details, [](Element d, const InstanceStatusDetails& x) {
    d.text("name", x.name).text("status", x.status).timestamp_if("impairedSince", x.impaired_since);
  });
}

void write_ebs(Element e, const EbsBlockDevice& b) {
  e.boolean_if("deleteOnTermination", b.delete_on_termination)
      .integer_if("iops", b.iops)
      .text_if("snapshotId", b.snapshot_id)
      .integer_if("volumeSize", b.volume_size)
      .text_if("volumeType", b.volume_type)
      .text_if("kmsKeyId", b.kms_key_id)
      .integer_if("throughput", b.throughput)
      .boolean_if("encrypted", b.encrypted);
}

// A document whose root holds one shape's members.
template <class T>
std::string shape_document(std::string_view action, std::string_view rid, const T& x,
                           void (*write)(Element, const T&)) {
  Document d(action, rid);
  write(d.root(), x);
  return d.str();
}

// A document whose root holds one list (and maybe a nextToken).
template <class T>
std::string list_document(std::string_view action, std::string_view rid, std::string_view list_name,
                          const std::vector<T>& xs, void (*write)(Element, const T&), std::string_view next_token) {
  Document d(action, rid);
  d.root().list(list_name, xs, write).text_if("nextToken", next_token);
  return d.str();
}

}  // namespace

// ---- shapes ----

void write_tags(Element parent, const std::vector<Tag>& tags) {
  parent.list_if("tagSet", tags, [](Element e, const Tag& t) { e.text("key", t.key).text("value", t.value); });
}

void write_instance(Element e, const Instance& i) {
  e.text("instanceId", i.instance_id).text("imageId", i.image_id);
  write_state(e.child("instanceState"), i.state);
  e.text("privateDnsName", i.private_dns_name)
      .text("dnsName", i.public_dns_name)
      .text("reason", i.state_transition_reason)
      .text_if("keyName", i.key_name)
      .integer("amiLaunchIndex", i.ami_launch_index)
      .child("productCodes");
  e.text("instanceType", i.instance_type).timestamp("launchTime", i.launch_time);
  e.child("placement")
      .text("availabilityZone", i.placement.availability_zone)
      .text("groupName", i.placement.group_name)
      .text("tenancy", i.placement.tenancy);
  e.child("monitoring").text("state", i.monitoring_state);
  e.text_if("subnetId", i.subnet_id)
      .text_if("vpcId", i.vpc_id)
      .text_if("privateIpAddress", i.private_ip_address)
      .text_if("ipAddress", i.public_ip_address)
      .boolean("sourceDestCheck", i.source_dest_check)
      .list("groupSet", i.security_groups, write_group);
  if (i.state_reason) write_state_reason(e.child("stateReason"), *i.state_reason);
  e.text("architecture", i.architecture)
      .text("rootDeviceType", i.root_device_type)
      .text("rootDeviceName", i.root_device_name)
      .list("blockDeviceMapping", i.block_device_mappings,
            [](Element m, const InstanceBlockDeviceMapping& x) {
              m.text("deviceName", x.device_name)
                  .child("ebs")
                  .text("volumeId", x.ebs.volume_id)
                  .text("status", x.ebs.status)
                  .timestamp("attachTime", x.ebs.attach_time)
                  .boolean("deleteOnTermination", x.ebs.delete_on_termination);
            })
      .text("virtualizationType", i.virtualization_type)
      .text_if("clientToken", i.client_token);
  write_tags(e, i.tags);
  e.text("hypervisor", i.hypervisor)
      .list("networkInterfaceSet", i.network_interfaces, write_network_interface)
      .boolean("ebsOptimized", i.ebs_optimized)
      .boolean("enaSupport", i.ena_support);
  if (i.cpu_options)
    e.child("cpuOptions")
        .integer("coreCount", i.cpu_options->core_count)
        .integer("threadsPerCore", i.cpu_options->threads_per_core);
  e.child("hibernationOptions").boolean("configured", i.hibernation_configured);
  e.child("enclaveOptions").boolean("enabled", i.enclave_options_enabled);
  const auto& m = i.metadata_options;
  e.child("metadataOptions")
      .text("state", m.state)
      .text("httpTokens", m.http_tokens)
      .integer("httpPutResponseHopLimit", m.http_put_response_hop_limit)
      .text("httpEndpoint", m.http_endpoint)
      .text("httpProtocolIpv6", m.http_protocol_ipv6)
      .text("instanceMetadataTags", m.instance_metadata_tags);
  e.text_if("bootMode", i.boot_mode)
      .text_if("tpmSupport", i.tpm_support)
      .text_if("platformDetails", i.platform_details)
      .text_if("usageOperation", i.usage_operation);
}

void write_reservation(Element e, const Reservation& r) {
  e.text("reservationId", r.reservation_id)
      .text("ownerId", r.owner_id)
      .text_if("requesterId", r.requester_id)
      .list("groupSet", r.groups, write_group)
      .list("instancesSet", r.instances, write_instance);
}

void write_instance_state_change(Element e, const InstanceStateChange& c) {
  e.text("instanceId", c.instance_id);
  write_state(e.child("currentState"), c.current_state);
  write_state(e.child("previousState"), c.previous_state);
}

void write_instance_status(Element e, const InstanceStatus& s) {
  e.text("instanceId", s.instance_id).text("availabilityZone", s.availability_zone);
  write_state(e.child("instanceState"), s.instance_state);
  write_status_summary(e.child("systemStatus"), s.system_status);
  write_status_summary(e.child("instanceStatus"), s.instance_status);
}

void write_volume_attachment(Element e, const VolumeAttachment& a) {
  e.text("volumeId", a.volume_id)
      .text("instanceId", a.instance_id)
      .text("device", a.device)
      .text("status", a.state)
      .timestamp("attachTime", a.attach_time)
      .boolean_if("deleteOnTermination", a.delete_on_termination);
}

void write_volume(Element e, const Volume& v) {
  e.text("volumeId", v.volume_id)
      .integer("size", v.size)
      .text("snapshotId", v.snapshot_id)
      .text("availabilityZone", v.availability_zone)
      .text("status", v.state)
      .timestamp("createTime", v.create_time)
      .list("attachmentSet", v.attachments, write_volume_attachment)
      .text("volumeType", v.volume_type)
      .integer_if("iops", v.iops)
      .integer_if("throughput", v.throughput)
      .boolean("encrypted", v.encrypted)
      .text_if("kmsKeyId", v.kms_key_id)
      .boolean("multiAttachEnabled", v.multi_attach_enabled);
  write_tags(e, v.tags);
}

void write_block_device_mapping(Element e, const BlockDeviceMapping& m) {
  e.text_if("deviceName", m.device_name).text_if("virtualName", m.virtual_name).text_if("noDevice", m.no_device);
  if (m.ebs) write_ebs(e.child("ebs"), *m.ebs);
}

void write_image(Element e, const Image& i) {
  e.text("imageId", i.image_id)
      .text_if("imageLocation", i.image_location)
      .text("imageState", i.state)
      .text("imageOwnerId", i.owner_id);
  if (i.creation_date) e.text("creationDate", format_timestamp(*i.creation_date));
  e.boolean("isPublic", i.is_public)
      .text("architecture", i.architecture)
      .text("imageType", i.image_type)
      .text_if("platformDetails", i.platform_details)
      .text_if("usageOperation", i.usage_operation)
      .text_if("name", i.name)
      .text_if("description", i.description)
      .text("rootDeviceType", i.root_device_type)
      .text_if("rootDeviceName", i.root_device_name)
      .list("blockDeviceMapping", i.block_device_mappings, write_block_device_mapping)
      .text("virtualizationType", i.virtualization_type)
      .text("hypervisor", i.hypervisor)
      .boolean("enaSupport", i.ena_support)
      .text_if("sriovNetSupport", i.sriov_net_support)
      .text_if("bootMode", i.boot_mode)
      .text_if("tpmSupport", i.tpm_support)
      .text_if("imdsSupport", i.imds_support);
  if (i.state_reason) write_state_reason(e.child("stateReason"), *i.state_reason);
  write_tags(e, i.tags);
}

void write_vpc(Element e, const Vpc& v) {
  e.text("vpcId", v.vpc_id)
      .text("ownerId", v.owner_id)
      .text("state", v.state)
      .text("cidrBlock", v.cidr_block)
      .list("cidrBlockAssociationSet", v.cidr_block_associations,
            [](Element a, const VpcCidrBlockAssociation& x) {
              a.text("associationId", x.association_id)
                  .text("cidrBlock", x.cidr_block)
                  .child("cidrBlockState")
                  .text("state", x.state);
            })
      .text("dhcpOptionsId", v.dhcp_options_id)
      .text("instanceTenancy", v.instance_tenancy)
      .boolean("isDefault", v.is_default);
  write_tags(e, v.tags);
}

void write_subnet(Element e, const Subnet& s) {
  e.text("subnetId", s.subnet_id)
      .text_if("subnetArn", s.subnet_arn)
      .text("state", s.state)
      .text("ownerId", s.owner_id)
      .text("vpcId", s.vpc_id)
      .text("cidrBlock", s.cidr_block)
      .child("ipv6CidrBlockAssociationSet");
  e.integer("availableIpAddressCount", s.available_ip_address_count)
      .text("availabilityZone", s.availability_zone)
      .text_if("availabilityZoneId", s.availability_zone_id)
      .boolean("defaultForAz", s.default_for_az)
      .boolean("mapPublicIpOnLaunch", s.map_public_ip_on_launch)
      .boolean("assignIpv6AddressOnCreation", s.assign_ipv6_address_on_creation);
  write_tags(e, s.tags);
}

void write_ip_permission(Element e, const IpPermission& p) {
  e.text("ipProtocol", p.ip_protocol)
      .integer_if("fromPort", p.from_port)
      .integer_if("toPort", p.to_port)
      .list("groups", p.user_id_group_pairs,
            [](Element g, const UserIdGroupPair& x) {
              g.text_if("userId", x.user_id)
                  .text_if("groupId", x.group_id)
                  .text_if("groupName", x.group_name)
                  .text_if("vpcId", x.vpc_id)
                  .text_if("description", x.description);
            })
      .list("ipRanges", p.ip_ranges,
            [](Element r, const IpRange& x) { r.text("cidrIp", x.cidr_ip).text_if("description", x.description); })
      .list("ipv6Ranges", p.ipv6_ranges,
            [](Element r, const Ipv6Range& x) {
              r.text("cidrIpv6", x.cidr_ipv6).text_if("description", x.description);
            })
      .list("prefixListIds", p.prefix_list_ids, [](Element r, const PrefixListId& x) {
        r.text("prefixListId", x.prefix_list_id).text_if("description", x.description);
      });
}

void write_security_group(Element e, const SecurityGroup& g) {
  e.text("ownerId", g.owner_id)
      .text("groupId", g.group_id)
      .text("groupName", g.group_name)
      .text("groupDescription", g.description)
      .text_if("vpcId", g.vpc_id)
      .list("ipPermissions", g.ip_permissions, write_ip_permission)
      .list("ipPermissionsEgress", g.ip_permissions_egress, write_ip_permission);
  write_tags(e, g.tags);
}

void write_security_group_rule(Element e, const SecurityGroupRule& r) {
  e.text("securityGroupRuleId", r.security_group_rule_id)
      .text("groupId", r.group_id)
      .text_if("groupOwnerId", r.group_owner_id)
      .boolean("isEgress", r.is_egress)
      .text("ipProtocol", r.ip_protocol)
      .integer_if("fromPort", r.from_port)
      .integer_if("toPort", r.to_port)
      .text_if("cidrIpv4", r.cidr_ipv4)
      .text_if("cidrIpv6", r.cidr_ipv6)
      .text_if("prefixListId", r.prefix_list_id);
  if (!r.referenced_group_id.empty())
    e.child("referencedGroupInfo").text("groupId", r.referenced_group_id).text_if("userId", r.group_owner_id);
  e.text_if("description", r.description);
  write_tags(e, r.tags);
}

void write_tag_description(Element e, const TagDescription& t) {
  e.text("resourceId", t.resource_id).text("resourceType", t.resource_type).text("key", t.key).text("value", t.value);
}

void write_instance_type(Element e, const InstanceTypeInfo& t) {
  e.text("instanceType", t.instance_type)
      .boolean("currentGeneration", t.current_generation)
      .boolean("freeTierEligible", t.free_tier_eligible)
      .strings("supportedUsageClasses", t.supported_usage_classes)
      .strings("supportedRootDeviceTypes", t.supported_root_device_types)
      .strings("supportedVirtualizationTypes", t.supported_virtualization_types)
      .boolean("bareMetal", t.bare_metal)
      .text_if("hypervisor", t.hypervisor);
  Element cpu = e.child("processorInfo").strings("supportedArchitectures", t.supported_architectures);
  if (t.sustained_clock_speed_ghz) cpu.decimal("sustainedClockSpeedInGhz", *t.sustained_clock_speed_ghz);
  Element vcpu = e.child("vCpuInfo");
  vcpu.integer("defaultVCpus", t.default_vcpus);
  if (t.default_cores) vcpu.integer("defaultCores", *t.default_cores);
  if (t.default_threads_per_core) vcpu.integer("defaultThreadsPerCore", *t.default_threads_per_core);
  e.child("memoryInfo").integer("sizeInMiB", t.memory_mib);
  e.boolean("instanceStorageSupported", t.instance_storage_supported);
  e.child("ebsInfo")
      .text("ebsOptimizedSupport", t.ebs_optimized_support)
      .text("encryptionSupport", t.ebs_encryption_support)
      .text("nvmeSupport", t.ebs_nvme_support);
  e.child("networkInfo")
      .text_if("networkPerformance", t.network_performance)
      .integer("maximumNetworkInterfaces", t.maximum_network_interfaces)
      .integer("ipv4AddressesPerInterface", t.ipv4_addresses_per_interface)
      .integer("ipv6AddressesPerInterface", t.ipv6_addresses_per_interface)
      .boolean("ipv6Supported", t.ipv6_supported)
      .text("enaSupport", t.ena_support);
  e.boolean("hibernationSupported", t.hibernation_supported)
      .boolean("burstablePerformanceSupported", t.burstable_performance_supported)
      .boolean("dedicatedHostsSupported", t.dedicated_hosts_supported)
      .boolean("autoRecoverySupported", t.auto_recovery_supported)
      .strings("supportedBootModes", t.supported_boot_modes);
}

void write_availability_zone(Element e, const AvailabilityZone& z) {
  e.text("zoneName", z.zone_name)
      .text("zoneState", z.state)
      .text("regionName", z.region_name)
      .list("messageSet", z.messages, [](Element m, const std::string& x) { m.text("message", x); })
      .text_if("zoneId", z.zone_id)
      .text_if("groupName", z.group_name)
      .text_if("networkBorderGroup", z.network_border_group)
      .text_if("zoneType", z.zone_type)
      .text("optInStatus", z.opt_in_status);
}

void write_region(Element e, const Region& r) {
  e.text("regionName", r.region_name).text("regionEndpoint", r.endpoint).text("optInStatus", r.opt_in_status);
}

// ---- documents ----

std::string return_response(std::string_view action, std::string_view rid, bool value) {
  Document d(action, rid);
  d.root().boolean("return", value);
  return d.str();
}

std::string run_instances_response(std::string_view rid, const Reservation& r) {
  return shape_document("RunInstances", rid, r, write_reservation);
}

std::string describe_instances_response(std::string_view rid, const std::vector<Reservation>& rs,
                                        std::string_view next_token) {
  return list_document("DescribeInstances", rid, "reservationSet", rs, write_reservation, next_token);
}

std::string instance_state_changes_response(std::string_view action, std::string_view rid,
                                            const std::vector<InstanceStateChange>& changes) {
  return list_document(action, rid, "instancesSet", changes, write_instance_state_change, {});
}
std::string start_instances_response(std::string_view rid, const std::vector<InstanceStateChange>& c) {
  return instance_state_changes_response("StartInstances", rid, c);
}
std::string stop_instances_response(std::string_view rid, const std::vector<InstanceStateChange>& c) {
  return instance_state_changes_response("StopInstances", rid, c);
}
std::string terminate_instances_response(std::string_view rid, const std::vector<InstanceStateChange>& c) {
  return instance_state_changes_response("TerminateInstances", rid, c);
}

std::string describe_instance_status_response(std::string_view rid, const std::vector<InstanceStatus>& s,
                                              std::string_view next_token) {
  return list_document("DescribeInstanceStatus", rid, "instanceStatusSet", s, write_instance_status, next_token);
}

std::string get_console_output_response(std::string_view rid, std::string_view instance_id, std::string_view output,
                                        Timestamp timestamp) {
  Document d("GetConsoleOutput", rid);
  d.root().text("instanceId", instance_id).timestamp("timestamp", timestamp).text("output", base64_encode(output));
  return d.str();
}

std::string create_volume_response(std::string_view rid, const Volume& v) {
  return shape_document("CreateVolume", rid, v, write_volume);
}

std::string describe_volumes_response(std::string_view rid, const std::vector<Volume>& vs,
                                      std::string_view next_token) {
  return list_document("DescribeVolumes", rid, "volumeSet", vs, write_volume, next_token);
}

std::string attach_volume_response(std::string_view rid, const VolumeAttachment& a) {
  return shape_document("AttachVolume", rid, a, write_volume_attachment);
}

std::string detach_volume_response(std::string_view rid, const VolumeAttachment& a) {
  return shape_document("DetachVolume", rid, a, write_volume_attachment);
}

std::string describe_images_response(std::string_view rid, const std::vector<Image>& is,
                                     std::string_view next_token) {
  return list_document("DescribeImages", rid, "imagesSet", is, write_image, next_token);
}

std::string register_image_response(std::string_view rid, std::string_view image_id) {
  Document d("RegisterImage", rid);
  d.root().text("imageId", image_id);
  return d.str();
}

std::string create_vpc_response(std::string_view rid, const Vpc& v) {
  Document d("CreateVpc", rid);
  write_vpc(d.root().child("vpc"), v);
  return d.str();
}

std::string describe_vpcs_response(std::string_view rid, const std::vector<Vpc>& vs, std::string_view next_token) {
  return list_document("DescribeVpcs", rid, "vpcSet", vs, write_vpc, next_token);
}

std::string create_subnet_response(std::string_view rid, const Subnet& s) {
  Document d("CreateSubnet", rid);
  write_subnet(d.root().child("subnet"), s);
  return d.str();
}

std::string describe_subnets_response(std::string_view rid, const std::vector<Subnet>& ss,
                                      std::string_view next_token) {
  return list_document("DescribeSubnets", rid, "subnetSet", ss, write_subnet, next_token);
}

std::string create_security_group_response(std::string_view rid, std::string_view group_id,
                                           const std::vector<Tag>& tags) {
  Document d("CreateSecurityGroup", rid);
  d.root().boolean("return", true).text("groupId", group_id);
  write_tags(d.root(), tags);
  return d.str();
}

std::string describe_security_groups_response(std::string_view rid, const std::vector<SecurityGroup>& gs,
                                              std::string_view next_token) {
  return list_document("DescribeSecurityGroups", rid, "securityGroupInfo", gs, write_security_group, next_token);
}

std::string authorize_security_group_response(std::string_view action, std::string_view rid,
                                              const std::vector<SecurityGroupRule>& rules) {
  Document d(action, rid);
  d.root().boolean("return", true).list("securityGroupRuleSet", rules, write_security_group_rule);
  return d.str();
}

std::string revoke_security_group_response(std::string_view action, std::string_view rid,
                                           const std::vector<IpPermission>& unknown) {
  Document d(action, rid);
  d.root().boolean("return", true).list_if("unknownIpPermissionSet", unknown, write_ip_permission);
  return d.str();
}

std::string describe_tags_response(std::string_view rid, const std::vector<TagDescription>& ts,
                                   std::string_view next_token) {
  return list_document("DescribeTags", rid, "tagSet", ts, write_tag_description, next_token);
}

std::string describe_instance_types_response(std::string_view rid, const std::vector<InstanceTypeInfo>& ts,
                                             std::string_view next_token) {
  return list_document("DescribeInstanceTypes", rid, "instanceTypeSet", ts, write_instance_type, next_token);
}

std::string describe_availability_zones_response(std::string_view rid, const std::vector<AvailabilityZone>& zs) {
  return list_document("DescribeAvailabilityZones", rid, "availabilityZoneInfo", zs, write_availability_zone, {});
}

std::string describe_regions_response(std::string_view rid, const std::vector<Region>& rs) {
  return list_document("DescribeRegions", rid, "regionInfo", rs, write_region, {});
}

}  // namespace azote::ec2api
