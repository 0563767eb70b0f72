// Threaded source: the loop decides what to ask (full read, delta or scan, servers) and
// when; the source thread connects when it must, runs the one query and reports back. Any
// error drops the connection; the retry after backoff reconnects and reads in full.
#include "affinity/ownership_threaded.h"

#include <cassert>
#include <utility>

namespace sprayer::affinity {

namespace {
std::uint64_t ms(SourceDuration d) { return static_cast<std::uint64_t>(std::max<std::int64_t>(1, d.count())); }
}  // namespace

ThreadedOwnershipSource::ThreadedOwnershipSource(uv_loop_t* loop, OwnershipSourceConfig config,
                                                 OwnershipCallbacks callbacks, SourceEnvironment env,
                                                 std::unique_ptr<SqlClient> client)
    : loop_(loop),
      config_(std::move(config)),
      core_(loop, config_, std::move(callbacks), std::move(env)),
      client_(std::move(client)) {
  uv_async_init(loop_, &async_, on_async);
  async_.data = this;
  ++open_handles_;
  for (uv_timer_t* t : {&poll_timer_, &resync_timer_, &reconnect_timer_}) {
    uv_timer_init(loop_, t);
    t->data = this;
    ++open_handles_;
  }
}

ThreadedOwnershipSource::~ThreadedOwnershipSource() {
  assert(open_handles_ == 0 && !core_open_ && !thread_.joinable() && "stop() must finish first");
}

void ThreadedOwnershipSource::start() {
  assert(!started_);
  started_ = true;
  core_.start();
  want_servers_ = !config_.queries.servers.empty();
  thread_ = std::thread([this] { run_thread(); });
  uv_timer_start(&poll_timer_, on_poll_timer, ms(config_.poll_interval), ms(config_.poll_interval));
  uv_timer_start(&resync_timer_, on_resync_timer, ms(config_.resync_interval), ms(config_.resync_interval));
  pump();
}

void ThreadedOwnershipSource::stop(std::function<void()> done) {
  assert(!stopping_);
  stopping_ = true;
  stop_done_ = std::move(done);
  for (uv_timer_t* t : {&poll_timer_, &resync_timer_, &reconnect_timer_}) {
    uv_close(reinterpret_cast<uv_handle_t*>(t), on_handle_closed);
  }
  core_.close([this] {
    core_open_ = false;
    maybe_finish_stop();
  });
  if (!thread_.joinable()) {
    thread_done_ = true;
    uv_close(reinterpret_cast<uv_handle_t*>(&async_), on_handle_closed);
    return;
  }
  {
    std::lock_guard lock(mutex_);
    quit_ = true;
  }
  wake_.notify_one();
  client_->interrupt();  // a query in flight ends now, not at its timeout
}

void ThreadedOwnershipSource::maybe_finish_stop() {
  if (open_handles_ > 0 || core_open_ || !thread_done_ || !stop_done_) return;
  auto done = std::move(stop_done_);
  stop_done_ = nullptr;
  done();  // may destroy *this
}

void ThreadedOwnershipSource::on_handle_closed(uv_handle_t* handle) noexcept {
  auto* self = static_cast<ThreadedOwnershipSource*>(handle->data);
  --self->open_handles_;
  self->maybe_finish_stop();
}

// --- the source thread

void ThreadedOwnershipSource::run_thread() {
  std::unique_lock lock(mutex_);
  for (;;) {
    wake_.wait(lock, [this] { return quit_ || request_; });
    if (quit_) break;
    const Request request = std::move(*request_);
    request_.reset();
    lock.unlock();
    Reply reply = execute(request);
    lock.lock();
    reply_ = std::move(reply);
    uv_async_send(&async_);
  }
  lock.unlock();
  client_->disconnect();
  lock.lock();
  exited_ = true;
  // Under the lock: the loop closes the handle only once it has seen exited_.
  uv_async_send(&async_);
}

ThreadedOwnershipSource::Reply ThreadedOwnershipSource::execute(const Request& request) {
  Reply reply;
  reply.query = request.query;
  if (!client_->connected() && !client_->connect(reply.error)) {
    client_->disconnect();
    return reply;
  }
  const ChangeDetection mode = config_.change_detection;
  bool ok = false;
  if (request.query == Query::servers) {
    ok = client_->query(config_.queries.servers, nullptr, [&](SqlRow row) {
      PoolServerRow server;
      if (!parse_server_row(row, server, reply.error)) return false;
      reply.servers.push_back(std::move(server));
      return true;
    }, reply.error);
    if (!ok && reply.error.find("servers query") == std::string::npos) reply.error = "servers query failed: " + reply.error;
  } else {
    const bool delta = request.query == Query::delta;
    const char* what = delta ? "delta" : "full";
    reply.rows = std::make_shared<OwnershipRowBlock>();
    const std::string& sql = delta ? config_.queries.delta : config_.queries.full;
    const DeltaParameter* parameter = request.parameter ? &*request.parameter : nullptr;
    ok = client_->query(sql, parameter, [&](SqlRow row) {
      return add_owner_row(mode, row, what, *reply.rows, reply.error);
    }, reply.error);
    if (!ok && reply.error.rfind(what, 0) != 0) reply.error = std::string(what) + " query failed: " + reply.error;
  }
  if (!ok) {
    client_->disconnect();
    reply.rows.reset();
    reply.servers.clear();
  }
  return reply;
}

// --- the loop

void ThreadedOwnershipSource::on_async(uv_async_t* async) noexcept {
  static_cast<ThreadedOwnershipSource*>(async->data)->replied();
}

void ThreadedOwnershipSource::replied() {
  std::optional<Reply> reply;
  bool exited = false;
  {
    std::lock_guard lock(mutex_);
    reply = std::exchange(reply_, std::nullopt);
    exited = exited_;
  }
  if (exited) return thread_exited();
  if (reply) take(std::move(*reply));
}

void ThreadedOwnershipSource::thread_exited() {
  if (thread_done_) return;
  thread_.join();  // it has left run_thread: returns at once
  thread_done_ = true;
  uv_close(reinterpret_cast<uv_handle_t*>(&async_), on_handle_closed);
  maybe_finish_stop();
}

void ThreadedOwnershipSource::take(Reply reply) {
  in_flight_ = false;
  if (stopping_) return;
  if (!reply.error.empty()) return fail(std::move(reply.error));
  if (synced_) {
    core_.succeeded();
    if (stopping_) return;
  }
  switch (reply.query) {
    case Query::full:
    case Query::scan:
      core_.apply_full_async(std::move(reply.rows), [this] { full_applied(); });
      return;
    case Query::delta:
      if (reply.rows && !reply.rows->empty()) return core_.apply_delta_async(std::move(reply.rows), [this] { pump(); });
      break;
    case Query::servers:
      core_.deliver_servers(std::move(reply.servers));
      if (stopping_) return;
      break;
  }
  pump();
}

void ThreadedOwnershipSource::full_applied() {
  if (!synced_) {
    synced_ = true;
    core_.reset_backoff();
  }
  pump();
}

void ThreadedOwnershipSource::send(Query query) {
  Request request;
  request.query = query;
  if (query == Query::delta) {
    request.parameter = delta_parameter(config_.change_detection, core_.snapshot()->epoch(), config_.watermark_overlap);
  }
  if (query == Query::full) uv_timer_again(&resync_timer_);  // the next resync counts from this read
  in_flight_ = true;
  {
    std::lock_guard lock(mutex_);
    request_ = std::move(request);
  }
  wake_.notify_one();
}

// Starts the next query unless one is out, a snapshot is being built, or a retry waits.
void ThreadedOwnershipSource::pump() {
  if (stopping_ || in_flight_ || waiting_reconnect_ || core_.applying()) return;
  if (want_full_ || !synced_) {
    want_full_ = want_delta_ = false;
    return send(Query::full);
  }
  if (want_delta_) {
    want_delta_ = false;
    return send(config_.change_detection == ChangeDetection::full_scan ? Query::scan : Query::delta);
  }
  if (want_servers_) {
    want_servers_ = false;
    send(Query::servers);
  }
}

void ThreadedOwnershipSource::fail(std::string reason) {
  synced_ = false;
  want_full_ = true;
  want_delta_ = false;
  waiting_reconnect_ = true;
  const SourceDuration delay = core_.next_backoff();
  core_.failed(std::move(reason));
  if (stopping_) return;
  uv_timer_start(&reconnect_timer_, on_reconnect_timer, ms(delay), 0);
}

void ThreadedOwnershipSource::on_reconnect_timer(uv_timer_t* timer) noexcept {
  auto* self = static_cast<ThreadedOwnershipSource*>(timer->data);
  self->waiting_reconnect_ = false;
  self->core_.count_reconnect();
  self->pump();
}

void ThreadedOwnershipSource::on_poll_timer(uv_timer_t* timer) noexcept {
  auto* self = static_cast<ThreadedOwnershipSource*>(timer->data);
  self->want_delta_ = true;
  self->want_servers_ = !self->config_.queries.servers.empty();
  self->pump();
}

void ThreadedOwnershipSource::on_resync_timer(uv_timer_t* timer) noexcept {
  auto* self = static_cast<ThreadedOwnershipSource*>(timer->data);
  self->want_full_ = true;
  self->pump();
}

}  // namespace sprayer::affinity
