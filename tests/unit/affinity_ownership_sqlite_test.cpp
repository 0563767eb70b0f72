// Component tests for the SQLite ownership source on a private uv loop: loads, deltas, errors
// with recovery, and the cache file written, then served when the database is unreachable.
#include <doctest/doctest.h>

#include <sqlite3.h>
#include <uv.h>

#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
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

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/sprayer-sqlite-test-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    path = tmpl;
  }
  ~TempDir() { std::filesystem::remove_all(path); }
};

std::string schema_sql() {
  const auto file = std::filesystem::path(__FILE__).parent_path() / "../../conf/sql/schema-sqlite.sql";
  std::ifstream in(file);
  REQUIRE_MESSAGE(in.good(), "cannot read " << file.string());
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// The pool's side: a writer connection that follows the epoch rule of schema-sqlite.sql.
class PoolWriter {
 public:
  explicit PoolWriter(const std::string& path, bool wal = true) {
    REQUIRE(sqlite3_open(path.c_str(), &db_) == SQLITE_OK);
    if (wal) exec("PRAGMA journal_mode=WAL");
    exec(schema_sql());
  }
  ~PoolWriter() { sqlite3_close(db_); }

  void exec(const std::string& sql) {
    char* err = nullptr;
    const int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err);
    const std::string message = err ? err : "";
    sqlite3_free(err);
    REQUIRE_MESSAGE(rc == SQLITE_OK, sql << ": " << message);
  }

  // One owner change in its own transaction, with the next epoch.
  std::int64_t assign(const std::string& key, std::optional<std::string> server) {
    exec("BEGIN IMMEDIATE");
    const std::int64_t epoch = next_epoch(1);
    upsert(key, server, epoch);
    exec("COMMIT");
    return epoch;
  }

  // n users "prefix<i>" over the servers, one transaction, one epoch each.
  std::int64_t assign_many(const std::string& prefix, int n, const std::vector<std::string>& servers) {
    exec("BEGIN IMMEDIATE");
    const std::int64_t last = next_epoch(n);
    for (int i = 0; i < n; ++i) upsert(prefix + std::to_string(i), servers[i % servers.size()], last - n + 1 + i);
    exec("COMMIT");
    return last;
  }

  void server(const std::string& id, const std::string& address, int availability) {
    exec("INSERT INTO pool_server (server_id, address, heartbeat_at, availability) VALUES ('" + id + "', '" + address +
         "', '2024-05-01 12:34:56', " + std::to_string(availability) +
         ") ON CONFLICT (server_id) DO UPDATE SET availability = excluded.availability");
  }

 private:
  std::int64_t next_epoch(int n) {
    sqlite3_stmt* st = nullptr;
    const std::string sql = "UPDATE pool_epoch SET epoch = epoch + " + std::to_string(n) + " WHERE id = 1 RETURNING epoch";
    REQUIRE(sqlite3_prepare_v2(db_, sql.c_str(), -1, &st, nullptr) == SQLITE_OK);
    REQUIRE(sqlite3_step(st) == SQLITE_ROW);
    const std::int64_t epoch = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return epoch;
  }

  void upsert(const std::string& key, const std::optional<std::string>& server, std::int64_t epoch) {
    sqlite3_stmt* st = nullptr;
    REQUIRE(sqlite3_prepare_v2(db_,
                               "INSERT INTO user_owner (user_key, server_id, epoch, changed_at) "
                               "VALUES (?1, ?2, ?3, datetime('now')) ON CONFLICT (user_key) DO UPDATE SET "
                               "server_id = excluded.server_id, epoch = excluded.epoch, changed_at = excluded.changed_at",
                               -1, &st, nullptr) == SQLITE_OK);
    sqlite3_bind_text(st, 1, key.c_str(), -1, SQLITE_TRANSIENT);
    if (server) sqlite3_bind_text(st, 2, server->c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 3, epoch);
    REQUIRE(sqlite3_step(st) == SQLITE_DONE);
    sqlite3_finalize(st);
  }

  sqlite3* db_ = nullptr;
};

// What the callbacks saw.
struct Seen {
  std::shared_ptr<const OwnershipSnapshot> snapshot;
  int snapshots = 0;
  std::vector<PoolServerRow> servers;
  int server_reads = 0;
  std::vector<SourceState> states;

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
    cb.on_status = [this](const SourceStatus& st) { states.push_back(st.state); };
    return cb;
  }

  std::optional<std::string> owner(std::string_view key) const {
    if (!snapshot) return std::nullopt;
    const auto o = snapshot->find(key);
    if (!o) return std::nullopt;
    return snapshot->server_ids()[o->server];
  }
};

OwnershipSourceConfig sqlite_config(const std::string& path) {
  OwnershipSourceConfig config;
  config.kind = SourceKind::sqlite;
  config.sqlite_path = path;
  config.poll_interval = 50ms;
  config.reconnect_min = 20ms;
  config.reconnect_max = 100ms;
  return config;
}

void stop(TestLoop& loop, std::unique_ptr<OwnershipSource>& source) {
  bool done = false;
  source->stop([&] { done = true; });
  CHECK_FALSE(done);  // never from inside stop()
  REQUIRE(loop.run_until([&] { return done; }, 10s));
  source.reset();
}

}  // namespace

TEST_CASE("sqlite source: full load, tombstones, servers, status and staleness") {
  TempDir dir;
  const std::string db_path = dir.path + "/pool.db";
  PoolWriter pool(db_path);
  pool.server("s1", "10.0.0.1:443", 100);
  pool.server("s2", "10.0.0.2:443", -200);
  const std::int64_t last = pool.assign_many("user", 1000, {"s1", "s2"});
  const std::int64_t tombstone_epoch = pool.assign("user7", std::nullopt);
  CHECK(tombstone_epoch == last + 1);

  TestLoop loop;
  Seen seen;
  SourceTime now = SourceClock::now();
  SourceEnvironment env;
  env.now = [&] { return now; };
  auto source = make_ownership_source(loop.get(), sqlite_config(db_path), seen.callbacks(), env);
  CHECK(source->status().state == SourceState::connecting);
  source->start();
  REQUIRE(loop.run_until([&] { return seen.snapshot && seen.server_reads > 0; }, 5s));

  CHECK(seen.snapshot->size() == 999);
  CHECK(seen.snapshot->epoch() == tombstone_epoch);
  CHECK(seen.owner("user0") == "s1");
  CHECK(seen.owner("user1") == "s2");
  CHECK_FALSE(seen.owner("user7"));
  CHECK_FALSE(seen.owner("nobody"));
  REQUIRE(seen.servers.size() == 2);
  std::sort(seen.servers.begin(), seen.servers.end(),
            [](const PoolServerRow& a, const PoolServerRow& b) { return a.server_id < b.server_id; });
  CHECK(seen.servers[0].address == "10.0.0.1:443");
  CHECK(seen.servers[0].availability == 100);
  CHECK(seen.servers[1].availability == -200);
  CHECK(seen.servers[0].heartbeat_text == "2024-05-01 12:34:56");
  REQUIRE(seen.servers[0].heartbeat_at.has_value());
  CHECK(seen.servers[0].heartbeat_at->time_since_epoch() == std::chrono::seconds(1714566896));

  SourceStatus st = source->status();
  CHECK(st.state == SourceState::ok);
  CHECK(st.epoch == tombstone_epoch);
  CHECK(st.users == 999);
  CHECK(st.counters.full_loads == 1);
  CHECK(st.counters.errors == 0);
  CHECK_FALSE(st.stale);
  CHECK(st.last_error.empty());
  CHECK(source->snapshot() == seen.snapshot);

  // Time is injected: the status ages by the test's clock, not the wall's.
  now += 31s;
  st = source->status();
  CHECK(st.stale);
  CHECK(*st.since_success >= 31s);
  REQUIRE(loop.run_until([&] { return !source->status().stale; }, 2s));  // the next poll succeeds

  stop(loop, source);
  CHECK(loop.close() == 0);
}

TEST_CASE("sqlite source: a committed change is picked up within one poll; tombstones unassign") {
  TempDir dir;
  const std::string db_path = dir.path + "/pool.db";
  PoolWriter pool(db_path);
  pool.assign_many("user", 100, {"s1", "s2", "s3"});

  TestLoop loop;
  Seen seen;
  OwnershipSourceConfig config = sqlite_config(db_path);
  config.poll_interval = 100ms;
  auto source = make_ownership_source(loop.get(), config, seen.callbacks());
  source->start();
  REQUIRE(loop.run_until([&] { return seen.snapshot != nullptr; }, 5s));

  std::vector<double> delays;
  for (int i = 0; i < 5; ++i) {
    const std::string server = "moved" + std::to_string(i);
    const auto committed = Clock::now();
    const std::int64_t epoch = pool.assign("user" + std::to_string(i), server);
    REQUIRE(loop.run_until([&] { return seen.owner("user" + std::to_string(i)) == server; }, 2s));
    const double ms = std::chrono::duration<double, std::milli>(Clock::now() - committed).count();
    delays.push_back(ms);
    CHECK(ms < 100 + 150);  // one poll interval plus the round itself
    CHECK(seen.snapshot->epoch() == epoch);
  }
  MESSAGE("sqlite commit -> snapshot (poll 100 ms): " << delays[0] << ", " << delays[1] << ", " << delays[2] << ", "
                                                     << delays[3] << ", " << delays[4] << " ms");

  const std::size_t before = seen.snapshot->size();
  pool.assign("user50", std::nullopt);
  REQUIRE(loop.run_until([&] { return !seen.owner("user50"); }, 2s));
  CHECK(seen.snapshot->size() == before - 1);

  // A new user, then reassigned: the newest epoch wins.
  pool.assign("newcomer", std::string("s1"));
  pool.assign("newcomer", std::string("s2"));
  REQUIRE(loop.run_until([&] { return seen.owner("newcomer") == "s2"; }, 2s));

  const SourceStatus st = source->status();
  CHECK(st.counters.full_loads == 1);  // deltas only
  CHECK(st.counters.deltas_applied >= 7);
  CHECK(st.counters.errors == 0);
  CHECK(st.state == SourceState::ok);

  stop(loop, source);
  CHECK(loop.close() == 0);
}

TEST_CASE("sqlite source: the periodic resync reloads in full and sees deleted rows") {
  TempDir dir;
  const std::string db_path = dir.path + "/pool.db";
  PoolWriter pool(db_path);
  pool.assign_many("user", 10, {"s1"});

  TestLoop loop;
  Seen seen;
  OwnershipSourceConfig config = sqlite_config(db_path);
  config.resync_interval = 300ms;
  auto source = make_ownership_source(loop.get(), config, seen.callbacks());
  source->start();
  REQUIRE(loop.run_until([&] { return seen.snapshot != nullptr; }, 5s));
  pool.exec("DELETE FROM user_owner WHERE user_key = 'user3'");  // no epoch: a delta cannot see it
  REQUIRE(loop.run_until([&] { return !seen.owner("user3"); }, 3s));
  CHECK(source->status().counters.full_loads >= 2);
  CHECK(source->status().counters.errors == 0);

  stop(loop, source);
  CHECK(loop.close() == 0);
}

TEST_CASE("sqlite source: a missing database file, then created") {
  TempDir dir;
  const std::string db_path = dir.path + "/later.db";
  TestLoop loop;
  Seen seen;
  auto source = make_ownership_source(loop.get(), sqlite_config(db_path), seen.callbacks());
  source->start();
  REQUIRE(loop.run_until([&] { return source->status().counters.errors >= 2; }, 5s));

  SourceStatus st = source->status();
  CHECK(st.state == SourceState::none);  // nothing to serve: no snapshot, no cache
  CHECK(st.last_error.find("unable to open") != std::string::npos);
  CHECK(st.last_error.find(db_path) != std::string::npos);
  CHECK(st.counters.reconnects >= 1);
  CHECK_FALSE(seen.snapshot);

  {
    PoolWriter pool(db_path);
    pool.assign_many("user", 10, {"s1"});
  }
  REQUIRE(loop.run_until([&] { return seen.snapshot != nullptr; }, 5s));
  CHECK(seen.snapshot->size() == 10);
  st = source->status();
  CHECK(st.state == SourceState::ok);
  CHECK(st.counters.full_loads == 1);

  stop(loop, source);
  CHECK(loop.close() == 0);
}

TEST_CASE("sqlite source: a broken table degrades, keeps the snapshot, then recovers with a full reload") {
  TempDir dir;
  const std::string db_path = dir.path + "/pool.db";
  PoolWriter pool(db_path);
  pool.assign_many("user", 20, {"s1", "s2"});

  TestLoop loop;
  Seen seen;
  auto source = make_ownership_source(loop.get(), sqlite_config(db_path), seen.callbacks());
  source->start();
  REQUIRE(loop.run_until([&] { return source->status().state == SourceState::ok; }, 5s));
  const auto served = seen.snapshot;

  pool.exec("DROP TABLE pool_epoch");
  REQUIRE(loop.run_until([&] { return source->status().state == SourceState::degraded; }, 5s));
  SourceStatus st = source->status();
  CHECK(st.last_error.find("no such table: pool_epoch") != std::string::npos);
  CHECK(source->snapshot() == served);  // the last snapshot is still served
  CHECK(seen.snapshot == served);
  CHECK(st.users == 20);
  REQUIRE(loop.run_until([&] { return source->status().counters.reconnects >= 2; }, 5s));

  pool.exec(schema_sql());
  pool.exec("UPDATE pool_epoch SET epoch = 100");
  pool.assign("user3", std::string("s9"));
  // The source may recover before user3 is written (then user3 comes as a delta): wait for
  // what is checked, not for the first good round.
  REQUIRE(loop.run_until([&] { return source->status().state == SourceState::ok && seen.owner("user3") == "s9"; }, 5s));
  CHECK(seen.owner("user3") == "s9");
  st = source->status();
  CHECK(st.counters.full_loads == 2);  // after an error the next round is a full read
  CHECK(st.counters.errors >= 2);

  pool.assign("user4", std::string("s9"));  // deltas resume
  REQUIRE(loop.run_until([&] { return seen.owner("user4") == "s9"; }, 2s));
  CHECK(source->status().counters.full_loads == 2);

  stop(loop, source);
  CHECK(loop.close() == 0);
}

TEST_CASE("sqlite source: a locked database degrades with the reason until the lock goes") {
  TempDir dir;
  const std::string db_path = dir.path + "/pool.db";
  PoolWriter pool(db_path, /*wal=*/false);  // rollback journal: an exclusive lock blocks readers
  pool.assign_many("user", 5, {"s1"});

  TestLoop loop;
  Seen seen;
  OwnershipSourceConfig config = sqlite_config(db_path);
  config.busy_timeout = 20ms;
  auto source = make_ownership_source(loop.get(), config, seen.callbacks());
  source->start();
  REQUIRE(loop.run_until([&] { return source->status().state == SourceState::ok; }, 5s));

  pool.exec("BEGIN EXCLUSIVE");
  REQUIRE(loop.run_until([&] { return source->status().state == SourceState::degraded; }, 5s));
  CHECK(source->status().last_error.find("locked") != std::string::npos);
  CHECK(seen.snapshot->size() == 5);
  pool.exec("COMMIT");
  REQUIRE(loop.run_until([&] { return source->status().state == SourceState::ok; }, 5s));

  stop(loop, source);
  CHECK(loop.close() == 0);
}

TEST_CASE("sqlite source: the cache file is written after loads and served while the database is unreachable") {
  TempDir dir;
  const std::string db_path = dir.path + "/pool.db";
  const std::string cache_path = dir.path + "/owners.cache";
  PoolWriter pool(db_path);
  pool.assign_many("user", 300, {"s1", "s2", "s3"});

  TestLoop loop;
  {
    Seen seen;
    OwnershipSourceConfig config = sqlite_config(db_path);
    config.cache_file = cache_path;
    config.cache_write_interval = 200ms;
    auto source = make_ownership_source(loop.get(), config, seen.callbacks());
    source->start();
    REQUIRE(loop.run_until([&] { return source->status().counters.cache_writes >= 1; }, 5s));
    CHECK(load_snapshot_cache(cache_path).snapshot->size() == 300);

    pool.assign("user1", std::string("s9"));
    pool.assign("user2", std::nullopt);
    REQUIRE(loop.run_until([&] { return seen.owner("user1") == "s9" && !seen.owner("user2"); }, 2s));
    // Throttled, but it comes.
    REQUIRE(loop.run_until([&] { return source->status().counters.cache_writes >= 2; }, 2s));
    const LoadedSnapshotCache cached = load_snapshot_cache(cache_path);
    REQUIRE(cached.ok());
    CHECK(cached.snapshot->size() == 299);
    CHECK(cached.epoch == seen.snapshot->epoch());
    const auto owner = cached.snapshot->find("user1");
    REQUIRE(owner);
    CHECK(cached.snapshot->server_ids()[owner->server] == "s9");
    CHECK(source->status().cache_error.empty());

    // Deltas far larger than the full read: the writer folds the log into one row per
    // user (tombstones dropped) before writing.
    const auto writes = source->status().counters.cache_writes;
    pool.assign_many("bulk", 70000, {"s4"});
    REQUIRE(loop.run_until([&] { return seen.owner("bulk69999") == "s4"; }, 5s));
    REQUIRE(loop.run_until([&] { return source->status().counters.cache_writes > writes; }, 5s));
    const LoadedSnapshotCache folded = load_snapshot_cache(cache_path);
    REQUIRE(folded.ok());
    CHECK(folded.snapshot->size() == 70299);
    CHECK(folded.rows == 70299);  // not 300 + 2 + 70000
    CHECK(folded.snapshot->find("bulk123").has_value());
    CHECK_FALSE(folded.snapshot->find("user2").has_value());
    stop(loop, source);
  }

  // A restart while the database is gone: the cache is served.
  Seen seen;
  const std::string gone = dir.path + "/gone.db";
  OwnershipSourceConfig config = sqlite_config(gone);
  config.cache_file = cache_path;
  auto source = make_ownership_source(loop.get(), config, seen.callbacks());
  source->start();
  REQUIRE(loop.run_until([&] { return seen.snapshot != nullptr; }, 5s));
  SourceStatus st = source->status();
  CHECK(st.state == SourceState::from_cache);
  CHECK(st.users == 70299);
  CHECK(st.last_error.find("unable to open") != std::string::npos);
  CHECK(seen.owner("user1") == "s9");
  CHECK(std::find(seen.states.begin(), seen.states.end(), SourceState::from_cache) != seen.states.end());

  // The database comes back: its own snapshot replaces the cache.
  std::filesystem::copy_file(db_path, gone);
  {
    PoolWriter copy(gone);  // the WAL copy may lack the last commits; rewrite one
    copy.assign("user1", std::string("s7"));
  }
  // The copy may be read before user1 is rewritten (the rewrite then comes as a delta).
  REQUIRE(loop.run_until([&] { return source->status().state == SourceState::ok && seen.owner("user1") == "s7"; }, 5s));
  CHECK(seen.owner("user1") == "s7");
  CHECK(source->status().counters.full_loads == 1);

  stop(loop, source);
  CHECK(loop.close() == 0);
}

TEST_CASE("sqlite source: an unreadable cache is reported and nothing is served") {
  TempDir dir;
  const std::string cache_path = dir.path + "/owners.cache";
  {
    std::ofstream out(cache_path);
    out << "garbage";
  }
  TestLoop loop;
  Seen seen;
  OwnershipSourceConfig config = sqlite_config(dir.path + "/gone.db");
  config.cache_file = cache_path;
  auto source = make_ownership_source(loop.get(), config, seen.callbacks());
  source->start();
  REQUIRE(loop.run_until([&] { return !source->status().cache_error.empty() && source->status().counters.errors > 0; }, 5s));
  const SourceStatus st = source->status();
  CHECK(st.state == SourceState::none);
  CHECK(st.cache_error.find("refused") != std::string::npos);
  CHECK_FALSE(seen.snapshot);

  stop(loop, source);
  CHECK(loop.close() == 0);
}

TEST_CASE("sqlite source: a large table loads off the loop") {
  const char* env_rows = std::getenv("SPRAYER_TEST_SQLITE_ROWS");
  const int n = env_rows ? std::atoi(env_rows) : 200000;
  TempDir dir;
  const std::string db_path = dir.path + "/pool.db";
  PoolWriter pool(db_path);
  pool.assign_many("user", n, {"s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7"});

  TestLoop loop;
  Seen seen;
  OwnershipSourceConfig config = sqlite_config(db_path);
  config.cache_file = dir.path + "/owners.cache";
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
  MESSAGE("sqlite full load of " << n << " rows: " << ms << " ms, longest loop stall " << ticker.worst << " ms");
  REQUIRE(loop.run_until([&] { return source->status().counters.cache_writes >= 1; }, 60s));

  uv_close(reinterpret_cast<uv_handle_t*>(&ticker.timer), nullptr);
  stop(loop, source);
  CHECK(loop.close() == 0);
}

TEST_CASE("sqlite source: stop while a round is in flight, destroy from the done callback") {
  TempDir dir;
  const std::string db_path = dir.path + "/pool.db";
  PoolWriter pool(db_path);
  pool.assign_many("user", 20000, {"s1", "s2"});

  TestLoop loop;
  Seen seen;
  auto source = make_ownership_source(loop.get(), sqlite_config(db_path), seen.callbacks());
  source->start();  // the full read is queued or running
  bool done = false;
  source->stop([&] {
    source.reset();
    done = true;
  });
  REQUIRE(loop.run_until([&] { return done; }, 10s));
  CHECK_FALSE(source);
  CHECK(loop.close() == 0);
}
