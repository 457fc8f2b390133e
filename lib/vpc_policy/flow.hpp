// What the policy engine sees of a packet: an already-parsed IPv4 5-tuple (plus the
// ICMP type/code/identifier), the TCP flags, the length, and for ICMP error messages
// the header of the datagram they quote. Addresses are IPv4 in host byte order.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace azote::vpc {

inline constexpr uint8_t kProtoIcmp = 1;
inline constexpr uint8_t kProtoTcp = 6;
inline constexpr uint8_t kProtoUdp = 17;

// TCP header flag bits (RFC 9293).
namespace tcp {
inline constexpr uint8_t kFin = 0x01;
inline constexpr uint8_t kSyn = 0x02;
inline constexpr uint8_t kRst = 0x04;
inline constexpr uint8_t kPsh = 0x08;
inline constexpr uint8_t kAck = 0x10;
}  // namespace tcp

// Relative to the interface: ingress = towards the instance (inbound rules),
// egress = from the instance (outbound rules).
enum class Direction : uint8_t { kIngress = 0, kEgress = 1 };
constexpr Direction opposite(Direction d) {
  return d == Direction::kIngress ? Direction::kEgress : Direction::kIngress;
}

enum class Verdict : uint8_t { kAccept, kReject };

struct FlowKey {
  uint8_t protocol = 0;  // IANA protocol number
  uint32_t src_ip = 0;
  uint32_t dst_ip = 0;
  uint16_t src_port = 0;  // TCP and UDP only
  uint16_t dst_port = 0;
  uint8_t icmp_type = 0;  // ICMP only
  uint8_t icmp_code = 0;
  uint16_t icmp_id = 0;  // ICMP queries (echo, timestamp, information, address mask) only

  static FlowKey tcp(uint32_t src, uint16_t sport, uint32_t dst, uint16_t dport);
  static FlowKey udp(uint32_t src, uint16_t sport, uint32_t dst, uint16_t dport);
  static FlowKey icmp(uint32_t src, uint32_t dst, uint8_t type, uint8_t code, uint16_t id = 0);
  static FlowKey other(uint8_t protocol, uint32_t src, uint32_t dst);
  // The same flow seen from the other end: addresses and ports swapped.
  FlowKey reversed() const;

  friend bool operator==(const FlowKey&, const FlowKey&) = default;
};

struct Packet {
  FlowKey key;
  uint8_t tcp_flags = 0;  // tcp::k*; ignored for other protocols
  uint32_t bytes = 0;     // IP total length, counted by flow logs
  // ICMP errors (destination unreachable, source quench, time exceeded, parameter
  // problem) quote the offending datagram's header; the parser fills `inner` from it
  // and sets has_inner. Without it an ICMP error is judged by the rules alone.
  bool has_inner = false;
  FlowKey inner;
};

// ICMP types 3, 4, 11, 12: errors that refer to another datagram.
bool is_icmp_error(uint8_t type);
// For ICMP query types, the request type of the exchange (echo 8/0 -> 8, timestamp
// 13/14 -> 13, information 15/16 -> 15, address mask 17/18 -> 17) and whether `type`
// is the request; nullopt for any other type.
struct IcmpQuery {
  uint8_t request_type;
  bool is_request;
};
std::optional<IcmpQuery> icmp_query(uint8_t type);

// Strict dotted quad ("10.0.0.1": four decimal parts 0..255, no leading zeros except "0").
std::optional<uint32_t> parse_ipv4(std::string_view text);
std::string format_ipv4(uint32_t ip);

}  // namespace azote::vpc
