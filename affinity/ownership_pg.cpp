// PostgreSQL source: a libpq connection driven by a uv_poll_t, one query in flight, rows
// streamed in single-row mode; any error drops the connection and the reconnect reloads.
#include "affinity/ownership_pg.h"

#include <libpq-fe.h>

#include "affinity/ownership_changes.h"

#include <sys/socket.h>

#include <cassert>
#include <charconv>
#include <cstring>
#include <string_view>
#include <utility>

namespace sprayer::affinity {

namespace {

// libpq messages end in a newline and, for multi-host strings, hold one line per host.
std::string clean_message(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  bool space = false;
  for (const char c : text) {
    if (c == '\n' || c == '\t' || c == '\r' || c == ' ') {
      space = !out.empty();
      continue;
    }
    if (space) out.push_back(' ');
    space = false;
    out.push_back(c);
  }
  return out;
}

std::string conn_error(const PGconn* conn) { return clean_message(conn ? PQerrorMessage(conn) : "out of memory"); }

bool parse_int(const char* p, int len, std::int64_t& out) {
  const auto [end, ec] = std::from_chars(p, p + len, out);
  return ec == std::errc() && end == p + len;
}

std::string_view query_name(bool full) { return full ? "full" : "delta"; }

}  // namespace

PgOwnershipSource::PgOwnershipSource(uv_loop_t* loop, OwnershipSourceConfig config, OwnershipCallbacks callbacks,
                                     SourceEnvironment env)
    : loop_(loop), config_(std::move(config)), core_(loop, config_, std::move(callbacks), std::move(env)) {
  for (uv_timer_t* t : {&reconnect_timer_, &deadline_timer_, &delta_timer_, &servers_timer_, &resync_timer_}) {
    uv_timer_init(loop_, t);
    t->data = this;
    ++open_handles_;
  }
}

PgOwnershipSource::~PgOwnershipSource() {
  assert(open_handles_ == 0 && !core_open_ && "stop() must finish before the source is destroyed");
}

void PgOwnershipSource::start() {
  assert(!started_);
  started_ = true;
  core_.start();
  const auto every = [](SourceDuration d) { return static_cast<std::uint64_t>(std::max<std::int64_t>(1, d.count())); };
  uv_timer_start(&delta_timer_, on_delta_timer, every(config_.delta_poll_interval), every(config_.delta_poll_interval));
  uv_timer_start(&servers_timer_, on_servers_timer, every(config_.servers_interval), every(config_.servers_interval));
  uv_timer_start(&resync_timer_, on_resync_timer, every(config_.resync_interval), every(config_.resync_interval));
  connect();
}

void PgOwnershipSource::stop(std::function<void()> done) {
  assert(!stopping_);
  stopping_ = true;
  stop_done_ = std::move(done);
  drop_connection();
  for (uv_timer_t* t : {&reconnect_timer_, &deadline_timer_, &delta_timer_, &servers_timer_, &resync_timer_}) {
    uv_close(reinterpret_cast<uv_handle_t*>(t), on_timer_closed);
  }
  core_.close([this] {
    core_open_ = false;
    maybe_finish_stop();
  });
}

void PgOwnershipSource::maybe_finish_stop() {
  if (open_handles_ > 0 || core_open_ || !stop_done_) return;
  auto done = std::move(stop_done_);
  stop_done_ = nullptr;
  done();  // may destroy *this
}

void PgOwnershipSource::on_timer_closed(uv_handle_t* handle) noexcept {
  auto* self = static_cast<PgOwnershipSource*>(handle->data);
  --self->open_handles_;
  self->maybe_finish_stop();
}

// --- the socket

bool PgOwnershipSource::watch(bool writable) {
  const int fd = PQsocket(conn_);
  if (fd < 0) {
    fail("connection has no socket: " + conn_error(conn_));
    return false;
  }
  if (watch_ && watch_->fd != fd) close_watch();
  if (!watch_) {
    auto* w = new SocketWatch;
    w->owner = this;
    w->fd = fd;
    if (const int rc = uv_poll_init_socket(loop_, &w->poll, fd); rc != 0) {
      delete w;  // never initialised: no close callback to wait for
      fail(std::string("cannot watch the connection's socket: ") + uv_strerror(rc));
      return false;
    }
    w->poll.data = w;
    ++open_handles_;
    watch_ = w;
  }
  uv_poll_start(&watch_->poll, UV_READABLE | (writable ? UV_WRITABLE : 0), on_socket);
  return true;
}

// libpq may close the socket inside PQconnectPoll; libuv must not be polling it then, or
// it could end up polling whatever gets the descriptor number next.
void PgOwnershipSource::pause_watch() {
  if (watch_) uv_poll_stop(&watch_->poll);
}

void PgOwnershipSource::close_watch() {
  if (!watch_) return;
  uv_close(reinterpret_cast<uv_handle_t*>(&watch_->poll), on_watch_closed);
  watch_ = nullptr;
}

void PgOwnershipSource::on_watch_closed(uv_handle_t* handle) noexcept {
  auto* w = static_cast<SocketWatch*>(handle->data);
  PgOwnershipSource* self = w->owner;
  delete w;
  --self->open_handles_;
  self->maybe_finish_stop();
}

// The server's reason ("terminating connection due to administrator command") comes as a
// notice just before the socket closes.
std::string PgOwnershipSource::lost(std::string detail) const {
  std::string reason = "connection lost: " + detail;
  if (!last_notice_.empty() && reason.find(last_notice_) == std::string::npos) reason += " (" + last_notice_ + ")";
  return reason;
}

void PgOwnershipSource::on_notice(void* self, const char* message) noexcept {
  static_cast<PgOwnershipSource*>(self)->last_notice_ = clean_message(message);
}

void PgOwnershipSource::on_socket(uv_poll_t* poll, int status, int events) noexcept {
  static_cast<SocketWatch*>(poll->data)->owner->socket_ready(status, events);
}

void PgOwnershipSource::socket_ready(int status, int events) {
  // libuv reports POLLERR as UV_EBADF (a refused connect, a reset); libpq reads the
  // socket's own error, and while connecting moves on to the next host.
  if (phase_ == Phase::connecting) return drive_connect();
  if (status < 0) {
    int err = 0;
    socklen_t len = sizeof err;
    ::getsockopt(PQsocket(conn_), SOL_SOCKET, SO_ERROR, &err, &len);
    // Still read: the server's last words may be waiting in the socket buffer.
    const bool read = PQconsumeInput(conn_) != 0;
    return fail(lost(read ? std::string(err ? std::strerror(err) : "socket error") : conn_error(conn_)));
  }
  if ((events & UV_WRITABLE) && !flush()) return;
  if (!PQconsumeInput(conn_)) return fail(lost(conn_error(conn_)));
  if (query_ != Query::none) {
    uv_timer_start(&deadline_timer_, on_deadline_timer, static_cast<std::uint64_t>(config_.query_timeout.count()), 0);
  }
  if (!drain_results()) return;
  drain_notifies();
  pump();
}

// --- connecting

void PgOwnershipSource::connect() {
  if (stopping_) return;
  phase_ = Phase::connecting;
  ++connection_id_;
  // expand_dbname: the conninfo string (multi-host included) goes in as "dbname".
  const char* const keywords[] = {"dbname", "fallback_application_name", nullptr};
  const char* const values[] = {config_.pg_conninfo.c_str(), "sprayer", nullptr};
  conn_ = PQconnectStartParams(keywords, values, 1);
  if (!conn_ || PQstatus(conn_) == CONNECTION_BAD) return fail("cannot connect: " + conn_error(conn_));
  // libpq would print notices (and a FATAL that arrives between queries) to stderr.
  PQsetNoticeProcessor(conn_, on_notice, this);
  uv_timer_start(&deadline_timer_, on_deadline_timer, static_cast<std::uint64_t>(config_.connect_timeout.count()), 0);
  // Before the first PQconnectPoll, act as if it had asked for write-readiness.
  watch(true);
}

void PgOwnershipSource::drive_connect() {
  pause_watch();
  switch (PQconnectPoll(conn_)) {
    case PGRES_POLLING_OK: return on_connected();
    case PGRES_POLLING_READING: watch(false); return;
    case PGRES_POLLING_WRITING: watch(true); return;
    default: return fail("cannot connect: " + conn_error(conn_));
  }
}

void PgOwnershipSource::on_connected() {
  uv_timer_stop(&deadline_timer_);
  if (PQsetnonblocking(conn_, 1) != 0) return fail("cannot make the connection non-blocking: " + conn_error(conn_));
  phase_ = Phase::listening;
  if (!watch(false)) return;
  send_query(Query::listen);
}

void PgOwnershipSource::deadline_passed() {
  if (phase_ == Phase::connecting) {
    return fail("cannot connect: no connection after " + std::to_string(config_.connect_timeout.count()) + " ms");
  }
  if (query_ != Query::none) {
    return fail("query timed out: nothing from the server for " + std::to_string(config_.query_timeout.count()) + " ms");
  }
}

// --- queries

bool PgOwnershipSource::send_query(Query query) {
  int sent = 0;
  std::string epoch_text;
  switch (query) {
    case Query::listen: {
      char* owner = PQescapeIdentifier(conn_, config_.owner_channel.data(), config_.owner_channel.size());
      char* server = PQescapeIdentifier(conn_, config_.server_channel.data(), config_.server_channel.size());
      if (owner && server) {
        const std::string sql = std::string("LISTEN ") + owner + "; LISTEN " + server;
        sent = PQsendQuery(conn_, sql.c_str());
      }
      PQfreemem(owner);
      PQfreemem(server);
      break;
    }
    case Query::full:
      sent = PQsendQueryParams(conn_, config_.queries.full.c_str(), 0, nullptr, nullptr, nullptr, nullptr, 0);
      break;
    case Query::delta: {
      const DeltaParameter after =
          delta_parameter(config_.change_detection, core_.snapshot()->epoch(), config_.watermark_overlap);
      // A zone suffix: a timestamptz column reads the text as UTC; a timestamp one ignores it.
      epoch_text = after.integer ? std::to_string(*after.integer) : after.text + "+00";
      const char* params[] = {epoch_text.c_str()};
      sent = PQsendQueryParams(conn_, config_.queries.delta.c_str(), 1, nullptr, params, nullptr, nullptr, 0);
      break;
    }
    case Query::servers:
      sent = PQsendQueryParams(conn_, config_.queries.servers.c_str(), 0, nullptr, nullptr, nullptr, nullptr, 0);
      break;
    case Query::none: return true;
  }
  if (!sent) {
    fail("cannot send a query: " + conn_error(conn_));
    return false;
  }
  // A million rows must not pile up in one PGresult: take them one at a time.
  if ((query == Query::full || query == Query::delta) && !PQsetSingleRowMode(conn_)) {
    fail("cannot enter single-row mode: " + conn_error(conn_));
    return false;
  }
  query_ = query;
  columns_checked_ = false;
  rows_read_ = 0;
  if (query == Query::full || query == Query::delta) rows_ = std::make_shared<OwnershipRowBlock>();
  servers_.clear();
  uv_timer_start(&deadline_timer_, on_deadline_timer, static_cast<std::uint64_t>(config_.query_timeout.count()), 0);
  return flush();
}

bool PgOwnershipSource::flush() {
  const int rc = PQflush(conn_);
  if (rc < 0) {
    fail("cannot send to the server: " + conn_error(conn_));
    return false;
  }
  return watch(rc == 1);
}

bool PgOwnershipSource::drain_results() {
  while (conn_ && query_ != Query::none && !PQisBusy(conn_)) {
    PGresult* result = PQgetResult(conn_);
    if (!result) {
      query_finished();
      continue;
    }
    const bool ok = take_result(result);
    PQclear(result);
    if (!ok) return false;
  }
  return conn_ != nullptr && !stopping_;
}

bool PgOwnershipSource::take_result(const PGresult* result) {
  const ExecStatusType status = PQresultStatus(result);
  if (status == PGRES_COMMAND_OK) return true;
  if (status != PGRES_SINGLE_TUPLE && status != PGRES_TUPLES_OK) {
    std::string message = clean_message(PQresultErrorMessage(result));
    if (message.empty()) message = PQresStatus(status);
    switch (query_) {
      case Query::listen:
        message = "LISTEN failed: " + message;
        if (message.find("recovery") != std::string::npos) {
          message += " (the server is a hot standby: add target_session_attrs=read-write to pg_conninfo)";
        }
        break;
      case Query::full: message = "full query failed: " + message; break;
      case Query::delta: message = "delta query failed: " + message; break;
      case Query::servers: message = "servers query failed: " + message; break;
      case Query::none: break;
    }
    fail(std::move(message));
    return false;
  }

  const int tuples = PQntuples(result);
  if (query_ == Query::full || query_ == Query::delta) {
    const bool full = query_ == Query::full;
    const ChangeDetection mode = config_.change_detection;
    if (!columns_checked_ && PQnfields(result) < (mode == ChangeDetection::full_scan ? 2 : 3)) {
      fail(std::string(query_name(full)) + " query must return user_key, server_id" +
           (mode == ChangeDetection::epoch ? ", epoch" : mode == ChangeDetection::watermark ? ", changed_at" : ""));
      return false;
    }
    columns_checked_ = true;
    for (int i = 0; i < tuples; ++i) {
      std::int64_t epoch = 0;
      if (mode == ChangeDetection::epoch &&
          (PQgetisnull(result, i, 2) || !parse_int(PQgetvalue(result, i, 2), PQgetlength(result, i, 2), epoch))) {
        fail(std::string(query_name(full)) + " query: epoch of user '" + PQgetvalue(result, i, 0) +
             "' is not an integer");
        return false;
      }
      if (mode == ChangeDetection::watermark) {
        const auto value = PQgetisnull(result, i, 2)
                               ? std::nullopt
                               : change_value(mode, std::string_view(PQgetvalue(result, i, 2), PQgetlength(result, i, 2)));
        if (!value) {
          fail(std::string(query_name(full)) + " query: changed_at of user '" + PQgetvalue(result, i, 0) +
               "' is not a timestamp");
          return false;
        }
        epoch = *value;
      }
      std::optional<std::string_view> server;
      if (!PQgetisnull(result, i, 1)) server = std::string_view(PQgetvalue(result, i, 1), PQgetlength(result, i, 1));
      rows_->add(std::string_view(PQgetvalue(result, i, 0), PQgetlength(result, i, 0)), server, epoch);
      if (full && config_.on_load_progress && config_.progress_rows && ++rows_read_ % config_.progress_rows == 0)
        config_.on_load_progress(rows_read_);
    }
  } else if (query_ == Query::servers) {
    if (PQnfields(result) < 4) {
      fail("servers query must return server_id, address, availability, heartbeat_at");
      return false;
    }
    for (int i = 0; i < tuples; ++i) {
      PoolServerRow row;
      row.server_id = PQgetvalue(result, i, 0);
      row.address = PQgetvalue(result, i, 1);
      std::int64_t availability = 0;
      if (!PQgetisnull(result, i, 2) &&
          !parse_int(PQgetvalue(result, i, 2), PQgetlength(result, i, 2), availability)) {
        fail("servers query: availability of server '" + row.server_id + "' is not an integer");
        return false;
      }
      row.availability = static_cast<int>(availability);
      row.heartbeat_text = PQgetvalue(result, i, 3);
      row.heartbeat_at = parse_db_timestamp(row.heartbeat_text);
      servers_.push_back(std::move(row));
    }
  }
  return true;
}

void PgOwnershipSource::query_finished() {
  const Query query = std::exchange(query_, Query::none);
  uv_timer_stop(&deadline_timer_);
  if (synced_) {
    core_.succeeded();
    if (stopping_) return;
  }
  switch (query) {
    case Query::listen:
      phase_ = Phase::ready;
      want_full_ = true;
      want_servers_ = !config_.queries.servers.empty();
      break;
    case Query::full:
      core_.apply_full_async(std::move(rows_), [this, id = connection_id_] { full_applied(id); });
      break;
    case Query::delta:
      if (rows_ && !rows_->empty()) core_.apply_delta_async(std::move(rows_), [this] { pump(); });
      rows_.reset();
      break;
    case Query::servers:
      core_.deliver_servers(std::move(servers_));
      servers_.clear();
      break;
    case Query::none: break;
  }
}

void PgOwnershipSource::full_applied(std::uint64_t connection_id) {
  // A load read on a connection that has died since does not sync its successor: changes
  // in between had no one listening.
  if (phase_ == Phase::ready && connection_id == connection_id_) {
    synced_ = true;
    core_.reset_backoff();
    uv_timer_again(&resync_timer_);  // the next resync counts from this load
  }
  pump();
}

// Starts the next query unless one is out or a snapshot is being built from the last.
void PgOwnershipSource::pump() {
  if (stopping_ || phase_ != Phase::ready || query_ != Query::none || core_.applying()) return;
  if (want_full_) {
    // The full read covers every delta asked for until now.
    want_full_ = want_delta_ = delta_forced_ = false;
    send_query(Query::full);
    return;
  }
  if (want_delta_ && synced_) {
    const bool needed = delta_forced_ || notified_epoch_ > core_.snapshot()->epoch();
    want_delta_ = delta_forced_ = false;
    if (needed) {
      // full_scan has no delta query: the full read is diffed against the snapshot.
      send_query(config_.change_detection == ChangeDetection::full_scan ? Query::full : Query::delta);
      return;
    }
  }
  if (want_servers_) {
    want_servers_ = false;
    send_query(Query::servers);
  }
}

void PgOwnershipSource::drain_notifies() {
  while (PGnotify* n = PQnotifies(conn_)) {
    core_.count_notification();
    if (config_.owner_channel == n->relname) {
      std::int64_t epoch = 0;
      const std::string_view extra = n->extra ? n->extra : "";
      if (config_.change_detection == ChangeDetection::epoch &&
          parse_int(extra.data(), static_cast<int>(extra.size()), epoch)) {
        notified_epoch_ = std::max(notified_epoch_, epoch);
      } else {
        delta_forced_ = true;  // a payload we cannot read still means "look"
      }
      want_delta_ = true;
    } else if (config_.server_channel == n->relname) {
      want_servers_ = !config_.queries.servers.empty();
    }
    PQfreemem(n);
  }
}

// --- failure and timers

void PgOwnershipSource::drop_connection() {
  uv_timer_stop(&deadline_timer_);
  last_notice_.clear();
  close_watch();  // before PQfinish closes the socket
  if (conn_) PQfinish(conn_);
  conn_ = nullptr;
  phase_ = Phase::idle;
  query_ = Query::none;
  synced_ = false;
  want_full_ = want_delta_ = delta_forced_ = want_servers_ = false;
  rows_.reset();
  servers_.clear();
}

void PgOwnershipSource::fail(std::string reason) {
  if (stopping_) return;
  drop_connection();
  const SourceDuration delay = core_.next_backoff();
  core_.failed(std::move(reason));
  if (stopping_) return;
  uv_timer_start(&reconnect_timer_, on_reconnect_timer, static_cast<std::uint64_t>(delay.count()), 0);
}

void PgOwnershipSource::on_reconnect_timer(uv_timer_t* timer) noexcept {
  auto* self = static_cast<PgOwnershipSource*>(timer->data);
  self->core_.count_reconnect();
  self->connect();
}

void PgOwnershipSource::on_deadline_timer(uv_timer_t* timer) noexcept {
  static_cast<PgOwnershipSource*>(timer->data)->deadline_passed();
}

void PgOwnershipSource::on_delta_timer(uv_timer_t* timer) noexcept {
  auto* self = static_cast<PgOwnershipSource*>(timer->data);
  self->want_delta_ = self->delta_forced_ = true;
  self->pump();
}

void PgOwnershipSource::on_servers_timer(uv_timer_t* timer) noexcept {
  auto* self = static_cast<PgOwnershipSource*>(timer->data);
  self->want_servers_ = !self->config_.queries.servers.empty();
  self->pump();
}

void PgOwnershipSource::on_resync_timer(uv_timer_t* timer) noexcept {
  auto* self = static_cast<PgOwnershipSource*>(timer->data);
  self->want_full_ = true;
  self->pump();
}

}  // namespace sprayer::affinity
