// The PostgreSQL ownership source: non-blocking libpq on the control loop, LISTEN/NOTIFY
// driven deltas, periodic resyncs, and reconnects with backoff that end in a full reload.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "affinity/ownership_core.h"
#include "affinity/ownership_source.h"

typedef struct pg_conn PGconn;
typedef struct pg_result PGresult;

namespace sprayer::affinity {

class PgOwnershipSource final : public OwnershipSource {
 public:
  PgOwnershipSource(uv_loop_t* loop, OwnershipSourceConfig config, OwnershipCallbacks callbacks,
                    SourceEnvironment env);
  ~PgOwnershipSource() override;
  PgOwnershipSource(const PgOwnershipSource&) = delete;
  PgOwnershipSource& operator=(const PgOwnershipSource&) = delete;

  void start() override;
  void stop(std::function<void()> done) override;
  SourceStatus status() const override { return core_.status(); }
  std::shared_ptr<const OwnershipSnapshot> snapshot() const override { return core_.snapshot(); }

 private:
  // A poll handle on one socket. libpq may replace the socket while connecting (the next
  // host of a multi-host string), and a uv_poll_t cannot be re-initialised before its
  // close callback, so each socket gets its own, freed in that callback.
  struct SocketWatch {
    uv_poll_t poll{};
    PgOwnershipSource* owner = nullptr;
    int fd = -1;
  };

  enum class Phase : std::uint8_t { idle, connecting, listening, ready };
  enum class Query : std::uint8_t { none, listen, full, delta, servers };

  static void on_notice(void* self, const char* message) noexcept;
  static void on_socket(uv_poll_t* poll, int status, int events) noexcept;
  static void on_watch_closed(uv_handle_t* handle) noexcept;
  static void on_reconnect_timer(uv_timer_t* timer) noexcept;
  static void on_deadline_timer(uv_timer_t* timer) noexcept;
  static void on_delta_timer(uv_timer_t* timer) noexcept;
  static void on_servers_timer(uv_timer_t* timer) noexcept;
  static void on_resync_timer(uv_timer_t* timer) noexcept;
  static void on_timer_closed(uv_handle_t* handle) noexcept;

  void connect();
  void drive_connect();
  void on_connected();
  void socket_ready(int status, int events);
  void deadline_passed();
  bool send_query(Query query);
  bool flush();
  bool drain_results();
  bool take_result(const PGresult* result);
  void drain_notifies();
  void query_finished();
  void full_applied(std::uint64_t connection_id);
  void pump();
  void fail(std::string reason);
  std::string lost(std::string detail) const;
  void drop_connection();
  bool watch(bool writable);
  void pause_watch();
  void close_watch();
  void maybe_finish_stop();

  uv_loop_t* loop_;
  OwnershipSourceConfig config_;
  SourceCore core_;

  PGconn* conn_ = nullptr;
  SocketWatch* watch_ = nullptr;
  std::uint64_t connection_id_ = 0;  // one per connect attempt
  Phase phase_ = Phase::idle;
  Query query_ = Query::none;
  bool synced_ = false;          // this connection's full load is in the snapshot
  bool want_full_ = false;
  bool want_delta_ = false;
  bool delta_forced_ = false;    // by the poll timer, not only by a notification
  bool want_servers_ = false;
  std::int64_t notified_epoch_ = 0;  // highest epoch announced by NOTIFY
  bool columns_checked_ = false;
  std::size_t rows_read_ = 0;  // of the query in flight, for load progress
  std::shared_ptr<OwnershipRowBlock> rows_;  // of the owner query in flight
  std::vector<PoolServerRow> servers_;       // of the servers query in flight
  std::string last_notice_;                  // the server's last notice on this connection

  uv_timer_t reconnect_timer_{};
  uv_timer_t deadline_timer_{};  // connect timeout, then query progress timeout
  uv_timer_t delta_timer_{};
  uv_timer_t servers_timer_{};
  uv_timer_t resync_timer_{};
  int open_handles_ = 0;         // timers and socket watches not yet closed
  bool core_open_ = true;
  bool started_ = false;
  bool stopping_ = false;
  std::function<void()> stop_done_;
};

}  // namespace sprayer::affinity
