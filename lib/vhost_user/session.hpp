// The backend's protocol state machine for one frontend connection, as a pure function
// of (header, payload, fds): no sockets, so tests and the fuzzer drive it directly.
//
// Every message is first checked by validate_request() (syntax), then against the
// session state (negotiated features, queue index and size, memory table, ring
// placement). Any failure is returned as an error: the caller (Backend) logs it, sends
// a REPLY_ACK failure if one was asked for, drops the connection and calls reset().
// The only non-fatal refusals are the device's own answers to GET_CONFIG/SET_CONFIG.
//
// RESET_DEVICE (the driver reset the device) stops every queue, forgets the rings
// (sizes, addresses, bases, fds, enable state) and the device status, and tells the
// device (device_reset()); the memory table, the inflight area and the negotiated
// features stay. SET_STATUS 0 (protocol feature STATUS) is the same device reset.
//
// Device status (protocol feature STATUS): SET_STATUS stores the driver's status byte
// (a value over 8 bits is a protocol error; the DEVICE_NEEDS_RESET bit is the device's
// to set and is not stored); GET_STATUS answers with it, plus DEVICE_NEEDS_RESET while
// Device::needs_reset() says so. The status does not gate the rings: they start and
// stop as described below, whether or not a frontend ever sends SET_STATUS.
//
// Queue lifecycle (vhost-user.rst "Ring states"): a ring is started by SET_VRING_KICK
// and stopped by GET_VRING_BASE; it is enabled by SET_VRING_ENABLE (or from the start
// if VHOST_USER_F_PROTOCOL_FEATURES was not acked). The device sees a queue as running
// while it is started and enabled. Any change under a running queue (kick/call/err fd,
// memory table, inflight region) stops it, applies the change and starts it again, so
// the device never sees memory or fds change under a running worker.
#pragma once

#include <optional>
#include <vector>

#include "base/mapping.hpp"
#include "base/unique_fd.hpp"
#include "vhost_user/device.hpp"
#include "vhost_user/inflight.hpp"
#include "vhost_user/memory_table.hpp"
#include "vhost_user/message.hpp"

namespace azote::vhost_user {

// Protocol features this backend implements (offered when the device also wants them).
inline constexpr uint64_t kBackendProtocolFeatures = bit(kPfMq) | bit(kPfReplyAck) | bit(kPfConfig) |
                                                     bit(kPfInflightShmfd) | bit(kPfResetDevice) |
                                                     bit(kPfConfigureMemSlots) | bit(kPfStatus);

// Checks a device's advertised limits (queue count and size) before serving it.
Result<void, VuError> check_device(const Device& device);

class Session {
 public:
  // `device` must outlive the session and pass check_device().
  explicit Session(Device& device);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  struct Reply {
    Header hdr;
    std::vector<uint8_t> payload;
    int fd = -1;  // borrowed from the session; valid until the next handle() or reset()
  };

  // Handles one frontend message. Returns the reply to send, if any (a request's own
  // reply, or the REPLY_ACK u64).
  Result<std::optional<Reply>, VuError> handle(const Header& hdr, std::span<const uint8_t> payload,
                                               std::vector<UniqueFd> fds);

  // True if `hdr` asks for a REPLY_ACK (NEED_REPLY set, REPLY_ACK negotiated, request
  // has no reply of its own). Evaluate before handle(): handling may change it.
  bool wants_ack(const Header& hdr) const;
  static Reply ack_reply(const Header& hdr, uint64_t status);

  // The frontend went away: stop every queue, unmap memory and the inflight region,
  // close every fd, forget the negotiation, tell the device.
  void reset();

  // Introspection (tests, metrics).
  const MemoryTable& memory() const { return memory_; }
  uint64_t acked_features() const { return acked_features_; }
  uint64_t acked_protocol_features() const { return acked_protocol_; }
  bool queue_running(uint32_t index) const { return index < vrings_.size() && vrings_[index].running; }
  bool has_inflight() const { return inflight_.has_value(); }
  uint8_t status() const { return status_; }  // as stored by SET_STATUS (no NEEDS_RESET)

 private:
  struct Vring {
    uint16_t num = 0;  // 0 until SET_VRING_NUM
    uint16_t base = 0;
    bool addr_set = false;
    VringAddr addr{};
    UniqueFd kick, call, err;
    bool started = false;  // SET_VRING_KICK seen since the last stop
    bool enabled = false;  // SET_VRING_ENABLE state
    bool running = false;  // the device was told queue_started
  };
  struct Placement {
    GuestAddress desc, avail, used;
  };
  struct InflightArea {
    UniqueFd fd;  // ours when created by GET_INFLIGHT_FD (sent in the reply), or the frontend's
    MappedRegion map;
    InflightDesc desc{};
    std::vector<InflightQueue> queues;
  };

  using Handled = Result<std::optional<Reply>, VuError>;
  Handled dispatch(const Header& hdr, std::span<const uint8_t> payload, std::vector<UniqueFd>& fds);

  bool negotiated(unsigned protocol_feature) const { return (acked_protocol_ & bit(protocol_feature)) != 0; }
  uint64_t offered_features() const;
  uint64_t offered_protocol() const;
  Result<uint32_t, VuError> queue_index(uint64_t index, const char* what) const;
  Result<void, VuError> require(unsigned protocol_feature, Request r) const;
  Result<void, VuError> check_not_started(uint32_t index, Request r) const;
  Result<Placement, VuError> place(const VringAddr& a, uint16_t num) const;

  bool effectively_enabled(const Vring& v) const;
  Result<void, VuError> maybe_run(uint32_t index);
  Result<void, VuError> start(uint32_t index);
  void stop(uint32_t index);
  // Stops every running queue, runs `change`, restarts the queues that were running.
  template <class F>
  Result<void, VuError> with_queues_stopped(F&& change);
  Result<InflightArea, VuError> make_inflight_area(UniqueFd fd, const InflightDesc& d, bool fresh);
  Result<void, VuError> check_inflight_geometry(const InflightDesc& d) const;
  // RESET_DEVICE / SET_STATUS 0: stop and forget every ring, forget the status, tell
  // the device.
  void reset_device();

  Device& device_;
  uint32_t num_queues_;
  uint32_t max_queue_size_;
  uint64_t acked_features_ = 0;
  uint64_t acked_protocol_ = 0;
  MemoryTable memory_;
  std::vector<Vring> vrings_;
  std::optional<InflightArea> inflight_;
  uint8_t status_ = 0;  // the driver's device status from SET_STATUS
};

}  // namespace azote::vhost_user
