// DICE layering: identities are a pure function of the UDS and the measurements below
// them (property test over random one-byte changes), and the certificates form a chain
// that a verifier nobody here wrote (`openssl verify`, `openssl dgst -verify`) accepts.
#include "dice/dice.hpp"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "pki/ossl.hpp"

namespace azote::dice {
namespace {

constexpr int64_t kNotBefore = 1796601600;  // 2026-12-07T00:00:00Z

Digest random_digest(std::mt19937_64& rng) {
  Digest d{};
  for (auto& b : d) b = static_cast<uint8_t>(rng());
  return d;
}

Secret random_secret(std::mt19937_64& rng) {
  const Digest d = random_digest(rng);
  return Secret(d);
}

std::vector<LayerInput> random_layers(std::mt19937_64& rng, size_t n) {
  static const char* kNames[] = {"azote-rot", "azote-launcher", "azote-controller", "azote-hv", "azote-card-blk"};
  std::vector<LayerInput> out;
  for (size_t i = 0; i < n; ++i) out.push_back({kNames[i % 5], random_digest(rng), random_digest(rng), Mode::kNormal});
  return out;
}

// Runs a shell command; returns its exit status and stdout+stderr.
std::pair<int, std::string> shell(const std::string& cmd) {
  std::string out;
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  if (p == nullptr) return {-1, "popen failed"};
  char buf[512];
  while (size_t n = std::fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  const int st = ::pclose(p);
  return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, out};
}

class DiceFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "azote-dice-" + std::to_string(::getpid()) + "-" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override {
    if (!HasFailure()) std::filesystem::remove_all(dir_);
  }
  std::string write(const std::string& name, const std::string& data) {
    const std::string p = dir_ + "/" + name;
    std::ofstream(p, std::ios::binary) << data;
    return p;
  }
  std::string dir_;
};

TEST(Dice, SameInputsGiveTheSameIdentities) {
  std::mt19937_64 rng(7);
  const Secret uds = random_secret(rng);
  const auto layers = random_layers(rng, 3);
  auto a = Chain::build(uds, layers, kNotBefore);
  auto b = Chain::build(uds, layers, kNotBefore);
  ASSERT_TRUE(a.ok()) << a.error().message();
  ASSERT_TRUE(b.ok()) << b.error().message();
  ASSERT_EQ(a->layers().size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_TRUE(a->layers()[i].cdi == b->layers()[i].cdi) << i;
    EXPECT_EQ(a->layers()[i].key.public_der(), b->layers()[i].key.public_der()) << i;
  }
  EXPECT_EQ(a->layers()[0].name, "device");
  EXPECT_TRUE(a->layers()[0].cdi == uds) << "layer 0's CDI is the UDS";
  // Distinct layers have distinct identities.
  for (size_t i = 1; i < 4; ++i) EXPECT_NE(a->layers()[i].key.public_der(), a->layers()[i - 1].key.public_der());
}

// The property of DICE the issue asks for: any one-byte change in any layer's code,
// config or mode changes that layer's CDI and key and every layer's above it, and no
// layer's below it. 60 random changes (layer, field, byte, bit) of a 4-layer chain.
TEST(Dice, AnyOneByteChangeChangesThatLayerAndEveryLayerAboveOnly) {
  std::mt19937_64 rng(20261207);
  const Secret uds = random_secret(rng);
  const auto base_inputs = random_layers(rng, 4);
  auto base = Chain::build(uds, base_inputs, kNotBefore);
  ASSERT_TRUE(base.ok()) << base.error().message();
  for (int trial = 0; trial < 60; ++trial) {
    auto inputs = base_inputs;
    const size_t k = rng() % inputs.size();  // input k is chain layer k + 1
    const int field = static_cast<int>(rng() % 3);
    const size_t byte = rng() % kDigestBytes;
    const uint8_t bit = static_cast<uint8_t>(1u << (rng() % 8));
    std::string what = "layer " + std::to_string(k + 1);
    if (field == 0) {
      inputs[k].code[byte] ^= bit;
      what += " code byte " + std::to_string(byte);
    } else if (field == 1) {
      inputs[k].config[byte] ^= bit;
      what += " config byte " + std::to_string(byte);
    } else {
      inputs[k].mode = inputs[k].mode == Mode::kNormal ? Mode::kDebug : Mode::kNormal;
      what += " mode";
    }
    auto changed = Chain::build(uds, inputs, kNotBefore);
    ASSERT_TRUE(changed.ok()) << changed.error().message();
    for (size_t i = 0; i < changed->layers().size(); ++i) {
      const bool same_cdi = changed->layers()[i].cdi == base->layers()[i].cdi;
      const bool same_key = changed->layers()[i].key.public_der() == base->layers()[i].key.public_der();
      if (i <= k) {
        EXPECT_TRUE(same_cdi && same_key) << what << ": layer " << i << " (below) changed";
      } else {
        EXPECT_FALSE(same_cdi) << what << ": layer " << i << "'s CDI did not change";
        EXPECT_FALSE(same_key) << what << ": layer " << i << "'s key did not change";
      }
    }
  }
  // And a one-bit change of the UDS changes every layer, the device's included.
  Digest d{};
  std::copy(uds.bytes().begin(), uds.bytes().end(), d.begin());
  d[rng() % kDigestBytes] ^= 1;
  auto other = Chain::build(Secret(d), base_inputs, kNotBefore);
  ASSERT_TRUE(other.ok());
  for (size_t i = 0; i < other->layers().size(); ++i)
    EXPECT_NE(other->layers()[i].key.public_der(), base->layers()[i].key.public_der()) << i;
}

TEST(Dice, BadInputsAreRefusedByName) {
  std::mt19937_64 rng(1);
  const Secret uds = random_secret(rng);
  auto none = Chain::build(uds, {}, kNotBefore);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.error().code, DiceErrc::kInvalid);
  for (const std::string& bad : {std::string(), std::string(65, 'a'), std::string("azote hv"), std::string("a\nb=c")}) {
    std::vector<LayerInput> layers{{"azote-hv", random_digest(rng), random_digest(rng), Mode::kNormal},
                                   {bad, random_digest(rng), random_digest(rng), Mode::kNormal}};
    auto r = Chain::build(uds, layers, kNotBefore);
    ASSERT_FALSE(r.ok()) << "\"" << bad << "\" accepted";
    EXPECT_NE(r.error().message().find("layer 2"), std::string::npos) << r.error().message();
  }
}

// `openssl verify` (a verifier nobody here wrote) accepts the chain from the device's
// self-signed certificate down to the attestation key's, and refuses it against another
// device's root; the attestation key's signature verifies with `openssl dgst`.
TEST_F(DiceFiles, OpensslVerifiesTheChainAndTheAttestationKeysSignature) {
  if (::access("/usr/bin/openssl", X_OK) != 0) GTEST_SKIP() << "SKIPPED: no /usr/bin/openssl";
  std::mt19937_64 rng(42);
  const Secret uds = random_secret(rng);
  auto chain = Chain::build(uds, random_layers(rng, 3), kNotBefore);
  ASSERT_TRUE(chain.ok()) << chain.error().message();
  const auto& L = chain->layers();
  const std::string root = write("root.pem", L[0].cert_pem);
  const std::string inter = write("inter.pem", L[1].cert_pem + L[2].cert_pem);
  const std::string leaf = write("leaf.pem", L[3].cert_pem);
  auto [st, out] = shell("/usr/bin/openssl verify -x509_strict -CAfile " + root + " -untrusted " + inter + " " + leaf);
  EXPECT_EQ(st, 0) << out;
  EXPECT_NE(out.find(": OK"), std::string::npos) << out;

  auto other = Chain::build(random_secret(rng), random_layers(rng, 3), kNotBefore);
  ASSERT_TRUE(other.ok());
  const std::string other_root = write("other-root.pem", other->layers()[0].cert_pem);
  std::tie(st, out) = shell("/usr/bin/openssl verify -CAfile " + other_root + " -untrusted " + inter + " " + leaf);
  EXPECT_NE(st, 0) << "a chain verified against another device's root:\n" << out;

  // The leaf is not a CA: a certificate it signed would not verify (checked by openssl
  // on the text form), the others are.
  std::tie(st, out) = shell("/usr/bin/openssl x509 -noout -text -in " + leaf);
  ASSERT_EQ(st, 0) << out;
  EXPECT_NE(out.find("CA:FALSE"), std::string::npos) << out;
  EXPECT_NE(out.find("2.23.133.5.4.1"), std::string::npos) << "no DiceTcbInfo extension:\n" << out;
  EXPECT_NE(out.find("azote DICE layer 3: azote-controller"), std::string::npos) << out;
  std::tie(st, out) = shell("/usr/bin/openssl x509 -noout -text -in " + root);
  EXPECT_NE(out.find("CA:TRUE"), std::string::npos) << out;

  const std::string msg = "attestation document payload";
  auto sig = chain->attestation_key().sign(std::span(reinterpret_cast<const uint8_t*>(msg.data()), msg.size()));
  ASSERT_TRUE(sig.ok()) << sig.error().message();
  write("msg", msg);
  write("sig", std::string(sig->begin(), sig->end()));
  std::tie(st, out) = shell("/usr/bin/openssl x509 -pubkey -noout -in " + leaf + " > " + dir_ + "/leaf.pub");
  ASSERT_EQ(st, 0) << out;
  std::tie(st, out) = shell("/usr/bin/openssl dgst -sha384 -verify " + dir_ + "/leaf.pub -signature " + dir_ + "/sig " +
                            dir_ + "/msg");
  EXPECT_EQ(st, 0) << out;
  EXPECT_NE(out.find("Verified OK"), std::string::npos) << out;
  write("msg", msg + "!");
  std::tie(st, out) = shell("/usr/bin/openssl dgst -sha384 -verify " + dir_ + "/leaf.pub -signature " + dir_ + "/sig " +
                            dir_ + "/msg");
  EXPECT_NE(st, 0) << "a changed message verified: " << out;
}

// The DiceTcbInfo extension carries the layer's measurement as a SHA-384 FWID, and the
// debug flag (OperationalFlags bit 3) exactly when the layer is in development mode.
TEST(Dice, TcbInfoCarriesTheMeasurementAndTheDebugFlag) {
  std::mt19937_64 rng(3);
  auto layers = random_layers(rng, 2);
  layers[1].mode = Mode::kDebug;
  auto chain = Chain::build(random_secret(rng), layers, kNotBefore);
  ASSERT_TRUE(chain.ok()) << chain.error().message();
  for (size_t i = 1; i < chain->layers().size(); ++i) {
    const Layer& l = chain->layers()[i];
    EXPECT_EQ(l.measurement, measure(layers[i - 1]));
    auto cert = pki::ossl::parse_cert(l.cert_pem);
    ASSERT_TRUE(cert);
    ASN1_OBJECT* oid = OBJ_txt2obj("2.23.133.5.4.1", 1);
    const int at = X509_get_ext_by_OBJ(cert.get(), oid, -1);
    ASN1_OBJECT_free(oid);
    ASSERT_GE(at, 0) << "layer " << i << " has no DiceTcbInfo";
    X509_EXTENSION* ext = X509_get_ext(cert.get(), at);
    EXPECT_EQ(X509_EXTENSION_get_critical(ext), 0);
    const ASN1_OCTET_STRING* v = X509_EXTENSION_get_data(ext);
    const std::string der(reinterpret_cast<const char*>(ASN1_STRING_get0_data(v)), static_cast<size_t>(ASN1_STRING_length(v)));
    const std::string m(reinterpret_cast<const char*>(l.measurement.data()), l.measurement.size());
    EXPECT_NE(der.find(m), std::string::npos) << "layer " << i << ": the measurement is not in its DiceTcbInfo";
    EXPECT_NE(der.find(l.name), std::string::npos);
    // [7] IMPLICIT BIT STRING, 2 bytes: 4 unused bits, 0x10 (bit 3, debug).
    const std::string debug_flag("\x87\x02\x04\x10", 4);
    EXPECT_EQ(der.find(debug_flag) != std::string::npos, l.mode == Mode::kDebug) << "layer " << i;
  }
}

}  // namespace
}  // namespace azote::dice
