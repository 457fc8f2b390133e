#include "net/dhcp.hpp"

#include <algorithm>
#include <array>
#include <cstring>

#include "net/frame.hpp"
#include "net/wire.hpp"

namespace azote::net {
namespace {

constexpr std::array<uint8_t, 4> kMagicCookie = {99, 130, 83, 99};
constexpr size_t kUdpIpOverhead = kIpv4HeaderLen + 8;

bool is_ldh_label(std::string_view l) {
  if (l.empty() || l.size() > 63 || l.front() == '-' || l.back() == '-') return false;
  return std::all_of(l.begin(), l.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
  });
}

bool is_ldh_name(std::string_view name) {
  if (name.empty() || name.size() > 253) return false;
  size_t start = 0;
  while (true) {
    const size_t dot = name.find('.', start);
    if (!is_ldh_label(name.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start))) {
      return false;
    }
    if (dot == std::string_view::npos) return true;
    start = dot + 1;
  }
}

bool client_type(DhcpMessageType t) {
  switch (t) {
    case DhcpMessageType::kDiscover:
    case DhcpMessageType::kRequest:
    case DhcpMessageType::kDecline:
    case DhcpMessageType::kRelease:
    case DhcpMessageType::kInform:
      return true;
    default:
      return false;
  }
}

// Bytes the configuration's options take in an OFFER/ACK (53, 54, 51, 58, 59, 1, 3, 6, 12,
// 15, 26, END), without the client identifier.
size_t config_options_len(const DhcpConfig& c) {
  size_t n = 3 + 6 + 6 + 6 + 6 + 6 + 6 + (2 + 4 * c.dns.size()) + 4 + 1;
  if (!c.hostname.empty()) n += 2 + c.hostname.size();
  if (!c.domain_name.empty()) n += 2 + c.domain_name.size();
  return n;
}

class OptionWriter {
 public:
  OptionWriter(std::span<uint8_t> out, size_t at) : out_(out), at_(at) {}
  void put(uint8_t code, std::span<const uint8_t> data) {
    if (data.size() > 255 || out_.size() < at_ || out_.size() - at_ < 2 + data.size()) {
      overflow_ = true;
      return;
    }
    out_[at_] = code;
    out_[at_ + 1] = static_cast<uint8_t>(data.size());
    if (!data.empty()) std::memcpy(out_.data() + at_ + 2, data.data(), data.size());
    at_ += 2 + data.size();
  }
  void put8(uint8_t code, uint8_t v) { put(code, std::span(&v, 1)); }
  void put16(uint8_t code, uint16_t v) {
    const std::array<uint8_t, 2> b = {static_cast<uint8_t>(v >> 8), static_cast<uint8_t>(v)};
    put(code, b);
  }
  void put32(uint8_t code, uint32_t v) {
    std::array<uint8_t, 4> b{};
    wire::put32(b, 0, v);
    put(code, b);
  }
  void put_ip(uint8_t code, Ipv4Address a) { put32(code, a.value()); }
  void put_text(uint8_t code, std::string_view s) {
    put(code, std::span(reinterpret_cast<const uint8_t*>(s.data()), s.size()));
  }
  void end() {
    if (at_ >= out_.size()) {
      overflow_ = true;
      return;
    }
    out_[at_++] = dhcp_option::kEnd;
  }
  size_t at() const { return at_; }
  bool overflow() const { return overflow_; }

 private:
  std::span<uint8_t> out_;
  size_t at_;
  bool overflow_ = false;
};

}  // namespace

const char* to_string(DhcpMessageType t) {
  switch (t) {
    case DhcpMessageType::kDiscover: return "DISCOVER";
    case DhcpMessageType::kOffer: return "OFFER";
    case DhcpMessageType::kRequest: return "REQUEST";
    case DhcpMessageType::kDecline: return "DECLINE";
    case DhcpMessageType::kAck: return "ACK";
    case DhcpMessageType::kNak: return "NAK";
    case DhcpMessageType::kRelease: return "RELEASE";
    case DhcpMessageType::kInform: return "INFORM";
  }
  return "?";
}

const char* to_string(DhcpLeaseState s) {
  switch (s) {
    case DhcpLeaseState::kIdle: return "idle";
    case DhcpLeaseState::kOffered: return "offered";
    case DhcpLeaseState::kBound: return "bound";
    case DhcpLeaseState::kReleased: return "released";
    case DhcpLeaseState::kDeclined: return "declined";
  }
  return "?";
}

std::optional<std::span<const uint8_t>> DhcpMessage::find(uint8_t code) const {
  size_t i = 0;
  while (i < options.size()) {
    const uint8_t c = options[i];
    if (c == dhcp_option::kPad) {
      ++i;
      continue;
    }
    // The area was validated: every option's length byte and data are inside it.
    const size_t len = options[i + 1];
    if (c == code) return options.subspan(i + 2, len);
    i += 2 + len;
  }
  return std::nullopt;
}

Result<DhcpMessage, NetError> parse_dhcp(std::span<const uint8_t> p, BootpOp expect) {
  if (p.size() < kDhcpOptionsOffset) return make_error(NetErrc::kTruncated, "BOOTP header");
  DhcpMessage m;
  const uint8_t op = wire::u8(p, 0);
  if (op != static_cast<uint8_t>(expect)) return make_error(NetErrc::kUnsupported, "BOOTP op");
  m.op = expect;
  if (wire::u8(p, 1) != 1 || wire::u8(p, 2) != 6) return make_error(NetErrc::kUnsupported, "BOOTP hardware type");
  if (wire::u8(p, 3) != 0) return make_error(NetErrc::kUnsupported, "BOOTP hops != 0 (relayed)");
  m.xid = wire::be32(p, 4);
  m.secs = wire::be16(p, 8);
  m.flags = wire::be16(p, 10);
  m.ciaddr = Ipv4Address::from_bytes(p.subspan(12, 4));
  m.yiaddr = Ipv4Address::from_bytes(p.subspan(16, 4));
  m.siaddr = Ipv4Address::from_bytes(p.subspan(20, 4));
  m.giaddr = Ipv4Address::from_bytes(p.subspan(24, 4));
  if (!m.giaddr.is_any()) return make_error(NetErrc::kUnsupported, "BOOTP giaddr (relayed)");
  m.chaddr = MacAddress::from_bytes(p.subspan(28, 6));
  if (!std::equal(kMagicCookie.begin(), kMagicCookie.end(), p.begin() + kBootpFixedLen)) {
    return make_error(NetErrc::kMalformed, "DHCP magic cookie");
  }

  // Walk the options once: bounds, END, duplicates and lengths of the ones we interpret.
  std::array<bool, 256> seen{};
  std::optional<uint8_t> type;
  size_t i = kDhcpOptionsOffset;
  bool ended = false;
  while (i < p.size()) {
    const uint8_t code = p[i];
    if (code == dhcp_option::kPad) {
      ++i;
      continue;
    }
    if (code == dhcp_option::kEnd) {
      ended = true;
      break;
    }
    if (p.size() - i < 2) return make_error(NetErrc::kBadOption, "DHCP option header overruns");
    const size_t len = p[i + 1];
    if (p.size() - i - 2 < len) return make_error(NetErrc::kBadOption, "DHCP option overruns");
    const auto data = p.subspan(i + 2, len);
    i += 2 + len;
    auto once = [&]() -> Result<void, NetError> {
      if (seen[code]) return make_error(NetErrc::kBadOption, "DHCP option repeated: " + std::to_string(code));
      seen[code] = true;
      return {};
    };
    auto want = [&](bool ok) -> Result<void, NetError> {
      if (!ok) return make_error(NetErrc::kBadOption, "DHCP option length: " + std::to_string(code));
      return {};
    };
    switch (code) {
      case dhcp_option::kOverload:
        return make_error(NetErrc::kUnsupported, "DHCP option overload");
      case dhcp_option::kMessageType:
        AZOTE_TRYV(once());
        AZOTE_TRYV(want(len == 1));
        type = data[0];
        break;
      case dhcp_option::kRequestedIp:
        AZOTE_TRYV(once());
        AZOTE_TRYV(want(len == 4));
        m.requested_ip = Ipv4Address::from_bytes(data);
        break;
      case dhcp_option::kServerId:
        AZOTE_TRYV(once());
        AZOTE_TRYV(want(len == 4));
        m.server_id = Ipv4Address::from_bytes(data);
        break;
      case dhcp_option::kMaxMessageSize:
        AZOTE_TRYV(once());
        AZOTE_TRYV(want(len == 2 && wire::be16(data, 0) >= 576));
        m.max_message_size = wire::be16(data, 0);
        break;
      case dhcp_option::kClientId:
        AZOTE_TRYV(once());
        AZOTE_TRYV(want(len >= 2));
        m.client_id = data;
        break;
      case dhcp_option::kParameterList:
        AZOTE_TRYV(once());
        AZOTE_TRYV(want(len >= 1));
        m.parameter_list = data;
        break;
      case dhcp_option::kHostname:
        AZOTE_TRYV(once());
        AZOTE_TRYV(want(len >= 1));
        m.hostname_bytes = data;
        break;
      default:
        break;  // carried, not interpreted
    }
  }
  if (!ended) return make_error(NetErrc::kBadOption, "DHCP options without END");
  m.options = p.subspan(kDhcpOptionsOffset, i - kDhcpOptionsOffset);
  if (!type) return make_error(NetErrc::kMalformed, "DHCP message type missing (plain BOOTP)");
  if (*type < 1 || *type > 8) return make_error(NetErrc::kMalformed, "DHCP message type");
  m.type = static_cast<DhcpMessageType>(*type);
  if (client_type(m.type) != (expect == BootpOp::kRequest)) {
    return make_error(NetErrc::kMalformed, std::string("DHCP message type for this direction: ") + to_string(m.type));
  }
  return m;
}

Result<void, NetError> validate(const DhcpConfig& c) {
  auto bad = [](const char* what) { return make_error(NetErrc::kBadConfig, what); };
  const auto usable = [&](Ipv4Address a) {
    return c.subnet.contains(a) && (c.subnet.length() >= 31 || (a != c.subnet.network() && a != c.subnet.last()));
  };
  if (c.subnet.length() == 0) return bad("DHCP: subnet /0");
  if (!usable(c.address)) return bad("DHCP: address outside the subnet or not a host address");
  if (!usable(c.router)) return bad("DHCP: router outside the subnet or not a host address");
  if (c.router == c.address) return bad("DHCP: router is the ENI's address");
  if (c.mac.is_multicast() || c.mac.is_zero()) return bad("DHCP: ENI MAC not unicast");
  if (c.router_mac.is_multicast() || c.router_mac.is_zero()) return bad("DHCP: router MAC not unicast");
  if (c.dns.empty() || c.dns.size() > 4) return bad("DHCP: 1 to 4 DNS servers");
  if (!c.hostname.empty() && !is_ldh_label(c.hostname)) return bad("DHCP: hostname is not one LDH label");
  if (!c.domain_name.empty() && !is_ldh_name(c.domain_name)) return bad("DHCP: domain name is not LDH labels");
  if (c.mtu < 68) return bad("DHCP: MTU < 68");
  if (c.lease_seconds < 60) return bad("DHCP: lease < 60 s");
  if (kDhcpOptionsOffset + config_options_len(c) > kDhcpDefaultMaxLen) return bad("DHCP: options exceed 548 bytes");
  return {};
}

Result<size_t, NetError> build_dhcp_reply(std::span<uint8_t> out, const DhcpMessage& req, DhcpMessageType type,
                                          Ipv4Address yiaddr, const DhcpConfig& c, std::string_view nak_message) {
  using namespace dhcp_option;
  if (type != DhcpMessageType::kOffer && type != DhcpMessageType::kAck && type != DhcpMessageType::kNak) {
    return make_error(NetErrc::kMalformed, "DHCP reply type");
  }
  if (out.size() < kBootpMinLen) return make_error(NetErrc::kNoSpace, "DHCP reply");
  const bool nak = type == DhcpMessageType::kNak;
  const bool inform = type == DhcpMessageType::kAck && req.type == DhcpMessageType::kInform;
  const size_t limit = std::min(out.size(), req.max_message_size ? size_t{*req.max_message_size} - kUdpIpOverhead
                                                                  : kDhcpDefaultMaxLen);

  std::fill(out.begin(), out.begin() + kDhcpOptionsOffset, uint8_t{0});
  wire::put8(out, 0, static_cast<uint8_t>(BootpOp::kReply));
  wire::put8(out, 1, 1);
  wire::put8(out, 2, 6);
  wire::put32(out, 4, req.xid);
  wire::put16(out, 10, static_cast<uint16_t>(req.flags & 0x8000));
  if (inform) req.ciaddr.store(out.subspan(12, 4));
  if (!nak && !inform) yiaddr.store(out.subspan(16, 4));
  req.chaddr.store(out.subspan(28, 6));
  std::copy(kMagicCookie.begin(), kMagicCookie.end(), out.begin() + kBootpFixedLen);

  auto write = [&](std::span<uint8_t> area, bool echo_client_id) {
    OptionWriter w(area, kDhcpOptionsOffset);
    w.put8(kMessageType, static_cast<uint8_t>(type));
    w.put_ip(kServerId, c.router);
    if (nak) {
      if (!nak_message.empty()) w.put_text(kMessage, nak_message.substr(0, 255));
    } else {
      if (!inform) {
        w.put32(kLeaseTime, c.lease_seconds);
        if (c.lease_seconds != 0xffffffffu) {
          w.put32(kRenewalTime, c.lease_seconds / 2);
          w.put32(kRebindingTime, static_cast<uint32_t>(uint64_t{c.lease_seconds} * 7 / 8));
        }
      }
      w.put_ip(kSubnetMask, c.subnet.netmask());
      w.put_ip(kRouter, c.router);
      std::array<uint8_t, 16> dns{};
      const size_t ndns = std::min<size_t>(c.dns.size(), 4);
      for (size_t k = 0; k < ndns; ++k) c.dns[k].store(std::span(dns).subspan(4 * k, 4));
      w.put(kDns, std::span(dns.data(), 4 * ndns));
      if (!c.hostname.empty()) w.put_text(kHostname, c.hostname);
      if (!c.domain_name.empty()) w.put_text(kDomainName, c.domain_name);
      w.put16(kMtu, c.mtu);
    }
    if (echo_client_id && !req.client_id.empty()) w.put(kClientId, req.client_id);
    w.end();
    return w;
  };
  OptionWriter w = write(out.subspan(0, limit), true);
  if (w.overflow()) w = write(out.subspan(0, limit), false);  // the client id made it too long
  if (w.overflow()) return make_error(NetErrc::kNoSpace, "DHCP reply options");
  size_t len = w.at();
  if (len < kBootpMinLen) {
    std::fill(out.begin() + static_cast<std::ptrdiff_t>(len), out.begin() + kBootpMinLen, uint8_t{0});
    len = kBootpMinLen;
  }
  return len;
}

Result<DhcpServer, NetError> DhcpServer::create(DhcpConfig cfg) {
  AZOTE_TRYV(validate(cfg));
  return DhcpServer(std::move(cfg));
}

DhcpDecision DhcpServer::reply(const DhcpMessage& m, DhcpMessageType type, Ipv4Address yiaddr,
                               const char* why) const {
  DhcpDecision d;
  d.reply = type;
  d.reason = why;
  d.yiaddr = yiaddr;
  // RFC 2131 §4.1 (giaddr is always 0 here): NAK broadcast; a client with an address
  // (renewing, INFORM) gets unicast to ciaddr; the broadcast bit asks for broadcast;
  // otherwise unicast to yiaddr at chaddr (the card delivers straight to the guest).
  if (type == DhcpMessageType::kNak || (m.ciaddr.is_any() && m.broadcast())) {
    d.dst_ip = Ipv4Address::broadcast();
    d.dst_mac = MacAddress::broadcast();
  } else if (!m.ciaddr.is_any()) {
    d.dst_ip = m.ciaddr;
    d.dst_mac = m.chaddr;
  } else {
    d.dst_ip = yiaddr;
    d.dst_mac = m.chaddr;
  }
  return d;
}

DhcpDecision DhcpServer::handle(const DhcpMessage& m) {
  auto silent = [](const char* why) {
    DhcpDecision d;
    d.reason = why;
    return d;
  };
  if (m.op != BootpOp::kRequest) return silent("not a client message");
  if (m.chaddr != cfg_.mac) return silent("chaddr is not the ENI's MAC");
  const bool for_us = !m.server_id || *m.server_id == cfg_.router;
  switch (m.type) {
    case DhcpMessageType::kDiscover:
      state_ = DhcpLeaseState::kOffered;
      return reply(m, DhcpMessageType::kOffer, cfg_.address, "DISCOVER: offering the ENI's address");
    case DhcpMessageType::kRequest: {
      std::optional<Ipv4Address> wanted;
      const char* ack = "";
      if (m.server_id) {
        if (!for_us) {
          state_ = DhcpLeaseState::kIdle;
          return silent("REQUEST selects another server");
        }
        wanted = m.requested_ip;
        ack = "REQUEST (selecting): ACK";
      } else if (m.requested_ip) {
        wanted = m.requested_ip;
        ack = "REQUEST (init-reboot): ACK";
      } else if (!m.ciaddr.is_any()) {
        wanted = m.ciaddr;
        ack = "REQUEST (renewing): ACK";
      } else {
        return silent("REQUEST names no address");
      }
      if (wanted && *wanted == cfg_.address) {
        state_ = DhcpLeaseState::kBound;
        return reply(m, DhcpMessageType::kAck, cfg_.address, ack);
      }
      state_ = DhcpLeaseState::kIdle;
      return reply(m, DhcpMessageType::kNak, Ipv4Address::any(), "REQUEST for another address: NAK");
    }
    case DhcpMessageType::kDecline:
      if (!for_us) return silent("DECLINE to another server");
      state_ = DhcpLeaseState::kDeclined;
      return silent("DECLINE: the guest saw its address in use");
    case DhcpMessageType::kRelease:
      if (!for_us) return silent("RELEASE to another server");
      state_ = DhcpLeaseState::kReleased;
      return silent("RELEASE: address stays reserved for the ENI");
    case DhcpMessageType::kInform:
      if (m.ciaddr != cfg_.address) return silent("INFORM from an address that is not the ENI's");
      return reply(m, DhcpMessageType::kAck, Ipv4Address::any(), "INFORM: ACK without lease");
    default:
      return silent("not a client message type");
  }
}

Result<size_t, NetError> DhcpServer::build_reply(std::span<uint8_t> out, const DhcpMessage& request,
                                                 const DhcpDecision& d) const {
  if (!d.reply) return make_error(NetErrc::kMalformed, "DHCP decision without a reply");
  return build_dhcp_reply(out, request, *d.reply, d.yiaddr, cfg_,
                          *d.reply == DhcpMessageType::kNak ? "requested address is not this interface's" : "");
}

Result<size_t, NetError> DhcpServer::build_reply_frame(std::span<uint8_t> out, const DhcpMessage& request,
                                                       const DhcpDecision& d) const {
  constexpr size_t kHeaders = kEthernetHeaderLen + kIpv4HeaderLen + 8;
  if (out.size() < kHeaders) return make_error(NetErrc::kNoSpace, "DHCP reply frame");
  AZOTE_TRY(len, build_reply(out.subspan(kHeaders), request, d));
  Ipv4Fields ip;
  ip.src = cfg_.router;
  ip.dst = d.dst_ip;
  ip.protocol = kIpProtoUdp;
  return build_udp_frame(out, EthernetFields{d.dst_mac, cfg_.router_mac, kEtherTypeIpv4, std::nullopt}, ip,
                         kDhcpServerPort, kDhcpClientPort, out.subspan(kHeaders, len));
}

}  // namespace azote::net
