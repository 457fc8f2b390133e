#include "ec2api/timestamp.hpp"

#include <cstdint>

namespace azote::ec2api {

namespace {

using namespace std::chrono;

void put_digits(std::string& out, int64_t v, int width) {
  char buf[8];
  for (int i = width - 1; i >= 0; --i) {
    buf[i] = static_cast<char>('0' + v % 10);
    v /= 10;
  }
  out.append(buf, static_cast<size_t>(width));
}

// Digits s[pos, pos+n) as a number; -1 if any is not a digit.
int64_t digits(std::string_view s, size_t pos, size_t n) {
  if (pos + n > s.size()) return -1;
  int64_t v = 0;
  for (size_t i = pos; i < pos + n; ++i) {
    if (s[i] < '0' || s[i] > '9') return -1;
    v = v * 10 + (s[i] - '0');
  }
  return v;
}

}  // namespace

std::string format_timestamp(Timestamp t) {
  const Timestamp lo = sys_days{year{0} / January / 1};
  const Timestamp hi = sys_days{year{9999} / December / 31} + hours{23} + minutes{59} + seconds{59} + milliseconds{999};
  if (t < lo) t = lo;
  if (t > hi) t = hi;
  const auto day = floor<days>(t);
  const year_month_day ymd{day};
  const hh_mm_ss<milliseconds> hms{t - day};
  std::string out;
  out.reserve(24);
  put_digits(out, static_cast<int>(ymd.year()), 4);
  out += '-';
  put_digits(out, static_cast<unsigned>(ymd.month()), 2);
  out += '-';
  put_digits(out, static_cast<unsigned>(ymd.day()), 2);
  out += 'T';
  put_digits(out, hms.hours().count(), 2);
  out += ':';
  put_digits(out, hms.minutes().count(), 2);
  out += ':';
  put_digits(out, hms.seconds().count(), 2);
  out += '.';
  put_digits(out, hms.subseconds().count(), 3);
  out += 'Z';
  return out;
}

std::optional<Timestamp> parse_timestamp(std::string_view s) {
  // YYYY-MM-DDTHH:MM:SS
  if (s.size() < 20 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':') return std::nullopt;
  const int64_t y = digits(s, 0, 4), mo = digits(s, 5, 2), d = digits(s, 8, 2);
  const int64_t h = digits(s, 11, 2), mi = digits(s, 14, 2), se = digits(s, 17, 2);
  if (y < 0 || mo < 1 || mo > 12 || d < 1 || h < 0 || h > 23 || mi < 0 || mi > 59 || se < 0 || se > 59)
    return std::nullopt;
  const year_month_day ymd{year{static_cast<int>(y)}, month{static_cast<unsigned>(mo)}, day{static_cast<unsigned>(d)}};
  if (!ymd.ok()) return std::nullopt;
  int64_t ms = 0;
  size_t pos = 19;
  if (s[pos] == '.') {
    ++pos;
    size_t n = 0;
    while (pos + n < s.size() && s[pos + n] >= '0' && s[pos + n] <= '9') ++n;
    if (n < 1 || n > 9) return std::nullopt;
    for (size_t i = 0; i < 3; ++i) ms = ms * 10 + (i < n ? s[pos + i] - '0' : 0);
    pos += n;
  }
  if (pos + 1 != s.size() || s[pos] != 'Z') return std::nullopt;
  return Timestamp{sys_days{ymd} + hours{h} + minutes{mi} + seconds{se} + milliseconds{ms}};
}

}  // namespace azote::ec2api
