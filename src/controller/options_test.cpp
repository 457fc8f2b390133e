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

}  // namespace
}  // namespace azote::controller
