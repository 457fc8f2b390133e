// The response side without botocore: timestamps, base64, request ids, text safety, the
// error document and its statuses, and the documents' shape read back with pugixml.
#include <gtest/gtest.h>

#include <regex>
#include <set>
#include <string>

#include "ec2api/responses.hpp"
#include "ec2api/xml.hpp"

namespace azote::ec2api {
namespace {

using namespace std::chrono;

Timestamp at(int y, unsigned mo, unsigned d, int h, int mi, int s, int ms = 0) {
  return Timestamp{sys_days{year{y} / month{mo} / day{d}} + hours{h} + minutes{mi} + seconds{s} + milliseconds{ms}};
}

TEST(Xml, Timestamps) {
  EXPECT_EQ(format_timestamp(at(2026, 12, 7, 21, 0, 0)), "2026-12-07T21:00:00.000Z");
  EXPECT_EQ(format_timestamp(at(1999, 1, 2, 3, 4, 5, 67)), "1999-01-02T03:04:05.067Z");
  EXPECT_EQ(format_timestamp(Timestamp{}), "1970-01-01T00:00:00.000Z");
  EXPECT_EQ(format_timestamp(at(2024, 2, 29, 23, 59, 59, 999)), "2024-02-29T23:59:59.999Z");
  EXPECT_EQ(parse_timestamp("2024-02-29T23:59:59.999Z"), at(2024, 2, 29, 23, 59, 59, 999));
  EXPECT_EQ(parse_timestamp("2026-12-07T21:00:00Z"), at(2026, 12, 7, 21, 0, 0));
  for (const char* bad : {"2026-12-07T21:00:00", "2026-12-07T21:00:00+00:00", "2026-02-30T00:00:00Z",
                          "2026-12-07T24:00:00Z", "2026-12-07T21:00:00.Z", "2026-12-07T21:00:00.1234567890Z",
                          "2026-12-07 21:00:00Z", ""})
    EXPECT_FALSE(parse_timestamp(bad).has_value()) << bad;
}

TEST(Xml, Base64) {
  EXPECT_EQ(base64_encode(""), "");
  EXPECT_EQ(base64_encode("f"), "Zg==");
  EXPECT_EQ(base64_encode("fo"), "Zm8=");
  EXPECT_EQ(base64_encode("foo"), "Zm9v");
  EXPECT_EQ(base64_encode("foob"), "Zm9vYg==");
  EXPECT_EQ(base64_encode("fooba"), "Zm9vYmE=");
  EXPECT_EQ(base64_encode("foobar"), "Zm9vYmFy");
  EXPECT_EQ(base64_encode(std::string("\xff\xfe\x00", 3)), "//4A");
}

TEST(Xml, RequestIds) {
  const std::array<uint8_t, 16> zero{};
  EXPECT_EQ(request_id_from_bytes(zero), "00000000-0000-4000-8000-000000000000");
  const std::regex uuid("^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$");
  std::set<std::string> seen;
  for (int i = 0; i < 100; ++i) {
    const std::string id = random_request_id();
    EXPECT_TRUE(std::regex_match(id, uuid)) << id;
    seen.insert(id);
  }
  EXPECT_EQ(seen.size(), 100u);
}

TEST(Xml, TextIsAlwaysWellFormed) {
  EXPECT_EQ(xml_safe("plain caf\u00e9 \U0001F600\t\n"), "plain caf\u00e9 \U0001F600\t\n");
  EXPECT_EQ(xml_safe(std::string("a\0b", 3)), "a\uFFFDb");
  EXPECT_EQ(xml_safe("\x01\x1f"), "\uFFFD\uFFFD");
  EXPECT_EQ(xml_safe("\xff" "a"), "\uFFFDa");
  EXPECT_EQ(xml_safe("\xe2\x9c"), "\uFFFD\uFFFD");            // truncated sequence
  EXPECT_EQ(xml_safe("\xc0\x80"), "\uFFFD\uFFFD");            // overlong NUL
  EXPECT_EQ(xml_safe("\xed\xa0\x80"), "\uFFFD\uFFFD\uFFFD");  // a surrogate
  EXPECT_EQ(xml_safe("\xef\xbf\xbe"), "\uFFFD\uFFFD\uFFFD");  // U+FFFE is not an XML Char
  Document d("DescribeTags", "rid");
  d.root().text("value", std::string("<&>\"'\x02", 6));
  pugi::xml_document back;
  ASSERT_TRUE(back.load_string(d.str().c_str()));
  EXPECT_STREQ(back.child("DescribeTagsResponse").child_value("value"), "<&>\"'\uFFFD");
  // A CR survives as a character reference (a raw one would be read back as a LF).
  Document cr("DescribeTags", "rid");
  cr.root().text("value", "a\r\nb\rc");
  EXPECT_NE(cr.str().find("a&#13;\nb&#13;c"), std::string::npos) << cr.str();
  pugi::xml_document back2;
  ASSERT_TRUE(back2.load_string(cr.str().c_str()));
  EXPECT_STREQ(back2.child("DescribeTagsResponse").child_value("value"), "a\r\nb\rc");
}

TEST(Xml, ErrorStatuses) {
  EXPECT_EQ(http_status("InvalidParameterValue"), 400);
  EXPECT_EQ(http_status("InvalidInstanceID.NotFound"), 400);
  EXPECT_EQ(http_status("UnknownParameter"), 400);
  EXPECT_EQ(http_status("AuthFailure"), 403);
  EXPECT_EQ(http_status("UnauthorizedOperation"), 403);
  EXPECT_EQ(http_status("DryRunOperation"), 412);
  EXPECT_EQ(http_status("RequestLimitExceeded"), 503);
  EXPECT_EQ(http_status("Unavailable"), 503);
  EXPECT_EQ(http_status("InternalError"), 500);
  EXPECT_EQ(http_status("InsufficientInstanceCapacity"), 500);
}

TEST(Xml, ErrorDocument) {
  const Ec2Error e{"InvalidInstanceID.NotFound", "The instance ID 'i-1' does not exist & <never> did"};
  EXPECT_EQ(error_document(e, "6b9528d5-d2a7-4e8a-9d6e-2b6c0f7f5b1a"),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Errors><Error><Code>InvalidInstanceID.NotFound</Code>"
            "<Message>The instance ID 'i-1' does not exist &amp; &lt;never&gt; did</Message></Error></Errors>"
            "<RequestID>6b9528d5-d2a7-4e8a-9d6e-2b6c0f7f5b1a</RequestID></Response>");
  const Reply r = error_reply(Ec2Error{"AuthFailure", "no"}, "rid");
  EXPECT_EQ(r.status, 403);
  EXPECT_EQ(ok_reply("x").status, 200);
}

TEST(Xml, SuccessDocument) {
  EXPECT_EQ(return_response("RebootInstances", "59dbff89-35bd-4eac-99ed-be587EXAMPLE"),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><RebootInstancesResponse "
            "xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\"><requestId>59dbff89-35bd-4eac-99ed-be587EXAMPLE"
            "</requestId><return>true</return></RebootInstancesResponse>");
}

TEST(Xml, InstanceStates) {
  const std::pair<InstanceStateName, std::pair<int, const char*>> rows[] = {
      {InstanceStateName::kPending, {0, "pending"}},       {InstanceStateName::kRunning, {16, "running"}},
      {InstanceStateName::kShuttingDown, {32, "shutting-down"}}, {InstanceStateName::kTerminated, {48, "terminated"}},
      {InstanceStateName::kStopping, {64, "stopping"}},    {InstanceStateName::kStopped, {80, "stopped"}},
  };
  for (const auto& [s, want] : rows) {
    EXPECT_EQ(instance_state(s).code, want.first);
    EXPECT_EQ(instance_state(s).name, want.second);
    EXPECT_EQ(parse_instance_state_name(want.second), s);
  }
  EXPECT_FALSE(parse_instance_state_name("Running").has_value());
}

TEST(Xml, DescribeInstancesShape) {
  Instance i;
  i.instance_id = "i-1";
  i.image_id = "ami-1";
  i.state = instance_state(InstanceStateName::kRunning);
  i.instance_type = "t3.micro";
  i.launch_time = at(2026, 12, 7, 21, 0, 0);
  i.placement.availability_zone = "az1-a";
  Reservation r{"r-1", "123456789012", "", {}, {i}};
  const std::string doc = describe_instances_response("rid", {r}, "tok");
  pugi::xml_document x;
  ASSERT_TRUE(x.load_string(doc.c_str())) << doc;
  const pugi::xml_node root = x.child("DescribeInstancesResponse");
  EXPECT_STREQ(root.attribute("xmlns").value(), "http://ec2.amazonaws.com/doc/2016-11-15/");
  EXPECT_STREQ(root.first_child().name(), "requestId");
  EXPECT_STREQ(root.child_value("nextToken"), "tok");
  const pugi::xml_node inst = root.child("reservationSet").child("item").child("instancesSet").child("item");
  EXPECT_STREQ(inst.child("instanceState").child_value("code"), "16");
  EXPECT_STREQ(inst.child("instanceState").child_value("name"), "running");
  EXPECT_STREQ(inst.child_value("launchTime"), "2026-12-07T21:00:00.000Z");
  EXPECT_STREQ(inst.child_value("sourceDestCheck"), "true");
  EXPECT_TRUE(inst.child("groupSet"));  // always there, empty
  EXPECT_TRUE(inst.child("dnsName"));   // always there, empty
  EXPECT_FALSE(inst.child("tagSet"));   // no tags: left out, as EC2
  EXPECT_FALSE(inst.child("keyName"));
  const std::string empty = describe_instances_response("rid", {});
  EXPECT_NE(empty.find("<reservationSet/>"), std::string::npos) << empty;
  EXPECT_EQ(empty.find("nextToken"), std::string::npos);
}

TEST(Xml, ConsoleOutputIsBase64) {
  const std::string doc = get_console_output_response("rid", "i-1", "boot\n", at(2026, 1, 1, 0, 0, 0));
  pugi::xml_document x;
  ASSERT_TRUE(x.load_string(doc.c_str()));
  EXPECT_STREQ(x.child("GetConsoleOutputResponse").child_value("output"), "Ym9vdAo=");
}

}  // namespace
}  // namespace azote::ec2api
