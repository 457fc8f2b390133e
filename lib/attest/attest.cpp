#include "attest/attest.hpp"

#include <cbor.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <set>
#include <utility>

#include "pki/ossl.hpp"

namespace azote::attest {
namespace {

namespace ossl = pki::ossl;

constexpr char kAlgKey = 1;      // COSE header label "alg"
constexpr int kEs384 = -35;      // COSE algorithm ES384
constexpr uint64_t kCoseSign1Tag = 18;

// One owned libcbor item (reference counted by libcbor; this holds one reference).
struct ItemFree {
  void operator()(cbor_item_t* p) const { cbor_decref(&p); }
};
using Item = std::unique_ptr<cbor_item_t, ItemFree>;

Unexpected<AttestError> invalid(std::string what) { return make_error(AttestErrc::kInvalid, std::move(what)); }
Unexpected<AttestError> bad_cbor(std::string what) { return make_error(AttestErrc::kCbor, std::move(what)); }
Unexpected<AttestError> crypto(std::string what) {
  const std::string e = ossl::take_errors();
  return make_error(AttestErrc::kCrypto, e.empty() ? std::move(what) : what + ": " + e);
}

// The smallest unsigned encoding of `v` (libcbor encodes at the width it is given).
cbor_item_t* build_uint(uint64_t v) {
  if (v <= 0xff) return cbor_build_uint8(static_cast<uint8_t>(v));
  if (v <= 0xffff) return cbor_build_uint16(static_cast<uint16_t>(v));
  if (v <= 0xffffffffu) return cbor_build_uint32(static_cast<uint32_t>(v));
  return cbor_build_uint64(v);
}
cbor_item_t* build_bytes(std::span<const uint8_t> b) { return cbor_build_bytestring(b.data(), b.size()); }

// Adds key → value to `map`, taking ownership of both new items.
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

AttestResult<Bytes> serialize(const cbor_item_t* item) {
  unsigned char* buf = nullptr;
  size_t cap = 0;
  const size_t n = cbor_serialize_alloc(item, &buf, &cap);
  if (n == 0) {
    std::free(buf);
    return bad_cbor("cbor_serialize_alloc failed");
  }
  Bytes out(buf, buf + n);
  std::free(buf);
  return out;
}

// libcbor (0.8) allocates a definite array or map of the length its header declares
// before reading its elements, so 9 bytes can ask for gigabytes (found by fuzz_attest).
// Every header is therefore read first with libcbor's streaming decoder, and a
// collection that declares more elements than bytes are left (each takes at least one)
// refuses the input before anything is built.
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

AttestResult<void> lengths_fit(std::span<const uint8_t> bytes, const char* what) {
  cbor_callbacks cb = cbor_empty_callbacks;
  cb.array_start = check_array;
  cb.map_start = check_map;
  size_t at = 0;
  while (at < bytes.size()) {
    Budget b{bytes.size() - at, false};
    const cbor_decoder_result r = cbor_stream_decode(bytes.data() + at, bytes.size() - at, &cb, &b);
    if (r.status != CBOR_DECODER_FINISHED || r.read == 0)
      return bad_cbor(std::string(what) + ": not CBOR (at byte " + std::to_string(at) + ")");
    if (b.too_big)
      return bad_cbor(std::string(what) + ": a collection at byte " + std::to_string(at) +
                      " declares more elements than there are bytes");
    at += r.read;
  }
  return {};
}

// Decodes exactly one item spanning all of `bytes`.
AttestResult<Item> load(std::span<const uint8_t> bytes, const char* what) {
  AZOTE_TRYV(lengths_fit(bytes, what));
  cbor_load_result r{};
  Item item(cbor_load(bytes.data(), bytes.size(), &r));
  if (!item || r.error.code != CBOR_ERR_NONE)
    return bad_cbor(std::string(what) + ": not CBOR (error " + std::to_string(static_cast<int>(r.error.code)) +
                    " at byte " + std::to_string(r.error.position) + ")");
  if (r.read != bytes.size())
    return bad_cbor(std::string(what) + ": " + std::to_string(bytes.size() - r.read) + " trailing byte(s)");
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

AttestResult<void> check_size(const char* field, size_t n, size_t lo, size_t hi) {
  if (n < lo || n > hi)
    return invalid(std::string(field) + " is " + std::to_string(n) + " bytes, not " + std::to_string(lo) + ".." +
                   std::to_string(hi));
  return {};
}

// An optional bstr field: absent from the map or null → nullopt.
AttestResult<std::optional<Bytes>> optional_bytes(const cbor_item_t* v, const char* field, size_t lo) {
  if (cbor_is_null(v)) return std::optional<Bytes>{};
  auto b = definite_bytes(v);
  if (!b) return bad_cbor(std::string(field) + " is neither a byte string nor null");
  AZOTE_TRYV(check_size(field, b->size(), lo, kMaxOptional));
  return std::optional<Bytes>(std::move(*b));
}

}  // namespace

// Only allocation can fail in these; a digest that cannot be computed aborts rather than
// carry a wrong value.
Sha384::Sha384() : ctx_(EVP_MD_CTX_new()) {
  if (ctx_ == nullptr || EVP_DigestInit_ex(static_cast<EVP_MD_CTX*>(ctx_), EVP_sha384(), nullptr) != 1) std::abort();
}
Sha384::~Sha384() { EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(ctx_)); }
void Sha384::update(std::span<const uint8_t> bytes) {
  if (EVP_DigestUpdate(static_cast<EVP_MD_CTX*>(ctx_), bytes.data(), bytes.size()) != 1) std::abort();
}
Pcr Sha384::digest() const {
  std::unique_ptr<EVP_MD_CTX, ossl::Free<EVP_MD_CTX_free>> copy(EVP_MD_CTX_new());
  Pcr out{};
  unsigned int n = 0;
  if (!copy || EVP_MD_CTX_copy_ex(copy.get(), static_cast<EVP_MD_CTX*>(ctx_)) != 1 ||
      EVP_DigestFinal_ex(copy.get(), out.data(), &n) != 1)
    std::abort();
  return out;
}

Pcr sha384_of(std::initializer_list<std::span<const uint8_t>> parts) {
  Sha384 h;
  for (const auto& p : parts) h.update(p);
  return h.digest();
}

Pcr extend(const Pcr& old, std::span<const uint8_t> data) { return sha384_of({old, data}); }

Pcr measure_digest_of(std::span<const uint8_t> data) { return extend(Pcr{}, sha384_of({data})); }

AttestResult<void> validate(const Document& d) {
  if (d.module_id.empty() || d.module_id.size() > 1024) return invalid("module_id must be 1..1024 bytes");
  if (d.timestamp_ms == 0) return invalid("timestamp must be > 0");
  if (d.pcrs_key != "pcrs" && d.pcrs_key != "nitrotpm_pcrs") return invalid("the PCR map is called pcrs or nitrotpm_pcrs");
  if (d.pcrs.empty() || d.pcrs.size() > kPcrCount) return invalid("pcrs must hold 1..32 registers");
  if (d.pcrs.rbegin()->first >= kPcrCount)
    return invalid("pcrs: index " + std::to_string(d.pcrs.rbegin()->first) + " is not below 32");
  AZOTE_TRYV(check_size("certificate", d.certificate.size(), 1, kMaxCert));
  if (d.cabundle.empty()) return invalid("cabundle must hold at least the root");
  for (const auto& c : d.cabundle) AZOTE_TRYV(check_size("cabundle entry", c.size(), 1, kMaxCert));
  if (d.public_key) AZOTE_TRYV(check_size("public_key", d.public_key->size(), 1, kMaxOptional));
  if (d.user_data) AZOTE_TRYV(check_size("user_data", d.user_data->size(), 0, kMaxOptional));
  if (d.nonce) AZOTE_TRYV(check_size("nonce", d.nonce->size(), 0, kMaxOptional));
  return {};
}

AttestResult<Bytes> encode_payload(const Document& d) {
  AZOTE_TRYV(validate(d));
  Item map(cbor_new_definite_map(9));
  Item pcrs(cbor_new_definite_map(d.pcrs.size()));
  Item bundle(cbor_new_definite_array(d.cabundle.size()));
  if (!map || !pcrs || !bundle) return bad_cbor("out of memory");
  for (const auto& [index, value] : d.pcrs)
    if (!put(pcrs.get(), build_uint(index), build_bytes(value))) return bad_cbor("pcrs");
  for (const auto& c : d.cabundle)
    if (!push(bundle.get(), build_bytes(c))) return bad_cbor("cabundle");
  auto optional = [](const std::optional<Bytes>& b) { return b ? build_bytes(*b) : cbor_new_null(); };
  cbor_item_t* m = map.get();
  const bool ok = put(m, cbor_build_string("module_id"), cbor_build_stringn(d.module_id.data(), d.module_id.size())) &&
                  put(m, cbor_build_string("digest"), cbor_build_string("SHA384")) &&
                  put(m, cbor_build_string("timestamp"), build_uint(d.timestamp_ms)) &&
                  put(m, cbor_build_stringn(d.pcrs_key.data(), d.pcrs_key.size()), cbor_incref(pcrs.get())) &&
                  put(m, cbor_build_string("certificate"), build_bytes(d.certificate)) &&
                  put(m, cbor_build_string("cabundle"), cbor_incref(bundle.get())) &&
                  put(m, cbor_build_string("public_key"), optional(d.public_key)) &&
                  put(m, cbor_build_string("user_data"), optional(d.user_data)) &&
                  put(m, cbor_build_string("nonce"), optional(d.nonce));
  if (!ok) return bad_cbor("payload map");
  AZOTE_TRY(out, serialize(map.get()));
  if (out.size() > kMaxPayload)
    return invalid("payload is " + std::to_string(out.size()) + " bytes, over " + std::to_string(kMaxPayload));
  return out;
}

Bytes protected_header() {
  Item map(cbor_new_definite_map(1));
  if (!map || !put(map.get(), build_uint(kAlgKey), cbor_build_negint8(static_cast<uint8_t>(-1 - kEs384)))) return {};
  auto out = serialize(map.get());
  return out ? std::move(*out) : Bytes{};
}

AttestResult<Bytes> to_be_signed(std::span<const uint8_t> payload) {
  const Bytes prot = protected_header();
  Item a(cbor_new_definite_array(4));
  if (!a || prot.empty()) return bad_cbor("out of memory");
  if (!push(a.get(), cbor_build_string("Signature1")) || !push(a.get(), build_bytes(prot)) ||
      !push(a.get(), cbor_build_bytestring(nullptr, 0)) || !push(a.get(), build_bytes(payload)))
    return bad_cbor("Sig_structure");
  return serialize(a.get());
}

AttestResult<Bytes> der_to_raw_p384(std::span<const uint8_t> der) {
  const unsigned char* p = der.data();
  std::unique_ptr<ECDSA_SIG, ossl::Free<ECDSA_SIG_free>> sig(d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(der.size())));
  if (!sig || p != der.data() + der.size()) return crypto("ECDSA signature DER");
  Bytes out(2 * kPcrBytes);
  if (BN_bn2binpad(ECDSA_SIG_get0_r(sig.get()), out.data(), kPcrBytes) != static_cast<int>(kPcrBytes) ||
      BN_bn2binpad(ECDSA_SIG_get0_s(sig.get()), out.data() + kPcrBytes, kPcrBytes) != static_cast<int>(kPcrBytes))
    return crypto("ECDSA signature is not P-384 sized");
  return out;
}

AttestResult<Bytes> sign1(std::span<const uint8_t> payload, std::span<const uint8_t> raw_signature) {
  if (raw_signature.size() != 2 * kPcrBytes) return invalid("an ES384 signature is 96 bytes (r || s)");
  AZOTE_TRYV(check_size("payload", payload.size(), 1, kMaxPayload));
  const Bytes prot = protected_header();
  Item a(cbor_new_definite_array(4));
  Item unprotected(cbor_new_definite_map(0));
  if (!a || !unprotected || prot.empty()) return bad_cbor("out of memory");
  if (!push(a.get(), build_bytes(prot)) || !push(a.get(), cbor_incref(unprotected.get())) ||
      !push(a.get(), build_bytes(payload)) || !push(a.get(), build_bytes(raw_signature)))
    return bad_cbor("COSE_Sign1");
  return serialize(a.get());
}

AttestResult<Parsed> parse(std::span<const uint8_t> cose) {
  // The optional COSE_Sign1 tag (18) is one initial byte, 0xd2. libcbor up to 0.10
  // refuses tags 6..20 as "unassigned" (PJK/libcbor#307, fixed later), so the tag is
  // recognised here and the array after it decoded; any other tag is refused below as
  // not an array.
  if (!cose.empty() && cose[0] == 0xc0 + kCoseSign1Tag) cose = cose.subspan(1);
  AZOTE_TRY(top, load(cose, "document"));
  const cbor_item_t* env = top.get();
  if (!cbor_isa_array(env) || !cbor_array_is_definite(env) || cbor_array_size(env) != 4)
    return bad_cbor("document: not a COSE_Sign1 array of 4");
  cbor_item_t** parts = cbor_array_handle(env);
  Parsed out;
  auto prot = definite_bytes(parts[0]);
  if (!prot || *prot != protected_header()) return bad_cbor("protected header is not {1: -35} (ES384)");
  if (!cbor_isa_map(parts[1]) || cbor_map_size(parts[1]) != 0) return bad_cbor("unprotected header is not an empty map");
  auto payload = definite_bytes(parts[2]);
  if (!payload) return bad_cbor("payload is not a byte string");
  AZOTE_TRYV(check_size("payload", payload->size(), 1, kMaxPayload));
  auto sig = definite_bytes(parts[3]);
  if (!sig || sig->size() != 2 * kPcrBytes) return bad_cbor("signature is not 96 bytes (ES384 r || s)");
  out.protected_bytes = std::move(*prot);
  out.signature = std::move(*sig);

  AZOTE_TRY(body, load(*payload, "payload"));
  out.payload = std::move(*payload);
  const cbor_item_t* m = body.get();
  if (!cbor_isa_map(m) || !cbor_map_is_definite(m)) return bad_cbor("payload is not a map");
  Document& d = out.document;
  std::set<std::string> seen;
  const cbor_pair* pairs = cbor_map_handle(m);
  for (size_t i = 0; i < cbor_map_size(m); ++i) {
    auto key = definite_text(pairs[i].key);
    if (!key) return bad_cbor("payload: a key that is not text");
    if (!seen.insert(*key).second) return bad_cbor("payload: key \"" + *key + "\" twice");
    const cbor_item_t* v = pairs[i].value;
    if (*key == "module_id") {
      auto t = definite_text(v);
      if (!t) return bad_cbor("module_id is not text");
      d.module_id = std::move(*t);
    } else if (*key == "digest") {
      auto t = definite_text(v);
      if (!t || *t != "SHA384") return bad_cbor("digest is not \"SHA384\"");
    } else if (*key == "timestamp") {
      if (!cbor_isa_uint(v)) return bad_cbor("timestamp is not an unsigned integer");
      d.timestamp_ms = cbor_get_int(v);
    } else if (*key == "pcrs" || *key == "nitrotpm_pcrs") {
      if (seen.count("pcrs") != 0 && seen.count("nitrotpm_pcrs") != 0) return bad_cbor("both pcrs and nitrotpm_pcrs");
      seen.insert("pcrs");  // what the required-keys check below looks for
      d.pcrs_key = *key;
      if (!cbor_isa_map(v) || !cbor_map_is_definite(v)) return bad_cbor("pcrs is not a map");
      const cbor_pair* pp = cbor_map_handle(v);
      for (size_t j = 0; j < cbor_map_size(v); ++j) {
        if (!cbor_isa_uint(pp[j].key) || cbor_get_int(pp[j].key) >= kPcrCount)
          return bad_cbor("pcrs: a key that is not an index below 32");
        auto b = definite_bytes(pp[j].value);
        if (!b || b->size() != kPcrBytes) return bad_cbor("pcrs: a value that is not 48 bytes");
        Pcr p{};
        std::memcpy(p.data(), b->data(), kPcrBytes);
        if (!d.pcrs.emplace(static_cast<uint32_t>(cbor_get_int(pp[j].key)), p).second)
          return bad_cbor("pcrs: an index twice");
      }
    } else if (*key == "certificate") {
      auto b = definite_bytes(v);
      if (!b) return bad_cbor("certificate is not a byte string");
      d.certificate = std::move(*b);
    } else if (*key == "cabundle") {
      if (!cbor_isa_array(v) || !cbor_array_is_definite(v)) return bad_cbor("cabundle is not an array");
      for (size_t j = 0; j < cbor_array_size(v); ++j) {
        auto b = definite_bytes(cbor_array_handle(v)[j]);
        if (!b) return bad_cbor("cabundle: an entry that is not a byte string");
        d.cabundle.push_back(std::move(*b));
      }
    } else if (*key == "public_key") {
      AZOTE_TRY(b, optional_bytes(v, "public_key", 1));
      d.public_key = std::move(b);
    } else if (*key == "user_data") {
      AZOTE_TRY(b, optional_bytes(v, "user_data", 0));
      d.user_data = std::move(b);
    } else if (*key == "nonce") {
      AZOTE_TRY(b, optional_bytes(v, "nonce", 0));
      d.nonce = std::move(b);
    }  // unknown keys are ignored, as AWS's verifiers do
  }
  for (const char* required : {"module_id", "digest", "timestamp", "pcrs", "certificate", "cabundle"})
    if (seen.count(required) == 0) return bad_cbor(std::string("payload has no ") + required);
  AZOTE_TRYV(validate(d));
  return out;
}

AttestResult<void> verify_signature(const Parsed& p) {
  const unsigned char* c = p.document.certificate.data();
  ossl::X509Ptr cert(d2i_X509(nullptr, &c, static_cast<long>(p.document.certificate.size())));
  if (!cert) return crypto("certificate is not DER X.509");
  EVP_PKEY* key = X509_get0_pubkey(cert.get());
  if (key == nullptr || EVP_PKEY_get_bits(key) != 384) return crypto("certificate's key is not P-384");
  std::unique_ptr<ECDSA_SIG, ossl::Free<ECDSA_SIG_free>> sig(ECDSA_SIG_new());
  BIGNUM* r = BN_bin2bn(p.signature.data(), kPcrBytes, nullptr);
  BIGNUM* s = BN_bin2bn(p.signature.data() + kPcrBytes, kPcrBytes, nullptr);
  if (!sig || r == nullptr || s == nullptr || ECDSA_SIG_set0(sig.get(), r, s) != 1) {
    BN_free(r);
    BN_free(s);
    return crypto("signature");
  }
  unsigned char* der = nullptr;
  const int der_len = i2d_ECDSA_SIG(sig.get(), &der);
  ossl::BytesPtr der_owner(der);
  if (der_len <= 0) return crypto("signature DER");
  AZOTE_TRY(tbs, to_be_signed(p.payload));
  std::unique_ptr<EVP_MD_CTX, ossl::Free<EVP_MD_CTX_free>> md(EVP_MD_CTX_new());
  if (!md || EVP_DigestVerifyInit(md.get(), nullptr, EVP_sha384(), nullptr, key) != 1) return crypto("verify init");
  if (EVP_DigestVerify(md.get(), der, static_cast<size_t>(der_len), tbs.data(), tbs.size()) != 1)
    return crypto("the signature does not verify with the certificate's key");
  return {};
}

}  // namespace azote::attest
