// Worker thread lifecycle: start (bind listeners), serve, drain, stop, and a clean loop close.
#include "proxy/worker.h"

#include <algorithm>
#include <cassert>

#include "proxy/downstream_connection.h"
#include "proxy/early_resend.h"
#include "proxy/listener.h"
#include "proxy/log.h"
#include "proxy/upstream_pool.h"

namespace sprayer::proxy {
namespace {

constexpr uint64_t kTickMs = 100;
constexpr uint64_t kAccessLogFlushMs = 100;
// How often parked Pings are asked to give memory back: a Ping answered within this long
// rarely pays for the rebuild, one parked for minutes holds the memory at most this long.
constexpr uint32_t kRestEveryTicks = 10;

}  // namespace

Worker::Worker(int index, std::shared_ptr<const Runtime> runtime, std::atomic<int64_t>& process_connections,
               HealthEvents* health_events, Overload* overload)
    : index_(index),
      runtime_(std::move(runtime)),
      route_state_(RouteState::make(*runtime_, nullptr, nullptr, 0)),
      extractor_(runtime_->extractor),
      passive_(health_events, runtime_->servers.size()),
      process_connections_(process_connections),
      own_overload_(overload ? nullptr : std::make_unique<Overload>(runtime_->config->limits.memory_budget)),
      overload_(overload ? overload : own_overload_.get()) {}

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
  directory_waiters_.open(&loop_);
  for (const auto& server : runtime_->servers) {
    if (server.slot >= pools_.size()) pools_.resize(server.slot + 1u);
    pools_[server.slot] = std::make_unique<UpstreamPool>(context_, server);
  }

  std::string error;
  const auto& listener_configs = runtime_->config->listeners;
  for (size_t i = 0; i < listener_configs.size(); ++i) {
    auto tls = i < runtime_->listener_tls.size() ? runtime_->listener_tls[i] : nullptr;
    uint16_t slot = i < runtime_->listener_slots.size() ? runtime_->listener_slots[i] : static_cast<uint16_t>(i);
    auto* listener = new Listener(*this, listener_configs[i], std::move(tls), slot);
    if (i < inherited_fds_.size() && inherited_fds_[i] >= 0) listener->adopt(inherited_fds_[i]);
    if (listener->open(error) != 0) {
      listener->close();
      break;
    }
    if (hold_accept_) listener->pause();
    listeners_.push_back(listener);
  }
  note_listeners();
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

  if (access_log_.enabled()) start_access_log_timer();

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
  {
    std::lock_guard<std::mutex> lock(start_mutex_);
    finished_.store(true);
  }
  start_cv_.notify_all();
}

bool Worker::wait_finished(std::chrono::milliseconds limit) {
  std::unique_lock<std::mutex> lock(start_mutex_);
  return start_cv_.wait_for(lock, limit, [this] { return finished_.load(); });
}

void Worker::start_access_log_timer() {
  if (access_log_timer_on_) return;
  access_log_timer_on_ = true;
  // Unreferenced: it must not keep the loop alive once the worker has drained.
  uv_timer_init(&loop_, &access_log_timer_);
  access_log_timer_.data = this;
  uv_timer_start(&access_log_timer_, [](uv_timer_t* h) noexcept { static_cast<Worker*>(h->data)->flush_access_log(); },
                 kAccessLogFlushMs, kAccessLogFlushMs);
  uv_unref(reinterpret_cast<uv_handle_t*>(&access_log_timer_));
}

void Worker::inherit(std::vector<int> fds, bool hold_accept) {
  inherited_fds_ = std::move(fds);
  hold_accept_ = hold_accept;
}

void Worker::allow_accept() {
  std::lock_guard<std::mutex> lock(mailbox_mutex_);
  if (mailbox_closed_) return;
  accept_requested_ = true;
  uv_async_send(&async_);
}

std::vector<std::pair<std::string, int>> Worker::listening_sockets() const {
  std::lock_guard<std::mutex> lock(active_mutex_);
  return listening_fds_;
}

void Worker::note_listeners() {
  std::vector<std::pair<std::string, int>> fds;
  for (auto* listener : listeners_)
    if (listener && listener->fd() >= 0) fds.emplace_back(listener->address().to_string(), listener->fd());
  std::lock_guard<std::mutex> lock(active_mutex_);
  listening_fds_ = std::move(fds);
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

void Worker::publish_runtime(std::shared_ptr<const Runtime> runtime, std::shared_ptr<const RouteState> state) {
  std::lock_guard<std::mutex> lock(mailbox_mutex_);
  if (mailbox_closed_) return;
  mailbox_runtime_ = std::move(runtime);
  mailbox_route_ = std::move(state);
  // The runtime carries its listeners' TLS contexts, newer than any queued TLS reload (whose
  // order is the old listener list's).
  mailbox_tls_.clear();
  uv_async_send(&async_);
}

void Worker::notify_directory() {
  std::lock_guard<std::mutex> lock(mailbox_mutex_);
  if (mailbox_closed_) return;
  directory_answers_ = true;
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
  bool drain, stop, answers, accept;
  std::shared_ptr<const RouteState> route;
  std::shared_ptr<const Runtime> runtime;
  std::vector<std::shared_ptr<const TlsContext>> tls;
  {
    std::lock_guard<std::mutex> lock(mailbox_mutex_);
    route = std::move(mailbox_route_);
    runtime = std::move(mailbox_runtime_);
    tls.swap(mailbox_tls_);
    drain = drain_requested_;
    stop = stop_requested_;
    drain_requested_ = false;
    stop_requested_ = false;
    accept = accept_requested_;
    accept_requested_ = false;
    answers = directory_answers_;
    directory_answers_ = false;
  }
  if (answers) directory_waiters_.on_answers();
  // The runtime first: the route state that came with it (or after it) indexes its servers.
  if (runtime) apply_runtime(std::move(runtime));
  // The old state is released here, on this thread; requests already routed keep their
  // candidate lists (server slots), which do not point into it.
  if (route) swap_route_state(std::move(route));
  // listeners_ holds the listeners in configuration order (all of them, or none once
  // draining started).
  for (size_t i = 0; i < tls.size() && i < listeners_.size(); ++i)
    if (listeners_[i]) listeners_[i]->set_tls(std::move(tls[i]));
  if (accept && hold_accept_) {
    hold_accept_ = false;
    if (!draining_ && may_accept())
      for (auto* listener : listeners_)
        if (listener) listener->resume();
  }
  if (drain && !draining_) {
    draining_ = true;
    stop_listeners();
    for (auto& pool : pools_)
      if (pool) pool->close_idle();
    for (DownstreamConnection* c = connections_; c;) {
      DownstreamConnection* next = c->list_next_;
      c->begin_drain();
      c = next;
    }
  }
  if (stop) {
    draining_ = true;
    stop_listeners();
    for (auto& pool : pools_)
      if (pool) pool->close_idle();
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
  for (size_t i = 0; i < route_state_->servers.size(); ++i) {
    uint32_t slot = route_state_->slots[i];
    if (slot >= pools_.size() || !pools_[slot]) continue;
    // The same server in the previous state, by slot (a reload may have changed the list).
    size_t j = 0;
    while (j < previous->slots.size() && previous->slots[j] != slot) ++j;
    if (j == previous->slots.size()) continue;  // new with this state: nothing in flight yet
    // A server that went down (dead or hung) will not answer its parked requests: end them so
    // devices reconnect to a survivor. Maintenance only stops new requests; those in flight
    // finish, and the admin API shows when none is left.
    auto now_state = route_state_->servers[i].state;
    auto before = previous->servers[j].state;
    if (now_state == affinity::ServerState::down && before != affinity::ServerState::down) pools_[slot]->fail_active();
    if (now_state == affinity::ServerState::maintenance && before != affinity::ServerState::maintenance)
      pools_[slot]->close_idle();
  }
}

void Worker::apply_runtime(std::shared_ptr<const Runtime> next) {
  std::vector<bool> in_next;
  for (const auto& server : next->servers) {
    if (server.slot >= pools_.size()) pools_.resize(server.slot + 1u);
    if (server.slot >= in_next.size()) in_next.resize(server.slot + 1u, false);
    in_next[server.slot] = true;
    if (!pools_[server.slot]) pools_[server.slot] = std::make_unique<UpstreamPool>(context_, server);
  }
  // Removed servers: their requests in flight finish on their connections; nothing new.
  for (const auto& server : runtime_->servers)
    if ((server.slot >= in_next.size() || !in_next[server.slot]) && pools_[server.slot])
      pools_[server.slot]->retire();
  extractor_ = affinity::Extractor(next->extractor);
  if (next->access_log != runtime_->access_log) {
    // A reload changed the access log: what this worker holds goes to the old one first.
    flush_access_log();
    access_log_ = AccessLogBuffer(next->access_log);
    if (access_log_.enabled()) start_access_log_timer();
  }
  apply_listeners(*next);
  // In-flight requests read timeouts and limits from here at their next step: they get the
  // new values; nothing keeps a reference into the old Config.
  runtime_ = std::move(next);
}

void Worker::apply_listeners(const Runtime& next) {
  if (draining_) return;  // listeners are closed for good
  const auto& configs = next.config->listeners;
  std::vector<Listener*> fresh(configs.size(), nullptr);
  std::vector<bool> kept(listeners_.size(), false);
  for (size_t i = 0; i < configs.size(); ++i) {
    auto tls = i < next.listener_tls.size() ? next.listener_tls[i] : nullptr;
    uint16_t slot = i < next.listener_slots.size() ? next.listener_slots[i] : static_cast<uint16_t>(i);
    for (size_t j = 0; j < listeners_.size(); ++j) {
      if (kept[j] || !listeners_[j] || !(listeners_[j]->address() == configs[i].address)) continue;
      // Same address: keep the socket, so no connection is refused during the reload.
      kept[j] = true;
      listeners_[j]->reconfigure(configs[i], tls, slot);
      fresh[i] = listeners_[j];
      break;
    }
    if (fresh[i]) continue;
    auto* listener = new Listener(*this, configs[i], std::move(tls), slot);
    std::string error;
    if (listener->open(error) != 0) {
      LOG_ERROR("worker %d: reload: %s", index_, error.c_str());
      listener->close();
      continue;
    }
    fresh[i] = listener;
  }
  // Only now, with every new socket bound, do the removed ones close.
  for (size_t j = 0; j < listeners_.size(); ++j)
    if (!kept[j] && listeners_[j]) listeners_[j]->close();
  listeners_ = std::move(fresh);
  note_listeners();
  if (!may_accept() || hold_accept_)
    for (auto* listener : listeners_)
      if (listener) listener->pause();
}

void Worker::on_tick() {
  {
    std::lock_guard<std::mutex> lock(active_mutex_);
    active_upstreams_.resize(pools_.size());
    for (size_t i = 0; i < pools_.size(); ++i)
      active_upstreams_[i] = pools_[i] ? static_cast<int64_t>(pools_[i]->active_count()) : 0;
  }
  if (uint64_t stall_ms = static_cast<uint64_t>(config().health.stall_after.count()); stall_ms > 0) {
    uint64_t now = uv_now(&loop_);
    for (size_t i = 0; i < pools_.size(); ++i)
      if (pools_[i] && pools_[i]->stalled(now, stall_ms)) passive_.report(static_cast<uint16_t>(i), PassiveOutcome::stall);
    // Requests safe to repeat do not wait for the verdict on a server that answers nothing.
    for (auto& pool : pools_)
      if (pool && pool->hung(now, stall_ms)) resend_early(*this, *pool, stall_ms);
  }
  if (++rest_ticks_ >= kRestEveryTicks) {
    rest_ticks_ = 0;
    for (DownstreamConnection* c = connections_; c; c = c->list_next_) c->rest_if_parked();
  }
  if (draining_) {
    maybe_finish();
    return;
  }
  if (overload_->pressed()) buffers_.trim();
  if (overload_state() == OverloadState::shedding) shed_connections();
  if (may_accept() && !hold_accept_)
    for (auto* listener : listeners_)
      if (listener) listener->resume();
}

int64_t Worker::active_upstreams(size_t slot) const {
  std::lock_guard<std::mutex> lock(active_mutex_);
  return slot < active_upstreams_.size() ? active_upstreams_[slot] : 0;
}

void Worker::stop_listeners() {
  for (auto* listener : listeners_)
    if (listener) listener->close();
  listeners_.clear();
  note_listeners();
}

void Worker::maybe_finish() {
  if (!draining_ || connection_count_ != 0) return;
  if (uv_is_closing(reinterpret_cast<uv_handle_t*>(&async_))) return;
  for (auto& pool : pools_)
    if (pool) pool->close_idle();
  {
    std::lock_guard<std::mutex> lock(mailbox_mutex_);
    mailbox_closed_ = true;
    uv_close(reinterpret_cast<uv_handle_t*>(&async_), nullptr);
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&tick_), nullptr);
}

bool Worker::may_accept() { return !at_connection_limit() && overload_state() == OverloadState::normal; }

OverloadState Worker::overload_state() {
  if (auto moved = overload_->update(uv_hrtime() / 1'000'000)) {
    constexpr double kMiB = 1024.0 * 1024.0;
    static constexpr const char* kWhat[] = {"normal service", "refusing new connections and requests",
                                            "refusing, and closing the connections holding the most buffered bytes"};
    uint64_t used = overload_->used(), budget = overload_->budget();
    auto level = moved->to == OverloadState::normal ? conf::LogLevel::info : conf::LogLevel::warn;
    SPRAYER_LOG(level, "overload: buffer memory %.1f MiB of the %.1f MiB budget (%.0f %%): %s (was %.*s)",
           static_cast<double>(used) / kMiB, static_cast<double>(budget) / kMiB,
           budget ? 100.0 * static_cast<double>(used) / static_cast<double>(budget) : 0.0,
           kWhat[static_cast<int>(moved->to)], static_cast<int>(to_string(moved->from).size()),
           to_string(moved->from).data());
  }
  return overload_->state();
}

void Worker::shed_connections() {
  // Largest first, until what they hold covers the excess over the resume mark; the next
  // tick looks again once their memory is back. Each worker sheds its own.
  uint64_t excess = overload_->excess();
  if (excess == 0) return;
  std::vector<std::pair<size_t, DownstreamConnection*>> held;
  for (DownstreamConnection* c = connections_; c; c = c->list_next_)
    if (size_t bytes = c->held_bytes()) held.emplace_back(bytes, c);
  std::sort(held.begin(), held.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  uint64_t freed = 0;
  for (auto& [bytes, connection] : held) {
    if (freed >= excess) break;
    freed += bytes;
    overload_->count_shed();
    connection->close();
  }
}

bool Worker::at_connection_limit() const {
  return process_connections_.load(std::memory_order_relaxed) >=
         static_cast<int64_t>(runtime_->config->limits.max_connections);
}

void Worker::on_connection_opened(DownstreamConnection* connection) {
  process_connections_.fetch_add(1, std::memory_order_relaxed);
  WorkerStats::add(stats_.downstream_accepted);
  WorkerStats::add(stats_.downstream_open, 1);
  WorkerStats::add(stats_.accepted_by[WorkerStats::listener_row(connection->listener_slot())]);
  WorkerStats::add(stats_.open_by[WorkerStats::listener_row(connection->listener_slot())], 1);
  connection->list_next_ = connections_;
  if (connections_) connections_->list_prev_ = connection;
  connections_ = connection;
  ++connection_count_;
}

void Worker::on_connection_closed(DownstreamConnection* connection) {
  process_connections_.fetch_sub(1, std::memory_order_relaxed);
  WorkerStats::add(stats_.downstream_open, -1);
  WorkerStats::add(stats_.open_by[WorkerStats::listener_row(connection->listener_slot())], -1);
  if (connection->list_prev_)
    connection->list_prev_->list_next_ = connection->list_next_;
  else
    connections_ = connection->list_next_;
  if (connection->list_next_) connection->list_next_->list_prev_ = connection->list_prev_;
  --connection_count_;
  if (draining_ && connection_count_ == 0) maybe_finish();
}

}  // namespace sprayer::proxy
