#include "controller/options.hpp"

#include <gtest/gtest.h>

namespace azote::controller {
namespace {

TEST(ControllerOptions, DefaultsAndValues) {
  auto o = parse_options({});
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(o->state_dir, "/var/lib/azote");
  EXPECT_EQ(o->listen, "unix:/var/lib/azote/api.sock");
  o = parse_options({"--state-dir", "/tmp/x", "--capacity-vcpus=8", "--capacity-memory", "4G", "--on-exit", "stop"});
  ASSERT_TRUE(o.ok()) << o.error().message();
  EXPECT_EQ(o->listen, "unix:/tmp/x/api.sock");
  EXPECT_EQ(o->capacity_vcpus, 8u);
  EXPECT_EQ(o->capacity_memory_mib, 4096u);
  EXPECT_TRUE(o->stop_on_exit);
}

TEST(ControllerOptions, ErrorsNameTheInput) {
  auto e = parse_options({"--state-dir", "relative"});
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.error().message().find("\"relative\""), std::string::npos);
  e = parse_options({"--capacity-vcpus", "0"});
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.error().message().find("--capacity-vcpus \"0\""), std::string::npos);
  e = parse_options({"--on-exit", "maybe"});
  ASSERT_FALSE(e.ok());
  e = parse_options({"--bogus"});
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.error().message().find("--bogus"), std::string::npos);
  e = parse_options({"--listen"});
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.error().message().find("needs a value"), std::string::npos);
  e = parse_options({"--state-dir", "/" + std::string(120, 'a')});
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.error().message().find("longer than 107"), std::string::npos);
  EXPECT_TRUE(parse_options({"--help"})->help);
}

TEST(ControllerOptions, JoiningTheRegionNeedsItsTokenCaAndZone) {
  auto o = parse_options({"--join", "https://10.0.0.1:8443", "--enrolment-token", "t", "--region-ca", "/etc/azote/region-ca.pem",
                          "--zone", "us-east-1a", "--host-id", "rack-7"});
  ASSERT_TRUE(o.ok()) << o.error().message();
  EXPECT_EQ(o->join, "https://10.0.0.1:8443");
  EXPECT_EQ(o->host_id, "rack-7");
  for (const std::vector<std::string>& bad :
       {std::vector<std::string>{"--join", "http://10.0.0.1:8443", "--enrolment-token", "t", "--region-ca", "/ca", "--zone", "z"},
        std::vector<std::string>{"--join", "https://r:8443", "--region-ca", "/ca", "--zone", "z"},
        std::vector<std::string>{"--join", "https://r:8443", "--enrolment-token", "t", "--region-ca", "ca", "--zone", "z"},
        std::vector<std::string>{"--enrolment-token", "t"},
        std::vector<std::string>{"--join", "https://r:8443", "--enrolment-token", "t", "--region-ca", "/ca", "--zone", "z",
                                 "--host-id", "a/b"}}) {
    auto e = parse_options(bad);
    EXPECT_FALSE(e.ok()) << bad[0] << " " << bad[1];
  }
}

TEST(ControllerOptions, UnderlayIsAnIpv4AddressAndPort) {
  auto o = parse_options({});
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(o->underlay, "");
  o = parse_options({"--underlay", "192.168.0.10:6081"});
  ASSERT_TRUE(o.ok()) << o.error().message();
  EXPECT_EQ(o->underlay, "192.168.0.10:6081");
  for (const char* bad : {"192.168.0.10", "192.168.0.10:0", "192.168.0.10:70000", "host:6081", "::1:6081", ""}) {
    auto e = parse_options({"--underlay", bad});
    ASSERT_FALSE(e.ok()) << bad;
    EXPECT_NE(e.error().message().find("--underlay"), std::string::npos) << e.error().message();
  }
}

TEST(ControllerOptions, NetworkDefaultsAndChecks) {
  auto o = parse_options({});
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(o->vpc_cidr, "10.0.0.0/16");
  EXPECT_EQ(o->subnet_cidr, "10.0.1.0/24");
  EXPECT_EQ(o->region, "local-1");
  EXPECT_EQ(o->card_net_bin, "");
  o = parse_options({"--vpc-cidr", "172.16.0.0/20", "--subnet-cidr=172.16.4.0/24", "--region", "eu-west-9",
                     "--card-net", "/opt/azote-card-net"});
  ASSERT_TRUE(o.ok()) << o.error().message();
  EXPECT_EQ(o->vpc_cidr, "172.16.0.0/20");
  EXPECT_EQ(o->subnet_cidr, "172.16.4.0/24");
  EXPECT_EQ(o->region, "eu-west-9");
  EXPECT_EQ(o->card_net_bin, "/opt/azote-card-net");
  for (const std::vector<std::string>& bad :
       {std::vector<std::string>{"--subnet-cidr", "10.1.0.0/24"},   // outside the VPC
        std::vector<std::string>{"--vpc-cidr", "10.0.0.0/8"},       // larger than /16
        std::vector<std::string>{"--subnet-cidr", "10.0.1.1/24"},   // host bits
        std::vector<std::string>{"--subnet-cidr", "10.0.1.0/29"},   // smaller than /28
        std::vector<std::string>{"--region", "Local 1"}, std::vector<std::string>{"--region", "-x"}}) {
    auto e = parse_options(bad);
    EXPECT_FALSE(e.ok()) << bad[0] << " " << bad[1];
  }
}

}  // namespace
}  // namespace azote::controller
