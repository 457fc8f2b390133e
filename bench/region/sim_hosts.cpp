// azote-sim-hosts: many simulated hosts in one process, for the region's scale benchmark
// (bench/region/scale.py). NOT the controller: a stand-in that speaks the hosts' gRPC API
// (azote.proto's Ec2 service, the part azote-region calls) over mutual TLS with a CA of its
// own, and runs no VM — an instance is "running" the moment it is launched. Each simulated
// host is one client certificate (CN h1 ... hN, issued by the stand-in's CA): the region
// registers every host with its own credentials and the same endpoint, and the stand-in
// knows which host a call is for by the caller's certificate.
//
//   azote-sim-hosts --dir DIR --hosts N
//     DIR/pki (its CA), DIR/creds/hI/{ca,cert,key}.pem, serving on unix:DIR/sim.sock;
//     prints "azote-sim-hosts: ready" and serves until SIGTERM.
#include <grpcpp/grpcpp.h>
#include <sys/random.h>
#include <sys/stat.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "api/azote.grpc.pb.h"
#include "pki/files.hpp"
#include "pki/pki.hpp"

namespace {

namespace v1 = azote::v1;
using grpc::ServerContext;
using grpc::Status;

struct Type {
  const char* name;
  uint32_t vcpus;
  uint64_t mib;
};
constexpr Type kTypes[] = {{"t3.nano", 2, 512}, {"t3.micro", 2, 1024}, {"t3.small", 2, 2048}, {"t3.medium", 2, 4096}};

std::string hex(size_t n) {
  static const char* d = "0123456789abcdef";
  std::string s;
  uint8_t b[32];
  while (s.size() < n) {
    if (::getrandom(b, sizeof b, 0) != static_cast<ssize_t>(sizeof b)) continue;
    for (uint8_t c : b)
      if (s.size() < n) s += d[c & 15];
  }
  return s;
}

std::string now_rfc3339() {
  char buf[32];
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

Status fail(ServerContext* ctx, grpc::StatusCode code, const std::string& ec2_code, const std::string& msg) {
  ctx->AddTrailingMetadata("azote-error-code", ec2_code);
  return Status(code, ec2_code + ": " + msg);
}

class Sim final : public v1::Ec2::Service {
 public:
  Status DescribeInstanceTypes(ServerContext*, const v1::DescribeInstanceTypesRequest* req,
                               v1::DescribeInstanceTypesResponse* resp) override {
    for (const Type& t : kTypes) {
      bool want = req->instance_types_size() == 0;
      for (const auto& n : req->instance_types()) want = want || n == t.name;
      if (!want) continue;
      auto* i = resp->add_instance_types();
      i->set_instance_type(t.name);
      i->set_vcpus(t.vcpus);
      i->set_memory_mib(t.mib);
    }
    return Status::OK;
  }

  Status RunInstances(ServerContext* ctx, const v1::RunInstancesRequest* req, v1::RunInstancesResponse* resp) override {
    const std::string host = host_of(ctx);
    const Type* type = nullptr;
    const std::string tn = req->instance_type().empty() ? "t3.micro" : req->instance_type();
    for (const Type& t : kTypes)
      if (tn == t.name) type = &t;
    if (type == nullptr) return fail(ctx, grpc::StatusCode::INVALID_ARGUMENT, "InvalidParameterValue", "type " + tn);
    const uint32_t count = req->count() == 0 ? 1 : req->count();
    resp->set_reservation_id("r-" + hex(17));
    std::lock_guard lock(mu_);
    auto& insts = hosts_[host];
    for (uint32_t k = 0; k < count; ++k) {
      v1::Instance i;
      i.set_instance_id("i-" + hex(17));
      i.set_image_id(req->image_id());
      i.set_instance_type(tn);
      i.mutable_state()->set_name("running");
      i.set_launch_time(now_rfc3339());
      i.set_vcpus(type->vcpus);
      i.set_memory_mib(type->mib);
      i.set_reservation_id(resp->reservation_id());
      *i.mutable_tags() = req->tags();
      // The interface as the region chose it (a real host checks it against the pushed network).
      i.set_subnet_id(req->subnet_id());
      i.set_private_ip_address(req->private_ip_address());
      insts[i.instance_id()] = i;
      *resp->add_instances() = i;
    }
    return Status::OK;
  }

  // The region's network: its generation kept per simulated host, nothing else.
  Status ApplyRegionNetwork(ServerContext* ctx, const v1::RegionNetwork* req, v1::ApplyRegionNetworkResponse* resp) override {
    std::lock_guard lock(mu_);
    uint64_t& held = network_generation_[host_of(ctx)];
    if (req->generation() < held)
      return fail(ctx, grpc::StatusCode::FAILED_PRECONDITION, "IncorrectState", "an older generation");
    held = req->generation();
    resp->set_generation(held);
    return Status::OK;
  }

  Status DescribeInstances(ServerContext* ctx, const v1::DescribeInstancesRequest* req,
                           v1::DescribeInstancesResponse* resp) override {
    const std::string host = host_of(ctx);
    std::lock_guard lock(mu_);
    auto& insts = hosts_[host];
    if (req->instance_ids_size() == 0) {
      for (const auto& [id, i] : insts) *resp->add_instances() = i;
      return Status::OK;
    }
    for (const auto& id : req->instance_ids()) {
      auto it = insts.find(id);
      if (it == insts.end())
        return fail(ctx, grpc::StatusCode::NOT_FOUND, "InvalidInstanceID.NotFound", "The instance ID '" + id + "' does not exist");
      *resp->add_instances() = it->second;
    }
    return Status::OK;
  }

  Status TerminateInstances(ServerContext* ctx, const v1::InstanceIdsRequest* req,
                            v1::InstanceStateChangesResponse* resp) override {
    const std::string host = host_of(ctx);
    std::lock_guard lock(mu_);
    auto& insts = hosts_[host];
    for (const auto& id : req->instance_ids()) {
      auto it = insts.find(id);
      if (it == insts.end())
        return fail(ctx, grpc::StatusCode::NOT_FOUND, "InvalidInstanceID.NotFound", "The instance ID '" + id + "' does not exist");
      auto* c = resp->add_instances();
      c->set_instance_id(id);
      c->mutable_previous_state()->set_name(it->second.state().name());
      c->mutable_current_state()->set_name("terminated");
      it->second.mutable_state()->set_name("terminated");
    }
    return Status::OK;
  }

 private:
  static std::string host_of(ServerContext* ctx) {
    const auto cn = ctx->auth_context()->FindPropertyValues("x509_common_name");
    return cn.empty() ? "" : std::string(cn.front().data(), cn.front().size());
  }
  std::mutex mu_;
  std::map<std::string, std::map<std::string, v1::Instance>> hosts_;  // mu_
  std::map<std::string, uint64_t> network_generation_;  // mu_
};

int usage(const char* why) {
  std::fprintf(stderr, "azote-sim-hosts: %s\nusage: azote-sim-hosts --dir DIR --hosts N\n", why);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  // Blocked before gRPC starts its threads: main takes SIGTERM/SIGINT with sigwait.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::string dir;
  int n = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    if (k == "--dir") dir = argv[i + 1];
    else if (k == "--hosts") n = std::atoi(argv[i + 1]);
    else return usage("unknown option");
  }
  if (dir.empty() || n < 1 || n > 10000) return usage("--dir and --hosts (1 to 10000) are needed");
  std::filesystem::create_directories(dir);
  auto pki = azote::pki::HostPki::open_or_create(dir + "/pki");
  if (!pki) return usage("its PKI cannot be made");
  for (int h = 1; h <= n; ++h) {
    const std::string d = dir + "/creds/h" + std::to_string(h);
    std::filesystem::create_directories(d);
    auto c = pki->issue_client("control-plane", "h" + std::to_string(h), std::chrono::hours(24));
    if (!c) return usage("a client certificate cannot be issued");
    if (!azote::pki::write_file_atomic(d + "/ca.pem", pki->ca_pem(), 0644) ||
        !azote::pki::write_file_atomic(d + "/cert.pem", c->cert_pem, 0644) ||
        !azote::pki::write_file_atomic(d + "/key.pem", c->key_pem, 0600))
      return usage("credentials cannot be written");
  }
  grpc::SslServerCredentialsOptions tls(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  tls.pem_root_certs = pki->ca_pem();
  tls.pem_key_cert_pairs.push_back({pki->server_key_pem(), pki->server_cert_pem()});
  Sim sim;
  grpc::ServerBuilder b;
  const std::string sock = dir + "/sim.sock";
  std::filesystem::remove(sock);
  b.AddListeningPort("unix:" + sock, grpc::SslServerCredentials(tls));
  b.RegisterService(&sim);
  auto server = b.BuildAndStart();
  if (!server) return usage("cannot serve");
  std::printf("azote-sim-hosts: ready %d hosts on unix:%s\n", n, sock.c_str());
  std::fflush(stdout);
  int sig = 0;
  sigwait(&set, &sig);
  server->Shutdown();
  return 0;
}
