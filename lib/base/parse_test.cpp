#include "base/parse.hpp"

#include <gtest/gtest.h>

namespace azote {
namespace {

TEST(ParseSize, Suffixes) {
  EXPECT_EQ(parse_size("256M"), 256ull << 20);
  EXPECT_EQ(parse_size("1G"), 1ull << 30);
  EXPECT_EQ(parse_size("2GiB"), 2ull << 30);
  EXPECT_EQ(parse_size("4096K"), 4096ull << 10);
  EXPECT_EQ(parse_size("12345"), 12345ull);
  EXPECT_EQ(parse_size("7B"), 7ull);
  EXPECT_EQ(parse_size("1m"), 1ull << 20);
}

TEST(ParseSize, Junk) {
  EXPECT_FALSE(parse_size(""));
  EXPECT_FALSE(parse_size("M"));
  EXPECT_FALSE(parse_size("12X"));
  EXPECT_FALSE(parse_size("-1M"));
  EXPECT_FALSE(parse_size("1MM"));
  EXPECT_FALSE(parse_size("99999999999999999999999"));
  EXPECT_FALSE(parse_size("20000000000T"));  // overflows 64 bits
}

TEST(ParseUint, Bounds) {
  EXPECT_EQ(parse_uint("3", 1, 8), 3u);
  EXPECT_FALSE(parse_uint("0", 1, 8));
  EXPECT_FALSE(parse_uint("9", 1, 8));
  EXPECT_FALSE(parse_uint("1a", 0, 100));
  EXPECT_FALSE(parse_uint("", 0, 100));
}

TEST(SplitCommandLine, FlagsInOrderHelpAndVersionStopAndEveryBadWordIsNamed) {
  const std::set<std::string> v = {"--a", "--b"};
  auto c = split_command_line({"--a", "1", "--b=x=y", "--a="}, v);
  ASSERT_EQ(c.error, "");
  ASSERT_EQ(c.flags.size(), 3u);
  EXPECT_EQ(c.flags[0], (std::pair<std::string, std::string>{"--a", "1"}));
  EXPECT_EQ(c.flags[1], (std::pair<std::string, std::string>{"--b", "x=y"}));
  EXPECT_EQ(c.flags[2], (std::pair<std::string, std::string>{"--a", ""}));
  EXPECT_TRUE(split_command_line({"--a", "1", "--help", "--nope"}, v).help);
  EXPECT_TRUE(split_command_line({"--version"}, v).version);
  EXPECT_EQ(split_command_line({"--a"}, v).error, "--a needs a value");
  EXPECT_EQ(split_command_line({"--c", "1"}, v).error, "unknown option --c (see --help)");
  EXPECT_EQ(split_command_line({"--c=1"}, v).error, "unknown option --c=1 (see --help)");
  EXPECT_EQ(split_command_line({"stray"}, v).error, "unexpected argument \"stray\" (see --help)");
  EXPECT_EQ(split_command_line({"stray"}, v, "files go with --a").error,
            "unexpected argument \"stray\" (files go with --a; see --help)");
}

}  // namespace
}  // namespace azote
