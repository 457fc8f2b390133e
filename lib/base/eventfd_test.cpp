#include "base/eventfd.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>

#include "base/unique_fd.hpp"

namespace azote {
namespace {

TEST(DrainEventfd, OneReadTakesANormalCountWhole) {
  UniqueFd fd(::eventfd(5, EFD_CLOEXEC | EFD_NONBLOCK));
  EXPECT_EQ(drain_eventfd(fd.get()), 5u);
  EXPECT_EQ(drain_eventfd(fd.get()), 0u);
  EXPECT_EQ(drain_eventfd(-1), 0u);
}

// A semaphore eventfd with a huge count gives 1 per read: one read per call, so a
// caller's loop is bounded by its own wakeups, not by the count.
TEST(DrainEventfd, SemaphoreGivesOnePerCall) {
  UniqueFd fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK | EFD_SEMAPHORE));
  const uint64_t huge = uint64_t{1} << 63;
  ASSERT_EQ(::write(fd.get(), &huge, sizeof huge), 8);
  EXPECT_EQ(drain_eventfd(fd.get()), 1u);
  EXPECT_EQ(drain_eventfd(fd.get()), 1u);
}

// The other process may clear O_NONBLOCK on the shared file description: an empty
// eventfd must still not block the reader.
TEST(DrainEventfd, BlockingEventfdDoesNotBlock) {
  UniqueFd fd(::eventfd(0, EFD_CLOEXEC));
  ASSERT_EQ(::fcntl(fd.get(), F_GETFL) & O_NONBLOCK, 0);
  uint64_t v = 0;
  iovec iov{&v, sizeof v};
  if (::preadv2(fd.get(), &iov, 1, -1, RWF_NOWAIT) < 0 && errno == EOPNOTSUPP)
    GTEST_SKIP() << "SKIPPED: no RWF_NOWAIT reads of eventfds on this kernel";
  EXPECT_EQ(drain_eventfd(fd.get()), 0u);
  const uint64_t one = 3;
  ASSERT_EQ(::write(fd.get(), &one, sizeof one), 8);
  EXPECT_EQ(drain_eventfd(fd.get()), 3u);
  EXPECT_EQ(drain_eventfd(fd.get()), 0u);
}

}  // namespace
}  // namespace azote
