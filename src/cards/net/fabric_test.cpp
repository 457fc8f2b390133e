// The fabric path of the card without sockets: two Switches (hosts 1 and 2) joined by a
// loopback FabricSender that seals with lib/fabric on one side and opens on the other,
// as FabricLink does around its UDP socket. Egress groups at the sender, ingress groups
// (stateful) at the receiver, MAC/TTL rewrite, the inner source bound to the sending
// host, mappings, and what a failing fabric counts.
#include <gtest/gtest.h>

#include "cards/net/switch.hpp"
#include "cards/net/test_frames.hpp"
#include "fabric/session.hpp"
#include "net/checksum.hpp"
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

// Seals with `out`, opens with `in`, delivers to `to`: a wire between two cards.
class Wire final : public FabricSender {
 public:
  Wire(fabric::Session& out, fabric::Session& in, Switch& to) : out_(out), in_(in), to_(to) {}
  void send(std::span<const RemoteFrame> frames) override {
    for (const auto& f : frames) {
      std::vector<uint8_t> d(f.frame.size() + fabric::kOverhead);
      auto n = out_.seal(f.host, f.vni, f.frame, d);
      if (!n) {
        f.from->counters().drop(Drop::kFabricError);
        continue;
      }
      d.resize(*n);
      sent.push_back(d);
      std::vector<uint8_t> plain(2048);
      auto o = in_.open(d, plain);
      if (!o) {
        refused.push_back(o.error().code);
        continue;
      }
      verdicts.push_back(to_.receive_remote(o->from, o->vni, std::span(plain.data(), o->len)));
    }
  }
  std::vector<std::vector<uint8_t>> sent;
  std::vector<fabric::FabricErrc> refused;
  std::vector<RemoteVerdict> verdicts;

 private:
  fabric::Session& out_;
  fabric::Session& in_;
  Switch& to_;
};

class FabricPath : public ::testing::Test {
 protected:
  void SetUp() override {
    for (Switch* sw : {&h1_, &h2_}) {
      ASSERT_TRUE(sw->add_vpc({"vpc-1", *net::Ipv4Prefix::parse("10.0.0.0/16"), 100}));
      ASSERT_TRUE(sw->add_vpc({"vpc-2", *net::Ipv4Prefix::parse("10.0.0.0/16"), 200}));
      ASSERT_TRUE(sw->add_subnet({"subnet-a", "vpc-1", *net::Ipv4Prefix::parse("10.0.1.0/24")}));
    }
    // Host 1: eni-a, outbound anything, nothing inbound. Host 2: eni-b, UDP 5000 and ICMP in.
    ASSERT_TRUE(h1_.set_group({"sg-a", std::vector<vpc::Rule>{}, {}}));
    ASSERT_TRUE(h2_.set_group({"sg-b",
                               std::vector<vpc::Rule>{vpc::Rule::udp(5000, 5000, *vpc::Cidr::parse("10.0.0.0/16"))},
                               {}}));
    a_ = add(h1_, "eni-a", "02:00:00:00:00:0a", "10.0.1.5", "sg-a");
    b_ = add(h2_, "eni-b", "02:00:00:00:00:0b", "10.0.1.6", "sg-b");
    ASSERT_TRUE(a_ && b_);
    const fabric::PeerKey k{1, fabric::Cipher::kAes256Gcm, secret_};
    ASSERT_TRUE(s1_.set_peer(2, k));
    ASSERT_TRUE(s2_.set_peer(1, k));
    h1_.set_fabric(&w12_, 1);
    h2_.set_fabric(&w21_, 2);
    ASSERT_TRUE(h1_.add_mapping({"vpc-1", ip("10.0.1.6"), 2}));
    ASSERT_TRUE(h2_.add_mapping({"vpc-1", ip("10.0.1.5"), 1}));
    ga_ = {a_->mac(), a_->ip(), a_->gateway_mac()};
    gb_ = {b_->mac(), b_->ip(), b_->gateway_mac()};
  }
  void TearDown() override {
    h1_.set_fabric(nullptr, 0);
    h2_.set_fabric(nullptr, 0);
  }
  std::shared_ptr<Port> add(Switch& sw, const char* id, const char* m, const char* a, const char* group) {
    EniSpec e;
    e.id = id;
    e.socket = std::string("/tmp/") + id;
    e.mac = mac(m);
    e.ip = ip(a);
    e.subnet = "subnet-a";
    e.groups = {group};
    auto p = sw.add_eni(e);
    if (!p) {
      ADD_FAILURE() << p.error().message();
      return nullptr;
    }
    (*p)->rx_ready = true;
    return *p;
  }
  fabric::Secret secret_{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
                         17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};
  rate_limit::FakeClock clock_{1000s};
  Switch h1_{clock_, SwitchConfig{"test-1", "123456789012", true, 1}};
  Switch h2_{clock_, SwitchConfig{"test-1", "123456789012", true, 1}};
  fabric::Session s1_{1, clock_}, s2_{2, clock_};
  Wire w12_{s1_, s2_, h2_}, w21_{s2_, s1_, h1_};
  std::shared_ptr<Port> a_, b_;
  Guest ga_, gb_;
  std::vector<uint8_t> hello_{'h', 'e', 'l', 'l', 'o'};
};

TEST_F(FabricPath, UdpCrossesHostsEncryptedAndRewritten) {
  h1_.transmit_one(*a_, testing::udp(ga_, ga_.ip, gb_.ip, 40000, 5000, hello_));
  ASSERT_EQ(w12_.sent.size(), 1u);
  ASSERT_EQ(w12_.verdicts.size(), 1u);
  EXPECT_EQ(w12_.verdicts[0], RemoteVerdict::kDelivered);
  // On the wire: Geneve with the VPC's VNI, and not the payload in clear.
  const auto& d = w12_.sent[0];
  auto g = fabric::parse_geneve(d);
  ASSERT_TRUE(g);
  EXPECT_EQ(g->vni, 100u);
  EXPECT_EQ(std::search(d.begin(), d.end(), hello_.begin(), hello_.end()), d.end());
  // At B: from B's gateway to B, TTL 63, checksums valid.
  auto got = take(*b_);
  auto f = net::parse_frame(got);
  ASSERT_TRUE(f && f->ip) << "nothing delivered";
  EXPECT_EQ(f->eth.dst, b_->mac());
  EXPECT_EQ(f->eth.src, b_->gateway_mac());
  EXPECT_EQ(f->ip->src, ga_.ip);
  EXPECT_EQ(f->ip->ttl, 63);
  EXPECT_EQ(std::get<net::UdpView>(f->l4).dst_port, 5000);
  EXPECT_EQ(a_->counters().dropped(Drop::kNoRoute), 0u);
}

TEST_F(FabricPath, IngressGroupsOfTheReceiverAndStatefulReplies) {
  // Port 6000 is not open at B: refused by B's card, counted at B.
  h1_.transmit_one(*a_, testing::udp(ga_, ga_.ip, gb_.ip, 40000, 6000, hello_));
  ASSERT_EQ(w12_.verdicts.size(), 1u);
  EXPECT_EQ(w12_.verdicts[0], RemoteVerdict::kSgIngress);
  EXPECT_EQ(b_->counters().dropped(Drop::kSgIngress), 1u);
  EXPECT_EQ(b_->inbox().size(), 0u);
  // A -> B :5000, then B's reply: A has no inbound rule, but the flow is A's own.
  h1_.transmit_one(*a_, testing::udp(ga_, ga_.ip, gb_.ip, 40000, 5000, hello_));
  ASSERT_FALSE(take(*b_).empty());
  h2_.transmit_one(*b_, testing::udp(gb_, gb_.ip, ga_.ip, 5000, 40000, hello_));
  ASSERT_EQ(w21_.verdicts.size(), 1u);
  EXPECT_EQ(w21_.verdicts[0], RemoteVerdict::kDelivered);
  auto reply = net::parse_frame(take(*a_));
  ASSERT_TRUE(reply && reply->ip);
  EXPECT_EQ(reply->eth.dst, a_->mac());
  // An unsolicited one from B to A is refused by A's groups.
  h2_.transmit_one(*b_, testing::udp(gb_, gb_.ip, ga_.ip, 5001, 40001, hello_));
  EXPECT_EQ(w21_.verdicts.back(), RemoteVerdict::kSgIngress);
  EXPECT_EQ(a_->counters().dropped(Drop::kSgIngress), 1u);
  // Rule change at B cuts new flows and restoring brings them back.
  ASSERT_TRUE(h2_.set_group({"sg-b", std::vector<vpc::Rule>{}, {}}));
  h1_.transmit_one(*a_, testing::udp(ga_, ga_.ip, gb_.ip, 40002, 5000, hello_));
  EXPECT_EQ(w12_.verdicts.back(), RemoteVerdict::kSgIngress);
  ASSERT_TRUE(h2_.set_group(
      {"sg-b", std::vector<vpc::Rule>{vpc::Rule::udp(5000, 5000, *vpc::Cidr::parse("10.0.0.0/16"))}, {}}));
  h1_.transmit_one(*a_, testing::udp(ga_, ga_.ip, gb_.ip, 40003, 5000, hello_));
  EXPECT_EQ(w12_.verdicts.back(), RemoteVerdict::kDelivered);
}

TEST_F(FabricPath, EgressGroupsOfTheSender) {
  ASSERT_TRUE(h1_.set_group({"sg-a", std::vector<vpc::Rule>{}, std::vector<vpc::Rule>{}}));
  h1_.transmit_one(*a_, testing::udp(ga_, ga_.ip, gb_.ip, 40000, 5000, hello_));
  EXPECT_TRUE(w12_.sent.empty());
  EXPECT_EQ(a_->counters().dropped(Drop::kSgEgress), 1u);
  // The flow log has the REJECT.
  clock_.advance(2s);
  std::string lines;
  for (const auto& l : h1_.tick()) lines += l + "\n";
  EXPECT_NE(lines.find("eni-a 10.0.1.5 10.0.1.6 40000 5000 17 1"), std::string::npos) << lines;
  EXPECT_NE(lines.find("REJECT"), std::string::npos) << lines;
}

TEST_F(FabricPath, MappingsDecideAndAreValidated) {
  // 10.0.1.7: no ENI, no mapping.
  h1_.transmit_one(*a_, testing::udp(ga_, ga_.ip, ip("10.0.1.7"), 40000, 5000, hello_));
  EXPECT_EQ(a_->counters().dropped(Drop::kNoRoute), 1u);
  ASSERT_TRUE(h1_.remove_mapping("vpc-1", ip("10.0.1.6")));
  h1_.transmit_one(*a_, testing::udp(ga_, ga_.ip, gb_.ip, 40000, 5000, hello_));
  EXPECT_EQ(a_->counters().dropped(Drop::kNoRoute), 2u);
  EXPECT_TRUE(w12_.sent.empty());
  EXPECT_FALSE(h1_.remove_mapping("vpc-1", ip("10.0.1.6")));
  EXPECT_FALSE(h1_.add_mapping({"vpc-9", ip("10.0.1.6"), 2}));  // no such VPC
  auto outside = h1_.add_mapping({"vpc-1", ip("10.9.1.6"), 2});
  ASSERT_FALSE(outside);
  EXPECT_NE(outside.error().message().find("10.9.1.6"), std::string::npos);
  EXPECT_FALSE(h1_.add_mapping({"vpc-1", ip("10.0.1.6"), 1}));  // this host
  ASSERT_TRUE(h1_.add_mapping({"vpc-1", ip("10.0.1.6"), 2}));
  ASSERT_EQ(h1_.mappings().size(), 1u);
  EXPECT_TRUE(h1_.maps_to(2));
  // A TTL of 1 dies at the sending card.
  h1_.transmit_one(*a_, testing::udp(ga_, ga_.ip, gb_.ip, 40000, 5000, hello_, {}, 1));
  EXPECT_EQ(a_->counters().dropped(Drop::kTtlExpired), 1u);
  // Without a key for the host the frame is counted as a fabric error at the sender.
  ASSERT_TRUE(s1_.remove_peer(2));
  h1_.transmit_one(*a_, testing::udp(ga_, ga_.ip, gb_.ip, 40000, 5000, hello_));
  EXPECT_EQ(a_->counters().dropped(Drop::kFabricError), 1u);
  // Two VPCs with one VNI are refused.
  EXPECT_FALSE(h1_.add_vpc({"vpc-3", *net::Ipv4Prefix::parse("10.3.0.0/16"), 100}));
}

TEST_F(FabricPath, ReceiveChecksWhatTheSenderClaims) {
  auto frame = testing::udp(ga_, ga_.ip, gb_.ip, 40000, 5000, hello_);
  // A source address mapped to host 1 is refused from host 3.
  EXPECT_EQ(h2_.receive_remote(3, 100, frame), RemoteVerdict::kSpoofedSource);
  // An address of the VPC not mapped anywhere.
  auto other = testing::udp(ga_, ip("10.0.1.9"), gb_.ip, 40000, 5000, hello_);
  EXPECT_EQ(h2_.receive_remote(1, 100, other), RemoteVerdict::kSpoofedSource);
  EXPECT_EQ(h2_.receive_remote(1, 999, frame), RemoteVerdict::kUnknownVni);
  // vpc-2 shares the CIDR but has its own VNI: no ENI of vpc-2 owns 10.0.1.6.
  EXPECT_EQ(h2_.receive_remote(1, 200, frame), RemoteVerdict::kNoEni);
  auto nowhere = testing::udp(ga_, ga_.ip, ip("10.0.1.8"), 40000, 5000, hello_);
  EXPECT_EQ(h2_.receive_remote(1, 100, nowhere), RemoteVerdict::kNoEni);
  std::vector<uint8_t> junk(60, 0xee);
  EXPECT_EQ(h2_.receive_remote(1, 100, junk), RemoteVerdict::kMalformed);
  auto arp = testing::arp_request(ga_, gb_.ip);
  EXPECT_EQ(h2_.receive_remote(1, 100, arp), RemoteVerdict::kMalformed);
  auto ttl0 = testing::udp(ga_, ga_.ip, gb_.ip, 40000, 5000, hello_, {}, 0);
  EXPECT_EQ(h2_.receive_remote(1, 100, ttl0), RemoteVerdict::kTtlExpired);
  b_->rx_ready = false;
  EXPECT_EQ(h2_.receive_remote(1, 100, frame), RemoteVerdict::kRxNotReady);
  b_->rx_ready = true;
  EXPECT_EQ(h2_.receive_remote(1, 100, frame), RemoteVerdict::kDelivered);
  EXPECT_EQ(b_->inbox().size(), 1u);
}

TEST_F(FabricPath, WrongKeyAndRotation) {
  // Host 2 rotates to a key host 1 does not have: refused, nothing delivered.
  fabric::Secret other = secret_;
  other[0] ^= 0xff;
  ASSERT_TRUE(s2_.rotate(1, {2, fabric::Cipher::kAes256Gcm, other}));
  ASSERT_TRUE(s1_.rotate(2, {2, fabric::Cipher::kAes256Gcm, secret_}));
  h1_.transmit_one(*a_, testing::udp(ga_, ga_.ip, gb_.ip, 40000, 5000, hello_));
  ASSERT_EQ(w12_.refused.size(), 1u);
  EXPECT_EQ(w12_.refused[0], fabric::FabricErrc::kAuth);
  EXPECT_EQ(b_->inbox().size(), 0u);
  // Both on key 3 with the same secret: traffic flows again.
  ASSERT_TRUE(s1_.rotate(2, {3, fabric::Cipher::kAes256Gcm, secret_}));
  ASSERT_TRUE(s2_.rotate(1, {3, fabric::Cipher::kAes256Gcm, secret_}));
  h1_.transmit_one(*a_, testing::udp(ga_, ga_.ip, gb_.ip, 40001, 5000, hello_));
  EXPECT_EQ(w12_.verdicts.back(), RemoteVerdict::kDelivered);
  EXPECT_EQ(b_->inbox().size(), 1u);
}

}  // namespace
}  // namespace azote::card_net
