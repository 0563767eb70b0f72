// PoolMembership: registration, heartbeats, claims, takeovers and the ownership cache (see
// pool_membership.h). Every change to user_owner follows the schema's epoch rule: take the next
// epoch first (which serialises the writers), then read, then write, all in one transaction.
#include "tests/poolsim/pool_membership.h"

#include <cstdio>
#include <utility>

namespace poolsim {

PoolMembership::PoolMembership(uv_loop_t* loop, const Options& options)
    : loop_(loop), options_(options), availability_(options.availability) {
  if (!options_.db.empty() && !options_.traveler) {  // --traveler: TravelerPool owns the tables
    std::string error;
    db_ = make_ownership_db(options_.db, options_.id, error);  // the spec was validated with the options
    if (db_ == nullptr) std::fprintf(stderr, "poolsim %s: %s\n", options_.id.c_str(), error.c_str());
  }
}

PoolMembership::~PoolMembership() = default;

void PoolMembership::start(std::string advertise) {
  if (db_ == nullptr) return;
  advertise_ = std::move(advertise);
  if (db_->connect()) {
    sync_all();
  } else {
    note_failure();
  }
  uv_timer_init(loop_, &heartbeat_timer_);
  uv_timer_init(loop_, &refresh_timer_);
  heartbeat_timer_.data = this;
  refresh_timer_.data = this;
  timers_started_ = true;
  uv_timer_start(&heartbeat_timer_, on_heartbeat_cb, options_.heartbeat_ms, options_.heartbeat_ms);
  uv_timer_start(&refresh_timer_, on_refresh_cb, options_.refresh_ms, options_.refresh_ms);
}

void PoolMembership::shutdown() {
  if (shut_down_) return;
  shut_down_ = true;
  if (timers_started_) {
    // The timers are members: their memory outlives the loop run, so no close callback is needed.
    uv_close(reinterpret_cast<uv_handle_t*>(&heartbeat_timer_), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&refresh_timer_), nullptr);
  }
}

void PoolMembership::on_heartbeat_cb(uv_timer_t* timer) noexcept {
  static_cast<PoolMembership*>(timer->data)->on_heartbeat();
}

void PoolMembership::on_refresh_cb(uv_timer_t* timer) noexcept {
  static_cast<PoolMembership*>(timer->data)->on_refresh();
}

void PoolMembership::on_heartbeat() {
  if (db_->connected()) {
    write_heartbeat();
    return;
  }
  if (!db_->connect()) {
    note_failure();
    return;
  }
  sync_all();
}

void PoolMembership::on_refresh() {
  if (!db_->connected()) return;  // the heartbeat reconnects
  if (load_changes()) load_servers();
}

bool PoolMembership::sync_all() {
  if (!write_heartbeat()) return false;
  // Notifications and deltas missed while away are covered by starting from scratch.
  owners_.clear();
  last_epoch_ = 0;
  return load_changes() && load_servers();
}

bool PoolMembership::write_heartbeat() {
  if (!db_->upsert_server(options_.id, advertise_, availability_)) {
    note_failure();
    return false;
  }
  ++stats_.heartbeats;
  note_success();
  return true;
}

bool PoolMembership::load_changes() {
  scratch_rows_.clear();
  if (!db_->owners_since(last_epoch_, scratch_rows_)) {
    note_failure();
    return false;
  }
  for (const OwnerRow& row : scratch_rows_) {
    apply(row.user_key, row.server_id, row.epoch);
    if (row.epoch > last_epoch_) last_epoch_ = row.epoch;
  }
  note_success();
  return true;
}

bool PoolMembership::load_servers() {
  scratch_servers_.clear();
  if (!db_->servers(scratch_servers_)) {
    note_failure();
    return false;
  }
  uint64_t now = uv_now(loop_);
  servers_.clear();
  for (const ServerRow& row : scratch_servers_) servers_[row.server_id] = ServerSeen{row.heartbeat_age_ms, now};
  return true;
}

void PoolMembership::apply(const std::string& user_key, const std::string& server_id, int64_t epoch) {
  auto [it, inserted] = owners_.try_emplace(user_key, CachedOwner{server_id, epoch});
  // Epochs only grow: an older answer (a slow read racing a delta) never replaces a newer one.
  if (!inserted && epoch >= it->second.epoch) {
    it->second.server_id = server_id;
    it->second.epoch = epoch;
  }
}

bool PoolMembership::may_take_users() const {
  // Traveler: a negative availability index keeps its users but takes no new ones.
  return options_.claim && availability_ >= 0 && db_->connected();
}

bool PoolMembership::looks_dead(const std::string& server_id) const {
  auto it = servers_.find(server_id);
  if (it == servers_.end()) return true;  // not seen yet: take_over asks the database
  int64_t age = it->second.age_ms + static_cast<int64_t>(uv_now(loop_) - it->second.seen_at_ms);
  return age > static_cast<int64_t>(options_.stale_after_ms);
}

std::string PoolMembership::on_request(const std::string& user_key) {
  auto it = owners_.find(user_key);
  if (it == owners_.end()) {
    // First sight of this user: one read, then the cache (negative entries included; the
    // deltas bring any later claim by another server).
    OwnerRow row;
    bool found = false;
    if (!db_->connected() || !db_->read_owner(user_key, row, found)) {
      if (db_->connected()) note_failure();
      ++stats_.requests_unowned;
      return {};
    }
    it = owners_.try_emplace(user_key, CachedOwner{found ? row.server_id : std::string(), found ? row.epoch : 0})
             .first;
  }
  std::string owner = it->second.server_id;
  int64_t epoch = it->second.epoch;
  if (owner.empty()) {
    ++stats_.requests_unowned;
    if (may_take_users()) claim(user_key);
  } else if (owner == options_.id) {
    ++stats_.requests_owned;
  } else {
    ++stats_.requests_not_owned;
    if (may_take_users() && looks_dead(owner)) take_over(user_key, owner, epoch);
  }
  return owner;
}

void PoolMembership::claim(const std::string& user_key) {
  int64_t epoch = 0;
  OwnerRow row;
  bool found = false;
  if (!db_->begin_write() || !db_->next_epoch(epoch) || !db_->read_owner(user_key, row, found)) {
    abort_transaction();
    return;
  }
  if (found && !row.server_id.empty()) {
    // Another server claimed it since our read; the epoch taken is rolled back with the rest.
    db_->rollback();
    ++stats_.lost_races;
    apply(user_key, row.server_id, row.epoch);
    return;
  }
  bool changed = true;
  bool written = found ? db_->cas_owner(user_key, options_.id, epoch, row.epoch, changed)
                       : db_->upsert_owner(user_key, options_.id, epoch);
  if (!finish_write(user_key, written, changed, epoch)) return;
  ++stats_.claims;
  if (options_.verbose) {
    std::fprintf(stderr, "poolsim %s: claimed %s at epoch %lld\n", options_.id.c_str(), user_key.c_str(),
                 static_cast<long long>(epoch));
  }
}

void PoolMembership::take_over(const std::string& user_key, const std::string& dead_owner, int64_t expected_epoch) {
  int64_t epoch = 0;
  OwnerRow row;
  bool found = false;
  if (!db_->begin_write() || !db_->next_epoch(epoch) || !db_->read_owner(user_key, row, found)) {
    abort_transaction();
    return;
  }
  if (!found || row.server_id != dead_owner || row.epoch != expected_epoch) {
    // Moved on since the cache saw it (another takeover, an admin): learn the new state.
    db_->rollback();
    ++stats_.lost_races;
    apply(user_key, found ? row.server_id : std::string(), found ? row.epoch : 0);
    return;
  }
  // The cache may be one refresh behind: the owner must be stale by the database's own clock.
  int64_t age = 0;
  bool registered = false;
  if (!db_->server_age(dead_owner, age, registered)) {
    abort_transaction();
    return;
  }
  if (registered && age <= static_cast<int64_t>(options_.stale_after_ms)) {
    db_->rollback();
    servers_[dead_owner] = ServerSeen{age, uv_now(loop_)};
    return;
  }
  bool changed = false;
  bool written = db_->cas_owner(user_key, options_.id, epoch, expected_epoch, changed);
  if (!finish_write(user_key, written, changed, epoch)) return;
  ++stats_.takeovers;
  if (options_.verbose) {
    std::fprintf(stderr, "poolsim %s: took over %s from %s at epoch %lld\n", options_.id.c_str(),
                 user_key.c_str(), dead_owner.c_str(), static_cast<long long>(epoch));
  }
}

bool PoolMembership::finish_write(const std::string& user_key, bool written, bool changed, int64_t epoch) {
  if (!written) {
    abort_transaction();
    return false;
  }
  if (!changed) {
    // Someone else's write landed between our read and our compare-and-set.
    db_->rollback();
    ++stats_.lost_races;
    reread(user_key);
    return false;
  }
  if (!db_->commit()) {
    abort_transaction();
    return false;
  }
  apply(user_key, options_.id, epoch);
  return true;
}

void PoolMembership::reread(const std::string& user_key) {
  OwnerRow row;
  bool found = false;
  if (!db_->read_owner(user_key, row, found)) {
    note_failure();
    return;
  }
  if (found) apply(user_key, row.server_id, row.epoch);
}

bool PoolMembership::fetch_owner(const std::string& user_key, OwnerRow& row, bool& found, std::string& error) {
  if (!db_->connected() || !db_->read_owner(user_key, row, found)) {
    if (db_->connected()) note_failure();
    error = db_->connected() ? db_->last_error() : "database unavailable: " + db_->last_error();
    return false;
  }
  if (found) apply(user_key, row.server_id, row.epoch);
  return true;
}

bool PoolMembership::assign(const std::string& user_key, const std::string& server_id, OwnerRow& row,
                            std::string& error) {
  if (!db_->connected()) {
    error = "database unavailable: " + db_->last_error();
    return false;
  }
  int64_t epoch = 0;
  if (!db_->begin_write() || !db_->next_epoch(epoch) || !db_->upsert_owner(user_key, server_id, epoch)) {
    error = db_->last_error();
    abort_transaction();
    return false;
  }
  if (!db_->commit()) {
    error = db_->last_error();
    abort_transaction();
    return false;
  }
  ++stats_.assignments;
  apply(user_key, server_id, epoch);
  row = OwnerRow{user_key, server_id, epoch};
  return true;
}

void PoolMembership::set_availability(int64_t value) {
  availability_ = value;
  if (db_ != nullptr && db_->connected()) write_heartbeat();  // routers see it now, not next beat
}

void PoolMembership::abort_transaction() {
  db_->rollback();  // keeps last_error(): the failure that led here is the one to report
  note_failure();
}

void PoolMembership::note_failure() {
  ++stats_.db_errors;
  if (!db_healthy_) return;
  db_healthy_ = false;
  std::fprintf(stderr, "poolsim %s: %s database failed: %s (serving on; retrying at each heartbeat)\n",
               options_.id.c_str(), db_->kind(), db_->last_error().c_str());
}

void PoolMembership::note_success() {
  if (db_healthy_) return;
  db_healthy_ = true;
  std::fprintf(stderr, "poolsim %s: %s database is back\n", options_.id.c_str(), db_->kind());
}

}  // namespace poolsim
