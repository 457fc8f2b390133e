// azote-region with real parts: Debian's etcd as its store, a real host (azote-controller
// as root with its launcher, azote-hv, cards), and clients nobody here wrote: Debian's
// aws CLI v2 (/usr/bin/aws) and boto3 (tests/region/boto3_story.py), speaking the EC2
// Query API over HTTPS with SigV4.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "api/azote.grpc.pb.h"
#include "api/client.hpp"
#include "controller_fixture.hpp"
#include "etcd/testing.hpp"
#include "netns.hpp"

#include <deque>
#include <thread>

namespace azote::test {
namespace {

uint16_t free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof sa;
  uint16_t port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len) == 0)
    port = ntohs(sa.sin_port);
  ::close(fd);
  return port;
}

// Short host leases, so that losing a host is seen within a test's time.
constexpr int kLeaseSeconds = 6;
// How long a terminated instance stays visible (EC2: about an hour).
constexpr int kTerminatedRetentionSeconds = 8;

class Region : public ControllerTest {
 protected:
  void SetUp() override {
    ControllerTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    for (const char* tool : {"/usr/bin/etcd", "/usr/bin/aws"})
      if (!file_exists(tool)) GTEST_SKIP() << "SKIPPED: needs " << tool << " (scripts/deps.sh installs it)";
    // Three members: the region keeps working when one dies.
    auto c = etcd::testing::EtcdCluster::start({.members = 3});
    ASSERT_TRUE(c.ok()) << c.error().message();
    etcd_ = std::move(c).value();
    rdir_ = dir_ + "/region";
    admin_ = principal("admin", {});
    reader_ = principal("reader", {"--read-only"});
    // The host: its controller's API socket, a control-plane credential its CA issued.
    for (const auto& e : etcd_->endpoints()) etcd_eps_ += (etcd_eps_.empty() ? "" : ",") + e;
    // The region's own credential for h1 (its calls carry the lease's epoch; the test's
    // own calls to the host, with cp_, do not and must not be fenced).
    register_host("h1", dir_, issue("control-plane", "region"), "us-east-1a");
    port_ = free_port();
    region_ = std::make_unique<Process>(std::vector<std::string>{
        AZOTE_REGION_BIN, "serve", "--state-dir", rdir_, "--etcd", etcd_eps_, "--listen",
        "127.0.0.1:" + std::to_string(port_), "--host-lease-seconds", std::to_string(kLeaseSeconds),
        "--etcd-retain-revisions", "20", "--compact-interval-seconds", "2", "--terminated-retention-seconds",
        std::to_string(kTerminatedRetentionSeconds)});
    ASSERT_TRUE(region_->wait_for_output("azote-region: ready", 30s)) << region_->wait(1s).err;
    url_ = "https://127.0.0.1:" + std::to_string(port_);
  }
  void TearDown() override {
    if (region_) {
      region_->signal(SIGTERM);
      const Outcome o = region_->wait(10s);
      EXPECT_FALSE(o.timed_out) << "azote-region did not stop on SIGTERM";
      EXPECT_EQ(o.status, 0) << "azote-region's exit on SIGTERM";
      if (HasFailure()) std::cerr << "azote-region's log:\n" << o.err.substr(o.err.size() > 6000 ? o.err.size() - 6000 : 0);
    }
    for (auto& h : hosts_) stop_host(h);
    ControllerTest::TearDown();
  }

  void register_host(const std::string& id, const std::string& state, const std::string& creds, const std::string& zone,
                     const std::string& underlay = "") {
    // Capacity as the host's controller is started with (controller_fixture.hpp: 8 vCPUs, 8 GiB).
    std::vector<std::string> argv{AZOTE_REGION_BIN, "register-host", "--state-dir", rdir_, "--etcd", etcd_->endpoint(0),
                                  "--host-id", id, "--endpoint", "unix:" + state + "/api.sock", "--credentials", creds,
                                  "--zone", zone, "--vcpus", "8", "--memory-mib", "8192"};
    if (!underlay.empty()) argv.insert(argv.end(), {"--underlay", underlay});
    auto o = run(argv);
    ASSERT_EQ(o.status, 0) << o.out << o.err;
  }

  // Another host on this machine: its own controller, launcher and state.
  struct Host {
    std::string dir, creds;
    std::unique_ptr<Process> ctl;
  };
  // `ns`: the host runs in that network namespace (its API is a unix socket all the same);
  // `underlay`: its fabric address there.
  Host& add_host(const std::string& id, const std::string& zone, const Netns* ns = nullptr, const std::string& underlay = "") {
    Host h;
    h.dir = dir_ + "-" + id;
    std::filesystem::remove_all(h.dir);
    std::filesystem::create_directories(h.dir);
    const std::string cmd = "exec " + std::string(AZOTE_CONTROLLER_BIN) + " --state-dir " + h.dir +
                            " --on-exit stop --capacity-vcpus 8 --capacity-memory 8G" +
                            (underlay.empty() ? "" : " --underlay " + underlay) + " 2>>" + h.dir + "/controller.log";
    std::vector<std::string> argv{"/bin/sh", "-c", cmd};
    // nsenter, not `ip netns exec`: that one mounts a /sys of the namespace's, without the
    // cgroup tree the launcher needs; only the network namespace is the host's own here.
    if (ns != nullptr) argv.insert(argv.begin(), {"nsenter", "--net=/var/run/netns/" + ns->name()});
    h.ctl = std::make_unique<Process>(argv);
    EXPECT_TRUE(h.ctl->wait_for_output("azote-controller: ready", 15s)) << slurp(h.dir + "/controller.log");
    // One credential for the region (fenced by its epochs), one for the test's own calls.
    for (const char* name : {"region", "tester"}) {
      auto o = run({AZOTE_CLI_BIN, "admin", "issue-cert", "--state-dir", h.dir, "--role", "control-plane", "--name",
                    name, "--out", h.dir + "/creds-" + name});
      EXPECT_EQ(o.status, 0) << o.err;
    }
    h.creds = h.dir + "/creds-tester";
    register_host(id, h.dir, h.dir + "/creds-region", zone, underlay);
    hosts_.push_back(std::move(h));
    return hosts_.back();
  }
  void stop_host(Host& h) {
    if (!h.ctl) return;
    h.ctl->signal(SIGTERM);
    h.ctl->wait(60s);
    h.ctl.reset();
  }
  // The instance ids a host's own controller reports, in a state.
  std::set<std::string> on_host(const std::string& state, const std::string& creds, const std::string& name = "running") {
    auto o = run({AZOTE_CLI_BIN, "--endpoint", "unix:" + state + "/api.sock", "--credentials", creds, "describe-instances",
                  "--output", "json"});
    std::set<std::string> out;
    const Json j = Json::parse(o.out, nullptr, false);
    if (!j.is_object() || !j.contains("instances")) return out;
    for (const auto& i : j["instances"])
      if (i["state"].value("name", "") == name) out.insert(i.value("instance_id", ""));
    return out;
  }

  std::pair<std::string, std::string> principal(const std::string& name, std::vector<std::string> extra) {
    std::vector<std::string> argv{AZOTE_REGION_BIN, "add-principal", "--state-dir", rdir_, "--name", name};
    argv.insert(argv.end(), extra.begin(), extra.end());
    auto o = run(argv);
    EXPECT_EQ(o.status, 0) << o.err;
    const Json j = Json::parse(o.out, nullptr, false);
    return {j.value("AccessKeyId", ""), j.value("SecretAccessKey", "")};
  }

  // Debian's aws CLI v2, with nothing of the user's configuration.
  Outcome aws(const std::pair<std::string, std::string>& who, std::vector<std::string> args) {
    std::vector<std::string> argv{"/usr/bin/env",
                                  "-i",
                                  "HOME=" + dir_,
                                  "PATH=/usr/bin:/bin",
                                  "AWS_ACCESS_KEY_ID=" + who.first,
                                  "AWS_SECRET_ACCESS_KEY=" + who.second,
                                  "AWS_DEFAULT_REGION=us-east-1",
                                  "AWS_CA_BUNDLE=" + rdir_ + "/pki/ca.crt",
                                  "AWS_CONFIG_FILE=/dev/null",
                                  "AWS_SHARED_CREDENTIALS_FILE=/dev/null",
                                  "AWS_PAGER=",
                                  "AWS_MAX_ATTEMPTS=1",
                                  "/usr/bin/aws",
                                  "--endpoint-url",
                                  url_,
                                  "--output",
                                  "json",
                                  "ec2"};
    argv.insert(argv.end(), args.begin(), args.end());
    return run(argv, 180s);
  }

  // Two more hosts (zones us-east-1b and -1c), each in its own network namespace with its
  // fabric address 192.168.202.N on a bridge (itself in a namespace): with the fixture's
  // own host, a region of three. Without network namespaces (not root), the two run in
  // this namespace, without a fabric.
  void three_hosts() {
    std::string why;
    if (!netns_usable(&why)) {
      add_host("h2", "us-east-1b");
      add_host("h3", "us-east-1c");
      return;
    }
    bridge_ns_ = std::make_unique<Netns>("azrbr");
    ASSERT_TRUE(bridge_ns_->ok()) << bridge_ns_->error();
    ASSERT_EQ(exec_in(*bridge_ns_, {"ip", "link", "add", "br0", "type", "bridge"}).status, 0);
    ASSERT_EQ(exec_in(*bridge_ns_, {"ip", "link", "set", "br0", "up"}).status, 0);
    for (int k = 2; k <= 3; ++k) {
      host_ns_.push_back(std::make_unique<Netns>("azrh" + std::to_string(k)));
      const Netns& ns = *host_ns_.back();
      ASSERT_TRUE(ns.ok()) << ns.error();
      links_.push_back(std::make_unique<Veth>(bridge_ns_.get(), unique_name("azbr"), &ns, unique_name("azul")));
      const Veth& l = *links_.back();
      ASSERT_TRUE(l.ok()) << l.error();
      ASSERT_EQ(exec_in(*bridge_ns_, {"ip", "link", "set", l.a_name(), "master", "br0", "up"}).status, 0);
      const std::string ip = "192.168.202." + std::to_string(k);
      ASSERT_EQ(exec_in(ns, {"ip", "addr", "add", ip + "/24", "dev", l.b_name()}).status, 0);
      ASSERT_EQ(exec_in(ns, {"ip", "link", "set", l.b_name(), "up"}).status, 0);
      add_host("h" + std::to_string(k), k == 2 ? "us-east-1b" : "us-east-1c", &ns, ip + ":6081");
    }
  }

  // The default subnet the region makes for a zone once a host is registered there (its
  // pusher's next round: up to a third of the lease); empty if none within 30 s.
  std::string default_subnet(const std::string& zone) {
    std::string subnet;
    const bool found = eventually([&] {
      auto o = aws(admin_, {"describe-subnets", "--filters", "Name=availability-zone,Values=" + zone,
                            "Name=default-for-az,Values=true", "--query", "Subnets[0].SubnetId", "--output", "text"});
      subnet = o.out.substr(0, o.out.find('\n'));
      return o.status == 0 && subnet.rfind("subnet-", 0) == 0;
    }, 30s);
    return found ? subnet : std::string();
  }

  std::unique_ptr<etcd::testing::EtcdCluster> etcd_;
  std::string etcd_eps_;
  std::unique_ptr<Netns> bridge_ns_;
  std::vector<std::unique_ptr<Netns>> host_ns_;
  std::vector<std::unique_ptr<Veth>> links_;
  std::deque<Host> hosts_;
  std::unique_ptr<Process> region_;
  std::string rdir_, url_;
  uint16_t port_ = 0;
  std::pair<std::string, std::string> admin_, reader_;
};

TEST_F(Region, TheAwsCliLaunchesWaitsDescribesAndTerminatesThroughTheRegion) {
  three_hosts();
  ASSERT_FALSE(HasFatalFailure());
  auto o = aws(admin_, {"describe-regions"});
  ASSERT_EQ(o.status, 0) << o.err;
  EXPECT_EQ(Json::parse(o.out)["Regions"][0].value("RegionName", ""), "us-east-1");

  o = aws(admin_, {"run-instances", "--image-id", "ami-builtin", "--instance-type", "t3.nano", "--count", "2",
                   "--tag-specifications", "ResourceType=instance,Tags=[{Key=Name,Value=cli}]"});
  ASSERT_EQ(o.status, 0) << o.err;
  const Json launched = Json::parse(o.out);
  ASSERT_EQ(launched["Instances"].size(), 2u) << o.out;
  const std::string a = launched["Instances"][0].value("InstanceId", ""), b = launched["Instances"][1].value("InstanceId", "");
  o = aws(admin_, {"wait", "instance-running", "--instance-ids", a, b});
  ASSERT_EQ(o.status, 0) << o.err;
  // The host runs them: its own API says so.
  EXPECT_EQ(instance(a)["state"].value("name", ""), "running");

  o = aws(admin_, {"describe-instances", "--filters", "Name=tag:Name,Values=cli", "Name=instance-state-name,Values=running",
                   "--query", "Reservations[].Instances[].InstanceId"});
  ASSERT_EQ(o.status, 0) << o.err;
  std::set<std::string> ids;
  for (const auto& id : Json::parse(o.out)) ids.insert(id.get<std::string>());
  EXPECT_EQ(ids, (std::set<std::string>{a, b}));
  // Spread: two hosts of three hold one each.
  std::set<std::string> zones;
  o = aws(admin_, {"describe-instances", "--instance-ids", a, b, "--query", "Reservations[].Instances[].Placement.AvailabilityZone"});
  for (const auto& z : Json::parse(o.out)) zones.insert(z.get<std::string>());
  EXPECT_EQ(zones.size(), 2u) << o.out;
  // The CLI's own pagination: one status a page, then on from the token it printed.
  o = aws(admin_, {"describe-instance-status", "--instance-ids", a, b, "--max-items", "1"});
  ASSERT_EQ(o.status, 0) << o.err;
  const Json page1 = Json::parse(o.out);
  ASSERT_TRUE(page1.contains("NextToken")) << o.out;
  ASSERT_EQ(page1["InstanceStatuses"].size(), 1u) << o.out;
  o = aws(admin_, {"describe-instance-status", "--instance-ids", a, b, "--max-items", "1", "--starting-token",
                   page1.value("NextToken", "")});
  ASSERT_EQ(o.status, 0) << o.err;
  const Json page2 = Json::parse(o.out);
  ASSERT_EQ(page2["InstanceStatuses"].size(), 1u) << o.out;
  EXPECT_EQ((std::set<std::string>{page1["InstanceStatuses"][0].value("InstanceId", ""),
                                   page2["InstanceStatuses"][0].value("InstanceId", "")}),
            (std::set<std::string>{a, b}))
      << o.out;

  // Stop, a volume attached while stopped (no hot-plug yet), start; detach and delete.
  ASSERT_EQ(aws(admin_, {"stop-instances", "--instance-ids", a}).status, 0);
  ASSERT_EQ(aws(admin_, {"wait", "instance-stopped", "--instance-ids", a}).status, 0);
  o = aws(admin_, {"describe-instances", "--instance-ids", a, "--query", "Reservations[0].Instances[0].Placement.AvailabilityZone",
                   "--output", "text"});
  const std::string zone = o.out.substr(0, o.out.find('\n'));
  o = aws(admin_, {"create-volume", "--availability-zone", zone, "--size", "1", "--query", "VolumeId", "--output", "text"});
  ASSERT_EQ(o.status, 0) << o.err;
  const std::string vol = o.out.substr(0, o.out.find('\n'));
  ASSERT_EQ(aws(admin_, {"wait", "volume-available", "--volume-ids", vol}).status, 0);
  o = aws(admin_, {"attach-volume", "--volume-id", vol, "--instance-id", a, "--device", "/dev/sdf"});
  ASSERT_EQ(o.status, 0) << o.err;
  ASSERT_EQ(aws(admin_, {"wait", "volume-in-use", "--volume-ids", vol}).status, 0);
  ASSERT_EQ(aws(admin_, {"start-instances", "--instance-ids", a}).status, 0);
  ASSERT_EQ(aws(admin_, {"wait", "instance-running", "--instance-ids", a}).status, 0);
  ASSERT_EQ(aws(admin_, {"stop-instances", "--instance-ids", a}).status, 0);
  ASSERT_EQ(aws(admin_, {"wait", "instance-stopped", "--instance-ids", a}).status, 0);
  ASSERT_EQ(aws(admin_, {"detach-volume", "--volume-id", vol}).status, 0);
  ASSERT_EQ(aws(admin_, {"wait", "volume-available", "--volume-ids", vol}).status, 0);
  ASSERT_EQ(aws(admin_, {"delete-volume", "--volume-id", vol}).status, 0);

  // The read-only principal: describes, may not terminate.
  o = aws(reader_, {"describe-instances", "--instance-ids", a});
  EXPECT_EQ(o.status, 0) << o.err;
  o = aws(reader_, {"terminate-instances", "--instance-ids", a});
  EXPECT_NE(o.status, 0);
  EXPECT_NE(o.err.find("UnauthorizedOperation"), std::string::npos) << o.err;
  // A wrong secret.
  o = aws({admin_.first, std::string(40, 'x')}, {"describe-instances"});
  EXPECT_NE(o.status, 0);
  EXPECT_NE(o.err.find("AuthFailure"), std::string::npos) << o.err;

  o = aws(admin_, {"terminate-instances", "--instance-ids", a, b});
  ASSERT_EQ(o.status, 0) << o.err;
  o = aws(admin_, {"wait", "instance-terminated", "--instance-ids", a, b});
  EXPECT_EQ(o.status, 0) << o.err;
  // Shown as terminated for a while, then forgotten.
  o = aws(admin_, {"describe-instances", "--instance-ids", a, "--query", "Reservations[0].Instances[0].State.Name",
                   "--output", "text"});
  EXPECT_EQ(o.out.substr(0, o.out.find('\n')), "terminated") << o.err;
  EXPECT_TRUE(eventually([&] {
    auto d = aws(admin_, {"describe-instances", "--instance-ids", a});
    return d.status != 0 && d.err.find("InvalidInstanceID.NotFound") != std::string::npos;
  }, std::chrono::seconds(kTerminatedRetentionSeconds + 30)));

  // Every call in the region's signed audit log, refusals included.
  const std::string log = slurp(rdir_ + "/audit/audit.log");
  EXPECT_NE(log.find("ec2:RunInstances"), std::string::npos);
  EXPECT_NE(log.find("\"denied\""), std::string::npos);
  o = run({AZOTE_CLI_BIN, "audit", "verify", rdir_ + "/audit/audit.log"});
  EXPECT_EQ(o.status, 0) << o.out << o.err;
}

// VPCs, subnets and security groups are the region's: made through the aws CLI, checked
// as EC2 checks them, pushed to the host (its own API shows them), and an instance
// launched into them gets its address from the region.
TEST_F(Region, VpcsSubnetsAndSecurityGroupsThroughTheAwsCli) {
  // The default VPC and a default subnet in the host's zone exist from the start.
  auto o = aws(admin_, {"describe-vpcs", "--filters", "Name=is-default,Values=true"});
  ASSERT_EQ(o.status, 0) << o.err;
  ASSERT_EQ(Json::parse(o.out)["Vpcs"].size(), 1u) << o.out;
  EXPECT_EQ(Json::parse(o.out)["Vpcs"][0].value("CidrBlock", ""), "172.31.0.0/16");
  o = aws(admin_, {"describe-subnets", "--filters", "Name=default-for-az,Values=true"});
  ASSERT_EQ(o.status, 0) << o.err;
  ASSERT_EQ(Json::parse(o.out)["Subnets"].size(), 1u) << o.out;
  EXPECT_EQ(Json::parse(o.out)["Subnets"][0].value("AvailabilityZone", ""), "us-east-1a");

  o = aws(admin_, {"create-vpc", "--cidr-block", "10.9.0.0/16", "--tag-specifications",
                   "ResourceType=vpc,Tags=[{Key=Name,Value=blue}]"});
  ASSERT_EQ(o.status, 0) << o.err;
  const std::string vpc = Json::parse(o.out)["Vpc"].value("VpcId", "");
  ASSERT_EQ(vpc.rfind("vpc-", 0), 0u) << o.out;
  o = aws(admin_, {"create-vpc", "--cidr-block", "10.0.0.0/12"});
  EXPECT_NE(o.err.find("InvalidVpc.Range"), std::string::npos) << o.err;
  o = aws(admin_, {"create-subnet", "--vpc-id", vpc, "--cidr-block", "10.9.1.0/24", "--availability-zone", "us-east-1a"});
  ASSERT_EQ(o.status, 0) << o.err;
  const Json sn = Json::parse(o.out)["Subnet"];
  const std::string subnet = sn.value("SubnetId", "");
  EXPECT_EQ(sn.value("AvailableIpAddressCount", 0), 251);
  o = aws(admin_, {"create-subnet", "--vpc-id", vpc, "--cidr-block", "10.9.1.128/25"});
  EXPECT_NE(o.err.find("InvalidSubnet.Conflict"), std::string::npos) << o.err;
  o = aws(admin_, {"create-subnet", "--vpc-id", vpc, "--cidr-block", "10.8.1.0/24"});
  EXPECT_NE(o.err.find("InvalidSubnet.Range"), std::string::npos) << o.err;
  o = aws(admin_, {"create-subnet", "--vpc-id", vpc, "--cidr-block", "10.9.2.0/24", "--availability-zone", "us-east-1z"});
  EXPECT_NE(o.err.find("InvalidParameterValue"), std::string::npos) << o.err;

  o = aws(admin_, {"create-security-group", "--group-name", "web", "--description", "web servers", "--vpc-id", vpc});
  ASSERT_EQ(o.status, 0) << o.err;
  const std::string web = Json::parse(o.out).value("GroupId", "");
  o = aws(admin_, {"create-security-group", "--group-name", "web", "--description", "again", "--vpc-id", vpc});
  EXPECT_NE(o.err.find("InvalidGroup.Duplicate"), std::string::npos) << o.err;
  // The CLI's flat form and IpPermissions; a duplicate is refused, a bad port range too.
  o = aws(admin_, {"authorize-security-group-ingress", "--group-id", web, "--protocol", "tcp", "--port", "22",
                   "--cidr", "10.9.0.0/16"});
  ASSERT_EQ(o.status, 0) << o.err;
  EXPECT_EQ(Json::parse(o.out)["SecurityGroupRules"][0].value("FromPort", 0), 22) << o.out;
  o = aws(admin_, {"authorize-security-group-ingress", "--group-id", web, "--ip-permissions",
                   "IpProtocol=udp,FromPort=7,ToPort=7,IpRanges=[{CidrIp=0.0.0.0/0}]"});
  ASSERT_EQ(o.status, 0) << o.err;
  o = aws(admin_, {"authorize-security-group-ingress", "--group-id", web, "--protocol", "tcp", "--port", "22",
                   "--cidr", "10.9.0.0/16"});
  EXPECT_NE(o.err.find("InvalidPermission.Duplicate"), std::string::npos) << o.err;
  o = aws(admin_, {"authorize-security-group-ingress", "--group-id", web, "--ip-permissions",
                   "IpProtocol=tcp,FromPort=90,ToPort=80,IpRanges=[{CidrIp=0.0.0.0/0}]"});
  EXPECT_NE(o.err.find("InvalidParameterValue"), std::string::npos) << o.err;
  o = aws(admin_, {"describe-security-groups", "--group-ids", web});
  ASSERT_EQ(o.status, 0) << o.err;
  EXPECT_EQ(Json::parse(o.out)["SecurityGroups"][0]["IpPermissions"].size(), 2u) << o.out;
  o = aws(admin_, {"describe-security-groups", "--filters", "Name=vpc-id,Values=" + vpc, "Name=group-name,Values=default"});
  ASSERT_EQ(o.status, 0) << o.err;
  ASSERT_EQ(Json::parse(o.out)["SecurityGroups"].size(), 1u) << o.out;
  const std::string vpc_default = Json::parse(o.out)["SecurityGroups"][0].value("GroupId", "");

  // The host was pushed the region's network: its own API lists the subnet and the rules.
  EXPECT_TRUE(eventually([&] {
    auto d = cli(cp_, {"describe-security-groups", "--output", "json"});
    return d.status == 0 && d.out.find(web) != std::string::npos && d.out.find("10.9.0.0/16") != std::string::npos;
  }, 30s));
  auto d = cli(cp_, {"describe-subnets", "--output", "json"});
  EXPECT_NE(d.out.find(subnet), std::string::npos) << d.out << d.err;
  // Only azote-region pushes its network (a call under its lease): the test's own
  // principal is refused, and the host keeps what the region gave it.
  {
    auto creds = api::load_credentials(cp_);
    ASSERT_TRUE(creds.ok());
    auto stub = v1::Ec2::NewStub(api::make_channel("unix:" + dir_ + "/api.sock", *creds));
    grpc::ClientContext ctx;
    v1::RegionNetwork n;
    n.set_generation(uint64_t{1} << 40);
    v1::ApplyRegionNetworkResponse resp;
    const grpc::Status st = stub->ApplyRegionNetwork(&ctx, n, &resp);
    EXPECT_FALSE(st.ok());
    EXPECT_NE(st.error_message().find("only azote-region pushes"), std::string::npos) << st.error_message();
    // Nor may it present a lease epoch (which would move the host's fence).
    grpc::ClientContext ctx2;
    ctx2.AddMetadata("azote-region-epoch", "18446744073709551615");
    ctx2.AddMetadata("azote-region-lease-ms", "6000");
    const grpc::Status st2 = stub->ApplyRegionNetwork(&ctx2, n, &resp);
    EXPECT_FALSE(st2.ok());
    EXPECT_NE(st2.error_message().find("only the region's certificate"), std::string::npos) << st2.error_message();
    d = cli(cp_, {"describe-subnets", "--output", "json"});
    EXPECT_NE(d.out.find(subnet), std::string::npos) << d.out << d.err;
  }

  // An instance in the subnet, with the group: its address from the region, the host's ENI.
  o = aws(admin_, {"run-instances", "--image-id", "ami-builtin", "--instance-type", "t3.nano", "--subnet-id", subnet,
                   "--security-group-ids", web, "--private-ip-address", "10.9.1.20"});
  ASSERT_EQ(o.status, 0) << o.err;
  const Json inst = Json::parse(o.out)["Instances"][0];
  const std::string id = inst.value("InstanceId", "");
  EXPECT_EQ(inst.value("PrivateIpAddress", ""), "10.9.1.20") << o.out;
  EXPECT_EQ(inst.value("SubnetId", ""), subnet) << o.out;
  EXPECT_EQ(inst.value("VpcId", ""), vpc) << o.out;
  // Its interface as EC2 describes it (the host's ENI).
  o = aws(admin_, {"describe-instances", "--instance-ids", inst.value("InstanceId", ""), "--query",
                   "Reservations[0].Instances[0].NetworkInterfaces[0]"});
  ASSERT_EQ(o.status, 0) << o.err;
  const Json nic = Json::parse(o.out, nullptr, false);
  EXPECT_EQ(nic.value("NetworkInterfaceId", "").rfind("eni-", 0), 0u) << o.out;
  EXPECT_EQ(nic.value("PrivateIpAddress", ""), "10.9.1.20") << o.out;
  EXPECT_EQ(nic.value("SubnetId", ""), subnet) << o.out;
  EXPECT_EQ(nic["Groups"][0].value("GroupId", ""), web) << o.out;
  EXPECT_EQ(nic["Attachment"].value("DeviceIndex", -1), 0) << o.out;
  o = aws(admin_, {"run-instances", "--image-id", "ami-builtin", "--instance-type", "t3.nano", "--subnet-id", subnet,
                   "--private-ip-address", "10.9.1.20"});
  EXPECT_NE(o.err.find("InvalidIPAddress.InUse"), std::string::npos) << o.err;
  o = aws(admin_, {"run-instances", "--image-id", "ami-builtin", "--instance-type", "t3.nano", "--subnet-id", subnet,
                   "--security-group-ids", vpc_default, "--count", "2"});
  ASSERT_EQ(o.status, 0) << o.err;
  std::set<std::string> addresses;
  std::vector<std::string> more;
  const Json two = Json::parse(o.out);
  for (const auto& i : two["Instances"]) {
    addresses.insert(i.value("PrivateIpAddress", ""));
    more.push_back(i.value("InstanceId", ""));
  }
  EXPECT_EQ(addresses, (std::set<std::string>{"10.9.1.4", "10.9.1.5"})) << o.out;
  o = aws(admin_, {"wait", "instance-running", "--instance-ids", id});
  ASSERT_EQ(o.status, 0) << o.err;
  EXPECT_EQ(instance(id).dump().find("10.9.1.20") != std::string::npos, true) << instance(id).dump();
  o = aws(admin_, {"describe-subnets", "--subnet-ids", subnet, "--query", "Subnets[0].AvailableIpAddressCount"});
  EXPECT_EQ(o.out.substr(0, o.out.find('\n')), "248") << o.out << o.err;

  // What is in use cannot go; the default group never.
  o = aws(admin_, {"delete-subnet", "--subnet-id", subnet});
  EXPECT_NE(o.err.find("DependencyViolation"), std::string::npos) << o.err;
  o = aws(admin_, {"delete-security-group", "--group-id", web});
  EXPECT_NE(o.err.find("DependencyViolation"), std::string::npos) << o.err;
  o = aws(admin_, {"delete-security-group", "--group-id", vpc_default});
  EXPECT_NE(o.err.find("CannotDelete"), std::string::npos) << o.err;
  o = aws(admin_, {"delete-vpc", "--vpc-id", vpc});
  EXPECT_NE(o.err.find("DependencyViolation"), std::string::npos) << o.err;
  // A revoked rule leaves the host too; an unknown one comes back as unknown.
  o = aws(admin_, {"revoke-security-group-ingress", "--group-id", web, "--protocol", "tcp", "--port", "22",
                   "--cidr", "10.9.0.0/16"});
  ASSERT_EQ(o.status, 0) << o.err;
  o = aws(admin_, {"revoke-security-group-ingress", "--group-id", web, "--protocol", "tcp", "--port", "23",
                   "--cidr", "10.9.0.0/16"});
  ASSERT_EQ(o.status, 0) << o.err;
  EXPECT_NE(o.out.find("UnknownIpPermissions"), std::string::npos) << o.out;
  EXPECT_TRUE(eventually([&] {
    auto g = cli(cp_, {"describe-security-groups", "--group-ids", web, "--output", "json"});
    return g.status == 0 && g.out.find("10.9.0.0/16") == std::string::npos && g.out.find("0.0.0.0/0") != std::string::npos;
  }, 30s));
  o = aws(admin_, {"create-tags", "--resources", vpc, subnet, web, "--tags", "Key=team,Value=net"});
  ASSERT_EQ(o.status, 0) << o.err;
  o = aws(admin_, {"describe-tags", "--filters", "Name=key,Values=team", "--query", "Tags[].ResourceType"});
  ASSERT_EQ(o.status, 0) << o.err;
  EXPECT_NE(o.out.find("security-group"), std::string::npos) << o.out;
  EXPECT_NE(o.out.find("subnet"), std::string::npos) << o.out;

  // Gone in order: instances, group, subnet, VPC (its default group with it).
  std::vector<std::string> all = more;
  all.push_back(id);
  std::vector<std::string> term{"terminate-instances", "--instance-ids"};
  term.insert(term.end(), all.begin(), all.end());
  ASSERT_EQ(aws(admin_, term).status, 0);
  std::vector<std::string> wait{"wait", "instance-terminated", "--instance-ids"};
  wait.insert(wait.end(), all.begin(), all.end());
  ASSERT_EQ(aws(admin_, wait).status, 0);
  for (const auto& args : std::vector<std::vector<std::string>>{{"delete-security-group", "--group-id", web},
                                                                 {"delete-subnet", "--subnet-id", subnet},
                                                                 {"delete-vpc", "--vpc-id", vpc}}) {
    o = aws(admin_, args);
    EXPECT_EQ(o.status, 0) << args[0] << ": " << o.err;
  }
  o = aws(admin_, {"describe-vpcs", "--vpc-ids", vpc});
  EXPECT_NE(o.err.find("InvalidVpcID.NotFound"), std::string::npos) << o.err;
  EXPECT_TRUE(eventually([&] {
    auto g = cli(cp_, {"describe-subnets", "--output", "json"});
    return g.status == 0 && g.out.find(subnet) == std::string::npos;
  }, 30s));
  // A default subnet a user deletes stays deleted (as in EC2): launches without a subnet
  // then find none in that zone.
  o = aws(admin_, {"describe-subnets", "--filters", "Name=default-for-az,Values=true", "--query", "Subnets[0].SubnetId",
                   "--output", "text"});
  const std::string def = o.out.substr(0, o.out.find('\n'));
  ASSERT_EQ(aws(admin_, {"delete-subnet", "--subnet-id", def}).status, 0);
  std::this_thread::sleep_for(std::chrono::seconds(kLeaseSeconds));  // two rounds of the pusher
  o = aws(admin_, {"describe-subnets", "--filters", "Name=default-for-az,Values=true"});
  EXPECT_EQ(Json::parse(o.out)["Subnets"].size(), 0u) << o.out;
  o = aws(admin_, {"run-instances", "--image-id", "ami-builtin", "--instance-type", "t3.nano"});
  EXPECT_NE(o.err.find("no default subnet"), std::string::npos) << o.err;
}

// Two hosts, each in its own network namespace joined by an underlay link: the region
// gives each its fabric id, the other's address and their pair's key, and where every
// address of the VPC lives; an instance on one host pings one on the other with no
// manual step. An instance of another VPC (the same addresses) reaches nothing.
TEST_F(Region, InstancesOnTwoHostsReachEachOtherOverTheFabricAndAnotherVpcDoesNot) {
  std::string why;
  if (!netns_usable(&why)) GTEST_SKIP() << "SKIPPED: needs network namespaces (" << why << ")";
  Netns na("azra"), nb("azrb");
  ASSERT_TRUE(na.ok() && nb.ok()) << na.error() << nb.error();
  Veth link(&na, unique_name("azula"), &nb, unique_name("azulb"));
  ASSERT_TRUE(link.ok()) << link.error();
  for (const auto& [ns, dev, addr] : std::vector<std::tuple<const Netns*, std::string, std::string>>{
           {&na, link.a_name(), "192.168.201.1/24"}, {&nb, link.b_name(), "192.168.201.2/24"}}) {
    ASSERT_EQ(exec_in(*ns, {"ip", "addr", "add", addr, "dev", dev}).status, 0);
    ASSERT_EQ(exec_in(*ns, {"ip", "link", "set", dev, "up"}).status, 0);
  }
  Host& a = add_host("fa", "us-east-1b", &na, "192.168.201.1:6081");
  Host& b = add_host("fb", "us-east-1b", &nb, "192.168.201.2:6081");
  // The same image on both hosts (content-addressed: the same id).
  int images = 0;
  auto image = [&](const std::string& cmdline) {
    std::string id;
    const std::string name = "guest-" + std::to_string(++images);
    for (Host* h : {&a, &b}) {
      auto o = run({AZOTE_CLI_BIN, "--endpoint", "unix:" + h->dir + "/api.sock", "--credentials", h->creds, "register-image",
                    "--name", name, "--kernel", AZOTE_GUEST_ELF, "--cmdline", cmdline, "--output", "json"});
      EXPECT_EQ(o.status, 0) << o.err;
      const std::string got = Json::parse(o.out, nullptr, false).value("image_id", "");
      EXPECT_TRUE(id.empty() || id == got) << id << " vs " << got;
      id = got;
    }
    return id;
  };
  // The zone's default subnet, and a group that lets the VPC ping and echo.
  const std::string subnet = default_subnet("us-east-1b");
  ASSERT_FALSE(subnet.empty()) << "no default subnet in us-east-1b";
  auto o = aws(admin_, {"create-security-group", "--group-name", "pingable", "--description", "icmp and udp in the VPC"});
  ASSERT_EQ(o.status, 0) << o.err;
  const std::string sg = Json::parse(o.out).value("GroupId", "");
  o = aws(admin_, {"authorize-security-group-ingress", "--group-id", sg, "--ip-permissions",
                   "IpProtocol=icmp,FromPort=-1,ToPort=-1,IpRanges=[{CidrIp=172.31.0.0/16}]",
                   "IpProtocol=udp,FromPort=0,ToPort=65535,IpRanges=[{CidrIp=172.31.0.0/16}]"});
  ASSERT_EQ(o.status, 0) << o.err;

  o = aws(admin_, {"run-instances", "--image-id", image("azote.run=net-echo"), "--instance-type", "t3.nano", "--subnet-id",
                   subnet, "--security-group-ids", sg});
  ASSERT_EQ(o.status, 0) << o.err;
  const std::string echo = Json::parse(o.out)["Instances"][0].value("InstanceId", "");
  const std::string echo_ip = Json::parse(o.out)["Instances"][0].value("PrivateIpAddress", "");
  ASSERT_EQ(aws(admin_, {"wait", "instance-running", "--instance-ids", echo}).status, 0);
  auto console = [&](const std::string& id) {
    auto c = aws(admin_, {"get-console-output", "--instance-id", id, "--query", "Output", "--output", "text"});
    return c.out;
  };
  ASSERT_TRUE(eventually([&] { return console(echo).find("net-echo ready ip=" + echo_ip) != std::string::npos; }, 90s))
      << console(echo);
  // Spread: the pinger goes to the other host.
  o = aws(admin_, {"run-instances", "--image-id", image("azote.run=net-ping " + echo_ip + " 20"), "--instance-type",
                   "t3.nano", "--subnet-id", subnet, "--security-group-ids", sg});
  ASSERT_EQ(o.status, 0) << o.err;
  const std::string pinger = Json::parse(o.out)["Instances"][0].value("InstanceId", "");
  const bool echo_on_a = on_host(a.dir, a.creds).count(echo) != 0;
  EXPECT_TRUE(eventually([&] { return on_host(echo_on_a ? b.dir : a.dir, echo_on_a ? b.creds : a.creds).count(pinger) != 0; }, 60s))
      << "the pinger is not on the other host";
  std::string out;
  ASSERT_TRUE(eventually([&] {
    out = console(pinger);
    return out.find("net-ping " + echo_ip + " sent=") != std::string::npos;
  }, 120s)) << out;
  const size_t at = out.find("received=", out.find("net-ping " + echo_ip + " sent="));
  const int received = std::atoi(out.c_str() + at + 9);
  EXPECT_GE(received, 15) << out;  // the first may go before the mapping reaches the echo's host
  EXPECT_NE(out.find("net-ping reply from " + echo_ip), std::string::npos) << out;
  // What crossed: each host's fabric process sealed and opened frames for the other.
  const std::string fabric_log_a = slurp(a.dir + "/controller.log");
  EXPECT_NE(fabric_log_a.find("fabric process started (host id"), std::string::npos) << fabric_log_a;

  // Another VPC with the same addresses, a pinger in it: nothing comes back.
  o = aws(admin_, {"create-vpc", "--cidr-block", "172.31.0.0/16"});
  ASSERT_EQ(o.status, 0) << o.err;
  const std::string vpc2 = Json::parse(o.out)["Vpc"].value("VpcId", "");
  o = aws(admin_, {"create-subnet", "--vpc-id", vpc2, "--cidr-block", "172.31.16.0/20", "--availability-zone", "us-east-1b"});
  ASSERT_EQ(o.status, 0) << o.err;
  const std::string subnet2 = Json::parse(o.out)["Subnet"].value("SubnetId", "");
  o = aws(admin_, {"run-instances", "--image-id", image("azote.run=net-ping " + echo_ip + " 5"), "--instance-type",
                   "t3.nano", "--subnet-id", subnet2, "--private-ip-address", "172.31.16.9"});
  ASSERT_EQ(o.status, 0) << o.err;
  const std::string outsider = Json::parse(o.out)["Instances"][0].value("InstanceId", "");
  // Nobody in its VPC has the echo's address: no ARP answer (or, were one given, no reply).
  ASSERT_TRUE(eventually([&] {
    out = console(outsider);
    return out.find("net-ping " + echo_ip + " sent=") != std::string::npos ||
           out.find("no ARP answer for the next hop of " + echo_ip) != std::string::npos;
  }, 120s)) << out;
  EXPECT_EQ(out.find("net-ping reply from"), std::string::npos) << out;
  EXPECT_EQ(out.find("received=") == std::string::npos || out.find("received=0") != std::string::npos, true) << out;
  o = aws(admin_, {"terminate-instances", "--instance-ids", echo, pinger, outsider});
  EXPECT_EQ(o.status, 0) << o.err;
}

// A host joins by itself: a one-time token from the region, the controller started with
// --join; it enrols before serving, the region places instances on it; the same token a
// second time is refused, and that controller does not start.
TEST_F(Region, AHostJoinsWithAnEnrolmentTokenThatWorksOnce) {
  auto tok = run({AZOTE_REGION_BIN, "create-enrolment-token", "--etcd", etcd_->endpoint(0), "--ttl-seconds", "600"});
  ASSERT_EQ(tok.status, 0) << tok.err;
  const std::string token = Json::parse(tok.out).value("Token", "");
  ASSERT_EQ(token.size(), 64u) << tok.out;
  // etcd holds its digest, not the token.
  auto listed = run({"/usr/bin/env", "ETCDCTL_API=3", "/usr/bin/etcdctl", "--endpoints", etcd_->endpoint(0), "get",
                     "--prefix", "/azote/region/enrolment/"});
  EXPECT_NE(listed.out.find("/azote/region/enrolment/"), std::string::npos) << listed.out << listed.err;
  EXPECT_EQ(listed.out.find(token), std::string::npos) << listed.out;
  auto start = [&](const std::string& id) {
    const std::string d = dir_ + "-" + id;
    std::filesystem::remove_all(d);
    std::filesystem::create_directories(d);
    // The region's CA where the host's (unprivileged) controller can read it.
    std::filesystem::copy_file(rdir_ + "/pki/ca.crt", d + "/region-ca.pem");
    ::chmod((d + "/region-ca.pem").c_str(), 0644);
    const std::string cmd = "exec " + std::string(AZOTE_CONTROLLER_BIN) + " --state-dir " + d +
                            " --on-exit stop --capacity-vcpus 8 --capacity-memory 8G --join " + url_ +
                            " --enrolment-token " + token + " --region-ca " + d + "/region-ca.pem --zone us-east-1d --host-id " +
                            id + " 2>>" + d + "/controller.log";
    return std::make_unique<Process>(std::vector<std::string>{"/bin/sh", "-c", cmd});
  };
  auto joined = start("hj");
  ASSERT_TRUE(joined->wait_for_output("azote-controller: ready", 30s)) << slurp(dir_ + "-hj/controller.log");
  EXPECT_NE(slurp(dir_ + "-hj/region.json").find("\"host_id\": \"hj\""), std::string::npos) << slurp(dir_ + "-hj/region.json");
  // The region places an instance on it (its zone's default subnet).
  const std::string subnet = default_subnet("us-east-1d");
  ASSERT_FALSE(subnet.empty()) << "no default subnet in us-east-1d";
  auto o = aws(admin_, {"run-instances", "--image-id", "ami-builtin", "--instance-type", "t3.nano", "--subnet-id", subnet});
  ASSERT_EQ(o.status, 0) << o.err;
  const std::string id = Json::parse(o.out)["Instances"][0].value("InstanceId", "");
  ASSERT_EQ(aws(admin_, {"wait", "instance-running", "--instance-ids", id}).status, 0);
  // Its own API says so, to the credential its own CA issued for the tests.
  auto creds = run({AZOTE_CLI_BIN, "admin", "issue-cert", "--state-dir", dir_ + "-hj", "--role", "control-plane", "--name",
                    "tester", "--out", dir_ + "-hj/creds-tester"});
  ASSERT_EQ(creds.status, 0) << creds.err;
  EXPECT_EQ(on_host(dir_ + "-hj", dir_ + "-hj/creds-tester").count(id), 1u);
  // The enrolment is on the region's audit record.
  EXPECT_NE(slurp(rdir_ + "/audit/audit.log").find("azote:EnrolHost"), std::string::npos);

  // The same token again: refused, and that controller does not serve (its launcher tries
  // it again later, as after any failed start).
  auto again = start("hk");
  EXPECT_TRUE(eventually([&] {
    return slurp(dir_ + "-hk/controller.log").find("the enrolment token is unknown, used or expired") != std::string::npos;
  }, 30s)) << slurp(dir_ + "-hk/controller.log");
  EXPECT_FALSE(again->wait_for_output("azote-controller: ready", 1s));
  again->signal(SIGTERM);
  EXPECT_FALSE(again->wait(30s).timed_out);
  ASSERT_EQ(aws(admin_, {"terminate-instances", "--instance-ids", id}).status, 0);
  ASSERT_EQ(aws(admin_, {"wait", "instance-terminated", "--instance-ids", id}).status, 0);
  joined->signal(SIGTERM);
  EXPECT_FALSE(joined->wait(60s).timed_out);
}

TEST_F(Region, Boto3RunsItsWholeStory) {
  three_hosts();
  ASSERT_FALSE(HasFatalFailure());
  const auto o = run({"/usr/bin/python3", AZOTE_SOURCE_DIR "/tests/region/boto3_story.py", url_, rdir_ + "/pki/ca.crt",
                      admin_.first, admin_.second, reader_.first, reader_.second},
                     400s);
  EXPECT_EQ(o.status, 0) << o.out << o.err;
  EXPECT_NE(o.out.find("boto3 story: all checks held"), std::string::npos) << o.out;
  for (const char* step : {"ok   instance_running waiter", "ok   instance_stopped waiter", "ok   volume_in_use waiter",
                           "ok   delete_volume", "ok   a 20-minute-old signature: RequestExpired",
                           "ok   instance_terminated waiter"})
    EXPECT_NE(o.out.find(step), std::string::npos) << step << "\n" << o.out;
}

// Two hosts: instances spread over both; the region keeps answering with one etcd member
// dead, and with one host gone (its instances reported stale, new ones placed on the other).
TEST_F(Region, InstancesSpreadOverHostsAndTheRegionOutlivesAnEtcdMemberAndAHost) {
  Host& h2 = add_host("h2", "us-east-1b");
  auto o = aws(admin_, {"run-instances", "--image-id", "ami-builtin", "--instance-type", "t3.nano", "--count", "4"});
  ASSERT_EQ(o.status, 0) << o.err;
  std::set<std::string> ids;
  const Json launched = Json::parse(o.out);
  for (const auto& i : launched["Instances"]) ids.insert(i.value("InstanceId", ""));
  ASSERT_EQ(ids.size(), 4u) << o.out;
  std::vector<std::string> args{"wait", "instance-running", "--instance-ids"};
  args.insert(args.end(), ids.begin(), ids.end());
  ASSERT_EQ(aws(admin_, args).status, 0);
  // Spread: two on each host, as each host's own controller says.
  const std::set<std::string> one = on_host(dir_, cp_), two = on_host(h2.dir, h2.creds);
  EXPECT_EQ(one.size(), 2u);
  EXPECT_EQ(two.size(), 2u);
  std::set<std::string> both = one;
  both.insert(two.begin(), two.end());
  EXPECT_EQ(both, ids);
  o = aws(admin_, {"describe-availability-zones", "--query", "AvailabilityZones[].ZoneName"});
  EXPECT_EQ(Json::parse(o.out, nullptr, false), Json::parse(R"(["us-east-1a", "us-east-1b"])"));

  // A volume lives on one host: made in us-east-1b (h2), it does not attach to an
  // instance of h1.
  o = aws(admin_, {"create-volume", "--availability-zone", "us-east-1b", "--size", "1"});
  ASSERT_EQ(o.status, 0) << o.err;
  const std::string vol = Json::parse(o.out).value("VolumeId", "");
  EXPECT_EQ(aws(admin_, {"wait", "volume-available", "--volume-ids", vol}).status, 0);
  o = aws(admin_, {"attach-volume", "--volume-id", vol, "--instance-id", *one.begin(), "--device", "/dev/sdf"});
  EXPECT_NE(o.status, 0);
  EXPECT_NE(o.err.find("InvalidVolume.ZoneMismatch"), std::string::npos) << o.err;
  EXPECT_EQ(aws(admin_, {"delete-volume", "--volume-id", vol}).status, 0);

  // An etcd member dies: reads and launches go on.
  ASSERT_TRUE(etcd_->kill(0).ok());
  o = aws(admin_, {"describe-instances", "--query", "Reservations[].Instances[].InstanceId"});
  ASSERT_EQ(o.status, 0) << o.err;
  EXPECT_EQ(Json::parse(o.out).size(), 4u);
  o = aws(admin_, {"run-instances", "--image-id", "ami-builtin", "--instance-type", "t3.nano"});
  ASSERT_EQ(o.status, 0) << o.err;
  ids.insert(Json::parse(o.out)["Instances"][0].value("InstanceId", ""));

  // Host 2 goes: the region still answers, its instances marked as last seen; the host is
  // lost within its lease (and a third of it, the probe interval).
  const auto stopped = std::chrono::steady_clock::now();
  stop_host(h2);
  auto host_state = [&](const std::string& id) {
    auto d = aws(admin_, {"describe-hosts", "--host-ids", id, "--query", "Hosts[0].State", "--output", "text"});
    return d.out.substr(0, d.out.find('\n'));
  };
  EXPECT_TRUE(eventually([&] { return host_state("h2") == "under-assessment"; }, 60s));
  const auto detected = std::chrono::steady_clock::now() - stopped;
  EXPECT_LE(detected, std::chrono::seconds(kLeaseSeconds + kLeaseSeconds / 3 + 4))
      << std::chrono::duration_cast<std::chrono::milliseconds>(detected).count() << " ms";
  EXPECT_EQ(host_state("h1"), "available");
  o = aws(admin_, {"describe-instances"});
  ASSERT_EQ(o.status, 0) << o.err;
  int stale = 0;
  const Json described = Json::parse(o.out);
  for (const auto& r : described["Reservations"])
    for (const auto& i : r["Instances"])
      if (i.contains("StateReason") && i["StateReason"].value("Message", "").find("h2 did not answer") != std::string::npos)
        ++stale;
  EXPECT_EQ(stale, static_cast<int>(two.size())) << o.out;
  o = aws(admin_, {"describe-instance-status", "--query", "InstanceStatuses[?SystemStatus.Status=='impaired'].InstanceId"});
  ASSERT_EQ(o.status, 0) << o.err;
  std::set<std::string> impaired;
  for (const auto& id : Json::parse(o.out)) impaired.insert(id.get<std::string>());
  EXPECT_EQ(impaired, two) << "the instances of the host that went are impaired";
  // New instances land on the host that answers.
  o = aws(admin_, {"run-instances", "--image-id", "ami-builtin", "--instance-type", "t3.nano"});
  ASSERT_EQ(o.status, 0) << o.err;
  const std::string last = Json::parse(o.out)["Instances"][0].value("InstanceId", "");
  EXPECT_TRUE(eventually([&] { return on_host(dir_, cp_).count(last) == 1; }, 60s));

  Outcome last_etcdctl;
  // The region compacts etcd's history (here to the last 20 revisions, every 2 s): the
  // first revisions are gone, and the region's watched copy goes on. (Forty more writes
  // under its prefix first, so that there are more than 20 to keep.)
  for (int i = 0; i < 40; ++i)
    run({"/usr/bin/env", "ETCDCTL_API=3", "/usr/bin/etcdctl", "--endpoints", etcd_->endpoint(1), "put",
         "/azote/region/test-noise/" + std::to_string(i), "x"});
  EXPECT_TRUE(eventually([&] {
    last_etcdctl = run({"/usr/bin/env", "ETCDCTL_API=3", "/usr/bin/etcdctl", "--endpoints", etcd_->endpoint(1), "get",
                        "--rev=2", "/azote/region/hosts/h1"});
    return last_etcdctl.status != 0 && last_etcdctl.err.find("compacted") != std::string::npos;
  }, 30s)) << "etcd's history was not compacted: " << last_etcdctl.out << last_etcdctl.err;
  o = aws(admin_, {"describe-instances", "--instance-ids", last, "--query", "Reservations[0].Instances[0].State.Name",
                   "--output", "text"});
  EXPECT_EQ(o.out.substr(0, o.out.find('\n')), "running") << o.err;

  // Records of the wrong shape, written into etcd by someone else, are skipped: the region
  // keeps answering.
  for (const auto& [k, v] : std::vector<std::pair<std::string, std::string>>{
           {"/azote/region/hosts/bad", R"({"id": 5, "endpoint": []})"},
           {"/azote/region/instances/i-0000000000000bad", R"({"id": "i-0000000000000bad", "host": "h1", "vcpus": "two"})"},
           {"/azote/region/volumes/vol-bad", "not json"}})
    run({"/usr/bin/env", "ETCDCTL_API=3", "/usr/bin/etcdctl", "--endpoints", etcd_->endpoint(1), "put", k, v});
  o = aws(admin_, {"describe-instances", "--query", "length(Reservations[].Instances[])"});
  EXPECT_EQ(o.status, 0) << o.err;
  o = aws(admin_, {"describe-hosts", "--query", "length(Hosts)"});
  EXPECT_EQ(o.out.substr(0, o.out.find('\n')), "2") << o.out << o.err;

  std::vector<std::string> mine;
  for (const auto& id : on_host(dir_, cp_)) mine.push_back(id);
  args = {"terminate-instances", "--instance-ids"};
  args.insert(args.end(), mine.begin(), mine.end());
  EXPECT_EQ(aws(admin_, args).status, 0);
}

// Fencing: a host the region has not reached for a whole lease refuses the region's old
// epoch (it may have been declared lost and its work moved), and acts again only under a
// new lease the region takes once it sees the refusal.
TEST_F(Region, AHostRefusesALapsedLeaseAndTheRegionTakesANewOne) {
  auto o = aws(admin_, {"run-instances", "--image-id", "ami-builtin", "--instance-type", "t3.nano"});
  ASSERT_EQ(o.status, 0) << o.err;
  const std::string id = Json::parse(o.out)["Instances"][0].value("InstanceId", "");
  auto alive_revision = [&] {
    auto e = run({"/usr/bin/env", "ETCDCTL_API=3", "/usr/bin/etcdctl", "--endpoints", etcd_eps_, "get",
                  "/azote/region/alive/h1", "-w", "json"});
    const Json j = Json::parse(e.out, nullptr, false);
    return j.is_object() && j.contains("kvs") ? j["kvs"][0].value("mod_revision", int64_t{0}) : int64_t{0};
  };
  const int64_t epoch_before = alive_revision();
  ASSERT_GT(epoch_before, 0);
  // The host's own clients are not fenced; the region's principal cannot leave its epoch
  // out (the fence, not the region's good will): the test's calls with cp_ keep working.
  EXPECT_EQ(instance(id)["state"].value("name", ""), "running");
  // The region freezes for longer than a lease (a long pause, a partition).
  region_->signal(SIGSTOP);
  std::this_thread::sleep_for(std::chrono::seconds(kLeaseSeconds + 2));
  region_->signal(SIGCONT);
  // Its first call under the old epoch is refused by the host, and audited there...
  EXPECT_TRUE(eventually([&] { return slurp(dir_ + "/audit/audit.log").find("RegionLeaseLost") != std::string::npos ||
                                      slurp(dir_ + "/audit/audit.log").find("lapsed") != std::string::npos; },
                         30s))
      << "the host never refused the lapsed lease";
  // ...then the region takes a new lease (a larger epoch) and the host obeys it again.
  EXPECT_TRUE(eventually([&] { return alive_revision() > epoch_before; }, 30s)) << "no new lease was taken";
  EXPECT_TRUE(eventually([&] {
    auto d = aws(admin_, {"describe-hosts", "--host-ids", "h1", "--query", "Hosts[0].State", "--output", "text"});
    return d.out.rfind("available", 0) == 0;
  }, 30s));
  o = aws(admin_, {"terminate-instances", "--instance-ids", id});
  EXPECT_EQ(o.status, 0) << o.err;
}

}  // namespace
}  // namespace azote::test
