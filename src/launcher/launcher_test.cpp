// The launcher's pure parts: its command line, and the arguments it refuses to pass on.
#include <gtest/gtest.h>

#include "launcher/launcher.hpp"

namespace azote::launcher {
namespace {

TEST(Launcher, SeccompLogIsNeverPassedOn) {
  EXPECT_TRUE(refused_args({"--seccomp=log"}));
  EXPECT_TRUE(refused_args({"--control", "fd:3", "--seccomp", "log"}));
  EXPECT_FALSE(refused_args({"--seccomp", "kill"}));
  EXPECT_FALSE(refused_args({"--seccomp"}));  // the process itself refuses a missing value
  EXPECT_TRUE(refused_args({"--cmdline", "--seccomp=log"}));  // anywhere in argv: refused, not interpreted
}

TEST(Launcher, OptionsNeedEveryBinaryAndASaneUidBase) {
  auto ok = parse_args({"--state-dir", "/s", "--controller", "c", "--hv", "h", "--card-blk", "b", "--card-net", "n",
                        "--", "--on-exit", "stop"});
  ASSERT_TRUE(ok) << ok.error().message();
  EXPECT_EQ(ok->controller_args, (std::vector<std::string>{"--on-exit", "stop"}));
  EXPECT_EQ(ok->uid_base, 2'000'000'000u);
  auto missing = parse_args({"--state-dir", "/s", "--controller", "c"});
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.error().message().find("--hv"), std::string::npos);
  auto low = parse_args({"--state-dir", "/s", "--controller", "c", "--hv", "h", "--card-blk", "b", "--card-net", "n",
                         "--uid-base", "0"});
  ASSERT_FALSE(low);
  EXPECT_NE(low.error().message().find("--uid-base \"0\""), std::string::npos);
}

}  // namespace
}  // namespace azote::launcher
