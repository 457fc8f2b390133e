// The CPU tables of azote-guest, computed entirely at compile time and placed at
// fixed physical addresses by the linker script (layout.h), so the CPL0 boot path
// only has to point CR3 / GDTR / IDTR / TR at them. Every object here is constinit:
// if anything needed run-time initialisation the build would fail.
#include <cstddef>
#include <cstdint>

#include "descriptors.hpp"
#include "layout.h"

namespace {

struct alignas(4096) PageTable {
  uint64_t e[512];
};
struct alignas(4096) PageDirs {
  PageTable pd[AZ_PD_COUNT];
};
struct alignas(4096) SysPage {
  uint8_t b[4096];
};

constexpr uint64_t kPresent = 1, kWrite = 2, kUser = 4, kPwt = 8, kPcd = 0x10, kLarge = 0x80;

constexpr PageTable make_pml4() {
  PageTable t{};
  t.e[0] = AZ_PDPT | kPresent | kWrite | kUser;
  return t;
}

constexpr PageTable make_pdpt() {
  PageTable t{};
  for (uint64_t i = 0; i < AZ_PD_COUNT; ++i) t.e[i] = (AZ_PD + i * 4096) | kPresent | kWrite | kUser;
  return t;
}

// Identity map of 0-4 GiB in 2 MiB pages; the top GiB (MMIO hole: LAPIC, IOAPIC,
// the 0xd0000000 test hole) is uncached.
constexpr PageDirs make_pd() {
  PageDirs d{};
  for (uint64_t i = 0; i < AZ_PD_COUNT * 512; ++i) {
    const uint64_t addr = i << 21;
    uint64_t flags = kPresent | kWrite | kUser | kLarge;
    if (addr >= (3ull << 30)) flags |= kPcd | kPwt;
    d.pd[i / 512].e[i % 512] = addr | flags;
  }
  return d;
}

constexpr void put(SysPage& p, size_t off, uint64_t v, size_t size) {
  for (size_t i = 0; i < size && i < 8; ++i) p.b[off + i] = static_cast<uint8_t>(v >> (8 * i));
}

// Flat segment descriptor: base 0, limit 4 GiB, access byte and flags nibble.
constexpr uint64_t seg(uint64_t access, uint64_t flags) {
  return 0xffffull | (access << 40) | (0xfull << 48) | (flags << 52);
}

constexpr SysPage make_sys() {
  SysPage p{};
  // GDT
  const uint64_t gdt[AZ_GDT_ENTRIES - 3] = {
      0,
      seg(0x9a, 0xa),  // 0x08 kernel code, 64-bit (L=1)
      seg(0x92, 0xc),  // 0x10 kernel data
      seg(0xf2, 0xc),  // 0x18 user data, DPL3
      seg(0xfa, 0xa),  // 0x20 user code, 64-bit, DPL3
  };
  for (size_t i = 0; i < AZ_GDT_ENTRIES - 3; ++i) put(p, AZ_SYS_GDT + i * 8, gdt[i], 8);
  // 0x28: 64-bit available TSS, base AZ_TSS, covering the I/O bitmap.
  const uint64_t tss_base = AZ_TSS, tss_limit = AZ_TSS_LIMIT;
  put(p, AZ_SYS_GDT + AZ_SEL_TSS, az::tss_descriptor_lo(tss_base, tss_limit), 8);
  put(p, AZ_SYS_GDT + AZ_SEL_TSS + 8, tss_base >> 32, 8);
  put(p, AZ_SYS_GDT + 0x38, seg(0x9a, 0xc), 8);  // 0x38 kernel code, 32-bit (AP trampoline)
  static_assert(AZ_SEL_KCODE32 == 0x38 && AZ_GDT_ENTRIES * 8 == 0x40, "GDT layout");

  // Pseudo-descriptors.
  put(p, AZ_SYS_GDTR, AZ_GDT_ENTRIES * 8 - 1, 2);
  put(p, AZ_SYS_GDTR + 2, AZ_GDT, 8);
  put(p, AZ_SYS_IDTR, AZ_IDT_VECTORS * 16 - 1, 2);
  put(p, AZ_SYS_IDTR + 2, AZ_IDT, 8);
  put(p, AZ_SYS_NULL_IDTR, 0, 2);  // limit 0, base 0
  put(p, AZ_SYS_NULL_IDTR + 2, 0, 8);

  // TSS: rsp0 for every trap from CPL3, IST1 for NMI / #DF / #MC, and an I/O
  // bitmap of zeros (ports allowed) ending with the mandatory 0xff byte.
  put(p, AZ_SYS_TSS + AZ_TSS_RSP0, AZ_BSP_RSP0_TOP, 8);
  put(p, AZ_SYS_TSS + AZ_TSS_IST1, AZ_BSP_IST1_TOP, 8);
  put(p, AZ_SYS_TSS + AZ_TSS_IOMAP, AZ_TSS_SIZE, 2);
  put(p, AZ_SYS_TSS + AZ_TSS_LIMIT, 0xff, 1);
  static_assert(AZ_SYS_TSS + AZ_TSS_LIMIT < 4096, "TSS and I/O bitmap fit the system page");

  // IDT: 64-bit interrupt gates to the fixed-address stubs.
  for (unsigned v = 0; v < AZ_IDT_VECTORS; ++v) {
    const uint64_t off = AZ_STUBS + v * AZ_STUB_SIZE;
    const bool user_callable = v == 3 || v == 4;  // int3 (also the service call), into
    const uint64_t ist = (v == 2 || v == 8 || v == 18) ? 1 : 0;
    const uint64_t type = 0x8e | (user_callable ? 0x60 : 0);
    const uint64_t lo = (off & 0xffff) | (uint64_t{AZ_SEL_KCODE} << 16) | (ist << 32) | (type << 40) |
                        (((off >> 16) & 0xffff) << 48);
    put(p, AZ_SYS_IDT + v * 16, lo, 8);
    put(p, AZ_SYS_IDT + v * 16 + 8, off >> 32, 8);
  }
  static_assert(AZ_SYS_IDT + AZ_IDT_VECTORS * 16 <= AZ_SYS_TSS, "IDT before the TSS");
  return p;
}

}  // namespace

// Referenced by absolute address (layout.h) from boot.S; the linker script keeps
// them and asserts each one sits where layout.h says.
extern "C" {
[[gnu::used, gnu::section(".fixed.pml4")]] constinit PageTable azote_pml4 = make_pml4();
[[gnu::used, gnu::section(".fixed.pdpt")]] constinit PageTable azote_pdpt = make_pdpt();
[[gnu::used, gnu::section(".fixed.pd")]] constinit PageDirs azote_pd = make_pd();
[[gnu::used, gnu::section(".fixed.sys")]] constinit SysPage azote_sys = make_sys();
}
