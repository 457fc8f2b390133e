// cgroups for jailed processes: one leaf per process (<tree>/<instance>/<role>) with
// cpu, memory and pids limits and a cpuset, in whatever layout the host has.
//
//   * A unified (v2) hierarchy whose root offers cpu, memory, pids and cpuset: one leaf
//     carries everything (memory.max, pids.max, cpu.max, cpuset.cpus).
//   * A hybrid host (systemd's "hybrid" mode, or controllers bound to v1 hierarchies,
//     as on the development machines): each controller's own v1 hierarchy gets the same
//     relative leaf (memory.limit_in_bytes, pids.max, cpu.cfs_quota_us, cpuset.cpus),
//     and the unified hierarchy, which then holds no controllers, still gets the leaf
//     for membership and cgroup.kill.
//
// The tree lives under the launcher's own cgroup in each hierarchy (so that whatever
// limits and accounts the launcher's service applies to everything it starts), named
// after the host (azote-<hex>), and the jailed processes join it before they run; a
// cgroup namespace then makes their leaf their root, and without privileges they cannot
// move out of it.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "sandbox/seccomp.hpp"

namespace azote::sandbox {

struct CgroupLimits {
  uint64_t memory_bytes = 0;   // 0: no limit
  uint64_t pids = 0;           // 0: no limit
  uint32_t cpu_percent = 0;    // 100 = one CPU's worth of time per period; 0: no limit
  std::string cpus;            // cpuset list ("0", "1-3"); empty: the parent's
};

class CgroupTree {
 public:
  // Finds the hierarchies and makes the tree's root `name` under the caller's own
  // cgroup in each. `mount_root` is /sys/fs/cgroup except in tests.
  static Result<CgroupTree, SandboxError> open(const std::string& name, const std::string& mount_root = "/sys/fs/cgroup");

  // Makes (or reuses) the leaf `rel` ("i-0123/hv") with these limits; returns the
  // cgroup.procs files to write the process into (one per hierarchy).
  Result<std::vector<std::string>, SandboxError> create(const std::string& rel, const CgroupLimits& limits);
  // Processes in `rel` and below (empty if it does not exist).
  std::vector<pid_t> procs(const std::string& rel) const;
  // Kills every process in `rel` and below (cgroup.kill where the kernel has it,
  // SIGKILL to each otherwise).
  void kill(const std::string& rel) const;
  // Removes `rel` and its descendants that hold no process; false if some remain.
  bool remove(const std::string& rel) const;
  // The limits in effect for `rel`, as read back from the files ("memory=..., pids=...,
  // cpu=...%, cpus=..."), for tests and describe.
  std::string read_limits(const std::string& rel) const;
  // "v2: cpu cpuset memory pids" or "v1: cpu cpuset memory pids; v2: membership".
  std::string layout() const;
  // The absolute directory of `rel` in the hierarchy that tracks membership.
  std::string membership_dir(const std::string& rel) const;

  // Whether each jailed process must be moved into v1 hierarchies (a hybrid host):
  // a process is born in its unified leaf (CLONE_INTO_CGROUP) but joins each v1
  // controller's leaf by writing cgroup.procs, and every such move after a quiet
  // moment waits for an RCU grace period (~8 ms on the development machines) while
  // holding the kernel's cgroup lock, which every other launch step then waits for.
  bool moves_processes() const { return !v2_controllers_; }
  // On such a host, sets the cgroup2 mount option favordynmods (Linux 6.0), which
  // makes those moves cheap at a small cost to every fork and exit on the host: a
  // host-wide setting, left in place. Reconfigures the superblock with the options it
  // already has plus this one (fspick/fsconfig: the mount's own flags are untouched).
  // Returns what it did, for the log.
  Result<std::string, SandboxError> favor_migrations();

 private:
  struct Hierarchy {
    std::string controller;  // "cpu", "memory", ...; "" for the unified membership tree
    std::string base;        // absolute directory of the tree's root in this hierarchy
    bool v2 = false;
  };
  std::vector<Hierarchy> h_;
  bool v2_controllers_ = false;
  std::string unified_point_, unified_super_;  // the cgroup2 mount, if any
};

// The superblock options of a cgroup2 mount ("rw,nsdelegate,...", as in
// /proc/self/mountinfo) to set again when reconfiguring it with favordynmods added:
// every option but rw/ro; empty if favordynmods is already there.
std::vector<std::string> favordynmods_options(const std::string& super);

// cpuset lists ("0-2,5"): parsed (nullopt if malformed), and written back in the
// kernel's shortest form.
std::optional<std::set<int>> parse_cpu_list(const std::string& s);
std::string format_cpu_list(const std::set<int>& cpus);
// The CPUs this process may run on.
std::set<int> allowed_cpus();

// Whether the unified hierarchy is the only one (cgroup2 mounted on mount_root).
bool cgroup_v2_only(const std::string& mount_root = "/sys/fs/cgroup");

}  // namespace azote::sandbox
