// DNS: a golden query as dig sends it, truncation at every offset, every refusal, the zone's
// answers and refusals, compression-loop protection, and — with libldns installed — ldns
// reading every kind of answer we build and building queries we read.
#include "net/dns.hpp"

#include <gtest/gtest.h>

#include <array>
#include <chrono>
#include <string>
#include <vector>

#include "net/test_util.hpp"
#include "net/wire.hpp"

#ifdef AZOTE_NET_HAVE_LDNS
#include <ldns/ldns.h>
#endif

namespace azote::net {
namespace {

using testing::cat;
using testing::hex;
using testing::prefix;

// dig @10.0.0.2 ip-10-0-1-5.eu-west-1.compute.internal (BIND 9.18 defaults): RD and AD set,
// EDNS(0) with a 1232-byte payload and an 8-byte client cookie.
const std::vector<uint8_t> kDigQuery = hex(
    "b3a1 0120 0001 0000 0000 0001"                 // id, RD+AD, 1 question, 1 additional
    "0b 69702d31302d302d312d35"                     // ip-10-0-1-5
    "09 65752d776573742d31"                         // eu-west-1
    "07 636f6d70757465 08 696e7465726e616c 00"      // compute internal
    "0001 0001"                                     // A IN
    "00 0029 04d0 00 00 0000 000c"                  // OPT: root, 1232, ext-rcode 0, v0, flags 0, rdlen 12
    "000a 0008 0123456789abcdef");                  // COOKIE

// A query for `name` (presentation form) with `qtype`, optionally EDNS with `version`.
std::vector<uint8_t> query(std::string_view name, uint16_t qtype, bool edns = true, uint16_t qclass = kDnsClassIn,
                           uint8_t version = 0) {
  std::vector<uint8_t> q = hex("4242 0100 0001 0000 0000");
  q.push_back(0);
  q.push_back(edns ? 1 : 0);
  size_t start = name == "." ? 1 : 0;
  while (start < name.size()) {
    size_t dot = name.find('.', start);
    if (dot == std::string_view::npos) dot = name.size();
    q.push_back(static_cast<uint8_t>(dot - start));
    q.insert(q.end(), name.begin() + static_cast<long>(start), name.begin() + static_cast<long>(dot));
    start = dot + 1;
  }
  q.push_back(0);
  q.push_back(static_cast<uint8_t>(qtype >> 8));
  q.push_back(static_cast<uint8_t>(qtype));
  q.push_back(static_cast<uint8_t>(qclass >> 8));
  q.push_back(static_cast<uint8_t>(qclass));
  if (edns) {
    const auto opt = hex("00 0029 1000 00");
    q.insert(q.end(), opt.begin(), opt.end());
    q.push_back(version);
    q.insert(q.end(), {0x80, 0x00, 0x00, 0x00});  // DO set, no options
  }
  return q;
}

// What a stub resolver would read from a response, decoded with decode_name.
struct Response {
  uint16_t id = 0, flags = 0, qd = 0, an = 0, ns = 0, ar = 0;
  int rcode = 0;  // with the EDNS extension
  std::string qname;
  uint16_t qtype = 0;
  std::vector<Ipv4Address> a;
  std::vector<std::string> ptr;
  std::vector<uint32_t> ttl;
  bool opt = false;
  uint16_t opt_size = 0;
  bool aa() const { return flags & 0x0400; }
  bool tc() const { return flags & 0x0200; }
};

Response read(std::span<const uint8_t> m) {
  Response r;
  EXPECT_GE(m.size(), kDnsHeaderLen);
  if (m.size() < kDnsHeaderLen) return r;
  r.id = wire::be16(m, 0);
  r.flags = wire::be16(m, 2);
  r.rcode = r.flags & 0xf;
  r.qd = wire::be16(m, 4);
  r.an = wire::be16(m, 6);
  r.ns = wire::be16(m, 8);
  r.ar = wire::be16(m, 10);
  auto q = decode_name(m, kDnsHeaderLen);
  EXPECT_TRUE(q.ok());
  if (!q.ok()) return r;
  r.qname = q->name.to_text();
  size_t pos = q->next;
  r.qtype = wire::be16(m, pos);
  pos += 4;
  for (int i = 0; i < r.an + r.ar; ++i) {
    auto owner = decode_name(m, pos);
    EXPECT_TRUE(owner.ok());
    if (!owner.ok()) return r;
    pos = owner->next;
    const uint16_t type = wire::be16(m, pos), cls = wire::be16(m, pos + 2);
    const uint32_t ttl = wire::be32(m, pos + 4);
    const uint16_t rdlen = wire::be16(m, pos + 8);
    pos += 10;
    EXPECT_LE(pos + rdlen, m.size());
    if (type == kDnsTypeOpt) {
      r.opt = true;
      r.opt_size = cls;
      r.rcode |= static_cast<int>(ttl >> 24) << 4;
    } else {
      EXPECT_EQ(owner->name.to_text(), r.qname);
      r.ttl.push_back(ttl);
      if (type == kDnsTypeA) r.a.push_back(Ipv4Address::from_bytes(m.subspan(pos, 4)));
      if (type == kDnsTypePtr) r.ptr.push_back(decode_name(m, pos)->name.to_text());
    }
    pos += rdlen;
  }
  EXPECT_EQ(pos, m.size());
  return r;
}

DnsZone::Config zone_config() {
  DnsZone::Config c;
  c.region = "eu-west-1";
  c.vpc = *Ipv4Prefix::parse("10.0.0.0/16");
  c.extra = {{"db.corp.internal", Ipv4Address(10, 0, 2, 7)},
             {"db.corp.internal", Ipv4Address(10, 0, 2, 8)},
             {"cache.svc.eu-west-1.compute.internal", Ipv4Address(10, 0, 3, 9)}};
  c.ttl = 60;
  return c;
}

class DnsZoneTest : public ::testing::Test {
 protected:
  DnsZoneTest() : zone_(std::move(DnsZone::create(zone_config())).value()) {}

  // Parses `q`, answers it, and reads the response back.
  Response ask(const std::vector<uint8_t>& q) {
    auto parsed = parse_dns_query(q);
    if (!parsed.ok()) {
      ADD_FAILURE() << parsed.error().context;
      return {};
    }
    auto n = answer(*parsed, zone_, out_);
    if (!n.ok()) {
      ADD_FAILURE() << n.error().context;
      return {};
    }
    last_ = std::vector<uint8_t>(out_.begin(), out_.begin() + static_cast<long>(*n));
    return read(last_);
  }
  Response ask(std::string_view name, uint16_t qtype) { return ask(query(name, qtype)); }

  DnsZone zone_;
  std::array<uint8_t, 1500> out_{};
  std::vector<uint8_t> last_;
};

constexpr int kNoError = 0, kNxDomain = 3, kRefused = 5, kBadVers = 16;

TEST(DnsQuery, GoldenDigQuery) {
  auto q = parse_dns_query(kDigQuery);
  ASSERT_TRUE(q.ok()) << q.error().context;
  EXPECT_EQ(q->id, 0xb3a1);
  EXPECT_TRUE(q->recursion_desired);
  EXPECT_FALSE(q->checking_disabled);
  EXPECT_EQ(q->qname.to_text(), "ip-10-0-1-5.eu-west-1.compute.internal");
  EXPECT_EQ(q->qname.label_count(), 4u);
  EXPECT_EQ(q->qtype, kDnsTypeA);
  EXPECT_EQ(q->qclass, kDnsClassIn);
  ASSERT_TRUE(q->edns);
  EXPECT_EQ(q->edns->udp_size, 1232);
  EXPECT_EQ(q->edns->version, 0);
  EXPECT_FALSE(q->edns->dnssec_ok);
}

TEST(DnsQuery, TruncationAtEveryOffset) {
  for (size_t n = 0; n < kDigQuery.size(); ++n) {
    auto r = parse_dns_query(prefix(kDigQuery, n));
    ASSERT_FALSE(r.ok()) << n;
    EXPECT_EQ(r.error().code, NetErrc::kTruncated) << n << ": " << r.error().context;
  }
  const auto plain = query("a.b", kDnsTypeA, false);
  for (size_t n = 0; n < plain.size(); ++n) {
    auto r = parse_dns_query(prefix(plain, n));
    ASSERT_FALSE(r.ok()) << n;
    EXPECT_EQ(r.error().code, NetErrc::kTruncated) << n;
  }
  EXPECT_TRUE(parse_dns_query(plain).ok());
}

TEST(DnsQuery, Refusals) {
  auto at = [](std::vector<uint8_t> m, size_t offset, std::vector<uint8_t> bytes) {
    std::copy(bytes.begin(), bytes.end(), m.begin() + static_cast<long>(offset));
    return m;
  };
  auto code = [](const std::vector<uint8_t>& m) {
    auto r = parse_dns_query(m);
    return r.ok() ? NetErrc{} : r.error().code;
  };
  EXPECT_EQ(code(at(kDigQuery, 2, {0x81, 0x20})), NetErrc::kUnsupported);  // QR: a response
  EXPECT_EQ(code(at(kDigQuery, 2, {0x28, 0x00})), NetErrc::kUnsupported);  // opcode UPDATE
  EXPECT_EQ(code(at(kDigQuery, 2, {0x10, 0x00})), NetErrc::kUnsupported);  // opcode STATUS
  EXPECT_EQ(code(at(kDigQuery, 2, {0x03, 0x00})), NetErrc::kMalformed);    // TC
  EXPECT_EQ(code(at(kDigQuery, 2, {0x01, 0x03})), NetErrc::kMalformed);    // RCODE in a query
  EXPECT_EQ(code(at(kDigQuery, 4, {0x00, 0x00})), NetErrc::kMalformed);    // no question
  EXPECT_EQ(code(at(kDigQuery, 4, {0x00, 0x02})), NetErrc::kMalformed);    // two questions
  EXPECT_EQ(code(at(kDigQuery, 6, {0x00, 0x01})), NetErrc::kMalformed);    // an answer
  EXPECT_EQ(code(at(kDigQuery, 8, {0x00, 0x01})), NetErrc::kMalformed);    // an authority record
  EXPECT_EQ(code(at(kDigQuery, 10, {0x00, 0x02})), NetErrc::kUnsupported);  // two additional
  auto trailing = kDigQuery;
  trailing.push_back(0);
  EXPECT_EQ(code(trailing), NetErrc::kMalformed);
  // The additional record is a TSIG (type 250), not OPT.
  const size_t opt = kDigQuery.size() - 23;
  EXPECT_EQ(code(at(kDigQuery, opt + 1, {0x00, 0xfa})), NetErrc::kUnsupported);
  // OPT owned by "a" instead of the root: 01 61 00, then the rest.
  auto owned = cat({std::span(kDigQuery).first(opt), hex("01 61 00"), std::span(kDigQuery).subspan(opt + 1)});
  EXPECT_EQ(code(owned), NetErrc::kMalformed);
  // OPT options that do not fill the data exactly.
  EXPECT_EQ(code(at(kDigQuery, opt + 13, {0x00, 0x09})), NetErrc::kMalformed);  // cookie length 9
  EXPECT_EQ(code(at(kDigQuery, opt + 9, {0x00, 0x0d})), NetErrc::kTruncated);   // rdlen 13
  auto short_rd = at(kDigQuery, opt + 9, {0x00, 0x02});  // rdlen 2: option header cut
  short_rd.resize(opt + 11 + 2);
  EXPECT_EQ(code(short_rd), NetErrc::kMalformed);
  // Label types 01 and 10 (RFC 6891 retired them).
  EXPECT_EQ(code(at(kDigQuery, 12, {0x41})), NetErrc::kBadName);
  EXPECT_EQ(code(at(kDigQuery, 12, {0x8b})), NetErrc::kBadName);
  // EDNS payload sizes below 512 count as 512.
  auto tiny = parse_dns_query(at(kDigQuery, opt + 3, {0x00, 0x10}));
  ASSERT_TRUE(tiny.ok());
  EXPECT_EQ(tiny->edns->udp_size, 512);
}

TEST(DnsName, DecodeLimits) {
  // A name of 127 one-byte labels is 255 bytes: the longest allowed.
  std::vector<uint8_t> longest;
  for (int i = 0; i < 127; ++i) longest.insert(longest.end(), {1, 'a'});
  longest.push_back(0);
  auto ok = decode_name(longest, 0);
  ASSERT_TRUE(ok.ok()) << ok.error().context;
  EXPECT_EQ(ok->name.wire().size(), 255u);
  EXPECT_EQ(ok->next, 255u);
  auto over = longest;
  over.insert(over.begin(), {1, 'b'});
  EXPECT_EQ(decode_name(over, 0).error().code, NetErrc::kBadName);
  // A 64-byte label.
  std::vector<uint8_t> label64(1, 64);
  label64.resize(66, 'x');
  label64.back() = 0;
  EXPECT_EQ(decode_name(label64, 0).error().code, NetErrc::kBadName);
  EXPECT_EQ(decode_name(label64, 66).error().code, NetErrc::kTruncated);
}

TEST(DnsName, CompressionLoopsRefused) {
  // A qname that points at itself.
  auto self = cat({std::span(kDigQuery).first(12), hex("c00c 0001 0001")});
  self[11] = 0;  // no OPT
  EXPECT_EQ(parse_dns_query(self).error().code, NetErrc::kPointerLoop);
  // Two names pointing at each other: at 20 "a" -> 30, at 30 "b" -> 20.
  std::vector<uint8_t> m(40, 0);
  const auto a = hex("01 61 c01e"), b = hex("01 62 c014");
  std::copy(a.begin(), a.end(), m.begin() + 20);
  std::copy(b.begin(), b.end(), m.begin() + 30);
  EXPECT_EQ(decode_name(m, 20).error().code, NetErrc::kPointerLoop);  // forward pointer
  EXPECT_EQ(decode_name(m, 30).error().code, NetErrc::kPointerLoop);  // back to 20, then forward to 30
  // A pointer into the middle of the run it belongs to (backwards, but inside the loop).
  const auto mid = hex("01 61 01 62 c002");
  EXPECT_EQ(decode_name(mid, 2).error().code, NetErrc::kPointerLoop);
  // Backward pointers are fine, even chained: "c" -> "b" -> "a".
  const auto chain = hex("01 61 00  01 62 c000  01 63 c003");
  auto ok = decode_name(chain, 7);
  ASSERT_TRUE(ok.ok()) << ok.error().context;
  EXPECT_EQ(ok->name.to_text(), "c.b.a");
  EXPECT_EQ(ok->next, 11u);
  // A chain of 200 pointers, each to the one before: over the 127-hop limit.
  std::vector<uint8_t> hops = hex("00");
  for (int i = 0; i < 200; ++i) {
    const size_t target = hops.size() == 1 ? 0 : hops.size() - 2;
    hops.push_back(static_cast<uint8_t>(0xc0 | target >> 8));
    hops.push_back(static_cast<uint8_t>(target));
  }
  EXPECT_EQ(decode_name(hops, hops.size() - 2).error().code, NetErrc::kPointerLoop);
  EXPECT_TRUE(decode_name(hops, 2 * 100 - 1).ok());  // 100 hops
  // 64 KiB of pointers (down by 0x1000, up by 0x1000 below it): every decode ends quickly,
  // and the ones that start on a pointer end refused.
  std::vector<uint8_t> storm(65536);
  for (size_t i = 0; i < storm.size(); i += 2) {
    storm[i] = static_cast<uint8_t>(0xc0 | (((i ^ 0x1000) >> 8) & 0x3f));
    storm[i + 1] = static_cast<uint8_t>(i ^ 0x1000);
  }
  const auto t0 = std::chrono::steady_clock::now();
  for (size_t i = 0; i < storm.size(); i += 97) {
    auto r = decode_name(storm, i);
    if (i % 2 == 0) {
      ASSERT_FALSE(r.ok()) << i;
      EXPECT_EQ(r.error().code, NetErrc::kPointerLoop) << i;
    }
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(1));
}

TEST(DnsName, TextAndComparison) {
  auto n = DnsName::from_text("Ip-10-0-1-5.EU-west-1.compute.internal.");
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(n->to_text(), "Ip-10-0-1-5.EU-west-1.compute.internal");
  EXPECT_EQ(*n, *DnsName::from_text("ip-10-0-1-5.eu-west-1.compute.internal"));
  EXPECT_TRUE(n->is_subdomain_of(*DnsName::from_text("COMPUTE.internal")));
  EXPECT_TRUE(n->is_subdomain_of(*n));
  EXPECT_TRUE(n->is_subdomain_of(DnsName()));
  EXPECT_FALSE(n->is_subdomain_of(*DnsName::from_text("pute.internal")));  // not label-aligned
  EXPECT_EQ(n->label(1), "EU-west-1");
  EXPECT_EQ(DnsName().to_text(), ".");
  EXPECT_EQ(DnsName::from_text(".")->label_count(), 0u);
  for (const char* bad : {"", "a..b", ".a", "a b", "a\\.b", "caf\xc3\xa9.fr"}) {
    EXPECT_EQ(DnsName::from_text(bad).error().code, NetErrc::kBadName) << bad;
  }
  EXPECT_FALSE(DnsName::from_text(std::string(64, 'a')).ok());
  // Names from the wire may hold any byte; text escapes what is not a plain label character.
  const auto odd = hex("03 61 2e 0a 00");
  EXPECT_EQ(decode_name(odd, 0)->name.to_text(), "a\\046\\010");
}

TEST_F(DnsZoneTest, GeneratedNames) {
  EXPECT_EQ(zone_.domain().to_text(), "eu-west-1.compute.internal");
  EXPECT_EQ(zone_.name_for(Ipv4Address(10, 0, 1, 5)).to_text(), "ip-10-0-1-5.eu-west-1.compute.internal");
  EXPECT_EQ(zone_.address_for(*DnsName::from_text("ip-10-0-255-254.eu-west-1.compute.internal")),
            Ipv4Address(10, 0, 255, 254));
  EXPECT_FALSE(zone_.address_for(*DnsName::from_text("ip-10-1-0-5.eu-west-1.compute.internal")));  // outside VPC
  for (const char* bad : {"ip-10-0-01-5", "ip-10-0-1", "ip-10-0-1-5-6", "ip-10-0-1-256", "ip-10-0-1-", "ipx10-0-1-5",
                          "ip-10-0--5", "ip10-0-1-5"}) {
    EXPECT_FALSE(zone_.address_for(*DnsName::from_text(std::string(bad) + ".eu-west-1.compute.internal"))) << bad;
  }
}

TEST_F(DnsZoneTest, AnswersTheDigQuery) {
  const Response r = ask(kDigQuery);
  EXPECT_EQ(r.id, 0xb3a1);
  EXPECT_TRUE(r.flags & 0x8000);       // QR
  EXPECT_TRUE(r.aa());
  EXPECT_TRUE(r.flags & 0x0100);       // RD copied
  EXPECT_FALSE(r.flags & 0x0080);      // RA: no recursion here
  EXPECT_FALSE(r.tc());
  EXPECT_EQ(r.rcode, kNoError);
  EXPECT_EQ(r.qd, 1);
  EXPECT_EQ(r.qname, "ip-10-0-1-5.eu-west-1.compute.internal");
  ASSERT_EQ(r.a.size(), 1u);
  EXPECT_EQ(r.a[0], Ipv4Address(10, 0, 1, 5));
  EXPECT_EQ(r.ttl[0], 60u);
  EXPECT_TRUE(r.opt);
  EXPECT_EQ(r.opt_size, kDnsEdnsUdpLen);
  // The answer's owner is compressed to the question (c00c).
  const size_t question_end = 12 + 40 + 4;
  EXPECT_EQ(last_[question_end], 0xc0);
  EXPECT_EQ(last_[question_end + 1], 0x0c);
}

TEST_F(DnsZoneTest, ForwardNames) {
  // Case is echoed, matching ignores it.
  Response r = ask("IP-10-0-1-5.EU-WEST-1.compute.internal", kDnsTypeA);
  EXPECT_EQ(r.qname, "IP-10-0-1-5.EU-WEST-1.compute.internal");
  ASSERT_EQ(r.a.size(), 1u);
  r = ask("ip-10-0-1-5.eu-west-1.compute.internal", kDnsTypeAny);
  EXPECT_EQ(r.a.size(), 1u);
  for (uint16_t t : {kDnsTypeAaaa, uint16_t{15} /* MX */, uint16_t{16} /* TXT */}) {
    r = ask("ip-10-0-1-5.eu-west-1.compute.internal", t);
    EXPECT_EQ(r.rcode, kNoError) << t;  // no data
    EXPECT_EQ(r.an, 0) << t;
    EXPECT_TRUE(r.aa());
  }
  for (const char* name : {"ip-10-1-0-5.eu-west-1.compute.internal", "ip-10-0-01-5.eu-west-1.compute.internal",
                           "foo.eu-west-1.compute.internal", "x.ip-10-0-1-5.eu-west-1.compute.internal"}) {
    r = ask(name, kDnsTypeA);
    EXPECT_EQ(r.rcode, kNxDomain) << name;
    EXPECT_TRUE(r.aa()) << name;
    EXPECT_EQ(r.an, 0) << name;
  }
  r = ask("eu-west-1.compute.internal", kDnsTypeA);  // the apex
  EXPECT_EQ(r.rcode, kNoError);
  EXPECT_EQ(r.an, 0);
}

TEST_F(DnsZoneTest, ExtraNames) {
  Response r = ask("DB.corp.internal", kDnsTypeA);
  EXPECT_EQ(r.rcode, kNoError);
  ASSERT_EQ(r.a.size(), 2u);
  EXPECT_EQ(r.a[0], Ipv4Address(10, 0, 2, 7));
  EXPECT_EQ(r.a[1], Ipv4Address(10, 0, 2, 8));
  r = ask("cache.svc.eu-west-1.compute.internal", kDnsTypeA);
  ASSERT_EQ(r.a.size(), 1u);
  r = ask("svc.eu-west-1.compute.internal", kDnsTypeA);  // empty non-terminal above an extra name
  EXPECT_EQ(r.rcode, kNoError);
  EXPECT_EQ(r.an, 0);
  r = ask("corp.internal", kDnsTypeA);  // outside our authority: only the exact extra names are ours
  EXPECT_EQ(r.rcode, kRefused);
}

TEST_F(DnsZoneTest, ReverseNames) {
  Response r = ask("5.1.0.10.in-addr.arpa", kDnsTypePtr);
  EXPECT_EQ(r.rcode, kNoError);
  EXPECT_TRUE(r.aa());
  ASSERT_EQ(r.ptr.size(), 1u);
  EXPECT_EQ(r.ptr[0], "ip-10-0-1-5.eu-west-1.compute.internal");
  r = ask("5.1.0.10.IN-ADDR.ARPA", kDnsTypeA);  // exists, no A data
  EXPECT_EQ(r.rcode, kNoError);
  EXPECT_EQ(r.an, 0);
  struct Case {
    const char* name;
    int rcode;
  } cases[] = {
      {"1.0.10.in-addr.arpa", kNoError},      // inside the reverse zone, no data
      {"0.10.in-addr.arpa", kNoError},        // its apex
      {"x.1.0.10.in-addr.arpa", kNxDomain},   // not an octet
      {"05.1.0.10.in-addr.arpa", kNxDomain},  // leading zero
      {"6.5.1.0.10.in-addr.arpa", kNxDomain},  // five octets
      {"5.1.1.10.in-addr.arpa", kRefused},    // 10.1.1.5: outside the VPC
      {"10.in-addr.arpa", kRefused},          // above the reverse zone
      {"in-addr.arpa", kRefused},
      {"1.1.168.192.in-addr.arpa", kRefused},
  };
  for (const auto& c : cases) {
    r = ask(c.name, kDnsTypePtr);
    EXPECT_EQ(r.rcode, c.rcode) << c.name;
    EXPECT_EQ(r.an, 0) << c.name;
    EXPECT_EQ(r.aa(), c.rcode != kRefused) << c.name;
  }
}

TEST_F(DnsZoneTest, RefusesEverythingOutside) {
  for (const char* name : {"example.com", "compute.internal", "ip-10-0-1-5.us-east-1.compute.internal", "internal",
                           "amazonaws.com", "169.254.169.254.in-addr.arpa"}) {
    const Response r = ask(name, kDnsTypeA);
    EXPECT_EQ(r.rcode, kRefused) << name;
    EXPECT_FALSE(r.aa()) << name;
    EXPECT_EQ(r.an, 0) << name;
  }
  EXPECT_EQ(ask(query(".", kDnsTypeA)).rcode, kRefused);  // the root
  EXPECT_EQ(ask(query("version.bind", 16, false, 3)).rcode, kRefused);  // CHAOS class
  EXPECT_EQ(ask("eu-west-1.compute.internal", kDnsTypeAxfr).rcode, kRefused);
  EXPECT_EQ(ask("eu-west-1.compute.internal", kDnsTypeIxfr).rcode, kRefused);
}

TEST_F(DnsZoneTest, EdnsVersionAndPlainQueries) {
  Response r = ask(query("ip-10-0-1-5.eu-west-1.compute.internal", kDnsTypeA, true, kDnsClassIn, 1));
  EXPECT_EQ(r.rcode, kBadVers);
  EXPECT_EQ(r.flags & 0xf, 0);  // the low bits in the header, the high ones in OPT
  EXPECT_TRUE(r.opt);
  r = ask(query("ip-10-0-1-5.eu-west-1.compute.internal", kDnsTypeA, false));
  EXPECT_FALSE(r.opt);
  EXPECT_EQ(r.ar, 0);
  EXPECT_EQ(r.a.size(), 1u);
}

TEST(DnsResponse, TruncatesWhenTheRecordsDoNotFit) {
  auto q = parse_dns_query(query("many.example", kDnsTypeA, false));
  ASSERT_TRUE(q.ok());
  DnsAnswer a;
  for (uint32_t i = 0; i < 40; ++i) a.a.push_back(Ipv4Address::from_u32(0x0a000000 + i));
  std::array<uint8_t, 1500> out{};
  auto n = build_dns_response(out, *q, a);  // 12 + 18 + 40 * 16 = 670 > 512
  ASSERT_TRUE(n.ok());
  Response r = read(std::span(out).first(*n));
  EXPECT_TRUE(r.tc());
  EXPECT_EQ(r.an, 0);
  // With EDNS (payload 4096, capped at 1232) they fit.
  q = parse_dns_query(query("many.example", kDnsTypeA, true));
  n = build_dns_response(out, *q, a);
  ASSERT_TRUE(n.ok());
  r = read(std::span(out).first(*n));
  EXPECT_FALSE(r.tc());
  EXPECT_EQ(r.a.size(), 40u);
  // The output buffer bounds it too; below header + question + OPT it is refused.
  n = build_dns_response(std::span(out).first(100), *q, a);
  ASSERT_TRUE(n.ok());
  EXPECT_TRUE(read(std::span(out).first(*n)).tc());
  EXPECT_EQ(build_dns_response(std::span(out).first(40), *q, a).error().code, NetErrc::kNoSpace);
}

TEST(DnsZoneConfig, Validation) {
  auto bad = [](auto mutate) {
    DnsZone::Config c = zone_config();
    mutate(c);
    auto r = DnsZone::create(c);
    return !r.ok() && r.error().code == NetErrc::kBadConfig;
  };
  EXPECT_TRUE(DnsZone::create(zone_config()).ok());
  EXPECT_TRUE(bad([](DnsZone::Config& c) { c.region = ""; }));
  EXPECT_TRUE(bad([](DnsZone::Config& c) { c.region = "eu.west"; }));
  EXPECT_TRUE(bad([](DnsZone::Config& c) { c.vpc = Ipv4Prefix::of(Ipv4Address(), 0); }));
  EXPECT_TRUE(bad([](DnsZone::Config& c) { c.extra.push_back({"bad name", Ipv4Address()}); }));
  EXPECT_TRUE(bad([](DnsZone::Config& c) { c.ttl = 0x80000000u; }));
  EXPECT_TRUE(bad([](DnsZone::Config& c) {
    for (int i = 0; i < 15; ++i) c.extra.push_back({"db.corp.internal", Ipv4Address()});
  }));
  EXPECT_TRUE(bad([](DnsZone::Config& c) {
    c.domain = std::string(63, 'a') + "." + std::string(63, 'b') + "." + std::string(63, 'c') + "." + std::string(50, 'd');
  }));
  DnsZone::Config custom = zone_config();
  custom.domain = "ec2.internal";  // us-east-1's historical domain
  auto z = DnsZone::create(custom);
  ASSERT_TRUE(z.ok());
  EXPECT_EQ(z->name_for(Ipv4Address(10, 0, 1, 5)).to_text(), "ip-10-0-1-5.ec2.internal");
}

#ifdef AZOTE_NET_HAVE_LDNS

struct LdnsPacket {
  ldns_pkt* p = nullptr;
  ~LdnsPacket() {
    if (p) ldns_pkt_free(p);
  }
};

std::string ldns_text(const ldns_rdf* rdf) {
  char* s = ldns_rdf2str(rdf);
  std::string out = s ? s : "";
  free(s);  // NOLINT: ldns allocates with malloc
  return out;
}

// ldns, an independent implementation, reads every kind of response we build.
TEST_F(DnsZoneTest, LdnsReadsOurAnswers) {
  struct Case {
    std::vector<uint8_t> q;
    ldns_pkt_rcode rcode;
    size_t answers;
    const char* rdata;
  } cases[] = {
      {kDigQuery, LDNS_RCODE_NOERROR, 1, "10.0.1.5"},
      {query("5.1.0.10.in-addr.arpa", kDnsTypePtr), LDNS_RCODE_NOERROR, 1, "ip-10-0-1-5.eu-west-1.compute.internal."},
      {query("db.corp.internal", kDnsTypeA, false), LDNS_RCODE_NOERROR, 2, "10.0.2.7"},
      {query("ip-10-0-1-5.eu-west-1.compute.internal", kDnsTypeAaaa), LDNS_RCODE_NOERROR, 0, ""},
      {query("nope.eu-west-1.compute.internal", kDnsTypeA), LDNS_RCODE_NXDOMAIN, 0, ""},
      {query("example.com", kDnsTypeA), LDNS_RCODE_REFUSED, 0, ""},
  };
  for (const auto& c : cases) {
    ask(c.q);
    LdnsPacket pkt;
    ASSERT_EQ(ldns_wire2pkt(&pkt.p, last_.data(), last_.size()), LDNS_STATUS_OK);
    EXPECT_TRUE(ldns_pkt_qr(pkt.p));
    EXPECT_EQ(ldns_pkt_id(pkt.p), wire::be16(c.q, 0));
    EXPECT_EQ(ldns_pkt_get_rcode(pkt.p), c.rcode);
    EXPECT_EQ(ldns_pkt_qdcount(pkt.p), 1);
    ASSERT_EQ(ldns_pkt_ancount(pkt.p), c.answers);
    EXPECT_EQ(ldns_pkt_edns(pkt.p), c.q[11] == 1);
    const ldns_rr* question = ldns_rr_list_rr(ldns_pkt_question(pkt.p), 0);
    EXPECT_EQ(ldns_text(ldns_rr_owner(question)), parse_dns_query(c.q)->qname.to_text() + ".");
    if (c.answers > 0) {
      const ldns_rr* rr = ldns_rr_list_rr(ldns_pkt_answer(pkt.p), 0);
      EXPECT_EQ(ldns_text(ldns_rr_rdf(rr, 0)), c.rdata);
      EXPECT_EQ(ldns_rr_ttl(rr), 60u);
      EXPECT_EQ(ldns_rdf_compare(ldns_rr_owner(rr), ldns_rr_owner(question)), 0);
    }
  }
}

// And we read the queries ldns builds.
TEST(DnsLdns, WeReadLdnsQueries) {
  struct Case {
    const char* name;
    ldns_rr_type type;
    bool edns;
  } cases[] = {
      {"ip-10-0-1-5.eu-west-1.compute.internal", LDNS_RR_TYPE_A, true},
      {"5.1.0.10.in-addr.arpa", LDNS_RR_TYPE_PTR, false},
      {"db.corp.internal", LDNS_RR_TYPE_AAAA, true},
  };
  for (const auto& c : cases) {
    LdnsPacket pkt;
    ASSERT_EQ(ldns_pkt_query_new_frm_str(&pkt.p, c.name, c.type, LDNS_RR_CLASS_IN, LDNS_RD), LDNS_STATUS_OK);
    ldns_pkt_set_id(pkt.p, 0x5151);
    if (c.edns) ldns_pkt_set_edns_udp_size(pkt.p, 1232);
    uint8_t* wire_bytes = nullptr;
    size_t len = 0;
    ASSERT_EQ(ldns_pkt2wire(&wire_bytes, pkt.p, &len), LDNS_STATUS_OK);
    std::vector<uint8_t> bytes(wire_bytes, wire_bytes + len);
    free(wire_bytes);  // NOLINT
    auto q = parse_dns_query(bytes);
    ASSERT_TRUE(q.ok()) << c.name << ": " << q.error().context;
    EXPECT_EQ(q->id, 0x5151);
    EXPECT_TRUE(q->recursion_desired);
    EXPECT_EQ(q->qname.to_text(), c.name);
    EXPECT_EQ(q->qtype, static_cast<uint16_t>(c.type));
    EXPECT_EQ(q->edns.has_value(), c.edns);
  }
}

// Both refuse a self-pointing qname; ldns only after following it 65535 times, we at once.
TEST(DnsLdns, BothRefuseACompressionLoop) {
  const auto self = hex("1234 0100 0001 0000 0000 0000 c00c 0001 0001");
  LdnsPacket pkt;
  EXPECT_NE(ldns_wire2pkt(&pkt.p, self.data(), self.size()), LDNS_STATUS_OK);
  EXPECT_EQ(parse_dns_query(self).error().code, NetErrc::kPointerLoop);
}

#else

TEST(DnsLdns, ReferenceChecks) { GTEST_SKIP() << "libldns-dev not installed (scripts/deps.sh installs it)"; }

#endif

}  // namespace
}  // namespace azote::net
