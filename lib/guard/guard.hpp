// The write guard (issue 11: the security chip trapping writes to firmware storage):
// refuses to every process, root included, changes to the files a host protects (its
// release's binaries, manifest and key; azote-rot's state) and reports each refusal.
// Two mechanisms, the strongest the kernel offers first:
//   bpf-lsm   BPF LSM programs (guard.bpf.c): opening for writing, truncate, unlink,
//             rename (of it or over it), mounting over it; for a protected directory also
//             creating, unlinking and renaming entries. Needs CONFIG_BPF_LSM, "bpf" among
//             the active LSMs and BPF trampolines.
//   fanotify  permission events (fanotify.cpp), answered by a helper process: opening
//             for writing only (the opener's flags read from /proc/TID/syscall while it
//             waits; refused if they cannot be read). Truncate by path, unlink, rename and
//             mounts are not trapped; unlink, rename, truncate and metadata changes of a
//             protected file, and entries created, removed or renamed in a protected
//             directory, are seen afterwards (inotify) and reported as not refused; the launcher's
//             periodic re-hash is what sees a binary's content replaced.
// The protection lasts while this object lives (the launcher holds it for the host).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/error.hpp"

namespace azote::guard {

enum class GuardErrc {
  kUnavailable = 1,  // the kernel offers no usable mechanism (the context says why)
  kLoad,             // setting the mechanism up failed
  kPath,             // a path to protect cannot be opened
  kMap,              // the table of protected inodes is full or refused the entry
};
using GuardError = Error<GuardErrc>;
template <class T>
using GuardResult = Result<T, GuardError>;

enum class Mechanism { kBpfLsm, kFanotify };
const char* to_string(Mechanism m);

struct Denial {
  std::string op;      // "write", "truncate", "unlink", "rename", "mount", "create"
  pid_t pid = 0;
  uid_t uid = 0;
  std::string comm;    // the task's command name
  std::string exe;     // /proc/PID/exe when it could still be read, else ""
  std::string path;    // the protected path whose rule refused
  bool entry = false;  // the change was to an entry of that directory, not to it
  std::string why;     // fanotify: how the opener's mode was judged ("" with bpf-lsm)
  // False: a change the mechanism could not refuse and only saw afterwards (fanotify's
  // helper watches with inotify for unlink, rename and metadata changes); pid, uid,
  // comm and exe are then unknown.
  bool refused = true;
};

// One mechanism's implementation.
class Backend {
 public:
  virtual ~Backend() = default;
  virtual GuardResult<void> protect(const std::string& path, std::optional<uid_t> writer, bool entries) = 0;
  virtual void forget(const std::string& path) = 0;  // protect() undone
  virtual int poll_fd() const = 0;
  virtual std::vector<Denial> drain() = 0;
  virtual bool gone() const { return false; }  // it stopped guarding (fanotify: its helper died)
};

// Why this kernel cannot run the BPF LSM mechanism, or nullopt if it can.
std::optional<std::string> bpf_lsm_unavailable();
GuardResult<std::unique_ptr<Backend>> start_bpf_lsm();
GuardResult<std::unique_ptr<Backend>> start_fanotify();

class WriteGuard {
 public:
  // The strongest mechanism that works here (`only`: that one or an error). Each start
  // proves itself: a protected probe file that this root process must fail to open for
  // writing, else the mechanism is reported unavailable.
  static GuardResult<std::unique_ptr<WriteGuard>> start(std::optional<Mechanism> only = std::nullopt);
  Mechanism mechanism() const { return mechanism_; }
  // Why the stronger mechanism was not used ("" when it is the one running).
  const std::string& fallback_reason() const { return fallback_; }

  // Protects `path` (a final symlink is not followed): nobody may change it, or only
  // `writer` when given; with `entries` (a directory) its entries too.
  GuardResult<void> protect(const std::string& path, std::optional<uid_t> writer, bool entries);
  const std::vector<std::string>& paths() const { return paths_; }

  // Readable when refusals are waiting; drain() takes them.
  int poll_fd() const { return backend_->poll_fd(); }
  std::vector<Denial> drain() { return backend_->drain(); }
  // True once the mechanism stopped guarding (drain() saw it): nothing is protected.
  bool gone() const { return backend_->gone(); }

 private:
  WriteGuard(std::unique_ptr<Backend> b, Mechanism m) : backend_(std::move(b)), mechanism_(m) {}
  GuardResult<void> self_test();
  std::unique_ptr<Backend> backend_;
  Mechanism mechanism_;
  std::string fallback_;
  std::vector<std::string> paths_;
};

}  // namespace azote::guard
