// Signed release manifests (issue 11, verified launch): what a release of azote is, as
// the SHA-384 of each of its binaries (the built-in guest is inside azote-hv), signed with
// a release key kept outside any host's state.
//
// The file is JSON:
//   {"format": "azote-release-manifest/1", "release": NAME,
//    "files": {"azote-hv": HEX96, ...}, "signature": HEX}
// and the signature is ECDSA with SHA-384 (DER, hex) over the canonical bytes
//   "azote-release-manifest/1\n" + {"files": {...}, "release": NAME} serialised with sorted
//   keys and no spaces (nlohmann::json's dump()).
// A verifier re-serialises what it parsed, so the bytes a signature covers are exactly the
// fields the verifier then uses; any other key, a missing one, a digest that is not 96
// lowercase hex digits or a file name outside [A-Za-z0-9._-] is refused before the
// signature is checked.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "base/error.hpp"

namespace azote::release {

enum class ReleaseErrc {
  kIo = 1,       // a file cannot be read (errnum set)
  kFormat,       // the manifest or a key does not parse (context says where)
  kSignature,    // the signature does not verify with the given key
  kCrypto,       // OpenSSL failed
  kNotInRelease, // a binary the manifest does not list
  kMismatch,     // a binary whose SHA-384 is not the manifest's
};
using ReleaseError = Error<ReleaseErrc>;
template <class T>
using ReleaseResult = Result<T, ReleaseError>;

inline constexpr char kFormat[] = "azote-release-manifest/1";
// The binaries a release names (what the launcher runs, and itself and azote-rot).
inline const std::vector<std::string>& release_binaries() {
  static const std::vector<std::string> k = {"azote-launcher", "azote-controller", "azote-hv",
                                             "azote-card-blk", "azote-card-net",  "azote-card-tpm", "azote-card-nsm",
                                             "azote-card-vsock",                                              "azote-rot"};
  return k;
}

struct Manifest {
  std::string release;
  std::map<std::string, std::string> files;  // name -> SHA-384, 96 lowercase hex digits
};

// The bytes a signature covers.
std::string canonical(const Manifest& m);
// The manifest file's text, signed with `private_key_pem` (an EC key; P-384 expected).
ReleaseResult<std::string> sign(const Manifest& m, const std::string& private_key_pem);
// Parses and checks a manifest file's text against `public_key_pem`.
ReleaseResult<Manifest> verify(const std::string& text, const std::string& public_key_pem);
// The release key's identity: SHA-384 (hex) of its SubjectPublicKeyInfo DER (what an
// instance's PCR 8 measures).
ReleaseResult<std::string> public_key_sha384(const std::string& public_key_pem);

// SHA-384 (96 lowercase hex digits) of what `fd` reads from offset 0 (dice::sha384_fd,
// so a release names the same code digests DICE measures), or of the file at `path`
// (O_NOFOLLOW).
ReleaseResult<std::string> sha384_fd(int fd);
ReleaseResult<std::string> sha384_file(const std::string& path);

// The file behind `fd` is `name` as the manifest has it: kNotInRelease or kMismatch
// (naming both digests) otherwise.
ReleaseResult<void> check(const Manifest& m, const std::string& name, int fd);

// A whole file, at most `max` bytes.
ReleaseResult<std::string> read_file(const std::string& path, size_t max = 1 << 20);

}  // namespace azote::release
