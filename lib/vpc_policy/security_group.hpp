// Security group rules as EC2 defines them (AuthorizeSecurityGroupIngress/Egress):
// allow-only; a protocol ("tcp", "udp", "icmp", a protocol number, or "-1" for all
// traffic); a port range for TCP/UDP, or an ICMP type and code (-1: any); and a peer,
// the source of inbound traffic or the destination of outbound traffic, that is either
// an IPv4 CIDR block or another security group (meaning: the addresses of the network
// interfaces in that group, a set the caller keeps up to date).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <variant>

#include "vpc_policy/error.hpp"
#include "vpc_policy/flow.hpp"

namespace azote::vpc {

inline constexpr int kAllProtocols = -1;

struct Cidr {
  uint32_t network = 0;  // host bits zero
  uint8_t prefix = 0;    // 0..32

  // "a.b.c.d/n". Host bits must be zero ("10.0.0.1/8" is refused, not silently
  // widened) so a rule always means what it says.
  static VpcResult<Cidr> parse(std::string_view text);
  uint32_t mask() const { return prefix == 0 ? 0u : ~0u << (32 - prefix); }
  bool contains(uint32_t ip) const { return (ip & mask()) == network; }
  std::string to_string() const;
  friend bool operator==(const Cidr&, const Cidr&) = default;
};

struct GroupRef {
  std::string group_id;  // "sg-..."
  friend bool operator==(const GroupRef&, const GroupRef&) = default;
};

using Peer = std::variant<Cidr, GroupRef>;

struct Rule {
  int protocol = kAllProtocols;  // -1 (all traffic) or an IP protocol number 0..255
  // tcp/udp: destination port range, inclusive, 0..65535. icmp: from_port is the type,
  // to_port the code, -1 meaning any (a code requires a type). Otherwise both -1.
  int from_port = -1;
  int to_port = -1;
  Peer peer = Cidr{};

  static Rule all(Peer peer);
  static Rule tcp(int from_port, int to_port, Peer peer);
  static Rule udp(int from_port, int to_port, Peer peer);
  static Rule icmp(int type, int code, Peer peer);
  static Rule proto(int protocol, Peer peer);  // a protocol other than tcp/udp/icmp

  // EC2 notation, for logs and errors: "tcp 22-22 from 10.0.0.0/8", "-1 all sg-1".
  std::string to_string() const;
  friend bool operator==(const Rule&, const Rule&) = default;
};

// "tcp", "udp", "icmp", "-1"/"all", or a number 0..255.
VpcResult<int> parse_protocol(std::string_view text);

// The checks EC2 makes when a rule is authorised (ranges, type/code, CIDR, non-empty
// group id); does not check that a referenced group exists.
VpcResult<void> validate(const Rule& rule);

// Protocol and port (or ICMP type/code) part of a rule against a packet; the peer is
// not looked at. TCP/UDP ranges apply to the packet's destination port, in either
// direction (the instance's port inbound, the remote service's port outbound).
bool traffic_matches(const Rule& rule, const FlowKey& key);

// Security group and interface ids end up in flow-log lines: printable ASCII, no
// spaces, 1..255 characters.
bool valid_id(std::string_view id);

}  // namespace azote::vpc
