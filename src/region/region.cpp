#include "region/region.hpp"

#include "region/enrol.hpp"
#include "region/network.hpp"

#include <sys/random.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <set>
#include <shared_mutex>
#include <thread>

#include "api/azote.grpc.pb.h"
#include "api/client.hpp"
#include "base/hex.hpp"
#include "base/log.hpp"
#include "pki/files.hpp"
#include "ec2api/error.hpp"
#include "ec2api/params.hpp"
#include "ec2api/request.hpp"
#include "ec2api/responses.hpp"
#include "ec2api/xml.hpp"
#include "etcd/watch.hpp"
#include "sigv4/sigv4.hpp"
#include "vpc_policy/flow.hpp"

namespace azote::region {
namespace {

using Json = nlohmann::json;
using ec2api::Ec2Error;
using ec2api::api_error;
template <class T>
using ApiResult = Result<T, Ec2Error>;
namespace v1 = ::azote::v1;

constexpr auto kHostCallTimeout = std::chrono::seconds(30);
constexpr int64_t kDefaultPageSize = 1000;

std::string hex(size_t n) {
  static const char* d = "0123456789abcdef";
  std::string s;
  while (s.size() < n) {
    uint8_t b[16];
    if (::getrandom(b, sizeof b, 0) != static_cast<ssize_t>(sizeof b)) continue;
    for (uint8_t c : b)
      if (s.size() < n) s += d[c & 15];
  }
  return s;
}

ec2api::Timestamp parse_time(const std::string& rfc3339) {
  if (auto t = ec2api::parse_timestamp(rfc3339)) return *t;
  return ec2api::Timestamp{};
}

Json instance_json(const InstanceRec& r) {
  Json tags = Json::array();
  for (const auto& [k, v] : r.tags) tags.push_back({k, v});
  return {{"id", r.id},          {"host", r.host},       {"zone", r.zone},
          {"reservation", r.reservation_id}, {"owner_key", r.owner_key}, {"image", r.image_id},
          {"type", r.type},      {"launch_time", r.launch_time}, {"client_token", r.client_token},
          {"vcpus", r.vcpus},    {"memory_mib", r.memory_mib},   {"tags", tags}, {"terminated", r.terminated},
          {"terminated_at", r.terminated_at}, {"subnet", r.subnet}, {"ip", r.ip}, {"groups", r.groups}};
}

std::optional<InstanceRec> instance_from_unchecked(std::string_view text) {
  const Json j = Json::parse(text, nullptr, false);
  if (!j.is_object()) return std::nullopt;
  InstanceRec r;
  r.id = j.value("id", "");
  r.host = j.value("host", "");
  r.zone = j.value("zone", "");
  r.reservation_id = j.value("reservation", "");
  r.owner_key = j.value("owner_key", "");
  r.image_id = j.value("image", "");
  r.type = j.value("type", "");
  r.launch_time = j.value("launch_time", "");
  r.client_token = j.value("client_token", "");
  r.vcpus = j.value("vcpus", 0u);
  r.memory_mib = j.value("memory_mib", uint64_t{0});
  r.terminated = j.value("terminated", false);
  r.terminated_at = j.value("terminated_at", int64_t{0});
  r.subnet = j.value("subnet", "");
  r.ip = j.value("ip", "");
  r.groups = j.value("groups", std::vector<std::string>{});
  if (j.contains("tags") && j["tags"].is_array())
    for (const auto& t : j["tags"])
      if (t.is_array() && t.size() == 2 && t[0].is_string() && t[1].is_string()) r.tags.emplace_back(t[0], t[1]);
  if (r.id.empty() || r.host.empty()) return std::nullopt;
  return r;
}
// A record as anyone with access to etcd may have written it: a field of the wrong type
// makes it unreadable (skipped), never stops the region (nlohmann::json::value throws).
std::optional<InstanceRec> instance_from(std::string_view text) {
  try {
    return instance_from_unchecked(text);
  } catch (const nlohmann::json::exception&) {
    return std::nullopt;
  }
}

std::optional<HostRec> host_from_unchecked(std::string_view text) {
  const Json j = Json::parse(text, nullptr, false);
  if (!j.is_object()) return std::nullopt;
  HostRec h;
  h.id = j.value("id", "");
  h.endpoint = j.value("endpoint", "");
  h.zone = j.value("zone", "");
  h.vcpus = j.value("vcpus", 0u);
  h.memory_mib = j.value("memory_mib", uint64_t{0});
  h.underlay = j.value("underlay", "");
  h.fabric_id = j.value("fabric_id", 0u);
  if (h.id.empty() || h.endpoint.empty()) return std::nullopt;
  return h;
}
// A record as anyone with access to etcd may have written it: a field of the wrong type
// makes it unreadable (skipped), never stops the region (nlohmann::json::value throws).
std::optional<HostRec> host_from(std::string_view text) {
  try {
    return host_from_unchecked(text);
  } catch (const nlohmann::json::exception&) {
    return std::nullopt;
  }
}

// A volume's record: where it lives and what the region adds (owner, tags); its state,
// size and attachments are its host's.
struct VolumeRec {
  std::string id, host, zone, owner_key;
  std::string device;  // the name AttachVolume was given ("/dev/sdf"); the host names its own

  std::vector<std::pair<std::string, std::string>> tags;
};

Json volume_json(const VolumeRec& v) {
  return {{"id", v.id},         {"host", v.host},     {"zone", v.zone},
          {"owner_key", v.owner_key}, {"device", v.device}, {"tags", tags_json(v.tags)}};
}
std::optional<VolumeRec> volume_from_unchecked(std::string_view text) {
  const Json j = Json::parse(text, nullptr, false);
  if (!j.is_object()) return std::nullopt;
  VolumeRec v;
  v.id = j.value("id", "");
  v.host = j.value("host", "");
  v.zone = j.value("zone", "");
  v.owner_key = j.value("owner_key", "");
  v.device = j.value("device", "");
  if (j.contains("tags")) v.tags = tags_from(j["tags"]);
  if (v.id.empty() || v.host.empty()) return std::nullopt;
  return v;
}
// A record as anyone with access to etcd may have written it: a field of the wrong type
// makes it unreadable (skipped), never stops the region (nlohmann::json::value throws).
std::optional<VolumeRec> volume_from(std::string_view text) {
  try {
    return volume_from_unchecked(text);
  } catch (const nlohmann::json::exception&) {
    return std::nullopt;
  }
}

// A filter of DescribeInstances: which names the region knows, and whether an instance
// passes. Values: any may match; '*' and '?' are wildcards, as EC2's.
bool filter_known(const std::string& name) {
  static const std::set<std::string> known = {"instance-id", "instance-state-name", "instance-type", "image-id",
                                              "availability-zone", "reservation-id", "tag-key", "private-ip-address",
                                              "vpc-id", "subnet-id"};
  return known.count(name) != 0 || name.rfind("tag:", 0) == 0;
}

bool any_value(const std::vector<std::string>& pats, const std::string& v) {
  for (const auto& p : pats)
    if (wildcard_match(p, v, false)) return true;
  return false;
}

bool passes(const ec2api::Filter& f, const ec2api::Instance& i, const std::string& reservation) {
  const std::string& n = f.name;
  if (n == "instance-id") return any_value(f.values, i.instance_id);
  if (n == "instance-state-name") return any_value(f.values, i.state.name);
  if (n == "instance-type") return any_value(f.values, i.instance_type);
  if (n == "image-id") return any_value(f.values, i.image_id);
  if (n == "availability-zone") return any_value(f.values, i.placement.availability_zone);
  if (n == "reservation-id") return any_value(f.values, reservation);
  if (n == "private-ip-address") return any_value(f.values, i.private_ip_address);
  if (n == "vpc-id") return any_value(f.values, i.vpc_id);
  if (n == "subnet-id") return any_value(f.values, i.subnet_id);
  if (n == "tag-key") {
    for (const auto& t : i.tags)
      if (any_value(f.values, t.key)) return true;
    return false;
  }
  if (n.rfind("tag:", 0) == 0) {
    const std::string key = n.substr(4);
    for (const auto& t : i.tags)
      if (t.key == key && any_value(f.values, t.value)) return true;
    return false;
  }
  return false;
}

ec2api::InstanceState state_of(const std::string& name) {
  auto s = ec2api::parse_instance_state_name(name);
  return ec2api::instance_state(s ? *s : ec2api::InstanceStateName::kPending);
}

}  // namespace

// ------------------------------------------------------------------------------------
struct Region::Impl {
  Impl(Options o, etcd::Client s, std::vector<Principal> p, std::unique_ptr<audit::AuditLog> a)
      : opt(std::move(o)), store(std::move(s)), principals(std::move(p)), audit(std::move(a)) {}
  ~Impl() {
    pusher.request_stop();
    push_cv.notify_all();
    if (pusher.joinable()) pusher.join();
    monitor.request_stop();
    monitor_cv.notify_all();
    if (monitor.joinable()) monitor.join();
    // The watch's thread writes into members declared after `sync`: stopped before they go.
    sync.reset();
  }
  Options opt;
  etcd::Client store;
  std::vector<Principal> principals;
  std::unique_ptr<audit::AuditLog> audit;
  std::mutex place_mu;  // one placement at a time (the region is one process for now)

  // ---- host leases ----------------------------------------------------------------------
  // One etcd lease per host (key alive/<host>, its epoch the revision that wrote it) while
  // the host answers probes; every call to a host carries the epoch, which the host
  // admits only while it is current (controller/region_fence.hpp).
  struct HostLease {
    int64_t lease = 0;
    uint64_t epoch = 0;  // 0: none (never reached, or lost)
    std::chrono::steady_clock::time_point last_ok{};
    bool probed = false;
    bool lost = false;  // had a lease that lapsed
    std::string lost_since;
  };
  std::mutex lease_mu;
  std::map<std::string, HostLease> leases;  // lease_mu
  std::mutex probe_mu;                      // one probe at a time
  std::mutex monitor_mu;
  std::condition_variable_any monitor_cv;
  std::jthread monitor;  // stopped and joined first (~Impl), then the watch

  uint64_t epoch_of(const std::string& host) {
    std::lock_guard lock(lease_mu);
    auto it = leases.find(host);
    return it == leases.end() ? 0 : it->second.epoch;
  }
  // A host placement may use: it answered the last probes and holds a lease.
  bool usable(const std::string& host) {
    std::lock_guard lock(lease_mu);
    auto it = leases.find(host);
    return it != leases.end() && it->second.epoch != 0;
  }

  // One probe of a host under its lease: a host without one gets a new lease first (the
  // probe is its first call under the new epoch), which is revoked if it does not answer.
  void probe(const HostRec& h) {
    std::lock_guard serial(probe_mu);  // the monitor and placement may probe the same host
    HostLease cur;
    {
      std::lock_guard lock(lease_mu);
      cur = leases[h.id];
    }
    const auto now = std::chrono::steady_clock::now();
    bool fresh = false;
    if (cur.epoch == 0) {
      const int64_t ttl_s = std::max<int64_t>(2, std::chrono::duration_cast<std::chrono::seconds>(opt.host_lease).count());
      auto g = store.grant(ttl_s);
      if (!g) return;  // etcd is away: try again at the next round
      auto written = store.put(key("alive", h.id), Json{{"host", h.id}, {"since", ec2api::format_timestamp(now_ms())}}.dump(), g->id);
      if (!written) {
        (void)store.revoke(g->id);
        return;
      }
      cur.lease = g->id;
      cur.epoch = static_cast<uint64_t>(*written);
      fresh = true;
    }
    v1::DescribeInstanceTypesRequest req;
    req.add_instance_types("t3.nano");
    auto r = host_call(h.id, &v1::Ec2::Stub::DescribeInstanceTypes, req, std::chrono::seconds(5), cur.epoch);
    if (r) {
      if (!fresh) {
        auto k = store.keep_alive_once(cur.lease);
        // Only a lease etcd no longer has is gone; an etcd that does not answer now is not
        // a reason to drop a host that does.
        if (!k && k.error().kind == etcd::EtcdErrc::kNotFound) cur.epoch = 0;
      }
      if (cur.epoch != 0 && cur.lost)
        LOG_INFO("region: host %s answers again: new lease, epoch %llu", h.id.c_str(), static_cast<unsigned long long>(cur.epoch));
      if (cur.epoch != 0) {
        cur.lost = false;
        cur.lost_since.clear();
      }
      cur.last_ok = now;
    } else if (fresh) {
      (void)store.revoke(cur.lease);  // never acted under: let it go
      cur.epoch = 0;
    } else if (r.error().code == "RegionLeaseLost") {
      // The host says the lease lapsed on its side: let it go; the next probe takes a new one.
      (void)store.revoke(cur.lease);
      cur.epoch = 0;
    } else if (now - cur.last_ok > opt.host_lease) {
      // Silent for a whole lease: lost (the etcd lease, no longer kept alive, has lapsed too).
      (void)store.revoke(cur.lease);
      cur.epoch = 0;
      cur.lost = true;
      cur.lost_since = ec2api::format_timestamp(now_ms());
      LOG_WARN("region: host %s lost: no answer for %lld ms (%s)", h.id.c_str(),
               static_cast<long long>(opt.host_lease.count()), r.error().message.c_str());
    }
    cur.probed = true;
    std::lock_guard lock(lease_mu);
    leases[h.id] = cur;
  }

  void probe_all() {
    auto hs = hosts();
    if (!hs) return;
    std::vector<std::jthread> threads;
    for (const auto& h : *hs) threads.emplace_back([this, h] { probe(h); });
  }

  Result<void, std::string> start() {
    auto sy = etcd::PrefixSync::start(
        store, opt.prefix, [this](const etcd::Snapshot& snap) { on_snapshot(snap); },
        [this](const std::vector<etcd::Event>& ev) { on_events(ev); });
    if (!sy) return Unexpected{"watching " + opt.prefix + " in etcd: " + sy.error().describe()};
    sync.emplace(std::move(sy).value());
    start_monitor();
    if (auto d = ensure_default_network(); !d) return Unexpected{"the default VPC: " + d.error().message};
    start_pusher();
    wake_pusher();
    return {};
  }
  void start_monitor() {
    probe_all();
    monitor = std::jthread([this](std::stop_token st) {
      auto compacted = std::chrono::steady_clock::now();
      while (!st.stop_requested()) {
        {
          std::unique_lock lock(monitor_mu);
          monitor_cv.wait_for(lock, st, opt.host_lease / 3, [] { return false; });
        }
        if (st.stop_requested()) break;
        probe_all();
        forget_terminated();
        if (opt.compact_every.count() > 0 && std::chrono::steady_clock::now() - compacted >= opt.compact_every) {
          compacted = std::chrono::steady_clock::now();
          compact();
        }
      }
    });
  }

  // Records of instances terminated longer ago than the retention go. Deleted only if
  // unchanged since read (compare-and-swap on the revision), so a concurrent edit wins.
  // (The records of root volumes their host deleted with the instance stay: a known gap.)
  void forget_terminated() {
    const int64_t now = static_cast<int64_t>(::time(nullptr));
    std::vector<std::pair<std::string, int64_t>> gone;
    {
      std::shared_lock lock(cache_mu);
      for (const auto& [id, r] : inst_by_id)
        if (r.terminated && r.terminated_at != 0 && now - r.terminated_at >= opt.terminated_retention.count())
          if (auto it = cache.find(key("instances", id)); it != cache.end()) gone.emplace_back(it->first, it->second.mod_revision);
    }
    for (const auto& [k, rev] : gone) {
      auto t = store.txn({etcd::Compare::mod_revision(k, etcd::Compare::Cmp::kEqual, rev)}, {etcd::Op::del(k)});
      if (!t) {
        LOG_WARN("region: forgetting %s: %s", k.c_str(), t.error().describe().c_str());
        continue;
      }
      if (!t->succeeded) continue;
      std::unique_lock lock(cache_mu);
      apply_locked({k, "", 0, t->revision, 0, 0}, true);
    }
  }

  // History older than the last retain_revisions goes (the copy's watch re-lists if it
  // ever falls that far behind).
  void compact() {
    const int64_t rev = sync ? sync->revision() : 0;
    if (rev - opt.retain_revisions <= 1) return;
    if (auto c = store.compact(rev - opt.retain_revisions); !c && c.error().kind != etcd::EtcdErrc::kCompacted)
      LOG_WARN("region: compacting etcd to revision %lld: %s", static_cast<long long>(rev - opt.retain_revisions),
               c.error().describe().c_str());
  }

  static ec2api::Timestamp now_ms() {
    return ec2api::Timestamp(std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::system_clock::now().time_since_epoch()));
  }

  struct HostConn {
    HostRec rec;
    std::unique_ptr<v1::Ec2::Stub> stub;
  };
  std::mutex hosts_mu;
  std::map<std::string, std::shared_ptr<HostConn>> conns;  // hosts_mu

  // An instance as its host last described it.
  struct Live {
    v1::Instance inst;
    std::string stale;  // why the view is not fresh ("" when it is)
  };
  // What one call carries through its handler.
  struct Call {
    const Principal* who = nullptr;
    std::string request_id;
    const ec2api::Params* params = nullptr;
  };
  using Handler = ApiResult<std::string> (Impl::*)(Call&);
  struct ActionDef {
    Handler handler;
    // The parameters it reads (a name, or the root of a list or structure: "Filter" takes
    // "Filter.1.Name"); any other is refused before anything runs, never ignored.
    std::vector<std::string_view> params;
  };

  std::string key(std::string_view kind, std::string_view id) const { return opt.prefix + std::string(kind) + "/" + std::string(id); }
  std::string arn(std::string_view kind, std::string_view id) const {
    return "arn:aws:ec2:" + opt.name + ":" + opt.account + ":" + std::string(kind) + "/" + std::string(id);
  }

  // ---- the region's copy of its state -------------------------------------------------
  // Every key under the prefix, kept by a PrefixSync (list, then watch; listed again after
  // a compaction), so that reads never go to etcd; this process's own writes go into it
  // at once (with their revision), so that a client reads what it just wrote. An entry is
  // replaced only by a newer revision; a deleted key leaves a tombstone until the watch is
  // past it, so that a late event cannot bring it back.
  std::shared_mutex cache_mu;
  std::map<std::string, etcd::KeyValue, std::less<>> cache;  // cache_mu
  std::map<std::string, int64_t, std::less<>> tombstones;    // cache_mu: key -> revision of its deletion
  std::optional<etcd::PrefixSync> sync;

  // The same records parsed once, by id, and each host's vCPUs and MiB held by the
  // instances placed on it (not terminated): placement reads these, never parses.
  std::map<std::string, HostRec> host_by_id;         // cache_mu
  std::map<std::string, InstanceRec> inst_by_id;     // cache_mu
  std::map<std::string, VolumeRec> vol_by_id;        // cache_mu
  std::map<std::string, VpcRec> vpc_by_id;           // cache_mu
  std::map<std::string, SubnetRec> subnet_by_id;     // cache_mu
  std::map<std::string, GroupRec> group_by_id;       // cache_mu
  // The region's network changed (VPCs, subnets, groups, hosts): the revision
  // of the last such change; hosts are pushed their share when theirs is older.
  int64_t net_revision = 0;                          // cache_mu
  int64_t map_revision = 0;                          // cache_mu: the same for instances (the fabric's mappings)
  template <class M>
  std::vector<typename M::mapped_type> all_of(const M& m) {
    std::shared_lock lock(cache_mu);
    std::vector<typename M::mapped_type> out;
    out.reserve(m.size());
    for (const auto& [id, v] : m) out.push_back(v);
    return out;
  }
  struct Used {
    int64_t vcpus = 0, mib = 0;
  };
  std::map<std::string, Used> used_by_host;          // cache_mu

  void unindex_locked(const std::string& k) {
    const std::string_view rest = std::string_view(k).substr(opt.prefix.size());
    if (rest.rfind("instances/", 0) == 0) {
      if (auto it = inst_by_id.find(std::string(rest.substr(10))); it != inst_by_id.end()) {
        if (!it->second.terminated) {
          Used& u = used_by_host[it->second.host];
          u.vcpus -= it->second.vcpus;
          u.mib -= static_cast<int64_t>(it->second.memory_mib);
        }
        inst_by_id.erase(it);
      }
    } else if (rest.rfind("volumes/", 0) == 0) {
      vol_by_id.erase(std::string(rest.substr(8)));
    } else if (rest.rfind("hosts/", 0) == 0) {
      host_by_id.erase(std::string(rest.substr(6)));
    } else if (rest.rfind("vpcs/", 0) == 0) {
      vpc_by_id.erase(std::string(rest.substr(5)));
    } else if (rest.rfind("subnets/", 0) == 0) {
      subnet_by_id.erase(std::string(rest.substr(8)));
    } else if (rest.rfind("security-groups/", 0) == 0) {
      group_by_id.erase(std::string(rest.substr(16)));
    }
  }
  void index_locked(const etcd::KeyValue& kv) {
    const std::string_view rest = std::string_view(kv.key).substr(opt.prefix.size());
    if (rest.rfind("instances/", 0) == 0) {
      if (auto r = instance_from(kv.value)) {
        if (!r->terminated) {
          Used& u = used_by_host[r->host];
          u.vcpus += r->vcpus;
          u.mib += static_cast<int64_t>(r->memory_mib);
        }
        inst_by_id[r->id] = std::move(*r);
      }
    } else if (rest.rfind("volumes/", 0) == 0) {
      if (auto v = volume_from(kv.value)) vol_by_id[v->id] = std::move(*v);
    } else if (rest.rfind("hosts/", 0) == 0) {
      if (auto h = host_from(kv.value)) host_by_id[h->id] = std::move(*h);
    } else if (rest.rfind("vpcs/", 0) == 0) {
      if (auto v = vpc_from(kv.value)) vpc_by_id[v->id] = std::move(*v);
    } else if (rest.rfind("subnets/", 0) == 0) {
      if (auto v = subnet_from(kv.value)) subnet_by_id[v->id] = std::move(*v);
    } else if (rest.rfind("security-groups/", 0) == 0) {
      if (auto v = group_from(kv.value)) group_by_id[v->id] = std::move(*v);
    }
  }
  void reindex_locked() {
    host_by_id.clear();
    inst_by_id.clear();
    vol_by_id.clear();
    vpc_by_id.clear();
    subnet_by_id.clear();
    group_by_id.clear();
    used_by_host.clear();
    for (const auto& [k, kv] : cache) index_locked(kv);
  }

  // An instance record's part of the fabric's mappings ("" for none, or another key).
  std::string mapping_of_locked(std::string_view k) const {
    const std::string_view rest = k.substr(std::min(k.size(), opt.prefix.size()));
    if (rest.rfind("instances/", 0) != 0) return "";
    auto it = inst_by_id.find(std::string(rest.substr(10)));
    if (it == inst_by_id.end() || it->second.terminated || it->second.ip.empty()) return "";
    return it->second.host + "|" + it->second.subnet + "|" + it->second.ip;
  }
  bool network_key(std::string_view k) const {
    const std::string_view rest = k.substr(std::min(k.size(), opt.prefix.size()));
    for (std::string_view kind : {"vpcs/", "subnets/", "security-groups/", "hosts/"})
      if (rest.rfind(kind, 0) == 0) return true;
    return false;
  }
  void apply_locked(const etcd::KeyValue& kv, bool deleted) {
    auto it = cache.find(kv.key);
    if (it != cache.end() && it->second.mod_revision >= kv.mod_revision) return;
    if (auto t = tombstones.find(kv.key); t != tombstones.end() && t->second >= kv.mod_revision) return;
    const std::string mapping_before = mapping_of_locked(kv.key);
    unindex_locked(kv.key);
    if (network_key(kv.key)) net_revision = std::max(net_revision, kv.mod_revision);
    if (deleted) {
      if (it != cache.end()) cache.erase(it);
      tombstones[kv.key] = kv.mod_revision;
    } else {
      cache[kv.key] = kv;
      tombstones.erase(kv.key);
      index_locked(kv);
    }
    // Where an instance's address lives changed (not its tags): the fabric hosts' mappings.
    if (mapping_of_locked(kv.key) != mapping_before) map_revision = std::max(map_revision, kv.mod_revision);
  }
  void on_snapshot(const etcd::Snapshot& snap) {
    std::unique_lock lock(cache_mu);
    std::map<std::string, etcd::KeyValue, std::less<>> next;
    for (const auto& kv : snap.kvs) next[kv.key] = kv;
    // Writes of this process newer than the snapshot stay (their events follow).
    for (const auto& [k, kv] : cache)
      if (kv.mod_revision > snap.revision) next[k] = kv;
    for (auto it = tombstones.begin(); it != tombstones.end();) {
      if (it->second > snap.revision) {
        next.erase(it->first);
        ++it;
      } else {
        it = tombstones.erase(it);
      }
    }
    cache = std::move(next);
    reindex_locked();
    net_revision = std::max(net_revision, snap.revision);
    map_revision = std::max(map_revision, snap.revision);
  }
  void on_events(const std::vector<etcd::Event>& events) {
    std::unique_lock lock(cache_mu);
    int64_t last = 0;
    for (const auto& e : events) {
      apply_locked(e.kv, e.type == etcd::Event::Type::kDelete);
      last = std::max(last, e.revision());
    }
    std::erase_if(tombstones, [&](const auto& t) { return t.second <= last; });
  }
  std::optional<etcd::KeyValue> get(const std::string& k) {
    std::shared_lock lock(cache_mu);
    auto it = cache.find(k);
    if (it == cache.end()) return std::nullopt;
    return it->second;
  }
  // Writes: to etcd, then into the copy.
  ApiResult<void> put(const std::string& k, const std::string& value) {
    auto r = store.put(k, value);
    if (!r) return api_error("Unavailable", "the region's store: " + r.error().describe());
    std::unique_lock lock(cache_mu);
    apply_locked({k, value, 0, *r, 0, 0}, false);
    return {};
  }
  // true: written; false: the record changed meanwhile (the copy now has what is there).
  ApiResult<bool> swap(const std::string& k, int64_t mod_revision, const std::string& value) {
    auto r = store.compare_and_swap(k, mod_revision, value);
    if (!r) return api_error("Unavailable", "the region's store: " + r.error().describe());
    std::unique_lock lock(cache_mu);
    if (r->swapped) apply_locked({k, value, 0, r->revision, 0, 0}, false);
    else if (r->current) apply_locked(*r->current, false);
    return r->swapped;
  }
  // A record read, changed by `change` and written back only if nobody wrote it since
  // (compare-and-swap on its revision, read again and retried): concurrent edits of one
  // record (tags, termination, a device name) never undo each other. false: no such record.
  ApiResult<bool> update(const std::string& k, std::string_view busy_code,
                         const std::function<ApiResult<void>(Json&)>& change) {
    for (int attempt = 0; attempt < 6; ++attempt) {
      auto kv = get(k);
      Json j = kv ? Json::parse(kv->value, nullptr, false) : Json();
      if (!kv || !j.is_object()) return false;
      AZOTE_TRYV(change(j));
      AZOTE_TRY(swapped, swap(k, kv->mod_revision, j.dump()));
      if (swapped) return true;
    }
    return api_error(busy_code, k.substr(opt.prefix.size()) + " keeps changing; try again");
  }
  ApiResult<void> erase(const std::string& k) {
    auto r = store.del(k);
    if (!r) return api_error("Unavailable", "the region's store: " + r.error().describe());
    std::unique_lock lock(cache_mu);
    apply_locked({k, "", 0, r->revision, 0, 0}, true);
    return {};
  }

  // ---- hosts ------------------------------------------------------------------------
  ApiResult<std::vector<HostRec>> hosts() {
    std::shared_lock lock(cache_mu);
    std::vector<HostRec> out;
    for (const auto& [id, h] : host_by_id) out.push_back(h);
    return out;
  }

  ApiResult<std::shared_ptr<HostConn>> conn(const std::string& host_id) {
    {
      std::lock_guard lock(hosts_mu);
      if (auto it = conns.find(host_id); it != conns.end()) return it->second;
    }
    auto kv = get(key("hosts", host_id));
    if (!kv) return api_error("InternalError", "host " + host_id + " is not registered");
    auto rec = host_from(kv->value);
    if (!rec) return api_error("InternalError", "host " + host_id + "'s record does not read");
    auto creds = api::load_credentials(opt.hosts_dir + "/" + host_id);
    if (!creds) return api_error("InternalError", "credentials for host " + host_id + ": " + creds.error().message());
    auto c = std::make_shared<HostConn>();
    c->rec = *rec;
    c->stub = v1::Ec2::NewStub(api::make_channel(rec->endpoint, *creds));
    std::lock_guard lock(hosts_mu);
    conns[host_id] = c;
    return c;
  }

  // One call to a host's controller; its EC2 error (code and message) passed on as is,
  // an unreachable host as Unavailable naming it.
  // Every call carries the host's current lease epoch (`epoch`, or the one held now): a
  // host without one is not called at all (Unavailable), so nothing reaches a host unfenced.
  template <class Req, class Resp>
  ApiResult<Resp> host_call(const std::string& host_id,
                            grpc::Status (v1::Ec2::Stub::*method)(grpc::ClientContext*, const Req&, Resp*),
                            const Req& req, std::chrono::seconds timeout = kHostCallTimeout, uint64_t epoch = 0) {
    if (epoch == 0) epoch = epoch_of(host_id);
    if (epoch == 0)
      return api_error("Unavailable", "host " + host_id + " holds no lease of the region (lost, or not reached yet)");
    AZOTE_TRY(c, conn(host_id));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + timeout);
    ctx.AddMetadata("azote-region-epoch", std::to_string(epoch));
    ctx.AddMetadata("azote-region-lease-ms", std::to_string(opt.host_lease.count()));
    Resp resp;
    const grpc::Status st = ((*c->stub).*method)(&ctx, req, &resp);
    if (st.ok()) return resp;
    const api::ApiError e = api::describe_status(st, c->rec.endpoint, &ctx);
    if (e.category == api::ApiError::Category::kConnection)
      return api_error("Unavailable", "host " + host_id + " cannot be reached: " + e.message);
    return api_error(e.code.empty() ? "InternalError" : e.code, e.message);
  }

  // ---- instances ----------------------------------------------------------------------
  // "i-" and 8 or 17 hex digits, as EC2's (InvalidInstanceID.Malformed otherwise).
  static ApiResult<void> well_formed(std::string_view id) {
    const bool hex_tail = id.size() > 2 && std::all_of(id.begin() + 2, id.end(), [](char ch) {
      return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f');
    });
    if (id.rfind("i-", 0) != 0 || (id.size() != 10 && id.size() != 19) || !hex_tail)
      return api_error("InvalidInstanceID.Malformed", "Invalid id: \"" + std::string(id.substr(0, 64)) + "\"");
    return {};
  }

  ApiResult<std::vector<InstanceRec>> instance_recs() {
    std::shared_lock lock(cache_mu);
    std::vector<InstanceRec> out;
    out.reserve(inst_by_id.size());
    for (const auto& [id, r] : inst_by_id) out.push_back(r);
    return out;
  }

  ApiResult<InstanceRec> instance_rec(std::string_view id) {
    AZOTE_TRYV(well_formed(id));
    std::optional<InstanceRec> r;
    {
      std::shared_lock lock(cache_mu);
      if (auto it = inst_by_id.find(std::string(id)); it != inst_by_id.end()) r = it->second;
    }
    if (!r) return api_error("InvalidInstanceID.NotFound", "The instance ID '" + std::string(id) + "' does not exist");
    return *r;
  }

  ec2api::Instance to_ec2(const InstanceRec& r, const Live* view) const {
    const v1::Instance* live = view != nullptr ? &view->inst : nullptr;
    ec2api::Instance i;
    i.instance_id = r.id;
    i.image_id = r.image_id;
    i.instance_type = r.type;
    i.launch_time = parse_time(r.launch_time);
    i.placement.availability_zone = r.zone;
    i.client_token = r.client_token;
    for (const auto& [k, v] : r.tags) i.tags.push_back({k, v});
    // The host's word on its state; a host that no longer knows it: terminated.
    i.state = state_of(live != nullptr ? live->state().name() : "terminated");
    if (live == nullptr) {
      i.state_reason = ec2api::StateReason{"Server.InternalError", "the host no longer knows this instance"};
      return i;
    }
    if (!live->state_reason().code().empty())
      i.state_reason = ec2api::StateReason{live->state_reason().code(), live->state_reason().message()};
    if (!view->stale.empty()) i.state_reason = ec2api::StateReason{"Server.InternalError", view->stale};
    i.private_ip_address = live->private_ip_address();
    i.private_dns_name = live->private_dns_name();
    i.subnet_id = live->subnet_id();
    i.vpc_id = live->vpc_id();
    i.root_device_name = live->root_device_name().empty() ? i.root_device_name : live->root_device_name();
    for (const auto& g : live->security_groups()) i.security_groups.push_back({g.group_id(), g.group_name()});
    for (const auto& n : live->network_interfaces()) {
      ec2api::InstanceNetworkInterface o;
      o.network_interface_id = n.network_interface_id();
      o.subnet_id = n.subnet_id();
      o.vpc_id = n.vpc_id();
      o.owner_id = opt.account;
      o.status = n.status().empty() ? "in-use" : n.status();
      o.mac_address = n.mac_address();
      o.private_ip_address = n.private_ip_address();
      o.private_dns_name = n.private_dns_name();
      o.source_dest_check = n.source_dest_check();
      for (const auto& g : n.groups()) o.groups.push_back({g.group_id(), g.group_name()});
      const std::string_view eni = o.network_interface_id;
      o.attachment.attachment_id = "eni-attach-" + std::string(eni.substr(std::min<size_t>(4, eni.size())));
      o.attachment.device_index = static_cast<int>(n.attachment().device_index());
      o.attachment.status = n.attachment().status().empty() ? "attached" : n.attachment().status();
      o.attachment.attach_time = i.launch_time;
      o.attachment.delete_on_termination = n.attachment().delete_on_termination();
      i.network_interfaces.push_back(o);
    }
    for (const auto& b : live->block_device_mappings()) {
      ec2api::InstanceBlockDeviceMapping m;
      m.device_name = b.device_name();
      m.ebs.volume_id = b.volume_id();
      m.ebs.status = b.status().empty() ? "attached" : b.status();
      m.ebs.delete_on_termination = b.delete_on_termination();
      m.ebs.attach_time = i.launch_time;
      i.block_device_mappings.push_back(m);
    }
    i.metadata_options.http_tokens = live->metadata_options().http_tokens().empty() ? "optional" : live->metadata_options().http_tokens();
    i.enclave_options_enabled = live->enclave_options().enabled();
    i.cpu_options = ec2api::CpuOptions{static_cast<int>(std::max(1u, live->vcpus() / 2)), live->vcpus() >= 2 ? 2 : 1};
    return i;
  }

  // The live view of these records: one DescribeInstances per host that holds some of
  // them (in parallel; every instance of that host, so that one it forgot does not hide
  // the others). A host that does not answer: its instances as last seen, marked stale.
  std::mutex seen_mu;
  std::map<std::string, v1::Instance> last_seen;  // seen_mu

  std::map<std::string, Live> live(const std::vector<InstanceRec>& recs) {
    std::map<std::string, std::vector<std::string>> by_host;
    for (const auto& r : recs) by_host[r.host].push_back(r.id);
    std::map<std::string, Live> out;
    std::mutex mu;
    std::vector<std::jthread> threads;
    for (const auto& [host, ids] : by_host) {
      threads.emplace_back([&, host = host, ids = ids] {
        auto r = host_call(host, &v1::Ec2::Stub::DescribeInstances, v1::DescribeInstancesRequest{}, std::chrono::seconds(10));
        std::lock_guard lock(mu);
        std::lock_guard seen(seen_mu);
        if (!r) {
          for (const auto& id : ids) {
            auto it = last_seen.find(id);
            Live l;
            if (it != last_seen.end()) l.inst = it->second;
            l.inst.mutable_state()->set_name(it != last_seen.end() ? it->second.state().name() : "pending");
            std::string since;
            {
              std::lock_guard leases_lock(lease_mu);
              if (auto lt = leases.find(host); lt != leases.end() && lt->second.lost) since = lt->second.lost_since;
            }
            l.stale = "host " + host + " did not answer (" + r.error().code + ")" +
                      (since.empty() ? "" : "; lost its lease at " + since) + ": the state is as last seen";
            out[id] = l;
          }
          return;
        }
        for (const auto& i : r->instances()) {
          last_seen[i.instance_id()] = i;
          out[i.instance_id()] = Live{i, ""};
        }
      });
    }
    threads.clear();
    return out;
  }

  // ---- the actions --------------------------------------------------------------------
  ApiResult<std::string> describe_regions(Call& c) {
    ec2api::Region r;
    r.region_name = opt.name;
    r.endpoint = opt.endpoint_name;
    return ec2api::describe_regions_response(c.request_id, {r});
  }

  ApiResult<std::string> describe_availability_zones(Call& c) {
    AZOTE_TRY(hs, hosts());
    std::set<std::string> zones;
    for (const auto& h : hs) zones.insert(h.zone);
    std::vector<ec2api::AvailabilityZone> out;
    for (const auto& z : zones) {
      ec2api::AvailabilityZone a;
      a.zone_name = z;
      a.zone_id = z;
      a.region_name = opt.name;
      out.push_back(a);
    }
    return ec2api::describe_availability_zones_response(c.request_id, out);
  }

  // A host to ask what every host knows alike (instance types, the built-in images): one
  // that holds its lease, if any does.
  ApiResult<std::string> any_host(std::string* host_id) {
    AZOTE_TRY(hs, hosts());
    if (hs.empty()) return api_error("Unavailable", "the region has no registered host");
    *host_id = hs.front().id;
    for (const auto& h : hs)
      if (usable(h.id)) {
        *host_id = h.id;
        break;
      }
    return std::string();
  }

  ApiResult<std::string> describe_instance_types(Call& c) {
    std::string host;
    AZOTE_TRYV(any_host(&host));
    v1::DescribeInstanceTypesRequest req;
    for (auto t : c.params->strings("InstanceType")) req.add_instance_types(std::string(t));
    AZOTE_TRY(resp, host_call(host, &v1::Ec2::Stub::DescribeInstanceTypes, req));
    std::vector<ec2api::InstanceTypeInfo> out;
    for (const auto& t : resp.instance_types()) {
      ec2api::InstanceTypeInfo i;
      i.instance_type = t.instance_type();
      i.default_vcpus = static_cast<int>(t.vcpus());
      i.memory_mib = static_cast<int64_t>(t.memory_mib());
      out.push_back(i);
    }
    return ec2api::describe_instance_types_response(c.request_id, out);
  }

  ApiResult<std::string> describe_images(Call& c) {
    std::string host;
    AZOTE_TRYV(any_host(&host));
    v1::DescribeImagesRequest req;
    for (auto t : c.params->strings("ImageId")) req.add_image_ids(std::string(t));
    AZOTE_TRY(resp, host_call(host, &v1::Ec2::Stub::DescribeImages, req));
    std::vector<ec2api::Image> out;
    for (const auto& im : resp.images()) {
      ec2api::Image i;
      i.image_id = im.image_id();
      i.name = im.name();
      i.description = im.description();
      i.state = im.state().empty() ? "available" : im.state();
      i.owner_id = opt.account;
      i.creation_date = parse_time(im.creation_date());
      i.tpm_support = im.tpm_support();
      out.push_back(i);
    }
    return ec2api::describe_images_response(c.request_id, out);
  }

  // Spread: the host with the most vCPUs left (then memory), among those with room.
  ApiResult<std::vector<std::string>> placement_order(uint32_t vcpus, uint64_t mib) {
    AZOTE_TRY(hs, hosts());
    // A host registered since the last probe round is probed now rather than skipped.
    for (const auto& h : hs) {
      bool probed = false;
      {
        std::lock_guard lock(lease_mu);
        probed = leases[h.id].probed;
      }
      if (!probed) probe(h);
    }
    struct Room {
      std::string id;
      int64_t cpu, mem;
    };
    std::vector<Room> rooms;
    for (const auto& h : hs) {
      if (!usable(h.id)) continue;
      Used u;
      {
        std::shared_lock lock(cache_mu);
        if (auto it = used_by_host.find(h.id); it != used_by_host.end()) u = it->second;
      }
      const int64_t cpu = h.vcpus - u.vcpus, mem = static_cast<int64_t>(h.memory_mib) - u.mib;
      if (cpu >= vcpus && mem >= static_cast<int64_t>(mib)) rooms.push_back({h.id, cpu, mem});
    }
    std::stable_sort(rooms.begin(), rooms.end(), [](const Room& a, const Room& b) {
      return a.cpu != b.cpu ? a.cpu > b.cpu : a.mem > b.mem;
    });
    std::vector<std::string> out;
    for (const auto& r : rooms) out.push_back(r.id);
    return out;
  }

  ApiResult<std::string> run_instances(Call& c) {
    const auto& p = *c.params;
    AZOTE_TRY(image, p.required("ImageId"));
    const std::string type = std::string(p.get("InstanceType").value_or("t3.micro"));
    AZOTE_TRY(min_count, p.root().get_int("MinCount"));
    AZOTE_TRY(max_count, p.root().get_int("MaxCount"));
    const int64_t lo = min_count.value_or(1), hi = max_count.value_or(lo);
    if (lo < 1 || hi < lo || hi > 20)
      return api_error("InvalidParameterValue", "MinCount and MaxCount: 1 <= MinCount <= MaxCount <= 20");
    AZOTE_TRY(specs, ec2api::read_tag_specifications(p.root()));
    std::vector<std::pair<std::string, std::string>> tags;
    for (const auto& s : specs)
      if (s.resource_type == "instance")
        for (const auto& t : s.tags) tags.emplace_back(t.key, t.value.value_or(""));
    const std::string token = std::string(p.get("ClientToken").value_or(""));
    // The same ClientToken: the same reservation, nothing launched again.
    if (!token.empty()) {
      AZOTE_TRY(recs, instance_recs());
      std::vector<InstanceRec> same;
      for (const auto& r : recs)
        if (r.client_token == token && r.owner_key == c.who->access_key_id) same.push_back(r);
      if (!same.empty()) return reservation_answer(c, same, true);
    }
    // The type's size, from a host.
    std::string any;
    AZOTE_TRYV(any_host(&any));
    v1::DescribeInstanceTypesRequest treq;
    treq.add_instance_types(type);
    auto tinfo = host_call(any, &v1::Ec2::Stub::DescribeInstanceTypes, treq);
    if (!tinfo) return Unexpected{tinfo.error()};
    if (tinfo->instance_types_size() != 1)
      return api_error("InvalidParameterValue", "Invalid value '" + type + "' for InstanceType.");
    const uint32_t vcpus = tinfo->instance_types(0).vcpus();
    const uint64_t mib = tinfo->instance_types(0).memory_mib();
    // The primary network interface: a subnet given (its zone decides the hosts) or the
    // default subnet of the host's zone; groups given (same VPC) or the VPC's "default".
    std::optional<SubnetRec> asked_subnet;
    if (auto id = p.get("SubnetId")) {
      AZOTE_TRY(sn, subnet_named(*id));
      asked_subnet = sn;
    }
    std::vector<GroupRec> asked_groups;
    for (auto id : p.strings("SecurityGroupId")) {
      AZOTE_TRY(g, group_named(id));
      if (std::none_of(asked_groups.begin(), asked_groups.end(), [&](const GroupRec& x) { return x.id == g.id; }))
        asked_groups.push_back(g);
    }
    if (asked_groups.size() > 5)
      return api_error("SecurityGroupsPerInterfaceLimitExceeded", "an interface has at most 5 security groups");
    std::optional<uint32_t> asked_ip;
    if (auto ip = p.get("PrivateIpAddress")) {
      asked_ip = vpc::parse_ipv4(*ip);
      if (!asked_ip) return api_error("InvalidParameterValue", "Invalid value '" + std::string(*ip) + "' for PrivateIpAddress");
      if (hi != 1) return api_error("InvalidParameterCombination", "PrivateIpAddress launches one instance (MaxCount 1)");
    }

    const std::string reservation = "r-" + hex(17);
    std::vector<InstanceRec> launched;
    std::optional<Ec2Error> failed;  // a refusal that ends the launch (after MinCount: what ran is kept)
    std::string last_refusal = "no registered host has room for a " + type;
    for (int64_t n = 0; n < hi; ++n) {
      std::lock_guard lock(place_mu);
      AZOTE_TRY(order, placement_order(vcpus, mib));
      bool placed = false;
      for (const auto& host : order) {
        if (failed) break;
        AZOTE_TRY(hrec0, conn(host));
        std::optional<SubnetRec> subnet = asked_subnet;
        if (subnet && subnet->zone != hrec0->rec.zone) continue;  // not this zone's host
        for (int pass = 0; !subnet && pass < 2; ++pass) {
          // A zone whose first host just registered gets its default subnet now.
          if (pass == 1) (void)ensure_default_network();
          auto d = default_vpc();
          for (const auto& sn : all_of(subnet_by_id))
            if (d && sn.is_default && sn.vpc == d->id && sn.zone == hrec0->rec.zone) subnet = sn;
        }
        if (!subnet) {
          last_refusal = host + ": no default subnet in " + hrec0->rec.zone + " (the region makes one per zone)";
          continue;
        }
        std::vector<std::string> groups;
        for (const auto& g : asked_groups) {
          if (g.vpc != subnet->vpc) {
            failed = Ec2Error{"InvalidParameter", "Security group " + g.id + " and subnet " + subnet->id + " belong to different networks."};
            break;
          }
          groups.push_back(g.id);
        }
        if (failed) break;
        if (groups.empty())
          for (const auto& g : all_of(group_by_id))
            if (g.vpc == subnet->vpc && g.name == "default") groups.push_back(g.id);
        if (groups.empty()) {
          failed = Ec2Error{"InvalidGroup.NotFound", "The VPC " + subnet->vpc + " has no default security group"};
          break;
        }
        const auto cidr = vpc_model::parse_cidr(subnet->cidr);
        std::set<uint32_t> used = used_addresses(subnet->id);
        std::optional<uint32_t> ip;
        if (asked_ip) {
          if (!cidr || !cidr->contains(*asked_ip) || vpc_model::reserved_address(*cidr, *asked_ip)) {
            failed = Ec2Error{"InvalidParameterValue", "Address " + vpc::format_ipv4(*asked_ip) + " is not a usable address of subnet " + subnet->id + " (" + subnet->cidr + ")"};
            break;
          }
          if (used.count(*asked_ip) != 0) {
            failed = Ec2Error{"InvalidIPAddress.InUse", "Address " + vpc::format_ipv4(*asked_ip) + " is in use."};
            break;
          }
          ip = asked_ip;
        } else if (cidr) {
          ip = vpc_model::next_free_address(*cidr, used);
        }
        if (!ip) {
          failed = Ec2Error{"InsufficientFreeAddressesInSubnet", "There are not enough free addresses in subnet '" + subnet->id + "' to satisfy the requested number of instances."};
          break;
        }
        if (auto pushed_ok = push_network(host); !pushed_ok) {
          last_refusal = host + ": " + pushed_ok.error().message;
          continue;
        }
        v1::RunInstancesRequest req;
        req.set_subnet_id(subnet->id);
        for (const auto& g : groups) req.add_security_group_ids(g);
        req.set_image_id(std::string(image));
        req.set_instance_type(type);
        req.set_count(1);
        for (const auto& [k, v] : tags) {
          auto* t = req.add_tags();
          t->set_key(k);
          t->set_value(v);
        }
        if (auto ud = p.get("UserData")) req.set_user_data(std::string(*ud));
        // An address the host still holds (an instance terminated here, not yet gone):
        // the next one, up to a few times.
        ApiResult<v1::RunInstancesResponse> r = api_error("InternalError", "not called");
        for (int tries = 0; tries < 8; ++tries) {
          req.set_private_ip_address(vpc::format_ipv4(*ip));
          r = host_call(host, &v1::Ec2::Stub::RunInstances, req);
          if (r || asked_ip || r.error().code != "InvalidIPAddress.InUse" || !cidr) break;
          used.insert(*ip);
          ip = vpc_model::next_free_address(*cidr, used);
          if (!ip) break;
        }
        if (!r) {
          if (r.error().code == "InsufficientInstanceCapacity" || r.error().code == "Unavailable") {
            last_refusal = host + ": " + r.error().message;
            continue;  // the next host
          }
          failed = r.error();
          break;
        }
        for (const auto& i : r->instances()) {
          InstanceRec rec;
          rec.id = i.instance_id();
          rec.host = host;
          AZOTE_TRY(hrec, conn(host));
          rec.zone = hrec->rec.zone;
          rec.reservation_id = reservation;
          rec.owner_key = c.who->access_key_id;
          rec.image_id = i.image_id();
          rec.type = i.instance_type();
          rec.launch_time = i.launch_time();
          rec.client_token = token;
          rec.vcpus = i.vcpus();
          rec.memory_mib = i.memory_mib();
          rec.tags = tags;
          rec.subnet = subnet->id;
          rec.ip = i.private_ip_address();
          rec.groups = groups;
          if (auto w = put(key("instances", rec.id), instance_json(rec).dump()); !w)
            LOG_WARN("region: %s on %s: its record: %s", rec.id.c_str(), host.c_str(), w.error().message.c_str());
          // Its root volume is the region's to describe, tag and delete too.
          for (const auto& b : i.block_device_mappings()) {
            if (b.volume_id().empty()) continue;
            const VolumeRec vr{b.volume_id(), host, rec.zone, rec.owner_key, "/dev/xvda", {}};
            if (auto w = put(key("volumes", vr.id), volume_json(vr).dump()); !w)
              LOG_WARN("region: %s on %s: its record: %s", vr.id.c_str(), host.c_str(), w.error().message.c_str());
          }
          launched.push_back(rec);
        }
        placed = true;
        break;
      }
      if (!placed || failed) break;
    }
    if (static_cast<int64_t>(launched.size()) < lo) {
      // Fewer than MinCount: what was started is ended (and its record with it), as EC2
      // launches all or nothing.
      for (const auto& r : launched) {
        v1::InstanceIdsRequest req;
        req.add_instance_ids(r.id);
        (void)host_call(r.host, &v1::Ec2::Stub::TerminateInstances, req);
        (void)update(key("instances", r.id), "IncorrectState", [](Json& j) -> ApiResult<void> {
          j["terminated"] = true;
          j["terminated_at"] = static_cast<int64_t>(::time(nullptr));
          return {};
        });
      }
      if (failed) return Unexpected{*failed};
      return api_error("InsufficientInstanceCapacity",
                       "We currently do not have sufficient " + type + " capacity (" + last_refusal + ")");
    }
    wake_pusher();  // the other hosts' fabric learns where the new addresses live
    return reservation_answer(c, launched, true);
  }

  ApiResult<std::string> reservation_answer(Call& c, const std::vector<InstanceRec>& recs, bool run) {
    const auto lv = live(recs);
    ec2api::Reservation res;
    res.reservation_id = recs.front().reservation_id;
    res.owner_id = opt.account;
    for (size_t k = 0; k < recs.size(); ++k) {
      const auto it = lv.find(recs[k].id);
      res.instances.push_back(to_ec2(recs[k], it == lv.end() ? nullptr : &it->second));
      res.instances.back().ami_launch_index = static_cast<int>(k);
    }
    (void)run;
    return ec2api::run_instances_response(c.request_id, res);
  }

  ApiResult<std::string> describe_instances(Call& c) {
    const auto& p = *c.params;
    std::set<std::string> ids;
    for (auto id : p.strings("InstanceId")) {
      AZOTE_TRYV(well_formed(id));
      ids.insert(std::string(id));
    }
    AZOTE_TRY(filters, ec2api::read_filters(p.root()));
    for (const auto& f : filters)
      if (!filter_known(f.name)) return api_error("InvalidParameterValue", "The filter '" + f.name + "' is invalid");
    AZOTE_TRY(max, p.root().get_int("MaxResults"));
    if (max && !ids.empty()) return api_error("InvalidParameterCombination", "The parameter instancesSet cannot be used with the parameter maxResults");
    if (max && (*max < 5 || *max > 1000)) return api_error("InvalidParameterValue", "MaxResults must be 5 to 1000");
    const std::string next = std::string(p.get("NextToken").value_or(""));

    AZOTE_TRY(all, instance_recs());
    std::vector<InstanceRec> recs;
    for (const auto& r : all)
      if (ids.empty() || ids.count(r.id) != 0) recs.push_back(r);
    for (const auto& id : ids) {
      if (std::none_of(recs.begin(), recs.end(), [&](const InstanceRec& r) { return r.id == id; }))
        return api_error("InvalidInstanceID.NotFound", "The instance ID '" + id + "' does not exist");
    }
    std::sort(recs.begin(), recs.end(), [](const InstanceRec& a, const InstanceRec& b) {
      return a.launch_time != b.launch_time ? a.launch_time < b.launch_time : a.id < b.id;
    });
    // Pages of instances after the token's (the last instance id of the previous page).
    if (!next.empty()) {
      auto it = std::find_if(recs.begin(), recs.end(), [&](const InstanceRec& r) { return r.id == next; });
      if (it == recs.end()) return api_error("InvalidParameterValue", "Invalid NextToken");
      recs.erase(recs.begin(), it + 1);
    }
    // Without filters a page is known before asking the hosts: only its instances' hosts
    // are asked (one more record tells whether there is a next page).
    if (filters.empty() && max && recs.size() > static_cast<size_t>(*max) + 1) recs.resize(static_cast<size_t>(*max) + 1);
    const auto lv = live(recs);
    std::vector<ec2api::Reservation> out;
    std::map<std::string, size_t> at;
    size_t count = 0;
    std::string token, last_id;
    for (const auto& r : recs) {
      const auto it = lv.find(r.id);
      ec2api::Instance i = to_ec2(r, it == lv.end() ? nullptr : &it->second);
      bool ok = true;
      for (const auto& f : filters) ok = ok && passes(f, i, r.reservation_id);
      if (!ok) continue;
      if (max && count == static_cast<size_t>(*max)) {
        token = last_id;  // the page's last instance in listing order (reservations group them otherwise)
        break;
      }
      auto [pos, fresh] = at.try_emplace(r.reservation_id, out.size());
      if (fresh) {
        ec2api::Reservation res;
        res.reservation_id = r.reservation_id;
        res.owner_id = opt.account;
        out.push_back(res);
      }
      out[pos->second].instances.push_back(std::move(i));
      last_id = r.id;
      ++count;
    }
    return ec2api::describe_instances_response(c.request_id, out, token);
  }

  ApiResult<std::vector<InstanceRec>> named_instances(Call& c) {
    std::vector<InstanceRec> out;
    for (auto id : c.params->strings("InstanceId")) {
      AZOTE_TRY(r, instance_rec(id));
      out.push_back(r);
    }
    if (out.empty()) return api_error("MissingParameter", "The request must contain the parameter InstanceId");
    return out;
  }

  // Start, stop, reboot, terminate: each instance's host does it.
  ApiResult<std::vector<ec2api::InstanceStateChange>> state_change(
      Call& c, grpc::Status (v1::Ec2::Stub::*method)(grpc::ClientContext*, const v1::InstanceIdsRequest&,
                                                     v1::InstanceStateChangesResponse*)) {
    AZOTE_TRY(recs, named_instances(c));
    AZOTE_TRY(force, c.params->get_bool("Force"));
    std::vector<ec2api::InstanceStateChange> out;
    for (const auto& r : recs) {
      v1::InstanceIdsRequest req;
      req.add_instance_ids(r.id);
      req.set_force(force.value_or(false));
      AZOTE_TRY(resp, host_call(r.host, method, req));
      for (const auto& ch : resp.instances())
        out.push_back({ch.instance_id(), state_of(ch.current_state().name()), state_of(ch.previous_state().name())});
    }
    return out;
  }

  ApiResult<std::string> start_instances(Call& c) {
    AZOTE_TRY(ch, state_change(c, &v1::Ec2::Stub::StartInstances));
    return ec2api::start_instances_response(c.request_id, ch);
  }
  ApiResult<std::string> stop_instances(Call& c) {
    AZOTE_TRY(ch, state_change(c, &v1::Ec2::Stub::StopInstances));
    return ec2api::stop_instances_response(c.request_id, ch);
  }
  ApiResult<std::string> terminate_instances(Call& c) {
    AZOTE_TRY(ch, state_change(c, &v1::Ec2::Stub::TerminateInstances));
    for (const auto& x : ch) {
      auto w = update(key("instances", x.instance_id), "IncorrectState", [](Json& j) -> ApiResult<void> {
        if (!j.value("terminated", false)) {
          j["terminated"] = true;
          j["terminated_at"] = static_cast<int64_t>(::time(nullptr));
        }
        return {};
      });
      if (!w) LOG_WARN("region: %s: marking it terminated: %s", x.instance_id.c_str(), w.error().message.c_str());
    }
    wake_pusher();  // their addresses leave the other hosts' fabric
    return ec2api::terminate_instances_response(c.request_id, ch);
  }
  ApiResult<std::string> reboot_instances(Call& c) {
    AZOTE_TRY(ch, state_change(c, &v1::Ec2::Stub::RebootInstances));
    return ec2api::return_response("RebootInstances", c.request_id);
  }

  ApiResult<std::string> get_console_output(Call& c) {
    AZOTE_TRY(id, c.params->required("InstanceId"));
    AZOTE_TRY(r, instance_rec(id));
    v1::GetConsoleOutputRequest req;
    req.set_instance_id(r.id);
    AZOTE_TRY(resp, host_call(r.host, &v1::Ec2::Stub::GetConsoleOutput, req));
    return ec2api::get_console_output_response(c.request_id, r.id, resp.output(),
                                               parse_time(resp.timestamp()));
  }

  // What a resource id names, for the tag actions: its records' kind in etcd, its
  // resource type as DescribeTags prints it, and EC2's code when it does not exist.
  struct TagKind {
    std::string_view prefix, etcd, type, not_found;
  };
  static const TagKind* tag_kind(std::string_view id) {
    static const TagKind kinds[] = {{"i", "instances", "instance", "InvalidInstanceID.NotFound"},
                                    {"vol", "volumes", "volume", "InvalidVolume.NotFound"},
                                    {"vpc", "vpcs", "vpc", "InvalidVpcID.NotFound"},
                                    {"subnet", "subnets", "subnet", "InvalidSubnetID.NotFound"},
                                    {"sg", "security-groups", "security-group", "InvalidGroup.NotFound"}};
    for (const auto& k : kinds)
      if (id.size() > k.prefix.size() && id.substr(0, k.prefix.size()) == k.prefix && id[k.prefix.size()] == '-') return &k;
    return nullptr;
  }

  // Tags on instances, volumes, VPCs, subnets and groups, kept in their records by the
  // region (hosts know their launch tags only). Each record is read, changed and written back only if nobody
  // changed it meanwhile (a compare-and-swap on its etcd revision, retried).
  ApiResult<std::string> change_tags(Call& c, bool create) {
    std::vector<std::string> ids;
    for (auto id : c.params->strings("ResourceId")) ids.emplace_back(id);
    if (ids.empty()) return api_error("MissingParameter", "The request must contain the parameter ResourceId");
    AZOTE_TRY(tags, ec2api::read_tags(c.params->root()));
    for (const auto& id : ids) {
      const TagKind* kind = tag_kind(id);
      if (kind == nullptr)
        return api_error("InvalidID", "The ID '" + id + "' is not valid (instances, volumes, VPCs, subnets and security groups)");
      if (kind->prefix == "i") AZOTE_TRYV(well_formed(id));
      const std::string k = key(kind->etcd, id);
      AZOTE_TRY(found, update(k, "ConcurrentTagAccess", [&](Json& j) -> ApiResult<void> {
        auto v = tags_from(j.value("tags", Json::array()));
        if (!create && tags.empty()) v.clear();  // DeleteTags without Tag: every tag, as EC2
        for (const auto& t : tags) {
          if (create) {
            auto it = std::find_if(v.begin(), v.end(), [&](const auto& e) { return e.first == t.key; });
            if (it != v.end()) it->second = t.value.value_or("");
            else v.emplace_back(t.key, t.value.value_or(""));
          } else {
            std::erase_if(v, [&](const auto& e) { return e.first == t.key && (!t.value || *t.value == e.second); });
          }
        }
        if (v.size() > 50) return api_error("TagLimitExceeded", id + " may have at most 50 tags");
        j["tags"] = tags_json(v);
        return {};
      }));
      if (!found) return api_error(kind->not_found, "The ID '" + id + "' does not exist");
    }
    return ec2api::return_response(create ? "CreateTags" : "DeleteTags", c.request_id);
  }
  ApiResult<std::string> create_tags(Call& c) { return change_tags(c, true); }
  ApiResult<std::string> delete_tags(Call& c) { return change_tags(c, false); }

  ApiResult<std::string> describe_tags(Call& c) {
    AZOTE_TRY(filters, ec2api::read_filters(c.params->root()));
    for (const auto& f : filters)
      if (f.name != "resource-id" && f.name != "resource-type" && f.name != "key" && f.name != "value")
        return api_error("InvalidParameterValue", "The filter '" + f.name + "' is invalid");
    AZOTE_TRY(recs, instance_recs());
    AZOTE_TRY(vols, volume_recs());
    std::vector<ec2api::TagDescription> out;
    auto add = [&](const std::string& id, const char* type, const std::vector<std::pair<std::string, std::string>>& tags) {
      for (const auto& [k, v] : tags) {
        bool ok = true;
        for (const auto& f : filters) {
          if (f.name == "resource-id") ok = ok && any_value(f.values, id);
          else if (f.name == "resource-type") ok = ok && any_value(f.values, type);
          else if (f.name == "key") ok = ok && any_value(f.values, k);
          else ok = ok && any_value(f.values, v);
        }
        if (ok) out.push_back({id, type, k, v});
      }
    };
    for (const auto& r : recs) add(r.id, "instance", r.tags);
    for (const auto& v : vols) add(v.id, "volume", v.tags);
    for (const auto& v : all_of(vpc_by_id)) add(v.id, "vpc", v.tags);
    for (const auto& sn : all_of(subnet_by_id)) add(sn.id, "subnet", sn.tags);
    for (const auto& g : all_of(group_by_id)) add(g.id, "security-group", g.tags);
    return ec2api::describe_tags_response(c.request_id, out);
  }

  // ---- volumes ------------------------------------------------------------------------
  // A volume lives on one host (remote volumes are issue 16): it is made on a host of the
  // zone asked for, and attaches only to instances of that host.
  ApiResult<std::vector<VolumeRec>> volume_recs() {
    std::shared_lock lock(cache_mu);
    std::vector<VolumeRec> out;
    for (const auto& [id, v] : vol_by_id) out.push_back(v);
    return out;
  }
  ApiResult<VolumeRec> volume_rec(std::string_view id) {
    if (id.rfind("vol-", 0) != 0 || id.size() > 64)
      return api_error("InvalidParameterValue", "Invalid id: \"" + std::string(id.substr(0, 64)) + "\" (expecting \"vol-...\")");
    std::optional<VolumeRec> v;
    {
      std::shared_lock lock(cache_mu);
      if (auto it = vol_by_id.find(std::string(id)); it != vol_by_id.end()) v = it->second;
    }
    if (!v) return api_error("InvalidVolume.NotFound", "The volume '" + std::string(id) + "' does not exist.");
    return *v;
  }

  ec2api::Volume volume_to_ec2(const VolumeRec& r, const v1::Volume* live) const {
    ec2api::Volume v;
    v.volume_id = r.id;
    v.availability_zone = r.zone;
    for (const auto& [k, val] : r.tags) v.tags.push_back({k, val});
    if (live == nullptr) {
      v.state = "deleted";
      return v;
    }
    v.size = live->size_gib();
    v.state = live->state().empty() ? "available" : live->state();
    v.create_time = parse_time(live->create_time());
    v.volume_type = live->volume_type().empty() ? "gp3" : live->volume_type();
    if (live->iops() != 0) v.iops = live->iops();
    if (live->throughput_mbps() != 0) v.throughput = live->throughput_mbps();
    v.encrypted = live->encrypted();
    for (const auto& a : live->attachments()) {
      ec2api::VolumeAttachment at;
      at.volume_id = a.volume_id();
      at.instance_id = a.instance_id();
      at.device = r.device.empty() ? a.device() : r.device;
      at.state = a.state().empty() ? "attached" : a.state();
      at.attach_time = v.create_time;
      at.delete_on_termination = a.delete_on_termination();
      v.attachments.push_back(at);
    }
    return v;
  }

  // Each host holding some of these volumes, asked once (all its volumes).
  std::map<std::string, v1::Volume> live_volumes(const std::vector<VolumeRec>& recs, std::set<std::string>* silent) {
    std::set<std::string> hosts_of;
    for (const auto& r : recs) hosts_of.insert(r.host);
    std::map<std::string, v1::Volume> out;
    std::mutex mu;
    std::vector<std::jthread> threads;
    for (const auto& host : hosts_of) {
      threads.emplace_back([&, host] {
        auto r = host_call(host, &v1::Ec2::Stub::DescribeVolumes, v1::DescribeVolumesRequest{}, std::chrono::seconds(10));
        std::lock_guard lock(mu);
        if (!r) {
          silent->insert(host);
          return;
        }
        for (const auto& v : r->volumes()) out[v.volume_id()] = v;
      });
    }
    threads.clear();
    return out;
  }

  ApiResult<std::string> create_volume(Call& c) {
    const auto& p = *c.params;
    AZOTE_TRY(zone, p.required("AvailabilityZone"));
    AZOTE_TRY(size, p.root().get_int("Size", 1, 16384));
    AZOTE_TRY(iops, p.root().get_int("Iops", 100, 256000));
    AZOTE_TRY(throughput, p.root().get_int("Throughput", 125, 1000));
    AZOTE_TRY(encrypted, p.get_bool("Encrypted"));
    if (!size) return api_error("MissingParameter", "The request must contain the parameter size or snapshotId");
    AZOTE_TRY(specs, ec2api::read_tag_specifications(p.root()));
    std::vector<std::pair<std::string, std::string>> tags;
    for (const auto& sp : specs)
      if (sp.resource_type == "volume")
        for (const auto& t : sp.tags) tags.emplace_back(t.key, t.value.value_or(""));
    // A host of that zone, the one with the most room first.
    AZOTE_TRY(hs, hosts());
    AZOTE_TRY(order, placement_order(0, 0));
    std::string host;
    for (const auto& id : order)
      for (const auto& h : hs)
        if (host.empty() && h.id == id && h.zone == zone) host = id;
    if (host.empty())
      return api_error("InvalidParameterValue", "Invalid availability zone: [" + std::string(zone) + "]");
    v1::CreateVolumeRequest req;
    req.set_size_gib(static_cast<uint32_t>(*size));
    if (auto t = p.get("VolumeType")) req.set_volume_type(std::string(*t));
    if (iops) req.set_iops(static_cast<uint32_t>(*iops));
    if (throughput) req.set_throughput_mbps(static_cast<uint32_t>(*throughput));
    if (encrypted) req.set_encrypted(*encrypted);
    if (auto tok = p.get("ClientToken")) req.set_client_token(std::string(c.who->access_key_id) + ":" + std::string(*tok));
    AZOTE_TRY(vol, host_call(host, &v1::Ec2::Stub::CreateVolume, req));
    const VolumeRec rec{vol.volume_id(), host, std::string(zone), c.who->access_key_id, "", tags};
    if (auto w = put(key("volumes", rec.id), volume_json(rec).dump()); !w) {
      // Not recorded, so not the region's: undone on the host rather than left unseen.
      v1::DeleteVolumeRequest del;
      del.set_volume_id(rec.id);
      (void)host_call(host, &v1::Ec2::Stub::DeleteVolume, del);
      return Unexpected{w.error()};
    }
    return ec2api::create_volume_response(c.request_id, volume_to_ec2(rec, &vol));
  }

  ApiResult<std::string> describe_volumes(Call& c) {
    const auto& p = *c.params;
    std::set<std::string> ids;
    for (auto id : p.strings("VolumeId")) ids.insert(std::string(id));
    AZOTE_TRY(filters, ec2api::read_filters(p.root()));
    static const std::set<std::string> known = {"volume-id", "status", "availability-zone", "attachment.instance-id",
                                                "attachment.status", "volume-type", "size", "tag-key"};
    for (const auto& f : filters)
      if (known.count(f.name) == 0 && f.name.rfind("tag:", 0) != 0)
        return api_error("InvalidParameterValue", "The filter '" + f.name + "' is invalid");
    AZOTE_TRY(max, p.root().get_int("MaxResults"));
    if (max && (*max < 5 || *max > 500)) return api_error("InvalidParameterValue", "MaxResults must be 5 to 500");
    const std::string next = std::string(p.get("NextToken").value_or(""));
    AZOTE_TRY(all, volume_recs());
    std::vector<VolumeRec> recs;
    for (const auto& r : all)
      if (ids.empty() || ids.count(r.id) != 0) recs.push_back(r);
    for (const auto& id : ids)
      if (std::none_of(recs.begin(), recs.end(), [&](const VolumeRec& r) { return r.id == id; }))
        return api_error("InvalidVolume.NotFound", "The volume '" + id + "' does not exist.");
    if (!next.empty()) {
      auto it = std::find_if(recs.begin(), recs.end(), [&](const VolumeRec& r) { return r.id == next; });
      if (it == recs.end()) return api_error("InvalidParameterValue", "Invalid NextToken");
      recs.erase(recs.begin(), it + 1);
    }
    std::set<std::string> silent;
    const auto lv = live_volumes(recs, &silent);
    std::vector<ec2api::Volume> out;
    std::string token;
    for (const auto& r : recs) {
      const auto it = lv.find(r.id);
      if (it == lv.end() && silent.count(r.host) == 0 && ids.empty()) continue;  // gone from its host
      ec2api::Volume v = volume_to_ec2(r, it == lv.end() ? nullptr : &it->second);
      if (it == lv.end() && silent.count(r.host) != 0) v.state = "error";  // its host did not answer
      bool ok = true;
      for (const auto& f : filters) {
        const std::string& n = f.name;
        if (n == "volume-id") ok = ok && any_value(f.values, v.volume_id);
        else if (n == "status") ok = ok && any_value(f.values, v.state);
        else if (n == "availability-zone") ok = ok && any_value(f.values, v.availability_zone);
        else if (n == "volume-type") ok = ok && any_value(f.values, v.volume_type);
        else if (n == "size") ok = ok && any_value(f.values, std::to_string(v.size));
        else if (n == "attachment.instance-id" || n == "attachment.status") {
          bool any = false;
          for (const auto& a : v.attachments)
            any = any || any_value(f.values, n == "attachment.instance-id" ? a.instance_id : a.state);
          ok = ok && any;
        } else if (n == "tag-key") {
          ok = ok && std::any_of(v.tags.begin(), v.tags.end(), [&](const auto& t) { return any_value(f.values, t.key); });
        } else {
          const std::string k = n.substr(4);
          ok = ok && std::any_of(v.tags.begin(), v.tags.end(),
                                 [&](const auto& t) { return t.key == k && any_value(f.values, t.value); });
        }
      }
      if (!ok) continue;
      if (max && out.size() == static_cast<size_t>(*max)) {
        token = out.back().volume_id;
        break;
      }
      out.push_back(std::move(v));
    }
    return ec2api::describe_volumes_response(c.request_id, out, token);
  }

  ec2api::VolumeAttachment attachment_of(const v1::VolumeAttachment& a) const {
    ec2api::VolumeAttachment at;
    at.volume_id = a.volume_id();
    at.instance_id = a.instance_id();
    at.device = a.device();
    at.state = a.state();
    at.attach_time = ec2api::Timestamp(std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::system_clock::now().time_since_epoch()));
    at.delete_on_termination = a.delete_on_termination();
    return at;
  }

  ApiResult<std::string> attach_volume(Call& c) {
    AZOTE_TRY(vid, c.params->required("VolumeId"));
    AZOTE_TRY(iid, c.params->required("InstanceId"));
    AZOTE_TRY(device, c.params->required("Device"));
    AZOTE_TRY(vol, volume_rec(vid));
    AZOTE_TRY(inst, instance_rec(iid));
    if (vol.host != inst.host)
      return api_error("InvalidVolume.ZoneMismatch",
                       "The volume '" + vol.id + "' is not in the same availability zone" +
                           (vol.zone == inst.zone ? " host" : "") + " as instance '" + inst.id +
                           "' (volumes are local to a host until remote volumes)");
    // EC2's device names (/dev/sdf, /dev/xvdf) are labels; the host picks its own
    // (/dev/vdb...), the region answers with the name it was given.
    if (device.size() < 6 || device.size() > 16 || device.rfind("/dev/", 0) != 0)
      return api_error("InvalidParameterValue", "Value (" + std::string(device.substr(0, 32)) + ") for parameter device is invalid.");
    v1::AttachVolumeRequest req;
    req.set_volume_id(vol.id);
    req.set_instance_id(inst.id);
    AZOTE_TRY(a, host_call(vol.host, &v1::Ec2::Stub::AttachVolume, req));
    vol.device = std::string(device);
    if (auto w = update(key("volumes", vol.id), "IncorrectState", [&](Json& j) -> ApiResult<void> {
          j["device"] = vol.device;
          return {};
        });
        !w)
      LOG_WARN("region: %s: its device name: %s", vol.id.c_str(), w.error().message.c_str());
    ec2api::VolumeAttachment at = attachment_of(a);
    at.device = vol.device;
    return ec2api::attach_volume_response(c.request_id, at);
  }

  ApiResult<std::string> detach_volume(Call& c) {
    AZOTE_TRY(vid, c.params->required("VolumeId"));
    AZOTE_TRY(vol, volume_rec(vid));
    AZOTE_TRY(force, c.params->get_bool("Force"));
    // Named, the instance must be the one it is attached to (checked before detaching).
    if (auto iid = c.params->get("InstanceId")) {
      v1::DescribeVolumesRequest dq;
      dq.add_volume_ids(vol.id);
      AZOTE_TRY(cur, host_call(vol.host, &v1::Ec2::Stub::DescribeVolumes, dq));
      const bool on = cur.volumes_size() == 1 && std::any_of(cur.volumes(0).attachments().begin(), cur.volumes(0).attachments().end(),
                                                             [&](const v1::VolumeAttachment& x) { return x.instance_id() == *iid; });
      if (!on) return api_error("IncorrectState", "volume " + vol.id + " is not attached to " + std::string(*iid));
    }
    v1::DetachVolumeRequest req;
    req.set_volume_id(vol.id);
    req.set_force(force.value_or(false));
    AZOTE_TRY(a, host_call(vol.host, &v1::Ec2::Stub::DetachVolume, req));
    ec2api::VolumeAttachment at = attachment_of(a);
    if (!vol.device.empty()) at.device = vol.device;
    return ec2api::detach_volume_response(c.request_id, at);
  }

  ApiResult<std::string> delete_volume(Call& c) {
    AZOTE_TRY(vid, c.params->required("VolumeId"));
    AZOTE_TRY(vol, volume_rec(vid));
    v1::DeleteVolumeRequest req;
    req.set_volume_id(vol.id);
    auto r = host_call(vol.host, &v1::Ec2::Stub::DeleteVolume, req);
    if (!r && r.error().code != "InvalidVolume.NotFound") return Unexpected{r.error()};
    AZOTE_TRYV(erase(key("volumes", vol.id)));
    return ec2api::return_response("DeleteVolume", c.request_id);
  }

  // Status checks as EC2 reports them: "ok" for an instance its host answers for,
  // "impaired" for one whose host did not answer (its state as last seen). Running
  // instances only, unless IncludeAllInstances.
  ApiResult<std::string> describe_instance_status(Call& c) {
    std::set<std::string> ids;
    for (auto id : c.params->strings("InstanceId")) {
      AZOTE_TRYV(well_formed(id));
      ids.insert(std::string(id));
    }
    AZOTE_TRY(all_flag, c.params->get_bool("IncludeAllInstances"));
    const bool all = all_flag.value_or(false);
    AZOTE_TRY(recs_all, instance_recs());
    std::vector<InstanceRec> recs;
    for (const auto& r : recs_all)
      if (ids.empty() || ids.count(r.id) != 0) recs.push_back(r);
    for (const auto& id : ids)
      if (std::none_of(recs.begin(), recs.end(), [&](const InstanceRec& r) { return r.id == id; }))
        return api_error("InvalidInstanceID.NotFound", "The instance ID '" + id + "' does not exist");
    const auto lv = live(recs);
    std::vector<ec2api::InstanceStatus> out;
    for (const auto& r : recs) {
      const auto it = lv.find(r.id);
      const ec2api::Instance i = to_ec2(r, it == lv.end() ? nullptr : &it->second);
      if (!all && i.state.name != "running") continue;
      ec2api::InstanceStatus st;
      st.instance_id = r.id;
      st.availability_zone = r.zone;
      st.instance_state = i.state;
      const bool stale = it == lv.end() || !it->second.stale.empty();
      if (i.state.name != "running") {
        st.instance_status.status = st.system_status.status = "not-applicable";
        st.instance_status.details.clear();
        st.system_status.details.clear();
      } else if (stale) {
        st.system_status.status = "impaired";
        st.system_status.details[0].status = "failed";
        st.instance_status.status = "insufficient-data";
        st.instance_status.details[0].status = "insufficient-data";
      }
      out.push_back(st);
    }
    return ec2api::describe_instance_status_response(c.request_id, out);
  }

  // The registered hosts, as EC2's DescribeHosts shows Dedicated Hosts: "available" while
  // the host holds its lease, "under-assessment" once lost (or not yet reached), with its
  // vCPUs, those left, and the region's instances on it.
  ApiResult<std::string> describe_hosts(Call& c) {
    std::set<std::string> ids;
    for (auto id : c.params->strings("HostId")) ids.insert(std::string(id));
    AZOTE_TRY(hs, hosts());
    AZOTE_TRY(recs, instance_recs());
    ec2api::Document d("DescribeHosts", c.request_id);
    ec2api::Element set = d.root().child("hostSet");
    for (const auto& h : hs) {
      if (!ids.empty() && ids.count(h.id) == 0) continue;
      HostLease l;
      {
        std::lock_guard lock(lease_mu);
        if (auto it = leases.find(h.id); it != leases.end()) l = it->second;
      }
      ec2api::Element e = set.item();
      e.text("hostId", h.id).text("availabilityZone", h.zone).text("state", l.epoch != 0 ? "available" : "under-assessment");
      e.child("hostProperties").integer("totalVCpus", h.vcpus).integer("sockets", 1).text("instanceFamily", "t3");
      int64_t left = h.vcpus;
      ec2api::Element inst = e.child("instances");
      for (const auto& r : recs) {
        if (r.host != h.id || r.terminated) continue;
        left -= r.vcpus;
        inst.item().text("instanceId", r.id).text("instanceType", r.type).text("ownerId", opt.account);
      }
      e.child("availableCapacity").integer("availableVCpus", std::max<int64_t>(0, left));
      e.text("ownerId", opt.account);
    }
    return d.str();
  }

  // ---- VPCs, subnets, security groups ---------------------------------------------------
  // The region's own records (network.hpp), checked with lib/vpc_model as the hosts check
  // theirs; every change is pushed to the hosts (push_network). Creations and deletions
  // take net_mu (names and CIDR blocks stay unique); rule changes are compare-and-swaps.
  std::mutex net_mu;
  std::set<std::string> defaults_marked;  // net_mu: defaults/ markers known to exist
  static constexpr size_t kMaxVpcs = 5;  // EC2's default quota per region

  std::string new_id(std::string_view prefix) { return std::string(prefix) + "-" + hex(17); }

  // The tags a TagSpecification gives resources of `type`; a malformed one is refused.
  ApiResult<Tags> tags_for(const ec2api::Params& p, std::string_view type) {
    AZOTE_TRY(specs, ec2api::read_tag_specifications(p.root()));
    Tags tags;
    for (const auto& sp : specs)
      if (sp.resource_type == type)
        for (const auto& t : sp.tags) tags.emplace_back(t.key, t.value.value_or(""));
    return tags;
  }

  static bool tag_filter_passes(const ec2api::Filter& f, const Tags& tags) {
    if (f.name == "tag-key")
      return std::any_of(tags.begin(), tags.end(), [&](const auto& t) { return any_value(f.values, t.first); });
    const std::string k = f.name.substr(4);
    return std::any_of(tags.begin(), tags.end(), [&](const auto& t) { return t.first == k && any_value(f.values, t.second); });
  }
  // The filters of a Describe call, each name known (or tag:K / tag-key).
  ApiResult<std::vector<ec2api::Filter>> filters_of(const ec2api::Params& p, const std::set<std::string>& known) {
    AZOTE_TRY(filters, ec2api::read_filters(p.root()));
    for (const auto& f : filters)
      if (known.count(f.name) == 0 && f.name != "tag-key" && f.name.rfind("tag:", 0) != 0)
        return api_error("InvalidParameterValue", "The filter '" + f.name + "' is invalid");
    return filters;
  }
  // MaxResults (5..1000) and NextToken (the id after which to go on) over records in id order.
  template <class Rec>
  ApiResult<std::vector<Rec>> page(const ec2api::Params& p, std::vector<Rec> recs, std::string* token) {
    AZOTE_TRY(max, p.root().get_int("MaxResults"));
    if (max && (*max < 5 || *max > 1000)) return api_error("InvalidParameterValue", "MaxResults must be 5 to 1000");
    const std::string next = std::string(p.get("NextToken").value_or(""));
    if (!next.empty()) {
      auto it = std::find_if(recs.begin(), recs.end(), [&](const Rec& r) { return r.id == next; });
      if (it == recs.end()) return api_error("InvalidParameterValue", "Invalid NextToken");
      recs.erase(recs.begin(), it + 1);
    }
    if (max && recs.size() > static_cast<size_t>(*max)) {
      recs.resize(static_cast<size_t>(*max));
      *token = recs.back().id;
    }
    return recs;
  }

  ApiResult<VpcRec> vpc_named(std::string_view id) {
    if (!valid_resource_id(id, "vpc"))
      return api_error("InvalidVpcID.Malformed", "Invalid id: \"" + std::string(id.substr(0, 64)) + "\"");
    std::shared_lock lock(cache_mu);
    auto it = vpc_by_id.find(std::string(id));
    if (it == vpc_by_id.end()) return api_error("InvalidVpcID.NotFound", "The vpc ID '" + std::string(id) + "' does not exist");
    return it->second;
  }
  ApiResult<SubnetRec> subnet_named(std::string_view id) {
    if (!valid_resource_id(id, "subnet"))
      return api_error("InvalidSubnetID.Malformed", "Invalid id: \"" + std::string(id.substr(0, 64)) + "\"");
    std::shared_lock lock(cache_mu);
    auto it = subnet_by_id.find(std::string(id));
    if (it == subnet_by_id.end())
      return api_error("InvalidSubnetID.NotFound", "The subnet ID '" + std::string(id) + "' does not exist");
    return it->second;
  }
  ApiResult<GroupRec> group_named(std::string_view id) {
    if (!valid_resource_id(id, "sg"))
      return api_error("InvalidGroupId.Malformed", "Invalid id: \"" + std::string(id.substr(0, 64)) + "\"");
    std::shared_lock lock(cache_mu);
    auto it = group_by_id.find(std::string(id));
    if (it == group_by_id.end())
      return api_error("InvalidGroup.NotFound", "The security group '" + std::string(id) + "' does not exist");
    return it->second;
  }
  std::optional<VpcRec> default_vpc() {
    std::shared_lock lock(cache_mu);
    for (const auto& [id, v] : vpc_by_id)
      if (v.is_default) return v;
    return std::nullopt;
  }
  // Addresses in use in a subnet: the ENIs of instances not terminated.
  std::set<uint32_t> used_addresses(const std::string& subnet_id) {
    std::set<uint32_t> used;
    std::shared_lock lock(cache_mu);
    for (const auto& [id, r] : inst_by_id)
      if (!r.terminated && r.subnet == subnet_id)
        if (auto ip = vpc::parse_ipv4(r.ip)) used.insert(*ip);
    return used;
  }

  // The default VPC (172.31.0.0/16 with its "default" group) and a default subnet in
  // every zone a host is registered in: made once each (at start, when a zone appears).
  // What a user deletes stays deleted, as in EC2: a marker key (defaults/vpc,
  // defaults/zone/<zone>) records that it was made.
  ApiResult<void> ensure_default_network() {
    std::lock_guard lock(net_mu);
    auto mark = [&](const std::string& what) -> ApiResult<bool> {  // true: first time
      if (defaults_marked.count(what) != 0) return false;  // known: no etcd round trip every pusher round
      auto r = store.create_if_absent(key("defaults", what), "made");
      if (!r) return api_error("Unavailable", "the region's store: " + r.error().describe());
      defaults_marked.insert(what);
      return r->created;
    };
    auto v = default_vpc();
    if (!v) {
      AZOTE_TRY(first, mark("vpc"));
      if (!first) return {};  // deleted by a user
      VpcRec rec{new_id("vpc"), std::string(kDefaultVpcCidr), "", true, {}};
      AZOTE_TRYV(make_vpc(rec));
      v = rec;
    } else {
      AZOTE_TRYV(mark("vpc"));
    }
    AZOTE_TRY(hs, hosts());
    std::set<std::string> zones;
    for (const auto& h : hs) zones.insert(h.zone);
    std::vector<vpc::Cidr> taken;
    for (const auto& sn : all_of(subnet_by_id)) {
      if (sn.vpc != v->id) continue;
      if (auto c = vpc_model::parse_cidr(sn.cidr)) taken.push_back(*c);
      if (sn.is_default && zones.erase(sn.zone) != 0) AZOTE_TRYV(mark("zone/" + sn.zone));
    }
    for (const auto& z : zones) {
      // The first /20 of the VPC no subnet overlaps.
      std::optional<std::string> cidr;
      for (size_t n = 0; !cidr; ++n) {
        auto c = default_subnet_cidr(n);
        if (!c) break;
        const auto parsed = vpc_model::parse_cidr(*c);
        if (parsed && std::none_of(taken.begin(), taken.end(), [&](const vpc::Cidr& t) { return overlaps(t, *parsed); }))
          cidr = c;
      }
      if (!cidr) continue;  // the default VPC is full
      AZOTE_TRY(first, mark("zone/" + z));
      if (!first) continue;  // this zone's default subnet was deleted by a user
      const SubnetRec sn{new_id("subnet"), v->id, *cidr, z, "", true, {}};
      AZOTE_TRYV(put(key("subnets", sn.id), subnet_json(sn).dump()));
      taken.push_back(*vpc_model::parse_cidr(*cidr));
    }
    return {};
  }
  // A VPC and its "default" group (inbound from the group's members, all outbound).
  ApiResult<void> make_vpc(const VpcRec& v) {
    AZOTE_TRYV(put(key("vpcs", v.id), vpc_json(v).dump()));
    GroupRec g;
    g.id = new_id("sg");
    g.vpc = v.id;
    g.name = "default";
    g.description = "default VPC security group";
    g.owner_key = v.owner_key;
    g.ingress = vpc_model::default_group_ingress(g.id);
    g.egress = vpc_model::default_egress();
    AZOTE_TRYV(put(key("security-groups", g.id), group_json(g).dump()));
    wake_pusher();
    return {};
  }

  ApiResult<std::string> create_vpc(Call& c) {
    AZOTE_TRY(text, c.params->required("CidrBlock"));
    const std::string cidr(text);
    const auto parsed = vpc_model::parse_cidr(cidr);
    if (!parsed)
      return api_error("InvalidParameterValue", "Value (" + cidr + ") for parameter cidrBlock is invalid. This is not a valid CIDR block.");
    if (parsed->prefix < 16 || parsed->prefix > 28) return api_error("InvalidVpc.Range", "The CIDR '" + cidr + "' is invalid (/16 to /28).");
    AZOTE_TRY(ipv6, c.params->get_bool("AmazonProvidedIpv6CidrBlock"));
    if (ipv6 && *ipv6) return api_error("InvalidParameterValue", "IPv6 CIDR blocks are not supported: azote's VPCs are IPv4 only");
    if (auto t = c.params->get("InstanceTenancy"); t && *t != "default")
      return api_error("InvalidParameterValue", "InstanceTenancy '" + std::string(*t) + "': only default tenancy is offered");
    AZOTE_TRY(vtags, tags_for(*c.params, "vpc"));
    VpcRec v{new_id("vpc"), cidr, c.who->access_key_id, false, vtags};
    {
      std::lock_guard lock(net_mu);
      if (all_of(vpc_by_id).size() >= kMaxVpcs)
        return api_error("VpcLimitExceeded", "The maximum number of VPCs (" + std::to_string(kMaxVpcs) + ") has been reached.");
      AZOTE_TRYV(make_vpc(v));
    }
    return ec2api::create_vpc_response(c.request_id, region::to_ec2(v, opt.account));
  }

  ApiResult<std::string> describe_vpcs(Call& c) {
    AZOTE_TRY(filters, filters_of(*c.params, {"vpc-id", "cidr", "cidr-block-association.cidr-block", "is-default", "state", "owner-id"}));
    std::set<std::string> ids;
    for (auto id : c.params->strings("VpcId")) ids.insert(std::string(id));
    for (const auto& id : ids) AZOTE_TRYV(vpc_named(id));
    std::vector<VpcRec> recs;
    for (const auto& v : all_of(vpc_by_id)) {
      if (!ids.empty() && ids.count(v.id) == 0) continue;
      bool ok = true;
      for (const auto& f : filters) {
        if (f.name == "vpc-id") ok = ok && any_value(f.values, v.id);
        else if (f.name == "cidr" || f.name == "cidr-block-association.cidr-block") ok = ok && any_value(f.values, v.cidr);
        else if (f.name == "is-default") ok = ok && any_value(f.values, v.is_default ? "true" : "false");
        else if (f.name == "state") ok = ok && any_value(f.values, "available");
        else if (f.name == "owner-id") ok = ok && any_value(f.values, opt.account);
        else ok = ok && tag_filter_passes(f, v.tags);
      }
      if (ok) recs.push_back(v);
    }
    std::string token;
    AZOTE_TRY(shown, page(*c.params, std::move(recs), &token));
    std::vector<ec2api::Vpc> out;
    for (const auto& v : shown) out.push_back(region::to_ec2(v, opt.account));
    return ec2api::describe_vpcs_response(c.request_id, out, token);
  }

  ApiResult<std::string> delete_vpc(Call& c) {
    AZOTE_TRY(id, c.params->required("VpcId"));
    std::scoped_lock lock(place_mu, net_mu);  // no launch may pick what goes (place_mu first, as launches take them)
    AZOTE_TRY(v, vpc_named(id));
    std::vector<std::string> groups;
    for (const auto& sn : all_of(subnet_by_id))
      if (sn.vpc == v.id)
        return api_error("DependencyViolation", "The vpc '" + v.id + "' has dependencies and cannot be deleted (subnet " + sn.id + ").");
    for (const auto& g : all_of(group_by_id)) {
      if (g.vpc != v.id) continue;
      if (g.name != "default")
        return api_error("DependencyViolation", "The vpc '" + v.id + "' has dependencies and cannot be deleted (security group " + g.id + ").");
      groups.push_back(g.id);
    }
    for (const auto& g : groups) AZOTE_TRYV(erase(key("security-groups", g)));
    AZOTE_TRYV(erase(key("vpcs", v.id)));
    wake_pusher();
    return ec2api::return_response("DeleteVpc", c.request_id);
  }

  ApiResult<std::string> create_subnet(Call& c) {
    const auto& p = *c.params;
    AZOTE_TRY(vpc_id, p.required("VpcId"));
    AZOTE_TRY(text, p.required("CidrBlock"));
    const std::string cidr(text);
    AZOTE_TRY(hs, hosts());
    std::set<std::string> zones;
    for (const auto& h : hs) zones.insert(h.zone);
    std::string zone = std::string(p.get("AvailabilityZone").value_or(""));
    if (zone.empty() && !zones.empty()) zone = *zones.begin();
    if (zones.count(zone) == 0) {
      std::string list;
      for (const auto& z : zones) list += (list.empty() ? "" : ", ") + z;
      return api_error("InvalidParameterValue", "Value (" + zone + ") for parameter availabilityZone is invalid. Subnets can currently only be created in the following availability zones: " + list + ".");
    }
    std::lock_guard lock(net_mu);
    AZOTE_TRY(v, vpc_named(vpc_id));
    const auto parsed = vpc_model::parse_cidr(cidr);
    if (!parsed)
      return api_error("InvalidParameterValue", "Value (" + cidr + ") for parameter cidrBlock is invalid. This is not a valid CIDR block.");
    if (auto why = vpc_model::check_network_layout(v.cidr, cidr)) return api_error("InvalidSubnet.Range", "The CIDR '" + cidr + "' is invalid: " + *why);
    for (const auto& other : all_of(subnet_by_id))
      if (other.vpc == v.id)
        if (auto oc = vpc_model::parse_cidr(other.cidr); oc && overlaps(*oc, *parsed))
          return api_error("InvalidSubnet.Conflict", "The CIDR '" + cidr + "' conflicts with another subnet (" + other.id + ", " + other.cidr + ")");
    AZOTE_TRY(stags, tags_for(p, "subnet"));
    const SubnetRec sn{new_id("subnet"), v.id, cidr, zone, c.who->access_key_id, false, stags};
    AZOTE_TRYV(put(key("subnets", sn.id), subnet_json(sn).dump()));
    wake_pusher();
    return ec2api::create_subnet_response(c.request_id, region::to_ec2(sn, opt.account, opt.name, available_in(sn)));
  }
  int64_t available_in(const SubnetRec& sn) {
    const auto cidr = vpc_model::parse_cidr(sn.cidr);
    if (!cidr) return 0;
    return static_cast<int64_t>(vpc_model::usable_addresses(*cidr)) - static_cast<int64_t>(used_addresses(sn.id).size());
  }

  ApiResult<std::string> describe_subnets(Call& c) {
    AZOTE_TRY(filters, filters_of(*c.params, {"subnet-id", "vpc-id", "availability-zone", "cidr-block", "cidr",
                                              "default-for-az", "state", "owner-id"}));
    std::set<std::string> ids;
    for (auto id : c.params->strings("SubnetId")) ids.insert(std::string(id));
    for (const auto& id : ids) AZOTE_TRYV(subnet_named(id));
    std::vector<SubnetRec> recs;
    for (const auto& sn : all_of(subnet_by_id)) {
      if (!ids.empty() && ids.count(sn.id) == 0) continue;
      bool ok = true;
      for (const auto& f : filters) {
        if (f.name == "subnet-id") ok = ok && any_value(f.values, sn.id);
        else if (f.name == "vpc-id") ok = ok && any_value(f.values, sn.vpc);
        else if (f.name == "availability-zone") ok = ok && any_value(f.values, sn.zone);
        else if (f.name == "cidr-block" || f.name == "cidr") ok = ok && any_value(f.values, sn.cidr);
        else if (f.name == "default-for-az") ok = ok && any_value(f.values, sn.is_default ? "true" : "false");
        else if (f.name == "state") ok = ok && any_value(f.values, "available");
        else if (f.name == "owner-id") ok = ok && any_value(f.values, opt.account);
        else ok = ok && tag_filter_passes(f, sn.tags);
      }
      if (ok) recs.push_back(sn);
    }
    std::string token;
    AZOTE_TRY(shown, page(*c.params, std::move(recs), &token));
    std::vector<ec2api::Subnet> out;
    for (const auto& sn : shown) out.push_back(region::to_ec2(sn, opt.account, opt.name, available_in(sn)));
    return ec2api::describe_subnets_response(c.request_id, out, token);
  }

  ApiResult<std::string> delete_subnet(Call& c) {
    AZOTE_TRY(id, c.params->required("SubnetId"));
    std::scoped_lock lock(place_mu, net_mu);  // a launch under way in it finishes first
    AZOTE_TRY(sn, subnet_named(id));
    AZOTE_TRY(recs, instance_recs());
    for (const auto& r : recs)
      if (!r.terminated && r.subnet == sn.id)
        return api_error("DependencyViolation", "The subnet '" + sn.id + "' has dependencies and cannot be deleted (instance " + r.id + ").");
    AZOTE_TRYV(erase(key("subnets", sn.id)));
    wake_pusher();
    return ec2api::return_response("DeleteSubnet", c.request_id);
  }

  static bool printable(std::string_view s) {
    return !s.empty() && s.size() <= 255 && std::all_of(s.begin(), s.end(), [](char ch) { return ch >= 0x20 && ch < 0x7f; });
  }

  ApiResult<std::string> create_security_group(Call& c) {
    const auto& p = *c.params;
    AZOTE_TRY(name_v, p.required("GroupName"));
    AZOTE_TRY(desc_v, p.required("GroupDescription"));
    const std::string name(name_v), desc(desc_v);
    if (!printable(name)) return api_error("InvalidParameterValue", "group name: 1-255 printable ASCII characters");
    if (!printable(desc)) return api_error("InvalidParameterValue", "group description: 1-255 printable ASCII characters");
    if (name.rfind("sg-", 0) == 0) return api_error("InvalidParameterValue", "Group names may not be in the format sg-*.");
    if (name == "default") return api_error("InvalidGroup.Reserved", "The security group 'default' is reserved");
    std::lock_guard lock(net_mu);
    VpcRec v;
    if (auto id = p.get("VpcId")) {
      AZOTE_TRY(found, vpc_named(*id));
      v = found;
    } else if (auto d = default_vpc()) {
      v = *d;
    } else {
      return api_error("VPCIdNotSpecified", "No default VPC for this user");
    }
    for (const auto& g : all_of(group_by_id))
      if (g.vpc == v.id && g.name == name)
        return api_error("InvalidGroup.Duplicate", "The security group '" + name + "' already exists for VPC '" + v.id + "'");
    GroupRec g;
    g.id = new_id("sg");
    g.vpc = v.id;
    g.name = name;
    g.description = desc;
    g.owner_key = c.who->access_key_id;
    g.egress = vpc_model::default_egress();  // EC2: a new group allows all outbound, no inbound
    AZOTE_TRY(gtags, tags_for(p, "security-group"));
    g.tags = gtags;
    AZOTE_TRYV(put(key("security-groups", g.id), group_json(g).dump()));
    wake_pusher();
    std::vector<ec2api::Tag> tags;
    for (const auto& [k, val] : g.tags) tags.push_back({k, val});
    return ec2api::create_security_group_response(c.request_id, g.id, tags);
  }

  // GroupId, or GroupName in the default VPC (as EC2 for the actions that take one).
  ApiResult<GroupRec> group_of_call(const ec2api::Params& p) {
    if (auto id = p.get("GroupId")) return group_named(*id);
    auto name = p.get("GroupName");
    if (!name) return api_error("MissingParameter", "The request must contain the parameter groupId or groupName");
    auto d = default_vpc();
    for (const auto& g : all_of(group_by_id))
      if (d && g.vpc == d->id && g.name == *name) return g;
    return api_error("InvalidGroup.NotFound", "The security group '" + std::string(*name) + "' does not exist in default VPC");
  }

  ApiResult<std::string> describe_security_groups(Call& c) {
    AZOTE_TRY(filters, filters_of(*c.params, {"group-id", "group-name", "vpc-id", "description", "owner-id"}));
    std::set<std::string> ids, names;
    for (auto id : c.params->strings("GroupId")) ids.insert(std::string(id));
    for (auto n : c.params->strings("GroupName")) names.insert(std::string(n));
    for (const auto& id : ids) AZOTE_TRYV(group_named(id));
    std::vector<GroupRec> recs;
    std::set<std::string> named;
    for (const auto& g : all_of(group_by_id)) {
      if (!ids.empty() && ids.count(g.id) == 0) continue;
      if (!names.empty() && names.count(g.name) == 0) continue;
      named.insert(g.name);
      bool ok = true;
      for (const auto& f : filters) {
        if (f.name == "group-id") ok = ok && any_value(f.values, g.id);
        else if (f.name == "group-name") ok = ok && any_value(f.values, g.name);
        else if (f.name == "vpc-id") ok = ok && any_value(f.values, g.vpc);
        else if (f.name == "description") ok = ok && any_value(f.values, g.description);
        else if (f.name == "owner-id") ok = ok && any_value(f.values, opt.account);
        else ok = ok && tag_filter_passes(f, g.tags);
      }
      if (ok) recs.push_back(g);
    }
    for (const auto& n : names)
      if (named.count(n) == 0) return api_error("InvalidGroup.NotFound", "The security group '" + n + "' does not exist");
    std::string token;
    AZOTE_TRY(shown, page(*c.params, std::move(recs), &token));
    std::vector<ec2api::SecurityGroup> out;
    for (const auto& g : shown) out.push_back(region::to_ec2(g, opt.account));
    return ec2api::describe_security_groups_response(c.request_id, out, token);
  }

  ApiResult<std::string> delete_security_group(Call& c) {
    std::scoped_lock lock(place_mu, net_mu);  // a launch under way with it finishes first
    AZOTE_TRY(g, group_of_call(*c.params));
    if (g.name == "default") return api_error("CannotDelete", "the default security group of " + g.vpc + " cannot be deleted");
    AZOTE_TRY(recs, instance_recs());
    for (const auto& r : recs)
      if (!r.terminated && std::find(r.groups.begin(), r.groups.end(), g.id) != r.groups.end())
        return api_error("DependencyViolation", "resource " + g.id + " has a dependent object (instance " + r.id + ")");
    for (const auto& other : all_of(group_by_id)) {
      if (other.id == g.id) continue;
      for (const auto* rules : {&other.ingress, &other.egress})
        for (const auto& rule : *rules)
          if (const auto* ref = std::get_if<vpc::GroupRef>(&rule.peer); ref && ref->group_id == g.id)
            return api_error("DependencyViolation", "resource " + g.id + " has a dependent object (a rule of " + other.id + ")");
    }
    AZOTE_TRYV(erase(key("security-groups", g.id)));
    wake_pusher();
    return ec2api::return_response("DeleteSecurityGroup", c.request_id);
  }

  // Authorize/Revoke Ingress/Egress: IpPermissions.N... (what the aws CLI sends, its
  // --protocol/--port/--cidr included), or EC2's older flat form for ingress: IpProtocol,
  // FromPort, ToPort, CidrIp.
  ApiResult<std::string> change_rules(Call& c, bool ingress, bool authorize) {
    const auto& p = *c.params;
    AZOTE_TRY(perms_in, ec2api::read_ip_permissions(p.root()));
    if (auto proto = p.get("IpProtocol")) {
      ec2api::IpPermission flat;
      flat.ip_protocol = std::string(*proto);
      AZOTE_TRY(from, p.root().get_int("FromPort", -1, 65535));
      AZOTE_TRY(to, p.root().get_int("ToPort", -1, 65535));
      flat.from_port = from;
      flat.to_port = to;
      if (auto cidr = p.get("CidrIp")) flat.ip_ranges.push_back({std::string(*cidr), ""});
      perms_in.push_back(flat);
    }
    AZOTE_TRY(perms, permissions_of(perms_in));
    std::lock_guard net_lock(net_mu);  // a group a rule names cannot be deleted meanwhile
    AZOTE_TRY(g0, group_of_call(p));
    std::vector<vpc::Rule> rules;
    std::vector<ec2api::IpPermission> unknown;
    AZOTE_TRY(found, update(key("security-groups", g0.id), "IncorrectState", [&](Json& j) -> ApiResult<void> {
      auto g = group_from(j.dump());
      if (!g) return api_error("InternalError", "the record of " + g0.id + " does not read");
      auto rs = vpc_model::rules_of(perms, [&](const std::string& ref) {
        std::shared_lock lock(cache_mu);
        auto it = group_by_id.find(ref);
        return it != group_by_id.end() && it->second.vpc == g->vpc;
      });
      if (!rs) return api_error(rs.error().code, rs.error().sentence);
      rules = *rs;
      unknown.clear();
      std::vector<vpc::Rule>& list = ingress ? g->ingress : g->egress;
      for (const auto& r : rules) {
        const auto at = std::find(list.begin(), list.end(), r);
        if (authorize) {
          if (at != list.end())
            return api_error("InvalidPermission.Duplicate", "the specified rule \"" + r.to_string() + "\" already exists");
          list.push_back(r);
        } else if (at == list.end()) {
          unknown.push_back(ip_permission_of(r));
        } else {
          list.erase(at);
        }
      }
      if (list.size() > 60)
        return api_error("RulesPerSecurityGroupLimitExceeded", "a security group has at most 60 rules per direction");
      j = group_json(*g);
      return {};
    }));
    if (!found) return api_error("InvalidGroup.NotFound", "The security group '" + g0.id + "' does not exist");
    wake_pusher();
    const std::string action = std::string(authorize ? "Authorize" : "Revoke") + "SecurityGroup" + (ingress ? "Ingress" : "Egress");
    if (!authorize) return ec2api::revoke_security_group_response(action, c.request_id, unknown);
    std::vector<ec2api::SecurityGroupRule> out;
    for (const auto& r : rules) {
      const ec2api::IpPermission perm = ip_permission_of(r);
      ec2api::SecurityGroupRule x;
      x.security_group_rule_id = new_id("sgr");
      x.group_id = g0.id;
      x.group_owner_id = opt.account;
      x.is_egress = !ingress;
      x.ip_protocol = perm.ip_protocol;
      x.from_port = perm.from_port;
      x.to_port = perm.to_port;
      if (!perm.ip_ranges.empty()) x.cidr_ipv4 = perm.ip_ranges.front().cidr_ip;
      if (!perm.user_id_group_pairs.empty()) x.referenced_group_id = perm.user_id_group_pairs.front().group_id;
      out.push_back(x);
    }
    return ec2api::authorize_security_group_response(action, c.request_id, out);
  }
  ApiResult<std::string> authorize_ingress(Call& c) { return change_rules(c, true, true); }
  ApiResult<std::string> authorize_egress(Call& c) { return change_rules(c, false, true); }
  ApiResult<std::string> revoke_ingress(Call& c) { return change_rules(c, true, false); }
  ApiResult<std::string> revoke_egress(Call& c) { return change_rules(c, false, false); }

  // ---- the network each host is pushed ------------------------------------------------
  // Every host gets the region's VPCs, subnets and groups whole (ApplyRegionNetwork,
  // generation = net_revision) when they change, when it is first reached, and before an
  // instance is launched on it; a host that missed a push gets it on the next round (every
  // third of the lease). Whole, not deltas: fine for the handful of VPCs a region has
  // today; the fabric's per-address mappings will need deltas (DESIGN.md "Not yet").
  std::mutex push_mu;
  std::condition_variable_any push_cv;
  bool push_wanted = false;                 // push_mu
  struct Pushed {
    uint64_t epoch = 0;      // the host's lease it was pushed under
    int64_t generation = 0;  // what it holds
  };
  std::map<std::string, Pushed> pushed;     // push_mu: by host
  std::jthread pusher;                      // stopped and joined in ~Impl, before the watch

  void wake_pusher() {
    {
      std::lock_guard lock(push_mu);
      push_wanted = true;
    }
    push_cv.notify_all();
  }

  v1::RegionNetwork network_for(const std::string& host_id, int64_t generation) {
    // One consistent copy (one read of the cache), and only what holds together: a subnet
    // or group whose VPC is gone, a rule naming a group that is gone, are left out rather
    // than making every host refuse the push.
    std::map<std::string, HostRec> fabric_hosts;
    std::vector<VpcRec> vpcs;
    std::vector<SubnetRec> subnets;
    std::vector<GroupRec> groups;
    std::vector<InstanceRec> insts;
    {
      std::shared_lock lock(cache_mu);
      for (const auto& [id, h] : host_by_id)
        if (!h.underlay.empty() && h.fabric_id != 0) fabric_hosts[id] = h;
      for (const auto& [id, v] : vpc_by_id) vpcs.push_back(v);
      for (const auto& [id, x] : subnet_by_id)
        if (vpc_by_id.count(x.vpc) != 0) subnets.push_back(x);
      for (const auto& [id, g] : group_by_id)
        if (vpc_by_id.count(g.vpc) != 0) groups.push_back(g);
      for (const auto& [id, r] : inst_by_id)
        if (!r.terminated && !r.ip.empty() && r.host != host_id) insts.push_back(r);
    }
    std::set<std::string> group_ids;
    for (const auto& g : groups) group_ids.insert(g.id);
    auto dangling = [&](const vpc::Rule& r) {
      const auto* ref = std::get_if<vpc::GroupRef>(&r.peer);
      return ref != nullptr && group_ids.count(ref->group_id) == 0;
    };
    v1::RegionNetwork n;
    n.set_generation(static_cast<uint64_t>(generation));
    // The fabric: this host's id, every other host on it (address, the pair's key), and
    // every address of an instance not terminated on those hosts.
    auto self = fabric_hosts.find(host_id);
    if (self != fabric_hosts.end() && !opt.fabric_secret.empty()) {
      n.set_fabric_host_id(self->second.fabric_id);
      for (const auto& [id, h] : fabric_hosts) {
        if (id == host_id) continue;
        const std::string k = pair_key(opt.fabric_secret, self->second.fabric_id, h.fabric_id);
        if (k.size() != 32) continue;
        auto* p = n.add_peers();
        p->set_host_id(h.fabric_id);
        p->set_address(h.underlay);
        p->set_key(k);
        p->set_key_id(1);
      }
      std::map<std::string, std::string> vpc_of_subnet;
      for (const auto& sn : subnets) vpc_of_subnet[sn.id] = sn.vpc;
      for (const auto& r : insts) {
        auto h = fabric_hosts.find(r.host);
        auto v = vpc_of_subnet.find(r.subnet);
        if (h == fabric_hosts.end() || v == vpc_of_subnet.end()) continue;
        auto* m = n.add_mappings();
        m->set_vpc_id(v->second);
        m->set_ip(r.ip);
        m->set_host_id(h->second.fabric_id);
      }
    }
    for (const auto& v : vpcs) {
      auto* o = n.add_vpcs();
      o->set_vpc_id(v.id);
      o->set_cidr_block(v.cidr);
      o->set_is_default(v.is_default);
    }
    for (const auto& sn : subnets) {
      auto* o = n.add_subnets();
      o->set_subnet_id(sn.id);
      o->set_vpc_id(sn.vpc);
      o->set_cidr_block(sn.cidr);
      o->set_availability_zone(sn.zone);
      o->set_default_for_az(sn.is_default);
    }
    auto fill = [](v1::IpPermission* o, const vpc::Rule& r) {
      const vpc_model::Permission p = vpc_model::permission_of(r);
      o->set_ip_protocol(p.protocol);
      if (p.from_port) o->set_from_port(*p.from_port);
      if (p.to_port) o->set_to_port(*p.to_port);
      for (const auto& c : p.cidrs) o->add_cidr_ips(c);
      for (const auto& g : p.groups) o->add_source_group_ids(g);
    };
    for (const auto& g : groups) {
      auto* o = n.add_security_groups();
      o->set_group_id(g.id);
      o->set_group_name(g.name);
      o->set_description(g.description);
      o->set_vpc_id(g.vpc);
      for (const auto& r : g.ingress)
        if (!dangling(r)) fill(o->add_ip_permissions(), r);
      for (const auto& r : g.egress)
        if (!dangling(r)) fill(o->add_ip_permissions_egress(), r);
    }
    return n;
  }

  // The host holds the current network (or a newer one), or the host's refusal.
  ApiResult<void> push_network(const std::string& host_id) {
    int64_t rev = 0;
    {
      std::shared_lock lock(cache_mu);
      rev = net_revision;
      // A host on the fabric also needs every instance's address: their changes count.
      if (auto h = host_by_id.find(host_id); h != host_by_id.end() && !h->second.underlay.empty())
        rev = std::max(rev, map_revision);
    }
    // A new lease of the host (it was lost, or restarted): pushed again whatever it held.
    const uint64_t epoch = epoch_of(host_id);
    {
      std::lock_guard lock(push_mu);
      Pushed& p = pushed[host_id];
      if (p.epoch == epoch && p.generation >= rev) return {};
    }
    AZOTE_TRY(resp, host_call(host_id, &v1::Ec2::Stub::ApplyRegionNetwork, network_for(host_id, rev), std::chrono::seconds(10), epoch));
    std::lock_guard lock(push_mu);
    Pushed& p = pushed[host_id];
    if (p.epoch != epoch) p = Pushed{epoch, 0};
    p.generation = std::max(p.generation, static_cast<int64_t>(resp.generation()));
    return {};
  }

  void start_pusher() {
    pusher = std::jthread([this](std::stop_token st) {
      while (!st.stop_requested()) {
        {
          std::unique_lock lock(push_mu);
          push_cv.wait_for(lock, st, opt.host_lease / 3, [this] { return push_wanted; });
          push_wanted = false;
        }
        if (st.stop_requested()) break;
        if (auto d = ensure_default_network(); !d) LOG_WARN("region: the default VPC: %s", d.error().message.c_str());
        auto hs = hosts();
        if (!hs) continue;
        for (const auto& h : *hs) {
          if (st.stop_requested()) break;
          if (!usable(h.id)) continue;
          if (auto r = push_network(h.id); !r)
            LOG_WARN("region: the network for host %s: %s (again next round)", h.id.c_str(), r.error().message.c_str());
        }
      }
    });
  }

  // ---- the pipeline -----------------------------------------------------------------
  const std::map<std::string, ActionDef, std::less<>>& actions() {
    static const std::map<std::string, ActionDef, std::less<>> a = {
        {"DescribeRegions", {&Impl::describe_regions, {"RegionName", "Filter", "AllRegions"}}},
        {"DescribeAvailabilityZones", {&Impl::describe_availability_zones, {"ZoneName", "ZoneId", "Filter", "AllAvailabilityZones"}}},
        {"DescribeInstanceTypes", {&Impl::describe_instance_types, {"InstanceType"}}},
        {"DescribeImages", {&Impl::describe_images, {"ImageId", "Owner"}}},
        {"RunInstances", {&Impl::run_instances, {"ImageId", "InstanceType", "MinCount", "MaxCount", "TagSpecification",
                                                  "ClientToken", "UserData", "SubnetId", "SecurityGroupId", "PrivateIpAddress"}}},
        {"DescribeInstances", {&Impl::describe_instances, {"InstanceId", "Filter", "MaxResults", "NextToken"}}},
        {"DescribeInstanceStatus", {&Impl::describe_instance_status, {"InstanceId", "IncludeAllInstances", "MaxResults", "NextToken"}}},
        {"StartInstances", {&Impl::start_instances, {"InstanceId"}}},
        {"StopInstances", {&Impl::stop_instances, {"InstanceId", "Force"}}},
        {"RebootInstances", {&Impl::reboot_instances, {"InstanceId"}}},
        {"TerminateInstances", {&Impl::terminate_instances, {"InstanceId"}}},
        {"GetConsoleOutput", {&Impl::get_console_output, {"InstanceId", "Latest"}}},
        {"CreateTags", {&Impl::create_tags, {"ResourceId", "Tag"}}},
        {"DeleteTags", {&Impl::delete_tags, {"ResourceId", "Tag"}}},
        {"DescribeTags", {&Impl::describe_tags, {"Filter", "MaxResults", "NextToken"}}},
        {"DescribeHosts", {&Impl::describe_hosts, {"HostId"}}},
        {"CreateVolume", {&Impl::create_volume, {"AvailabilityZone", "Size", "VolumeType", "Iops", "Throughput", "Encrypted",
                                                  "TagSpecification", "ClientToken"}}},
        {"DescribeVolumes", {&Impl::describe_volumes, {"VolumeId", "Filter", "MaxResults", "NextToken"}}},
        {"AttachVolume", {&Impl::attach_volume, {"VolumeId", "InstanceId", "Device"}}},
        {"DetachVolume", {&Impl::detach_volume, {"VolumeId", "InstanceId", "Device", "Force"}}},
        {"DeleteVolume", {&Impl::delete_volume, {"VolumeId"}}},
        {"CreateVpc", {&Impl::create_vpc, {"CidrBlock", "TagSpecification", "InstanceTenancy", "AmazonProvidedIpv6CidrBlock"}}},
        {"DescribeVpcs", {&Impl::describe_vpcs, {"VpcId", "Filter", "MaxResults", "NextToken"}}},
        {"DeleteVpc", {&Impl::delete_vpc, {"VpcId"}}},
        {"CreateSubnet", {&Impl::create_subnet, {"VpcId", "CidrBlock", "AvailabilityZone", "TagSpecification"}}},
        {"DescribeSubnets", {&Impl::describe_subnets, {"SubnetId", "Filter", "MaxResults", "NextToken"}}},
        {"DeleteSubnet", {&Impl::delete_subnet, {"SubnetId"}}},
        {"CreateSecurityGroup", {&Impl::create_security_group, {"GroupName", "GroupDescription", "VpcId", "TagSpecification"}}},
        {"DescribeSecurityGroups", {&Impl::describe_security_groups, {"GroupId", "GroupName", "Filter", "MaxResults", "NextToken"}}},
        {"DeleteSecurityGroup", {&Impl::delete_security_group, {"GroupId", "GroupName"}}},
        {"AuthorizeSecurityGroupIngress", {&Impl::authorize_ingress, {"GroupId", "GroupName", "IpPermissions", "IpProtocol", "FromPort", "ToPort", "CidrIp"}}},
        {"AuthorizeSecurityGroupEgress", {&Impl::authorize_egress, {"GroupId", "IpPermissions"}}},
        {"RevokeSecurityGroupIngress", {&Impl::revoke_ingress, {"GroupId", "GroupName", "IpPermissions", "IpProtocol", "FromPort", "ToPort", "CidrIp"}}},
        {"RevokeSecurityGroupEgress", {&Impl::revoke_egress, {"GroupId", "IpPermissions"}}},
    };
    return a;
  }

  // What the policy judges: the ARNs a call names (instance ids, tagged resources), or
  // "*" for a call on no particular resource.
  std::vector<std::string> resources(std::string_view action, const ec2api::Params& p) const {
    std::vector<std::string> out;
    for (auto id : p.strings("InstanceId")) out.push_back(arn("instance", id));
    if (auto id = p.get("InstanceId")) out.push_back(arn("instance", *id));
    if (auto id = p.get("VolumeId")) out.push_back(arn("volume", *id));
    for (auto id : p.strings("VolumeId")) out.push_back(arn("volume", id));
    if (action == "CreateVolume") out.push_back(arn("volume", "*"));
    if (auto id = p.get("VpcId")) out.push_back(arn("vpc", *id));
    for (auto id : p.strings("VpcId")) out.push_back(arn("vpc", id));
    if (auto id = p.get("SubnetId")) out.push_back(arn("subnet", *id));
    for (auto id : p.strings("SubnetId")) out.push_back(arn("subnet", id));
    if (auto id = p.get("GroupId")) out.push_back(arn("security-group", *id));
    for (auto id : p.strings("GroupId")) out.push_back(arn("security-group", id));
    for (auto id : p.strings("ResourceId")) {
      const TagKind* kind = tag_kind(id);
      out.push_back(arn(kind != nullptr ? kind->type : std::string_view("resource"), id));
    }
    for (auto id : p.strings("SecurityGroupId")) out.push_back(arn("security-group", id));
    if (action == "RunInstances") {
      out.push_back(arn("instance", "*"));
      if (auto img = p.get("ImageId")) out.push_back("arn:aws:ec2:" + opt.name + "::image/" + std::string(*img));
    }
    if (out.empty()) out.push_back("*");
    return out;
  }

  HttpResponse reply(const std::string& body) {
    HttpResponse r;
    r.body = body;
    return r;
  }
  HttpResponse refuse(const Ec2Error& e, const std::string& rid) {
    HttpResponse r;
    r.status = e.http_status();
    r.body = ec2api::error_document(e, rid);
    return r;
  }

  void record(const std::string& who, std::string_view action, const std::vector<std::string>& res,
              const std::string& outcome, const std::string& error, const std::string& rid) {
    audit::Entry e;
    e.principal = who;
    e.method = "ec2:" + std::string(action.empty() ? "?" : action);
    e.resources = res;
    e.outcome = outcome;
    e.error = error;
    e.detail = {{"request_id", rid}};
    if (auto a = audit->append(e); !a) LOG_WARN("region: audit: %s", a.error().message().c_str());
  }

  // ---- hosts joining by themselves ---------------------------------------------------
  // POST /azote/enrol (enrol.hpp): a one-time token, consumed in etcd whatever comes
  // next; the credential the host issued for the region kept as register-host keeps it;
  // the host registered (a fabric id if it has an underlay). JSON in and out.
  HttpResponse enrol(const HttpRequest& http, const std::string& rid) {
    auto answer = [&](int status, const Json& j) {
      HttpResponse r;
      r.status = status;
      r.content_type = "application/json";
      r.body = j.dump();
      return r;
    };
    auto refused = [&](int status, const std::string& who, const std::string& why) {
      record(who, "azote:EnrolHost", {}, "denied", why, rid);
      return answer(status, {{"error", why}, {"request_id", rid}});
    };
    if (http.method != "POST") return refused(405, "", "enrolment takes POST");
    auto f = parse_enrol(http.body);
    if (!f) return refused(400, "", f.error());
    const std::string who = "enrolling-host/" + f->host_id;
    const std::string k = key("enrolment", enrolment_digest(f->token));
    auto t = store.txn({etcd::Compare::create_revision(k, etcd::Compare::Cmp::kGreater, 0)}, {etcd::Op::del(k)});
    if (!t) return refused(503, who, "the region's store: " + t.error().describe());
    if (!t->succeeded) return refused(403, who, "the enrolment token is unknown, used or expired");
    const std::string dir = opt.hosts_dir + "/" + f->host_id;
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    ::chmod(dir.c_str(), 0700);
    for (const auto& [name, pem] : {std::pair<const char*, const std::string*>{"ca.pem", &f->ca_pem},
                                    {"cert.pem", &f->cert_pem}, {"key.pem", &f->key_pem}})
      if (auto w = pki::write_file_atomic(dir + "/" + name, *pem, 0600); !w)
        return refused(500, who, dir + "/" + name + ": " + w.error().message());
    HostRec h;
    h.id = f->host_id;
    h.endpoint = f->endpoint;
    h.zone = f->zone;
    h.vcpus = f->vcpus;
    h.memory_mib = f->memory_mib;
    h.underlay = f->underlay;
    if (!h.underlay.empty()) {
      auto id = Region::fabric_id_for(store, opt.prefix, h.id);
      if (!id) return refused(503, who, id.error());
      h.fabric_id = *id;
    }
    if (auto w = put(key("hosts", h.id), Region::host_json(h)); !w) return refused(503, who, w.error().message);
    {
      std::lock_guard lock(hosts_mu);
      conns.erase(h.id);  // a host enrolling again: its new credential from now on
    }
    record(who, "azote:EnrolHost", {"host/" + h.id}, "allowed", "", rid);
    LOG_INFO("region: host %s enrolled (zone %s, endpoint %s%s)", h.id.c_str(), h.zone.c_str(), h.endpoint.c_str(),
             h.underlay.empty() ? "" : (", underlay " + h.underlay).c_str());
    return answer(200, {{"host_id", h.id}, {"fabric_id", h.fabric_id}, {"region", opt.name}, {"request_id", rid}});
  }

  HttpResponse handle(const HttpRequest& http) {
    const std::string rid = ec2api::random_request_id();
    if (http.path == "/azote/enrol") return enrol(http, rid);
    if (http.method != "POST" && http.method != "GET")
      return refuse({"InvalidAction", "EC2's Query API takes POST or GET"}, rid);
    // 1. Who: SigV4 over the request exactly as it came.
    sigv4::Request sreq{http.method, http.path, http.query, http.headers, http.body};
    sigv4::Options so;
    so.regions = {opt.name};
    auto v = sigv4::verify(
        sreq,
        [&](std::string_view id, std::string_view token) -> std::optional<std::string> {
          if (!token.empty()) return std::nullopt;  // no session tokens are issued
          for (const auto& p : principals)
            if (p.access_key_id == id) return p.secret_access_key;
          return std::nullopt;
        },
        ::time(nullptr), so);
    if (!v) {
      const Ec2Error e{sigv4::code_name(v.error().code), v.error().message()};
      record("", "", {}, "denied", e.code + ": " + e.message, rid);
      return refuse(e, rid);
    }
    const Principal* who = nullptr;
    for (const auto& p : principals)
      if (p.access_key_id == v->access_key_id) who = &p;
    // 2. What: the form (the body of a POST, the query of a GET less the signature's own).
    std::string form = http.method == "POST" ? http.body : std::string();
    if (http.method == "GET") {
      size_t at = 0;
      while (at <= http.query.size()) {
        size_t amp = http.query.find('&', at);
        if (amp == std::string::npos) amp = http.query.size();
        const std::string part = http.query.substr(at, amp - at);
        if (!part.empty() && part.rfind("X-Amz-", 0) != 0) form += (form.empty() ? "" : "&") + part;
        at = amp + 1;
      }
    }
    auto params = ec2api::Params::parse(form);
    if (!params) {
      record(who->name, "", {}, "failed", params.error().code, rid);
      return refuse(params.error(), rid);
    }
    if (auto cv = params->check_action_version(); !cv) {
      record(who->name, params->action(), {}, "failed", cv.error().code, rid);
      return refuse(cv.error(), rid);
    }
    const std::string action(params->action());
    const auto& table = actions();
    const auto def = table.find(action);
    if (def == table.end()) {
      record(who->name, action, {}, "failed", "InvalidAction", rid);
      return refuse({"InvalidAction", "The action " + action + " is not valid for this web service (azote-region)"}, rid);
    }
    for (const auto& e : params->entries()) {
      const std::string_view n = e.name;
      if (n == "Action" || n == "Version" || n == "DryRun") continue;
      const std::string_view root = n.substr(0, n.find('.'));
      if (std::find(def->second.params.begin(), def->second.params.end(), root) == def->second.params.end()) {
        const Ec2Error e2{"UnknownParameter", "The parameter " + std::string(root) + " is not recognized by " + action +
                                                   " on azote-region (it is not supported here yet)"};
        record(who->name, action, {}, "failed", e2.code, rid);
        return refuse(e2, rid);
      }
    }
    // 3. May they: the principal's policy over every resource the call names.
    const std::vector<std::string> res = resources(action, *params);
    const Decision d = evaluate(who->policy, "ec2:" + action, res);
    if (!d.allowed()) {
      const std::string why = d.effect == Effect::kExplicitDeny ? "an explicit deny" : "no allow";
      record(who->name, action, res, "denied", why, rid);
      return refuse({"UnauthorizedOperation",
                     "You are not authorized to perform this operation. User: " + who->name + " (" + why + " for ec2:" +
                         action + ")"},
                    rid);
    }
    auto dry = params->get_bool("DryRun");
    if (!dry) {  // never run for real what was asked as a dry run
      record(who->name, action, res, "failed", dry.error().code, rid);
      return refuse(dry.error(), rid);
    }
    if (*dry && **dry) {
      record(who->name, action, res, "allowed", "DryRunOperation", rid);
      return refuse({"DryRunOperation", "Request would have succeeded, but DryRun flag is set."}, rid);
    }
    // 4. Do it.
    Call call{who, rid, &*params};
    auto out = (this->*(def->second.handler))(call);
    if (!out) {
      record(who->name, action, res, "failed", out.error().code + ": " + out.error().message, rid);
      return refuse(out.error(), rid);
    }
    record(who->name, action, res, "allowed", "", rid);
    return reply(*out);
  }
};

Region::Region(Options o, etcd::Client store, std::vector<Principal> principals, std::unique_ptr<audit::AuditLog> audit)
    : impl_(std::make_unique<Impl>(std::move(o), std::move(store), std::move(principals), std::move(audit))) {}
Region::~Region() = default;
HttpResponse Region::handle(const HttpRequest& req) { return impl_->handle(req); }
Result<void, std::string> Region::start() { return impl_->start(); }

Result<uint32_t, std::string> Region::fabric_id_for(etcd::Client& store, const std::string& prefix,
                                                   const std::string& host_id) {
  if (auto old = store.get(prefix + "hosts/" + host_id); old && *old)
    if (auto h = host_from((*old)->value); h && h->fabric_id != 0) return h->fabric_id;
  for (uint32_t n = 1; n < 65536; ++n) {
    auto c = store.create_if_absent(prefix + "fabric-ids/" + std::to_string(n), host_id);
    if (!c) return Unexpected{"a fabric id for " + host_id + ": " + c.error().describe()};
    if (c->created || (c->existing && c->existing->value == host_id)) return n;
  }
  return Unexpected{std::string("no fabric id is free (65535 hosts)")};
}

std::string Region::host_json(const HostRec& h) {
  Json j{{"id", h.id}, {"endpoint", h.endpoint}, {"zone", h.zone}, {"vcpus", h.vcpus}, {"memory_mib", h.memory_mib}};
  if (!h.underlay.empty()) {
    j["underlay"] = h.underlay;
    j["fabric_id"] = h.fabric_id;
  }
  return j.dump();
}

}  // namespace azote::region
