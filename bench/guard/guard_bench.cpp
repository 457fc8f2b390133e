// What the write guard costs an open: open(O_RDONLY)+close of a protected file against
// the same on an unprotected neighbour, interleaved, as root (the launcher's case: every
// open of a guarded binary or of azote-rot's state). With fanotify each open of a
// protected file waits for the helper's answer; with the BPF LSM it runs a program.
//
//   azote-guard-bench [--iterations N] [--mechanism auto|fanotify|bpf-lsm]
// prints one JSON object (microseconds).
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "guard/guard.hpp"

using namespace azote;

namespace {

double percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

double open_close_us(const std::string& path) {
  const auto t0 = std::chrono::steady_clock::now();
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd >= 0) ::close(fd);
  return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  int iterations = 20000;
  std::optional<guard::Mechanism> only;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i], v = argv[i + 1];
    if (a == "--iterations") iterations = std::max(100, std::atoi(v.c_str()));
    else if (a == "--mechanism" && v == "fanotify") only = guard::Mechanism::kFanotify;
    else if (a == "--mechanism" && v == "bpf-lsm") only = guard::Mechanism::kBpfLsm;
    else if (!(a == "--mechanism" && v == "auto")) {
      std::fprintf(stderr, "usage: azote-guard-bench [--iterations N] [--mechanism auto|fanotify|bpf-lsm]\n");
      return 64;
    }
  }
  const std::string dir = "/tmp/azote-guard-bench-" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/guarded") << "x";
  std::ofstream(dir + "/plain") << "x";
  auto g = guard::WriteGuard::start(only);
  if (!g) {
    std::fprintf(stderr, "azote-guard-bench: %s\n", g.error().message().c_str());
    std::filesystem::remove_all(dir);
    return 69;
  }
  if (auto p = (*g)->protect(dir + "/guarded", std::nullopt, false); !p) {
    std::fprintf(stderr, "azote-guard-bench: %s\n", p.error().message().c_str());
    return 71;
  }
  std::vector<double> guarded, plain;
  for (int i = 0; i < 200; ++i) (void)open_close_us(dir + "/guarded"), (void)open_close_us(dir + "/plain");  // warm
  for (int i = 0; i < iterations; ++i) {
    guarded.push_back(open_close_us(dir + "/guarded"));
    plain.push_back(open_close_us(dir + "/plain"));
  }
  const std::string mech = guard::to_string((*g)->mechanism());
  g->reset();
  std::filesystem::remove_all(dir);
  std::printf("{\"mechanism\": \"%s\", \"iterations\": %d, \"guarded_open_us\": {\"p50\": %.2f, \"p99\": %.2f}, "
              "\"plain_open_us\": {\"p50\": %.2f, \"p99\": %.2f}, \"added_p50_us\": %.2f, \"ratio_p50\": %.2f}\n",
              mech.c_str(), iterations, percentile(guarded, 0.5), percentile(guarded, 0.99), percentile(plain, 0.5),
              percentile(plain, 0.99), percentile(guarded, 0.5) - percentile(plain, 0.5),
              percentile(guarded, 0.5) / percentile(plain, 0.5));
  return 0;
}
