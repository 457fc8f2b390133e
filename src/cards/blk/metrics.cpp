#include "cards/blk/metrics.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "base/log.hpp"

namespace azote::card_blk {
namespace {

constexpr std::chrono::milliseconds kRequestWait{100};
constexpr std::chrono::milliseconds kSendDeadline{1000};

void add(std::atomic<uint64_t>& c, uint64_t v) { c.fetch_add(v, std::memory_order_relaxed); }
uint64_t get(const std::atomic<uint64_t>& c) { return c.load(std::memory_order_relaxed); }

// Label values: backslash, double quote and newline escaped (exposition format).
std::string escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '\\' || c == '"') {
      o += '\\';
      o += c;
    } else if (c == '\n') {
      o += "\\n";
    } else {
      o += c;
    }
  }
  return o;
}

class Text {
 public:
  void header(const char* name, const char* type, const char* help) {
    out_ += "# HELP ";
    out_ += name;
    out_ += ' ';
    out_ += help;
    out_ += "\n# TYPE ";
    out_ += name;
    out_ += ' ';
    out_ += type;
    out_ += '\n';
  }
  void sample(const std::string& name, const std::string& labels, uint64_t v) {
    out_ += name;
    out_ += '{';
    out_ += labels;
    out_ += "} ";
    out_ += std::to_string(v);
    out_ += '\n';
  }
  void sample_f(const std::string& name, const std::string& labels, double v) {
    char b[64];
    std::snprintf(b, sizeof b, "%.9g", v);
    out_ += name + '{' + labels + "} " + b + '\n';
  }
  std::string take() { return std::move(out_); }

 private:
  std::string out_;
};

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
  Text t;
  auto vol = [](const MetricsSource& s) {
    return "volume=\"" + escape(s.volume) + "\",socket=\"" + escape(s.socket) + "\"";
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
    t.sample_f("azote_blk_throttle_wait_seconds_total", vol(s), static_cast<double>(get(s.metrics->throttle_wait_ns)) / 1e9);
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
      t.sample_f(std::string(h) + "_sum", labels, static_cast<double>(get(hist.sum_ns)) / 1e9);
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
  m->path_ = path;
  m->sources_ = std::move(sources);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof a.sun_path)
    return make_error(MetricsErrc::kSocket, "--metrics unix:" + path + ": path too long");
  std::memcpy(a.sun_path, path.data(), path.size());
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode))
      return make_error(MetricsErrc::kSocket, "--metrics unix:" + path + ": exists and is not a socket");
    UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    // SAFETY: `a` is a complete sockaddr_un; the cast is the sockets API.
    if (probe && ::connect(probe.get(), reinterpret_cast<const sockaddr*>(&a), sizeof a) == 0)
      return make_error(MetricsErrc::kSocket, "--metrics unix:" + path + ": another process is serving it");
    ::unlink(path.c_str());  // a stale socket from an earlier run
  }
  m->listen_ = UniqueFd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!m->listen_) return errno_error(MetricsErrc::kSocket, "--metrics: socket");
  // SAFETY: `a` is a complete sockaddr_un; the cast is the sockets API.
  if (::bind(m->listen_.get(), reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0)
    return errno_error(MetricsErrc::kSocket, "--metrics: bind " + path);
  if (::chmod(path.c_str(), 0600) != 0 || ::listen(m->listen_.get(), 8) != 0)
    return errno_error(MetricsErrc::kSocket, "--metrics: listen on " + path);
  m->stop_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!m->stop_) return errno_error(MetricsErrc::kSocket, "--metrics: eventfd");
  m->thread_ = std::thread([p = m.get()] { p->run(); });
  return m;
}

MetricsServer::~MetricsServer() {
  if (thread_.joinable()) {
    const uint64_t one = 1;
    (void)!::write(stop_.get(), &one, sizeof one);
    thread_.join();
  }
  if (listen_) ::unlink(path_.c_str());
}

void MetricsServer::run() {
  for (;;) {
    pollfd p[2] = {{listen_.get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
    if (::poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      LOG_ERROR("metrics: poll: %s", std::strerror(errno));
      return;
    }
    if (p[1].revents != 0) return;
    if (p[0].revents != 0) {
      UniqueFd c(::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
      if (c) serve(std::move(c));
    }
  }
}

void MetricsServer::serve(UniqueFd client) {
  using Clock = std::chrono::steady_clock;
  // The request, if any: wait briefly for it; its content only selects HTTP or plain.
  char req[512];
  size_t got = 0;
  const auto req_end = Clock::now() + kRequestWait;
  while (got < 4) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(req_end - Clock::now()).count();
    if (left <= 0) break;
    pollfd p{client.get(), POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left)) <= 0) break;
    const ssize_t n = ::recv(client.get(), req + got, sizeof req - got, 0);
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  std::string body;
  {
    std::lock_guard lock(sources_mutex_);
    body = render_prometheus(sources_);
  }
  std::string out;
  if (got >= 4 && std::memcmp(req, "GET ", 4) == 0) {
    out = "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: " +
          std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n";
  }
  out += body;
  size_t sent = 0;
  const auto send_end = Clock::now() + kSendDeadline;
  while (sent < out.size()) {
    const ssize_t n = ::send(client.get(), out.data() + sent, out.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno != EAGAIN && errno != EINTR) return;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(send_end - Clock::now()).count();
    if (left <= 0) return;
    pollfd p{client.get(), POLLOUT, 0};
    (void)::poll(&p, 1, static_cast<int>(left));
  }
  ::shutdown(client.get(), SHUT_WR);
  served_.fetch_add(1);
}

}  // namespace azote::card_blk
