// Test helpers: an azote-rot played by the test over a socket pair (the card's end and
// the rot's), one line read and one reply written. For rot_link's own tests and the
// cards' tests of what they ask azote-rot.
#pragma once

#include <gtest/gtest.h>
#include <sys/socket.h>

#include <string>
#include <thread>
#include <utility>

#include "base/unique_fd.hpp"

namespace azote::rot_link::testing {

struct Pair {
  UniqueFd card, rot;
  Pair() {
    int sv[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    card.reset(sv[0]);
    rot.reset(sv[1]);
  }
};

// Reads one line from `fd` (blocking).
inline std::string read_line(int fd) {
  std::string s;
  char c = 0;
  while (::recv(fd, &c, 1, 0) == 1 && c != '\n') s += c;
  return s;
}
inline void write_all(int fd, const std::string& s) {
  size_t at = 0;
  while (at < s.size()) {
    const ssize_t n = ::send(fd, s.data() + at, s.size() - at, MSG_NOSIGNAL);
    if (n <= 0) return;
    at += static_cast<size_t>(n);
  }
}

// The peer answers one request with `reply`; *got: the request line.
inline std::thread answer_once(int fd, std::string reply, std::string* got = nullptr) {
  return std::thread([fd, reply = std::move(reply), got] {
    const std::string line = read_line(fd);
    if (got != nullptr) *got = line;
    write_all(fd, reply);
  });
}

}  // namespace azote::rot_link::testing
