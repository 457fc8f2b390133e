// Helpers for the net tests: golden frames are written as hex with spaces between fields.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <span>
#include <string_view>
#include <vector>

namespace azote::net::testing {

// "ff ff 0800" -> bytes; spaces and newlines are ignored, anything else not hex aborts.
inline std::vector<uint8_t> hex(std::string_view s) {
  auto digit = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    std::abort();
  };
  std::vector<uint8_t> out;
  int hi = -1;
  for (char c : s) {
    if (c == ' ' || c == '\n') continue;
    const int d = digit(c);
    if (hi < 0) {
      hi = d;
    } else {
      out.push_back(static_cast<uint8_t>(hi << 4 | d));
      hi = -1;
    }
  }
  if (hi >= 0) std::abort();
  return out;
}

inline std::vector<uint8_t> cat(std::initializer_list<std::span<const uint8_t>> parts) {
  std::vector<uint8_t> out;
  for (auto p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

// The first n bytes in a buffer of exactly n bytes (so ASan sees any read past them).
inline std::vector<uint8_t> prefix(std::span<const uint8_t> b, size_t n) { return {b.begin(), b.begin() + n}; }

}  // namespace azote::net::testing
