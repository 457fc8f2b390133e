#include "vhost_user/session.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdlib>
#include <optional>
#include <string>

namespace azote::vhost_user {
namespace {

bool pow2(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

template <class T>
std::vector<uint8_t> bytes_of(const T& v) {
  std::vector<uint8_t> b(sizeof(T));
  std::memcpy(b.data(), &v, sizeof(T));
  return b;
}

Session::Reply make_reply(const Header& req, std::vector<uint8_t> payload, int fd = -1) {
  Session::Reply r;
  r.hdr.request = req.request;
  r.hdr.flags = kVersion | kFlagReply;
  r.hdr.size = static_cast<uint32_t>(payload.size());
  r.payload = std::move(payload);
  r.fd = fd;
  return r;
}

Unexpected<VuError> bad(Errc c, std::string what) { return make_error(c, std::move(what)); }

// The number after "key:" on a line of /proc fdinfo text, if the line is there. Read as
// hex: eventfd-count is printed with "%llx"; the 0/1 flags read the same either way.
std::optional<uint64_t> fdinfo_field(const std::string& text, const std::string& key) {
  const std::string lines = "\n" + text, k = "\n" + key + ":";
  const size_t p = lines.find(k);
  if (p == std::string::npos) return std::nullopt;
  const char* start = lines.c_str() + p + k.size();
  char* end = nullptr;
  errno = 0;
  const unsigned long long v = std::strtoull(start, &end, 16);
  if (end == start || errno != 0) return std::nullopt;
  return v;
}

// A kick, call or err fd must be a plain eventfd: the device's workers read and write it
// on their data path, and anything else could stall them: a pipe or socket nobody writes
// blocks a write or never wakes, one whose peer closed is readable forever, a regular
// file cannot be polled, and a semaphore eventfd (EFD_SEMAPHORE) gives 1 per read however
// large its count, so "read until EAGAIN" never ends. The kernel names an eventfd only in
// /proc/self/fdinfo ("eventfd-count:"); recent kernels add "eventfd-semaphore:". Where
// that line is missing a semaphore eventfd gets through, and the workers' one read per
// wakeup (drain_eventfd) keeps it harmless. The fd is then put in non-blocking mode for
// the workers (the frontend shares the file description; it only hands it to KVM).
Result<void, VuError> check_ring_fd(int fd, const std::string& what) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return errno_error(Errc::kBadVring, what + ": fstat");
  const char* kind = nullptr;
  switch (st.st_mode & S_IFMT) {
    case S_IFIFO: kind = "a pipe"; break;
    case S_IFSOCK: kind = "a socket"; break;
    case S_IFDIR: kind = "a directory"; break;
    case S_IFCHR: kind = "a character device"; break;
    case S_IFBLK: kind = "a block device"; break;
    case S_IFLNK: kind = "a symbolic link"; break;
    default: break;  // an eventfd is an anonymous inode: no type bits (S_IFREG on some kernels)
  }
  if (kind != nullptr) return bad(Errc::kBadVring, what + " is " + kind + ", not an eventfd");
  const std::string path = "/proc/self/fdinfo/" + std::to_string(fd);
  UniqueFd info(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!info) return errno_error(Errc::kBadVring, what + ": cannot read " + path + " to check that it is an eventfd");
  std::string text(2048, '\0');
  const ssize_t n = ::read(info.get(), text.data(), text.size());
  if (n < 0) return errno_error(Errc::kBadVring, what + ": read " + path);
  text.resize(static_cast<size_t>(n));
  if (!fdinfo_field(text, "eventfd-count")) {
    if (S_ISREG(st.st_mode)) return bad(Errc::kBadVring, what + " is a regular file, not an eventfd");
    return bad(Errc::kBadVring, what + " is not an eventfd (no eventfd-count in its fdinfo)");
  }
  if (fdinfo_field(text, "eventfd-semaphore").value_or(0) != 0)
    return bad(Errc::kBadVring, what + " is a semaphore eventfd (EFD_SEMAPHORE): one read takes 1 of its count, "
                                       "not all of it");
  const int fl = ::fcntl(fd, F_GETFL);
  if (fl < 0 || ((fl & O_NONBLOCK) == 0 && ::fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0))
    return errno_error(Errc::kBadVring, what + ": cannot make it non-blocking");
  return {};
}

}  // namespace

Result<void, VuError> check_device(const Device& device) {
  const uint32_t nq = device.num_queues(), qs = device.max_queue_size();
  if (nq == 0 || nq > kMaxQueues)
    return bad(Errc::kDevice, "device has " + std::to_string(nq) + " queues (1.." + std::to_string(kMaxQueues) + ")");
  if (!pow2(qs) || qs > kMaxQueueSize)
    return bad(Errc::kDevice, "device max queue size " + std::to_string(qs) + " is not a power of two <= " +
                                  std::to_string(kMaxQueueSize));
  return {};
}

Session::Session(Device& device)
    : device_(device),
      // Clamped so a misconfigured device cannot widen the checks; Backend refuses such
      // a device up front through check_device().
      num_queues_(std::min(std::max(device.num_queues(), 1u), kMaxQueues)),
      max_queue_size_(pow2(device.max_queue_size()) ? std::min(device.max_queue_size(), kMaxQueueSize) : 1u),
      vrings_(num_queues_) {}

Session::~Session() {
  for (uint32_t i = 0; i < vrings_.size(); ++i) stop(i);
}

uint64_t Session::offered_features() const {
  return (device_.features() & ~bit(kFLogAll)) | bit(kFProtocolFeatures);
}
uint64_t Session::offered_protocol() const { return device_.protocol_features() & kBackendProtocolFeatures; }

bool Session::wants_ack(const Header& hdr) const {
  if ((hdr.flags & kFlagNeedReply) == 0 || !negotiated(kPfReplyAck)) return false;
  const auto spec = request_spec(hdr.request);
  return !spec || spec->reply == PayloadKind::kNone;
}

Session::Reply Session::ack_reply(const Header& hdr, uint64_t status) { return make_reply(hdr, bytes_of(status)); }

Result<uint32_t, VuError> Session::queue_index(uint64_t index, const char* what) const {
  if (index >= num_queues_)
    return bad(Errc::kBadVring, std::string(what) + ": queue " + std::to_string(index) + " does not exist (device has " +
                                    std::to_string(num_queues_) + ")");
  return static_cast<uint32_t>(index);
}

Result<void, VuError> Session::require(unsigned protocol_feature, Request r) const {
  if (!negotiated(protocol_feature))
    return bad(Errc::kUnsupported, request_name(r) + " without its protocol feature negotiated");
  return {};
}

Result<void, VuError> Session::check_not_started(uint32_t index, Request r) const {
  if (vrings_[index].started)
    return bad(Errc::kBadState, request_name(r) + " on started queue " + std::to_string(index) +
                                    " (stop it with GET_VRING_BASE first)");
  return {};
}

Result<Session::Placement, VuError> Session::place(const VringAddr& a, uint16_t num) const {
  struct Part {
    const char* name;
    uint64_t uaddr;
    uint64_t len;
    uint64_t align;
  };
  // Split virtqueue sizes (virtio 1.x 2.7): avail and used include the event field.
  const std::array<Part, 3> parts = {{{"descriptor table", a.desc_user_addr, 16ull * num, 16},
                                      {"avail ring", a.avail_user_addr, 6 + 2ull * num, 2},
                                      {"used ring", a.used_user_addr, 6 + 8ull * num, 4}}};
  std::array<GuestAddress, 3> gpa{};
  for (size_t i = 0; i < parts.size(); ++i) {
    const auto& p = parts[i];
    auto g = memory_.user_to_guest(p.uaddr, p.len);
    if (!g)
      return bad(Errc::kBadVring, std::string(p.name) + " at user address " + std::to_string(p.uaddr) + " (" +
                                      std::to_string(p.len) + " bytes) is not inside one memory region");
    const uint8_t* host = memory_.range(*g, p.len);
    if (host == nullptr || g->raw % p.align != 0 || reinterpret_cast<uintptr_t>(host) % p.align != 0)
      return bad(Errc::kBadVring, std::string(p.name) + " is not " + std::to_string(p.align) + "-byte aligned");
    gpa[i] = *g;
  }
  return Placement{gpa[0], gpa[1], gpa[2]};
}

bool Session::effectively_enabled(const Vring& v) const {
  // Without VHOST_USER_F_PROTOCOL_FEATURES a ring is enabled as soon as it starts.
  return (acked_features_ & bit(kFProtocolFeatures)) == 0 || v.enabled;
}

Result<void, VuError> Session::maybe_run(uint32_t index) {
  const Vring& v = vrings_[index];
  if (v.running || !v.started || !effectively_enabled(v)) return {};
  return start(index);
}

Result<void, VuError> Session::start(uint32_t index) {
  Vring& v = vrings_[index];
  const std::string q = "queue " + std::to_string(index);
  if (memory_.empty()) return bad(Errc::kBadState, q + " started before a memory table");
  if (v.num == 0) return bad(Errc::kBadState, q + " started without SET_VRING_NUM");
  if (!v.addr_set) return bad(Errc::kBadState, q + " started without SET_VRING_ADDR");
  // Placement is checked again: the memory table may have changed since SET_VRING_ADDR.
  AZOTE_TRY(pl, place(v.addr, v.num));

  VringInfo info;
  info.index = index;
  info.size = v.num;
  info.next_avail = v.base;
  info.desc = pl.desc;
  info.avail = pl.avail;
  info.used = pl.used;
  info.memory = &memory_;
  info.kick_fd = v.kick.get();
  info.call_fd = v.call.get();
  info.err_fd = v.err.get();
  info.features = acked_features_ & ~bit(kFProtocolFeatures);
  if (inflight_ && index < inflight_->queues.size()) {
    InflightQueue& iq = inflight_->queues[index];
    if (iq.desc_num() < v.num)
      return bad(Errc::kBadVring, q + " has " + std::to_string(v.num) + " descriptors but its inflight area tracks " +
                                      std::to_string(iq.desc_num()));
    // used->idx, read once: written by the device (us, or our previous process).
    const uint8_t* p = memory_.range(pl.used + 2, 2);
    uint16_t used_idx = 0;
    if (p != nullptr) used_idx = __atomic_load_n(reinterpret_cast<const uint16_t*>(p), __ATOMIC_ACQUIRE);  // NOLINT
    auto rec = iq.recover(used_idx, v.num);
    info.next_avail = rec.next_avail;
    info.resubmit = std::move(rec.heads);
    info.inflight = &iq;
  }
  device_.queue_started(info);
  v.running = true;
  return {};
}

void Session::stop(uint32_t index) {
  Vring& v = vrings_[index];
  if (!v.running) return;
  v.base = device_.queue_stopped(index);
  v.running = false;
}

template <class F>
Result<void, VuError> Session::with_queues_stopped(F&& change) {
  std::vector<uint32_t> was_running;
  for (uint32_t i = 0; i < vrings_.size(); ++i) {
    if (vrings_[i].running) {
      stop(i);
      was_running.push_back(i);
    }
  }
  AZOTE_TRYV(change());
  for (uint32_t i : was_running) AZOTE_TRYV(maybe_run(i));
  return {};
}

Result<void, VuError> Session::check_inflight_geometry(const InflightDesc& d) const {
  if (d.num_queues == 0 || d.num_queues > num_queues_)
    return bad(Errc::kBadPayload, "inflight area for " + std::to_string(d.num_queues) + " queues (device has " +
                                      std::to_string(num_queues_) + ")");
  if (!pow2(d.queue_size) || d.queue_size > max_queue_size_)
    return bad(Errc::kBadPayload, "inflight queue size " + std::to_string(d.queue_size) +
                                      " is not a power of two <= " + std::to_string(max_queue_size_));
  return {};
}

Result<Session::InflightArea, VuError> Session::make_inflight_area(UniqueFd fd, const InflightDesc& d, bool fresh) {
  const uint64_t size = inflight_region_bytes(d.num_queues, d.queue_size);
  AZOTE_TRY(m, map_fd_range(fd.get(), d.mmap_offset, size, "inflight area"));
  if (reinterpret_cast<uintptr_t>(m.host) % kInflightQueueAlign != 0)
    return bad(Errc::kBadPayload, "inflight area offset is not " + std::to_string(kInflightQueueAlign) + "-byte aligned");
  InflightArea a;
  a.fd = std::move(fd);
  a.desc = d;
  a.desc.mmap_size = size;
  a.desc.padding = 0;
  for (uint32_t i = 0; i < d.num_queues; ++i) {
    InflightQueue q(m.host + inflight_queue_bytes(d.queue_size) * i, d.queue_size);
    bool valid = true;
    if (fresh || !q.header_ok(valid)) {
      if (!valid)
        return bad(Errc::kBadPayload, "inflight area of queue " + std::to_string(i) + " has a foreign header");
      q.initialize();
    }
    a.queues.push_back(std::move(q));
  }
  a.map = std::move(m.map);
  return a;
}

Result<std::optional<Session::Reply>, VuError> Session::handle(const Header& hdr, std::span<const uint8_t> payload,
                                                               std::vector<UniqueFd> fds) {
  AZOTE_TRYV(validate_request(hdr, payload, fds.size()));
  const bool ack = wants_ack(hdr);
  AZOTE_TRY(reply, dispatch(hdr, payload, fds));
  if (!reply && ack) return std::optional<Reply>(ack_reply(hdr, 0));
  return reply;
}

Session::Handled Session::dispatch(const Header& hdr, std::span<const uint8_t> payload, std::vector<UniqueFd>& fds) {
  const auto req = static_cast<Request>(hdr.request);
  const std::optional<Reply> none;
  switch (req) {
    case Request::kGetFeatures:
      return std::optional<Reply>(make_reply(hdr, bytes_of(offered_features())));

    case Request::kSetFeatures: {
      const auto v = load<uint64_t>(payload);
      if ((v & ~offered_features()) != 0) return bad(Errc::kBadPayload, "SET_FEATURES acks features never offered");
      for (uint32_t i = 0; i < vrings_.size(); ++i) {
        if (vrings_[i].started) return bad(Errc::kBadState, "SET_FEATURES while queue " + std::to_string(i) + " is started");
      }
      acked_features_ = v;
      device_.set_features(v & ~bit(kFProtocolFeatures));
      return none;
    }

    case Request::kSetOwner:
      return none;

    case Request::kResetOwner:
      // Deprecated; vhost-user.rst recommends ignoring it or disabling all rings.
      for (uint32_t i = 0; i < vrings_.size(); ++i) {
        stop(i);
        vrings_[i].started = false;
      }
      return none;

    case Request::kResetDevice:
      AZOTE_TRYV(require(kPfResetDevice, req));
      reset_device();
      return none;

    case Request::kSetStatus: {
      AZOTE_TRYV(require(kPfStatus, req));
      const auto v = load<uint64_t>(payload);
      if ((v & ~kDeviceStatusMask) != 0)
        return bad(Errc::kBadPayload, "SET_STATUS " + std::to_string(v) + " is not an 8-bit device status");
      if (v == 0) {
        reset_device();  // writing 0 to the status resets the device (virtio 1.2 §2.1)
        return none;
      }
      status_ = static_cast<uint8_t>(v & ~kDeviceStatusNeedsReset);
      return none;
    }

    case Request::kGetStatus: {
      AZOTE_TRYV(require(kPfStatus, req));
      uint64_t st = status_;
      if (device_.needs_reset()) st |= kDeviceStatusNeedsReset;
      return std::optional<Reply>(make_reply(hdr, bytes_of(st)));
    }

    case Request::kGetProtocolFeatures:
      return std::optional<Reply>(make_reply(hdr, bytes_of(offered_protocol())));

    case Request::kSetProtocolFeatures: {
      const auto v = load<uint64_t>(payload);
      if ((v & ~offered_protocol()) != 0)
        return bad(Errc::kBadPayload, "SET_PROTOCOL_FEATURES acks protocol features never offered");
      acked_protocol_ = v;
      return none;
    }

    case Request::kGetQueueNum:
      if ((offered_protocol() & bit(kPfMq)) == 0) return bad(Errc::kUnsupported, "GET_QUEUE_NUM without MQ");
      return std::optional<Reply>(make_reply(hdr, bytes_of(uint64_t{num_queues_})));

    case Request::kSetMemTable: {
      const auto th = load<MemoryTableHeader>(payload);
      std::vector<MemoryRegionDesc> regions(th.nregions);
      for (uint32_t i = 0; i < th.nregions; ++i)
        regions[i] = load<MemoryRegionDesc>(payload, sizeof(MemoryTableHeader) + i * sizeof(MemoryRegionDesc));
      AZOTE_TRYV(with_queues_stopped([&]() { return memory_.set(regions, fds); }));
      return none;
    }

    case Request::kGetMaxMemSlots:
      AZOTE_TRYV(require(kPfConfigureMemSlots, req));
      return std::optional<Reply>(make_reply(hdr, bytes_of(uint64_t{kMaxMemRegions})));

    case Request::kAddMemReg: {
      AZOTE_TRYV(require(kPfConfigureMemSlots, req));
      const auto r = load<SingleMemoryRegion>(payload).region;
      AZOTE_TRYV(with_queues_stopped([&]() { return memory_.add(r, fds[0]); }));
      return none;
    }

    case Request::kRemMemReg: {
      AZOTE_TRYV(require(kPfConfigureMemSlots, req));
      fds.clear();  // a stray fd is closed unused (vhost-user.rst allows one)
      const auto r = load<SingleMemoryRegion>(payload).region;
      AZOTE_TRYV(with_queues_stopped([&]() { return memory_.remove(r); }));
      return none;
    }

    case Request::kSetVringNum: {
      const auto s = load<VringState>(payload);
      AZOTE_TRY(i, queue_index(s.index, "SET_VRING_NUM"));
      AZOTE_TRYV(check_not_started(i, req));
      if (!pow2(s.num) || s.num > max_queue_size_)
        return bad(Errc::kBadVring, "queue " + std::to_string(i) + " size " + std::to_string(s.num) +
                                        " is not a power of two in 1.." + std::to_string(max_queue_size_));
      vrings_[i].num = static_cast<uint16_t>(s.num);
      return none;
    }

    case Request::kSetVringAddr: {
      const auto a = load<VringAddr>(payload);
      AZOTE_TRY(i, queue_index(a.index, "SET_VRING_ADDR"));
      AZOTE_TRYV(check_not_started(i, req));
      if (a.flags != 0) return bad(Errc::kBadVring, "SET_VRING_ADDR asks for dirty logging, which is not supported");
      if (memory_.empty()) return bad(Errc::kBadState, "SET_VRING_ADDR before a memory table");
      if (vrings_[i].num == 0) return bad(Errc::kBadState, "SET_VRING_ADDR before SET_VRING_NUM");
      AZOTE_TRYV(place(a, vrings_[i].num));
      vrings_[i].addr = a;
      vrings_[i].addr_set = true;
      return none;
    }

    case Request::kSetVringBase: {
      const auto s = load<VringState>(payload);
      AZOTE_TRY(i, queue_index(s.index, "SET_VRING_BASE"));
      AZOTE_TRYV(check_not_started(i, req));
      if (s.num > 0xffff) return bad(Errc::kBadVring, "SET_VRING_BASE " + std::to_string(s.num) + " is over 65535");
      vrings_[i].base = static_cast<uint16_t>(s.num);
      return none;
    }

    case Request::kGetVringBase: {
      const auto s = load<VringState>(payload);
      AZOTE_TRY(i, queue_index(s.index, "GET_VRING_BASE"));
      stop(i);
      Vring& v = vrings_[i];
      v.started = false;
      v.kick.reset();
      return std::optional<Reply>(make_reply(hdr, bytes_of(VringState{i, v.base})));
    }

    case Request::kSetVringKick:
    case Request::kSetVringCall:
    case Request::kSetVringErr: {
      const auto v = load<uint64_t>(payload);
      AZOTE_TRY(i, queue_index(v & kVringIndexMask, request_name(req).c_str()));
      UniqueFd fd = fds.empty() ? UniqueFd() : std::move(fds[0]);
      if (fd) {
        const char* role = req == Request::kSetVringKick ? "kick" : req == Request::kSetVringCall ? "call" : "err";
        AZOTE_TRYV(check_ring_fd(fd.get(), std::string("the ") + role + " fd of queue " + std::to_string(i)));
      }
      // Only this queue is stopped and restarted around the change.
      stop(i);
      Vring& vr = vrings_[i];
      if (req == Request::kSetVringKick) {
        vr.kick = std::move(fd);
        vr.started = true;  // a ring starts on its kick (vhost-user.rst "Ring states")
      } else if (req == Request::kSetVringCall) {
        vr.call = std::move(fd);
      } else {
        vr.err = std::move(fd);
      }
      AZOTE_TRYV(maybe_run(i));
      return none;
    }

    case Request::kSetVringEnable: {
      const auto s = load<VringState>(payload);
      AZOTE_TRY(i, queue_index(s.index, "SET_VRING_ENABLE"));
      if (s.num > 1) return bad(Errc::kBadVring, "SET_VRING_ENABLE value " + std::to_string(s.num) + " is not 0 or 1");
      vrings_[i].enabled = s.num == 1;
      if (s.num == 0) {
        stop(i);
      } else {
        AZOTE_TRYV(maybe_run(i));
      }
      return none;
    }

    case Request::kGetConfig: {
      AZOTE_TRYV(require(kPfConfig, req));
      const auto ch = load<ConfigHeader>(payload);
      auto cfg = device_.get_config(ch.offset, ch.size);
      ConfigHeader out = ch;
      std::vector<uint8_t> body;
      if (cfg && cfg->size() == ch.size) {
        body = std::move(cfg).value();
      } else {
        out.size = 0;  // the protocol's error signal: an empty config
      }
      std::vector<uint8_t> p = bytes_of(out);
      p.insert(p.end(), body.begin(), body.end());
      return std::optional<Reply>(make_reply(hdr, std::move(p)));
    }

    case Request::kSetConfig: {
      AZOTE_TRYV(require(kPfConfig, req));
      const auto ch = load<ConfigHeader>(payload);
      auto r = device_.set_config(ch.offset, payload.subspan(sizeof(ConfigHeader)), ch.flags);
      if (!r && wants_ack(hdr)) return std::optional<Reply>(ack_reply(hdr, 1));  // a refusal, not a protocol error
      return none;
    }

    case Request::kGetInflightFd: {
      AZOTE_TRYV(require(kPfInflightShmfd, req));
      auto d = load<InflightDesc>(payload);
      AZOTE_TRYV(check_inflight_geometry(d));
      const uint64_t size = inflight_region_bytes(d.num_queues, d.queue_size);
      UniqueFd fd(::memfd_create("azote-vu-inflight", MFD_CLOEXEC | MFD_ALLOW_SEALING));
      if (!fd) return errno_error(Errc::kMap, "memfd_create for the inflight area");
      if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0)
        return errno_error(Errc::kMap, "ftruncate inflight area to " + std::to_string(size));
      // The frontend keeps this fd: it must not be able to shrink it under our mapping.
      if (::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0)
        return errno_error(Errc::kMap, "seal inflight area");
      d.mmap_offset = 0;
      AZOTE_TRY(area, make_inflight_area(std::move(fd), d, true));
      AZOTE_TRYV(with_queues_stopped([&]() -> Result<void, VuError> {
        inflight_ = std::move(area);
        return {};
      }));
      return std::optional<Reply>(make_reply(hdr, bytes_of(inflight_->desc), inflight_->fd.get()));
    }

    case Request::kSetInflightFd: {
      AZOTE_TRYV(require(kPfInflightShmfd, req));
      const auto d = load<InflightDesc>(payload);
      AZOTE_TRYV(check_inflight_geometry(d));
      const uint64_t want = inflight_region_bytes(d.num_queues, d.queue_size);
      if (d.mmap_size != want)
        return bad(Errc::kBadPayload, "inflight area is " + std::to_string(d.mmap_size) + " bytes, expected " +
                                          std::to_string(want));
      AZOTE_TRY(area, make_inflight_area(std::move(fds[0]), d, false));
      AZOTE_TRYV(with_queues_stopped([&]() -> Result<void, VuError> {
        inflight_ = std::move(area);
        return {};
      }));
      return none;
    }

    default:
      return bad(Errc::kUnsupported, request_name(hdr.request) + " is not supported by this backend");
  }
}

void Session::reset_device() {
  for (uint32_t i = 0; i < vrings_.size(); ++i) stop(i);
  vrings_.clear();
  vrings_.resize(num_queues_);  // closes every kick/call/err fd
  status_ = 0;
  device_.device_reset();
}

void Session::reset() {
  for (uint32_t i = 0; i < vrings_.size(); ++i) stop(i);
  vrings_.clear();
  vrings_.resize(num_queues_);
  inflight_.reset();
  memory_.clear();
  acked_features_ = 0;
  acked_protocol_ = 0;
  status_ = 0;
  device_.frontend_disconnected();
}

}  // namespace azote::vhost_user
