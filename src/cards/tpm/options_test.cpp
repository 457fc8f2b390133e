#include "cards/tpm/options.hpp"

#include <gtest/gtest.h>

namespace azote::card_tpm {
namespace {

std::string error_of(std::vector<std::string> a) {
  auto r = parse_args(a);
  return r ? std::string("<no error>") : r.error().message();
}

TEST(Options, ControlAndMetrics) {
  auto r = parse_args({"--control", "fd:3", "--metrics", "fd:4", "--seccomp", "log"});
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->options.control_path, "fd:3");
  EXPECT_EQ(r->options.metrics_path, "fd:4");
  EXPECT_EQ(r->options.seccomp, "log");
  auto p = parse_args({"--control=/run/t.ctl", "--metrics", "unix:/run/t.metrics"});
  ASSERT_TRUE(p) << p.error().message();
  EXPECT_EQ(p->options.control_path, "/run/t.ctl");
  EXPECT_EQ(p->options.metrics_path, "/run/t.metrics");
}

TEST(Options, Rot) {
  auto r = parse_args({"--control", "/run/t.ctl", "--rot", "fd:7"});
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->options.rot_fd, 7);
  auto none = parse_args({"--control", "/run/t.ctl"});
  ASSERT_TRUE(none);
  EXPECT_EQ(none->options.rot_fd, -1);
  EXPECT_NE(error_of({"--control", "/a", "--rot", "/run/rot.sock"}).find("--rot"), std::string::npos);
  EXPECT_NE(error_of({"--control", "/a", "--rot", "fd:2"}).find("fd:N"), std::string::npos);
  EXPECT_NE(error_of({"--control", "fd:3", "--rot", "fd:3"}).find("also"), std::string::npos);
}

TEST(Options, HelpAndVersion) {
  auto h = parse_args({"--help"});
  ASSERT_TRUE(h);
  EXPECT_TRUE(h->help);
  auto v = parse_args({"--version"});
  ASSERT_TRUE(v);
  EXPECT_TRUE(v->version);
}

TEST(Options, Errors) {
  EXPECT_NE(error_of({}).find("--control"), std::string::npos);
  EXPECT_NE(error_of({"--control", "fd:1"}).find("fd:N"), std::string::npos);
  EXPECT_NE(error_of({"--control", "/a", "--seccomp", "off"}).find("kill or log"), std::string::npos);
  EXPECT_NE(error_of({"--control", "/a", "--bogus"}).find("unknown option"), std::string::npos);
  EXPECT_NE(error_of({"--control", "/a", "--control", "/b"}).find("twice"), std::string::npos);
  EXPECT_NE(error_of({"--control", "/a", "--metrics", "/a"}).find("also"), std::string::npos);
  EXPECT_NE(error_of({"--control", std::string(200, 'x')}).find("107"), std::string::npos);
}

nlohmann::json open_request() {
  return {{"op", "open"},
          {"instance", "i-0abc"},
          {"state", "fd:5"},
          {"key", std::string(64, 'f')},
          {"socket", "/run/tpm.sock"}};
}

TEST(OpenRequest, Parses) {
  std::optional<StateKey> key;
  auto r = parse_open(open_request(), &key);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->instance, "i-0abc");
  EXPECT_EQ(r->state_fd, 5);
  EXPECT_EQ(r->state_name, "state fd:5");
  EXPECT_EQ(r->socket, "/run/tpm.sock");
  ASSERT_TRUE(key.has_value());
  EXPECT_EQ(key->bytes()[0], 0xff);
}

TEST(OpenRequest, Refusals) {
  auto refused = [](const char* field, nlohmann::json value, const char* needle) {
    auto j = open_request();
    if (value.is_null()) {
      j.erase(field);
    } else {
      j[field] = value;
    }
    std::optional<StateKey> key;
    auto r = parse_open(j, &key);
    ASSERT_FALSE(r) << field;
    EXPECT_NE(r.error().message().find(needle), std::string::npos) << r.error().message();
    EXPECT_FALSE(key.has_value());
  };
  refused("instance", "vol-1", "instance id");
  refused("instance", "i-XYZ", "instance id");
  refused("instance", nullptr, "\"instance\"");
  refused("state", "/var/lib/tpm.state", "fd:N");
  refused("state", "fd:2", "fd:N");
  refused("key", std::string(63, 'a'), "64 hex digits");
  refused("key", std::string(64, 'g'), "64 hex digits");
  refused("socket", std::string(120, 's'), "107");
  refused("extra", 1, "unknown field");
}

}  // namespace
}  // namespace azote::card_tpm
