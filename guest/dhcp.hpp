// DHCPv4 client (RFC 2131, options RFC 2132) for the guest: a strict codec for the
// few messages it sends (DISCOVER, REQUEST) and reads (OFFER, ACK, NAK), and the
// DISCOVER -> OFFER -> REQUEST -> ACK exchange over the inet stack. Options asked
// for and read: 1 subnet mask, 3 router, 6 DNS, 12 hostname, 15 domain name, 26
// interface MTU, 51 lease time, 54 server identifier.
#pragma once

#include <cstddef>
#include <cstdint>

#include "inet.hpp"

namespace az::dhcp {

inline constexpr uint8_t kDiscover = 1;
inline constexpr uint8_t kOffer = 2;
inline constexpr uint8_t kRequest = 3;
inline constexpr uint8_t kAck = 5;
inline constexpr uint8_t kNak = 6;

inline constexpr size_t kMaxDns = 4;
inline constexpr size_t kMaxName = 63;

// What a server's message says (only the options above; the others are skipped).
struct Message {
  uint8_t type = 0;
  inet::Ip4 yiaddr = 0;
  inet::Ip4 server = 0;  // option 54 (0: absent)
  inet::Ip4 mask = 0;    // option 1
  bool has_mask = false;
  inet::Ip4 router = 0;  // option 3, the first router
  inet::Ip4 dns[kMaxDns] = {};
  uint8_t ndns = 0;
  uint16_t mtu = 0;    // option 26 (0: absent)
  uint32_t lease = 0;  // option 51 seconds
  bool has_lease = false;
  char hostname[kMaxName + 1] = {};  // option 12, NUL terminated
  char domain[kMaxName + 1] = {};    // option 15
};

// Builds a client message (DISCOVER, or REQUEST for `requested` from `server`) into
// out (at least 300 bytes); returns its length (padded to the BOOTP minimum of 300).
size_t build(uint8_t* out, size_t cap, uint8_t type, uint32_t xid, uint16_t secs, const uint8_t* mac,
             inet::Ip4 requested, inet::Ip4 server);

// Parses a server's message for our transaction: BOOTREPLY, Ethernet hardware, our
// xid and MAC, the magic cookie, every option inside the buffer, END present, no
// repeated option that is read, RFC 2132 lengths (names printable ASCII without
// spaces, trailing NULs dropped), no option overload, a message type. nullptr if
// fine, else why not.
const char* parse(const uint8_t* p, size_t n, uint32_t xid, const uint8_t* mac, Message* out);

struct Lease {
  inet::Ip4 ip = 0, mask = 0, router = 0, server = 0;
  inet::Ip4 dns[kMaxDns] = {};
  uint8_t ndns = 0;
  uint16_t mtu = 0;  // from option 26, 0 if the server sent none
  uint32_t lease = 0;
  char hostname[kMaxName + 1] = {};
  char domain[kMaxName + 1] = {};
};

// Runs the exchange on an unconfigured stack (retransmits after 1, 2, 4, 4... s;
// a NAK starts over), then configures the stack with the lease. False after
// timeout_s seconds without an ACK; *why says which step was reached.
bool acquire(inet::Stack& st, uint64_t timeout_s, Lease* out, const char** why);

}  // namespace az::dhcp
