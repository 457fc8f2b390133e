// IMDSv2 served by the VPC card: azote-card-net from a config file (three ENIs, two with
// instance metadata), namespace instances attached by azote-tap-bridge, and curl inside
// them asking http://169.254.169.254/ as an EC2 instance does. Shows the values each ENI
// gets, tokens bound to their ENI, IMDSv1 refused when tokens are required and answered
// when optional, token expiry, replies with IP TTL 1 (an AF_PACKET capture on the
// instance's TAP), no answer without metadata (and the drop counted), set-eni-metadata
// changing user data under a still-valid token, and the card without the service.
//
// Needs root, network namespaces, /dev/net/tun, `ip` and curl: otherwise SKIPPED with the
// reason. Every address used is inside the VPC model below or the metadata address, on
// interfaces these tests create, in namespaces they create.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "base/unique_fd.hpp"
#include "control/control.hpp"
#include "netns.hpp"
#include "process.hpp"

namespace azote::test {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr char kTap[] = "tap0";
constexpr char kImds[] = "http://169.254.169.254";
constexpr char kGatewayMac[] = "02:a2:0a:00:01:00";  // the card's: 02:a2 + subnet 10.0.1.0

std::string show(const Outcome& o) {
  return "status " + std::to_string(o.status) + (o.timed_out ? " (timed out)" : "") + "\nstdout:\n" + o.out +
         "stderr:\n" + o.err;
}

std::string base64(const std::string& in) {
  static const char* t = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    const uint32_t v = static_cast<uint8_t>(in[i]) << 16 | static_cast<uint8_t>(in[i + 1]) << 8 | static_cast<uint8_t>(in[i + 2]);
    for (int s = 18; s >= 0; s -= 6) out += t[(v >> s) & 63];
  }
  if (i + 1 == in.size()) {
    const uint32_t v = static_cast<uint8_t>(in[i]) << 16;
    out += std::string{t[v >> 18], t[(v >> 12) & 63], '=', '='};
  } else if (i + 2 == in.size()) {
    const uint32_t v = static_cast<uint8_t>(in[i]) << 16 | static_cast<uint8_t>(in[i + 1]) << 8;
    out += std::string{t[v >> 18], t[(v >> 12) & 63], t[(v >> 6) & 63], '='};
  }
  return out;
}

// What one curl got: the HTTP status (0: no answer) and the body.
struct Http {
  int status = 0;
  std::string body;
  Outcome run;
};

// Waits for `p` to exit at most `extra` from now (Process::wait counts from its start).
Outcome wait_from_now(Process& p, Clock::time_point started, std::chrono::milliseconds extra) {
  return p.wait(std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started) + extra);
}

// An AF_PACKET socket on `ifname` inside namespace `ns` (opened from a thread that joins
// the namespace; the socket stays bound there).
UniqueFd capture_socket(const std::string& ns, const std::string& ifname, std::string* err) {
  UniqueFd out;
  std::thread t([&] {
    UniqueFd nsfd(::open(("/var/run/netns/" + ns).c_str(), O_RDONLY | O_CLOEXEC));
    if (!nsfd || ::setns(nsfd.get(), CLONE_NEWNET) != 0) {
      *err = "setns " + ns + ": " + std::strerror(errno);
      return;
    }
    UniqueFd s(::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, htons(ETH_P_ALL)));
    if (!s) {
      *err = std::string("AF_PACKET socket: ") + std::strerror(errno);
      return;
    }
    sockaddr_ll sll{};
    sll.sll_family = AF_PACKET;
    sll.sll_protocol = htons(ETH_P_ALL);
    sll.sll_ifindex = static_cast<int>(::if_nametoindex(ifname.c_str()));
    if (sll.sll_ifindex == 0 || ::bind(s.get(), reinterpret_cast<const sockaddr*>(&sll), sizeof sll) != 0) {  // NOLINT
      *err = "bind AF_PACKET to " + ifname + ": " + std::strerror(errno);
      return;
    }
    out = std::move(s);
  });
  t.join();
  return out;
}

// What the instance received from 169.254.169.254 (the capture sees both directions).
struct FromImds {
  size_t packets = 0, ttl_not_1 = 0, wrong_macs = 0;
  std::string first_bad;
};

FromImds drain(int fd, const std::string& eni_mac) {
  FromImds r;
  std::vector<uint8_t> b(2048);
  char mac[18];
  for (;;) {
    const ssize_t n = ::recv(fd, b.data(), b.size(), 0);
    if (n <= 0) break;
    if (n < 14 + 20 || b[12] != 0x08 || b[13] != 0x00) continue;
    const uint8_t* ip = b.data() + 14;
    if (!(ip[12] == 169 && ip[13] == 254 && ip[14] == 169 && ip[15] == 254)) continue;
    ++r.packets;
    if (ip[8] != 1) {
      ++r.ttl_not_1;
      if (r.first_bad.empty()) r.first_bad = "TTL " + std::to_string(ip[8]);
    }
    auto fmt = [&](const uint8_t* m) {
      std::snprintf(mac, sizeof mac, "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]);
      return std::string(mac);
    };
    if (fmt(b.data()) != eni_mac || fmt(b.data() + 6) != kGatewayMac) {
      ++r.wrong_macs;
      if (r.first_bad.empty()) r.first_bad = "dst " + fmt(b.data()) + " src " + fmt(b.data() + 6);
    }
  }
  return r;
}

// The whole Prometheus text of the card's --metrics socket.
std::string scrape(const std::string& path) {
  UniqueFd s(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
  if (!s || ::connect(s.get(), reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0) return {};  // NOLINT
  std::string text;
  char buf[4096];
  for (;;) {
    pollfd p{s.get(), POLLIN, 0};
    if (::poll(&p, 1, 3000) <= 0) break;
    const ssize_t n = ::recv(s.get(), buf, sizeof buf, 0);
    if (n <= 0) break;
    text.append(buf, static_cast<size_t>(n));
  }
  return text;
}

struct Instance {
  std::unique_ptr<Netns> ns;        // destroyed last: the bridge leaves it first
  std::unique_ptr<Process> bridge;  // `ip netns exec NS azote-tap-bridge ...`
  Clock::time_point started;
  std::string mac;
};

class CardNetImds : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (!netns_usable(&why)) GTEST_SKIP() << "SKIPPED: needs network namespaces: " << why;
    if (::access("/dev/net/tun", R_OK | W_OK) != 0) GTEST_SKIP() << "SKIPPED: needs /dev/net/tun";
    auto curl = find_tool("curl");
    if (!curl) GTEST_SKIP() << "SKIPPED: needs curl";
    curl_ = *curl;
    ip_ = find_tool("ip").value_or("ip");
    dir_ = ::testing::TempDir() + "azote-card-net-imds-" + std::to_string(::getpid()) + "-" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(dir_);
    ASSERT_TRUE(std::filesystem::create_directories(dir_)) << dir_;
  }
  void TearDown() override {
    for (auto* i : {&a_, &b_, &c_}) {
      if (i->bridge) {
        i->bridge->signal(SIGTERM);
        wait_from_now(*i->bridge, i->started, 5s);
      }
      i->bridge.reset();
      i->ns.reset();
    }
    if (card_) {
      card_->signal(SIGTERM);
      const Outcome o = wait_from_now(*card_, card_started_, 10s);
      EXPECT_EQ(o.status, 0) << "the card did not stop cleanly: " << show(o);
    }
    card_.reset();
    if (!dir_.empty() && !HasFailure()) std::filesystem::remove_all(dir_);
  }

  std::string path(const std::string& n) const { return dir_ + "/" + n; }

  static std::string eni(const std::string& dir, const char* id, const char* mac, const char* ip,
                         const std::string& metadata) {
    return std::string("{\"id\": \"") + id + "\", \"socket\": \"" + dir + "/" + id + ".sock\", \"mac\": \"" + mac +
           "\", \"ip\": \"" + ip + "\", \"vpc\": \"vpc-1\", \"subnet\": \"10.0.1.0/24\", \"security_groups\": [\"sg-app\"]" +
           (metadata.empty() ? "" : ", \"metadata\": " + metadata) + "}";
  }

  // The card: eni-a (tokens required), eni-b (tokens optional, the default), eni-c (no
  // metadata). sg-app lets nothing in and everything out (EC2's defaults): IMDS does not
  // care.
  void start_card(const std::vector<std::string>& extra = {}) {
    const std::string md_a = R"({"instance_id": "i-0aaaaaaaaaaaaaaa1", "instance_type": "t3.micro",
        "ami_id": "ami-0123456789abcdef0", "availability_zone": "eu-azote-1a", "http_tokens": "required",
        "user_data_b64": ")" + base64("#!/bin/sh\necho instance-a\n") + "\"}";
    const std::string md_b = R"({"instance_id": "i-0bbbbbbbbbbbbbbb2", "instance_type": "m5.large",
        "user_data_b64": ")" + base64("instance-b") + "\"}";
    std::ofstream(path("vpc.json")) << R"({"region": "eu-azote-1", "account": "111122223333",
      "vpcs": [{"id": "vpc-1", "cidr": "10.0.0.0/16"}],
      "security_groups": [{"id": "sg-app"}],
      "enis": [)" + eni(dir_, "eni-a", "02:00:00:00:00:0a", "10.0.1.5", md_a) +
                                           ", " + eni(dir_, "eni-b", "02:00:00:00:00:0b", "10.0.1.6", md_b) + ", " +
                                           eni(dir_, "eni-c", "02:00:00:00:00:0c", "10.0.1.7", "") + "]}";
    std::vector<std::string> argv = {AZOTE_CARD_NET_BIN, "--config", path("vpc.json"), "--control", path("control.sock"),
                                     "--metrics", "unix:" + path("metrics.sock")};
    argv.insert(argv.end(), extra.begin(), extra.end());
    card_ = std::make_unique<Process>(argv);
    card_started_ = Clock::now();
    for (int i = 0; i < 500; ++i) {
      bool all = file_exists(path("control.sock"));
      for (const char* e : {"eni-a", "eni-b", "eni-c"}) all = all && file_exists(path(std::string(e) + ".sock"));
      if (all) return;
      std::this_thread::sleep_for(20ms);
    }
    FAIL() << "the card did not create its sockets: " << show(card_->wait(1s));
  }

  // A namespace with the bridge on `eni_id`'s socket, the ENI's address and a default
  // route through the gateway, as the DHCP lease would set them.
  void start_instance(Instance& in, const std::string& eni_id, const std::string& ip, const std::string& mac) {
    in.ns = std::make_unique<Netns>("azi-" + eni_id);
    ASSERT_TRUE(in.ns->ok()) << in.ns->error();
    in.mac = mac;
    in.bridge = std::make_unique<Process>(
        in.ns->wrap({AZOTE_TAP_BRIDGE_BIN, "--socket", path(eni_id + ".sock"), "--tap", kTap}));
    in.started = Clock::now();
    if (!in.bridge->wait_for_output(std::string("azote-tap-bridge: ") + kTap + " up", 15s))
      FAIL() << "the bridge for " << eni_id << " did not come up: " << show(wait_from_now(*in.bridge, in.started, 2s));
    for (const std::vector<std::string>& cmd : {std::vector<std::string>{ip_, "addr", "add", ip + "/24", "dev", kTap},
                                                std::vector<std::string>{ip_, "route", "add", "default", "via", "10.0.1.1"}}) {
      const Outcome o = exec_in(*in.ns, cmd, 10s);
      ASSERT_EQ(o.status, 0) << show(o);
    }
  }

  // curl in the instance; `headers` as "Name: value".
  Http curl(const Instance& in, const std::string& method, const std::string& url_path,
            const std::vector<std::string>& headers = {}, int max_time = 5) {
    std::vector<std::string> argv = {curl_, "-s", "-X", method, "--connect-timeout", std::to_string(max_time),
                                     "--max-time", std::to_string(max_time), "-w", "\n%{http_code}"};
    for (const auto& h : headers) argv.insert(argv.end(), {"-H", h});
    argv.push_back(std::string(kImds) + url_path);
    Http h;
    h.run = exec_in(*in.ns, argv, std::chrono::seconds(max_time + 10));
    const auto nl = h.run.out.rfind('\n');
    if (nl != std::string::npos) {
      h.body = h.run.out.substr(0, nl);
      h.status = std::atoi(h.run.out.c_str() + nl + 1);
    }
    return h;
  }

  std::string token(const Instance& in, int ttl) {
    const Http t = curl(in, "PUT", "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds: " + std::to_string(ttl)});
    EXPECT_EQ(t.status, 200) << show(t.run);
    return t.body;
  }

  Result<control::Json, control::ControlError> call(const control::Json& j) {
    return control::call_once(path("control.sock"), j, 5s);
  }
  control::Json eni_info(const std::string& id) {
    auto r = call({{"op", "list-enis"}});
    if (!r) return {};
    for (const auto& e : (*r)["enis"])
      if (e["id"] == id) return e;
    return {};
  }

  std::string curl_, ip_, dir_;
  std::unique_ptr<Process> card_;
  Clock::time_point card_started_;
  Instance a_, b_, c_;
};

TEST_F(CardNetImds, EachEniGetsItsOwnMetadataBehindItsOwnTokens) {
  ASSERT_NO_FATAL_FAILURE(start_card());
  auto d = call({{"op", "describe-imds"}});
  ASSERT_TRUE(d) << d.error().message();
  ASSERT_EQ((*d)["imds"]["state"], "running") << d->dump();
  EXPECT_EQ((*d)["imds"]["slots"], 2) << d->dump();
  ASSERT_NO_FATAL_FAILURE(start_instance(a_, "eni-a", "10.0.1.5", "02:00:00:00:00:0a"));
  ASSERT_NO_FATAL_FAILURE(start_instance(b_, "eni-b", "10.0.1.6", "02:00:00:00:00:0b"));
  ASSERT_NO_FATAL_FAILURE(start_instance(c_, "eni-c", "10.0.1.7", "02:00:00:00:00:0c"));

  // Everything arriving on A's TAP from 169.254.169.254, from here on.
  std::string err;
  UniqueFd cap = capture_socket(a_.ns->name(), kTap, &err);
  ASSERT_TRUE(cap) << err;

  // A: a session token, then its own values with it.
  const std::string ta = token(a_, 60);
  ASSERT_FALSE(ta.empty());
  const std::string auth_a = "X-aws-ec2-metadata-token: " + ta;
  const std::pair<const char*, const char*> want_a[] = {
      {"/latest/meta-data/instance-id", "i-0aaaaaaaaaaaaaaa1"},
      {"/latest/meta-data/local-ipv4", "10.0.1.5"},
      {"/latest/meta-data/mac", "02:00:00:00:00:0a"},
      {"/latest/meta-data/instance-type", "t3.micro"},
      {"/latest/meta-data/placement/region", "eu-azote-1"},
      {"/latest/meta-data/security-groups", "sg-app"},
      {"/latest/meta-data/local-hostname", "ip-10-0-1-5.eu-azote-1.compute.internal"},
      {"/latest/user-data", "#!/bin/sh\necho instance-a\n"},
  };
  for (const auto& [p, v] : want_a) {
    const Http h = curl(a_, "GET", p, {auth_a});
    EXPECT_EQ(h.status, 200) << p << ": " << show(h.run);
    EXPECT_EQ(h.body, v) << p;
  }
  // A requires tokens: IMDSv1 is refused.
  EXPECT_EQ(curl(a_, "GET", "/latest/meta-data/instance-id").status, 401);

  // B: tokens optional (absent from its metadata): IMDSv1 answered, with B's values.
  const Http v1 = curl(b_, "GET", "/latest/meta-data/instance-id");
  EXPECT_EQ(v1.status, 200) << show(v1.run);
  EXPECT_EQ(v1.body, "i-0bbbbbbbbbbbbbbb2");
  const std::string tb = token(b_, 60);
  const Http lb = curl(b_, "GET", "/latest/meta-data/local-ipv4", {"X-aws-ec2-metadata-token: " + tb});
  EXPECT_EQ(lb.status, 200) << show(lb.run);
  EXPECT_EQ(lb.body, "10.0.1.6");
  // B with A's token: 401, even though B needs no token at all (a token sent is checked).
  const Http stolen = curl(b_, "GET", "/latest/meta-data/instance-id", {auth_a});
  EXPECT_EQ(stolen.status, 401) << show(stolen.run);
  EXPECT_EQ(curl(a_, "GET", "/latest/meta-data/instance-id", {"X-aws-ec2-metadata-token: " + tb}).status, 401);

  // A token of 1 s is dead 2 s later.
  const std::string short_lived = token(a_, 1);
  EXPECT_EQ(curl(a_, "GET", "/latest/meta-data/instance-id", {"X-aws-ec2-metadata-token: " + short_lived}).status, 200);
  std::this_thread::sleep_for(2100ms);
  EXPECT_EQ(curl(a_, "GET", "/latest/meta-data/instance-id", {"X-aws-ec2-metadata-token: " + short_lived}).status, 401);

  // Every packet A received from the service: TTL 1, from A's gateway to A.
  const FromImds seen = drain(cap.get(), a_.mac);
  EXPECT_GT(seen.packets, 20u);
  EXPECT_EQ(seen.ttl_not_1, 0u) << seen.first_bad;
  EXPECT_EQ(seen.wrong_macs, 0u) << seen.first_bad;

  // C has no metadata: no slot, no answer, the drops counted at its ENI.
  const Http none = curl(c_, "GET", "/latest/meta-data/instance-id", {}, 2);
  EXPECT_EQ(none.status, 0) << show(none.run);
  EXPECT_NE(none.run.status, 0);
  const auto ec = eni_info("eni-c");
  EXPECT_GE(ec["imds"]["drops"]["no_metadata"].get<uint64_t>(), 1u) << ec.dump();
  EXPECT_GE(ec["drops"]["imds_no_metadata"].get<uint64_t>(), 1u) << ec.dump();
  EXPECT_TRUE(ec["imds"]["slot"].is_null()) << ec.dump();
  EXPECT_EQ(ec["imds"]["packets_out"], 0) << ec.dump();

  // The counters: per ENI, and the service's.
  const auto ea = eni_info("eni-a");
  EXPECT_TRUE(ea["imds"]["slot"].is_number()) << ea.dump();
  EXPECT_GT(ea["imds"]["packets_in"].get<uint64_t>(), 20u) << ea.dump();
  EXPECT_GT(ea["imds"]["packets_out"].get<uint64_t>(), 20u) << ea.dump();
  EXPECT_EQ(ea["imds"]["http_tokens"], "required") << ea.dump();
  d = call({{"op", "describe-imds"}});
  ASSERT_TRUE(d) << d.error().message();
  const auto& im = (*d)["imds"];
  EXPECT_GE(im["responses"]["200"].get<uint64_t>(), 13u) << im.dump();
  EXPECT_GE(im["responses"]["401"].get<uint64_t>(), 4u) << im.dump();
  EXPECT_EQ(im["tokens_issued"], 3) << im.dump();
  EXPECT_GE(im["refusals"]["no_token"].get<uint64_t>(), 1u) << im.dump();
  EXPECT_GE(im["refusals"]["other_slot_token"].get<uint64_t>(), 2u) << im.dump();
  EXPECT_GE(im["refusals"]["expired_token"].get<uint64_t>(), 1u) << im.dump();
  EXPECT_EQ(im["ttl_rewritten"], 0) << im.dump();
  const std::string metrics = scrape(path("metrics.sock"));
  EXPECT_NE(metrics.find("azote_imds_up 1\n"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("azote_imds_tokens_issued_total 3\n"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("azote_net_imds_packets_total{eni=\"eni-a\""), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("reason=\"imds_no_metadata\"} 0\n"), std::string::npos) << metrics;  // eni-a, eni-b
}

TEST_F(CardNetImds, SetEniMetadataChangesUserDataAndKeepsTokens) {
  ASSERT_NO_FATAL_FAILURE(start_card());
  ASSERT_NO_FATAL_FAILURE(start_instance(a_, "eni-a", "10.0.1.5", "02:00:00:00:00:0a"));
  ASSERT_NO_FATAL_FAILURE(start_instance(c_, "eni-c", "10.0.1.7", "02:00:00:00:00:0c"));
  const std::string ta = token(a_, 300);
  const std::string auth = "X-aws-ec2-metadata-token: " + ta;
  EXPECT_EQ(curl(a_, "GET", "/latest/user-data", {auth}).body, "#!/bin/sh\necho instance-a\n");

  // New user data (and tokens now optional); the token issued before still works.
  auto r = call({{"op", "set-eni-metadata"}, {"id", "eni-a"},
                 {"metadata", {{"instance_id", "i-0aaaaaaaaaaaaaaa1"}, {"user_data_b64", base64("second boot\n")},
                               {"http_tokens", "optional"}}}});
  ASSERT_TRUE(r) << r.error().message();
  ASSERT_EQ((*r)["ok"], true) << r->dump();
  EXPECT_EQ((*r)["served"], true) << r->dump();
  const Http ud = curl(a_, "GET", "/latest/user-data", {auth});
  EXPECT_EQ(ud.status, 200) << show(ud.run);
  EXPECT_EQ(ud.body, "second boot\n");
  EXPECT_EQ(curl(a_, "GET", "/latest/meta-data/instance-id").status, 200);  // IMDSv1 now allowed
  // Checked like add-eni's; refused without changing anything.
  r = call({{"op", "set-eni-metadata"}, {"id", "eni-a"}, {"metadata", {{"user_data_b64", "not base64!"}}}});
  ASSERT_FALSE(r) << r->dump();
  EXPECT_NE(r.error().message().find("user_data_b64"), std::string::npos) << r.error().message();
  r = call({{"op", "set-eni-metadata"}, {"id", "eni-nope"}, {"metadata", control::Json::object()}});
  ASSERT_FALSE(r) << r->dump();
  EXPECT_NE(r.error().message().find("no ENI eni-nope"), std::string::npos) << r.error().message();
  EXPECT_EQ(curl(a_, "GET", "/latest/user-data", {auth}).body, "second boot\n");

  // C gets metadata: served from now on.
  EXPECT_EQ(curl(c_, "GET", "/latest/meta-data/instance-id", {}, 2).status, 0);
  r = call({{"op", "set-eni-metadata"}, {"id", "eni-c"}, {"metadata", {{"instance_id", "i-0ccccccccccccccc3"}}}});
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ((*r)["served"], true) << r->dump();
  const Http c = curl(c_, "GET", "/latest/meta-data/instance-id");
  EXPECT_EQ(c.status, 200) << show(c.run);
  EXPECT_EQ(c.body, "i-0ccccccccccccccc3");

  // A's metadata removed: its slot and tokens go, nothing answers.
  r = call({{"op", "set-eni-metadata"}, {"id", "eni-a"}, {"metadata", nullptr}});
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ((*r)["served"], false) << r->dump();
  EXPECT_EQ(curl(a_, "GET", "/latest/user-data", {auth}, 2).status, 0);
  EXPECT_GE(eni_info("eni-a")["imds"]["drops"]["no_metadata"].get<uint64_t>(), 1u);
}

TEST_F(CardNetImds, WithoutTheServiceNothingAnswersAndDropsAreCounted) {
  ASSERT_NO_FATAL_FAILURE(start_card({"--imds", "off"}));
  auto d = call({{"op", "describe-imds"}});
  ASSERT_TRUE(d) << d.error().message();
  EXPECT_EQ((*d)["imds"]["state"], "off") << d->dump();
  ASSERT_NO_FATAL_FAILURE(start_instance(a_, "eni-a", "10.0.1.5", "02:00:00:00:00:0a"));
  const Http h = curl(a_, "PUT", "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds: 60"}, 2);
  EXPECT_EQ(h.status, 0) << show(h.run);
  const auto ea = eni_info("eni-a");
  EXPECT_GE(ea["imds"]["drops"]["unavailable"].get<uint64_t>(), 1u) << ea.dump();
  EXPECT_TRUE(ea["imds"]["metadata"].get<bool>()) << ea.dump();
  EXPECT_TRUE(ea["imds"]["slot"].is_null()) << ea.dump();
  EXPECT_NE(scrape(path("metrics.sock")).find("azote_imds_up 0\n"), std::string::npos);
}

}  // namespace
}  // namespace azote::test
