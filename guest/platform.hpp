// What the guest learns about its machine, all in user mode: hvm_start_info
// (command line, memory map, RSDP), ACPI MADT or the Intel MP table (CPUs), and a
// tiny allocator of free RAM. Every table is length- and checksum-checked, and
// only memory the memory map describes is read (reading an MMIO hole would stop
// the VM on azote-hv).
#pragma once

#include <cstddef>
#include <cstdint>

#include "layout.h"
#include "rt.hpp"

namespace az {

// Xen's struct hvm_start_info (arch-x86/hvm/start_info.h).
struct HvmStartInfo {
  uint32_t magic;  // 0x336ec578
  uint32_t version;
  uint32_t flags;
  uint32_t nr_modules;
  uint64_t modlist_paddr;
  uint64_t cmdline_paddr;
  uint64_t rsdp_paddr;
  uint64_t memmap_paddr;  // version >= 1
  uint32_t memmap_entries;
  uint32_t reserved;
};
static_assert(sizeof(HvmStartInfo) == 56);
inline constexpr uint32_t kHvmStartMagic = 0x336ec578;

struct MemmapEntry {
  uint64_t addr;
  uint64_t size;
  uint32_t type;  // 1 = RAM
  uint32_t reserved;
};
static_assert(sizeof(MemmapEntry) == 24);

struct Cpus {
  uint32_t count = 0;                 // enabled CPUs listed by the firmware (at least 1)
  uint32_t apic_ids[AZ_MAX_CPUS] = {};  // the first AZ_MAX_CPUS of them, in table order
  const char* source = "none";        // "acpi", "mp", "mp-default" or "none"
};

struct Args {
  Str name;
  Str argv[16];
  size_t argc = 0;
};

namespace platform {

// Reads the start info at `addr` (ignored unless its magic is right).
void init(uint64_t start_info);
bool have_start_info();
// Sum of RAM (type 1) in the memory map, bytes.
uint64_t ram_bytes();
// The whole command line (empty without start info).
Str cmdline();
// `azote.run=NAME args...` from the command line; name is empty when absent.
// `virtio_mmio.device=` words are not arguments, wherever they appear.
Args args();
// CPUs from ACPI (MADT), else the MP table, else 1. Parsed once, then cached.
const Cpus& cpus();
// The CRB control area address of the ACPI TPM2 table (start method 7, Command
// Response Buffer); 0 without such a table. Looked up at each call.
uint64_t acpi_tpm2_crb();
// `size` bytes of free RAM aligned to `align`, inside [lo, hi), avoiding the image
// and everything the loader handed over (start info, memory map, command line,
// modules, ACPI/MP tables). 0 if there is none. Successive calls never overlap.
uint64_t alloc(uint64_t size, uint64_t align, uint64_t lo, uint64_t hi);
// Memory a device may see: virtqueues, request headers, I/O buffers. Inside the I/O
// window when the hypervisor announced one (azote.iowin=START,SIZE: the only guest
// memory its cards map; alloc() never returns anything inside it), else like alloc()
// below 3 GiB. 0 if there is no room.
uint64_t alloc_io(uint64_t size, uint64_t align);
// The window, if any (size 0: none).
void io_window(uint64_t* start, uint64_t* size);

}  // namespace platform
}  // namespace az
