#include "sandbox/uring.hpp"

#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

namespace azote::sandbox {

Result<void, SandboxError> create_restricted_ring(io_uring* ring, unsigned entries, io_uring_params* params, int eventfd,
                                                  std::span<const uint8_t> allowed_ops) {
  params->flags |= IORING_SETUP_R_DISABLED;
  if (const int r = io_uring_queue_init_params(entries, ring, params); r < 0)
    return make_error(SandboxErrc::kSeccomp, "io_uring_queue_init (disabled)", -r);
  auto fail = [&](const char* what, int r) {
    io_uring_queue_exit(ring);
    return make_error(SandboxErrc::kSeccomp, what, -r);
  };
  if (eventfd >= 0)
    if (const int r = io_uring_register_eventfd(ring, eventfd); r < 0) return fail("io_uring_register_eventfd", r);
  std::vector<io_uring_restriction> res(allowed_ops.size());
  for (size_t i = 0; i < allowed_ops.size(); ++i) {
    res[i].opcode = IORING_RESTRICTION_SQE_OP;
    res[i].sqe_op = allowed_ops[i];
  }
  // The raw calls: Debian's liburing 2.3 declares io_uring_register_restrictions and
  // io_uring_enable_rings but does not export them.
  if (::syscall(SYS_io_uring_register, ring->ring_fd, IORING_REGISTER_RESTRICTIONS, res.data(),
                static_cast<unsigned>(res.size())) != 0)
    return fail("IORING_REGISTER_RESTRICTIONS", -errno);
  if (::syscall(SYS_io_uring_register, ring->ring_fd, IORING_REGISTER_ENABLE_RINGS, nullptr, 0) != 0)
    return fail("IORING_REGISTER_ENABLE_RINGS", -errno);
  return {};
}

}  // namespace azote::sandbox
