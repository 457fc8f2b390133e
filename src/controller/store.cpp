#include "controller/store.hpp"

#include <array>
#include <string_view>

#include <nlohmann/json.hpp>

namespace azote::controller {
namespace {

constexpr std::array<std::string_view, 2> kSchema = {R"sql(
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

sqlite::SqliteResult<void> put_instance(sqlite::Db& db, const InstanceRec& r) {
  AZOTE_TRYV(db.run("INSERT OR REPLACE INTO instances VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", r.id,
                    r.reservation_id, r.image_id, r.type, r.state, r.reason_code, r.reason_message, r.launch_time,
                    static_cast<int64_t>(r.vcpus), static_cast<int64_t>(r.memory_mib), bytes(r.user_data),
                    tags_json(r.tags), r.client_token, r.hv_pid, static_cast<int64_t>(r.hv_starttime)));
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

Result<void, StoreError> Store::put(const InstanceRec& r) { return wrap(put_instance(db_, r)); }
Result<void, StoreError> Store::put(const VolumeRec& r) { return wrap(put_volume(db_, r)); }
Result<void, StoreError> Store::put(const TokenRec& r) { return wrap(put_token(db_, r)); }
Result<void, StoreError> Store::put(const ImageRec& r) {
  auto x = db_.run("INSERT OR REPLACE INTO images VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", r.id, r.name, r.description,
                   r.kernel, r.kernel_sha256, r.initrd, r.initrd_sha256, r.cmdline, r.root_content, r.root_sha256,
                   r.creation_date, static_cast<int64_t>(r.root_size_gib));
  if (!x) return make_error(StoreErrc::kDb, x.error().message());
  return {};
}
Result<void, StoreError> Store::put(const CardRec& r) {
  auto x = db_.run("INSERT OR REPLACE INTO cards VALUES (?,?,?)", r.name, r.pid, static_cast<int64_t>(r.starttime));
  if (!x) return make_error(StoreErrc::kDb, x.error().message());
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
                                        const std::optional<TokenRec>& token) {
  auto tx = db_.begin_immediate();
  if (!tx) return make_error(StoreErrc::kDb, tx.error().message());
  for (const auto& i : is)
    if (auto r = put_instance(db_, i); !r) return make_error(StoreErrc::kDb, r.error().message());
  for (const auto& v : vs)
    if (auto r = put_volume(db_, v); !r) return make_error(StoreErrc::kDb, r.error().message());
  if (token)
    if (auto r = put_token(db_, *token); !r) return make_error(StoreErrc::kDb, r.error().message());
  return wrap(tx->commit());
}

}  // namespace azote::controller
