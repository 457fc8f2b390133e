#include "cards/blk/options.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>

namespace azote::card_blk {
namespace {

Result<ParsedArgs, OptionsError> parse(std::vector<std::string> a) { return parse_args(a); }

std::string error_of(std::vector<std::string> a) {
  auto r = parse(std::move(a));
  return r ? std::string("<no error>") : r.error().message();
}

TEST(Options, FullVolume) {
  auto r = parse({"--volume", "socket=/run/v0.sock,file=/srv/v0.img,readonly,key-file=/k,iops=400,mbps=50,queues=4,"
                              "burst-ms=20,serial=vol-0",
                  "--volume=socket=/run/v1.sock,file=/dev/loop0", "--metrics", "unix:/run/m.sock"});
  ASSERT_TRUE(r) << r.error().message();
  const auto& o = r->options;
  ASSERT_EQ(o.volumes.size(), 2u);
  const auto& v = o.volumes[0];
  EXPECT_EQ(v.socket, "/run/v0.sock");
  EXPECT_EQ(v.file, "/srv/v0.img");
  EXPECT_TRUE(v.read_only);
  EXPECT_EQ(v.key_file, "/k");
  EXPECT_EQ(v.iops, 400u);
  EXPECT_EQ(v.mbps, 50u);
  EXPECT_EQ(v.queues, 4u);
  EXPECT_EQ(v.burst_ms, 20u);
  EXPECT_EQ(v.serial, "vol-0");
  EXPECT_FALSE(v.discard.has_value());
  EXPECT_FALSE(o.volumes[1].read_only);
  EXPECT_EQ(o.volumes[1].queues, 1u);
  EXPECT_EQ(o.metrics_path, "/run/m.sock");
}

TEST(Options, HelpAndVersion) {
  EXPECT_TRUE(parse({"--help"})->help);
  EXPECT_TRUE(parse({"--version"})->version);
  // The help text documents every volume option the parser knows.
  const std::string h = usage_text();
  for (const char* k : {"socket=", "file=", "readonly", "key-file=", "iops=", "mbps=", "burst-ms=", "queues=",
                        "serial=", "discard=", "--config", "--metrics unix:", "--log-level"})
    EXPECT_NE(h.find(k), std::string::npos) << k;
}

TEST(Options, ErrorsNameTheOptionAndTheValue) {
  struct Case {
    std::vector<std::string> args;
    std::vector<std::string> expect;  // substrings of the message
  };
  const std::vector<Case> cases = {
      {{}, {"no volume"}},
      {{"--volume"}, {"--volume needs a value"}},
      {{"--volume", "file=/a"}, {"file=/a", "needs socket=PATH"}},
      {{"--volume", "socket=/s"}, {"socket=/s", "needs file=PATH"}},
      {{"--volume", "socket=/s,file=/a,iops=abc"}, {"iops=abc", "0..10000000"}},
      {{"--volume", "socket=/s,file=/a,iops=-1"}, {"iops=-1"}},
      {{"--volume", "socket=/s,file=/a,mbps=99999999999"}, {"mbps=99999999999"}},
      {{"--volume", "socket=/s,file=/a,queues=0"}, {"queues=0", "1..16"}},
      {{"--volume", "socket=/s,file=/a,queues=17"}, {"queues=17"}},
      {{"--volume", "socket=/s,file=/a,readonly=maybe"}, {"readonly=maybe", "on/off"}},
      {{"--volume", "socket=/s,file=/a,colour=red"}, {"unknown volume option \"colour\"", "known: socket"}},
      {{"--volume", "socket=/s,file=/a,iops=1,iops=2"}, {"iops given twice"}},
      {{"--volume", "socket=/s,file=/a,,iops=1"}, {"empty option"}},
      {{"--volume", "socket=/s,file=/a,serial=this-serial-is-far-too-long"}, {"serial=this-serial-is-far-too-long"}},
      {{"--volume", "socket=/s,file=/a,key-file="}, {"key-file= needs a value"}},
      {{"--volume", "socket=/s,file=/a,readonly,discard=on"}, {"discard=on on a readonly volume"}},
      {{"--volume", "socket=" + std::string(120, 'x') + ",file=/a"}, {"longer than 107"}},
      {{"--volume", "socket=/s,file=/a", "--volume", "socket=/s,file=/b"}, {"socket /s is used by another volume"}},
      {{"--volume", "socket=/s,file=/a", "--metrics", "tcp:1234"}, {"--metrics tcp:1234", "unix:PATH"}},
      {{"--volume", "socket=/s,file=/a", "--metrics", "unix:/s"}, {"also the --metrics socket"}},
      {{"--volume", "socket=/s,file=/a", "--log-level", "loud"}, {"--log-level loud"}},
      {{"--volume", "socket=/s,file=/a", "--frobnicate"}, {"unknown option --frobnicate"}},
      {{"stray"}, {"unexpected argument \"stray\""}},
      {{"--config", "/nonexistent/card.json"}, {"--config /nonexistent/card.json", "cannot be read"}},
  };
  for (const auto& c : cases) {
    const std::string m = error_of(c.args);
    for (const auto& e : c.expect) EXPECT_NE(m.find(e), std::string::npos) << "message: " << m << "\nwanted: " << e;
  }
}

TEST(Options, JsonConfigAndPrecedence) {
  const std::string path = ::testing::TempDir() + "/card-blk-options.json";
  {
    std::ofstream f(path);
    f << R"({"volumes": [{"socket": "/s0", "file": "/a", "readonly": true, "iops": 100, "key-file": "/k"},
                         "socket=/s1,file=/b,queues=2"],
             "metrics": "unix:/m", "log": "debug"})";
  }
  auto r = parse({"--config", path});
  ASSERT_TRUE(r) << r.error().message();
  ASSERT_EQ(r->options.volumes.size(), 2u);
  EXPECT_TRUE(r->options.volumes[0].read_only);
  EXPECT_EQ(r->options.volumes[0].iops, 100u);
  EXPECT_EQ(r->options.volumes[0].key_file, "/k");
  EXPECT_EQ(r->options.volumes[1].queues, 2u);
  EXPECT_EQ(r->options.metrics_path, "/m");
  EXPECT_EQ(r->options.log_level, "debug");
  // --volume replaces the file's volumes as a whole; --metrics overrides.
  auto o = parse({"--volume", "socket=/x,file=/y", "--config", path, "--metrics", "unix:/m2"});
  ASSERT_TRUE(o) << o.error().message();
  ASSERT_EQ(o->options.volumes.size(), 1u);
  EXPECT_EQ(o->options.volumes[0].socket, "/x");
  EXPECT_EQ(o->options.metrics_path, "/m2");
  std::remove(path.c_str());
}

TEST(Options, JsonErrorsNameThePlace) {
  CardOptions o;
  auto e = [&](const std::string& text) {
    auto r = apply_json(text, "cfg.json", &o);
    return r ? std::string("<no error>") : r.error().message();
  };
  EXPECT_NE(e("{").find("cfg.json: not valid JSON"), std::string::npos);
  EXPECT_NE(e("[]").find("top level must be an object"), std::string::npos);
  EXPECT_NE(e(R"({"volume": []})").find("unknown key \"volume\""), std::string::npos);
  EXPECT_NE(e(R"({"volumes": [{"socket": "/s", "file": "/a", "iops": -5}]})").find("volumes[0]: \"iops\""),
            std::string::npos);
  EXPECT_NE(e(R"({"volumes": [{"socket": "/s", "file": "/a", "queues": 99}]})").find("volumes[0]: queues=99"),
            std::string::npos);
  EXPECT_NE(e(R"({"volumes": [{"socket": "/s"}]})").find("volumes[0]: needs file=PATH"), std::string::npos);
  EXPECT_NE(e(R"({"volumes": [7]})").find("volumes[0]: must be an object"), std::string::npos);
  EXPECT_NE(e(R"({"metrics": "unix:"})").find("cfg.json: metrics unix:"), std::string::npos);
}

}  // namespace
}  // namespace azote::card_blk
