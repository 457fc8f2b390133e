// Test helpers shared by the card's tests: vsock packets, and one VM as its driver sees
// the device (a GuestMemory with three MockDriver rings, kick and call eventfds).
#pragma once

#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>
#include <memory>
#include <thread>
#include <vector>

#include "cards/vsock/packet.hpp"
#include "cards/vsock/switch.hpp"
#include "guest_memory/guest_memory.hpp"
#include "virtio/testing/driver.hpp"

namespace azote::card_vsock::testing {

using namespace std::chrono_literals;
using virtio::testing::MockDriver;
using virtio::testing::Seg;
using Bytes = std::vector<uint8_t>;

inline constexpr uint16_t kQ = 256;
inline constexpr uint32_t kRxBuf = 4096 + kHeaderBytes;  // what Linux's driver posts

inline Bytes pattern(size_t n, uint32_t seed) {
  Bytes d(n);
  uint32_t x = seed * 2654435761u + 1;
  for (auto& b : d) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    b = static_cast<uint8_t>(x);
  }
  return d;
}

inline Header hdr(uint64_t src_cid, uint32_t src_port, uint64_t dst_cid, uint32_t dst_port, uint16_t op,
                  uint32_t len = 0) {
  Header h;
  h.src_cid = src_cid;
  h.dst_cid = dst_cid;
  h.src_port = src_port;
  h.dst_port = dst_port;
  h.len = len;
  h.type = kTypeStream;
  h.op = op;
  h.buf_alloc = 262144;  // passed through untouched
  h.fwd_cnt = 4242;
  return h;
}

inline Bytes pkt(const Header& h, const Bytes& payload = {}) {
  const auto b = encode_header(h);
  Bytes out(b.begin(), b.end());
  out.insert(out.end(), payload.begin(), payload.end());
  return out;
}
inline Bytes pkt(uint64_t src_cid, uint32_t src_port, uint64_t dst_cid, uint32_t dst_port, uint16_t op,
          const Bytes& payload = {}) {
  return pkt(hdr(src_cid, src_port, dst_cid, dst_port, op, static_cast<uint32_t>(payload.size())), payload);
}
inline Header header_of(const Bytes& b) { return decode_header(b); }
inline Bytes payload_of(const Bytes& b) { return Bytes(b.begin() + kHeaderBytes, b.end()); }

// One VM: its memory, its three rings (driver side), its kick and call eventfds.
class Vm {
 public:
  explicit Vm(uint32_t cid) : cid_(cid) {
    auto m = GuestMemory::create({{GuestAddress(0), 32ull << 20}});
    EXPECT_TRUE(m.ok());
    mem_ = std::make_unique<GuestMemory>(std::move(m).value());
    rx_ = std::make_unique<MockDriver>(*mem_, kQ, GuestAddress(0x100000), 8ull << 20);
    ev_ = std::make_unique<MockDriver>(*mem_, kQ, GuestAddress(0xa00000), 1ull << 20);
    tx_ = std::make_unique<MockDriver>(*mem_, kQ, GuestAddress(0x1000000), 16ull << 20);
    for (int i = 0; i < 3; ++i) {
      kick_[i] = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
      call_[i] = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    }
  }
  uint32_t cid() const { return cid_; }

  vhost_user::VringInfo info(uint32_t index, uint16_t next_avail = 0) const {
    const MockDriver& d = index == kRxQueue ? *rx_ : index == kTxQueue ? *tx_ : *ev_;
    vhost_user::VringInfo v;
    v.index = index;
    v.size = kQ;
    v.next_avail = next_avail;
    v.desc = d.desc_addr();
    v.avail = d.avail_addr();
    v.used = d.used_addr();
    v.memory = mem_.get();
    v.kick_fd = kick_[index].get();
    v.call_fd = call_[index].get();
    v.features = virtio::feature_bit(virtio::kFVersion1);
    return v;
  }

  void kick(uint32_t index) {
    const uint64_t one = 1;
    ASSERT_EQ(::write(kick_[index].get(), &one, sizeof one), 8);
  }

  // `n` rx buffers of `size` bytes; `split`: header and payload in two descriptors (as
  // Linux before 6.2 posted them).
  void post_rx(size_t n, uint32_t size = kRxBuf, bool split = false) {
    for (size_t i = 0; i < n; ++i) {
      std::vector<Seg> segs;
      if (split && size > kHeaderBytes) {
        segs.push_back({rx_->alloc(kHeaderBytes), static_cast<uint32_t>(kHeaderBytes), true});
        segs.push_back({rx_->alloc(size - kHeaderBytes), size - static_cast<uint32_t>(kHeaderBytes), true});
      } else {
        segs.push_back({rx_->alloc(size), size, true});
      }
      auto head = rx_->add_chain(segs);
      ASSERT_TRUE(head.has_value());
      rx_bufs_[*head] = segs;
    }
    rx_->publish();
    kick(kRxQueue);
  }

  // One packet on tx: the header in one descriptor, the payload (if any) in another.
  void send(const Bytes& p, bool publish = true) {
    std::vector<Seg> segs;
    const size_t first = std::min(p.size(), kHeaderBytes);
    segs.push_back({tx_->put(std::span(p.data(), first)), static_cast<uint32_t>(first), false});
    if (p.size() > first) {
      const auto rest = std::span(p.data() + first, p.size() - first);
      segs.push_back({tx_->put(rest), static_cast<uint32_t>(rest.size()), false});
    }
    ASSERT_TRUE(tx_->add_chain(segs).has_value());
    if (publish) {
      tx_->publish();
      kick(kTxQueue);
    }
  }

  // Packets written into rx buffers so far (each used buffer is one packet, as the
  // driver sees it); new ones only.
  std::vector<Bytes> take_rx() {
    std::vector<Bytes> out;
    for (const auto& e : rx_->take_used()) {
      Bytes b;
      const auto it = rx_bufs_.find(static_cast<uint16_t>(e.id));
      EXPECT_NE(it, rx_bufs_.end());
      if (it == rx_bufs_.end()) continue;
      uint32_t left = e.len;
      for (const Seg& s : it->second) {
        const uint32_t n = std::min(left, s.len);
        Bytes part(n);
        EXPECT_TRUE(mem_->read(s.gpa, part).ok());
        b.insert(b.end(), part.begin(), part.end());
        left -= n;
      }
      rx_bufs_.erase(it);
      out.push_back(std::move(b));
    }
    return out;
  }
  // Waits until `n` packets arrived in total since the last call (or `timeout`).
  std::vector<Bytes> wait_rx(size_t n, std::chrono::milliseconds timeout = 5000ms) {
    std::vector<Bytes> got;
    const auto end = std::chrono::steady_clock::now() + timeout;
    while (got.size() < n && std::chrono::steady_clock::now() < end) {
      for (auto& b : take_rx()) got.push_back(std::move(b));
      if (got.size() < n) std::this_thread::sleep_for(1ms);
    }
    return got;
  }
  // Nothing more arrives within `quiet`.
  std::vector<Bytes> rx_after(std::chrono::milliseconds quiet = 150ms) {
    std::this_thread::sleep_for(quiet);
    return take_rx();
  }

  // tx chains the card gave back, in total.
  size_t tx_used() {
    tx_done_ += tx_->take_used().size();
    return tx_done_;
  }
  bool wait_tx_used(size_t n, std::chrono::milliseconds timeout = 5000ms) {
    const auto end = std::chrono::steady_clock::now() + timeout;
    while (tx_used() < n && std::chrono::steady_clock::now() < end) std::this_thread::sleep_for(1ms);
    return tx_used() >= n;
  }
  uint64_t calls(uint32_t index) {
    uint64_t v = 0;
    return ::read(call_[index].get(), &v, sizeof v) == 8 ? v : 0;
  }
  MockDriver& tx() { return *tx_; }
  GuestMemory& mem() { return *mem_; }
  int kick_fd(uint32_t i) const { return kick_[i].get(); }
  int call_fd(uint32_t i) const { return call_[i].get(); }

 private:
  uint32_t cid_;
  std::unique_ptr<GuestMemory> mem_;
  std::unique_ptr<MockDriver> rx_, tx_, ev_;
  UniqueFd kick_[3], call_[3];
  std::map<uint16_t, std::vector<Seg>> rx_bufs_;
  size_t tx_done_ = 0;
};

}  // namespace azote::card_vsock::testing
