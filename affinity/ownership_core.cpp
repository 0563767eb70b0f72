// Shared source machinery: status transitions, delivery of snapshots, off-loop builds and
// the cache file's load-at-start and throttled writes.
#include "affinity/ownership_core.h"

#include <cassert>
#include <random>
#include <utility>

#include "affinity/ownership_changes.h"
#include "affinity/snapshot_cache.h"

namespace sprayer::affinity {

namespace {

// Rewriting the whole log each time is cheap while the deltas are few; past this the
// writer folds them into one block first, which also bounds the log's memory.
bool should_compact(const std::vector<RowBlockPtr>& log) {
  if (log.size() < 2) return false;
  std::size_t later = 0;
  for (std::size_t i = 1; i < log.size(); ++i) later += log[i]->size();
  return later > std::max<std::size_t>(65536, log.front()->size() / 2) || log.size() > 1024;
}

SourceEnvironment with_defaults(SourceEnvironment env) {
  if (!env.now) env.now = [] { return SourceClock::now(); };
  if (!env.random) {
    // splitmix64, seeded once: only spreads reconnect times.
    env.random = [state = (std::uint64_t{std::random_device{}()} << 32) ^ std::random_device{}()]() mutable {
      std::uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
      z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
      z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
      return z ^ (z >> 31);
    };
  }
  return env;
}

}  // namespace

struct SourceCore::ApplyJob {
  bool full = false;
  ChangeDetection mode = ChangeDetection::epoch;
  std::shared_ptr<const OwnershipSnapshot> base;  // the database's snapshot being served
  RowBlockPtr rows;
  ReadOutcome result;
  std::function<void()> done;
};

struct SourceCore::LoadJob {
  std::string path;
  LoadedSnapshotCache result;
};

struct SourceCore::WriteJob {
  std::string path;
  std::int64_t epoch = 0;
  std::vector<RowBlockPtr> blocks;
  std::uint64_t generation = 0;
  bool compact = false;
  RowBlockPtr compacted;
  CacheWriteResult result;
};

SourceCore::SourceCore(uv_loop_t* loop, const OwnershipSourceConfig& config, OwnershipCallbacks callbacks,
                       SourceEnvironment env)
    : loop_(loop),
      config_(config),
      callbacks_(std::move(callbacks)),
      env_(with_defaults(std::move(env))),
      backoff_(config.reconnect_min, config.reconnect_max) {
  uv_timer_init(loop_, &grace_timer_);
  uv_timer_init(loop_, &cache_timer_);
  grace_timer_.data = this;
  cache_timer_.data = this;
  open_timers_ = 2;
  apply_req_.data = this;
  load_req_.data = this;
  write_req_.data = this;
}

SourceCore::~SourceCore() {
  assert(open_timers_ == 0 && !apply_job_ && !load_job_ && !write_job_ && "close() must finish first");
}

void SourceCore::start() {
  if (config_.cache_file.empty()) return;
  load_job_ = std::make_unique<LoadJob>();
  load_job_->path = config_.cache_file;
  uv_queue_work(loop_, &load_req_, on_load_work, on_load_done);
  uv_timer_start(&grace_timer_, on_grace_timer, static_cast<std::uint64_t>(config_.cache_grace.count()), 0);
}

void SourceCore::close(std::function<void()> done) {
  assert(!closing_);
  closing_ = true;
  close_done_ = std::move(done);
  // Queued jobs are dropped; running ones finish and report to their done callback.
  if (apply_job_) uv_cancel(reinterpret_cast<uv_req_t*>(&apply_req_));
  if (load_job_) uv_cancel(reinterpret_cast<uv_req_t*>(&load_req_));
  if (write_job_) uv_cancel(reinterpret_cast<uv_req_t*>(&write_req_));
  uv_close(reinterpret_cast<uv_handle_t*>(&grace_timer_), on_timer_closed);
  uv_close(reinterpret_cast<uv_handle_t*>(&cache_timer_), on_timer_closed);
}

void SourceCore::maybe_finish_close() {
  if (!closing_ || open_timers_ > 0 || apply_job_ || load_job_ || write_job_ || !close_done_) return;
  auto done = std::move(close_done_);
  close_done_ = nullptr;
  done();  // may destroy *this
}

void SourceCore::on_timer_closed(uv_handle_t* handle) noexcept {
  auto* self = static_cast<SourceCore*>(handle->data);
  --self->open_timers_;
  self->maybe_finish_close();
}

// --- building off the loop

void SourceCore::apply_full_async(RowBlockPtr rows, std::function<void()> done) {
  assert(!apply_job_ && !closing_);
  apply_job_ = std::make_unique<ApplyJob>();
  apply_job_->full = true;
  apply_job_->mode = config_.change_detection;
  if (has_db_snapshot_) apply_job_->base = snapshot_;  // a full scan is diffed against it
  apply_job_->rows = std::move(rows);
  apply_job_->done = std::move(done);
  uv_queue_work(loop_, &apply_req_, on_apply_work, on_apply_done);
}

void SourceCore::apply_delta_async(RowBlockPtr rows, std::function<void()> done) {
  assert(!apply_job_ && !closing_ && snapshot_);
  apply_job_ = std::make_unique<ApplyJob>();
  apply_job_->mode = config_.change_detection;
  apply_job_->base = snapshot_;
  apply_job_->rows = std::move(rows);
  apply_job_->done = std::move(done);
  uv_queue_work(loop_, &apply_req_, on_apply_work, on_apply_done);
}

void SourceCore::on_apply_work(uv_work_t* req) noexcept {
  ApplyJob& job = *static_cast<SourceCore*>(req->data)->apply_job_;
  job.result = apply_read(job.mode, job.full, job.base, std::move(job.rows));
}

void SourceCore::on_apply_done(uv_work_t* req, int) noexcept { static_cast<SourceCore*>(req->data)->apply_done(); }

void SourceCore::apply_done() {
  std::unique_ptr<ApplyJob> job = std::move(apply_job_);
  if (closing_) return maybe_finish_close();
  // A build from a base that is no longer served (the database's snapshot replaced) is
  // stale; a full build from nothing is not.
  const bool current = job->base == snapshot_ || (job->full && !job->base);
  status_.counters.rows_skipped += job->result.skipped;
  if (!current) {
  } else if (job->result.snapshot && job->result.full) {
    deliver_full(std::move(job->result.snapshot), std::move(job->result.rows));
  } else if (job->result.snapshot) {
    deliver_delta(std::move(job->result.snapshot), std::move(job->result.rows));
    if (job->full) {
      ++status_.counters.full_loads;  // a full scan that changed a few users
      if (!closing_) succeeded();
    }
  } else if (job->full) {
    ++status_.counters.full_loads;  // a full scan that changed nothing
    succeeded();
  }
  if (closing_) return maybe_finish_close();  // a callback stopped the source
  job->done();
}

// --- delivery and status

void SourceCore::deliver_full(std::shared_ptr<const OwnershipSnapshot> snapshot, RowBlockPtr rows) {
  if (closing_ || !snapshot) return;
  snapshot_ = std::move(snapshot);
  has_db_snapshot_ = true;
  cached_.reset();
  uv_timer_stop(&grace_timer_);
  ++status_.counters.full_loads;
  status_.last_success = env_.now();
  if (!config_.cache_file.empty()) {
    log_.clear();
    log_.push_back(std::move(rows));
    ++log_generation_;
    schedule_cache_write(true);
  }
  announce(SourceState::ok);
}

void SourceCore::deliver_delta(std::shared_ptr<const OwnershipSnapshot> snapshot, RowBlockPtr rows) {
  if (closing_ || !snapshot || !rows || rows->empty()) return;
  assert(has_db_snapshot_);
  snapshot_ = std::move(snapshot);
  ++status_.counters.deltas_applied;
  status_.counters.delta_rows += rows->size();
  if (!config_.cache_file.empty()) {
    log_.push_back(std::move(rows));
    schedule_cache_write(false);
  }
  const auto delivered = snapshot_;
  if (callbacks_.on_snapshot) callbacks_.on_snapshot(delivered);
}

void SourceCore::deliver_servers(std::vector<PoolServerRow> servers) {
  if (closing_) return;
  if (callbacks_.on_servers) callbacks_.on_servers(std::move(servers));
}

void SourceCore::succeeded() {
  status_.last_success = env_.now();
  if (has_db_snapshot_) set_state(SourceState::ok);
}

void SourceCore::failed(std::string reason) {
  ++status_.counters.errors;
  status_.last_error = std::move(reason);
  if (has_db_snapshot_) {
    status_.state = SourceState::degraded;
  } else {
    want_cache();
    if (closing_) return;
    status_.state = snapshot_ ? SourceState::from_cache : SourceState::none;
  }
  if (callbacks_.on_status) callbacks_.on_status(status());
}

// The state changes first, so on_snapshot sees a status that matches the snapshot.
void SourceCore::announce(SourceState state) {
  const bool changed = status_.state != state;
  status_.state = state;
  const auto delivered = snapshot_;
  if (callbacks_.on_snapshot) callbacks_.on_snapshot(delivered);
  if (changed && !closing_ && callbacks_.on_status) callbacks_.on_status(status());
}

void SourceCore::set_state(SourceState state) {
  if (status_.state == state) return;
  status_.state = state;
  if (callbacks_.on_status) callbacks_.on_status(status());
}

SourceStatus SourceCore::status() const {
  SourceStatus out = status_;
  if (snapshot_) {
    out.epoch = snapshot_->epoch();
    out.users = snapshot_->size();
  }
  if (out.last_success) {
    out.since_success = std::chrono::duration_cast<SourceDuration>(env_.now() - *out.last_success);
    out.stale = *out.since_success > config_.stale_after;
  }
  return out;
}

// --- the cache file

void SourceCore::on_load_work(uv_work_t* req) noexcept {
  LoadJob& job = *static_cast<SourceCore*>(req->data)->load_job_;
  job.result = load_snapshot_cache(job.path);
}

void SourceCore::on_load_done(uv_work_t* req, int) noexcept { static_cast<SourceCore*>(req->data)->load_done(); }

void SourceCore::load_done() {
  std::unique_ptr<LoadJob> job = std::move(load_job_);
  if (closing_) return maybe_finish_close();
  if (has_db_snapshot_) return;  // too late to matter, and a write may have replaced the file
  if (!job->result.ok()) {
    status_.cache_error = std::move(job->result.error);
  } else {
    cached_ = std::move(job->result.snapshot);
  }
  maybe_serve_cache();
}

void SourceCore::on_grace_timer(uv_timer_t* timer) noexcept { static_cast<SourceCore*>(timer->data)->want_cache(); }

void SourceCore::want_cache() {
  cache_wanted_ = true;
  maybe_serve_cache();
}

void SourceCore::maybe_serve_cache() {
  if (!cache_wanted_ || !cached_ || has_db_snapshot_ || snapshot_ || closing_) return;
  snapshot_ = std::move(cached_);
  announce(SourceState::from_cache);
}

void SourceCore::schedule_cache_write(bool now) {
  if (config_.cache_file.empty() || closing_) return;
  cache_dirty_ = true;
  cache_dirty_now_ = cache_dirty_now_ || now;
  if (write_job_) return;  // write_done looks again
  const std::uint64_t interval = static_cast<std::uint64_t>(config_.cache_write_interval.count());
  const std::uint64_t elapsed = uv_now(loop_) - last_write_ms_;
  if (cache_dirty_now_ || !written_once_ || elapsed >= interval) return start_cache_write();
  if (!uv_is_active(reinterpret_cast<uv_handle_t*>(&cache_timer_))) {
    uv_timer_start(&cache_timer_, on_cache_timer, interval - elapsed, 0);
  }
}

void SourceCore::on_cache_timer(uv_timer_t* timer) noexcept {
  auto* self = static_cast<SourceCore*>(timer->data);
  if (self->cache_dirty_ && !self->write_job_) self->start_cache_write();
}

void SourceCore::start_cache_write() {
  if (log_.empty() || !snapshot_) return;
  uv_timer_stop(&cache_timer_);
  write_job_ = std::make_unique<WriteJob>();
  write_job_->path = config_.cache_file;
  write_job_->epoch = snapshot_->epoch();
  write_job_->blocks = log_;
  write_job_->generation = log_generation_;
  write_job_->compact = should_compact(log_);
  cache_dirty_ = false;
  cache_dirty_now_ = false;
  uv_queue_work(loop_, &write_req_, on_write_work, on_write_done);
}

void SourceCore::on_write_work(uv_work_t* req) noexcept {
  WriteJob& job = *static_cast<SourceCore*>(req->data)->write_job_;
  if (job.compact) {
    job.compacted = compact_row_blocks(job.blocks);
    job.result = write_snapshot_cache(job.path, job.epoch, std::span<const RowBlockPtr>(&job.compacted, 1));
  } else {
    job.result = write_snapshot_cache(job.path, job.epoch, job.blocks);
  }
}

void SourceCore::on_write_done(uv_work_t* req, int) noexcept { static_cast<SourceCore*>(req->data)->write_done(); }

void SourceCore::write_done() {
  std::unique_ptr<WriteJob> job = std::move(write_job_);
  if (closing_) return maybe_finish_close();
  last_write_ms_ = uv_now(loop_);
  written_once_ = true;
  if (job->result.ok()) {
    ++status_.counters.cache_writes;
    status_.cache_error.clear();
  } else {
    ++status_.counters.cache_write_errors;
    status_.cache_error = std::move(job->result.error);
  }
  // The compacted block stands for the blocks it was made from, if no full load has
  // replaced the log since; deltas appended meanwhile stay after it.
  if (job->compacted && job->generation == log_generation_ && log_.size() >= job->blocks.size()) {
    log_.erase(log_.begin(), log_.begin() + static_cast<std::ptrdiff_t>(job->blocks.size()));
    log_.insert(log_.begin(), std::move(job->compacted));
  }
  if (cache_dirty_) schedule_cache_write(cache_dirty_now_);
}

}  // namespace sprayer::affinity
