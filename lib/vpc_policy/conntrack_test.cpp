// Stateful behaviour: replies of tracked flows, timeouts on a fake clock, TCP state,
// rule changes, ICMP, untracked flows, the bounded table.
#include "vpc_policy/conntrack.hpp"

#include <gtest/gtest.h>

#include "vpc_policy/test_util.hpp"

namespace azote::vpc {
namespace {

using namespace test;

const uint32_t kMe = 0x0a00000a;       // 10.0.0.10
const uint32_t kPeer = 0xcb007105;     // 203.0.113.5
const uint32_t kClient = 0xc6336407;   // 198.51.100.7

TEST(Conntrack, RepliesPassUnsolicitedInboundDoesNot) {
  Fixture f;
  const EniHandle eni = f.add_eni("eni-1", {"sg-1"});  // default: outbound all, no inbound
  const FlowKey syn = FlowKey::tcp(kMe, 40000, kPeer, 443);
  EXPECT_EQ(f.send(eni, kOut, syn, tcp::kSyn).reason, Reason::kNewFlow);
  EXPECT_EQ(f.send(eni, kIn, syn.reversed(), tcp::kSyn | tcp::kAck).reason, Reason::kTracked);
  EXPECT_EQ(f.send(eni, kOut, syn, tcp::kAck).reason, Reason::kTracked);
  EXPECT_EQ(f.engine.conntrack_state(eni, kIn, syn.reversed()), CtState::kTcpEstablished);
  EXPECT_TRUE(f.passes(eni, kIn, syn.reversed(), tcp::kAck | tcp::kPsh));
  // Same peer, other ports: not part of the flow.
  EXPECT_EQ(f.send(eni, kIn, FlowKey::tcp(kPeer, 443, kMe, 40001), tcp::kAck).reason,
            Reason::kNoRule);
  EXPECT_FALSE(f.passes(eni, kIn, FlowKey::tcp(kPeer, 444, kMe, 40000), tcp::kAck));
  // A packet claiming the instance's side from outside matches nothing.
  EXPECT_FALSE(f.passes(eni, kIn, syn, tcp::kAck));
  // Unsolicited inbound UDP and ping.
  EXPECT_FALSE(f.passes(eni, kIn, FlowKey::udp(kPeer, 53, kMe, 40000)));
  EXPECT_FALSE(f.passes(eni, kIn, FlowKey::icmp(kPeer, kMe, 8, 0, 7)));

  // UDP and ICMP echo replies.
  const FlowKey dns = FlowKey::udp(kMe, 33333, kPeer, 53);
  EXPECT_TRUE(f.passes(eni, kOut, dns));
  EXPECT_EQ(f.send(eni, kIn, dns.reversed()).reason, Reason::kTracked);
  EXPECT_TRUE(f.passes(eni, kOut, FlowKey::icmp(kMe, kPeer, 8, 0, 77)));
  EXPECT_EQ(f.send(eni, kIn, FlowKey::icmp(kPeer, kMe, 0, 0, 77)).reason, Reason::kTracked);
  EXPECT_FALSE(f.passes(eni, kIn, FlowKey::icmp(kPeer, kMe, 0, 0, 78)));  // other identifier
  // The peer cannot turn our ping exchange into its own echo request to us.
  EXPECT_FALSE(f.passes(eni, kIn, FlowKey::icmp(kPeer, kMe, 8, 0, 77)));
  // Other protocols: addresses and protocol number only.
  EXPECT_TRUE(f.passes(eni, kOut, FlowKey::other(47, kMe, kPeer)));
  EXPECT_TRUE(f.passes(eni, kIn, FlowKey::other(47, kPeer, kMe)));
  EXPECT_FALSE(f.passes(eni, kIn, FlowKey::other(50, kPeer, kMe)));
}

TEST(Conntrack, InboundFlowRepliesPassWithoutOutboundRules) {
  Fixture f;
  const EniHandle eni = f.add_eni("eni-1", {"sg-1"});
  f.revoke("sg-1", kOut, Rule::all(cidr("0.0.0.0/0")));
  f.allow("sg-1", kIn, Rule::tcp(22, 22, cidr("198.51.100.0/24")));
  const FlowKey ssh = FlowKey::tcp(kClient, 50000, kMe, 22);
  EXPECT_FALSE(f.passes(eni, kOut, ssh.reversed(), tcp::kSyn | tcp::kAck));  // not yet
  EXPECT_TRUE(f.passes(eni, kIn, ssh, tcp::kSyn));
  EXPECT_EQ(f.send(eni, kOut, ssh.reversed(), tcp::kSyn | tcp::kAck).reason, Reason::kTracked);
  // The instance still cannot open anything itself.
  EXPECT_FALSE(f.passes(eni, kOut, FlowKey::tcp(kMe, 22, kClient, 50001), tcp::kSyn));
}

// Opens a flow of `k` outbound and answers it once, as most flows start.
class Timeouts : public ::testing::Test, public Fixture {
 protected:
  void SetUp() override { eni = add_eni("eni-1", {"sg-1"}); }
  bool reply_passes_after(const FlowKey& k, std::chrono::nanoseconds wait) {
    clock.advance(wait);
    return passes(eni, kIn, k.reversed(), tcp::kAck);
  }
  EniHandle eni;
};

TEST_F(Timeouts, UdpThirtySecondsThenStreamOneEighty) {
  const FlowKey k = FlowKey::udp(kMe, 5000, kPeer, 5001);
  ASSERT_TRUE(passes(eni, kOut, k));
  EXPECT_EQ(engine.conntrack_state(eni, kOut, k), CtState::kUdp);
  EXPECT_TRUE(reply_passes_after(k, seconds(29)));  // a reply re-arms the 30 s
  EXPECT_EQ(engine.conntrack_state(eni, kOut, k), CtState::kUdp);  // one request-response
  EXPECT_TRUE(reply_passes_after(k, seconds(29)));
  clock.advance(seconds(30));
  EXPECT_FALSE(passes(eni, kIn, k.reversed()));
  EXPECT_EQ(engine.conntrack_state(eni, kOut, k), std::nullopt);

  // A second request after a reply makes it a stream: 180 s.
  ASSERT_TRUE(passes(eni, kOut, k));
  ASSERT_TRUE(passes(eni, kIn, k.reversed()));
  ASSERT_TRUE(passes(eni, kOut, k));
  EXPECT_EQ(engine.conntrack_state(eni, kOut, k), CtState::kUdpStream);
  EXPECT_TRUE(reply_passes_after(k, seconds(179)));
  EXPECT_FALSE(reply_passes_after(k, seconds(180)));
}

TEST_F(Timeouts, PacketsWithinASecondStampWithoutRequeueingExpiryStaysExact) {
  ConntrackConfig one;
  one.max_entries = 1;
  const EniHandle small = add_eni("eni-small", {"sg-1"}, one);
  const FlowKey a = FlowKey::udp(kMe, 1, kPeer, 2);
  const FlowKey b = FlowKey::udp(kMe, 3, kPeer, 4);
  ASSERT_TRUE(passes(small, kOut, a));
  clock.advance(std::chrono::milliseconds(500));
  ASSERT_TRUE(passes(small, kIn, a.reversed()));  // stamps the entry, does not requeue it
  EXPECT_EQ(send(small, kOut, b).reason, Reason::kTableFull);
  clock.advance(std::chrono::milliseconds(29999));
  EXPECT_TRUE(engine.conntrack_state(small, kOut, a).has_value());  // 30 s after the stamp
  EXPECT_EQ(send(small, kOut, b).reason, Reason::kTableFull);
  clock.advance(std::chrono::milliseconds(1));
  EXPECT_FALSE(engine.conntrack_state(small, kOut, a).has_value());
  EXPECT_EQ(send(small, kOut, b).reason, Reason::kNewFlow);  // reclaimed on time
}

TEST_F(Timeouts, IcmpThirtySeconds) {
  const FlowKey ping = FlowKey::icmp(kMe, kPeer, 8, 0, 4242);
  ASSERT_TRUE(passes(eni, kOut, ping));
  clock.advance(seconds(29));
  EXPECT_TRUE(passes(eni, kIn, FlowKey::icmp(kPeer, kMe, 0, 0, 4242)));
  clock.advance(seconds(30));
  EXPECT_FALSE(passes(eni, kIn, FlowKey::icmp(kPeer, kMe, 0, 0, 4242)));
}

TEST_F(Timeouts, OtherProtocolsSixHundredSeconds) {
  const FlowKey gre = FlowKey::other(47, kMe, kPeer);
  ASSERT_TRUE(passes(eni, kOut, gre));
  clock.advance(seconds(599));
  EXPECT_TRUE(passes(eni, kIn, gre.reversed()));
  clock.advance(seconds(600));
  EXPECT_FALSE(passes(eni, kIn, gre.reversed()));
}

TEST_F(Timeouts, TcpHalfOpenEstablishedAndConfigurable) {
  const FlowKey a = FlowKey::tcp(kMe, 40000, kPeer, 80);
  ASSERT_TRUE(passes(eni, kOut, a, tcp::kSyn));
  EXPECT_EQ(engine.conntrack_state(eni, kOut, a), CtState::kTcpSynSent);
  clock.advance(seconds(60));  // half-open: 60 s
  EXPECT_FALSE(passes(eni, kIn, a.reversed(), tcp::kSyn | tcp::kAck));

  const FlowKey b = FlowKey::tcp(kMe, 40001, kPeer, 80);
  ASSERT_TRUE(passes(eni, kOut, b, tcp::kSyn));
  ASSERT_TRUE(passes(eni, kIn, b.reversed(), tcp::kSyn | tcp::kAck));
  EXPECT_EQ(engine.conntrack_state(eni, kOut, b), CtState::kTcpSynReceived);
  ASSERT_TRUE(passes(eni, kOut, b, tcp::kAck));
  EXPECT_EQ(engine.conntrack_state(eni, kOut, b), CtState::kTcpEstablished);
  // Established: EC2's 5 days.
  EXPECT_TRUE(reply_passes_after(b, seconds(432000 - 1)));
  EXPECT_FALSE(reply_passes_after(b, seconds(432000)));

  // An interface configured like EC2's TcpEstablishedTimeout=350.
  ConntrackConfig ct;
  ct.timeouts.tcp_established = seconds(350);
  const EniHandle eni2 = add_eni("eni-2", {"sg-1"}, ct);
  ASSERT_TRUE(passes(eni2, kOut, b, tcp::kAck));  // picked up mid-stream: established
  EXPECT_EQ(engine.conntrack_state(eni2, kOut, b), CtState::kTcpEstablished);
  clock.advance(seconds(349));
  EXPECT_TRUE(passes(eni2, kIn, b.reversed(), tcp::kAck));
  clock.advance(seconds(350));
  EXPECT_FALSE(passes(eni2, kIn, b.reversed(), tcp::kAck));
}

TEST_F(Timeouts, TcpCloseShortensTheTimeout) {
  const FlowKey k = FlowKey::tcp(kMe, 40000, kPeer, 80);
  ASSERT_TRUE(passes(eni, kOut, k, tcp::kSyn));
  ASSERT_TRUE(passes(eni, kIn, k.reversed(), tcp::kSyn | tcp::kAck));
  ASSERT_TRUE(passes(eni, kOut, k, tcp::kAck));
  // One side's FIN: closing, 120 s.
  ASSERT_TRUE(passes(eni, kOut, k, tcp::kFin | tcp::kAck));
  EXPECT_EQ(engine.conntrack_state(eni, kOut, k), CtState::kTcpClosing);
  EXPECT_TRUE(reply_passes_after(k, seconds(119)));  // half-closed: peer still sending
  // The other side's FIN: closed, 10 s.
  ASSERT_TRUE(passes(eni, kIn, k.reversed(), tcp::kFin | tcp::kAck));
  EXPECT_EQ(engine.conntrack_state(eni, kOut, k), CtState::kTcpClosed);
  clock.advance(seconds(9));
  EXPECT_TRUE(passes(eni, kOut, k, tcp::kAck));  // the last ACK
  clock.advance(seconds(10));
  EXPECT_FALSE(passes(eni, kIn, k.reversed(), tcp::kAck));

  // RST closes at once (10 s), from either side.
  const FlowKey r = FlowKey::tcp(kMe, 40002, kPeer, 80);
  ASSERT_TRUE(passes(eni, kOut, r, tcp::kAck));
  ASSERT_TRUE(passes(eni, kIn, r.reversed(), tcp::kRst));
  EXPECT_EQ(engine.conntrack_state(eni, kOut, r), CtState::kTcpClosed);
  EXPECT_FALSE(reply_passes_after(r, seconds(10)));
}

TEST_F(Timeouts, SynOnClosedEntryIsJudgedAfresh) {
  allow("sg-1", kIn, Rule::tcp(80, 80, cidr("198.51.100.0/24")));
  const FlowKey k = FlowKey::tcp(kClient, 50000, kMe, 80);
  ASSERT_TRUE(passes(eni, kIn, k, tcp::kSyn));
  ASSERT_TRUE(passes(eni, kIn, k, tcp::kRst));
  EXPECT_EQ(engine.conntrack_state(eni, kIn, k), CtState::kTcpClosed);
  revoke("sg-1", kIn, Rule::tcp(80, 80, cidr("198.51.100.0/24")));
  // Reusing the ports for a new connection: the (now missing) rule decides.
  EXPECT_EQ(send(eni, kIn, k, tcp::kSyn).reason, Reason::kNoRule);
}

TEST(Conntrack, RuleChangeAppliesToNewFlowsTrackedOnesContinue) {
  Fixture f;
  const EniHandle eni = f.add_eni("eni-1", {"sg-1"});
  const Rule ssh = Rule::tcp(22, 22, cidr("198.51.100.0/24"));
  f.allow("sg-1", kIn, ssh);
  const FlowKey s1 = FlowKey::tcp(kClient, 50000, kMe, 22);
  ASSERT_TRUE(f.passes(eni, kIn, s1, tcp::kSyn));
  ASSERT_TRUE(f.passes(eni, kOut, s1.reversed(), tcp::kSyn | tcp::kAck));
  ASSERT_TRUE(f.passes(eni, kIn, s1, tcp::kAck));

  f.revoke("sg-1", kIn, ssh);
  // New flows see the change at once...
  EXPECT_EQ(f.send(eni, kIn, FlowKey::tcp(kClient, 50001, kMe, 22), tcp::kSyn).reason,
            Reason::kNoRule);
  // ...the tracked one continues, both ways (EC2 behaviour), until idle for its timeout.
  EXPECT_EQ(f.send(eni, kIn, s1, tcp::kAck).reason, Reason::kTracked);
  EXPECT_EQ(f.send(eni, kOut, s1.reversed(), tcp::kAck).reason, Reason::kTracked);
  f.clock.advance(seconds(432000));
  EXPECT_FALSE(f.passes(eni, kIn, s1, tcp::kAck));

  // Same for a membership change behind a group reference and a group swap.
  ASSERT_TRUE(f.engine.create_group("sg-admins").ok());
  f.allow("sg-1", kIn, Rule::tcp(22, 22, sg("sg-admins")));
  ASSERT_TRUE(f.engine.add_member("sg-admins", kClient).ok());
  const FlowKey s2 = FlowKey::tcp(kClient, 50002, kMe, 22);
  ASSERT_TRUE(f.passes(eni, kIn, s2, tcp::kSyn));
  ASSERT_TRUE(f.engine.remove_member("sg-admins", kClient).ok());
  EXPECT_FALSE(f.passes(eni, kIn, FlowKey::tcp(kClient, 50003, kMe, 22), tcp::kSyn));
  EXPECT_EQ(f.send(eni, kIn, s2, tcp::kAck).reason, Reason::kTracked);
  ASSERT_TRUE(f.engine.add_member("sg-admins", kClient).ok());
  ASSERT_TRUE(f.engine.create_group("sg-empty").ok());
  ASSERT_TRUE(f.engine.set_interface_groups(eni, {"sg-empty"}).ok());
  EXPECT_FALSE(f.passes(eni, kIn, FlowKey::tcp(kClient, 50004, kMe, 22), tcp::kSyn));
  EXPECT_EQ(f.send(eni, kIn, s2, tcp::kAck).reason, Reason::kTracked);
}

TEST(Conntrack, UntrackedFlowsFollowTheRulesAtOnce) {
  // EC2's example: inbound TCP 80 from 0.0.0.0/0 and outbound all traffic to 0.0.0.0/0
  // -> port 80 is untracked; port 22 from one address is tracked.
  Fixture f;
  const EniHandle eni = f.add_eni("eni-1", {"sg-1"});
  const Rule http = Rule::tcp(80, 80, cidr("0.0.0.0/0"));
  const Rule ssh = Rule::tcp(22, 22, cidr("198.51.100.7/32"));
  f.allow("sg-1", kIn, http);
  f.allow("sg-1", kIn, ssh);
  const FlowKey web = FlowKey::tcp(kClient, 50000, kMe, 80);
  const FlowKey admin = FlowKey::tcp(kClient, 50001, kMe, 22);
  EXPECT_EQ(f.send(eni, kIn, web, tcp::kSyn).reason, Reason::kUntracked);
  EXPECT_EQ(f.send(eni, kIn, admin, tcp::kSyn).reason, Reason::kNewFlow);
  EXPECT_EQ(f.engine.stats(eni)->conntrack.entries, 1u);
  // The reply of the untracked flow passes by the outbound rule.
  EXPECT_EQ(f.send(eni, kOut, web.reversed(), tcp::kSyn | tcp::kAck).reason,
            Reason::kUntracked);
  // Outbound flows are tracked: the inbound side has no all-ports 0.0.0.0/0 rule.
  EXPECT_EQ(f.send(eni, kOut, FlowKey::tcp(kMe, 40000, kPeer, 443), tcp::kSyn).reason,
            Reason::kNewFlow);
  // Removing the rule cuts the untracked flow immediately; the tracked one lives on.
  f.revoke("sg-1", kIn, http);
  f.revoke("sg-1", kIn, ssh);
  EXPECT_FALSE(f.passes(eni, kIn, web, tcp::kAck));
  EXPECT_TRUE(f.passes(eni, kIn, admin, tcp::kAck));
  // ICMP is always tracked, whatever the rules.
  f.allow("sg-1", kIn, Rule::all(cidr("0.0.0.0/0")));
  EXPECT_EQ(f.send(eni, kIn, FlowKey::icmp(kPeer, kMe, 8, 0, 1)).reason, Reason::kNewFlow);
  EXPECT_EQ(f.send(eni, kIn, FlowKey::udp(kPeer, 1, kMe, 2)).reason, Reason::kUntracked);

  // With untracked_flows off every allowed flow is tracked.
  ConntrackConfig all;
  all.untracked_flows = false;
  const EniHandle eni2 = f.add_eni("eni-2", {"sg-1"}, all);
  EXPECT_EQ(f.send(eni2, kIn, web, tcp::kSyn).reason, Reason::kNewFlow);
}

TEST(Conntrack, IcmpErrorsRelatedToTrackedFlowsPass) {
  Fixture f;
  const EniHandle eni = f.add_eni("eni-1", {"sg-1"});
  const FlowKey k = FlowKey::udp(kMe, 40000, kPeer, 9999);
  ASSERT_TRUE(f.passes(eni, kOut, k));
  const uint32_t router = 0xc0000201;  // 192.0.2.1
  Packet err = pkt(FlowKey::icmp(router, kMe, 3, 4));  // fragmentation needed, from a router
  err.has_inner = true;
  err.inner = k;
  EXPECT_EQ(f.engine.process(eni, kIn, err).reason, Reason::kRelated);
  // Port unreachable quoting an untracked flow, or without the quote: rules decide (deny).
  Packet stray = err;
  stray.inner = FlowKey::udp(kMe, 40001, kPeer, 9999);
  EXPECT_EQ(f.engine.process(eni, kIn, stray).reason, Reason::kNoRule);
  Packet bare = err;
  bare.has_inner = false;
  EXPECT_FALSE(f.engine.process(eni, kIn, bare).accepted());
  // An error aimed at someone other than the quoted datagram's sender.
  Packet misdirected = err;
  misdirected.key.dst_ip = kMe + 1;
  EXPECT_FALSE(f.engine.process(eni, kIn, misdirected).accepted());
  // Time exceeded for our ping.
  ASSERT_TRUE(f.passes(eni, kOut, FlowKey::icmp(kMe, kPeer, 8, 0, 5)));
  Packet ttl = pkt(FlowKey::icmp(router, kMe, 11, 0));
  ttl.has_inner = true;
  ttl.inner = FlowKey::icmp(kMe, kPeer, 8, 0, 5);
  EXPECT_EQ(f.engine.process(eni, kIn, ttl).reason, Reason::kRelated);
  // An error the instance sends about an inbound flow it tracked.
  f.allow("sg-1", kIn, Rule::udp(161, 161, cidr("198.51.100.0/24")));
  const FlowKey snmp = FlowKey::udp(kClient, 4000, kMe, 161);
  ASSERT_TRUE(f.passes(eni, kIn, snmp));
  f.revoke("sg-1", kOut, Rule::all(cidr("0.0.0.0/0")));
  Packet unreach = pkt(FlowKey::icmp(kMe, kClient, 3, 3));
  unreach.has_inner = true;
  unreach.inner = snmp;
  EXPECT_EQ(f.engine.process(eni, kOut, unreach).reason, Reason::kRelated);
  // Once the flow expires, its errors no longer pass.
  f.clock.advance(seconds(30));
  EXPECT_FALSE(f.engine.process(eni, kIn, err).accepted());
}

TEST(Conntrack, FullTableRefusesNewFlowsAndCountsThem) {
  Fixture f;
  ConntrackConfig ct;
  ct.max_entries = 100;
  const EniHandle eni = f.add_eni("eni-1", {"sg-1"}, ct);
  for (uint16_t p = 0; p < 100; ++p) {
    ASSERT_EQ(f.send(eni, kOut, FlowKey::udp(kMe, 1000 + p, kPeer, 53)).reason, Reason::kNewFlow);
  }
  for (uint16_t p = 100; p < 150; ++p) {
    EXPECT_EQ(f.send(eni, kOut, FlowKey::udp(kMe, 1000 + p, kPeer, 53)).reason,
              Reason::kTableFull);
  }
  auto s = f.engine.stats(eni);
  EXPECT_EQ(s->conntrack.entries, 100u);
  EXPECT_EQ(s->conntrack.refused, 50u);
  EXPECT_EQ(s->rejected, 50u);
  // Tracked flows are never evicted to make room: they keep working.
  for (uint16_t p = 0; p < 100; ++p) {
    EXPECT_TRUE(f.passes(eni, kIn, FlowKey::udp(kPeer, 53, kMe, 1000 + p))) << p;
  }
  // Flows that need no entry (untracked, stateless) still pass with a full table.
  f.allow("sg-1", kIn, Rule::icmp(3, -1, cidr("0.0.0.0/0")));
  EXPECT_EQ(f.send(eni, kIn, FlowKey::icmp(kPeer, kMe, 3, 1)).reason, Reason::kStateless);
  // Once entries expire, new flows are admitted again.
  f.clock.advance(seconds(30));
  EXPECT_EQ(f.send(eni, kOut, FlowKey::udp(kMe, 2000, kPeer, 53)).reason, Reason::kNewFlow);
  f.engine.expire(f.clock.now());
  s = f.engine.stats(eni);
  EXPECT_EQ(s->conntrack.entries, 1u);
  EXPECT_EQ(s->conntrack.expired, 100u);
  EXPECT_EQ(s->conntrack.refused, 50u);
}

TEST(Conntrack, ExpiryReclaimsWithoutTraffic) {
  ConntrackConfig cfg;
  ConnTrack ct(cfg);
  for (uint16_t p = 0; p < 1000; ++p) {
    ASSERT_EQ(ct.insert(kOut, pkt(FlowKey::udp(kMe, p, kPeer, 53)), seconds(p)),
              ConnTrack::Insert::kInserted);
  }
  ct.expire(seconds(500 + 30));  // entries created at 0..500 s are 30 s idle
  EXPECT_EQ(ct.stats().entries, 499u);
  EXPECT_EQ(ct.stats().expired, 501u);
  // Reinserting after erasures keeps every lookup right (backward-shift deletion).
  for (uint16_t p = 0; p < 1000; ++p) {
    const bool live = p > 500;
    EXPECT_EQ(ct.state(kIn, FlowKey::udp(kPeer, 53, kMe, p), seconds(530)).has_value(), live) << p;
  }
  ct.clear();
  EXPECT_EQ(ct.stats().entries, 0u);
  EXPECT_FALSE(ct.state(kOut, FlowKey::udp(kMe, 999, kPeer, 53), seconds(530)).has_value());
}

}  // namespace
}  // namespace azote::vpc
