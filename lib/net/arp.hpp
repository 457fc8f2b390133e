// ARP (RFC 826) for Ethernet and IPv4 only. The card answers every ARP request of its
// guest itself (nothing is broadcast onto the VPC), so it parses requests and builds replies.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "base/result.hpp"
#include "net/addr.hpp"
#include "net/error.hpp"

namespace azote::net {

inline constexpr size_t kArpLen = 28;  // Ethernet/IPv4 ARP

enum class ArpOp : uint16_t { kRequest = 1, kReply = 2 };

struct Arp {
  ArpOp op = ArpOp::kRequest;
  MacAddress sender_mac;
  Ipv4Address sender_ip;
  MacAddress target_mac;
  Ipv4Address target_ip;

  // Announcement (gratuitous ARP): sender and target address are the same.
  bool is_announcement() const { return sender_ip == target_ip; }
  // Address conflict probe (RFC 5227): sender address 0.0.0.0.
  bool is_probe() const { return sender_ip.is_any(); }
  friend bool operator==(const Arp&, const Arp&) = default;
};

// The ARP payload of an Ethernet frame (ethertype 0x0806); bytes after the 28 are link
// padding and ignored. kTruncated: fewer than 28 bytes; kUnsupported: hardware type not
// Ethernet(1)/6, protocol not IPv4/4, an operation other than request or reply (RARP, InARP).
Result<Arp, NetError> parse_arp(std::span<const uint8_t> payload);

// Writes the 28-byte packet at out[0]; returns 28.
Result<size_t, NetError> build_arp(std::span<uint8_t> out, const Arp& a);

// The reply to `request` from the owner of request.target_ip, whose MAC is `owner_mac`.
Arp arp_reply(const Arp& request, MacAddress owner_mac);
inline Result<size_t, NetError> build_arp_reply(std::span<uint8_t> out, const Arp& request, MacAddress owner_mac) {
  return build_arp(out, arp_reply(request, owner_mac));
}

}  // namespace azote::net
