// Interop: QEMU (a VMM nobody here wrote) boots the built-in guest through PVH.
#include <gtest/gtest.h>

#include <cstdio>

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

}  // namespace
}  // namespace azote::test
