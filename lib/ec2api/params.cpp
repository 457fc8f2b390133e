#include "ec2api/params.hpp"

#include <algorithm>
#include <utility>

#include "base/hex.hpp"

namespace azote::ec2api {

namespace {

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }



// Well-formed UTF-8 (no overlongs, no surrogates, at most U+10FFFF).
bool valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t n;
    uint32_t cp;
    if (c >= 0xc2 && c <= 0xdf) {
      n = 1;
      cp = c & 0x1fu;
    } else if (c >= 0xe0 && c <= 0xef) {
      n = 2;
      cp = c & 0x0fu;
    } else if (c >= 0xf0 && c <= 0xf4) {
      n = 3;
      cp = c & 0x07u;
    } else {
      return false;
    }
    if (i + n >= s.size()) return false;
    for (size_t k = 1; k <= n; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xc0u) != 0x80u) return false;
      cp = (cp << 6) | (cc & 0x3fu);
    }
    if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
      return false;
    i += n + 1;
  }
  return true;
}

// A name or value for a message: at most 64 bytes, cut at a character boundary.
std::string shown(std::string_view s) {
  constexpr size_t kMax = 64;
  if (s.size() <= kMax) return std::string(s);
  size_t n = kMax;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xc0u) == 0x80u) --n;
  return std::string(s.substr(0, n)) + "...";
}

// A list index: decimal, no leading zero, 1..kMaxListIndex.
std::optional<uint32_t> list_index(std::string_view s) {
  if (s.empty() || s.size() > 6 || s[0] == '0') return std::nullopt;
  uint32_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<uint32_t>(c - '0');
  }
  if (v > kMaxListIndex) return std::nullopt;
  return v;
}

bool protocol_parameter(std::string_view name) {
  return name == "Action" || name == "Version" || starts_with(name, "X-Amz-");
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

Unexpected<Ec2Error> invalid_value(const std::string& name, std::string_view value, std::string_view why) {
  return api_error(kInvalidParameterValue,
                   "Invalid value '" + shown(value) + "' for parameter " + name + ": " + std::string(why));
}

}  // namespace

// ---- Params ----

Result<Params, Ec2Error> Params::parse(std::string_view form, const Limits& limits) {
  if (form.size() > limits.max_bytes)
    return api_error(kInvalidRequest, "The request of " + std::to_string(form.size()) +
                                          " bytes exceeds the limit of " + std::to_string(limits.max_bytes) + " bytes");
  Params p;
  std::string name, value;
  size_t pos = 0;
  while (pos <= form.size()) {
    size_t amp = form.find('&', pos);
    if (amp == std::string_view::npos) amp = form.size();
    const std::string_view pair = form.substr(pos, amp - pos);
    pos = amp + 1;
    if (pair.empty()) continue;
    if (p.entries_.size() >= limits.max_params)
      return api_error(kInvalidRequest,
                       "The request has more than " + std::to_string(limits.max_params) + " parameters");
    const size_t eq = pair.find('=');
    const std::string_view raw_name = pair.substr(0, eq);
    const std::string_view raw_value = eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1);
    if (!form_decode(raw_name, name))
      return api_error(kMalformedQueryString, "Bad percent-encoding in the parameter name '" + shown(raw_name) + "'");
    if (name.empty()) return api_error(kMalformedQueryString, "A parameter has no name");
    if (name.size() > limits.max_name_bytes)
      return api_error(kInvalidRequest, "The parameter name '" + shown(name) + "' is longer than " +
                                            std::to_string(limits.max_name_bytes) + " bytes");
    if (!valid_utf8(name) ||
        std::any_of(name.begin(), name.end(), [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; }))
      return api_error(kMalformedQueryString, "The parameter name '" + shown(raw_name) + "' is not valid");
    if (!form_decode(raw_value, value))
      return api_error(kMalformedQueryString, "Bad percent-encoding in the value of parameter " + name);
    if (!valid_utf8(value)) return api_error(kMalformedQueryString, "The value of parameter " + name + " is not UTF-8");
    p.entries_.push_back(Entry{name, value});
  }
  p.by_name_.resize(p.entries_.size());
  for (size_t i = 0; i < p.entries_.size(); ++i) p.by_name_[i] = static_cast<uint32_t>(i);
  std::stable_sort(p.by_name_.begin(), p.by_name_.end(),
                   [&](uint32_t a, uint32_t b) { return p.entries_[a].name < p.entries_[b].name; });
  for (size_t i = 1; i < p.by_name_.size(); ++i) {
    const std::string& n = p.entries_[p.by_name_[i]].name;
    if (n == p.entries_[p.by_name_[i - 1]].name)
      return api_error(kMalformedQueryString, "The parameter " + shown(n) + " appears more than once");
  }
  p.used_.assign(p.entries_.size(), 0);
  for (size_t i = 0; i < p.entries_.size(); ++i)
    if (protocol_parameter(p.entries_[i].name)) p.used_[i] = 1;
  return p;
}

std::optional<size_t> Params::take(std::string_view name) const {
  auto it = std::lower_bound(by_name_.begin(), by_name_.end(), name,
                             [&](uint32_t i, std::string_view n) { return std::string_view(entries_[i].name) < n; });
  if (it == by_name_.end() || entries_[*it].name != name) return std::nullopt;
  used_[*it] = 1;
  return *it;
}

std::pair<size_t, size_t> Params::range(std::string_view prefix) const {
  auto lo = std::lower_bound(by_name_.begin(), by_name_.end(), prefix,
                             [&](uint32_t i, std::string_view n) { return std::string_view(entries_[i].name) < n; });
  auto hi = lo;
  while (hi != by_name_.end() && starts_with(entries_[*hi].name, prefix)) ++hi;
  return {static_cast<size_t>(lo - by_name_.begin()), static_cast<size_t>(hi - by_name_.begin())};
}

std::string_view Params::action() const {
  const auto i = take("Action");
  return i ? std::string_view(entries_[*i].value) : std::string_view{};
}

std::string_view Params::version() const {
  const auto i = take("Version");
  return i ? std::string_view(entries_[*i].value) : std::string_view{};
}

Result<void, Ec2Error> Params::check_action_version(std::string_view version) const {
  if (action().empty()) return api_error(kMissingAction, "The request must contain the parameter Action");
  if (this->version().empty())
    return api_error(kMissingParameter, "The request must contain the parameter Version");
  if (this->version() != version)
    return api_error(kNoSuchVersion, "The requested version (" + shown(this->version()) +
                                         ") of service AmazonEC2 does not exist; this endpoint serves " +
                                         std::string(version));
  return {};
}

std::vector<std::string_view> Params::unused() const {
  std::vector<std::string_view> out;
  for (size_t i = 0; i < entries_.size(); ++i)
    if (!used_[i]) out.push_back(entries_[i].name);
  return out;
}

Result<void, Ec2Error> Params::check_all_used() const {
  for (size_t i = 0; i < entries_.size(); ++i)
    if (!used_[i])
      return api_error(kUnknownParameter, "The parameter " + shown(entries_[i].name) + " is not recognized");
  return {};
}

// ---- Node ----

std::string Node::name(std::string_view member) const { return prefix_ + std::string(member); }

std::optional<std::string_view> Node::get(std::string_view member) const {
  const auto i = p_->take(name(member));
  if (!i) return std::nullopt;
  return std::string_view(p_->entries_[*i].value);
}

Result<std::string_view, Ec2Error> Node::required(std::string_view member) const {
  const auto v = get(member);
  if (!v) return api_error(kMissingParameter, "The request must contain the parameter " + name(member));
  return *v;
}

Result<std::optional<int64_t>, Ec2Error> Node::get_int(std::string_view member, int64_t lo, int64_t hi) const {
  const auto v = get(member);
  if (!v) return std::optional<int64_t>{};
  std::string_view s = *v;
  const bool neg = !s.empty() && s[0] == '-';
  if (neg) s.remove_prefix(1);
  if (s.empty() || !std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return invalid_value(name(member), *v, "expected an integer");
  constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();
  constexpr uint64_t kMinMagnitude = uint64_t{1} << 63;  // |INT64_MIN|
  uint64_t u = 0;
  bool fits = true;
  for (char c : s) {
    const auto d = static_cast<uint64_t>(c - '0');
    if (u > (kMax - d) / 10) {
      fits = false;
      break;
    }
    u = u * 10 + d;
  }
  if (fits) fits = neg ? u <= kMinMagnitude : u < kMinMagnitude;
  int64_t x = 0;
  if (fits) x = !neg ? static_cast<int64_t>(u) : u == kMinMagnitude ? std::numeric_limits<int64_t>::min()
                                                                   : -static_cast<int64_t>(u);
  if (!fits || x < lo || x > hi)
    return invalid_value(name(member), *v,
                         "expected an integer from " + std::to_string(lo) + " to " + std::to_string(hi));
  return std::optional<int64_t>{x};
}

Result<std::optional<bool>, Ec2Error> Node::get_bool(std::string_view member) const {
  const auto v = get(member);
  if (!v) return std::optional<bool>{};
  if (iequals(*v, "true")) return std::optional<bool>{true};
  if (iequals(*v, "false")) return std::optional<bool>{false};
  return invalid_value(name(member), *v, "expected true or false");
}

Result<std::optional<Timestamp>, Ec2Error> Node::get_timestamp(std::string_view member) const {
  const auto v = get(member);
  if (!v) return std::optional<Timestamp>{};
  const auto t = parse_timestamp(*v);
  if (!t) return invalid_value(name(member), *v, "expected an ISO 8601 time such as 2026-12-07T21:00:00Z");
  return std::optional<Timestamp>{*t};
}

bool Node::has(std::string_view member) const {
  const std::string full = name(member);
  const auto [lo, hi] = p_->range(full);
  for (size_t k = lo; k < hi; ++k) {
    const std::string& n = p_->entries_[p_->by_name_[k]].name;
    if (n.size() == full.size() || n[full.size()] == '.') return true;
  }
  return false;
}

Node Node::sub(std::string_view member) const { return Node(p_, name(member) + "."); }

std::vector<Node> Node::list(std::string_view member) const {
  const std::string base = name(member) + ".";
  const auto [lo, hi] = p_->range(base);
  std::vector<uint32_t> indices;
  for (size_t k = lo; k < hi; ++k) {
    const std::string_view rest = std::string_view(p_->entries_[p_->by_name_[k]].name).substr(base.size());
    const size_t dot = rest.find('.');
    if (dot == std::string_view::npos) continue;  // "Member.N" itself: a scalar, not a structure
    if (const auto idx = list_index(rest.substr(0, dot))) indices.push_back(*idx);
  }
  std::sort(indices.begin(), indices.end());
  indices.erase(std::unique(indices.begin(), indices.end()), indices.end());
  std::vector<Node> out;
  out.reserve(indices.size());
  for (uint32_t i : indices) out.push_back(Node(p_, base + std::to_string(i) + "."));
  return out;
}

std::vector<std::string_view> Node::strings(std::string_view member) const {
  const std::string base = name(member) + ".";
  const auto [lo, hi] = p_->range(base);
  std::vector<std::pair<uint32_t, uint32_t>> found;  // (index, entry)
  for (size_t k = lo; k < hi; ++k) {
    const uint32_t e = p_->by_name_[k];
    if (const auto idx = list_index(std::string_view(p_->entries_[e].name).substr(base.size())))
      found.emplace_back(*idx, e);
  }
  std::sort(found.begin(), found.end());
  std::vector<std::string_view> out;
  out.reserve(found.size());
  for (const auto& [idx, e] : found) {
    p_->used_[e] = 1;
    out.push_back(p_->entries_[e].value);
  }
  return out;
}

}  // namespace azote::ec2api
