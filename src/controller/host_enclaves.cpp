// Enclaves: nitro-cli's run-enclave, describe-enclaves, terminate-enclave and console
// (ENCLAVES.md §5) on a parent instance launched with enclave support.
//
// An enclave is a VM of its own: an azote-hv booting the EIF (checked whole first) and
// an azote-card-nsm measuring the same file, in a jail, uid and cgroup of their own
// (the launcher's "instance" is the enclave id), with the NSM and a vsock device on its
// parent's vsock card as its only devices: no block card, no network card, no TPM. Its
// vCPUs and memory come from its parent's pool, as nitro's allocator has it: set aside
// from the parent's type when the parent starts (enclave_pool: the parent's guest runs
// with that many fewer vCPUs and MiB, its hv's cgroup sized to match), drawn by each
// enclave (its own hv's cgroup: its vCPUs' CPU time, its memory) and returned to the
// pool when it ends. nitro-cli's limits give the same kind of refusals (at least 64 MiB,
// at least four times the image, at most four enclaves per parent, CIDs from 4). The console file is read only
// for a debug-mode enclave; a debug-mode enclave's documents carry zero PCRs (azote-rot's
// binding, made by the launcher). Enclaves die with their parent (stop_hv) and are not
// adopted by a restarted controller (recover() ends what is left of them).
#include <fcntl.h>
#include <signal.h>
#include <sys/random.h>

#include <cinttypes>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "base/log.hpp"
#include "controller/host.hpp"
#include "controller/host_shared.hpp"
#include "eif/eif.hpp"

namespace azote::controller {
namespace {

using namespace host_shared;
namespace fs = std::filesystem;
using K = ApiError::Kind;

constexpr uint32_t kMaxEnclavesPerParent = 4;
constexpr uint64_t kMinEnclaveMib = 64;
constexpr uint64_t kParentKeepsMib = 128;
constexpr uint64_t kDefaultPoolMib = 512;  // nitro's allocator.yaml memory_mib
constexpr uint64_t kMaxCid = 0xffffffffull - 1;  // u32::MAX is refused, as nitro-cli does
// Where the enclave's NSM card serves, in the jails of the card and of the enclave's hv.
constexpr const char* kNsmSocket = "/run/azote/nsm.sock";
// vsock: the parent's device on its vsock card, in the jails of the card and the parent's
// hv; an enclave's in the card's jail (one directory per enclave) and in the enclave's.
constexpr const char* kParentVsockSocket = "/run/azote/vsock.sock";
constexpr const char* kEnclaveVsockInEnclave = "/run/azote-vsock/vsock.sock";
std::string enclave_vsock_in_card(const std::string& enclave_id) { return "/run/azote-vsock/" + enclave_id + "/vsock.sock"; }

uint64_t random_u64() {
  uint64_t v = 0;
  if (::getrandom(&v, sizeof v, 0) != static_cast<ssize_t>(sizeof v)) v = static_cast<uint64_t>(::time(nullptr)) * 2654435761u;
  return v;
}

std::string hex16() {
  static const char* d = "0123456789abcdef";
  uint64_t v = random_u64();
  std::string s;
  for (int i = 0; i < 16; ++i, v >>= 4) s += d[v & 15];
  return s;
}

bool write_bytes(const std::string& path, const std::string& data) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(data.data(), static_cast<std::streamsize>(data.size()));
  return static_cast<bool>(f);
}

}  // namespace

ApiResult<Host::EnclavePool> Host::enclave_pool(const InstanceType& type, const RunRequest& r) {
  if (!r.enclave_enabled) {
    if (r.enclave_cpu_count != 0 || r.enclave_memory_mib != 0)
      return api_error(K::kInvalid, "InvalidParameterCombination",
                       "--enclave-options MemoryMiB and CpuCount size the enclaves' pool: only with Enabled=true");
    return EnclavePool{};
  }
  const std::string t(type.name);
  if (type.vcpus < 2)
    return api_error(K::kInvalid, "UnsupportedOperation",
                     t + " has " + std::to_string(type.vcpus) + " vCPU: an enclave parent needs two (one stays with it)");
  EnclavePool p;
  p.cpus = r.enclave_cpu_count != 0 ? r.enclave_cpu_count : type.vcpus / 2;
  p.memory_mib = r.enclave_memory_mib != 0 ? r.enclave_memory_mib : std::min(kDefaultPoolMib, type.memory_mib / 2) / 2 * 2;
  if (p.cpus >= type.vcpus)
    return api_error(K::kInvalid, "InvalidParameterValue",
                     "--enclave-options CpuCount=" + std::to_string(p.cpus) + ": " + t + " has " +
                         std::to_string(type.vcpus) + " vCPUs and the parent keeps at least one");
  if (p.memory_mib < kMinEnclaveMib || p.memory_mib % 2 != 0 || p.memory_mib + kParentKeepsMib > type.memory_mib)
    return api_error(K::kInvalid, "InvalidParameterValue",
                     "--enclave-options MemoryMiB=" + std::to_string(p.memory_mib) + ": the pool is at least " +
                         std::to_string(kMinEnclaveMib) + " MiB, a multiple of 2 MiB, and leaves the parent at least " +
                         std::to_string(kParentKeepsMib) + " of " + t + "'s " + std::to_string(type.memory_mib) + " MiB");
  return p;
}

ApiResult<EnclaveView> Host::run_enclave(const EnclaveRequest& r) {
  reap_enclaves();
  // The image first: nothing runs from a file that does not read, or whose signature
  // does not verify (its certificate's dates included).
  const std::span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(r.eif.data()), r.eif.size());
  auto img = eif::parse(bytes);
  if (!img) return api_error(K::kInvalid, "InvalidParameterValue", "the enclave image (EIF): " + img.error().message());
  std::optional<eif::Signature> sig;
  if (img->signature) {
    auto s = eif::read_signature(*img->signature);
    if (!s) return api_error(K::kInvalid, "InvalidParameterValue", "the enclave image's signature: " + s.error().message());
    sig = std::move(*s);
  }
  const eif::Measurements m = eif::measure(*img, sig ? &*sig : nullptr);
  if (sig) {
    if (auto v = eif::verify_signature(*sig, m.pcr0, ::time(nullptr)); !v)
      return api_error(K::kInvalid, "InvalidParameterValue", "the enclave image's signature: " + v.error().message());
  }
  std::string image_name, image_version;
  if (img->metadata) {
    const auto meta = nlohmann::json::parse(img->metadata->begin(), img->metadata->end(), nullptr, false);
    if (meta.is_object()) {
      image_name = meta.value("ImageName", nlohmann::json()).is_string() ? meta["ImageName"].get<std::string>() : "";
      image_version = meta.value("ImageVersion", nlohmann::json()).is_string() ? meta["ImageVersion"].get<std::string>() : "";
    }
  }
  // nitro-cli's limits.
  if (r.cpu_count == 0) return api_error(K::kInvalid, "InvalidParameterValue", "--cpu-count must be at least 1");
  if (r.memory_mib < kMinEnclaveMib)
    return api_error(K::kInvalid, "InvalidParameterValue",
                     "--memory " + std::to_string(r.memory_mib) + " MiB: an enclave needs at least 64 MiB");
  const uint64_t min_for_image = (4 * static_cast<uint64_t>(r.eif.size()) + (1 << 20) - 1) >> 20;
  if (r.memory_mib < min_for_image)
    return api_error(K::kInvalid, "InvalidParameterValue",
                     "--memory " + std::to_string(r.memory_mib) + " MiB: at least 4 times the image's size (" +
                         std::to_string(min_for_image) + " MiB) is needed");
  if (r.cid != 0 && (r.cid < 4 || r.cid > kMaxCid))
    return api_error(K::kInvalid, "InvalidParameterValue",
                     "--enclave-cid " + std::to_string(r.cid) + ": an enclave's CID is 4 to 4294967294 (3 is the parent's)");
  if (r.name.size() > 128) return api_error(K::kInvalid, "InvalidParameterValue", "--enclave-name is longer than 128 characters");

  // The parent's budget, and the record (which holds the slot, the CID and the
  // resources from here on).
  EnclaveView view;
  int slot = -1;
  {
    std::lock_guard lock(mu_);
    AZOTE_TRY(parent, find_instance(r.instance_id));
    if (!parent->enclave_enabled)
      return api_error(K::kInvalid, "UnsupportedOperation",
                       r.instance_id + " was not launched with enclave support (run-instances --enclave-options Enabled=true)");
    if (parent->state != state::kRunning)
      return api_error(K::kConflict, "IncorrectInstanceState", r.instance_id + " is " + parent->state + ", not running");
    uint32_t n = 0, cpus = 0;
    uint64_t mem = 0;
    for (const auto& [id, e] : enclaves_) {
      if (e.view.instance_id != r.instance_id) continue;
      ++n;
      cpus += e.view.cpus;
      mem += e.view.memory_mib;
      if (r.cid != 0 && e.view.cid == r.cid)
        return api_error(K::kInvalid, "InvalidParameterValue", "--enclave-cid " + std::to_string(r.cid) + " is taken by " + id);
    }
    if (n >= kMaxEnclavesPerParent)
      return api_error(K::kCapacity, "EnclaveLimitExceeded", r.instance_id + " already runs 4 enclaves (the most a parent may)");
    // Out of the pool the parent set aside when it started (its guest never had it).
    const std::string pool = r.instance_id + "'s enclave pool (" + std::to_string(parent->enclave_pool_cpus) + " vCPUs, " +
                             std::to_string(parent->enclave_pool_mib) + " MiB: run-instances --enclave-options CpuCount, MemoryMiB)";
    if (cpus + r.cpu_count > parent->enclave_pool_cpus)
      return api_error(K::kCapacity, "InsufficientCpu",
                       "--cpu-count " + std::to_string(r.cpu_count) + ": " + pool + " has " +
                           std::to_string(parent->enclave_pool_cpus - std::min(cpus, parent->enclave_pool_cpus)) +
                           " vCPUs left (its enclaves hold " + std::to_string(cpus) + ")");
    if (mem + r.memory_mib > parent->enclave_pool_mib)
      return api_error(K::kCapacity, "InsufficientMemory",
                       "--memory " + std::to_string(r.memory_mib) + " MiB: " + pool + " has " +
                           std::to_string(parent->enclave_pool_mib - std::min(mem, parent->enclave_pool_mib)) +
                           " MiB left (its enclaves hold " + std::to_string(mem) + " MiB)");
    view.id = r.instance_id + "-enc" + hex16();
    view.instance_id = r.instance_id;
    view.cid = r.cid;
    while (view.cid == 0) {
      const uint64_t c = 4 + random_u64() % (kMaxCid - 4 + 1);
      bool taken = false;
      for (const auto& [id, e] : enclaves_) taken = taken || e.view.cid == c;
      if (!taken) view.cid = c;
    }
    view.cpus = r.cpu_count;
    view.memory_mib = r.memory_mib;
    view.state = "STARTING";
    view.flags = r.debug ? "DEBUG_MODE" : "NONE";
    view.image_name = image_name;
    view.image_version = image_version;
    view.name = r.name.empty() ? (image_name.empty() ? view.id : image_name) : r.name;
    view.measurements = {{"HashAlgorithm", "Sha384 { ... }"},
                         {"PCR0", eif::hex(m.pcr0)},
                         {"PCR1", eif::hex(m.pcr1)},
                         {"PCR2", eif::hex(m.pcr2)}};
    if (m.pcr8) view.measurements["PCR8"] = eif::hex(*m.pcr8);
    slot = free_slot();
    EnclaveRt& e = enclaves_[view.id];
    e.view = view;
    e.debug = r.debug;
    e.slot = slot;
  }
  const std::string id = view.id;
  auto fail = [&](std::string why) -> ApiResult<EnclaveView> {
    end_enclave(id);
    LOG_WARN("enclave %s: %s", id.c_str(), why.c_str());
    return api_error(K::kInternal, "InternalError", "enclave " + id + ": " + why);
  };

  // Its directory: the image (handed to the card and the hv by the launcher), the logs.
  const std::string dir = instance_dir(id);
  {
    std::error_code ec;
    fs::create_directories(dir, ec);
  }
  if (!write_bytes(dir + "/image.eif", r.eif)) return fail("cannot write " + dir + "/image.eif");

  launch::SpawnRequest card;
  card.role = launch::Role::kCardNsm;
  card.instance = id;
  card.slot = static_cast<uint32_t>(slot);
  card.files = {{"eif", dir + "/image.eif", "r"}};
  card.output = dir + "/card-nsm.log";
  card.args = {"--socket", kNsmSocket, "--eif", "fd:{eif}", "--enclave-id", id};
  card.limits = card_limits();
  card.enclave_debug = r.debug;
  auto c = procs_.spawn(card);
  if (!c) return fail("cannot start its NSM card: " + c.error().message());
  {
    std::lock_guard lock(mu_);
    enclaves_[id].card = std::move(c).value();
  }

  const std::string ctl = dir + "/hv.ctl";
  launch::SpawnRequest hv;
  hv.role = launch::Role::kHv;
  hv.instance = id;
  hv.slot = static_cast<uint32_t>(slot);
  hv.listens = {{"control", ctl}};
  hv.files = {{"console", dir + "/console.log", "append"}, {"eif", dir + "/image.eif", "r"}};
  hv.output = dir + "/hv.log";
  hv.args = {"--control", "fd:{control}", "--kvm-fd", "{kvm}", "--console", "fd:{console}", "--vcpus",
             std::to_string(r.cpu_count), "--memory", std::to_string(r.memory_mib) + "M", "--eif", "fd:{eif}"};
  hv.limits.memory_mib = r.memory_mib + kHvOverheadMib;
  hv.limits.pids = r.cpu_count + kHvExtraPids;
  hv.limits.cpu_percent = r.cpu_count * 100;
  hv.limits.cpus = opt_.guest_cpus;
  auto p = procs_.spawn(hv);
  if (!p) return fail("cannot start its hypervisor: " + p.error().message());
  const pid_t hv_pid = p->pid;
  {
    std::lock_guard lock(mu_);
    enclaves_[id].hv = std::move(p).value();
  }
  // The shell answers, the NSM is attached, the vCPUs go.
  const auto deadline = std::chrono::steady_clock::now() + kControlTimeout;
  while (!answers(ctl, std::chrono::milliseconds(200))) {
    if (std::chrono::steady_clock::now() >= deadline) {
      std::string last = read_tail(dir + "/hv.log", 2048);
      while (!last.empty() && last.back() == '\n') last.pop_back();
      if (const size_t nl = last.rfind('\n'); nl != std::string::npos) last = last.substr(nl + 1);
      return fail("its hypervisor did not answer" + (last.empty() ? std::string() : " (" + last + ")"));
    }
  }
  auto client = control::Client::connect(ctl, kControlTimeout);
  if (!client) return fail("its control socket: " + client.error().message());
  if (auto a = client->call({{"op", "attach-device"}, {"kind", "nsm"}, {"socket", kNsmSocket}}, kControlTimeout); !a)
    return fail("attaching its NSM: " + a.error().message());
  // Its vsock device, on its parent's vsock card (the launcher made its directory there
  // when it started this hv): the parent is CID 3 for it, it is view.cid for the parent.
  bool parent_vsock = false;
  {
    std::lock_guard lock(mu_);
    parent_vsock = rt_[r.instance_id].vsock.has_value();
  }
  if (parent_vsock) {
    if (auto a = control::call_once(vsock_control(r.instance_id),
                                    {{"op", "add-device"}, {"cid", view.cid}, {"socket", enclave_vsock_in_card(id)}},
                                    kControlTimeout);
        !a)
      return fail("its vsock device on the parent's vsock card: " + a.error().message());
    if (auto a = client->call({{"op", "attach-device"}, {"kind", "vsock"}, {"socket", kEnclaveVsockInEnclave}}, kControlTimeout); !a)
      return fail("attaching its vsock device: " + a.error().message());
  }
  if (auto s = client->call({{"op", "start"}}, kControlTimeout); !s) return fail("starting its vCPUs: " + s.error().message());
  std::lock_guard lock(mu_);
  EnclaveRt& e = enclaves_[id];
  e.view.state = "RUNNING";
  e.view.pid = hv_pid;
  LOG_INFO("enclave %s of %s: %u vCPUs, %" PRIu64 " MiB, CID %" PRIu64 "%s, PCR0 %s", id.c_str(), r.instance_id.c_str(),
           r.cpu_count, static_cast<uint64_t>(r.memory_mib), e.view.cid, r.debug ? ", debug mode" : "",
           e.view.measurements["PCR0"].c_str());
  return e.view;
}

void Host::reap_enclaves() {
  std::vector<std::string> ended;
  {
    std::lock_guard lock(mu_);
    for (auto& [id, e] : enclaves_)
      if (e.view.state == "RUNNING" && e.hv && procs_.reap(*e.hv) >= 0) ended.push_back(id);
  }
  for (const auto& id : ended) {
    LOG_INFO("enclave %s: its hypervisor exited", id.c_str());
    end_enclave(id);
  }
}

void Host::end_enclave(const std::string& enclave_id) {
  std::optional<Proc> hv, card;
  {
    std::lock_guard lock(mu_);
    auto it = enclaves_.find(enclave_id);
    if (it == enclaves_.end()) return;
    it->second.view.state = "TERMINATING";
    if (it->second.hv)
      hv = Proc{it->second.hv->pid, it->second.hv->starttime, it->second.hv->uid,
                UniqueFd(::fcntl(it->second.hv->pidfd.get(), F_DUPFD_CLOEXEC, 0))};
    if (it->second.card)
      card = Proc{it->second.card->pid, it->second.card->starttime, it->second.card->uid,
                  UniqueFd(::fcntl(it->second.card->pidfd.get(), F_DUPFD_CLOEXEC, 0))};
  }
  // The guest has nothing to save: its hv is killed, then its card; the launcher ends
  // whatever else is left in its cgroups.
  for (auto* p : {&hv, &card}) {
    if (!*p) continue;
    procs_.send_signal(**p, SIGKILL);
    Processes::wait_exit(**p, 5000);
    (void)procs_.reap(**p);
  }
  // Its device on the parent's vsock card goes (the card resets the parent's
  // connections to it), if the card still runs.
  std::string parent;
  uint64_t cid = 0;
  bool parent_vsock = false;
  {
    std::lock_guard lock(mu_);
    auto it = enclaves_.find(enclave_id);
    if (it != enclaves_.end()) {
      parent = it->second.view.instance_id;
      cid = it->second.view.cid;
      parent_vsock = rt_[parent].vsock.has_value();
    }
  }
  if (parent_vsock) {
    if (auto a = control::call_once(vsock_control(parent), {{"op", "remove-device"}, {"cid", cid}}, kControlTimeout); !a)
      LOG_WARN("enclave %s: removing its vsock device: %s", enclave_id.c_str(), a.error().message().c_str());
  }
  procs_.release(enclave_id);
  std::error_code ec;
  fs::remove_all(instance_dir(enclave_id), ec);
  {
    std::lock_guard lock(mu_);
    enclaves_.erase(enclave_id);
  }
}

std::string Host::vsock_control(const std::string& instance_id) const { return instance_dir(instance_id) + "/card-vsock.ctl"; }

ApiResult<void> Host::start_parent_vsock(const std::string& instance_id, uint32_t slot) {
  launch::SpawnRequest req;
  req.role = launch::Role::kCardVsock;
  req.instance = instance_id;
  req.slot = slot;
  req.listens = {{"control", vsock_control(instance_id)}};
  req.output = instance_dir(instance_id) + "/card-vsock.log";
  req.args = {"--device", std::string("cid=3,socket=") + kParentVsockSocket, "--control", "fd:{control}"};
  // The host's services the parent may reach (azote-kms for its enclaves' proxy): the
  // launcher binds <state>/host into the card's jail at /run/azote-host.
  for (const auto& [port, name] : opt_.enclave_host_ports)
    req.args.insert(req.args.end(), {"--host-port", std::to_string(port) + "=/run/azote-host/" + name});
  req.limits = card_limits();
  auto p = procs_.spawn(req);
  if (!p) return api_error(K::kInternal, "InternalError", "cannot start the vsock card of " + instance_id + ": " + p.error().message());
  const auto deadline = std::chrono::steady_clock::now() + kControlTimeout;
  while (!answers(vsock_control(instance_id), std::chrono::milliseconds(200))) {
    if (Processes::wait_exit(*p, 0) || std::chrono::steady_clock::now() >= deadline) {
      std::string last = read_tail(instance_dir(instance_id) + "/card-vsock.log", 512);
      while (!last.empty() && last.back() == '\n') last.pop_back();
      if (const size_t nl = last.rfind('\n'); nl != std::string::npos) last = last.substr(nl + 1);
      procs_.send_signal(*p, SIGKILL);
      return api_error(K::kInternal, "InternalError",
                       "the vsock card of " + instance_id + " did not answer" + (last.empty() ? "" : " (" + last + ")"));
    }
  }
  std::lock_guard lock(mu_);
  rt_[instance_id].vsock = std::move(p).value();
  return {};
}

void Host::end_enclaves_of(const std::string& instance_id) {
  std::vector<std::string> ids;
  {
    std::lock_guard lock(mu_);
    for (const auto& [id, e] : enclaves_)
      if (e.view.instance_id == instance_id) ids.push_back(id);
  }
  for (const auto& id : ids) {
    LOG_INFO("enclave %s: ends with its parent %s", id.c_str(), instance_id.c_str());
    end_enclave(id);
  }
}

ApiResult<std::vector<EnclaveView>> Host::describe_enclaves(const std::string& instance_id) {
  reap_enclaves();
  std::lock_guard lock(mu_);
  if (!instance_id.empty()) AZOTE_TRYV(find_instance(instance_id));
  std::vector<EnclaveView> out;
  for (const auto& [id, e] : enclaves_)
    if (instance_id.empty() || e.view.instance_id == instance_id) out.push_back(e.view);
  return out;
}

ApiResult<EnclaveView> Host::terminate_enclave(const std::string& enclave_id) {
  EnclaveView v;
  {
    std::lock_guard lock(mu_);
    auto it = enclaves_.find(enclave_id);
    if (it == enclaves_.end())
      return api_error(K::kNotFound, "InvalidEnclaveID.NotFound", "the enclave '" + enclave_id + "' does not exist");
    v = it->second.view;
  }
  end_enclave(enclave_id);
  v.state = "TERMINATED";
  return v;
}

ApiResult<std::string> Host::enclave_console(const std::string& enclave_id) {
  bool debug = false;
  {
    std::lock_guard lock(mu_);
    auto it = enclaves_.find(enclave_id);
    if (it == enclaves_.end())
      return api_error(K::kNotFound, "InvalidEnclaveID.NotFound", "the enclave '" + enclave_id + "' does not exist");
    debug = it->second.debug;
  }
  if (!debug)
    return api_error(K::kInvalid, "UnsupportedOperation",
                     enclave_id + " was not started in debug mode: nobody reads its console (run-enclave --debug-mode)");
  return read_tail(instance_dir(enclave_id) + "/console.log", kConsoleBytes);
}

}  // namespace azote::controller
