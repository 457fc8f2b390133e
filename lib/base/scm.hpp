// Descriptors carried on unix socket messages (SCM_RIGHTS), for the protocols that pass
// them (vhost-user, the launcher's): one way to attach them to a message and one to
// adopt what the kernel installed.
#pragma once

#include <sys/socket.h>

#include <cstring>
#include <span>
#include <vector>

#include "base/unique_fd.hpp"

namespace azote {

// Points `m` at `control` (room for at least fds.size() descriptors, aligned for
// cmsghdr) holding `fds`; nothing when there are none.
inline void attach_fds(msghdr& m, char* control, std::span<const int> fds) {
  if (fds.empty()) return;
  m.msg_control = control;
  m.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
  cmsghdr* c = CMSG_FIRSTHDR(&m);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
  std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
}

// Adopts every descriptor SCM_RIGHTS brought in `m` into `out` (so that an error after
// this closes them all); returns whether other ancillary data came too.
inline bool take_fds(msghdr& m, std::vector<UniqueFd>& out) {
  bool foreign = false;
  for (cmsghdr* c = CMSG_FIRSTHDR(&m); c != nullptr; c = CMSG_NXTHDR(&m, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) {
      foreign = true;
      continue;
    }
    const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      out.emplace_back(fd);
    }
  }
  return foreign;
}

}  // namespace azote
