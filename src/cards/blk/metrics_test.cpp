#include "cards/blk/metrics.hpp"

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <vector>

namespace azote::card_blk {
namespace {

std::string fetch(const std::string& path, const std::string& request) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::memcpy(a.sun_path, path.data(), path.size());
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0) {  // NOLINT
    ::close(fd);
    return "<connect failed>";
  }
  if (!request.empty()) {
    EXPECT_EQ(::send(fd, request.data(), request.size(), MSG_NOSIGNAL), static_cast<ssize_t>(request.size()));
  }
  std::string out;
  char buf[4096];
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 3000) <= 0) break;
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

TEST(Metrics, PrometheusText) {
  VolumeMetrics m;
  m.of(OpKind::kRead).ops = 3;
  m.of(OpKind::kRead).bytes = 12288;
  m.of(OpKind::kWrite).errors = 1;
  m.of(OpKind::kRead).latency.record(30'000);      // 30 us
  m.of(OpKind::kRead).latency.record(3'000'000);   // 3 ms
  m.of(OpKind::kRead).latency.record(9'000'000'000);  // 9 s: +Inf
  m.reject(virtio::BlkErrc::kOutOfRange);
  m.throttled = 2;
  m.throttle_wait_ns = 1'500'000'000;
  m.write_cache_writeback = 0;
  m.write_through_writes = 5;
  m.config_write_refusals = 2;
  const std::string t = render_prometheus({{"vol\"0", "/run/v0.sock", &m}});
  const std::string l = "volume=\"vol\\\"0\",socket=\"/run/v0.sock\"";
  for (const std::string& want : std::vector<std::string>{
           std::string("# TYPE azote_blk_requests_total counter"),
           "azote_blk_requests_total{" + l + ",op=\"read\"} 3",
           "azote_blk_bytes_total{" + l + ",op=\"read\"} 12288",
           "azote_blk_io_errors_total{" + l + ",op=\"write\"} 1",
           "azote_blk_guest_rejects_total{" + l + ",reason=\"out-of-range\"} 1",
           "azote_blk_throttled_total{" + l + "} 2",
           "azote_blk_throttle_wait_seconds_total{" + l + "} 1.5",
           std::string("# TYPE azote_blk_write_cache_writeback gauge"),
           "azote_blk_write_cache_writeback{" + l + "} 0",
           "azote_blk_write_through_writes_total{" + l + "} 5",
           "azote_blk_config_write_refusals_total{" + l + "} 2",
           std::string("# TYPE azote_blk_request_duration_seconds histogram"),
           "azote_blk_request_duration_seconds_bucket{" + l + ",op=\"read\",le=\"2.5e-05\"} 0",
           "azote_blk_request_duration_seconds_bucket{" + l + ",op=\"read\",le=\"5e-05\"} 1",
           "azote_blk_request_duration_seconds_bucket{" + l + ",op=\"read\",le=\"0.005\"} 2",
           "azote_blk_request_duration_seconds_bucket{" + l + ",op=\"read\",le=\"2.5\"} 2",
           "azote_blk_request_duration_seconds_bucket{" + l + ",op=\"read\",le=\"+Inf\"} 3",
           "azote_blk_request_duration_seconds_count{" + l + ",op=\"read\"} 3",
       })
    EXPECT_NE(t.find(want + "\n"), std::string::npos) << want << "\n---\n" << t;
}

TEST(Metrics, ServerPlainAndHttp) {
  VolumeMetrics m;
  m.of(OpKind::kFlush).ops = 7;
  const std::string path = ::testing::TempDir() + "/card-blk-metrics-" + std::to_string(::getpid()) + ".sock";
  auto s = MetricsServer::start(path, {{"v", "/s", &m}});
  ASSERT_TRUE(s) << s.error().message();
  const std::string plain = fetch(path, "");
  EXPECT_EQ(plain.rfind("# HELP", 0), 0u) << plain.substr(0, 200);
  EXPECT_NE(plain.find("azote_blk_requests_total{volume=\"v\",socket=\"/s\",op=\"flush\"} 7\n"), std::string::npos);
  const std::string http = fetch(path, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(http.rfind("HTTP/1.0 200 OK\r\n", 0), 0u) << http.substr(0, 200);
  EXPECT_NE(http.find("Content-Type: text/plain; version=0.0.4"), std::string::npos);
  EXPECT_EQ(http.substr(http.find("\r\n\r\n") + 4), render_prometheus({{"v", "/s", &m}}));
  // The server counts a client after it shut the connection down, which the client
  // may see (EOF) first.
  for (int i = 0; i < 200 && (*s)->served() < 2; ++i) ::usleep(1000);
  EXPECT_EQ((*s)->served(), 2u);
  s.value().reset();
  EXPECT_NE(::access(path.c_str(), F_OK), 0);  // socket removed at stop
}

}  // namespace
}  // namespace azote::card_blk
