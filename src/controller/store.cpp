#include "controller/store.hpp"

#include <array>
#include <string_view>

#include <nlohmann/json.hpp>

#include "vpc_model/model.hpp"

namespace azote::controller {

using namespace vpc_model;  // the VPC as EC2 models it (lib/vpc_model)
namespace {

constexpr std::array<std::string_view, 7> kSchema = {R"sql(
CREATE TABLE instances (
  id TEXT PRIMARY KEY, reservation_id TEXT NOT NULL, image_id TEXT NOT NULL, type TEXT NOT NULL,
  state TEXT NOT NULL, reason_code TEXT NOT NULL, reason_message TEXT NOT NULL, launch_time TEXT NOT NULL,
  vcpus INTEGER NOT NULL, memory_mib INTEGER NOT NULL, user_data BLOB NOT NULL, tags TEXT NOT NULL,
  client_token TEXT NOT NULL, hv_pid INTEGER NOT NULL, hv_starttime INTEGER NOT NULL);
CREATE TABLE volumes (
  id TEXT PRIMARY KEY, type TEXT NOT NULL, state TEXT NOT NULL, create_time TEXT NOT NULL,
  client_token TEXT NOT NULL, file TEXT NOT NULL, size_gib INTEGER NOT NULL, iops INTEGER NOT NULL,
  throughput_mbps INTEGER NOT NULL, encrypted INTEGER NOT NULL, wrapped_key BLOB NOT NULL, tags TEXT NOT NULL,
  instance_id TEXT NOT NULL, device TEXT NOT NULL, attach_state TEXT NOT NULL, delete_on_termination INTEGER NOT NULL);
CREATE TABLE images (
  id TEXT PRIMARY KEY, name TEXT NOT NULL, description TEXT NOT NULL, kernel TEXT NOT NULL,
  kernel_sha256 TEXT NOT NULL, initrd TEXT NOT NULL, initrd_sha256 TEXT NOT NULL, cmdline TEXT NOT NULL,
  root_content TEXT NOT NULL, root_sha256 TEXT NOT NULL, creation_date TEXT NOT NULL, root_size_gib INTEGER NOT NULL);
CREATE TABLE tokens (token TEXT PRIMARY KEY, kind TEXT NOT NULL, request_hash TEXT NOT NULL, result TEXT NOT NULL);
CREATE TABLE cards (name TEXT PRIMARY KEY, pid INTEGER NOT NULL, starttime INTEGER NOT NULL);
)sql",
                                                     R"sql(
ALTER TABLE volumes ADD COLUMN import_from TEXT NOT NULL DEFAULT '';
)sql",
                                                     R"sql(
ALTER TABLE instances ADD COLUMN http_tokens TEXT NOT NULL DEFAULT 'optional';
CREATE TABLE vpcs (id TEXT PRIMARY KEY, cidr TEXT NOT NULL, is_default INTEGER NOT NULL);
CREATE TABLE subnets (id TEXT PRIMARY KEY, vpc_id TEXT NOT NULL, cidr TEXT NOT NULL, availability_zone TEXT NOT NULL,
  is_default INTEGER NOT NULL);
CREATE TABLE security_groups (id TEXT PRIMARY KEY, vpc_id TEXT NOT NULL, name TEXT NOT NULL, description TEXT NOT NULL,
  ingress TEXT NOT NULL, egress TEXT NOT NULL, UNIQUE (vpc_id, name));
CREATE TABLE enis (id TEXT PRIMARY KEY, instance_id TEXT NOT NULL, subnet_id TEXT NOT NULL, vpc_id TEXT NOT NULL,
  mac TEXT NOT NULL UNIQUE, private_ip TEXT NOT NULL, groups TEXT NOT NULL, UNIQUE (vpc_id, private_ip));
)sql",
                                                     R"sql(
ALTER TABLE images ADD COLUMN tpm_support TEXT NOT NULL DEFAULT '';
ALTER TABLE instances ADD COLUMN tpm_wrapped_key BLOB NOT NULL DEFAULT x'';
)sql",
                                                     R"sql(
ALTER TABLE instances ADD COLUMN enclave_enabled INTEGER NOT NULL DEFAULT 0;
)sql",
                                                     R"sql(
ALTER TABLE instances ADD COLUMN enclave_pool_cpus INTEGER NOT NULL DEFAULT 0;
ALTER TABLE instances ADD COLUMN enclave_pool_mib INTEGER NOT NULL DEFAULT 0;
-- Parents from before the pool get the default one (their guest runs on the rest from
-- its next start).
UPDATE instances SET enclave_pool_cpus = vcpus / 2, enclave_pool_mib = MIN(512, memory_mib / 2) / 2 * 2
  WHERE enclave_enabled = 1;
)sql",
                                                     R"sql(
CREATE TABLE region_network (id INTEGER PRIMARY KEY CHECK (id = 1), generation INTEGER NOT NULL, doc TEXT NOT NULL);
)sql"};

std::string tags_json(const Tags& t) {
  nlohmann::json j = nlohmann::json::array();
  for (const auto& [k, v] : t) j.push_back({k, v});
  return j.dump();
}
Tags tags_from(const std::string& s) {
  Tags t;
  const auto j = nlohmann::json::parse(s, nullptr, false);
  if (!j.is_array()) return t;
  for (const auto& kv : j)
    if (kv.is_array() && kv.size() == 2 && kv[0].is_string() && kv[1].is_string())
      t.emplace_back(kv[0].get<std::string>(), kv[1].get<std::string>());
  return t;
}
std::span<const uint8_t> bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

template <class T>
Result<T, StoreError> wrap(sqlite::SqliteResult<T> r) {
  if (!r) return make_error(StoreErrc::kDb, r.error().message());
  if constexpr (std::is_void_v<T>) {
    return {};
  } else {
    return std::move(r).value();
  }
}

std::string strings_json(const std::vector<std::string>& v) { return nlohmann::json(v).dump(); }
std::vector<std::string> strings_from(const std::string& s) {
  std::vector<std::string> out;
  const auto j = nlohmann::json::parse(s, nullptr, false);
  if (!j.is_array()) return out;
  for (const auto& e : j)
    if (e.is_string()) out.push_back(e.get<std::string>());
  return out;
}

sqlite::SqliteResult<void> put_instance(sqlite::Db& db, const InstanceRec& r) {
  AZOTE_TRYV(db.run("INSERT OR REPLACE INTO instances VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", r.id,
                    r.reservation_id, r.image_id, r.type, r.state, r.reason_code, r.reason_message, r.launch_time,
                    static_cast<int64_t>(r.vcpus), static_cast<int64_t>(r.memory_mib), bytes(r.user_data),
                    tags_json(r.tags), r.client_token, r.hv_pid, static_cast<int64_t>(r.hv_starttime), r.http_tokens,
                    std::span<const uint8_t>(r.tpm_wrapped_key), static_cast<int64_t>(r.enclave_enabled ? 1 : 0),
                    static_cast<int64_t>(r.enclave_pool_cpus), static_cast<int64_t>(r.enclave_pool_mib)));
  return {};
}
sqlite::SqliteResult<void> put_eni(sqlite::Db& db, const EniRec& r) {
  // An upsert on the id only (not OR REPLACE): a second ENI with a taken address or
  // MAC is an error, never a silent replacement of the first.
  AZOTE_TRYV(db.run("INSERT INTO enis VALUES (?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET instance_id = excluded.instance_id, "
                    "subnet_id = excluded.subnet_id, vpc_id = excluded.vpc_id, mac = excluded.mac, "
                    "private_ip = excluded.private_ip, groups = excluded.groups",
                    r.id, r.instance_id, r.subnet_id, r.vpc_id, r.mac, r.private_ip, strings_json(r.groups)));
  return {};
}
sqlite::SqliteResult<void> put_group(sqlite::Db& db, const SecurityGroupRec& r) {
  AZOTE_TRYV(db.run("INSERT INTO security_groups VALUES (?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET "
                    "vpc_id = excluded.vpc_id, name = excluded.name, description = excluded.description, "
                    "ingress = excluded.ingress, egress = excluded.egress",
                    r.id, r.vpc_id, r.name, r.description, rules_json(r.ingress).dump(), rules_json(r.egress).dump()));
  return {};
}
sqlite::SqliteResult<void> put_volume(sqlite::Db& db, const VolumeRec& r) {
  AZOTE_TRYV(db.run("INSERT OR REPLACE INTO volumes VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", r.id, r.type, r.state,
                    r.create_time, r.client_token, r.file, static_cast<int64_t>(r.size_gib),
                    static_cast<int64_t>(r.iops), static_cast<int64_t>(r.throughput_mbps),
                    static_cast<int64_t>(r.encrypted), std::span<const uint8_t>(r.wrapped_key), tags_json(r.tags),
                    r.instance_id, r.device, r.attach_state, static_cast<int64_t>(r.delete_on_termination),
                    r.import_from));
  return {};
}
sqlite::SqliteResult<void> put_token(sqlite::Db& db, const TokenRec& r) {
  AZOTE_TRYV(db.run("INSERT OR REPLACE INTO tokens VALUES (?,?,?,?)", r.token, r.kind, r.request_hash, r.result));
  return {};
}

}  // namespace

Result<Store, StoreError> Store::open(const std::string& path) {
  auto db = sqlite::Db::open(path);
  if (!db) return make_error(StoreErrc::kDb, db.error().message());
  if (auto m = db->migrate(kSchema); !m) return make_error(StoreErrc::kDb, m.error().message());
  // A deleted volume's wrapped key must not linger in free pages.
  if (auto e = db->exec("PRAGMA secure_delete = ON"); !e) return make_error(StoreErrc::kDb, e.error().message());
  return Store(std::move(db).value());
}

Result<std::vector<InstanceRec>, StoreError> Store::instances() {
  std::vector<InstanceRec> out;
  auto st = db_.query("SELECT * FROM instances ORDER BY launch_time, id");
  if (!st) return make_error(StoreErrc::kDb, st.error().message());
  for (;;) {
    auto row = st->step();
    if (!row) return make_error(StoreErrc::kDb, row.error().message());
    if (!*row) break;
    InstanceRec r;
    int c = 0;
    r.id = st->text(c++), r.reservation_id = st->text(c++), r.image_id = st->text(c++), r.type = st->text(c++);
    r.state = st->text(c++), r.reason_code = st->text(c++), r.reason_message = st->text(c++);
    r.launch_time = st->text(c++);
    r.vcpus = static_cast<uint32_t>(st->int64(c++));
    r.memory_mib = static_cast<uint64_t>(st->int64(c++));
    const auto ud = st->blob(c++);
    r.user_data.assign(ud.begin(), ud.end());
    r.tags = tags_from(st->text(c++));
    r.client_token = st->text(c++);
    r.hv_pid = st->int64(c++);
    r.hv_starttime = static_cast<uint64_t>(st->int64(c++));
    r.http_tokens = st->text(c++);
    const auto tk = st->blob(c++);
    r.tpm_wrapped_key.assign(tk.begin(), tk.end());
    r.enclave_enabled = st->int64(c++) != 0;
    r.enclave_pool_cpus = static_cast<uint32_t>(st->int64(c++));
    r.enclave_pool_mib = static_cast<uint64_t>(st->int64(c++));
    out.push_back(std::move(r));
  }
  return out;
}

Result<std::vector<VolumeRec>, StoreError> Store::volumes() {
  std::vector<VolumeRec> out;
  auto st = db_.query("SELECT * FROM volumes ORDER BY create_time, id");
  if (!st) return make_error(StoreErrc::kDb, st.error().message());
  for (;;) {
    auto row = st->step();
    if (!row) return make_error(StoreErrc::kDb, row.error().message());
    if (!*row) break;
    VolumeRec r;
    int c = 0;
    r.id = st->text(c++), r.type = st->text(c++), r.state = st->text(c++), r.create_time = st->text(c++);
    r.client_token = st->text(c++), r.file = st->text(c++);
    r.size_gib = static_cast<uint32_t>(st->int64(c++));
    r.iops = static_cast<uint32_t>(st->int64(c++));
    r.throughput_mbps = static_cast<uint32_t>(st->int64(c++));
    r.encrypted = st->int64(c++) != 0;
    r.wrapped_key = st->blob(c++);
    r.tags = tags_from(st->text(c++));
    r.instance_id = st->text(c++), r.device = st->text(c++), r.attach_state = st->text(c++);
    r.delete_on_termination = st->int64(c++) != 0;
    r.import_from = st->text(c++);
    out.push_back(std::move(r));
  }
  return out;
}

Result<std::vector<ImageRec>, StoreError> Store::images() {
  std::vector<ImageRec> out;
  auto st = db_.query("SELECT * FROM images ORDER BY creation_date, id");
  if (!st) return make_error(StoreErrc::kDb, st.error().message());
  for (;;) {
    auto row = st->step();
    if (!row) return make_error(StoreErrc::kDb, row.error().message());
    if (!*row) break;
    ImageRec r;
    int c = 0;
    r.id = st->text(c++), r.name = st->text(c++), r.description = st->text(c++), r.kernel = st->text(c++);
    r.kernel_sha256 = st->text(c++), r.initrd = st->text(c++), r.initrd_sha256 = st->text(c++);
    r.cmdline = st->text(c++), r.root_content = st->text(c++), r.root_sha256 = st->text(c++);
    r.creation_date = st->text(c++);
    r.root_size_gib = static_cast<uint32_t>(st->int64(c++));
    r.tpm_support = st->text(c++);
    out.push_back(std::move(r));
  }
  return out;
}

Result<std::vector<TokenRec>, StoreError> Store::tokens() {
  std::vector<TokenRec> out;
  auto st = db_.query("SELECT token, kind, request_hash, result FROM tokens");
  if (!st) return make_error(StoreErrc::kDb, st.error().message());
  for (;;) {
    auto row = st->step();
    if (!row) return make_error(StoreErrc::kDb, row.error().message());
    if (!*row) break;
    out.push_back({st->text(0), st->text(1), st->text(2), st->text(3)});
  }
  return out;
}

Result<std::vector<CardRec>, StoreError> Store::cards() {
  std::vector<CardRec> out;
  auto st = db_.query("SELECT name, pid, starttime FROM cards");
  if (!st) return make_error(StoreErrc::kDb, st.error().message());
  for (;;) {
    auto row = st->step();
    if (!row) return make_error(StoreErrc::kDb, row.error().message());
    if (!*row) break;
    out.push_back({st->text(0), st->int64(1), static_cast<uint64_t>(st->int64(2))});
  }
  return out;
}

Result<RegionNetworkRec, StoreError> Store::region_network() {
  RegionNetworkRec out;
  auto st = db_.query("SELECT generation, doc FROM region_network WHERE id = 1");
  if (!st) return make_error(StoreErrc::kDb, st.error().message());
  std::string doc;
  auto r = st->for_each([&](const sqlite::Stmt& s) {
    out.generation = static_cast<uint64_t>(s.int64(0));
    doc = s.text(1);
  });
  if (!r) return make_error(StoreErrc::kDb, r.error().message());
  if (out.generation == 0) return out;
  const auto j = nlohmann::json::parse(doc, nullptr, false);
  if (!j.is_object()) return make_error(StoreErrc::kDb, "the region's network does not read");
  try {
    out.fabric_host_id = j.value("fabric_host_id", 0u);
    for (const auto& p : j.value("peers", nlohmann::json::array()))
      out.peers.push_back({p.at("host"), p.at("address"), p.at("key"), p.at("key_id")});
    for (const auto& m : j.value("mappings", nlohmann::json::array())) out.mappings.push_back({m.at("vpc"), m.at("ip"), m.at("host")});
    for (const auto& v : j.value("vpcs", nlohmann::json::array())) out.vpcs.push_back({v.at("id"), v.at("cidr"), false});
    for (const auto& s : j.value("subnets", nlohmann::json::array()))
      out.subnets.push_back({s.at("id"), s.at("vpc"), s.at("cidr"), s.at("zone"), false});
    for (const auto& g : j.value("groups", nlohmann::json::array()))
      out.groups.push_back({g.at("id"), g.at("vpc"), g.at("name"), g.at("description"),
                            rules_from_json(g.at("ingress").dump()), rules_from_json(g.at("egress").dump())});
  } catch (const nlohmann::json::exception& e) {
    return make_error(StoreErrc::kDb, std::string("the region's network does not read: ") + e.what());
  }
  return out;
}

Result<void, StoreError> Store::put(const RegionNetworkRec& r) {
  nlohmann::json j = {{"vpcs", nlohmann::json::array()}, {"subnets", nlohmann::json::array()}, {"groups", nlohmann::json::array()}};
  j["fabric_host_id"] = r.fabric_host_id;
  j["peers"] = nlohmann::json::array();
  j["mappings"] = nlohmann::json::array();
  for (const auto& p : r.peers) j["peers"].push_back({{"host", p.host_id}, {"address", p.address}, {"key", p.key_hex}, {"key_id", p.key_id}});
  for (const auto& m : r.mappings) j["mappings"].push_back({{"vpc", m.vpc_id}, {"ip", m.ip}, {"host", m.host_id}});
  for (const auto& v : r.vpcs) j["vpcs"].push_back({{"id", v.id}, {"cidr", v.cidr}});
  for (const auto& s : r.subnets)
    j["subnets"].push_back({{"id", s.id}, {"vpc", s.vpc_id}, {"cidr", s.cidr}, {"zone", s.availability_zone}});
  for (const auto& g : r.groups)
    j["groups"].push_back({{"id", g.id}, {"vpc", g.vpc_id}, {"name", g.name}, {"description", g.description},
                           {"ingress", rules_json(g.ingress)}, {"egress", rules_json(g.egress)}});
  if (auto x = db_.run("INSERT OR REPLACE INTO region_network VALUES (1, ?, ?)", static_cast<int64_t>(r.generation), j.dump()); !x)
    return make_error(StoreErrc::kDb, x.error().message());
  return {};
}

Result<std::vector<VpcRec>, StoreError> Store::vpcs() {
  std::vector<VpcRec> out;
  auto st = db_.query("SELECT id, cidr, is_default FROM vpcs ORDER BY id");
  if (!st) return make_error(StoreErrc::kDb, st.error().message());
  auto r = st->for_each([&](const sqlite::Stmt& s) { out.push_back({s.text(0), s.text(1), s.int64(2) != 0}); });
  if (!r) return make_error(StoreErrc::kDb, r.error().message());
  return out;
}

Result<std::vector<SubnetRec>, StoreError> Store::subnets() {
  std::vector<SubnetRec> out;
  auto st = db_.query("SELECT id, vpc_id, cidr, availability_zone, is_default FROM subnets ORDER BY id");
  if (!st) return make_error(StoreErrc::kDb, st.error().message());
  auto r = st->for_each(
      [&](const sqlite::Stmt& s) { out.push_back({s.text(0), s.text(1), s.text(2), s.text(3), s.int64(4) != 0}); });
  if (!r) return make_error(StoreErrc::kDb, r.error().message());
  return out;
}

Result<std::vector<SecurityGroupRec>, StoreError> Store::security_groups() {
  std::vector<SecurityGroupRec> out;
  auto st = db_.query("SELECT id, vpc_id, name, description, ingress, egress FROM security_groups ORDER BY id");
  if (!st) return make_error(StoreErrc::kDb, st.error().message());
  auto r = st->for_each([&](const sqlite::Stmt& s) {
    out.push_back({s.text(0), s.text(1), s.text(2), s.text(3), rules_from_json(s.text(4)), rules_from_json(s.text(5))});
  });
  if (!r) return make_error(StoreErrc::kDb, r.error().message());
  return out;
}

Result<std::vector<EniRec>, StoreError> Store::enis() {
  std::vector<EniRec> out;
  auto st = db_.query("SELECT id, instance_id, subnet_id, vpc_id, mac, private_ip, groups FROM enis ORDER BY id");
  if (!st) return make_error(StoreErrc::kDb, st.error().message());
  auto r = st->for_each([&](const sqlite::Stmt& s) {
    out.push_back({s.text(0), s.text(1), s.text(2), s.text(3), s.text(4), s.text(5), strings_from(s.text(6))});
  });
  if (!r) return make_error(StoreErrc::kDb, r.error().message());
  return out;
}

Result<void, StoreError> Store::put(const SecurityGroupRec& r) { return wrap(put_group(db_, r)); }
Result<void, StoreError> Store::put(const EniRec& r) { return wrap(put_eni(db_, r)); }

Result<void, StoreError> Store::erase_security_group(const std::string& id) {
  if (auto x = db_.run("DELETE FROM security_groups WHERE id = ?", id); !x) return make_error(StoreErrc::kDb, x.error().message());
  return {};
}
Result<void, StoreError> Store::erase_eni(const std::string& id) {
  if (auto x = db_.run("DELETE FROM enis WHERE id = ?", id); !x) return make_error(StoreErrc::kDb, x.error().message());
  return {};
}

Result<void, StoreError> Store::put_network(const VpcRec& v, const SubnetRec& s, const SecurityGroupRec& g) {
  auto tx = db_.begin_immediate();
  if (!tx) return make_error(StoreErrc::kDb, tx.error().message());
  if (auto r = db_.run("INSERT OR REPLACE INTO vpcs VALUES (?,?,?)", v.id, v.cidr, static_cast<int64_t>(v.is_default)); !r)
    return make_error(StoreErrc::kDb, r.error().message());
  if (auto r = db_.run("INSERT OR REPLACE INTO subnets VALUES (?,?,?,?,?)", s.id, s.vpc_id, s.cidr, s.availability_zone,
                       static_cast<int64_t>(s.is_default));
      !r)
    return make_error(StoreErrc::kDb, r.error().message());
  if (auto r = put_group(db_, g); !r) return make_error(StoreErrc::kDb, r.error().message());
  return wrap(tx->commit());
}

Result<void, StoreError> Store::put(const InstanceRec& r) { return wrap(put_instance(db_, r)); }
Result<void, StoreError> Store::put(const VolumeRec& r) { return wrap(put_volume(db_, r)); }
Result<void, StoreError> Store::put(const TokenRec& r) { return wrap(put_token(db_, r)); }
Result<void, StoreError> Store::put(const ImageRec& r) {
  auto x = db_.run("INSERT OR REPLACE INTO images VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", r.id, r.name, r.description,
                   r.kernel, r.kernel_sha256, r.initrd, r.initrd_sha256, r.cmdline, r.root_content, r.root_sha256,
                   r.creation_date, static_cast<int64_t>(r.root_size_gib), r.tpm_support);
  if (!x) return make_error(StoreErrc::kDb, x.error().message());
  return {};
}
Result<void, StoreError> Store::put(const CardRec& r) {
  auto x = db_.run("INSERT OR REPLACE INTO cards VALUES (?,?,?)", r.name, r.pid, static_cast<int64_t>(r.starttime));
  if (!x) return make_error(StoreErrc::kDb, x.error().message());
  return {};
}
Result<void, StoreError> Store::erase_card(const std::string& name) {
  if (auto x = db_.run("DELETE FROM cards WHERE name = ?", name); !x) return make_error(StoreErrc::kDb, x.error().message());
  return {};
}
Result<void, StoreError> Store::erase_volume(const std::string& id) {
  auto x = db_.run("DELETE FROM volumes WHERE id = ?", id);
  if (!x) return make_error(StoreErrc::kDb, x.error().message());
  // secure_delete zeroes the row in the database file; the checkpoint moves that into
  // it and truncates the WAL, which still held the page with the key.
  if (auto c = db_.exec("PRAGMA wal_checkpoint(TRUNCATE)"); !c) return make_error(StoreErrc::kDb, c.error().message());
  return {};
}

Result<void, StoreError> Store::put_all(const std::vector<InstanceRec>& is, const std::vector<VolumeRec>& vs,
                                        const std::optional<TokenRec>& token, const std::vector<EniRec>& enis) {
  auto tx = db_.begin_immediate();
  if (!tx) return make_error(StoreErrc::kDb, tx.error().message());
  for (const auto& i : is)
    if (auto r = put_instance(db_, i); !r) return make_error(StoreErrc::kDb, r.error().message());
  for (const auto& v : vs)
    if (auto r = put_volume(db_, v); !r) return make_error(StoreErrc::kDb, r.error().message());
  for (const auto& e : enis)
    if (auto r = put_eni(db_, e); !r) return make_error(StoreErrc::kDb, r.error().message());
  if (token)
    if (auto r = put_token(db_, *token); !r) return make_error(StoreErrc::kDb, r.error().message());
  return wrap(tx->commit());
}

}  // namespace azote::controller
