// Control loop: workers up, signals, admin requests, bounded graceful drain.

#include "proxy/control/control_loop.h"

#include <algorithm>
#include <thread>

#include "affinity/directory.h"
#include "proxy/control/tls_loading.h"
#include "proxy/access_log.h"
#include "proxy/directory_client.h"
#include "proxy/json.h"
#include "proxy/config_adapters.h"
#include "proxy/listener.h"
#include "proxy/log.h"
#include "proxy/control/self_health.h"
#include "proxy/control/status_page.h"
#include "proxy/tls/tls_context.h"
#include "proxy/control/tls_probe.h"
#include "sprayer_version.h"

namespace sprayer::proxy {
namespace {

constexpr uint64_t kShutdownPollMs = 50;

}  // namespace

ControlLoop::ControlLoop(std::shared_ptr<const conf::Config> config) : config_(std::move(config)) {}

ControlLoop::~ControlLoop() = default;

int ControlLoop::run() {
  started_ = std::chrono::steady_clock::now();
  started_wall_ = std::chrono::system_clock::now();
  std::string error;
  if (!take_over(error)) {
    LOG_ERROR("%s", error.c_str());
    return 1;
  }
  auto runtime = std::make_shared<Runtime>();
  runtime->config = config_;
  runtime->extractor = extractor_config(config_->affinity);
  if (config_->access_log.enabled) {
    access_log_ = AccessLog::open(config_->access_log, error);
    if (!access_log_) {
      LOG_ERROR("%s", error.c_str());
      return 1;
    }
    runtime->access_log = access_log_;
  }
  if (!load_listener_tls(*config_, runtime->listener_tls, error)) {
    LOG_ERROR("%s", error.c_str());
    return 1;
  }
  tls_ = runtime->listener_tls;
  runtime->listener_slots = assign_listener_slots(*config_, listener_slot_names_);
  if (!resolve_servers(*config_, runtime->servers, error) || !load_server_tls(*config_, runtime->servers, error) ||
      !load_check_headers(config_->health, runtime->check_headers, error)) {
    LOG_ERROR("%s", error.c_str());
    return 1;
  }
  if (config_->directory.enabled) {
    std::string password;
    if (!config_->directory.password_file.empty() &&
        !DirectoryClient::read_password(config_->directory.password_file, password, error)) {
      LOG_ERROR("%s", error.c_str());
      return 1;
    }
    runtime->directory = std::make_shared<DirectoryClient>(config_->directory, std::move(password));
  }
  next_slot_ = static_cast<uint32_t>(runtime->servers.size());
  runtime_ = runtime;
  remember_slots();

  uv_loop_init(&loop_);
  health_events_.open(&loop_, [this](const std::vector<PassiveEvent>& events) { on_passive_events(events); });
  // Before anything else runs on the control loop, so that this cleanup can close it.
  auto fail_start = [this](const std::string& why) {
    LOG_ERROR("%s", why.c_str());
    if (admin_) admin_->close();
    for (auto& w : workers_) w->force_stop();
    for (auto& w : workers_) w->join();
    health_events_.close();
    uv_run(&loop_, UV_RUN_DEFAULT);
    uv_loop_close(&loop_);
    return 1;
  };
  // The workers' SO_REUSEPORT would share a port with another process that holds it; an
  // upgrade's inherited sockets are the one deliberate exception.
  for (const auto& listener : config_->listeners)
    if (!inherited_.listeners.count(listener.address.to_string()) && probe_listener(listener, error) != 0)
      return fail_start(error);
  apply_memory_budget(*config_);
  unsigned workers = config_->workers ? config_->workers : std::max(1u, std::thread::hardware_concurrency());
  for (unsigned i = 0; i < workers; ++i) {
    auto worker = std::make_unique<Worker>(static_cast<int>(i), runtime_, connections_, &health_events_, &overload_);
    if (inherited_.upgrade) worker->inherit(inherited_for(i), true);
    bool ok = worker->start(error);
    workers_.push_back(std::move(worker));
    if (!ok) return fail_start(error);
  }
  close_unused_inherited(workers);
  if (config_->admin.enabled) {
    admin_ = std::make_unique<AdminServer>(&loop_, [this](const AdminRequest& r) { return handle_admin(r); });
    const bool adopt = inherited_.admin.fd >= 0 && inherited_.admin.address == config_->admin.address.to_string();
    if (admin_->listen(config_->admin.address, error, adopt ? inherited_.admin.fd : -1) != 0) return fail_start(error);
  }
  collector_ = std::make_unique<WorkerStatsCollector>(
      workers_, [this] { return slot_ids_; },
      [this] { return std::chrono::duration<double>(config_->timeouts.upstream_response).count(); },
      [this] { return listener_slot_names_; });
  control_collector_ = std::make_unique<ControlStateCollector>([this] { return control_state(); });
  {
    affinity::ExtractorConfig by_query = runtime_->extractor;
    by_query.order = {affinity::ExtractorStep{affinity::Source::query, "user"}};
    admin_extractor_ = std::make_unique<affinity::Extractor>(by_query);
  }
  route_ = RouteState::make(*runtime_, nullptr, nullptr, route_version_);
  if (auto& directory = runtime_->directory) {
    // Set before the thread starts, after the last worker exists: workers_ no longer changes.
    directory->set_on_answer([this] {
      for (auto& w : workers_) w->notify_directory();
    });
    directory->start();
  }
  start_health();
  start_admin_peer();
  start_ownership_source();

  auto signal_cb = [](uv_signal_t* h, int signum) noexcept { static_cast<ControlLoop*>(h->data)->on_signal(signum); };
  for (auto [handle, signum] : {std::pair{&sigterm_, SIGTERM}, std::pair{&sigint_, SIGINT}, std::pair{&sighup_, SIGHUP},
                                std::pair{&sigusr1_, SIGUSR1}, std::pair{&sigusr2_, SIGUSR2}}) {
    uv_signal_init(&loop_, handle);
    handle->data = this;
    uv_signal_start(handle, signal_cb, signum);
  }
  uv_timer_init(&loop_, &shutdown_timer_);
  shutdown_timer_.data = this;
  uv_timer_init(&loop_, &tls_debounce_);
  tls_debounce_.data = this;
  uv_timer_init(&loop_, &pending_timer_);
  pending_timer_.data = this;
  uv_timer_init(&loop_, &sample_timer_);
  sample_timer_.data = this;
  take_sample();
  uv_timer_start(&sample_timer_, [](uv_timer_t* t) noexcept { static_cast<ControlLoop*>(t->data)->take_sample(); },
                 kSampleIntervalMs, kSampleIntervalMs);
  watch_tls_files();

  listening_ = true;
  maybe_ready();
  std::string listeners;
  for (const auto& l : config_->listeners) listeners += " " + l.name + "=" + l.address.to_string();
  LOG_INFO("sprayer %s started: %u workers, %zu servers, listeners:%s, admin=%s", SPRAYER_VERSION, workers,
           runtime_->servers.size(), listeners.c_str(),
           config_->admin.enabled ? config_->admin.address.to_string().c_str() : "off");

  uv_run(&loop_, UV_RUN_DEFAULT);
  for (auto& w : workers_) w->join();
  if (runtime_->directory) runtime_->directory->stop();
  uv_walk(&loop_, [](uv_handle_t* h, void*) noexcept {
    if (!uv_is_closing(h)) uv_close(h, nullptr);
  }, nullptr);
  uv_run(&loop_, UV_RUN_DEFAULT);
  uv_loop_close(&loop_);
  if (access_log_) access_log_->flush();
  if (forced_)
    LOG_INFO("sprayer stopped: %lld client connections were cut (%lld parked long-polls)",
             static_cast<long long>(cut_.first), static_cast<long long>(cut_.second));
  else
    LOG_INFO("sprayer stopped: every connection finished%s", handed_over_ ? " (after the binary upgrade)" : "");
  return 0;
}

void ControlLoop::on_signal(int signum) {
  switch (signum) {
    case SIGTERM:
    case SIGINT:
      if (shutting_down_) {
        cut_ = open_connections();
        LOG_INFO("second stop signal: cutting every connection now (%lld client connections, %lld parked long-polls)",
                 static_cast<long long>(cut_.first), static_cast<long long>(cut_.second));
        for (auto& w : workers_) w->force_stop();
        forced_ = true;
        return;
      }
      {
        auto [connections, parked] = open_connections();
        LOG_INFO("stop signal: no new connections; waiting up to %lld ms for %lld client connections "
                 "(%lld parked long-polls among them)",
                 static_cast<long long>(config_->timeouts.drain.count()), static_cast<long long>(connections),
                 static_cast<long long>(parked));
      }
      begin_shutdown();
      return;
    case SIGHUP:
      // The whole file, certificates included. A file that is refused still lets a rotated
      // certificate in: SIGHUP has always meant "reload the certificates".
      if (!reload_config("SIGHUP").applied && !shutting_down_) reload_tls("SIGHUP, running configuration");
      return;
    case SIGUSR2:
      start_upgrade();
      return;
    case SIGUSR1:
      // logrotate renamed the access log: the writer thread opens the name again.
      if (access_log_) {
        access_log_->reopen();
        LOG_INFO("SIGUSR1: access log reopened");
      }
      return;
  }
}

void ControlLoop::start_ownership_source() {
  const conf::OwnershipConfig& oc = config_->ownership;
  if (oc.source == conf::OwnershipSourceKind::none) {
    LOG_WARN("no ownership source configured: every user is routed by rendezvous hashing");
    return;
  }
  affinity::OwnershipSourceConfig sc = ownership_source_config(oc);
  // A large table takes a while at start: say what is being read, how far it got, and when
  // it is done. Later resyncs are routine and stay quiet.
  sc.on_load_progress = [this](std::size_t rows) {
    if (!table_loaded_.load(std::memory_order_relaxed)) LOG_INFO("ownership source: %zu rows read so far", rows);
  };
  LOG_INFO("ownership source: reading the table from %s",
           sc.kind == affinity::SourceKind::sqlite ? ("SQLite " + sc.sqlite_path).c_str()
           : sc.kind == affinity::SourceKind::postgresql ? "PostgreSQL"
           : sc.kind == affinity::SourceKind::mariadb ? "MariaDB/MySQL" : "ODBC");
  const auto load_started = std::chrono::steady_clock::now();
  affinity::OwnershipCallbacks callbacks;
  callbacks.on_snapshot = [this, load_started](std::shared_ptr<const affinity::OwnershipSnapshot> snapshot) {
    snapshot_ = std::move(snapshot);
    source_answered_ = true;
    if (!table_loaded_.exchange(true))
      LOG_INFO("ownership source: first snapshot, %zu users (epoch %lld), %.2f s after the read began", snapshot_->size(),
               static_cast<long long>(snapshot_->epoch()),
               std::chrono::duration<double>(std::chrono::steady_clock::now() - load_started).count());
    publish_route();
    maybe_ready();
  };
  callbacks.on_servers = [this](std::vector<affinity::PoolServerRow> rows) { on_pool_servers(std::move(rows)); };
  callbacks.on_status = [this](const affinity::SourceStatus& status) {
    // A database that fails with no cache to serve still ends the wait: sprayer routes by
    // rendezvous hashing meanwhile, and the status line says so.
    if (status.state != affinity::SourceState::connecting) {
      source_answered_ = true;
      maybe_ready();
    }
    if (status.state == affinity::SourceState::ok)
      LOG_INFO("ownership source: ok, epoch %lld, %zu users", static_cast<long long>(status.epoch), status.users);
    else
      LOG_WARN("ownership source: %s%s%s", std::string(affinity::to_string(status.state)).c_str(),
               status.last_error.empty() ? "" : ": ", status.last_error.c_str());
  };
  source_ = affinity::make_ownership_source(&loop_, sc, std::move(callbacks));
  source_stopped_ = false;
  source_->start();
}

// The table's availability feeds routing; a heartbeat older than heartbeat_max_age means the
// pool itself counts the server gone, so it takes no new users (constrained) until the
// heartbeat moves again. While the database is unreachable nothing is re-read: the last
// verdict stands rather than every server turning stale at once.
void ControlLoop::on_pool_servers(std::vector<affinity::PoolServerRow> rows) {
  const auto max_age = config_->ownership.heartbeat_max_age;
  const auto now = std::chrono::system_clock::now();
  bool changed = false;
  for (auto& row : rows) {
    const bool stale = affinity::heartbeat_stale(row, now, max_age);
    const auto before = pool_servers_.find(row.server_id);
    const bool was_stale = before != pool_servers_.end() && before->second.second;
    if (stale != was_stale) {
      SPRAYER_LOG(stale ? conf::LogLevel::warn : conf::LogLevel::info,
                  "server %s: pool heartbeat %s (heartbeat_at %s, limit %lld ms)%s", row.server_id.c_str(),
                  stale ? "too old" : "current again", row.heartbeat_text.empty() ? "none" : row.heartbeat_text.c_str(),
                  static_cast<long long>(max_age.count()), stale ? ": no new users" : "");
    }
    const int availability = stale ? std::min(row.availability, -1) : row.availability;
    if (tracker_) changed = tracker_->set_availability(row.server_id, availability) || changed;
    std::string id = row.server_id;
    pool_servers_[std::move(id)] = {std::move(row), stale};
  }
  if (changed) publish_route();
}

void ControlLoop::start_health() {
  const conf::HealthConfig& hc = config_->health;
  tracker_ = std::make_unique<health::HealthTracker>(health_spec(hc), random_);
  std::vector<std::string> ids;
  for (const auto& s : runtime_->servers) ids.push_back(s.id);
  tracker_->set_servers(ids, clock_.now());
  load_admin_state_file();
  published_health_ = tracker_->view();
  publish_route();
  if (!hc.enabled) {
    LOG_WARN("active health checks are off: a failed server is noticed only by its failing requests");
    return;
  }
  std::vector<health::ActiveChecker::Target> targets;
  for (const auto& s : runtime_->servers) targets.push_back({s.id, s.addr, s.host_port, s.tls != nullptr});
  checker_ = std::make_unique<health::ActiveChecker>(&loop_, *tracker_, clock_, [this] { publish_route(); });
  checker_->set_targets(std::move(targets));
  checker_->set_request_headers(runtime_->check_headers);
  probe_tls_ = std::make_unique<TlsProbeFactory>(runtime_->servers);
  checker_->set_tls_factory([this](const std::string& id) { return probe_tls_->make(id); });
  checker_stopped_ = false;
  checker_->start();
}

void ControlLoop::on_passive_events(const std::vector<PassiveEvent>& events) {
  if (!tracker_) return;
  bool changed = false;
  auto now = clock_.now();
  for (const auto& e : events) {
    // Events carry the server's slot; one removed by a reload since is no longer tracked.
    auto target = std::find_if(runtime_->servers.begin(), runtime_->servers.end(),
                               [&](const ServerTarget& s) { return s.slot == e.server; });
    if (target == runtime_->servers.end()) continue;
    const std::string& id = target->id;
    switch (e.outcome) {
      case PassiveOutcome::success: changed = tracker_->on_passive_success(id, now) || changed; break;
      case PassiveOutcome::connect:
        changed = tracker_->on_passive_failure(id, health::PassiveFailure::connect, now) || changed;
        break;
      case PassiveOutcome::reset:
        changed = tracker_->on_passive_failure(id, health::PassiveFailure::reset, now) || changed;
        break;
      case PassiveOutcome::timeout:
        changed = tracker_->on_passive_failure(id, health::PassiveFailure::timeout, now) || changed;
        break;
      case PassiveOutcome::status_5xx:
        changed = tracker_->on_passive_failure(id, health::PassiveFailure::status_5xx, now) || changed;
        break;
      case PassiveOutcome::stall:
        LOG_DEBUG("server %s: requests wait and nothing came back for %lld ms: checking it now", id.c_str(),
                  static_cast<long long>(runtime_->config->health.stall_after.count()));
        if (const health::ServerHealth* h = tracker_->find(id); h && !stalls_.count(id))
          stalls_[id] = StallWatch{h->counters().checks_passed, h->counters().checks_failed};
        if (tracker_->on_stall(id, now) && checker_) checker_->reschedule();
        break;
    }
  }
  if (changed) publish_route();
}

void ControlLoop::publish_route(std::shared_ptr<const Runtime> runtime) {
  // Servers a reload added show as down until their first check passes, in the log too.
  std::shared_ptr<const health::HealthView> view = hide_pending(tracker_ ? tracker_->view() : nullptr);
  if (view && published_health_ && view != published_health_) {
    // Say what changed for the operator: one line per server whose state moved.
    // A new view carries every server's availability of the moment: a healthy server whose
    // index drifted inside its class is no news, only a change of state or class is.
    for (const auto& entry : view->servers) {
      const health::HealthEntry* before = published_health_->find(entry.id);
      if (!before || before->state != entry.state) {
        auto level = entry.state == health::ServerState::up ? conf::LogLevel::info : conf::LogLevel::warn;
        SPRAYER_LOG(level, "server %s: %s -> %s (%s), availability %d", entry.id.c_str(),
                    before ? std::string(health::to_string(before->state)).c_str() : "new",
                    std::string(health::to_string(entry.state)).c_str(),
                    std::string(health::to_string(entry.reason)).c_str(), entry.availability);
      } else if (health::classify_availability(before->availability) !=
                 health::classify_availability(entry.availability)) {
        static const char* what[] = {"available: takes new users", "constrained: keeps its users, takes no new ones",
                                     "takes only users bound to it"};
        LOG_INFO("server %s: availability %d -> %d (%s)", entry.id.c_str(), before->availability, entry.availability,
                 what[static_cast<size_t>(health::classify_availability(entry.availability))]);
      }
    }
  }
  published_health_ = view;
  route_ = RouteState::make(*runtime_, snapshot_, view, ++route_version_);
  if (notifier_.is_ready() && !shutting_down_) notifier_.status(status_line());
  for (auto& w : workers_) {
    if (runtime)
      w->publish_runtime(runtime, route_);
    else
      w->publish(route_);
  }
}

bool ControlLoop::reload_tls(const char* why) {
  bool servers_ok = true;
  if (std::any_of(runtime_->servers.begin(), runtime_->servers.end(), [](const auto& s) { return s.tls != nullptr; })) {
    std::string error;
    servers_ok = reload_server_tls(*config_, runtime_->servers, error);
    if (servers_ok)
      LOG_INFO("backend TLS reload (%s): CA files and client certificates loaded", why);
    else
      LOG_ERROR("backend TLS reload (%s) refused, the current settings stay: %s", why, error.c_str());
  }
  if (std::none_of(tls_.begin(), tls_.end(), [](const auto& c) { return c != nullptr; })) return servers_ok;
  std::vector<std::shared_ptr<const TlsContext>> fresh;
  std::string error;
  if (!load_listener_tls(*config_, fresh, error, &tls_)) {
    // A half-written or wrong certificate must not take the listener down: keep serving the
    // one that works and say why the new one was refused.
    LOG_ERROR("TLS reload (%s) refused, the current certificates stay: %s", why, error.c_str());
    return false;
  }
  tls_ = fresh;
  for (auto& w : workers_) w->publish_tls(fresh);
  LOG_INFO("TLS reload (%s): certificates and ticket keys loaded", why);
  return servers_ok;
}

void ControlLoop::watch_tls_files() {
  std::vector<std::string> files;
  for (const auto& l : config_->listeners) {
    if (!l.tls.enabled) continue;
    for (const auto& c : l.tls.certificates) files.insert(files.end(), {c.cert, c.key});
    if (!l.tls.ticket_key_file.empty()) files.push_back(l.tls.ticket_key_file);
  }
  // Watch the folders: tools such as certbot replace files by rename, which a watch on the
  // file itself would miss after the first time.
  std::vector<std::string> dirs;
  for (const auto& f : files) {
    size_t slash = f.rfind('/');
    std::string dir = slash == std::string::npos ? "." : f.substr(0, slash == 0 ? 1 : slash);
    if (std::find(dirs.begin(), dirs.end(), dir) == dirs.end()) dirs.push_back(dir);
    tls_file_names_.push_back(slash == std::string::npos ? f : f.substr(slash + 1));
  }
  for (const auto& dir : dirs) {
    auto* watch = new uv_fs_event_t;
    uv_fs_event_init(&loop_, watch);
    watch->data = this;
    int rc = uv_fs_event_start(watch, [](uv_fs_event_t* h, const char* name, int, int) noexcept {
      auto* self = static_cast<ControlLoop*>(h->data);
      // Other files in the same folder (a log next to the certificates) are none of our business.
      if (name && std::find(self->tls_file_names_.begin(), self->tls_file_names_.end(), name) ==
                      self->tls_file_names_.end())
        return;
      // Several events come for one replacement: reload once they have settled.
      uv_timer_start(&self->tls_debounce_, [](uv_timer_t* t) noexcept {
        static_cast<ControlLoop*>(t->data)->reload_tls("certificate files changed");
      }, 500, 0);
    }, dir.c_str(), 0);
    if (rc != 0) {
      LOG_WARN("cannot watch %s for certificate changes (%s): reload with SIGHUP", dir.c_str(), uv_strerror(rc));
      uv_close(reinterpret_cast<uv_handle_t*>(watch), [](uv_handle_t* h) noexcept {
        delete reinterpret_cast<uv_fs_event_t*>(h);
      });
      continue;
    }
    tls_watches_.push_back(watch);
  }
}

void ControlLoop::maybe_ready() {
  if (notifier_.is_ready() || shutting_down_ || !listening_) return;
  if (source_ && !source_answered_) return;
  if (inherited_.upgrade) upgrade_ready();
  notifier_.ready(status_line());
}

std::string ControlLoop::status_line() const {
  auto grouped = [](uint64_t n) {
    std::string digits = std::to_string(n), out;
    for (size_t i = 0; i < digits.size(); ++i) {
      if (i && (digits.size() - i) % 3 == 0) out += ',';
      out += digits[i];
    }
    return out;
  };
  size_t up = 0, total = runtime_->servers.size();
  if (published_health_) {
    for (const auto& e : published_health_->servers)
      if (e.state == health::ServerState::up || e.state == health::ServerState::draining) ++up;
  } else {
    up = total;
  }
  std::string line = "serving, " + std::to_string(up) + "/" + std::to_string(total) + " servers up, ";
  if (!source_) {
    line += "no ownership source";
  } else {
    affinity::SourceStatus st = source_->status();
    if (snapshot_)
      line += "snapshot " + grouped(st.users) + " users";
    else
      line += "no snapshot yet";
    if (st.state != affinity::SourceState::ok) line += " (ownership " + std::string(affinity::to_string(st.state)) + ")";
  }
  if (!reload_note_.empty()) line += "; " + reload_note_;
  return line;
}

void ControlLoop::begin_shutdown(bool upgrade) {
  // After an upgrade systemd follows the new process: a STOPPING=1 from here would stop it.
  if (!upgrade)
    notifier_.stopping("stopping: draining connections for up to " +
                       std::to_string(config_->timeouts.drain.count() / 1000) + " s");
  if (upgrade_) {
    LOG_WARN("binary upgrade: stopping, so the new process (pid %d) is stopped too", static_cast<int>(upgrade_->pid()));
    upgrade_->abandon(true);
    upgrade_ = nullptr;
  }
  shutting_down_ = true;
  if (source_) source_->stop([this] { source_stopped_ = true; });
  if (checker_) checker_->stop([this] { checker_stopped_ = true; });
  drain_deadline_ =
      std::chrono::steady_clock::now() + (upgrade ? config_->timeouts.upgrade_drain() : config_->timeouts.drain);
  for (auto& w : workers_) w->begin_drain();
  uv_timer_start(&shutdown_timer_, [](uv_timer_t* t) noexcept { static_cast<ControlLoop*>(t->data)->on_shutdown_poll(); },
                 kShutdownPollMs, kShutdownPollMs);
}

void ControlLoop::on_shutdown_poll() {
  bool all_done = true;
  for (auto& w : workers_) all_done = all_done && w->finished();
  all_done = all_done && source_stopped_ && checker_stopped_;
  if (!all_done) {
    if (!forced_ && std::chrono::steady_clock::now() >= drain_deadline_) {
      cut_ = open_connections();
      LOG_WARN("drain deadline passed: cutting %lld client connections still open (%lld parked long-polls)",
               static_cast<long long>(cut_.first), static_cast<long long>(cut_.second));
      forced_ = true;
      for (auto& w : workers_) w->force_stop();
    }
    return;
  }
  uv_timer_stop(&shutdown_timer_);
  if (admin_) admin_->close();
  if (peer_) peer_->stop();
  health_events_.close();
  for (auto* h : {&sigterm_, &sigint_, &sighup_, &sigusr1_, &sigusr2_}) uv_close(reinterpret_cast<uv_handle_t*>(h), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&shutdown_timer_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&tls_debounce_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&pending_timer_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&sample_timer_), nullptr);
  unwatch_tls_files();
}

std::pair<int64_t, int64_t> ControlLoop::open_connections() const {
  int64_t connections = 0, parked = 0;
  for (const auto& w : workers_) {
    connections += w->stats().downstream_open.load(std::memory_order_relaxed);
    for (const auto& p : w->stats().parked) parked += p.load(std::memory_order_relaxed);
  }
  return {connections, parked};
}

void ControlLoop::judge_stalls() {
  for (auto it = stalls_.begin(); it != stalls_.end();) {
    const health::ServerHealth* h = tracker_ ? tracker_->find(it->first) : nullptr;
    if (!h) {
      it = stalls_.erase(it);
      continue;
    }
    const health::HealthCounters& c = h->counters();
    if (c.checks_failed > it->second.checks_failed) {
      LOG_WARN("server %s: requests waited %lld ms with nothing back, and its check failed too (%s): it is stalled",
               it->first.c_str(), static_cast<long long>(runtime_->config->health.stall_after.count()),
               std::string(health::to_string(h->last_failure())).c_str());
    } else if (c.checks_passed > it->second.checks_passed) {
      LOG_DEBUG("server %s: answers its check while holding requests (long-polls): not stalled", it->first.c_str());
    } else {
      ++it;
      continue;
    }
    it = stalls_.erase(it);
  }
}

void ControlLoop::take_sample() {
  judge_stalls();
  std::vector<const WorkerStats*> stats;
  ProcessSample process;
  process.time = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  for (const auto& w : workers_) {
    stats.push_back(&w->stats());
    process.connections += w->stats().downstream_open.load(std::memory_order_relaxed);
  }
  if (auto p = read_process_stats()) process.resident_bytes = p->resident_bytes;
  if (source_) {
    affinity::SourceStatus status = source_->status();
    if (status.since_success) process.ownership_age = std::chrono::duration<double>(*status.since_success).count();
  }
  std::vector<StatusSamples::Server> servers;
  for (const auto& s : runtime_->servers) servers.push_back({s.id, WorkerStats::server_row(static_cast<int>(s.slot))});
  samples_.sample(process.time, stats, servers, process);
}

void ControlLoop::remember_slots() {
  for (const auto& s : runtime_->servers) {
    if (s.slot >= slot_ids_.size()) slot_ids_.resize(s.slot + 1u);
    slot_ids_[s.slot] = s.id;
  }
}

}  // namespace sprayer::proxy
