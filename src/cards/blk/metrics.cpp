#include "cards/blk/metrics.hpp"

#include <string>

namespace azote::card_blk {
namespace {

void add(std::atomic<uint64_t>& c, uint64_t v) { c.fetch_add(v, std::memory_order_relaxed); }
uint64_t get(const std::atomic<uint64_t>& c) { return c.load(std::memory_order_relaxed); }

}  // namespace

const char* to_string(OpKind k) {
  switch (k) {
    case OpKind::kRead: return "read";
    case OpKind::kWrite: return "write";
    case OpKind::kFlush: return "flush";
    case OpKind::kDiscard: return "discard";
    case OpKind::kWriteZeroes: return "write_zeroes";
    case OpKind::kGetId: return "get_id";
  }
  return "?";
}

void LatencyHistogram::record(uint64_t ns) {
  const uint64_t us = ns / 1000;
  size_t i = 0;
  while (i < kLatencyBucketsUs.size() && us > kLatencyBucketsUs[i]) ++i;
  add(buckets[i], 1);
  add(count, 1);
  add(sum_ns, ns);
}

void VolumeMetrics::reject(virtio::BlkErrc why) {
  const auto i = static_cast<size_t>(why);
  add(rejects[i < kRejectReasons ? i : 0], 1);
}

std::string render_prometheus(const std::vector<MetricsSource>& sources) {
  runtime::PromText t;
  auto vol = [](const MetricsSource& s) {
    return runtime::PromText::label("volume", s.volume) + "," + runtime::PromText::label("socket", s.socket);
  };
  auto per_op = [&](const char* name, const char* help, auto field) {
    t.header(name, "counter", help);
    for (const auto& s : sources) {
      for (size_t k = 0; k < kOpKinds; ++k) {
        t.sample(name, vol(s) + ",op=\"" + to_string(static_cast<OpKind>(k)) + "\"", field(s.metrics->op[k]));
      }
    }
  };
  per_op("azote_blk_requests_total", "Requests completed successfully, by operation.",
         [](const OpCounters& c) { return get(c.ops); });
  per_op("azote_blk_bytes_total", "Bytes read or written (discard and write_zeroes: bytes covered).",
         [](const OpCounters& c) { return get(c.bytes); });
  per_op("azote_blk_io_errors_total", "Requests failed with IOERR because the backing store failed.",
         [](const OpCounters& c) { return get(c.errors); });

  t.header("azote_blk_guest_rejects_total", "counter",
           "Malformed or refused requests from the guest, completed without I/O, by reason.");
  for (const auto& s : sources) {
    for (size_t r = 1; r < kRejectReasons; ++r) {
      t.sample("azote_blk_guest_rejects_total",
               vol(s) + ",reason=\"" + virtio::to_string(static_cast<virtio::BlkErrc>(r)) + "\"",
               get(s.metrics->rejects[r]));
    }
  }

  auto scalar = [&](const char* name, const char* type, const char* help, auto field) {
    t.header(name, type, help);
    for (const auto& s : sources) t.sample(name, vol(s), field(*s.metrics));
  };
  scalar("azote_blk_queue_errors_total", "counter", "Virtqueues the driver broke (the queue stops until reset).",
         [](const VolumeMetrics& m) { return get(m.queue_errors); });
  scalar("azote_blk_device_needs_reset", "gauge",
         "1 while the device reports DEVICE_NEEDS_RESET to its driver (a queue broke; cleared by a device reset).",
         [](const VolumeMetrics& m) { return get(m.needs_reset); });
  scalar("azote_blk_throttled_total", "counter", "Requests that waited for the rate limiter.",
         [](const VolumeMetrics& m) { return get(m.throttled); });
  t.header("azote_blk_throttle_wait_seconds_total", "counter", "Time requests spent waiting for the rate limiter.");
  for (const auto& s : sources)
    t.sample("azote_blk_throttle_wait_seconds_total", vol(s), static_cast<double>(get(s.metrics->throttle_wait_ns)) / 1e9);
  scalar("azote_blk_bounce_waits_total", "counter", "Requests that waited for card bounce memory.",
         [](const VolumeMetrics& m) { return get(m.bounce_waits); });
  scalar("azote_blk_resubmitted_total", "counter",
         "Requests taken over from the inflight area at a queue start (card restart without loss).",
         [](const VolumeMetrics& m) { return get(m.resubmitted); });
  scalar("azote_blk_queue_starts_total", "counter", "Virtqueue starts.",
         [](const VolumeMetrics& m) { return get(m.queue_starts); });
  scalar("azote_blk_queues_running", "gauge", "Virtqueues being served now.",
         [](const VolumeMetrics& m) { return get(m.queues_running); });
  scalar("azote_blk_write_cache_writeback", "gauge",
         "Cache mode the driver chose (VIRTIO_BLK_F_CONFIG_WCE): 1 write-back, 0 write-through (FUA on every write).",
         [](const VolumeMetrics& m) { return get(m.write_cache_writeback); });
  scalar("azote_blk_write_through_writes_total", "counter",
         "Write requests completed in write-through mode: durable (RWF_DSYNC) before completion.",
         [](const VolumeMetrics& m) { return get(m.write_through_writes); });
  scalar("azote_blk_config_write_refusals_total", "counter",
         "Config space writes refused (only a writeback byte of 0 or 1 is accepted).",
         [](const VolumeMetrics& m) { return get(m.config_write_refusals); });

  const char* h = "azote_blk_request_duration_seconds";
  t.header(h, "histogram", "Time from taking a request off the ring to completing it, by operation.");
  for (const auto& s : sources) {
    for (size_t k = 0; k < kOpKinds; ++k) {
      const auto& hist = s.metrics->op[k].latency;
      const std::string labels = vol(s) + ",op=\"" + to_string(static_cast<OpKind>(k)) + "\"";
      uint64_t cum = 0;
      for (size_t b = 0; b < kLatencyBucketsUs.size(); ++b) {
        cum += get(hist.buckets[b]);
        char le[32];
        std::snprintf(le, sizeof le, "%g", static_cast<double>(kLatencyBucketsUs[b]) / 1e6);
        t.sample(std::string(h) + "_bucket", labels + ",le=\"" + le + "\"", cum);
      }
      cum += get(hist.buckets[kLatencyBucketsUs.size()]);
      t.sample(std::string(h) + "_bucket", labels + ",le=\"+Inf\"", cum);
      t.sample(std::string(h) + "_sum", labels, static_cast<double>(get(hist.sum_ns)) / 1e9);
      t.sample(std::string(h) + "_count", labels, get(hist.count));
    }
  }
  return t.take();
}

// ---- server ---------------------------------------------------------------------------

void MetricsServer::set_sources(std::vector<MetricsSource> sources) {
  std::lock_guard lock(sources_mutex_);
  sources_ = std::move(sources);
}

Result<std::unique_ptr<MetricsServer>, MetricsError> MetricsServer::start(const std::string& path,
                                                                          std::vector<MetricsSource> sources) {
  std::unique_ptr<MetricsServer> m(new MetricsServer());
  m->sources_ = std::move(sources);
  auto e = runtime::TextEndpoint::start(path, [p = m.get()] {
    std::lock_guard lock(p->sources_mutex_);
    return render_prometheus(p->sources_);
  });
  if (!e) return make_error(MetricsErrc::kSocket, e.error().message(), e.error().errnum);
  m->endpoint_ = std::move(e).value();
  return m;
}

}  // namespace azote::card_blk
