#include "fabric/geneve.hpp"

#include <array>

namespace azote::fabric {
namespace {

Unexpected<FabricError> err(FabricErrc c, const char* what) { return make_error(c, what); }

uint32_t be32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}
void put32(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v >> 24);
  p[1] = static_cast<uint8_t>(v >> 16);
  p[2] = static_cast<uint8_t>(v >> 8);
  p[3] = static_cast<uint8_t>(v);
}

}  // namespace

Result<GeneveView, FabricError> parse_geneve(std::span<const uint8_t> p) {
  if (p.size() < kGeneveBaseLen) return err(FabricErrc::kTruncated, "geneve: shorter than its 8-byte header");
  if ((p[0] >> 6) != 0) return err(FabricErrc::kBadVersion, "geneve: version is not 0");
  const size_t opt_len = static_cast<size_t>(p[0] & 0x3f) * 4;
  if (p.size() < kGeneveBaseLen + opt_len) return err(FabricErrc::kTruncated, "geneve: options past the end");
  const uint16_t proto = static_cast<uint16_t>(p[2] << 8 | p[3]);
  if (proto != kProtoEthernet) return err(FabricErrc::kBadProtocol, "geneve: protocol type is not 0x6558");
  GeneveView v;
  v.oam = (p[1] & 0x80) != 0;
  v.critical = (p[1] & 0x40) != 0;
  v.vni = (uint32_t{p[4]} << 16) | (uint32_t{p[5]} << 8) | p[6];
  v.header = p.subspan(0, kGeneveBaseLen + opt_len);
  v.options = p.subspan(kGeneveBaseLen, opt_len);
  v.payload = p.subspan(kGeneveBaseLen + opt_len);
  bool any_critical = false;
  size_t at = 0;
  while (at < opt_len) {
    if (opt_len - at < kOptionHeaderLen) return err(FabricErrc::kBadLength, "geneve: option header past the option area");
    const size_t len = kOptionHeaderLen + static_cast<size_t>(v.options[at + 3] & 0x1f) * 4;
    if (len > opt_len - at) return err(FabricErrc::kBadLength, "geneve: option data past the option area");
    if ((v.options[at + 2] & kCriticalType) != 0) any_critical = true;
    at += len;
  }
  if (any_critical != v.critical) return err(FabricErrc::kBadCriticalBit, "geneve: C bit disagrees with the options");
  return v;
}

std::optional<GeneveOption> next_option(std::span<const uint8_t> options, size_t* at) {
  if (*at + kOptionHeaderLen > options.size()) return std::nullopt;
  const uint8_t* o = options.data() + *at;
  const size_t data_len = static_cast<size_t>(o[3] & 0x1f) * 4;
  if (*at + kOptionHeaderLen + data_len > options.size()) return std::nullopt;
  GeneveOption g;
  g.cls = static_cast<uint16_t>(o[0] << 8 | o[1]);
  g.type = o[2];
  g.data = options.subspan(*at + kOptionHeaderLen, data_len);
  *at += kOptionHeaderLen + data_len;
  return g;
}

Result<size_t, FabricError> build_geneve(std::span<uint8_t> out, uint32_t vni, std::span<const GeneveOption> options,
                                         bool oam) {
  if (vni > kMaxVni) return err(FabricErrc::kBadConfig, "geneve: VNI over 24 bits");
  size_t opt_len = 0;
  bool critical = false;
  for (const auto& o : options) {
    if (o.data.size() % 4 != 0 || o.data.size() > kMaxOptionDataLen)
      return err(FabricErrc::kBadLength, "geneve: option data not a multiple of 4 bytes up to 124");
    opt_len += kOptionHeaderLen + o.data.size();
    critical = critical || o.critical();
  }
  if (opt_len > kMaxOptionsLen) return err(FabricErrc::kBadLength, "geneve: options over 252 bytes");
  if (out.size() < kGeneveBaseLen + opt_len) return err(FabricErrc::kNoSpace, "geneve: output buffer too small");
  uint8_t* p = out.data();
  p[0] = static_cast<uint8_t>(opt_len / 4);
  p[1] = static_cast<uint8_t>((oam ? 0x80 : 0) | (critical ? 0x40 : 0));
  p[2] = kProtoEthernet >> 8;
  p[3] = kProtoEthernet & 0xff;
  p[4] = static_cast<uint8_t>(vni >> 16);
  p[5] = static_cast<uint8_t>(vni >> 8);
  p[6] = static_cast<uint8_t>(vni);
  p[7] = 0;
  size_t at = kGeneveBaseLen;
  for (const auto& o : options) {
    p[at] = static_cast<uint8_t>(o.cls >> 8);
    p[at + 1] = static_cast<uint8_t>(o.cls);
    p[at + 2] = o.type;
    p[at + 3] = static_cast<uint8_t>(o.data.size() / 4);
    for (size_t i = 0; i < o.data.size(); ++i) p[at + kOptionHeaderLen + i] = o.data[i];
    at += kOptionHeaderLen + o.data.size();
  }
  return at;
}

Result<SecurityOption, FabricError> find_security_option(const GeneveView& v) {
  std::optional<SecurityOption> found;
  size_t at = 0;
  while (auto o = next_option(v.options, &at)) {
    if (o->cls != kAzoteOptionClass) {
      if (o->critical()) return err(FabricErrc::kCriticalOption, "geneve: unknown critical option");
      continue;  // non-critical options of others are skipped (RFC 8926 §3.5)
    }
    const uint8_t t = o->type & 0x7f;
    if (!o->critical() || (t != kTypeSealed && t != kTypePlaintext) || o->data.size() != kSecurityDataLen)
      return err(FabricErrc::kBadOption, "geneve: azote option of the wrong type or length");
    if (found) return err(FabricErrc::kBadOption, "geneve: azote option repeated");
    const uint8_t* d = o->data.data();
    found = SecurityOption{t == kTypeSealed, be32(d), be32(d + 4), uint64_t{be32(d + 8)} << 32 | be32(d + 12)};
  }
  if (!found) return err(FabricErrc::kBadOption, "geneve: no azote option");
  return *found;
}

Result<size_t, FabricError> build_fabric_header(std::span<uint8_t> out, uint32_t vni, const SecurityOption& s) {
  std::array<uint8_t, kSecurityDataLen> d{};
  put32(d.data(), s.sender);
  put32(d.data() + 4, s.key_id);
  put32(d.data() + 8, static_cast<uint32_t>(s.seq >> 32));
  put32(d.data() + 12, static_cast<uint32_t>(s.seq));
  const GeneveOption o{kAzoteOptionClass,
                       static_cast<uint8_t>(kCriticalType | (s.sealed ? kTypeSealed : kTypePlaintext)), d};
  return build_geneve(out, vni, std::span(&o, 1));
}

}  // namespace azote::fabric
