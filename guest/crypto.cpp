#include "crypto.hpp"

#include "programs.hpp"
#include "rt.hpp"

extern "C" {
void* memcpy(void* dst, const void* src, size_t n);
void* memmove(void* dst, const void* src, size_t n);
void* memset(void* dst, int c, size_t n);
}

namespace az::crypto {

namespace {

constexpr uint32_t kMsrFsBase = 0xc0000100;

// What %fs points at: the TCB layout glibc's code expects, of which only the self
// pointer (fs:0) and the stack-protector canary (fs:0x28) are used.
struct alignas(64) Tcb {
  uint64_t self;
  uint64_t unused[4];
  uint64_t canary;  // 0x28
  uint64_t pad[2];
};
static_assert(offsetof(Tcb, canary) == 0x28);
Tcb g_tcb;
uint32_t g_tcb_state;  // 0 unset, 1 being set, 2 ready

[[noreturn]] void die(const char* what) {
  Line().s(kPrefix).s(what).print();
  exit(134);
}

bool have_rdrand() { return (cpuid(1).c >> 30) & 1; }

bool rdrand64(uint64_t* v) {
  for (int i = 0; i < 10; ++i) {
    uint8_t ok;
    asm volatile("rdrand %0; setc %1" : "=r"(*v), "=qm"(ok) : : "cc");
    if (ok) return true;
  }
  return false;
}

// DER: a definite length (at most 3 bytes of it: < 64 KiB).
size_t der_len_size(size_t n) { return n < 0x80 ? 1 : n < 0x100 ? 2 : 3; }
uint8_t* der_head(uint8_t* p, uint8_t tag, size_t n) {
  *p++ = tag;
  if (n >= 0x100) {
    *p++ = 0x82;
    *p++ = static_cast<uint8_t>(n >> 8);
  } else if (n >= 0x80) {
    *p++ = 0x81;
  }
  *p++ = static_cast<uint8_t>(n);
  return p;
}
// An unsigned big-endian integer: leading zeros dropped, one 0x00 added when the top
// bit is set. The content length (what follows the INTEGER's head).
struct DerUint {
  const unsigned char* p;
  size_t n;
  bool pad;
  size_t content() const { return n + (pad ? 1 : 0); }
  size_t total() const { return 1 + der_len_size(content()) + content(); }
};
DerUint der_uint(const unsigned char* p, size_t n) {
  while (n > 1 && *p == 0) {
    ++p;
    --n;
  }
  return DerUint{p, n, n > 0 && (*p & 0x80) != 0};
}
uint8_t* der_put_uint(uint8_t* p, const DerUint& v) {
  p = der_head(p, 0x02, v.content());
  if (v.pad) *p++ = 0;
  memcpy(p, v.p, v.n);
  return p + v.n;
}

}  // namespace

void init_cpu() {
  uint32_t expected = 0;
  if (__atomic_compare_exchange_n(&g_tcb_state, &expected, 1, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
    uint64_t c = 0;
    if (!have_rdrand() || !rdrand64(&c)) c = rdtsc() * 0x9e3779b97f4a7c15ull;
    g_tcb.self = reinterpret_cast<uint64_t>(&g_tcb);
    g_tcb.canary = c & ~uint64_t{0xff};  // a NUL low byte, as glibc's: stops string overflows
    __atomic_store_n(&g_tcb_state, 2, __ATOMIC_RELEASE);
  }
  while (__atomic_load_n(&g_tcb_state, __ATOMIC_ACQUIRE) != 2) cpu_relax();
  wrmsr(kMsrFsBase, reinterpret_cast<uint64_t>(&g_tcb));
}

Backends backends() {
  return Backends{
      br_rsa_keygen_get_default() == &br_rsa_i62_keygen ? "i62" : "i31",
      br_aes_x86ni_ctr_get_vtable() != nullptr ? "x86ni" : "ct64",
      br_ghash_pclmul_get() != nullptr ? "pclmul" : "ctmul64",
  };
}

bool rdrand_bytes(uint8_t* out, size_t n) {
  if (!have_rdrand()) return false;
  while (n > 0) {
    uint64_t v;
    if (!rdrand64(&v)) return false;
    const size_t k = n < 8 ? n : 8;
    memcpy(out, &v, k);
    out += k;
    n -= k;
  }
  return true;
}

void Drbg::seed(const void* entropy, size_t n) { br_hmac_drbg_init(&ctx_, &br_sha256_vtable, entropy, n); }
void Drbg::reseed(const void* entropy, size_t n) { br_hmac_drbg_update(&ctx_, entropy, n); }
void Drbg::generate(void* out, size_t n) { br_hmac_drbg_generate(&ctx_, out, n); }

bool rsa_keygen(Drbg& rng, RsaKey* key) {
  return br_rsa_keygen_get_default()(rng.prng(), &key->sk, key->priv, &key->pk, key->pub, kRsaBits, 65537) == 1;
}

size_t rsa_spki_der(const br_rsa_public_key& pk, uint8_t* out, size_t cap) {
  // SEQUENCE { SEQUENCE { OID rsaEncryption, NULL }, BIT STRING { RSAPublicKey } },
  // RSAPublicKey = SEQUENCE { INTEGER n, INTEGER e }.
  static constexpr uint8_t kAlgId[] = {0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86,
                                       0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00};
  const DerUint n = der_uint(pk.n, pk.nlen), e = der_uint(pk.e, pk.elen);
  const size_t rsa_pub = n.total() + e.total();
  const size_t rsa_seq = 1 + der_len_size(rsa_pub) + rsa_pub;
  const size_t bits = 1 + rsa_seq;  // the unused-bits byte
  const size_t spki = sizeof kAlgId + 1 + der_len_size(bits) + bits;
  const size_t total = 1 + der_len_size(spki) + spki;
  if (pk.nlen == 0 || pk.elen == 0 || total > cap || total >= 0x10000) return 0;
  uint8_t* p = der_head(out, 0x30, spki);
  memcpy(p, kAlgId, sizeof kAlgId);
  p = der_head(p + sizeof kAlgId, 0x03, bits);
  *p++ = 0;
  p = der_head(p, 0x30, rsa_pub);
  p = der_put_uint(p, n);
  p = der_put_uint(p, e);
  return static_cast<size_t>(p - out);
}

bool rsa_oaep_sha256_decrypt(const br_rsa_private_key& sk, uint8_t* data, size_t* len) {
  return br_rsa_oaep_decrypt_get_default()(&br_sha256_vtable, nullptr, 0, &sk, data, len) == 1;
}

size_t rsa_oaep_sha256_encrypt(Drbg& rng, const br_rsa_public_key& pk, const uint8_t* msg, size_t n,
                               uint8_t* out, size_t cap) {
  return br_rsa_oaep_encrypt_get_default()(rng.prng(), &br_sha256_vtable, nullptr, 0, &pk, out, cap, msg, n);
}

bool aes256_gcm_decrypt(const uint8_t key[32], const uint8_t* iv, size_t iv_len, const uint8_t* aad,
                        size_t aad_len, uint8_t* data, size_t len, const uint8_t tag[16]) {
  br_aes_gen_ctr_keys keys;
  const br_block_ctr_class* aes = br_aes_x86ni_ctr_get_vtable();
  if (aes == nullptr) aes = &br_aes_ct64_ctr_vtable;
  aes->init(&keys.vtable, key, 32);
  br_ghash ghash = br_ghash_pclmul_get();
  if (ghash == nullptr) ghash = &br_ghash_ctmul64;
  br_gcm_context gcm;
  br_gcm_init(&gcm, &keys.vtable, ghash);
  br_gcm_reset(&gcm, iv, iv_len);
  br_gcm_aad_inject(&gcm, aad, aad_len);
  br_gcm_flip(&gcm);
  br_gcm_run(&gcm, 0, data, len);
  const bool ok = br_gcm_check_tag(&gcm, tag) == 1;
  memset(&keys, 0, sizeof keys);
  memset(&gcm, 0, sizeof gcm);
  return ok;
}

void sha256(const void* data, size_t n, uint8_t out[32]) {
  br_sha256_context ctx;
  br_sha256_init(&ctx);
  br_sha256_update(&ctx, data, n);
  br_sha256_out(&ctx, out);
}

}  // namespace az::crypto

// The C runtime Debian's hardened build of BearSSL calls (glibc's names and contracts).
extern "C" {

[[noreturn]] void __stack_chk_fail() { az::crypto::die("crypto: stack smashing detected"); }

void* __memcpy_chk(void* dst, const void* src, size_t n, size_t dst_len) {
  if (n > dst_len) az::crypto::die("crypto: buffer overflow detected (memcpy)");
  return memcpy(dst, src, n);
}
void* __memmove_chk(void* dst, const void* src, size_t n, size_t dst_len) {
  if (n > dst_len) az::crypto::die("crypto: buffer overflow detected (memmove)");
  return memmove(dst, src, n);
}
void* __memset_chk(void* dst, int c, size_t n, size_t dst_len) {
  if (n > dst_len) az::crypto::die("crypto: buffer overflow detected (memset)");
  return memset(dst, c, n);
}

}  // extern "C"
