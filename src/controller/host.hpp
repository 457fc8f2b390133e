// The host: every instance, volume and image this controller owns, its VPC (one
// default VPC and subnet, security groups, one primary ENI per instance), the
// processes that realise them (one azote-hv per instance, one azote-card-blk for all
// volumes, one azote-card-net for all ENIs), and the lifecycle in Nitro's order — an
// empty shell (azote-hv with memory and parked vCPUs), the cards set up (volumes, then
// the ENI added), the channels connected (devices attached), then the vCPUs released.
//
// Calls validate, change the in-memory records and write them to SQLite before they
// return; the slow work (processes, sockets) runs on worker threads, one job at a time
// per instance. A supervisor thread watches every process through pidfds: an hv that
// dies stops its instance with a reason, a card that dies is restarted and its volumes
// (block card) or its VPC, security groups and ENIs (network card) re-added; the
// hypervisors reconnect by themselves. A controller restart re-adopts live processes
// and reports the ones that died meanwhile. Every security group change is pushed to
// the network card at once (set-security-group-rules).
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
#include "controller/errors.hpp"
#include "controller/network.hpp"
#include "controller/processes.hpp"
#include "controller/store.hpp"
#include "control/control.hpp"
#include "pki/pki.hpp"

namespace azote::controller {

struct HostOptions {
  std::string state_dir;
  std::string hv_bin, card_blk_bin, card_net_bin;
  std::string region = "local-1";           // DNS: ip-a-b-c-d.<region>.compute.internal; zone <region>a
  std::string vpc_cidr = "10.0.0.0/16";     // the default VPC, made once (the stored one wins later)
  std::string subnet_cidr = "10.0.1.0/24";  // its default subnet
  uint32_t capacity_vcpus = 0;      // 0: 8 per host CPU
  uint64_t capacity_memory_mib = 0; // 0: 80% of MemTotal
  bool stop_on_exit = false;        // shutdown(): stop instances and the card too
};

struct RunRequest {
  std::string image_id, instance_type, user_data, client_token, root_volume_type;
  uint32_t count = 1, root_volume_size_gib = 0;
  Tags tags;
  std::vector<std::string> security_group_ids;  // default: the VPC's "default" group
  std::string subnet_id;                        // default: the default subnet
  std::string http_tokens;                      // "optional" (default) or "required"
  bool no_network = false;                      // no network interface at all
};
struct SubnetView {
  SubnetRec rec;
  uint32_t available = 0;  // usable addresses not held by an ENI
};
// What DescribeInstances shows of the network: the ENI of each instance that has one,
// and the names of the groups.
struct NetworkView {
  std::map<std::string, EniRec> eni_of;             // by instance id
  std::map<std::string, std::string> group_names;   // by group id
  std::string region;
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

  ApiResult<std::vector<VpcRec>> describe_vpcs(const std::vector<std::string>& ids);
  ApiResult<std::vector<SubnetView>> describe_subnets(const std::vector<std::string>& ids);
  ApiResult<SecurityGroupRec> create_security_group(const std::string& name, const std::string& description,
                                                    const std::string& vpc_id);
  ApiResult<void> delete_security_group(const std::string& id);
  // Authorize (add) or revoke (remove) rules of one direction: all of them or none.
  ApiResult<SecurityGroupRec> change_rules(const std::string& group_id, bool ingress, bool authorize,
                                           const std::vector<Permission>& perms);
  ApiResult<std::vector<SecurityGroupRec>> describe_security_groups(const std::vector<std::string>& ids);
  NetworkView network_view();

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

  // One supervised card process (azote-card-blk, azote-card-net).
  struct Card {
    explicit Card(std::string n, std::string l) : name(std::move(n)), label(std::move(l)) {}
    const std::string name;   // "blk", "net": card-NAME.ctl, .metrics, .log in the state dir
    const std::string label;  // "block card", "network card"
    std::optional<Proc> proc;            // mu_
    bool expect_exit = false;            // mu_
    bool readd = false;                  // mu_: replaced outside the supervisor; re-add its objects
    uint64_t restarts = 0;               // mu_
    // Deaths in the last minute, for the restart backoff (supervisor thread only).
    std::deque<std::chrono::steady_clock::time_point> deaths;
    std::optional<std::chrono::steady_clock::time_point> restart_at;
    std::mutex start_mu;  // one (re)start at a time
  };

  Host(const HostOptions& o, const pki::HostPki& pki, Store store);
  ApiResult<void> recover();  // after open: adopt or report every process
  ApiResult<void> ensure_default_network();
  void worker_loop();
  void supervisor_loop();
  // Starts the card again and re-adds what it serves to live instances: every volume
  // (block card), or the VPC, the groups and every ENI (network card).
  void restart_card(Card& c);
  void enqueue(const std::string& id, Job job);
  void run_job(const std::string& id, Job job);

  // Job steps (no lock held on entry).
  ApiResult<void> launch(const std::string& id);
  void stop_hv(const std::string& id, bool force);
  void finish_terminate(const std::string& id);
  // Starts the card unless it runs; *started tells whether a new process was made.
  ApiResult<void> ensure_card(Card& c, bool* started = nullptr);
  ApiResult<void> card_add(const VolumeRec& v, const InstanceType* type);
  void card_remove(const std::string& volume_id);
  std::string volume_socket(const std::string& volume_id) const;
  std::string card_path(const Card& c, const char* suffix) const;
  // The network card (net_mu_ held): running, with the VPC model (VPCs, groups).
  ApiResult<void> ensure_net();
  ApiResult<void> net_push_model();
  // The ENI of `instance_id` (removed first if the card has it), with its limits and
  // metadata; net_mu_ held.
  ApiResult<void> net_add_eni(const std::string& instance_id);
  void net_remove_eni(const std::string& instance_id);
  // Pushes one group's rules (net_mu_ taken here); a deleted group is emptied.
  void net_push_group(const std::string& group_id);
  // After adopting a network card: the model again, ENIs of running instances added,
  // others removed.
  void net_reconcile();
  std::string eni_socket(const std::string& eni_id) const;
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
  EniRec* eni_of(const std::string& instance_id);
  std::optional<control::Json> eni_request(const std::string& instance_id);
  ApiResult<SecurityGroupRec*> find_group(const std::string& id);
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
  std::map<std::string, VpcRec> vpcs_;
  std::map<std::string, SubnetRec> subnets_;
  std::map<std::string, SecurityGroupRec> groups_;
  std::map<std::string, EniRec> enis_;  // by ENI id
  Card blk_{"blk", "block card"};
  Card net_{"net", "network card"};
  std::deque<std::pair<std::string, Job>> jobs_;
  bool stopping_ = false;         // the supervisor ends
  bool workers_stop_ = false;     // the workers end (first, at shutdown)
  std::vector<std::thread> workers_;
  std::thread supervisor_;
  UniqueFd epoll_, wake_;
  // Every request to the network card, so changes reach it in the order they were
  // made (a group change never overtakes a full model push). Taken before mu_, never
  // while mu_ is held.
  std::mutex net_mu_;
  bool net_model_ok_ = false;  // net_mu_: the running card has the VPC and every group
};

}  // namespace azote::controller
