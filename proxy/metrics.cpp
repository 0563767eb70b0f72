// Counter families summed over workers; names follow Prometheus conventions.
#include "proxy/metrics.h"

#include <prometheus/metric_family.h>
#include <prometheus/text_serializer.h>

#include <sstream>

#include "proxy/worker.h"

namespace sprayer::proxy {
namespace {

using prometheus::MetricFamily;
using prometheus::MetricType;

template <typename Get>
double sum(const std::vector<std::unique_ptr<Worker>>& workers, Get get) {
  double total = 0;
  for (const auto& w : workers) total += static_cast<double>(get(w->stats()));
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
  std::vector<MetricFamily> out;
  auto counter = [&](const char* name, const char* help, auto get) {
    MetricFamily f = family(name, help, MetricType::Counter);
    add_value(f, sum(workers_, get));
    out.push_back(std::move(f));
  };
  auto gauge = [&](const char* name, const char* help, auto get) {
    MetricFamily f = family(name, help, MetricType::Gauge);
    add_value(f, sum(workers_, get));
    out.push_back(std::move(f));
  };
  counter("sprayer_downstream_connections_accepted_total", "Client connections accepted.",
          [](const WorkerStats& s) { return s.downstream_accepted.load(std::memory_order_relaxed); });
  gauge("sprayer_downstream_connections", "Open client connections.",
        [](const WorkerStats& s) { return s.downstream_open.load(std::memory_order_relaxed); });
  gauge("sprayer_upstream_connections", "Open connections to pool servers (active and idle).",
        [](const WorkerStats& s) { return s.upstream_open.load(std::memory_order_relaxed); });
  counter("sprayer_requests_total", "Requests received with a complete, valid head.",
          [](const WorkerStats& s) { return s.requests.load(std::memory_order_relaxed); });
  {
    MetricFamily f = family("sprayer_responses_total", "Responses sent to clients, by status class.", MetricType::Counter);
    static const char* classes[] = {"none", "1xx", "2xx", "3xx", "4xx", "5xx"};
    for (int c = 1; c < 6; ++c)
      add_value(f, sum(workers_, [c](const WorkerStats& s) { return s.responses[c].load(std::memory_order_relaxed); }),
                {{"code", classes[c]}});
    out.push_back(std::move(f));
  }
  counter("sprayer_upstream_connect_failures_total", "Connects to pool servers that failed or timed out.",
          [](const WorkerStats& s) { return s.upstream_connect_failures.load(std::memory_order_relaxed); });
  counter("sprayer_upstream_retries_total", "Requests sent again to another candidate or a fresh connection.",
          [](const WorkerStats& s) { return s.upstream_retries.load(std::memory_order_relaxed); });
  counter("sprayer_bad_requests_total", "Requests rejected as malformed or over a limit.",
          [](const WorkerStats& s) { return s.bad_requests.load(std::memory_order_relaxed); });
  counter("sprayer_timeouts_total", "Client or upstream timeouts.",
          [](const WorkerStats& s) { return s.timeouts.load(std::memory_order_relaxed); });
  counter("sprayer_downstream_received_bytes_total", "Bytes read from clients.",
          [](const WorkerStats& s) { return s.bytes_in.load(std::memory_order_relaxed); });
  counter("sprayer_downstream_sent_bytes_total", "Bytes written to clients.",
          [](const WorkerStats& s) { return s.bytes_out.load(std::memory_order_relaxed); });
  counter("sprayer_tls_handshakes_total", "TLS handshakes completed with clients.",
          [](const WorkerStats& s) { return s.tls_handshakes.load(std::memory_order_relaxed); });
  counter("sprayer_tls_handshake_failures_total", "TLS connections that failed (bad handshake, plain HTTP, alerts).",
          [](const WorkerStats& s) { return s.tls_failures.load(std::memory_order_relaxed); });
  counter("sprayer_upstream_tls_handshakes_total", "TLS handshakes completed with pool servers.",
          [](const WorkerStats& s) { return s.upstream_tls_handshakes.load(std::memory_order_relaxed); });
  counter("sprayer_upstream_tls_resumed_total", "TLS handshakes with pool servers that resumed a session.",
          [](const WorkerStats& s) { return s.upstream_tls_resumed.load(std::memory_order_relaxed); });
  counter("sprayer_upstream_tls_failures_total", "TLS handshakes with pool servers that failed (verification included).",
          [](const WorkerStats& s) { return s.upstream_tls_failures.load(std::memory_order_relaxed); });
  counter("sprayer_malformed_users_total", "Requests whose user field could not be decoded.",
          [](const WorkerStats& s) { return s.malformed_users.load(std::memory_order_relaxed); });
  {
    MetricFamily f = family("sprayer_routed_requests_total", "Requests routed, by route reason.", MetricType::Counter);
    static const char* reasons[] = {"owner", "takeover", "new_user", "no_user", "unavailable"};
    for (int r = 0; r < 5; ++r)
      add_value(f, sum(workers_, [r](const WorkerStats& s) { return s.routed[r].load(std::memory_order_relaxed); }),
                {{"reason", reasons[r]}});
    out.push_back(std::move(f));
  }
  counter("sprayer_accept_pauses_total", "Times accepting paused (connection limit or out of descriptors).",
          [](const WorkerStats& s) { return s.accept_paused.load(std::memory_order_relaxed); });
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
