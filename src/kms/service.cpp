#include "kms/service.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <initializer_list>
#include <optional>
#include <string_view>

#include "audit/signing.hpp"
#include "base/hex.hpp"
#include "base/log.hpp"
#include "base/parse.hpp"
#include "kms/crypto.hpp"
#include "pki/files.hpp"

namespace azote::kms {

using control::Json;

namespace {

constexpr const char* kRecipientRequired =
    "a recipient attestation document is required; this service never returns plaintext keys";
constexpr const char* kEncryptAdminOnly =
    "Encrypt is served only on the admin socket, never on this one: whoever reaches this socket could otherwise "
    "make ciphertexts that an enclave would take for its data owner's";

Json refusal(const KmsError& e) { return control::refuse(e.message()); }

// Text from a request for a log line or an audit record: bounded.
std::string shown(std::string_view s) { return std::string(s.substr(0, 64)) + (s.size() > 64 ? "..." : ""); }

// Every field of `req` is one of `known`; those in `unsupported` are AWS's but not here.
KmsResult<void> only_fields(const Json& obj, std::initializer_list<std::string_view> known,
                            std::initializer_list<std::string_view> unsupported, const std::string& what) {
  for (auto it = obj.begin(); it != obj.end(); ++it) {
    const std::string& k = it.key();
    if (std::find(known.begin(), known.end(), k) != known.end()) continue;
    if (std::find(unsupported.begin(), unsupported.end(), k) != unsupported.end())
      return fail(kValidation, what + k + " is not supported by azote-kms");
    return fail(kValidation, what + "unknown field \"" + shown(k) + "\"");
  }
  return {};
}

// A string field: nullopt when absent; kValidation when present and not a string.
KmsResult<std::optional<std::string>> string_field(const Json& obj, const char* name, const std::string& what) {
  const auto it = obj.find(name);
  if (it == obj.end()) return std::optional<std::string>();
  if (!it->is_string()) return fail(kValidation, what + name + " is not a string");
  return std::optional<std::string>(it->get_ref<const std::string&>());
}

}  // namespace

// What one request's audit record says.
struct Service::Request {
  std::string op;            // the method, "GenerateDataKey"...
  std::string key_id;        // once known
  std::string document = "absent";  // absent, unreadable, refused, verified
  Claims claims;
  std::string reason;        // why allowed (the statement), or why not
  bool internal = false;     // a failure of this service, not a refusal
  std::string principal;     // admin requests: "admin"
};

KmsResult<Parsed> parse_args(const std::vector<std::string>& in) {
  Parsed p;
  std::vector<std::string> args = in;
  if (!args.empty() && args[0] == "create-key") {
    p.command = Parsed::Command::kCreateKey;
    args.erase(args.begin());
  } else if (!args.empty() && args[0] == "encrypt") {
    p.command = Parsed::Command::kEncrypt;
    args.erase(args.begin());
  }
  const CommandLine c = split_command_line(
      args, p.command == Parsed::Command::kCreateKey ? std::set<std::string>{"--state-dir", "--policy", "--log-level"}
            : p.command == Parsed::Command::kEncrypt
                ? std::set<std::string>{"--state-dir", "--key-id", "--plaintext-file", "--log-level"}
                : std::set<std::string>{"--state-dir", "--root", "--listen", "--admin", "--audit", "--max-age",
                                        "--log-level", "--seccomp"});
  if (!c.error.empty()) return fail(kUsage, c.error);
  p.help = c.help;
  p.version = c.version;
  if (p.help || p.version) return p;
  Options& o = p.options;
  for (const auto& [flag, value] : c.flags) {
    if (flag == "--state-dir") o.state_dir = value;
    else if (flag == "--root") o.root = value;
    else if (flag == "--listen") o.listen = value;
    else if (flag == "--admin") o.admin = value;
    else if (flag == "--audit") o.audit = value;
    else if (flag == "--policy") p.policy_file = value;
    else if (flag == "--key-id") p.key_id = value;
    else if (flag == "--plaintext-file") p.plaintext_file = value;
    else if (flag == "--log-level") o.log_level = value;
    else if (flag == "--max-age") {
      const auto s = parse_uint(value, 1, 86400);
      if (!s) return fail(kUsage, "--max-age \"" + value + "\" is not a number of seconds from 1 to 86400");
      o.max_age = std::chrono::seconds(*s);
    } else if (flag == "--seccomp") {
      auto m = sandbox::parse_seccomp_mode(value);
      if (!m) return fail(kUsage, "--seccomp: " + m.error().message());
      o.seccomp = *m;
    }
  }
  if (o.state_dir.empty()) return fail(kUsage, "--state-dir is required");
  if (p.command == Parsed::Command::kCreateKey) {
    if (p.policy_file.empty()) return fail(kUsage, "create-key: --policy POLICY.json is required");
    return p;
  }
  if (p.command == Parsed::Command::kEncrypt) {
    if (p.key_id.empty()) return fail(kUsage, "encrypt: --key-id KEY is required");
    if (p.plaintext_file.empty()) return fail(kUsage, "encrypt: --plaintext-file FILE is required");
    return p;
  }
  if (o.root.empty()) return fail(kUsage, "--root PEM is required (the pinned root of attestation documents)");
  if (o.listen.empty()) return fail(kUsage, "--listen PATH|fd:N is required");
  if (o.audit.empty()) return fail(kUsage, "--audit DIR is required (every decision is audited)");
  return p;
}

const char* usage_text() {
  return R"(Usage: azote-kms --state-dir DIR --root ROOT.pem --listen PATH|fd:N --audit DIR
                 [--admin PATH|fd:N] [--max-age SECONDS] [--log-level LEVEL] [--seccomp kill|log]
       azote-kms create-key --state-dir DIR --policy POLICY.json
       azote-kms encrypt --state-dir DIR --key-id KEY --plaintext-file FILE

A key service that releases data keys only to attested enclave code (the Recipient flow
of AWS KMS, simplified: src/kms/DESIGN.md). Keys are AES-256, 32 random bytes each in
DIR/keys (0600), each with a key policy whose conditions name the enclave's measurements
(kms:RecipientAttestation:ImageSha384, kms:RecipientAttestation:PCR0..PCR31, with
StringEquals or StringEqualsIgnoreCase). On the request socket, JSON lines:
  {"op": "GenerateDataKey", "KeyId": "key-...", "Recipient": {"AttestationDocument":
   BASE64, "KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256"}}
      -> {"ok": true, "KeyId", "CiphertextBlob", "CiphertextForRecipient"}
  {"op": "Decrypt", "CiphertextBlob": BASE64, "Recipient": {...}}
      -> {"ok": true, "KeyId", "CiphertextForRecipient"}
CiphertextForRecipient is the data key encrypted with RSAES-OAEP-SHA-256 to the
document's public_key; no plaintext key is ever returned. A document must chain to
--root, carry the ES384 signature of its leaf, an RSA public_key of 2048..4096 bits,
PCRs not all zero, a timestamp within --max-age, and a nonce never used before.
A data owner's own secret (1..64 bytes) becomes a CiphertextBlob with the admin
socket's Encrypt or with `encrypt`; Decrypt with a Recipient then hands it to an
attested enclave as it does a data key.
Errors: {"ok": false, "error": "<AWS exception name>: <sentence>"}. Every decision is
appended to the signed audit log (`azote audit verify AUDIT/audit.log`).

  create-key          make a key with the policy in POLICY.json; prints its id
  encrypt             seal FILE's 1..64 bytes under KEY (read from DIR/keys, as create-key
                      writes there; not through the service, so not in its audit log);
                      prints the base64 CiphertextBlob that Decrypt takes
  --state-dir DIR     keys and the audit signing key (0700, created if missing)
  --root ROOT.pem     the pinned root certificate of attestation documents (azote-rot's
                      device certificate: its describe's layers[0].certificate)
  --listen PATH       the request socket (0600, only root and this uid may connect), or
                      fd:N, a listening socket handed over (its file mode is the guard)
  --admin PATH        the admin socket: {"op": "CreateKey", "Policy": {...}},
                      {"op": "ListKeys"}, {"op": "GetKeyPolicy", "KeyId"},
                      {"op": "Encrypt", "KeyId", "Plaintext": BASE64 (1..64 bytes)}
                      -> {"ok": true, "KeyId", "CiphertextBlob"}. Encrypt is refused on
                      --listen: a caller there could make blobs an enclave would trust
  --audit DIR         the audit log: DIR/audit.log, DIR/audit.log.head, DIR/signing.pub
  --max-age SECONDS   how old a document may be (default 300; 60 s ahead is tolerated)
  --log-level LEVEL   error, warn, info (default), debug
  --seccomp MODE      kill (default): after setup a system call outside its allowlist
                      (src/kms/seccomp.json) kills it; log: allowed and logged (debugging)
  -h, --help          this help;  --version  the version

Exit status: 0 done or stopped by SIGTERM/SIGINT; 64 usage, a malformed policy, a
plaintext that is not 1..64 bytes; 66 the root certificate, the policy file, the
plaintext file, the state directory or the key cannot be found or read; 71 the state
or audit directory, a key file, a socket or the audit log is unusable.
)";
}

KmsResult<std::string> create_key_command(const std::string& state_dir, const std::string& policy_file) {
  auto text = pki::read_file(policy_file, 32 * 1024);
  if (!text) return fail(kNoInput, "--policy " + policy_file + ": " + text.error().message());
  const Json policy = Json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (policy.is_discarded()) return fail(kMalformedPolicy, "--policy " + policy_file + " is not JSON");
  AZOTE_TRY(store, KeyStore::open(state_dir));
  return store.create_key(policy);
}

KmsResult<Bytes> encrypt_under(const KeyStore& keys, const std::string& key_id, const SecretBytes& plaintext) {
  if (plaintext.size() < 1 || plaintext.size() > kMaxPlaintextBytes)
    return fail(kValidation, "Plaintext is " + std::to_string(plaintext.size()) + " bytes, not 1 to " +
                                 std::to_string(kMaxPlaintextBytes) +
                                 " (a Decrypt hands it to the recipient as one RSA-OAEP block)");
  // The policy is not evaluated (it governs what goes to recipients; Encrypt sends
  // nothing anywhere), but it must parse: a blob under a key that fails closed is no use.
  AZOTE_TRY(policy, keys.load_policy(key_id));
  (void)policy;
  AZOTE_TRY(key, keys.load_key(key_id));
  return seal_blob(key, key_id, plaintext.span());
}

KmsResult<std::string> encrypt_command(const std::string& state_dir, const std::string& key_id,
                                       const std::string& plaintext_file) {
  // Like create-key: straight to the state directory's files. A missing one is not made.
  struct stat st{};
  if (::stat(state_dir.c_str(), &st) != 0)
    return fail(kNoInput, "--state-dir " + state_dir + ": " + std::strerror(errno));
  AZOTE_TRY(store, KeyStore::open(state_dir));
  // One more byte than allowed: a longer file shows. Any file that reads (a pipe, /dev/stdin).
  UniqueFd f(::open(plaintext_file.c_str(), O_RDONLY | O_CLOEXEC));
  if (!f) return fail(kNoInput, "--plaintext-file " + plaintext_file + ": " + std::strerror(errno));
  SecretBytes plaintext(kMaxPlaintextBytes + 1);
  if (plaintext.size() != kMaxPlaintextBytes + 1) return fail(kInternal, "out of memory");
  size_t got = 0;
  while (got < plaintext.size()) {
    const ssize_t n = ::read(f.get(), plaintext.data() + got, plaintext.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail(kNoInput, "--plaintext-file " + plaintext_file + ": " + std::strerror(errno));
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  if (got == 0 || got > kMaxPlaintextBytes)
    return fail(kValidation, "--plaintext-file " + plaintext_file +
                                 (got == 0 ? " is empty" : " holds more than " + std::to_string(kMaxPlaintextBytes) +
                                                               " bytes") +
                                 "; Encrypt takes 1 to " + std::to_string(kMaxPlaintextBytes) +
                                 " bytes (a Decrypt hands them to the recipient as one RSA-OAEP block)");
  plaintext.shrink(got);
  AZOTE_TRY(blob, encrypt_under(store, key_id, plaintext));
  return base64_encode(blob);
}

KmsResult<std::unique_ptr<Service>> Service::create(const Options& o, Clock clock) {
  AZOTE_TRY(store, KeyStore::open(o.state_dir));
  auto root = pki::read_pem_file(o.root);
  if (!root) return fail(kNoInput, "--root " + o.root + ": " + root.error().message());
  AZOTE_TRY(verifier, RecipientVerifier::create(*root, o.max_age, kDefaultReplayCapacity, clock()));

  // The audit log: its signing key beside the keys (made at first start), the public
  // half beside the log for `azote audit verify`.
  std::error_code ec;
  std::filesystem::create_directories(o.audit, ec);
  if (ec) return fail(kState, "--audit " + o.audit + ": " + ec.message());
  const std::string key_path = o.state_dir + "/audit-signing.key";
  const bool have_key = std::filesystem::exists(key_path, ec);
  auto key = have_key ? audit::SigningKey::load_pem_file(key_path) : audit::SigningKey::generate();
  if (!key) return fail(kState, "audit signing key " + key_path + ": " + key.error().message());
  if (!have_key)
    if (auto s = key->save_pem_file(key_path); !s) return fail(kState, "audit signing key: " + s.error().message());
  auto pub = key->public_pem();
  if (!pub) return fail(kState, "audit signing key: " + pub.error().message());
  if (auto w = pki::write_file_atomic(o.audit + "/signing.pub", *pub, 0644); !w)
    return fail(kState, "--audit " + o.audit + ": " + w.error().message());
  auto log = audit::AuditLog::open(o.audit + "/audit.log", *key);
  if (!log) return fail(kState, "audit log " + o.audit + "/audit.log: " + log.error().message());

  std::unique_ptr<Service> s(new Service(std::move(store), std::move(verifier), std::move(log).value(), std::move(clock)));
  // What it starts with: the keys (created here, or by `create-key` while it was not
  // running) and the digests of their policies, and the pinned root.
  AZOTE_TRY(ids, s->keys_.list());
  Json keys = Json::array();
  for (const std::string& id : ids) {
    Json raw;
    auto p = s->keys_.load_policy(id, &raw);
    const std::string text = p ? raw.dump(-1, ' ', false, Json::error_handler_t::replace) : std::string();
    keys.push_back({{"KeyId", id},
                    {"policy", p ? "sha256:" + sha256_hex(std::span(reinterpret_cast<const uint8_t*>(text.data()),  // NOLINT
                                                                     text.size()))
                                 : "invalid: " + p.error().sentence}});
    if (!p) LOG_WARN("azote-kms: %s", p.error().message().c_str());
  }
  audit::Entry e{"azote-kms", "kms.start", ids, "allowed", "",
                 Json{{"keys", keys},
                      {"root_sha256", sha256_hex(std::span(reinterpret_cast<const uint8_t*>(root->data()), root->size()))},  // NOLINT
                      {"max_age_s", o.max_age.count()}}};
  if (auto a = s->audit_->append(e); !a) return fail(kState, "audit log: " + a.error().message());
  return s;
}

KmsResult<void> Service::listen(const Options& o) {
  auto loop = runtime::Loop::create("azote-kms");
  if (!loop) return fail(kState, loop.error().message());
  loop_ = std::move(loop).value();
  auto server = control::Server::listen(o.listen);
  if (!server) return fail(kState, "--listen " + o.listen + ": " + server.error().message());
  server_ = std::move(server).value();
  Service* self = this;
  if (auto w = loop_->watch(server_->poll_fd(),
                            [self] { self->server_->serve_ready([self](const Json& r) { return self->handle(r); }); });
      !w)
    return fail(kState, w.error().message());
  if (!o.admin.empty()) {
    auto admin = control::Server::listen(o.admin);
    if (!admin) return fail(kState, "--admin " + o.admin + ": " + admin.error().message());
    admin_ = std::move(admin).value();
    if (auto w = loop_->watch(admin_->poll_fd(), [self] {
          self->admin_->serve_ready([self](const Json& r) { return self->handle_admin(r); });
        });
        !w)
      return fail(kState, w.error().message());
  }
  return {};
}

KmsResult<void> Service::self_test() const {
  // A throwaway RSA-2048 public key (its private half was never kept).
  static constexpr char kWarmKey[] =
      "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA2K/i6C/hveQJ+FJhu7H4v6Rn77j1xVmLEUS+H2ncaJPeyuj6Id/KQDrQS+LqH6KrPQ1J"
      "qWFo+hC7HJdhNuxxPUyEb1M4giuAB1TX42TpFDoqAFgxRVOg7aTGFGMULelUJMGWY9hoHHV1A3Df9c/mjA2352qd2D+zYp79saKCy2UWrsLAxqbY"
      "yucv+/2KAFuDPoC8h7klFlvCg6rGrUoHPnVLXqAPTgGBIC3U6C1ZYnQBtkmNkovnza5WhAvX0a3jmvEZBeyscBWE3aWbhm6KQX/e2nMqKc+GAmas"
      "bIDm1CAQYVuZOcKuCmI9Rx3/H1nS4saXjjF64lDUqW+u6tSjBwIDAQAB";
  auto key = random_secret(kKeyBytes);
  auto data = random_secret(kKeyBytes);
  if (!key || !data) return fail(kInternal, "self-test: no random bytes");
  AZOTE_TRY(blob, seal_blob(*key, "key-0000000000000000", data->span()));
  AZOTE_TRY(back, open_blob(*key, blob));
  if (back.size() != data->size() || !std::equal(back.data(), back.data() + back.size(), data->data()))
    return fail(kInternal, "self-test: AES-256-GCM did not round-trip");
  const auto der = base64_decode(kWarmKey);
  if (!der) return fail(kInternal, "self-test: the built-in key");
  const unsigned char* p = der->data();
  pki::ossl::PkeyPtr pub(d2i_PUBKEY(nullptr, &p, static_cast<long>(der->size())));
  if (!pub) return fail(kInternal, "self-test: the built-in key");
  AZOTE_TRY(wrapped, oaep_sha256_encrypt(pub.get(), data->span()));
  if (wrapped.size() != 256) return fail(kInternal, "self-test: RSA-OAEP");
  return {};
}

int Service::run() { return loop_ ? loop_->run() : runtime::kExitOsErr; }

Json Service::decide(Request& r, Json answer) {
  const bool allowed = answer.value("ok", true);
  const std::string error = allowed ? std::string() : answer.value("error", std::string());
  Json detail = {{"op", r.op}, {"document", r.document}};
  if (!r.reason.empty()) detail["reason"] = r.reason;
  if (r.claims.parsed) {
    // Claims of a refused document are what it says, not facts: "document" tells which.
    detail["module_id"] = r.claims.module_id;
    const auto p0 = r.claims.pcrs.find(0);
    detail["pcr0"] = p0 == r.claims.pcrs.end() ? std::string() : to_hex(p0->second);
    Json pcrs = Json::object();
    for (const auto& [i, v] : r.claims.pcrs) pcrs[std::to_string(i)] = to_hex(v);
    detail["pcrs"] = std::move(pcrs);
    detail["timestamp_ms"] = r.claims.timestamp_ms;
    if (!r.claims.nonce_sha256.empty()) detail["nonce_sha256"] = r.claims.nonce_sha256;
    if (r.claims.public_key_bits != 0) detail["public_key_bits"] = r.claims.public_key_bits;
  }
  audit::Entry e;
  e.principal = !r.principal.empty() ? r.principal : r.claims.verified ? r.claims.module_id : std::string();
  e.method = "kms." + r.op;
  if (!r.key_id.empty()) e.resources.push_back(r.key_id);
  e.outcome = allowed ? "allowed" : r.internal ? "failed" : "denied";
  e.error = error;
  e.detail = std::move(detail);
  if (auto a = audit_->append(e); !a) {
    LOG_ERROR("azote-kms: audit log: %s: refusing %s", a.error().message().c_str(), r.op.c_str());
    return control::refuse(std::string(kInternal) +
                           ": the decision could not be recorded in the audit log, so nothing is released (" +
                           a.error().message() + ")");
  }
  if (!allowed) LOG_INFO("azote-kms: %s refused: %s", r.op.c_str(), error.c_str());
  return answer;
}

KmsResult<VerifiedRecipient> Service::recipient(const Json& req, Request& r) {
  const auto it = req.find("Recipient");
  if (it == req.end() || it->is_null()) return fail(kValidation, kRecipientRequired);
  if (!it->is_object()) return fail(kValidation, "Recipient is not an object");
  AZOTE_TRYV(only_fields(*it, {"AttestationDocument", "KeyEncryptionAlgorithm"}, {}, "Recipient: "));
  AZOTE_TRY(alg, string_field(*it, "KeyEncryptionAlgorithm", "Recipient."));
  if (alg && *alg != "RSAES_OAEP_SHA_256")
    return fail(kValidation, "Recipient.KeyEncryptionAlgorithm \"" + shown(*alg) + "\" is not RSAES_OAEP_SHA_256");
  AZOTE_TRY(doc_text, string_field(*it, "AttestationDocument", "Recipient."));
  if (!doc_text || doc_text->empty()) return fail(kValidation, kRecipientRequired);
  r.document = "unreadable";
  const auto doc = base64_decode(*doc_text);
  if (!doc) return fail(kValidation, "Recipient.AttestationDocument is not base64");
  auto v = verifier_->verify(*doc, clock_(), &r.claims);
  if (r.claims.parsed) r.document = r.claims.verified ? "verified" : "refused";
  return v;
}

Json Service::handle(const Json& req) {
  Request r;
  const auto op = req.find("op");
  r.op = op != req.end() && op->is_string() ? op->get_ref<const std::string&>() : std::string();
  if (r.op == "GenerateDataKey") return generate_data_key(req, r);
  if (r.op == "Decrypt") return decrypt(req, r);
  if (r.op == "Encrypt") {
    // Refused by name, before anything of the request is read but the key id (for the
    // record; never the plaintext). An attempt here is worth finding in the log.
    const auto id = req.find("KeyId");
    if (id != req.end() && id->is_string() && valid_key_id(id->get_ref<const std::string&>()))
      r.key_id = id->get_ref<const std::string&>();
    r.reason = "Encrypt on the request socket";
    return decide(r, refusal({kUnsupported, kEncryptAdminOnly}));
  }
  const std::string asked = shown(r.op);
  r.op = "unsupported";
  r.reason = "op \"" + asked + "\"";
  return decide(r, refusal({kUnsupported, "op \"" + asked + "\" is not GenerateDataKey or Decrypt"}));
}

Json Service::refuse_request(Request& r, const KmsError& e) {
  r.internal = e.code == kInternal;
  return decide(r, refusal(e));
}

Json Service::generate_data_key(const Json& req, Request& r) {
  const auto refuse = [&](const KmsError& e) { return refuse_request(r, e); };
  if (auto f = only_fields(req, {"op", "KeyId", "KeySpec", "NumberOfBytes", "Recipient"},
                           {"EncryptionContext", "GrantTokens", "DryRun"}, "");
      !f)
    return refuse(f.error());
  auto key_id = string_field(req, "KeyId", "");
  if (!key_id) return refuse(key_id.error());
  if (!*key_id) return refuse({kValidation, "KeyId is required"});
  if (!valid_key_id(**key_id)) return refuse({kNotFound, "key \"" + shown(**key_id) + "\" does not exist (key ids are key-<16 hex>)"});
  r.key_id = **key_id;
  size_t bytes = kKeyBytes;
  const auto spec = req.find("KeySpec"), number = req.find("NumberOfBytes");
  if (spec != req.end() && number != req.end()) return refuse({kValidation, "give KeySpec or NumberOfBytes, not both"});
  if (spec != req.end()) {
    if (*spec == "AES_256") bytes = 32;
    else if (*spec == "AES_128") bytes = 16;
    else return refuse({kValidation, "KeySpec is not AES_256 or AES_128"});
  }
  if (number != req.end()) {
    if (!number->is_number_unsigned() || number->get<uint64_t>() < 1 || number->get<uint64_t>() > kMaxDataKeyBytes)
      return refuse({kValidation, "NumberOfBytes is not an integer from 1 to " + std::to_string(kMaxDataKeyBytes)});
    bytes = number->get<uint64_t>();
  }
  auto who = recipient(req, r);
  if (!who) return refuse(who.error());
  auto policy = keys_.load_policy(r.key_id);
  if (!policy) return refuse(policy.error());
  const Decision d = evaluate(*policy, Action::kGenerateDataKey, &who->attestation);
  r.reason = d.reason;
  if (!d.allowed) return refuse({kAccessDenied, d.reason});
  auto key = keys_.load_key(r.key_id);
  if (!key) return refuse(key.error());
  auto data_key = random_secret(bytes);
  if (!data_key) return refuse({kInternal, "no random bytes for the data key"});
  auto blob = seal_blob(*key, r.key_id, data_key->span());
  if (!blob) return refuse(blob.error());
  auto wrapped = oaep_sha256_encrypt(who->public_key.get(), data_key->span());
  if (!wrapped) return refuse(wrapped.error());
  return decide(r, Json{{"ok", true},
                        {"KeyId", r.key_id},
                        {"CiphertextBlob", base64_encode(*blob)},
                        {"CiphertextForRecipient", base64_encode(*wrapped)}});
}

Json Service::decrypt(const Json& req, Request& r) {
  const auto refuse = [&](const KmsError& e) { return refuse_request(r, e); };
  if (auto f = only_fields(req, {"op", "CiphertextBlob", "KeyId", "EncryptionAlgorithm", "Recipient"},
                           {"EncryptionContext", "GrantTokens", "DryRun"}, "");
      !f)
    return refuse(f.error());
  auto blob_text = string_field(req, "CiphertextBlob", "");
  if (!blob_text) return refuse(blob_text.error());
  if (!*blob_text) return refuse({kValidation, "CiphertextBlob is required"});
  const auto blob = base64_decode(**blob_text);
  if (!blob) return refuse({kInvalidCiphertext, "the CiphertextBlob is not base64"});
  auto named = blob_key_id(*blob);
  if (!named) return refuse(named.error());
  if (!valid_key_id(*named)) return refuse({kInvalidCiphertext, "the CiphertextBlob names no key of this service"});
  r.key_id = *named;
  auto asked = string_field(req, "KeyId", "");
  if (!asked) return refuse(asked.error());
  if (*asked && **asked != r.key_id)
    return refuse({kIncorrectKey, "the CiphertextBlob was made under " + r.key_id + ", not " + shown(**asked)});
  auto alg = string_field(req, "EncryptionAlgorithm", "");
  if (!alg) return refuse(alg.error());
  if (*alg && **alg != "SYMMETRIC_DEFAULT") return refuse({kValidation, "EncryptionAlgorithm is not SYMMETRIC_DEFAULT"});
  auto who = recipient(req, r);
  if (!who) return refuse(who.error());
  auto policy = keys_.load_policy(r.key_id);
  if (!policy) return refuse(policy.error());
  const Decision d = evaluate(*policy, Action::kDecrypt, &who->attestation);
  r.reason = d.reason;
  if (!d.allowed) return refuse({kAccessDenied, d.reason});
  auto key = keys_.load_key(r.key_id);
  if (!key) return refuse(key.error());
  auto data_key = open_blob(*key, *blob);
  if (!data_key) return refuse(data_key.error());
  auto wrapped = oaep_sha256_encrypt(who->public_key.get(), data_key->span());
  if (!wrapped) return refuse(wrapped.error());
  return decide(r, Json{{"ok", true},
                        {"KeyId", r.key_id},
                        {"EncryptionAlgorithm", "SYMMETRIC_DEFAULT"},
                        {"CiphertextForRecipient", base64_encode(*wrapped)}});
}

// Admin only (handle_admin): a data owner's secret sealed under a key, for an enclave to
// get later through Decrypt with a Recipient. No policy is evaluated: the admin socket's
// callers are root and this uid, who can read the key files anyway.
Json Service::encrypt(const Json& req, Request& r) {
  const auto refuse = [&](const KmsError& e) { return refuse_request(r, e); };
  if (auto f = only_fields(req, {"op", "KeyId", "Plaintext", "EncryptionAlgorithm"},
                           {"EncryptionContext", "GrantTokens", "DryRun"}, "");
      !f)
    return refuse(f.error());
  auto key_id = string_field(req, "KeyId", "");
  if (!key_id) return refuse(key_id.error());
  if (!*key_id) return refuse({kValidation, "KeyId is required"});
  if (!valid_key_id(**key_id))
    return refuse({kNotFound, "key \"" + shown(**key_id) + "\" does not exist (key ids are key-<16 hex>)"});
  r.key_id = **key_id;
  auto alg = string_field(req, "EncryptionAlgorithm", "");
  if (!alg) return refuse(alg.error());
  if (*alg && **alg != "SYMMETRIC_DEFAULT")
    return refuse({kValidation, "EncryptionAlgorithm is not SYMMETRIC_DEFAULT"});
  // The plaintext is read in place (string_field would copy it) and decoded straight
  // into wiped memory.
  const auto text = req.find("Plaintext");
  if (text == req.end()) return refuse({kValidation, "Plaintext is required"});
  if (!text->is_string()) return refuse({kValidation, "Plaintext is not a string"});
  Bytes blob;
  {
    auto plaintext = base64_decode_secret(text->get_ref<const std::string&>());
    if (!plaintext) return refuse({kValidation, "Plaintext is not base64"});
    auto sealed = encrypt_under(keys_, r.key_id, *plaintext);
    if (!sealed) return refuse(sealed.error());
    blob = std::move(sealed).value();
  }  // the plaintext is wiped here, before the decision is recorded
  return decide(r, Json{{"ok", true}, {"KeyId", r.key_id}, {"CiphertextBlob", base64_encode(blob)}});
}

Json Service::handle_admin(const Json& req) {
  Request r;
  r.principal = "admin";
  const auto op = req.find("op");
  r.op = op != req.end() && op->is_string() ? op->get_ref<const std::string&>() : std::string();
  const auto refuse = [&](const KmsError& e) { return refuse_request(r, e); };
  if (r.op == "CreateKey") {
    if (auto f = only_fields(req, {"op", "Policy"}, {"Description", "KeyUsage", "KeySpec", "Tags"}, ""); !f)
      return refuse(f.error());
    const auto p = req.find("Policy");
    if (p == req.end()) return refuse({kValidation, "Policy is required (this service has no default key policy)"});
    auto id = keys_.create_key(*p);
    if (!id) return refuse(id.error());
    r.key_id = *id;
    Json text = *p;
    const std::string dumped = text.dump(-1, ' ', false, Json::error_handler_t::replace);
    r.reason = "policy sha256:" + sha256_hex(std::span(reinterpret_cast<const uint8_t*>(dumped.data()), dumped.size()));  // NOLINT
    return decide(r, Json{{"ok", true}, {"KeyId", *id}});
  }
  if (r.op == "Encrypt") return encrypt(req, r);
  if (r.op == "ListKeys") {
    if (auto f = only_fields(req, {"op"}, {"Limit", "Marker"}, ""); !f) return refuse(f.error());
    auto ids = keys_.list();
    if (!ids) return refuse(ids.error());
    Json keys = Json::array();
    for (const auto& id : *ids) keys.push_back({{"KeyId", id}});
    return decide(r, Json{{"ok", true}, {"Keys", std::move(keys)}});
  }
  if (r.op == "GetKeyPolicy") {
    if (auto f = only_fields(req, {"op", "KeyId", "PolicyName"}, {}, ""); !f) return refuse(f.error());
    auto id = string_field(req, "KeyId", "");
    if (!id) return refuse(id.error());
    if (!*id) return refuse({kValidation, "KeyId is required"});
    r.key_id = valid_key_id(**id) ? **id : std::string();
    Json raw;
    auto p = keys_.load_policy(**id, &raw);
    if (!p) return refuse(p.error());
    return decide(r, Json{{"ok", true}, {"KeyId", **id}, {"Policy", std::move(raw)}});
  }
  const std::string asked = shown(r.op);
  r.op = "unsupported";
  r.reason = "admin op \"" + asked + "\"";
  return decide(r, refusal({kUnsupported,
                            "admin op \"" + asked + "\" is not CreateKey, ListKeys, GetKeyPolicy or Encrypt"}));
}

}  // namespace azote::kms
