// MonitorStore: the Traveler-mode pool tables on any SqlConn, in either schema:
//  default  pool_server, user_owner and pool_epoch (conf/sql/schema-*.sql), every change under
//           the next epoch; last connections in poolsim's own side table poolsim_user_connect
//           (created here), since user_owner has no such column;
//  pool     tr_pool_server and tr_user_monitor (conf/sql/schema-pool-*.sql): no epoch, a
//           changed_at timestamp set whenever server_name changes, last_connect_at per user.
// A row's "version" is its epoch (default) or changed_at in Unix microseconds (pool): it only
// grows, so a cache never lets an older answer replace a newer one.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "tests/poolsim/sql_conn.h"

namespace poolsim {

enum class TableSchema : uint8_t { standard, pool };

struct MonitorRow {
  std::string user;
  std::string server;   // empty = NULL (no master monitor)
  int64_t version = 0;
  int64_t idle_ms = 0;  // since the last device connection, by the database's clock
};

struct PoolServerRow {
  std::string server;
  std::string address;
  int64_t availability = 0;
  int64_t age_ms = 0;  // heartbeat age by the database's clock
};

class MonitorStore {
 public:
  MonitorStore(SqlConn& conn, TableSchema schema);

  // Creates the side table where the schema needs one. After every (re)connect.
  bool prepare();
  bool heartbeat(std::string_view server, std::string_view address, int64_t availability);
  bool servers(std::vector<PoolServerRow>& rows);
  bool read(std::string_view user, MonitorRow& row, bool& found);
  // Sets the master monitor if it still is `expected` (empty = NULL or no row; `had_row` says
  // which is believed), and the last connection to now. changed = false: someone else got
  // there first. On success `version` is the row's new version.
  bool assign(std::string_view user, std::string_view server, std::string_view expected, bool had_row,
              bool& changed, int64_t& version);
  bool touch(std::string_view user);
  // Clears the master monitor of `server`'s users idle longer than ttl_ms; count = how many.
  bool expire(std::string_view server, int64_t ttl_ms, int64_t& count);
  // Rows with a version above `since` (pool: the caller subtracts a margin for late commits).
  bool changes(int64_t since, std::vector<MonitorRow>& rows);

  const std::string& last_error() const { return conn_.last_error(); }

 private:
  bool next_epoch(int64_t& epoch);
  bool begin();
  void rollback();

  SqlConn& conn_;
  TableSchema schema_;
  SqlDialect dialect_;
  std::string now_;  // the current time as the schema's timestamp columns hold it
  std::string sql_heartbeat_, sql_servers_, sql_read_, sql_insert_, sql_update_, sql_owner_, sql_upsert_owner_,
      sql_touch_, sql_expire_, sql_changes_;
  std::vector<SqlRow> scratch_;
};

}  // namespace poolsim
