// One worker thread: its own uv loop, SO_REUSEPORT listeners, buffer pool, upstream pools
// and downstream connections. Nothing here is touched by another thread except through
// the mailbox (uv_async) and the stats block.
#pragma once

#include <uv.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "affinity/extract.h"
#include "proxy/access_log.h"
#include "proxy/buffer_pool.h"
#include "proxy/directory_waiters.h"
#include "proxy/health_events.h"
#include "proxy/overload.h"
#include "proxy/route_state.h"
#include "proxy/runtime.h"
#include "proxy/worker_context.h"
#include "proxy/worker_stats.h"

namespace sprayer::proxy {

class Listener;
class DownstreamConnection;
class UpstreamPool;

class Worker final : public DownstreamRegistry {
 public:
  // `overload`: the process's memory budget, shared by all workers (null: this worker's own,
  // unlimited unless the config sets limits.memory_budget).
  Worker(int index, std::shared_ptr<const Runtime> runtime, std::atomic<int64_t>& process_connections,
         HealthEvents* health_events = nullptr, Overload* overload = nullptr);
  ~Worker();  // not virtual: a Worker is never deleted through its registry
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Control thread: a new routing state; the worker swaps to it at its next loop turn.
  void publish(std::shared_ptr<const RouteState> state);
  // Control thread: reloaded TLS contexts, one per configured listener (null = unchanged).
  void publish_tls(std::vector<std::shared_ptr<const TlsContext>> contexts);
  // Control thread, config reload: the new runtime (servers, listeners, settings) with the
  // routing state built from it. Applied together at the next loop turn: listeners that
  // keep their address keep their socket, new ones are bound before removed ones close,
  // removed servers' requests in flight finish on their connections.
  void publish_runtime(std::shared_ptr<const Runtime> runtime, std::shared_ptr<const RouteState> state);

  // Before start(), binary upgrade: the listening sockets handed over by the process this
  // one replaces, by listener index (-1: bind one), and no accepting until allow_accept().
  void inherit(std::vector<int> fds, bool hold_accept);
  // Control thread: start accepting (the new process of an upgrade, once it is ready).
  void allow_accept();
  // Control thread: this worker's listening sockets (address, descriptor), for an upgrade.
  std::vector<std::pair<std::string, int>> listening_sockets() const;
  // Control thread: start the thread and wait until its listeners are bound (or failed).
  bool start(std::string& error);
  // Control thread: stop accepting; finish in-flight requests; close idle connections.
  void begin_drain();
  // Control thread: close everything now (drain deadline passed).
  void force_stop();
  void join();
  bool finished() const { return finished_.load(); }
  // Any thread: waits until finished() or `limit` passes; returns finished().
  bool wait_finished(std::chrono::milliseconds limit);
  // uv_loop_close's result once finished: 0 means every handle was closed.
  int loop_close_status() const { return loop_close_status_.load(); }

  int index() const { return index_; }
  uv_loop_t* loop() { return &loop_; }
  const Runtime& runtime() const { return *runtime_; }
  const conf::Config& config() const { return *runtime_->config; }
  WorkerStats& stats() { return stats_; }
  const WorkerStats& stats() const { return stats_; }
  bool draining() const { return draining_; }
  // What the data path on this loop (connections, exchanges, pools) uses of the worker:
  // buffers, access log, route state, extractor, pools, passive reports, directory waiters.
  WorkerContext& context() { return context_; }
  // Directory thread: answers are in the cache; parked requests look again.
  void notify_directory();
  // Requests in flight per server slot on this worker, as of its last tick (read by the
  // control thread for the API).
  int64_t active_upstreams(size_t slot) const;
  size_t connection_count() const { return connection_count_; }

  // Process-wide downstream connection count, for max_connections.
  bool at_connection_limit() const;
  // Accepting pauses at the connection limit and while memory is overloaded.
  bool may_accept();
  // The memory budget's state now (a transition is logged by whoever sees it first).
  OverloadState overload_state();
  Overload& overload() { return *overload_; }
  void on_connection_opened(DownstreamConnection* connection) override;
  void on_connection_closed(DownstreamConnection* connection) override;

 private:
  void run();
  void on_async();
  void on_tick();
  void stop_listeners();
  void maybe_finish();
  void swap_route_state(std::shared_ptr<const RouteState> next);
  void apply_runtime(std::shared_ptr<const Runtime> next);
  void apply_listeners(const Runtime& next);
  void post(bool drain, bool stop);
  void note_listeners();
  void flush_access_log();
  void start_access_log_timer();
  // While shedding: close this worker's connections holding the most queued bytes.
  void shed_connections();

  int index_;
  std::shared_ptr<const Runtime> runtime_;
  std::shared_ptr<const RouteState> route_state_;
  affinity::Extractor extractor_;
  std::vector<affinity::Header> header_scratch_;  // one request's header view (no allocation per request)
  PassiveReporter passive_;
  DirectoryWaiters directory_waiters_{context_};
  bool directory_answers_ = false;  // mailbox
  mutable std::mutex active_mutex_;      // the tick and the API only, never the data path
  std::vector<int64_t> active_upstreams_;  // by slot
  std::atomic<int64_t>& process_connections_;
  std::unique_ptr<Overload> own_overload_;  // only without a process-wide one
  Overload* overload_;
  uv_loop_t loop_{};
  uv_async_t async_{};
  uv_timer_t tick_{};
  AccessLogBuffer access_log_{runtime_->access_log};
  uv_timer_t access_log_timer_{};  // hands the buffer to the writer; unreferenced
  bool access_log_timer_on_ = false;
  std::thread thread_;
  BufferPool buffers_{32 * 1024, 256, overload_};
  WorkerStats stats_;
  std::vector<Listener*> listeners_;  // in configuration order; null where a reload's bind failed
  std::vector<std::unique_ptr<UpstreamPool>> pools_;  // by server slot; null for slots never seen
  DownstreamConnection* connections_ = nullptr;  // intrusive list
  size_t connection_count_ = 0;
  uint64_t spread_ = 0;
  uint32_t rest_ticks_ = 0;  // ticks since parked Pings last gave memory back
  bool draining_ = false;
  std::vector<int> inherited_fds_;  // by listener index, until start
  bool hold_accept_ = false;
  std::vector<std::pair<std::string, int>> listening_fds_;  // under active_mutex_
  WorkerContext context_{&loop_, buffers_, stats_, access_log_, runtime_, route_state_, extractor_,
                         passive_, directory_waiters_, pools_, draining_, spread_, header_scratch_};

  std::mutex mailbox_mutex_;
  bool drain_requested_ = false;
  bool stop_requested_ = false;
  bool accept_requested_ = false;
  bool mailbox_closed_ = false;
  std::shared_ptr<const RouteState> mailbox_route_;
  std::shared_ptr<const Runtime> mailbox_runtime_;
  std::vector<std::shared_ptr<const TlsContext>> mailbox_tls_;  // async_ is closing: sending to it would abort libuv

  std::mutex start_mutex_;
  std::condition_variable start_cv_;  // start_done_, and finished_ at the end
  bool start_done_ = false;
  std::string start_error_;
  std::atomic<bool> finished_{false};
  std::atomic<int> loop_close_status_{-1};
};

}  // namespace sprayer::proxy
