#include "x86/layout.hpp"

#include <algorithm>

namespace azote::x86 {

uint64_t low_ram_end(uint64_t mem_size) { return std::min(mem_size, kMmioHoleStart); }

std::vector<RegionSpec> ram_regions(uint64_t mem_size, uint64_t io_window) {
  const uint64_t low = low_ram_end(mem_size);
  std::vector<RegionSpec> r;
  if (io_window > 0 && io_window < low) {
    r.push_back({GuestAddress(0), low - io_window});
    r.push_back({GuestAddress(low - io_window), io_window, true});
  } else {
    r.push_back({GuestAddress(0), low});
  }
  if (mem_size > kMmioHoleStart) r.push_back({GuestAddress(kMmioHoleEnd), mem_size - kMmioHoleStart});
  return r;
}

std::vector<E820Entry> e820_map(uint64_t mem_size) {
  std::vector<E820Entry> m{
      {0, kEbdaStart, E820Type::kRam},
      {kAcpiAddr, kAcpiEnd - kAcpiAddr, E820Type::kReserved},
      {kHighMemStart, low_ram_end(mem_size) - kHighMemStart, E820Type::kRam},
  };
  if (mem_size > kMmioHoleStart) m.push_back({kMmioHoleEnd, mem_size - kMmioHoleStart, E820Type::kRam});
  return m;
}

}  // namespace azote::x86
