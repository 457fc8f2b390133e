// The controller's durable state in SQLite (WAL, synchronous=FULL): instances,
// volumes, images, client tokens, the card processes, and the VPC (VPCs, subnets,
// security groups with their rules, ENIs). The host keeps the same
// records in memory and writes each change through before it answers, so a
// controller restart finds exactly what callers were told.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "base/error.hpp"
#include "sqlite/sqlite.hpp"
#include "vpc_policy/security_group.hpp"

namespace azote::controller {

using Tags = std::vector<std::pair<std::string, std::string>>;

struct InstanceRec {
  std::string id, reservation_id, image_id, type, state, reason_code, reason_message, launch_time;
  uint32_t vcpus = 0;
  uint64_t memory_mib = 0;
  std::string user_data;
  Tags tags;
  std::string client_token;
  int64_t hv_pid = 0;            // 0: no hypervisor process
  uint64_t hv_starttime = 0;     // /proc/PID/stat field 22, to recognise the same process after a restart
  std::string http_tokens = "optional";  // the metadata service: "optional" or "required" (IMDSv2 only)
  // The key of its TPM's state (an image with TPM support), AES-256-GCM under the host
  // master key for "tpm:<id>"; made at its first launch, gone with the instance.
  std::vector<uint8_t> tpm_wrapped_key;
  // Enclaves may be carved from it (RunInstances --enclave-options Enabled=true), out of
  // a pool set aside from its type when it starts (nitro's allocator): its guest gets
  // vcpus - enclave_pool_cpus and memory_mib - enclave_pool_mib.
  bool enclave_enabled = false;
  uint32_t enclave_pool_cpus = 0;
  uint64_t enclave_pool_mib = 0;
};

struct VolumeRec {
  std::string id, type, state, create_time, client_token, file;
  uint32_t size_gib = 0, iops = 0, throughput_mbps = 0;
  bool encrypted = true;
  std::vector<uint8_t> wrapped_key;  // AES-256-GCM under the host master key; empty when not encrypted
  Tags tags;
  // Attachment (empty instance_id: none).
  std::string instance_id, device, attach_state;
  bool delete_on_termination = false;
  std::string import_from;  // content the card writes in before first use (an image's root content)
};

struct ImageRec {
  std::string id, name, description, kernel, kernel_sha256, initrd, initrd_sha256, cmdline, root_content,
      root_sha256, creation_date;
  uint32_t root_size_gib = 1;
  std::string tpm_support;  // "v2.0" or empty
};

struct TokenRec {
  std::string token, kind, request_hash, result;
};

struct CardRec {
  std::string name;
  int64_t pid = 0;
  uint64_t starttime = 0;
};

struct VpcRec {
  std::string id, cidr;  // "vpc-...", "10.0.0.0/16"
  bool is_default = false;
};

struct SubnetRec {
  std::string id, vpc_id, cidr, availability_zone;
  bool is_default = false;
};

struct SecurityGroupRec {
  std::string id, vpc_id, name, description;
  std::vector<vpc::Rule> ingress, egress;
};

// An instance's primary network interface. Lives from RunInstances to the end of
// TerminateInstances (stop/start keep it, and its address, as EC2 does).
struct EniRec {
  std::string id, instance_id, subnet_id, vpc_id, mac, private_ip;
  std::vector<std::string> groups;  // 1..5 security group ids
};

// The region's network as azote-region last pushed it (ApplyRegionNetwork): VPCs,
// subnets and groups beside the host's own, kept whole with their generation.
struct FabricPeerRec {
  uint32_t host_id = 0;
  std::string address;  // "IPV4:PORT"
  std::string key_hex;  // 64 hex digits
  uint32_t key_id = 0;
};
struct FabricMappingRec {
  std::string vpc_id, ip;
  uint32_t host_id = 0;
};
struct RegionNetworkRec {
  uint64_t generation = 0;
  uint32_t fabric_host_id = 0;  // 0: no fabric
  std::vector<FabricPeerRec> peers;
  std::vector<FabricMappingRec> mappings;
  std::vector<VpcRec> vpcs;
  std::vector<SubnetRec> subnets;
  std::vector<SecurityGroupRec> groups;
};

enum class StoreErrc { kDb = 1 };
using StoreError = Error<StoreErrc>;

class Store {
 public:
  static Result<Store, StoreError> open(const std::string& path);

  Result<std::vector<InstanceRec>, StoreError> instances();
  Result<std::vector<VolumeRec>, StoreError> volumes();
  Result<std::vector<ImageRec>, StoreError> images();
  Result<std::vector<TokenRec>, StoreError> tokens();
  Result<std::vector<CardRec>, StoreError> cards();
  Result<std::vector<VpcRec>, StoreError> vpcs();
  Result<std::vector<SubnetRec>, StoreError> subnets();
  Result<std::vector<SecurityGroupRec>, StoreError> security_groups();
  Result<std::vector<EniRec>, StoreError> enis();
  Result<RegionNetworkRec, StoreError> region_network();  // generation 0: none pushed yet
  Result<void, StoreError> put(const RegionNetworkRec& r);

  Result<void, StoreError> put(const InstanceRec& r);
  Result<void, StoreError> put(const VolumeRec& r);
  Result<void, StoreError> put(const ImageRec& r);
  Result<void, StoreError> put(const TokenRec& r);
  Result<void, StoreError> put(const CardRec& r);
  Result<void, StoreError> erase_card(const std::string& name);
  Result<void, StoreError> put(const SecurityGroupRec& r);
  Result<void, StoreError> put(const EniRec& r);
  Result<void, StoreError> erase_volume(const std::string& id);
  Result<void, StoreError> erase_security_group(const std::string& id);
  Result<void, StoreError> erase_eni(const std::string& id);
  // A VPC with its subnet and default group, all or nothing.
  Result<void, StoreError> put_network(const VpcRec& v, const SubnetRec& s, const SecurityGroupRec& g);

  // Several puts at once, all or nothing (a launch of N instances, their volumes, their
  // ENIs and the client token).
  Result<void, StoreError> put_all(const std::vector<InstanceRec>& is, const std::vector<VolumeRec>& vs,
                                   const std::optional<TokenRec>& token, const std::vector<EniRec>& enis = {});

 private:
  explicit Store(sqlite::Db db) : db_(std::move(db)) {}
  sqlite::Db db_;
};

}  // namespace azote::controller
