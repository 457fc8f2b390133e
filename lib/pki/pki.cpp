#include "pki/pki.hpp"

#include <fcntl.h>
#include <openssl/rand.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <ctime>
#include <mutex>
#include <optional>
#include <unordered_set>
#include <utility>
#include <vector>

#include "base/unique_fd.hpp"
#include "pki/ossl.hpp"

namespace azote::pki {
namespace {

constexpr const char* kCaKey = "ca.key";
constexpr const char* kCaCrt = "ca.crt";
constexpr const char* kServerKey = "server.key";
constexpr const char* kServerCrt = "server.crt";
constexpr const char* kMasterKey = "master.key";
constexpr const char* kRevoked = "revoked";
constexpr const char* kIssued = "issued";

constexpr int64_t kDay = 86400;
constexpr int64_t kBackdate = 60;  // tolerate this much clock skew between hosts
constexpr int64_t kCaValidity = 3652 * kDay;
constexpr int64_t kServerValidity = 731 * kDay;
constexpr size_t kMaxLabel = 64;
constexpr size_t kMaxSerialHex = 40;  // RFC 5280: at most 20 octets
constexpr size_t kMaxRevokedBytes = size_t{64} << 20;
constexpr size_t kMaxIssuedBytes = size_t{64} << 20;  // about 2 million serials

Unexpected<PkiError> crypto_error(const std::string& what) {
  return make_error(PkiErrc::kCrypto, what + ": " + ossl::take_errors());
}
Unexpected<PkiError> refuse(std::string why) {
  ERR_clear_error();
  return make_error(PkiErrc::kRefused, std::move(why));
}
Unexpected<PkiError> corrupt(std::string why) {
  ERR_clear_error();
  return make_error(PkiErrc::kCorrupt, std::move(why));
}

void cleanse(std::string& s) {
  if (!s.empty()) OPENSSL_cleanse(s.data(), s.size());
}

// A value as it may be shown in an error: printable ASCII, others as \xNN, truncated.
std::string printable(std::string_view s) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < s.size() && i < 80; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += digits[c >> 4];
      out += digits[c & 0xf];
    }
  }
  if (s.size() > 80) out += "...";
  return out;
}

bool valid_label(std::string_view s) {
  if (s.empty() || s.size() > kMaxLabel) return false;
  for (char c : s) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                    c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

std::string iso8601(int64_t t) {
  const auto tt = static_cast<time_t>(t);
  struct tm tm {};
  if (gmtime_r(&tt, &tm) == nullptr) return std::to_string(t);
  char buf[32];
  if (std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) return std::to_string(t);
  return buf;
}

std::optional<int64_t> asn1_to_unix(const ASN1_TIME* t) {
  struct tm tm {};
  if (t == nullptr || ASN1_TIME_to_tm(t, &tm) != 1) return std::nullopt;
  return static_cast<int64_t>(timegm(&tm));
}

std::string serial_hex_of(const X509* cert) {
  ossl::BnPtr bn(ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), nullptr));
  if (!bn) return "";
  ossl::StringPtr hex(BN_bn2hex(bn.get()));
  if (!hex) return "";
  auto norm = normalize_serial(hex.get());
  return norm.ok() ? *norm : std::string();
}

PkiResult<std::string> to_pem(X509* cert) {
  ossl::BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509(bio.get(), cert) != 1) return crypto_error("encode certificate");
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(n));
}

PkiResult<std::string> to_pem(EVP_PKEY* key) {
  ossl::BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    return crypto_error("encode private key");
  }
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);
  std::string out(data, static_cast<size_t>(n));
  OPENSSL_cleanse(data, static_cast<size_t>(n));
  return out;
}

// Never prompt on a terminal for a passphrase: our keys have none.
int no_passphrase(char*, int, int, void*) { return 0; }

PkiResult<ossl::PkeyPtr> new_p256_key() {
  ossl::PkeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  if (!key) return crypto_error("generate P-256 key");
  return key;
}

struct CertSpec {
  std::vector<std::pair<const char*, std::string>> subject;  // in order, e.g. {"OU", role}
  int64_t not_before = 0;
  int64_t not_after = 0;
  std::vector<std::pair<int, const char*>> extensions;  // NID, OpenSSL config value
};

struct SignedCert {
  ossl::X509Ptr cert;
  std::string serial_hex;
};

// Builds and signs a certificate for `key`. issuer == nullptr: self-signed.
PkiResult<SignedCert> make_cert(const CertSpec& spec, EVP_PKEY* key, X509* issuer, EVP_PKEY* issuer_key) {
  ossl::X509Ptr cert(X509_new());
  if (!cert || X509_set_version(cert.get(), X509_VERSION_3) != 1) return crypto_error("new certificate");

  // A random positive 128-bit serial (never zero).
  std::array<unsigned char, 16> raw{};
  do {
    if (RAND_bytes(raw.data(), static_cast<int>(raw.size())) != 1) return crypto_error("random serial");
  } while (std::all_of(raw.begin(), raw.end(), [](unsigned char b) { return b == 0; }));
  ossl::BnPtr bn(BN_bin2bn(raw.data(), static_cast<int>(raw.size()), nullptr));
  if (!bn || BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(cert.get())) == nullptr) {
    return crypto_error("set serial");
  }

  X509_NAME* subject = X509_get_subject_name(cert.get());
  for (const auto& [field, value] : spec.subject) {
    if (X509_NAME_add_entry_by_txt(subject, field, MBSTRING_UTF8,
                                   reinterpret_cast<const unsigned char*>(value.data()),
                                   static_cast<int>(value.size()), -1, 0) != 1) {
      return crypto_error(std::string("set subject ") + field);
    }
  }
  X509_NAME* issuer_name = issuer != nullptr ? X509_get_subject_name(issuer) : subject;
  if (X509_set_issuer_name(cert.get(), issuer_name) != 1) return crypto_error("set issuer");
  if (ASN1_TIME_set(X509_getm_notBefore(cert.get()), static_cast<time_t>(spec.not_before)) == nullptr ||
      ASN1_TIME_set(X509_getm_notAfter(cert.get()), static_cast<time_t>(spec.not_after)) == nullptr) {
    return crypto_error("set validity");
  }
  if (X509_set_pubkey(cert.get(), key) != 1) return crypto_error("set public key");

  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer != nullptr ? issuer : cert.get(), cert.get(), nullptr, nullptr, 0);
  for (const auto& [nid, value] : spec.extensions) {
    ossl::ExtPtr ext(X509V3_EXT_nconf_nid(nullptr, &ctx, nid, value));
    if (!ext || X509_add_ext(cert.get(), ext.get(), -1) != 1) {
      return crypto_error(std::string("add extension ") + OBJ_nid2sn(nid) + "=" + value);
    }
  }
  if (X509_sign(cert.get(), issuer_key, EVP_sha256()) <= 0) return crypto_error("sign certificate");
  std::string serial = serial_hex_of(cert.get());
  return SignedCert{std::move(cert), std::move(serial)};
}

// The single value of `nid` in `name`: nullopt if absent, "" if repeated or not UTF-8.
std::optional<std::string> name_entry(const X509_NAME* name, int nid, bool* repeated) {
  *repeated = false;
  const int i = X509_NAME_get_index_by_NID(name, nid, -1);
  if (i < 0) return std::nullopt;
  if (X509_NAME_get_index_by_NID(name, nid, i) >= 0) {
    *repeated = true;
    return std::string();
  }
  const ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i));
  unsigned char* utf8 = nullptr;
  const int n = ASN1_STRING_to_UTF8(&utf8, data);
  if (n < 0) return std::string();
  ossl::BytesPtr owner(utf8);
  return std::string(reinterpret_cast<const char*>(utf8), static_cast<size_t>(n));
}

// Identity of the `revoked` file as last read: any change (a rename replaces the
// inode; an in-place edit changes size, mtime or ctime) triggers a re-read.
struct FileKey {
  bool exists = false;
  dev_t dev = 0;
  ino_t ino = 0;
  off_t size = 0;
  int64_t mtime_ns = 0;
  int64_t ctime_ns = 0;
  bool operator==(const FileKey&) const = default;
};

FileKey key_of(const struct stat& st) {
  return FileKey{true, st.st_dev, st.st_ino, st.st_size,
                 int64_t{st.st_mtim.tv_sec} * 1'000'000'000 + st.st_mtim.tv_nsec,
                 int64_t{st.st_ctim.tv_sec} * 1'000'000'000 + st.st_ctim.tv_nsec};
}

// `revoked` and `issued`: one hex serial per line; blank lines and # comments allowed.
PkiResult<std::unordered_set<std::string>> parse_serials(const std::string& path, const std::string& text) {
  std::unordered_set<std::string> out;
  size_t pos = 0;
  int line_no = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) line.pop_back();
    if (line.empty() || line[0] == '#') continue;
    auto serial = normalize_serial(line);
    if (!serial.ok()) {
      return corrupt(path + " line " + std::to_string(line_no) + " is not a hex serial");
    }
    out.insert(std::move(*serial));
  }
  return out;
}

// A serial list file as text (appended to as a whole) and as a set. Absent = empty.
struct SerialList {
  std::string text;
  std::unordered_set<std::string> serials;
};
PkiResult<SerialList> read_serials(const std::string& path, size_t max_bytes) {
  SerialList out;
  auto current = read_file(path, max_bytes);
  if (current.ok()) {
    out.text = std::move(*current);
  } else if (current.error().errnum != ENOENT) {
    return Unexpected{current.error()};
  }
  AZOTE_TRY(serials, parse_serials(path, out.text));
  out.serials = std::move(serials);
  return out;
}

// Appends one serial by rewriting the file atomically: a reader (or a crash) sees the
// list before or after, never half a line.
PkiResult<void> append_serial(const std::string& path, SerialList list, const std::string& serial) {
  if (!list.text.empty() && list.text.back() != '\n') list.text += '\n';
  list.text += serial + "\n";
  return write_file_atomic(path, list.text, 0644);
}

// An exclusive flock on the PKI directory: serialises creation, issuing and revocation
// across threads and processes. Released when destroyed.
PkiResult<UniqueFd> lock_dir(const std::string& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) return errno_error(PkiErrc::kIo, "open " + dir);
  while (::flock(fd.get(), LOCK_EX) != 0) {
    if (errno != EINTR) return errno_error(PkiErrc::kIo, "lock " + dir);
  }
  return fd;
}

PkiResult<void> make_dirs(const std::string& dir) {
  for (size_t pos = 1; pos <= dir.size(); ++pos) {
    if (pos != dir.size() && dir[pos] != '/') continue;
    const std::string part = dir.substr(0, pos);
    const bool leaf = pos == dir.size();
    if (::mkdir(part.c_str(), leaf ? 0700 : 0755) == 0) continue;
    if (errno != EEXIST) return errno_error(PkiErrc::kIo, "create directory " + part);
  }
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) return errno_error(PkiErrc::kIo, "stat " + dir);
  if (!S_ISDIR(st.st_mode)) return make_error(PkiErrc::kInvalid, dir + " is not a directory");
  return {};
}

}  // namespace

PkiResult<std::string> normalize_serial(const std::string& hex) {
  if (hex.empty() || hex.size() > kMaxSerialHex) {
    return make_error(PkiErrc::kInvalid, "serial \"" + printable(hex) + "\" is not 1-40 hex digits");
  }
  std::string out;
  for (char c : hex) {
    if (c >= 'A' && c <= 'F') c = static_cast<char>(c - 'A' + 'a');
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
      return make_error(PkiErrc::kInvalid, "serial \"" + printable(hex) + "\" is not 1-40 hex digits");
    }
    if (out.empty() && c == '0') continue;
    out += c;
  }
  if (out.empty()) out = "0";
  return out;
}

PkiResult<std::string> fingerprint_sha256(const std::string& cert_pem) {
  ossl::X509Ptr cert = ossl::parse_cert(cert_pem);
  if (!cert) {
    ERR_clear_error();
    return make_error(PkiErrc::kInvalid, "not a PEM certificate");
  }
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (X509_digest(cert.get(), EVP_sha256(), md, &n) != 1) return crypto_error("certificate digest");
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < n; ++i) {
    out += digits[md[i] >> 4];
    out += digits[md[i] & 0xf];
  }
  return out;
}

struct HostPki::Impl {
  std::string dir;
  std::string ca_pem;
  std::string server_cert_pem;
  std::string server_key_pem;
  ossl::X509Ptr ca_cert;
  ossl::PkeyPtr ca_key;
  ossl::StorePtr store;  // the CA as the only trust anchor; read-only after open
  std::array<uint8_t, 32> master{};

  std::mutex mu;  // guards the revocation cache
  FileKey revoked_key;
  bool revoked_loaded = false;
  std::unordered_set<std::string> revoked;

  Impl() = default;
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;
  ~Impl() {
    OPENSSL_cleanse(master.data(), master.size());
    cleanse(server_key_pem);
  }

  std::string path(const char* name) const { return dir + "/" + name; }
  PkiResult<void> create() const;
  PkiResult<void> load();
  PkiResult<bool> is_revoked(const std::string& serial);
};

PkiResult<void> HostPki::Impl::create() const {
  const int64_t now = static_cast<int64_t>(std::time(nullptr));

  std::array<uint8_t, 32> master_bytes{};
  if (RAND_priv_bytes(master_bytes.data(), static_cast<int>(master_bytes.size())) != 1) {
    return crypto_error("generate master key");
  }
  auto wrote = write_file_atomic(
      path(kMasterKey), std::string_view(reinterpret_cast<const char*>(master_bytes.data()), master_bytes.size()),
      0600);
  OPENSSL_cleanse(master_bytes.data(), master_bytes.size());
  AZOTE_TRYV(wrote);

  AZOTE_TRY(ca_key_new, new_p256_key());
  CertSpec ca_spec{{{"CN", "azote host CA"}},
                   now - kBackdate,
                   now + kCaValidity,
                   {{NID_basic_constraints, "critical,CA:TRUE"},
                    {NID_key_usage, "critical,keyCertSign,cRLSign"},
                    {NID_subject_key_identifier, "hash"}}};
  AZOTE_TRY(ca, make_cert(ca_spec, ca_key_new.get(), nullptr, ca_key_new.get()));

  AZOTE_TRY(server_key, new_p256_key());
  CertSpec server_spec{{{"CN", "azote-controller"}},
                       now - kBackdate,
                       now + kServerValidity,
                       {{NID_basic_constraints, "critical,CA:FALSE"},
                        {NID_key_usage, "critical,digitalSignature"},
                        {NID_ext_key_usage, "serverAuth"},
                        {NID_subject_key_identifier, "hash"},
                        {NID_authority_key_identifier, "keyid:always"},
                        {NID_subject_alt_name, "DNS:azote-controller,DNS:localhost,IP:127.0.0.1"}}};
  AZOTE_TRY(server, make_cert(server_spec, server_key.get(), ca.cert.get(), ca_key_new.get()));

  AZOTE_TRY(ca_key_pem, to_pem(ca_key_new.get()));
  auto w1 = write_file_atomic(path(kCaKey), ca_key_pem, 0600);
  cleanse(ca_key_pem);
  AZOTE_TRYV(w1);
  AZOTE_TRY(ca_pem_new, to_pem(ca.cert.get()));
  AZOTE_TRYV(write_file_atomic(path(kCaCrt), ca_pem_new, 0644));
  AZOTE_TRY(server_key_pem_new, to_pem(server_key.get()));
  auto w2 = write_file_atomic(path(kServerKey), server_key_pem_new, 0600);
  cleanse(server_key_pem_new);
  AZOTE_TRYV(w2);
  AZOTE_TRY(server_pem, to_pem(server.cert.get()));
  AZOTE_TRYV(write_file_atomic(path(kServerCrt), server_pem, 0644));
  return {};
}

PkiResult<void> HostPki::Impl::load() {
  for (const char* secret : {kCaKey, kServerKey, kMasterKey}) {
    struct stat st {};
    if (::stat(path(secret).c_str(), &st) != 0) return errno_error(PkiErrc::kIo, "stat " + path(secret));
    if ((st.st_mode & 077) != 0) {
      char mode[8];
      std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
      return make_error(PkiErrc::kInsecure, path(secret) + " is readable by group or others (mode " + mode +
                                                "); expected 0600");
    }
  }

  AZOTE_TRY(ca_text, read_pem_file(path(kCaCrt)));
  ca_cert = ossl::parse_cert(ca_text);
  if (!ca_cert) return corrupt(path(kCaCrt) + " is not a PEM certificate");
  if (X509_check_ca(ca_cert.get()) == 0) return corrupt(path(kCaCrt) + " is not a CA certificate");

  // Parses a private key file; its PEM text goes to *keep_text if given, else is wiped.
  auto read_key = [this](const char* name, std::string* keep_text) -> PkiResult<ossl::PkeyPtr> {
    AZOTE_TRY(text, read_pem_file(path(name)));
    ossl::BioPtr bio = ossl::mem_bio(text);
    ossl::PkeyPtr key(bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, no_passphrase, nullptr) : nullptr);
    if (!key || keep_text == nullptr) cleanse(text);
    if (!key) return corrupt(path(name) + " is not an unencrypted PEM private key");
    if (keep_text != nullptr) *keep_text = std::move(text);
    return key;
  };
  AZOTE_TRY(ca_key_loaded, read_key(kCaKey, nullptr));
  ca_key = std::move(ca_key_loaded);
  if (X509_check_private_key(ca_cert.get(), ca_key.get()) != 1) {
    return corrupt(path(kCaKey) + " does not match " + path(kCaCrt));
  }

  AZOTE_TRY(server_text, read_pem_file(path(kServerCrt)));
  ossl::X509Ptr server = ossl::parse_cert(server_text);
  if (!server) return corrupt(path(kServerCrt) + " is not a PEM certificate");
  if (X509_verify(server.get(), X509_get0_pubkey(ca_cert.get())) != 1) {
    return corrupt(path(kServerCrt) + " is not signed by " + path(kCaCrt));
  }
  AZOTE_TRY(server_key, read_key(kServerKey, &server_key_pem));  // wiped by ~Impl
  if (X509_check_private_key(server.get(), server_key.get()) != 1) {
    return corrupt(path(kServerKey) + " does not match " + path(kServerCrt));
  }

  AZOTE_TRY(master_text, read_file(path(kMasterKey), master.size() + 1));
  if (master_text.size() != master.size()) {
    const size_t n = master_text.size();
    cleanse(master_text);
    return corrupt(path(kMasterKey) + " must hold exactly 32 bytes (holds " + std::to_string(n) + ")");
  }
  std::copy(master_text.begin(), master_text.end(), master.begin());
  cleanse(master_text);

  store.reset(X509_STORE_new());
  if (!store || X509_STORE_add_cert(store.get(), ca_cert.get()) != 1) return crypto_error("build trust store");

  ca_pem = std::move(ca_text);
  server_cert_pem = std::move(server_text);
  return {};
}

PkiResult<bool> HostPki::Impl::is_revoked(const std::string& serial) {
  const std::string file = path(kRevoked);
  std::lock_guard lock(mu);
  struct stat st {};
  FileKey now_key;
  if (::stat(file.c_str(), &st) == 0) {
    now_key = key_of(st);
  } else if (errno != ENOENT) {
    return errno_error(PkiErrc::kIo, "stat " + file);
  }
  if (!revoked_loaded || !(now_key == revoked_key)) {
    // Read after the stat: the contents are never older than the key cached with them,
    // so a replacement racing with this read only causes one more re-read next call.
    std::unordered_set<std::string> fresh;
    if (now_key.exists) {
      auto text = read_file(file, kMaxRevokedBytes);
      if (text.ok()) {
        AZOTE_TRY(parsed, parse_serials(file, *text));
        fresh = std::move(parsed);
      } else if (text.error().errnum == ENOENT) {
        now_key = FileKey{};
      } else {
        return Unexpected{text.error()};
      }
    }
    revoked = std::move(fresh);
    revoked_key = now_key;
    revoked_loaded = true;
  }
  return revoked.count(serial) != 0;
}

HostPki::HostPki(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HostPki::HostPki(HostPki&&) noexcept = default;
HostPki& HostPki::operator=(HostPki&&) noexcept = default;
HostPki::~HostPki() = default;

const std::string& HostPki::dir() const { return impl_->dir; }
const std::string& HostPki::ca_pem() const { return impl_->ca_pem; }
const std::string& HostPki::server_cert_pem() const { return impl_->server_cert_pem; }
const std::string& HostPki::server_key_pem() const { return impl_->server_key_pem; }
std::span<const uint8_t, 32> HostPki::master_key() const { return impl_->master; }

PkiResult<HostPki> HostPki::open_or_create(const std::string& dir_in) {
  std::string dir = dir_in;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  if (dir.empty()) return make_error(PkiErrc::kInvalid, "empty PKI directory path");
  AZOTE_TRYV(make_dirs(dir));
  AZOTE_TRY(lock, lock_dir(dir));

  auto impl = std::make_unique<Impl>();
  impl->dir = dir;
  std::string present, missing;
  for (const char* name : {kCaKey, kCaCrt, kServerKey, kServerCrt, kMasterKey}) {
    struct stat st {};
    const bool exists = ::stat(impl->path(name).c_str(), &st) == 0;
    if (!exists && errno != ENOENT) return errno_error(PkiErrc::kIo, "stat " + impl->path(name));
    std::string& list = exists ? present : missing;
    if (!list.empty()) list += ", ";
    list += name;
  }
  if (present.empty()) {
    AZOTE_TRYV(impl->create());
  } else if (!missing.empty()) {
    return make_error(PkiErrc::kMissing, "PKI directory " + dir + " is incomplete: missing " + missing +
                                             " (has " + present +
                                             "); refusing to regenerate, restore the files or remove the directory");
  }
  AZOTE_TRYV(impl->load());
  return HostPki(std::move(impl));
}

PkiResult<IssuedCert> HostPki::issue_client(const std::string& role, const std::string& name,
                                            int64_t not_before_unix, int64_t not_after_unix) const {
  if (!valid_label(role)) {
    return make_error(PkiErrc::kInvalid,
                      "invalid role \"" + printable(role) + "\": want 1-64 characters of [A-Za-z0-9._-]");
  }
  if (!valid_label(name)) {
    return make_error(PkiErrc::kInvalid,
                      "invalid name \"" + printable(name) + "\": want 1-64 characters of [A-Za-z0-9._-]");
  }
  if (not_after_unix <= not_before_unix) {
    return make_error(PkiErrc::kInvalid, "certificate validity ends (" + iso8601(not_after_unix) +
                                             ") before it starts (" + iso8601(not_before_unix) + ")");
  }
  AZOTE_TRY(key, new_p256_key());
  CertSpec spec{{{"OU", role}, {"CN", name}},
                not_before_unix,
                not_after_unix,
                {{NID_basic_constraints, "critical,CA:FALSE"},
                 {NID_key_usage, "critical,digitalSignature"},
                 {NID_ext_key_usage, "clientAuth"},
                 {NID_subject_key_identifier, "hash"},
                 {NID_authority_key_identifier, "keyid:always"}}};
  AZOTE_TRY(signed_cert, make_cert(spec, key.get(), impl_->ca_cert.get(), impl_->ca_key.get()));
  AZOTE_TRY(cert_pem, to_pem(signed_cert.cert.get()));
  AZOTE_TRY(key_pem, to_pem(key.get()));
  if (signed_cert.serial_hex.empty()) return make_error(PkiErrc::kCrypto, "issued certificate has an unreadable serial");
  // On the list before it leaves: revoke() trusts the list to tell a real serial from a
  // typo. A listed serial whose certificate never left (a failure after this) is
  // harmless.
  {
    AZOTE_TRY(lock, lock_dir(impl_->dir));
    AZOTE_TRY(issued, read_serials(impl_->path(kIssued), kMaxIssuedBytes));
    // 128 random bits cannot collide by chance; if they did, refuse rather than hand
    // out a second certificate under one serial (revoking one would revoke both).
    if (issued.serials.count(signed_cert.serial_hex) != 0)
      return make_error(PkiErrc::kCrypto, "serial " + signed_cert.serial_hex + " was issued before");
    AZOTE_TRYV(append_serial(impl_->path(kIssued), std::move(issued), signed_cert.serial_hex));
  }
  return IssuedCert{std::move(cert_pem), std::move(key_pem), std::move(signed_cert.serial_hex)};
}

PkiResult<IssuedCert> HostPki::issue_client(const std::string& role, const std::string& name,
                                            std::chrono::seconds validity) const {
  const int64_t now = static_cast<int64_t>(std::time(nullptr));
  return issue_client(role, name, now - kBackdate, now + static_cast<int64_t>(validity.count()));
}

PkiResult<Revocation> HostPki::revoke(const std::string& serial_hex, UnlistedSerial unlisted) const {
  AZOTE_TRY(serial, normalize_serial(serial_hex));
  AZOTE_TRY(lock, lock_dir(impl_->dir));
  AZOTE_TRY(revoked, read_serials(impl_->path(kRevoked), kMaxRevokedBytes));
  AZOTE_TRY(issued, read_serials(impl_->path(kIssued), kMaxIssuedBytes));
  Revocation out{serial, revoked.serials.count(serial) != 0, issued.serials.count(serial) != 0};
  if (out.already) return out;
  // Adding a serial nobody holds changes nothing but would tell the operator the
  // intended certificate is revoked when it is not.
  if (!out.listed && unlisted == UnlistedSerial::kRefuse)
    return make_error(PkiErrc::kNotIssued, "serial " + serial + " was never issued by this host's CA (it is not in " +
                                               impl_->path(kIssued) + ")");
  AZOTE_TRYV(append_serial(impl_->path(kRevoked), std::move(revoked), serial));
  return out;
}

PkiResult<Principal> HostPki::verify_client(const std::string& leaf_pem) const {
  return verify_client(leaf_pem, static_cast<int64_t>(std::time(nullptr)));
}

PkiResult<Principal> HostPki::verify_client(const std::string& leaf_pem, int64_t now_unix) const {
  if (leaf_pem.find_first_not_of(" \t\r\n") == std::string::npos) return refuse("no client certificate");
  ossl::X509Ptr leaf = ossl::parse_cert(leaf_pem);
  if (!leaf) return refuse("client certificate is not PEM");

  ossl::StoreCtxPtr ctx(X509_STORE_CTX_new());
  if (!ctx || X509_STORE_CTX_init(ctx.get(), impl_->store.get(), leaf.get(), nullptr) != 1) {
    return crypto_error("verify_client: init");
  }
  X509_VERIFY_PARAM* param = X509_STORE_CTX_get0_param(ctx.get());
  X509_VERIFY_PARAM_set_time(param, static_cast<time_t>(now_unix));
  X509_VERIFY_PARAM_set_purpose(param, X509_PURPOSE_SSL_CLIENT);
  X509_VERIFY_PARAM_set_flags(param, X509_V_FLAG_X509_STRICT);
  if (X509_verify_cert(ctx.get()) != 1) {
    const int err = X509_STORE_CTX_get_error(ctx.get());
    const bool leaf_err = X509_STORE_CTX_get_error_depth(ctx.get()) == 0;
    const X509* at = X509_STORE_CTX_get_current_cert(ctx.get());
    if (at == nullptr) at = leaf.get();
    const std::string who = leaf_err ? "client certificate" : "this host's CA certificate";
    switch (err) {
      case X509_V_ERR_CERT_HAS_EXPIRED: {
        auto t = asn1_to_unix(X509_get0_notAfter(at));
        return refuse(who + " expired at " + (t ? iso8601(*t) : "an unreadable time"));
      }
      case X509_V_ERR_CERT_NOT_YET_VALID: {
        auto t = asn1_to_unix(X509_get0_notBefore(at));
        return refuse(who + " not valid before " + (t ? iso8601(*t) : "an unreadable time"));
      }
      case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
      case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
      case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
      case X509_V_ERR_CERT_SIGNATURE_FAILURE:
      case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
      case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
      case X509_V_ERR_CERT_UNTRUSTED:
        return refuse("client certificate not issued by this host's CA");
      case X509_V_ERR_INVALID_PURPOSE:
        return refuse("client certificate is not for client authentication (no clientAuth EKU)");
      default:
        return refuse(std::string("client certificate rejected: ") + X509_verify_cert_error_string(err));
    }
  }
  // The purpose check above accepts a certificate without any EKU; insist on clientAuth.
  const uint32_t flags = X509_get_extension_flags(leaf.get());
  if ((flags & EXFLAG_XKUSAGE) == 0 || (X509_get_extended_key_usage(leaf.get()) & XKU_SSL_CLIENT) == 0) {
    return refuse("client certificate is not for client authentication (no clientAuth EKU)");
  }
  if (X509_check_ca(leaf.get()) != 0) return refuse("client certificate is a CA certificate");

  std::string serial = serial_hex_of(leaf.get());
  if (serial.empty()) return refuse("client certificate has an unreadable serial");
  AZOTE_TRY(revoked, impl_->is_revoked(serial));
  if (revoked) return refuse("client certificate revoked (serial " + serial + ")");

  const X509_NAME* subject = X509_get_subject_name(leaf.get());
  bool repeated = false;
  auto role = name_entry(subject, NID_organizationalUnitName, &repeated);
  if (!role) return refuse("client certificate has no role (OU)");
  if (repeated) return refuse("client certificate has more than one role (OU)");
  if (!valid_label(*role)) return refuse("client certificate has an invalid role (OU)");
  auto name = name_entry(subject, NID_commonName, &repeated);
  if (!name) return refuse("client certificate has no name (CN)");
  if (repeated) return refuse("client certificate has more than one name (CN)");
  if (!valid_label(*name)) return refuse("client certificate has an invalid name (CN)");

  auto not_after = asn1_to_unix(X509_get0_notAfter(leaf.get()));
  if (!not_after) return refuse("client certificate has an unreadable expiry");
  return Principal{std::move(*name), std::move(*role), std::move(serial), *not_after};
}

}  // namespace azote::pki
