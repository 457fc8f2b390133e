#include "ec2api/request.hpp"

namespace azote::ec2api {

namespace {

std::string str(std::optional<std::string_view> v) { return v ? std::string(*v) : std::string(); }

}  // namespace

Result<std::vector<Filter>, Ec2Error> read_filters(const Node& n, std::string_view member) {
  std::vector<Filter> out;
  for (const Node& f : n.list(member)) {
    AZOTE_TRY(name, f.required("Name"));
    Filter filter{std::string(name), {}};
    for (std::string_view v : f.strings("Value")) filter.values.emplace_back(v);
    out.push_back(std::move(filter));
  }
  return out;
}

Result<std::vector<TagInput>, Ec2Error> read_tags(const Node& n, std::string_view member) {
  std::vector<TagInput> out;
  for (const Node& t : n.list(member)) {
    AZOTE_TRY(key, t.required("Key"));
    TagInput tag{std::string(key), std::nullopt};
    if (const auto v = t.get("Value")) tag.value = std::string(*v);
    out.push_back(std::move(tag));
  }
  return out;
}

Result<std::vector<TagSpecification>, Ec2Error> read_tag_specifications(const Node& n, std::string_view member) {
  std::vector<TagSpecification> out;
  for (const Node& s : n.list(member)) {
    TagSpecification spec;
    spec.resource_type = str(s.get("ResourceType"));
    AZOTE_TRY(tags, read_tags(s, "Tag"));
    spec.tags = std::move(tags);
    out.push_back(std::move(spec));
  }
  return out;
}

Result<std::vector<IpPermission>, Ec2Error> read_ip_permissions(const Node& n, std::string_view member) {
  std::vector<IpPermission> out;
  for (const Node& p : n.list(member)) {
    IpPermission perm;
    AZOTE_TRY(proto, p.required("IpProtocol"));
    perm.ip_protocol = std::string(proto);
    AZOTE_TRY(from, p.get_int("FromPort", -1, 65535));
    AZOTE_TRY(to, p.get_int("ToPort", -1, 65535));
    perm.from_port = from;
    perm.to_port = to;
    for (const Node& r : p.list("IpRanges"))
      perm.ip_ranges.push_back(IpRange{str(r.get("CidrIp")), str(r.get("Description"))});
    for (const Node& r : p.list("Ipv6Ranges"))
      perm.ipv6_ranges.push_back(Ipv6Range{str(r.get("CidrIpv6")), str(r.get("Description"))});
    for (const Node& r : p.list("PrefixListIds"))
      perm.prefix_list_ids.push_back(PrefixListId{str(r.get("PrefixListId")), str(r.get("Description"))});
    for (const Node& g : p.list("Groups"))
      perm.user_id_group_pairs.push_back(UserIdGroupPair{str(g.get("GroupId")), str(g.get("GroupName")),
                                                         str(g.get("UserId")), str(g.get("VpcId")),
                                                         str(g.get("Description"))});
    out.push_back(std::move(perm));
  }
  return out;
}

Result<std::vector<BlockDeviceMapping>, Ec2Error> read_block_device_mappings(const Node& n, std::string_view member) {
  std::vector<BlockDeviceMapping> out;
  for (const Node& m : n.list(member)) {
    BlockDeviceMapping bdm;
    bdm.device_name = str(m.get("DeviceName"));
    bdm.virtual_name = str(m.get("VirtualName"));
    bdm.no_device = str(m.get("NoDevice"));
    if (m.has("Ebs")) {
      const Node e = m.sub("Ebs");
      EbsBlockDevice ebs;
      AZOTE_TRY(dot, e.get_bool("DeleteOnTermination"));
      AZOTE_TRY(iops, e.get_int("Iops"));
      AZOTE_TRY(size, e.get_int("VolumeSize"));
      AZOTE_TRY(throughput, e.get_int("Throughput"));
      AZOTE_TRY(encrypted, e.get_bool("Encrypted"));
      ebs.delete_on_termination = dot;
      ebs.iops = iops;
      ebs.volume_size = size;
      ebs.throughput = throughput;
      ebs.encrypted = encrypted;
      ebs.snapshot_id = str(e.get("SnapshotId"));
      ebs.volume_type = str(e.get("VolumeType"));
      ebs.kms_key_id = str(e.get("KmsKeyId"));
      bdm.ebs = std::move(ebs);
    }
    out.push_back(std::move(bdm));
  }
  return out;
}

}  // namespace azote::ec2api
