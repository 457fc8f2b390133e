#include "region/region.hpp"

#include <sys/random.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <nlohmann/json.hpp>
#include <set>
#include <shared_mutex>
#include <thread>

#include "api/azote.grpc.pb.h"
#include "api/client.hpp"
#include "base/log.hpp"
#include "ec2api/error.hpp"
#include "ec2api/params.hpp"
#include "ec2api/request.hpp"
#include "ec2api/responses.hpp"
#include "ec2api/xml.hpp"
#include "etcd/watch.hpp"
#include "sigv4/sigv4.hpp"

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
          {"terminated_at", r.terminated_at}};
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

Json tags_json(const std::vector<std::pair<std::string, std::string>>& tags) {
  Json out = Json::array();
  for (const auto& [k, v] : tags) out.push_back({k, v});
  return out;
}
std::vector<std::pair<std::string, std::string>> tags_from(const Json& j) {
  std::vector<std::pair<std::string, std::string>> out;
  if (j.is_array())
    for (const auto& t : j)
      if (t.is_array() && t.size() == 2 && t[0].is_string() && t[1].is_string()) out.emplace_back(t[0], t[1]);
  return out;
}

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
    }
  }
  void reindex_locked() {
    host_by_id.clear();
    inst_by_id.clear();
    vol_by_id.clear();
    used_by_host.clear();
    for (const auto& [k, kv] : cache) index_locked(kv);
  }

  void apply_locked(const etcd::KeyValue& kv, bool deleted) {
    auto it = cache.find(kv.key);
    if (it != cache.end() && it->second.mod_revision >= kv.mod_revision) return;
    if (auto t = tombstones.find(kv.key); t != tombstones.end() && t->second >= kv.mod_revision) return;
    unindex_locked(kv.key);
    if (deleted) {
      if (it != cache.end()) cache.erase(it);
      tombstones[kv.key] = kv.mod_revision;
    } else {
      cache[kv.key] = kv;
      tombstones.erase(kv.key);
      index_locked(kv);
    }
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

    const std::string reservation = "r-" + hex(17);
    std::vector<InstanceRec> launched;
    std::string last_refusal = "no registered host has room for a " + type;
    for (int64_t n = 0; n < hi; ++n) {
      std::lock_guard lock(place_mu);
      AZOTE_TRY(order, placement_order(vcpus, mib));
      bool placed = false;
      for (const auto& host : order) {
        v1::RunInstancesRequest req;
        req.set_image_id(std::string(image));
        req.set_instance_type(type);
        req.set_count(1);
        for (const auto& [k, v] : tags) {
          auto* t = req.add_tags();
          t->set_key(k);
          t->set_value(v);
        }
        if (auto ud = p.get("UserData")) req.set_user_data(std::string(*ud));
        req.set_no_network_interface(true);  // the region's VPCs come with the mapping service (not yet)
        auto r = host_call(host, &v1::Ec2::Stub::RunInstances, req);
        if (!r) {
          if (r.error().code == "InsufficientInstanceCapacity" || r.error().code == "Unavailable") {
            last_refusal = host + ": " + r.error().message;
            continue;  // the next host
          }
          if (launched.empty()) return Unexpected{r.error()};
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
      if (!placed) break;
    }
    if (static_cast<int64_t>(launched.size()) < lo) {
      // Fewer than MinCount: what was started is ended, as EC2 launches all or nothing.
      for (const auto& r : launched) {
        v1::InstanceIdsRequest req;
        req.add_instance_ids(r.id);
        (void)host_call(r.host, &v1::Ec2::Stub::TerminateInstances, req);
      }
      return api_error("InsufficientInstanceCapacity",
                       "We currently do not have sufficient " + type + " capacity (" + last_refusal + ")");
    }
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

  // Tags on instances and volumes, kept in their records by the region (hosts know their
  // launch tags only). Each record is read, changed and written back only if nobody
  // changed it meanwhile (a compare-and-swap on its etcd revision, retried).
  ApiResult<std::string> change_tags(Call& c, bool create) {
    std::vector<std::string> ids;
    for (auto id : c.params->strings("ResourceId")) ids.emplace_back(id);
    if (ids.empty()) return api_error("MissingParameter", "The request must contain the parameter ResourceId");
    AZOTE_TRY(tags, ec2api::read_tags(c.params->root()));
    for (const auto& id : ids) {
      const bool instance = id.rfind("i-", 0) == 0, volume = id.rfind("vol-", 0) == 0;
      if (!instance && !volume)
        return api_error("InvalidID", "The ID '" + id + "' is not valid (instances and volumes only, for now)");
      if (instance) AZOTE_TRYV(well_formed(id));
      const std::string k = key(instance ? "instances" : "volumes", id);
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
      if (!found)
        return instance ? api_error("InvalidInstanceID.NotFound", "The instance ID '" + id + "' does not exist")
                        : api_error("InvalidVolume.NotFound", "The volume '" + id + "' does not exist.");
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

  // ---- the pipeline -----------------------------------------------------------------
  const std::map<std::string, ActionDef, std::less<>>& actions() {
    static const std::map<std::string, ActionDef, std::less<>> a = {
        {"DescribeRegions", {&Impl::describe_regions, {"RegionName", "Filter", "AllRegions"}}},
        {"DescribeAvailabilityZones", {&Impl::describe_availability_zones, {"ZoneName", "ZoneId", "Filter", "AllAvailabilityZones"}}},
        {"DescribeInstanceTypes", {&Impl::describe_instance_types, {"InstanceType"}}},
        {"DescribeImages", {&Impl::describe_images, {"ImageId", "Owner"}}},
        {"RunInstances", {&Impl::run_instances, {"ImageId", "InstanceType", "MinCount", "MaxCount", "TagSpecification",
                                                  "ClientToken", "UserData"}}},
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
    for (auto id : p.strings("ResourceId")) {
      const std::string s(id);
      const std::string kind = s.rfind("i-", 0) == 0 ? "instance" : s.rfind("vol-", 0) == 0 ? "volume" : "resource";
      out.push_back(arn(kind, s));
    }
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

  HttpResponse handle(const HttpRequest& http) {
    const std::string rid = ec2api::random_request_id();
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

std::string Region::host_json(const HostRec& h) {
  return Json{{"id", h.id}, {"endpoint", h.endpoint}, {"zone", h.zone}, {"vcpus", h.vcpus}, {"memory_mib", h.memory_mib}}
      .dump();
}

}  // namespace azote::region
