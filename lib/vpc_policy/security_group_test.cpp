// Rules as EC2 defines them: parsing, validation, and matching through the engine
// (stateless: rules_allow(), and process() for the default deny / allow).
#include "vpc_policy/security_group.hpp"

#include <gtest/gtest.h>

#include "vpc_policy/test_util.hpp"

namespace azote::vpc {
namespace {

using namespace test;

TEST(Ipv4, ParsesAndFormatsStrictly) {
  EXPECT_EQ(parse_ipv4("10.1.2.3"), 0x0a010203u);
  EXPECT_EQ(parse_ipv4("0.0.0.0"), 0u);
  EXPECT_EQ(parse_ipv4("255.255.255.255"), 0xffffffffu);
  for (const char* bad : {"", "1.2.3", "1.2.3.4.5", "256.0.0.1", "01.2.3.4", "1.2.3.4 ",
                          "1..2.3", "a.b.c.d", "1.2.3.-4", "1234.1.1.1"}) {
    EXPECT_FALSE(parse_ipv4(bad).has_value()) << bad;
  }
  EXPECT_EQ(format_ipv4(0xac1f1015u), "172.31.16.21");
}

TEST(Cidr, ParseContainsAndEdges) {
  const Cidr all = cidr("0.0.0.0/0");
  EXPECT_TRUE(all.contains(0));
  EXPECT_TRUE(all.contains(0xffffffffu));
  const Cidr host = cidr("10.0.0.7/32");
  EXPECT_TRUE(host.contains(ip("10.0.0.7")));
  EXPECT_FALSE(host.contains(ip("10.0.0.6")));
  EXPECT_FALSE(host.contains(ip("10.0.0.8")));
  const Cidr net = cidr("192.168.4.0/22");
  EXPECT_FALSE(net.contains(ip("192.168.3.255")));
  EXPECT_TRUE(net.contains(ip("192.168.4.0")));
  EXPECT_TRUE(net.contains(ip("192.168.7.255")));
  EXPECT_FALSE(net.contains(ip("192.168.8.0")));
  EXPECT_EQ(net.to_string(), "192.168.4.0/22");
  const Cidr one = cidr("128.0.0.0/1");
  EXPECT_TRUE(one.contains(ip("255.0.0.1")));
  EXPECT_FALSE(one.contains(ip("127.255.255.255")));
  for (const char* bad : {"10.0.0.0", "10.0.0.0/33", "10.0.0.1/8", "10.0.0.0/-1", "10.0.0.0/",
                          "10.0.0.0/08", "x/8", "0.0.0.1/0"}) {
    auto c = Cidr::parse(bad);
    ASSERT_FALSE(c.ok()) << bad;
    EXPECT_EQ(c.error().code, VpcErrc::kInvalid);
  }
}

TEST(Rule, ProtocolNamesAndValidation) {
  EXPECT_EQ(*parse_protocol("tcp"), 6);
  EXPECT_EQ(*parse_protocol("udp"), 17);
  EXPECT_EQ(*parse_protocol("icmp"), 1);
  EXPECT_EQ(*parse_protocol("-1"), -1);
  EXPECT_EQ(*parse_protocol("47"), 47);
  EXPECT_FALSE(parse_protocol("256").ok());
  EXPECT_FALSE(parse_protocol("sctp").ok());

  const Peer any = cidr("0.0.0.0/0");
  EXPECT_TRUE(validate(Rule::tcp(0, 65535, any)).ok());
  EXPECT_TRUE(validate(Rule::udp(53, 53, any)).ok());
  EXPECT_TRUE(validate(Rule::icmp(-1, -1, any)).ok());
  EXPECT_TRUE(validate(Rule::icmp(3, 4, any)).ok());
  EXPECT_TRUE(validate(Rule::icmp(8, -1, any)).ok());
  EXPECT_TRUE(validate(Rule::proto(47, any)).ok());
  EXPECT_TRUE(validate(Rule::all(sg("sg-1"))).ok());
  EXPECT_FALSE(validate(Rule::tcp(81, 80, any)).ok());
  EXPECT_FALSE(validate(Rule::tcp(-1, 80, any)).ok());
  EXPECT_FALSE(validate(Rule::udp(0, 65536, any)).ok());
  EXPECT_FALSE(validate(Rule::icmp(-1, 0, any)).ok());  // a code without a type
  EXPECT_FALSE(validate(Rule::icmp(256, -1, any)).ok());
  EXPECT_FALSE(validate(Rule{47, 1, 2, any}).ok());
  EXPECT_FALSE(validate(Rule{300, -1, -1, any}).ok());
  EXPECT_FALSE(validate(Rule::all(sg("sg 1"))).ok());
  EXPECT_FALSE(validate(Rule::all(Cidr{ip("10.0.0.1"), 8})).ok());
  EXPECT_EQ(Rule::tcp(22, 22, cidr("10.0.0.0/8")).to_string(), "tcp 22-22 10.0.0.0/8");
  EXPECT_EQ(Rule::icmp(3, 4, sg("sg-a")).to_string(), "icmp type 3 code 4 sg-a");
}

class RuleMatching : public ::testing::Test, public Fixture {
 protected:
  void SetUp() override {
    eni = add_eni("eni-1", {"sg-web"});
    // Start with no outbound rule so each test's rules are all there is.
    revoke("sg-web", kOut, Rule::all(cidr("0.0.0.0/0")));
  }
  bool in(const FlowKey& k) { return engine.rules_allow(eni, kIn, k); }
  bool out(const FlowKey& k) { return engine.rules_allow(eni, kOut, k); }
  EniHandle eni;
  const uint32_t me = ip("10.0.0.10");
  const uint32_t peer = ip("203.0.113.5");
};

TEST_F(RuleMatching, TcpPortRangeEdges) {
  allow("sg-web", kIn, Rule::tcp(1000, 2000, cidr("0.0.0.0/0")));
  EXPECT_FALSE(in(FlowKey::tcp(peer, 40000, me, 999)));
  EXPECT_TRUE(in(FlowKey::tcp(peer, 40000, me, 1000)));
  EXPECT_TRUE(in(FlowKey::tcp(peer, 40000, me, 1500)));
  EXPECT_TRUE(in(FlowKey::tcp(peer, 40000, me, 2000)));
  EXPECT_FALSE(in(FlowKey::tcp(peer, 40000, me, 2001)));
  // The range is about the destination port, not the source port.
  EXPECT_FALSE(in(FlowKey::tcp(peer, 1500, me, 80)));
  // Not UDP.
  EXPECT_FALSE(in(FlowKey::udp(peer, 40000, me, 1500)));
  // Inbound rules say nothing about outbound traffic.
  EXPECT_FALSE(out(FlowKey::tcp(me, 40000, peer, 1500)));
}

TEST_F(RuleMatching, FullAndSinglePortRanges) {
  allow("sg-web", kIn, Rule::tcp(0, 65535, cidr("0.0.0.0/0")));
  allow("sg-web", kIn, Rule::udp(65535, 65535, cidr("0.0.0.0/0")));
  EXPECT_TRUE(in(FlowKey::tcp(peer, 1, me, 0)));
  EXPECT_TRUE(in(FlowKey::tcp(peer, 1, me, 65535)));
  EXPECT_TRUE(in(FlowKey::udp(peer, 1, me, 65535)));
  EXPECT_FALSE(in(FlowKey::udp(peer, 1, me, 65534)));
  EXPECT_FALSE(in(FlowKey::udp(peer, 1, me, 0)));
}

TEST_F(RuleMatching, UdpOutboundUsesDestinationAddressAndPort) {
  allow("sg-web", kOut, Rule::udp(53, 53, cidr("10.0.0.2/32")));
  EXPECT_TRUE(out(FlowKey::udp(me, 5353, ip("10.0.0.2"), 53)));
  EXPECT_FALSE(out(FlowKey::udp(me, 5353, ip("10.0.0.3"), 53)));
  EXPECT_FALSE(out(FlowKey::udp(me, 53, ip("10.0.0.2"), 5353)));
  EXPECT_FALSE(out(FlowKey::tcp(me, 5353, ip("10.0.0.2"), 53)));
}

TEST_F(RuleMatching, CidrEdgesSlash0AndSlash32) {
  allow("sg-web", kIn, Rule::tcp(22, 22, cidr("198.51.100.7/32")));
  EXPECT_TRUE(in(FlowKey::tcp(ip("198.51.100.7"), 1, me, 22)));
  EXPECT_FALSE(in(FlowKey::tcp(ip("198.51.100.6"), 1, me, 22)));
  EXPECT_FALSE(in(FlowKey::tcp(ip("198.51.100.8"), 1, me, 22)));
  allow("sg-web", kIn, Rule::tcp(80, 80, cidr("0.0.0.0/0")));
  EXPECT_TRUE(in(FlowKey::tcp(ip("0.0.0.0"), 1, me, 80)));
  EXPECT_TRUE(in(FlowKey::tcp(ip("255.255.255.255"), 1, me, 80)));
  allow("sg-web", kIn, Rule::tcp(443, 443, cidr("10.0.0.0/8")));
  EXPECT_FALSE(in(FlowKey::tcp(ip("9.255.255.255"), 1, me, 443)));
  EXPECT_TRUE(in(FlowKey::tcp(ip("10.0.0.0"), 1, me, 443)));
  EXPECT_TRUE(in(FlowKey::tcp(ip("10.255.255.255"), 1, me, 443)));
  EXPECT_FALSE(in(FlowKey::tcp(ip("11.0.0.0"), 1, me, 443)));
}

TEST_F(RuleMatching, IcmpTypeAndCode) {
  allow("sg-web", kIn, Rule::icmp(3, 4, cidr("0.0.0.0/0")));  // fragmentation needed
  EXPECT_TRUE(in(FlowKey::icmp(peer, me, 3, 4)));
  EXPECT_FALSE(in(FlowKey::icmp(peer, me, 3, 3)));
  EXPECT_FALSE(in(FlowKey::icmp(peer, me, 8, 4)));
  allow("sg-web", kIn, Rule::icmp(8, -1, cidr("0.0.0.0/0")));  // echo request, any code
  EXPECT_TRUE(in(FlowKey::icmp(peer, me, 8, 0)));
  EXPECT_TRUE(in(FlowKey::icmp(peer, me, 8, 255)));
  EXPECT_FALSE(in(FlowKey::icmp(peer, me, 0, 0)));
  // ICMP rules never match TCP and vice versa.
  EXPECT_FALSE(in(FlowKey::tcp(peer, 3, me, 4)));
  allow("sg-web", kOut, Rule::icmp(-1, -1, cidr("0.0.0.0/0")));  // all ICMP
  for (int t : {0, 3, 8, 11, 255}) EXPECT_TRUE(out(FlowKey::icmp(me, peer, t, 7))) << t;
  EXPECT_FALSE(out(FlowKey::udp(me, 1, peer, 1)));
}

TEST_F(RuleMatching, AllTrafficAndOtherProtocols) {
  allow("sg-web", kIn, Rule::proto(47, cidr("192.0.2.0/24")));  // GRE
  EXPECT_TRUE(in(FlowKey::other(47, ip("192.0.2.1"), me)));
  EXPECT_FALSE(in(FlowKey::other(50, ip("192.0.2.1"), me)));
  EXPECT_FALSE(in(FlowKey::other(47, ip("192.0.3.1"), me)));
  allow("sg-web", kIn, Rule::all(cidr("192.0.3.0/24")));
  EXPECT_TRUE(in(FlowKey::other(50, ip("192.0.3.1"), me)));
  EXPECT_TRUE(in(FlowKey::tcp(ip("192.0.3.1"), 1, me, 65535)));
  EXPECT_TRUE(in(FlowKey::udp(ip("192.0.3.1"), 1, me, 0)));
  EXPECT_TRUE(in(FlowKey::icmp(ip("192.0.3.1"), me, 8, 0)));
}

TEST_F(RuleMatching, GroupReferencedSourceFollowsMembership) {
  ASSERT_TRUE(engine.create_group("sg-app").ok());
  allow("sg-web", kIn, Rule::tcp(5432, 5432, sg("sg-app")));
  const uint32_t app1 = ip("10.0.1.1"), app2 = ip("10.0.1.2");
  EXPECT_FALSE(in(FlowKey::tcp(app1, 1, me, 5432)));  // empty group
  ASSERT_TRUE(engine.add_member("sg-app", app1).ok());
  EXPECT_TRUE(in(FlowKey::tcp(app1, 1, me, 5432)));
  EXPECT_FALSE(in(FlowKey::tcp(app2, 1, me, 5432)));
  EXPECT_FALSE(in(FlowKey::tcp(app1, 1, me, 5433)));
  ASSERT_TRUE(engine.set_members("sg-app", {app2}).ok());
  EXPECT_FALSE(in(FlowKey::tcp(app1, 1, me, 5432)));
  EXPECT_TRUE(in(FlowKey::tcp(app2, 1, me, 5432)));
  ASSERT_TRUE(engine.remove_member("sg-app", app2).ok());
  EXPECT_FALSE(in(FlowKey::tcp(app2, 1, me, 5432)));
  // Outbound, the group names destinations.
  allow("sg-web", kOut, Rule::all(sg("sg-app")));
  ASSERT_TRUE(engine.add_member("sg-app", app1).ok());
  EXPECT_TRUE(out(FlowKey::udp(me, 1, app1, 9)));
  EXPECT_FALSE(out(FlowKey::udp(me, 1, app2, 9)));
  // A group may reference itself (instances of one tier talking to each other).
  allow("sg-web", kIn, Rule::all(sg("sg-web")));
  EXPECT_FALSE(in(FlowKey::udp(ip("10.0.0.11"), 1, me, 9)));
  ASSERT_TRUE(engine.add_member("sg-web", ip("10.0.0.11")).ok());
  EXPECT_TRUE(in(FlowKey::udp(ip("10.0.0.11"), 1, me, 9)));
}

TEST_F(RuleMatching, AnyGroupOfTheInterfaceAllows) {
  ASSERT_TRUE(engine.create_group("sg-ssh").ok());
  allow("sg-ssh", kIn, Rule::tcp(22, 22, cidr("10.9.0.0/16")));
  allow("sg-web", kIn, Rule::tcp(443, 443, cidr("0.0.0.0/0")));
  EXPECT_FALSE(in(FlowKey::tcp(ip("10.9.1.1"), 1, me, 22)));
  ASSERT_TRUE(engine.set_interface_groups(eni, {"sg-web", "sg-ssh"}).ok());
  EXPECT_TRUE(in(FlowKey::tcp(ip("10.9.1.1"), 1, me, 22)));
  EXPECT_TRUE(in(FlowKey::tcp(ip("10.9.1.1"), 1, me, 443)));
  EXPECT_FALSE(in(FlowKey::tcp(ip("10.8.1.1"), 1, me, 22)));
}

TEST(SecurityGroups, DefaultDenyInboundAllowOutbound) {
  Fixture f;
  const EniHandle eni = f.add_eni("eni-1", {"sg-new"});
  // A new group: one outbound rule (all traffic to 0.0.0.0/0), no inbound rule.
  const auto in_rules = f.engine.rules("sg-new", kIn);
  const auto out_rules = f.engine.rules("sg-new", kOut);
  ASSERT_TRUE(in_rules.ok() && out_rules.ok());
  EXPECT_TRUE(in_rules->empty());
  ASSERT_EQ(out_rules->size(), 1u);
  EXPECT_EQ((*out_rules)[0], Rule::all(cidr("0.0.0.0/0")));

  const uint32_t me = ip("10.0.0.10"), peer = ip("198.51.100.1");
  EXPECT_EQ(f.send(eni, kIn, FlowKey::tcp(peer, 1234, me, 22), tcp::kSyn).reason, Reason::kNoRule);
  EXPECT_FALSE(f.passes(eni, kIn, FlowKey::udp(peer, 1234, me, 53)));
  EXPECT_FALSE(f.passes(eni, kIn, FlowKey::icmp(peer, me, 8, 0, 1)));
  EXPECT_FALSE(f.passes(eni, kIn, FlowKey::other(47, peer, me)));
  EXPECT_TRUE(f.passes(eni, kOut, FlowKey::tcp(me, 40000, peer, 443), tcp::kSyn));
  EXPECT_TRUE(f.passes(eni, kOut, FlowKey::udp(me, 40000, peer, 53)));
  EXPECT_TRUE(f.passes(eni, kOut, FlowKey::icmp(me, peer, 8, 0, 9)));

  // Removing the default egress rule: outbound is denied too.
  f.revoke("sg-new", kOut, Rule::all(cidr("0.0.0.0/0")));
  EXPECT_FALSE(f.passes(eni, kOut, FlowKey::udp(me, 40001, peer, 53)));
  EXPECT_FALSE(f.passes(eni, kOut, FlowKey::tcp(me, 40001, peer, 443), tcp::kSyn));
}

TEST(SecurityGroups, ConfigurationErrors) {
  Fixture f;
  PolicyEngine& e = f.engine;
  ASSERT_TRUE(e.create_group("sg-a").ok());
  EXPECT_EQ(e.create_group("sg-a").error().code, VpcErrc::kExists);
  EXPECT_EQ(e.create_group("").error().code, VpcErrc::kInvalid);
  EXPECT_EQ(e.add_rule("sg-x", kIn, Rule::all(cidr("0.0.0.0/0"))).error().code,
            VpcErrc::kNotFound);
  EXPECT_EQ(e.add_rule("sg-a", kIn, Rule::all(sg("sg-x"))).error().code, VpcErrc::kNotFound);
  EXPECT_EQ(e.add_rule("sg-a", kIn, Rule::tcp(2, 1, cidr("0.0.0.0/0"))).error().code,
            VpcErrc::kInvalid);
  EXPECT_EQ(e.add_rule("sg-a", kOut, Rule::all(cidr("0.0.0.0/0"))).error().code,
            VpcErrc::kDuplicate);
  EXPECT_EQ(e.remove_rule("sg-a", kIn, Rule::all(cidr("0.0.0.0/0"))).error().code,
            VpcErrc::kNotFound);
  // Rules per direction quota (EC2 default 60).
  for (int p = 1; p <= 60; ++p) ASSERT_TRUE(e.add_rule("sg-a", kIn, Rule::tcp(p, p, cidr("0.0.0.0/0"))).ok());
  EXPECT_EQ(e.add_rule("sg-a", kIn, Rule::tcp(61, 61, cidr("0.0.0.0/0"))).error().code,
            VpcErrc::kLimit);
  // Groups per interface (EC2 default 5), no duplicates, at least one.
  for (const char* g : {"sg-1", "sg-2", "sg-3", "sg-4", "sg-5"}) ASSERT_TRUE(e.create_group(g).ok());
  InterfaceConfig c;
  c.id = "eni-a";
  c.groups = {"sg-a", "sg-1", "sg-2", "sg-3", "sg-4", "sg-5"};
  EXPECT_EQ(e.add_interface(c).error().code, VpcErrc::kLimit);
  c.groups = {};
  EXPECT_EQ(e.add_interface(c).error().code, VpcErrc::kLimit);
  c.groups = {"sg-1", "sg-1"};
  EXPECT_EQ(e.add_interface(c).error().code, VpcErrc::kDuplicate);
  c.groups = {"sg-1", "sg-nope"};
  EXPECT_EQ(e.add_interface(c).error().code, VpcErrc::kNotFound);
  c.groups = {"sg-1"};
  c.conntrack.timeouts.udp = seconds(10);  // EC2: 30..60 s
  EXPECT_EQ(e.add_interface(c).error().code, VpcErrc::kInvalid);
  c.conntrack = {};
  c.flow_log.enabled = true;
  c.flow_log.account_id = "12 34";
  EXPECT_EQ(e.add_interface(c).error().code, VpcErrc::kInvalid);
  c.flow_log.account_id = "123456789010";
  auto h = e.add_interface(c);
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(e.add_interface(c).error().code, VpcErrc::kExists);
  // A group in use cannot be deleted; nor one another group's rule references.
  EXPECT_EQ(e.delete_group("sg-1").error().code, VpcErrc::kInUse);
  ASSERT_TRUE(e.add_rule("sg-2", kIn, Rule::all(sg("sg-3"))).ok());
  EXPECT_EQ(e.delete_group("sg-3").error().code, VpcErrc::kInUse);
  ASSERT_TRUE(e.remove_rule("sg-2", kIn, Rule::all(sg("sg-3"))).ok());
  EXPECT_TRUE(e.delete_group("sg-3").ok());
  // A self-reference does not keep a group alive.
  ASSERT_TRUE(e.add_rule("sg-4", kIn, Rule::all(sg("sg-4"))).ok());
  EXPECT_TRUE(e.delete_group("sg-4").ok());
  ASSERT_TRUE(e.remove_interface(*h).ok());
  EXPECT_TRUE(e.delete_group("sg-1").ok());
  // A removed interface's handle is dead for good, even once its slot is reused.
  EXPECT_EQ(e.process(*h, kIn, pkt(FlowKey::udp(1, 1, 2, 2))).reason, Reason::kNoInterface);
  c.id = "eni-b";
  c.groups = {"sg-2"};
  auto h2 = e.add_interface(c);
  ASSERT_TRUE(h2.ok());
  EXPECT_EQ(h2->index, h->index);
  EXPECT_FALSE(e.stats(*h).has_value());
  EXPECT_TRUE(e.stats(*h2).has_value());
  EXPECT_EQ(e.find_interface("eni-b")->generation, h2->generation);
}

}  // namespace
}  // namespace azote::vpc
