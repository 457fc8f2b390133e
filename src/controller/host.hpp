// The host: every instance, volume and image this controller owns, its VPC (one
// default VPC and subnet, security groups, one primary ENI per instance), the
// processes that realise them (per instance one azote-hv, one azote-card-blk holding
// only that instance's volumes and keys, and one azote-card-net serving only its ENI,
// which knows the other instances' ENIs as neighbours reached through their inboxes),
// all started in their jails by the privileged launcher (Processes), and the
// lifecycle in Nitro's order — an
// empty shell (azote-hv with memory and parked vCPUs), the cards set up (volumes, then
// the ENI added), the channels connected (devices attached), then the vCPUs released.
//
// Calls validate, change the in-memory records and write them to SQLite before they
// return; the slow work (processes, sockets) runs on worker threads, one job at a time
// per instance. A supervisor thread watches every process through pidfds: an hv that
// dies stops its instance with a reason, a card that dies is restarted and its volumes
// (block card) or its VPC, security groups, ENI and neighbours (network card) re-added; the
// hypervisors reconnect by themselves. A controller restart re-adopts live processes
// and reports the ones that died meanwhile. Every security group change is pushed to
// every network card at once (set-security-group-rules).
#pragma once

#include <atomic>
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
#include "vpc_model/model.hpp"
#include "controller/processes.hpp"
#include "controller/store.hpp"
#include "control/control.hpp"
#include "pki/pki.hpp"

namespace azote::controller {

using namespace vpc_model;  // the VPC as EC2 models it (lib/vpc_model)

struct HostOptions {
  std::string state_dir;
  std::string card_net_bin;  // checked for existence only (the launcher runs it)
  uint32_t uid_base = 0;     // the launcher's: an adopted hv's uid tells its slot
  // cpusets (lists such as "0-3"): the cards' own cores and the guests' (vCPU threads);
  // empty: no restriction.
  std::string card_cpus, guest_cpus;
  uint32_t test_launch_delay_ms = 0;  // tests only (--test-launch-delay)
  std::string region = "local-1";           // DNS: ip-a-b-c-d.<region>.compute.internal; zone <region>a
  std::string underlay;                     // "IPV4:PORT": the fabric process's socket (a region host)
  std::string vpc_cidr = "10.0.0.0/16";     // the default VPC, made once (the stored one wins later)
  std::string subnet_cidr = "10.0.1.0/24";  // its default subnet
  uint32_t capacity_vcpus = 0;      // 0: 8 per guest CPU (burstable types overcommit)
  // vCPUs of dedicated (non-burstable) types per guest CPU: 1 (EC2 sells them 1:1).
  uint32_t dedicated_per_cpu = 1;
  uint32_t guest_cpu_count = 0;     // CPUs for guests (all of them without a card split)
  uint64_t capacity_memory_mib = 0; // 0: 80% of MemTotal
  bool stop_on_exit = false;        // shutdown(): stop instances and the card too
  // Host sockets (<state>/host/NAME) a parent reaches as vsock CID 2 PORT (its vsock card).
  std::vector<std::pair<uint32_t, std::string>> enclave_host_ports;
};

struct RunRequest {
  std::string image_id, instance_type, user_data, client_token, root_volume_type;
  uint32_t count = 1, root_volume_size_gib = 0;
  Tags tags;
  std::vector<std::string> security_group_ids;  // default: the VPC's "default" group
  std::string subnet_id;                        // default: the default subnet
  std::string private_ip;                       // default: the lowest free address (one instance only)
  std::string http_tokens;                      // "optional" (default) or "required"
  bool no_network = false;                      // no network interface at all
  bool enclave_enabled = false;                 // enclaves may be carved from it
  uint32_t enclave_cpu_count = 0;               // their pool (0: the default; see enclave_pool)
  uint64_t enclave_memory_mib = 0;
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
  std::string tpm_support;  // "v2.0" or empty
};

// Enclaves (host_enclaves.cpp): nitro-cli's run-enclave, describe-enclaves,
// terminate-enclave and console, on a parent instance launched with enclave support.
struct EnclaveRequest {
  std::string instance_id;  // the parent
  std::string eif;          // the image's bytes
  std::string name;         // default: the image's ImageName
  uint32_t cpu_count = 0;
  uint32_t memory_mib = 0;
  uint64_t cid = 0;         // 0: chosen
  bool debug = false;
};
struct EnclaveView {
  std::string id, name, instance_id, state, flags, image_name, image_version;
  int64_t pid = 0;
  uint64_t cid = 0;
  uint32_t cpus = 0;
  uint64_t memory_mib = 0;
  std::map<std::string, std::string> measurements;  // HashAlgorithm, PCR0, PCR1, PCR2[, PCR8]
};

class Host {
 public:
  static ApiResult<std::unique_ptr<Host>> open(const HostOptions& o, const pki::HostPki& pki, Processes& procs);
  ~Host();

  ApiResult<RunResult> run_instances(const RunRequest& r);
  ApiResult<std::vector<InstanceRec>> describe_instances(const std::vector<std::string>& ids);
  ApiResult<std::vector<StateChange>> stop_instances(const std::vector<std::string>& ids, bool force);
  ApiResult<std::vector<StateChange>> start_instances(const std::vector<std::string>& ids);
  ApiResult<std::vector<StateChange>> reboot_instances(const std::vector<std::string>& ids);
  ApiResult<std::vector<StateChange>> terminate_instances(const std::vector<std::string>& ids);
  ApiResult<std::string> console_output(const std::string& id);
  // An enclave from its parent's budget: checked (the image whole, the limits of
  // nitro-cli, the parent's vCPUs and memory), then its NSM card and its azote-hv
  // started in a jail of its own, under a uid of its own, with no other device.
  ApiResult<EnclaveView> run_enclave(const EnclaveRequest& r);
  ApiResult<std::vector<EnclaveView>> describe_enclaves(const std::string& instance_id);
  ApiResult<EnclaveView> terminate_enclave(const std::string& enclave_id);
  // A debug-mode enclave's console; anyone else's is refused (nobody reads it).
  ApiResult<std::string> enclave_console(const std::string& enclave_id);

  ApiResult<ImageRec> register_image(const ImageRequest& r);
  ApiResult<std::vector<ImageRec>> describe_images(const std::vector<std::string>& ids);

  ApiResult<VolumeRec> create_volume(const VolumeRequest& r);
  ApiResult<VolumeRec> attach_volume(const std::string& volume_id, const std::string& instance_id, std::string device);
  ApiResult<VolumeRec> detach_volume(const std::string& volume_id, bool force);
  ApiResult<void> delete_volume(const std::string& volume_id);
  ApiResult<std::vector<VolumeRec>> describe_volumes(const std::vector<std::string>& ids);

  ApiResult<std::vector<VpcRec>> describe_vpcs(const std::vector<std::string>& ids);
  // azote-region's network (ApplyRegionNetwork): its VPCs, subnets and groups replace the
  // ones it pushed before, beside the host's own; saved, then given to running cards.
  // Refused: an older generation (IncorrectState), ids that are the host's own or that do
  // not hold together (InvalidParameterValue), taking away a subnet or group an ENI here
  // uses (DependencyViolation). The generation the host holds afterwards.
  ApiResult<uint64_t> apply_region_network(RegionNetworkRec n);
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
  // azote-rot's description (<state>/rot.sock, started by the launcher): its layers and
  // certificate chain. Unsupported when it does not answer.
  ApiResult<control::Json> describe_root_of_trust();
  // The launcher's description (what runs, the release) and the write guard's last
  // state, for describe-host-attestation; empty objects where the launcher does not answer.
  struct HostView {
    control::Json launcher = control::Json::object();
    control::Json guard = control::Json::object();
  };
  HostView launcher_view();
  // Collects the write guard's refusals from the launcher into the audit log (every
  // liveness period).
  void poll_write_guard();
  struct Attestation {
    std::string document;                  // COSE_Sign1 bytes
    std::map<uint32_t, std::string> pcrs;  // hex, as in the document
    std::string mode;
  };
  // A running instance's attestation document: PCRs 0-2 from what its azote-hv loaded
  // ("describe" measurements), 4 from its id, the others of 0-15 zero; signed by azote-rot.
  ApiResult<Attestation> instance_attestation(const std::string& id, const std::string& nonce,
                                              const std::string& user_data, const std::string& public_key);

  // Stops workers and the supervisor. With stop_on_exit, stops every instance and the
  // card first; otherwise they keep running for the next controller to adopt.
  void shutdown();
  // Where events that are not API calls go (the audit log): a process killed by its
  // seccomp filter (process.seccomp), a launch that failed (instance.launch-failed, with
  // its reason). Set once, before any instance runs.
  using EventSink = std::function<void(const std::string& method, const std::vector<std::string>& resources,
                                       const std::string& error)>;
  void set_event_sink(EventSink sink) {
    std::lock_guard lock(mu_);
    events_ = std::move(sink);
  }

  // When the launcher is gone (its socket hangs up) nothing can be started or stopped:
  // the supervisor ends the process at once (status 75) and a new controller, with a
  // new launcher, adopts what runs.

 private:
  struct Card;
  // Runtime of one instance beyond its record.
  struct Runtime {
    std::optional<Proc> hv;
    std::unique_ptr<Card> blk;    // this instance's block card (created at its first launch)
    std::unique_ptr<Card> net;    // this instance's network card (created at its first launch with an ENI)
    std::unique_ptr<Card> tpm;    // this instance's TPM card (an image with TPM support)
    // An enclave-enabled parent's vsock card (its own vsock device, CID 3, and its
    // enclaves'): started with the parent, ended with it, not restarted.
    std::optional<Proc> vsock;
    std::vector<Card*> cards() const;  // those that exist
    int slot = -1;                // its uid/gid slot while it has processes
    bool busy = false;            // a job owns the instance
    bool expect_exit = false;     // we asked the hv to stop
    bool terminate_requested = false;
    int exit_status = -1;         // set by the supervisor when hv ends
    bool exited = false;
    bool first_boot = false;      // a failed launch terminates (RunInstances) rather than stops
  };
  enum class Job { kLaunch, kStop, kStopForce, kReboot, kTerminate, kCleanup };
  // One enclave (mu_): what describe shows, and its processes.
  struct EnclaveRt {
    EnclaveView view;
    bool debug = false;
    int slot = -1;
    std::optional<Proc> hv, card;
  };
  std::map<std::string, EnclaveRt> enclaves_;  // mu_, by enclave id
  // Ends an enclave: its hv, its card, whatever is left of its jail; its record and
  // slot go. No lock held on entry.
  void end_enclave(const std::string& enclave_id);
  // Every enclave of an instance (its hv stops: enclaves die with their parent).
  void end_enclaves_of(const std::string& instance_id);
  // Enclaves whose hv has exited are ended (mu_ not held).
  void reap_enclaves();
  // The enclaves' pool of an instance about to be launched (none without enclave
  // support): the request's sizes or the defaults, checked against its type.
  struct EnclavePool {
    uint32_t cpus = 0;
    uint64_t memory_mib = 0;
  };
  static ApiResult<EnclavePool> enclave_pool(const InstanceType& type, const RunRequest& r);
  // An enclave-enabled parent's launch: its vsock card started (no lock held).
  ApiResult<void> start_parent_vsock(const std::string& instance_id, uint32_t slot);
  // Where a parent's vsock card listens (its control socket, on the host).
  std::string vsock_control(const std::string& instance_id) const;

  // One supervised card process: an instance's azote-card-blk, azote-card-net or
  // azote-card-tpm.
  struct Card {
    Card(std::string n, std::string l, std::string i) : name(std::move(n)), label(std::move(l)), instance(std::move(i)) {}
    const std::string name;      // "blk/<instance>", "net/<instance>" or "tpm/<instance>": its record in the store
    const std::string label;     // "block card of i-...", "network card of i-..."
    const std::string instance;
    bool is_net() const { return name.rfind("net/", 0) == 0; }
    bool is_tpm() const { return name.rfind("tpm/", 0) == 0; }
    const char* binary() const { return is_net() ? "azote-card-net" : is_tpm() ? "azote-card-tpm" : "azote-card-blk"; }
    std::optional<Proc> proc;            // mu_
    // Block card: the descriptor number each volume's file (and an import's content)
    // has in the card, as the launcher placed them (mu_).
    std::map<std::string, int> file_fd;
    bool expect_exit = false;            // mu_
    bool readd = false;                  // mu_: replaced outside the supervisor; re-add its objects
    bool model_ok = false;               // network card, net_mu_: it has the VPC, every group, its ENI
    uint64_t restarts = 0;               // mu_
    int missed_pings = 0;                // liveness thread only
    // Deaths in the last minute, for the restart backoff (supervisor thread only).
    std::deque<std::chrono::steady_clock::time_point> deaths;
    std::optional<std::chrono::steady_clock::time_point> restart_at;
    std::mutex start_mu;  // one (re)start at a time
  };

  Host(const HostOptions& o, const pki::HostPki& pki, Store store, Processes& procs);
  ApiResult<void> recover();  // after open: adopt or report every process
  ApiResult<void> ensure_default_network();
  void worker_loop();
  void supervisor_loop();
  // Starts the card again and re-adds what it serves to its live instance: every volume
  // (block card), or the VPC, the groups, the ENI and its neighbours (network card).
  void restart_card(Card& c);
  void enqueue(const std::string& id, Job job);
  void run_job(const std::string& id, Job job);

  // Job steps (no lock held on entry).
  ApiResult<void> launch(const std::string& id);
  void stop_hv(const std::string& id, bool force);
  void finish_terminate(const std::string& id);
  // Starts the card unless it runs; *started tells whether a new process was made. A
  // block card gets the files of `vols` (its instance's volumes).
  ApiResult<void> ensure_card(Card& c, bool* started = nullptr, const std::vector<VolumeRec>& vols = {});
  // A launch's TPM card: started (or found running) and opened on the instance's state
  // with its key (made at the first launch).
  ApiResult<void> start_tpm_card(Card& c);
  // Where the TPM card serves the TPM, in the jails of the card and the hypervisor.
  static constexpr const char* kTpmSocket = "/run/azote/tpm.sock";
  // A launch's block card: started (or found running) and given the instance's volumes.
  ApiResult<void> start_instance_card(Card& blk, const std::vector<VolumeRec>& vols, const InstanceType* type);
  ApiResult<void> card_add(Card& c, const VolumeRec& v, const InstanceType* type);
  // Stops a card of an instance (a block card's volumes flushed by its exit) and forgets it.
  void stop_card(Card* c);
  void stop_blk_card(const std::string& instance_id);
  std::string card_path(const Card& c, const char* suffix) const;
  // The jailed processes' view of their sockets (the same path in the hv's jail and
  // the card's): /run/azote/<volume>.sock, /run/azote-net/<eni>/eni.sock.
  static std::string volume_socket(const std::string& volume_id);
  // The lowest slot no other instance with processes holds (mu_ held).
  int free_slot() const;
  launch::Limits card_limits() const;
  // The instance's network card running (started without net_mu_: launches start their
  // cards at once), then, with `net_lock` (on net_mu_) taken, the VPC model (VPCs,
  // groups) pushed unless it has it. On success net_lock is held.
  ApiResult<void> ensure_net(Card& c, std::unique_lock<std::mutex>& net_lock);
  ApiResult<void> net_push_model(Card& c);
  // The ENI of `instance_id` (removed first if the card has it), with its limits,
  // metadata and inbox; net_mu_ held.
  ApiResult<void> net_add_eni(Card& c, const std::string& instance_id);
  // The card's neighbours made exactly the other running instances' ENIs; net_mu_ held.
  void net_sync_neighbours(Card& c);
  // Every other network card learns (or forgets) this instance's ENI; net_mu_ held.
  void net_announce(const std::string& instance_id, bool present);
  // Stops the instance's network card; the other cards forget its ENI.
  void net_stop(const std::string& instance_id);
  // Pushes one group's rules to every network card (net_mu_ taken here); a deleted
  // group is emptied.
  void net_push_group(const std::string& group_id);
  // The network cards running now (mu_ held).
  std::vector<Card*> net_cards();
  // The neighbour entry of an instance's ENI for the other cards (mu_ held).
  std::optional<control::Json> neighbour_of(const std::string& instance_id);
  static std::string eni_socket(const std::string& eni_id);
  static std::string eni_inbox(const std::string& eni_id);
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
  uint32_t used_dedicated_vcpus() const;
  uint32_t dedicated_capacity() const { return opt_.guest_cpu_count * opt_.dedicated_per_cpu; }

 public:
  // What this host sells in all (its options, or the defaults Host::open worked out).
  uint32_t capacity_vcpus() const { return opt_.capacity_vcpus; }
  uint64_t capacity_memory_mib() const { return opt_.capacity_memory_mib; }

 private:
  // Why `want` more vCPUs and `mem` MiB (of which `dedicated` vCPUs of dedicated types)
  // do not fit, or nullopt if they do (mu_ held).
  std::optional<std::string> no_room(uint32_t want, uint32_t dedicated, uint64_t mem) const;
  uint64_t used_memory_mib() const;
  ApiResult<VolumeRec> new_volume(const VolumeSpec& spec, bool encrypted, const Tags& tags, const std::string& token);
  // The record first (so a failure leaves the volume whole), then the file and key.
  ApiResult<void> delete_volume_files(VolumeRec& v);

  HostOptions opt_;
  const pki::HostPki& pki_;
  Processes& procs_;
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
  RegionNetworkRec region_net_;         // mu_: what azote-region pushed last (its entries are in the maps above too)
  // The host's fabric process (src/cards/net/DESIGN.md "The fabric process": the
  // underlay, the peers' keys, the mappings, the host's ENIs as neighbours; no guest
  // memory), run while the region gives this host a fabric id and --underlay is set.
  std::optional<Proc> fabric_;                      // mu_
  bool fabric_died_ = false;                        // mu_: seen by the supervisor; started again
  uint32_t fabric_running_id_ = 0;                  // net_mu_: the host id it was started with
  std::map<uint32_t, std::string> fabric_peers_;    // net_mu_: peer id -> "address|key" it was given
  std::set<std::string> fabric_maps_;               // net_mu_: "vpc|ip|host" it was given
  // Starts, reconfigures or stops the fabric process to match region_net_. net_mu_ not
  // held on entry, nor mu_.
  void sync_fabric();
  std::string fabric_ctl() const { return opt_.state_dir + "/fabric.ctl"; }
  bool fabric_alive();                              // mu_ not held
  void stop_fabric();                               // mu_ not held: ends and releases it
  std::map<std::string, uint64_t> card_restarts_;  // "blk", "net" (every instance's)
  std::deque<std::pair<std::string, Job>> jobs_;
  bool stopping_ = false;         // the supervisor ends
  bool workers_stop_ = false;     // the workers end (first, at shutdown)
  std::vector<std::thread> workers_;
  std::thread supervisor_;
  // Liveness: a card that still runs but no longer answers its control socket (a hung
  // control loop) is killed after kLivenessStrikes missed pings, and so restarted like
  // a card that died.
  std::thread liveness_;
  void liveness_loop();
  // A process of `instance` (empty: the host's) died of SIGSYS: its report line goes to
  // the log and, as a "process.seccomp" record, to the audit log. mu_ held.
  void report_seccomp(const std::string& instance, const std::string& process, const std::string& line);
  EventSink events_;  // mu_
  control::Json guard_state_;  // mu_: the launcher's last "guard" answer, without its events
  UniqueFd epoll_, wake_;
  // Every request to a network card, so changes reach them in the order they were
  // made (a group change never overtakes a full model push, a neighbour is never
  // announced after it left). Taken before mu_, never while mu_ is held.
  std::mutex net_mu_;
};

}  // namespace azote::controller
