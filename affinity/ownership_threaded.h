// An ownership source over a blocking SQL client (MariaDB, ODBC): the queries run on a
// thread of their own, one at a time; rows come back to the control loop through a
// uv_async_t and snapshots are built off the loop by SourceCore. The loop never blocks.
#pragma once

#include <uv.h>

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "affinity/ownership_core.h"
#include "affinity/ownership_source.h"
#include "affinity/ownership_sql.h"

namespace sprayer::affinity {

class ThreadedOwnershipSource final : public OwnershipSource {
 public:
  ThreadedOwnershipSource(uv_loop_t* loop, OwnershipSourceConfig config, OwnershipCallbacks callbacks,
                          SourceEnvironment env, std::unique_ptr<SqlClient> client);
  ~ThreadedOwnershipSource() override;
  ThreadedOwnershipSource(const ThreadedOwnershipSource&) = delete;
  ThreadedOwnershipSource& operator=(const ThreadedOwnershipSource&) = delete;

  void start() override;
  void stop(std::function<void()> done) override;
  SourceStatus status() const override { return core_.status(); }
  std::shared_ptr<const OwnershipSnapshot> snapshot() const override { return core_.snapshot(); }

 private:
  enum class Query : std::uint8_t { full, delta, scan, servers };

  struct Request {
    Query query = Query::full;
    std::optional<DeltaParameter> parameter;
  };
  struct Reply {
    Query query = Query::full;
    std::string error;
    std::shared_ptr<OwnershipRowBlock> rows;
    std::vector<PoolServerRow> servers;
  };

  static void on_async(uv_async_t* async) noexcept;
  static void on_poll_timer(uv_timer_t* timer) noexcept;
  static void on_resync_timer(uv_timer_t* timer) noexcept;
  static void on_reconnect_timer(uv_timer_t* timer) noexcept;
  static void on_handle_closed(uv_handle_t* handle) noexcept;

  // The source thread.
  void run_thread();
  Reply execute(const Request& request);

  // The loop.
  void replied();
  void take(Reply reply);
  void send(Query query);
  void pump();
  void full_applied();
  void fail(std::string reason);
  void thread_exited();
  void maybe_finish_stop();

  uv_loop_t* loop_;
  OwnershipSourceConfig config_;
  SourceCore core_;
  std::unique_ptr<SqlClient> client_;  // the thread's, until it exits

  std::thread thread_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::optional<Request> request_;  // guarded by mutex_
  std::optional<Reply> reply_;      // guarded by mutex_
  bool quit_ = false;               // guarded by mutex_
  bool exited_ = false;             // guarded by mutex_

  uv_async_t async_{};
  uv_timer_t poll_timer_{};
  uv_timer_t resync_timer_{};
  uv_timer_t reconnect_timer_{};
  int open_handles_ = 0;

  bool in_flight_ = false;
  bool waiting_reconnect_ = false;
  bool synced_ = false;  // a full read on this connection is in the snapshot
  bool want_full_ = true;
  bool want_delta_ = false;
  bool want_servers_ = false;

  bool started_ = false;
  bool stopping_ = false;
  bool thread_done_ = false;
  bool core_open_ = true;
  std::function<void()> stop_done_;
};

}  // namespace sprayer::affinity
