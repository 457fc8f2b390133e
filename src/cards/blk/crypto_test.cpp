#include "cards/blk/crypto.hpp"

#include <gtest/gtest.h>
#include <openssl/evp.h>

#include <fstream>
#include <vector>

namespace azote::card_blk {
namespace {

std::vector<uint8_t> test_key() {
  std::vector<uint8_t> k(kXtsKeyBytes);
  for (size_t i = 0; i < k.size(); ++i) k[i] = static_cast<uint8_t>(i * 7 + 3);
  return k;
}

std::vector<uint8_t> pattern(size_t n, uint8_t seed) {
  std::vector<uint8_t> d(n);
  for (size_t i = 0; i < n; ++i) d[i] = static_cast<uint8_t>(seed + i * 13 + (i >> 9));
  return d;
}

// The reference: one EVP call per sector, written out independently of crypto.cpp.
std::vector<uint8_t> evp_xts(bool enc, const std::vector<uint8_t>& key, uint64_t sector, const std::vector<uint8_t>& in) {
  std::vector<uint8_t> out(in.size());
  for (size_t off = 0; off < in.size(); off += 512, ++sector) {
    uint8_t iv[16] = {};
    for (int i = 0; i < 8; ++i) iv[i] = static_cast<uint8_t>(sector >> (8 * i));
    EVP_CIPHER_CTX* c = EVP_CIPHER_CTX_new();
    int n = 0;
    EXPECT_EQ(EVP_CipherInit_ex(c, EVP_aes_256_xts(), nullptr, key.data(), iv, enc ? 1 : 0), 1);
    EXPECT_EQ(EVP_CipherUpdate(c, out.data() + off, &n, in.data() + off, 512), 1);
    EXPECT_EQ(n, 512);
    EVP_CIPHER_CTX_free(c);
  }
  return out;
}

TEST(Crypto, KnownAnswerAgainstDirectEvp) {
  const auto key = test_key();
  auto k = XtsKey::from_bytes(key);
  ASSERT_TRUE(k) << k.error().message();
  auto c = XtsCipher::create(*k);
  ASSERT_TRUE(c) << c.error().message();
  const auto plain = pattern(4096, 1);
  for (uint64_t sector : {0ull, 1ull, 255ull, 256ull, 0x123456789abcdefull, ~0ull - 8}) {
    std::vector<uint8_t> out(plain.size());
    ASSERT_TRUE((*c)->encrypt(sector, plain.data(), out.data(), out.size()));
    EXPECT_EQ(out, evp_xts(true, key, sector, plain)) << "sector " << sector;
  }
}

TEST(Crypto, RoundTripInPlaceAndCiphertextDiffers) {
  auto k = XtsKey::from_bytes(test_key());
  ASSERT_TRUE(k);
  auto c = XtsCipher::create(*k);
  ASSERT_TRUE(c);
  const auto plain = pattern(8192, 9);
  std::vector<uint8_t> buf = plain;
  ASSERT_TRUE((*c)->encrypt(1000, buf.data(), buf.data(), buf.size()));
  EXPECT_NE(buf, plain);
  // No 16-byte block of plaintext survives in the ciphertext.
  for (size_t i = 0; i < buf.size(); i += 16) EXPECT_NE(std::memcmp(buf.data() + i, plain.data() + i, 16), 0) << i;
  ASSERT_TRUE((*c)->decrypt(1000, buf.data(), buf.data(), buf.size()));
  EXPECT_EQ(buf, plain);
}

TEST(Crypto, TheSectorIsTheTweak) {
  auto k = XtsKey::from_bytes(test_key());
  ASSERT_TRUE(k);
  auto c = XtsCipher::create(*k);
  ASSERT_TRUE(c);
  const std::vector<uint8_t> zeros(512, 0);
  std::vector<uint8_t> a(512), b(512), w(512);
  ASSERT_TRUE((*c)->encrypt(7, zeros.data(), a.data(), 512));
  ASSERT_TRUE((*c)->encrypt(8, zeros.data(), b.data(), 512));
  EXPECT_NE(a, b);  // same plaintext, different sectors: different ciphertext
  ASSERT_TRUE((*c)->decrypt(8, a.data(), w.data(), 512));
  EXPECT_NE(w, zeros);  // decrypting at the wrong sector does not give the data back
  EXPECT_FALSE((*c)->encrypt(7, zeros.data(), a.data(), 100));  // not a whole sector
}

TEST(Crypto, BadKeysAreRefused) {
  auto short_key = XtsKey::from_bytes(std::vector<uint8_t>(63, 1));
  ASSERT_FALSE(short_key);
  EXPECT_EQ(short_key.error().code, CryptoErrc::kBadKey);
  EXPECT_NE(short_key.error().message().find("63 bytes"), std::string::npos);
  EXPECT_FALSE(XtsKey::from_bytes(std::vector<uint8_t>(65, 1)));
  std::vector<uint8_t> equal(64);
  for (size_t i = 0; i < 32; ++i) equal[i] = equal[i + 32] = static_cast<uint8_t>(i);
  auto e = XtsKey::from_bytes(equal);
  ASSERT_FALSE(e);
  EXPECT_NE(e.error().message().find("halves"), std::string::npos);
}

TEST(Crypto, KeyFiles) {
  const std::string dir = ::testing::TempDir();
  auto write = [&](const std::string& name, const std::vector<uint8_t>& bytes) {
    const std::string p = dir + "/" + name;
    std::ofstream(p, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()),  // NOLINT
                                             static_cast<std::streamsize>(bytes.size()));
    return p;
  };
  const auto key = test_key();
  const std::string good = write("card-blk-good.key", key);
  auto k = XtsKey::load(good);
  ASSERT_TRUE(k) << k.error().message();
  EXPECT_TRUE(std::equal(key.begin(), key.end(), k->bytes().begin()));
  // Moving keeps one owner.
  XtsKey moved = std::move(k).value();
  EXPECT_EQ(moved.bytes().size(), 64u);

  auto longer = key;
  longer.push_back(0);
  const std::string lp = write("card-blk-long.key", longer);
  auto l = XtsKey::load(lp);
  ASSERT_FALSE(l);
  EXPECT_NE(l.error().message().find(lp), std::string::npos);
  EXPECT_NE(l.error().message().find("longer than 64"), std::string::npos);
  const std::string sp = write("card-blk-short.key", std::vector<uint8_t>(key.begin(), key.begin() + 32));
  auto s = XtsKey::load(sp);
  ASSERT_FALSE(s);
  EXPECT_NE(s.error().message().find("32 bytes"), std::string::npos);
  auto m = XtsKey::load(dir + "/card-blk-missing.key");
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().code, CryptoErrc::kKeyFile);
  for (const auto& p : {good, lp, sp}) std::remove(p.c_str());
}

}  // namespace
}  // namespace azote::card_blk
