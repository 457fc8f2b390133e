// azote-launcher: the one process of a host that keeps root. It starts the unprivileged
// controller and, on the controller's requests (lib/launch/protocol.hpp), the jailed
// processes (azote-hv and the cards), and nothing else: it opens the files, devices and
// sockets they need and hands them over as descriptors, builds their jails
// (lib/sandbox/jail.hpp) and cgroups (lib/sandbox/cgroup.hpp), reaps them, signals only
// processes it started, and supervises the controller (restarted if it dies).
//
// Single-threaded: one epoll loop over signals, the controller's socket, the exec
// outcomes of children still building their jails (a spawn is answered when its child
// has exec'd, other requests meanwhile) and, in test builds of a host (--probe), a
// root-only socket that may ask for nothing but probes.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <set>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/error.hpp"
#include "base/unique_fd.hpp"
#include "guard/guard.hpp"
#include "launch/protocol.hpp"
#include "release/release.hpp"
#include "sandbox/cgroup.hpp"
#include "sandbox/jail.hpp"

namespace azote::launcher {

enum class LauncherErrc { kUsage = 1, kSetup };
using LauncherError = Error<LauncherErrc>;

struct Options {
  std::string state_dir;
  std::string controller_bin, hv_bin, card_blk_bin, card_net_bin, probe_bin;
  std::string card_tpm_bin;  // optional: without it no instance gets a TPM
  std::string card_nsm_bin;  // optional: without it no enclave can start
  std::string card_vsock_bin;  // optional: without it parents and enclaves get no vsock
  std::string rot_bin;  // --rot: azote-rot, started at host start; empty: no root of trust
  std::string test_socket;  // with probe_bin: root-only socket for probe requests
  uint32_t uid_base = 2'000'000'000;
  bool favordynmods = true;  // --cgroup-favordynmods (CgroupTree::favor_migrations)
  // --write-guard: "auto" (where the kernel runs the BPF LSM), "on" (required: exit 71
  // without it) or "off"; what it protects: see start_guard().
  std::string write_guard = "auto";
  int guard_rehash_seconds = 60;  // --guard-rehash-seconds: re-hash the release's binaries
  // Verified launch: a signed release manifest and the release's public key (both or
  // neither). Without them: development mode, binaries run unchecked (logged).
  std::string release_manifest, release_key;
  std::vector<std::string> controller_args;  // after "--"
  bool help = false, version = false;
};
Result<Options, LauncherError> parse_args(const std::vector<std::string>& args);

// Why a spawn's arguments are refused whatever the role (--seccomp=log), or nullopt.
std::optional<std::string> refused_args(const std::vector<std::string>& args);
const char* usage_text();

class Launcher {
 public:
  static Result<std::unique_ptr<Launcher>, LauncherError> create(Options o);
  // Until SIGTERM/SIGINT has been passed on to the controller and it has exited;
  // returns the controller's exit status.
  int run();

  // The reply to one request (exposed for tests): fds to pass back go in *fds.
  launch::Json handle(const launch::Json& req, std::vector<UniqueFd>* fds, bool from_test_socket);

 private:
  struct Child {
    launch::Role role;
    std::string instance;
    uint32_t uid = 0;
    uint64_t starttime = 0;
    std::string cgroup;  // relative leaf
    UniqueFd pidfd;
    // Under a release: the SHA-384 (hex) of the binary it runs, checked against the
    // release (its sealed copy at spawn; /proc/PID/exe when adopted); "" otherwise.
    std::string binary_sha384;
  };
  // A spawn whose child is building its jail; its exec outcome answers `reply_fd`.
  struct Starting {
    Child child;  // without pidfd and starttime until it has exec'd
    sandbox::Starting jail;
    std::vector<UniqueFd> keep;  // the binds' directories, held until the child is done with them
    int reply_fd = -1;           // -1: the asker has gone
    launch::Json seq;
  };
  struct ReplyTo {
    int fd;
    launch::Json seq;
  };
  explicit Launcher(Options o) : o_(std::move(o)) {}
  Result<void, LauncherError> prepare_state_dir();
  Result<void, LauncherError> start_controller();
  // azote-rot as its own uid (base + kRotId), its state <state>/rot (0700, its own),
  // its control socket <state>/rot.sock (0600, the controller's), measuring itself, this
  // launcher (with the release it runs under) and the controller as its DICE layers,
  // in development mode without a release. Dies with the launcher (PDEATHSIG).
  Result<void, LauncherError> start_rot();
  void stop_rot();
  // The write guard (lib/guard): azote-rot's state directory (its entries writable by its
  // uid alone) and, under a release manifest, every binary of the release, the manifest
  // and the release key (writable by nobody), for as long as this launcher runs.
  Result<void, LauncherError> start_guard();
  void guard_ready();  // refusals reported: logged, kept for the controller's "guard"
  void rehash();       // under a manifest: the protected binaries still match it?
  launch::Json guard_report();
  void adopt_existing();
  void reap();
  void serve_client(int fd, bool test);
  // A null reply: deferred (`defer` given and the child started; finish_spawn() answers).
  launch::Json dispatch(const launch::Json& req, std::vector<UniqueFd>* fds, bool from_test_socket,
                        std::optional<ReplyTo> defer);
  launch::Json spawn(const launch::SpawnRequest& r, std::vector<UniqueFd>* fds, std::optional<ReplyTo> defer);
  void finish_spawn(int key);
  launch::Json complete(Starting& st, std::vector<UniqueFd>* fds);
  void forget_replies_to(int fd);  // its socket is closing: a descriptor number soon reused
  void send_reply(int fd, const launch::Json& seq, launch::Json reply, const std::vector<UniqueFd>& fds);
  launch::Json spawn_probe(const launch::SpawnRequest& r, std::vector<UniqueFd>* fds);
  launch::Json signal(const launch::Json& req);
  launch::Json status(const launch::Json& req);
  launch::Json release(const launch::Json& req);
  launch::Json release_fabric();  // "release" of "fabric": the host's fabric process
  // Kills what is left in the cgroup leaf (waiting up to 1 s for it to go) and removes it
  // (retrying up to 1 s: an adopted process's zombie holds it until init reaps it); false
  // if the leaf stayed.
  bool kill_and_remove(const std::string& leaf);
  // Empties `name` (a directory of sockets beneath `parent`, never followed if a symlink)
  // and removes it.
  static void remove_socket_dir(int parent, const char* name);
  launch::Json describe();
  // A path beneath the state directory, opened without following symlinks.
  Result<UniqueFd, LauncherError> open_beneath(const std::string& path, int flags, mode_t mode = 0600);
  Result<UniqueFd, LauncherError> listen_beneath(const std::string& path);
  // A directory beneath the state directory (relative path), opened without following
  // any symlink; ensure_dir() makes it if missing and sets its owner and mode on the
  // descriptor it returns.
  Result<UniqueFd, LauncherError> dir_beneath(const std::string& rel);
  Result<UniqueFd, LauncherError> ensure_dir(const std::string& rel, uid_t uid, gid_t gid, mode_t mode);
  uint32_t id_of(launch::Role role, uint32_t slot) const;
  // `path` opened for reading and exec (by this descriptor, so what is checked is what
  // runs) and, under a release manifest, checked to be its `name` binary there. Under a
  // manifest the jailed processes' binaries come from sealed copies (seal_binary).
  Result<UniqueFd, LauncherError> open_binary(const std::string& name, const std::string& path) const;
  // Under a manifest: `path` copied into a memfd sealed against every write, then hashed
  // and checked: what every later spawn of `name` executes, unchanged whatever happens
  // to the file, and hashed once instead of at every launch.
  Result<void, LauncherError> seal_binary(const std::string& name, const std::string& path);
  // The running process this launcher started for (instance, role), if any.
  std::pair<const char*, const std::string*> binary_of(launch::Role r) const;
  const Child* find(const std::string& instance, launch::Role role) const;

  Options o_;
  std::optional<release::Manifest> manifest_;  // verified launch; nullopt: development mode
  std::string manifest_text_;                   // the manifest file's text as verified at start
  std::string release_key_sha384_;              // under a manifest: SHA-384 (hex) of the release key's DER
  std::map<std::string, UniqueFd> sealed_;     // under a manifest: name -> sealed, checked memfd
  std::map<std::string, std::string> refused_;  // under a manifest: name -> why it may not run
  UniqueFd state_fd_;
  std::string host_name_;  // azote-<hex>: the cgroup tree's name
  std::optional<sandbox::CgroupTree> cgroups_;
  UniqueFd epoll_, signal_fd_, ctl_sock_, test_listen_;
  std::vector<UniqueFd> test_clients_;
  std::unique_ptr<guard::WriteGuard> guard_;
  std::string guard_why_;  // why there is no guard
  std::vector<launch::Json> guard_events_;  // since the controller last asked (bounded)
  uint64_t guard_denials_ = 0, guard_mismatches_ = 0, guard_seen_ = 0;
  std::map<std::string, std::string> guarded_binaries_;  // path -> release name (re-hashed)
  std::map<std::string, std::string> rehash_seen_;       // path -> the mismatch last reported ("" none)
  std::optional<std::chrono::steady_clock::time_point> rehash_at_;
  pid_t rot_pid_ = 0;
  // azote-rot's socket for the TPM cards: <state>/.launcher/rot-tpm.sock (a directory of
  // root's, 0700; reached through its descriptor), kept across azote-rot restarts.
  UniqueFd launcher_dir_, rot_tpm_listen_;
  // A connection to azote-rot's TPM socket bound to `instance` (for its TPM card), or
  // an error (the card then runs without attestation).
  Result<UniqueFd, LauncherError> rot_card_connection(const std::string& instance, bool nsm, bool debug);
  std::optional<std::chrono::steady_clock::time_point> rot_restart_at_;
  pid_t controller_pid_ = 0;
  UniqueFd controller_pidfd_;
  int controller_status_ = 0;
  bool stopping_ = false;
  std::chrono::milliseconds restart_delay_{500};
  std::optional<std::chrono::steady_clock::time_point> restart_at_;
  std::map<pid_t, Child> children_;
  std::map<pid_t, int> exited_;  // recent exit statuses (bounded)
  std::map<int, Starting> starting_;  // by the outcome pipe's descriptor
  // The ENI directories (net/<eni>) made for each instance's spawns: removed at its release.
  std::map<std::string, std::set<std::string>> enis_;
};

}  // namespace azote::launcher
