// Minimal leveled logging to stderr (or a file). Guest-triggerable messages must go
// through RateLimit so a guest cannot flood the host log.
#pragma once

#include <string>

#include <atomic>
#include <chrono>
#include <cstdarg>
#include <cstdint>
#include <cstdio>

namespace azote::log {

enum class Level { kError = 0, kWarn = 1, kInfo = 2, kDebug = 3 };

void set_level(Level l);
// "error", "warn", "info", "debug" (what --log-level takes); anything else is kInfo.
Level level_from_name(const std::string& name);
Level level();
// Where full diagnostics (register dumps) go; stderr by default.
void set_sink(std::FILE* f);
std::FILE* sink();

void write(Level l, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

// Allows `burst` events per `period`; counts what it suppresses. Thread-safe.
class RateLimit {
 public:
  RateLimit(uint32_t burst, std::chrono::milliseconds period) : burst_(burst), period_(period) {}
  bool allow();
  uint64_t suppressed() const { return suppressed_.load(std::memory_order_relaxed); }

 private:
  uint32_t burst_;
  std::chrono::milliseconds period_;
  std::atomic<int64_t> window_start_{0};
  std::atomic<uint32_t> in_window_{0};
  std::atomic<uint64_t> suppressed_{0};
};

}  // namespace azote::log

#define AZOTE_LOG(lvl, ...)                                                   \
  do {                                                                        \
    if (static_cast<int>(lvl) <= static_cast<int>(::azote::log::level()))    \
      ::azote::log::write(lvl, __VA_ARGS__);                                  \
  } while (0)
#define LOG_ERROR(...) AZOTE_LOG(::azote::log::Level::kError, __VA_ARGS__)
#define LOG_WARN(...) AZOTE_LOG(::azote::log::Level::kWarn, __VA_ARGS__)
#define LOG_INFO(...) AZOTE_LOG(::azote::log::Level::kInfo, __VA_ARGS__)
#define LOG_DEBUG(...) AZOTE_LOG(::azote::log::Level::kDebug, __VA_ARGS__)
