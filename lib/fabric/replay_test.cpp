// The anti-replay window: duplicates, the window's edges, jumps, out of order.
#include "fabric/replay.hpp"

#include <gtest/gtest.h>

namespace azote::fabric {
namespace {

bool accept(ReplayWindow& w, uint64_t s) {
  if (w.check(s) != FabricErrc{}) return false;
  w.update(s);
  return true;
}

TEST(Replay, InOrderDuplicatesAndZero) {
  ReplayWindow w;
  EXPECT_EQ(w.check(0), FabricErrc::kTooOld);
  for (uint64_t s = 1; s <= 5000; ++s) ASSERT_TRUE(accept(w, s)) << s;
  for (uint64_t s = 5000; s > 5000 - ReplayWindow::kWindow; --s) EXPECT_EQ(w.check(s), FabricErrc::kReplay) << s;
  EXPECT_EQ(w.check(5000 - ReplayWindow::kWindow), FabricErrc::kTooOld);
  EXPECT_EQ(w.top(), 5000u);
}

TEST(Replay, WindowEdgesAreExact) {
  static_assert(ReplayWindow::kWindow >= 1024);
  ReplayWindow w;
  const uint64_t top = 1'000'000'000'000ull;
  ASSERT_TRUE(accept(w, top));
  // The oldest number still inside, unseen: accepted once.
  const uint64_t oldest = top - ReplayWindow::kWindow + 1;
  EXPECT_TRUE(accept(w, oldest));
  EXPECT_EQ(w.check(oldest), FabricErrc::kReplay);
  EXPECT_EQ(w.check(oldest - 1), FabricErrc::kTooOld);
  // Out of order inside the window, each once.
  for (uint64_t s = top - 1; s > top - 100; s -= 3) EXPECT_TRUE(accept(w, s));
  for (uint64_t s = top - 1; s > top - 100; s -= 3) EXPECT_FALSE(accept(w, s));
  EXPECT_TRUE(accept(w, top - 2));
  // Moving by one drops exactly one number off the far edge.
  EXPECT_TRUE(accept(w, top + 1));
  EXPECT_EQ(w.check(oldest), FabricErrc::kTooOld);
  EXPECT_EQ(w.check(oldest + 1), FabricErrc{});
}

TEST(Replay, JumpsClearWhatTheyPass) {
  ReplayWindow w;
  for (uint64_t s = 100; s < 200; ++s) ASSERT_TRUE(accept(w, s));
  // Jump by less than the ring: the numbers skipped are unseen, the old ones still seen.
  ASSERT_TRUE(accept(w, 700));
  EXPECT_EQ(w.check(150), FabricErrc::kReplay);
  EXPECT_EQ(w.check(600), FabricErrc{});
  // Jump by more than the ring: everything below is either too old or unseen.
  ASSERT_TRUE(accept(w, 700 + 10 * ReplayWindow::kWindow));
  EXPECT_EQ(w.check(700), FabricErrc::kTooOld);
  EXPECT_EQ(w.check(700 + 10 * ReplayWindow::kWindow - 64), FabricErrc{});
  EXPECT_EQ(w.check(700 + 10 * ReplayWindow::kWindow - 1), FabricErrc{});
  // Block boundaries: every position of a 64-bit block, in reverse.
  ReplayWindow r;
  ASSERT_TRUE(accept(r, 64 * 40 + 63));
  for (uint64_t s = 64 * 40 + 62; s >= 64 * 39; --s) ASSERT_TRUE(accept(r, s)) << s;
  for (uint64_t s = 64 * 39; s <= 64 * 40 + 63; ++s) ASSERT_EQ(r.check(s), FabricErrc::kReplay) << s;
}

}  // namespace
}  // namespace azote::fabric
