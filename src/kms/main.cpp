// azote-kms: the key service that releases data keys only to attested enclave code
// (service.hpp). A thin main: options, `create-key`, `encrypt`, or the service: its keys,
// root and audit log, its sockets, then its seccomp allowlist, until SIGTERM/SIGINT.
#include <sys/prctl.h>
#include <sys/resource.h>

#include <cstdio>
#include <string>
#include <vector>

#include "kms/service.hpp"
#include "runtime/runtime.hpp"
#include "sandbox/seccomp.hpp"

using namespace azote;

namespace azote::kms {
const sandbox::ProcessPolicy& seccomp_policy();  // generated from seccomp.json
}

namespace {
int status_of(const kms::KmsError& e) {
  // kValidation: encrypt's plaintext is not 1..64 bytes; kNotFound: its key does not exist.
  if (e.code == kms::kUsage || e.code == kms::kMalformedPolicy || e.code == kms::kValidation)
    return runtime::kExitUsage;
  if (e.code == kms::kNoInput || e.code == kms::kNotFound) return runtime::kExitNoInput;
  return runtime::kExitOsErr;
}
int failed(const kms::KmsError& e) {
  std::fprintf(stderr, "azote-kms: error: %s\n", e.message().c_str());
  return status_of(e);
}
}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  auto parsed = kms::parse_args(args);
  if (auto done = runtime::handle_common_options("azote-kms", AZOTE_VERSION, parsed, kms::usage_text())) return *done;
  if (parsed->command == kms::Parsed::Command::kCreateKey) {
    auto id = kms::create_key_command(parsed->options.state_dir, parsed->policy_file);
    if (!id) return failed(id.error());
    std::printf("%s\n", id->c_str());
    return runtime::kExitOk;
  }
  if (parsed->command == kms::Parsed::Command::kEncrypt) {
    auto blob = kms::encrypt_command(parsed->options.state_dir, parsed->key_id, parsed->plaintext_file);
    if (!blob) return failed(blob.error());
    std::printf("%s\n", blob->c_str());
    return runtime::kExitOk;
  }
  runtime::block_stop_signals();
  // Keys pass through this process: no core dump, no ptrace from this uid.
  ::prctl(PR_SET_DUMPABLE, 0);
  const rlimit no_core{0, 0};
  ::setrlimit(RLIMIT_CORE, &no_core);
  const kms::Options& o = parsed->options;
  auto service = kms::Service::create(o);
  if (!service) return failed(service.error());
  if (auto l = (*service)->listen(o); !l) return failed(l.error());
  if (auto t = (*service)->self_test(); !t) return failed(t.error());
  // Set up: from here it serves its sockets, reads its key files and appends to its
  // audit log, under its seccomp allowlist.
  if (auto s = sandbox::init_process(kms::seccomp_policy(), o.seccomp); !s) {
    std::fprintf(stderr, "azote-kms: error: %s\n", s.error().message().c_str());
    return runtime::kExitOsErr;
  }
  if (auto s = sandbox::enter_thread("main", "azote-kms"); !s) {
    std::fprintf(stderr, "azote-kms: error: %s\n", s.error().message().c_str());
    return runtime::kExitOsErr;
  }
  // "ready" once confined: whoever waits for it sees the filter in place.
  std::printf("azote-kms: ready listen=%s admin=%s audit=%s max-age=%llds\n", o.listen.c_str(),
              o.admin.empty() ? "-" : o.admin.c_str(), (*service)->audit_path().c_str(),
              static_cast<long long>(o.max_age.count()));
  std::fflush(stdout);
  return (*service)->run();
}
