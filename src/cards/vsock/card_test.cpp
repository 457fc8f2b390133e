// The card over real vhost-user sockets: a Backend per VM in front of its VsockDevice,
// lib/vhost_user's Frontend playing each azote-hv (negotiation, memory table, rings,
// GET_VRING_BASE, closing the connection), MockDriver rings playing each guest; and the
// whole Card (its loop in a thread) driven through its control socket (add-device,
// remove-device, describe, ping).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include "base/temp_dir.hpp"
#include "cards/vsock/card.hpp"
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

// ----- the control socket ---------------------------------------------------------------

mode_t mode_of(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0 ? st.st_mode & (S_IFMT | 07777) : 0;  // 0: no file
}

// The card as the controller starts it: the parent's device only, --control PATH; its
// loop (every backend and the control socket) in a thread of its own.
class Control : public ::testing::Test {
 protected:
  void SetUp() override { start({}); }
  void start(const std::vector<DeviceSpec>& enclaves) {
    CardOptions o;
    o.devices = {{3, sock("p")}};
    o.devices.insert(o.devices.end(), enclaves.begin(), enclaves.end());
    o.control = dir_.file("ctl");
    auto c = Card::create(o);
    ASSERT_TRUE(c.ok()) << c.error().message();
    card_ = std::move(c).value();
    thread_ = std::thread([this] { status_ = card_->run(); });
  }
  void TearDown() override { stop(); }
  void stop() {
    if (!card_) return;
    card_->request_stop();
    thread_.join();
    EXPECT_EQ(status_, 0);
    card_.reset();
  }
  std::string sock(const std::string& name) const { return dir_.file(name + ".sock"); }
  // The answer, or {"ok": false, "error": why} for a refusal (or a failed call).
  control::Json call(const control::Json& r) {
    auto a = control::call_once(dir_.file("ctl"), r, 5s);
    if (!a) return control::refuse(a.error().message());
    return *a;
  }
  std::string refusal(const control::Json& r) {
    const control::Json a = call(r);
    EXPECT_FALSE(a.value("ok", true)) << r.dump() << " -> " << a.dump();
    return a.value("error", std::string());
  }
  control::Json add(uint64_t cid, const std::string& socket) {
    return call({{"op", "add-device"}, {"cid", cid}, {"socket", socket}});
  }
  control::Json remove(uint64_t cid) { return call({{"op", "remove-device"}, {"cid", cid}}); }
  // describe's device of `cid` (null if none).
  control::Json device(uint32_t cid) {
    const control::Json d = call({{"op", "describe"}});
    for (const auto& e : d["devices"])
      if (e["cid"] == cid) return e;
    return nullptr;
  }
  static bool has(const std::string& s, const std::string& what) { return s.find(what) != std::string::npos; }

  TempDir dir_{"card-vsock-ctl"};
  std::unique_ptr<Card> card_;
  std::thread thread_;
  int status_ = -1;
};

const control::Json kOk = control::ok();

TEST_F(Control, PingAndDescribe) {
  EXPECT_EQ(call({{"op", "ping"}}), kOk);
  const control::Json d = call({{"op", "describe"}});
  ASSERT_TRUE(d.value("ok", false)) << d.dump();
  ASSERT_EQ(d["devices"].size(), 1u);
  EXPECT_EQ(d["devices"][0]["cid"], 3);
  EXPECT_EQ(d["devices"][0]["role"], "parent");
  EXPECT_EQ(d["devices"][0]["socket"], sock("p"));
  EXPECT_EQ(d["devices"][0]["socket_mode"], "0600");
  EXPECT_EQ(d["devices"][0]["connected"], false);
  EXPECT_EQ(d["enclaves"], 0);
  EXPECT_EQ(d["max_enclaves"], 4);
  EXPECT_EQ(d["drops"]["unroutable"], 0);
  EXPECT_EQ(d["resets_sent"], 0);
  EXPECT_TRUE(has(refusal({{"op", "reboot"}}), "unknown op \"reboot\" (known: add-device, remove-device, add-host-port, remove-host-port, describe, ping)"));
}

TEST_F(Control, AddDeviceListensWithMode0666) {
  EXPECT_EQ(add(5, sock("e5")), kOk);
  // Answered once it listens: the socket is there, for another uid to connect to.
  EXPECT_EQ(mode_of(sock("e5")), static_cast<mode_t>(S_IFSOCK | 0666));
  EXPECT_EQ(mode_of(sock("p")), static_cast<mode_t>(S_IFSOCK | 0600)) << "the parent's stays the card's uid's";
  const control::Json e = device(5);
  ASSERT_TRUE(e.is_object());
  EXPECT_EQ(e["role"], "enclave");
  EXPECT_EQ(e["socket"], sock("e5"));
  EXPECT_EQ(e["socket_mode"], "0666");
  EXPECT_EQ(e["connected"], false);
  EXPECT_EQ(e["running"], false);
  EXPECT_EQ(call({{"op", "describe"}})["enclaves"], 1);
  // Its azote-hv connects and sees its CID.
  Vm vm(5);
  auto fe = wire(sock("e5"), vm);
  ASSERT_TRUE(fe.ok()) << fe.error().message();
  EXPECT_EQ(*fe->get_config(0, 8), (Bytes{5, 0, 0, 0, 0, 0, 0, 0}));
  const control::Json c = device(5);
  EXPECT_EQ(c["connected"], true);
  EXPECT_EQ(c["running"], true);
  EXPECT_EQ(c["rx_running"], true);
  EXPECT_EQ(c["tx_running"], true);
  EXPECT_EQ(c["frontend_connections"], 1);
}

TEST_F(Control, RefusalsNameTheField) {
  const auto bad_cid = [&](const control::Json& cid) {
    return refusal({{"op", "add-device"}, {"cid", cid}, {"socket", sock("e")}});
  };
  EXPECT_TRUE(has(bad_cid(3), "add-device: \"cid\" 3 is the parent's")) << bad_cid(3);
  EXPECT_TRUE(has(bad_cid(2), "\"cid\" 2 is reserved")) << bad_cid(2);
  EXPECT_TRUE(has(bad_cid(0), "\"cid\" 0 is reserved"));
  EXPECT_TRUE(has(bad_cid(4294967295u), "\"cid\" 4294967295 (VMADDR_CID_ANY) is reserved")) << bad_cid(4294967295u);
  EXPECT_TRUE(has(bad_cid(4294967296ull), "\"cid\" 4294967296 does not fit in 32 bits"));
  EXPECT_TRUE(has(bad_cid(-5), "\"cid\" -5 is not a CID"));
  EXPECT_TRUE(has(bad_cid(5.5), "\"cid\" 5.5 is not a CID"));
  EXPECT_TRUE(has(bad_cid("5"), "add-device needs \"cid\""));
  EXPECT_TRUE(has(refusal({{"op", "add-device"}, {"socket", sock("e")}}), "add-device needs \"cid\""));
  const auto bad_socket = [&](const control::Json& socket) {
    return refusal({{"op", "add-device"}, {"cid", 5}, {"socket", socket}});
  };
  EXPECT_TRUE(has(bad_socket("e.sock"), "\"socket\" \"e.sock\" is not an absolute path")) << bad_socket("e.sock");
  EXPECT_TRUE(has(bad_socket(""), "\"socket\" \"\" is not a socket path of 1-107 bytes"));
  EXPECT_TRUE(has(bad_socket("/" + std::string(107, 'a')), "is not a socket path of 1-107 bytes"));
  EXPECT_TRUE(has(bad_socket(std::string("/a\0b", 4)), "contains a NUL byte"));
  EXPECT_TRUE(has(bad_socket(7), "add-device needs \"socket\""));
  EXPECT_TRUE(has(refusal({{"op", "add-device"}, {"cid", 5}}), "add-device needs \"socket\""));
  EXPECT_TRUE(has(bad_socket(sock("p")), "\"socket\" " + sock("p") + " is already the socket of cid 3"));
  EXPECT_TRUE(has(bad_socket(dir_.file("ctl")), "is the card's control socket"));
  EXPECT_TRUE(has(bad_socket(dir_.file("no/such/dir.sock")), "\"socket\" " + dir_.file("no/such/dir.sock") + ": "))
      << bad_socket(dir_.file("no/such/dir.sock"));
  EXPECT_TRUE(has(refusal({{"op", "add-device"}, {"cid", 5}, {"socket", sock("e")}, {"mode", "0600"}}),
                  "add-device: unknown field \"mode\" (known: cid, socket)"));
  // A refused add leaves nothing behind: the CID and the slot are free.
  EXPECT_EQ(call({{"op", "describe"}})["enclaves"], 0);
  EXPECT_EQ(add(5, sock("e")), kOk);
  EXPECT_TRUE(has(bad_cid(5), "\"cid\" 5 is already a device of this card (socket " + sock("e") + ")"));
  EXPECT_TRUE(has(refusal({{"op", "add-device"}, {"cid", 6}, {"socket", sock("e")}}),
                  "\"socket\" " + sock("e") + " is already the socket of cid 5"));

  EXPECT_TRUE(has(refusal({{"op", "remove-device"}, {"cid", 9}}),
                  "remove-device: \"cid\" 9 is not a device of this card (devices: cids 3, 5)"));
  EXPECT_TRUE(has(refusal({{"op", "remove-device"}, {"cid", 3}}), "remove-device: \"cid\" 3 is the parent's device"));
  EXPECT_TRUE(has(refusal({{"op", "remove-device"}}), "remove-device needs \"cid\""));
  EXPECT_TRUE(has(refusal({{"op", "remove-device"}, {"cid", -1}}), "\"cid\" -1 is not a CID"));
  EXPECT_TRUE(has(refusal({{"op", "remove-device"}, {"cid", 5}, {"socket", sock("e")}}),
                  "remove-device: unknown field \"socket\" (known: cid)"));
  EXPECT_EQ(mode_of(sock("p")), static_cast<mode_t>(S_IFSOCK | 0600));
  EXPECT_TRUE(device(5).is_object()) << "refusals changed nothing";
}

TEST_F(Control, AtMostFourEnclaves) {
  for (uint32_t cid : {4u, 5u, 6u, 4294967294u}) EXPECT_EQ(add(cid, sock("e" + std::to_string(cid))), kOk) << cid;
  const std::string r = refusal({{"op", "add-device"}, {"cid", 8}, {"socket", sock("e8")}});
  EXPECT_TRUE(has(r, "add-device: \"cid\" 8: the card already serves 4 enclaves (cids 4, 5, 6, 4294967294), the most a parent has")) << r;
  EXPECT_EQ(mode_of(sock("e8")), 0u) << "no socket made";
  // The switch refuses a fifth too, whoever asks.
  EXPECT_FALSE(card_->fabric().attach(8).ok());
  EXPECT_EQ(remove(5), kOk);
  EXPECT_EQ(mode_of(sock("e5")), 0u) << "its socket removed";
  EXPECT_EQ(add(8, sock("e8")), kOk) << "a slot is free again";
  const control::Json d = call({{"op", "describe"}});
  std::vector<uint32_t> cids;
  for (const auto& e : d["devices"]) cids.push_back(e["cid"].get<uint32_t>());
  EXPECT_EQ(cids, (std::vector<uint32_t>{3, 4, 6, 8, 4294967294u}));
}

// remove-device with the enclave's hv connected and connections open: its queues stop,
// each connection gets an RST at the parent, the socket goes, the CID is unknown after.
TEST_F(Control, RemoveResetsTheParentsConnections) {
  Vm pvm(3), evm(9);
  auto pfe = wire(sock("p"), pvm);
  ASSERT_TRUE(pfe.ok()) << pfe.error().message();
  ASSERT_EQ(add(9, sock("e9")), kOk);
  auto efe = wire(sock("e9"), evm);
  ASSERT_TRUE(efe.ok()) << efe.error().message();
  pvm.post_rx(16);
  evm.post_rx(16);
  // One established connection, one half-open, one the enclave reset (not reset again).
  evm.send(pkt(9, 1024, 3, 9000, kOpRequest));
  ASSERT_EQ(pvm.wait_rx(1).size(), 1u);
  pvm.send(pkt(3, 9000, 9, 1024, kOpResponse));
  ASSERT_EQ(evm.wait_rx(1).size(), 1u);
  evm.send(pkt(9, 1025, 3, 9001, kOpRequest));
  evm.send(pkt(9, 1026, 3, 9002, kOpRequest));
  ASSERT_EQ(pvm.wait_rx(2).size(), 2u);
  evm.send(pkt(9, 1026, 3, 9002, kOpRst));
  ASSERT_EQ(pvm.wait_rx(1).size(), 1u);
  evm.send(pkt(9, 1024, 3, 9000, kOpRw, {1, 2, 3}));
  ASSERT_EQ(pvm.wait_rx(1).size(), 1u);
  const control::Json before = device(9);
  EXPECT_EQ(before["connections"], 2);
  EXPECT_EQ(device(3)["connections"], 2);
  EXPECT_EQ(before["tx_packets"], 5);
  const size_t port = [&] {
    const auto s = card_->fabric().stats();
    for (size_t i = 0; i < s.ports.size(); ++i)
      if (s.ports[i].attached && s.ports[i].cid == 9) return i;
    return s.ports.size();
  }();
  ASSERT_LT(port, card_->fabric().ports());

  ASSERT_EQ(remove(9), kOk);
  // The RSTs are queued before the answer; the switch delivers them at once.
  const auto got = pvm.wait_rx(2);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0], pkt(rst_header(9, 1024, 3, 9000)));
  EXPECT_EQ(got[1], pkt(rst_header(9, 1025, 3, 9001)));
  EXPECT_EQ(pvm.rx_after().size(), 0u);
  EXPECT_EQ(mode_of(sock("e9")), 0u) << "the socket file is removed";
  const auto s = card_->fabric().stats();
  EXPECT_FALSE(s.ports[port].attached);
  EXPECT_FALSE(s.ports[port].up);
  EXPECT_FALSE(s.ports[port].rx_running);
  EXPECT_FALSE(s.ports[port].tx_running);
  EXPECT_TRUE(device(9).is_null());
  EXPECT_EQ(device(3)["resets_received"], 2);
  // Its hypervisor's connection was closed: a request fails.
  EXPECT_FALSE(efe->get_config(0, 8).ok());
  // CID 9 is nobody now: the parent is refused at once.
  pvm.send(pkt(3, 2000, 9, 80, kOpRequest));
  const auto r = pvm.wait_rx(1);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0], pkt(rst_header(9, 80, 3, 2000)));
}

TEST_F(Control, ReAddAfterRemove) {
  Vm pvm(3);
  auto pfe = wire(sock("p"), pvm);
  ASSERT_TRUE(pfe.ok()) << pfe.error().message();
  pvm.post_rx(16);
  for (int round = 0; round < 3; ++round) {
    // The same CID and socket again (an enclave restarted), then another CID in the slot.
    const uint32_t cid = round < 2 ? 9 : 10;
    ASSERT_EQ(add(cid, sock("e")), kOk) << round;
    Vm evm(cid);
    auto efe = wire(sock("e"), evm);
    ASSERT_TRUE(efe.ok()) << round << ": " << efe.error().message();
    evm.post_rx(4);
    evm.send(pkt(cid, 1024, 3, 9000, kOpRequest));
    auto got = pvm.wait_rx(1);
    ASSERT_EQ(got.size(), 1u) << round;
    EXPECT_EQ(got[0], pkt(cid, 1024, 3, 9000, kOpRequest));
    pvm.send(pkt(3, 9000, cid, 1024, kOpResponse));
    got = evm.wait_rx(1);
    ASSERT_EQ(got.size(), 1u) << round;
    EXPECT_EQ(got[0], pkt(3, 9000, cid, 1024, kOpResponse));
    EXPECT_EQ(device(cid)["tx_packets"], 1) << "a new device's counters start at 0";
    ASSERT_EQ(remove(cid), kOk);
    got = pvm.wait_rx(1);
    ASSERT_EQ(got.size(), 1u);
    EXPECT_EQ(got[0], pkt(rst_header(cid, 1024, 3, 9000)));
  }
}

// An enclave given with --device at start is served as before (0600) and may be removed.
TEST_F(Control, DevicesFromTheCommandLine) {
  stop();
  start({{6, sock("e6")}});
  ASSERT_TRUE(card_);
  EXPECT_EQ(mode_of(sock("e6")), static_cast<mode_t>(S_IFSOCK | 0600));
  EXPECT_EQ(device(6)["socket_mode"], "0600");
  EXPECT_TRUE(has(refusal({{"op", "add-device"}, {"cid", 6}, {"socket", sock("x")}}), "\"cid\" 6 is already"));
  EXPECT_EQ(remove(6), kOk);
  EXPECT_EQ(mode_of(sock("e6")), 0u);
  EXPECT_EQ(add(6, sock("e6")), kOk);
  EXPECT_EQ(mode_of(sock("e6")), static_cast<mode_t>(S_IFSOCK | 0666));
}

// The card's sockets are removed when it stops, added ones included.
TEST_F(Control, StopRemovesEverySocket) {
  ASSERT_EQ(add(5, sock("e5")), kOk);
  stop();
  EXPECT_EQ(mode_of(sock("p")), 0u);
  EXPECT_EQ(mode_of(sock("e5")), 0u);
  EXPECT_EQ(mode_of(dir_.file("ctl")), 0u);
}

// The host bridge's map through the control socket: add-host-port, remove-host-port,
// describe lists it; every refusal names its field and changes nothing.
TEST_F(Control, HostPortsAddedAndRemoved) {
  const auto ports = [&] { return call({{"op", "describe"}})["host_ports"]; };
  EXPECT_EQ(ports(), control::Json::array());
  EXPECT_EQ(call({{"op", "add-host-port"}, {"port", 8000}, {"socket", "/run/h.sock"}}), kOk);
  EXPECT_EQ(call({{"op", "add-host-port"}, {"port", 4294967295u}, {"socket", "/run/m.sock"}}), kOk);
  EXPECT_EQ(ports(), (control::Json{{{"port", 8000}, {"socket", "/run/h.sock"}},
                                    {{"port", 4294967295u}, {"socket", "/run/m.sock"}}}));
  const control::Json d = call({{"op", "describe"}});
  EXPECT_EQ(d["host_streams"]["opened"], 0) << d.dump();
  EXPECT_EQ(d["host_streams"]["open"], 0) << d.dump();
  const auto add_hp = [&](const control::Json& port, const control::Json& socket) {
    return refusal({{"op", "add-host-port"}, {"port", port}, {"socket", socket}});
  };
  EXPECT_TRUE(has(add_hp(8000, "/run/x.sock"), "host port 8000 is already mapped (to /run/h.sock)"));
  EXPECT_TRUE(has(add_hp(0, "/run/x.sock"), "\"port\" 0 is not a port"));
  EXPECT_TRUE(has(add_hp(4294967296ull, "/run/x.sock"), "\"port\" 4294967296 is not a port"));
  EXPECT_TRUE(has(add_hp(-1, "/run/x.sock"), "\"port\" -1 is not a port"));
  EXPECT_TRUE(has(add_hp("80", "/run/x.sock"), "needs \"port\""));
  EXPECT_TRUE(has(add_hp(81, "rel.sock"), "\"socket\" \"rel.sock\" is not an absolute socket path"));
  EXPECT_TRUE(has(add_hp(81, "/" + std::string(107, 'a')), "is not an absolute socket path of 1-107 bytes"));
  EXPECT_TRUE(has(add_hp(81, 5), "needs \"socket\""));
  EXPECT_TRUE(has(refusal({{"op", "add-host-port"}, {"port", 81}, {"socket", "/s"}, {"mode", 1}}),
                  "add-host-port: unknown field \"mode\" (known: port, socket)"));
  for (uint32_t p = 1; p <= 6; ++p)
    EXPECT_EQ(call({{"op", "add-host-port"}, {"port", p}, {"socket", "/run/" + std::to_string(p)}}), kOk);
  EXPECT_TRUE(has(add_hp(7, "/run/7"), "the card already maps 8 host ports"));
  EXPECT_EQ(ports().size(), 8u);
  EXPECT_EQ(call({{"op", "remove-host-port"}, {"port", 8000}}), kOk);
  EXPECT_TRUE(has(refusal({{"op", "remove-host-port"}, {"port", 8000}}), "\"port\" 8000 is not a host port"));
  EXPECT_TRUE(has(refusal({{"op", "remove-host-port"}}), "remove-host-port needs \"port\""));
  EXPECT_EQ(call({{"op", "add-host-port"}, {"port", 7}, {"socket", "/run/7"}}), kOk) << "room again";
  EXPECT_EQ(ports().size(), 8u);
}

}  // namespace
}  // namespace azote::card_vsock
