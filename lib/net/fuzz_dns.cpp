// libFuzzer target for the DNS codec and the zone: the input is the UDP payload a guest
// sends to port 53. What parses is answered by a fixed zone; every answer must build, stay
// within the size the query allows, and read back with the same id and question — by our
// decoder and, when built with libldns, by ldns. Names are also decoded from arbitrary
// offsets (compression-loop protection) and parsed from text.
#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string_view>

#include "net/dns.hpp"

#ifdef AZOTE_NET_HAVE_LDNS
#include <ldns/ldns.h>
#endif

using namespace azote::net;

namespace {

void check(bool ok) {
  if (!ok) __builtin_trap();
}

const DnsZone& zone() {
  static const DnsZone z = [] {
    DnsZone::Config c;
    c.region = "eu-west-1";
    c.vpc = Ipv4Prefix::of(Ipv4Address(10, 0, 0, 0), 16);
    c.extra = {{"db.corp.internal", Ipv4Address(10, 0, 2, 7)}, {"db.corp.internal", Ipv4Address(10, 0, 2, 8)}};
    auto r = DnsZone::create(c);
    if (!r.ok()) std::abort();
    return std::move(r).value();
  }();
  return z;
}

std::array<uint8_t, 1500> g_out;

void answer_and_check(const DnsQuery& q) {
  auto n = answer(q, zone(), g_out);
  check(n.ok());
  const size_t limit = q.edns ? std::clamp<size_t>(q.edns->udp_size, 512, kDnsEdnsUdpLen) : 512;
  check(*n <= limit);
  const auto resp = std::span<const uint8_t>(g_out).first(*n);
  check((resp[0] << 8 | resp[1]) == q.id && (resp[2] & 0x80) != 0);
  auto qname = decode_name(resp, kDnsHeaderLen);
  check(qname.ok() && qname->name == q.qname);
#ifdef AZOTE_NET_HAVE_LDNS
  ldns_pkt* pkt = nullptr;
  check(ldns_wire2pkt(&pkt, resp.data(), resp.size()) == LDNS_STATUS_OK);
  check(ldns_pkt_id(pkt) == q.id && ldns_pkt_qr(pkt) && ldns_pkt_qdcount(pkt) == 1);
  check(ldns_pkt_edns(pkt) == q.edns.has_value());
  ldns_pkt_free(pkt);
#endif
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const uint8_t> in(data, size);
  if (auto q = parse_dns_query(in); q.ok()) answer_and_check(*q);
  // Names from anywhere in the input (pointers into the input before them).
  for (size_t off = 0; off < size && off < 64; off += 1 + (data[off] & 7)) {
    if (auto n = decode_name(in, off); n.ok()) {
      check(n->next > off && n->next <= size && n->name.wire().size() <= kDnsMaxNameLen);
      check(DnsName::from_wire(n->name.wire()).ok());
    }
  }
  if (size <= 300) {
    const std::string_view s(reinterpret_cast<const char*>(data), size);
    if (auto n = DnsName::from_text(s); n.ok()) {
      auto again = DnsName::from_text(n->to_text());
      check(again.ok() && *again == *n);
    }
  }
  return 0;
}
