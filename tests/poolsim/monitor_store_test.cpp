// MonitorStore's SQL and transactions: on a scripted connection for MariaDB (no server needed:
// the statements and their order are what is checked) and end to end on a scratch SQLite file
// for both schemas.
#include "tests/poolsim/monitor_store.h"

#include <doctest/doctest.h>
#include <sqlite3.h>
#include <unistd.h>

#include <cstdio>
#include <deque>
#include <fstream>
#include <sstream>

#include "tests/poolsim/sql_conn.h"

namespace poolsim {
namespace {

// Records every statement with its parameters; answers from a script (default: ok, no rows).
class ScriptedConn final : public SqlConn {
 public:
  using SqlConn::exec;
  struct Answer {
    bool ok = true;
    std::vector<SqlRow> rows;
    int64_t affected = 0;
  };

  explicit ScriptedConn(SqlDialect dialect) : dialect_(dialect) {}
  SqlDialect dialect() const override { return dialect_; }
  const char* kind() const override { return "scripted"; }
  bool connect() override { return true; }
  bool connected() const override { return true; }
  bool exec(std::string_view sql, std::span<const SqlParam> params, std::vector<SqlRow>* rows) override {
    std::string line(sql);
    for (const SqlParam& p : params) {
      line += p.kind == SqlParam::Kind::null      ? " | NULL"
              : p.kind == SqlParam::Kind::integer ? " | " + std::to_string(p.integer)
                                                  : " | '" + p.text + "'";
    }
    log.push_back(line);
    Answer answer;
    if (!script.empty()) {
      answer = script.front();
      script.pop_front();
    }
    if (rows != nullptr) rows->insert(rows->end(), answer.rows.begin(), answer.rows.end());
    affected_ = answer.affected;
    if (!answer.ok) error_ = "scripted failure";
    return answer.ok;
  }

  std::vector<std::string> log;
  std::deque<Answer> script;

 private:
  SqlDialect dialect_;
};

bool starts(const std::string& text, std::string_view prefix) { return text.starts_with(prefix); }

}  // namespace

TEST_CASE("MariaDB, default schema: an assignment takes the next epoch, then sets the owner") {
  ScriptedConn conn(SqlDialect::mariadb);
  MonitorStore store(conn, TableSchema::standard);
  conn.script = {{}, {}, {true, {{std::string("7")}}, 0}, {true, {}, 0}};
  bool changed = false;
  int64_t version = 0;
  REQUIRE(store.assign("alice", "pool2", "", false, changed, version));
  CHECK(changed);
  CHECK(version == 7);
  REQUIRE(conn.log.size() == 7);
  CHECK(conn.log[0] == "START TRANSACTION");
  // No UPDATE ... RETURNING in MariaDB: the bump, then a read under the row lock.
  CHECK(conn.log[1] == "UPDATE pool_epoch SET epoch = epoch + 1 WHERE id = 1");
  CHECK(conn.log[2] == "SELECT epoch FROM pool_epoch WHERE id = 1");
  CHECK(conn.log[3] == "SELECT server_id FROM user_owner WHERE user_key = $1 | 'alice'");
  CHECK(starts(conn.log[4], "INSERT INTO user_owner (user_key, server_id, epoch, changed_at) VALUES ($1, $2, $3, "
                            "UTC_TIMESTAMP(6)) ON DUPLICATE KEY UPDATE server_id = VALUES(server_id)"));
  CHECK(conn.log[4].ends_with("| 'alice' | 'pool2' | 7"));
  CHECK(starts(conn.log[5], "INSERT INTO poolsim_user_connect"));
  CHECK(conn.log[6] == "COMMIT");
}

TEST_CASE("MariaDB, default schema: an owner changed since it was read rolls back") {
  ScriptedConn conn(SqlDialect::mariadb);
  MonitorStore store(conn, TableSchema::standard);
  conn.script = {{}, {}, {true, {{std::string("8")}}, 0}, {true, {{std::string("pool3")}}, 0}};
  bool changed = true;
  int64_t version = 0;
  REQUIRE(store.assign("alice", "pool2", "pool1", true, changed, version));
  CHECK_FALSE(changed);
  CHECK(conn.log.back() == "ROLLBACK");
  CHECK(conn.log.size() == 5);
}

TEST_CASE("MariaDB, default schema: a failed statement rolls back and reports") {
  ScriptedConn conn(SqlDialect::mariadb);
  MonitorStore store(conn, TableSchema::standard);
  conn.script = {{}, {false, {}, 0}};
  bool changed = true;
  int64_t version = 0;
  CHECK_FALSE(store.assign("alice", "pool2", "", false, changed, version));
  CHECK_FALSE(changed);
  CHECK(conn.log.back() == "ROLLBACK");
  CHECK(store.last_error() == "scripted failure");
}

TEST_CASE("MariaDB, default schema: one epoch per expiry sweep; nothing idle rolls back") {
  ScriptedConn conn(SqlDialect::mariadb);
  MonitorStore store(conn, TableSchema::standard);
  conn.script = {{}, {}, {true, {{std::string("9")}}, 0}, {true, {}, 3}};
  int64_t count = 0;
  REQUIRE(store.expire("pool1", 60000, count));
  CHECK(count == 3);
  CHECK(starts(conn.log[3], "UPDATE user_owner SET server_id = NULL, epoch = $2"));
  CHECK(conn.log[3].find("TIMESTAMPDIFF(MICROSECOND, last_connect_at, UTC_TIMESTAMP(6)) DIV 1000") != std::string::npos);
  CHECK(conn.log[3].ends_with("| 'pool1' | 9 | 60000"));
  CHECK(conn.log.back() == "COMMIT");

  conn.log.clear();
  conn.script = {{}, {}, {true, {{std::string("10")}}, 0}, {true, {}, 0}};
  REQUIRE(store.expire("pool1", 60000, count));
  CHECK(count == 0);
  CHECK(conn.log.back() == "ROLLBACK");
}

TEST_CASE("MariaDB, pool schema: INSERT IGNORE for a new user, a NULL-safe compare-and-set after") {
  ScriptedConn conn(SqlDialect::mariadb);
  MonitorStore store(conn, TableSchema::pool);
  conn.script = {{true, {}, 1}, {true, {{std::string("pool2"), std::string("1700000000000000"), std::string("0")}}, 0}};
  bool changed = false;
  int64_t version = 0;
  REQUIRE(store.assign("bob", "pool2", "", false, changed, version));
  CHECK(changed);
  CHECK(version == 1700000000000000);
  CHECK(starts(conn.log[0], "INSERT IGNORE INTO tr_user_monitor (user_name, server_name, last_connect_at, changed_at)"));
  CHECK(starts(conn.log[1], "SELECT server_name, TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', changed_at)"));

  conn.log.clear();
  conn.script = {{true, {}, 0}};
  REQUIRE(store.assign("bob", "pool3", "", true, changed, version));
  CHECK_FALSE(changed);
  CHECK(conn.log.size() == 1);
  CHECK(conn.log[0].find("AND server_name <=> $3") != std::string::npos);
  CHECK(conn.log[0].ends_with("| 'bob' | 'pool3' | NULL"));

  conn.log.clear();
  REQUIRE(store.touch("bob"));
  CHECK(conn.log[0] == "UPDATE tr_user_monitor SET last_connect_at = UTC_TIMESTAMP(6) WHERE user_name = $1 | 'bob'");
  REQUIRE(store.heartbeat("pool1", "127.0.0.1:1", -200));
  CHECK(conn.log[1].find("ON DUPLICATE KEY UPDATE address = VALUES(address)") != std::string::npos);
  CHECK(conn.log[1].ends_with("| 'pool1' | '127.0.0.1:1' | -200"));
}

TEST_CASE("mariadb: specs are checked without connecting") {
  std::string error;
  CHECK(make_sql_conn("mariadb:host=127.0.0.1 port=3306 user=u password=p dbname=pool", "x", error) != nullptr);
  CHECK(make_sql_conn("mariadb:unix_socket=/run/mysqld/mysqld.sock dbname=pool", "x", error) != nullptr);
  for (const char* bad : {"mariadb:port=70000 dbname=p", "mariadb:port=x dbname=p", "mariadb:host=h",
                          "mariadb:dbname", "mariadb:colour=blue dbname=p", "mysql:dbname=p"}) {
    CAPTURE(bad);
    error.clear();
    CHECK(make_sql_conn(bad, "x", error) == nullptr);
    CHECK_FALSE(error.empty());
  }
}

namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// A scratch SQLite file with `schema` applied; removed at scope exit.
struct ScratchDb {
  std::string path;
  explicit ScratchDb(const char* schema) {
    char name[] = "/tmp/poolsim-unit-XXXXXX";
    int fd = mkstemp(name);
    REQUIRE(fd >= 0);
    close(fd);
    path = name;
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
    std::string sql = read_file(std::string(POOLSIM_SQL_DIR) + "/" + schema);
    REQUIRE_FALSE(sql.empty());
    CHECK(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr) == SQLITE_OK);
    sqlite3_close(db);
  }
  ~ScratchDb() { std::remove(path.c_str()); }
};

void exercise(TableSchema schema, const char* file) {
  ScratchDb scratch(file);
  std::string error;
  auto conn = make_sql_conn("sqlite:" + scratch.path, "pool1", error);
  REQUIRE(conn != nullptr);
  REQUIRE(conn->connect());
  MonitorStore store(*conn, schema);
  REQUIRE(store.prepare());
  REQUIRE(store.heartbeat("pool1", "127.0.0.1:1", 90));
  std::vector<PoolServerRow> servers;
  REQUIRE(store.servers(servers));
  REQUIRE(servers.size() == 1);
  CHECK(servers[0].availability == 90);
  CHECK(servers[0].age_ms >= 0);

  MonitorRow row;
  bool found = true;
  REQUIRE(store.read("alice", row, found));
  CHECK_FALSE(found);
  bool changed = false;
  int64_t version = 0;
  REQUIRE(store.assign("alice", "pool2", "", false, changed, version));
  CHECK(changed);
  int64_t first = version;
  // A second assignment that expected "no owner" loses: pool2 got there first.
  REQUIRE(store.assign("alice", "pool3", "", false, changed, version));
  CHECK_FALSE(changed);
  REQUIRE(store.assign("alice", "pool3", "pool1", true, changed, version));
  CHECK_FALSE(changed);
  REQUIRE(store.read("alice", row, found));
  CHECK(found);
  CHECK(row.server == "pool2");
  CHECK(row.version == first);
  REQUIRE(store.assign("alice", "pool3", "pool2", true, changed, version));
  CHECK(changed);
  CHECK(version >= first);
  REQUIRE(store.touch("alice"));

  std::vector<MonitorRow> rows;
  REQUIRE(store.changes(0, rows));
  REQUIRE(rows.size() == 1);
  CHECK(rows[0].server == "pool3");
  CHECK(rows[0].version == version);

  int64_t count = -1;
  REQUIRE(store.expire("pool3", 3'600'000, count));
  CHECK(count == 0);  // connected just now
  REQUIRE(store.expire("pool3", -1, count));  // every assignment is older than -1 ms
  CHECK(count == 1);
  REQUIRE(store.read("alice", row, found));
  CHECK(row.server.empty());
  // Cleared is free: an assignment expecting no owner wins again.
  REQUIRE(store.assign("alice", "pool1", "", true, changed, version));
  CHECK(changed);
}

}  // namespace

TEST_CASE("SQLite, default schema: assign, compare-and-set, touch, changes, expire") {
  exercise(TableSchema::standard, "schema-sqlite.sql");
}

TEST_CASE("SQLite, pool schema (conf/sql/schema-pool-sqlite.sql): the same") {
  exercise(TableSchema::pool, "schema-pool-sqlite.sql");
}

}  // namespace poolsim
