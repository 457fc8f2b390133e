// A thin user-mode wrapper over BearSSL (Debian's libbearssl-dev, its static archive
// linked into the image): RSA key generation, RSA-OAEP-SHA256 decryption, AES-256-GCM
// decryption, SHA-256 and an HMAC-DRBG. No crypto is implemented here; the only code of
// our own is the DER of a public key and the C runtime Debian's build expects.
//
// Debian compiles BearSSL with -fstack-protector-strong and _FORTIFY_SOURCE=2: its
// functions read the canary at %fs:0x28 and call __stack_chk_fail / __memcpy_chk /
// __memset_chk / __memmove_chk (crypto.cpp provides them). init_cpu() points FS at a
// block holding the canary; nothing else in the guest uses FS.
#pragma once

#include <bearssl.h>

#include <cstddef>
#include <cstdint>

namespace az::crypto {

// Points this CPU's FS base (MSR 0xc0000100, one CPL0 service call) at the block
// holding the stack-protector canary, which the first call draws from RDRAND (the TSC
// without it). Must run on every CPU before it calls anything else here.
void init_cpu();

// The implementations BearSSL chose for this CPU and build: rsa "i62"/"i31", aes
// "x86ni"/"ct64" (AES-NI from CPUID), ghash "pclmul"/"ctmul64".
struct Backends {
  const char* rsa;
  const char* aes;
  const char* ghash;
};
Backends backends();

// n bytes from RDRAND (CPUID.1:ECX[30], user mode); false without it or when it keeps
// failing. A spike's entropy: an enclave seeds from NSM GetRandom instead.
bool rdrand_bytes(uint8_t* out, size_t n);

// HMAC-DRBG with SHA-256 (NIST SP 800-90A, BearSSL's br_hmac_drbg).
class Drbg {
 public:
  void seed(const void* entropy, size_t n);
  void reseed(const void* entropy, size_t n);
  void generate(void* out, size_t n);
  const br_prng_class** prng() { return &ctx_.vtable; }

 private:
  br_hmac_drbg_context ctx_;
};

inline constexpr unsigned kRsaBits = 2048;
// A key pair; sk and pk point into priv and pub, so it is never copied.
struct RsaKey {
  br_rsa_private_key sk;
  br_rsa_public_key pk;
  unsigned char priv[BR_RSA_KBUF_PRIV_SIZE(kRsaBits)];
  unsigned char pub[BR_RSA_KBUF_PUB_SIZE(kRsaBits)];
  RsaKey() = default;
  RsaKey(const RsaKey&) = delete;
  RsaKey& operator=(const RsaKey&) = delete;
};
// A new kRsaBits-bit key with public exponent 65537 from rng (BearSSL's default
// engine). False on failure.
bool rsa_keygen(Drbg& rng, RsaKey* key);

// DER SubjectPublicKeyInfo (rsaEncryption, RFC 3279) of pk into out; its length, or 0
// if it does not fit cap. kSpkiMax fits any kRsaBits key.
inline constexpr size_t kSpkiMax = kRsaBits / 8 + 64;
size_t rsa_spki_der(const br_rsa_public_key& pk, uint8_t* out, size_t cap);

// RSA-OAEP with SHA-256 (and MGF1-SHA-256), empty label, in place: data holds the
// ciphertext (*len bytes, the modulus length) and gets the message (*len updated).
bool rsa_oaep_sha256_decrypt(const br_rsa_private_key& sk, uint8_t* data, size_t* len);
// The other direction (with pk and rng); the ciphertext (pk's modulus length) goes to
// out. Returns its length, 0 on failure.
size_t rsa_oaep_sha256_encrypt(Drbg& rng, const br_rsa_public_key& pk, const uint8_t* msg, size_t n,
                               uint8_t* out, size_t cap);

// AES-256-GCM decryption in place; false (data then holds garbage) if the 16-byte tag
// does not match.
bool aes256_gcm_decrypt(const uint8_t key[32], const uint8_t* iv, size_t iv_len, const uint8_t* aad,
                        size_t aad_len, uint8_t* data, size_t len, const uint8_t tag[16]);

void sha256(const void* data, size_t n, uint8_t out[32]);

}  // namespace az::crypto
