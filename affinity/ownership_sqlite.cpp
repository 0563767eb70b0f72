// SQLite source: rounds of blocking reads on the libuv thread pool, one at a time, with a
// read-only connection, reopened for every full read and whenever its path names another file.
#include "affinity/ownership_sqlite.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>

#include <sqlite3.h>

#include "affinity/ownership_changes.h"

#include <cassert>
#include <charconv>
#include <string>
#include <functional>
#include <utility>
#include <vector>

namespace sprayer::affinity {

struct SqliteOwnershipSource::Job {
  // In.
  bool full = false;
  std::string path;
  OwnershipQueries queries;
  ChangeDetection mode = ChangeDetection::epoch;
  SourceDuration overlap{0};
  int busy_timeout_ms = 0;
  sqlite3** db = nullptr;
  std::pair<dev_t, ino_t>* file_id = nullptr;     // of the file *db was opened on
  std::shared_ptr<const OwnershipSnapshot> base;  // for a delta
  std::optional<std::int64_t> marker_in;
  std::function<void(std::size_t)> progress;  // full reads only
  std::size_t progress_rows = 0;
  // Out.
  std::string error;
  std::optional<std::int64_t> marker_out;
  std::shared_ptr<const OwnershipSnapshot> snapshot;  // null: nothing changed
  bool snapshot_full = false;                         // snapshot is a full one (else a delta)
  std::size_t skipped = 0;
  RowBlockPtr rows;
  bool servers_read = false;
  std::vector<PoolServerRow> servers;
};

namespace {

class Statement {
 public:
  Statement() = default;
  ~Statement() { sqlite3_finalize(stmt_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  int prepare(sqlite3* db, const std::string& sql) {
    return sqlite3_prepare_v2(db, sql.c_str(), static_cast<int>(sql.size()), &stmt_, nullptr);
  }
  sqlite3_stmt* get() const noexcept { return stmt_; }

 private:
  sqlite3_stmt* stmt_ = nullptr;
};

std::string db_error(sqlite3* db, std::string_view what) {
  return std::string(what) + ": " + sqlite3_errmsg(db);
}

std::string_view text_of(sqlite3_stmt* stmt, int col) {
  const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt, col));
  if (!p) return {};
  return {p, static_cast<std::size_t>(sqlite3_column_bytes(stmt, col))};
}

// An integer column, also when a loosely typed schema stored it as text or real.
bool int_of(sqlite3_stmt* stmt, int col, std::int64_t& out) {
  switch (sqlite3_column_type(stmt, col)) {
    case SQLITE_INTEGER: out = sqlite3_column_int64(stmt, col); return true;
    case SQLITE_FLOAT: out = static_cast<std::int64_t>(sqlite3_column_double(stmt, col)); return true;
    case SQLITE_TEXT: {
      const std::string_view s = text_of(stmt, col);
      const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
      return ec == std::errc() && end == s.data() + s.size();
    }
    default: return false;
  }
}

bool read_marker(sqlite3* db, const std::string& sql, std::optional<std::int64_t>& marker, std::string& error) {
  Statement st;
  if (st.prepare(db, sql) != SQLITE_OK) {
    error = db_error(db, "change query failed");
    return false;
  }
  const int rc = sqlite3_step(st.get());
  if (rc == SQLITE_DONE) {
    marker = 0;
    return true;
  }
  std::int64_t value = 0;
  if (rc != SQLITE_ROW) {
    error = db_error(db, "change query failed");
    return false;
  }
  if (!int_of(st.get(), 0, value)) {
    error = "change query failed: its first column is not an integer";
    return false;
  }
  marker = value;
  return true;
}

bool read_owners(sqlite3* db, const std::string& sql, const char* what, ChangeDetection mode,
                 const DeltaParameter* after, OwnershipRowBlock& rows, std::string& error,
                 const std::function<void(std::size_t)>& progress = {}, std::size_t every = 0) {
  std::size_t count = 0;
  Statement st;
  if (st.prepare(db, sql) != SQLITE_OK) {
    error = db_error(db, std::string(what) + " query failed");
    return false;
  }
  if (after && sqlite3_bind_parameter_count(st.get()) >= 1) {
    if (after->integer) {
      sqlite3_bind_int64(st.get(), 1, *after->integer);
    } else {
      sqlite3_bind_text(st.get(), 1, after->text.data(), static_cast<int>(after->text.size()), SQLITE_TRANSIENT);
    }
  }
  const int needed = mode == ChangeDetection::full_scan ? 2 : 3;
  if (sqlite3_column_count(st.get()) < needed) {
    error = std::string(what) + " query must return user_key, server_id" +
            (mode == ChangeDetection::epoch ? ", epoch" : mode == ChangeDetection::watermark ? ", changed_at" : "");
    return false;
  }
  int rc;
  while ((rc = sqlite3_step(st.get())) == SQLITE_ROW) {
    std::int64_t epoch = 0;
    if (mode == ChangeDetection::epoch && !int_of(st.get(), 2, epoch)) {
      error = std::string(what) + " query: epoch of user '" + std::string(text_of(st.get(), 0)) + "' is not an integer";
      return false;
    }
    if (mode == ChangeDetection::watermark) {
      const auto value = change_value(mode, sqlite3_column_type(st.get(), 2) == SQLITE_NULL
                                                ? std::nullopt
                                                : std::optional<std::string_view>(text_of(st.get(), 2)));
      if (!value) {
        error = std::string(what) + " query: changed_at of user '" + std::string(text_of(st.get(), 0)) +
                "' is not a timestamp";
        return false;
      }
      epoch = *value;
    }
    std::optional<std::string_view> server;
    if (sqlite3_column_type(st.get(), 1) != SQLITE_NULL) server = text_of(st.get(), 1);
    rows.add(text_of(st.get(), 0), server, epoch);
    if (progress && every && ++count % every == 0) progress(count);
  }
  if (rc != SQLITE_DONE) {
    error = db_error(db, std::string(what) + " query failed");
    return false;
  }
  return true;
}

bool read_servers(sqlite3* db, const std::string& sql, std::vector<PoolServerRow>& out, std::string& error) {
  Statement st;
  if (st.prepare(db, sql) != SQLITE_OK) {
    error = db_error(db, "servers query failed");
    return false;
  }
  if (sqlite3_column_count(st.get()) < 4) {
    error = "servers query must return server_id, address, availability, heartbeat_at";
    return false;
  }
  int rc;
  while ((rc = sqlite3_step(st.get())) == SQLITE_ROW) {
    PoolServerRow row;
    row.server_id = text_of(st.get(), 0);
    row.address = text_of(st.get(), 1);
    std::int64_t availability = 0;
    if (sqlite3_column_type(st.get(), 2) != SQLITE_NULL && !int_of(st.get(), 2, availability)) {
      error = "servers query: availability of server '" + row.server_id + "' is not an integer";
      return false;
    }
    row.availability = static_cast<int>(availability);
    row.heartbeat_text = text_of(st.get(), 3);
    row.heartbeat_at = parse_db_timestamp(row.heartbeat_text);
    out.push_back(std::move(row));
  }
  if (rc != SQLITE_DONE) {
    error = db_error(db, "servers query failed");
    return false;
  }
  return true;
}

void close_db(sqlite3** db) {
  sqlite3_close_v2(*db);
  *db = nullptr;
}

}  // namespace

void SqliteOwnershipSource::on_work(uv_work_t* req) noexcept {
  run_round(*static_cast<SqliteOwnershipSource*>(req->data)->job_);
}

// One round, on a thread-pool thread: touches only the job and the connection.
void SqliteOwnershipSource::run_round(Job& job) {
  sqlite3** db = job.db;
  // An open connection keeps reading a file that was deleted, moved away or replaced (a
  // restore from backup): check that the path still names the file we opened.
  struct stat file{};
  if (stat(job.path.c_str(), &file) != 0) {
    job.error = "cannot open " + job.path + ": unable to open database file (" + std::strerror(errno) + ")";
    if (*db) close_db(db);
    return;
  }
  if (*db && (file.st_dev != job.file_id->first || file.st_ino != job.file_id->second)) {
    close_db(db);
    job.full = true;  // another file: read it whole
  }
  if (job.full && *db) close_db(db);
  if (!*db) {
    const int rc = sqlite3_open_v2(job.path.c_str(), db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, nullptr);
    if (rc != SQLITE_OK) {
      job.error = "cannot open " + job.path + ": " + (*db ? sqlite3_errmsg(*db) : sqlite3_errstr(rc));
      close_db(db);
      return;
    }
    sqlite3_busy_timeout(*db, job.busy_timeout_ms);
    *job.file_id = {file.st_dev, file.st_ino};
  }

  // The marker is read before the owners: a change committed in between shows up in
  // both this read and the next marker, never in neither.
  bool changed = true;
  if (!job.queries.change.empty()) {
    if (!read_marker(*db, job.queries.change, job.marker_out, job.error)) return close_db(db);
    changed = job.full || job.marker_out != job.marker_in;
  }
  if (changed) {
    // full_scan has no delta query: every round reads the table and keeps the difference.
    const bool scan = !job.full && job.mode == ChangeDetection::full_scan;
    auto rows = std::make_shared<OwnershipRowBlock>();
    bool ok;
    if (job.full || scan) {
      ok = job.full ? read_owners(*db, job.queries.full, "full", job.mode, nullptr, *rows, job.error, job.progress,
                                  job.progress_rows)
                    : read_owners(*db, job.queries.full, "full", job.mode, nullptr, *rows, job.error);
    } else {
      const DeltaParameter after = delta_parameter(job.mode, job.base->epoch(), job.overlap);
      ok = read_owners(*db, job.queries.delta, "delta", job.mode, &after, *rows, job.error);
    }
    if (!ok) return close_db(db);
    ReadOutcome outcome = apply_read(job.mode, job.full || scan, job.full ? nullptr : job.base, std::move(rows));
    job.snapshot = std::move(outcome.snapshot);
    job.snapshot_full = outcome.full;
    job.skipped = outcome.skipped;
    job.rows = std::move(outcome.rows);
  }
  if (!job.queries.servers.empty()) {
    if (!read_servers(*db, job.queries.servers, job.servers, job.error)) return close_db(db);
    job.servers_read = true;
  }
}


SqliteOwnershipSource::SqliteOwnershipSource(uv_loop_t* loop, OwnershipSourceConfig config,
                                             OwnershipCallbacks callbacks, SourceEnvironment env)
    : loop_(loop), config_(std::move(config)), core_(loop, config_, std::move(callbacks), std::move(env)) {
  uv_timer_init(loop_, &timer_);
  timer_.data = this;
  work_req_.data = this;
}

SqliteOwnershipSource::~SqliteOwnershipSource() {
  assert(!timer_open_ && "stop() must finish before the source is destroyed");
}

void SqliteOwnershipSource::start() {
  assert(!started_);
  started_ = true;
  core_.start();
  tick();
}

void SqliteOwnershipSource::stop(std::function<void()> done) {
  assert(!stopping_);
  stopping_ = true;
  stop_done_ = std::move(done);
  if (job_) uv_cancel(reinterpret_cast<uv_req_t*>(&work_req_));
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), on_timer_closed);
  core_.close([this] {
    core_open_ = false;
    maybe_finish_stop();
  });
}

void SqliteOwnershipSource::maybe_finish_stop() {
  if (timer_open_ || core_open_ || job_ || !stop_done_) return;
  if (db_) close_db(&db_);
  auto done = std::move(stop_done_);
  stop_done_ = nullptr;
  done();  // may destroy *this
}

void SqliteOwnershipSource::on_timer_closed(uv_handle_t* handle) noexcept {
  auto* self = static_cast<SqliteOwnershipSource*>(handle->data);
  self->timer_open_ = false;
  self->maybe_finish_stop();
}

void SqliteOwnershipSource::on_timer(uv_timer_t* timer) noexcept {
  static_cast<SqliteOwnershipSource*>(timer->data)->tick();
}

void SqliteOwnershipSource::schedule(SourceDuration delay) {
  if (stopping_) return;
  uv_timer_start(&timer_, on_timer, static_cast<std::uint64_t>(delay.count()), 0);
}

void SqliteOwnershipSource::tick() {
  if (stopping_ || job_) return;
  const bool resync_due = uv_now(loop_) - last_full_ms_ >= static_cast<std::uint64_t>(config_.resync_interval.count());
  if (failing_) core_.count_reconnect();
  job_ = std::make_unique<Job>();
  job_->full = need_full_ || resync_due;
  job_->path = config_.sqlite_path;
  job_->queries = config_.queries;
  job_->mode = config_.change_detection;
  job_->overlap = config_.watermark_overlap;
  job_->busy_timeout_ms = static_cast<int>(config_.busy_timeout.count());
  job_->db = &db_;
  job_->file_id = &file_id_;
  job_->base = core_.snapshot();
  job_->marker_in = marker_;
  job_->progress = config_.on_load_progress;
  job_->progress_rows = config_.progress_rows;
  uv_queue_work(loop_, &work_req_, on_work, on_work_done);
}

void SqliteOwnershipSource::on_work_done(uv_work_t* req, int) noexcept {
  static_cast<SqliteOwnershipSource*>(req->data)->job_done();
}

void SqliteOwnershipSource::job_done() {
  std::unique_ptr<Job> job = std::move(job_);
  if (stopping_) return maybe_finish_stop();

  if (!job->error.empty()) {
    need_full_ = true;
    failing_ = true;
    marker_.reset();
    const SourceDuration delay = core_.next_backoff();
    core_.failed(std::move(job->error));
    return schedule(delay);
  }

  failing_ = false;
  marker_ = job->marker_out;
  core_.count_skipped(job->skipped);
  if (job->full) {
    need_full_ = false;
    last_full_ms_ = uv_now(loop_);
    core_.reset_backoff();
    core_.deliver_full(std::move(job->snapshot), std::move(job->rows));
  } else if (job->snapshot && job->snapshot_full) {
    core_.deliver_full(std::move(job->snapshot), std::move(job->rows));  // a scan that lost users
  } else if (job->snapshot) {
    core_.deliver_delta(std::move(job->snapshot), std::move(job->rows));
  }
  if (stopping_) return;
  core_.succeeded();
  if (stopping_) return;
  if (job->servers_read) core_.deliver_servers(std::move(job->servers));
  schedule(config_.poll_interval);
}

}  // namespace sprayer::affinity
