// A card's connection to azote-rot, the host's root of trust: the connected stream
// socket the launcher made and bound to the card's instance before spawning it, handed
// over as `--rot fd:N` (azote-rot then answers only for that instance). The protocol is
// JSON lines: one request object, then one reply object, one request at a time (the
// caller serialises; a card asks from one thread).
//
// Every wait is bounded: a reply must come within the timeout given at construction. A
// reply line over kMaxLineBytes, or one that is not a JSON object, fails only its own
// request (kReply) and the connection stays in step. EOF, a send, recv or poll error, a
// timeout or the cancel descriptor becoming readable give the connection up for good
// (kGone, logged once): later calls fail at once, and gone() says so. A card that stops
// sets a cancel descriptor (its stop eventfd, say) so that it never waits for azote-rot
// while stopping.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <string>

#include <nlohmann/json.hpp>

#include "base/error.hpp"
#include "base/unique_fd.hpp"

namespace azote::rot_link {

enum class RotLinkErrc {
  kGone = 1,  // the connection is given up for good: EOF, timeout, cancelled, send/recv/poll error
  kReply,     // one reply was over 64 KiB or not a JSON object; the connection stays
};
using RotLinkError = Error<RotLinkErrc>;

class RotClient {
 public:
  static constexpr size_t kMaxLineBytes = 64 * 1024;
  // `fd`: a connected stream socket to azote-rot (blocking or not: every I/O here is
  // non-blocking and waits through poll).
  explicit RotClient(UniqueFd fd, std::chrono::milliseconds timeout = std::chrono::seconds(10));
  // Sends `request` as one line and returns the reply line's JSON object. Anything
  // azote-rot sent unasked before the request is dropped.
  Result<nlohmann::json, RotLinkError> call(const nlohmann::json& request);
  // A descriptor that becomes readable when the card stops: a wait ends at once (the
  // connection is then given up). -1: none.
  void set_cancel_fd(int fd) { cancel_fd_ = fd; }
  bool gone() const { return gone_.load(std::memory_order_relaxed); }  // any thread

 private:
  enum class Wait { kReady, kTimeout, kCancelled, kError };
  Wait wait(short events, std::chrono::steady_clock::time_point deadline);
  Unexpected<RotLinkError> give_up(const std::string& why);  // the connection is gone for good
  UniqueFd fd_;
  std::chrono::milliseconds timeout_;
  int cancel_fd_ = -1;
  std::atomic<bool> gone_{false};
  std::string in_;  // bytes received after the last reply line
};

}  // namespace azote::rot_link
