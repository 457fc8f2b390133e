#include "cards/blk/volume.hpp"

#include <cstdio>

#include "base/log.hpp"
#include "cards/blk/file_store.hpp"

namespace azote::card_blk {
namespace {

uint64_t burst(uint64_t rate, uint32_t burst_ms) {
  if (rate == 0) return 0;
  const auto b = static_cast<uint64_t>(static_cast<unsigned __int128>(rate) * burst_ms / 1000);
  return b == 0 ? 1 : b;
}

}  // namespace

std::string default_serial(const StoreInfo& info) {
  // FNV-1a over (dev, ino).
  uint64_t h = 0xcbf29ce484222325ull;
  auto mix = [&h](uint64_t v) {
    for (int i = 0; i < 8; ++i) {
      h ^= (v >> (8 * i)) & 0xff;
      h *= 0x100000001b3ull;
    }
  };
  mix(static_cast<uint64_t>(info.dev));
  mix(static_cast<uint64_t>(info.ino));
  char b[24];
  std::snprintf(b, sizeof b, "az%016llx", static_cast<unsigned long long>(h));
  return b;
}

Result<std::unique_ptr<Volume>, VolumeError> Volume::open(const VolumeOptions& o, const rate_limit::Clock& clock,
                                                          bool allow_direct) {
  // The key first: a bad key must not leave a locked file behind for nothing.
  std::optional<XtsKey> key;
  if (!o.key_bytes.empty()) {
    auto k = XtsKey::from_bytes(o.key_bytes);
    if (!k) return make_error(VolumeErrc::kKey, o.origin + ": " + k.error().message());
    key = std::move(k).value();
  } else if (!o.key_file.empty()) {
    auto k = XtsKey::load(o.key_file);
    if (!k) return make_error(VolumeErrc::kKey, o.origin + ": " + k.error().message());
    key = std::move(k).value();
  }
  auto s = FileStore::open(o.file, o.read_only, allow_direct);
  if (!s) return make_error(VolumeErrc::kFile, o.origin + ": " + s.error().message());
  return create(o, std::move(s).value(), std::move(key), clock);
}

Result<std::unique_ptr<Volume>, VolumeError> Volume::create(const VolumeOptions& o, std::unique_ptr<Store> store,
                                                            std::optional<XtsKey> key,
                                                            const rate_limit::Clock& clock) {
  rate_limit::LimiterConfig lc;
  lc.ops_per_sec = o.iops;
  lc.ops_burst = burst(o.iops, o.burst_ms);
  lc.bytes_per_sec = o.mbps * 1'000'000;
  lc.bytes_burst = burst(lc.bytes_per_sec, o.burst_ms);
  std::unique_ptr<Volume> v(new Volume(clock, lc));
  v->store_ = std::move(store);
  v->key_ = std::move(key);
  const StoreInfo& info = v->store_->info();

  VolumeParams& p = v->params_;
  p.name = o.serial.empty() ? default_serial(info) : o.serial;
  p.socket = o.socket;
  p.queues = o.queues;
  p.read_only = o.read_only || info.read_only;
  p.encrypted = v->key_.has_value();
  // Punching holes in an encrypted volume tells whoever holds the file which blocks
  // are unused (as dm-crypt's allow_discards does): off unless asked for.
  p.discard = !p.read_only && o.discard.value_or(!p.encrypted);

  v->blk_ = virtio::BlkConfig(info.size_bytes / 512);
  v->blk_.seg_max(kMaxQueueSize - 2)
      .num_queues(static_cast<uint16_t>(o.queues))
      .read_only(p.read_only)
      .flush(true);
  if (p.discard) v->blk_.discard(kDiscardMaxSectors, kDiscardMaxSegments, 8);
  if (!p.read_only) v->blk_.write_zeroes(kWriteZeroesMaxSectors, kWriteZeroesMaxSegments, false);
  // The driver chooses write-back or write-through (FUA on every write); there is no
  // cache mode to choose for a volume it cannot write.
  if (!p.read_only) v->blk_.config_wce(true);

  for (uint32_t i = 0; i < o.queues; ++i) {
    auto q = v->store_->open_queue(kMaxQueueSize);
    if (!q) return make_error(VolumeErrc::kHost, o.origin + ": queue " + std::to_string(i) + ": " + q.error().message());
    v->queues_.push_back(std::move(q).value());
  }
  LOG_INFO("volume %s: socket=%s file=%s capacity=%llu sectors%s%s%s%s queues=%u%s", p.name.c_str(), p.socket.c_str(),
           info.path.c_str(), static_cast<unsigned long long>(v->blk_.capacity()), p.read_only ? " read-only" : "",
           p.encrypted ? " aes-xts-256" : "", info.direct ? " O_DIRECT" : " page-cache", p.discard ? " discard" : "",
           p.queues, o.iops != 0 || o.mbps != 0 ? (" iops=" + std::to_string(o.iops) + " mbps=" + std::to_string(o.mbps)).c_str() : "");
  return v;
}

}  // namespace azote::card_blk
