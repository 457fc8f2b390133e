#include "sqlite/sqlite.hpp"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include <cerrno>
#include <climits>

#include "base/unique_fd.hpp"

namespace azote::sqlite {
namespace {

// SQLITE_TRANSIENT without the C-style cast: SQLite copies the value before the
// bind call returns, so callers may bind temporaries.
const sqlite3_destructor_type kCopy = reinterpret_cast<sqlite3_destructor_type>(std::intptr_t{-1});

// Holds a connection's mutex (recursive under SQLITE_OPEN_FULLMUTEX) so that a call
// and the sqlite3_errmsg() describing its failure are not split by another thread.
class DbLock {
 public:
  explicit DbLock(sqlite3* db) : m_(db != nullptr ? sqlite3_db_mutex(db) : nullptr) { sqlite3_mutex_enter(m_); }
  ~DbLock() { sqlite3_mutex_leave(m_); }
  DbLock(const DbLock&) = delete;
  DbLock& operator=(const DbLock&) = delete;

 private:
  sqlite3_mutex* m_;
};

// The statement for an error message: whitespace runs folded, at most 80 bytes
// (never cutting a UTF-8 sequence), "..." when shortened.
std::string snippet(std::string_view sql) {
  constexpr std::size_t kMax = 80;
  std::string out;
  bool space = false;
  for (char c : sql) {
    bool ws = c == ' ' || c == '\n' || c == '\t' || c == '\r' || c == '\f' || c == '\v';
    if (ws) {
      space = !out.empty();
      continue;
    }
    if (space) out += ' ';
    space = false;
    out += c;
    if (out.size() > kMax) break;
  }
  if (out.size() <= kMax) return out;
  std::size_t cut = kMax;
  while (cut > 0 && (static_cast<unsigned char>(out[cut]) & 0xc0) == 0x80) --cut;
  out.resize(cut);
  return out + "...";
}

SqliteErrc classify(int rc, SqliteErrc fallback) {
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return SqliteErrc::kBusy;
    case SQLITE_CONSTRAINT:
      return SqliteErrc::kConstraint;
    case SQLITE_MISUSE:
    case SQLITE_RANGE:
      return SqliteErrc::kMisuse;
    default:
      return fallback;
  }
}

std::string with_sql(std::string what, std::string_view sql) {
  if (sql.empty()) return what;
  return what + " in \"" + snippet(sql) + "\"";
}

// An error SQLite reported with `rc` on `db`. Call with the DbLock held.
Unexpected<SqliteError> sqlite_error(sqlite3* db, int rc, std::string_view sql, SqliteErrc fallback,
                                     const std::string& prefix = {}) {
  std::string msg = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  int primary = rc & 0xff;
  int os_errno = 0;
  if (db != nullptr && (primary == SQLITE_CANTOPEN || primary == SQLITE_IOERR)) os_errno = sqlite3_system_errno(db);
  std::string context = with_sql(prefix + msg + " (sqlite " + std::to_string(rc) + ")", sql);
  return Unexpected{SqliteError{classify(rc, fallback), os_errno, std::move(context), rc}};
}

// An error found by this wrapper rather than by SQLite.
Unexpected<SqliteError> own_error(SqliteErrc code, std::string what, std::string_view sql = {}) {
  return Unexpected{SqliteError{code, 0, with_sql(std::move(what), sql), 0}};
}

std::string_view stmt_sql(sqlite3_stmt* st) {
  const char* s = st != nullptr ? sqlite3_sql(st) : nullptr;
  return s != nullptr ? std::string_view(s) : std::string_view();
}

bool only_space(const char* p, const char* end) {
  for (; p < end; ++p) {
    if (*p != ' ' && *p != '\n' && *p != '\t' && *p != '\r' && *p != '\f' && *p != '\v') return false;
  }
  return true;
}

// Compiles the first statement of [p, end); *out is null when it holds only
// comments, semicolons or whitespace.
SqliteResult<const char*> prepare_one(sqlite3* db, const char* p, const char* end, sqlite3_stmt** out) {
  if (end - p > INT_MAX) return own_error(SqliteErrc::kMisuse, "SQL text too long");
  const char* tail = end;
  DbLock lock(db);
  int rc = sqlite3_prepare_v2(db, p, static_cast<int>(end - p), out, &tail);
  if (rc != SQLITE_OK) return sqlite_error(db, rc, std::string_view(p, static_cast<std::size_t>(end - p)), SqliteErrc::kPrepare);
  return tail;
}

// Steps `st` until it is done. Returns the number of rows it changed (including
// changes made by triggers and foreign key actions).
SqliteResult<int> run_to_done(sqlite3_stmt* st) {
  if (st == nullptr) return own_error(SqliteErrc::kMisuse, "statement is not prepared");
  sqlite3* db = sqlite3_db_handle(st);
  DbLock lock(db);
  sqlite3_int64 before = sqlite3_total_changes64(db);
  for (;;) {
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) continue;
    if (rc == SQLITE_DONE) break;
    auto err = sqlite_error(db, rc, stmt_sql(st), SqliteErrc::kStep);
    sqlite3_reset(st);
    return err;
  }
  return static_cast<int>(sqlite3_total_changes64(db) - before);
}

// Runs every statement of `sql` in turn; an error names the failing statement.
SqliteResult<void> exec_on(sqlite3* db, std::string_view sql) {
  const char* p = sql.data();
  const char* end = p + sql.size();
  while (p < end && !only_space(p, end)) {
    sqlite3_stmt* raw = nullptr;
    AZOTE_TRY(tail, prepare_one(db, p, end, &raw));
    std::unique_ptr<sqlite3_stmt, detail::StmtFinalize> st(raw);
    if (st) AZOTE_TRYV(run_to_done(st.get()));
    if (tail == p) break;
    p = tail;
  }
  return {};
}

}  // namespace

bool is_unique_violation(const SqliteError& e) {
  return e.code == SqliteErrc::kConstraint &&
         (e.sqlite_code == SQLITE_CONSTRAINT_UNIQUE || e.sqlite_code == SQLITE_CONSTRAINT_PRIMARYKEY);
}

namespace detail {
void DbClose::operator()(sqlite3* db) const { sqlite3_close_v2(db); }
void StmtFinalize::operator()(sqlite3_stmt* st) const { sqlite3_finalize(st); }
}  // namespace detail

// ---- Stmt ------------------------------------------------------------------

namespace {

// Runs one sqlite3_bind_* call under the connection's lock.
template <class Call>
SqliteResult<void> bind_with(sqlite3_stmt* st, int idx, Call call) {
  if (st == nullptr) return own_error(SqliteErrc::kMisuse, "statement is not prepared");
  sqlite3* db = sqlite3_db_handle(st);
  DbLock lock(db);
  int rc = call(st);
  if (rc == SQLITE_OK) return {};
  return sqlite_error(db, rc, stmt_sql(st), SqliteErrc::kMisuse, "bind ?" + std::to_string(idx) + ": ");
}

}  // namespace

SqliteResult<void> Stmt::bind(int idx, std::int64_t v) {
  return bind_with(st_.get(), idx, [&](sqlite3_stmt* st) { return sqlite3_bind_int64(st, idx, v); });
}

SqliteResult<void> Stmt::bind(int idx, double v) {
  return bind_with(st_.get(), idx, [&](sqlite3_stmt* st) { return sqlite3_bind_double(st, idx, v); });
}

SqliteResult<void> Stmt::bind(int idx, std::string_view text) {
  // A null data pointer would bind NULL; an empty string must stay an empty string.
  const char* p = text.data() != nullptr ? text.data() : "";
  return bind_with(st_.get(), idx, [&](sqlite3_stmt* st) {
    return sqlite3_bind_text64(st, idx, p, text.size(), kCopy, SQLITE_UTF8);
  });
}

SqliteResult<void> Stmt::bind(int idx, std::span<const std::uint8_t> blob) {
  // Likewise a null pointer would bind NULL instead of an empty blob.
  static const std::uint8_t kEmpty = 0;
  const std::uint8_t* p = blob.data() != nullptr ? blob.data() : &kEmpty;
  return bind_with(st_.get(), idx, [&](sqlite3_stmt* st) { return sqlite3_bind_blob64(st, idx, p, blob.size(), kCopy); });
}

SqliteResult<void> Stmt::bind(int idx, std::nullptr_t) {
  return bind_with(st_.get(), idx, [&](sqlite3_stmt* st) { return sqlite3_bind_null(st, idx); });
}

SqliteResult<void> Stmt::out_of_range(int idx) const {
  return own_error(SqliteErrc::kMisuse, "bind ?" + std::to_string(idx) + ": integer above INT64_MAX",
                   stmt_sql(st_.get()));
}

SqliteResult<void> Stmt::check_parameter_count(int n) const {
  if (!st_) return own_error(SqliteErrc::kMisuse, "statement is not prepared");
  int want = sqlite3_bind_parameter_count(st_.get());
  if (want == n) return {};
  return own_error(SqliteErrc::kMisuse,
                   "statement has " + std::to_string(want) + " parameters, " + std::to_string(n) + " values given",
                   stmt_sql(st_.get()));
}

SqliteResult<void> Stmt::check_column_count(int n) const {
  int have = column_count();
  if (have == n) return {};
  return own_error(SqliteErrc::kMisuse,
                   "query returns " + std::to_string(have) + " columns, " + std::to_string(n) + " types given",
                   stmt_sql(st_.get()));
}

Unexpected<SqliteError> Stmt::too_many_rows() const {
  return own_error(SqliteErrc::kMisuse, "query_one: more than one row", stmt_sql(st_.get()));
}

SqliteResult<bool> Stmt::step() {
  if (!st_) return own_error(SqliteErrc::kMisuse, "statement is not prepared");
  sqlite3* db = sqlite3_db_handle(st_.get());
  DbLock lock(db);
  int rc = sqlite3_step(st_.get());
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  auto err = sqlite_error(db, rc, stmt_sql(st_.get()), SqliteErrc::kStep);
  sqlite3_reset(st_.get());
  return err;
}

SqliteResult<int> Stmt::execute() { return run_to_done(st_.get()); }

void Stmt::reset() {
  if (!st_) return;
  sqlite3_reset(st_.get());
  sqlite3_clear_bindings(st_.get());
}

int Stmt::column_count() const { return st_ ? sqlite3_column_count(st_.get()) : 0; }

bool Stmt::is_null(int col) const { return sqlite3_column_type(st_.get(), col) == SQLITE_NULL; }

std::int64_t Stmt::int64(int col) const { return sqlite3_column_int64(st_.get(), col); }

double Stmt::real(int col) const { return sqlite3_column_double(st_.get(), col); }

std::string Stmt::text(int col) const {
  // sqlite3_column_text first, then _bytes: the length of the UTF-8 form.
  const unsigned char* p = sqlite3_column_text(st_.get(), col);
  int n = sqlite3_column_bytes(st_.get(), col);
  if (p == nullptr || n <= 0) return {};
  return std::string(reinterpret_cast<const char*>(p), static_cast<std::size_t>(n));
}

std::vector<std::uint8_t> Stmt::blob(int col) const {
  const auto* p = static_cast<const std::uint8_t*>(sqlite3_column_blob(st_.get(), col));
  int n = sqlite3_column_bytes(st_.get(), col);
  if (p == nullptr || n <= 0) return {};
  return std::vector<std::uint8_t>(p, p + n);
}

std::string Stmt::sql() const { return std::string(stmt_sql(st_.get())); }

// ---- Transaction -----------------------------------------------------------

Transaction::~Transaction() {
  if (db_ == nullptr) return;
  // An error such as SQLITE_FULL may already have rolled the transaction back.
  if (sqlite3_get_autocommit(db_) == 0) (void)exec_on(db_, "ROLLBACK");
  sqlite3_mutex_leave(sqlite3_db_mutex(db_));
}

SqliteResult<void> Transaction::commit() {
  if (db_ == nullptr) return own_error(SqliteErrc::kMisuse, "commit: transaction is not open");
  AZOTE_TRYV(exec_on(db_, "COMMIT"));
  sqlite3_mutex_leave(sqlite3_db_mutex(std::exchange(db_, nullptr)));
  return {};
}

// ---- Db --------------------------------------------------------------------

SqliteResult<Db> Db::open(const std::string& path, const OpenOptions& opts) {
  if (path.empty() || path == ":memory:") return own_error(SqliteErrc::kOpen, "open: \"" + path + "\" is not a file path");
  const std::string where = "open " + path + ": ";

  if (opts.create) {
    // Create the file ourselves with exactly 0600 (whatever the umask); SQLite
    // takes an empty file for an empty database and gives -wal/-shm the same mode.
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (fd) {
      if (::fchmod(fd.get(), 0600) != 0) return errno_error(SqliteErrc::kOpen, "chmod 0600 " + path);
    } else if (errno != EEXIST) {
      return errno_error(SqliteErrc::kOpen, "create " + path);
    }
  }

  sqlite3* raw = nullptr;
  int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX | (opts.create ? SQLITE_OPEN_CREATE : 0);
  int rc = sqlite3_open_v2(path.c_str(), &raw, flags, nullptr);
  Db db(raw);  // closes the handle on every path, including a failed open
  if (rc != SQLITE_OK) {
    DbLock lock(raw);
    return sqlite_error(raw, rc, {}, SqliteErrc::kOpen, where);
  }
  sqlite3_extended_result_codes(raw, 1);
  sqlite3_busy_timeout(raw, opts.busy_timeout_ms);

  // Setup failures (not a database, locked, WAL refused) all report kOpen.
  auto as_open = [&where](SqliteError e) {
    e.code = SqliteErrc::kOpen;
    e.context = where + e.context;
    return Unexpected{std::move(e)};
  };
  auto mode = db.query_one<std::string>("PRAGMA journal_mode=WAL");
  if (!mode) return as_open(std::move(mode).error());
  if (!mode->has_value() || **mode != "wal") {
    return own_error(SqliteErrc::kOpen, where + "journal_mode=WAL not accepted (got '" + mode->value_or("") + "')");
  }
  if (auto r = db.exec("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON"); !r) return as_open(std::move(r).error());
  auto sync = db.query_one<std::int64_t>("PRAGMA synchronous");
  if (!sync) return as_open(std::move(sync).error());
  auto fk = db.query_one<std::int64_t>("PRAGMA foreign_keys");
  if (!fk) return as_open(std::move(fk).error());
  if (sync->value_or(-1) != 2 || fk->value_or(-1) != 1) {
    return own_error(SqliteErrc::kOpen, where + "synchronous=FULL or foreign_keys=ON not accepted");
  }
  return db;
}

SqliteResult<void> Db::exec(std::string_view sql) { return exec_on(db_.get(), sql); }

SqliteResult<Stmt> Db::prepare(std::string_view sql) {
  const char* end = sql.data() + sql.size();
  sqlite3_stmt* raw = nullptr;
  AZOTE_TRY(tail, prepare_one(db_.get(), sql.data(), end, &raw));
  Stmt st(raw);
  if (!st.st_) return own_error(SqliteErrc::kMisuse, "no SQL statement", sql);
  // Anything after the first statement other than comments and ';' is a mistake
  // that sqlite3_prepare would silently ignore.
  while (tail < end && !only_space(tail, end)) {
    sqlite3_stmt* extra = nullptr;
    auto next = prepare_one(db_.get(), tail, end, &extra);
    std::unique_ptr<sqlite3_stmt, detail::StmtFinalize> guard(extra);
    if (!next || extra != nullptr || *next == tail) {
      return own_error(SqliteErrc::kMisuse, "more than one statement (use exec)", sql);
    }
    tail = *next;
  }
  return st;
}

SqliteResult<Transaction> Db::begin_immediate() {
  sqlite3* db = db_.get();
  // Held until commit or rollback: other threads sharing this Db wait for it.
  sqlite3_mutex_enter(sqlite3_db_mutex(db));
  if (auto r = exec_on(db, "BEGIN IMMEDIATE"); !r) {
    sqlite3_mutex_leave(sqlite3_db_mutex(db));
    return Unexpected{std::move(r).error()};
  }
  return Transaction(db);
}

SqliteResult<std::int64_t> Db::user_version() {
  AZOTE_TRY(v, query_one<std::int64_t>("PRAGMA user_version"));
  return v.value_or(0);
}

SqliteResult<void> Db::migrate(std::span<const std::string_view> steps) {
  for (;;) {
    AZOTE_TRY(tx, begin_immediate());
    AZOTE_TRY(version, user_version());
    if (version < 0) return own_error(SqliteErrc::kSchema, "database schema version " + std::to_string(version) + " is invalid");
    if (static_cast<std::uint64_t>(version) > steps.size()) {
      return own_error(SqliteErrc::kSchema, "database schema version " + std::to_string(version) +
                                                " is newer than this program (" + std::to_string(steps.size()) +
                                                ")");
    }
    if (static_cast<std::size_t>(version) == steps.size()) return tx.commit();
    const std::string step_name = "migration step " + std::to_string(version + 1) + ": ";
    if (auto r = exec(steps[static_cast<std::size_t>(version)]); !r) {
      SqliteError e = std::move(r).error();
      e.context = step_name + e.context;
      return Unexpected{std::move(e)};
    }
    // PRAGMA takes no parameters; the value is an integer this function computed.
    AZOTE_TRYV(exec("PRAGMA user_version = " + std::to_string(version + 1)));
    AZOTE_TRYV(tx.commit());
  }
}

std::int64_t Db::last_insert_rowid() const { return sqlite3_last_insert_rowid(db_.get()); }

int Db::changes() const { return sqlite3_changes(db_.get()); }

}  // namespace azote::sqlite
