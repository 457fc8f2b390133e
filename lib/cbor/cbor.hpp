// Small, safe helpers over libcbor, shared by the formats azote speaks in CBOR
// (attestation documents, EIF signatures, the NSM API): owned items, building maps and
// arrays without leaking on allocation failure, and **bounded decoding of untrusted
// bytes** (every collection's declared length is checked against the bytes left before
// libcbor allocates for it). CBOR itself is libcbor's, never hand-encoded.
#pragma once

#include <cbor.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.hpp"

namespace azote::cbor {

enum class CborErrc {
  kCbor = 1,  // not CBOR, a collection longer than its input, trailing bytes, out of memory
};
using CborError = Error<CborErrc>;
template <class T>
using CborResult = Result<T, CborError>;
using Bytes = std::vector<uint8_t>;

// One owned libcbor item (libcbor counts references; this holds one).
struct ItemFree {
  void operator()(cbor_item_t* p) const { cbor_decref(&p); }
};
using Item = std::unique_ptr<cbor_item_t, ItemFree>;

// New items (nullptr when out of memory; put/push take care of that).
cbor_item_t* uint_item(uint64_t v);  // the smallest encoding of v
cbor_item_t* bytes_item(std::span<const uint8_t> b);
cbor_item_t* text_item(std::string_view s);

// Adds key → value to `map` / value to `array`, taking ownership of the new items
// (freed on failure); false when an item is null or the container is full.
bool put(cbor_item_t* map, cbor_item_t* key, cbor_item_t* value);
bool push(cbor_item_t* array, cbor_item_t* value);

CborResult<Bytes> serialize(const cbor_item_t* item);

// Refuses bytes that are not a sequence of well-formed CBOR items, or in which a
// collection declares more elements than bytes are left (libcbor would allocate them
// all first: 9 bytes can ask for gigabytes). `what` names the input in the error.
CborResult<void> lengths_fit(std::span<const uint8_t> bytes, const char* what);
// Exactly one item spanning all of `bytes`, after lengths_fit.
CborResult<Item> load(std::span<const uint8_t> bytes, const char* what);

std::optional<Bytes> definite_bytes(const cbor_item_t* i);
std::optional<std::string> definite_text(const cbor_item_t* i);
// Whether `i` is CBOR null. libcbor 0.8's cbor_is_null asserts (aborts the process)
// when given a float: a hostile peer's 0xf9... must never get that far (fuzz_nsm).
bool is_null(const cbor_item_t* i);
// The value under text key `key` of a definite map (nullptr if absent or not a map).
const cbor_item_t* map_get(const cbor_item_t* map, std::string_view key);

}  // namespace azote::cbor
