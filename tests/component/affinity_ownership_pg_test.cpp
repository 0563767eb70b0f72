// Component tests for the PostgreSQL ownership source against a real server (the file named
// by SPRAYER_TEST_PG_CONNINFO_FILE); tests use tables of their own or unique keys, and clean up.
#include <doctest/doctest.h>

#include <libpq-fe.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "affinity/ownership_source.h"
#include "affinity/snapshot_cache.h"
#include "tests/unit/test_loop.h"

using namespace sprayer::affinity;
using namespace std::chrono_literals;

namespace {

using Clock = std::chrono::steady_clock;

using sprayer::test::TestLoop;

// The fixture server's conninfo, or nullopt (the test is then skipped with a message).
std::optional<std::string> fixture_conninfo() {
  const char* file = std::getenv("SPRAYER_TEST_PG_CONNINFO_FILE");
  if (!file || !*file) return std::nullopt;
  std::ifstream in(file);
  std::string line;
  std::getline(in, line);
  REQUIRE_MESSAGE(!line.empty(), "SPRAYER_TEST_PG_CONNINFO_FILE=" << file << " holds no conninfo");
  return line;
}

#define REQUIRE_PG(conninfo)                                                                       \
  const auto conninfo##_opt = fixture_conninfo();                                                  \
  if (!conninfo##_opt) {                                                                           \
    MESSAGE("skipped: SPRAYER_TEST_PG_CONNINFO_FILE is not set (ctest sets it; or run "            \
            "tests/integration/pg_server.py start DIR and point it at DIR/conninfo)");             \
    return;                                                                                        \
  }                                                                                                \
  const std::string conninfo = *conninfo##_opt

std::string conninfo_value(const std::string& conninfo, const std::string& key) {
  std::istringstream in(conninfo);
  std::string part;
  while (in >> part) {
    if (part.rfind(key + "=", 0) == 0) return part.substr(key.size() + 1);
  }
  return {};
}

// The pool's side: a blocking connection that writes by the epoch rule.
class PoolWriter {
 public:
  explicit PoolWriter(const std::string& conninfo) : conn_(PQconnectdb(conninfo.c_str())) {
    REQUIRE_MESSAGE(PQstatus(conn_) == CONNECTION_OK, PQerrorMessage(conn_));
    PQsetNoticeProcessor(conn_, [](void*, const char*) {}, nullptr);  // "does not exist, skipping"
  }
  ~PoolWriter() { PQfinish(conn_); }

  std::string exec(const std::string& sql, std::vector<std::optional<std::string>> params = {}) {
    std::vector<const char*> values;
    for (const auto& p : params) values.push_back(p ? p->c_str() : nullptr);
    PGresult* r = PQexecParams(conn_, sql.c_str(), static_cast<int>(values.size()), nullptr, values.data(), nullptr,
                               nullptr, 0);
    const ExecStatusType status = PQresultStatus(r);
    const std::string error = PQresultErrorMessage(r);
    std::string value;
    if (status == PGRES_TUPLES_OK && PQntuples(r) > 0) value = PQgetvalue(r, 0, 0);
    PQclear(r);
    REQUIRE_MESSAGE((status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK), sql << ": " << error);
    return value;
  }

  // One owner change with the next epoch, in one statement (its own transaction).
  std::int64_t assign(const std::string& table, const std::string& key, std::optional<std::string> server) {
    return std::stoll(exec("WITH e AS (UPDATE pool_epoch SET epoch = epoch + 1 WHERE id = 1 RETURNING epoch) "
                           "INSERT INTO " + table + " (user_key, server_id, epoch, changed_at) "
                           "SELECT $1, $2, e.epoch, now() FROM e ON CONFLICT (user_key) DO UPDATE SET "
                           "server_id = EXCLUDED.server_id, epoch = EXCLUDED.epoch, changed_at = EXCLUDED.changed_at "
                           "RETURNING epoch",
                           {key, server}));
  }

  // n users prefix<i> over `servers` servers named server_prefix<j>, one epoch for all.
  std::int64_t assign_many(const std::string& table, const std::string& prefix, int n, int servers,
                           const std::string& server_prefix = "s") {
    return std::stoll(exec("WITH e AS (UPDATE pool_epoch SET epoch = epoch + 1 WHERE id = 1 RETURNING epoch), "
                           "i AS (INSERT INTO " + table + " (user_key, server_id, epoch, changed_at) "
                           "SELECT $1 || g, $2 || (g % " + std::to_string(servers) + "), e.epoch, now() "
                           "FROM e, generate_series(0, " + std::to_string(n - 1) + ") g) SELECT epoch FROM e",
                           {prefix, server_prefix}));
  }

 private:
  PGconn* conn_;
};

int test_counter = 0;

// Tables of the default shape, with the NOTIFY triggers of notify-postgresql.sql, dropped
// at the end; the queries of a config pointed at them.
struct OwnTables {
  PoolWriter& pool;
  std::string tag;
  std::string owners;
  std::string servers;

  explicit OwnTables(PoolWriter& p, bool notify = true)
      : pool(p), tag("own_" + std::to_string(::getpid()) + "_" + std::to_string(++test_counter)),
        owners(tag + "_user_owner"), servers(tag + "_pool_server") {
    pool.exec("CREATE TABLE " + owners +
              " (user_key TEXT PRIMARY KEY, server_id TEXT, epoch BIGINT NOT NULL, changed_at TIMESTAMPTZ NOT NULL)");
    pool.exec("CREATE TABLE " + servers +
              " (server_id TEXT PRIMARY KEY, address TEXT NOT NULL, heartbeat_at TIMESTAMPTZ NOT NULL, "
              "availability INTEGER NOT NULL DEFAULT 0)");
    if (!notify) return;
    pool.exec("CREATE TRIGGER " + tag + "_owner AFTER INSERT OR UPDATE ON " + owners +
              " FOR EACH ROW EXECUTE FUNCTION sprayer_notify_owner()");
    pool.exec("CREATE TRIGGER " + tag + "_server AFTER INSERT OR UPDATE OR DELETE ON " + servers +
              " FOR EACH ROW EXECUTE FUNCTION sprayer_notify_server()");
  }
  ~OwnTables() {
    pool.exec("DROP TABLE IF EXISTS " + owners);
    pool.exec("DROP TABLE IF EXISTS " + servers);
  }

  void apply(OwnershipQueries& q) const {
    q.full = "SELECT user_key, server_id, epoch FROM " + owners;
    q.delta = "SELECT user_key, server_id, epoch FROM " + owners + " WHERE epoch > $1 ORDER BY epoch";
    q.servers = "SELECT server_id, address, availability, heartbeat_at FROM " + servers;
  }
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

OwnershipSourceConfig pg_config(const std::string& conninfo) {
  OwnershipSourceConfig config;
  config.kind = SourceKind::postgresql;
  config.pg_conninfo = conninfo;
  config.reconnect_min = 50ms;
  config.reconnect_max = 200ms;
  config.connect_timeout = 5s;
  return config;
}

void stop(TestLoop& loop, std::unique_ptr<OwnershipSource>& source) {
  bool done = false;
  source->stop([&] { done = true; });
  CHECK_FALSE(done);
  REQUIRE(loop.run_until([&] { return done; }, 10s));
  source.reset();
}

// A loopback port nothing listens on (bound, then released).
int closed_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

TEST_CASE("pg source: full load and servers with the default schema and queries") {
  REQUIRE_PG(conninfo);
  PoolWriter pool(conninfo);
  const std::string prefix = "pgfull" + std::to_string(::getpid()) + "-";
  pool.exec("DELETE FROM user_owner WHERE user_key LIKE $1 || '%'", {prefix});
  pool.exec("DELETE FROM pool_server WHERE server_id LIKE $1 || '%'", {prefix});
  const std::int64_t epoch = pool.assign_many("user_owner", prefix + "u", 500, 3, prefix + "s");
  pool.assign("user_owner", prefix + "u4", std::nullopt);
  pool.exec("INSERT INTO pool_server (server_id, address, heartbeat_at, availability) VALUES "
            "($1 || 's0', '10.0.0.1:443', '2024-05-01 14:34:56+02', 100), ($1 || 's1', '10.0.0.2:443', now(), -1)",
            {prefix});

  TestLoop loop;
  Seen seen;
  auto source = make_ownership_source(loop.get(), pg_config(conninfo), seen.callbacks());
  source->start();
  REQUIRE(loop.run_until([&] { return seen.snapshot && seen.server_reads > 0; }, 10s));

  CHECK(seen.snapshot->epoch() >= epoch);
  CHECK(seen.owner(prefix + "u0") == prefix + "s0");
  CHECK(seen.owner(prefix + "u1") == prefix + "s1");
  CHECK(seen.owner(prefix + "u499") == prefix + "s1");
  CHECK_FALSE(seen.owner(prefix + "u4"));
  const auto s0 = std::find_if(seen.servers.begin(), seen.servers.end(),
                               [&](const PoolServerRow& r) { return r.server_id == prefix + "s0"; });
  REQUIRE(s0 != seen.servers.end());
  CHECK(s0->address == "10.0.0.1:443");
  CHECK(s0->availability == 100);
  REQUIRE(s0->heartbeat_at.has_value());
  CHECK(s0->heartbeat_at->time_since_epoch() == std::chrono::seconds(1714566896));

  const SourceStatus st = source->status();
  CHECK(st.state == SourceState::ok);
  CHECK(st.counters.full_loads == 1);
  CHECK(st.counters.errors == 0);
  CHECK_FALSE(st.stale);

  stop(loop, source);
  CHECK(loop.close() == 0);
  pool.exec("DELETE FROM user_owner WHERE user_key LIKE $1 || '%'", {prefix});
  pool.exec("DELETE FROM pool_server WHERE server_id LIKE $1 || '%'", {prefix});
}

TEST_CASE("pg source: NOTIFY drives deltas within milliseconds; tombstones; server changes") {
  REQUIRE_PG(conninfo);
  PoolWriter pool(conninfo);
  OwnTables tables(pool);
  pool.assign_many(tables.owners, "u", 100, 3);

  TestLoop loop;
  Seen seen;
  OwnershipSourceConfig config = pg_config(conninfo);
  tables.apply(config.queries);
  config.delta_poll_interval = 60s;  // only notifications can explain a quick delta
  config.servers_interval = 60s;
  auto source = make_ownership_source(loop.get(), config, seen.callbacks());
  source->start();
  REQUIRE(loop.run_until([&] { return seen.snapshot != nullptr && seen.server_reads > 0; }, 10s));
  CHECK(seen.snapshot->size() >= 100);

  std::vector<double> delays;
  for (int i = 0; i < 20; ++i) {
    const std::string key = "u" + std::to_string(i);
    const std::string server = "moved" + std::to_string(i);
    pool.assign(tables.owners, key, server);
    const auto committed = Clock::now();
    REQUIRE(loop.run_until([&] { return seen.owner(key) == server; }, 2s));
    delays.push_back(std::chrono::duration<double, std::milli>(Clock::now() - committed).count());
  }
  MESSAGE("pg commit -> snapshot via NOTIFY (20 commits): min " << *std::min_element(delays.begin(), delays.end())
                                                               << " ms, median " << median(delays) << " ms, max "
                                                               << *std::max_element(delays.begin(), delays.end()) << " ms");
  CHECK(median(delays) < 500);

  pool.assign(tables.owners, "u50", std::nullopt);
  REQUIRE(loop.run_until([&] { return !seen.owner("u50"); }, 2s));

  const int reads = seen.server_reads;
  pool.exec("INSERT INTO " + tables.servers + " VALUES ('s0', '10.0.0.1:443', now(), 5)");
  REQUIRE(loop.run_until([&] { return seen.server_reads > reads && !seen.servers.empty(); }, 2s));
  CHECK(seen.servers[0].availability == 5);

  // A burst while queries are in flight: coalesced, nothing lost.
  for (int i = 0; i < 50; ++i) pool.assign(tables.owners, "burst" + std::to_string(i), std::string("s1"));
  REQUIRE(loop.run_until([&] { return seen.owner("burst49") == "s1"; }, 5s));
  for (int i = 0; i < 50; ++i) CHECK(seen.owner("burst" + std::to_string(i)) == "s1");

  const SourceStatus st = source->status();
  CHECK(st.counters.full_loads == 1);
  CHECK(st.counters.notifications >= 71);
  CHECK(st.counters.deltas_applied >= 21);
  CHECK(st.counters.errors == 0);

  stop(loop, source);
  CHECK(loop.close() == 0);
}

TEST_CASE("pg source: without notifications the delta poll and the resync still catch changes") {
  REQUIRE_PG(conninfo);
  PoolWriter pool(conninfo);
  OwnTables tables(pool, /*notify=*/false);  // a pool that never installed the triggers
  pool.assign_many(tables.owners, "u", 20, 2);

  TestLoop loop;
  Seen seen;
  OwnershipSourceConfig config = pg_config(conninfo);
  tables.apply(config.queries);
  config.delta_poll_interval = 200ms;
  config.resync_interval = 300ms;
  auto source = make_ownership_source(loop.get(), config, seen.callbacks());
  source->start();
  REQUIRE(loop.run_until([&] { return seen.snapshot != nullptr; }, 10s));

  const auto committed = Clock::now();
  pool.assign(tables.owners, "u1", std::string("polled"));
  REQUIRE(loop.run_until([&] { return seen.owner("u1") == "polled"; }, 2s));
  CHECK(Clock::now() - committed < 200ms + 150ms);
  // A row deleted outright (not tombstoned) only a full read can notice.
  pool.exec("DELETE FROM " + tables.owners + " WHERE user_key = 'u2'");
  REQUIRE(loop.run_until([&] { return !seen.owner("u2"); }, 2s));
  const SourceStatus st = source->status();
  CHECK(st.counters.full_loads >= 2);
  CHECK(st.counters.errors == 0);

  stop(loop, source);
  CHECK(loop.close() == 0);
}

TEST_CASE("pg source: outage (backend killed, logins refused) -> degraded, snapshot kept -> reconnect, full reload") {
  REQUIRE_PG(conninfo);
  PoolWriter pool(conninfo);
  OwnTables tables(pool);
  const std::string role = tables.tag + "_reader";
  pool.exec("CREATE ROLE " + role + " LOGIN");
  pool.exec("GRANT SELECT ON " + tables.owners + ", " + tables.servers + " TO " + role);
  pool.assign_many(tables.owners, "u", 50, 2);

  TestLoop loop;
  Seen seen;
  OwnershipSourceConfig config = pg_config(conninfo + " user=" + role);
  tables.apply(config.queries);
  config.delta_poll_interval = 60s;
  auto source = make_ownership_source(loop.get(), config, seen.callbacks());
  source->start();
  REQUIRE(loop.run_until([&] { return source->status().state == SourceState::ok; }, 10s));
  const auto served = seen.snapshot;

  pool.exec("ALTER ROLE " + role + " NOLOGIN");
  pool.exec("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", {role});
  const auto killed = Clock::now();
  REQUIRE(loop.run_until([&] { return source->status().state == SourceState::degraded; }, 5s));
  MESSAGE("pg backend terminated -> degraded in "
          << std::chrono::duration<double, std::milli>(Clock::now() - killed).count() << " ms");
  CHECK(source->snapshot() == served);
  CHECK(seen.owner("u1") == "s1");
  // Usually the server's reason arrives first; a reset (we sent a query meanwhile, e.g. for
  // another test's NOTIFY) discards it.
  const std::string reason = source->status().last_error;
  CHECK_MESSAGE((reason.find("administrator command") != std::string::npos ||
                 reason.find("connection lost") != std::string::npos),
                reason);

  // Changes made while sprayer is away: their notifications are lost.
  pool.assign(tables.owners, "u1", std::string("while-away"));
  REQUIRE(loop.run_until([&] { return source->status().counters.reconnects >= 3; }, 5s));
  SourceStatus st = source->status();
  CHECK(st.state == SourceState::degraded);
  CHECK(st.last_error.find("not permitted to log in") != std::string::npos);
  CHECK(seen.owner("u1") == "s1");

  pool.exec("ALTER ROLE " + role + " LOGIN");
  const auto back = Clock::now();
  REQUIRE(loop.run_until([&] { return source->status().counters.full_loads == 2; }, 5s));
  MESSAGE("pg logins allowed again -> reloaded in " << std::chrono::duration<double, std::milli>(Clock::now() - back).count()
                                                   << " ms (backoff 50..200 ms)");
  st = source->status();
  CHECK(st.state == SourceState::ok);
  CHECK(seen.owner("u1") == "while-away");  // the full reload caught it

  // LISTEN is back: a new change arrives by notification.
  pool.assign(tables.owners, "u2", std::string("after"));
  REQUIRE(loop.run_until([&] { return seen.owner("u2") == "after"; }, 2s));
  CHECK(source->status().counters.full_loads == 2);

  stop(loop, source);
  CHECK(loop.close() == 0);
  pool.exec("DROP TABLE " + tables.owners);
  pool.exec("DROP TABLE " + tables.servers);
  pool.exec("DROP ROLE " + role);
}

TEST_CASE("pg source: multi-host conninfo whose first host refuses connections") {
  REQUIRE_PG(conninfo);
  PoolWriter pool(conninfo);
  OwnTables tables(pool);
  pool.assign_many(tables.owners, "u", 10, 2);

  const std::string multi = "host=127.0.0.1,127.0.0.1 port=" + std::to_string(closed_port()) + "," +
                            conninfo_value(conninfo, "port") + " dbname=" + conninfo_value(conninfo, "dbname") +
                            " user=" + conninfo_value(conninfo, "user") +
                            " connect_timeout=3 target_session_attrs=read-write";
  TestLoop loop;
  Seen seen;
  OwnershipSourceConfig config = pg_config(multi);
  tables.apply(config.queries);
  auto source = make_ownership_source(loop.get(), config, seen.callbacks());
  source->start();
  INFO("conninfo: " << multi);
  REQUIRE_MESSAGE(loop.run_until([&] { return source->status().state == SourceState::ok; }, 10s),
                  "last_error: " << source->status().last_error);
  CHECK(seen.snapshot->size() == 10);
  CHECK(source->status().counters.errors == 0);

  pool.assign(tables.owners, "u3", std::string("moved"));  // and LISTEN works there
  REQUIRE(loop.run_until([&] { return seen.owner("u3") == "moved"; }, 2s));

  stop(loop, source);
  CHECK(loop.close() == 0);
}

TEST_CASE("pg source: unreachable server -> none with the reason, or the cache file") {
  REQUIRE_PG(conninfo);
  const std::string dead = "host=127.0.0.1 port=" + std::to_string(closed_port()) + " dbname=pool user=postgres";
  char tmpl[] = "/tmp/sprayer-pg-cache-XXXXXX";
  REQUIRE(::mkdtemp(tmpl) != nullptr);
  const std::string dir = tmpl;
  TestLoop loop;

  SUBCASE("no cache") {
    Seen seen;
    auto source = make_ownership_source(loop.get(), pg_config(dead), seen.callbacks());
    source->start();
    REQUIRE(loop.run_until([&] { return source->status().counters.errors >= 2; }, 5s));
    const SourceStatus st = source->status();
    CHECK(st.state == SourceState::none);
    CHECK_MESSAGE(st.last_error.find("Connection refused") != std::string::npos, st.last_error);
    CHECK(st.counters.reconnects >= 1);
    CHECK_FALSE(seen.snapshot);
    stop(loop, source);
  }
  SUBCASE("with a cache") {
    OwnershipRowBlock rows;
    rows.add("alice", std::string_view("s1"), 7);
    rows.add("bob", std::string_view("s2"), 8);
    REQUIRE(write_snapshot_cache(dir + "/owners.cache", 8, rows).ok());
    Seen seen;
    OwnershipSourceConfig config = pg_config(dead);
    config.cache_file = dir + "/owners.cache";
    auto source = make_ownership_source(loop.get(), config, seen.callbacks());
    source->start();
    REQUIRE(loop.run_until([&] { return seen.snapshot != nullptr; }, 5s));
    const SourceStatus st = source->status();
    CHECK(st.state == SourceState::from_cache);
    CHECK(st.epoch == 8);
    CHECK(seen.owner("bob") == "s2");
    stop(loop, source);
  }
  SUBCASE("a query the schema cannot answer") {
    PoolWriter pool(conninfo);
    Seen seen;
    OwnershipSourceConfig config = pg_config(conninfo);
    config.queries.full = "SELECT user_key, server_id, epoch FROM no_such_table";
    auto source = make_ownership_source(loop.get(), config, seen.callbacks());
    source->start();
    REQUIRE(loop.run_until([&] { return source->status().counters.errors >= 2; }, 5s));
    const SourceStatus st = source->status();
    CHECK(st.state == SourceState::none);
    CHECK(st.last_error.find("full query failed") != std::string::npos);
    CHECK(st.last_error.find("no_such_table") != std::string::npos);
    stop(loop, source);
  }
  CHECK(loop.close() == 0);
  std::filesystem::remove_all(dir);
}

TEST_CASE("pg source: a server that never answers -> connect timeout; the cache is served after the grace time") {
  REQUIRE_PG(conninfo);
  // A listening socket that never accepts: the TCP connect succeeds (the kernel's
  // backlog), the startup packet is never answered.
  const int listener = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  REQUIRE(::listen(listener, 16) == 0);
  socklen_t len = sizeof addr;
  ::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len);

  char tmpl[] = "/tmp/sprayer-pg-grace-XXXXXX";
  REQUIRE(::mkdtemp(tmpl) != nullptr);
  const std::string cache = std::string(tmpl) + "/owners.cache";
  OwnershipRowBlock rows;
  rows.add("alice", std::string_view("s1"), 3);
  REQUIRE(write_snapshot_cache(cache, 3, rows).ok());

  TestLoop loop;
  Seen seen;
  OwnershipSourceConfig config =
      pg_config("host=127.0.0.1 port=" + std::to_string(ntohs(addr.sin_port)) + " dbname=pool user=postgres");
  config.connect_timeout = 600ms;
  config.cache_grace = 150ms;
  config.cache_file = cache;
  auto source = make_ownership_source(loop.get(), config, seen.callbacks());
  const auto started = Clock::now();
  source->start();
  REQUIRE(loop.run_until([&] { return seen.snapshot != nullptr; }, 5s));
  const auto served_after = Clock::now() - started;
  CHECK(served_after >= 140ms);
  CHECK(served_after < 550ms);  // before the connect attempt gave up
  CHECK(source->status().state == SourceState::from_cache);
  CHECK(source->status().counters.errors == 0);

  REQUIRE(loop.run_until([&] { return source->status().counters.errors >= 1; }, 5s));
  const SourceStatus st = source->status();
  CHECK(st.state == SourceState::from_cache);
  CHECK(st.last_error.find("no connection after 600 ms") != std::string::npos);
  CHECK(seen.owner("alice") == "s1");

  stop(loop, source);
  CHECK(loop.close() == 0);
  ::close(listener);
  std::filesystem::remove_all(tmpl);
}

TEST_CASE("pg source: a query that stalls past query_timeout drops the connection") {
  REQUIRE_PG(conninfo);
  PoolWriter pool(conninfo);
  OwnTables tables(pool);
  pool.assign_many(tables.owners, "u", 5, 1);

  TestLoop loop;
  Seen seen;
  OwnershipSourceConfig config = pg_config(conninfo);
  tables.apply(config.queries);
  config.queries.full = "SELECT user_key, server_id, epoch FROM " + tables.owners + " WHERE pg_sleep(2) IS NOT NULL";
  config.query_timeout = 300ms;
  auto source = make_ownership_source(loop.get(), config, seen.callbacks());
  source->start();
  REQUIRE(loop.run_until([&] { return source->status().counters.errors >= 1; }, 5s));
  const SourceStatus st = source->status();
  CHECK(st.state == SourceState::none);
  CHECK(st.last_error.find("query timed out") != std::string::npos);
  CHECK_FALSE(seen.snapshot);

  stop(loop, source);
  CHECK(loop.close() == 0);
}

namespace {

std::string integration_dir() {
  return (std::filesystem::path(__FILE__).parent_path() / "../integration").lexically_normal().string();
}

// Drives tests/integration/pg_server.py's PostgresServer on a private cluster.
int pg_server_py(const std::string& state_dir, int port, const std::string& call) {
  const std::string cmd = "python3 -c \"import sys; sys.path.insert(0, '" + integration_dir() +
                          "'); import pg_server as p; s = p.PostgresServer('" + state_dir + "'); s.port = " +
                          std::to_string(port) + "; s." + call + "\" > /dev/null 2>&1";
  return std::system(cmd.c_str());
}

}  // namespace

TEST_CASE("pg source: the database server stops (immediate) and comes back on the same port") {
  REQUIRE_PG(fixture);
  (void)fixture;
  // A private cluster: stopping the shared one would break parallel test runs.
  char tmpl[] = "/tmp/sprayer-pg-restart-XXXXXX";
  REQUIRE(::mkdtemp(tmpl) != nullptr);
  const std::string state = tmpl;
  const std::string start = "python3 " + integration_dir() + "/pg_server.py start " + state + " > /dev/null 2>&1";
  REQUIRE(std::system(start.c_str()) == 0);
  std::string conninfo;
  {
    std::ifstream in(state + "/conninfo");
    std::getline(in, conninfo);
  }
  const int port = std::stoi(conninfo_value(conninfo, "port"));

  {
    PoolWriter pool(conninfo);
    pool.assign_many("user_owner", "u", 100, 2);
  }
  TestLoop loop;
  Seen seen;
  OwnershipSourceConfig config = pg_config(conninfo);
  config.reconnect_min = 100ms;
  config.reconnect_max = 400ms;
  auto source = make_ownership_source(loop.get(), config, seen.callbacks());
  source->start();
  REQUIRE(loop.run_until([&] { return source->status().state == SourceState::ok; }, 10s));
  const auto served = seen.snapshot;

  REQUIRE(pg_server_py(state, port, "stop('immediate')") == 0);
  REQUIRE(loop.run_until([&] { return source->status().state == SourceState::degraded; }, 5s));
  REQUIRE(loop.run_until([&] { return source->status().counters.reconnects >= 2; }, 5s));
  SourceStatus st = source->status();
  CHECK_MESSAGE(st.last_error.find("Connection refused") != std::string::npos, st.last_error);
  CHECK(source->snapshot() == served);

  REQUIRE(pg_server_py(state, port, "restart()") == 0);
  const auto back = Clock::now();
  REQUIRE(loop.run_until([&] { return source->status().counters.full_loads == 2; }, 10s));
  MESSAGE("pg server restarted -> reconnected and reloaded in "
          << std::chrono::duration<double, std::milli>(Clock::now() - back).count() << " ms (backoff 100..400 ms)");
  st = source->status();
  CHECK(st.state == SourceState::ok);
  {
    PoolWriter pool(conninfo);
    pool.assign("user_owner", "u7", std::string("after-restart"));
  }
  REQUIRE(loop.run_until([&] { return seen.owner("u7") == "after-restart"; }, 2s));
  CHECK(source->status().counters.full_loads == 2);

  stop(loop, source);
  CHECK(loop.close() == 0);
  const std::string stop_cmd = "python3 " + integration_dir() + "/pg_server.py stop " + state + " > /dev/null 2>&1";
  CHECK(std::system(stop_cmd.c_str()) == 0);
  std::filesystem::remove_all(state);
}

TEST_CASE("pg source: a large table streams in single-row mode without stalling the loop") {
  REQUIRE_PG(conninfo);
  const char* env_rows = std::getenv("SPRAYER_TEST_PG_ROWS");
  const int n = env_rows ? std::atoi(env_rows) : 200000;
  PoolWriter pool(conninfo);
  OwnTables tables(pool);
  pool.assign_many(tables.owners, "user", n, 8);

  TestLoop loop;
  Seen seen;
  OwnershipSourceConfig config = pg_config(conninfo);
  tables.apply(config.queries);
  char tmpl[] = "/tmp/sprayer-pg-big-XXXXXX";
  REQUIRE(::mkdtemp(tmpl) != nullptr);
  config.cache_file = std::string(tmpl) + "/owners.cache";

  // The longest gap between two turns of a 5 ms timer while the load runs.
  struct Ticker {
    uv_timer_t timer{};
    std::uint64_t last = 0;
    std::uint64_t worst = 0;
  } ticker;
  uv_timer_init(loop.get(), &ticker.timer);
  ticker.timer.data = &ticker;
  ticker.last = uv_now(loop.get());
  uv_timer_start(&ticker.timer, [](uv_timer_t* t) {
    auto* self = static_cast<Ticker*>(t->data);
    uv_update_time(t->loop);
    self->worst = std::max(self->worst, uv_now(t->loop) - self->last);
    self->last = uv_now(t->loop);
  }, 5, 5);

  const auto started = Clock::now();
  auto source = make_ownership_source(loop.get(), config, seen.callbacks());
  source->start();
  REQUIRE(loop.run_until([&] { return seen.snapshot != nullptr; }, 120s));
  const double ms = std::chrono::duration<double, std::milli>(Clock::now() - started).count();
  CHECK(seen.snapshot->size() == static_cast<std::size_t>(n));
  MESSAGE("pg full load of " << n << " rows: " << ms << " ms (" << static_cast<long>(n / (ms / 1000)) << " rows/s), "
                             << "longest loop stall " << ticker.worst << " ms, snapshot "
                             << seen.snapshot->memory_bytes() / (1024 * 1024) << " MiB");
  REQUIRE(loop.run_until([&] { return source->status().counters.cache_writes >= 1; }, 60s));
  const auto cache_bytes = std::filesystem::file_size(config.cache_file);
  MESSAGE("cache file: " << cache_bytes / 1024 << " KiB");

  uv_close(reinterpret_cast<uv_handle_t*>(&ticker.timer), nullptr);
  stop(loop, source);
  CHECK(loop.close() == 0);
  std::filesystem::remove_all(tmpl);
}
