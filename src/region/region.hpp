// azote-region's control plane: the EC2 Query API over HTTPS for many hosts, its state in
// etcd (src/region/DESIGN.md).
//
// A request goes: SigV4 (lib/sigv4) against the principals' access keys → the action and
// the resources it touches → the principal's policy (iam.hpp; explicit Deny wins) → the
// handler → EC2's XML (lib/ec2api). Every call, refused or not, is one record in the
// region's signed audit log.
//
// State (etcd, under Options::prefix; values are small JSON documents):
//   hosts/<host-id>          a registered host: its controller's endpoint, zone, capacity
//   alive/<host-id>          under the host's lease while it answers; its revision is the epoch
//   instances/<instance-id>  an instance's placement and what the region adds to the
//                            host's view: its reservation, owner, client token, tags
//   volumes/<volume-id>      a volume's host and zone, the device name it was given, tags
//   vpcs/, subnets/, security-groups/<id>   the region's VPCs (network.hpp); each host
//                            gets them pushed (ApplyRegionNetwork) with its instances' ENIs
// The instance's own state (pending, running, ...) is its host's: the region asks the
// host, never keeps a copy that could disagree.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "audit/log.hpp"
#include "etcd/client.hpp"
#include "region/https.hpp"
#include "region/iam.hpp"

namespace azote::region {

struct Options {
  std::string name = "us-east-1";      // the region's name (SigV4 scope, DescribeRegions)
  std::string account = "000000000000";  // the owner id in answers
  std::string prefix = "/azote/region/";
  std::string endpoint_name;           // for DescribeRegions: "https://127.0.0.1:8443"
  std::string hosts_dir;               // <state>/hosts/<id>/{ca,cert,key}.pem: credentials for each host
  // Each host's lease: held while the host answers the region's probes (every third of
  // it); a host silent for a whole lease is lost, and fences itself (controller/region_fence.hpp).
  std::chrono::milliseconds host_lease{30000};
  // etcd keeps every revision until compacted: the region compacts its history to the last
  // `retain_revisions` every `compact_every` (0: never; etcd's own --auto-compaction then).
  int64_t retain_revisions = 10000;
  std::chrono::seconds compact_every{300};
  // A terminated instance stays visible this long (EC2: about an hour), then its record goes.
  std::chrono::seconds terminated_retention{3600};
  // 32 random bytes, the region's fabric secret: each pair of hosts' fabric key is derived
  // from it (HKDF-SHA256); never stored in etcd. Empty: no fabric.
  std::string fabric_secret;
};

struct HostRec {
  std::string id, endpoint, zone;
  uint32_t vcpus = 0;
  uint64_t memory_mib = 0;
  // Its place on the fabric between hosts (none without an underlay): the address its
  // fabric process listens on ("IPV4:PORT") and its fabric host id (1, 2, ...), unique
  // in the region (register-host takes the next free one, fabric-ids/<n> in etcd).
  std::string underlay;
  uint32_t fabric_id = 0;
};

struct InstanceRec {
  std::string id, host, zone, reservation_id, owner_key, image_id, type, launch_time, client_token;
  bool terminated = false;  // by the region: its capacity is free again
  int64_t terminated_at = 0;  // unix seconds; the record goes `terminated_retention` later
  uint32_t vcpus = 0;
  uint64_t memory_mib = 0;
  std::vector<std::pair<std::string, std::string>> tags;
  // Its primary network interface as the region chose it (src/region/network.hpp):
  // subnet, private address, security groups. Empty for an instance without one.
  std::string subnet, ip;
  std::vector<std::string> groups;
};

class Region {
 public:
  Region(Options o, etcd::Client store, std::vector<Principal> principals, std::unique_ptr<audit::AuditLog> audit);
  ~Region();
  HttpResponse handle(const HttpRequest& req);
  // Lists the region's state from etcd and watches it from then on (a copy reads come
  // from); probes every registered host once (so that placement can use them at once),
  // then keeps doing so in the background until destroyed. A sentence if etcd cannot be
  // listed.
  Result<void, std::string> start();

  // For `azote-region register-host` (and tests): the host's record.
  static std::string host_json(const HostRec& h);
  // The host's fabric id: the one its record under `prefix` holds, else the lowest free
  // one (fabric-ids/<n>, created only if absent: two hosts never share one). A sentence
  // if etcd cannot be asked.
  static Result<uint32_t, std::string> fabric_id_for(etcd::Client& store, const std::string& prefix,
                                                     const std::string& host_id);

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace azote::region
