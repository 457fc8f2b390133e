#include "launcher/launcher.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <tuple>

#include "base/log.hpp"
#include "control/control.hpp"
#include "imds/netns.hpp"
#include "sandbox/jail.hpp"

namespace azote::launcher {
namespace fs = std::filesystem;
using launch::Json;
using launch::Role;

namespace {

constexpr uint64_t kTagSignal = 1, kTagController = 2, kTagTestListen = 3, kTagGuard = 4, kTagTestClient = 1ull << 32,
                   kTagAdopted = 2ull << 32, kTagStarting = 3ull << 32;
constexpr size_t kMaxExited = 4096;
constexpr size_t kMaxTestClients = 8;

Json refuse(const std::string& why) { return Json{{"ok", false}, {"error", why}}; }

std::string slurp_file(const fs::path& p) {
  std::ifstream f(p);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

uint64_t starttime_of(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const size_t close = s.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream in(s.substr(close + 2));
  std::string field;
  for (int i = 3; i <= 22; ++i)
    if (!(in >> field)) return 0;
  return std::stoull(field);
}

std::string fnv_hex(const std::string& s) {
  uint32_t h = 2166136261u;
  for (unsigned char c : s) h = (h ^ c) * 16777619u;
  char b[9];
  std::snprintf(b, sizeof b, "%08x", h);
  return b;
}

// An instance, or one of its enclaves (its own jail, uid and cgroup beside its parent's).
bool valid_instance(const std::string& id) {
  return std::regex_match(id, std::regex("i-[0-9a-f]{8,17}(-enc[0-9a-f]{16})?"));
}
bool valid_eni(const std::string& id) { return std::regex_match(id, std::regex("eni-[0-9a-f]{8,17}")); }

int pidfd_open(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }

}  // namespace

std::optional<std::string> refused_args(const std::vector<std::string>& args) {
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--seccomp=log" || (a == "--seccomp" && i + 1 < args.size() && args[i + 1] == "log"))
      return "--seccomp=log is for debugging by hand only; the launcher never starts a process with it";
  }
  return std::nullopt;
}

Result<std::unique_ptr<Launcher>, LauncherError> Launcher::create(Options o) {
  if (::geteuid() != 0)
    return make_error(LauncherErrc::kSetup, "azote-launcher must run as root (it builds the jails); it is started by "
                                            "azote-controller when that runs as root");
  std::unique_ptr<Launcher> l(new Launcher(std::move(o)));
  AZOTE_TRYV(l->prepare_state_dir());
  l->host_name_ = "azote-" + fnv_hex(l->o_.state_dir);
  auto tree = sandbox::CgroupTree::open(l->host_name_);
  if (!tree) return make_error(LauncherErrc::kSetup, tree.error().message());
  l->cgroups_.emplace(std::move(tree).value());
  LOG_INFO("azote-launcher: state %s, cgroups %s (%s), uids from %u", l->o_.state_dir.c_str(), l->host_name_.c_str(),
           l->cgroups_->layout().c_str(), l->o_.uid_base);
  if (!l->o_.release_manifest.empty()) {
    // The trust anchor and what it signs: only root may have written them.
    for (const auto* f : {&l->o_.release_manifest, &l->o_.release_key}) {
      struct stat st{};
      if (::stat(f->c_str(), &st) != 0) return errno_error(LauncherErrc::kSetup, *f);
      if (st.st_uid != 0 || (st.st_mode & 022) != 0)
        return make_error(LauncherErrc::kSetup, *f + " must be owned by root and not writable by group or others");
    }
    auto text = release::read_file(l->o_.release_manifest);
    auto key = release::read_file(l->o_.release_key);
    if (!text) return make_error(LauncherErrc::kSetup, "--release-manifest: " + text.error().message());
    if (!key) return make_error(LauncherErrc::kSetup, "--release-key: " + key.error().message());
    auto m = release::verify(*text, *key);
    if (!m) return make_error(LauncherErrc::kSetup, "--release-manifest " + l->o_.release_manifest + ": " + m.error().message());
    l->manifest_ = std::move(m).value();
    l->manifest_text_ = std::move(*text);
    // The release key's identity: what an instance's PCR 8 measures, as Nitro's measures
    // an enclave image's signing key.
    auto key_id = release::public_key_sha384(*key);
    if (!key_id) return make_error(LauncherErrc::kSetup, "--release-key " + l->o_.release_key + ": " + key_id.error().message());
    l->release_key_sha384_ = std::move(key_id).value();
    // This launcher itself is the first binary the release must vouch for.
    UniqueFd self(::open("/proc/self/exe", O_RDONLY | O_CLOEXEC));
    if (!self) return errno_error(LauncherErrc::kSetup, "/proc/self/exe");
    if (auto c = release::check(*l->manifest_, "azote-launcher", self.get()); !c)
      return make_error(LauncherErrc::kSetup, "verified launch: " + c.error().message());
    for (const auto& [name, path] : {std::pair<std::string, std::string>{"azote-hv", l->o_.hv_bin},
                                     {"azote-card-blk", l->o_.card_blk_bin},
                                     {"azote-card-net", l->o_.card_net_bin},
                                     {"azote-card-tpm", l->o_.card_tpm_bin},
                                     {"azote-card-nsm", l->o_.card_nsm_bin},
                                     {"azote-card-vsock", l->o_.card_vsock_bin}})
      if (path.empty()) {
        continue;
      } else if (auto s = l->seal_binary(name, path); !s) {
        // Every spawn of it is refused with this reason (the instance's state reason and
        // audit record); the host itself still serves.
        LOG_ERROR("azote-launcher: %s", s.error().message().c_str());
        l->refused_[name] = s.error().message();
      }
    LOG_INFO("azote-launcher: verified launch: release %s (%zu binaries); nothing else runs",
             l->manifest_->release.c_str(), l->manifest_->files.size());
  } else {
    LOG_WARN("azote-launcher: development mode: no --release-manifest, binaries run without a signed release");
  }
  if (l->o_.favordynmods && l->cgroups_->moves_processes()) {
    // Not fatal: without it every launch is slower, not less confined.
    if (auto f = l->cgroups_->favor_migrations(); f) LOG_INFO("azote-launcher: cgroups: %s", f->c_str());
    else LOG_WARN("azote-launcher: cgroups: favordynmods not set (launches wait for RCU grace periods): %s",
                  f.error().message().c_str());
  }

  sigset_t set;
  sigemptyset(&set);
  for (int s : {SIGTERM, SIGINT, SIGCHLD}) sigaddset(&set, s);
  ::sigprocmask(SIG_BLOCK, &set, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  l->signal_fd_.reset(::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
  l->epoll_.reset(::epoll_create1(EPOLL_CLOEXEC));
  if (!l->signal_fd_ || !l->epoll_) return errno_error(LauncherErrc::kSetup, "signalfd/epoll");
  epoll_event ev{EPOLLIN, {.u64 = kTagSignal}};
  ::epoll_ctl(l->epoll_.get(), EPOLL_CTL_ADD, l->signal_fd_.get(), &ev);

  if (!l->o_.test_socket.empty()) {
    if (l->o_.probe_bin.empty()) return make_error(LauncherErrc::kUsage, "--test-socket needs --probe");
    l->test_listen_.reset(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    if (l->o_.test_socket.size() >= sizeof a.sun_path) return make_error(LauncherErrc::kUsage, "--test-socket: path too long");
    std::strncpy(a.sun_path, l->o_.test_socket.c_str(), sizeof a.sun_path - 1);
    ::unlink(l->o_.test_socket.c_str());
    if (::bind(l->test_listen_.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||  // NOLINT
        ::chmod(l->o_.test_socket.c_str(), 0600) != 0 || ::listen(l->test_listen_.get(), 4) != 0)
      return errno_error(LauncherErrc::kSetup, "--test-socket " + l->o_.test_socket);
    epoll_event te{EPOLLIN, {.u64 = kTagTestListen}};
    ::epoll_ctl(l->epoll_.get(), EPOLL_CTL_ADD, l->test_listen_.get(), &te);
  }
  l->adopt_existing();
  // Without its root of trust the host still serves (nothing can be attested, which
  // describe-host-attestation says); a binary the release refuses is such a case.
  // One azote-rot per host: one an earlier launcher left behind (a launcher killed
  // outright: nothing stopped its azote-rot) goes first; its socket is this launcher's.
  // (By pid, and at start only: CgroupTree::kill("rot") before each restart left every
  // restarted azote-rot killed at once on this host; the cause is not found yet.)
  for (pid_t p : l->cgroups_->procs("rot")) {
    LOG_INFO("azote-launcher: stopping the azote-rot an earlier launcher left (pid %d)", p);
    ::kill(p, SIGKILL);
  }
  if (!l->o_.rot_bin.empty())
    if (auto r = l->start_rot(); !r) LOG_ERROR("azote-launcher: azote-rot not started: %s", r.error().message().c_str());
  AZOTE_TRYV(l->start_guard());
  AZOTE_TRYV(l->start_controller());
  return l;
}

void Launcher::adopt_existing() {
  // What an earlier launcher of this host started and still runs: known again by its
  // leaf in the cgroup tree (<instance>/<role>, host/card-fabric), so that a launcher
  // restart neither orphans nor forgets running instances. Their exit statuses are not
  // ours to reap (their parent is gone); an exit is seen through the pidfd.
  const std::string tree = cgroups_->membership_dir("");
  std::error_code ec;
  for (const auto& group : fs::directory_iterator(tree, ec)) {
    if (!group.is_directory() || group.path().filename() == "controller" || group.path().filename() == "rot") continue;
    for (const auto& leaf : fs::directory_iterator(group.path(), ec)) {
      if (!leaf.is_directory()) continue;
      const auto role = launch::parse_role(leaf.path().filename());
      if (!role) continue;
      // host/: the host's own processes, of no instance; host/card-fabric is the fabric
      // process, known by the name its requests use.
      const std::string instance = group.path().filename() != "host" ? group.path().filename().string()
                                   : *role == Role::kCardFabric        ? launch::kFabricInstance
                                                                       : "";
      std::istringstream procs(slurp_file(leaf.path() / "cgroup.procs"));
      pid_t pid;
      while (procs >> pid) {
        Child c;
        c.role = *role;
        c.instance = instance;
        c.cgroup = fs::relative(leaf.path(), tree).string();
        c.starttime = starttime_of(pid);
        c.pidfd.reset(pidfd_open(pid));
        if (!c.pidfd) continue;
        struct stat st{};
        if (::stat(("/proc/" + std::to_string(pid)).c_str(), &st) == 0) c.uid = st.st_uid;
        if (manifest_) {
          // What it runs, checked again: a process another launcher started under
          // another release does not inherit this one's measurement.
          const char* name = binary_of(c.role).first;
          UniqueFd exe(::open(("/proc/" + std::to_string(pid) + "/exe").c_str(), O_RDONLY | O_CLOEXEC));
          if (exe && release::check(*manifest_, name, exe.get())) c.binary_sha384 = manifest_->files[name];
        }
        epoll_event ev{EPOLLIN, {.u64 = kTagAdopted + static_cast<uint64_t>(pid)}};
        ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, c.pidfd.get(), &ev);
        LOG_INFO("azote-launcher: adopted %s %s (pid %d)", to_string(c.role), instance.c_str(), pid);
        children_.emplace(pid, std::move(c));
      }
    }
  }
}

uint32_t Launcher::id_of(Role role, uint32_t slot) const {
  // The host's fabric process: its own uid (the instances' cards take relayed frames from
  // it by that uid), whatever slot the request says.
  if (role == Role::kCardFabric) return o_.uid_base + launch::kFabricId;
  // An instance's hv and cards share its uid: one tenant per process, and every process
  // of a tenant under one identity (a card's neighbours know it by that uid).
  return o_.uid_base + launch::kFirstInstanceId + slot;
}

Result<void, LauncherError> Launcher::prepare_state_dir() {
  std::error_code ec;
  fs::create_directories(o_.state_dir, ec);
  const fs::path real = fs::canonical(o_.state_dir, ec);
  if (ec) return make_error(LauncherErrc::kSetup, "state directory " + o_.state_dir + ": " + ec.message());
  o_.state_dir = real.string();
  state_fd_.reset(::open(o_.state_dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!state_fd_) return errno_error(LauncherErrc::kSetup, "open " + o_.state_dir);
  const uid_t ctl = o_.uid_base + launch::kControllerId;
  // The controller owns the state directory and what it keeps there (database, audit
  // log, PKI, volumes, images, logs); the jails' own directories belong to them.
  if (::chown(o_.state_dir.c_str(), ctl, ctl) != 0 || ::chmod(o_.state_dir.c_str(), 0700) != 0)
    return errno_error(LauncherErrc::kSetup, "chown " + o_.state_dir);
  for (auto it = fs::recursive_directory_iterator(real, fs::directory_options::none, ec);
       it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) break;
    const std::string rel = fs::relative(it->path(), real).string();
    const bool jail_owned = rel == ".jail" || rel == "net" || rel.rfind("net/", 0) == 0 || rel == "rot" ||
                            rel == "vsock" || rel.rfind("vsock/", 0) == 0 || rel == "host" || rel.rfind("host/", 0) == 0 ||
                            std::regex_match(rel, std::regex("instances/[^/]+/run(/.*)?"));
    if (jail_owned) {
      if (it->is_directory() && !it->is_symlink()) it.disable_recursion_pending();
      continue;
    }
    (void)::lchown(it->path().c_str(), ctl, ctl);
  }
  for (auto [dir, owner, mode] : {std::tuple{".jail", 0u, 0755u}, {"instances", ctl, 0700u}, {"net", 0u, 0711u},
                                     {"vsock", 0u, 0711u}, {"host", 0u, 0711u}})
    if (auto d = ensure_dir(dir, owner, owner, mode); !d) return Unexpected{d.error()};
  if (!o_.rot_bin.empty()) {
    const uid_t rot = o_.uid_base + launch::kRotId;
    if (auto d = ensure_dir("rot", rot, rot, 0700); !d) return Unexpected{d.error()};
  }
  return {};
}

Result<UniqueFd, LauncherError> Launcher::dir_beneath(const std::string& rel) {
  // The state directory belongs to the controller: any component of `rel` may have been
  // swapped for a symlink by a compromised one. openat2 refuses to follow any.
  open_how how{};
  how.flags = O_PATH | O_DIRECTORY | O_CLOEXEC;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  UniqueFd d(static_cast<int>(::syscall(SYS_openat2, state_fd_.get(), rel.empty() ? "." : rel.c_str(), &how, sizeof how)));
  if (!d) return errno_error(LauncherErrc::kSetup, o_.state_dir + "/" + rel);
  return d;
}

Result<UniqueFd, LauncherError> Launcher::ensure_dir(const std::string& rel, uid_t uid, gid_t gid, mode_t mode) {
  const size_t slash = rel.rfind('/');
  const std::string parent = slash == std::string::npos ? "" : rel.substr(0, slash);
  const std::string name = slash == std::string::npos ? rel : rel.substr(slash + 1);
  AZOTE_TRY(pfd, dir_beneath(parent));
  if (::mkdirat(pfd.get(), name.c_str(), mode & 0777) != 0 && errno != EEXIST)
    return errno_error(LauncherErrc::kSetup, "mkdir " + o_.state_dir + "/" + rel);
  // O_NOFOLLOW: a symlink there is an error, never followed; ownership and mode go on
  // the descriptor, so nothing can be swapped in between.
  UniqueFd d(::openat(pfd.get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!d) return errno_error(LauncherErrc::kSetup, o_.state_dir + "/" + rel + " (not a directory?)");
  if (::fchown(d.get(), uid, gid) != 0 || ::fchmod(d.get(), mode) != 0)
    return errno_error(LauncherErrc::kSetup, "chown/chmod " + o_.state_dir + "/" + rel);
  return d;
}

namespace {
// A binary to run, opened for reading (hashing, copying) and exec, with its status.
Result<UniqueFd, LauncherError> open_regular(const std::string& name, const std::string& path, struct stat* st) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return errno_error(LauncherErrc::kSetup, name + " (" + path + ")");
  if (::fstat(fd.get(), st) != 0 || !S_ISREG(st->st_mode))
    return make_error(LauncherErrc::kSetup, name + " (" + path + ") is not a regular file");
  return fd;
}
}  // namespace

Result<void, LauncherError> Launcher::seal_binary(const std::string& name, const std::string& path) {
  struct stat st{};
  AZOTE_TRY(src, open_regular(name, path, &st));
  // MFD_EXEC (Linux 6.3) says the copy is meant to be executed; older kernels refuse the
  // flag and execute memfds anyway.
  constexpr unsigned kMfdExec = 0x0010U;
  UniqueFd m(::memfd_create(name.c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING | kMfdExec));
  if (!m && errno == EINVAL) m.reset(::memfd_create(name.c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!m && errno == EACCES)
    return make_error(LauncherErrc::kSetup, "memfd for " + name + ": executable memfds are refused on this host "
                                            "(vm.memfd_noexec = 2); verified launch runs binaries from sealed memfds");
  if (!m) return errno_error(LauncherErrc::kSetup, "memfd for " + name);
  for (off_t off = 0; off < st.st_size;) {
    const ssize_t n = ::sendfile(m.get(), src.get(), &off, static_cast<size_t>(st.st_size - off));
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) return make_error(LauncherErrc::kSetup, "copy " + path + " into a memfd: the file shrank while read");
    if (n < 0) return errno_error(LauncherErrc::kSetup, "copy " + path + " into a memfd");
  }
  if (::fchmod(m.get(), 0555) != 0 ||
      ::fcntl(m.get(), F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0)
    return errno_error(LauncherErrc::kSetup, "seal the copy of " + path);
  if (auto c = release::check(*manifest_, name, m.get()); !c)
    return make_error(LauncherErrc::kSetup, "verified launch refused " + path + ": " + c.error().message());
  sealed_[name] = std::move(m);
  return {};
}

Result<UniqueFd, LauncherError> Launcher::open_binary(const std::string& name, const std::string& path) const {
  if (const auto it = refused_.find(name); it != refused_.end()) return make_error(LauncherErrc::kSetup, it->second);
  if (const auto it = sealed_.find(name); it != sealed_.end()) {
    UniqueFd d(::fcntl(it->second.get(), F_DUPFD_CLOEXEC, 3));
    if (!d) return errno_error(LauncherErrc::kSetup, "dup the sealed " + name);
    return d;
  }
  struct stat st{};
  AZOTE_TRY(fd, open_regular(name, path, &st));
  if (manifest_) {
    // Only root may change it between the hash and the exec (the same descriptor): a
    // file another uid could write would let that uid swap what runs after the check.
    if (st.st_uid != 0 || (st.st_mode & 022) != 0)
      return make_error(LauncherErrc::kSetup, "verified launch refused " + path + ": writable by others than root");
    if (auto c = release::check(*manifest_, name, fd.get()); !c)
      return make_error(LauncherErrc::kSetup, "verified launch refused " + path + ": " + c.error().message());
  }
  return fd;
}

Result<void, LauncherError> Launcher::start_controller() {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
    return errno_error(LauncherErrc::kSetup, "socketpair");
  UniqueFd mine(sv[0]), theirs(sv[1]);
  auto leaf = cgroups_->create("controller", {});
  if (!leaf) return make_error(LauncherErrc::kSetup, leaf.error().message());
  AZOTE_TRY(exe, open_binary("azote-controller", o_.controller_bin));
  std::vector<std::string> argv = {o_.controller_bin};
  argv.insert(argv.end(), o_.controller_args.begin(), o_.controller_args.end());
  argv.insert(argv.end(), {"--launcher-fd", "3", "--state-dir", o_.state_dir});
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) return errno_error(LauncherErrc::kSetup, "fork");
  if (pid == 0) {
    for (const auto& procs : *leaf) {
      std::ofstream f(procs);
      f << "0";
    }
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    const uid_t id = o_.uid_base + launch::kControllerId;
    if (auto d = sandbox::drop_privileges(id, id); !d) {
      std::fprintf(stderr, "azote-launcher: controller: %s\n", d.error().message().c_str());
      ::_exit(71);
    }
    // The binary's descriptor out of the way of 3 first, then 3 (the socket) and 4 (it).
    const int e = ::fcntl(exe.get(), F_DUPFD, 10);
    if (e < 0 || ::dup2(theirs.get(), 3) != 3 || ::fcntl(3, F_SETFD, 0) != 0 || ::dup2(e, 4) != 4 ||
        ::fcntl(4, F_SETFD, FD_CLOEXEC) != 0)
      ::_exit(71);
    ::syscall(SYS_close_range, 5u, ~0U, 0);
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    ::fexecve(4, args.data(), environ);
    std::fprintf(stderr, "azote-launcher: exec %s: %s\n", o_.controller_bin.c_str(), std::strerror(errno));
    ::_exit(71);
  }
  controller_pid_ = pid;
  controller_pidfd_.reset(pidfd_open(pid));
  if (ctl_sock_) ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, ctl_sock_.get(), nullptr);
  ctl_sock_ = std::move(mine);
  epoll_event ev{EPOLLIN, {.u64 = kTagController}};
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, ctl_sock_.get(), &ev);
  LOG_INFO("azote-launcher: controller started (pid %d, uid %u)", pid, o_.uid_base + launch::kControllerId);
  return {};
}

Result<void, LauncherError> Launcher::start_rot() {
  const uid_t uid = o_.uid_base + launch::kRotId;
  AZOTE_TRY(exe, open_binary("azote-rot", o_.rot_bin));
  AZOTE_TRY(state, ensure_dir("rot", uid, uid, 0700));
  AZOTE_TRY(listening, listen_beneath(o_.state_dir + "/rot.sock"));
  if (!rot_tpm_listen_) {
    // The TPM cards' socket: root's alone, in a directory of root's, so that only this
    // launcher connects (and binds each connection to the instance it gives it to).
    AZOTE_TRY(dir, ensure_dir(".launcher", 0, 0, 0700));
    const std::string via = "/proc/self/fd/" + std::to_string(dir.get()) + "/rot-tpm.sock";
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    via.copy(a.sun_path, std::min(via.size(), sizeof a.sun_path - 1));
    ::unlinkat(dir.get(), "rot-tpm.sock", 0);
    UniqueFd s(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!s || ::bind(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||  // NOLINT
        ::fchmodat(dir.get(), "rot-tpm.sock", 0600, 0) != 0 || ::listen(s.get(), 64) != 0)
      return errno_error(LauncherErrc::kSetup, "listen " + o_.state_dir + "/.launcher/rot-tpm.sock");
    launcher_dir_ = std::move(dir);
    rot_tpm_listen_ = std::move(s);
  }
  UniqueFd self(::open("/proc/self/exe", O_RDONLY | O_CLOEXEC));
  if (!self) return errno_error(LauncherErrc::kSetup, "/proc/self/exe");
  AZOTE_TRY(controller, open_binary("azote-controller", o_.controller_bin));
  UniqueFd rot_code(::fcntl(exe.get(), F_DUPFD_CLOEXEC, 3));
  // The state directory as a descriptor to openat() in (ensure_dir's is O_PATH).
  UniqueFd state_dir(::openat(state.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!rot_code || !state_dir) return errno_error(LauncherErrc::kSetup, "azote-rot's descriptors");
  // The launcher's layer carries what it enforces: the signed release it checks against
  // (the manifest's text is its configuration), or that it checks nothing.
  std::string launcher_config = "development";
  // The text verified at start, not the file again: what is measured is what is enforced.
  if (manifest_) launcher_config = "release-manifest " + manifest_text_;
  // Descriptors in the jail: 3 state, 4 control socket, 5 its code, 6 the launcher's,
  // 7 the controller's, 8 the TPM cards' socket.
  std::vector<std::string> argv = {"azote-rot", "--state-dir", "fd:3", "--control", "fd:4",
                                   "--layer", "azote-rot=fd:5", "--layer", "azote-launcher=fd:6,config=" + launcher_config,
                                   "--layer", "azote-controller=fd:7", "--tpm-listen", "fd:8"};
  if (!manifest_) argv.insert(argv.end(), {"--mode", "development"});
  auto leaf = cgroups_->create("rot", {});
  if (!leaf) return make_error(LauncherErrc::kSetup, leaf.error().message());
  // Its own jail like every process the launcher starts (namespaces, an empty read-only
  // root, no capabilities), as its own uid; no binds: everything it has is a descriptor.
  sandbox::JailSpec spec;
  spec.name = "azote-rot";
  spec.root_dir = o_.state_dir + "/.jail";
  spec.uid = uid;
  spec.gid = uid;
  spec.fds = {state_dir.get(), listening.get(), rot_code.get(), self.get(), controller.get(), rot_tpm_listen_.get()};
  spec.output_fd = STDERR_FILENO;  // its log goes where the launcher's goes
  spec.cgroup_procs = *leaf;
  auto j = sandbox::spawn_jailed(spec, exe.get(), argv);
  if (!j) return make_error(LauncherErrc::kSetup, "azote-rot: " + j.error().message());
  const pid_t pid = j->pid;
  rot_pid_ = pid;
  LOG_INFO("azote-launcher: azote-rot started in its jail (pid %d, uid %u, %s mode)", pid, uid,
           manifest_ ? "normal" : "development");
  return {};
}

Result<void, LauncherError> Launcher::start_guard() {
  if (manifest_) {
    // Re-hashed periodically whether or not the guard can stop writes: a change is at
    // least seen (and on hosts without the BPF LSM, only seen).
    std::error_code ec;
    const std::string self = fs::read_symlink("/proc/self/exe", ec).string();
    for (const auto& [name, path] : {std::pair<std::string, std::string>{"azote-launcher", self},
                                     {"azote-controller", o_.controller_bin},
                                     {"azote-hv", o_.hv_bin},
                                     {"azote-card-blk", o_.card_blk_bin},
                                     {"azote-card-net", o_.card_net_bin},
                                     {"azote-card-tpm", o_.card_tpm_bin},
                                     {"azote-card-nsm", o_.card_nsm_bin},
                                     {"azote-card-vsock", o_.card_vsock_bin},
                                     {"azote-rot", o_.rot_bin}})
      if (!path.empty()) guarded_binaries_[path] = name;
    rehash_at_ = std::chrono::steady_clock::now() + std::chrono::seconds(o_.guard_rehash_seconds);
  }
  if (o_.write_guard == "off") {
    guard_why_ = "off (--write-guard off)";
    LOG_WARN("azote-launcher: write guard off: protected files can be changed by root");
    return {};
  }
  auto g = guard::WriteGuard::start();
  if (!g) {
    guard_why_ = g.error().message();
    if (o_.write_guard == "on") return make_error(LauncherErrc::kSetup, "--write-guard on: " + guard_why_);
    LOG_WARN("azote-launcher: no write guard: %s", guard_why_.c_str());
    return {};
  }
  guard_ = std::move(g).value();
  auto protect = [&](const std::string& path, std::optional<uid_t> writer, bool entries) -> Result<void, LauncherError> {
    if (auto p = guard_->protect(path, writer, entries); !p) return make_error(LauncherErrc::kSetup, p.error().message());
    return {};
  };
  if (!o_.rot_bin.empty()) AZOTE_TRYV(protect(o_.state_dir + "/rot", o_.uid_base + launch::kRotId, true));
  if (manifest_) {
    for (const auto& [path, name] : guarded_binaries_) AZOTE_TRYV(protect(path, std::nullopt, false));
    AZOTE_TRYV(protect(o_.release_manifest, std::nullopt, false));
    AZOTE_TRYV(protect(o_.release_key, std::nullopt, false));
  }
  epoll_event ev{EPOLLIN, {.u64 = kTagGuard}};
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, guard_->poll_fd(), &ev);
  LOG_INFO("azote-launcher: write guard on (%s): %zu protected path(s)%s%s", guard::to_string(guard_->mechanism()),
           guard_->paths().size(), guard_->fallback_reason().empty() ? "" : "; not bpf-lsm: ",
           guard_->fallback_reason().c_str());
  return {};
}

namespace {
Json guard_event(const std::string& what, const std::string& path, const std::string& detail) {
  return Json{{"event", what}, {"path", path}, {"detail", detail}, {"time", static_cast<int64_t>(::time(nullptr))}};
}
}  // namespace

void Launcher::guard_ready() {
  if (!guard_) return;
  auto denials = guard_->drain();
  if (guard_->gone()) {
    LOG_ERROR("azote-launcher: write guard: its %s mechanism stopped (the helper died): nothing is guarded now",
              guard::to_string(guard_->mechanism()));
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, guard_->poll_fd(), nullptr);
    guard_why_ = std::string(guard::to_string(guard_->mechanism())) + " stopped (its helper died)";
    if (guard_events_.size() < 1024) guard_events_.push_back(guard_event("guard-stopped", "", guard_why_));
    guard_.reset();
  }
  for (const auto& d : denials) {
    if (!d.refused) {
      // Seen after the fact (fanotify cannot refuse it): who did it is not known.
      ++guard_seen_;
      const std::string detail = "changed, not refused (" + std::string(guard::to_string(guard_->mechanism())) +
                                 " cannot): " + d.path + " " + d.why;
      LOG_WARN("azote-launcher: write guard: %s", detail.c_str());
      if (guard_events_.size() < 1024) guard_events_.push_back(guard_event("protected-changed", d.path, detail));
      continue;
    }
    ++guard_denials_;
    const std::string detail = "refused " + d.op + (d.entry ? " of an entry of " : " of ") + d.path + " by pid " +
                               std::to_string(d.pid) + " (" + (d.exe.empty() ? d.comm : d.exe) + ", uid " +
                               std::to_string(d.uid) + (d.why.empty() ? "" : ", " + d.why) + ")";
    LOG_WARN("azote-launcher: write guard: %s", detail.c_str());
    if (guard_events_.size() < 1024) guard_events_.push_back(guard_event("write-denied", d.path, detail));
  }
}

void Launcher::rehash() {
  for (const auto& [path, name] : guarded_binaries_) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    std::string why;
    if (!fd) why = std::string("cannot open it: ") + std::strerror(errno);
    else if (auto c = release::check(*manifest_, name, fd.get()); !c) why = c.error().message();
    // Reported when it starts (or its reason changes), not again every period.
    std::string& last = rehash_seen_[path];
    if (why == last) continue;
    last = why;
    if (why.empty()) {
      LOG_INFO("azote-launcher: write guard: %s matches the release again", path.c_str());
      continue;
    }
    ++guard_mismatches_;
    const std::string detail = "re-hash of " + path + ": " + why;
    LOG_ERROR("azote-launcher: write guard: %s", detail.c_str());
    if (guard_events_.size() < 1024) guard_events_.push_back(guard_event("rehash-mismatch", path, detail));
  }
}

Json Launcher::guard_report() {
  guard_ready();
  Json events = Json::array();
  for (auto& e : guard_events_) events.push_back(std::move(e));
  guard_events_.clear();
  Json paths = Json::array();
  if (guard_)
    for (const auto& p : guard_->paths()) paths.push_back(p);
  return Json{{"ok", true},
              {"active", guard_ != nullptr},
              {"mechanism", guard_ ? guard::to_string(guard_->mechanism()) : ""},
              {"why", guard_ ? guard_->fallback_reason() : guard_why_},
              {"protected", paths},
              {"denials_total", guard_denials_},
              {"changes_seen_total", guard_seen_},
              {"mismatches_total", guard_mismatches_},
              {"events", events}};
}

void Launcher::stop_rot() {
  if (rot_pid_ == 0) return;
  ::kill(rot_pid_, SIGTERM);
  for (int i = 0; i < 200; ++i) {
    if (::waitpid(rot_pid_, nullptr, WNOHANG) == rot_pid_) {
      rot_pid_ = 0;
      break;
    }
    ::usleep(10'000);
  }
  if (rot_pid_ != 0) {
    ::kill(rot_pid_, SIGKILL);
    ::waitpid(rot_pid_, nullptr, 0);
    rot_pid_ = 0;
  }
  (void)cgroups_->remove("rot");
}

void Launcher::reap() {
  for (;;) {
    siginfo_t si{};
    if (::waitid(P_ALL, 0, &si, WEXITED | WNOHANG) != 0 || si.si_pid == 0) return;
    const int status = si.si_code == CLD_EXITED ? si.si_status : 128 + si.si_status;
    if (si.si_pid == controller_pid_) {
      controller_status_ = status;
      controller_pid_ = 0;
      controller_pidfd_.reset();
      if (ctl_sock_) {
        ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, ctl_sock_.get(), nullptr);
        forget_replies_to(ctl_sock_.get());
        ctl_sock_.reset();
      }
      if (!stopping_) {
        LOG_WARN("azote-launcher: the controller exited (status %d); restarting it in %lld ms", status,
                 static_cast<long long>(restart_delay_.count()));
        restart_at_ = std::chrono::steady_clock::now() + restart_delay_;
        restart_delay_ = std::min(restart_delay_ * 2, std::chrono::milliseconds(30'000));
      }
      continue;
    }
    if (si.si_pid == rot_pid_) {
      rot_pid_ = 0;
      if (!stopping_) {
        LOG_WARN("azote-launcher: azote-rot exited (status %d); restarting it in 1 s", status);
        rot_restart_at_ = std::chrono::steady_clock::now() + std::chrono::seconds(1);
      }
      continue;
    }
    if (auto it = children_.find(si.si_pid); it != children_.end()) {
      LOG_INFO("azote-launcher: %s %s (pid %d) exited (status %d)", to_string(it->second.role), it->second.instance.c_str(),
               si.si_pid, status);
      children_.erase(it);
    }
    exited_[si.si_pid] = status;
    while (exited_.size() > kMaxExited) exited_.erase(exited_.begin());
  }
}

int Launcher::run() {
  for (;;) {
    if (stopping_ && controller_pid_ == 0) break;
    int timeout = -1;
    for (const auto& at : {restart_at_, rot_restart_at_, rehash_at_}) {
      if (!at) continue;
      const int ms = static_cast<int>(std::max<int64_t>(
          0, std::chrono::duration_cast<std::chrono::milliseconds>(*at - std::chrono::steady_clock::now()).count()));
      timeout = timeout < 0 ? ms : std::min(timeout, ms);
    }
    epoll_event ev[16];
    const int n = ::epoll_wait(epoll_.get(), ev, 16, timeout);
    if (n < 0 && errno != EINTR) return 71;
    for (int i = 0; i < n; ++i) {
      const uint64_t tag = ev[i].data.u64;
      if (tag == kTagSignal) {
        signalfd_siginfo si{};
        while (::read(signal_fd_.get(), &si, sizeof si) == sizeof si) {
          if (si.ssi_signo == SIGCHLD) continue;
          if (!stopping_) LOG_INFO("azote-launcher: %s: stopping the controller", strsignal(static_cast<int>(si.ssi_signo)));
          stopping_ = true;
          restart_at_.reset();
          if (controller_pidfd_) ::syscall(SYS_pidfd_send_signal, controller_pidfd_.get(), SIGTERM, nullptr, 0);
        }
        reap();
      } else if (tag == kTagGuard) {
        guard_ready();
      } else if (tag == kTagController) {
        if (ctl_sock_) serve_client(ctl_sock_.get(), false);
      } else if (tag == kTagTestListen) {
        UniqueFd c(::accept4(test_listen_.get(), nullptr, nullptr, SOCK_CLOEXEC));
        if (!c) continue;
        if (test_clients_.size() >= kMaxTestClients) continue;  // closed
        epoll_event ce{EPOLLIN, {.u64 = kTagTestClient + static_cast<uint64_t>(c.get())}};
        ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, c.get(), &ce);
        test_clients_.push_back(std::move(c));
      } else if (tag >= kTagStarting) {
        finish_spawn(static_cast<int>(tag - kTagStarting));
      } else if (tag >= kTagAdopted) {
        // An adopted process ended (not our child: no status to reap).
        const auto pid = static_cast<pid_t>(tag - kTagAdopted);
        if (auto it = children_.find(pid); it != children_.end()) {
          ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, it->second.pidfd.get(), nullptr);
          LOG_INFO("azote-launcher: adopted %s %s (pid %d) ended", to_string(it->second.role), it->second.instance.c_str(), pid);
          children_.erase(it);
        }
      } else if (tag >= kTagTestClient) {
        serve_client(static_cast<int>(tag - kTagTestClient), true);
      }
    }
    if (rehash_at_ && std::chrono::steady_clock::now() >= *rehash_at_) {
      rehash();
      rehash_at_ = std::chrono::steady_clock::now() + std::chrono::seconds(o_.guard_rehash_seconds);
    }
    if (rot_restart_at_ && std::chrono::steady_clock::now() >= *rot_restart_at_) {
      rot_restart_at_.reset();
      if (auto s = start_rot(); !s) {
        LOG_ERROR("azote-launcher: azote-rot: %s", s.error().message().c_str());
        rot_restart_at_ = std::chrono::steady_clock::now() + std::chrono::seconds(5);
      }
    }
    if (restart_at_ && std::chrono::steady_clock::now() >= *restart_at_) {
      restart_at_.reset();
      if (auto s = start_controller(); !s) {
        LOG_ERROR("azote-launcher: %s", s.error().message().c_str());
        restart_at_ = std::chrono::steady_clock::now() + restart_delay_;
      }
    }
  }
  LOG_INFO("azote-launcher: the controller exited (status %d); stopping", controller_status_);
  stop_rot();
  guard_.reset();  // the protection ends with the host (its helper, if any, is waited for)
  // The host's cgroup tree, but for the leaves of processes that keep running (instances
  // left running on exit: the next launcher adopts them there).
  (void)cgroups_->remove("");
  return controller_status_;
}

void Launcher::serve_client(int fd, bool test) {
  auto m = launch::recv_message(fd, std::chrono::milliseconds(0));
  if (!m) {
    if (m.error().code == launch::LaunchErrc::kClosed || m.error().code == launch::LaunchErrc::kSocket) {
      ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
      forget_replies_to(fd);
      if (test) {
        std::erase_if(test_clients_, [fd](const UniqueFd& c) { return c.get() == fd; });
      } else if (fd == ctl_sock_.get()) {
        // The controller closed its end: it is exiting; SIGCHLD follows.
        ctl_sock_.reset();
      }
      return;
    }
    (void)launch::send_message(fd, refuse(m.error().message()));
    return;
  }
  std::vector<UniqueFd> out_fds;
  const Json seq = m->body.contains("seq") ? m->body["seq"] : Json();
  Json reply = dispatch(m->body, &out_fds, test, ReplyTo{fd, seq});
  if (reply.is_null()) return;  // a spawn under way: finish_spawn() answers
  send_reply(fd, seq, std::move(reply), out_fds);
}

void Launcher::forget_replies_to(int fd) {
  for (auto& [key, st] : starting_)
    if (st.reply_fd == fd) st.reply_fd = -1;  // its process still starts; no one to tell
}

void Launcher::send_reply(int fd, const Json& seq, Json reply, const std::vector<UniqueFd>& out_fds) {
  if (!seq.is_null()) reply["seq"] = seq;
  std::vector<int> raw;
  for (const auto& f : out_fds) raw.push_back(f.get());
  if (auto s = launch::send_message(fd, reply, raw); !s) LOG_WARN("azote-launcher: reply: %s", s.error().message().c_str());
}

Json Launcher::handle(const Json& req, std::vector<UniqueFd>* fds, bool from_test_socket) {
  return dispatch(req, fds, from_test_socket, std::nullopt);
}

Json Launcher::dispatch(const Json& req, std::vector<UniqueFd>* fds, bool from_test_socket, std::optional<ReplyTo> defer) {
  const std::string op = req.value("op", "");
  if (from_test_socket && op != "spawn" && op != "describe") return refuse("the test socket takes only probe spawns and describe");
  if (op == "spawn") {
    auto r = launch::spawn_request_from_json(req);
    if (!r) return refuse("spawn: " + r.error().message());
    if (from_test_socket && r->role != Role::kProbe) return refuse("the test socket takes only probe spawns");
    return r->role == Role::kProbe ? spawn_probe(*r, fds) : spawn(*r, fds, defer);
  }
  if (op == "signal") return signal(req);
  if (op == "status") return status(req);
  if (op == "release") return release(req);
  if (op == "describe") return describe();
  if (op == "guard") return guard_report();
  return refuse("unknown op \"" + op + "\" (known: spawn, signal, status, release, describe, guard)");
}

Result<UniqueFd, LauncherError> Launcher::open_beneath(const std::string& path, int flags, mode_t mode) {
  const std::string prefix = o_.state_dir + "/";
  if (path.rfind(prefix, 0) != 0 || path.size() == prefix.size())
    return make_error(LauncherErrc::kUsage, path + " is not beneath the state directory " + o_.state_dir);
  const std::string rel = path.substr(prefix.size());
  open_how how{};
  how.flags = static_cast<uint64_t>(flags | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  how.mode = (flags & O_CREAT) != 0 ? mode : 0;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  UniqueFd f(static_cast<int>(::syscall(SYS_openat2, state_fd_.get(), rel.c_str(), &how, sizeof how)));
  if (!f) return errno_error(LauncherErrc::kUsage, "open " + path);
  struct stat st{};
  if (::fstat(f.get(), &st) != 0 || !S_ISREG(st.st_mode)) return make_error(LauncherErrc::kUsage, path + " is not a regular file");
  // O_NONBLOCK only guarded the open (a FIFO there would block it); I/O is blocking.
  ::fcntl(f.get(), F_SETFL, ::fcntl(f.get(), F_GETFL) & ~O_NONBLOCK);
  return f;
}

Result<UniqueFd, LauncherError> Launcher::listen_beneath(const std::string& path) {
  const std::string prefix = o_.state_dir + "/";
  if (path.rfind(prefix, 0) != 0 || path.size() == prefix.size())
    return make_error(LauncherErrc::kUsage, path + " is not beneath the state directory " + o_.state_dir);
  const std::string rel = path.substr(prefix.size());
  const size_t slash = rel.rfind('/');
  const std::string name = slash == std::string::npos ? rel : rel.substr(slash + 1);
  if (name.empty() || name == "." || name == "..") return make_error(LauncherErrc::kUsage, path + ": no socket name");
  AZOTE_TRY(dir, dir_beneath(slash == std::string::npos ? "" : rel.substr(0, slash)));
  // Bound through the directory's descriptor (/proc/self/fd/N/NAME), so a directory
  // swapped for a symlink after the check cannot move the socket, or its chown, elsewhere.
  const std::string via = "/proc/self/fd/" + std::to_string(dir.get()) + "/" + name;
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (via.size() >= sizeof a.sun_path) return make_error(LauncherErrc::kUsage, path + ": socket name too long");
  std::strncpy(a.sun_path, via.c_str(), sizeof a.sun_path - 1);
  struct stat st{};
  if (::fstatat(dir.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
    if (!S_ISSOCK(st.st_mode)) return make_error(LauncherErrc::kUsage, path + " exists and is not a socket");
    ::unlinkat(dir.get(), name.c_str(), 0);
  }
  UniqueFd s(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!s) return errno_error(LauncherErrc::kSetup, "socket");
  (void)::fchmod(s.get(), 0600);
  const uid_t ctl = o_.uid_base + launch::kControllerId;
  if (::bind(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)  // NOLINT
    return errno_error(LauncherErrc::kSetup, "bind " + path);
  if (::fchmodat(dir.get(), name.c_str(), 0600, 0) != 0 || ::fchownat(dir.get(), name.c_str(), ctl, ctl, AT_SYMLINK_NOFOLLOW) != 0 ||
      ::listen(s.get(), 16) != 0)
    return errno_error(LauncherErrc::kSetup, "listen " + path);
  return s;
}

// The program a role runs: its name in a release manifest and its path here.
std::pair<const char*, const std::string*> Launcher::binary_of(Role r) const {
  switch (r) {
    case Role::kHv: return {"azote-hv", &o_.hv_bin};
    case Role::kCardBlk: return {"azote-card-blk", &o_.card_blk_bin};
    case Role::kCardNet:
    case Role::kCardFabric: return {"azote-card-net", &o_.card_net_bin};
    case Role::kCardTpm: return {"azote-card-tpm", &o_.card_tpm_bin};
    case Role::kCardNsm: return {"azote-card-nsm", &o_.card_nsm_bin};
    case Role::kCardVsock: return {"azote-card-vsock", &o_.card_vsock_bin};
    case Role::kProbe: break;
  }
  return {"azote-probe", &o_.probe_bin};
}

Result<UniqueFd, LauncherError> Launcher::rot_card_connection(const std::string& instance, bool nsm, bool debug) {
  if (!launcher_dir_ || rot_pid_ <= 0) return make_error(LauncherErrc::kSetup, "azote-rot is not running");
  // Through the directory's descriptor: a renamed <state>/.launcher cannot redirect it.
  const std::string via = "/proc/self/fd/" + std::to_string(launcher_dir_.get()) + "/rot-tpm.sock";
  auto c = control::Client::connect(via, std::chrono::milliseconds(0));
  if (!c) return make_error(LauncherErrc::kSetup, "azote-rot's TPM socket: " + c.error().message());
  // The connection's first line, which azote-rot takes only from here (root's socket).
  // An enclave's NSM card: bound to the enclave (its id's prefix is the parent instance)
  // and its debug mode, so that its documents carry that enclave's id and, in debug
  // mode, zero PCRs — whatever the card asks.
  Json bind = {{"op", "bind"}, {"instance", instance.substr(0, instance.find("-enc"))}};
  if (nsm) {
    bind["enclave"] = instance;
    bind["debug"] = debug;
  }
  if (auto r = c->call(bind, std::chrono::seconds(2)); !r)
    return make_error(LauncherErrc::kSetup, "binding the card's connection to azote-rot: " + r.error().message());
  return std::move(c).value().release();
}

const Launcher::Child* Launcher::find(const std::string& instance, Role role) const {
  for (const auto& [pid, c] : children_)
    if (c.instance == instance && c.role == role) return &c;
  return nullptr;
}

Json Launcher::spawn(const launch::SpawnRequest& r, std::vector<UniqueFd>* out, std::optional<ReplyTo> defer) {
  // The host's fabric process is of no instance: "fabric" (lib/launch checked the pair).
  const bool fabric = r.role == Role::kCardFabric;
  if (fabric ? r.instance != launch::kFabricInstance : !valid_instance(r.instance))
    return refuse(fabric ? "spawn: card-fabric's \"instance\" must be \"fabric\""
                         : "spawn: \"instance\" must be an instance id (i-...)");
  if (auto why = refused_args(r.args)) return refuse("spawn: " + *why);
  if (fabric)
    for (const auto& a : r.args)
      if (a == "--underlay" || a == "--underlay-fd" || a.rfind("--underlay=", 0) == 0 || a.rfind("--underlay-fd=", 0) == 0)
        return refuse("spawn: card-fabric: \"" + a + "\" in \"args\": the launcher gives the fabric process its underlay "
                      "(\"underlay\" in the request)");
  if (fabric && !r.enis.empty()) return refuse("spawn: card-fabric serves no ENI");
  if (fabric) {
    // One per host: a second would take the first one's relay inbox (net/fabric) and
    // control socket. One that has exited but is not reaped yet does not count.
    reap();
    for (const auto& [pid, c] : children_) {
      if (c.role != Role::kCardFabric) continue;
      pollfd p{c.pidfd.get(), POLLIN, 0};
      if (::poll(&p, 1, 0) == 0)
        return refuse("spawn: the host's fabric process runs already (pid " + std::to_string(pid) +
                      "); signal and release it first");
    }
  }
  for (const auto& e : r.enis)
    if (!valid_eni(e)) return refuse("spawn: \"" + e + "\" is not an ENI id");
  const auto [bin_name, bin_path] = binary_of(r.role);
  const std::string& bin = *bin_path;
  if (bin.empty())
    return refuse(std::string("spawn: this host has no ") + bin_name + " (azote-launcher --" + (bin_name + 6) + ")");
  // An enclave's processes are its hv and its NSM card; an instance's never an NSM card.
  const bool enclave = r.instance.find("-enc") != std::string::npos;
  if (enclave && r.role != Role::kHv && r.role != Role::kCardNsm && r.role != Role::kProbe)
    return refuse(std::string("spawn: an enclave runs only an hv and an NSM card, not ") + to_string(r.role));
  if (!enclave && r.role == Role::kCardNsm) return refuse("spawn: an NSM card serves an enclave (i-...-enc...)");
  const std::string parent = r.instance.substr(0, r.instance.find("-enc"));
  // Before anything is made for it (directories, cgroup leaf): a binary the release refused.
  if (const auto it = refused_.find(bin_name); it != refused_.end()) return refuse("spawn: " + it->second);
  const uint32_t id = id_of(r.role, r.slot);

  // The fabric process's underlay: a UDP socket made and bound here, in this launcher's
  // (the host's) network namespace. A socket keeps the namespace it was made in, so the
  // card sends and receives on the host's underlay from its own, empty, namespace. Bound
  // first: an address in use (a fabric process running already) or not the host's is
  // refused before anything is made, the running one's sockets left alone.
  UniqueFd underlay;
  if (fabric) {
    auto sa = launch::parse_underlay(r.underlay);
    if (!sa) return refuse("spawn: " + sa.error().message());
    underlay.reset(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!underlay) return refuse(std::string("spawn: the underlay's UDP socket: ") + std::strerror(errno));
    if (::bind(underlay.get(), reinterpret_cast<const sockaddr*>(&*sa), sizeof *sa) != 0) {  // NOLINT
      const int e = errno;
      const char* name = strerrorname_np(e);
      return refuse("spawn: the underlay " + r.underlay + " cannot be bound in the host's network namespace: " +
                    std::strerror(e) + " (" + (name ? name : "?") + ")");
    }
    // 4 MiB to receive into, past net.core.rmem_max (which the card may not pass): bursts
    // from other hosts wait there for the fabric thread.
    const int bytes = 4 << 20;
    if (::setsockopt(underlay.get(), SOL_SOCKET, SO_RCVBUFFORCE, &bytes, sizeof bytes) != 0)
      return refuse(std::string("spawn: the underlay's receive buffer: ") + std::strerror(errno));
  }

  // Descriptors, in the order of their numbers in the jail: files, sockets, extras.
  std::vector<UniqueFd> fds;
  std::map<std::string, int> number;
  auto add = [&](const std::string& name, UniqueFd f) {
    number[name] = 3 + static_cast<int>(fds.size());
    fds.push_back(std::move(f));
  };
  for (const auto& f : r.files) {
    int flags = 0;
    if (f.access == "r") flags = O_RDONLY;
    else if (f.access == "rw") flags = O_RDWR;
    // Readable too: azote-hv caps a console file by moving its newest half to the start.
    else if (f.access == "append") flags = O_RDWR | O_APPEND | O_CREAT;
    else return refuse("spawn: file " + f.name + ": access must be r, rw or append");
    auto fd = open_beneath(f.path, flags);
    if (!fd) return refuse("spawn: file " + f.name + ": " + fd.error().message());
    if (f.access == "append") (void)::fchown(fd->get(), o_.uid_base, o_.uid_base);
    add(f.name, std::move(fd).value());
  }
  for (const auto& l : r.listens) {
    auto s = listen_beneath(l.path);
    if (!s) return refuse("spawn: socket " + l.name + ": " + s.error().message());
    add(l.name, std::move(s).value());
  }
  if (r.role == Role::kHv) {
    UniqueFd kvm(::open("/dev/kvm", O_RDWR | O_CLOEXEC));
    if (!kvm) return refuse(std::string("spawn: /dev/kvm: ") + std::strerror(errno));
    add("kvm", std::move(kvm));
  }
  bool rot_link = false;
  if (r.role == Role::kCardTpm || r.role == Role::kCardNsm) {
    // Its connection to azote-rot, bound here to its instance (or enclave): the card can
    // ask for documents of that instance (enclave) and nothing else. Without azote-rot
    // the card runs without (its guest's attestation requests fail).
    if (auto c = rot_card_connection(r.instance, r.role == Role::kCardNsm, r.enclave_debug)) {
      add("rot", std::move(c).value());
      rot_link = true;
    } else {
      LOG_WARN("azote-launcher: the %s of %s runs without attestation: %s", to_string(r.role), r.instance.c_str(),
               c.error().message().c_str());
    }
  }
  if (r.role == Role::kCardNet || fabric) {
    // The socket the card sends other cards' inboxes their frames from, with a send
    // buffer of 4 MiB (SO_SNDBUFFORCE: past net.core.wmem_max, which the card may not
    // do): a unix datagram is charged to its sender until read, and the default
    // (~200 KiB, some 90 full-size frames in flight) drops TCP bursts between instances.
    UniqueFd dg(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    const int bytes = 4 << 20;
    if (!dg || ::setsockopt(dg.get(), SOL_SOCKET, SO_SNDBUFFORCE, &bytes, sizeof bytes) != 0)
      return refuse(std::string("spawn: the network card's datagram socket: ") + std::strerror(errno));
    add("datagram", std::move(dg));
  }
  if (fabric) add("underlay", std::move(underlay));
  UniqueFd output;
  if (!r.output.empty()) {
    auto o = open_beneath(r.output, O_WRONLY | O_APPEND | O_CREAT);
    if (!o) return refuse("spawn: output: " + o.error().message());
    (void)::fchown(o->get(), o_.uid_base, o_.uid_base);
    output = std::move(o).value();
  }
  std::vector<std::string> argv = {fs::path(bin).filename().string()};
  for (const auto& a : r.args) {
    std::string s = a;
    for (const auto& [name, n] : number) {
      const std::string key = "{" + name + "}";
      for (size_t at = s.find(key); at != std::string::npos; at = s.find(key)) s.replace(at, key.size(), std::to_string(n));
    }
    argv.push_back(s);
  }

  if (rot_link) argv.insert(argv.end(), {"--rot", "fd:" + std::to_string(number["rot"])});
  sandbox::JailSpec spec;
  std::vector<UniqueFd> bind_fds;  // the binds' directories, held open until the spawn is done
  spec.name = fabric ? std::string("azote-card-fabric")
                     : "azote-" + std::string(to_string(r.role)) + "-" + r.instance.substr(2, 8) +
                           (enclave ? "-e" + r.instance.substr(r.instance.size() - 4) : "");
  spec.root_dir = o_.state_dir + "/.jail";
  spec.uid = id;
  spec.gid = id;
  spec.output_fd = output ? output.get() : -1;
  for (const auto& f : fds) spec.fds.push_back(f.get());
  if (!fabric) {
    if (auto d = ensure_dir("instances/" + r.instance, o_.uid_base, o_.uid_base, 0711); !d)
      return refuse("spawn: " + d.error().message());
    auto run = ensure_dir("instances/" + r.instance + "/run", id, id, 0700);
    if (!run) return refuse("spawn: " + run.error().message());
    if (r.role != Role::kCardNet) {
      spec.binds.push_back({o_.state_dir + "/instances/" + r.instance + "/run", "/run/azote", true, run->get()});
      bind_fds.push_back(std::move(run).value());
    }
  } else {
    // The fabric process's own directory in net/: its relay inbox
    // (/run/azote-net/fabric/inbox.sock), which the instances' cards send to.
    auto dir = ensure_dir("net/fabric", id, id, 0755);
    if (!dir) return refuse("spawn: " + dir.error().message());
    bind_fds.push_back(std::move(dir).value());
  }
  for (const auto& e : r.enis) {
    enis_[r.instance].insert(e);
    // The ENI's directory is its instance's: its card makes the vhost-user socket there
    // (0660, the instance's uid: its hv connects) and the inbox socket (0666: other
    // instances' cards send frames to it; the receiving card checks each sender's uid).
    auto dir = ensure_dir("net/" + e, id, id, 0755);
    if (!dir) return refuse("spawn: " + dir.error().message());
    if (r.role == Role::kHv) spec.binds.push_back({o_.state_dir + "/net/" + e, "/run/azote-net/" + e, false, dir->get()});
    bind_fds.push_back(std::move(dir).value());
  }
  if (r.role == Role::kCardVsock) {
    // A parent's vsock card: the directory in which it makes each of its enclaves' sockets
    // (vsock/<parent>/<enclave>/, each bound into that enclave's jail alone).
    auto dir = ensure_dir("vsock/" + r.instance, id, id, 0711);
    if (!dir) return refuse("spawn: " + dir.error().message());
    spec.binds.push_back({o_.state_dir + "/vsock/" + r.instance, "/run/azote-vsock", true, dir->get()});
    bind_fds.push_back(std::move(dir).value());
    // The host's service sockets a parent may reach through its card (read-only: the
    // card connects to them, makes nothing there; each service's socket mode decides).
    if (auto host = dir_beneath("host")) {
      spec.binds.push_back({o_.state_dir + "/host", "/run/azote-host", false, host->get()});
      bind_fds.push_back(std::move(host).value());
    }
  }
  if (r.role == Role::kHv && enclave) {
    // An enclave's hv: its own socket directory of its parent's vsock card, made here for
    // the card's uid (the owner of the parent's directory), if the parent has one.
    struct stat st {};
    if (auto pdir = dir_beneath("vsock/" + parent); pdir && ::fstat(pdir->get(), &st) == 0) {
      auto dir = ensure_dir("vsock/" + parent + "/" + r.instance, st.st_uid, st.st_gid, 0711);
      if (!dir) return refuse("spawn: " + dir.error().message());
      spec.binds.push_back({o_.state_dir + "/vsock/" + parent + "/" + r.instance, "/run/azote-vsock", false, dir->get()});
      bind_fds.push_back(std::move(dir).value());
    }
  }
  if (r.role == Role::kCardNet || fabric) {
    // Every ENI directory of the host, by name only (net/ is 0711): its own to write in,
    // the others' inboxes to send to. (The fabric process: net/fabric to write in, the
    // instances' inboxes to deliver frames from other hosts to.)
    auto net = dir_beneath("net");
    if (!net) return refuse("spawn: " + net.error().message());
    UniqueFd rw(::openat(net->get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!rw) return refuse(std::string("spawn: net: ") + std::strerror(errno));
    spec.binds.push_back({o_.state_dir + "/net", "/run/azote-net", true, rw.get()});
    bind_fds.push_back(std::move(rw));
  }
  if (r.role == Role::kCardNet) {
    // The card's own network namespace is the metadata service's: prepared here, in the
    // new namespace, while the child is still root; the card gets the TUN and the
    // listening socket, after the descriptors above.
    const int tun = 3 + static_cast<int>(fds.size());
    spec.in_child = [](std::vector<int>* extra) -> std::string {
      // Unix datagram sockets made in this namespace queue up to 1024 datagrams: the card's
      // inbox sockets (frames from other instances' cards). The kernel's default, 10, makes
      // a sender drop a burst its receiver would have taken a moment later.
      UniqueFd q(::open("/proc/sys/net/unix/max_dgram_qlen", O_WRONLY | O_CLOEXEC));
      if (!q || ::write(q.get(), "1024\n", 5) != 5)
        return std::string("net.unix.max_dgram_qlen in the card's namespace: ") + std::strerror(errno);
      auto ns = imds::prepare_namespace();
      if (!ns) return "the metadata service's namespace: " + ns.error().message();
      extra->push_back(ns->tun.release());
      extra->push_back(ns->listen.release());
      return {};
    };
    argv.insert(argv.end(), {"--imds-fds", std::to_string(tun) + "," + std::to_string(tun + 1), "--datagram-fd",
                             std::to_string(number["datagram"])});
  }
  if (fabric) {
    // Its own network namespace too, with nothing in it but loopback: everything it
    // reaches, it reaches through descriptors and the bound net/ directory. Its relay
    // inbox is made in that namespace: 1024 datagrams queued, as an instance card's inbox.
    // No ENI, so no metadata service.
    spec.in_child = [](std::vector<int>*) -> std::string {
      UniqueFd q(::open("/proc/sys/net/unix/max_dgram_qlen", O_WRONLY | O_CLOEXEC));
      if (!q || ::write(q.get(), "1024\n", 5) != 5)
        return std::string("net.unix.max_dgram_qlen in the fabric process's namespace: ") + std::strerror(errno);
      return {};
    };
    argv.insert(argv.end(), {"--underlay", r.underlay, "--underlay-fd", std::to_string(number["underlay"]), "--datagram-fd",
                             std::to_string(number["datagram"]), "--imds", "off"});
  }
  // The fabric process: host/card-fabric, beside no instance's.
  const std::string leaf = (fabric ? std::string("host") : r.instance) + "/" + to_string(r.role);
  sandbox::CgroupLimits limits;
  limits.memory_bytes = r.limits.memory_mib << 20;
  limits.pids = r.limits.pids;
  limits.cpu_percent = r.limits.cpu_percent;
  limits.cpus = r.limits.cpus;
  auto procs = cgroups_->create(leaf, limits);
  if (!procs) return refuse("spawn: " + procs.error().message());
  spec.cgroup_procs = *procs;

  auto exe = open_binary(bin_name, bin);
  if (!exe) return refuse("spawn: " + exe.error().message());
  auto j = sandbox::start_jailed(spec, exe->get(), argv);
  if (!j) return refuse("spawn: " + j.error().message());
  exited_.erase(j->jailed.pid);  // an earlier process's status under a reused pid
  Starting st;
  if (manifest_) st.child.binary_sha384 = manifest_->files[bin_name];  // open_binary checked it
  st.child.role = r.role;
  st.child.instance = r.instance;
  st.child.uid = id;
  st.child.cgroup = leaf;
  st.jail = std::move(j).value();
  st.keep = std::move(bind_fds);
  if (!defer) return complete(st, out);
  // The child builds its jail (mounts, a network namespace: grace periods more than
  // work) while this thread serves other requests; its exec outcome answers the caller.
  st.reply_fd = defer->fd;
  st.seq = defer->seq;
  const int key = st.jail.outcome.get();
  epoll_event ev{EPOLLIN, {.u64 = kTagStarting + static_cast<uint64_t>(key)}};
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, key, &ev) != 0) return complete(st, out);
  starting_.emplace(key, std::move(st));
  return Json();
}

void Launcher::finish_spawn(int key) {
  auto it = starting_.find(key);
  if (it == starting_.end()) return;
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, key, nullptr);
  Starting st = std::move(it->second);
  starting_.erase(it);
  std::vector<UniqueFd> out;
  Json reply = complete(st, &out);
  if (st.reply_fd >= 0) {
    send_reply(st.reply_fd, st.seq, std::move(reply), out);
    return;
  }
  // The controller that asked is gone: no one will ever know this process; it goes.
  if (reply.value("ok", false)) {
    const auto pid = reply.value("pid", pid_t{0});
    if (auto c = children_.find(pid); c != children_.end()) {
      ::syscall(SYS_pidfd_send_signal, c->second.pidfd.get(), SIGKILL, nullptr, 0);
      LOG_WARN("azote-launcher: killed %s %s (pid %d): the controller that asked for it is gone", to_string(c->second.role),
               c->second.instance.c_str(), pid);
    }
  }
}

Json Launcher::complete(Starting& st, std::vector<UniqueFd>* out) {
  const std::string what = std::string(to_string(st.child.role)) + (st.child.instance.empty() ? "" : " " + st.child.instance);
  auto j = sandbox::finish_jailed(std::move(st.jail));
  if (!j) {
    LOG_WARN("azote-launcher: %s did not start: %s", what.c_str(), j.error().message().c_str());
    return refuse("spawn: " + j.error().message());
  }
  Child c = std::move(st.child);
  c.starttime = starttime_of(j->pid);
  UniqueFd for_caller(::fcntl(j->pidfd.get(), F_DUPFD_CLOEXEC, 0));
  c.pidfd = std::move(j->pidfd);
  const pid_t pid = j->pid;
  Json reply = {{"ok", true}, {"pid", pid}, {"starttime", c.starttime}, {"uid", c.uid},
                {"cgroup", cgroups_->membership_dir(c.cgroup)}, {"binary_sha384", c.binary_sha384}};
  LOG_INFO("azote-launcher: %s started (pid %d, uid %u, cgroup %s)", what.c_str(), pid, c.uid, c.cgroup.c_str());
  // Reaped already (it exited between its exec and this answer): exited_ holds its status.
  if (exited_.count(pid) == 0) children_.emplace(pid, std::move(c));
  out->push_back(std::move(for_caller));
  return reply;
}

Json Launcher::spawn_probe(const launch::SpawnRequest& r, std::vector<UniqueFd>* out) {
  if (o_.probe_bin.empty()) return refuse("probe: this launcher was started without --probe");
  const Child* target = find(r.instance, r.probe_as);
  if (target == nullptr)
    return refuse(std::string("probe: no running ") + to_string(r.probe_as) + (r.instance.empty() ? "" : " of " + r.instance));
  UniqueFd output;
  if (!r.output.empty()) {
    auto o = open_beneath(r.output, O_WRONLY | O_APPEND | O_CREAT);
    if (!o) return refuse("probe: output: " + o.error().message());
    output = std::move(o).value();
  }
  auto procs = cgroups_->create(target->cgroup, {});
  if (!procs) return refuse("probe: " + procs.error().message());
  auto exe = open_binary("azote-probe", o_.probe_bin);
  if (!exe) return refuse("probe: " + exe.error().message());
  std::vector<std::string> argv = {"azote-probe"};
  argv.insert(argv.end(), r.args.begin(), r.args.end());
  auto j = sandbox::spawn_into(target->pidfd.get(), target->uid, target->uid, *procs, output ? output.get() : -1, exe->get(), argv);
  if (!j) return refuse("probe: " + j.error().message());
  exited_.erase(j->pid);  // an earlier process's status under a reused pid
  LOG_INFO("azote-launcher: probe started in the jail of %s %s (pid %d)", to_string(r.probe_as), r.instance.c_str(), j->pid);
  Child c;
  c.role = Role::kProbe;
  c.instance = r.instance;
  c.uid = target->uid;
  c.cgroup = target->cgroup;
  c.starttime = starttime_of(j->pid);
  UniqueFd for_caller(::fcntl(j->pidfd.get(), F_DUPFD_CLOEXEC, 0));
  c.pidfd = std::move(j->pidfd);
  const pid_t pid = j->pid;
  children_.emplace(pid, std::move(c));
  out->push_back(std::move(for_caller));
  return Json{{"ok", true}, {"pid", pid}, {"uid", target->uid}};
}

Json Launcher::signal(const Json& req) {
  if (!req.contains("pid") || !req["pid"].is_number_integer() || !req.contains("signal") || !req["signal"].is_number_integer())
    return refuse("signal needs \"pid\" and \"signal\"");
  const pid_t pid = req["pid"].get<pid_t>();
  const int sig = req["signal"].get<int>();
  if (sig != SIGTERM && sig != SIGKILL && sig != SIGINT) return refuse("signal: only SIGTERM, SIGINT and SIGKILL");
  const uint64_t want = req.value("starttime", uint64_t{0});
  // A process this launcher started, or one an earlier launcher started (found in this
  // host's cgroup tree: a launcher restart must not orphan running instances).
  bool ours = children_.count(pid) > 0;
  if (!ours) {
    std::ifstream f("/proc/" + std::to_string(pid) + "/cgroup");
    std::string line;
    while (std::getline(f, line)) ours |= line.find("/" + host_name_ + "/") != std::string::npos && line.find("/controller") == std::string::npos;
  }
  if (!ours) return refuse("signal: pid " + std::to_string(pid) + " is not a process this host's launcher started");
  UniqueFd pfd(pidfd_open(pid));
  if (!pfd) return refuse("signal: pid " + std::to_string(pid) + ": " + std::strerror(errno));
  if (want != 0 && starttime_of(pid) != want) return refuse("signal: pid " + std::to_string(pid) + " is another process now");
  if (::syscall(SYS_pidfd_send_signal, pfd.get(), sig, nullptr, 0) != 0)
    return refuse(std::string("signal: ") + std::strerror(errno));
  return Json{{"ok", true}};
}

Json Launcher::status(const Json& req) {
  if (!req.contains("pid") || !req["pid"].is_number_integer()) return refuse("status needs \"pid\"");
  const pid_t pid = req["pid"].get<pid_t>();
  reap();
  if (auto it = exited_.find(pid); it != exited_.end()) return Json{{"ok", true}, {"exited", true}, {"status", it->second}};
  return Json{{"ok", true}, {"exited", false}, {"known", children_.count(pid) > 0}};
}

void Launcher::remove_socket_dir(int parent, const char* name) {
  UniqueFd dir(::openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!dir) return;
  if (DIR* d = ::fdopendir(::fcntl(dir.get(), F_DUPFD_CLOEXEC, 0))) {
    while (const dirent* e = ::readdir(d))
      if (e->d_name[0] != '.') ::unlinkat(dir.get(), e->d_name, 0);
    ::closedir(d);
  }
  ::unlinkat(parent, name, AT_REMOVEDIR);
}

bool Launcher::kill_and_remove(const std::string& leaf) {
  cgroups_->kill(leaf);
  for (int i = 0; i < 50 && !cgroups_->procs(leaf).empty(); ++i) {
    ::usleep(20'000);
    reap();
  }
  reap();
  // An adopted process is not this launcher's child: killed, it lingers a moment as a
  // zombie of init's, and its cgroup refuses rmdir (EBUSY) until init reaps it.
  bool removed = cgroups_->remove(leaf);
  for (int i = 0; i < 50 && !removed; ++i) {
    ::usleep(20'000);
    reap();
    removed = cgroups_->remove(leaf);
  }
  return removed;
}

Json Launcher::release(const Json& req) {
  const std::string instance = req.value("instance", "");
  if (instance == launch::kFabricInstance) return release_fabric();
  if (!valid_instance(instance)) return refuse("release needs \"instance\" (i-... or \"fabric\")");
  const bool removed = kill_and_remove(instance);
  // The instance's run directory and its ENIs' directories hold only the sockets its
  // processes made: removed through descriptors (the directories may have been swapped
  // for symlinks). The next spawn makes them again.
  if (auto inst = dir_beneath("instances/" + instance)) remove_socket_dir(inst->get(), "run");
  // Its vsock directory: an enclave's socket directory in its parent's, or a parent's own
  // (its enclaves' are gone by then).
  if (const size_t enc = instance.find("-enc"); enc != std::string::npos) {
    if (auto v = dir_beneath("vsock/" + instance.substr(0, enc))) remove_socket_dir(v->get(), instance.c_str());
  } else if (auto v = dir_beneath("vsock")) {
    remove_socket_dir(v->get(), instance.c_str());
  }
  if (auto it = enis_.find(instance); it != enis_.end()) {
    if (auto net = dir_beneath("net"))
      for (const auto& e : it->second) remove_socket_dir(net->get(), e.c_str());
    enis_.erase(it);
  }
  return Json{{"ok", true}, {"cgroups_removed", removed}};
}

Json Launcher::release_fabric() {
  // As an instance's: what is left of it killed, its cgroup and its socket directory
  // (net/fabric: the relay inbox) removed; the next spawn makes them again.
  const std::string leaf = std::string("host/") + to_string(Role::kCardFabric);
  bool removed = kill_and_remove(leaf);
  if (cgroups_->procs("host").empty()) removed = cgroups_->remove("host") && removed;
  if (auto net = dir_beneath("net")) remove_socket_dir(net->get(), launch::kFabricInstance);
  return Json{{"ok", true}, {"cgroups_removed", removed}};
}

Json Launcher::describe() {
  Json procs = Json::array();
  for (const auto& [pid, c] : children_)
    procs.push_back({{"pid", pid}, {"starttime", c.starttime}, {"role", to_string(c.role)}, {"instance", c.instance},
                     {"uid", c.uid}, {"cgroup", cgroups_->membership_dir(c.cgroup)}, {"binary_sha384", c.binary_sha384}});
  Json rot = nullptr;  // azote-rot: the host's, not a jailed process of an instance
  if (rot_pid_ != 0)
    rot = {{"pid", rot_pid_}, {"uid", o_.uid_base + launch::kRotId}, {"cgroup", cgroups_->membership_dir("rot")}};
  return Json{{"ok", true},
              {"layout", cgroups_->layout()},
              {"host", host_name_},
              {"tree", cgroups_->membership_dir("")},
              {"processes", procs},
              {"rot", rot},
              {"release", manifest_ ? Json{{"name", manifest_->release}, {"key_sha384", release_key_sha384_}} : Json()}};
}

}  // namespace azote::launcher
