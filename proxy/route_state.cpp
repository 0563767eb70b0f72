// Building a RouteState, and the per-request lookup + route.
#include "proxy/route_state.h"

namespace sprayer::proxy {

// Health states are cast to router states: the two enums must stay in step.
static_assert(static_cast<int>(health::ServerState::up) == static_cast<int>(affinity::ServerState::up));
static_assert(static_cast<int>(health::ServerState::down) == static_cast<int>(affinity::ServerState::down));
static_assert(static_cast<int>(health::ServerState::draining) == static_cast<int>(affinity::ServerState::draining));
static_assert(static_cast<int>(health::ServerState::maintenance) ==
              static_cast<int>(affinity::ServerState::maintenance));

std::shared_ptr<const RouteState> RouteState::make(const Runtime& runtime,
                                                   std::shared_ptr<const affinity::OwnershipSnapshot> snapshot,
                                                   std::shared_ptr<const health::HealthView> health,
                                                   uint64_t version) {
  auto state = std::make_shared<RouteState>();
  state->version = version;
  state->snapshot = snapshot ? std::move(snapshot) : affinity::OwnershipSnapshot::empty();
  state->health = std::move(health);
  state->ids.reserve(runtime.servers.size());
  for (const auto& server : runtime.servers) state->ids.push_back(server.id);
  state->servers.reserve(runtime.servers.size());
  for (size_t i = 0; i < runtime.servers.size(); ++i) {
    affinity::ServerView view;
    view.id = state->ids[i];
    view.weight = runtime.servers[i].weight;
    if (state->health) {
      if (const health::HealthEntry* entry = state->health->find(view.id)) {
        view.state = static_cast<affinity::ServerState>(entry->state);
        view.availability = entry->availability;
      }
    }
    state->servers.push_back(view);
    state->slots.push_back(runtime.servers[i].slot);
  }
  state->owner_map = affinity::ServerIndexMap(state->snapshot->server_ids(), state->servers);
  return state;
}

RouteResult route_user(const RouteState& state, std::string_view user_key, std::optional<uint64_t> key_hash,
                       uint64_t spread) {
  RouteResult result;
  std::optional<uint16_t> owner;
  if (key_hash) {
    if (auto found = state.snapshot->find(user_key, *key_hash)) {
      uint16_t index = state.owner_map.to_view(found->server);
      // An owner the configuration does not list is unusable: the user is taken over.
      owner = index;
      if (index != affinity::kOwnerNotInList) result.owner = index;
    }
  }
  result.decision = affinity::route(key_hash, owner, state.servers, spread);
  return result;
}

}  // namespace sprayer::proxy
