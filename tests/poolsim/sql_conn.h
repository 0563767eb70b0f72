// SqlConn: one blocking connection to a pool database (SQLite, PostgreSQL or MariaDB) that runs
// SQL text with numbered parameters ($1, $2, ...). The Traveler-mode tables (monitor_store.h)
// are written once against it; each database only supplies connect and exec.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace poolsim {

struct SqlParam {
  enum class Kind : uint8_t { null, text, integer };
  Kind kind = Kind::null;
  std::string text;
  int64_t integer = 0;

  static SqlParam null_value() { return {}; }
  static SqlParam of(std::string_view value) { return {Kind::text, std::string(value), 0}; }
  static SqlParam of(int64_t value) { return {Kind::integer, {}, value}; }
  // An empty text is the tables' NULL (no server).
  static SqlParam or_null(std::string_view value) { return value.empty() ? null_value() : of(value); }
};

using SqlRow = std::vector<std::optional<std::string>>;

enum class SqlDialect : uint8_t { sqlite, postgresql, mariadb };

class SqlConn {
 public:
  virtual ~SqlConn() = default;

  virtual SqlDialect dialect() const = 0;
  virtual const char* kind() const = 0;  // "sqlite", "postgresql", "mariadb"
  // (Re)opens the connection.
  virtual bool connect() = 0;
  virtual bool connected() const = 0;
  // Runs one statement. `rows` (may be null) receives every result row as text; affected() is
  // then the number of rows the statement changed. False with last_error() on failure; a broken
  // connection is closed at the failing call (connected() turns false).
  virtual bool exec(std::string_view sql, std::span<const SqlParam> params, std::vector<SqlRow>* rows) = 0;

  bool exec(std::string_view sql, std::initializer_list<SqlParam> params = {}, std::vector<SqlRow>* rows = nullptr) {
    return exec(sql, std::span<const SqlParam>(params.begin(), params.size()), rows);
  }
  int64_t affected() const { return affected_; }
  const std::string& last_error() const { return error_; }

 protected:
  std::string error_;
  int64_t affected_ = 0;
};

// "sqlite:PATH", "postgresql:CONNINFO" (or a postgresql:// URI), "mariadb:KEY=VALUE ..." (keys
// host, port, user, password, dbname, unix_socket). nullptr with `error` for anything else.
// Does not connect.
std::unique_ptr<SqlConn> make_sql_conn(std::string_view spec, std::string_view server_id, std::string& error);

std::unique_ptr<SqlConn> make_mariadb_conn(std::string_view options, std::string& error);

}  // namespace poolsim
