#include "region/enrol.hpp"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace azote::region {
namespace {

nlohmann::json good() {
  return {{"token", "t"},
          {"host_id", "h-1"},
          {"zone", "us-east-1a"},
          {"endpoint", "unix:/var/lib/azote/api.sock"},
          {"vcpus", 8},
          {"memory_mib", 8192},
          {"ca_pem", "-----BEGIN CERTIFICATE-----\n"},
          {"cert_pem", "-----BEGIN CERTIFICATE-----\n"},
          {"key_pem", "-----BEGIN PRIVATE KEY-----\n"}};
}

TEST(Enrol, AGoodRequestReads) {
  auto j = good();
  j["underlay"] = "192.168.0.2:6081";
  auto f = parse_enrol(j.dump());
  ASSERT_TRUE(f.ok()) << f.error();
  EXPECT_EQ(f->host_id, "h-1");
  EXPECT_EQ(f->underlay, "192.168.0.2:6081");
  EXPECT_EQ(f->vcpus, 8u);
  EXPECT_EQ(f->memory_mib, 8192u);
}

TEST(Enrol, EachBadFieldIsNamed) {
  const std::vector<std::pair<std::string, nlohmann::json>> bad = {
      {"host_id", "a/b"},      {"host_id", ""},          {"zone", "a b"},         {"endpoint", "nowhere"},
      {"underlay", "1.2.3.4"}, {"underlay", "x:6081"},   {"underlay", "1.2.3.4:0"}, {"ca_pem", "not pem"},
      {"vcpus", 0},            {"memory_mib", -1},       {"token", 5}};
  for (const auto& [k, v] : bad) {
    auto j = good();
    j[k] = v;
    auto f = parse_enrol(j.dump());
    ASSERT_FALSE(f.ok()) << k << "=" << v.dump();
    EXPECT_NE(f.error().find(k), std::string::npos) << f.error();
  }
  for (const char* k : {"token", "host_id", "zone", "endpoint", "ca_pem", "cert_pem", "key_pem"}) {
    auto j = good();
    j.erase(k);
    EXPECT_FALSE(parse_enrol(j.dump()).ok()) << k;
  }
  EXPECT_FALSE(parse_enrol("not json").ok());
  EXPECT_FALSE(parse_enrol(std::string(70000, ' ')).ok());
}

TEST(Enrol, TokensAreFreshAndOnlyTheirDigestIsKept) {
  const std::string a = new_enrolment_token(), b = new_enrolment_token();
  EXPECT_EQ(a.size(), 64u);
  EXPECT_NE(a, b);
  EXPECT_EQ(enrolment_digest(a).size(), 64u);
  EXPECT_NE(enrolment_digest(a), a);
  // SHA-256("abc"), FIPS 180-2's example.
  EXPECT_EQ(enrolment_digest("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

}  // namespace
}  // namespace azote::region
