// azote-bench: azote-hv against QEMU microvm (and the host, for CPU work) on the same machine in
// the same run. Each scenario runs its peers interleaved (A B, B A, A B, ...) after one warm-up
// run each, keeps every sample, and writes medians, ratios and goals to BENCH_OUT/<scenario>.json
// plus a Markdown table (summary.md). See docs/benchmarks.md for the method.
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "process.hpp"
#include "smaps.hpp"

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

namespace azote::bench {
namespace {

struct Options {
  fs::path build = "build";
  fs::path out = "bench/results";
  std::string hv;
  std::string guest;
  std::string cpu_host;
  std::string vmlinux;
  std::string qemu = "qemu-system-x86_64";
  // What azote-hv boots in the boot and memory scenarios: "builtin:hello" (the default and what
  // published numbers use) or a PVH ELF path, e.g. the stand-in guest, to check the harness.
  std::string hv_kernel = "builtin:hello";
  int runs = 20;
  int mem_runs = 5;
  int linux_runs = 5;
  int cpu_runs = 11;
  int cpu_mib = 64;
  double linux_timeout_s = 180;
  std::set<std::string> only;
  bool verbose = false;
  bool report_only = false;  // rewrite summary.md from the JSON already in `out`
  bool check = false;        // exit 1 if any peer that was not skipped failed (for tests)
};

void log(const std::string& s) {
  std::cerr << "azote-bench: " << s << "\n";
}

bool executable(const std::string& p) {
  return access(p.c_str(), X_OK) == 0;
}

bool readable(const std::string& p) {
  return access(p.c_str(), R_OK) == 0;
}

// Finds a program in PATH (for QEMU); returns "" if absent.
std::string which(const std::string& name) {
  if (name.find('/') != std::string::npos) {
    return executable(name) ? name : "";
  }
  const char* path = std::getenv("PATH");
  std::istringstream dirs(path ? path : "/usr/bin:/bin");
  std::string d;
  while (std::getline(dirs, d, ':')) {
    const std::string p = d + "/" + name;
    if (executable(p)) {
      return p;
    }
  }
  return "";
}

double median(std::vector<double> v) {
  if (v.empty()) {
    return 0;
  }
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

std::string tail(const std::string& s, std::size_t n) {
  return s.size() <= n ? s : "..." + s.substr(s.size() - n);
}

std::string head(const std::string& s, std::size_t n) {
  return s.size() <= n ? s : s.substr(0, n) + "...";
}

// One side of a comparison: a command and how to judge and measure a run of it.
struct Peer {
  std::string name;
  RunSpec spec;
  std::string skip_reason;  // non-empty: not measured, and why
  // Checks one run and adds its metrics to `sample`; returns an error message for a bad run.
  std::function<std::optional<std::string>(const RunResult&, json& sample)> measure;
};

struct PeerResult {
  std::string status = "ok";  // ok | skipped | failed
  std::string reason;
  std::vector<json> samples;
  std::string last_output;
  std::string last_status;
};

// Common metrics of every run.
void base_metrics(const RunResult& r, json& s) {
  s["wall_ms"] = r.wall_s * 1e3;
  s["cpu_ms"] = (r.user_s + r.sys_s) * 1e3;
  s["user_ms"] = r.user_s * 1e3;
  s["sys_ms"] = r.sys_s * 1e3;
  s["maxrss_kib"] = r.maxrss_kib;
}

std::optional<std::string> expect_exit(const RunResult& r, std::set<int> ok) {
  if (!r.started) {
    return r.error;
  }
  if (r.timed_out) {
    return "timed out";
  }
  if (r.term_signal != 0 || ok.count(r.exit_code) == 0) {
    return "unexpected " + describe_status(r);
  }
  return std::nullopt;
}

std::map<std::string, PeerResult> run_interleaved(std::vector<Peer>& peers, int runs,
                                                  const Options& opt) {
  std::map<std::string, PeerResult> res;
  for (auto& p : peers) {
    res[p.name];
    if (!p.skip_reason.empty()) {
      res[p.name].status = "skipped";
      res[p.name].reason = p.skip_reason;
    }
  }
  // Warm-up: page cache, first-use costs. A peer whose warm-up fails is not run further.
  for (auto& p : peers) {
    auto& pr = res[p.name];
    if (pr.status != "ok") {
      continue;
    }
    RunResult r = run_process(p.spec);
    json s;
    auto err = p.measure(r, s);
    pr.last_output = r.output;
    pr.last_status = describe_status(r);
    if (err) {
      pr.status = "failed";
      pr.reason = "warm-up run: " + *err;
      log(p.name + ": " + pr.reason);
      log(p.name + ": output tail: " + tail(r.output, 600));
    }
  }
  for (int i = 0; i < runs; ++i) {
    std::vector<Peer*> order;
    for (auto& p : peers) {
      order.push_back(&p);
    }
    if (i % 2 == 1) {
      std::reverse(order.begin(), order.end());
    }
    for (Peer* p : order) {
      auto& pr = res[p->name];
      if (pr.status != "ok") {
        continue;
      }
      RunResult r = run_process(p->spec);
      json s;
      auto err = p->measure(r, s);
      pr.last_output = r.output;
      pr.last_status = describe_status(r);
      if (err) {
        // One bad run out of many is reported but does not stop the others; a run of 3 does.
        s["error"] = *err;
        pr.samples.push_back(s);
        int bad = 0;
        for (auto it = pr.samples.rbegin(); it != pr.samples.rend() && it->contains("error"); ++it) {
          ++bad;
        }
        log(p->name + " run " + std::to_string(i) + ": " + *err);
        if (bad >= 3) {
          pr.status = "failed";
          pr.reason = "3 consecutive bad runs, last: " + *err;
        }
        continue;
      }
      pr.samples.push_back(s);
      if (opt.verbose) {
        log(p->name + " run " + std::to_string(i) + ": " + s.dump());
      }
    }
  }
  return res;
}

// Median of every numeric metric over the good samples.
json medians(const PeerResult& pr) {
  std::map<std::string, std::vector<double>> cols;
  std::vector<std::string> order;
  for (const auto& s : pr.samples) {
    if (s.contains("error")) {
      continue;
    }
    for (auto it = s.begin(); it != s.end(); ++it) {
      if (it.value().is_number()) {
        if (!cols.count(it.key())) {
          order.push_back(it.key());
        }
        cols[it.key()].push_back(it.value().get<double>());
      }
    }
  }
  json m = json::object();
  for (const auto& k : order) {
    m[k] = median(cols[k]);
  }
  return m;
}

// Minimum of every numeric metric over the good samples (the run least disturbed by other load).
json minima(const PeerResult& pr) {
  json m = json::object();
  for (const auto& s : pr.samples) {
    if (s.contains("error")) {
      continue;
    }
    for (auto it = s.begin(); it != s.end(); ++it) {
      if (it.value().is_number() &&
          (!m.contains(it.key()) || it.value().get<double>() < m[it.key()].get<double>())) {
        m[it.key()] = it.value().get<double>();
      }
    }
  }
  return m;
}

std::size_t good_count(const PeerResult& pr) {
  return static_cast<std::size_t>(std::count_if(pr.samples.begin(), pr.samples.end(),
                                                [](const json& s) { return !s.contains("error"); }));
}

json peer_json(const Peer& p, const PeerResult& pr) {
  json j;
  j["command"] = p.spec.argv;
  j["status"] = pr.status;
  if (!pr.reason.empty()) {
    j["reason"] = pr.reason;
  }
  j["good_runs"] = good_count(pr);
  j["median"] = medians(pr);
  j["min"] = minima(pr);
  j["samples"] = pr.samples;
  if (!pr.last_status.empty()) {
    j["last_run_status"] = pr.last_status;
    j["last_run_output_head"] = head(pr.last_output, 2000);
  }
  return j;
}

std::optional<double> med(const json& scen, const std::string& peer, const std::string& metric) {
  const auto& p = scen["peers"][peer];
  if (p["status"] != "ok" || p["good_runs"].get<std::size_t>() == 0 ||
      !p["median"].contains(metric)) {
    return std::nullopt;
  }
  return p["median"][metric].get<double>();
}

json goal(const std::string& what, const std::string& op, double limit,
          std::optional<double> value) {
  json g;
  g["goal"] = what + " " + op + " " + [&] {
    std::ostringstream s;
    s << limit;
    return s.str();
  }();
  if (!value) {
    g["value"] = nullptr;
    g["met"] = nullptr;
    return g;
  }
  g["value"] = *value;
  g["met"] = op == "<=" ? *value <= limit : *value >= limit;
  return g;
}

std::optional<double> ratio(std::optional<double> a, std::optional<double> b) {
  if (!a || !b || *b == 0) {
    return std::nullopt;
  }
  return *a / *b;
}

// ---------------------------------------------------------------------------------------------
// Scenarios

std::vector<std::string> qemu_microvm(const Options& opt, const std::string& mem,
                                      const std::string& kernel, const std::string& append) {
  return {opt.qemu, "-M", "microvm", "-accel", "kvm", "-cpu", "host,-arch-capabilities", "-m", mem, "-smp", "1",
          "-nodefaults", "-no-user-config", "-nographic", "-serial", "stdio", "-device",
          "isa-debug-exit,iobase=0xf4,iosize=0x01", "-kernel", kernel, "-append", append};
}

std::string missing_hv(const Options& opt) {
  return executable(opt.hv) ? "" : "azote-hv not built (" + opt.hv + " missing)";
}
std::string missing_guest(const Options& opt) {
  return readable(opt.guest) ? "" : "built-in guest ELF not built (" + opt.guest + " missing)";
}
std::string missing_qemu(const Options& opt) {
  return executable(opt.qemu) ? "" : "qemu-system-x86_64 not installed";
}

json run_boot(const Options& opt) {
  std::vector<Peer> peers(3);
  peers[0].name = "azote-hv";
  peers[0].spec.argv = {opt.hv, "--kernel", opt.hv_kernel, "--vcpus", "1", "--memory", "128M"};
  peers[0].skip_reason = missing_hv(opt);
  peers[0].measure = [](const RunResult& r, json& s) {
    base_metrics(r, s);
    return expect_exit(r, {0});
  };
  // The same without the in-kernel PIT, whose teardown dominates the floor on this host.
  peers[2].name = "azote-hv --no-pit";
  peers[2].spec.argv = {opt.hv, "--kernel", opt.hv_kernel, "--vcpus", "1", "--memory", "128M", "--no-pit"};
  peers[2].skip_reason = missing_hv(opt);
  peers[2].measure = peers[0].measure;
  peers[1].name = "qemu";
  peers[1].spec.argv = qemu_microvm(opt, "128M", opt.guest, "azote.run=hello");
  peers[1].skip_reason = !missing_qemu(opt).empty() ? missing_qemu(opt) : missing_guest(opt);
  peers[1].measure = [](const RunResult& r, json& s) {
    base_metrics(r, s);
    return expect_exit(r, {1});  // isa-debug-exit: status (v << 1) | 1, guest wrote 0
  };
  for (auto& p : peers) {
    p.spec.timeout_s = 60;
  }
  auto res = run_interleaved(peers, opt.runs, opt);
  json j;
  j["scenario"] = "boot";
  j["what"] =
      "start to guest exit of the hello guest, 1 vCPU, 128 MiB: wall time (fork to wait4) and "
      "CPU time (user+sys from wait4 rusage) of the VMM process";
  j["azote_kernel"] = opt.hv_kernel;
  j["qemu_kernel"] = opt.guest;
  j["runs_per_peer"] = opt.runs;
  for (auto& p : peers) {
    j["peers"][p.name] = peer_json(p, res[p.name]);
  }
  auto wall_ratio = ratio(med(j, "azote-hv", "wall_ms"), med(j, "qemu", "wall_ms"));
  auto cpu_ratio = ratio(med(j, "azote-hv", "cpu_ms"), med(j, "qemu", "cpu_ms"));
  j["ratio_azote_over_qemu"] = {{"wall_ms", wall_ratio ? json(*wall_ratio) : json(nullptr)},
                                {"cpu_ms", cpu_ratio ? json(*cpu_ratio) : json(nullptr)}};
  auto nopit_ratio = ratio(med(j, "azote-hv --no-pit", "wall_ms"), med(j, "qemu", "wall_ms"));
  j["ratio_azote_no_pit_over_qemu"] = {{"wall_ms", nopit_ratio ? json(*nopit_ratio) : json(nullptr)}};
  j["goals"] = {goal("wall ratio azote-hv/qemu", "<=", 0.2, wall_ratio),
                goal("azote-hv CPU ms", "<=", 8, med(j, "azote-hv", "cpu_ms"))};
  return j;
}

json run_memory(const Options& opt) {
  const long mem_kib = 128 * 1024;
  auto measure_mem = [mem_kib](std::set<int> ok) {
    return [mem_kib, ok](const RunResult& r, json& s) -> std::optional<std::string> {
      base_metrics(r, s);
      s.erase("wall_ms");  // traced: not a timing
      s.erase("cpu_ms");
      s.erase("user_ms");
      s.erase("sys_ms");
      if (auto e = expect_exit(r, ok)) {
        return e;
      }
      // Candidates: before each large munmap (a VMM that unmaps guest RAM on its way out) and
      // at the exit stop; the one with the most guest RAM resident is the end-of-run picture.
      std::vector<std::pair<std::string, const std::string*>> snaps;
      for (const auto& m : r.munmap_snapshots) {
        snaps.emplace_back("before munmap", &m);
      }
      if (r.smaps) {
        snaps.emplace_back("exit stop", &*r.smaps);
      }
      if (snaps.empty()) {
        return std::string("no smaps snapshot");
      }
      MemorySplit split;
      std::string when;
      for (const auto& [label, text] : snaps) {
        auto sp = split_guest_memory(parse_smaps(*text), mem_kib);
        if (!sp.guest_mappings.empty() &&
            (split.guest_mappings.empty() || sp.guest_rss_kib > split.guest_rss_kib)) {
          split = std::move(sp);
          when = label;
        }
      }
      if (split.guest_mappings.empty()) {
        return std::string("no guest RAM mapping found in any smaps snapshot");
      }
      s["snapshot"] = when;
      s["guest_rss_kib"] = split.guest_rss_kib;
      s["overhead_peak_kib"] = r.maxrss_kib - split.guest_rss_kib;
      s["exit_other_rss_kib"] = split.other_rss_kib;
      s["exit_other_pss_kib"] = split.other_pss_kib;
      s["exit_other_anon_kib"] = split.other_anon_kib;
      s["exit_other_file_kib"] = split.other_file_rss_kib;
      s["guest_mappings"] = split.guest_mappings;
      return std::nullopt;
    };
  };
  std::vector<Peer> peers(2);
  peers[0].name = "azote-hv";
  peers[0].spec.argv = {opt.hv, "--kernel", opt.hv_kernel, "--vcpus", "1", "--memory", "128M"};
  peers[0].skip_reason = missing_hv(opt);
  peers[0].measure = measure_mem({0});
  peers[1].name = "qemu";
  peers[1].spec.argv = qemu_microvm(opt, "128M", opt.guest, "azote.run=hello");
  peers[1].skip_reason = !missing_qemu(opt).empty() ? missing_qemu(opt) : missing_guest(opt);
  peers[1].measure = measure_mem({1});
  for (auto& p : peers) {
    p.spec.smaps_at_exit = true;
    p.spec.snapshot_before_munmap_bytes = static_cast<std::uint64_t>(mem_kib) * 1024 / 2;
    p.spec.timeout_s = 120;
  }
  auto res = run_interleaved(peers, opt.mem_runs, opt);

  // Cross-check without tracing: peak RSS with 128 MiB and 512 MiB of guest memory. A VMM that
  // does not touch guest memory itself shows (nearly) the same peak at both sizes.
  std::vector<Peer> scale(4);
  const char* sizes[] = {"128M", "512M"};
  for (int i = 0; i < 2; ++i) {
    auto& a = scale[static_cast<std::size_t>(i)];
    a.name = std::string("azote-hv@") + sizes[i];
    a.spec.argv = {opt.hv, "--kernel", opt.hv_kernel, "--vcpus", "1", "--memory", sizes[i]};
    a.skip_reason = missing_hv(opt);
    a.measure = [](const RunResult& r, json& s) {
      s["maxrss_kib"] = r.maxrss_kib;
      return expect_exit(r, {0});
    };
    auto& q = scale[static_cast<std::size_t>(i + 2)];
    q.name = std::string("qemu@") + sizes[i];
    q.spec.argv = qemu_microvm(opt, sizes[i], opt.guest, "azote.run=hello");
    q.skip_reason = !missing_qemu(opt).empty() ? missing_qemu(opt) : missing_guest(opt);
    q.measure = [](const RunResult& r, json& s) {
      s["maxrss_kib"] = r.maxrss_kib;
      return expect_exit(r, {1});
    };
  }
  auto scale_res = run_interleaved(scale, 3, opt);

  json j;
  j["scenario"] = "memory";
  j["what"] =
      "VMM memory overhead for the hello guest with 128 MiB: peak RSS (ru_maxrss) minus the "
      "guest RAM pages resident at exit (from /proc/PID/smaps read at the ptrace exit stop, "
      "before the address space is torn down); plus the non-guest RSS/PSS at exit";
  j["azote_kernel"] = opt.hv_kernel;
  j["qemu_kernel"] = opt.guest;
  j["runs_per_peer"] = opt.mem_runs;
  for (auto& p : peers) {
    j["peers"][p.name] = peer_json(p, res[p.name]);
  }
  for (auto& p : scale) {
    j["scaling_check"][p.name] = peer_json(p, scale_res[p.name]);
    j["scaling_check"][p.name].erase("last_run_output_head");
  }
  auto ov_ratio = ratio(med(j, "azote-hv", "overhead_peak_kib"), med(j, "qemu", "overhead_peak_kib"));
  j["ratio_azote_over_qemu"] = {{"overhead_peak_kib", ov_ratio ? json(*ov_ratio) : json(nullptr)}};
  j["goals"] = {goal("azote-hv overhead_peak_kib", "<=", 5 * 1024,
                     med(j, "azote-hv", "overhead_peak_kib"))};
  return j;
}

json run_linux(const Options& opt) {
  const std::string cmdline = "console=ttyS0 earlyprintk=ttyS0";
  std::vector<Peer> peers(2);
  peers[0].name = "azote-hv";
  peers[0].spec.argv = {opt.hv, "--kernel", opt.vmlinux, "--cmdline", cmdline, "--memory", "512M"};
  peers[0].skip_reason = missing_hv(opt);
  peers[1].name = "qemu";
  peers[1].spec.argv = qemu_microvm(opt, "512M", opt.vmlinux, cmdline);
  peers[1].skip_reason = missing_qemu(opt);
  for (auto& p : peers) {
    if (p.skip_reason.empty() && !readable(opt.vmlinux)) {
      p.skip_reason = "no vmlinux at " + opt.vmlinux + " (run scripts/debian-kernel.sh)";
    }
    p.spec.until = "Linux version";
    p.spec.timeout_s = opt.linux_timeout_s;
    p.measure = [](const RunResult& r, json& s) -> std::optional<std::string> {
      if (!r.started) {
        return r.error;
      }
      if (!r.matched) {
        return "no 'Linux version' on the console (" + describe_status(r) + ")";
      }
      s["banner_ms"] = r.match_s * 1e3;
      s["cpu_ms_to_stop"] = (r.user_s + r.sys_s) * 1e3;
      s["maxrss_kib"] = r.maxrss_kib;
      return std::nullopt;
    };
  }
  auto res = run_interleaved(peers, opt.linux_runs, opt);
  json j;
  j["scenario"] = "linux-banner";
  j["what"] =
      "same Debian cloud vmlinux (PVH entry), 512 MiB, cmdline '" + cmdline +
      "': time from fork until the console shows 'Linux version', then SIGTERM";
  j["runs_per_peer"] = opt.linux_runs;
  for (auto& p : peers) {
    j["peers"][p.name] = peer_json(p, res[p.name]);
  }
  auto r = ratio(med(j, "azote-hv", "banner_ms"), med(j, "qemu", "banner_ms"));
  auto rc = ratio(med(j, "azote-hv", "cpu_ms_to_stop"), med(j, "qemu", "cpu_ms_to_stop"));
  j["ratio_azote_over_qemu"] = {{"banner_ms", r ? json(*r) : json(nullptr)},
                                {"cpu_ms_to_stop", rc ? json(*rc) : json(nullptr)}};
  j["goals"] = {goal("banner ratio azote-hv/qemu", "<=", 0.5, r)};
  return j;
}

json run_cpu(const Options& opt) {
  const std::string mib = std::to_string(opt.cpu_mib);
  // "... cpu mib=N sha256=<hex> cycles=<n> [ns=<n>]"
  auto parse = [](const std::string& prefix) {
    return [prefix](const RunResult& r, json& s) -> std::optional<std::string> {
      base_metrics(r, s);
      static const std::regex line_re(
          R"(cpu mib=(\d+) sha256=([0-9a-fA-F]{64}) cycles=(\d+)(?: ns=(\d+))?)");
      std::smatch m;
      const auto pos = r.output.find(prefix);
      if (pos == std::string::npos) {
        return "no '" + prefix + "' line in output (" + describe_status(r) + ")";
      }
      const std::string rest = r.output.substr(pos);
      if (!std::regex_search(rest, m, line_re)) {
        return "cannot parse '" + head(rest, 120) + "'";
      }
      s["mib"] = std::stol(m[1]);
      s["sha256"] = m[2].str();
      s["cycles"] = std::stod(m[3]);
      if (m[4].matched) {
        s["ns"] = std::stod(m[4]);
      }
      return std::nullopt;
    };
  };
  std::vector<Peer> peers(3);
  peers[0].name = "host";
  peers[0].spec.argv = {opt.cpu_host, mib};
  peers[0].skip_reason =
      executable(opt.cpu_host) ? "" : "azote-cpu-host not built (" + opt.cpu_host + " missing)";
  peers[0].measure = [p = parse("host: cpu")](const RunResult& r, json& s) {
    if (auto e = expect_exit(r, {0})) {
      return e;
    }
    return p(r, s);
  };
  peers[1].name = "azote-hv";
  peers[1].spec.argv = {opt.hv, "--kernel", "builtin:cpu", "--cmdline", mib, "--vcpus", "1",
                        "--memory", "256M"};
  peers[1].skip_reason = missing_hv(opt);
  peers[1].measure = [p = parse("azote-guest: cpu")](const RunResult& r, json& s) {
    if (auto e = expect_exit(r, {0})) {
      return e;
    }
    return p(r, s);
  };
  peers[2].name = "qemu";
  peers[2].spec.argv = qemu_microvm(opt, "256M", opt.guest, "azote.run=cpu " + mib);
  peers[2].skip_reason = !missing_qemu(opt).empty() ? missing_qemu(opt) : missing_guest(opt);
  peers[2].measure = [p = parse("azote-guest: cpu")](const RunResult& r, json& s) {
    if (auto e = expect_exit(r, {1})) {
      return e;
    }
    return p(r, s);
  };
  for (auto& p : peers) {
    p.spec.timeout_s = 120;
  }
  auto res = run_interleaved(peers, opt.cpu_runs, opt);
  json j;
  j["scenario"] = "cpu";
  j["what"] = "SHA-256 over " + mib +
              " MiB in guest user mode (builtin:cpu) vs the same code on the host "
              "(azote-cpu-host); cycles = TSC cycles around the work as printed by each";
  j["runs_per_peer"] = opt.cpu_runs;
  std::set<std::string> digests;
  for (auto& p : peers) {
    j["peers"][p.name] = peer_json(p, res[p.name]);
    for (const auto& s : res[p.name].samples) {
      if (s.contains("sha256")) {
        digests.insert(s["sha256"].get<std::string>());
      }
    }
  }
  j["digests"] = digests;
  j["digests_match"] = digests.size() == 1;
  auto r_hv = ratio(med(j, "host", "cycles"), med(j, "azote-hv", "cycles"));
  auto r_q = ratio(med(j, "host", "cycles"), med(j, "qemu", "cycles"));
  j["ratio_host_over_guest"] = {{"azote-hv", r_hv ? json(*r_hv) : json(nullptr)},
                                {"qemu", r_q ? json(*r_q) : json(nullptr)}};
  // Same ratio over the fastest run of each: less sensitive to other load on the machine.
  auto min_of = [&](const std::string& peer) -> std::optional<double> {
    const auto& p = j["peers"][peer];
    if (p["status"] != "ok" || !p["min"].contains("cycles")) {
      return std::nullopt;
    }
    return p["min"]["cycles"].get<double>();
  };
  auto m_hv = ratio(min_of("host"), min_of("azote-hv"));
  auto m_q = ratio(min_of("host"), min_of("qemu"));
  j["ratio_host_over_guest_min"] = {{"azote-hv", m_hv ? json(*m_hv) : json(nullptr)},
                                    {"qemu", m_q ? json(*m_q) : json(nullptr)}};
  // Process CPU time instead of TSC cycles: not inflated by time the process waits for a core
  // (TSC keeps counting while another task runs). The VMM's includes its own setup and exit.
  auto c_hv = ratio(med(j, "host", "cpu_ms"), med(j, "azote-hv", "cpu_ms"));
  auto c_q = ratio(med(j, "host", "cpu_ms"), med(j, "qemu", "cpu_ms"));
  j["ratio_host_over_guest_cpu_time"] = {{"azote-hv", c_hv ? json(*c_hv) : json(nullptr)},
                                         {"qemu", c_q ? json(*c_q) : json(nullptr)}};
  j["goals"] = {goal("host/azote-hv cycles", ">=", 0.97, r_hv)};
  return j;
}

// ---------------------------------------------------------------------------------------------

json host_info(const Options& opt) {
  json h;
  utsname u{};
  if (uname(&u) == 0) {
    h["kernel"] = std::string(u.sysname) + " " + u.release;
  }
  std::ifstream ci("/proc/cpuinfo");
  std::string line;
  while (std::getline(ci, line)) {
    if (line.rfind("model name", 0) == 0) {
      h["cpu"] = line.substr(line.find(':') + 2);
      break;
    }
  }
  h["online_cpus"] = sysconf(_SC_NPROCESSORS_ONLN);
  if (executable(opt.qemu)) {
    RunSpec s;
    s.argv = {opt.qemu, "--version"};
    s.timeout_s = 10;
    auto r = run_process(s);
    h["qemu"] = r.output.substr(0, r.output.find('\n'));
  }
  std::time_t t = std::time(nullptr);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  h["date_utc"] = buf;
  if (const char* rev = std::getenv("AZOTE_BENCH_REV")) {
    h["source_rev"] = rev;
  }
  return h;
}

// The 1/5/15-minute load averages, as /proc/loadavg gives them.
std::string loadavg() {
  std::ifstream f("/proc/loadavg");
  std::string a, b, c;
  f >> a >> b >> c;
  return a + " " + b + " " + c;
}

std::string fmt(const json& v, int prec = 1) {
  if (v.is_null()) {
    return "—";
  }
  char b[64];
  std::snprintf(b, sizeof b, "%.*f", prec, v.get<double>());
  return b;
}

std::string cell(const json& scen, const std::string& peer, const std::string& metric,
                 int prec = 1) {
  if (!scen["peers"].contains(peer)) {
    return "—";
  }
  const auto& p = scen["peers"][peer];
  if (p["status"] != "ok" || !p["median"].contains(metric)) {
    return p["status"] == "ok" ? "—" : "not measured";
  }
  return fmt(p["median"][metric], prec);
}

std::string met(const json& goals, std::size_t i) {
  if (i >= goals.size() || goals[i]["met"].is_null()) {
    return "—";
  }
  return goals[i]["met"].get<bool>() ? "yes" : "no";
}

std::string markdown(const std::map<std::string, json>& results) {
  std::ostringstream md;
  md << "| measurement | azote-hv (median) | QEMU microvm (median) | ratio | goal | met |\n";
  md << "|---|---|---|---|---|---|\n";
  if (results.count("boot")) {
    const auto& j = results.at("boot");
    md << "| hello: start → exit, wall ms | " << cell(j, "azote-hv", "wall_ms", 2) << " | "
       << cell(j, "qemu", "wall_ms", 2) << " | " << fmt(j["ratio_azote_over_qemu"]["wall_ms"], 3)
       << " | ≤ 0.2× | " << met(j["goals"], 0) << " |\n";
    md << "| hello: CPU ms (user+sys) | " << cell(j, "azote-hv", "cpu_ms", 2) << " | "
       << cell(j, "qemu", "cpu_ms", 2) << " | " << fmt(j["ratio_azote_over_qemu"]["cpu_ms"], 3)
       << " | ≤ 8 ms | " << met(j["goals"], 1) << " |\n";
  }
  if (results.count("memory")) {
    const auto& j = results.at("memory");
    md << "| VMM overhead: peak RSS − guest pages, KiB | " << cell(j, "azote-hv", "overhead_peak_kib", 0)
       << " | " << cell(j, "qemu", "overhead_peak_kib", 0) << " | "
       << fmt(j["ratio_azote_over_qemu"]["overhead_peak_kib"], 3) << " | ≤ 5120 KiB | "
       << met(j["goals"], 0) << " |\n";
    md << "| non-guest PSS at exit, KiB | " << cell(j, "azote-hv", "exit_other_pss_kib", 0) << " | "
       << cell(j, "qemu", "exit_other_pss_kib", 0) << " | | | |\n";
  }
  if (results.count("linux-banner")) {
    const auto& j = results.at("linux-banner");
    md << "| Linux: fork → `Linux version`, ms | " << cell(j, "azote-hv", "banner_ms", 0) << " | "
       << cell(j, "qemu", "banner_ms", 0) << " | "
       << fmt(j["ratio_azote_over_qemu"]["banner_ms"], 3) << " | ≤ 0.5× | " << met(j["goals"], 0)
       << " |\n";
    md << "| Linux: CPU ms until stopped | " << cell(j, "azote-hv", "cpu_ms_to_stop", 0) << " | "
       << cell(j, "qemu", "cpu_ms_to_stop", 0) << " | "
       << fmt(j["ratio_azote_over_qemu"].value("cpu_ms_to_stop", json(nullptr)), 3) << " | | |\n";
  }
  if (results.count("cpu")) {
    const auto& j = results.at("cpu");
    md << "| cpu " << j["peers"]["host"]["command"].back().get<std::string>()
       << " MiB SHA-256, TSC cycles (host: " << cell(j, "host", "cycles", 0) << ") | "
       << cell(j, "azote-hv", "cycles", 0) << " | " << cell(j, "qemu", "cycles", 0)
       << " | host/guest " << fmt(j["ratio_host_over_guest"]["azote-hv"], 3) << " (fastest runs: "
       << (j.contains("ratio_host_over_guest_min") ? fmt(j["ratio_host_over_guest_min"]["azote-hv"], 3)
                                                   : std::string("—"))
       << ") | ≥ 0.97 | "
       << met(j["goals"], 0) << (j["digests_match"].get<bool>() ? "" : " (digests differ!)")
       << " |\n";
    if (j.contains("ratio_host_over_guest_cpu_time")) {
      md << "| cpu: process CPU ms (host: " << cell(j, "host", "cpu_ms", 1) << ") | "
         << cell(j, "azote-hv", "cpu_ms", 1) << " | " << cell(j, "qemu", "cpu_ms", 1)
         << " | host/guest " << fmt(j["ratio_host_over_guest_cpu_time"]["azote-hv"], 3)
         << " | | |\n";
    }
  }
  return md.str();
}

void usage() {
  std::cerr
      << "usage: azote-bench [--build DIR] [--out DIR] [--only boot,memory,linux,cpu]\n"
         "                   [--runs N] [--mem-runs N] [--linux-runs N] [--cpu-runs N] [--cpu-mib N]\n"
         "                   [--hv PATH] [--guest PATH] [--cpu-host PATH] [--vmlinux PATH]\n"
         "                   [--qemu PATH] [--linux-timeout S] [--hv-kernel builtin:hello|PATH]\n"
         "                   [--report-only] [--check] [--verbose]\n"
         "Defaults: DIR/bin/azote-hv, DIR/bin/azote-guest.elf, DIR/bin/azote-cpu-host,\n"
         "DIR/linux/vmlinux, qemu-system-x86_64 from PATH; results in bench/results.\n"
         "--report-only rewrites OUT/summary.md from the JSON files already there.\n"
         "--check exits 1 if a peer that was not skipped failed, 77 without /dev/kvm.\n";
}

}  // namespace
}  // namespace azote::bench

int main(int argc, char** argv) {
  using namespace azote::bench;
  Options opt;
  std::vector<std::string> args(argv + 1, argv + argc);
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto val = [&]() -> std::string {
      if (i + 1 >= args.size()) {
        std::cerr << "azote-bench: " << a << " needs a value\n";
        std::exit(64);
      }
      return args[++i];
    };
    auto num = [&]() {
      const std::string v = val();
      char* end = nullptr;
      long n = std::strtol(v.c_str(), &end, 10);
      if (*end != '\0' || n < 0 || n > 100000) {
        std::cerr << "azote-bench: bad number for " << a << ": " << v << "\n";
        std::exit(64);
      }
      return static_cast<int>(n);
    };
    if (a == "--build") {
      opt.build = val();
    } else if (a == "--out") {
      opt.out = val();
    } else if (a == "--hv") {
      opt.hv = val();
    } else if (a == "--guest") {
      opt.guest = val();
    } else if (a == "--cpu-host") {
      opt.cpu_host = val();
    } else if (a == "--vmlinux") {
      opt.vmlinux = val();
    } else if (a == "--hv-kernel") {
      opt.hv_kernel = val();
    } else if (a == "--qemu") {
      opt.qemu = val();
    } else if (a == "--runs") {
      opt.runs = num();
    } else if (a == "--mem-runs") {
      opt.mem_runs = num();
    } else if (a == "--linux-runs") {
      opt.linux_runs = num();
    } else if (a == "--cpu-runs") {
      opt.cpu_runs = num();
    } else if (a == "--cpu-mib") {
      opt.cpu_mib = num();
    } else if (a == "--linux-timeout") {
      opt.linux_timeout_s = num();
    } else if (a == "--only") {
      std::istringstream s(val());
      std::string w;
      while (std::getline(s, w, ',')) {
        opt.only.insert(w);
      }
    } else if (a == "--check") {
      opt.check = true;
    } else if (a == "--report-only") {
      opt.report_only = true;
    } else if (a == "--verbose" || a == "-v") {
      opt.verbose = true;
    } else if (a == "--help" || a == "-h") {
      usage();
      return 0;
    } else {
      usage();
      return 64;
    }
  }
  if (opt.hv.empty()) opt.hv = (opt.build / "bin" / "azote-hv").string();
  if (opt.guest.empty()) opt.guest = (opt.build / "bin" / "azote-guest.elf").string();
  if (opt.cpu_host.empty()) opt.cpu_host = (opt.build / "bin" / "azote-cpu-host").string();
  if (opt.vmlinux.empty()) opt.vmlinux = (opt.build / "linux" / "vmlinux").string();
  if (auto q = which(opt.qemu); !q.empty()) opt.qemu = q;

  std::error_code ec;
  fs::create_directories(opt.out, ec);
  if (ec) {
    std::cerr << "azote-bench: cannot create " << opt.out << ": " << ec.message() << "\n";
    return 71;
  }
  if (opt.check && access("/dev/kvm", R_OK | W_OK) != 0) {
    std::cout << "SKIPPED: no access to /dev/kvm\n";
    return 77;
  }
  const json host = host_info(opt);
  std::map<std::string, json> results;
  struct Scen {
    const char* key;
    const char* file;
    json (*fn)(const Options&);
  };
  const Scen scens[] = {{"boot", "boot", run_boot},
                        {"memory", "memory", run_memory},
                        {"linux", "linux-banner", run_linux},
                        {"cpu", "cpu", run_cpu}};
  for (const auto& s : scens) {
    if (opt.report_only) {
      std::ifstream f(opt.out / (std::string(s.file) + ".json"));
      if (f) {
        results[s.file] = json::parse(f, nullptr, false);
        if (results[s.file].is_discarded()) {
          results.erase(s.file);
        }
      }
      continue;
    }
    if (!opt.only.empty() && !opt.only.count(s.key)) {
      continue;
    }
    log(std::string("scenario ") + s.key);
    const std::string load_before = loadavg();
    json j = s.fn(opt);
    j["host"] = host;
    // Other work on the machine shows up here; compare before trusting a ratio.
    j["loadavg_before"] = load_before;
    j["loadavg_after"] = loadavg();
    std::ofstream f(opt.out / (std::string(s.file) + ".json"));
    f << j.dump(2) << "\n";
    for (auto& [name, p] : j["peers"].items()) {
      log(std::string("  ") + name + ": " + p["status"].get<std::string>() +
          (p.contains("reason") ? " (" + p["reason"].get<std::string>() + ")" : "") +
          " median " + p["median"].dump());
    }
    log("  goals " + j["goals"].dump());
    results[s.file] = std::move(j);
  }
  const std::string md = markdown(results);
  std::ofstream(opt.out / "summary.md") << md;
  std::cout << md;
  if (opt.check) {
    int failed = 0;
    for (const auto& [file, j] : results) {
      for (const auto& [name, p] : j["peers"].items()) {
        if (p["status"] == "failed") {
          std::cerr << "azote-bench: check: " << file << ": " << name << " failed: "
                    << p.value("reason", std::string()) << "\n";
          ++failed;
        }
      }
    }
    return failed == 0 ? 0 : 1;
  }
  return 0;
}
