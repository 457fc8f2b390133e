#include "netns.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <regex>
#include <string_view>

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

namespace azote::test {

PacketCapture::PacketCapture(const Netns* ns, std::string ifname, std::string needle, uint32_t vni)
    : ifname_(std::move(ifname)), needle_(std::move(needle)), vni_(vni) {
  // The thread reports once: bound (ok_) or not (error_).
  std::mutex mu;
  std::condition_variable cv;
  bool ready = false;
  thread_ = std::thread([this, name = ns != nullptr ? ns->name() : std::string(), &mu, &cv, &ready] {
    auto report = [&](const std::string& err) {
      std::lock_guard lock(mu);
      error_ = err;
      ok_ = err.empty();
      ready = true;
      cv.notify_one();
    };
    if (!name.empty()) {
      const int nsfd = ::open(("/var/run/netns/" + name).c_str(), O_RDONLY | O_CLOEXEC);
      const bool joined = nsfd >= 0 && ::setns(nsfd, CLONE_NEWNET) == 0;
      const int e = errno;
      if (nsfd >= 0) ::close(nsfd);
      if (!joined) return report("setns " + name + ": " + std::strerror(e));
    }
    const int s = ::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, htons(ETH_P_ALL));
    if (s < 0) return report(std::string("AF_PACKET socket: ") + std::strerror(errno));
    const int buf = 32 << 20;
    if (::setsockopt(s, SOL_SOCKET, SO_RCVBUFFORCE, &buf, sizeof buf) != 0)
      (void)::setsockopt(s, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
    sockaddr_ll sll{};
    sll.sll_family = AF_PACKET;
    sll.sll_protocol = htons(ETH_P_ALL);
    sll.sll_ifindex = static_cast<int>(::if_nametoindex(ifname_.c_str()));
    if (sll.sll_ifindex == 0 || ::bind(s, reinterpret_cast<const sockaddr*>(&sll), sizeof sll) != 0) {  // NOLINT
      const int e = errno;
      ::close(s);
      return report("bind AF_PACKET to " + ifname_ + (name.empty() ? "" : " in " + name) + ": " + std::strerror(e));
    }
    fd_ = s;
    report("");
    drain_until_stopped();
  });
  std::unique_lock lock(mu);
  cv.wait(lock, [&] { return ready; });
}

PacketCapture::~PacketCapture() { (void)stop(); }

void PacketCapture::drain_until_stopped() {
  std::vector<uint8_t> b(65536);
  const std::string_view needle(needle_);
  for (;;) {
    const bool last = stop_.load();
    pollfd p{fd_, POLLIN, 0};
    (void)::poll(&p, 1, last ? 0 : 50);
    for (;;) {
      const ssize_t n = ::recv(fd_, b.data(), b.size(), 0);
      if (n <= 0) break;
      const auto len = static_cast<size_t>(n);
      ++counts_.frames;
      const std::string_view frame(reinterpret_cast<const char*>(b.data()), len);  // NOLINT
      if (!needle.empty() && frame.find(needle) != std::string_view::npos) ++counts_.needle_hits;
      if (len < 14 + 20 || b[12] != 0x08 || b[13] != 0x00) continue;
      ++counts_.ipv4;
      const size_t ihl = static_cast<size_t>(b[14] & 0x0f) * 4;
      const uint8_t* udp = b.data() + 14 + ihl;
      const bool is_udp = b[14 + 9] == 17 && len >= 14 + ihl + 8;
      const unsigned sport = is_udp ? (udp[0] << 8 | udp[1]) : 0, dport = is_udp ? (udp[2] << 8 | udp[3]) : 0;
      if (!is_udp || (sport != 6081 && dport != 6081)) {
        ++counts_.other_ipv4;
        continue;
      }
      ++counts_.geneve;
      if (len < 14 + ihl + 8 + 12) continue;  // Geneve header + the first option's header
      const uint8_t* g = udp + 8;
      const uint32_t vni = static_cast<uint32_t>(g[4]) << 16 | static_cast<uint32_t>(g[5]) << 8 | g[6];
      if (vni_ != 0 && vni == vni_) ++counts_.with_vni;
      if (g[8] == 0xff && g[9] == 0x2a && g[10] == 0x81) ++counts_.sealed;
    }
    if (last) break;
  }
  tpacket_stats st{};
  socklen_t sl = sizeof st;
  if (::getsockopt(fd_, SOL_PACKET, PACKET_STATISTICS, &st, &sl) == 0) counts_.kernel_drops += st.tp_drops;
}

CaptureCounts PacketCapture::stop() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
  return counts_;
}

}  // namespace azote::test
