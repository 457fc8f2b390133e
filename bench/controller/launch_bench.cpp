// azote-launch-bench: RunInstances → running latency (p50/p99), launches per second,
// and the controller's RSS after N instance records, measured against a live
// azote-controller through its real API (mutual TLS, audit log and all).
//
//   azote-launch-bench --endpoint EP --credentials DIR --controller-pid PID
//                      [--launches N] [--burst M] [--type T] [--poll-ms MS]
//
// "running" is observed by polling DescribeInstances every --poll-ms (default 5), so
// latencies carry that resolution; every poll is an audited API call, as a real
// client's would be. Prints one JSON object on stdout.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "api/azote.grpc.pb.h"
#include "api/client.hpp"

using namespace azote;
using Clock = std::chrono::steady_clock;

namespace {

struct Args {
  std::string endpoint, credentials, type = "t3.nano";
  int pid = 0, launches = 100, burst = 10, poll_ms = 5;
};

double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

long rss_kib(int pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  return -1;
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5));
  return v[i];
}

class Bench {
 public:
  explicit Bench(std::shared_ptr<grpc::Channel> ch, const Args& a) : stub_(v1::Ec2::NewStub(ch)), a_(a) {}

  bool ok(const grpc::Status& s, const char* what) {
    if (s.ok()) return true;
    std::fprintf(stderr, "azote-launch-bench: %s: %s\n", what, s.error_message().c_str());
    return false;
  }

  // Waits until every id is in `want`; false if one lands elsewhere for good.
  bool wait_all(const std::vector<std::string>& ids, const std::string& want) {
    for (;;) {
      grpc::ClientContext ctx;
      v1::DescribeInstancesRequest req;
      for (const auto& id : ids) req.add_instance_ids(id);
      v1::DescribeInstancesResponse resp;
      if (!ok(stub_->DescribeInstances(&ctx, req, &resp), "DescribeInstances")) return false;
      size_t done = 0;
      for (const auto& i : resp.instances()) {
        const std::string& s = i.state().name();
        if (s == want) ++done;
        else if ((s == "terminated" || s == "stopped") && s != want) {
          std::fprintf(stderr, "azote-launch-bench: %s is %s: %s\n", i.instance_id().c_str(), s.c_str(),
                       i.state_reason().message().c_str());
          return false;
        }
      }
      if (done == ids.size()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(a_.poll_ms));
    }
  }

  std::vector<std::string> run(int count) {
    grpc::ClientContext ctx;
    v1::RunInstancesRequest req;
    req.set_image_id("ami-builtin");
    req.set_instance_type(a_.type);
    req.set_count(static_cast<uint32_t>(count));
    v1::RunInstancesResponse resp;
    std::vector<std::string> ids;
    if (!ok(stub_->RunInstances(&ctx, req, &resp), "RunInstances")) return ids;
    for (const auto& i : resp.instances()) ids.push_back(i.instance_id());
    return ids;
  }

  bool terminate(const std::vector<std::string>& ids) {
    grpc::ClientContext ctx;
    v1::InstanceIdsRequest req;
    for (const auto& id : ids) req.add_instance_ids(id);
    v1::InstanceStateChangesResponse resp;
    return ok(stub_->TerminateInstances(&ctx, req, &resp), "TerminateInstances") && wait_all(ids, "terminated");
  }

 private:
  std::unique_ptr<v1::Ec2::Stub> stub_;
  const Args& a_;
};

}  // namespace

int main(int argc, char** argv) {
  Args a;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--endpoint") a.endpoint = v;
    else if (k == "--credentials") a.credentials = v;
    else if (k == "--controller-pid") a.pid = std::stoi(v);
    else if (k == "--launches") a.launches = std::stoi(v);
    else if (k == "--burst") a.burst = std::stoi(v);
    else if (k == "--type") a.type = v;
    else if (k == "--poll-ms") a.poll_ms = std::stoi(v);
    else {
      std::fprintf(stderr, "azote-launch-bench: unknown option %s\n", k.c_str());
      return 2;
    }
  }
  auto creds = api::load_credentials(a.credentials);
  if (!creds || a.endpoint.empty() || a.pid <= 0) {
    std::fprintf(stderr, "usage: azote-launch-bench --endpoint EP --credentials DIR --controller-pid PID [...]\n");
    return 2;
  }
  Bench b(api::make_channel(a.endpoint, *creds), a);
  const long rss_before = rss_kib(a.pid);

  // 1. One at a time: RunInstances → running, then terminate (not timed).
  std::vector<double> lat;
  for (int i = 0; i < a.launches; ++i) {
    const auto t0 = Clock::now();
    auto ids = b.run(1);
    if (ids.empty() || !b.wait_all(ids, "running")) return 1;
    lat.push_back(ms_since(t0));
    if (!b.terminate(ids)) return 1;
    if ((i + 1) % 10 == 0) std::fprintf(stderr, "azote-launch-bench: %d/%d launched\n", i + 1, a.launches);
  }
  const long rss_after = rss_kib(a.pid);

  // 2. A burst: one RunInstances for M instances, until all run.
  const auto t0 = Clock::now();
  auto ids = b.run(a.burst);
  if (static_cast<int>(ids.size()) != a.burst || !b.wait_all(ids, "running")) return 1;
  const double burst_ms = ms_since(t0);
  if (!b.terminate(ids)) return 1;

  std::printf(
      "{\"type\": \"%s\", \"launches\": %d, \"poll_ms\": %d, \"p50_ms\": %.1f, \"p99_ms\": %.1f, \"min_ms\": %.1f, "
      "\"max_ms\": %.1f, \"sequential_launches_per_s\": %.2f, \"burst\": %d, \"burst_ms\": %.1f, "
      "\"burst_launches_per_s\": %.2f, \"controller_rss_kib_start\": %ld, \"controller_rss_kib_after_records\": %ld, "
      "\"instance_records\": %d}\n",
      a.type.c_str(), a.launches, a.poll_ms, percentile(lat, 0.5), percentile(lat, 0.99),
      *std::min_element(lat.begin(), lat.end()), *std::max_element(lat.begin(), lat.end()),
      1000.0 / percentile(lat, 0.5), a.burst, burst_ms, a.burst * 1000.0 / burst_ms, rss_before, rss_after,
      a.launches + a.burst);
  return 0;
}
