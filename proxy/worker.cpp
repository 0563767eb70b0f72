// Worker thread lifecycle: start (bind listeners), serve, drain, stop, and a clean loop close.
#include "proxy/worker.h"

#include <cassert>

#include "proxy/downstream_connection.h"
#include "proxy/listener.h"
#include "proxy/log.h"
#include "proxy/upstream_pool.h"

namespace sprayer::proxy {
namespace {

constexpr uint64_t kTickMs = 100;
constexpr uint64_t kAccessLogFlushMs = 100;

}  // namespace

Worker::Worker(int index, std::shared_ptr<const Runtime> runtime, std::atomic<int64_t>& process_connections,
               HealthEvents* health_events)
    : index_(index),
      runtime_(std::move(runtime)),
      route_state_(RouteState::make(*runtime_, nullptr, nullptr, 0)),
      extractor_(runtime_->extractor),
      passive_(health_events, runtime_->servers.size()),
      server_count_(runtime_->servers.size()),
      active_upstreams_(new std::atomic<int64_t>[runtime_->servers.size()]()),
      process_connections_(process_connections) {}

Worker::~Worker() { join(); }

void Worker::flush_access_log() {
  if (uint64_t dropped = access_log_.flush()) WorkerStats::add(stats_.access_log_dropped, dropped);
}

bool Worker::start(std::string& error) {
  thread_ = std::thread([this] { run(); });
  std::unique_lock<std::mutex> lock(start_mutex_);
  start_cv_.wait(lock, [this] { return start_done_; });
  error = start_error_;
  return start_error_.empty();
}

void Worker::run() {
  uv_loop_init(&loop_);
  uv_async_init(&loop_, &async_, [](uv_async_t* h) noexcept { static_cast<Worker*>(h->data)->on_async(); });
  async_.data = this;
  uv_timer_init(&loop_, &tick_);
  tick_.data = this;
  uv_timer_start(&tick_, [](uv_timer_t* h) noexcept { static_cast<Worker*>(h->data)->on_tick(); }, kTickMs, kTickMs);
  for (size_t i = 0; i < runtime_->servers.size(); ++i) pools_.push_back(std::make_unique<UpstreamPool>(*this, i));

  std::string error;
  const auto& listener_configs = runtime_->config->listeners;
  for (size_t i = 0; i < listener_configs.size(); ++i) {
    auto tls = i < runtime_->listener_tls.size() ? runtime_->listener_tls[i] : nullptr;
    auto* listener = new Listener(*this, listener_configs[i], std::move(tls));
    if (listener->open(error) != 0) {
      listener->close();
      break;
    }
    listeners_.push_back(listener);
  }
  {
    std::lock_guard<std::mutex> lock(start_mutex_);
    start_error_ = error;
    start_done_ = true;
  }
  start_cv_.notify_all();
  if (!error.empty()) {
    stop_listeners();
    std::lock_guard<std::mutex> lock(mailbox_mutex_);
    mailbox_closed_ = true;
    uv_close(reinterpret_cast<uv_handle_t*>(&async_), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&tick_), nullptr);
  }

  if (access_log_.enabled()) {
    // Unreferenced: it must not keep the loop alive once the worker has drained.
    uv_timer_init(&loop_, &access_log_timer_);
    access_log_timer_.data = this;
    uv_timer_start(&access_log_timer_, [](uv_timer_t* h) noexcept { static_cast<Worker*>(h->data)->flush_access_log(); },
                   kAccessLogFlushMs, kAccessLogFlushMs);
    uv_unref(reinterpret_cast<uv_handle_t*>(&access_log_timer_));
  }

  uv_run(&loop_, UV_RUN_DEFAULT);

  // Anything still open (forced stop) is closed here so the loop can be closed cleanly.
  uv_walk(&loop_, [](uv_handle_t* h, void*) noexcept {
    if (!uv_is_closing(h)) uv_close(h, nullptr);
  }, nullptr);
  uv_run(&loop_, UV_RUN_DEFAULT);
  flush_access_log();
  int rc = uv_loop_close(&loop_);
  loop_close_status_.store(rc);
  if (rc != 0) LOG_WARN("worker %d: loop closed with handles open: %s", index_, uv_strerror(rc));
  finished_.store(true);
}

void Worker::begin_drain() { post(true, false); }

void Worker::force_stop() { post(false, true); }

void Worker::publish(std::shared_ptr<const RouteState> state) {
  std::lock_guard<std::mutex> lock(mailbox_mutex_);
  if (mailbox_closed_) return;
  mailbox_route_ = std::move(state);
  uv_async_send(&async_);
}

void Worker::publish_tls(std::vector<std::shared_ptr<const TlsContext>> contexts) {
  std::lock_guard<std::mutex> lock(mailbox_mutex_);
  if (mailbox_closed_) return;
  mailbox_tls_ = std::move(contexts);
  uv_async_send(&async_);
}

void Worker::post(bool drain, bool stop) {
  // Sent under the lock so the worker cannot close async_ between the check and the send.
  std::lock_guard<std::mutex> lock(mailbox_mutex_);
  if (mailbox_closed_) return;
  drain_requested_ = drain_requested_ || drain;
  stop_requested_ = stop_requested_ || stop;
  uv_async_send(&async_);
}

void Worker::join() {
  if (thread_.joinable()) thread_.join();
}

void Worker::on_async() {
  bool drain, stop;
  std::shared_ptr<const RouteState> route;
  std::vector<std::shared_ptr<const TlsContext>> tls;
  {
    std::lock_guard<std::mutex> lock(mailbox_mutex_);
    route = std::move(mailbox_route_);
    tls.swap(mailbox_tls_);
    drain = drain_requested_;
    stop = stop_requested_;
    drain_requested_ = false;
    stop_requested_ = false;
  }
  // The old state is released here, on this thread; requests already routed keep their
  // candidate lists, which do not point into it.
  if (route) swap_route_state(std::move(route));
  // listeners_ holds the open listeners in configuration order (all of them, or none once
  // draining started).
  for (size_t i = 0; i < tls.size() && i < listeners_.size(); ++i) listeners_[i]->set_tls(std::move(tls[i]));
  if (drain && !draining_) {
    draining_ = true;
    stop_listeners();
    for (auto& pool : pools_) pool->close_idle();
    for (DownstreamConnection* c = connections_; c;) {
      DownstreamConnection* next = c->list_next_;
      c->begin_drain();
      c = next;
    }
  }
  if (stop) {
    draining_ = true;
    stop_listeners();
    for (auto& pool : pools_) pool->close_idle();
    for (DownstreamConnection* c = connections_; c;) {
      DownstreamConnection* next = c->list_next_;
      c->close();
      c = next;
    }
  }
  maybe_finish();
}

void Worker::swap_route_state(std::shared_ptr<const RouteState> next) {
  std::shared_ptr<const RouteState> previous = std::move(route_state_);
  route_state_ = std::move(next);
  for (size_t i = 0; i < route_state_->servers.size() && i < pools_.size(); ++i) {
    // A server that went down (dead or hung) will not answer its parked requests: end them so
    // devices reconnect to a survivor. Maintenance only stops new requests; those in flight
    // finish, and the admin API shows when none is left.
    auto now_state = route_state_->servers[i].state;
    auto before = previous->servers[i].state;
    if (now_state == affinity::ServerState::down && before != affinity::ServerState::down) pools_[i]->fail_active();
    if (now_state == affinity::ServerState::maintenance && before != affinity::ServerState::maintenance)
      pools_[i]->close_idle();
  }
}

void Worker::on_tick() {
  for (size_t i = 0; i < pools_.size(); ++i)
    active_upstreams_[i].store(static_cast<int64_t>(pools_[i]->active_count()), std::memory_order_relaxed);
  if (draining_) {
    maybe_finish();
    return;
  }
  if (!at_connection_limit())
    for (auto* listener : listeners_) listener->resume();
}

void Worker::stop_listeners() {
  for (auto* listener : listeners_) listener->close();
  listeners_.clear();
}

void Worker::maybe_finish() {
  if (!draining_ || connection_count_ != 0) return;
  if (uv_is_closing(reinterpret_cast<uv_handle_t*>(&async_))) return;
  for (auto& pool : pools_) pool->close_idle();
  {
    std::lock_guard<std::mutex> lock(mailbox_mutex_);
    mailbox_closed_ = true;
    uv_close(reinterpret_cast<uv_handle_t*>(&async_), nullptr);
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&tick_), nullptr);
}

bool Worker::at_connection_limit() const {
  return process_connections_.load(std::memory_order_relaxed) >=
         static_cast<int64_t>(runtime_->config->limits.max_connections);
}

void Worker::on_connection_opened(DownstreamConnection* connection) {
  process_connections_.fetch_add(1, std::memory_order_relaxed);
  WorkerStats::add(stats_.downstream_accepted);
  WorkerStats::add(stats_.downstream_open, 1);
  connection->list_next_ = connections_;
  if (connections_) connections_->list_prev_ = connection;
  connections_ = connection;
  ++connection_count_;
}

void Worker::on_connection_closed(DownstreamConnection* connection) {
  process_connections_.fetch_sub(1, std::memory_order_relaxed);
  WorkerStats::add(stats_.downstream_open, -1);
  if (connection->list_prev_)
    connection->list_prev_->list_next_ = connection->list_next_;
  else
    connections_ = connection->list_next_;
  if (connection->list_next_) connection->list_next_->list_prev_ = connection->list_prev_;
  --connection_count_;
  if (draining_ && connection_count_ == 0) maybe_finish();
}

}  // namespace sprayer::proxy
