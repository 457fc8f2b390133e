#include "cards/net/options.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cards/net/fabric_link.hpp"

namespace azote::card_net {
namespace {

TEST(Options, EniSpec) {
  auto e = parse_eni("--eni", "socket=/run/a.sock,id=eni-a,mac=02:00:0a:00:01:05,ip=10.0.1.5,subnet=10.0.1.0/24,"
                              "sg=sg-a+sg-b,vpc=vpc-1,source-dest-check=off");
  ASSERT_TRUE(e) << e.error().message();
  EXPECT_EQ(e->socket, "/run/a.sock");
  EXPECT_EQ(e->groups, (std::vector<std::string>{"sg-a", "sg-b"}));
  EXPECT_FALSE(e->source_dest_check);
  EXPECT_EQ(e->ip.to_string(), "10.0.1.5");
  for (const char* bad : {"socket=/a,id=eni-a,mac=02:00:00:00:00:01,ip=10.0.1.5,subnet=s",            // no sg
                          "socket=/a,id=eni-a,mac=01:00:00:00:00:01,ip=10.0.1.5,subnet=s,sg=g",      // multicast
                          "socket=/a,id=eni-a,mac=02:00:00:00:00:01,ip=10.0.1.05,subnet=s,sg=g",     // octal-ish
                          "socket=/a,id=eni-a,mac=02:00:00:00:00:01,ip=10.0.1.5,subnet=s,sg=g,x=1",  // unknown
                          "socket=/a,id=eni-a,mac=02:00:00:00:00:01,ip=10.0.1.5,subnet=s,sg=g,source-dest-check=maybe"}) {
    EXPECT_FALSE(parse_eni("--eni", bad)) << bad;
  }
}

TEST(Options, JsonModel) {
  CardOptions o;
  auto r = apply_json(R"({"region": "eu-west-1", "vpcs": [{"id": "vpc-1", "cidr": "10.0.0.0/16"}],
    "subnets": [{"id": "subnet-a", "vpc": "vpc-1", "cidr": "10.0.1.0/24"}],
    "security_groups": [{"id": "sg-a", "ingress": [{"protocol": "udp", "port": 5000, "cidr": "10.0.0.0/16"},
                                                   {"protocol": "icmp", "from_port": 8, "to_port": -1, "group": "sg-a"}]}],
    "enis": [{"id": "eni-a", "socket": "/a", "mac": "02:00:00:00:00:01", "ip": "10.0.1.5", "subnet": "subnet-a",
              "security_groups": ["sg-a"], "source_dest_check": false}],
    "flow_log": "/tmp/f", "flow_log_window": 5})",
                      "t", &o);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(o.region, "eu-west-1");
  ASSERT_EQ(o.groups.size(), 1u);
  ASSERT_TRUE(o.groups[0].ingress);
  EXPECT_EQ(o.groups[0].ingress->size(), 2u);
  EXPECT_EQ((*o.groups[0].ingress)[0], vpc::Rule::udp(5000, 5000, *vpc::Cidr::parse("10.0.0.0/16")));
  EXPECT_FALSE(o.groups[0].egress);
  ASSERT_EQ(o.enis.size(), 1u);
  EXPECT_FALSE(o.enis[0].source_dest_check);
  EXPECT_EQ(o.flow_log_window_s, 5u);
  for (const char* bad : {R"({"vpcs": [{"id": "v", "cidr": "10.0.0.1/16"}]})",
                          R"({"security_groups": [{"id": "g", "ingress": [{"protocol": "udp", "port": 70000, "cidr": "0.0.0.0/0"}]}]})",
                          R"({"security_groups": [{"id": "g", "ingress": [{"protocol": "tcp", "cidr": "0.0.0.0/0", "group": "g"}]}]})",
                          R"({"nope": 1})"}) {
    CardOptions x;
    EXPECT_FALSE(apply_json(bad, "t", &x)) << bad;
  }
}

TEST(Options, Args) {
  auto p = parse_args({"--eni", "socket=/a,id=eni-a,mac=02:00:00:00:00:01,ip=10.0.1.5,subnet=10.0.1.0/24,sg=g,vpc=v",
                       "--metrics", "unix:/m", "--flow-log", "/f", "--flow-log-window=2"});
  ASSERT_TRUE(p) << p.error().message();
  EXPECT_EQ(p->options.metrics_path, "/m");
  EXPECT_EQ(p->options.flow_log_window_s, 2u);
  EXPECT_FALSE(parse_args({}));  // nothing to serve
  EXPECT_FALSE(parse_args({"--metrics", "/m", "--control", "/c"}));
  EXPECT_TRUE(parse_args({"--control", "/c"}));
  EXPECT_TRUE(parse_args({"--help"})->help);
}

}  // namespace
}  // namespace azote::card_net

namespace azote::card_net {
namespace {

TEST(Options, Fabric) {
  const std::string key(64, 'a');
  CardOptions o;
  auto r = apply_json(R"({"vpcs": [{"id": "vpc-1", "cidr": "10.0.0.0/16", "vni": 4242}],
    "fabric": {"host_id": 1, "underlay": "192.168.50.1",
               "peers": [{"host": 2, "address": "192.168.50.2:7000", "key": ")" + key + R"(", "key_id": 3},
                         {"host": 3, "address": "192.168.50.3", "key_id": 0, "cipher": "none"}],
               "mappings": [{"vpc": "vpc-1", "ip": "10.0.1.6", "host": 2}]}})",
                      "t", &o);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(o.vpcs[0].vni, 4242u);
  EXPECT_EQ(o.host_id, 1u);
  ASSERT_TRUE(o.underlay);
  EXPECT_EQ(o.underlay->to_string(), "192.168.50.1:6081");
  ASSERT_EQ(o.peers.size(), 2u);
  EXPECT_EQ(o.peers[0].address.to_string(), "192.168.50.2:7000");
  EXPECT_EQ(o.peers[0].key.key_id, 3u);
  EXPECT_EQ(o.peers[0].key.secret[0], 0xaa);
  EXPECT_EQ(o.peers[1].key.cipher, fabric::Cipher::kNone);
  ASSERT_EQ(o.mappings.size(), 1u);
  EXPECT_EQ(o.mappings[0].ip.to_string(), "10.0.1.6");
  // Every bad input is named.
  const std::pair<std::string, std::string> bad[] = {
      {R"({"fabric": {"host_id": 0}})", "host_id"},
      {R"({"fabric": {"underlay": "10.0.0.1:0"}})", "port"},
      {R"({"fabric": {"underlay": "example.org"}})", "example.org"},
      {R"({"fabric": {"peers": [{"host": 2, "address": "1.2.3.4", "key": "abc", "key_id": 1}]}})", "64 hex digits"},
      {R"({"fabric": {"peers": [{"host": 2, "address": "1.2.3.4", "key": ")" + std::string(63, 'a') + "g" +
           R"(", "key_id": 1}]}})", "hex digit"},
      {R"({"fabric": {"peers": [{"host": 2, "address": "1.2.3.4", "key": ")" + std::string(64, '0') +
           R"(", "key_id": 1}]}})", "all zeros"},
      {R"({"fabric": {"peers": [{"host": 2, "address": "1.2.3.4", "key": ")" + key + R"(", "key_id": -1}]}})", "key_id"},
      {R"({"fabric": {"peers": [{"host": 2, "address": "1.2.3.4", "key": ")" + key + R"(", "key_id": 1, "cipher": "rot13"}]}})", "cipher"},
      {R"({"fabric": {"peers": [{"host": 2, "address": "1.2.3.4", "key_id": 1}]}})", "key"},
      {R"({"fabric": {"peers": [{"host": 2, "address": "1.2.3.4", "key_id": 1, "cipher": "none", "key": ")" + key + R"("}]}})", "meaningless"},
      {R"({"fabric": {"mappings": [{"vpc": "vpc-1", "ip": "10.0.1", "host": 2}]}})", "10.0.1"},
      {R"({"fabric": {"mappings": [{"vpc": "vpc-1", "ip": "10.0.1.6"}]}})", "host"},
      {R"({"fabric": {"mapping": []}})", "mapping"},
      {R"({"vpcs": [{"id": "vpc-1", "cidr": "10.0.0.0/16", "vni": 16777216}]})", "vni"},
  };
  for (const auto& [text, word] : bad) {
    CardOptions x;
    auto e = apply_json(text, "t", &x);
    ASSERT_FALSE(e) << text;
    EXPECT_NE(e.error().message().find(word), std::string::npos) << e.error().message();
  }
  // Flags: both or neither; a peer cannot be this host.
  EXPECT_TRUE(parse_args({"--control", "/c", "--underlay", "10.9.0.1:6081", "--host-id", "5"}));
  EXPECT_FALSE(parse_args({"--control", "/c", "--underlay", "10.9.0.1"}));
  EXPECT_FALSE(parse_args({"--control", "/c", "--host-id", "5"}));
  EXPECT_FALSE(parse_args({"--control", "/c", "--underlay", "10.9.0.1", "--host-id", "0"}));
  EXPECT_NE(vni_for("vpc-1"), vni_for("vpc-2"));
  EXPECT_LE(vni_for("vpc-1"), 0xffffffu);
}

// The fabric process as the launcher starts it: the underlay socket bound by the
// launcher (--underlay-fd), the relay inbox on the command line (--fabric-inbox).
TEST(Options, FabricProcessFlags) {
  auto p = parse_args({"--control", "fd:4", "--host-id", "7", "--fabric-inbox", "/run/azote-net/fabric/inbox.sock",
                       "--underlay", "127.0.0.1:6081", "--underlay-fd", "5"});
  ASSERT_TRUE(p) << p.error().message();
  EXPECT_EQ(p->options.underlay_fd, 5);
  ASSERT_TRUE(p->options.underlay);
  EXPECT_EQ(p->options.underlay->to_string(), "127.0.0.1:6081");
  EXPECT_EQ(p->options.fabric_inbox, "/run/azote-net/fabric/inbox.sock");
  auto plain = parse_args({"--control", "/c", "--host-id", "7", "--underlay", "127.0.0.1"});
  ASSERT_TRUE(plain) << plain.error().message();
  EXPECT_EQ(plain->options.underlay_fd, -1);  // the card binds its own
  const std::pair<std::vector<std::string>, std::string> bad[] = {
      {{"--control", "/c", "--host-id", "7", "--underlay-fd", "5"}, "--underlay-fd needs --underlay"},
      {{"--control", "/c", "--host-id", "7", "--underlay", "127.0.0.1", "--underlay-fd", "2"},
       "--underlay-fd: \"2\" is not a descriptor number from 3"},
      {{"--control", "/c", "--host-id", "7", "--underlay", "127.0.0.1", "--underlay-fd", "five"}, "\"five\""},
      {{"--control", "/c", "--host-id", "7", "--underlay", "127.0.0.1", "--fabric-inbox", "relay.sock"},
       "--fabric-inbox: \"relay.sock\" is not an absolute path"},
      {{"--control", "/c", "--host-id", "7", "--underlay", "127.0.0.1", "--fabric-inbox", "/" + std::string(120, 'x')},
       "shorter than 108 bytes"},
      {{"--control", "/c", "--fabric-inbox", "/run/relay.sock"}, "(the relay) needs the fabric"},
      {{"--host-id", "7", "--underlay", "127.0.0.1", "--fabric-inbox", "/run/relay.sock", "--eni",
        "socket=/a,id=eni-a,mac=02:00:00:00:00:01,ip=10.0.1.5,subnet=10.0.1.0/24,sg=g,vpc=v"},
       "it serves no ENI"},
  };
  for (const auto& [args, word] : bad) {
    auto e = parse_args(args);
    ASSERT_FALSE(e) << args.back();
    EXPECT_NE(e.error().message().find(word), std::string::npos) << e.error().message();
  }
}

TEST(Options, EniLimitsAndMetadata) {
  const std::string base = R"("id": "eni-a", "socket": "/a", "mac": "02:00:00:00:00:01", "ip": "10.0.1.5",
    "subnet": "10.0.1.0/24", "vpc": "vpc-1", "security_groups": ["sg-a"])";
  auto e = parse_eni_json("add-eni", nlohmann::json::parse("{" + base + R"(, "limits": {"bandwidth_mbps": 1000, "pps": 50000},
    "metadata": {"instance_id": "i-0123456789abcdef0", "instance_type": "t3.micro", "ami_id": "ami-builtin",
                 "availability_zone": "local-1a", "hostname": "ip-10-0-1-5.local-1.compute.internal",
                 "user_data_b64": "aGVsbG8gd29ybGQ=", "http_tokens": "required"}})"));
  ASSERT_TRUE(e) << e.error().message();
  ASSERT_TRUE(e->limits);
  EXPECT_EQ(e->limits->bandwidth_mbps, 1000u);
  EXPECT_EQ(e->limits->pps, 50000u);
  ASSERT_TRUE(e->metadata);
  EXPECT_EQ(e->metadata->instance_id, "i-0123456789abcdef0");
  EXPECT_EQ(e->metadata->user_data, "hello world");
  EXPECT_TRUE(e->metadata->http_tokens_required);
  auto plain = parse_eni_json("add-eni", nlohmann::json::parse("{" + base + "}"));
  ASSERT_TRUE(plain);
  EXPECT_FALSE(plain->limits);
  EXPECT_FALSE(plain->metadata);
  const std::pair<std::string, std::string> bad[] = {
      {R"("limits": {"bandwidth_mbps": 0})", "bandwidth_mbps"},
      {R"("limits": {"pps": 1.5})", "pps"},
      {R"("limits": {"burst": 1})", "burst"},
      {R"("limits": {})", "limits"},
      {R"("limits": 5)", "limits"},
      {R"("metadata": {"instance_id": "x-1"})", "instance_id"},
      {R"("metadata": {"ami_id": "ami-"})", "ami_id"},
      {R"("metadata": {"hostname": "-bad-.example"})", "hostname"},
      {R"("metadata": {"user_data_b64": "aGVsbG8"})", "user_data_b64"},
      {R"("metadata": {"user_data_b64": "aGV=bG8="})", "user_data_b64"},
      {R"("metadata": {"http_tokens": "sometimes"})", "http_tokens"},
      {R"("metadata": {"instance_type": 3})", "instance_type"},
      {R"("metadata": {"color": "blue"})", "color"},
  };
  for (const auto& [extra, word] : bad) {
    auto x = parse_eni_json("add-eni", nlohmann::json::parse("{" + base + ", " + extra + "}"));
    ASSERT_FALSE(x) << extra;
    EXPECT_NE(x.error().message().find(word), std::string::npos) << x.error().message();
  }
  // User data over EC2's 16 KiB.
  const std::string big(21848, 'A');  // 16386 bytes decoded
  auto x = parse_eni_json("add-eni", nlohmann::json::parse("{" + base + R"(, "metadata": {"user_data_b64": ")" + big + "\"}}"));
  ASSERT_FALSE(x);
  EXPECT_NE(x.error().message().find("16384"), std::string::npos) << x.error().message();
}

}  // namespace
}  // namespace azote::card_net

namespace azote::card_net {
namespace {

// --underlay-fd: the card takes the socket only if it is what --underlay says, an IPv4
// UDP socket bound to that address and port.
TEST(UnderlayFd, TheSocketMustBeBoundToTheUnderlay) {
  UniqueFd udp(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(udp);
  const Endpoint want{net::Ipv4Address(127, 0, 0, 1), 0};
  auto unbound = check_underlay_socket(udp.get(), {net::Ipv4Address(127, 0, 0, 1), 6081}, "--underlay-fd 5");
  ASSERT_FALSE(unbound);
  EXPECT_EQ(unbound.error().message(), "--underlay-fd 5 is not bound (--underlay 127.0.0.1:6081 expected)");
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(0x7f000001);
  ASSERT_EQ(::bind(udp.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);  // NOLINT
  socklen_t len = sizeof sa;
  ASSERT_EQ(::getsockname(udp.get(), reinterpret_cast<sockaddr*>(&sa), &len), 0);  // NOLINT
  const uint16_t port = ntohs(sa.sin_port);
  EXPECT_TRUE(check_underlay_socket(udp.get(), {want.addr, port}, "--underlay-fd 5"));
  const uint16_t other = port == 65535 ? 1 : port + 1;
  auto wrong_port = check_underlay_socket(udp.get(), {want.addr, other}, "--underlay-fd 5");
  ASSERT_FALSE(wrong_port);
  EXPECT_EQ(wrong_port.error().message(), "--underlay-fd 5 is bound to 127.0.0.1:" + std::to_string(port) +
                                              ", not to --underlay 127.0.0.1:" + std::to_string(other));
  auto wrong_addr = check_underlay_socket(udp.get(), {net::Ipv4Address(127, 0, 0, 2), port}, "--underlay-fd 5");
  ASSERT_FALSE(wrong_addr);
  EXPECT_NE(wrong_addr.error().message().find("not to --underlay 127.0.0.2:"), std::string::npos) << wrong_addr.error().message();

  UniqueFd tcp(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(tcp);
  auto stream = check_underlay_socket(tcp.get(), {want.addr, 6081}, "--underlay-fd 6");
  ASSERT_FALSE(stream);
  EXPECT_NE(stream.error().message().find("--underlay-fd 6 is not an IPv4 UDP socket"), std::string::npos)
      << stream.error().message();
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd a(sv[0]), b(sv[1]);
  auto unix_dgram = check_underlay_socket(a.get(), {want.addr, 6081}, "--underlay-fd 7");
  ASSERT_FALSE(unix_dgram);
  EXPECT_NE(unix_dgram.error().message().find("is not an IPv4 UDP socket"), std::string::npos) << unix_dgram.error().message();
  int pipefd[2];
  ASSERT_EQ(::pipe2(pipefd, O_CLOEXEC), 0);
  UniqueFd r(pipefd[0]), w(pipefd[1]);
  auto pipe = check_underlay_socket(r.get(), {want.addr, 6081}, "--underlay-fd 8");
  ASSERT_FALSE(pipe);
  EXPECT_NE(pipe.error().message().find("--underlay-fd 8 does not name an open socket"), std::string::npos)
      << pipe.error().message();
  auto closed = check_underlay_socket(1000, {want.addr, 6081}, "--underlay-fd 1000");
  ASSERT_FALSE(closed);
  EXPECT_NE(closed.error().message().find("does not name an open socket: Bad file descriptor"), std::string::npos)
      << closed.error().message();
}

}  // namespace
}  // namespace azote::card_net
