// The jail the privileged launcher builds around every process it starts (azote-hv,
// the cards, the probe): new mount, PID, IPC, UTS, network and cgroup namespaces; a
// read-only tmpfs root holding only the system's code (/usr, /lib..., read-only), a
// /dev with null, zero, random and urandom, a /proc of its own PID namespace, and the
// binds the role needs (its instance's socket directory); a non-root uid/gid, no
// capabilities (effective, permitted, inheritable, ambient and bounding all empty),
// no_new_privs, no core dumps; its cgroups joined before it runs a single instruction
// of its own; only the descriptors it was given (3, 4, ... in order). The binary is
// executed from a descriptor opened before any of this (execveat), so what was opened
// is what runs.
//
// Files, devices (/dev/kvm, a TUN) and listening sockets are opened by the launcher and
// handed over as descriptors: the jail itself holds no path to anything but its binds.
//
// spawn_jailed() is meant for a single-threaded caller (the launcher): the child runs
// between clone and exec on a copy of the caller's memory without glibc's fork
// handlers.
#pragma once

#include <sys/types.h>

#include <functional>
#include <string>
#include <vector>

#include "base/unique_fd.hpp"
#include "sandbox/seccomp.hpp"

namespace azote::sandbox {

struct Bind {
  std::string source;  // host path of a directory
  std::string target;  // absolute path inside the jail
  bool writable = false;
  // The directory the caller made and means (it opened it without following symlinks):
  // the child opens `source` again without following any symlink, checks that it is this
  // very directory (device and inode), and binds what it opened. A path component swapped
  // for a symlink in between is refused, never followed. -1: no check (system paths).
  int source_fd = -1;
};

struct JailSpec {
  std::string name;       // the UTS hostname and the subject of error messages
  std::string root_dir;   // an empty directory the jail's tmpfs root is mounted on
  uid_t uid = 0;          // must not be 0
  gid_t gid = 0;          // must not be 0
  std::vector<Bind> binds;
  std::vector<int> fds;   // become 3, 4, ... in the jail, in this order
  int output_fd = -1;     // stdout and stderr; -1: /dev/null
  // cgroup.procs files the child joins before it goes on (the unified hierarchy's at
  // clone, CLONE_INTO_CGROUP; the others by the child itself, first thing).
  std::vector<std::string> cgroup_procs;
  bool share_network = false;  // keep the caller's network namespace (never for a jail the launcher builds today)
  uint64_t max_open_files = 1024;
  // Runs in the child, still root, inside its new namespaces but before the jail's root
  // replaces the host's (so /proc/sys and /dev/net/tun are still there) and before
  // credentials are dropped: preparing its network namespace. Descriptors it appends
  // to *fds follow spec.fds (3 + fds.size(), ...). The launcher has one thread, so
  // allocating here is safe. A non-empty return is an error that ends the spawn.
  std::function<std::string(std::vector<int>* fds)> in_child;
};

struct Jailed {
  pid_t pid = 0;
  UniqueFd pidfd;
};

// Starts the jailed process: clone3 (CLONE_PIDFD and the namespaces, straight into the
// cgroup v2 leaf where there is one), the child joins its other cgroups before anything
// else, builds its root, drops everything and execs `exec_fd` with `argv` (argv[0] is
// only a name) and a minimal environment. Returns after the exec succeeded; an error
// names the step that failed in the child.
Result<Jailed, SandboxError> spawn_jailed(const JailSpec& spec, int exec_fd, const std::vector<std::string>& argv);

// The same in two steps, for a caller that serves others meanwhile (the launcher):
// start_jailed() returns once the child is cloned; `outcome` becomes readable (data or
// hang-up) when the child has exec'd or failed, and finish_jailed() then says which
// without waiting (a failed child is reaped there).
struct Starting {
  Jailed jailed;
  UniqueFd outcome;
  std::string name;
};
Result<Starting, SandboxError> start_jailed(const JailSpec& spec, int exec_fd, const std::vector<std::string>& argv);
Result<Jailed, SandboxError> finish_jailed(Starting s);

// Starts `exec_fd` inside the jail of a running jailed process (`target`, its pidfd):
// its mount, PID, network, IPC, UTS and cgroup namespaces, its cgroups (`cgroup_procs`),
// its uid and gid, no capabilities. For tests that attack a jail from the inside (the
// boundary probe): what it sees is exactly what that process sees.
Result<Jailed, SandboxError> spawn_into(int target, uid_t uid, gid_t gid, const std::vector<std::string>& cgroup_procs,
                                        int output_fd, int exec_fd, const std::vector<std::string>& argv);

// Drops to `uid`/`gid` for good in the calling (single-threaded) process: no
// supplementary groups, no capabilities in any set including the bounding set,
// no_new_privs. What the launcher does to the controller before exec, and the jail to
// everything else.
Result<void, SandboxError> drop_privileges(uid_t uid, gid_t gid);

}  // namespace azote::sandbox
