#include "vhost_user/frontend.hpp"

#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <array>

namespace azote::vhost_user {
namespace {

template <class T>
std::span<const uint8_t> as_bytes(const T& v) {
  // SAFETY: T is a trivially copyable wire struct; the span covers exactly its bytes.
  return {reinterpret_cast<const uint8_t*>(&v), sizeof(T)};  // NOLINT
}

bool pow2(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

Result<UniqueFd, VuError> dup_fd(int fd, const char* what) {
  if (fd < 0) return UniqueFd();
  UniqueFd d(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
  if (!d) return errno_error(Errc::kSocket, std::string("dup ") + what);
  return d;
}

Unexpected<VuError> bad(Errc c, std::string what) { return make_error(c, std::move(what)); }

}  // namespace

Result<Frontend, VuError> Frontend::connect(const std::string& path, FrontendOptions options) {
  AZOTE_TRY(c, Connection::connect(path, options.timeout));
  Frontend f(std::move(c), options);
  AZOTE_TRYV(f.handshake(false));
  return f;
}

Result<Frontend, VuError> Frontend::adopt(UniqueFd sock, FrontendOptions options) {
  AZOTE_TRY(c, Connection::adopt(std::move(sock)));
  Frontend f(std::move(c), options);
  AZOTE_TRYV(f.handshake(false));
  return f;
}

std::optional<uint64_t> Frontend::user_addr(const GuestMemory& mem, GuestAddress gpa, uint64_t len) {
  const uint8_t* h = mem.range(gpa, len);
  if (h == nullptr) return std::nullopt;
  return reinterpret_cast<uintptr_t>(h);
}

std::optional<GuestAddress> Frontend::user_to_guest(uint64_t uaddr, uint64_t len) const {
  for (const auto& r : setup_.regions) {
    if (uaddr < r.userspace_addr) continue;
    const uint64_t off = uaddr - r.userspace_addr;
    if (off > r.memory_size || len > r.memory_size - off) continue;
    return GuestAddress(r.guest_phys_addr + off);
  }
  return std::nullopt;
}

Result<Message, VuError> Frontend::transact(Request r, std::span<const uint8_t> payload, std::span<const int> fds,
                                            uint32_t config_size) {
  if (!conn_.valid()) return bad(Errc::kClosed, request_name(r) + ": not connected to the backend");
  const auto spec = request_spec(static_cast<uint32_t>(r));
  const bool has_reply = spec && spec->reply != PayloadKind::kNone;
  const bool need_ack = !has_reply && (protocol_ & bit(kPfReplyAck)) != 0;
  Header h;
  h.request = static_cast<uint32_t>(r);
  h.flags = kVersion | (need_ack ? kFlagNeedReply : 0);
  h.size = static_cast<uint32_t>(payload.size());
  // Our own message goes through the backend's validator first: a caller's bad input
  // is refused here, without breaking the connection.
  AZOTE_TRYV(validate_request(h, payload, fds.size()));

  auto fail = [&](const VuError& e) {
    conn_.close();
    return make_error(e.code, request_name(r) + ": " + e.context, e.errnum);
  };
  const Deadline deadline = Clock::now() + options_.timeout;
  auto s = conn_.send(h, payload, fds, deadline);
  if (!s) return fail(s.error());
  if (!has_reply && !need_ack) return Message{};
  auto m = conn_.recv(deadline);
  if (!m) return fail(m.error());
  auto v = validate_reply(r, need_ack, m->hdr, m->payload, m->fds.size(), config_size);
  if (!v) {
    if (v.error().code == Errc::kDevice) return make_error(Errc::kDevice, v.error().context);
    return fail(v.error());
  }
  if (need_ack && load<uint64_t>(m->payload) != 0) return bad(Errc::kNack, request_name(r) + " failed in the backend");
  return std::move(m).value();
}

Result<uint64_t, VuError> Frontend::get_u64(Request r) {
  AZOTE_TRY(m, transact(r, {}));
  return load<uint64_t>(m.payload);
}

Result<void, VuError> Frontend::send_u64(Request r, uint64_t v) {
  AZOTE_TRYV(transact(r, as_bytes(v)));
  return {};
}

Result<void, VuError> Frontend::send_state(Request r, uint32_t index, uint32_t num) {
  const VringState s{index, num};
  AZOTE_TRYV(transact(r, as_bytes(s)));
  return {};
}

Result<void, VuError> Frontend::handshake(bool replay) {
  protocol_ = 0;
  queue_num_ = 0;
  AZOTE_TRY(features, get_u64(Request::kGetFeatures));
  backend_features_ = features;
  AZOTE_TRYV(transact(Request::kSetOwner, {}));
  uint64_t want = 0;
  if ((features & bit(kFProtocolFeatures)) != 0) {
    AZOTE_TRY(offered, get_u64(Request::kGetProtocolFeatures));
    want = offered & kFrontendProtocolFeatures;
    AZOTE_TRYV(send_u64(Request::kSetProtocolFeatures, want));
    protocol_ = want;  // REPLY_ACK applies from the next message on
  }
  if ((protocol_ & bit(kPfMq)) != 0) {
    AZOTE_TRY(n, get_u64(Request::kGetQueueNum));
    if (n == 0 || n > kMaxQueues) {
      conn_.close();
      return bad(Errc::kBadReply, "backend reports " + std::to_string(n) + " queues");
    }
    queue_num_ = static_cast<uint32_t>(n);
  }
  if (!replay) {
    resettable_ = (protocol_ & bit(kPfResetDevice)) != 0;
    status_negotiated_ = (protocol_ & bit(kPfStatus)) != 0;
    return {};
  }

  // The restarted backend must still offer everything the driver and we relied on.
  auto incompatible = [&](const std::string& what) {
    conn_.close();
    return bad(Errc::kBadState, "reconnected backend " + what);
  };
  if (setup_.acked_features && (*setup_.acked_features & ~backend_features_) != 0)
    return incompatible("no longer offers every acked feature");
  const bool needs_pf = setup_.acked_features && (*setup_.acked_features & bit(kFProtocolFeatures)) != 0;
  if (needs_pf && (backend_features_ & bit(kFProtocolFeatures)) == 0)
    return incompatible("no longer offers protocol features");
  if (setup_.inflight_sent && (protocol_ & bit(kPfInflightShmfd)) == 0)
    return incompatible("no longer offers INFLIGHT_SHMFD");
  if (!setup_.vrings.empty() && queue_num_ != 0 && setup_.vrings.rbegin()->first >= queue_num_)
    return incompatible("has fewer queues than are set up");
  if (!setup_.config_writes.empty() && (protocol_ & bit(kPfConfig)) == 0)
    return incompatible("no longer offers CONFIG (the driver's config writes cannot be replayed)");
  resettable_ = (protocol_ & bit(kPfResetDevice)) != 0;
  status_negotiated_ = (protocol_ & bit(kPfStatus)) != 0;
  return {};
}

Result<void, VuError> Frontend::set_features(uint64_t virtio_features) {
  if ((virtio_features & ~backend_features_) != 0)
    return bad(Errc::kBadState, "SET_FEATURES: features not offered by the backend");
  uint64_t acked = virtio_features;
  if ((backend_features_ & bit(kFProtocolFeatures)) != 0) acked |= bit(kFProtocolFeatures);
  AZOTE_TRYV(send_u64(Request::kSetFeatures, acked));
  setup_.acked_features = acked;
  return {};
}

Result<void, VuError> Frontend::send_mem_table() {
  const auto n = static_cast<uint32_t>(setup_.regions.size());
  std::vector<uint8_t> p(sizeof(MemoryTableHeader) + n * sizeof(MemoryRegionDesc));
  const MemoryTableHeader th{n, 0};
  std::memcpy(p.data(), &th, sizeof th);
  for (uint32_t i = 0; i < n; ++i)
    std::memcpy(p.data() + sizeof th + i * sizeof(MemoryRegionDesc), &setup_.regions[i], sizeof(MemoryRegionDesc));
  std::array<int, kMaxMemRegions> fds{};
  fds.fill(setup_.memfd.get());
  AZOTE_TRYV(transact(Request::kSetMemTable, p, std::span<const int>(fds.data(), n)));
  return {};
}

Result<void, VuError> Frontend::set_mem_table(const GuestMemory& mem) {
  // With an I/O window the backend gets the window alone (its own memfd): the rest of
  // guest RAM is never handed to a card. Without one, all of it.
  std::vector<MemoryRegionDesc> descs;
  for (const auto& r : mem.regions()) {
    if (mem.has_io_window() && !r.io) continue;
    descs.push_back(MemoryRegionDesc{r.start.raw, r.size, reinterpret_cast<uintptr_t>(r.host), r.file_offset});
  }
  if (descs.empty() || descs.size() > kMaxMemRegions)
    return bad(Errc::kBadRegion, "SET_MEM_TABLE: " + std::to_string(descs.size()) + " regions to share (1.." +
                                     std::to_string(kMaxMemRegions) + ")");
  AZOTE_TRY(fd, dup_fd(mem.has_io_window() ? mem.io_memfd() : mem.memfd(), "guest memfd"));
  // Kept only if the backend accepts the table.
  auto old_regions = std::move(setup_.regions);
  auto old_fd = std::move(setup_.memfd);
  setup_.regions = std::move(descs);
  setup_.memfd = std::move(fd);
  auto r = send_mem_table();
  if (!r) {
    setup_.regions = std::move(old_regions);
    setup_.memfd = std::move(old_fd);
    return r;
  }
  setup_.memory = &mem;
  return {};
}

Result<void, VuError> Frontend::send_vring_fd(Request r, uint32_t index, int fd) {
  const uint64_t v = index | (fd < 0 ? kVringNoFd : 0);
  AZOTE_TRYV(transact(r, as_bytes(v), fd < 0 ? std::span<const int>() : std::span<const int>(&fd, 1)));
  return {};
}

Result<void, VuError> Frontend::send_vring(const VringSetup::Vring& v, uint16_t base) {
  const auto& c = v.config;
  AZOTE_TRYV(send_state(Request::kSetVringNum, c.index, c.num));
  AZOTE_TRYV(send_state(Request::kSetVringBase, c.index, base));
  VringAddr a;
  a.index = c.index;
  a.desc_user_addr = c.desc_user_addr;
  a.avail_user_addr = c.avail_user_addr;
  a.used_user_addr = c.used_user_addr;
  AZOTE_TRYV(transact(Request::kSetVringAddr, as_bytes(a)));
  // Call before kick: the backend starts a ring on its kick, so it starts complete.
  AZOTE_TRYV(send_vring_fd(Request::kSetVringCall, c.index, v.call.get()));
  AZOTE_TRYV(send_vring_fd(Request::kSetVringKick, c.index, v.kick.get()));
  return {};
}

Result<void, VuError> Frontend::setup_vring(const VringConfig& config) {
  const std::string q = "queue " + std::to_string(config.index);
  const uint32_t limit = queue_num_ != 0 ? queue_num_ : kMaxQueues;
  if (config.index >= limit) return bad(Errc::kBadVring, q + " is beyond the backend's " + std::to_string(limit));
  if (!pow2(config.num) || config.num > kMaxQueueSize)
    return bad(Errc::kBadVring, q + " size " + std::to_string(config.num) + " is not a power of two");
  if (setup_.memory == nullptr) return bad(Errc::kBadState, q + " set up before the memory table");
  const uint64_t n = config.num;
  if (!user_to_guest(config.desc_user_addr, 16 * n) || !user_to_guest(config.avail_user_addr, 6 + 2 * n))
    return bad(Errc::kBadVring, q + " rings are not inside guest memory");
  const auto used = user_to_guest(config.used_user_addr, 6 + 8 * n);
  if (!used) return bad(Errc::kBadVring, q + " used ring is not inside guest memory");

  VringSetup::Vring v;
  v.config = config;
  AZOTE_TRY(kick, dup_fd(config.kick_fd, "kick eventfd"));
  AZOTE_TRY(call, dup_fd(config.call_fd, "call eventfd"));
  v.kick = std::move(kick);
  v.call = std::move(call);
  v.config.kick_fd = v.kick.get();
  v.config.call_fd = v.call.get();
  v.used_gpa = *used;
  AZOTE_TRYV(send_vring(v, config.base));
  v.active = true;
  setup_.vrings[config.index] = std::move(v);
  return {};
}

Result<void, VuError> Frontend::set_vring_enable(uint32_t index, bool enable) {
  if (!setup_.acked_features || (*setup_.acked_features & bit(kFProtocolFeatures)) == 0)
    return bad(Errc::kBadState, "SET_VRING_ENABLE without VHOST_USER_F_PROTOCOL_FEATURES acked");
  AZOTE_TRYV(send_state(Request::kSetVringEnable, index, enable ? 1 : 0));
  auto it = setup_.vrings.find(index);
  if (it != setup_.vrings.end()) it->second.enabled = enable;
  return {};
}

Result<uint16_t, VuError> Frontend::get_vring_base(uint32_t index) {
  const VringState s{index, 0};
  AZOTE_TRY(m, transact(Request::kGetVringBase, as_bytes(s)));
  const auto r = load<VringState>(m.payload);
  if (r.index != index || r.num > 0xffff) {
    conn_.close();
    return bad(Errc::kBadReply, "GET_VRING_BASE reply is for queue " + std::to_string(r.index) + " with base " +
                                    std::to_string(r.num));
  }
  auto it = setup_.vrings.find(index);
  if (it != setup_.vrings.end()) {
    it->second.active = false;
    it->second.config.base = static_cast<uint16_t>(r.num);
  }
  return static_cast<uint16_t>(r.num);
}

Result<std::vector<uint8_t>, VuError> Frontend::get_config(uint32_t offset, uint32_t size) {
  if ((protocol_ & bit(kPfConfig)) == 0) return bad(Errc::kUnsupported, "GET_CONFIG: CONFIG not negotiated");
  std::vector<uint8_t> p(sizeof(ConfigHeader) + size);
  const ConfigHeader ch{offset, size, 0};
  std::memcpy(p.data(), &ch, sizeof ch);
  AZOTE_TRY(m, transact(Request::kGetConfig, p, {}, size));
  return std::vector<uint8_t>(m.payload.begin() + sizeof(ConfigHeader), m.payload.end());
}

Result<void, VuError> Frontend::send_config(uint32_t offset, std::span<const uint8_t> data, uint32_t flags) {
  if ((protocol_ & bit(kPfConfig)) == 0) return bad(Errc::kUnsupported, "SET_CONFIG: CONFIG not negotiated");
  if (data.size() > kMaxConfigSize) return bad(Errc::kBadPayload, "SET_CONFIG: more than 256 bytes");
  std::vector<uint8_t> p(sizeof(ConfigHeader));
  const ConfigHeader ch{offset, static_cast<uint32_t>(data.size()), flags};
  std::memcpy(p.data(), &ch, sizeof ch);
  p.insert(p.end(), data.begin(), data.end());
  AZOTE_TRYV(transact(Request::kSetConfig, p));
  return {};
}

Result<void, VuError> Frontend::set_config(uint32_t offset, std::span<const uint8_t> data, uint32_t flags) {
  auto& writes = setup_.config_writes;
  // Earlier writes this one covers entirely are superseded by it.
  auto covered = [&](const VringSetup::ConfigWrite& w) {
    return w.offset >= offset && uint64_t{w.offset} + w.data.size() <= uint64_t{offset} + data.size();
  };
  const auto kept =
      static_cast<size_t>(std::count_if(writes.begin(), writes.end(), [&](const auto& w) { return !covered(w); }));
  if (flags == 0 && kept >= kMaxConfigWrites)
    return bad(Errc::kBadState, "SET_CONFIG: more than " + std::to_string(kMaxConfigWrites) +
                                    " distinct config writes to replay after a reconnect");
  AZOTE_TRYV(send_config(offset, data, flags));
  if (flags == 0) {  // 1 is live migration: not the driver's state
    std::erase_if(writes, covered);
    writes.push_back(VringSetup::ConfigWrite{offset, std::vector<uint8_t>(data.begin(), data.end())});
  }
  return {};
}

Result<void, VuError> Frontend::reset_device() {
  if (!resettable_) return bad(Errc::kUnsupported, "RESET_DEVICE: the backend does not offer it");
  setup_.config_writes.clear();
  setup_.vrings.clear();
  setup_.status = 0;
  AZOTE_TRYV(transact(Request::kResetDevice, {}));
  return {};
}

Result<uint8_t, VuError> Frontend::get_status() {
  if (!has_status()) return bad(Errc::kUnsupported, "GET_STATUS: STATUS not negotiated");
  AZOTE_TRY(v, get_u64(Request::kGetStatus));
  if ((v & ~kDeviceStatusMask) != 0) {
    conn_.close();
    return bad(Errc::kBadReply, "GET_STATUS reply " + std::to_string(v) + " is not an 8-bit device status");
  }
  return static_cast<uint8_t>(v);
}

Result<void, VuError> Frontend::set_status(uint8_t status) {
  if (!has_status()) return bad(Errc::kUnsupported, "SET_STATUS: STATUS not negotiated");
  if (status == 0) {  // a device reset, as with RESET_DEVICE
    setup_.config_writes.clear();
    setup_.vrings.clear();
    setup_.status = 0;
  }
  AZOTE_TRYV(send_u64(Request::kSetStatus, status));
  setup_.status = status;  // recorded only once the backend took it
  return {};
}

Result<void, VuError> Frontend::get_inflight_fd(uint16_t num_queues, uint16_t queue_size) {
  if ((protocol_ & bit(kPfInflightShmfd)) == 0)
    return bad(Errc::kUnsupported, "GET_INFLIGHT_FD: INFLIGHT_SHMFD not negotiated");
  InflightDesc d;
  d.num_queues = num_queues;
  d.queue_size = queue_size;
  AZOTE_TRY(m, transact(Request::kGetInflightFd, as_bytes(d)));
  const auto r = load<InflightDesc>(m.payload);
  auto reject = [&](const std::string& why) {
    conn_.close();
    return bad(Errc::kBadReply, "GET_INFLIGHT_FD reply " + why);
  };
  if (r.num_queues != num_queues || r.queue_size != queue_size) return reject("is for a different geometry");
  if (r.mmap_size == 0 || r.mmap_size > kMaxInflightBytes || r.mmap_offset > kMaxInflightBytes)
    return reject("has area size " + std::to_string(r.mmap_size) + " at offset " + std::to_string(r.mmap_offset));
  // Never mapped here, but it must be a file that really holds the area, since we will
  // hand it back to a (restarted) backend.
  struct stat st {};
  if (::fstat(m.fds[0].get(), &st) != 0 || !S_ISREG(st.st_mode) ||
      static_cast<uint64_t>(st.st_size) < r.mmap_offset + r.mmap_size)
    return reject("fd is not a file holding the area");
  setup_.inflight = r;
  setup_.inflight_fd = std::move(m.fds[0]);
  setup_.inflight_sent = false;
  return {};
}

Result<void, VuError> Frontend::send_inflight() {
  const int fd = setup_.inflight_fd.get();
  AZOTE_TRYV(transact(Request::kSetInflightFd, as_bytes(*setup_.inflight), std::span<const int>(&fd, 1)));
  return {};
}

Result<void, VuError> Frontend::set_inflight_fd() {
  if (!setup_.inflight) return bad(Errc::kBadState, "SET_INFLIGHT_FD before GET_INFLIGHT_FD");
  AZOTE_TRYV(send_inflight());
  setup_.inflight_sent = true;
  return {};
}

Result<void, VuError> Frontend::replay() {
  if (setup_.acked_features) AZOTE_TRYV(send_u64(Request::kSetFeatures, *setup_.acked_features));
  if (!setup_.regions.empty()) AZOTE_TRYV(send_mem_table());
  if (setup_.inflight && setup_.inflight_sent) AZOTE_TRYV(send_inflight());
  // Before the rings run: the driver's choices (e.g. virtio-blk's cache mode) apply to
  // every request the new backend takes.
  for (const auto& w : setup_.config_writes) {
    if (auto r = send_config(w.offset, w.data, 0); !r) {
      conn_.close();
      return bad(Errc::kBadState, "reconnected backend refused a config write it had accepted (offset " +
                                      std::to_string(w.offset) + ", " + std::to_string(w.data.size()) +
                                      " bytes): " + r.error().message());
    }
  }
  for (const auto& [index, v] : setup_.vrings) {
    if (!v.active) continue;
    // The old backend is gone: everything before used->idx was completed. A backend
    // with INFLIGHT_SHMFD adds the heads it had taken and not completed.
    uint16_t base = v.config.base;
    if (setup_.memory != nullptr) {
      if (const uint8_t* p = setup_.memory->range(v.used_gpa + 2, 2)) {
        base = __atomic_load_n(reinterpret_cast<const uint16_t*>(p), __ATOMIC_ACQUIRE);  // NOLINT
      }
    }
    AZOTE_TRYV(send_vring(v, base));
    if (v.enabled) AZOTE_TRYV(send_state(Request::kSetVringEnable, index, 1));
  }
  // Last, as the driver's DRIVER_OK came after its queues. A backend that no longer
  // offers STATUS does without (the rings do not depend on it here).
  if (setup_.status != 0 && has_status()) AZOTE_TRYV(send_u64(Request::kSetStatus, setup_.status));
  return {};
}

Result<void, VuError> Frontend::reconnect(const std::string& path) {
  conn_.close();
  AZOTE_TRY(c, Connection::connect(path, options_.timeout));
  conn_ = std::move(c);
  AZOTE_TRYV(handshake(true));
  return replay();
}

Result<void, VuError> Frontend::reconnect(UniqueFd sock) {
  conn_.close();
  AZOTE_TRY(c, Connection::adopt(std::move(sock)));
  conn_ = std::move(c);
  AZOTE_TRYV(handshake(true));
  return replay();
}

}  // namespace azote::vhost_user
