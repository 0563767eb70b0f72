// TravelerPool: master monitors by availability, hops, moves, expiry and the load model (see
// traveler_pool.h).
#include "tests/poolsim/traveler_pool.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <utility>

#include "tests/poolsim/text.h"

namespace poolsim {

namespace {

// New users are spread over every server within this many index points of the most available
// one, so that equal servers share the newcomers instead of the first in a tie taking them all.
constexpr int64_t kSpreadBand = 10;
// The pool schema has no commit-ordered epoch: re-read this far behind the newest changed_at,
// so a transaction that committed late with an earlier timestamp is still seen.
constexpr int64_t kChangedAtMarginUs = 2'000'000;
// How stale a last-connection write may get before a connection refreshes it.
constexpr uint64_t kMaxTouchIntervalMs = 5 * 60 * 1000;

uint64_t mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint64_t score(const std::string& user, const std::string& server) {
  uint64_t h = fnv1a64_update(kFnvOffset, user.data(), user.size());
  h = fnv1a64_update(h, "\n", 1);
  return mix(fnv1a64_update(h, server.data(), server.size()));
}

}  // namespace

TravelerPool::TravelerPool(uv_loop_t* loop, const Options& options)
    : loop_(loop),
      options_(options),
      availability_(options.capacity > 0 ? 100 : options.availability),
      pinned_(options.capacity == 0),
      rng_(options.seed ^ 0x5f0c3d1e2b4a6978ULL) {
  if (!options_.traveler || options_.db.empty()) return;
  std::string error;
  conn_ = make_sql_conn(options_.db, options_.id, error);
  if (conn_ == nullptr) {
    std::fprintf(stderr, "poolsim %s: %s\n", options_.id.c_str(), error.c_str());
    return;
  }
  store_ = std::make_unique<MonitorStore>(*conn_, options_.pool_schema ? TableSchema::pool : TableSchema::standard);
}

TravelerPool::~TravelerPool() = default;

void TravelerPool::start(std::string advertise) {
  if (conn_ == nullptr) return;
  advertise_ = std::move(advertise);
  if (conn_->connect()) {
    sync_all();
  } else {
    note_failure();
  }
  uv_timer_init(loop_, &heartbeat_timer_);
  uv_timer_init(loop_, &refresh_timer_);
  uv_timer_init(loop_, &sweep_timer_);
  heartbeat_timer_.data = refresh_timer_.data = sweep_timer_.data = this;
  timers_started_ = true;
  uint64_t sweep_ms = std::clamp<uint64_t>(options_.assignment_ttl_ms / 4, 100, 60'000);
  uv_timer_start(&heartbeat_timer_, on_heartbeat_cb, options_.heartbeat_ms, options_.heartbeat_ms);
  uv_timer_start(&refresh_timer_, on_refresh_cb, options_.refresh_ms, options_.refresh_ms);
  uv_timer_start(&sweep_timer_, on_sweep_cb, sweep_ms, sweep_ms);
}

void TravelerPool::shutdown() {
  if (shut_down_) return;
  shut_down_ = true;
  if (!timers_started_) return;
  // Members: their memory outlives the loop run, so no close callback is needed.
  uv_close(reinterpret_cast<uv_handle_t*>(&heartbeat_timer_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&refresh_timer_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&sweep_timer_), nullptr);
}

void TravelerPool::on_heartbeat_cb(uv_timer_t* timer) noexcept {
  static_cast<TravelerPool*>(timer->data)->on_heartbeat();
}
void TravelerPool::on_refresh_cb(uv_timer_t* timer) noexcept {
  static_cast<TravelerPool*>(timer->data)->on_refresh();
}
void TravelerPool::on_sweep_cb(uv_timer_t* timer) noexcept { static_cast<TravelerPool*>(timer->data)->on_sweep(); }

void TravelerPool::on_heartbeat() {
  if (!conn_->connected()) {
    if (!conn_->connect()) {
      note_failure();
      return;
    }
    sync_all();
    return;
  }
  update_model();
  if (!store_->heartbeat(options_.id, advertise_, availability_)) {
    note_failure();
    return;
  }
  ++stats_.heartbeats;
  note_success();
}

void TravelerPool::on_refresh() {
  if (!conn_->connected()) return;  // the heartbeat reconnects
  if (load_changes()) load_servers();
}

void TravelerPool::on_sweep() {
  if (!conn_->connected()) return;
  int64_t count = 0;
  if (!store_->expire(options_.id, static_cast<int64_t>(options_.assignment_ttl_ms), count)) {
    note_failure();
    return;
  }
  stats_.expired += static_cast<uint64_t>(count);
  if (count > 0 && options_.verbose) {
    std::fprintf(stderr, "poolsim %s: %lld idle assignments expired\n", options_.id.c_str(),
                 static_cast<long long>(count));
  }
}

bool TravelerPool::sync_all() {
  if (!store_->prepare() || !store_->heartbeat(options_.id, advertise_, availability_)) {
    note_failure();
    return false;
  }
  ++stats_.heartbeats;
  users_.clear();
  cursor_ = 0;
  return load_changes() && load_servers();
}

bool TravelerPool::load_changes() {
  scratch_rows_.clear();
  int64_t since = options_.pool_schema ? std::max<int64_t>(0, cursor_ - kChangedAtMarginUs) : cursor_;
  if (!store_->changes(since, scratch_rows_)) {
    note_failure();
    return false;
  }
  for (const MonitorRow& row : scratch_rows_) {
    apply(row.user, row.server, row.version);
    cursor_ = std::max(cursor_, row.version);
  }
  note_success();
  return true;
}

bool TravelerPool::load_servers() {
  scratch_servers_.clear();
  if (!store_->servers(scratch_servers_)) {
    note_failure();
    return false;
  }
  uint64_t now = uv_now(loop_);
  peers_.clear();
  for (const PoolServerRow& row : scratch_servers_) {
    peers_[row.server] = Peer{row.address, row.availability, row.age_ms, now};
  }
  return true;
}

void TravelerPool::apply(const std::string& user_key, const std::string& server, int64_t version) {
  uint64_t now = uv_now(loop_);
  auto [it, inserted] = users_.try_emplace(user_key, Entry{server, version, true, now});
  if (inserted || version < it->second.version) return;
  Entry& e = it->second;
  // A change of master monitor is a connection somewhere in the pool, just now.
  if (e.server != server) e.connect_ms = now;
  e.server = server;
  e.version = version;
  e.exists = true;
}

size_t TravelerPool::owned_users() const {
  return static_cast<size_t>(
      std::count_if(users_.begin(), users_.end(), [&](const auto& kv) { return kv.second.server == options_.id; }));
}

std::vector<std::pair<std::string, int64_t>> TravelerPool::view() const {
  std::vector<std::pair<std::string, int64_t>> out;
  out.emplace_back(options_.id, availability_);
  for (const auto& [id, peer] : peers_) {
    if (id != options_.id) out.emplace_back(id, alive(id) ? peer.availability : INT64_MIN);
  }
  std::sort(out.begin(), out.end());
  return out;
}

uint64_t TravelerPool::next_random() {
  // splitmix64: deterministic for a given --seed.
  return mix(rng_ += 0x9e3779b97f4a7c15ULL);
}

void TravelerPool::update_model() {
  if (pinned_ || options_.capacity == 0) return;
  double load = static_cast<double>(owned_users()) / static_cast<double>(options_.capacity);
  int64_t index = 100 - static_cast<int64_t>(std::llround(100.0 * load));
  if (options_.jitter > 0) {
    uint64_t span = 2 * options_.jitter + 1;
    index += static_cast<int64_t>(next_random() % span) - static_cast<int64_t>(options_.jitter);
  }
  availability_ = std::clamp<int64_t>(index, -100, 100);
}

void TravelerPool::set_availability(int64_t value) {
  pinned_ = true;
  availability_ = value;
  if (conn_ != nullptr && conn_->connected() && store_->heartbeat(options_.id, advertise_, availability_)) {
    ++stats_.heartbeats;  // the pool sees it now, not at the next beat
  }
}

void TravelerPool::unpin() {
  pinned_ = options_.capacity == 0;
  update_model();
  if (conn_ != nullptr && conn_->connected() && store_->heartbeat(options_.id, advertise_, availability_)) {
    ++stats_.heartbeats;
  }
}

bool TravelerPool::alive(const std::string& server) const {
  if (server == options_.id) return true;
  auto it = peers_.find(server);
  if (it == peers_.end()) return false;
  int64_t age = it->second.age_ms + static_cast<int64_t>(uv_now(loop_) - it->second.seen_ms);
  return age <= static_cast<int64_t>(options_.stale_after_ms);
}

int64_t TravelerPool::availability_of(const std::string& server) const {
  if (server == options_.id) return availability_;
  auto it = peers_.find(server);
  return it == peers_.end() ? -200 : it->second.availability;
}

std::string TravelerPool::choose(const std::string& user_key) const {
  struct Candidate {
    const std::string* id;
    int64_t availability;
  };
  std::vector<Candidate> live;
  live.push_back({&options_.id, availability_});
  for (const auto& [id, peer] : peers_) {
    if (id != options_.id && alive(id)) live.push_back({&id, peer.availability});
  }
  // Available servers first (0..100); if none, constrained ones (-1..-100); -200 takes no new users.
  int64_t floor = std::any_of(live.begin(), live.end(), [](const Candidate& c) { return c.availability >= 0; })
                      ? 0
                      : -100;
  int64_t best = INT64_MIN;
  for (const Candidate& c : live) {
    if (c.availability >= floor) best = std::max(best, c.availability);
  }
  if (best == INT64_MIN) return options_.id;
  const std::string* pick = nullptr;
  uint64_t pick_score = 0;
  for (const Candidate& c : live) {
    if (c.availability < floor || c.availability < best - kSpreadBand) continue;
    uint64_t s = score(user_key, *c.id);
    if (pick == nullptr || s > pick_score) {
      pick = c.id;
      pick_score = s;
    }
  }
  return *pick;
}

TravelerPool::Entry* TravelerPool::reread(const std::string& user_key) {
  MonitorRow row;
  bool found = false;
  if (!conn_->connected() || !store_->read(user_key, row, found)) {
    if (conn_->connected()) note_failure();
    return nullptr;
  }
  uint64_t now = uv_now(loop_);
  Entry& e = users_[user_key];
  if (!found) {
    e = Entry{std::string(), 0, false, now};
  } else {
    uint64_t idle = static_cast<uint64_t>(std::max<int64_t>(0, row.idle_ms));
    e = Entry{row.server, row.version, true, idle < now ? now - idle : 0};
  }
  return &e;
}

Decision TravelerPool::on_request(const std::string& user_key) {
  ++stats_.requests;
  Decision d;
  const std::string& self = options_.id;
  uint64_t now = uv_now(loop_);
  uint64_t ttl = options_.assignment_ttl_ms;
  auto it = users_.find(user_key);
  Entry* e = it != users_.end() ? &it->second : reread(user_key);
  if (e == nullptr) {
    // Database unreachable and the user unknown: serve locally rather than fail the device.
    d.master = self;
    ++stats_.local;
    return d;
  }
  d.arrival = e->server;
  bool idle = !e->server.empty() && now - e->connect_ms > ttl;
  if (idle) {
    // The cache only knows a lower bound of the last connection: ask the table.
    if (Entry* fresh = reread(user_key)) e = fresh;
    idle = !e->server.empty() && now - e->connect_ms > ttl;
  }
  std::string target = e->server;
  uint64_t* counter = nullptr;
  if (target.empty() || idle) {
    target = choose(user_key);
    counter = &stats_.assigned;
  } else if (!alive(target)) {
    target = choose(user_key);
    counter = &stats_.taken_over;
  } else if (int64_t own = availability_of(target); own != -200 && options_.move_threshold > 0) {
    // A server at -200 keeps the users bound to it; otherwise a much more available server
    // takes the user at this connection.
    int64_t best = INT64_MIN;
    if (availability_ >= 0) best = availability_;
    for (const auto& [id, peer] : peers_) {
      if (id != self && peer.availability >= 0 && alive(id)) best = std::max(best, peer.availability);
    }
    if (best != INT64_MIN && best - own >= options_.move_threshold) {
      target = choose(user_key);
      counter = &stats_.moved;
    }
  }
  if (counter != nullptr && target != e->server) {
    bool changed = false;
    int64_t version = 0;
    if (!store_->assign(user_key, target, e->server, e->exists, changed, version)) {
      note_failure();
      target = e->server.empty() ? self : e->server;
    } else if (!changed) {
      ++stats_.lost_races;
      Entry* fresh = reread(user_key);
      target = fresh != nullptr && !fresh->server.empty() ? fresh->server : self;
    } else {
      note_success();
      ++*counter;
      e->server = target;
      e->version = std::max(e->version, version);
      e->exists = true;
      e->connect_ms = now;
      if (options_.verbose) {
        std::fprintf(stderr, "poolsim %s: master monitor of %s is %s (was %s)\n", self.c_str(), user_key.c_str(),
                     target.c_str(), d.arrival.empty() ? "none" : d.arrival.c_str());
      }
    }
  } else if (now - e->connect_ms >= std::clamp<uint64_t>(ttl / 8, 1, kMaxTouchIntervalMs)) {
    if (store_->touch(user_key)) {
      ++stats_.touches;
      e->connect_ms = now;
    } else {
      note_failure();
    }
  }
  d.master = target;
  d.hop = target != self;
  ++(d.hop ? stats_.hops : stats_.local);
  return d;
}

bool TravelerPool::fetch(const std::string& user_key, MonitorRow& row, bool& found, std::string& error) {
  if (!conn_->connected() || !store_->read(user_key, row, found)) {
    error = conn_->connected() ? store_->last_error() : "database unavailable: " + conn_->last_error();
    return false;
  }
  return true;
}

void TravelerPool::note_failure() {
  ++stats_.db_errors;
  if (!healthy_) return;
  healthy_ = false;
  std::fprintf(stderr, "poolsim %s: %s database failed: %s (serving on; retrying at each heartbeat)\n",
               options_.id.c_str(), conn_->kind(), conn_->last_error().c_str());
}

void TravelerPool::note_success() {
  if (healthy_) return;
  healthy_ = true;
  std::fprintf(stderr, "poolsim %s: %s database is back\n", options_.id.c_str(), conn_->kind());
}

}  // namespace poolsim
