#include "cards/vsock/options.hpp"

#include <gtest/gtest.h>

namespace azote::card_vsock {
namespace {

std::string err(const std::vector<std::string>& a) {
  auto r = parse_args(a);
  return r.ok() ? std::string() : r.error().message();
}

TEST(Options, AParentAndItsEnclaves) {
  auto p = parse_args({"--device", "cid=3,socket=/run/p.sock", "--device=socket=/run/e4.sock,cid=4", "--device",
                       "cid=4294967294,socket=/run/e.sock", "--log-level", "debug", "--seccomp", "log"});
  ASSERT_TRUE(p.ok()) << p.error().message();
  ASSERT_EQ(p->options.devices.size(), 3u);
  EXPECT_EQ(p->options.devices[0].cid, 3u);
  EXPECT_EQ(p->options.devices[0].socket, "/run/p.sock");
  EXPECT_EQ(p->options.devices[1].cid, 4u);
  EXPECT_EQ(p->options.devices[1].socket, "/run/e4.sock");
  EXPECT_EQ(p->options.devices[2].cid, 4294967294u);
  EXPECT_EQ(p->options.log_level, "debug");
  EXPECT_EQ(p->options.seccomp, "log");
  EXPECT_TRUE(parse_args({"--help"})->help);
  EXPECT_TRUE(parse_args({"--version"})->version);
  // A parent alone is a fabric too (enclaves come later, through --control), as the
  // controller starts it.
  auto alone = parse_args({"--device", "cid=3,socket=/run/azote/vsock.sock", "--control", "fd:3"});
  ASSERT_TRUE(alone.ok()) << alone.error().message();
  EXPECT_EQ(alone->options.devices.size(), 1u);
  EXPECT_EQ(alone->options.control, "fd:3");
  EXPECT_EQ(parse_args({"--device", "cid=3,socket=/p", "--control", "/run/ctl"})->options.control, "/run/ctl");
  EXPECT_EQ(parse_args({"--device", "cid=3,socket=/p"})->options.control, "");
}

TEST(Options, ErrorsNameTheBadValue) {
  const auto has = [](const std::string& msg, const std::string& what) {
    return msg.find(what) != std::string::npos;
  };
  EXPECT_TRUE(has(err({}), "cid=3")) << err({});
  EXPECT_TRUE(has(err({"--device", "cid=4,socket=/e"}), "parent"));
  EXPECT_TRUE(has(err({"--device", "cid=3,socket=/p", "--device", "cid=3,socket=/q"}), "cid 3 given twice"));
  EXPECT_TRUE(has(err({"--device", "cid=3,socket=/p", "--device", "cid=5,socket=/p"}), "socket /p given twice"));
  EXPECT_TRUE(has(err({"--device", "cid=3,socket=/p", "--device", "cid=5,socket=/a", "--device", "cid=5,socket=/b"}),
                  "cid 5 given twice"));
  EXPECT_TRUE(has(err({"--device", "cid=4294967295,socket=/p"}), "4294967295"));
  EXPECT_TRUE(has(err({"--device", "cid=4294967295,socket=/p"}), "reserved"));
  EXPECT_TRUE(has(err({"--device", "cid=4294967296,socket=/p"}), "32 bits"));
  EXPECT_TRUE(has(err({"--device", "cid=99999999999999999999,socket=/p"}), "99999999999999999999"));
  EXPECT_TRUE(has(err({"--device", "cid=2,socket=/p"}), "cid 2 is reserved"));
  EXPECT_TRUE(has(err({"--device", "cid=0,socket=/p"}), "cid 0 is reserved"));
  EXPECT_TRUE(has(err({"--device", "cid=x,socket=/p"}), "\"x\""));
  EXPECT_TRUE(has(err({"--device", "cid=-4,socket=/p"}), "\"-4\""));
  EXPECT_TRUE(has(err({"--device", "cid=3"}), "socket=PATH is required"));
  EXPECT_TRUE(has(err({"--device", "socket=/p"}), "cid=N is required"));
  EXPECT_TRUE(has(err({"--device", "cid=3,socket="}), "socket \"\""));
  EXPECT_TRUE(has(err({"--device", "cid=3,socket=" + std::string(108, 'a')}), "1-107"));
  EXPECT_TRUE(has(err({"--device", "cid=3,socket=/p,mode=0666"}), "unknown key \"mode\""));
  EXPECT_TRUE(has(err({"--device", "cid=3,socket=/p,cid=4"}), "cid given twice"));
  EXPECT_TRUE(has(err({"--device", "cid=3,/p"}), "\"/p\" is not KEY=VALUE"));
  EXPECT_TRUE(has(err({"--device", "cid=3,socket=/p", "--seccomp", "off"}), "--seccomp \"off\""));
  EXPECT_TRUE(has(err({"--device", "cid=3,socket=/p", "--log-level", "loud"}), "--log-level \"loud\""));
  EXPECT_TRUE(has(err({"--device", "cid=3,socket=/p", "--bogus"}), "--bogus"));
  EXPECT_TRUE(has(err({"--device"}), "--device"));
  EXPECT_TRUE(has(err({"--device", "cid=3,socket=/p", "--control", "fd:2"}), "--control \"fd:2\": expected fd:N"));
  EXPECT_TRUE(has(err({"--device", "cid=3,socket=/p", "--control", "fd:x"}), "--control \"fd:x\""));
  EXPECT_TRUE(has(err({"--device", "cid=3,socket=/p", "--control", std::string(108, 'c')}), "1-107 bytes"));
  EXPECT_TRUE(has(err({"--device", "cid=3,socket=/p", "--control", "/p"}), "--control /p: also the socket of cid 3"));
  EXPECT_TRUE(has(err({"--device", "cid=3,socket=/p", "--control", "/c", "--control", "/d"}), "--control given twice"));
  std::vector<std::string> five = {"--device", "cid=3,socket=/p"};
  for (int i = 4; i < 9; ++i) {
    five.push_back("--device");
    five.push_back("cid=" + std::to_string(i) + ",socket=/e" + std::to_string(i));
  }
  EXPECT_TRUE(has(err(five), "at most 4")) << err(five);
  five.resize(five.size() - 2);
  EXPECT_TRUE(parse_args(five).ok()) << err(five);
}

TEST(Options, HostPorts) {
  auto p = parse_args({"--device", "cid=3,socket=/p", "--host-port", "5000=/run/h.sock", "--host-port",
                       "4294967295=/run/m.sock"});
  ASSERT_TRUE(p.ok()) << p.error().message();
  ASSERT_EQ(p->options.host_ports.size(), 2u);
  EXPECT_EQ(p->options.host_ports[0].port, 5000u);
  EXPECT_EQ(p->options.host_ports[0].path, "/run/h.sock");
  EXPECT_EQ(p->options.host_ports[1].port, 4294967295u);
  const auto e = [](const std::string& v) {
    auto r = parse_args({"--device", "cid=3,socket=/p", "--host-port", v});
    return r.ok() ? std::string() : r.error().message();
  };
  EXPECT_NE(e("0=/x").find("port \"0\" is not a port"), std::string::npos) << e("0=/x");
  EXPECT_NE(e("4294967296=/x").find("port \"4294967296\""), std::string::npos);
  EXPECT_NE(e("x=/x").find("port \"x\""), std::string::npos);
  EXPECT_NE(e("5000").find("expected PORT=PATH"), std::string::npos);
  EXPECT_NE(e("5000=rel").find("\"rel\" is not an absolute socket path"), std::string::npos);
  EXPECT_NE(e("5000=/" + std::string(107, 'a')).find("1-107 bytes"), std::string::npos);
  EXPECT_NE(err({"--device", "cid=3,socket=/p", "--host-port", "1=/a", "--host-port", "1=/b"}).find("port 1 given twice"),
            std::string::npos);
  std::vector<std::string> nine{"--device", "cid=3,socket=/p"};
  for (int i = 1; i <= 9; ++i) nine.insert(nine.end(), {"--host-port", std::to_string(i) + "=/s"});
  EXPECT_NE(err(nine).find("at most 8 host ports"), std::string::npos) << err(nine);
}

}  // namespace
}  // namespace azote::card_vsock
