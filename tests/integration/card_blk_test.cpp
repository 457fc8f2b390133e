// azote-card-blk end to end: the real card binary serving volumes to the real azote-hv
// running the built-in guest's block programs (blk-check, blk-bench), plus the test
// itself acting as a vhost-user frontend (lib/vhost_user Frontend + the virtio
// MockDriver) where a guest program cannot show what matters: reading an encrypted
// image back, and a card killed and restarted with requests in flight.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <regex>
#include <thread>

#include "control/control.hpp"
#include "guest_memory/guest_memory.hpp"
#include "process.hpp"
#include "vhost_user/frontend.hpp"
#include "virtio/spec.hpp"
#include "virtio/testing/driver.hpp"

namespace azote::test {
namespace {

using namespace std::chrono_literals;

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ::chmod(path.c_str(), 0600);
}

std::string random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

// The built-in guest's blk-check pattern (guest/blk_programs.cpp, guest/README.md):
// 64-bit word i of sector s is mix(seed ^ (s << 6 | i)), little-endian.
uint64_t mix(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return x;
}
std::string guest_sector(uint64_t seed, uint64_t sector) {
  std::string s(512, '\0');
  for (uint64_t i = 0; i < 64; ++i) {
    const uint64_t w = mix(seed ^ ((sector << 6) | i));
    std::memcpy(s.data() + i * 8, &w, 8);
  }
  return s;
}
std::optional<uint64_t> seed_of(const std::string& out) {
  std::smatch m;
  if (!std::regex_search(out, m, std::regex("blk-check seed=0x([0-9a-f]{16})"))) return std::nullopt;
  return std::stoull(m[1], nullptr, 16);
}

std::string fetch_metrics(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::memcpy(a.sun_path, path.data(), std::min(path.size(), sizeof a.sun_path - 1));
  std::string out;
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a) == 0) {  // NOLINT(reinterpret-cast)
    char buf[8192];
    for (;;) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 3000) <= 0) break;
      const ssize_t n = ::read(fd, buf, sizeof buf);
      if (n <= 0) break;
      out.append(buf, static_cast<size_t>(n));
    }
  }
  ::close(fd);
  return out;
}

// The value of the first sample whose name and labels start with `prefix`.
uint64_t metric(const std::string& text, const std::string& prefix) {
  size_t p = text.find("\n" + prefix);
  if (p == std::string::npos) return ~0ull;
  p = text.find("} ", p);
  return p == std::string::npos ? ~0ull : std::stoull(text.substr(p + 2));
}

// A vhost-user frontend driving one queue of a card directly, for what no guest
// program shows. Reads only.
class BlkClient {
 public:
  static constexpr uint16_t kQueueSize = 64;

  // `kick_fd` >= 0: a dup of it is the queue's kick fd instead of a fresh eventfd (a
  // hostile frontend's choice).
  bool connect(const std::string& sock, std::string* err, int kick_fd = -1) {
    auto m = GuestMemory::create({{GuestAddress(0), 16 << 20}});
    if (!m) return fail(err, "guest memory: " + m.error().message());
    mem_ = std::make_unique<GuestMemory>(std::move(m).value());
    vhost_user::FrontendOptions o;
    o.timeout = 5000ms;
    auto fe = vhost_user::Frontend::connect(sock, o);
    if (!fe) return fail(err, "connect: " + fe.error().message());
    fe_ = std::make_unique<vhost_user::Frontend>(std::move(fe).value());
    const uint64_t want = virtio::feature_bit(virtio::kFVersion1) | virtio::feature_bit(virtio::kBlkFSegMax);
    if (auto r = fe_->set_features(want & fe_->backend_features()); !r) return fail(err, r.error().message());
    if (auto r = fe_->set_mem_table(*mem_); !r) return fail(err, r.error().message());
    if (auto r = fe_->get_inflight_fd(1, kQueueSize); !r) return fail(err, r.error().message());
    if (auto r = fe_->set_inflight_fd(); !r) return fail(err, r.error().message());
    drv_ = std::make_unique<virtio::testing::MockDriver>(*mem_, kQueueSize, GuestAddress(0x10000), 12 << 20);
    kick_ = UniqueFd(kick_fd >= 0 ? ::fcntl(kick_fd, F_DUPFD_CLOEXEC, 0) : ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    call_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    vhost_user::VringConfig vc;
    vc.index = 0;
    vc.num = kQueueSize;
    vc.desc_user_addr = *vhost_user::Frontend::user_addr(*mem_, drv_->desc_addr(), virtio::desc_table_size(kQueueSize));
    vc.avail_user_addr = *vhost_user::Frontend::user_addr(*mem_, drv_->avail_addr(), virtio::avail_ring_size(kQueueSize));
    vc.used_user_addr = *vhost_user::Frontend::user_addr(*mem_, drv_->used_addr(), virtio::used_ring_size(kQueueSize));
    vc.kick_fd = kick_.get();
    vc.call_fd = call_.get();
    if (auto r = fe_->setup_vring(vc); !r) return fail(err, r.error().message());
    if (auto r = fe_->set_vring_enable(0, true); !r) return fail(err, r.error().message());
    return true;
  }
  bool reconnect(const std::string& sock, std::string* err) {
    if (auto r = fe_->reconnect(sock); !r) return fail(err, r.error().message());
    return true;
  }

  struct Read {
    uint16_t head = 0;
    GuestAddress data, status;
    uint32_t len = 0;
  };
  // Queues a read of `sectors` sectors at `sector` (not yet published).
  Read add_read(uint64_t sector, uint32_t sectors) {
    Read r;
    r.len = sectors * 512;
    const GuestAddress hdr = drv_->alloc(16);
    drv_->write_obj(hdr, virtio::virtio_blk_req_hdr{virtio::kBlkTIn, 0, sector});
    r.data = drv_->alloc(r.len, 512);
    r.status = drv_->alloc(1, 1);
    drv_->write_obj(r.status, uint8_t{0xee});
    r.head = drv_->add_chain({{hdr, 16, false}, {r.data, r.len, true}, {r.status, 1, true}}).value_or(0xffff);
    return r;
  }
  void kick() {
    drv_->publish();
    const uint64_t one = 1;
    (void)!::write(kick_.get(), &one, sizeof one);
  }
  // Used entries seen so far (accumulated).
  size_t wait_used(size_t n, std::chrono::milliseconds timeout) {
    const auto end = std::chrono::steady_clock::now() + timeout;
    while (used_.size() < n && std::chrono::steady_clock::now() < end) {
      for (const auto& e : drv_->take_used()) used_.push_back(e);
      if (used_.size() < n) std::this_thread::sleep_for(2ms);
    }
    return used_.size();
  }
  std::string data(const Read& r) {
    std::string s(r.len, '\0');
    (void)mem_->read(r.data, std::span(reinterpret_cast<uint8_t*>(s.data()), s.size()));  // NOLINT
    return s;
  }
  uint8_t status(const Read& r) { return drv_->read_obj<uint8_t>(r.status); }
  // One read, start to finish.
  std::optional<std::string> read(uint64_t sector, uint32_t sectors) {
    Read r = add_read(sector, sectors);
    kick();
    if (wait_used(used_.size() + 1, 5000ms) == 0 || status(r) != virtio::kBlkSOk) return std::nullopt;
    return data(r);
  }
  const std::vector<virtio::virtq_used_elem>& used() const { return used_; }

 private:
  static bool fail(std::string* err, std::string m) {
    *err = std::move(m);
    return false;
  }
  std::unique_ptr<GuestMemory> mem_;  // outlives the frontend
  std::unique_ptr<vhost_user::Frontend> fe_;
  std::unique_ptr<virtio::testing::MockDriver> drv_;
  UniqueFd kick_, call_;
  std::vector<virtio::virtq_used_elem> used_;
};

class CardBlk : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (!kvm_usable(&why)) GTEST_SKIP() << "SKIPPED: needs KVM (" << why << ")";
    dir_ = ::testing::TempDir() + "azote-card-blk-" + std::to_string(::getpid()) + "-" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(dir_);
    ASSERT_TRUE(std::filesystem::create_directories(dir_)) << dir_;
  }
  void TearDown() override {
    card_.reset();
    if (!dir_.empty() && !HasFailure()) std::filesystem::remove_all(dir_);
  }

  std::string path(const std::string& name) const { return dir_ + "/" + name; }

  // Starts the card and waits until every volume's socket exists.
  void start_card(const std::vector<std::string>& args, const std::vector<std::string>& sockets) {
    std::vector<std::string> argv{AZOTE_CARD_BLK_BIN};
    argv.insert(argv.end(), args.begin(), args.end());
    card_ = std::make_unique<Process>(argv);
    for (int i = 0; i < 250; ++i) {
      bool all = true;
      for (const auto& s : sockets) all = all && file_exists(s);
      if (all) return;
      std::this_thread::sleep_for(20ms);
    }
    auto o = card_->wait(1s);
    FAIL() << "the card did not create its sockets (status " << o.status << "): " << o.err;
  }
  Outcome vm(const std::string& program, const std::string& args, const std::vector<std::string>& sockets,
             std::chrono::milliseconds timeout = 90s, const std::string& stats = "") {
    std::vector<std::string> argv{AZOTE_HV_BIN, "--kernel", "builtin:" + program, "--memory", "128M"};
    if (!stats.empty()) {
      argv.push_back("--stats");
      argv.push_back(stats);
    }
    if (!args.empty()) {
      argv.push_back("--cmdline");
      argv.push_back(args);
    }
    for (const auto& s : sockets) {
      argv.push_back("--device");
      argv.push_back("blk,socket=" + s);
    }
    return run(argv, timeout);
  }
  Outcome stop_card() {
    card_->signal(SIGTERM);
    Outcome o = card_->wait(10s);
    card_.reset();
    return o;
  }

  std::string dir_;
  std::unique_ptr<Process> card_;
};

// (a) The built-in guest writes, flushes, reads back and verifies the whole disk
// through the card; the counters say what happened; SIGTERM stops the card cleanly.
TEST_F(CardBlk, BlkCheckPasses) {
  const std::string img = path("vol.img"), sock = path("vol.sock"), msock = path("metrics.sock");
  write_file(img, std::string(32 << 20, '\0'));
  start_card({"--volume", "socket=" + sock + ",file=" + img + ",serial=vol-a", "--metrics", "unix:" + msock}, {sock});
  const std::string stats = path("stats.json");
  auto o = vm("blk-check", "", {sock}, 90s, stats);
  ASSERT_FALSE(o.timed_out) << o.out << o.err;
  EXPECT_EQ(o.status, 0) << o.out << o.err;
  EXPECT_NE(o.out.find("azote-guest: blk-check ok sectors=65536"), std::string::npos) << o.out << o.err;
  // Hundreds of requests, but MMIO exits to azote-hv only for device setup: the data
  // path is guest -> ioeventfd -> card -> irqfd.
  std::smatch sm;
  const std::string j = slurp(stats);
  ASSERT_TRUE(std::regex_search(j, sm, std::regex(R"re("mmio": ([0-9]+))re"))) << j;
  EXPECT_LT(std::stoul(sm[1]), 100u) << j;
  const auto seed = seed_of(o.out);
  ASSERT_TRUE(seed) << o.out;
  // What the guest wrote is in the file, in clear, where it belongs.
  const std::string data = slurp(img);
  ASSERT_EQ(data.size(), 32u << 20);
  for (uint64_t s : {0ull, 1ull, 30000ull, 65535ull}) EXPECT_EQ(data.substr(s * 512, 512), guest_sector(*seed, s)) << s;

  const std::string m = fetch_metrics(msock);
  const std::string l = "{volume=\"vol-a\",socket=\"" + sock + "\"";
  EXPECT_EQ(metric(m, "azote_blk_bytes_total" + l + ",op=\"write\""), 32u << 20) << m;
  EXPECT_EQ(metric(m, "azote_blk_bytes_total" + l + ",op=\"read\""), 32u << 20) << m;
  EXPECT_EQ(metric(m, "azote_blk_requests_total" + l + ",op=\"flush\""), 1u) << m;
  EXPECT_EQ(metric(m, "azote_blk_io_errors_total" + l + ",op=\"write\""), 0u) << m;
  EXPECT_EQ(metric(m, "azote_blk_queue_errors_total" + l), 0u) << m;

  auto c = stop_card();
  EXPECT_FALSE(c.timed_out);
  EXPECT_EQ(c.status, 0) << c.err;
  EXPECT_FALSE(file_exists(sock)) << "socket left behind";
  EXPECT_FALSE(file_exists(msock)) << "metrics socket left behind";
}

// (b) A read-only volume: the guest's first write fails with an I/O error and the image
// is untouched.
TEST_F(CardBlk, ReadOnlyVolumeRefusesWrites) {
  const std::string img = path("ro.img"), sock = path("ro.sock");
  const std::string before = random_bytes(8 << 20, 1);
  write_file(img, before);
  start_card({"--volume", "socket=" + sock + ",file=" + img + ",readonly"}, {sock});
  auto o = vm("blk-check", "", {sock});
  ASSERT_FALSE(o.timed_out) << o.out << o.err;
  EXPECT_EQ(o.status, 1) << o.out << o.err;
  EXPECT_NE(o.out.find("blk-check io-error"), std::string::npos) << o.out;
  EXPECT_TRUE(slurp(img) == before) << "the read-only image changed";
}

// (c) Encryption at rest: the backing file never holds the guest's plaintext (it does
// without a key), and the card reads it back with the key (and not without it).
TEST_F(CardBlk, EncryptedVolumeHoldsNoPlaintext) {
  const std::string key = path("vol.key"), key2 = path("other.key");
  write_file(key, random_bytes(64, 2));
  write_file(key2, random_bytes(64, 3));
  const std::string enc = path("enc.img"), plain = path("plain.img");
  const std::string esock = path("enc.sock"), psock = path("plain.sock");
  write_file(enc, std::string(8 << 20, '\0'));
  write_file(plain, std::string(8 << 20, '\0'));
  start_card({"--volume", "socket=" + esock + ",file=" + enc + ",key-file=" + key, "--volume",
              "socket=" + psock + ",file=" + plain},
             {esock, psock});
  auto e = vm("blk-check", "", {esock});
  ASSERT_EQ(e.status, 0) << e.out << e.err;
  auto p = vm("blk-check", "", {psock});
  ASSERT_EQ(p.status, 0) << p.out << p.err;
  const auto eseed = seed_of(e.out), pseed = seed_of(p.out);
  ASSERT_TRUE(eseed && pseed);
  const std::string edata = slurp(enc), pdata = slurp(plain);
  const std::vector<uint64_t> sectors = {0, 1, 4095, 16383};
  for (uint64_t s : sectors) {
    const std::string want_e = guest_sector(*eseed, s), want_p = guest_sector(*pseed, s);
    EXPECT_EQ(pdata.substr(s * 512, 512), want_p) << "unencrypted control, sector " << s;
    EXPECT_EQ(edata.find(want_e), std::string::npos) << "plaintext of sector " << s << " in the encrypted image";
    EXPECT_EQ(edata.find(want_e.substr(0, 16)), std::string::npos) << "a plaintext block of sector " << s;
  }
  ASSERT_EQ(stop_card().status, 0);

  // The same image through a new card process with the key: the guest's data.
  start_card({"--volume", "socket=" + esock + ",file=" + enc + ",key-file=" + key + ",readonly"}, {esock});
  {
    BlkClient c;
    std::string err;
    ASSERT_TRUE(c.connect(esock, &err)) << err;
    for (uint64_t s : sectors) {
      auto d = c.read(s, 1);
      ASSERT_TRUE(d) << "sector " << s;
      EXPECT_EQ(*d, guest_sector(*eseed, s)) << "sector " << s;
    }
  }
  ASSERT_EQ(stop_card().status, 0);
  // With another key the data is garbage.
  start_card({"--volume", "socket=" + esock + ",file=" + enc + ",key-file=" + key2 + ",readonly"}, {esock});
  {
    BlkClient c;
    std::string err;
    ASSERT_TRUE(c.connect(esock, &err)) << err;
    auto d = c.read(1, 1);
    ASSERT_TRUE(d);
    EXPECT_NE(*d, guest_sector(*eseed, 1));
  }
}

// (d) iops=400: the guest's 4 KiB random-read benchmark measures 400 IOPS within 10%,
// with its requests spread over two queues that share the volume's limit.
TEST_F(CardBlk, IopsLimitHolds) {
  const std::string img = path("lim.img"), sock = path("lim.sock"), msock = path("m.sock");
  write_file(img, std::string(16 << 20, '\0'));
  start_card({"--volume", "socket=" + sock + ",file=" + img + ",iops=400,queues=2,serial=lim", "--metrics",
              "unix:" + msock},
             {sock});
  auto o = vm("blk-bench", "32 2 2", {sock});
  ASSERT_EQ(o.status, 0) << o.out << o.err;
  EXPECT_NE(o.out.find(" queues=2 "), std::string::npos) << o.out;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(o.out, m, std::regex(R"(test=randread bs=4096 qd=32 ops=\d+ seconds=[0-9.]+ iops=(\d+))")))
      << o.out;
  const double iops = std::stod(m[1]);
  std::cout << "randread with iops=400: " << iops << " IOPS\n";
  EXPECT_NEAR(iops, 400.0, 40.0) << o.out;
  const std::string text = fetch_metrics(msock);
  EXPECT_GT(metric(text, "azote_blk_throttled_total{volume=\"lim\""), 0u) << text;
  EXPECT_EQ(metric(text, "azote_blk_io_errors_total{volume=\"lim\",socket=\"" + sock + "\",op=\"read\""), 0u);
}

// (e) One card process, two volumes, two VMs at the same time; each VM's data lands
// in its own image.
TEST_F(CardBlk, TwoVolumesTwoVmsAtOnce) {
  const std::string a = path("a.img"), b = path("b.img"), sa = path("a.sock"), sb = path("b.sock");
  write_file(a, std::string(16 << 20, '\0'));
  write_file(b, std::string(16 << 20, '\0'));
  start_card({"--volume", "socket=" + sa + ",file=" + a + ",queues=2", "--volume", "socket=" + sb + ",file=" + b},
             {sa, sb});
  Outcome oa, ob;
  std::thread ta([&] { oa = vm("blk-check", "", {sa}); });
  std::thread tb([&] { ob = vm("blk-check", "", {sb}); });
  ta.join();
  tb.join();
  EXPECT_EQ(oa.status, 0) << oa.out << oa.err;
  EXPECT_EQ(ob.status, 0) << ob.out << ob.err;
  const auto sa_seed = seed_of(oa.out), sb_seed = seed_of(ob.out);
  ASSERT_TRUE(sa_seed && sb_seed);
  const std::string da = slurp(a), db = slurp(b);
  EXPECT_EQ(da.substr(512 * 777, 512), guest_sector(*sa_seed, 777));
  EXPECT_EQ(db.substr(512 * 777, 512), guest_sector(*sb_seed, 777));
  // And one VM with both devices: blk-check uses the first; the second is negotiated too.
  auto both = vm("blk-check", "4", {sa, sb});
  EXPECT_EQ(both.status, 0) << both.out << both.err;
}

// (f) FUA through the standard write-cache control (VIRTIO_BLK_F_CONFIG_WCE): the guest
// writes writeback = 0 into the config space (azote-hv forwards it as SET_CONFIG), reads
// write-through back, writes its pattern with no FLUSH and verifies it; the card wrote
// every one of those writes durably (RWF_DSYNC). The mode is the driver's session: once
// that VM is gone the volume is write-back again, and the next VM's writes are plain.
TEST_F(CardBlk, WriteThroughModeFromTheGuest) {
  const std::string img = path("fua.img"), sock = path("fua.sock"), msock = path("m.sock");
  write_file(img, std::string(16 << 20, '\0'));
  start_card({"--volume", "socket=" + sock + ",file=" + img + ",serial=fua", "--metrics", "unix:" + msock}, {sock});
  auto o = vm("blk-fua", "4", {sock});
  ASSERT_FALSE(o.timed_out) << o.out << o.err;
  ASSERT_EQ(o.status, 0) << o.out << o.err;
  EXPECT_NE(o.out.find("azote-guest: blk write-through on\n"), std::string::npos) << o.out;
  EXPECT_NE(o.out.find("azote-guest: blk-fua ok sectors=8192"), std::string::npos) << o.out;
  EXPECT_NE(o.out.find("blk-fua writeback_was=1 "), std::string::npos) << o.out;  // the default
  std::smatch sm;
  ASSERT_TRUE(std::regex_search(o.out, sm, std::regex("blk-fua seed=0x([0-9a-f]{16})"))) << o.out;
  const uint64_t seed = std::stoull(sm[1], nullptr, 16);
  const std::string data = slurp(img);
  for (uint64_t s : {0ull, 1ull, 4000ull, 8191ull}) EXPECT_EQ(data.substr(s * 512, 512), guest_sector(seed, s)) << s;

  const std::string l = "{volume=\"fua\",socket=\"" + sock + "\"";
  std::string m = fetch_metrics(msock);
  const uint64_t writes = metric(m, "azote_blk_requests_total" + l + ",op=\"write\"");
  EXPECT_EQ(writes, 16u) << m;  // 4 MiB in 256 KiB requests
  EXPECT_EQ(metric(m, "azote_blk_write_through_writes_total" + l), writes) << m;
  EXPECT_EQ(metric(m, "azote_blk_requests_total" + l + ",op=\"flush\""), 0u) << m;
  EXPECT_EQ(metric(m, "azote_blk_config_write_refusals_total" + l), 0u) << m;
  // The VM is gone: its connection closed, the volume is back to write-back.
  for (int i = 0; i < 100 && metric(m, "azote_blk_write_cache_writeback" + l) != 1; ++i) {
    std::this_thread::sleep_for(20ms);
    m = fetch_metrics(msock);
  }
  EXPECT_EQ(metric(m, "azote_blk_write_cache_writeback" + l), 1u) << m;

  auto c = vm("blk-check", "4", {sock});
  ASSERT_EQ(c.status, 0) << c.out << c.err;
  m = fetch_metrics(msock);
  EXPECT_EQ(metric(m, "azote_blk_requests_total" + l + ",op=\"write\""), 32u) << m;
  EXPECT_EQ(metric(m, "azote_blk_write_through_writes_total" + l), 16u) << m;  // none of blk-check's
}

// (g) A malicious driver can at worst break its own device: the built-in guest's
// blk-hostile hands the card a read into memory outside guest RAM; the card stops that
// queue, counts it, logs it once and reports DEVICE_NEEDS_RESET (GET_STATUS, asked by
// azote-hv when the guest reads its Status register); the guest sees it, resets the
// device and does a working write + read. Meanwhile another VM runs blk-check on the
// card's other volume, undisturbed, and the card process is the same one throughout.
TEST_F(CardBlk, HostileDriverNeedsResetRecoversAndHarmsNoOneElse) {
  const std::string a = path("hostile.img"), b = path("other.img"), sa = path("hostile.sock"),
                    sb = path("other.sock"), msock = path("m.sock");
  write_file(a, std::string(8 << 20, '\0'));
  write_file(b, std::string(64 << 20, '\0'));
  start_card({"--volume", "socket=" + sa + ",file=" + a + ",serial=hostile", "--volume",
              "socket=" + sb + ",file=" + b + ",serial=other", "--metrics", "unix:" + msock},
             {sa, sb});
  ASSERT_TRUE(card_);
  const pid_t card_pid = card_->pid();
  // The other VM is writing its disk when the hostile one starts.
  Process other({AZOTE_HV_BIN, "--kernel", "builtin:blk-check", "--memory", "128M", "--device", "blk,socket=" + sb});
  ASSERT_TRUE(other.wait_for_output("blk-check seed=", 60s));
  const Outcome oh = vm("blk-hostile", "", {sa});
  const Outcome oo = other.wait(90s);
  ASSERT_FALSE(oh.timed_out) << oh.out << oh.err;
  EXPECT_EQ(oh.status, 0) << oh.out << oh.err;
  const size_t needs_reset = oh.out.find("azote-guest: blk device needs reset\n");
  const size_t recovered = oh.out.find("azote-guest: blk-hostile recovered\n");
  EXPECT_NE(needs_reset, std::string::npos) << oh.out;
  EXPECT_NE(recovered, std::string::npos) << oh.out;
  EXPECT_LT(needs_reset, recovered) << oh.out;
  EXPECT_NE(oh.err.find("DEVICE_NEEDS_RESET"), std::string::npos) << oh.err;  // azote-hv's warning
  ASSERT_FALSE(oo.timed_out) << oo.out << oo.err;
  EXPECT_EQ(oo.status, 0) << oo.out << oo.err;
  EXPECT_NE(oo.out.find("azote-guest: blk-check ok sectors=131072"), std::string::npos) << oo.out;
  EXPECT_EQ(oo.out.find("needs reset"), std::string::npos) << oo.out;

  const std::string m = fetch_metrics(msock);
  const std::string lh = "{volume=\"hostile\",socket=\"" + sa + "\"";
  const std::string lo = "{volume=\"other\",socket=\"" + sb + "\"";
  EXPECT_EQ(metric(m, "azote_blk_queue_errors_total" + lh), 1u) << m;
  EXPECT_EQ(metric(m, "azote_blk_queue_errors_total" + lo), 0u) << m;
  EXPECT_EQ(metric(m, "azote_blk_device_needs_reset" + lh), 0u) << m;  // the guest reset it
  EXPECT_EQ(metric(m, "azote_blk_device_needs_reset" + lo), 0u) << m;
  EXPECT_EQ(metric(m, "azote_blk_requests_total" + lh + ",op=\"write\""), 1u) << m;  // the round trip
  EXPECT_EQ(metric(m, "azote_blk_requests_total" + lh + ",op=\"read\""), 1u) << m;   // (the bad read never ran)
  EXPECT_EQ(metric(m, "azote_blk_bytes_total" + lo + ",op=\"read\""), 64u << 20) << m;

  // The same card process, alive and serving: it neither crashed nor restarted.
  ASSERT_EQ(card_->pid(), card_pid);
  siginfo_t info{};
  ASSERT_EQ(::waitid(P_PID, static_cast<id_t>(card_pid), &info, WEXITED | WNOHANG | WNOWAIT), 0);
  EXPECT_EQ(info.si_pid, 0) << "the card exited";
  auto again = vm("blk-check", "4", {sa});
  EXPECT_EQ(again.status, 0) << again.out << again.err;
  auto c = stop_card();
  EXPECT_EQ(c.status, 0) << c.err;
  size_t broke = 0;
  for (size_t p = c.err.find("the driver broke the queue"); p != std::string::npos;
       p = c.err.find("the driver broke the queue", p + 1))
    ++broke;
  EXPECT_EQ(broke, 1u) << c.err;
  EXPECT_NE(c.err.find("is not inside guest memory"), std::string::npos) << c.err;
}

// Card restart without loss: requests waiting in a killed card (throttled, so still
// in flight) are resubmitted by the next card process from the inflight area.
TEST_F(CardBlk, KilledCardLosesNoRequest) {
  const std::string img = path("r.img"), sock = path("r.sock");
  const std::string content = random_bytes(4 << 20, 4);
  write_file(img, content);
  const std::string vol = "socket=" + sock + ",file=" + img + ",iops=5,burst-ms=200";
  start_card({"--volume", vol}, {sock});
  BlkClient c;
  std::string err;
  ASSERT_TRUE(c.connect(sock, &err)) << err;
  std::vector<BlkClient::Read> reads;
  for (uint64_t i = 0; i < 6; ++i) reads.push_back(c.add_read(i * 100, 2));
  c.kick();
  ASSERT_GE(c.wait_used(1, 3000ms), 1u);
  ASSERT_LT(c.used().size(), 6u) << "the limiter let everything through before the kill";
  card_->signal(SIGKILL);
  (void)card_->wait(5s);
  const size_t before_kill = c.wait_used(c.used().size() + 1, 10ms);  // what the dead card completed
  const std::string msock = path("m.sock");
  start_card({"--volume", vol + ",serial=r", "--metrics", "unix:" + msock}, {sock});
  ASSERT_TRUE(c.reconnect(sock, &err)) << err;
  ASSERT_EQ(c.wait_used(6, 10000ms), 6u);
  // The new process took them from the inflight area, not from the avail ring.
  const std::string m = fetch_metrics(msock);
  EXPECT_EQ(metric(m, "azote_blk_resubmitted_total{volume=\"r\""), 6 - before_kill) << m;
  for (const auto& r : reads) {
    EXPECT_EQ(c.status(r), virtio::kBlkSOk);
    const uint64_t sector = (&r - reads.data()) * 100;
    EXPECT_EQ(c.data(r), content.substr(sector * 512, 1024)) << "sector " << sector;
  }
  // Each head completed exactly once.
  std::vector<uint32_t> ids;
  for (const auto& u : c.used()) ids.push_back(u.id);
  std::sort(ids.begin(), ids.end());
  EXPECT_EQ(std::adjacent_find(ids.begin(), ids.end()), ids.end());
}


// (h) The controller's path: a card started with only a control socket gets volumes
// added and removed at run time; bad requests leave it serving; an encrypted volume's
// key comes over the socket (and the file holds no plaintext); a removed volume's
// socket is gone and its file can be served again.
TEST_F(CardBlk, VolumesAddedAndRemovedAtRunTime) {
  const std::string ctl = path("card.ctl"), img = path("a.img"), sock = path("a.sock");
  const std::string eimg = path("e.img"), esock = path("e.sock");
  write_file(img, std::string(16 << 20, '\0'));
  write_file(eimg, std::string(16 << 20, '\0'));
  start_card({"--control", ctl}, {ctl});
  using control::Json;
  auto call = [&](const Json& r) { return control::call_once(ctl, r, 10s); };
  auto list = call(Json{{"op", "list-volumes"}});
  ASSERT_TRUE(list.ok()) << list.error().message();
  EXPECT_TRUE((*list)["volumes"].empty());

  auto add = call(Json{{"op", "add-volume"}, {"volume", {{"socket", sock}, {"file", img}, {"serial", "vol-a"}}}});
  ASSERT_TRUE(add.ok()) << add.error().message();
  auto dup = call(Json{{"op", "add-volume"}, {"volume", {{"socket", sock}, {"file", eimg}}}});
  ASSERT_FALSE(dup.ok());
  EXPECT_NE(dup.error().context.find("socket " + sock + " is used by another volume"), std::string::npos)
      << dup.error().context;
  auto missing = call(Json{{"op", "add-volume"}, {"volume", {{"socket", path("m.sock")}, {"file", path("none.img")}}}});
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().context.find("none.img"), std::string::npos) << missing.error().context;
  auto badkey = call(Json{{"op", "add-volume"}, {"volume", {{"socket", esock}, {"file", eimg}, {"key", "abc"}}}});
  ASSERT_FALSE(badkey.ok());
  EXPECT_NE(badkey.error().context.find("128 hex digits"), std::string::npos) << badkey.error().context;
  std::string hex;
  for (int i = 0; i < 64; ++i) hex += "0123456789abcdef"[(i * 7 + i / 32) % 16], hex += "fedcba9876543210"[i % 16];
  auto enc = call(Json{{"op", "add-volume"}, {"volume", {{"socket", esock}, {"file", eimg}, {"key", hex}}}});
  ASSERT_TRUE(enc.ok()) << enc.error().message();

  auto o = vm("blk-check", "", {sock});
  EXPECT_EQ(o.status, 0) << o.out << o.err;
  EXPECT_NE(o.out.find("blk-check ok sectors=32768"), std::string::npos) << o.out;
  auto e = vm("blk-check", "", {esock});
  EXPECT_EQ(e.status, 0) << e.out << e.err;
  const auto seed = seed_of(e.out);
  ASSERT_TRUE(seed) << e.out;
  const std::string edata = slurp(eimg);
  EXPECT_NE(edata.substr(512 * 100, 512), guest_sector(*seed, 100)) << "plaintext in the encrypted file";

  list = call(Json{{"op", "list-volumes"}});
  ASSERT_TRUE(list.ok());
  ASSERT_EQ((*list)["volumes"].size(), 2u) << list->dump();
  for (const auto& v : (*list)["volumes"]) {
    EXPECT_EQ(v["connected"], false) << v.dump();
    EXPECT_GE(v["writes"].get<uint64_t>(), 1u) << v.dump();
    EXPECT_EQ(v["encrypted"], v["socket"] == esock) << v.dump();
  }

  auto rm = call(Json{{"op", "remove-volume"}, {"socket", sock}});
  ASSERT_TRUE(rm.ok()) << rm.error().message();
  EXPECT_FALSE(file_exists(sock)) << "removed volume's socket left behind";
  auto gone = vm("blk-check", "", {sock}, 30s);
  EXPECT_EQ(gone.status, 74) << gone.out << gone.err;  // no card on that socket
  auto rm2 = call(Json{{"op", "remove-volume"}, {"socket", sock}});
  ASSERT_FALSE(rm2.ok());
  EXPECT_NE(rm2.error().context.find("no volume is served on socket"), std::string::npos);
  // The file's lock went with the volume: it can be served again.
  add = call(Json{{"op", "add-volume"}, {"volume", "socket=" + sock + ",file=" + img}});
  ASSERT_TRUE(add.ok()) << add.error().message();
  o = vm("blk-check", "", {sock});
  EXPECT_EQ(o.status, 0) << o.out << o.err;

  auto unknown = call(Json{{"op", "format-disk"}});
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.error().context.find("unknown op"), std::string::npos);
  auto c = stop_card();
  EXPECT_EQ(c.status, 0) << c.err;
  EXPECT_FALSE(file_exists(ctl)) << "control socket left behind";
  EXPECT_FALSE(file_exists(esock));
}

// Does this kernel's fdinfo tell a semaphore eventfd apart ("eventfd-semaphore: 1")?
bool kernel_shows_eventfd_semaphore() {
  UniqueFd fd(::eventfd(0, EFD_CLOEXEC | EFD_SEMAPHORE));
  return slurp("/proc/self/fdinfo/" + std::to_string(fd.get())).find("eventfd-semaphore:") != std::string::npos;
}

// (i) A hostile frontend hands the card a semaphore eventfd (EFD_SEMAPHORE: each read
// takes 1) holding ~2^63 as a kick fd, then disconnects. Neither may stall the card: it
// refuses the fd (where the kernel shows the semaphore flag) or its worker drains it a
// bounded number of reads at a time; either way the control socket answers at once, the
// other volume serves reads, the same volume serves the next frontend, and the process
// is the one that started.
TEST_F(CardBlk, SemaphoreKickFromAHostileFrontendHarmsNoOneElse) {
  const std::string ctl = path("card.ctl"), a = path("a.img"), b = path("b.img"), sa = path("a.sock"),
                    sb = path("b.sock");
  const std::string content = random_bytes(1 << 20, 9);
  write_file(a, content);
  write_file(b, content);
  start_card({"--control", ctl, "--volume", "socket=" + sa + ",file=" + a, "--volume", "socket=" + sb + ",file=" + b},
             {ctl, sa, sb});
  ASSERT_TRUE(card_);
  const pid_t card_pid = card_->pid();
  std::string err;
  {
    UniqueFd sem(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK | EFD_SEMAPHORE));
    const uint64_t huge = uint64_t{1} << 63;
    ASSERT_EQ(::write(sem.get(), &huge, sizeof huge), 8);
    BlkClient hostile;
    const bool accepted = hostile.connect(sa, &err, sem.get());
    if (kernel_shows_eventfd_semaphore()) {
      EXPECT_FALSE(accepted) << "the card took a semaphore eventfd as a kick fd";
    }
  }  // the hostile frontend disconnects here
  const auto t0 = std::chrono::steady_clock::now();
  auto list = control::call_once(ctl, control::Json{{"op", "list-volumes"}}, 2s);
  ASSERT_TRUE(list.ok()) << "the card stopped answering its control socket: " << list.error().message();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  EXPECT_EQ((*list)["volumes"].size(), 2u) << list->dump();

  BlkClient other;
  ASSERT_TRUE(other.connect(sb, &err)) << err;
  auto d = other.read(10, 2);
  ASSERT_TRUE(d) << "the other volume stopped serving";
  EXPECT_EQ(*d, content.substr(10 * 512, 1024));
  BlkClient next;
  ASSERT_TRUE(next.connect(sa, &err)) << err;
  d = next.read(20, 1);
  ASSERT_TRUE(d) << "the hostile frontend's volume does not serve the next one";
  EXPECT_EQ(*d, content.substr(20 * 512, 512));

  ASSERT_EQ(card_->pid(), card_pid);
  siginfo_t info{};
  ASSERT_EQ(::waitid(P_PID, static_cast<id_t>(card_pid), &info, WEXITED | WNOHANG | WNOWAIT), 0);
  EXPECT_EQ(info.si_pid, 0) << "the card exited";
  auto c = stop_card();
  EXPECT_FALSE(c.timed_out);
  EXPECT_EQ(c.status, 0) << c.err;
  if (kernel_shows_eventfd_semaphore()) {
    EXPECT_NE(c.err.find("semaphore eventfd"), std::string::npos) << c.err;
  }
}

// (j) A frontend that connects and closes in a loop cannot grow the card's log without
// bound: connection lines are rate-limited, while list-volumes still counts every
// connection.
TEST_F(CardBlk, ConnectCloseLoopKeepsTheLogSmall) {
  const std::string ctl = path("card.ctl"), img = path("v.img"), sock = path("v.sock");
  write_file(img, std::string(1 << 20, '\0'));
  start_card({"--control", ctl, "--volume", "socket=" + sock + ",file=" + img}, {ctl, sock});
  ASSERT_TRUE(card_);
  constexpr uint64_t kLoops = 2000;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, sock.data(), sock.size());
  for (uint64_t i = 0; i < kLoops; ++i) {
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    ASSERT_EQ(::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr), 0)  // NOLINT
        << i << ": " << std::strerror(errno);
    if (i % 50 == 0) (void)card_->wait_for_output("\x01", 20ms);  // keeps the card's stderr pipe from filling
  }
  uint64_t seen = 0;
  for (int i = 0; i < 500 && seen < kLoops; ++i) {
    auto list = control::call_once(ctl, control::Json{{"op", "list-volumes"}}, 2s);
    ASSERT_TRUE(list.ok()) << list.error().message();
    seen = (*list)["volumes"][0]["connections"].get<uint64_t>();
    if (seen < kLoops) (void)card_->wait_for_output("\x01", 10ms);
  }
  EXPECT_EQ(seen, kLoops);
  auto c = stop_card();
  EXPECT_EQ(c.status, 0) << c.err.substr(0, 4096);
  size_t connection_lines = 0;
  for (const auto& l : lines(c.err))
    if (l.find("vhost-user: frontend") != std::string::npos) ++connection_lines;
  EXPECT_GE(connection_lines, 1u);
  EXPECT_LE(connection_lines, 40u) << c.err.size() << " bytes of log for " << kLoops << " connections";
}

// Startup errors name the bad input and use the documented exit statuses.
TEST(CardBlkCli, ErrorsAndExitStatuses) {
  const std::string dir = ::testing::TempDir();
  const std::string key = dir + "/azote-card-blk-short.key", img = dir + "/azote-card-blk-cli.img";
  write_file(key, std::string(32, 'k'));
  write_file(img, std::string(1 << 20, '\0'));
  auto usage = run({AZOTE_CARD_BLK_BIN, "--volume", "socket=/tmp/x.sock,file=" + img + ",iops=fast"});
  EXPECT_EQ(usage.status, 64);
  EXPECT_NE(usage.err.find("iops=fast"), std::string::npos) << usage.err;
  auto bad_key = run({AZOTE_CARD_BLK_BIN, "--volume", "socket=" + dir + "/azote-cli.sock,file=" + img + ",key-file=" + key});
  EXPECT_EQ(bad_key.status, 66);
  EXPECT_NE(bad_key.err.find(key), std::string::npos) << bad_key.err;
  EXPECT_NE(bad_key.err.find("32 bytes"), std::string::npos) << bad_key.err;
  auto missing = run({AZOTE_CARD_BLK_BIN, "--volume", "socket=" + dir + "/azote-cli.sock,file=" + dir + "/nope.img"});
  EXPECT_EQ(missing.status, 66);
  EXPECT_NE(missing.err.find("nope.img"), std::string::npos) << missing.err;
  // One file behind two volumes would corrupt it: refused (flock).
  auto twice = run({AZOTE_CARD_BLK_BIN, "--volume", "socket=" + dir + "/azote-cli-1.sock,file=" + img, "--volume",
                    "socket=" + dir + "/azote-cli-2.sock,file=" + img});
  EXPECT_EQ(twice.status, 66);
  EXPECT_NE(twice.err.find("in use by another volume or card"), std::string::npos) << twice.err;
  EXPECT_FALSE(file_exists(dir + "/azote-cli-1.sock"));
  auto help = run({AZOTE_CARD_BLK_BIN, "--help"});
  EXPECT_EQ(help.status, 0);
  EXPECT_NE(help.out.find("key-file=PATH"), std::string::npos);
  std::remove(key.c_str());
  std::remove(img.c_str());
}

}  // namespace
}  // namespace azote::test
