// Initial CPU state for the boot vCPU, so the guest runs as little emulated CPL0 code
// as possible before its real entry: the hypervisor writes a GDT and an identity map
// and enters 64-bit kernels in long mode directly.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <vector>

#include "guest_memory/guest_memory.hpp"
#include "kvm/kvm.hpp"

namespace azote::x86 {

inline constexpr uint16_t kCode64Selector = 0x10;
inline constexpr uint16_t kDataSelector = 0x18;
inline constexpr uint16_t kCode32Selector = 0x20;
inline constexpr uint16_t kTssSelector = 0x28;

enum class EntryMode {
  kLong64,       // long mode, paging on (identity map of 4 GiB), CPL0
  kProtected32,  // 32-bit protected mode, paging off (PVH)
};

// Writes the boot GDT and identity-map page tables into low guest memory.
Result<void, MemoryError> write_boot_tables(GuestMemory& mem);

// Special registers for `mode`, starting from the vCPU's current ones.
kvm_sregs boot_sregs(kvm_sregs base, EntryMode mode);

// General registers: entry point and the boot-information pointer in rbx and rsi
// (PVH wants ebx; the Linux 64-bit protocol wants rsi).
kvm_regs boot_regs(uint64_t entry, uint64_t boot_info);

// MSRs set on every vCPU at creation (the ones the host KVM lists as supported).
std::vector<kvm::MsrEntry> boot_msrs(const std::vector<uint32_t>& supported);

// A GDT descriptor as a 64-bit value.
constexpr uint64_t gdt_entry(uint16_t flags, uint32_t base, uint32_t limit) {
  return ((static_cast<uint64_t>(base) & 0xff000000ull) << 32) | ((static_cast<uint64_t>(base) & 0x00ffffffull) << 16) |
         (static_cast<uint64_t>(limit) & 0x0000ffffull) | ((static_cast<uint64_t>(limit) & 0x000f0000ull) << 32) |
         ((static_cast<uint64_t>(flags) & 0xf0ffull) << 40);
}

}  // namespace azote::x86
