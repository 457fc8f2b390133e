// The TPM's data socket: swtpm's "unixio" data channel. A client writes one raw TPM 2.0
// command (10-byte header: tag u16, commandSize u32, commandCode u32, big-endian;
// commandSize is the whole length) and reads the raw response. Several clients may be
// connected (the hypervisor, tools); each command is read whole into a card-owned buffer,
// run whole by libtpms and answered before the next is taken, on one thread of its own
// (class "tpm"): libtpms is single-threaded, and a slow command (an RSA key generation)
// never delays the control socket.
//
// A command whose size is under 10 bytes or over the TPM's buffer size closes that
// connection (logged, counted); a partial command waits for its remaining bytes. While a
// response is not yet taken by its client, that client's further commands are not read.
// No exception and no allocation per command on this path.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "base/unique_fd.hpp"
#include "cards/tpm/error.hpp"
#include "cards/tpm/metrics.hpp"
#include "runtime/runtime.hpp"

namespace azote::card_tpm {

inline constexpr size_t kMaxDataClients = 8;

enum class FrameStatus { kNeedMore, kComplete, kBad };
struct Frame {
  FrameStatus status = FrameStatus::kNeedMore;
  uint32_t size = 0;  // commandSize from the header (0 while the header is incomplete)
};
// What the first bytes of `buffered` hold: a complete command of Frame::size bytes, not
// yet all of one, or a header whose commandSize is under 10 or over `max_bytes`.
Frame check_frame(std::span<const uint8_t> buffered, uint32_t max_bytes);

class DataServer {
 public:
  // Runs one whole command; returns its response (valid until the next call).
  using Process = std::function<std::span<const uint8_t>(std::span<uint8_t> command)>;

  // Listens on `path` (mode 0600; a stale socket there is replaced, a live one or any
  // other file refused). Nothing is served before start().
  static TpmResult<std::unique_ptr<DataServer>> listen(const std::string& path, uint32_t max_command_bytes,
                                                       Process process, TpmMetrics& metrics);
  // Stops the thread, closes the clients, removes the socket.
  ~DataServer();
  DataServer(const DataServer&) = delete;
  DataServer& operator=(const DataServer&) = delete;

  // Serves on the "tpm" thread until the destructor. `failed` is called (on that thread)
  // if it has to stop on its own (epoll failed).
  void start(std::function<void()> failed);
  const std::string& path() const { return path_; }
  // Readable once the server is stopping: a long wait on the TPM thread (azote-rot) ends.
  int stop_fd() const { return stop_.get(); }

 private:
  struct Client {
    UniqueFd fd;
    std::vector<uint8_t> in;   // max_command_bytes_, fixed
    size_t have = 0;           // bytes of `in` received
    std::vector<uint8_t> out;  // the response being sent
    size_t sent = 0;
    bool eof = false;
    uint32_t events = 0;       // what epoll watches now
  };
  explicit DataServer(TpmMetrics& metrics) : metrics_(metrics) {}
  bool run();  // false: epoll failed
  void accept_ready();
  void service(uint64_t id);
  bool read_once(Client& c);                // false: drop the client
  bool run_buffered(uint64_t id, Client& c);  // false: drop the client
  bool flush(Client& c);                    // false: drop the client
  void arm(uint64_t id, Client& c, uint32_t events);
  void drop(uint64_t id);

  TpmMetrics& metrics_;
  Process process_;
  uint32_t max_command_bytes_ = 0;
  std::string path_;
  dev_t sock_dev_ = 0;
  ino_t sock_ino_ = 0;
  UniqueFd listen_, epoll_, stop_;
  uint64_t next_id_ = 2;  // 0: the listening socket, 1: the stop eventfd
  std::map<uint64_t, std::unique_ptr<Client>> clients_;
  runtime::BoundedThread thread_;  // declared last: joined first
};

}  // namespace azote::card_tpm
