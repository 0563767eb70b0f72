// Control loop: workers up, signals, admin requests, bounded graceful drain.
#include "proxy/server.h"

#include <thread>

#include "proxy/json.h"
#include "proxy/log.h"

namespace sprayer::proxy {
namespace {

constexpr uint64_t kShutdownPollMs = 50;

}  // namespace

Server::Server(std::shared_ptr<const conf::Config> config) : config_(std::move(config)) {}

Server::~Server() = default;

int Server::run() {
  started_ = std::chrono::steady_clock::now();
  auto runtime = std::make_shared<Runtime>();
  runtime->config = config_;
  runtime->extractor = extractor_config(config_->affinity);
  std::string error;
  if (!load_listener_tls(*config_, runtime->listener_tls, error)) {
    LOG_ERROR("%s", error.c_str());
    return 1;
  }
  if (!resolve_servers(*config_, runtime->servers, error)) {
    LOG_ERROR("%s", error.c_str());
    return 1;
  }
  runtime_ = runtime;

  uv_loop_init(&loop_);
  unsigned workers = config_->workers ? config_->workers : std::max(1u, std::thread::hardware_concurrency());
  for (unsigned i = 0; i < workers; ++i) {
    auto worker = std::make_unique<Worker>(static_cast<int>(i), runtime_, connections_);
    bool ok = worker->start(error);
    workers_.push_back(std::move(worker));
    if (!ok) {
      LOG_ERROR("%s", error.c_str());
      for (auto& w : workers_) w->force_stop();
      for (auto& w : workers_) w->join();
      uv_loop_close(&loop_);
      return 1;
    }
  }
  collector_ = std::make_unique<WorkerStatsCollector>(workers_);
  {
    affinity::ExtractorConfig by_query = runtime_->extractor;
    by_query.order = {affinity::ExtractorStep{affinity::Source::query, "user"}};
    admin_extractor_ = std::make_unique<affinity::Extractor>(by_query);
  }
  route_ = RouteState::make(*runtime_, nullptr, nullptr, route_version_);
  start_ownership_source();

  if (config_->admin.enabled) {
    admin_ = std::make_unique<AdminServer>(&loop_, [this](const AdminRequest& r) { return handle_admin(r); });
    if (admin_->listen(config_->admin.address, error) != 0) {
      LOG_ERROR("%s", error.c_str());
      admin_->close();
      for (auto& w : workers_) w->force_stop();
      for (auto& w : workers_) w->join();
      uv_run(&loop_, UV_RUN_DEFAULT);
      uv_loop_close(&loop_);
      return 1;
    }
  }

  auto signal_cb = [](uv_signal_t* h, int signum) noexcept { static_cast<Server*>(h->data)->on_signal(signum); };
  for (auto [handle, signum] : {std::pair{&sigterm_, SIGTERM}, std::pair{&sigint_, SIGINT}, std::pair{&sighup_, SIGHUP},
                                std::pair{&sigusr1_, SIGUSR1}}) {
    uv_signal_init(&loop_, handle);
    handle->data = this;
    uv_signal_start(handle, signal_cb, signum);
  }
  uv_timer_init(&loop_, &shutdown_timer_);
  shutdown_timer_.data = this;

  std::string listeners;
  for (const auto& l : config_->listeners) listeners += " " + l.name + "=" + l.address.to_string();
  LOG_INFO("sprayer %s started: %u workers, %zu servers, listeners:%s, admin=%s", SPRAYER_VERSION, workers,
           runtime_->servers.size(), listeners.c_str(),
           config_->admin.enabled ? config_->admin.address.to_string().c_str() : "off");

  uv_run(&loop_, UV_RUN_DEFAULT);
  for (auto& w : workers_) w->join();
  uv_walk(&loop_, [](uv_handle_t* h, void*) noexcept {
    if (!uv_is_closing(h)) uv_close(h, nullptr);
  }, nullptr);
  uv_run(&loop_, UV_RUN_DEFAULT);
  uv_loop_close(&loop_);
  LOG_INFO("sprayer stopped%s", forced_ ? " (drain deadline passed; remaining connections were closed)" : "");
  return 0;
}

void Server::on_signal(int signum) {
  switch (signum) {
    case SIGTERM:
    case SIGINT:
      if (shutting_down_) {
        LOG_INFO("second stop signal: closing every connection now");
        for (auto& w : workers_) w->force_stop();
        forced_ = true;
        return;
      }
      LOG_INFO("stop signal: no new connections; in-flight requests may finish for %lld ms",
               static_cast<long long>(config_->timeouts.drain.count()));
      begin_shutdown();
      return;
    case SIGHUP:
      LOG_WARN("SIGHUP: live reload is not supported yet; restart sprayer to apply a new configuration");
      return;
    case SIGUSR1:
      return;  // log reopening comes with the access log
  }
}

void Server::start_ownership_source() {
  const conf::OwnershipConfig& oc = config_->ownership;
  if (oc.source == conf::OwnershipSourceKind::none) {
    LOG_WARN("no ownership source configured: every user is routed by rendezvous hashing");
    return;
  }
  affinity::OwnershipSourceConfig sc;
  sc.kind = oc.source == conf::OwnershipSourceKind::sqlite ? affinity::SourceKind::sqlite
                                                            : affinity::SourceKind::postgresql;
  sc.sqlite_path = oc.sqlite_path;
  sc.pg_conninfo = oc.postgresql;
  if (!oc.query_full.empty()) sc.queries.full = oc.query_full;
  if (!oc.query_delta.empty()) sc.queries.delta = oc.query_delta;
  if (!oc.query_servers.empty()) sc.queries.servers = oc.query_servers;
  if (!oc.query_change.empty()) sc.queries.change = oc.query_change;
  sc.poll_interval = oc.poll_interval;
  sc.resync_interval = oc.resync_interval;
  sc.reconnect_min = oc.reconnect_min;
  sc.reconnect_max = oc.reconnect_max;
  sc.stale_after = oc.stale_after;
  sc.cache_file = oc.cache_file;
  affinity::OwnershipCallbacks callbacks;
  callbacks.on_snapshot = [this](std::shared_ptr<const affinity::OwnershipSnapshot> snapshot) {
    snapshot_ = std::move(snapshot);
    publish_route();
  };
  callbacks.on_status = [](const affinity::SourceStatus& status) {
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

void Server::publish_route() {
  route_ = RouteState::make(*runtime_, snapshot_, nullptr, ++route_version_);
  for (auto& w : workers_) w->publish(route_);
}

void Server::begin_shutdown() {
  shutting_down_ = true;
  if (source_) source_->stop([this] { source_stopped_ = true; });
  drain_deadline_ = std::chrono::steady_clock::now() + config_->timeouts.drain;
  for (auto& w : workers_) w->begin_drain();
  uv_timer_start(&shutdown_timer_, [](uv_timer_t* t) noexcept { static_cast<Server*>(t->data)->on_shutdown_poll(); },
                 kShutdownPollMs, kShutdownPollMs);
}

void Server::on_shutdown_poll() {
  bool all_done = true;
  for (auto& w : workers_) all_done = all_done && w->finished();
  all_done = all_done && source_stopped_;
  if (!all_done) {
    if (!forced_ && std::chrono::steady_clock::now() >= drain_deadline_) {
      LOG_WARN("drain deadline passed: closing remaining connections");
      forced_ = true;
      for (auto& w : workers_) w->force_stop();
    }
    return;
  }
  uv_timer_stop(&shutdown_timer_);
  if (admin_) admin_->close();
  for (auto* h : {&sigterm_, &sigint_, &sighup_, &sigusr1_}) uv_close(reinterpret_cast<uv_handle_t*>(h), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&shutdown_timer_), nullptr);
}

AdminResponse Server::handle_admin(const AdminRequest& request) {
  std::string_view path = request.target;
  path = path.substr(0, path.find('?'));
  if (path == "/healthz") {
    if (shutting_down_) return AdminResponse{503, "text/plain; charset=utf-8", "draining\n"};
    if (source_ && !snapshot_)
      return AdminResponse{503, "text/plain; charset=utf-8", "no ownership snapshot yet (database and cache)\n"};
    return AdminResponse{200, "text/plain; charset=utf-8", "ok\n"};
  }
  if (path == "/metrics") {
    return AdminResponse{200, "text/plain; version=0.0.4; charset=utf-8", render_metrics({collector_.get()})};
  }
  if (path == "/api/v1/route") {
    size_t q = request.target.find('?');
    return route_api(q == std::string::npos ? std::string_view() : std::string_view(request.target).substr(q + 1));
  }
  if (path == "/api/v1/ownership") return ownership_api();
  return AdminResponse{404, "text/plain; charset=utf-8", "not found\n"};
}

AdminResponse Server::route_api(std::string_view query) {
  std::string target = "/api/v1/route?";
  target.append(query);
  affinity::RequestView view{"GET", target, {}};
  affinity::ExtractResult user = admin_extractor_->extract(view);
  if (!user.found())
    return AdminResponse{400, "application/json", "{\"error\":\"give the user as ?user=NAME\"}\n"};
  RouteResult result = route_user(*route_, user.user_key, user.key_hash, 0);
  std::string out = "{\"user\":";
  json_string(out, user.user_key);
  out += ",\"owner\":";
  if (result.owner)
    json_string(out, route_->ids[*result.owner]);
  else
    out += "null";
  out += ",\"reason\":";
  json_string(out, affinity::to_string(result.decision.reason));
  out += ",\"candidates\":[";
  for (size_t i = 0; i < result.decision.candidates.size(); ++i) {
    if (i) out += ",";
    json_string(out, route_->ids[result.decision.candidates[i]]);
  }
  out += "],\"epoch\":" + std::to_string(route_->snapshot->epoch());
  out += ",\"source\":";
  json_string(out, source_ ? affinity::to_string(source_->status().state) : std::string_view("none"));
  out += "}\n";
  return AdminResponse{200, "application/json", std::move(out)};
}

AdminResponse Server::ownership_api() {
  std::string out = "{\"source\":";
  if (!source_) {
    out += "\"none\",\"epoch\":0,\"users\":0}\n";
    return AdminResponse{200, "application/json", std::move(out)};
  }
  affinity::SourceStatus st = source_->status();
  json_string(out, affinity::to_string(st.state));
  out += ",\"epoch\":" + std::to_string(st.epoch);
  out += ",\"users\":" + std::to_string(st.users);
  out += ",\"stale\":" + std::string(st.stale ? "true" : "false");
  out += ",\"since_success_ms\":";
  out += st.since_success ? std::to_string(st.since_success->count()) : std::string("null");
  out += ",\"last_error\":";
  json_string(out, st.last_error);
  out += ",\"full_loads\":" + std::to_string(st.counters.full_loads);
  out += ",\"deltas_applied\":" + std::to_string(st.counters.deltas_applied);
  out += ",\"errors\":" + std::to_string(st.counters.errors);
  out += ",\"reconnects\":" + std::to_string(st.counters.reconnects);
  out += ",\"notifications\":" + std::to_string(st.counters.notifications);
  out += "}\n";
  return AdminResponse{200, "application/json", std::move(out)};
}

}  // namespace sprayer::proxy
