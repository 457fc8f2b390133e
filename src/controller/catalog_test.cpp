#include "controller/catalog.hpp"

#include <set>

#include <gtest/gtest.h>

namespace azote::controller {
namespace {

TEST(Catalog, InstanceTypes) {
  const InstanceType* t = find_instance_type("t3.micro");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->vcpus, 2u);
  EXPECT_EQ(t->memory_mib, 1024u);
  EXPECT_EQ(find_instance_type("t9.huge"), nullptr);
  EXPECT_NE(find_instance_type(kDefaultInstanceType), nullptr);
  std::set<std::string_view> names;
  for (const auto& x : instance_types()) EXPECT_TRUE(names.insert(x.name).second) << x.name;
}

TEST(Catalog, VolumeSpecDefaultsAndLimits) {
  VolumeSpec v{"", 10, 0, 0};
  EXPECT_FALSE(complete_volume_spec(&v, false, false));
  EXPECT_EQ(v.type, "gp3");
  EXPECT_EQ(v.iops, 3000u);
  EXPECT_EQ(v.throughput_mbps, 125u);

  VolumeSpec gp2{"gp2", 100, 0, 0};
  EXPECT_FALSE(complete_volume_spec(&gp2, false, false));
  EXPECT_EQ(gp2.iops, 300u);
  VolumeSpec small{"gp2", 1, 0, 0};
  EXPECT_FALSE(complete_volume_spec(&small, false, false));
  EXPECT_EQ(small.iops, 100u);

  VolumeSpec io1{"io1", 10, 0, 0};
  auto e = complete_volume_spec(&io1, false, false);
  ASSERT_TRUE(e);
  EXPECT_NE(e->find("iops is required"), std::string::npos);
  io1.iops = 1000;  // 100 per GiB > 50
  e = complete_volume_spec(&io1, true, false);
  ASSERT_TRUE(e);
  EXPECT_NE(e->find("50 per GiB"), std::string::npos) << *e;
  io1.iops = 500;
  EXPECT_FALSE(complete_volume_spec(&io1, true, false));

  VolumeSpec big{"gp3", 20000, 0, 0};
  e = complete_volume_spec(&big, false, false);
  ASSERT_TRUE(e);
  EXPECT_NE(e->find("outside 1-16384"), std::string::npos);
  VolumeSpec unknown{"sc9", 10, 0, 0};
  e = complete_volume_spec(&unknown, false, false);
  ASSERT_TRUE(e);
  EXPECT_NE(e->find("\"sc9\" does not exist"), std::string::npos);
  VolumeSpec thr{"gp2", 10, 0, 500};
  EXPECT_TRUE(complete_volume_spec(&thr, false, true));
}

TEST(Catalog, Ids) {
  const std::string i = new_id("i");
  EXPECT_TRUE(valid_id(i, "i")) << i;
  EXPECT_EQ(i.size(), 19u);
  EXPECT_NE(new_id("i"), i);
  EXPECT_TRUE(valid_id("vol-0123456789abcdef0", "vol"));
  EXPECT_TRUE(valid_id("i-0123abcd", "i"));
  EXPECT_FALSE(valid_id("i-0123456789ABCDEF0", "i"));
  EXPECT_FALSE(valid_id("i-0123", "i"));
  EXPECT_FALSE(valid_id("vol-0123456789abcdef0", "i"));
  EXPECT_FALSE(valid_id("i_0123456789abcdef0", "i"));
  EXPECT_FALSE(valid_id("i-0123456789abcdef0; DROP", "i"));
  EXPECT_EQ(image_id_from_hash("0123456789abcdef0123"), "ami-0123456789abcdef0");
  const std::string t = now_rfc3339();
  EXPECT_EQ(t.size(), 24u) << t;
  EXPECT_EQ(t.back(), 'Z');
}

}  // namespace
}  // namespace azote::controller
