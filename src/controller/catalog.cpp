#include "controller/catalog.hpp"

#include <sys/random.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <ctime>

#include "base/hex.hpp"

namespace azote::controller {
namespace {

// vCPU and memory as EC2 sells them; network and EBS figures are the "up to" values
// EC2 publishes for each size, used here as the limits the cards enforce; packets per
// second are azote's own figure (catalog.hpp).
constexpr std::array<InstanceType, 15> kTypes = {{
    {"t3.nano", 2, 512, 5000, 2085, 11800, 5000 * kPpsPerMbps},
    {"t3.micro", 2, 1024, 5000, 2085, 11800, 5000 * kPpsPerMbps},
    {"t3.small", 2, 2048, 5000, 2085, 11800, 5000 * kPpsPerMbps},
    {"t3.medium", 2, 4096, 5000, 2085, 11800, 5000 * kPpsPerMbps},
    {"t3.large", 2, 8192, 5000, 2780, 15700, 5000 * kPpsPerMbps},
    {"t3.xlarge", 4, 16384, 5000, 2780, 15700, 5000 * kPpsPerMbps},
    {"t3.2xlarge", 8, 32768, 5000, 2780, 15700, 5000 * kPpsPerMbps},
    {"m5.large", 2, 8192, 10000, 4750, 18750, 10000 * kPpsPerMbps},
    {"m5.xlarge", 4, 16384, 10000, 4750, 18750, 10000 * kPpsPerMbps},
    {"m5.2xlarge", 8, 32768, 10000, 4750, 18750, 10000 * kPpsPerMbps},
    {"m5.4xlarge", 16, 65536, 10000, 4750, 18750, 10000 * kPpsPerMbps},
    {"c5.large", 2, 4096, 10000, 4750, 20000, 10000 * kPpsPerMbps},
    {"c5.xlarge", 4, 8192, 10000, 4750, 20000, 10000 * kPpsPerMbps},
    {"c5.2xlarge", 8, 16384, 10000, 4750, 20000, 10000 * kPpsPerMbps},
    {"c5.4xlarge", 16, 32768, 10000, 4750, 20000, 10000 * kPpsPerMbps},
}};

std::string num(uint64_t v) { return std::to_string(v); }

}  // namespace

std::span<const InstanceType> instance_types() { return kTypes; }

const InstanceType* find_instance_type(std::string_view name) {
  for (const auto& t : kTypes)
    if (t.name == name) return &t;
  return nullptr;
}

std::optional<std::string> complete_volume_spec(VolumeSpec* v, bool iops_given, bool throughput_given) {
  if (v->type.empty()) v->type = kDefaultVolumeType;
  const std::string& t = v->type;
  auto size_range = [&](uint32_t lo, uint32_t hi) -> std::optional<std::string> {
    if (v->size_gib < lo || v->size_gib > hi)
      return "volume size " + num(v->size_gib) + " GiB is outside " + num(lo) + "-" + num(hi) + " GiB for " + t;
    return std::nullopt;
  };
  if (t == "gp3") {
    if (auto e = size_range(1, 16384)) return e;
    if (!iops_given) v->iops = 3000;
    if (!throughput_given) v->throughput_mbps = 125;
    if (v->iops < 3000 || v->iops > 16000) return "iops " + num(v->iops) + " is outside 3000-16000 for gp3";
    if (v->throughput_mbps < 125 || v->throughput_mbps > 1000)
      return "throughput " + num(v->throughput_mbps) + " MB/s is outside 125-1000 for gp3";
    if (v->iops > 500ull * v->size_gib && v->iops > 3000)
      return "iops " + num(v->iops) + " exceeds 500 per GiB for a " + num(v->size_gib) + " GiB gp3 volume";
    return std::nullopt;
  }
  if (throughput_given) return "throughput can only be set for gp3 volumes";
  if (t == "gp2") {
    if (auto e = size_range(1, 16384)) return e;
    if (iops_given) return "iops cannot be set for gp2 volumes (it is 3 per GiB)";
    v->iops = static_cast<uint32_t>(std::min<uint64_t>(16000, std::max<uint64_t>(100, 3ull * v->size_gib)));
    v->throughput_mbps = 250;
    return std::nullopt;
  }
  if (t == "io1" || t == "io2") {
    if (auto e = size_range(4, 16384)) return e;
    if (!iops_given) return "iops is required for " + t + " volumes";
    const uint64_t per_gib = t == "io1" ? 50 : 500;
    if (v->iops < 100 || v->iops > 64000) return "iops " + num(v->iops) + " is outside 100-64000 for " + t;
    if (v->iops > per_gib * v->size_gib)
      return "iops " + num(v->iops) + " exceeds " + num(per_gib) + " per GiB for a " + num(v->size_gib) + " GiB " + t +
             " volume";
    v->throughput_mbps = 1000;
    return std::nullopt;
  }
  if (t == "standard") {
    if (auto e = size_range(1, 1024)) return e;
    if (iops_given) return "iops cannot be set for standard volumes";
    v->iops = 200;
    v->throughput_mbps = 90;
    return std::nullopt;
  }
  return "volume type \"" + t + "\" does not exist (gp2, gp3, io1, io2, standard)";
}

std::string new_id(std::string_view prefix) {
  uint8_t b[9];
  if (::getrandom(b, sizeof b, 0) != static_cast<ssize_t>(sizeof b)) std::abort();  // the kernel's CSPRNG never fails for 9 bytes
  static constexpr char kHex[] = "0123456789abcdef";
  std::string id(prefix);
  id += '-';
  for (int i = 0; i < 17; ++i) id += kHex[(b[i / 2] >> ((i % 2) * 4)) & 0xf];
  return id;
}

bool valid_id(std::string_view id, std::string_view prefix) { return valid_resource_id(id, prefix); }

std::string image_id_from_hash(std::string_view sha256_hex) { return "ami-" + std::string(sha256_hex.substr(0, 17)); }

std::string now_rfc3339() { return rfc3339(std::chrono::system_clock::now()); }

std::string rfc3339(std::chrono::system_clock::time_point when) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(when.time_since_epoch()).count();
  const time_t secs = static_cast<time_t>(ms / 1000);
  tm t{};
  gmtime_r(&secs, &t);
  char buf[80];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", t.tm_year + 1900, t.tm_mon + 1, t.tm_mday,
                t.tm_hour, t.tm_min, t.tm_sec, static_cast<int>(ms % 1000));
  return buf;
}

}  // namespace azote::controller
