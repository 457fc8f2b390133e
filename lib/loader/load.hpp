// Places a parsed kernel image, its command line and initrd into guest memory and
// writes the boot information its protocol expects:
//   ELF with Azote note -> long mode at that entry, hvm_start_info in rbx/rsi
//   ELF with PVH note   -> 32-bit protected mode at that entry, hvm_start_info in ebx
//   bzImage             -> Linux 64-bit boot protocol, zero page in rsi
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "guest_memory/guest_memory.hpp"
#include "loader/image.hpp"
#include "x86/boot_cpu.hpp"
#include "x86/layout.hpp"

namespace azote::loader {

struct BootSpec {
  std::span<const uint8_t> kernel;
  std::string cmdline;
  std::optional<std::span<const uint8_t>> initrd;
  std::vector<x86::E820Entry> e820;
  uint64_t mem_size = 0;
  uint64_t rsdp_addr = 0;
};

struct BootPlan {
  x86::EntryMode mode = x86::EntryMode::kLong64;
  uint64_t entry = 0;
  uint64_t boot_info = 0;    // hvm_start_info or zero page address
  const char* protocol = ""; // "azote64", "pvh", "linux64" (for logs)
  uint64_t kernel_end = 0;   // highest byte used by the kernel image
};

LoaderResult<BootPlan> load(GuestMemory& mem, const BootSpec& spec);

// Exposed for tests: where an initrd of `size` bytes goes (page aligned, as high as
// possible below `limit` and above `floor`), or nullopt when it does not fit.
std::optional<uint64_t> place_initrd(uint64_t size, uint64_t floor, uint64_t limit);

// hvm_start_info ABI (xen/include/public/arch-x86/hvm/start_info.h, version 1).
struct HvmStartInfo {
  uint32_t magic;
  uint32_t version;
  uint32_t flags;
  uint32_t nr_modules;
  uint64_t modlist_paddr;
  uint64_t cmdline_paddr;
  uint64_t rsdp_paddr;
  uint64_t memmap_paddr;
  uint32_t memmap_entries;
  uint32_t reserved;
};
static_assert(sizeof(HvmStartInfo) == 56);
struct HvmModlistEntry {
  uint64_t paddr, size, cmdline_paddr, reserved;
};
static_assert(sizeof(HvmModlistEntry) == 32);
struct HvmMemmapEntry {
  uint64_t addr, size;
  uint32_t type, reserved;
};
static_assert(sizeof(HvmMemmapEntry) == 24);
inline constexpr uint32_t kHvmStartMagic = 0x336ec578;

}  // namespace azote::loader
