// Early re-send on a hung server: which requests may go, where, and the move itself.
#include "proxy/early_resend.h"

#include <uv.h>

#include "proxy/downstream_connection.h"
#include "proxy/exchange.h"
#include "proxy/log.h"
#include "proxy/upstream_connection.h"
#include "proxy/upstream_pool.h"
#include "proxy/worker.h"

namespace sprayer::proxy {
namespace {

// The server's routing state in `state`, by slot; nullopt for a server the state does not know.
std::optional<affinity::ServerState> state_of(const RouteState& state, uint32_t slot) {
  for (size_t i = 0; i < state.slots.size(); ++i)
    if (state.slots[i] == slot) return state.servers[i].state;
  return std::nullopt;
}

}  // namespace

bool safe_to_resend(std::string_view method, bool long_poll) {
  if (long_poll) return true;
  // Methods are case-sensitive in HTTP; llhttp gives them upper case.
  return method == "GET" || method == "HEAD" || method == "OPTIONS";
}

std::vector<uint32_t> takeover_slots(const RouteState& state, std::string_view user_key,
                                     std::optional<uint64_t> key_hash, uint64_t spread, uint32_t down_slot) {
  std::vector<affinity::ServerView> servers(state.servers.begin(), state.servers.end());
  for (size_t i = 0; i < servers.size(); ++i)
    if (state.slots[i] == down_slot) servers[i].state = affinity::ServerState::down;
  // The owner lookup of route_user, over the servers as they would be.
  std::optional<uint16_t> owner;
  if (key_hash)
    if (auto found = state.snapshot->find(user_key, *key_hash)) owner = state.owner_map.to_view(found->server);
  affinity::RouteDecision decision = affinity::route(key_hash, owner, servers, spread);
  std::vector<uint32_t> slots;
  for (uint16_t index : decision.candidates)
    if (state.slots[index] != down_slot) slots.push_back(state.slots[index]);
  return slots;
}

size_t resend_early(Worker& worker, UpstreamPool& pool, uint64_t stall_ms) {
  const uint32_t slot = static_cast<uint32_t>(pool.slot());
  auto routing = state_of(worker.context().route_state(), slot);
  // A server already down had its requests ended (UpstreamPool::fail_active); one in
  // maintenance only finishes what it has.
  if (!routing || (*routing != affinity::ServerState::up && *routing != affinity::ServerState::draining)) return 0;
  // The evidence: a request the server should answer at once has had nothing back for
  // stall_after. Parked Pings alone are not: a quiet, healthy server holds them for minutes.
  const uint64_t sent_before = uv_hrtime() - stall_ms * 1000000u;
  bool evidence = false;
  std::vector<UpstreamConnection*> movable;
  for (UpstreamConnection* up : pool.active()) {
    const Exchange* exchange = up->exchange();
    if (!exchange) continue;
    if (!exchange->long_poll() && exchange->awaits_first_byte(sent_before)) evidence = true;
    if (exchange->early_resend_ready()) movable.push_back(up);
  }
  if (!evidence || movable.empty()) return 0;
  size_t moved = 0;
  for (UpstreamConnection* up : movable) {
    // Each move closes its own connection only; re-check in case an earlier one changed this one.
    Exchange* exchange = up->exchange();
    if (!exchange || !pool.active().count(up) || !exchange->early_resend_ready()) continue;
    std::vector<uint32_t> candidates = takeover_slots(
        worker.context().route_state(), exchange->user_key(),
        exchange->user_found() ? std::optional<uint64_t>(exchange->key_hash()) : std::nullopt, worker.context().next_spread(),
        slot);
    if (candidates.empty()) continue;  // nowhere else to go: wait for the verdict
    exchange->resend_early(std::move(candidates));
    ++moved;
  }
  if (moved > 0) {
    if (pool.note_hang_logged())
      LOG_WARN("server %s: nothing back for %llu ms: %zu requests safe to repeat (Ping, GET) sent to their "
               "takeover servers before the check's verdict",
               pool.target().id.c_str(), static_cast<unsigned long long>(stall_ms), moved);
    else
      LOG_DEBUG("server %s: %zu more requests sent to their takeover servers", pool.target().id.c_str(), moved);
  }
  return moved;
}

// ---- the exchange's part ---------------------------------------------------------------

bool Exchange::awaits_first_byte(uint64_t sent_before_ns) const {
  return state_ == State::active && up_ && !response_started_ && !up_->response_byte_seen() && sent_ns_ != 0 &&
         sent_ns_ <= sent_before_ns;
}

bool Exchange::early_resend_ready() const {
  if (state_ != State::active || !up_ || early_resent_ || upgrade_ || !replayable_) return false;
  if (response_started_ || up_->response_byte_seen()) return false;
  if (!ds_.request_complete() || up_->writer().queued() != 0) return false;  // not sent whole yet
  return safe_to_resend(ds_.request().method_name(), long_poll_);
}

void Exchange::resend_early(std::vector<uint32_t> candidates) {
  WorkerStats& stats = ctx_.stats;
  early_resent_ = true;
  retried_next_ = true;  // a second attempt: counted with reason "retry"
  WorkerStats::add(stats.early_resends[WorkerStats::server_row(server_)]);
  WorkerStats::add(stats.upstream_retries);
  release_upstream(false);  // closes the stalled connection: the hung server may keep its copy
  candidates_ = std::move(candidates);
  attempt_ = 0;
  if (long_poll_row_ >= 0) {
    // Parked on the server it now waits on.
    uncount_long_poll();
    long_poll_row_ = static_cast<int>(WorkerStats::server_row(static_cast<int>(candidates_[0])));
    WorkerStats::add(stats.parked[long_poll_row_], 1);
  }
  resend_from_replay();
  try_next_candidate();
}

}  // namespace sprayer::proxy
