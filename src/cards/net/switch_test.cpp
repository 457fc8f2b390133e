// The card's forwarding and service logic without vhost-user: a Switch with a fake
// ENI pair (and one ENI of another VPC), frames built by lib/net pushed through
// Switch::transmit_one(), and what lands in each ENI's inbox parsed back.
#include "cards/net/switch.hpp"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include "base/temp_dir.hpp"
#include "cards/net/inbox.hpp"
#include "cards/net/test_frames.hpp"
#include "net/frame.hpp"

namespace azote::card_net {
namespace {

using namespace std::chrono_literals;
using testing::Guest;

net::Ipv4Address ip(const char* s) { return *net::Ipv4Address::parse(s); }
net::MacAddress mac(const char* s) { return *net::MacAddress::parse(s); }

std::vector<uint8_t> take(Port& p) {
  auto f = p.inbox().front();
  std::vector<uint8_t> out(f.begin(), f.end());
  if (!f.empty()) p.inbox().pop();
  return out;
}

class SwitchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    sw_ = std::make_unique<Switch>(clock_, SwitchConfig{"test-1", "123456789012", true, 1});
    ASSERT_TRUE(sw_->add_vpc({"vpc-1", *net::Ipv4Prefix::parse("10.0.0.0/16")}));
    ASSERT_TRUE(sw_->add_vpc({"vpc-2", *net::Ipv4Prefix::parse("10.1.0.0/16")}));
    ASSERT_TRUE(sw_->add_subnet({"subnet-a", "vpc-1", *net::Ipv4Prefix::parse("10.0.1.0/24")}));
    GroupSpec web{"sg-web", std::vector<vpc::Rule>{vpc::Rule::udp(5000, 5000, *vpc::Cidr::parse("10.0.0.0/16"))}, {}};
    ASSERT_TRUE(sw_->set_group(web));
    ASSERT_TRUE(sw_->set_group({"sg-closed", {}, {}}));
    a_ = add("eni-a", "02:00:00:00:00:0a", "10.0.1.5", "subnet-a", "", {"sg-web"});
    b_ = add("eni-b", "02:00:00:00:00:0b", "10.0.1.6", "subnet-a", "", {"sg-web"});
    c_ = add("eni-c", "02:00:00:00:00:0c", "10.1.1.5", "10.1.1.0/24", "vpc-2", {"sg-web"});
    ASSERT_TRUE(a_ && b_ && c_) << last_error_;
    ga_ = {a_->mac(), a_->ip(), a_->gateway_mac()};
    gb_ = {b_->mac(), b_->ip(), b_->gateway_mac()};
  }
  std::shared_ptr<Port> add(const char* id, const char* m, const char* a, const char* subnet, const char* vpc,
                            std::vector<std::string> groups, bool sdc = true) {
    EniSpec e;
    e.id = id;
    e.socket = std::string("/tmp/") + id;
    e.mac = mac(m);
    e.ip = ip(a);
    e.subnet = subnet;
    e.vpc = vpc;
    e.groups = std::move(groups);
    e.source_dest_check = sdc;
    auto p = sw_->add_eni(e);
    if (!p) {
      last_error_ = p.error().message();
      return nullptr;
    }
    (*p)->rx_ready = true;
    return *p;
  }
  std::string last_error_;
  std::vector<uint8_t> payload_{'h', 'e', 'l', 'l', 'o'};
  rate_limit::FakeClock clock_{std::chrono::seconds(1000)};
  std::unique_ptr<Switch> sw_;
  std::shared_ptr<Port> a_, b_, c_;
  Guest ga_, gb_;
};

TEST_F(SwitchTest, ArpIsAnsweredForTheSubnetButNotForItsOwnAddress) {
  for (const char* target : {"10.0.1.1", "10.0.1.6", "10.0.1.77"}) {
    sw_->transmit_one(*a_, testing::arp_request(ga_, ip(target)));
    auto r = take(*a_);
    auto f = net::parse_frame(r);
    ASSERT_TRUE(f && f->arp) << target;
    EXPECT_EQ(f->arp->op, net::ArpOp::kReply);
    EXPECT_EQ(f->arp->sender_ip, ip(target));
    EXPECT_EQ(f->arp->sender_mac, a_->gateway_mac());
    EXPECT_EQ(f->arp->target_mac, a_->mac());
    EXPECT_EQ(f->eth.dst, a_->mac());
  }
  EXPECT_EQ(a_->counters().arp_replies.load(), 3u);
  // Its own address (duplicate address detection) and addresses outside the subnet.
  sw_->transmit_one(*a_, testing::arp_request(ga_, ip("10.0.1.5")));
  sw_->transmit_one(*a_, testing::arp_request(ga_, ip("10.0.2.9")));
  EXPECT_EQ(a_->inbox().size(), 0u);
  EXPECT_EQ(a_->counters().dropped(Drop::kArpIgnored), 2u);
  // Nothing reached the other ENI: no flooding.
  EXPECT_EQ(b_->inbox().size(), 0u);
}

TEST_F(SwitchTest, DhcpOffersTheConfiguredLease) {
  sw_->transmit_one(*a_, testing::dhcp_discover(ga_, 0x1234));
  auto r = take(*a_);
  auto f = net::parse_frame(r);
  ASSERT_TRUE(f && f->ip);
  EXPECT_EQ(f->ip->src, ip("10.0.1.1"));
  const auto& u = std::get<net::UdpView>(f->l4);
  EXPECT_EQ(u.src_port, 67);
  auto m = net::parse_dhcp(u.payload, net::BootpOp::kReply);
  ASSERT_TRUE(m) << m.error().message();
  EXPECT_EQ(m->type, net::DhcpMessageType::kOffer);
  EXPECT_EQ(m->xid, 0x1234u);
  EXPECT_EQ(m->yiaddr, ip("10.0.1.5"));
  auto opt = [&](uint8_t code) {
    auto o = m->find(code);
    return o ? std::vector<uint8_t>(o->begin(), o->end()) : std::vector<uint8_t>{};
  };
  EXPECT_EQ(opt(net::dhcp_option::kSubnetMask), (std::vector<uint8_t>{255, 255, 255, 0}));
  EXPECT_EQ(opt(net::dhcp_option::kRouter), (std::vector<uint8_t>{10, 0, 1, 1}));
  EXPECT_EQ(opt(net::dhcp_option::kDns), (std::vector<uint8_t>{10, 0, 1, 2}));
  EXPECT_EQ(opt(net::dhcp_option::kMtu), (std::vector<uint8_t>{0x05, 0xdc}));
  const auto host = opt(net::dhcp_option::kHostname);
  EXPECT_EQ(std::string(host.begin(), host.end()), "ip-10-0-1-5");
  // Another client's MAC gets nothing.
  Guest other = ga_;
  other.mac = mac("02:00:00:00:00:99");
  sw_->transmit_one(*a_, testing::dhcp_discover(other, 7));
  EXPECT_EQ(a_->inbox().size(), 0u);
}

TEST_F(SwitchTest, DnsAnswersTheVpcAndRefusesTheRest) {
  auto ask = [&](uint16_t id, const std::string& name) {
    sw_->transmit_one(*a_, testing::udp(ga_, a_->ip(), ip("10.0.1.2"), 40000, 53, testing::dns_query(id, name)));
    auto r = take(*a_);
    auto f = net::parse_frame(r);
    EXPECT_TRUE(f && f->ip) << name;
    if (!f || !f->ip) return testing::DnsResult{};
    EXPECT_EQ(f->ip->src, ip("10.0.1.2"));
    return testing::parse_dns_response(std::get<net::UdpView>(f->l4).payload);
  };
  auto in = ask(7, "ip-10-0-1-6.test-1.compute.internal");
  EXPECT_EQ(in.id, 7);
  EXPECT_EQ(in.rcode, 0);
  ASSERT_EQ(in.a.size(), 1u);
  EXPECT_EQ(in.a[0], ip("10.0.1.6"));
  EXPECT_EQ(ask(8, "example.com").rcode, 5);  // REFUSED
  // Another VPC's name is outside this VPC's zone.
  EXPECT_EQ(ask(9, "ip-10-1-1-5.test-1.compute.internal").rcode, 3);  // NXDOMAIN
}

TEST_F(SwitchTest, GatewayAnswersPing) {
  sw_->transmit_one(*a_, testing::ping(ga_, ip("10.0.1.1"), 0x42, 3));
  auto r = take(*a_);
  auto f = net::parse_frame(r);
  ASSERT_TRUE(f && f->ip);
  EXPECT_EQ(f->ip->src, ip("10.0.1.1"));
  EXPECT_EQ(f->ip->dst, a_->ip());
  const auto& icmp = std::get<net::IcmpView>(f->l4);
  EXPECT_EQ(icmp.type, net::kIcmpEchoReply);
  EXPECT_EQ(icmp.echo_id(), 0x42);
  EXPECT_EQ(icmp.echo_seq(), 3);
  // A ping to a VPC address no ENI owns here goes nowhere.
  sw_->transmit_one(*a_, testing::ping(ga_, ip("10.0.1.77"), 1, 1));
  EXPECT_EQ(a_->counters().dropped(Drop::kNoRoute), 1u);
}

TEST_F(SwitchTest, UdpIsRoutedWhenTheReceiversGroupAllowsIt) {
  sw_->transmit_one(*a_, testing::udp(ga_, a_->ip(), b_->ip(), 40000, 5000, payload_));
  auto r = take(*b_);
  auto f = net::parse_frame(r);  // checksums verified: the TTL rewrite kept them right
  ASSERT_TRUE(f && f->ip) << (f ? "" : f.error().message());
  EXPECT_EQ(f->eth.src, b_->gateway_mac());
  EXPECT_EQ(f->eth.dst, b_->mac());
  EXPECT_EQ(f->ip->ttl, 63);
  EXPECT_EQ(f->ip->src, a_->ip());
  const auto& u = std::get<net::UdpView>(f->l4);
  EXPECT_EQ(std::vector<uint8_t>(u.payload.begin(), u.payload.end()), payload_);
  EXPECT_EQ(a_->counters().forwarded.load(), 1u);
  // The reply goes back although sg-web allows no inbound from port 5000: stateful.
  sw_->transmit_one(*b_, testing::udp(gb_, b_->ip(), a_->ip(), 5000, 40000, payload_));
  EXPECT_EQ(a_->inbox().size(), 1u);
  EXPECT_EQ(a_->counters().dropped(Drop::kSgIngress), 0u);
  // Unsolicited traffic to that port is refused.
  sw_->transmit_one(*b_, testing::udp(gb_, b_->ip(), a_->ip(), 5001, 40001, payload_));
  EXPECT_EQ(a_->counters().dropped(Drop::kSgIngress), 1u);
}

TEST_F(SwitchTest, UdpToAClosedPortIsDroppedAndFlowLoggedReject) {
  sw_->transmit_one(*a_, testing::udp(ga_, a_->ip(), b_->ip(), 40000, 6000, payload_));
  EXPECT_EQ(b_->inbox().size(), 0u);
  EXPECT_EQ(b_->counters().dropped(Drop::kSgIngress), 1u);
  clock_.advance(2s);
  std::string all;
  for (const auto& l : sw_->tick()) all += l + "\n";
  EXPECT_NE(all.find("2 123456789012 eni-b 10.0.1.5 10.0.1.6 40000 6000 17 1 33 "), std::string::npos) << all;
  EXPECT_NE(all.find("REJECT OK"), std::string::npos) << all;
  // The sender's egress accepted it.
  EXPECT_NE(all.find("eni-a 10.0.1.5 10.0.1.6 40000 6000 17 1 33"), std::string::npos) << all;
}

TEST_F(SwitchTest, SpoofedSourcesAreDropped) {
  sw_->transmit_one(*a_, testing::udp(ga_, ip("10.0.1.99"), b_->ip(), 40000, 5000, payload_));
  EXPECT_EQ(a_->counters().dropped(Drop::kSpoofedIp), 1u);
  sw_->transmit_one(*a_, testing::udp(ga_, a_->ip(), b_->ip(), 40000, 5000, payload_, mac("02:00:00:00:00:66")));
  EXPECT_EQ(a_->counters().dropped(Drop::kSpoofedMac), 1u);
  EXPECT_EQ(b_->inbox().size(), 0u);
  // With source-dest-check off, the same packet is routed.
  auto d = add("eni-d", "02:00:00:00:00:0d", "10.0.1.7", "subnet-a", "", {"sg-web"}, false);
  ASSERT_TRUE(d);
  Guest gd{d->mac(), d->ip(), d->gateway_mac()};
  sw_->transmit_one(*d, testing::udp(gd, ip("10.0.1.99"), b_->ip(), 40000, 5000, payload_));
  EXPECT_EQ(b_->inbox().size(), 1u);
}

TEST_F(SwitchTest, AnotherVpcIsUnreachable) {
  sw_->transmit_one(*a_, testing::udp(ga_, a_->ip(), c_->ip(), 40000, 5000, payload_));
  EXPECT_EQ(a_->counters().dropped(Drop::kOtherVpc), 1u);
  EXPECT_EQ(c_->inbox().size(), 0u);
  // TTL 1 cannot be routed; a receiver without a running queue gets nothing.
  sw_->transmit_one(*a_, testing::udp(ga_, a_->ip(), b_->ip(), 40000, 5000, payload_, {}, 1));
  EXPECT_EQ(a_->counters().dropped(Drop::kTtlExpired), 1u);
  b_->rx_ready = false;
  sw_->transmit_one(*a_, testing::udp(ga_, a_->ip(), b_->ip(), 40000, 5000, payload_));
  EXPECT_EQ(b_->counters().dropped(Drop::kRxNotReady), 1u);
}

TEST_F(SwitchTest, RuleChangesApplyToNewFlows) {
  GroupSpec open{"sg-web", std::vector<vpc::Rule>{vpc::Rule::udp(6000, 6000, *vpc::Cidr::parse("10.0.1.5/32"))}, {}};
  ASSERT_TRUE(sw_->set_group(open));
  sw_->transmit_one(*a_, testing::udp(ga_, a_->ip(), b_->ip(), 40000, 6000, payload_));
  EXPECT_EQ(b_->inbox().size(), 1u);
  sw_->transmit_one(*a_, testing::udp(ga_, a_->ip(), b_->ip(), 40002, 5000, payload_));
  EXPECT_EQ(b_->counters().dropped(Drop::kSgIngress), 1u);
  // A group referencing a group that does not exist is refused without changing anything.
  GroupSpec bad{"sg-web", std::vector<vpc::Rule>{vpc::Rule::all(vpc::GroupRef{"sg-nope"})}, {}};
  EXPECT_FALSE(sw_->set_group(bad));
}

TEST_F(SwitchTest, TheModelIsChecked) {
  EXPECT_EQ(add("eni-x", "02:00:00:00:01:01", "10.0.2.5", "subnet-a", "", {"sg-web"}), nullptr);  // outside
  EXPECT_EQ(add("eni-x", "02:00:00:00:01:01", "10.0.1.1", "subnet-a", "", {"sg-web"}), nullptr);  // the gateway
  EXPECT_EQ(add("eni-x", "02:00:00:00:01:01", "10.0.1.255", "subnet-a", "", {"sg-web"}), nullptr);  // broadcast
  EXPECT_EQ(add("eni-x", "02:00:00:00:00:0a", "10.0.1.9", "subnet-a", "", {"sg-web"}), nullptr);  // a's MAC
  EXPECT_EQ(add("eni-x", "02:00:00:00:01:01", "10.0.1.6", "subnet-a", "", {"sg-web"}), nullptr);  // b's address
  EXPECT_EQ(add("eni-x", "02:00:00:00:01:01", "10.0.1.9", "subnet-a", "", {"sg-nope"}), nullptr);  // no group
  EXPECT_EQ(add("eni-x", "02:00:00:00:01:01", "10.2.1.9", "10.2.1.0/24", "vpc-1", {"sg-web"}), nullptr);  // not in VPC
  EXPECT_FALSE(sw_->add_subnet({"subnet-b", "vpc-1", *net::Ipv4Prefix::parse("10.0.1.128/25")}));  // overlaps
  // Removed: no longer routed.
  ASSERT_TRUE(sw_->remove_eni("eni-b"));
  sw_->transmit_one(*a_, testing::udp(ga_, a_->ip(), ip("10.0.1.6"), 40000, 5000, payload_));
  EXPECT_EQ(a_->counters().dropped(Drop::kNoRoute), 1u);
}

TEST_F(SwitchTest, GarbageIsCountedNotDelivered) {
  const std::vector<uint8_t> runt = {1, 2, 3};
  sw_->transmit_one(*a_, runt);
  auto frame = testing::udp(ga_, a_->ip(), b_->ip(), 40000, 5000, payload_);
  frame[net::kEthernetHeaderLen + 10] ^= 0xff;  // IPv4 header checksum
  sw_->transmit_one(*a_, frame);
  EXPECT_EQ(a_->counters().dropped(Drop::kMalformed), 2u);
  EXPECT_EQ(a_->counters().parse_errors[static_cast<size_t>(net::NetErrc::kBadChecksum)].load(), 1u);
  EXPECT_EQ(a_->counters().tx_packets.load(), 2u);
  EXPECT_EQ(b_->inbox().size(), 0u);
}

// ---- The instance metadata service (169.254.169.254): the Switch's side of it.

// Records what the Switch injects; refuses when told to.
class FakeImds final : public MetadataSink {
 public:
  bool inject(uint32_t slot, std::span<const uint8_t> ipv4) override {
    got.emplace_back(slot, std::vector<uint8_t>(ipv4.begin(), ipv4.end()));
    return accept;
  }
  std::vector<std::pair<uint32_t, std::vector<uint8_t>>> got;
  bool accept = true;
};

// A request to IMDS as a guest sends it (the fake does not look inside: UDP will do).
std::vector<uint8_t> to_imds(const Guest& g, std::span<const uint8_t> payload) {
  return testing::udp(g, g.ip, kImdsAddress, 40000, 80, payload);
}

// A reply of the service: IPv4 from 169.254.169.254:80 to `to`, TTL 1.
std::vector<uint8_t> imds_reply(net::Ipv4Address to, std::span<const uint8_t> payload) {
  Guest any{net::MacAddress({2, 0, 0, 0, 0, 1}), to, net::MacAddress({2, 0, 0, 0, 0, 2})};
  auto f = testing::udp(any, kImdsAddress, to, 80, 40000, payload, {}, 1);
  return std::vector<uint8_t>(f.begin() + net::kEthernetHeaderLen, f.end());
}

TEST_F(SwitchTest, ImdsWithoutTheServiceOrWithoutMetadataIsDroppedAndCounted) {
  // No service: imds_unavailable, even with a slot.
  ASSERT_TRUE(sw_->set_imds_slot("eni-a", 3));
  sw_->transmit_one(*a_, to_imds(ga_, payload_));
  EXPECT_EQ(a_->counters().dropped(Drop::kImdsUnavailable), 1u);
  // A service, but the ENI has no slot (no metadata): imds_no_metadata.
  FakeImds fake;
  sw_->set_metadata_sink(&fake);
  sw_->transmit_one(*b_, to_imds(gb_, payload_));
  EXPECT_EQ(b_->counters().dropped(Drop::kImdsNoMetadata), 1u);
  ASSERT_TRUE(sw_->set_imds_slot("eni-a", std::nullopt));
  EXPECT_FALSE(a_->imds_slot().has_value());
  sw_->transmit_one(*a_, to_imds(ga_, payload_));
  EXPECT_EQ(a_->counters().dropped(Drop::kImdsNoMetadata), 1u);
  EXPECT_TRUE(fake.got.empty());
  EXPECT_EQ(a_->counters().imds_in.load() + b_->counters().imds_in.load(), 0u);
  // Nothing answered, nothing routed.
  EXPECT_EQ(a_->inbox().size() + b_->inbox().size(), 0u);
  EXPECT_STREQ(to_string(Drop::kImdsUnavailable), "imds_unavailable");
  EXPECT_STREQ(to_string(Drop::kImdsNoMetadata), "imds_no_metadata");
  EXPECT_STREQ(to_string(Drop::kImdsRefused), "imds_refused");
  sw_->set_metadata_sink(nullptr);
}

TEST_F(SwitchTest, ImdsPacketsGoToTheEnisSlotUnfilteredBySecurityGroups) {
  FakeImds fake;
  sw_->set_metadata_sink(&fake);
  // An ENI whose group lets nothing out: IMDS is not subject to security groups.
  ASSERT_TRUE(sw_->set_group({"sg-mute", std::vector<vpc::Rule>{}, std::vector<vpc::Rule>{}}));
  auto m = add("eni-m", "02:00:00:00:00:0d", "10.0.1.9", "subnet-a", "", {"sg-mute"});
  ASSERT_TRUE(m) << last_error_;
  const Guest gm{m->mac(), m->ip(), m->gateway_mac()};
  ASSERT_TRUE(sw_->set_imds_slot("eni-a", 7));
  ASSERT_TRUE(sw_->set_imds_slot("eni-m", 8));
  EXPECT_EQ(a_->imds_slot(), std::optional<uint32_t>(7));

  const auto fa = to_imds(ga_, payload_);
  sw_->transmit_one(*a_, fa);
  sw_->transmit_one(*m, to_imds(gm, payload_));
  ASSERT_EQ(fake.got.size(), 2u);
  EXPECT_EQ(fake.got[0].first, 7u);
  EXPECT_EQ(fake.got[0].second, std::vector<uint8_t>(fa.begin() + net::kEthernetHeaderLen, fa.end()));  // as sent
  EXPECT_EQ(fake.got[1].first, 8u);
  EXPECT_EQ(a_->counters().imds_in.load(), 1u);
  EXPECT_EQ(m->counters().imds_in.load(), 1u);
  EXPECT_EQ(m->counters().dropped(Drop::kSgEgress), 0u);
  // The same ENI to another VPC address: its group still says no.
  sw_->transmit_one(*m, testing::udp(gm, gm.ip, b_->ip(), 40000, 5000, payload_));
  EXPECT_EQ(m->counters().dropped(Drop::kSgEgress), 1u);

  // The anti-spoofing checks come first; the frame must be for the gateway's MAC.
  sw_->transmit_one(*a_, testing::udp(ga_, ip("10.0.1.77"), kImdsAddress, 40000, 80, payload_));
  EXPECT_EQ(a_->counters().dropped(Drop::kSpoofedIp), 1u);
  sw_->transmit_one(*a_, testing::udp(ga_, ga_.ip, kImdsAddress, 40000, 80, payload_, mac("02:00:00:00:09:09")));
  EXPECT_EQ(a_->counters().dropped(Drop::kSpoofedMac), 1u);
  Guest wrong_gw = ga_;
  wrong_gw.gateway_mac = mac("02:00:00:00:00:0b");
  sw_->transmit_one(*a_, to_imds(wrong_gw, payload_));
  EXPECT_EQ(a_->counters().dropped(Drop::kNotToGateway), 1u);
  EXPECT_EQ(fake.got.size(), 2u);

  // What the service refuses is counted at the ENI.
  fake.accept = false;
  sw_->transmit_one(*a_, fa);
  EXPECT_EQ(a_->counters().dropped(Drop::kImdsRefused), 1u);
  EXPECT_EQ(a_->counters().imds_in.load(), 1u);
  sw_->set_metadata_sink(nullptr);
}

TEST_F(SwitchTest, ImdsRepliesReachTheSlotsEniFromItsGateway) {
  ASSERT_TRUE(sw_->set_imds_slot("eni-a", 7));
  ASSERT_TRUE(sw_->set_imds_slot("eni-b", 9));
  const auto reply = imds_reply(a_->ip(), payload_);
  ASSERT_TRUE(sw_->deliver_metadata(7, reply));
  ASSERT_EQ(a_->inbox().size(), 1u);
  EXPECT_EQ(b_->inbox().size(), 0u);
  const auto r = take(*a_);
  auto f = net::parse_frame(r);
  ASSERT_TRUE(f && f->ip);
  EXPECT_EQ(f->eth.dst, a_->mac());
  EXPECT_EQ(f->eth.src, a_->gateway_mac());
  EXPECT_EQ(f->ip->src, kImdsAddress);
  EXPECT_EQ(f->ip->ttl, 1);  // untouched: the service's TTL
  EXPECT_EQ(std::vector<uint8_t>(r.begin() + net::kEthernetHeaderLen, r.end()), reply);
  EXPECT_EQ(a_->counters().imds_out.load(), 1u);
  // No ENI has slot 8; an oversized packet is not wrapped.
  EXPECT_FALSE(sw_->deliver_metadata(8, reply));
  EXPECT_FALSE(sw_->deliver_metadata(7, std::vector<uint8_t>(kMtu + 1, 0x45)));
  // A receive queue that does not run: counted.
  b_->rx_ready = false;
  EXPECT_FALSE(sw_->deliver_metadata(9, imds_reply(b_->ip(), payload_)));
  EXPECT_EQ(b_->counters().dropped(Drop::kRxNotReady), 1u);
  // A slot belongs to one ENI at a time.
  EXPECT_FALSE(sw_->set_imds_slot("eni-b", 7));
  EXPECT_FALSE(sw_->set_imds_slot("eni-nope", 11));
  // Moving an ENI to another slot frees the old one.
  ASSERT_TRUE(sw_->set_imds_slot("eni-b", 10));
  EXPECT_FALSE(sw_->deliver_metadata(9, reply));
  // Removed: its slot leads nowhere, and the Port (still held) forgets it.
  ASSERT_TRUE(sw_->remove_eni("eni-a"));
  EXPECT_FALSE(sw_->deliver_metadata(7, reply));
  EXPECT_FALSE(a_->imds_slot().has_value());
  EXPECT_EQ(a_->inbox().size(), 0u);
  // The slot is free for another ENI.
  EXPECT_TRUE(sw_->set_imds_slot("eni-b", 7));
}

TEST(CardOptionsImds, FlagConfigAndMetadata) {
  auto p = parse_args({"--control", "/tmp/c.sock"});
  ASSERT_TRUE(p) << p.error().message();
  EXPECT_TRUE(p->options.imds);  // default on
  p = parse_args({"--control", "/tmp/c.sock", "--imds", "off"});
  ASSERT_TRUE(p) << p.error().message();
  EXPECT_FALSE(p->options.imds);
  p = parse_args({"--control", "/tmp/c.sock", "--imds=on"});
  ASSERT_TRUE(p) << p.error().message();
  EXPECT_TRUE(p->options.imds);
  EXPECT_FALSE(parse_args({"--control", "/tmp/c.sock", "--imds", "maybe"}));
  CardOptions o;
  ASSERT_TRUE(apply_json(R"({"imds": false})", "test", &o));
  EXPECT_FALSE(o.imds);
  EXPECT_FALSE(apply_json(R"({"imds": "off"})", "test", &o));

  auto m = parse_metadata_json("m", nlohmann::json::parse(R"({"instance_id": "i-1", "user_data_b64": "aGk="})"));
  ASSERT_TRUE(m) << m.error().message();
  EXPECT_EQ(m->instance_id, "i-1");
  EXPECT_EQ(m->user_data, "hi");
  EXPECT_FALSE(m->http_tokens_required);  // absent: "optional"
  m = parse_metadata_json("m", nlohmann::json::parse(R"({"http_tokens": "required"})"));
  ASSERT_TRUE(m);
  EXPECT_TRUE(m->http_tokens_required);
  EXPECT_FALSE(parse_metadata_json("m", nlohmann::json::parse(R"("i-1")")));
  EXPECT_FALSE(parse_metadata_json("m", nlohmann::json::parse(R"({"color": "red"})")));
}

// One card per instance: two Switches stand for two card processes of one host, each
// serving one ENI with an inbox socket and knowing the other's as a neighbour. What
// one sends lands in the other's inbox socket; the test plays the receiving worker
// (recvmsg with the sender's credentials, then receive_neighbour).
class NeighbourTest : public ::testing::Test {
 protected:
  void SetUp() override {
    uid_ = static_cast<uint32_t>(::getuid());
    for (auto* sw : {&sa_, &sb_}) {
      *sw = std::make_unique<Switch>(clock_, SwitchConfig{"test-1", "123456789012", false, 60});
      ASSERT_TRUE((*sw)->add_vpc({"vpc-1", *net::Ipv4Prefix::parse("10.0.0.0/16")}));
      ASSERT_TRUE((*sw)->add_subnet({"subnet-a", "vpc-1", *net::Ipv4Prefix::parse("10.0.1.0/24")}));
      // B takes UDP 5000 from members of sg-a only: membership comes from neighbours too.
      ASSERT_TRUE((*sw)->set_group({"sg-a", {}, {}}));
      ASSERT_TRUE((*sw)->set_group(
          {"sg-b", std::vector<vpc::Rule>{vpc::Rule::udp(5000, 5000, vpc::GroupRef{"sg-a"})}, {}}));
    }
    auto a = spec("eni-a", "02:00:00:00:00:0a", "10.0.1.5", "sg-a");
    auto b = spec("eni-b", "02:00:00:00:00:0b", "10.0.1.6", "sg-b");
    auto pa = sa_->add_eni(a);
    auto pb = sb_->add_eni(b);
    ASSERT_TRUE(pa && pb);
    a_ = *pa;
    b_ = *pb;
    a_->rx_ready = b_->rx_ready = true;
    a.socket.clear();
    b.socket.clear();
    a.uid = b.uid = uid_;
    ASSERT_TRUE(sa_->add_neighbour(b)) << "B as A's neighbour";
    ASSERT_TRUE(sb_->add_neighbour(a)) << "A as B's neighbour";
    ga_ = {a_->mac(), a_->ip(), a_->gateway_mac()};
    gb_ = {b_->mac(), b_->ip(), b_->gateway_mac()};
  }
  EniSpec spec(const char* id, const char* m, const char* a, const char* group) {
    EniSpec e;
    e.id = id;
    e.socket = dir_ / (std::string(id) + ".sock");
    e.inbox = dir_ / (std::string(id) + ".inbox");
    e.mac = mac(m);
    e.ip = ip(a);
    e.subnet = "subnet-a";
    e.groups = {group};
    return e;
  }
  // The next datagram in `p`'s inbox socket and its sender's uid (nullopt: none).
  static std::optional<std::pair<std::vector<uint8_t>, uint32_t>> next(const Port& p) {
    std::vector<uint8_t> buf(2048);
    iovec iov{buf.data(), buf.size()};
    alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(ucred))];
    msghdr h{};
    h.msg_iov = &iov;
    h.msg_iovlen = 1;
    h.msg_control = ctl;
    h.msg_controllen = sizeof ctl;
    const ssize_t n = ::recvmsg(p.inbox_socket(), &h, MSG_DONTWAIT);
    if (n < 0) return std::nullopt;
    buf.resize(static_cast<size_t>(n));
    cmsghdr* c = CMSG_FIRSTHDR(&h);
    if (c == nullptr || c->cmsg_type != SCM_CREDENTIALS) return std::nullopt;
    ucred cr{};
    std::memcpy(&cr, CMSG_DATA(c), sizeof cr);
    return std::pair{buf, cr.uid};
  }
  TempDir dir_{"azote-neighbour"};
  uint32_t uid_ = 0;
  std::vector<uint8_t> payload_{'h', 'i'};
  rate_limit::FakeClock clock_{std::chrono::seconds(1000)};
  std::unique_ptr<Switch> sa_, sb_;
  std::shared_ptr<Port> a_, b_;
  Guest ga_, gb_;
};

TEST_F(NeighbourTest, FramesCrossCardsThroughTheReceiversInboxSocketAndItsGroups) {
  // A -> B UDP 5000: A's card routes it to B's inbox socket (egress of A only).
  sa_->transmit_one(*a_, testing::udp(ga_, ga_.ip, gb_.ip, 40000, 5000, payload_));
  auto got = next(*b_);
  ASSERT_TRUE(got) << "nothing in B's inbox socket";
  EXPECT_EQ(got->second, uid_);
  EXPECT_EQ(a_->counters().forwarded.load(), 1u);
  ASSERT_TRUE(sb_->receive_neighbour(*b_, got->second, got->first));
  auto f = take(*b_);
  auto pf = net::parse_frame(f);
  ASSERT_TRUE(pf && pf->ip);
  EXPECT_EQ(pf->eth.dst, b_->mac());
  EXPECT_EQ(pf->eth.src, b_->gateway_mac());
  EXPECT_EQ(pf->ip->ttl, kDefaultTtl - 1);
  EXPECT_EQ(b_->counters().neighbour_in.load(), 1u);

  // B answers: its card routes to A's inbox; A's ingress has no rule, but A's card
  // tracks the flow A started, so the reply passes there.
  sb_->transmit_one(*b_, testing::udp(gb_, gb_.ip, ga_.ip, 5000, 40000, payload_));
  auto reply = next(*a_);
  ASSERT_TRUE(reply);
  EXPECT_TRUE(sa_->receive_neighbour(*a_, reply->second, reply->first));
  EXPECT_EQ(a_->inbox().size(), 1u);

  // Port 6000: A's card sends it (B's groups are not its to apply); B's card refuses.
  sa_->transmit_one(*a_, testing::udp(ga_, ga_.ip, gb_.ip, 40000, 6000, payload_));
  got = next(*b_);
  ASSERT_TRUE(got);
  EXPECT_FALSE(sb_->receive_neighbour(*b_, got->second, got->first));
  EXPECT_EQ(b_->counters().dropped(Drop::kSgIngress), 1u);
}

TEST_F(NeighbourTest, OnlyTheUidServingTheSourceMaySendIt) {
  sa_->transmit_one(*a_, testing::udp(ga_, ga_.ip, gb_.ip, 40000, 5000, payload_));
  auto got = next(*b_);
  ASSERT_TRUE(got);
  // The same frame from another uid: another instance's card claiming A's address.
  EXPECT_FALSE(sb_->receive_neighbour(*b_, uid_ + 1, got->first));
  // A source no neighbour owns, B's own address, a frame for another address.
  auto spoofed = testing::udp(ga_, ip("10.0.1.77"), gb_.ip, 40000, 5000, payload_);
  EXPECT_FALSE(sb_->receive_neighbour(*b_, uid_, spoofed));
  auto own = testing::udp(ga_, gb_.ip, gb_.ip, 40000, 5000, payload_);
  EXPECT_FALSE(sb_->receive_neighbour(*b_, uid_, own));
  auto elsewhere = testing::udp(ga_, ga_.ip, ip("10.0.1.9"), 40000, 5000, payload_);
  EXPECT_FALSE(sb_->receive_neighbour(*b_, uid_, elsewhere));
  std::vector<uint8_t> junk(60, 0xee);
  EXPECT_FALSE(sb_->receive_neighbour(*b_, uid_, junk));
  EXPECT_EQ(b_->counters().dropped(Drop::kNeighbourRefused), 5u);
  EXPECT_EQ(b_->inbox().size(), 0u);
  // The right uid: delivered.
  EXPECT_TRUE(sb_->receive_neighbour(*b_, uid_, got->first));
}

TEST_F(NeighbourTest, AGoneNeighbourIsCountedAtTheSenderAndForgotten) {
  ASSERT_TRUE(sb_->remove_eni("eni-b"));  // B's card lets go of the ENI: its inbox file goes
  EXPECT_FALSE(std::filesystem::exists(dir_ / "eni-b.inbox"));
  sa_->transmit_one(*a_, testing::udp(ga_, ga_.ip, gb_.ip, 40000, 5000, payload_));
  EXPECT_EQ(a_->counters().dropped(Drop::kNeighbourUnreachable), 1u);
  EXPECT_FALSE(sa_->remove_eni("eni-b")) << "a neighbour is not removed as an ENI";
  ASSERT_TRUE(sa_->remove_neighbour("eni-b"));
  sa_->transmit_one(*a_, testing::udp(ga_, ga_.ip, gb_.ip, 40000, 5000, payload_));
  EXPECT_EQ(a_->counters().dropped(Drop::kNoRoute), 1u);
  EXPECT_FALSE(sa_->remove_neighbour("eni-a")) << "an ENI served here is not a neighbour";
  EXPECT_EQ(sa_->ports().size(), 1u);
  EXPECT_TRUE(sa_->neighbours().empty());
}

// The fabric relay: an instance's card hands frames for other hosts to the fabric
// process (a Switch with neighbours only, the fabric's keys and mappings) through its
// relay inbox; what arrives from other hosts goes from there to the instance card's
// inbox. Here the fabric is a recorder: what would be sealed and sent.
class Recorder final : public FabricSender {
 public:
  void send(std::span<const RemoteFrame> frames) override {
    for (const auto& f : frames) sent.push_back({f.host, f.vni, std::vector<uint8_t>(f.frame.begin(), f.frame.end())});
  }
  struct Sent {
    fabric::HostId host;
    uint32_t vni;
    std::vector<uint8_t> frame;
  };
  std::vector<Sent> sent;
};

class RelayTest : public NeighbourTest {
 protected:
  void SetUp() override {
    NeighbourTest::SetUp();
    if (HasFatalFailure()) return;
    fabric_ = std::make_unique<Switch>(clock_, SwitchConfig{"test-1", "123456789012", false, 60});
    ASSERT_TRUE(fabric_->add_vpc({"vpc-1", *net::Ipv4Prefix::parse("10.0.0.0/16")}));
    ASSERT_TRUE(fabric_->add_subnet({"subnet-a", "vpc-1", *net::Ipv4Prefix::parse("10.0.1.0/24")}));
    ASSERT_TRUE(fabric_->set_group({"sg-a", {}, {}}));
    fabric_->set_fabric(&wire_, 1);
    auto a = spec("eni-a", "02:00:00:00:00:0a", "10.0.1.5", "sg-a");
    a.socket.clear();
    a.uid = uid_;
    ASSERT_TRUE(fabric_->add_neighbour(a));
    ASSERT_TRUE(fabric_->add_mapping({"vpc-1", ip("10.0.1.77"), 9}));
    uint64_t dev = 0, ino = 0;
    auto s = bind_inbox(dir_ / "relay.inbox", &dev, &ino);
    ASSERT_TRUE(s) << s.error().message();
    relay_ = std::move(s).value();
    ASSERT_TRUE(sa_->set_relay(dir_ / "relay.inbox", uid_));
  }
  std::unique_ptr<Switch> fabric_;
  Recorder wire_;
  UniqueFd relay_;
  InboxBatch batch_;
};

TEST_F(RelayTest, FramesForOtherHostsGoThroughTheFabricProcess) {
  sa_->transmit_one(*a_, testing::udp(ga_, ga_.ip, ip("10.0.1.77"), 40000, 5000, payload_));
  ASSERT_EQ(batch_.receive(relay_.get()), 1u) << "nothing in the relay inbox";
  ASSERT_EQ(batch_.uid(0), uid_);
  const auto frame = batch_.frame(0);
  EXPECT_EQ(a_->counters().forwarded.load(), 1u);
  // The instance's card took one hop off; the fabric process does not again.
  EXPECT_EQ(net::parse_frame(frame)->ip->ttl, kDefaultTtl - 1);
  // Another uid cannot send as A; an unmapped destination has no route.
  EXPECT_EQ(fabric_->relay_out(uid_ + 1, frame), RelayVerdict::kRefused);
  EXPECT_TRUE(wire_.sent.empty());
  EXPECT_EQ(fabric_->relay_out(uid_, frame), RelayVerdict::kSent);
  ASSERT_EQ(wire_.sent.size(), 1u);
  EXPECT_EQ(wire_.sent[0].host, 9u);
  EXPECT_EQ(wire_.sent[0].vni, vni_for("vpc-1"));
  auto unmapped = testing::udp(ga_, ga_.ip, ip("10.0.1.78"), 40000, 5000, payload_);
  EXPECT_EQ(fabric_->relay_out(uid_, unmapped), RelayVerdict::kNoRoute);
  const auto counts = fabric_->relay_counts();
  EXPECT_EQ(counts[static_cast<size_t>(RelayVerdict::kSent)], 1u);
  EXPECT_EQ(counts[static_cast<size_t>(RelayVerdict::kRefused)], 1u);
  EXPECT_EQ(counts[static_cast<size_t>(RelayVerdict::kNoRoute)], 1u);
}

TEST_F(RelayTest, FramesFromOtherHostsReachTheInstancesCardFromTheRelayUidOnly) {
  // From host 9 (10.0.1.77 is mapped there) for A: the fabric process hands it to A's
  // inbox without applying A's groups; A's card applies them.
  Guest remote{mac("02:00:00:00:00:77"), ip("10.0.1.77"), a_->gateway_mac()};
  auto in = testing::udp(remote, remote.ip, ga_.ip, 5000, 40000, payload_);
  EXPECT_EQ(fabric_->receive_remote(9, vni_for("vpc-1"), in), RemoteVerdict::kDelivered);
  auto got = next(*a_);
  ASSERT_TRUE(got) << "nothing in A's inbox";
  // A has no ingress rule: only a reply to a flow A started passes. A starts one first.
  sa_->transmit_one(*a_, testing::udp(ga_, ga_.ip, remote.ip, 40000, 5000, payload_));
  ASSERT_EQ(batch_.receive(relay_.get()), 1u);
  EXPECT_FALSE(sa_->receive_neighbour(*a_, uid_ + 1, got->first)) << "a remote source from a uid that is not the relay's";
  EXPECT_EQ(a_->counters().dropped(Drop::kNeighbourRefused), 1u);
  EXPECT_TRUE(sa_->receive_neighbour(*a_, got->second, got->first));
  EXPECT_EQ(a_->inbox().size(), 1u);
  // The relay's uid cannot speak for an address of this host (B, a neighbour of A's card).
  auto as_b = testing::udp(gb_, gb_.ip, ga_.ip, 5000, 40000, payload_);
  ASSERT_TRUE(sa_->set_relay(dir_ / "relay.inbox", uid_ + 7));
  (void)sa_->receive_neighbour(*a_, uid_, as_b);  // B's card's uid: taken (then A's groups refuse it)
  EXPECT_EQ(a_->counters().dropped(Drop::kNeighbourRefused), 1u);
  EXPECT_EQ(a_->counters().dropped(Drop::kSgIngress), 1u);
  EXPECT_FALSE(sa_->receive_neighbour(*a_, uid_ + 7, as_b)) << "the relay spoke for a local address";
  EXPECT_EQ(a_->counters().dropped(Drop::kNeighbourRefused), 2u);
  sa_->transmit_one(*a_, testing::udp(ga_, ga_.ip, remote.ip, 40000, 5000, payload_));  // the flow again
  EXPECT_FALSE(sa_->receive_neighbour(*a_, uid_, got->first)) << "the old relay uid still brings remote sources";
  EXPECT_EQ(a_->counters().dropped(Drop::kNeighbourRefused), 3u);
  EXPECT_TRUE(sa_->receive_neighbour(*a_, uid_ + 7, got->first));
}

}  // namespace
}  // namespace azote::card_net
