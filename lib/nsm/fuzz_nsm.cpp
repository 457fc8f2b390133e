// libFuzzer target for the NSM engine (Engine::handle): any bytes from the enclave get
// exactly one CBOR response (text or a one-entry map) within the caller's capacity, the
// platform's PCRs 0..15 stay locked and unchanged, and the signer only ever sees locked
// PCRs and fields within the format's bounds; never a crash, a leak or undefined
// behaviour. The input is also split in two requests (at a point its first byte picks)
// so that a lock or an extend can precede the next request. Seeds: one request of each
// kind and a few refused ones (fuzz_seeds/).
#include <cbor.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <span>
#include <string>

#include "nsm/nsm.hpp"

namespace {

using azote::nsm::AttestationRequest;
using azote::nsm::Bytes;
using azote::nsm::Engine;
using azote::nsm::Pcr;

void check(bool ok) {
  if (!ok) std::abort();
}

// One CBOR item: a bare text (a field-less success) or a one-entry map keyed by text.
void check_response(const Bytes& r, size_t capacity) {
  check(r.size() <= capacity);
  if (capacity < azote::nsm::kMinResponseCapacity && r.empty()) return;
  check(!r.empty());
  cbor_load_result lr{};
  cbor_item_t* it = cbor_load(r.data(), r.size(), &lr);
  check(it != nullptr && lr.error.code == CBOR_ERR_NONE && lr.read == r.size());
  const bool shape = cbor_isa_string(it) ||
                     (cbor_isa_map(it) && cbor_map_size(it) == 1 && cbor_isa_string(cbor_map_handle(it)[0].key));
  cbor_decref(&it);
  check(shape);
}

Pcr fill(uint8_t v) {
  Pcr p;
  p.fill(v);
  return p;
}

const std::map<uint32_t, Pcr>& platform() {
  static const std::map<uint32_t, Pcr> p{{0, fill(0x10)}, {1, fill(0x11)}, {2, fill(0x12)}, {4, fill(0x14)}};
  return p;
}

azote::Result<Bytes, std::string> sign(const AttestationRequest& a) {
  check(a.module_id == "i-0fuzz-enc0");
  check(a.pcrs.size() >= 16 && a.pcrs.size() <= 32 && a.pcrs.rbegin()->first < 32);
  for (uint32_t i = 0; i < 16; ++i) check(a.pcrs.count(i) == 1);
  for (const auto& [i, v] : platform()) check(a.pcrs.at(i) == v);
  for (const auto* f : {&a.user_data, &a.nonce, &a.public_key}) check(!*f || (*f)->size() <= 1024);
  check(!a.public_key || !a.public_key->empty());
  if (a.nonce && a.nonce->size() == 1) return azote::Unexpected{std::string("refused")};  // the failure path
  return Bytes(64 + (a.user_data ? a.user_data->size() : 0), 0xd2);
}

void check_platform_pcrs(const Engine& e) {
  for (uint32_t i = 0; i < 16; ++i) {
    const auto p = e.pcr(i);
    check(p && p->locked);
    const auto it = platform().find(i);
    check(p->value == (it == platform().end() ? Pcr{} : it->second));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto made = Engine::create("i-0fuzz-enc0", platform(), sign);
  check(made.ok());
  Engine& e = *made;
  const std::span<const uint8_t> in(data, size);

  check_response(e.handle(in), azote::nsm::kResponseBufferBytes);
  check_platform_pcrs(e);

  // The same request with a short buffer.
  const size_t capacity = size == 0 ? 0 : data[0] % 96;
  check_response(e.handle(in, capacity), capacity);

  // Two requests one after the other.
  if (size >= 2) {
    const size_t cut = 1 + data[size - 1] % (size - 1);
    check_response(e.handle(in.subspan(0, cut)), azote::nsm::kResponseBufferBytes);
    check_response(e.handle(in.subspan(cut)), azote::nsm::kResponseBufferBytes);
  }
  check_platform_pcrs(e);
  return 0;
}
