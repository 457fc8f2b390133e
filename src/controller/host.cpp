#include "controller/host.hpp"

#include <fcntl.h>
#include <signal.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/random.h>
#include <sys/sysinfo.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "attest/attest.hpp"
#include "controller/host_shared.hpp"
#include "base/hex.hpp"
#include "base/log.hpp"
#include "control/control.hpp"
#include "pki/files.hpp"
#include "pki/keywrap.hpp"
#include "sha256/sha256.hpp"
#include "vpc_policy/flow.hpp"

namespace azote::controller {
namespace {

using namespace host_shared;
namespace fs = std::filesystem;
using namespace std::chrono_literals;
using K = ApiError::Kind;

constexpr int kWorkers = 3;
constexpr uint64_t kTagWake = ~0ull;
constexpr uint64_t kTagLauncher = ~0ull - 1;
// What a card may use (the limits of its cgroup): the block card's io_uring rings and
// bounce buffers, the network card's queues and inboxes.
constexpr uint64_t kCardMemoryMib = 512;
constexpr uint64_t kCardPids = 64;
// A card is pinged every kLivenessPeriod; kLivenessStrikes pings in a row without an
// answer within kPingTimeout (a hung control loop: a card alive but serving nothing)
// and it is killed, then restarted by the supervisor.
constexpr auto kLivenessPeriod = 3s;
constexpr auto kPingTimeout = 2s;
constexpr int kLivenessStrikes = 3;

std::string sha256_hex(const std::string& data) {
  uint8_t d[Sha256::kDigestBytes];
  Sha256::digest(data.data(), data.size(), d);
  return to_hex(d);
}

// States that hold host capacity.
bool holds_capacity(std::string_view s) {
  return s == state::kPending || s == state::kRunning || s == state::kStopping || s == state::kShuttingDown;
}


// Everything a Unix socket server sends before closing (the card's metrics endpoint).
std::string read_unix_socket(const std::string& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (!fd || path.size() >= sizeof a.sun_path) return {};
  std::memcpy(a.sun_path, path.data(), path.size());
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0) return {};
  std::string out;
  char buf[8192];
  for (;;) {
    pollfd p{fd.get(), POLLIN, 0};
    if (::poll(&p, 1, 1000) <= 0) break;
    const ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

// Content-addressed files: one already there has these very bytes (a launching hv may
// be reading it), so it is kept; a new one is written to a temp file, synced, renamed.
bool write_file(const std::string& path, const std::string& data) {
  if (::access(path.c_str(), F_OK) == 0) return true;
  return pki::write_file_atomic(path, data, 0600).ok();
}

std::string request_hash(const RunRequest& r) {
  nlohmann::json j = {{"image", r.image_id}, {"type", r.instance_type}, {"count", r.count},
                      {"user_data", sha256_hex(r.user_data)}, {"root_type", r.root_volume_type},
                      {"root_size", r.root_volume_size_gib}};
  for (const auto& [k, v] : r.tags) j["tags"].push_back({k, v});
  if (r.no_network) j["no_network"] = true;
  if (!r.subnet_id.empty()) j["subnet"] = r.subnet_id;
  if (!r.security_group_ids.empty()) j["groups"] = r.security_group_ids;
  if (!r.http_tokens.empty()) j["http_tokens"] = r.http_tokens;
  if (r.enclave_enabled) j["enclave_enabled"] = true;
  if (r.enclave_cpu_count != 0) j["enclave_cpus"] = r.enclave_cpu_count;
  if (r.enclave_memory_mib != 0) j["enclave_mib"] = r.enclave_memory_mib;
  return sha256_hex(j.dump());
}

// The line a process killed by its seccomp filter wrote last ("azote-hv: seccomp: thread
// vcpu0 (tid 7) made forbidden system call 59 (execve); killing the process"), from the
// tail of its log; empty if there is none.
std::string seccomp_line(const std::string& log_path) {
  const std::string tail = read_tail(log_path, 8192);
  const size_t at = tail.rfind(": seccomp: thread ");
  if (at == std::string::npos) return {};
  const size_t start = tail.rfind('\n', at);
  const size_t end = tail.find('\n', at);
  return tail.substr(start == std::string::npos ? 0 : start + 1, end == std::string::npos ? std::string::npos : end - (start == std::string::npos ? 0 : start + 1));
}



}  // namespace

Unexpected<ApiError> api_error(ApiError::Kind kind, std::string code, std::string sentence) {
  return Unexpected{ApiError{kind, std::move(code), std::move(sentence)}};
}

Host::Host(const HostOptions& o, const pki::HostPki& pki, Store store, Processes& procs)
    : opt_(o), pki_(pki), procs_(procs), store_(std::move(store)) {}

ApiResult<std::unique_ptr<Host>> Host::open(const HostOptions& o, const pki::HostPki& pki, Processes& procs) {
  std::error_code ec;
  for (const char* d : {"volumes", "images"}) {
    fs::create_directories(o.state_dir + "/" + d, ec);
    if (ec) return api_error(K::kInternal, "InternalError", "cannot create " + o.state_dir + "/" + d + ": " + ec.message());
    ::chmod((o.state_dir + "/" + d).c_str(), 0700);
  }
  auto store = Store::open(o.state_dir + "/controller.db");
  if (!store) return api_error(K::kInternal, "InternalError", store.error().message());
  std::unique_ptr<Host> h(new Host(o, pki, std::move(store).value(), procs));
  if (h->opt_.guest_cpu_count == 0) h->opt_.guest_cpu_count = static_cast<uint32_t>(std::max(1, get_nprocs()));
  if (h->opt_.capacity_vcpus == 0) h->opt_.capacity_vcpus = 8 * h->opt_.guest_cpu_count;
  if (h->opt_.capacity_memory_mib == 0) {
    struct sysinfo si {};
    ::sysinfo(&si);
    h->opt_.capacity_memory_mib = static_cast<uint64_t>(si.totalram) * si.mem_unit / (1 << 20) * 8 / 10;
  }
  auto load = [&](auto r, auto& map) -> ApiResult<void> {
    if (!r) return api_error(K::kInternal, "InternalError", r.error().message());
    for (auto& rec : *r) map[rec.id] = std::move(rec);
    return {};
  };
  AZOTE_TRYV(load(h->store_.instances(), h->instances_));
  AZOTE_TRYV(load(h->store_.volumes(), h->volumes_));
  AZOTE_TRYV(load(h->store_.images(), h->images_));
  AZOTE_TRYV(load(h->store_.vpcs(), h->vpcs_));
  AZOTE_TRYV(load(h->store_.subnets(), h->subnets_));
  AZOTE_TRYV(load(h->store_.security_groups(), h->groups_));
  AZOTE_TRYV(load(h->store_.enis(), h->enis_));
  auto rn = h->store_.region_network();
  if (!rn) return api_error(K::kInternal, "InternalError", rn.error().message());
  h->region_net_ = std::move(rn).value();
  for (const auto& v : h->region_net_.vpcs) h->vpcs_[v.id] = v;
  for (const auto& s : h->region_net_.subnets) h->subnets_[s.id] = s;
  for (const auto& g : h->region_net_.groups) h->groups_[g.id] = g;
  AZOTE_TRYV(h->ensure_default_network());
  auto toks = h->store_.tokens();
  if (!toks) return api_error(K::kInternal, "InternalError", toks.error().message());
  for (auto& t : *toks) h->tokens_[t.kind + "/" + t.token] = t;
  if (!h->images_.count(std::string(kBuiltinImageId))) {
    ImageRec b;
    b.id = kBuiltinImageId;
    b.name = "azote-builtin";
    b.description = "The built-in azote guest: prints its boot count from the root volume, then idles";
    b.kernel = "builtin:init";
    b.kernel_sha256 = "builtin";
    b.root_size_gib = 1;
    b.creation_date = now_rfc3339();
    if (auto p = h->store_.put(b); !p) return api_error(K::kInternal, "InternalError", p.error().message());
    h->images_[b.id] = b;
  }
  for (auto& [id, r] : h->instances_) h->rt_[id];

  h->epoll_ = UniqueFd(::epoll_create1(EPOLL_CLOEXEC));
  h->wake_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kTagWake;
  if (!h->epoll_ || !h->wake_ || ::epoll_ctl(h->epoll_.get(), EPOLL_CTL_ADD, h->wake_.get(), &ev) != 0)
    return api_error(K::kInternal, "InternalError", std::string("epoll: ") + std::strerror(errno));
  // The launcher's socket: only its hang-up wakes the supervisor (replies are the
  // callers' to read).
  epoll_event lev{};
  lev.events = EPOLLRDHUP | EPOLLHUP;
  lev.data.u64 = kTagLauncher;
  ::epoll_ctl(h->epoll_.get(), EPOLL_CTL_ADD, procs.launcher_fd(), &lev);
  AZOTE_TRYV(h->recover());
  h->supervisor_ = std::thread([p = h.get()] { p->supervisor_loop(); });
  h->sync_fabric();  // the region's network as stored: the fabric process started again
  h->liveness_ = std::thread([p = h.get()] { p->liveness_loop(); });
  for (int i = 0; i < kWorkers; ++i) h->workers_.emplace_back([p = h.get()] { p->worker_loop(); });
  return h;
}

Host::~Host() { shutdown(); }

// ---- processes -------------------------------------------------------------------

void Host::watch(int pidfd) {
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = static_cast<uint64_t>(pidfd);
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, pidfd, &ev);
}

std::string Host::volume_socket(const std::string& volume_id) { return "/run/azote/" + volume_id + ".sock"; }
std::string Host::eni_socket(const std::string& eni_id) { return "/run/azote-net/" + eni_id + "/eni.sock"; }
std::string Host::eni_inbox(const std::string& eni_id) { return "/run/azote-net/" + eni_id + "/inbox.sock"; }
namespace {
// The fabric process's relay inbox, as every card's jail sees it (the launcher makes net/fabric).
constexpr const char* kFabricInbox = "/run/azote-net/fabric/inbox.sock";
}  // namespace
std::string Host::instance_dir(const std::string& id) const { return opt_.state_dir + "/instances/" + id; }

std::vector<Host::Card*> Host::Runtime::cards() const {
  std::vector<Card*> out;
  for (Card* c : {blk.get(), net.get(), tpm.get()})
    if (c) out.push_back(c);
  return out;
}

std::string Host::card_path(const Card& c, const char* suffix) const {
  return instance_dir(c.instance) + (c.is_net() ? "/card-net" : c.is_tpm() ? "/card-tpm" : "/card-blk") + suffix;
}

int Host::free_slot() const {
  std::set<int> used;
  for (const auto& [id, rt] : rt_)
    if (rt.slot >= 0) used.insert(rt.slot);
  for (const auto& [id, e] : enclaves_)
    if (e.slot >= 0) used.insert(e.slot);
  int s = 0;
  while (used.count(s)) ++s;
  return s;
}

launch::Limits Host::card_limits() const {
  launch::Limits l;
  l.memory_mib = kCardMemoryMib;
  l.pids = kCardPids;
  l.cpus = opt_.card_cpus;
  return l;
}

ApiResult<void> Host::ensure_card(Card& c, bool* started, const std::vector<VolumeRec>& vols) {
  if (started) *started = false;
  std::lock_guard card_lock(c.start_mu);
  launch::SpawnRequest req;
  {
    std::lock_guard lock(mu_);
    if (c.proc && !Processes::wait_exit(*c.proc, 0)) return {};
    req.role = c.is_net() ? launch::Role::kCardNet : c.is_tpm() ? launch::Role::kCardTpm : launch::Role::kCardBlk;
    req.instance = c.instance;
    req.slot = static_cast<uint32_t>(std::max(0, rt_[c.instance].slot));
    if (c.is_net())
      if (const EniRec* e = eni_of(c.instance)) req.enis = {e->id};
  }
  req.args = {"--control", "fd:{control}", "--metrics", "fd:{metrics}"};
  if (c.is_net()) req.args.insert(req.args.end(), {"--region", opt_.region});
  req.listens = {{"control", card_path(c, ".ctl")}, {"metrics", card_path(c, ".metrics")}};
  req.output = card_path(c, ".log");
  req.limits = card_limits();
  // The instance's volume files (and content to import), opened by the launcher: the
  // card's jail has no path to them. They are numbered 3, 4, ... in this order.
  std::map<std::string, int> file_fd;
  if (c.is_tpm()) {  // the TPM's state (encrypted by the card), kept across stop and start
    file_fd["state"] = 3;
    req.files.push_back({"state", instance_dir(c.instance) + "/tpm.state", "rw"});
  }
  for (const VolumeRec& v : vols) {
    file_fd[v.id] = 3 + static_cast<int>(req.files.size());
    req.files.push_back({v.id, v.file, "rw"});
    if (!v.import_from.empty()) {
      file_fd["import/" + v.id] = 3 + static_cast<int>(req.files.size());
      req.files.push_back({"import-" + v.id, v.import_from, "r"});
    }
  }
  auto p = procs_.spawn(req);
  if (!p) return api_error(K::kInternal, "InternalError", "cannot start the " + c.label + ": " + p.error().message());
  // Wait for the control socket (it exists already: the launcher made it), but not
  // for a card that already gave up: its last words are the reason.
  const auto deadline = std::chrono::steady_clock::now() + kControlTimeout;
  for (;;) {
    if (answers(card_path(c, ".ctl"), 200ms)) break;
    const bool gone = Processes::wait_exit(*p, 0);
    if (gone || std::chrono::steady_clock::now() >= deadline) {
      procs_.send_signal(*p, SIGKILL);
      Processes::wait_exit(*p, 2000);
      const int status = procs_.reap(*p);
      std::string last = read_tail(card_path(c, ".log"), 512);
      while (!last.empty() && last.back() == '\n') last.pop_back();
      if (const size_t nl = last.rfind('\n'); nl != std::string::npos) last = last.substr(nl + 1);
      return api_error(K::kInternal, "InternalError",
                       "the " + c.label +
                           (gone ? " exited before answering on its control socket (status " + std::to_string(status) + ")"
                                 : " did not answer on its control socket within " +
                                       std::to_string(std::chrono::duration_cast<std::chrono::seconds>(kControlTimeout).count()) + " s") +
                           (last.empty() ? "" : " (" + last + ")"));
    }
  }
  std::lock_guard lock(mu_);
  if (c.proc) {  // it died and the supervisor has not seen it yet: reap it, re-add everything it served
    procs_.reap(*c.proc);
    c.readd = true;
    const uint64_t one = 1;
    (void)!::write(wake_.get(), &one, sizeof one);
  }
  c.proc = std::move(p).value();
  c.file_fd = std::move(file_fd);
  c.expect_exit = false;
  (void)store_.put(CardRec{c.name, c.proc->pid, c.proc->starttime});
  watch(c.proc->pidfd.get());
  LOG_INFO("controller: %s started (pid %d)", c.label.c_str(), c.proc->pid);
  if (started) *started = true;
  return {};
}

// ---- the network cards -----------------------------------------------------------

ApiResult<void> Host::ensure_net(Card& c, std::unique_lock<std::mutex>& net_lock) {
  bool started = false;
  if (auto e = ensure_card(c, &started); !e) {
    return api_error(K::kInternal, "InternalError",
                     "the network card (azote-card-net) is not available: " + e.error().sentence);
  }
  net_lock.lock();
  if (started) c.model_ok = false;
  if (!c.model_ok) {
    AZOTE_TRYV(net_push_model(c));
    c.model_ok = true;
  }
  // Frames for addresses on other hosts go to the fabric process, if this host has one.
  if (fabric_alive())
    if (auto r = control::call_once(card_path(c, ".ctl"),
                                    {{"op", "set-fabric-relay"}, {"inbox", kFabricInbox}, {"uid", opt_.uid_base + launch::kFabricId}},
                                    kControlTimeout);
        !r)
      return api_error(K::kInternal, "InternalError", c.label + ": set-fabric-relay: " + r.error().message());
  return {};
}

ApiResult<void> Host::net_push_model(Card& c) {
  std::vector<VpcRec> vpcs;
  std::vector<SecurityGroupRec> groups;
  {
    std::lock_guard lock(mu_);
    for (const auto& [id, v] : vpcs_) vpcs.push_back(v);
    for (const auto& [id, g] : groups_) groups.push_back(g);
  }
  const std::string ctl = card_path(c, ".ctl");
  for (const auto& v : vpcs) {
    auto r = control::call_once(ctl, {{"op", "add-vpc"}, {"vpc", {{"id", v.id}, {"cidr", v.cidr}}}}, kControlTimeout);
    // An adopted card has it already.
    if (!r && !(r.error().code == control::ControlErrc::kRefused && r.error().context.find("declared twice") != std::string::npos))
      return api_error(K::kInternal, "InternalError", c.label + ": add-vpc " + v.id + ": " + r.error().message());
  }
  // Every group first (rules may name each other), then their rules.
  for (int pass = 0; pass < 2; ++pass)
    for (const auto& g : groups) {
      control::Json req = {{"op", "set-security-group-rules"}, {"group", g.id}};
      if (pass == 1) {
        req["ingress"] = rules_json(g.ingress);
        req["egress"] = rules_json(g.egress);
      }
      if (auto r = control::call_once(ctl, req, kControlTimeout); !r)
        return api_error(K::kInternal, "InternalError", c.label + ": security group " + g.id + ": " + r.error().message());
    }
  return {};
}

std::vector<Host::Card*> Host::net_cards() {
  std::vector<Card*> out;
  for (auto& [id, rt] : rt_)
    if (rt.net && rt.net->proc) out.push_back(rt.net.get());
  return out;
}

void Host::net_push_group(const std::string& group_id) {
  std::lock_guard net_lock(net_mu_);
  control::Json req = {{"op", "set-security-group-rules"}, {"group", group_id}};
  std::vector<Card*> cards;
  {
    std::lock_guard lock(mu_);
    auto it = groups_.find(group_id);
    // A card cannot forget a group: a deleted one is left without rules.
    req["ingress"] = it == groups_.end() ? control::Json::array() : rules_json(it->second.ingress);
    req["egress"] = it == groups_.end() ? control::Json::array() : rules_json(it->second.egress);
    cards = net_cards();
  }
  for (Card* c : cards) {
    if (!c->model_ok) continue;  // it gets every group when it (re)starts
    if (auto r = control::call_once(card_path(*c, ".ctl"), req, kControlTimeout); !r) {
      LOG_ERROR("controller: %s: security group %s: %s (the whole model is pushed again on its next start)",
                c->label.c_str(), group_id.c_str(), r.error().message().c_str());
      c->model_ok = false;
    }
  }
}

EniRec* Host::eni_of(const std::string& instance_id) {
  for (auto& [id, e] : enis_)
    if (e.instance_id == instance_id) return &e;
  return nullptr;
}

std::optional<control::Json> Host::eni_request(const std::string& instance_id) {
  const EniRec* e = eni_of(instance_id);
  if (!e) return std::nullopt;
  const InstanceRec& inst = instances_[instance_id];
  const auto sn = subnets_.find(e->subnet_id);
  if (sn == subnets_.end()) return std::nullopt;
  const InstanceType* type = find_instance_type(inst.type);
  const auto ip = vpc::parse_ipv4(e->private_ip);
  control::Json eni = {{"id", e->id},     {"socket", eni_socket(e->id)}, {"mac", e->mac},
                       {"ip", e->private_ip}, {"subnet", sn->second.cidr}, {"vpc", e->vpc_id},
                       {"security_groups", e->groups}, {"inbox", eni_inbox(e->id)}};
  // Optional keys of the ENI: the instance type's limits and what the card's metadata
  // service answers (a card from before them refuses the ENI: "unknown ENI key").
  if (type) eni["limits"] = {{"bandwidth_mbps", type->network_mbps}, {"pps", type->network_pps}};
  eni["metadata"] = {{"instance_id", inst.id},
                     {"instance_type", inst.type},
                     {"ami_id", inst.image_id},
                     {"availability_zone", sn->second.availability_zone},
                     {"hostname", private_dns_name(ip ? *ip : 0, opt_.region)},
                     {"user_data_b64", base64(inst.user_data)},
                     {"http_tokens", inst.http_tokens}};
  return control::Json{{"op", "add-eni"}, {"eni", eni}};
}

std::optional<control::Json> Host::neighbour_of(const std::string& instance_id) {
  const EniRec* e = eni_of(instance_id);
  auto rt = rt_.find(instance_id);
  if (!e || rt == rt_.end() || rt->second.slot < 0) return std::nullopt;
  const auto sn = subnets_.find(e->subnet_id);
  if (sn == subnets_.end()) return std::nullopt;
  return control::Json{{"id", e->id},
                       {"mac", e->mac},
                       {"ip", e->private_ip},
                       {"subnet", sn->second.cidr},
                       {"vpc", e->vpc_id},
                       {"security_groups", e->groups},
                       {"inbox", eni_inbox(e->id)},
                       {"uid", opt_.uid_base + launch::kFirstInstanceId + static_cast<uint32_t>(rt->second.slot)}};
}

ApiResult<void> Host::net_add_eni(Card& c, const std::string& instance_id) {
  std::optional<control::Json> req;
  std::string eni_id;
  {
    std::lock_guard lock(mu_);
    req = eni_request(instance_id);
    if (!req) return api_error(K::kInternal, "InternalError", "instance " + instance_id + " has no usable network interface record");
    eni_id = (*req)["eni"]["id"].get<std::string>();
  }
  const std::string ctl = card_path(c, ".ctl");
  (void)control::call_once(ctl, {{"op", "remove-eni"}, {"id", eni_id}, {"force", true}}, kControlTimeout);
  if (auto r = control::call_once(ctl, *req, kControlTimeout); !r)
    return api_error(K::kInternal, "InternalError", c.label + ": add-eni " + eni_id + ": " + r.error().message());
  return {};
}

void Host::net_sync_neighbours(Card& c) {
  // Every other instance whose ENI is served now (its card runs, its instance runs or
  // is being launched past its card).
  std::vector<control::Json> want;
  {
    std::lock_guard lock(mu_);
    for (auto& [id, rt] : rt_) {
      if (id == c.instance || !rt.net || !rt.net->proc) continue;
      const auto& st = instances_[id].state;
      if (st != state::kRunning && st != state::kPending) continue;
      if (auto n = neighbour_of(id)) want.push_back(std::move(*n));
    }
  }
  const std::string ctl = card_path(c, ".ctl");
  auto listed = control::call_once(ctl, {{"op", "list-neighbours"}}, kControlTimeout);
  if (listed)
    for (const auto& n : (*listed)["neighbours"])
      if (n.contains("id") && n["id"].is_string())
        (void)control::call_once(ctl, {{"op", "remove-neighbour"}, {"id", n["id"]}}, kControlTimeout);
  for (const auto& n : want)
    if (auto r = control::call_once(ctl, {{"op", "add-neighbour"}, {"eni", n}}, kControlTimeout); !r)
      LOG_ERROR("controller: %s: add-neighbour %s: %s", c.label.c_str(), n["id"].get<std::string>().c_str(),
                r.error().message().c_str());
}

void Host::net_announce(const std::string& instance_id, bool present) {
  std::optional<control::Json> n;
  std::string eni_id;
  std::vector<std::pair<Card*, std::string>> cards;
  {
    std::lock_guard lock(mu_);
    const EniRec* e = eni_of(instance_id);
    if (!e) return;
    eni_id = e->id;
    if (present) n = neighbour_of(instance_id);
    for (Card* c : net_cards())
      if (c->instance != instance_id) cards.emplace_back(c, card_path(*c, ".ctl"));
  }
  for (const auto& [c, ctl] : cards) {
    (void)control::call_once(ctl, {{"op", "remove-neighbour"}, {"id", eni_id}}, kControlTimeout);
    if (!n) continue;
    if (auto r = control::call_once(ctl, {{"op", "add-neighbour"}, {"eni", *n}}, kControlTimeout); !r)
      LOG_ERROR("controller: %s: add-neighbour %s: %s", c->label.c_str(), eni_id.c_str(), r.error().message().c_str());
  }
  // The fabric process hands what arrives for this ENI to its inbox.
  if (fabric_alive()) {
    const std::string ctl = fabric_ctl();
    (void)control::call_once(ctl, {{"op", "remove-neighbour"}, {"id", eni_id}}, kControlTimeout);
    if (n)
      if (auto r = control::call_once(ctl, {{"op", "add-neighbour"}, {"eni", *n}}, kControlTimeout); !r)
        LOG_ERROR("controller: fabric process: add-neighbour %s: %s", eni_id.c_str(), r.error().message().c_str());
  }
}

void Host::net_stop(const std::string& instance_id) {
  std::lock_guard net_lock(net_mu_);
  Card* c = nullptr;
  {
    std::lock_guard lock(mu_);
    auto it = rt_.find(instance_id);
    if (it != rt_.end() && it->second.net && it->second.net->proc) c = it->second.net.get();
  }
  net_announce(instance_id, false);
  if (c) stop_card(c);
}

ApiResult<void> Host::ensure_default_network() {
  std::lock_guard lock(mu_);
  for (const auto& [id, v] : vpcs_)
    if (v.is_default) {
      if (v.cidr != opt_.vpc_cidr)
        LOG_WARN("controller: the default VPC %s keeps its CIDR %s (--vpc-cidr %s applies to a new state directory only)",
                 id.c_str(), v.cidr.c_str(), opt_.vpc_cidr.c_str());
      return {};
    }
  if (auto e = check_network_layout(opt_.vpc_cidr, opt_.subnet_cidr))
    return api_error(K::kInvalid, "InvalidParameterValue", *e);
  VpcRec v{new_id("vpc"), parse_cidr(opt_.vpc_cidr)->to_string(), true};
  SubnetRec sn{new_id("subnet"), v.id, parse_cidr(opt_.subnet_cidr)->to_string(), opt_.region + "a", true};
  SecurityGroupRec g;
  g.id = new_id("sg");
  g.vpc_id = v.id;
  g.name = "default";
  g.description = "default VPC security group";
  g.ingress = default_group_ingress(g.id);
  g.egress = default_egress();
  if (auto p = store_.put_network(v, sn, g); !p) return api_error(K::kInternal, "InternalError", p.error().message());
  vpcs_[v.id] = v;
  subnets_[sn.id] = sn;
  groups_[g.id] = g;
  LOG_INFO("controller: default VPC %s (%s), subnet %s (%s), security group %s", v.id.c_str(), v.cidr.c_str(),
           sn.id.c_str(), sn.cidr.c_str(), g.id.c_str());
  return {};
}

ApiResult<void> Host::card_add(Card& c, const VolumeRec& v, const InstanceType* type) {
  int file = -1, import = -1;
  {
    std::lock_guard lock(mu_);
    if (auto it = c.file_fd.find(v.id); it != c.file_fd.end()) file = it->second;
    if (auto it = c.file_fd.find("import/" + v.id); it != c.file_fd.end()) import = it->second;
  }
  if (file < 0) return api_error(K::kInternal, "InternalError", "the " + c.label + " was not given the file of " + v.id);
  nlohmann::json vol = {{"socket", volume_socket(v.id)}, {"file", "fd:" + std::to_string(file)}, {"serial", "vol" + v.id.substr(4)}};
  uint64_t iops = v.iops, mbps = v.throughput_mbps;
  if (type) {
    iops = std::min<uint64_t>(iops, type->ebs_iops);
    mbps = std::min<uint64_t>(mbps, type->ebs_mbps / 8);
  }
  if (iops) vol["iops"] = iops;
  if (mbps) vol["mbps"] = mbps;
  std::string key_hex;
  if (v.encrypted) {
    auto key = pki::unwrap_key(pki_.master_key(), v.wrapped_key, v.id);
    if (!key) return api_error(K::kInternal, "InternalError", "volume " + v.id + ": key unwrap failed: " + key.error().message());
    key_hex = to_hex(*key);  // to_hex reserves once: no reallocation leaves copies of the key behind
    pki::wipe(*key);
  }
  control::Json req = {{"op", "add-volume"}, {"volume", vol}};
  if (!key_hex.empty()) req["volume"]["key"] = key_hex;
  if (!v.import_from.empty() && import >= 0) req["import"] = "fd:" + std::to_string(import);
  // Importing content writes (and encrypts) it all before the answer: allow for that.
  auto r = control::call_once(card_path(c, ".ctl"), req, v.import_from.empty() ? kControlTimeout : 300s);
  // Wipe the copies this process made (the serialized request inside call_once is
  // freed unwiped: a residual risk noted in docs/threat-model.md).
  std::fill(key_hex.begin(), key_hex.end(), '\0');
  if (!key_hex.empty()) {
    auto& k = req["volume"]["key"].get_ref<std::string&>();
    std::fill(k.begin(), k.end(), '\0');
  }
  if (!r) return api_error(K::kInternal, "InternalError", c.label + ": " + r.error().message());
  return {};
}

void Host::stop_blk_card(const std::string& instance_id) {
  std::vector<Card*> cards;
  {
    std::lock_guard lock(mu_);
    auto it = rt_.find(instance_id);
    if (it == rt_.end()) return;
    for (Card* c : {it->second.blk.get(), it->second.tpm.get()})
      if (c && c->proc) cards.push_back(c);
  }
  for (Card* c : cards) stop_card(c);
}

void Host::stop_card(Card* c) {
  {
    std::lock_guard lock(mu_);
    c->expect_exit = true;
  }
  const std::string instance_id = c->instance;
  std::lock_guard card_lock(c->start_mu);
  std::optional<Proc> waiter;
  {
    std::lock_guard lock(mu_);
    if (!c->proc) return;
    waiter = Proc{c->proc->pid, c->proc->starttime, c->proc->uid, UniqueFd(::fcntl(c->proc->pidfd.get(), F_DUPFD_CLOEXEC, 0))};
  }
  // SIGTERM: the card finishes what is in flight and flushes; an acknowledged write
  // is on the file already.
  procs_.send_signal(*waiter, SIGTERM);
  if (!Processes::wait_exit(*waiter, kStopGraceMs)) {
    LOG_WARN("instance %s: the %s did not stop within %d ms; killing it", instance_id.c_str(), c->label.c_str(), kStopGraceMs);
    procs_.send_signal(*waiter, SIGKILL);
    Processes::wait_exit(*waiter, 5000);
  }
  std::unique_lock lock(mu_);
  cv_.wait_for(lock, 2s, [&] { return !c->proc || stopping_; });
  (void)store_.erase_card(c->name);
}

// ---- state helpers (mu_ held) ----------------------------------------------------

void Host::persist(const InstanceRec& r) {
  if (auto p = store_.put(r); !p) LOG_ERROR("controller: saving %s: %s", r.id.c_str(), p.error().message().c_str());
}
void Host::persist(const VolumeRec& r) {
  if (auto p = store_.put(r); !p) LOG_ERROR("controller: saving %s: %s", r.id.c_str(), p.error().message().c_str());
}

void Host::set_state(InstanceRec& r, std::string_view s, const std::string& code, const std::string& message) {
  if (r.state != s) LOG_INFO("instance %s: %s -> %.*s%s%s", r.id.c_str(), r.state.c_str(), static_cast<int>(s.size()),
                             s.data(), code.empty() ? "" : " ", code.c_str());
  r.state = s;
  r.reason_code = code;
  r.reason_message = message;
  persist(r);
  cv_.notify_all();
}

ApiResult<InstanceRec*> Host::find_instance(const std::string& id) {
  if (!valid_id(id, "i")) return api_error(K::kInvalid, "InvalidInstanceID.Malformed", "invalid id: \"" + id + "\"");
  auto it = instances_.find(id);
  if (it == instances_.end())
    return api_error(K::kNotFound, "InvalidInstanceID.NotFound", "the instance ID '" + id + "' does not exist");
  return &it->second;
}

ApiResult<VolumeRec*> Host::find_volume(const std::string& id) {
  if (!valid_id(id, "vol")) return api_error(K::kInvalid, "InvalidVolumeID.Malformed", "invalid id: \"" + id + "\"");
  auto it = volumes_.find(id);
  if (it == volumes_.end()) return api_error(K::kNotFound, "InvalidVolume.NotFound", "the volume '" + id + "' does not exist");
  return &it->second;
}

std::vector<VolumeRec*> Host::volumes_of(const std::string& instance_id) {
  std::vector<VolumeRec*> out;
  for (auto& [id, v] : volumes_)
    if (v.instance_id == instance_id) out.push_back(&v);
  std::sort(out.begin(), out.end(), [](const VolumeRec* a, const VolumeRec* b) { return a->device < b->device; });
  return out;
}

uint32_t Host::used_vcpus() const {
  uint32_t n = 0;
  for (const auto& [id, r] : instances_)
    if (holds_capacity(r.state)) n += r.vcpus;
  return n;
}
uint32_t Host::used_dedicated_vcpus() const {
  uint32_t n = 0;
  for (const auto& [id, r] : instances_) {
    const InstanceType* t = find_instance_type(r.type);
    if (holds_capacity(r.state) && t && !burstable(*t)) n += r.vcpus;
  }
  return n;
}

std::optional<std::string> Host::no_room(uint32_t want, uint32_t dedicated, uint64_t mem) const {
  const uint32_t used = used_vcpus(), used_ded = used_dedicated_vcpus();
  const uint64_t used_mem = used_memory_mib();
  if (dedicated > 0 && used_ded + dedicated > dedicated_capacity())
    return "dedicated-vCPU types get " + std::to_string(opt_.dedicated_per_cpu) + " vCPU per guest CPU and this host has " +
           std::to_string(opt_.guest_cpu_count) + " guest CPU(s): " + std::to_string(dedicated_capacity() - std::min(dedicated_capacity(), used_ded)) +
           " free, " + std::to_string(dedicated) + " needed (burstable t types share CPUs; --dedicated-vcpus-per-cpu changes the ratio)";
  if (used + want > opt_.capacity_vcpus || used_mem + mem > opt_.capacity_memory_mib)
    return "needs " + std::to_string(want) + " vCPUs and " + std::to_string(mem) + " MiB; free " +
           std::to_string(opt_.capacity_vcpus - std::min(opt_.capacity_vcpus, used)) + " vCPUs and " +
           std::to_string(opt_.capacity_memory_mib - std::min(opt_.capacity_memory_mib, used_mem)) + " MiB";
  return std::nullopt;
}

uint64_t Host::used_memory_mib() const {
  uint64_t n = 0;
  for (const auto& [id, r] : instances_)
    if (holds_capacity(r.state)) n += r.memory_mib;
  return n;
}

ApiResult<VolumeRec> Host::new_volume(const VolumeSpec& spec, bool encrypted, const Tags& tags, const std::string& token) {
  VolumeRec v;
  v.id = new_id("vol");
  v.type = spec.type;
  v.size_gib = spec.size_gib;
  v.iops = spec.iops;
  v.throughput_mbps = spec.throughput_mbps;
  v.encrypted = encrypted;
  v.state = "available";
  v.create_time = now_rfc3339();
  v.tags = tags;
  v.client_token = token;
  v.file = opt_.state_dir + "/volumes/" + v.id + ".img";
  if (encrypted) {
    // AES-XTS-256 wants two different 32-byte halves; 64 random bytes differ with
    // overwhelming probability, and the card checks.
    std::vector<uint8_t> key(64);
    if (::getrandom(key.data(), key.size(), 0) != static_cast<ssize_t>(key.size()))
      return api_error(K::kInternal, "InternalError", "no randomness for a volume key");
    auto w = pki::wrap_key(pki_.master_key(), key, v.id);
    pki::wipe(key);
    if (!w) return api_error(K::kInternal, "InternalError", "key wrap: " + w.error().message());
    v.wrapped_key = std::move(w).value();
  }
  const int fd = ::open(v.file.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0 || ::ftruncate(fd, static_cast<off_t>(v.size_gib) << 30) != 0) {
    const int e = errno;
    if (fd >= 0) ::close(fd);
    ::unlink(v.file.c_str());
    return api_error(K::kInternal, "InternalError", "cannot create " + v.file + ": " + std::strerror(e));
  }
  ::close(fd);
  return v;
}

ApiResult<void> Host::delete_volume_files(VolumeRec& v) {
  if (auto e = store_.erase_volume(v.id); !e)
    return api_error(K::kInternal, "InternalError", "deleting " + v.id + ": " + e.error().message());
  ::unlink(v.file.c_str());  // a crash before this leaves an orphan file, which recover() removes
  if (!v.wrapped_key.empty()) std::fill(v.wrapped_key.begin(), v.wrapped_key.end(), 0);
  v.wrapped_key.clear();  // with the record and the file gone, the key is destroyed too
  v.state = "deleted";
  return {};
}

// ---- API -----------------------------------------------------------------------

ApiResult<RunResult> Host::run_instances(const RunRequest& req) {
  RunRequest r = req;
  if (r.instance_type.empty()) r.instance_type = kDefaultInstanceType;
  if (r.count == 0) r.count = 1;
  const InstanceType* type = find_instance_type(r.instance_type);
  if (!type)
    return api_error(K::kInvalid, "InvalidParameterValue", "instance type \"" + r.instance_type + "\" does not exist");
  if (r.count > kMaxCount)
    return api_error(K::kInvalid, "InvalidParameterValue", "count " + std::to_string(r.count) + " is above " + std::to_string(kMaxCount));
  if (r.user_data.size() > kMaxUserDataBytes)
    return api_error(K::kInvalid, "InvalidParameterValue", "user data is " + std::to_string(r.user_data.size()) +
                                                               " bytes; the limit is 16384");
  if (r.client_token.size() > 64)
    return api_error(K::kInvalid, "InvalidParameterValue", "client token is longer than 64 characters");
  if (r.tags.size() > kMaxTags) return api_error(K::kInvalid, "TagLimitExceeded", "more than 50 tags");
  for (const auto& [k, v] : r.tags) {
    if (k.empty() || k.size() > 128 || v.size() > 256)
      return api_error(K::kInvalid, "InvalidParameterValue", "tag \"" + k + "\": keys are 1-128 and values 0-256 characters");
    if (k.rfind("aws:", 0) == 0) return api_error(K::kInvalid, "InvalidParameterValue", "tag keys may not start with \"aws:\"");
  }
  std::unique_lock lock(mu_);
  if (!valid_id(r.image_id, "ami") && r.image_id != kBuiltinImageId)
    return api_error(K::kInvalid, "InvalidAMIID.Malformed", "invalid id: \"" + r.image_id + "\"");
  const auto img = images_.find(r.image_id);
  if (img == images_.end()) return api_error(K::kNotFound, "InvalidAMIID.NotFound", "the image id '" + r.image_id + "' does not exist");
  VolumeSpec root;
  root.type = r.root_volume_type;
  root.size_gib = r.root_volume_size_gib ? r.root_volume_size_gib : img->second.root_size_gib;
  if (root.size_gib < img->second.root_size_gib)
    return api_error(K::kInvalid, "InvalidParameterValue", "root volume size " + std::to_string(root.size_gib) +
                                                               " GiB is smaller than the image's " +
                                                               std::to_string(img->second.root_size_gib) + " GiB");
  if (auto e = complete_volume_spec(&root, false, false)) return api_error(K::kInvalid, "InvalidParameterValue", *e);

  const std::string hash = request_hash(r);
  if (!r.client_token.empty()) {
    const auto t = tokens_.find("run/" + r.client_token);
    if (t != tokens_.end()) {
      if (t->second.request_hash != hash)
        return api_error(K::kConflict, "IdempotentParameterMismatch",
                         "client token \"" + r.client_token + "\" was used with different parameters");
      RunResult out{t->second.result, {}};
      for (const auto& [id, inst] : instances_)
        if (inst.reservation_id == out.reservation_id) out.instances.push_back(inst);
      return out;
    }
  }
  // The primary network interface: subnet, groups, addresses (checked before anything is made).
  const SubnetRec* subnet = nullptr;
  std::vector<std::string> groups;
  std::vector<uint32_t> ips;
  if (r.no_network) {
    if (!r.subnet_id.empty() || !r.security_group_ids.empty())
      return api_error(K::kInvalid, "InvalidParameterCombination",
                       "a subnet or security groups were given for an instance without a network interface");
  } else {
    if (::access(opt_.card_net_bin.c_str(), X_OK) != 0) {
      const std::string why = std::strerror(errno);
      return api_error(K::kUnsupported, "Unsupported",
                       "this host has no network card (" + opt_.card_net_bin + ": " + why +
                           "): launch with no network interface (--no-network-interface) or install azote-card-net");
    }
    if (r.subnet_id.empty()) {
      for (const auto& [sid, sn] : subnets_)
        if (sn.is_default) subnet = &sn;
      if (!subnet) return api_error(K::kInvalid, "VPCIdNotSpecified", "this host has no default subnet; give a subnet id");
    } else {
      if (!valid_id(r.subnet_id, "subnet"))
        return api_error(K::kInvalid, "InvalidSubnetID.Malformed", "invalid id: \"" + r.subnet_id + "\"");
      const auto it = subnets_.find(r.subnet_id);
      if (it == subnets_.end())
        return api_error(K::kNotFound, "InvalidSubnetID.NotFound", "the subnet ID '" + r.subnet_id + "' does not exist");
      subnet = &it->second;
    }
    for (const auto& g : r.security_group_ids) {
      AZOTE_TRY(rec, find_group(g));
      if (rec->vpc_id != subnet->vpc_id)
        return api_error(K::kInvalid, "InvalidParameter",
                         "security group " + g + " and subnet " + subnet->id + " belong to different networks");
      if (std::find(groups.begin(), groups.end(), g) == groups.end()) groups.push_back(g);
    }
    if (groups.empty())
      for (const auto& [gid, g] : groups_)
        if (g.vpc_id == subnet->vpc_id && g.name == "default") groups.push_back(gid);
    if (groups.empty()) return api_error(K::kNotFound, "InvalidGroup.NotFound", "the VPC " + subnet->vpc_id + " has no default security group");
    if (groups.size() > 5)
      return api_error(K::kInvalid, "SecurityGroupsPerInterfaceLimitExceeded",
                       "an interface has at most 5 security groups; " + std::to_string(groups.size()) + " were given");
    const auto cidr = parse_cidr(subnet->cidr);
    std::set<uint32_t> used;
    for (const auto& [eid, e] : enis_)
      if (e.subnet_id == subnet->id)
        if (auto ip = vpc::parse_ipv4(e.private_ip)) used.insert(*ip);
    if (!r.private_ip.empty()) {  // the region's choice: one instance, an unused usable address
      const auto ip = vpc::parse_ipv4(r.private_ip);
      if (!ip || !cidr || !cidr->contains(*ip) || reserved_address(*cidr, *ip) || r.count != 1)
        return api_error(K::kInvalid, "InvalidParameterValue",
                         "private address \"" + r.private_ip + "\" is not a usable address of " + subnet->id + " (" +
                             subnet->cidr + ") for one instance");
      if (used.count(*ip) != 0)
        return api_error(K::kConflict, "InvalidIPAddress.InUse", "address " + r.private_ip + " is in use");
      ips.push_back(*ip);
    }
    for (uint32_t i = 0; cidr && r.private_ip.empty() && i < r.count; ++i) {
      auto ip = next_free_address(*cidr, used);
      if (!ip) break;
      used.insert(*ip);
      ips.push_back(*ip);
    }
    if (ips.size() < r.count)
      return api_error(K::kCapacity, "InsufficientFreeAddressesInSubnet",
                       "subnet " + subnet->id + " (" + subnet->cidr + ") has " + std::to_string(ips.size()) +
                           " free address(es); " + std::to_string(r.count) + " needed");
  }
  std::string http_tokens = r.http_tokens.empty() ? "optional" : r.http_tokens;
  if (http_tokens != "optional" && http_tokens != "required")
    return api_error(K::kInvalid, "InvalidParameterValue",
                     "HttpTokens \"" + http_tokens + "\" is not optional or required");
  AZOTE_TRY(pool, enclave_pool(*type, r));

  const uint32_t want_vcpus = type->vcpus * r.count;
  const uint64_t want_mem = type->memory_mib * r.count;
  if (auto why = no_room(want_vcpus, burstable(*type) ? 0 : want_vcpus, want_mem))
    return api_error(K::kCapacity, "InsufficientInstanceCapacity",
                     "not enough capacity for " + std::to_string(r.count) + " " + r.instance_type + " (" + *why + ")");

  RunResult out;
  out.reservation_id = new_id("r");
  std::vector<VolumeRec> vols;
  std::vector<EniRec> enis;
  std::set<std::string> macs;
  for (const auto& [eid, e] : enis_) macs.insert(e.mac);
  const std::string now = now_rfc3339();
  for (uint32_t i = 0; i < r.count; ++i) {
    InstanceRec inst;
    inst.id = new_id("i");
    inst.reservation_id = out.reservation_id;
    inst.image_id = r.image_id;
    inst.type = r.instance_type;
    inst.state = state::kPending;
    inst.launch_time = now;
    inst.vcpus = type->vcpus;
    inst.memory_mib = type->memory_mib;
    inst.user_data = r.user_data;
    inst.tags = r.tags;
    inst.client_token = r.client_token;
    inst.http_tokens = http_tokens;
    inst.enclave_enabled = r.enclave_enabled;
    inst.enclave_pool_cpus = pool.cpus;
    inst.enclave_pool_mib = pool.memory_mib;
    if (subnet) {
      EniRec e;
      e.id = new_id("eni");
      e.instance_id = inst.id;
      e.subnet_id = subnet->id;
      e.vpc_id = subnet->vpc_id;
      e.mac = new_mac(macs);
      macs.insert(e.mac);
      e.private_ip = vpc::format_ipv4(ips[i]);
      e.groups = groups;
      enis.push_back(std::move(e));
    }
    auto v = new_volume(root, true, {}, "");
    if (!v) {
      for (auto& made : vols) ::unlink(made.file.c_str());
      return Unexpected{v.error()};
    }
    v->state = "in-use";
    v->instance_id = inst.id;
    v->device = "/dev/vda";
    v->attach_state = "attached";
    v->delete_on_termination = true;
    v->import_from = img->second.root_content;
    vols.push_back(std::move(v).value());
    out.instances.push_back(std::move(inst));
  }
  std::optional<TokenRec> token;
  if (!r.client_token.empty()) token = TokenRec{r.client_token, "run", hash, out.reservation_id};
  if (auto p = store_.put_all(out.instances, vols, token, enis); !p) {
    for (auto& v : vols) ::unlink(v.file.c_str());
    return api_error(K::kInternal, "InternalError", "state not saved: " + p.error().message());
  }
  if (token) tokens_["run/" + token->token] = *token;
  for (auto& e : enis) enis_[e.id] = e;
  for (auto& v : vols) volumes_[v.id] = v;
  for (auto& inst : out.instances) {
    instances_[inst.id] = inst;
    rt_[inst.id] = Runtime{};
    rt_[inst.id].first_boot = true;
  }
  lock.unlock();
  for (auto& inst : out.instances) enqueue(inst.id, Job::kLaunch);
  return out;
}

ApiResult<std::vector<InstanceRec>> Host::describe_instances(const std::vector<std::string>& ids) {
  std::lock_guard lock(mu_);
  std::vector<InstanceRec> out;
  if (ids.empty()) {
    for (const auto& [id, r] : instances_) out.push_back(r);
    std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.launch_time < b.launch_time; });
    return out;
  }
  for (const auto& id : ids) {
    AZOTE_TRY(r, find_instance(id));
    out.push_back(*r);
  }
  return out;
}

ApiResult<std::vector<StateChange>> Host::stop_instances(const std::vector<std::string>& ids, bool force) {
  std::vector<StateChange> out;
  std::vector<std::string> jobs;
  {
    std::lock_guard lock(mu_);
    if (ids.empty()) return api_error(K::kInvalid, "MissingParameter", "no instance ids given");
    for (const auto& id : ids) {  // all valid before any changes
      AZOTE_TRY(r, find_instance(id));
      if (r->state == state::kPending || r->state == state::kShuttingDown || r->state == state::kTerminated)
        return api_error(K::kConflict, "IncorrectInstanceState",
                         "the instance '" + id + "' is " + r->state + " and cannot be stopped");
    }
    for (const auto& id : ids) {
      InstanceRec& r = instances_[id];
      out.push_back({id, r.state, r.state});
      if (r.state != state::kRunning) continue;  // stopping or stopped already
      set_state(r, state::kStopping);
      out.back().current = r.state;
      jobs.push_back(id);
    }
  }
  for (const auto& id : jobs) enqueue(id, force ? Job::kStopForce : Job::kStop);
  return out;
}

ApiResult<std::vector<StateChange>> Host::start_instances(const std::vector<std::string>& ids) {
  std::vector<StateChange> out;
  std::vector<std::string> jobs;
  {
    std::lock_guard lock(mu_);
    if (ids.empty()) return api_error(K::kInvalid, "MissingParameter", "no instance ids given");
    uint32_t vcpus = 0, dedicated = 0;
    uint64_t mem = 0;
    for (const auto& id : ids) {
      AZOTE_TRY(r, find_instance(id));
      if (r->state != state::kStopped && r->state != state::kRunning && r->state != state::kPending)
        return api_error(K::kConflict, "IncorrectInstanceState",
                         "the instance '" + id + "' is " + r->state + " and cannot be started");
      if (r->state == state::kStopped) {
        vcpus += r->vcpus, mem += r->memory_mib;
        const InstanceType* t = find_instance_type(r->type);
        if (t && !burstable(*t)) dedicated += r->vcpus;
      }
    }
    if (auto why = no_room(vcpus, dedicated, mem))
      return api_error(K::kCapacity, "InsufficientInstanceCapacity",
                       "not enough capacity to start " + std::to_string(ids.size()) + " instance(s) (" + *why + ")");
    for (const auto& id : ids) {
      InstanceRec& r = instances_[id];
      out.push_back({id, r.state, r.state});
      if (r.state != state::kStopped) continue;
      set_state(r, state::kPending);
      out.back().current = r.state;
      jobs.push_back(id);
    }
  }
  for (const auto& id : jobs) enqueue(id, Job::kLaunch);
  return out;
}

ApiResult<std::vector<StateChange>> Host::reboot_instances(const std::vector<std::string>& ids) {
  std::vector<StateChange> out;
  {
    std::lock_guard lock(mu_);
    if (ids.empty()) return api_error(K::kInvalid, "MissingParameter", "no instance ids given");
    for (const auto& id : ids) {
      AZOTE_TRY(r, find_instance(id));
      if (r->state != state::kRunning)
        return api_error(K::kConflict, "IncorrectInstanceState",
                         "the instance '" + id + "' is " + r->state + " and cannot be rebooted");
    }
    for (const auto& id : ids) out.push_back({id, state::kRunning.data(), state::kRunning.data()});
  }
  for (const auto& id : ids) enqueue(id, Job::kReboot);
  return out;
}

ApiResult<std::vector<StateChange>> Host::terminate_instances(const std::vector<std::string>& ids) {
  std::vector<StateChange> out;
  std::vector<std::string> jobs;
  {
    std::lock_guard lock(mu_);
    if (ids.empty()) return api_error(K::kInvalid, "MissingParameter", "no instance ids given");
    for (const auto& id : ids) AZOTE_TRYV(find_instance(id));
    for (const auto& id : ids) {
      InstanceRec& r = instances_[id];
      out.push_back({id, r.state, r.state});
      if (r.state == state::kTerminated || r.state == state::kShuttingDown) continue;
      rt_[id].terminate_requested = true;
      set_state(r, state::kShuttingDown);
      out.back().current = r.state;
      jobs.push_back(id);
    }
  }
  for (const auto& id : jobs) enqueue(id, Job::kTerminate);
  return out;
}

ApiResult<std::string> Host::console_output(const std::string& id) {
  {
    std::lock_guard lock(mu_);
    AZOTE_TRYV(find_instance(id));
  }
  return read_tail(instance_dir(id) + "/console.log", kConsoleBytes);
}

ApiResult<ImageRec> Host::register_image(const ImageRequest& r) {
  if (r.name.size() < 3 || r.name.size() > 128)
    return api_error(K::kInvalid, "InvalidParameterValue", "image name must be 3-128 characters");
  if (r.kernel.empty()) return api_error(K::kInvalid, "MissingParameter", "no kernel given");
  const bool elf = r.kernel.size() > 4 && r.kernel.compare(0, 4, "\x7f" "ELF") == 0;
  const bool bz = r.kernel.size() > 0x206 && r.kernel.compare(0x202, 4, "HdrS") == 0;
  if (!elf && !bz) return api_error(K::kInvalid, "InvalidParameterValue", "the kernel is neither an ELF (PVH) image nor a bzImage");
  if (r.root_content.size() > (uint64_t{r.root_volume_size_gib ? r.root_volume_size_gib : 1} << 30))
    return api_error(K::kInvalid, "InvalidParameterValue", "root volume content is larger than the root volume");
  if (r.cmdline.size() > 2048) return api_error(K::kInvalid, "InvalidParameterValue", "cmdline is longer than 2048 bytes");
  if (!r.tpm_support.empty() && r.tpm_support != "v2.0")
    return api_error(K::kInvalid, "InvalidParameterValue",
                     "TpmSupport \"" + r.tpm_support + "\" is not supported (the only value is v2.0)");
  ImageRec img;
  img.tpm_support = r.tpm_support;
  img.name = r.name;
  img.description = r.description;
  img.kernel_sha256 = sha256_hex(r.kernel);
  img.initrd_sha256 = r.initrd.empty() ? "" : sha256_hex(r.initrd);
  img.cmdline = r.cmdline;
  img.root_size_gib = r.root_volume_size_gib ? r.root_volume_size_gib : 1;
  img.root_sha256 = r.root_content.empty() ? "" : sha256_hex(r.root_content);
  if (img.root_size_gib > 16384) return api_error(K::kInvalid, "InvalidParameterValue", "root volume size above 16384 GiB");
  img.id = image_id_from_hash(sha256_hex(img.kernel_sha256 + "|" + img.initrd_sha256 + "|" + img.cmdline + "|" +
                                         std::to_string(img.root_size_gib) + "|" + img.root_sha256 +
                                         (img.tpm_support.empty() ? "" : "|tpm=" + img.tpm_support)));
  std::lock_guard lock(mu_);
  if (auto it = images_.find(img.id); it != images_.end()) return it->second;  // same content, same image
  img.kernel = opt_.state_dir + "/images/" + img.kernel_sha256 + ".kernel";
  if (!write_file(img.kernel, r.kernel)) return api_error(K::kInternal, "InternalError", "cannot write " + img.kernel);
  if (!r.initrd.empty()) {
    img.initrd = opt_.state_dir + "/images/" + img.initrd_sha256 + ".initrd";
    if (!write_file(img.initrd, r.initrd)) return api_error(K::kInternal, "InternalError", "cannot write " + img.initrd);
  }
  if (!r.root_content.empty()) {
    img.root_content = opt_.state_dir + "/images/" + img.root_sha256 + ".root";
    if (!write_file(img.root_content, r.root_content))
      return api_error(K::kInternal, "InternalError", "cannot write " + img.root_content);
  }
  img.creation_date = now_rfc3339();
  if (auto p = store_.put(img); !p) return api_error(K::kInternal, "InternalError", p.error().message());
  images_[img.id] = img;
  return img;
}

ApiResult<std::vector<ImageRec>> Host::describe_images(const std::vector<std::string>& ids) {
  std::lock_guard lock(mu_);
  std::vector<ImageRec> out;
  if (ids.empty()) {
    for (const auto& [id, i] : images_) out.push_back(i);
    return out;
  }
  for (const auto& id : ids) {
    if (!valid_id(id, "ami") && id != kBuiltinImageId)
      return api_error(K::kInvalid, "InvalidAMIID.Malformed", "invalid id: \"" + id + "\"");
    auto it = images_.find(id);
    if (it == images_.end()) return api_error(K::kNotFound, "InvalidAMIID.NotFound", "the image id '" + id + "' does not exist");
    out.push_back(it->second);
  }
  return out;
}

ApiResult<VolumeRec> Host::create_volume(const VolumeRequest& r) {
  VolumeSpec spec = r.spec;
  if (spec.size_gib == 0) return api_error(K::kInvalid, "MissingParameter", "the volume size is required");
  if (auto e = complete_volume_spec(&spec, r.iops_given, r.throughput_given))
    return api_error(K::kInvalid, "InvalidParameterValue", *e);
  if (r.client_token.size() > 64)
    return api_error(K::kInvalid, "InvalidParameterValue", "client token is longer than 64 characters");
  const std::string hash = sha256_hex(spec.type + "|" + std::to_string(spec.size_gib) + "|" + std::to_string(spec.iops) +
                                      "|" + std::to_string(spec.throughput_mbps) + "|" +
                                      std::to_string(r.encrypted.value_or(true)));
  std::lock_guard lock(mu_);
  if (!r.client_token.empty()) {
    const auto t = tokens_.find("volume/" + r.client_token);
    if (t != tokens_.end()) {
      if (t->second.request_hash != hash)
        return api_error(K::kConflict, "IdempotentParameterMismatch",
                         "client token \"" + r.client_token + "\" was used with different parameters");
      if (auto v = volumes_.find(t->second.result); v != volumes_.end()) return v->second;
      return api_error(K::kNotFound, "InvalidVolume.NotFound", "the volume created with this token was deleted");
    }
  }
  AZOTE_TRY(v, new_volume(spec, r.encrypted.value_or(true), r.tags, r.client_token));
  std::optional<TokenRec> token;
  if (!r.client_token.empty()) token = TokenRec{r.client_token, "volume", hash, v.id};
  if (auto p = store_.put_all({}, {v}, token); !p) {
    ::unlink(v.file.c_str());
    return api_error(K::kInternal, "InternalError", "state not saved: " + p.error().message());
  }
  if (token) tokens_["volume/" + token->token] = *token;
  volumes_[v.id] = v;
  return v;
}

ApiResult<VolumeRec> Host::attach_volume(const std::string& volume_id, const std::string& instance_id, std::string device) {
  std::lock_guard lock(mu_);
  AZOTE_TRY(v, find_volume(volume_id));
  AZOTE_TRY(inst, find_instance(instance_id));
  if (v->state != "available")
    return api_error(K::kConflict, "VolumeInUse", "volume " + volume_id + " is " + v->state + " (attached to " + v->instance_id + ")");
  if (inst->state != state::kStopped)
    return api_error(K::kConflict, "IncorrectInstanceState",
                     "instance " + instance_id + " is " + inst->state +
                         "; azote-hv cannot hot-plug devices yet, so volumes attach to stopped instances");
  const auto attached = volumes_of(instance_id);
  if (attached.size() >= 16) return api_error(K::kInvalid, "AttachmentLimitExceeded", "instance " + instance_id + " has 16 volumes");
  auto taken = [&](const std::string& d) {
    return std::any_of(attached.begin(), attached.end(), [&](const VolumeRec* a) { return a->device == d; });
  };
  if (device.empty()) {
    for (char c = 'b'; c <= 'z' && device.empty(); ++c)
      if (!taken(std::string("/dev/vd") + c)) device = std::string("/dev/vd") + c;
  } else if (device.size() != 8 || device.compare(0, 7, "/dev/vd") != 0 || device[7] < 'b' || device[7] > 'z') {
    return api_error(K::kInvalid, "InvalidParameterValue", "device \"" + device + "\" is not /dev/vdb ... /dev/vdz");
  } else if (taken(device)) {
    return api_error(K::kInvalid, "InvalidParameterValue", "device " + device + " is already used on " + instance_id);
  }
  v->state = "in-use";
  v->instance_id = instance_id;
  v->device = device;
  v->attach_state = "attached";
  v->delete_on_termination = false;
  persist(*v);
  return *v;
}

ApiResult<VolumeRec> Host::detach_volume(const std::string& volume_id, bool force) {
  (void)force;
  std::lock_guard lock(mu_);
  AZOTE_TRY(v, find_volume(volume_id));
  if (v->state != "in-use") return api_error(K::kConflict, "IncorrectState", "volume " + volume_id + " is not attached");
  if (v->device == "/dev/vda")
    return api_error(K::kConflict, "OperationNotPermitted", "volume " + volume_id + " is the root volume of " + v->instance_id);
  const InstanceRec& inst = instances_[v->instance_id];
  if (inst.state != state::kStopped)
    return api_error(K::kConflict, "IncorrectInstanceState",
                     "instance " + inst.id + " is " + inst.state + "; volumes detach from stopped instances");
  VolumeRec before = *v;
  v->state = "available";
  v->instance_id.clear();
  v->device.clear();
  v->attach_state.clear();
  v->delete_on_termination = false;
  persist(*v);
  before.attach_state = "detached";
  return before;
}

ApiResult<void> Host::delete_volume(const std::string& volume_id) {
  std::lock_guard lock(mu_);
  AZOTE_TRY(v, find_volume(volume_id));
  if (v->state != "available")
    return api_error(K::kConflict, "VolumeInUse", "volume " + volume_id + " is attached to " + v->instance_id);
  AZOTE_TRYV(delete_volume_files(*v));
  volumes_.erase(volume_id);
  return {};
}

ApiResult<std::vector<VolumeRec>> Host::describe_volumes(const std::vector<std::string>& ids) {
  std::lock_guard lock(mu_);
  std::vector<VolumeRec> out;
  if (ids.empty()) {
    for (const auto& [id, v] : volumes_) out.push_back(v);
    return out;
  }
  for (const auto& id : ids) {
    AZOTE_TRY(v, find_volume(id));
    out.push_back(*v);
  }
  return out;
}

// ---- VPC ---------------------------------------------------------------------------

ApiResult<SecurityGroupRec*> Host::find_group(const std::string& id) {
  if (!valid_id(id, "sg")) return api_error(K::kInvalid, "InvalidGroupId.Malformed", "invalid id: \"" + id + "\"");
  auto it = groups_.find(id);
  if (it == groups_.end())
    return api_error(K::kNotFound, "InvalidGroup.NotFound", "the security group '" + id + "' does not exist");
  return &it->second;
}

// ---- the fabric process ------------------------------------------------------------

void Host::stop_fabric() {
  std::optional<Proc> p;
  {
    std::lock_guard lock(mu_);
    p = std::move(fabric_);
    fabric_.reset();
    fabric_died_ = false;
  }
  if (p) {  // waited for without mu_: the API goes on meanwhile
    procs_.send_signal(*p, SIGTERM);
    if (!Processes::wait_exit(*p, 5000)) procs_.send_signal(*p, SIGKILL);
    Processes::wait_exit(*p, 2000);
    procs_.reap(*p);
  }
  procs_.release("fabric");  // its cgroup and relay inbox
}

bool Host::fabric_alive() {
  std::lock_guard lock(mu_);
  return fabric_ && !Processes::wait_exit(*fabric_, 0);
}

void Host::sync_fabric() {
  std::lock_guard net_lock(net_mu_);
  RegionNetworkRec rn;
  std::vector<VpcRec> vpcs;
  std::vector<SecurityGroupRec> groups;
  std::vector<control::Json> neighbours;
  std::vector<std::string> card_ctls;
  bool alive = false;
  {
    std::lock_guard lock(mu_);
    rn = region_net_;
    for (const auto& [id, v] : vpcs_) vpcs.push_back(v);
    for (const auto& [id, g] : groups_) groups.push_back(g);
    for (auto& [id, rt] : rt_) {
      if (!rt.net || !rt.net->proc) continue;
      card_ctls.push_back(card_path(*rt.net, ".ctl"));
      const auto& st = instances_[id].state;
      if (st != state::kRunning && st != state::kPending) continue;
      if (auto n = neighbour_of(id)) neighbours.push_back(std::move(*n));
    }
    alive = fabric_ && !Processes::wait_exit(*fabric_, 0);
  }
  const bool want = rn.fabric_host_id != 0 && !opt_.underlay.empty();
  const std::string ctl = fabric_ctl();
  auto call = [&](const control::Json& req) { return control::call_once(ctl, req, kControlTimeout); };
  // A peer the region took away: the card cannot forget a peer's key, so the process is
  // started afresh without it.
  bool peer_gone = false;
  for (const auto& [id, given] : fabric_peers_)
    peer_gone |= std::none_of(rn.peers.begin(), rn.peers.end(), [&](const FabricPeerRec& p) { return p.host_id == id; });
  if (alive && (!want || fabric_running_id_ != rn.fabric_host_id || peer_gone)) {
    stop_fabric();
    alive = false;
    for (const auto& c : card_ctls) (void)control::call_once(c, {{"op", "set-fabric-relay"}, {"inbox", nullptr}}, kControlTimeout);
  }
  if (!want) return;
  if (!alive) {
    stop_fabric();  // a dead one reaped, whatever is left of it released (a controller restart's, too)
    fabric_running_id_ = 0;
    fabric_peers_.clear();
    fabric_maps_.clear();
    launch::SpawnRequest req;
    req.role = launch::Role::kCardFabric;
    req.instance = launch::kFabricInstance;
    req.args = {"--control", "fd:{control}", "--metrics", "fd:{metrics}", "--host-id", std::to_string(rn.fabric_host_id),
                "--region", opt_.region, "--fabric-inbox", kFabricInbox};
    req.listens = {{"control", ctl}, {"metrics", opt_.state_dir + "/fabric.metrics"}};
    req.output = opt_.state_dir + "/fabric.log";
    req.limits = card_limits();
    req.underlay = opt_.underlay;
    auto p = procs_.spawn(req);
    if (!p) {
      LOG_ERROR("controller: cannot start the fabric process (underlay %s): %s; instances reach no other host",
                opt_.underlay.c_str(), p.error().message().c_str());
      return;
    }
    bool up = false;
    for (int i = 0; i < 50 && !up; ++i) up = answers(ctl, 200ms);
    {
      std::lock_guard lock(mu_);
      fabric_ = std::move(p).value();
      fabric_died_ = false;
      watch(fabric_->pidfd.get());
    }
    if (!up) {
      LOG_ERROR("controller: the fabric process does not answer on %s (see %s/fabric.log)", ctl.c_str(), opt_.state_dir.c_str());
      return;
    }
    LOG_INFO("controller: fabric process started (host id %u, underlay %s)", rn.fabric_host_id, opt_.underlay.c_str());
    fabric_running_id_ = rn.fabric_host_id;
    fabric_peers_.clear();
    fabric_maps_.clear();
    // The model its neighbours need (VPCs and groups by id; it applies no group itself),
    // the host's ENIs, and every instance card's relay.
    for (const auto& v : vpcs) (void)call({{"op", "add-vpc"}, {"vpc", {{"id", v.id}, {"cidr", v.cidr}}}});
    for (const auto& g : groups) (void)call({{"op", "set-security-group-rules"}, {"group", g.id}});
    for (const auto& n : neighbours)
      if (auto r = call({{"op", "add-neighbour"}, {"eni", n}}); !r)
        LOG_ERROR("controller: fabric process: add-neighbour: %s", r.error().message().c_str());
    for (const auto& c : card_ctls)
      (void)control::call_once(c, {{"op", "set-fabric-relay"}, {"inbox", kFabricInbox}, {"uid", opt_.uid_base + launch::kFabricId}},
                               kControlTimeout);
  } else {
    // New VPCs and groups may be named by neighbours to come.
    for (const auto& v : vpcs) (void)call({{"op", "add-vpc"}, {"vpc", {{"id", v.id}, {"cidr", v.cidr}}}});
    for (const auto& g : groups) (void)call({{"op", "set-security-group-rules"}, {"group", g.id}});
  }
  for (const auto& p : rn.peers) {
    const std::string given = p.address + "|" + p.key_hex + "|" + std::to_string(p.key_id);
    if (fabric_peers_[p.host_id] == given) continue;
    auto r = call({{"op", "set-fabric-peer"},
                   {"peer", {{"host", p.host_id}, {"address", p.address}, {"key", p.key_hex}, {"key_id", p.key_id}}}});
    if (!r) {
      LOG_ERROR("controller: fabric process: peer %u: %s", p.host_id, r.error().message().c_str());
      continue;
    }
    fabric_peers_[p.host_id] = given;
  }
  std::set<std::string> want_maps;
  control::Json add = control::Json::array();
  for (const auto& m : rn.mappings) {
    const std::string k = m.vpc_id + "|" + m.ip + "|" + std::to_string(m.host_id);
    want_maps.insert(k);
    if (!fabric_maps_.count(k) && fabric_peers_.find(m.host_id) != fabric_peers_.end())
      add.push_back({{"vpc", m.vpc_id}, {"ip", m.ip}, {"host", m.host_id}});
  }
  for (const auto& k : fabric_maps_) {
    if (want_maps.count(k)) continue;
    const size_t a = k.find('|'), b = k.find('|', a + 1);
    (void)call({{"op", "remove-fabric-mapping"}, {"vpc", k.substr(0, a)}, {"ip", k.substr(a + 1, b - a - 1)}});
  }
  std::erase_if(fabric_maps_, [&](const std::string& k) { return !want_maps.count(k); });
  if (!add.empty()) {
    if (auto r = call({{"op", "add-fabric-mapping"}, {"mappings", add}}); !r) {
      LOG_ERROR("controller: fabric process: mappings: %s", r.error().message().c_str());
    } else {
      for (const auto& m : add)
        fabric_maps_.insert(m["vpc"].get<std::string>() + "|" + m["ip"].get<std::string>() + "|" +
                            std::to_string(m["host"].get<uint32_t>()));
    }
  }
}

ApiResult<uint64_t> Host::apply_region_network(RegionNetworkRec n) {
  std::set<std::string> touched_groups;
  std::vector<VpcRec> new_vpcs;
  {
    std::lock_guard lock(mu_);
    if (n.generation == 0) return api_error(K::kInvalid, "InvalidParameterValue", "the region's network needs a generation");
    if (n.generation < region_net_.generation)
      return api_error(K::kConflict, "IncorrectState",
                       "generation " + std::to_string(n.generation) + " is older than the " +
                           std::to_string(region_net_.generation) + " this host holds");
    if (n.generation == region_net_.generation) return region_net_.generation;  // a retry
    std::set<std::string> old_v, old_s, old_g, new_v, new_s, new_g;
    for (const auto& v : region_net_.vpcs) old_v.insert(v.id);
    for (const auto& x : region_net_.subnets) old_s.insert(x.id);
    for (const auto& g : region_net_.groups) old_g.insert(g.id);
    std::map<std::string, std::string> vpc_cidr;
    for (auto& v : n.vpcs) {
      v.is_default = false;  // the host's own default VPC stays the default here
      if (!valid_id(v.id, "vpc") || !parse_cidr(v.cidr) || !new_v.insert(v.id).second)
        return api_error(K::kInvalid, "InvalidParameterValue", "the region's VPC " + v.id + " (" + v.cidr + ") is not a VPC id with a CIDR block, or is given twice");
      if (vpcs_.count(v.id) && !old_v.count(v.id))
        return api_error(K::kInvalid, "InvalidParameterValue", "VPC " + v.id + " is this host's own");
      vpc_cidr[v.id] = v.cidr;
    }
    for (auto& x : n.subnets) {
      x.is_default = false;
      if (!valid_id(x.id, "subnet") || !vpc_cidr.count(x.vpc_id) || !new_s.insert(x.id).second)
        return api_error(K::kInvalid, "InvalidParameterValue", "the region's subnet " + x.id + " names no VPC of the push, or is given twice");
      if (auto why = check_network_layout(vpc_cidr[x.vpc_id], x.cidr))
        return api_error(K::kInvalid, "InvalidParameterValue", "the region's subnet " + x.id + ": " + *why);
      if (subnets_.count(x.id) && !old_s.count(x.id))
        return api_error(K::kInvalid, "InvalidParameterValue", "subnet " + x.id + " is this host's own");
    }
    for (const auto& g : n.groups) {
      if (!valid_id(g.id, "sg") || !vpc_cidr.count(g.vpc_id) || !new_g.insert(g.id).second)
        return api_error(K::kInvalid, "InvalidParameterValue", "the region's security group " + g.id + " names no VPC of the push, or is given twice");
      if (groups_.count(g.id) && !old_g.count(g.id))
        return api_error(K::kInvalid, "InvalidParameterValue", "security group " + g.id + " is this host's own");
    }
    std::set<uint32_t> peer_ids;
    for (const auto& p : n.peers) {
      const size_t colon = p.address.rfind(':');
      if (p.host_id == 0 || p.host_id == n.fabric_host_id || !peer_ids.insert(p.host_id).second ||
          colon == std::string::npos || !vpc::parse_ipv4(p.address.substr(0, colon)) || p.key_hex.size() != 64)
        return api_error(K::kInvalid, "InvalidParameterValue",
                         "fabric peer " + std::to_string(p.host_id) + " (" + p.address + "): a host id other than this host's, given once, an IPV4:PORT and a 32-byte key");
    }
    for (const auto& m : n.mappings)
      if (!vpc_cidr.count(m.vpc_id) || !vpc::parse_ipv4(m.ip) || !peer_ids.count(m.host_id))
        return api_error(K::kInvalid, "InvalidParameterValue",
                         "fabric mapping " + m.vpc_id + " " + m.ip + " -> host " + std::to_string(m.host_id) + ": a VPC of the push, an address, a peer");
    for (const auto& [eid, e] : enis_) {
      if (old_s.count(e.subnet_id) && !new_s.count(e.subnet_id))
        return api_error(K::kConflict, "DependencyViolation", "subnet " + e.subnet_id + " is used by " + eid + " of " + e.instance_id);
      for (const auto& g : e.groups)
        if (old_g.count(g) && !new_g.count(g))
          return api_error(K::kConflict, "DependencyViolation", "security group " + g + " is used by " + eid + " of " + e.instance_id);
    }
    if (auto p = store_.put(n); !p) return api_error(K::kInternal, "InternalError", "state not saved: " + p.error().message());
    for (const auto& id : old_v) vpcs_.erase(id);
    for (const auto& id : old_s) subnets_.erase(id);
    for (const auto& id : old_g) groups_.erase(id);
    for (const auto& v : n.vpcs) {
      if (!old_v.count(v.id)) new_vpcs.push_back(v);
      vpcs_[v.id] = v;
    }
    for (const auto& x : n.subnets) subnets_[x.id] = x;
    for (const auto& g : n.groups) groups_[g.id] = g;
    touched_groups = old_g;
    touched_groups.insert(new_g.begin(), new_g.end());
    region_net_ = std::move(n);
  }
  // Running cards: the new VPCs (neighbours in them are refused without), every group.
  {
    std::lock_guard net_lock(net_mu_);
    std::vector<Card*> cards;
    {
      std::lock_guard lock(mu_);
      cards = net_cards();
    }
    for (Card* c : cards) {
      if (!c->model_ok) continue;  // it gets the whole model when it (re)starts
      for (const auto& v : new_vpcs) {
        auto r = control::call_once(card_path(*c, ".ctl"), {{"op", "add-vpc"}, {"vpc", {{"id", v.id}, {"cidr", v.cidr}}}},
                                    kControlTimeout);
        if (!r && r.error().context.find("declared twice") == std::string::npos) {
          LOG_ERROR("controller: %s: add-vpc %s: %s (the whole model is pushed again on its next start)", c->label.c_str(),
                    v.id.c_str(), r.error().message().c_str());
          c->model_ok = false;
        }
      }
    }
  }
  for (const auto& g : touched_groups) net_push_group(g);
  sync_fabric();
  std::lock_guard lock(mu_);
  return region_net_.generation;
}

ApiResult<std::vector<VpcRec>> Host::describe_vpcs(const std::vector<std::string>& ids) {
  std::lock_guard lock(mu_);
  std::vector<VpcRec> out;
  if (ids.empty()) {
    for (const auto& [id, v] : vpcs_) out.push_back(v);
    return out;
  }
  for (const auto& id : ids) {
    if (!valid_id(id, "vpc")) return api_error(K::kInvalid, "InvalidVpcID.Malformed", "invalid id: \"" + id + "\"");
    auto it = vpcs_.find(id);
    if (it == vpcs_.end()) return api_error(K::kNotFound, "InvalidVpcID.NotFound", "the vpc ID '" + id + "' does not exist");
    out.push_back(it->second);
  }
  return out;
}

ApiResult<std::vector<SubnetView>> Host::describe_subnets(const std::vector<std::string>& ids) {
  std::lock_guard lock(mu_);
  std::vector<const SubnetRec*> want;
  if (ids.empty()) {
    for (const auto& [id, sn] : subnets_) want.push_back(&sn);
  } else {
    for (const auto& id : ids) {
      if (!valid_id(id, "subnet")) return api_error(K::kInvalid, "InvalidSubnetID.Malformed", "invalid id: \"" + id + "\"");
      auto it = subnets_.find(id);
      if (it == subnets_.end())
        return api_error(K::kNotFound, "InvalidSubnetID.NotFound", "the subnet ID '" + id + "' does not exist");
      want.push_back(&it->second);
    }
  }
  std::vector<SubnetView> out;
  for (const SubnetRec* sn : want) {
    uint32_t used = 0;
    for (const auto& [eid, e] : enis_) used += e.subnet_id == sn->id;
    const auto cidr = parse_cidr(sn->cidr);
    const uint32_t usable = cidr ? usable_addresses(*cidr) : 0;
    out.push_back({*sn, usable > used ? usable - used : 0});
  }
  return out;
}

ApiResult<SecurityGroupRec> Host::create_security_group(const std::string& name, const std::string& description,
                                                        const std::string& vpc_id) {
  if (name.empty()) return api_error(K::kInvalid, "MissingParameter", "the request must contain the parameter groupName");
  if (description.empty())
    return api_error(K::kInvalid, "MissingParameter", "the request must contain the parameter groupDescription");
  auto printable = [](const std::string& t) {
    return std::all_of(t.begin(), t.end(), [](char c) { return c >= ' ' && c <= '~'; });
  };
  if (name.size() > 255 || !printable(name))
    return api_error(K::kInvalid, "InvalidParameterValue", "group name: 1-255 printable ASCII characters");
  if (description.size() > 255 || !printable(description))
    return api_error(K::kInvalid, "InvalidParameterValue", "group description: 1-255 printable ASCII characters");
  if (name.rfind("sg-", 0) == 0)
    return api_error(K::kInvalid, "InvalidParameterValue", "group names may not be in the format sg-*");
  SecurityGroupRec g;
  {
    std::lock_guard lock(mu_);
    std::string vpc = vpc_id;
    if (vpc.empty()) {
      for (const auto& [id, v] : vpcs_)
        if (v.is_default) vpc = id;
    } else if (!valid_id(vpc, "vpc")) {
      return api_error(K::kInvalid, "InvalidVpcID.Malformed", "invalid id: \"" + vpc + "\"");
    }
    if (!vpcs_.count(vpc)) return api_error(K::kNotFound, "InvalidVpcID.NotFound", "the vpc ID '" + vpc + "' does not exist");
    if (name == "default")
      return api_error(K::kInvalid, "InvalidGroup.Reserved", "the security group name 'default' is reserved");
    for (const auto& [id, other] : groups_)
      if (other.vpc_id == vpc && other.name == name)
        return api_error(K::kConflict, "InvalidGroup.Duplicate",
                         "the security group '" + name + "' already exists for VPC '" + vpc + "'");
    g.id = new_id("sg");
    g.vpc_id = vpc;
    g.name = name;
    g.description = description;
    g.egress = default_egress();  // EC2: a new group allows all outbound traffic, no inbound
    if (auto p = store_.put(g); !p) return api_error(K::kInternal, "InternalError", "state not saved: " + p.error().message());
    groups_[g.id] = g;
  }
  net_push_group(g.id);
  return g;
}

ApiResult<void> Host::delete_security_group(const std::string& id) {
  {
    std::lock_guard lock(mu_);
    AZOTE_TRY(g, find_group(id));
    if (g->name == "default")
      return api_error(K::kConflict, "CannotDelete", "the default security group of " + g->vpc_id + " cannot be deleted");
    for (const auto& [eid, e] : enis_)
      if (std::find(e.groups.begin(), e.groups.end(), id) != e.groups.end())
        return api_error(K::kConflict, "DependencyViolation",
                         "resource " + id + " has a dependent object: network interface " + eid + " of " + e.instance_id);
    for (const auto& [gid, other] : groups_) {
      if (gid == id) continue;
      for (const auto* rules : {&other.ingress, &other.egress})
        for (const auto& r : *rules)
          if (const auto* ref = std::get_if<vpc::GroupRef>(&r.peer); ref && ref->group_id == id)
            return api_error(K::kConflict, "DependencyViolation",
                             "resource " + id + " has a dependent object: a rule of security group " + gid);
    }
    if (auto e = store_.erase_security_group(id); !e)
      return api_error(K::kInternal, "InternalError", "state not saved: " + e.error().message());
    groups_.erase(id);
  }
  net_push_group(id);
  return {};
}

ApiResult<SecurityGroupRec> Host::change_rules(const std::string& group_id, bool ingress, bool authorize,
                                               const std::vector<Permission>& perms) {
  SecurityGroupRec out;
  {
    std::lock_guard lock(mu_);
    if (group_id.empty()) return api_error(K::kInvalid, "MissingParameter", "the request must contain the parameter groupId");
    AZOTE_TRY(g, find_group(group_id));
    const std::string vpc = g->vpc_id;
    auto rules = rules_of(perms, [&](const std::string& ref) {
      auto it = groups_.find(ref);
      return it != groups_.end() && it->second.vpc_id == vpc;
    });
    if (!rules) return api_error(rules.error().not_found ? K::kNotFound : K::kInvalid, rules.error().code, rules.error().sentence);
    std::vector<vpc::Rule> next = ingress ? g->ingress : g->egress;
    for (const auto& r : *rules) {
      const auto at = std::find(next.begin(), next.end(), r);
      if (authorize) {
        if (at != next.end())
          return api_error(K::kConflict, "InvalidPermission.Duplicate",
                           "the specified rule \"" + r.to_string() + "\" already exists in " + group_id);
        next.push_back(r);
      } else {
        if (at == next.end())
          return api_error(K::kNotFound, "InvalidPermission.NotFound",
                           "the specified rule \"" + r.to_string() + "\" does not exist in " + group_id);
        next.erase(at);
      }
    }
    if (next.size() > 60)
      return api_error(K::kInvalid, "RulesPerSecurityGroupLimitExceeded",
                       "a security group has at most 60 " + std::string(ingress ? "inbound" : "outbound") + " rules");
    SecurityGroupRec updated = *g;
    (ingress ? updated.ingress : updated.egress) = std::move(next);
    if (auto p = store_.put(updated); !p) return api_error(K::kInternal, "InternalError", "state not saved: " + p.error().message());
    *g = updated;
    out = updated;
  }
  net_push_group(group_id);
  return out;
}

ApiResult<std::vector<SecurityGroupRec>> Host::describe_security_groups(const std::vector<std::string>& ids) {
  std::lock_guard lock(mu_);
  std::vector<SecurityGroupRec> out;
  if (ids.empty()) {
    for (const auto& [id, g] : groups_) out.push_back(g);
    return out;
  }
  for (const auto& id : ids) {
    AZOTE_TRY(g, find_group(id));
    out.push_back(*g);
  }
  return out;
}

NetworkView Host::network_view() {
  std::lock_guard lock(mu_);
  NetworkView v;
  for (const auto& [id, e] : enis_) v.eni_of[e.instance_id] = e;
  for (const auto& [id, g] : groups_) v.group_names[id] = g.name;
  v.region = opt_.region;
  return v;
}

ApiResult<control::Json> Host::describe_root_of_trust() {
  const std::string sock = opt_.state_dir + "/rot.sock";
  auto r = control::call_once(sock, {{"op", "describe"}}, kControlTimeout);
  if (!r)
    return api_error(K::kUnsupported, "RootOfTrustUnavailable",
                     "the host's root of trust (azote-rot, " + sock + ") does not answer: " + r.error().message());
  return std::move(r).value();
}

ApiResult<Host::Attestation> Host::instance_attestation(const std::string& id, const std::string& nonce,
                                                        const std::string& user_data, const std::string& public_key) {
  for (const auto& [name, v] : {std::pair<const char*, const std::string*>{"Nonce", &nonce},
                                {"UserData", &user_data}, {"PublicKey", &public_key}})
    if (v->size() > attest::kMaxOptional)
      return api_error(K::kInvalid, "InvalidParameterValue",
                       std::string(name) + " is " + std::to_string(v->size()) + " bytes; at most 1024");
  {
    std::lock_guard lock(mu_);
    AZOTE_TRY(rec, find_instance(id));
    if (rec->state != state::kRunning)
      return api_error(K::kConflict, "IncorrectInstanceState",
                       "instance " + id + " is " + rec->state + ": only a running instance can be attested");
  }
  auto hv = control::call_once(instance_dir(id) + "/hv.ctl", {{"op", "describe"}}, kControlTimeout);
  if (!hv) return api_error(K::kInternal, "InternalError", "instance " + id + "'s azote-hv does not answer: " + hv.error().message());
  const control::Json measured = hv->value("measurements", control::Json());
  if (!measured.is_object() || !measured.contains("pcrs"))
    return api_error(K::kInternal, "InternalError", "instance " + id + "'s azote-hv reports no measurements");
  // PCR 0-15 as Nitro has them for enclaves: those not measured are zero.
  control::Json pcrs = control::Json::object();
  for (uint32_t i = 0; i < 16; ++i) pcrs[std::to_string(i)] = to_hex(attest::Pcr{});
  for (const char* i : {"0", "1", "2"}) pcrs[i] = measured["pcrs"].value(i, "");
  pcrs["4"] = to_hex(attest::extend(attest::Pcr{}, std::span(reinterpret_cast<const uint8_t*>(id.data()), id.size())));
  // 8: the release's signing key, 9: the azote-hv binary it runs, as the launcher checked
  // them against the release; zero without a release (development).
  if (auto l = procs_.describe(); l) {
    auto measured_digest = [](const std::string& hex) -> std::optional<std::string> {
      auto d = from_hex(hex);
      if (!d || d->size() != attest::kPcrBytes) return std::nullopt;
      return to_hex(attest::extend(attest::Pcr{}, *d));
    };
    const launch::Json rel = l->value("release", launch::Json());
    if (rel.is_object())
      if (auto v = measured_digest(rel.value("key_sha384", ""))) pcrs["8"] = *v;
    for (const auto& p : l->value("processes", launch::Json::array()))
      if (p.value("role", "") == "hv" && p.value("instance", "") == id)
        if (auto v = measured_digest(p.value("binary_sha384", ""))) pcrs["9"] = *v;
  }
  auto as_hex = [](const std::string& b) { return to_hex(std::span(reinterpret_cast<const uint8_t*>(b.data()), b.size())); };
  control::Json req = {{"op", "attest"}, {"module_id", id}, {"pcrs", pcrs}};
  if (!nonce.empty()) req["nonce"] = as_hex(nonce);
  if (!user_data.empty()) req["user_data"] = as_hex(user_data);
  if (!public_key.empty()) req["public_key"] = as_hex(public_key);
  const std::string sock = opt_.state_dir + "/rot.sock";
  auto r = control::call_once(sock, req, kControlTimeout);
  if (!r)
    return api_error(K::kUnsupported, "RootOfTrustUnavailable",
                     "the host's root of trust (azote-rot, " + sock + ") did not attest: " + r.error().message());
  auto doc = from_hex(r->value("document", ""));
  if (!doc) return api_error(K::kInternal, "InternalError", "azote-rot answered without a document");
  Attestation a;
  a.document.assign(doc->begin(), doc->end());
  a.mode = r->value("mode", "");
  // What the document carries: zero in development mode whatever was measured.
  auto parsed = attest::parse(*doc);
  if (!parsed) return api_error(K::kInternal, "InternalError", "azote-rot's document: " + parsed.error().message());
  for (const auto& [i, v] : parsed->document.pcrs) a.pcrs[i] = to_hex(v);
  return a;
}

std::string Host::metrics_text() {
  std::string out;
  {
    std::lock_guard lock(mu_);
    std::map<std::string, int> by_state;
    for (auto s : {state::kPending, state::kRunning, state::kStopping, state::kStopped, state::kShuttingDown, state::kTerminated})
      by_state[std::string(s)] = 0;
    for (const auto& [id, r] : instances_) ++by_state[r.state];
    out += "# HELP azote_instances Instances on this host by state.\n# TYPE azote_instances gauge\n";
    for (const auto& [s, n] : by_state) out += "azote_instances{state=\"" + s + "\"} " + std::to_string(n) + "\n";
    out += "# HELP azote_vcpus_allocated vCPUs held by pending, running and stopping instances.\n# TYPE azote_vcpus_allocated gauge\n";
    out += "azote_vcpus_allocated " + std::to_string(used_vcpus()) + "\n";
    if (guard_state_.is_object()) {
      out += "# HELP azote_write_guard_active Whether the write guard's BPF LSM programs are attached.\n"
             "# TYPE azote_write_guard_active gauge\n";
      out += "azote_write_guard_active " + std::string(guard_state_.value("active", false) ? "1" : "0") + "\n";
      out += "# HELP azote_write_guard_denials_total Changes to protected files the write guard refused.\n"
             "# TYPE azote_write_guard_denials_total counter\n";
      out += "azote_write_guard_denials_total " + std::to_string(guard_state_.value("denials_total", uint64_t{0})) + "\n";
      out += "# HELP azote_write_guard_changes_seen_total Changes to protected files seen but not refused (fanotify).\n"
             "# TYPE azote_write_guard_changes_seen_total counter\n";
      out += "azote_write_guard_changes_seen_total " + std::to_string(guard_state_.value("changes_seen_total", uint64_t{0})) +
             "\n";
      out += "# HELP azote_write_guard_rehash_mismatches_total Guarded binaries whose re-hash did not match the release.\n"
             "# TYPE azote_write_guard_rehash_mismatches_total counter\n";
      out += "azote_write_guard_rehash_mismatches_total " +
             std::to_string(guard_state_.value("mismatches_total", uint64_t{0})) + "\n";
    }
    out += "# HELP azote_vcpus_capacity vCPUs this host sells.\n# TYPE azote_vcpus_capacity gauge\n";
    out += "azote_vcpus_capacity " + std::to_string(opt_.capacity_vcpus) + "\n";
    out += "# HELP azote_dedicated_vcpus_allocated vCPUs of dedicated (non-burstable) types held.\n# TYPE azote_dedicated_vcpus_allocated gauge\n";
    out += "azote_dedicated_vcpus_allocated " + std::to_string(used_dedicated_vcpus()) + "\n";
    out += "# HELP azote_dedicated_vcpus_capacity vCPUs of dedicated types this host sells (guest CPUs x ratio).\n# TYPE azote_dedicated_vcpus_capacity gauge\n";
    out += "azote_dedicated_vcpus_capacity " + std::to_string(dedicated_capacity()) + "\n";
    out += "# HELP azote_memory_allocated_bytes Guest memory held by instances.\n# TYPE azote_memory_allocated_bytes gauge\n";
    out += "azote_memory_allocated_bytes " + std::to_string(used_memory_mib() << 20) + "\n";
    out += "# HELP azote_memory_capacity_bytes Guest memory this host sells.\n# TYPE azote_memory_capacity_bytes gauge\n";
    out += "azote_memory_capacity_bytes " + std::to_string(opt_.capacity_memory_mib << 20) + "\n";
    size_t vols = 0;
    for (const auto& [id, v] : volumes_) vols += v.state != "deleted";
    out += "# HELP azote_volumes Volumes on this host.\n# TYPE azote_volumes gauge\nazote_volumes " + std::to_string(vols) + "\n";
    out += "# HELP azote_card_restarts_total Block card restarts after one died (all instances').\n# TYPE azote_card_restarts_total counter\n";
    out += "azote_card_restarts_total " + std::to_string(card_restarts_["blk"]) + "\n";
    out += "# HELP azote_card_net_restarts_total Network card restarts after it died.\n# TYPE azote_card_net_restarts_total counter\n";
    out += "azote_card_net_restarts_total " + std::to_string(card_restarts_["net"]) + "\n";
    out += "# HELP azote_network_interfaces ENIs on this host (kept by stopped instances too).\n# TYPE azote_network_interfaces gauge\n";
    out += "azote_network_interfaces " + std::to_string(enis_.size()) + "\n";
  }
  // The cards' own counters (ops, bytes, latency per volume; packets, drops per ENI),
  // as they render them.
  std::vector<std::string> endpoints;
  {
    std::lock_guard lock(mu_);
    for (const auto& [id, rt] : rt_)
      for (const auto* c : rt.cards())
        if (c && c->proc) endpoints.push_back(card_path(*c, ".metrics"));
  }
  for (const auto& e : endpoints) out += read_unix_socket(e);
  return out;
}

// ---- jobs ------------------------------------------------------------------------

void Host::enqueue(const std::string& id, Job job) {
  std::lock_guard lock(mu_);
  jobs_.emplace_back(id, job);
  cv_.notify_all();
}

void Host::worker_loop() {
  std::unique_lock lock(mu_);
  for (;;) {
    auto it = jobs_.end();
    cv_.wait(lock, [&] {
      if (workers_stop_) return true;
      it = std::find_if(jobs_.begin(), jobs_.end(), [&](const auto& j) { return !rt_[j.first].busy; });
      return it != jobs_.end();
    });
    if (workers_stop_) return;
    const auto [id, job] = *it;
    jobs_.erase(it);
    rt_[id].busy = true;
    lock.unlock();
    run_job(id, job);
    lock.lock();
    rt_[id].busy = false;
    cv_.notify_all();
  }
}

void Host::run_job(const std::string& id, Job job) {
  switch (job) {
    case Job::kLaunch: {
      {
        std::lock_guard lock(mu_);
        if (instances_[id].state != state::kPending) return;  // terminated meanwhile
      }
      auto r = launch(id);
      if (r) return;
      LOG_WARN("instance %s: launch failed: %s", id.c_str(), r.error().sentence.c_str());
      // In the audit log too: a launch the host refused (a binary outside the signed
      // release, a card that would not start) is an event, not only a state reason.
      if (events_) events_("instance.launch-failed", {id}, r.error().sentence);
      stop_hv(id, true);
      std::unique_lock lock(mu_);
      InstanceRec& inst = instances_[id];
      if (inst.state != state::kPending) return;  // a terminate is queued and will finish the job
      std::vector<std::string> vols;
      for (VolumeRec* v : volumes_of(id)) vols.push_back(v->id);
      const bool first_boot = rt_[id].first_boot;
      inst.hv_pid = 0;
      if (first_boot) {
        set_state(inst, state::kShuttingDown);
        lock.unlock();
        finish_terminate(id);
        lock.lock();
        set_state(instances_[id], state::kTerminated, "Server.InternalError", r.error().sentence);
      } else {
        set_state(inst, state::kStopped, "Server.InternalError", r.error().sentence);
      }
      return;
    }
    case Job::kStop:
    case Job::kStopForce: {
      stop_hv(id, job == Job::kStopForce);
      std::lock_guard lock(mu_);
      InstanceRec& inst = instances_[id];
      if (inst.state == state::kStopping) {
        inst.hv_pid = 0;
        set_state(inst, state::kStopped, "Client.UserInitiatedShutdown", "User initiated shutdown");
      }
      return;
    }
    case Job::kReboot: {
      {
        std::lock_guard lock(mu_);  // the hv may have died (and the instance stopped) since it was queued
        if (instances_[id].state != state::kRunning) return;
      }
      stop_hv(id, false);
      auto r = launch(id);
      if (r) return;
      if (events_) events_("instance.launch-failed", {id}, r.error().sentence);
      stop_hv(id, true);
      std::lock_guard lock(mu_);
      InstanceRec& inst = instances_[id];
      inst.hv_pid = 0;
      if (inst.state == state::kRunning) set_state(inst, state::kStopped, "Server.InternalError", r.error().sentence);
      return;
    }
    case Job::kCleanup:  // an hv that exited on its own: its volumes leave the card, in queue order
      stop_hv(id, false);
      return;
    case Job::kTerminate: {
      stop_hv(id, false);
      finish_terminate(id);
      std::lock_guard lock(mu_);
      InstanceRec& inst = instances_[id];
      inst.hv_pid = 0;
      set_state(inst, state::kTerminated, "Client.UserInitiatedShutdown", "User initiated shutdown");
      return;
    }
  }
}

ApiResult<void> Host::launch(const std::string& id) {
  // Where a launch's time goes, at debug level: ms since the job took it.
  const auto t0 = std::chrono::steady_clock::now();
  auto since = [&] { return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count(); };
  double t_shell = 0, t_answers = 0, t_blk = 0, t_net_spawned = 0, t_net = 0;
  InstanceRec inst;
  ImageRec img;
  std::vector<VolumeRec> vols;
  std::string eni_id;
  {
    std::lock_guard lock(mu_);
    inst = instances_[id];
    img = images_[inst.image_id];
    for (VolumeRec* v : volumes_of(id)) vols.push_back(*v);
    if (const EniRec* e = eni_of(id)) eni_id = e->id;
    Runtime& rt = rt_[id];
    rt.expect_exit = false;
    rt.exited = false;
    rt.exit_status = -1;
  }
  if (inst.state != state::kPending && inst.state != state::kRunning)
    return api_error(K::kInternal, "InternalError", "instance is " + inst.state + "; not launching");
  const InstanceType* type = find_instance_type(inst.type);
  Card* blk = nullptr;
  Card* net = nullptr;
  Card* tpm = nullptr;
  uint32_t slot = 0;
  {
    std::lock_guard lock(mu_);
    Runtime& rt = rt_[id];
    if (rt.slot < 0) rt.slot = free_slot();
    slot = static_cast<uint32_t>(rt.slot);
    if (!rt.blk) rt.blk = std::make_unique<Card>("blk/" + id, "block card of " + id, id);
    blk = rt.blk.get();
    if (!eni_id.empty()) {
      if (!rt.net) rt.net = std::make_unique<Card>("net/" + id, "network card of " + id, id);
      net = rt.net.get();
    }
    if (!img.tpm_support.empty()) {
      if (!rt.tpm) rt.tpm = std::make_unique<Card>("tpm/" + id, "TPM card of " + id, id);
      tpm = rt.tpm.get();
    }
  }
  // 1. The empty shell: memory, vCPUs parked, kernel loaded, a control socket; in its
  // jail, under the instance's uid, with the files it needs handed over by the launcher.
  const std::string dir = instance_dir(id);
  const std::string ctl = dir + "/hv.ctl";
  // The guest runs on its type less the enclaves' pool (none unless enclave-enabled).
  // (run_instances checked the pool; a record that says otherwise keeps the whole type.)
  const bool pool_fits = inst.enclave_pool_cpus < inst.vcpus && inst.enclave_pool_mib < inst.memory_mib;
  const uint32_t guest_vcpus = pool_fits ? inst.vcpus - inst.enclave_pool_cpus : inst.vcpus;
  const uint64_t guest_mib = pool_fits ? inst.memory_mib - inst.enclave_pool_mib : inst.memory_mib;
  launch::SpawnRequest hv;
  hv.role = launch::Role::kHv;
  hv.instance = id;
  hv.slot = slot;
  hv.listens = {{"control", ctl}};
  hv.files = {{"console", dir + "/console.log", "append"}};
  hv.output = dir + "/hv.log";
  hv.args = {"--control", "fd:{control}", "--kvm-fd", "{kvm}", "--console", "fd:{console}",
             "--vcpus", std::to_string(guest_vcpus), "--memory", std::to_string(guest_mib) + "M"};
  if (img.kernel.rfind("builtin:", 0) == 0) {
    hv.args.insert(hv.args.end(), {"--kernel", img.kernel});
  } else {
    hv.files.push_back({"kernel", img.kernel, "r"});
    hv.args.insert(hv.args.end(), {"--kernel", "fd:{kernel}"});
  }
  if (!img.initrd.empty()) {
    hv.files.push_back({"initrd", img.initrd, "r"});
    hv.args.insert(hv.args.end(), {"--initrd", "fd:{initrd}"});
  }
  if (!img.cmdline.empty()) hv.args.insert(hv.args.end(), {"--cmdline", img.cmdline});
  if (!eni_id.empty()) hv.enis = {eni_id};
  // Its TPM: measured boot into it at "start" (the card is open by then).
  if (tpm != nullptr) hv.args.insert(hv.args.end(), {"--tpm", std::string(kTpmSocket)});
  hv.limits.memory_mib = guest_mib + kHvOverheadMib;
  hv.limits.pids = guest_vcpus + kHvExtraPids;
  hv.limits.cpu_percent = guest_vcpus * 100;
  hv.limits.cpus = opt_.guest_cpus;
  {
    std::error_code ec;
    fs::create_directories(dir, ec);
  }
  // 2. The instance's cards, started beside the shell (the launcher builds the jails at
  // once); joined before anything uses them. The block card: its volumes (and only
  // their keys), each served on its socket in the instance's directory. The network
  // card: the VPC model, the instance's ENI (its address, MAC, groups, limits and
  // metadata) on its socket, the other instances' ENIs as neighbours; the other cards
  // learn this ENI.
  ApiResult<void> card_ready = api_error(K::kInternal, "InternalError", "the block card was not started");
  ApiResult<void> net_ready{};
  std::jthread card([&] {
    card_ready = start_instance_card(*blk, vols, type);
    t_blk = since();
  });
  ApiResult<void> tpm_ready{};
  std::jthread tpm_card([&] {
    if (tpm != nullptr) tpm_ready = start_tpm_card(*tpm);
  });
  std::jthread net_card([&] {
    if (net == nullptr) return;
    std::unique_lock<std::mutex> net_lock(net_mu_, std::defer_lock);
    net_ready = ensure_net(*net, net_lock);
    t_net_spawned = since();
    if (net_ready) net_ready = net_add_eni(*net, id);
    if (!net_ready) return;
    net_sync_neighbours(*net);
    net_announce(id, true);
    t_net = since();
  });
  auto p = procs_.spawn(hv);
  if (!p) return api_error(K::kInternal, "InternalError", "cannot start the hypervisor: " + p.error().message());
  t_shell = since();
  {
    std::lock_guard lock(mu_);
    InstanceRec& r = instances_[id];
    r.hv_pid = p->pid;
    r.hv_starttime = p->starttime;
    persist(r);
    watch(p->pidfd.get());
    rt_[id].hv = std::move(p).value();
  }
  if (opt_.test_launch_delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(opt_.test_launch_delay_ms));
  card.join();
  net_card.join();
  tpm_card.join();
  AZOTE_TRYV(card_ready);
  AZOTE_TRYV(net_ready);
  AZOTE_TRYV(tpm_ready);
  // Wait until the shell answers on its control socket (the launcher made the socket,
  // so connecting proves nothing), but not for a hypervisor that already gave up (a
  // kernel it cannot load, a host resource it cannot get): its own words are the reason.
  const auto deadline = std::chrono::steady_clock::now() + kControlTimeout;
  for (;;) {
    if (answers(ctl, 200ms)) break;
    bool exited = false;
    int status = -1;
    {
      std::lock_guard lock(mu_);
      exited = rt_[id].exited;
      status = rt_[id].exit_status;
    }
    if (exited || std::chrono::steady_clock::now() >= deadline) {
      std::string last = read_tail(dir + "/hv.log", 4096);
      while (!last.empty() && last.back() == '\n') last.pop_back();
      if (const size_t nl = last.rfind('\n'); nl != std::string::npos) last = last.substr(nl + 1);
      return api_error(K::kInternal, "InternalError",
                       (exited ? exit_reason(status) : "the hypervisor did not answer on its control socket") +
                           (last.empty() ? "" : " (" + last + ")"));
    }
  }
  t_answers = since();
  auto connected = control::Client::connect(ctl, kControlTimeout);
  if (!connected) return api_error(K::kInternal, "InternalError", "the hypervisor's control socket: " + connected.error().message());
  std::optional<control::Client> c(std::move(connected).value());
  // An enclave-enabled parent: its vsock card (CID 3 for its enclaves), then its device.
  if (inst.enclave_enabled) {
    AZOTE_TRYV(start_parent_vsock(id, slot));
    auto a = c->call({{"op", "attach-device"}, {"kind", "vsock"}, {"socket", "/run/azote/vsock.sock"}}, kControlTimeout);
    if (!a) return api_error(K::kInternal, "InternalError", "attaching the vsock device: " + a.error().message());
  }
  // 4. The channels: one virtio device per volume, root first, then the ENI.
  for (const VolumeRec& v : vols) {
    auto a = c->call({{"op", "attach-device"}, {"kind", "blk"}, {"socket", volume_socket(v.id)}}, kControlTimeout);
    if (!a) return api_error(K::kInternal, "InternalError", "attaching " + v.id + ": " + a.error().message());
  }
  if (!eni_id.empty()) {
    auto a = c->call({{"op", "attach-device"}, {"kind", "net"}, {"socket", eni_socket(eni_id)}}, kControlTimeout);
    if (!a) return api_error(K::kInternal, "InternalError", "attaching " + eni_id + ": " + a.error().message());
  }
  {
    std::lock_guard lock(mu_);
    if (rt_[id].terminate_requested) return api_error(K::kInternal, "InternalError", "terminated during launch");
  }
  // 5. Release the vCPUs.
  auto s = c->call({{"op", "start"}}, kControlTimeout);
  if (!s) return api_error(K::kInternal, "InternalError", "starting the vCPUs: " + s.error().message());
  std::lock_guard lock(mu_);
  rt_[id].first_boot = false;
  // An hv that died right after start was skipped by the supervisor (the job was busy).
  if (rt_[id].exited) return api_error(K::kInternal, "InternalError", exit_reason(rt_[id].exit_status));
  InstanceRec& r = instances_[id];
  if (r.state == state::kPending) set_state(r, state::kRunning);
  LOG_DEBUG("instance %s: launched in %.1f ms (shell spawned %.1f, block card ready %.1f, network card answering %.1f "
            "and ready %.1f, shell answering %.1f)",
            id.c_str(), since(), t_shell, t_blk, t_net_spawned, t_net, t_answers);
  return {};
}

ApiResult<void> Host::start_tpm_card(Card& c) {
  // The state's key: made at the instance's first launch, kept wrapped in its record.
  std::vector<uint8_t> wrapped;
  {
    std::lock_guard lock(mu_);
    wrapped = instances_[c.instance].tpm_wrapped_key;
  }
  if (wrapped.empty()) {
    std::vector<uint8_t> key(32);
    if (::getrandom(key.data(), key.size(), 0) != static_cast<ssize_t>(key.size()))
      return api_error(K::kInternal, "InternalError", "no randomness for the TPM state key of " + c.instance);
    auto w = pki::wrap_key(pki_.master_key(), key, "tpm:" + c.instance);
    pki::wipe(key);
    if (!w) return api_error(K::kInternal, "InternalError", "TPM state key of " + c.instance + ": " + w.error().message());
    std::lock_guard lock(mu_);
    InstanceRec& r = instances_[c.instance];
    r.tpm_wrapped_key = *w;
    // Stored before the card encrypts anything under it: a key lost here would leave a
    // state no later launch can open.
    if (auto p = store_.put(r); !p) {
      r.tpm_wrapped_key.clear();
      return api_error(K::kInternal, "InternalError", "TPM state key of " + c.instance + ": " + p.error().message());
    }
    wrapped = std::move(w).value();
  }
  {
    // The card opens the state through a descriptor the launcher hands it: the file
    // must exist (empty: a new TPM).
    const std::string path = instance_dir(c.instance) + "/tpm.state";
    UniqueFd f(::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
    if (!f) return api_error(K::kInternal, "InternalError", "cannot create " + path + ": " + std::strerror(errno));
  }
  AZOTE_TRYV(ensure_card(c));
  auto key = pki::unwrap_key(pki_.master_key(), wrapped, "tpm:" + c.instance);
  if (!key) return api_error(K::kInternal, "InternalError", "TPM state key of " + c.instance + ": " + key.error().message());
  std::string key_hex = to_hex(*key);
  pki::wipe(*key);
  int state_fd = 3;
  {
    std::lock_guard lock(mu_);
    if (auto it = c.file_fd.find("state"); it != c.file_fd.end()) state_fd = it->second;
  }
  control::Json req = {{"op", "open"}, {"instance", c.instance}, {"state", "fd:" + std::to_string(state_fd)},
                       {"key", key_hex}, {"socket", std::string(kTpmSocket)}};
  auto r = control::call_once(card_path(c, ".ctl"), req, kControlTimeout);
  std::fill(key_hex.begin(), key_hex.end(), '\0');
  auto& k = req["key"].get_ref<std::string&>();
  std::fill(k.begin(), k.end(), '\0');
  if (!r) {
    // An adopted card serves this instance already.
    if (r.error().code == control::ControlErrc::kRefused && r.error().context.find("already serves the TPM of " + c.instance) != std::string::npos)
      return {};
    return api_error(K::kInternal, "InternalError", c.label + ": " + r.error().message());
  }
  return {};
}

ApiResult<void> Host::start_instance_card(Card& blk, const std::vector<VolumeRec>& vols, const InstanceType* type) {
  AZOTE_TRYV(ensure_card(blk, nullptr, vols));
  for (const VolumeRec& v : vols) {
    AZOTE_TRYV(card_add(blk, v, type));
    if (!v.import_from.empty()) {  // the content is in: never again
      std::lock_guard lock(mu_);
      if (auto it = volumes_.find(v.id); it != volumes_.end()) {
        it->second.import_from.clear();
        persist(it->second);
      }
    }
  }
  return {};
}

void Host::stop_hv(const std::string& id, bool force) {
  end_enclaves_of(id);  // enclaves die with their parent, before it
  std::unique_lock lock(mu_);
  Runtime& rt = rt_[id];
  if (rt.hv) {
    rt.expect_exit = true;
    // Wait on our own duplicate of the pidfd, not on the supervisor (which may be busy
    // restarting a card); it still reaps and records the exit.
    const Proc waiter{rt.hv->pid, rt.hv->starttime, rt.hv->uid, UniqueFd(::fcntl(rt.hv->pidfd.get(), F_DUPFD_CLOEXEC, 0))};
    lock.unlock();
    procs_.send_signal(waiter, force ? SIGKILL : SIGTERM);
    if (!Processes::wait_exit(waiter, kStopGraceMs)) {
      LOG_WARN("instance %s: the hypervisor did not stop within %d ms; killing it", id.c_str(), kStopGraceMs);
      procs_.send_signal(waiter, SIGKILL);
      Processes::wait_exit(waiter, 5000);
    }
    lock.lock();
    cv_.wait_for(lock, 2s, [&] { return rt.exited || stopping_; });
  }
  lock.unlock();
  // Then the instance's cards: its block card ends (nothing else uses its volumes or
  // keys), its network card ends and the other cards forget its ENI; whatever is left
  // of its processes is killed and its cgroups go.
  stop_blk_card(id);
  net_stop(id);
  procs_.release(id);  // the vsock card too
  lock.lock();
  rt.vsock.reset();
  rt.slot = -1;
}

void Host::finish_terminate(const std::string& id) {
  std::lock_guard lock(mu_);
  // The ENI goes with the instance, and its address back to the subnet (the card no
  // longer has it: stop_hv removed it).
  if (EniRec* e = eni_of(id)) {
    const std::string eid = e->id;
    if (auto d = store_.erase_eni(eid); !d) LOG_ERROR("instance %s: deleting %s: %s", id.c_str(), eid.c_str(), d.error().message().c_str());
    else enis_.erase(eid);
  }
  // Its TPM: the state file and its key go.
  std::error_code ec;
  fs::remove(instance_dir(id) + "/tpm.state", ec);
  if (auto it = instances_.find(id); it != instances_.end() && !it->second.tpm_wrapped_key.empty()) {
    it->second.tpm_wrapped_key.clear();
    persist(it->second);
  }
  for (VolumeRec* v : volumes_of(id)) {
    if (v->delete_on_termination) {
      const std::string vid = v->id;
      if (auto d = delete_volume_files(*v); !d) {
        LOG_ERROR("instance %s: %s", id.c_str(), d.error().sentence.c_str());
        continue;  // the record stays (in-use): visible, and deletable later
      }
      volumes_.erase(vid);
    } else {
      v->state = "available";
      v->instance_id.clear();
      v->device.clear();
      v->attach_state.clear();
      persist(*v);
    }
  }
}

// ---- supervision -----------------------------------------------------------------

void Host::supervisor_loop() {
  // Every card: each instance's block and network card.
  auto all_cards = [this] {
    std::vector<Card*> out;
    for (auto& [id, rt] : rt_)
      for (Card* c : rt.cards())
        if (c) out.push_back(c);
    return out;
  };
  for (;;) {
    std::vector<Card*> cards;
    {
      std::lock_guard lock(mu_);
      cards = all_cards();
    }
    for (Card* c : cards) {
      std::unique_lock lock(mu_);
      if (c->readd) {
        c->readd = false;
        lock.unlock();
        restart_card(*c);
      }
    }
    epoll_event ev[16];
    int timeout_ms = -1;
    for (Card* c : cards)
      if (c->restart_at) {
        const int ms = static_cast<int>(std::max<int64_t>(
            0, std::chrono::duration_cast<std::chrono::milliseconds>(*c->restart_at - std::chrono::steady_clock::now())
                   .count()));
        timeout_ms = timeout_ms < 0 ? ms : std::min(timeout_ms, ms);
      }
    const int n = ::epoll_wait(epoll_.get(), ev, 16, timeout_ms);
    if (n < 0 && errno != EINTR) return;
    std::vector<Card*> died;
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
      cards = all_cards();
      for (int i = 0; i < n; ++i) {
        if (ev[i].data.u64 == kTagWake) continue;
        if (ev[i].data.u64 == kTagLauncher) {
          // Nothing can be started, signalled or reaped any more. What runs keeps
          // running; the controller exits, and the next one (with a new launcher)
          // adopts it.
          // Exit at once: a job under way must not go on failing and writing states a
          // new controller would then believe. Everything acknowledged is in SQLite
          // and the audit log already; a launch cut short is still "pending" there and
          // the next controller finishes it.
          LOG_ERROR("controller: the launcher is gone; exiting (status 75) so that azote-controller can be started "
                    "again (instances keep running and are adopted)");
          std::fflush(nullptr);
          std::_Exit(75);
          continue;
        }
        const int fd = static_cast<int>(ev[i].data.u64);
        ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
        bool was_card = false;
        for (Card* c : cards) {
          if (!c->proc || c->proc->pidfd.get() != fd) continue;
          const int status = procs_.reap(*c->proc);
          if (c->expect_exit)
            LOG_INFO("controller: the %s (pid %d) stopped (status %d)", c->label.c_str(), c->proc->pid, status);
          else
            LOG_WARN("controller: the %s (pid %d) exited (status %d)", c->label.c_str(), c->proc->pid, status);
          if (status == 128 + SIGSYS)
            report_seccomp(c->instance, c->binary(), seccomp_line(card_path(*c, ".log")));
          c->proc.reset();
          if (!c->expect_exit) died.push_back(c);
          was_card = true;
          cv_.notify_all();  // stop_card waits for this
        }
        if (was_card) continue;
        if (fabric_ && fabric_->pidfd.get() == fd) {
          LOG_WARN("controller: the fabric process (pid %d) exited (status %d); starting it again", fabric_->pid,
                   procs_.reap(*fabric_));
          fabric_.reset();
          fabric_died_ = true;
          continue;
        }
        for (auto& [id, rt] : rt_) {
          if (!rt.hv || rt.hv->pidfd.get() != fd) continue;
          rt.exit_status = procs_.reap(*rt.hv);
          rt.exited = true;
          rt.hv.reset();
          InstanceRec& r = instances_[id];
          LOG_INFO("instance %s: hypervisor exited (status %d)", id.c_str(), rt.exit_status);
          std::string seccomp;
          if (rt.exit_status == 128 + SIGSYS) {
            seccomp = seccomp_line(instance_dir(id) + "/hv.log");
            report_seccomp(id, "azote-hv", seccomp);
          }
          if (!rt.expect_exit && !rt.busy && r.state == state::kRunning) {
            r.hv_pid = 0;
            if (rt.exit_status == 0)
              set_state(r, state::kStopped, "Client.InstanceInitiatedShutdown", "Instance initiated shutdown");
            else
              set_state(r, state::kStopped, "Server.InternalError",
                        exit_reason(rt.exit_status) + (seccomp.empty() ? "" : ": " + seccomp));
            jobs_.emplace_back(id, Job::kCleanup);
          }
          cv_.notify_all();
          break;
        }
      }
    }
    bool fabric_again = false;
    {
      std::lock_guard lock(mu_);
      fabric_again = std::exchange(fabric_died_, false);
    }
    if (fabric_again) sync_fabric();
    const auto now = std::chrono::steady_clock::now();
    for (Card* c : died) {
      // Restart at once the first time; a card that keeps dying is restarted with a
      // growing delay (0.1 s doubling to 10 s) so a crash loop does not eat the host.
      c->deaths.push_back(now);
      while (!c->deaths.empty() && now - c->deaths.front() > 60s) c->deaths.pop_front();
      const size_t recent = c->deaths.size();
      const auto delay = recent <= 1 ? 0ms : std::min<std::chrono::milliseconds>(100ms * (1u << std::min<size_t>(recent - 2, 7)), 10s);
      if (delay > 0ms)
        LOG_WARN("controller: the %s died %zu times in a minute; restarting it in %lld ms", c->label.c_str(), recent,
                 static_cast<long long>(delay.count()));
      c->restart_at = now + delay;
    }
    for (Card* c : cards)
      if (c->restart_at && now >= *c->restart_at) {
        c->restart_at.reset();
        restart_card(*c);
      }
  }
}

void Host::report_seccomp(const std::string& instance, const std::string& process, const std::string& line) {
  LOG_ERROR("controller: %s%s%s was killed by its seccomp filter: %s", process.c_str(), instance.empty() ? "" : " of ",
            instance.c_str(), line.empty() ? "(no report in its log)" : line.c_str());
  if (events_) {
    std::vector<std::string> res;
    if (!instance.empty()) res.push_back(instance);
    res.push_back(process);
    events_("process.seccomp", res, line.empty() ? "killed by SIGSYS (no report in its log)" : line);
  }
}

Host::HostView Host::launcher_view() {
  HostView v;
  poll_write_guard();  // the latest state (its events go to the audit log as always)
  if (auto l = procs_.describe(); l) v.launcher = *l;
  std::lock_guard lock(mu_);
  if (guard_state_.is_object()) v.guard = guard_state_;
  return v;
}

void Host::poll_write_guard() {
  // The launcher's write guard: each refusal or re-hash mismatch since the last poll
  // becomes an audit record (host.write-denied / host.rehash-mismatch).
  auto g = procs_.guard();
  if (!g) return;
  std::lock_guard lock(mu_);
  guard_state_ = *g;
  guard_state_.erase("events");
  for (const auto& e : g->value("events", launch::Json::array()))
    if (events_) events_("host." + e.value("event", "write-guard"), {e.value("path", "")}, e.value("detail", ""));
}

void Host::liveness_loop() {
  for (;;) {
    struct Target {
      Card* card;
      std::string ctl;
      std::optional<Proc> proc;
    };
    std::vector<Target> targets;
    poll_write_guard();
    {
      std::unique_lock lock(mu_);
      if (cv_.wait_for(lock, kLivenessPeriod, [&] { return stopping_; })) return;
      auto add = [&](Card& c) {
        if (!c.proc || c.expect_exit) return;
        targets.push_back({&c, card_path(c, ".ctl"),
                           Proc{c.proc->pid, c.proc->starttime, c.proc->uid,
                                UniqueFd(::fcntl(c.proc->pidfd.get(), F_DUPFD_CLOEXEC, 0))}});
      };
      for (auto& [id, rt] : rt_)
        if (!rt.busy)
          for (Card* c : rt.cards())
            if (c) add(*c);
    }
    for (auto& t : targets) {
      if (answers(t.ctl, kPingTimeout) || Processes::wait_exit(*t.proc, 0)) {
        t.card->missed_pings = 0;  // Card objects outlive this loop: they are freed only after shutdown
        continue;
      }
      if (++t.card->missed_pings < kLivenessStrikes) {
        LOG_WARN("controller: the %s (pid %d) did not answer a ping within %lld s (%d of %d)", t.card->label.c_str(),
                 t.proc->pid, static_cast<long long>(kPingTimeout.count()), t.card->missed_pings, kLivenessStrikes);
        continue;
      }
      LOG_ERROR("controller: the %s (pid %d) runs but has not answered its control socket %d times in a row; "
                "killing it so that it is restarted", t.card->label.c_str(), t.proc->pid, kLivenessStrikes);
      t.card->missed_pings = 0;
      procs_.send_signal(*t.proc, SIGKILL);
    }
  }
}

void Host::restart_card(Card& c) {
  // Restart the card and hand it everything its live hypervisor is using; the
  // hypervisor reconnects to the sockets by itself. A card serves one instance: only
  // while that instance runs (a launch starts its own).
  if (c.is_tpm()) {
    // Not restarted under a running guest: its PCRs held that boot's measurements and a
    // new TPM cannot be given them back; the guest's TPM reports a failure (CRB fatal
    // status) until the instance is stopped and started, which measures a new boot.
    LOG_ERROR("controller: the %s is gone; that instance's TPM is failed until it is stopped and started",
              c.label.c_str());
    return;
  }
  const bool net = c.is_net();
  std::vector<VolumeRec> vols;
  const InstanceType* type = nullptr;
  {
    std::lock_guard lock(mu_);
    const auto it = instances_.find(c.instance);
    if (it == instances_.end() || (it->second.state != state::kRunning && it->second.state != state::kStopping) ||
        rt_[c.instance].busy || !rt_[c.instance].hv)
      return;
    if (net && !eni_of(c.instance)) return;
    for (VolumeRec* v : volumes_of(c.instance)) vols.push_back(*v);
    type = find_instance_type(it->second.type);
  }
  std::unique_lock<std::mutex> net_lock(net_mu_, std::defer_lock);
  if (auto e = net ? ensure_net(c, net_lock) : ensure_card(c, nullptr, vols); !e) {
    LOG_ERROR("controller: restarting the %s failed: %s", c.label.c_str(), e.error().sentence.c_str());
    c.restart_at = std::chrono::steady_clock::now() + 1s;
    return;
  }
  {
    std::lock_guard lock(mu_);
    ++c.restarts;
    ++card_restarts_[net ? "net" : "blk"];
  }
  if (net) {
    // An adopted card that serves the ENI keeps it (its hypervisor stays connected).
    bool serves = false;
    if (auto l = control::call_once(card_path(c, ".ctl"), {{"op", "list-enis"}}, kControlTimeout); l) {
      std::lock_guard lock(mu_);
      const EniRec* e = eni_of(c.instance);
      for (const auto& x : (*l)["enis"]) serves |= e && x.value("id", "") == e->id;
    }
    if (auto a = serves ? ApiResult<void>{} : net_add_eni(c, c.instance); !a) LOG_ERROR("controller: re-adding the ENI of %s: %s", c.instance.c_str(), a.error().sentence.c_str());
    net_sync_neighbours(c);
    LOG_INFO("controller: the %s restarted: VPC, groups, its ENI and neighbours pushed", c.label.c_str());
    return;
  }
  for (const auto& v : vols)
    if (auto a = card_add(c, v, type); !a) LOG_ERROR("controller: re-adding %s: %s", v.id.c_str(), a.error().sentence.c_str());
  LOG_INFO("controller: the %s restarted, %zu volume(s) re-added", c.label.c_str(), vols.size());
}

ApiResult<void> Host::recover() {
  // The cards from last time, if they still run: adopt them (their volumes and ENIs
  // stay served).
  auto cards = store_.cards();
  if (cards) {
    for (const auto& c : *cards) {
      Card* card = nullptr;
      const std::string kind = c.name.substr(0, 4), iid = c.name.size() > 4 ? c.name.substr(4) : "";
      if (kind == "blk/" && instances_.count(iid)) {
        rt_[iid].blk = std::make_unique<Card>(c.name, "block card of " + iid, iid);
        card = rt_[iid].blk.get();
      } else if (kind == "net/" && instances_.count(iid)) {
        rt_[iid].net = std::make_unique<Card>(c.name, "network card of " + iid, iid);
        card = rt_[iid].net.get();
      } else if (kind == "tpm/" && instances_.count(iid)) {
        // Its hypervisor keeps its connection: an adopted TPM card goes on serving it.
        rt_[iid].tpm = std::make_unique<Card>(c.name, "TPM card of " + iid, iid);
        card = rt_[iid].tpm.get();
      } else {
        LOG_WARN("controller: forgetting the card record \"%s\" (from an older controller or a deleted instance)", c.name.c_str());
        (void)store_.erase_card(c.name);
        continue;
      }
      auto p = procs_.adopt(static_cast<pid_t>(c.pid), c.starttime);
      if (p) {
        card->proc = std::move(p).value();
        watch(card->proc->pidfd.get());
        LOG_INFO("controller: adopted the %s (pid %d)", card->label.c_str(), card->proc->pid);
      }
    }
  }
  // Orphaned volume files (a crash between creating one and saving its record).
  bool running = false;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(opt_.state_dir + "/volumes", ec)) {
    const std::string name = e.path().stem().string();
    if (e.path().extension() == ".img" && !volumes_.count(name)) {
      LOG_WARN("controller: removing %s, a volume file with no record", e.path().c_str());
      fs::remove(e.path(), ec);
    }
  }
  std::set<pid_t> handled;  // processes from last time dealt with below
  for (auto& [id, r] : instances_) {
    Runtime& rt = rt_[id];
    std::optional<Proc> hv;
    if (r.hv_pid > 0) {
      auto p = procs_.adopt(static_cast<pid_t>(r.hv_pid), r.hv_starttime);
      if (p) hv = std::move(p).value();
    }
    if (r.state == state::kRunning) {
      if (hv) {
        running = true;
        const uint32_t first = opt_.uid_base + launch::kFirstInstanceId;
        if (hv->uid >= first && hv->uid - first < launch::kMaxSlots) rt.slot = static_cast<int>(hv->uid - first);
        if (!rt.blk) rt.blk = std::make_unique<Card>("blk/" + id, "block card of " + id, id);
        // Its cards did not survive the controller's absence: the supervisor starts
        // them and gives them the volumes, or the model, ENI and neighbours, again.
        if (!rt.blk->proc) rt.blk->readd = true;
        if (eni_of(id)) {
          if (!rt.net) rt.net = std::make_unique<Card>("net/" + id, "network card of " + id, id);
          rt.net->readd = true;  // adopted or not: the model, its ENI and neighbours again
        }
        watch(hv->pidfd.get());
        rt.hv = std::move(hv);
        LOG_INFO("instance %s: adopted its hypervisor (pid %lld)", id.c_str(), static_cast<long long>(r.hv_pid));
      } else {
        r.hv_pid = 0;
        set_state(r, state::kStopped, "Server.InternalError",
                  "the hypervisor exited while the controller was not running");
      }
      continue;
    }
    if (r.state == state::kPending || r.state == state::kStopping || r.state == state::kShuttingDown) {
      // Its slot (uid) as before: its run directory and the sockets in it belong to it.
      const uint32_t first = opt_.uid_base + launch::kFirstInstanceId;
      const uint32_t uid = hv                          ? hv->uid
                           : rt.blk && rt.blk->proc ? rt.blk->proc->uid
                           : rt.net && rt.net->proc ? rt.net->proc->uid
                                                    : 0;
      if (uid >= first && uid - first < launch::kMaxSlots) rt.slot = static_cast<int>(uid - first);
      if (hv) {  // half-launched or half-stopped: that process is not trusted to be complete
        handled.insert(hv->pid);
        procs_.send_signal(*hv, SIGKILL);
        Processes::wait_exit(*hv, 5000);
        LOG_INFO("instance %s: killed the hypervisor left %s by the previous controller", id.c_str(), r.state.c_str());
      }
      for (Card* c : rt.cards()) {  // its cards too: started for that launch, given part of it
        if (!c || !c->proc) continue;
        handled.insert(c->proc->pid);
        procs_.send_signal(*c->proc, SIGKILL);
        Processes::wait_exit(*c->proc, 5000);
        (void)procs_.reap(*c->proc);
        LOG_INFO("instance %s: killed the %s left %s by the previous controller", id.c_str(), c->label.c_str(), r.state.c_str());
        c->proc.reset();
        (void)store_.erase_card(c->name);
      }
      r.hv_pid = 0;
      persist(r);
      if (r.state == state::kPending) jobs_.emplace_back(id, Job::kLaunch);
      if (r.state == state::kStopping) set_state(r, state::kStopped, "Client.UserInitiatedShutdown", "User initiated shutdown");
      if (r.state == state::kShuttingDown) jobs_.emplace_back(id, Job::kTerminate);
      continue;
    }
    if (hv) {  // stopped or terminated, yet a process runs: it is not ours to keep
      handled.insert(hv->pid);
      procs_.send_signal(*hv, SIGKILL);
      r.hv_pid = 0;
      persist(r);
    }
  }
  // What the launcher runs for this host that no record names (started for the previous
  // controller, which died before it wrote the pid down): not trusted, not kept.
  if (auto d = procs_.describe(); d) {
    std::set<pid_t> known = handled;
    std::set<std::string> enclaves;  // not adopted: a controller restart ends the host's enclaves
    for (const auto& [id, rt] : rt_) {
      if (rt.hv) known.insert(rt.hv->pid);
      for (const auto* c : rt.cards())
        if (c && c->proc) known.insert(c->proc->pid);
    }
    for (const auto& p : d->value("processes", launch::Json::array())) {
      const auto pid = p.value("pid", pid_t{0});
      const std::string role = p.value("role", "");
      if (pid <= 0 || known.count(pid) || role == "probe") continue;
      auto proc = procs_.adopt(pid, p.value("starttime", uint64_t{0}));
      if (!proc) continue;
      procs_.send_signal(*proc, SIGKILL);
      Processes::wait_exit(*proc, 5000);
      (void)procs_.reap(*proc);
      const std::string of = p.value("instance", "").empty() ? "" : " of " + p.value("instance", "");
      LOG_WARN("controller: killed a %s%s (pid %d) that no record names", role.c_str(), of.c_str(), pid);
      if (const std::string inst = p.value("instance", ""); inst.find("-enc") != std::string::npos) enclaves.insert(inst);
    }
    for (const auto& e : enclaves) {
      procs_.release(e);
      std::error_code gone;
      fs::remove_all(instance_dir(e), gone);
    }
  } else {
    LOG_WARN("controller: %s", d.error().message().c_str());
  }
  // Running instances' cards: restarted if they did not survive, and re-given their
  // volumes, or model, ENI and neighbours (the supervisor does it first thing).
  (void)running;
  // Cards whose instance does not run (its hypervisor died while no controller
  // watched): stopped, with the rest of the instance's processes and cgroups.
  for (auto& [id, r] : instances_) {
    const Runtime& rt = rt_[id];
    const auto its = rt.cards();
    if (r.state != state::kRunning && std::any_of(its.begin(), its.end(), [](const Card* c) { return c->proc.has_value(); }))
      jobs_.emplace_back(id, Job::kCleanup);
  }
  return {};
}

void Host::shutdown() {
  {
    std::lock_guard lock(mu_);
    if (stopping_ && workers_.empty() && !supervisor_.joinable()) return;
    workers_stop_ = true;  // first the workers: no launch may start an hv after this
    cv_.notify_all();
  }
  for (auto& w : workers_) w.join();
  workers_.clear();
  if (opt_.stop_on_exit) {  // the supervisor still runs: it reaps what stop_hv stops
    std::vector<std::string> ids;
    {
      std::lock_guard lock(mu_);
      for (auto& [id, r] : instances_)
        if (rt_[id].hv) ids.push_back(id);
    }
    for (const auto& id : ids) {
      stop_hv(id, false);
      std::lock_guard lock(mu_);
      InstanceRec& r = instances_[id];
      r.hv_pid = 0;
      if (r.state == state::kRunning || r.state == state::kStopping || r.state == state::kPending)
        set_state(r, state::kStopped, "Server.ScheduledStop", "the host controller stopped");
    }
  }
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    cv_.notify_all();
  }
  const uint64_t one = 1;
  (void)!::write(wake_.get(), &one, sizeof one);
  if (supervisor_.joinable()) supervisor_.join();
  if (liveness_.joinable()) liveness_.join();
  if (opt_.stop_on_exit && fabric_alive()) stop_fabric();
  if (opt_.stop_on_exit) {
    std::lock_guard lock(mu_);
    std::vector<Card*> cards;
    for (auto& [id, rt] : rt_)
      for (Card* c : rt.cards())
        if (c) cards.push_back(c);
    for (Card* c : cards) {
      if (!c->proc) continue;
      c->expect_exit = true;
      procs_.send_signal(*c->proc, SIGTERM);
      if (!Processes::wait_exit(*c->proc, 10'000)) procs_.send_signal(*c->proc, SIGKILL);
      procs_.reap(*c->proc);
      c->proc.reset();
    }
  }
}

}  // namespace azote::controller
