#include "loader/load.hpp"

#include <array>
#include <cstring>

namespace azote::loader {
namespace {

using x86::E820Type;

std::string hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "%#llx", static_cast<unsigned long long>(v));
  return buf;
}

Unexpected<LoaderError> no_room(std::string why) { return make_error(LoaderErrc::kNoRoom, std::move(why)); }

// Converts a guest-memory failure while loading into a loader error.
template <class T>
LoaderResult<bool> mem_ok(const Result<T, MemoryError>& r, const char* what) {
  if (!r.ok()) return no_room(std::string(what) + ": " + r.error().message());
  return true;
}

// Is [addr, addr+size) inside one RAM range of the memory map, at or above 1 MiB?
bool in_ram(const std::vector<x86::E820Entry>& e820, uint64_t addr, uint64_t size) {
  if (addr < x86::kHighMemStart || addr + size < addr) return false;
  for (const auto& e : e820)
    if (e.type == E820Type::kRam && addr >= e.addr && addr + size <= e.addr + e.size) return true;
  return false;
}

LoaderResult<bool> write_cmdline(GuestMemory& mem, const std::string& cmdline, uint64_t max_len) {
  if (cmdline.find('\0') != std::string::npos) return make_error(LoaderErrc::kMalformed, "command line contains a NUL byte");
  if (cmdline.size() > max_len)
    return make_error(LoaderErrc::kNoRoom, "command line is " + std::to_string(cmdline.size()) +
                                               " bytes; this kernel accepts at most " + std::to_string(max_len));
  std::vector<uint8_t> bytes(cmdline.begin(), cmdline.end());
  bytes.push_back(0);
  return mem_ok(mem.write(GuestAddress(x86::kCmdlineAddr), bytes), "command line");
}

LoaderResult<BootPlan> load_elf(GuestMemory& mem, const BootSpec& spec) {
  AZOTE_TRY(img, parse_elf(spec.kernel));
  if (!img.azote_entry && !img.pvh_entry)
    return make_error(LoaderErrc::kUnsupported,
                      "ELF has no PVH entry note (Xen note type 18, XEN_ELFNOTE_PHYS32_ENTRY); "
                      "azote-hv boots ELF kernels only through PVH");
  for (const auto& s : img.segments) {
    if (!in_ram(spec.e820, s.paddr, s.memsz))
      return no_room("ELF segment [" + hex(s.paddr) + ", " + hex(s.paddr + s.memsz) +
                     ") is not inside guest RAM above 1 MiB (guest has " + std::to_string(spec.mem_size >> 20) + " MiB)");
    AZOTE_TRYV(mem_ok(mem.write(GuestAddress(s.paddr), spec.kernel.subspan(s.file_offset, s.filesz)), "ELF segment"));
    AZOTE_TRYV(mem_ok(mem.fill(GuestAddress(s.paddr + s.filesz), 0, s.memsz - s.filesz), "ELF bss"));
  }
  AZOTE_TRYV(write_cmdline(mem, spec.cmdline, x86::kCmdlineMax - 1));

  HvmStartInfo si{};
  si.magic = kHvmStartMagic;
  si.version = 1;
  si.cmdline_paddr = x86::kCmdlineAddr;
  si.rsdp_paddr = spec.rsdp_addr;
  if (spec.initrd) {
    const uint64_t floor = (img.highest + 0xfff) & ~0xfffull;
    auto at = place_initrd(spec.initrd->size(), floor, x86::low_ram_end(spec.mem_size));
    if (!at) return no_room("initrd of " + std::to_string(spec.initrd->size()) + " bytes does not fit in guest RAM below 3 GiB after the kernel");
    AZOTE_TRYV(mem_ok(mem.write(GuestAddress(*at), *spec.initrd), "initrd"));
    HvmModlistEntry mod{*at, spec.initrd->size(), 0, 0};
    AZOTE_TRYV(mem_ok(mem.write_obj(GuestAddress(x86::kModlistAddr), mod), "modlist"));
    si.nr_modules = 1;
    si.modlist_paddr = x86::kModlistAddr;
  }
  if (spec.e820.size() > x86::kMemmapMaxEntries) return no_room("memory map has too many entries");
  for (size_t i = 0; i < spec.e820.size(); ++i) {
    const auto& e = spec.e820[i];
    HvmMemmapEntry m{e.addr, e.size, static_cast<uint32_t>(e.type), 0};
    AZOTE_TRYV(mem_ok(mem.write_obj(GuestAddress(x86::kMemmapAddr + i * sizeof m), m), "memmap"));
  }
  si.memmap_paddr = x86::kMemmapAddr;
  si.memmap_entries = static_cast<uint32_t>(spec.e820.size());
  AZOTE_TRYV(mem_ok(mem.write_obj(GuestAddress(x86::kBootInfoAddr), si), "hvm_start_info"));

  BootPlan plan;
  plan.boot_info = x86::kBootInfoAddr;
  plan.kernel_end = img.highest;
  if (img.azote_entry) {
    plan.mode = x86::EntryMode::kLong64;
    plan.entry = *img.azote_entry;
    plan.protocol = "azote64";
  } else {
    plan.mode = x86::EntryMode::kProtected32;
    plan.entry = *img.pvh_entry;
    plan.protocol = "pvh";
  }
  return plan;
}

// Linux x86 boot protocol (Documentation/arch/x86/boot.rst), 64-bit entry.
LoaderResult<BootPlan> load_bzimage(GuestMemory& mem, const BootSpec& spec) {
  AZOTE_TRY(bz, parse_bzimage(spec.kernel));
  const uint64_t load_addr = x86::kHighMemStart;
  const uint64_t need = std::max<uint64_t>(bz.init_size, bz.kernel_size);
  if (!in_ram(spec.e820, load_addr, need))
    return no_room("kernel needs " + std::to_string(need >> 20) + " MiB from 1 MiB (init_size) but the guest has " +
                   std::to_string(spec.mem_size >> 20) + " MiB");
  AZOTE_TRYV(mem_ok(mem.write(GuestAddress(load_addr), spec.kernel.subspan(bz.kernel_offset, bz.kernel_size)), "kernel"));
  AZOTE_TRYV(write_cmdline(mem, spec.cmdline, std::min<uint64_t>(bz.cmdline_size, x86::kCmdlineMax - 1)));

  std::array<uint8_t, 4096> zp{};
  std::memcpy(&zp[0x1f1], bz.setup_header.data(), bz.setup_header.size());
  auto put8 = [&](size_t off, uint8_t v) { zp[off] = v; };
  auto put32 = [&](size_t off, uint32_t v) { std::memcpy(&zp[off], &v, 4); };
  auto put64 = [&](size_t off, uint64_t v) { std::memcpy(&zp[off], &v, 8); };
  put8(0x210, 0xff);                                    // type_of_loader: undefined
  put8(0x211, static_cast<uint8_t>(bz.loadflags | 0x80));  // CAN_USE_HEAP
  put32(0x214, static_cast<uint32_t>(load_addr));       // code32_start
  put32(0x228, static_cast<uint32_t>(x86::kCmdlineAddr));  // cmd_line_ptr
  std::memcpy(&zp[0x224], "\x00\xfe", 2);               // heap_end_ptr = 0xfe00
  put64(0x070, spec.rsdp_addr);                         // acpi_rsdp_addr (2.14+)
  if (spec.initrd) {
    const uint64_t limit = std::min<uint64_t>(x86::low_ram_end(spec.mem_size), uint64_t{bz.initrd_addr_max} + 1);
    const uint64_t floor = load_addr + ((need + 0xfff) & ~0xfffull);
    auto at = place_initrd(spec.initrd->size(), floor, limit);
    if (!at) return no_room("initrd of " + std::to_string(spec.initrd->size()) + " bytes does not fit below initrd_addr_max " + hex(bz.initrd_addr_max));
    AZOTE_TRYV(mem_ok(mem.write(GuestAddress(*at), *spec.initrd), "initrd"));
    put32(0x218, static_cast<uint32_t>(*at));
    put32(0x21c, static_cast<uint32_t>(spec.initrd->size()));
  }
  if (spec.e820.size() > 128) return no_room("memory map has too many entries");
  put8(0x1e8, static_cast<uint8_t>(spec.e820.size()));
  for (size_t i = 0; i < spec.e820.size(); ++i) {
    const size_t at = 0x2d0 + i * 20;
    put64(at, spec.e820[i].addr);
    put64(at + 8, spec.e820[i].size);
    put32(at + 16, static_cast<uint32_t>(spec.e820[i].type));
  }
  AZOTE_TRYV(mem_ok(mem.write_obj(GuestAddress(x86::kZeroPageAddr), zp), "zero page"));

  BootPlan plan;
  plan.mode = x86::EntryMode::kLong64;
  plan.entry = load_addr + 0x200;  // startup_64
  plan.boot_info = x86::kZeroPageAddr;
  plan.protocol = "linux64";
  plan.kernel_end = load_addr + need;
  return plan;
}

}  // namespace

std::optional<uint64_t> place_initrd(uint64_t size, uint64_t floor, uint64_t limit) {
  if (size == 0 || size > limit) return std::nullopt;
  const uint64_t at = (limit - size) & ~0xfffull;
  if (at < floor) return std::nullopt;
  return at;
}

LoaderResult<BootPlan> load(GuestMemory& mem, const BootSpec& spec) {
  switch (detect(spec.kernel)) {
    case ImageKind::kElf: return load_elf(mem, spec);
    case ImageKind::kBzImage: return load_bzimage(mem, spec);
    case ImageKind::kUnknown: break;
  }
  return make_error(LoaderErrc::kFormat, "kernel is neither an ELF file nor a Linux bzImage");
}

}  // namespace azote::loader
