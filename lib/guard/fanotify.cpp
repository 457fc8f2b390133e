// The write guard's fallback mechanism: fanotify permission events. Every open of a
// protected file (or of an entry of a protected directory) waits in the kernel until
// this backend's thread answers; it reads how the opener asked (/proc/TID/syscall: the
// open flags of open, openat, openat2, creat, open_by_handle_at; execve is a read) and
// refuses a write (O_WRONLY, O_RDWR or O_TRUNC) unless the opener's effective uid is the
// rule's writer. An open whose flags cannot be read is refused (fail closed).
//
// Its own thread, so that the process holding the guard (the launcher) can open the
// protected files itself (to hash or exec them) without waiting on its own answer. This
// thread opens nothing but /proc files and never a protected one.
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/fanotify.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

#include "base/log.hpp"
#include "base/unique_fd.hpp"
#include "guard/guard.hpp"

namespace azote::guard {
namespace {

constexpr size_t kMaxPending = 1024;

struct Rule {
  std::string path;
  std::optional<uid_t> writer;
  bool entries = false;
};

std::string slurp(const std::string& path) {
  std::ifstream f(path);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

// How task `tid` is opening a file, from the system call it is blocked in: the open
// flags, or nullopt (with `why`) when they cannot be known.
std::optional<uint64_t> opener_flags(pid_t tid, std::string* why) {
  std::istringstream in(slurp("/proc/" + std::to_string(tid) + "/syscall"));
  long nr = -1;
  if (!(in >> nr)) {
    *why = "its system call cannot be read";
    return std::nullopt;
  }
  uint64_t a[6] = {};
  for (auto& v : a) {
    std::string h;
    if (!(in >> h)) break;
    v = std::strtoull(h.c_str(), nullptr, 16);
  }
  switch (nr) {
    case SYS_open: *why = "open"; return a[1];
    case SYS_openat: *why = "openat"; return a[2];
    case SYS_open_by_handle_at: *why = "open_by_handle_at"; return a[2];
    case SYS_creat: *why = "creat"; return O_WRONLY | O_CREAT | O_TRUNC;
    case SYS_execve:
    case SYS_execveat: *why = "exec"; return O_RDONLY;
    case SYS_openat2: {
      // struct open_how starts with its u64 flags, in the opener's memory.
      uint64_t flags = 0;
      iovec local{&flags, sizeof flags}, remote{reinterpret_cast<void*>(a[2]), sizeof flags};
      if (::process_vm_readv(tid, &local, 1, &remote, 1, 0) != static_cast<ssize_t>(sizeof flags)) {
        *why = "openat2's open_how cannot be read";
        return std::nullopt;
      }
      *why = "openat2";
      return flags;
    }
    default: *why = "system call " + std::to_string(nr); return std::nullopt;
  }
}

// Effective uid of task `tid` (the second field of Uid: in its status), or nullopt.
std::optional<uid_t> euid_of(pid_t tid) {
  std::istringstream in(slurp("/proc/" + std::to_string(tid) + "/status"));
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("Uid:", 0) == 0) {
      std::istringstream f(line.substr(4));
      uid_t real = 0, eff = 0;
      if (f >> real >> eff) return eff;
    }
  return std::nullopt;
}

class Fanotify final : public Backend {
 public:
  ~Fanotify() override {
    if (stop_) {
      const uint64_t one = 1;
      (void)::write(stop_.get(), &one, sizeof one);
    }
    if (thread_.joinable()) thread_.join();
  }

  GuardResult<void> init() {
    fan_.reset(::fanotify_init(FAN_CLASS_CONTENT | FAN_CLOEXEC | FAN_NONBLOCK | FAN_REPORT_TID,
                               O_RDONLY | O_CLOEXEC | O_LARGEFILE));
    if (!fan_)
      return make_error(errno == EPERM || errno == EINVAL || errno == ENOSYS ? GuardErrc::kUnavailable : GuardErrc::kLoad,
                        "fanotify_init with permission events (needs CAP_SYS_ADMIN, CONFIG_FANOTIFY_ACCESS_PERMISSIONS)",
                        errno);
    stop_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    ready_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!stop_ || !ready_) return errno_error(GuardErrc::kLoad, "eventfd");
    thread_ = std::thread([this] { serve(); });
    return {};
  }

  GuardResult<void> protect(const std::string& path, std::optional<uid_t> writer, bool entries) override {
    struct stat st{};
    if (::lstat(path.c_str(), &st) != 0) return errno_error(GuardErrc::kPath, "protect " + path);
    {
      std::lock_guard lock(mu_);
      rules_[{st.st_dev, st.st_ino}] = Rule{path, writer, entries};
    }
    const uint64_t mask = FAN_OPEN_PERM | (entries ? FAN_EVENT_ON_CHILD : 0);
    if (::fanotify_mark(fan_.get(), FAN_MARK_ADD | FAN_MARK_DONT_FOLLOW | (entries ? FAN_MARK_ONLYDIR : 0), mask,
                        AT_FDCWD, path.c_str()) != 0)
      return errno_error(GuardErrc::kMap, "fanotify_mark " + path);
    return {};
  }
  void forget(const std::string& path) override {
    (void)::fanotify_mark(fan_.get(), FAN_MARK_REMOVE | FAN_MARK_DONT_FOLLOW, FAN_OPEN_PERM | FAN_EVENT_ON_CHILD,
                          AT_FDCWD, path.c_str());
    std::lock_guard lock(mu_);
    for (auto it = rules_.begin(); it != rules_.end(); ++it)
      if (it->second.path == path) {
        rules_.erase(it);
        return;
      }
  }
  int poll_fd() const override { return ready_.get(); }
  std::vector<Denial> drain() override {
    uint64_t n = 0;
    (void)::read(ready_.get(), &n, sizeof n);
    std::lock_guard lock(mu_);
    std::vector<Denial> out;
    out.swap(pending_);
    return out;
  }

 private:
  void serve() {
    alignas(fanotify_event_metadata) char buf[8192];
    for (;;) {
      pollfd p[2] = {{fan_.get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
      if (::poll(p, 2, -1) < 0) {
        if (errno == EINTR) continue;
        return;
      }
      if (p[1].revents != 0) return;
      const ssize_t n = ::read(fan_.get(), buf, sizeof buf);
      if (n <= 0) continue;
      auto* m = reinterpret_cast<fanotify_event_metadata*>(buf);
      for (ssize_t left = n; FAN_EVENT_OK(m, left); m = FAN_EVENT_NEXT(m, left)) {
        if (m->vers != FANOTIFY_METADATA_VERSION) return;  // a kernel this code does not know: stop answering
        if (m->fd < 0) continue;
        UniqueFd f(m->fd);
        if ((m->mask & FAN_OPEN_PERM) == 0) continue;
        fanotify_response r{m->fd, static_cast<__u32>(decide(f.get(), m->pid) ? FAN_ALLOW : FAN_DENY)};
        (void)::write(fan_.get(), &r, sizeof r);
      }
    }
  }

  // Whether the open of `fd` by task `tid` may go on; a refusal is queued.
  bool decide(int fd, pid_t tid) {
    struct stat st{};
    if (::fstat(fd, &st) != 0) return true;
    Rule rule;
    bool entry = false;
    {
      std::lock_guard lock(mu_);
      auto it = rules_.find({st.st_dev, st.st_ino});
      if (it == rules_.end()) {
        // An entry of a protected directory (FAN_EVENT_ON_CHILD): its parent's rule.
        std::error_code ec;
        const auto path = std::filesystem::read_symlink("/proc/self/fd/" + std::to_string(fd), ec);
        struct stat dir{};
        if (ec || ::stat(path.parent_path().c_str(), &dir) != 0) return true;
        it = rules_.find({dir.st_dev, dir.st_ino});
        if (it == rules_.end() || !it->second.entries) return true;
        entry = true;
      }
      rule = it->second;
    }
    std::string how;
    const auto flags = opener_flags(tid, &how);
    const bool write = !flags || (*flags & O_ACCMODE) != O_RDONLY || (*flags & O_TRUNC) != 0;
    if (!write) return true;
    const auto euid = euid_of(tid);
    if (rule.writer && euid && *euid == *rule.writer) return true;
    Denial d;
    d.op = "write";
    d.pid = tid;
    d.uid = euid.value_or(static_cast<uid_t>(-1));
    d.comm = slurp("/proc/" + std::to_string(tid) + "/comm");
    while (!d.comm.empty() && d.comm.back() == '\n') d.comm.pop_back();
    std::error_code ec;
    d.exe = std::filesystem::read_symlink("/proc/" + std::to_string(tid) + "/exe", ec).string();
    d.path = rule.path;
    d.entry = entry;
    d.why = flags ? how : "refused: " + how + " (its open flags are unknown)";
    {
      std::lock_guard lock(mu_);
      if (pending_.size() < kMaxPending) pending_.push_back(std::move(d));
    }
    const uint64_t one = 1;
    (void)::write(ready_.get(), &one, sizeof one);
    return false;
  }

  UniqueFd fan_, stop_, ready_;
  std::mutex mu_;
  std::map<std::pair<dev_t, ino_t>, Rule> rules_;  // mu_
  std::vector<Denial> pending_;                     // mu_
  std::thread thread_;
};

}  // namespace

GuardResult<std::unique_ptr<Backend>> start_fanotify() {
  auto b = std::make_unique<Fanotify>();
  AZOTE_TRYV(b->init());
  return std::unique_ptr<Backend>(std::move(b));
}

}  // namespace azote::guard
