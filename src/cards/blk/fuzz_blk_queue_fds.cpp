// libFuzzer target: the block card's queue workers and the fds a frontend hands them.
// Two devices (BlkDevice over a Volume whose store completes every operation at once,
// in memory): device A behind a vhost-user Session, fed arbitrary message streams whose
// fds are of fuzzer-chosen kinds, as fuzz_vhost_user does; device B started directly
// with fuzzer-chosen rings and kick/call fds, as the Session would on a kernel whose
// fdinfo cannot tell a semaphore eventfd apart. Between messages the "frontend" writes
// into the fds it kept (kicks, or a 2^64 - 2 count into a call fd) and into guest
// memory (rings and requests) while the workers run. Each input is a sequence of
//
//   u8 op, then by op % 5:
//   0 message  u8 fds: bits 0-3 count (over 8: the transport drops the frontend),
//                      bits 4-7 kind (below); 12 header bytes; min(size, rest) payload
//   1 poke     u8 which (a kept fd, modulo their number), u64 value written to it
//   2 memory   u8 target (even: device A's last memfd, odd: device B's memory),
//              u16 offset, u8 length, that many bytes written there
//   3 start B  u8 kick kind, u8 call kind, u8 size (1 << (v % 9)), u16 desc / avail /
//              used (offsets in device B's 64 KiB, aligned down), u16 next avail
//   4 stop B   queue_stopped(0)
//
// fd kinds: 0 sealed 1 MiB memfd, 1 eventfd, 2 semaphore eventfd holding 2^63,
// 3 blocking eventfd, 4 pipe (write end kept), 5 pipe whose writer is closed (readable
// for ever), 6 socket (peer kept), 7 socket whose peer is closed, 8 regular file
// (unsealed memfd), 9 /dev/null, 10 timerfd, 11-15 eventfd.
//
// Checked, beyond ASan/UBSan: every input finishes within 3 s however the fds behave
// (nothing spins for ever or blocks), and no fd outlives the input. A worker that does
// not stop within the cards' 5 s deadline ends the process with status 75
// (runtime::kExitStuckWorker) and no crash report: the run fails with "exit 75" (the
// device logs go to /dev/null; rerun the input under gdb to see the stuck thread).
// Seeds: fuzz_seeds/ (recipe in make_seeds.py).
#include <fcntl.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <memory>
#include <vector>

#include "cards/blk/device.hpp"
#include "cards/blk/volume.hpp"
#include "guest_memory/guest_memory.hpp"
#include "vhost_user/session.hpp"

using namespace azote;
using namespace azote::card_blk;

namespace {

constexpr uint64_t kStoreBytes = 1 << 20;
constexpr uint64_t kDirectBytes = 64 << 10;
constexpr size_t kMaxKept = 16;

// A store that completes every operation when it is submitted, against a small buffer.
class MemQueue final : public StoreQueue {
 public:
  explicit MemQueue(std::vector<uint8_t>& data) : data_(data), done_fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}
  uint32_t room() const override { return kDepth - static_cast<uint32_t>(prepared_.size() + done_.size()); }
  bool prepare(const StoreOp& op) override {
    if (room() == 0) return false;
    prepared_.push_back(op);
    return true;
  }
  uint32_t unsubmitted() const override { return static_cast<uint32_t>(prepared_.size()); }
  Result<uint32_t, StoreError> submit() override {
    const auto n = static_cast<uint32_t>(prepared_.size());
    for (const StoreOp& op : prepared_) done_.push_back({op.tag, run(op)});
    prepared_.clear();
    if (n > 0) {
      const uint64_t one = 1;
      (void)!::write(done_fd_.get(), &one, sizeof one);
    }
    return n;
  }
  uint32_t in_flight() const override { return static_cast<uint32_t>(done_.size()); }
  int completion_fd() const override { return done_fd_.get(); }
  uint32_t reap(std::span<StoreCompletion> out) override {
    uint32_t n = 0;
    while (n < out.size() && !done_.empty()) {
      out[n++] = done_.front();
      done_.pop_front();
    }
    return n;
  }

 private:
  static constexpr uint32_t kDepth = 256;
  int64_t run(const StoreOp& op) {
    if (op.kind != StoreOpKind::kRead && op.kind != StoreOpKind::kWrite) return 0;
    uint64_t off = op.offset, total = 0;
    for (uint32_t i = 0; i < op.iovcnt; ++i) {
      const iovec& v = op.iov[i];
      if (off > data_.size() || v.iov_len > data_.size() - off) return -EIO;
      if (op.kind == StoreOpKind::kRead) {
        std::memcpy(v.iov_base, data_.data() + off, v.iov_len);  // guest memory: ASan checks the mapping
      } else {
        std::memcpy(data_.data() + off, v.iov_base, v.iov_len);
      }
      off += v.iov_len;
      total += v.iov_len;
    }
    return static_cast<int64_t>(total);
  }
  std::vector<uint8_t>& data_;
  UniqueFd done_fd_;
  std::vector<StoreOp> prepared_;
  std::deque<StoreCompletion> done_;
};

class MemStore final : public Store {
 public:
  MemStore() : data_(kStoreBytes) {
    info_.path = "memory";
    info_.size_bytes = kStoreBytes;
  }
  const StoreInfo& info() const override { return info_; }
  Result<std::unique_ptr<StoreQueue>, StoreError> open_queue(uint32_t) override {
    return std::unique_ptr<StoreQueue>(std::make_unique<MemQueue>(data_));
  }

 private:
  StoreInfo info_;
  std::vector<uint8_t> data_;
};

std::unique_ptr<Volume> make_volume(const rate_limit::Clock& clock, const char* serial) {
  VolumeOptions o;
  o.socket = "/unused.sock";
  o.serial = serial;
  o.queues = 2;
  auto v = Volume::create(o, std::make_unique<MemStore>(), std::nullopt, clock);
  if (!v) __builtin_trap();
  return std::move(v).value();
}

struct Fds {
  UniqueFd give;  // what the device gets
  UniqueFd keep;  // what the "frontend" keeps to write into (its end, or a dup)
};

void nonblocking(int fd) {
  const int fl = ::fcntl(fd, F_GETFL);
  if (fl >= 0) (void)::fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

Fds make_fd(unsigned kind) {
  Fds f;
  auto dup_of = [](const UniqueFd& fd) { return UniqueFd(fd ? ::fcntl(fd.get(), F_DUPFD_CLOEXEC, 0) : -1); };
  switch (kind) {
    case 0:
    case 8: {
      f.give = UniqueFd(::memfd_create("fuzz", MFD_CLOEXEC | MFD_ALLOW_SEALING));
      const off_t size = kind == 0 ? (1 << 20) : 4096;
      if (!f.give || ::ftruncate(f.give.get(), size) != 0) return {};
      if (kind == 0 && ::fcntl(f.give.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) != 0) return {};
      f.keep = dup_of(f.give);
      return f;
    }
    case 2: {
      f.give = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK | EFD_SEMAPHORE));
      const uint64_t huge = uint64_t{1} << 63;
      if (!f.give || ::write(f.give.get(), &huge, sizeof huge) != 8) return {};
      f.keep = dup_of(f.give);
      return f;
    }
    case 3:
      f.give = UniqueFd(::eventfd(0, EFD_CLOEXEC));
      f.keep = dup_of(f.give);
      return f;
    case 4:
    case 5: {
      int p[2];
      if (::pipe2(p, O_CLOEXEC | O_NONBLOCK) != 0) return {};
      f.give = UniqueFd(p[0]);
      if (kind == 4) {
        f.keep = UniqueFd(p[1]);
      } else {
        ::close(p[1]);
      }
      return f;
    }
    case 6:
    case 7: {
      int sv[2];
      if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) != 0) return {};
      f.give = UniqueFd(sv[0]);
      if (kind == 6) {
        f.keep = UniqueFd(sv[1]);
      } else {
        ::close(sv[1]);
      }
      return f;
    }
    case 9:
      f.give = UniqueFd(::open("/dev/null", O_RDWR | O_CLOEXEC));
      return f;
    case 10: {
      f.give = UniqueFd(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
      itimerspec its{};
      its.it_value.tv_nsec = 1'000'000;
      its.it_interval.tv_nsec = 1'000'000;
      if (f.give) (void)::timerfd_settime(f.give.get(), 0, &its, nullptr);
      return f;
    }
    default:
      f.give = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
      f.keep = dup_of(f.give);
      return f;
  }
}

int lowest_free_fd() {
  const int fd = ::fcntl(0, F_DUPFD_CLOEXEC, 0);
  if (fd >= 0) ::close(fd);
  return fd;
}

class Reader {
 public:
  Reader(const uint8_t* d, size_t n) : d_(d), n_(n) {}
  bool has(size_t k) const { return n_ - pos_ >= k; }
  template <class T>
  T get() {
    T v{};
    if (has(sizeof v)) std::memcpy(&v, d_ + pos_, sizeof v);
    pos_ = has(sizeof v) ? pos_ + sizeof v : n_;
    return v;
  }
  std::span<const uint8_t> bytes(size_t k) {
    k = std::min(k, n_ - pos_);
    std::span<const uint8_t> s(d_ + pos_, k);
    pos_ += k;
    return s;
  }
  bool done() const { return pos_ >= n_; }

 private:
  const uint8_t* d_;
  size_t n_, pos_ = 0;
};

struct Harness {
  rate_limit::FakeClock clock;
  std::unique_ptr<Volume> vol_a = make_volume(clock, "fuzz-a"), vol_b = make_volume(clock, "fuzz-b");
  std::unique_ptr<BlkDevice> dev_a = std::make_unique<BlkDevice>(*vol_a), dev_b = std::make_unique<BlkDevice>(*vol_b);
  std::unique_ptr<vhost_user::Session> session = std::make_unique<vhost_user::Session>(*dev_a);
  std::unique_ptr<GuestMemory> direct;
  std::deque<UniqueFd> kept;  // the frontend's ends, oldest first
  UniqueFd last_memfd;        // the frontend's copy of the last memfd it sent
  Fds b_kick, b_call;         // device B's fds while it runs

  Harness() {
    auto m = GuestMemory::create({{GuestAddress(0), kDirectBytes}});
    if (!m) __builtin_trap();
    direct = std::make_unique<GuestMemory>(std::move(m).value());
  }
  ~Harness() {
    // Workers off their rings before the memory and fds they use go.
    (void)dev_b->queue_stopped(0);
    session.reset();
  }

  void keep(UniqueFd fd) {
    if (!fd) return;
    kept.push_back(std::move(fd));
    if (kept.size() > kMaxKept) kept.pop_front();
  }

  void message(Reader& r) {
    const auto ctl = r.get<uint8_t>();
    vhost_user::Header hdr;
    if (!r.has(vhost_user::kHeaderSize)) {
      r.bytes(vhost_user::kHeaderSize);
      return;
    }
    std::memcpy(&hdr, r.bytes(vhost_user::kHeaderSize).data(), vhost_user::kHeaderSize);
    const size_t nfds = ctl & 0xf;
    const unsigned kind = ctl >> 4;
    if (nfds > vhost_user::kMaxFds || hdr.size > vhost_user::kMaxPayloadSize) {  // Connection refuses these
      session->reset();
      return;
    }
    if (!r.has(hdr.size)) {  // EOF inside the payload
      r.bytes(hdr.size);
      return;
    }
    const auto payload = r.bytes(hdr.size);
    std::vector<UniqueFd> fds;
    for (size_t i = 0; i < nfds; ++i) {
      Fds f = make_fd(kind);
      if (kind == 0 && f.keep) {
        last_memfd = std::move(f.keep);
      } else {
        keep(std::move(f.keep));
      }
      fds.push_back(std::move(f.give));
    }
    auto res = session->handle(hdr, payload, std::move(fds));
    if (!res) session->reset();  // as Backend does: the frontend is dropped
  }

  void poke(Reader& r) {
    const auto which = r.get<uint8_t>();
    const auto value = r.get<uint64_t>();
    if (kept.empty()) return;
    // The frontend never waits on its own writes: a kept end still in blocking mode (a
    // blocking eventfd the Session refused, or one never handed over as a ring fd) is
    // left alone; the Session makes the ring fds it takes non-blocking.
    const int fd = kept[which % kept.size()].get();
    const int fl = ::fcntl(fd, F_GETFL);
    if (fl < 0 || (fl & O_NONBLOCK) == 0) return;
    (void)!::write(fd, &value, sizeof value);
  }

  void memory(Reader& r) {
    const auto target = r.get<uint8_t>();
    const auto offset = r.get<uint16_t>();
    const auto len = r.get<uint8_t>();
    const auto data = r.bytes(len);
    if ((target & 1) == 0) {
      if (last_memfd) (void)!::pwrite(last_memfd.get(), data.data(), data.size(), offset);
    } else {
      (void)direct->write(GuestAddress(offset), data);
    }
  }

  void start_b(Reader& r) {
    const auto kick_kind = r.get<uint8_t>() % 16u, call_kind = r.get<uint8_t>() % 16u;
    const auto size_log = r.get<uint8_t>() % 9u;
    const auto desc = r.get<uint16_t>(), avail = r.get<uint16_t>(), used = r.get<uint16_t>();
    const auto next = r.get<uint16_t>();
    (void)dev_b->queue_stopped(0);  // the fds below replace the previous ones
    b_kick = make_fd(kick_kind);
    b_call = make_fd(call_kind);
    // What the Session guarantees of any fd it lets through: non-blocking.
    for (const UniqueFd* fd : {&b_kick.give, &b_kick.keep, &b_call.give, &b_call.keep})
      if (*fd) nonblocking(fd->get());
    keep(UniqueFd(b_kick.keep ? ::fcntl(b_kick.keep.get(), F_DUPFD_CLOEXEC, 0) : -1));
    keep(UniqueFd(b_call.keep ? ::fcntl(b_call.keep.get(), F_DUPFD_CLOEXEC, 0) : -1));
    vhost_user::VringInfo v;
    v.index = 0;
    v.size = static_cast<uint16_t>(1u << size_log);
    v.next_avail = next;
    v.desc = GuestAddress(desc & ~15u);
    v.avail = GuestAddress(avail & ~1u);
    v.used = GuestAddress(used & ~3u);
    v.memory = direct.get();
    v.kick_fd = b_kick.give.get();
    v.call_fd = b_call.give.get();
    v.features = dev_b->features();
    dev_b->set_features(v.features);
    dev_b->queue_started(v);
  }
};

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  ::signal(SIGPIPE, SIG_IGN);  // as the card: a closed socket peer is an error return
  // The devices log every queue that cannot start (rate-limited per device, and there are
  // two new devices per input): keep libFuzzer's output readable.
  static std::FILE* quiet = std::fopen("/dev/null", "w");
  if (quiet != nullptr) log::set_sink(quiet);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const int baseline = lowest_free_fd();
  const auto t0 = std::chrono::steady_clock::now();
  {
    Harness h;
    Reader r(data, size);
    while (!r.done()) {
      switch (r.get<uint8_t>() % 5) {
        case 0: h.message(r); break;
        case 1: h.poke(r); break;
        case 2: h.memory(r); break;
        case 3: h.start_b(r); break;
        default: (void)h.dev_b->queue_stopped(0); break;
      }
    }
  }
  // Bounded work per input: no fd kind or count may keep a worker (or its stop) busy.
  if (std::chrono::steady_clock::now() - t0 > std::chrono::seconds(3)) __builtin_trap();
  if (lowest_free_fd() != baseline) __builtin_trap();  // an fd outlived its input
  return 0;
}
