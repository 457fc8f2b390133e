#include "sandbox/jail.hpp"

#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <linux/close_range.h>
#include <linux/magic.h>
#include <linux/openat2.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

namespace azote::sandbox {
namespace {

// The system's code, read-only: what a dynamically linked azote binary and its shared
// libraries need to start. A host path that is a symlink (merged /usr: /lib -> usr/lib)
// becomes the same symlink.
constexpr const char* kSystemPaths[] = {"/usr", "/lib", "/lib64", "/lib32", "/libx32", "/bin", "/sbin"};
// Files of /etc that the C library reads at start (the loader's cache of library paths).
constexpr const char* kSystemFiles[] = {"/etc/ld.so.cache"};
constexpr const char* kDevices[] = {"/dev/null", "/dev/zero", "/dev/random", "/dev/urandom"};

// ---- child side: no allocation after the failure path starts, errors to the pipe ----

struct ChildError {
  int fd;
  [[noreturn]] void fail(const char* step, const std::string& what, int err) const {
    std::string msg = std::string(step) + (what.empty() ? "" : " " + what);
    if (err != 0) msg += std::string(": ") + std::strerror(err);
    (void)!::write(fd, msg.data(), msg.size());
    ::_exit(127);
  }
};

bool is_symlink(const char* path, std::string* target) {
  char buf[4096];
  const ssize_t n = ::readlink(path, buf, sizeof buf - 1);
  if (n < 0) return false;
  target->assign(buf, static_cast<size_t>(n));
  return true;
}

void mkdir_p(const ChildError& e, const std::string& path, mode_t mode) {
  for (size_t i = 1; i <= path.size(); ++i) {
    if (i != path.size() && path[i] != '/') continue;
    const std::string part = path.substr(0, i);
    if (::mkdir(part.c_str(), mode) != 0 && errno != EEXIST) e.fail("mkdir", part, errno);
  }
}

void bind_mount(const ChildError& e, const std::string& source, const std::string& target, bool writable, bool is_dir,
          unsigned long extra) {
  if (is_dir) {
    mkdir_p(e, target, 0755);
  } else {
    mkdir_p(e, target.substr(0, target.rfind('/')), 0755);
    const int f = ::open(target.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    if (f < 0) e.fail("create mount point", target, errno);
    ::close(f);
  }
  if (::mount(source.c_str(), target.c_str(), nullptr, MS_BIND | MS_REC, nullptr) != 0)
    e.fail("bind", source + " on " + target, errno);
  const unsigned long flags = MS_BIND | MS_REMOUNT | MS_NOSUID | extra | (writable ? 0 : MS_RDONLY);
  if (::mount(nullptr, target.c_str(), nullptr, flags, nullptr) != 0) e.fail("remount", target, errno);
}

void build_root(const ChildError& e, const JailSpec& s) {
  // Nothing of what follows may reach the host's mount table.
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) e.fail("make / private", "", errno);
  const std::string& r = s.root_dir;
  if (::mount("azote-jail", r.c_str(), "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0755,size=1m,nr_inodes=256") != 0)
    e.fail("mount the jail's tmpfs on", r, errno);
  struct stat st{};
  for (const char* p : kSystemPaths) {
    std::string target;
    if (is_symlink(p, &target)) {
      if (::symlink(target.c_str(), (r + p).c_str()) != 0) e.fail("symlink", r + p, errno);
    } else if (::stat(p, &st) == 0 && S_ISDIR(st.st_mode)) {
      bind_mount(e, p, r + p, false, true, MS_NODEV);
    }
  }
  for (const char* p : kSystemFiles)
    if (::stat(p, &st) == 0 && S_ISREG(st.st_mode)) bind_mount(e, p, r + p, false, false, MS_NODEV | MS_NOEXEC);
  for (const char* d : kDevices) bind_mount(e, d, r + d, true, false, MS_NOEXEC);
  for (const Bind& b : s.binds) {
    if (b.source_fd < 0) {
      bind_mount(e, b.source, r + b.target, b.writable, true, MS_NODEV | MS_NOEXEC);
      continue;
    }
    // A descriptor from the parent names a mount of the parent's namespace, which cannot
    // be bound here: open the path again in this namespace, refusing any symlink, and
    // check it is the same directory.
    open_how how{};
    how.flags = O_PATH | O_DIRECTORY | O_CLOEXEC;
    how.resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
    const int fd = static_cast<int>(::syscall(SYS_openat2, AT_FDCWD, b.source.c_str(), &how, sizeof how));
    struct stat mine{}, meant{};
    if (fd < 0) e.fail("open (no symlinks)", b.source, errno);
    if (::fstat(fd, &mine) != 0 || ::fstat(b.source_fd, &meant) != 0 || mine.st_dev != meant.st_dev ||
        mine.st_ino != meant.st_ino)
      e.fail("bind", b.source + ": not the directory the launcher prepared", 0);
    bind_mount(e, "/proc/self/fd/" + std::to_string(fd), r + b.target, b.writable, true, MS_NODEV | MS_NOEXEC);
  }
  // A /proc of this PID namespace only, showing processes and nothing of the kernel's
  // (subset=pid: no /proc/sys, /proc/kcore, ...).
  mkdir_p(e, r + "/proc", 0555);
  if (::mount("proc", (r + "/proc").c_str(), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=invisible,subset=pid") != 0)
    e.fail("mount /proc", "", errno);
  if (::chdir(r.c_str()) != 0) e.fail("chdir", r, errno);
  // pivot_root(".", "."): the old root is stacked under the new one; detach it.
  if (::syscall(SYS_pivot_root, ".", ".") != 0) e.fail("pivot_root", r, errno);
  if (::umount2(".", MNT_DETACH) != 0) e.fail("detach the host's root", "", errno);
  if (::chdir("/") != 0) e.fail("chdir /", "", errno);
  if (::mount(nullptr, "/", nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) != 0)
    e.fail("make the root read-only", "", errno);
}

// Puts spec.fds at 3.., output on 1 and 2, /dev/null on 0, marks every other fd
// close-on-exec; returns where the binary and the error pipe now are.
struct Placed {
  int exec_fd, err_fd;
};
Placed place_fds(const ChildError& e, const JailSpec& s, int exec_fd) {
  // Above every fd involved, so that no dup2 below clobbers a source still needed.
  int top = std::max({exec_fd, s.output_fd, e.fd, 2 + static_cast<int>(s.fds.size())}) + 1;
  for (int f : s.fds) top = std::max(top, f + 1);
  std::vector<int> moved;
  moved.reserve(s.fds.size());
  for (int f : s.fds) {
    const int m = ::fcntl(f, F_DUPFD_CLOEXEC, top);
    if (m < 0) e.fail("dup", "fd " + std::to_string(f), errno);
    moved.push_back(m);
  }
  const int out = s.output_fd >= 0 ? ::fcntl(s.output_fd, F_DUPFD_CLOEXEC, top) : ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  Placed p{::fcntl(exec_fd, F_DUPFD_CLOEXEC, top), ::fcntl(e.fd, F_DUPFD_CLOEXEC, top)};
  if (out < 0 || p.exec_fd < 0 || p.err_fd < 0) e.fail("dup", "output or binary", errno);
  const ChildError e2{p.err_fd};
  const int in = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (in < 0 || ::dup2(in, 0) < 0 || ::dup2(out, 1) < 0 || ::dup2(out, 2) < 0) e2.fail("stdio", "", errno);
  for (size_t i = 0; i < moved.size(); ++i)
    if (::dup2(moved[i], 3 + static_cast<int>(i)) < 0) e2.fail("dup2", "fd " + std::to_string(3 + i), errno);
  // dup2 left 0..2+n inheritable; everything above goes at exec (the binary and the
  // error pipe included: the pipe's closing tells the launcher the exec succeeded).
  if (::syscall(SYS_close_range, 3 + static_cast<unsigned>(moved.size()), ~0U, CLOSE_RANGE_CLOEXEC) != 0)
    e2.fail("close_range", "", errno);
  return p;
}

void drop(const ChildError& e, uid_t uid, gid_t gid) {
  if (auto d = drop_privileges(uid, gid); !d) e.fail("drop privileges", d.error().message(), 0);
}

[[noreturn]] void child(const JailSpec& s, int exec_fd, const std::vector<std::string>& argv, int err_fd,
                        std::optional<size_t> joined_at_clone) {
  ChildError e{err_fd};
  // Into every cgroup not joined at clone, before anything else runs. The child does it
  // (it is still the launcher's code, as root): a v1 migration waits for an RCU grace
  // period, which would otherwise hold the launcher's one thread.
  for (size_t i = 0; i < s.cgroup_procs.size(); ++i) {
    if (joined_at_clone && i == *joined_at_clone) continue;
    const int f = ::open(s.cgroup_procs[i].c_str(), O_WRONLY | O_CLOEXEC);
    if (f < 0 || ::write(f, "0", 1) != 1) e.fail("join", s.cgroup_procs[i], errno);
    ::close(f);
  }
  // Now that it is in its leaf, make the leaf its cgroup root (a namespace made at clone
  // time would be rooted where the launcher is).
  if (::unshare(CLONE_NEWCGROUP) != 0) e.fail("unshare(CLONE_NEWCGROUP)", "", errno);
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) e.fail("PR_SET_PDEATHSIG", "", errno);
  JailSpec spec = s;  // this process's own copy: in_child may add descriptors
  if (spec.in_child) {
    const std::string err = spec.in_child(&spec.fds);
    if (!err.empty()) e.fail("prepare", err, 0);
  }
  build_root(e, spec);
  if (::sethostname(spec.name.data(), spec.name.size()) != 0) e.fail("sethostname", spec.name, errno);
  // The death signal was for the window above (a launcher dying mid-setup leaves no
  // half-built jail); the process itself outlives a launcher restart.
  (void)::prctl(PR_SET_PDEATHSIG, 0);
  rlimit core{0, 0};
  rlimit files{spec.max_open_files, spec.max_open_files};
  if (::setrlimit(RLIMIT_CORE, &core) != 0 || ::setrlimit(RLIMIT_NOFILE, &files) != 0) e.fail("setrlimit", "", errno);
  const Placed p = place_fds(e, spec, exec_fd);
  e = ChildError{p.err_fd};
  drop(e, spec.uid, spec.gid);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  char path[] = "PATH=/usr/bin:/bin";
  char lang[] = "LC_ALL=C";
  char* env[] = {path, lang, nullptr};
  ::syscall(SYS_execveat, p.exec_fd, "", args.data(), env, AT_EMPTY_PATH);
  e.fail("exec", argv.empty() ? "" : argv[0], errno);
}

// The child's word on its exec: the error pipe closes (close-on-exec) when the exec
// succeeded, or carries the failed step; a failed child is reaped here.
std::string exec_outcome(const UniqueFd& err_r, const Jailed& j) {
  std::string err;
  char buf[512];
  ssize_t n;
  while ((n = ::read(err_r.get(), buf, sizeof buf)) > 0) err.append(buf, static_cast<size_t>(n));
  if (!err.empty()) {
    siginfo_t si{};
    ::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(j.pidfd.get()), &si, WEXITED);
  }
  return err;
}

}  // namespace

Result<void, SandboxError> drop_privileges(uid_t uid, gid_t gid) {
  if (uid == 0 || gid == 0) return make_error(SandboxErrc::kCredentials, "refusing to run as uid or gid 0");
  // The bounding set first: dropping needs CAP_SETPCAP, gone after setresuid.
  for (int cap = 0; cap <= CAP_LAST_CAP; ++cap)
    if (::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL)
      return errno_error(SandboxErrc::kCredentials, "PR_CAPBSET_DROP " + std::to_string(cap));
  if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL)
    return errno_error(SandboxErrc::kCredentials, "PR_CAP_AMBIENT_CLEAR_ALL");
  if (::setgroups(0, nullptr) != 0) return errno_error(SandboxErrc::kCredentials, "setgroups");
  if (::setresgid(gid, gid, gid) != 0) return errno_error(SandboxErrc::kCredentials, "setresgid " + std::to_string(gid));
  // From uid 0 to non-zero with keep-caps off: permitted and effective sets are cleared.
  if (::setresuid(uid, uid, uid) != 0) return errno_error(SandboxErrc::kCredentials, "setresuid " + std::to_string(uid));
  __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2] = {};
  if (::syscall(SYS_capset, &hdr, data) != 0) return errno_error(SandboxErrc::kCredentials, "capset (clear)");
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return errno_error(SandboxErrc::kCredentials, "PR_SET_NO_NEW_PRIVS");
  return {};
}

// The cgroup v2 directory among `procs` files, opened, and the index of its file; the
// child is cloned straight into it (CLONE_INTO_CGROUP, Linux 5.7+). Writing a pid into a
// v2 cgroup.procs instead waits for an RCU grace period (~10 ms here, for every spawn, in
// the launcher's one thread); v1 hierarchies have no such wait and are still written.
struct IntoCgroup {
  UniqueFd dir;
  size_t index = 0;
};
IntoCgroup v2_cgroup_of(const std::vector<std::string>& procs) {
  for (size_t i = 0; i < procs.size(); ++i) {
    const std::string& f = procs[i];
    const size_t slash = f.rfind('/');
    if (slash == std::string::npos || slash == 0) continue;
    UniqueFd d(::open(f.substr(0, slash).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    struct statfs sf{};
    if (d && ::fstatfs(d.get(), &sf) == 0 && sf.f_type == CGROUP2_SUPER_MAGIC) return IntoCgroup{std::move(d), i};
  }
  return {};
}

// clone3 with `ca`; into the v2 cgroup if there is one (and the kernel takes it: on an
// older kernel, plain clone3 and the cgroup written afterwards). `joined` says which.
long clone_into(clone_args& ca, const IntoCgroup& into, bool& joined) {
  joined = false;
  if (into.dir) {
    clone_args with = ca;
    with.flags |= CLONE_INTO_CGROUP;
    with.cgroup = static_cast<uint64_t>(into.dir.get());
    const long pid = ::syscall(SYS_clone3, &with, sizeof with);
    if (pid >= 0) {
      joined = true;
      return pid;
    }
    if (errno != EINVAL && errno != E2BIG && errno != ENOSYS) return pid;
  }
  return ::syscall(SYS_clone3, &ca, sizeof ca);
}

Result<Starting, SandboxError> start_jailed(const JailSpec& spec, int exec_fd, const std::vector<std::string>& argv) {
  if (spec.uid == 0 || spec.gid == 0) return make_error(SandboxErrc::kCredentials, spec.name + ": refusing uid or gid 0");
  if (spec.root_dir.empty() || spec.root_dir[0] != '/')
    return make_error(SandboxErrc::kUsage, spec.name + ": the jail's root directory must be an absolute path");
  int err_pipe[2];
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) return errno_error(SandboxErrc::kExec, spec.name + ": pipe");
  UniqueFd err_r(err_pipe[0]), err_w(err_pipe[1]);

  clone_args ca{};
  int pidfd = -1;
  ca.flags = CLONE_PIDFD | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS |
             (spec.share_network ? 0 : CLONE_NEWNET);
  ca.pidfd = reinterpret_cast<uint64_t>(&pidfd);  // NOLINT: the kernel's ABI takes a pointer as u64
  ca.exit_signal = SIGCHLD;
  const IntoCgroup into = v2_cgroup_of(spec.cgroup_procs);
  bool joined = false;
  std::fflush(nullptr);
  const long pid = clone_into(ca, into, joined);
  if (pid < 0) return errno_error(SandboxErrc::kNamespace, spec.name + ": clone3 with new namespaces");
  if (pid == 0) {
    err_r.reset();
    child(spec, exec_fd, argv, err_w.get(), joined ? std::optional<size_t>(into.index) : std::nullopt);
  }
  Starting st;
  st.jailed.pid = static_cast<pid_t>(pid);
  st.jailed.pidfd.reset(pidfd);
  st.outcome = std::move(err_r);
  st.name = spec.name;
  return st;
}

Result<Jailed, SandboxError> finish_jailed(Starting s) {
  if (const std::string err = exec_outcome(s.outcome, s.jailed); !err.empty())
    return make_error(SandboxErrc::kExec, s.name + ": " + err);
  return std::move(s.jailed);
}

Result<Jailed, SandboxError> spawn_jailed(const JailSpec& spec, int exec_fd, const std::vector<std::string>& argv) {
  AZOTE_TRY(s, start_jailed(spec, exec_fd, argv));
  return finish_jailed(std::move(s));
}

Result<Jailed, SandboxError> spawn_into(int target, uid_t uid, gid_t gid, const std::vector<std::string>& cgroup_procs,
                                        int output_fd, int exec_fd, const std::vector<std::string>& argv) {
  if (uid == 0 || gid == 0) return make_error(SandboxErrc::kCredentials, "refusing uid or gid 0");
  int err_pipe[2];
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) return errno_error(SandboxErrc::kExec, "pipe");
  UniqueFd err_r(err_pipe[0]), err_w(err_pipe[1]);
  int pidfd = -1;
  clone_args ca{};
  ca.flags = CLONE_PIDFD;
  ca.pidfd = reinterpret_cast<uint64_t>(&pidfd);  // NOLINT: the kernel's ABI takes a pointer as u64
  ca.exit_signal = SIGCHLD;
  const IntoCgroup into = v2_cgroup_of(cgroup_procs);
  bool joined = false;
  std::fflush(nullptr);
  const long pid = clone_into(ca, into, joined);
  if (pid < 0) return errno_error(SandboxErrc::kExec, "clone3");
  if (pid == 0) {
    err_r.reset();
    ChildError e{err_w.get()};
    for (size_t i = 0; i < cgroup_procs.size(); ++i) {
      if (joined && i == into.index) continue;
      const std::string& procs = cgroup_procs[i];
      const int f = ::open(procs.c_str(), O_WRONLY | O_CLOEXEC);
      if (f < 0 || ::write(f, "0", 1) != 1) e.fail("join", procs, errno);
      ::close(f);
    }
    // Every namespace at once, through the target's pidfd (Linux 5.8+).
    if (::setns(target, CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWCGROUP | CLONE_NEWPID) != 0)
      e.fail("setns into the target's namespaces", "", errno);
    if (::chdir("/") != 0) e.fail("chdir /", "", errno);
    // The PID namespace applies to children: the probe is the next process.
    const pid_t inner = ::fork();
    if (inner < 0) e.fail("fork", "", errno);
    if (inner > 0) {
      err_w.reset();  // the probe's exec (or failure) alone answers the launcher
      int st = 0;
      ::waitpid(inner, &st, 0);
      ::_exit(WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
    }
    JailSpec spec;
    spec.output_fd = output_fd;
    const Placed p = place_fds(e, spec, exec_fd);
    e = ChildError{p.err_fd};
    drop(e, uid, gid);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    char path[] = "PATH=/usr/bin:/bin";
    char* env[] = {path, nullptr};
    ::syscall(SYS_execveat, p.exec_fd, "", args.data(), env, AT_EMPTY_PATH);
    e.fail("exec", argv.empty() ? "" : argv[0], errno);
  }
  Jailed j;
  j.pid = static_cast<pid_t>(pid);
  j.pidfd.reset(pidfd);
  err_w.reset();
  if (const std::string err = exec_outcome(err_r, j); !err.empty()) return make_error(SandboxErrc::kExec, err);
  return j;
}

}  // namespace azote::sandbox
