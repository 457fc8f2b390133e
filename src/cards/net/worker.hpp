// The data path of one ENI: a thread that owns both of its virtqueues. It wakes on
// the guest's kicks (transmit queue: frames to handle; receive queue: new buffers)
// and on its Inbox (frames for the guest), and works in batches:
//
//   transmit: up to kBatch chains popped -> each copied once out of guest memory
//   (virtio-net header + frame, lib/virtio validated the chain) into card buffers and
//   completed at once -> Switch::transmit() on the batch -> one interrupt if due.
//   receive: inbox frames copied into the guest's posted buffers (header first,
//   num_buffers 1) -> used ring -> one interrupt if due. Frames wait in the inbox
//   while the guest posts no buffer.
//
// Rate limits (limits.hpp, per direction): each transmit chain is admitted by the ENI's
// tx limiter after it is popped; one refused is put back (the avail index steps back,
// the chain stays the guest's) and the rest of the ring waits with it. Each inbox frame
// is admitted by the rx limiter before a guest buffer is taken for it; one refused stays
// at the inbox's front. Either way a timerfd armed with the limiter's wait wakes the
// worker to ask again (a kick or an inbox push meanwhile only asks early). Nothing is
// dropped or charged at a stop: the frames stay where they were.
//
// A queue the driver breaks (lib/virtio refuses a chain) stops; the device reports
// DEVICE_NEEDS_RESET until the driver resets it. Created and stopped on the vhost-user
// control thread (NetDevice); nothing here throws.
#pragma once

#include <array>
#include <atomic>
#include <memory>
#include <optional>
#include <vector>

#include "base/error.hpp"
#include "base/log.hpp"
#include "base/unique_fd.hpp"
#include "rate_limit/clock.hpp"
#include "runtime/runtime.hpp"
#include "cards/net/switch.hpp"
#include "vhost_user/device.hpp"
#include "virtio/queue.hpp"

namespace azote::card_net {

class InboxBatch;
inline constexpr size_t kBatch = 32;

enum class WorkerErrc { kSetup = 1 };
using WorkerError = Error<WorkerErrc>;

class Worker {
 public:
  // `rx`/`tx`: the running rings (either may be absent). `needs_reset` is the
  // device's flag, set when a queue breaks.
  static Result<std::unique_ptr<Worker>, WorkerError> start(Port& port, Switch& sw,
                                                            const std::optional<vhost_user::VringInfo>& rx,
                                                            const std::optional<vhost_user::VringInfo>& tx,
                                                            std::atomic<bool>& needs_reset);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Joins the thread; returns each queue's next avail index (0 for an absent one). The
  // thread sees the stop within one round of its loop (each round's work is bounded by
  // kBatch and the inbox); one that has not returned within runtime::kWorkerStopDeadline
  // ends the process with kExitStuckWorker (runtime::BoundedThread) rather than hold the
  // control thread and every other ENI.
  std::array<uint16_t, 2> stop();

 private:
  struct Ring {
    vhost_user::VringInfo info;
    std::unique_ptr<virtio::SplitQueue> queue;
    bool broken = false;
  };
  Worker(Port& port, Switch& sw, std::atomic<bool>& needs_reset);
  Result<void, WorkerError> setup(uint32_t index, const vhost_user::VringInfo& v);
  void run();
  // true: the batch was full, more may wait. `wait`: set when the limiter held the rest.
  bool transmit(rate_limit::Nanos& wait);
  void receive(rate_limit::Nanos& wait);
  // Datagrams in the ENI's inbox socket (other cards' frames): at most kBatch per round,
  // each with its sender's uid, through Switch::receive_neighbour into the inbox.
  void take_from_neighbours();
  void arm_timer(rate_limit::Nanos wait);
  void interrupt(Ring& r);
  void break_queue(Ring& r, const std::string& why);

  Port& port_;
  Switch& sw_;
  std::atomic<bool>& needs_reset_;
  std::array<std::optional<Ring>, 2> rings_;
  std::vector<TxFrame> frames_;
  std::unique_ptr<InboxBatch> in_;  // take_from_neighbours()' buffers (ENIs with an inbox)
  virtio::Chain chain_;
  bool rx_admitted_ = false;  // the inbox's front frame passed the rx limiter
  UniqueFd epoll_, stop_, timer_;
  runtime::BoundedThread thread_;
  log::RateLimit log_limit_{10, std::chrono::seconds(10)};
};

}  // namespace azote::card_net
