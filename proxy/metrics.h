// Prometheus exposition: sums the workers' lock-free counters at scrape time.
#pragma once

#include <prometheus/collectable.h>

#include <memory>
#include <vector>

#include "proxy/runtime.h"

namespace sprayer::proxy {

class Worker;

class WorkerStatsCollector : public prometheus::Collectable {
 public:
  explicit WorkerStatsCollector(const std::vector<std::unique_ptr<Worker>>& workers) : workers_(workers) {}
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  const std::vector<std::unique_ptr<Worker>>& workers_;
};

// The text exposition format of every family the collectors give.
std::string render_metrics(const std::vector<const prometheus::Collectable*>& collectables);

}  // namespace sprayer::proxy
