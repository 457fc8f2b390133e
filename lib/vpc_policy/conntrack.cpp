#include "vpc_policy/conntrack.hpp"

#include <cstring>

namespace azote::vpc {
namespace {

constexpr uint8_t kOriginEgress = 0x01;  // the flow's first packet left the instance
constexpr uint8_t kSeenReply = 0x02;
constexpr uint8_t kFinOriginal = 0x04;
constexpr uint8_t kFinReply = 0x08;

VpcResult<void> in_range(Nanos v, int64_t lo_s, int64_t hi_s, const char* name) {
  if (v < seconds(lo_s) || v > seconds(hi_s)) {
    return make_error(VpcErrc::kInvalid, std::string(name) + " must be " +
                                             std::to_string(lo_s) + ".." +
                                             std::to_string(hi_s) + " s");
  }
  return {};
}

}  // namespace

VpcResult<void> validate(const ConntrackConfig& c) {
  const ConntrackTimeouts& t = c.timeouts;
  AZOTE_TRYV(in_range(t.tcp_established, 60, 432000, "tcp_established timeout"));
  AZOTE_TRYV(in_range(t.udp_stream, 60, 180, "udp_stream timeout"));
  AZOTE_TRYV(in_range(t.udp, 30, 60, "udp timeout"));
  for (Nanos v : {t.tcp_half_open, t.tcp_closing, t.tcp_closed, t.icmp, t.other}) {
    AZOTE_TRYV(in_range(v, 1, 432000, "conntrack timeout"));
  }
  if (c.max_entries < 1 || c.max_entries > (1u << 24)) {
    return make_error(VpcErrc::kInvalid, "conntrack max_entries must be 1..16777216");
  }
  return {};
}

ConnTrack::ConnTrack(const ConntrackConfig& config) : config_(config) {}

bool ConnTrack::make_key(Direction dir, const FlowKey& k, Key& out) {
  const bool egress = dir == Direction::kEgress;
  out = Key{};
  out.protocol = k.protocol;
  out.local_ip = egress ? k.src_ip : k.dst_ip;
  out.remote_ip = egress ? k.dst_ip : k.src_ip;
  if (k.protocol == kProtoTcp || k.protocol == kProtoUdp) {
    out.local_port = egress ? k.src_port : k.dst_port;
    out.remote_port = egress ? k.dst_port : k.src_port;
    return true;
  }
  if (k.protocol == kProtoIcmp) {
    const auto q = icmp_query(k.icmp_type);
    if (!q) return false;
    // Which end asked: a request leaving or a reply arriving means the instance did.
    const bool local_asked = q->is_request == egress;
    out.local_port = k.icmp_id;
    out.remote_port = static_cast<uint16_t>(q->request_type | (local_asked ? 0 : 0x100));
    return true;
  }
  return true;  // other protocols: addresses and protocol number only
}

uint64_t ConnTrack::hash(const Key& k) const {
  const uint64_t a = (uint64_t{k.local_ip} << 32) | k.remote_ip;
  const uint64_t b = (uint64_t{k.local_port} << 32) | (uint64_t{k.remote_port} << 8) | k.protocol;
  uint64_t h = detail::mix64(config_.hash_seed ^ a);
  h = detail::mix64(h ^ b ^ 0x9e3779b97f4a7c15ull);
  return h;
}

uint32_t ConnTrack::find(const Key& k, uint64_t h) const {
  return index_.find(h, [&](uint32_t id) { return entries_[id].key == k; });
}

int ConnTrack::timeout_class(CtState s) {
  switch (s) {
    case CtState::kTcpSynSent:
    case CtState::kTcpSynReceived: return 0;
    case CtState::kTcpEstablished: return 1;
    case CtState::kTcpClosing: return 2;
    case CtState::kTcpClosed: return 3;
    case CtState::kUdp: return 4;
    case CtState::kUdpStream: return 5;
    case CtState::kIcmp: return 6;
    case CtState::kOther: return 7;
  }
  return 7;
}

Nanos ConnTrack::timeout(CtState s) const {
  const ConntrackTimeouts& t = config_.timeouts;
  switch (s) {
    case CtState::kTcpSynSent:
    case CtState::kTcpSynReceived: return t.tcp_half_open;
    case CtState::kTcpEstablished: return t.tcp_established;
    case CtState::kTcpClosing: return t.tcp_closing;
    case CtState::kTcpClosed: return t.tcp_closed;
    case CtState::kUdp: return t.udp;
    case CtState::kUdpStream: return t.udp_stream;
    case CtState::kIcmp: return t.icmp;
    case CtState::kOther: return t.other;
  }
  return t.other;
}

void ConnTrack::unlink(uint32_t id, int cls) {
  Entry& e = entries_[id];
  List& l = lists_[cls];
  if (e.prev != kNil) entries_[e.prev].next = e.next; else l.head = e.next;
  if (e.next != kNil) entries_[e.next].prev = e.prev; else l.tail = e.prev;
  e.prev = e.next = kNil;
}

void ConnTrack::arm(uint32_t id, Nanos now) {
  Entry& e = entries_[id];
  e.armed = now.count();
  List& l = lists_[timeout_class(e.state)];
  e.prev = l.tail;
  e.next = kNil;
  if (l.tail != kNil) entries_[l.tail].next = id; else l.head = id;
  l.tail = id;
}

void ConnTrack::erase(uint32_t id) {
  Entry& e = entries_[id];
  unlink(id, timeout_class(e.state));
  index_.erase(hash(e.key), id);
  e.next = free_;
  free_ = id;
  --stats_.entries;
}

void ConnTrack::advance(Entry& e, bool original, const Packet& p) {
  if (original) {
    // UDP: the initiator speaking again after a reply makes a second exchange.
    if (e.state == CtState::kUdp && (e.flags & kSeenReply)) e.state = CtState::kUdpStream;
  } else {
    e.flags |= kSeenReply;
  }
  if (p.key.protocol != kProtoTcp) return;
  const uint8_t f = p.tcp_flags;
  if (f & tcp::kRst) {
    e.state = CtState::kTcpClosed;
    return;
  }
  if (e.state == CtState::kTcpSynSent && !original && (f & tcp::kSyn) && (f & tcp::kAck)) {
    e.state = CtState::kTcpSynReceived;
  } else if (e.state == CtState::kTcpSynReceived && original && (f & tcp::kAck) &&
             !(f & tcp::kSyn)) {
    e.state = CtState::kTcpEstablished;
  }
  if (f & tcp::kFin) {
    e.flags |= original ? kFinOriginal : kFinReply;
    const bool both = (e.flags & kFinOriginal) && (e.flags & kFinReply);
    e.state = both ? CtState::kTcpClosed : CtState::kTcpClosing;
  }
}

bool ConnTrack::track(Direction dir, const Packet& p, Nanos now) {
  expire(now, 32);
  Key k;
  if (!make_key(dir, p.key, k)) return false;
  const uint32_t id = find(k, hash(k));
  if (id == detail::HashIndex::kNone) return false;
  Entry& e = entries_[id];
  if (expired(e, now)) {
    erase(id);
    ++stats_.expired;
    return false;
  }
  if (e.state == CtState::kTcpClosed && (p.tcp_flags & (tcp::kSyn | tcp::kAck)) == tcp::kSyn) {
    erase(id);  // the ports are being reused for a new connection: judge it afresh
    return false;
  }
  const bool original = ((e.flags & kOriginEgress) != 0) == (dir == Direction::kEgress);
  const int before = timeout_class(e.state);
  advance(e, original, p);
  const int after = timeout_class(e.state);
  e.last = now.count();
  if (after != before || now.count() - e.armed >= kRequeue.count()) {
    unlink(id, before);
    arm(id, now);
  }
  return true;
}

ConnTrack::Insert ConnTrack::insert(Direction dir, const Packet& p, Nanos now) {
  Key k;
  if (!make_key(dir, p.key, k)) return Insert::kNotTrackable;
  CtState state = CtState::kOther;
  uint8_t flags = dir == Direction::kEgress ? kOriginEgress : 0;
  switch (p.key.protocol) {
    case kProtoTcp: {
      const uint8_t f = p.tcp_flags;
      if (f & tcp::kRst) return Insert::kNotTrackable;
      if (f & tcp::kFin) {
        state = CtState::kTcpClosing;
        flags |= kFinOriginal;
      } else if ((f & (tcp::kSyn | tcp::kAck)) == tcp::kSyn) {
        state = CtState::kTcpSynSent;
      } else {
        state = CtState::kTcpEstablished;  // picked up mid-stream
      }
      break;
    }
    case kProtoUdp: state = CtState::kUdp; break;
    case kProtoIcmp:
      // Only a request opens an exchange; a lone reply is judged by the rules.
      if (!icmp_query(p.key.icmp_type)->is_request) return Insert::kNotTrackable;
      state = CtState::kIcmp;
      break;
    default: break;
  }
  const uint64_t h = hash(k);
  if (find(k, h) != detail::HashIndex::kNone) return Insert::kInserted;  // caller skipped track()
  if (stats_.entries >= config_.max_entries) {
    expire(now);
    if (stats_.entries >= config_.max_entries) {
      ++stats_.refused;
      return Insert::kFull;
    }
  }
  uint32_t id;
  if (free_ != kNil) {
    id = free_;
    free_ = entries_[id].next;
  } else {
    id = static_cast<uint32_t>(entries_.size());
    entries_.emplace_back();
  }
  Entry& e = entries_[id];
  e = Entry{};
  e.key = k;
  e.last = now.count();
  e.state = state;
  e.flags = flags;
  index_.insert(h, id);
  arm(id, now);
  ++stats_.entries;
  ++stats_.inserted;
  return Insert::kInserted;
}

bool ConnTrack::related(Direction dir, const Packet& p, Nanos now) const {
  if (p.key.protocol != kProtoIcmp || !is_icmp_error(p.key.icmp_type) || !p.has_inner) {
    return false;
  }
  // The error goes back to whoever sent the quoted datagram.
  if (p.inner.src_ip != p.key.dst_ip) return false;
  Key k;
  if (!make_key(opposite(dir), p.inner, k)) return false;
  const uint32_t id = find(k, hash(k));
  return id != detail::HashIndex::kNone && !expired(entries_[id], now);
}

void ConnTrack::expire(Nanos now, size_t budget) {
  for (List& l : lists_) {
    while (budget > 0 && l.head != kNil) {
      const Entry& e = entries_[l.head];
      // Stamped since queued (< kRequeue before `now`): alive; whatever queues behind
      // it waits for it, less than kRequeue.
      if (!expired(e, now)) break;
      erase(l.head);
      ++stats_.expired;
      --budget;
    }
  }
}

void ConnTrack::clear() {
  entries_.clear();
  free_ = kNil;
  index_.clear();
  lists_ = {};
  stats_.entries = 0;
}

std::optional<CtState> ConnTrack::state(Direction dir, const FlowKey& key, Nanos now) const {
  Key k;
  if (!make_key(dir, key, k)) return std::nullopt;
  const uint32_t id = find(k, hash(k));
  if (id == detail::HashIndex::kNone || expired(entries_[id], now)) return std::nullopt;
  return entries_[id].state;
}

}  // namespace azote::vpc
