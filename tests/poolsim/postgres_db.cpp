// PostgresDb: the pool tables in PostgreSQL through libpq (see postgres_db.h).
#include "tests/poolsim/postgres_db.h"

#include <libpq-fe.h>

#include <cstdlib>
#include <memory>
#include <utility>


namespace poolsim {

namespace {

struct ResultDeleter {
  void operator()(PGresult* result) const { PQclear(result); }
};
using Result = std::unique_ptr<PGresult, ResultDeleter>;

// libpq's messages span lines ("...\n\tThis probably means..."): one log line each instead.
std::string trimmed_message(const char* text) {
  std::string message;
  bool space = false;
  for (const char* p = text != nullptr ? text : ""; *p != '\0'; ++p) {
    bool blank = *p == '\n' || *p == '\t' || *p == ' ' || *p == '\r';
    if (blank) {
      space = !message.empty();
      continue;
    }
    if (space) message.push_back(' ');
    space = false;
    message.push_back(*p);
  }
  return message.empty() ? "unknown error" : message;
}

int64_t int_value(PGresult* result, int row, int column) {
  if (PQgetisnull(result, row, column)) return 0;
  return std::strtoll(PQgetvalue(result, row, column), nullptr, 10);
}

// A NULL age (no heartbeat) counts as very old: a server that cannot prove it is alive is not.
int64_t age_value(PGresult* result, int row, int column) {
  if (PQgetisnull(result, row, column)) return INT64_MAX / 2;
  return int_value(result, row, column);
}

std::string text_value(PGresult* result, int row, int column) {
  if (PQgetisnull(result, row, column)) return {};
  return std::string(PQgetvalue(result, row, column), static_cast<size_t>(PQgetlength(result, row, column)));
}

constexpr const char* kAge = "(EXTRACT(EPOCH FROM clock_timestamp() - heartbeat_at) * 1000)::bigint";

}  // namespace

PostgresDb::PostgresDb(std::string conninfo, std::string application_name)
    : conninfo_(std::move(conninfo)), application_name_(std::move(application_name)) {}

PostgresDb::~PostgresDb() { close(); }

void PostgresDb::close() {
  if (conn_ != nullptr) {
    PQfinish(conn_);
    conn_ = nullptr;
  }
}

bool PostgresDb::connect() {
  close();
  // Later keywords win: our connect_timeout is a default the conninfo may override, our
  // application_name labels the session in pg_stat_activity.
  const char* keywords[] = {"connect_timeout", "dbname", "application_name", nullptr};
  const char* values[] = {"3", conninfo_.c_str(), application_name_.c_str(), nullptr};
  PGconn* conn = PQconnectdbParams(keywords, values, 1);
  if (conn == nullptr || PQstatus(conn) != CONNECTION_OK) {
    error_ = "connect: " + trimmed_message(conn != nullptr ? PQerrorMessage(conn) : "out of memory");
    if (conn != nullptr) PQfinish(conn);
    return false;
  }
  conn_ = conn;
  // A poolsim frozen mid-transaction (SIGSTOP in a test) must cost its peers an error, not a
  // loop blocked for ever on the epoch row lock.
  Result set(exec("set statement_timeout", "SET statement_timeout = '5s'"));
  return conn_ != nullptr && set != nullptr;
}

PGresult* PostgresDb::exec(const char* what, const char* sql, int count, const char* const* values) {
  if (conn_ == nullptr) {
    error_ = std::string(what) + ": not connected";
    return nullptr;
  }
  PGresult* result = PQexecParams(conn_, sql, count, nullptr, values, nullptr, nullptr, 0);
  ExecStatusType status = result != nullptr ? PQresultStatus(result) : PGRES_FATAL_ERROR;
  if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) return result;
  error_ = std::string(what) + ": " +
           trimmed_message(result != nullptr ? PQresultErrorMessage(result) : PQerrorMessage(conn_));
  PQclear(result);
  if (PQstatus(conn_) == CONNECTION_BAD) close();
  return nullptr;
}

bool PostgresDb::begin_write() { return Result(exec("begin", "BEGIN")) != nullptr; }

bool PostgresDb::commit() { return Result(exec("commit", "COMMIT")) != nullptr; }

void PostgresDb::rollback() {
  if (conn_ != nullptr && PQtransactionStatus(conn_) != PQTRANS_IDLE) {
    std::string kept = error_;  // the failure that led here is the one worth reporting
    Result(exec("rollback", "ROLLBACK"));
    error_ = std::move(kept);
  }
}

bool PostgresDb::next_epoch(int64_t& epoch) {
  Result result(exec("next epoch", "UPDATE pool_epoch SET epoch = epoch + 1 WHERE id = 1 RETURNING epoch"));
  if (result == nullptr) return false;
  if (PQntuples(result.get()) != 1) {
    error_ = "next epoch: pool_epoch has no row id = 1";
    return false;
  }
  epoch = int_value(result.get(), 0, 0);
  return true;
}

bool PostgresDb::read_owner(std::string_view user_key, OwnerRow& row, bool& found) {
  std::string key(user_key);
  const char* values[] = {key.c_str()};
  Result result(exec("read owner", "SELECT server_id, epoch FROM user_owner WHERE user_key = $1", 1, values));
  if (result == nullptr) return false;
  found = PQntuples(result.get()) > 0;
  if (found) {
    row.user_key = key;
    row.server_id = text_value(result.get(), 0, 0);
    row.epoch = int_value(result.get(), 0, 1);
  }
  return true;
}

bool PostgresDb::upsert_owner(std::string_view user_key, std::string_view server_id, int64_t epoch) {
  std::string key(user_key), server(server_id), epoch_text = std::to_string(epoch);
  const char* values[] = {key.c_str(), server.empty() ? nullptr : server.c_str(), epoch_text.c_str()};
  return Result(exec("write owner",
                     "INSERT INTO user_owner (user_key, server_id, epoch, changed_at) VALUES ($1, $2, $3, now()) "
                     "ON CONFLICT (user_key) DO UPDATE SET server_id = EXCLUDED.server_id, "
                     "epoch = EXCLUDED.epoch, changed_at = EXCLUDED.changed_at",
                     3, values)) != nullptr;
}

bool PostgresDb::cas_owner(std::string_view user_key, std::string_view server_id, int64_t epoch,
                           int64_t expected_epoch, bool& changed) {
  std::string key(user_key), server(server_id), epoch_text = std::to_string(epoch),
      expected_text = std::to_string(expected_epoch);
  const char* values[] = {key.c_str(), server.empty() ? nullptr : server.c_str(), epoch_text.c_str(),
                          expected_text.c_str()};
  Result result(exec("compare-and-set owner",
                     "UPDATE user_owner SET server_id = $2, epoch = $3, changed_at = now() "
                     "WHERE user_key = $1 AND epoch = $4",
                     4, values));
  if (result == nullptr) return false;
  changed = std::strtoll(PQcmdTuples(result.get()), nullptr, 10) > 0;
  return true;
}

bool PostgresDb::owners_since(int64_t epoch, std::vector<OwnerRow>& rows) {
  std::string epoch_text = std::to_string(epoch);
  const char* values[] = {epoch_text.c_str()};
  Result result(exec("read owner changes",
                     "SELECT user_key, server_id, epoch FROM user_owner WHERE epoch > $1 ORDER BY epoch", 1, values));
  if (result == nullptr) return false;
  int n = PQntuples(result.get());
  rows.reserve(rows.size() + static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    rows.push_back(OwnerRow{text_value(result.get(), i, 0), text_value(result.get(), i, 1),
                            int_value(result.get(), i, 2)});
  }
  return true;
}

bool PostgresDb::server_age(std::string_view server_id, int64_t& age_ms, bool& found) {
  std::string id(server_id);
  const char* values[] = {id.c_str()};
  std::string sql = std::string("SELECT ") + kAge + " FROM pool_server WHERE server_id = $1";
  Result result(exec("read heartbeat", sql.c_str(), 1, values));
  if (result == nullptr) return false;
  found = PQntuples(result.get()) > 0;
  if (found) age_ms = age_value(result.get(), 0, 0);
  return true;
}

bool PostgresDb::servers(std::vector<ServerRow>& rows) {
  std::string sql = std::string("SELECT server_id, address, availability, ") + kAge + " FROM pool_server";
  Result result(exec("read servers", sql.c_str()));
  if (result == nullptr) return false;
  int n = PQntuples(result.get());
  for (int i = 0; i < n; ++i) {
    rows.push_back(ServerRow{text_value(result.get(), i, 0), text_value(result.get(), i, 1),
                             age_value(result.get(), i, 3), int_value(result.get(), i, 2)});
  }
  return true;
}

bool PostgresDb::upsert_server(std::string_view server_id, std::string_view address, int64_t availability) {
  std::string id(server_id), addr(address), availability_text = std::to_string(availability);
  const char* values[] = {id.c_str(), addr.c_str(), availability_text.c_str()};
  return Result(exec("write heartbeat",
                     "INSERT INTO pool_server (server_id, address, heartbeat_at, availability) "
                     "VALUES ($1, $2, now(), $3) ON CONFLICT (server_id) DO UPDATE SET "
                     "address = EXCLUDED.address, heartbeat_at = EXCLUDED.heartbeat_at, "
                     "availability = EXCLUDED.availability",
                     3, values)) != nullptr;
}

}  // namespace poolsim
