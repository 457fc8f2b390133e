#include "cbor/cbor.hpp"

#include <cstdlib>
#include <cstring>

namespace azote::cbor {

cbor_item_t* uint_item(uint64_t v) {
  if (v <= 0xff) return cbor_build_uint8(static_cast<uint8_t>(v));
  if (v <= 0xffff) return cbor_build_uint16(static_cast<uint16_t>(v));
  if (v <= 0xffffffffu) return cbor_build_uint32(static_cast<uint32_t>(v));
  return cbor_build_uint64(v);
}
cbor_item_t* bytes_item(std::span<const uint8_t> b) { return cbor_build_bytestring(b.data(), b.size()); }
cbor_item_t* text_item(std::string_view s) { return cbor_build_stringn(s.data(), s.size()); }

bool put(cbor_item_t* map, cbor_item_t* key, cbor_item_t* value) {
  if (key == nullptr || value == nullptr) {
    if (key != nullptr) cbor_decref(&key);
    if (value != nullptr) cbor_decref(&value);
    return false;
  }
  return cbor_map_add(map, cbor_pair{.key = cbor_move(key), .value = cbor_move(value)});
}
bool push(cbor_item_t* array, cbor_item_t* value) {
  if (value == nullptr) return false;
  return cbor_array_push(array, cbor_move(value));
}

CborResult<Bytes> serialize(const cbor_item_t* item) {
  unsigned char* buf = nullptr;
  size_t cap = 0;
  const size_t n = cbor_serialize_alloc(item, &buf, &cap);
  if (n == 0) {
    std::free(buf);
    return make_error(CborErrc::kCbor, "cbor_serialize_alloc failed");
  }
  Bytes out(buf, buf + n);
  std::free(buf);
  return out;
}

namespace {
// libcbor (0.8) allocates a definite array or map of the length its header declares
// before reading its elements (found by fuzz_attest). Every header is therefore read
// first with the streaming decoder: a collection declaring more elements than there
// are bytes left (each takes at least one) refuses the input before anything is built.
struct Budget {
  size_t left = 0;
  bool too_big = false;
};
void check_array(void* ctx, size_t n) {
  auto* b = static_cast<Budget*>(ctx);
  if (n > b->left) b->too_big = true;
}
void check_map(void* ctx, size_t n) {
  auto* b = static_cast<Budget*>(ctx);
  if (n > b->left / 2) b->too_big = true;
}
}  // namespace

CborResult<void> lengths_fit(std::span<const uint8_t> bytes, const char* what) {
  cbor_callbacks cb = cbor_empty_callbacks;
  cb.array_start = check_array;
  cb.map_start = check_map;
  size_t at = 0;
  while (at < bytes.size()) {
    Budget b{bytes.size() - at, false};
    const cbor_decoder_result r = cbor_stream_decode(bytes.data() + at, bytes.size() - at, &cb, &b);
    if (r.status != CBOR_DECODER_FINISHED || r.read == 0)
      return make_error(CborErrc::kCbor, std::string(what) + ": not CBOR (at byte " + std::to_string(at) + ")");
    if (b.too_big)
      return make_error(CborErrc::kCbor, std::string(what) + ": a collection at byte " + std::to_string(at) +
                                             " declares more elements than there are bytes");
    at += r.read;
  }
  return {};
}

CborResult<Item> load(std::span<const uint8_t> bytes, const char* what) {
  AZOTE_TRYV(lengths_fit(bytes, what));
  cbor_load_result r{};
  Item item(cbor_load(bytes.data(), bytes.size(), &r));
  if (!item || r.error.code != CBOR_ERR_NONE)
    return make_error(CborErrc::kCbor, std::string(what) + ": not CBOR (error " +
                                           std::to_string(static_cast<int>(r.error.code)) + " at byte " +
                                           std::to_string(r.error.position) + ")");
  if (r.read != bytes.size())
    return make_error(CborErrc::kCbor,
                      std::string(what) + ": " + std::to_string(bytes.size() - r.read) + " trailing byte(s)");
  return item;
}

std::optional<Bytes> definite_bytes(const cbor_item_t* i) {
  if (!cbor_isa_bytestring(i) || !cbor_bytestring_is_definite(i)) return std::nullopt;
  const unsigned char* h = cbor_bytestring_handle(i);
  return Bytes(h, h + cbor_bytestring_length(i));
}
std::optional<std::string> definite_text(const cbor_item_t* i) {
  if (!cbor_isa_string(i) || !cbor_string_is_definite(i)) return std::nullopt;
  return std::string(reinterpret_cast<const char*>(cbor_string_handle(i)), cbor_string_length(i));
}

bool is_null(const cbor_item_t* i) {
  return i != nullptr && cbor_isa_float_ctrl(i) && cbor_float_ctrl_is_ctrl(i) && cbor_is_null(i);
}

const cbor_item_t* map_get(const cbor_item_t* map, std::string_view key) {
  if (map == nullptr || !cbor_isa_map(map) || !cbor_map_is_definite(map)) return nullptr;
  const cbor_pair* pairs = cbor_map_handle(map);
  for (size_t i = 0; i < cbor_map_size(map); ++i) {
    auto k = definite_text(pairs[i].key);
    if (k && *k == key) return pairs[i].value;
  }
  return nullptr;
}

}  // namespace azote::cbor
