#include "vpc_model/model.hpp"

#include <gtest/gtest.h>

#include "vpc_policy/flow.hpp"

namespace azote::vpc_model {
namespace {

uint32_t ip(const char* text) { return *vpc::parse_ipv4(text); }

TEST(Network, AddressAllocationSkipsTheFiveReservedAddresses) {
  const auto sn = *parse_cidr("10.0.1.0/24");
  std::set<uint32_t> used;
  EXPECT_EQ(next_free_address(sn, used), ip("10.0.1.4"));
  for (const char* r : {"10.0.1.0", "10.0.1.1", "10.0.1.2", "10.0.1.3", "10.0.1.255", "10.0.2.7"})
    EXPECT_TRUE(reserved_address(sn, ip(r))) << r;
  EXPECT_FALSE(reserved_address(sn, ip("10.0.1.4")));
  EXPECT_FALSE(reserved_address(sn, ip("10.0.1.254")));
  EXPECT_EQ(usable_addresses(sn), 251u);
  used.insert(ip("10.0.1.4"));
  used.insert(ip("10.0.1.6"));
  EXPECT_EQ(next_free_address(sn, used), ip("10.0.1.5"));  // the lowest free one, gaps refilled
  used.insert(ip("10.0.1.5"));
  EXPECT_EQ(next_free_address(sn, used), ip("10.0.1.7"));
}

TEST(Network, SmallestSubnetHoldsElevenAndThenIsFull) {
  const auto sn = *parse_cidr("10.0.1.16/28");
  EXPECT_EQ(usable_addresses(sn), 11u);
  std::set<uint32_t> used;
  for (int i = 0; i < 11; ++i) {
    auto a = next_free_address(sn, used);
    ASSERT_TRUE(a) << i;
    EXPECT_FALSE(reserved_address(sn, *a));
    used.insert(*a);
  }
  EXPECT_EQ(vpc::format_ipv4(*used.rbegin()), "10.0.1.30");
  EXPECT_FALSE(next_free_address(sn, used));
}

TEST(Network, LayoutChecks) {
  EXPECT_FALSE(check_network_layout("10.0.0.0/16", "10.0.1.0/24"));
  EXPECT_FALSE(check_network_layout("10.0.0.0/16", "10.0.0.0/16"));
  EXPECT_TRUE(check_network_layout("10.0.0.0/15", "10.0.1.0/24"));  // VPCs are /16../28
  EXPECT_TRUE(check_network_layout("10.0.0.0/16", "10.1.1.0/24"));  // outside
  EXPECT_TRUE(check_network_layout("10.0.0.0/24", "10.0.0.0/16"));  // larger than the VPC
  EXPECT_TRUE(check_network_layout("10.0.0.1/16", "10.0.1.0/24"));  // host bits
  EXPECT_TRUE(check_network_layout("10.0.0.0/16", "10.0.1.0/30"));
  EXPECT_TRUE(check_network_layout("nope", "10.0.1.0/24"));
}

TEST(Network, MacsAndNames) {
  std::set<std::string> used;
  for (int i = 0; i < 200; ++i) {
    const std::string m = new_mac(used);
    EXPECT_TRUE(valid_mac(m)) << m;
    EXPECT_EQ(m.substr(0, 3), "02:") << "locally administered unicast";
    EXPECT_NE(m.substr(0, 6), "02:a2:") << "a gateway MAC of the card";
    EXPECT_TRUE(used.insert(m).second) << m;
  }
  EXPECT_FALSE(valid_mac("02:00:00:00:00"));
  EXPECT_FALSE(valid_mac("02:00:00:00:00:0G"));
  EXPECT_EQ(private_dns_name(ip("10.0.1.4"), "local-1"), "ip-10-0-1-4.local-1.compute.internal");
}

TEST(Network, Base64) {
  EXPECT_EQ(base64(""), "");
  EXPECT_EQ(base64("f"), "Zg==");
  EXPECT_EQ(base64("fo"), "Zm8=");
  EXPECT_EQ(base64("foo"), "Zm9v");
  EXPECT_EQ(base64("foobar"), "Zm9vYmFy");
  EXPECT_EQ(base64(std::string("\xff\x00\x80", 3)), "/wCA");
}

const auto kAny = [](const std::string& g) { return g == "sg-0123456789abcdef0"; };

std::string code_of(const std::vector<Permission>& ps) {
  auto r = rules_of(ps, kAny);
  return r ? "ok" : r.error().code;
}

TEST(Network, RuleValidationGivesEc2Codes) {
  Permission ssh{"tcp", 22, 22, {"10.0.0.0/16"}, {}};
  auto r = rules_of({ssh}, kAny);
  ASSERT_TRUE(r) << r.error().message();
  ASSERT_EQ(r->size(), 1u);
  EXPECT_EQ(r->front().to_string(), "tcp 22-22 10.0.0.0/16");
  EXPECT_EQ(code_of({}), "MissingParameter");
  EXPECT_EQ(code_of({{"", 22, 22, {"10.0.0.0/16"}, {}}}), "MissingParameter");
  EXPECT_EQ(code_of({{"tcp", 22, 22, {}, {}}}), "MissingParameter");
  EXPECT_EQ(code_of({{"tcpx", 22, 22, {"10.0.0.0/16"}, {}}}), "InvalidParameterValue");
  EXPECT_EQ(code_of({{"tcp", std::nullopt, std::nullopt, {"10.0.0.0/16"}, {}}}), "InvalidParameterValue");
  EXPECT_EQ(code_of({{"udp", 80, 70, {"10.0.0.0/16"}, {}}}), "InvalidParameterValue");
  EXPECT_EQ(code_of({{"tcp", 0, 65536, {"10.0.0.0/16"}, {}}}), "InvalidParameterValue");
  EXPECT_EQ(code_of({{"tcp", 22, 22, {"10.0.0.1/16"}, {}}}), "InvalidParameterValue");
  EXPECT_EQ(code_of({{"tcp", 22, 22, {"10.0.0.0/33"}, {}}}), "InvalidParameterValue");
  EXPECT_EQ(code_of({{"icmp", -1, 3, {"0.0.0.0/0"}, {}}}), "InvalidParameterValue");  // a code needs a type
  EXPECT_EQ(code_of({{"icmp", 256, -1, {"0.0.0.0/0"}, {}}}), "InvalidParameterValue");
  EXPECT_EQ(code_of({{"-1", std::nullopt, std::nullopt, {}, {"sg-nope"}}}), "InvalidGroupId.Malformed");
  EXPECT_EQ(code_of({{"-1", std::nullopt, std::nullopt, {}, {"sg-0123456789abcdef1"}}}), "InvalidGroup.NotFound");
  EXPECT_EQ(code_of({{"-1", std::nullopt, std::nullopt, {}, {"sg-0123456789abcdef0"}}}), "ok");
  // Numbers name the same protocols; ports of all-traffic rules are ignored, as EC2 does.
  auto six = rules_of({{"6", 80, 81, {"0.0.0.0/0"}, {}}}, kAny);
  ASSERT_TRUE(six);
  EXPECT_EQ(six->front(), vpc::Rule::tcp(80, 81, vpc::Cidr{0, 0}));
  auto all = rules_of({{"-1", 5, 6, {"0.0.0.0/0"}, {"sg-0123456789abcdef0"}}}, kAny);
  ASSERT_TRUE(all);
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ(all->at(0), vpc::Rule::all(vpc::Cidr{0, 0}));
  EXPECT_EQ(all->at(1), vpc::Rule::all(vpc::GroupRef{"sg-0123456789abcdef0"}));
  auto icmp = rules_of({{"icmp", 8, std::nullopt, {"10.0.0.0/8"}, {}}}, kAny);
  ASSERT_TRUE(icmp);
  EXPECT_EQ(icmp->front(), vpc::Rule::icmp(8, -1, *parse_cidr("10.0.0.0/8")));
}

TEST(Network, RulesRoundTripThroughTheCardJson) {
  const std::vector<vpc::Rule> rules = {vpc::Rule::tcp(22, 22, *parse_cidr("10.0.0.0/16")),
                                        vpc::Rule::udp(53, 53, vpc::GroupRef{"sg-0123456789abcdef0"}),
                                        vpc::Rule::icmp(8, -1, vpc::Cidr{0, 0}), vpc::Rule::all(vpc::Cidr{0, 0}),
                                        vpc::Rule::proto(47, *parse_cidr("192.168.0.0/24"))};
  const auto j = rules_json(rules);
  EXPECT_EQ(j[0].dump(), R"({"cidr":"10.0.0.0/16","from_port":22,"protocol":"tcp","to_port":22})");
  EXPECT_EQ(j[1]["group"], "sg-0123456789abcdef0");
  EXPECT_EQ(j[3].dump(), R"({"cidr":"0.0.0.0/0","protocol":"-1"})");
  EXPECT_EQ(rules_from_json(j.dump()), rules);
  EXPECT_TRUE(rules_from_json("garbage").empty());
  EXPECT_EQ(rules_from_json(R"([{"protocol":"tcp","from_port":1,"to_port":2,"cidr":"1.2.3.4/32"},{"protocol":"x"}])").size(), 1u);
  const Permission p = permission_of(rules[2]);
  EXPECT_EQ(p.protocol, "icmp");
  EXPECT_EQ(p.from_port, 8);
  EXPECT_EQ(p.to_port, -1);
  EXPECT_EQ(p.cidrs, std::vector<std::string>{"0.0.0.0/0"});
  const Permission all = permission_of(rules[3]);
  EXPECT_EQ(all.protocol, "-1");
  EXPECT_FALSE(all.from_port);
  // The default group: inbound from itself, outbound everywhere.
  EXPECT_EQ(default_group_ingress("sg-0123456789abcdef0").at(0).to_string(), "-1 all sg-0123456789abcdef0");
  EXPECT_EQ(default_egress().at(0).to_string(), "-1 all 0.0.0.0/0");
}

}  // namespace
}  // namespace azote::vpc_model
