#include "hv/config.hpp"

#include <gtest/gtest.h>

#include <cstdio>
#include <string>
#include <vector>

namespace azote::hv {
namespace {

Result<ParseOutcome, ConfigError> parse(std::vector<const char*> args) {
  args.insert(args.begin(), "azote-hv");
  return parse_args(static_cast<int>(args.size()), args.data());
}

TEST(Config, Defaults) {
  auto r = parse({"--kernel", "builtin:hello"});
  ASSERT_TRUE(r.ok()) << r.error().message();
  const auto& c = std::get<VmConfig>(*r);
  EXPECT_EQ(c.vcpus, 1u);
  EXPECT_EQ(c.memory, 256ull << 20);
  EXPECT_EQ(c.console.kind, ConsoleKind::kStdio);
  EXPECT_EQ(c.effective_cmdline(), "azote.run=hello");
  EXPECT_EQ(c.private_memory, VmConfig::PrivateMemory::kAuto);
  EXPECT_EQ(c.console_max, 1ull << 20);
}

TEST(Config, PrivateMemory) {
  for (const auto& [value, want] : std::vector<std::pair<const char*, VmConfig::PrivateMemory>>{
           {"auto", VmConfig::PrivateMemory::kAuto},
           {"memfd", VmConfig::PrivateMemory::kMemfd},
           {"guest_memfd", VmConfig::PrivateMemory::kGuestMemfd}}) {
    auto r = parse({"--kernel", "builtin:hello", "--private-memory", value});
    ASSERT_TRUE(r.ok()) << r.error().message();
    EXPECT_EQ(std::get<VmConfig>(*r).private_memory, want) << value;
  }
}

TEST(Config, AllFlags) {
  auto r = parse({"--kernel=builtin:exit", "--cmdline", "7", "--vcpus", "2", "--memory", "128M", "--console",
                  "unix:/tmp/x.sock"});
  ASSERT_TRUE(r.ok()) << r.error().message();
  const auto& c = std::get<VmConfig>(*r);
  EXPECT_EQ(c.vcpus, 2u);
  EXPECT_EQ(c.memory, 128ull << 20);
  EXPECT_EQ(c.console.kind, ConsoleKind::kUnix);
  EXPECT_EQ(c.console.path, "/tmp/x.sock");
  EXPECT_EQ(c.effective_cmdline(), "azote.run=exit 7");
}

TEST(Config, ErrorsNameTheFlag) {
  struct Case {
    std::vector<const char*> args;
    const char* needle;
  };
  for (const auto& tc : std::vector<Case>{
           {{"--kernel", "k", "--vcpus", "0"}, "--vcpus"},
           {{"--kernel", "k", "--vcpus", "999"}, "--vcpus"},
           {{"--kernel", "k", "--memory", "12X"}, "--memory"},
           {{"--kernel", "k", "--memory", "4M"}, "--memory"},
           {{"--kernel", "k", "--memory", "9000K"}, "whole number of MiB"},
           {{"--kernel", "k", "--console", "tcp:1"}, "--console"},
           {{"--kernel", "k", "--private-memory", "secret"}, "--private-memory: \"secret\""},
           {{"--kernel", "k", "--console-max", "4K"}, "--console-max: \"4K\""},
           {{"--kernel", "k", "--console-max", "2G"}, "--console-max: \"2G\""},
           {{"--kernel", "builtin:"}, "builtin:"},
           {{"--bogus"}, "--bogus"},
           {{"--kernel"}, "--kernel needs a value"},
           {{}, "--kernel or --eif is required"},
       }) {
    auto r = parse(tc.args);
    ASSERT_FALSE(r.ok()) << tc.needle;
    EXPECT_NE(r.error().message().find(tc.needle), std::string::npos) << r.error().message();
  }
}

TEST(Config, DevicesAndTheirCmdlineEntries) {
  auto r = parse({"--kernel", "builtin:blk-check", "--device", "blk,socket=/run/a.sock", "--device=blk,socket=/run/b.sock"});
  ASSERT_TRUE(r.ok()) << r.error().message();
  const auto& c = std::get<VmConfig>(*r);
  ASSERT_EQ(c.devices.size(), 2u);
  EXPECT_EQ(c.devices[1].socket, "/run/b.sock");
  EXPECT_EQ(c.effective_cmdline(),
            "azote.run=blk-check virtio_mmio.device=4K@0xc0000000:5 virtio_mmio.device=4K@0xc0001000:6");
  for (const char* bad : {"scsi,socket=/x", "blk", "net", "blk,socket=", "blk,sock=/x", ""}) {
    auto e = parse({"--kernel", "k", "--device", bad});
    ASSERT_FALSE(e.ok()) << bad;
    EXPECT_NE(e.error().message().find("--device"), std::string::npos) << e.error().message();
  }
  VmConfig j;
  ASSERT_TRUE(apply_json(R"({"devices": ["blk,socket=/a", {"type": "blk", "socket": "/b"}]})", "t", &j).ok());
  ASSERT_EQ(j.devices.size(), 2u);
  EXPECT_EQ(j.devices[1].socket, "/b");
  // net: the same wiring, another device identity.
  auto n = parse({"--kernel", "builtin:hello", "--device", "net,socket=/run/eni.sock", "--device", "blk,socket=/run/v"});
  ASSERT_TRUE(n.ok()) << n.error().message();
  EXPECT_EQ(std::get<VmConfig>(*n).devices[0].type, "net");
  ASSERT_NE(find_device_kind("net"), nullptr);
  EXPECT_EQ(find_device_kind("net")->device_id, 1u);
  EXPECT_EQ(find_device_kind("blk")->device_id, 2u);
  EXPECT_EQ(find_device_kind("scsi"), nullptr);
  ASSERT_TRUE(apply_json(R"({"devices": [{"type": "net", "socket": "/e"}]})", "t", &j).ok());
  EXPECT_EQ(j.devices[0].type, "net");
  auto je = apply_json(R"({"devices": [{"type": "blk"}]})", "t", &j);
  ASSERT_FALSE(je.ok());
  EXPECT_NE(je.error().message().find("devices[0]"), std::string::npos);
}

TEST(Config, Json) {
  VmConfig c;
  auto r = apply_json(R"({"kernel":"builtin:smp","vcpus":2,"memory":"64M","console":"file:/tmp/c"})", "t", &c);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(c.vcpus, 2u);
  EXPECT_EQ(c.memory, 64ull << 20);
  EXPECT_EQ(c.console.kind, ConsoleKind::kFile);
  VmConfig d;
  ASSERT_TRUE(apply_json(R"({"memory":512, "pit": false})", "t", &d).ok());
  EXPECT_EQ(d.memory, 512ull << 20);
  EXPECT_FALSE(d.pit);
  EXPECT_FALSE(apply_json(R"({"pit": "no"})", "t", &d).ok());
  auto nopit = parse({"--kernel", "builtin:hello", "--no-pit"});
  ASSERT_TRUE(nopit.ok());
  EXPECT_FALSE(std::get<VmConfig>(*nopit).pit);
}

TEST(Config, ControlSocket) {
  auto none = parse({"--kernel", "builtin:hello"});
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(std::get<VmConfig>(*none).control_path, "");
  auto r = parse({"--kernel", "builtin:hello", "--control", "/run/azote/i-1.ctl"});
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(std::get<VmConfig>(*r).control_path, "/run/azote/i-1.ctl");
  auto eq = parse({"--kernel", "builtin:hello", "--control=/tmp/c.sock"});
  ASSERT_TRUE(eq.ok()) << eq.error().message();
  EXPECT_EQ(std::get<VmConfig>(*eq).control_path, "/tmp/c.sock");
  const std::string long_path = "/tmp/" + std::string(120, 'x');
  for (const char* bad : {"", long_path.c_str()}) {
    auto e = parse({"--kernel", "k", "--control", bad});
    ASSERT_FALSE(e.ok()) << bad;
    EXPECT_NE(e.error().message().find("--control"), std::string::npos) << e.error().message();
  }
  auto missing = parse({"--kernel", "k", "--control"});
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message().find("--control needs a value"), std::string::npos);

  VmConfig j;
  ASSERT_TRUE(apply_json(R"({"control": "/tmp/j.sock"})", "t", &j).ok());
  EXPECT_EQ(j.control_path, "/tmp/j.sock");
  auto notstr = apply_json(R"({"control": 1})", "t", &j);
  ASSERT_FALSE(notstr.ok());
  EXPECT_NE(notstr.error().message().find("\"control\""), std::string::npos) << notstr.error().message();
  auto empty = apply_json(R"({"control": ""})", "t", &j);
  ASSERT_FALSE(empty.ok());
  EXPECT_NE(empty.error().message().find("control"), std::string::npos) << empty.error().message();
  // The flag overrides the file.
  const std::string file = ::testing::TempDir() + "/azote-hv-control-config.json";
  {
    std::FILE* f = std::fopen(file.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs(R"({"kernel": "builtin:hello", "control": "/tmp/from-file.sock"})", f);
    std::fclose(f);
  }
  auto from_file = parse({"--config", file.c_str()});
  ASSERT_TRUE(from_file.ok()) << from_file.error().message();
  EXPECT_EQ(std::get<VmConfig>(*from_file).control_path, "/tmp/from-file.sock");
  auto overridden = parse({"--config", file.c_str(), "--control", "/tmp/from-flag.sock"});
  ASSERT_TRUE(overridden.ok()) << overridden.error().message();
  EXPECT_EQ(std::get<VmConfig>(*overridden).control_path, "/tmp/from-flag.sock");
  std::remove(file.c_str());
}

TEST(Config, JsonErrorsNameTheKey) {
  VmConfig c;
  auto unknown = apply_json(R"({"kernal":"x"})", "t", &c);
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.error().message().find("kernal"), std::string::npos);
  auto vcpus = apply_json(R"({"vcpus":"two"})", "t", &c);
  ASSERT_FALSE(vcpus.ok());
  EXPECT_NE(vcpus.error().message().find("vcpus"), std::string::npos);
  auto junk = apply_json("{", "t", &c);
  ASSERT_FALSE(junk.ok());
  EXPECT_NE(junk.error().message().find("invalid JSON"), std::string::npos);
  auto arr = apply_json("[]", "t", &c);
  EXPECT_FALSE(arr.ok());
}

}  // namespace
}  // namespace azote::hv
