#include "controller/region_fence.hpp"

#include <gtest/gtest.h>

namespace azote::controller {
namespace {

using namespace std::chrono_literals;

TEST(RegionFence, AdmitsTheCurrentLeaseAndRefusesOlderOnes) {
  RegionFence f;
  const auto t0 = RegionFence::Clock::time_point{} + 1h;
  EXPECT_FALSE(f.admit(10, 15s, t0));
  EXPECT_FALSE(f.admit(10, 15s, t0 + 5s));
  EXPECT_FALSE(f.admit(10, 15s, t0 + 19s));  // heard from 14 s ago: still within the lease
  EXPECT_EQ(f.epoch(), 10u);
  // A newer lease (the region lost this host and found it again): admitted, and from
  // then on the old one never is.
  EXPECT_FALSE(f.admit(42, 15s, t0 + 20s));
  auto why = f.admit(10, 15s, t0 + 21s);
  ASSERT_TRUE(why);
  EXPECT_NE(why->find("older"), std::string::npos) << *why;
  EXPECT_TRUE(f.admit(0, 15s, t0 + 21s));
}

TEST(RegionFence, ALeaseNotHeardFromForItsTimeToLiveIsLost) {
  RegionFence f;
  const auto t0 = RegionFence::Clock::time_point{} + 1h;
  EXPECT_FALSE(f.admit(7, 15s, t0));
  auto why = f.admit(7, 15s, t0 + 16s);
  ASSERT_TRUE(why);
  EXPECT_NE(why->find("lapsed"), std::string::npos) << *why;
  // Refusing does not renew it: still lapsed a moment later; a new lease is admitted.
  EXPECT_TRUE(f.admit(7, 15s, t0 + 17s));
  EXPECT_FALSE(f.admit(8, 15s, t0 + 17s));
  EXPECT_FALSE(f.admit(8, 15s, t0 + 30s));
}

TEST(RegionFence, ThePrincipalThatPresentedEpochsCannotLeaveThemOut) {
  RegionFence f;
  const auto t0 = RegionFence::Clock::time_point{} + 1h;
  EXPECT_FALSE(f.admit_without_epoch("control-plane/region"));  // nobody presented one yet
  EXPECT_FALSE(f.admit(3, 15s, t0, "control-plane/region"));
  auto why = f.admit_without_epoch("control-plane/region");
  ASSERT_TRUE(why);
  EXPECT_NE(why->find("must carry"), std::string::npos) << *why;
  EXPECT_FALSE(f.admit_without_epoch("control-plane/operator-cli"));  // the host's own clients are not fenced
}

}  // namespace
}  // namespace azote::controller
