#include "base/log.hpp"

#include <ctime>

namespace azote::log {
namespace {
std::atomic<Level> g_level{Level::kWarn};
std::atomic<std::FILE*> g_sink{nullptr};
const char* name(Level l) {
  switch (l) {
    case Level::kError: return "error";
    case Level::kWarn: return "warn";
    case Level::kInfo: return "info";
    case Level::kDebug: return "debug";
  }
  return "?";
}
}  // namespace

Level level_from_name(const std::string& n) {
  return n == "error" ? Level::kError : n == "warn" ? Level::kWarn : n == "debug" ? Level::kDebug : Level::kInfo;
}

void set_level(Level l) { g_level.store(l); }
Level level() { return g_level.load(std::memory_order_relaxed); }
void set_sink(std::FILE* f) { g_sink.store(f); }
std::FILE* sink() {
  std::FILE* f = g_sink.load();
  return f != nullptr ? f : stderr;
}

void write(Level l, const char* fmt, ...) {
  char buf[2048];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  std::fprintf(sink(), "[%ld.%06ld %s] %s\n", static_cast<long>(ts.tv_sec), ts.tv_nsec / 1000,
               name(l), buf);
  std::fflush(sink());
}

bool RateLimit::allow() {
  const int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::steady_clock::now().time_since_epoch())
                          .count();
  int64_t start = window_start_.load(std::memory_order_relaxed);
  if (now - start >= period_.count() &&
      window_start_.compare_exchange_strong(start, now, std::memory_order_relaxed)) {
    in_window_.store(0, std::memory_order_relaxed);
  }
  if (in_window_.fetch_add(1, std::memory_order_relaxed) < burst_) return true;
  suppressed_.fetch_add(1, std::memory_order_relaxed);
  return false;
}

}  // namespace azote::log
