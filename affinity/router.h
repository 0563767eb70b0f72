// The routing decision (ARCHITECTURE.md, "Routing rules"): a pure function of the user,
// its owner and the servers' health. No I/O, no clock, no randomness; no allocation
// for pools of up to 16 servers.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "affinity/small_vector.h"

namespace sprayer::affinity {

enum class ServerState : std::uint8_t { up, down, draining, maintenance };

// Availability index (Traveler): 0..100 available; -1..-100 constrained (keeps its users,
// takes no new ones); -200 (or lower) takes no load-balanced work, only its own users.
struct ServerView {
  std::string_view id;  // pool_server.server_id
  std::uint32_t weight = 1;
  ServerState state = ServerState::up;
  int availability = 100;
};

enum class RouteReason : std::uint8_t {
  owner,        // the table's owner is usable and comes first
  takeover,     // the table names an owner that is unusable (down, maintenance, gone)
  new_user,     // the table has no owner for this user
  no_user,      // no user in the request: spread
  unavailable,  // no server can take the request: answer 503
};

std::string_view to_string(RouteReason reason) noexcept;

using CandidateList = SmallVector<std::uint16_t, 16>;  // indices into the server span

struct RouteDecision {
  RouteReason reason = RouteReason::unavailable;
  CandidateList candidates;  // first = where to send; the rest = connect-failure retries
};

// `owner` for a user the table names an owner for whose id is not in the server list.
constexpr std::uint16_t kOwnerNotInList = 0xFFFF;

// Maps snapshot server indices (Owner::server) to indices into the current server list,
// by id. Rebuild it when either the snapshot or the server list changes; to_view() is
// then an array read per request.
class ServerIndexMap {
 public:
  ServerIndexMap() = default;
  ServerIndexMap(std::span<const std::string> snapshot_ids, std::span<const ServerView> servers);

  // kOwnerNotInList when the snapshot's server is not in the list.
  std::uint16_t to_view(std::uint16_t snapshot_index) const noexcept {
    return snapshot_index < map_.size() ? map_[snapshot_index] : kOwnerNotInList;
  }

 private:
  std::vector<std::uint16_t> map_;
};

// Which servers may receive what:
//  accepts new work:  state up, availability >= 0, weight > 0. New users and user-less
//                     requests go only here.
//  keeps its owned users (usable owner): state up or draining, any availability
//                     (constrained and -200 included), any weight.
//  fallback, when nothing accepts new work: state up and availability > -200
//                     (e.g. every server constrained, or weight 0).
//
// Rules:
//  1. No user (key_hash nullopt): servers accepting new work, starting at spread % n,
//     then the following ones in list order (wrapping) as retries. reason no_user.
//  2. Owner usable: the owner, then the rendezvous order of the other servers that
//     accept new work. reason owner.
//  3. Owner unusable (down, maintenance, kOwnerNotInList): reason takeover; no owner
//     (nullopt): reason new_user; both rendezvous-rank the servers accepting new work.
//  4. Everything after the first candidate is the retry order (rendezvous order).
//  5. When no server accepts new work, the fallback set takes its place (rendezvous
//     order; list order from spread for rule 1); when that is empty too and no owner is
//     usable: reason unavailable, no candidates.
// The rendezvous order depends on the key hash and the server ids and weights only, not
// on the order of `servers`, so every sprayer routes a user alike.
// At most 65535 servers are considered.
RouteDecision route(std::optional<std::uint64_t> key_hash, std::optional<std::uint16_t> owner,
                    std::span<const ServerView> servers, std::uint64_t spread);

}  // namespace sprayer::affinity
