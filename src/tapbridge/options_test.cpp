// azote-tap-bridge's command line: what it takes, what it refuses, and that every
// refusal names the bad input.
#include "tapbridge/options.hpp"

#include <gtest/gtest.h>

namespace azote::tapbridge {
namespace {

std::string refusal(const std::vector<std::string>& args) {
  auto p = parse_args(args);
  return p ? std::string("(accepted)") : p.error().message();
}

TEST(Options, Defaults) {
  auto p = parse_args({"--socket", "/run/eni-a.sock", "--tap", "tap0"});
  ASSERT_TRUE(p) << p.error().message();
  EXPECT_EQ(p->options.socket, "/run/eni-a.sock");
  EXPECT_EQ(p->options.tap, "tap0");
  EXPECT_EQ(p->options.queue_size, kDefaultQueueSize);
  EXPECT_EQ(p->options.log_level, "warn");
  EXPECT_FALSE(p->help);
}

TEST(Options, EqualsFormAndEveryOption) {
  auto p = parse_args({"--socket=/s", "--tap=eth-inst0", "--queue-size=1024", "--log-level", "debug"});
  ASSERT_TRUE(p) << p.error().message();
  EXPECT_EQ(p->options.socket, "/s");
  EXPECT_EQ(p->options.tap, "eth-inst0");
  EXPECT_EQ(p->options.queue_size, 1024);
  EXPECT_EQ(p->options.log_level, "debug");
}

TEST(Options, HelpAndVersionWin) {
  EXPECT_TRUE(parse_args({"--help"})->help);
  EXPECT_TRUE(parse_args({"--bogus", "-h"}).ok() == false);  // parsed in order: the bad flag first
  EXPECT_TRUE(parse_args({"-h", "--bogus"})->help);
  EXPECT_TRUE(parse_args({"--version"})->version);
  const std::string u = usage_text();
  for (const char* flag : {"--socket", "--tap", "--queue-size", "--log-level", "--help", "Exit status"})
    EXPECT_NE(u.find(flag), std::string::npos) << flag;
}

TEST(Options, RefusalsNameTheInput) {
  EXPECT_NE(refusal({"--tap", "t"}).find("--socket"), std::string::npos);
  EXPECT_NE(refusal({"--socket", "/s"}).find("--tap"), std::string::npos);
  EXPECT_NE(refusal({"--socket"}).find("--socket needs a value"), std::string::npos);
  EXPECT_NE(refusal({"--socket", "/s", "--tap", "t", "--frobnicate"}).find("--frobnicate"), std::string::npos);
  EXPECT_NE(refusal({"--socket", "/s", "--tap", "t", "extra"}).find("\"extra\""), std::string::npos);
  EXPECT_NE(refusal({"--socket", "/s", "--tap", "0123456789abcdef"}).find("0123456789abcdef"), std::string::npos);
  EXPECT_NE(refusal({"--socket", "/s", "--tap", "a/b"}).find("a/b"), std::string::npos);
  EXPECT_NE(refusal({"--socket", "/s", "--tap", "a b"}).find("a b"), std::string::npos);
  EXPECT_NE(refusal({"--socket", "/s", "--tap", ""}).find("--tap"), std::string::npos);
  EXPECT_NE(refusal({"--socket", std::string(108, 'x'), "--tap", "t"}).find("--socket"), std::string::npos);
  for (const char* n : {"0", "1", "3", "100", "8192", "65536", "-4", "x", ""})
    EXPECT_NE(refusal({"--socket", "/s", "--tap", "t", "--queue-size", n}).find("--queue-size: \"" + std::string(n)),
              std::string::npos)
        << n;
  EXPECT_NE(refusal({"--socket", "/s", "--tap", "t", "--log-level", "loud"}).find("loud"), std::string::npos);
  EXPECT_TRUE(parse_args({"--socket", "/s", "--tap", "t", "--queue-size", "2"}));
  EXPECT_TRUE(parse_args({"--socket", "/s", "--tap", "t", "--queue-size", "4096"}));
  EXPECT_TRUE(parse_args({"--socket", "/s", "--tap", "012345678901234"}));  // 15 bytes: the limit
}

}  // namespace
}  // namespace azote::tapbridge
