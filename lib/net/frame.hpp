// A whole frame at once: Ethernet, then ARP or IPv4, then UDP, TCP or ICMP — what the card
// runs on every frame its guest transmits — and builders for whole reply frames.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <variant>

#include "base/result.hpp"
#include "net/arp.hpp"
#include "net/error.hpp"
#include "net/ethernet.hpp"
#include "net/ipv4.hpp"
#include "net/l4.hpp"

namespace azote::net {

struct Frame {
  EthernetView eth;
  std::optional<Arp> arp;       // ethertype ARP
  std::optional<Ipv4View> ip;   // ethertype IPv4
  // The transport header of a non-fragment IPv4 packet of protocol UDP, TCP or ICMP;
  // monostate for fragments and other protocols (ip->is_fragment() tells which).
  std::variant<std::monostate, UdpView, TcpView, IcmpView> l4;
};

// Fails with the first layer's error; kUnsupported for ethertypes other than ARP and IPv4
// (IPv6 included: the VPC is IPv4-only for now). `mode` applies to UDP and TCP; ICMP
// checksums are always verified (no offload exists for them).
Result<Frame, NetError> parse_frame(std::span<const uint8_t> frame, L4Checksum mode = L4Checksum::kVerify);

// Ethernet + IPv4 (ttl, protocol, ... from `ip`) around `payload`, which may already lie
// anywhere in `out` (memmove). Returns the frame length.
Result<size_t, NetError> build_ipv4_frame(std::span<uint8_t> out, const EthernetFields& eth, const Ipv4Fields& ip,
                                          std::span<const uint8_t> payload);
// Ethernet + IPv4 + UDP around `payload` (same rules); ip.protocol is forced to UDP.
Result<size_t, NetError> build_udp_frame(std::span<uint8_t> out, const EthernetFields& eth, const Ipv4Fields& ip,
                                         uint16_t src_port, uint16_t dst_port, std::span<const uint8_t> payload);

}  // namespace azote::net
