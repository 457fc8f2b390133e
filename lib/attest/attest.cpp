#include "attest/attest.hpp"

#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <set>
#include <utility>

#include "cbor/cbor.hpp"
#include "pki/ossl.hpp"

namespace azote::attest {
namespace {

namespace ossl = pki::ossl;

constexpr char kAlgKey = 1;      // COSE header label "alg"
constexpr uint64_t kCoseSign1Tag = 18;

using cbor::definite_bytes;
using cbor::definite_text;
using cbor::Item;
using cbor::push;
using cbor::put;
cbor_item_t* build_uint(uint64_t v) { return cbor::uint_item(v); }
cbor_item_t* build_bytes(std::span<const uint8_t> b) { return cbor::bytes_item(b); }

Unexpected<AttestError> invalid(std::string what) { return make_error(AttestErrc::kInvalid, std::move(what)); }
Unexpected<AttestError> bad_cbor(std::string what) { return make_error(AttestErrc::kCbor, std::move(what)); }
Unexpected<AttestError> crypto(std::string what) {
  const std::string e = ossl::take_errors();
  return make_error(AttestErrc::kCrypto, e.empty() ? std::move(what) : what + ": " + e);
}

// lib/cbor's results as this module's.
template <class T>
AttestResult<T> lift(cbor::CborResult<T> r) {
  if (!r.ok()) return bad_cbor(std::move(r).error().context);
  return std::move(r).value();
}
AttestResult<Bytes> serialize(const cbor_item_t* item) { return lift(cbor::serialize(item)); }
AttestResult<Item> load(std::span<const uint8_t> bytes, const char* what) { return lift(cbor::load(bytes, what)); }

AttestResult<void> check_size(const char* field, size_t n, size_t lo, size_t hi) {
  if (n < lo || n > hi)
    return invalid(std::string(field) + " is " + std::to_string(n) + " bytes, not " + std::to_string(lo) + ".." +
                   std::to_string(hi));
  return {};
}

// An optional bstr field: absent from the map or null → nullopt.
AttestResult<std::optional<Bytes>> optional_bytes(const cbor_item_t* v, const char* field, size_t lo) {
  if (cbor::is_null(v)) return std::optional<Bytes>{};
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

size_t coordinate_bytes(CoseAlg alg) {
  switch (alg) {
    case CoseAlg::kEs256: return 32;
    case CoseAlg::kEs384: return 48;
    case CoseAlg::kEs512: return 66;
  }
  return 0;
}

AttestResult<CoseAlg> cose_alg_for_bits(int bits) {
  switch (bits) {
    case 256: return CoseAlg::kEs256;
    case 384: return CoseAlg::kEs384;
    case 521: return CoseAlg::kEs512;
    default: return invalid("an EC key of " + std::to_string(bits) + " bits (P-256, P-384 or P-521 sign COSE)");
  }
}

Bytes protected_header(CoseAlg alg) {
  Item map(cbor_new_definite_map(1));
  const auto neg = static_cast<uint8_t>(-1 - static_cast<int>(alg));
  if (!map || !put(map.get(), build_uint(kAlgKey), cbor_build_negint8(neg))) return {};
  auto out = serialize(map.get());
  return out ? std::move(*out) : Bytes{};
}
Bytes protected_header() { return protected_header(CoseAlg::kEs384); }

AttestResult<Bytes> to_be_signed(std::span<const uint8_t> protected_bytes, std::span<const uint8_t> payload) {
  Item a(cbor_new_definite_array(4));
  if (!a || protected_bytes.empty()) return bad_cbor("out of memory");
  if (!push(a.get(), cbor_build_string("Signature1")) || !push(a.get(), build_bytes(protected_bytes)) ||
      !push(a.get(), cbor_build_bytestring(nullptr, 0)) || !push(a.get(), build_bytes(payload)))
    return bad_cbor("Sig_structure");
  return serialize(a.get());
}
AttestResult<Bytes> to_be_signed(std::span<const uint8_t> payload) { return to_be_signed(protected_header(), payload); }

AttestResult<Bytes> der_to_raw(std::span<const uint8_t> der, CoseAlg alg) {
  const size_t n = coordinate_bytes(alg);
  const unsigned char* p = der.data();
  std::unique_ptr<ECDSA_SIG, ossl::Free<ECDSA_SIG_free>> sig(d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(der.size())));
  if (!sig || p != der.data() + der.size()) return crypto("ECDSA signature DER");
  Bytes out(2 * n);
  if (BN_bn2binpad(ECDSA_SIG_get0_r(sig.get()), out.data(), static_cast<int>(n)) != static_cast<int>(n) ||
      BN_bn2binpad(ECDSA_SIG_get0_s(sig.get()), out.data() + n, static_cast<int>(n)) != static_cast<int>(n))
    return crypto("ECDSA signature is not of the algorithm's size");
  return out;
}
AttestResult<Bytes> der_to_raw_p384(std::span<const uint8_t> der) { return der_to_raw(der, CoseAlg::kEs384); }

AttestResult<Bytes> sign1(CoseAlg alg, std::span<const uint8_t> payload, std::span<const uint8_t> raw_signature) {
  if (raw_signature.size() != 2 * coordinate_bytes(alg))
    return invalid("the signature is " + std::to_string(raw_signature.size()) + " bytes, not r || s of " +
                   std::to_string(2 * coordinate_bytes(alg)));
  const Bytes prot = protected_header(alg);
  Item a(cbor_new_definite_array(4));
  Item unprotected(cbor_new_definite_map(0));
  if (!a || !unprotected || prot.empty()) return bad_cbor("out of memory");
  if (!push(a.get(), build_bytes(prot)) || !push(a.get(), cbor_incref(unprotected.get())) ||
      !push(a.get(), build_bytes(payload)) || !push(a.get(), build_bytes(raw_signature)))
    return bad_cbor("COSE_Sign1");
  return serialize(a.get());
}
AttestResult<Bytes> sign1(std::span<const uint8_t> payload, std::span<const uint8_t> raw_signature) {
  AZOTE_TRYV(check_size("payload", payload.size(), 1, kMaxPayload));
  return sign1(CoseAlg::kEs384, payload, raw_signature);
}

AttestResult<Sign1> parse_sign1(std::span<const uint8_t> cose, size_t max_payload) {
  // The optional COSE_Sign1 tag (18) is one initial byte, 0xd2. libcbor up to 0.10
  // refuses tags 6..20 as "unassigned" (PJK/libcbor#307, fixed later), so the tag is
  // recognised here and the array after it decoded; any other tag is refused below as
  // not an array.
  if (!cose.empty() && cose[0] == 0xc0 + kCoseSign1Tag) cose = cose.subspan(1);
  AZOTE_TRY(top, load(cose, "COSE_Sign1"));
  const cbor_item_t* env = top.get();
  if (!cbor_isa_array(env) || !cbor_array_is_definite(env) || cbor_array_size(env) != 4)
    return bad_cbor("not a COSE_Sign1 array of 4");
  cbor_item_t** parts = cbor_array_handle(env);
  Sign1 out;
  auto prot = definite_bytes(parts[0]);
  bool known = false;
  for (CoseAlg alg : {CoseAlg::kEs256, CoseAlg::kEs384, CoseAlg::kEs512}) {
    if (prot && *prot == protected_header(alg)) {
      out.alg = alg;
      known = true;
    }
  }
  if (!known) return bad_cbor("protected header is not {1: -7, -35 or -36} (ES256, ES384, ES512)");
  if (!cbor_isa_map(parts[1]) || cbor_map_size(parts[1]) != 0) return bad_cbor("unprotected header is not an empty map");
  auto payload = definite_bytes(parts[2]);
  if (!payload) return bad_cbor("payload is not a byte string");
  AZOTE_TRYV(check_size("payload", payload->size(), 1, max_payload));
  auto sig = definite_bytes(parts[3]);
  if (!sig || sig->size() != 2 * coordinate_bytes(out.alg))
    return bad_cbor("signature is not r || s of " + std::to_string(2 * coordinate_bytes(out.alg)) + " bytes");
  out.protected_bytes = std::move(*prot);
  out.payload = std::move(*payload);
  out.signature = std::move(*sig);
  return out;
}

AttestResult<void> verify_sign1(const Sign1& s, std::span<const uint8_t> certificate_der) {
  const unsigned char* c = certificate_der.data();
  ossl::X509Ptr cert(d2i_X509(nullptr, &c, static_cast<long>(certificate_der.size())));
  if (!cert) return crypto("certificate is not DER X.509");
  EVP_PKEY* key = X509_get0_pubkey(cert.get());
  if (key == nullptr || EVP_PKEY_get_base_id(key) != EVP_PKEY_EC) return crypto("certificate's key is not EC");
  AZOTE_TRY(alg, cose_alg_for_bits(EVP_PKEY_get_bits(key)));
  if (alg != s.alg) return crypto("certificate's curve is not the signature's algorithm");
  const size_t n = coordinate_bytes(alg);
  if (s.signature.size() != 2 * n) return crypto("signature size");
  std::unique_ptr<ECDSA_SIG, ossl::Free<ECDSA_SIG_free>> sig(ECDSA_SIG_new());
  BIGNUM* r = BN_bin2bn(s.signature.data(), static_cast<int>(n), nullptr);
  BIGNUM* sv = BN_bin2bn(s.signature.data() + n, static_cast<int>(n), nullptr);
  if (!sig || r == nullptr || sv == nullptr || ECDSA_SIG_set0(sig.get(), r, sv) != 1) {
    BN_free(r);
    BN_free(sv);
    return crypto("signature");
  }
  unsigned char* der = nullptr;
  const int der_len = i2d_ECDSA_SIG(sig.get(), &der);
  ossl::BytesPtr der_owner(der);
  if (der_len <= 0) return crypto("signature DER");
  AZOTE_TRY(tbs, to_be_signed(s.protected_bytes, s.payload));
  const EVP_MD* md_alg = alg == CoseAlg::kEs256 ? EVP_sha256() : alg == CoseAlg::kEs384 ? EVP_sha384() : EVP_sha512();
  std::unique_ptr<EVP_MD_CTX, ossl::Free<EVP_MD_CTX_free>> md(EVP_MD_CTX_new());
  if (!md || EVP_DigestVerifyInit(md.get(), nullptr, md_alg, nullptr, key) != 1) return crypto("verify init");
  if (EVP_DigestVerify(md.get(), der, static_cast<size_t>(der_len), tbs.data(), tbs.size()) != 1)
    return crypto("the signature does not verify with the certificate's key");
  return {};
}

AttestResult<Parsed> parse(std::span<const uint8_t> cose) {
  AZOTE_TRY(env, parse_sign1(cose, kMaxPayload));
  if (env.alg != CoseAlg::kEs384) return bad_cbor("protected header is not {1: -35} (ES384)");
  Parsed out;
  out.protected_bytes = std::move(env.protected_bytes);
  out.signature = std::move(env.signature);
  auto payload = std::optional<Bytes>(std::move(env.payload));
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
  return verify_sign1(Sign1{CoseAlg::kEs384, p.protected_bytes, p.payload, p.signature}, p.document.certificate);
}

}  // namespace azote::attest
