// The card over real vhost-user sockets: a Backend per VM in front of its VsockDevice,
// lib/vhost_user's Frontend playing each azote-hv (negotiation, memory table, rings,
// GET_VRING_BASE, closing the connection), MockDriver rings playing each guest.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <atomic>
#include <thread>

#include "base/temp_dir.hpp"
#include "cards/vsock/device.hpp"
#include "cards/vsock/test_vm.hpp"
#include "vhost_user/backend.hpp"
#include "vhost_user/frontend.hpp"

namespace azote::card_vsock {
namespace {

using namespace std::chrono_literals;
using namespace testing;

// The card's control thread: every backend's socket, as runtime::Loop would serve them.
class ControlThread {
 public:
  explicit ControlThread(std::vector<vhost_user::Backend*> b) : b_(std::move(b)) {
    t_ = std::thread([this] {
      while (!stop_.load())
        for (auto* backend : b_) (void)backend->run_once(5ms);
    });
  }
  ~ControlThread() {
    stop_ = true;
    t_.join();
  }

 private:
  std::vector<vhost_user::Backend*> b_;
  std::atomic<bool> stop_{false};
  std::thread t_;
};

// What azote-hv does for one virtio-vsock device once the driver is ready.
Result<vhost_user::Frontend, vhost_user::VuError> wire(const std::string& path, Vm& vm) {
  AZOTE_TRY(fe, vhost_user::Frontend::connect(path));
  AZOTE_TRYV(fe.set_features(virtio::feature_bit(virtio::kFVersion1)));
  AZOTE_TRYV(fe.set_mem_table(vm.mem()));
  for (uint32_t q = 0; q < kNumQueues; ++q) {
    const vhost_user::VringInfo i = vm.info(q);
    vhost_user::VringConfig c;
    c.index = q;
    c.num = i.size;
    c.desc_user_addr = *vhost_user::Frontend::user_addr(vm.mem(), i.desc, 16ull * i.size);
    c.avail_user_addr = *vhost_user::Frontend::user_addr(vm.mem(), i.avail, 6 + 2ull * i.size);
    c.used_user_addr = *vhost_user::Frontend::user_addr(vm.mem(), i.used, 6 + 8ull * i.size);
    c.kick_fd = vm.kick_fd(q);
    c.call_fd = vm.call_fd(q);
    AZOTE_TRYV(fe.setup_vring(c));
    AZOTE_TRYV(fe.set_vring_enable(q, true));
  }
  return fe;
}

TEST(Card, TwoVmsThroughVhostUser) {
  TempDir dir("card-vsock");
  auto sw = Switch::start({3, 5});
  ASSERT_TRUE(sw.ok());
  VsockDevice parent(**sw, 0, 3), enclave(**sw, 1, 5);
  auto bp = vhost_user::Backend::listen(dir.path() + "/p.sock", parent);
  auto be = vhost_user::Backend::listen(dir.path() + "/e.sock", enclave);
  ASSERT_TRUE(bp.ok() && be.ok());
  struct stat st {};
  ASSERT_EQ(::stat((dir.path() + "/p.sock").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ControlThread control({bp->get(), be->get()});
  Vm pvm(3), evm(5);
  auto pfe = wire(dir.path() + "/p.sock", pvm);
  ASSERT_TRUE(pfe.ok()) << pfe.error().message();
  auto efe = wire(dir.path() + "/e.sock", evm);
  ASSERT_TRUE(efe.ok()) << efe.error().message();
  // What azote-hv checks and shows the driver.
  EXPECT_EQ(efe->backend_features() & ~vhost_user::bit(vhost_user::kFProtocolFeatures),
            virtio::feature_bit(virtio::kFVersion1));
  EXPECT_EQ(efe->queue_num(), 3u);
  EXPECT_NE(efe->protocol_features() & vhost_user::bit(vhost_user::kPfConfig), 0u);
  auto cfg = efe->get_config(0, 8);
  ASSERT_TRUE(cfg.ok());
  EXPECT_EQ(*cfg, (Bytes{5, 0, 0, 0, 0, 0, 0, 0}));
  const uint8_t cid[8] = {4};
  EXPECT_FALSE(efe->set_config(0, cid, 0).ok()) << "the guest cannot choose its CID";
  EXPECT_EQ(*efe->get_config(0, 8), (Bytes{5, 0, 0, 0, 0, 0, 0, 0})) << "and the connection stays";

  // The boot heartbeat (ENCLAVES.md §5): connect to (3, 9000), one byte 0xB7 each way.
  pvm.post_rx(8);
  evm.post_rx(8);
  evm.send(pkt(5, 1024, 3, 9000, kOpRequest));
  ASSERT_EQ(pvm.wait_rx(1).size(), 1u);
  pvm.send(pkt(3, 9000, 5, 1024, kOpResponse));
  ASSERT_EQ(evm.wait_rx(1).size(), 1u);
  evm.send(pkt(5, 1024, 3, 9000, kOpRw, {0xb7}));
  auto got = pvm.wait_rx(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(payload_of(got[0]), Bytes{0xb7});
  pvm.send(pkt(3, 9000, 5, 1024, kOpRw, {0xb7}));
  got = evm.wait_rx(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(payload_of(got[0]), Bytes{0xb7});
  ASSERT_TRUE(pvm.wait_tx_used(2));

  // GET_VRING_BASE stops the parent's tx ring where it is; the frontend sets it up again.
  auto base = pfe->get_vring_base(kTxQueue);
  ASSERT_TRUE(base.ok()) << base.error().message();
  EXPECT_EQ(*base, 2u);

  // The enclave's hypervisor goes away: the parent's socket gets its RST.
  { vhost_user::Frontend gone = std::move(efe).value(); }
  got = pvm.wait_rx(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0], pkt(rst_header(5, 1024, 3, 9000)));
  const auto s = (*sw)->stats();
  EXPECT_FALSE(s.ports[1].up);
  EXPECT_EQ(s.ports[1].connections, 0u);
}

}  // namespace
}  // namespace azote::card_vsock
