// A restricted ring runs the operations it allows and refuses the rest with -EACCES.
#include "sandbox/uring.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <functional>

namespace azote::sandbox {
namespace {

int submit_one(io_uring* ring, const std::function<void(io_uring_sqe*)>& prep) {
  io_uring_sqe* sqe = io_uring_get_sqe(ring);
  prep(sqe);
  if (io_uring_submit(ring) != 1) return -9999;
  io_uring_cqe* cqe = nullptr;
  if (io_uring_wait_cqe(ring, &cqe) != 0) return -9998;
  const int res = cqe->res;
  io_uring_cqe_seen(ring, cqe);
  return res;
}

TEST(Uring, OnlyTheAllowedOperationsRun) {
  io_uring ring{};
  io_uring_params p{};
  const uint8_t allowed[] = {IORING_OP_READV, IORING_OP_NOP};
  auto r = create_restricted_ring(&ring, 8, &p, -1, allowed);
  if (!r && r.error().errnum == EINVAL) GTEST_SKIP() << "SKIPPED: this kernel has no io_uring restrictions (5.10+)";
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(submit_one(&ring, [](io_uring_sqe* s) { io_uring_prep_nop(s); }), 0);
  const int fd = ::open("/dev/zero", O_RDONLY | O_CLOEXEC);
  char buf[16];
  iovec iov{buf, sizeof buf};
  EXPECT_EQ(submit_one(&ring, [&](io_uring_sqe* s) { io_uring_prep_readv(s, fd, &iov, 1, 0); }), 16);
  // Not allowed: opening a file from inside the ring, behind seccomp's back.
  EXPECT_EQ(submit_one(&ring, [](io_uring_sqe* s) { io_uring_prep_openat(s, AT_FDCWD, "/etc/hostname", O_RDONLY, 0); }),
            -EACCES);
  EXPECT_EQ(submit_one(&ring, [&](io_uring_sqe* s) { io_uring_prep_read(s, fd, buf, 16, 0); }), -EACCES);
  // No register operation is allowed once restricted.
  const int efd = ::eventfd(0, EFD_CLOEXEC);
  EXPECT_LT(io_uring_register_eventfd(&ring, efd), 0);
  ::close(efd);
  ::close(fd);
  io_uring_queue_exit(&ring);
}

}  // namespace
}  // namespace azote::sandbox
