#include "cards/net/switch.hpp"

#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <set>
#include <variant>

#include "cards/net/inbox.hpp"
#include "net/arp.hpp"
#include "net/ethernet.hpp"
#include "net/frame.hpp"
#include "net/ipv4.hpp"
#include "net/l4.hpp"

namespace azote::card_net {
namespace {

Unexpected<SwitchError> invalid(std::string s) { return make_error(SwitchErrc::kInvalid, std::move(s)); }

rate_limit::Nanos unix_offset() {
  timespec rt{}, mono{};
  ::clock_gettime(CLOCK_REALTIME, &rt);
  ::clock_gettime(CLOCK_MONOTONIC, &mono);
  const int64_t ns = (int64_t{rt.tv_sec} - mono.tv_sec) * 1'000'000'000 + (rt.tv_nsec - mono.tv_nsec);
  return rate_limit::Nanos(ns);
}

// The gateway's MAC in a subnet: locally administered, derived from the subnet so
// two subnets never share one.
net::MacAddress gateway_mac_for(const net::Ipv4Prefix& subnet) {
  const auto b = subnet.network().bytes();
  return net::MacAddress({0x02, 0xa2, b[0], b[1], b[2], b[3]});
}

// The smallest flow key lib/vpc_policy needs from the quoted header of an ICMP error.
bool quoted_key(std::span<const uint8_t> q, vpc::FlowKey* out) {
  if (q.size() < net::kIpv4HeaderLen || (q[0] >> 4) != 4) return false;
  const size_t ihl = static_cast<size_t>(q[0] & 0x0f) * 4;
  if (ihl < net::kIpv4HeaderLen || q.size() < ihl) return false;
  const uint8_t proto = q[9];
  const uint32_t src = net::Ipv4Address::from_bytes(q.subspan(12)).value();
  const uint32_t dst = net::Ipv4Address::from_bytes(q.subspan(16)).value();
  const auto l4 = q.subspan(ihl);
  if ((proto == vpc::kProtoTcp || proto == vpc::kProtoUdp) && l4.size() >= 4) {
    const auto sp = static_cast<uint16_t>(l4[0] << 8 | l4[1]), dp = static_cast<uint16_t>(l4[2] << 8 | l4[3]);
    *out = proto == vpc::kProtoTcp ? vpc::FlowKey::tcp(src, sp, dst, dp) : vpc::FlowKey::udp(src, sp, dst, dp);
  } else if (proto == vpc::kProtoIcmp && l4.size() >= 8) {
    *out = vpc::FlowKey::icmp(src, dst, l4[0], l4[1], static_cast<uint16_t>(l4[4] << 8 | l4[5]));
  } else {
    *out = vpc::FlowKey::other(proto, src, dst);
  }
  return true;
}

// The 5-tuple (and more) lib/vpc_policy judges, from a parsed IPv4 frame.
vpc::Packet packet_of(const net::Frame& f) {
  const net::Ipv4View& ip = *f.ip;
  vpc::Packet p;
  p.bytes = ip.total_len;
  const uint32_t s = ip.src.value(), d = ip.dst.value();
  if (const auto* udp = std::get_if<net::UdpView>(&f.l4)) {
    p.key = vpc::FlowKey::udp(s, udp->src_port, d, udp->dst_port);
  } else if (const auto* tcp = std::get_if<net::TcpView>(&f.l4)) {
    p.key = vpc::FlowKey::tcp(s, tcp->src_port, d, tcp->dst_port);
    p.tcp_flags = static_cast<uint8_t>(tcp->flags);
  } else if (const auto* icmp = std::get_if<net::IcmpView>(&f.l4)) {
    const bool query = vpc::icmp_query(icmp->type).has_value();
    p.key = vpc::FlowKey::icmp(s, d, icmp->type, icmp->code, query ? icmp->echo_id() : uint16_t{0});
    if (vpc::is_icmp_error(icmp->type)) p.has_inner = quoted_key(icmp->body, &p.inner);
  } else {
    p.key = vpc::FlowKey::other(ip.protocol, s, d);
  }
  return p;
}

// Routed to `to`: from its gateway to it, one hop less to live; returns the length.
size_t route_rewrite(std::span<uint8_t> f, const Port& to) {
  to.mac().store(f.subspan(0, 6));
  to.gateway_mac().store(f.subspan(6, 6));
  const auto ip_header = f.subspan(net::kEthernetHeaderLen, net::kIpv4HeaderLen);
  net::ipv4_set_ttl(f.subspan(net::kEthernetHeaderLen, static_cast<size_t>(f[14] & 0x0f) * 4),
                    static_cast<uint8_t>(ip_header[8] - 1));
  return net::kEthernetHeaderLen + (size_t{ip_header[2]} << 8 | ip_header[3]);
}

}  // namespace

const char* to_string(Drop d) {
  switch (d) {
    case Drop::kBadHeader: return "bad_header";
    case Drop::kOversized: return "oversized";
    case Drop::kMalformed: return "malformed";
    case Drop::kUnsupported: return "unsupported";
    case Drop::kSpoofedMac: return "spoofed_mac";
    case Drop::kSpoofedIp: return "spoofed_ip";
    case Drop::kFragment: return "fragment";
    case Drop::kArpIgnored: return "arp_ignored";
    case Drop::kNotToGateway: return "not_to_gateway";
    case Drop::kBroadcast: return "broadcast";
    case Drop::kNoService: return "no_service";
    case Drop::kDhcpIgnored: return "dhcp_ignored";
    case Drop::kTtlExpired: return "ttl_expired";
    case Drop::kOtherVpc: return "other_vpc";
    case Drop::kNoRoute: return "no_route";
    case Drop::kSgEgress: return "sg_egress";
    case Drop::kSgIngress: return "sg_ingress";
    case Drop::kRxNotReady: return "rx_not_ready";
    case Drop::kRxQueueFull: return "rx_queue_full";
    case Drop::kRxBufferTooSmall: return "rx_buffer_too_small";
    case Drop::kFabricError: return "fabric_error";
    case Drop::kImdsUnavailable: return "imds_unavailable";
    case Drop::kImdsNoMetadata: return "imds_no_metadata";
    case Drop::kImdsRefused: return "imds_refused";
    case Drop::kNeighbourUnreachable: return "neighbour_unreachable";
    case Drop::kNeighbourRefused: return "neighbour_refused";
    case Drop::kCount: break;
  }
  return "?";
}

const char* to_string(RemoteVerdict v) {
  switch (v) {
    case RemoteVerdict::kDelivered: return "delivered";
    case RemoteVerdict::kMalformed: return "malformed";
    case RemoteVerdict::kUnknownVni: return "unknown_vni";
    case RemoteVerdict::kNoEni: return "no_eni";
    case RemoteVerdict::kSpoofedSource: return "spoofed_source";
    case RemoteVerdict::kTtlExpired: return "ttl_expired";
    case RemoteVerdict::kSgIngress: return "sg_ingress";
    case RemoteVerdict::kRxNotReady: return "rx_not_ready";
    case RemoteVerdict::kRxQueueFull: return "rx_queue_full";
    case RemoteVerdict::kNeighbourUnreachable: return "neighbour_unreachable";
    case RemoteVerdict::kCount: break;
  }
  return "?";
}

const char* to_string(RelayVerdict v) {
  switch (v) {
    case RelayVerdict::kSent: return "sent";
    case RelayVerdict::kRefused: return "refused";
    case RelayVerdict::kNoRoute: return "no_route";
    case RelayVerdict::kFabricError: return "fabric_error";
    case RelayVerdict::kCount: break;
  }
  return "?";
}

std::string hostname_for(net::Ipv4Address a) {
  const auto b = a.bytes();
  return "ip-" + std::to_string(b[0]) + "-" + std::to_string(b[1]) + "-" + std::to_string(b[2]) + "-" +
         std::to_string(b[3]);
}

// ---- Inbox

Inbox::Inbox() : slots_(kSlots), notify_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}

bool Inbox::push(std::span<const uint8_t> frame) {
  if (frame.size() > kSlotBytes) return false;
  std::lock_guard lock(mu_);
  if (count_ == slots_.size()) return false;
  Slot& s = slots_[(head_ + count_) % slots_.size()];
  std::memcpy(s.bytes.data(), frame.data(), frame.size());
  s.len = frame.size();
  ++count_;
  return true;
}

void Inbox::notify() {
  const uint64_t one = 1;
  (void)!::write(notify_.get(), &one, sizeof one);
}

std::span<const uint8_t> Inbox::front() {
  std::lock_guard lock(mu_);
  if (count_ == 0) return {};
  // The consumer is the only one to pop: the front slot stays put until it does.
  return {slots_[head_].bytes.data(), slots_[head_].len};
}

void Inbox::pop() {
  std::lock_guard lock(mu_);
  if (count_ == 0) return;
  head_ = (head_ + 1) % slots_.size();
  --count_;
}

size_t Inbox::size() const {
  std::lock_guard lock(mu_);
  return count_;
}

void Inbox::clear() {
  std::lock_guard lock(mu_);
  head_ = count_ = 0;
}

// ---- Port

Port::Port(EniSpec spec, net::Ipv4Prefix subnet, const Vpc& vpc, net::DhcpServer dhcp)
    : spec_(std::move(spec)), subnet_(subnet), gateway_mac_(gateway_mac_for(subnet)), vpc_(&vpc),
      dhcp_(std::move(dhcp)) {}

Port::~Port() = default;

void Port::unlink_inbox() {
  // The file this Port bound, not a successor's at the same path. On the control thread
  // (a worker may hold the last reference to a removed Port; its filter has no unlink).
  if (inbox_socket_) card_net::unlink_inbox(spec_.inbox, inbox_dev_, inbox_ino_);
}

// ---- Switch: the model

Switch::Switch(const rate_limit::Clock& clock, SwitchConfig config)
    : clock_(clock), config_(std::move(config)), policy_(clock, vpc::EngineConfig{unix_offset()}) {}

Switch::~Switch() {
  for (const auto& [id, p] : by_id_) p->unlink_inbox();
}

Vpc* Switch::vpc_of(const std::string& id) {
  for (auto& v : vpcs_)
    if (v->id == id) return v.get();
  return nullptr;
}

bool Switch::has_vpc(const std::string& id) const {
  std::shared_lock lock(mu_);
  return std::any_of(vpcs_.begin(), vpcs_.end(), [&](const auto& v) { return v->id == id; });
}

bool Switch::has_group(const std::string& id) const {
  std::shared_lock lock(mu_);
  return std::find(groups_.begin(), groups_.end(), id) != groups_.end();
}

Result<void, SwitchError> Switch::add_vpc(const VpcSpec& v) {
  std::unique_lock lock(mu_);
  if (!vpc::valid_id(v.id)) return invalid("VPC id \"" + v.id + "\" is not a printable id without spaces");
  if (vpc_of(v.id) != nullptr) return invalid("VPC " + v.id + " is declared twice");
  if (v.cidr.length() < 8 || v.cidr.length() > 28)
    return invalid("VPC " + v.id + ": CIDR " + v.cidr.to_string() + " must be /8 to /28");
  const uint32_t vni = v.vni ? *v.vni : vni_for(v.id);
  if (vni == 0 || vni > fabric::kMaxVni) return invalid("VPC " + v.id + ": VNI " + std::to_string(vni) + " is not 1..16777215");
  for (const auto& o : vpcs_)
    if (o->vni == vni)
      return invalid("VPC " + v.id + ": VNI " + std::to_string(vni) + " is VPC " + o->id + "'s" +
                     (v.vni ? "" : " (derived from the id; give \"vni\")"));
  auto zone = net::DnsZone::create({config_.region, "", v.cidr, {}, 60});
  if (!zone) return invalid("VPC " + v.id + ": DNS zone: " + zone.error().message());
  auto p = std::make_unique<Vpc>();
  p->id = v.id;
  p->cidr = v.cidr;
  p->vni = vni;
  p->index = static_cast<uint32_t>(vpcs_.size());
  p->zone = std::make_unique<net::DnsZone>(std::move(zone).value());
  vpcs_.push_back(std::move(p));
  return {};
}

Result<void, SwitchError> Switch::add_subnet(const SubnetSpec& s) {
  std::unique_lock lock(mu_);
  Vpc* v = vpc_of(s.vpc);
  if (v == nullptr) return invalid("subnet " + s.id + ": no VPC " + s.vpc);
  if (s.cidr.length() < 16 || s.cidr.length() > 28)
    return invalid("subnet " + s.id + ": CIDR " + s.cidr.to_string() + " must be /16 to /28");
  if (!v->cidr.contains(s.cidr))
    return invalid("subnet " + s.id + ": " + s.cidr.to_string() + " is outside VPC " + v->id + " (" +
                   v->cidr.to_string() + ")");
  for (const auto& other : vpcs_)
    for (const auto& o : other->subnets) {
      if (o.id == s.id) return invalid("subnet " + s.id + " is declared twice");
      if (other.get() == v && o.cidr.overlaps(s.cidr))
        return invalid("subnet " + s.id + ": " + s.cidr.to_string() + " overlaps subnet " + o.id);
    }
  v->subnets.push_back(s);
  return {};
}

Result<void, SwitchError> Switch::set_group(const GroupSpec& g) {
  if (!vpc::valid_id(g.id)) return invalid("security group id \"" + g.id + "\" is not a printable id without spaces");
  std::unique_lock lock(mu_);
  std::lock_guard plock(policy_mu_);
  const bool known = std::find(groups_.begin(), groups_.end(), g.id) != groups_.end();
  // Check everything before changing anything: referenced groups, quotas.
  for (const auto* list : {&g.ingress, &g.egress}) {
    if (!list->has_value()) continue;
    if ((*list)->size() > 60) return invalid("security group " + g.id + ": more than 60 rules in one direction");
    for (const auto& r : **list)
      if (const auto* ref = std::get_if<vpc::GroupRef>(&r.peer);
          ref != nullptr && ref->group_id != g.id &&
          std::find(groups_.begin(), groups_.end(), ref->group_id) == groups_.end())
        return invalid("security group " + g.id + ": rule \"" + r.to_string() + "\" names unknown group " +
                       ref->group_id);
  }
  if (!known) {
    if (auto r = policy_.create_group(g.id); !r) return invalid("security group " + g.id + ": " + r.error().message());
    groups_.push_back(g.id);
  }
  auto replace = [&](vpc::Direction dir, const std::vector<vpc::Rule>& rules) -> Result<void, SwitchError> {
    auto old = policy_.rules(g.id, dir);
    if (old)
      for (const auto& r : *old) (void)policy_.remove_rule(g.id, dir, r);
    for (const auto& r : rules) {
      if (auto a = policy_.add_rule(g.id, dir, r); !a && a.error().code != vpc::VpcErrc::kDuplicate)
        return invalid("security group " + g.id + ": rule \"" + r.to_string() + "\": " + a.error().message());
    }
    return {};
  };
  if (g.ingress) AZOTE_TRYV(replace(vpc::Direction::kIngress, *g.ingress));
  if (g.egress) AZOTE_TRYV(replace(vpc::Direction::kEgress, *g.egress));
  update_members();
  return {};
}

nlohmann::json Switch::describe_groups() const {
  std::shared_lock lock(mu_);
  std::lock_guard plock(policy_mu_);
  nlohmann::json out = nlohmann::json::array();
  for (const auto& id : groups_) {
    nlohmann::json g{{"id", id}, {"ingress", nlohmann::json::array()}, {"egress", nlohmann::json::array()}};
    for (auto [dir, key] : {std::pair{vpc::Direction::kIngress, "ingress"}, std::pair{vpc::Direction::kEgress, "egress"}}) {
      auto rules = policy_.rules(id, dir);
      if (rules)
        for (const auto& r : *rules) g[key].push_back(r.to_string());
    }
    out.push_back(std::move(g));
  }
  return out;
}

void Switch::update_members() {
  for (const auto& g : groups_) {
    std::vector<uint32_t> ips;
    for (const auto& [id, p] : by_id_)
      if (std::find(p->spec().groups.begin(), p->spec().groups.end(), g) != p->spec().groups.end())
        ips.push_back(p->ip().value());
    (void)policy_.set_members(g, ips);
  }
}

Result<Switch::Placement, SwitchError> Switch::place(const EniSpec& e, std::unique_lock<std::shared_mutex>& lock) {
  const std::string w = e.origin.empty() ? "ENI " + e.id : e.origin;
  if (by_id_.size() >= kMaxEnis * 4)
    return invalid(w + ": the card already knows " + std::to_string(by_id_.size()) + " ENIs and neighbours");
  // The subnet: by id anywhere, or by CIDR inside the named VPC (declared implicitly).
  Vpc* v = nullptr;
  std::optional<SubnetSpec> subnet;
  if (auto cidr = net::Ipv4Prefix::parse(e.subnet); cidr) {
    v = vpc_of(e.vpc);
    if (v == nullptr) return invalid(w + ": " + (e.vpc.empty() ? "vpc= is needed with subnet=CIDR" : "no VPC " + e.vpc));
    for (const auto& s : v->subnets)
      if (s.cidr == *cidr) subnet = s;
    if (!subnet) {
      lock.unlock();
      auto added = add_subnet(SubnetSpec{cidr->to_string(), e.vpc, *cidr});
      lock.lock();
      if (!added) return Unexpected{added.error()};
      subnet = SubnetSpec{cidr->to_string(), e.vpc, *cidr};
      v = vpc_of(e.vpc);
    }
  } else {
    for (auto& cand : vpcs_)
      for (const auto& s : cand->subnets)
        if (s.id == e.subnet) {
          v = cand.get();
          subnet = s;
        }
    if (!subnet) return invalid(w + ": no subnet " + e.subnet);
    if (!e.vpc.empty() && e.vpc != v->id) return invalid(w + ": subnet " + e.subnet + " is in " + v->id + ", not " + e.vpc);
  }
  const net::Ipv4Prefix& sn = subnet->cidr;
  const uint32_t host = e.ip.value() - sn.network().value();
  if (!sn.contains(e.ip)) return invalid(w + ": ip " + e.ip.to_string() + " is outside subnet " + sn.to_string());
  if (host <= 3 || e.ip == sn.last())
    return invalid(w + ": ip " + e.ip.to_string() + " is reserved in " + sn.to_string() +
                   " (network, gateway .1, DNS .2, .3 and broadcast)");
  if (e.mac == gateway_mac_for(sn)) return invalid(w + ": mac " + e.mac.to_string() + " is the gateway's");
  if (e.groups.empty() || e.groups.size() > 5) return invalid(w + ": an ENI has 1 to 5 security groups");
  for (const auto& g : e.groups)
    if (std::find(groups_.begin(), groups_.end(), g) == groups_.end()) return invalid(w + ": no security group " + g);
  for (const auto& [id, p] : by_id_) {
    if (id == e.id) return invalid(w + ": ENI " + e.id + " exists" + (p->neighbour_ ? " (a neighbour)" : ""));
    if (!e.socket.empty() && p->spec().socket == e.socket) return invalid(w + ": socket " + e.socket + " is used by " + id);
    if (!e.inbox.empty() && p->spec().inbox == e.inbox) return invalid(w + ": inbox " + e.inbox + " is used by " + id);
    if (p->mac() == e.mac) return invalid(w + ": mac " + e.mac.to_string() + " is used by " + id);
  }
  if (routes_.count(route_key(v->index, e.ip)) != 0)
    return invalid(w + ": ip " + e.ip.to_string() + " is used in " + v->id);
  return Placement{v, *subnet};
}

namespace {

sockaddr_un unix_address(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::memcpy(a.sun_path, path.data(), std::min(path.size(), sizeof a.sun_path - 1));
  return a;
}

}  // namespace

Result<std::shared_ptr<Port>, SwitchError> Switch::add_eni(const EniSpec& e) {
  std::unique_lock lock(mu_);
  const std::string w = e.origin.empty() ? "ENI " + e.id : e.origin;
  size_t served = 0;
  for (const auto& [id, p] : by_id_) served += !p->neighbour_;
  if (served >= kMaxEnis) return invalid(w + ": the card already serves " + std::to_string(kMaxEnis) + " ENIs");
  AZOTE_TRY(at, place(e, lock));
  Vpc* v = at.vpc;
  const net::Ipv4Prefix& sn = at.subnet.cidr;

  net::DhcpConfig dc;
  dc.mac = e.mac;
  dc.address = e.ip;
  dc.subnet = sn;
  dc.router = net::Ipv4Address::from_u32(sn.network().value() + 1);
  dc.router_mac = gateway_mac_for(sn);
  dc.dns = {net::Ipv4Address::from_u32(sn.network().value() + 2)};
  dc.hostname = hostname_for(e.ip);
  dc.domain_name = v->zone->domain().to_text();
  dc.mtu = kMtu;
  auto dhcp = net::DhcpServer::create(dc);
  if (!dhcp) return invalid(w + ": DHCP: " + dhcp.error().message());
  std::shared_ptr<Port> port(new Port(e, sn, *v, std::move(dhcp).value()));
  port->spec_.subnet = at.subnet.id;
  port->spec_.vpc = v->id;
  if (!port->inbox_.notify_fd()) return make_error(SwitchErrc::kHost, "eventfd", errno);
  if (!e.inbox.empty()) {
    AZOTE_TRY(sock, bind_inbox(e.inbox, &port->inbox_dev_, &port->inbox_ino_));
    port->inbox_socket_ = std::move(sock);
  }
  {
    std::lock_guard plock(policy_mu_);
    vpc::InterfaceConfig ic;
    ic.id = e.id;
    ic.groups = e.groups;
    ic.flow_log.enabled = config_.flow_log;
    ic.flow_log.account_id = config_.account;
    ic.flow_log.window = std::chrono::seconds(config_.flow_log_window_s);
    auto h = policy_.add_interface(ic);
    if (!h) return invalid(w + ": " + h.error().message());
    port->policy_ = *h;
    by_id_[e.id] = port;
    routes_[route_key(v->index, e.ip)] = port;
    update_members();
  }
  return port;
}

Result<std::shared_ptr<Port>, SwitchError> Switch::add_neighbour(const EniSpec& e) {
  std::unique_lock lock(mu_);
  const std::string w = e.origin.empty() ? "neighbour " + e.id : e.origin;
  if (e.inbox.empty() || !e.uid) return invalid(w + ": a neighbour needs an inbox and a uid");
  AZOTE_TRY(at, place(e, lock));
  AZOTE_TRYV(ensure_datagram_socket());
  if (relay_ && relay_->inbox == e.inbox) return invalid(w + ": inbox " + e.inbox + " is the relay's");
  net::DhcpConfig dc;  // never used: a neighbour's DHCP is its own card's
  dc.mac = e.mac;
  dc.address = e.ip;
  dc.subnet = at.subnet.cidr;
  dc.router = net::Ipv4Address::from_u32(at.subnet.cidr.network().value() + 1);
  dc.router_mac = gateway_mac_for(at.subnet.cidr);
  dc.dns = {dc.router};
  dc.hostname = hostname_for(e.ip);
  dc.domain_name = at.vpc->zone->domain().to_text();
  dc.mtu = kMtu;
  auto dhcp = net::DhcpServer::create(dc);
  if (!dhcp) return invalid(w + ": " + dhcp.error().message());
  std::shared_ptr<Port> port(new Port(e, at.subnet.cidr, *at.vpc, std::move(dhcp).value()));
  port->spec_.subnet = at.subnet.id;
  port->spec_.vpc = at.vpc->id;
  port->neighbour_ = true;
  port->inbox_addr_ = unix_address(e.inbox);
  std::lock_guard plock(policy_mu_);
  by_id_[e.id] = port;
  routes_[route_key(at.vpc->index, e.ip)] = port;
  update_members();
  return port;
}

Result<void, SwitchError> Switch::remove_neighbour(const std::string& id) {
  std::unique_lock lock(mu_);
  auto it = by_id_.find(id);
  if (it == by_id_.end() || !it->second->neighbour_) return invalid("no neighbour " + id);
  auto port = it->second;
  by_id_.erase(it);
  routes_.erase(route_key(port->vpc().index, port->ip()));
  std::lock_guard plock(policy_mu_);
  update_members();
  return {};
}

Result<void, SwitchError> Switch::set_relay(const std::string& inbox, uint32_t uid) {
  std::unique_lock lock(mu_);
  if (inbox.empty()) {
    relay_.reset();
    return {};
  }
  if (inbox.front() != '/' || inbox.size() >= 108) return invalid("relay inbox " + inbox + ": an absolute path under 108 bytes");
  AZOTE_TRYV(ensure_datagram_socket());
  relay_ = Relay{inbox, unix_address(inbox), uid};
  return {};
}

nlohmann::json Switch::describe_relay() const {
  std::shared_lock lock(mu_);
  nlohmann::json out = nlohmann::json::object();
  if (relay_) {
    out["inbox"] = relay_->inbox;
    out["uid"] = relay_->uid;
    out["unreachable"] = relay_unreachable_.load();
  }
  nlohmann::json relayed = nlohmann::json::object();
  for (size_t i = 0; i < kRelayVerdictCount; ++i)
    if (const uint64_t n = relay_counts_[i].load(); n != 0) relayed[to_string(static_cast<RelayVerdict>(i))] = n;
  out["relayed"] = relayed;
  return out;
}

std::array<uint64_t, kRelayVerdictCount> Switch::relay_counts() const {
  std::array<uint64_t, kRelayVerdictCount> out{};
  for (size_t i = 0; i < kRelayVerdictCount; ++i) out[i] = relay_counts_[i].load(std::memory_order_relaxed);
  return out;
}

RelayVerdict Switch::relay_out(uint32_t sender, std::span<const uint8_t> frame) {
  auto count = [&](RelayVerdict v) {
    relay_counts_[static_cast<size_t>(v)].fetch_add(1, std::memory_order_relaxed);
    return v;
  };
  if (frame.size() > kMaxFrame) return count(RelayVerdict::kRefused);
  auto parsed = net::parse_frame(frame);
  if (!parsed || parsed->eth.vlan || !parsed->ip || parsed->ip->is_fragment()) return count(RelayVerdict::kRefused);
  const net::Ipv4View& ip = *parsed->ip;
  if (ip.ttl == 0 || ip.dst.is_broadcast() || ip.dst.is_multicast()) return count(RelayVerdict::kRefused);
  RemoteFrame rf;
  {
    std::shared_lock lock(mu_);
    // The sending card speaks only for the ENIs its uid serves (never for this one's).
    const Port* src = nullptr;
    for (const auto& v : vpcs_)
      if (auto it = routes_.find(route_key(v->index, ip.src)); it != routes_.end()) src = it->second.get();
    if (src == nullptr || !src->neighbour_ || src->spec_.uid != sender) return count(RelayVerdict::kRefused);
    auto r = remote_.find(route_key(src->vpc_->index, ip.dst));
    if (r == remote_.end()) return count(RelayVerdict::kNoRoute);
    rf = RemoteFrame{r->second, src->vpc_->vni, frame, nullptr, &relay_send_errors_};
  }
  FabricSender* fs = fabric_.load(std::memory_order_acquire);
  if (fs == nullptr) return count(RelayVerdict::kFabricError);
  const uint64_t before = relay_send_errors_.load(std::memory_order_relaxed);
  fs->send(std::span(&rf, 1));
  return count(relay_send_errors_.load(std::memory_order_relaxed) == before ? RelayVerdict::kSent : RelayVerdict::kFabricError);
}

std::vector<std::shared_ptr<Port>> Switch::neighbours() const {
  std::shared_lock lock(mu_);
  std::vector<std::shared_ptr<Port>> out;
  for (const auto& [id, p] : by_id_)
    if (p->neighbour_) out.push_back(p);
  return out;
}

Result<void, SwitchError> Switch::remove_eni(const std::string& id) {
  std::unique_lock lock(mu_);
  auto it = by_id_.find(id);
  if (it == by_id_.end()) return invalid("no ENI " + id);
  if (it->second->neighbour_) return invalid("ENI " + id + " is a neighbour (remove-neighbour)");
  auto port = it->second;
  by_id_.erase(it);
  routes_.erase(route_key(port->vpc().index, port->ip()));
  port->unlink_inbox();
  if (auto slot = port->imds_slot()) {
    imds_slots_.erase(*slot);
    port->imds_slot_.store(-1, std::memory_order_release);
  }
  std::lock_guard plock(policy_mu_);
  (void)policy_.remove_interface(port->policy_);
  update_members();
  return {};
}

void Switch::set_fabric(FabricSender* sender, fabric::HostId self) {
  std::unique_lock lock(mu_);
  self_host_ = self;
  fabric_.store(sender, std::memory_order_release);
}

Result<void, SwitchError> Switch::add_mapping(const FabricMappingSpec& m) {
  std::unique_lock lock(mu_);
  const std::string w = "mapping " + m.vpc + " " + m.ip.to_string() + " -> host " + std::to_string(m.host);
  Vpc* v = vpc_of(m.vpc);
  if (v == nullptr) return invalid(w + ": no VPC " + m.vpc + " on this host");
  if (!v->cidr.contains(m.ip)) return invalid(w + ": " + m.ip.to_string() + " is outside " + v->cidr.to_string());
  if (m.host == 0 || m.host == self_host_) return invalid(w + ": host " + std::to_string(m.host) + " is this host");
  remote_[route_key(v->index, m.ip)] = m.host;
  return {};
}

Result<void, SwitchError> Switch::remove_mapping(const std::string& vpc, net::Ipv4Address ip) {
  std::unique_lock lock(mu_);
  Vpc* v = vpc_of(vpc);
  if (v == nullptr) return invalid("no VPC " + vpc + " on this host");
  if (remote_.erase(route_key(v->index, ip)) == 0) return invalid("no mapping of " + ip.to_string() + " in " + vpc);
  return {};
}

std::vector<FabricMappingSpec> Switch::mappings() const {
  std::shared_lock lock(mu_);
  std::vector<FabricMappingSpec> out;
  for (const auto& [key, host] : remote_)
    out.push_back({vpcs_[key >> 32]->id, net::Ipv4Address::from_u32(static_cast<uint32_t>(key)), host});
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
    return a.vpc != b.vpc ? a.vpc < b.vpc : a.ip.value() < b.ip.value();
  });
  return out;
}

bool Switch::maps_to(fabric::HostId host) const {
  std::shared_lock lock(mu_);
  for (const auto& [key, h] : remote_)
    if (h == host) return true;
  return false;
}

void Switch::set_metadata_sink(MetadataSink* sink) { imds_.store(sink, std::memory_order_release); }

Result<void, SwitchError> Switch::set_imds_slot(const std::string& eni, std::optional<uint32_t> slot) {
  std::unique_lock lock(mu_);
  auto it = by_id_.find(eni);
  if (it == by_id_.end()) return invalid("no ENI " + eni);
  Port& p = *it->second;
  if (slot) {
    auto taken = imds_slots_.find(*slot);
    if (taken != imds_slots_.end() && taken->second != it->second)
      return invalid("ENI " + eni + ": IMDS slot " + std::to_string(*slot) + " is ENI " + taken->second->id() + "'s");
  }
  if (auto old = p.imds_slot()) imds_slots_.erase(*old);
  if (slot) imds_slots_[*slot] = it->second;
  p.imds_slot_.store(slot ? int64_t{*slot} : -1, std::memory_order_release);
  return {};
}

bool Switch::deliver_metadata(uint32_t slot, std::span<const uint8_t> ipv4) {
  std::shared_ptr<Port> to;
  {
    std::shared_lock lock(mu_);
    auto it = imds_slots_.find(slot);
    if (it == imds_slots_.end()) return false;
    to = it->second;  // keeps the Port alive if remove_eni() runs now
  }
  Port& p = *to;
  if (ipv4.size() > kMtu || ipv4.size() < net::kIpv4HeaderLen) return false;
  if (!p.rx_ready.load(std::memory_order_acquire)) {
    p.counters_.drop(Drop::kRxNotReady);
    return false;
  }
  std::array<uint8_t, kSlotBytes> buf;
  std::memcpy(buf.data() + net::kEthernetHeaderLen, ipv4.data(), ipv4.size());
  auto len = net::build_ethernet(buf, net::EthernetFields{p.mac(), p.gateway_mac(), net::kEtherTypeIpv4, {}}, ipv4.size());
  if (!len) return false;
  if (!p.inbox_.push(std::span(buf).subspan(0, *len))) {
    p.counters_.drop(Drop::kRxQueueFull);
    return false;
  }
  p.counters_.imds_out.fetch_add(1, std::memory_order_relaxed);
  p.inbox_.notify();
  return true;
}

std::shared_ptr<Port> Switch::find(const std::string& id) const {
  std::shared_lock lock(mu_);
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : it->second;
}

std::vector<std::shared_ptr<Port>> Switch::ports() const {
  std::shared_lock lock(mu_);
  std::vector<std::shared_ptr<Port>> out;
  for (const auto& [id, p] : by_id_)
    if (!p->neighbour_) out.push_back(p);
  return out;
}

std::vector<std::string> Switch::tick() {
  std::lock_guard plock(policy_mu_);
  const auto now = clock_.now();
  auto lines = policy_.flush(now);
  policy_.expire(now);
  return lines;
}

std::vector<std::string> Switch::close_flow_logs() {
  std::shared_lock lock(mu_);
  std::lock_guard plock(policy_mu_);
  for (const auto& [id, p] : by_id_)
    if (!p->neighbour_) (void)policy_.remove_interface(p->policy_);
  return policy_.flush(clock_.now());
}

// ---- Switch: the data path

void Switch::reply(Port& to, std::span<const uint8_t> frame) {
  if (!to.inbox_.push(frame)) {
    to.counters_.drop(Drop::kRxQueueFull);
    return;
  }
  to.inbox_.notify();
}

void Switch::transmit_one(Port& from, std::span<const uint8_t> frame) {
  std::vector<TxFrame> one(1);
  if (frame.size() > kMaxFrame) {
    from.counters_.tx_packets.fetch_add(1, std::memory_order_relaxed);
    from.counters_.drop(Drop::kOversized);
    return;
  }
  std::memcpy(one[0].bytes.data(), frame.data(), frame.size());
  one[0].len = frame.size();
  transmit(from, one);
}

void Switch::transmit(Port& from, std::span<TxFrame> frames) {
  std::vector<Candidate> cands;
  for (size_t i = 0; i < frames.size(); ++i) {
    from.counters_.tx_packets.fetch_add(1, std::memory_order_relaxed);
    from.counters_.tx_bytes.fetch_add(frames[i].len, std::memory_order_relaxed);
    handle(from, frames[i], i, cands);
  }
  if (cands.empty()) return;
  {
    // One lock for the batch's verdicts: egress at the sender, then ingress at the
    // receiver, both stateful and both flow-logged. A frame for another host meets
    // its receiver's groups on that host's card.
    std::lock_guard plock(policy_mu_);
    for (auto& c : cands) {
      if (!policy_.process(from.policy_, vpc::Direction::kEgress, c.packet).accepted()) {
        from.counters_.drop(Drop::kSgEgress);
        c.to.reset();
        c.remote = 0;
        continue;
      }
      // A neighbour's ingress groups are its own card's to apply (this card is not
      // trusted with them, nor can it see that card's flows).
      if (c.to && !c.to->neighbour_ && !policy_.process(c.to->policy_, vpc::Direction::kIngress, c.packet).accepted()) {
        c.to->counters_.drop(Drop::kSgIngress);
        c.to.reset();
      }
    }
  }
  std::vector<Port*> woken;
  std::array<RemoteFrame, 64> remote;
  size_t nremote = 0;
  std::array<Datagram, 64> dgrams;  // for other card processes: neighbours' inboxes, the relay
  size_t ndgram = 0;
  std::optional<sockaddr_un> relay_addr;  // looked up once per batch, when a frame needs it
  bool relay_known = false;
  for (auto& c : cands) {
    TxFrame& f = frames[c.frame];
    if (c.remote != 0) {
      // One hop (this card) less to live; the receiving card sets the Ethernet addresses.
      const auto ip_header = std::span(f.bytes).subspan(net::kEthernetHeaderLen);
      net::ipv4_set_ttl(ip_header.subspan(0, static_cast<size_t>(f.bytes[14] & 0x0f) * 4),
                        static_cast<uint8_t>(ip_header[8] - 1));
      const size_t len = net::kEthernetHeaderLen + (size_t{ip_header[2]} << 8 | ip_header[3]);
      if (c.remote == kRelayHost) {
        if (!relay_known) {
          std::shared_lock lock(mu_);
          if (relay_) relay_addr = relay_->addr;
          relay_known = true;
        }
        if (!relay_addr || ndgram == dgrams.size()) {
          from.counters_.drop(Drop::kFabricError);
          relay_unreachable_.fetch_add(1, std::memory_order_relaxed);
        } else {
          dgrams[ndgram++] = Datagram{&*relay_addr, std::span<const uint8_t>(f.bytes.data(), len), nullptr};
        }
        continue;
      }
      if (nremote < remote.size())
        remote[nremote++] = RemoteFrame{c.remote, c.vni, std::span<const uint8_t>(f.bytes.data(), len), &from};
      else
        from.counters_.drop(Drop::kFabricError);
      continue;
    }
    if (!c.to) continue;
    Port& to = *c.to;
    if (to.neighbour_) {
      const size_t len = route_rewrite(f.bytes, to);
      if (ndgram < dgrams.size()) dgrams[ndgram++] = Datagram{&to.inbox_addr_, std::span(f.bytes).subspan(0, len), &to};
      else from.counters_.drop(Drop::kNeighbourUnreachable);
      continue;
    }
    if (!to.rx_ready.load(std::memory_order_acquire)) {
      to.counters_.drop(Drop::kRxNotReady);
      continue;
    }
    const size_t len = route_rewrite(f.bytes, to);
    if (!to.inbox_.push(std::span(f.bytes).subspan(0, len))) {
      to.counters_.drop(Drop::kRxQueueFull);
      continue;
    }
    from.counters_.forwarded.fetch_add(1, std::memory_order_relaxed);
    if (std::find(woken.begin(), woken.end(), &to) == woken.end()) woken.push_back(&to);
  }
  for (Port* p : woken) p->inbox_.notify();
  if (ndgram > 0) send_datagrams(from, std::span(dgrams.data(), ndgram));
  if (nremote > 0) {
    if (FabricSender* fs = fabric_.load(std::memory_order_acquire); fs != nullptr) {
      fs->send(std::span(remote.data(), nremote));
    } else {
      from.counters_.drops[static_cast<size_t>(Drop::kFabricError)].fetch_add(nremote, std::memory_order_relaxed);
    }
  }
}

RemoteVerdict Switch::receive_remote(fabric::HostId from, uint32_t vni, std::span<uint8_t> frame) {
  if (frame.size() > kMaxFrame) return RemoteVerdict::kMalformed;
  auto parsed = net::parse_frame(frame);
  if (!parsed || parsed->eth.vlan || !parsed->ip || parsed->ip->is_fragment()) return RemoteVerdict::kMalformed;
  const net::Ipv4View& ip = *parsed->ip;
  if (ip.dst.is_broadcast() || ip.dst.is_multicast() || ip.src.is_multicast()) return RemoteVerdict::kMalformed;
  std::shared_ptr<Port> to;
  {
    std::shared_lock lock(mu_);
    const Vpc* v = nullptr;
    for (const auto& cand : vpcs_)
      if (cand->vni == vni) v = cand.get();
    if (v == nullptr) return RemoteVerdict::kUnknownVni;
    auto it = routes_.find(route_key(v->index, ip.dst));
    if (it == routes_.end()) return RemoteVerdict::kNoEni;
    // The sending host speaks only for the addresses mapped to it.
    auto src = remote_.find(route_key(v->index, ip.src));
    if (src == remote_.end() || src->second != from) return RemoteVerdict::kSpoofedSource;
    to = it->second;
  }
  Port& p = *to;
  if (ip.dst == p.subnet_.network() || ip.dst == p.subnet_.last()) return RemoteVerdict::kNoEni;
  if (ip.ttl == 0) return RemoteVerdict::kTtlExpired;
  if (p.neighbour_) {
    // Served by an instance's card: its groups are that card's to apply; this process
    // (the fabric's, mapping no guest memory) only hands the frame over.
    p.mac().store(frame.subspan(0, 6));
    p.gateway_mac().store(frame.subspan(6, 6));
    if (!send_datagram(p.inbox_addr_, frame.subspan(0, net::kEthernetHeaderLen + ip.total_len)))
      return RemoteVerdict::kNeighbourUnreachable;
    return RemoteVerdict::kDelivered;
  }
  {
    std::lock_guard plock(policy_mu_);
    if (!policy_.process(p.policy_, vpc::Direction::kIngress, packet_of(*parsed)).accepted()) {
      p.counters_.drop(Drop::kSgIngress);
      return RemoteVerdict::kSgIngress;
    }
  }
  if (!p.rx_ready.load(std::memory_order_acquire)) {
    p.counters_.drop(Drop::kRxNotReady);
    return RemoteVerdict::kRxNotReady;
  }
  // As if routed here: from the receiver's gateway, with the TTL the sender left (the
  // sending card already took one off).
  p.mac().store(frame.subspan(0, 6));
  p.gateway_mac().store(frame.subspan(6, 6));
  const size_t len = net::kEthernetHeaderLen + ip.total_len;
  if (!p.inbox_.push(frame.subspan(0, len))) {
    p.counters_.drop(Drop::kRxQueueFull);
    return RemoteVerdict::kRxQueueFull;
  }
  p.inbox_.notify();
  return RemoteVerdict::kDelivered;
}

void Switch::set_datagram_socket(UniqueFd s) {
  std::unique_lock lock(mu_);
  neighbour_tx_ = std::move(s);
}

Result<void, SwitchError> Switch::ensure_datagram_socket() {
  if (neighbour_tx_) return {};
  neighbour_tx_ = UniqueFd(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!neighbour_tx_) return make_error(SwitchErrc::kHost, "datagram socket", errno);
  // A datagram is charged to its sender until read: 4 MiB where this process may set it
  // (root, run by hand), the host's net.core.wmem_max otherwise (the launcher hands
  // jailed cards a socket it sized: --datagram-fd).
  const int bytes = 4 << 20;
  if (::setsockopt(neighbour_tx_.get(), SOL_SOCKET, SO_SNDBUFFORCE, &bytes, sizeof bytes) != 0)
    (void)::setsockopt(neighbour_tx_.get(), SOL_SOCKET, SO_SNDBUF, &bytes, sizeof bytes);
  return {};
}

bool Switch::send_datagram(const sockaddr_un& a, std::span<const uint8_t> frame) {
  return ::sendto(neighbour_tx_.get(), frame.data(), frame.size(), MSG_DONTWAIT | MSG_NOSIGNAL,
                  reinterpret_cast<const sockaddr*>(&a), sizeof a) == static_cast<ssize_t>(frame.size());  // NOLINT
}

void Switch::send_datagrams(Port& from, std::span<const Datagram> out) {
  // One sendmmsg for the batch, never blocking: a datagram a full inbox (that card is
  // behind) or a missing one (it is not running) does not take is dropped here, as a
  // full inbox drops inside one card; the rest go on.
  std::array<iovec, 64> iov;
  std::array<mmsghdr, 64> msg;
  const size_t n = std::min(out.size(), msg.size());
  for (size_t i = 0; i < n; ++i) {
    iov[i] = iovec{const_cast<uint8_t*>(out[i].frame.data()), out[i].frame.size()};  // NOLINT(const-cast): sendmmsg reads only
    msg[i] = mmsghdr{};
    msg[i].msg_hdr.msg_name = const_cast<sockaddr_un*>(out[i].to_addr);  // NOLINT(const-cast): sendmmsg reads it
    msg[i].msg_hdr.msg_namelen = sizeof(sockaddr_un);
    msg[i].msg_hdr.msg_iov = &iov[i];
    msg[i].msg_hdr.msg_iovlen = 1;
  }
  size_t done = 0;
  while (done < n) {
    const int r = ::sendmmsg(neighbour_tx_.get(), msg.data() + done, static_cast<unsigned>(n - done), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (r > 0) {
      from.counters_.forwarded.fetch_add(static_cast<uint64_t>(r), std::memory_order_relaxed);
      done += static_cast<size_t>(r);
      continue;
    }
    if (r < 0 && errno == EINTR) continue;
    const Datagram& d = out[done];
    if (d.to != nullptr) {
      from.counters_.drop(Drop::kNeighbourUnreachable);
    } else {
      from.counters_.drop(Drop::kFabricError);
      relay_unreachable_.fetch_add(1, std::memory_order_relaxed);
    }
    if (errno != EAGAIN && log_limit_.allow())
      LOG_WARN("eni %s: %s (inbox %s): %s", from.id().c_str(), d.to != nullptr ? d.to->id().c_str() : "the fabric relay",
               d.to_addr->sun_path, std::strerror(errno));
    ++done;
  }
}

bool Switch::receive_neighbour(Port& to, uint32_t sender, std::span<uint8_t> frame) {
  auto refuse = [&] {
    to.counters_.drop(Drop::kNeighbourRefused);
    return false;
  };
  if (frame.size() > kMaxFrame) return refuse();
  auto parsed = net::parse_frame(frame);
  if (!parsed || parsed->eth.vlan || !parsed->ip || parsed->ip->is_fragment()) return refuse();
  const net::Ipv4View& ip = *parsed->ip;
  if (ip.dst != to.ip()) return refuse();
  {
    // The sender's uid must serve the source address: no card speaks for another's ENIs.
    // The fabric process (the relay's uid) brings frames from other hosts: sources in the
    // VPC that no ENI of this host owns (it checked the sending host's mapping).
    std::shared_lock lock(mu_);
    auto it = routes_.find(route_key(to.vpc_->index, ip.src));
    const bool local_ok = it != routes_.end() && it->second->neighbour_ && it->second->spec_.uid == sender;
    const bool remote_ok = it == routes_.end() && relay_ && relay_->uid == sender && to.vpc_->cidr.contains(ip.src) &&
                           ip.src != to.subnet_.network() && !ip.src.is_broadcast() && !ip.src.is_multicast();
    if (!local_ok && !remote_ok) return refuse();
  }
  if (ip.ttl == 0) {
    to.counters_.drop(Drop::kTtlExpired);
    return false;
  }
  {
    std::lock_guard plock(policy_mu_);
    if (!policy_.process(to.policy_, vpc::Direction::kIngress, packet_of(*parsed)).accepted()) {
      to.counters_.drop(Drop::kSgIngress);
      return false;
    }
  }
  if (!to.rx_ready.load(std::memory_order_acquire)) {
    to.counters_.drop(Drop::kRxNotReady);
    return false;
  }
  to.mac().store(frame.subspan(0, 6));
  to.gateway_mac().store(frame.subspan(6, 6));
  if (!to.inbox_.push(frame.subspan(0, net::kEthernetHeaderLen + ip.total_len))) {
    to.counters_.drop(Drop::kRxQueueFull);
    return false;
  }
  to.counters_.neighbour_in.fetch_add(1, std::memory_order_relaxed);
  return true;
}

void Switch::handle_arp(Port& from, const net::Arp& arp, net::MacAddress eth_src) {
  PortCounters& c = from.counters_;
  if (arp.op != net::ArpOp::kRequest) return c.drop(Drop::kArpIgnored);
  if (from.spec_.source_dest_check) {
    if (arp.sender_mac != from.mac()) return c.drop(Drop::kSpoofedMac);
    if (arp.sender_ip != from.ip() && !arp.sender_ip.is_any()) return c.drop(Drop::kSpoofedIp);
  }
  const net::Ipv4Address t = arp.target_ip;
  // Its own address (duplicate address detection, announcements) gets no answer;
  // every other address of the subnet is the gateway's to deliver: nothing is flooded.
  if (t == from.ip() || arp.is_announcement() || !from.subnet_.contains(t) || t == from.subnet_.network() ||
      t == from.subnet_.last())
    return c.drop(Drop::kArpIgnored);
  std::array<uint8_t, 64> buf{};
  auto n = net::build_arp_reply(std::span(buf).subspan(net::kEthernetHeaderLen), arp, from.gateway_mac());
  if (!n) return c.drop(Drop::kMalformed);
  auto len = net::build_ethernet(buf, net::EthernetFields{eth_src, from.gateway_mac(), net::kEtherTypeArp, {}}, *n);
  if (!len) return c.drop(Drop::kMalformed);
  reply(from, std::span(buf).subspan(0, *len));
  c.arp_replies.fetch_add(1, std::memory_order_relaxed);
}

void Switch::handle(Port& from, const TxFrame& f, size_t index, std::vector<Candidate>& out) {
  PortCounters& c = from.counters_;
  const std::span<const uint8_t> frame(f.bytes.data(), f.len);
  auto parsed = net::parse_frame(frame);
  if (!parsed) {
    c.parse_errors[static_cast<size_t>(parsed.error().code)].fetch_add(1, std::memory_order_relaxed);
    return c.drop(parsed.error().code == net::NetErrc::kUnsupported ? Drop::kUnsupported : Drop::kMalformed);
  }
  const net::EthernetView& eth = parsed->eth;
  if (eth.vlan) return c.drop(Drop::kUnsupported);
  const bool check = from.spec_.source_dest_check;
  if (check && eth.src != from.mac()) return c.drop(Drop::kSpoofedMac);
  if (parsed->arp) return handle_arp(from, *parsed->arp, eth.src);
  if (!parsed->ip) return c.drop(Drop::kUnsupported);
  const net::Ipv4View& ip = *parsed->ip;
  if (ip.is_fragment()) return c.drop(Drop::kFragment);
  const auto* udp = std::get_if<net::UdpView>(&parsed->l4);
  std::array<uint8_t, kSlotBytes> buf;
  const net::EthernetFields to_guest{eth.src, from.gateway_mac(), net::kEtherTypeIpv4, {}};

  // DHCP: before the source check, a client has no address yet.
  if (udp != nullptr && udp->dst_port == net::kDhcpServerPort) {
    if (!ip.dst.is_broadcast() && ip.dst != from.gateway()) return c.drop(Drop::kNoService);
    if (check && !ip.src.is_any() && ip.src != from.ip()) return c.drop(Drop::kSpoofedIp);
    auto m = net::parse_dhcp(udp->payload);
    if (!m) {
      c.parse_errors[static_cast<size_t>(m.error().code)].fetch_add(1, std::memory_order_relaxed);
      return c.drop(Drop::kMalformed);
    }
    const net::DhcpDecision d = from.dhcp_.handle(*m);
    from.lease_state.store(static_cast<uint8_t>(from.dhcp_.state()), std::memory_order_relaxed);
    if (!d.reply) return c.drop(Drop::kDhcpIgnored);
    auto n = from.dhcp_.build_reply_frame(buf, *m, d);
    if (!n) return c.drop(Drop::kMalformed);
    reply(from, std::span(buf).subspan(0, *n));
    c.dhcp_replies.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  if (check && ip.src != from.ip()) return c.drop(Drop::kSpoofedIp);
  if (eth.dst != from.gateway_mac()) return c.drop(eth.dst.is_multicast() ? Drop::kBroadcast : Drop::kNotToGateway);
  if (ip.dst.is_broadcast() || ip.dst.is_multicast() || ip.dst == from.subnet_.last())
    return c.drop(Drop::kBroadcast);

  // The instance metadata service: the ENI's slot, the IPv4 packet as sent (no TTL
  // decrement, no security groups: as EC2's). The service validates it (TCP to :80 from
  // the ENI's address) and answers through deliver_metadata().
  if (ip.dst == kImdsAddress) {
    MetadataSink* sink = imds_.load(std::memory_order_acquire);
    if (sink == nullptr) return c.drop(Drop::kImdsUnavailable);
    const auto slot = from.imds_slot();
    if (!slot) return c.drop(Drop::kImdsNoMetadata);
    if (!sink->inject(*slot, frame.subspan(net::kEthernetHeaderLen))) return c.drop(Drop::kImdsRefused);
    c.imds_in.fetch_add(1, std::memory_order_relaxed);
    return;
  }

  if (ip.dst == from.gateway()) {
    const auto* icmp = std::get_if<net::IcmpView>(&parsed->l4);
    if (icmp == nullptr || icmp->type != net::kIcmpEchoRequest) return c.drop(Drop::kNoService);
    constexpr size_t at = net::kEthernetHeaderLen + net::kIpv4HeaderLen;
    auto n = net::build_icmp_echo_reply(std::span(buf).subspan(at), *icmp);
    if (!n) return c.drop(Drop::kMalformed);
    net::Ipv4Fields f4{from.gateway(), ip.src, net::kIpProtoIcmp, kDefaultTtl, 0, 0, true};
    auto len = net::build_ipv4_frame(buf, to_guest, f4, std::span(buf).subspan(at, *n));
    if (!len) return c.drop(Drop::kMalformed);
    reply(from, std::span(buf).subspan(0, *len));
    c.icmp_replies.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  if (ip.dst == from.dns_server()) {
    if (udp == nullptr || udp->dst_port != net::kDnsPort) return c.drop(Drop::kNoService);
    auto q = net::parse_dns_query(udp->payload);
    if (!q) {
      c.parse_errors[static_cast<size_t>(q.error().code)].fetch_add(1, std::memory_order_relaxed);
      return c.drop(Drop::kMalformed);
    }
    constexpr size_t at = net::kEthernetHeaderLen + net::kIpv4HeaderLen + net::kUdpHeaderLen;
    auto n = net::answer(*q, *from.vpc_->zone, std::span(buf).subspan(at));
    if (!n) return c.drop(Drop::kMalformed);
    net::Ipv4Fields f4{from.dns_server(), ip.src, net::kIpProtoUdp, kDefaultTtl, 0, 0, true};
    auto len = net::build_udp_frame(buf, to_guest, f4, net::kDnsPort, udp->src_port, std::span(buf).subspan(at, *n));
    if (!len) return c.drop(Drop::kMalformed);
    reply(from, std::span(buf).subspan(0, *len));
    c.dns_replies.fetch_add(1, std::memory_order_relaxed);
    return;
  }

  // Routing inside the VPC: an ENI here, or a fabric mapping to another host.
  if (!from.vpc_->cidr.contains(ip.dst)) return c.drop(Drop::kOtherVpc);
  std::shared_ptr<Port> to;
  fabric::HostId remote = 0;
  {
    std::shared_lock lock(mu_);
    const uint64_t key = route_key(from.vpc_->index, ip.dst);
    if (auto it = routes_.find(key); it != routes_.end()) to = it->second;
    else if (auto r = remote_.find(key); r != remote_.end() && fabric_.load(std::memory_order_acquire) != nullptr)
      remote = r->second;
    else if (relay_)
      remote = kRelayHost;  // the fabric process knows where it lives, or drops it (no_route there)
  }
  if (!to && remote == 0) return c.drop(Drop::kNoRoute);
  if (ip.ttl <= 1) return c.drop(Drop::kTtlExpired);
  out.push_back(Candidate{index, std::move(to), remote, from.vpc_->vni, packet_of(*parsed)});
}

}  // namespace azote::card_net
