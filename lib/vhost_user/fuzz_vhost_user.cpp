// libFuzzer target: an arbitrary frontend message stream into the backend's Session,
// the same path Backend takes after Connection::recv. Each input is a sequence of
//
//   u8  fd control: bits 0-3 number of fds (0..15), bits 4-5 fd kind
//       (0: sealed 1 MiB memfd, 1: eventfd, 2: unsealed memfd, 3: sealed 8 KiB memfd)
//   12  header bytes (request, flags, size)
//   min(size, rest of input) payload bytes
//
// Transport rules are applied as Connection applies them (more than 8 fds, payload
// over the limit, or input ending inside a payload: the frontend is dropped). Every
// error resets the session, as Backend does. Checked invariants, beyond ASan/UBSan:
// every ring a device is given lies inside the memory it is given, resubmitted heads
// are inside the ring, a GET_STATUS reply is one status byte, and no fd outlives the
// input.
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "vhost_user/session.hpp"

using namespace azote;
using namespace azote::vhost_user;

namespace {

class FuzzDevice final : public Device {
 public:
  uint64_t features() const override { return bit(kFVersion1) | bit(28) | bit(29) | bit(1); }
  uint64_t protocol_features() const override { return kBackendProtocolFeatures; }
  uint32_t num_queues() const override { return 2; }
  uint32_t max_queue_size() const override { return 256; }
  void set_features(uint64_t) override {}
  Result<std::vector<uint8_t>, VuError> get_config(uint32_t offset, uint32_t size) override {
    if (uint64_t{offset} + size > 32) return make_error(Errc::kDevice, "out of range");
    return std::vector<uint8_t>(size, 0x5a);
  }
  Result<void, VuError> set_config(uint32_t offset, std::span<const uint8_t> data, uint32_t) override {
    if (uint64_t{offset} + data.size() > 32) return make_error(Errc::kDevice, "out of range");
    return {};
  }
  void queue_started(const VringInfo& v) override {
    const uint64_t n = v.size;
    if (v.memory == nullptr || n == 0 || n > 256) __builtin_trap();
    const uint8_t* d = v.memory->range(v.desc, 16 * n);
    const uint8_t* a = v.memory->range(v.avail, 6 + 2 * n);
    const uint8_t* u = v.memory->range(v.used, 6 + 8 * n);
    if (d == nullptr || a == nullptr || u == nullptr) __builtin_trap();
    // Touch both ends of every ring: a bad mapping faults here.
    volatile uint8_t sink = 0;
    sink = static_cast<uint8_t>(sink + d[0] + d[16 * n - 1] + a[0] + a[5 + 2 * n] + u[0] + u[5 + 8 * n]);
    for (uint16_t h : v.resubmit) {
      if (h >= n) __builtin_trap();
    }
    if (v.inflight != nullptr) {
      v.inflight->begin(static_cast<uint16_t>(v.next_avail % n));
      v.inflight->prepare_used(0);
      v.inflight->commit_used(static_cast<uint16_t>(v.next_avail + 1));
    }
    next_[v.index % 2] = v.next_avail;
    if ((++starts_ & 1) == 0) broken_ = true;
  }
  uint16_t queue_stopped(uint32_t index) override { return next_[index % 2]; }
  // DEVICE_NEEDS_RESET after every other queue start, until a device reset.
  void device_reset() override { broken_ = false; }
  void frontend_disconnected() override { broken_ = false; }
  bool needs_reset() const override { return broken_; }

 private:
  uint16_t next_[2] = {0, 0};
  bool broken_ = false;
  unsigned starts_ = 0;
};

int make_fd(unsigned kind) {
  switch (kind) {
    case 1:
      return ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    default: {
      const int fd = ::memfd_create("fuzz", MFD_CLOEXEC | MFD_ALLOW_SEALING);
      if (fd < 0) return -1;
      const off_t size = kind == 3 ? 8192 : (1 << 20);
      if (::ftruncate(fd, size) != 0 ||
          (kind != 2 && ::fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) != 0)) {
        ::close(fd);
        return -1;
      }
      return fd;
    }
  }
}

int lowest_free_fd() {
  const int fd = ::fcntl(0, F_DUPFD_CLOEXEC, 0);
  if (fd >= 0) ::close(fd);
  return fd;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const int baseline = lowest_free_fd();
  {
    FuzzDevice dev;
    Session session(dev);
    size_t pos = 0;
    while (pos + 1 + kHeaderSize <= size) {
      const uint8_t ctl = data[pos++];
      Header hdr;
      std::memcpy(&hdr, data + pos, kHeaderSize);
      pos += kHeaderSize;
      const size_t nfds = ctl & 0xf;
      const unsigned kind = (ctl >> 4) & 0x3;
      if (nfds > kMaxFds || hdr.size > kMaxPayloadSize) {  // Connection refuses these
        session.reset();
        continue;
      }
      if (size - pos < hdr.size) break;  // EOF inside the payload
      std::span<const uint8_t> payload(data + pos, hdr.size);
      pos += hdr.size;
      std::vector<UniqueFd> fds;
      for (size_t i = 0; i < nfds; ++i) fds.emplace_back(make_fd(kind));
      (void)session.wants_ack(hdr);
      auto r = session.handle(hdr, payload, std::move(fds));
      if (!r) {
        session.reset();
        continue;
      }
      if (*r) {
        const auto& reply = **r;
        if (reply.hdr.size != reply.payload.size() || reply.payload.size() > kMaxPayloadSize) __builtin_trap();
        // GET_STATUS answers with a status byte, never more.
        if (hdr.request == static_cast<uint32_t>(Request::kGetStatus) &&
            (reply.payload.size() != 8 || (load<uint64_t>(reply.payload) & ~kDeviceStatusMask) != 0))
          __builtin_trap();
      }
    }
  }
  if (lowest_free_fd() != baseline) __builtin_trap();  // an fd outlived its message
  return 0;
}
