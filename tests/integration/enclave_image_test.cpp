// Enclave Image Files end to end through the `azote` binary: the built-in guest packed
// with build-enclave (unsigned and signed with an openssl-made P-384 certificate), read
// back by tests/tools/eif_reader.py — a reader written from the format description
// alone (ENCLAVES.md §4), sharing no code with lib/eif — whose PCRs must equal what
// build-enclave, describe-eif and pcr print; and images changed after the fact, which
// both readers refuse or whose signature both call broken.
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "process.hpp"

namespace {

using azote::test::Outcome;
using azote::test::run;
using Json = nlohmann::json;
using namespace std::chrono_literals;

const std::string kAzote = AZOTE_BUILD_DIR "/bin/azote";
const std::string kReader = AZOTE_SOURCE_DIR "/tests/tools/eif_reader.py";

class EnclaveImage : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::access("/usr/bin/python3", X_OK) != 0 || ::access("/usr/bin/openssl", X_OK) != 0)
      GTEST_SKIP() << "SKIPPED: needs /usr/bin/python3 (cbor2, cryptography) and /usr/bin/openssl";
    char tmpl[] = "/tmp/azote-eif-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    // Two ramdisks: the "bootstrap" and the "application" of nitro-cli's split.
    std::ofstream(path("boot.cpio"), std::ios::binary) << std::string(4096, 'b') << "bootstrap";
    std::ofstream(path("app.cpio"), std::ios::binary) << "application bytes\n" << std::string(1000, '\x7f');
  }
  void TearDown() override {
    if (!dir_.empty()) (void)run({"/bin/rm", "-rf", dir_});
  }
  std::string path(const std::string& name) const { return dir_ + "/" + name; }

  Outcome azote(std::vector<std::string> args) {
    args.insert(args.begin(), kAzote);
    return run(args, 60s);
  }
  Outcome reader(const std::string& eif, const std::string& expect = "") {
    std::vector<std::string> a{"/usr/bin/python3", kReader};
    if (!expect.empty()) a.push_back(expect);
    a.push_back(eif);
    return run(a, 60s);
  }
  Outcome build(const std::string& out, std::vector<std::string> extra = {}) {
    std::vector<std::string> a{"enclave", "build-enclave", "--kernel", AZOTE_GUEST_ELF,
                               "--initrd", path("boot.cpio"), "--initrd", path("app.cpio"),
                               "--cmdline", "console=ttyS0 azote.enclave=1", "--output-file", out};
    a.insert(a.end(), extra.begin(), extra.end());
    return azote(a);
  }
  void make_signer() {
    Outcome o = run({"/usr/bin/openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:secp384r1",
                     "-nodes", "-keyout", path("key.pem"), "-out", path("cert.pem"), "-days", "30", "-subj",
                     "/CN=azote enclave test signer", "-sha384"});
    ASSERT_EQ(o.status, 0) << o.err;
  }

  std::string dir_;
};

Json json_of(const Outcome& o) {
  Json j = Json::parse(o.out, nullptr, false);
  EXPECT_FALSE(j.is_discarded()) << o.out;
  return j;
}

void flip_byte(const std::string& file, size_t at) {
  std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(static_cast<std::streamoff>(at));
  char c = 0;
  f.read(&c, 1);
  c = static_cast<char>(c ^ 1);
  f.seekp(static_cast<std::streamoff>(at));
  f.write(&c, 1);
}

TEST_F(EnclaveImage, TheBuiltInGuestPackedUnsignedReadsBackInTheIndependentReader) {
  Outcome o = build(path("guest.eif"), {"--name", "guest", "--version", "7"});
  ASSERT_EQ(o.status, 0) << o.err;
  EXPECT_NE(o.err.find("Enclave Image successfully created."), std::string::npos) << o.err;
  const Json built = json_of(o)["Measurements"];
  EXPECT_EQ(built["HashAlgorithm"], "Sha384 { ... }");
  EXPECT_FALSE(built.contains("PCR8"));

  o = reader(path("guest.eif"), "--expect-unsigned");
  ASSERT_EQ(o.status, 0) << o.err;
  const Json read = json_of(o);
  EXPECT_EQ(read["EifVersion"], 4);
  EXPECT_EQ(read["CheckCRC"], true);
  EXPECT_EQ(read["Cmdline"], "console=ttyS0 azote.enclave=1");
  EXPECT_EQ(read["DefaultMemory"], 1u << 30);
  EXPECT_EQ(read["DefaultCpus"], 2);
  std::vector<std::string> types;
  for (const auto& s : read["Sections"]) types.push_back(s["Type"]);
  EXPECT_EQ(types, (std::vector<std::string>{"kernel", "cmdline", "metadata", "ramdisk", "ramdisk"}));
  for (const char* pcr : {"PCR0", "PCR1", "PCR2"}) EXPECT_EQ(built[pcr], read["Measurements"][pcr]) << pcr;
  EXPECT_EQ(read["Metadata"]["ImageName"], "guest");
  EXPECT_EQ(read["Metadata"]["ImageVersion"], "7");
  EXPECT_EQ(read["Metadata"]["BuildMetadata"]["BuildTool"], "azote");

  o = azote({"enclave", "describe-eif", "--eif-path", path("guest.eif")});
  ASSERT_EQ(o.status, 0) << o.err;
  const Json described = json_of(o);
  EXPECT_EQ(described["Measurements"], built);
  EXPECT_EQ(described["IsSigned"], false);
  EXPECT_EQ(described["CheckCRC"], true);
  EXPECT_EQ(described["ImageName"], "guest");
  EXPECT_FALSE(described.contains("SignatureCheck"));

  // PCR1 does not depend on the application ramdisk, PCR2 does; PCR0 on both.
  std::ofstream(path("app.cpio"), std::ios::binary | std::ios::app) << "v2";
  o = build(path("guest2.eif"));
  ASSERT_EQ(o.status, 0) << o.err;
  const Json second = json_of(o)["Measurements"];
  EXPECT_EQ(second["PCR1"], built["PCR1"]);
  EXPECT_NE(second["PCR2"], built["PCR2"]);
  EXPECT_NE(second["PCR0"], built["PCR0"]);
}

TEST_F(EnclaveImage, ASignedImageVerifiesInBothReadersAndCarriesPcr8) {
  make_signer();
  Outcome o = build(path("signed.eif"), {"--signing-certificate", path("cert.pem"), "--private-key", path("key.pem")});
  ASSERT_EQ(o.status, 0) << o.err;
  const Json built = json_of(o)["Measurements"];
  ASSERT_TRUE(built.contains("PCR8"));

  o = azote({"enclave", "pcr", "--signing-certificate", path("cert.pem")});
  ASSERT_EQ(o.status, 0) << o.err;
  EXPECT_EQ(json_of(o)["PCR8"], built["PCR8"]);

  o = reader(path("signed.eif"), "--expect-signed");
  ASSERT_EQ(o.status, 0) << o.err;
  const Json read = json_of(o);
  EXPECT_EQ(read["IsSigned"], true);
  EXPECT_EQ(read["SignatureCheck"], true);
  for (const char* pcr : {"PCR0", "PCR1", "PCR2", "PCR8"}) EXPECT_EQ(built[pcr], read["Measurements"][pcr]) << pcr;
  EXPECT_EQ(read["Sections"].back()["Type"], "signature");

  o = azote({"enclave", "describe-eif", "--eif-path", path("signed.eif")});
  ASSERT_EQ(o.status, 0) << o.err;
  const Json described = json_of(o);
  EXPECT_EQ(described["SignatureCheck"], true);
  EXPECT_EQ(described["SigningCertificate"]["IssuerName"], "CN=azote enclave test signer");
  EXPECT_EQ(described["SigningCertificate"]["Algorithm"], "ecdsa-with-SHA384");

  // Signing does not move PCR0..2: the same parts unsigned measure the same.
  o = build(path("unsigned.eif"));
  ASSERT_EQ(o.status, 0) << o.err;
  const Json unsigned_m = json_of(o)["Measurements"];
  for (const char* pcr : {"PCR0", "PCR1", "PCR2"}) EXPECT_EQ(built[pcr], unsigned_m[pcr]) << pcr;
}

TEST_F(EnclaveImage, AnImageChangedByOneByteIsRefusedByBothReaders) {
  make_signer();
  Outcome o = build(path("signed.eif"), {"--signing-certificate", path("cert.pem"), "--private-key", path("key.pem")});
  ASSERT_EQ(o.status, 0) << o.err;
  flip_byte(path("signed.eif"), 548 + 12 + 100);  // inside the kernel's payload
  o = reader(path("signed.eif"));
  EXPECT_EQ(o.status, 1) << o.out;
  EXPECT_NE(o.err.find("crc32"), std::string::npos) << o.err;
  o = azote({"enclave", "describe-eif", "--eif-path", path("signed.eif")});
  EXPECT_EQ(o.status, 1) << o.out;
  EXPECT_NE(o.err.find("CRC-32"), std::string::npos) << o.err;

  // The same change with the CRC recomputed (what an attacker would do): the layout
  // reads, the signature does not match the new PCR0 in either reader.
  o = run({"/usr/bin/python3", "-c",
           "import sys, zlib, struct\n"
           "b = bytearray(open(sys.argv[1], 'rb').read())\n"
           "c = zlib.crc32(bytes(b[548:]), zlib.crc32(bytes(b[:544])))\n"
           "b[544:548] = struct.pack('>I', c)\n"
           "open(sys.argv[1], 'wb').write(b)\n",
           path("signed.eif")});
  ASSERT_EQ(o.status, 0) << o.err;
  o = reader(path("signed.eif"), "--expect-signed");
  EXPECT_EQ(o.status, 1) << o.out;
  o = reader(path("signed.eif"));
  ASSERT_EQ(o.status, 0) << o.err;
  EXPECT_EQ(json_of(o)["SignatureCheck"], false);
  o = azote({"enclave", "describe-eif", "--eif-path", path("signed.eif")});
  ASSERT_EQ(o.status, 0) << o.err;
  const Json described = json_of(o);
  EXPECT_EQ(described["SignatureCheck"], false);
  EXPECT_NE(described["SignatureError"].get<std::string>().find("PCR0"), std::string::npos);
}

// azote-hv --eif: the image's kernel with its command line and ramdisks; an image that
// does not read, or whose signature does not verify, never starts.
TEST_F(EnclaveImage, TheBuiltInGuestBootsFromItsEnclaveImage) {
  std::string why;
  if (!azote::test::kvm_usable(&why)) GTEST_SKIP() << "SKIPPED: " << why;
  Outcome o = azote({"enclave", "build-enclave", "--kernel", AZOTE_GUEST_ELF, "--initrd", path("boot.cpio"),
                     "--initrd", path("app.cpio"), "--cmdline", "azote.run=hello", "--output-file", path("hello.eif")});
  ASSERT_EQ(o.status, 0) << o.err;
  o = run({AZOTE_HV_BIN, "--verbose", "--eif", path("hello.eif"), "--memory", "64M"}, 60s);
  EXPECT_EQ(o.status, 0) << o.err;
  EXPECT_NE(o.out.find("azote-guest: hello vcpus=1 memory=64MiB"), std::string::npos) << o.out;
  EXPECT_NE(o.err.find("enclave image"), std::string::npos) << o.err;

  o = run({AZOTE_HV_BIN, "--eif", path("hello.eif"), "--kernel", AZOTE_GUEST_ELF}, 60s);
  EXPECT_EQ(o.status, 64) << o.err;
  EXPECT_NE(o.err.find("--eif excludes --kernel"), std::string::npos) << o.err;

  flip_byte(path("hello.eif"), 548 + 12 + 64);
  o = run({AZOTE_HV_BIN, "--eif", path("hello.eif"), "--memory", "64M"}, 60s);
  EXPECT_EQ(o.status, 65) << o.err;
  EXPECT_NE(o.err.find("CRC-32"), std::string::npos) << o.err;
  EXPECT_EQ(o.out.find("hello"), std::string::npos) << o.out;

  // Signed: a signature that does not match the image's PCR0 stops it too.
  make_signer();
  o = azote({"enclave", "build-enclave", "--kernel", AZOTE_GUEST_ELF, "--initrd", path("boot.cpio"), "--cmdline",
             "azote.run=hello", "--output-file", path("signed.eif"), "--signing-certificate", path("cert.pem"),
             "--private-key", path("key.pem")});
  ASSERT_EQ(o.status, 0) << o.err;
  o = run({AZOTE_HV_BIN, "--verbose", "--eif", path("signed.eif"), "--memory", "64M"}, 60s);
  EXPECT_EQ(o.status, 0) << o.err;
  EXPECT_NE(o.err.find(", signed, PCR0"), std::string::npos) << o.err;
  flip_byte(path("signed.eif"), 548 + 12 + 64);
  o = run({"/usr/bin/python3", "-c",
           "import sys, zlib, struct\n"
           "b = bytearray(open(sys.argv[1], 'rb').read())\n"
           "b[544:548] = struct.pack('>I', zlib.crc32(bytes(b[548:]), zlib.crc32(bytes(b[:544]))))\n"
           "open(sys.argv[1], 'wb').write(b)\n",
           path("signed.eif")});
  ASSERT_EQ(o.status, 0) << o.err;
  o = run({AZOTE_HV_BIN, "--eif", path("signed.eif"), "--memory", "64M"}, 60s);
  EXPECT_EQ(o.status, 65) << o.err;
  EXPECT_NE(o.err.find("PCR0"), std::string::npos) << o.err;
  EXPECT_EQ(o.out.find("hello"), std::string::npos) << o.out;
}

// What an enclave needs for the Recipient flow, in the built-in guest with Debian's
// BearSSL: an RSA-2048 key whose public half Python's cryptography parses, and a secret
// the host encrypts to it with RSA-OAEP-SHA256 decrypted inside the guest (the same
// seed gives the same key).
TEST_F(EnclaveImage, TheGuestsRsaKeyTakesASecretFromTheHost) {
  std::string why;
  if (!azote::test::kvm_usable(&why)) GTEST_SKIP() << "SKIPPED: " << why;
  const std::string seed(64, 'a');
  Outcome o = run({AZOTE_HV_BIN, "--kernel", "builtin:crypto-selftest", "--cmdline", seed, "--memory", "256M"}, 60s);
  if (o.out.find("unknown program crypto-selftest") != std::string::npos)
    GTEST_SKIP() << "SKIPPED: the guest was built without BearSSL (libbearssl-dev)";
  ASSERT_EQ(o.status, 0) << o.out << o.err;
  const std::string key = [&] {
    for (const auto& l : azote::test::lines(o.out))
      if (l.rfind("azote-guest: crypto-selftest public-key ", 0) == 0) return l.substr(40);
    return std::string();
  }();
  ASSERT_FALSE(key.empty()) << o.out;
  o = run({"/usr/bin/python3", "-c",
           "import base64, sys\n"
           "from cryptography.hazmat.primitives import hashes, serialization\n"
           "from cryptography.hazmat.primitives.asymmetric import padding\n"
           "k = serialization.load_der_public_key(base64.b64decode(sys.argv[1]))\n"
           "assert k.key_size == 2048\n"
           "p = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)\n"
           "print(k.encrypt(b'the data key', p).hex())\n",
           key});
  ASSERT_EQ(o.status, 0) << o.err;
  std::string ct = o.out;
  while (!ct.empty() && ct.back() == '\n') ct.pop_back();
  o = run({AZOTE_HV_BIN, "--kernel", "builtin:crypto-selftest", "--cmdline", seed + " " + ct, "--memory", "256M"}, 60s);
  ASSERT_EQ(o.status, 0) << o.out << o.err;
  EXPECT_NE(o.out.find("azote-guest: crypto-selftest decrypted 7468652064617461206b6579"), std::string::npos)
      << "the same seed, the same key: " << o.out;
  ct[10] = ct[10] == '0' ? '1' : '0';
  o = run({AZOTE_HV_BIN, "--kernel", "builtin:crypto-selftest", "--cmdline", seed + " " + ct, "--memory", "256M"}, 60s);
  EXPECT_EQ(o.status, 1) << "a changed ciphertext is refused: " << o.out;
}

TEST_F(EnclaveImage, PcrOfAFileIsTheExtendOfItsDigest) {
  Outcome o = azote({"enclave", "pcr", "--input", path("app.cpio")});
  ASSERT_EQ(o.status, 0) << o.err;
  const std::string ours = json_of(o)["PCR"];
  o = run({"/usr/bin/python3", "-c",
           "import hashlib, sys\n"
           "d = hashlib.sha384(open(sys.argv[1], 'rb').read()).digest()\n"
           "print(hashlib.sha384(bytes(48) + d).hexdigest())\n",
           path("app.cpio")});
  ASSERT_EQ(o.status, 0) << o.err;
  EXPECT_EQ(ours + "\n", o.out);
}

TEST_F(EnclaveImage, BadInputsAreNamed) {
  Outcome o = azote({"enclave", "build-enclave", "--kernel", path("missing"), "--initrd", path("boot.cpio"),
                     "--cmdline", "x", "--output-file", path("x.eif")});
  EXPECT_EQ(o.status, 2);
  EXPECT_NE(o.err.find("--kernel"), std::string::npos) << o.err;
  EXPECT_NE(o.err.find("missing"), std::string::npos) << o.err;
  EXPECT_FALSE(azote::test::file_exists(path("x.eif")));

  o = build(path("x.eif"), {"--signing-certificate", path("boot.cpio")});
  EXPECT_EQ(o.status, 2);
  EXPECT_NE(o.err.find("--private-key"), std::string::npos) << o.err;

  std::ofstream(path("meta.json")) << "{oops";
  o = build(path("x.eif"), {"--metadata", path("meta.json")});
  EXPECT_EQ(o.status, 2);
  EXPECT_NE(o.err.find("is not JSON"), std::string::npos) << o.err;

  o = azote({"enclave", "pcr"});
  EXPECT_EQ(o.status, 2);
  EXPECT_NE(o.err.find("exactly one"), std::string::npos) << o.err;

  o = azote({"enclave", "describe-eif", "--eif-path", path("boot.cpio")});
  EXPECT_EQ(o.status, 1);
  EXPECT_NE(o.err.find("magic"), std::string::npos) << o.err;

  o = azote({"enclave", "--help"});
  EXPECT_EQ(o.status, 0);
  EXPECT_NE(o.out.find("build-enclave"), std::string::npos) << o.out;
}

}  // namespace
