// Interval rates and percentiles from cumulative worker counters (see status_samples.h).
#include "proxy/control/status_samples.h"

#include <algorithm>

namespace sprayer::proxy {

ServerCounters read_server_counters(const std::vector<const WorkerStats*>& stats, size_t row) {
  ServerCounters c;
  for (const WorkerStats* w : stats) {
    for (size_t cls = 0; cls < kStatusClasses; ++cls) {
      for (size_t r = 0; r < kRequestReasons; ++r) {
        uint64_t v = w->finished[row][cls][r].load(std::memory_order_relaxed);
        c.finished += v;
        if (cls == 0 || cls == 5) c.errors += v;
      }
    }
    for (size_t i = 0; i <= kLatencyBuckets; ++i)
      c.buckets[i] += w->server_seconds[row].buckets[i].load(std::memory_order_relaxed);
    c.parked += w->parked[row].load(std::memory_order_relaxed);
  }
  return c;
}

std::optional<double> bucket_quantile(const uint64_t* buckets, double q) {
  uint64_t total = 0;
  for (size_t i = 0; i <= kLatencyBuckets; ++i) total += buckets[i];
  if (total == 0) return std::nullopt;
  const double rank = q * static_cast<double>(total);
  uint64_t below = 0;
  for (size_t i = 0; i <= kLatencyBuckets; ++i) {
    if (buckets[i] == 0 || static_cast<double>(below + buckets[i]) < rank) {
      below += buckets[i];
      continue;
    }
    const double lower = i == 0 ? 0 : kLatencyBounds[i - 1];
    if (i == kLatencyBuckets) return lower;
    const double upper = kLatencyBounds[i];
    const double inside = (rank - static_cast<double>(below)) / static_cast<double>(buckets[i]);
    return lower + (upper - lower) * std::clamp(inside, 0.0, 1.0);
  }
  return kLatencyBounds[kLatencyBuckets - 1];
}

void StatusSamples::sample(double now, const std::vector<const WorkerStats*>& stats,
                           const std::vector<Server>& servers, const ProcessSample& process) {
  std::map<std::string, History> next;
  for (const Server& s : servers) {
    ServerCounters c = read_server_counters(stats, s.row);
    auto it = servers_.find(s.id);
    History h;
    if (it != servers_.end()) {
      h = std::move(it->second);
      const double dt = now - h.last_time;
      ServerSample out;
      out.time = now;
      out.parked = c.parked;
      // Counters only grow; a server whose row was reused by a reload starts again.
      if (dt > 0 && c.finished >= h.last.finished) {
        const uint64_t done = c.finished - h.last.finished;
        out.rate = static_cast<double>(done) / dt;
        out.error_ratio = done ? static_cast<double>(c.errors - h.last.errors) / static_cast<double>(done) : 0;
        uint64_t delta[kLatencyBuckets + 1];
        for (size_t i = 0; i <= kLatencyBuckets; ++i)
          delta[i] = c.buckets[i] >= h.last.buckets[i] ? c.buckets[i] - h.last.buckets[i] : 0;
        out.p50 = bucket_quantile(delta, 0.5);
        out.p99 = bucket_quantile(delta, 0.99);
      }
      h.samples.push_back(out);
      if (h.samples.size() > kSampleCount) h.samples.pop_front();
    }
    h.last = c;
    h.last_time = now;
    next[s.id] = std::move(h);
  }
  servers_ = std::move(next);  // servers a reload removed are forgotten
  process_.push_back(process);
  if (process_.size() > kSampleCount) process_.pop_front();
}

const std::deque<ServerSample>* StatusSamples::server(const std::string& id) const {
  auto it = servers_.find(id);
  return it == servers_.end() ? nullptr : &it->second.samples;
}

}  // namespace sprayer::proxy
