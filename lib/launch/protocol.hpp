// The narrow request protocol between azote-controller (unprivileged) and
// azote-launcher (root, the only privileged process that stays): one JSON object per
// SOCK_SEQPACKET message, descriptors alongside with SCM_RIGHTS, one reply per request
// (echoing the request's "seq").
//
// The controller asks for a role and the files it needs; the launcher decides the rest
// (uid, binds, devices, cgroup, which binary), checks every path it opens lies beneath
// the state directory (openat2 RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS), refuses
// --seccomp=log, and never runs anything as root. See src/launcher/DESIGN.md.
//
//   {"op": "spawn", "role": "hv"|"card-blk"|"card-net"|"card-tpm"|"card-nsm"|"card-vsock"|"card-fabric"|"probe",
//    "instance": "i-..." (or an enclave "i-...-enc<16 hex>": its own jail, uid and cgroup, apart from its
//    parent's; card-fabric, the host's fabric process: "fabric", and only it),
//    "slot": N (ignored for card-fabric), "args": [...], "files": [{"name", "path", "access": "r"|"rw"|"append"}],
//    "listen": [{"name", "path"}], "output": PATH, "limits": {...}, "enis": [...],
//    "probe_as": ROLE, "enclave_debug": BOOL (card-nsm: its azote-rot binding's debug mode),
//    "underlay": "IPV4:PORT" (card-fabric only, and required there: the UDP address the launcher
//    binds in the host's network namespace and hands to the fabric process)}
//       -> {"ok": true, "pid", "starttime", "uid", "cgroup"} + the process's pidfd.
//       "{NAME}" in args becomes the descriptor number the file or socket NAME got.
//   {"op": "signal", "pid", "starttime", "signal"}  (only processes it started)
//   {"op": "status", "pid"} -> {"ok": true, "exited": bool, "status": N}
//   {"op": "release", "instance"}: kills what is left of the instance, removes its cgroups
//   {"op": "describe"} -> {"ok": true, "layout", "processes": [{pid, role, instance, uid, cgroup}],
//                          "rot": {pid, uid, cgroup} or null (azote-rot, started with the host)}
//   {"op": "guard"} -> {"ok": true, "active", "why", "protected": [paths], "denials_total",
//                       "changes_seen_total", "mismatches_total",
//                       "events": [{event, path, detail, time}]}: the
//                       write guard; the events are those since the last "guard" call
#pragma once

#include <netinet/in.h>
#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/error.hpp"
#include "base/unique_fd.hpp"

namespace azote::launch {

using Json = nlohmann::json;

enum class LaunchErrc { kSocket = 1, kProtocol, kRefused, kClosed };
using LaunchError = Error<LaunchErrc>;

inline constexpr size_t kMaxMessageBytes = 256 * 1024;
inline constexpr size_t kMaxFds = 16;

// kCardFabric: the host's fabric process, azote-card-net holding the fabric's keys and
// serving no ENI (src/cards/net/DESIGN.md "The fabric process"); one per host, its
// "instance" is kFabricInstance.
enum class Role { kHv, kCardBlk, kCardNet, kCardTpm, kCardNsm, kCardVsock, kCardFabric, kProbe };
const char* to_string(Role r);
std::optional<Role> parse_role(const std::string& s);

struct FileSpec {
  std::string name;    // "{name}" in args
  std::string path;    // beneath the state directory
  std::string access;  // "r", "rw", "append" (read-write, appending; created 0600 for the controller if missing)
};
struct ListenSpec {
  std::string name;
  std::string path;    // a Unix socket the launcher creates, mode 0600, owned by the controller
};
struct Limits {
  uint64_t memory_mib = 0;
  uint64_t pids = 0;
  uint32_t cpu_percent = 0;
  std::string cpus;
};

struct SpawnRequest {
  Role role = Role::kHv;
  std::string instance;      // the instance (i-...) the process serves, or a probe joins
  uint32_t slot = 0;         // the instance's slot: its uid/gid is base + kFirstInstanceId + slot
  std::vector<std::string> args;
  std::vector<FileSpec> files;
  std::vector<ListenSpec> listens;
  std::string output;        // stdout and stderr, appended; beneath the state directory
  Limits limits;
  std::vector<std::string> enis;  // hv, card-net: the ENIs whose directories it gets (hv: bound; card-net: its own)
  Role probe_as = Role::kHv;      // probe: whose jail it enters (the running process's)
  // card-nsm: the enclave was started in debug mode; its documents then carry zero PCRs
  // (azote-rot's binding says so, not the card).
  bool enclave_debug = false;
  // card-fabric only: "IPV4:PORT", the underlay address the launcher binds a UDP socket
  // to (in its own, the host's, network namespace) and hands to the fabric process.
  std::string underlay;
};
Json to_json(const SpawnRequest& r);
Result<SpawnRequest, LaunchError> spawn_request_from_json(const Json& j);

// The "instance" of the host's fabric process (Role::kCardFabric): not an instance id.
inline constexpr const char* kFabricInstance = "fabric";

// "IPV4:PORT" (dotted quad, port 1..65535) as the address to bind; an error naming the
// text otherwise.
Result<sockaddr_in, LaunchError> parse_underlay(const std::string& text);

// Identities: the controller is base + 0; instance slot s is base + kFirstInstanceId + s
// (uid and gid alike), for its hv and its cards. (base + 1 was the host-wide network
// card's, before one network card per instance; it is no longer given out.) base + 2 is
// azote-rot's, the host's root of trust, which the launcher starts at host start.
// base + 3 is the host's fabric process's (Role::kCardFabric): the uid the instances'
// cards are told for the relay (set-fabric-relay {"inbox", "uid"}).
inline constexpr uint32_t kControllerId = 0;
inline constexpr uint32_t kRotId = 2;
inline constexpr uint32_t kFabricId = 3;
inline constexpr uint32_t kFirstInstanceId = 16;
inline constexpr uint32_t kMaxSlots = 65536;

// One end of the launcher's socket (SOCK_SEQPACKET).
struct Message {
  Json body;
  std::vector<UniqueFd> fds;
};
Result<void, LaunchError> send_message(int fd, const Json& body, const std::vector<int>& fds = {});
// Waits at most `timeout` (negative: forever).
Result<Message, LaunchError> recv_message(int fd, std::chrono::milliseconds timeout);

// The controller's side: requests from any thread, several under way at once (each
// reply matched to its call by "seq").
class Client {
 public:
  explicit Client(UniqueFd fd) : fd_(std::move(fd)) {}
  // The reply, or kRefused with the launcher's sentence, kClosed when it is gone.
  Result<Message, LaunchError> call(const Json& request, std::chrono::milliseconds timeout = std::chrono::seconds(30));
  int fd() const { return fd_.get(); }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  UniqueFd fd_;
  uint64_t seq_ = 0;  // mu_: each request's "seq", echoed by its reply
  bool reading_ = false;                  // mu_: one caller reads for all
  std::set<uint64_t> waiting_;            // mu_: calls waiting for their reply
  std::map<uint64_t, Message> arrived_;   // mu_: replies read by another caller
  std::optional<LaunchError> broken_;     // mu_: the socket closed or spoke nonsense
};

}  // namespace azote::launch
