// lib/ec2api against the real client. botocore_tool.py (run by Debian's /usr/bin/python3,
// whose botocore /usr/bin/aws uses) serializes requests with botocore's own serializer:
// each body must decode here to exactly the structure botocore was given. The other way,
// every response document written here is parsed by botocore's parser and by a botocore
// client, and walked against the model: an element botocore would ignore (a misspelled
// name) is a failure, as is a field that does not come through. Last, the real CLI,
// /usr/bin/aws, runs a few commands against a loopback server answering these documents.
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "ec2api/params.hpp"
#include "ec2api/request.hpp"
#include "ec2api/responses.hpp"

extern char** environ;

namespace azote::ec2api {
namespace {

using json = nlohmann::json;
using namespace std::chrono;

constexpr const char* kPython = "/usr/bin/python3";

struct Ran {
  int status = -1;
  std::string out;
};

// argv with stdout captured (stderr goes to the test's log).
Ran run(const std::vector<std::string>& argv) {
  Ran r;
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return r;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, argv[0].c_str(), &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(fds[1]);
  if (rc == 0) {
    char buf[65536];
    ssize_t n;
    while ((n = ::read(fds[0], buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR))
      if (n > 0) r.out.append(buf, static_cast<size_t>(n));
    int ws = 0;
    while (::waitpid(pid, &ws, 0) < 0 && errno == EINTR) {
    }
    r.status = WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
  }
  ::close(fds[0]);
  return r;
}

// Why botocore cannot be used here, or "" when it can.
std::string botocore_missing() {
  if (::access(kPython, X_OK) != 0) return "needs /usr/bin/python3 with python3-botocore";
  if (run({kPython, "-c", "import botocore.parsers, botocore.serialize"}).status != 0)
    return "/usr/bin/python3 cannot import botocore (apt-get install python3-botocore)";
  return "";
}

#define REQUIRE_BOTOCORE()                                      \
  do {                                                          \
    const std::string why = botocore_missing();                 \
    if (!why.empty()) GTEST_SKIP() << "SKIPPED: " << why;       \
  } while (0)

std::vector<std::string> strs(const std::vector<std::string_view>& v) { return {v.begin(), v.end()}; }

std::vector<json> json_lines(const std::string& out) {
  std::vector<json> v;
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) v.push_back(json::parse(line));
  return v;
}

// ---------------------------------------------------------------------------------------
// Requests: a small description of each operation's input (botocore's member name, the
// serialized name, the kind) read with the generic Node reader into JSON shaped like
// botocore's input.

struct Member {
  enum Kind { kString, kInt, kBool, kStruct, kStructList, kStringList } kind;
  std::string name;   // botocore's member name (the JSON key)
  std::string param;  // the flattened name
  std::vector<Member> members;
};

Member S(std::string n, std::string p = "") { return {Member::kString, n, p.empty() ? n : p, {}}; }
Member I(std::string n) { return {Member::kInt, n, n, {}}; }
Member B(std::string n) { return {Member::kBool, n, n, {}}; }
Member St(std::string n, std::vector<Member> m) { return {Member::kStruct, n, n, std::move(m)}; }
Member L(std::string n, std::string p, std::vector<Member> m) { return {Member::kStructList, n, p, std::move(m)}; }
Member SL(std::string n, std::string p) { return {Member::kStringList, n, p, {}}; }

Result<json, Ec2Error> decode(const Node& n, const std::vector<Member>& members) {
  json j = json::object();
  for (const Member& m : members) {
    switch (m.kind) {
      case Member::kString:
        if (auto v = n.get(m.param)) j[m.name] = std::string(*v);
        break;
      case Member::kInt: {
        AZOTE_TRY(v, n.get_int(m.param));
        if (v) j[m.name] = *v;
        break;
      }
      case Member::kBool: {
        AZOTE_TRY(v, n.get_bool(m.param));
        if (v) j[m.name] = *v;
        break;
      }
      case Member::kStruct:
        if (n.has(m.param)) {
          AZOTE_TRY(v, decode(n.sub(m.param), m.members));
          j[m.name] = v;
        }
        break;
      case Member::kStructList: {
        json a = json::array();
        for (const Node& e : n.list(m.param)) {
          AZOTE_TRY(v, decode(e, m.members));
          a.push_back(v);
        }
        if (!a.empty()) j[m.name] = a;
        break;
      }
      case Member::kStringList: {
        json a = json::array();
        for (std::string_view s : n.strings(m.param)) a.push_back(std::string(s));
        if (!a.empty()) j[m.name] = a;
        break;
      }
    }
  }
  return j;
}

const std::map<std::string, std::vector<Member>>& operations() {
  static const auto* ops = [] {
    const Member tags = L("Tags", "Tag", {S("Key"), S("Value")});
    const Member tag_specs = L("TagSpecifications", "TagSpecification", {S("ResourceType"), tags});
    const Member filters = L("Filters", "Filter", {S("Name"), SL("Values", "Value")});
    const Member bdm = L("BlockDeviceMappings", "BlockDeviceMapping",
                         {S("DeviceName"), S("VirtualName"), S("NoDevice"),
                          St("Ebs", {B("DeleteOnTermination"), I("Iops"), S("SnapshotId"), I("VolumeSize"),
                                     S("VolumeType"), S("KmsKeyId"), I("Throughput"), B("Encrypted")})});
    const Member perms = L("IpPermissions", "IpPermissions",
                           {S("IpProtocol"), I("FromPort"), I("ToPort"),
                            L("IpRanges", "IpRanges", {S("CidrIp"), S("Description")}),
                            L("Ipv6Ranges", "Ipv6Ranges", {S("CidrIpv6"), S("Description")}),
                            L("PrefixListIds", "PrefixListIds", {S("PrefixListId"), S("Description")}),
                            L("UserIdGroupPairs", "Groups",
                              {S("GroupId"), S("GroupName"), S("UserId"), S("VpcId"), S("Description")})});
    const Member instance_ids = SL("InstanceIds", "InstanceId");
    auto* m = new std::map<std::string, std::vector<Member>>{
        {"RunInstances",
         {S("ImageId"), S("InstanceType"), I("MinCount"), I("MaxCount"), S("KeyName"),
          SL("SecurityGroupIds", "SecurityGroupId"), S("SubnetId"), S("UserData"), S("ClientToken"), B("DryRun"),
          B("EbsOptimized"), St("Placement", {S("AvailabilityZone"), S("Tenancy")}),
          St("MetadataOptions", {S("HttpTokens"), I("HttpPutResponseHopLimit"), S("HttpEndpoint")}),
          St("EnclaveOptions", {B("Enabled")}), bdm, tag_specs}},
        {"DescribeInstances", {filters, instance_ids, B("DryRun"), I("MaxResults"), S("NextToken")}},
        {"AuthorizeSecurityGroupIngress", {S("GroupId"), perms}},
        {"RevokeSecurityGroupEgress", {S("GroupId"), perms}},
        {"CreateTags", {SL("Resources", "ResourceId"), tags}},
        {"DeleteTags", {SL("Resources", "ResourceId"), tags}},
        {"StopInstances", {instance_ids, B("Force"), B("Hibernate")}},
        {"TerminateInstances", {instance_ids}},
        {"GetConsoleOutput", {S("InstanceId"), B("Latest")}},
        {"CreateVolume",
         {S("AvailabilityZone"), I("Size"), S("VolumeType"), I("Iops"), I("Throughput"), B("Encrypted"), tag_specs}},
        {"AttachVolume", {S("Device"), S("InstanceId"), S("VolumeId")}},
        {"DescribeVolumes", {SL("VolumeIds", "VolumeId"), filters}},
        {"RegisterImage",
         {S("Name"), S("Description"), S("Architecture"), S("RootDeviceName"), S("VirtualizationType"),
          B("EnaSupport"), S("BootMode"), S("TpmSupport"), S("ImdsSupport"), bdm}},
        {"DescribeImages", {SL("Owners", "Owner"), SL("ImageIds", "ImageId"), filters}},
        {"CreateVpc", {S("CidrBlock"), tag_specs}},
        {"CreateSubnet", {S("VpcId"), S("CidrBlock"), S("AvailabilityZone")}},
        {"CreateSecurityGroup", {S("GroupName"), S("Description", "GroupDescription"), S("VpcId"), tag_specs}},
        {"DescribeSecurityGroups", {SL("GroupIds", "GroupId"), SL("GroupNames", "GroupName"), filters}},
        {"DescribeInstanceStatus", {instance_ids, B("IncludeAllInstances"), I("MaxResults")}},
        {"DescribeInstanceTypes", {SL("InstanceTypes", "InstanceType"), filters}},
        {"DescribeAvailabilityZones", {SL("ZoneNames", "ZoneName"), B("AllAvailabilityZones")}},
        {"DescribeRegions", {SL("RegionNames", "RegionName"), B("AllRegions")}},
        {"DescribeTags", {filters, I("MaxResults")}},
    };
    return m;
  }();
  return *ops;
}

std::vector<json> botocore_requests() {
  const Ran r = run({kPython, AZOTE_EC2API_TOOL, "requests"});
  EXPECT_EQ(r.status, 0) << "botocore_tool.py requests failed";
  return json_lines(r.out);
}

TEST(Botocore, RequestsDecodeToWhatBotocoreWasGiven) {
  REQUIRE_BOTOCORE();
  const auto cases = botocore_requests();
  ASSERT_GE(cases.size(), 20u);
  for (const json& c : cases) {
    const std::string op = c["operation"];
    SCOPED_TRACE(c["case"].get<std::string>());
    const auto spec = operations().find(op);
    ASSERT_NE(spec, operations().end()) << "no description of " << op;
    for (const char* form : {"body", "query"}) {
      SCOPED_TRACE(form);
      auto p = Params::parse(c[form].get<std::string>());
      ASSERT_TRUE(p.ok()) << p.error().message;
      ASSERT_TRUE(p->check_action_version().ok());
      EXPECT_EQ(p->action(), op);
      auto decoded = decode(p->root(), spec->second);
      ASSERT_TRUE(decoded.ok()) << decoded.error().message;
      EXPECT_EQ(*decoded, c["input"]) << "decoded:  " << decoded->dump() << "\nbotocore: " << c["input"].dump();
      const auto all = p->check_all_used();
      EXPECT_TRUE(all.ok()) << all.error().message;
    }
  }
}

// The shared readers of request.hpp on the same bodies.
TEST(Botocore, SharedReadersOnBotocoreRequests) {
  REQUIRE_BOTOCORE();
  std::map<std::string, json> by_case;
  for (const json& c : botocore_requests()) by_case[c["case"]] = c;
  ASSERT_TRUE(by_case.count("run_instances") && by_case.count("authorize_ingress") &&
              by_case.count("describe_instances_filters") && by_case.count("delete_tags"));

  {
    const json& c = by_case["run_instances"];
    auto p = Params::parse(c["body"].get<std::string>());
    ASSERT_TRUE(p.ok());
    auto specs = read_tag_specifications(p->root());
    ASSERT_TRUE(specs.ok()) << specs.error().message;
    const json& in = c["input"]["TagSpecifications"];
    ASSERT_EQ(specs->size(), in.size());
    for (size_t i = 0; i < in.size(); ++i) {
      EXPECT_EQ(specs->at(i).resource_type, in[i]["ResourceType"]);
      ASSERT_EQ(specs->at(i).tags.size(), in[i]["Tags"].size());
      for (size_t k = 0; k < in[i]["Tags"].size(); ++k) {
        EXPECT_EQ(specs->at(i).tags[k].key, in[i]["Tags"][k]["Key"]);
        EXPECT_EQ(specs->at(i).tags[k].value, in[i]["Tags"][k]["Value"].get<std::string>());
      }
    }
    auto bdm = read_block_device_mappings(p->root());
    ASSERT_TRUE(bdm.ok()) << bdm.error().message;
    const json& bin = c["input"]["BlockDeviceMappings"];
    ASSERT_EQ(bdm->size(), bin.size());
    EXPECT_EQ(bdm->at(0).device_name, "/dev/xvda");
    EXPECT_EQ(bdm->at(0).ebs->volume_size, 20);
    EXPECT_EQ(bdm->at(0).ebs->encrypted, true);
    EXPECT_EQ(bdm->at(1).ebs->iops, 3000);
    EXPECT_EQ(bdm->at(1).ebs->delete_on_termination, false);
    EXPECT_EQ(bdm->at(1).ebs->kms_key_id, bin[1]["Ebs"]["KmsKeyId"]);
    EXPECT_FALSE(bdm->at(2).ebs.has_value());
    EXPECT_EQ(bdm->at(2).no_device, "");
  }
  {
    const json& c = by_case["authorize_ingress"];
    auto p = Params::parse(c["body"].get<std::string>());
    ASSERT_TRUE(p.ok());
    auto perms = read_ip_permissions(p->root());
    ASSERT_TRUE(perms.ok()) << perms.error().message;
    const json& in = c["input"]["IpPermissions"];
    ASSERT_EQ(perms->size(), in.size());
    EXPECT_EQ(perms->at(0).ip_protocol, "tcp");
    EXPECT_EQ(perms->at(0).from_port, 22);
    ASSERT_EQ(perms->at(0).ip_ranges.size(), 2u);
    EXPECT_EQ(perms->at(0).ip_ranges[0].description, in[0]["IpRanges"][0]["Description"]);
    EXPECT_EQ(perms->at(1).from_port, -1);
    ASSERT_EQ(perms->at(1).user_id_group_pairs.size(), 2u);
    EXPECT_EQ(perms->at(1).user_id_group_pairs[1].user_id, "123456789012");
    EXPECT_EQ(perms->at(2).ipv6_ranges.at(0).cidr_ipv6, "::/0");
    EXPECT_EQ(perms->at(2).prefix_list_ids.at(0).prefix_list_id, "pl-0123");
    EXPECT_FALSE(perms->at(2).from_port.has_value());
    EXPECT_EQ(p->get("GroupId"), "sg-0123");
    EXPECT_TRUE(p->check_all_used().ok());
  }
  {
    const json& c = by_case["describe_instances_filters"];
    auto p = Params::parse(c["body"].get<std::string>());
    ASSERT_TRUE(p.ok());
    auto f = read_filters(p->root());
    ASSERT_TRUE(f.ok());
    const json& in = c["input"]["Filters"];
    ASSERT_EQ(f->size(), in.size());
    for (size_t i = 0; i < in.size(); ++i) {
      EXPECT_EQ(f->at(i).name, in[i]["Name"]);
      EXPECT_EQ(json(f->at(i).values), in[i]["Values"]);
    }
  }
  {
    auto p = Params::parse(by_case["delete_tags"]["body"].get<std::string>());
    ASSERT_TRUE(p.ok());
    auto t = read_tags(p->root());
    ASSERT_TRUE(t.ok());
    ASSERT_EQ(t->size(), 2u);
    EXPECT_FALSE(t->at(0).value.has_value());  // a key alone: any value
    EXPECT_EQ(t->at(1).value, "prod");
  }
}

// ---------------------------------------------------------------------------------------
// Responses: documents written here, parsed by botocore.

struct Doc {
  std::string name;
  std::string operation;
  int status;
  std::string body;
};

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/ec2api_test.XXXXXX";
    const char* d = ::mkdtemp(tmpl);
    path_ = d ? d : "";
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// name -> {"parsed", "client", "problems"}; every document must have no problems.
std::map<std::string, json> botocore_parse(const std::vector<Doc>& docs) {
  std::map<std::string, json> out;
  TempDir dir;
  EXPECT_FALSE(dir.path().empty());
  std::ofstream manifest(dir.path() + "/manifest.jsonl");
  for (size_t i = 0; i < docs.size(); ++i) {
    const std::string file = dir.path() + "/" + std::to_string(i) + ".xml";
    std::ofstream(file, std::ios::binary) << docs[i].body;
    manifest << json{{"name", docs[i].name}, {"operation", docs[i].operation}, {"file", file},
                     {"status", docs[i].status}}
                    .dump()
             << "\n";
  }
  manifest.close();
  const Ran r = run({kPython, AZOTE_EC2API_TOOL, "parse", dir.path() + "/manifest.jsonl"});
  EXPECT_EQ(r.status, 0) << "botocore_tool.py parse failed";
  for (json& j : json_lines(r.out)) out[j["name"]] = j;
  EXPECT_EQ(out.size(), docs.size());
  for (const Doc& d : docs) {
    const auto it = out.find(d.name);
    if (it == out.end()) {
      ADD_FAILURE() << d.name << ": no answer from botocore_tool.py";
      continue;
    }
    EXPECT_TRUE(it->second["problems"].empty()) << d.name << ": " << it->second["problems"].dump(1) << "\n"
                                                << d.body;
  }
  return out;
}

Timestamp at(int y, unsigned mo, unsigned d, int h, int mi, int s, int ms = 0) {
  return Timestamp{sys_days{year{y} / month{mo} / day{d}} + hours{h} + minutes{mi} + seconds{s} + milliseconds{ms}};
}

const Timestamp kLaunch = at(2026, 12, 7, 21, 0, 0);

Instance sample_instance() {
  Instance i;
  i.instance_id = "i-0123456789abcdef0";
  i.image_id = "ami-0aaaaaaaaaaaaaaaa";
  i.state = instance_state(InstanceStateName::kRunning);
  i.private_dns_name = "ip-10-0-1-5.az1.compute.internal";
  i.key_name = "my key";
  i.instance_type = "t3.micro";
  i.launch_time = kLaunch;
  i.placement.availability_zone = "az1-a";
  i.subnet_id = "subnet-0123";
  i.vpc_id = "vpc-0123";
  i.private_ip_address = "10.0.1.5";
  i.state_reason = StateReason{"Client.UserInitiatedShutdown", "Client.UserInitiatedShutdown: by the user"};
  i.block_device_mappings = {{"/dev/xvda", {"vol-0root", "attached", kLaunch, true}}};
  i.client_token = "tok-1";
  i.tags = {{"Name", "web & db <1>"}, {"empty", ""}, {"lines", "one\r\ntwo\n"}};
  i.security_groups = {{"sg-0123", "default"}, {"sg-0456", "web"}};
  InstanceNetworkInterface n;
  n.network_interface_id = "eni-0123";
  n.subnet_id = "subnet-0123";
  n.vpc_id = "vpc-0123";
  n.owner_id = "123456789012";
  n.mac_address = "02:00:00:00:00:05";
  n.private_ip_address = "10.0.1.5";
  n.private_dns_name = i.private_dns_name;
  n.groups = i.security_groups;
  n.attachment = {"eni-attach-0123", 0, "attached", kLaunch, true, 0};
  i.network_interfaces = {n};
  i.cpu_options = CpuOptions{1, 2};
  i.metadata_options.http_tokens = "required";
  i.metadata_options.http_put_response_hop_limit = 2;
  i.enclave_options_enabled = true;
  i.boot_mode = "uefi";
  i.tpm_support = "v2.0";
  return i;
}

TEST(Botocore, InstanceResponses) {
  REQUIRE_BOTOCORE();
  const Instance i = sample_instance();
  Instance stopped = sample_instance();
  stopped.instance_id = "i-0fedcba9876543210";
  stopped.state = instance_state(InstanceStateName::kStopped);
  stopped.tags.clear();
  stopped.state_transition_reason = "User initiated (2026-12-07 21:05:00 GMT)";
  const Reservation r{"r-0123", "123456789012", "", {}, {i, stopped}};
  InstanceStatus st;
  st.instance_id = i.instance_id;
  st.availability_zone = "az1-a";
  st.instance_state = i.state;
  st.system_status.details[0].status = "failed";
  st.system_status.details[0].impaired_since = at(2026, 12, 7, 22, 0, 0);
  st.system_status.status = "impaired";
  const std::vector<InstanceStateChange> stopping{{i.instance_id, instance_state(InstanceStateName::kStopping),
                                                   instance_state(InstanceStateName::kRunning)}};
  const std::string console = "Linux version 6.1\r\nlogin: \x01\xff";
  const auto out = botocore_parse({
      {"run", "RunInstances", 200,
       run_instances_response("rid-run", Reservation{"r-0123", "123456789012", "", {}, {i}})},
      {"describe", "DescribeInstances", 200, describe_instances_response("rid-d", {r, r}, "next/page+1==")},
      {"describe_empty", "DescribeInstances", 200, describe_instances_response("rid-e", {})},
      {"start", "StartInstances", 200,
       start_instances_response("rid", {{i.instance_id, instance_state(InstanceStateName::kPending),
                                         instance_state(InstanceStateName::kStopped)}})},
      {"stop", "StopInstances", 200, stop_instances_response("rid", stopping)},
      {"terminate", "TerminateInstances", 200,
       terminate_instances_response("rid", {{i.instance_id, instance_state(InstanceStateName::kShuttingDown),
                                             instance_state(InstanceStateName::kRunning)}})},
      {"reboot", "RebootInstances", 200, return_response("RebootInstances", "rid-reboot")},
      {"status", "DescribeInstanceStatus", 200, describe_instance_status_response("rid", {st}, "tok2")},
      {"console", "GetConsoleOutput", 200, get_console_output_response("rid", i.instance_id, console, kLaunch)},
  });

  const json& run_p = out.at("run")["parsed"];
  EXPECT_EQ(run_p["ReservationId"], "r-0123");
  EXPECT_EQ(run_p["OwnerId"], "123456789012");
  EXPECT_EQ(run_p["Instances"][0]["InstanceId"], i.instance_id);
  EXPECT_EQ(run_p["ResponseMetadata"]["RequestId"], "rid-run");
  EXPECT_EQ(run_p["ResponseMetadata"]["HTTPStatusCode"], 200);

  const json& d = out.at("describe")["parsed"];
  EXPECT_EQ(d["NextToken"], "next/page+1==");
  ASSERT_EQ(d["Reservations"].size(), 2u);
  const json& in = d["Reservations"][0]["Instances"][0];
  EXPECT_EQ(d["Reservations"][0]["Instances"].size(), 2u);
  EXPECT_EQ(d["Reservations"][0]["Groups"], json::array());
  EXPECT_EQ(in["InstanceId"], i.instance_id);
  EXPECT_EQ(in["ImageId"], i.image_id);
  EXPECT_EQ(in["State"], json({{"Code", 16}, {"Name", "running"}}));
  EXPECT_EQ(d["Reservations"][0]["Instances"][1]["State"], json({{"Code", 80}, {"Name", "stopped"}}));
  EXPECT_EQ(d["Reservations"][0]["Instances"][1]["StateTransitionReason"], stopped.state_transition_reason);
  EXPECT_FALSE(d["Reservations"][0]["Instances"][1].contains("Tags"));
  EXPECT_EQ(in["PrivateDnsName"], i.private_dns_name);
  EXPECT_EQ(in["PublicDnsName"], "");
  EXPECT_EQ(in["StateTransitionReason"], "");
  EXPECT_FALSE(in.contains("PublicIpAddress"));
  EXPECT_EQ(in["PrivateIpAddress"], "10.0.1.5");
  EXPECT_EQ(in["KeyName"], "my key");
  EXPECT_EQ(in["AmiLaunchIndex"], 0);
  EXPECT_EQ(in["InstanceType"], "t3.micro");
  EXPECT_EQ(in["LaunchTime"], "2026-12-07T21:00:00+00:00");
  EXPECT_EQ(in["Placement"]["AvailabilityZone"], "az1-a");
  EXPECT_EQ(in["Placement"]["Tenancy"], "default");
  EXPECT_EQ(in["Monitoring"]["State"], "disabled");
  EXPECT_EQ(in["SubnetId"], "subnet-0123");
  EXPECT_EQ(in["VpcId"], "vpc-0123");
  EXPECT_EQ(in["StateReason"]["Code"], "Client.UserInitiatedShutdown");
  EXPECT_EQ(in["Tags"], json::parse(R"([{"Key":"Name","Value":"web & db <1>"},{"Key":"empty","Value":""},
                                        {"Key":"lines","Value":"one\r\ntwo\n"}])"));
  EXPECT_EQ(in["SecurityGroups"][1], json({{"GroupId", "sg-0456"}, {"GroupName", "web"}}));
  EXPECT_EQ(in["BlockDeviceMappings"][0]["DeviceName"], "/dev/xvda");
  EXPECT_EQ(in["BlockDeviceMappings"][0]["Ebs"]["VolumeId"], "vol-0root");
  EXPECT_EQ(in["BlockDeviceMappings"][0]["Ebs"]["DeleteOnTermination"], true);
  EXPECT_EQ(in["BlockDeviceMappings"][0]["Ebs"]["AttachTime"], "2026-12-07T21:00:00+00:00");
  const json& eni = in["NetworkInterfaces"][0];
  EXPECT_EQ(eni["NetworkInterfaceId"], "eni-0123");
  EXPECT_EQ(eni["MacAddress"], "02:00:00:00:00:05");
  EXPECT_EQ(eni["Attachment"]["DeviceIndex"], 0);
  EXPECT_EQ(eni["Attachment"]["AttachmentId"], "eni-attach-0123");
  EXPECT_EQ(eni["PrivateIpAddresses"][0]["Primary"], true);
  EXPECT_EQ(eni["Groups"][0]["GroupId"], "sg-0123");
  EXPECT_EQ(eni["SourceDestCheck"], true);
  EXPECT_EQ(in["ClientToken"], "tok-1");
  EXPECT_EQ(in["SourceDestCheck"], true);
  EXPECT_EQ(in["EbsOptimized"], false);
  EXPECT_EQ(in["EnaSupport"], true);
  EXPECT_EQ(in["Hypervisor"], "xen");
  EXPECT_EQ(in["VirtualizationType"], "hvm");
  EXPECT_EQ(in["Architecture"], "x86_64");
  EXPECT_EQ(in["RootDeviceType"], "ebs");
  EXPECT_EQ(in["RootDeviceName"], "/dev/xvda");
  EXPECT_EQ(in["CpuOptions"], json({{"CoreCount", 1}, {"ThreadsPerCore", 2}}));
  EXPECT_EQ(in["MetadataOptions"]["HttpTokens"], "required");
  EXPECT_EQ(in["MetadataOptions"]["HttpPutResponseHopLimit"], 2);
  EXPECT_EQ(in["MetadataOptions"]["State"], "applied");
  EXPECT_EQ(in["EnclaveOptions"]["Enabled"], true);
  EXPECT_EQ(in["HibernationOptions"]["Configured"], false);
  EXPECT_EQ(in["BootMode"], "uefi");
  EXPECT_EQ(in["TpmSupport"], "v2.0");
  EXPECT_EQ(in["PlatformDetails"], "Linux/UNIX");
  // The client's view is the parser's (DescribeInstances has no customization).
  EXPECT_EQ(out.at("describe")["client"]["Reservations"], d["Reservations"]);

  EXPECT_EQ(out.at("describe_empty")["parsed"]["Reservations"], json::array());
  EXPECT_FALSE(out.at("describe_empty")["parsed"].contains("NextToken"));

  const json& start = out.at("start")["parsed"]["StartingInstances"][0];
  EXPECT_EQ(start["InstanceId"], i.instance_id);
  EXPECT_EQ(start["CurrentState"], json({{"Code", 0}, {"Name", "pending"}}));
  EXPECT_EQ(start["PreviousState"], json({{"Code", 80}, {"Name", "stopped"}}));
  EXPECT_EQ(out.at("stop")["parsed"]["StoppingInstances"][0]["CurrentState"]["Name"], "stopping");
  EXPECT_EQ(out.at("stop")["parsed"]["StoppingInstances"][0]["CurrentState"]["Code"], 64);
  EXPECT_EQ(out.at("terminate")["parsed"]["TerminatingInstances"][0]["CurrentState"]["Code"], 32);
  EXPECT_EQ(out.at("reboot")["parsed"]["ResponseMetadata"]["RequestId"], "rid-reboot");
  EXPECT_EQ(out.at("reboot")["client"]["ResponseMetadata"]["HTTPStatusCode"], 200);

  const json& s = out.at("status")["parsed"];
  EXPECT_EQ(s["NextToken"], "tok2");
  EXPECT_EQ(s["InstanceStatuses"][0]["InstanceId"], i.instance_id);
  EXPECT_EQ(s["InstanceStatuses"][0]["InstanceState"]["Name"], "running");
  EXPECT_EQ(s["InstanceStatuses"][0]["InstanceStatus"]["Status"], "ok");
  EXPECT_EQ(s["InstanceStatuses"][0]["InstanceStatus"]["Details"][0],
            json({{"Name", "reachability"}, {"Status", "passed"}}));
  EXPECT_EQ(s["InstanceStatuses"][0]["SystemStatus"]["Status"], "impaired");
  EXPECT_EQ(s["InstanceStatuses"][0]["SystemStatus"]["Details"][0]["ImpairedSince"], "2026-12-07T22:00:00+00:00");

  // The parser sees base64; the client (botocore's GetConsoleOutput handler, as the CLI)
  // decodes it to text.
  const json& c = out.at("console");
  EXPECT_EQ(c["parsed"]["Output"], base64_encode(console));
  EXPECT_EQ(c["parsed"]["InstanceId"], i.instance_id);
  EXPECT_EQ(c["parsed"]["Timestamp"], "2026-12-07T21:00:00+00:00");
  EXPECT_EQ(c["client"]["Output"], "Linux version 6.1\r\nlogin: \x01\uFFFD");
}

TEST(Botocore, VolumeResponses) {
  REQUIRE_BOTOCORE();
  Volume v;
  v.volume_id = "vol-0123";
  v.size = 100;
  v.availability_zone = "az1-a";
  v.state = "in-use";
  v.create_time = at(2026, 12, 7, 20, 0, 0, 123);
  v.volume_type = "io2";
  v.iops = 4000;
  v.encrypted = true;
  v.kms_key_id = "arn:aws:kms:az1:123456789012:key/k";
  v.attachments = {{"vol-0123", "i-0123", "/dev/sdf", "attached", kLaunch, false}};
  v.tags = {{"Name", "data"}};
  Volume fresh;
  fresh.volume_id = "vol-0456";
  fresh.size = 8;
  fresh.availability_zone = "az1-a";
  fresh.state = "creating";
  fresh.throughput = 125;
  const VolumeAttachment attaching{"vol-0456", "i-0123", "/dev/sdg", "attaching", kLaunch, std::nullopt};
  const auto out = botocore_parse({
      {"create", "CreateVolume", 200, create_volume_response("rid", fresh)},
      {"describe", "DescribeVolumes", 200, describe_volumes_response("rid", {v, fresh}, "vtok")},
      {"attach", "AttachVolume", 200, attach_volume_response("rid", attaching)},
      {"detach", "DetachVolume", 200,
       detach_volume_response("rid", VolumeAttachment{"vol-0123", "i-0123", "/dev/sdf", "detaching", kLaunch, {}})},
      {"delete", "DeleteVolume", 200, return_response("DeleteVolume", "rid-del")},
  });
  const json& c = out.at("create")["parsed"];
  EXPECT_EQ(c["VolumeId"], "vol-0456");
  EXPECT_EQ(c["Size"], 8);
  EXPECT_EQ(c["State"], "creating");
  EXPECT_EQ(c["SnapshotId"], "");
  EXPECT_EQ(c["Attachments"], json::array());
  EXPECT_EQ(c["Throughput"], 125);
  EXPECT_EQ(c["VolumeType"], "gp3");
  EXPECT_EQ(c["Encrypted"], false);
  EXPECT_EQ(c["MultiAttachEnabled"], false);
  const json& d = out.at("describe")["parsed"];
  EXPECT_EQ(d["NextToken"], "vtok");
  const json& v0 = d["Volumes"][0];
  EXPECT_EQ(v0["CreateTime"], "2026-12-07T20:00:00.123000+00:00");
  EXPECT_EQ(v0["Iops"], 4000);
  EXPECT_EQ(v0["Encrypted"], true);
  EXPECT_EQ(v0["KmsKeyId"], v.kms_key_id);
  EXPECT_EQ(v0["Tags"][0], json({{"Key", "Name"}, {"Value", "data"}}));
  const json& a = v0["Attachments"][0];
  EXPECT_EQ(a["VolumeId"], "vol-0123");
  EXPECT_EQ(a["InstanceId"], "i-0123");
  EXPECT_EQ(a["Device"], "/dev/sdf");
  EXPECT_EQ(a["State"], "attached");
  EXPECT_EQ(a["DeleteOnTermination"], false);
  EXPECT_EQ(a["AttachTime"], "2026-12-07T21:00:00+00:00");
  EXPECT_EQ(out.at("attach")["parsed"]["State"], "attaching");
  EXPECT_EQ(out.at("attach")["parsed"]["Device"], "/dev/sdg");
  EXPECT_FALSE(out.at("attach")["parsed"].contains("DeleteOnTermination"));
  EXPECT_EQ(out.at("detach")["parsed"]["State"], "detaching");
  EXPECT_EQ(out.at("delete")["parsed"]["ResponseMetadata"]["RequestId"], "rid-del");
}

TEST(Botocore, ImageTypeZoneRegionResponses) {
  REQUIRE_BOTOCORE();
  Image img;
  img.image_id = "ami-0123";
  img.owner_id = "123456789012";
  img.creation_date = at(2026, 1, 2, 3, 4, 5);
  img.name = "debian-12-azote";
  img.description = "Debian 12 for azote";
  img.boot_mode = "uefi";
  img.tpm_support = "v2.0";
  img.imds_support = "v2.0";
  EbsBlockDevice ebs;
  ebs.snapshot_id = "snap-0123";
  ebs.volume_size = 8;
  ebs.volume_type = "gp3";
  ebs.delete_on_termination = true;
  ebs.encrypted = false;
  img.block_device_mappings = {{"/dev/xvda", "", "", ebs}, {"/dev/sdb", "ephemeral0", "", std::nullopt}};
  img.tags = {{"os", "debian"}};
  InstanceTypeInfo t;
  t.instance_type = "t3.micro";
  t.free_tier_eligible = true;
  t.default_vcpus = 2;
  t.default_cores = 1;
  t.default_threads_per_core = 2;
  t.memory_mib = 1024;
  t.sustained_clock_speed_ghz = 2.5;
  t.network_performance = "Up to 5 Gigabit";
  t.maximum_network_interfaces = 2;
  t.ipv4_addresses_per_interface = 2;
  t.burstable_performance_supported = true;
  AvailabilityZone z;
  z.zone_name = "az1-a";
  z.zone_id = "az1-az1";
  z.region_name = "az1";
  z.group_name = "az1";
  z.network_border_group = "az1";
  z.messages = {"all good"};
  const auto out = botocore_parse({
      {"images", "DescribeImages", 200, describe_images_response("rid", {img})},
      {"register", "RegisterImage", 200, register_image_response("rid", "ami-0456")},
      {"deregister", "DeregisterImage", 200, return_response("DeregisterImage", "rid")},
      {"types", "DescribeInstanceTypes", 200, describe_instance_types_response("rid", {t}, "ttok")},
      {"zones", "DescribeAvailabilityZones", 200, describe_availability_zones_response("rid", {z})},
      {"regions", "DescribeRegions", 200,
       describe_regions_response("rid", {{"az1", "ec2.az1.example", "opt-in-not-required"}})},
  });
  const json& im = out.at("images")["parsed"]["Images"][0];
  EXPECT_EQ(im["ImageId"], "ami-0123");
  EXPECT_EQ(im["OwnerId"], "123456789012");
  EXPECT_EQ(im["CreationDate"], "2026-01-02T03:04:05.000Z");  // a string in the model
  EXPECT_EQ(im["State"], "available");
  EXPECT_EQ(im["Public"], false);
  EXPECT_EQ(im["Name"], "debian-12-azote");
  EXPECT_EQ(im["ImageType"], "machine");
  EXPECT_EQ(im["BootMode"], "uefi");
  EXPECT_EQ(im["TpmSupport"], "v2.0");
  EXPECT_EQ(im["ImdsSupport"], "v2.0");
  EXPECT_EQ(im["EnaSupport"], true);
  EXPECT_EQ(im["BlockDeviceMappings"][0]["Ebs"],
            json({{"SnapshotId", "snap-0123"}, {"VolumeSize", 8}, {"VolumeType", "gp3"},
                  {"DeleteOnTermination", true}, {"Encrypted", false}}));
  EXPECT_EQ(im["BlockDeviceMappings"][1], json({{"DeviceName", "/dev/sdb"}, {"VirtualName", "ephemeral0"}}));
  EXPECT_EQ(im["Tags"][0]["Value"], "debian");
  EXPECT_EQ(out.at("register")["parsed"]["ImageId"], "ami-0456");
  const json& ty = out.at("types")["parsed"];
  EXPECT_EQ(ty["NextToken"], "ttok");
  const json& t0 = ty["InstanceTypes"][0];
  EXPECT_EQ(t0["InstanceType"], "t3.micro");
  EXPECT_EQ(t0["VCpuInfo"], json({{"DefaultVCpus", 2}, {"DefaultCores", 1}, {"DefaultThreadsPerCore", 2}}));
  EXPECT_EQ(t0["MemoryInfo"]["SizeInMiB"], 1024);
  EXPECT_EQ(t0["ProcessorInfo"]["SupportedArchitectures"], json({"x86_64"}));
  EXPECT_EQ(t0["ProcessorInfo"]["SustainedClockSpeedInGhz"], 2.5);
  EXPECT_EQ(t0["SupportedUsageClasses"], json({"on-demand"}));
  EXPECT_EQ(t0["SupportedBootModes"], json({"legacy-bios", "uefi"}));
  EXPECT_EQ(t0["NetworkInfo"]["NetworkPerformance"], "Up to 5 Gigabit");
  EXPECT_EQ(t0["NetworkInfo"]["EnaSupport"], "required");
  EXPECT_EQ(t0["EbsInfo"]["NvmeSupport"], "required");
  EXPECT_EQ(t0["FreeTierEligible"], true);
  EXPECT_EQ(t0["BurstablePerformanceSupported"], true);
  EXPECT_EQ(t0["Hypervisor"], "nitro");
  const json& z0 = out.at("zones")["parsed"]["AvailabilityZones"][0];
  EXPECT_EQ(z0["ZoneName"], "az1-a");
  EXPECT_EQ(z0["ZoneId"], "az1-az1");
  EXPECT_EQ(z0["State"], "available");
  EXPECT_EQ(z0["RegionName"], "az1");
  EXPECT_EQ(z0["Messages"], json::parse(R"([{"Message":"all good"}])"));
  EXPECT_EQ(z0["OptInStatus"], "opt-in-not-required");
  EXPECT_EQ(z0["ZoneType"], "availability-zone");
  EXPECT_EQ(out.at("regions")["parsed"]["Regions"][0],
            json({{"RegionName", "az1"}, {"Endpoint", "ec2.az1.example"}, {"OptInStatus", "opt-in-not-required"}}));
}

TEST(Botocore, NetworkResponses) {
  REQUIRE_BOTOCORE();
  Vpc vpc;
  vpc.vpc_id = "vpc-0123";
  vpc.owner_id = "123456789012";
  vpc.cidr_block = "10.0.0.0/16";
  vpc.is_default = true;
  vpc.cidr_block_associations = {{"vpc-cidr-assoc-0123", "10.0.0.0/16", "associated"}};
  vpc.tags = {{"Name", "default"}};
  Subnet sn;
  sn.subnet_id = "subnet-0123";
  sn.vpc_id = vpc.vpc_id;
  sn.owner_id = vpc.owner_id;
  sn.cidr_block = "10.0.1.0/24";
  sn.availability_zone = "az1-a";
  sn.availability_zone_id = "az1-az1";
  sn.available_ip_address_count = 251;
  sn.default_for_az = true;
  sn.subnet_arn = "arn:aws:ec2:az1:123456789012:subnet/subnet-0123";
  IpPermission ssh;
  ssh.ip_protocol = "tcp";
  ssh.from_port = 22;
  ssh.to_port = 22;
  ssh.ip_ranges = {{"10.0.0.0/16", "ssh from the VPC"}, {"192.168.0.0/24", ""}};
  ssh.user_id_group_pairs = {{"sg-0456", "", "123456789012", "", "peers"}};
  IpPermission all;
  all.ip_protocol = "-1";
  all.ip_ranges = {{"0.0.0.0/0", ""}};
  all.ipv6_ranges = {{"::/0", "v6"}};
  all.prefix_list_ids = {{"pl-0123", ""}};
  SecurityGroup sg{"sg-0123", "web", "web servers", "123456789012", "vpc-0123", {ssh}, {all}, {{"team", "ops"}}};
  SecurityGroupRule rule;
  rule.security_group_rule_id = "sgr-0123";
  rule.group_id = "sg-0123";
  rule.group_owner_id = "123456789012";
  rule.ip_protocol = "tcp";
  rule.from_port = 22;
  rule.to_port = 22;
  rule.cidr_ipv4 = "10.0.0.0/16";
  rule.description = "ssh";
  SecurityGroupRule ref = rule;
  ref.security_group_rule_id = "sgr-0456";
  ref.cidr_ipv4.clear();
  ref.referenced_group_id = "sg-0456";
  ref.is_egress = true;
  const auto out = botocore_parse({
      {"create_vpc", "CreateVpc", 200, create_vpc_response("rid", vpc)},
      {"vpcs", "DescribeVpcs", 200, describe_vpcs_response("rid", {vpc}, "")},
      {"delete_vpc", "DeleteVpc", 200, return_response("DeleteVpc", "rid")},
      {"create_subnet", "CreateSubnet", 200, create_subnet_response("rid", sn)},
      {"subnets", "DescribeSubnets", 200, describe_subnets_response("rid", {sn}, "stok")},
      {"create_sg", "CreateSecurityGroup", 200, create_security_group_response("rid", "sg-0123", {{"team", "ops"}})},
      {"sgs", "DescribeSecurityGroups", 200, describe_security_groups_response("rid", {sg}, "gtok")},
      {"authorize", "AuthorizeSecurityGroupIngress", 200,
       authorize_security_group_response("AuthorizeSecurityGroupIngress", "rid", {rule})},
      {"authorize_egress", "AuthorizeSecurityGroupEgress", 200,
       authorize_security_group_response("AuthorizeSecurityGroupEgress", "rid", {ref})},
      {"revoke", "RevokeSecurityGroupIngress", 200,
       revoke_security_group_response("RevokeSecurityGroupIngress", "rid", {})},
      {"revoke_unknown", "RevokeSecurityGroupEgress", 200,
       revoke_security_group_response("RevokeSecurityGroupEgress", "rid", {all})},
      {"delete_sg", "DeleteSecurityGroup", 200, return_response("DeleteSecurityGroup", "rid")},
  });
  const json& v = out.at("create_vpc")["parsed"]["Vpc"];
  EXPECT_EQ(v["VpcId"], "vpc-0123");
  EXPECT_EQ(v["CidrBlock"], "10.0.0.0/16");
  EXPECT_EQ(v["State"], "available");
  EXPECT_EQ(v["IsDefault"], true);
  EXPECT_EQ(v["DhcpOptionsId"], "default");
  EXPECT_EQ(v["InstanceTenancy"], "default");
  EXPECT_EQ(v["CidrBlockAssociationSet"][0]["CidrBlockState"]["State"], "associated");
  EXPECT_EQ(v["Tags"][0]["Key"], "Name");
  EXPECT_EQ(out.at("vpcs")["parsed"]["Vpcs"][0], v);
  EXPECT_FALSE(out.at("vpcs")["parsed"].contains("NextToken"));
  const json& s = out.at("create_subnet")["parsed"]["Subnet"];
  EXPECT_EQ(s["SubnetId"], "subnet-0123");
  EXPECT_EQ(s["AvailableIpAddressCount"], 251);
  EXPECT_EQ(s["DefaultForAz"], true);
  EXPECT_EQ(s["MapPublicIpOnLaunch"], false);
  EXPECT_EQ(s["AvailabilityZoneId"], "az1-az1");
  EXPECT_EQ(s["SubnetArn"], sn.subnet_arn);
  EXPECT_EQ(s["Ipv6CidrBlockAssociationSet"], json::array());
  EXPECT_EQ(out.at("subnets")["parsed"]["Subnets"][0], s);
  EXPECT_EQ(out.at("subnets")["parsed"]["NextToken"], "stok");
  EXPECT_EQ(out.at("create_sg")["parsed"]["GroupId"], "sg-0123");
  EXPECT_EQ(out.at("create_sg")["parsed"]["Tags"][0]["Value"], "ops");
  const json& g = out.at("sgs")["parsed"]["SecurityGroups"][0];
  EXPECT_EQ(out.at("sgs")["parsed"]["NextToken"], "gtok");
  EXPECT_EQ(g["GroupId"], "sg-0123");
  EXPECT_EQ(g["GroupName"], "web");
  EXPECT_EQ(g["Description"], "web servers");
  EXPECT_EQ(g["VpcId"], "vpc-0123");
  EXPECT_EQ(g["OwnerId"], "123456789012");
  const json& in = g["IpPermissions"][0];
  EXPECT_EQ(in["IpProtocol"], "tcp");
  EXPECT_EQ(in["FromPort"], 22);
  EXPECT_EQ(in["ToPort"], 22);
  EXPECT_EQ(in["IpRanges"], json::parse(R"([{"CidrIp":"10.0.0.0/16","Description":"ssh from the VPC"},
                                           {"CidrIp":"192.168.0.0/24"}])"));
  EXPECT_EQ(in["UserIdGroupPairs"],
            json::parse(R"([{"GroupId":"sg-0456","UserId":"123456789012","Description":"peers"}])"));
  EXPECT_EQ(in["Ipv6Ranges"], json::array());
  EXPECT_EQ(in["PrefixListIds"], json::array());
  const json& eg = g["IpPermissionsEgress"][0];
  EXPECT_EQ(eg["IpProtocol"], "-1");
  EXPECT_FALSE(eg.contains("FromPort"));
  EXPECT_EQ(eg["Ipv6Ranges"][0]["CidrIpv6"], "::/0");
  EXPECT_EQ(eg["PrefixListIds"][0]["PrefixListId"], "pl-0123");
  EXPECT_EQ(g["Tags"][0]["Key"], "team");
  const json& a = out.at("authorize")["parsed"];
  EXPECT_EQ(a["Return"], true);
  EXPECT_EQ(a["SecurityGroupRules"][0]["SecurityGroupRuleId"], "sgr-0123");
  EXPECT_EQ(a["SecurityGroupRules"][0]["CidrIpv4"], "10.0.0.0/16");
  EXPECT_EQ(a["SecurityGroupRules"][0]["IsEgress"], false);
  EXPECT_EQ(a["SecurityGroupRules"][0]["FromPort"], 22);
  const json& ae = out.at("authorize_egress")["parsed"]["SecurityGroupRules"][0];
  EXPECT_EQ(ae["IsEgress"], true);
  EXPECT_EQ(ae["ReferencedGroupInfo"]["GroupId"], "sg-0456");
  EXPECT_FALSE(ae.contains("CidrIpv4"));
  EXPECT_EQ(out.at("revoke")["parsed"]["Return"], true);
  EXPECT_FALSE(out.at("revoke")["parsed"].contains("UnknownIpPermissions"));
  EXPECT_EQ(out.at("revoke_unknown")["parsed"]["UnknownIpPermissions"][0]["IpRanges"][0]["CidrIp"], "0.0.0.0/0");
}

TEST(Botocore, TagResponses) {
  REQUIRE_BOTOCORE();
  const auto out = botocore_parse({
      {"describe", "DescribeTags", 200,
       describe_tags_response("rid", {{"i-0123", "instance", "Name", "web"}, {"vol-0123", "volume", "empty", ""}},
                              "tagtok")},
      {"create", "CreateTags", 200, return_response("CreateTags", "rid-c")},
      {"delete", "DeleteTags", 200, return_response("DeleteTags", "rid-d")},
  });
  const json& d = out.at("describe")["parsed"];
  EXPECT_EQ(d["NextToken"], "tagtok");
  EXPECT_EQ(d["Tags"], json::parse(R"([{"ResourceId":"i-0123","ResourceType":"instance","Key":"Name","Value":"web"},
                                       {"ResourceId":"vol-0123","ResourceType":"volume","Key":"empty","Value":""}])"));
  EXPECT_EQ(out.at("create")["client"]["ResponseMetadata"]["RequestId"], "rid-c");
  EXPECT_EQ(out.at("delete")["client"]["ResponseMetadata"]["RequestId"], "rid-d");
}

TEST(Botocore, ErrorDocuments) {
  REQUIRE_BOTOCORE();
  const std::vector<Ec2Error> errors = {
      {"InvalidParameterValue", "Invalid value 'x' for parameter MaxResults: expected an integer"},
      {"InvalidInstanceID.NotFound", "The instance ID 'i-1' does not exist & never <did>"},
      {"UnknownParameter", "The parameter Filter.1.Nme is not recognized"},
      {"AuthFailure", "AWS was not able to validate the provided access credentials"},
      {"UnauthorizedOperation", "You are not authorized to perform this operation."},
      {"DryRunOperation", "Request would have succeeded, but DryRun flag is set."},
      {"RequestLimitExceeded", "Request limit exceeded."},
      {"Unavailable", "The server is overloaded"},
      {"InternalError", "An internal error has occurred \u2014 sorry"},
  };
  std::vector<Doc> docs;
  for (size_t i = 0; i < errors.size(); ++i) {
    const Reply r = error_reply(errors[i], "req-" + std::to_string(i));
    docs.push_back({errors[i].code, "DescribeInstances", r.status, r.body});
  }
  const auto out = botocore_parse(docs);
  for (size_t i = 0; i < errors.size(); ++i) {
    SCOPED_TRACE(errors[i].code);
    const json& p = out.at(errors[i].code)["parsed"];
    EXPECT_EQ(p["Error"]["Code"], errors[i].code);
    EXPECT_EQ(p["Error"]["Message"], errors[i].message);
    EXPECT_EQ(p["ResponseMetadata"]["RequestId"], "req-" + std::to_string(i));
    EXPECT_EQ(p["ResponseMetadata"]["HTTPStatusCode"], errors[i].http_status());
    // A client call fails with ClientError carrying the same.
    const json& c = out.at(errors[i].code)["client"]["ClientError"];
    EXPECT_EQ(c["Error"]["Code"], errors[i].code);
    EXPECT_EQ(c["Error"]["Message"], errors[i].message);
    EXPECT_EQ(c["ResponseMetadata"]["HTTPStatusCode"], errors[i].http_status());
  }
}

// The checks above rest on the tool telling a misspelled element from a right one: a
// botocore parse alone drops unknown elements silently.
TEST(Botocore, MisspelledElementsAreCaught) {
  REQUIRE_BOTOCORE();
  const std::string good = describe_instances_response("rid", {Reservation{"r-1", "1", "", {}, {sample_instance()}}});
  auto replace = [&](const std::string& from, const std::string& to) {
    std::string s = good;
    const size_t at1 = s.find("<" + from + ">");
    const size_t at2 = s.find("</" + from + ">");
    EXPECT_NE(at1, std::string::npos) << from;
    if (at1 == std::string::npos || at2 == std::string::npos) return s;
    s.replace(at2 + 2, from.size(), to);
    s.replace(at1 + 1, from.size(), to);
    return s;
  };
  Doc bad_member{"member", "DescribeInstances", 200, replace("instanceState", "instanceStatus")};
  Doc bad_item{"item", "DescribeInstances", 200, good};  // a tag's <item> as <member>
  const size_t tag_item = bad_item.body.find("<tagSet><item>") + 8;
  bad_item.body.replace(bad_item.body.find("</item>", tag_item), 7, "</member>");
  bad_item.body.replace(tag_item, 6, "<member>");
  Doc bad_bool{"bool", "DescribeInstances", 200, good};
  bad_bool.body.replace(bad_bool.body.find("<sourceDestCheck>true<"), 22, "<sourceDestCheck>True<");
  Doc bad_time{"time", "DescribeInstances", 200, good};
  bad_time.body.replace(bad_time.body.find(".000Z</launchTime>"), 5, "Z");
  // botocore_parse expects no problems; here every document must have one.
  TempDir dir;
  std::ofstream manifest(dir.path() + "/m.jsonl");
  int n = 0;
  for (const Doc& d : {bad_member, bad_item, bad_bool, bad_time}) {
    const std::string file = dir.path() + "/" + std::to_string(n++) + ".xml";
    std::ofstream(file) << d.body;
    manifest << json{{"name", d.name}, {"operation", d.operation}, {"file", file}, {"status", 200}}.dump() << "\n";
  }
  manifest.close();
  const Ran r = run({kPython, AZOTE_EC2API_TOOL, "parse", dir.path() + "/m.jsonl"});
  ASSERT_EQ(r.status, 0);
  const auto lines = json_lines(r.out);
  ASSERT_EQ(lines.size(), 4u);
  for (const json& l : lines) {
    SCOPED_TRACE(l["name"].get<std::string>());
    EXPECT_FALSE(l["problems"].empty());
  }
  // And botocore itself silently lost the state:
  EXPECT_FALSE(lines[0]["parsed"]["Reservations"][0]["Instances"][0].contains("State"));
}

// ---------------------------------------------------------------------------------------
// The real CLI, /usr/bin/aws (aws-cli v2 on Debian's botocore), against a loopback server
// answering with these documents: what it prints, and what it sent, decoded here.

struct CliCase {
  std::string name;
  int status;
  std::string body;
  std::vector<std::string> argv;  // after "aws ec2"
};

std::map<std::string, json> run_cli(const std::vector<CliCase>& cases) {
  std::map<std::string, json> out;
  TempDir dir;
  std::ofstream manifest(dir.path() + "/cli.jsonl");
  for (size_t i = 0; i < cases.size(); ++i) {
    const std::string file = dir.path() + "/" + std::to_string(i) + ".xml";
    std::ofstream(file, std::ios::binary) << cases[i].body;
    manifest << json{{"name", cases[i].name}, {"file", file}, {"status", cases[i].status}, {"argv", cases[i].argv}}
                    .dump()
             << "\n";
  }
  manifest.close();
  const Ran r = run({kPython, AZOTE_EC2API_TOOL, "cli", dir.path() + "/cli.jsonl"});
  EXPECT_EQ(r.status, 0) << "botocore_tool.py cli failed";
  for (json& j : json_lines(r.out)) out[j["name"]] = j;
  EXPECT_EQ(out.size(), cases.size());
  return out;
}

TEST(AwsCli, CommandsAgainstTheseDocuments) {
  REQUIRE_BOTOCORE();
  if (::access("/usr/bin/aws", X_OK) != 0) GTEST_SKIP() << "SKIPPED: needs /usr/bin/aws (apt-get install awscli)";
  const Instance i = sample_instance();
  const Reservation r{"r-0123", "123456789012", "", {}, {i}};
  const auto out = run_cli({
      {"run",
       200,
       run_instances_response("rid", r),
       {"run-instances", "--image-id", "ami-0aaaaaaaaaaaaaaaa", "--count", "2", "--instance-type", "t3.micro",
        "--security-group-ids", "sg-0123", "sg-0456", "--tag-specifications",
        "ResourceType=instance,Tags=[{Key=Name,Value=web server},{Key=env,Value=prod}]", "--block-device-mappings",
        "DeviceName=/dev/xvda,Ebs={VolumeSize=20,VolumeType=gp3}", "--metadata-options", "HttpTokens=required"}},
      {"describe", 200, describe_instances_response("rid", {r}),
       {"describe-instances", "--filters", "Name=instance-state-name,Values=running,stopped",
        "Name=tag:env,Values=prod"}},
      {"console", 200, get_console_output_response("rid", i.instance_id, "login: \n", kLaunch),
       {"get-console-output", "--instance-id", i.instance_id}},
      {"ingress",
       200,
       authorize_security_group_response("AuthorizeSecurityGroupIngress", "rid", {}),
       {"authorize-security-group-ingress", "--group-id", "sg-0123", "--protocol", "tcp", "--port", "22-23", "--cidr",
        "10.0.0.0/16"}},
      {"error",
       400,
       error_reply(Ec2Error{"InvalidInstanceID.NotFound", "The instance ID 'i-9' does not exist"}, "rid").body,
       {"terminate-instances", "--instance-ids", "i-9"}},
  });

  const json& run_o = out.at("run");
  ASSERT_EQ(run_o["rc"], 0) << run_o["stderr"];
  EXPECT_EQ(run_o["stdout"]["Instances"][0]["State"]["Name"], "running");
  EXPECT_EQ(run_o["stdout"]["Instances"][0]["LaunchTime"], "2026-12-07T21:00:00+00:00");
  EXPECT_EQ(run_o["stdout"]["ReservationId"], "r-0123");
  auto p = Params::parse(run_o["body"].get<std::string>());
  ASSERT_TRUE(p.ok()) << p.error().message;
  EXPECT_EQ(p->action(), "RunInstances");
  EXPECT_EQ(p->get("ImageId"), "ami-0aaaaaaaaaaaaaaaa");
  EXPECT_EQ(p->get("InstanceType"), "t3.micro");
  // botocore fills the model's idempotency token itself: every run-instances has one.
  EXPECT_EQ(p->get("ClientToken").value_or("").size(), 36u);
  EXPECT_EQ(p->get_int("MinCount").value(), 2);
  EXPECT_EQ(p->get_int("MaxCount").value(), 2);
  EXPECT_EQ(strs(p->strings("SecurityGroupId")), (std::vector<std::string>{"sg-0123", "sg-0456"}));
  auto specs = read_tag_specifications(p->root());
  ASSERT_TRUE(specs.ok());
  ASSERT_EQ(specs->size(), 1u);
  EXPECT_EQ(specs->at(0).resource_type, "instance");
  ASSERT_EQ(specs->at(0).tags.size(), 2u);
  EXPECT_EQ(specs->at(0).tags[0].value, "web server");
  auto bdm = read_block_device_mappings(p->root());
  ASSERT_TRUE(bdm.ok());
  ASSERT_EQ(bdm->size(), 1u);
  EXPECT_EQ(bdm->at(0).ebs->volume_size, 20);
  EXPECT_EQ(p->root().sub("MetadataOptions").get("HttpTokens"), "required");
  EXPECT_TRUE(p->check_all_used().ok()) << p->check_all_used().error().message;

  const json& d = out.at("describe");
  ASSERT_EQ(d["rc"], 0) << d["stderr"];
  EXPECT_EQ(d["stdout"]["Reservations"][0]["Instances"][0]["InstanceId"], i.instance_id);
  EXPECT_EQ(d["stdout"]["Reservations"][0]["Instances"][0]["Tags"][0]["Value"], "web & db <1>");
  p = Params::parse(d["body"].get<std::string>());
  ASSERT_TRUE(p.ok());
  auto filters = read_filters(p->root());
  ASSERT_TRUE(filters.ok());
  ASSERT_EQ(filters->size(), 2u);
  EXPECT_EQ(filters->at(0).values, (std::vector<std::string>{"running", "stopped"}));
  EXPECT_EQ(filters->at(1).name, "tag:env");

  EXPECT_EQ(out.at("console")["stdout"]["Output"], "login: \n");

  const json& in = out.at("ingress");
  ASSERT_EQ(in["rc"], 0) << in["stderr"];
  p = Params::parse(in["body"].get<std::string>());
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->action(), "AuthorizeSecurityGroupIngress");
  // The CLI turns --protocol/--port/--cidr into one IpPermissions entry.
  auto perms = read_ip_permissions(p->root());
  ASSERT_TRUE(perms.ok()) << perms.error().message;
  ASSERT_EQ(perms->size(), 1u);
  EXPECT_EQ(perms->at(0).ip_protocol, "tcp");
  EXPECT_EQ(perms->at(0).from_port, 22);
  EXPECT_EQ(perms->at(0).to_port, 23);
  ASSERT_EQ(perms->at(0).ip_ranges.size(), 1u);
  EXPECT_EQ(perms->at(0).ip_ranges[0].cidr_ip, "10.0.0.0/16");

  const json& e = out.at("error");
  EXPECT_EQ(e["rc"], 254);
  const std::string err = e["stderr"];
  EXPECT_NE(err.find("An error occurred (InvalidInstanceID.NotFound) when calling the TerminateInstances operation"),
            std::string::npos)
      << err;
  EXPECT_NE(err.find(": The instance ID 'i-9' does not exist"), std::string::npos) << err;
}

}  // namespace
}  // namespace azote::ec2api
