// The write guard's fallback mechanism: fanotify permission events. Every open of a
// protected file (or of an entry of a protected directory) waits in the kernel until
// this backend's thread answers; it reads how the opener asked (/proc/TID/syscall: the
// open flags of open, openat, openat2, creat, open_by_handle_at; execve is a read) and
// refuses a write (O_WRONLY, O_RDWR or O_TRUNC) unless the opener's effective uid is the
// rule's writer. An open whose flags cannot be read is refused (fail closed).
//
// A helper process of its own ("azote-guard", forked at start, dying with its parent)
// owns the fanotify group: the process holding the guard (the launcher) can then open
// the protected files itself (to hash or exec them) without waiting on its own answer,
// and stays single-threaded. The helper opens nothing but /proc files.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <sys/fanotify.h>
#include <sys/inotify.h>
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
#include <sstream>

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
  // The kernel reports "running" while it cannot see the task parked in a system call;
  // the opener is waiting for this very answer, so that is a moment (seen once under
  // load in CI): read again for up to ~50 ms before refusing.
  std::string text;
  for (int attempt = 0; attempt < 250; ++attempt) {
    text = slurp("/proc/" + std::to_string(tid) + "/syscall");
    if (!text.empty() && text[0] >= '0' && text[0] <= '9') break;
    ::usleep(200);
  }
  std::istringstream in(text);
  long nr = -1;
  if (!(in >> nr)) {
    *why = "its system call cannot be read (\"" + text.substr(0, text.find('\n')) + "\")";
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

// The helper's side: the fanotify group, the rules, the answers.
class Helper {
 public:
  Helper(UniqueFd fan, UniqueFd ctl, UniqueFd events)
      : fan_(std::move(fan)), ctl_(std::move(ctl)), events_(std::move(events)),
        watch_(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK)) {}

  // Until the launcher's end of the control socket closes.
  [[noreturn]] void run() {
    alignas(fanotify_event_metadata) char buf[8192];
    for (;;) {
      pollfd p[3] = {{fan_.get(), POLLIN, 0}, {ctl_.get(), POLLIN, 0}, {watch_.get(), POLLIN, 0}};
      if (::poll(p, watch_ ? 3 : 2, -1) < 0) {
        if (errno == EINTR) continue;
        ::_exit(1);
      }
      if (p[1].revents != 0 && !control()) ::_exit(0);
      if (watch_ && p[2].revents != 0) watched();
      if (p[0].revents == 0) continue;
      const ssize_t n = ::read(fan_.get(), buf, sizeof buf);
      if (n <= 0) continue;
      auto* m = reinterpret_cast<fanotify_event_metadata*>(buf);
      for (ssize_t left = n; FAN_EVENT_OK(m, left); m = FAN_EVENT_NEXT(m, left)) {
        if (m->vers != FANOTIFY_METADATA_VERSION) ::_exit(1);  // a kernel this code does not know
        if (m->fd < 0) continue;
        UniqueFd f(m->fd);
        if ((m->mask & FAN_OPEN_PERM) == 0) continue;
        fanotify_response r{m->fd, static_cast<__u32>(decide(f.get(), m->pid) ? FAN_ALLOW : FAN_DENY)};
        (void)::write(fan_.get(), &r, sizeof r);
      }
    }
  }

 private:
  // One request from the launcher: "P\0UID|-\0ENTRIES\0PATH" (protect) or "F\0PATH"
  // (forget); answered "" (done) or an error sentence. False: the launcher is gone.
  bool control() {
    char msg[4200];
    const ssize_t n = ::recv(ctl_.get(), msg, sizeof msg - 1, 0);
    if (n <= 0) return false;
    msg[n] = '\0';
    std::vector<std::string> f;
    for (ssize_t i = 0; i < n;) {
      f.emplace_back(msg + i);
      i += static_cast<ssize_t>(f.back().size()) + 1;
    }
    std::string reply;
    if (f.size() == 4 && f[0] == "P") {
      Rule r;
      r.path = f[3];
      if (f[1] != "-") r.writer = static_cast<uid_t>(std::strtoul(f[1].c_str(), nullptr, 10));
      r.entries = f[2] == "1";
      struct stat st{};
      const uint64_t mask = FAN_OPEN_PERM | (r.entries ? FAN_EVENT_ON_CHILD : 0);
      if (::lstat(r.path.c_str(), &st) != 0 ||
          ::fanotify_mark(fan_.get(), FAN_MARK_ADD | FAN_MARK_DONT_FOLLOW | (r.entries ? FAN_MARK_ONLYDIR : 0), mask,
                          AT_FDCWD, r.path.c_str()) != 0)
        reply = "fanotify_mark " + r.path + ": " + std::strerror(errno);
      else {
        rules_[{st.st_dev, st.st_ino}] = r;
        // What fanotify cannot refuse is at least seen: the file unlinked, renamed or its
        // metadata changed; in a directory, entries created, removed or renamed.
        // IN_MODIFY: truncate(2) by path, or a write through a descriptor opened before.
        const uint32_t seen = IN_DELETE_SELF | IN_MOVE_SELF | IN_ATTRIB | IN_MODIFY | IN_DONT_FOLLOW |
                              (r.entries ? IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO : 0u);
        if (watch_)
          if (const int wd = ::inotify_add_watch(watch_.get(), r.path.c_str(), seen); wd >= 0) watched_[wd] = r;
      }
    } else if (f.size() == 2 && f[0] == "F") {
      (void)::fanotify_mark(fan_.get(), FAN_MARK_REMOVE | FAN_MARK_DONT_FOLLOW, FAN_OPEN_PERM | FAN_EVENT_ON_CHILD,
                            AT_FDCWD, f[1].c_str());
      for (auto w = watched_.begin(); w != watched_.end(); ++w)
        if (w->second.path == f[1]) {
          (void)::inotify_rm_watch(watch_.get(), w->first);
          watched_.erase(w);
          break;
        }
      for (auto it = rules_.begin(); it != rules_.end(); ++it)
        if (it->second.path == f[1]) {
          rules_.erase(it);
          break;
        }
    } else {
      reply = "a request the guard helper does not know";
    }
    return ::send(ctl_.get(), reply.data(), reply.size(), MSG_NOSIGNAL) >= 0;
  }

  // inotify: changes fanotify could not refuse, reported as seen (not refused).
  void watched() {
    alignas(inotify_event) char buf[4096];
    for (ssize_t n; (n = ::read(watch_.get(), buf, sizeof buf)) > 0;) {
      for (ssize_t at = 0; at < n;) {
        const auto* e = reinterpret_cast<const inotify_event*>(buf + at);
        at += static_cast<ssize_t>(sizeof(inotify_event) + e->len);
        const auto it = watched_.find(e->wd);
        if (it == watched_.end()) continue;
        const Rule& rule = it->second;
        const std::string name = e->len > 0 ? std::string(e->name) : std::string();
        // azote-rot's own first start: its secret written as uds.new, renamed to uds.
        if (rule.entries && rule.writer && name == "uds.new" && (e->mask & (IN_CREATE | IN_MODIFY | IN_MOVED_FROM)) != 0)
          continue;
        if (rule.entries && rule.writer && name == "uds" && (e->mask & IN_MOVED_TO) != 0) continue;
        const char* what = (e->mask & IN_DELETE_SELF)                  ? "unlinked"
                           : (e->mask & IN_MOVE_SELF)                  ? "renamed"
                           : (e->mask & IN_ATTRIB)                     ? "metadata changed"
                           : (e->mask & IN_MODIFY)                     ? "modified"
                           : (e->mask & IN_CREATE)                     ? "entry created"
                           : (e->mask & IN_DELETE)                     ? "entry removed"
                           : (e->mask & (IN_MOVED_FROM | IN_MOVED_TO)) ? "entry renamed"
                                                                        : nullptr;
        if (what == nullptr) continue;  // IN_IGNORED and the like
        send_record({"0", "-1", "", "", rule.path, name.empty() ? "0" : "1",
                     std::string(what) + (name.empty() ? "" : ": " + name), "seen"});
      }
    }
  }

  // "pid\0uid\0comm\0exe\0path\0entry\0why\0kind", one datagram per record
  // (kind "refused" or "seen").
  void send_record(const std::vector<std::string>& fields) {
    std::string rec;
    for (const auto& field : fields) {
      rec += field;
      rec.push_back('\0');
    }
    (void)::send(events_.get(), rec.data(), rec.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  }

  // Whether the open of `fd` by task `tid` may go on; a refusal is sent to the launcher.
  bool decide(int fd, pid_t tid) {
    struct stat st{};
    if (::fstat(fd, &st) != 0) return true;
    bool entry = false;
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
    const Rule& rule = it->second;
    std::string how;
    const auto flags = opener_flags(tid, &how);
    const bool write = !flags || (*flags & O_ACCMODE) != O_RDONLY || (*flags & O_TRUNC) != 0;
    if (!write) return true;
    const auto euid = euid_of(tid);
    if (rule.writer && euid && *euid == *rule.writer) return true;
    std::string comm = slurp("/proc/" + std::to_string(tid) + "/comm");
    while (!comm.empty() && comm.back() == '\n') comm.pop_back();
    std::error_code ec;
    const std::string exe = std::filesystem::read_symlink("/proc/" + std::to_string(tid) + "/exe", ec).string();
    send_record({std::to_string(tid), std::to_string(euid.value_or(static_cast<uid_t>(-1))), comm, exe, rule.path,
                 entry ? "1" : "0", flags ? how : "refused: " + how + " (its open flags are unknown)", "refused"});
    return false;
  }

  UniqueFd fan_, ctl_, events_, watch_;
  std::map<std::pair<dev_t, ino_t>, Rule> rules_;
  std::map<int, Rule> watched_;  // inotify watch descriptor -> its rule
};

// The launcher's side: a helper process owns the fanotify group and answers every
// permission event, so that nothing in this process (which may open the protected
// files itself, to hash or exec them, and clones jails without fork handlers) ever
// waits on an answer of its own or shares its heap with another thread.
class Fanotify final : public Backend {
 public:
  ~Fanotify() override {
    ctl_.reset();  // the helper exits when its control socket closes
    if (helper_ > 0) {
      for (int i = 0; i < 100 && ::waitpid(helper_, nullptr, WNOHANG) == 0; ++i) ::usleep(10'000);
      ::kill(helper_, SIGKILL);
      (void)::waitpid(helper_, nullptr, 0);  // ECHILD if someone reaped it already
    }
  }

  GuardResult<void> init() {
    UniqueFd fan(::fanotify_init(FAN_CLASS_CONTENT | FAN_CLOEXEC | FAN_NONBLOCK | FAN_REPORT_TID,
                                 O_RDONLY | O_CLOEXEC | O_LARGEFILE));
    if (!fan)
      return make_error(errno == EPERM || errno == EINVAL || errno == ENOSYS ? GuardErrc::kUnavailable : GuardErrc::kLoad,
                        "fanotify_init with permission events (needs CAP_SYS_ADMIN, CONFIG_FANOTIFY_ACCESS_PERMISSIONS)",
                        errno);
    int ctl[2], ev[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, ctl) != 0) return errno_error(GuardErrc::kLoad, "socketpair");
    UniqueFd ctl_mine(ctl[0]), ctl_theirs(ctl[1]);
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, ev) != 0) return errno_error(GuardErrc::kLoad, "socketpair");
    UniqueFd ev_mine(ev[0]), ev_theirs(ev[1]);
    const pid_t parent = ::getpid();
    std::fflush(nullptr);
    helper_ = ::fork();
    if (helper_ < 0) return errno_error(GuardErrc::kLoad, "fork the guard helper");
    if (helper_ == 0) {
      // Dies with whoever holds the guard; then its group goes and nothing waits on it.
      if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() != parent) ::_exit(1);
      ::prctl(PR_SET_NAME, "azote-guard");
      ctl_mine.reset();
      ev_mine.reset();
      sigset_t none;
      sigemptyset(&none);
      ::sigprocmask(SIG_SETMASK, &none, nullptr);
      Helper(std::move(fan), std::move(ctl_theirs), std::move(ev_theirs)).run();
    }
    // The helper alone holds the group: if it dies the group and its marks go with it
    // (unguarded, never hung).
    fan.reset();
    ctl_ = std::move(ctl_mine);
    events_ = std::move(ev_mine);
    if (::fcntl(events_.get(), F_SETFL, O_NONBLOCK) != 0) return errno_error(GuardErrc::kLoad, "guard events socket");
    return {};
  }

  GuardResult<void> protect(const std::string& path, std::optional<uid_t> writer, bool entries) override {
    std::string msg = "P";
    for (const std::string& f : {writer ? std::to_string(*writer) : std::string("-"), std::string(entries ? "1" : "0"), path}) {
      msg.push_back('\0');
      msg += f;
    }
    const std::string reply = call(msg);
    if (!reply.empty()) return make_error(GuardErrc::kMap, reply);
    return {};
  }
  void forget(const std::string& path) override { (void)call("F" + std::string(1, '\0') + path); }
  int poll_fd() const override { return events_.get(); }
  std::vector<Denial> drain() override {
    std::vector<Denial> out;
    char buf[8192];
    ssize_t n;
    for (; (n = ::recv(events_.get(), buf, sizeof buf, MSG_DONTWAIT)) > 0;) {
      std::vector<std::string> f;
      for (ssize_t i = 0; i < n;) {
        f.emplace_back(buf + i, strnlen(buf + i, static_cast<size_t>(n - i)));
        i += static_cast<ssize_t>(f.back().size()) + 1;
      }
      if (f.size() != 8) continue;
      Denial d;
      d.refused = f[7] == "refused";
      d.op = d.refused ? "write" : "change";
      d.pid = static_cast<pid_t>(std::strtol(f[0].c_str(), nullptr, 10));
      d.uid = static_cast<uid_t>(std::strtoul(f[1].c_str(), nullptr, 10));
      d.comm = f[2];
      d.exe = f[3];
      d.path = f[4];
      d.entry = f[5] == "1";
      d.why = f[6];
      out.push_back(std::move(d));
    }
    if (n == 0) gone_ = true;  // the helper's end closed: it died
    return out;
  }
  bool gone() const override { return gone_; }

 private:
  // One request and its answer ("" done; an error sentence; "the guard helper is gone").
  std::string call(const std::string& msg) {
    if (::send(ctl_.get(), msg.data(), msg.size(), MSG_NOSIGNAL) < 0) return "the guard helper is gone";
    char buf[512];
    const ssize_t n = ::recv(ctl_.get(), buf, sizeof buf, 0);
    if (n < 0) return "the guard helper is gone";
    return std::string(buf, static_cast<size_t>(n));
  }

  pid_t helper_ = -1;
  UniqueFd ctl_, events_;
  bool gone_ = false;
};

}  // namespace

GuardResult<std::unique_ptr<Backend>> start_fanotify() {
  auto b = std::make_unique<Fanotify>();
  AZOTE_TRYV(b->init());
  return std::unique_ptr<Backend>(std::move(b));
}

}  // namespace azote::guard
