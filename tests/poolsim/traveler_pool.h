// TravelerPool: poolsim as a member of an HCL Traveler HA pool (--traveler). Each user has a
// master monitor: assigned by availability index when the user's first device connects (by
// whichever server the request reached, possibly another one), kept while devices connect,
// moved on a connection when its server is much less available than the best one, and
// cleared after --assignment-ttl without a connection. A request reaching a server other than
// the master monitor is handed over inside the pool: a hop, counted and stamped on the
// response. The handover is simulated (tests/poolsim/README.md says why): the receiving
// server answers on the master monitor's behalf, after --hop-latency-ms.
#pragma once

#include <uv.h>

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "tests/poolsim/monitor_store.h"
#include "tests/poolsim/options.h"
#include "tests/poolsim/sql_conn.h"

namespace poolsim {

struct TravelerStats {
  uint64_t requests = 0;      // requests with a user
  uint64_t hops = 0;          // handed over to another server (the master monitor)
  uint64_t local = 0;         // served by their master monitor
  uint64_t assigned = 0;      // master monitors set by this server for new or expired users
  uint64_t moved = 0;         // master monitors moved by availability
  uint64_t taken_over = 0;    // master monitors moved off a dead server
  uint64_t expired = 0;       // this server's assignments cleared by the idle sweep
  uint64_t lost_races = 0;    // another server changed the user first
  uint64_t touches = 0;       // last-connection writes
  uint64_t heartbeats = 0;
  uint64_t db_errors = 0;
};

struct Decision {
  std::string arrival;  // master monitor the table named when the request arrived ("" = none)
  std::string master;   // the one that does the work for this request
  bool hop = false;
};

class TravelerPool {
 public:
  TravelerPool(uv_loop_t* loop, const Options& options);
  ~TravelerPool();
  TravelerPool(const TravelerPool&) = delete;
  TravelerPool& operator=(const TravelerPool&) = delete;

  bool enabled() const { return conn_ != nullptr; }
  void start(std::string advertise);
  void shutdown();  // idempotent

  // One device connection of `user_key` (normalised, non-empty).
  Decision on_request(const std::string& user_key);
  // Fresh read for /poolsim/owner.
  bool fetch(const std::string& user_key, MonitorRow& row, bool& found, std::string& error);

  // Pins the index (the load model stops moving it); unpin() gives it back to the model.
  void set_availability(int64_t value);
  void unpin();
  int64_t availability() const { return availability_; }
  bool pinned() const { return pinned_; }
  const char* db_kind() const { return conn_ != nullptr ? conn_->kind() : nullptr; }
  bool db_connected() const { return conn_ != nullptr && conn_->connected(); }
  const TravelerStats& stats() const { return stats_; }
  size_t cached_users() const { return users_.size(); }
  size_t owned_users() const;
  // Each server's index as this server last read it (its own included), for /poolsim/stats.
  std::vector<std::pair<std::string, int64_t>> view() const;

 private:
  struct Entry {
    std::string server;       // empty: none
    int64_t version = 0;
    bool exists = false;      // the table has a row
    uint64_t connect_ms = 0;  // loop time of the last connection known here (a lower bound)
  };
  struct Peer {
    std::string address;
    int64_t availability = 0;
    int64_t age_ms = 0;
    uint64_t seen_ms = 0;
  };

  static void on_heartbeat_cb(uv_timer_t* timer) noexcept;
  static void on_refresh_cb(uv_timer_t* timer) noexcept;
  static void on_sweep_cb(uv_timer_t* timer) noexcept;
  void on_heartbeat();
  void on_refresh();
  void on_sweep();

  bool sync_all();
  bool load_changes();
  bool load_servers();
  void update_model();
  uint64_t next_random();

  bool alive(const std::string& server) const;
  int64_t availability_of(const std::string& server) const;
  // The master monitor for a new assignment, by availability; `self` when nobody qualifies.
  std::string choose(const std::string& user_key) const;
  Entry* reread(const std::string& user_key);
  void apply(const std::string& user_key, const std::string& server, int64_t version);
  void note_failure();
  void note_success();

  uv_loop_t* loop_;
  const Options& options_;
  std::unique_ptr<SqlConn> conn_;
  std::unique_ptr<MonitorStore> store_;
  std::string advertise_;
  int64_t availability_;
  bool pinned_;
  uint64_t rng_;
  TravelerStats stats_;
  bool healthy_ = true;
  bool timers_started_ = false;
  bool shut_down_ = false;
  uv_timer_t heartbeat_timer_{};
  uv_timer_t refresh_timer_{};
  uv_timer_t sweep_timer_{};

  std::unordered_map<std::string, Entry> users_;
  int64_t cursor_ = 0;  // highest version loaded
  std::unordered_map<std::string, Peer> peers_;
  std::vector<MonitorRow> scratch_rows_;
  std::vector<PoolServerRow> scratch_servers_;
};

}  // namespace poolsim
