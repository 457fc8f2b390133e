// The address translation between a guest and the private namespace's kernel.
//
// Guest → kernel (inject): a TCP segment from the ENI's address to 169.254.169.254:80 gets
// the slot's alias (100.64.0.0 + slot + 1) as its source, so the kernel sees every ENI as a
// distinct client even when two ENIs share an address (two VPCs). Kernel → guest (the TUN
// reader): a segment from 169.254.169.254:80 to an alias gets the ENI's address as its
// destination and TTL 1. IPv4 and TCP checksums are updated incrementally (RFC 1624, via
// lib/net); both directions are validated completely first (lib/net: IPv4 header and its
// checksum, TCP header and its checksum).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>

#include "base/result.hpp"
#include "net/addr.hpp"

namespace azote::imds {

inline constexpr net::Ipv4Address kImdsAddress{169, 254, 169, 254};
inline constexpr uint16_t kImdsPort = 80;
inline constexpr net::Ipv4Address kAliasBase{100, 64, 0, 0};  // 100.64.0.0/10, RFC 6598
inline constexpr uint8_t kAliasPrefixLen = 10;
// Aliases run from 100.64.0.1 to 100.127.255.254 (not the /10's network or broadcast).
inline constexpr uint32_t kMaxSlots = (1u << (32 - kAliasPrefixLen)) - 2;
// The TUN's MTU, and the largest packet either direction carries (guests get MTU 1500).
inline constexpr size_t kMtu = 1500;

// kMaxSlots > slot: 100.64.0.0 + slot + 1.
net::Ipv4Address alias_of(uint32_t slot);
// The slot whose alias `a` is, if `a` is one.
std::optional<uint32_t> slot_of(net::Ipv4Address a);

enum class Drop : uint8_t {
  kMalformed = 0,  // lib/net refused the IPv4 or TCP header (length, checksum, version, ...)
  kTooBig,         // over kMtu
  kFragment,       // an IPv4 fragment
  kOptions,        // IPv4 options (source routes and the like have no business here)
  kNotTcp,         // another protocol (ICMP, UDP, ...)
  kWrongAddress,   // inbound: dst is not 169.254.169.254; outbound: src is not, or dst no alias
  kWrongPort,      // inbound: dst port not 80; outbound: src port not 80
  kWrongSource,    // inbound: src is not the ENI's address
  kNoSlot,         // no ENI in that slot (never added, or removed)
  kQueueFull,      // the TUN did not take the packet (EAGAIN/ENOBUFS)
  kIoError,        // another write error
  kNoOutput,       // outbound: no output callback set
  kNotIpv4,        // outbound: the kernel sent something else (IPv6 is disabled, but still)
};
inline constexpr size_t kDropCount = static_cast<size_t>(Drop::kNotIpv4) + 1;
const char* to_string(Drop d);

// Validates `in` (the guest's IPv4 packet; link padding after the total length is
// ignored), copies its total-length bytes into `out` and rewrites the source from `eni` to
// `alias`. Returns the packet's length in `out`. kTooBig also when `out` cannot hold it.
Result<size_t, Drop> nat_inbound(std::span<const uint8_t> in, std::span<uint8_t> out, net::Ipv4Address eni,
                                 net::Ipv4Address alias);

struct Outbound {
  uint32_t slot = 0;
  size_t length = 0;  // the IPv4 packet's total length (what to hand on)
};
// Validates a packet the kernel wrote to the TUN and names the slot it is for.
Result<Outbound, Drop> nat_outbound_parse(std::span<const uint8_t> pkt);
// On a packet nat_outbound_parse accepted (its first `length` bytes): destination := `eni`,
// TTL := 1. Returns whether the TTL had to be changed (the socket's IP_TTL should make
// that never happen: counted).
bool nat_outbound_rewrite(std::span<uint8_t> pkt, net::Ipv4Address eni);

}  // namespace azote::imds
