// DHCPv4 server side (RFC 2131, options RFC 2132) for one ENI: the card knows the one
// address its guest must get, so there is no pool, only a codec and a small, pure state
// machine. No I/O, no clock: the card feeds parsed messages in and sends what comes out.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/result.hpp"
#include "net/addr.hpp"
#include "net/error.hpp"
#include "net/ethernet.hpp"
#include "net/ipv4.hpp"

namespace azote::net {

inline constexpr uint16_t kDhcpServerPort = 67;
inline constexpr uint16_t kDhcpClientPort = 68;
inline constexpr size_t kBootpFixedLen = 236;    // op .. file
inline constexpr size_t kDhcpOptionsOffset = 240;  // after the magic cookie
inline constexpr size_t kBootpMinLen = 300;      // replies are padded to this (RFC 1542 §2.1)
// Without option 57 a client accepts a 576-byte IP datagram (RFC 2131 §2): 548 for DHCP.
inline constexpr size_t kDhcpDefaultMaxLen = 576 - kIpv4HeaderLen - 8;

namespace dhcp_option {
inline constexpr uint8_t kPad = 0;
inline constexpr uint8_t kSubnetMask = 1;
inline constexpr uint8_t kRouter = 3;
inline constexpr uint8_t kDns = 6;
inline constexpr uint8_t kHostname = 12;
inline constexpr uint8_t kDomainName = 15;
inline constexpr uint8_t kMtu = 26;
inline constexpr uint8_t kRequestedIp = 50;
inline constexpr uint8_t kLeaseTime = 51;
inline constexpr uint8_t kOverload = 52;
inline constexpr uint8_t kMessageType = 53;
inline constexpr uint8_t kServerId = 54;
inline constexpr uint8_t kParameterList = 55;
inline constexpr uint8_t kMessage = 56;
inline constexpr uint8_t kMaxMessageSize = 57;
inline constexpr uint8_t kRenewalTime = 58;
inline constexpr uint8_t kRebindingTime = 59;
inline constexpr uint8_t kVendorClass = 60;
inline constexpr uint8_t kClientId = 61;
inline constexpr uint8_t kEnd = 255;
}  // namespace dhcp_option

enum class DhcpMessageType : uint8_t {
  kDiscover = 1, kOffer, kRequest, kDecline, kAck, kNak, kRelease, kInform,
};
const char* to_string(DhcpMessageType t);

enum class BootpOp : uint8_t { kRequest = 1, kReply = 2 };

// A parsed message. Spans point into the buffer given to parse_dhcp, which must outlive it.
struct DhcpMessage {
  BootpOp op = BootpOp::kRequest;
  uint32_t xid = 0;
  uint16_t secs = 0;
  uint16_t flags = 0;  // bit 15: the client wants broadcast replies
  Ipv4Address ciaddr, yiaddr, siaddr, giaddr;
  MacAddress chaddr;
  DhcpMessageType type = DhcpMessageType::kDiscover;
  std::optional<Ipv4Address> requested_ip;        // 50
  std::optional<Ipv4Address> server_id;           // 54
  std::optional<uint16_t> max_message_size;       // 57 (>= 576)
  std::span<const uint8_t> client_id;             // 61 (type byte + id), empty if absent
  std::span<const uint8_t> parameter_list;        // 55, empty if absent
  std::span<const uint8_t> hostname_bytes;        // 12, not interpreted, empty if absent
  std::span<const uint8_t> options;               // the validated option area, END excluded

  bool broadcast() const { return (flags & 0x8000) != 0; }
  std::string_view hostname() const {
    return {reinterpret_cast<const char*>(hostname_bytes.data()), hostname_bytes.size()};
  }
  // The first occurrence of option `code` in the validated area.
  std::optional<std::span<const uint8_t>> find(uint8_t code) const;
};

// The UDP payload of a datagram to port 67 (expect kRequest: a client's message) or, for
// tests and tools, to port 68 (kReply). Validates: length >= 240 (kTruncated); op as
// expected, htype Ethernet / hlen 6, hops 0 and giaddr 0 — a guest talks to the card
// directly, relayed messages are refused (kUnsupported); the magic cookie (kMalformed);
// every option inside the buffer, an END option, no duplicate of an interpreted option, the
// lengths RFC 2132 fixes (kBadOption); option overload 52 (kUnsupported); a message type
// that this side may receive (kMalformed). Bytes after END are ignored.
Result<DhcpMessage, NetError> parse_dhcp(std::span<const uint8_t> payload, BootpOp expect = BootpOp::kRequest);

// What the card serves to one ENI.
struct DhcpConfig {
  MacAddress mac;              // the ENI's: messages with another chaddr get no answer
  Ipv4Address address;         // the ENI's primary private address
  Ipv4Prefix subnet;           // its subnet (option 1); must contain address and router
  Ipv4Address router;          // option 3; also the server identifier (option 54) and the
                               // source of every reply, as in a VPC
  MacAddress router_mac;       // Ethernet source of replies (what ARP answers for router)
  std::vector<Ipv4Address> dns;  // option 6, 1..4 servers
  std::string hostname;        // option 12, e.g. "ip-10-0-1-5"; empty: not sent
  std::string domain_name;     // option 15, e.g. "eu-west-1.compute.internal"; empty: not sent
  uint16_t mtu = 9001;         // option 26, >= 68
  uint32_t lease_seconds = 3600;  // option 51 (0xffffffff: infinite, then no 58/59)
};
// kBadConfig naming the first problem: address or router outside the subnet or equal to its
// network or broadcast address, no or more than 4 DNS servers, a hostname or domain name
// that is not LDH labels (hostname: one label), mtu < 68, lease < 60 s.
Result<void, NetError> validate(const DhcpConfig& cfg);

// Writes an OFFER, ACK or NAK answering `request` into `out` (the UDP payload) and returns
// its length (>= 300). OFFER/ACK carry yiaddr = `yiaddr` and options 53, 54, 51, 58, 59, 1,
// 3, 6, 12, 15, 26; an ACK to INFORM (yiaddr 0) omits 51/58/59 and echoes ciaddr; a NAK
// carries 53, 54 and 56 (`nak_message`). The client identifier is echoed (RFC 6842) when
// the reply still fits the client's maximum message size; kNoSpace if `out` is too small.
Result<size_t, NetError> build_dhcp_reply(std::span<uint8_t> out, const DhcpMessage& request,
                                          DhcpMessageType type, Ipv4Address yiaddr, const DhcpConfig& cfg,
                                          std::string_view nak_message = {});

// What the client has done, as far as the server saw.
enum class DhcpLeaseState { kIdle, kOffered, kBound, kReleased, kDeclined };
const char* to_string(DhcpLeaseState s);

struct DhcpDecision {
  std::optional<DhcpMessageType> reply;  // kOffer, kAck or kNak; nullopt: no answer
  const char* reason = "";               // why, for logs and tests
  Ipv4Address yiaddr;                    // in the reply (0 for NAK and for INFORM)
  Ipv4Address dst_ip;                    // RFC 2131 §4.1: ciaddr, broadcast, or yiaddr
  MacAddress dst_mac;
};

class DhcpServer {
 public:
  static Result<DhcpServer, NetError> create(DhcpConfig cfg);

  // DISCOVER -> OFFER of the ENI's address. REQUEST -> ACK if it asks for the ENI's address
  // (selecting us by server id, init-reboot by requested address, renewing by ciaddr),
  // NAK if it asks for another, silence if it selected another server. DECLINE and RELEASE
  // (for us) -> silence, state kDeclined / kReleased (the address stays the ENI's: a
  // decline means someone else answers ARP for it, which the card should report). INFORM
  // from the ENI's address -> ACK without lease. Another chaddr -> silence.
  DhcpDecision handle(const DhcpMessage& m);

  // The DHCP payload for a decision with a reply (kNoSpace/kMalformed otherwise).
  Result<size_t, NetError> build_reply(std::span<uint8_t> out, const DhcpMessage& request,
                                       const DhcpDecision& d) const;
  // The whole frame: Ethernet from router_mac to d.dst_mac, IPv4 from the router to
  // d.dst_ip (TTL 64), UDP 67 -> 68.
  Result<size_t, NetError> build_reply_frame(std::span<uint8_t> out, const DhcpMessage& request,
                                             const DhcpDecision& d) const;

  DhcpLeaseState state() const { return state_; }
  const DhcpConfig& config() const { return cfg_; }

 private:
  explicit DhcpServer(DhcpConfig cfg) : cfg_(std::move(cfg)) {}
  DhcpDecision reply(const DhcpMessage& m, DhcpMessageType type, Ipv4Address yiaddr, const char* why) const;

  DhcpConfig cfg_;
  DhcpLeaseState state_ = DhcpLeaseState::kIdle;
};

}  // namespace azote::net
