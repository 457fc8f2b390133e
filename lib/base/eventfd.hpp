// Eventfds another process shares with us (vhost-user kick, call and err fds; the
// other side keeps its own descriptor of the same file): reading them in an event loop
// without that process being able to stall the loop.
#pragma once

#include <cstdint>

namespace azote {

// Takes what an eventfd (or a timerfd) counted, for an epoll loop that saw it readable:
// ONE read, never blocking. Returns the value read, 0 when there was nothing.
//
// Why one read and not "until EAGAIN": one read of a normal eventfd returns its whole
// count and resets it, but a semaphore eventfd (EFD_SEMAPHORE) gives 1 per read however
// large its count is, so a frontend handing one over with a count of 2^63 would keep a
// drain loop reading for centuries. Whatever one read leaves keeps the fd readable: a
// level-triggered loop comes back to it after handling everything else, its stop
// request included.
//
// Why preadv2(RWF_NOWAIT) and not read(): O_NONBLOCK lives in the file description,
// which the other process shares and may switch back to blocking at any time; if it
// then empties the counter between our epoll_wait and our read, a read() would block.
// RWF_NOWAIT makes this one read non-blocking whatever the flags say. A kernel (or an
// fd type) without RWF_NOWAIT support answers EOPNOTSUPP, and the read falls back to
// read(), relying on O_NONBLOCK.
uint64_t drain_eventfd(int fd);

}  // namespace azote
