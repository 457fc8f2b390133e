// What the host offers, as the EC2 API names it: instance types, volume types, the
// ids of instances, volumes, images and reservations, and the state names. Pure data
// and validation; nothing here touches the system.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace azote::controller {

struct InstanceType {
  std::string_view name;
  uint32_t vcpus;
  uint64_t memory_mib;
  uint32_t network_mbps;  // Mbit/s
  uint32_t ebs_mbps;      // Mbit/s
  uint32_t ebs_iops;
  // Packets per second the network card allows the instance's primary interface. EC2
  // publishes no per-type figure (it enforces undisclosed PPS allowances); azote's is
  // 50 packets/s per Mbit/s of network bandwidth: 250,000 for the 5 Gbit/s types,
  // 500,000 for the 10 Gbit/s ones (line rate at ~2,500-byte averages, and headroom
  // for small packets). See catalog.cpp.
  uint32_t network_pps;
};
inline constexpr uint32_t kPpsPerMbps = 50;
std::span<const InstanceType> instance_types();
// Burstable types (the t families) share CPUs (--capacity-vcpus, overcommitted); every
// other type is sold as dedicated vCPUs, 1:1 with the host's guest CPUs by default.
inline bool burstable(const InstanceType& t) { return !t.name.empty() && t.name[0] == 't'; }
const InstanceType* find_instance_type(std::string_view name);
inline constexpr std::string_view kDefaultInstanceType = "t3.micro";

struct VolumeSpec {
  std::string type;
  uint32_t size_gib = 0;
  uint32_t iops = 0;
  uint32_t throughput_mbps = 0;  // MB/s
};
// Fills in the defaults of a volume type and checks the limits EC2 documents for it
// (sizes, IOPS, throughput, IOPS per GiB). The error is the sentence of an
// InvalidParameterValue.
std::optional<std::string> complete_volume_spec(VolumeSpec* v, bool iops_given, bool throughput_given);
inline constexpr std::string_view kDefaultVolumeType = "gp3";

// "i-" / "vol-" / "r-" + 17 random lowercase hex digits.
std::string new_id(std::string_view prefix);
// True when `id` is prefix + 17 (or 8, EC2's older form) lowercase hex digits.
bool valid_id(std::string_view id, std::string_view prefix);
// "ami-" + the first 17 hex digits of a SHA-256 (content-addressed images).
std::string image_id_from_hash(std::string_view sha256_hex);
inline constexpr std::string_view kBuiltinImageId = "ami-builtin";

inline constexpr size_t kMaxUserDataBytes = 16 * 1024;
inline constexpr uint32_t kMaxCount = 64;
inline constexpr size_t kMaxTags = 50;

// Instance states (EC2 names).
namespace state {
inline constexpr std::string_view kPending = "pending";
inline constexpr std::string_view kRunning = "running";
inline constexpr std::string_view kStopping = "stopping";
inline constexpr std::string_view kStopped = "stopped";
inline constexpr std::string_view kShuttingDown = "shutting-down";
inline constexpr std::string_view kTerminated = "terminated";
}  // namespace state

// RFC 3339 UTC with milliseconds, now or at `when`.
std::string now_rfc3339();
std::string rfc3339(std::chrono::system_clock::time_point when);

}  // namespace azote::controller
