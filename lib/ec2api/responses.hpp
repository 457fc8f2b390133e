// EC2's response documents for the actions the region serves, from the structs of
// shapes.hpp. Every element name is botocore's (service-2.json's locationName); the tests
// parse each document with botocore's own parser and walk it against the model.
//
// Each function returns the whole document (xml.hpp's Document); the write_* functions
// fill one element, for responses composed by hand.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "ec2api/shapes.hpp"
#include "ec2api/xml.hpp"

namespace azote::ec2api {

// ---- one shape into an element (its members as children) ----
void write_tags(Element parent, const std::vector<Tag>& tags);  // <tagSet>, left out when empty
void write_instance(Element e, const Instance& i);
void write_reservation(Element e, const Reservation& r);
void write_instance_state_change(Element e, const InstanceStateChange& c);
void write_instance_status(Element e, const InstanceStatus& s);
void write_volume(Element e, const Volume& v);
void write_volume_attachment(Element e, const VolumeAttachment& a);
void write_block_device_mapping(Element e, const BlockDeviceMapping& m);
void write_image(Element e, const Image& i);
void write_vpc(Element e, const Vpc& v);
void write_subnet(Element e, const Subnet& s);
void write_ip_permission(Element e, const IpPermission& p);
void write_security_group(Element e, const SecurityGroup& g);
void write_security_group_rule(Element e, const SecurityGroupRule& r);
void write_tag_description(Element e, const TagDescription& t);
void write_instance_type(Element e, const InstanceTypeInfo& t);
void write_availability_zone(Element e, const AvailabilityZone& z);
void write_region(Element e, const Region& r);

// ---- whole documents (`rid` is the request id; an empty next_token is left out) ----

// <return>true</return>: RebootInstances, DeleteVolume, DeregisterImage, DeleteVpc,
// DeleteSubnet, DeleteSecurityGroup, CreateTags, DeleteTags, ...
std::string return_response(std::string_view action, std::string_view rid, bool value = true);

std::string run_instances_response(std::string_view rid, const Reservation& r);
std::string describe_instances_response(std::string_view rid, const std::vector<Reservation>& rs,
                                        std::string_view next_token = {});
// StartInstances, StopInstances, TerminateInstances: <instancesSet> of state changes.
std::string instance_state_changes_response(std::string_view action, std::string_view rid,
                                            const std::vector<InstanceStateChange>& changes);
std::string start_instances_response(std::string_view rid, const std::vector<InstanceStateChange>& c);
std::string stop_instances_response(std::string_view rid, const std::vector<InstanceStateChange>& c);
std::string terminate_instances_response(std::string_view rid, const std::vector<InstanceStateChange>& c);
std::string describe_instance_status_response(std::string_view rid, const std::vector<InstanceStatus>& s,
                                              std::string_view next_token = {});
// `output` is the console's raw bytes: the document carries them in base64, as EC2.
std::string get_console_output_response(std::string_view rid, std::string_view instance_id, std::string_view output,
                                        Timestamp timestamp);

std::string create_volume_response(std::string_view rid, const Volume& v);
std::string describe_volumes_response(std::string_view rid, const std::vector<Volume>& vs,
                                      std::string_view next_token = {});
std::string attach_volume_response(std::string_view rid, const VolumeAttachment& a);
std::string detach_volume_response(std::string_view rid, const VolumeAttachment& a);

// botocore 1.29's DescribeImagesResult has no NextToken yet; newer models do.
std::string describe_images_response(std::string_view rid, const std::vector<Image>& is,
                                     std::string_view next_token = {});
std::string register_image_response(std::string_view rid, std::string_view image_id);

std::string create_vpc_response(std::string_view rid, const Vpc& v);
std::string describe_vpcs_response(std::string_view rid, const std::vector<Vpc>& vs, std::string_view next_token = {});
std::string create_subnet_response(std::string_view rid, const Subnet& s);
std::string describe_subnets_response(std::string_view rid, const std::vector<Subnet>& ss,
                                      std::string_view next_token = {});

std::string create_security_group_response(std::string_view rid, std::string_view group_id,
                                           const std::vector<Tag>& tags = {});
std::string describe_security_groups_response(std::string_view rid, const std::vector<SecurityGroup>& gs,
                                              std::string_view next_token = {});
// AuthorizeSecurityGroupIngress/Egress: <return>true</return> and the rules added.
std::string authorize_security_group_response(std::string_view action, std::string_view rid,
                                              const std::vector<SecurityGroupRule>& rules);
// RevokeSecurityGroupIngress/Egress: <return>true</return> and the permissions that matched
// no rule (<unknownIpPermissionSet>, left out when empty).
std::string revoke_security_group_response(std::string_view action, std::string_view rid,
                                           const std::vector<IpPermission>& unknown = {});

std::string describe_tags_response(std::string_view rid, const std::vector<TagDescription>& ts,
                                   std::string_view next_token = {});
std::string describe_instance_types_response(std::string_view rid, const std::vector<InstanceTypeInfo>& ts,
                                             std::string_view next_token = {});
std::string describe_availability_zones_response(std::string_view rid, const std::vector<AvailabilityZone>& zs);
std::string describe_regions_response(std::string_view rid, const std::vector<Region>& rs);

}  // namespace azote::ec2api
