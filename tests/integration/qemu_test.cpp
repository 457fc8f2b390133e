// Interop: QEMU (a VMM nobody here wrote) boots the built-in guest through PVH.
#include <gtest/gtest.h>

#include <signal.h>

#include <cstdio>
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
  auto o = run({*qemu, "-M", "microvm", "-accel", "kvm", "-cpu", "host", "-m", "128M", "-smp", "1", "-nodefaults",
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
  auto o = run({*qemu, "-M", "microvm,acpi=off", "-accel", "kvm", "-cpu", "host", "-m", "128M", "-smp", "1",
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
  auto o = run({*qemu, "-M", "microvm,acpi=off,memory-backend=mem", "-accel", "kvm", "-cpu", "host", "-m", "128M",
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

}  // namespace
}  // namespace azote::test
