// The admin API's handlers on the control loop: /healthz, /metrics, /status, and the JSON
// API (route, ownership, servers and their admin states, reload). The listener itself is
// admin_server.*; these methods answer what it parsed.
#include <algorithm>
#include <chrono>
#include <string>

#include "affinity/directory.h"
#include "affinity/rendezvous.h"
#include "proxy/control/admin_auth.h"
#include "proxy/control/admin_state.h"
#include "proxy/config_adapters.h"
#include "proxy/control/control_loop.h"
#include "proxy/control/directory_metrics.h"
#include "proxy/control/self_health.h"
#include "proxy/control/status_page.h"
#include "proxy/json.h"
#include "proxy/log.h"
#include "sprayer_version.h"

namespace sprayer::proxy {
namespace {

void fill_health_details(const health::ServerHealth& h, health::TimePoint now, ControlState::ServerRow& row) {
  row.checks = std::string(health::to_string(h.liveness()));
  row.admin = std::string(health::to_string(h.admin_state()));
  row.reason = std::string(health::to_string(h.last_transition_reason()));
  row.since_seconds = std::chrono::duration<double>(now - h.last_transition()).count();
  row.last_failure = std::string(health::to_string(h.last_failure()));
  if (auto at = h.last_failure_time()) row.last_failure_seconds = std::chrono::duration<double>(now - *at).count();
}

}  // namespace

AdminResponse ControlLoop::handle_admin(const AdminRequest& request) {
  std::string_view path = request.target;
  path = path.substr(0, path.find('?'));
  if (AdminVerdict verdict = check_admin_request(request, path, config_->admin); !verdict.ok()) {
    // Who tried, never with what token.
    LOG_WARN("admin: %s %.*s from %s refused (%d): %s", request.method.c_str(), static_cast<int>(path.size()),
             path.data(), request.client.empty() ? "?" : request.client.c_str(), verdict.status, verdict.error.c_str());
    std::string body = "{\"error\":";
    json_string(body, verdict.error);
    body += "}\n";
    AdminResponse refused{verdict.status, "application/json", std::move(body)};
    if (verdict.challenge) refused.extra_headers = "WWW-Authenticate: Basic realm=\"sprayer admin\", charset=\"UTF-8\"\r\n";
    return refused;
  }
  if (path == "/healthz") {
    SelfHealth health = judge_self_health(self_health_input());
    return AdminResponse{health.http_status(), "text/plain; charset=utf-8", health.reason + "\n"};
  }
  if (path == "/metrics") {
    DirectoryCollector directory(runtime_->directory.get());
    return AdminResponse{200, "text/plain; version=0.0.4; charset=utf-8",
                         render_metrics({collector_.get(), control_collector_.get(), &directory})};
  }
  if (path == "/status") return AdminResponse{200, "text/html; charset=utf-8", std::string(status_page_html())};
  if (path == "/api/v1/status") return AdminResponse{200, "application/json", status_json(control_state())};
  if (path == "/api/v1/route") {
    size_t q = request.target.find('?');
    return route_api(q == std::string::npos ? std::string_view() : std::string_view(request.target).substr(q + 1));
  }
  if (path == "/api/v1/ownership") return ownership_api();
  if (path == "/api/v1/servers") return servers_api();
  if (path == "/api/v1/reload") return reload_api(request);
  if (path == "/api/v1/admin-states") return admin_states_api(request);
  if (path.substr(0, 16) == "/api/v1/servers/") return server_state_api(request, path.substr(16));
  return AdminResponse{404, "text/plain; charset=utf-8", "not found\n"};
}

AdminResponse ControlLoop::route_api(std::string_view query) {
  std::string target = "/api/v1/route?";
  target.append(query);
  affinity::RequestView view{"GET", target, {}};
  affinity::ExtractResult user = admin_extractor_->extract(view);
  if (!user.found())
    return AdminResponse{400, "application/json", "{\"error\":\"give the user as ?user=NAME\"}\n"};
  // The key requests would use: the directory's answer when cached; a miss asks for it.
  std::string_view directory_state = "off";
  std::string key = user.user_key;
  if (DirectoryClient* directory = runtime_->directory.get()) {
    std::string name = affinity::directory_name(user.raw_user);
    auto answer = directory->cache().find(name, affinity::DirectoryClock::now());
    directory_state = !answer ? "miss" : answer->found ? "hit" : "not_found";
    if (answer && answer->found) {
      std::string resolved = admin_extractor_->normalise(answer->key);
      if (!resolved.empty()) key = std::move(resolved);
    } else if (!answer && directory->up()) {
      directory->request(name);
    }
  }
  RouteResult result = route_user(*route_, key, affinity::hash_key(key), 0);
  std::string out = "{\"user\":";
  json_string(out, key);
  out += ",\"name\":";
  json_string(out, user.user_key);
  out += ",\"directory\":";
  json_string(out, directory_state);
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

ControlState ControlLoop::control_state() const {
  ControlState st;
  auto now = std::chrono::steady_clock::now();
  st.uptime_seconds = std::chrono::duration<double>(now - started_).count();
  st.start_time_seconds = std::chrono::duration<double>(started_wall_.time_since_epoch()).count();
  st.version = SPRAYER_VERSION;
  st.shutting_down = shutting_down_;
  st.reloads_applied = reloads_applied_;
  st.reloads_refused = reloads_refused_;
  st.last_reload_ok = last_reload_ok_;
  st.last_reload_success_seconds =
      std::chrono::duration<double>(last_reload_success_.value_or(started_wall_).time_since_epoch()).count();
  st.memory_budget_bytes = overload_.budget();
  st.memory_accounted_bytes = overload_.used();
  st.overload_state = std::string(to_string(overload_.state()));
  st.overload_shed_connections = overload_.shed_connections();
  st.overload_refused_requests = overload_.refused_requests();
  st.memory_allocation_failures = overload_.allocation_failures();
  for (const auto& w : workers_) {
    st.downstream_connections += w->stats().downstream_open.load(std::memory_order_relaxed);
    st.upstream_connections += w->stats().upstream_open.load(std::memory_order_relaxed);
  }
  for (size_t i = 0; i < runtime_->servers.size(); ++i) {
    const ServerTarget& target = runtime_->servers[i];
    ControlState::ServerRow row;
    row.id = target.id;
    row.state = "up";
    row.address = target.host_port;
    row.weight = target.weight;
    if (const health::ServerHealth* h = tracker_ ? tracker_->find(target.id) : nullptr) {
      row.state = std::string(health::to_string(h->state()));
      row.availability = h->availability();
      row.ejections = h->counters().ejections;
      fill_health_details(*h, clock_.now(), row);
    }
    const size_t stat_row = WorkerStats::server_row(static_cast<int>(target.slot));
    for (const auto& w : workers_) {
      row.parked += w->stats().parked[stat_row].load(std::memory_order_relaxed);
      row.takeovers_in += w->stats().takeover_in[stat_row].load(std::memory_order_relaxed);
      row.takeovers_out += w->stats().takeover_out[stat_row].load(std::memory_order_relaxed);
    }
    if (snapshot_) {
      if (auto index = snapshot_->server_index(target.id)) row.owned_users = snapshot_->owned_users(*index);
    }
    for (const auto& w : workers_) row.active_requests += w->active_upstreams(target.slot);
    if (const auto pool = pool_servers_.find(target.id); pool != pool_servers_.end()) {
      ControlState::PoolHeartbeat beat{target.id, pool->second.second, std::nullopt};
      if (const auto& at = pool->second.first.heartbeat_at)
        beat.age_seconds = std::chrono::duration<double>(std::chrono::system_clock::now() - *at).count();
      st.heartbeats.push_back(std::move(beat));
    }
    st.servers.push_back(std::move(row));
  }
  st.source_configured = source_ != nullptr;
  if (source_) {
    affinity::SourceStatus status = source_->status();
    st.source_state = std::string(affinity::to_string(status.state));
    st.epoch = status.epoch;
    st.users = status.users;
    if (status.since_success)
      st.snapshot_age_seconds = std::chrono::duration<double>(*status.since_success).count();
    st.stale = status.stale;
    st.source_errors = status.counters.errors;
    st.source_reconnects = status.counters.reconnects;
    st.full_loads = status.counters.full_loads;
    st.deltas_applied = status.counters.deltas_applied;
    st.source_last_error = status.last_error;
  } else {
    st.source_state = "none";
  }
  if (snapshot_) st.snapshot_bytes = snapshot_->memory_bytes();
  if (peer_) {
    const AdminPeerStatus& peer = peer_->status();
    st.admin_peer = ControlState::Peer{peer.up.value_or(false), peer.exchanges_ok, peer.exchanges_failed};
  }
  st.process = read_process_stats();
  st.samples = &samples_;
  return st;
}

AdminResponse ControlLoop::servers_api() {
  std::string out = "{\"servers\":[";
  for (size_t i = 0; i < runtime_->servers.size(); ++i) {
    const ServerTarget& target = runtime_->servers[i];
    const health::ServerHealth* h = tracker_ ? tracker_->find(target.id) : nullptr;
    int64_t active = 0;
    for (const auto& w : workers_) active += w->active_upstreams(target.slot);
    if (i) out += ",";
    out += "{\"id\":";
    json_string(out, target.id);
    out += ",\"address\":";
    json_string(out, target.host_port);
    out += ",\"weight\":" + std::to_string(target.weight);
    if (h) {
      out += ",\"state\":";
      json_string(out, health::to_string(h->state()));
      out += ",\"checks\":";
      json_string(out, health::to_string(h->liveness()));
      out += ",\"admin\":";
      json_string(out, health::to_string(h->admin_state()));
      auto source = admin_sources_.find(target.id);
      out += ",\"admin_source\":";
      json_string(out, source == admin_sources_.end() ? std::string_view("none") : std::string_view(source->second));
      auto record = admin_records_.find(target.id);
      out += ",\"admin_changed_at_ms\":" +
             std::to_string(record == admin_records_.end() ? uint64_t{0} : record->second.stamp);
      out += ",\"availability\":" + std::to_string(h->availability());
      out += ",\"last_transition_reason\":";
      json_string(out, health::to_string(h->last_transition_reason()));
      out += ",\"ejections\":" + std::to_string(h->counters().ejections);
    }
    if (const auto pool = pool_servers_.find(target.id); pool != pool_servers_.end()) {
      out += ",\"pool_availability\":" + std::to_string(pool->second.first.availability);
      out += ",\"pool_heartbeat_at\":";
      json_string(out, pool->second.first.heartbeat_text);
      out += pool->second.second ? ",\"pool_heartbeat_stale\":true" : ",\"pool_heartbeat_stale\":false";
    }
    out += ",\"active_requests\":" + std::to_string(active);
    out += "}";
  }
  out += "]";
  if (peer_) {
    const AdminPeerStatus& peer = peer_->status();
    out += ",\"peer\":{\"address\":";
    json_string(out, peer.address);
    out += ",\"up\":";
    out += !peer.up ? "null" : *peer.up ? "true" : "false";
    out += ",\"exchanges_ok\":" + std::to_string(peer.exchanges_ok);
    out += ",\"exchanges_failed\":" + std::to_string(peer.exchanges_failed);
    out += ",\"last_error\":";
    json_string(out, peer.last_error);
    out += "}";
  }
  out += "}\n";
  return AdminResponse{200, "application/json", std::move(out)};
}

AdminResponse ControlLoop::server_state_api(const AdminRequest& request, std::string_view rest) {
  if (request.method != "POST")
    return AdminResponse{405, "application/json", "{\"error\":\"use POST\"}\n"};
  // handle_admin has checked the token and the CSRF rules (admin_auth.h).
  size_t slash = rest.find('/');
  if (slash == std::string_view::npos)
    return AdminResponse{404, "application/json", "{\"error\":\"use /api/v1/servers/ID/drain|maintenance|ready\"}\n"};
  std::string id(rest.substr(0, slash));
  std::string_view action = rest.substr(slash + 1);
  health::AdminState state;
  if (action == "drain")
    state = health::AdminState::drain;
  else if (action == "maintenance")
    state = health::AdminState::maintenance;
  else if (action == "ready")
    state = health::AdminState::ready;
  else
    return AdminResponse{404, "application/json", "{\"error\":\"unknown action; use drain, maintenance or ready\"}\n"};
  if (!tracker_ || !tracker_->find(id))
    return AdminResponse{404, "application/json", "{\"error\":\"no such server\"}\n"};
  LOG_INFO("admin: server %s set to %s", id.c_str(), std::string(action).c_str());
  const uint64_t now_ms = static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count());
  if (set_admin_record(id, AdminRecord{state, next_admin_stamp(now_ms, admin_records_)}, "api")) publish_route();
  save_admin_state_file();
  if (peer_) peer_->changed();  // never waited for: the answer below is this member's
  return servers_api();
}

void ControlLoop::load_admin_state_file() {
  const std::string& path = config_->admin.state_file;
  if (path.empty() || !tracker_) return;
  AdminStates states;
  std::string error;
  if (!load_admin_states(path, states, error)) {
    LOG_WARN("admin state file ignored, every server starts ready: %s", error.c_str());
    return;
  }
  for (const auto& [id, record] : states) {
    if (!tracker_->find(id)) continue;  // a server no longer configured
    set_admin_record(id, record, "state_file");
    if (record.state != health::AdminState::ready)
      LOG_INFO("server %s: %s, as kept in %s", id.c_str(), std::string(health::to_string(record.state)).c_str(),
               path.c_str());
  }
}

void ControlLoop::save_admin_state_file() {
  const std::string& path = config_->admin.state_file;
  if (path.empty() || !tracker_) return;
  AdminStates states;
  for (const auto& s : runtime_->servers)
    if (auto record = admin_records_.find(s.id); record != admin_records_.end()) states[s.id] = record->second;
  std::string error;
  if (!save_admin_states(path, states, error))
    LOG_WARN("admin state not saved, a restart will forget it: %s", error.c_str());
}

AdminResponse ControlLoop::ownership_api() {
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
  out += ",\"rows_skipped\":" + std::to_string(st.counters.rows_skipped);
  out += ",\"change_detection\":";
  json_string(out, affinity::to_string(ownership_source_config(config_->ownership).change_detection));
  out += "}\n";
  return AdminResponse{200, "application/json", std::move(out)};
}

// The facts /healthz judges (proxy/control/self_health.h has the rules).
SelfHealthInput ControlLoop::self_health_input() const {
  SelfHealthInput in;
  in.draining = shutting_down_;
  in.listeners_up = !workers_.empty() && std::none_of(workers_.begin(), workers_.end(), [](const auto& w) {
    return w->finished();
  });
  in.source_configured = source_ != nullptr;
  in.snapshot_loaded = snapshot_ != nullptr;
  if (source_) in.since_success = source_->status().since_success;
  in.max_staleness = config_->ownership.max_staleness;
  in.servers = runtime_->servers.size();
  if (published_health_) {
    for (const auto& entry : published_health_->servers)
      if (entry.state == health::ServerState::up || entry.state == health::ServerState::draining) ++in.usable_servers;
  } else {
    in.usable_servers = in.servers;
  }
  return in;
}

}  // namespace sprayer::proxy
