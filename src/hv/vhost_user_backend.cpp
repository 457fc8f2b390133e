#include "hv/vhost_user_backend.hpp"

#include <sys/eventfd.h>

#include "base/log.hpp"
#include "virtio/spec.hpp"

namespace azote::hv {
namespace {

// Transport-level features azote-hv can honour for a card (virtio 1.2 §6): device
// bits 0-23, INDIRECT_DESC (28), EVENT_IDX (29), VERSION_1 (32). Packed rings,
// ACCESS_PLATFORM, notification data and the like are not offered to the driver.
constexpr uint64_t kVersion1 = uint64_t{1} << virtio::kFVersion1;
constexpr uint64_t kTransportFeatures = 0xffffffull | (uint64_t{1} << virtio::kFRingIndirectDesc) |
                                        (uint64_t{1} << virtio::kFRingEventIdx) | kVersion1;

std::string where(const DeviceConfig& cfg) {
  if (cfg.from_control) return cfg.type + " device on socket " + cfg.socket;
  return "--device " + cfg.type + ",socket=" + cfg.socket;
}

}  // namespace

VhostUserBackend::VhostUserBackend(const DeviceConfig& cfg, kvm::VmFd& vm, const GuestMemory& mem,
                                   vhost_user::Frontend fe, uint64_t mmio_base, uint32_t gsi)
    : cfg_(cfg), vm_(vm), mem_(mem), fe_(std::move(fe)), mmio_base_(mmio_base), gsi_(gsi) {}

VhostUserBackend::~VhostUserBackend() { unwire(); }

Result<std::unique_ptr<VhostUserBackend>, std::string> VhostUserBackend::create(const DeviceConfig& cfg, kvm::VmFd& vm,
                                                                                const GuestMemory& mem,
                                                                                uint64_t mmio_base, uint32_t gsi) {
  vhost_user::FrontendOptions opts;
  opts.timeout = std::chrono::milliseconds(5000);
  auto fe = vhost_user::Frontend::connect(cfg.socket, opts);
  if (!fe.ok()) return Unexpected{where(cfg) + ": cannot reach the card: " + fe.error().message()};
  std::unique_ptr<VhostUserBackend> b(new VhostUserBackend(cfg, vm, mem, std::move(fe).value(), mmio_base, gsi));
  // Identity only: everything else (queues, features, config) is the card's.
  const DeviceKind* kind = find_device_kind(cfg.type);
  if (kind == nullptr) return Unexpected{where(cfg) + ": unknown device kind (known: " + known_device_kinds() + ")"};
  b->device_id_ = kind->device_id;
  const uint64_t offered = b->fe_.backend_features();
  if ((offered & kVersion1) == 0) return Unexpected{where(cfg) + ": the card does not offer VIRTIO_F_VERSION_1"};
  b->features_ = offered & kTransportFeatures;
  if (b->fe_.queue_num() > 0) b->num_queues_ = static_cast<uint16_t>(std::min<uint32_t>(b->fe_.queue_num(), 16));
  b->inflight_tracked_ = (b->fe_.protocol_features() & vhost_user::bit(vhost_user::kPfInflightShmfd)) != 0;
  if ((b->fe_.protocol_features() & vhost_user::bit(vhost_user::kPfConfig)) == 0)
    return Unexpected{where(cfg) + ": the card does not offer the CONFIG protocol feature (needed for config space)"};
  LOG_INFO("%s: features %#llx, %u queue(s), protocol features %#llx", where(cfg).c_str(),
           static_cast<unsigned long long>(b->features_), b->num_queues_,
           static_cast<unsigned long long>(b->fe_.protocol_features()));
  return b;
}

void VhostUserBackend::fail(const std::string& what, const std::string& why) {
  static log::RateLimit limit(8, std::chrono::seconds(10));
  if (limit.allow()) LOG_ERROR("%s: %s: %s", where(cfg_).c_str(), what.c_str(), why.c_str());
}

bool VhostUserBackend::read_config(uint32_t offset, std::span<uint8_t> out) {
  if (out.empty() || offset > 256 || out.size() > 256 - offset) return false;
  // Read the whole window up to the end of the access so partial reads of a field
  // see one consistent snapshot of it.
  auto r = fe_.get_config(0, static_cast<uint32_t>(offset + out.size()));
  if (!r.ok()) {
    fail("GET_CONFIG", r.error().message());
    return false;
  }
  if (r->size() < offset + out.size()) return false;
  std::copy(r->begin() + offset, r->begin() + static_cast<long>(offset + out.size()), out.begin());
  return true;
}

bool VhostUserBackend::write_config(uint32_t offset, std::span<const uint8_t> in) {
  // Forwarded as is: the card validates which fields the driver may write. The call
  // is bounded by the frontend's timeout, so a hung card cannot hold this vCPU longer.
  // Later reads ask the card again (GET_CONFIG), so they show what it accepted.
  auto r = fe_.set_config(offset, in);
  if (!r.ok()) fail("SET_CONFIG", r.error().message());
  return r.ok();
}

bool VhostUserBackend::activate(uint64_t acked, const std::vector<std::optional<virtio_mmio::QueueConfig>>& queues) {
  constexpr uint8_t kFeaturesOk = virtio::kStatusAcknowledge | virtio::kStatusDriver | virtio::kStatusFeaturesOk;
  if (auto r = fe_.set_features(acked & features_); !r.ok()) {
    fail("SET_FEATURES", r.error().message());
    return false;
  }
  // The driver's status as it is now (it set FEATURES_OK, then DRIVER_OK to get here).
  if (fe_.has_status()) {
    if (auto r = fe_.set_status(kFeaturesOk); !r.ok()) {
      fail("SET_STATUS", r.error().message());
      return false;
    }
  }
  if (!mem_table_sent_) {
    if (auto r = fe_.set_mem_table(mem_); !r.ok()) {
      fail("SET_MEM_TABLE", r.error().message());
      return false;
    }
    mem_table_sent_ = true;
  }
  // Inflight tracking lets a restarted card finish what it had taken from the rings. A
  // fresh area at every activation (each follows a device reset or the first init), so
  // marks from before a guest's reset can never be resubmitted into its new rings.
  if (inflight_tracked_) {
    if (auto r = fe_.get_inflight_fd(num_queues_, kMaxQueueSize); !r.ok()) {
      fail("GET_INFLIGHT_FD", r.error().message());
      return false;
    }
    if (auto r = fe_.set_inflight_fd(); !r.ok()) {
      fail("SET_INFLIGHT_FD", r.error().message());
      return false;
    }
  }
  for (uint32_t i = 0; i < queues.size(); ++i) {
    if (!queues[i]) continue;
    const auto& q = *queues[i];
    auto desc = vhost_user::Frontend::user_addr(mem_, GuestAddress(q.desc), 16ull * q.size);
    auto avail = vhost_user::Frontend::user_addr(mem_, GuestAddress(q.avail), 6 + 2ull * q.size);
    auto used = vhost_user::Frontend::user_addr(mem_, GuestAddress(q.used), 6 + 8ull * q.size);
    if (!desc || !avail || !used) {
      fail("queue " + std::to_string(i), "the driver placed a ring outside guest RAM");
      unwire();
      return false;
    }
    Wiring w{i, UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)), UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK))};
    if (!w.kick || !w.call) {
      fail("queue " + std::to_string(i), "eventfd failed");
      unwire();
      return false;
    }
    // Kick: the driver writes the queue index to QueueNotify; KVM signals the eventfd.
    if (auto r = vm_.ioeventfd(mmio_base_ + kQueueNotifyOffset, 4, i, w.kick.get()); !r.ok()) {
      fail("queue " + std::to_string(i), r.error().message());
      unwire();
      return false;
    }
    if (auto r = vm_.irqfd(gsi_, w.call.get()); !r.ok()) {
      (void)vm_.ioeventfd(mmio_base_ + kQueueNotifyOffset, 4, i, w.kick.get(), true);
      fail("queue " + std::to_string(i), r.error().message());
      unwire();
      return false;
    }
    vhost_user::VringConfig vc;
    vc.index = i;
    vc.num = q.size;
    vc.base = 0;
    vc.desc_user_addr = *desc;
    vc.avail_user_addr = *avail;
    vc.used_user_addr = *used;
    vc.kick_fd = w.kick.get();
    vc.call_fd = w.call.get();
    wired_.push_back(std::move(w));
    if (auto r = fe_.setup_vring(vc); !r.ok()) {
      fail("queue " + std::to_string(i) + " setup", r.error().message());
      unwire();
      return false;
    }
    if ((fe_.protocol_features() != 0)) {
      if (auto r = fe_.set_vring_enable(i, true); !r.ok()) {
        fail("queue " + std::to_string(i) + " enable", r.error().message());
        unwire();
        return false;
      }
    }
  }
  if (fe_.has_status()) {
    if (auto r = fe_.set_status(static_cast<uint8_t>(kFeaturesOk | virtio::kStatusDriverOk)); !r.ok()) {
      fail("SET_STATUS", r.error().message());
      unwire();
      return false;
    }
  }
  next_status_query_ = {};
  return true;
}

void VhostUserBackend::reset() {
  for (const auto& w : wired_) {
    if (!fe_.connected()) break;
    if (auto r = fe_.get_vring_base(w.index); !r.ok()) fail("GET_VRING_BASE", r.error().message());
  }
  unwire();
  // The device's own state goes back to its initial values too (virtio 1.2 §2.4), e.g.
  // a virtio-blk cache mode the driver chose: the card does that on RESET_DEVICE. A card
  // without it keeps its state, and the frontend keeps replaying the config writes it
  // accepted. A card that is away gets the reset implicitly: its next session starts
  // from the initial state and nothing is replayed.
  // With STATUS the driver's own reset (status 0) is forwarded as it is: the card resets
  // the device as on RESET_DEVICE, and forgets a DEVICE_NEEDS_RESET condition with it.
  if (fe_.has_status()) {
    if (auto r = fe_.set_status(0); !r.ok() && fe_.connected()) fail("SET_STATUS 0", r.error().message());
  } else if (fe_.can_reset_device()) {
    if (auto r = fe_.reset_device(); !r.ok() && fe_.connected()) fail("RESET_DEVICE", r.error().message());
  }
}

bool VhostUserBackend::needs_reset() {
  if (!fe_.connected() || !fe_.has_status()) return false;
  const auto now = std::chrono::steady_clock::now();
  if (now < next_status_query_) return false;
  next_status_query_ = now + kStatusQueryInterval;
  // Bounded by the frontend's timeout; a card that does not answer loses its connection
  // (and is reconnected by the main thread), the vCPU goes on.
  auto r = fe_.get_status();
  if (!r.ok()) {
    fail("GET_STATUS", r.error().message());
    return false;
  }
  if ((*r & virtio::kStatusNeedsReset) == 0) return false;
  // A guest may break and reset its device in a loop: rate-limited like fail().
  static log::RateLimit limit(8, std::chrono::seconds(10));
  if (limit.allow())
    LOG_WARN("%s: the card reports DEVICE_NEEDS_RESET (a queue broke or could not start); the driver must reset "
             "the device",
             where(cfg_).c_str());
  return true;
}

void VhostUserBackend::disconnected() {
  LOG_WARN("%s: the card closed its connection; waiting for it to come back", where(cfg_).c_str());
  // The ioeventfds and irqfds stay: kicks queue up in the eventfds and the restarted
  // card picks them up with the replayed vrings.
  fe_.disconnect();
}

VhostUserBackend::Reconnect VhostUserBackend::try_reconnect() {
  if (inflight_tracked_ || wired_.empty()) {
    auto r = fe_.reconnect(cfg_.socket);
    if (!r.ok()) {
      LOG_DEBUG("%s: reconnect: %s", where(cfg_).c_str(), r.error().message().c_str());
      return Reconnect::kNotYet;
    }
    ++reconnects_;
    LOG_WARN("%s: reconnected to the card; %zu queue(s) replayed", where(cfg_).c_str(), wired_.size());
    return Reconnect::kReplayed;
  }
  vhost_user::FrontendOptions opts;
  opts.timeout = std::chrono::milliseconds(1000);
  auto fe = vhost_user::Frontend::connect(cfg_.socket, opts);
  if (!fe.ok()) {
    LOG_DEBUG("%s: reconnect: %s", where(cfg_).c_str(), fe.error().message().c_str());
    return Reconnect::kNotYet;
  }
  unwire();
  fe_ = std::move(fe).value();
  mem_table_sent_ = false;
  inflight_tracked_ = (fe_.protocol_features() & vhost_user::bit(vhost_user::kPfInflightShmfd)) != 0;
  ++reconnects_;
  LOG_WARN("%s: reconnected to a card without in-flight tracking (INFLIGHT_SHMFD); the device needs a reset by the "
           "guest driver",
           where(cfg_).c_str());
  return Reconnect::kNeedsReset;
}

void VhostUserBackend::unwire() {
  for (auto& w : wired_) {
    (void)vm_.ioeventfd(mmio_base_ + kQueueNotifyOffset, 4, w.index, w.kick.get(), true);
    (void)vm_.irqfd(gsi_, w.call.get(), true);
  }
  wired_.clear();
}

}  // namespace azote::hv
