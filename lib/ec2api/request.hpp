// Readers for the structure lists most EC2 actions share, built on Node (params.hpp). Each
// reads every member it knows, so whatever is left is an unknown parameter; each names the
// offending parameter in its error ("IpPermissions.2.FromPort").
//
//   Filter.N.Name, Filter.N.Value.M                         read_filters(root)
//   Tag.N.Key, Tag.N.Value                                  read_tags(root)
//   TagSpecification.N.ResourceType, ...Tag.M.Key/Value     read_tag_specifications(root)
//   IpPermissions.N.IpProtocol/FromPort/ToPort/IpRanges.M.CidrIp/Ipv6Ranges.M.CidrIpv6/
//     PrefixListIds.M.PrefixListId/Groups.M.GroupId...      read_ip_permissions(root)
//   BlockDeviceMapping.N.DeviceName/VirtualName/NoDevice/Ebs.VolumeSize...
//                                                           read_block_device_mappings(root)
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.hpp"
#include "ec2api/error.hpp"
#include "ec2api/params.hpp"
#include "ec2api/shapes.hpp"

namespace azote::ec2api {

struct Filter {
  std::string name;
  std::vector<std::string> values;
};

// A tag as requests give it: DeleteTags may name a key alone (any value).
struct TagInput {
  std::string key;
  std::optional<std::string> value;
};

struct TagSpecification {
  std::string resource_type;
  std::vector<TagInput> tags;
};

// Name is required in each filter (MissingParameter "Filter.N.Name").
Result<std::vector<Filter>, Ec2Error> read_filters(const Node& n, std::string_view member = "Filter");
// Key is required in each tag.
Result<std::vector<TagInput>, Ec2Error> read_tags(const Node& n, std::string_view member = "Tag");
Result<std::vector<TagSpecification>, Ec2Error> read_tag_specifications(const Node& n,
                                                                       std::string_view member = "TagSpecification");
// IpProtocol is required in each permission; ports are -1..65535.
Result<std::vector<IpPermission>, Ec2Error> read_ip_permissions(const Node& n,
                                                               std::string_view member = "IpPermissions");
// Ebs integers are checked against EC2's Integer range only (the region checks sizes).
Result<std::vector<BlockDeviceMapping>, Ec2Error> read_block_device_mappings(
    const Node& n, std::string_view member = "BlockDeviceMapping");

}  // namespace azote::ec2api
