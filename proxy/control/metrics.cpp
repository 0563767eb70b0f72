// Counter families summed over workers; names follow Prometheus conventions.
#include "proxy/control/metrics.h"

#include <prometheus/metric_family.h>
#include <prometheus/text_serializer.h>

#include <limits>
#include <sstream>

#include "proxy/worker.h"

namespace sprayer::proxy {
namespace {

using prometheus::MetricFamily;
using prometheus::MetricType;

template <typename Get>
double sum(const std::vector<const WorkerStats*>& stats, Get get) {
  double total = 0;
  for (const WorkerStats* w : stats) total += static_cast<double>(get(*w));
  return total;
}

MetricFamily family(std::string name, std::string help, MetricType type) {
  MetricFamily f;
  f.name = std::move(name);
  f.help = std::move(help);
  f.type = type;
  return f;
}

void add_value(MetricFamily& f, double value, std::vector<prometheus::ClientMetric::Label> labels = {}) {
  prometheus::ClientMetric m;
  m.label = std::move(labels);
  if (f.type == MetricType::Counter)
    m.counter.value = value;
  else
    m.gauge.value = value;
  f.metric.push_back(std::move(m));
}

}  // namespace

std::vector<MetricFamily> WorkerStatsCollector::Collect() const {
  std::vector<const WorkerStats*> stats;
  for (const auto& w : workers_) stats.push_back(&w->stats());
  return worker_families(stats, server_ids_ ? server_ids_() : std::vector<std::string>{},
                         long_poll_limit_ ? long_poll_limit_() : 0,
                         listener_names_ ? listener_names_() : std::vector<std::string>{});
}

std::vector<MetricFamily> worker_families(const std::vector<const WorkerStats*>& workers,
                                          const std::vector<std::string>& server_ids, double long_poll_limit,
                                          const std::vector<std::string>& listener_names) {
  std::vector<MetricFamily> out;
  // One series per listener that has a name (and "other" past kStatListeners, when counted).
  auto per_listener = [&](const char* name, const char* help, MetricType type, auto get_total, auto get_row) {
    MetricFamily f = family(name, help, type);
    if (listener_names.empty()) {
      add_value(f, sum(workers, get_total));
    } else {
      for (size_t row = 0; row < kStatListenerRows; ++row) {
        double v = sum(workers, [&](const WorkerStats& s) { return get_row(s, row); });
        if (row < kStatListeners && row < listener_names.size())
          add_value(f, v, {{"listener", listener_names[row]}});
        else if (row == kStatListeners && v != 0)
          add_value(f, v, {{"listener", "other"}});
      }
    }
    out.push_back(std::move(f));
  };
  auto relaxed = [](const auto& c) { return c.load(std::memory_order_relaxed); };
  auto counter = [&](const char* name, const char* help, auto get) {
    MetricFamily f = family(name, help, MetricType::Counter);
    add_value(f, sum(workers, get));
    out.push_back(std::move(f));
  };
  auto gauge = [&](const char* name, const char* help, auto get) {
    MetricFamily f = family(name, help, MetricType::Gauge);
    add_value(f, sum(workers, get));
    out.push_back(std::move(f));
  };
  per_listener("sprayer_downstream_connections_accepted_total", "Client connections accepted, by listener.",
               MetricType::Counter, [&](const WorkerStats& s) { return relaxed(s.downstream_accepted); },
               [&](const WorkerStats& s, size_t row) { return relaxed(s.accepted_by[row]); });
  per_listener("sprayer_downstream_connections", "Open client connections, by listener.", MetricType::Gauge,
               [&](const WorkerStats& s) { return relaxed(s.downstream_open); },
               [&](const WorkerStats& s, size_t row) { return relaxed(s.open_by[row]); });
  gauge("sprayer_upstream_connections", "Open connections to pool servers (active and idle).",
        [](const WorkerStats& s) { return s.upstream_open.load(std::memory_order_relaxed); });
  counter("sprayer_requests_total", "Requests received with a complete, valid head.",
          [](const WorkerStats& s) { return s.requests.load(std::memory_order_relaxed); });
  {
    MetricFamily f = family("sprayer_responses_total", "Responses sent to clients, by status class.", MetricType::Counter);
    static const char* classes[] = {"none", "1xx", "2xx", "3xx", "4xx", "5xx"};
    for (int c = 1; c < 6; ++c)
      add_value(f, sum(workers, [c](const WorkerStats& s) { return s.responses[c].load(std::memory_order_relaxed); }),
                {{"code", classes[c]}});
    out.push_back(std::move(f));
  }
  counter("sprayer_upstream_connect_failures_total", "Connects to pool servers that failed or timed out.",
          [](const WorkerStats& s) { return s.upstream_connect_failures.load(std::memory_order_relaxed); });
  counter("sprayer_upstream_retries_total", "Requests sent again to another candidate or a fresh connection.",
          [](const WorkerStats& s) { return s.upstream_retries.load(std::memory_order_relaxed); });
  {
    // Every configured server, zeros included, so that rate() sees the first one.
    MetricFamily f = family("sprayer_early_resends_total",
                            "Requests safe to repeat (Ping, GET, HEAD, OPTIONS) moved off a server that answered "
                            "nothing for health.stall_after, before the health verdict, by that server.",
                            MetricType::Counter);
    for (size_t row = 0; row < server_ids.size() && row < kStatServers; ++row)
      if (!server_ids[row].empty())
        add_value(f, sum(workers, [row](const WorkerStats& s) { return s.early_resends[row].load(std::memory_order_relaxed); }),
                  {{"server", server_ids[row]}});
    double other = sum(workers, [](const WorkerStats& s) { return s.early_resends[kStatServers].load(std::memory_order_relaxed); });
    if (other > 0) add_value(f, other, {{"server", "other"}});
    out.push_back(std::move(f));
  }
  counter("sprayer_bad_requests_total", "Requests rejected as malformed or over a limit.",
          [](const WorkerStats& s) { return s.bad_requests.load(std::memory_order_relaxed); });
  {
    MetricFamily f = family("sprayer_timeouts_total", "Timeouts that fired, by side (client, upstream) and timer.",
                            MetricType::Counter);
    static const char* labels[kTimeoutKinds][2] = {
        {"client", "header"},   {"client", "idle"},     {"client", "body"}, {"client", "send"},
        {"upstream", "connect"}, {"upstream", "response"}, {"upstream", "idle"}};
    for (size_t k = 0; k < kTimeoutKinds; ++k)
      add_value(f, sum(workers, [k](const WorkerStats& s) { return s.timeouts_by[k].load(std::memory_order_relaxed); }),
                {{"side", labels[k][0]}, {"kind", labels[k][1]}});
    out.push_back(std::move(f));
  }
  counter("sprayer_downstream_received_bytes_total", "Bytes read from clients.",
          [](const WorkerStats& s) { return s.bytes_in.load(std::memory_order_relaxed); });
  counter("sprayer_downstream_sent_bytes_total", "Bytes written to clients.",
          [](const WorkerStats& s) { return s.bytes_out.load(std::memory_order_relaxed); });
  per_listener("sprayer_tls_handshakes_total", "TLS handshakes completed with clients, by listener.",
               MetricType::Counter, [&](const WorkerStats& s) { return relaxed(s.tls_handshakes); },
               [&](const WorkerStats& s, size_t row) { return relaxed(s.tls_handshakes_by[row]); });
  per_listener("sprayer_tls_handshake_failures_total",
               "TLS connections that failed (bad handshake, plain HTTP, alerts), by listener.", MetricType::Counter,
               [&](const WorkerStats& s) { return relaxed(s.tls_failures); },
               [&](const WorkerStats& s, size_t row) { return relaxed(s.tls_failures_by[row]); });
  per_listener("sprayer_tls_own_record_layer_total",
               "TLS 1.3 client connections that left OpenSSL for sprayer's record layer after the handshake, by "
               "listener.",
               MetricType::Counter, [&](const WorkerStats& s) { return relaxed(s.tls_own_records); },
               [&](const WorkerStats& s, size_t row) { return relaxed(s.tls_own_records_by[row]); });
  counter("sprayer_upstream_tls_handshakes_total", "TLS handshakes completed with pool servers.",
          [](const WorkerStats& s) { return s.upstream_tls_handshakes.load(std::memory_order_relaxed); });
  counter("sprayer_upstream_tls_resumed_total", "TLS handshakes with pool servers that resumed a session.",
          [](const WorkerStats& s) { return s.upstream_tls_resumed.load(std::memory_order_relaxed); });
  counter("sprayer_upstream_tls_failures_total", "TLS handshakes with pool servers that failed (verification included).",
          [](const WorkerStats& s) { return s.upstream_tls_failures.load(std::memory_order_relaxed); });
  counter("sprayer_malformed_users_total", "Requests whose user field could not be decoded.",
          [](const WorkerStats& s) { return s.malformed_users.load(std::memory_order_relaxed); });
  counter("sprayer_user_key_disagreements_total",
          "Requests whose query user and Basic login normalised to different keys (the login was used).",
          [](const WorkerStats& s) { return s.user_key_disagreements.load(std::memory_order_relaxed); });
  {
    // Directory lookups as the requests saw them (the directory's own side: directory_client.cpp).
    MetricFamily f = family("sprayer_directory_lookups_total",
                            "Requests whose user was looked up in the directory cache, by result.", MetricType::Counter);
    add_value(f, sum(workers, [](const WorkerStats& s) { return s.directory_hits.load(std::memory_order_relaxed); }),
              {{"result", "hit"}});
    add_value(f, sum(workers, [](const WorkerStats& s) { return s.directory_misses.load(std::memory_order_relaxed); }),
              {{"result", "miss"}});
    out.push_back(std::move(f));
  }
  counter("sprayer_directory_waits_total", "Requests that waited for a directory answer (at most directory.wait).",
          [](const WorkerStats& s) { return s.directory_waits.load(std::memory_order_relaxed); });
  counter("sprayer_directory_wait_timeouts_total",
          "Requests that waited directory.wait without an answer and went by the normalised name.",
          [](const WorkerStats& s) { return s.directory_wait_timeouts.load(std::memory_order_relaxed); });
  counter("sprayer_directory_degraded_total",
          "Requests for an unresolved name that went by the normalised name at once: the directory was down.",
          [](const WorkerStats& s) { return s.directory_degraded.load(std::memory_order_relaxed); });
  {
    MetricFamily f = family("sprayer_routed_requests_total", "Requests routed, by route reason.", MetricType::Counter);
    static const char* reasons[] = {"owner", "takeover", "new_user", "no_user", "unavailable"};
    for (int r = 0; r < 5; ++r)
      add_value(f, sum(workers, [r](const WorkerStats& s) { return s.routed[r].load(std::memory_order_relaxed); }),
                {{"reason", reasons[r]}});
    out.push_back(std::move(f));
  }
  counter("sprayer_accept_pauses_total", "Times accepting paused (connection limit or out of descriptors).",
          [](const WorkerStats& s) { return s.accept_paused.load(std::memory_order_relaxed); });
  counter("sprayer_upstream_received_bytes_total", "Bytes read from pool servers.",
          [](const WorkerStats& s) { return s.upstream_bytes_in.load(std::memory_order_relaxed); });
  counter("sprayer_upstream_sent_bytes_total", "Bytes written to pool servers.",
          [](const WorkerStats& s) { return s.upstream_bytes_out.load(std::memory_order_relaxed); });
  counter("sprayer_access_log_dropped_lines_total", "Access log lines dropped because the writer fell behind.",
          [](const WorkerStats& s) { return s.access_log_dropped.load(std::memory_order_relaxed); });
  {
    // Only combinations that happened: servers x classes x reasons would be mostly zeros.
    MetricFamily f = family("sprayer_requests_completed_total",
                            "Requests finished, by the server of the last attempt, status class and route reason.",
                            MetricType::Counter);
    static const char* classes[] = {"none", "1xx", "2xx", "3xx", "4xx", "5xx"};
    static const char* reasons[] = {"owner", "takeover", "new_user", "no_user", "unavailable", "retry", "local"};
    static_assert(sizeof(reasons) / sizeof(reasons[0]) == kRequestReasons);
    for (size_t row = 0; row < kStatRows; ++row) {
      for (size_t c = 0; c < kStatusClasses; ++c) {
        for (size_t r = 0; r < kRequestReasons; ++r) {
          double v = sum(workers, [&](const WorkerStats& s) { return s.finished[row][c][r].load(std::memory_order_relaxed); });
          if (v == 0) continue;
          std::string server;
          if (row == kStatNoServer)
            server = "none";
          else if (row < kStatServers && row < server_ids.size())
            server = server_ids[row];
          else
            server = "other";
          add_value(f, v, {{"server", server}, {"code", classes[c]}, {"reason", reasons[r]}});
        }
      }
    }
    out.push_back(std::move(f));
  }
  auto histogram = [&](const char* name, const char* help, const LatencyHistogram WorkerStats::*member) {
    MetricFamily f = family(name, help, MetricType::Histogram);
    prometheus::ClientMetric m;
    uint64_t cumulative = 0;
    for (size_t i = 0; i <= kLatencyBuckets; ++i) {
      for (const WorkerStats* w : workers) cumulative += (w->*member).buckets[i].load(std::memory_order_relaxed);
      prometheus::ClientMetric::Bucket b;
      b.cumulative_count = cumulative;
      b.upper_bound = i < kLatencyBuckets ? kLatencyBounds[i] : std::numeric_limits<double>::infinity();
      m.histogram.bucket.push_back(b);
    }
    uint64_t sum_ns = 0;
    for (const WorkerStats* w : workers) sum_ns += (w->*member).sum_ns.load(std::memory_order_relaxed);
    // The count is the +Inf bucket, so the two always agree even while workers write.
    m.histogram.sample_count = cumulative;
    m.histogram.sample_sum = static_cast<double>(sum_ns) / 1e9;
    f.metric.push_back(std::move(m));
    out.push_back(std::move(f));
  };
  histogram("sprayer_request_duration_seconds", "Whole request: head received to response queued to the client.",
            &WorkerStats::request_seconds);
  histogram("sprayer_upstream_connect_duration_seconds", "Opening a new connection to a pool server.",
            &WorkerStats::connect_seconds);
  histogram("sprayer_upstream_first_byte_seconds", "Request sent to a pool server until its response head.",
            &WorkerStats::ttfb_seconds);
  {
    MetricFamily f = family("sprayer_long_poll_duration_seconds",
                            "Long-polls (ActiveSync Ping): head received to response queued; not in "
                            "sprayer_request_duration_seconds.",
                            MetricType::Histogram);
    prometheus::ClientMetric m;
    uint64_t cumulative = 0;
    bool shown_last = false;
    for (size_t i = 0; i <= kLongPollBuckets; ++i) {
      for (const WorkerStats* w : workers) cumulative += w->long_poll_seconds.buckets[i].load(std::memory_order_relaxed);
      if (i == kLongPollBuckets || !shown_last) {
        prometheus::ClientMetric::Bucket b;
        b.cumulative_count = cumulative;
        b.upper_bound = i < kLongPollBuckets ? kLongPollBounds[i] : std::numeric_limits<double>::infinity();
        m.histogram.bucket.push_back(b);
        if (i < kLongPollBuckets && long_poll_limit > 0 && kLongPollBounds[i] >= long_poll_limit) shown_last = true;
      }
    }
    uint64_t sum_ns = 0;
    for (const WorkerStats* w : workers) sum_ns += w->long_poll_seconds.sum_ns.load(std::memory_order_relaxed);
    m.histogram.sample_count = cumulative;
    m.histogram.sample_sum = static_cast<double>(sum_ns) / 1e9;
    f.metric.push_back(std::move(m));
    out.push_back(std::move(f));
  }
  return out;
}

std::vector<MetricFamily> control_families(const ControlState& st) {
  std::vector<MetricFamily> out;
  auto single = [&](const char* name, const char* help, MetricType type, double v,
                    std::vector<prometheus::ClientMetric::Label> labels = {}) {
    MetricFamily f = family(name, help, type);
    add_value(f, v, std::move(labels));
    out.push_back(std::move(f));
  };
  // Named and typed as the Prometheus client libraries export them, so stock dashboards work.
  single("process_start_time_seconds", "Start time of the process since unix epoch in seconds.", MetricType::Gauge,
         st.start_time_seconds);
  if (st.process) {
    single("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", MetricType::Counter,
           st.process->cpu_seconds);
    single("process_resident_memory_bytes", "Resident memory size in bytes.", MetricType::Gauge,
           st.process->resident_bytes);
    single("process_virtual_memory_bytes", "Virtual memory size in bytes.", MetricType::Gauge,
           st.process->virtual_bytes);
    single("process_open_fds", "Number of open file descriptors.", MetricType::Gauge, st.process->open_fds);
    if (st.process->max_fds > 0)
      single("process_max_fds", "Maximum number of open file descriptors.", MetricType::Gauge, st.process->max_fds);
  }
  single("sprayer_build_info", "Always 1; the version as a label.", MetricType::Gauge, 1, {{"version", st.version}});
  single("sprayer_uptime_seconds", "Seconds since this sprayer started.", MetricType::Gauge, st.uptime_seconds);
  single("sprayer_start_time_seconds", "Unix time this sprayer started.", MetricType::Gauge, st.start_time_seconds);
  single("sprayer_shutting_down", "1 while a stop signal is draining connections.", MetricType::Gauge,
         st.shutting_down ? 1 : 0);
  single("sprayer_memory_budget_bytes", "Buffer memory this process may hold (limits.memory_budget); 0 = unlimited.",
         MetricType::Gauge, static_cast<double>(st.memory_budget_bytes));
  single("sprayer_memory_buffered_bytes",
         "Buffer memory held now (pool chunks, queued writes), as charged to the memory budget.", MetricType::Gauge,
         static_cast<double>(st.memory_accounted_bytes));
  {
    MetricFamily f = family("sprayer_overload_state", "1 for the overload state the memory budget is in.",
                            MetricType::Gauge);
    for (const char* state : {"normal", "refusing", "shedding"})
      add_value(f, st.overload_state == state ? 1 : 0, {{"state", state}});
    out.push_back(std::move(f));
  }
  single("sprayer_overload_shed_connections_total",
         "Client connections closed because buffer memory passed the budget's shed mark.", MetricType::Counter,
         static_cast<double>(st.overload_shed_connections));
  single("sprayer_overload_refused_requests_total",
         "Requests answered 503 (Retry-After) because buffer memory passed the budget's refuse mark.",
         MetricType::Counter, static_cast<double>(st.overload_refused_requests));
  single("sprayer_memory_allocation_failures_total",
         "Buffer allocations refused (budget spent or the system out of memory); each closes its connection.",
         MetricType::Counter, static_cast<double>(st.memory_allocation_failures));
  {
    MetricFamily f = family("sprayer_config_reloads_total",
                            "Configuration reloads (SIGHUP, admin API) by result: applied or refused.",
                            MetricType::Counter);
    add_value(f, static_cast<double>(st.reloads_applied), {{"result", "applied"}});
    add_value(f, static_cast<double>(st.reloads_refused), {{"result", "refused"}});
    out.push_back(std::move(f));
  }
  single("sprayer_config_last_reload_successful",
         "0 if the last reload was refused (the running configuration is not the file's), else 1.",
         MetricType::Gauge, st.last_reload_ok ? 1 : 0);
  single("sprayer_config_last_reload_success_timestamp_seconds",
         "Unix time of the last applied reload (the start time before any).", MetricType::Gauge,
         st.last_reload_success_seconds);

  if (st.admin_peer) {
    single("sprayer_admin_peer_up", "1 if the last admin state exchange with admin.peer worked, else 0.",
           MetricType::Gauge, st.admin_peer->up ? 1 : 0);
    MetricFamily f = family("sprayer_admin_peer_exchanges_total",
                            "Admin state exchanges with admin.peer, by result: ok or failed.", MetricType::Counter);
    add_value(f, static_cast<double>(st.admin_peer->exchanges_ok), {{"result", "ok"}});
    add_value(f, static_cast<double>(st.admin_peer->exchanges_failed), {{"result", "failed"}});
    out.push_back(std::move(f));
  }

  auto per_server = [&](const char* name, const char* help, MetricType type, auto get) {
    MetricFamily f = family(name, help, type);
    for (const auto& s : st.servers) add_value(f, static_cast<double>(get(s)), {{"server", s.id}});
    out.push_back(std::move(f));
  };
  per_server("sprayer_server_up", "1 if the server takes traffic (up or draining), 0 if down or in maintenance.",
             MetricType::Gauge,
             [](const ControlState::ServerRow& s) { return s.state == "up" || s.state == "draining" ? 1 : 0; });
  {
    MetricFamily f = family("sprayer_server_state", "The server's routing state: 1 for the current one.",
                            MetricType::Gauge);
    for (const auto& s : st.servers)
      for (const char* state : {"up", "down", "draining", "maintenance"})
        add_value(f, s.state == state ? 1 : 0, {{"server", s.id}, {"state", state}});
    out.push_back(std::move(f));
  }
  per_server("sprayer_server_availability", "Traveler availability index (100 best, negative = constrained).",
             MetricType::Gauge, [](const ControlState::ServerRow& s) { return s.availability; });
  per_server("sprayer_server_owned_users", "Users the ownership snapshot gives to the server.", MetricType::Gauge,
             [](const ControlState::ServerRow& s) { return s.owned_users; });
  per_server("sprayer_server_ejections_total", "Times passive failures took the server out before a check did.",
             MetricType::Counter, [](const ControlState::ServerRow& s) { return s.ejections; });
  per_server("sprayer_server_active_requests", "Requests in flight to the server (sampled every 100 ms).",
             MetricType::Gauge, [](const ControlState::ServerRow& s) { return s.active_requests; });
  {
    MetricFamily stale = family("sprayer_server_heartbeat_stale",
                                "1 if the pool's heartbeat for the server is older than ownership.heartbeat_max_age "
                                "(no new users).",
                                MetricType::Gauge);
    MetricFamily age = family("sprayer_server_heartbeat_age_seconds",
                              "Seconds since the server's last heartbeat in the pool table (at the last read).",
                              MetricType::Gauge);
    for (const auto& h : st.heartbeats) {
      add_value(stale, h.stale ? 1 : 0, {{"server", h.id}});
      if (h.age_seconds) add_value(age, *h.age_seconds, {{"server", h.id}});
    }
    if (!st.heartbeats.empty()) out.push_back(std::move(stale));  // no servers query: no family
    if (!age.metric.empty()) out.push_back(std::move(age));
  }

  single("sprayer_ownership_source_configured", "1 if an ownership source (SQLite, PostgreSQL, MariaDB or ODBC) is configured.",
         MetricType::Gauge, st.source_configured ? 1 : 0);
  {
    MetricFamily f = family("sprayer_ownership_source_state", "The ownership source's state: 1 for the current one.",
                            MetricType::Gauge);
    for (const char* state : {"connecting", "ok", "degraded", "from_cache", "none"})
      add_value(f, st.source_state == state ? 1 : 0, {{"state", state}});
    out.push_back(std::move(f));
  }
  single("sprayer_ownership_epoch", "Epoch (pool change number) of the snapshot being served.", MetricType::Gauge,
         static_cast<double>(st.epoch));
  single("sprayer_ownership_users", "Users with an owner in the snapshot being served.", MetricType::Gauge,
         static_cast<double>(st.users));
  single("sprayer_ownership_snapshot_bytes", "Memory held by the ownership snapshot being served.",
         MetricType::Gauge, static_cast<double>(st.snapshot_bytes));
  if (st.snapshot_age_seconds)
    single("sprayer_ownership_snapshot_age_seconds", "Seconds since the ownership source last answered.",
           MetricType::Gauge, *st.snapshot_age_seconds);
  single("sprayer_ownership_stale", "1 if the source has not answered within ownership.stale_after.",
         MetricType::Gauge, st.stale ? 1 : 0);
  single("sprayer_ownership_source_errors_total", "Failed ownership queries and connections.", MetricType::Counter,
         static_cast<double>(st.source_errors));
  single("sprayer_ownership_source_reconnects_total", "Reconnects to the ownership database.", MetricType::Counter,
         static_cast<double>(st.source_reconnects));
  single("sprayer_ownership_full_loads_total", "Full loads of the ownership table.", MetricType::Counter,
         static_cast<double>(st.full_loads));
  single("sprayer_ownership_deltas_applied_total", "Ownership deltas applied.", MetricType::Counter,
         static_cast<double>(st.deltas_applied));
  return out;
}

std::string render_metrics(const std::vector<const prometheus::Collectable*>& collectables) {
  std::vector<MetricFamily> families;
  for (const auto* c : collectables) {
    auto f = c->Collect();
    families.insert(families.end(), std::make_move_iterator(f.begin()), std::make_move_iterator(f.end()));
  }
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, families);
  return out.str();
}

}  // namespace sprayer::proxy
