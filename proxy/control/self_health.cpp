// The /healthz decision. Ordered so that the reason names the most basic problem first.
#include "proxy/control/self_health.h"

namespace sprayer::proxy {
namespace {

std::string ms(std::chrono::milliseconds d) { return std::to_string(d.count()) + " ms"; }

}  // namespace

std::string_view to_string(SelfHealthProblem problem) noexcept {
  switch (problem) {
    case SelfHealthProblem::none: return "ok";
    case SelfHealthProblem::draining: return "draining";
    case SelfHealthProblem::listeners_down: return "listeners_down";
    case SelfHealthProblem::no_snapshot: return "no_snapshot";
    case SelfHealthProblem::snapshot_stale: return "snapshot_stale";
    case SelfHealthProblem::no_usable_server: return "no_usable_server";
  }
  return "unknown";
}

SelfHealth judge_self_health(const SelfHealthInput& in) {
  SelfHealth out;
  auto fail = [&out](SelfHealthProblem p, std::string why) {
    out.problem = p;
    out.reason = std::string(to_string(p)) + ": " + why;
    return out;
  };
  if (in.draining) return fail(SelfHealthProblem::draining, "stop signal received, listeners closing");
  if (!in.listeners_up) return fail(SelfHealthProblem::listeners_down, "listeners are not all bound");
  if (in.source_configured) {
    if (!in.snapshot_loaded)
      return fail(SelfHealthProblem::no_snapshot, "no ownership snapshot yet (database and cache)");
    if (in.max_staleness.count() > 0) {
      // A snapshot only from the cache file, or one the database has not confirmed for too
      // long, may route users to servers that lost them: such an instance must not take the
      // virtual IP from a peer that is current.
      if (!in.since_success)
        return fail(SelfHealthProblem::snapshot_stale,
                    "snapshot from the cache file; the database has not answered since start");
      if (*in.since_success > in.max_staleness)
        return fail(SelfHealthProblem::snapshot_stale, "last successful database query " + ms(*in.since_success) +
                                                           " ago (max_staleness " + ms(in.max_staleness) + ")");
    }
  }
  if (in.usable_servers == 0)
    return fail(SelfHealthProblem::no_usable_server,
                in.servers == 0 ? std::string("no pool server configured")
                                : "none of " + std::to_string(in.servers) + " pool servers is up or draining");
  out.reason = "ok";
  return out;
}

}  // namespace sprayer::proxy
