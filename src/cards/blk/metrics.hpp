// Per-volume counters, updated by the queue workers (relaxed atomics, no locks on the
// data path) and rendered as Prometheus text (exposition format 0.0.4) by the metrics
// server, which serves them on a Unix socket: one connection, the full text, EOF.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "base/error.hpp"
#include "base/unique_fd.hpp"
#include "runtime/runtime.hpp"
#include "virtio/blk.hpp"

namespace azote::card_blk {

enum class OpKind : uint8_t { kRead, kWrite, kFlush, kDiscard, kWriteZeroes, kGetId };
inline constexpr size_t kOpKinds = 6;
const char* to_string(OpKind k);

// Latency buckets (upper bounds, microseconds), Prometheus-style cumulative on output.
inline constexpr std::array<uint64_t, 16> kLatencyBucketsUs = {25,    50,    100,    250,    500,    1000,
                                                               2500,  5000,  10000,  25000,  50000,  100000,
                                                               250000, 500000, 1000000, 2500000};
inline constexpr size_t kRejectReasons = 11;  // BlkErrc values 1..10, index 0 unused

struct LatencyHistogram {
  std::array<std::atomic<uint64_t>, kLatencyBucketsUs.size() + 1> buckets{};  // last: +Inf
  std::atomic<uint64_t> count{0};
  std::atomic<uint64_t> sum_ns{0};
  void record(uint64_t ns);
};

struct OpCounters {
  std::atomic<uint64_t> ops{0};     // completed with status OK
  std::atomic<uint64_t> bytes{0};   // data bytes moved (read/write) or covered (discard/zeroes)
  std::atomic<uint64_t> errors{0};  // completed with IOERR because the backing store failed
  LatencyHistogram latency;         // pop to completion, throttling included
};

struct VolumeMetrics {
  std::array<OpCounters, kOpKinds> op;
  // Requests the guest got wrong (completed with IOERR/UNSUPP without touching the
  // store), by virtio::BlkErrc.
  std::array<std::atomic<uint64_t>, kRejectReasons> rejects{};
  std::atomic<uint64_t> queue_errors{0};      // the driver broke a queue (the device then needs a reset)
  std::atomic<uint64_t> needs_reset{0};       // gauge: 1 while the device reports DEVICE_NEEDS_RESET
  std::atomic<uint64_t> throttled{0};         // requests that had to wait for the rate limiter
  std::atomic<uint64_t> throttle_wait_ns{0};  // total time requests waited for it
  std::atomic<uint64_t> resubmitted{0};       // heads taken over from a previous card process / queue start
  std::atomic<uint64_t> bounce_waits{0};      // requests that waited for bounce memory
  std::atomic<uint64_t> queue_starts{0};
  std::atomic<uint64_t> queues_running{0};
  // VIRTIO_BLK_F_CONFIG_WCE: the driver's cache mode (gauge: 1 write-back, 0
  // write-through), write requests completed durably in write-through mode, and config
  // writes refused (anything but a valid `writeback` byte).
  std::atomic<uint64_t> write_cache_writeback{1};
  std::atomic<uint64_t> write_through_writes{0};
  std::atomic<uint64_t> config_write_refusals{0};

  OpCounters& of(OpKind k) { return op[static_cast<size_t>(k)]; }
  void reject(virtio::BlkErrc why);
};

// What the text names a volume by.
struct MetricsSource {
  std::string volume;  // label value: the volume's serial
  std::string socket;
  const VolumeMetrics* metrics = nullptr;
};

// The whole exposition text for these volumes.
std::string render_prometheus(const std::vector<MetricsSource>& sources);

enum class MetricsErrc { kSocket = 1 };
using MetricsError = Error<MetricsErrc>;

// The volumes' text on a Unix socket (lib/runtime TextEndpoint: its own thread, so a
// slow client never delays the vhost-user control loop or a queue; up to 100 ms for a
// request, HTTP/1.0 header for a GET, the text within 1 s, then EOF).
class MetricsServer {
 public:
  static Result<std::unique_ptr<MetricsServer>, MetricsError> start(const std::string& path,
                                                                    std::vector<MetricsSource> sources);
  uint64_t served() const { return endpoint_->served(); }
  // Replaces the volume list (volumes added or removed at run time). Once this returns,
  // no rendering refers to a source that is not in `sources`.
  void set_sources(std::vector<MetricsSource> sources);

 private:
  MetricsServer() = default;
  std::mutex sources_mutex_;
  std::vector<MetricsSource> sources_;  // guarded by sources_mutex_
  std::unique_ptr<runtime::TextEndpoint> endpoint_;  // declared last: stopped first
};

}  // namespace azote::card_blk
