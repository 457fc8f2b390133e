// Signed release manifests: a round trip, every tampering refused before anything is
// trusted, binaries checked by descriptor, and the signature checked by openssl too.
#include "release/release.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <openssl/ec.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "base/unique_fd.hpp"
#include "pki/ossl.hpp"

namespace azote::release {
namespace {

struct KeyPem {
  std::string priv, pub;
};

KeyPem new_key() {
  pki::ossl::PkeyPtr k(EVP_EC_gen("P-384"));
  KeyPem out;
  pki::ossl::BioPtr a(BIO_new(BIO_s_mem())), b(BIO_new(BIO_s_mem()));
  PEM_write_bio_PrivateKey(a.get(), k.get(), nullptr, nullptr, 0, nullptr, nullptr);
  PEM_write_bio_PUBKEY(b.get(), k.get());
  char* p = nullptr;
  long n = BIO_get_mem_data(a.get(), &p);
  out.priv.assign(p, static_cast<size_t>(n));
  n = BIO_get_mem_data(b.get(), &p);
  out.pub.assign(p, static_cast<size_t>(n));
  return out;
}

Manifest sample() {
  Manifest m;
  m.release = "2026.12.07-test";
  m.files["azote-hv"] = std::string(96, 'a');
  m.files["azote-card-blk"] = std::string(96, 'b');
  return m;
}

TEST(Release, SignedManifestVerifiesWithItsKeyOnly) {
  const KeyPem k = new_key(), other = new_key();
  ASSERT_FALSE(k.priv.empty());
  auto text = sign(sample(), k.priv);
  ASSERT_TRUE(text.ok()) << text.error().message();
  auto m = verify(*text, k.pub);
  ASSERT_TRUE(m.ok()) << m.error().message();
  EXPECT_EQ(m->release, "2026.12.07-test");
  EXPECT_EQ(m->files, sample().files);
  auto wrong = verify(*text, other.pub);
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.error().code, ReleaseErrc::kSignature);
}

TEST(Release, EveryTamperingIsRefused) {
  const KeyPem k = new_key();
  auto text = sign(sample(), k.priv);
  ASSERT_TRUE(text.ok());
  const auto j = nlohmann::json::parse(*text);
  struct Case {
    const char* what;
    std::function<void(nlohmann::json&)> change;
    ReleaseErrc code;
  };
  const std::vector<Case> cases = {
      {"a digest", [](auto& x) { x["files"]["azote-hv"] = std::string(95, 'a') + "b"; }, ReleaseErrc::kSignature},
      {"the release name", [](auto& x) { x["release"] = "2026.12.08"; }, ReleaseErrc::kSignature},
      {"a file added", [](auto& x) { x["files"]["azote-card-net"] = std::string(96, 'c'); }, ReleaseErrc::kSignature},
      {"a file removed", [](auto& x) { x["files"].erase("azote-card-blk"); }, ReleaseErrc::kSignature},
      {"the signature", [](auto& x) {
         std::string s = x["signature"];
         s[20] = s[20] == '0' ? '1' : '0';
         x["signature"] = s;
       }, ReleaseErrc::kSignature},
      {"an extra key", [](auto& x) { x["note"] = "trust me"; }, ReleaseErrc::kFormat},
      {"the format", [](auto& x) { x["format"] = "azote-release-manifest/2"; }, ReleaseErrc::kFormat},
      {"an uppercase digest", [](auto& x) { x["files"]["azote-hv"] = std::string(96, 'A'); }, ReleaseErrc::kFormat},
      {"a short digest", [](auto& x) { x["files"]["azote-hv"] = std::string(64, 'a'); }, ReleaseErrc::kFormat},
      {"a path as a name", [](auto& x) { x["files"]["../azote-hv"] = std::string(96, 'a'); }, ReleaseErrc::kFormat},
      {"no signature", [](auto& x) { x.erase("signature"); }, ReleaseErrc::kFormat},
  };
  for (const auto& c : cases) {
    auto changed = j;
    c.change(changed);
    auto r = verify(changed.dump(), k.pub);
    ASSERT_FALSE(r.ok()) << c.what << " was accepted";
    EXPECT_EQ(r.error().code, c.code) << c.what << ": " << r.error().message();
  }
  EXPECT_EQ(verify("not json", k.pub).error().code, ReleaseErrc::kFormat);
  EXPECT_EQ(verify(*text, "not a key").error().code, ReleaseErrc::kFormat);
}

// The signature is plain ECDSA-SHA384 over the canonical bytes: openssl agrees.
TEST(Release, OpensslVerifiesTheSignatureOverTheCanonicalBytes) {
  if (::access("/usr/bin/openssl", X_OK) != 0) GTEST_SKIP() << "SKIPPED: no /usr/bin/openssl";
  const KeyPem k = new_key();
  auto text = sign(sample(), k.priv);
  ASSERT_TRUE(text.ok());
  const std::string dir = ::testing::TempDir() + "azote-release-" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/pub.pem") << k.pub;
  std::ofstream(dir + "/msg", std::ios::binary) << canonical(sample());
  const std::string sig_hex = nlohmann::json::parse(*text)["signature"];
  std::string sig;
  for (size_t i = 0; i < sig_hex.size(); i += 2) sig += static_cast<char>(std::stoi(sig_hex.substr(i, 2), nullptr, 16));
  std::ofstream(dir + "/sig", std::ios::binary) << sig;
  const int st = std::system(("/usr/bin/openssl dgst -sha384 -verify " + dir + "/pub.pem -signature " + dir + "/sig " +
                              dir + "/msg > /dev/null 2>&1").c_str());
  EXPECT_EQ(WEXITSTATUS(st), 0);
  std::filesystem::remove_all(dir);
}

TEST(Release, BinariesAreCheckedThroughTheirDescriptor) {
  const std::string path = ::testing::TempDir() + "azote-release-bin-" + std::to_string(::getpid());
  std::ofstream(path) << "a binary";
  auto digest = sha384_file(path);
  ASSERT_TRUE(digest.ok()) << digest.error().message();
  EXPECT_EQ(digest->size(), 96u);
  Manifest m = sample();
  m.files["azote-hv"] = *digest;
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(fd.valid());
  EXPECT_TRUE(check(m, "azote-hv", fd.get()).ok());
  auto missing = check(m, "azote-card-net", fd.get());
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, ReleaseErrc::kNotInRelease);
  std::ofstream(path, std::ios::app) << "!";
  auto changed = check(m, "azote-hv", fd.get());
  ASSERT_FALSE(changed.ok());
  EXPECT_EQ(changed.error().code, ReleaseErrc::kMismatch);
  EXPECT_NE(changed.error().message().find("azote-hv"), std::string::npos);
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace azote::release
