#include "net/addr.hpp"

#include <cstdio>

#include "net/wire.hpp"

namespace azote::net {
namespace {

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// A decimal number in [0, max] without sign, spaces or leading zeros; consumes digits
// from `text` at `pos`. Returns -1 if there is none or it is out of range.
int decimal(std::string_view text, size_t& pos, int max) {
  const size_t start = pos;
  int v = 0;
  while (pos < text.size() && text[pos] >= '0' && text[pos] <= '9') {
    v = v * 10 + (text[pos] - '0');
    if (v > max) return -1;
    ++pos;
    if (pos - start > 3) return -1;
  }
  if (pos == start) return -1;
  if (pos - start > 1 && text[start] == '0') return -1;  // "010": octal elsewhere, refused
  return v;
}

}  // namespace

const char* to_string(NetErrc c) {
  switch (c) {
    case NetErrc::kTruncated: return "truncated";
    case NetErrc::kBadLength: return "bad-length";
    case NetErrc::kBadChecksum: return "bad-checksum";
    case NetErrc::kUnsupported: return "unsupported";
    case NetErrc::kFragment: return "fragment";
    case NetErrc::kMalformed: return "malformed";
    case NetErrc::kBadOption: return "bad-option";
    case NetErrc::kBadName: return "bad-name";
    case NetErrc::kPointerLoop: return "pointer-loop";
    case NetErrc::kNoSpace: return "no-space";
    case NetErrc::kBadAddress: return "bad-address";
    case NetErrc::kBadConfig: return "bad-config";
  }
  return "?";
}

MacAddress MacAddress::from_bytes(std::span<const uint8_t> b) {
  std::array<uint8_t, 6> a{};
  for (size_t i = 0; i < 6; ++i) a[i] = wire::u8(b, i);
  return MacAddress(a);
}

Result<MacAddress, NetError> MacAddress::parse(std::string_view text) {
  if (text.size() != 17) return make_error(NetErrc::kBadAddress, "MAC address: want aa:bb:cc:dd:ee:ff");
  std::array<uint8_t, 6> a{};
  for (size_t i = 0; i < 6; ++i) {
    const int hi = hex_digit(text[3 * i]), lo = hex_digit(text[3 * i + 1]);
    if (hi < 0 || lo < 0) return make_error(NetErrc::kBadAddress, "MAC address: not a hex digit");
    if (i < 5 && text[3 * i + 2] != ':' && text[3 * i + 2] != '-') {
      return make_error(NetErrc::kBadAddress, "MAC address: bad separator");
    }
    if (i < 5 && text[3 * i + 2] != text[2]) return make_error(NetErrc::kBadAddress, "MAC address: mixed separators");
    a[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return MacAddress(a);
}

void MacAddress::store(std::span<uint8_t> out) const {
  for (size_t i = 0; i < 6; ++i) wire::put8(out, i, b_[i]);
}

std::string MacAddress::to_string() const {
  char s[18];
  std::snprintf(s, sizeof s, "%02x:%02x:%02x:%02x:%02x:%02x", b_[0], b_[1], b_[2], b_[3], b_[4], b_[5]);
  return s;
}

Ipv4Address Ipv4Address::from_bytes(std::span<const uint8_t> b) { return from_u32(wire::be32(b, 0)); }

Result<Ipv4Address, NetError> Ipv4Address::parse(std::string_view text) {
  size_t pos = 0;
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) {
    if (i > 0) {
      if (pos >= text.size() || text[pos] != '.') return make_error(NetErrc::kBadAddress, "IPv4 address: want a.b.c.d");
      ++pos;
    }
    const int octet = decimal(text, pos, 255);
    if (octet < 0) return make_error(NetErrc::kBadAddress, "IPv4 address: bad octet");
    v = v << 8 | static_cast<uint32_t>(octet);
  }
  if (pos != text.size()) return make_error(NetErrc::kBadAddress, "IPv4 address: trailing characters");
  return from_u32(v);
}

std::array<uint8_t, 4> Ipv4Address::bytes() const {
  return {static_cast<uint8_t>(v_ >> 24), static_cast<uint8_t>(v_ >> 16), static_cast<uint8_t>(v_ >> 8),
          static_cast<uint8_t>(v_)};
}

void Ipv4Address::store(std::span<uint8_t> out) const { wire::put32(out, 0, v_); }

std::string Ipv4Address::to_string() const {
  const auto b = bytes();
  char s[16];
  std::snprintf(s, sizeof s, "%u.%u.%u.%u", b[0], b[1], b[2], b[3]);
  return s;
}

Ipv4Prefix Ipv4Prefix::of(Ipv4Address addr, uint8_t length) {
  Ipv4Prefix p;
  p.len_ = length > 32 ? 32 : length;
  p.net_ = Ipv4Address::from_u32(addr.value() & p.mask());
  return p;
}

Result<Ipv4Prefix, NetError> Ipv4Prefix::parse(std::string_view text) {
  const size_t slash = text.find('/');
  if (slash == std::string_view::npos) return make_error(NetErrc::kBadAddress, "IPv4 prefix: want a.b.c.d/len");
  AZOTE_TRY(addr, Ipv4Address::parse(text.substr(0, slash)));
  size_t pos = slash + 1;
  const int len = decimal(text, pos, 32);
  if (len < 0 || pos != text.size()) return make_error(NetErrc::kBadAddress, "IPv4 prefix: bad length");
  Ipv4Prefix p = of(addr, static_cast<uint8_t>(len));
  if (p.net_ != addr) return make_error(NetErrc::kBadAddress, "IPv4 prefix: host bits set");
  return p;
}

std::string Ipv4Prefix::to_string() const { return net_.to_string() + "/" + std::to_string(len_); }

}  // namespace azote::net
