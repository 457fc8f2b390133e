#include <gtest/gtest.h>

#include <cstring>

#include "x86/boot_cpu.hpp"
#include "x86/cpuid.hpp"
#include "x86/layout.hpp"

namespace azote::x86 {
namespace {

kvm::CpuidEntries sample() {
  kvm::CpuidEntries c;
  auto add = [&](uint32_t f, uint32_t i, uint32_t eax, uint32_t ebx, uint32_t ecx, uint32_t edx, bool sig = false) {
    kvm_cpuid_entry2 e{};
    e.function = f;
    e.index = i;
    e.flags = sig ? KVM_CPUID_FLAG_SIGNIFCANT_INDEX : 0;
    e.eax = eax; e.ebx = ebx; e.ecx = ecx; e.edx = edx;
    c.entries.push_back(e);
  };
  add(0x1, 0, 0x806f8, 0xff0000ff, 0x7ffafbff | (1u << 3) | (1u << 15), 0xbfebfbff);
  add(0x6, 0, 0x77, 1, 1, 1);
  add(0x7, 0, 0, 0xffffffff, 0xffffffff, 0xffffffff, true);
  add(0xa, 0, 0x07300805, 0, 0, 0x603);
  add(0xb, 0, 1, 2, 0x100, 7, true);
  add(0xb, 1, 4, 16, 0x201, 7, true);
  add(0x40000000, 0, 0x40000001, 0, 0, 0);
  return c;
}

TEST(Cpuid, SanitizesForVcpuAndTopology) {
  auto c = sample();
  sanitize_cpuid(c, 2, 3);
  const auto* l1 = c.find(1);
  EXPECT_EQ(l1->ebx >> 24, 2u);                // APIC ID
  EXPECT_EQ((l1->ebx >> 16) & 0xff, 3u);       // logical processors
  EXPECT_NE(l1->ecx & (1u << 31), 0u);         // hypervisor bit
  EXPECT_EQ(l1->ecx & (1u << 3), 0u);          // no MONITOR/MWAIT
  EXPECT_EQ(l1->ecx & (1u << 15), 0u);         // no PDCM
  EXPECT_EQ(c.find(7, 0)->edx & (1u << 29), 0u);  // no ARCH_CAPABILITIES
  EXPECT_EQ(c.find(0xa)->eax, 0u);             // no PMU
  EXPECT_EQ(c.find(6)->eax, 4u);               // ARAT only
  EXPECT_EQ(c.find(0xb, 0)->ebx, 1u);
  EXPECT_EQ(c.find(0xb, 1)->ebx, 3u);
  EXPECT_EQ(c.find(0xb, 1)->eax, 2u);          // 2 bits of core ID for 3 cores
  EXPECT_EQ(c.find(0xb, 1)->edx, 2u);          // x2APIC ID
  const auto* h = c.find(0x40000000);
  char sig[13] = {};
  std::memcpy(sig, &h->ebx, 4);
  std::memcpy(sig + 4, &h->ecx, 4);
  std::memcpy(sig + 8, &h->edx, 4);
  EXPECT_STREQ(sig, "KVMKVMKVM");
}

TEST(Cpuid, SingleVcpuHasNoHtt) {
  auto c = sample();
  sanitize_cpuid(c, 0, 1);
  EXPECT_EQ(c.find(1)->edx & (1u << 28), 0u);
  EXPECT_EQ(c.find(0xb, 1)->eax, 0u);
}

TEST(Layout, RegionsAndE820) {
  auto small = ram_regions(128ull << 20);
  ASSERT_EQ(small.size(), 1u);
  EXPECT_EQ(small[0].size, 128ull << 20);
  auto big = ram_regions(5ull << 30);
  ASSERT_EQ(big.size(), 2u);
  EXPECT_EQ(big[0].size, kMmioHoleStart);
  EXPECT_EQ(big[1].start.raw, kMmioHoleEnd);
  EXPECT_EQ(big[1].size, 2ull << 30);
  for (uint64_t mem : {128ull << 20, 3ull << 30, 5ull << 30}) {
    uint64_t ram = 0;
    for (const auto& e : e820_map(mem)) {
      if (e.type == E820Type::kRam) ram += e.size;
      EXPECT_FALSE(e.addr < kMmioHoleEnd && e.addr + e.size > kMmioHoleStart) << "RAM in the MMIO hole";
    }
    EXPECT_LE(mem - ram, 1ull << 20);  // only the legacy hole below 1 MiB is missing
  }
}

TEST(BootCpu, GdtEntryEncoding) {
  EXPECT_EQ(gdt_entry(0xa09b, 0, 0xfffff), 0x00af9b000000ffffull);
  EXPECT_EQ(gdt_entry(0xc093, 0, 0xfffff), 0x00cf93000000ffffull);
}

TEST(BootCpu, LongModeState) {
  kvm_sregs s = boot_sregs(kvm_sregs{}, EntryMode::kLong64);
  EXPECT_EQ(s.cs.l, 1);
  EXPECT_EQ(s.cs.selector, kCode64Selector);
  EXPECT_NE(s.efer & (1u << 10), 0u);
  EXPECT_NE(s.cr0 & (1ull << 31), 0u);
  EXPECT_EQ(s.cr3, kPml4Addr);
  kvm_sregs p = boot_sregs(kvm_sregs{}, EntryMode::kProtected32);
  EXPECT_EQ(p.cs.db, 1);
  EXPECT_EQ(p.cs.l, 0);
  EXPECT_EQ(p.cr0 & (1ull << 31), 0u);
  EXPECT_EQ(p.efer, 0u);
  auto mem = GuestMemory::create(ram_regions(16 << 20));
  ASSERT_TRUE(mem.ok());
  ASSERT_TRUE(write_boot_tables(*mem).ok());
  // 3 GiB + 4 MiB maps to itself through PML4[0] -> PDPT[3] -> PD entry 2.
  auto pde = mem->read_obj<uint64_t>(GuestAddress(kPdAddr + 3 * 4096 + 2 * 8));
  EXPECT_EQ(*pde, (3ull << 30) + (4ull << 20) + 0x83);
}

}  // namespace
}  // namespace azote::x86
