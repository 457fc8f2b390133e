#include "x86/boot_cpu.hpp"

#include <algorithm>
#include <array>

#include "x86/layout.hpp"

namespace azote::x86 {
namespace {

constexpr uint64_t kCr0Pe = 1ull << 0, kCr0Mp = 1ull << 1, kCr0Et = 1ull << 4, kCr0Ne = 1ull << 5,
                   kCr0Wp = 1ull << 16, kCr0Am = 1ull << 18, kCr0Pg = 1ull << 31;
constexpr uint64_t kCr4Pae = 1ull << 5;
constexpr uint64_t kEferLme = 1ull << 8, kEferLma = 1ull << 10;

// Flat descriptors: index 2 code64, 3 data, 4 code32, 5 TSS (unused but valid).
constexpr std::array<uint64_t, 6> kGdt = {
    0,
    0,
    gdt_entry(0xa09b, 0, 0xfffff),  // 0x10: 64-bit code, present, DPL0
    gdt_entry(0xc093, 0, 0xfffff),  // 0x18: data, 4 KiB granular
    gdt_entry(0xc09b, 0, 0xfffff),  // 0x20: 32-bit code
    gdt_entry(0x008b, 0, 0x67),     // 0x28: busy 32/64-bit TSS
};

kvm_segment segment_from(uint64_t desc, uint16_t selector) {
  kvm_segment s{};
  s.base = ((desc >> 16) & 0xffffff) | (((desc >> 56) & 0xff) << 24);
  const uint32_t limit = static_cast<uint32_t>((desc & 0xffff) | (((desc >> 48) & 0xf) << 16));
  s.g = static_cast<uint8_t>((desc >> 55) & 1);
  s.limit = s.g != 0 ? (limit << 12) | 0xfff : limit;
  s.selector = selector;
  s.type = static_cast<uint8_t>((desc >> 40) & 0xf);
  s.present = static_cast<uint8_t>((desc >> 47) & 1);
  s.dpl = static_cast<uint8_t>((desc >> 45) & 3);
  s.db = static_cast<uint8_t>((desc >> 54) & 1);
  s.s = static_cast<uint8_t>((desc >> 44) & 1);
  s.l = static_cast<uint8_t>((desc >> 53) & 1);
  s.avl = static_cast<uint8_t>((desc >> 52) & 1);
  s.unusable = s.present != 0 ? 0 : 1;
  return s;
}

}  // namespace

Result<void, MemoryError> write_boot_tables(GuestMemory& mem) {
  AZOTE_TRYV(mem.write_obj(GuestAddress(kGdtAddr), kGdt));
  // PML4[0] -> PDPT; PDPT[0..3] -> 4 PDs; each PD maps 1 GiB with 2 MiB pages.
  AZOTE_TRYV(mem.write_obj(GuestAddress(kPml4Addr), uint64_t{kPdptAddr | 0x3}));
  for (uint64_t i = 0; i < 4; ++i) {
    AZOTE_TRYV(mem.write_obj(GuestAddress(kPdptAddr + i * 8), uint64_t{(kPdAddr + i * 0x1000) | 0x3}));
    std::array<uint64_t, 512> pd{};
    for (uint64_t j = 0; j < 512; ++j) pd[j] = ((i << 30) | (j << 21)) | 0x83;  // present, RW, 2 MiB
    AZOTE_TRYV(mem.write_obj(GuestAddress(kPdAddr + i * 0x1000), pd));
  }
  return {};
}

kvm_sregs boot_sregs(kvm_sregs s, EntryMode mode) {
  s.gdt.base = kGdtAddr;
  s.gdt.limit = sizeof(kGdt) - 1;
  s.idt.base = 0;
  s.idt.limit = 0;
  const kvm_segment data = segment_from(kGdt[3], kDataSelector);
  s.ds = s.es = s.fs = s.gs = s.ss = data;
  s.tr = segment_from(kGdt[5], kTssSelector);
  s.ldt = kvm_segment{};
  s.ldt.type = 2;
  s.ldt.present = 1;
  s.ldt.unusable = 1;
  if (mode == EntryMode::kLong64) {
    s.cs = segment_from(kGdt[2], kCode64Selector);
    s.cr3 = kPml4Addr;
    s.cr4 = kCr4Pae;
    s.cr0 = kCr0Pe | kCr0Mp | kCr0Et | kCr0Ne | kCr0Wp | kCr0Am | kCr0Pg;
    s.efer = kEferLme | kEferLma;
  } else {
    s.cs = segment_from(kGdt[4], kCode32Selector);
    s.cr3 = 0;
    s.cr4 = 0;
    s.cr0 = kCr0Pe | kCr0Et;
    s.efer = 0;
  }
  return s;
}

kvm_regs boot_regs(uint64_t entry, uint64_t boot_info) {
  kvm_regs r{};
  r.rip = entry;
  r.rflags = 0x2;
  r.rbx = boot_info;
  r.rsi = boot_info;
  return r;
}

std::vector<kvm::MsrEntry> boot_msrs(const std::vector<uint32_t>& supported) {
  constexpr uint32_t kSysenterCs = 0x174, kSysenterEsp = 0x175, kSysenterEip = 0x176, kStar = 0xc0000081,
                     kLstar = 0xc0000082, kCstar = 0xc0000083, kSyscallMask = 0xc0000084,
                     kKernelGsBase = 0xc0000102, kTsc = 0x10, kMiscEnable = 0x1a0, kMtrrDefType = 0x2ff;
  const std::vector<kvm::MsrEntry> want = {
      {kSysenterCs, 0}, {kSysenterEsp, 0}, {kSysenterEip, 0}, {kStar, 0}, {kLstar, 0}, {kCstar, 0},
      {kSyscallMask, 0}, {kKernelGsBase, 0}, {kTsc, 0},
      {kMiscEnable, 1},                   // fast strings
      {kMtrrDefType, (1u << 11) | 6},     // MTRRs enabled, default write-back
  };
  std::vector<kvm::MsrEntry> out;
  for (const auto& m : want)
    if (std::find(supported.begin(), supported.end(), m.index) != supported.end()) out.push_back(m);
  return out;
}

}  // namespace azote::x86
