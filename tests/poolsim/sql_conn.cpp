// SqlConn for SQLite and PostgreSQL, and the spec parser (see sql_conn.h). MariaDB lives in
// mariadb_conn.cpp.
#include "tests/poolsim/sql_conn.h"

#include <libpq-fe.h>
#include <sqlite3.h>

#include <cstdlib>
#include <unordered_map>
#include <utility>

namespace poolsim {

namespace {

constexpr int kBusyTimeoutMs = 5000;

int on_busy(void*, int attempts) noexcept {
  // Poll every millisecond: sqlite3_busy_timeout's backoff starves one poolsim behind another.
  if (attempts >= kBusyTimeoutMs) return 0;
  sqlite3_sleep(1);
  return 1;
}

class SqliteConn final : public SqlConn {
 public:
  using SqlConn::exec;
  explicit SqliteConn(std::string path) : path_(std::move(path)) {}
  ~SqliteConn() override { close(); }

  SqlDialect dialect() const override { return SqlDialect::sqlite; }
  const char* kind() const override { return "sqlite"; }
  bool connected() const override { return db_ != nullptr; }

  bool connect() override {
    close();
    // No SQLITE_OPEN_CREATE: a missing file is a wrong path, not an empty pool.
    int rc = sqlite3_open_v2(path_.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr);
    if (rc != SQLITE_OK) {
      error_ = "open " + path_ + ": " + (db_ != nullptr ? sqlite3_errmsg(db_) : sqlite3_errstr(rc));
      close();
      return false;
    }
    sqlite3_busy_handler(db_, on_busy, nullptr);
    // A test fixture: no fsync per write (see sqlite_db.cpp).
    sqlite3_exec(db_, "PRAGMA synchronous = OFF", nullptr, nullptr, nullptr);
    return true;
  }

  bool exec(std::string_view sql, std::span<const SqlParam> params, std::vector<SqlRow>* rows) override {
    affected_ = 0;
    if (db_ == nullptr) {
      error_ = "not connected";
      return false;
    }
    sqlite3_stmt* stmt = prepared(sql);
    if (stmt == nullptr) return false;
    for (size_t i = 0; i < params.size(); ++i) {
      std::string name = "$" + std::to_string(i + 1);
      int index = sqlite3_bind_parameter_index(stmt, name.c_str());
      if (index == 0) continue;
      const SqlParam& p = params[i];
      if (p.kind == SqlParam::Kind::null) {
        sqlite3_bind_null(stmt, index);
      } else if (p.kind == SqlParam::Kind::integer) {
        sqlite3_bind_int64(stmt, index, p.integer);
      } else {
        sqlite3_bind_text(stmt, index, p.text.data(), static_cast<int>(p.text.size()), SQLITE_TRANSIENT);
      }
    }
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
      if (rows == nullptr) continue;
      SqlRow& row = rows->emplace_back();
      int columns = sqlite3_column_count(stmt);
      for (int c = 0; c < columns; ++c) {
        if (sqlite3_column_type(stmt, c) == SQLITE_NULL) {
          row.emplace_back();
        } else {
          const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(stmt, c));
          row.emplace_back(std::string(text, static_cast<size_t>(sqlite3_column_bytes(stmt, c))));
        }
      }
    }
    bool ok = rc == SQLITE_DONE;
    if (!ok) error_ = sqlite3_errmsg(db_);
    affected_ = sqlite3_changes64(db_);
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    return ok;
  }

 private:
  sqlite3_stmt* prepared(std::string_view sql) {
    auto it = statements_.find(std::string(sql));
    if (it != statements_.end()) return it->second;
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v3(db_, sql.data(), static_cast<int>(sql.size()), SQLITE_PREPARE_PERSISTENT, &stmt,
                           nullptr) != SQLITE_OK) {
      error_ = "prepare: " + std::string(sqlite3_errmsg(db_));
      return nullptr;
    }
    statements_.emplace(std::string(sql), stmt);
    return stmt;
  }

  void close() {
    for (auto& [sql, stmt] : statements_) sqlite3_finalize(stmt);
    statements_.clear();
    if (db_ != nullptr) sqlite3_close(db_);
    db_ = nullptr;
  }

  std::string path_;
  sqlite3* db_ = nullptr;
  std::unordered_map<std::string, sqlite3_stmt*> statements_;
};

// libpq's messages span lines: one log line each instead.
std::string one_line(const char* text) {
  std::string message;
  bool space = false;
  for (const char* p = text != nullptr ? text : ""; *p != '\0'; ++p) {
    if (*p == '\n' || *p == '\t' || *p == ' ' || *p == '\r') {
      space = !message.empty();
      continue;
    }
    if (space) message.push_back(' ');
    space = false;
    message.push_back(*p);
  }
  return message.empty() ? "unknown error" : message;
}

class PostgresConn final : public SqlConn {
 public:
  using SqlConn::exec;
  PostgresConn(std::string conninfo, std::string application_name)
      : conninfo_(std::move(conninfo)), application_name_(std::move(application_name)) {}
  ~PostgresConn() override { close(); }

  SqlDialect dialect() const override { return SqlDialect::postgresql; }
  const char* kind() const override { return "postgresql"; }
  bool connected() const override { return conn_ != nullptr; }

  bool connect() override {
    close();
    const char* keywords[] = {"connect_timeout", "dbname", "application_name", nullptr};
    const char* values[] = {"3", conninfo_.c_str(), application_name_.c_str(), nullptr};
    PGconn* conn = PQconnectdbParams(keywords, values, 1);
    if (conn == nullptr || PQstatus(conn) != CONNECTION_OK) {
      error_ = "connect: " + one_line(conn != nullptr ? PQerrorMessage(conn) : "out of memory");
      if (conn != nullptr) PQfinish(conn);
      return false;
    }
    conn_ = conn;
    // Timestamps without a zone (the pool schema) hold UTC.
    return exec("SET TIME ZONE 'UTC'");
  }

  bool exec(std::string_view sql, std::span<const SqlParam> params, std::vector<SqlRow>* rows) override {
    affected_ = 0;
    if (conn_ == nullptr) {
      error_ = "not connected";
      return false;
    }
    std::vector<std::string> texts(params.size());
    std::vector<const char*> values(params.size());
    for (size_t i = 0; i < params.size(); ++i) {
      const SqlParam& p = params[i];
      if (p.kind == SqlParam::Kind::null) continue;
      texts[i] = p.kind == SqlParam::Kind::integer ? std::to_string(p.integer) : p.text;
      values[i] = texts[i].c_str();
    }
    std::string text(sql);
    PGresult* result = PQexecParams(conn_, text.c_str(), static_cast<int>(params.size()), nullptr,
                                    values.data(), nullptr, nullptr, 0);
    ExecStatusType status = result != nullptr ? PQresultStatus(result) : PGRES_FATAL_ERROR;
    if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
      error_ = one_line(result != nullptr ? PQresultErrorMessage(result) : PQerrorMessage(conn_));
      PQclear(result);
      if (PQstatus(conn_) == CONNECTION_BAD) close();
      return false;
    }
    if (rows != nullptr) {
      for (int r = 0; r < PQntuples(result); ++r) {
        SqlRow& row = rows->emplace_back();
        for (int c = 0; c < PQnfields(result); ++c) {
          if (PQgetisnull(result, r, c)) {
            row.emplace_back();
          } else {
            row.emplace_back(std::string(PQgetvalue(result, r, c), static_cast<size_t>(PQgetlength(result, r, c))));
          }
        }
      }
    }
    affected_ = std::strtoll(PQcmdTuples(result), nullptr, 10);
    PQclear(result);
    return true;
  }

 private:
  void close() {
    if (conn_ != nullptr) PQfinish(conn_);
    conn_ = nullptr;
  }

  std::string conninfo_;
  std::string application_name_;
  PGconn* conn_ = nullptr;
};

}  // namespace

std::unique_ptr<SqlConn> make_sql_conn(std::string_view spec, std::string_view server_id, std::string& error) {
  std::string app = "poolsim-" + std::string(server_id);
  if (spec.starts_with("postgresql://") || spec.starts_with("postgres://")) {
    return std::make_unique<PostgresConn>(std::string(spec), app);
  }
  for (std::string_view prefix : {"postgresql:", "postgres:"}) {
    if (spec.starts_with(prefix)) return std::make_unique<PostgresConn>(std::string(spec.substr(prefix.size())), app);
  }
  if (spec.starts_with("sqlite:") && spec.size() > 7) return std::make_unique<SqliteConn>(std::string(spec.substr(7)));
  if (spec.starts_with("mariadb:")) return make_mariadb_conn(spec.substr(8), error);
  error = "--db: expected sqlite:PATH, postgresql:CONNINFO or mariadb:OPTIONS, got '" + std::string(spec) + "'";
  return nullptr;
}

}  // namespace poolsim
