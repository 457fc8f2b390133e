// io_uring rings restricted to the operations a thread uses (IORING_REGISTER_RESTRICTIONS,
// Linux 5.10+): seccomp cannot see what a submission queue entry asks for, so a ring
// whose owner is compromised could otherwise open files or sockets behind the filter.
//
// create_restricted_ring() sets the ring up disabled (IORING_SETUP_R_DISABLED), registers
// `eventfd` for completions if >= 0, then the allowed opcodes (and no register
// operation at all), then enables it. Any other opcode completes with -EACCES.
#pragma once

#include <liburing.h>

#include <cstdint>
#include <span>

#include "sandbox/seccomp.hpp"

namespace azote::sandbox {

Result<void, SandboxError> create_restricted_ring(io_uring* ring, unsigned entries, io_uring_params* params, int eventfd,
                                                  std::span<const uint8_t> allowed_ops);

}  // namespace azote::sandbox
