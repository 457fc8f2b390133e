// azote-card-net's fabric end to end: two "hosts" as two network namespaces joined by
// a veth pair (192.168.x.y/30, MTU 1600 — the fabric's datagrams are up to 1586 bytes of
// IPv4), one card in each (`ip netns exec`), each serving one ENI of the same VPC to a
// built-in guest under azote-hv (Unix sockets work across network namespaces). The
// guests ping and UDP-echo each other through the encrypted fabric; an AF_PACKET
// capture on host A's veth shows what the underlay carries (Geneve, the VPC's VNI, the
// sealed option type, and never the guest's payload in clear); a security group change
// on the receiving card cuts and restores traffic; a key rotation keeps traffic going;
// a key the other side does not share is refused and counted.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <thread>

#include "base/unique_fd.hpp"
#include "control/control.hpp"
#include "netns.hpp"
#include "process.hpp"

namespace azote::test {
namespace {

using namespace std::chrono_literals;

constexpr char kKey1[] = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
constexpr char kKey2[] = "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf";
constexpr char kKey3a[] = "3333333333333333333333333333333333333333333333333333333333333333";
constexpr char kKey3b[] = "4444444444444444444444444444444444444444444444444444444444444444";

// An AF_PACKET socket on `ifname` inside namespace `ns` (opened from a thread that
// joins the namespace; the socket stays bound there).
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
    const int buf = 8 << 20;
    (void)::setsockopt(s.get(), SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
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

struct Capture {
  size_t frames = 0, geneve = 0, sealed = 0, with_vni = 0, plaintext_leaks = 0;
};

// Reads everything queued on the capture socket: UDP to or from port 6081 is the fabric.
Capture drain(int fd, uint32_t vni, const std::string& needle) {
  Capture c;
  std::vector<uint8_t> b(4096);
  for (;;) {
    const ssize_t n = ::recv(fd, b.data(), b.size(), 0);
    if (n <= 0) break;
    ++c.frames;
    const auto len = static_cast<size_t>(n);
    if (std::search(b.begin(), b.begin() + n, needle.begin(), needle.end()) != b.begin() + n) ++c.plaintext_leaks;
    if (len < 14 + 20 + 8 + 28 || b[12] != 0x08 || b[13] != 0x00) continue;
    const size_t ihl = static_cast<size_t>(b[14] & 0x0f) * 4;
    if (b[14 + 9] != 17 || len < 14 + ihl + 8 + 28) continue;
    const uint8_t* udp = b.data() + 14 + ihl;
    const unsigned sport = udp[0] << 8 | udp[1], dport = udp[2] << 8 | udp[3];
    if (sport != 6081 && dport != 6081) continue;
    ++c.geneve;
    const uint8_t* g = udp + 8;
    if ((static_cast<uint32_t>(g[4]) << 16 | static_cast<uint32_t>(g[5]) << 8 | g[6]) == vni) ++c.with_vni;
    if (g[8] == 0xff && g[9] == 0x2a && g[10] == 0x81) ++c.sealed;
  }
  return c;
}

class CardNetFabric : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "azote-card-net-fabric-" + std::to_string(::getpid());
    std::filesystem::remove_all(dir_);
    ASSERT_TRUE(std::filesystem::create_directories(dir_)) << dir_;
  }
  void TearDown() override {
    if (!dir_.empty() && !HasFailure()) std::filesystem::remove_all(dir_);
  }
  std::string path(const std::string& n) const { return dir_ + "/" + n; }

  // One host's card config: its ENI, the other host as peer, the other ENI mapped there.
  std::string config(int host, const char* eni, const char* mac, const char* ip, const char* underlay,
                     const char* peer_addr, const char* peer_ip) {
    const int peer = host == 1 ? 2 : 1;
    return std::string(R"({"region": "test-1", "vpcs": [{"id": "vpc-1", "cidr": "10.0.0.0/16", "vni": 4242}],
      "security_groups": [{"id": "sg-app", "ingress": [
          {"protocol": "icmp", "from_port": -1, "to_port": -1, "cidr": "10.0.0.0/16"},
          {"protocol": "udp", "port": 7, "cidr": "10.0.0.0/16"}]}],
      "enis": [{"id": ")") +
           eni + R"(", "socket": ")" + path(std::string(eni) + ".sock") + R"(", "mac": ")" + mac + R"(", "ip": ")" + ip +
           R"(", "vpc": "vpc-1", "subnet": "10.0.1.0/24", "security_groups": ["sg-app"]}],
      "fabric": {"host_id": )" +
           std::to_string(host) + R"(, "underlay": ")" + underlay + R"(",
        "peers": [{"host": )" + std::to_string(peer) +
           R"(, "address": ")" + peer_addr + R"(", "key": ")" + kKey1 + R"(", "key_id": 1}],
        "mappings": [{"vpc": "vpc-1", "ip": ")" +
           peer_ip + R"(", "host": )" + std::to_string(peer) + "}]}}";
  }

  // Two hosts: the veth between them addressed 192.168.77.1/30 and .2/30, MTU 1600.
  void join(Netns& ha, Netns& hb, Veth& veth) {
    const std::string ip = find_tool("ip").value_or("ip");
    for (const auto& [ns, dev, addr] : {std::tuple{&ha, veth.a_name(), "192.168.77.1/30"},
                                        std::tuple{&hb, veth.b_name(), "192.168.77.2/30"}}) {
      for (const auto& argv : std::vector<std::vector<std::string>>{{ip, "link", "set", dev, "mtu", "1600"},
                                                                    {ip, "addr", "add", addr, "dev", dev},
                                                                    {ip, "link", "set", dev, "up"}}) {
        auto o = exec_in(*ns, argv);
        ASSERT_EQ(o.status, 0) << o.err;
      }
    }
  }

  std::string dir_;
};

std::vector<std::string> guest(const std::string& prog, const std::string& args, const std::string& sock) {
  return {AZOTE_HV_BIN, "--kernel", "builtin:" + prog, "--cmdline", args, "--memory", "128M",
          "--device", "net,socket=" + sock};
}

std::chrono::milliseconds since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t);
}

std::string slurp(const std::string& file) {
  std::ifstream f(file, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

bool wait_files(const std::vector<std::string>& files, std::chrono::milliseconds timeout) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < end) {
    if (std::all_of(files.begin(), files.end(), [](const std::string& f) { return file_exists(f); })) return true;
    std::this_thread::sleep_for(20ms);
  }
  return false;
}

TEST_F(CardNetFabric, TwoHostsPingEchoRulesRotationWrongKey) {
  std::string why;
  if (!netns_usable(&why)) GTEST_SKIP() << "SKIPPED: needs network namespaces (" << why << ")";
  if (!kvm_usable(&why)) GTEST_SKIP() << "SKIPPED: needs KVM (" << why << ")";

  // --- two hosts and the underlay between them
  Netns ha("azf-a"), hb("azf-b");
  ASSERT_TRUE(ha.ok()) << ha.error();
  ASSERT_TRUE(hb.ok()) << hb.error();
  Veth veth(&ha, unique_name("azfa"), &hb, unique_name("azfb"));
  ASSERT_TRUE(veth.ok()) << veth.error();
  join(ha, hb, veth);
  if (HasFatalFailure()) return;

  // --- one card per host
  std::ofstream(path("a.json")) << config(1, "eni-a", "02:00:00:00:00:0a", "10.0.1.5", "192.168.77.1", "192.168.77.2",
                                          "10.0.1.6");
  std::ofstream(path("b.json")) << config(2, "eni-b", "02:00:00:00:00:0b", "10.0.1.6", "192.168.77.2", "192.168.77.1",
                                          "10.0.1.5");
  const auto cards_started = std::chrono::steady_clock::now();
  Process card_a(ha.wrap({AZOTE_CARD_NET_BIN, "--config", path("a.json"), "--control", path("a.ctl")}));
  Process card_b(hb.wrap({AZOTE_CARD_NET_BIN, "--config", path("b.json"), "--control", path("b.ctl")}));
  ASSERT_TRUE(wait_files({path("a.ctl"), path("b.ctl"), path("eni-a.sock"), path("eni-b.sock")}, 10s))
      << "the cards did not start: " << card_a.wait(1s).err << card_b.wait(1s).err;
  auto call = [&](const char* card, const control::Json& j) {
    return control::call_once(path(std::string(card) + ".ctl"), j, 5s);
  };
  auto fabric = [&](const char* card) {
    auto l = call(card, {{"op", "list-fabric"}});
    EXPECT_TRUE(l) << (l ? "" : l.error().message());
    return l ? (*l)["fabric"] : control::Json();
  };

  std::string cap_err;
  UniqueFd cap = capture_socket(ha.name(), veth.a_name(), &cap_err);
  ASSERT_TRUE(cap) << cap_err;

  // --- the guests: an echo server on host B, ping and the UDP benchmark from host A
  const auto echo_started = std::chrono::steady_clock::now();
  Process echo(guest("net-echo", "", path("eni-b.sock")));
  ASSERT_TRUE(echo.wait_for_output("net-echo ready ip=10.0.1.6 port=7", 90s)) << echo.wait(1s).out;
  auto ping = [&] { return run(guest("net-ping", "10.0.1.6 3", path("eni-a.sock")), 90s); };
  auto p1 = ping();
  EXPECT_NE(p1.out.find("sent=3 received=3"), std::string::npos) << p1.out << p1.err;

  auto bench = run(guest("net-bench", "10.0.1.6 7 1", path("eni-a.sock")), 90s);
  std::smatch m;
  ASSERT_TRUE(std::regex_search(bench.out, m, std::regex(R"(sent=([0-9]+) received=([0-9]+))"))) << bench.out;
  EXPECT_GT(std::stoull(m[2]), 0u) << bench.out;
  std::printf("fabric aes-256-gcm: %s\n", bench.out.substr(bench.out.find("net-bench addr=")).c_str());

  // What the underlay carried: sealed Geneve with the VPC's VNI, never the payload.
  const Capture c = drain(cap.get(), 4242, "azbench1");
  EXPECT_GT(c.geneve, 100u) << "frames seen " << c.frames;
  EXPECT_EQ(c.with_vni, c.geneve);
  EXPECT_EQ(c.sealed, c.geneve);
  EXPECT_EQ(c.plaintext_leaks, 0u) << "the benchmark's payload crossed the underlay in clear";
  auto fa = fabric("a"), fb = fabric("b");
  ASSERT_EQ(fa["peers"].size(), 1u) << fa.dump();
  EXPECT_GT(fa["peers"][0]["tx_packets"].get<uint64_t>(), 100u) << fa.dump();
  EXPECT_GT(fa["peers"][0]["rx_packets"].get<uint64_t>(), 100u) << fa.dump();
  EXPECT_GT(fb["peers"][0]["received"]["delivered"].get<uint64_t>(), 100u) << fb.dump();
  EXPECT_EQ(fb["peers"][0]["auth_failures"], 0) << fb.dump();
  EXPECT_EQ(fa["peers"][0]["auth_failures"], 0) << fa.dump();

  // --- security groups of the receiving card: ICMP cut at B, then restored
  auto cut = call("b", {{"op", "set-security-group-rules"}, {"group", "sg-app"},
                        {"ingress", control::Json::parse(R"([{"protocol": "udp", "port": 7, "cidr": "10.0.0.0/16"}])")}});
  ASSERT_TRUE(cut) << cut.error().message();
  auto p2 = ping();
  EXPECT_NE(p2.out.find("sent=3 received=0"), std::string::npos) << p2.out << p2.err;
  EXPECT_GE(fabric("b")["peers"][0]["received"]["sg_ingress"].get<uint64_t>(), 3u);
  auto back = call("b", {{"op", "set-security-group-rules"}, {"group", "sg-app"},
                         {"ingress", control::Json::parse(R"([{"protocol": "icmp", "from_port": -1, "to_port": -1, "cidr": "10.0.0.0/16"},
                                                              {"protocol": "udp", "port": 7, "cidr": "10.0.0.0/16"}])")}});
  ASSERT_TRUE(back) << back.error().message();
  auto p3 = ping();
  EXPECT_NE(p3.out.find("sent=3 received=3"), std::string::npos) << p3.out << p3.err;

  // --- key rotation while the benchmark runs: A first, B a moment later
  const auto running_started = std::chrono::steady_clock::now();
  Process running(guest("net-bench", "10.0.1.6 7 6", path("eni-a.sock")));
  const uint64_t before = fabric("b")["peers"][0]["rx_packets"].get<uint64_t>();
  for (int i = 0; i < 300 && fabric("b")["peers"][0]["rx_packets"].get<uint64_t>() < before + 200; ++i)
    std::this_thread::sleep_for(100ms);
  auto ra = call("a", {{"op", "rotate-fabric-key"}, {"host", 2}, {"key", kKey2}, {"key_id", 2}});
  ASSERT_TRUE(ra) << ra.error().message();
  std::this_thread::sleep_for(200ms);
  auto rb = call("b", {{"op", "rotate-fabric-key"}, {"host", 1}, {"key", kKey2}, {"key_id", 2}});
  ASSERT_TRUE(rb) << rb.error().message();
  const uint64_t rotated = fabric("b")["peers"][0]["rx_packets"].get<uint64_t>();
  auto rbench = running.wait(since(running_started) + 120s);
  ASSERT_TRUE(std::regex_search(rbench.out, m, std::regex(R"(sent=([0-9]+) received=([0-9]+))"))) << rbench.out;
  EXPECT_GT(std::stoull(m[2]), 0u) << rbench.out;
  fa = fabric("a");
  fb = fabric("b");
  EXPECT_GT(fb["peers"][0]["rx_packets"].get<uint64_t>(), rotated + 100) << "no traffic after the rotation: " << fb.dump();
  EXPECT_EQ(fa["peers"][0]["key_id"], 2) << fa.dump();
  EXPECT_EQ(fa["peers"][0]["previous_key_id"], 1) << fa.dump();
  EXPECT_EQ(fb["peers"][0]["key_id"], 2) << fb.dump();
  EXPECT_EQ(fb["peers"][0]["auth_failures"], 0) << fb.dump();
  auto p4 = ping();
  EXPECT_NE(p4.out.find("sent=3 received=3"), std::string::npos) << p4.out << p4.err;

  // --- a key the other host does not share: refused, counted, nothing delivered
  ASSERT_TRUE(call("a", {{"op", "rotate-fabric-key"}, {"host", 2}, {"key", kKey3a}, {"key_id", 3}}));
  ASSERT_TRUE(call("b", {{"op", "rotate-fabric-key"}, {"host", 1}, {"key", kKey3b}, {"key_id", 3}}));
  const uint64_t delivered = fabric("b")["peers"][0]["received"]["delivered"].get<uint64_t>();
  auto p5 = ping();
  EXPECT_NE(p5.out.find("sent=3 received=0"), std::string::npos) << p5.out << p5.err;
  fb = fabric("b");
  EXPECT_GE(fb["peers"][0]["auth_failures"].get<uint64_t>(), 3u) << fb.dump();
  EXPECT_EQ(fb["peers"][0]["received"]["delivered"].get<uint64_t>(), delivered) << fb.dump();
  // Bad control inputs are refused with what was wrong.
  auto bad = call("a", {{"op", "rotate-fabric-key"}, {"host", 2}, {"key", "xyz"}, {"key_id", 9}});
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message().find("64 hex digits"), std::string::npos) << bad.error().message();
  auto nopeer = call("a", {{"op", "add-fabric-mapping"}, {"mapping", {{"vpc", "vpc-1"}, {"ip", "10.0.1.9"}, {"host", 7}}}});
  ASSERT_FALSE(nopeer);
  EXPECT_NE(nopeer.error().message().find("host 7"), std::string::npos) << nopeer.error().message();

  // --- cipher "none" (for the benchmark only): the same capture now sees the payload,
  // which shows that the capture above would have seen it had it crossed in clear.
  ASSERT_TRUE(call("a", {{"op", "rotate-fabric-key"}, {"host", 2}, {"key_id", 5}, {"cipher", "none"}}));
  ASSERT_TRUE(call("b", {{"op", "rotate-fabric-key"}, {"host", 1}, {"key_id", 5}, {"cipher", "none"}}));
  (void)drain(cap.get(), 4242, "azbench1");
  auto plain = run(guest("net-bench", "10.0.1.6 7 1", path("eni-a.sock")), 90s);
  ASSERT_TRUE(std::regex_search(plain.out, m, std::regex(R"(sent=([0-9]+) received=([0-9]+))"))) << plain.out;
  EXPECT_GT(std::stoull(m[2]), 0u) << plain.out;
  std::printf("fabric none:        %s\n", plain.out.substr(plain.out.find("net-bench addr=")).c_str());
  const Capture pc = drain(cap.get(), 4242, "azbench1");
  EXPECT_GT(pc.plaintext_leaks, 0u) << "the capture does not see the payload even in plaintext mode";
  EXPECT_EQ(pc.sealed, 0u);

  // Process::wait()'s deadline counts from the start of the process.
  echo.signal(SIGTERM);
  const Outcome oe = echo.wait(since(echo_started) + 15s);
  EXPECT_EQ(oe.status, 143) << oe.out << oe.err;
  card_a.signal(SIGTERM);
  card_b.signal(SIGTERM);
  const Outcome oa = card_a.wait(since(cards_started) + 15s), ob = card_b.wait(since(cards_started) + 15s);
  EXPECT_EQ(oa.status, 0) << oa.err;
  EXPECT_EQ(ob.status, 0) << ob.err;
}

// One card per instance on each host, and the fabric's keys only in a process that maps
// no guest memory: each host's fabric process (a card with the fabric, the relay inbox
// and its instances' ENIs as neighbours, serving no ENI) seals what the instances' cards
// relay to it and hands what arrives to their inboxes; the instances' cards hold no key
// and apply their own groups.
TEST_F(CardNetFabric, OneCardPerInstanceAndTheKeysInAFabricProcess) {
  std::string why;
  if (!netns_usable(&why)) GTEST_SKIP() << "SKIPPED: needs network namespaces (" << why << ")";
  if (!kvm_usable(&why)) GTEST_SKIP() << "SKIPPED: needs KVM (" << why << ")";
  Netns ha("azr-a"), hb("azr-b");
  ASSERT_TRUE(ha.ok()) << ha.error();
  ASSERT_TRUE(hb.ok()) << hb.error();
  Veth veth(&ha, unique_name("azra"), &hb, unique_name("azrb"));
  ASSERT_TRUE(veth.ok()) << veth.error();
  join(ha, hb, veth);
  if (HasFatalFailure()) return;
  const std::string uid = std::to_string(::getuid());
  const std::string model = R"("vpcs": [{"id": "vpc-1", "cidr": "10.0.0.0/16", "vni": 4242}],
      "security_groups": [{"id": "sg-app", "ingress": [{"protocol": "icmp", "from_port": -1, "to_port": -1, "cidr": "10.0.0.0/16"},
                                                       {"protocol": "udp", "port": 7, "cidr": "10.0.0.0/16"}]}])";
  auto eni = [&](const std::string& id, const std::string& mac, const std::string& addr) {
    return R"("id": ")" + id + R"(", "mac": ")" + mac + R"(", "ip": ")" + addr +
           R"(", "vpc": "vpc-1", "subnet": "10.0.1.0/24", "security_groups": ["sg-app"], "inbox": ")" + path(id + ".inbox") + "\"";
  };
  auto fabric_config = [&](int host, const std::string& local_eni, const std::string& mac, const std::string& addr,
                           const char* underlay, const char* peer_addr, const char* peer_ip) {
    const int peer = host == 1 ? 2 : 1;
    return "{" + model + R"(, "neighbours": [{)" + eni(local_eni, mac, addr) + R"(, "uid": )" + uid + R"(}],
      "fabric": {"host_id": )" + std::to_string(host) + R"(, "underlay": ")" + underlay + R"(", "inbox": ")" +
           path("relay-" + std::to_string(host)) + R"(",
        "peers": [{"host": )" + std::to_string(peer) + R"(, "address": ")" + peer_addr + R"(", "key": ")" + kKey1 +
           R"(", "key_id": 1}], "mappings": [{"vpc": "vpc-1", "ip": ")" + peer_ip + R"(", "host": )" +
           std::to_string(peer) + "}]}}";
  };
  auto instance_config = [&](int host, const std::string& id, const std::string& mac, const std::string& addr) {
    return "{" + model + R"(, "enis": [{)" + eni(id, mac, addr) + R"(, "socket": ")" + path(id + ".sock") + R"("}],
      "relay": {"inbox": ")" + path("relay-" + std::to_string(host)) + R"(", "uid": )" + uid + "}}";
  };
  std::ofstream(path("fa.json")) << fabric_config(1, "eni-a", "02:00:00:00:00:0a", "10.0.1.5", "192.168.77.1",
                                                 "192.168.77.2", "10.0.1.6");
  std::ofstream(path("fb.json")) << fabric_config(2, "eni-b", "02:00:00:00:00:0b", "10.0.1.6", "192.168.77.2",
                                                 "192.168.77.1", "10.0.1.5");
  std::ofstream(path("ia.json")) << instance_config(1, "eni-a", "02:00:00:00:00:0a", "10.0.1.5");
  std::ofstream(path("ib.json")) << instance_config(2, "eni-b", "02:00:00:00:00:0b", "10.0.1.6");
  const auto started = std::chrono::steady_clock::now();
  Process fa(ha.wrap({AZOTE_CARD_NET_BIN, "--config", path("fa.json"), "--control", path("fa.ctl"), "--imds", "off"}));
  Process fb(hb.wrap({AZOTE_CARD_NET_BIN, "--config", path("fb.json"), "--control", path("fb.ctl"), "--imds", "off"}));
  Process ia({AZOTE_CARD_NET_BIN, "--config", path("ia.json"), "--control", path("ia.ctl"), "--imds", "off"});
  Process ib({AZOTE_CARD_NET_BIN, "--config", path("ib.json"), "--control", path("ib.ctl"), "--imds", "off"});
  ASSERT_TRUE(wait_files({path("fa.ctl"), path("fb.ctl"), path("ia.ctl"), path("ib.ctl"), path("relay-1"), path("relay-2"),
                          path("eni-a.sock"), path("eni-b.sock")},
                         10s))
      << fa.wait(1s).err << fb.wait(1s).err << ia.wait(1s).err << ib.wait(1s).err;
  auto call = [&](const char* card, const control::Json& j) {
    return control::call_once(path(std::string(card) + ".ctl"), j, 5s);
  };

  Process echo(guest("net-echo", "", path("eni-b.sock")));
  ASSERT_TRUE(echo.wait_for_output("net-echo ready ip=10.0.1.6 port=7", 90s)) << echo.wait(1s).out;
  auto ping = [&] { return run(guest("net-ping", "10.0.1.6 3", path("eni-a.sock")), 90s); };
  auto p1 = ping();
  EXPECT_NE(p1.out.find("sent=3 received=3"), std::string::npos) << p1.out << p1.err;
  auto la = call("fa", {{"op", "list-fabric"}});
  ASSERT_TRUE(la) << la.error().message();
  EXPECT_GE((*la)["fabric"]["relay"]["relayed"].value("sent", 0), 3) << la->dump();
  EXPECT_GE((*la)["fabric"]["peers"][0]["received"].value("delivered", 0), 3) << la->dump();

  // The receiving instance's card applies its groups: ICMP cut there, then restored.
  auto cut = call("ib", {{"op", "set-security-group-rules"}, {"group", "sg-app"},
                         {"ingress", control::Json::parse(R"([{"protocol": "udp", "port": 7, "cidr": "10.0.0.0/16"}])")}});
  ASSERT_TRUE(cut) << cut.error().message();
  auto p2 = ping();
  EXPECT_NE(p2.out.find("sent=3 received=0"), std::string::npos) << p2.out << p2.err;
  auto lb = call("ib", {{"op", "list-enis"}});
  ASSERT_TRUE(lb);
  EXPECT_GE((*lb)["enis"][0]["drops"].value("sg_ingress", 0), 3) << lb->dump();

  // Where the keys are, and where guest memory is: never the same process.
  for (auto [p, what] : {std::pair{&fa, "host A's fabric process"}, std::pair{&fb, "host B's fabric process"}})
    EXPECT_EQ(slurp("/proc/" + std::to_string(p->pid()) + "/maps").find("/memfd:"), std::string::npos)
        << what << " maps guest memory";
  EXPECT_NE(slurp("/proc/" + std::to_string(ib.pid()) + "/maps").find("/memfd:"), std::string::npos)
      << "the echo's card maps no guest memory: the check above would prove nothing";
  for (const char* card : {"ia", "ib"}) {
    auto f = call(card, {{"op", "list-fabric"}});
    ASSERT_FALSE(f) << card << " has a fabric";
    EXPECT_NE(f.error().message().find("no fabric"), std::string::npos) << f.error().message();
  }
  auto refused = call("fa", control::Json::parse(R"({"op": "add-eni", "eni": {"id": "eni-x", "socket": ")" + path("x.sock") +
                                                 R"(", "mac": "02:00:00:00:00:0c", "ip": "10.0.1.9", "vpc": "vpc-1",
                                                 "subnet": "10.0.1.0/24", "security_groups": ["sg-app"]}})"));
  ASSERT_FALSE(refused) << "the fabric process took an ENI";
  EXPECT_NE(refused.error().message().find("serves no ENI"), std::string::npos) << refused.error().message();

  echo.signal(SIGTERM);
  EXPECT_EQ(echo.wait(15s).status, 143);
  for (Process* p : {&ia, &ib, &fa, &fb}) p->signal(SIGTERM);
  for (Process* p : {&ia, &ib, &fa, &fb}) {
    const Outcome o = p->wait(since(started) + 15s);
    EXPECT_EQ(o.status, 0) << o.err;
  }
}

}  // namespace
}  // namespace azote::test
