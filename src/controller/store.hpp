// The controller's durable state in SQLite (WAL, synchronous=FULL): instances,
// volumes, images, client tokens and the card process. The host keeps the same
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
};

struct TokenRec {
  std::string token, kind, request_hash, result;
};

struct CardRec {
  std::string name;
  int64_t pid = 0;
  uint64_t starttime = 0;
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

  Result<void, StoreError> put(const InstanceRec& r);
  Result<void, StoreError> put(const VolumeRec& r);
  Result<void, StoreError> put(const ImageRec& r);
  Result<void, StoreError> put(const TokenRec& r);
  Result<void, StoreError> put(const CardRec& r);
  Result<void, StoreError> erase_volume(const std::string& id);

  // Several puts at once, all or nothing (a launch of N instances, their volumes and
  // the client token).
  Result<void, StoreError> put_all(const std::vector<InstanceRec>& is, const std::vector<VolumeRec>& vs,
                                   const std::optional<TokenRec>& token);

 private:
  explicit Store(sqlite::Db db) : db_(std::move(db)) {}
  sqlite::Db db_;
};

}  // namespace azote::controller
