#include "cards/net/inbox.hpp"

#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace azote::card_net {

Result<UniqueFd, SwitchError> bind_inbox(const std::string& path, uint64_t* dev, uint64_t* ino) {
  UniqueFd s(::socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!s) return make_error(SwitchErrc::kHost, "inbox socket", errno);
  const int on = 1;
  const int rcvbuf = 4 << 20;  // the kernel caps it at net.core.rmem_max
  if (::setsockopt(s.get(), SOL_SOCKET, SO_PASSCRED, &on, sizeof on) != 0)
    return make_error(SwitchErrc::kHost, "SO_PASSCRED on inbox " + path, errno);
  (void)::setsockopt(s.get(), SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  struct stat st{};
  if (::lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) (void)::unlink(path.c_str());
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof a.sun_path) return make_error(SwitchErrc::kInvalid, "inbox path " + path);
  std::memcpy(a.sun_path, path.data(), path.size());
  if (::bind(s.get(), reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0)  // NOLINT(reinterpret-cast)
    return make_error(SwitchErrc::kHost, "bind inbox " + path, errno);
  // Who may send what is decided per datagram, by the sender's uid.
  if (::chmod(path.c_str(), 0666) != 0 || ::lstat(path.c_str(), &st) != 0)
    return make_error(SwitchErrc::kHost, "chmod inbox " + path, errno);
  *dev = st.st_dev;
  *ino = st.st_ino;
  return s;
}

void unlink_inbox(const std::string& path, uint64_t dev, uint64_t ino) {
  struct stat st{};
  if (::lstat(path.c_str(), &st) == 0 && st.st_dev == dev && st.st_ino == ino) (void)::unlink(path.c_str());
}

size_t InboxBatch::receive(int fd) {
  for (size_t i = 0; i < kMax; ++i) {
    iov_[i] = {frames_[i].bytes.data(), frames_[i].bytes.size()};
    msgs_[i] = mmsghdr{};
    msgs_[i].msg_hdr.msg_iov = &iov_[i];
    msgs_[i].msg_hdr.msg_iovlen = 1;
    msgs_[i].msg_hdr.msg_control = ctl_[i].buf;
    msgs_[i].msg_hdr.msg_controllen = sizeof ctl_[i].buf;
  }
  const int n = ::recvmmsg(fd, msgs_.data(), kMax, MSG_DONTWAIT, nullptr);
  if (n <= 0) return 0;
  for (size_t i = 0; i < static_cast<size_t>(n); ++i) {
    msghdr& h = msgs_[i].msg_hdr;
    len_[i] = std::min<size_t>(msgs_[i].msg_len, frames_[i].bytes.size());
    uid_[i].reset();
    if ((h.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0) continue;
    for (cmsghdr* c = CMSG_FIRSTHDR(&h); c != nullptr; c = CMSG_NXTHDR(&h, c))
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS && c->cmsg_len >= CMSG_LEN(sizeof(ucred))) {
        ucred cr{};
        std::memcpy(&cr, CMSG_DATA(c), sizeof cr);
        uid_[i] = cr.uid;
      }
  }
  return static_cast<size_t>(n);
}

}  // namespace azote::card_net
