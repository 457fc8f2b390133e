// The packet layer's one error type. Every parse_* names why a frame, a DHCP message or a
// DNS query was refused; the card counts drops by code and logs the context sparingly (a
// guest can send millions of bad frames).
#pragma once

#include <cstddef>

#include "base/error.hpp"

namespace azote::net {

enum class NetErrc {
  kTruncated = 1,  // the buffer ends before the header, an option, or what a length field says
  kBadLength,      // a length field contradicts the format (IHL < 5, UDP length < 8, TCP offset < 5, ...)
  kBadChecksum,    // IPv4 header, UDP, TCP or ICMP checksum does not verify
  kUnsupported,    // well formed but not handled here (802.3/LLC, QinQ, ARP over non-Ethernet/IPv4,
                   // IP version != 4, a DNS opcode other than QUERY, ...)
  kFragment,       // an L4 parse asked of an IPv4 fragment (no complete transport header to trust)
  kMalformed,      // a field holds a value the protocol forbids (ARP op, DHCP magic cookie or
                   // message type, DNS section counts, trailing bytes, ...)
  kBadOption,      // DHCP options: overrun, missing END, duplicate or wrong-length option
  kBadName,        // DNS name: label over 63, name over 255, bad label type, invalid text
  kPointerLoop,    // DNS compression pointer that does not point strictly backwards (loops)
  kNoSpace,        // a builder's output buffer is too small
  kBadAddress,     // text form of a MAC, IPv4 address or prefix does not parse
  kBadConfig,      // a DHCP or DNS configuration given by the operator is unusable
};
inline constexpr size_t kNetErrcCount = static_cast<size_t>(NetErrc::kBadConfig) + 1;
using NetError = Error<NetErrc>;
const char* to_string(NetErrc c);

}  // namespace azote::net
