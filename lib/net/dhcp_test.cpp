// DHCP: golden client messages (as udhcpc and dhclient lay them out, written from RFC 2131
// and RFC 2132), every refusal, truncation at every offset, the server's decisions, and
// replies parsed back.
#include "net/dhcp.hpp"

#include <gtest/gtest.h>

#include <array>
#include <vector>

#include "net/frame.hpp"
#include "net/test_util.hpp"
#include "net/wire.hpp"

namespace azote::net {
namespace {

using testing::cat;
using testing::hex;
using testing::prefix;

const MacAddress kGuestMac({0x02, 0x00, 0x0a, 0x00, 0x01, 0x05});
const MacAddress kRouterMac({0x02, 0x00, 0x0a, 0x00, 0x01, 0x01});
constexpr Ipv4Address kGuest(10, 0, 1, 5);
constexpr Ipv4Address kRouter(10, 0, 1, 1);

std::vector<uint8_t> zeros(size_t n) { return std::vector<uint8_t>(n, 0); }

// BOOTP request from the guest (RFC 2131 §2 layout) with `options` (END included), padded
// to 300 bytes as clients do.
std::vector<uint8_t> bootp(const char* xid, const std::vector<uint8_t>& options, const char* ciaddr = "00000000",
                           const char* flags = "0000") {
  auto b = cat({hex("01 01 06 00"), hex(xid), hex("0000"), hex(flags), hex(ciaddr), zeros(12),
                hex("0200 0a00 0105"), zeros(10), zeros(64), zeros(128), hex("63825363"), options});
  if (b.size() < 300) b.resize(300, 0);
  return b;
}

// udhcpc's DISCOVER: type, client id (01 + MAC), max size 576, vendor class, parameters.
const std::vector<uint8_t> kDiscoverOptions = hex(
    "35 01 01"
    "3d 07 01 0200 0a00 0105"
    "39 02 0240"
    "3c 0c 756468637020312e33362e31"  // "udhcp 1.36.1"
    "37 07 01 03 06 0c 0f 1c 2a"
    "ff");
const std::vector<uint8_t> kDiscover = bootp("3903f326", kDiscoverOptions);

// The whole frame: 0.0.0.0:68 -> 255.255.255.255:67, Ethernet broadcast.
const std::vector<uint8_t> kDiscoverFrame = cat({
    hex("ffff ffff ffff  0200 0a00 0105  0800"),
    hex("4500 0148 0000 0000 4011 79a6 0000 0000 ffff ffff"),
    hex("0044 0043 0134 eba7"),
    kDiscover,
});

// dhclient's REQUEST in SELECTING: server id, requested address, hostname, parameters.
const std::vector<uint8_t> kRequestOptions = hex(
    "35 01 03"
    "36 04 0a000101"
    "32 04 0a000105"
    "0c 04 77656231"  // "web1"
    "37 0d 01 1c 02 03 0f 06 77 0c 2c 2f 1a 79 2a"
    "ff");
const std::vector<uint8_t> kRequest = bootp("5a1c0de1", kRequestOptions);

DhcpConfig config() {
  DhcpConfig c;
  c.mac = kGuestMac;
  c.address = kGuest;
  c.subnet = *Ipv4Prefix::parse("10.0.1.0/24");
  c.router = kRouter;
  c.router_mac = kRouterMac;
  c.dns = {Ipv4Address(10, 0, 0, 2)};
  c.hostname = "ip-10-0-1-5";
  c.domain_name = "eu-west-1.compute.internal";
  c.mtu = 9001;
  c.lease_seconds = 3600;
  return c;
}

TEST(Dhcp, GoldenDiscoverFrame) {
  auto f = parse_frame(kDiscoverFrame);
  ASSERT_TRUE(f.ok()) << f.error().context;
  EXPECT_TRUE(f->ip->src.is_any());
  EXPECT_TRUE(f->ip->dst.is_broadcast());
  const auto& udp = std::get<UdpView>(f->l4);
  EXPECT_EQ(udp.src_port, kDhcpClientPort);
  EXPECT_EQ(udp.dst_port, kDhcpServerPort);

  auto m = parse_dhcp(udp.payload);
  ASSERT_TRUE(m.ok()) << m.error().context;
  EXPECT_EQ(m->op, BootpOp::kRequest);
  EXPECT_EQ(m->type, DhcpMessageType::kDiscover);
  EXPECT_EQ(m->xid, 0x3903f326u);
  EXPECT_FALSE(m->broadcast());
  EXPECT_EQ(m->chaddr, kGuestMac);
  EXPECT_TRUE(m->ciaddr.is_any());
  EXPECT_FALSE(m->requested_ip);
  EXPECT_FALSE(m->server_id);
  ASSERT_EQ(m->client_id.size(), 7u);
  EXPECT_EQ(m->client_id[0], 1);
  EXPECT_EQ(m->max_message_size, 576);
  EXPECT_EQ(std::vector<uint8_t>(m->parameter_list.begin(), m->parameter_list.end()),
            (std::vector<uint8_t>{1, 3, 6, 12, 15, 28, 42}));
  EXPECT_TRUE(m->hostname().empty());
  auto vendor = m->find(dhcp_option::kVendorClass);
  ASSERT_TRUE(vendor);
  EXPECT_EQ(std::string(vendor->begin(), vendor->end()), "udhcp 1.36.1");
  EXPECT_FALSE(m->find(dhcp_option::kRouter));
}

TEST(Dhcp, GoldenRequest) {
  auto m = parse_dhcp(kRequest);
  ASSERT_TRUE(m.ok()) << m.error().context;
  EXPECT_EQ(m->type, DhcpMessageType::kRequest);
  EXPECT_EQ(m->server_id, kRouter);
  EXPECT_EQ(m->requested_ip, kGuest);
  EXPECT_EQ(m->hostname(), "web1");
  EXPECT_EQ(m->parameter_list.size(), 13u);
  EXPECT_TRUE(m->client_id.empty());
}

// Every proper prefix up to and including the END option is refused: below 240 bytes as
// truncated, after that as options without END or overrunning. Past END, padding is optional.
TEST(Dhcp, TruncationAtEveryOffset) {
  const size_t end = 240 + kDiscoverOptions.size();  // one past END
  for (size_t n = 0; n < end; ++n) {
    auto r = parse_dhcp(prefix(kDiscover, n));
    ASSERT_FALSE(r.ok()) << n;
    EXPECT_EQ(r.error().code, n < 240 ? NetErrc::kTruncated : NetErrc::kBadOption) << n << " " << r.error().context;
  }
  for (size_t n = end; n <= kDiscover.size(); ++n) EXPECT_TRUE(parse_dhcp(prefix(kDiscover, n)).ok()) << n;
}

TEST(Dhcp, Refusals) {
  auto at = [](std::vector<uint8_t> m, size_t offset, std::vector<uint8_t> bytes) {
    std::copy(bytes.begin(), bytes.end(), m.begin() + static_cast<long>(offset));
    return m;
  };
  auto with_options = [](const char* opts) { return bootp("00000001", hex(opts)); };
  auto code = [](const std::vector<uint8_t>& m, BootpOp op = BootpOp::kRequest) {
    auto r = parse_dhcp(m, op);
    return r.ok() ? NetErrc{} : r.error().code;
  };
  EXPECT_EQ(code(at(kDiscover, 0, {2})), NetErrc::kUnsupported);        // a BOOTREPLY from the guest
  EXPECT_EQ(code(kDiscover, BootpOp::kReply), NetErrc::kUnsupported);
  EXPECT_EQ(code(at(kDiscover, 1, {6})), NetErrc::kUnsupported);        // token ring
  EXPECT_EQ(code(at(kDiscover, 2, {16})), NetErrc::kUnsupported);       // hlen 16
  EXPECT_EQ(code(at(kDiscover, 3, {1})), NetErrc::kUnsupported);        // relayed (hops)
  EXPECT_EQ(code(at(kDiscover, 24, {10, 0, 0, 1})), NetErrc::kUnsupported);  // relayed (giaddr)
  EXPECT_EQ(code(at(kDiscover, 236, {99, 130, 83, 98})), NetErrc::kMalformed);  // magic cookie
  EXPECT_EQ(code(with_options("ff")), NetErrc::kMalformed);                     // plain BOOTP: no type
  EXPECT_EQ(code(with_options("35 01 00 ff")), NetErrc::kMalformed);            // type 0
  EXPECT_EQ(code(with_options("35 01 09 ff")), NetErrc::kMalformed);            // type 9
  EXPECT_EQ(code(with_options("35 01 02 ff")), NetErrc::kMalformed);            // OFFER from a client
  EXPECT_EQ(code(with_options("35 01 05 ff")), NetErrc::kMalformed);            // ACK from a client
  EXPECT_EQ(code(with_options("35 02 0101 ff")), NetErrc::kBadOption);          // type length 2
  EXPECT_EQ(code(with_options("35 01 01 35 01 01 ff")), NetErrc::kBadOption);   // type twice
  EXPECT_EQ(code(with_options("35 01 03 32 03 0a0001 ff")), NetErrc::kBadOption);      // requested ip /3
  EXPECT_EQ(code(with_options("35 01 03 36 05 0a00010100 ff")), NetErrc::kBadOption);  // server id /5
  EXPECT_EQ(code(with_options("35 01 01 39 02 0100 ff")), NetErrc::kBadOption);        // max size 256
  EXPECT_EQ(code(with_options("35 01 01 3d 01 01 ff")), NetErrc::kBadOption);         // client id /1
  EXPECT_EQ(code(with_options("35 01 01 37 00 ff")), NetErrc::kBadOption);            // empty PRL
  EXPECT_EQ(code(with_options("35 01 01 0c 00 ff")), NetErrc::kBadOption);            // empty hostname
  EXPECT_EQ(code(with_options("35 01 01 34 01 03 ff")), NetErrc::kUnsupported);       // overload
  // An option whose length runs past the buffer (the rest is padding, no END inside).
  auto overrun = bootp("00000001", hex("35 01 01 0c ff"));
  overrun.resize(245);  // a hostname of 255 bytes announced in the last byte
  EXPECT_EQ(code(overrun), NetErrc::kBadOption);
  // Unknown options are carried; pad options are skipped.
  const auto carried = with_options("00 00 35 01 01 00 f0 03 616263 ff");  // the message points into it
  auto ok = parse_dhcp(carried);
  ASSERT_TRUE(ok.ok()) << ok.error().context;
  EXPECT_EQ(ok->find(0xf0)->size(), 3u);
}

class DhcpServerTest : public ::testing::Test {
 protected:
  DhcpServerTest() : server_(std::move(DhcpServer::create(config())).value()) {}

  DhcpMessage msg(const std::vector<uint8_t>& bytes) {
    keep_.push_back(bytes);
    auto m = parse_dhcp(keep_.back());
    if (!m.ok()) ADD_FAILURE() << m.error().context;
    return std::move(m).value();
  }
  DhcpMessage msg(const char* options, const char* ciaddr = "00000000", const char* flags = "0000") {
    return msg(bootp("00c0ffee", hex(options), ciaddr, flags));
  }
  // Builds the reply to `m` and parses it back.
  DhcpMessage reply(const DhcpMessage& m, const DhcpDecision& d) {
    keep_.emplace_back(1500, 0);
    auto n = server_.build_reply(keep_.back(), m, d);
    if (!n.ok()) {
      ADD_FAILURE() << n.error().context;
      return {};
    }
    EXPECT_GE(*n, kBootpMinLen);
    keep_.back().resize(*n);
    auto r = parse_dhcp(keep_.back(), BootpOp::kReply);
    if (!r.ok()) ADD_FAILURE() << r.error().context;
    return std::move(r).value();
  }
  static uint32_t u32(const DhcpMessage& m, uint8_t code) {
    auto o = m.find(code);
    if (!o || o->size() != 4) return 0xdeadbeef;
    return wire::be32(*o, 0);
  }

  DhcpServer server_;
  std::vector<std::vector<uint8_t>> keep_;  // the buffers parsed messages point into
};

TEST_F(DhcpServerTest, DiscoverGetsAnOfferWithEveryOption) {
  const auto m = msg(kDiscover);
  const auto d = server_.handle(m);
  ASSERT_EQ(d.reply, DhcpMessageType::kOffer) << d.reason;
  EXPECT_EQ(server_.state(), DhcpLeaseState::kOffered);
  EXPECT_EQ(d.yiaddr, kGuest);
  EXPECT_EQ(d.dst_ip, kGuest);  // no broadcast bit: unicast to yiaddr at chaddr
  EXPECT_EQ(d.dst_mac, kGuestMac);

  const auto r = reply(m, d);
  EXPECT_EQ(r.type, DhcpMessageType::kOffer);
  EXPECT_EQ(r.xid, 0x3903f326u);
  EXPECT_EQ(r.yiaddr, kGuest);
  EXPECT_TRUE(r.ciaddr.is_any());
  EXPECT_EQ(r.chaddr, kGuestMac);
  EXPECT_EQ(r.server_id, kRouter);
  EXPECT_EQ(u32(r, dhcp_option::kSubnetMask), 0xffffff00u);
  EXPECT_EQ(u32(r, dhcp_option::kRouter), kRouter.value());
  EXPECT_EQ(u32(r, dhcp_option::kDns), Ipv4Address(10, 0, 0, 2).value());
  EXPECT_EQ(u32(r, dhcp_option::kLeaseTime), 3600u);
  EXPECT_EQ(u32(r, dhcp_option::kRenewalTime), 1800u);
  EXPECT_EQ(u32(r, dhcp_option::kRebindingTime), 3150u);
  auto host = r.find(dhcp_option::kHostname);
  ASSERT_TRUE(host);
  EXPECT_EQ(std::string(host->begin(), host->end()), "ip-10-0-1-5");
  auto domain = r.find(dhcp_option::kDomainName);
  ASSERT_TRUE(domain);
  EXPECT_EQ(std::string(domain->begin(), domain->end()), "eu-west-1.compute.internal");
  auto mtu = r.find(dhcp_option::kMtu);
  ASSERT_TRUE(mtu && mtu->size() == 2);
  EXPECT_EQ(wire::be16(*mtu, 0), 9001);
  // RFC 6842: the client identifier comes back.
  EXPECT_EQ(std::vector<uint8_t>(r.client_id.begin(), r.client_id.end()), hex("01 0200 0a00 0105"));
}

TEST_F(DhcpServerTest, BroadcastBitAndWholeFrame) {
  const auto m = msg("35 01 01 ff", "00000000", "8000");
  const auto d = server_.handle(m);
  ASSERT_EQ(d.reply, DhcpMessageType::kOffer);
  EXPECT_TRUE(d.dst_ip.is_broadcast());
  EXPECT_TRUE(d.dst_mac.is_broadcast());

  std::array<uint8_t, 1500> out{};
  auto n = server_.build_reply_frame(out, m, d);
  ASSERT_TRUE(n.ok()) << n.error().context;
  auto f = parse_frame(std::span(out).first(*n));
  ASSERT_TRUE(f.ok()) << f.error().context;
  EXPECT_EQ(f->eth.src, kRouterMac);
  EXPECT_TRUE(f->eth.dst.is_broadcast());
  EXPECT_EQ(f->ip->src, kRouter);
  EXPECT_TRUE(f->ip->dst.is_broadcast());
  const auto& udp = std::get<UdpView>(f->l4);
  EXPECT_EQ(udp.src_port, kDhcpServerPort);
  EXPECT_EQ(udp.dst_port, kDhcpClientPort);
  auto r = parse_dhcp(udp.payload, BootpOp::kReply);
  ASSERT_TRUE(r.ok()) << r.error().context;
  EXPECT_EQ(r->flags, 0x8000);
  EXPECT_EQ(r->type, DhcpMessageType::kOffer);
}

TEST_F(DhcpServerTest, RequestForTheEniAddressIsAcked) {
  (void)server_.handle(msg(kDiscover));
  const auto m = msg(kRequest);  // selecting, server id = router, requested = 10.0.1.5
  const auto d = server_.handle(m);
  ASSERT_EQ(d.reply, DhcpMessageType::kAck) << d.reason;
  EXPECT_EQ(server_.state(), DhcpLeaseState::kBound);
  const auto r = reply(m, d);
  EXPECT_EQ(r.type, DhcpMessageType::kAck);
  EXPECT_EQ(r.yiaddr, kGuest);
  EXPECT_EQ(u32(r, dhcp_option::kLeaseTime), 3600u);
  EXPECT_TRUE(r.client_id.empty());  // the client sent none

  // Init-reboot (no server id, requested address) and renewing (ciaddr) too.
  auto reboot = server_.handle(msg("35 01 03 32 04 0a000105 ff"));
  EXPECT_EQ(reboot.reply, DhcpMessageType::kAck) << reboot.reason;
  auto renew = server_.handle(msg("35 01 03 ff", "0a000105"));
  ASSERT_EQ(renew.reply, DhcpMessageType::kAck) << renew.reason;
  EXPECT_EQ(renew.dst_ip, kGuest);  // unicast to ciaddr
  EXPECT_EQ(renew.dst_mac, kGuestMac);
}

TEST_F(DhcpServerTest, RequestForAnotherAddressIsNaked) {
  for (const char* opts : {"35 01 03 36 04 0a000101 32 04 0a000163 ff",  // selecting us, wrong address
                           "35 01 03 32 04 c0a80005 ff",                 // init-reboot from another network
                           "35 01 03 36 04 0a000101 ff"}) {              // selecting without an address
    const auto m = msg(opts);
    const auto d = server_.handle(m);
    ASSERT_EQ(d.reply, DhcpMessageType::kNak) << opts << ": " << d.reason;
    EXPECT_TRUE(d.dst_ip.is_broadcast());
    EXPECT_TRUE(d.dst_mac.is_broadcast());
    EXPECT_EQ(server_.state(), DhcpLeaseState::kIdle);
    const auto r = reply(m, d);
    EXPECT_EQ(r.type, DhcpMessageType::kNak);
    EXPECT_TRUE(r.yiaddr.is_any());
    EXPECT_EQ(r.server_id, kRouter);
    EXPECT_TRUE(r.find(dhcp_option::kMessage));
    EXPECT_FALSE(r.find(dhcp_option::kLeaseTime));
    EXPECT_FALSE(r.find(dhcp_option::kRouter));
  }
  // Renewing another address.
  EXPECT_EQ(server_.handle(msg("35 01 03 ff", "0a000106")).reply, DhcpMessageType::kNak);
}

TEST_F(DhcpServerTest, SilenceWhereTheRfcWantsIt) {
  EXPECT_FALSE(server_.handle(msg("35 01 03 36 04 0a0001fe 32 04 0a000105 ff")).reply);  // another server chosen
  EXPECT_FALSE(server_.handle(msg("35 01 03 ff")).reply);                               // REQUEST naming nothing
  // Another chaddr (not the ENI's MAC).
  auto other = bootp("00000002", hex("35 01 01 ff"));
  other[28 + 5] = 0x06;
  EXPECT_FALSE(server_.handle(msg(other)).reply);
  EXPECT_EQ(server_.state(), DhcpLeaseState::kIdle);
}

TEST_F(DhcpServerTest, ReleaseDeclineInform) {
  (void)server_.handle(msg(kDiscover));
  (void)server_.handle(msg(kRequest));
  ASSERT_EQ(server_.state(), DhcpLeaseState::kBound);

  auto release = server_.handle(msg("35 01 07 36 04 0a000101 ff", "0a000105"));
  EXPECT_FALSE(release.reply);
  EXPECT_EQ(server_.state(), DhcpLeaseState::kReleased);
  // After a release the address is still the ENI's: the next DISCOVER gets it again.
  EXPECT_EQ(server_.handle(msg(kDiscover)).yiaddr, kGuest);

  auto decline = server_.handle(msg("35 01 04 36 04 0a000101 32 04 0a000105 ff"));
  EXPECT_FALSE(decline.reply);
  EXPECT_EQ(server_.state(), DhcpLeaseState::kDeclined);

  const auto inform = msg("35 01 08 37 03 01 03 06 ff", "0a000105");
  const auto d = server_.handle(inform);
  ASSERT_EQ(d.reply, DhcpMessageType::kAck) << d.reason;
  EXPECT_EQ(d.dst_ip, kGuest);
  const auto r = reply(inform, d);
  EXPECT_TRUE(r.yiaddr.is_any());
  EXPECT_EQ(r.ciaddr, kGuest);
  EXPECT_FALSE(r.find(dhcp_option::kLeaseTime));
  EXPECT_FALSE(r.find(dhcp_option::kRenewalTime));
  EXPECT_EQ(u32(r, dhcp_option::kRouter), kRouter.value());
  // INFORM from an address that is not the ENI's: no answer.
  EXPECT_FALSE(server_.handle(msg("35 01 08 ff", "0a000109")).reply);
}

TEST_F(DhcpServerTest, LongClientIdDroppedWhenTheReplyWouldNotFit) {
  // A 255-byte client id and no max-size option: the reply must stay within 548 bytes.
  std::string opts = "35 01 01 3d ff 01";
  for (int i = 0; i < 254; ++i) opts += " aa";
  opts += " ff";
  const auto m = msg(opts.c_str());
  const auto d = server_.handle(m);
  std::array<uint8_t, 1500> out{};
  auto n = server_.build_reply(out, m, d);
  ASSERT_TRUE(n.ok()) << n.error().context;
  EXPECT_LE(*n, kDhcpDefaultMaxLen);
  auto r = parse_dhcp(std::span(out).first(*n), BootpOp::kReply);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->client_id.empty());
  // With a larger maximum (1500) it is echoed.
  opts.insert(9, "39 02 05dc ");
  const auto big = msg(opts.c_str());
  n = server_.build_reply(out, big, server_.handle(big));
  ASSERT_TRUE(n.ok());
  EXPECT_GT(*n, kDhcpDefaultMaxLen);
  EXPECT_EQ(parse_dhcp(std::span(out).first(*n), BootpOp::kReply)->client_id.size(), 255u);
  // A buffer under 300 bytes is refused.
  EXPECT_EQ(server_.build_reply(std::span(out).first(299), m, d).error().code, NetErrc::kNoSpace);
  EXPECT_EQ(server_.build_reply(out, m, DhcpDecision{}).error().code, NetErrc::kMalformed);
}

TEST(DhcpConfigTest, Validation) {
  EXPECT_TRUE(validate(config()).ok());
  auto bad = [](auto mutate) {
    DhcpConfig c = config();
    mutate(c);
    auto r = validate(c);
    return !r.ok() && r.error().code == NetErrc::kBadConfig;
  };
  EXPECT_TRUE(bad([](DhcpConfig& c) { c.address = Ipv4Address(10, 0, 2, 5); }));
  EXPECT_TRUE(bad([](DhcpConfig& c) { c.address = Ipv4Address(10, 0, 1, 0); }));
  EXPECT_TRUE(bad([](DhcpConfig& c) { c.address = Ipv4Address(10, 0, 1, 255); }));
  EXPECT_TRUE(bad([](DhcpConfig& c) { c.router = Ipv4Address(10, 0, 0, 1); }));
  EXPECT_TRUE(bad([](DhcpConfig& c) { c.router = c.address; }));
  EXPECT_TRUE(bad([](DhcpConfig& c) { c.dns.clear(); }));
  EXPECT_TRUE(bad([](DhcpConfig& c) { c.dns.assign(5, Ipv4Address(10, 0, 0, 2)); }));
  EXPECT_TRUE(bad([](DhcpConfig& c) { c.hostname = "web.1"; }));
  EXPECT_TRUE(bad([](DhcpConfig& c) { c.hostname = "-web"; }));
  EXPECT_TRUE(bad([](DhcpConfig& c) { c.domain_name = "bad..name"; }));
  EXPECT_TRUE(bad([](DhcpConfig& c) { c.domain_name = "evil\nname"; }));
  EXPECT_TRUE(bad([](DhcpConfig& c) { c.mtu = 67; }));
  EXPECT_TRUE(bad([](DhcpConfig& c) { c.lease_seconds = 59; }));
  EXPECT_TRUE(bad([](DhcpConfig& c) { c.mac = MacAddress::broadcast(); }));
  EXPECT_TRUE(bad([](DhcpConfig& c) { c.domain_name = std::string(63, 'a') + "." + std::string(63, 'b') + "." +
                                                      std::string(63, 'c') + "." + std::string(61, 'd'); }));  // 558 bytes
  EXPECT_FALSE(DhcpServer::create(DhcpConfig{}).ok());
  DhcpConfig infinite = config();
  infinite.lease_seconds = 0xffffffff;
  auto server = DhcpServer::create(infinite);
  ASSERT_TRUE(server.ok());
  auto m = parse_dhcp(kDiscover);
  ASSERT_TRUE(m.ok());
  std::array<uint8_t, 600> out{};
  auto n = server->build_reply(out, *m, server->handle(*m));
  ASSERT_TRUE(n.ok());
  auto r = parse_dhcp(std::span(out).first(*n), BootpOp::kReply);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->find(dhcp_option::kLeaseTime));
  EXPECT_FALSE(r->find(dhcp_option::kRenewalTime));
}

}  // namespace
}  // namespace azote::net
