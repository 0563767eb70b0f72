// The directory side of /metrics: connection, searches by result, cache size.
#include "proxy/control/directory_metrics.h"

namespace sprayer::proxy {

std::vector<prometheus::MetricFamily> DirectoryCollector::Collect() const {
  if (!client_) return {};
  const DirectoryStats& stats = client_->stats();
  std::vector<prometheus::MetricFamily> out;
  auto add = [&](const char* name, const char* help, prometheus::MetricType type, double value,
                 std::vector<prometheus::ClientMetric::Label> labels = {}) {
    if (out.empty() || out.back().name != name) {
      prometheus::MetricFamily f;
      f.name = name;
      f.help = help;
      f.type = type;
      out.push_back(std::move(f));
    }
    prometheus::ClientMetric m;
    m.label = std::move(labels);
    if (type == prometheus::MetricType::Counter) m.counter.value = value;
    else m.gauge.value = value;
    out.back().metric.push_back(std::move(m));
  };
  auto load = [](const std::atomic<uint64_t>& c) { return static_cast<double>(c.load(std::memory_order_relaxed)); };
  using prometheus::MetricType;
  add("sprayer_directory_up", "1 while the directory is connected and bound.", MetricType::Gauge,
      stats.up.load(std::memory_order_relaxed) ? 1 : 0);
  const char* searches = "Directory searches by result: found (one entry), not_found (none, or several), error, "
                         "timeout (abandoned after directory.timeout), dropped (not sent: queue full).";
  add("sprayer_directory_searches_total", searches, MetricType::Counter, load(stats.found), {{"result", "found"}});
  add("sprayer_directory_searches_total", searches, MetricType::Counter, load(stats.not_found), {{"result", "not_found"}});
  add("sprayer_directory_searches_total", searches, MetricType::Counter, load(stats.errors), {{"result", "error"}});
  add("sprayer_directory_searches_total", searches, MetricType::Counter, load(stats.timeouts), {{"result", "timeout"}});
  add("sprayer_directory_searches_total", searches, MetricType::Counter, load(stats.dropped), {{"result", "dropped"}});
  add("sprayer_directory_connect_failures_total", "Connects or binds to the directory that failed.",
      MetricType::Counter, load(stats.connects_failed));
  add("sprayer_directory_cache_entries", "Names in the directory cache (answers and negative answers).",
      MetricType::Gauge, static_cast<double>(client_->cache().size()));
  return out;
}

}  // namespace sprayer::proxy
