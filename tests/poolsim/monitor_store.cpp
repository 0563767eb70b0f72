// MonitorStore: the SQL of both schemas for every dialect (see monitor_store.h). The texts are
// composed once, at construction; the only per-dialect parts are time arithmetic, upserts,
// NULL-safe comparison and how a transaction starts.
#include "tests/poolsim/monitor_store.h"

#include <cstdlib>
#include <initializer_list>

namespace poolsim {

namespace {

std::string now_sql(SqlDialect dialect, TableSchema schema) {
  switch (dialect) {
    case SqlDialect::sqlite:
      // SQLite keeps milliseconds; the pool schema's text form has six digits.
      return schema == TableSchema::pool ? "(strftime('%Y-%m-%d %H:%M:%f', 'now') || '000')"
                                         : "strftime('%Y-%m-%d %H:%M:%f', 'now')";
    case SqlDialect::postgresql:
      return schema == TableSchema::pool ? "(clock_timestamp() AT TIME ZONE 'UTC')" : "clock_timestamp()";
    case SqlDialect::mariadb:
      return "UTC_TIMESTAMP(6)";
  }
  return {};
}

// Milliseconds from the timestamp column `col` to now.
std::string age_sql(SqlDialect dialect, TableSchema schema, const std::string& col) {
  switch (dialect) {
    case SqlDialect::sqlite:
      return "CAST(ROUND((julianday('now') - julianday(" + col + ")) * 86400000.0) AS INTEGER)";
    case SqlDialect::postgresql:
      return "(EXTRACT(EPOCH FROM (" + now_sql(dialect, schema) + " - " + col + ")) * 1000)::bigint";
    case SqlDialect::mariadb:
      return "(TIMESTAMPDIFF(MICROSECOND, " + col + ", UTC_TIMESTAMP(6)) DIV 1000)";
  }
  return {};
}

// The pool schema's timestamp column `col` as Unix microseconds.
std::string micros_sql(SqlDialect dialect, const std::string& col) {
  switch (dialect) {
    case SqlDialect::sqlite:
      return "(CAST(ROUND((julianday(" + col + ") - 2440587.5) * 86400000.0) AS INTEGER) * 1000)";
    case SqlDialect::postgresql:
      return "(EXTRACT(EPOCH FROM (" + col + " AT TIME ZONE 'UTC')) * 1000000)::bigint";
    case SqlDialect::mariadb:
      return "TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', " + col + ")";
  }
  return {};
}

std::string upsert_tail(SqlDialect dialect, const char* key, std::initializer_list<const char*> columns) {
  std::string out = dialect == SqlDialect::mariadb ? " ON DUPLICATE KEY UPDATE " : " ON CONFLICT (" +
                                                                                       std::string(key) +
                                                                                       ") DO UPDATE SET ";
  bool first = true;
  for (const char* column : columns) {
    if (!first) out += ", ";
    first = false;
    out += column;
    out += dialect == SqlDialect::mariadb ? " = VALUES(" + std::string(column) + ")"
                                          : " = excluded." + std::string(column);
  }
  return out;
}

int64_t to_int(const std::optional<std::string>& text) {
  return text ? std::strtoll(text->c_str(), nullptr, 10) : 0;
}

}  // namespace

MonitorStore::MonitorStore(SqlConn& conn, TableSchema schema)
    : conn_(conn), schema_(schema), dialect_(conn.dialect()), now_(now_sql(dialect_, schema)) {
  const SqlDialect d = dialect_;
  if (schema_ == TableSchema::pool) {
    sql_heartbeat_ = "INSERT INTO tr_pool_server (server_name, address, availability_index, heartbeat_at) "
                     "VALUES ($1, $2, $3, " + now_ + ")" +
                     upsert_tail(d, "server_name", {"address", "availability_index", "heartbeat_at"});
    sql_servers_ = "SELECT server_name, address, availability_index, " + age_sql(d, schema_, "heartbeat_at") +
                   " FROM tr_pool_server";
    sql_read_ = "SELECT server_name, " + micros_sql(d, "changed_at") + ", " +
                age_sql(d, schema_, "last_connect_at") + " FROM tr_user_monitor WHERE user_name = $1";
    std::string insert = "INTO tr_user_monitor (user_name, server_name, last_connect_at, changed_at) VALUES ($1, $2, " +
                         now_ + ", " + now_ + ")";
    sql_insert_ = d == SqlDialect::mariadb ? "INSERT IGNORE " + insert
                                           : "INSERT " + insert + " ON CONFLICT (user_name) DO NOTHING";
    const char* same = d == SqlDialect::sqlite       ? " IS $3"
                       : d == SqlDialect::postgresql ? " IS NOT DISTINCT FROM $3::varchar"
                                                     : " <=> $3";
    sql_update_ = "UPDATE tr_user_monitor SET server_name = $2, last_connect_at = " + now_ + ", changed_at = " + now_ +
                  " WHERE user_name = $1 AND server_name" + same;
    sql_touch_ = "UPDATE tr_user_monitor SET last_connect_at = " + now_ + " WHERE user_name = $1";
    sql_expire_ = "UPDATE tr_user_monitor SET server_name = NULL, changed_at = " + now_ +
                  " WHERE server_name = $1 AND " + age_sql(d, schema_, "last_connect_at") + " > $2";
    sql_changes_ = "SELECT user_name, server_name, " + micros_sql(d, "changed_at") + " FROM tr_user_monitor WHERE " +
                   micros_sql(d, "changed_at") + " > $1";
    return;
  }
  sql_heartbeat_ = "INSERT INTO pool_server (server_id, address, heartbeat_at, availability) VALUES ($1, $2, " + now_ +
                   ", $3)" + upsert_tail(d, "server_id", {"address", "heartbeat_at", "availability"});
  sql_servers_ = "SELECT server_id, address, availability, " + age_sql(d, schema_, "heartbeat_at") + " FROM pool_server";
  sql_read_ = "SELECT o.server_id, o.epoch, " + age_sql(d, schema_, "c.last_connect_at") +
              " FROM user_owner o LEFT JOIN poolsim_user_connect c ON c.user_key = o.user_key WHERE o.user_key = $1";
  sql_owner_ = "SELECT server_id FROM user_owner WHERE user_key = $1";
  sql_upsert_owner_ = "INSERT INTO user_owner (user_key, server_id, epoch, changed_at) VALUES ($1, $2, $3, " + now_ +
                      ")" + upsert_tail(d, "user_key", {"server_id", "epoch", "changed_at"});
  sql_touch_ = "INSERT INTO poolsim_user_connect (user_key, last_connect_at) VALUES ($1, " + now_ + ")" +
               upsert_tail(d, "user_key", {"last_connect_at"});
  sql_expire_ = "UPDATE user_owner SET server_id = NULL, epoch = $2, changed_at = " + now_ +
                " WHERE server_id = $1 AND user_key IN (SELECT user_key FROM poolsim_user_connect WHERE " +
                age_sql(d, schema_, "last_connect_at") + " > $3)";
  sql_changes_ = "SELECT user_key, server_id, epoch FROM user_owner WHERE epoch > $1 ORDER BY epoch";
}

bool MonitorStore::prepare() {
  if (schema_ == TableSchema::pool) return true;  // the operator applies conf/sql/schema-pool-*.sql
  const char* ddl = dialect_ == SqlDialect::sqlite
                        ? "CREATE TABLE IF NOT EXISTS poolsim_user_connect (user_key TEXT PRIMARY KEY, "
                          "last_connect_at TIMESTAMP NOT NULL)"
                    : dialect_ == SqlDialect::postgresql
                        ? "CREATE TABLE IF NOT EXISTS poolsim_user_connect (user_key TEXT PRIMARY KEY, "
                          "last_connect_at TIMESTAMPTZ NOT NULL)"
                        : "CREATE TABLE IF NOT EXISTS poolsim_user_connect (user_key VARCHAR(255) PRIMARY KEY, "
                          "last_connect_at TIMESTAMP(6) NOT NULL)";
  return conn_.exec(ddl);
}

bool MonitorStore::heartbeat(std::string_view server, std::string_view address, int64_t availability) {
  return conn_.exec(sql_heartbeat_, {SqlParam::of(server), SqlParam::of(address), SqlParam::of(availability)});
}

bool MonitorStore::servers(std::vector<PoolServerRow>& rows) {
  scratch_.clear();
  if (!conn_.exec(sql_servers_, {}, &scratch_)) return false;
  for (const SqlRow& r : scratch_) {
    // A NULL age (no readable heartbeat) is very old: a server that cannot prove it is alive is not.
    rows.push_back(PoolServerRow{r[0].value_or(""), r[1].value_or(""), to_int(r[2]),
                                 r[3] ? to_int(r[3]) : INT64_MAX / 2});
  }
  return true;
}

bool MonitorStore::read(std::string_view user, MonitorRow& row, bool& found) {
  scratch_.clear();
  if (!conn_.exec(sql_read_, {SqlParam::of(user)}, &scratch_)) return false;
  found = !scratch_.empty();
  if (found) {
    const SqlRow& r = scratch_.front();
    row = MonitorRow{std::string(user), r[0].value_or(""), to_int(r[1]), to_int(r[2])};
  }
  return true;
}

bool MonitorStore::begin() {
  return conn_.exec(dialect_ == SqlDialect::sqlite       ? "BEGIN IMMEDIATE"
                    : dialect_ == SqlDialect::postgresql ? "BEGIN"
                                                         : "START TRANSACTION");
}

void MonitorStore::rollback() {
  // exec keeps last_error() on success: the failure that led here stays the one reported.
  if (conn_.connected()) conn_.exec("ROLLBACK");
}

bool MonitorStore::next_epoch(int64_t& epoch) {
  scratch_.clear();
  if (dialect_ == SqlDialect::mariadb) {
    // No UPDATE ... RETURNING in MariaDB; the row lock is held until commit all the same.
    if (!conn_.exec("UPDATE pool_epoch SET epoch = epoch + 1 WHERE id = 1") ||
        !conn_.exec("SELECT epoch FROM pool_epoch WHERE id = 1", {}, &scratch_)) {
      return false;
    }
  } else if (!conn_.exec("UPDATE pool_epoch SET epoch = epoch + 1 WHERE id = 1 RETURNING epoch", {}, &scratch_)) {
    return false;
  }
  if (scratch_.empty()) return false;
  epoch = to_int(scratch_.front()[0]);
  return true;
}

bool MonitorStore::assign(std::string_view user, std::string_view server, std::string_view expected, bool had_row,
                          bool& changed, int64_t& version) {
  changed = false;
  if (schema_ == TableSchema::pool) {
    bool ok = had_row ? conn_.exec(sql_update_, {SqlParam::of(user), SqlParam::or_null(server), SqlParam::or_null(expected)})
                      : conn_.exec(sql_insert_, {SqlParam::of(user), SqlParam::or_null(server)});
    if (!ok) return false;
    changed = conn_.affected() == 1;
    if (!changed) return true;
    MonitorRow row;
    bool found = false;
    if (!read(user, row, found)) return false;
    version = row.version;
    return true;
  }
  int64_t epoch = 0;
  if (!begin()) return false;
  if (!next_epoch(epoch)) {
    rollback();
    return false;
  }
  scratch_.clear();  // next_epoch used it
  if (!conn_.exec(sql_owner_, {SqlParam::of(user)}, &scratch_)) {
    rollback();
    return false;
  }
  std::string current = scratch_.empty() ? std::string() : scratch_.front()[0].value_or("");
  if (current != expected) {
    rollback();  // the epoch taken goes back with it
    return true;
  }
  if (!conn_.exec(sql_upsert_owner_, {SqlParam::of(user), SqlParam::or_null(server), SqlParam::of(epoch)}) ||
      !conn_.exec(sql_touch_, {SqlParam::of(user)}) || !conn_.exec("COMMIT")) {
    rollback();
    return false;
  }
  changed = true;
  version = epoch;
  return true;
}

bool MonitorStore::touch(std::string_view user) { return conn_.exec(sql_touch_, {SqlParam::of(user)}); }

bool MonitorStore::expire(std::string_view server, int64_t ttl_ms, int64_t& count) {
  count = 0;
  if (schema_ == TableSchema::pool) {
    if (!conn_.exec(sql_expire_, {SqlParam::of(server), SqlParam::of(ttl_ms)})) return false;
    count = conn_.affected();
    return true;
  }
  int64_t epoch = 0;
  if (!begin()) return false;
  // All rows of one sweep share its epoch: they commit together, so a reader sees all or none.
  if (!next_epoch(epoch) ||
      !conn_.exec(sql_expire_, {SqlParam::of(server), SqlParam::of(epoch), SqlParam::of(ttl_ms)})) {
    rollback();
    return false;
  }
  count = conn_.affected();
  if (count == 0) {
    rollback();
    return true;
  }
  if (!conn_.exec("COMMIT")) {
    rollback();
    return false;
  }
  return true;
}

bool MonitorStore::changes(int64_t since, std::vector<MonitorRow>& rows) {
  scratch_.clear();
  if (!conn_.exec(sql_changes_, {SqlParam::of(since)}, &scratch_)) return false;
  for (const SqlRow& r : scratch_) rows.push_back(MonitorRow{r[0].value_or(""), r[1].value_or(""), to_int(r[2]), 0});
  return true;
}

}  // namespace poolsim
