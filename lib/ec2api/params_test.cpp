// The request side: form decoding, its bounds, the flattened-name reader and unknown
// parameters. (botocore_test.cpp decodes what the real client serializes.)
#include <gtest/gtest.h>

#include <limits>
#include <string>
#include <vector>

#include "ec2api/params.hpp"
#include "ec2api/request.hpp"

namespace azote::ec2api {
namespace {

Params parse_ok(std::string_view form) {
  auto p = Params::parse(form);
  EXPECT_TRUE(p.ok()) << form << ": " << (p.ok() ? "" : p.error().message);
  if (!p.ok()) return std::move(Params::parse("").value());
  return std::move(p).value();
}

Ec2Error parse_error(std::string_view form, const Limits& limits = {}) {
  auto p = Params::parse(form, limits);
  EXPECT_FALSE(p.ok()) << form;
  return p.ok() ? Ec2Error{} : p.error();
}

std::vector<std::string> strs(const std::vector<std::string_view>& v) { return {v.begin(), v.end()}; }

TEST(Params, DecodesPercentPlusAndEmptyPairs) {
  const Params p = parse_ok("a=1+2%2B3&&b&c=%E2%9C%93&d=&e=x%3Dy%26z&f=%2f%2F");
  EXPECT_EQ(p.get("a"), "1 2+3");
  EXPECT_EQ(p.get("b"), "");
  EXPECT_EQ(p.get("c"), "\u2713");
  EXPECT_EQ(p.get("d"), "");
  EXPECT_EQ(p.get("e"), "x=y&z");
  EXPECT_EQ(p.get("f"), "//");
  EXPECT_FALSE(p.get("g").has_value());
  EXPECT_EQ(p.entries().size(), 6u);
  EXPECT_EQ(p.entries()[0].name, "a");  // request order kept
  EXPECT_TRUE(Params::parse("").ok());
}

TEST(Params, RefusesMalformedForms) {
  for (const char* bad : {"a=%4", "a=%", "a=%zz", "a%2=1", "=1", "a=1&a=2", "a=%FF", "a=%C0%80",
                          "a=%ED%A0%80", "%01a=1", "a%00=1", "a%7F=1"}) {
    const Ec2Error e = parse_error(bad);
    EXPECT_EQ(e.code, kMalformedQueryString) << bad << ": " << e.message;
    EXPECT_EQ(e.http_status(), 400);
    EXPECT_FALSE(e.message.empty());
  }
  EXPECT_NE(parse_error("InstanceId.1=a&InstanceId.1=b").message.find("InstanceId.1"), std::string::npos);
  // Values may hold any Unicode, names anything printable.
  const Params p = parse_ok("T%C3%A4g=%F0%9F%98%80%0A%09");
  EXPECT_EQ(p.get("T\u00e4g"), "\U0001F600\n\t");
}

TEST(Params, EnforcesLimits) {
  Limits l;
  l.max_bytes = 16;
  EXPECT_EQ(parse_error("Action=DescribeInstances", l).code, kInvalidRequest);
  l = {};
  l.max_params = 3;
  EXPECT_TRUE(Params::parse("a=1&b=2&c=3", l).ok());
  const Ec2Error e = parse_error("a=1&b=2&c=3&d=4", l);
  EXPECT_EQ(e.code, kInvalidRequest);
  EXPECT_NE(e.message.find("3 parameters"), std::string::npos) << e.message;
  l = {};
  l.max_name_bytes = 8;
  EXPECT_TRUE(Params::parse("abcdefgh=1", l).ok());
  EXPECT_EQ(parse_error("abcdefghi=1", l).code, kInvalidRequest);
}

TEST(Params, ActionAndVersion) {
  EXPECT_EQ(parse_ok("Action=RunInstances&Version=2016-11-15").action(), "RunInstances");
  EXPECT_TRUE(parse_ok("Action=RunInstances&Version=2016-11-15").check_action_version().ok());
  auto r = parse_ok("Version=2016-11-15").check_action_version();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, kMissingAction);
  r = parse_ok("Action=RunInstances").check_action_version();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, kMissingParameter);
  EXPECT_NE(r.error().message.find("Version"), std::string::npos);
  r = parse_ok("Action=RunInstances&Version=2014-01-01").check_action_version();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, kNoSuchVersion);
  EXPECT_NE(r.error().message.find("2014-01-01"), std::string::npos);
}

TEST(Params, TypedScalarsNameTheParameter) {
  const Params p = parse_ok(
      "MaxResults=50&Neg=-1&Big=2147483648&Bad=5x&Empty=&DryRun=true&Force=FALSE&Flag=yes&"
      "When=2026-12-07T21:00:00Z&Micro=2026-12-07T21:00:00.123456Z&Never=tomorrow");
  EXPECT_EQ(p.get_int("MaxResults").value(), 50);
  EXPECT_EQ(p.get_int("Neg").value(), -1);
  EXPECT_FALSE(p.get_int("Absent").value().has_value());
  EXPECT_EQ(p.get_int("Big", 0, 4294967296LL).value(), 2147483648LL);
  for (const char* name : {"Big", "Bad", "Empty"}) {
    auto r = p.get_int(name);
    ASSERT_FALSE(r.ok()) << name;
    EXPECT_EQ(r.error().code, kInvalidParameterValue);
    EXPECT_NE(r.error().message.find(name), std::string::npos) << r.error().message;
  }
  const Params q = parse_ok(
      "Zero=007&Huge=99999999999999999999&NegZero=-0&Max=9223372036854775807&Min=-9223372036854775808&"
      "Over=9223372036854775808");
  EXPECT_EQ(q.get_int("Zero").value(), 7);
  EXPECT_EQ(q.get_int("NegZero").value(), 0);
  constexpr int64_t kMin = std::numeric_limits<int64_t>::min(), kMax = std::numeric_limits<int64_t>::max();
  EXPECT_EQ(q.get_int("Max", kMin, kMax).value(), kMax);
  EXPECT_EQ(q.get_int("Min", kMin, kMax).value(), kMin);
  EXPECT_FALSE(q.get_int("Over", kMin, kMax).ok());
  auto huge = q.get_int("Huge", 0, std::numeric_limits<int64_t>::max());
  ASSERT_FALSE(huge.ok());
  EXPECT_NE(huge.error().message.find("expected an integer from 0 to"), std::string::npos) << huge.error().message;
  auto range = p.get_int("MaxResults", 5, 10);
  ASSERT_FALSE(range.ok());
  EXPECT_NE(range.error().message.find("from 5 to 10"), std::string::npos) << range.error().message;
  EXPECT_EQ(p.get_bool("DryRun").value(), true);
  EXPECT_EQ(p.get_bool("Force").value(), false);
  auto b = p.get_bool("Flag");
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.error().code, kInvalidParameterValue);
  EXPECT_NE(b.error().message.find("Flag"), std::string::npos);
  EXPECT_EQ(format_timestamp(**p.root().get_timestamp("When")), "2026-12-07T21:00:00.000Z");
  EXPECT_EQ(format_timestamp(**p.root().get_timestamp("Micro")), "2026-12-07T21:00:00.123Z");
  EXPECT_FALSE(p.root().get_timestamp("Never").ok());
  auto req = p.required("ImageId");
  ASSERT_FALSE(req.ok());
  EXPECT_EQ(req.error().code, kMissingParameter);
  EXPECT_NE(req.error().message.find("ImageId"), std::string::npos);
}

TEST(Params, ListsAreOrderedByIndexGapsClosedInvalidIndicesLeftUnread) {
  const Params p = parse_ok(
      "InstanceId.10=j&InstanceId.2=b&InstanceId.1=a&InstanceId.5=e&InstanceId.0=zero&InstanceId.01=lead&"
      "InstanceId.x=x&InstanceId.1.Extra=s&InstanceId.100001=big");
  EXPECT_EQ(strs(p.strings("InstanceId")), (std::vector<std::string>{"a", "b", "e", "j"}));
  EXPECT_EQ(strs(p.unused()),
            (std::vector<std::string>{"InstanceId.0", "InstanceId.01", "InstanceId.x", "InstanceId.1.Extra",
                                      "InstanceId.100001"}));
  auto r = p.check_all_used();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, kUnknownParameter);
  EXPECT_NE(r.error().message.find("InstanceId.0"), std::string::npos);
  EXPECT_TRUE(p.strings("Nothing").empty());
}

TEST(Params, NestedStructureLists) {
  const Params p = parse_ok(
      "Action=RunInstances&Version=2016-11-15&"
      "Filter.2.Name=tag%3AName&Filter.2.Value.1=web&Filter.1.Name=instance-state-name&"
      "Filter.1.Value.2=stopped&Filter.1.Value.1=running&"
      "TagSpecification.1.ResourceType=instance&TagSpecification.1.Tag.1.Key=Name&TagSpecification.1.Tag.1.Value=a+b&"
      "TagSpecification.1.Tag.2.Key=k&"
      "BlockDeviceMapping.1.DeviceName=%2Fdev%2Fxvda&BlockDeviceMapping.1.Ebs.VolumeSize=20&"
      "BlockDeviceMapping.1.Ebs.DeleteOnTermination=true&BlockDeviceMapping.2.DeviceName=%2Fdev%2Fsdb&"
      "IpPermissions.1.IpProtocol=tcp&IpPermissions.1.FromPort=22&IpPermissions.1.ToPort=22&"
      "IpPermissions.1.IpRanges.1.CidrIp=10.0.0.0%2F16&IpPermissions.1.Groups.1.GroupId=sg-1&"
      "IpPermissions.1.Groups.2.GroupId=sg-2&IpPermissions.1.Groups.2.Description=peers");
  // The generic reader.
  const auto filters = p.list("Filter");
  ASSERT_EQ(filters.size(), 2u);
  EXPECT_EQ(filters[0].prefix(), "Filter.1.");
  EXPECT_EQ(filters[0].get("Name"), "instance-state-name");
  EXPECT_EQ(strs(filters[0].strings("Value")), (std::vector<std::string>{"running", "stopped"}));
  EXPECT_EQ(filters[1].name("Name"), "Filter.2.Name");
  const auto bdm = p.list("BlockDeviceMapping");
  ASSERT_EQ(bdm.size(), 2u);
  EXPECT_TRUE(bdm[0].has("Ebs"));
  EXPECT_FALSE(bdm[1].has("Ebs"));
  EXPECT_FALSE(bdm[0].has("Eb"));
  EXPECT_EQ(bdm[0].sub("Ebs").get_int("VolumeSize").value(), 20);
  // The shared shapes' readers.
  auto f = read_filters(p.root());
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->at(1).name, "tag:Name");
  EXPECT_EQ(f->at(1).values, std::vector<std::string>{"web"});
  auto ts = read_tag_specifications(p.root());
  ASSERT_TRUE(ts.ok());
  ASSERT_EQ(ts->size(), 1u);
  EXPECT_EQ(ts->at(0).resource_type, "instance");
  ASSERT_EQ(ts->at(0).tags.size(), 2u);
  EXPECT_EQ(ts->at(0).tags[0].value, "a b");
  EXPECT_FALSE(ts->at(0).tags[1].value.has_value());
  auto b = read_block_device_mappings(p.root());
  ASSERT_TRUE(b.ok());
  ASSERT_EQ(b->size(), 2u);
  EXPECT_EQ(b->at(0).device_name, "/dev/xvda");
  ASSERT_TRUE(b->at(0).ebs.has_value());
  EXPECT_EQ(b->at(0).ebs->volume_size, 20);
  EXPECT_EQ(b->at(0).ebs->delete_on_termination, true);
  EXPECT_FALSE(b->at(1).ebs.has_value());
  auto ip = read_ip_permissions(p.root());
  ASSERT_TRUE(ip.ok());
  ASSERT_EQ(ip->size(), 1u);
  EXPECT_EQ(ip->at(0).from_port, 22);
  ASSERT_EQ(ip->at(0).ip_ranges.size(), 1u);
  EXPECT_EQ(ip->at(0).ip_ranges[0].cidr_ip, "10.0.0.0/16");
  ASSERT_EQ(ip->at(0).user_id_group_pairs.size(), 2u);
  EXPECT_EQ(ip->at(0).user_id_group_pairs[1].description, "peers");
  EXPECT_TRUE(p.check_all_used().ok()) << p.check_all_used().error().message;
}

TEST(Params, UnknownParametersAreDetected) {
  const Params p = parse_ok(
      "Action=DescribeInstances&Version=2016-11-15&X-Amz-Signature=abc&X-Amz-Date=20261207T210000Z&"
      "InstanceId.1=i-1&Filter.1.Name=x&Filter.1.Nme=y&Bogus=1&MaxResults=5");
  ASSERT_TRUE(read_filters(p.root()).ok());
  (void)p.strings("InstanceId");
  (void)p.get_int("MaxResults");
  EXPECT_EQ(strs(p.unused()), (std::vector<std::string>{"Filter.1.Nme", "Bogus"}));
  auto r = p.check_all_used();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, kUnknownParameter);
  EXPECT_EQ(r.error().message, "The parameter Filter.1.Nme is not recognized");
  EXPECT_EQ(r.error().http_status(), 400);
  // A structure given as a scalar is not a member either.
  const Params q = parse_ok("BlockDeviceMapping.1.Ebs=1&BlockDeviceMapping.1.DeviceName=x");
  ASSERT_TRUE(read_block_device_mappings(q.root()).ok());
  EXPECT_EQ(strs(q.unused()), std::vector<std::string>{"BlockDeviceMapping.1.Ebs"});
}

TEST(Params, ReadersNameTheBadMember) {
  auto p = parse_ok("IpPermissions.1.IpProtocol=tcp&IpPermissions.2.IpProtocol=udp&IpPermissions.2.FromPort=70000");
  auto ip = read_ip_permissions(p.root());
  ASSERT_FALSE(ip.ok());
  EXPECT_EQ(ip.error().code, kInvalidParameterValue);
  EXPECT_NE(ip.error().message.find("IpPermissions.2.FromPort"), std::string::npos) << ip.error().message;
  p = parse_ok("Tag.1.Key=a&Tag.2.Value=b");
  auto t = read_tags(p.root());
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.error().code, kMissingParameter);
  EXPECT_NE(t.error().message.find("Tag.2.Key"), std::string::npos) << t.error().message;
  p = parse_ok("Filter.1.Value.1=a");
  auto f = read_filters(p.root());
  ASSERT_FALSE(f.ok());
  EXPECT_NE(f.error().message.find("Filter.1.Name"), std::string::npos);
  p = parse_ok("BlockDeviceMapping.1.Ebs.Encrypted=maybe");
  auto b = read_block_device_mappings(p.root());
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.error().message.find("BlockDeviceMapping.1.Ebs.Encrypted"), std::string::npos);
}

TEST(Params, LongValuesAreCutInMessages) {
  const std::string form = "MaxResults=" + std::string(5000, '9');
  const Params p = parse_ok(form);
  auto r = p.get_int("MaxResults");
  ASSERT_FALSE(r.ok());
  EXPECT_LT(r.error().message.size(), 200u);
}

}  // namespace
}  // namespace azote::ec2api
