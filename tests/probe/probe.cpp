// azote-probe: a hostile process for the boundary tests. The launcher starts it inside
// the jail of a running azote-hv or card (same namespaces, cgroups and uid: see
// lib/sandbox/jail.hpp spawn_into). It tries what a compromised hv or card would try,
// one line per attempt, then a summary; then it puts itself under that process's own
// seccomp policy (its "main" class) and makes a system call the policy forbids, which
// must end it with SIGSYS.
//
//   azote-probe --as hv|card-blk|card-net [--try-open PATH]... [--try-connect PATH]...
//   azote-probe --control ...   (as a stand-in azote-hv: killed by its filter at once)
//
// "refused" means the kernel said no (the errno is printed); "ALLOWED" is a hole.
#include <fcntl.h>
#include <linux/if_ether.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "sandbox/seccomp.hpp"

namespace azote {
namespace hv {
const sandbox::ProcessPolicy& seccomp_policy();
}
namespace card_blk {
const sandbox::ProcessPolicy& seccomp_policy();
}
namespace card_net {
const sandbox::ProcessPolicy& seccomp_policy();
}
}  // namespace azote

namespace {

int attempts = 0, refused = 0;

// `op` returns 0 on success, or an errno.
void attempt(const std::string& what, const std::function<int()>& op) {
  ++attempts;
  const int err = op();
  if (err != 0) {
    ++refused;
    std::printf("probe: %s: refused (%s)\n", what.c_str(), std::strerror(err));
  } else {
    std::printf("probe: %s: ALLOWED\n", what.c_str());
  }
  std::fflush(stdout);
}

int open_errno(const std::string& path, int flags) {
  const int fd = ::open(path.c_str(), flags | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return errno;
  ::close(fd);
  return 0;
}

int connect_errno(const std::string& path) {
  const int s = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) return errno;
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
  const int r = ::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a);  // NOLINT
  const int err = r == 0 ? 0 : errno;
  ::close(s);
  return err;
}

int socket_errno(int domain, int type, int proto) {
  const int s = ::socket(domain, type | SOCK_CLOEXEC, proto);
  if (s < 0) return errno;
  ::close(s);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // Started by a launcher as azote-hv (--hv azote-probe): a hypervisor that makes a
  // forbidden call at once, under azote-hv's own policy, so that the controller's handling
  // of a seccomp death can be tested. Its stderr is the instance's hv.log.
  for (int i = 1; i < argc; ++i)
    if (std::string(argv[i]) == "--control") {
      if (!azote::sandbox::init_process(azote::hv::seccomp_policy(), azote::sandbox::SeccompMode::kKill) ||
          !azote::sandbox::enter_thread("main", "azote-hv"))
        return 70;
      char* none[] = {nullptr};
      ::syscall(SYS_execve, "/bin/sh", none, none);
      return 71;
    }
  std::string as;
  std::vector<std::string> opens, connects;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i], v = argv[i + 1];
    if (a == "--as") as = v;
    else if (a == "--try-open") opens.push_back(v);
    else if (a == "--try-connect") connects.push_back(v);
    else {
      std::fprintf(stderr, "azote-probe: unknown option %s\n", a.c_str());
      return 64;
    }
  }
  const azote::sandbox::ProcessPolicy* policy = as == "hv"         ? &azote::hv::seccomp_policy()
                                                : as == "card-blk" ? &azote::card_blk::seccomp_policy()
                                                : as == "card-net" ? &azote::card_net::seccomp_policy()
                                                                   : nullptr;
  if (policy == nullptr) {
    std::fprintf(stderr, "azote-probe: --as hv|card-blk|card-net is required\n");
    return 64;
  }
  std::printf("probe: as %s, uid %u, pid %d in its namespace\n", as.c_str(), ::getuid(), ::getpid());
  for (const auto& p : opens) attempt("open " + p, [&] { return open_errno(p, O_RDONLY); });
  for (const auto& p : connects) attempt("connect " + p, [&] { return connect_errno(p); });
  attempt("open /dev/kvm", [] { return open_errno("/dev/kvm", O_RDWR); });
  // PID 1 of the jail is the process itself (azote-hv or the card): same uid, but not
  // dumpable, so its memory is out of reach.
  attempt("open /proc/1/mem", [] { return open_errno("/proc/1/mem", O_RDONLY); });
  attempt("ptrace PTRACE_ATTACH 1", [] { return ::ptrace(PTRACE_ATTACH, 1, nullptr, nullptr) == 0 ? 0 : errno; });
  attempt("socket AF_INET SOCK_RAW", [] { return socket_errno(AF_INET, SOCK_RAW, IPPROTO_ICMP); });
  attempt("socket AF_PACKET", [] { return socket_errno(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL)); });
  attempt("mount tmpfs on /", [] { return ::mount("x", "/", "tmpfs", 0, nullptr) == 0 ? 0 : errno; });
  attempt("setuid 0", [] { return ::setuid(0) == 0 ? 0 : errno; });
  attempt("write /usr", [] { return open_errno("/usr/azote-probe", O_WRONLY | O_CREAT); });
  std::printf("probe: %d attempts, %d refused, %d allowed\n", attempts, refused, attempts - refused);
  std::fflush(stdout);
  // Now the process's own allowlist: the next forbidden call must kill this process.
  if (auto s = azote::sandbox::init_process(*policy, azote::sandbox::SeccompMode::kKill); !s) {
    std::printf("probe: seccomp: %s\n", s.error().message().c_str());
    return 70;
  }
  if (auto s = azote::sandbox::enter_thread("main", "probe"); !s) {
    std::printf("probe: seccomp: %s\n", s.error().message().c_str());
    return 70;
  }
  std::printf("probe: under the %s main class; calling execve\n", as.c_str());
  std::fflush(stdout);
  char* none[] = {nullptr};
  ::syscall(SYS_execve, "/bin/sh", none, none);
  std::printf("probe: execve returned (%s): the filter did not stop it\n", std::strerror(errno));
  return 71;
}
