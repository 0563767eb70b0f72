// Unit tests for the routing rules (affinity/router.h): owner, takeover, new users,
// user-less spreading, availability classes, weights, fallback, determinism, and an
// exhaustive sweep over every state combination of a three-server pool.
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "affinity/rendezvous.h"
#include "affinity/router.h"

using namespace sprayer::affinity;

namespace {

std::vector<ServerView> pool(std::size_t n) {
  static const std::array<const char*, 6> ids = {"t1", "t2", "t3", "t4", "t5", "t6"};
  std::vector<ServerView> servers;
  for (std::size_t i = 0; i < n; ++i) servers.push_back(ServerView{ids[i], 1, ServerState::up, 100});
  return servers;
}

std::vector<std::uint16_t> list(const RouteDecision& d) { return {d.candidates.begin(), d.candidates.end()}; }

// Rendezvous order over all servers, filtered by `keep`.
template <class Keep>
std::vector<std::uint16_t> rendezvous(std::uint64_t key, const std::vector<ServerView>& servers, Keep keep) {
  std::vector<WeightedServer> weighted;
  for (const auto& s : servers) weighted.push_back({hash_key(s.id), s.weight});
  std::vector<std::uint16_t> out;
  for (auto i : rank(key, weighted)) {
    if (keep(i)) out.push_back(i);
  }
  return out;
}

const std::uint64_t kUser = hash_key("jdoe");

}  // namespace

TEST_CASE("router: owner up goes first, others follow in rendezvous order") {
  const auto servers = pool(4);
  for (std::uint16_t owner = 0; owner < 4; ++owner) {
    const auto d = route(kUser, owner, servers, 0);
    CHECK(d.reason == RouteReason::owner);
    REQUIRE(d.candidates.size() == 4);
    CHECK(d.candidates[0] == owner);
    const auto rest = rendezvous(kUser, servers, [&](auto i) { return i != owner; });
    CHECK(std::vector<std::uint16_t>(d.candidates.begin() + 1, d.candidates.end()) == rest);
  }
}

TEST_CASE("router: owner down or in maintenance: takeover by rendezvous over the others") {
  for (ServerState state : {ServerState::down, ServerState::maintenance}) {
    auto servers = pool(4);
    servers[2].state = state;
    const auto d = route(kUser, 2, servers, 0);
    CHECK(d.reason == RouteReason::takeover);
    CHECK(list(d) == rendezvous(kUser, servers, [](auto i) { return i != 2; }));
  }
  // An owner the table names but the server list lacks is a takeover too.
  const auto servers = pool(3);
  CHECK(route(kUser, kOwnerNotInList, servers, 0).reason == RouteReason::takeover);
  CHECK(route(kUser, 3, servers, 0).reason == RouteReason::takeover);
  CHECK(list(route(kUser, kOwnerNotInList, servers, 0)) == list(route(kUser, std::nullopt, servers, 0)));
}

TEST_CASE("router: a dead owner's users all land on one survivor, the same for every device") {
  auto servers = pool(3);
  servers[0].state = ServerState::down;
  const auto first = route(kUser, 0, servers, 0).candidates[0];
  for (std::uint64_t spread = 0; spread < 10; ++spread) CHECK(route(kUser, 0, servers, spread).candidates[0] == first);
}

TEST_CASE("router: unknown user: new_user by rendezvous over servers accepting new users") {
  const auto servers = pool(3);
  const auto d = route(kUser, std::nullopt, servers, 0);
  CHECK(d.reason == RouteReason::new_user);
  CHECK(list(d) == rendezvous(kUser, servers, [](auto) { return true; }));
}

TEST_CASE("router: a draining owner keeps its users but gets no new ones") {
  auto servers = pool(3);
  servers[1].state = ServerState::draining;
  const auto owned = route(kUser, 1, servers, 0);
  CHECK(owned.reason == RouteReason::owner);
  CHECK(owned.candidates[0] == 1);
  CHECK(owned.candidates.size() == 3);
  for (int u = 0; u < 500; ++u) {
    const auto key = hash_key("user" + std::to_string(u));
    const auto fresh = route(key, std::nullopt, servers, 0);
    CHECK(std::find(fresh.candidates.begin(), fresh.candidates.end(), 1) == fresh.candidates.end());
    const auto other_owner = route(key, 0, servers, 0);
    CHECK(std::find(other_owner.candidates.begin(), other_owner.candidates.end(), 1) == other_owner.candidates.end());
  }
  const auto none = route(std::nullopt, std::nullopt, servers, 0);
  CHECK(std::find(none.candidates.begin(), none.candidates.end(), 1) == none.candidates.end());
}

TEST_CASE("router: constrained availability (-1..-100) keeps owned users, takes no new ones") {
  for (int availability : {-1, -50, -100}) {
    CAPTURE(availability);
    auto servers = pool(3);
    servers[0].availability = availability;
    const auto owned = route(kUser, 0, servers, 0);
    CHECK(owned.reason == RouteReason::owner);
    CHECK(owned.candidates[0] == 0);
    CHECK(owned.candidates.size() == 3);
    const auto fresh = route(kUser, std::nullopt, servers, 0);
    CHECK(fresh.reason == RouteReason::new_user);
    CHECK(list(fresh) == rendezvous(kUser, servers, [](auto i) { return i != 0; }));
    const auto owned_elsewhere = route(kUser, 1, servers, 0);
    CHECK(list(owned_elsewhere) == std::vector<std::uint16_t>{1, owned_elsewhere.candidates[1]});
    CHECK(owned_elsewhere.candidates[1] == 2);
  }
}

TEST_CASE("router: availability -200 keeps owned users only, and is never a fallback") {
  auto servers = pool(3);
  servers[2].availability = -200;
  const auto owned = route(kUser, 2, servers, 0);
  CHECK(owned.reason == RouteReason::owner);
  CHECK(owned.candidates[0] == 2);
  CHECK(list(route(kUser, std::nullopt, servers, 0)) == rendezvous(kUser, servers, [](auto i) { return i != 2; }));

  // Everyone at -200: owned users still reach their owner, with no retries; new users
  // and user-less requests find nobody.
  for (auto& s : servers) s.availability = -200;
  const auto only_owner = route(kUser, 1, servers, 0);
  CHECK(only_owner.reason == RouteReason::owner);
  CHECK(list(only_owner) == std::vector<std::uint16_t>{1});
  const auto fresh = route(kUser, std::nullopt, servers, 0);
  CHECK(fresh.reason == RouteReason::unavailable);
  CHECK(fresh.candidates.empty());
  CHECK(route(std::nullopt, std::nullopt, servers, 3).reason == RouteReason::unavailable);
}

TEST_CASE("router: when every server is constrained, the up ones are the fallback") {
  auto servers = pool(3);
  for (auto& s : servers) s.availability = -10;
  const auto fresh = route(kUser, std::nullopt, servers, 0);
  CHECK(fresh.reason == RouteReason::new_user);
  CHECK(list(fresh) == rendezvous(kUser, servers, [](auto) { return true; }));

  servers[1].state = ServerState::down;
  servers[2].availability = -200;
  CHECK(list(route(kUser, std::nullopt, servers, 0)) == std::vector<std::uint16_t>{0});
  const auto takeover = route(kUser, 1, servers, 0);
  CHECK(takeover.reason == RouteReason::takeover);
  CHECK(list(takeover) == std::vector<std::uint16_t>{0});
  // An owner with nobody accepting: fallback retries.
  CHECK(list(route(kUser, 2, servers, 0)) == std::vector<std::uint16_t>{2, 0});
}

TEST_CASE("router: nothing usable at all is unavailable") {
  for (ServerState state : {ServerState::down, ServerState::maintenance, ServerState::draining}) {
    auto servers = pool(3);
    for (auto& s : servers) s.state = state;
    for (const std::optional<std::uint16_t> owner : {std::optional<std::uint16_t>{}, std::optional<std::uint16_t>{0}}) {
      const auto d = route(kUser, owner, servers, 0);
      if (state == ServerState::draining && owner) {
        CHECK(d.reason == RouteReason::owner);  // a draining owner still serves its user
        CHECK(list(d) == std::vector<std::uint16_t>{0});
      } else {
        CHECK(d.reason == RouteReason::unavailable);
        CHECK(d.candidates.empty());
      }
    }
    CHECK(route(std::nullopt, std::nullopt, servers, 0).reason == RouteReason::unavailable);
  }
  CHECK(route(kUser, std::nullopt, {}, 0).reason == RouteReason::unavailable);
  CHECK(route(std::nullopt, std::nullopt, {}, 0).reason == RouteReason::unavailable);
  CHECK(route(kUser, 0, {}, 0).reason == RouteReason::unavailable);
}

TEST_CASE("router: user-less requests spread from spread % n over accepting servers") {
  auto servers = pool(4);
  servers[1].state = ServerState::maintenance;  // accepting: 0, 2, 3
  const std::vector<std::vector<std::uint16_t>> expected = {{0, 2, 3}, {2, 3, 0}, {3, 0, 2}};
  for (std::uint64_t spread = 0; spread < 9; ++spread) {
    const auto d = route(std::nullopt, std::nullopt, servers, spread);
    CHECK(d.reason == RouteReason::no_user);
    CHECK(list(d) == expected[spread % 3]);
  }
  CHECK(list(route(std::nullopt, std::nullopt, servers, ~std::uint64_t{0})) == expected[~std::uint64_t{0} % 3]);
  // The owner argument is ignored without a user.
  CHECK(list(route(std::nullopt, 1, servers, 0)) == expected[0]);
  // All constrained: spread over the fallback set.
  for (auto& s : servers) s.availability = -5;
  CHECK(list(route(std::nullopt, std::nullopt, servers, 1)) == std::vector<std::uint16_t>{2, 3, 0});
}

TEST_CASE("router: weights steer new users; weight 0 takes no new work but keeps its users") {
  auto servers = pool(3);
  servers[0].weight = 1;
  servers[1].weight = 3;
  servers[2].weight = 0;
  std::array<int, 3> first{};
  for (int u = 0; u < 20000; ++u) {
    const auto d = route(hash_key("user" + std::to_string(u)), std::nullopt, servers, 0);
    REQUIRE(d.candidates.size() == 2);
    ++first[d.candidates[0]];
  }
  CHECK(first[2] == 0);
  CHECK(first[1] > first[0] * 27 / 10);
  CHECK(first[1] < first[0] * 33 / 10);
  const auto owned = route(kUser, 2, servers, 0);
  CHECK(owned.reason == RouteReason::owner);
  CHECK(owned.candidates[0] == 2);
  // Only weight-0 servers up: they are the fallback.
  servers[0].state = ServerState::down;
  servers[1].state = ServerState::down;
  CHECK(list(route(kUser, std::nullopt, servers, 0)) == std::vector<std::uint16_t>{2});
}

TEST_CASE("router: deterministic and independent of the server list order") {
  auto servers = pool(5);
  servers[3].weight = 4;
  auto reversed = servers;
  std::reverse(reversed.begin(), reversed.end());
  for (int u = 0; u < 1000; ++u) {
    const auto key = hash_key("user" + std::to_string(u));
    const auto a = route(key, std::nullopt, servers, 0);
    CHECK(list(a) == list(route(key, std::nullopt, servers, 0)));
    const auto b = route(key, std::nullopt, reversed, 0);
    REQUIRE(a.candidates.size() == b.candidates.size());
    for (std::size_t k = 0; k < a.candidates.size(); ++k) {
      REQUIRE(servers[a.candidates[k]].id == reversed[b.candidates[k]].id);
    }
  }
}

TEST_CASE("router: no heap for 16 servers, correct beyond") {
  std::vector<std::string> ids;
  for (int i = 0; i < 40; ++i) ids.push_back("srv" + std::to_string(i));
  std::vector<ServerView> servers;
  for (const auto& id : ids) servers.push_back(ServerView{id, 1, ServerState::up, 100});
  const auto small = route(kUser, 3, std::span<const ServerView>(servers).first(16), 0);
  CHECK(small.candidates.size() == 16);
  CHECK_FALSE(small.candidates.on_heap());
  const auto big = route(kUser, 3, servers, 0);
  CHECK(big.candidates.size() == 40);
  CHECK(big.candidates[0] == 3);
  CHECK(std::set<std::uint16_t>(big.candidates.begin(), big.candidates.end()).size() == 40);
}

TEST_CASE("router: ServerIndexMap maps snapshot indices to list indices by id") {
  const std::vector<std::string> snapshot_ids = {"t3", "gone", "t1"};
  const auto servers = pool(3);
  const ServerIndexMap map(snapshot_ids, servers);
  CHECK(map.to_view(0) == 2);
  CHECK(map.to_view(1) == kOwnerNotInList);
  CHECK(map.to_view(2) == 0);
  CHECK(map.to_view(3) == kOwnerNotInList);
  CHECK(ServerIndexMap().to_view(0) == kOwnerNotInList);
  CHECK(to_string(RouteReason::takeover) == "takeover");
}

TEST_CASE("router: exhaustive sweep of states, availability and weight over three servers") {
  const std::array<ServerState, 4> states = {ServerState::up, ServerState::down, ServerState::draining,
                                             ServerState::maintenance};
  const std::array<int, 5> availabilities = {100, 0, -1, -100, -200};
  const std::array<std::uint32_t, 2> weights = {0, 2};
  constexpr std::size_t kPerServer = 4 * 5 * 2;
  const auto accepts = [](const ServerView& s) {
    return s.state == ServerState::up && s.availability >= 0 && s.weight > 0;
  };
  const auto fallback = [](const ServerView& s) { return s.state == ServerState::up && s.availability > -200; };
  const auto keeps = [](const ServerView& s) {
    return s.state == ServerState::up || s.state == ServerState::draining;
  };
  const std::array<std::uint64_t, 2> keys = {kUser, hash_key("jane")};
  std::size_t routes = 0;
  for (std::size_t combo = 0; combo < kPerServer * kPerServer * kPerServer; ++combo) {
    auto servers = pool(3);
    std::size_t c = combo;
    for (auto& s : servers) {
      const std::size_t v = c % kPerServer;
      c /= kPerServer;
      s.state = states[v % 4];
      s.availability = availabilities[(v / 4) % 5];
      s.weight = weights[v / 20];
    }
    for (std::uint64_t key : keys) {
      for (int o = -1; o <= 3; ++o) {
        const std::optional<std::uint16_t> owner =
            o < 0 ? std::nullopt : std::optional<std::uint16_t>(o == 3 ? kOwnerNotInList : o);
        const auto d = route(key, owner, servers, combo);
        ++routes;
        const bool owner_ok = owner && *owner < 3 && keeps(servers[*owner]);
        // Reason.
        if (d.candidates.empty()) {
          REQUIRE(d.reason == RouteReason::unavailable);
        } else if (owner_ok) {
          REQUIRE(d.reason == RouteReason::owner);
          REQUIRE(d.candidates[0] == *owner);
        } else {
          REQUIRE(d.reason == (owner ? RouteReason::takeover : RouteReason::new_user));
        }
        REQUIRE(owner_ok == (d.reason == RouteReason::owner));
        // The rest: the accepting others in rendezvous order, else the fallback others.
        const auto others = [&](auto pred) {
          return rendezvous(key, servers, [&](auto i) { return !(owner_ok && i == *owner) && pred(servers[i]); });
        };
        auto expected = others(accepts);
        if (expected.empty()) expected = others(fallback);
        std::vector<std::uint16_t> rest(d.candidates.begin() + (owner_ok ? 1 : 0), d.candidates.end());
        REQUIRE(rest == expected);
      }
      // User-less: a rotation of the accepting (else fallback) servers in list order.
      const auto d = route(std::nullopt, std::nullopt, servers, combo);
      std::vector<std::uint16_t> pool_order;
      for (std::uint16_t i = 0; i < 3; ++i) {
        if (accepts(servers[i])) pool_order.push_back(i);
      }
      if (pool_order.empty()) {
        for (std::uint16_t i = 0; i < 3; ++i) {
          if (fallback(servers[i])) pool_order.push_back(i);
        }
      }
      if (pool_order.empty()) {
        REQUIRE(d.reason == RouteReason::unavailable);
        REQUIRE(d.candidates.empty());
      } else {
        REQUIRE(d.reason == RouteReason::no_user);
        std::rotate(pool_order.begin(), pool_order.begin() + static_cast<long>(combo % pool_order.size()), pool_order.end());
        REQUIRE(list(d) == pool_order);
      }
    }
  }
  MESSAGE(routes << " routes checked");
}
