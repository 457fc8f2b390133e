// libFuzzer: the EIF reader and the signature decoder on arbitrary bytes must never
// crash, read out of bounds or allocate without bound.
#include <cstddef>
#include <cstdint>

#include "eif/eif.hpp"

namespace eif = azote::eif;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const uint8_t> bytes(data, size);
  auto img = eif::parse(bytes);
  if (img.ok()) {
    if (img->signature) {
      auto s = eif::read_signature(*img->signature);
      if (s.ok()) (void)eif::verify_signature(*s, eif::measure(*img, &*s).pcr0, 0);
    }
    (void)eif::measure(*img, nullptr);
  }
  // The signature section's decoder on its own (a seed-free path to its CBOR).
  (void)eif::read_signature(bytes);
  return 0;
}
