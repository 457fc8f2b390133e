// A host joining azote-region by itself (`azote-controller --join URL --enrolment-token T
// --region-ca FILE --zone Z`): once, at the controller's start, before it serves.
//
// The controller issues, from its own CA, the control-plane certificate named "region"
// (service.hpp kRegionPrincipal) that the region will call it with, and POSTs it with the
// host's endpoint, zone, capacity and underlay to URL/azote/enrol over HTTPS (libcurl),
// trusting only the region's CA. The region consumes the one-time token, keeps the
// credential and registers the host (src/region/DESIGN.md "Hosts joining"). The answer is
// saved as <state>/region.json: a later start with the same flags does not enrol again.
#pragma once

#include <cstdint>
#include <string>

#include "base/error.hpp"
#include "pki/pki.hpp"

namespace azote::controller {

struct EnrolRequest {
  std::string url;        // https://HOST:PORT of azote-region
  std::string token;      // from `azote-region create-enrolment-token`
  std::string region_ca;  // a PEM file: the region's CA (its <state>/pki/ca.crt)
  std::string host_id, zone, endpoint, underlay;
  uint32_t vcpus = 0;
  uint64_t memory_mib = 0;
};

enum class EnrolErrc { kRefused = 1, kTransport, kLocal };
using EnrolError = Error<EnrolErrc>;

// Enrols unless <state_dir>/region.json says this host already has; the region's answer
// ({"host_id", "fabric_id", "region"}) as JSON text. kRefused carries the region's own
// sentence (a bad, used or expired token...).
Result<std::string, EnrolError> enrol_once(const std::string& state_dir, const pki::HostPki& pki, const EnrolRequest& r);

}  // namespace azote::controller
