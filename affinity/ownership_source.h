// Ownership sources: read the pool's ownership table (SQLite, PostgreSQL, MariaDB/MySQL or
// ODBC) for the control loop and hand out immutable snapshots. Configuration, status and
// the common interface.
#pragma once

#include <uv.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "affinity/snapshot.h"

namespace sprayer::affinity {

using SourceClock = std::chrono::steady_clock;
using SourceTime = SourceClock::time_point;
using SourceDuration = std::chrono::milliseconds;

enum class SourceKind : std::uint8_t { sqlite, postgresql, mariadb, odbc };

// How changes to the owner table are found (ownership_changes.h has the rules):
//  epoch      the third column is the pool-wide change number; deltas ask for "> last".
//  watermark  the third column is a change timestamp (changed_at); deltas ask for rows
//             after the last one seen minus an overlap and drop rows already applied.
//  full_scan  no change column: every poll reads the whole table and applies the diff.
enum class ChangeDetection : std::uint8_t { epoch, watermark, full_scan };
std::string_view to_string(ChangeDetection mode) noexcept;

// MariaDB / MySQL connection settings (libmariadb).
struct MariadbSettings {
  std::string host = "127.0.0.1";
  unsigned port = 3306;
  std::string unix_socket;   // used instead of host:port when set
  std::string user;
  std::string database;
  std::string password_file;  // read at every connect; "" = no password
  bool tls = false;           // require TLS
  std::string tls_ca_file;    // verify the server against these CAs (and its name)
};

// ODBC (unixODBC): a DSN or driver connection string; the password is appended as PWD.
struct OdbcSettings {
  std::string connection;
  std::string password_file;
};

// The queries against the pool's schema. Defaults fit conf/sql/schema-*.sql; a real pool's
// own schema is mapped by overriding them. Owner queries return (user_key, server_id,
// epoch | changed_at | nothing, by ChangeDetection); the delta query takes the last epoch
// (or the watermark timestamp) as its one parameter ($1; SQLite accepts it too, MariaDB
// and ODBC also take ?); the servers query returns (server_id, address, availability,
// heartbeat_at).
struct OwnershipQueries {
  std::string full = "SELECT user_key, server_id, epoch FROM user_owner";
  std::string delta =
      "SELECT user_key, server_id, epoch FROM user_owner WHERE epoch > $1 ORDER BY epoch";
  std::string servers = "SELECT server_id, address, availability, heartbeat_at FROM pool_server";  // "" = never
  // SQLite only: one integer that moves when owners change ("PRAGMA data_version" also
  // works, but moves on heartbeats too). "" = run the delta query on every poll.
  std::string change = "SELECT epoch FROM pool_epoch WHERE id = 1";
};

struct OwnershipSourceConfig {
  SourceKind kind = SourceKind::sqlite;
  std::string sqlite_path;
  // libpq connection string; a multi-host one ("host=a,b port=5432,5432
  // target_session_attrs=read-write") follows the pool to the primary on fail-over.
  std::string pg_conninfo;
  MariadbSettings mariadb;
  OdbcSettings odbc;
  OwnershipQueries queries;
  ChangeDetection change_detection = ChangeDetection::epoch;
  // watermark: the delta asks for changed_at > (newest seen - overlap), so a commit that
  // lands late with an older timestamp is still read if it is at most this late.
  SourceDuration watermark_overlap{2000};
  std::string owner_channel = "sprayer_owner";    // PostgreSQL LISTEN channels
  std::string server_channel = "sprayer_server";

  SourceDuration poll_interval{200};                  // SQLite, MariaDB, ODBC: change check, delta, servers
  SourceDuration resync_interval{std::chrono::minutes(5)};  // full reload as a safety net
  SourceDuration reconnect_min{500};                  // backoff after an error, doubling...
  SourceDuration reconnect_max{std::chrono::seconds(30)};   // ...up to this
  SourceDuration stale_after{std::chrono::seconds(30)};     // status says stale after this long without a successful query
  SourceDuration busy_timeout{1000};                  // SQLite: wait this long on a locked database
  // PostgreSQL: libpq ignores its own connect_timeout when driven with PQconnectPoll. The
  // limit covers the whole attempt, all hosts of a multi-host string together.
  // MariaDB and ODBC hand it to the client library (whole seconds).
  SourceDuration connect_timeout{std::chrono::seconds(10)};
  SourceDuration query_timeout{std::chrono::seconds(30)};      // PostgreSQL, MariaDB: no byte from the server while a query is out; ODBC: the statement's timeout
  SourceDuration delta_poll_interval{std::chrono::seconds(5)}; // PostgreSQL: a delta even without a notification
  SourceDuration servers_interval{std::chrono::seconds(5)};    // PostgreSQL: servers re-read

  std::string cache_file;                             // last-known-good snapshot; "" = none
  SourceDuration cache_write_interval{std::chrono::seconds(10)};  // at most one write per interval after deltas
  // At start the cache is served once the database has failed, or once this much time
  // passed without a snapshot from it (a connect that hangs must not leave the router blind).
  SourceDuration cache_grace{std::chrono::seconds(2)};
  // During a full read, called with the rows read so far every `progress_rows` rows, on the
  // thread that reads (SQLite: libuv's thread pool; PostgreSQL: the loop): thread-safe.
  std::function<void(std::size_t rows)> on_load_progress;
  std::size_t progress_rows = 100000;
};

enum class SourceState : std::uint8_t {
  connecting,  // first attempt under way, nothing to serve yet
  ok,          // the last query succeeded; serving the database's snapshot
  degraded,    // the database failed; serving the last snapshot it gave
  from_cache,  // the database has not answered since start; serving the cache file
  none,        // nothing to serve (the router uses rendezvous for everyone)
};
std::string_view to_string(SourceState state) noexcept;

struct SourceCounters {
  std::uint64_t full_loads = 0;
  std::uint64_t deltas_applied = 0;  // delta batches with at least one row
  std::uint64_t delta_rows = 0;
  std::uint64_t errors = 0;
  std::uint64_t reconnects = 0;      // attempts after an error (SQLite: reopen)
  std::uint64_t notifications = 0;   // PostgreSQL NOTIFY received
  std::uint64_t rows_skipped = 0;    // watermark: delta rows already applied (the overlap)
  std::uint64_t cache_writes = 0;
  std::uint64_t cache_write_errors = 0;
};

struct SourceStatus {
  SourceState state = SourceState::connecting;
  std::string last_error;               // kept after recovery; state says whether it still holds
  std::string cache_error;              // last failed cache load or write
  std::optional<SourceTime> last_success;        // last successful query
  std::optional<SourceDuration> since_success;   // now() - last_success
  bool stale = true;                    // no successful query for stale_after (or ever)
  std::int64_t epoch = 0;               // of the snapshot being served
  std::size_t users = 0;                // users with an owner in that snapshot
  SourceCounters counters;
};

// One pool_server row.
struct PoolServerRow {
  std::string server_id;
  std::string address;
  int availability = 0;
  std::string heartbeat_text;  // as the database returned it
  std::optional<std::chrono::system_clock::time_point> heartbeat_at;  // nullopt: NULL or unparsable
};

// Called on the loop thread. A callback may call stop().
struct OwnershipCallbacks {
  std::function<void(std::shared_ptr<const OwnershipSnapshot>)> on_snapshot;  // every new snapshot, full or delta
  std::function<void(std::vector<PoolServerRow>)> on_servers;                 // every read of pool_server
  std::function<void(const SourceStatus&)> on_status;                         // optional: state changes and errors
};

// Time and randomness, injected so tests are deterministic.
struct SourceEnvironment {
  std::function<SourceTime()> now;         // default steady_clock::now
  std::function<std::uint64_t()> random;   // default splitmix64 seeded from random_device
};

class OwnershipSource {
 public:
  virtual ~OwnershipSource() = default;

  // On the loop thread, once.
  virtual void start() = 0;
  // Closes every handle and waits for jobs in flight; `done` runs on the loop, never from
  // inside stop(). The source may be destroyed from `done` on, not before.
  virtual void stop(std::function<void()> done) = 0;

  virtual SourceStatus status() const = 0;
  virtual std::shared_ptr<const OwnershipSnapshot> snapshot() const = 0;  // null before the first
};

std::unique_ptr<OwnershipSource> make_ownership_source(uv_loop_t* loop, OwnershipSourceConfig config,
                                                       OwnershipCallbacks callbacks,
                                                       SourceEnvironment env = {});

// Exponential backoff with jitter: the n-th delay after an error is drawn uniformly from
// [d/2, d] with d = min(max, min * 2^n), so a fleet of sprayers does not reconnect in step.
class Backoff {
 public:
  Backoff(SourceDuration min, SourceDuration max) : min_(min), max_(max) {}
  SourceDuration next(std::uint64_t random_bits);
  void reset() noexcept { attempts_ = 0; }
  unsigned attempts() const noexcept { return attempts_; }

 private:
  SourceDuration min_;
  SourceDuration max_;
  unsigned attempts_ = 0;
};

// True when the pool itself considers the server gone: its heartbeat is older than
// max_age (or missing). max_age 0 = never.
bool heartbeat_stale(const PoolServerRow& row, std::chrono::system_clock::time_point now,
                     SourceDuration max_age) noexcept;

// A database timestamp as UTC: "YYYY-MM-DD[ T]HH:MM:SS[.frac][Z|±HH[:MM]]" (SQLite text,
// PostgreSQL timestamptz output) or a number of Unix seconds. nullopt if neither.
std::optional<std::chrono::system_clock::time_point> parse_db_timestamp(std::string_view text) noexcept;

}  // namespace sprayer::affinity
