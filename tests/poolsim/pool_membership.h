// PoolMembership: poolsim's duties as a member of a Traveler HA pool (--db). Registers in
// pool_server and heartbeats; claims free users and takes over users of dead servers, each
// change under the pool's next epoch; keeps an in-memory copy of user_owner, refreshed by epoch
// deltas, so that answering "who owned this user when the request arrived" is a hash lookup.
#pragma once

#include <uv.h>

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "tests/poolsim/options.h"
#include "tests/poolsim/ownership_db.h"

namespace poolsim {

struct PoolStats {
  uint64_t claims = 0;              // free users (no row or NULL owner) taken by this server
  uint64_t takeovers = 0;           // users of a dead owner taken by compare-and-set
  uint64_t lost_races = 0;          // a claim or takeover found that another writer got there first
  uint64_t assignments = 0;         // POST /poolsim/assign writes
  uint64_t requests_owned = 0;      // owner at arrival was this server
  uint64_t requests_not_owned = 0;  // owner at arrival was another server
  uint64_t requests_unowned = 0;    // no owner known at arrival (free user, or database unreachable)
  uint64_t heartbeats = 0;          // successful heartbeat writes
  uint64_t db_errors = 0;           // failed database calls
};

class PoolMembership {
 public:
  PoolMembership(uv_loop_t* loop, const Options& options);
  ~PoolMembership();
  PoolMembership(const PoolMembership&) = delete;
  PoolMembership& operator=(const PoolMembership&) = delete;

  bool enabled() const { return db_ != nullptr; }
  // Registers, loads the table and starts the timers. A database that is down is not an error:
  // poolsim serves on and retries at every heartbeat.
  void start(std::string advertise);
  // Stops and closes the timers; the rows stay (a dead server leaves its row). Idempotent.
  void shutdown();

  // For a request of `user_key` (normalised, non-empty): the owner the table named when it
  // arrived ("" when none is known). Claims the user if it is free, or takes it over if its
  // owner's heartbeat is stale, unless --no-claim or a negative availability forbid it.
  std::string on_request(const std::string& user_key);

  // Fresh reads and admin writes for /poolsim/owner and /poolsim/assign; false with `error`.
  bool fetch_owner(const std::string& user_key, OwnerRow& row, bool& found, std::string& error);
  bool assign(const std::string& user_key, const std::string& server_id, OwnerRow& row, std::string& error);

  void set_availability(int64_t value);
  int64_t availability() const { return availability_; }
  const char* db_kind() const { return db_ != nullptr ? db_->kind() : nullptr; }
  bool db_connected() const { return db_ != nullptr && db_->connected(); }
  const std::string& advertise() const { return advertise_; }
  const PoolStats& stats() const { return stats_; }
  size_t cached_users() const { return owners_.size(); }
  int64_t cached_epoch() const { return last_epoch_; }

 private:
  struct CachedOwner {
    std::string server_id;  // empty: free (tombstone, or no row when last read)
    int64_t epoch = 0;
  };
  struct ServerSeen {
    int64_t age_ms = 0;        // heartbeat age reported by the database...
    uint64_t seen_at_ms = 0;   // ...at this loop time
  };

  static void on_heartbeat_cb(uv_timer_t* timer) noexcept;
  static void on_refresh_cb(uv_timer_t* timer) noexcept;
  void on_heartbeat();
  void on_refresh();

  // Registration plus a full load: at start and after every reconnect.
  bool sync_all();
  bool write_heartbeat();
  bool load_changes();
  bool load_servers();

  bool may_take_users() const;
  bool looks_dead(const std::string& server_id) const;
  void apply(const std::string& user_key, const std::string& server_id, int64_t epoch);
  void claim(const std::string& user_key);
  void take_over(const std::string& user_key, const std::string& dead_owner, int64_t expected_epoch);
  // Re-reads one user after a lost race, so the cache names the winner.
  void reread(const std::string& user_key);
  // The end of a claim or takeover write: commit and apply it, or roll back and learn why.
  // True when this server now owns the user.
  bool finish_write(const std::string& user_key, bool written, bool changed, int64_t epoch);
  // A failed call inside a transaction: roll back, count, log once per failure streak.
  void abort_transaction();
  void note_failure();
  void note_success();

  uv_loop_t* loop_;
  const Options& options_;
  std::unique_ptr<OwnershipDb> db_;
  std::string advertise_;
  int64_t availability_;
  PoolStats stats_;
  bool db_healthy_ = true;  // false from the first failure until the next success
  bool timers_started_ = false;
  bool shut_down_ = false;
  uv_timer_t heartbeat_timer_{};
  uv_timer_t refresh_timer_{};

  std::unordered_map<std::string, CachedOwner> owners_;
  int64_t last_epoch_ = 0;  // every change up to here is in owners_ (only deltas advance it)
  std::unordered_map<std::string, ServerSeen> servers_;
  std::vector<OwnerRow> scratch_rows_;
  std::vector<ServerRow> scratch_servers_;
};

}  // namespace poolsim
