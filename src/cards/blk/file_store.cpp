#include "cards/blk/file_store.hpp"

#include "base/parse.hpp"
#include "sandbox/uring.hpp"

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <liburing.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "base/log.hpp"

namespace azote::card_blk {
namespace {

constexpr uint32_t kSector = 512;

Unexpected<StoreError> open_error(const std::string& path, const std::string& what, int err = 0) {
  return make_error(StoreErrc::kOpen, "file=" + path + ": " + what, err);
}

// Turns O_DIRECT off on an open file (the page cache takes over).
void drop_direct(int fd, const std::string& path, const std::string& why) {
  const int fl = ::fcntl(fd, F_GETFL);
  if (fl >= 0) (void)::fcntl(fd, F_SETFL, fl & ~O_DIRECT);
  LOG_INFO("file=%s: not using O_DIRECT (%s); I/O goes through the page cache", path.c_str(), why.c_str());
}

class UringQueue final : public StoreQueue {
 public:
  ~UringQueue() override {
    if (ring_ok_) io_uring_queue_exit(&ring_);
  }

  static Result<std::unique_ptr<StoreQueue>, StoreError> create(int fd, uint32_t depth) {
    std::unique_ptr<UringQueue> q(new UringQueue());
    q->fd_ = fd;
    io_uring_params p{};
    // Completions are never dropped (IORING_FEAT_NODROP, Linux 5.5+); a CQ twice the SQ
    // keeps overflow rare when multi-operation requests are in flight.
    p.flags = IORING_SETUP_CQSIZE;
    p.cq_entries = std::max<uint32_t>(depth, 16) * 2;
    q->efd_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!q->efd_) return errno_error(StoreErrc::kSetup, "eventfd");
    // The ring runs what prepare() submits and nothing else: a queue worker taken over
    // through a guest request could otherwise open files or sockets from inside the
    // ring, where seccomp does not look.
    static constexpr uint8_t kOps[] = {IORING_OP_READV, IORING_OP_WRITEV, IORING_OP_FSYNC, IORING_OP_FALLOCATE};
    if (auto r = sandbox::create_restricted_ring(&q->ring_, std::max<uint32_t>(depth, 16), &p, q->efd_.get(), kOps); !r)
      return make_error(StoreErrc::kSetup, r.error().message());
    q->ring_ok_ = true;
    if ((p.features & IORING_FEAT_NODROP) == 0)
      return make_error(StoreErrc::kSetup, "this kernel's io_uring may drop completions (no IORING_FEAT_NODROP)");
    return std::unique_ptr<StoreQueue>(std::move(q));
  }

  uint32_t room() const override { return io_uring_sq_space_left(&ring_); }
  uint32_t unsubmitted() const override { return prepared_; }

  bool prepare(const StoreOp& op) override {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (sqe == nullptr) return false;
    switch (op.kind) {
      case StoreOpKind::kRead:
        io_uring_prep_readv(sqe, fd_, op.iov, op.iovcnt, op.offset);
        break;
      case StoreOpKind::kWrite:
        // RWF_DSYNC: per-write O_DSYNC (a FUA write on a device that has it, else
        // write + flush of the range), so its completion means durable.
        io_uring_prep_writev2(sqe, fd_, op.iov, op.iovcnt, op.offset, op.durable ? RWF_DSYNC : 0);
        break;
      case StoreOpKind::kFlush:
        io_uring_prep_fsync(sqe, fd_, IORING_FSYNC_DATASYNC);
        break;
      case StoreOpKind::kPunchHole:
        io_uring_prep_fallocate(sqe, fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(op.offset),
                                static_cast<off_t>(op.length));
        break;
      case StoreOpKind::kZeroRange:
        io_uring_prep_fallocate(sqe, fd_, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(op.offset),
                                static_cast<off_t>(op.length));
        break;
    }
    io_uring_sqe_set_data64(sqe, op.tag);
    ++prepared_;
    return true;
  }

  Result<uint32_t, StoreError> submit() override {
    if (prepared_ == 0) return 0u;
    const int r = io_uring_submit(&ring_);
    if (r == -EAGAIN || r == -EBUSY || r == -EINTR) return 0u;
    if (r < 0) return make_error(StoreErrc::kSubmit, "io_uring_submit", -r);
    const auto n = static_cast<uint32_t>(r);
    prepared_ -= std::min(prepared_, n);
    in_flight_ += n;
    return n;
  }

  uint32_t in_flight() const override { return in_flight_; }
  int completion_fd() const override { return efd_.get(); }

  uint32_t reap(std::span<StoreCompletion> out) override {
    uint32_t n = 0;
    io_uring_cqe* cqe = nullptr;
    while (n < out.size() && io_uring_peek_cqe(&ring_, &cqe) == 0 && cqe != nullptr) {
      out[n].tag = io_uring_cqe_get_data64(cqe);
      out[n].result = cqe->res;
      io_uring_cqe_seen(&ring_, cqe);
      ++n;
    }
    in_flight_ -= std::min(in_flight_, n);
    return n;
  }

 private:
  UringQueue() = default;
  io_uring ring_{};
  bool ring_ok_ = false;
  int fd_ = -1;
  UniqueFd efd_;
  uint32_t prepared_ = 0;
  uint32_t in_flight_ = 0;
};

}  // namespace

Result<std::unique_ptr<FileStore>, StoreError> FileStore::open(const std::string& path, bool read_only,
                                                               bool allow_direct) {
  std::unique_ptr<FileStore> s(new FileStore());
  s->info_.path = path;
  s->info_.read_only = read_only;
  const int base = (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NOCTTY;
  bool direct = allow_direct;
  if (const auto given = parse_fd_ref(path)) {
    // Opened by the launcher (the card's jail has no path to volumes): a duplicate, so
    // that the volume can be removed and added again. O_DIRECT goes on afterwards.
    s->fd_ = UniqueFd(::fcntl(*given, F_DUPFD_CLOEXEC, 3));
    if (s->fd_ && direct && ::fcntl(s->fd_.get(), F_SETFL, ::fcntl(s->fd_.get(), F_GETFL) | O_DIRECT) != 0) {
      direct = false;
      LOG_INFO("file=%s: the file system refuses O_DIRECT; I/O goes through the page cache", path.c_str());
    }
  } else {
    s->fd_ = UniqueFd(::open(path.c_str(), base | (direct ? O_DIRECT : 0)));
    if (!s->fd_ && direct && errno == EINVAL) {
      direct = false;
      s->fd_ = UniqueFd(::open(path.c_str(), base));
      if (s->fd_) LOG_INFO("file=%s: the file system refuses O_DIRECT; I/O goes through the page cache", path.c_str());
    }
  }
  if (!s->fd_) return open_error(path, "cannot open", errno);
  const int fd = s->fd_.get();

  struct stat st {};
  if (::fstat(fd, &st) != 0) return open_error(path, "fstat", errno);
  s->info_.dev = st.st_dev;
  s->info_.ino = st.st_ino;
  if (S_ISBLK(st.st_mode)) {
    s->info_.block_device = true;
    s->info_.dev = st.st_rdev;
    uint64_t bytes = 0;
    if (::ioctl(fd, BLKGETSIZE64, &bytes) != 0) return open_error(path, "BLKGETSIZE64", errno);
    s->info_.size_bytes = bytes;
  } else if (S_ISREG(st.st_mode)) {
    s->info_.size_bytes = static_cast<uint64_t>(st.st_size);
  } else {
    return open_error(path, "is neither a regular file nor a block device");
  }
  if (s->info_.size_bytes < kSector) return open_error(path, "is smaller than one 512-byte sector");
  if (s->info_.size_bytes % kSector != 0)
    LOG_WARN("file=%s: size %llu is not a multiple of 512; the last %llu bytes are not served", path.c_str(),
             static_cast<unsigned long long>(s->info_.size_bytes),
             static_cast<unsigned long long>(s->info_.size_bytes % kSector));

  // One card per volume: a second card (or volume) on the same file would corrupt it.
  if (::flock(fd, (read_only ? LOCK_SH : LOCK_EX) | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) return open_error(path, "is in use by another volume or card (flock)");
    return open_error(path, "flock", errno);
  }

  if (direct) {
    uint32_t mem_align = kSector, offset_align = kSector;
    struct statx sx {};
    if (::statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &sx) == 0 && (sx.stx_mask & STATX_DIOALIGN) != 0) {
      mem_align = sx.stx_dio_mem_align;
      offset_align = sx.stx_dio_offset_align;
    } else if (s->info_.block_device) {
      int lbs = 0;
      if (::ioctl(fd, BLKSSZGET, &lbs) == 0 && lbs > 0) mem_align = offset_align = static_cast<uint32_t>(lbs);
    }
    if (offset_align == 0) {
      direct = false;
      drop_direct(fd, path, "the file system reports no direct I/O support");
    } else if (offset_align > kSector) {
      direct = false;
      drop_direct(fd, path, "direct I/O needs " + std::to_string(offset_align) + "-byte alignment; sectors are 512");
    } else {
      // The statx answer is not the whole truth on every file system: try a read.
      void* probe = std::aligned_alloc(4096, 4096);
      const ssize_t n = probe != nullptr ? ::pread(fd, probe, kSector, 0) : -1;
      const int err = errno;
      std::free(probe);
      if (n != static_cast<ssize_t>(kSector)) {
        direct = false;
        drop_direct(fd, path, std::string("a direct probe read failed: ") + std::strerror(n < 0 ? err : EIO));
      }
    }
    s->info_.mem_align = std::max<uint32_t>(mem_align, 1);
    s->info_.offset_align = std::max<uint32_t>(offset_align, 1);
  }
  s->info_.direct = direct;
  if (!direct) s->info_.mem_align = s->info_.offset_align = 1;
  return s;
}

Result<std::unique_ptr<StoreQueue>, StoreError> FileStore::open_queue(uint32_t depth) {
  return UringQueue::create(fd_.get(), depth);
}

}  // namespace azote::card_blk
