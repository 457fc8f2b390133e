// Unit tests of the azote CLI: argument parsing of every command, rendering, status
// mapping, the local admin/audit commands, and calls to a small in-process fake of the
// controller's API over mutual TLS (no azote-controller needed).
#include <grpc/support/log.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_credentials_options.h>
#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>

#include "api/client.hpp"
#include "audit/log.hpp"
#include "base/temp_dir.hpp"
#include "cli/cli.hpp"
#include "cli/render.hpp"
#include "pki/pki.hpp"

namespace azote::cli {
namespace {

namespace fs = std::filesystem;

// gRPC's log lines about refused handshakes would clutter the test output.
void quiet(gpr_log_func_args* /*args*/) {}
const bool kQuiet = [] {
  gpr_set_log_function(quiet);
  return true;
}();


void spit(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

Env env_of(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const char* name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

CliResult<Invocation> parse(const std::vector<std::string>& args,
                            std::map<std::string, std::string> env = {{"HOME", "/home/u"}}) {
  return parse_command_line(args, env_of(std::move(env)));
}

// The parse error of args ("" if it parsed).
std::string parse_error(const std::vector<std::string>& args) {
  auto r = parse(args);
  return r.ok() ? "" : r.error().message();
}

template <class Req>
const Req& request_of(const Invocation& inv) {
  const auto& rc = std::get<RemoteCall>(inv.action);
  const auto* req = dynamic_cast<const Req*>(rc.request.get());
  if (req == nullptr) std::abort();
  return *req;
}

struct Ran {
  int status = -1;
  std::string out, err;
};
Ran run(const std::vector<std::string>& args, std::map<std::string, std::string> env = {{"HOME", "/home/u"}},
        bool tty = false) {
  std::ostringstream out, err;
  Io io{out, err, tty};
  Ran r;
  r.status = run_cli(args, env_of(std::move(env)), io);
  r.out = out.str();
  r.err = err.str();
  return r;
}

// ----- parsing ---------------------------------------------------------------------

TEST(Parse, EnclaveCommandsTakeNitroCliFlags) {
  auto r = parse({"enclave", "build-enclave", "--kernel", "k", "--initrd", "r1", "--initrd", "r2", "r3", "--cmdline",
                  "console=ttyS0", "--output-file", "o.eif", "--version", "7", "--name", "n"});
  ASSERT_TRUE(r.ok()) << r.error().message();
  const auto& be = std::get<BuildEnclave>(r->action);
  EXPECT_EQ(be.initrds, (std::vector<std::string>{"r1", "r2", "r3"}));
  EXPECT_EQ(be.version, "7");  // the command's --version, not the global one
  EXPECT_EQ(be.cmdline, "console=ttyS0");
  // Before a command, --version is still azote's.
  r = parse({"--version", "enclave", "pcr", "--input", "f"});
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(std::holds_alternative<ShowVersion>(r->action));
  EXPECT_NE(parse_error({"enclave", "build-enclave", "--kernel", "k", "--initrd", "r", "--cmdline", "c",
                         "--output-file", "o", "--private-key", "k.pem"}).find("go together"),
            std::string::npos);
  EXPECT_NE(parse_error({"enclave", "build-enclave", "--kernel", "k", "--cmdline", "c", "--output-file", "o"})
                .find("--initrd"),
            std::string::npos);
  EXPECT_NE(parse_error({"enclave", "pcr", "--input", "a", "--signing-certificate", "b"}).find("exactly one"),
            std::string::npos);
  // run-instances --enclave-options, shorthand or JSON.
  r = parse({"run-instances", "--image-id", "ami-1", "--enclave-options", "Enabled=true"});
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_TRUE(request_of<v1::RunInstancesRequest>(*r).enclave_enabled());
  r = parse({"run-instances", "--image-id", "ami-1", "--enclave-options", R"({"Enabled": false})"});
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_FALSE(request_of<v1::RunInstancesRequest>(*r).enclave_enabled());
  r = parse({"run-instances", "--image-id", "ami-1", "--enclave-options", "Enabled=true,MemoryMiB=256,CpuCount=1"});
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(request_of<v1::RunInstancesRequest>(*r).enclave_memory_mib(), 256u);
  EXPECT_EQ(request_of<v1::RunInstancesRequest>(*r).enclave_cpu_count(), 1u);
  r = parse({"run-instances", "--image-id", "ami-1", "--enclave-options", R"({"Enabled": true, "CpuCount": 3})"});
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(request_of<v1::RunInstancesRequest>(*r).enclave_cpu_count(), 3u);
  EXPECT_EQ(request_of<v1::RunInstancesRequest>(*r).enclave_memory_mib(), 0u);
  EXPECT_NE(parse_error({"run-instances", "--image-id", "ami-1", "--enclave-options", "Enabled=false,CpuCount=1"}).find("only with Enabled=true"),
            std::string::npos);
  EXPECT_NE(parse_error({"run-instances", "--image-id", "ami-1", "--enclave-options", "Enabled=true,MemoryMiB=lots"}).find("MemoryMiB"),
            std::string::npos);
  EXPECT_NE(parse_error({"run-instances", "--image-id", "ami-1", "--enclave-options", "Enabled=true,Cores=2"}).find("unknown key"),
            std::string::npos);
  EXPECT_NE(parse_error({"run-instances", "--image-id", "ami-1", "--enclave-options", "Enabled=yes"}).find("--enclave-options"),
            std::string::npos);
  EXPECT_NE(parse_error({"enclave", "run-enclave", "--instance-id", "i-1", "--eif-path", "/nonexistent.eif", "--cpu-count",
                         "1", "--memory", "64"})
                .find("--eif-path"),
            std::string::npos);
  r = parse({"enclave", "describe-eif", "--eif-path", "x.eif"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(std::get<DescribeEif>(r->action).path, "x.eif");
}

TEST(Parse, RunInstancesNetworkFlags) {
  auto r = parse({"run-instances", "--image-id", "ami-0123", "--security-group-ids", "sg-a", "sg-b", "--subnet-id",
                  "subnet-1", "--metadata-options", "HttpTokens=required"});
  ASSERT_TRUE(r.ok()) << r.error().message();
  const auto& req = request_of<v1::RunInstancesRequest>(*r);
  ASSERT_EQ(req.security_group_ids_size(), 2);
  EXPECT_EQ(req.security_group_ids(1), "sg-b");
  EXPECT_EQ(req.subnet_id(), "subnet-1");
  EXPECT_EQ(req.http_tokens(), "required");
  EXPECT_FALSE(req.no_network_interface());
  r = parse({"run-instances", "--image-id", "ami-0123", "--no-network-interface", "--metadata-options",
             R"({"HttpTokens": "optional"})"});
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_TRUE(request_of<v1::RunInstancesRequest>(*r).no_network_interface());
  EXPECT_EQ(request_of<v1::RunInstancesRequest>(*r).http_tokens(), "optional");
  // The value is the controller's to judge; the syntax is ours.
  r = parse({"run-instances", "--image-id", "ami-0123", "--metadata-options", "HttpTokens=maybe"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(request_of<v1::RunInstancesRequest>(*r).http_tokens(), "maybe");
  for (const char* bad : {"HttpEndpoint=enabled", "required", "", "{\"HttpTokens\": 1}", "{nope"}) {
    r = parse({"run-instances", "--image-id", "ami-0123", "--metadata-options", bad});
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.error().message().find("run-instances: --metadata-options: "), std::string::npos) << r.error().message();
  }
}

TEST(Parse, SecurityGroupRuleCommands) {
  auto r = parse({"authorize-security-group-ingress", "--group-id", "sg-1", "--protocol", "tcp", "--port", "1000-2000",
                  "--cidr", "10.0.0.0/8"});
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(std::get<RemoteCall>(r->action).rpc, Rpc::kAuthorizeSecurityGroupIngress);
  const auto& req = request_of<v1::SecurityGroupRulesRequest>(*r);
  EXPECT_EQ(req.group_id(), "sg-1");
  ASSERT_EQ(req.ip_permissions_size(), 1);
  EXPECT_EQ(req.ip_permissions(0).ip_protocol(), "tcp");
  EXPECT_EQ(req.ip_permissions(0).from_port(), 1000);
  EXPECT_EQ(req.ip_permissions(0).to_port(), 2000);
  EXPECT_EQ(req.ip_permissions(0).cidr_ips(0), "10.0.0.0/8");
  r = parse({"revoke-security-group-egress", "--group-id", "sg-1", "--protocol", "icmp", "--port", "8--1",
             "--source-group", "sg-2"});
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(std::get<RemoteCall>(r->action).rpc, Rpc::kRevokeSecurityGroupEgress);
  const auto& icmp = request_of<v1::SecurityGroupRulesRequest>(*r).ip_permissions(0);
  EXPECT_EQ(icmp.from_port(), 8);
  EXPECT_EQ(icmp.to_port(), -1);
  EXPECT_EQ(icmp.source_group_ids(0), "sg-2");
  r = parse({"authorize-security-group-egress", "--group-id", "sg-1", "--protocol", "-1", "--cidr", "0.0.0.0/0"});
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(request_of<v1::SecurityGroupRulesRequest>(*r).ip_permissions(0).has_from_port());
  r = parse({"authorize-security-group-ingress", "--group-id", "sg-1", "--port", "-1"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(request_of<v1::SecurityGroupRulesRequest>(*r).ip_permissions(0).from_port(), -1);
  for (const char* bad : {"x", "70000", "1-", "-", "1-2-3", "--5"}) {
    r = parse({"authorize-security-group-ingress", "--group-id", "sg-1", "--protocol", "tcp", "--port", bad});
    EXPECT_FALSE(r.ok()) << bad;
  }
  EXPECT_FALSE(parse({"authorize-security-group-ingress", "--protocol", "tcp"}).ok()) << "--group-id is required";
  r = parse({"create-security-group", "--group-name", "web", "--description", "web servers", "--vpc-id", "vpc-1"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(request_of<v1::CreateSecurityGroupRequest>(*r).description(), "web servers");
  r = parse({"describe-security-groups", "--group-ids", "sg-1", "sg-2"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(request_of<v1::DescribeSecurityGroupsRequest>(*r).group_ids_size(), 2);
  EXPECT_TRUE(parse({"describe-vpcs"}).ok());
  EXPECT_TRUE(parse({"describe-subnets", "--subnet-ids", "subnet-1"}).ok());
  EXPECT_TRUE(parse({"delete-security-group", "--group-id", "sg-1"}).ok());
}

TEST(Parse, RunInstancesEveryFlag) {
  TempDir dir;
  spit(dir / "ud.sh", "#!/bin/sh\necho hi\n");
  auto r = parse({"--output", "json", "run-instances", "--image-id", "ami-0123", "--instance-type",
                  "t3.small", "--count", "3", "--user-data", "file://" + (dir / "ud.sh"),
                  "--tag-specifications", "ResourceType=instance,Tags=[{Key=Name,Value=web 1},{Key=eq,Value=a=b=c}]",
                  "--client-token", "tok-1", "--wait", "--endpoint", "unix:/run/a.sock", "--timeout=2.5",
                  "--root-volume-size", "8", "--root-volume-type", "io2"});
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->command, "run-instances");
  EXPECT_EQ(r->globals.output, OutputFormat::kJson);
  EXPECT_EQ(r->globals.endpoint, "unix:/run/a.sock");
  EXPECT_DOUBLE_EQ(r->globals.timeout_s, 2.5);
  EXPECT_EQ(r->globals.credentials_dir, "/home/u/.azote");
  EXPECT_TRUE(std::get<RemoteCall>(r->action).wait);
  EXPECT_EQ(std::get<RemoteCall>(r->action).rpc, Rpc::kRunInstances);
  const auto& req = request_of<v1::RunInstancesRequest>(*r);
  EXPECT_EQ(req.image_id(), "ami-0123");
  EXPECT_EQ(req.instance_type(), "t3.small");
  EXPECT_EQ(req.count(), 3u);
  EXPECT_EQ(req.user_data(), "#!/bin/sh\necho hi\n");
  ASSERT_EQ(req.tags_size(), 2);
  EXPECT_EQ(req.tags(0).key(), "Name");
  EXPECT_EQ(req.tags(0).value(), "web 1");
  EXPECT_EQ(req.tags(1).key(), "eq");
  EXPECT_EQ(req.tags(1).value(), "a=b=c");
  EXPECT_EQ(req.client_token(), "tok-1");
  EXPECT_EQ(req.root_volume_size_gib(), 8u);
  EXPECT_EQ(req.root_volume_type(), "io2");
}

TEST(Parse, RunInstancesDefaultsAndInlineUserData) {
  auto r = parse({"run-instances", "--image-id=ami-1", "--user-data", "plain text"});
  ASSERT_TRUE(r.ok()) << r.error().message();
  const auto& req = request_of<v1::RunInstancesRequest>(*r);
  EXPECT_EQ(req.count(), 0u);  // the controller's default (1)
  EXPECT_EQ(req.instance_type(), "");
  EXPECT_EQ(req.user_data(), "plain text");
  EXPECT_FALSE(std::get<RemoteCall>(r->action).wait);
  EXPECT_EQ(r->globals.output, OutputFormat::kTable);
  EXPECT_EQ(r->globals.endpoint, kDefaultEndpoint);
  EXPECT_DOUBLE_EQ(r->globals.timeout_s, 30);
}

TEST(Parse, UserDataFileErrorsNameTheFile) {
  const std::string e = parse_error({"run-instances", "--image-id", "ami-1", "--user-data", "file:///nonexistent/ud"});
  EXPECT_NE(e.find("run-instances: --user-data: cannot open /nonexistent/ud"), std::string::npos) << e;
  TempDir dir;
  spit(dir / "bin", std::string("\x00\x01\xff", 3));
  auto r = parse({"run-instances", "--image-id", "ami-1", "--user-data", "fileb://" + (dir / "bin")});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(request_of<v1::RunInstancesRequest>(*r).user_data(), std::string("\x00\x01\xff", 3));
}

TEST(Parse, GlobalsFromEnvironmentAndFlagsWin) {
  auto r = parse({"describe-instances"}, {{"AZOTE_ENDPOINT", "10.0.0.1:7443"}, {"AZOTE_CREDENTIALS", "/c"}, {"HOME", "/h"}});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->globals.endpoint, "10.0.0.1:7443");
  EXPECT_EQ(r->globals.credentials_dir, "/c");
  r = parse({"describe-instances", "--credentials", "/d", "--endpoint", "unix:/e"},
            {{"AZOTE_ENDPOINT", "x:1"}, {"AZOTE_CREDENTIALS", "/c"}});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->globals.endpoint, "unix:/e");
  EXPECT_EQ(r->globals.credentials_dir, "/d");
}

TEST(Parse, BadNumbers) {
  EXPECT_EQ(parse_error({"run-instances", "--image-id", "ami-1", "--count", "x"}),
            "run-instances: --count \"x\" is not a number from 1 to 64");
  EXPECT_EQ(parse_error({"run-instances", "--image-id", "ami-1", "--count", "65"}),
            "run-instances: --count \"65\" is not a number from 1 to 64");
  EXPECT_EQ(parse_error({"run-instances", "--image-id", "ami-1", "--count", "0"}),
            "run-instances: --count \"0\" is not a number from 1 to 64");
  EXPECT_EQ(parse_error({"run-instances", "--image-id", "ami-1", "--count", "-1"}),
            "run-instances: --count \"-1\" is not a number from 1 to 64");
  EXPECT_EQ(parse_error({"run-instances", "--image-id", "ami-1", "--count", "--wait"}),
            "run-instances: --count needs a value");
  EXPECT_EQ(parse_error({"create-volume", "--size", "1.5"}),
            "create-volume: --size \"1.5\" is not a number from 1 to 4294967295");
  EXPECT_EQ(parse_error({"create-volume", "--size", "8", "--iops", "lots"}),
            "create-volume: --iops \"lots\" is not a number from 1 to 4294967295");
  EXPECT_EQ(parse_error({"create-volume", "--size", "8", "--throughput", "99999999999"}),
            "create-volume: --throughput \"99999999999\" is not a number from 1 to 4294967295");
  EXPECT_EQ(parse_error({"register-image", "--name", "n", "--kernel", "/k", "--root-volume-size", "big"}),
            "register-image: --root-volume-size \"big\" is not a number from 1 to 4294967295");
  EXPECT_EQ(parse_error({"admin", "issue-cert", "--state-dir", "/s", "--role", "r", "--name", "n", "--out",
                         "/o", "--days", "0"}),
            "admin issue-cert: --days \"0\" is not a number from 1 to 36500");
  EXPECT_EQ(parse_error({"describe-instances", "--timeout", "soon"}),
            "--timeout \"soon\" is not a number of seconds from 0.1 to 86400");
  EXPECT_EQ(parse_error({"describe-instances", "--timeout", "0"}),
            "--timeout \"0\" is not a number of seconds from 0.1 to 86400");
}

TEST(Parse, UnknownFlagsCommandsAndStrayArguments) {
  EXPECT_EQ(parse_error({"describe-instances", "--foo"}),
            "describe-instances: unknown option --foo (see azote describe-instances --help)");
  EXPECT_EQ(parse_error({"start-instances", "--instance-ids", "i-1", "--force"}),
            "start-instances: unknown option --force (see azote start-instances --help)");
  EXPECT_EQ(parse_error({"launch"}), "unknown command \"launch\" (see azote --help)");
  EXPECT_EQ(parse_error({"admin", "mint"}), "admin: unknown command \"mint\" (see azote admin --help)");
  EXPECT_EQ(parse_error({"admin"}), "admin: missing subcommand (see azote admin --help)");
  EXPECT_EQ(parse_error({}), "no command given (see azote --help)");
  EXPECT_EQ(parse_error({"--image-id", "x", "run-instances"}),
            "unknown option --image-id (options of a command follow the command)");
  EXPECT_EQ(parse_error({"get-metrics", "now"}), "get-metrics: unexpected argument \"now\"");
  EXPECT_EQ(parse_error({"get-console-output", "--instance-id", "i-1", "--instance-id", "i-2"}),
            "get-console-output: --instance-id given more than once");
  EXPECT_EQ(parse_error({"describe-instances", "--output", "xml"}), "--output \"xml\" is not table, json or text");
  EXPECT_EQ(parse_error({"stop-instances", "--instance-ids"}), "stop-instances: --instance-ids needs at least one value");
  EXPECT_EQ(parse_error({"stop-instances", "--instance-ids", "i-1", "--wait=yes"}), "stop-instances: --wait takes no value");
  EXPECT_EQ(parse_error({"audit", "verify", "a.log", "b.log"}), "audit verify: unexpected argument \"b.log\"");
}

// Every command with its required flags missing, one at a time.
TEST(Parse, MissingRequiredFlags) {
  struct Case {
    std::vector<std::string> args;
    std::string error;
  };
  const Case cases[] = {
      {{"run-instances"}, "run-instances: missing --image-id ID"},
      {{"get-console-output"}, "get-console-output: missing --instance-id ID"},
      {{"stop-instances", "--force"}, "stop-instances: missing --instance-ids ID ..."},
      {{"start-instances"}, "start-instances: missing --instance-ids ID ..."},
      {{"reboot-instances"}, "reboot-instances: missing --instance-ids ID ..."},
      {{"terminate-instances", "--wait"}, "terminate-instances: missing --instance-ids ID ..."},
      {{"register-image", "--kernel", "/k"}, "register-image: missing --name NAME"},
      {{"register-image", "--name", "n"}, "register-image: missing --kernel PATH"},
      {{"create-volume"}, "create-volume: missing --size GiB"},
      {{"attach-volume", "--volume-id", "vol-1"}, "attach-volume: missing --instance-id ID"},
      {{"attach-volume", "--instance-id", "i-1"}, "attach-volume: missing --volume-id ID"},
      {{"detach-volume"}, "detach-volume: missing --volume-id ID"},
      {{"delete-volume"}, "delete-volume: missing --volume-id ID"},
      {{"admin", "issue-cert", "--role", "r", "--name", "n", "--out", "/o"}, "admin issue-cert: missing --state-dir DIR"},
      {{"admin", "issue-cert", "--state-dir", "/s", "--name", "n", "--out", "/o"}, "admin issue-cert: missing --role ROLE"},
      {{"admin", "issue-cert", "--state-dir", "/s", "--role", "r", "--out", "/o"}, "admin issue-cert: missing --name NAME"},
      {{"admin", "issue-cert", "--state-dir", "/s", "--role", "r", "--name", "n"}, "admin issue-cert: missing --out DIR"},
      {{"admin", "revoke-cert", "--serial", "1f"}, "admin revoke-cert: missing --state-dir DIR"},
      {{"admin", "revoke-cert", "--state-dir", "/s"}, "admin revoke-cert: missing --serial HEX"},
      {{"audit", "verify"}, "audit verify: missing FILE"},
  };
  for (const auto& c : cases) EXPECT_EQ(parse_error(c.args), c.error) << c.args[0];
  // And no required flag for these.
  for (const char* cmd : {"describe-instances", "describe-instance-types", "describe-images",
                          "describe-volumes", "get-metrics"}) {
    EXPECT_EQ(parse_error({cmd}), "") << cmd;
  }
}

TEST(Parse, InstanceCommands) {
  auto r = parse({"describe-instances", "--instance-ids", "i-1", "i-2", "--output", "text", "--instance-ids", "i-3"});
  ASSERT_TRUE(r.ok());
  const auto& d = request_of<v1::DescribeInstancesRequest>(*r);
  ASSERT_EQ(d.instance_ids_size(), 3);
  EXPECT_EQ(d.instance_ids(2), "i-3");
  EXPECT_EQ(r->globals.output, OutputFormat::kText);

  r = parse({"stop-instances", "--instance-ids", "i-1", "i-2", "--force", "--wait"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(std::get<RemoteCall>(r->action).rpc, Rpc::kStopInstances);
  EXPECT_TRUE(request_of<v1::InstanceIdsRequest>(*r).force());
  EXPECT_EQ(request_of<v1::InstanceIdsRequest>(*r).instance_ids_size(), 2);
  EXPECT_TRUE(std::get<RemoteCall>(r->action).wait);

  const std::pair<const char*, Rpc> others[] = {{"start-instances", Rpc::kStartInstances},
                                                {"reboot-instances", Rpc::kRebootInstances},
                                                {"terminate-instances", Rpc::kTerminateInstances}};
  for (const auto& [name, rpc] : others) {
    r = parse({name, "--instance-ids", "i-9"});
    ASSERT_TRUE(r.ok()) << name;
    EXPECT_EQ(std::get<RemoteCall>(r->action).rpc, rpc);
    EXPECT_FALSE(request_of<v1::InstanceIdsRequest>(*r).force());
    EXPECT_EQ(request_of<v1::InstanceIdsRequest>(*r).instance_ids(0), "i-9");
  }

  r = parse({"get-console-output", "--instance-id", "i-7"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(request_of<v1::GetConsoleOutputRequest>(*r).instance_id(), "i-7");
  r = parse({"describe-instance-types", "--instance-types", "t3.micro", "m5.large"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(request_of<v1::DescribeInstanceTypesRequest>(*r).instance_types_size(), 2);
  r = parse({"describe-images", "--image-ids", "ami-1"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(request_of<v1::DescribeImagesRequest>(*r).image_ids(0), "ami-1");
  r = parse({"get-metrics"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(std::get<RemoteCall>(r->action).rpc, Rpc::kGetMetrics);
}

TEST(Parse, RegisterImageReadsTheFiles) {
  TempDir dir;
  spit(dir / "vmlinux", "KERNEL");
  spit(dir / "initrd", "INITRD");
  spit(dir / "root", "ROOT");
  auto r = parse({"register-image", "--name", "deb", "--kernel", dir / "vmlinux", "--initrd", dir / "initrd",
                  "--cmdline", "console=ttyS0 root=/dev/vda", "--description", "Debian 12",
                  "--root-volume-size", "4", "--root-content", dir / "root"});
  ASSERT_TRUE(r.ok()) << r.error().message();
  const auto& req = request_of<v1::RegisterImageRequest>(*r);
  EXPECT_EQ(req.name(), "deb");
  EXPECT_EQ(req.kernel(), "KERNEL");
  EXPECT_EQ(req.initrd(), "INITRD");
  EXPECT_EQ(req.root_content(), "ROOT");
  EXPECT_EQ(req.cmdline(), "console=ttyS0 root=/dev/vda");
  EXPECT_EQ(req.description(), "Debian 12");
  EXPECT_EQ(req.root_volume_size_gib(), 4u);

  const std::string e = parse_error({"register-image", "--name", "deb", "--kernel", dir / "nope"});
  EXPECT_EQ(e, "register-image: --kernel: cannot open " + (dir / "nope") + ": No such file or directory");
  EXPECT_EQ(parse_error({"register-image", "--name", "deb", "--kernel", dir.path()}),
            "register-image: --kernel: " + dir.path() + " is not a regular file");
}

TEST(Parse, VolumeCommands) {
  auto r = parse({"create-volume", "--size", "100", "--volume-type", "io2", "--iops", "5000", "--throughput", "250",
                  "--no-encrypted", "--tag-specifications", "ResourceType=volume,Tags=[{Key=team,Value=db}]",
                  "--client-token", "t"});
  ASSERT_TRUE(r.ok()) << r.error().message();
  const auto& cv = request_of<v1::CreateVolumeRequest>(*r);
  EXPECT_EQ(cv.size_gib(), 100u);
  EXPECT_EQ(cv.volume_type(), "io2");
  EXPECT_EQ(cv.iops(), 5000u);
  EXPECT_EQ(cv.throughput_mbps(), 250u);
  ASSERT_TRUE(cv.has_encrypted());
  EXPECT_FALSE(cv.encrypted());
  ASSERT_EQ(cv.tags_size(), 1);
  EXPECT_EQ(cv.tags(0).value(), "db");
  EXPECT_EQ(cv.client_token(), "t");

  r = parse({"create-volume", "--size", "1"});
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(request_of<v1::CreateVolumeRequest>(*r).has_encrypted());
  r = parse({"create-volume", "--size", "1", "--encrypted"});
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(request_of<v1::CreateVolumeRequest>(*r).encrypted());
  EXPECT_EQ(parse_error({"create-volume", "--size", "1", "--encrypted", "--no-encrypted"}),
            "create-volume: --encrypted and --no-encrypted exclude each other");
  EXPECT_NE(parse_error({"create-volume", "--size", "1", "--tag-specifications",
                         "ResourceType=instance,Tags=[{Key=a,Value=b}]"})
                .find("ResourceType=instance is not supported here (only ResourceType=volume)"),
            std::string::npos);

  r = parse({"attach-volume", "--volume-id", "vol-1", "--instance-id", "i-1", "--device", "/dev/vdc"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(request_of<v1::AttachVolumeRequest>(*r).device(), "/dev/vdc");
  EXPECT_EQ(request_of<v1::AttachVolumeRequest>(*r).instance_id(), "i-1");
  r = parse({"detach-volume", "--volume-id", "vol-1", "--force"});
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(request_of<v1::DetachVolumeRequest>(*r).force());
  r = parse({"delete-volume", "--volume-id", "vol-2"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(request_of<v1::DeleteVolumeRequest>(*r).volume_id(), "vol-2");
  r = parse({"describe-volumes", "--volume-ids", "vol-1", "vol-2"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(request_of<v1::DescribeVolumesRequest>(*r).volume_ids_size(), 2);
}

TEST(Parse, LocalCommands) {
  auto r = parse({"admin", "issue-cert", "--state-dir", "/s", "--role", "operator", "--name", "alice", "--out", "/o"});
  ASSERT_TRUE(r.ok()) << r.error().message();
  const auto& ic = std::get<IssueCert>(r->action);
  EXPECT_EQ(ic.state_dir, "/s");
  EXPECT_EQ(ic.role, "operator");
  EXPECT_EQ(ic.name, "alice");
  EXPECT_EQ(ic.out_dir, "/o");
  EXPECT_EQ(ic.days, 365u);
  r = parse({"admin", "issue-cert", "--state-dir", "/s", "--role", "r", "--name", "n", "--out", "/o", "--days", "30"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(std::get<IssueCert>(r->action).days, 30u);

  r = parse({"admin", "revoke-cert", "--state-dir", "/s", "--serial", "00AbC1"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(std::get<RevokeCert>(r->action).serial, "abc1");
  EXPECT_EQ(parse_error({"admin", "revoke-cert", "--state-dir", "/s", "--serial", "xyz"}),
            "admin revoke-cert: --serial \"xyz\" is not a serial number (1 to 40 hex digits)");

  r = parse({"audit", "verify", "/var/lib/azote/audit.log"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(std::get<AuditVerify>(r->action).public_key, "/var/lib/azote/signing.pub");
  EXPECT_EQ(std::get<AuditVerify>(r->action).head, "");
  r = parse({"audit", "verify", "audit.log", "--public-key", "k.pem", "--head", "h"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(std::get<AuditVerify>(r->action).file, "audit.log");
  EXPECT_EQ(std::get<AuditVerify>(r->action).public_key, "k.pem");
  EXPECT_EQ(std::get<AuditVerify>(r->action).head, "h");
  r = parse({"audit", "verify", "audit.log"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(std::get<AuditVerify>(r->action).public_key, "./signing.pub");
}

// ----- tag specifications ----------------------------------------------------------

std::vector<std::pair<std::string, std::string>> tags_of(std::string_view text, std::string_view type = "instance") {
  auto r = parse_tag_specification(text, type);
  std::vector<std::pair<std::string, std::string>> out;
  if (!r.ok()) {
    out.emplace_back("ERROR", r.error());
    return out;
  }
  for (const auto& t : *r) out.emplace_back(t.key(), t.value());
  return out;
}
using Tags = std::vector<std::pair<std::string, std::string>>;

TEST(Tags, Shorthand) {
  EXPECT_EQ(tags_of("ResourceType=instance,Tags=[{Key=k,Value=v}]"), (Tags{{"k", "v"}}));
  EXPECT_EQ(tags_of("ResourceType=instance,Tags=[{Key=a,Value=1},{Key=b,Value=2},{Key=c,Value=3}]"),
            (Tags{{"a", "1"}, {"b", "2"}, {"c", "3"}}));
  EXPECT_EQ(tags_of("ResourceType=instance,Tags=[{Key=url,Value=https://x/?a=1&b=2}]"),
            (Tags{{"url", "https://x/?a=1&b=2"}}));
  EXPECT_EQ(tags_of("Tags=[{Key=k,Value==}],ResourceType=instance"), (Tags{{"k", "="}}));
  EXPECT_EQ(tags_of("ResourceType=instance,Tags=[{Key=list,Value=\"a,b]}\"}]"), (Tags{{"list", "a,b]}"}}));
  EXPECT_EQ(tags_of("ResourceType=instance,Tags=[{Key=esc,Value=a\\,b}]"), (Tags{{"esc", "a,b"}}));
  EXPECT_EQ(tags_of("ResourceType=instance, Tags=[ {Key=Name, Value=my web server }, {Key=empty,Value=} ]"),
            (Tags{{"Name", "my web server"}, {"empty", ""}}));
  EXPECT_EQ(tags_of("ResourceType=instance,Tags=[{Key=only}]"), (Tags{{"only", ""}}));
  EXPECT_EQ(tags_of("ResourceType=instance,Tags=[]"), Tags{});
  EXPECT_EQ(tags_of("ResourceType=volume,Tags=[{Key=k,Value=v}]", "volume"), (Tags{{"k", "v"}}));
}

TEST(Tags, Json) {
  EXPECT_EQ(tags_of(R"({"ResourceType":"instance","Tags":[{"Key":"k","Value":"a=b"}]})"), (Tags{{"k", "a=b"}}));
  EXPECT_EQ(tags_of(R"([{"ResourceType":"instance","Tags":[{"Key":"a","Value":"1"},{"Key":"b"}]}])"),
            (Tags{{"a", "1"}, {"b", ""}}));
  EXPECT_EQ(tags_of(R"({"ResourceType":"volume","Tags":[]})").front().first, "ERROR");
  EXPECT_EQ(tags_of(R"({"ResourceType":"instance","Tags":[{"Value":"v"}]})").front().first, "ERROR");
  EXPECT_EQ(tags_of(R"({"ResourceType":)").front().first, "ERROR");
}

TEST(Tags, Malformed) {
  const auto error = [](std::string_view text) {
    auto t = tags_of(text);
    return t.size() == 1 && t[0].first == "ERROR" ? t[0].second : std::string("(parsed)");
  };
  EXPECT_EQ(error("ResourceType=volume,Tags=[{Key=k,Value=v}]"),
            "ResourceType=volume is not supported here (only ResourceType=instance)");
  EXPECT_NE(error("Tags=[{Key=k,Value=v}]").find("ResourceType=instance is missing"), std::string::npos);
  EXPECT_NE(error("ResourceType=instance").find("Tags=[...] is missing"), std::string::npos);
  EXPECT_NE(error("ResourceType=instance,Tags=[{Value=v}]").find("a tag without Key="), std::string::npos);
  EXPECT_NE(error("ResourceType=instance,Tags=[{Key=k,Colour=red}]").find("unknown tag field Colour"),
            std::string::npos);
  EXPECT_NE(error("ResourceType=instance,Tags=[{Key=k,Value=v}").find("expected ',' or ']' after a tag"),
            std::string::npos);
  EXPECT_NE(error("ResourceType=instance,Tags={Key=k}").find("malformed Tags"), std::string::npos);
  EXPECT_NE(error("ResourceType=instance,Tags=[{Key=\"k}]").find("unterminated quote"), std::string::npos);
  EXPECT_NE(error("Type=instance").find("unknown key Type"), std::string::npos);
  EXPECT_NE(error("").find("expected ResourceType"), std::string::npos);
  // Through the command line: the flag and the text are named.
  const std::string e = parse_error({"run-instances", "--image-id", "ami-1", "--tag-specifications", "oops"});
  EXPECT_EQ(e.rfind("run-instances: --tag-specifications: ", 0), 0u) << e;
  EXPECT_NE(e.find("\"oops\""), std::string::npos) << e;
}

TEST(Tags, SeveralSpecificationsAddUp) {
  auto r = parse({"run-instances", "--image-id", "ami-1", "--tag-specifications",
                  "ResourceType=instance,Tags=[{Key=a,Value=1}]", "ResourceType=instance,Tags=[{Key=b,Value=2}]"});
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(request_of<v1::RunInstancesRequest>(*r).tags_size(), 2);
}

// ----- help and version -------------------------------------------------------------

TEST(Help, EveryCommandExitsZeroAndMentionsEachFlag) {
  // Written out independently of the command table.
  const std::map<std::string, std::vector<std::string>> expected = {
      {"run-instances", {"--enclave-options", "--image-id", "--instance-type", "--count", "--user-data", "--tag-specifications",
                         "--client-token", "--wait", "--security-group-ids", "--subnet-id", "--metadata-options",
                         "--no-network-interface"}},
      {"describe-instances", {"--instance-ids"}},
      {"get-console-output", {"--instance-id"}},
      {"stop-instances", {"--instance-ids", "--force", "--wait"}},
      {"start-instances", {"--instance-ids", "--wait"}},
      {"reboot-instances", {"--instance-ids", "--wait"}},
      {"terminate-instances", {"--instance-ids", "--wait"}},
      {"describe-instance-types", {"--instance-types"}},
      {"describe-images", {"--image-ids"}},
      {"register-image", {"--name", "--kernel", "--initrd", "--cmdline", "--description", "--root-volume-size", "--tpm-support"}},
      {"create-volume", {"--size", "--volume-type", "--iops", "--throughput", "--encrypted", "--no-encrypted",
                         "--tag-specifications", "--client-token"}},
      {"attach-volume", {"--volume-id", "--instance-id", "--device"}},
      {"detach-volume", {"--volume-id", "--force"}},
      {"delete-volume", {"--volume-id"}},
      {"describe-volumes", {"--volume-ids"}},
      {"get-metrics", {}},
      {"describe-host-attestation", {}},
      {"get-instance-attestation", {"--instance-id", "--nonce", "--user-data"}},
      {"describe-vpcs", {"--vpc-ids"}},
      {"describe-subnets", {"--subnet-ids"}},
      {"create-security-group", {"--group-name", "--description", "--vpc-id"}},
      {"delete-security-group", {"--group-id"}},
      {"authorize-security-group-ingress", {"--group-id", "--protocol", "--port", "--cidr", "--source-group"}},
      {"authorize-security-group-egress", {"--group-id", "--protocol", "--port", "--cidr", "--source-group"}},
      {"revoke-security-group-ingress", {"--group-id", "--protocol", "--port", "--cidr", "--source-group"}},
      {"revoke-security-group-egress", {"--group-id", "--protocol", "--port", "--cidr", "--source-group"}},
      {"describe-security-groups", {"--group-ids"}},
      {"admin issue-cert", {"--state-dir", "--role", "--name", "--days", "--out"}},
      {"admin revoke-cert", {"--state-dir", "--serial", "--unlisted"}},
      {"admin sign-release", {"--key", "--bin-dir", "--release", "--out"}},
      {"admin verify-release", {"--manifest", "--public-key", "--bin-dir"}},
      {"audit verify", {"--public-key", "--head", "FILE"}},
      {"enclave build-enclave", {"--kernel", "--initrd", "--cmdline", "--output-file", "--signing-certificate",
                                 "--private-key", "--name", "--version", "--metadata"}},
      {"enclave describe-eif", {"--eif-path"}},
      {"enclave run-enclave", {"--instance-id", "--eif-path", "--cpu-count", "--memory", "--enclave-cid", "--debug-mode",
                               "--enclave-name"}},
      {"enclave describe-enclaves", {"--instance-id"}},
      {"enclave terminate-enclave", {"--enclave-id"}},
      {"enclave console", {"--enclave-id"}},
      {"enclave pcr", {"--input", "--signing-certificate"}},
  };
  EXPECT_EQ(expected.size(), commands().size());
  for (const auto& [name, flags] : expected) {
    std::vector<std::string> args;
    std::istringstream words(name);
    for (std::string w; words >> w;) args.push_back(w);
    args.push_back("--help");
    const Ran r = run(args);
    EXPECT_EQ(r.status, 0) << name;
    EXPECT_EQ(r.err, "") << name;
    EXPECT_EQ(r.out.rfind("usage: azote " + name, 0), 0u) << r.out;
    for (const auto& f : flags) EXPECT_NE(r.out.find(f), std::string::npos) << name << " " << f;
    // Help before the command, and despite other (even bad) arguments.
    std::vector<std::string> before = args;
    before.pop_back();
    before.insert(before.begin(), "--help");
    before.push_back("--bogus");
    EXPECT_EQ(run(before).out, r.out) << name;
  }
}

TEST(Help, TopLevelGroupsAndVersion) {
  Ran r = run({"--help"});
  EXPECT_EQ(r.status, 0);
  for (const auto& c : commands()) EXPECT_NE(r.out.find(std::string(c.name)), std::string::npos) << c.name;
  for (const char* g : {"--endpoint", "--credentials", "--output", "--timeout", "--version", "254", "255"}) {
    EXPECT_NE(r.out.find(g), std::string::npos) << g;
  }
  EXPECT_EQ(run({"help"}).out, r.out);
  r = run({"admin", "--help"});
  EXPECT_EQ(r.status, 0);
  EXPECT_NE(r.out.find("admin issue-cert"), std::string::npos);
  EXPECT_NE(r.out.find("admin revoke-cert"), std::string::npos);
  EXPECT_EQ(r.out.find("run-instances"), std::string::npos);
  r = run({"audit", "-h"});
  EXPECT_EQ(r.status, 0);
  EXPECT_NE(r.out.find("audit verify"), std::string::npos);
  r = run({"--version"});
  EXPECT_EQ(r.status, 0);
  EXPECT_EQ(r.out.rfind("azote ", 0), 0u);
}

TEST(Exit, UsageErrorsExitTwoNamingTheArgument) {
  const Ran r = run({"run-instances", "--image-id", "ami-1", "--count", "x"});
  EXPECT_EQ(r.status, kExitUsage);
  EXPECT_EQ(r.err, "azote: run-instances: --count \"x\" is not a number from 1 to 64\n");
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(run({"describe-instances", "--endpoint", "nowhere"}).status, kExitUsage);
}

TEST(Exit, MissingCredentialsExit255NamingTheFile) {
  TempDir dir;
  const Ran r = run({"describe-instances", "--credentials", dir.path()});
  EXPECT_EQ(r.status, kExitConnection);
  EXPECT_NE(r.err.find("CA certificate " + (dir / "ca.pem") + " does not exist"), std::string::npos) << r.err;
}

// ----- rendering --------------------------------------------------------------------

v1::DescribeInstancesResponse sample_instances() {
  v1::DescribeInstancesResponse resp;
  auto* a = resp.add_instances();
  a->set_instance_id("i-0123456789abcdef0");
  a->mutable_state()->set_name("running");
  a->set_instance_type("t3.micro");
  a->set_image_id("ami-0a1b2c3d4e5f60718");
  a->set_launch_time("2025-01-31T12:34:56Z");
  auto* t = a->add_tags();
  t->set_key("Name");
  t->set_value("web");
  auto* b = resp.add_instances();
  b->set_instance_id("i-0fedcba9876543210");
  b->mutable_state()->set_name("terminated");
  b->set_instance_type("m5.large");
  b->set_image_id("ami-0a1b2c3d4e5f60718");
  b->mutable_state_reason()->set_code("Server.InternalError");
  b->mutable_state_reason()->set_message("azote-hv exited with status 81");
  return resp;
}

TEST(Render, InstancesTable) {
  const std::string out = render_response(Rpc::kDescribeInstances, sample_instances(), OutputFormat::kTable);
  EXPECT_EQ(out,
            "INSTANCE ID          STATE       TYPE      IMAGE                  LAUNCH TIME           REASON\n"
            "i-0123456789abcdef0  running     t3.micro  ami-0a1b2c3d4e5f60718  2025-01-31T12:34:56Z  -\n"
            "i-0fedcba9876543210  terminated  m5.large  ami-0a1b2c3d4e5f60718  -                     "
            "Server.InternalError: azote-hv exited with status 81\n");
  EXPECT_EQ(render_response(Rpc::kDescribeInstances, v1::DescribeInstancesResponse(), OutputFormat::kTable),
            "INSTANCE ID  STATE  TYPE  IMAGE  LAUNCH TIME  REASON\n");
}

TEST(Render, InstancesTextAndJson) {
  EXPECT_EQ(render_response(Rpc::kDescribeInstances, sample_instances(), OutputFormat::kText),
            "INSTANCES\ti-0123456789abcdef0\trunning\tt3.micro\tami-0a1b2c3d4e5f60718\t2025-01-31T12:34:56Z\tNone\tNone\n"
            "TAGS\tName\tweb\n"
            "INSTANCES\ti-0fedcba9876543210\tterminated\tm5.large\tami-0a1b2c3d4e5f60718\tNone\t"
            "Server.InternalError\tazote-hv exited with status 81\n");
  const std::string json = render_response(Rpc::kDescribeInstances, sample_instances(), OutputFormat::kJson);
  EXPECT_NE(json.find("\"instance_id\": \"i-0123456789abcdef0\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"state_reason\""), std::string::npos);
  EXPECT_NE(json.find("\"hypervisor_pid\""), std::string::npos);  // defaults printed too
  v1::DescribeInstancesResponse back;
  EXPECT_TRUE(google::protobuf::util::JsonStringToMessage(json, &back).ok());
  EXPECT_EQ(back.SerializeAsString(), sample_instances().SerializeAsString());
}

TEST(Render, VolumesTypesImagesAndRaw) {
  v1::DescribeVolumesResponse vr;
  auto* v = vr.add_volumes();
  v->set_volume_id("vol-0123456789abcdef0");
  v->set_state("in-use");
  v->set_size_gib(8);
  v->set_volume_type("gp3");
  v->set_iops(3000);
  v->set_encrypted(true);
  auto* at = v->add_attachments();
  at->set_instance_id("i-1");
  at->set_device("/dev/vdb");
  at->set_state("attached");
  auto* w = vr.add_volumes();
  w->set_volume_id("vol-2");
  w->set_state("available");
  w->set_size_gib(100);
  w->set_volume_type("standard");
  EXPECT_EQ(render_response(Rpc::kDescribeVolumes, vr, OutputFormat::kTable),
            "VOLUME ID              STATE      SIZE     TYPE      IOPS  ENCRYPTED  ATTACHED TO\n"
            "vol-0123456789abcdef0  in-use     8 GiB    gp3       3000  yes        i-1 (/dev/vdb)\n"
            "vol-2                  available  100 GiB  standard  -     no         -\n");

  v1::DescribeInstanceTypesResponse tr;
  auto* it = tr.add_instance_types();
  it->set_instance_type("t3.micro");
  it->set_vcpus(2);
  it->set_memory_mib(1024);
  it->set_network_mbps(5000);
  it->set_ebs_mbps(2085);
  it->set_ebs_iops(11800);
  EXPECT_EQ(render_response(Rpc::kDescribeInstanceTypes, tr, OutputFormat::kTable),
            "TYPE      VCPUS  MEMORY  NETWORK      EBS BANDWIDTH  EBS IOPS\n"
            "t3.micro  2      1 GiB   5000 Mbit/s  2085 Mbit/s    11800\n");

  v1::GetConsoleOutputResponse co;
  co.set_output("Linux version 6.1\nlogin: ");
  EXPECT_EQ(render_response(Rpc::kGetConsoleOutput, co, OutputFormat::kTable), "Linux version 6.1\nlogin: ");
  EXPECT_EQ(render_response(Rpc::kGetConsoleOutput, co, OutputFormat::kText), "Linux version 6.1\nlogin: ");
  v1::GetMetricsResponse m;
  m.set_text("azote_instances 2\n");
  EXPECT_EQ(render_response(Rpc::kGetMetrics, m, OutputFormat::kTable), "azote_instances 2\n");
  v1::DescribeHostAttestationResponse ha;
  ha.set_mode("development");
  auto* l = ha.add_layers();
  l->set_index(0);
  l->set_name("device");
  l->set_mode("device");
  l->set_public_key_sha256("c296");
  l = ha.add_layers();
  l->set_index(1);
  l->set_name("azote-rot");
  l->set_mode("development");
  l->set_measurement("bbb4");
  l->set_public_key_sha256("3f66");
  EXPECT_EQ(render_response(Rpc::kDescribeHostAttestation, ha, OutputFormat::kTable),
            "LAYER  NAME       MODE         MEASUREMENT (SHA-384)  KEY (SHA-256)\n"
            "0      device     device       -                      c296\n"
            "1      azote-rot  development  bbb4                   3f66\n"
            "mode: development\n"
            "write guard: off\n");
  ha.set_release("r-1");
  ha.set_release_key_sha384("ab12");
  ha.mutable_write_guard()->set_active(true);
  ha.mutable_write_guard()->set_mechanism("fanotify");
  ha.mutable_write_guard()->add_protected_paths("/var/lib/azote/rot");
  const std::string with = render_response(Rpc::kDescribeHostAttestation, ha, OutputFormat::kTable);
  EXPECT_NE(with.find("release: r-1 (key SHA-384 ab12)\n"), std::string::npos) << with;
  EXPECT_NE(with.find("write guard: fanotify, 1 protected path(s), 0 refusal(s)\n"), std::string::npos) << with;
  v1::RegisterImageResponse ri;
  ri.set_image_id("ami-0123456789abcdef0");
  EXPECT_EQ(render_response(Rpc::kRegisterImage, ri, OutputFormat::kText), "ami-0123456789abcdef0\n");
  EXPECT_EQ(render_response(Rpc::kDeleteVolume, v1::DeleteVolumeResponse(), OutputFormat::kTable), "");
  EXPECT_EQ(render_response(Rpc::kDeleteVolume, v1::DeleteVolumeResponse(), OutputFormat::kJson), "{}\n");
}

TEST(Render, InstancesWithNetworkInterfaces) {
  v1::DescribeInstancesResponse resp = sample_instances();
  auto* a = resp.mutable_instances(0);
  a->set_private_ip_address("10.0.1.4");
  auto* n = a->add_network_interfaces();
  n->set_network_interface_id("eni-0123456789abcdef0");
  n->set_mac_address("02:12:34:56:78:9a");
  n->set_private_ip_address("10.0.1.4");
  n->set_private_dns_name("ip-10-0-1-4.local-1.compute.internal");
  n->set_subnet_id("subnet-1");
  n->set_vpc_id("vpc-1");
  n->set_status("in-use");
  auto* g = n->add_groups();
  g->set_group_id("sg-1");
  g->set_group_name("default");
  EXPECT_EQ(render_response(Rpc::kDescribeInstances, resp, OutputFormat::kTable),
            "INSTANCE ID          STATE       PRIVATE IP  TYPE      IMAGE                  LAUNCH TIME           REASON\n"
            "i-0123456789abcdef0  running     10.0.1.4    t3.micro  ami-0a1b2c3d4e5f60718  2025-01-31T12:34:56Z  -\n"
            "i-0fedcba9876543210  terminated  -           m5.large  ami-0a1b2c3d4e5f60718  -                     "
            "Server.InternalError: azote-hv exited with status 81\n");
  EXPECT_EQ(render_response(Rpc::kDescribeInstances, resp, OutputFormat::kText),
            "INSTANCES\ti-0123456789abcdef0\trunning\tt3.micro\tami-0a1b2c3d4e5f60718\t2025-01-31T12:34:56Z\tNone\tNone\n"
            "NETWORKINTERFACES\teni-0123456789abcdef0\t02:12:34:56:78:9a\t10.0.1.4\t"
            "ip-10-0-1-4.local-1.compute.internal\tsubnet-1\tvpc-1\tin-use\n"
            "GROUPS\tsg-1\tdefault\n"
            "TAGS\tName\tweb\n"
            "INSTANCES\ti-0fedcba9876543210\tterminated\tm5.large\tami-0a1b2c3d4e5f60718\tNone\t"
            "Server.InternalError\tazote-hv exited with status 81\n");
}

TEST(Render, SecurityGroupsVpcsSubnets) {
  v1::DescribeSecurityGroupsResponse r;
  auto* g = r.add_security_groups();
  g->set_group_id("sg-1");
  g->set_group_name("web");
  g->set_description("web servers");
  g->set_vpc_id("vpc-1");
  auto* in = g->add_ip_permissions();
  in->set_ip_protocol("tcp");
  in->set_from_port(22);
  in->set_to_port(22);
  in->add_cidr_ips("10.0.0.0/16");
  auto* icmp = g->add_ip_permissions();
  icmp->set_ip_protocol("icmp");
  icmp->set_from_port(8);
  icmp->set_to_port(-1);
  icmp->add_source_group_ids("sg-2");
  auto* out = g->add_ip_permissions_egress();
  out->set_ip_protocol("-1");
  out->add_cidr_ips("0.0.0.0/0");
  auto* empty = r.add_security_groups();
  empty->set_group_id("sg-2");
  empty->set_group_name("bare");
  empty->set_vpc_id("vpc-1");
  EXPECT_EQ(render_response(Rpc::kDescribeSecurityGroups, r, OutputFormat::kTable),
            "GROUP ID  NAME  VPC    DIRECTION  PROTOCOL  PORTS            PEER\n"
            "sg-1      web   vpc-1  inbound    tcp       22               10.0.0.0/16\n"
            "sg-1      web   vpc-1  inbound    icmp      type 8 code any  sg-2\n"
            "sg-1      web   vpc-1  outbound   all       all              0.0.0.0/0\n"
            "sg-2      bare  vpc-1  -          -         -                -\n");
  EXPECT_EQ(render_response(Rpc::kDescribeSecurityGroups, r, OutputFormat::kText),
            "SECURITYGROUPS\tweb servers\tsg-1\tweb\tvpc-1\n"
            "IPPERMISSIONS\t22\ttcp\t22\nIPRANGES\t10.0.0.0/16\n"
            "IPPERMISSIONS\t8\ticmp\t-1\nUSERIDGROUPPAIRS\tsg-2\n"
            "IPPERMISSIONSEGRESS\tNone\t-1\tNone\nIPRANGES\t0.0.0.0/0\n"
            "SECURITYGROUPS\tNone\tsg-2\tbare\tvpc-1\n");
  v1::DescribeVpcsResponse vr;
  auto* v = vr.add_vpcs();
  v->set_vpc_id("vpc-1");
  v->set_cidr_block("10.0.0.0/16");
  v->set_state("available");
  v->set_is_default(true);
  EXPECT_EQ(render_response(Rpc::kDescribeVpcs, vr, OutputFormat::kTable),
            "VPC ID  CIDR         STATE      DEFAULT\nvpc-1   10.0.0.0/16  available  yes\n");
  EXPECT_EQ(render_response(Rpc::kDescribeVpcs, vr, OutputFormat::kText), "VPCS\t10.0.0.0/16\tTrue\tavailable\tvpc-1\n");
  v1::DescribeSubnetsResponse sr;
  auto* sn = sr.add_subnets();
  sn->set_subnet_id("subnet-1");
  sn->set_vpc_id("vpc-1");
  sn->set_cidr_block("10.0.1.0/24");
  sn->set_availability_zone("local-1a");
  sn->set_available_ip_address_count(249);
  sn->set_default_for_az(true);
  EXPECT_EQ(render_response(Rpc::kDescribeSubnets, sr, OutputFormat::kTable),
            "SUBNET ID  VPC ID  CIDR         ZONE      FREE ADDRESSES  DEFAULT\n"
            "subnet-1   vpc-1   10.0.1.0/24  local-1a  249             yes\n");
  v1::CreateSecurityGroupResponse cr;
  cr.set_group_id("sg-0123456789abcdef0");
  EXPECT_EQ(render_response(Rpc::kCreateSecurityGroup, cr, OutputFormat::kText), "sg-0123456789abcdef0\n");
  EXPECT_EQ(render_response(Rpc::kDeleteSecurityGroup, v1::DeleteSecurityGroupResponse(), OutputFormat::kTable), "");
}

TEST(Render, TableIsUtf8Aware) {
  const Table t{{"A", "B"}, {{"é", "x"}, {"ab", "y"}}};
  EXPECT_EQ(render_table(t), "A   B\né   x\nab  y\n");
}

// ----- status mapping ---------------------------------------------------------------

TEST(Status, ServerMessagesPassThrough) {
  const grpc::Status s(grpc::StatusCode::INVALID_ARGUMENT,
                       "InvalidParameterValue: instance type \"t9.huge\" does not exist");
  const api::ApiError e = api::describe_status(s, "unix:/x/api.sock");
  EXPECT_EQ(e.category, api::ApiError::Category::kApi);
  EXPECT_STREQ(e.category_name(), "api");
  EXPECT_EQ(e.code, "InvalidParameterValue");
  EXPECT_EQ(e.message, "InvalidParameterValue: instance type \"t9.huge\" does not exist");

  const api::ApiError nf = api::describe_status(
      grpc::Status(grpc::StatusCode::NOT_FOUND, "InvalidInstanceID.NotFound: i-1 does not exist"), "h:1");
  EXPECT_EQ(nf.code, "InvalidInstanceID.NotFound");
  // Even UNAVAILABLE, when the server says why in its format.
  const api::ApiError busy = api::describe_status(
      grpc::Status(grpc::StatusCode::UNAVAILABLE, "ServiceUnavailable: the host is draining"), "h:1");
  EXPECT_EQ(busy.category, api::ApiError::Category::kApi);
  EXPECT_EQ(busy.message, "ServiceUnavailable: the host is draining");
}

TEST(Status, ConnectionFailures) {
  api::ApiError e = api::describe_status(
      grpc::Status(grpc::StatusCode::UNAVAILABLE,
                   "failed to connect to all addresses; last error: UNKNOWN: unix:/x/api.sock: "
                   "No such file or directory"),
      "unix:/x/api.sock");
  EXPECT_EQ(e.category, api::ApiError::Category::kConnection);
  EXPECT_STREQ(e.category_name(), "connection");
  EXPECT_EQ(e.message,
            "cannot reach the controller at unix:/x/api.sock: failed to connect to all addresses; last "
            "error: UNKNOWN: unix:/x/api.sock: No such file or directory");

  e = api::describe_status(
      grpc::Status(grpc::StatusCode::UNAVAILABLE,
                   "failed to connect to all addresses; last error: UNAVAILABLE: unix:/x/api.sock: Socket closed"),
      "unix:/x/api.sock");
  EXPECT_EQ(e.category, api::ApiError::Category::kConnection);
  EXPECT_EQ(e.message,
            "cannot reach the controller at unix:/x/api.sock: failed to connect to all addresses; last error: "
            "UNAVAILABLE: unix:/x/api.sock: Socket closed (the controller refused this client's "
            "certificate, or the CA does not match)");

  // The same refusal seen as a closed pipe (TLS 1.3: the client wrote before the verdict).
  e = api::describe_status(
      grpc::Status(grpc::StatusCode::UNAVAILABLE,
                   "failed to connect to all addresses; last error: UNAVAILABLE: unix:/x/api.sock: Broken pipe"),
      "unix:/x/api.sock");
  EXPECT_NE(e.message.find("(the controller refused this client's certificate, or the CA does not match)"),
            std::string::npos)
      << e.message;

  e = api::describe_status(grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "Deadline Exceeded"), "h:9");
  EXPECT_EQ(e.category, api::ApiError::Category::kConnection);
  EXPECT_EQ(e.message, "cannot reach the controller at h:9: Deadline Exceeded");

  e = api::describe_status(grpc::Status(grpc::StatusCode::UNIMPLEMENTED, ""), "h:9");
  EXPECT_EQ(e.category, api::ApiError::Category::kApi);
  EXPECT_EQ(e.message, "the controller at h:9 answered UNIMPLEMENTED");
}

TEST(Client, EndpointsAndCredentials) {
  for (const char* ok : {"unix:/var/lib/azote/api.sock", "unix:///tmp/a.sock", "localhost:7443", "10.1.2.3:1",
                         "[::1]:7443", "dns:///ctl.example:443"}) {
    EXPECT_EQ(api::check_endpoint(ok), "") << ok;
  }
  for (const char* bad : {"", "unix:", "localhost", "host:0", "host:http", ":7443", "::1:7443", "[::1:7443"}) {
    EXPECT_NE(api::check_endpoint(bad), "") << bad;
  }
  TempDir dir;
  auto c = api::load_credentials(dir.path());
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().code, api::ClientErrc::kMissing);
  EXPECT_EQ(c.error().message(), "CA certificate " + (dir / "ca.pem") + " does not exist");
  spit(dir / "ca.pem", "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n");
  c = api::load_credentials(dir.path());
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().message(), "client certificate " + (dir / "cert.pem") + " does not exist");
  spit(dir / "cert.pem", "-----BEGIN CERTIFICATE-----\ny\n-----END CERTIFICATE-----\n");
  spit(dir / "key.pem", "not a key");
  c = api::load_credentials(dir.path());
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().code, api::ClientErrc::kInvalid);
  EXPECT_NE(c.error().message().find("client key " + (dir / "key.pem") + " is not PEM"), std::string::npos);
  spit(dir / "key.pem", "-----BEGIN PRIVATE KEY-----\nz\n-----END PRIVATE KEY-----\n");
  c = api::load_credentials(dir.path());
  ASSERT_TRUE(c.ok());
  EXPECT_NE(c->cert_pem.find("y"), std::string::npos);
}

// ----- audit verify -----------------------------------------------------------------

// A log of three records and its public key (signing.pub) in dir.
void write_audit_log(const TempDir& dir) {
  auto key = audit::SigningKey::generate();
  ASSERT_TRUE(key.ok());
  auto pub = key->public_pem();
  ASSERT_TRUE(pub.ok());
  spit(dir / "signing.pub", *pub);
  auto log = audit::AuditLog::open(dir / "audit.log", *key);
  ASSERT_TRUE(log.ok()) << log.error().message();
  for (int i = 0; i < 3; ++i) {
    audit::Entry e;
    e.principal = "operator/alice";
    e.method = "RunInstances";
    e.resources = {"i-000" + std::to_string(i)};
    e.outcome = "allowed";
    ASSERT_TRUE((*log)->append(e).ok());
  }
}

TEST(Audit, VerifyOk) {
  TempDir dir;
  write_audit_log(dir);
  Ran r = run({"audit", "verify", dir / "audit.log"});
  EXPECT_EQ(r.status, 0) << r.out << r.err;
  EXPECT_EQ(r.out, "ok: 3 records, last seq 3\n");
  r = run({"audit", "verify", dir / "audit.log", "--output", "json"});
  EXPECT_EQ(r.status, 0);
  EXPECT_NE(r.out.find("\"records\": 3"), std::string::npos) << r.out;
}

TEST(Audit, TamperedLogFailsWithTheReason) {
  TempDir dir;
  write_audit_log(dir);
  std::string log = slurp(dir / "audit.log");
  const size_t at = log.find("i-0001");
  ASSERT_NE(at, std::string::npos);
  log[at + 5] = '9';
  spit(dir / "audit.log", log);
  const Ran r = run({"audit", "verify", dir / "audit.log"});
  EXPECT_EQ(r.status, kExitVerifyFailed);
  EXPECT_EQ(r.out.rfind("failed: line 2: ", 0), 0u) << r.out;
}

TEST(Audit, TruncationAndWrongKeyAndMissingKey) {
  TempDir dir;
  write_audit_log(dir);
  std::string log = slurp(dir / "audit.log");
  log.erase(log.rfind('\n', log.size() - 2) + 1);  // drop the last record
  spit(dir / "audit.log", log);
  Ran r = run({"audit", "verify", dir / "audit.log"});
  EXPECT_EQ(r.status, kExitVerifyFailed);
  EXPECT_EQ(r.out.rfind("failed: ", 0), 0u);

  TempDir other;
  write_audit_log(other);
  r = run({"audit", "verify", other / "audit.log", "--public-key", dir / "signing.pub"});
  EXPECT_EQ(r.status, kExitVerifyFailed);

  r = run({"audit", "verify", other / "audit.log", "--public-key", other / "absent.pub"});
  EXPECT_EQ(r.status, kExitUsage);
  EXPECT_NE(r.err.find("absent.pub"), std::string::npos);
}

// ----- admin ------------------------------------------------------------------------

TEST(Admin, IssueCertIsAcceptedByTheHostPki) {
  TempDir state;
  const std::string out = state / "alice";
  const Ran r = run({"admin", "issue-cert", "--state-dir", state.path(), "--role", "operator", "--name", "alice",
                     "--days", "10", "--out", out});
  ASSERT_EQ(r.status, 0) << r.err;
  ASSERT_FALSE(r.out.empty());
  const std::string serial = r.out.substr(0, r.out.size() - 1);
  EXPECT_EQ(r.out.back(), '\n');

  struct stat st {};
  ASSERT_EQ(::stat((out + "/key.pem").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto host = pki::HostPki::open_or_create(state / "pki");
  ASSERT_TRUE(host.ok()) << host.error().message();
  EXPECT_EQ(slurp(out + "/ca.pem"), host->ca_pem());
  auto who = host->verify_client(slurp(out + "/cert.pem"));
  ASSERT_TRUE(who.ok()) << who.error().message();
  EXPECT_EQ(who->role, "operator");
  EXPECT_EQ(who->name, "alice");
  EXPECT_EQ(who->serial_hex, serial);
  const int64_t days = (who->not_after_unix - ::time(nullptr)) / 86400;
  EXPECT_TRUE(days == 9 || days == 10) << days;
  // The written directory is a working credentials directory.
  auto creds = api::load_credentials(out);
  ASSERT_TRUE(creds.ok()) << creds.error().message();

  // Revocation through the CLI: the next verification refuses it.
  const Ran rv = run({"admin", "revoke-cert", "--state-dir", state.path(), "--serial", serial});
  ASSERT_EQ(rv.status, 0) << rv.err;
  EXPECT_EQ(rv.out, "revoked " + serial + "\n");
  auto again = host->verify_client(slurp(out + "/cert.pem"));
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code, pki::PkiErrc::kRefused);
}

// A serial this CA never issued (a typo, another host's certificate) must not look
// revoked: nothing would be refused, yet the operator was told it worked.
TEST(Admin, RevokeRefusesSerialsNeverIssuedAndSaysWhenAlreadyRevoked) {
  TempDir state;
  Ran r = run({"admin", "issue-cert", "--state-dir", state.path(), "--role", "operator", "--name", "alice", "--out",
               state / "alice"});
  ASSERT_EQ(r.status, 0) << r.err;
  const std::string serial = r.out.substr(0, r.out.size() - 1);

  for (const std::string& never : {std::string("00"), std::string("1f2e3d"), serial + "0"}) {
    auto norm = pki::normalize_serial(never);
    ASSERT_TRUE(norm.ok());
    r = run({"admin", "revoke-cert", "--state-dir", state.path(), "--serial", never});
    EXPECT_EQ(r.status, kExitUsage) << never << ": " << r.out << r.err;
    EXPECT_EQ(r.out, "") << never;
    EXPECT_EQ(r.err.rfind("azote: admin revoke-cert: serial " + *norm + " was never issued by this host's CA", 0), 0u)
        << r.err;
    EXPECT_NE(r.err.find("--unlisted"), std::string::npos) << r.err;
  }
  EXPECT_FALSE(std::filesystem::exists(state / "pki/revoked"));

  r = run({"admin", "revoke-cert", "--state-dir", state.path(), "--serial", serial});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "revoked " + serial + "\n");
  r = run({"admin", "revoke-cert", "--state-dir", state.path(), "--serial", serial});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "already revoked " + serial + "\n");
  r = run({"admin", "revoke-cert", "--state-dir", state.path(), "--serial", serial, "--output", "json"});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out, nullptr, false),
            (nlohmann::json{{"revoked", serial}, {"already_revoked", true}, {"listed", true}}))
      << r.out;

  // A certificate issued before the CA kept its list of serials: its serial is not
  // listed, so revoking it takes --unlisted, and the answer says it was not listed.
  r = run({"admin", "revoke-cert", "--state-dir", state.path(), "--serial", "abc123", "--unlisted", "--output",
           "json"});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out, nullptr, false),
            (nlohmann::json{{"revoked", "abc123"}, {"already_revoked", false}, {"listed", false}}))
      << r.out;
  r = run({"admin", "revoke-cert", "--state-dir", state.path(), "--serial", "ABC123", "--unlisted"});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "already revoked abc123\n");
}

TEST(Admin, Errors) {
  TempDir state;
  Ran r = run({"admin", "issue-cert", "--state-dir", state / "nope", "--role", "r", "--name", "n", "--out", state / "o"});
  EXPECT_EQ(r.status, kExitUsage);
  EXPECT_NE(r.err.find("--state-dir " + (state / "nope") + " is not a directory"), std::string::npos) << r.err;
  r = run({"admin", "issue-cert", "--state-dir", state.path(), "--role", "bad role", "--name", "n", "--out", state / "o"});
  EXPECT_EQ(r.status, kExitUsage) << r.err;
  EXPECT_NE(r.err.find("bad role"), std::string::npos) << r.err;
  r = run({"admin", "revoke-cert", "--state-dir", state / "empty", "--serial", "1"});
  EXPECT_EQ(r.status, kExitUsage);
  EXPECT_NE(r.err.find("no host PKI in"), std::string::npos);
}

// ----- against an in-process fake controller (mutual TLS over a unix socket) ------

class FakeEc2 final : public v1::Ec2::Service {
 public:
  grpc::Status RunInstances(grpc::ServerContext* ctx, const v1::RunInstancesRequest* req,
                            v1::RunInstancesResponse* resp) override {
    if (req->instance_type() == "t9.huge") {
      ctx->AddTrailingMetadata("azote-error-code", "InvalidParameterValue");
      return {grpc::StatusCode::INVALID_ARGUMENT, "InvalidParameterValue: instance type \"t9.huge\" does not exist"};
    }
    std::lock_guard lock(mu_);
    resp->set_reservation_id("r-1");
    for (uint32_t n = 0; n < std::max(1u, req->count()); ++n) {
      Fake f;
      f.instance.set_instance_id("i-" + std::to_string(++next_));
      f.instance.set_image_id(req->image_id());
      f.instance.set_instance_type("t3.micro");
      f.instance.mutable_state()->set_name("pending");
      f.polls_left = 2 + n;
      f.fails = req->image_id() == "ami-bad";
      *resp->add_instances() = f.instance;
      fakes_[f.instance.instance_id()] = f;
    }
    return grpc::Status::OK;
  }
  grpc::Status DescribeInstances(grpc::ServerContext* /*ctx*/, const v1::DescribeInstancesRequest* req,
                                 v1::DescribeInstancesResponse* resp) override {
    std::lock_guard lock(mu_);
    ++describes_;
    for (auto& [id, f] : fakes_) {
      if (req->instance_ids_size() > 0 &&
          std::find(req->instance_ids().begin(), req->instance_ids().end(), id) == req->instance_ids().end()) {
        continue;
      }
      if (f.instance.state().name() == "pending" && f.polls_left-- == 0) {
        if (f.fails) {
          f.instance.mutable_state()->set_name("terminated");
          f.instance.mutable_state_reason()->set_code("Server.InternalError");
          f.instance.mutable_state_reason()->set_message("azote-hv exited with status 81");
        } else {
          f.instance.mutable_state()->set_name("running");
        }
      }
      *resp->add_instances() = f.instance;
    }
    return grpc::Status::OK;
  }
  grpc::Status StopInstances(grpc::ServerContext* /*ctx*/, const v1::InstanceIdsRequest* req,
                             v1::InstanceStateChangesResponse* resp) override {
    std::lock_guard lock(mu_);
    for (const auto& id : req->instance_ids()) {
      auto it = fakes_.find(id);
      if (it == fakes_.end()) {
        return {grpc::StatusCode::NOT_FOUND, "InvalidInstanceID.NotFound: the instance ID '" + id + "' does not exist"};
      }
      auto* c = resp->add_instances();
      c->set_instance_id(id);
      c->mutable_previous_state()->set_name(it->second.instance.state().name());
      it->second.instance.mutable_state()->set_name("stopped");
      c->mutable_current_state()->set_name("stopped");
    }
    stopped_force_ = req->force();
    return grpc::Status::OK;
  }
  grpc::Status GetConsoleOutput(grpc::ServerContext* /*ctx*/, const v1::GetConsoleOutputRequest* req,
                                v1::GetConsoleOutputResponse* resp) override {
    resp->set_instance_id(req->instance_id());
    resp->set_output("hello from the guest\n");
    return grpc::Status::OK;
  }

  int describes() {
    std::lock_guard lock(mu_);
    return describes_;
  }
  bool stopped_force() {
    std::lock_guard lock(mu_);
    return stopped_force_;
  }

 private:
  struct Fake {
    v1::Instance instance;
    int polls_left = 0;
    bool fails = false;
  };
  std::mutex mu_;
  std::map<std::string, Fake> fakes_;
  int next_ = 0;
  int describes_ = 0;
  bool stopped_force_ = false;
};

class FakeController : public ::testing::Test {
 protected:
  void SetUp() override {
    auto host = pki::HostPki::open_or_create(state_ / "pki");
    ASSERT_TRUE(host.ok()) << host.error().message();
    using namespace grpc::experimental;
    auto provider = std::make_shared<StaticDataCertificateProvider>(
        host->ca_pem(), std::vector<IdentityKeyCertPair>{{host->server_key_pem(), host->server_cert_pem()}});
    TlsServerCredentialsOptions opts(provider);
    opts.watch_root_certs();
    opts.watch_identity_key_cert_pairs();
    opts.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
    grpc::ServerBuilder builder;
    endpoint_ = "unix:" + (state_ / "api.sock");
    builder.AddListeningPort(endpoint_, TlsServerCredentials(opts));
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    const Ran r = run({"admin", "issue-cert", "--state-dir", state_.path(), "--role", "operator", "--name",
                       "tester", "--out", creds_});
    ASSERT_EQ(r.status, 0) << r.err;
  }
  void TearDown() override {
    if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  }
  Ran call(std::vector<std::string> args) {
    args.insert(args.end(), {"--endpoint", endpoint_, "--credentials", creds_, "--timeout", "10"});
    return run(args);
  }

  TempDir state_;
  std::string creds_ = state_ / "creds";
  std::string endpoint_;
  FakeEc2 service_;
  std::unique_ptr<grpc::Server> server_;
};

TEST_F(FakeController, DescribeOverMutualTls) {
  Ran r = call({"describe-instances"});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "INSTANCE ID  STATE  TYPE  IMAGE  LAUNCH TIME  REASON\n");
  r = call({"get-console-output", "--instance-id", "i-1"});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "hello from the guest\n");
}

TEST_F(FakeController, ApiErrorIsPrintedAsIsAndExits254) {
  const Ran r = call({"run-instances", "--image-id", "ami-1", "--instance-type", "t9.huge"});
  EXPECT_EQ(r.status, kExitApi);
  EXPECT_EQ(r.err, "azote: InvalidParameterValue: instance type \"t9.huge\" does not exist\n");
  EXPECT_EQ(r.out, "");
  const Ran s = call({"stop-instances", "--instance-ids", "i-404"});
  EXPECT_EQ(s.status, kExitApi);
  EXPECT_EQ(s.err, "azote: InvalidInstanceID.NotFound: the instance ID 'i-404' does not exist\n");
}

TEST_F(FakeController, WaitUntilRunning) {
  const Ran r = call({"run-instances", "--image-id", "ami-1", "--count", "2", "--wait", "--output", "text"});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out.rfind("RESERVATIONS\tr-1\nINSTANCES\ti-1\tpending\t", 0), 0u) << r.out;
  EXPECT_NE(r.err.find("i-1: pending (0."), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("i-1: pending \u2192 running ("), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("i-2: pending \u2192 running ("), std::string::npos) << r.err;
  EXPECT_GE(service_.describes(), 3);

  const Ran s = call({"stop-instances", "--instance-ids", "i-1", "--force", "--wait"});
  EXPECT_EQ(s.status, 0) << s.err;
  EXPECT_TRUE(service_.stopped_force());
  EXPECT_EQ(s.out, "INSTANCE ID  PREVIOUS STATE  CURRENT STATE\ni-1          running         stopped\n");
}

TEST_F(FakeController, WaitProgressRewritesOneLineOnATerminal) {
  const Ran r = run({"run-instances", "--image-id", "ami-1", "--wait", "--endpoint", endpoint_, "--credentials",
                     creds_},
                    {}, /*tty=*/true);
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.err.rfind("\r\x1b[Ki-1: pending (0.", 0), 0u) << r.err;
  EXPECT_NE(r.err.find("\r\x1b[Ki-1: pending \u2192 running ("), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_EQ(r.err.back(), '\n');
}

TEST_F(FakeController, WaitFailsWhenTheInstanceEndsElsewhere) {
  const Ran r = call({"run-instances", "--image-id", "ami-bad", "--wait"});
  EXPECT_EQ(r.status, kExitApi);
  EXPECT_NE(r.err.find("i-1: pending \u2192 terminated ("), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("azote: run-instances: i-1 is terminated, not running: Server.InternalError: "
                       "azote-hv exited with status 81\n"),
            std::string::npos)
      << r.err;
}

TEST_F(FakeController, WaitGivesUpAfterTheTimeout) {
  std::vector<std::string> args = {"run-instances", "--image-id", "ami-1", "--count", "60", "--wait"};
  args.insert(args.end(), {"--endpoint", endpoint_, "--credentials", creds_, "--timeout", "0.3"});
  const Ran r = run(args);
  EXPECT_EQ(r.status, kExitConnection);
  EXPECT_NE(r.err.find("run-instances: gave up after 0.3 s waiting for running: "), std::string::npos) << r.err;
}

TEST_F(FakeController, ForeignCredentialsAreRefused) {
  TempDir other;
  ASSERT_EQ(run({"admin", "issue-cert", "--state-dir", other.path(), "--role", "operator", "--name", "eve",
                 "--out", other / "creds"})
                .status,
            0);
  // A certificate from another host's CA (and that CA as root): refused both ways.
  Ran r = run({"describe-instances", "--endpoint", endpoint_, "--credentials", other / "creds"});
  EXPECT_EQ(r.status, kExitConnection);
  EXPECT_EQ(r.err.rfind("azote: cannot reach the controller at " + endpoint_ + ": ", 0), 0u) << r.err;
  EXPECT_NE(r.err.find("(the controller refused this client's certificate, or the CA does not match)"),
            std::string::npos)
      << r.err;
  // The right CA but a foreign client certificate.
  spit(other / "creds/ca.pem", slurp(creds_ + "/ca.pem"));
  r = run({"describe-instances", "--endpoint", endpoint_, "--credentials", other / "creds"});
  EXPECT_EQ(r.status, kExitConnection);
  EXPECT_NE(r.err.find("refused this client's certificate"), std::string::npos) << r.err;
}

TEST_F(FakeController, NoControllerListening) {
  const std::string ep = "unix:" + (state_ / "absent.sock");
  const Ran r = run({"describe-instances", "--endpoint", ep, "--credentials", creds_});
  EXPECT_EQ(r.status, kExitConnection);
  EXPECT_EQ(r.err.rfind("azote: cannot reach the controller at " + ep + ": ", 0), 0u) << r.err;
  EXPECT_EQ(r.err.find("refused this client's certificate"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace azote::cli
