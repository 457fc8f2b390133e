// azote-card-net's per-ENI rate limits with real TCP and UDP stacks: two network
// namespaces as instances, each TAP attached to one ENI of one card by azote-tap-bridge,
// iperf3 between them. The checks are of the limiter's correctness, not of speed: a
// measured rate stays under the limit (with 10 % margin plus the burst) and above half of
// it (a rate limit, not a stall), the transmit limit (frames left in the guest's ring) and
// the receive limit (frames held in the inbox) each hold, a packets-per-second limit holds
// for small UDP datagrams, and set-eni-limits raising a limit raises the rate.
//
// Every address used is inside the VPC model below (10.0.0.0/16) on TAP interfaces these
// tests create, in namespaces they create.
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

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
using Json = control::Json;

constexpr char kTap[] = "tap0";
constexpr double kMbit = 1e6;
constexpr double kBurstSeconds = 10e-3;  // the card's burst: 10 ms worth of the rate

std::string show(const Outcome& o) {
  return "status " + std::to_string(o.status) + (o.timed_out ? " (timed out)" : "") + "\nstdout:\n" + o.out +
         "stderr:\n" + o.err;
}

std::string scrape(const std::string& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::memcpy(a.sun_path, path.data(), std::min(path.size(), sizeof a.sun_path - 1));
  std::string out;
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0) return out;  // NOLINT
  char buf[16384];
  for (;;) {
    pollfd p{fd.get(), POLLIN, 0};
    if (::poll(&p, 1, 3000) <= 0) break;
    const ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

// The value of the sample `name{labels}` as a double; -1 when absent.
double metric(const std::string& text, const std::string& sample) {
  const size_t p = text.find("\n" + sample + " ");
  if (p == std::string::npos) return -1;
  return std::stod(text.substr(p + sample.size() + 2));
}

struct Instance {
  std::unique_ptr<Netns> ns;        // destroyed last: the bridge leaves it first
  std::unique_ptr<Process> bridge;  // `ip netns exec NS azote-tap-bridge ...`
};

// What one iperf3 run measured, and what the card delivered to B's guest meanwhile.
struct Measured {
  double card_bps = 0, card_pps = 0;  // eni-b's rx bytes (Ethernet) and frames, from 1 s to 3 s
  double bps = 0;                   // TCP: receiver's bits per second; UDP: sender's offered
  double min_interval_bps = 0;      // TCP: the slowest 1 s interval (sender side)
  uint64_t retransmits = 0;
  double pps = 0;                   // UDP: datagrams received per second
  uint64_t sent_packets = 0, lost_packets = 0;
  double seconds = 0;
};

class CardNetLimits : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (!netns_usable(&why)) GTEST_SKIP() << "SKIPPED: needs network namespaces: " << why;
    if (::access("/dev/net/tun", R_OK | W_OK) != 0) GTEST_SKIP() << "SKIPPED: needs /dev/net/tun for TAP devices";
    auto iperf = find_tool("iperf3");
    auto ip = find_tool("ip");
    if (!iperf || !ip) GTEST_SKIP() << "SKIPPED: needs iperf3 and ip (iproute2)";
    iperf_ = *iperf;
    ip_ = *ip;
    dir_ = ::testing::TempDir() + "azote-card-net-limits-" + std::to_string(::getpid()) + "-" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(dir_);
    ASSERT_TRUE(std::filesystem::create_directories(dir_)) << dir_;
    ASSERT_NO_FATAL_FAILURE(start_card());
    ASSERT_NO_FATAL_FAILURE(start_instance(a_, "eni-a", "10.0.1.5"));
    ASSERT_NO_FATAL_FAILURE(start_instance(b_, "eni-b", "10.0.1.6"));
    server_ = std::make_unique<Process>(b_.ns->wrap({iperf_, "-s", "-B", "10.0.1.6", "--forceflush"}));
    ASSERT_TRUE(server_->wait_for_output("Server listening", 10s)) << show(server_->wait(1s));
  }
  void TearDown() override {
    if (server_) server_->signal(SIGTERM);
    server_.reset();
    for (auto* i : {&a_, &b_}) {
      if (i->bridge) i->bridge->signal(SIGTERM);
      if (i->bridge) i->bridge->wait(5s);
      i->bridge.reset();
      i->ns.reset();
    }
    card_.reset();
    if (!dir_.empty() && !HasFailure()) std::filesystem::remove_all(dir_);
  }

  std::string path(const std::string& n) const { return dir_ + "/" + n; }

  // eni-a starts with a 50 Mbit/s limit from the config; eni-b without one.
  void start_card() {
    auto eni = [&](const char* id, const char* mac, const char* ip, const char* extra) {
      return std::string("{\"id\": \"") + id + "\", \"socket\": \"" + path(std::string(id) + ".sock") +
             "\", \"mac\": \"" + mac + "\", \"ip\": \"" + ip +
             "\", \"vpc\": \"vpc-1\", \"subnet\": \"10.0.1.0/24\", \"security_groups\": [\"sg-app\"]" + extra + "}";
    };
    std::ofstream(path("vpc.json")) << R"({"vpcs": [{"id": "vpc-1", "cidr": "10.0.0.0/16"}],
      "security_groups": [{"id": "sg-app", "ingress": [{"protocol": "-1", "cidr": "10.0.0.0/16"}]}],
      "enis": [)" + eni("eni-a", "02:00:00:00:00:0a", "10.0.1.5", R"(, "limits": {"bandwidth_mbps": 50})") +
                                           ", " + eni("eni-b", "02:00:00:00:00:0b", "10.0.1.6", "") + "]}";
    card_ = std::make_unique<Process>(std::vector<std::string>{AZOTE_CARD_NET_BIN, "--config", path("vpc.json"),
                                                               "--control", path("control.sock"), "--metrics",
                                                               "unix:" + path("metrics.sock")});
    for (int i = 0; i < 250; ++i) {
      bool all = file_exists(path("control.sock")) && file_exists(path("metrics.sock"));
      for (const char* e : {"eni-a", "eni-b"}) all = all && file_exists(path(std::string(e) + ".sock"));
      if (all) return;
      std::this_thread::sleep_for(20ms);
    }
    FAIL() << "the card did not create its sockets: " << show(card_->wait(1s));
  }

  // A namespace, the bridge on the ENI's socket, the ENI's address set statically (the
  // DHCP path is card_net_ns_test's).
  void start_instance(Instance& in, const std::string& eni_id, const std::string& ip) {
    in.ns = std::make_unique<Netns>("azl-" + eni_id);
    ASSERT_TRUE(in.ns->ok()) << in.ns->error();
    in.bridge = std::make_unique<Process>(
        in.ns->wrap({AZOTE_TAP_BRIDGE_BIN, "--socket", path(eni_id + ".sock"), "--tap", kTap}));
    if (!in.bridge->wait_for_output(std::string("azote-tap-bridge: ") + kTap + " up", 15s))
      FAIL() << "the bridge for " << eni_id << " did not come up: " << show(in.bridge->wait(2s));
    for (const std::vector<std::string>& argv :
         {std::vector<std::string>{ip_, "link", "set", "dev", kTap, "up"},
          std::vector<std::string>{ip_, "addr", "add", ip + "/24", "dev", kTap},
          std::vector<std::string>{ip_, "route", "add", "default", "via", "10.0.1.1", "dev", kTap}}) {
      const Outcome o = exec_in(*in.ns, argv, 10s);
      ASSERT_EQ(o.status, 0) << show(o);
    }
  }

  Result<Json, control::ControlError> call(const Json& j) { return control::call_once(path("control.sock"), j, 5s); }

  void set_limits(const std::string& eni, const Json& limits) {
    auto r = call({{"op", "set-eni-limits"}, {"id", eni}, {"limits", limits}});
    ASSERT_TRUE(r) << r.error().message();
    ASSERT_EQ((*r)["ok"], true) << r->dump();
  }

  Json eni_limits(const std::string& eni) {
    auto r = call({{"op", "list-enis"}});
    if (!r) return nullptr;
    for (const auto& e : (*r)["enis"])
      if (e["id"] == eni) return e["rate_limits"];
    return nullptr;
  }

  // iperf3 from A to B for `seconds`; `udp`: datagrams of `len` bytes at `rate` bit/s.
  Measured iperf(int seconds, bool udp = false, int len = 0, const std::string& rate = "") {
    std::vector<std::string> argv{iperf_, "-c", "10.0.1.6", "-t", std::to_string(seconds), "-J", "--connect-timeout",
                                  "5000"};
    if (udp) argv.insert(argv.end(), {"-u", "-l", std::to_string(len), "-b", rate});
    Process client(a_.ns->wrap(argv));
    // The card's own view of the steady state: eni-b's receive counters from 1 s to 3 s
    // (iperf3's totals also hold what was queued before the limiter when the run ends).
    Measured m;
    std::this_thread::sleep_for(1s);
    const auto t1 = std::chrono::steady_clock::now();
    const std::string s1 = scrape(path("metrics.sock"));
    std::this_thread::sleep_for(2s);
    const auto t2 = std::chrono::steady_clock::now();
    const std::string s2 = scrape(path("metrics.sock"));
    const double dt = std::chrono::duration<double>(t2 - t1).count();
    const std::string labels = "{eni=\"eni-b\",socket=\"" + path("eni-b.sock") + "\"}";
    m.card_bps =
        (metric(s2, "azote_net_rx_bytes_total" + labels) - metric(s1, "azote_net_rx_bytes_total" + labels)) * 8 / dt;
    m.card_pps =
        (metric(s2, "azote_net_rx_packets_total" + labels) - metric(s1, "azote_net_rx_packets_total" + labels)) / dt;
    const Outcome o = client.wait(std::chrono::seconds(seconds + 20));
    const Json j = Json::parse(o.out, nullptr, false);
    EXPECT_EQ(o.status, 0) << show(o);
    if (j.is_discarded() || !j.contains("end")) {
      ADD_FAILURE() << "iperf3 gave no report: " << show(o);
      return m;
    }
    const Json& end = j["end"];
    if (!udp) {
      m.bps = end["sum_received"]["bits_per_second"].get<double>();
      m.seconds = end["sum_received"]["seconds"].get<double>();
      m.retransmits = end["sum_sent"].value("retransmits", uint64_t{0});
      m.min_interval_bps = 1e18;
      for (const auto& i : j["intervals"]) {
        // The last interval may be a sliver: only whole ones count.
        if (i["sum"]["seconds"].get<double>() < 0.9) continue;
        m.min_interval_bps = std::min(m.min_interval_bps, i["sum"]["bits_per_second"].get<double>());
      }
    } else {
      const Json& s = end["sum"];
      m.sent_packets = s.value("packets", uint64_t{0});
      m.lost_packets = s.value("lost_packets", uint64_t{0});
      m.seconds = s["seconds"].get<double>();
      m.bps = s["bits_per_second"].get<double>();
      if (m.seconds > 0) m.pps = static_cast<double>(m.sent_packets - m.lost_packets) / m.seconds;
    }
    return m;
  }

  std::string iperf_, ip_, dir_;
  std::unique_ptr<Process> card_;
  Instance a_, b_;
  std::unique_ptr<Process> server_;
};

// The upper bound of a measured rate: 10 % over the limit, plus the burst spread over the
// run.
double upper(double limit_bps, double seconds) { return limit_bps * 1.1 + limit_bps * kBurstSeconds / seconds; }

// eni-a's transmit limit (from the config) holds TCP at the limit, without a stall; a
// higher limit set at run time gives a higher rate.
TEST_F(CardNetLimits, TransmitLimitHoldsTcpAndCanBeRaised) {
  const Json before = eni_limits("eni-a");
  ASSERT_EQ(before["limits"], (Json{{"bandwidth_mbps", 50}})) << before.dump();

  const Measured m50 = iperf(4);
  const double l50 = 50 * kMbit;
  std::cout << "[ measured ] 50 Mbit/s tx limit: " << m50.bps / kMbit << " Mbit/s, slowest second "
            << m50.min_interval_bps / kMbit << ", retransmits " << m50.retransmits << "; the card delivered "
            << m50.card_bps / kMbit << " Mbit/s of Ethernet frames\n";
  EXPECT_LE(m50.bps, upper(l50, m50.seconds));
  EXPECT_LE(m50.card_bps, upper(l50, 2));
  EXPECT_GE(m50.bps, 0.5 * l50);
  EXPECT_GE(m50.min_interval_bps, 0.25 * l50) << "a second with (almost) nothing: TCP stalled";
  const Json after = eni_limits("eni-a");
  EXPECT_GT(after["tx"]["delayed_frames"].get<uint64_t>(), 0u) << after.dump();
  EXPECT_GT(after["tx"]["throttled_seconds"].get<double>(), 0.5) << after.dump();
  EXPECT_EQ(after["rx"]["delayed_frames"], 0u) << after.dump();

  ASSERT_NO_FATAL_FAILURE(set_limits("eni-a", Json{{"bandwidth_mbps", 150}}));
  const Measured m150 = iperf(4);
  std::cout << "[ measured ] 150 Mbit/s tx limit: " << m150.bps / kMbit << " Mbit/s, retransmits "
            << m150.retransmits << "; the card delivered " << m150.card_bps / kMbit << " Mbit/s\n";
  EXPECT_LE(m150.bps, upper(150 * kMbit, m150.seconds));
  EXPECT_LE(m150.card_bps, upper(150 * kMbit, 2));
  EXPECT_GT(m150.bps, 1.3 * m50.bps) << "raising the limit did not raise the rate";

  // Refusals name the problem; an unknown ENI is refused.
  auto bad = call({{"op", "set-eni-limits"}, {"id", "eni-a"}, {"limits", Json{{"bandwidth_mbps", 0}}}});
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message().find("set-eni-limits: limits: \"bandwidth_mbps\" must be an integer from 1 to 400000"),
            std::string::npos)
      << bad.error().message();
  auto none = call({{"op", "set-eni-limits"}, {"id", "eni-zz"}, {"limits", nullptr}});
  ASSERT_FALSE(none);
  EXPECT_NE(none.error().message().find("no ENI eni-zz"), std::string::npos) << none.error().message();
  ASSERT_NO_FATAL_FAILURE(set_limits("eni-a", nullptr));
  EXPECT_EQ(eni_limits("eni-a")["limits"], nullptr);
}

// eni-b's receive limit (A sends unlimited): frames wait in B's inbox, TCP settles at the
// limit; the counters show it in list-enis and the metrics.
TEST_F(CardNetLimits, ReceiveLimitHoldsTcp) {
  ASSERT_NO_FATAL_FAILURE(set_limits("eni-a", nullptr));
  ASSERT_NO_FATAL_FAILURE(set_limits("eni-b", Json{{"bandwidth_mbps", 50}}));
  const Measured m = iperf(4);
  const double l = 50 * kMbit;
  std::cout << "[ measured ] 50 Mbit/s rx limit: " << m.bps / kMbit << " Mbit/s, slowest second "
            << m.min_interval_bps / kMbit << ", retransmits " << m.retransmits << "; the card delivered "
            << m.card_bps / kMbit << " Mbit/s\n";
  EXPECT_LE(m.bps, upper(l, m.seconds));
  EXPECT_LE(m.card_bps, upper(l, 2));
  EXPECT_GE(m.bps, 0.5 * l);
  EXPECT_GE(m.min_interval_bps, 0.25 * l) << "a second with (almost) nothing: TCP stalled";
  const Json b = eni_limits("eni-b");
  EXPECT_GT(b["rx"]["delayed_frames"].get<uint64_t>(), 0u) << b.dump();
  EXPECT_GT(b["rx"]["throttled_seconds"].get<double>(), 0.5) << b.dump();
  const std::string mt = scrape(path("metrics.sock"));
  const std::string labels = "{eni=\"eni-b\",socket=\"" + path("eni-b.sock") + "\"";
  EXPECT_GT(metric(mt, "azote_net_limit_delayed_frames_total" + labels + ",direction=\"rx\"}"), 0) << mt;
  EXPECT_GT(metric(mt, "azote_net_limit_throttled_seconds_total" + labels + ",direction=\"rx\"}"), 0.5) << mt;
  EXPECT_EQ(metric(mt, "azote_net_limit_bandwidth_mbps" + labels + "}"), 50) << mt;
}

// A packets-per-second limit holds for small UDP datagrams offered well above it.
TEST_F(CardNetLimits, PpsLimitHoldsSmallUdp) {
  ASSERT_NO_FATAL_FAILURE(set_limits("eni-a", Json{{"pps", 2000}}));
  // 64-byte payloads at 2.5 Mbit/s: about 4900 datagrams per second offered. (Datagrams
  // the limit holds back fill the TAP's queue and are dropped there, by the instance's
  // own kernel: "lost" in iperf3's report.)
  const Measured m = iperf(4, true, 64, "2.5M");
  std::cout << "[ measured ] 2000 pps limit: " << m.pps << " datagrams/s received of " << m.sent_packets << " sent ("
            << m.lost_packets << " lost) in " << m.seconds << " s; the card delivered " << m.card_pps
            << " frames/s\n";
  EXPECT_GT(m.sent_packets, 4 * 2000u * 3 / 2) << "iperf3 did not offer well over the limit";
  EXPECT_LE(m.pps, 2000 * 1.1 + 2000 * kBurstSeconds / m.seconds);
  EXPECT_LE(m.card_pps, 2000 * 1.1 + 2000 * kBurstSeconds / 2);
  EXPECT_GE(m.pps, 2000 * 0.5);
  EXPECT_GT(eni_limits("eni-a")["tx"]["delayed_frames"].get<uint64_t>(), 0u);
}

}  // namespace
}  // namespace azote::test
