// The card's request processing, driven without a guest or a hypervisor: a MockDriver
// (lib/virtio/testing) lays out a virtqueue in a memfd-backed GuestMemory, the test
// hands the ring to BlkDevice::queue_started() as the vhost-user session would, kicks
// the eventfd, and checks the used ring, the status bytes, guest memory, the backing
// file and the counters. The store is a real file through io_uring, wrapped in a
// RecordingStore that logs every operation the workers hand it (kind, durable flag);
// the rate limiter runs on a fake clock, so throttling is deterministic.
#include "cards/blk/device.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstring>
#include <fstream>
#include <functional>
#include <future>
#include <mutex>
#include <thread>
#include <utility>

#include "cards/blk/file_store.hpp"
#include "vhost_user/session.hpp"
#include "virtio/testing/driver.hpp"

namespace azote::card_blk {
namespace {

using namespace std::chrono_literals;
using virtio::testing::MockDriver;
using virtio::testing::Seg;

constexpr uint16_t kQ = 64;
constexpr uint64_t kImageBytes = 4 << 20;
constexpr uint8_t kUnset = 0xee;

std::vector<uint8_t> key_bytes() {
  std::vector<uint8_t> k(64);
  for (size_t i = 0; i < 64; ++i) k[i] = static_cast<uint8_t>(0xa5 ^ (i * 29));
  return k;
}

std::vector<uint8_t> pattern(size_t n, uint32_t seed) {
  std::vector<uint8_t> d(n);
  uint32_t x = seed * 2654435761u + 1;
  for (auto& b : d) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    b = static_cast<uint8_t>(x);
  }
  return d;
}

std::vector<uint8_t> file_bytes(const std::string& path, uint64_t off, size_t n) {
  std::vector<uint8_t> out(n);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  EXPECT_EQ(::pread(fd, out.data(), n, static_cast<off_t>(off)), static_cast<ssize_t>(n));
  ::close(fd);
  return out;
}

// What the workers asked the store to do, in order (iov pointers are not kept).
struct OpRecord {
  StoreOpKind kind;
  uint64_t offset;
  bool durable;
};
class OpLog {
 public:
  void add(const StoreOp& op) {
    std::lock_guard l(mu_);
    ops_.push_back({op.kind, op.offset, op.durable});
  }
  std::vector<OpRecord> take() {
    std::lock_guard l(mu_);
    return std::exchange(ops_, {});
  }

 private:
  std::mutex mu_;
  std::vector<OpRecord> ops_;
};

class RecordingQueue final : public StoreQueue {
 public:
  RecordingQueue(std::unique_ptr<StoreQueue> inner, std::shared_ptr<OpLog> log)
      : inner_(std::move(inner)), log_(std::move(log)) {}
  uint32_t room() const override { return inner_->room(); }
  bool prepare(const StoreOp& op) override {
    if (!inner_->prepare(op)) return false;
    log_->add(op);
    return true;
  }
  uint32_t unsubmitted() const override { return inner_->unsubmitted(); }
  Result<uint32_t, StoreError> submit() override { return inner_->submit(); }
  uint32_t in_flight() const override { return inner_->in_flight(); }
  int completion_fd() const override { return inner_->completion_fd(); }
  uint32_t reap(std::span<StoreCompletion> out) override { return inner_->reap(out); }

 private:
  std::unique_ptr<StoreQueue> inner_;
  std::shared_ptr<OpLog> log_;
};

class RecordingStore final : public Store {
 public:
  RecordingStore(std::unique_ptr<Store> inner, std::shared_ptr<OpLog> log)
      : inner_(std::move(inner)), log_(std::move(log)) {}
  const StoreInfo& info() const override { return inner_->info(); }
  Result<std::unique_ptr<StoreQueue>, StoreError> open_queue(uint32_t depth) override {
    auto q = inner_->open_queue(depth);
    if (!q) return q;
    return std::unique_ptr<StoreQueue>(std::make_unique<RecordingQueue>(std::move(q).value(), log_));
  }

 private:
  std::unique_ptr<Store> inner_;
  std::shared_ptr<OpLog> log_;
};

// A store that takes operations and never completes them: a backing store that hangs
// (a dead NFS server, a failing disk). A stop then cannot finish in time.
class StuckQueue final : public StoreQueue {
 public:
  uint32_t room() const override { return kDepth - held_; }
  bool prepare(const StoreOp&) override {
    if (held_ >= kDepth) return false;
    ++held_;
    ++unsubmitted_;
    return true;
  }
  uint32_t unsubmitted() const override { return unsubmitted_; }
  Result<uint32_t, StoreError> submit() override { return std::exchange(unsubmitted_, 0); }
  uint32_t in_flight() const override { return held_ - unsubmitted_; }
  int completion_fd() const override { return done_.get(); }
  uint32_t reap(std::span<StoreCompletion>) override { return 0; }

 private:
  static constexpr uint32_t kDepth = 256;
  uint32_t held_ = 0, unsubmitted_ = 0;
  UniqueFd done_{::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)};  // never signalled
};

class StuckStore final : public Store {
 public:
  StuckStore() {
    info_.path = "stuck";
    info_.size_bytes = kImageBytes;
  }
  const StoreInfo& info() const override { return info_; }
  Result<std::unique_ptr<StoreQueue>, StoreError> open_queue(uint32_t) override {
    return std::unique_ptr<StoreQueue>(std::make_unique<StuckQueue>());
  }

 private:
  StoreInfo info_;
};

// Runs `f` on a thread of its own and waits at most `limit` for it. A call that does not
// come back cannot be cleaned up (its thread still uses the fixture): the test binary
// ends there, loudly, instead of hanging CTest until its timeout.
void returns_within(std::chrono::milliseconds limit, const char* what, const std::function<void()>& f) {
  auto done = std::make_shared<std::promise<void>>();
  auto fut = done->get_future();
  std::thread t([f, done] {
    f();
    done->set_value();
  });
  if (fut.wait_for(limit) != std::future_status::ready) {
    std::fprintf(stderr, "FATAL: %s did not return within %lld ms\n", what, static_cast<long long>(limit.count()));
    std::fflush(stderr);
    std::_Exit(1);
  }
  t.join();
}

class CardDevice : public ::testing::Test {
 protected:
  void SetUp() override {
    auto m = GuestMemory::create({{GuestAddress(0), 32 << 20}});
    ASSERT_TRUE(m);
    mem_ = std::make_unique<GuestMemory>(std::move(m).value());
    static int n = 0;
    path_ = ::testing::TempDir() + "/card-blk-device-" + std::to_string(::getpid()) + "-" + std::to_string(n++) + ".img";
    std::remove(path_.c_str());
    const auto init = pattern(kImageBytes, 77);  // not zeros: stale data must never be read as ours
    std::ofstream(path_, std::ios::binary).write(reinterpret_cast<const char*>(init.data()),  // NOLINT
                                                 static_cast<std::streamsize>(init.size()));
  }
  void TearDown() override {
    dev_.reset();
    vol_.reset();
    std::remove(path_.c_str());
  }

  void open(VolumeOptions o = {}, bool encrypted = false, bool direct = true) {
    o.socket = "/unused.sock";
    o.file = path_;
    if (o.serial.empty()) o.serial = "test-serial-01";
    auto s = FileStore::open(path_, o.read_only, direct);
    ASSERT_TRUE(s) << s.error().message();
    std::optional<XtsKey> key;
    if (encrypted) key = std::move(XtsKey::from_bytes(key_bytes())).value();
    auto store = std::make_unique<RecordingStore>(std::move(s).value(), ops_);
    auto v = Volume::create(o, std::move(store), std::move(key), clock_);
    ASSERT_TRUE(v) << v.error().message();
    vol_ = std::move(v).value();
    dev_ = std::make_unique<BlkDevice>(*vol_);
  }

  // A volume over `store` (no backing file involved).
  void open_store(std::unique_ptr<Store> store) {
    VolumeOptions o;
    o.socket = "/unused.sock";
    o.serial = "test-serial-01";
    auto v = Volume::create(o, std::move(store), std::nullopt, clock_);
    ASSERT_TRUE(v) << v.error().message();
    vol_ = std::move(v).value();
    dev_ = std::make_unique<BlkDevice>(*vol_);
  }

  // Starts queue 0 as the vhost-user session would after SET_VRING_* and ENABLE.
  void start(uint64_t drop_features = 0, vhost_user::InflightQueue* iq = nullptr, std::vector<uint16_t> resubmit = {},
             uint16_t next_avail = 0) {
    if (!drv_) drv_ = std::make_unique<MockDriver>(*mem_, kQ, GuestAddress(0x100000), 24 << 20);
    if (!kick_) {
      kick_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
      call_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    }
    vhost_user::VringInfo v;
    v.index = 0;
    v.size = kQ;
    v.next_avail = next_avail;
    v.desc = drv_->desc_addr();
    v.avail = drv_->avail_addr();
    v.used = drv_->used_addr();
    v.memory = mem_.get();
    v.kick_fd = kick_.get();
    v.call_fd = call_.get();
    v.inflight = iq;
    v.resubmit = std::move(resubmit);
    v.features = dev_->features() & ~drop_features;
    dev_->set_features(v.features);
    dev_->queue_started(v);
    ASSERT_TRUE(dev_->running(0));
  }

  void kick() {
    drv_->publish();
    const uint64_t one = 1;
    ASSERT_EQ(::write(kick_.get(), &one, sizeof one), 8);
  }

  struct Req {
    uint16_t head = 0;
    GuestAddress status;
  };
  // header -> data buffers -> status byte.
  Req add(uint32_t type, uint64_t sector, const std::vector<std::pair<GuestAddress, uint32_t>>& data,
          bool device_writes) {
    virtio::virtio_blk_req_hdr h{type, 0, sector};
    const GuestAddress hdr = drv_->alloc(16);
    drv_->write_obj(hdr, h);
    const GuestAddress st = drv_->alloc(1, 1);
    drv_->write_obj(st, kUnset);
    std::vector<Seg> segs{{hdr, 16, false}};
    for (const auto& [a, n] : data) segs.push_back({a, n, device_writes});
    segs.push_back({st, 1, true});
    auto head = drv_->add_chain(segs);
    EXPECT_TRUE(head.has_value());
    return {head.value_or(0), st};
  }
  GuestAddress put(const std::vector<uint8_t>& bytes, uint64_t align = 512) { return drv_->put(bytes, align); }
  std::vector<uint8_t> get(GuestAddress a, size_t n) {
    std::vector<uint8_t> out(n);
    EXPECT_TRUE(mem_->read(a, out));
    return out;
  }
  uint8_t status(const Req& r) { return drv_->read_obj<uint8_t>(r.status); }

  // Waits until `n` more used entries appeared (or 5 s passed).
  std::vector<virtio::virtq_used_elem> wait_used(size_t n, std::chrono::milliseconds timeout = 5000ms) {
    std::vector<virtio::virtq_used_elem> got;
    const auto end = std::chrono::steady_clock::now() + timeout;
    while (got.size() < n && std::chrono::steady_clock::now() < end) {
      for (const auto& e : drv_->take_used()) got.push_back(e);
      if (got.size() < n) std::this_thread::sleep_for(1ms);
    }
    return got;
  }
  // One request, start to finish: returns its status.
  uint8_t run(uint32_t type, uint64_t sector, const std::vector<std::pair<GuestAddress, uint32_t>>& data,
              bool device_writes, uint32_t* used_len = nullptr) {
    Req r = add(type, sector, data, device_writes);
    kick();
    auto u = wait_used(1);
    EXPECT_EQ(u.size(), 1u);
    if (u.empty()) return kUnset;
    EXPECT_EQ(u[0].id, r.head);
    if (used_len != nullptr) *used_len = u[0].len;
    return status(r);
  }
  uint64_t call_count() {
    uint64_t v = 0;
    return ::read(call_.get(), &v, sizeof v) == 8 ? v : 0;
  }

  rate_limit::FakeClock clock_;
  std::shared_ptr<OpLog> ops_ = std::make_shared<OpLog>();
  std::unique_ptr<GuestMemory> mem_;
  std::string path_;
  std::unique_ptr<Volume> vol_;
  std::unique_ptr<BlkDevice> dev_;
  std::unique_ptr<MockDriver> drv_;
  UniqueFd kick_, call_;
};

TEST_F(CardDevice, OffersWhatTheVolumeHas) {
  open();
  const uint64_t f = dev_->features();
  EXPECT_NE(f & virtio::feature_bit(virtio::kFVersion1), 0u);
  EXPECT_NE(f & virtio::feature_bit(virtio::kFRingEventIdx), 0u);
  EXPECT_NE(f & virtio::feature_bit(virtio::kBlkFFlush), 0u);
  EXPECT_NE(f & virtio::feature_bit(virtio::kBlkFDiscard), 0u);
  EXPECT_NE(f & virtio::feature_bit(virtio::kBlkFWriteZeroes), 0u);
  EXPECT_EQ(f & virtio::feature_bit(virtio::kBlkFRo), 0u);
  EXPECT_EQ(f & virtio::feature_bit(virtio::kBlkFMq), 0u);
  const uint64_t pf = dev_->protocol_features();
  for (unsigned b : {vhost_user::kPfMq, vhost_user::kPfConfig, vhost_user::kPfReplyAck, vhost_user::kPfInflightShmfd,
                     vhost_user::kPfResetDevice, vhost_user::kPfStatus})
    EXPECT_NE(pf & vhost_user::bit(b), 0u) << b;
  auto cfg = dev_->get_config(0, sizeof(virtio::virtio_blk_config));
  ASSERT_TRUE(cfg);
  virtio::virtio_blk_config c{};
  std::memcpy(&c, cfg->data(), sizeof c);
  EXPECT_EQ(c.capacity, kImageBytes / 512);
  EXPECT_EQ(c.seg_max, kMaxQueueSize - 2);
  EXPECT_FALSE(dev_->get_config(90, 8));  // past the end of virtio_blk_config
}

TEST_F(CardDevice, ReadOnlyAndEncryptedVolumesOfferLess) {
  VolumeOptions ro;
  ro.read_only = true;
  ro.queues = 4;
  open(ro);
  const uint64_t f = dev_->features();
  EXPECT_NE(f & virtio::feature_bit(virtio::kBlkFRo), 0u);
  EXPECT_NE(f & virtio::feature_bit(virtio::kBlkFMq), 0u);
  EXPECT_EQ(f & virtio::feature_bit(virtio::kBlkFDiscard), 0u);
  EXPECT_EQ(f & virtio::feature_bit(virtio::kBlkFWriteZeroes), 0u);
  EXPECT_EQ(dev_->num_queues(), 4u);
  dev_.reset();
  vol_.reset();
  open({}, /*encrypted=*/true);
  EXPECT_EQ(dev_->features() & virtio::feature_bit(virtio::kBlkFDiscard), 0u);  // discard would leak
  EXPECT_NE(dev_->features() & virtio::feature_bit(virtio::kBlkFWriteZeroes), 0u);
}

TEST_F(CardDevice, WriteThenReadZeroCopy) {
  open();
  if (!vol_->store_info().direct) GTEST_SKIP() << "SKIPPED: no O_DIRECT on the file system of " << path_;
  start();
  const auto data = pattern(8192, 1);
  const GuestAddress w = put(data);
  EXPECT_EQ(run(virtio::kBlkTOut, 10, {{w, 8192}}, false), virtio::kBlkSOk);
  EXPECT_EQ(file_bytes(path_, 10 * 512, 8192), data);
  const GuestAddress r = drv_->alloc(8192, 512);
  uint32_t len = 0;
  EXPECT_EQ(run(virtio::kBlkTIn, 10, {{r, 4096}, {r + 4096, 4096}}, true, &len), virtio::kBlkSOk);
  EXPECT_EQ(len, 8192u + 1);
  EXPECT_EQ(get(r, 8192), data);
  EXPECT_EQ(vol_->metrics().of(OpKind::kWrite).ops.load(), 1u);
  EXPECT_EQ(vol_->metrics().of(OpKind::kRead).bytes.load(), 8192u);
  EXPECT_EQ(vol_->metrics().of(OpKind::kRead).latency.count.load(), 1u);
  EXPECT_GT(call_count(), 0u);  // interrupts went through the call eventfd
}

TEST_F(CardDevice, MisalignedGuestBuffersGoThroughTheCard) {
  open();
  start();
  // Segments of 100 + 412 + 1024 bytes at odd addresses: O_DIRECT cannot take them.
  const auto data = pattern(1536, 2);
  const GuestAddress a = drv_->alloc(2000, 1) + 3;
  ASSERT_TRUE(mem_->write(a, data));
  EXPECT_EQ(run(virtio::kBlkTOut, 3, {{a, 100}, {a + 100, 412}, {a + 512, 1024}}, false), virtio::kBlkSOk);
  EXPECT_EQ(file_bytes(path_, 3 * 512, 1536), data);
  const GuestAddress b = drv_->alloc(2000, 1) + 5;
  EXPECT_EQ(run(virtio::kBlkTIn, 3, {{b, 1000}, {b + 1000, 536}}, true), virtio::kBlkSOk);
  EXPECT_EQ(get(b, 1536), data);
}

TEST_F(CardDevice, PageCachePath) {
  open({}, false, /*direct=*/false);
  EXPECT_FALSE(vol_->store_info().direct);
  start();
  const auto data = pattern(4096, 3);
  EXPECT_EQ(run(virtio::kBlkTOut, 0, {{put(data), 4096}}, false), virtio::kBlkSOk);
  const GuestAddress r = drv_->alloc(4096, 1) + 1;
  EXPECT_EQ(run(virtio::kBlkTIn, 0, {{r, 4096}}, true), virtio::kBlkSOk);
  EXPECT_EQ(get(r, 4096), data);
}

TEST_F(CardDevice, EncryptedVolumeStoresOnlyCiphertext) {
  open({}, /*encrypted=*/true);
  start();
  // 1 MiB + 1 KiB: more than one bounce chunk.
  const size_t n = (1 << 20) + 1024;
  const auto data = pattern(n, 4);
  const uint64_t sector = 100;
  EXPECT_EQ(run(virtio::kBlkTOut, sector, {{put(data), static_cast<uint32_t>(n)}}, false), virtio::kBlkSOk);
  const auto disk = file_bytes(path_, sector * 512, n);
  EXPECT_NE(disk, data);
  // Exactly AES-256-XTS with the sector number as tweak (checked against a direct EVP call).
  const auto key = key_bytes();
  for (uint64_t s : {0ull, 1ull, 511ull, 2049ull}) {
    uint8_t iv[16] = {};
    for (int i = 0; i < 8; ++i) iv[i] = static_cast<uint8_t>((sector + s) >> (8 * i));
    std::vector<uint8_t> expect(512);
    EVP_CIPHER_CTX* c = EVP_CIPHER_CTX_new();
    int outl = 0;
    ASSERT_EQ(EVP_EncryptInit_ex(c, EVP_aes_256_xts(), nullptr, key.data(), iv), 1);
    ASSERT_EQ(EVP_EncryptUpdate(c, expect.data(), &outl, data.data() + s * 512, 512), 1);
    EVP_CIPHER_CTX_free(c);
    EXPECT_EQ(std::vector<uint8_t>(disk.begin() + static_cast<long>(s * 512), disk.begin() + static_cast<long>(s * 512 + 512)),
              expect)
        << "sector " << sector + s;
  }
  // The guest reads its plaintext back, from several buffers.
  const GuestAddress r = drv_->alloc(n, 512);
  EXPECT_EQ(run(virtio::kBlkTIn, sector, {{r, 4096}, {r + 4096, static_cast<uint32_t>(n - 4096)}}, true),
            virtio::kBlkSOk);
  EXPECT_EQ(get(r, n), data);
  // Write zeroes on an encrypted volume: written out as encrypted zeros.
  virtio::virtio_blk_discard_write_zeroes seg{sector, 4, 0};
  const GuestAddress sg = drv_->alloc(16);
  drv_->write_obj(sg, seg);
  EXPECT_EQ(run(virtio::kBlkTWriteZeroes, 0, {{sg, 16}}, false), virtio::kBlkSOk);
  EXPECT_NE(file_bytes(path_, sector * 512, 2048), std::vector<uint8_t>(2048, 0));
  EXPECT_EQ(run(virtio::kBlkTIn, sector, {{r, 2048}}, true), virtio::kBlkSOk);
  EXPECT_EQ(get(r, 2048), std::vector<uint8_t>(2048, 0));
}

TEST_F(CardDevice, FlushDiscardWriteZeroesGetId) {
  open();
  start();
  EXPECT_EQ(run(virtio::kBlkTFlush, 0, {}, false), virtio::kBlkSOk);
  EXPECT_EQ(vol_->metrics().of(OpKind::kFlush).ops.load(), 1u);
  // Discard sectors 16..23, write-zeroes 40..47 and 64..71 (two segments).
  virtio::virtio_blk_discard_write_zeroes d{16, 8, 0};
  const GuestAddress da = drv_->alloc(16);
  drv_->write_obj(da, d);
  EXPECT_EQ(run(virtio::kBlkTDiscard, 0, {{da, 16}}, false), virtio::kBlkSOk);
  EXPECT_EQ(file_bytes(path_, 16 * 512, 4096), std::vector<uint8_t>(4096, 0));
  virtio::virtio_blk_discard_write_zeroes z[2] = {{40, 8, 0}, {64, 8, 0}};
  const GuestAddress za = drv_->alloc(32);
  drv_->write_obj(za, z);
  EXPECT_EQ(run(virtio::kBlkTWriteZeroes, 0, {{za, 32}}, false), virtio::kBlkSOk);
  EXPECT_EQ(file_bytes(path_, 40 * 512, 4096), std::vector<uint8_t>(4096, 0));
  EXPECT_EQ(file_bytes(path_, 64 * 512, 4096), std::vector<uint8_t>(4096, 0));
  EXPECT_NE(file_bytes(path_, 48 * 512, 512), std::vector<uint8_t>(512, 0));  // in between: untouched
  EXPECT_EQ(vol_->metrics().of(OpKind::kWriteZeroes).bytes.load(), 8192u);
  // GET_ID: the serial, NUL-padded to 20 bytes.
  const GuestAddress id = drv_->alloc(20);
  uint32_t len = 0;
  EXPECT_EQ(run(virtio::kBlkTGetId, 0, {{id, 20}}, true, &len), virtio::kBlkSOk);
  EXPECT_EQ(len, 21u);
  auto got = get(id, 20);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(got.data())), "test-serial-01");  // NOLINT
}

TEST_F(CardDevice, WriteZeroesFallsBackWhereZeroRangeIsUnsupported) {
  // tmpfs punches holes but has no FALLOC_FL_ZERO_RANGE.
  if (::access("/dev/shm", W_OK) != 0) GTEST_SKIP() << "SKIPPED: no writable /dev/shm (tmpfs)";
  std::remove(path_.c_str());
  path_ = "/dev/shm/card-blk-device-" + std::to_string(::getpid()) + ".img";
  const auto init = pattern(kImageBytes, 77);
  std::ofstream(path_, std::ios::binary).write(reinterpret_cast<const char*>(init.data()),  // NOLINT
                                               static_cast<std::streamsize>(init.size()));
  open();
  start();
  virtio::virtio_blk_discard_write_zeroes z{8, 600, 0};  // 300 KiB: more than one bounce chunk
  const GuestAddress za = drv_->alloc(16);
  drv_->write_obj(za, z);
  EXPECT_EQ(run(virtio::kBlkTWriteZeroes, 0, {{za, 16}}, false), virtio::kBlkSOk);
  EXPECT_TRUE(vol_->zero_range_unsupported.load());
  EXPECT_EQ(file_bytes(path_, 8 * 512, 600 * 512), std::vector<uint8_t>(600 * 512, 0));
  EXPECT_EQ(file_bytes(path_, 608 * 512, 512),
            std::vector<uint8_t>(init.begin() + 608 * 512, init.begin() + 609 * 512));  // untouched after it
  // Later ones go straight to written zeroes.
  z = {1000, 8, 0};
  drv_->write_obj(za, z);
  EXPECT_EQ(run(virtio::kBlkTWriteZeroes, 0, {{za, 16}}, false), virtio::kBlkSOk);
  EXPECT_EQ(file_bytes(path_, 1000 * 512, 4096), std::vector<uint8_t>(4096, 0));
}

TEST_F(CardDevice, GuestMistakesAreRejectedWithoutIo) {
  open();
  start();
  const auto before = file_bytes(path_, 0, kImageBytes);
  const GuestAddress buf = drv_->alloc(4096, 512);
  // Past the end; not a multiple of 512; unknown type; data in the wrong direction.
  EXPECT_EQ(run(virtio::kBlkTIn, kImageBytes / 512 - 1, {{buf, 1024}}, true), virtio::kBlkSIoErr);
  EXPECT_EQ(run(virtio::kBlkTOut, 0, {{buf, 100}}, false), virtio::kBlkSIoErr);
  EXPECT_EQ(run(42, 0, {{buf, 512}}, true), virtio::kBlkSUnsupp);
  EXPECT_EQ(run(virtio::kBlkTIn, 0, {{buf, 512}}, false), virtio::kBlkSIoErr);
  EXPECT_EQ(file_bytes(path_, 0, kImageBytes), before);
  const auto& m = vol_->metrics();
  EXPECT_EQ(m.rejects[static_cast<size_t>(virtio::BlkErrc::kOutOfRange)].load(), 1u);
  EXPECT_EQ(m.rejects[static_cast<size_t>(virtio::BlkErrc::kBadLength)].load(), 1u);
  EXPECT_EQ(m.rejects[static_cast<size_t>(virtio::BlkErrc::kUnsupported)].load(), 1u);
  EXPECT_EQ(m.rejects[static_cast<size_t>(virtio::BlkErrc::kBadLayout)].load(), 1u);
  EXPECT_EQ(m.queue_errors.load(), 0u);  // the queue goes on
  const auto data = pattern(512, 5);
  EXPECT_EQ(run(virtio::kBlkTOut, 1, {{put(data), 512}}, false), virtio::kBlkSOk);
}

TEST_F(CardDevice, ReadOnlyVolumeRefusesWrites) {
  VolumeOptions o;
  o.read_only = true;
  open(o);
  start();
  const auto before = file_bytes(path_, 0, 4096);
  const auto data = pattern(4096, 6);
  EXPECT_EQ(run(virtio::kBlkTOut, 0, {{put(data), 4096}}, false), virtio::kBlkSIoErr);
  EXPECT_EQ(file_bytes(path_, 0, 4096), before);
  const GuestAddress r = drv_->alloc(4096, 512);
  EXPECT_EQ(run(virtio::kBlkTIn, 0, {{r, 4096}}, true), virtio::kBlkSOk);
  EXPECT_EQ(get(r, 4096), before);
  EXPECT_EQ(vol_->metrics().rejects[static_cast<size_t>(virtio::BlkErrc::kReadOnly)].load(), 1u);
}

TEST_F(CardDevice, ManyRequestsInFlightWithEventIdx) {
  open();
  start();
  // 21 reads of 4 KiB (63 of the 64 descriptors), all published with one kick; the
  // driver asks for an interrupt only at the last one (EVENT_IDX used_event).
  drv_->set_used_event(20);
  std::vector<Req> reqs;
  for (int i = 0; i < 21; ++i)
    reqs.push_back(add(virtio::kBlkTIn, static_cast<uint64_t>(i) * 8, {{drv_->alloc(4096, 512), 4096}}, true));
  kick();
  auto u = wait_used(21);
  ASSERT_EQ(u.size(), 21u);
  for (const auto& r : reqs) EXPECT_EQ(status(r), virtio::kBlkSOk);
  EXPECT_EQ(vol_->metrics().of(OpKind::kRead).ops.load(), 21u);
  std::this_thread::sleep_for(20ms);
  EXPECT_GE(call_count(), 1u);
}

TEST_F(CardDevice, RateLimitDelaysButNeverDrops) {
  VolumeOptions o;
  o.iops = 10;
  o.burst_ms = 100;  // a bucket of one request
  open(o);
  start();
  for (int i = 0; i < 3; ++i) add(virtio::kBlkTIn, 0, {{drv_->alloc(512, 512), 512}}, true);
  kick();
  EXPECT_EQ(wait_used(1).size(), 1u);
  EXPECT_EQ(wait_used(1, 100ms).size(), 0u);  // the fake clock stands still: nothing more
  EXPECT_EQ(vol_->metrics().throttled.load(), 1u);
  clock_.advance(100ms);
  const uint64_t one = 1;
  ASSERT_EQ(::write(kick_.get(), &one, 8), 8);  // any wakeup re-checks (the timerfd would, in real time)
  EXPECT_EQ(wait_used(1).size(), 1u);
  clock_.advance(100ms);
  ASSERT_EQ(::write(kick_.get(), &one, 8), 8);
  EXPECT_EQ(wait_used(1).size(), 1u);
  EXPECT_EQ(vol_->metrics().of(OpKind::kRead).ops.load(), 3u);
  EXPECT_GE(vol_->metrics().throttle_wait_ns.load(), 200'000'000u);
}

TEST_F(CardDevice, StopCompletesThrottledRequestsAndChargesTheLimiter) {
  std::vector<uint64_t> area(vhost_user::inflight_queue_bytes(kQ) / 8, 0);
  vhost_user::InflightQueue iq(reinterpret_cast<uint8_t*>(area.data()), kQ);  // NOLINT
  iq.initialize();
  VolumeOptions o;
  o.iops = 1;
  o.burst_ms = 1000;
  open(o);
  start(0, &iq);
  for (int i = 0; i < 4; ++i) add(virtio::kBlkTIn, 0, {{drv_->alloc(512, 512), 512}}, true);
  kick();
  EXPECT_EQ(wait_used(1).size(), 1u);
  // GET_VRING_BASE (or a disable, a memory table change...): everything taken completes,
  // so the inflight area is clean and a later start cannot resubmit stale heads.
  EXPECT_EQ(dev_->queue_stopped(0), 4);
  EXPECT_EQ(wait_used(3, 100ms).size(), 3u);
  EXPECT_EQ(iq.count_inflight(), 0u);
  // The three were charged: the bucket is 3 requests in debt, so the next waits 4 s.
  start(0, &iq, {}, 4);
  add(virtio::kBlkTIn, 0, {{drv_->alloc(512, 512), 512}}, true);
  kick();
  EXPECT_EQ(wait_used(1, 100ms).size(), 0u);
  clock_.advance(3900ms);
  const uint64_t one = 1;
  ASSERT_EQ(::write(kick_.get(), &one, 8), 8);
  EXPECT_EQ(wait_used(1, 100ms).size(), 0u);
  clock_.advance(100ms);
  ASSERT_EQ(::write(kick_.get(), &one, 8), 8);
  EXPECT_EQ(wait_used(1).size(), 1u);
  (void)dev_->queue_stopped(0);  // before `iq` goes out of scope
}

TEST_F(CardDevice, RestartResubmitsWhatADeadProcessLeftInFlight) {
  // The inflight area as the vhost-user session keeps it (GET_INFLIGHT_FD).
  std::vector<uint64_t> area(vhost_user::inflight_queue_bytes(kQ) / 8, 0);
  vhost_user::InflightQueue iq(reinterpret_cast<uint8_t*>(area.data()), kQ);  // NOLINT
  iq.initialize();
  open();
  // Three requests on the ring; a previous card process took the first two (marked them)
  // and died before completing them.
  drv_ = std::make_unique<MockDriver>(*mem_, kQ, GuestAddress(0x100000), 24 << 20);
  std::vector<Req> reqs;
  std::vector<GuestAddress> bufs;
  for (uint64_t i = 0; i < 3; ++i) {
    bufs.push_back(drv_->alloc(512, 512));
    reqs.push_back(add(virtio::kBlkTIn, i, {{bufs.back(), 512}}, true));
  }
  drv_->publish();
  ASSERT_TRUE(iq.begin(reqs[0].head));
  ASSERT_TRUE(iq.begin(reqs[1].head));
  // The new process starts as Session::start() does: recovery, resubmission first.
  auto rec = iq.recover(drv_->used_idx(), kQ);
  EXPECT_EQ(rec.heads, (std::vector<uint16_t>{reqs[0].head, reqs[1].head}));
  EXPECT_EQ(rec.next_avail, 2);
  start(0, &iq, rec.heads, rec.next_avail);
  auto u = wait_used(3);
  ASSERT_EQ(u.size(), 3u);
  EXPECT_EQ(u[0].id, reqs[0].head);
  EXPECT_EQ(u[1].id, reqs[1].head);
  EXPECT_EQ(u[2].id, reqs[2].head);  // then the ring, from next_avail
  for (const auto& r : reqs) EXPECT_EQ(status(r), virtio::kBlkSOk);
  EXPECT_EQ(iq.count_inflight(), 0u);
  EXPECT_EQ(vol_->metrics().resubmitted.load(), 2u);
  const auto init = pattern(kImageBytes, 77);
  for (size_t i = 0; i < 3; ++i)
    EXPECT_EQ(get(bufs[i], 512), std::vector<uint8_t>(init.begin() + static_cast<long>(i * 512),
                                                      init.begin() + static_cast<long>(i * 512 + 512)));
  (void)dev_->queue_stopped(0);  // before `iq` goes out of scope
}

TEST_F(CardDevice, HostileDriverBreaksOnlyItsQueue) {
  open();
  start();
  // avail->idx far ahead of anything the queue can hold.
  drv_->set_avail_idx(1000);
  const uint64_t one = 1;
  ASSERT_EQ(::write(kick_.get(), &one, 8), 8);
  for (int i = 0; i < 500 && vol_->metrics().queue_errors.load() == 0; ++i) std::this_thread::sleep_for(1ms);
  EXPECT_EQ(vol_->metrics().queue_errors.load(), 1u);
  EXPECT_EQ(dev_->queue_stopped(0), 0);  // the worker stops cleanly
  // A reset driver gets a working queue again.
  drv_.reset();
  start();
  const auto data = pattern(512, 8);
  EXPECT_EQ(run(virtio::kBlkTOut, 5, {{put(data), 512}}, false), virtio::kBlkSOk);
}

// DEVICE_NEEDS_RESET through the vhost-user session (GET_STATUS), as azote-hv asks for
// it when the guest reads its Status register: a driver that hands the card a buffer
// outside guest memory breaks its queue, the device then reports NEEDS_RESET next to
// the status the driver set, and a device reset (SET_STATUS 0, RESET_DEVICE) or a new
// connection ends it; the next driver's queue works.
TEST_F(CardDevice, BrokenQueueNeedsResetUntilTheDeviceIsReset) {
  open();
  vhost_user::Session session(*dev_);
  auto send = [&](vhost_user::Request r, uint64_t value, bool has_value) -> std::optional<uint64_t> {
    std::vector<uint8_t> p;
    if (has_value) {
      p.resize(8);
      std::memcpy(p.data(), &value, 8);
    }
    vhost_user::Header h{static_cast<uint32_t>(r), vhost_user::kVersion, static_cast<uint32_t>(p.size())};
    auto res = session.handle(h, p, {});
    EXPECT_TRUE(res) << vhost_user::request_name(r) << ": " << (res ? "" : res.error().message());
    if (!res || !*res) return std::nullopt;
    return vhost_user::load<uint64_t>((*res)->payload);
  };
  auto get_status = [&] { return send(vhost_user::Request::kGetStatus, 0, false).value_or(0xdead); };
  auto set_status = [&](uint64_t v) { (void)send(vhost_user::Request::kSetStatus, v, true); };
  // Out of the driver's 32 MiB, as a hostile driver would point it.
  auto break_queue = [&] {
    const uint64_t errors = vol_->metrics().queue_errors.load();
    (void)add(virtio::kBlkTIn, 0, {{GuestAddress(64 << 20), 4096}}, true);
    kick();
    for (int i = 0; i < 2000 && vol_->metrics().queue_errors.load() == errors; ++i) std::this_thread::sleep_for(1ms);
    EXPECT_EQ(vol_->metrics().queue_errors.load(), errors + 1);
  };
  using vhost_user::bit;
  (void)send(vhost_user::Request::kSetProtocolFeatures,
             bit(vhost_user::kPfConfig) | bit(vhost_user::kPfResetDevice) | bit(vhost_user::kPfStatus), true);
  constexpr uint64_t kRunning = 1 | 2 | 8 | 4;  // ACKNOWLEDGE, DRIVER, FEATURES_OK, DRIVER_OK
  set_status(kRunning);
  EXPECT_EQ(get_status(), kRunning);
  EXPECT_FALSE(dev_->needs_reset());

  start();
  const auto data = pattern(512, 31);
  EXPECT_EQ(run(virtio::kBlkTOut, 2, {{put(data), 512}}, false), virtio::kBlkSOk);
  EXPECT_EQ(get_status(), kRunning);  // a working queue: nothing to report
  break_queue();
  EXPECT_TRUE(dev_->needs_reset());
  EXPECT_EQ(get_status(), kRunning | 0x40);
  EXPECT_EQ(vol_->metrics().needs_reset.load(), 1u);
  set_status(kRunning | 0x40);  // echoed back by a frontend: NEEDS_RESET stays the device's
  EXPECT_EQ(session.status(), kRunning);
  // Still reported while the driver has not reset: stopping the queue is not enough.
  (void)dev_->queue_stopped(0);
  EXPECT_EQ(get_status(), kRunning | 0x40);

  set_status(0);  // the driver's reset, forwarded as the status it wrote
  EXPECT_FALSE(dev_->needs_reset());
  EXPECT_EQ(get_status(), 0u);
  EXPECT_EQ(vol_->metrics().needs_reset.load(), 0u);
  drv_.reset();  // the driver sets its queue up anew
  start();
  EXPECT_EQ(run(virtio::kBlkTOut, 3, {{put(data), 512}}, false), virtio::kBlkSOk);
  EXPECT_EQ(get_status(), 0u);

  // RESET_DEVICE ends it the same way, and so does a new connection.
  break_queue();
  EXPECT_EQ(get_status(), 0x40u);
  (void)dev_->queue_stopped(0);
  (void)send(vhost_user::Request::kResetDevice, 0, false);
  EXPECT_FALSE(dev_->needs_reset());
  drv_.reset();
  start();
  break_queue();
  EXPECT_TRUE(dev_->needs_reset());
  (void)dev_->queue_stopped(0);
  session.reset();
  EXPECT_FALSE(dev_->needs_reset());
  EXPECT_EQ(vol_->metrics().queue_errors.load(), 3u);  // every break counted
}

TEST_F(CardDevice, SameHeadTwiceWhileInFlight) {
  VolumeOptions o;
  o.iops = 1;
  o.burst_ms = 1000;
  open(o);
  start();
  const Req a = add(virtio::kBlkTIn, 0, {{drv_->alloc(512, 512), 512}}, true);
  const Req b = add(virtio::kBlkTIn, 1, {{drv_->alloc(512, 512), 512}}, true);
  kick();
  ASSERT_EQ(wait_used(1).size(), 1u);  // a done, b throttled (ours until completed)
  drv_->set_avail_entry(2, b.head);    // b again
  drv_->set_avail_idx(3);
  const uint64_t one = 1;
  ASSERT_EQ(::write(kick_.get(), &one, 8), 8);
  for (int i = 0; i < 500 && vol_->metrics().queue_errors.load() == 0; ++i) std::this_thread::sleep_for(1ms);
  EXPECT_EQ(vol_->metrics().queue_errors.load(), 1u);
  clock_.advance(2s);
  ASSERT_EQ(::write(kick_.get(), &one, 8), 8);
  auto u = wait_used(1);
  ASSERT_EQ(u.size(), 1u);  // b completes once
  EXPECT_EQ(u[0].id, b.head);
  EXPECT_EQ(status(a), virtio::kBlkSOk);
}

// ---- cache mode (VIRTIO_BLK_F_CONFIG_WCE) ---------------------------------------------

constexpr uint32_t kWritebackOffset = offsetof(virtio::virtio_blk_config, writeback);

std::vector<OpRecord> of_kind(const std::vector<OpRecord>& ops, StoreOpKind k) {
  std::vector<OpRecord> out;
  for (const auto& o : ops)
    if (o.kind == k) out.push_back(o);
  return out;
}

TEST_F(CardDevice, ConfigWceOfferedWithWritebackReported) {
  open();
  EXPECT_NE(dev_->features() & virtio::feature_bit(virtio::kBlkFConfigWce), 0u);
  EXPECT_NE(dev_->features() & virtio::feature_bit(virtio::kBlkFFlush), 0u);
  auto wb = dev_->get_config(kWritebackOffset, 1);
  ASSERT_TRUE(wb);
  EXPECT_EQ(*wb, std::vector<uint8_t>{1});  // write-back, today's behaviour, by default
  auto all = dev_->get_config(0, sizeof(virtio::virtio_blk_config));
  ASSERT_TRUE(all);
  EXPECT_EQ((*all)[kWritebackOffset], 1);
  EXPECT_EQ((*all)[kWritebackOffset + 1], 0);  // unused0
  EXPECT_FALSE(dev_->write_through());
  EXPECT_EQ(vol_->metrics().write_cache_writeback.load(), 1u);
  // A read-only volume has no cache mode to choose: not offered, not writable.
  dev_.reset();
  vol_.reset();
  VolumeOptions ro;
  ro.read_only = true;
  open(ro);
  EXPECT_EQ(dev_->features() & virtio::feature_bit(virtio::kBlkFConfigWce), 0u);
  EXPECT_EQ(*dev_->get_config(kWritebackOffset, 1), std::vector<uint8_t>{0});
  const uint8_t zero = 0;
  EXPECT_FALSE(dev_->set_config(kWritebackOffset, std::span(&zero, 1), 0));
  EXPECT_EQ(vol_->metrics().config_write_refusals.load(), 1u);
}

TEST_F(CardDevice, WriteThroughWritesAreDurable) {
  open();
  start();
  // Write-back: plain writes, FLUSH for durability.
  const auto a = pattern(4096, 20);
  EXPECT_EQ(run(virtio::kBlkTOut, 8, {{put(a), 4096}}, false), virtio::kBlkSOk);
  auto ops = of_kind(ops_->take(), StoreOpKind::kWrite);
  ASSERT_EQ(ops.size(), 1u);
  EXPECT_FALSE(ops[0].durable);
  // The driver writes writeback = 0: write-through, and the config space says so.
  const uint8_t zero = 0;
  ASSERT_TRUE(dev_->set_config(kWritebackOffset, std::span(&zero, 1), 0));
  EXPECT_TRUE(dev_->write_through());
  EXPECT_EQ(*dev_->get_config(kWritebackOffset, 1), std::vector<uint8_t>{0});
  EXPECT_EQ(vol_->metrics().write_cache_writeback.load(), 0u);
  // Zero-copy (or page-cache) write and a misaligned one through a bounce buffer:
  // every store write carries RWF_DSYNC.
  const auto b = pattern(8192, 21);
  EXPECT_EQ(run(virtio::kBlkTOut, 16, {{put(b), 8192}}, false), virtio::kBlkSOk);
  const auto c = pattern(1536, 22);
  const GuestAddress odd = drv_->alloc(2000, 1) + 3;
  ASSERT_TRUE(mem_->write(odd, c));
  EXPECT_EQ(run(virtio::kBlkTOut, 40, {{odd, 100}, {odd + 100, 1436}}, false), virtio::kBlkSOk);
  ops = ops_->take();
  const auto writes = of_kind(ops, StoreOpKind::kWrite);
  ASSERT_GE(writes.size(), 2u);
  for (const auto& w : writes) EXPECT_TRUE(w.durable) << "write at " << w.offset;
  EXPECT_EQ(file_bytes(path_, 16 * 512, 8192), b);
  EXPECT_EQ(file_bytes(path_, 40 * 512, 1536), c);
  EXPECT_EQ(vol_->metrics().write_through_writes.load(), 2u);
  EXPECT_EQ(vol_->metrics().of(OpKind::kWrite).ops.load(), 3u);
  // Reads are untouched, and FLUSH still works.
  const GuestAddress r = drv_->alloc(8192, 512);
  EXPECT_EQ(run(virtio::kBlkTIn, 16, {{r, 8192}}, true), virtio::kBlkSOk);
  EXPECT_EQ(get(r, 8192), b);
  EXPECT_EQ(run(virtio::kBlkTFlush, 0, {}, false), virtio::kBlkSOk);
  // WRITE_ZEROES as a ZERO_RANGE has no per-write FUA: an fdatasync follows it before
  // the request completes.
  ops_->take();
  virtio::virtio_blk_discard_write_zeroes z{64, 8, 0};
  const GuestAddress za = drv_->alloc(16);
  drv_->write_obj(za, z);
  EXPECT_EQ(run(virtio::kBlkTWriteZeroes, 0, {{za, 16}}, false), virtio::kBlkSOk);
  EXPECT_EQ(file_bytes(path_, 64 * 512, 4096), std::vector<uint8_t>(4096, 0));
  ops = ops_->take();
  if (!vol_->zero_range_unsupported.load()) {
    ASSERT_EQ(ops.size(), 2u);
    EXPECT_EQ(ops[0].kind, StoreOpKind::kZeroRange);
    EXPECT_EQ(ops[1].kind, StoreOpKind::kFlush);
  } else {  // a file system without ZERO_RANGE: zeros written out, durably
    const auto zw = of_kind(ops, StoreOpKind::kWrite);
    ASSERT_FALSE(zw.empty());
    for (const auto& w : zw) EXPECT_TRUE(w.durable);
  }
  // Back to write-back: plain writes again.
  const uint8_t one = 1;
  ASSERT_TRUE(dev_->set_config(kWritebackOffset, std::span(&one, 1), 0));
  EXPECT_EQ(run(virtio::kBlkTOut, 8, {{put(a), 4096}}, false), virtio::kBlkSOk);
  ops = of_kind(ops_->take(), StoreOpKind::kWrite);
  ASSERT_EQ(ops.size(), 1u);
  EXPECT_FALSE(ops[0].durable);
  EXPECT_EQ(vol_->metrics().write_through_writes.load(), 2u);
  EXPECT_EQ(vol_->metrics().write_cache_writeback.load(), 1u);
}

TEST_F(CardDevice, WriteThroughOnAnEncryptedVolume) {
  open({}, /*encrypted=*/true);
  start();
  const uint8_t zero = 0;
  ASSERT_TRUE(dev_->set_config(kWritebackOffset, std::span(&zero, 1), 0));
  const size_t n = (256 << 10) + 4096;  // two bounce chunks
  const auto data = pattern(n, 23);
  EXPECT_EQ(run(virtio::kBlkTOut, 200, {{put(data), static_cast<uint32_t>(n)}}, false), virtio::kBlkSOk);
  const auto writes = of_kind(ops_->take(), StoreOpKind::kWrite);
  ASSERT_EQ(writes.size(), 2u);
  for (const auto& w : writes) EXPECT_TRUE(w.durable) << "chunk at " << w.offset;
  EXPECT_NE(file_bytes(path_, 200 * 512, n), data);  // ciphertext on disk
  const GuestAddress r = drv_->alloc(n, 512);
  EXPECT_EQ(run(virtio::kBlkTIn, 200, {{r, static_cast<uint32_t>(n)}}, true), virtio::kBlkSOk);
  EXPECT_EQ(get(r, n), data);
  EXPECT_EQ(vol_->metrics().write_through_writes.load(), 1u);
}

TEST_F(CardDevice, OnlyTheWritebackByteIsWritable) {
  open();
  const auto before = dev_->get_config(0, sizeof(virtio::virtio_blk_config));
  ASSERT_TRUE(before);
  const std::vector<uint8_t> eight(8, 0), two{0, 0};
  const uint8_t zero = 0, bad = 2;
  EXPECT_FALSE(dev_->set_config(0, eight, 0));                                 // capacity
  EXPECT_FALSE(dev_->set_config(kWritebackOffset, two, 0));                    // writeback + unused0
  EXPECT_FALSE(dev_->set_config(kWritebackOffset - 1, two, 0));                // topology + writeback
  EXPECT_FALSE(dev_->set_config(kWritebackOffset + 1, std::span(&zero, 1), 0));  // unused0
  EXPECT_FALSE(dev_->set_config(34, std::span(&zero, 1), 0));                  // num_queues
  EXPECT_FALSE(dev_->set_config(kWritebackOffset, std::span(&bad, 1), 0));     // not 0 or 1
  EXPECT_FALSE(dev_->set_config(kWritebackOffset, std::span(&zero, 1), 1));    // live migration
  EXPECT_FALSE(dev_->set_config(kWritebackOffset, {}, 0));                     // nothing
  EXPECT_EQ(vol_->metrics().config_write_refusals.load(), 8u);
  EXPECT_FALSE(dev_->write_through());
  EXPECT_EQ(*dev_->get_config(0, sizeof(virtio::virtio_blk_config)), *before);
}

// Through the vhost-user session, as the frontend's messages arrive: SET_CONFIG of the
// writeback byte switches the mode (ACK), a refused write is a NACK that keeps the
// connection, and RESET_DEVICE and a disconnect each return to write-back.
TEST_F(CardDevice, ResetAndNewConnectionReturnToWriteBack) {
  open();
  vhost_user::Session session(*dev_);
  auto send = [&](vhost_user::Request r, std::vector<uint8_t> payload, bool ack = true) -> std::optional<uint64_t> {
    vhost_user::Header h{static_cast<uint32_t>(r), vhost_user::kVersion | (ack ? vhost_user::kFlagNeedReply : 0u),
                         static_cast<uint32_t>(payload.size())};
    auto res = session.handle(h, payload, {});
    EXPECT_TRUE(res) << vhost_user::request_name(r) << ": " << (res ? "" : res.error().message());
    if (!res || !*res) return std::nullopt;
    return vhost_user::load<uint64_t>((*res)->payload);
  };
  auto u64 = [](uint64_t v) {
    std::vector<uint8_t> b(8);
    std::memcpy(b.data(), &v, 8);
    return b;
  };
  auto set_writeback = [&](uint32_t offset, std::vector<uint8_t> bytes) {
    vhost_user::ConfigHeader ch{offset, static_cast<uint32_t>(bytes.size()), 0};
    std::vector<uint8_t> p(sizeof ch);
    std::memcpy(p.data(), &ch, sizeof ch);
    p.insert(p.end(), bytes.begin(), bytes.end());
    return send(vhost_user::Request::kSetConfig, p);
  };
  using vhost_user::bit;
  ASSERT_FALSE(send(vhost_user::Request::kSetProtocolFeatures,
                    u64(bit(vhost_user::kPfReplyAck) | bit(vhost_user::kPfConfig) | bit(vhost_user::kPfResetDevice)),
                    false));
  EXPECT_EQ(set_writeback(kWritebackOffset, {0}), 0u);  // ACK
  EXPECT_TRUE(dev_->write_through());
  EXPECT_EQ(set_writeback(0, {1, 2, 3, 4}), 1u);  // NACK: capacity is read-only
  EXPECT_TRUE(dev_->write_through());            // and nothing else changed
  EXPECT_EQ(send(vhost_user::Request::kResetDevice, {}), 0u);
  EXPECT_FALSE(dev_->write_through());
  EXPECT_EQ(*dev_->get_config(kWritebackOffset, 1), std::vector<uint8_t>{1});
  EXPECT_EQ(vol_->metrics().write_cache_writeback.load(), 1u);
  // Write-back again after the reset: the next driver's writes are plain ones.
  start();
  const auto a = pattern(512, 24);
  EXPECT_EQ(run(virtio::kBlkTOut, 1, {{put(a), 512}}, false), virtio::kBlkSOk);
  auto ops = of_kind(ops_->take(), StoreOpKind::kWrite);
  ASSERT_EQ(ops.size(), 1u);
  EXPECT_FALSE(ops[0].durable);
  (void)dev_->queue_stopped(0);
  // A new connection starts from write-back too.
  EXPECT_EQ(set_writeback(kWritebackOffset, {0}), 0u);
  EXPECT_TRUE(dev_->write_through());
  session.reset();  // the frontend went away
  EXPECT_FALSE(dev_->write_through());
  EXPECT_EQ(vol_->metrics().config_write_refusals.load(), 1u);
}

// A frontend's kick fd may be a semaphore eventfd (EFD_SEMAPHORE: each read takes 1)
// holding ~2^63. A worker that reads until EAGAIN would read forever and the control
// thread joining it would hang with it, stalling every volume of the card. Handed over
// here without a session (as on a kernel whose fdinfo cannot tell a semaphore eventfd
// apart): the worker reads the kick once per wakeup, keeps serving and sees its stop.
TEST_F(CardDevice, SemaphoreKickWithAHugeCountStillStops) {
  open();
  kick_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK | EFD_SEMAPHORE));
  call_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  const uint64_t huge = (uint64_t{1} << 63);
  ASSERT_EQ(::write(kick_.get(), &huge, sizeof huge), 8);
  start();
  const auto data = pattern(512, 31);
  returns_within(10s, "a request on a queue with a semaphore kick", [&] {
    EXPECT_EQ(run(virtio::kBlkTOut, 7, {{put(data), 512}}, false), virtio::kBlkSOk);
  });
  EXPECT_EQ(file_bytes(path_, 7 * 512, 512), data);
  returns_within(2s, "queue_stopped() of a worker with a semaphore kick", [&] { (void)dev_->queue_stopped(0); });
  EXPECT_FALSE(dev_->running(0));
}

// A stop waits for the store operations already running (the kernel may be writing into
// guest memory the session unmaps next), but not forever: a store that never completes
// would hold the control thread, and with it every volume of the card. Past the
// deadline the card says which queue did not stop and exits with kExitStuckWorker (75)
// so its supervisor restarts it; the inflight area keeps the heads for the next process.
TEST_F(CardDevice, StopThatCannotFinishEndsTheCard) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        // Without a deadline the stop below never returns: end the child differently.
        std::thread([] {
          std::this_thread::sleep_for(20s);
          std::_Exit(3);
        }).detach();
        open_store(std::make_unique<StuckStore>());
        start();
        add(virtio::kBlkTIn, 0, {{drv_->alloc(512, 512), 512}}, true);
        kick();
        std::this_thread::sleep_for(100ms);  // taken and handed to the store by now
        (void)dev_->queue_stopped(0);
        std::_Exit(0);
      },
      ::testing::ExitedWithCode(75), "queue 0 did not stop within");
}

}  // namespace
}  // namespace azote::card_blk
