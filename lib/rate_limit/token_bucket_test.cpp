#include "rate_limit/token_bucket.hpp"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

namespace azote::rate_limit {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

TEST(TokenBucket, UnlimitedAlwaysAdmits) {
  TokenBucket b;
  EXPECT_TRUE(b.unlimited());
  for (int i = 0; i < 1000; ++i) EXPECT_TRUE(b.try_take(1u << 30, Nanos(0)));
  EXPECT_EQ(b.wait_for(~0ull, Nanos(0)), Nanos(0));
}

TEST(TokenBucket, StartsFullThenRefillsAtTheRate) {
  FakeClock clock;
  TokenBucket b(100, 10, clock.now());  // 100/s, burst 10
  EXPECT_EQ(b.available(clock.now()), 10u);
  for (int i = 0; i < 10; ++i) EXPECT_TRUE(b.try_take(1, clock.now())) << i;
  EXPECT_FALSE(b.try_take(1, clock.now()));
  // One token every 10 ms.
  EXPECT_EQ(b.wait_for(1, clock.now()), milliseconds(10));
  clock.advance(milliseconds(9));
  EXPECT_FALSE(b.try_take(1, clock.now()));
  EXPECT_EQ(b.wait_for(1, clock.now()), milliseconds(1));
  clock.advance(milliseconds(1));
  EXPECT_TRUE(b.try_take(1, clock.now()));
  // Never more than the burst, however long we wait.
  clock.advance(seconds(3600));
  EXPECT_EQ(b.available(clock.now()), 10u);
}

TEST(TokenBucket, LongRunRateIsExactWithoutDrift) {
  // 3 tokens/s refilled every 1 ns-ish odd step: the carry must keep every fraction.
  FakeClock clock;
  TokenBucket b(3, 1, clock.now());
  ASSERT_TRUE(b.try_take(1, clock.now()));
  uint64_t taken = 0;
  for (int i = 0; i < 7'000'000; ++i) {  // 7e6 steps of 1429 ns ~ 10 s
    clock.advance(Nanos(1429));
    if (b.try_take(1, clock.now())) ++taken;
  }
  // 7e6 * 1429 ns = 10.003 s -> 30.009 tokens: exactly 30 whole ones.
  EXPECT_EQ(taken, 30u);
}

TEST(TokenBucket, WaitIsExactToTheNanosecond) {
  FakeClock clock;
  TokenBucket b(3, 1, clock.now());
  ASSERT_TRUE(b.try_take(1, clock.now()));
  const Nanos w = b.wait_for(1, clock.now());
  EXPECT_EQ(w, Nanos(333'333'334));  // ceil(1e9 / 3)
  clock.advance(w - Nanos(1));
  EXPECT_FALSE(b.try_take(1, clock.now()));
  clock.advance(Nanos(1));
  EXPECT_TRUE(b.try_take(1, clock.now()));
}

TEST(TokenBucket, CostAboveBurstWaitsForAFullBucketThenGoesIntoDebt) {
  FakeClock clock;
  TokenBucket b(1000, 100, clock.now());  // 1000 B/s, burst 100 B
  EXPECT_TRUE(b.try_take(400, clock.now()));  // full bucket: admitted, 300 in debt
  EXPECT_EQ(b.available(clock.now()), 0u);
  // The next byte must wait for the debt and one token: 301 tokens at 1000/s.
  EXPECT_EQ(b.wait_for(1, clock.now()), milliseconds(301));
  // Another large one waits for a full bucket: 300 + 100 tokens.
  EXPECT_EQ(b.wait_for(400, clock.now()), milliseconds(400));
  clock.advance(milliseconds(400));
  EXPECT_TRUE(b.try_take(400, clock.now()));
}

TEST(TokenBucket, ForcedTakeGoesIntoDebt) {
  FakeClock clock;
  TokenBucket b(10, 5, clock.now());
  b.take(25, clock.now());  // 5 held, 25 taken: 20 in debt
  EXPECT_EQ(b.available(clock.now()), 0u);
  EXPECT_EQ(b.wait_for(1, clock.now()), std::chrono::milliseconds(2100));  // 21 tokens at 10/s
  b.take(~0ull, clock.now());  // bounded debt, no overflow
  EXPECT_GT(b.wait_for(1, clock.now()), seconds(1'000'000));
  TokenBucket unlimited;
  unlimited.take(~0ull, clock.now());
  EXPECT_EQ(unlimited.wait_for(1, clock.now()), Nanos(0));
}

TEST(TokenBucket, ClockGoingBackwardsRefillsNothing) {
  FakeClock clock(seconds(10));
  TokenBucket b(10, 1, clock.now());
  ASSERT_TRUE(b.try_take(1, clock.now()));
  clock.set(seconds(5));
  EXPECT_FALSE(b.try_take(1, clock.now()));
  clock.set(seconds(10) + milliseconds(100));
  EXPECT_TRUE(b.try_take(1, clock.now()));
}

TEST(TokenBucket, HugeValuesDoNotOverflow) {
  FakeClock clock;
  TokenBucket b(~0ull, ~0ull, clock.now());
  EXPECT_TRUE(b.try_take(~0ull, clock.now()));
  clock.advance(seconds(1'000'000'000));
  EXPECT_GT(b.available(clock.now()), 0u);
  TokenBucket slow(1, 1, clock.now());
  EXPECT_TRUE(slow.try_take(~0ull, clock.now()));
  EXPECT_GT(slow.wait_for(1, clock.now()), seconds(1'000'000));
}

TEST(Limiter, ChargesBothBucketsOrNeither) {
  FakeClock clock;
  Limiter l({/*ops*/ 10, 2, /*bytes*/ 1000, 1000}, clock);
  EXPECT_FALSE(l.unlimited());
  EXPECT_EQ(l.admit(600), Nanos(0));
  // Ops allow one more, bytes do not (400 left < 600): nothing may be charged.
  const Nanos w = l.admit(600);
  EXPECT_EQ(w, milliseconds(200));
  // The op token refused above was not taken: a small request still gets it.
  EXPECT_EQ(l.admit(100), Nanos(0));
  EXPECT_EQ(l.admit(1), milliseconds(100));  // ops bucket now empty: 10/s
}

TEST(Limiter, ChargeRunsNowAndDelaysTheNext) {
  FakeClock clock;
  Limiter l({10, 1, 0, 0}, clock);
  l.charge(0);
  l.charge(0);
  l.charge(0);  // 1 held, 3 charged: 2 in debt
  EXPECT_EQ(l.admit(0), milliseconds(300));
}

TEST(Limiter, IopsLimitHoldsOverTime) {
  FakeClock clock;
  Limiter l({400, 40, 0, 0}, clock);
  uint64_t admitted = 0;
  // A greedy client asking every 100 us for 10 s.
  for (int i = 0; i < 100'000; ++i) {
    if (l.admit(4096) == Nanos(0)) ++admitted;
    clock.advance(std::chrono::microseconds(100));
  }
  EXPECT_EQ(admitted, 40u + 4000u - 1u);  // burst + rate * 10 s (the last refill lands at t=10s)
}

TEST(Limiter, SafeAcrossThreads) {
  FakeClock clock;
  Limiter l({1000, 1000, 0, 0}, clock);
  std::atomic<int> admitted{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t) {
    ts.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) {
        if (l.admit(1) == Nanos(0)) admitted.fetch_add(1);
      }
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(admitted.load(), 1000);  // the clock never moved: exactly the burst
}

TEST(Limiter, UnlimitedConfig) {
  FakeClock clock;
  Limiter l({}, clock);
  EXPECT_TRUE(l.unlimited());
  EXPECT_EQ(l.admit(~0ull), Nanos(0));
}

}  // namespace
}  // namespace azote::rate_limit
