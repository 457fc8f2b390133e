// The data path of one virtqueue: a thread that takes requests off the ring, runs
// them against the volume's store (io_uring), and completes them through the used
// ring and the call eventfd. Nothing here runs hypervisor code, and nothing here
// throws.
//
// Per request (a descriptor head): popped and marked in the inflight area ->
// parsed by virtio::parse_blk (rejects completed at once with the status the spec
// asks for) -> FIFO of waiting requests -> admitted by the volume's rate limiter
// (else a timerfd re-checks later) -> executed: zero-copy readv/writev into guest
// memory when the file allows it, else through card-owned bounce buffers in chunks
// (always when encrypted: encrypt-then-write, read-then-decrypt) -> completed:
// status byte, used ring, inflight mark cleared, interrupt if needs_interrupt().
//
// Threading: create() and stop() are called on the vhost-user control thread; the
// worker thread owns everything else. See DESIGN.md for the stop/restart contract.
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "base/error.hpp"
#include "base/log.hpp"
#include "base/unique_fd.hpp"
#include "cards/blk/crypto.hpp"
#include "cards/blk/volume.hpp"
#include "runtime/runtime.hpp"
#include "vhost_user/device.hpp"
#include "virtio/queue.hpp"

namespace azote::card_blk {

enum class WorkerErrc { kSetup = 1 };
using WorkerError = Error<WorkerErrc>;

// Card-owned buffers for data that must not be used in place: fixed-size chunks,
// allocated on first use, at most kBounceChunks per queue (a request waits when they
// are all busy; one chunk is enough for any request to progress).
inline constexpr uint64_t kBounceChunkBytes = 256 * 1024;
inline constexpr uint32_t kBounceChunks = 64;

class QueueWorker {
 public:
  static Result<std::unique_ptr<QueueWorker>, WorkerError> create(Volume& volume, const vhost_user::VringInfo& v);
  ~QueueWorker();
  QueueWorker(const QueueWorker&) = delete;
  QueueWorker& operator=(const QueueWorker&) = delete;

  void start();
  // Takes no more requests and completes every one already taken, throttled ones
  // included (charged to the rate limiter, which may go into debt), then joins the
  // thread. Returns the next avail index. Heads stay marked in the inflight area only
  // when the process dies: a stop leaves it clean (see DESIGN.md, "Restart").
  // Bounded: a worker that has not finished within `deadline` (its store operations do
  // not complete) ends the process with runtime::kExitStuckWorker rather than hold the
  // control thread, and every other volume, for ever (runtime::BoundedThread).
  uint16_t stop(std::chrono::milliseconds deadline = runtime::kWorkerStopDeadline);

 private:
  struct Slot {
    enum class State : uint8_t { kFree, kWaiting, kRunning };
    State state = State::kFree;
    virtio::BlkRequest req;
    uint64_t popped_ns = 0;
    uint64_t throttled_ns = 0;  // when it first had to wait for the limiter
    bool throttled = false;
    bool admitted = false;
    bool bounce_waited = false;
    bool force_bounce = false;   // zero-copy direct I/O was refused (EINVAL): use a card buffer
    bool zero_writes = false;    // write zeroes written out as data
    bool zero_fallback = false;  // a ZERO_RANGE came back unsupported
    bool write_through = false;  // taken in write-through mode: its writes are durable ones
    bool synced = false;         // write-through ZERO_RANGE: the flush after it was issued
    uint8_t* bounce = nullptr;
    uint32_t ops = 0;  // store operations outstanding
    int err = 0;       // first store failure (errno)
    uint64_t done = 0;        // data bytes finished
    uint64_t chunk_off = 0;   // bounce: file offset of the chunk in flight
    uint64_t chunk_len = 0;   // bounce: its length
    uint64_t chunk_done = 0;  // bounce: bytes of it already transferred (short I/O)
    uint32_t seg = 0;         // explicit zero writes: current segment
    uint64_t seg_done = 0;    //   and bytes of it written
    iovec one{};              // bounce: the iovec handed to the store
    std::vector<iovec> rest;  // zero-copy: what is left after a short transfer
  };

  // A FIFO of heads, each at most once; capacity = queue size.
  class HeadFifo {
   public:
    void init(uint32_t n) {
      ring_.assign(n, 0);
      head_ = count_ = 0;
    }
    bool empty() const { return count_ == 0; }
    uint32_t size() const { return count_; }
    uint16_t front() const { return ring_[head_]; }
    void pop_front() {
      head_ = (head_ + 1) % ring_.size();
      --count_;
    }
    void push_back(uint16_t h) { ring_[(head_ + count_++) % ring_.size()] = h; }
    void push_front(uint16_t h) {
      head_ = (head_ + static_cast<uint32_t>(ring_.size()) - 1) % ring_.size();
      ring_[head_] = h;
      ++count_;
    }
    void clear() { head_ = count_ = 0; }

   private:
    std::vector<uint16_t> ring_;
    uint32_t head_ = 0, count_ = 0;
  };

  class BouncePool {
   public:
    ~BouncePool();
    uint8_t* get();
    void put(uint8_t* p) { free_.push_back(p); }

   private:
    std::vector<uint8_t*> all_, free_;
  };

  QueueWorker(Volume& volume, const vhost_user::VringInfo& v);
  void run();
  void take_resubmitted();
  void poll_avail();
  void drain_avail();
  void take(const virtio::Chain& chain);
  void dispatch();
  bool start_request(uint16_t head);
  bool prepare_op(const StoreOp& op, Slot& s);
  bool ensure_room(uint32_t n);
  bool next_chunk(uint16_t head);
  void prepare_chunk(uint16_t head);
  void on_completion(uint16_t head, int64_t res);
  void on_data_completion(uint16_t head, int64_t res);
  void requeue(uint16_t head);
  void finish(uint16_t head, uint8_t status);
  void publish(uint16_t head, uint32_t len);
  void release(Slot& s);
  void reap();
  void submit();
  void signal_driver();
  void arm_timer(uint64_t ns);
  void break_queue(const std::string& why);
  uint64_t now_ns() const;
  uint64_t cost_bytes(const Slot& s) const;
  bool zero_copy_ok(const Slot& s) const;

  Volume& vol_;
  StoreQueue& store_;
  const uint32_t index_;
  const uint16_t size_;
  const uint64_t features_;
  vhost_user::InflightQueue* inflight_;
  std::vector<uint16_t> resubmit_;
  vhost_user::VringInfo ring_;  // addresses and fds (borrowed until stop() returns)
  virtio::SplitQueue queue_;
  std::unique_ptr<XtsCipher> cipher_;
  UniqueFd epoll_, timer_, stop_fd_;
  runtime::BoundedThread thread_;

  std::vector<Slot> slots_;
  HeadFifo waiting_;  // popped, not yet executing (throttled, or waiting for memory/room)
  HeadFifo stalled_;  // executing, next chunk could not be prepared (no room): retried first
  BouncePool pool_;
  virtio::Chain chain_;
  std::vector<StoreCompletion> completions_;
  uint32_t busy_ = 0;  // slots not free
  bool broken_ = false;
  bool stopping_ = false;
  bool kick_pending_ = false;
  bool interrupt_pending_ = false;
  bool timer_armed_ = false;
  bool retry_soon_ = false;  // store was busy: try again in a millisecond
  log::RateLimit log_limit_{10, std::chrono::seconds(10)};
};

}  // namespace azote::card_blk
