// Inbox sockets: how card processes of one host hand each other frames (DESIGN.md "One
// card per instance"). An inbox is a unix datagram socket bound at a path, writable by
// every card's uid; the kernel attaches each sender's credentials (SO_PASSCRED), and
// the receiver decides per datagram what that uid may send. One frame per datagram.
#pragma once

#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "base/error.hpp"
#include "base/unique_fd.hpp"
#include "cards/net/switch.hpp"

namespace azote::card_net {

// Binds a non-blocking datagram socket at `path` (a stale socket file there is
// replaced), mode 0666, SO_PASSCRED on; *dev/*ino identify the file it made.
Result<UniqueFd, SwitchError> bind_inbox(const std::string& path, uint64_t* dev, uint64_t* ino);
// Removes the socket file at `path` if it is still the one (dev, ino) names.
void unlink_inbox(const std::string& path, uint64_t dev, uint64_t ino);

// Up to kMax datagrams read at once with their senders' uids (one recvmmsg).
class InboxBatch {
 public:
  static constexpr size_t kMax = 32;
  // Reads what is there without blocking; returns how many datagrams (0 on none or error).
  size_t receive(int fd);
  std::span<uint8_t> frame(size_t i) { return std::span(frames_[i].bytes).subspan(0, len_[i]); }
  // nullopt: no credentials, or the datagram or its control data were truncated.
  std::optional<uint32_t> uid(size_t i) const { return uid_[i]; }

 private:
  union Control {
    char buf[CMSG_SPACE(sizeof(ucred))];
    cmsghdr align;
  };
  std::array<TxFrame, kMax> frames_{};
  std::array<size_t, kMax> len_{};
  std::array<std::optional<uint32_t>, kMax> uid_{};
  std::array<mmsghdr, kMax> msgs_{};
  std::array<iovec, kMax> iov_{};
  std::array<Control, kMax> ctl_{};
};

}  // namespace azote::card_net
