// What a worker routes by, published by the control thread as one immutable object: the
// ownership snapshot, each server's routing state (from health), and the map from the
// snapshot's server ids to the configured servers. In-flight requests keep the candidates
// they were given; a new state applies to the next request.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "affinity/router.h"
#include "affinity/snapshot.h"
#include "health/health_view.h"
#include "proxy/runtime.h"

namespace sprayer::proxy {

struct RouteState {
  RouteState() = default;
  RouteState(const RouteState&) = delete;  // servers hold views into ids
  RouteState& operator=(const RouteState&) = delete;

  // Servers in configuration order (the same indices as Runtime::servers and the
  // workers' upstream pools); their state from `health` when given, else up.
  static std::shared_ptr<const RouteState> make(const Runtime& runtime,
                                                std::shared_ptr<const affinity::OwnershipSnapshot> snapshot,
                                                std::shared_ptr<const health::HealthView> health, uint64_t version);

  uint64_t version = 0;
  std::shared_ptr<const affinity::OwnershipSnapshot> snapshot;  // never null
  std::shared_ptr<const health::HealthView> health;             // may be null
  std::vector<std::string> ids;
  std::vector<affinity::ServerView> servers;
  std::vector<uint32_t> slots;         // index in `servers` -> ServerTarget::slot (the worker's pool)
  affinity::ServerIndexMap owner_map;  // snapshot server index -> index in `servers`
};

// The routing decision for one user (or none), as a worker makes it.
struct RouteResult {
  affinity::RouteDecision decision;
  std::optional<uint16_t> owner;  // index in RouteState::servers, when the table names one we know
};

RouteResult route_user(const RouteState& state, std::string_view user_key, std::optional<uint64_t> key_hash,
                       uint64_t spread);

}  // namespace sprayer::proxy
