// DNS (RFC 1035) for the card's resolver: a strict codec for the one kind of message a guest
// sends it — a standard query with one question, optionally EDNS(0) (RFC 6891) — and the
// answers of the VPC zone. The card is authoritative for its zone and forwards nothing
// outside: every other name is REFUSED.
//
// Why not libldns: it parses every section and record type a hostile guest cares to send
// (heap allocations per field), follows forward compression pointers and bounds pointer
// chains only at 65535 hops, and as an uninstrumented system library it is invisible to
// the sanitizers and coverage of the fuzz targets. The codec here reads a header, one
// name and at most one OPT record, with pointers that must go strictly backwards. ldns
// serves as the independent reference in the tests and in fuzz_dns instead.
#pragma once

#include <array>
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

namespace azote::net {

inline constexpr uint16_t kDnsPort = 53;
inline constexpr size_t kDnsHeaderLen = 12;
inline constexpr size_t kDnsMaxNameLen = 255;  // wire form, root label included
inline constexpr size_t kDnsMaxUdpLen = 512;   // without EDNS
inline constexpr uint16_t kDnsEdnsUdpLen = 1232;  // what we advertise and use at most

inline constexpr uint16_t kDnsTypeA = 1;
inline constexpr uint16_t kDnsTypeSoa = 6;
inline constexpr uint16_t kDnsTypePtr = 12;
inline constexpr uint16_t kDnsTypeAaaa = 28;
inline constexpr uint16_t kDnsTypeOpt = 41;
inline constexpr uint16_t kDnsTypeIxfr = 251;
inline constexpr uint16_t kDnsTypeAxfr = 252;
inline constexpr uint16_t kDnsTypeAny = 255;
inline constexpr uint16_t kDnsClassIn = 1;

enum class DnsRcode : uint16_t {
  kNoError = 0, kFormErr = 1, kServFail = 2, kNxDomain = 3, kNotImp = 4, kRefused = 5,
  kBadVers = 16,  // extended (EDNS): an EDNS version we do not speak
};

// A domain name in uncompressed wire form: length-prefixed labels ending with the root
// label, at most 255 bytes. The case is kept as received (answers echo the question as
// asked); equality and suffix tests ignore ASCII case (RFC 4343).
class DnsName {
 public:
  DnsName();  // the root
  // Presentation form: "ip-10-0-1-5.eu-west-1.compute.internal" (a trailing dot is allowed,
  // "." is the root). Labels of 1..63 letters, digits, '-' or '_' (what a zone configured by
  // an operator contains); anything else is kBadName.
  static Result<DnsName, NetError> from_text(std::string_view text);
  // From wire labels (already bounds-checked): used by the decoder.
  static Result<DnsName, NetError> from_wire(std::span<const uint8_t> uncompressed);

  std::span<const uint8_t> wire() const { return {b_.data(), len_}; }
  // Presentation form without the final dot ("." for the root); bytes other than letters,
  // digits, '-' and '_' are written as \DDD, so the text never carries control characters.
  std::string to_text() const;
  size_t label_count() const;
  // The i-th label from the left (0 is the leftmost); i < label_count().
  std::string_view label(size_t i) const;
  // Whether this name equals `suffix` or lies below it, label-aligned.
  bool is_subdomain_of(const DnsName& suffix) const;
  // `label` + "." + this; kBadName if the label is invalid or the result exceeds 255 bytes.
  Result<DnsName, NetError> prepend(std::string_view label) const;

  friend bool operator==(const DnsName& a, const DnsName& b);

 private:
  std::array<uint8_t, kDnsMaxNameLen> b_{};
  size_t len_ = 0;
};

struct DecodedName {
  DnsName name;
  size_t next = 0;  // offset just past the name where it started (past the first pointer)
};
// Decodes the name at `offset` of `msg`, following compression pointers. Loop protection:
// every pointer must point strictly before the start of the label run that contains it
// (so successive targets strictly decrease and the walk ends), and at most 127 pointers
// are followed. kTruncated past the end; kBadName for label types 01/10, labels over 63 or
// names over 255 bytes; kPointerLoop for a pointer that does not go backwards.
Result<DecodedName, NetError> decode_name(std::span<const uint8_t> msg, size_t offset);

struct DnsEdns {
  uint16_t udp_size = 512;  // the requester's payload size (values below 512 count as 512)
  uint8_t version = 0;
  bool dnssec_ok = false;
};

struct DnsQuery {
  uint16_t id = 0;
  bool recursion_desired = false;
  bool checking_disabled = false;
  DnsName qname;
  uint16_t qtype = 0;
  uint16_t qclass = 0;
  std::optional<DnsEdns> edns;
};

// A query as a stub resolver sends it (dig, glibc, systemd-resolved). Refused, for the card
// to drop: kTruncated (header, question or OPT cut short); kUnsupported for a response (QR),
// an opcode other than QUERY, or an additional record other than one OPT (TSIG, ...);
// kMalformed for TC or a non-zero RCODE in a query, QDCOUNT != 1, answer or authority
// records, an OPT not owned by the root or with bad option framing, trailing bytes; the
// name errors of decode_name. Any QTYPE/QCLASS parses: the resolver decides.
Result<DnsQuery, NetError> parse_dns_query(std::span<const uint8_t> msg);

struct DnsAnswer {
  DnsRcode rcode = DnsRcode::kNoError;
  bool authoritative = true;
  uint32_t ttl = 60;
  std::vector<Ipv4Address> a;  // A records for the question's name
  std::optional<DnsName> ptr;  // one PTR record
};

// The response to `q`: header (QR, AA as given, RD/CD copied, RA 0: no recursion here),
// the question echoed, the answer records (owner compressed to the question), and an OPT
// record (size 1232, version 0) when the query had one. If the records do not fit in 512
// bytes (1232 with EDNS, or the requester's smaller size) the response carries none and
// sets TC. kNoSpace if `out` cannot hold even that.
Result<size_t, NetError> build_dns_response(std::span<uint8_t> out, const DnsQuery& q, const DnsAnswer& a);

struct DnsRecord {
  std::string name;  // presentation form
  Ipv4Address address;
};

// The VPC's private zone: "ip-a-b-c-d.<region>.compute.internal" for every address of the
// VPC CIDR, its reverse names under in-addr.arpa, and a table of extra names.
class DnsZone {
 public:
  struct Config {
    std::string region;              // e.g. "eu-west-1"
    std::string domain;              // default (empty): "<region>.compute.internal"
    Ipv4Prefix vpc;                  // the VPC CIDR
    std::vector<DnsRecord> extra;    // A records served as given (at most 16 per name)
    uint32_t ttl = 60;
  };
  // kBadConfig for an empty or invalid region/domain, a VPC prefix shorter than /8, an
  // invalid extra name, more than 16 addresses for one name.
  static Result<DnsZone, NetError> create(Config cfg);

  const DnsName& domain() const { return domain_; }
  // "ip-10-0-1-5.<domain>" (any address; the zone answers only for those in the VPC).
  DnsName name_for(Ipv4Address a) const;
  // The address of a generated name inside the VPC, nullopt for anything else.
  std::optional<Ipv4Address> address_for(const DnsName& name) const;

  // The decision for one query:
  //  - QCLASS other than IN, zone transfers (AXFR/IXFR): REFUSED;
  //  - EDNS version above 0: BADVERS;
  //  - an extra name: its A records (A, ANY), otherwise no data;
  //  - in the domain: a generated name in the VPC -> its A record (A, ANY), no data for other
  //    types (AAAA included); the domain itself and names above extra names: no data; any
  //    other name: NXDOMAIN;
  //  - d.c.b.a.in-addr.arpa for an address in the VPC: PTR to its generated name; reverse
  //    names whose octets overlap the VPC CIDR but name no address: no data or NXDOMAIN;
  //  - everything else: REFUSED (nothing is forwarded).
  DnsAnswer resolve(const DnsQuery& q) const;

 private:
  explicit DnsZone(Config cfg) : cfg_(std::move(cfg)) {}
  DnsAnswer resolve_reverse(const DnsQuery& q) const;

  Config cfg_;
  DnsName domain_;
  DnsName reverse_root_;  // in-addr.arpa
  std::vector<std::pair<DnsName, Ipv4Address>> extra_;
};

// resolve() then build_dns_response(): the bytes to send back for `q`.
Result<size_t, NetError> answer(const DnsQuery& q, const DnsZone& zone, std::span<uint8_t> out);

}  // namespace azote::net
