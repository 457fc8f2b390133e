#include "net/addr.hpp"

#include <gtest/gtest.h>

namespace azote::net {
namespace {

TEST(Mac, ParseAndFormat) {
  auto m = MacAddress::parse("02:00:0A:00:01:05");
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->to_string(), "02:00:0a:00:01:05");
  EXPECT_TRUE(m->is_unicast());
  EXPECT_TRUE(m->is_locally_administered());
  EXPECT_EQ(MacAddress::parse("02-00-0a-00-01-05")->to_string(), "02:00:0a:00:01:05");
  EXPECT_TRUE(MacAddress::broadcast().is_broadcast());
  EXPECT_TRUE(MacAddress::broadcast().is_multicast());
  EXPECT_TRUE(MacAddress::parse("01:00:5e:00:00:01")->is_multicast());
  EXPECT_TRUE(MacAddress().is_zero());
  for (const char* bad : {"", "02:00:0a:00:01", "02:00:0a:00:01:5", "02:00:0a:00:01:055", "02:00:0a:00:01-05",
                          "02:00:0g:00:01:05", "02 00 0a 00 01 05", " 2:00:0a:00:01:05"}) {
    auto r = MacAddress::parse(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.error().code, NetErrc::kBadAddress);
  }
}

TEST(Ipv4, ParseAndFormat) {
  auto a = Ipv4Address::parse("10.0.1.5");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->value(), 0x0a000105u);
  EXPECT_EQ(a->to_string(), "10.0.1.5");
  EXPECT_EQ(Ipv4Address(10, 0, 1, 5), *a);
  EXPECT_EQ(Ipv4Address::parse("255.255.255.255")->to_string(), "255.255.255.255");
  EXPECT_EQ(Ipv4Address::parse("0.0.0.0")->value(), 0u);
  EXPECT_TRUE(Ipv4Address(169, 254, 169, 254).is_link_local());
  EXPECT_TRUE(Ipv4Address(224, 0, 0, 1).is_multicast());
  EXPECT_TRUE(Ipv4Address(127, 0, 0, 1).is_loopback());
  for (const char* bad : {"", "10.0.1", "10.0.1.5.6", "256.0.0.1", "10.0.01.5", "010.0.1.5", "10..1.5", " 10.0.1.5",
                          "10.0.1.5 ", "10.0.1.-5", "10.0.1.5/32", "1e1.0.0.1", "10.0.1.1234"}) {
    auto r = Ipv4Address::parse(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.error().code, NetErrc::kBadAddress);
  }
  std::array<uint8_t, 4> b{};
  a->store(b);
  EXPECT_EQ(b, (std::array<uint8_t, 4>{10, 0, 1, 5}));
  EXPECT_EQ(Ipv4Address::from_bytes(b), *a);
}

TEST(Ipv4Prefix, ParseContainsFormat) {
  auto p = Ipv4Prefix::parse("10.0.0.0/16");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->to_string(), "10.0.0.0/16");
  EXPECT_EQ(p->netmask().to_string(), "255.255.0.0");
  EXPECT_EQ(p->last().to_string(), "10.0.255.255");
  EXPECT_TRUE(p->contains(Ipv4Address(10, 0, 1, 5)));
  EXPECT_TRUE(p->contains(Ipv4Address(10, 0, 255, 255)));
  EXPECT_FALSE(p->contains(Ipv4Address(10, 1, 0, 0)));
  EXPECT_TRUE(p->contains(*Ipv4Prefix::parse("10.0.1.0/24")));
  EXPECT_FALSE(p->contains(*Ipv4Prefix::parse("10.0.0.0/8")));
  EXPECT_TRUE(p->overlaps(*Ipv4Prefix::parse("10.0.0.0/8")));
  EXPECT_FALSE(p->overlaps(*Ipv4Prefix::parse("10.1.0.0/16")));

  auto all = Ipv4Prefix::parse("0.0.0.0/0");
  ASSERT_TRUE(all.ok());
  EXPECT_TRUE(all->contains(Ipv4Address(203, 0, 113, 9)));
  EXPECT_EQ(all->netmask().value(), 0u);
  auto host = Ipv4Prefix::parse("10.0.1.5/32");
  ASSERT_TRUE(host.ok());
  EXPECT_TRUE(host->contains(Ipv4Address(10, 0, 1, 5)));
  EXPECT_FALSE(host->contains(Ipv4Address(10, 0, 1, 4)));
  EXPECT_EQ(Ipv4Prefix::of(Ipv4Address(10, 0, 1, 5), 24).to_string(), "10.0.1.0/24");

  for (const char* bad : {"10.0.1.5/16", "10.0.0.0/33", "10.0.0.0/", "10.0.0.0", "10.0.0.0/016", "10.0.0.0/1x",
                          "/16", "10.0.0/16"}) {
    auto r = Ipv4Prefix::parse(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.error().code, NetErrc::kBadAddress);
  }
}

}  // namespace
}  // namespace azote::net
