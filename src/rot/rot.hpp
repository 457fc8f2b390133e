// azote-rot: the host's root of trust (issue 11), the part that stands in for a security
// chip. It alone holds the host's unique device secret (UDS): 48 random bytes in
// <state-dir>/uds, created at first start (mode 0400, owned by azote-rot's uid) and
// refused if anyone else could read it. On real hardware the UDS would be fused into the
// chip or sealed in a TPM and readable only by its boot ROM; here it is a file, and the
// boundary is the file's mode and owner (root can still read it: the write guard of a
// later slice and the launcher's jail are what narrow that).
//
// At start it measures the layers it is given (SHA-384 of each file's bytes, read
// through one descriptor; of each layer's config string; its mode), builds the DICE
// chain (lib/dice) from the UDS through them, and serves on its control socket:
//   {"op": "describe"}              the layers: name, mode, measurement, public key
//                                   SHA-256, certificate; the chain PEM (leaf first)
//   {"op": "sign", "payload": HEX}  an ECDSA-SHA384 signature (DER, hex) by the
//                                   attestation key (the last layer's) of
//                                   "azote-rot sign v1" 0x00 || payload
//   {"op": "attest", "module_id": S, "pcrs": {"I": HEX48...}, "user_data"/"nonce"/
//    "public_key": HEX (optional)}
//                                   an attestation document (lib/attest: COSE_Sign1,
//                                   ES384) signed by the attestation key, its
//                                   certificate the leaf and the chain below it the CA
//                                   bundle (device certificate first); the timestamp is
//                                   azote-rot's clock; in development mode every PCR is
//                                   zero (a debug enclave's convention)
//
// With --tpm-listen, a second socket serves the instances' TPM cards (azote-card-tpm).
// Only the launcher (root) can connect to it: for each TPM card it starts, it connects,
// binds the connection to the card's instance with {"op": "bind", "instance": "i-..."}
// and hands the connection to the card, which can then only ask
//   {"op": "attest-tpm", "pcrs": {"I": HEX48...}, "nonce"/"user_data"/"public_key": HEX}
// for a NitroTPM document of that instance: module_id "<instance>-tpm", the PCR map
// "nitrotpm_pcrs" (the TPM's SHA-384 bank as the card read it; zero in development
// mode), one JSON line each way.
// Never the UDS, a CDI or a private key.
#pragma once

#include <map>

#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "base/error.hpp"
#include "control/control.hpp"
#include "dice/dice.hpp"
#include "runtime/runtime.hpp"
#include "sandbox/seccomp.hpp"

namespace azote::rot {

enum class RotErrc {
  kUsage = 1,  // a bad command line
  kState,      // the state directory or the UDS file is unusable (names which and why)
  kLayer,      // a layer's file cannot be measured
  kCrypto,     // the DICE chain could not be built
};
using RotError = Error<RotErrc>;
template <class T>
using RotResult = Result<T, RotError>;

struct LayerSpec {
  std::string name;    // [A-Za-z0-9._-]{1,64}
  std::string path;    // the file measured as its code
  std::string config;  // measured as its config (SHA-384 of these bytes)
};

struct Options {
  std::string state_dir;
  std::vector<LayerSpec> layers;  // in order, above the device
  dice::Mode mode = dice::Mode::kNormal;  // --mode development: kDebug, in every certificate
  std::string control;                    // --control PATH
  std::string tpm_listen;                 // --tpm-listen fd:N|PATH: the TPM cards' socket
  std::string log_level = "info";
  sandbox::SeccompMode seccomp = sandbox::SeccompMode::kKill;  // --seccomp kill|log
};
struct Parsed {
  Options options;
  bool help = false, version = false;
};
RotResult<Parsed> parse_args(const std::vector<std::string>& args);
const char* usage_text();

// The UDS of `state_dir`: read if it exists (48 bytes, a regular file owned by this
// uid, no permission for group or others), else created with O_EXCL from getrandom.
// `created` says which.
RotResult<dice::Secret> open_or_create_uds(const std::string& state_dir, bool* created);

// SHA-384 of a regular file's bytes, read through one descriptor (O_NOFOLLOW).
RotResult<dice::Digest> measure_file(const std::string& path);

class Rot {
 public:
  static RotResult<std::unique_ptr<Rot>> start(const Options& o);
  // Serves the control socket until SIGTERM/SIGINT; returns the exit status.
  int run();
  control::Json handle(const control::Json& request) const;
  // The public description ("describe"'s answer without "ok").
  control::Json describe() const;
  const dice::Chain& chain() const { return chain_; }

 private:
  Rot(dice::Chain c, dice::Mode mode) : chain_(std::move(c)), mode_(mode) {}
  control::Json attest(const control::Json& req, const char* pcrs_key = "pcrs", bool zero_pcrs = false) const;
  // The TPM cards' socket: accept, then each connection's lines (bind, attest-tpm).
  struct TpmClient {
    UniqueFd fd;
    std::string in;
    std::string instance;  // empty until the launcher binds it
    std::string enclave;   // bound to an enclave of `instance` (its NSM card), or "" (the TPM card)
    bool debug = false;    // a debug-mode enclave: its documents' PCRs are zeros
  };
  void accept_tpm_clients();
  void serve_tpm_client(int fd);
  control::Json tpm_request(TpmClient& c, const control::Json& req) const;
  UniqueFd tpm_listen_;
  std::map<int, TpmClient> tpm_clients_;
  dice::Chain chain_;
  dice::Mode mode_;
  std::unique_ptr<runtime::Loop> loop_;
  std::unique_ptr<control::Server> control_;
};

}  // namespace azote::rot
