// The status page's recent history: every few seconds the control thread reads the workers'
// counters and keeps, per server, the request rate, error rate and latency percentiles of
// the interval since the previous reading, plus a few process figures, in small rings.
// Pure apart from what it is given: the caller passes the time and the counters.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "proxy/worker_stats.h"

namespace sprayer::proxy {

inline constexpr uint64_t kSampleIntervalMs = 2000;
inline constexpr size_t kSampleCount = 150;  // five minutes at kSampleIntervalMs

// One server's interval. Percentiles are absent when no request finished in it.
struct ServerSample {
  double time = 0;                // Unix seconds
  double rate = 0;                // requests finished per second
  double error_ratio = 0;         // of those, 5xx or no response at all
  std::optional<double> p50, p99;  // seconds, long-polls excluded
  int64_t parked = 0;             // long-polls in flight at the reading
};

struct ProcessSample {
  double time = 0;
  int64_t connections = 0;                 // open client connections
  double resident_bytes = 0;
  std::optional<double> ownership_age;     // seconds since the source last answered
};

// The counters of one server row, summed over workers.
struct ServerCounters {
  uint64_t finished = 0;
  uint64_t errors = 0;
  uint64_t buckets[kLatencyBuckets + 1]{};  // non-cumulative, as in LatencyHistogram
  int64_t parked = 0;
};

ServerCounters read_server_counters(const std::vector<const WorkerStats*>& stats, size_t row);

// The q-quantile (0..1) of a non-cumulative bucket count over kLatencyBounds, interpolated
// linearly inside the bucket (as Prometheus' histogram_quantile); the +Inf bucket answers its
// lower bound. Absent when the counts are all zero.
std::optional<double> bucket_quantile(const uint64_t* buckets, double q);

class StatusSamples {
 public:
  struct Server {
    std::string id;
    size_t row;  // WorkerStats::server_row of its slot
  };
  // Reads the counters now; the first reading of a server only sets its baseline.
  void sample(double now, const std::vector<const WorkerStats*>& stats, const std::vector<Server>& servers,
              const ProcessSample& process);

  const std::deque<ServerSample>* server(const std::string& id) const;
  const std::deque<ProcessSample>& process() const { return process_; }

 private:
  struct History {
    double last_time = 0;
    ServerCounters last;
    std::deque<ServerSample> samples;
  };
  std::map<std::string, History> servers_;
  std::deque<ProcessSample> process_;
};

}  // namespace sprayer::proxy
