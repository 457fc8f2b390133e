// Test and fuzz helper (not part of the library): a request in the plain-text form the AWS
// signature test suites use,
//   METHOD SP target SP HTTP/1.1 \n  (Name:value \n)*  \n  body
// where the target may contain spaces (the method ends at the first space, the version
// starts after the last), a header line starting with a space or tab continues the previous
// header's value (obs-fold), and the target's '?' separates path and query.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "sigv4/sigv4.hpp"

namespace azote::sigv4 {

inline std::optional<Request> parse_raw_request(std::string_view text) {
  auto next_line = [&text]() -> std::optional<std::string_view> {
    if (text.empty()) return std::nullopt;
    const size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    return line;
  };
  const auto first = next_line();
  if (!first) return std::nullopt;
  const size_t sp1 = first->find(' ');
  const size_t sp2 = first->rfind(' ');
  if (sp1 == std::string_view::npos || sp2 == sp1) return std::nullopt;
  Request req;
  req.method = std::string(first->substr(0, sp1));
  const std::string_view target = first->substr(sp1 + 1, sp2 - sp1 - 1);
  const size_t q = target.find('?');
  req.path = std::string(target.substr(0, q));
  if (q != std::string_view::npos) req.query = std::string(target.substr(q + 1));
  while (const auto line = next_line()) {
    if (line->empty()) break;
    if (line->front() == ' ' || line->front() == '\t') {
      if (req.headers.empty()) return std::nullopt;
      req.headers.back().second += ' ';
      req.headers.back().second += *line;
      continue;
    }
    const size_t colon = line->find(':');
    if (colon == std::string_view::npos) return std::nullopt;
    req.headers.emplace_back(std::string(line->substr(0, colon)), std::string(line->substr(colon + 1)));
  }
  req.body = std::string(text);
  return req;
}

}  // namespace azote::sigv4
