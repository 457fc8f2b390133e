// A connection to a TPM 2.0 served over a Unix stream socket the way swtpm's "unixio"
// data channel serves one (and azote-card-tpm does): the client writes one raw TPM
// command, the TPM answers with one raw response; the size of each is in its 10-byte
// header (tag u16, size u32, code u32, big-endian). No framing of ours.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <span>
#include <string>

#include "base/error.hpp"
#include "base/unique_fd.hpp"
#include "tpm/wire.hpp"

namespace azote::tpm {

enum class TpmErrc {
  kConnect = 1,  // the TPM's socket cannot be reached
  kIo,           // the connection failed or closed mid-command
  kProtocol,     // a response that is not one (size out of range, bigger than the buffer)
  kTimeout,      // no whole response in time, or the wait was cancelled
  kTpm,          // the TPM answered with an error response code
  kCrypto,       // a digest could not be computed (OpenSSL)
};
using TpmError = Error<TpmErrc>;
template <class T>
using TpmResult = Result<T, TpmError>;

inline constexpr size_t kMaxMessageBytes = 4096;  // TPM2's usual MAX_COMMAND_SIZE / MAX_RESPONSE_SIZE

class Link {
 public:
  // Connects to the socket at `path`, retrying while it does not exist yet or refuses
  // (a card still starting) until `timeout`.
  static TpmResult<Link> connect(const std::string& path, std::chrono::milliseconds timeout);
  explicit Link(UniqueFd fd) : fd_(std::move(fd)) {}

  // Sends `command` whole and reads its whole response into `response`; returns its
  // length. Waits at most `timeout`; gives up early (kTimeout) when `cancel` becomes true
  // (checked whenever the wait is interrupted by a signal, and every 100 ms).
  TpmResult<size_t> transact(std::span<const uint8_t> command, std::span<uint8_t> response,
                             std::chrono::milliseconds timeout, const std::atomic<bool>* cancel = nullptr);
  int fd() const { return fd_.get(); }

 private:
  UniqueFd fd_;
};

}  // namespace azote::tpm
