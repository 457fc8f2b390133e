#include "netns.hpp"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <mutex>
#include <regex>

namespace azote::test {
namespace {

using namespace std::chrono_literals;

std::string ip_tool() {
  static const std::string path = find_tool("ip").value_or("ip");
  return path;
}

std::string describe(const Outcome& o) {
  std::string s = "status " + std::to_string(o.status);
  if (o.timed_out) s += " (timed out)";
  if (!o.err.empty()) s += ": " + o.err;
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// Namespaces "az...-PID-N" whose test process is gone (killed at a deadline before its
// destructors ran) are deleted, so crashed runs do not pile up in /run/netns.
void remove_stale() {
  const Outcome list = run({ip_tool(), "netns", "list"}, 10s);
  const std::regex name(R"(^(az[^ ]*-([0-9]+)-[0-9]+)( .*)?$)");
  for (const auto& l : lines(list.out)) {
    std::smatch m;
    if (!std::regex_match(l, m, name)) continue;
    const pid_t pid = static_cast<pid_t>(std::stol(m[2]));
    if (pid == ::getpid() || ::kill(pid, 0) == 0 || errno != ESRCH) continue;
    (void)run({ip_tool(), "netns", "del", m[1]}, 10s);
  }
}

}  // namespace

std::optional<std::string> find_tool(const std::string& name) {
  if (auto p = find_in_path(name)) return p;
  for (const char* dir : {"/usr/sbin", "/sbin", "/usr/bin", "/bin"}) {
    const std::string p = std::string(dir) + "/" + name;
    if (::access(p.c_str(), X_OK) == 0) return p;
  }
  return std::nullopt;
}

std::string unique_name(const std::string& prefix, size_t max) {
  static std::atomic<unsigned> counter{0};
  const std::string tail = "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
  if (tail.size() >= max) return tail.substr(tail.size() - max);
  const size_t keep = std::min(prefix.size(), max - tail.size());
  return prefix.substr(0, keep) + tail;
}

bool netns_usable(std::string* why) {
  static std::once_flag once;
  static bool usable = false;
  static std::string reason;
  std::call_once(once, [] {
    if (::geteuid() != 0) {
      reason = "not root (creating network namespaces needs CAP_SYS_ADMIN)";
      return;
    }
    if (!find_tool("ip")) {
      reason = "`ip` (iproute2) not found";
      return;
    }
    const std::string probe = unique_name("azt-probe", 32);
    const Outcome add = run({ip_tool(), "netns", "add", probe}, 10s);
    if (add.status != 0) {
      reason = "`ip netns add` failed: " + describe(add);
      return;
    }
    (void)run({ip_tool(), "netns", "del", probe}, 10s);
    remove_stale();
    usable = true;
  });
  if (!usable && why != nullptr) *why = reason;
  return usable;
}

Netns::Netns(const std::string& prefix) : name_(unique_name(prefix, 32)) {
  const Outcome add = run({ip_tool(), "netns", "add", name_}, 10s);
  if (add.status != 0) {
    error_ = "ip netns add " + name_ + ": " + describe(add);
    return;
  }
  ok_ = true;
  const Outcome lo = run({ip_tool(), "-n", name_, "link", "set", "lo", "up"}, 10s);
  if (lo.status != 0) {
    error_ = "ip -n " + name_ + " link set lo up: " + describe(lo);
    ok_ = false;
  }
}

Netns::~Netns() {
  if (!name_.empty()) (void)run({ip_tool(), "netns", "del", name_}, 10s);
}

std::vector<std::string> Netns::wrap(std::vector<std::string> argv) const {
  std::vector<std::string> out = {ip_tool(), "netns", "exec", name_};
  out.insert(out.end(), std::make_move_iterator(argv.begin()), std::make_move_iterator(argv.end()));
  return out;
}

Outcome exec_in(const Netns& ns, std::vector<std::string> argv, std::chrono::milliseconds timeout) {
  return run(ns.wrap(std::move(argv)), timeout);
}

Veth::Veth(const Netns* a, std::string a_name, const Netns* b, std::string b_name)
    : a_ns_(a != nullptr ? a->name() : ""), a_name_(std::move(a_name)), b_ns_(b != nullptr ? b->name() : ""),
      b_name_(std::move(b_name)) {
  // Created in our namespace, then each end moved where it belongs.
  const Outcome add = run({ip_tool(), "link", "add", a_name_, "type", "veth", "peer", "name", b_name_}, 10s);
  if (add.status != 0) {
    error_ = "ip link add " + a_name_ + " type veth peer name " + b_name_ + ": " + describe(add);
    return;
  }
  created_ = true;
  ok_ = true;
  for (const auto& [end, ns] : {std::pair{a_name_, a_ns_}, std::pair{b_name_, b_ns_}}) {
    if (ns.empty()) continue;
    const Outcome mv = run({ip_tool(), "link", "set", end, "netns", ns}, 10s);
    if (mv.status != 0 && error_.empty()) {
      error_ = "ip link set " + end + " netns " + ns + ": " + describe(mv);
      ok_ = false;
    }
  }
}

Veth::~Veth() {
  if (!created_) return;  // never delete an interface someone else made
  // Wherever end A is now (if its namespace is gone, so is the pair).
  std::vector<std::string> del = {ip_tool()};
  if (!a_ns_.empty()) del.insert(del.end(), {"-n", a_ns_});
  del.insert(del.end(), {"link", "del", a_name_});
  (void)run(del, 10s);
  // A failed move left end A here.
  if (!ok_ && !a_ns_.empty()) (void)run({ip_tool(), "link", "del", a_name_}, 10s);
}

}  // namespace azote::test
