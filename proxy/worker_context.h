// What the data path on one worker loop uses of its worker, and nothing more: the loop (its
// clock), the buffers, the stats, the current runtime and route state, the user extractor,
// the upstream pools, the passive health reports, the directory waiters and the access log.
// Exchange, UpstreamPool, UpstreamConnection and DirectoryWaiters take this instead of the
// Worker, so a unit test builds one on a private loop without a thread, a listener or a mailbox.
#pragma once

#include <uv.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "affinity/extract.h"
#include "proxy/access_log.h"
#include "proxy/buffer_pool.h"
#include "proxy/health_events.h"
#include "proxy/route_state.h"
#include "proxy/runtime.h"
#include "proxy/worker_stats.h"

namespace sprayer::proxy {

class DirectoryWaiters;
class DownstreamConnection;
class UpstreamPool;

struct WorkerContext {
  uv_loop_t* loop;
  BufferPool& buffers;
  WorkerStats& stats;
  AccessLogBuffer& access_log;
  // The worker's own pointers: a reload swaps them at a loop boundary, and every reader sees
  // the current one at its next step.
  const std::shared_ptr<const Runtime>& runtime_ptr;
  const std::shared_ptr<const RouteState>& route_state_ptr;
  const affinity::Extractor& extractor;
  PassiveReporter& passive;
  DirectoryWaiters& directory_waiters;
  std::vector<std::unique_ptr<UpstreamPool>>& pools;  // by server slot
  const bool& draining;
  uint64_t& spread;
  std::vector<affinity::Header>& header_scratch;  // one request's header view, reused

  const Runtime& runtime() const { return *runtime_ptr; }
  const conf::Config& config() const { return *runtime_ptr->config; }
  const RouteState& route_state() const { return *route_state_ptr; }
  UpstreamPool& upstream_pool(size_t slot) const { return *pools[slot]; }
  uint64_t next_spread() { return spread++; }
};

// Who keeps a worker's client connections (the Worker: counts, limits, drain; a test's own).
class DownstreamRegistry {
 public:
  virtual void on_connection_opened(DownstreamConnection* connection) = 0;
  virtual void on_connection_closed(DownstreamConnection* connection) = 0;

 protected:
  ~DownstreamRegistry() = default;
};

}  // namespace sprayer::proxy
