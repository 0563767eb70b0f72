// Health of sprayer itself, as /healthz reports it to keepalived: a pure decision over a few
// facts the control thread gathers, so that a stale standby never takes the virtual IP.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace sprayer::proxy {

struct SelfHealthInput {
  bool draining = false;           // SIGTERM received: the listeners are closing
  bool listeners_up = false;       // every worker has its listeners bound
  bool source_configured = false;  // ownership.source is not none
  bool snapshot_loaded = false;    // a snapshot is served (database or cache file)
  // Time since the source's last successful query; nullopt when it never had one since start
  // (a snapshot from the cache file only).
  std::optional<std::chrono::milliseconds> since_success;
  std::chrono::milliseconds max_staleness{0};  // 0 = no bound: any loaded snapshot will do
  std::size_t servers = 0;         // pool servers configured
  std::size_t usable_servers = 0;  // of those, up or draining (can serve at least their own users)
};

// What is wrong, the first that applies in this order.
enum class SelfHealthProblem : std::uint8_t {
  none,
  draining,
  listeners_down,
  no_snapshot,
  snapshot_stale,
  no_usable_server,
};
std::string_view to_string(SelfHealthProblem problem) noexcept;

struct SelfHealth {
  SelfHealthProblem problem = SelfHealthProblem::none;
  std::string reason;  // one line for the operator (and the keepalived log), no newline
  bool healthy() const noexcept { return problem == SelfHealthProblem::none; }
  int http_status() const noexcept { return healthy() ? 200 : 503; }
};

SelfHealth judge_self_health(const SelfHealthInput& in);

}  // namespace sprayer::proxy
