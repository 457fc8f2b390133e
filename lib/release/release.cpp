#include "release/release.hpp"

#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <nlohmann/json.hpp>

#include "base/hex.hpp"
#include "base/unique_fd.hpp"
#include "dice/dice.hpp"
#include "pki/ossl.hpp"

namespace azote::release {
namespace {

namespace ossl = pki::ossl;
using Json = nlohmann::json;
using MdCtxPtr = std::unique_ptr<EVP_MD_CTX, ossl::Free<EVP_MD_CTX_free>>;

Unexpected<ReleaseError> crypto_error(const std::string& what) {
  return make_error(ReleaseErrc::kCrypto, what + ": " + ossl::take_errors());
}

bool valid_name(const std::string& s) {
  if (s.empty() || s.size() > 64) return false;
  for (char c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) return false;
  return true;
}

bool valid_digest(const std::string& s) {
  if (s.size() != 96) return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

ReleaseResult<void> check_fields(const Manifest& m) {
  if (m.release.empty() || m.release.size() > 128)
    return make_error(ReleaseErrc::kFormat, "manifest: \"release\" must be 1-128 characters");
  if (m.files.empty()) return make_error(ReleaseErrc::kFormat, "manifest: \"files\" is empty");
  for (const auto& [name, digest] : m.files) {
    if (!valid_name(name)) return make_error(ReleaseErrc::kFormat, "manifest: file name \"" + name + "\" is not 1-64 of [A-Za-z0-9._-]");
    if (!valid_digest(digest))
      return make_error(ReleaseErrc::kFormat, "manifest: " + name + ": the digest is not 96 lowercase hex digits (SHA-384)");
  }
  return {};
}

}  // namespace

std::string canonical(const Manifest& m) {
  Json j;
  j["release"] = m.release;
  j["files"] = Json::object();
  for (const auto& [name, digest] : m.files) j["files"][name] = digest;
  return std::string(kFormat) + "\n" + j.dump();
}

ReleaseResult<std::string> sign(const Manifest& m, const std::string& private_key_pem) {
  AZOTE_TRYV(check_fields(m));
  ossl::BioPtr bio = ossl::mem_bio(private_key_pem);
  ossl::PkeyPtr key(bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  if (!key) return make_error(ReleaseErrc::kFormat, "the release key is not a PEM private key: " + ossl::take_errors());
  if (EVP_PKEY_get_base_id(key.get()) != EVP_PKEY_EC) return make_error(ReleaseErrc::kFormat, "the release key is not an EC key");
  const std::string msg = canonical(m);
  MdCtxPtr ctx(EVP_MD_CTX_new());
  size_t len = 0;
  if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, EVP_sha384(), nullptr, key.get()) != 1 ||
      EVP_DigestSign(ctx.get(), nullptr, &len, reinterpret_cast<const unsigned char*>(msg.data()), msg.size()) != 1)
    return crypto_error("sign the manifest");
  std::string sig(len, '\0');
  if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &len,
                     reinterpret_cast<const unsigned char*>(msg.data()), msg.size()) != 1)
    return crypto_error("sign the manifest");
  sig.resize(len);
  Json out;
  out["format"] = kFormat;
  out["release"] = m.release;
  out["files"] = Json::object();
  for (const auto& [name, digest] : m.files) out["files"][name] = digest;
  out["signature"] = to_hex(std::span(reinterpret_cast<const uint8_t*>(sig.data()), sig.size()));
  return out.dump(2) + "\n";
}

ReleaseResult<std::string> public_key_sha384(const std::string& public_key_pem) {
  ossl::BioPtr bio = ossl::mem_bio(public_key_pem);
  ossl::PkeyPtr key(bio ? PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  if (!key) return make_error(ReleaseErrc::kFormat, "the release public key is not a PEM public key: " + ossl::take_errors());
  unsigned char* der = nullptr;
  const int n = i2d_PUBKEY(key.get(), &der);
  ossl::BytesPtr owned(der);
  if (n <= 0) return crypto_error("the release public key's DER");
  return to_hex(dice::sha384(std::span<const uint8_t>(der, static_cast<size_t>(n))));
}

ReleaseResult<Manifest> verify(const std::string& text, const std::string& public_key_pem) {
  const Json j = Json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return make_error(ReleaseErrc::kFormat, "manifest: not a JSON object");
  for (const auto& [k, v] : j.items())
    if (k != "format" && k != "release" && k != "files" && k != "signature")
      return make_error(ReleaseErrc::kFormat, "manifest: unknown key \"" + k + "\"");
  if (!j.contains("format") || j["format"] != kFormat)
    return make_error(ReleaseErrc::kFormat, std::string("manifest: \"format\" is not \"") + kFormat + "\"");
  if (!j.contains("release") || !j["release"].is_string() || !j.contains("files") || !j["files"].is_object() ||
      !j.contains("signature") || !j["signature"].is_string())
    return make_error(ReleaseErrc::kFormat, "manifest: needs \"release\" (string), \"files\" (object), \"signature\" (hex)");
  Manifest m;
  m.release = j["release"].get<std::string>();
  for (const auto& [name, digest] : j["files"].items()) {
    if (!digest.is_string()) return make_error(ReleaseErrc::kFormat, "manifest: " + name + ": the digest is not a string");
    m.files[name] = digest.get<std::string>();
  }
  AZOTE_TRYV(check_fields(m));
  const auto sig = from_hex(j["signature"].get<std::string>(), true);
  if (!sig || sig->empty()) return make_error(ReleaseErrc::kFormat, "manifest: \"signature\" is not lowercase hex");

  ossl::BioPtr bio = ossl::mem_bio(public_key_pem);
  ossl::PkeyPtr key(bio ? PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  if (!key) return make_error(ReleaseErrc::kFormat, "the release public key is not a PEM public key: " + ossl::take_errors());
  const std::string msg = canonical(m);
  MdCtxPtr ctx(EVP_MD_CTX_new());
  if (!ctx || EVP_DigestVerifyInit(ctx.get(), nullptr, EVP_sha384(), nullptr, key.get()) != 1)
    return crypto_error("verify the manifest");
  const int ok = EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(sig->data()), sig->size(),
                                  reinterpret_cast<const unsigned char*>(msg.data()), msg.size());
  ossl::take_errors();
  if (ok != 1) return make_error(ReleaseErrc::kSignature, "manifest: the signature does not verify with the release key");
  return m;
}

ReleaseResult<std::string> sha384_fd(int fd) {
  auto d = dice::sha384_fd(fd);
  if (!d) return make_error(d.error().code == dice::DiceErrc::kIo ? ReleaseErrc::kIo : ReleaseErrc::kCrypto,
                            d.error().context, d.error().errnum);
  return to_hex(*d);
}

ReleaseResult<std::string> sha384_file(const std::string& path) {
  UniqueFd f(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!f) return errno_error(ReleaseErrc::kIo, path);
  struct stat st{};
  if (::fstat(f.get(), &st) != 0 || !S_ISREG(st.st_mode)) return make_error(ReleaseErrc::kIo, path + ": not a regular file");
  auto d = sha384_fd(f.get());
  if (!d) return make_error(d.error().code, path + ": " + d.error().message());
  return d;
}

ReleaseResult<void> check(const Manifest& m, const std::string& name, int fd) {
  const auto it = m.files.find(name);
  if (it == m.files.end())
    return make_error(ReleaseErrc::kNotInRelease, name + " is not in the signed release manifest (release " + m.release + ")");
  AZOTE_TRY(d, sha384_fd(fd));
  if (d != it->second)
    return make_error(ReleaseErrc::kMismatch, name + ": SHA-384 " + d.substr(0, 16) + "... is not release " + m.release +
                                                  "'s " + it->second.substr(0, 16) + "...");
  return {};
}

ReleaseResult<std::string> read_file(const std::string& path, size_t max) {
  UniqueFd f(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!f) return errno_error(ReleaseErrc::kIo, path);
  std::string out;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(f.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_error(ReleaseErrc::kIo, path);
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > max) return make_error(ReleaseErrc::kFormat, path + ": larger than " + std::to_string(max) + " bytes");
  }
  return out;
}

}  // namespace azote::release
