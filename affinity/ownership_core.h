// What both ownership sources share: status, the served snapshot, off-loop builds, the
// cache file (loaded at start, written after loads, throttled) and backoff. Loop thread only.
#pragma once

#include <uv.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "affinity/ownership_rows.h"
#include "affinity/ownership_source.h"
#include "affinity/snapshot.h"

namespace sprayer::affinity {

class SourceCore {
 public:
  SourceCore(uv_loop_t* loop, const OwnershipSourceConfig& config, OwnershipCallbacks callbacks,
             SourceEnvironment env);
  ~SourceCore();
  SourceCore(const SourceCore&) = delete;
  SourceCore& operator=(const SourceCore&) = delete;

  void start();  // loads the cache file in the background, arms the grace timer
  // Closes the timers and waits for jobs in flight; `done` runs from a libuv callback.
  void close(std::function<void()> done);
  bool closing() const noexcept { return closing_; }

  // Builds off the loop (uv_queue_work), then delivers as below and calls `done`; not
  // called once closing. One build at a time.
  void apply_full_async(RowBlockPtr rows, std::function<void()> done);
  void apply_delta_async(RowBlockPtr rows, std::function<void()> done);
  bool applying() const noexcept { return apply_job_ != nullptr; }

  // A snapshot built by the caller. A delta's snapshot must derive from snapshot().
  void deliver_full(std::shared_ptr<const OwnershipSnapshot> snapshot, RowBlockPtr rows);
  void deliver_delta(std::shared_ptr<const OwnershipSnapshot> snapshot, RowBlockPtr rows);
  void deliver_servers(std::vector<PoolServerRow> servers);

  void succeeded();                 // a query answered
  void failed(std::string reason);  // a query or the connection failed
  void count_reconnect() noexcept { ++status_.counters.reconnects; }
  void count_notification() noexcept { ++status_.counters.notifications; }
  void count_skipped(std::size_t rows) noexcept { status_.counters.rows_skipped += rows; }

  SourceDuration next_backoff() { return backoff_.next(env_.random()); }
  void reset_backoff() noexcept { backoff_.reset(); }

  bool has_db_snapshot() const noexcept { return has_db_snapshot_; }
  const std::shared_ptr<const OwnershipSnapshot>& snapshot() const noexcept { return snapshot_; }
  SourceStatus status() const;
  SourceTime now() const { return env_.now(); }

 private:
  struct ApplyJob;
  struct LoadJob;
  struct WriteJob;

  static void on_apply_work(uv_work_t* req) noexcept;
  static void on_apply_done(uv_work_t* req, int status) noexcept;
  static void on_load_work(uv_work_t* req) noexcept;
  static void on_load_done(uv_work_t* req, int status) noexcept;
  static void on_write_work(uv_work_t* req) noexcept;
  static void on_write_done(uv_work_t* req, int status) noexcept;
  static void on_grace_timer(uv_timer_t* timer) noexcept;
  static void on_cache_timer(uv_timer_t* timer) noexcept;
  static void on_timer_closed(uv_handle_t* handle) noexcept;

  void apply_done();
  void load_done();
  void write_done();
  void want_cache();
  void maybe_serve_cache();
  void schedule_cache_write(bool now);
  void start_cache_write();
  void announce(SourceState state);
  void set_state(SourceState state);
  void maybe_finish_close();

  uv_loop_t* loop_;
  const OwnershipSourceConfig config_;
  OwnershipCallbacks callbacks_;
  SourceEnvironment env_;
  Backoff backoff_;

  SourceStatus status_;
  std::shared_ptr<const OwnershipSnapshot> snapshot_;
  bool has_db_snapshot_ = false;

  // The rows behind snapshot_ (a full read, then deltas), kept only for the cache writer.
  std::vector<RowBlockPtr> log_;
  std::uint64_t log_generation_ = 0;

  std::unique_ptr<ApplyJob> apply_job_;
  uv_work_t apply_req_{};

  bool cache_wanted_ = false;     // the database failed or the grace time passed
  std::shared_ptr<const OwnershipSnapshot> cached_;  // loaded, not served yet
  std::unique_ptr<LoadJob> load_job_;
  uv_work_t load_req_{};

  std::unique_ptr<WriteJob> write_job_;
  uv_work_t write_req_{};
  bool cache_dirty_ = false;
  bool cache_dirty_now_ = false;  // a full load wants its write without throttling
  std::uint64_t last_write_ms_ = 0;
  bool written_once_ = false;

  uv_timer_t grace_timer_{};
  uv_timer_t cache_timer_{};
  int open_timers_ = 0;
  bool closing_ = false;
  std::function<void()> close_done_;
};

}  // namespace sprayer::affinity
