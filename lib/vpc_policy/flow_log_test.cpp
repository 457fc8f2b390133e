// Flow logs: aggregation, the exact AWS version-2 text, windows, NODATA, SKIPDATA.
#include "vpc_policy/flow_log.hpp"

#include <gtest/gtest.h>

#include "vpc_policy/test_util.hpp"

namespace azote::vpc {
namespace {

using namespace test;
using std::chrono::milliseconds;
using Lines = std::vector<std::string>;

constexpr auto kT0 = seconds(1418530010);  // Unix time of the log's first window

FlowLogConfig config(uint32_t max_records = 10000, Nanos window = seconds(60)) {
  FlowLogConfig c;
  c.enabled = true;
  c.account_id = "123456789010";
  c.window = window;
  c.max_records = max_records;
  return c;
}

// Windows start at monotonic 0, printed as kT0.
FlowLog make_log(FlowLogConfig c = config()) {
  return FlowLog(std::move(c), "eni-1235b8ca123456789", Nanos(0), kT0);
}

Lines flush(FlowLog& log, Nanos now) {
  Lines out;
  log.flush(now, out);
  return out;
}

TEST(FlowLog, AggregatesPerFlowAndActionWithExactText) {
  FlowLog log = make_log();
  const FlowKey ssh = FlowKey::tcp(ip("172.31.16.139"), 20641, ip("172.31.16.21"), 22);
  // 20 packets, 4249 bytes, from t=0.5 s to t=59.9 s; in between, the reply direction
  // and a rejected flow, which are records of their own.
  const FlowKey rdp = FlowKey::tcp(ip("172.31.9.69"), 49761, ip("172.31.16.21"), 3389);
  log.record(ssh, 200, Verdict::kAccept, milliseconds(500));
  log.record(ssh.reversed(), 52, Verdict::kAccept, seconds(2));
  log.record(rdp, 60, Verdict::kReject, seconds(10));
  log.record(rdp, 60, Verdict::kReject, seconds(13));
  log.record(rdp, 60, Verdict::kAccept, seconds(14));  // same 5-tuple, other action
  for (int i = 0; i < 18; ++i) log.record(ssh, 200, Verdict::kAccept, seconds(15 + 2 * i));
  log.record(ssh, 449, Verdict::kAccept, milliseconds(59900));

  EXPECT_TRUE(flush(log, milliseconds(59999)).empty());  // window not over
  const Lines lines = flush(log, seconds(60));
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(lines[0], "2 123456789010 eni-1235b8ca123456789 172.31.16.139 172.31.16.21 20641 22 6 20 4249 1418530010 1418530069 ACCEPT OK");
  EXPECT_EQ(lines[1], "2 123456789010 eni-1235b8ca123456789 172.31.16.21 172.31.16.139 22 20641 6 1 52 1418530012 1418530012 ACCEPT OK");
  EXPECT_EQ(lines[2], "2 123456789010 eni-1235b8ca123456789 172.31.9.69 172.31.16.21 49761 3389 6 2 120 1418530020 1418530023 REJECT OK");
  EXPECT_EQ(lines[3], "2 123456789010 eni-1235b8ca123456789 172.31.9.69 172.31.16.21 49761 3389 6 1 60 1418530024 1418530024 ACCEPT OK");
  EXPECT_TRUE(flush(log, seconds(60)).empty());  // emitted once
}

TEST(FlowLog, IcmpAndOtherProtocolsHaveZeroPorts) {
  FlowLog log = make_log();
  const uint32_t a = ip("203.0.113.12"), b = ip("172.31.16.139");
  log.record(FlowKey::icmp(a, b, 8, 0, 1), 84, Verdict::kAccept, seconds(1));
  log.record(FlowKey::icmp(a, b, 8, 0, 2), 84, Verdict::kAccept, seconds(2));
  log.record(FlowKey::icmp(a, b, 3, 3), 56, Verdict::kAccept, seconds(3));
  log.record(FlowKey::other(47, a, b), 100, Verdict::kReject, seconds(4));
  const Lines lines = flush(log, seconds(60));
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0], "2 123456789010 eni-1235b8ca123456789 203.0.113.12 172.31.16.139 0 0 1 3 224 1418530011 1418530013 ACCEPT OK");
  EXPECT_EQ(lines[1], "2 123456789010 eni-1235b8ca123456789 203.0.113.12 172.31.16.139 0 0 47 1 100 1418530014 1418530014 REJECT OK");
}

TEST(FlowLog, NoDataForIdleWindows) {
  FlowLog log = make_log();
  const Lines lines = flush(log, seconds(150));  // two whole windows, no traffic
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0], "2 123456789010 eni-1235b8ca123456789 - - - - - - - 1418530010 1418530070 - NODATA");
  EXPECT_EQ(lines[1], "2 123456789010 eni-1235b8ca123456789 - - - - - - - 1418530070 1418530130 - NODATA");
  // Traffic in the third window [120, 180): OK only, no NODATA.
  log.record(FlowKey::udp(1, 2, 3, 4), 10, Verdict::kAccept, seconds(170));
  const Lines third = flush(log, seconds(180));
  ASSERT_EQ(third.size(), 1u);
  EXPECT_EQ(third[0], "2 123456789010 eni-1235b8ca123456789 0.0.0.1 0.0.0.3 2 4 17 1 10 1418530180 1418530180 ACCEPT OK");
}

TEST(FlowLog, SkipDataWhenAWindowHasTooManyFlows) {
  FlowLog log = make_log(config(/*max_records=*/2));
  const uint32_t a = ip("10.0.0.1"), b = ip("10.0.0.2");
  log.record(FlowKey::udp(a, 1, b, 53), 100, Verdict::kAccept, seconds(1));
  log.record(FlowKey::udp(a, 2, b, 53), 100, Verdict::kAccept, seconds(2));
  log.record(FlowKey::udp(a, 3, b, 53), 100, Verdict::kAccept, seconds(3));   // skipped
  log.record(FlowKey::udp(a, 4, b, 53), 100, Verdict::kReject, seconds(4));   // skipped
  log.record(FlowKey::udp(a, 1, b, 53), 100, Verdict::kAccept, seconds(5));   // still counted
  EXPECT_EQ(log.skipped_packets(), 2u);
  const Lines lines = flush(log, seconds(60));
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0], "2 123456789010 eni-1235b8ca123456789 10.0.0.1 10.0.0.2 1 53 17 2 200 1418530011 1418530015 ACCEPT OK");
  EXPECT_EQ(lines[1], "2 123456789010 eni-1235b8ca123456789 10.0.0.1 10.0.0.2 2 53 17 1 100 1418530012 1418530012 ACCEPT OK");
  EXPECT_EQ(lines[2], "2 123456789010 eni-1235b8ca123456789 - - - - - - - 1418530010 1418530070 - SKIPDATA");
  // The next window starts with a fresh budget.
  log.record(FlowKey::udp(a, 3, b, 53), 100, Verdict::kAccept, seconds(61));
  const Lines next = flush(log, seconds(120));
  ASSERT_EQ(next.size(), 1u);
  EXPECT_EQ(next[0], "2 123456789010 eni-1235b8ca123456789 10.0.0.1 10.0.0.2 3 53 17 1 100 1418530071 1418530071 ACCEPT OK");
}

TEST(FlowLog, WindowsRollOnTrafficAndTenMinuteWindows) {
  FlowLog log = make_log(config(10000, seconds(600)));
  const FlowKey k = FlowKey::tcp(ip("10.0.0.1"), 1000, ip("10.0.0.2"), 80);
  log.record(k, 100, Verdict::kAccept, seconds(10));
  log.record(k, 100, Verdict::kAccept, seconds(599));
  log.record(k, 100, Verdict::kAccept, seconds(600));   // next window
  log.record(k, 100, Verdict::kAccept, seconds(1900));  // window [1800, 2400); [1200, 1800) idle
  const Lines lines = flush(log, seconds(2400));
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(lines[0], "2 123456789010 eni-1235b8ca123456789 10.0.0.1 10.0.0.2 1000 80 6 2 200 1418530020 1418530609 ACCEPT OK");
  EXPECT_EQ(lines[1], "2 123456789010 eni-1235b8ca123456789 10.0.0.1 10.0.0.2 1000 80 6 1 100 1418530610 1418530610 ACCEPT OK");
  EXPECT_EQ(lines[2], "2 123456789010 eni-1235b8ca123456789 - - - - - - - 1418531210 1418531810 - NODATA");
  EXPECT_EQ(lines[3], "2 123456789010 eni-1235b8ca123456789 10.0.0.1 10.0.0.2 1000 80 6 1 100 1418531910 1418531910 ACCEPT OK");
}

TEST(FlowLog, ThroughTheEngine) {
  FakeClock clock(seconds(100));
  EngineConfig ec;
  ec.unix_offset = kT0 - seconds(100);  // the interface's first window prints as kT0
  PolicyEngine engine(clock, ec);
  ASSERT_TRUE(engine.create_group("sg-1").ok());
  InterfaceConfig ic;
  ic.id = "eni-1235b8ca123456789";
  ic.groups = {"sg-1"};
  ic.flow_log = config();
  auto eni = engine.add_interface(ic);
  ASSERT_TRUE(eni.ok());
  ic.id = "eni-quiet";
  ic.flow_log.account_id = "999999999999";
  auto quiet = engine.add_interface(ic);
  ASSERT_TRUE(quiet.ok());

  const uint32_t me = ip("172.31.16.21"), peer = ip("172.31.16.139");
  const FlowKey out = FlowKey::tcp(me, 40000, peer, 443);
  clock.advance(seconds(5));
  ASSERT_TRUE(engine.process(*eni, kOut, pkt(out, tcp::kSyn, 60)).accepted());
  ASSERT_TRUE(engine.process(*eni, kIn, pkt(out.reversed(), tcp::kSyn | tcp::kAck, 60)).accepted());
  ASSERT_FALSE(engine.process(*eni, kIn, pkt(FlowKey::tcp(peer, 20641, me, 22), tcp::kSyn, 60)).accepted());
  clock.advance(seconds(55));  // t = 160: first window [100, 160) over
  const Lines lines = engine.flush(clock.now());
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(lines[0], "2 123456789010 eni-1235b8ca123456789 172.31.16.21 172.31.16.139 40000 443 6 1 60 1418530015 1418530015 ACCEPT OK");
  EXPECT_EQ(lines[1], "2 123456789010 eni-1235b8ca123456789 172.31.16.139 172.31.16.21 443 40000 6 1 60 1418530015 1418530015 ACCEPT OK");
  EXPECT_EQ(lines[2], "2 123456789010 eni-1235b8ca123456789 172.31.16.139 172.31.16.21 20641 22 6 1 60 1418530015 1418530015 REJECT OK");
  EXPECT_EQ(lines[3], "2 999999999999 eni-quiet - - - - - - - 1418530010 1418530070 - NODATA");

  // Removing an interface ends its window there; its lines come with the next flush.
  clock.advance(seconds(10));
  ASSERT_TRUE(engine.process(*eni, kOut, pkt(out, tcp::kAck, 52)).accepted());
  ASSERT_TRUE(engine.remove_interface(*eni).ok());
  ASSERT_TRUE(engine.remove_interface(*quiet).ok());
  const Lines last = engine.flush(clock.now());
  ASSERT_EQ(last.size(), 2u);
  EXPECT_EQ(last[0], "2 123456789010 eni-1235b8ca123456789 172.31.16.21 172.31.16.139 40000 443 6 1 52 1418530080 1418530080 ACCEPT OK");
  EXPECT_EQ(last[1], "2 999999999999 eni-quiet - - - - - - - 1418530070 1418530080 - NODATA");
  EXPECT_TRUE(engine.flush(clock.now() + seconds(3600)).empty());
}

}  // namespace
}  // namespace azote::vpc
