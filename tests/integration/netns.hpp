// Linux network namespaces for integration tests: each namespace is an isolated
// network stack (its own interfaces, addresses, routes) in which real tools (ping, dig,
// nc, udhcpc, iperf3) run as an "instance" would. Everything here shells out to
// iproute2's `ip` through process.hpp, so a failure is an Outcome with its stderr.
//
// Names are unique per test process (they contain getpid()), so tests running in
// parallel never collide; every object removes what it created in its destructor.
// Needs root (CAP_SYS_ADMIN + CAP_NET_ADMIN): call netns_usable() first and
// GTEST_SKIP() with its reason when it says no.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "process.hpp"

namespace azote::test {

// True when this process can create network namespaces: root, `ip` found, and a probe
// namespace could be added and deleted. Otherwise false and `why` says what is missing.
// The probe runs once per process; it also deletes namespaces named "az...-PID-N" left
// by test processes that no longer exist (killed before their destructors ran).
bool netns_usable(std::string* why);

// The path of a tool: $PATH first, then /usr/sbin, /sbin, /usr/bin, /bin (a test run
// from a user's shell may lack the sbin directories).
std::optional<std::string> find_tool(const std::string& name);

// "PREFIX-PID-N", unique in this process (use a PREFIX starting with "az" for
// namespaces, so a crashed run's leftovers are found); truncated from the front of PREFIX to at most
// `max` characters (15 for an interface name), keeping PID and counter.
std::string unique_name(const std::string& prefix, size_t max = 15);

class Netns {
 public:
  // Adds a namespace named unique_name(prefix, 32) with its loopback up. Check ok().
  explicit Netns(const std::string& prefix = "azt");
  // Deletes it (`ip netns del`). Processes still inside keep it alive until they exit:
  // stop them first (declare their Process objects after the Netns).
  ~Netns();
  Netns(const Netns&) = delete;
  Netns& operator=(const Netns&) = delete;

  bool ok() const { return ok_; }
  const std::string& error() const { return error_; }  // why the add failed
  const std::string& name() const { return name_; }

  // `argv` run inside the namespace: {ip, netns, exec, NAME, argv...}, for Process
  // (which then signals the program itself: `ip netns exec` execs it).
  std::vector<std::string> wrap(std::vector<std::string> argv) const;

 private:
  std::string name_;
  bool ok_ = false;
  std::string error_;
};

// Runs `argv` inside `ns` to completion (killed at the deadline).
Outcome exec_in(const Netns& ns, std::vector<std::string> argv,
                std::chrono::milliseconds timeout = std::chrono::seconds(30));

// A veth pair: end `a_name` in namespace `a`, end `b_name` in `b` (nullptr: the test's
// own namespace), both down and without addresses. Check ok().
class Veth {
 public:
  Veth(const Netns* a, std::string a_name, const Netns* b, std::string b_name);
  // Deletes the pair (deleting one end removes both); nothing if a namespace holding it
  // went first (that removed it already).
  ~Veth();
  Veth(const Veth&) = delete;
  Veth& operator=(const Veth&) = delete;

  bool ok() const { return ok_; }
  const std::string& error() const { return error_; }
  const std::string& a_name() const { return a_name_; }
  const std::string& b_name() const { return b_name_; }

 private:
  std::string a_ns_, a_name_, b_ns_, b_name_;
  bool created_ = false;
  bool ok_ = false;
  std::string error_;
};

}  // namespace azote::test

namespace azote::test {

// What a PacketCapture saw. IPv4 frames are classified; "Geneve" is IPv4 UDP to or from
// port 6081 (the VPC fabric), "sealed" the Geneve datagrams whose first option is the
// azote option (class 0xFF2A, type 0x81: critical, sealed), "with_vni" those carrying
// the VNI asked for.
struct CaptureCounts {
  uint64_t frames = 0;       // every frame, both directions
  uint64_t ipv4 = 0;
  uint64_t geneve = 0;
  uint64_t sealed = 0;
  uint64_t with_vni = 0;
  uint64_t other_ipv4 = 0;   // IPv4 frames that are not Geneve
  uint64_t needle_hits = 0;  // frames holding the needle anywhere (headers included)
  uint64_t kernel_drops = 0; // frames the socket missed (PACKET_STATISTICS)
};

// An AF_PACKET capture (every protocol, both directions) of interface `ifname` in
// namespace `ns` (nullptr: the test's own), drained by its own thread (which joins the
// namespace) from construction until stop(): counts only, nothing is stored. The socket
// is bound before the constructor returns, so nothing sent afterwards is missed except
// what the kernel drops when the drain falls behind (counted; a 32 MiB buffer is forced).
class PacketCapture {
 public:
  PacketCapture(const Netns* ns, std::string ifname, std::string needle, uint32_t vni = 0);
  ~PacketCapture();
  PacketCapture(const PacketCapture&) = delete;
  PacketCapture& operator=(const PacketCapture&) = delete;

  bool ok() const { return ok_; }
  const std::string& error() const { return error_; }
  // Drains what is queued, stops the thread, returns the totals (idempotent).
  CaptureCounts stop();

 private:
  void drain_until_stopped();
  std::string ifname_, needle_;
  uint32_t vni_;
  int fd_ = -1;
  bool ok_ = false;
  std::string error_;
  std::atomic<bool> stop_{false};
  CaptureCounts counts_;
  std::thread thread_;
};

}  // namespace azote::test
