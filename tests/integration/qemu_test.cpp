// Interop: QEMU (a VMM nobody here wrote) boots the built-in guest through PVH.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <regex>
#include <thread>

#include "process.hpp"

namespace azote::test {
namespace {

using namespace std::chrono_literals;

TEST(Qemu, MicrovmBootsBuiltinGuest) {
  auto qemu = find_in_path("qemu-system-x86_64");
  if (!qemu) GTEST_SKIP() << "SKIPPED: qemu-system-x86_64 not installed (make deps installs qemu-system-x86)";
  std::string why;
  if (!kvm_usable(&why)) GTEST_SKIP() << "SKIPPED: needs KVM (" << why << ")";
  auto o = run({*qemu, "-M", "microvm", "-accel", "kvm", "-cpu", kQemuCpu, "-m", "128M", "-smp", "1", "-nodefaults",
                "-no-user-config", "-nographic", "-serial", "stdio", "-device", "isa-debug-exit,iobase=0xf4,iosize=0x01",
                "-kernel", AZOTE_GUEST_ELF, "-append", "azote.run=hello"},
               120s);
  ASSERT_FALSE(o.timed_out) << o.out << o.err;
  // isa-debug-exit turns the guest's 0 into QEMU exit status (0 << 1) | 1.
  EXPECT_EQ(o.status, 1) << o.err;
  EXPECT_NE(o.out.find("azote-guest: hello vcpus=1 memory=128MiB"), std::string::npos) << o.out << o.err;
}

// The guest's user-mode virtio-blk driver against QEMU's own virtio-blk-device (a
// virtio-mmio v2 device announced with virtio_mmio.device= on the command line).
TEST(Qemu, MicrovmVirtioBlkCheck) {
  auto qemu = find_in_path("qemu-system-x86_64");
  if (!qemu) GTEST_SKIP() << "SKIPPED: qemu-system-x86_64 not installed (make deps installs qemu-system-x86)";
  std::string why;
  if (!kvm_usable(&why)) GTEST_SKIP() << "SKIPPED: needs KVM (" << why << ")";
  const std::string img = ::testing::TempDir() + "/azote-qemu-blk.img";
  ASSERT_EQ(run({"truncate", "-s", "16M", img}).status, 0);
  auto o = run({*qemu, "-M", "microvm,acpi=off", "-accel", "kvm", "-cpu", kQemuCpu, "-m", "128M", "-smp", "1",
                "-nodefaults", "-no-user-config", "-nographic", "-serial", "stdio", "-no-reboot", "-device",
                "isa-debug-exit,iobase=0xf4,iosize=0x01", "-global", "virtio-mmio.force-legacy=false", "-drive",
                "id=d0,file=" + img + ",format=raw,if=none,cache=none", "-device", "virtio-blk-device,drive=d0",
                "-kernel", AZOTE_GUEST_ELF, "-append", "azote.run=blk-check"},
               120s);
  ASSERT_FALSE(o.timed_out) << o.out << o.err;
  EXPECT_EQ(o.status, 1) << o.out << o.err;  // guest exit 0
  EXPECT_NE(o.out.find("azote-guest: blk-check ok sectors=32768"), std::string::npos) << o.out << o.err;
  std::remove(img.c_str());
}

// Our card serving a frontend nobody here wrote: QEMU's vhost-user-blk device
// (virtio-mmio on microvm) connects to azote-card-blk, negotiates before the guest
// runs, and the built-in guest's blk-check goes through QEMU's frontend to the card.
TEST(Qemu, VhostUserBlkFrontendAgainstAzoteCard) {
  auto qemu = find_in_path("qemu-system-x86_64");
  if (!qemu) GTEST_SKIP() << "SKIPPED: qemu-system-x86_64 not installed (make deps installs qemu-system-x86)";
  std::string why;
  if (!kvm_usable(&why)) GTEST_SKIP() << "SKIPPED: needs KVM (" << why << ")";
  const std::string dir = ::testing::TempDir();
  const std::string img = dir + "/azote-qemu-card.img", sock = dir + "/azote-qemu-card.sock";
  std::remove(sock.c_str());
  ASSERT_EQ(run({"truncate", "-s", "16M", img}).status, 0);
  Process card({AZOTE_CARD_BLK_BIN, "--volume", "socket=" + sock + ",file=" + img});
  for (int i = 0; i < 100 && !file_exists(sock); ++i) std::this_thread::sleep_for(20ms);
  ASSERT_TRUE(file_exists(sock)) << "azote-card-blk did not create " << sock;
  auto o = run({*qemu, "-M", "microvm,acpi=off,memory-backend=mem", "-accel", "kvm", "-cpu", kQemuCpu, "-m", "128M",
                "-object", "memory-backend-memfd,id=mem,size=128M,share=on", "-smp", "1", "-nodefaults",
                "-no-user-config", "-nographic", "-serial", "stdio", "-no-reboot", "-device",
                "isa-debug-exit,iobase=0xf4,iosize=0x01", "-global", "virtio-mmio.force-legacy=false", "-chardev",
                "socket,id=c0,path=" + sock, "-device", "vhost-user-blk,chardev=c0", "-kernel", AZOTE_GUEST_ELF,
                "-append", "azote.run=blk-check"},
               120s);
  ASSERT_FALSE(o.timed_out) << o.out << o.err;
  EXPECT_EQ(o.status, 1) << o.out << o.err;  // guest exit 0
  EXPECT_NE(o.out.find("azote-guest: blk-check ok sectors=32768"), std::string::npos) << o.out << o.err;
  card.signal(SIGTERM);
  auto c = card.wait(10s);
  EXPECT_FALSE(c.timed_out);
  std::remove(img.c_str());
}

// ---------------------------------------------------------------- virtio-net
// The guest's user-mode virtio-net driver and IPv4 stack against QEMU's own
// virtio-net-device and its user-mode network (slirp: a DHCP server, a gateway that
// answers ICMP echo, host port forwarding). Needs no azote card.

// Whether this QEMU has user-mode networking (Debian builds it with libslirp).
bool qemu_has_user_net(const std::string& qemu) {
  auto o = run({qemu, "-netdev", "help"}, 30s);
  for (const auto& l : lines(o.out))
    if (l == "user") return true;
  return false;
}

// A microvm with one virtio-net device on a user-mode network (netdev options
// `netdev_extra`, appended after "user,id=n0") running `append`.
std::vector<std::string> net_vm(const std::string& qemu, const std::string& netdev_extra, const std::string& append) {
  return {qemu, "-M", "microvm,acpi=off", "-accel", "kvm", "-cpu", kQemuCpu, "-m", "128M", "-smp", "1", "-nodefaults",
          "-no-user-config", "-nographic", "-serial", "stdio", "-no-reboot", "-device",
          "isa-debug-exit,iobase=0xf4,iosize=0x01", "-global", "virtio-mmio.force-legacy=false", "-netdev",
          "user,id=n0" + netdev_extra, "-device", "virtio-net-device,netdev=n0", "-kernel", AZOTE_GUEST_ELF,
          "-append", append};
}

// A UDP socket bound to 127.0.0.1 on an ephemeral port (fd, port); -1 on failure.
std::pair<int, uint16_t> udp_socket_on_loopback() {
  const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return {-1, 0};
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    close(fd);
    return {-1, 0};
  }
  return {fd, ntohs(a.sin_port)};
}

// A free UDP port on 127.0.0.1 (bound, then released for QEMU to take).
uint16_t free_udp_port() {
  auto [fd, port] = udp_socket_on_loopback();
  if (fd >= 0) close(fd);
  return port;
}

#define AZOTE_NET_PRECONDITIONS(qemu)                                                                          \
  auto qemu = find_in_path("qemu-system-x86_64");                                                             \
  if (!qemu) GTEST_SKIP() << "SKIPPED: qemu-system-x86_64 not installed (make deps installs qemu-system-x86)"; \
  {                                                                                                           \
    std::string why;                                                                                          \
    if (!kvm_usable(&why)) GTEST_SKIP() << "SKIPPED: needs KVM (" << why << ")";                              \
  }                                                                                                           \
  if (!qemu_has_user_net(*qemu)) GTEST_SKIP() << "SKIPPED: this QEMU has no user-mode networking (-netdev user)"

// DHCP: exactly the lease slirp hands out (10.0.2.15/24, router 10.0.2.2, DNS
// 10.0.2.3, 24 h), with the hostname and domain the netdev is given.
TEST(Qemu, VirtioNetDhcpGetsSlirpLease) {
  AZOTE_NET_PRECONDITIONS(qemu);
  auto o = run(net_vm(*qemu, ",hostname=azote-net-test,domainname=example.internal", "azote.run=net-dhcp"), 120s);
  ASSERT_FALSE(o.timed_out) << o.out << o.err;
  EXPECT_EQ(o.status, 1) << o.out << o.err;  // guest exit 0
  EXPECT_NE(o.out.find("azote-guest: virtio-net at 0x"), std::string::npos) << o.out;
  EXPECT_NE(o.out.find(" mac=52:54:00:12:34:56 mtu=1500 link=up "), std::string::npos) << o.out;
  EXPECT_NE(o.out.find("azote-guest: net-dhcp dhcp server=10.0.2.2 domain=example.internal\n"), std::string::npos)
      << o.out;
  EXPECT_NE(o.out.find("azote-guest: net-dhcp ip=10.0.2.15/24 router=10.0.2.2 dns=10.0.2.3 mtu=1500 "
                       "hostname=azote-net-test lease=86400\n"),
            std::string::npos)
      << o.out << o.err;
}

// The program's failure paths: no virtio-net device is exit 2, a bad address 126.
TEST(Qemu, VirtioNetProgramsWithoutDevice) {
  AZOTE_NET_PRECONDITIONS(qemu);
  const std::vector<std::string> base = {*qemu, "-M", "microvm,acpi=off", "-accel", "kvm", "-cpu", kQemuCpu, "-m", "128M",
                                         "-smp", "1", "-nodefaults", "-no-user-config", "-nographic", "-serial", "stdio",
                                         "-no-reboot", "-device", "isa-debug-exit,iobase=0xf4,iosize=0x01", "-kernel",
                                         AZOTE_GUEST_ELF, "-append"};
  auto argv = base;
  argv.push_back("azote.run=net-dhcp");
  auto o = run(argv, 120s);
  ASSERT_FALSE(o.timed_out) << o.out << o.err;
  EXPECT_EQ(o.status, (2 << 1) | 1) << o.out << o.err;
  EXPECT_NE(o.out.find("azote-guest: net-dhcp: no virtio-net device"), std::string::npos) << o.out;
  argv = base;
  argv.push_back("azote.run=net-ping 10.0.2.256");
  o = run(argv, 120s);
  ASSERT_FALSE(o.timed_out) << o.out << o.err;
  EXPECT_EQ(o.status, (126 << 1) | 1) << o.out << o.err;
  EXPECT_NE(o.out.find("azote-guest: net-ping: bad address (want a.b.c.d): '10.0.2.256'"), std::string::npos) << o.out;
}

// ICMP echo both ways through the stack: slirp's gateway answers the guest's pings.
TEST(Qemu, VirtioNetPingsSlirpGateway) {
  AZOTE_NET_PRECONDITIONS(qemu);
  auto o = run(net_vm(*qemu, "", "azote.run=net-ping 10.0.2.2 3"), 120s);
  ASSERT_FALSE(o.timed_out) << o.out << o.err;
  EXPECT_EQ(o.status, 1) << o.out << o.err;  // guest exit 0
  for (int seq = 1; seq <= 3; ++seq)
    EXPECT_TRUE(std::regex_search(o.out, std::regex("azote-guest: net-ping reply from 10\\.0\\.2\\.2 seq=" +
                                                    std::to_string(seq) + " bytes=64 rtt_us=[0-9]+\n")))
        << o.out;
  EXPECT_TRUE(std::regex_search(
      o.out, std::regex("azote-guest: net-ping 10\\.0\\.2\\.2 sent=3 received=3 rtt_us_min/avg/max=[0-9]+/[0-9]+/[0-9]+\n")))
      << o.out;
}

// UDP both ways: the test's client on the host sends datagrams through slirp's
// host forwarding to the guest's net-echo (port 7) and gets the same bytes back,
// from the forwarded port; sizes up to the largest payload of a 1500-byte packet.
TEST(Qemu, VirtioNetEchoReachedThroughHostForward) {
  AZOTE_NET_PRECONDITIONS(qemu);
  const uint16_t port = free_udp_port();
  ASSERT_NE(port, 0);
  Process vm(net_vm(*qemu, ",hostfwd=udp:127.0.0.1:" + std::to_string(port) + "-:7", "azote.run=net-echo"));
  ASSERT_TRUE(vm.wait_for_output("azote-guest: net-echo ready ip=10.0.2.15 port=7\n", 60s))
      << vm.wait(1s).out;

  auto [fd, client_port] = udp_socket_on_loopback();
  ASSERT_GE(fd, 0);
  (void)client_port;
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  to.sin_port = htons(port);
  for (size_t size : {1ul, 100ul, 1000ul, 1472ul}) {
    std::string msg(size, '\0');
    for (size_t i = 0; i < size; ++i) msg[i] = static_cast<char>('a' + (i * 7 + size) % 26);
    bool echoed = false;
    // UDP may be lost (and slirp sets the forwarding up asynchronously): retry.
    for (int attempt = 0; attempt < 10 && !echoed; ++attempt) {
      ASSERT_EQ(sendto(fd, msg.data(), msg.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to),
                static_cast<ssize_t>(msg.size()));
      pollfd p{fd, POLLIN, 0};
      while (!echoed && ::poll(&p, 1, 500) == 1) {
        char buf[2048];
        sockaddr_in from{};
        socklen_t flen = sizeof from;
        const ssize_t n = recvfrom(fd, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &flen);
        ASSERT_GT(n, 0);
        EXPECT_EQ(ntohs(from.sin_port), port);
        echoed = std::string(buf, static_cast<size_t>(n)) == msg;
      }
    }
    EXPECT_TRUE(echoed) << "no echo of a " << size << "-byte datagram";
  }
  close(fd);
  vm.signal(SIGTERM);
  auto o = vm.wait(10s);
  EXPECT_FALSE(o.timed_out);
  EXPECT_EQ(o.out.find("io-error"), std::string::npos) << o.out;
}

// net-bench against a UDP echo server on the host (the guest reaches the host's
// 127.0.0.1 as slirp's 10.0.2.2): one parseable line, and the echoes came back.
TEST(Qemu, VirtioNetBenchAgainstHostEcho) {
  AZOTE_NET_PRECONDITIONS(qemu);
  auto [fd, port] = udp_socket_on_loopback();
  ASSERT_GE(fd, 0);
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> echoed{0};
  std::thread echo([fd = fd, &stop, &echoed] {
    char buf[2048];
    while (!stop.load()) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 100) != 1) continue;
      sockaddr_in from{};
      socklen_t flen = sizeof from;
      const ssize_t n = recvfrom(fd, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &flen);
      if (n < 0) continue;
      if (sendto(fd, buf, static_cast<size_t>(n), 0, reinterpret_cast<sockaddr*>(&from), flen) == n) ++echoed;
    }
  });
  auto o = run(net_vm(*qemu, "", "azote.run=net-bench 10.0.2.2 " + std::to_string(port) + " 1"), 120s);
  stop = true;
  echo.join();
  close(fd);
  ASSERT_FALSE(o.timed_out) << o.out << o.err;
  EXPECT_EQ(o.status, 1) << o.out << o.err;  // guest exit 0
  std::smatch m;
  ASSERT_TRUE(std::regex_search(o.out, m,
                                std::regex("azote-guest: net-bench addr=10\\.0\\.2\\.2 port=" + std::to_string(port) +
                                           " size=1472 seconds=[0-9.]+ sent=([0-9]+) received=([0-9]+) "
                                           "tx_pps=[0-9]+ rx_pps=[0-9]+ tx_mbps=[0-9.]+ rx_mbps=[0-9.]+\n")))
      << o.out;
  const uint64_t sent = std::stoull(m[1]), received = std::stoull(m[2]);
  EXPECT_GT(received, 0u) << o.out;
  EXPECT_LE(received, sent);
  EXPECT_GE(echoed.load(), received);
}

}  // namespace
}  // namespace azote::test
