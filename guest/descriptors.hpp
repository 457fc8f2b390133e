// x86-64 descriptor encodings shared by the compile-time tables (tables.cpp) and
// the per-AP tables the smp program builds at run time (smp.cpp).
#pragma once

#include <cstdint>

namespace az {

// Low 8 bytes of a 16-byte 64-bit TSS descriptor (type 9: available); the high 8
// bytes are base >> 32.
constexpr uint64_t tss_descriptor_lo(uint64_t base, uint64_t limit) {
  return (limit & 0xffff) | ((base & 0xffffff) << 16) | (0x89ull << 40) | (((limit >> 16) & 0xf) << 48) |
         (((base >> 24) & 0xff) << 56);
}

}  // namespace az
