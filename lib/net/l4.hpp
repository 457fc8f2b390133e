// Transport headers over IPv4: UDP (RFC 768), TCP (RFC 9293), ICMP (RFC 792).
//
// Checksums: a guest that negotiated checksum offload hands over TCP/UDP packets flagged
// VIRTIO_NET_HDR_F_NEEDS_CSUM whose checksum field holds only the pseudo-header sum; the
// card parses those with L4Checksum::kSkip (and completes the checksum before the packet
// leaves), every other packet with kVerify.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "base/result.hpp"
#include "net/addr.hpp"
#include "net/error.hpp"
#include "net/ipv4.hpp"

namespace azote::net {

enum class L4Checksum { kVerify, kSkip };

// ---- UDP

inline constexpr size_t kUdpHeaderLen = 8;

struct UdpView {
  uint16_t src_port = 0;
  uint16_t dst_port = 0;
  uint16_t length = 0;    // header + payload
  uint16_t checksum = 0;  // 0: the sender computed none (allowed over IPv4)
  std::span<const uint8_t> payload;
};

// `datagram` is the whole IP payload. kTruncated: under 8 bytes or shorter than the length
// field; kBadLength: length < 8, or the datagram is longer than the length field (bytes
// the receiver would ignore: refused rather than carried); kBadChecksum (kVerify, field != 0).
Result<UdpView, NetError> parse_udp(std::span<const uint8_t> datagram, Ipv4Address src, Ipv4Address dst,
                                    L4Checksum mode = L4Checksum::kVerify);
// Over a parsed IPv4 packet: kUnsupported unless its protocol is UDP, kFragment for a fragment.
Result<UdpView, NetError> parse_udp(const Ipv4View& ip, L4Checksum mode = L4Checksum::kVerify);

struct UdpFields {
  Ipv4Address src;  // for the pseudo-header
  Ipv4Address dst;
  uint16_t src_port = 0;
  uint16_t dst_port = 0;
};

// Writes the header at out[0] for the payload the caller placed at out[8, 8 + payload_len)
// and computes the checksum (pseudo-header included; 0 is sent as 0xffff). Returns the
// datagram length. kBadLength over 65535 - 20 bytes; kNoSpace if `out` is too small.
Result<size_t, NetError> build_udp(std::span<uint8_t> out, const UdpFields& f, size_t payload_len);

// ---- TCP

inline constexpr size_t kTcpHeaderLen = 20;  // without options
inline constexpr uint16_t kTcpFin = 0x001;
inline constexpr uint16_t kTcpSyn = 0x002;
inline constexpr uint16_t kTcpRst = 0x004;
inline constexpr uint16_t kTcpPsh = 0x008;
inline constexpr uint16_t kTcpAck = 0x010;
inline constexpr uint16_t kTcpUrg = 0x020;
inline constexpr uint16_t kTcpEce = 0x040;
inline constexpr uint16_t kTcpCwr = 0x080;
inline constexpr uint16_t kTcpAe = 0x100;  // formerly NS (RFC 3540, historic)

struct TcpView {
  uint16_t src_port = 0;
  uint16_t dst_port = 0;
  uint32_t seq = 0;
  uint32_t ack = 0;
  size_t header_len = 0;  // data offset * 4, 20..60
  uint16_t flags = 0;     // kTcp* bits (9 bits)
  uint16_t window = 0;
  uint16_t checksum = 0;
  uint16_t urgent = 0;
  std::span<const uint8_t> options;  // not interpreted
  std::span<const uint8_t> payload;

  bool has(uint16_t flag) const { return (flags & flag) != 0; }
};

// `segment` is the whole IP payload. kTruncated: under 20 bytes or shorter than the data
// offset; kBadLength: data offset < 5; kBadChecksum (kVerify). Flag combinations
// (SYN+FIN, ...) are the connection tracker's business.
Result<TcpView, NetError> parse_tcp(std::span<const uint8_t> segment, Ipv4Address src, Ipv4Address dst,
                                    L4Checksum mode = L4Checksum::kVerify);
Result<TcpView, NetError> parse_tcp(const Ipv4View& ip, L4Checksum mode = L4Checksum::kVerify);

// ---- ICMP

inline constexpr size_t kIcmpHeaderLen = 8;
inline constexpr uint8_t kIcmpEchoReply = 0;
inline constexpr uint8_t kIcmpDestUnreachable = 3;
inline constexpr uint8_t kIcmpEchoRequest = 8;
inline constexpr uint8_t kIcmpTimeExceeded = 11;
// Destination-unreachable codes the card sends.
inline constexpr uint8_t kIcmpNetUnreachable = 0;
inline constexpr uint8_t kIcmpHostUnreachable = 1;
inline constexpr uint8_t kIcmpPortUnreachable = 3;
inline constexpr uint8_t kIcmpFragNeeded = 4;  // carries the next-hop MTU (RFC 1191)
inline constexpr uint8_t kIcmpAdminProhibited = 13;
// An error quotes at most this much of the offending packet, so the ICMP packet stays
// within 576 bytes (RFC 1812 §4.3.2.3): 576 - 20 (IP) - 8 (ICMP).
inline constexpr size_t kIcmpMaxQuote = 548;

struct IcmpView {
  uint8_t type = 0;
  uint8_t code = 0;
  uint16_t checksum = 0;
  uint32_t rest = 0;               // bytes 4..7: id/sequence for echo, MTU for code 4, ...
  std::span<const uint8_t> body;   // after the 8-byte header: echo data, or the quoted packet

  uint16_t echo_id() const { return static_cast<uint16_t>(rest >> 16); }
  uint16_t echo_seq() const { return static_cast<uint16_t>(rest); }
  uint16_t next_hop_mtu() const { return static_cast<uint16_t>(rest); }
};

// Any type is parsed (security groups match on type and code); echo request/reply and
// destination unreachable are also checked: echo code 0; unreachable code <= 15 and a body
// that quotes at least an IPv4 header (RFC 792 asks for 8 more bytes, when there are any). kTruncated: under 8 bytes;
// kMalformed: those checks; kBadChecksum (kVerify; the sum covers the whole message).
Result<IcmpView, NetError> parse_icmp(std::span<const uint8_t> message, L4Checksum mode = L4Checksum::kVerify);
Result<IcmpView, NetError> parse_icmp(const Ipv4View& ip, L4Checksum mode = L4Checksum::kVerify);

// Echo request or reply (`type`) with `data`, which may already lie at out[8...] (the copy
// is a memmove). Returns the message length.
Result<size_t, NetError> build_icmp_echo(std::span<uint8_t> out, uint8_t type, uint16_t id, uint16_t seq,
                                         std::span<const uint8_t> data);
// The reply to a parsed echo request: same identifier, sequence number and data.
Result<size_t, NetError> build_icmp_echo_reply(std::span<uint8_t> out, const IcmpView& request);
// Destination unreachable with `code`, quoting the first kIcmpMaxQuote bytes of `offending`
// (the IPv4 packet as received, header first). `next_hop_mtu` goes with kIcmpFragNeeded.
// kMalformed if `offending` is shorter than an IPv4 header.
Result<size_t, NetError> build_icmp_dest_unreachable(std::span<uint8_t> out, uint8_t code,
                                                     std::span<const uint8_t> offending, uint16_t next_hop_mtu = 0);

}  // namespace azote::net
