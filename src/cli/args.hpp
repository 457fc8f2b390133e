// The azote command line: the table of commands and their flags (which the parser and
// the help text both read), and parsing into an Invocation: global options plus one
// typed action — an API request ready to send, or a local admin/audit job.
//
// Only what the controller cannot judge is checked here: number syntax, file reads,
// the tag shorthand, flags this CLI does not know. Unknown instance types, malformed
// ids and the like go to the controller, so the error codes are the controller's.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "api/azote.pb.h"
#include "base/error.hpp"
#include "base/result.hpp"

namespace azote::cli {

// Exit statuses of azote.
inline constexpr int kExitOk = 0;
inline constexpr int kExitVerifyFailed = 1;   // audit verify: the log does not verify; describe-eif: not an EIF
inline constexpr int kExitUsage = 2;          // a bad command line or argument file
inline constexpr int kExitApi = 254;          // the controller refused or failed the call
inline constexpr int kExitConnection = 255;   // unreachable, TLS, credentials, local PKI, --wait timeout

enum class CliErrc { kUsage = 1 };
using CliError = Error<CliErrc>;
template <class T>
using CliResult = Result<T, CliError>;

enum class OutputFormat { kTable, kJson, kText };

inline constexpr const char* kDefaultEndpoint = "unix:/var/lib/azote/api.sock";

struct GlobalOptions {
  std::string endpoint = kDefaultEndpoint;  // --endpoint, AZOTE_ENDPOINT
  std::string credentials_dir;              // --credentials, AZOTE_CREDENTIALS, $HOME/.azote
  OutputFormat output = OutputFormat::kTable;
  double timeout_s = 30;                    // per call, and the limit of a --wait
};

enum class FlagKind {
  kValue,   // --flag VALUE (or --flag=VALUE), at most once
  kList,    // --flag V1 V2 ... (repeatable; values run up to the next --option)
  kSwitch,  // --flag
};
struct FlagSpec {
  std::string_view name;     // with the leading "--"
  FlagKind kind = FlagKind::kValue;
  bool required = false;
  std::string_view metavar;  // "ID", "GiB", ...
  std::string_view help;
};

enum class Rpc {
  kRunInstances,
  kDescribeInstances,
  kStopInstances,
  kStartInstances,
  kRebootInstances,
  kTerminateInstances,
  kGetConsoleOutput,
  kDescribeInstanceTypes,
  kRegisterImage,
  kDescribeImages,
  kCreateVolume,
  kAttachVolume,
  kDetachVolume,
  kDeleteVolume,
  kDescribeVolumes,
  kGetMetrics,
  kDescribeHostAttestation,
  kGetInstanceAttestation,
  kDescribeVpcs,
  kDescribeSubnets,
  kCreateSecurityGroup,
  kDeleteSecurityGroup,
  kAuthorizeSecurityGroupIngress,
  kAuthorizeSecurityGroupEgress,
  kRevokeSecurityGroupIngress,
  kRevokeSecurityGroupEgress,
  kDescribeSecurityGroups,
  kRunEnclave,
  kDescribeEnclaves,
  kTerminateEnclave,
  kGetEnclaveConsole,
  kNone,  // a local command
};

struct CommandSpec {
  std::string_view name;        // "run-instances", "admin issue-cert", "audit verify"
  Rpc rpc = Rpc::kNone;
  std::string_view summary;     // one line
  std::string_view positional;  // "" or the metavar of the one positional argument
  std::vector<FlagSpec> flags;
};

// Every command, in the order the top-level help lists them.
const std::vector<CommandSpec>& commands();
const CommandSpec* find_command(std::string_view name);

// An API call: the request, and whether to wait for the instances' target state.
struct RemoteCall {
  Rpc rpc = Rpc::kNone;
  std::shared_ptr<google::protobuf::Message> request;
  bool wait = false;
};
struct IssueCert {
  std::string state_dir, role, name, out_dir;
  uint32_t days = 365;
};
struct RevokeCert {
  std::string state_dir;
  std::string serial;  // normalized (lowercase, no leading zeros)
  bool unlisted = false;  // revoke a serial missing from the CA's issued list
};
struct SignRelease {
  std::string key;      // the release key (PEM private key)
  std::string bin_dir;  // where the release's binaries are
  std::string release;  // the release's name
  std::string out;      // the manifest file to write
};
struct VerifyRelease {
  std::string manifest;
  std::string public_key;
  std::string bin_dir;  // "": check the signature only
};
struct AuditVerify {
  std::string file;
  std::string public_key;  // default: signing.pub next to file
  std::string head;        // "" = FILE.head
};
// azote enclave build-enclave / describe-eif / pcr (local, as nitro-cli has them).
struct BuildEnclave {
  std::string kernel;
  std::vector<std::string> initrds;  // ramdisk1 (boot), ramdisk2... (application)
  std::string cmdline;
  std::string output;
  std::string signing_certificate, private_key;  // both or neither
  std::string name, version;                     // "" = defaults
  std::string metadata;                          // a JSON file, "" = none
};
struct DescribeEif {
  std::string path;
};
struct EnclavePcr {
  std::string input;                // nitro-cli pcr --input: PCR of a file
  std::string signing_certificate;  // or --signing-certificate: PCR8
};
struct ShowHelp {
  std::string text;
};
struct ShowVersion {};
using Action = std::variant<ShowHelp, ShowVersion, RemoteCall, IssueCert, RevokeCert, SignRelease, VerifyRelease,
                            AuditVerify, BuildEnclave, DescribeEif, EnclavePcr>;

struct Invocation {
  std::string command;  // the command's name, "" when none was given
  GlobalOptions globals;
  Action action;
};

// Looks up an environment variable (tests pass their own).
using Env = std::function<std::optional<std::string>(const char* name)>;
Env process_env();

// args excludes argv[0]. Errors are one line without the "azote: " prefix, naming the
// command and the bad argument: `run-instances: --count "x" is not a number from 1 to 64`.
CliResult<Invocation> parse_command_line(const std::vector<std::string>& args, const Env& env);

// Help for one command, for a group ("admin", "audit"), or (nullptr / "") the top level.
std::string help_text(std::string_view command);

// One --tag-specifications value, shorthand or JSON:
//   ResourceType=instance,Tags=[{Key=k,Value=v},{Key=k2,Value="a,b"}]
//   {"ResourceType":"instance","Tags":[{"Key":"k","Value":"v"}]}   (or a JSON array of these)
// Tags of resource_type only; an error (a sentence) otherwise.
Result<std::vector<v1::Tag>, std::string> parse_tag_specification(std::string_view text,
                                                                   std::string_view resource_type);

// --metadata-options: shorthand "HttpTokens=required" or JSON {"HttpTokens": "required"};
// the value of HttpTokens (the controller judges it), or a sentence.
Result<std::string, std::string> parse_metadata_options(std::string_view text);

// --enclave-options: shorthand "Enabled=true[,MemoryMiB=N][,CpuCount=N]" or JSON
// {"Enabled": true, "MemoryMiB": N, "CpuCount": N}. MemoryMiB and CpuCount (azote's, after
// nitro's allocator.yaml memory_mib and cpu_count) size the pool set aside for enclaves
// when the parent starts; 0 = the controller's default. The values, or a sentence.
struct EnclaveOptions {
  bool enabled = false;
  uint64_t memory_mib = 0;
  uint32_t cpu_count = 0;
};
Result<EnclaveOptions, std::string> parse_enclave_options(std::string_view text);

// --port: "22", "1000-2000", "-1", or for ICMP "TYPE-CODE" ("8--1": type 8, any code).
Result<std::pair<int, int>, std::string> parse_port_range(std::string_view text);

// --user-data: the text itself, or the bytes of PATH for file://PATH or fileb://PATH.
Result<std::string, std::string> user_data_bytes(const std::string& value);

// The whole of a regular file of at most max_bytes; the error is a sentence naming path.
Result<std::string, std::string> read_whole_file(const std::string& path, uint64_t max_bytes);

}  // namespace azote::cli
