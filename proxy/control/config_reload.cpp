// Whole-config reload: load and validate first, refuse the file whole on any error, then
// swap the control thread's state and hand the new Runtime to the workers (uv_async; they
// swap at a loop boundary). Keys that only a restart can apply keep their running values.

#include "proxy/control/config_reload.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include <openssl/crypto.h>

#include "proxy/access_log.h"
#include "proxy/control/tls_loading.h"
#include "proxy/control/tls_probe.h"
#include "conf/config_diff.h"
#include "health/active_checker.h"
#include "proxy/json.h"
#include "proxy/config_adapters.h"
#include "proxy/listener.h"
#include "proxy/log.h"
#include "proxy/control/control_loop.h"
#include "proxy/tls/tls_context.h"

namespace sprayer::proxy {
namespace {

constexpr uint64_t kPendingPollMs = 50;

bool same_address(const sockaddr_storage& a, const sockaddr_storage& b) {
  if (a.ss_family != b.ss_family) return false;
  if (a.ss_family == AF_INET) {
    const auto& x = reinterpret_cast<const sockaddr_in&>(a);
    const auto& y = reinterpret_cast<const sockaddr_in&>(b);
    return x.sin_port == y.sin_port && x.sin_addr.s_addr == y.sin_addr.s_addr;
  }
  if (a.ss_family == AF_INET6) {
    const auto& x = reinterpret_cast<const sockaddr_in6&>(a);
    const auto& y = reinterpret_cast<const sockaddr_in6&>(b);
    return x.sin6_port == y.sin6_port && std::memcmp(&x.sin6_addr, &y.sin6_addr, sizeof x.sin6_addr) == 0;
  }
  return false;
}

}  // namespace

std::string ReloadOutcome::to_json() const {
  std::string out = "{\"applied\":";
  out += applied ? "true" : "false";
  out += ",\"changes\":";
  json_string(out, changes);
  out += ",\"needs_restart\":[";
  for (size_t i = 0; i < needs_restart.size(); ++i) {
    if (i) out += ",";
    json_string(out, needs_restart[i]);
  }
  out += "],\"errors\":[";
  for (size_t i = 0; i < errors.size(); ++i) {
    if (i) out += ",";
    json_string(out, errors[i]);
  }
  out += "]}\n";
  return out;
}

void assign_slots(const std::vector<ServerTarget>& running, std::vector<ServerTarget>& next, uint32_t& next_slot) {
  for (auto& server : next) {
    auto same = std::find_if(running.begin(), running.end(), [&](const ServerTarget& r) {
      return r.id == server.id && r.host_port == server.host_port && same_address(r.addr, server.addr);
    });
    server.slot = same != running.end() ? same->slot : next_slot++;
  }
}

bool probe_new_listeners(const conf::Config& running, const conf::Config& next, std::string& error) {
  for (const auto& listener : next.listeners) {
    bool known = std::any_of(running.listeners.begin(), running.listeners.end(),
                             [&](const conf::ListenerConfig& r) { return r.address == listener.address; });
    if (known) continue;
    if (probe_listener(listener, error) != 0) return false;
  }
  return true;
}

health::HealthSpec health_spec(const conf::HealthConfig& hc) {
  health::HealthSpec spec;
  spec.check.path = hc.path;
  spec.check.expected_statuses.assign(hc.expect_status.begin(), hc.expect_status.end());
  spec.check.body_contains = hc.expect_body;
  spec.check.availability_header = hc.availability_header;
  spec.check.interval = hc.interval;
  spec.check.fast_interval = hc.fast_interval;
  spec.check.timeout = hc.timeout;
  spec.check.rise = static_cast<int>(hc.rise);
  spec.check.fall = static_cast<int>(hc.fall);
  spec.passive.consecutive_failures = static_cast<int>(hc.passive_failures);
  spec.passive.min_hold = hc.min_hold;
  spec.passive.max_hold = std::max(hc.max_hold, hc.min_hold);
  return spec;
}

bool load_check_headers(const conf::HealthConfig& hc, std::string& out, std::string& error) {
  std::string credentials;
  if (!hc.auth_file.empty()) {
    std::FILE* f = std::fopen(hc.auth_file.c_str(), "rb");
    if (!f) {
      error = "health.auth_file " + hc.auth_file + ": " + std::strerror(errno);
      return false;
    }
    char buffer[1024];
    size_t n = std::fread(buffer, 1, sizeof buffer, f);
    bool more = n == sizeof buffer && std::fgetc(f) != EOF;
    std::fclose(f);
    std::string_view text(buffer, n);
    text = text.substr(0, text.find('\n'));
    if (!text.empty() && text.back() == '\r') text.remove_suffix(1);
    std::string problem;
    if (more) problem = "longer than 1 KiB";
    else if (text.find(':') == std::string_view::npos || text.front() == ':') problem = "expected user:password on the first line";
    else if (std::any_of(text.begin(), text.end(), [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; }))
      problem = "control character in the first line";
    else credentials.assign(text);
    OPENSSL_cleanse(buffer, sizeof buffer);
    if (!problem.empty()) {
      error = "health.auth_file " + hc.auth_file + ": " + problem;
      return false;
    }
  }
  out = health::check_request_headers(credentials, hc.headers);
  OPENSSL_cleanse(credentials.data(), credentials.size());
  return true;
}

ReloadOutcome ControlLoop::reload_config(const char* why) {
  ReloadOutcome outcome;
  auto refuse = [&](int status) {
    outcome.status = status;
    ++reloads_refused_;
    last_reload_ok_ = false;
    std::string reasons;
    for (const auto& e : outcome.errors) reasons += "\n  " + e;
    LOG_ERROR("reload (%s) of %s refused, the running configuration stays:%s", why, config_->source.c_str(),
              reasons.c_str());
    if (!shutting_down_) {
      reload_note_ = "reload refused: " + (outcome.errors.empty() ? std::string("?") : outcome.errors.front());
      if (outcome.errors.size() > 1) reload_note_ += " (and " + std::to_string(outcome.errors.size() - 1) + " more)";
      notifier_.reloaded(status_line());
    }
    return outcome;
  };
  if (!shutting_down_) notifier_.reloading();
  if (shutting_down_) {
    outcome.errors.push_back("shutting down");
    return refuse(503);
  }
  conf::LoadResult loaded = conf::load_file(config_->source);
  if (!loaded.ok()) {
    for (const auto& e : loaded.errors) outcome.errors.push_back(e.to_string());
    return refuse(422);
  }
  conf::ConfigDiff diff = conf::diff_configs(*config_, *loaded.config);
  std::shared_ptr<const conf::Config> next = conf::keep_restart_only(*config_, *loaded.config);

  auto runtime = std::make_shared<Runtime>();
  runtime->config = next;
  runtime->extractor = extractor_config(next->affinity);
  runtime->directory = runtime_->directory;  // restart-only
  std::string error;
  // Ticket keys carry over by listener name, whatever the new order.
  std::vector<std::shared_ptr<const TlsContext>> previous;
  for (const auto& l : next->listeners) {
    auto same = std::find_if(config_->listeners.begin(), config_->listeners.end(),
                             [&](const conf::ListenerConfig& r) { return r.name == l.name; });
    size_t index = static_cast<size_t>(same - config_->listeners.begin());
    previous.push_back(same != config_->listeners.end() && index < tls_.size() ? tls_[index] : nullptr);
  }
  bool ok = load_listener_tls(*next, runtime->listener_tls, error, &previous) &&
            resolve_servers(*next, runtime->servers, error) && load_server_tls(*next, runtime->servers, error) &&
            load_check_headers(next->health, runtime->check_headers, error) &&
            probe_new_listeners(*config_, *next, error);
  if (!ok) {
    outcome.errors.push_back(config_->source + ": " + error);
    return refuse(422);
  }
  runtime->listener_slots = assign_listener_slots(*next, listener_slot_names_);
  // A changed access_log is a new log: the workers switch to it with the runtime (the old
  // one writes what it has queued, then closes).
  std::shared_ptr<AccessLog> access_log = access_log_;
  if (!(next->access_log == config_->access_log)) {
    access_log.reset();
    if (next->access_log.enabled && !(access_log = AccessLog::open(next->access_log, error))) {
      outcome.errors.push_back(config_->source + ": access_log: " + error);
      return refuse(422);
    }
  }
  runtime->access_log = access_log;
  assign_slots(runtime_->servers, runtime->servers, next_slot_);

  // Everything is loaded: from here on nothing can fail.
  outcome.applied = true;
  ++reloads_applied_;
  last_reload_ok_ = true;
  last_reload_success_ = std::chrono::system_clock::now();
  outcome.changes = diff.summary();
  outcome.needs_restart = diff.needs_restart;
  config_ = next;
  apply_memory_budget(*config_);
  runtime_ = runtime;
  access_log_ = std::move(access_log);
  remember_slots();
  tls_ = runtime->listener_tls;
  log::set_level(next->log.level);
  {
    affinity::ExtractorConfig by_query = runtime->extractor;
    by_query.order = {affinity::ExtractorStep{affinity::Source::query, "user"}};
    admin_extractor_ = std::make_unique<affinity::Extractor>(by_query);
  }
  reload_health(runtime->servers, next->health);
  publish_route(runtime);
  unwatch_tls_files();
  watch_tls_files();
  LOG_INFO("reload (%s): applied: %s", why, outcome.changes.c_str());
  reload_note_.clear();
  notifier_.reloaded(status_line());
  if (std::any_of(runtime->servers.begin(), runtime->servers.end(), [](const auto& s) { return s.tls != nullptr; }))
    LOG_INFO("backend TLS reload (%s): CA files and client certificates loaded", why);
  if (!diff.needs_restart.empty()) {
    std::string keys;
    for (const auto& k : diff.needs_restart) keys += " " + k;
    LOG_WARN("reload (%s): changed but kept until the next restart:%s", why, keys.c_str());
  }
  return outcome;
}

void ControlLoop::reload_health(const std::vector<ServerTarget>& servers, const conf::HealthConfig& config) {
  if (!tracker_) return;
  tracker_->set_spec(health_spec(config));
  std::vector<std::string> ids;
  std::vector<std::string> added;
  for (const auto& s : servers) {
    ids.push_back(s.id);
    if (!tracker_->find(s.id)) added.push_back(s.id);
  }
  // Known servers keep their health, admin state and schedule; new ones start `checking`.
  tracker_->set_servers(ids, clock_.now());
  std::erase_if(pending_servers_, [&](const std::string& id) { return !tracker_->find(id); });
  if (!checker_) return;  // checks off: a new server is taken at its word
  checker_->set_request_headers(runtime_->check_headers);
  // Seed 000: add a server, validate it, then send it traffic. A new server gets nothing,
  // not even users the table gives it, until its first check passes.
  pending_servers_.insert(pending_servers_.end(), added.begin(), added.end());
  for (const auto& id : added) LOG_INFO("server %s: added; no traffic until its first check passes", id.c_str());
  std::vector<health::ActiveChecker::Target> targets;
  for (const auto& s : servers) targets.push_back({s.id, s.addr, s.host_port, s.tls != nullptr});
  checker_->set_targets(std::move(targets));
  // HTTPS checks take each server's TLS settings from the reloaded list (a server the reload
  // added has none in the old one).
  if (probe_tls_) probe_tls_->set_servers(servers);
  if (!pending_servers_.empty())
    uv_timer_start(&pending_timer_, [](uv_timer_t* t) noexcept { static_cast<ControlLoop*>(t->data)->on_pending_poll(); },
                   kPendingPollMs, kPendingPollMs);
}

std::shared_ptr<const health::HealthView> ControlLoop::hide_pending(std::shared_ptr<const health::HealthView> view) const {
  if (!view || pending_servers_.empty()) return view;
  auto copy = std::make_shared<health::HealthView>(*view);
  for (auto& entry : copy->servers)
    if (std::find(pending_servers_.begin(), pending_servers_.end(), entry.id) != pending_servers_.end())
      entry.state = health::ServerState::down;
  return copy;
}

void ControlLoop::on_pending_poll() {
  // A first passed check moves a server from `checking` to `up` without changing its routing
  // state, so the checker does not call back for it: look here.
  size_t before = pending_servers_.size();
  std::erase_if(pending_servers_, [&](const std::string& id) {
    const health::ServerHealth* h = tracker_ ? tracker_->find(id) : nullptr;
    if (h && h->liveness() == health::Liveness::checking) return false;
    bool up = h && h->liveness() == health::Liveness::up;
    LOG_INFO("server %s: first checks %s", id.c_str(),
             up ? "passed, now taking traffic" : "failed, down until checks pass");
    return true;
  });
  if (pending_servers_.empty()) uv_timer_stop(&pending_timer_);
  if (pending_servers_.size() != before) publish_route();
}

AdminResponse ControlLoop::reload_api(const AdminRequest& request) {
  if (request.method != "POST") return AdminResponse{405, "application/json", "{\"error\":\"use POST\"}\n"};
  ReloadOutcome outcome = reload_config("admin API");
  return AdminResponse{outcome.applied ? 200 : outcome.status, "application/json", outcome.to_json()};
}

void ControlLoop::unwatch_tls_files() {
  uv_timer_stop(&tls_debounce_);
  for (auto* watch : tls_watches_)
    uv_close(reinterpret_cast<uv_handle_t*>(watch), [](uv_handle_t* h) noexcept {
      delete reinterpret_cast<uv_fs_event_t*>(h);
    });
  tls_watches_.clear();
  tls_file_names_.clear();
}

}  // namespace sprayer::proxy

namespace sprayer::proxy {

void ControlLoop::apply_memory_budget(const conf::Config& config) {
  uint64_t budget = config.limits.memory_budget ? config.limits.memory_budget : default_memory_budget_here();
  if (budget == overload_.budget()) return;
  overload_.set_budget(budget);
  OverloadMarks marks = OverloadMarks::of(budget);
  constexpr double kMiB = 1024.0 * 1024.0;
  LOG_INFO("memory budget for buffers: %.1f MiB (%s); refusing new work above %.1f MiB, shedding above %.1f MiB",
           static_cast<double>(budget) / kMiB,
           config.limits.memory_budget ? "limits.memory_budget" : "half of the cgroup limit or of the machine's memory",
           static_cast<double>(marks.refuse) / kMiB, static_cast<double>(marks.shed) / kMiB);
}

}  // namespace sprayer::proxy
