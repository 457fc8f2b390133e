// azote-kms, the real binary, with a real azote-rot signing the attestation documents:
// only the holder of the private key whose public half an attested document carries
// gets a data key (RSA-OAEP-SHA-256 decrypted here), and every forged, stale, replayed,
// debug-mode or policy-denied request is refused with its reason, each one in the
// signed audit log that `azote audit verify` accepts.
#include <gtest/gtest.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "control/control.hpp"
#include "process.hpp"

namespace azote::test {
namespace {

using namespace std::chrono_literals;
using control::Json;
using Bytes = std::vector<uint8_t>;

const std::string kRot = AZOTE_ROT_BIN;
const std::string kKms = AZOTE_KMS_BIN;
const std::string kCli = AZOTE_CLI_BIN;

struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using Pkey = std::unique_ptr<EVP_PKEY, PkeyFree>;

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}
std::string hex(const Bytes& b) {
  static const char* d = "0123456789abcdef";
  std::string s;
  for (uint8_t x : b) {
    s += d[x >> 4];
    s += d[x & 15];
  }
  return s;
}
Bytes unhex(const std::string& h) {
  Bytes b;
  for (size_t i = 0; i + 1 < h.size(); i += 2) b.push_back(static_cast<uint8_t>(std::stoi(h.substr(i, 2), nullptr, 16)));
  return b;
}
std::string b64(const Bytes& b) {
  std::string out(4 * ((b.size() + 2) / 3) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), b.data(), static_cast<int>(b.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}
Bytes unb64(const std::string& s) {
  Bytes out(s.size());
  const int n = EVP_DecodeBlock(out.data(), reinterpret_cast<const unsigned char*>(s.data()), static_cast<int>(s.size()));
  if (n < 0) return {};
  size_t pad = 0;
  while (pad < s.size() && s[s.size() - 1 - pad] == '=') ++pad;
  out.resize(static_cast<size_t>(n) - pad);
  return out;
}
Bytes spki(EVP_PKEY* k) {
  unsigned char* der = nullptr;
  const int n = i2d_PUBKEY(k, &der);
  Bytes out(der, der + n);
  OPENSSL_free(der);
  return out;
}
// What only the private key's holder can do.
Bytes oaep_decrypt(EVP_PKEY* priv, const Bytes& c) {
  std::unique_ptr<EVP_PKEY_CTX, void (*)(EVP_PKEY_CTX*)> ctx(EVP_PKEY_CTX_new(priv, nullptr), EVP_PKEY_CTX_free);
  size_t n = 0;
  if (!ctx || EVP_PKEY_decrypt_init(ctx.get()) != 1 || EVP_PKEY_CTX_set_rsa_padding(ctx.get(), RSA_PKCS1_OAEP_PADDING) != 1 ||
      EVP_PKEY_CTX_set_rsa_oaep_md(ctx.get(), EVP_sha256()) != 1 || EVP_PKEY_CTX_set_rsa_mgf1_md(ctx.get(), EVP_sha256()) != 1 ||
      EVP_PKEY_decrypt(ctx.get(), nullptr, &n, c.data(), c.size()) != 1)
    return {};
  Bytes out(n);
  if (EVP_PKEY_decrypt(ctx.get(), out.data(), &n, c.data(), c.size()) != 1) return {};
  out.resize(n);
  return out;
}

const std::string kPcr0 = std::string(48, 'a') + std::string(48, 'B');  // mixed case on purpose
const std::string kPcr4(96, '4');

class Kms : public ::testing::Test {
 protected:
  void SetUp() override {
    // Short: socket paths must fit in 108 bytes.
    dir_ = ::testing::TempDir() + "azote-kms-" + std::to_string(::getpid()) + "-" +
           std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()).substr(0, 12);
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    std::ofstream(path("launcher.bin")) << "the launcher's code";
    std::ofstream(path("hv.bin")) << "the hypervisor's code";
    key_.reset(EVP_RSA_gen(2048));
    ASSERT_TRUE(key_);
  }
  void TearDown() override {
    for (auto* p : {&kms_, &rot_}) {
      if (*p) {
        (*p)->signal(SIGTERM);
        (*p)->wait(10s);
      }
    }
    if (!HasFailure()) std::filesystem::remove_all(dir_);
  }
  std::string path(const std::string& n) const { return dir_ + "/" + n; }

  // An azote-rot on `ctl` (its state in `state`); returns its root certificate's PEM.
  std::string start_rot(std::unique_ptr<Process>& p, const std::string& state, const std::string& ctl,
                        std::vector<std::string> extra = {}) {
    std::vector<std::string> a{kRot, "--state-dir", path(state), "--layer", "azote-launcher=" + path("launcher.bin"),
                               "--layer", "azote-hv=" + path("hv.bin"), "--control", path(ctl)};
    a.insert(a.end(), extra.begin(), extra.end());
    p = std::make_unique<Process>(a);
    EXPECT_TRUE(p->wait_for_output("\"layers\"", 15s)) << p->wait(1s).err;
    auto d = control::call_once(path(ctl), {{"op", "describe"}}, 5s);
    EXPECT_TRUE(d.ok()) << d.error().message();
    return d.ok() ? (*d)["layers"][0]["certificate"].get<std::string>() : std::string();
  }
  void start(const std::vector<std::string>& extra = {}) {
    std::ofstream(path("root.pem")) << start_rot(rot_, "rot", "rot.ctl");
    std::vector<std::string> a{kKms,         "--state-dir", path("kms"), "--root", path("root.pem"), "--listen",
                               path("kms.sock"), "--admin", path("kms-admin.sock"), "--audit", path("audit")};
    a.insert(a.end(), extra.begin(), extra.end());
    kms_ = std::make_unique<Process>(a);
    ASSERT_TRUE(kms_->wait_for_output("azote-kms: ready", 20s)) << kms_->wait(1s).err;
  }
  std::string create_key(const Json& policy) {
    std::ofstream(path("policy.json")) << policy.dump(2);
    const Outcome o = run({kKms, "create-key", "--state-dir", path("kms"), "--policy", path("policy.json")}, 30s);
    EXPECT_EQ(o.status, 0) << o.err;
    std::string id = o.out;
    while (!id.empty() && id.back() == '\n') id.pop_back();
    return id;
  }
  // A document from azote-rot's `attest` op.
  Bytes document(const std::string& ctl, const std::string& nonce, const std::optional<Bytes>& public_key,
                 const std::string& pcr0 = kPcr0) {
    Json req = {{"op", "attest"}, {"module_id", "i-0123456789abcdef0-enc0123456789abcdef"},
                {"pcrs", {{"0", pcr0}, {"1", std::string(96, '1')}, {"4", kPcr4}}}, {"nonce", nonce}};
    if (public_key) req["public_key"] = hex(*public_key);
    auto r = control::call_once(path(ctl), req, 5s);
    EXPECT_TRUE(r.ok()) << r.error().message();
    return r.ok() ? unhex((*r)["document"].get<std::string>()) : Bytes();
  }
  Bytes document(const std::string& nonce) { return document("rot.ctl", nonce, spki(key_.get())); }
  Json recipient(const Bytes& doc) {
    return {{"AttestationDocument", b64(doc)}, {"KeyEncryptionAlgorithm", "RSAES_OAEP_SHA_256"}};
  }
  // One request; the answer, {"ok": false, "error": ...} included.
  Json ask(const Json& req, const std::string& socket = "kms.sock") {
    auto r = control::call_once(path(socket), req, 10s);
    if (r.ok()) return *r;
    return {{"ok", false}, {"error", r.error().context}};
  }
  std::vector<Json> audit_records() {
    std::vector<Json> out;
    std::ifstream f(path("audit/audit.log"));
    for (std::string line; std::getline(f, line);) out.push_back(Json::parse(line, nullptr, false));
    return out;
  }

  std::string dir_;
  Pkey key_;
  std::unique_ptr<Process> rot_, kms_;
};

Json image_policy() {
  return {{"Version", "2012-10-17"},
          {"Statement",
           {{{"Sid", "EnclaveImage"},
             {"Effect", "Allow"},
             {"Principal", {{"AWS", "*"}}},
             {"Action", {"kms:Decrypt", "kms:GenerateDataKey"}},
             {"Resource", "*"},
             {"Condition",
              {{"StringEqualsIgnoreCase",
                {{"kms:RecipientAttestation:ImageSha384", kPcr0}, {"kms:RecipientAttestation:PCR4", kPcr4}}}}}}}}};
}

TEST_F(Kms, OnlyTheHolderOfTheAttestedKeyGetsTheDataKey) {
  const std::string key = create_key(image_policy());
  ASSERT_EQ(key.size(), 20u) << key;
  ASSERT_EQ(key.rfind("key-", 0), 0u);
  start();
  // Under its seccomp filter from here on.
  const std::string status = slurp("/proc/" + std::to_string(kms_->pid()) + "/status");
  EXPECT_NE(status.find("Seccomp:\t2"), std::string::npos) << status;

  const Json g = ask({{"op", "GenerateDataKey"}, {"KeyId", key}, {"Recipient", recipient(document("a1b2c3d4e5f60001"))}});
  ASSERT_EQ(g.value("ok", false), true) << g.dump();
  EXPECT_EQ(g["KeyId"], key);
  EXPECT_FALSE(g.contains("Plaintext")) << g.dump();
  const Bytes for_recipient = unb64(g["CiphertextForRecipient"].get<std::string>());
  EXPECT_EQ(for_recipient.size(), 256u);
  const Bytes data_key = oaep_decrypt(key_.get(), for_recipient);
  ASSERT_EQ(data_key.size(), 32u);
  // Another key pair cannot open it.
  Pkey other(EVP_RSA_gen(2048));
  EXPECT_TRUE(oaep_decrypt(other.get(), for_recipient).empty());

  // The parent stores CiphertextBlob and later sends it back with a fresh document.
  const Json d = ask({{"op", "Decrypt"}, {"CiphertextBlob", g["CiphertextBlob"]},
                      {"Recipient", recipient(document("a1b2c3d4e5f60002"))}});
  ASSERT_EQ(d.value("ok", false), true) << d.dump();
  EXPECT_EQ(d["KeyId"], key);
  EXPECT_FALSE(d.contains("Plaintext"));
  EXPECT_EQ(oaep_decrypt(key_.get(), unb64(d["CiphertextForRecipient"].get<std::string>())), data_key);
  // The same data key, wrapped to whatever key the new document carries.
  const Json d2 = ask({{"op", "Decrypt"}, {"CiphertextBlob", g["CiphertextBlob"]},
                       {"Recipient", recipient(document("rot.ctl", "a1b2c3d4e5f60003", spki(other.get())))}});
  ASSERT_EQ(d2.value("ok", false), true) << d2.dump();
  EXPECT_EQ(oaep_decrypt(other.get(), unb64(d2["CiphertextForRecipient"].get<std::string>())), data_key);

  kms_->signal(SIGTERM);
  const Outcome o = kms_->wait(10s);
  kms_.reset();
  EXPECT_EQ(o.status, 0) << o.err;
  EXPECT_EQ(o.err.find("seccomp"), std::string::npos) << o.err;
  EXPECT_FALSE(std::filesystem::exists(path("kms.sock")));
  const Outcome v = run({kCli, "audit", "verify", path("audit/audit.log")});
  EXPECT_EQ(v.status, 0) << v.out << v.err;
  const auto records = audit_records();
  ASSERT_EQ(records.size(), 4u);
  EXPECT_EQ(records[0]["method"], "kms.start");
  EXPECT_EQ(records[0]["resources"][0], key);
  for (size_t i = 1; i < 4; ++i) {
    EXPECT_EQ(records[i]["outcome"], "allowed") << records[i].dump();
    EXPECT_EQ(records[i]["principal"], "i-0123456789abcdef0-enc0123456789abcdef");
    EXPECT_EQ(records[i]["detail"]["pcr0"], std::string(48, 'a') + std::string(48, 'b'));
    EXPECT_EQ(records[i]["detail"]["pcrs"]["4"], kPcr4);
    EXPECT_EQ(records[i]["detail"]["module_id"], "i-0123456789abcdef0-enc0123456789abcdef");
    EXPECT_EQ(records[i]["resources"][0], key);
    EXPECT_EQ(records[i].dump().find(hex(data_key)), std::string::npos) << "the data key is in the audit log";
  }
  EXPECT_EQ(records[1]["method"], "kms.GenerateDataKey");
  EXPECT_EQ(records[2]["method"], "kms.Decrypt");
}

TEST_F(Kms, ForgedStaleReplayedDebugAndDeniedRequestsAreRefusedWithTheirReasonsAndAudited) {
  const std::string key = create_key(image_policy());
  start({"--max-age", "3"});
  // A second key over the admin socket, whose policy explicitly denies this PCR4.
  Json deny_policy = image_policy();
  deny_policy["Statement"].push_back({{"Sid", "NotThisParent"}, {"Effect", "Deny"}, {"Action", "kms:*"},
                                      {"Condition", {{"StringEquals", {{"kms:RecipientAttestation:PCR4", kPcr4}}}}}});
  const Json created = ask({{"op", "CreateKey"}, {"Policy", deny_policy}}, "kms-admin.sock");
  ASSERT_EQ(created.value("ok", false), true) << created.dump();
  const std::string denied_key = created["KeyId"];
  const Json listed = ask({{"op", "ListKeys"}}, "kms-admin.sock");
  ASSERT_EQ(listed["Keys"].size(), 2u) << listed.dump();
  EXPECT_EQ(ask({{"op", "GetKeyPolicy"}, {"KeyId", denied_key}}, "kms-admin.sock")["Policy"], deny_policy);
  EXPECT_EQ(ask({{"op", "CreateKey"}, {"Policy", image_policy()}}).value("error", ""),
            "UnsupportedOperationException: op \"CreateKey\" is not GenerateDataKey or Decrypt");

  std::vector<std::pair<std::string, std::string>> expected;  // error substring, audited
  auto refused = [&](const Json& req, const std::string& error) {
    const Json r = ask(req);
    EXPECT_EQ(r.value("ok", true), false) << error << ": " << r.dump();
    EXPECT_NE(r.value("error", "").find(error), std::string::npos) << r.dump();
    expected.push_back({error, r.value("error", "")});
  };
  auto gdk = [&](const Bytes& doc, const std::string& k) {
    return Json{{"op", "GenerateDataKey"}, {"KeyId", k}, {"Recipient", recipient(doc)}};
  };

  // A good one first, whose document then is replayed.
  const Bytes good = document("00000000000000000001");
  const Json g = ask(gdk(good, key));
  ASSERT_EQ(g.value("ok", false), true) << g.dump();
  refused(gdk(good, key), "AccessDeniedException: the attestation document's nonce was already used: a replayed document");
  // No recipient: no plaintext, ever.
  refused({{"op", "GenerateDataKey"}, {"KeyId", key}},
          "ValidationException: a recipient attestation document is required; this service never returns plaintext keys");
  refused({{"op", "Decrypt"}, {"CiphertextBlob", g["CiphertextBlob"]}}, "a recipient attestation document is required");
  // Another device's root.
  std::unique_ptr<Process> other;
  start_rot(other, "other-rot", "other.ctl");
  refused(gdk(document("other.ctl", "00000000000000000002", spki(key_.get())), key),
          "AccessDeniedException: the attestation document's certificate chain does not lead to the pinned root");
  other->signal(SIGTERM);
  other->wait(10s);
  // A byte of the payload changed (the module id, in the clear in the CBOR).
  Bytes tampered = document("00000000000000000003");
  const std::string id = "i-0123456789abcdef0";
  auto at = std::search(tampered.begin(), tampered.end(), id.begin(), id.end());
  ASSERT_NE(at, tampered.end());
  at[5] ^= 1;
  refused(gdk(tampered, key), "AccessDeniedException: the attestation document's signature does not verify");
  // The same device in development mode: a debug enclave's document, every PCR zero.
  std::unique_ptr<Process> dev;
  // (Its device certificate has the same subject and key, so its documents chain to the
  // pinned root: the refusal below comes after the chain and the signature passed.)
  EXPECT_FALSE(start_rot(dev, "rot", "dev.ctl", {"--mode", "development"}).empty());
  refused(gdk(document("dev.ctl", "00000000000000000004", spki(key_.get())), key),
          "AccessDeniedException: every PCR of the attestation document is zero");
  dev->signal(SIGTERM);
  dev->wait(10s);
  // The public key: missing, too short, not RSA.
  refused(gdk(document("rot.ctl", "00000000000000000005", std::nullopt), key), "the attestation document has no public_key");
  Pkey short_key(EVP_RSA_gen(1024));
  refused(gdk(document("rot.ctl", "00000000000000000006", spki(short_key.get())), key),
          "public_key is an RSA key of 1024 bits, outside 2048..4096");
  Pkey ec(EVP_EC_gen("P-384"));
  refused(gdk(document("rot.ctl", "00000000000000000007", spki(ec.get())), key), "public_key is not an RSA key");
  // Policies: another image; an explicit Deny; a key that does not exist.
  refused(gdk(document("rot.ctl", "00000000000000000008", spki(key_.get()), std::string(96, 'c')), key),
          "AccessDeniedException: no statement of the key policy allows kms:GenerateDataKey for this recipient (statement 0 "
          "(Sid \"EnclaveImage\"): StringEqualsIgnoreCase kms:RecipientAttestation:ImageSha384 does not match");
  refused(gdk(document("00000000000000000009"), denied_key),
          "AccessDeniedException: statement 1 (Sid \"NotThisParent\") of the key policy explicitly denies kms:GenerateDataKey");
  refused(gdk(document("0000000000000000000a"), "key-0123456789abcdef"),
          "NotFoundException: key key-0123456789abcdef does not exist");
  // A changed CiphertextBlob.
  Bytes blob = unb64(g["CiphertextBlob"].get<std::string>());
  blob[blob.size() - 20] ^= 1;
  refused({{"op", "Decrypt"}, {"CiphertextBlob", b64(blob)}, {"Recipient", recipient(document("0000000000000000000b"))}},
          "InvalidCiphertextException: the CiphertextBlob does not decrypt under its key");
  // A document older than --max-age.
  const Bytes old = document("0000000000000000000c");
  std::this_thread::sleep_for(3500ms);
  refused(gdk(old, key), "AccessDeniedException: the attestation document is stale");

  kms_->signal(SIGTERM);
  const Outcome o = kms_->wait(10s);
  kms_.reset();
  EXPECT_EQ(o.status, 0) << o.err;
  EXPECT_EQ(o.err.find("seccomp"), std::string::npos) << o.err;
  const Outcome v = run({kCli, "audit", "verify", path("audit/audit.log")});
  EXPECT_EQ(v.status, 0) << v.out << v.err;
  EXPECT_NE(v.out.find("ok: "), std::string::npos) << v.out;

  // kms.start, CreateKey, ListKeys, GetKeyPolicy, the unsupported op, the good one,
  // then each refusal in order.
  const auto records = audit_records();
  constexpr size_t kFirst = 6;
  ASSERT_EQ(records.size(), kFirst + expected.size());
  EXPECT_EQ(records[1]["method"], "kms.CreateKey");
  EXPECT_EQ(records[1]["principal"], "admin");
  EXPECT_EQ(records[1]["resources"][0], denied_key);
  EXPECT_EQ(records[2]["method"], "kms.ListKeys");
  EXPECT_EQ(records[4]["method"], "kms.unsupported");
  EXPECT_EQ(records[5]["outcome"], "allowed");
  for (size_t i = 0; i < expected.size(); ++i) {
    const Json& r = records[kFirst + i];
    EXPECT_EQ(r["outcome"], "denied") << r.dump();
    EXPECT_EQ(r["error"], expected[i].second) << r.dump();
  }
  // What the refused documents claimed is recorded, marked as refused.
  const Json& debug = records[kFirst + 5];
  EXPECT_EQ(debug["detail"]["document"], "refused") << debug.dump();
  EXPECT_EQ(debug["detail"]["pcr0"], std::string(96, '0'));
  EXPECT_EQ(debug["principal"], "");
  const Json& explicit_deny = records[kFirst + 10];
  EXPECT_EQ(explicit_deny["detail"]["document"], "verified") << explicit_deny.dump();
  EXPECT_EQ(explicit_deny["resources"][0], denied_key);
  EXPECT_EQ(explicit_deny["detail"]["module_id"], "i-0123456789abcdef0-enc0123456789abcdef");
}

// A data owner's secret sealed without azote-kms ever handing a key out: Encrypt on the
// admin socket (refused by name on the request socket), or `azote-kms encrypt` on the
// key files; Decrypt with a real azote-rot document hands it to the key's holder only.
TEST_F(Kms, EncryptOnTheAdminSocketOrTheCommandAndDecryptHandsTheSecretToTheAttestedHolder) {
  const std::string key = create_key(image_policy());
  ASSERT_EQ(key.size(), 20u) << key;
  const std::string secret = "postgres://owner:s3cret@db/prod";  // the data owner's
  const std::string offline = std::string(64, 'k');              // the most one blob holds
  auto write_private = [&](const std::string& name, const std::string& bytes) {
    std::ofstream(path(name), std::ios::binary) << bytes;
    std::filesystem::permissions(path(name), std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
    return path(name);
  };
  // The command form, like create-key: straight to the key files.
  Outcome o = run({kKms, "encrypt", "--state-dir", path("kms"), "--key-id", key, "--plaintext-file",
                   write_private("offline.bin", offline)},
                  30s);
  ASSERT_EQ(o.status, 0) << o.err;
  ASSERT_FALSE(o.out.empty());
  ASSERT_EQ(o.out.back(), '\n');
  const std::string offline_blob = o.out.substr(0, o.out.size() - 1);
  EXPECT_EQ(unb64(offline_blob).size(), 2 + 20 + 12 + 64 + 16u) << offline_blob;
  o = run({kKms, "encrypt", "--state-dir", path("kms"), "--key-id", key, "--plaintext-file", write_private("empty.bin", "")},
          30s);
  EXPECT_EQ(o.status, 64) << o.err;
  EXPECT_NE(o.err.find("ValidationException: --plaintext-file " + path("empty.bin") + " is empty"), std::string::npos) << o.err;
  EXPECT_TRUE(o.out.empty()) << o.out;
  o = run({kKms, "encrypt", "--state-dir", path("kms"), "--key-id", key, "--plaintext-file",
           write_private("long.bin", std::string(65, 'x'))},
          30s);
  EXPECT_EQ(o.status, 64) << o.err;
  EXPECT_NE(o.err.find("holds more than 64 bytes"), std::string::npos) << o.err;
  o = run({kKms, "encrypt", "--state-dir", path("kms"), "--key-id", "key-0123456789abcdef", "--plaintext-file",
           path("offline.bin")},
          30s);
  EXPECT_EQ(o.status, 66) << o.err;
  EXPECT_NE(o.err.find("NotFoundException: key key-0123456789abcdef does not exist"), std::string::npos) << o.err;
  o = run({kKms, "encrypt", "--state-dir", path("kms"), "--key-id", key}, 30s);
  EXPECT_EQ(o.status, 64) << o.err;
  EXPECT_NE(o.err.find("--plaintext-file"), std::string::npos) << o.err;
  o = run({kKms, "--help"}, 30s);
  for (const char* word : {"encrypt --state-dir DIR --key-id KEY --plaintext-file FILE", "{\"op\": \"Encrypt\""})
    EXPECT_NE(o.out.find(word), std::string::npos) << word;

  start();
  // The admin op.
  const Json e = ask({{"op", "Encrypt"}, {"KeyId", key}, {"Plaintext", b64(Bytes(secret.begin(), secret.end()))}},
                     "kms-admin.sock");
  ASSERT_EQ(e.value("ok", false), true) << e.dump();
  EXPECT_EQ(e["KeyId"], key);
  EXPECT_EQ(e.size(), 3u) << e.dump();
  // Never on the request socket.
  const Json on_listen = ask({{"op", "Encrypt"}, {"KeyId", key}, {"Plaintext", b64(Bytes(secret.begin(), secret.end()))}});
  EXPECT_EQ(on_listen.value("error", ""),
            "UnsupportedOperationException: Encrypt is served only on the admin socket, never on this one: whoever "
            "reaches this socket could otherwise make ciphertexts that an enclave would take for its data owner's")
      << on_listen.dump();
  EXPECT_FALSE(on_listen.contains("CiphertextBlob"));
  EXPECT_NE(ask({{"op", "Encrypt"}, {"KeyId", key}, {"Plaintext", b64(Bytes(65, 'x'))}}, "kms-admin.sock").value("error", "")
                .find("ValidationException: Plaintext is 65 bytes, not 1 to 64"),
            std::string::npos);

  // Decrypt on the request socket, with a fresh azote-rot document each: the secret,
  // wrapped to the document's public key.
  const Json d = ask({{"op", "Decrypt"}, {"CiphertextBlob", e["CiphertextBlob"]},
                      {"Recipient", recipient(document("e1e2e3e4e5e60001"))}});
  ASSERT_EQ(d.value("ok", false), true) << d.dump();
  EXPECT_EQ(d["KeyId"], key);
  EXPECT_FALSE(d.contains("Plaintext"));
  const Bytes back = oaep_decrypt(key_.get(), unb64(d["CiphertextForRecipient"].get<std::string>()));
  EXPECT_EQ(std::string(back.begin(), back.end()), secret);
  Pkey other(EVP_RSA_gen(2048));
  EXPECT_TRUE(oaep_decrypt(other.get(), unb64(d["CiphertextForRecipient"].get<std::string>())).empty());
  const Json d2 = ask({{"op", "Decrypt"}, {"CiphertextBlob", offline_blob}, {"KeyId", key},
                       {"Recipient", recipient(document("e1e2e3e4e5e60002"))}});
  ASSERT_EQ(d2.value("ok", false), true) << d2.dump();
  const Bytes back2 = oaep_decrypt(key_.get(), unb64(d2["CiphertextForRecipient"].get<std::string>()));
  EXPECT_EQ(std::string(back2.begin(), back2.end()), offline);
  // Another image: the key policy refuses it the secret.
  const Json denied = ask({{"op", "Decrypt"}, {"CiphertextBlob", e["CiphertextBlob"]},
                           {"Recipient", recipient(document("rot.ctl", "e1e2e3e4e5e60003", spki(key_.get()),
                                                            std::string(96, 'c')))}});
  EXPECT_NE(denied.value("error", "").find("AccessDeniedException: no statement of the key policy allows kms:Decrypt"),
            std::string::npos)
      << denied.dump();

  kms_->signal(SIGTERM);
  o = kms_->wait(10s);
  kms_.reset();
  EXPECT_EQ(o.status, 0) << o.err;
  EXPECT_EQ(o.err.find("seccomp"), std::string::npos) << o.err;
  const Outcome v = run({kCli, "audit", "verify", path("audit/audit.log")});
  EXPECT_EQ(v.status, 0) << v.out << v.err;
  // kms.start, Encrypt, Encrypt refused on the request socket, Encrypt of 65 bytes,
  // Decrypt, Decrypt, Decrypt denied. (The command's blob is not in the log: it never
  // went through the service.)
  const auto records = audit_records();
  ASSERT_EQ(records.size(), 7u);
  EXPECT_EQ(records[1]["method"], "kms.Encrypt");
  EXPECT_EQ(records[1]["principal"], "admin");
  EXPECT_EQ(records[1]["outcome"], "allowed");
  EXPECT_EQ(records[1]["resources"][0], key);
  EXPECT_EQ(records[2]["method"], "kms.Encrypt");
  EXPECT_EQ(records[2]["principal"], "");
  EXPECT_EQ(records[2]["outcome"], "denied");
  EXPECT_EQ(records[2]["error"], on_listen["error"]);
  EXPECT_EQ(records[3]["outcome"], "denied");
  EXPECT_EQ(records[4]["method"], "kms.Decrypt");
  EXPECT_EQ(records[4]["outcome"], "allowed");
  EXPECT_EQ(records[4]["principal"], "i-0123456789abcdef0-enc0123456789abcdef");
  EXPECT_EQ(records[5]["outcome"], "allowed");
  EXPECT_EQ(records[6]["outcome"], "denied");
  const std::string log = slurp(path("audit/audit.log"));
  for (const std::string& leak : {secret, hex(Bytes(secret.begin(), secret.end())), b64(Bytes(secret.begin(), secret.end())),
                                  offline, hex(Bytes(offline.begin(), offline.end()))})
    EXPECT_EQ(log.find(leak), std::string::npos) << "a plaintext is in the audit log: " << leak;
}

TEST_F(Kms, BadCommandLinesPoliciesAndStateAreRefusedByName) {
  Outcome o = run({kKms, "--state-dir", path("kms"), "--listen", path("s"), "--audit", path("a")}, 30s);
  EXPECT_EQ(o.status, 64) << o.err;
  EXPECT_NE(o.err.find("--root"), std::string::npos) << o.err;
  o = run({kKms, "--state-dir", path("kms"), "--root", path("missing.pem"), "--listen", path("s"), "--audit", path("a")}, 30s);
  EXPECT_EQ(o.status, 66) << o.err;
  EXPECT_NE(o.err.find(path("missing.pem")), std::string::npos) << o.err;
  o = run({kKms, "--state-dir", path("kms"), "--root", path("r.pem"), "--listen", path("s"), "--audit", path("a"),
           "--max-age", "0"},
          30s);
  EXPECT_EQ(o.status, 64) << o.err;
  std::ofstream(path("bad.json")) << R"({"Statement": [{"Effect": "Allow", "Action": "kms:Decrypt",
    "Condition": {"StringLike": {"kms:RecipientAttestation:PCR0": "a*"}}}]})";
  o = run({kKms, "create-key", "--state-dir", path("kms"), "--policy", path("bad.json")}, 30s);
  EXPECT_EQ(o.status, 64) << o.err;
  EXPECT_NE(o.err.find("MalformedPolicyDocumentException: statement 0: condition operator \"StringLike\""), std::string::npos)
      << o.err;
  EXPECT_TRUE(std::filesystem::is_empty(path("kms/keys")));
  std::filesystem::permissions(path("kms"), std::filesystem::perms::group_read, std::filesystem::perm_options::add);
  std::ofstream(path("good.json")) << image_policy().dump();
  o = run({kKms, "create-key", "--state-dir", path("kms"), "--policy", path("good.json")}, 30s);
  EXPECT_EQ(o.status, 71) << o.err;
  EXPECT_NE(o.err.find("no access for group or others"), std::string::npos) << o.err;
  o = run({kKms, "--help"}, 30s);
  EXPECT_EQ(o.status, 0);
  for (const char* opt : {"--state-dir", "--root", "--listen", "--admin", "--audit", "--max-age", "create-key"})
    EXPECT_NE(o.out.find(opt), std::string::npos) << opt;
}

}  // namespace
}  // namespace azote::test
