// End to end with the real kernel and curl: two client network namespaces, each with a TUN
// "eth0" (10.0.1.5/24 and 10.0.1.6/24) and a route to 169.254.169.254 through it. A pump
// thread moves what the clients' kernels send into Service::inject(slot, ...) and the
// service's output back to the right client TUN; curl runs in the client namespaces.
// Needs root, /dev/net/tun, `ip` (iproute2) and curl: otherwise SKIPPED with the reason.
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <thread>

#include "base/unique_fd.hpp"
#include "imds/service.hpp"
#include "net/ipv4.hpp"
#include "net/l4.hpp"

namespace azote::imds {
namespace {

int run(const std::string& cmd) { return std::system((cmd + " >/dev/null 2>&1").c_str()); }

std::string capture(const std::string& cmd) {
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  ::pclose(p);
  return out;
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

// A TUN device named "eth0" inside the named network namespace (opened from a thread that
// enters it: the device is created in the opener's namespace).
UniqueFd tun_in_namespace(const std::string& ns) {
  UniqueFd result;
  std::thread t([&] {
    UniqueFd nsfd(::open(("/var/run/netns/" + ns).c_str(), O_RDONLY | O_CLOEXEC));
    if (!nsfd || ::setns(nsfd.get(), CLONE_NEWNET) != 0) return;
    UniqueFd tun(::open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC));
    if (!tun) return;
    ifreq ifr{};
    std::strncpy(ifr.ifr_name, "eth0", IFNAMSIZ - 1);
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
    if (::ioctl(tun.get(), TUNSETIFF, &ifr) != 0) return;
    result = std::move(tun);
  });
  t.join();
  return result;
}

InstanceMetadata metadata(const std::string& id, const std::string& ip, bool tokens_required) {
  InstanceMetadata md;
  md.instance_id = id;
  md.instance_type = "t3.micro";
  md.ami_id = "ami-0abcdef1234567890";
  md.local_ipv4 = ip;
  md.mac = "02:00:0a:00:01:0" + ip.substr(ip.size() - 1);
  md.hostname = "ip-" + ip + ".eu-west-1.compute.internal";
  md.local_hostname = md.hostname;
  md.availability_zone = "eu-west-1a";
  md.region = "eu-west-1";
  md.account_id = "123456789012";
  md.security_groups = {"default"};
  md.http_tokens_required = tokens_required;
  return md;
}

struct Client {
  std::string ns;
  std::string ip;
  UniqueFd tun;
  uint32_t slot = 0;
};

class EndToEnd : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { env_ = new Env(); }
  static void TearDownTestSuite() {
    delete env_;
    env_ = nullptr;
  }
  void SetUp() override {
    if (!env_->skip.empty()) GTEST_SKIP() << env_->skip;
    ASSERT_TRUE(env_->error.empty()) << env_->error;
  }

  struct Curl {
    int code = 0;
    std::string body;
  };
  // curl in client `c`'s namespace; extra arguments are shell words.
  static Curl curl(const Client& c, const std::string& args, const std::string& path) {
    const std::string out_file = "/tmp/azote-imds-" + std::to_string(::getpid()) + "-curl.out";
    std::filesystem::remove(out_file);
    const std::string code = capture("ip netns exec " + c.ns + " curl -s --noproxy '*' -m 10 -o " + out_file +
                                     " -w '%{http_code}' " + args + " 'http://169.254.169.254" + path + "'");
    Curl r;
    r.code = std::atoi(code.c_str());
    r.body = read_file(out_file);
    std::filesystem::remove(out_file);
    return r;
  }
  static std::string token(const Client& c, int ttl = 60) {
    const Curl r = curl(c, "-X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: " + std::to_string(ttl) + "'",
                        "/latest/api/token");
    EXPECT_EQ(r.code, 200);
    return r.body;
  }

  struct Env {
    std::string skip;   // why the suite cannot run here
    std::string error;  // set-up failed although it should work
    std::unique_ptr<Service> service;
    Client clients[2];
    UniqueFd stop;
    std::thread pump;
    std::atomic<uint64_t> replies{0};
    std::atomic<uint64_t> replies_ttl_not_1{0};
    std::atomic<uint64_t> replies_bad_checksum{0};

    Env() {
      if (::geteuid() != 0) {
        skip = "needs root (network namespaces, TUN devices)";
        return;
      }
      if (::access("/dev/net/tun", R_OK | W_OK) != 0) {
        skip = "no /dev/net/tun";
        return;
      }
      if (run("command -v ip") != 0 || run("command -v curl") != 0) {
        skip = "needs ip (iproute2) and curl";
        return;
      }
      auto s = Service::start();
      if (!s.ok()) {
        if (s.error().code == ImdsErrc::kNamespace || s.error().code == ImdsErrc::kTun) {
          skip = "network namespace or TUN unavailable: " + s.error().message();
        } else {
          error = "Service::start: " + s.error().message();
        }
        return;
      }
      service = std::move(s).value();
      const std::string pid = std::to_string(::getpid());
      const char* ips[2] = {"10.0.1.5", "10.0.1.6"};
      for (int i = 0; i < 2; ++i) {
        Client& c = clients[i];
        c.ns = "azote-imds-" + pid + "-c" + std::to_string(i + 1);
        c.ip = ips[i];
        if (run("ip netns add " + c.ns) != 0) {
          skip = "ip netns add " + c.ns + " failed";
          c.ns.clear();
          return;
        }
        c.tun = tun_in_namespace(c.ns);
        if (!c.tun) {
          error = "TUN eth0 in " + c.ns;
          return;
        }
        run("ip netns exec " + c.ns + " sysctl -qw net.ipv6.conf.all.disable_ipv6=1");
        const std::string ipn = "ip -n " + c.ns + " ";
        if (run(ipn + "addr add " + c.ip + "/24 dev eth0") != 0 || run(ipn + "link set eth0 mtu 1500 up") != 0 ||
            run(ipn + "link set lo up") != 0 || run(ipn + "route add 169.254.169.254/32 dev eth0") != 0) {
          error = "configuring eth0 in " + c.ns;
          return;
        }
      }
      // C1 allows IMDSv1, C2 requires tokens.
      auto a = service->add(metadata("i-0000000000000c001", "10.0.1.5", false));
      auto b = service->add(metadata("i-0000000000000c002", "10.0.1.6", true));
      if (!a.ok() || !b.ok()) {
        error = "Service::add";
        return;
      }
      clients[0].slot = *a;
      clients[1].slot = *b;
      service->set_output([this](uint32_t slot, std::span<const uint8_t> pkt) { deliver(slot, pkt); });
      stop.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
      pump = std::thread([this] { pump_loop(); });
    }

    ~Env() {
      if (pump.joinable()) {
        const uint64_t one = 1;
        (void)!::write(stop.get(), &one, sizeof one);
        pump.join();
      }
      service.reset();
      for (auto& c : clients) {
        c.tun.reset();
        if (!c.ns.empty()) run("ip netns del " + c.ns);
      }
    }

    // The service's output: the reply goes to the client TUN of its slot.
    void deliver(uint32_t slot, std::span<const uint8_t> pkt) {
      replies.fetch_add(1);
      auto ip = net::parse_ipv4(pkt);
      if (!ip.ok() || !net::parse_tcp(*ip).ok()) replies_bad_checksum.fetch_add(1);
      if (ip.ok() && ip->ttl != 1) replies_ttl_not_1.fetch_add(1);
      for (auto& c : clients) {
        if (c.slot == slot) (void)!::write(c.tun.get(), pkt.data(), pkt.size());
      }
    }

    void pump_loop() {
      pollfd fds[3] = {{clients[0].tun.get(), POLLIN, 0}, {clients[1].tun.get(), POLLIN, 0}, {stop.get(), POLLIN, 0}};
      std::vector<uint8_t> buf(65536);
      for (;;) {
        if (::poll(fds, 3, -1) < 0) continue;
        if (fds[2].revents != 0) return;
        for (int i = 0; i < 2; ++i) {
          if (fds[i].revents == 0) continue;
          for (;;) {
            const ssize_t n = ::read(clients[i].tun.get(), buf.data(), buf.size());
            if (n <= 0) break;
            (void)service->inject(clients[i].slot, std::span<const uint8_t>(buf.data(), static_cast<size_t>(n)));
          }
        }
      }
    }
  };
  static Env* env_;
};
EndToEnd::Env* EndToEnd::env_ = nullptr;

TEST_F(EndToEnd, TokenThenInstanceId) {
  const Client& c1 = env_->clients[0];
  const std::string t = token(c1);
  ASSERT_EQ(t.size(), kTokenTextLen);
  const Curl r = curl(c1, "-H 'X-aws-ec2-metadata-token: " + t + "'", "/latest/meta-data/instance-id");
  EXPECT_EQ(r.code, 200);
  EXPECT_EQ(r.body, "i-0000000000000c001");
  const Curl ip = curl(c1, "-H 'X-aws-ec2-metadata-token: " + t + "'", "/latest/meta-data/local-ipv4");
  EXPECT_EQ(ip.body, "10.0.1.5");
  const Curl doc = curl(c1, "-H 'X-aws-ec2-metadata-token: " + t + "'", "/latest/dynamic/instance-identity/document");
  ASSERT_EQ(doc.code, 200);
  EXPECT_EQ(nlohmann::json::parse(doc.body)["instanceId"], "i-0000000000000c001");
}

TEST_F(EndToEnd, AnotherInstancesTokenIs401) {
  const Client& c1 = env_->clients[0];
  const Client& c2 = env_->clients[1];
  const std::string t2 = token(c2);
  EXPECT_EQ(curl(c1, "-H 'X-aws-ec2-metadata-token: " + t2 + "'", "/latest/meta-data/instance-id").code, 401);
  const Curl own = curl(c2, "-H 'X-aws-ec2-metadata-token: " + t2 + "'", "/latest/meta-data/instance-id");
  EXPECT_EQ(own.code, 200);
  EXPECT_EQ(own.body, "i-0000000000000c002");
}

TEST_F(EndToEnd, TokensRequiredOrOptional) {
  const Client& c1 = env_->clients[0];
  const Client& c2 = env_->clients[1];
  EXPECT_EQ(curl(c2, "", "/latest/meta-data/instance-id").code, 401);
  const Curl v1 = curl(c1, "", "/latest/meta-data/instance-id");
  EXPECT_EQ(v1.code, 200);
  EXPECT_EQ(v1.body, "i-0000000000000c001");
  // Required from now on; the change applies to the next request.
  ASSERT_TRUE(env_->service->update(c1.slot, metadata("i-0000000000000c001", "10.0.1.5", true)).ok());
  EXPECT_EQ(curl(c1, "", "/latest/meta-data/instance-id").code, 401);
  ASSERT_TRUE(env_->service->update(c1.slot, metadata("i-0000000000000c001", "10.0.1.5", false)).ok());
}

TEST_F(EndToEnd, UserDataRoundTripsAndForwardedPutIsRefused) {
  const Client& c2 = env_->clients[1];
  InstanceMetadata md = metadata("i-0000000000000c002", "10.0.1.6", true);
  for (int i = 0; i < 5000; ++i) md.user_data.push_back(static_cast<uint8_t>(i * 7 + (i >> 8)));
  ASSERT_TRUE(env_->service->update(c2.slot, md).ok());
  const std::string t = token(c2);  // issued after the update: tokens survive updates anyway
  const Curl r = curl(c2, "-H 'X-aws-ec2-metadata-token: " + t + "'", "/latest/user-data");
  EXPECT_EQ(r.code, 200);
  EXPECT_EQ(std::vector<uint8_t>(r.body.begin(), r.body.end()), md.user_data);
  const Curl fwd = curl(c2, "-X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' -H 'X-Forwarded-For: 1.2.3.4'",
                        "/latest/api/token");
  EXPECT_EQ(fwd.code, 403);
  EXPECT_EQ(curl(c2, "-X POST -H 'X-aws-ec2-metadata-token: " + t + "'", "/latest/meta-data/").code, 405);
  EXPECT_EQ(curl(c2, "-H 'X-aws-ec2-metadata-token: " + t + "'", "/latest/meta-data/nope").code, 404);
}

TEST_F(EndToEnd, RepliesCarryTtl1) {
  // CTest runs each test in a process of its own: make some traffic first.
  const Client& c1 = env_->clients[0];
  const Client& c2 = env_->clients[1];
  const std::string t1 = token(c1);
  const std::string t2 = token(c2);
  EXPECT_EQ(curl(c1, "-H 'X-aws-ec2-metadata-token: " + t1 + "'", "/latest/meta-data/").code, 200);
  EXPECT_EQ(curl(c1, "-H 'X-aws-ec2-metadata-token: " + t2 + "'", "/latest/meta-data/").code, 401);
  EXPECT_EQ(curl(c2, "", "/latest/meta-data/").code, 401);
  EXPECT_EQ(curl(c2, "-X PUT -H 'X-Forwarded-For: 1.2.3.4' -H 'X-aws-ec2-metadata-token-ttl-seconds: 9'",
                 "/latest/api/token").code, 403);
  ASSERT_GT(env_->replies.load(), 20u);
  EXPECT_EQ(env_->replies_ttl_not_1.load(), 0u);
  EXPECT_EQ(env_->replies_bad_checksum.load(), 0u);
  const Counters c = env_->service->counters();
  EXPECT_EQ(c.ttl_rewritten, 0u);  // the kernel itself sent TTL 1 (IP_TTL on the socket)
  EXPECT_GT(c.packets_in, 20u);
  EXPECT_EQ(c.packets_out, env_->replies.load());
  EXPECT_GE(c.tokens_issued, 2u);
  EXPECT_GE(c.status(401), 2u);
  EXPECT_GE(c.status(200), 3u);
  EXPECT_GE(c.status(403), 1u);
  EXPECT_GE(c.refusals[static_cast<size_t>(Refusal::kOtherSlotToken)], 1u);
  EXPECT_GE(c.refusals[static_cast<size_t>(Refusal::kNoToken)], 1u);
  EXPECT_GE(c.refusals[static_cast<size_t>(Refusal::kForwarded)], 1u);
  EXPECT_GE(c.connections, 6u);
  for (size_t d = 0; d < kDropCount; ++d) {
    if (c.dropped_in[d] || c.dropped_out[d]) {
      std::printf("drops %s: in %llu out %llu\n", to_string(static_cast<Drop>(d)),
                  static_cast<unsigned long long>(c.dropped_in[d]), static_cast<unsigned long long>(c.dropped_out[d]));
    }
  }
}

TEST_F(EndToEnd, ParallelClientsInBothNamespaces) {
  // 2 namespaces × 6 shells × 5 requests, all at once (under the 8 connections per slot).
  std::string script;
  for (const Client& c : env_->clients) {
    for (int i = 0; i < 6; ++i) {
      script += "(for j in 1 2 3 4 5; do ip netns exec " + c.ns +
                " curl -s --noproxy '*' -m 10 -o /dev/null -w '%{http_code}\\n' "
                "-H 'X-aws-ec2-metadata-token: @T" + c.ns + "' http://169.254.169.254/latest/meta-data/mac; done) & ";
    }
  }
  for (const Client& c : env_->clients) {
    const std::string marker = "@T" + c.ns;
    const std::string t = token(c);
    for (size_t at; (at = script.find(marker)) != std::string::npos;) script.replace(at, marker.size(), t);
  }
  const std::string out = capture("bash -c \"" + script + "wait\"");
  size_t ok = 0;
  for (size_t at = 0; (at = out.find("200", at)) != std::string::npos; at += 3) ++ok;
  EXPECT_EQ(ok, 60u) << out;
}

TEST_F(EndToEnd, RemovedSlotGetsNoAnswer) {
  const Client& c1 = env_->clients[0];
  ASSERT_TRUE(env_->service->remove(c1.slot).ok());
  EXPECT_EQ(env_->service->inject(c1.slot, std::vector<uint8_t>(40)).error(), Drop::kNoSlot);
  const Curl r = curl(c1, "-m 2", "/latest/meta-data/instance-id");
  EXPECT_EQ(r.code, 0);  // no connection
}

size_t open_fds() {
  return static_cast<size_t>(std::distance(std::filesystem::directory_iterator("/proc/self/fd"),
                                           std::filesystem::directory_iterator()));
}

TEST(Service, StartStopLeaksNoDescriptor) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (network namespaces, TUN devices)";
  const size_t before = open_fds();
  for (int i = 0; i < 3; ++i) {
    auto s = Service::start();
    if (!s.ok() && (s.error().code == ImdsErrc::kNamespace || s.error().code == ImdsErrc::kTun)) {
      GTEST_SKIP() << "network namespace or TUN unavailable: " << s.error().message();
    }
    ASSERT_TRUE(s.ok()) << s.error().message();
    ASSERT_TRUE((*s)->add(metadata("i-1", "10.0.1.5", true)).ok());
  }
  EXPECT_EQ(open_fds(), before);
}

TEST(Service, BadOptionsAreRefused) {
  Options o;
  o.max_slots = 0;
  EXPECT_EQ(Service::start(o).error().code, ImdsErrc::kBadOptions);
  o = Options{};
  o.tun_name = "a-name-far-too-long-for-ifnamsiz";
  EXPECT_EQ(Service::start(o).error().code, ImdsErrc::kBadOptions);
}

}  // namespace
}  // namespace azote::imds
