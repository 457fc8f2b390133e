// azote-card-net with real Linux network stacks as instances: each instance is a
// network namespace whose TAP device azote-tap-bridge attaches to one ENI of the card.
// Real tools show the VPC at work: busybox udhcpc takes the ENI's lease, ping reaches the
// gateway and the other instances, dig asks the VPC's DNS, nc (netcat-openbsd) shows
// security groups deciding TCP connections and a rule change applying at once, and the
// built-in guest (azote-hv, net-echo) gets its lease and answers a namespace's ping.
//
// Every address used is inside the VPC model below (10.0.0.0/16) on interfaces these
// tests create, in namespaces they create.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <thread>

#include "control/control.hpp"
#include "netns.hpp"
#include "process.hpp"
#include "vhost_user/backend.hpp"
#include "vhost_user/device.hpp"
#include "virtio/shared_memory.hpp"
#include "virtio/spec.hpp"

namespace azote::test {
namespace {

using namespace std::chrono_literals;

constexpr char kRegion[] = "eu-azote-1";  // the config's region: DNS names and the DHCP domain
constexpr char kTap[] = "tap0";

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

// "key=value" lines into a map.
std::map<std::string, std::string> parse_env(const std::string& text) {
  std::map<std::string, std::string> out;
  for (const auto& l : lines(text)) {
    const auto eq = l.find('=');
    if (eq != std::string::npos) out[l.substr(0, eq)] = l.substr(eq + 1);
  }
  return out;
}

// Replies a ping run reported: "N packets transmitted, M received" (iputils) or
// "N packets transmitted, M packets received" (busybox); -1 if unparsable.
int ping_received(const Outcome& o) {
  std::smatch m;
  if (!std::regex_search(o.out, m, std::regex(R"(([0-9]+) packets transmitted, ([0-9]+) (packets )?received)")))
    return -1;
  return std::stoi(m[2]);
}

std::string show(const Outcome& o) {
  return "status " + std::to_string(o.status) + (o.timed_out ? " (timed out)" : "") + "\nstdout:\n" + o.out +
         "stderr:\n" + o.err;
}

struct Tools {
  std::string udhcpc, dig, nc, busybox;
  std::vector<std::string> ping;  // iputils ping, or busybox's
};

bool find_tools(Tools* t, std::string* why) {
  std::vector<std::string> missing;
  auto need = [&](const char* name, const char* package, std::string* out) {
    if (auto p = find_tool(name)) *out = *p;
    else missing.push_back(std::string(name) + " (" + package + ")");
  };
  need("udhcpc", "udhcpc", &t->udhcpc);
  need("dig", "bind9-dnsutils", &t->dig);
  need("nc", "netcat-openbsd", &t->nc);
  if (auto p = find_tool("ping")) t->ping = {*p};
  else if (auto bb = find_tool("busybox")) t->ping = {*bb, "ping"};
  else missing.push_back("ping (iputils-ping or busybox)");
  if (!missing.empty()) {
    *why = "missing tools:";
    for (const auto& m : missing) *why += " " + m;
    return false;
  }
  // netcat-traditional has neither -z with -w semantics nor -k: the SG test needs OpenBSD's.
  const Outcome h = run({t->nc, "-h"}, 10s);
  if ((h.out + h.err).find("OpenBSD") == std::string::npos) {
    *why = "nc is not netcat-openbsd";
    return false;
  }
  return true;
}

// One instance: a namespace, the bridge attaching its TAP to an ENI, the lease it took.
struct Instance {
  std::unique_ptr<Netns> ns;        // destroyed last: the bridge leaves it first
  std::unique_ptr<Process> bridge;  // `ip netns exec NS azote-tap-bridge ...`
  std::string ip;                   // the ENI's address, once leased
  std::map<std::string, std::string> lease;
};

class CardNetNs : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (!netns_usable(&why)) GTEST_SKIP() << "SKIPPED: needs network namespaces: " << why;
    if (::access("/dev/net/tun", R_OK | W_OK) != 0) GTEST_SKIP() << "SKIPPED: needs /dev/net/tun for TAP devices";
    if (!find_tools(&tools_, &why)) GTEST_SKIP() << "SKIPPED: " << why;
    dir_ = ::testing::TempDir() + "azote-card-net-ns-" + std::to_string(::getpid()) + "-" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(dir_);
    ASSERT_TRUE(std::filesystem::create_directories(dir_)) << dir_;
    ASSERT_NO_FATAL_FAILURE(start_card());
  }
  void TearDown() override {
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
  std::string eni(const char* id, const char* mac, const char* ip) const {
    return std::string("{\"id\": \"") + id + "\", \"socket\": \"" + path(std::string(id) + ".sock") +
           "\", \"mac\": \"" + mac + "\", \"ip\": \"" + ip +
           "\", \"vpc\": \"vpc-1\", \"subnet\": \"10.0.1.0/24\", \"security_groups\": [\"sg-app\"]}";
  }

  // One card, three ENIs of one VPC: two for namespaces, one for the built-in guest.
  // sg-app lets in ICMP, TCP 8080 and UDP 7 from the VPC; TCP 9090 is not allowed.
  void start_card() {
    std::ofstream(path("vpc.json")) << std::string("{\"region\": \"") + kRegion +
                                           R"(", "account": "111122223333",
      "vpcs": [{"id": "vpc-1", "cidr": "10.0.0.0/16"}],
      "security_groups": [{"id": "sg-app", "ingress": [
          {"protocol": "icmp", "from_port": -1, "to_port": -1, "cidr": "10.0.0.0/16"},
          {"protocol": "tcp", "port": 8080, "cidr": "10.0.0.0/16"},
          {"protocol": "udp", "port": 7, "cidr": "10.0.0.0/16"}]}],
      "enis": [)" + eni("eni-a", "02:00:00:00:00:0a", "10.0.1.5") +
                                           ", " + eni("eni-b", "02:00:00:00:00:0b", "10.0.1.6") + ", " +
                                           eni("eni-c", "02:00:00:00:00:0c", "10.0.1.7") + "]}";
    card_ = std::make_unique<Process>(std::vector<std::string>{AZOTE_CARD_NET_BIN, "--config", path("vpc.json"),
                                                               "--control", path("control.sock"), "--flow-log",
                                                               path("flow.log"), "--flow-log-window", "1"});
    for (int i = 0; i < 250; ++i) {
      bool all = file_exists(path("control.sock"));
      for (const char* e : {"eni-a", "eni-b", "eni-c"}) all = all && file_exists(path(std::string(e) + ".sock"));
      if (all) return;
      std::this_thread::sleep_for(20ms);
    }
    auto o = card_->wait(1s);
    FAIL() << "the card did not create its sockets: " << show(o);
  }

  // The script udhcpc runs: applies the lease with ip(8) and records it in `lease_file`.
  std::string write_script(const std::string& name, const std::string& lease_file) {
    const std::string p = path(name);
    std::ofstream(p) << "#!/bin/sh\n"
                        "# udhcpc event script: apply the lease with iproute2, record it for the test.\n"
                        "PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH\n"
                        "case \"$1\" in\n"
                        "  deconfig) ip -4 addr flush dev \"$interface\"; ip link set dev \"$interface\" up ;;\n"
                        "  bound|renew)\n"
                        "    ip -4 addr flush dev \"$interface\"\n"
                        "    ip addr add \"$ip/$subnet\" dev \"$interface\"\n"
                        "    [ -n \"$mtu\" ] && ip link set dev \"$interface\" mtu \"$mtu\"\n"
                        "    for r in $router; do ip route replace default via \"$r\" dev \"$interface\"; break; done\n"
                        "    { echo \"ip=$ip\"; echo \"subnet=$subnet\"; echo \"router=$router\"; echo \"dns=$dns\";\n"
                        "      echo \"mtu=$mtu\"; echo \"domain=$domain\"; echo \"hostname=$hostname\";\n"
                        "      echo \"lease=$lease\"; echo \"serverid=$serverid\"; } > \""
                     << lease_file
                     << "\"\n"
                        "    ;;\n"
                        "esac\n"
                        "exit 0\n";
    std::filesystem::permissions(p, std::filesystem::perms::owner_all);
    return p;
  }

  // A namespace with the bridge on `eni`'s socket; waits for its ready line.
  void start_bridge(Instance& in, const std::string& eni_id) {
    in.ns = std::make_unique<Netns>("azt-" + eni_id);
    ASSERT_TRUE(in.ns->ok()) << in.ns->error();
    in.bridge = std::make_unique<Process>(in.ns->wrap(
        {AZOTE_TAP_BRIDGE_BIN, "--socket", path(eni_id + ".sock"), "--tap", kTap, "--log-level", "info"}));
    const bool up = in.bridge->wait_for_output(std::string("azote-tap-bridge: ") + kTap + " up", 15s);
    if (!up) {
      auto o = in.bridge->wait(2s);
      FAIL() << "the bridge for " << eni_id << " did not come up: " << show(o);
    }
  }

  // An instance: bridge, then udhcpc applying the lease.
  void start_instance(Instance& in, const std::string& eni_id) {
    ASSERT_NO_FATAL_FAILURE(start_bridge(in, eni_id));
    const std::string lease_file = path(eni_id + ".lease");
    const std::string script = write_script(eni_id + ".udhcpc.sh", lease_file);
    const Outcome o = exec_in(*in.ns,
                              {tools_.udhcpc, "-i", kTap, "-n", "-q", "-f", "-s", script, "-t", "5", "-T", "1", "-O",
                               "mtu"},
                              30s);
    ASSERT_EQ(o.status, 0) << "udhcpc in " << in.ns->name() << ": " << show(o);
    in.lease = parse_env(slurp(lease_file));
    in.ip = in.lease["ip"];
    ASSERT_FALSE(in.ip.empty()) << "no lease recorded: " << show(o);
  }

  Outcome ping(const Instance& from, const std::string& to, int count = 3) {
    std::vector<std::string> argv = tools_.ping;
    argv.insert(argv.end(), {"-c", std::to_string(count), "-w", "10", to});
    return exec_in(*from.ns, argv, 20s);
  }

  // nc -z: does a TCP connection from `from` to `to`:`port` open within `wait_s`?
  Outcome connect(const Instance& from, const std::string& to, int port, int wait_s) {
    return exec_in(*from.ns, {tools_.nc, "-z", "-w", std::to_string(wait_s), to, std::to_string(port)}, 20s);
  }

  Result<control::Json, control::ControlError> call(const control::Json& j) {
    return control::call_once(path("control.sock"), j, 5s);
  }

  Tools tools_;
  std::string dir_;
  std::unique_ptr<Process> card_;
  Instance a_, b_;
};

// busybox udhcpc in a namespace gets the ENI's lease from the card, applies it with ip(8).
TEST_F(CardNetNs, UdhcpcGetsTheEniLease) {
  ASSERT_NO_FATAL_FAILURE(start_instance(a_, "eni-a"));
  auto& l = a_.lease;
  EXPECT_EQ(l["ip"], "10.0.1.5");
  EXPECT_EQ(l["subnet"], "255.255.255.0");
  EXPECT_EQ(l["router"], "10.0.1.1");
  EXPECT_EQ(l["dns"], "10.0.1.2");
  EXPECT_EQ(l["mtu"], "1500");
  EXPECT_EQ(l["serverid"], "10.0.1.1");
  EXPECT_EQ(l["hostname"], "ip-10-0-1-5");
  EXPECT_EQ(l["domain"], std::string(kRegion) + ".compute.internal");
  EXPECT_EQ(l["lease"], "3600");
  // The TAP: the ENI's MAC and MTU (set by the bridge from config space), the address
  // and default route (set by the script from the lease).
  const Outcome link = exec_in(*a_.ns, {find_tool("ip").value_or("ip"), "link", "show", kTap});
  EXPECT_NE(link.out.find("link/ether 02:00:00:00:00:0a"), std::string::npos) << show(link);
  EXPECT_NE(link.out.find("mtu 1500"), std::string::npos) << show(link);
  EXPECT_NE(link.out.find(",UP"), std::string::npos) << show(link);
  const Outcome addr = exec_in(*a_.ns, {find_tool("ip").value_or("ip"), "-4", "addr", "show", "dev", kTap});
  EXPECT_NE(addr.out.find("inet 10.0.1.5/24"), std::string::npos) << show(addr);
  const Outcome route = exec_in(*a_.ns, {find_tool("ip").value_or("ip"), "route", "show", "default"});
  EXPECT_NE(route.out.find("default via 10.0.1.1 dev tap0"), std::string::npos) << show(route);
}

// The gateway answers ping; the VPC's DNS resolves the hostname of another ENI in the
// config's region, and only there.
TEST_F(CardNetNs, PingTheGatewayAndResolveWithDig) {
  ASSERT_NO_FATAL_FAILURE(start_instance(a_, "eni-a"));
  const Outcome p = ping(a_, "10.0.1.1");
  EXPECT_EQ(p.status, 0) << show(p);
  EXPECT_EQ(ping_received(p), 3) << show(p);

  const std::string name = std::string("ip-10-0-1-6.") + kRegion + ".compute.internal";
  const Outcome d = exec_in(*a_.ns, {tools_.dig, "@10.0.1.2", name, "+short", "+time=2", "+tries=2"});
  EXPECT_EQ(d.status, 0) << show(d);
  EXPECT_EQ(d.out, "10.0.1.6\n") << show(d);
  // The default region's name is not this VPC's zone: no address.
  const Outcome other = exec_in(*a_.ns, {tools_.dig, "@10.0.1.2", "ip-10-0-1-6.local-1.compute.internal", "+short",
                                         "+time=2", "+tries=2"});
  EXPECT_EQ(other.out.find("10.0.1.6"), std::string::npos) << show(other);
}

// Two namespace instances reach each other through the card (routed by the gateway).
TEST_F(CardNetNs, TwoInstancesPingEachOther) {
  ASSERT_NO_FATAL_FAILURE(start_instance(a_, "eni-a"));
  ASSERT_NO_FATAL_FAILURE(start_instance(b_, "eni-b"));
  EXPECT_EQ(b_.ip, "10.0.1.6");
  const Outcome ab = ping(a_, "10.0.1.6");
  EXPECT_EQ(ping_received(ab), 3) << show(ab);
  const Outcome ba = ping(b_, "10.0.1.5");
  EXPECT_EQ(ping_received(ba), 3) << show(ba);
  // Large frames (the full MTU) cross too.
  std::vector<std::string> big = tools_.ping;
  big.insert(big.end(), {"-c", "2", "-w", "10", "-s", "1472", "10.0.1.6"});
  const Outcome pb = exec_in(*a_.ns, big, 20s);
  EXPECT_EQ(ping_received(pb), 2) << show(pb);
}

// Security groups decide TCP connections between instances: a port allowed by the
// receiving ENI's group connects, another gets no SYN-ACK (nc times out, no RST); a rule
// change on the card's control socket applies to the next connection.
TEST_F(CardNetNs, SecurityGroupsDecideTcpConnections) {
  ASSERT_NO_FATAL_FAILURE(start_instance(a_, "eni-a"));
  ASSERT_NO_FATAL_FAILURE(start_instance(b_, "eni-b"));
  // Listeners on both ports in B (-k: keep accepting).
  Process l8080(b_.ns->wrap({tools_.nc, "-l", "-k", "8080"}));
  Process l9090(b_.ns->wrap({tools_.nc, "-l", "-k", "9090"}));
  // Both listen (checked from inside B, through its loopback).
  for (int port : {8080, 9090}) {
    bool listening = false;
    for (int i = 0; i < 50 && !listening; ++i) {
      listening = connect(b_, "127.0.0.1", port, 1).status == 0;
      if (!listening) std::this_thread::sleep_for(100ms);
    }
    ASSERT_TRUE(listening) << "nc -l " << port << " is not listening in " << b_.ns->name();
  }

  const Outcome ok8080 = connect(a_, "10.0.1.6", 8080, 3);
  EXPECT_EQ(ok8080.status, 0) << "TCP 8080 (allowed) did not connect: " << show(ok8080);
  const Outcome no9090 = connect(a_, "10.0.1.6", 9090, 2);
  EXPECT_NE(no9090.status, 0) << "TCP 9090 (not allowed) connected: " << show(no9090);
  EXPECT_GE(no9090.seconds, 1.5) << "refused at once (RST?) rather than dropped: " << show(no9090);

  // Now 9090 and not 8080.
  auto r = call({{"op", "set-security-group-rules"}, {"group", "sg-app"},
                 {"ingress", control::Json::parse(R"([{"protocol": "icmp", "from_port": -1, "to_port": -1, "cidr": "10.0.0.0/16"},
                                                    {"protocol": "tcp", "port": 9090, "cidr": "10.0.0.0/16"}])")}});
  ASSERT_TRUE(r) << r.error().message();
  const Outcome ok9090 = connect(a_, "10.0.1.6", 9090, 3);
  EXPECT_EQ(ok9090.status, 0) << "TCP 9090 did not connect after the rule change: " << show(ok9090);
  const Outcome no8080 = connect(a_, "10.0.1.6", 8080, 2);
  EXPECT_NE(no8080.status, 0) << "TCP 8080 still connects after the rule change: " << show(no8080);

  // The flow log has both verdicts for B's ENI (1 s window).
  std::string log;
  for (int i = 0; i < 40 && log.find("REJECT") == std::string::npos; ++i) {
    std::this_thread::sleep_for(100ms);
    log = slurp(path("flow.log"));
  }
  EXPECT_NE(log.find("eni-b 10.0.1.5 10.0.1.6"), std::string::npos) << log;
  EXPECT_NE(log.find(" 9090 6 "), std::string::npos) << log;
  EXPECT_NE(log.find("REJECT"), std::string::npos) << log;
  EXPECT_NE(log.find("ACCEPT"), std::string::npos) << log;
  l8080.signal(SIGTERM);
  l9090.signal(SIGTERM);
}

// The built-in guest (azote-hv, net-echo) takes its ENI's lease from the same card and
// answers ping (and UDP echo) from a namespace instance.
TEST_F(CardNetNs, BuiltinGuestLeasesAndAnswersANamespace) {
  std::string why;
  if (!kvm_usable(&why)) GTEST_SKIP() << "SKIPPED: needs KVM (" << why << ")";
  Process guest({AZOTE_HV_BIN, "--kernel", "builtin:net-echo", "--memory", "128M", "--device",
                 "net,socket=" + path("eni-c.sock")});
  // net-echo prints its address once DHCP gave it one: the lease of eni-c.
  ASSERT_TRUE(guest.wait_for_output("net-echo ready ip=10.0.1.7 port=7", 60s)) << show(guest.wait(1s));
  ASSERT_NO_FATAL_FAILURE(start_instance(a_, "eni-a"));
  const Outcome p = ping(a_, "10.0.1.7");
  EXPECT_EQ(p.status, 0) << show(p);
  EXPECT_EQ(ping_received(p), 3) << show(p);
  // UDP echo through the card (sg-app allows UDP 7).
  const Outcome echo = exec_in(*a_.ns, {"/bin/sh", "-c", "echo azote-ns | " + tools_.nc + " -u -w 2 10.0.1.7 7"}, 20s);
  EXPECT_NE(echo.out.find("azote-ns"), std::string::npos) << show(echo);
  guest.signal(SIGTERM);
  EXPECT_EQ(guest.wait(10s).status, 143);
}

// The bridge's life: SIGTERM is a clean exit (0) and the ENI takes a new bridge at once;
// the card going away ends the bridge with a message (1).
TEST_F(CardNetNs, BridgeStopsCleanlyAndWhenTheCardGoes) {
  ASSERT_NO_FATAL_FAILURE(start_bridge(a_, "eni-a"));
  a_.bridge->signal(SIGTERM);
  const Outcome stopped = a_.bridge->wait(10s);
  EXPECT_EQ(stopped.status, 0) << show(stopped);
  a_.bridge.reset();
  a_.ns.reset();

  ASSERT_NO_FATAL_FAILURE(start_instance(a_, "eni-a"));  // the same ENI, a new session
  card_->signal(SIGTERM);
  EXPECT_EQ(card_->wait(10s).status, 0);
  const Outcome gone = a_.bridge->wait(10s);
  EXPECT_EQ(gone.status, 1) << show(gone);
  EXPECT_NE(gone.err.find("the card closed the connection on " + path("eni-a.sock")), std::string::npos)
      << show(gone);
  a_.bridge.reset();
}

// netns.hpp's veth pair between two namespaces, on its own (for the fabric tests).
TEST_F(CardNetNs, VethPairBetweenNamespaces) {
  Netns n1("azt-v1"), n2("azt-v2");
  ASSERT_TRUE(n1.ok()) << n1.error();
  ASSERT_TRUE(n2.ok()) << n2.error();
  Veth v(&n1, "veth-a", &n2, "veth-b");
  ASSERT_TRUE(v.ok()) << v.error();
  const std::string ip = find_tool("ip").value_or("ip");
  for (const auto& [ns, dev, addr] : {std::tuple{&n1, "veth-a", "10.0.9.1/30"}, std::tuple{&n2, "veth-b", "10.0.9.2/30"}}) {
    ASSERT_EQ(exec_in(*ns, {ip, "addr", "add", addr, "dev", dev}).status, 0);
    ASSERT_EQ(exec_in(*ns, {ip, "link", "set", dev, "up"}).status, 0);
  }
  std::vector<std::string> argv = tools_.ping;
  argv.insert(argv.end(), {"-c", "1", "-w", "10", "10.0.9.2"});
  const Outcome p = exec_in(n1, argv, 20s);
  EXPECT_EQ(ping_received(p), 1) << show(p);
}

// ---- A hostile card: the bridge refuses what it must not believe.

// A virtio-net device (the card's features and config) that, once a queue starts, writes
// one forged used element (or forged used->idx) into it and interrupts the driver; or
// reports DEVICE_NEEDS_RESET.
class HostileNet final : public vhost_user::Device {
 public:
  enum class Lie { kRxIdOutOfRange, kRxLenTooLong, kRxIdxTooFar, kTxUsedNothingSent, kNeedsReset };
  explicit HostileNet(Lie lie) : lie_(lie) {}
  uint64_t features() const override {
    return virtio::feature_bit(virtio::kFVersion1) | virtio::feature_bit(5) | virtio::feature_bit(3) |
           virtio::feature_bit(16);
  }
  uint64_t protocol_features() const override {
    using vhost_user::bit;
    return bit(vhost_user::kPfMq) | bit(vhost_user::kPfConfig) | bit(vhost_user::kPfReplyAck) |
           bit(vhost_user::kPfStatus);
  }
  uint32_t num_queues() const override { return 2; }
  uint32_t max_queue_size() const override { return 1024; }
  void set_features(uint64_t) override {}
  Result<std::vector<uint8_t>, vhost_user::VuError> get_config(uint32_t offset, uint32_t size) override {
    const std::vector<uint8_t> c = {0x02, 0, 0, 0, 0, 0x0e, 1, 0, 1, 0, 0xdc, 0x05};  // mac, link up, 1 pair, mtu 1500
    if (uint64_t{offset} + size > c.size()) return make_error(vhost_user::Errc::kDevice, "past the config");
    return std::vector<uint8_t>(c.begin() + offset, c.begin() + offset + size);
  }
  void queue_started(const vhost_user::VringInfo& v) override {
    const bool rx_lie = lie_ == Lie::kRxIdOutOfRange || lie_ == Lie::kRxLenTooLong || lie_ == Lie::kRxIdxTooFar;
    if (lie_ == Lie::kNeedsReset || (v.index == 0) != rx_lie) return;
    uint8_t* used = v.memory->range(v.used, virtio::used_ring_size(v.size));
    if (used == nullptr) return;
    const bool bad_id = lie_ == Lie::kRxIdOutOfRange || lie_ == Lie::kTxUsedNothingSent;
    const virtio::virtq_used_elem e{bad_id ? 9999u : 0u, lie_ == Lie::kRxLenTooLong ? 4096u : 0u};
    virtio::shared::copy_out(used + virtio::used_ring_offset(0), &e, sizeof e);
    const uint16_t idx = lie_ == Lie::kRxIdxTooFar ? static_cast<uint16_t>(v.size + 44) : 1;
    virtio::shared::store<uint16_t>(used + virtio::used_idx_offset(), idx, std::memory_order_release);
    const uint64_t one = 1;
    if (v.call_fd >= 0) (void)!::write(v.call_fd, &one, sizeof one);
  }
  uint16_t queue_stopped(uint32_t) override { return 0; }
  bool needs_reset() const override { return lie_ == Lie::kNeedsReset; }

 private:
  Lie lie_;
};

TEST(TapBridgeHostileCard, EveryLieStopsTheBridgeWithAMessage) {
  std::string why;
  if (!netns_usable(&why)) GTEST_SKIP() << "SKIPPED: needs network namespaces: " << why;
  if (::access("/dev/net/tun", R_OK | W_OK) != 0) GTEST_SKIP() << "SKIPPED: needs /dev/net/tun for TAP devices";
  Netns ns("azt-hostile");
  ASSERT_TRUE(ns.ok()) << ns.error();
  const std::string sock = ::testing::TempDir() + "azote-hostile-" + std::to_string(::getpid()) + ".sock";
  using Lie = HostileNet::Lie;
  const std::pair<Lie, std::string> cases[] = {
      {Lie::kRxIdOutOfRange, "the card broke the receive queue: used element 0 names descriptor 9999, which is not "
                             "the head of a chain in flight"},
      {Lie::kRxLenTooLong, "the card broke the receive queue: used element 0 says 4096 bytes written into chain 0, "
                           "which has 2048 device-writable bytes"},
      {Lie::kRxIdxTooFar, "the card broke the receive queue: used->idx 300 is 300 ahead of the last completion "
                          "taken, with 256 chain(s) in flight"},
      // (A frame the kernel sent from the new TAP may be in flight: either check may see the lie.)
      {Lie::kTxUsedNothingSent, "the card broke the transmit queue: used"},
      {Lie::kNeedsReset, "reports DEVICE_NEEDS_RESET"},
  };
  for (const auto& [lie, message] : cases) {
    HostileNet dev(lie);
    auto backend = vhost_user::Backend::listen(sock, dev);
    ASSERT_TRUE(backend) << backend.error().message();
    std::atomic<bool> stop{false};
    std::thread serve([&] {
      while (!stop.load()) (void)(*backend)->run_once(10ms);
    });
    const Outcome o = run(ns.wrap({AZOTE_TAP_BRIDGE_BIN, "--socket", sock, "--tap", "tap-hostile"}), 20s);
    stop = true;
    serve.join();
    EXPECT_EQ(o.status, 1) << show(o);
    EXPECT_NE(o.out.find("azote-tap-bridge: tap-hostile up mac=02:00:00:00:00:0e mtu=1500"), std::string::npos)
        << show(o);
    EXPECT_NE(o.err.find(message), std::string::npos) << message << "\n" << show(o);
  }
  ::unlink(sock.c_str());
}

// The command line: help, usage errors naming the input (2), an absent card (1).
TEST(TapBridge, CommandLine) {
  const Outcome help = run({AZOTE_TAP_BRIDGE_BIN, "--help"}, 10s);
  EXPECT_EQ(help.status, 0);
  EXPECT_NE(help.out.find("Usage: azote-tap-bridge --socket PATH --tap NAME"), std::string::npos) << help.out;
  const Outcome none = run({AZOTE_TAP_BRIDGE_BIN}, 10s);
  EXPECT_EQ(none.status, 2);
  EXPECT_NE(none.err.find("--socket"), std::string::npos) << none.err;
  const Outcome q = run({AZOTE_TAP_BRIDGE_BIN, "--socket", "/nonexistent.sock", "--tap", "t0", "--queue-size", "300"},
                        10s);
  EXPECT_EQ(q.status, 2);
  EXPECT_NE(q.err.find("--queue-size: \"300\""), std::string::npos) << q.err;
  const std::string missing = ::testing::TempDir() + "azote-no-card-" + std::to_string(::getpid()) + ".sock";
  const Outcome absent = run({AZOTE_TAP_BRIDGE_BIN, "--socket", missing, "--tap", "t0"}, 30s);
  EXPECT_EQ(absent.status, 1);
  EXPECT_NE(absent.err.find("cannot reach the card at " + missing), std::string::npos) << absent.err;
}

}  // namespace
}  // namespace azote::test
