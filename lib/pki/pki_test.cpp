// lib/pki: the host CA, server and client certificates, client verification (CA,
// validity, EKU, revocation across HostPki objects), files and modes, key wrapping.
#include "pki/pki.hpp"

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "base/temp_dir.hpp"
#include "pki/ossl.hpp"

namespace {

using azote::pki::HostPki;
using azote::pki::IssuedCert;
using azote::pki::PkiErrc;
namespace ossl = azote::pki::ossl;
namespace fs = std::filesystem;
using azote::TempDir;

int64_t now() { return static_cast<int64_t>(std::time(nullptr)); }

std::string iso(int64_t t) {
  const auto tt = static_cast<time_t>(t);
  struct tm tm {};
  gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// A fresh directory under /tmp, removed with everything in it.

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void spit(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
}

unsigned mode_of(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return 0xffffffffu;
  return st.st_mode & 07777;
}

HostPki open_ok(const std::string& dir) {
  auto r = HostPki::open_or_create(dir);
  if (!r.ok()) {
    ADD_FAILURE() << "open_or_create(" << dir << "): " << r.error().message();
    std::abort();
  }
  return std::move(r).value();
}

IssuedCert issue_ok(const HostPki& pki, const std::string& role, const std::string& name, int64_t nb,
                    int64_t na) {
  auto r = pki.issue_client(role, name, nb, na);
  if (!r.ok()) {
    ADD_FAILURE() << "issue_client: " << r.error().message();
    std::abort();
  }
  return std::move(r).value();
}

// Expects verify_client to refuse with exactly this reason.
void expect_refused(const HostPki& pki, const std::string& pem, int64_t at, const std::string& reason) {
  auto r = pki.verify_client(pem, at);
  ASSERT_FALSE(r.ok()) << "accepted, expected: " << reason;
  EXPECT_EQ(r.error().code, PkiErrc::kRefused);
  EXPECT_EQ(r.error().context, reason);
}

// A certificate for a fresh key signed by the CA in `dir`, with the given subject and
// extensions: what a buggy or hostile issuer with this host's CA key could produce.
std::string sign_with_ca(const std::string& dir, const std::vector<std::pair<const char*, std::string>>& subject,
                         const std::vector<std::pair<int, const char*>>& exts) {
  ossl::X509Ptr ca = ossl::parse_cert(slurp(dir + "/ca.crt"));
  const std::string ca_key_pem = slurp(dir + "/ca.key");
  ossl::BioPtr bio = ossl::mem_bio(ca_key_pem);
  ossl::PkeyPtr ca_key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  ossl::PkeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  ossl::X509Ptr cert(X509_new());
  if (!ca || !ca_key || !key || !cert) return "";
  X509_set_version(cert.get(), X509_VERSION_3);
  ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), 4242);
  for (const auto& [field, value] : subject) {
    X509_NAME_add_entry_by_txt(X509_get_subject_name(cert.get()), field, MBSTRING_UTF8,
                               reinterpret_cast<const unsigned char*>(value.c_str()), -1, -1, 0);
  }
  X509_set_issuer_name(cert.get(), X509_get_subject_name(ca.get()));
  ASN1_TIME_set(X509_getm_notBefore(cert.get()), static_cast<time_t>(now() - 60));
  ASN1_TIME_set(X509_getm_notAfter(cert.get()), static_cast<time_t>(now() + 3600));
  X509_set_pubkey(cert.get(), key.get());
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, ca.get(), cert.get(), nullptr, nullptr, 0);
  for (const auto& [nid, value] : exts) {
    ossl::ExtPtr ext(X509V3_EXT_nconf_nid(nullptr, &ctx, nid, value));
    if (!ext) return "";
    X509_add_ext(cert.get(), ext.get(), -1);
  }
  if (X509_sign(cert.get(), ca_key.get(), EVP_sha256()) <= 0) return "";
  ossl::BioPtr out(BIO_new(BIO_s_mem()));
  PEM_write_bio_X509(out.get(), cert.get());
  char* data = nullptr;
  const long n = BIO_get_mem_data(out.get(), &data);
  return std::string(data, static_cast<size_t>(n));
}

bool have_program(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path != nullptr ? path : "/usr/bin:/bin");
  std::string d;
  while (std::getline(dirs, d, ':')) {
    if (!d.empty() && ::access((d + "/" + name).c_str(), X_OK) == 0) return true;
  }
  return false;
}

// Runs a shell command; returns its exit status and puts stdout+stderr in *out.
int run(const std::string& cmd, std::string* out) {
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  if (p == nullptr) return -1;
  char buf[512];
  out->clear();
  while (size_t n = std::fread(buf, 1, sizeof buf, p)) out->append(buf, n);
  const int status = ::pclose(p);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(HostPki, CreateThenReopenKeepsSameCa) {
  TempDir tmp;
  const std::string dir = tmp / "host/pki";  // parents are created too
  std::string ca, server, key;
  std::vector<uint8_t> master;
  {
    HostPki pki = open_ok(dir);
    EXPECT_EQ(pki.dir(), dir);
    ca = pki.ca_pem();
    server = pki.server_cert_pem();
    key = pki.server_key_pem();
    master.assign(pki.master_key().begin(), pki.master_key().end());
    EXPECT_NE(ca.find("-----BEGIN CERTIFICATE-----"), std::string::npos);
    EXPECT_NE(key.find("-----BEGIN PRIVATE KEY-----"), std::string::npos);
    EXPECT_EQ(slurp(dir + "/ca.crt"), ca);
  }
  HostPki again = open_ok(dir + "/");
  EXPECT_EQ(again.ca_pem(), ca);
  EXPECT_EQ(again.server_cert_pem(), server);
  EXPECT_EQ(again.server_key_pem(), key);
  EXPECT_EQ(std::vector<uint8_t>(again.master_key().begin(), again.master_key().end()), master);

  // A certificate issued before the reopen still verifies after it.
  HostPki first = open_ok(dir);
  const IssuedCert c = issue_ok(first, "operator", "alice", now() - 60, now() + 3600);
  EXPECT_TRUE(again.verify_client(c.cert_pem, now()).ok());

  // A different directory is a different CA.
  HostPki other = open_ok(tmp / "other");
  EXPECT_NE(other.ca_pem(), ca);
}

TEST(HostPki, FileModes) {
  TempDir tmp;
  const std::string dir = tmp / "pki";
  HostPki pki = open_ok(dir);
  EXPECT_EQ(mode_of(dir), 0700u);
  EXPECT_EQ(mode_of(dir + "/ca.key"), 0600u);
  EXPECT_EQ(mode_of(dir + "/server.key"), 0600u);
  EXPECT_EQ(mode_of(dir + "/master.key"), 0600u);
  EXPECT_EQ(fs::file_size(dir + "/master.key"), 32u);
  // No temp files are left behind.
  for (const auto& e : fs::directory_iterator(dir)) {
    EXPECT_NE(e.path().filename().string()[0], '.') << e.path();
  }
  // A private key readable by others is refused on reopen.
  ASSERT_EQ(::chmod((dir + "/server.key").c_str(), 0644), 0);
  auto r = HostPki::open_or_create(dir);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, PkiErrc::kInsecure);
  EXPECT_NE(r.error().context.find("server.key"), std::string::npos) << r.error().context;
}

TEST(HostPki, CaAndServerCertificates) {
  TempDir tmp;
  HostPki pki = open_ok(tmp / "pki");
  ossl::X509Ptr ca = ossl::parse_cert(pki.ca_pem());
  ossl::X509Ptr server = ossl::parse_cert(pki.server_cert_pem());
  ASSERT_TRUE(ca && server);

  // CA: self-signed P-256, critical CA:TRUE, keyCertSign+cRLSign, SKI, ~10 years.
  EXPECT_EQ(EVP_PKEY_get_id(X509_get0_pubkey(ca.get())), EVP_PKEY_EC);
  char cn[128];
  X509_NAME_get_text_by_NID(X509_get_subject_name(ca.get()), NID_commonName, cn, sizeof cn);
  EXPECT_STREQ(cn, "azote host CA");
  EXPECT_EQ(X509_check_issued(ca.get(), ca.get()), X509_V_OK);
  EXPECT_EQ(X509_check_ca(ca.get()), 1);
  int crit = -1;
  auto* bc = static_cast<BASIC_CONSTRAINTS*>(X509_get_ext_d2i(ca.get(), NID_basic_constraints, &crit, nullptr));
  ASSERT_NE(bc, nullptr);
  EXPECT_TRUE(bc->ca);
  EXPECT_EQ(crit, 1);
  BASIC_CONSTRAINTS_free(bc);
  EXPECT_EQ(X509_get_key_usage(ca.get()), static_cast<uint32_t>(KU_KEY_CERT_SIGN | KU_CRL_SIGN));
  EXPECT_NE(X509_get0_subject_key_id(ca.get()), nullptr);
  int days = 0, secs = 0;
  ASSERT_EQ(ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(ca.get()), X509_get0_notAfter(ca.get())), 1);
  EXPECT_GE(days, 3650);
  EXPECT_LE(days, 3654);

  // Server: chains to the CA for serverAuth, has the SANs, ~2 years.
  ossl::StorePtr store(X509_STORE_new());
  X509_STORE_add_cert(store.get(), ca.get());
  ossl::StoreCtxPtr ctx(X509_STORE_CTX_new());
  ASSERT_EQ(X509_STORE_CTX_init(ctx.get(), store.get(), server.get(), nullptr), 1);
  X509_STORE_CTX_set_purpose(ctx.get(), X509_PURPOSE_SSL_SERVER);
  EXPECT_EQ(X509_verify_cert(ctx.get()), 1) << X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx.get()));
  EXPECT_EQ(X509_check_host(server.get(), "azote-controller", 0, 0, nullptr), 1);
  EXPECT_EQ(X509_check_host(server.get(), "localhost", 0, 0, nullptr), 1);
  EXPECT_EQ(X509_check_ip_asc(server.get(), "127.0.0.1", 0), 1);
  EXPECT_NE(X509_check_host(server.get(), "example.com", 0, 0, nullptr), 1);
  EXPECT_TRUE(X509_get_extended_key_usage(server.get()) & XKU_SSL_SERVER);
  EXPECT_FALSE(X509_get_extended_key_usage(server.get()) & XKU_SSL_CLIENT);
  ASSERT_EQ(ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(server.get()), X509_get0_notAfter(server.get())), 1);
  EXPECT_GE(days, 730);
  EXPECT_LE(days, 732);
  // The server key is the server certificate's key.
  ossl::BioPtr bio = ossl::mem_bio(pki.server_key_pem());
  ossl::PkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  ASSERT_TRUE(key);
  EXPECT_EQ(X509_check_private_key(server.get(), key.get()), 1);
}

TEST(HostPki, IssueAndVerify) {
  TempDir tmp;
  HostPki pki = open_ok(tmp / "pki");
  const int64_t t = now();
  const IssuedCert c = issue_ok(pki, "operator", "alice.example-1_x", t - 60, t + 3600);
  EXPECT_EQ(c.serial_hex.find_first_not_of("0123456789abcdef"), std::string::npos) << c.serial_hex;
  EXPECT_LE(c.serial_hex.size(), 32u);
  EXPECT_GE(c.serial_hex.size(), 16u);  // 128 random bits: shorter is astronomically unlikely
  auto p = pki.verify_client(c.cert_pem, t);
  ASSERT_TRUE(p.ok()) << p.error().message();
  EXPECT_EQ(p->name, "alice.example-1_x");
  EXPECT_EQ(p->role, "operator");
  EXPECT_EQ(p->serial_hex, c.serial_hex);
  EXPECT_EQ(p->not_after_unix, t + 3600);
  EXPECT_TRUE(pki.verify_client(c.cert_pem).ok());  // at the current time

  // The key pairs with the certificate, is P-256, and the cert is a non-CA clientAuth leaf.
  ossl::X509Ptr cert = ossl::parse_cert(c.cert_pem);
  ossl::BioPtr bio = ossl::mem_bio(c.key_pem);
  ossl::PkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  ASSERT_TRUE(cert && key);
  EXPECT_EQ(X509_check_private_key(cert.get(), key.get()), 1);
  char group[64] = {};
  size_t len = 0;
  EXPECT_EQ(EVP_PKEY_get_group_name(key.get(), group, sizeof group, &len), 1);
  EXPECT_STREQ(group, "prime256v1");
  EXPECT_EQ(X509_check_ca(cert.get()), 0);
  EXPECT_TRUE(X509_get_extended_key_usage(cert.get()) & XKU_SSL_CLIENT);

  // Serials differ between certificates.
  const IssuedCert d = issue_ok(pki, "operator", "alice", t - 60, t + 3600);
  EXPECT_NE(c.serial_hex, d.serial_hex);

  // The convenience overload starts 60 s in the past.
  auto e = pki.issue_client("agent", "host-7", std::chrono::hours(1));
  ASSERT_TRUE(e.ok()) << e.error().message();
  auto pe = pki.verify_client(e->cert_pem, t - 30);
  ASSERT_TRUE(pe.ok()) << pe.error().message();
  EXPECT_EQ(pe->role, "agent");
  EXPECT_NEAR(static_cast<double>(pe->not_after_unix), static_cast<double>(t + 3600), 5.0);
}

TEST(HostPki, CertificateFromAnotherHostIsRefused) {
  TempDir tmp;
  HostPki a = open_ok(tmp / "a");
  HostPki b = open_ok(tmp / "b");
  const IssuedCert c = issue_ok(b, "operator", "mallory", now() - 60, now() + 3600);
  expect_refused(a, c.cert_pem, now(), "client certificate not issued by this host's CA");
  EXPECT_TRUE(b.verify_client(c.cert_pem, now()).ok());
  // The other host's CA certificate itself is no client certificate either.
  expect_refused(a, b.ca_pem(), now(), "client certificate not issued by this host's CA");
}

TEST(HostPki, ExpiredAndNotYetValid) {
  TempDir tmp;
  HostPki pki = open_ok(tmp / "pki");
  EXPECT_EQ(iso(1767225600), "2026-01-01T00:00:00Z");
  // A midnight within the CA's validity (which starts when the directory was created).
  const int64_t t0 = (now() / 86400 + 2) * 86400;
  const IssuedCert c = issue_ok(pki, "operator", "bob", t0 - 86400, t0);
  expect_refused(pki, c.cert_pem, t0 + 1, "client certificate expired at " + iso(t0));
  EXPECT_TRUE(pki.verify_client(c.cert_pem, t0 - 1).ok());

  const IssuedCert f = issue_ok(pki, "operator", "bob", t0 + 3600, t0 + 7200);
  expect_refused(pki, f.cert_pem, t0, "client certificate not valid before " + iso(t0 + 3600));
  EXPECT_TRUE(pki.verify_client(f.cert_pem, t0 + 3601).ok());

  // Issued with real "now": expired an hour ago / valid from an hour ahead.
  const IssuedCert g = issue_ok(pki, "operator", "bob", now() - 7200, now() - 3600);
  EXPECT_FALSE(pki.verify_client(g.cert_pem).ok());
  const IssuedCert h = issue_ok(pki, "operator", "bob", now() + 3600, now() + 7200);
  EXPECT_FALSE(pki.verify_client(h.cert_pem).ok());
}

TEST(HostPki, RevocationAppliesAcrossObjectsWithoutReopen) {
  TempDir tmp;
  const std::string dir = tmp / "pki";
  HostPki verifier = open_ok(dir);
  HostPki admin = open_ok(dir);  // e.g. another process revoking
  const IssuedCert c = issue_ok(verifier, "operator", "carol", now() - 60, now() + 3600);
  const IssuedCert keep = issue_ok(verifier, "operator", "dave", now() - 60, now() + 3600);
  ASSERT_TRUE(verifier.verify_client(c.cert_pem, now()).ok());  // caches "nothing revoked"
  EXPECT_FALSE(fs::exists(dir + "/revoked"));

  ASSERT_TRUE(admin.revoke(c.serial_hex).ok());
  expect_refused(verifier, c.cert_pem, now(), "client certificate revoked (serial " + c.serial_hex + ")");
  EXPECT_TRUE(verifier.verify_client(keep.cert_pem, now()).ok());

  // Idempotent (and says so), case-insensitive, leading zeros ignored: still one line.
  std::string upper = "000" + c.serial_hex;
  for (char& ch : upper) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  auto again = admin.revoke(upper);
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->already);
  EXPECT_EQ(again->serial_hex, c.serial_hex);
  ASSERT_TRUE(verifier.revoke(c.serial_hex).ok());
  EXPECT_EQ(slurp(dir + "/revoked"), c.serial_hex + "\n");

  // A second revocation appends; a reopened object sees both.
  ASSERT_TRUE(verifier.revoke(keep.serial_hex).ok());
  EXPECT_EQ(slurp(dir + "/revoked"), c.serial_hex + "\n" + keep.serial_hex + "\n");
  HostPki reopened = open_ok(dir);
  EXPECT_FALSE(reopened.verify_client(keep.cert_pem, now()).ok());
  EXPECT_FALSE(admin.verify_client(keep.cert_pem, now()).ok());

  // Removing the file (un-revoking by hand) applies too.
  fs::remove(dir + "/revoked");
  EXPECT_TRUE(verifier.verify_client(keep.cert_pem, now()).ok());
}

TEST(HostPki, RevokeValidatesSerial) {
  TempDir tmp;
  HostPki pki = open_ok(tmp / "pki");
  for (const std::string& bad : std::vector<std::string>{"", "xyz", "12 34", "0x12", std::string(41, 'a'), "ab\ncd"}) {
    auto r = pki.revoke(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.error().code, PkiErrc::kInvalid);
  }
  EXPECT_FALSE(fs::exists(tmp / "pki/revoked"));
  auto never = pki.revoke(std::string(40, 'F'));
  ASSERT_FALSE(never.ok());
  EXPECT_EQ(never.error().code, PkiErrc::kNotIssued);
  EXPECT_TRUE(pki.revoke(std::string(40, 'F'), azote::pki::UnlistedSerial::kRevoke).ok());
}

TEST(HostPki, IssuedSerialsAreListedBeforeTheyLeave) {
  TempDir tmp;
  const std::string dir = tmp / "pki";
  HostPki a = open_ok(dir);
  HostPki b = open_ok(dir);  // e.g. another process issuing
  EXPECT_FALSE(fs::exists(dir + "/issued"));
  std::string expect;
  std::vector<IssuedCert> certs;
  for (int i = 0; i < 3; ++i) {
    certs.push_back(issue_ok(i % 2 ? b : a, "operator", "n" + std::to_string(i), now() - 60, now() + 3600));
    expect += certs.back().serial_hex + "\n";
  }
  EXPECT_EQ(slurp(dir + "/issued"), expect);
  EXPECT_EQ(mode_of(dir + "/issued"), 0644u);
  // Concurrent issuers lose nothing.
  std::vector<std::thread> threads;
  std::vector<std::string> serials(8);
  for (size_t t = 0; t < serials.size(); ++t) {
    threads.emplace_back([&, t] {
      auto c = (t % 2 ? b : a).issue_client("operator", "t" + std::to_string(t), now() - 60, now() + 3600);
      if (c.ok()) serials[t] = c->serial_hex;
    });
  }
  for (auto& t : threads) t.join();
  const std::string listed = slurp(dir + "/issued");
  for (const auto& s : serials) {
    ASSERT_FALSE(s.empty());
    EXPECT_NE(listed.find(s + "\n"), std::string::npos) << s;
  }
  // Every issued certificate can be revoked by its serial, from any object.
  HostPki reopened = open_ok(dir);
  auto r = reopened.revoke(certs[1].serial_hex);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_FALSE(r->already);
  EXPECT_TRUE(r->listed);
  EXPECT_FALSE(a.verify_client(certs[1].cert_pem, now()).ok());
}

TEST(HostPki, RevokeRefusesSerialsThisCaNeverIssued) {
  TempDir tmp;
  const std::string dir = tmp / "pki";
  HostPki pki = open_ok(dir);
  const IssuedCert c = issue_ok(pki, "operator", "olga", now() - 60, now() + 3600);
  for (const std::string& never : {std::string("00"), std::string("1"), c.serial_hex + "0"}) {
    auto r = pki.revoke(never);
    ASSERT_FALSE(r.ok()) << never;
    EXPECT_EQ(r.error().code, PkiErrc::kNotIssued);
    auto norm = azote::pki::normalize_serial(never);
    EXPECT_EQ(r.error().message(), "serial " + *norm + " was never issued by this host's CA (it is not in " + dir +
                                       "/issued)");
  }
  EXPECT_FALSE(fs::exists(dir + "/revoked"));

  // A CA from before the list (simulated: the list removed): its certificates are
  // unlisted; their serials are refused unless the operator says so.
  fs::remove(dir + "/issued");
  auto refused = pki.revoke(c.serial_hex);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code, PkiErrc::kNotIssued);
  EXPECT_TRUE(pki.verify_client(c.cert_pem, now()).ok());
  auto forced = pki.revoke(c.serial_hex, azote::pki::UnlistedSerial::kRevoke);
  ASSERT_TRUE(forced.ok()) << forced.error().message();
  EXPECT_FALSE(forced->listed);
  EXPECT_FALSE(forced->already);
  EXPECT_FALSE(pki.verify_client(c.cert_pem, now()).ok());
  // Already revoked: said so, with or without the flag.
  auto again = pki.revoke(c.serial_hex);
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->already);
  EXPECT_EQ(slurp(dir + "/revoked"), c.serial_hex + "\n");
}

TEST(HostPki, MalformedIssuedFileFailsClosed) {
  TempDir tmp;
  const std::string dir = tmp / "pki";
  HostPki pki = open_ok(dir);
  const IssuedCert c = issue_ok(pki, "operator", "pat", now() - 60, now() + 3600);
  spit(dir + "/issued", c.serial_hex + "\nnot-hex\n");
  auto r = pki.revoke(c.serial_hex);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, PkiErrc::kCorrupt);
  auto i = pki.issue_client("operator", "quinn", now() - 60, now() + 3600);
  ASSERT_FALSE(i.ok());
  EXPECT_EQ(i.error().code, PkiErrc::kCorrupt);
  EXPECT_NE(i.error().context.find("line 2"), std::string::npos) << i.error().context;
}

TEST(HostPki, MalformedRevokedFileFailsClosed) {
  TempDir tmp;
  const std::string dir = tmp / "pki";
  HostPki pki = open_ok(dir);
  const IssuedCert c = issue_ok(pki, "operator", "erin", now() - 60, now() + 3600);
  spit(dir + "/revoked", "# comment\n\nabc\nnot-hex\n");
  auto r = pki.verify_client(c.cert_pem, now());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, PkiErrc::kCorrupt);
  EXPECT_NE(r.error().context.find("line 4"), std::string::npos) << r.error().context;
  EXPECT_FALSE(pki.revoke("abcd").ok());
  spit(dir + "/revoked", "# comment\n\nABC\r\n");  // comments, blank lines, CRLF are fine
  EXPECT_TRUE(pki.verify_client(c.cert_pem, now()).ok());
}

TEST(HostPki, MalformedInputIsRefused) {
  TempDir tmp;
  HostPki pki = open_ok(tmp / "pki");
  expect_refused(pki, "", now(), "no client certificate");
  expect_refused(pki, " \n", now(), "no client certificate");
  expect_refused(pki, "hello", now(), "client certificate is not PEM");
  expect_refused(pki, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", now(),
                 "client certificate is not PEM");
  // A truncated real certificate.
  const IssuedCert c = issue_ok(pki, "operator", "frank", now() - 60, now() + 3600);
  expect_refused(pki, c.cert_pem.substr(0, c.cert_pem.size() / 2), now(), "client certificate is not PEM");
  // A private key is not a certificate.
  expect_refused(pki, c.key_pem, now(), "client certificate is not PEM");
  // One flipped byte in the base64 body breaks the signature or the encoding.
  std::string bent = c.cert_pem;
  const size_t at = bent.size() - 100;
  bent[at] = bent[at] == 'A' ? 'B' : 'A';
  EXPECT_FALSE(pki.verify_client(bent, now()).ok());
}

TEST(HostPki, ServerAndCaCertificatesAreNotClientCertificates) {
  TempDir tmp;
  HostPki pki = open_ok(tmp / "pki");
  expect_refused(pki, pki.server_cert_pem(), now(),
                 "client certificate is not for client authentication (no clientAuth EKU)");
  EXPECT_FALSE(pki.verify_client(pki.ca_pem(), now()).ok());
}

TEST(HostPki, ClientCertificatesMustCarryClientAuthAndRole) {
  TempDir tmp;
  const std::string dir = tmp / "pki";
  HostPki pki = open_ok(dir);
  const std::vector<std::pair<int, const char*>> leaf = {{NID_basic_constraints, "critical,CA:FALSE"},
                                                         {NID_subject_key_identifier, "hash"},
                                                         {NID_authority_key_identifier, "keyid:always"}};
  auto with = [&](int nid, const char* value) {
    auto v = leaf;
    v.emplace_back(nid, value);
    return v;
  };
  // Signed by this CA but without any EKU: refused although the chain is fine.
  const std::string no_eku = sign_with_ca(dir, {{"OU", "operator"}, {"CN", "gina"}}, leaf);
  ASSERT_FALSE(no_eku.empty());
  expect_refused(pki, no_eku, now(), "client certificate is not for client authentication (no clientAuth EKU)");
  // clientAuth but no OU.
  const std::string no_role = sign_with_ca(dir, {{"CN", "gina"}}, with(NID_ext_key_usage, "clientAuth"));
  expect_refused(pki, no_role, now(), "client certificate has no role (OU)");
  const std::string no_name = sign_with_ca(dir, {{"OU", "operator"}}, with(NID_ext_key_usage, "clientAuth"));
  expect_refused(pki, no_name, now(), "client certificate has no name (CN)");
  const std::string two_roles = sign_with_ca(dir, {{"OU", "operator"}, {"OU", "admin"}, {"CN", "gina"}},
                                             with(NID_ext_key_usage, "clientAuth"));
  expect_refused(pki, two_roles, now(), "client certificate has more than one role (OU)");
  const std::string fine = sign_with_ca(dir, {{"OU", "operator"}, {"CN", "gina"}},
                                        with(NID_ext_key_usage, "clientAuth"));
  auto p = pki.verify_client(fine, now());
  ASSERT_TRUE(p.ok()) << p.error().message();
  EXPECT_EQ(p->serial_hex, "1092");  // 4242
}

TEST(HostPki, BadRoleOrNameIsRejected) {
  TempDir tmp;
  HostPki pki = open_ok(tmp / "pki");
  const int64_t t = now();
  for (const std::string& bad : {std::string(), std::string(65, 'a'), std::string("a b"), std::string("a/b"),
                                std::string("a,OU=admin"), std::string("caf\xc3\xa9"), std::string("x\ny")}) {
    auto r = pki.issue_client("operator", bad, t, t + 60);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.error().code, PkiErrc::kInvalid);
    EXPECT_NE(r.error().context.find("invalid name"), std::string::npos) << r.error().context;
    auto q = pki.issue_client(bad, "alice", t, t + 60);
    ASSERT_FALSE(q.ok());
    EXPECT_NE(q.error().context.find("invalid role"), std::string::npos) << q.error().context;
  }
  auto r = pki.issue_client("operator", "a b", t, t + 60);
  EXPECT_NE(r.error().context.find("\"a b\""), std::string::npos) << r.error().context;
  EXPECT_TRUE(pki.issue_client(std::string(64, 'r'), std::string(64, 'n'), t, t + 60).ok());
  auto backwards = pki.issue_client("operator", "alice", t, t);
  ASSERT_FALSE(backwards.ok());
  EXPECT_EQ(backwards.error().code, PkiErrc::kInvalid);
}

TEST(HostPki, PartialDirectoryIsAnError) {
  TempDir tmp;
  const std::string full = tmp / "full";
  { HostPki pki = open_ok(full); }
  const std::string ca_crt = slurp(full + "/ca.crt");

  // Only ca.crt: every other file is named as missing, nothing is generated.
  const std::string partial = tmp / "partial";
  ASSERT_EQ(::mkdir(partial.c_str(), 0700), 0);
  spit(partial + "/ca.crt", ca_crt);
  auto r = HostPki::open_or_create(partial);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, PkiErrc::kMissing);
  EXPECT_NE(r.error().context.find("missing ca.key"), std::string::npos) << r.error().context;
  EXPECT_NE(r.error().context.find("master.key"), std::string::npos) << r.error().context;
  EXPECT_FALSE(fs::exists(partial + "/ca.key"));
  EXPECT_EQ(slurp(partial + "/ca.crt"), ca_crt);

  // One file gone from a complete directory.
  fs::remove(full + "/ca.key");
  auto s = HostPki::open_or_create(full);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, PkiErrc::kMissing);
  EXPECT_NE(s.error().context.find("missing ca.key "), std::string::npos) << s.error().context;
  EXPECT_EQ(slurp(full + "/ca.crt"), ca_crt);
}

TEST(HostPki, MismatchedOrCorruptFilesAreErrors) {
  TempDir tmp;
  const std::string a = tmp / "a", b = tmp / "b";
  { HostPki pa = open_ok(a); HostPki pb = open_ok(b); }
  // ca.key from another host.
  fs::copy_file(b + "/ca.key", a + "/ca.key", fs::copy_options::overwrite_existing);
  auto r = HostPki::open_or_create(a);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, PkiErrc::kCorrupt);
  EXPECT_NE(r.error().context.find("does not match"), std::string::npos) << r.error().context;
  // Short master key.
  fs::copy_file(b + "/ca.key", a + "/ca.key", fs::copy_options::overwrite_existing);
  spit(b + "/master.key", "short");
  auto s = HostPki::open_or_create(b);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, PkiErrc::kCorrupt);
  EXPECT_NE(s.error().context.find("master.key"), std::string::npos) << s.error().context;
}

TEST(HostPki, OpensslCliAcceptsIssuedCertificates) {
  if (!have_program("openssl")) GTEST_SKIP() << "the openssl command is not installed";
  TempDir tmp;
  const std::string dir = tmp / "pki";
  HostPki pki = open_ok(dir);
  const IssuedCert c = issue_ok(pki, "operator", "henry", now() - 60, now() + 3600);
  spit(tmp / "client.crt", c.cert_pem);
  std::string out;
  EXPECT_EQ(run("openssl verify -CAfile " + dir + "/ca.crt " + (tmp / "client.crt"), &out), 0) << out;
  EXPECT_NE(out.find(": OK"), std::string::npos) << out;
  EXPECT_EQ(run("openssl verify -purpose sslclient -x509_strict -CAfile " + dir + "/ca.crt " + (tmp / "client.crt"),
                &out),
            0)
      << out;
  EXPECT_EQ(run("openssl verify -purpose sslserver -x509_strict -CAfile " + dir + "/ca.crt " + dir + "/server.crt",
                &out),
            0)
      << out;
  // And it refuses a certificate from another host's CA.
  HostPki other = open_ok(tmp / "other");
  spit(tmp / "foreign.crt", issue_ok(other, "operator", "henry", now() - 60, now() + 3600).cert_pem);
  EXPECT_NE(run("openssl verify -CAfile " + dir + "/ca.crt " + (tmp / "foreign.crt"), &out), 0) << out;
  // The fingerprint matches the CLI's.
  ASSERT_EQ(run("openssl x509 -noout -fingerprint -sha256 -in " + (tmp / "client.crt"), &out), 0) << out;
  std::string cli;
  for (char ch : out.substr(out.find('=') + 1)) {
    if (std::isxdigit(static_cast<unsigned char>(ch))) cli += static_cast<char>(std::tolower(ch));
  }
  auto fp = azote::pki::fingerprint_sha256(c.cert_pem);
  ASSERT_TRUE(fp.ok());
  EXPECT_EQ(*fp, cli);
}

TEST(HostPki, ConcurrentVerifyWhileRevoking) {
  TempDir tmp;
  const std::string dir = tmp / "pki";
  HostPki pki = open_ok(dir);
  HostPki admin = open_ok(dir);
  const IssuedCert good = issue_ok(pki, "operator", "ivan", now() - 60, now() + 3600);
  std::atomic<int> failures{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&] {
      while (!stop.load()) {
        if (!pki.verify_client(good.cert_pem, now()).ok()) failures.fetch_add(1);
      }
    });
  }
  for (int i = 1; i <= 40; ++i)
    ASSERT_TRUE(admin.revoke(std::to_string(i * 1000), azote::pki::UnlistedSerial::kRevoke).ok());
  stop.store(true);
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  ASSERT_TRUE(admin.revoke(good.serial_hex).ok());
  EXPECT_FALSE(pki.verify_client(good.cert_pem, now()).ok());
}

TEST(Helpers, FingerprintAndReadPemFile) {
  TempDir tmp;
  HostPki pki = open_ok(tmp / "pki");
  auto a = azote::pki::fingerprint_sha256(pki.ca_pem());
  auto b = azote::pki::fingerprint_sha256(pki.server_cert_pem());
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->size(), 64u);
  EXPECT_EQ(a->find_first_not_of("0123456789abcdef"), std::string::npos);
  EXPECT_NE(*a, *b);
  EXPECT_EQ(*azote::pki::fingerprint_sha256(pki.ca_pem()), *a);
  EXPECT_FALSE(azote::pki::fingerprint_sha256("nope").ok());

  auto pem = azote::pki::read_pem_file(tmp / "pki/ca.crt");
  ASSERT_TRUE(pem.ok());
  EXPECT_EQ(*pem, pki.ca_pem());
  auto missing = azote::pki::read_pem_file(tmp / "absent.pem");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, PkiErrc::kIo);
  EXPECT_EQ(missing.error().errnum, ENOENT);
  EXPECT_NE(missing.error().message().find("absent.pem"), std::string::npos);
  spit(tmp / "empty.pem", "");
  EXPECT_EQ(azote::pki::read_pem_file(tmp / "empty.pem").error().code, PkiErrc::kCorrupt);
  spit(tmp / "text.pem", "hello\n");
  auto text = azote::pki::read_pem_file(tmp / "text.pem");
  ASSERT_FALSE(text.ok());
  EXPECT_NE(text.error().context.find("not PEM"), std::string::npos);
  EXPECT_EQ(azote::pki::read_pem_file(tmp.path()).error().code, PkiErrc::kInvalid);  // a directory
}

// ---- key wrapping ----

std::array<uint8_t, 32> test_master(uint8_t seed) {
  std::array<uint8_t, 32> k{};
  for (size_t i = 0; i < k.size(); ++i) k[i] = static_cast<uint8_t>(seed + i * 7);
  return k;
}

TEST(KeyWrap, RoundTrip) {
  const auto master = test_master(1);
  std::vector<uint8_t> key(64);
  for (size_t i = 0; i < key.size(); ++i) key[i] = static_cast<uint8_t>(i * 13 + 5);
  auto w = azote::pki::wrap_key(master, key, "volume:vol-1");
  ASSERT_TRUE(w.ok()) << w.error().message();
  ASSERT_EQ(w->size(), key.size() + azote::pki::kWrapOverhead);
  EXPECT_EQ((*w)[0], azote::pki::kWrapVersion);
  auto u = azote::pki::unwrap_key(master, *w, "volume:vol-1");
  ASSERT_TRUE(u.ok()) << u.error().message();
  EXPECT_EQ(*u, key);
  azote::pki::wipe(*u);
  EXPECT_EQ(*u, std::vector<uint8_t>(64, 0));

  // Random nonces: wrapping twice gives different outputs that both unwrap.
  auto w2 = azote::pki::wrap_key(master, key, "volume:vol-1");
  ASSERT_TRUE(w2.ok());
  EXPECT_NE(*w, *w2);
  EXPECT_TRUE(azote::pki::unwrap_key(master, *w2, "volume:vol-1").ok());
  // Empty plaintext and empty context work too.
  auto e = azote::pki::wrap_key(master, {}, "");
  ASSERT_TRUE(e.ok());
  auto ue = azote::pki::unwrap_key(master, *e, "");
  ASSERT_TRUE(ue.ok());
  EXPECT_TRUE(ue->empty());
}

TEST(KeyWrap, AnyFlippedByteFails) {
  const auto master = test_master(2);
  const std::vector<uint8_t> key(32, 0xab);
  auto w = azote::pki::wrap_key(master, key, "volume:vol-2");
  ASSERT_TRUE(w.ok());
  for (size_t i = 0; i < w->size(); ++i) {
    for (uint8_t bit : {uint8_t{0x01}, uint8_t{0x80}}) {
      std::vector<uint8_t> bent = *w;
      bent[i] ^= bit;
      auto u = azote::pki::unwrap_key(master, bent, "volume:vol-2");
      ASSERT_FALSE(u.ok()) << "byte " << i;
      EXPECT_EQ(u.error().code, PkiErrc::kUnwrap);
    }
  }
  // Truncated or extended input.
  for (size_t n = 0; n < w->size(); ++n) {
    EXPECT_FALSE(azote::pki::unwrap_key(master, std::span(w->data(), n), "volume:vol-2").ok()) << n;
  }
  std::vector<uint8_t> longer = *w;
  longer.push_back(0);
  EXPECT_FALSE(azote::pki::unwrap_key(master, longer, "volume:vol-2").ok());
  auto shortr = azote::pki::unwrap_key(master, std::span(w->data(), 5), "volume:vol-2");
  EXPECT_NE(shortr.error().context.find("too short"), std::string::npos) << shortr.error().context;
}

TEST(KeyWrap, WrongContextOrMasterFails) {
  const auto master = test_master(3);
  const std::vector<uint8_t> key(32, 0x5a);
  auto w = azote::pki::wrap_key(master, key, "volume:vol-3");
  ASSERT_TRUE(w.ok());
  for (const char* ctx : {"volume:vol-4", "volume:vol-3 ", "", "VOLUME:vol-3"}) {
    auto u = azote::pki::unwrap_key(master, *w, ctx);
    ASSERT_FALSE(u.ok()) << ctx;
    EXPECT_EQ(u.error().code, PkiErrc::kUnwrap);
    EXPECT_NE(u.error().context.find("failed authentication"), std::string::npos);
  }
  auto other = master;
  other[31] ^= 1;
  EXPECT_FALSE(azote::pki::unwrap_key(other, *w, "volume:vol-3").ok());

  // With the host's own master key.
  TempDir tmp;
  HostPki a = open_ok(tmp / "a");
  HostPki b = open_ok(tmp / "b");
  auto wa = azote::pki::wrap_key(a.master_key(), key, "volume:vol-3");
  ASSERT_TRUE(wa.ok());
  EXPECT_TRUE(azote::pki::unwrap_key(a.master_key(), *wa, "volume:vol-3").ok());
  EXPECT_FALSE(azote::pki::unwrap_key(b.master_key(), *wa, "volume:vol-3").ok());
}

}  // namespace
