// Test helpers shared by the vhost-user tests: a recording fake device, fd helpers, a
// thread that runs a Backend, and raw message building for hostile inputs.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "base/temp_dir.hpp"
#include "vhost_user/backend.hpp"
#include "vhost_user/device.hpp"
#include "vhost_user/message.hpp"
#include "vhost_user/session.hpp"

namespace azote::vhost_user::testing {

using namespace std::chrono_literals;

inline UniqueFd sealed_memfd(uint64_t size, bool seal = true) {
  UniqueFd fd(::memfd_create("vu-test", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!fd || ::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) return UniqueFd();
  if (seal && ::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) != 0) return UniqueFd();
  return fd;
}

inline UniqueFd make_eventfd() { return UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)); }

inline size_t count_open_fds() {
  size_t n = 0;
  DIR* d = ::opendir("/proc/self/fd");
  if (d == nullptr) return 0;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] != '.') ++n;
  }
  ::closedir(d);
  return n - 1;  // the DIR's own fd
}

// Polls `pred` until it holds or `timeout` passes.
inline bool wait_for(const std::function<bool()>& pred, std::chrono::milliseconds timeout = 3000ms) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(2ms);
  }
  return pred();
}

class FakeDevice : public Device {
 public:
  struct Started {
    VringInfo info;  // fds inside are the backend's (valid while running); use kick/call below
    UniqueFd kick, call;
  };

  uint64_t features() const override { return feats; }
  uint64_t protocol_features() const override { return pfeats; }
  uint32_t num_queues() const override { return nq; }
  uint32_t max_queue_size() const override { return qsize; }
  void set_features(uint64_t a) override {
    std::lock_guard l(mu);
    acked = a;
    features_set = true;
  }
  Result<std::vector<uint8_t>, VuError> get_config(uint32_t offset, uint32_t size) override {
    std::lock_guard l(mu);
    if (uint64_t{offset} + size > config.size()) return make_error(Errc::kDevice, "out of range");
    return std::vector<uint8_t>(config.begin() + offset, config.begin() + offset + size);
  }
  Result<void, VuError> set_config(uint32_t offset, std::span<const uint8_t> data, uint32_t) override {
    std::lock_guard l(mu);
    if (refuse_set_config || uint64_t{offset} + data.size() > config.size())
      return make_error(Errc::kDevice, "read-only");
    std::memcpy(config.data() + offset, data.data(), data.size());
    return {};
  }
  void queue_started(const VringInfo& v) override {
    std::lock_guard l(mu);
    Started s;
    s.info = v;
    if (v.kick_fd >= 0) s.kick = UniqueFd(::fcntl(v.kick_fd, F_DUPFD_CLOEXEC, 0));
    if (v.call_fd >= 0) s.call = UniqueFd(::fcntl(v.call_fd, F_DUPFD_CLOEXEC, 0));
    if (v.inflight != nullptr) {
      for (uint16_t h : take_on_start) v.inflight->begin(h);
    }
    started[v.index] = std::move(s);
    ++starts;
  }
  uint16_t queue_stopped(uint32_t index) override {
    std::lock_guard l(mu);
    auto it = started.find(index);
    uint16_t next = it != started.end() ? it->second.info.next_avail : 0;
    if (auto n = next_avail_on_stop.find(index); n != next_avail_on_stop.end()) next = n->second;
    started.erase(index);
    stopped.push_back(index);
    return next;
  }
  void device_reset() override {
    std::lock_guard l(mu);
    ++device_resets;
  }
  void frontend_disconnected() override {
    std::lock_guard l(mu);
    ++disconnects;
  }
  bool needs_reset() const override {
    std::lock_guard l(mu);
    return broken;
  }

  bool running(uint32_t index) {
    std::lock_guard l(mu);
    return started.count(index) != 0;
  }

  mutable std::mutex mu;
  uint64_t feats = bit(kFVersion1) | bit(28) | bit(1);
  uint64_t pfeats = kBackendProtocolFeatures;
  uint32_t nq = 2;
  uint32_t qsize = 256;
  std::vector<uint8_t> config = std::vector<uint8_t>(16);
  bool refuse_set_config = false;
  std::vector<uint16_t> take_on_start;  // heads marked in flight at each start
  std::map<uint32_t, uint16_t> next_avail_on_stop;
  uint64_t acked = 0;
  bool features_set = false;
  std::map<uint32_t, Started> started;
  std::vector<uint32_t> stopped;
  int starts = 0;
  int disconnects = 0;
  int device_resets = 0;
  bool broken = false;  // what needs_reset() answers (GET_STATUS)

  FakeDevice() {
    for (size_t i = 0; i < config.size(); ++i) config[i] = static_cast<uint8_t>(0xa0 + i);
  }
};

// Runs a Backend's loop on its own thread until destroyed.
class BackendThread {
 public:
  explicit BackendThread(std::unique_ptr<Backend> b) : b_(std::move(b)) {
    t_ = std::thread([this] {
      while (!stop_.load()) (void)b_->run_once(10ms);
    });
  }
  ~BackendThread() {
    stop_ = true;
    t_.join();
  }
  Backend& backend() { return *b_; }

 private:
  std::unique_ptr<Backend> b_;
  std::atomic<bool> stop_{false};
  std::thread t_;
};

// A private directory for socket paths.

// Raw message bytes: header + payload.
inline std::vector<uint8_t> raw_message(uint32_t request, uint32_t flags, std::span<const uint8_t> payload,
                                        std::optional<uint32_t> size_field = std::nullopt) {
  Header h{request, flags, size_field.value_or(static_cast<uint32_t>(payload.size()))};
  std::vector<uint8_t> b(sizeof h + payload.size());
  std::memcpy(b.data(), &h, sizeof h);
  if (!payload.empty()) std::memcpy(b.data() + sizeof h, payload.data(), payload.size());
  return b;
}

template <class T>
std::vector<uint8_t> pod_bytes(const T& v) {
  std::vector<uint8_t> b(sizeof(T));
  std::memcpy(b.data(), &v, sizeof(T));
  return b;
}

inline std::vector<uint8_t> mem_table_payload(const std::vector<MemoryRegionDesc>& regions,
                                              std::optional<uint32_t> nregions = std::nullopt) {
  MemoryTableHeader th{nregions.value_or(static_cast<uint32_t>(regions.size())), 0};
  std::vector<uint8_t> b = pod_bytes(th);
  for (const auto& r : regions) {
    auto rb = pod_bytes(r);
    b.insert(b.end(), rb.begin(), rb.end());
  }
  return b;
}

// Sends raw bytes with fds in one sendmsg (no validation at all).
inline bool send_raw(int sock, std::span<const uint8_t> bytes, std::span<const int> fds = {}) {
  iovec iov{const_cast<uint8_t*>(bytes.data()), bytes.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  std::vector<char> control;
  if (!fds.empty()) {
    control.resize(CMSG_SPACE(sizeof(int) * fds.size()));
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  return ::sendmsg(sock, &msg, MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size());
}

}  // namespace azote::vhost_user::testing
