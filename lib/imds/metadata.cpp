#include "imds/metadata.hpp"

namespace azote::imds {
namespace {

constexpr size_t kMaxText = 255;

bool text_ok(const std::string& s) {
  if (s.size() > kMaxText) return false;
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) return false;
  }
  return true;
}

}  // namespace

const char* to_string(ImdsErrc c) {
  switch (c) {
    case ImdsErrc::kBadOptions: return "bad_options";
    case ImdsErrc::kNamespace: return "namespace";
    case ImdsErrc::kTun: return "tun";
    case ImdsErrc::kRoute: return "route";
    case ImdsErrc::kSocket: return "socket";
    case ImdsErrc::kHttp: return "http";
    case ImdsErrc::kThread: return "thread";
    case ImdsErrc::kCrypto: return "crypto";
    case ImdsErrc::kBadMetadata: return "bad_metadata";
    case ImdsErrc::kFull: return "full";
    case ImdsErrc::kNoSlot: return "no_slot";
  }
  return "?";
}

Result<CheckedMetadata, ImdsError> check_metadata(const InstanceMetadata& md) {
  auto ip = net::Ipv4Address::parse(md.local_ipv4);
  if (!ip.ok()) return make_error(ImdsErrc::kBadMetadata, "local_ipv4 \"" + md.local_ipv4 + "\"");
  if (ip->is_any() || ip->is_broadcast() || ip->is_multicast() || ip->is_loopback() || ip->is_link_local()) {
    return make_error(ImdsErrc::kBadMetadata, "local_ipv4 " + md.local_ipv4 + " cannot be an ENI's address");
  }
  auto mac = net::MacAddress::parse(md.mac);
  if (!mac.ok() || !mac->is_unicast() || mac->is_zero()) {
    return make_error(ImdsErrc::kBadMetadata, "mac \"" + md.mac + "\"");
  }
  const std::pair<const char*, const std::string*> texts[] = {
      {"instance_id", &md.instance_id},     {"instance_type", &md.instance_type},
      {"ami_id", &md.ami_id},               {"hostname", &md.hostname},
      {"local_hostname", &md.local_hostname}, {"availability_zone", &md.availability_zone},
      {"region", &md.region},               {"account_id", &md.account_id},
      {"pending_time", &md.pending_time},
  };
  for (const auto& [name, value] : texts) {
    if (!text_ok(*value)) return make_error(ImdsErrc::kBadMetadata, std::string(name) + ": control character or over 255 bytes");
  }
  if (md.security_groups.size() > 16) return make_error(ImdsErrc::kBadMetadata, "over 16 security groups");
  for (const auto& g : md.security_groups) {
    if (!text_ok(g) || g.empty()) return make_error(ImdsErrc::kBadMetadata, "security group name");
  }
  if (md.user_data.size() > kMaxUserData) {
    return make_error(ImdsErrc::kBadMetadata, "user data of " + std::to_string(md.user_data.size()) + " bytes (at most 16384)");
  }
  return CheckedMetadata{md, *ip, mac->to_string()};
}

}  // namespace azote::imds
