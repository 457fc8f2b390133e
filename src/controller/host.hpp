// The host: every instance, volume and image this controller owns, the processes that
// realise them (one azote-hv per instance, one azote-card-blk for all volumes), and
// the lifecycle in Nitro's order — an empty shell (azote-hv with memory and parked
// vCPUs), the card set up (volumes added), the channels connected (devices attached),
// then the vCPUs released.
//
// Calls validate, change the in-memory records and write them to SQLite before they
// return; the slow work (processes, sockets) runs on worker threads, one job at a time
// per instance. A supervisor thread watches every process through pidfds: an hv that
// dies stops its instance with a reason, a card that dies is restarted and its volumes
// re-added (the hypervisors reconnect by themselves). A controller restart re-adopts
// live processes and reports the ones that died meanwhile.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "controller/catalog.hpp"
#include "controller/processes.hpp"
#include "controller/store.hpp"
#include "pki/pki.hpp"

namespace azote::controller {

// An EC2-style API error: code (e.g. "InvalidParameterValue"), the gRPC category it
// maps to, and one sentence.
struct ApiError {
  enum class Kind { kInvalid, kNotFound, kConflict, kCapacity, kUnsupported, kInternal, kDenied, kUnauthenticated };
  Kind kind = Kind::kInternal;
  std::string code;
  std::string sentence;
  std::string message() const { return code + ": " + sentence; }
};
template <class T>
using ApiResult = Result<T, ApiError>;
Unexpected<ApiError> api_error(ApiError::Kind kind, std::string code, std::string sentence);

struct HostOptions {
  std::string state_dir;
  std::string hv_bin, card_blk_bin;
  uint32_t capacity_vcpus = 0;      // 0: 8 per host CPU
  uint64_t capacity_memory_mib = 0; // 0: 80% of MemTotal
  bool stop_on_exit = false;        // shutdown(): stop instances and the card too
};

struct RunRequest {
  std::string image_id, instance_type, user_data, client_token, root_volume_type;
  uint32_t count = 1, root_volume_size_gib = 0;
  Tags tags;
};
struct RunResult {
  std::string reservation_id;
  std::vector<InstanceRec> instances;
};
struct StateChange {
  std::string id, previous, current;
};
struct VolumeRequest {
  VolumeSpec spec;
  bool iops_given = false, throughput_given = false;
  std::optional<bool> encrypted;
  Tags tags;
  std::string client_token;
};
struct ImageRequest {
  std::string name, description, kernel, initrd, cmdline, root_content;
  uint32_t root_volume_size_gib = 0;
};

class Host {
 public:
  static ApiResult<std::unique_ptr<Host>> open(const HostOptions& o, const pki::HostPki& pki);
  ~Host();

  ApiResult<RunResult> run_instances(const RunRequest& r);
  ApiResult<std::vector<InstanceRec>> describe_instances(const std::vector<std::string>& ids);
  ApiResult<std::vector<StateChange>> stop_instances(const std::vector<std::string>& ids, bool force);
  ApiResult<std::vector<StateChange>> start_instances(const std::vector<std::string>& ids);
  ApiResult<std::vector<StateChange>> reboot_instances(const std::vector<std::string>& ids);
  ApiResult<std::vector<StateChange>> terminate_instances(const std::vector<std::string>& ids);
  ApiResult<std::string> console_output(const std::string& id);

  ApiResult<ImageRec> register_image(const ImageRequest& r);
  ApiResult<std::vector<ImageRec>> describe_images(const std::vector<std::string>& ids);

  ApiResult<VolumeRec> create_volume(const VolumeRequest& r);
  ApiResult<VolumeRec> attach_volume(const std::string& volume_id, const std::string& instance_id, std::string device);
  ApiResult<VolumeRec> detach_volume(const std::string& volume_id, bool force);
  ApiResult<void> delete_volume(const std::string& volume_id);
  ApiResult<std::vector<VolumeRec>> describe_volumes(const std::vector<std::string>& ids);

  // Prometheus text: instances by state, capacity, the card's own counters.
  std::string metrics_text();

  // Stops workers and the supervisor. With stop_on_exit, stops every instance and the
  // card first; otherwise they keep running for the next controller to adopt.
  void shutdown();

 private:
  // Runtime of one instance beyond its record.
  struct Runtime {
    std::optional<Proc> hv;
    bool busy = false;            // a job owns the instance
    bool expect_exit = false;     // we asked the hv to stop
    bool terminate_requested = false;
    int exit_status = -1;         // set by the supervisor when hv ends
    bool exited = false;
    bool first_boot = false;      // a failed launch terminates (RunInstances) rather than stops
  };
  enum class Job { kLaunch, kStop, kStopForce, kReboot, kTerminate, kCleanup };

  Host(const HostOptions& o, const pki::HostPki& pki, Store store);
  ApiResult<void> recover();  // after open: adopt or report every process
  void worker_loop();
  void supervisor_loop();
  // Starts the card again and re-adds every volume of a live instance.
  void restart_card();
  void enqueue(const std::string& id, Job job);
  void run_job(const std::string& id, Job job);

  // Job steps (no lock held on entry).
  ApiResult<void> launch(const std::string& id);
  void stop_hv(const std::string& id, bool force);
  void finish_terminate(const std::string& id);
  ApiResult<void> ensure_card();
  ApiResult<void> card_add(const VolumeRec& v, const InstanceType* type);
  void card_remove(const std::string& volume_id);
  std::string volume_socket(const std::string& volume_id) const;
  std::string instance_dir(const std::string& id) const;
  void watch(int pidfd);

  // With mu_ held.
  void set_state(InstanceRec& r, std::string_view state, const std::string& reason_code = "",
                 const std::string& reason_message = "");
  void persist(const InstanceRec& r);
  void persist(const VolumeRec& r);
  ApiResult<InstanceRec*> find_instance(const std::string& id);
  ApiResult<VolumeRec*> find_volume(const std::string& id);
  std::vector<VolumeRec*> volumes_of(const std::string& instance_id);
  uint32_t used_vcpus() const;
  uint64_t used_memory_mib() const;
  ApiResult<VolumeRec> new_volume(const VolumeSpec& spec, bool encrypted, const Tags& tags, const std::string& token);
  // The record first (so a failure leaves the volume whole), then the file and key.
  ApiResult<void> delete_volume_files(VolumeRec& v);

  HostOptions opt_;
  const pki::HostPki& pki_;
  std::mutex mu_;  // guards everything below
  std::condition_variable cv_;
  Store store_;
  std::map<std::string, InstanceRec> instances_;
  std::map<std::string, Runtime> rt_;
  std::map<std::string, VolumeRec> volumes_;
  std::map<std::string, ImageRec> images_;
  std::map<std::string, TokenRec> tokens_;
  std::optional<Proc> card_;
  bool card_expect_exit_ = false;
  uint64_t card_restarts_ = 0;
  // Deaths in the last minute, for the restart backoff (supervisor thread only).
  std::deque<std::chrono::steady_clock::time_point> card_deaths_;
  std::optional<std::chrono::steady_clock::time_point> card_restart_at_;
  std::deque<std::pair<std::string, Job>> jobs_;
  bool stopping_ = false;         // the supervisor ends
  bool workers_stop_ = false;     // the workers end (first, at shutdown)
  bool card_readd_ = false;       // the card was replaced outside the supervisor: re-add volumes
  std::vector<std::thread> workers_;
  std::thread supervisor_;
  UniqueFd epoll_, wake_;
  std::mutex card_mu_;  // one card (re)start at a time
};

}  // namespace azote::controller
