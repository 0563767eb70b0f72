// SqliteDb: the pool tables in a shared SQLite file (see sqlite_db.h).
#include "tests/poolsim/sqlite_db.h"

#include <sqlite3.h>

#include <utility>

namespace poolsim {

namespace {

// Long enough to wait out another poolsim's transaction, short enough that a wedged writer
// shows up as an error instead of a frozen loop.
constexpr int kBusyTimeoutMs = 5000;

// UTC with milliseconds, the form SQLite's own date functions read back.
#define POOLSIM_SQLITE_NOW "strftime('%Y-%m-%d %H:%M:%f', 'now')"
#define POOLSIM_SQLITE_AGE "CAST(ROUND((julianday('now') - julianday(heartbeat_at)) * 86400000.0) AS INTEGER)"

constexpr const char* kSql[] = {
    "BEGIN IMMEDIATE",
    "COMMIT",
    "ROLLBACK",
    "UPDATE pool_epoch SET epoch = epoch + 1 WHERE id = 1 RETURNING epoch",
    "SELECT server_id, epoch FROM user_owner WHERE user_key = ?1",
    "INSERT INTO user_owner (user_key, server_id, epoch, changed_at) VALUES (?1, ?2, ?3, " POOLSIM_SQLITE_NOW ") "
    "ON CONFLICT (user_key) DO UPDATE SET server_id = excluded.server_id, epoch = excluded.epoch, "
    "changed_at = excluded.changed_at",
    "UPDATE user_owner SET server_id = ?2, epoch = ?3, changed_at = " POOLSIM_SQLITE_NOW
    " WHERE user_key = ?1 AND epoch = ?4",
    "SELECT user_key, server_id, epoch FROM user_owner WHERE epoch > ?1 ORDER BY epoch",
    "SELECT " POOLSIM_SQLITE_AGE " FROM pool_server WHERE server_id = ?1",
    "SELECT server_id, address, availability, " POOLSIM_SQLITE_AGE " FROM pool_server",
    "INSERT INTO pool_server (server_id, address, heartbeat_at, availability) VALUES (?1, ?2, " POOLSIM_SQLITE_NOW
    ", ?3) ON CONFLICT (server_id) DO UPDATE SET address = excluded.address, "
    "heartbeat_at = excluded.heartbeat_at, availability = excluded.availability",
};

#undef POOLSIM_SQLITE_NOW
#undef POOLSIM_SQLITE_AGE

// sqlite3_busy_timeout backs off up to 100 ms per retry, which starves one poolsim while
// another writes and stalls its loop long after the lock is free: poll every millisecond.
int on_busy(void*, int attempts) noexcept {
  if (attempts >= kBusyTimeoutMs) return 0;
  sqlite3_sleep(1);
  return 1;
}

void bind_text(sqlite3_stmt* stmt, int index, std::string_view text) {
  sqlite3_bind_text(stmt, index, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT);
}

// NULL for an empty server id: the table's "unassigned".
void bind_server(sqlite3_stmt* stmt, int index, std::string_view server_id) {
  if (server_id.empty()) {
    sqlite3_bind_null(stmt, index);
  } else {
    bind_text(stmt, index, server_id);
  }
}

std::string column_text(sqlite3_stmt* stmt, int column) {
  const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(stmt, column));
  return text == nullptr ? std::string() : std::string(text, static_cast<size_t>(sqlite3_column_bytes(stmt, column)));
}

// An unparsable heartbeat gives NULL: a server that cannot prove it is alive is not.
int64_t column_age(sqlite3_stmt* stmt, int column) {
  if (sqlite3_column_type(stmt, column) == SQLITE_NULL) return INT64_MAX / 2;
  return sqlite3_column_int64(stmt, column);
}

}  // namespace

static_assert(sizeof kSql / sizeof kSql[0] == 11, "one SQL text per SqliteDb::Statement");

SqliteDb::SqliteDb(std::string path) : path_(std::move(path)) {}

SqliteDb::~SqliteDb() { close(); }

void SqliteDb::close() {
  for (sqlite3_stmt*& stmt : statements_) {
    sqlite3_finalize(stmt);
    stmt = nullptr;
  }
  if (db_ != nullptr) {
    sqlite3_close(db_);
    db_ = nullptr;
  }
}

bool SqliteDb::connect() {
  close();
  // No SQLITE_OPEN_CREATE: a missing file is a wrong path, not an empty pool.
  int rc = sqlite3_open_v2(path_.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    error_ = "open " + path_ + ": " + (db_ != nullptr ? sqlite3_errmsg(db_) : sqlite3_errstr(rc));
    close();
    return false;
  }
  sqlite3_busy_handler(db_, on_busy, nullptr);
  // The file is a test fixture: an fsync per claim (tens of ms on a busy disk) would make the
  // first request of every user crawl, and surviving power loss is not a fixture's job.
  // Connection-local: whoever else opens the file keeps their own setting.
  sqlite3_exec(db_, "PRAGMA synchronous = OFF", nullptr, nullptr, nullptr);
  for (size_t i = 0; i < kStatementCount; ++i) {
    if (sqlite3_prepare_v3(db_, kSql[i], -1, SQLITE_PREPARE_PERSISTENT, &statements_[i], nullptr) != SQLITE_OK) {
      error_ = "prepare (is the schema of conf/sql/schema-sqlite.sql applied?): " + std::string(sqlite3_errmsg(db_));
      close();
      return false;
    }
  }
  return true;
}

sqlite3_stmt* SqliteDb::statement(Statement which) {
  if (db_ == nullptr) {
    error_ = "not connected";
    return nullptr;
  }
  sqlite3_stmt* stmt = statements_[which];
  sqlite3_reset(stmt);
  sqlite3_clear_bindings(stmt);
  return stmt;
}

bool SqliteDb::fail(const char* what) {
  error_ = std::string(what) + ": " + (db_ != nullptr ? sqlite3_errmsg(db_) : "not connected");
  return false;
}

bool SqliteDb::run_simple(Statement which, const char* what) {
  sqlite3_stmt* stmt = statement(which);
  if (stmt == nullptr) return false;
  int rc = sqlite3_step(stmt);
  bool ok = rc == SQLITE_DONE || rc == SQLITE_ROW;
  if (!ok) fail(what);
  sqlite3_reset(stmt);
  return ok;
}

bool SqliteDb::begin_write() { return run_simple(kBegin, "begin"); }

bool SqliteDb::commit() { return run_simple(kCommit, "commit"); }

void SqliteDb::rollback() {
  if (db_ != nullptr && sqlite3_get_autocommit(db_) == 0) run_simple(kRollback, "rollback");
}

bool SqliteDb::next_epoch(int64_t& epoch) {
  sqlite3_stmt* stmt = statement(kNextEpoch);
  if (stmt == nullptr) return false;
  int rc = sqlite3_step(stmt);
  if (rc != SQLITE_ROW) {
    if (rc == SQLITE_DONE) {
      error_ = "next epoch: pool_epoch has no row id = 1";
      return false;
    }
    return fail("next epoch");
  }
  epoch = sqlite3_column_int64(stmt, 0);
  // RETURNING rows are produced before the statement completes: step it to the end.
  while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
  }
  if (rc != SQLITE_DONE) return fail("next epoch");
  sqlite3_reset(stmt);
  return true;
}

bool SqliteDb::read_owner(std::string_view user_key, OwnerRow& row, bool& found) {
  sqlite3_stmt* stmt = statement(kReadOwner);
  if (stmt == nullptr) return false;
  bind_text(stmt, 1, user_key);
  int rc = sqlite3_step(stmt);
  if (rc == SQLITE_DONE) {
    found = false;
    return true;
  }
  if (rc != SQLITE_ROW) return fail("read owner");
  found = true;
  row.user_key = user_key;
  row.server_id = column_text(stmt, 0);
  row.epoch = sqlite3_column_int64(stmt, 1);
  sqlite3_reset(stmt);
  return true;
}

bool SqliteDb::upsert_owner(std::string_view user_key, std::string_view server_id, int64_t epoch) {
  sqlite3_stmt* stmt = statement(kUpsertOwner);
  if (stmt == nullptr) return false;
  bind_text(stmt, 1, user_key);
  bind_server(stmt, 2, server_id);
  sqlite3_bind_int64(stmt, 3, epoch);
  if (sqlite3_step(stmt) != SQLITE_DONE) return fail("write owner");
  return true;
}

bool SqliteDb::cas_owner(std::string_view user_key, std::string_view server_id, int64_t epoch,
                         int64_t expected_epoch, bool& changed) {
  sqlite3_stmt* stmt = statement(kCasOwner);
  if (stmt == nullptr) return false;
  bind_text(stmt, 1, user_key);
  bind_server(stmt, 2, server_id);
  sqlite3_bind_int64(stmt, 3, epoch);
  sqlite3_bind_int64(stmt, 4, expected_epoch);
  if (sqlite3_step(stmt) != SQLITE_DONE) return fail("compare-and-set owner");
  changed = sqlite3_changes(db_) > 0;
  return true;
}

bool SqliteDb::owners_since(int64_t epoch, std::vector<OwnerRow>& rows) {
  sqlite3_stmt* stmt = statement(kOwnersSince);
  if (stmt == nullptr) return false;
  sqlite3_bind_int64(stmt, 1, epoch);
  int rc;
  while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
    rows.push_back(OwnerRow{column_text(stmt, 0), column_text(stmt, 1), sqlite3_column_int64(stmt, 2)});
  }
  if (rc != SQLITE_DONE) return fail("read owner changes");
  sqlite3_reset(stmt);
  return true;
}

bool SqliteDb::server_age(std::string_view server_id, int64_t& age_ms, bool& found) {
  sqlite3_stmt* stmt = statement(kServerAge);
  if (stmt == nullptr) return false;
  bind_text(stmt, 1, server_id);
  int rc = sqlite3_step(stmt);
  if (rc == SQLITE_DONE) {
    found = false;
    return true;
  }
  if (rc != SQLITE_ROW) return fail("read heartbeat");
  found = true;
  age_ms = column_age(stmt, 0);
  sqlite3_reset(stmt);
  return true;
}

bool SqliteDb::servers(std::vector<ServerRow>& rows) {
  sqlite3_stmt* stmt = statement(kServers);
  if (stmt == nullptr) return false;
  int rc;
  while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
    rows.push_back(ServerRow{column_text(stmt, 0), column_text(stmt, 1), column_age(stmt, 3),
                             sqlite3_column_int64(stmt, 2)});
  }
  if (rc != SQLITE_DONE) return fail("read servers");
  sqlite3_reset(stmt);
  return true;
}

bool SqliteDb::upsert_server(std::string_view server_id, std::string_view address, int64_t availability) {
  sqlite3_stmt* stmt = statement(kUpsertServer);
  if (stmt == nullptr) return false;
  bind_text(stmt, 1, server_id);
  bind_text(stmt, 2, address);
  sqlite3_bind_int64(stmt, 3, availability);
  if (sqlite3_step(stmt) != SQLITE_DONE) return fail("write heartbeat");
  return true;
}

}  // namespace poolsim
