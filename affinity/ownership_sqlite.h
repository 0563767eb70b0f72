// The SQLite ownership source (the embedded default): SQLite blocks, so each round runs as
// one uv_queue_work job at a time and its result is applied on the loop afterwards.
#pragma once

#include <sys/types.h>

#include <utility>

#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>

#include "affinity/ownership_core.h"
#include "affinity/ownership_source.h"

struct sqlite3;

namespace sprayer::affinity {

class SqliteOwnershipSource final : public OwnershipSource {
 public:
  SqliteOwnershipSource(uv_loop_t* loop, OwnershipSourceConfig config, OwnershipCallbacks callbacks,
                        SourceEnvironment env);
  ~SqliteOwnershipSource() override;
  SqliteOwnershipSource(const SqliteOwnershipSource&) = delete;
  SqliteOwnershipSource& operator=(const SqliteOwnershipSource&) = delete;

  void start() override;
  void stop(std::function<void()> done) override;
  SourceStatus status() const override { return core_.status(); }
  std::shared_ptr<const OwnershipSnapshot> snapshot() const override { return core_.snapshot(); }

 private:
  struct Job;

  static void on_timer(uv_timer_t* timer) noexcept;
  static void run_round(Job& job);
  static void on_work(uv_work_t* req) noexcept;
  static void on_work_done(uv_work_t* req, int status) noexcept;
  static void on_timer_closed(uv_handle_t* handle) noexcept;

  void tick();
  void job_done();
  void schedule(SourceDuration delay);
  void maybe_finish_stop();

  uv_loop_t* loop_;
  OwnershipSourceConfig config_;
  SourceCore core_;

  uv_timer_t timer_{};          // the next round: a poll, or a retry after backoff
  uv_work_t work_req_{};
  std::unique_ptr<Job> job_;    // the round in flight; its thread owns it until job_done
  sqlite3* db_ = nullptr;       // used by the round in flight, or on the loop when none is
  std::pair<dev_t, ino_t> file_id_{};  // the file db_ was opened on
  std::optional<std::int64_t> marker_;  // last value of the change query
  std::uint64_t last_full_ms_ = 0;
  bool need_full_ = true;       // at start, after an error, and when a resync is due
  bool failing_ = false;

  bool started_ = false;
  bool stopping_ = false;
  bool timer_open_ = true;
  bool core_open_ = true;
  std::function<void()> stop_done_;
};

}  // namespace sprayer::affinity
