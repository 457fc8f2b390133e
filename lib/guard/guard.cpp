#include "guard/guard.hpp"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>

#include "base/log.hpp"
#include "guard/guard_abi.h"

// The compiled BPF object (guard.bpf.c), linked in by guard_bpf.S.
extern "C" const unsigned char azote_guard_bpf_start[];
extern "C" const unsigned char azote_guard_bpf_end[];

namespace azote::guard {
namespace {

constexpr size_t kMaxPending = 1024;

int quiet_libbpf(enum libbpf_print_level level, const char* fmt, va_list args) {
  if (level == LIBBPF_DEBUG) return 0;
  char line[512];
  std::vsnprintf(line, sizeof line, fmt, args);
  std::string s(line);
  while (!s.empty() && s.back() == '\n') s.pop_back();
  LOG_DEBUG("write guard: libbpf: %s", s.c_str());
  return 0;
}

const char* op_name(uint32_t op) {
  switch (op) {
    case AZOTE_GUARD_OP_WRITE: return "write";
    case AZOTE_GUARD_OP_TRUNCATE: return "truncate";
    case AZOTE_GUARD_OP_UNLINK: return "unlink";
    case AZOTE_GUARD_OP_RENAME: return "rename";
    case AZOTE_GUARD_OP_MOUNT: return "mount";
    case AZOTE_GUARD_OP_CREATE: return "create";
  }
  return "change";
}

// The kernel's dev_t (MKDEV: major << 20 | minor) of what stat() reports.
uint64_t kernel_dev(dev_t d) { return (static_cast<uint64_t>(major(d)) << 20) | minor(d); }

class BpfLsm final : public Backend {
 public:
  ~BpfLsm() override {
    if (rb_ != nullptr) ring_buffer__free(rb_);
    for (auto* l : links_) bpf_link__destroy(l);
    if (obj_ != nullptr) bpf_object__close(obj_);
  }

  GuardResult<void> load() {
    libbpf_set_print(quiet_libbpf);
    LIBBPF_OPTS(bpf_object_open_opts, opts, .object_name = "azote_guard");
    obj_ = bpf_object__open_mem(azote_guard_bpf_start, static_cast<size_t>(azote_guard_bpf_end - azote_guard_bpf_start),
                                &opts);
    if (obj_ == nullptr) return errno_error(GuardErrc::kLoad, "open the write guard's BPF object");
    if (int r = bpf_object__load(obj_); r != 0) {
      // EPERM as root: the kernel refuses programs attached through BPF trampolines
      // (fentry, lsm) although it has the BPF LSM (seen on nested PVM guests).
      return make_error(r == -EPERM ? GuardErrc::kUnavailable : GuardErrc::kLoad,
                        "the kernel refused to load the write guard's BPF LSM programs", -r);
    }
    bpf_program* prog = nullptr;
    bpf_object__for_each_program(prog, obj_) {
      bpf_link* l = bpf_program__attach_lsm(prog);
      if (l == nullptr) return errno_error(GuardErrc::kLoad, std::string("attach ") + bpf_program__name(prog));
      links_.push_back(l);
    }
    map_fd_ = bpf_object__find_map_fd_by_name(obj_, "protected_inodes");
    const int rb_fd = bpf_object__find_map_fd_by_name(obj_, "denials");
    if (map_fd_ < 0 || rb_fd < 0) return make_error(GuardErrc::kLoad, "the write guard's maps are missing");
    rb_ = ring_buffer__new(rb_fd, &BpfLsm::on_denial, this, nullptr);
    if (rb_ == nullptr) return errno_error(GuardErrc::kLoad, "the write guard's ring buffer");
    return {};
  }

  GuardResult<void> protect(const std::string& path, std::optional<uid_t> writer, bool entries) override {
    struct stat st{};
    if (::lstat(path.c_str(), &st) != 0) return errno_error(GuardErrc::kPath, "protect " + path);
    azote_guard_key key{kernel_dev(st.st_dev), st.st_ino};
    azote_guard_rule rule{};
    rule.uid = writer ? static_cast<uint32_t>(*writer) : 0;
    rule.flags = (writer ? 0u : AZOTE_GUARD_NOBODY) | (entries ? AZOTE_GUARD_ENTRIES : 0u);
    if (bpf_map_update_elem(map_fd_, &key, &rule, BPF_ANY) != 0) return errno_error(GuardErrc::kMap, "protect " + path);
    paths_[{key.dev, key.ino}] = path;
    return {};
  }
  void forget(const std::string& path) override {
    for (auto it = paths_.begin(); it != paths_.end(); ++it)
      if (it->second == path) {
        azote_guard_key key{it->first.first, it->first.second};
        bpf_map_delete_elem(map_fd_, &key);
        paths_.erase(it);
        return;
      }
  }
  int poll_fd() const override { return ring_buffer__epoll_fd(rb_); }
  std::vector<Denial> drain() override {
    ring_buffer__consume(rb_);
    std::vector<Denial> out;
    out.swap(pending_);
    return out;
  }

 private:
  static int on_denial(void* ctx, void* data, size_t size) {
    auto* self = static_cast<BpfLsm*>(ctx);
    if (size < sizeof(azote_guard_denial) || self->pending_.size() >= kMaxPending) return 0;
    azote_guard_denial e{};
    std::memcpy(&e, data, sizeof e);
    Denial d;
    d.op = op_name(e.op);
    d.pid = static_cast<pid_t>(e.pid);
    d.uid = e.uid;
    d.comm.assign(e.comm, strnlen(e.comm, sizeof e.comm));
    std::error_code ec;
    d.exe = std::filesystem::read_symlink("/proc/" + std::to_string(e.pid) + "/exe", ec).string();
    const auto it = self->paths_.find({e.rule.dev, e.rule.ino});
    d.path = it != self->paths_.end() ? it->second : "inode " + std::to_string(e.rule.ino);
    d.entry = e.op == AZOTE_GUARD_OP_CREATE || e.target.ino != e.rule.ino || e.target.dev != e.rule.dev;
    self->pending_.push_back(std::move(d));
    return 0;
  }

  bpf_object* obj_ = nullptr;
  std::vector<bpf_link*> links_;
  ring_buffer* rb_ = nullptr;
  int map_fd_ = -1;
  std::map<std::pair<uint64_t, uint64_t>, std::string> paths_;  // (dev, ino) -> path
  std::vector<Denial> pending_;
};

}  // namespace

const char* to_string(Mechanism m) { return m == Mechanism::kBpfLsm ? "bpf-lsm" : "fanotify"; }

std::optional<std::string> bpf_lsm_unavailable() {
  if (::access("/sys/kernel/security/lsm", R_OK) != 0 && ::geteuid() == 0) {
    // securityfs is not mounted (a minimal init; systemd always mounts it): mount it, as
    // that is where the kernel says which LSMs run.
    if (::mount("securityfs", "/sys/kernel/security", "securityfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) == 0)
      LOG_INFO("write guard: mounted securityfs on /sys/kernel/security");
  }
  std::ifstream lsm("/sys/kernel/security/lsm");
  std::string list;
  if (!(lsm >> list)) return "cannot read /sys/kernel/security/lsm (securityfs not mounted?)";
  list = "," + list + ",";
  if (list.find(",bpf,") == std::string::npos)
    return "the kernel's active LSMs are " + list.substr(1, list.size() - 2) +
           ": no \"bpf\" (boot with lsm=...,bpf and CONFIG_BPF_LSM=y)";
  return std::nullopt;
}

GuardResult<std::unique_ptr<Backend>> start_bpf_lsm() {
  if (auto why = bpf_lsm_unavailable()) return make_error(GuardErrc::kUnavailable, *why);
  auto b = std::make_unique<BpfLsm>();
  AZOTE_TRYV(b->load());
  return std::unique_ptr<Backend>(std::move(b));
}

GuardResult<std::unique_ptr<WriteGuard>> WriteGuard::start(std::optional<Mechanism> only) {
  std::string fallback;
  if (!only || *only == Mechanism::kBpfLsm) {
    auto b = start_bpf_lsm();
    if (b) {
      std::unique_ptr<WriteGuard> g(new WriteGuard(std::move(b).value(), Mechanism::kBpfLsm));
      auto t = g->self_test();
      if (t) return g;
      if (only) return Unexpected{t.error()};
      fallback = t.error().message();
    } else {
      if (only || b.error().code != GuardErrc::kUnavailable) return Unexpected{b.error()};
      fallback = b.error().message();
    }
  }
  auto f = start_fanotify();
  if (!f) {
    GuardError e = f.error();
    if (!fallback.empty()) e.context = "bpf-lsm: " + fallback + "; fanotify: " + e.context;
    return Unexpected{e};
  }
  std::unique_ptr<WriteGuard> g(new WriteGuard(std::move(f).value(), Mechanism::kFanotify));
  g->fallback_ = fallback;
  AZOTE_TRYV(g->self_test());
  return g;
}

GuardResult<void> WriteGuard::self_test() {
  // A mechanism that is set up but never consulted (programs attached to an LSM the
  // kernel does not run, say) would protect nothing: prove it refuses, on a file of our
  // own that even this process (root) must not open for writing.
  char name[] = "/tmp/azote-guard-probe.XXXXXX";
  const int fd = ::mkstemp(name);
  if (fd < 0) return errno_error(GuardErrc::kLoad, "write guard self-test: mkstemp");
  ::close(fd);
  if (auto p = backend_->protect(name, std::nullopt, false); !p) {
    ::unlink(name);
    return p;
  }
  const int w = ::open(name, O_WRONLY | O_CLOEXEC);
  const int err = errno;
  if (w >= 0) ::close(w);
  backend_->forget(name);
  ::unlink(name);
  (void)backend_->drain();
  if (w >= 0 || err != EPERM)
    return make_error(GuardErrc::kUnavailable,
                      std::string(to_string(mechanism_)) + " is set up but did not refuse a write open of a protected file",
                      w >= 0 ? 0 : err);
  return {};
}

GuardResult<void> WriteGuard::protect(const std::string& path, std::optional<uid_t> writer, bool entries) {
  struct stat st{};
  if (::lstat(path.c_str(), &st) != 0) return errno_error(GuardErrc::kPath, "protect " + path);
  if (entries && !S_ISDIR(st.st_mode)) return make_error(GuardErrc::kPath, "protect " + path + ": not a directory");
  AZOTE_TRYV(backend_->protect(path, writer, entries));
  paths_.push_back(path);
  return {};
}

}  // namespace azote::guard
