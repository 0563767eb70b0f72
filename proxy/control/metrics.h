// Prometheus exposition: sums the workers' lock-free counters at scrape time.
#pragma once

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "proxy/control/process_stats.h"
#include "proxy/control/status_samples.h"
#include "proxy/runtime.h"
#include "proxy/worker_stats.h"

namespace sprayer::proxy {

class Worker;

class WorkerStatsCollector : public prometheus::Collectable {
 public:
  // server_ids: the label for each server row of WorkerStats::finished, read at scrape.
  // long_poll_limit: timeouts.upstream_response in seconds, the last long-poll bucket shown.
  // listener_names: the `listener` label of each listener stats slot.
  WorkerStatsCollector(const std::vector<std::unique_ptr<Worker>>& workers,
                       std::function<std::vector<std::string>()> server_ids = {},
                       std::function<double()> long_poll_limit = {},
                       std::function<std::vector<std::string>()> listener_names = {})
      : workers_(workers),
        server_ids_(std::move(server_ids)),
        long_poll_limit_(std::move(long_poll_limit)),
        listener_names_(std::move(listener_names)) {}
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  const std::vector<std::unique_ptr<Worker>>& workers_;
  std::function<std::vector<std::string>()> server_ids_;
  std::function<double()> long_poll_limit_;
  std::function<std::vector<std::string>()> listener_names_;
};

// The sum of several workers' stats blocks, as families (what WorkerStatsCollector gives;
// separate so unit tests can feed stats blocks without threads).
// The long-poll histogram shows its bounds up to the first one at or above
// `long_poll_limit` seconds (0: all of them); longer ones are counted in +Inf only.
// Connection and TLS families carry a `listener` label from `listener_names` (by slot; past
// kStatListeners: "other"); without names they are one unlabelled total each.
std::vector<prometheus::MetricFamily> worker_families(const std::vector<const WorkerStats*>& stats,
                                                      const std::vector<std::string>& server_ids,
                                                      double long_poll_limit = 0,
                                                      const std::vector<std::string>& listener_names = {});

// What the control thread knows at scrape time: health, ownership, process.
struct ControlState {
  struct ServerRow {
    std::string id;
    std::string state;          // health::to_string(ServerState): up, down, draining, maintenance
    int availability = 0;
    uint64_t owned_users = 0;
    uint64_t ejections = 0;
    int64_t active_requests = 0;
    // For the status page.
    std::string address{};
    uint32_t weight = 1;
    std::string checks{};             // health::Liveness: checking, up, down
    std::string admin{};              // ready, drain, maintenance
    std::string reason{};             // of the last routing transition
    double since_seconds = 0;         // since that transition
    std::string last_failure{};       // the last failed check or passive failure ("none")
    std::optional<double> last_failure_seconds{};  // how long ago
    int64_t parked = 0;               // long-polls in flight
    uint64_t takeovers_in = 0;        // requests taken over from their unusable owner
    uint64_t takeovers_out = 0;       // requests of its users that went elsewhere
  };
  std::vector<ServerRow> servers;
  // Configured servers the servers query returned, with the pool's heartbeat verdict.
  struct PoolHeartbeat {
    std::string id;
    bool stale = false;                // heartbeat_at older than ownership.heartbeat_max_age
    std::optional<double> age_seconds; // absent: no readable heartbeat
  };
  std::vector<PoolHeartbeat> heartbeats;
  double uptime_seconds = 0;
  double start_time_seconds = 0;   // Unix time
  std::string version;
  bool source_configured = false;
  std::string source_state;        // affinity::to_string(SourceState)
  int64_t epoch = 0;
  uint64_t users = 0;
  uint64_t snapshot_bytes = 0;     // memory the snapshot being served holds
  std::optional<double> snapshot_age_seconds;  // since the last successful query
  bool stale = false;
  uint64_t source_errors = 0;
  uint64_t source_reconnects = 0;
  uint64_t full_loads = 0;
  uint64_t deltas_applied = 0;
  bool shutting_down = false;
  std::string source_last_error;
  uint64_t reloads_applied = 0;           // configuration reloads (SIGHUP, admin API)
  uint64_t reloads_refused = 0;
  bool last_reload_ok = true;             // no reload yet counts as fine
  double last_reload_success_seconds = 0;  // Unix time; the start until a reload succeeds
  std::optional<ProcessStats> process;    // process_* (absent without /proc)
  const StatusSamples* samples = nullptr;  // the status page's history (the control loop's)
  // admin.peer, the other member of the pair (absent: none configured).
  struct Peer {
    bool up = false;  // the last exchange worked (false before the first one ends)
    uint64_t exchanges_ok = 0;
    uint64_t exchanges_failed = 0;
  };
  std::optional<Peer> admin_peer;
  // The memory budget (proxy/overload.h).
  uint64_t memory_budget_bytes = 0;      // 0: unlimited
  uint64_t memory_accounted_bytes = 0;
  std::string overload_state = "normal";  // to_string(OverloadState)
  uint64_t overload_shed_connections = 0;
  uint64_t overload_refused_requests = 0;
  uint64_t memory_allocation_failures = 0;
  // For the status page only (the worker families export these).
  int64_t downstream_connections = 0;
  int64_t upstream_connections = 0;
};

std::vector<prometheus::MetricFamily> control_families(const ControlState& state);

class ControlStateCollector : public prometheus::Collectable {
 public:
  explicit ControlStateCollector(std::function<ControlState()> read) : read_(std::move(read)) {}
  std::vector<prometheus::MetricFamily> Collect() const override { return control_families(read_()); }

 private:
  std::function<ControlState()> read_;
};

// The text exposition format of every family the collectors give.
std::string render_metrics(const std::vector<const prometheus::Collectable*>& collectables);

}  // namespace sprayer::proxy
