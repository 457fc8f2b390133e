// The VPC of one host, without vhost-user: the ENIs (Ports) and what the card does
// with every frame a guest transmits. Switch::transmit() parses a frame (lib/net),
// checks its source, answers the services the card itself provides (ARP for the
// whole subnet, DHCP, DNS on .2, ICMP echo to the gateway .1), and routes IPv4 to
// the ENI of the same VPC that owns the destination, through the security groups of
// both ends (lib/vpc_policy, stateful, flow-logged); an address another host owns
// (a fabric mapping) goes through the sender's egress groups to the FabricSender, and
// frames the fabric brings in go through receive_remote(): the receiving ENI's ingress
// groups, then its inbox. Whatever goes to a guest is put
// in that Port's Inbox; its worker (worker.hpp) copies it into the guest's receive
// queue. Every frame not delivered is counted by reason on the Port where it died.
//
// Threads: transmit() runs on the sending ENI's worker; the ENI table is read under
// a shared lock, the policy engine (not thread-safe) is taken once per batch. The
// control thread adds and removes VPCs, groups and ENIs.
#pragma once

#include <sys/un.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/error.hpp"
#include "base/log.hpp"
#include "base/unique_fd.hpp"
#include "cards/net/limits.hpp"
#include "cards/net/options.hpp"
#include "fabric/session.hpp"
#include "net/addr.hpp"
#include "net/arp.hpp"
#include "net/dhcp.hpp"
#include "net/dns.hpp"
#include "net/error.hpp"
#include "rate_limit/clock.hpp"
#include "vpc_policy/engine.hpp"

namespace azote::card_net {

enum class SwitchErrc {
  kInvalid = 1,  // the VPC model is inconsistent (address outside subnet, duplicate, unknown id)
  kHost,         // eventfd
};
using SwitchError = Error<SwitchErrc>;

inline constexpr uint16_t kMtu = 1500;
inline constexpr size_t kMaxFrame = kMtu + 14;  // Ethernet without FCS; no VLAN tags
inline constexpr size_t kSlotBytes = 1536;
inline constexpr uint8_t kDefaultTtl = 64;

// Why a frame was not delivered. Counted per ENI (the one where it was dropped).
enum class Drop : uint8_t {
  kBadHeader,        // virtio-net header too short, or asking for offloads never offered
  kOversized,        // longer than the MTU allows
  kMalformed,        // lib/net refused it (parse_errors has the NetErrc)
  kUnsupported,      // not ARP or IPv4 (IPv6, LLC, ...), VLAN-tagged
  kSpoofedMac,       // Ethernet / ARP source MAC not the ENI's (source-dest-check on)
  kSpoofedIp,        // IPv4 / ARP source address not the ENI's (source-dest-check on)
  kFragment,         // IPv4 fragments: no reassembly in the card
  kArpIgnored,       // ARP replies, announcements, probes of its own address, targets outside the subnet
  kNotToGateway,     // unicast IPv4 not sent to the gateway's MAC
  kBroadcast,        // IPv4 broadcast or multicast that is not DHCP
  kNoService,        // to .1 / .2 but nothing the card answers there (e.g. TCP to .2:53)
  kDhcpIgnored,      // DHCP the server stays silent for (another chaddr, DECLINE, RELEASE, ...)
  kTtlExpired,       // TTL <= 1 before routing
  kOtherVpc,         // destination outside the sender's VPC (no gateways, no peering yet)
  kNoRoute,          // inside the VPC but neither an ENI here nor a fabric mapping owns it
  kSgEgress,         // the sender's security groups refused it
  kSgIngress,        // the receiver's security groups refused it
  kRxNotReady,       // the receiver's guest has no running receive queue
  kRxQueueFull,      // the receiver's inbox is full (its guest does not post buffers fast enough)
  kRxBufferTooSmall, // a receive buffer of the guest cannot hold the frame
  kFabricError,      // mapped to another host, but the fabric did not take it (no key, key
                     // exhausted, socket error: FabricLink counts which)
  kImdsUnavailable,  // to 169.254.169.254, but the card runs without the metadata service
  kImdsNoMetadata,   // to 169.254.169.254 from an ENI without metadata (it has no slot)
  kImdsRefused,      // the metadata service refused it (not TCP to :80, not from the ENI's
                     // address, its queue full: describe-imds counts which)
  kNeighbourUnreachable,  // for an ENI another card process serves, whose inbox socket did
                          // not take it (full: that card is behind; gone: it is not running)
  kNeighbourRefused,      // in this ENI's inbox socket, refused: not a unicast IPv4 frame for
                          // it, or its source address is not served by the sender's uid
  kCount
};
inline constexpr size_t kDropCount = static_cast<size_t>(Drop::kCount);
const char* to_string(Drop d);

struct PortCounters {
  // tx: frames the guest transmitted (all of them, dropped ones included); rx: frames
  // written into the guest's receive queue.
  std::atomic<uint64_t> tx_packets{0}, tx_bytes{0}, rx_packets{0}, rx_bytes{0};
  std::array<std::atomic<uint64_t>, kDropCount> drops{};
  std::array<std::atomic<uint64_t>, net::kNetErrcCount> parse_errors{};
  std::atomic<uint64_t> forwarded{0};  // frames routed to another ENI (accepted by both groups)
  std::atomic<uint64_t> arp_replies{0}, dhcp_replies{0}, dns_replies{0}, icmp_replies{0};
  std::atomic<uint64_t> queue_errors{0};  // virtqueues the driver broke
  // IMDS: packets handed to the metadata service, its replies put in the inbox.
  std::atomic<uint64_t> imds_in{0}, imds_out{0};
  // Frames other card processes of this host put in the ENI's inbox socket, taken (they
  // passed the ENI's ingress groups and are in its inbox).
  std::atomic<uint64_t> neighbour_in{0};

  void drop(Drop d) { drops[static_cast<size_t>(d)].fetch_add(1, std::memory_order_relaxed); }
  uint64_t dropped(Drop d) const { return drops[static_cast<size_t>(d)].load(std::memory_order_relaxed); }
};

// Frames waiting for one guest's receive queue: a bounded ring of card-owned slots.
// Any thread may push; one consumer (the ENI's worker) reads the front in place and
// pops it once copied. notify_fd() becomes readable after a push.
class Inbox {
 public:
  static constexpr size_t kSlots = 256;
  Inbox();
  int notify_fd() const { return notify_.get(); }
  // false: full (the frame is not taken).
  bool push(std::span<const uint8_t> frame);
  void notify();
  // The oldest frame, valid until pop(); empty when there is none.
  std::span<const uint8_t> front();
  void pop();
  size_t size() const;
  void clear();

 private:
  struct Slot {
    std::array<uint8_t, kSlotBytes> bytes;
    size_t len = 0;
  };
  mutable std::mutex mu_;
  std::vector<Slot> slots_;
  size_t head_ = 0, count_ = 0;
  UniqueFd notify_;
};

struct Vpc {
  std::string id;
  net::Ipv4Prefix cidr;
  uint32_t vni = 0;    // on the fabric
  uint32_t index = 0;  // in route keys
  std::unique_ptr<net::DnsZone> zone;
  std::vector<SubnetSpec> subnets;
};

// One ENI: its configuration, its DHCP server, counters and inbox. Or a neighbour: an
// ENI of this host that another card process serves (one card per instance), known
// here for routing and group membership only; frames for it go to its inbox socket.
class Port {
 public:
  ~Port();
  const EniSpec& spec() const { return spec_; }
  const std::string& id() const { return spec_.id; }
  net::MacAddress mac() const { return spec_.mac; }
  net::Ipv4Address ip() const { return spec_.ip; }
  const net::Ipv4Prefix& subnet() const { return subnet_; }
  net::Ipv4Address gateway() const { return net::Ipv4Address::from_u32(subnet_.network().value() + 1); }
  net::Ipv4Address dns_server() const { return net::Ipv4Address::from_u32(subnet_.network().value() + 2); }
  net::MacAddress gateway_mac() const { return gateway_mac_; }
  const Vpc& vpc() const { return *vpc_; }
  PortCounters& counters() { return counters_; }
  const PortCounters& counters() const { return counters_; }
  Inbox& inbox() { return inbox_; }
  const Inbox& inbox() const { return inbox_; }
  // Rate limits of both directions (limits.hpp): the worker asks, the control thread sets.
  EniRateLimits& limits() { return limits_; }
  const EniRateLimits& limits() const { return limits_; }
  // Set by the worker while the guest's receive queue runs.
  std::atomic<bool> rx_ready{false};
  // The DHCP lease as last seen (net::DhcpLeaseState), for list-enis.
  std::atomic<uint8_t> lease_state{0};
  // The ENI's slot in the metadata service (Switch::set_imds_slot); none without metadata.
  std::optional<uint32_t> imds_slot() const {
    const int64_t s = imds_slot_.load(std::memory_order_acquire);
    return s < 0 ? std::nullopt : std::optional<uint32_t>(static_cast<uint32_t>(s));
  }
  // Served by another card process (add_neighbour): spec().uid is that card's uid.
  bool neighbour() const { return neighbour_; }
  // An ENI served here with an "inbox": the bound datagram socket other cards send its
  // frames to (SO_PASSCRED: each datagram carries its sender's uid); -1 without one.
  int inbox_socket() const { return inbox_socket_.get(); }

 private:
  friend class Switch;
  Port(EniSpec spec, net::Ipv4Prefix subnet, const Vpc& vpc, net::DhcpServer dhcp);
  EniSpec spec_;
  net::Ipv4Prefix subnet_;
  net::MacAddress gateway_mac_;
  const Vpc* vpc_;
  net::DhcpServer dhcp_;  // the sending worker's only
  vpc::EniHandle policy_;
  PortCounters counters_;
  Inbox inbox_;
  EniRateLimits limits_{spec_.limits};
  std::atomic<int64_t> imds_slot_{-1};
  void unlink_inbox();
  bool neighbour_ = false;
  sockaddr_un inbox_addr_{};  // spec_.inbox as an address (neighbours: where frames go)
  UniqueFd inbox_socket_;
  uint64_t inbox_dev_ = 0, inbox_ino_ = 0;  // the socket file this Port bound (removed with it)
};

// A frame taken from a guest's transmit queue, in a buffer the card owns.
struct TxFrame {
  std::array<uint8_t, kSlotBytes> bytes;
  size_t len = 0;
};

// A frame for an ENI on another host, after the sender's egress groups (TTL already
// decremented); `frame` is valid during FabricSender::send() only.
struct RemoteFrame {
  fabric::HostId host = 0;
  uint32_t vni = 0;
  std::span<const uint8_t> frame;
  Port* from = nullptr;  // for its kFabricError count; null: relayed for another card
  std::atomic<uint64_t>* errors = nullptr;  // where a relayed frame's failure is counted
};

// The "host" of frames an instance's card hands to the fabric process (its relay): any
// address of the VPC that no ENI of this host owns. Never a real host id (1..2^32-2).
inline constexpr fabric::HostId kRelayHost = 0xffffffffu;

// What the fabric process did with a frame an instance's card relayed to it.
enum class RelayVerdict : uint8_t {
  kSent,       // sealed and sent to the host its destination is mapped to
  kRefused,    // malformed, or its source address is not served by the sending card's uid
  kNoRoute,    // no fabric mapping of the destination
  kFabricError,  // mapped, but the fabric did not take it (FabricLink counts why)
  kCount
};
inline constexpr size_t kRelayVerdictCount = static_cast<size_t>(RelayVerdict::kCount);
const char* to_string(RelayVerdict v);

// Where the Switch hands frames for other hosts (the card's FabricLink; a loopback in
// tests). Called on the sending ENI's worker thread, once per transmitted batch.
class FabricSender {
 public:
  virtual ~FabricSender() = default;
  virtual void send(std::span<const RemoteFrame> frames) = 0;
};

// The instance metadata service at 169.254.169.254 (the card's imds::Service; a fake in
// tests). inject() is called on the sending ENI's worker thread.
inline constexpr net::Ipv4Address kImdsAddress{169, 254, 169, 254};
class MetadataSink {
 public:
  virtual ~MetadataSink() = default;
  // An IPv4 packet (header first; link padding may follow) the guest of `slot` sent to
  // 169.254.169.254. false: refused (the service counts why).
  virtual bool inject(uint32_t slot, std::span<const uint8_t> ipv4) = 0;
};

// What became of a frame the fabric brought in (counted per peer by FabricLink).
enum class RemoteVerdict : uint8_t {
  kDelivered,
  kMalformed,      // lib/net refused it, or not unicast IPv4 (ARP, broadcast, fragments, VLAN)
  kUnknownVni,     // no VPC with this VNI on this host
  kNoEni,          // no ENI of that VPC here owns the destination
  kSpoofedSource,  // the inner source is not mapped to the sending host
  kTtlExpired,
  kSgIngress,      // the receiving ENI's groups refused it
  kRxNotReady,
  kRxQueueFull,
  kNeighbourUnreachable,  // for an ENI another card process serves, whose inbox did not take it
  kCount
};
inline constexpr size_t kRemoteVerdictCount = static_cast<size_t>(RemoteVerdict::kCount);
const char* to_string(RemoteVerdict v);

struct SwitchConfig {
  std::string region = "local-1";
  std::string account = "000000000000";
  bool flow_log = false;
  uint32_t flow_log_window_s = 60;
};

class Switch {
 public:
  Switch(const rate_limit::Clock& clock, SwitchConfig config);
  ~Switch();

  // --- the VPC model (control thread) ---
  Result<void, SwitchError> add_vpc(const VpcSpec& v);
  Result<void, SwitchError> add_subnet(const SubnetSpec& s);
  // Creates the group (EC2 defaults) or replaces its rules: ingress as given, egress as
  // given or, when nullopt, left as they are.
  Result<void, SwitchError> set_group(const GroupSpec& g);
  bool has_vpc(const std::string& id) const;
  bool has_group(const std::string& id) const;
  // Checks the ENI against the model (address inside its subnet and not reserved,
  // subnet inside its VPC, unique id/socket/MAC/address, existing groups) and adds it.
  Result<std::shared_ptr<Port>, SwitchError> add_eni(const EniSpec& e);
  // The ENI leaves the routing table and the policy engine at once; senders that
  // already hold it may still put frames in its inbox.
  Result<void, SwitchError> remove_eni(const std::string& id);
  // An ENI served here or a neighbour.
  std::shared_ptr<Port> find(const std::string& id) const;
  // The ENIs served here (neighbours are not).
  std::vector<std::shared_ptr<Port>> ports() const;

  // --- neighbours: ENIs of this host served by other card processes (control thread) ---
  // The same checks as add_eni (a neighbour's "inbox" plays the socket's part in the
  // uniqueness checks); it joins the routing table and its groups' member sets.
  Result<std::shared_ptr<Port>, SwitchError> add_neighbour(const EniSpec& e);
  Result<void, SwitchError> remove_neighbour(const std::string& id);
  std::vector<std::shared_ptr<Port>> neighbours() const;
  // A datagram from `to`'s inbox socket, sent by a process of uid `sender` (the kernel's
  // SCM_CREDENTIALS): a unicast IPv4 frame for `to` whose source address a neighbour
  // served by `sender` owns, then `to`'s ingress groups (stateful), Ethernet addresses
  // set as local delivery, `to`'s inbox. false: dropped (counted at `to`). `to`'s worker.
  bool receive_neighbour(Port& to, uint32_t sender, std::span<uint8_t> frame);

  // --- the fabric relay: fabric keys only in a process that maps no guest memory ---
  // An instance's card (control thread): frames for addresses of the VPC that no ENI of
  // this host owns go, after the sender's egress groups, to the fabric process's relay
  // inbox; datagrams from `uid` in an ENI's inbox may carry such remote sources. An
  // empty inbox: no relay (those frames are no_route again).
  Result<void, SwitchError> set_relay(const std::string& inbox, uint32_t uid);
  // The socket datagrams to other cards leave from (made by the launcher with a large
  // send buffer); without one, the Switch makes its own when it first needs it.
  void set_datagram_socket(UniqueFd s);
  nlohmann::json describe_relay() const;
  // The fabric process (FabricLink's thread): a frame an instance's card of uid `sender`
  // relayed: its source must be a neighbour that uid serves, its destination mapped to
  // another host; then sealed and sent like this card's own (TTL already taken off).
  RelayVerdict relay_out(uint32_t sender, std::span<const uint8_t> frame);
  std::array<uint64_t, kRelayVerdictCount> relay_counts() const;
  nlohmann::json describe_groups() const;

  // --- the fabric (control thread) ---
  // Set once before any ENI transmits, cleared after every worker stopped.
  void set_fabric(FabricSender* sender, fabric::HostId self);
  // (VPC, ip) -> host: the VPC must exist here, ip be inside its CIDR, host not this
  // one. Replaces an existing mapping of the address. A local ENI owning the address
  // takes precedence over a mapping.
  Result<void, SwitchError> add_mapping(const FabricMappingSpec& m);
  Result<void, SwitchError> remove_mapping(const std::string& vpc, net::Ipv4Address ip);
  std::vector<FabricMappingSpec> mappings() const;
  bool maps_to(fabric::HostId host) const;

  // --- the fabric's receive path (FabricLink's thread) ---
  // A frame `from` sent for VPC `vni`, authenticated and decrypted: checked (unicast
  // IPv4 for a local ENI of that VPC, source mapped to `from`), the receiver's ingress
  // groups (stateful: replies to its own flows pass), MACs rewritten, inbox.
  RemoteVerdict receive_remote(fabric::HostId from, uint32_t vni, std::span<uint8_t> frame);

  // --- the instance metadata service ---
  // Set once before any ENI transmits (null: none, packets to it are kImdsUnavailable),
  // cleared after every worker stopped (control thread).
  void set_metadata_sink(MetadataSink* sink);
  // The ENI's slot (nullopt: none; its packets to 169.254.169.254 are kImdsNoMetadata).
  Result<void, SwitchError> set_imds_slot(const std::string& eni, std::optional<uint32_t> slot);
  // A reply of the service for `slot` (any thread; the service's reader): wrapped in
  // Ethernet from the ENI's gateway to the ENI, put in its inbox. false: no ENI has the
  // slot (removed), or not delivered (counted at the ENI: rx_not_ready, rx_queue_full).
  bool deliver_metadata(uint32_t slot, std::span<const uint8_t> ipv4);

  // --- data path (the sending ENI's worker) ---
  // Handles a batch of frames the guest of `from` transmitted (virtio-net header
  // already removed). Frames may be rewritten in place.
  void transmit(Port& from, std::span<TxFrame> frames);
  // One frame, for tests.
  void transmit_one(Port& from, std::span<const uint8_t> frame);

  // --- maintenance (control thread timer) ---
  // Flow-log lines of every window ended by now, and conntrack expiry.
  std::vector<std::string> tick();
  // Every ENI's flow log closed now (at exit): the remaining lines.
  std::vector<std::string> close_flow_logs();

 private:
  struct Candidate {
    size_t frame;
    std::shared_ptr<Port> to;  // a local ENI, or
    fabric::HostId remote;     // another host (to is null)
    uint32_t vni;
    vpc::Packet packet;
  };
  void handle(Port& from, const TxFrame& f, size_t index, std::vector<Candidate>& out);
  void handle_arp(Port& from, const net::Arp& arp, net::MacAddress eth_src);
  void reply(Port& to, std::span<const uint8_t> frame);
  void update_members();  // with mu_ held exclusively
  Vpc* vpc_of(const std::string& id);
  static uint64_t route_key(uint32_t vpc, net::Ipv4Address ip) { return uint64_t{vpc} << 32 | ip.value(); }

  const rate_limit::Clock& clock_;
  SwitchConfig config_;
  mutable std::shared_mutex mu_;  // the model and the routing table
  std::vector<std::unique_ptr<Vpc>> vpcs_;
  std::map<std::string, std::shared_ptr<Port>> by_id_;
  std::vector<std::string> groups_;  // every group created, for member updates
  std::unordered_map<uint64_t, std::shared_ptr<Port>> routes_;
  std::unordered_map<uint64_t, fabric::HostId> remote_;  // fabric mappings, same keys
  std::atomic<FabricSender*> fabric_{nullptr};
  std::atomic<MetadataSink*> imds_{nullptr};
  std::unordered_map<uint32_t, std::shared_ptr<Port>> imds_slots_;  // slot -> ENI, under mu_
  fabric::HostId self_host_ = 0;
  UniqueFd neighbour_tx_;  // unbound datagram socket: frames to neighbours' inboxes and the relay
  struct Relay {
    std::string inbox;
    sockaddr_un addr{};  // inbox as an address, made once
    uint32_t uid = 0;
  };
  std::optional<Relay> relay_;  // under mu_
  std::array<std::atomic<uint64_t>, kRelayVerdictCount> relay_counts_{};
  std::atomic<uint64_t> relay_send_errors_{0};  // relayed frames the fabric did not take
  std::atomic<uint64_t> relay_unreachable_{0};  // frames for the relay its inbox did not take
  // One datagram to `path`, never blocking; false (errno set) when it was not taken.
  bool send_datagram(const sockaddr_un& to, std::span<const uint8_t> frame);
  // neighbour_tx_ made if there is none yet (mu_ held exclusively).
  Result<void, SwitchError> ensure_datagram_socket();
  // The checks add_eni and add_neighbour share (mu_ held exclusively): the ENI's VPC and
  // subnet, or why it does not fit the model.
  struct Placement {
    Vpc* vpc = nullptr;
    SubnetSpec subnet;
  };
  Result<Placement, SwitchError> place(const EniSpec& e, std::unique_lock<std::shared_mutex>& lock);
  // A frame for another card process: a neighbour's inbox (`to`), or the relay's (null).
  struct Datagram {
    const sockaddr_un* to_addr = nullptr;
    std::span<const uint8_t> frame;
    Port* to = nullptr;
  };
  void send_datagrams(Port& from, std::span<const Datagram> out);
  mutable std::mutex policy_mu_;  // the engine is not thread-safe
  vpc::PolicyEngine policy_;
  log::RateLimit log_limit_{10, std::chrono::seconds(10)};
};

// The hostname DHCP hands out: "ip-10-0-1-5".
std::string hostname_for(net::Ipv4Address a);

}  // namespace azote::card_net
