// azote::sqlite against real database files in a fresh directory under /tmp:
// connection setup (WAL, 0600), migrations, binding round trips, error mapping,
// transactions, reopening from another process, and concurrent writers.
#include "sqlite/sqlite.hpp"
#include "base/temp_dir.hpp"

#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace {

using azote::sqlite::Db;
using azote::sqlite::SqliteErrc;
using azote::sqlite::Stmt;
using azote::TempDir;

// A fresh directory under /tmp, removed with everything in it.

// Sets the umask for one scope.
class ScopedUmask {
 public:
  explicit ScopedUmask(mode_t m) : old_(::umask(m)) {}
  ~ScopedUmask() { ::umask(old_); }
  ScopedUmask(const ScopedUmask&) = delete;
  ScopedUmask& operator=(const ScopedUmask&) = delete;

 private:
  mode_t old_;
};

mode_t file_mode(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return 0;
  return st.st_mode & 07777;
}

Db open_ok(const std::string& path, azote::sqlite::OpenOptions opts = {}) {
  auto db = Db::open(path, opts);
  EXPECT_TRUE(db.ok()) << (db.ok() ? "" : db.error().message());
  if (!db.ok()) std::abort();
  return std::move(db).value();
}

constexpr std::string_view kSchema[] = {
    "CREATE TABLE images (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, digest BLOB);",
    "CREATE TABLE instances (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
    "  image_id INTEGER NOT NULL REFERENCES images(id));"
    "CREATE INDEX instances_by_image ON instances(image_id);",
    "ALTER TABLE instances ADD COLUMN vcpus INTEGER NOT NULL DEFAULT 1;",
};

TEST(Sqlite, OpenCreatesWalDatabaseWithMode0600) {
  TempDir dir;
  const std::string path = dir.file("state.db");
  {
    ScopedUmask umask(0);  // would give 0644 if the library relied on SQLite's default
    Db db = open_ok(path);
    auto mode = db.query_one<std::string>("PRAGMA journal_mode");
    ASSERT_TRUE(mode.ok());
    EXPECT_EQ(mode->value_or(""), "wal");
    EXPECT_EQ(db.query_one<std::int64_t>("PRAGMA synchronous")->value_or(-1), 2);  // FULL
    EXPECT_EQ(db.query_one<std::int64_t>("PRAGMA foreign_keys")->value_or(-1), 1);
    ASSERT_TRUE(db.exec("CREATE TABLE t (x INTEGER)").ok());
    ASSERT_TRUE(db.run("INSERT INTO t VALUES (?)", 1).ok());
    EXPECT_EQ(file_mode(path), 0600u);
    EXPECT_EQ(file_mode(path + "-wal"), 0600u);
    EXPECT_EQ(file_mode(path + "-shm"), 0600u);
  }
  {
    ScopedUmask umask(0277);  // would give 0400: unwritable
    const std::string other = dir.file("other.db");
    Db db = open_ok(other);
    ASSERT_TRUE(db.exec("CREATE TABLE t (x INTEGER)").ok());
    EXPECT_EQ(file_mode(other), 0600u);
  }
}

TEST(Sqlite, OpenWithoutCreateRefusesMissingFile) {
  TempDir dir;
  const std::string path = dir.file("missing.db");
  auto db = Db::open(path, {.create = false});
  ASSERT_FALSE(db.ok());
  EXPECT_EQ(db.error().code, SqliteErrc::kOpen);
  EXPECT_NE(db.error().message().find(path), std::string::npos) << db.error().message();
  EXPECT_FALSE(std::filesystem::exists(path));

  EXPECT_EQ(Db::open(":memory:").error().code, SqliteErrc::kOpen);
  EXPECT_EQ(Db::open(dir.file("no/such/dir.db")).error().code, SqliteErrc::kOpen);
}

TEST(Sqlite, OpenRefusesAFileThatIsNotADatabase) {
  TempDir dir;
  const std::string path = dir.file("junk.db");
  {
    std::FILE* f = std::fopen(path.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs("this is not an SQLite database, just some text long enough to have a header...", f);
    std::fclose(f);
  }
  auto db = Db::open(path);
  ASSERT_FALSE(db.ok());
  EXPECT_EQ(db.error().code, SqliteErrc::kOpen);
  EXPECT_EQ(db.error().sqlite_code, SQLITE_NOTADB) << db.error().message();
}

TEST(Sqlite, MigrationsApplyInOrderAndAreIdempotent) {
  TempDir dir;
  const std::string path = dir.file("state.db");
  {
    Db db = open_ok(path);
    EXPECT_EQ(*db.user_version(), 0);
    // Two steps first, as an older program would.
    ASSERT_TRUE(db.migrate(std::span(kSchema).first(2)).ok());
    EXPECT_EQ(*db.user_version(), 2);
    ASSERT_TRUE(db.run("INSERT INTO images (name) VALUES (?)", "debian").ok());
    ASSERT_TRUE(db.run("INSERT INTO instances (name, image_id) VALUES (?, ?)", "vm1", db.last_insert_rowid()).ok());
  }
  for (int i = 0; i < 2; ++i) {
    Db db = open_ok(path);
    auto r = db.migrate(kSchema);
    ASSERT_TRUE(r.ok()) << r.error().message();
    EXPECT_EQ(*db.user_version(), 3);
    auto row = db.query_one<std::string, std::int64_t>("SELECT name, vcpus FROM instances");
    ASSERT_TRUE(row.ok()) << row.error().message();
    ASSERT_TRUE(row->has_value());
    EXPECT_EQ(std::get<0>(**row), "vm1");
    EXPECT_EQ(std::get<1>(**row), 1);  // the column step 3 added, applied once
  }
}

TEST(Sqlite, MigrationRefusesNewerSchema) {
  TempDir dir;
  const std::string path = dir.file("state.db");
  {
    Db db = open_ok(path);
    ASSERT_TRUE(db.migrate(kSchema).ok());
  }
  Db db = open_ok(path);
  auto r = db.migrate(std::span(kSchema).first(2));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, SqliteErrc::kSchema);
  EXPECT_EQ(r.error().message(), "database schema version 3 is newer than this program (2)");
  EXPECT_EQ(*db.user_version(), 3);
}

TEST(Sqlite, FailedMigrationStepLeavesNoTrace) {
  TempDir dir;
  Db db = open_ok(dir.file("state.db"));
  const std::string_view steps[] = {
      "CREATE TABLE a (x INTEGER);",
      "CREATE TABLE b (y INTEGER); INSERT INTO a VALUES (1); CREATE TABLE a (z INTEGER);",
  };
  auto r = db.migrate(steps);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, SqliteErrc::kPrepare);
  const std::string msg = r.error().message();
  EXPECT_NE(msg.find("migration step 2"), std::string::npos) << msg;
  EXPECT_NE(msg.find("CREATE TABLE a (z INTEGER)"), std::string::npos) << msg;
  EXPECT_EQ(*db.user_version(), 1);
  EXPECT_EQ(db.query_one<std::int64_t>("SELECT count(*) FROM a")->value_or(-1), 0);
  EXPECT_FALSE(db.prepare("SELECT * FROM b").ok());
}

TEST(Sqlite, BindingRoundTripsEveryType) {
  TempDir dir;
  Db db = open_ok(dir.file("state.db"));
  ASSERT_TRUE(db.exec("CREATE TABLE v (id INTEGER PRIMARY KEY, i INTEGER, r REAL, t TEXT, b BLOB, n)").ok());

  const std::string text = std::string("it's \"quoted\"; DROP TABLE v; --\0after NUL \xc3\xa9", 44);
  const std::vector<std::uint8_t> blob = {0x00, 0xff, 0x00, 0x27, 0x22, 0x00};
  struct Case {
    std::int64_t i;
    double r;
  };
  const Case cases[] = {{INT64_MIN, -1.5}, {INT64_MAX, 1e300}, {0, 0.0}};
  for (const auto& c : cases) {
    auto r = db.run("INSERT INTO v (i, r, t, b, n) VALUES (?, ?, ?, ?, ?)", c.i, c.r, text, blob, nullptr);
    ASSERT_TRUE(r.ok()) << r.error().message();
    EXPECT_EQ(*r, 1);
    auto st = db.query("SELECT i, r, t, b, n, typeof(t), typeof(b) FROM v WHERE id = ?", db.last_insert_rowid());
    ASSERT_TRUE(st.ok());
    ASSERT_TRUE(*st->step());
    EXPECT_EQ(st->int64(0), c.i);
    EXPECT_EQ(st->real(1), c.r);
    EXPECT_EQ(st->text(2), text);
    EXPECT_EQ(st->text(2).size(), 44u);
    EXPECT_EQ(st->blob(3), blob);
    EXPECT_TRUE(st->is_null(4));
    EXPECT_FALSE(st->is_null(3));
    EXPECT_EQ(st->text(5), "text");
    EXPECT_EQ(st->text(6), "blob");
    EXPECT_FALSE(*st->step());
  }

  // Empty text and blob stay empty values, not NULL; optional binds NULL or the value.
  ASSERT_TRUE(db.exec("DELETE FROM v").ok());
  const std::optional<std::int64_t> none;
  const std::optional<std::string> some = "x";
  ASSERT_TRUE(db.run("INSERT INTO v (id, t, b, i, n) VALUES (1, ?, ?, ?, ?)", std::string_view(),
                     std::span<const std::uint8_t>(), none, some)
                  .ok());
  auto row = db.query_one<std::optional<std::string>, std::optional<std::vector<std::uint8_t>>,
                          std::optional<std::int64_t>, std::optional<std::string>, std::string, std::string>(
      "SELECT t, b, i, n, typeof(t), typeof(b) FROM v");
  ASSERT_TRUE(row.ok() && row->has_value());
  const auto& [t, b, i, n, tt, tb] = **row;
  EXPECT_EQ(t, std::optional<std::string>(""));
  EXPECT_EQ(b, std::optional<std::vector<std::uint8_t>>(std::vector<std::uint8_t>{}));
  EXPECT_EQ(i, std::nullopt);
  EXPECT_EQ(n, std::optional<std::string>("x"));
  EXPECT_EQ(tt, "text");
  EXPECT_EQ(tb, "blob");

  // Other integer types; uint64 above INT64_MAX is refused rather than wrapped.
  ASSERT_TRUE(db.exec("DELETE FROM v").ok());
  ASSERT_TRUE(db.run("INSERT INTO v (id, i, r) VALUES (?, ?, ?)", 1, std::uint64_t{INT64_MAX}, true).ok());
  EXPECT_EQ(db.query_one<std::int64_t>("SELECT i FROM v")->value_or(0), INT64_MAX);
  EXPECT_EQ(db.query_one<bool>("SELECT r FROM v")->value_or(false), true);
  auto big = db.run("INSERT INTO v (i) VALUES (?)", std::uint64_t{INT64_MAX} + 1);
  ASSERT_FALSE(big.ok());
  EXPECT_EQ(big.error().code, SqliteErrc::kMisuse);
}

TEST(Sqlite, StatementsCanBeReusedAndIterated) {
  TempDir dir;
  Db db = open_ok(dir.file("state.db"));
  ASSERT_TRUE(db.exec("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER)").ok());
  auto ins = db.prepare("INSERT INTO t VALUES (?1, ?2)");
  ASSERT_TRUE(ins.ok());
  for (int i = 0; i < 5; ++i) {
    std::string key = "k";  // (not "k" + to_string: GCC 12 -Wrestrict false positive)
    key += std::to_string(i);
    ASSERT_TRUE(ins->bind_all(key, i * 10).ok());
    EXPECT_EQ(*ins->execute(), 1);
    ins->reset();
  }
  auto sel = db.query("SELECT k, v FROM t WHERE v >= ? ORDER BY v", 20);
  ASSERT_TRUE(sel.ok());
  std::vector<std::string> seen;
  ASSERT_TRUE(sel->for_each([&](const Stmt& row) { seen.push_back(row.text(0) + "=" + std::to_string(row.int64(1))); })
                  .ok());
  EXPECT_EQ(seen, (std::vector<std::string>{"k2=20", "k3=30", "k4=40"}));

  EXPECT_EQ(*db.run("UPDATE t SET v = v + 1 WHERE v < ?", 25), 3);
  EXPECT_EQ(db.changes(), 3);
  EXPECT_EQ(*db.run("DELETE FROM t WHERE k = ?", "nope"), 0);
  EXPECT_EQ(*db.run("CREATE TABLE u (x)"), 0);  // not the previous statement's count
  EXPECT_EQ(db.query_one<std::int64_t>("SELECT v FROM t WHERE k = ?", "none")->has_value(), false);
  auto id = db.query_one<std::string>("INSERT INTO t VALUES (?, ?) RETURNING k", "k9", 9);
  ASSERT_TRUE(id.ok());
  EXPECT_EQ(id->value_or(""), "k9");
}

TEST(Sqlite, MisuseIsReported) {
  TempDir dir;
  Db db = open_ok(dir.file("state.db"));
  ASSERT_TRUE(db.exec("CREATE TABLE t (x INTEGER)").ok());
  EXPECT_EQ(db.run("INSERT INTO t VALUES (?)").error().code, SqliteErrc::kMisuse);
  auto extra = db.run("INSERT INTO t VALUES (?)", 1, 2);
  ASSERT_FALSE(extra.ok());
  EXPECT_NE(extra.error().message().find("1 parameters, 2 values"), std::string::npos) << extra.error().message();
  EXPECT_EQ(db.prepare("SELECT 1; SELECT 2").error().code, SqliteErrc::kMisuse);
  EXPECT_TRUE(db.prepare("SELECT 1; -- trailing comment\n;").ok());
  EXPECT_EQ(db.prepare("  -- nothing\n").error().code, SqliteErrc::kMisuse);
  ASSERT_TRUE(db.run("INSERT INTO t VALUES (1), (2)").ok());
  EXPECT_EQ(db.query_one<std::int64_t>("SELECT x FROM t").error().code, SqliteErrc::kMisuse);
  EXPECT_EQ(db.query_one<std::int64_t>("SELECT x, x FROM t LIMIT 1").error().code, SqliteErrc::kMisuse);
  auto st = db.prepare("SELECT ?");
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->bind(2, 1).error().code, SqliteErrc::kMisuse);
}

TEST(Sqlite, ConstraintViolationsMapToKConstraint) {
  TempDir dir;
  Db db = open_ok(dir.file("state.db"));
  ASSERT_TRUE(db.migrate(kSchema).ok());
  ASSERT_TRUE(db.run("INSERT INTO images (name) VALUES (?)", "debian").ok());

  auto dup = db.run("INSERT INTO images (name) VALUES (?)", "debian");
  ASSERT_FALSE(dup.ok());
  EXPECT_EQ(dup.error().code, SqliteErrc::kConstraint);
  EXPECT_EQ(dup.error().sqlite_code, SQLITE_CONSTRAINT_UNIQUE);
  EXPECT_TRUE(azote::sqlite::is_unique_violation(dup.error()));
  EXPECT_NE(dup.error().message().find("UNIQUE constraint failed: images.name"), std::string::npos)
      << dup.error().message();

  auto pk = db.run("INSERT INTO images (id, name) VALUES (1, ?)", "other");
  ASSERT_FALSE(pk.ok());
  EXPECT_TRUE(azote::sqlite::is_unique_violation(pk.error())) << pk.error().message();

  auto fk = db.run("INSERT INTO instances (name, image_id) VALUES (?, ?)", "vm", 42);  // foreign_keys=ON
  ASSERT_FALSE(fk.ok());
  EXPECT_EQ(fk.error().code, SqliteErrc::kConstraint);
  EXPECT_EQ(fk.error().sqlite_code, SQLITE_CONSTRAINT_FOREIGNKEY);
  EXPECT_FALSE(azote::sqlite::is_unique_violation(fk.error()));

  auto notnull = db.run("INSERT INTO images (name) VALUES (?)", nullptr);
  ASSERT_FALSE(notnull.ok());
  EXPECT_EQ(notnull.error().code, SqliteErrc::kConstraint);
  EXPECT_FALSE(azote::sqlite::is_unique_violation(notnull.error()));
}

TEST(Sqlite, TransactionRollsBackUnlessCommitted) {
  TempDir dir;
  Db db = open_ok(dir.file("state.db"));
  ASSERT_TRUE(db.exec("CREATE TABLE t (x INTEGER)").ok());
  {
    auto tx = db.begin_immediate();
    ASSERT_TRUE(tx.ok());
    ASSERT_TRUE(db.run("INSERT INTO t VALUES (?)", 1).ok());
    EXPECT_EQ(db.query_one<std::int64_t>("SELECT count(*) FROM t")->value_or(-1), 1);
  }
  EXPECT_EQ(db.query_one<std::int64_t>("SELECT count(*) FROM t")->value_or(-1), 0);
  {
    auto tx = db.begin_immediate();
    ASSERT_TRUE(tx.ok());
    ASSERT_TRUE(db.run("INSERT INTO t VALUES (?)", 2).ok());
    ASSERT_TRUE(tx->commit().ok());
    EXPECT_EQ(tx->commit().error().code, SqliteErrc::kMisuse);  // already committed
  }
  EXPECT_EQ(db.query_one<std::int64_t>("SELECT x FROM t")->value_or(-1), 2);

  // A failed statement inside a transaction does not end it; the rollback undoes all.
  {
    auto tx = db.begin_immediate();
    ASSERT_TRUE(tx.ok());
    ASSERT_TRUE(db.run("INSERT INTO t VALUES (3)").ok());
    EXPECT_FALSE(db.run("INSERT INTO nowhere VALUES (3)").ok());
    EXPECT_FALSE(db.begin_immediate().ok());  // no nesting
  }
  EXPECT_EQ(db.query_one<std::int64_t>("SELECT count(*) FROM t")->value_or(-1), 1);
}

// Runs fn in a forked child process (which has no SQLite connections open) and
// returns its exit status, or -1.
template <class F>
int in_child(F fn) {
  pid_t pid = ::fork();
  if (pid < 0) return -1;
  if (pid == 0) ::_exit(fn());
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) return -1;
  return WEXITSTATUS(status);
}

TEST(Sqlite, CommittedDataSurvivesReopenInAnotherProcess) {
  TempDir dir;
  const std::string path = dir.file("state.db");
  {
    Db db = open_ok(path);
    ASSERT_TRUE(db.migrate(kSchema).ok());
    auto tx = db.begin_immediate();
    ASSERT_TRUE(tx.ok());
    ASSERT_TRUE(db.run("INSERT INTO images (name) VALUES (?)", "from-parent").ok());
    ASSERT_TRUE(tx->commit().ok());
  }
  // Another process reopens and reads it, then commits a row and dies without
  // closing its connection (no destructors, the -wal file left behind).
  int rc = in_child([&path] {
    auto db = Db::open(path, {.create = false});
    if (!db.ok() || !db->migrate(kSchema).ok()) return 10;
    auto n = db->query_one<std::int64_t>("SELECT count(*) FROM images WHERE name = ?", "from-parent");
    if (!n.ok() || n->value_or(0) != 1) return 11;
    auto tx = db->begin_immediate();
    if (!tx.ok() || !db->run("INSERT INTO images (name) VALUES (?)", "from-child").ok() || !tx->commit().ok()) return 12;
    ::_exit(0);
  });
  ASSERT_EQ(rc, 0);
  Db db = open_ok(path, {.create = false});
  EXPECT_EQ(*db.user_version(), 3);
  EXPECT_EQ(db.query_one<std::int64_t>("SELECT count(*) FROM images")->value_or(-1), 2);
  EXPECT_EQ(db.query_one<std::int64_t>("SELECT id FROM images WHERE name = ?", "from-child")->value_or(-1), 2);
}

TEST(Sqlite, TwoConnectionsWriteConcurrently) {
  TempDir dir;
  const std::string path = dir.file("state.db");
  {
    Db db = open_ok(path);
    ASSERT_TRUE(db.exec("CREATE TABLE t (writer INTEGER, n INTEGER, UNIQUE (writer, n))").ok());
  }
  constexpr int kRows = 200;
  std::atomic<int> failures{0};
  auto writer = [&](int id) {
    auto db = Db::open(path);
    if (!db.ok()) {
      ++failures;
      return;
    }
    for (int n = 0; n < kRows; ++n) {
      if (n % 2 == 0) {  // plain autocommit statements and explicit transactions
        if (!db->run("INSERT INTO t VALUES (?, ?)", id, n).ok()) ++failures;
        continue;
      }
      auto tx = db->begin_immediate();
      if (!tx.ok() || !db->run("INSERT INTO t VALUES (?, ?)", id, n).ok() || !tx->commit().ok()) ++failures;
    }
  };
  std::thread a(writer, 1);
  std::thread b(writer, 2);
  a.join();
  b.join();
  EXPECT_EQ(failures.load(), 0);
  Db db = open_ok(path);
  EXPECT_EQ(db.query_one<std::int64_t>("SELECT count(*) FROM t")->value_or(-1), 2 * kRows);
}

TEST(Sqlite, ThreadsSharingOneDbGetIsolatedTransactions) {
  TempDir dir;
  Db db = open_ok(dir.file("state.db"));
  ASSERT_TRUE(db.exec("CREATE TABLE c (id INTEGER PRIMARY KEY, v INTEGER); INSERT INTO c VALUES (1, 0);").ok());
  constexpr int kIncrements = 300;
  std::atomic<int> failures{0};
  auto worker = [&] {
    for (int i = 0; i < kIncrements; ++i) {
      // Read-modify-write: a lost update would show if another thread's statements
      // could run inside this transaction.
      auto tx = db.begin_immediate();
      if (!tx.ok()) {
        ++failures;
        continue;
      }
      auto v = db.query_one<std::int64_t>("SELECT v FROM c WHERE id = 1");
      std::this_thread::yield();
      if (!v.ok() || !db.run("UPDATE c SET v = ? WHERE id = 1", v->value_or(0) + 1).ok() || !tx->commit().ok()) {
        ++failures;
      }
    }
  };
  std::thread a(worker);
  std::thread b(worker);
  a.join();
  b.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(db.query_one<std::int64_t>("SELECT v FROM c")->value_or(-1), 2 * kIncrements);
}

TEST(Sqlite, LockHeldPastBusyTimeoutIsKBusy) {
  TempDir dir;
  const std::string path = dir.file("state.db");
  Db holder = open_ok(path);
  ASSERT_TRUE(holder.exec("CREATE TABLE t (x INTEGER)").ok());
  Db waiter = open_ok(path, {.busy_timeout_ms = 50});
  auto tx = holder.begin_immediate();
  ASSERT_TRUE(tx.ok());
  auto r = waiter.run("INSERT INTO t VALUES (1)");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, SqliteErrc::kBusy) << r.error().message();
  EXPECT_EQ(waiter.begin_immediate().error().code, SqliteErrc::kBusy);
  // WAL: the reader is not blocked by the writer.
  EXPECT_EQ(waiter.query_one<std::int64_t>("SELECT count(*) FROM t")->value_or(-1), 0);
}

TEST(Sqlite, SyntaxErrorNamesTheStatement) {
  TempDir dir;
  Db db = open_ok(dir.file("state.db"));
  auto st = db.prepare("SELEC name FROM images WHERE id = ?");
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, SqliteErrc::kPrepare);
  EXPECT_EQ(st.error().sqlite_code, SQLITE_ERROR);
  const std::string msg = st.error().message();
  EXPECT_NE(msg.find("syntax error"), std::string::npos) << msg;
  EXPECT_NE(msg.find("\"SELEC name FROM images WHERE id = ?\""), std::string::npos) << msg;

  // exec names the failing statement of a script; long SQL is cut to 80 bytes.
  auto ex = db.exec("CREATE TABLE ok (x);\nCREATE TABLE ok (y);");
  ASSERT_FALSE(ex.ok());
  EXPECT_NE(ex.error().message().find("table ok already exists"), std::string::npos) << ex.error().message();
  EXPECT_NE(ex.error().message().find("in \"CREATE TABLE ok (y);\""), std::string::npos) << ex.error().message();

  const std::string long_sql = "SELECT " + std::string(200, 'x') + " FROM nowhere";
  auto lg = db.prepare(long_sql);
  ASSERT_FALSE(lg.ok());
  const std::string shown = "\"SELECT " + std::string(73, 'x') + "...\"";
  EXPECT_NE(lg.error().message().find(shown), std::string::npos) << lg.error().message();
}

}  // namespace
