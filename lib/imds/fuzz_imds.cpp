// libFuzzer target for what a guest controls: the first byte picks
//   0: the IMDSv2 handler. The rest is "METHOD PATH\nName: value\n...". A header value
//      "@tok" becomes a valid token of the slot, "@other" another slot's, "@old" an
//      expired one. Answered for a slot requiring tokens and for an IMDSv1 slot; the
//      invariants: a known status, 200 on GET only with a valid token (or none in v1
//      mode), tokens only from a PUT without X-Forwarded-For and verifying for this slot.
//   1: the NAT inbound (guest → namespace); what it accepts must verify (IPv4 and TCP
//      checksums, lib/net) with the alias as source, the checksums equal to a recomputation.
//   2: the NAT outbound (namespace → guest); same, with the ENI as destination and TTL 1.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "imds/handler.hpp"
#include "imds/nat.hpp"
#include "net/checksum.hpp"
#include "net/ipv4.hpp"
#include "net/l4.hpp"
#include "net/wire.hpp"

using namespace azote;
using namespace azote::imds;
using namespace std::chrono_literals;

namespace {

void check(bool ok) {
  if (!ok) __builtin_trap();
}

const net::Ipv4Address kEni(10, 0, 1, 5);
constexpr uint32_t kSlot = 5;
constexpr uint64_t kIncarnation = 77;
const TimePoint kT0 = TimePoint(100000s);

const TokenService& tokens() {
  static const TokenService t(std::array<uint8_t, kTokenKeyLen>{0x42});
  return t;
}

const CheckedMetadata& meta(bool required) {
  static const auto make = [](bool req) {
    InstanceMetadata md;
    md.instance_id = "i-0123456789abcdef0";
    md.instance_type = "t3.micro";
    md.ami_id = "ami-1";
    md.local_ipv4 = "10.0.1.5";
    md.mac = "02:00:0a:00:01:05";
    md.hostname = md.local_hostname = "ip-10-0-1-5.eu-west-1.compute.internal";
    md.availability_zone = "eu-west-1a";
    md.region = "eu-west-1";
    md.account_id = "123456789012";
    md.security_groups = {"default"};
    md.user_data = {'u', 0, 0xff};
    md.http_tokens_required = req;
    auto c = check_metadata(md);
    if (!c.ok()) std::abort();
    return std::move(c).value();
  };
  static const CheckedMetadata v2 = make(true);
  static const CheckedMetadata v1 = make(false);
  return required ? v2 : v1;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i]))) return false;
  }
  return true;
}

void fuzz_handler(std::string_view text, TimePoint now) {
  Request req;
  size_t pos = text.find('\n');
  std::string_view line = text.substr(0, pos);
  const size_t sp = line.find(' ');
  req.method = std::string(line.substr(0, sp));
  req.path = sp == std::string_view::npos ? "" : std::string(line.substr(sp + 1));
  while (pos != std::string_view::npos && req.headers.size() < 16) {
    text.remove_prefix(pos + 1);
    pos = text.find('\n');
    line = text.substr(0, pos);
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    std::string_view value = line.substr(colon + 1);
    if (!value.empty() && value[0] == ' ') value.remove_prefix(1);
    std::string v(value);
    if (v == "@tok") v = tokens().issue(kSlot, kIncarnation, kT0, 60);
    if (v == "@other") v = tokens().issue(kSlot + 1, kIncarnation, kT0, 60);
    if (v == "@old") v = tokens().issue(kSlot, kIncarnation - 1, kT0, 60);
    req.headers.emplace_back(std::string(line.substr(0, colon)), std::move(v));
  }
  int token_headers = 0;
  bool valid_token = false;
  bool forwarded = false;
  for (const auto& [k, v] : req.headers) {
    if (iequals(k, kTokenHeader)) {
      ++token_headers;
      valid_token = tokens().verify(v, kSlot, kIncarnation, now).check == TokenCheck::kValid;
    }
    if (iequals(k, "X-Forwarded-For")) forwarded = true;
  }
  for (bool required : {true, false}) {
    const Response r = handle(req, SlotView{kSlot, kIncarnation, meta(required)}, tokens(), now);
    check(r.status == 200 || r.status == 400 || r.status == 401 || r.status == 403 || r.status == 404 ||
          r.status == 405);
    check(!r.content_type.empty());
    check((r.status == 200) == (r.refusal == Refusal::kNone && r.status != 404));
    if (r.token_issued) {
      check(r.status == 200 && req.method == "PUT" && !forwarded);
      check(tokens().verify(r.body, kSlot, kIncarnation, now).check == TokenCheck::kValid);
      check(tokens().verify(r.body, kSlot + 1, kIncarnation, now).check == TokenCheck::kOtherSlot);
    }
    if (r.status == 200 && req.method == "GET") {
      check(token_headers == 1 ? valid_token : (token_headers == 0 && !required));
    }
    if (r.status == 401) check(token_headers == 1 || required);
  }
}

// Both checksums of a packet accepted by the NAT verify and equal a recomputation.
void check_packet(std::span<const uint8_t> p, net::Ipv4Address src, net::Ipv4Address dst) {
  auto ip = net::parse_ipv4(p);
  check(ip.ok() && ip->total_len == p.size() && ip->src == src && ip->dst == dst);
  auto tcp = net::parse_tcp(*ip);
  check(tcp.ok());
  std::vector<uint8_t> copy(p.begin(), p.end());
  auto bytes = std::span<uint8_t>(copy);
  net::wire::put16(bytes, 10, 0);
  check(net::internet_checksum(bytes.first(ip->header_len)) == ip->checksum);
  auto l4 = bytes.subspan(ip->header_len);
  net::wire::put16(l4, 16, 0);
  const uint16_t sum = net::ipv4_pseudo_header(src, dst, 6, static_cast<uint16_t>(l4.size())).add(l4).finish();
  // RFC 1624 may give 0x0000 where a recomputation gives 0xffff only over all-zero data.
  check(sum == tcp->checksum);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const uint8_t mode = data[0] % 3;
  const std::span<const uint8_t> rest(data + 1, size - 1);
  if (mode == 0) {
    const TimePoint now = kT0 + std::chrono::seconds(rest[0]);  // expiry at +60 s is reachable
    fuzz_handler(std::string_view(reinterpret_cast<const char*>(rest.data() + 1), rest.size() - 1), now);
  } else if (mode == 1) {
    const net::Ipv4Address alias = alias_of(kSlot);
    std::vector<uint8_t> out(kMtu);
    auto n = nat_inbound(rest, out, kEni, alias);
    if (n.ok()) check_packet(std::span<const uint8_t>(out).first(*n), alias, kImdsAddress);
  } else {
    std::vector<uint8_t> pkt(rest.begin(), rest.end());
    auto o = nat_outbound_parse(pkt);
    if (o.ok()) {
      check(o->length <= pkt.size() && alias_of(o->slot) == net::parse_ipv4(pkt)->dst);
      auto p = std::span<uint8_t>(pkt).first(o->length);
      nat_outbound_rewrite(p, kEni);
      check_packet(p, kImdsAddress, kEni);
      check(p[8] == 1);
    }
  }
  return 0;
}
