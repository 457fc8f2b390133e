#include "cli/args.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "base/hex.hpp"
#include "base/parse.hpp"
#include "base/unique_fd.hpp"
#include "pki/pki.hpp"

namespace azote::cli {
namespace {

constexpr uint64_t kU32Max = std::numeric_limits<uint32_t>::max();
constexpr uint64_t kMaxUserDataFile = 1 << 20;         // the controller allows 16 KiB
constexpr uint64_t kMaxImageFile = uint64_t{1} << 30;  // kernel, initrd, root content

using K = FlagKind;

const FlagSpec kWait{"--wait", K::kSwitch, false, "",
                     "poll until every instance reaches the target state"};

// The flags of Authorize/Revoke SecurityGroup Ingress/Egress: one rule per call.
std::vector<FlagSpec> rule_flags(std::string_view peer) {
  static const std::string cidr_help[2] = {"source CIDR block, e.g. 10.0.0.0/16", "destination CIDR block, e.g. 0.0.0.0/0"};
  static const std::string group_help[2] = {"source security group (its members' addresses)",
                                            "destination security group (its members' addresses)"};
  const int i = peer == "source" ? 0 : 1;
  return {{"--group-id", K::kValue, true, "ID", "the security group"},
          {"--protocol", K::kValue, false, "PROTO", "tcp, udp, icmp, -1 (all traffic) or a number 0-255"},
          {"--port", K::kValue, false, "PORT[-PORT]",
           "tcp/udp: a port or a range; icmp: TYPE or TYPE-CODE (-1: any)"},
          {"--cidr", K::kValue, false, "CIDR", cidr_help[i]},
          {"--source-group", K::kValue, false, "ID", group_help[i]}};
}

std::vector<CommandSpec> build_commands() {
  const FlagSpec ids_required{"--instance-ids", K::kList, true, "ID ...", "the instances"};
  const FlagSpec tags_instance{"--tag-specifications", K::kList, false, "SPEC ...",
                               "tags: 'ResourceType=instance,Tags=[{Key=k,Value=v},...]' (or JSON)"};
  const FlagSpec tags_volume{"--tag-specifications", K::kList, false, "SPEC ...",
                             "tags: 'ResourceType=volume,Tags=[{Key=k,Value=v},...]' (or JSON)"};
  const FlagSpec token{"--client-token", K::kValue, false, "TOKEN",
                       "idempotency token: the same token returns the same result"};
  return {
      {"run-instances", Rpc::kRunInstances, "launch instances of an image", "",
       {{"--image-id", K::kValue, true, "ID", "the image to boot (ami-...)"},
        {"--instance-type", K::kValue, false, "TYPE", "instance type (default t3.micro)"},
        {"--count", K::kValue, false, "N", "how many instances, 1 to 64 (default 1)"},
        {"--user-data", K::kValue, false, "TEXT|file://PATH",
         "user data: the text itself, or the bytes of a file"},
        tags_instance,
        token,
        {"--root-volume-size", K::kValue, false, "GiB", "root volume size (default: the image's)"},
        {"--root-volume-type", K::kValue, false, "TYPE", "root volume type (default gp3)"},
        {"--security-group-ids", K::kList, false, "SG ...",
         "security groups of the primary network interface, 1 to 5 (default: the VPC's default group)"},
        {"--subnet-id", K::kValue, false, "ID", "subnet of the primary network interface (default: the default subnet)"},
        {"--metadata-options", K::kValue, false, "HttpTokens=optional|required",
         "instance metadata service: optional (default: IMDSv1 and IMDSv2) or required (IMDSv2 only)"},
        {"--no-network-interface", K::kSwitch, false, "",
         "launch without a network interface (also when the host has no network card)"},
        {"--enclave-options", K::kValue, false, "Enabled=true|false[,MemoryMiB=N][,CpuCount=N]",
         "whether enclaves may be carved from the instances (azote enclave run-enclave), and the pool set "
         "aside for them from each instance's type (default: half its vCPUs, min(512, half its MiB))"},
        {kWait.name, kWait.kind, false, "", "wait until every instance is running"}}},
      {"describe-instances", Rpc::kDescribeInstances, "describe instances", "",
       {{"--instance-ids", K::kList, false, "ID ...", "only these instances (default: all)"}}},
      {"get-console-output", Rpc::kGetConsoleOutput,
       "print the last 64 KiB an instance wrote to its serial console", "",
       {{"--instance-id", K::kValue, true, "ID", "the instance"}}},
      {"stop-instances", Rpc::kStopInstances, "stop instances", "",
       {ids_required,
        {"--force", K::kSwitch, false, "", "do not wait for the guest to shut down"},
        {kWait.name, kWait.kind, false, "", "wait until every instance is stopped"}}},
      {"start-instances", Rpc::kStartInstances, "start stopped instances", "",
       {ids_required, {kWait.name, kWait.kind, false, "", "wait until every instance is running"}}},
      {"reboot-instances", Rpc::kRebootInstances, "reboot instances", "",
       {ids_required, {kWait.name, kWait.kind, false, "", "wait until every instance is running"}}},
      {"terminate-instances", Rpc::kTerminateInstances, "terminate instances", "",
       {ids_required,
        {kWait.name, kWait.kind, false, "", "wait until every instance is terminated"}}},
      {"describe-instance-types", Rpc::kDescribeInstanceTypes, "describe instance types", "",
       {{"--instance-types", K::kList, false, "TYPE ...", "only these types (default: all)"}}},
      {"describe-images", Rpc::kDescribeImages, "describe images", "",
       {{"--image-ids", K::kList, false, "ID ...", "only these images (default: all)"}}},
      {"register-image", Rpc::kRegisterImage, "register an image from a kernel (and initrd)", "",
       {{"--name", K::kValue, true, "NAME", "the image's name"},
        {"--kernel", K::kValue, true, "PATH", "kernel: ELF (PVH) or bzImage"},
        {"--initrd", K::kValue, false, "PATH", "initial ramdisk"},
        {"--cmdline", K::kValue, false, "TEXT", "kernel command line"},
        {"--description", K::kValue, false, "TEXT", "a description"},
        {"--root-volume-size", K::kValue, false, "GiB", "root volume size (default 1)"},
        {"--root-content", K::kValue, false, "PATH",
         "bytes written at the start of each new root volume"},
        {"--tpm-support", K::kValue, false, "v2.0",
         "its instances get a TPM 2.0 (NitroTPM), their boot measured into it"}}},
      {"create-volume", Rpc::kCreateVolume, "create a volume", "",
       {{"--size", K::kValue, true, "GiB", "size in GiB"},
        {"--volume-type", K::kValue, false, "TYPE", "gp2, gp3, io1, io2 or standard (default gp3)"},
        {"--iops", K::kValue, false, "N", "provisioned IOPS (io1/io2; gp3 default 3000)"},
        {"--throughput", K::kValue, false, "MB/s", "throughput, gp3 only (default 125)"},
        {"--encrypted", K::kSwitch, false, "", "encrypt the volume (the default)"},
        {"--no-encrypted", K::kSwitch, false, "", "do not encrypt the volume"},
        tags_volume,
        token}},
      {"attach-volume", Rpc::kAttachVolume, "attach a volume to an instance", "",
       {{"--volume-id", K::kValue, true, "ID", "the volume"},
        {"--instance-id", K::kValue, true, "ID", "the instance"},
        {"--device", K::kValue, false, "DEVICE", "device name, e.g. /dev/vdb (default: the next free)"}}},
      {"detach-volume", Rpc::kDetachVolume, "detach a volume", "",
       {{"--volume-id", K::kValue, true, "ID", "the volume"},
        {"--force", K::kSwitch, false, "", "detach without waiting for the guest"}}},
      {"delete-volume", Rpc::kDeleteVolume, "delete a volume", "",
       {{"--volume-id", K::kValue, true, "ID", "the volume"}}},
      {"describe-volumes", Rpc::kDescribeVolumes, "describe volumes", "",
       {{"--volume-ids", K::kList, false, "ID ...", "only these volumes (default: all)"}}},
      {"get-metrics", Rpc::kGetMetrics, "print the controller's metrics (Prometheus text)", "", {}},
      {"describe-host-attestation", Rpc::kDescribeHostAttestation,
       "the host's root of trust: its measured layers and certificate chain (no keys)", "", {}},
      {"get-instance-attestation", Rpc::kGetInstanceAttestation,
       "an attestation document for a running instance (COSE_Sign1, the AWS Nitro format), base64", "",
       {{"--instance-id", K::kValue, true, "ID", "the instance"},
        {"--nonce", K::kValue, false, "HEX", "the verifier's challenge, up to 1024 bytes"},
        {"--user-data", K::kValue, false, "HEX", "data to sign with it, up to 1024 bytes"}}},
      {"describe-vpcs", Rpc::kDescribeVpcs, "describe the host's VPCs", "",
       {{"--vpc-ids", K::kList, false, "ID ...", "only these VPCs (default: all)"}}},
      {"describe-subnets", Rpc::kDescribeSubnets, "describe subnets", "",
       {{"--subnet-ids", K::kList, false, "ID ...", "only these subnets (default: all)"}}},
      {"create-security-group", Rpc::kCreateSecurityGroup, "create a security group (no inbound, all outbound)", "",
       {{"--group-name", K::kValue, true, "NAME", "unique in the VPC"},
        {"--description", K::kValue, true, "TEXT", "a description"},
        {"--vpc-id", K::kValue, false, "ID", "the VPC (default: the default VPC)"}}},
      {"delete-security-group", Rpc::kDeleteSecurityGroup, "delete a security group no interface or rule uses", "",
       {{"--group-id", K::kValue, true, "ID", "the group"}}},
      {"authorize-security-group-ingress", Rpc::kAuthorizeSecurityGroupIngress, "add an inbound rule to a security group",
       "", rule_flags("source")},
      {"authorize-security-group-egress", Rpc::kAuthorizeSecurityGroupEgress, "add an outbound rule to a security group",
       "", rule_flags("destination")},
      {"revoke-security-group-ingress", Rpc::kRevokeSecurityGroupIngress, "remove an inbound rule from a security group",
       "", rule_flags("source")},
      {"revoke-security-group-egress", Rpc::kRevokeSecurityGroupEgress, "remove an outbound rule from a security group",
       "", rule_flags("destination")},
      {"describe-security-groups", Rpc::kDescribeSecurityGroups, "describe security groups and their rules", "",
       {{"--group-ids", K::kList, false, "ID ...", "only these groups (default: all)"}}},
      {"admin issue-cert", Rpc::kNone,
       "issue a client certificate from the host CA (local, no controller needed)", "",
       {{"--state-dir", K::kValue, true, "DIR", "the controller's state directory (PKI in DIR/pki)"},
        {"--role", K::kValue, true, "ROLE", "the role (certificate OU), e.g. operator"},
        {"--name", K::kValue, true, "NAME", "the client's name (certificate CN)"},
        {"--days", K::kValue, false, "N", "validity in days (default 365)"},
        {"--out", K::kValue, true, "DIR", "where to write ca.pem, cert.pem and key.pem (0600)"}}},
      {"admin revoke-cert", Rpc::kNone, "revoke a client certificate (local)", "",
       {{"--state-dir", K::kValue, true, "DIR", "the controller's state directory"},
        {"--serial", K::kValue, true, "HEX", "the certificate's serial, as issue-cert printed it"},
        {"--unlisted", K::kSwitch, false, "",
         "revoke even though the CA's list of issued serials lacks it (a certificate issued before the CA kept "
         "that list)"}}},
      {"admin sign-release", Rpc::kNone,
       "write a release manifest (SHA-384 of each azote binary) signed with the release key (local)", "",
       {{"--key", K::kValue, true, "PEM_FILE", "the release key: an EC private key (P-384), kept off the hosts"},
        {"--bin-dir", K::kValue, true, "DIR", "the directory holding the release's binaries (azote-launcher, "
                                                 "azote-controller, azote-hv, azote-card-blk, azote-card-net, azote-card-tpm, azote-card-nsm, azote-card-vsock, azote-rot)"},
        {"--release", K::kValue, true, "NAME", "the release's name, e.g. 2026.12.07"},
        {"--out", K::kValue, true, "FILE", "the manifest to write (azote-controller --release-manifest)"}}},
      {"admin verify-release", Rpc::kNone,
       "check a release manifest's signature and, with --bin-dir, that the binaries are the release's (local)", "",
       {{"--manifest", K::kValue, true, "FILE", "the release manifest"},
        {"--public-key", K::kValue, true, "PEM_FILE", "the release key's public half"},
        {"--bin-dir", K::kValue, false, "DIR", "also check the binaries there against the manifest"}}},
      {"enclave run-enclave", Rpc::kRunEnclave,
       "start an enclave from an EIF on a parent instance with enclave support (its vCPUs and memory)", "",
       {{"--instance-id", K::kValue, true, "ID", "the parent instance (launched with --enclave-options Enabled=true)"},
        {"--eif-path", K::kValue, true, "FILE", "the enclave image (azote enclave build-enclave)"},
        {"--cpu-count", K::kValue, true, "N", "vCPUs taken from the parent (it keeps at least one)"},
        {"--memory", K::kValue, true, "MiB", "memory taken from the parent: at least 64 and 4 times the image"},
        {"--enclave-cid", K::kValue, false, "CID", "the enclave's vsock CID, 4 to 4294967294 (default: chosen)"},
        {"--debug-mode", K::kSwitch, false, "",
         "console readable (azote enclave console); its attestation documents carry zero PCRs"},
        {"--enclave-name", K::kValue, false, "NAME", "a name (default: the image's)"}}},
      {"enclave describe-enclaves", Rpc::kDescribeEnclaves, "describe the enclaves of the host or of one instance", "",
       {{"--instance-id", K::kValue, false, "ID", "only this parent's enclaves"}}},
      {"enclave terminate-enclave", Rpc::kTerminateEnclave, "terminate an enclave (its vCPUs and memory go back)", "",
       {{"--enclave-id", K::kValue, true, "ID", "the enclave (i-...-enc...)"}}},
      {"enclave console", Rpc::kGetEnclaveConsole, "print a debug-mode enclave's console (last 64 KiB)", "",
       {{"--enclave-id", K::kValue, true, "ID", "the enclave"}}},
      {"enclave build-enclave", Rpc::kNone,
       "write an Enclave Image File (EIF) and print its measurements, as nitro-cli build-enclave (local)", "",
       {{"--kernel", K::kValue, true, "FILE", "the enclave's kernel (bzImage, or the built-in guest's ELF)"},
        {"--initrd", K::kList, true, "FILE ...",
         "ramdisks in order: the first is measured into PCR1 with the kernel, the rest into PCR2 (repeatable)"},
        {"--cmdline", K::kValue, true, "TEXT", "the kernel command line"},
        {"--output-file", K::kValue, true, "FILE", "the EIF to write (replaced atomically)"},
        {"--signing-certificate", K::kValue, false, "PEM_FILE",
         "sign PCR0 with this certificate's key (EC P-256, P-384 or P-521); needs --private-key"},
        {"--private-key", K::kValue, false, "PEM_FILE", "the signing certificate's private key (unencrypted PEM)"},
        {"--name", K::kValue, false, "NAME", "ImageName in the metadata (default: the output file's name)"},
        {"--version", K::kValue, false, "TEXT", "ImageVersion in the metadata (default 1.0)"},
        {"--metadata", K::kValue, false, "JSON_FILE", "CustomMetadata: a JSON file kept in the image, not measured"}}},
      {"enclave describe-eif", Rpc::kNone,
       "check an EIF (layout, CRC, signature) and print its version, measurements and metadata (local)", "",
       {{"--eif-path", K::kValue, true, "FILE", "the EIF"}}},
      {"enclave pcr", Rpc::kNone,
       "print the PCR a file would give (H(0 || H(file))), or PCR8 of a signing certificate (local)", "",
       {{"--input", K::kValue, false, "FILE", "the file to measure"},
        {"--signing-certificate", K::kValue, false, "PEM_FILE", "the certificate whose PCR8 to print"}}},
      {"audit verify", Rpc::kNone, "verify a signed audit log (local)", "FILE",
       {{"--public-key", K::kValue, false, "PEM_FILE",
         "the host's audit public key (default: signing.pub next to FILE)"},
        {"--head", K::kValue, false, "FILE", "the head anchor (default: FILE.head)"}}},
  };
}

struct GlobalSpec {
  std::string_view name;
  bool takes_value;
  std::string_view metavar;
  std::string_view help;
};
constexpr GlobalSpec kGlobals[] = {
    {"--endpoint", true, "EP", "unix:PATH or HOST:PORT (env AZOTE_ENDPOINT; default unix:/var/lib/azote/api.sock)"},
    {"--credentials", true, "DIR", "ca.pem, cert.pem, key.pem (env AZOTE_CREDENTIALS; default $HOME/.azote)"},
    {"--output", true, "FORMAT", "table, json or text (default table)"},
    {"--timeout", true, "SECONDS", "limit of each call and of --wait (default 30)"},
    {"--help", false, "", "help (also after a command)"},
    {"--version", false, "", "print the version"},
};

const GlobalSpec* find_global(std::string_view name) {
  for (const auto& g : kGlobals) {
    if (g.name == name) return &g;
  }
  return nullptr;
}

const FlagSpec* find_flag(const CommandSpec& cmd, std::string_view name) {
  for (const auto& f : cmd.flags) {
    if (f.name == name) return &f;
  }
  return nullptr;
}

bool is_group(std::string_view word) { return word == "admin" || word == "audit" || word == "enclave"; }

std::string quote(std::string_view s) {
  std::string q(1, '"');
  q.append(s);
  q += '"';
  return q;
}

Unexpected<CliError> usage(std::string message) {
  return Unexpected{CliError{CliErrc::kUsage, 0, std::move(message)}};
}

// What the generic pass collects for one command.
struct RawArgs {
  std::map<std::string, std::vector<std::string>, std::less<>> values;
  std::vector<std::string> positionals;

  bool has(std::string_view flag) const { return values.find(flag) != values.end(); }
  std::string get(std::string_view flag, std::string fallback = "") const {
    auto it = values.find(flag);
    return it == values.end() || it->second.empty() ? fallback : it->second.front();
  }
  const std::vector<std::string>& list(std::string_view flag) const {
    static const std::vector<std::string> kEmpty;
    auto it = values.find(flag);
    return it == values.end() ? kEmpty : it->second;
  }
};

// Builds the typed action of one command from its already checked flags.
class Builder {
 public:
  Builder(const CommandSpec& cmd, const RawArgs& raw) : cmd_(cmd), raw_(raw) {}

  CliResult<Action> build();

 private:
  std::string prefix() const { return std::string(cmd_.name) + ": "; }
  // An unsigned number within [lo, hi]; 0 when the flag is absent.
  CliResult<uint64_t> number(std::string_view flag, uint64_t lo, uint64_t hi) const {
    if (!raw_.has(flag)) return uint64_t{0};
    const std::string v = raw_.get(flag);
    auto n = parse_uint(v, lo, hi);
    if (!n) {
      return usage(prefix() + std::string(flag) + " " + quote(v) + " is not a number from " +
                   std::to_string(lo) + " to " + std::to_string(hi));
    }
    return *n;
  }
  CliResult<std::string> file_bytes(std::string_view flag, uint64_t max) const {
    if (!raw_.has(flag)) return std::string();
    auto data = read_whole_file(raw_.get(flag), max);
    if (!data.ok()) return usage(prefix() + std::string(flag) + ": " + data.error());
    return std::move(data).value();
  }
  CliResult<std::vector<v1::Tag>> tags(std::string_view resource_type) const {
    std::vector<v1::Tag> all;
    for (const auto& spec : raw_.list("--tag-specifications")) {
      auto t = parse_tag_specification(spec, resource_type);
      if (!t.ok()) return usage(prefix() + "--tag-specifications: " + t.error());
      all.insert(all.end(), t->begin(), t->end());
    }
    return all;
  }
  template <class Ids>
  void add_all(Ids* field, std::string_view flag) const {
    for (const auto& v : raw_.list(flag)) field->Add(std::string(v));
  }
  RemoteCall remote(std::shared_ptr<google::protobuf::Message> req) const {
    return RemoteCall{cmd_.rpc, std::move(req), raw_.has("--wait")};
  }
  CliResult<Action> instance_ids_request() const {
    auto req = std::make_shared<v1::InstanceIdsRequest>();
    add_all(req->mutable_instance_ids(), "--instance-ids");
    req->set_force(raw_.has("--force"));
    return Action{remote(req)};
  }

  const CommandSpec& cmd_;
  const RawArgs& raw_;
};

CliResult<Action> Builder::build() {
  switch (cmd_.rpc) {
    case Rpc::kRunInstances: {
      auto req = std::make_shared<v1::RunInstancesRequest>();
      req->set_image_id(raw_.get("--image-id"));
      req->set_instance_type(raw_.get("--instance-type"));
      AZOTE_TRY(count, number("--count", 1, 64));
      req->set_count(static_cast<uint32_t>(count));
      if (raw_.has("--user-data")) {
        auto ud = user_data_bytes(raw_.get("--user-data"));
        if (!ud.ok()) return usage(prefix() + "--user-data: " + ud.error());
        req->set_user_data(std::move(ud).value());
      }
      AZOTE_TRY(tag_list, tags("instance"));
      for (auto& t : tag_list) *req->add_tags() = std::move(t);
      req->set_client_token(raw_.get("--client-token"));
      AZOTE_TRY(root_size, number("--root-volume-size", 1, kU32Max));
      req->set_root_volume_size_gib(static_cast<uint32_t>(root_size));
      req->set_root_volume_type(raw_.get("--root-volume-type"));
      add_all(req->mutable_security_group_ids(), "--security-group-ids");
      req->set_subnet_id(raw_.get("--subnet-id"));
      if (raw_.has("--metadata-options")) {
        auto tokens = parse_metadata_options(raw_.get("--metadata-options"));
        if (!tokens.ok()) return usage(prefix() + "--metadata-options: " + tokens.error());
        req->set_http_tokens(*tokens);
      }
      req->set_no_network_interface(raw_.has("--no-network-interface"));
      if (raw_.has("--enclave-options")) {
        auto eo = parse_enclave_options(raw_.get("--enclave-options"));
        if (!eo.ok()) return usage(prefix() + "--enclave-options: " + eo.error());
        req->set_enclave_enabled(eo->enabled);
        req->set_enclave_memory_mib(eo->memory_mib);
        req->set_enclave_cpu_count(eo->cpu_count);
      }
      return Action{remote(req)};
    }
    case Rpc::kRunEnclave: {
      auto req = std::make_shared<v1::RunEnclaveRequest>();
      req->set_instance_id(raw_.get("--instance-id"));
      auto eif = read_whole_file(raw_.get("--eif-path"), 256ull << 20);
      if (!eif.ok()) return usage(prefix() + "--eif-path: " + eif.error());
      req->set_eif(std::move(eif).value());
      AZOTE_TRY(cpus, number("--cpu-count", 1, 254));
      req->set_cpu_count(static_cast<uint32_t>(cpus));
      AZOTE_TRY(mem, number("--memory", 1, 1 << 20));
      req->set_memory_mib(static_cast<uint32_t>(mem));
      AZOTE_TRY(cid, number("--enclave-cid", 1, kU32Max));
      req->set_enclave_cid(static_cast<uint64_t>(cid));
      req->set_debug_mode(raw_.has("--debug-mode"));
      req->set_enclave_name(raw_.get("--enclave-name"));
      return Action{remote(req)};
    }
    case Rpc::kDescribeEnclaves: {
      auto req = std::make_shared<v1::DescribeEnclavesRequest>();
      req->set_instance_id(raw_.get("--instance-id"));
      return Action{remote(req)};
    }
    case Rpc::kTerminateEnclave: {
      auto req = std::make_shared<v1::TerminateEnclaveRequest>();
      req->set_enclave_id(raw_.get("--enclave-id"));
      return Action{remote(req)};
    }
    case Rpc::kGetEnclaveConsole: {
      auto req = std::make_shared<v1::GetEnclaveConsoleRequest>();
      req->set_enclave_id(raw_.get("--enclave-id"));
      return Action{remote(req)};
    }
    case Rpc::kDescribeInstances: {
      auto req = std::make_shared<v1::DescribeInstancesRequest>();
      add_all(req->mutable_instance_ids(), "--instance-ids");
      return Action{remote(req)};
    }
    case Rpc::kStopInstances:
    case Rpc::kStartInstances:
    case Rpc::kRebootInstances:
    case Rpc::kTerminateInstances:
      return instance_ids_request();
    case Rpc::kGetConsoleOutput: {
      auto req = std::make_shared<v1::GetConsoleOutputRequest>();
      req->set_instance_id(raw_.get("--instance-id"));
      return Action{remote(req)};
    }
    case Rpc::kDescribeInstanceTypes: {
      auto req = std::make_shared<v1::DescribeInstanceTypesRequest>();
      add_all(req->mutable_instance_types(), "--instance-types");
      return Action{remote(req)};
    }
    case Rpc::kRegisterImage: {
      auto req = std::make_shared<v1::RegisterImageRequest>();
      req->set_name(raw_.get("--name"));
      req->set_description(raw_.get("--description"));
      req->set_cmdline(raw_.get("--cmdline"));
      AZOTE_TRY(size, number("--root-volume-size", 1, kU32Max));
      req->set_root_volume_size_gib(static_cast<uint32_t>(size));
      if (raw_.has("--tpm-support")) {
        if (raw_.get("--tpm-support") != "v2.0")
          return usage(prefix() + "--tpm-support \"" + raw_.get("--tpm-support") + "\": the only value is v2.0");
        req->set_tpm_support("v2.0");
      }
      AZOTE_TRY(kernel, file_bytes("--kernel", kMaxImageFile));
      AZOTE_TRY(initrd, file_bytes("--initrd", kMaxImageFile));
      AZOTE_TRY(root, file_bytes("--root-content", kMaxImageFile));
      req->set_kernel(std::move(kernel));
      req->set_initrd(std::move(initrd));
      req->set_root_content(std::move(root));
      return Action{remote(req)};
    }
    case Rpc::kDescribeImages: {
      auto req = std::make_shared<v1::DescribeImagesRequest>();
      add_all(req->mutable_image_ids(), "--image-ids");
      return Action{remote(req)};
    }
    case Rpc::kCreateVolume: {
      auto req = std::make_shared<v1::CreateVolumeRequest>();
      AZOTE_TRY(size, number("--size", 1, kU32Max));
      req->set_size_gib(static_cast<uint32_t>(size));
      req->set_volume_type(raw_.get("--volume-type"));
      AZOTE_TRY(iops, number("--iops", 1, kU32Max));
      req->set_iops(static_cast<uint32_t>(iops));
      AZOTE_TRY(tput, number("--throughput", 1, kU32Max));
      req->set_throughput_mbps(static_cast<uint32_t>(tput));
      if (raw_.has("--encrypted") && raw_.has("--no-encrypted")) {
        return usage(prefix() + "--encrypted and --no-encrypted exclude each other");
      }
      if (raw_.has("--encrypted")) req->set_encrypted(true);
      if (raw_.has("--no-encrypted")) req->set_encrypted(false);
      AZOTE_TRY(tag_list, tags("volume"));
      for (auto& t : tag_list) *req->add_tags() = std::move(t);
      req->set_client_token(raw_.get("--client-token"));
      return Action{remote(req)};
    }
    case Rpc::kAttachVolume: {
      auto req = std::make_shared<v1::AttachVolumeRequest>();
      req->set_volume_id(raw_.get("--volume-id"));
      req->set_instance_id(raw_.get("--instance-id"));
      req->set_device(raw_.get("--device"));
      return Action{remote(req)};
    }
    case Rpc::kDetachVolume: {
      auto req = std::make_shared<v1::DetachVolumeRequest>();
      req->set_volume_id(raw_.get("--volume-id"));
      req->set_force(raw_.has("--force"));
      return Action{remote(req)};
    }
    case Rpc::kDeleteVolume: {
      auto req = std::make_shared<v1::DeleteVolumeRequest>();
      req->set_volume_id(raw_.get("--volume-id"));
      return Action{remote(req)};
    }
    case Rpc::kDescribeVolumes: {
      auto req = std::make_shared<v1::DescribeVolumesRequest>();
      add_all(req->mutable_volume_ids(), "--volume-ids");
      return Action{remote(req)};
    }
    case Rpc::kGetMetrics:
      return Action{remote(std::make_shared<v1::GetMetricsRequest>())};
    case Rpc::kDescribeHostAttestation:
      return Action{remote(std::make_shared<v1::DescribeHostAttestationRequest>())};
    case Rpc::kGetInstanceAttestation: {
      auto req = std::make_shared<v1::GetInstanceAttestationRequest>();
      req->set_instance_id(raw_.get("--instance-id"));
      for (const char* flag : {"--nonce", "--user-data"}) {
        if (!raw_.has(flag)) continue;
        const auto bytes = from_hex(raw_.get(flag));
        if (!bytes) return usage(prefix() + flag + " " + quote(raw_.get(flag)) + " is not hex");
        const std::string b(bytes->begin(), bytes->end());
        if (std::string_view(flag) == "--nonce") req->set_nonce(b);
        else req->set_user_data(b);
      }
      return Action{remote(req)};
    }
    case Rpc::kDescribeVpcs: {
      auto req = std::make_shared<v1::DescribeVpcsRequest>();
      add_all(req->mutable_vpc_ids(), "--vpc-ids");
      return Action{remote(req)};
    }
    case Rpc::kDescribeSubnets: {
      auto req = std::make_shared<v1::DescribeSubnetsRequest>();
      add_all(req->mutable_subnet_ids(), "--subnet-ids");
      return Action{remote(req)};
    }
    case Rpc::kCreateSecurityGroup: {
      auto req = std::make_shared<v1::CreateSecurityGroupRequest>();
      req->set_group_name(raw_.get("--group-name"));
      req->set_description(raw_.get("--description"));
      req->set_vpc_id(raw_.get("--vpc-id"));
      return Action{remote(req)};
    }
    case Rpc::kDeleteSecurityGroup: {
      auto req = std::make_shared<v1::DeleteSecurityGroupRequest>();
      req->set_group_id(raw_.get("--group-id"));
      return Action{remote(req)};
    }
    case Rpc::kAuthorizeSecurityGroupIngress:
    case Rpc::kAuthorizeSecurityGroupEgress:
    case Rpc::kRevokeSecurityGroupIngress:
    case Rpc::kRevokeSecurityGroupEgress: {
      auto req = std::make_shared<v1::SecurityGroupRulesRequest>();
      req->set_group_id(raw_.get("--group-id"));
      auto* p = req->add_ip_permissions();
      p->set_ip_protocol(raw_.get("--protocol"));
      if (raw_.has("--port")) {
        auto range = parse_port_range(raw_.get("--port"));
        if (!range.ok()) return usage(prefix() + "--port " + quote(raw_.get("--port")) + ": " + range.error());
        p->set_from_port(range->first);
        p->set_to_port(range->second);
      }
      if (raw_.has("--cidr")) p->add_cidr_ips(raw_.get("--cidr"));
      if (raw_.has("--source-group")) p->add_source_group_ids(raw_.get("--source-group"));
      return Action{remote(req)};
    }
    case Rpc::kDescribeSecurityGroups: {
      auto req = std::make_shared<v1::DescribeSecurityGroupsRequest>();
      add_all(req->mutable_group_ids(), "--group-ids");
      return Action{remote(req)};
    }
    case Rpc::kNone:
      break;
  }
  if (cmd_.name == "admin issue-cert") {
    IssueCert ic;
    ic.state_dir = raw_.get("--state-dir");
    ic.role = raw_.get("--role");
    ic.name = raw_.get("--name");
    ic.out_dir = raw_.get("--out");
    AZOTE_TRY(days, number("--days", 1, 36500));
    if (days != 0) ic.days = static_cast<uint32_t>(days);
    return Action{ic};
  }
  if (cmd_.name == "admin revoke-cert") {
    RevokeCert rc;
    rc.state_dir = raw_.get("--state-dir");
    auto serial = pki::normalize_serial(raw_.get("--serial"));
    if (!serial.ok()) {
      return usage(prefix() + "--serial " + quote(raw_.get("--serial")) +
                   " is not a serial number (1 to 40 hex digits)");
    }
    rc.serial = *serial;
    rc.unlisted = raw_.has("--unlisted");
    return Action{rc};
  }
  if (cmd_.name == "admin sign-release") {
    return Action{SignRelease{raw_.get("--key"), raw_.get("--bin-dir"), raw_.get("--release"), raw_.get("--out")}};
  }
  if (cmd_.name == "admin verify-release") {
    return Action{VerifyRelease{raw_.get("--manifest"), raw_.get("--public-key"), raw_.get("--bin-dir")}};
  }
  if (cmd_.name == "enclave build-enclave") {
    BuildEnclave be{raw_.get("--kernel"), raw_.list("--initrd"), raw_.get("--cmdline"), raw_.get("--output-file"),
                    raw_.get("--signing-certificate"), raw_.get("--private-key"), raw_.get("--name"),
                    raw_.get("--version"), raw_.get("--metadata")};
    if (be.signing_certificate.empty() != be.private_key.empty())
      return usage(prefix() + "--signing-certificate and --private-key go together");
    return Action{be};
  }
  if (cmd_.name == "enclave describe-eif") return Action{DescribeEif{raw_.get("--eif-path")}};
  if (cmd_.name == "enclave pcr") {
    EnclavePcr ep{raw_.get("--input"), raw_.get("--signing-certificate")};
    if (ep.input.empty() == ep.signing_certificate.empty())
      return usage(prefix() + "give exactly one of --input and --signing-certificate");
    return Action{ep};
  }
  // audit verify
  AuditVerify av;
  av.file = raw_.positionals.front();
  av.public_key = raw_.get("--public-key");
  if (av.public_key.empty()) {
    const size_t slash = av.file.rfind('/');
    av.public_key = (slash == std::string::npos ? std::string(".") : av.file.substr(0, slash)) +
                    "/signing.pub";
    if (slash == 0) av.public_key = "/signing.pub";
  }
  av.head = raw_.get("--head");
  return Action{av};
}

CliResult<double> parse_timeout(const std::string& v) {
  const auto bad = [&] { return usage("--timeout " + quote(v) + " is not a number of seconds from 0.1 to 86400"); };
  if (v.empty() || v.size() > 32) return bad();
  for (char c : v) {
    if ((c < '0' || c > '9') && c != '.') return bad();
  }
  char* end = nullptr;
  const double d = std::strtod(v.c_str(), &end);
  if (end != v.c_str() + v.size() || !std::isfinite(d) || d < 0.1 || d > 86400) return bad();
  return d;
}

// ----- --tag-specifications shorthand -----------------------------------------------

class Shorthand {
 public:
  explicit Shorthand(std::string_view text) : s_(text) {}

  Result<std::vector<v1::Tag>, std::string> parse(std::string_view resource_type) {
    std::string type;
    std::vector<v1::Tag> tags;
    bool have_tags = false;
    for (;;) {
      skip_space();
      std::string key = read_key();
      if (key.empty()) return fail("expected ResourceType=... or Tags=[...]");
      if (!eat('=')) return fail("expected '=' after " + key);
      if (key == "ResourceType") {
        auto v = read_scalar();
        if (!v) return fail("unterminated quote");
        type = *v;
      } else if (key == "Tags") {
        have_tags = true;
        if (!read_tags(tags)) return fail(error_.empty() ? "malformed Tags=[...]" : error_);
      } else {
        return fail("unknown key " + key + " (ResourceType and Tags are known)");
      }
      skip_space();
      if (pos_ == s_.size()) break;
      if (!eat(',')) return fail("expected ',' after the value of " + key);
    }
    if (type.empty()) return fail("ResourceType=" + std::string(resource_type) + " is missing");
    if (type != resource_type) {
      return Unexpected{"ResourceType=" + type + " is not supported here (only ResourceType=" +
                        std::string(resource_type) + ")"};
    }
    if (!have_tags) return fail("Tags=[...] is missing");
    return tags;
  }

 private:
  Unexpected<std::string> fail(const std::string& why) const {
    return Unexpected{why + " at offset " + std::to_string(pos_) + " of " + quote(s_)};
  }
  void skip_space() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n')) ++pos_;
  }
  bool eat(char c) {
    skip_space();
    if (pos_ < s_.size() && s_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  std::string read_key() {
    std::string k;
    while (pos_ < s_.size() && (std::isalnum(static_cast<unsigned char>(s_[pos_])) != 0)) {
      k += s_[pos_++];
    }
    return k;
  }
  // A value: "quoted", 'quoted', or up to the next ',', '}' or ']' (backslash escapes
  // one character), with surrounding blanks trimmed. '=' is an ordinary character.
  std::optional<std::string> read_scalar() {
    skip_space();
    std::string v;
    if (pos_ < s_.size() && (s_[pos_] == '"' || s_[pos_] == '\'')) {
      const char q = s_[pos_++];
      while (pos_ < s_.size() && s_[pos_] != q) {
        if (s_[pos_] == '\\' && pos_ + 1 < s_.size()) ++pos_;
        v += s_[pos_++];
      }
      if (pos_ == s_.size()) return std::nullopt;
      ++pos_;
      return v;
    }
    size_t keep = 0;  // length of v up to its last non-blank or escaped character
    while (pos_ < s_.size() && s_[pos_] != ',' && s_[pos_] != '}' && s_[pos_] != ']') {
      if (s_[pos_] == '\\' && pos_ + 1 < s_.size()) {
        ++pos_;
        v += s_[pos_++];
        keep = v.size();
        continue;
      }
      v += s_[pos_];
      if (s_[pos_] != ' ' && s_[pos_] != '\t') keep = v.size();
      ++pos_;
    }
    v.resize(keep);
    return v;
  }
  bool read_tags(std::vector<v1::Tag>& out) {
    if (!eat('[')) return false;
    if (eat(']')) return true;
    for (;;) {
      if (!eat('{')) {
        error_ = "expected '{' starting a tag";
        return false;
      }
      v1::Tag tag;
      bool have_key = false;
      for (;;) {
        skip_space();
        const std::string k = read_key();
        if (k != "Key" && k != "Value") {
          error_ = k.empty() ? "expected Key=... or Value=..." : "unknown tag field " + k;
          return false;
        }
        if (!eat('=')) {
          error_ = "expected '=' after " + k;
          return false;
        }
        auto v = read_scalar();
        if (!v) {
          error_ = "unterminated quote";
          return false;
        }
        if (k == "Key") {
          tag.set_key(*v);
          have_key = true;
        } else {
          tag.set_value(*v);
        }
        if (eat('}')) break;
        if (!eat(',')) {
          error_ = "expected ',' or '}' in a tag";
          return false;
        }
      }
      if (!have_key) {
        error_ = "a tag without Key=";
        return false;
      }
      out.push_back(std::move(tag));
      if (eat(']')) return true;
      if (!eat(',')) {
        error_ = "expected ',' or ']' after a tag";
        return false;
      }
    }
  }

  std::string_view s_;
  size_t pos_ = 0;
  std::string error_;
};

Result<std::vector<v1::Tag>, std::string> parse_tag_json(std::string_view text,
                                                         std::string_view resource_type) {
  const nlohmann::json doc = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return Unexpected{std::string("not valid JSON: ") + quote(text)};
  std::vector<v1::Tag> tags;
  const auto one = [&](const nlohmann::json& spec) -> std::string {
    if (!spec.is_object()) return "a tag specification must be a JSON object";
    auto rt = spec.find("ResourceType");
    if (rt == spec.end() || !rt->is_string()) return "\"ResourceType\" is missing";
    if (rt->get<std::string>() != resource_type) {
      return "ResourceType=" + rt->get<std::string>() + " is not supported here (only ResourceType=" +
             std::string(resource_type) + ")";
    }
    auto ts = spec.find("Tags");
    if (ts == spec.end() || !ts->is_array()) return "\"Tags\" must be an array";
    for (const auto& t : *ts) {
      if (!t.is_object() || !t.contains("Key") || !t["Key"].is_string()) {
        return "each tag needs a string \"Key\"";
      }
      v1::Tag tag;
      tag.set_key(t["Key"].get<std::string>());
      if (t.contains("Value")) {
        if (!t["Value"].is_string()) return "a tag's \"Value\" must be a string";
        tag.set_value(t["Value"].get<std::string>());
      }
      tags.push_back(std::move(tag));
    }
    return "";
  };
  if (doc.is_array()) {
    for (const auto& spec : doc) {
      if (auto why = one(spec); !why.empty()) return Unexpected{why};
    }
  } else if (auto why = one(doc); !why.empty()) {
    return Unexpected{why};
  }
  return tags;
}

}  // namespace

const std::vector<CommandSpec>& commands() {
  static const std::vector<CommandSpec> kCommands = build_commands();
  return kCommands;
}

const CommandSpec* find_command(std::string_view name) {
  for (const auto& c : commands()) {
    if (c.name == name) return &c;
  }
  return nullptr;
}

Env process_env() {
  return [](const char* name) -> std::optional<std::string> {
    const char* v = std::getenv(name);
    if (v == nullptr) return std::nullopt;
    return std::string(v);
  };
}

Result<std::string, std::string> read_whole_file(const std::string& path, uint64_t max_bytes) {
  if (path.empty()) return Unexpected{std::string("empty file name")};
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return Unexpected{"cannot open " + path + ": " + std::strerror(errno)};
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return Unexpected{"cannot stat " + path + ": " + std::strerror(errno)};
  if (!S_ISREG(st.st_mode)) return Unexpected{path + " is not a regular file"};
  if (static_cast<uint64_t>(st.st_size) > max_bytes) {
    return Unexpected{path + " is larger than " + std::to_string(max_bytes) + " bytes"};
  }
  std::string data;
  data.reserve(static_cast<size_t>(st.st_size));
  char buf[65536];
  for (;;) {
    const ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Unexpected{"cannot read " + path + ": " + std::strerror(errno)};
    }
    if (n == 0) break;
    data.append(buf, static_cast<size_t>(n));
    if (data.size() > max_bytes) {
      return Unexpected{path + " is larger than " + std::to_string(max_bytes) + " bytes"};
    }
  }
  return data;
}

namespace {

// An options value as the aws CLI takes it: the shorthand "K=V,K=V" or a JSON object. Each
// key and value goes to `take` (a JSON string as its text; with `scalars`, also true/false
// and unsigned numbers, as written), which answers "" or why not.
std::string each_option(std::string_view text, bool scalars,
                        const std::function<std::string(const std::string&, const std::string&)>& take) {
  size_t first = 0;
  while (first < text.size() && std::isspace(static_cast<unsigned char>(text[first])) != 0) ++first;
  if (first < text.size() && text[first] == '{') {
    const nlohmann::json doc = nlohmann::json::parse(text, nullptr, false);
    if (doc.is_discarded() || !doc.is_object()) return "not a JSON object: " + quote(text);
    for (auto it = doc.begin(); it != doc.end(); ++it) {
      const auto& v = it.value();
      std::string value;
      if (v.is_string()) value = v.get<std::string>();
      else if (scalars && (v.is_boolean() || v.is_number_unsigned())) value = v.dump();
      else return quote(it.key()) + (scalars ? " must be true/false or a number" : " must be a string");
      if (auto why = take(it.key(), value); !why.empty()) return why;
    }
    return "";
  }
  std::stringstream in{std::string(text)};
  for (std::string part; std::getline(in, part, ',');) {
    const size_t eq = part.find('=');
    if (eq == std::string::npos || eq == 0) return quote(part) + " is not KEY=VALUE";
    if (auto why = take(part.substr(0, eq), part.substr(eq + 1)); !why.empty()) return why;
  }
  return "";
}

}  // namespace

Result<EnclaveOptions, std::string> parse_enclave_options(std::string_view text) {
  EnclaveOptions o;
  bool have = false;
  const auto take = [&](const std::string& key, const std::string& value) -> std::string {
    if (key == "Enabled") {
      if (value != "true" && value != "false") return "Enabled must be true or false, not " + quote(value);
      o.enabled = value == "true";
      have = true;
    } else if (key == "MemoryMiB") {
      auto n = parse_uint(value, 1, uint64_t{1} << 40);
      if (!n) return "MemoryMiB must be a number of MiB, not " + quote(value);
      o.memory_mib = *n;
    } else if (key == "CpuCount") {
      auto n = parse_uint(value, 1, 4096);
      if (!n) return "CpuCount must be a number of vCPUs, not " + quote(value);
      o.cpu_count = static_cast<uint32_t>(*n);
    } else {
      return "unknown key " + quote(key) + " (Enabled, MemoryMiB, CpuCount)";
    }
    return "";
  };
  if (auto why = each_option(text, true, take); !why.empty()) return Unexpected{why};
  if (!have) return Unexpected{std::string("Enabled=true|false is missing")};
  if (!o.enabled && (o.memory_mib != 0 || o.cpu_count != 0))
    return Unexpected{std::string("MemoryMiB and CpuCount size the enclaves' pool: only with Enabled=true")};
  return o;
}

Result<std::string, std::string> parse_metadata_options(std::string_view text) {
  std::string tokens;
  bool have = false;
  const auto take = [&](const std::string& key, const std::string& value) -> std::string {
    if (key != "HttpTokens") return "unknown key " + quote(key) + " (only HttpTokens is supported)";
    tokens = value;
    have = true;
    return "";
  };
  if (auto why = each_option(text, false, take); !why.empty()) return Unexpected{why};
  if (!have) return Unexpected{std::string("HttpTokens=optional|required is missing")};
  return tokens;
}

Result<std::pair<int, int>, std::string> parse_port_range(std::string_view text) {
  const auto one = [](std::string_view v) -> std::optional<int> {
    if (v == "-1") return -1;
    auto n = parse_uint(std::string(v), 0, 65535);
    if (!n) return std::nullopt;
    return static_cast<int>(*n);
  };
  const std::string why = "not a port (0-65535, -1: any) or a range FROM-TO";
  if (auto single = one(text)) return std::pair{*single, *single};
  const size_t dash = text.find('-', 1);
  if (dash == std::string_view::npos) return Unexpected{why};
  auto from = one(text.substr(0, dash)), to = one(text.substr(dash + 1));
  if (!from || !to) return Unexpected{why};
  return std::pair{*from, *to};
}

Result<std::string, std::string> user_data_bytes(const std::string& value) {
  for (std::string_view scheme : {"file://", "fileb://"}) {
    if (value.rfind(scheme, 0) == 0) return read_whole_file(value.substr(scheme.size()), kMaxUserDataFile);
  }
  return value;
}

Result<std::vector<v1::Tag>, std::string> parse_tag_specification(std::string_view text,
                                                                   std::string_view resource_type) {
  size_t first = 0;
  while (first < text.size() && std::isspace(static_cast<unsigned char>(text[first])) != 0) ++first;
  if (first < text.size() && (text[first] == '[' || text[first] == '{')) {
    return parse_tag_json(text, resource_type);
  }
  return Shorthand(text).parse(resource_type);
}

CliResult<Invocation> parse_command_line(const std::vector<std::string>& args, const Env& env) {
  Invocation inv;
  std::optional<std::string> endpoint, credentials;
  bool help = false;
  bool version = false;
  std::string group;
  const CommandSpec* cmd = nullptr;
  RawArgs raw;
  const auto where = [&]() -> std::string {
    if (cmd != nullptr) return std::string(cmd->name) + ": ";
    return group.empty() ? std::string() : group + ": ";
  };

  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "-h") {
      help = true;
      continue;
    }
    if (a.size() > 2 && a.rfind("--", 0) == 0) {
      const size_t eq = a.find('=');
      const std::string name = a.substr(0, eq);
      std::optional<std::string> inline_value;
      if (eq != std::string::npos) inline_value = a.substr(eq + 1);
      // The value of a --flag: inline, or the next argument unless that is an option.
      const auto take_value = [&]() -> CliResult<std::string> {
        if (inline_value) return *inline_value;
        if (i + 1 < args.size() && args[i + 1].rfind("--", 0) != 0) return args[++i];
        return usage(where() + name + " needs a value");
      };
      // After a command, its own option wins over a global of the same name
      // (enclave build-enclave --version is the image's version, as in nitro-cli).
      const bool own = cmd != nullptr && find_flag(*cmd, name) != nullptr;
      if (const GlobalSpec* g = own ? nullptr : find_global(name)) {
        if (!g->takes_value) {
          if (inline_value) return usage(where() + name + " takes no value");
          (name == "--help" ? help : version) = true;
          continue;
        }
        AZOTE_TRY(v, take_value());
        if (name == "--endpoint") {
          endpoint = v;
        } else if (name == "--credentials") {
          credentials = v;
        } else if (name == "--output") {
          if (v == "table") {
            inv.globals.output = OutputFormat::kTable;
          } else if (v == "json") {
            inv.globals.output = OutputFormat::kJson;
          } else if (v == "text") {
            inv.globals.output = OutputFormat::kText;
          } else {
            return usage("--output " + quote(v) + " is not table, json or text");
          }
        } else {
          AZOTE_TRY(t, parse_timeout(v));
          inv.globals.timeout_s = t;
        }
        continue;
      }
      if (cmd == nullptr) {
        if (help) continue;  // "azote --help --whatever": the help is what was asked for
        return usage(where() + "unknown option " + name + " (options of a command follow the command)");
      }
      const FlagSpec* f = find_flag(*cmd, name);
      if (f == nullptr) {
        if (help) continue;
        return usage(where() + "unknown option " + name + " (see azote " + std::string(cmd->name) +
                     " --help)");
      }
      switch (f->kind) {
        case FlagKind::kSwitch:
          if (inline_value) return usage(where() + name + " takes no value");
          raw.values[name];
          break;
        case FlagKind::kValue: {
          if (raw.has(name)) return usage(where() + name + " given more than once");
          AZOTE_TRY(v, take_value());
          raw.values[name].push_back(v);
          break;
        }
        case FlagKind::kList: {
          auto& vals = raw.values[name];
          const size_t before = vals.size();
          if (inline_value) vals.push_back(*inline_value);
          while (i + 1 < args.size() && args[i + 1].rfind("--", 0) != 0) vals.push_back(args[++i]);
          if (vals.size() == before) return usage(where() + name + " needs at least one value");
          break;
        }
      }
      continue;
    }
    // A word: the command, then positional arguments.
    if (cmd == nullptr) {
      if (group.empty() && a == "help") {
        help = true;
        continue;
      }
      if (group.empty() && is_group(a)) {
        group = a;
        continue;
      }
      const std::string name = group.empty() ? a : group + " " + a;
      cmd = find_command(name);
      if (cmd == nullptr) {
        if (help) continue;
        return usage(where() + "unknown command " + quote(a) + " (see azote " +
                     (group.empty() ? "" : group + " ") + "--help)");
      }
      inv.command = name;
      continue;
    }
    if (help) continue;
    if (cmd->positional.empty() || !raw.positionals.empty()) {
      return usage(where() + "unexpected argument " + quote(a));
    }
    raw.positionals.push_back(a);
  }

  if (version) {
    inv.action = ShowVersion{};
    return inv;
  }
  if (help) {
    inv.action = ShowHelp{help_text(cmd != nullptr ? cmd->name : std::string_view(group))};
    return inv;
  }
  if (cmd == nullptr) {
    if (!group.empty()) {
      return usage(group + ": missing subcommand (see azote " + group + " --help)");
    }
    return usage("no command given (see azote --help)");
  }
  for (const auto& f : cmd->flags) {
    if (f.required && !raw.has(f.name)) {
      return usage(where() + "missing " + std::string(f.name) + " " + std::string(f.metavar));
    }
  }
  if (!cmd->positional.empty() && raw.positionals.empty()) {
    return usage(where() + "missing " + std::string(cmd->positional));
  }

  // Globals from the environment where the command line gave none.
  if (endpoint) {
    inv.globals.endpoint = *endpoint;
  } else if (auto e = env("AZOTE_ENDPOINT"); e && !e->empty()) {
    inv.globals.endpoint = *e;
  }
  if (credentials) {
    inv.globals.credentials_dir = *credentials;
  } else if (auto c = env("AZOTE_CREDENTIALS"); c && !c->empty()) {
    inv.globals.credentials_dir = *c;
  } else if (auto h = env("HOME"); h && !h->empty()) {
    inv.globals.credentials_dir = *h + "/.azote";
  }

  AZOTE_TRY(action, Builder(*cmd, raw).build());
  inv.action = std::move(action);
  return inv;
}

std::string help_text(std::string_view command) {
  std::ostringstream o;
  const auto flag_line = [&](std::string_view name, std::string_view metavar, std::string_view help) {
    std::string left = "  " + std::string(name);
    if (!metavar.empty()) left += " " + std::string(metavar);
    o << left;
    if (left.size() < 30) {
      o << std::string(30 - left.size(), ' ');
    } else {
      o << "\n" << std::string(30, ' ');
    }
    o << help << "\n";
  };
  const auto globals = [&] {
    o << "\nglobal options (before or after the command):\n";
    for (const auto& g : kGlobals) flag_line(g.name, g.metavar, g.help);
  };

  if (const CommandSpec* cmd = find_command(command)) {
    o << "usage: azote " << cmd->name;
    for (const auto& f : cmd->flags) {
      o << " " << (f.required ? "" : "[") << f.name;
      if (!f.metavar.empty()) o << " " << f.metavar;
      o << (f.required ? "" : "]");
    }
    if (!cmd->positional.empty()) o << " " << cmd->positional;
    std::string summary(cmd->summary);
    summary[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(summary[0])));
    o << "\n\n" << summary << ".\n";
    if (!cmd->flags.empty()) {
      o << "\noptions:\n";
      for (const auto& f : cmd->flags) {
        flag_line(f.name, f.metavar, std::string(f.help) + (f.required ? " (required)" : ""));
      }
    }
    if (cmd->rpc == Rpc::kNone) {
      o << "\nThis command works on local files and never talks to the controller.\n";
    } else {
      globals();
    }
    if (cmd->name == "audit verify") {
      o << "\nPrints \"ok: N records, last seq S\" and exits 0, or the reason and exits 1.\n";
    }
    return o.str();
  }

  const bool is_grp = is_group(command);
  o << "usage: azote " << (is_grp ? std::string(command) + " " : std::string())
    << "COMMAND [options]\n\n";
  if (!is_grp) {
    o << "The command line of azote-controller, modelled on `aws ec2`.\n\ncommands:\n";
  } else {
    o << "commands:\n";
  }
  for (const auto& c : commands()) {
    if (is_grp && c.name.rfind(std::string(command) + " ", 0) != 0) continue;
    flag_line(c.name, "", c.summary);
  }
  if (!is_grp) {
    globals();
    o << "\n`azote COMMAND --help` describes a command and its options.\n"
         "\nexit status:\n"
         "  0    success\n"
         "  1    audit verify: the log does not verify; enclave describe-eif: not a valid EIF\n"
         "  2    bad command line or unreadable argument file\n"
         "  254  the controller returned an error (printed as \"Code: sentence\"), or an\n"
         "       instance reached another final state than --wait waited for\n"
         "  255  the controller cannot be reached, TLS or credentials failed, a local\n"
         "       PKI operation failed, or --wait timed out\n";
  }
  return o.str();
}

}  // namespace azote::cli
