#include "net/dns.hpp"

#include <algorithm>
#include <cstring>

#include "net/wire.hpp"

namespace azote::net {
namespace {

constexpr size_t kMaxLabel = 63;
constexpr int kMaxPointers = 127;  // a name has at most 127 labels; more hops mean a loop
constexpr size_t kMaxPerName = 16;

uint8_t lower(uint8_t c) { return c >= 'A' && c <= 'Z' ? static_cast<uint8_t>(c - 'A' + 'a') : c; }
char lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

bool label_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

bool valid_label(std::string_view l) {
  return !l.empty() && l.size() <= kMaxLabel && std::all_of(l.begin(), l.end(), label_char);
}

// A decimal octet 0..255, no leading zeros, no sign.
std::optional<uint8_t> octet(std::string_view s) {
  if (s.empty() || s.size() > 3 || (s.size() > 1 && s[0] == '0')) return std::nullopt;
  unsigned v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<unsigned>(c - '0');
  }
  if (v > 255) return std::nullopt;
  return static_cast<uint8_t>(v);
}

}  // namespace

// ---- DnsName

DnsName::DnsName() : len_(1) {}

Result<DnsName, NetError> DnsName::from_text(std::string_view text) {
  if (text == ".") return DnsName();
  if (!text.empty() && text.back() == '.') text.remove_suffix(1);
  if (text.empty()) return make_error(NetErrc::kBadName, "empty DNS name");
  DnsName n;
  n.len_ = 0;
  size_t start = 0;
  while (true) {
    const size_t dot = text.find('.', start);
    const std::string_view l = text.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    if (!valid_label(l)) return make_error(NetErrc::kBadName, "DNS label");
    if (n.len_ + 1 + l.size() + 1 > kDnsMaxNameLen) return make_error(NetErrc::kBadName, "DNS name over 255 bytes");
    n.b_[n.len_++] = static_cast<uint8_t>(l.size());
    std::memcpy(n.b_.data() + n.len_, l.data(), l.size());
    n.len_ += l.size();
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  n.b_[n.len_++] = 0;
  return n;
}

Result<DnsName, NetError> DnsName::from_wire(std::span<const uint8_t> w) {
  if (w.empty() || w.size() > kDnsMaxNameLen) return make_error(NetErrc::kBadName, "DNS name length");
  size_t i = 0;
  while (true) {
    if (i >= w.size()) return make_error(NetErrc::kBadName, "DNS name without root label");
    const size_t l = w[i];
    if (l == 0) break;
    if (l > kMaxLabel) return make_error(NetErrc::kBadName, "DNS label over 63");
    i += 1 + l;
  }
  if (i + 1 != w.size()) return make_error(NetErrc::kBadName, "DNS name: bytes after the root label");
  DnsName n;
  std::memcpy(n.b_.data(), w.data(), w.size());
  n.len_ = w.size();
  return n;
}

std::string DnsName::to_text() const {
  if (len_ == 1) return ".";
  std::string s;
  for (size_t i = 0; b_[i] != 0; i += 1 + b_[i]) {
    if (i != 0) s += '.';
    for (size_t k = 1; k <= b_[i]; ++k) {
      const char c = static_cast<char>(b_[i + k]);
      if (label_char(c)) {
        s += c;
      } else {
        const unsigned v = b_[i + k];
        s += '\\';
        s += static_cast<char>('0' + v / 100);
        s += static_cast<char>('0' + v / 10 % 10);
        s += static_cast<char>('0' + v % 10);
      }
    }
  }
  return s;
}

size_t DnsName::label_count() const {
  size_t n = 0;
  for (size_t i = 0; b_[i] != 0; i += 1 + b_[i]) ++n;
  return n;
}

std::string_view DnsName::label(size_t index) const {
  size_t i = 0;
  for (size_t k = 0; k < index && b_[i] != 0; ++k) i += 1 + b_[i];
  return {reinterpret_cast<const char*>(b_.data() + i + 1), b_[i]};
}

bool DnsName::is_subdomain_of(const DnsName& suffix) const {
  if (suffix.len_ > len_) return false;
  // Find the label boundary where exactly suffix.len_ bytes remain.
  size_t i = 0;
  while (len_ - i > suffix.len_) i += 1 + b_[i];
  if (len_ - i != suffix.len_) return false;
  for (size_t k = 0; k < suffix.len_; ++k) {
    if (lower(b_[i + k]) != lower(suffix.b_[k])) return false;
  }
  return true;
}

Result<DnsName, NetError> DnsName::prepend(std::string_view l) const {
  if (!valid_label(l)) return make_error(NetErrc::kBadName, "DNS label");
  if (1 + l.size() + len_ > kDnsMaxNameLen) return make_error(NetErrc::kBadName, "DNS name over 255 bytes");
  DnsName n;
  n.b_[0] = static_cast<uint8_t>(l.size());
  std::memcpy(n.b_.data() + 1, l.data(), l.size());
  std::memcpy(n.b_.data() + 1 + l.size(), b_.data(), len_);
  n.len_ = 1 + l.size() + len_;
  return n;
}

bool operator==(const DnsName& a, const DnsName& b) {
  if (a.len_ != b.len_) return false;
  // Length bytes are <= 63, below 'A': lower-casing every byte compares labels only.
  for (size_t i = 0; i < a.len_; ++i) {
    if (lower(a.b_[i]) != lower(b.b_[i])) return false;
  }
  return true;
}

// ---- wire names

Result<DecodedName, NetError> decode_name(std::span<const uint8_t> msg, size_t offset) {
  std::array<uint8_t, kDnsMaxNameLen> out{};
  size_t n = 0;
  size_t pos = offset;
  size_t run_start = offset;  // first byte of the label run being read
  std::optional<size_t> next;
  int hops = 0;
  while (true) {
    if (pos >= msg.size()) return make_error(NetErrc::kTruncated, "DNS name");
    const uint8_t len = msg[pos];
    switch (len & 0xc0) {
      case 0xc0: {
        if (msg.size() - pos < 2) return make_error(NetErrc::kTruncated, "DNS compression pointer");
        const size_t target = size_t{len & 0x3fu} << 8 | msg[pos + 1];
        if (!next) next = pos + 2;
        if (target >= run_start) return make_error(NetErrc::kPointerLoop, "DNS pointer not backwards");
        if (++hops > kMaxPointers) return make_error(NetErrc::kPointerLoop, "DNS pointer chain");
        pos = run_start = target;
        continue;
      }
      case 0x40:
      case 0x80:
        return make_error(NetErrc::kBadName, "DNS label type");
      default:
        break;
    }
    if (len == 0) {
      out[n++] = 0;
      if (!next) next = pos + 1;
      break;
    }
    if (msg.size() - pos - 1 < len) return make_error(NetErrc::kTruncated, "DNS label");
    if (n + 1 + len + 1 > kDnsMaxNameLen) return make_error(NetErrc::kBadName, "DNS name over 255 bytes");
    out[n] = len;
    std::memcpy(out.data() + n + 1, msg.data() + pos + 1, len);
    n += 1 + size_t{len};
    pos += 1 + size_t{len};
  }
  AZOTE_TRY(name, DnsName::from_wire(std::span(out.data(), n)));
  return DecodedName{name, *next};
}

// ---- query

Result<DnsQuery, NetError> parse_dns_query(std::span<const uint8_t> msg) {
  if (msg.size() < kDnsHeaderLen) return make_error(NetErrc::kTruncated, "DNS header");
  DnsQuery q;
  q.id = wire::be16(msg, 0);
  const uint16_t flags = wire::be16(msg, 2);
  if (flags & 0x8000) return make_error(NetErrc::kUnsupported, "DNS response, not a query");
  if ((flags >> 11 & 0xf) != 0) return make_error(NetErrc::kUnsupported, "DNS opcode");
  if (flags & 0x0200) return make_error(NetErrc::kMalformed, "DNS query with TC");
  if (flags & 0x000f) return make_error(NetErrc::kMalformed, "DNS query with RCODE");
  q.recursion_desired = (flags & 0x0100) != 0;
  q.checking_disabled = (flags & 0x0010) != 0;
  const uint16_t qd = wire::be16(msg, 4), an = wire::be16(msg, 6), ns = wire::be16(msg, 8), ar = wire::be16(msg, 10);
  if (qd != 1) return make_error(NetErrc::kMalformed, "DNS QDCOUNT != 1");
  if (an != 0 || ns != 0) return make_error(NetErrc::kMalformed, "DNS query with answer/authority records");
  if (ar > 1) return make_error(NetErrc::kUnsupported, "DNS additional records beyond OPT");

  AZOTE_TRY(qname, decode_name(msg, kDnsHeaderLen));
  q.qname = qname.name;
  size_t pos = qname.next;
  if (msg.size() - pos < 4) return make_error(NetErrc::kTruncated, "DNS question");
  q.qtype = wire::be16(msg, pos);
  q.qclass = wire::be16(msg, pos + 2);
  pos += 4;

  if (ar == 1) {
    AZOTE_TRY(owner, decode_name(msg, pos));
    pos = owner.next;
    if (msg.size() - pos < 10) return make_error(NetErrc::kTruncated, "DNS additional record");
    if (wire::be16(msg, pos) != kDnsTypeOpt) return make_error(NetErrc::kUnsupported, "DNS additional record not OPT");
    if (owner.name.wire().size() != 1) return make_error(NetErrc::kMalformed, "DNS OPT not owned by the root");
    DnsEdns e;
    const uint16_t size = wire::be16(msg, pos + 2);
    const uint32_t ttl = wire::be32(msg, pos + 4);
    const size_t rdlen = wire::be16(msg, pos + 8);
    pos += 10;
    if (msg.size() - pos < rdlen) return make_error(NetErrc::kTruncated, "DNS OPT data");
    // Options (cookie, padding, ...) are framed-checked and otherwise ignored.
    size_t o = 0;
    while (o < rdlen) {
      if (rdlen - o < 4) return make_error(NetErrc::kMalformed, "DNS OPT option header");
      const size_t olen = wire::be16(msg, pos + o + 2);
      if (rdlen - o - 4 < olen) return make_error(NetErrc::kMalformed, "DNS OPT option overruns");
      o += 4 + olen;
    }
    pos += rdlen;
    e.udp_size = std::max<uint16_t>(size, kDnsMaxUdpLen);
    e.version = static_cast<uint8_t>(ttl >> 16);
    e.dnssec_ok = (ttl & 0x8000) != 0;
    q.edns = e;
  }
  if (pos != msg.size()) return make_error(NetErrc::kMalformed, "DNS query: trailing bytes");
  return q;
}

// ---- response

Result<size_t, NetError> build_dns_response(std::span<uint8_t> out, const DnsQuery& q, const DnsAnswer& a) {
  const auto qname = q.qname.wire();
  const size_t question_end = kDnsHeaderLen + qname.size() + 4;
  const size_t opt_len = q.edns ? 11 : 0;
  if (out.size() < question_end + opt_len) return make_error(NetErrc::kNoSpace, "DNS response");
  size_t limit = kDnsMaxUdpLen;
  if (q.edns) limit = std::clamp<size_t>(q.edns->udp_size, kDnsMaxUdpLen, kDnsEdnsUdpLen);
  limit = std::min(limit, out.size());

  const size_t count = a.a.size() + (a.ptr ? 1 : 0);
  const size_t records_len = a.a.size() * 16 + (a.ptr ? 12 + a.ptr->wire().size() : 0);
  const bool truncated = question_end + records_len + opt_len > limit;
  const uint16_t rcode = static_cast<uint16_t>(a.rcode);

  uint16_t flags = 0x8000;
  if (a.authoritative) flags |= 0x0400;
  if (truncated) flags |= 0x0200;
  if (q.recursion_desired) flags |= 0x0100;
  if (q.checking_disabled) flags |= 0x0010;
  flags = static_cast<uint16_t>(flags | (rcode & 0xf));
  wire::put16(out, 0, q.id);
  wire::put16(out, 2, flags);
  wire::put16(out, 4, 1);
  wire::put16(out, 6, static_cast<uint16_t>(truncated ? 0 : count));
  wire::put16(out, 8, 0);
  wire::put16(out, 10, q.edns ? 1 : 0);
  std::memcpy(out.data() + kDnsHeaderLen, qname.data(), qname.size());
  size_t pos = kDnsHeaderLen + qname.size();
  wire::put16(out, pos, q.qtype);
  wire::put16(out, pos + 2, q.qclass);
  pos += 4;

  auto record = [&](uint16_t type, size_t rdlen) {
    wire::put16(out, pos, static_cast<uint16_t>(0xc000 | kDnsHeaderLen));  // owner: the question's name
    wire::put16(out, pos + 2, type);
    wire::put16(out, pos + 4, kDnsClassIn);
    wire::put32(out, pos + 6, a.ttl);
    wire::put16(out, pos + 10, static_cast<uint16_t>(rdlen));
    pos += 12;
  };
  if (!truncated) {
    for (const Ipv4Address& addr : a.a) {
      record(kDnsTypeA, 4);
      addr.store(out.subspan(pos, 4));
      pos += 4;
    }
    if (a.ptr) {
      const auto w = a.ptr->wire();
      record(kDnsTypePtr, w.size());
      std::memcpy(out.data() + pos, w.data(), w.size());
      pos += w.size();
    }
  }
  if (q.edns) {
    wire::put8(out, pos, 0);  // root owner
    wire::put16(out, pos + 1, kDnsTypeOpt);
    wire::put16(out, pos + 3, kDnsEdnsUdpLen);
    wire::put32(out, pos + 5, uint32_t{static_cast<uint8_t>(rcode >> 4)} << 24);  // ext. RCODE, version 0, DO 0
    wire::put16(out, pos + 9, 0);
    pos += 11;
  }
  return pos;
}

// ---- zone

Result<DnsZone, NetError> DnsZone::create(Config cfg) {
  auto bad = [](std::string what) { return make_error(NetErrc::kBadConfig, std::move(what)); };
  if (cfg.domain.empty()) {
    if (!valid_label(cfg.region)) return bad("DNS zone: region must be one DNS label");
    cfg.domain = cfg.region + ".compute.internal";
  }
  auto domain = DnsName::from_text(cfg.domain);
  if (!domain.ok()) return bad("DNS zone: domain: " + domain.error().context);
  // Room for the longest generated label, "ip-255-255-255-255".
  if (domain->wire().size() + 19 > kDnsMaxNameLen) return bad("DNS zone: domain too long");
  if (cfg.vpc.length() < 8) return bad("DNS zone: VPC prefix shorter than /8");
  if (cfg.ttl > 0x7fffffffu) return bad("DNS zone: TTL over 2^31 - 1");
  DnsZone z(std::move(cfg));
  z.domain_ = *domain;
  z.reverse_root_ = std::move(DnsName::from_text("in-addr.arpa")).value();
  for (const DnsRecord& r : z.cfg_.extra) {
    auto name = DnsName::from_text(r.name);
    if (!name.ok()) return bad("DNS zone: extra name \"" + r.name + "\": " + name.error().context);
    const size_t same = static_cast<size_t>(
        std::count_if(z.extra_.begin(), z.extra_.end(), [&](const auto& e) { return e.first == *name; }));
    if (same >= kMaxPerName) return bad("DNS zone: more than 16 addresses for " + r.name);
    z.extra_.emplace_back(*name, r.address);
  }
  return z;
}

DnsName DnsZone::name_for(Ipv4Address a) const {
  const auto b = a.bytes();
  const std::string label = "ip-" + std::to_string(b[0]) + "-" + std::to_string(b[1]) + "-" + std::to_string(b[2]) +
                            "-" + std::to_string(b[3]);
  return std::move(domain_.prepend(label)).value();  // create() left room for it
}

std::optional<Ipv4Address> DnsZone::address_for(const DnsName& name) const {
  if (!name.is_subdomain_of(domain_) || name.label_count() != domain_.label_count() + 1) return std::nullopt;
  const std::string_view l = name.label(0);
  if (l.size() < 3 || lower(l[0]) != 'i' || lower(l[1]) != 'p' || l[2] != '-') return std::nullopt;
  uint32_t v = 0;
  size_t start = 3;
  for (int i = 0; i < 4; ++i) {
    const size_t dash = i < 3 ? l.find('-', start) : l.size();
    if (dash == std::string_view::npos) return std::nullopt;
    const auto o = octet(l.substr(start, dash - start));
    if (!o) return std::nullopt;
    v = v << 8 | *o;
    start = dash + 1;
  }
  const Ipv4Address a = Ipv4Address::from_u32(v);
  if (!cfg_.vpc.contains(a)) return std::nullopt;
  return a;
}

DnsAnswer DnsZone::resolve(const DnsQuery& q) const {
  DnsAnswer r;
  r.ttl = cfg_.ttl;
  const auto refuse = [&r] {
    r.rcode = DnsRcode::kRefused;
    r.authoritative = false;
    return r;
  };
  if (q.qclass != kDnsClassIn || q.qtype == kDnsTypeAxfr || q.qtype == kDnsTypeIxfr) return refuse();
  if (q.edns && q.edns->version > 0) {
    r.rcode = DnsRcode::kBadVers;
    r.authoritative = false;
    return r;
  }
  const bool want_a = q.qtype == kDnsTypeA || q.qtype == kDnsTypeAny;

  bool found = false;
  for (const auto& [name, addr] : extra_) {
    if (name == q.qname) {
      found = true;
      if (want_a) r.a.push_back(addr);
    }
  }
  if (found) return r;

  if (q.qname.is_subdomain_of(domain_)) {
    if (q.qname == domain_) return r;  // the apex: no data
    if (const auto a = address_for(q.qname)) {
      if (want_a) r.a.push_back(*a);
      return r;
    }
    // An empty non-terminal above an extra name has no data but exists.
    for (const auto& e : extra_) {
      if (e.first.is_subdomain_of(q.qname)) return r;
    }
    r.rcode = DnsRcode::kNxDomain;
    return r;
  }
  if (q.qname.is_subdomain_of(reverse_root_)) return resolve_reverse(q);
  return refuse();
}

DnsAnswer DnsZone::resolve_reverse(const DnsQuery& q) const {
  DnsAnswer r;
  r.ttl = cfg_.ttl;
  // d.c.b.a.in-addr.arpa: octets from the right, up to 4; `extra` labels left over.
  const size_t n = q.qname.label_count() - reverse_root_.label_count();
  size_t k = 0;
  uint32_t v = 0;
  while (k < n && k < 4) {
    const auto o = octet(q.qname.label(n - 1 - k));
    if (!o) break;
    v = v << 8 | *o;
    ++k;
  }
  const size_t extra = n - k;
  const Ipv4Prefix p = k == 0 ? Ipv4Prefix() : Ipv4Prefix::of(Ipv4Address::from_u32(v << (32 - 8 * k)), static_cast<uint8_t>(8 * k));
  // Our reverse zone starts at the longest whole-octet prefix holding the VPC.
  const size_t apex = cfg_.vpc.length() / 8;
  if (k < apex || !p.overlaps(cfg_.vpc)) {
    r.rcode = DnsRcode::kRefused;
    r.authoritative = false;
    return r;
  }
  if (extra > 0) {
    r.rcode = DnsRcode::kNxDomain;
    return r;
  }
  if (k == 4 && (q.qtype == kDnsTypePtr || q.qtype == kDnsTypeAny)) r.ptr = name_for(p.network());
  return r;
}

Result<size_t, NetError> answer(const DnsQuery& q, const DnsZone& zone, std::span<uint8_t> out) {
  return build_dns_response(out, q, zone.resolve(q));
}

}  // namespace azote::net
