#include "base/eventfd.hpp"

#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>

namespace azote {

uint64_t drain_eventfd(int fd) {
  if (fd < 0) return 0;
  uint64_t v = 0;
  iovec iov{&v, sizeof v};
  ssize_t n = ::preadv2(fd, &iov, 1, -1, RWF_NOWAIT);
  if (n < 0 && errno == EOPNOTSUPP) n = ::read(fd, &v, sizeof v);
  return n == static_cast<ssize_t>(sizeof v) ? v : 0;
}

}  // namespace azote
