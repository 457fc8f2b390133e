// Strong types for link and network addresses: MacAddress, Ipv4Address, Ipv4Prefix (CIDR).
// Text forms are parsed strictly ("02:00:0a:00:01:05", "10.0.1.5", "10.0.0.0/16"): no
// leading zeros in IPv4 octets (they read as octal elsewhere), no spaces, no shorthand.
#pragma once

#include <array>
#include <compare>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "base/result.hpp"
#include "net/error.hpp"

namespace azote::net {

class MacAddress {
 public:
  constexpr MacAddress() = default;
  constexpr explicit MacAddress(const std::array<uint8_t, 6>& b) : b_(b) {}
  // The first 6 bytes of `b`, which must hold at least 6.
  static MacAddress from_bytes(std::span<const uint8_t> b);
  // "aa:bb:cc:dd:ee:ff" (hex digits in either case; '-' separators accepted too).
  static Result<MacAddress, NetError> parse(std::string_view text);
  static constexpr MacAddress broadcast() { return MacAddress({0xff, 0xff, 0xff, 0xff, 0xff, 0xff}); }

  const std::array<uint8_t, 6>& bytes() const { return b_; }
  void store(std::span<uint8_t> out) const;  // 6 bytes
  std::string to_string() const;             // lower-case, ':'-separated

  bool is_zero() const { return *this == MacAddress(); }
  bool is_broadcast() const { return *this == broadcast(); }
  bool is_multicast() const { return (b_[0] & 1) != 0; }  // broadcast included
  bool is_unicast() const { return !is_multicast(); }
  bool is_locally_administered() const { return (b_[0] & 2) != 0; }

  friend constexpr auto operator<=>(const MacAddress&, const MacAddress&) = default;

 private:
  std::array<uint8_t, 6> b_{};
};

class Ipv4Address {
 public:
  constexpr Ipv4Address() = default;
  constexpr Ipv4Address(uint8_t a, uint8_t b, uint8_t c, uint8_t d)
      : v_((uint32_t{a} << 24) | (uint32_t{b} << 16) | (uint32_t{c} << 8) | d) {}
  // Host-order value: 10.0.1.5 is 0x0a000105.
  static constexpr Ipv4Address from_u32(uint32_t v) {
    Ipv4Address a;
    a.v_ = v;
    return a;
  }
  // Network order, the first 4 bytes of `b` (which must hold at least 4).
  static Ipv4Address from_bytes(std::span<const uint8_t> b);
  static Result<Ipv4Address, NetError> parse(std::string_view text);
  static constexpr Ipv4Address any() { return Ipv4Address(); }
  static constexpr Ipv4Address broadcast() { return from_u32(0xffffffffu); }

  constexpr uint32_t value() const { return v_; }
  std::array<uint8_t, 4> bytes() const;
  void store(std::span<uint8_t> out) const;  // 4 bytes, network order
  std::string to_string() const;

  bool is_any() const { return v_ == 0; }
  bool is_broadcast() const { return v_ == 0xffffffffu; }
  bool is_multicast() const { return (v_ >> 28) == 0xe; }
  bool is_loopback() const { return (v_ >> 24) == 127; }
  bool is_link_local() const { return (v_ >> 16) == 0xa9fe; }  // 169.254/16 (IMDS lives here)

  friend constexpr auto operator<=>(const Ipv4Address&, const Ipv4Address&) = default;

 private:
  uint32_t v_ = 0;
};

// An IPv4 prefix: network address and length 0..32, host bits always zero.
class Ipv4Prefix {
 public:
  constexpr Ipv4Prefix() = default;
  // Masks `addr` to `length` bits; a length above 32 is a bug and is clamped to 32.
  static Ipv4Prefix of(Ipv4Address addr, uint8_t length);
  // "10.0.0.0/16". Strict: host bits must be zero ("10.0.1.5/16" is refused).
  static Result<Ipv4Prefix, NetError> parse(std::string_view text);

  Ipv4Address network() const { return net_; }
  uint8_t length() const { return len_; }
  Ipv4Address netmask() const { return Ipv4Address::from_u32(mask()); }
  Ipv4Address last() const { return Ipv4Address::from_u32(net_.value() | ~mask()); }  // broadcast
  uint32_t mask() const { return len_ == 0 ? 0 : ~uint32_t{0} << (32 - len_); }
  bool contains(Ipv4Address a) const { return (a.value() & mask()) == net_.value(); }
  // Whether every address of `p` is inside this prefix.
  bool contains(const Ipv4Prefix& p) const { return p.len_ >= len_ && contains(p.net_); }
  bool overlaps(const Ipv4Prefix& p) const { return contains(p) || p.contains(*this); }
  std::string to_string() const;

  friend constexpr auto operator<=>(const Ipv4Prefix&, const Ipv4Prefix&) = default;

 private:
  Ipv4Address net_;
  uint8_t len_ = 0;
};

}  // namespace azote::net
