// libFuzzer target for attestation document parsing (attest::parse): any bytes either
// parse into a document that satisfies every bound of the format (validate) and encodes
// again, or are refused; never a crash, a leak or undefined behaviour. Seeds: a document
// azote-rot signed, the same tagged, a truncated one (fuzz_seeds/).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "attest/attest.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto p = azote::attest::parse(std::span<const uint8_t>(data, size));
  if (!p) return 0;
  if (!azote::attest::validate(p->document)) std::abort();
  auto again = azote::attest::encode_payload(p->document);
  // A parsed payload may hold unknown keys, or be encoded longer than the canonical
  // form, but whatever parse accepted must be encodable within the bounds again.
  if (!again && again.error().code != azote::attest::AttestErrc::kInvalid) std::abort();
  (void)azote::attest::verify_signature(*p);
  return 0;
}
