// The guest-physical memory layout azote-hv gives every x86 guest.
//
//   0x00000  ... 0x004ff   (left to the guest: real-mode IVT/BDA)
//   0x00500  GDT (hypervisor boot GDT: 0x10 code64, 0x18 data, 0x20 code32)
//   0x01000  hvm_start_info, modlist at +0x40, memmap at +0x100   (PVH / Azote entry)
//   0x07000  zero page (Linux boot_params)                         (bzImage)
//   0x09000  PML4, 0x0a000 PDPT, 0x0b000-0x0efff 4 PDs: identity map of 4 GiB, 2 MiB pages
//   0x20000  kernel command line (up to 64 KiB)
//   0x30000 - 0x9ffff free for the guest (trampolines, ...)
//   0xe0000 - 0xfffff ACPI tables (RSDP first), reserved in the memory map
//   0x100000 kernel (bzImage) / ELF segments (at their paddr, >= 1 MiB) ... RAM to 3 GiB
//   3 GiB - 4 GiB: MMIO hole: virtio-mmio windows from 0xc0000000 (4 KiB each), IOAPIC, LAPIC
//   4 GiB - ...  : the rest of RAM
#pragma once

#include <cstdint>
#include <vector>

#include "guest_memory/guest_memory.hpp"

namespace azote::x86 {

inline constexpr uint64_t kGdtAddr = 0x500;
inline constexpr uint64_t kBootInfoAddr = 0x1000;
inline constexpr uint64_t kModlistAddr = 0x1040;
inline constexpr uint64_t kMemmapAddr = 0x1100;
inline constexpr uint64_t kMemmapMaxEntries = 64;
inline constexpr uint64_t kZeroPageAddr = 0x7000;
inline constexpr uint64_t kPml4Addr = 0x9000;
inline constexpr uint64_t kPdptAddr = 0xa000;
inline constexpr uint64_t kPdAddr = 0xb000;  // 4 pages
inline constexpr uint64_t kCmdlineAddr = 0x20000;
inline constexpr uint64_t kCmdlineMax = 0x10000;  // including the NUL
inline constexpr uint64_t kEbdaStart = 0xa0000;
inline constexpr uint64_t kAcpiAddr = 0xe0000;
inline constexpr uint64_t kAcpiEnd = 0x100000;
inline constexpr uint64_t kHighMemStart = 0x100000;
inline constexpr uint64_t kMmioHoleStart = 3ull << 30;
inline constexpr uint64_t kMmioHoleEnd = 4ull << 30;
inline constexpr uint64_t kLapicAddr = 0xfee00000;
// virtio-mmio device i: window at kVirtioMmioBase + i * kVirtioMmioStride, GSI
// kVirtioFirstGsi + i (IOAPIC pins 5..20; 4 is COM1).
inline constexpr uint64_t kVirtioMmioBase = 0xc0000000;
inline constexpr uint64_t kVirtioMmioStride = 0x1000;
inline constexpr uint32_t kVirtioFirstGsi = 5;
inline constexpr uint64_t kIoapicAddr = 0xfec00000;
// KVM needs three pages for the (unused on this path) real-mode TSS and one for the
// identity map; placed just below the IOAPIC, inside the MMIO hole.
inline constexpr uint64_t kKvmTssAddr = 0xfeffd000;
inline constexpr uint64_t kKvmIdentityMapAddr = 0xfeffc000;

inline constexpr uint64_t kMinMemory = 8ull << 20;
inline constexpr uint64_t kMaxMemory = 1ull << 40;

enum class E820Type : uint32_t { kRam = 1, kReserved = 2, kAcpi = 3 };
struct E820Entry {
  uint64_t addr;
  uint64_t size;
  E820Type type;
};

// RAM regions for `mem_size` bytes of guest memory (split around the MMIO hole).
// With `io_window` > 0, the top `io_window` bytes of low RAM are a region of their own
// (RegionSpec::io), the I/O window: still RAM in the E820 map.
std::vector<RegionSpec> ram_regions(uint64_t mem_size, uint64_t io_window = 0);
// The memory map reported to the guest: RAM below 640 KiB, ACPI area reserved, RAM
// from 1 MiB, and RAM above 4 GiB when there is more than 3 GiB.
std::vector<E820Entry> e820_map(uint64_t mem_size);
// End of RAM below 4 GiB.
uint64_t low_ram_end(uint64_t mem_size);

}  // namespace azote::x86
