// The NSM engine against ENCLAVES.md §2–§3: every request, every error name, the exact
// bytes of responses (hand-written hex), PCR arithmetic against attest::extend, locks,
// what reaches the signer, and hostile requests (oversize, truncated, deep, huge lengths).
// Requests are built with libcbor's item API, independently of the engine's encoder.
#include "nsm/nsm.hpp"

#include <cbor.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <initializer_list>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace azote::nsm {
namespace {

// ---- building requests ----------------------------------------------------------------

cbor_item_t* T(std::string_view s) { return cbor_build_stringn(s.data(), s.size()); }
cbor_item_t* U(uint64_t v) {
  if (v <= 0xff) return cbor_build_uint8(static_cast<uint8_t>(v));
  if (v <= 0xffff) return cbor_build_uint16(static_cast<uint16_t>(v));
  if (v <= 0xffffffffu) return cbor_build_uint32(static_cast<uint32_t>(v));
  return cbor_build_uint64(v);
}
cbor_item_t* B(const Bytes& b) { return cbor_build_bytestring(b.data(), b.size()); }
cbor_item_t* Null() { return cbor_new_null(); }
using Field = std::pair<cbor_item_t*, cbor_item_t*>;
cbor_item_t* M(std::initializer_list<Field> fields) {
  cbor_item_t* m = cbor_new_definite_map(fields.size());
  for (const auto& [k, v] : fields)
    if (!cbor_map_add(m, cbor_pair{.key = cbor_move(k), .value = cbor_move(v)})) std::abort();
  return m;
}
Bytes enc(cbor_item_t* item) {
  unsigned char* buf = nullptr;
  size_t cap = 0;
  const size_t n = cbor_serialize_alloc(item, &buf, &cap);
  cbor_decref(&item);
  if (n == 0) std::abort();
  Bytes out(buf, buf + n);
  std::free(buf);
  return out;
}
// {"name": {fields}}
Bytes req(std::string_view name, std::initializer_list<Field> fields) { return enc(M({{T(name), M(fields)}})); }
Bytes bare(std::string_view name) { return enc(T(name)); }
Bytes describe_pcr(uint64_t i) { return req("DescribePCR", {{T("index"), U(i)}}); }
Bytes extend_pcr(uint64_t i, const Bytes& d) { return req("ExtendPCR", {{T("index"), U(i)}, {T("data"), B(d)}}); }
Bytes lock_pcr(uint64_t i) { return req("LockPCR", {{T("index"), U(i)}}); }
Bytes lock_pcrs(uint64_t r) { return req("LockPCRs", {{T("range"), U(r)}}); }

Bytes hex(std::string_view h) {
  Bytes out;
  int hi = -1;
  for (char c : h) {
    if (c == ' ') continue;
    const int v = c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
    if (hi < 0) {
      hi = v;
    } else {
      out.push_back(static_cast<uint8_t>(hi << 4 | v));
      hi = -1;
    }
  }
  if (hi >= 0) std::abort();  // an odd number of digits: a typo in the test
  return out;
}

// ---- reading responses ----------------------------------------------------------------

struct ItemFree {
  void operator()(cbor_item_t* p) const { cbor_decref(&p); }
};
using Item = std::unique_ptr<cbor_item_t, ItemFree>;

Item decode(const Bytes& b) {
  cbor_load_result r{};
  Item it(cbor_load(b.data(), b.size(), &r));
  EXPECT_TRUE(it && r.error.code == CBOR_ERR_NONE && r.read == b.size()) << "response is not one CBOR item";
  return it;
}
std::string str(const cbor_item_t* i) {
  if (i == nullptr || !cbor_isa_string(i)) return "<not text>";
  return std::string(reinterpret_cast<const char*>(cbor_string_handle(i)), cbor_string_length(i));
}
Bytes bytes(const cbor_item_t* i) {
  if (i == nullptr || !cbor_isa_bytestring(i)) return {};
  return Bytes(cbor_bytestring_handle(i), cbor_bytestring_handle(i) + cbor_bytestring_length(i));
}
const cbor_item_t* get(const cbor_item_t* map, std::string_view key) {
  if (map == nullptr || !cbor_isa_map(map)) return nullptr;
  for (size_t i = 0; i < cbor_map_size(map); ++i)
    if (str(cbor_map_handle(map)[i].key) == key) return cbor_map_handle(map)[i].value;
  return nullptr;
}
// The error name of an {"Error": name} response, "" for any other response.
std::string error_of(const Bytes& resp) {
  Item it = decode(resp);
  const cbor_item_t* e = get(it.get(), "Error");
  return e == nullptr ? "" : str(e);
}

Pcr fill(uint8_t v) {
  Pcr p;
  p.fill(v);
  return p;
}

// An engine with PCR0 = 0x11…, PCR4 = 0x44… and a signer that records what it got.
struct Fixture {
  std::vector<AttestationRequest> signed_requests;
  Result<Bytes, std::string> answer = Bytes{0x84, 0x44, 0xa1, 0x01, 0x38, 0x22};
  Engine engine = make();

  Engine make() {
    auto e = Engine::create("i-0123-enc4567", {{0, fill(0x11)}, {4, fill(0x44)}},
                            [this](const AttestationRequest& a) -> Result<Bytes, std::string> {
                              signed_requests.push_back(a);
                              return answer;
                            });
    if (!e) std::abort();
    return std::move(*e);
  }
  Bytes call(const Bytes& request, size_t capacity = kResponseBufferBytes) { return engine.handle(request, capacity); }
};

constexpr std::string_view kZ48 =
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000";

// ---- construction, names ---------------------------------------------------------------

TEST(NsmEngine, CreateChecksItsParameters) {
  EXPECT_FALSE(Engine::create("", {}, nullptr));
  EXPECT_FALSE(Engine::create(std::string(100, 'a'), {}, nullptr));
  EXPECT_FALSE(Engine::create("bad\nid", {}, nullptr));
  EXPECT_FALSE(Engine::create("i-1", {{16, fill(1)}}, nullptr));
  EXPECT_TRUE(Engine::create(std::string(99, 'a'), {{15, fill(1)}}, nullptr));
}

TEST(NsmEngine, ErrorNamesAreTheWireNames) {
  EXPECT_EQ(error_name(ErrorCode::kInvalidArgument), "InvalidArgument");
  EXPECT_EQ(error_name(ErrorCode::kInvalidIndex), "InvalidIndex");
  EXPECT_EQ(error_name(ErrorCode::kInvalidResponse), "InvalidResponse");
  EXPECT_EQ(error_name(ErrorCode::kReadOnlyIndex), "ReadOnlyIndex");
  EXPECT_EQ(error_name(ErrorCode::kInvalidOperation), "InvalidOperation");
  EXPECT_EQ(error_name(ErrorCode::kBufferTooSmall), "BufferTooSmall");
  EXPECT_EQ(error_name(ErrorCode::kInputTooLarge), "InputTooLarge");
  EXPECT_EQ(error_name(ErrorCode::kInternalError), "InternalError");
  EXPECT_EQ(error_name(static_cast<ErrorCode>(99)), "InternalError");
}

TEST(NsmEngine, ErrorResponseExactBytes) {
  Fixture f;
  // {"Error": "InvalidIndex"}
  EXPECT_EQ(f.call(describe_pcr(32)), hex("a1 65 4572726f72 6c 496e76616c6964496e646578"));
}

// ---- DescribeNSM, DescribePCR: exact bytes ------------------------------------------------

TEST(NsmEngine, DescribeNsmExactBytes) {
  Fixture f;
  const Bytes expected = hex(
      "a1 6b 44657363726962654e534d a7"
      " 6d 76657273696f6e5f6d616a6f72 01"
      " 6d 76657273696f6e5f6d696e6f72 00"
      " 6d 76657273696f6e5f7061746368 00"
      " 69 6d6f64756c655f6964 6e 692d303132332d656e6334353637"
      " 68 6d61785f70637273 1820"
      " 6b 6c6f636b65645f70637273 90 000102030405060708090a0b0c0d0e0f"
      " 66 646967657374 66 534841333834");
  EXPECT_EQ(f.call(bare("DescribeNSM")), expected);
}

TEST(NsmEngine, DescribeNsmListsLocksAscending) {
  Fixture f;
  ASSERT_EQ(error_of(f.call(lock_pcr(30))), "");
  ASSERT_EQ(error_of(f.call(lock_pcr(17))), "");
  Item d = decode(f.call(bare("DescribeNSM")));
  const cbor_item_t* locked = get(get(d.get(), "DescribeNSM"), "locked_pcrs");
  ASSERT_TRUE(locked != nullptr && cbor_isa_array(locked));
  std::vector<uint64_t> got;
  for (size_t i = 0; i < cbor_array_size(locked); ++i) got.push_back(cbor_get_int(cbor_array_handle(locked)[i]));
  std::vector<uint64_t> want{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 17, 30};
  EXPECT_EQ(got, want);
}

TEST(NsmEngine, DescribePcrExactBytes) {
  Fixture f;
  // PCR 16: Z, unlocked: {"DescribePCR": {"lock": false, "data": h'00…'}}
  EXPECT_EQ(f.call(describe_pcr(16)),
            hex(std::string("a1 6b 4465736372696265504352 a2 64 6c6f636b f4 64 64617461 5830 ") + std::string(kZ48)));
  // PCR 0: the platform's value, locked.
  EXPECT_EQ(f.call(describe_pcr(0)),
            hex("a1 6b 4465736372696265504352 a2 64 6c6f636b f5 64 64617461 5830 "
                "111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111"));
}

TEST(NsmEngine, PlatformPcrsAreLockedFromTheStartTheRestAreZ) {
  Fixture f;
  for (uint32_t i = 0; i < attest::kPcrCount; ++i) {
    Item d = decode(f.call(describe_pcr(i)));
    const cbor_item_t* body = get(d.get(), "DescribePCR");
    ASSERT_NE(body, nullptr) << i;
    EXPECT_EQ(cbor_get_bool(get(body, "lock")), i < 16) << i;
    const Pcr want = i == 0 ? fill(0x11) : i == 4 ? fill(0x44) : Pcr{};
    EXPECT_EQ(bytes(get(body, "data")), Bytes(want.begin(), want.end())) << i;
    EXPECT_EQ(f.engine.pcr(i)->locked, i < 16);
  }
  EXPECT_FALSE(f.engine.pcr(32));
}

// ---- ExtendPCR, LockPCR, LockPCRs --------------------------------------------------------

TEST(NsmEngine, ExtendIsAttestExtend) {
  Fixture f;
  Pcr want{};
  for (const Bytes& d : {Bytes{1, 2, 3}, Bytes{}, Bytes(4000, 0xab)}) {
    want = attest::extend(want, d);
    const Bytes resp = f.call(extend_pcr(16, d));
    ASSERT_EQ(error_of(resp), "");
    Item it = decode(resp);
    EXPECT_EQ(bytes(get(get(it.get(), "ExtendPCR"), "data")), Bytes(want.begin(), want.end()));
  }
  // DescribePCR agrees.
  EXPECT_EQ(f.engine.pcr(16)->value, want);
  Item d = decode(f.call(describe_pcr(16)));
  EXPECT_EQ(bytes(get(get(d.get(), "DescribePCR"), "data")), Bytes(want.begin(), want.end()));
  // The response of one more extend, byte for byte: {"ExtendPCR": {"data": h'…'}}.
  want = attest::extend(want, Bytes{9});
  Bytes expected = hex("a1 69 457874656e64504352 a1 64 64617461 5830");
  expected.insert(expected.end(), want.begin(), want.end());
  EXPECT_EQ(f.call(extend_pcr(16, {9})), expected);
  // Other registers are untouched.
  EXPECT_EQ(f.engine.pcr(17)->value, Pcr{});
}

TEST(NsmEngine, PlatformPcrsAreReadOnly) {
  Fixture f;
  for (uint32_t i = 0; i < 16; ++i) {
    EXPECT_EQ(error_of(f.call(extend_pcr(i, {1}))), "ReadOnlyIndex") << i;
    EXPECT_EQ(error_of(f.call(lock_pcr(i))), "ReadOnlyIndex") << i;
  }
  EXPECT_EQ(f.engine.pcr(0)->value, fill(0x11));
  EXPECT_EQ(f.engine.pcr(5)->value, Pcr{});
}

TEST(NsmEngine, LockPcrThenExtendIsRefused) {
  Fixture f;
  ASSERT_EQ(error_of(f.call(extend_pcr(20, {7}))), "");
  const Pcr before = f.engine.pcr(20)->value;
  EXPECT_EQ(f.call(lock_pcr(20)), hex("67 4c6f636b504352"));  // "LockPCR"
  EXPECT_TRUE(f.engine.pcr(20)->locked);
  EXPECT_EQ(error_of(f.call(extend_pcr(20, {7}))), "ReadOnlyIndex");
  EXPECT_EQ(f.engine.pcr(20)->value, before);
  EXPECT_EQ(error_of(f.call(lock_pcr(20))), "ReadOnlyIndex");  // already locked
  EXPECT_FALSE(f.engine.pcr(21)->locked);
  EXPECT_EQ(error_of(f.call(extend_pcr(21, {7}))), "");
}

TEST(NsmEngine, LockPcrsLocksAPrefix) {
  Fixture f;
  EXPECT_EQ(f.call(lock_pcrs(0)), hex("68 4c6f636b50435273"));  // "LockPCRs", nothing locked
  EXPECT_FALSE(f.engine.pcr(16)->locked);
  EXPECT_EQ(f.call(lock_pcrs(20)), hex("68 4c6f636b50435273"));
  for (uint32_t i = 0; i < 32; ++i) EXPECT_EQ(f.engine.pcr(i)->locked, i < 20) << i;
  EXPECT_EQ(error_of(f.call(extend_pcr(19, {1}))), "ReadOnlyIndex");
  EXPECT_EQ(error_of(f.call(extend_pcr(20, {1}))), "");
  EXPECT_EQ(error_of(f.call(lock_pcrs(33))), "InvalidIndex");
  EXPECT_FALSE(f.engine.pcr(20)->locked);
  EXPECT_EQ(error_of(f.call(lock_pcrs(32))), "");
  EXPECT_EQ(error_of(f.call(lock_pcrs(32))), "");  // idempotent (nsm-check does this)
  for (uint32_t i = 0; i < 32; ++i) EXPECT_TRUE(f.engine.pcr(i)->locked) << i;
  EXPECT_EQ(error_of(f.call(lock_pcrs(65535))), "InvalidIndex");
}

TEST(NsmEngine, IndexBounds) {
  Fixture f;
  for (uint64_t i : {32ull, 33ull, 1000ull, 65535ull}) {
    EXPECT_EQ(error_of(f.call(describe_pcr(i))), "InvalidIndex") << i;
    EXPECT_EQ(error_of(f.call(extend_pcr(i, {1}))), "InvalidIndex") << i;
    EXPECT_EQ(error_of(f.call(lock_pcr(i))), "InvalidIndex") << i;
  }
  // Not a u16: refused as an argument, as serde refuses it.
  for (uint64_t i : {65536ull, 0xffffffffull, ~0ull}) {
    EXPECT_EQ(error_of(f.call(describe_pcr(i))), "InvalidArgument") << i;
    EXPECT_EQ(error_of(f.call(lock_pcrs(i))), "InvalidArgument") << i;
  }
  EXPECT_EQ(error_of(f.call(req("DescribePCR", {{T("index"), cbor_build_negint8(0)}}))), "InvalidArgument");  // -1
  EXPECT_EQ(error_of(f.call(req("DescribePCR", {{T("index"), T("1")}}))), "InvalidArgument");
  EXPECT_EQ(error_of(f.call(req("DescribePCR", {{T("index"), cbor_build_float8(1.0)}}))), "InvalidArgument");
  EXPECT_EQ(error_of(f.call(req("DescribePCR", {{T("index"), Null()}}))), "InvalidArgument");
  // A longer-than-needed encoding of 16 is still 16.
  EXPECT_EQ(error_of(f.call(req("DescribePCR", {{T("index"), cbor_build_uint64(16)}}))), "");
}

// ---- Attestation ---------------------------------------------------------------------------

TEST(NsmEngine, AttestationGivesTheSignerTheLockedPcrsAndTheFields) {
  Fixture f;
  ASSERT_EQ(error_of(f.call(extend_pcr(16, {1}))), "");
  ASSERT_EQ(error_of(f.call(extend_pcr(17, {2}))), "");  // extended, never locked: left out
  ASSERT_EQ(error_of(f.call(lock_pcr(16))), "");
  ASSERT_EQ(error_of(f.call(lock_pcr(31))), "");
  const Bytes resp = f.call(req("Attestation", {{T("user_data"), B({1, 2})},
                                                {T("nonce"), Null()},
                                                {T("public_key"), B(Bytes(1024, 0x30))}}));
  // {"Attestation": {"document": h'<the signer's bytes>'}}
  EXPECT_EQ(resp, hex("a1 6b 4174746573746174696f6e a1 68 646f63756d656e74 46 8444a1013822"));
  ASSERT_EQ(f.signed_requests.size(), 1u);
  const AttestationRequest& a = f.signed_requests[0];
  EXPECT_EQ(a.module_id, "i-0123-enc4567");
  std::vector<uint32_t> keys;
  for (const auto& [k, v] : a.pcrs) {
    keys.push_back(k);
    EXPECT_EQ(v, f.engine.pcr(k)->value) << k;
  }
  std::vector<uint32_t> want{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 31};
  EXPECT_EQ(keys, want);
  EXPECT_EQ(a.pcrs.at(0), fill(0x11));
  EXPECT_EQ(a.pcrs.at(16), attest::extend(Pcr{}, Bytes{1}));
  EXPECT_EQ(a.user_data, (Bytes{1, 2}));
  EXPECT_FALSE(a.nonce);
  EXPECT_EQ(a.public_key, Bytes(1024, 0x30));
}

TEST(NsmEngine, AttestationMissingFieldsAreNull) {
  Fixture f;
  ASSERT_EQ(error_of(f.call(req("Attestation", {}))), "");
  ASSERT_EQ(error_of(f.call(req("Attestation", {{T("nonce"), B({})}}))), "");  // empty nonce: allowed
  ASSERT_EQ(error_of(f.call(req("Attestation", {{T("user_data"), Null()}, {T("nonce"), Null()},
                                                {T("public_key"), Null()}}))),
            "");
  ASSERT_EQ(f.signed_requests.size(), 3u);
  EXPECT_FALSE(f.signed_requests[0].user_data || f.signed_requests[0].nonce || f.signed_requests[0].public_key);
  EXPECT_EQ(f.signed_requests[1].nonce, Bytes{});
  EXPECT_FALSE(f.signed_requests[2].user_data || f.signed_requests[2].nonce || f.signed_requests[2].public_key);
  EXPECT_EQ(f.signed_requests[0].pcrs.size(), 16u);
}

TEST(NsmEngine, AttestationFieldBounds) {
  Fixture f;
  // 1024 bytes each is the most (the NSM self-test sends exactly that).
  EXPECT_EQ(error_of(f.call(req("Attestation", {{T("user_data"), B(Bytes(1024, 1))}, {T("nonce"), B(Bytes(1024, 2))},
                                                {T("public_key"), B(Bytes(1024, 3))}}))),
            "");
  for (const char* k : {"user_data", "nonce", "public_key"}) {
    EXPECT_EQ(error_of(f.call(req("Attestation", {{T(k), B(Bytes(1025, 1))}}))), "InvalidArgument") << k;
    EXPECT_EQ(error_of(f.call(req("Attestation", {{T(k), T("text")}}))), "InvalidArgument") << k;
    EXPECT_EQ(error_of(f.call(req("Attestation", {{T(k), U(1)}}))), "InvalidArgument") << k;
    EXPECT_EQ(error_of(f.call(req("Attestation", {{T(k), cbor_new_undef()}}))), "InvalidArgument") << k;
    // Floats of every width: libcbor 0.8's cbor_is_null aborts on them (fuzz_nsm found it).
    EXPECT_EQ(error_of(f.call(req("Attestation", {{T(k), cbor_build_float2(1.5f)}}))), "InvalidArgument") << k;
    EXPECT_EQ(error_of(f.call(req("Attestation", {{T(k), cbor_build_float4(1.5f)}}))), "InvalidArgument") << k;
    EXPECT_EQ(error_of(f.call(req("Attestation", {{T(k), cbor_build_float8(1.5)}}))), "InvalidArgument") << k;
  }
  EXPECT_EQ(error_of(f.call(req("Attestation", {{T("public_key"), B({})}}))), "InvalidArgument");
  EXPECT_EQ(error_of(f.call(req("Attestation", {{T("other"), Null()}}))), "InvalidArgument");
  EXPECT_EQ(f.signed_requests.size(), 1u);  // nothing refused reached the signer
}

TEST(NsmEngine, AttestationSignerFailureIsInternalError) {
  Fixture f;
  f.answer = Unexpected{std::string("azote-rot unreachable")};
  EXPECT_EQ(f.call(req("Attestation", {})), hex("a1 65 4572726f72 6d 496e7465726e616c4572726f72"));
  EXPECT_NE(f.engine.last_internal_error().find("azote-rot unreachable"), std::string::npos);
  f.answer = Bytes{};
  EXPECT_EQ(error_of(f.call(req("Attestation", {}))), "InternalError");
}

TEST(NsmEngine, AttestationWithoutSignerIsInvalidOperation) {
  auto e = Engine::create("i-1", {}, nullptr);
  ASSERT_TRUE(e);
  EXPECT_EQ(error_of(e->handle(req("Attestation", {}))), "InvalidOperation");
}

TEST(NsmEngine, AttestationLargerThanTheBufferIsBufferTooSmall) {
  Fixture f;
  f.answer = Bytes(kResponseBufferBytes, 0x55);
  EXPECT_EQ(error_of(f.call(req("Attestation", {}))), "BufferTooSmall");
  f.answer = Bytes(kResponseBufferBytes - 30, 0x55);
  const Bytes ok = f.call(req("Attestation", {}));
  EXPECT_EQ(error_of(ok), "");
  EXPECT_LE(ok.size(), kResponseBufferBytes);
}

// ---- GetRandom -------------------------------------------------------------------------------

TEST(NsmEngine, GetRandomGives256Bytes) {
  Fixture f;
  Item a = decode(f.call(bare("GetRandom")));
  Item b = decode(f.call(bare("GetRandom")));
  const Bytes ra = bytes(get(get(a.get(), "GetRandom"), "random"));
  const Bytes rb = bytes(get(get(b.get(), "GetRandom"), "random"));
  EXPECT_EQ(ra.size(), kRandomBytes);
  EXPECT_EQ(rb.size(), kRandomBytes);
  EXPECT_NE(ra, rb);
  // {"GetRandom": {"random": h'<256>'}}: the header bytes.
  const Bytes raw = f.call(bare("GetRandom"));
  const Bytes head = hex("a1 69 47657452616e646f6d a1 66 72616e646f6d 590100");
  ASSERT_EQ(raw.size(), head.size() + kRandomBytes);
  EXPECT_TRUE(std::equal(head.begin(), head.end(), raw.begin()));
}

// ---- names, shapes ----------------------------------------------------------------------------

TEST(NsmEngine, UnknownRequestIsInvalidOperation) {
  Fixture f;
  EXPECT_EQ(error_of(f.call(bare("Foo"))), "InvalidOperation");
  EXPECT_EQ(error_of(f.call(bare(""))), "InvalidOperation");
  EXPECT_EQ(error_of(f.call(bare("describensm"))), "InvalidOperation");
  EXPECT_EQ(error_of(f.call(req("Foo", {{T("index"), U(1)}}))), "InvalidOperation");
  EXPECT_EQ(error_of(f.call(enc(M({{T("SetPCR"), Null()}})))), "InvalidOperation");
}

TEST(NsmEngine, WrongShapesAreInvalidArgument) {
  Fixture f;
  const std::vector<Bytes> bad{
      bare("ExtendPCR"),                                                   // needs fields
      bare("Attestation"),                                                 // idem (serde wants the map)
      enc(M({{T("GetRandom"), Null()}})),                                  // a unit request as a map
      enc(M({{T("DescribeNSM"), M({})}})),
      enc(U(1)),                                                           // not text, not a map
      enc(B({'G'})),
      enc(cbor_new_definite_array(0)),
      enc(M({})),                                                          // no name
      enc(M({{T("LockPCR"), M({{T("index"), U(17)}})}, {T("LockPCR"), M({{T("index"), U(18)}})}})),  // two
      enc(M({{U(1), M({{T("index"), U(17)}})}})),                          // name not text
      req("DescribePCR", {}),                                              // missing index
      req("ExtendPCR", {{T("index"), U(16)}}),                             // missing data
      req("ExtendPCR", {{T("data"), B({1})}}),                             // missing index
      req("ExtendPCR", {{T("index"), U(16)}, {T("data"), T("text")}}),     // data not bstr
      req("ExtendPCR", {{T("index"), U(16)}, {T("data"), B({1})}, {T("extra"), U(0)}}),  // unknown field
      req("ExtendPCR", {{T("index"), U(16)}, {T("index"), U(17)}, {T("data"), B({1})}}),  // twice
      req("LockPCR", {{T("range"), U(16)}}),                               // LockPCRs' field
      req("LockPCRs", {{T("index"), U(16)}}),                              // LockPCR's field
      req("DescribePCR", {{U(0), U(16)}}),                                 // key not text
      enc(M({{T("DescribePCR"), U(16)}})),                                 // fields not a map
      enc(M({{T("DescribePCR"), Null()}})),
  };
  for (size_t i = 0; i < bad.size(); ++i) EXPECT_EQ(error_of(f.call(bad[i])), "InvalidArgument") << "case " << i;
  for (uint32_t i = 16; i < 32; ++i) EXPECT_EQ(f.engine.pcr(i)->value, Pcr{}) << i;  // nothing extended
  EXPECT_FALSE(f.engine.pcr(16)->locked);
}

TEST(NsmEngine, FieldsInAnyOrder) {
  Fixture f;
  EXPECT_EQ(error_of(f.call(req("ExtendPCR", {{T("data"), B({5})}, {T("index"), U(18)}}))), "");
  EXPECT_EQ(f.engine.pcr(18)->value, attest::extend(Pcr{}, Bytes{5}));
}

// ---- hostile requests --------------------------------------------------------------------------

TEST(NsmEngine, OversizeRequestIsInputTooLarge) {
  Fixture f;
  // A well-formed ExtendPCR of exactly 4096 bytes is taken; one byte more is refused whole.
  Bytes data(4096 - 27, 0xcd);  // 27 bytes of map, names and headers
  Bytes r = extend_pcr(16, data);
  ASSERT_EQ(r.size(), 4096u);
  EXPECT_EQ(error_of(f.call(r)), "");
  data.push_back(0);
  r = extend_pcr(17, data);
  ASSERT_EQ(r.size(), 4097u);
  // {"Error": "InputTooLarge"}
  EXPECT_EQ(f.call(r), hex("a1 65 4572726f72 6d 496e707574546f6f4c61726765"));
  EXPECT_EQ(f.engine.pcr(17)->value, Pcr{});
  EXPECT_EQ(error_of(f.call(Bytes(1 << 20, 0))), "InputTooLarge");
}

TEST(NsmEngine, TruncatedOrTrailingIsInvalidArgument) {
  Fixture f;
  EXPECT_EQ(error_of(f.call({})), "InvalidArgument");
  for (const Bytes& full : {extend_pcr(16, {1, 2, 3}), req("Attestation", {{T("nonce"), B({1, 2})}}), bare("GetRandom")}) {
    for (size_t n = 1; n < full.size(); ++n)
      EXPECT_EQ(error_of(f.call(Bytes(full.begin(), full.begin() + static_cast<long>(n)))), "InvalidArgument") << n;
    Bytes trailing = full;
    trailing.push_back(0x00);
    EXPECT_EQ(error_of(f.call(trailing)), "InvalidArgument");
  }
  EXPECT_EQ(f.engine.pcr(16)->value, Pcr{});
}

TEST(NsmEngine, DeepNestingIsInvalidArgument) {
  Fixture f;
  // 4096 nested one-element arrays, maps, and a deep value inside a real request.
  EXPECT_EQ(error_of(f.call(Bytes(4096, 0x81))), "InvalidArgument");
  Bytes maps;
  for (int i = 0; i < 1000; ++i) {
    maps.push_back(0xa1);
    maps.push_back(0x00);
  }
  maps.push_back(0x00);
  EXPECT_EQ(error_of(f.call(maps)), "InvalidArgument");
  Bytes deep = hex("a1 6b 4465736372696265504352 a1 65 696e646578");  // {"DescribePCR": {"index": …
  for (int i = 0; i < 3000; ++i) deep.push_back(0x81);
  deep.push_back(0x10);
  EXPECT_EQ(error_of(f.call(deep)), "InvalidArgument");
  // Just within the depth bound: refused for its shape, not crashed.
  EXPECT_EQ(error_of(f.call(hex("a1 6b 4465736372696265504352 a1 65 696e646578 81 81 10"))), "InvalidArgument");
}

TEST(NsmEngine, HugeDeclaredLengthsAreInvalidArgument) {
  Fixture f;
  for (std::string_view h : {
           "9b ffffffffffffffff",  // array of 2^64-1
           "bb ffffffffffffffff",  // map of 2^64-1
           "9a ffffffff 00",
           "ba 7fffffff 00 00",
           "5b ffffffffffffffff",  // byte string of 2^64-1
           "7b 7fffffffffffffff",  // text
           "a1 6b 4465736372696265504352 ba ffffffff",  // {"DescribePCR": map of 2^32-1
           "a1 69 457874656e64504352 a2 65 696e646578 10 64 64617461 5a ffffffff 00",  // data of 2^32-1
           "99 1000",              // 4096 elements declared, none there
       })
    EXPECT_EQ(error_of(f.call(hex(h))), "InvalidArgument") << h;
}

TEST(NsmEngine, TagsIndefiniteLengthsAndOddItemsAreInvalidArgument) {
  Fixture f;
  for (std::string_view h : {
           "c0 69 47657452616e646f6d",                  // tag 0 around "GetRandom"
           "d9d9f7 69 47657452616e646f6d",              // self-described CBOR
           "7f 69 47657452616e646f6d ff",               // indefinite text "GetRandom"
           "bf 6b 4465736372696265504352 a1 65 696e646578 10 ff",  // indefinite map
           "a1 6b 4465736372696265504352 bf 65 696e646578 10 ff",
           "a1 69 457874656e64504352 a2 65 696e646578 10 64 64617461 5f 41 01 ff",  // indefinite bstr
           "ff", "f7", "f6", "f5", "fb 3ff0000000000000", "1c", "5c", "f8 20",
       })
    EXPECT_EQ(error_of(f.call(hex(h))), "InvalidArgument") << h;
  EXPECT_EQ(f.engine.pcr(16)->value, Pcr{});
}

// ---- the caller's buffer ------------------------------------------------------------------------

TEST(NsmEngine, ShortBufferIsBufferTooSmallAndChangesNothing) {
  Fixture f;
  // {"Error": "BufferTooSmall"} is 22 bytes.
  const Bytes too_small = hex("a1 65 4572726f72 6e 427566666572546f6f536d616c6c");
  ASSERT_EQ(too_small.size(), kMinResponseCapacity);
  EXPECT_EQ(f.call(bare("DescribeNSM"), 100), too_small);
  EXPECT_EQ(f.call(bare("GetRandom"), 256), too_small);
  EXPECT_EQ(f.call(extend_pcr(16, {1}), 60), too_small);
  EXPECT_EQ(f.engine.pcr(16)->value, Pcr{});  // not extended: a retry is safe
  EXPECT_EQ(error_of(f.call(extend_pcr(16, {1}), 67)), "");  // exactly the response's size
  EXPECT_EQ(f.engine.pcr(16)->value, attest::extend(Pcr{}, Bytes{1}));
  // Below 22 even the error may not fit: "LockPCR" (8 bytes) in 7 gives no bytes, no lock.
  EXPECT_EQ(f.call(lock_pcr(17), 7), Bytes{});
  EXPECT_FALSE(f.engine.pcr(17)->locked);
  EXPECT_EQ(f.call(lock_pcrs(32), 8), Bytes{});  // "LockPCRs" is 9
  EXPECT_FALSE(f.engine.pcr(17)->locked);
  EXPECT_EQ(f.call(lock_pcr(17), 8), hex("67 4c6f636b504352"));
  EXPECT_TRUE(f.engine.pcr(17)->locked);
  // An error longer than the buffer becomes BufferTooSmall.
  EXPECT_EQ(f.call(bare("Nope"), 23), too_small);  // {"Error":"InvalidOperation"} is 24
  EXPECT_EQ(f.call(bare("Nope"), 0), Bytes{});
}

}  // namespace
}  // namespace azote::nsm
