// azote-kms: a key service that releases data keys only to attested enclave code, the
// Recipient flow of AWS KMS (ENCLAVES.md §7) simplified (src/kms/DESIGN.md says how).
//
// Request socket (--listen: JSON lines, lib/control; what a parent's proxy relays to
// from an enclave, byte for byte):
//   {"op": "GenerateDataKey", "KeyId": "key-...", ["KeySpec": "AES_256"|"AES_128" |
//    "NumberOfBytes": 1..64], "Recipient": {"AttestationDocument": BASE64,
//    "KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256"}}
//     -> {"ok": true, "KeyId", "CiphertextBlob": BASE64, "CiphertextForRecipient": BASE64}
//   {"op": "Decrypt", "CiphertextBlob": BASE64, ["KeyId"], ["EncryptionAlgorithm":
//    "SYMMETRIC_DEFAULT"], "Recipient": {...}}
//     -> {"ok": true, "KeyId", "EncryptionAlgorithm", "CiphertextForRecipient": BASE64}
//   Never a Plaintext: without a Recipient a request is refused. Errors:
//   {"ok": false, "error": "<AWS exception name>: <sentence>"}.
// Admin socket (--admin; only root and this uid may connect):
//   {"op": "CreateKey", "Policy": {...}} -> {"KeyId"}; {"op": "ListKeys"} -> {"Keys":
//   [{"KeyId"}]}; {"op": "GetKeyPolicy", "KeyId"} -> {"Policy"};
//   {"op": "Encrypt", "KeyId", "Plaintext": BASE64 (1..64 bytes)} -> {"KeyId",
//   "CiphertextBlob"}: a blob that Decrypt with a Recipient hands back to an attested
//   enclave. Never on the request socket, which refuses it by name: whoever can reach
//   that socket could otherwise make ciphertexts an enclave takes for its owner's.
// Every decision, allowed or not, is appended to the signed audit log before it is
// answered; when the log cannot take it, the request fails and nothing is released.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "audit/log.hpp"
#include "control/control.hpp"
#include "kms/errors.hpp"
#include "kms/keystore.hpp"
#include "kms/recipient.hpp"
#include "runtime/runtime.hpp"
#include "sandbox/seccomp.hpp"

namespace azote::kms {

struct Options {
  std::string state_dir;
  std::string root;     // --root PEM file: the pinned root of attestation documents
  std::string listen;   // --listen PATH|fd:N: the request socket
  std::string admin;    // --admin PATH|fd:N: the admin socket (optional)
  std::string audit;    // --audit DIR: audit.log, audit.log.head, signing.pub
  std::chrono::seconds max_age{300};
  std::string log_level = "info";
  sandbox::SeccompMode seccomp = sandbox::SeccompMode::kKill;
};
struct Parsed {
  enum class Command { kServe, kCreateKey, kEncrypt };
  Command command = Command::kServe;
  Options options;
  std::string policy_file;  // create-key --policy
  std::string key_id, plaintext_file;  // encrypt --key-id, --plaintext-file
  bool help = false, version = false;
};
KmsResult<Parsed> parse_args(const std::vector<std::string>& args);
const char* usage_text();

// `azote-kms create-key`: the key's id on success.
KmsResult<std::string> create_key_command(const std::string& state_dir, const std::string& policy_file);
// `azote-kms encrypt`: the base64 CiphertextBlob of the file's 1..64 bytes under the key,
// read from the key file like create-key writes one (not through the service, and so
// not in its audit log).
KmsResult<std::string> encrypt_command(const std::string& state_dir, const std::string& key_id,
                                       const std::string& plaintext_file);
// Encrypt's work, for the admin op and the command: `plaintext` (1..64 bytes) sealed
// under the key as a CiphertextBlob. The key's policy must parse (a key whose policy
// is malformed fails closed everywhere, so a blob made under it could never be used).
KmsResult<Bytes> encrypt_under(const KeyStore& keys, const std::string& key_id, const SecretBytes& plaintext);

class Service {
 public:
  using Clock = std::function<int64_t()>;  // wall-clock ms since the epoch
  // The keys, the pinned root and the audit log (its signing key is
  // DIR/audit-signing.key, made at first start; its public half AUDIT/signing.pub);
  // no socket yet.
  static KmsResult<std::unique_ptr<Service>> create(const Options& o, Clock clock = now_ms);
  // The sockets and the event loop.
  KmsResult<void> listen(const Options& o);
  // Every primitive of the request path once (AES-256-GCM both ways, RSA-OAEP to a
  // built-in public key), before the seccomp filter: OpenSSL loads what it loads lazily
  // now, and a broken library is found at start rather than on a request.
  KmsResult<void> self_test() const;
  // Serves until SIGTERM/SIGINT; the exit status.
  int run();

  // One request line of the request socket / the admin socket (never throw).
  control::Json handle(const control::Json& request);
  control::Json handle_admin(const control::Json& request);

  const KeyStore& keys() const { return keys_; }
  const std::string& audit_path() const { return audit_->path(); }

 private:
  Service(KeyStore keys, std::unique_ptr<RecipientVerifier> v, std::unique_ptr<audit::AuditLog> a, Clock c)
      : keys_(std::move(keys)), verifier_(std::move(v)), audit_(std::move(a)), clock_(std::move(c)) {}
  struct Request;
  control::Json generate_data_key(const control::Json& req, Request& r);
  control::Json decrypt(const control::Json& req, Request& r);
  control::Json encrypt(const control::Json& req, Request& r);
  // Appends the decision; the answer to send (a refusal if the log failed).
  control::Json decide(Request& r, control::Json answer);
  // A refusal of request r (an internal failure when e says so), audited by decide().
  control::Json refuse_request(Request& r, const KmsError& e);
  KmsResult<VerifiedRecipient> recipient(const control::Json& req, Request& r);

  KeyStore keys_;
  std::unique_ptr<RecipientVerifier> verifier_;
  std::unique_ptr<audit::AuditLog> audit_;
  Clock clock_;
  std::unique_ptr<runtime::Loop> loop_;
  std::unique_ptr<control::Server> server_, admin_;
};

}  // namespace azote::kms
