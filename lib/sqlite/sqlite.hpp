// A thin RAII wrapper over libsqlite3 for azote-controller's state.
//
//   Db          one connection (sqlite3_open_v2, SQLITE_OPEN_FULLMUTEX), WAL,
//               synchronous=FULL, foreign_keys=ON, a busy timeout; new files are 0600.
//   Stmt        one prepared statement (move-only); values are bound, never spliced
//               into SQL text.
//   Transaction BEGIN IMMEDIATE ... COMMIT; rolls back in its destructor unless committed.
//
// Threads: a Db may be shared by several threads. Each call holds the connection's
// (recursive) mutex while it runs and while it reads the error message, and a
// Transaction holds that mutex from BEGIN to COMMIT/rollback, so other threads'
// statements on the same Db wait instead of landing inside someone else's
// transaction. Hence a Transaction must be committed or destroyed on the thread that
// began it, and must not be kept open while waiting on another thread that uses the
// same Db. Separate Db objects (in this or other processes) on one file are
// serialised by SQLite's file locks and the busy timeout. A Stmt is used by one
// thread at a time. Stmt and Transaction must not outlive the Db they came from.
//
// Indices: bind() parameters count from 1 (as in SQL's ?1), columns from 0.
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "base/error.hpp"

struct sqlite3;
struct sqlite3_stmt;

namespace azote::sqlite {

enum class SqliteErrc {
  kOpen = 1,    // opening the file or setting up the connection (WAL, pragmas) failed
  kPrepare,     // the SQL does not compile (syntax error, unknown table or column)
  kStep,        // executing a statement failed (I/O error, full disk, ...)
  kBusy,        // SQLITE_BUSY / SQLITE_LOCKED after the busy timeout
  kConstraint,  // SQLITE_CONSTRAINT_*: UNIQUE, PRIMARY KEY, FOREIGN KEY, NOT NULL, CHECK
  kMisuse,      // a caller bug: bad parameter index or count, several statements, ...
  kSchema,      // the database's schema version is newer than this program's migrations
};

}  // namespace azote::sqlite

namespace azote {

// Error<SqliteErrc> is Error<Code> plus the SQLite extended result code.
template <>
struct Error<sqlite::SqliteErrc> {
  sqlite::SqliteErrc code{};
  int errnum = 0;       // the OS errno behind an open or I/O failure, else 0
  std::string context;  // sqlite3_errmsg, the result code and the statement's first 80 chars
  int sqlite_code = 0;  // extended result code, e.g. SQLITE_CONSTRAINT_UNIQUE (2067); 0 if none

  std::string message() const {
    if (errnum == 0) return context;
    return context + ": " + std::strerror(errnum);
  }
};

}  // namespace azote

namespace azote::sqlite {

using SqliteError = Error<SqliteErrc>;
template <class T>
using SqliteResult = Result<T, SqliteError>;

// A UNIQUE or PRIMARY KEY violation: what callers report as "already exists".
bool is_unique_violation(const SqliteError& e);

namespace detail {
struct DbClose {
  void operator()(sqlite3* db) const;
};
struct StmtFinalize {
  void operator()(sqlite3_stmt* st) const;
};
template <class T>
struct IsOptional : std::false_type {};
template <class T>
struct IsOptional<std::optional<T>> : std::true_type {};
}  // namespace detail

class Stmt {
 public:
  Stmt() = default;
  Stmt(Stmt&&) noexcept = default;
  Stmt& operator=(Stmt&&) noexcept = default;

  // Parameters count from 1. Text and blobs are copied, so temporaries are fine.
  // An empty string or blob binds as an empty value, not NULL.
  SqliteResult<void> bind(int idx, std::int64_t v);
  SqliteResult<void> bind(int idx, double v);
  SqliteResult<void> bind(int idx, std::string_view text);
  SqliteResult<void> bind(int idx, std::span<const std::uint8_t> blob);
  SqliteResult<void> bind(int idx, std::nullptr_t);
  SqliteResult<void> bind(int idx, std::nullopt_t) { return bind(idx, nullptr); }
  // Any other integer (int, bool, uint64_t...); values above INT64_MAX are refused.
  template <std::integral T>
    requires(!std::same_as<T, std::int64_t>)
  SqliteResult<void> bind(int idx, T v) {
    if constexpr (std::is_unsigned_v<T> && sizeof(T) >= sizeof(std::int64_t)) {
      if (v > static_cast<T>(std::numeric_limits<std::int64_t>::max())) return out_of_range(idx);
    }
    return bind(idx, static_cast<std::int64_t>(v));
  }
  // NULL when empty.
  template <class T>
  SqliteResult<void> bind(int idx, const std::optional<T>& v) {
    if (!v) return bind(idx, nullptr);
    return bind(idx, *v);
  }
  // Binds args to ?1..?N after checking the statement has exactly N parameters.
  template <class... Args>
  SqliteResult<void> bind_all(const Args&... args) {
    AZOTE_TRYV(check_parameter_count(static_cast<int>(sizeof...(Args))));
    int idx = 0;
    SqliteResult<void> r;
    (void)(... && (r = bind(++idx, args), r.ok()));  // stops at the first failure
    return r;
  }

  // Runs one step: true if a row is available, false when the statement is done.
  SqliteResult<bool> step();
  // Steps until done (discarding any rows) and returns sqlite3_changes() for it.
  SqliteResult<int> execute();
  // Rewinds the statement and clears its bindings so it can be run again.
  void reset();

  // Columns of the current row, counted from 0. SQLite converts between types as
  // usual (NULL reads as 0 / "" / {}); check is_null() where NULL matters.
  int column_count() const;
  bool is_null(int col) const;
  std::int64_t int64(int col) const;
  double real(int col) const;
  std::string text(int col) const;
  std::vector<std::uint8_t> blob(int col) const;
  // Typed read: int64_t, bool, double, std::string, std::vector<uint8_t>, or
  // std::optional of one of these (nullopt for NULL).
  template <class T>
  T get(int col) const {
    if constexpr (detail::IsOptional<T>::value) {
      if (is_null(col)) return std::nullopt;
      return get<typename T::value_type>(col);
    } else if constexpr (std::is_same_v<T, std::int64_t>) {
      return int64(col);
    } else if constexpr (std::is_same_v<T, bool>) {
      return int64(col) != 0;
    } else if constexpr (std::is_same_v<T, double>) {
      return real(col);
    } else if constexpr (std::is_same_v<T, std::string>) {
      return text(col);
    } else if constexpr (std::is_same_v<T, std::vector<std::uint8_t>>) {
      return blob(col);
    } else {
      static_assert(sizeof(T) == 0, "unsupported column type");
    }
  }

  // Steps through every row, calling fn(const Stmt&) for each.
  template <class F>
  SqliteResult<void> for_each(F&& fn) {
    for (;;) {
      AZOTE_TRY(row, step());
      if (!row) return {};
      fn(static_cast<const Stmt&>(*this));
    }
  }

  // The statement's SQL text.
  std::string sql() const;

 private:
  friend class Db;
  explicit Stmt(sqlite3_stmt* st) : st_(st) {}
  SqliteResult<void> check_parameter_count(int n) const;
  SqliteResult<void> out_of_range(int idx) const;
  SqliteResult<void> check_column_count(int n) const;
  Unexpected<SqliteError> too_many_rows() const;

  std::unique_ptr<sqlite3_stmt, detail::StmtFinalize> st_;
};

// BEGIN IMMEDIATE ... COMMIT. Not committed by the time it is destroyed: rolled back.
class Transaction {
 public:
  Transaction(Transaction&& o) noexcept : db_(std::exchange(o.db_, nullptr)) {}
  Transaction& operator=(Transaction&&) = delete;
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  ~Transaction();

  // On failure the transaction stays open (commit may be retried) until destroyed.
  SqliteResult<void> commit();

 private:
  friend class Db;
  explicit Transaction(sqlite3* db) : db_(db) {}
  sqlite3* db_ = nullptr;  // non-null while the transaction is open and holds the mutex
};

struct OpenOptions {
  bool create = true;          // create the file (mode 0600) if it does not exist
  int busy_timeout_ms = 5000;  // how long to wait for another connection's lock
};

class Db {
 public:
  // Opens (or creates) the database file at `path`. Fails with kOpen unless WAL
  // journaling could be enabled, so in-memory and temporary databases are refused.
  static SqliteResult<Db> open(const std::string& path, const OpenOptions& opts = {});

  Db(Db&&) noexcept = default;
  Db& operator=(Db&&) noexcept = default;

  // Runs one or more ';'-separated statements without parameters (DDL, pragmas).
  // An error names the statement that failed.
  SqliteResult<void> exec(std::string_view sql);

  // Compiles exactly one statement; trailing SQL other than comments is refused.
  SqliteResult<Stmt> prepare(std::string_view sql);

  // prepare + bind_all: a statement ready to step() or for_each().
  template <class... Args>
  SqliteResult<Stmt> query(std::string_view sql, const Args&... args) {
    AZOTE_TRY(st, prepare(sql));
    AZOTE_TRYV(st.bind_all(args...));
    return st;
  }

  // Runs one statement to completion; returns the number of rows it changed.
  template <class... Args>
  SqliteResult<int> run(std::string_view sql, const Args&... args) {
    AZOTE_TRY(st, query(sql, args...));
    return st.execute();
  }

  // The single row of a query as T (one column) or std::tuple<Ts...>, nullopt when
  // there is no row; more than one row is a kMisuse error. The statement is run to
  // completion, so "INSERT ... RETURNING id" works too.
  template <class... Ts>
  using Row = std::conditional_t<sizeof...(Ts) == 1, std::tuple_element_t<0, std::tuple<Ts...>>,
                                 std::tuple<Ts...>>;
  template <class... Ts, class... Args>
  SqliteResult<std::optional<Row<Ts...>>> query_one(std::string_view sql, const Args&... args) {
    static_assert(sizeof...(Ts) > 0, "name the column types");
    AZOTE_TRY(st, query(sql, args...));
    AZOTE_TRY(has_row, st.step());
    if (!has_row) return std::optional<Row<Ts...>>{};
    AZOTE_TRYV(st.check_column_count(static_cast<int>(sizeof...(Ts))));
    std::optional<Row<Ts...>> out = read_row<Ts...>(st, std::index_sequence_for<Ts...>{});
    AZOTE_TRY(more, st.step());
    if (more) return st.too_many_rows();
    return out;
  }

  // Takes the write lock now (waiting up to the busy timeout), so the transaction
  // cannot fail later with SQLITE_BUSY when it first writes.
  SqliteResult<Transaction> begin_immediate();

  // Applies steps[user_version..] in order, each in its own transaction together with
  // the user_version bump. Refuses (kSchema) a database whose user_version is greater
  // than steps.size(): it was written by a newer program.
  SqliteResult<void> migrate(std::span<const std::string_view> steps);
  SqliteResult<std::int64_t> user_version();

  // Connection-wide values of the most recent statement. With a Db shared between
  // threads they are only meaningful inside a Transaction; elsewhere prefer the
  // result of run() and "RETURNING id".
  std::int64_t last_insert_rowid() const;
  int changes() const;

  sqlite3* handle() const { return db_.get(); }

 private:
  explicit Db(sqlite3* db) : db_(db) {}
  template <class... Ts, std::size_t... I>
  static Row<Ts...> read_row(const Stmt& st, std::index_sequence<I...>) {
    if constexpr (sizeof...(Ts) == 1) {
      return st.get<Ts...>(0);
    } else {
      return std::tuple<Ts...>{st.get<Ts>(static_cast<int>(I))...};
    }
  }

  std::unique_ptr<sqlite3, detail::DbClose> db_;
};

}  // namespace azote::sqlite
