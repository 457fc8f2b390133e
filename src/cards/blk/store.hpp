// Where a volume's bytes live, behind an interface: today a local file or block
// device (FileStore, io_uring); later a client of a remote EBS-like service
// (docs/design.md, ROADMAP "Remote EBS"), with the same queue workers above it.
//
// A Store is opened once per volume. Each virtqueue worker gets its own StoreQueue
// (one thread uses it): it prepares operations, submits them in batches, and learns
// about completions through an fd it can put in its epoll set.
#pragma once

#include <sys/types.h>
#include <sys/uio.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "base/error.hpp"

namespace azote::card_blk {

enum class StoreErrc {
  kOpen = 1,  // the backing file cannot be opened, locked or sized
  kSetup,     // io_uring/eventfd setup failed (host resources)
  kSubmit,    // the kernel refused a submission for a reason other than "busy"
};
using StoreError = Error<StoreErrc>;

enum class StoreOpKind : uint8_t {
  kRead,       // readv(iov) at offset
  kWrite,      // writev(iov) at offset; with `durable`, on stable storage when it completes
  kFlush,      // fdatasync
  kPunchHole,  // deallocate [offset, offset+length); reads return zeros
  kZeroRange,  // [offset, offset+length) reads as zeros; may fail with -EOPNOTSUPP
};

struct StoreOp {
  StoreOpKind kind = StoreOpKind::kRead;
  uint64_t offset = 0;
  uint64_t length = 0;           // kPunchHole, kZeroRange
  const iovec* iov = nullptr;    // kRead, kWrite: valid until the completion is reaped
  uint32_t iovcnt = 0;
  uint64_t tag = 0;              // returned with the completion
  // kWrite: complete only once the data (and what is needed to read it back) is on
  // stable storage, as if followed by a kFlush of that range: FUA. FileStore uses
  // RWF_DSYNC. The write-through cache mode (VIRTIO_BLK_F_CONFIG_WCE) sets it.
  bool durable = false;
};

struct StoreCompletion {
  uint64_t tag = 0;
  int64_t result = 0;  // bytes transferred (kRead/kWrite, may be short), 0, or -errno
};

// What the queue workers need to know about the backing store.
struct StoreInfo {
  std::string path;
  uint64_t size_bytes = 0;
  bool read_only = false;
  bool block_device = false;
  bool direct = false;          // O_DIRECT: buffers must honour the alignments below
  uint32_t mem_align = 1;       // buffer address alignment for zero-copy I/O
  uint32_t offset_align = 1;    // file offset and length alignment
  dev_t dev = 0;                // identity of the file (default serial)
  ino_t ino = 0;
};

class StoreQueue {
 public:
  virtual ~StoreQueue() = default;
  // Operations prepare() can take before a submit().
  virtual uint32_t room() const = 0;
  // Queues one operation; false when there is no room (submit() first).
  virtual bool prepare(const StoreOp& op) = 0;
  // Prepared and not yet handed over by submit().
  virtual uint32_t unsubmitted() const = 0;
  // Hands the prepared operations to the store; returns how many went (0 when it is
  // momentarily busy: retry after reaping).
  virtual Result<uint32_t, StoreError> submit() = 0;
  // Operations submitted and not yet reaped.
  virtual uint32_t in_flight() const = 0;
  // eventfd: readable when completions may be ready. Read it, then reap() until empty.
  virtual int completion_fd() const = 0;
  // Takes up to out.size() completions; returns how many.
  virtual uint32_t reap(std::span<StoreCompletion> out) = 0;
};

class Store {
 public:
  virtual ~Store() = default;
  virtual const StoreInfo& info() const = 0;
  // A queue for one virtqueue worker with room for `depth` operations in flight.
  virtual Result<std::unique_ptr<StoreQueue>, StoreError> open_queue(uint32_t depth) = 0;
};

}  // namespace azote::card_blk
