// Hosts joining the region by themselves (DESIGN.md "Hosts joining"): the one-time
// enrolment tokens and the request a host's controller POSTs to /azote/enrol. Pure: the
// region's handler (region.cpp) consumes the token in etcd and registers the host.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "base/result.hpp"

namespace azote::region {

// A fresh token: 32 random bytes as 64 hex digits (empty if the kernel gives no randomness).
std::string new_enrolment_token();
// What etcd keeps of a token (enrolment/<digest>): its SHA-256, hex. The token itself is
// never stored.
std::string enrolment_digest(std::string_view token);

struct EnrolForm {
  std::string token, host_id, zone, endpoint, underlay, ca_pem, cert_pem, key_pem;
  uint32_t vcpus = 0;
  uint64_t memory_mib = 0;
};
// The JSON body of a host's enrolment, every field checked (a sentence naming the bad
// one otherwise): host id 1-64 of [A-Za-z0-9_-], zone 1-64 printable, endpoint unix:PATH or
// HOST:PORT, underlay IPV4:PORT or absent, capacity non-zero, three PEM blocks of at most
// 16 KiB each. At most 64 KiB in all.
Result<EnrolForm, std::string> parse_enrol(std::string_view body);

}  // namespace azote::region
