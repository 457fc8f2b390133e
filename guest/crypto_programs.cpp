// crypto-selftest: BearSSL (crypto.hpp) in guest user mode. Known-answer tests made on
// the host with Python's `cryptography` (SHA-256, AES-256-GCM, RSA-OAEP-SHA256 with a
// fixed test key), then an RSA-2048 key from an HMAC-DRBG, its public key printed, an
// OAEP round trip with it and, given one, the host's ciphertext to it decrypted.
#include "crypto.hpp"
#include "programs.hpp"
#include "rt.hpp"

extern "C" int memcmp(const void* a, const void* b, size_t n);

namespace az {

namespace {

constexpr const char* kProg = "crypto-selftest";

// Made by a throwaway host script: cryptography's rsa.generate_private_key(65537, 2048),
// OAEP(MGF1(SHA256), SHA256, label=None); AESGCM(key).encrypt(iv, plaintext, aad).
constexpr char kOaepP[] =
    "f4a601b5f6bcb2c12591d2aa3ef7ae757060a50d1ef4f6bdaf084e1d65328da2703bc4baf77a09e4"
    "7aef301c2a312e4513f9ea35afca22194f73d5fbf8c1526aecc9e06875fbd5fda8c43a57b3f1415b"
    "e4682b0aa78ea88cb3484113c30ebf87aaddbd0bf664d131983b59800d09be351b6043b9856e65a6"
    "bfb8b7d4224ac1af";
constexpr char kOaepQ[] =
    "d571a0bbbd59b6e0c49a4222515945ed9add8676b162a3b4c1e3475772012d1d273e2ccb52463056"
    "30d42f8b669fecc340a337f3e074bd04132c95ee79c9746728403cdf195d68af8e0cde27e786fa97"
    "4ec4b49ee756d528e92478d24364046362d9841e27c0a4c1bc54e628d45d43e1802d30da8d5393f1"
    "e3209156a4797dc7";
constexpr char kOaepDp[] =
    "6e71ab000c9d6f4d46baa811f74f35510b24761e90452246cb87c24bfeed6d87518789eea5de502c"
    "f75a97ab7f58a87cc2e1e5dbcaba43de8d41cbee6e8447c2c196f959ef397b8781f2e42bc7ae3845"
    "55bdb9009c5808bb4c0c6864958048f2e42e2a34064dc92acc80ae8ce255edaa67eb736783572d48"
    "b3f09dfc84669f3d";
constexpr char kOaepDq[] =
    "9becba42ebfc9200791f4798d25ca91cfeb93df58f7843a754ccb7dd45c75e31a1ed65c3d282bbe4"
    "fb1ec6eccb37a13ab2098a627a624d82a08f3da84d07c22569de2399c769d98405fd987d064230e6"
    "4000ab023a75d09a6656e27c980684be260448e3ce9e88bd8edb6698052b6cdf5b47a81cc08981d6"
    "7ed9d7d2b7ac9919";
constexpr char kOaepIq[] =
    "352e3f60afa755c976511a75d2f1015a9b52e88f7f7c4acae85f5d866b6dccfc6822a19c2b36de25"
    "eee68a00397572ce443088870c34844c3dbd76b3d17292c52e44a705fa650d46704f29266a7debc1"
    "f8f452250641edee0c03bfbdad3a5fe1d8ebb18452740728b1f6185d2189b1d69dd4d67873c1c56b"
    "614a2d7507089b5c";
constexpr char kOaepCiphertext[] =
    "718695c0fc0fe2ada25c845ca4edc57158b900e153e2d98cbb940eb2f7bc7823d35b1bb213edba20"
    "e1ea09911f164387ea12ac53eea3adca864e7227cd4adca6cb955772325c89296ca054604ec23e23"
    "51719fb09042745d3f359f1332c1ef02ddbc20863d44d64b77ee4158e5a484f1804879239165e7e2"
    "29ea39d28365afbd95aad86512054c2e3edea586f25c692cc80b22a05a31552ce1060488650d1879"
    "077bba2305f663a5ca6e53417eba5f7e2dcaa8ff2383c260317c2f0d7063b4fd12a604efe22d8cbb"
    "043692b82e04d1bbb61e9b5f80870b36a3526a80791ff70a8621ba242894efeee0ccd41c899a1354"
    "89a7c26234a38364b27d7f9ab4ea6300";
constexpr char kOaepMessage[] = "617a6f74652063727970746f2d73656c6674657374204f4145502d53484132353620766563746f72";
constexpr char kGcmKey[] = "ecbdad1513bfbd7a6094d38d94858dc83906d92365eb7d28f35d3cea67400ceb";
constexpr char kGcmIv[] = "b9b10fa4a5ac26d4d716815d";
constexpr char kGcmAad[] = "617a6f74652d616164";
constexpr char kGcmPlaintext[] =
    "617a6f74652063727970746f2d73656c6674657374204145532d3235362d47434d20766563746f72"
    "2c203634206279746573206f6620706c61696e746578742e";
constexpr char kGcmCiphertext[] =
    "b26d434ad14d7809e546ca7d679f6c3e0bc67449337e87088ab08b7cb3bdf81978537c38e3d0e1db"
    "00eeacdabec0e7b287fbb8115d2180708b411e356c9212b7";
constexpr char kGcmTag[] = "54e9f896e31c31724bfb1f5b9b1ceb20";
constexpr char kSha256Abc[] = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

// A fixed DRBG seed for machines without RDRAND ("azote-crypto-selftest-fixed-test-seed"):
// the key then is not secret.
constexpr char kTestSeed[] = "617a6f74652d63727970746f2d73656c66746573742d66697865642d746573742d73656564";

[[noreturn]] void fail(const char* what) {
  Line().s(kPrefix).s(kProg).s(" error: ").s(what).print();
  exit(1);
}

size_t unhex(const char* hex, uint8_t* out, size_t cap) {
  size_t n = 0;
  if (!parse_hex(Str{hex, strlen(hex)}, out, cap, &n)) fail("bad built-in vector");
  return n;
}

// "azote-guest: crypto-selftest LABEL <base64 of p[0, n)>" on one line of any length.
void print_base64(const char* label, const uint8_t* p, size_t n) {
  Line l;
  l.s(kPrefix).s(kProg).c(' ').s(label).c(' ');
  char b64[200];
  for (size_t i = 0; i < n; i += 150) {
    const size_t k = base64(p + i, n - i < 150 ? n - i : 150, b64);
    if (l.room() < k) l.flush();
    l.s(Str{b64, k});
  }
  l.print();
}

void check_sha256() {
  uint8_t want[32], got[32];
  unhex(kSha256Abc, want, sizeof want);
  crypto::sha256("abc", 3, got);
  if (memcmp(got, want, 32) != 0) fail("SHA-256 known answer");
}

void check_gcm() {
  uint8_t key[32], iv[12], aad[16], tag[16], data[64], want[64];
  unhex(kGcmKey, key, sizeof key);
  const size_t iv_len = unhex(kGcmIv, iv, sizeof iv);
  const size_t aad_len = unhex(kGcmAad, aad, sizeof aad);
  unhex(kGcmTag, tag, sizeof tag);
  const size_t n = unhex(kGcmCiphertext, data, sizeof data);
  unhex(kGcmPlaintext, want, sizeof want);
  if (!crypto::aes256_gcm_decrypt(key, iv, iv_len, aad, aad_len, data, n, tag) || memcmp(data, want, n) != 0)
    fail("AES-256-GCM known answer");
  tag[0] ^= 1;  // a forged tag must be refused
  unhex(kGcmCiphertext, data, sizeof data);
  if (crypto::aes256_gcm_decrypt(key, iv, iv_len, aad, aad_len, data, n, tag)) fail("AES-256-GCM accepted a bad tag");
}

void check_oaep() {
  uint8_t p[128], q[128], dp[128], dq[128], iq[128], data[256], want[64];
  br_rsa_private_key sk{};
  sk.n_bitlen = 2048;
  sk.p = p;
  sk.plen = unhex(kOaepP, p, sizeof p);
  sk.q = q;
  sk.qlen = unhex(kOaepQ, q, sizeof q);
  sk.dp = dp;
  sk.dplen = unhex(kOaepDp, dp, sizeof dp);
  sk.dq = dq;
  sk.dqlen = unhex(kOaepDq, dq, sizeof dq);
  sk.iq = iq;
  sk.iqlen = unhex(kOaepIq, iq, sizeof iq);
  size_t n = unhex(kOaepCiphertext, data, sizeof data);
  const size_t want_n = unhex(kOaepMessage, want, sizeof want);
  if (!crypto::rsa_oaep_sha256_decrypt(sk, data, &n) || n != want_n || memcmp(data, want, n) != 0)
    fail("RSA-OAEP-SHA256 known answer");
}

}  // namespace

[[noreturn]] void prog_crypto_selftest(const Args& a) {
  uint8_t seed[256];
  size_t seed_len = 0;
  const bool have_seed = a.argc > 0 && !(a.argv[0] == "-");
  if (have_seed && (!parse_hex(a.argv[0], seed, sizeof seed, &seed_len) || seed_len < 16))
    usage_error(kProg, "bad SEED_HEX (16-256 bytes of hex, or -):", a.argv[0]);
  uint8_t ct[crypto::kRsaBits / 8];
  size_t ct_len = 0;
  if (a.argc > 1 && (!parse_hex(a.argv[1], ct, sizeof ct, &ct_len) || ct_len != sizeof ct))
    usage_error(kProg, "bad CIPHERTEXT_HEX (256 bytes of hex):", a.argv[1]);
  if (a.argc > 2) usage_error(kProg, "too many arguments, got", a.argv[2]);

  crypto::init_cpu();
  check_sha256();
  check_gcm();
  check_oaep();

  const char* source = "arg";
  if (!have_seed) {
    seed_len = 48;
    source = "rdrand";
    if (!crypto::rdrand_bytes(seed, seed_len)) {
      seed_len = unhex(kTestSeed, seed, sizeof seed);
      source = "fixed-test-seed";
    }
  }
  const crypto::Backends be = crypto::backends();
  Line().s(kPrefix).s(kProg).s(" rsa=").s(be.rsa).s(" aes=").s(be.aes).s(" ghash=").s(be.ghash).s(" seed=").s(source).print();

  crypto::Drbg rng;
  rng.seed(seed, seed_len);
  static crypto::RsaKey key;
  const uint64_t t0 = rdtsc();
  if (!crypto::rsa_keygen(rng, &key)) fail("RSA key generation");
  const uint64_t cycles = rdtsc() - t0;
  uint8_t spki[crypto::kSpkiMax];
  const size_t spki_len = crypto::rsa_spki_der(key.pk, spki, sizeof spki);
  if (spki_len == 0) fail("public key encoding");
  print_base64("public-key", spki, spki_len);

  // A round trip with the new key.
  static constexpr uint8_t kMsg[] = "round trip";
  uint8_t rt[crypto::kRsaBits / 8];
  size_t rt_len = crypto::rsa_oaep_sha256_encrypt(rng, key.pk, kMsg, sizeof kMsg, rt, sizeof rt);
  if (rt_len == 0 || !crypto::rsa_oaep_sha256_decrypt(key.sk, rt, &rt_len) || rt_len != sizeof kMsg ||
      memcmp(rt, kMsg, rt_len) != 0)
    fail("RSA-OAEP-SHA256 round trip with the new key");

  if (ct_len > 0) {
    if (!crypto::rsa_oaep_sha256_decrypt(key.sk, ct, &ct_len)) fail("RSA-OAEP-SHA256 decryption of CIPHERTEXT_HEX");
    Line l;
    l.s(kPrefix).s(kProg).s(" decrypted ");
    for (size_t i = 0; i < ct_len; ++i) l.hex2(ct[i]);
    l.print();
  }

  Line l;
  l.s(kPrefix).s(kProg).s(" ok");
  if (const uint64_t hz = tsc_hz(); hz != 0) l.s(" keygen_ms=").u(cycles * 1000 / hz);
  else l.s(" keygen_cycles=").u(cycles);
  l.print();
  exit(0);
}

}  // namespace az
