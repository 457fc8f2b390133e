// The guest's tiny IPv4 stack over the virtio-net driver: Ethernet II, ARP (request
// and reply, a 16-entry cache), IPv4 without options on send and without fragments
// (received fragments are dropped), ICMP echo (requests answered, requests sent,
// replies handed to the program) and UDP (send, receive through one handler). Single
// threaded and polling: nothing happens outside poll() and the send calls, and no
// send ever waits for the network (a frame whose next hop is not resolved yet waits
// in a small queue behind an ARP request). Every parser checks a length before it
// reads a field; every checksum is computed and verified here (no offloads).
//
// Addresses are host-order uint32_t (10.0.2.15 is 0x0a00020f).
#pragma once

#include <cstddef>
#include <cstdint>

#include "net.hpp"
#include "rt.hpp"

namespace az::inet {

using Ip4 = uint32_t;

inline constexpr size_t kEthHdr = 14;
inline constexpr size_t kIpHdr = 20;  // what this stack sends (no options)
inline constexpr size_t kUdpHdr = 8;
inline constexpr size_t kIcmpHdr = 8;
inline constexpr Ip4 kBroadcast = 0xffffffff;
// Largest UDP payload that fits one 1500-byte IP packet.
inline constexpr size_t kMaxUdpPayload = 1500 - kIpHdr - kUdpHdr;

// Big-endian field access; callers check the length first.
inline uint16_t be16(const uint8_t* p) { return static_cast<uint16_t>((p[0] << 8) | p[1]); }
inline uint32_t be32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}
inline void put16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}
inline void put32(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v >> 24);
  p[1] = static_cast<uint8_t>(v >> 16);
  p[2] = static_cast<uint8_t>(v >> 8);
  p[3] = static_cast<uint8_t>(v);
}

// RFC 1071 ones'-complement sum of big-endian 16-bit words (an odd tail byte is the
// high half of a last word), continued from `acc`; fold() turns it into the
// checksum to store (complemented).
uint64_t sum16(const uint8_t* p, size_t n, uint64_t acc = 0);
uint16_t fold(uint64_t acc);

// Dotted quad "a.b.c.d", each 0-255 without leading zeros beyond "0".
bool parse_ip(Str s, Ip4* out);
Line& put_ip(Line& l, Ip4 ip);
Line& put_mac(Line& l, const uint8_t* mac);
// Prefix length of a contiguous netmask; -1 if it is not contiguous.
int mask_prefix(Ip4 mask);

struct Udp {
  Ip4 src, dst;
  uint16_t sport, dport;
  const uint8_t* data;
  size_t len;
};

struct Stats {
  uint64_t rx_frames = 0, rx_dropped = 0;  // dropped: malformed, bad checksum, not for us
  uint64_t arp_requests_answered = 0, echo_requests_answered = 0;
  uint64_t unresolved_drops = 0;  // frames dropped because ARP got no answer
};

class Stack {
 public:
  using UdpHandler = void (*)(void* ctx, const Udp& u);
  using EchoHandler = void (*)(void* ctx, Ip4 src, uint16_t id, uint16_t seq, const uint8_t* data, size_t len);

  void init(vnet::Device* dev);
  // The interface address (from DHCP). Until then the stack answers nothing and
  // passes only UDP to port 68 (DHCP replies, whatever their address) to the handler.
  void configure(Ip4 ip, Ip4 mask, Ip4 router, uint16_t mtu);
  bool configured() const { return ip_ != 0; }
  Ip4 ip() const { return ip_; }
  const uint8_t* mac() const { return dev_->mac(); }
  uint16_t mtu() const { return mtu_; }
  const Stats& stats() const { return stats_; }

  void set_udp_handler(UdpHandler fn, void* ctx) {
    udp_fn_ = fn;
    udp_ctx_ = ctx;
  }
  void set_echo_handler(EchoHandler fn, void* ctx) {
    echo_fn_ = fn;
    echo_ctx_ = ctx;
  }

  // Handles every frame waiting (answers ARP requests and ICMP echo requests for our
  // address, learns ARP replies, hands echo replies and UDP to the handlers),
  // retries or gives up pending ARP requests, and lets the driver check the device.
  // Never blocks. Handlers may send.
  void poll();

  // UDP from our address (sport) to dst:dport; len <= the MTU's payload. False if the
  // datagram was dropped at once (too big, no route, unconfigured, ARP queue full);
  // true means sent or queued behind an ARP request.
  bool send_udp(Ip4 dst, uint16_t sport, uint16_t dport, const uint8_t* data, size_t len);
  // UDP from 0.0.0.0:68 to 255.255.255.255:67 in an Ethernet broadcast (DHCP before
  // an address is bound).
  bool send_dhcp_broadcast(const uint8_t* data, size_t len);
  // ICMP echo request with `len` payload bytes (the payload is a fixed pattern).
  bool send_echo_request(Ip4 dst, uint16_t id, uint16_t seq, size_t len);
  // Pushes queued frames to the device (one QueueNotify at most). Send calls queue
  // without publishing, so a burst costs one notify; poll() publishes too.
  void flush() { dev_->tx_publish(); }

  // The MAC of dst's next hop (dst itself on the subnet, else the router), polling
  // until it is known or timeout_ms passes (ARP request every second).
  bool resolve(Ip4 dst, uint64_t timeout_ms);
  uint64_t tsc_hz() const { return hz_; }

 private:
  struct ArpEntry {
    Ip4 ip;
    uint8_t mac[6];
    uint64_t tsc;  // when learned
    bool valid;
  };
  struct Pending {
    Ip4 hop;
    uint16_t len;
    bool used;
    uint8_t frame[vnet::kMaxFrame];
  };
  struct Resolving {
    Ip4 hop;
    uint64_t last;  // last request sent (TSC)
    uint8_t tries;
    bool active;
  };
  static constexpr size_t kArpEntries = 16;
  static constexpr size_t kPending = 8;
  static constexpr size_t kResolving = 4;

  void handle(const uint8_t* f, size_t n);
  void handle_arp(const uint8_t* p, size_t n);
  void handle_ipv4(const uint8_t* p, size_t n);
  void handle_icmp(Ip4 src, Ip4 dst, const uint8_t* p, size_t n);
  void handle_udp(Ip4 src, Ip4 dst, const uint8_t* p, size_t n);

  const ArpEntry* lookup(Ip4 ip) const;
  void learn(Ip4 ip, const uint8_t* mac);
  void send_arp(uint16_t op, const uint8_t* dst_mac, const uint8_t* target_mac, Ip4 target_ip);
  void start_resolving(Ip4 hop);
  bool next_hop(Ip4 dst, Ip4* hop) const;
  // Finishes the IPv4 packet in frame_ (Ethernet and IP headers around `l4len` bytes
  // already at frame_ + kEthHdr + kIpHdr) and sends or queues it.
  bool emit(Ip4 src, Ip4 dst, uint8_t proto, size_t l4len, bool l2_broadcast);
  void transmit(const uint8_t* dst_mac, const uint8_t* frame, size_t len);

  vnet::Device* dev_ = nullptr;
  uint64_t hz_ = 0;
  Ip4 ip_ = 0, mask_ = 0, router_ = 0;
  uint16_t mtu_ = 0;  // set by init(); every member starts zero (a constinit Stack is .bss)
  uint16_t ip_id_ = 0;
  UdpHandler udp_fn_ = nullptr;
  void* udp_ctx_ = nullptr;
  EchoHandler echo_fn_ = nullptr;
  void* echo_ctx_ = nullptr;
  Stats stats_;
  ArpEntry arp_[kArpEntries] = {};
  Pending pending_[kPending] = {};
  Resolving resolving_[kResolving] = {};
  uint8_t frame_[vnet::kMaxFrame] = {};
};

}  // namespace az::inet
