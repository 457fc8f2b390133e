// The PKI of one host, for azote-controller's mutual-TLS gRPC server.
//
// A directory (created 0700) holds, each created on first use by an atomic write:
//   ca.key, ca.crt          ECDSA P-256 self-signed CA "azote host CA", 10 years
//   server.key, server.crt  "azote-controller", SAN DNS:azote-controller, DNS:localhost,
//                           IP:127.0.0.1, EKU serverAuth, 2 years, signed by the CA
//   master.key              32 random bytes (raw): wraps per-volume keys (keywrap.hpp)
//   revoked                 one lowercase hex serial per line; absent = none revoked
//   issued                  the serial of every client certificate issue_client() made,
//                           one lowercase hex serial per line, appended (by an atomic
//                           rewrite) before the certificate is handed out; absent =
//                           none listed. A CA from before this list has certificates
//                           that are not in it: revoke() refuses their serials unless
//                           told UnlistedSerial::kRevoke (`azote admin revoke-cert
//                           --unlisted`), so that a mistyped serial is never "revoked"
//                           in place of the intended one.
// Private keys are 0600 and refused on load if group/other can read them. Reopening
// reuses everything; a directory holding only some of the five files is an error
// naming what is missing (never silently regenerated: that would replace the CA).
//
// Clients get certificates with subject OU=<role>, CN=<name>, EKU clientAuth; the
// controller calls verify_client() on the peer's leaf certificate of every call.
// All methods are thread-safe; verify_client() re-reads `revoked` whenever the file
// changes (another process may revoke), so a revocation applies to the next call.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "pki/files.hpp"
#include "pki/keywrap.hpp"
#include "pki/pki_error.hpp"

namespace azote::pki {

struct IssuedCert {
  std::string cert_pem;
  std::string key_pem;     // PKCS#8 PEM, unencrypted: hand it over and forget it
  std::string serial_hex;  // lowercase, no leading zeros: what revoke() takes
};

// What revoke() did.
struct Revocation {
  std::string serial_hex;  // normalized
  bool already = false;    // it was revoked before; nothing changed
  bool listed = true;      // it is in `issued`
};

// A serial that is not in `issued`: refused (kNotIssued), or revoked anyway when the
// operator says it belongs to a certificate issued before the list was kept.
enum class UnlistedSerial { kRefuse, kRevoke };

// Who a verified client certificate speaks for.
struct Principal {
  std::string name;        // subject CN
  std::string role;        // subject OU
  std::string serial_hex;
  int64_t not_after_unix = 0;
};

class HostPki {
 public:
  static PkiResult<HostPki> open_or_create(const std::string& dir);

  HostPki(HostPki&&) noexcept;
  HostPki& operator=(HostPki&&) noexcept;
  HostPki(const HostPki&) = delete;
  HostPki& operator=(const HostPki&) = delete;
  ~HostPki();  // wipes the master key and the server key held in memory

  const std::string& dir() const;
  const std::string& ca_pem() const;
  const std::string& server_cert_pem() const;
  const std::string& server_key_pem() const;
  std::span<const uint8_t, 32> master_key() const;

  // A client certificate and fresh P-256 key. role and name: 1..64 characters of
  // [A-Za-z0-9._-] (kInvalid naming the bad value otherwise); not_after > not_before.
  // Its serial is in `issued` before it is returned (an error otherwise: a certificate
  // that cannot be listed is not handed out).
  PkiResult<IssuedCert> issue_client(const std::string& role, const std::string& name,
                                     int64_t not_before_unix, int64_t not_after_unix) const;
  // Valid from now - 60 s (clock skew) to now + validity.
  PkiResult<IssuedCert> issue_client(const std::string& role, const std::string& name,
                                     std::chrono::seconds validity) const;

  // Adds a serial (hex, 1..40 digits, any case) to `revoked`. A serial already there is
  // reported (already = true), not added again. A serial not in `issued` is kNotIssued
  // unless `unlisted` is kRevoke. Serialised with issuers and other revokers of the same
  // directory, including other processes (flock).
  PkiResult<Revocation> revoke(const std::string& serial_hex,
                               UnlistedSerial unlisted = UnlistedSerial::kRefuse) const;

  // Accepts a PEM leaf certificate only if this host's CA issued it, it is valid at
  // now_unix, it carries the clientAuth EKU, is not a CA, is not revoked, and names a
  // role (OU) and a name (CN). Refusals are kRefused with a one-sentence reason; an
  // unreadable or malformed `revoked` file fails closed (kIo / kCorrupt).
  PkiResult<Principal> verify_client(const std::string& leaf_pem, int64_t now_unix) const;
  PkiResult<Principal> verify_client(const std::string& leaf_pem) const;  // at the current time

 private:
  struct Impl;
  explicit HostPki(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// SHA-256 of the certificate's DER encoding, 64 lowercase hex digits (no colons), as
// `openssl x509 -fingerprint -sha256` prints it without the colons. kInvalid if not PEM.
PkiResult<std::string> fingerprint_sha256(const std::string& cert_pem);

// Lowercase hex without leading zeros ("0" for zero), or kInvalid if `hex` is not
// 1..40 hex digits. The canonical form used in `revoked` and Principal::serial_hex.
PkiResult<std::string> normalize_serial(const std::string& hex);

}  // namespace azote::pki
