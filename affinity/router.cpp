// The routing rules of ARCHITECTURE.md over a health view and a rendezvous ranking.
#include "affinity/router.h"

#include <algorithm>
#include <limits>

#include "affinity/rendezvous.h"

namespace sprayer::affinity {
namespace {

constexpr int kNoLoadBalancedWork = -200;

bool accepts_new_work(const ServerView& s) noexcept {
  return s.state == ServerState::up && s.availability >= 0 && s.weight > 0;
}

bool keeps_owned_users(const ServerView& s) noexcept {
  return s.state == ServerState::up || s.state == ServerState::draining;
}

bool fallback_ok(const ServerView& s) noexcept {
  return s.state == ServerState::up && s.availability > kNoLoadBalancedWork;
}

std::size_t usable_count(std::span<const ServerView> servers) noexcept {
  return std::min<std::size_t>(servers.size(), std::numeric_limits<std::uint16_t>::max());
}

// Rule 1: list order from spread % n over the first non-empty of accepting, fallback.
void spread_without_user(std::span<const ServerView> servers, std::uint64_t spread,
                         RouteDecision& decision) {
  const std::size_t n = usable_count(servers);
  CandidateList pool;
  for (std::size_t i = 0; i < n; ++i) {
    if (accepts_new_work(servers[i])) pool.push_back(static_cast<std::uint16_t>(i));
  }
  if (pool.empty()) {
    for (std::size_t i = 0; i < n; ++i) {
      if (fallback_ok(servers[i])) pool.push_back(static_cast<std::uint16_t>(i));
    }
  }
  if (pool.empty()) {
    decision.reason = RouteReason::unavailable;
    return;
  }
  decision.reason = RouteReason::no_user;
  const std::size_t start = static_cast<std::size_t>(spread % pool.size());
  for (std::size_t k = 0; k < pool.size(); ++k) {
    decision.candidates.push_back(pool[(start + k) % pool.size()]);
  }
}

}  // namespace

std::string_view to_string(RouteReason reason) noexcept {
  switch (reason) {
    case RouteReason::owner: return "owner";
    case RouteReason::takeover: return "takeover";
    case RouteReason::new_user: return "new_user";
    case RouteReason::no_user: return "no_user";
    case RouteReason::unavailable: return "unavailable";
  }
  return "unavailable";
}

ServerIndexMap::ServerIndexMap(std::span<const std::string> snapshot_ids,
                               std::span<const ServerView> servers) {
  const std::size_t n = usable_count(servers);
  map_.assign(snapshot_ids.size(), kOwnerNotInList);
  for (std::size_t s = 0; s < snapshot_ids.size(); ++s) {
    for (std::size_t v = 0; v < n; ++v) {
      if (servers[v].id == snapshot_ids[s]) {
        map_[s] = static_cast<std::uint16_t>(v);
        break;
      }
    }
  }
}

RouteDecision route(std::optional<std::uint64_t> key_hash, std::optional<std::uint16_t> owner,
                    std::span<const ServerView> servers, std::uint64_t spread) {
  RouteDecision decision;
  if (!key_hash) {
    spread_without_user(servers, spread, decision);
    return decision;
  }

  const std::size_t n = usable_count(servers);
  SmallVector<WeightedServer, 16> weighted;
  for (std::size_t i = 0; i < n; ++i) {
    weighted.push_back(WeightedServer{hash_key(servers[i].id), servers[i].weight});
  }
  const ServerOrder order = rank(*key_hash, weighted.span());

  const bool owner_usable = owner && *owner < n && keeps_owned_users(servers[*owner]);
  if (owner_usable) {
    decision.reason = RouteReason::owner;
    decision.candidates.push_back(*owner);
  } else {
    decision.reason = owner ? RouteReason::takeover : RouteReason::new_user;
  }

  const auto is_owner = [&](std::uint16_t i) { return owner_usable && i == *owner; };
  const std::size_t before = decision.candidates.size();
  for (const std::uint16_t i : order) {
    if (!is_owner(i) && accepts_new_work(servers[i])) decision.candidates.push_back(i);
  }
  if (decision.candidates.size() == before) {
    for (const std::uint16_t i : order) {
      if (!is_owner(i) && fallback_ok(servers[i])) decision.candidates.push_back(i);
    }
  }
  if (decision.candidates.empty()) decision.reason = RouteReason::unavailable;
  return decision;
}

}  // namespace sprayer::affinity
