// Component tests for the MariaDB and ODBC ownership sources against a real MariaDB server
// (the fixture's STATE_DIR/settings named by SPRAYER_TEST_MARIADB_FILE) and, through
// unixODBC, against the MariaDB and SQLite ODBC drivers. Tests use unique keys and clean up.
#include <doctest/doctest.h>

#include <mysql.h>
#include <sqlite3.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "affinity/ownership_source.h"
#include "tests/unit/test_loop.h"

using namespace sprayer::affinity;
using namespace std::chrono_literals;

namespace {

using sprayer::test::TestLoop;

struct Fixture {
  std::string host;
  unsigned port = 0;
  std::string user;
  std::string database;
  std::string socket;
  std::string password_file;
};

std::optional<Fixture> fixture() {
  const char* file = std::getenv("SPRAYER_TEST_MARIADB_FILE");
  if (!file || !*file) return std::nullopt;
  std::ifstream in(file);
  Fixture f;
  in >> f.host >> f.port >> f.user >> f.database >> f.socket;
  REQUIRE_MESSAGE(f.port != 0, "SPRAYER_TEST_MARIADB_FILE=" << file << " holds no settings");
  f.password_file = std::filesystem::path(file).parent_path() / "password";
  return f;
}

#define REQUIRE_MARIADB(f)                                                                    \
  const auto f##_opt = fixture();                                                             \
  if (!f##_opt) {                                                                             \
    MESSAGE("skipped: SPRAYER_TEST_MARIADB_FILE is not set (ctest sets it; or run "           \
            "tests/integration/mariadb_server.py start DIR and point it at DIR/settings)");  \
    return;                                                                                   \
  }                                                                                           \
  const Fixture f = *f##_opt

// The pool's side: root over the fixture's socket, blocking.
class PoolWriter {
 public:
  explicit PoolWriter(const Fixture& f) : db_(mysql_init(nullptr)) {
    REQUIRE_MESSAGE(mysql_real_connect(db_, nullptr, "root", nullptr, f.database.c_str(), 0, f.socket.c_str(),
                                       CLIENT_MULTI_STATEMENTS),
                    mysql_error(db_));
    exec("SET time_zone = '+00:00'");
  }
  ~PoolWriter() { mysql_close(db_); }

  void exec(const std::string& sql) {
    REQUIRE_MESSAGE(mysql_query(db_, sql.c_str()) == 0, sql << ": " << mysql_error(db_));
    do {
      if (MYSQL_RES* r = mysql_store_result(db_)) mysql_free_result(r);
    } while (mysql_next_result(db_) == 0);
  }

  // The Traveler pool's way: server_name and changed_at in one statement.
  // changed_at: an SQL expression.
  void monitor(const std::string& user, const std::optional<std::string>& server,
               const std::string& at = "UTC_TIMESTAMP(6)") {
    const std::string name = server ? "'" + *server + "'" : "NULL";
    exec("INSERT INTO tr_user_monitor (user_name, server_name, last_connect_at, changed_at) VALUES ('" + user + "', " +
         name + ", UTC_TIMESTAMP(6), " + at + ") ON DUPLICATE KEY UPDATE server_name = " + name +
         ", changed_at = " + at);
  }

 private:
  MYSQL* db_;
};

struct Seen {
  std::shared_ptr<const OwnershipSnapshot> snapshot;
  int snapshots = 0;
  std::vector<PoolServerRow> servers;
  int server_reads = 0;

  OwnershipCallbacks callbacks() {
    OwnershipCallbacks cb;
    cb.on_snapshot = [this](std::shared_ptr<const OwnershipSnapshot> s) {
      snapshot = std::move(s);
      ++snapshots;
    };
    cb.on_servers = [this](std::vector<PoolServerRow> rows) {
      servers = std::move(rows);
      ++server_reads;
    };
    return cb;
  }
  std::optional<std::string> owner(std::string_view key) const {
    if (!snapshot) return std::nullopt;
    const auto o = snapshot->find(key);
    if (!o) return std::nullopt;
    return snapshot->server_ids()[o->server];
  }
};

// The pool schema of docs/ownership.md, with change_detection: watermark.
OwnershipQueries pool_queries(ChangeDetection mode) {
  OwnershipQueries q;
  const std::string change = mode == ChangeDetection::full_scan ? "" : ", changed_at";
  q.full = "SELECT user_name, server_name" + change + " FROM tr_user_monitor WHERE user_name LIKE 'it\\_%'";
  q.delta = "SELECT user_name, server_name, changed_at FROM tr_user_monitor WHERE changed_at > ? AND user_name LIKE "
            "'it\\_%' ORDER BY changed_at";
  q.servers = "SELECT server_name, address, availability_index, heartbeat_at FROM tr_pool_server";
  q.change.clear();
  return q;
}

OwnershipSourceConfig mariadb_config(const Fixture& f, ChangeDetection mode) {
  OwnershipSourceConfig c;
  c.kind = SourceKind::mariadb;
  c.mariadb.host = f.host;
  c.mariadb.port = f.port;
  c.mariadb.user = f.user;
  c.mariadb.database = f.database;
  c.mariadb.password_file = f.password_file;
  c.change_detection = mode;
  c.queries = pool_queries(mode);
  c.poll_interval = 50ms;
  c.reconnect_min = 20ms;
  c.reconnect_max = 200ms;
  c.connect_timeout = 3s;
  c.query_timeout = 5s;
  return c;
}

OwnershipSourceConfig odbc_mariadb_config(const Fixture& f, ChangeDetection mode) {
  OwnershipSourceConfig c = mariadb_config(f, mode);
  c.kind = SourceKind::odbc;
  c.odbc.connection = "DRIVER={MariaDB Unicode};SERVER=" + f.host + ";PORT=" + std::to_string(f.port) +
                      ";DATABASE=" + f.database + ";UID=" + f.user;
  c.odbc.password_file = f.password_file;
  return c;
}

void stop(TestLoop& loop, std::unique_ptr<OwnershipSource>& source) {
  bool done = false;
  source->stop([&] { done = true; });
  CHECK_FALSE(done);  // never from inside stop()
  REQUIRE(loop.run_until([&] { return done; }, 20s));
  source.reset();
}

// Owner changes of a Traveler-shaped table reach the snapshot; rows read again inside the
// overlap are not changes; a commit that lands late with an older timestamp is still read.
void follows_the_pool(const Fixture& f, OwnershipSourceConfig config) {
  PoolWriter pool(f);
  pool.exec("DELETE FROM tr_user_monitor WHERE user_name LIKE 'it\\_%'");
  pool.exec("INSERT INTO tr_pool_server (server_name, address, availability_index, heartbeat_at) VALUES "
            "('trav1', '127.0.0.1:1', 100, UTC_TIMESTAMP(6)), ('trav2', '127.0.0.1:2', -200, UTC_TIMESTAMP(6)) "
            "ON DUPLICATE KEY UPDATE availability_index = VALUES(availability_index), heartbeat_at = UTC_TIMESTAMP(6)");
  for (int i = 0; i < 50; ++i) {
    pool.monitor("it_user" + std::to_string(i), i % 2 ? "trav2" : "trav1", "UTC_TIMESTAMP(6) - INTERVAL 1 MINUTE");
  }
  pool.monitor("it_nobody", std::nullopt);

  TestLoop loop;
  Seen seen;
  auto source = make_ownership_source(loop.get(), config, seen.callbacks());
  source->start();
  REQUIRE(loop.run_until([&] { return seen.snapshot && seen.server_reads > 0; }, 10s));
  CHECK(seen.snapshot->size() == 50);
  CHECK(seen.owner("it_user0") == "trav1");
  CHECK(seen.owner("it_user1") == "trav2");
  CHECK_FALSE(seen.owner("it_nobody"));
  CHECK(source->status().state == SourceState::ok);
  const PoolServerRow* trav2 = nullptr;
  for (const auto& s : seen.servers) trav2 = s.server_id == "trav2" ? &s : trav2;
  REQUIRE(trav2);
  CHECK(trav2->availability == -200);
  CHECK(trav2->heartbeat_at.has_value());

  // A move, then an unassignment.
  pool.monitor("it_user0", "trav2");
  REQUIRE(loop.run_until([&] { return seen.owner("it_user0") == "trav2"; }, 5s));
  pool.monitor("it_user1", std::nullopt);
  REQUIRE(loop.run_until([&] { return !seen.owner("it_user1"); }, 5s));

  // Quiet polls: the overlap is read again, and nothing new is published.
  const int before = seen.snapshots;
  const std::uint64_t skipped = source->status().counters.rows_skipped;
  REQUIRE(loop.run_until([&] { return source->status().counters.rows_skipped > skipped + 2; }, 5s));
  if (config.change_detection != ChangeDetection::full_scan) CHECK(seen.snapshots == before);

  // A commit that lands late: its changed_at is a second older than rows already read.
  pool.monitor("it_late", "trav1", "'2000-01-01 00:00:00'");  // far outside any overlap: not read by a delta
  pool.monitor("it_user2", "trav2");
  REQUIRE(loop.run_until([&] { return seen.owner("it_user2") == "trav2"; }, 5s));
  pool.exec("UPDATE tr_user_monitor SET server_name = 'trav2', changed_at = UTC_TIMESTAMP(6) - INTERVAL 1 SECOND "
            "WHERE user_name = 'it_user4'");
  REQUIRE(loop.run_until([&] { return seen.owner("it_user4") == "trav2"; }, 5s));
  if (config.change_detection == ChangeDetection::watermark) {
    CHECK_FALSE(seen.owner("it_late"));  // caught only by the periodic full read
  } else {
    REQUIRE(loop.run_until([&] { return seen.owner("it_late") == "trav1"; }, 5s));
  }

  stop(loop, source);
  CHECK(loop.close() == 0);
  pool.exec("DELETE FROM tr_user_monitor WHERE user_name LIKE 'it\\_%'");
}

}  // namespace

TEST_CASE("mariadb source: follows a Traveler-shaped table by watermark") {
  REQUIRE_MARIADB(f);
  follows_the_pool(f, mariadb_config(f, ChangeDetection::watermark));
}

TEST_CASE("mariadb source: full_scan finds moves without a change column") {
  REQUIRE_MARIADB(f);
  follows_the_pool(f, mariadb_config(f, ChangeDetection::full_scan));
}

TEST_CASE("mariadb source: epoch mode on the default schema") {
  REQUIRE_MARIADB(f);
  PoolWriter pool(f);
  pool.exec("DELETE FROM user_owner WHERE user_key LIKE 'ep\\_%'");
  pool.exec("UPDATE pool_epoch SET epoch = epoch + 2 WHERE id = 1");
  pool.exec("INSERT INTO user_owner SELECT 'ep_a', 's1', epoch - 1, UTC_TIMESTAMP(6) FROM pool_epoch; "
            "INSERT INTO user_owner SELECT 'ep_b', 's2', epoch, UTC_TIMESTAMP(6) FROM pool_epoch");
  OwnershipSourceConfig config = mariadb_config(f, ChangeDetection::epoch);
  config.queries = OwnershipQueries{};  // the defaults, $1 and all

  TestLoop loop;
  Seen seen;
  auto source = make_ownership_source(loop.get(), config, seen.callbacks());
  source->start();
  REQUIRE(loop.run_until([&] { return seen.owner("ep_b") == "s2"; }, 10s));
  const std::int64_t epoch = seen.snapshot->epoch();
  pool.exec("UPDATE pool_epoch SET epoch = epoch + 1 WHERE id = 1; "
            "UPDATE user_owner SET server_id = 's3', epoch = (SELECT epoch FROM pool_epoch) WHERE user_key = 'ep_a'");
  REQUIRE(loop.run_until([&] { return seen.owner("ep_a") == "s3"; }, 5s));
  CHECK(seen.snapshot->epoch() == epoch + 1);
  CHECK(source->status().counters.deltas_applied >= 1);
  stop(loop, source);
  CHECK(loop.close() == 0);
  pool.exec("DELETE FROM user_owner WHERE user_key LIKE 'ep\\_%'");
}

TEST_CASE("mariadb source: a refused connection or a wrong password degrades visibly and retries") {
  REQUIRE_MARIADB(f);
  const std::string bad_password = std::filesystem::temp_directory_path() / ("sprayer-bad-pw-" + std::to_string(getpid()));
  std::ofstream(bad_password) << "not-the-password-xyzzy\n";
  for (const bool refused : {true, false}) {
    OwnershipSourceConfig config = mariadb_config(f, ChangeDetection::watermark);
    if (refused) {
      config.mariadb.port = 1;  // nothing listens on loopback port 1
    } else {
      config.mariadb.password_file = bad_password;
    }
    TestLoop loop;
    Seen seen;
    auto source = make_ownership_source(loop.get(), config, seen.callbacks());
    source->start();
    REQUIRE(loop.run_until([&] { return source->status().counters.reconnects >= 2; }, 10s));
    const SourceStatus st = source->status();
    CHECK(st.state == SourceState::none);
    CHECK(st.counters.errors >= 2);
    CHECK(st.last_error.rfind("cannot connect: ", 0) == 0);
    CHECK(st.last_error.find("xyzzy") == std::string::npos);
    if (!refused) CHECK(st.last_error.find("Access denied") != std::string::npos);
    stop(loop, source);
    CHECK(loop.close() == 0);
  }
  std::filesystem::remove(bad_password);
}

TEST_CASE("odbc source through the MariaDB ODBC driver: watermark") {
  REQUIRE_MARIADB(f);
  follows_the_pool(f, odbc_mariadb_config(f, ChangeDetection::watermark));
}

TEST_CASE("odbc source through the SQLite ODBC driver: watermark over ISO text timestamps") {
  const std::string dir = std::filesystem::temp_directory_path() / ("sprayer-odbc-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/pool.db";
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
  const auto exec = [&](const std::string& sql) {
    char* err = nullptr;
    REQUIRE_MESSAGE(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err) == SQLITE_OK, (err ? err : ""));
  };
  exec("CREATE TABLE tr_user_monitor (user_name TEXT PRIMARY KEY, server_name TEXT, last_connect_at TEXT NOT NULL, "
       "changed_at TEXT NOT NULL);"
       "CREATE TABLE tr_pool_server (server_name TEXT PRIMARY KEY, address TEXT NOT NULL, availability_index "
       "INTEGER NOT NULL, heartbeat_at TEXT NOT NULL);"
       "INSERT INTO tr_pool_server VALUES ('trav1', '127.0.0.1:1', 100, strftime('%Y-%m-%d %H:%M:%f000', 'now'));");
  const auto monitor = [&](const std::string& user, const std::string& server) {
    exec("INSERT INTO tr_user_monitor VALUES ('" + user + "', '" + server +
         "', strftime('%Y-%m-%d %H:%M:%f000', 'now'), strftime('%Y-%m-%d %H:%M:%f000', 'now')) "
         "ON CONFLICT (user_name) DO UPDATE SET server_name = excluded.server_name, changed_at = excluded.changed_at");
  };
  for (int i = 0; i < 20; ++i) monitor("it_user" + std::to_string(i), "trav1");

  OwnershipSourceConfig config;
  config.kind = SourceKind::odbc;
  config.odbc.connection = "DRIVER={SQLite3};Database=" + path;
  config.change_detection = ChangeDetection::watermark;
  config.queries = pool_queries(ChangeDetection::watermark);
  // SQLite's LIKE has no default escape character.
  config.queries.full = "SELECT user_name, server_name, changed_at FROM tr_user_monitor";
  config.queries.delta = "SELECT user_name, server_name, changed_at FROM tr_user_monitor WHERE changed_at > ? "
                         "ORDER BY changed_at";
  config.poll_interval = 50ms;
  TestLoop loop;
  Seen seen;
  auto source = make_ownership_source(loop.get(), config, seen.callbacks());
  source->start();
  REQUIRE(loop.run_until([&] { return seen.snapshot && seen.server_reads > 0; }, 10s));
  CHECK(seen.snapshot->size() == 20);
  REQUIRE(seen.servers.size() == 1);
  CHECK(seen.servers[0].heartbeat_at.has_value());
  monitor("it_user3", "trav2");
  REQUIRE(loop.run_until([&] { return seen.owner("it_user3") == "trav2"; }, 5s));
  CHECK(source->status().counters.deltas_applied >= 1);
  CHECK(source->status().counters.full_loads == 1);
  stop(loop, source);
  CHECK(loop.close() == 0);
  sqlite3_close(db);
  std::filesystem::remove_all(dir);
}
