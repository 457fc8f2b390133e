// The hypervisor's side of a vhost-user connection: negotiates with a card, shares
// guest RAM (the memfd) and hands over each queue (ring addresses, kick ioeventfd, call
// irqfd). After setup the data path never runs through this object.
//
// The backend is not trusted: every call is bounded by a timeout, every reply is
// checked by validate_reply() (request code, flags, exact size, fd count), and
// nothing the backend sends is ever mapped (the inflight fd is only stored and handed
// back). Any transport or protocol error closes the connection; the caller marks the
// device as needing reset, or calls reconnect() when the card comes back.
//
// Everything that shapes backend state is recorded in a VringSetup, so reconnect()
// can redo the handshake on a new connection and replay: features, memory table,
// inflight fd, the driver's accepted config writes (a new backend session starts from
// the device's defaults, and the driver must not see its choices undone by a card
// restart), then every active vring (its base is the used ring's idx, read from
// guest memory; a backend with INFLIGHT_SHMFD adds the heads it still had in flight)
// and its enable state, then the device status (STATUS).
//
// Not thread-safe: one thread (the VMM's device-setup thread) uses a Frontend.
#pragma once

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "base/unique_fd.hpp"
#include "guest_memory/guest_memory.hpp"
#include "vhost_user/connection.hpp"
#include "vhost_user/message.hpp"

namespace azote::vhost_user {

// Protocol features the frontend asks for when the backend offers them.
inline constexpr uint64_t kFrontendProtocolFeatures = bit(kPfMq) | bit(kPfReplyAck) | bit(kPfConfig) |
                                                      bit(kPfInflightShmfd) | bit(kPfResetDevice) | bit(kPfStatus);
// Distinct config writes (offset, size) the frontend records for replay; a further
// one is refused before it is sent.
inline constexpr size_t kMaxConfigWrites = 32;
// Largest inflight area the frontend agrees to hold for a backend.
inline constexpr uint64_t kMaxInflightBytes = 64ull << 20;

struct FrontendOptions {
  // Bound on connect (including retries while the card starts) and on every request
  // with its reply.
  std::chrono::milliseconds timeout{2000};
};

// One queue as the VMM configures it. Ring addresses are the VMM's own virtual
// addresses of the rings (see Frontend::user_addr); fds are borrowed and duplicated.
struct VringConfig {
  uint32_t index = 0;
  uint16_t num = 0;   // power of two
  uint16_t base = 0;  // next avail index
  uint64_t desc_user_addr = 0;
  uint64_t avail_user_addr = 0;
  uint64_t used_user_addr = 0;
  int kick_fd = -1;  // ioeventfd the guest's notify write signals; -1: the backend polls
  int call_fd = -1;  // irqfd the backend signals; -1: no interrupts
};

// Everything sent that the backend's state depends on.
struct VringSetup {
  struct Vring {
    VringConfig config;  // config.kick_fd/call_fd are kick/call below
    UniqueFd kick, call;
    GuestAddress used_gpa;
    bool enabled = false;
    bool active = false;  // set up and not stopped by get_vring_base()
  };
  std::optional<uint64_t> acked_features;  // as sent, including bit 30
  std::vector<MemoryRegionDesc> regions;
  UniqueFd memfd;
  const GuestMemoryView* memory = nullptr;
  std::optional<InflightDesc> inflight;  // from GET_INFLIGHT_FD
  UniqueFd inflight_fd;
  bool inflight_sent = false;  // SET_INFLIGHT_FD sent
  // SET_CONFIG writes the backend accepted since the last device reset, oldest first;
  // a write replaces earlier ones it covers entirely.
  struct ConfigWrite {
    uint32_t offset = 0;
    std::vector<uint8_t> data;
  };
  std::vector<ConfigWrite> config_writes;
  std::map<uint32_t, Vring> vrings;
  // The last non-zero device status sent with SET_STATUS since the last device reset
  // (0: none), sent again after the rings on a reconnection.
  uint8_t status = 0;
};

class Frontend {
 public:
  // Connects (retrying until the timeout while the socket is absent or refusing) and
  // runs the handshake: GET_FEATURES, SET_OWNER, GET/SET_PROTOCOL_FEATURES (if bit 30
  // is offered), GET_QUEUE_NUM (if MQ).
  static Result<Frontend, VuError> connect(const std::string& path, FrontendOptions options = {});
  static Result<Frontend, VuError> adopt(UniqueFd sock, FrontendOptions options = {});

  Frontend(Frontend&&) = default;
  Frontend& operator=(Frontend&&) = default;

  uint64_t backend_features() const { return backend_features_; }  // GET_FEATURES
  uint64_t protocol_features() const { return protocol_; }         // negotiated
  uint32_t queue_num() const { return queue_num_; }                 // 0 without MQ

  // SET_FEATURES with the driver's acked virtio features (plus
  // VHOST_USER_F_PROTOCOL_FEATURES when offered). Must be a subset of what was offered.
  Result<void, VuError> set_features(uint64_t virtio_features);
  // SET_MEM_TABLE: one region per guest RAM region (gpa, size, user address = the VMM's
  // mapping, mmap offset = offset in the memfd), the memfd once per region. `mem` must
  // outlive this Frontend (reconnect reads used ring indices from it).
  Result<void, VuError> set_mem_table(const GuestMemory& mem);
  // SET_VRING_NUM, SET_VRING_BASE, SET_VRING_ADDR, SET_VRING_CALL, SET_VRING_KICK. Each
  // ring must lie inside one region of the memory table.
  Result<void, VuError> setup_vring(const VringConfig& config);
  // SET_VRING_ENABLE (requires VHOST_USER_F_PROTOCOL_FEATURES acked).
  Result<void, VuError> set_vring_enable(uint32_t index, bool enable);
  // GET_VRING_BASE: stops the ring; returns the next avail index.
  Result<uint16_t, VuError> get_vring_base(uint32_t index);
  // GET_CONFIG / SET_CONFIG (requires CONFIG). A backend refusal is kDevice / kNack
  // and keeps the connection. An accepted SET_CONFIG (flags 0) is recorded and
  // replayed by reconnect() until reset_device().
  Result<std::vector<uint8_t>, VuError> get_config(uint32_t offset, uint32_t size);
  Result<void, VuError> set_config(uint32_t offset, std::span<const uint8_t> data, uint32_t flags = 0);
  // RESET_DEVICE (requires RESET_DEVICE): the driver reset the device; the backend
  // stops and forgets every ring and returns the device to its initial state. The
  // recorded vrings and config writes are forgotten here too, also when the message
  // cannot be sent (a backend that misses it is gone, and the next one starts from
  // its initial state anyway). kUnsupported, with nothing forgotten, when the backend
  // did not offer RESET_DEVICE at the last successful handshake.
  Result<void, VuError> reset_device();
  bool can_reset_device() const { return resettable_; }
  // STATUS negotiated at the last complete handshake.
  bool has_status() const { return status_negotiated_; }
  // GET_STATUS (requires STATUS): the device status the backend reports, e.g. with
  // DEVICE_NEEDS_RESET (kDeviceStatusNeedsReset) once the driver broke a queue. Bounded
  // by the timeout like every request; a reply with bits above the status byte is
  // kBadReply and closes the connection.
  Result<uint8_t, VuError> get_status();
  // SET_STATUS (requires STATUS): the driver's device status. A non-zero status is
  // recorded and sent again by reconnect() after the rings (a backend may wait for
  // DRIVER_OK before it serves them). Status 0 is a device reset: the recorded vrings,
  // config writes and status are forgotten as by reset_device(), also when the message
  // cannot be sent. kUnsupported, with nothing sent or forgotten, without STATUS.
  Result<void, VuError> set_status(uint8_t status);
  // GET_INFLIGHT_FD: the backend allocates the tracking area; the frontend keeps the
  // fd (never maps it). set_inflight_fd() hands it back (SET_INFLIGHT_FD).
  Result<void, VuError> get_inflight_fd(uint16_t num_queues, uint16_t queue_size);
  Result<void, VuError> set_inflight_fd();

  // New connection, same backend role (e.g. the card restarted): handshake, check the
  // backend still offers what was negotiated, replay the VringSetup.
  Result<void, VuError> reconnect(const std::string& path);
  Result<void, VuError> reconnect(UniqueFd sock);

  bool connected() const { return conn_.valid(); }
  // Drops the connection (the backend hung up); the VringSetup is kept for reconnect().
  void disconnect() { conn_.close(); }
  // The connection socket: poll it for POLLHUP/POLLIN to notice a dead backend.
  int socket_fd() const { return conn_.fd(); }
  const VringSetup& setup() const { return setup_; }

  // The VMM user address of [gpa, gpa+len) in `mem`, if it lies inside one region.
  static std::optional<uint64_t> user_addr(const GuestMemory& mem, GuestAddress gpa, uint64_t len);

 private:
  Frontend(Connection conn, FrontendOptions options) : conn_(std::move(conn)), options_(options) {}
  Result<void, VuError> handshake(bool replay);
  Result<Message, VuError> transact(Request r, std::span<const uint8_t> payload, std::span<const int> fds = {},
                                    uint32_t config_size = 0);
  Result<uint64_t, VuError> get_u64(Request r);
  Result<void, VuError> send_u64(Request r, uint64_t v);
  Result<void, VuError> send_state(Request r, uint32_t index, uint32_t num);
  Result<void, VuError> send_mem_table();
  Result<void, VuError> send_inflight();
  Result<void, VuError> send_config(uint32_t offset, std::span<const uint8_t> data, uint32_t flags);
  Result<void, VuError> send_vring(const VringSetup::Vring& v, uint16_t base);
  Result<void, VuError> send_vring_fd(Request r, uint32_t index, int fd);
  Result<void, VuError> replay();
  std::optional<GuestAddress> user_to_guest(uint64_t uaddr, uint64_t len) const;

  Connection conn_;
  FrontendOptions options_;
  uint64_t backend_features_ = 0;
  uint64_t protocol_ = 0;
  uint32_t queue_num_ = 0;
  bool resettable_ = false;  // RESET_DEVICE negotiated at the last complete handshake
  bool status_negotiated_ = false;  // STATUS, likewise
  VringSetup setup_;
};

}  // namespace azote::vhost_user
