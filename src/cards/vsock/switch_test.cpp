// The fabric driven without guests or hypervisors: each VM is a GuestMemory with three
// MockDriver rings (lib/virtio/testing) behind a VsockDevice, started as the vhost-user
// session would start them; the test plays each guest's driver (posts rx buffers, puts
// packets on tx, kicks) and reads what the switch thread wrote into the rx rings.
#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <thread>

#include "cards/vsock/device.hpp"
#include "cards/vsock/packet.hpp"
#include "cards/vsock/switch.hpp"
#include "cards/vsock/test_vm.hpp"

namespace azote::card_vsock {
namespace {

using namespace std::chrono_literals;
using namespace testing;

class Fabric : public ::testing::Test {
 protected:
  // Port i is cids[i]; every device's three queues are started.
  void make(const std::vector<uint32_t>& cids, Limits limits = {}) {
    auto s = Switch::start(cids, limits);
    ASSERT_TRUE(s.ok()) << s.error().message();
    sw_ = std::move(s).value();
    for (size_t i = 0; i < cids.size(); ++i) {
      vms_.push_back(std::make_unique<Vm>(cids[i]));
      devs_.push_back(std::make_unique<VsockDevice>(*sw_, i, cids[i]));
      start(i);
    }
  }
  void start(size_t i) {
    devs_[i]->set_features(virtio::feature_bit(virtio::kFVersion1));
    for (uint32_t q = 0; q < kNumQueues; ++q) devs_[i]->queue_started(vms_[i]->info(q));
  }
  // What the vhost-user session does when the frontend goes away.
  void disconnect(size_t i) {
    for (uint32_t q = 0; q < kNumQueues; ++q) (void)devs_[i]->queue_stopped(q);
    devs_[i]->frontend_disconnected();
  }
  void TearDown() override {
    devs_.clear();
    sw_.reset();
  }
  Vm& vm(size_t i) { return *vms_[i]; }
  SwitchStats stats() const { return sw_->stats(); }
  // Waits until `pred(stats())` holds.
  bool wait_stats(const std::function<bool(const SwitchStats&)>& pred, std::chrono::milliseconds timeout = 5000ms) {
    const auto end = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < end) {
      if (pred(stats())) return true;
      std::this_thread::sleep_for(1ms);
    }
    return pred(stats());
  }

  std::unique_ptr<Switch> sw_;
  std::vector<std::unique_ptr<Vm>> vms_;
  std::vector<std::unique_ptr<VsockDevice>> devs_;
};

// ---------------------------------------------------------------------------------------

TEST(Device, FeaturesQueuesAndConfigSpace) {
  auto sw = Switch::start({3, 7});
  ASSERT_TRUE(sw.ok()) << sw.error().message();
  VsockDevice d(**sw, 1, 7);
  EXPECT_EQ(d.features(), virtio::feature_bit(virtio::kFVersion1)) << "VERSION_1 only: no SEQPACKET, no EVENT_IDX";
  using vhost_user::bit;
  EXPECT_EQ(d.protocol_features(), bit(vhost_user::kPfMq) | bit(vhost_user::kPfConfig) | bit(vhost_user::kPfReplyAck) |
                                       bit(vhost_user::kPfResetDevice) | bit(vhost_user::kPfStatus));
  EXPECT_EQ(d.num_queues(), 3u);
  auto all = d.get_config(0, 8);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(*all, (Bytes{7, 0, 0, 0, 0, 0, 0, 0}));
  VsockDevice big(**sw, 1, 0xfffffffe);
  EXPECT_EQ(*big.get_config(0, 4), (Bytes{0xfe, 0xff, 0xff, 0xff}));
  EXPECT_EQ(*big.get_config(4, 4), (Bytes{0, 0, 0, 0}));
  EXPECT_EQ(*big.get_config(3, 2), (Bytes{0xff, 0}));
  EXPECT_EQ(big.get_config(8, 0)->size(), 0u);
  EXPECT_FALSE(d.get_config(4, 8).ok());
  EXPECT_FALSE(d.get_config(0, 9).ok());
  EXPECT_FALSE(d.get_config(9, 0).ok());
  const uint8_t w[8] = {9};
  EXPECT_FALSE(d.set_config(0, w, 0).ok()) << "the CID is the card's";
}

TEST(Device, TheSwitchRefusesABadFabric) {
  EXPECT_FALSE(Switch::start({}).ok());
  EXPECT_FALSE(Switch::start({5}).ok()) << "no parent";
  EXPECT_FALSE(Switch::start({3, 3}).ok());
  EXPECT_FALSE(Switch::start({3, 5, 5}).ok());
  EXPECT_FALSE(Switch::start({3, 2}).ok());
  EXPECT_FALSE(Switch::start({3, 0xffffffff}).ok());
  EXPECT_FALSE(Switch::start({3, 4, 5, 6, 7, 8}).ok()) << "five enclaves";
  EXPECT_TRUE(Switch::start({3, 4, 5, 6, 7}).ok());
}

// The boot heartbeat's first packet (ENCLAVES.md §5): the enclave connects to (3, 9000).
TEST_F(Fabric, EnclaveRequestReachesTheParentByteExact) {
  make({3, 16});
  vm(0).post_rx(4);
  const Bytes req = pkt(16, 1025, 3, 9000, kOpRequest);
  vm(1).send(req);
  const auto got = vm(0).wait_rx(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0], req);
  EXPECT_TRUE(vm(1).wait_tx_used(1));
  EXPECT_GE(vm(0).calls(kRxQueue), 1u) << "the parent was interrupted";
  const auto s = stats();
  EXPECT_EQ(s.ports[1].tx_packets, 1u);
  EXPECT_EQ(s.ports[0].rx_packets, 1u);
  EXPECT_EQ(s.ports[1].connections, 1u);
  EXPECT_EQ(vm(0).rx_after().size(), 0u);
}

TEST_F(Fabric, StreamPayloadsBothWays) {
  make({3, 5});
  vm(0).post_rx(64);
  vm(1).post_rx(64, kRxBuf, /*split=*/true);
  // The heartbeat: REQUEST, RESPONSE, one byte 0xB7 each way.
  vm(1).send(pkt(5, 1024, 3, 9000, kOpRequest));
  ASSERT_EQ(vm(0).wait_rx(1).size(), 1u);
  const Bytes resp = pkt(3, 9000, 5, 1024, kOpResponse);
  vm(0).send(resp);
  auto e = vm(1).wait_rx(1);
  ASSERT_EQ(e.size(), 1u);
  EXPECT_EQ(e[0], resp);
  const Bytes up = pkt(5, 1024, 3, 9000, kOpRw, {0xb7});
  vm(1).send(up);
  auto p = vm(0).wait_rx(1);
  ASSERT_EQ(p.size(), 1u);
  EXPECT_EQ(p[0], up);
  const Bytes down = pkt(3, 9000, 5, 1024, kOpRw, {0xb7});
  vm(0).send(down);
  e = vm(1).wait_rx(1);
  ASSERT_EQ(e.size(), 1u);
  EXPECT_EQ(e[0], down);

  // A payload larger than one rx buffer arrives as several RW packets of the same
  // connection, header unchanged but for len (as vhost-vsock splits one).
  const Bytes big = pattern(10000, 1);
  vm(1).send(pkt(5, 1024, 3, 9000, kOpRw, big));
  p = vm(0).wait_rx(3);
  ASSERT_EQ(p.size(), 3u);
  Bytes joined;
  const uint32_t lens[] = {4096, 4096, 1808};
  for (size_t i = 0; i < 3; ++i) {
    Header h = header_of(p[i]);
    EXPECT_EQ(h.len, lens[i]);
    EXPECT_EQ(p[i].size(), kHeaderBytes + lens[i]);
    EXPECT_EQ(h, hdr(5, 1024, 3, 9000, kOpRw, lens[i]));
    const Bytes part = payload_of(p[i]);
    joined.insert(joined.end(), part.begin(), part.end());
  }
  EXPECT_EQ(joined, big);
  // The largest packet (64 KiB) into the enclave's two-descriptor buffers: 16 pieces.
  const Bytes max = pattern(kMaxPayload, 2);
  vm(0).send(pkt(3, 9000, 5, 1024, kOpRw, max));
  e = vm(1).wait_rx(16);
  ASSERT_EQ(e.size(), 16u);
  joined.clear();
  for (const Bytes& b : e) {
    EXPECT_EQ(header_of(b).len, 4096u);
    const Bytes part = payload_of(b);
    joined.insert(joined.end(), part.begin(), part.end());
  }
  EXPECT_EQ(joined, max);
  const auto s = stats();
  EXPECT_EQ(s.ports[0].tx_packets, 3u);
  EXPECT_EQ(s.ports[0].tx_bytes, 1u + kMaxPayload);
  EXPECT_EQ(s.ports[1].rx_packets, 3u);
  EXPECT_EQ(s.ports[1].rx_chains, 18u);
  EXPECT_EQ(s.ports[1].tx_bytes, 1u + 10000u);
  EXPECT_EQ(s.ports[0].rx_chains, 5u);
  for (uint64_t d : s.drops) EXPECT_EQ(d, 0u);
}

TEST_F(Fabric, EnclavesReachOnlyTheirParent) {
  make({5, 3, 6});  // the parent need not come first
  for (size_t i = 0; i < 3; ++i) vm(i).post_rx(16);
  // Enclave 5 to enclave 6, to the host (2), to the hypervisor (0), to itself: each
  // answered with an RST from the address it tried, nothing reaches anyone else.
  const std::pair<uint64_t, uint32_t> targets[] = {{6, 80}, {2, 9000}, {0, 10005}, {5, 1}, {1, 7}};
  for (const auto& [cid, port] : targets) {
    vm(0).send(pkt(5, 2000, cid, port, kOpRequest));
    const auto got = vm(0).wait_rx(1);
    ASSERT_EQ(got.size(), 1u) << "cid " << cid;
    EXPECT_EQ(got[0], pkt(rst_header(cid, port, 5, 2000))) << "cid " << cid;
  }
  // A dst_cid past 32 bits is no CID of the fabric either.
  vm(2).send(pkt(6, 1, (uint64_t{1} << 32) | 3, 9000, kOpRw, {1, 2, 3}));
  auto got = vm(2).wait_rx(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0], pkt(rst_header((uint64_t{1} << 32) | 3, 9000, 6, 1)));
  // The parent to a CID that is not one of its enclaves, to the host, to itself.
  for (const uint64_t cid : {uint64_t{7}, uint64_t{2}, uint64_t{3}}) {
    vm(1).send(pkt(3, 4000, cid, 80, kOpRequest));
    got = vm(1).wait_rx(1);
    ASSERT_EQ(got.size(), 1u) << "cid " << cid;
    EXPECT_EQ(got[0], pkt(rst_header(cid, 80, 3, 4000)));
  }
  // An RST is never answered.
  vm(0).send(pkt(5, 2000, 6, 80, kOpRst));
  EXPECT_TRUE(vm(0).wait_tx_used(6));
  EXPECT_TRUE(wait_stats([](const SwitchStats& s) { return s.drops_of(Drop::kUnroutable) == 10; }));
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(vm(i).rx_after().size(), 0u) << i;
  const auto s = stats();
  EXPECT_EQ(s.rsts_sent, 9u);
  EXPECT_EQ(s.ports[0].rsts_received, 5u);
  EXPECT_EQ(s.ports[0].tx_packets, 0u);
  EXPECT_EQ(s.ports[1].rx_packets + s.ports[2].rx_packets, 0u);
  // ...while each enclave still reaches the parent and the parent each enclave.
  vm(0).send(pkt(5, 2001, 3, 9000, kOpRequest));
  vm(2).send(pkt(6, 2001, 3, 9000, kOpRequest));
  EXPECT_EQ(vm(1).wait_rx(2).size(), 2u);
  vm(1).send(pkt(3, 1, 6, 2, kOpRequest));
  EXPECT_EQ(vm(2).wait_rx(1).size(), 1u);
}

TEST_F(Fabric, ASpoofedSourceIsDroppedUnanswered) {
  make({3, 5, 6});
  for (size_t i = 0; i < 3; ++i) vm(i).post_rx(8);
  vm(1).send(pkt(3, 1, 3, 9000, kOpRequest));  // the parent's address
  vm(1).send(pkt(6, 1, 3, 9000, kOpRequest));  // the other enclave's
  vm(1).send(pkt(5 | (uint64_t{1} << 32), 1, 3, 9000, kOpRequest));
  vm(0).send(pkt(5, 1, 6, 1, kOpRequest));  // the parent posing as an enclave
  EXPECT_TRUE(vm(1).wait_tx_used(3));
  EXPECT_TRUE(vm(0).wait_tx_used(1));
  EXPECT_TRUE(wait_stats([](const SwitchStats& s) { return s.drops_of(Drop::kSpoofed) == 4; }));
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(vm(i).rx_after().size(), 0u) << i;
  EXPECT_EQ(stats().rsts_sent, 0u);
}

TEST_F(Fabric, MalformedPacketsAreDroppedAndTheQueueGoesOn) {
  make({3, 5});
  vm(0).post_rx(8);
  vm(1).post_rx(8);
  const Bytes over = pattern(kMaxPayload + 1, 3);
  vm(1).send(pkt(5, 1, 3, 9000, kOpRw, over), false);                             // too large
  Bytes bad_len = pkt(5, 1, 3, 9000, kOpRw, {1, 2, 3, 4, 5});
  store_le(bad_len.data() + kOffLen, 10, 4);
  vm(1).send(bad_len, false);                                                     // len 10, 5 present
  Header h = hdr(5, 1, 3, 9000, kOpRequest);
  h.type = kTypeSeqpacket;
  vm(1).send(pkt(h), false);                                                      // not a stream
  h = hdr(5, 1, 3, 9000, kOpInvalid);
  vm(1).send(pkt(h), false);                                                      // op 0
  h.op = 8;
  vm(1).send(pkt(h), false);                                                      // op 8
  vm(1).send(Bytes(20, 0), false);                                                // shorter than a header
  vm(1).send(pkt(hdr(5, 1, 3, 9000, kOpRequest, 3), {1, 2, 3}), false);           // REQUEST with a payload
  const Bytes good = pkt(5, 1, 3, 9000, kOpRequest);
  vm(1).send(good);
  const auto got = vm(0).wait_rx(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0], good);
  EXPECT_TRUE(vm(1).wait_tx_used(8));
  const auto s = stats();
  EXPECT_EQ(s.drops_of(Drop::kTooLarge), 1u);
  EXPECT_EQ(s.drops_of(Drop::kBadLen), 2u);
  EXPECT_EQ(s.drops_of(Drop::kBadType), 1u);
  EXPECT_EQ(s.drops_of(Drop::kBadOp), 2u);
  EXPECT_EQ(s.drops_of(Drop::kShort), 1u);
  EXPECT_EQ(s.rsts_sent, 0u) << "malformed packets are not answered";
  EXPECT_EQ(vm(1).rx_after().size(), 0u);
  EXPECT_FALSE(devs_[1]->needs_reset()) << "a bad packet is not a broken ring";
}

TEST_F(Fabric, AFullRxRingHoldsPacketsBoundedThenDrainsInOrder) {
  Limits l;
  l.pair_packets = 4;
  make({3, 5}, l);
  // The parent has posted no rx buffer. The enclave sends 12 packets: 4 wait in the
  // card, a 5th is held at the enclave, and its tx ring is not taken from further.
  std::vector<Bytes> sent;
  for (uint32_t i = 0; i < 12; ++i) {
    sent.push_back(pkt(5, 1024, 3, 9000, kOpRw, pattern(100 + i, i)));
    vm(1).send(sent.back());
  }
  EXPECT_TRUE(vm(1).wait_tx_used(5));
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(vm(1).tx_used(), 5u) << "the enclave's tx ring waits for the parent";
  EXPECT_EQ(stats().ports[1].stalls, 1u);
  vm(1).kick(kTxQueue);  // a kick changes nothing while the destination is full
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(vm(1).tx_used(), 5u);
  // Buffers come: everything arrives, in order, and the tx ring is taken from again.
  vm(0).post_rx(3);
  auto got = vm(0).wait_rx(3);
  vm(0).post_rx(20);
  auto rest = vm(0).wait_rx(9);
  got.insert(got.end(), rest.begin(), rest.end());
  ASSERT_EQ(got.size(), 12u);
  for (size_t i = 0; i < 12; ++i) EXPECT_EQ(got[i], sent[i]) << i;
  EXPECT_TRUE(vm(1).wait_tx_used(12));
  EXPECT_EQ(vm(0).rx_after().size(), 0u);
  for (uint64_t d : stats().drops) EXPECT_EQ(d, 0u);
}

// One kick for six packets, one packet of room: the sender is held and released again
// and again within rounds, and the rest of its ring is announced by no further kick.
TEST_F(Fabric, AReleasedSenderGoesOnWithoutAnotherKick) {
  Limits l;
  l.pair_packets = 1;
  make({3, 5}, l);
  vm(0).post_rx(16);
  std::vector<Bytes> sent;
  for (uint32_t i = 0; i < 6; ++i) {
    sent.push_back(pkt(5, 1, 3, 9000, kOpRw, {static_cast<uint8_t>(i)}));
    vm(1).send(sent.back(), i == 5);
  }
  const auto got = vm(0).wait_rx(6, 2000ms);
  ASSERT_EQ(got.size(), 6u);
  for (size_t i = 0; i < 6; ++i) EXPECT_EQ(got[i], sent[i]);
  EXPECT_TRUE(vm(1).wait_tx_used(6));
}

TEST_F(Fabric, TheByteBoundHoldsLargePackets) {
  Limits l;
  l.pair_bytes = 3 * (kHeaderBytes + 60000);
  make({3, 5}, l);
  for (uint32_t i = 0; i < 8; ++i) vm(0).send(pkt(3, 1, 5, 2, kOpRw, pattern(60000, i)));
  EXPECT_TRUE(vm(0).wait_tx_used(4));
  std::this_thread::sleep_for(150ms);
  EXPECT_EQ(vm(0).tx_used(), 4u) << "3 queued (the byte bound), 1 held";
  vm(1).post_rx(8 * 15);
  EXPECT_EQ(vm(1).wait_rx(8 * 15).size(), 8u * 15);
  EXPECT_TRUE(vm(0).wait_tx_used(8));
}

TEST_F(Fabric, ADisconnectedEnclavesConnectionsAreResetAtTheParent) {
  make({3, 5});
  vm(0).post_rx(64);
  vm(1).post_rx(64);
  const auto exchange = [&](size_t from, const Bytes& p) {
    vm(from).send(p);
    ASSERT_EQ(vm(1 - from).wait_rx(1).size(), 1u);
  };
  // (a) enclave 1000 -> parent 9000: open.
  exchange(1, pkt(5, 1000, 3, 9000, kOpRequest));
  exchange(0, pkt(3, 9000, 5, 1000, kOpResponse));
  // (b) enclave 1001 -> parent 9001, then reset by the enclave.
  exchange(1, pkt(5, 1001, 3, 9001, kOpRequest));
  exchange(0, pkt(3, 9001, 5, 1001, kOpResponse));
  exchange(1, pkt(5, 1001, 3, 9001, kOpRst));
  // (c) parent 2000 -> enclave 80, shut down both ways.
  exchange(0, pkt(3, 2000, 5, 80, kOpRequest));
  exchange(1, pkt(5, 80, 3, 2000, kOpResponse));
  Header sh = hdr(3, 2000, 5, 80, kOpShutdown);
  sh.flags = kShutdownBoth;
  exchange(0, pkt(sh));
  sh = hdr(5, 80, 3, 2000, kOpShutdown);
  sh.flags = kShutdownBoth;
  exchange(1, pkt(sh));
  // (d) parent 2001 -> enclave 81: open.
  exchange(0, pkt(3, 2001, 5, 81, kOpRequest));
  exchange(1, pkt(5, 81, 3, 2001, kOpResponse));
  // (e) enclave 1002 -> parent 9002: only half shut down.
  exchange(1, pkt(5, 1002, 3, 9002, kOpRequest));
  exchange(0, pkt(3, 9002, 5, 1002, kOpResponse));
  sh = hdr(5, 1002, 3, 9002, kOpShutdown);
  sh.flags = kShutdownSend;
  exchange(1, pkt(sh));
  EXPECT_EQ(stats().ports[1].connections, 3u);
  // Data the enclave sent just before it went still arrives, then the resets.
  vm(0).take_rx();
  const Bytes last = pkt(5, 1000, 3, 9000, kOpRw, {1, 2, 3});
  vm(1).send(last);
  ASSERT_TRUE(vm(1).wait_tx_used(9));
  disconnect(1);
  auto got = vm(0).wait_rx(4);
  ASSERT_EQ(got.size(), 4u);
  EXPECT_EQ(got[0], last);
  std::vector<Bytes> rsts(got.begin() + 1, got.end());
  std::sort(rsts.begin(), rsts.end());
  std::vector<Bytes> want = {pkt(rst_header(5, 1000, 3, 9000)), pkt(rst_header(5, 81, 3, 2001)),
                             pkt(rst_header(5, 1002, 3, 9002))};
  std::sort(want.begin(), want.end());
  EXPECT_EQ(rsts, want);
  EXPECT_EQ(vm(0).rx_after().size(), 0u);
  EXPECT_EQ(stats().ports[1].connections, 0u);
  EXPECT_EQ(stats().ports[0].rsts_received, 3u);
  // The enclave is gone: the parent's packets for it are refused.
  vm(0).send(pkt(3, 2001, 5, 81, kOpRw, {9}));
  got = vm(0).wait_rx(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0], pkt(rst_header(5, 81, 3, 2001)));
}

// An enclave attached to a running switch (add-device), detached (remove-device), and
// another CID in the same slot: what the first sent before it went reaches the parent,
// then its resets, then the newcomer's packets, in that order; what was queued for it
// is dropped, never delivered to the newcomer.
TEST_F(Fabric, AttachAndDetachWhileRunning) {
  make({3});
  EXPECT_EQ(stats().ports.size(), kMaxDevices);
  EXPECT_FALSE(stats().ports[1].attached);
  const auto attach = [&](uint32_t cid) {
    auto port = sw_->attach(cid);
    EXPECT_TRUE(port.ok()) << port.error().message();
    EXPECT_EQ(*port, 1u) << "the first free slot";
    if (vms_.size() < 2) {
      vms_.push_back(nullptr);
      devs_.push_back(nullptr);
    }
    devs_[1] = std::make_unique<VsockDevice>(*sw_, 1, cid);
    vms_[1] = std::make_unique<Vm>(cid);
    start(1);
  };
  attach(5);
  for (uint32_t bad : {0u, 2u, 3u, 5u, 0xffffffffu}) EXPECT_FALSE(sw_->attach(bad).ok()) << bad;
  EXPECT_FALSE(sw_->detach(0)) << "never the parent";
  EXPECT_FALSE(sw_->detach(2)) << "a free slot";
  EXPECT_TRUE(stats().ports[1].attached);
  EXPECT_EQ(stats().ports[1].cid, 5u);
  EXPECT_TRUE(stats().ports[1].rx_running && stats().ports[1].tx_running);
  // The parent has no rx buffers yet: the enclave's packets wait in the card.
  const Bytes req = pkt(5, 1024, 3, 9000, kOpRequest), data = pkt(5, 1024, 3, 9000, kOpRw, {1, 2, 3});
  vm(1).send(req);
  vm(1).send(data);
  ASSERT_TRUE(vm(1).wait_tx_used(2));
  // The enclave posts no rx buffers: the parent's REQUEST waits for it.
  vm(0).send(pkt(3, 2000, 5, 80, kOpRequest));
  ASSERT_TRUE(vm(0).wait_tx_used(1));
  ASSERT_TRUE(wait_stats([](const SwitchStats& s) { return s.ports[1].connections == 2; }));
  disconnect(1);
  EXPECT_TRUE(sw_->detach(1));
  EXPECT_FALSE(sw_->detach(1)) << "once";
  SwitchStats s = stats();
  EXPECT_FALSE(s.ports[1].attached);
  EXPECT_EQ(s.ports[1].cid, 0u);
  EXPECT_FALSE(s.ports[1].rx_running || s.ports[1].tx_running);
  EXPECT_EQ(s.drops_of(Drop::kDeviceDown), 1u) << "the parent's REQUEST for it";

  attach(6);
  EXPECT_EQ(stats().ports[1].tx_packets, 0u) << "a slot's counters start again";
  const Bytes req6 = pkt(6, 1024, 3, 9000, kOpRequest);
  vm(1).post_rx(4);
  vm(1).send(req6);
  ASSERT_TRUE(vm(1).wait_tx_used(1));
  vm(0).post_rx(8);
  const auto got = vm(0).wait_rx(5);
  ASSERT_EQ(got.size(), 5u);
  EXPECT_EQ(got[0], req);
  EXPECT_EQ(got[1], data);
  EXPECT_EQ(got[2], pkt(rst_header(5, 80, 3, 2000)));
  EXPECT_EQ(got[3], pkt(rst_header(5, 1024, 3, 9000)));
  EXPECT_EQ(got[4], req6);
  EXPECT_EQ(vm(1).rx_after().size(), 0u) << "nothing meant for cid 5 reaches cid 6";
  // CID 5 is nobody now; CID 6 answers.
  vm(0).send(pkt(3, 2001, 5, 80, kOpRequest));
  vm(0).send(pkt(3, 9000, 6, 1024, kOpResponse));
  const auto back = vm(0).wait_rx(1);
  ASSERT_EQ(back.size(), 1u);
  EXPECT_EQ(back[0], pkt(rst_header(5, 80, 3, 2001)));
  const auto e = vm(1).wait_rx(1);
  ASSERT_EQ(e.size(), 1u);
  EXPECT_EQ(e[0], pkt(3, 9000, 6, 1024, kOpResponse));
}

TEST_F(Fabric, AResetParentsConnectionsAreResetAtEachEnclave) {
  make({3, 5, 6});
  vm(0).post_rx(2);
  for (size_t i = 1; i < 3; ++i) vm(i).post_rx(16);
  vm(1).send(pkt(5, 1000, 3, 9000, kOpRequest));
  vm(2).send(pkt(6, 1000, 3, 9000, kOpRequest));
  ASSERT_EQ(vm(0).wait_rx(2).size(), 2u);
  // Packets the enclaves sent to the parent that it has not taken yet are dropped with it.
  vm(1).send(pkt(5, 1000, 3, 9000, kOpRw, {1}));
  ASSERT_TRUE(vm(1).wait_tx_used(2));
  for (uint32_t q = 0; q < kNumQueues; ++q) (void)devs_[0]->queue_stopped(q);
  devs_[0]->device_reset();
  EXPECT_EQ(stats().drops_of(Drop::kDeviceDown), 1u);
  auto a = vm(1).wait_rx(1);
  auto b = vm(2).wait_rx(1);
  ASSERT_EQ(a.size(), 1u);
  ASSERT_EQ(b.size(), 1u);
  EXPECT_EQ(a[0], pkt(rst_header(3, 9000, 5, 1000)));
  EXPECT_EQ(b[0], pkt(rst_header(3, 9000, 6, 1000)));
  // The parent's driver starts again (fresh rings): the old packet is gone.
  vms_[0] = std::make_unique<Vm>(3);
  start(0);
  vm(0).post_rx(4);
  EXPECT_EQ(vm(0).rx_after().size(), 0u);
  vm(1).send(pkt(5, 1001, 3, 9000, kOpRequest));
  EXPECT_EQ(vm(0).wait_rx(1).size(), 1u);
}

TEST_F(Fabric, TheConnectionTableIsBounded) {
  Limits l;
  l.connections_per_enclave = 2;
  l.half_open_after = 300ms;
  make({3, 5}, l);
  vm(0).post_rx(16);
  vm(1).post_rx(16);
  vm(1).send(pkt(5, 1, 3, 9000, kOpRequest));
  vm(1).send(pkt(5, 2, 3, 9000, kOpRequest));
  ASSERT_EQ(vm(0).wait_rx(2).size(), 2u);
  vm(0).send(pkt(3, 9000, 5, 1, kOpResponse));
  ASSERT_EQ(vm(1).wait_rx(1).size(), 1u);
  // A third is refused while both are young.
  vm(1).send(pkt(5, 3, 3, 9000, kOpRequest));
  auto got = vm(1).wait_rx(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0], pkt(rst_header(3, 9000, 5, 3)));
  EXPECT_EQ(stats().drops_of(Drop::kTableFull), 1u);
  EXPECT_EQ(vm(0).rx_after(50ms).size(), 0u);
  // The REQUEST nobody answered makes way once it is old; the established one never.
  std::this_thread::sleep_for(350ms);
  vm(1).send(pkt(5, 3, 3, 9000, kOpRequest));
  EXPECT_EQ(vm(0).wait_rx(1).size(), 1u);
  vm(1).send(pkt(5, 4, 3, 9000, kOpRequest));
  got = vm(1).wait_rx(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0], pkt(rst_header(3, 9000, 5, 4)));
}

TEST_F(Fabric, AStuckEnclaveDoesNotHoldTheParent) {
  Limits l;
  l.pair_packets = 2;
  l.stuck_after = 300ms;
  make({3, 5, 6}, l);
  vm(0).post_rx(16);
  vm(2).post_rx(16);
  // Enclave 5 posts no rx buffer. The parent connects and sends: 2 packets wait, the 3rd
  // is held, and with it the parent's whole tx ring (enclave 6's traffic too).
  vm(0).send(pkt(3, 2000, 5, 80, kOpRequest));
  vm(0).send(pkt(3, 2000, 5, 80, kOpRw, {1}));
  vm(0).send(pkt(3, 2000, 5, 80, kOpRw, {2}));
  vm(0).send(pkt(3, 2001, 6, 80, kOpRequest));
  ASSERT_TRUE(vm(0).wait_tx_used(3));
  EXPECT_EQ(vm(0).tx_used(), 3u);
  // After stuck_after the held packet's connection is reset at the parent...
  auto got = vm(0).wait_rx(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0], pkt(rst_header(5, 80, 3, 2000)));
  // ...and the parent goes on: enclave 6 gets its REQUEST.
  EXPECT_EQ(vm(2).wait_rx(1).size(), 1u);
  EXPECT_TRUE(vm(0).wait_tx_used(4));
  // While enclave 5 takes nothing, packets for it are refused at once.
  vm(0).send(pkt(3, 2002, 5, 81, kOpRequest));
  got = vm(0).wait_rx(1, 1000ms);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0], pkt(rst_header(5, 81, 3, 2002)));
  EXPECT_EQ(stats().drops_of(Drop::kStuck), 2u);
  // When it wakes up it gets what was queued, then the RST of its reset connection.
  vm(1).post_rx(8);
  got = vm(1).wait_rx(3);
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0], pkt(3, 2000, 5, 80, kOpRequest));
  EXPECT_EQ(got[1], pkt(3, 2000, 5, 80, kOpRw, {1}));
  EXPECT_EQ(got[2], pkt(rst_header(3, 2000, 5, 80)));
  // ...and it is reachable again.
  vm(0).send(pkt(3, 2003, 5, 82, kOpRequest));
  got = vm(1).wait_rx(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0], pkt(3, 2003, 5, 82, kOpRequest));
}

TEST_F(Fabric, RxBuffersTooSmallAreGivenBackEmpty) {
  make({3, 5});
  vm(0).post_rx(1, 40);  // not even a header
  vm(0).post_rx(1, kHeaderBytes);  // a header, no payload
  vm(1).send(pkt(5, 1, 3, 9000, kOpRw, {1, 2, 3}));
  EXPECT_TRUE(wait_stats([](const SwitchStats& s) { return s.ports[0].rx_chains_too_small == 2; }));
  auto got = vm(0).wait_rx(2);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_TRUE(got[0].empty());
  EXPECT_TRUE(got[1].empty());
  vm(0).post_rx(1, kHeaderBytes + 2);  // two bytes: the packet in two pieces
  vm(0).post_rx(1, kHeaderBytes + 2);
  got = vm(0).wait_rx(2);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0], pkt(hdr(5, 1, 3, 9000, kOpRw, 2), {1, 2}));
  EXPECT_EQ(got[1], pkt(hdr(5, 1, 3, 9000, kOpRw, 1), {3}));
}

TEST_F(Fabric, AStoppedRingResumesWhereItStopped) {
  make({3, 5});
  vm(0).post_rx(16);
  vm(1).send(pkt(5, 1, 3, 9000, kOpRequest));
  vm(1).send(pkt(5, 2, 3, 9000, kOpRequest));
  ASSERT_EQ(vm(0).wait_rx(2).size(), 2u);
  EXPECT_EQ(devs_[1]->queue_stopped(kTxQueue), 2u);
  EXPECT_EQ(devs_[0]->queue_stopped(kRxQueue), 2u);
  EXPECT_EQ(devs_[1]->queue_stopped(kEventQueue), 0u);
  // While the parent's rx ring is stopped (a memory table change), packets wait.
  devs_[1]->queue_started(vm(1).info(kTxQueue, 2));
  vm(1).send(pkt(5, 3, 3, 9000, kOpRequest));
  EXPECT_TRUE(vm(1).wait_tx_used(3));
  EXPECT_EQ(vm(0).rx_after(100ms).size(), 0u);
  devs_[0]->queue_started(vm(0).info(kRxQueue, 2));
  vm(0).kick(kRxQueue);
  auto got = vm(0).wait_rx(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0], pkt(5, 3, 3, 9000, kOpRequest));
}

TEST_F(Fabric, ABrokenRingAsksForAReset) {
  make({3, 5});
  vm(0).post_rx(4);
  // avail->idx 300 ahead on a 256-entry ring: only a broken driver does that.
  vm(1).tx().set_avail_idx(300);
  vm(1).kick(kTxQueue);
  EXPECT_TRUE(wait_stats([&](const SwitchStats&) { return devs_[1]->needs_reset(); }));
  EXPECT_FALSE(devs_[0]->needs_reset());
  // The reset ends it; the fabric itself never stopped.
  for (uint32_t q = 0; q < kNumQueues; ++q) (void)devs_[1]->queue_stopped(q);
  devs_[1]->device_reset();
  EXPECT_FALSE(devs_[1]->needs_reset());
}

}  // namespace
}  // namespace azote::card_vsock
