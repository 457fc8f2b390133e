// The IMDSv2 rules as a pure function: tokens (issue, expiry on a fake clock, binding to a
// slot and its incarnation), IMDSv1 allowed or refused, paths, user data, 404/405; and the
// slot table.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>

#include "imds/handler.hpp"
#include "imds/slots.hpp"

namespace azote::imds {
namespace {

using namespace std::chrono_literals;

InstanceMetadata sample(std::string id = "i-0123456789abcdef0", std::string ip = "10.0.1.5") {
  InstanceMetadata md;
  md.instance_id = std::move(id);
  md.instance_type = "t3.micro";
  md.ami_id = "ami-0abcdef1234567890";
  md.local_ipv4 = std::move(ip);
  md.mac = "02:00:0A:00:01:05";
  md.hostname = "ip-10-0-1-5.eu-west-1.compute.internal";
  md.local_hostname = md.hostname;
  md.availability_zone = "eu-west-1a";
  md.region = "eu-west-1";
  md.account_id = "123456789012";
  md.security_groups = {"default", "web"};
  md.http_tokens_required = true;
  return md;
}

CheckedMetadata checked(const InstanceMetadata& md) {
  auto c = check_metadata(md);
  EXPECT_TRUE(c.ok()) << c.error().message();
  return std::move(c).value();
}

const TokenService& tokens() {
  static const TokenService t(std::array<uint8_t, kTokenKeyLen>{1, 2, 3, 4, 5});
  return t;
}

const TimePoint kT0 = TimePoint(1000s);

Request put_token(const std::string& ttl) {
  return Request{"PUT", std::string(kTokenPath), {{"X-aws-ec2-metadata-token-ttl-seconds", ttl}}};
}
Request get(const std::string& path, std::optional<std::string> token = std::nullopt) {
  Request r{"GET", path, {}};
  if (token) r.headers.emplace_back("X-aws-ec2-metadata-token", *token);
  return r;
}

std::string header(const Response& r, std::string_view name) {
  for (const auto& [k, v] : r.headers) {
    if (k == name) return v;
  }
  return "";
}

struct HandlerTest : ::testing::Test {
  CheckedMetadata meta = checked(sample());
  SlotView slot{7, 42, meta};

  std::string token(uint32_t ttl = 60, TimePoint now = kT0) {
    const Response r = handle(put_token(std::to_string(ttl)), slot, tokens(), now);
    EXPECT_EQ(r.status, 200);
    EXPECT_TRUE(r.token_issued);
    return r.body;
  }
};

TEST_F(HandlerTest, PutTokenIssuesAnOpaqueTokenWithItsTtl) {
  const Response r = handle(put_token("21600"), slot, tokens(), kT0);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.content_type, "text/plain");
  EXPECT_EQ(header(r, "X-Aws-Ec2-Metadata-Token-Ttl-Seconds"), "21600");
  EXPECT_EQ(r.body.size(), kTokenTextLen);
  EXPECT_EQ(r.refusal, Refusal::kNone);
  // The header name is case-insensitive, as HTTP says.
  const Request lower{"PUT", "/latest/api/token", {{"x-AWS-ec2-metadata-token-ttl-seconds", "1"}}};
  EXPECT_EQ(handle(lower, slot, tokens(), kT0).status, 200);
}

TEST_F(HandlerTest, PutTokenTtlMustBe1To21600) {
  for (const char* bad : {"0", "21601", "-1", "", " 60", "60 ", "6e1", "0x10", "99999999999999999999", "abc"}) {
    const Response r = handle(put_token(bad), slot, tokens(), kT0);
    EXPECT_EQ(r.status, 400) << bad;
    EXPECT_EQ(r.refusal, Refusal::kBadTtl) << bad;
    EXPECT_FALSE(r.token_issued);
  }
  EXPECT_EQ(handle(put_token("1"), slot, tokens(), kT0).status, 200);
  const Response missing = handle(Request{"PUT", "/latest/api/token", {}}, slot, tokens(), kT0);
  EXPECT_EQ(missing.status, 400);
  EXPECT_EQ(missing.refusal, Refusal::kMissingTtl);
  Request twice = put_token("60");
  twice.headers.emplace_back("X-Aws-Ec2-Metadata-Token-Ttl-Seconds", "21600");
  EXPECT_EQ(handle(twice, slot, tokens(), kT0).refusal, Refusal::kDuplicateHeader);
}

TEST_F(HandlerTest, PutWithXForwardedForIsRefused) {
  Request r = put_token("60");
  r.headers.emplace_back("x-forwarded-for", "10.0.1.99");
  const Response resp = handle(r, slot, tokens(), kT0);
  EXPECT_EQ(resp.status, 403);
  EXPECT_EQ(resp.refusal, Refusal::kForwarded);
  EXPECT_FALSE(resp.token_issued);
  EXPECT_EQ(resp.content_type, "text/html");
  EXPECT_NE(resp.body.find("403 - Forbidden"), std::string::npos);
}

TEST_F(HandlerTest, GetWithValidTokenAnswersAndTellsTheTimeLeft) {
  const std::string t = token(60);
  const Response r = handle(get("/latest/meta-data/instance-id", t), slot, tokens(), kT0 + 10s);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "i-0123456789abcdef0");
  EXPECT_EQ(r.content_type, "text/plain");
  EXPECT_EQ(header(r, "X-Aws-Ec2-Metadata-Token-Ttl-Seconds"), "50");
}

TEST_F(HandlerTest, TokenExpiresOnTheClock) {
  const std::string t = token(60);
  EXPECT_EQ(handle(get("/latest/meta-data/instance-id", t), slot, tokens(), kT0 + 59s + 999ms).status, 200);
  const Response r = handle(get("/latest/meta-data/instance-id", t), slot, tokens(), kT0 + 60s);
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(r.refusal, Refusal::kExpiredToken);
  EXPECT_EQ(handle(get("/latest/meta-data/instance-id", t), slot, tokens(), kT0 + 6h).status, 401);
}

TEST_F(HandlerTest, AnotherSlotsTokenIsRefused) {
  const CheckedMetadata other_meta = checked(sample("i-other", "10.0.1.6"));
  const SlotView other{8, 43, other_meta};
  const std::string theirs = handle(put_token("60"), other, tokens(), kT0).body;
  const Response r = handle(get("/latest/meta-data/instance-id", theirs), slot, tokens(), kT0);
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(r.refusal, Refusal::kOtherSlotToken);
  EXPECT_EQ(handle(get("/latest/meta-data/instance-id", theirs), other, tokens(), kT0).body, "i-other");
}

TEST_F(HandlerTest, TokenOfAnEarlierIncarnationIsRevoked) {
  const std::string t = token(60);
  const SlotView reused{7, 99, meta};  // the slot was removed and given to another ENI
  const Response r = handle(get("/latest/meta-data/instance-id", t), reused, tokens(), kT0);
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(r.refusal, Refusal::kRevokedToken);
}

TEST_F(HandlerTest, ForgedOrForeignTokensAreRefused) {
  std::string t = token(60);
  std::vector<std::string> bad = {"", "x", t + "A", t.substr(1), std::string(kTokenTextLen, '=')};
  for (size_t i = 0; i < t.size(); i += 7) {  // any changed character
    std::string u = t;
    u[i] = u[i] == 'A' ? 'B' : 'A';
    bad.push_back(u);
  }
  for (const auto& b : bad) {
    const Response r = handle(get("/latest/meta-data/instance-id", b), slot, tokens(), kT0);
    EXPECT_EQ(r.status, 401) << b;
    EXPECT_EQ(r.refusal, Refusal::kBadToken) << b;
  }
  const TokenService other_key(std::array<uint8_t, kTokenKeyLen>{9});
  const std::string foreign = other_key.issue(7, 42, kT0, 60);
  EXPECT_EQ(handle(get("/latest/meta-data/instance-id", foreign), slot, tokens(), kT0).refusal, Refusal::kBadToken);
  // Even in IMDSv1 mode a bad token is refused, not ignored.
  CheckedMetadata v1 = meta;
  v1.md.http_tokens_required = false;
  EXPECT_EQ(handle(get("/latest/meta-data/instance-id", "nope"), SlotView{7, 42, v1}, tokens(), kT0).status, 401);
}

TEST_F(HandlerTest, NoTokenIsImdsV1WhenOptionalAnd401WhenRequired) {
  const Response required = handle(get("/latest/meta-data/instance-id"), slot, tokens(), kT0);
  EXPECT_EQ(required.status, 401);
  EXPECT_EQ(required.refusal, Refusal::kNoToken);
  EXPECT_NE(required.body.find("401 - Unauthorized"), std::string::npos);
  CheckedMetadata v1 = meta;
  v1.md.http_tokens_required = false;
  const Response optional = handle(get("/latest/meta-data/instance-id"), SlotView{7, 42, v1}, tokens(), kT0);
  EXPECT_EQ(optional.status, 200);
  EXPECT_EQ(optional.body, "i-0123456789abcdef0");
  EXPECT_EQ(header(optional, "X-Aws-Ec2-Metadata-Token-Ttl-Seconds"), "");
  // Unknown paths without a token: 401 first (no probing), 404 in v1 mode.
  EXPECT_EQ(handle(get("/nope"), slot, tokens(), kT0).status, 401);
  EXPECT_EQ(handle(get("/nope"), SlotView{7, 42, v1}, tokens(), kT0).status, 404);
}

TEST_F(HandlerTest, MetadataPaths) {
  const std::string t = token(600);
  auto body = [&](const std::string& path) {
    const Response r = handle(get(path, t), slot, tokens(), kT0);
    EXPECT_EQ(r.status, 200) << path;
    return r.body;
  };
  EXPECT_EQ(body("/latest/meta-data/"),
            "ami-id\nhostname\ninstance-id\ninstance-type\nlocal-hostname\nlocal-ipv4\nmac\nnetwork/\nplacement/\n"
            "security-groups");
  EXPECT_EQ(body("/latest/meta-data"), body("/latest/meta-data/"));
  EXPECT_EQ(body("/latest/meta-data/instance-type"), "t3.micro");
  EXPECT_EQ(body("/latest/meta-data/ami-id"), "ami-0abcdef1234567890");
  EXPECT_EQ(body("/latest/meta-data/local-ipv4"), "10.0.1.5");
  EXPECT_EQ(body("/latest/meta-data/mac"), "02:00:0a:00:01:05");  // canonical lower case
  EXPECT_EQ(body("/latest/meta-data/hostname"), "ip-10-0-1-5.eu-west-1.compute.internal");
  EXPECT_EQ(body("/latest/meta-data/local-hostname"), "ip-10-0-1-5.eu-west-1.compute.internal");
  EXPECT_EQ(body("/latest/meta-data/placement/"), "availability-zone\nregion");
  EXPECT_EQ(body("/latest/meta-data/placement/availability-zone"), "eu-west-1a");
  EXPECT_EQ(body("/latest/meta-data/placement/region"), "eu-west-1");
  EXPECT_EQ(body("/latest/meta-data/security-groups"), "default\nweb");
  EXPECT_EQ(body("/latest/meta-data/network/interfaces/macs/"), "02:00:0a:00:01:05/");
  const std::string mac = "/latest/meta-data/network/interfaces/macs/02:00:0a:00:01:05/";
  EXPECT_EQ(body(mac), "device-number\nlocal-hostname\nlocal-ipv4s\nmac\nowner-id\nsecurity-groups");
  EXPECT_EQ(body(mac + "local-ipv4s"), "10.0.1.5");
  EXPECT_EQ(body(mac + "owner-id"), "123456789012");
  EXPECT_EQ(body(mac + "device-number"), "0");
  EXPECT_EQ(body(mac + "security-groups"), "default\nweb");
  EXPECT_EQ(body("/latest/"), "dynamic\nmeta-data");  // no user data: not listed
  EXPECT_EQ(body("/latest/dynamic/instance-identity/"), "document");
  for (const char* p : {"/latest/meta-data/nope", "/latest/meta-data/instance-id/", "/latest/meta-data/placement/x",
                        "/latest/meta-data/network/interfaces/macs/02:00:0a:00:01:06/mac",
                        "/latest/user-data", "/latest/meta-data/../user-data", "", "latest/meta-data/"}) {
    const Response r = handle(get(p, t), slot, tokens(), kT0);
    EXPECT_EQ(r.status, 404) << p;
    EXPECT_EQ(r.content_type, "text/html");
  }
}

TEST_F(HandlerTest, IdentityDocumentAsEc2ShapesIt) {
  meta.md.pending_time = "2024-05-01T12:00:00Z";
  const Response r = handle(get("/latest/dynamic/instance-identity/document", token()), slot, tokens(), kT0);
  ASSERT_EQ(r.status, 200);
  const auto doc = nlohmann::json::parse(r.body);
  EXPECT_EQ(doc["accountId"], "123456789012");
  EXPECT_EQ(doc["architecture"], "x86_64");
  EXPECT_EQ(doc["availabilityZone"], "eu-west-1a");
  EXPECT_EQ(doc["imageId"], "ami-0abcdef1234567890");
  EXPECT_EQ(doc["instanceId"], "i-0123456789abcdef0");
  EXPECT_EQ(doc["instanceType"], "t3.micro");
  EXPECT_EQ(doc["privateIp"], "10.0.1.5");
  EXPECT_EQ(doc["region"], "eu-west-1");
  EXPECT_EQ(doc["version"], "2017-09-30");
  EXPECT_EQ(doc["pendingTime"], "2024-05-01T12:00:00Z");
  EXPECT_TRUE(doc["kernelId"].is_null());
  EXPECT_TRUE(doc["billingProducts"].is_null());
  EXPECT_EQ(doc.size(), 15u);
}

TEST_F(HandlerTest, UserDataIsServedAsBytes) {
  meta.md.user_data = {'#', '!', '/', 'b', 'i', 'n', '/', 's', 'h', '\n', 0, 0xff, 'x'};
  const Response r = handle(get("/latest/user-data", token()), slot, tokens(), kT0);
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.content_type, "application/octet-stream");
  EXPECT_EQ(std::vector<uint8_t>(r.body.begin(), r.body.end()), meta.md.user_data);
  EXPECT_EQ(handle(get("/latest/", token()), slot, tokens(), kT0).body, "dynamic\nmeta-data\nuser-data");
}

TEST_F(HandlerTest, OtherMethodsAre405) {
  for (const char* m : {"POST", "DELETE", "HEAD", "PATCH", "OPTIONS", "get", "TRACE"}) {
    const Response r = handle(Request{m, "/latest/meta-data/", {}}, slot, tokens(), kT0);
    EXPECT_EQ(r.status, 405) << m;
    EXPECT_EQ(r.refusal, Refusal::kBadMethod);
    EXPECT_EQ(header(r, "Allow"), "GET, PUT");
  }
  const Response put_elsewhere = handle(Request{"PUT", "/latest/meta-data/", {}}, slot, tokens(), kT0);
  EXPECT_EQ(put_elsewhere.status, 405);
  EXPECT_EQ(header(put_elsewhere, "Allow"), "GET");
  const Response get_token = handle(get(std::string(kTokenPath), token()), slot, tokens(), kT0);
  EXPECT_EQ(get_token.status, 405);
  EXPECT_EQ(header(get_token, "Allow"), "PUT");
}

TEST_F(HandlerTest, DuplicateTokenHeaderIsRefused) {
  Request r = get("/latest/meta-data/instance-id", token());
  r.headers.emplace_back("X-AWS-EC2-METADATA-TOKEN", token());
  EXPECT_EQ(handle(r, slot, tokens(), kT0).refusal, Refusal::kDuplicateHeader);
}

TEST(Token, Base64UrlRoundTripAndStrictness) {
  for (size_t len = 0; len < 40; ++len) {
    std::vector<uint8_t> data(len);
    for (size_t i = 0; i < len; ++i) data[i] = static_cast<uint8_t>(i * 37 + 11);
    const std::string text = base64url_encode(data.data(), len);
    std::vector<uint8_t> back(len);
    ASSERT_TRUE(base64url_decode(text, back.data(), len)) << len;
    EXPECT_EQ(back, data);
  }
  uint8_t one[1];
  EXPECT_TRUE(base64url_decode("_w", one, 1));
  EXPECT_EQ(one[0], 0xff);
  EXPECT_FALSE(base64url_decode("_x", one, 1));  // non-zero trailing bits: not canonical
  EXPECT_FALSE(base64url_decode("/w", one, 1));  // the standard alphabet is not this one
  EXPECT_FALSE(base64url_decode("_w==", one, 1));
}

TEST(Token, RandomKeysDiffer) {
  auto a = TokenService::create();
  auto b = TokenService::create();
  ASSERT_TRUE(a.ok() && b.ok());
  const std::string ta = a->issue(1, 1, kT0, 60);
  EXPECT_EQ(a->verify(ta, 1, 1, kT0).check, TokenCheck::kValid);
  EXPECT_EQ(b->verify(ta, 1, 1, kT0).check, TokenCheck::kBadMac);
  EXPECT_NE(ta, a->issue(1, 1, kT0, 61));
}

TEST(Metadata, Checks) {
  EXPECT_TRUE(check_metadata(sample()).ok());
  auto bad = [](auto change) {
    InstanceMetadata md = sample();
    change(md);
    auto r = check_metadata(md);
    return !r.ok() && r.error().code == ImdsErrc::kBadMetadata;
  };
  EXPECT_TRUE(bad([](InstanceMetadata& m) { m.local_ipv4 = "10.0.1"; }));
  EXPECT_TRUE(bad([](InstanceMetadata& m) { m.local_ipv4 = "169.254.169.254"; }));
  EXPECT_TRUE(bad([](InstanceMetadata& m) { m.local_ipv4 = "0.0.0.0"; }));
  EXPECT_TRUE(bad([](InstanceMetadata& m) { m.mac = "02:00:0a:00:01"; }));
  EXPECT_TRUE(bad([](InstanceMetadata& m) { m.mac = "ff:ff:ff:ff:ff:ff"; }));
  EXPECT_TRUE(bad([](InstanceMetadata& m) { m.instance_id = "i-1\r\nX-Injected: 1"; }));
  EXPECT_TRUE(bad([](InstanceMetadata& m) { m.region = std::string(256, 'a'); }));
  EXPECT_TRUE(bad([](InstanceMetadata& m) { m.security_groups = {""}; }));
  EXPECT_TRUE(bad([](InstanceMetadata& m) { m.user_data.assign(kMaxUserData + 1, 'x'); }));
  EXPECT_FALSE(bad([](InstanceMetadata& m) { m.user_data.assign(kMaxUserData, 'x'); }));
}

TEST(SlotTable, AddUpdateRemoveAndQuarantine) {
  SlotTable t(3, 120s);
  auto a = t.add(sample("i-a"), kT0);
  auto b = t.add(sample("i-b"), kT0);
  auto c = t.add(sample("i-c"), kT0);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(*a, 0u);
  EXPECT_EQ(*b, 1u);
  EXPECT_EQ(*c, 2u);
  EXPECT_EQ(t.add(sample("i-d"), kT0).error().code, ImdsErrc::kFull);
  const uint64_t inc_b = t.get(1)->incarnation;
  ASSERT_TRUE(t.update(1, sample("i-b2")).ok());
  EXPECT_EQ(t.get(1)->meta.md.instance_id, "i-b2");
  EXPECT_EQ(t.get(1)->incarnation, inc_b);  // tokens survive an update
  EXPECT_EQ(t.update(1, sample("i-b3", "nope")).error().code, ImdsErrc::kBadMetadata);
  ASSERT_TRUE(t.remove(1, kT0).ok());
  EXPECT_EQ(t.get(1), nullptr);
  EXPECT_EQ(t.remove(1, kT0).error().code, ImdsErrc::kNoSlot);
  EXPECT_EQ(t.update(1, sample()).error().code, ImdsErrc::kNoSlot);
  EXPECT_EQ(t.update(99, sample()).error().code, ImdsErrc::kNoSlot);
  EXPECT_EQ(t.get(99), nullptr);
  EXPECT_EQ(t.size(), 2u);
  // Quarantined: not reused before 120 s.
  EXPECT_EQ(t.add(sample("i-e"), kT0 + 119s).error().code, ImdsErrc::kFull);
  auto e = t.add(sample("i-e"), kT0 + 120s);
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(*e, 1u);
  EXPECT_NE(t.get(1)->incarnation, inc_b);  // a new incarnation: the old tokens are dead
}

TEST(SlotTable, NextFitDoesNotReuseAFreedSlotFirst) {
  SlotTable t(4, 0s);
  ASSERT_EQ(*t.add(sample(), kT0), 0u);
  ASSERT_TRUE(t.remove(0, kT0).ok());
  EXPECT_EQ(*t.add(sample(), kT0), 1u);
  EXPECT_EQ(*t.add(sample(), kT0), 2u);
}

}  // namespace
}  // namespace azote::imds
