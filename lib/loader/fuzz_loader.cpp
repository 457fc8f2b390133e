// libFuzzer target: any byte string as a kernel image. Parsing and loading must
// return an error or succeed, never crash, hang or touch memory outside guest RAM.
#include <cstdint>
#include <cstring>

#include "loader/load.hpp"

using namespace azote;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static auto mem = GuestMemory::create(x86::ram_regions(32ull << 20));
  if (!mem.ok()) return 0;
  std::span<const uint8_t> in(data, size);
  (void)loader::parse_elf(in);
  (void)loader::parse_bzimage(in);
  loader::BootSpec spec;
  spec.kernel = in;
  spec.cmdline = "console=ttyS0";
  spec.mem_size = 32ull << 20;
  spec.e820 = x86::e820_map(spec.mem_size);
  (void)loader::load(*mem, spec);
  return 0;
}
