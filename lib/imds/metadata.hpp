// What one instance sees at 169.254.169.254: the metadata of the ENI's instance, per slot.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/result.hpp"
#include "imds/error.hpp"
#include "net/addr.hpp"

namespace azote::imds {

// EC2 caps user data at 16 KiB (before base64); so does this service.
inline constexpr size_t kMaxUserData = 16 * 1024;

struct InstanceMetadata {
  std::string instance_id;        // "i-0123456789abcdef0"
  std::string instance_type;      // "t3.micro"
  std::string ami_id;             // "ami-..."
  std::string local_ipv4;         // the ENI's address, "10.0.1.5": also the NAT's guest side
  std::string mac;                // the ENI's MAC, "02:00:0a:00:01:05"
  std::string hostname;           // "ip-10-0-1-5.eu-west-1.compute.internal"
  std::string local_hostname;
  std::string availability_zone;  // "eu-west-1a"
  std::string region;             // "eu-west-1"
  std::string account_id;         // "123456789012"
  std::vector<std::string> security_groups;  // group names
  std::vector<uint8_t> user_data;            // empty: /latest/user-data is 404
  bool http_tokens_required = true;          // false: IMDSv1 (no token) is also answered
  std::string pending_time;                  // ISO 8601, for the identity document; optional
};

// What the service derives from the metadata once, when it is added or updated.
struct CheckedMetadata {
  InstanceMetadata md;
  net::Ipv4Address eni;  // local_ipv4 parsed
  std::string mac;       // lower-case canonical text form
};

// kBadMetadata: local_ipv4 or mac does not parse, the address is unusable (0.0.0.0,
// broadcast, multicast, loopback, 169.254/16), a text field holds a control character or
// is over 255 bytes, or user data is over kMaxUserData.
Result<CheckedMetadata, ImdsError> check_metadata(const InstanceMetadata& md);

}  // namespace azote::imds
