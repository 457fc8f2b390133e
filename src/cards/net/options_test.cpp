#include "cards/net/options.hpp"

#include <gtest/gtest.h>

namespace azote::card_net {
namespace {

TEST(Options, EniSpec) {
  auto e = parse_eni("--eni", "socket=/run/a.sock,id=eni-a,mac=02:00:0a:00:01:05,ip=10.0.1.5,subnet=10.0.1.0/24,"
                              "sg=sg-a+sg-b,vpc=vpc-1,source-dest-check=off");
  ASSERT_TRUE(e) << e.error().message();
  EXPECT_EQ(e->socket, "/run/a.sock");
  EXPECT_EQ(e->groups, (std::vector<std::string>{"sg-a", "sg-b"}));
  EXPECT_FALSE(e->source_dest_check);
  EXPECT_EQ(e->ip.to_string(), "10.0.1.5");
  for (const char* bad : {"socket=/a,id=eni-a,mac=02:00:00:00:00:01,ip=10.0.1.5,subnet=s",            // no sg
                          "socket=/a,id=eni-a,mac=01:00:00:00:00:01,ip=10.0.1.5,subnet=s,sg=g",      // multicast
                          "socket=/a,id=eni-a,mac=02:00:00:00:00:01,ip=10.0.1.05,subnet=s,sg=g",     // octal-ish
                          "socket=/a,id=eni-a,mac=02:00:00:00:00:01,ip=10.0.1.5,subnet=s,sg=g,x=1",  // unknown
                          "socket=/a,id=eni-a,mac=02:00:00:00:00:01,ip=10.0.1.5,subnet=s,sg=g,source-dest-check=maybe"}) {
    EXPECT_FALSE(parse_eni("--eni", bad)) << bad;
  }
}

TEST(Options, JsonModel) {
  CardOptions o;
  auto r = apply_json(R"({"region": "eu-west-1", "vpcs": [{"id": "vpc-1", "cidr": "10.0.0.0/16"}],
    "subnets": [{"id": "subnet-a", "vpc": "vpc-1", "cidr": "10.0.1.0/24"}],
    "security_groups": [{"id": "sg-a", "ingress": [{"protocol": "udp", "port": 5000, "cidr": "10.0.0.0/16"},
                                                   {"protocol": "icmp", "from_port": 8, "to_port": -1, "group": "sg-a"}]}],
    "enis": [{"id": "eni-a", "socket": "/a", "mac": "02:00:00:00:00:01", "ip": "10.0.1.5", "subnet": "subnet-a",
              "security_groups": ["sg-a"], "source_dest_check": false}],
    "flow_log": "/tmp/f", "flow_log_window": 5})",
                      "t", &o);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(o.region, "eu-west-1");
  ASSERT_EQ(o.groups.size(), 1u);
  ASSERT_TRUE(o.groups[0].ingress);
  EXPECT_EQ(o.groups[0].ingress->size(), 2u);
  EXPECT_EQ((*o.groups[0].ingress)[0], vpc::Rule::udp(5000, 5000, *vpc::Cidr::parse("10.0.0.0/16")));
  EXPECT_FALSE(o.groups[0].egress);
  ASSERT_EQ(o.enis.size(), 1u);
  EXPECT_FALSE(o.enis[0].source_dest_check);
  EXPECT_EQ(o.flow_log_window_s, 5u);
  for (const char* bad : {R"({"vpcs": [{"id": "v", "cidr": "10.0.0.1/16"}]})",
                          R"({"security_groups": [{"id": "g", "ingress": [{"protocol": "udp", "port": 70000, "cidr": "0.0.0.0/0"}]}]})",
                          R"({"security_groups": [{"id": "g", "ingress": [{"protocol": "tcp", "cidr": "0.0.0.0/0", "group": "g"}]}]})",
                          R"({"nope": 1})"}) {
    CardOptions x;
    EXPECT_FALSE(apply_json(bad, "t", &x)) << bad;
  }
}

TEST(Options, Args) {
  auto p = parse_args({"--eni", "socket=/a,id=eni-a,mac=02:00:00:00:00:01,ip=10.0.1.5,subnet=10.0.1.0/24,sg=g,vpc=v",
                       "--metrics", "unix:/m", "--flow-log", "/f", "--flow-log-window=2"});
  ASSERT_TRUE(p) << p.error().message();
  EXPECT_EQ(p->options.metrics_path, "/m");
  EXPECT_EQ(p->options.flow_log_window_s, 2u);
  EXPECT_FALSE(parse_args({}));  // nothing to serve
  EXPECT_FALSE(parse_args({"--metrics", "/m", "--control", "/c"}));
  EXPECT_TRUE(parse_args({"--control", "/c"}));
  EXPECT_TRUE(parse_args({"--help"})->help);
}

}  // namespace
}  // namespace azote::card_net
