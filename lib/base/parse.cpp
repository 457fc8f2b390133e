#include "base/parse.hpp"

#include <cctype>
#include <limits>

namespace azote {

std::optional<uint64_t> parse_uint(std::string_view s, uint64_t lo, uint64_t hi) {
  if (s.empty() || s.size() > 20) return std::nullopt;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    const uint64_t d = static_cast<uint64_t>(c - '0');
    if (v > (std::numeric_limits<uint64_t>::max() - d) / 10) return std::nullopt;
    v = v * 10 + d;
  }
  if (v < lo || v > hi) return std::nullopt;
  return v;
}

std::optional<uint64_t> parse_size(std::string_view s) {
  size_t digits = 0;
  while (digits < s.size() && std::isdigit(static_cast<unsigned char>(s[digits])) != 0) ++digits;
  if (digits == 0) return std::nullopt;
  auto base = parse_uint(s.substr(0, digits), 0, std::numeric_limits<uint64_t>::max());
  if (!base) return std::nullopt;
  std::string_view suffix = s.substr(digits);
  unsigned shift = 0;
  if (!suffix.empty()) {
    switch (std::toupper(static_cast<unsigned char>(suffix[0]))) {
      case 'K': shift = 10; break;
      case 'M': shift = 20; break;
      case 'G': shift = 30; break;
      case 'T': shift = 40; break;
      case 'B': shift = 0; break;
      default: return std::nullopt;
    }
    std::string_view rest = suffix.substr(1);
    if (std::toupper(static_cast<unsigned char>(suffix[0])) == 'B') {
      if (!rest.empty()) return std::nullopt;
    } else if (!(rest.empty() || rest == "B" || rest == "b" || rest == "iB" || rest == "ib")) {
      return std::nullopt;
    }
  }
  if (shift != 0 && *base > (std::numeric_limits<uint64_t>::max() >> shift)) return std::nullopt;
  return *base << shift;
}

std::optional<int> parse_fd_ref(std::string_view s) {
  if (s.substr(0, 3) != "fd:") return std::nullopt;
  const auto n = parse_uint(s.substr(3), 3, 1 << 20);
  if (!n) return std::nullopt;
  return static_cast<int>(*n);
}

CommandLine split_command_line(const std::vector<std::string>& args, const std::set<std::string>& with_value,
                               std::string_view stray_hint) {
  CommandLine c;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string a = args[i], value;
    if (a == "-h" || a == "--help") {
      c.help = true;
      return c;
    }
    if (a == "--version") {
      c.version = true;
      return c;
    }
    bool inline_value = false;
    if (const size_t eq = a.find('='); a.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = a.substr(eq + 1);
      a = a.substr(0, eq);
      inline_value = true;
    }
    if (with_value.count(a) == 0) {
      c.error = a.rfind("-", 0) == 0 ? "unknown option " + args[i] + " (see --help)"
                                     : "unexpected argument \"" + args[i] + "\" (" +
                                           (stray_hint.empty() ? "" : std::string(stray_hint) + "; ") + "see --help)";
      return c;
    }
    if (!inline_value) {
      if (i + 1 >= args.size()) {
        c.error = a + " needs a value";
        return c;
      }
      value = args[++i];
    }
    c.flags.emplace_back(std::move(a), std::move(value));
  }
  return c;
}

}  // namespace azote
