// azote::Sha256 against OpenSSL's SHA256: the FIPS 180-2 example vectors, every
// length 0..5000 of pseudo-random data fed in random pieces, and the cpu-benchmark
// stream that the guest and its host twin hash.
#include "sha256/sha256.hpp"

#include <openssl/evp.h>
#include <openssl/sha.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "sha256/cpu_stream.hpp"

namespace {

using Digest = std::vector<uint8_t>;

Digest ours(const void* data, size_t len) {
  Digest d(azote::Sha256::kDigestBytes);
  azote::Sha256::digest(data, len, d.data());
  return d;
}

Digest openssl(const void* data, size_t len) {
  Digest d(SHA256_DIGEST_LENGTH);
  SHA256(static_cast<const unsigned char*>(data), len, d.data());
  return d;
}

std::string hex(const Digest& d) {
  static const char* digits = "0123456789abcdef";
  std::string s;
  for (uint8_t b : d) {
    s += digits[b >> 4];
    s += digits[b & 0xf];
  }
  return s;
}

TEST(Sha256, FipsVectors) {
  struct Vector {
    std::string msg;
    const char* digest;
  };
  const Vector vectors[] = {
      {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
      {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
      {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
       "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
      {"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu",
       "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"},
      {std::string(1000000, 'a'), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"},
  };
  for (const auto& v : vectors) {
    EXPECT_EQ(hex(ours(v.msg.data(), v.msg.size())), v.digest) << "message of " << v.msg.size() << " bytes";
    EXPECT_EQ(hex(openssl(v.msg.data(), v.msg.size())), v.digest);
  }
}

TEST(Sha256, RandomLengthsInOneCall) {
  std::mt19937_64 rng(20240501);
  std::vector<uint8_t> data(5000);
  for (auto& b : data) b = static_cast<uint8_t>(rng());
  for (size_t len = 0; len <= data.size(); ++len)
    ASSERT_EQ(hex(ours(data.data(), len)), hex(openssl(data.data(), len))) << "length " << len;
}

TEST(Sha256, RandomLengthsInRandomPieces) {
  std::mt19937_64 rng(7);
  std::vector<uint8_t> data(5000);
  for (auto& b : data) b = static_cast<uint8_t>(rng());
  for (size_t len = 0; len <= data.size(); ++len) {
    azote::Sha256 h;
    size_t off = 0;
    while (off < len) {
      const size_t piece = std::min<size_t>(len - off, rng() % 150);
      h.update(data.data() + off, piece);
      off += piece;
    }
    Digest d(azote::Sha256::kDigestBytes);
    h.finish(d.data());
    ASSERT_EQ(hex(d), hex(openssl(data.data(), len))) << "length " << len;
  }
}

TEST(Sha256, FinishResets) {
  azote::Sha256 h;
  h.update("abc", 3);
  Digest first(32), second(32);
  h.finish(first.data());
  h.update("abc", 3);
  h.finish(second.data());
  EXPECT_EQ(first, second);
}

TEST(Sha256, CpuStreamMatchesOpenSsl) {
  std::vector<uint8_t> buf(azote::cpu_stream::kBufferBytes);
  azote::cpu_stream::fill(buf.data());
  EXPECT_EQ(buf[0], 0);
  EXPECT_EQ(buf[1], 131);
  EXPECT_EQ(buf[4096], static_cast<uint8_t>(4096 * 131 + 1));
  for (uint64_t mib : {0, 1, 3}) {
    Digest d(32);
    azote::cpu_stream::hash(buf.data(), mib, d.data());
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    ASSERT_NE(ctx, nullptr);
    ASSERT_EQ(EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr), 1);
    for (uint64_t m = 0; m < mib; ++m) ASSERT_EQ(EVP_DigestUpdate(ctx, buf.data(), buf.size()), 1);
    Digest want(32);
    unsigned int n = 0;
    ASSERT_EQ(EVP_DigestFinal_ex(ctx, want.data(), &n), 1);
    EVP_MD_CTX_free(ctx);
    ASSERT_EQ(n, 32u);
    EXPECT_EQ(hex(d), hex(want)) << mib << " MiB";
  }
}

// Pinned so a change to the stream definition is noticed (the guest prints this
// digest for `cpu 16`; computed independently with Python's hashlib).
TEST(Sha256, CpuStream16MiBDigest) {
  std::vector<uint8_t> buf(azote::cpu_stream::kBufferBytes);
  azote::cpu_stream::fill(buf.data());
  Digest d(32);
  azote::cpu_stream::hash(buf.data(), 16, d.data());
  EXPECT_EQ(hex(d), "6cf88893832e8c3a4698fbc7e60b57776611861aa879763ab7b3c4f823f36af1");
}

}  // namespace
