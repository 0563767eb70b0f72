// Early re-send on a hung server: which requests may leave before the verdict, where they go
// (the router's takeover order with the hung server down), and the pool's evidence of a hang.
#include <doctest/doctest.h>

#include <string>

#include "affinity/rendezvous.h"
#include "affinity/snapshot.h"
#include "proxy/config_adapters.h"
#include "proxy/early_resend.h"
#include "proxy/stall_watch.h"

using namespace sprayer;

namespace {

std::shared_ptr<proxy::Runtime> three_servers() {
  auto config = std::make_shared<conf::Config>();
  for (const char* id : {"pool1", "pool2", "pool3"}) {
    conf::ServerConfig server;
    server.id = id;
    server.address = {"127.0.0.1", 9};
    config->servers.push_back(server);
  }
  auto runtime = std::make_shared<proxy::Runtime>();
  runtime->config = config;
  std::string error;
  REQUIRE(proxy::resolve_servers(*config, runtime->servers, error));
  return runtime;
}

std::vector<uint32_t> route_slots(const proxy::RouteState& state, const std::string& user) {
  proxy::RouteResult r = proxy::route_user(state, user, affinity::hash_key(user), 0);
  std::vector<uint32_t> slots;
  for (uint16_t i : r.decision.candidates) slots.push_back(state.slots[i]);
  return slots;
}

}  // namespace

TEST_CASE("early re-send: only requests that are safe to run twice") {
  CHECK(proxy::safe_to_resend("GET", false));
  CHECK(proxy::safe_to_resend("HEAD", false));
  CHECK(proxy::safe_to_resend("OPTIONS", false));
  CHECK(proxy::safe_to_resend("POST", true));  // ActiveSync Ping: a POST that only parks
  CHECK_FALSE(proxy::safe_to_resend("POST", false));  // Sync, SendMail, ...
  CHECK_FALSE(proxy::safe_to_resend("PUT", false));
  CHECK_FALSE(proxy::safe_to_resend("DELETE", false));
  CHECK_FALSE(proxy::safe_to_resend("PATCH", false));
}

TEST_CASE("early re-send: a user of the hung server goes where the router takes it over") {
  auto runtime = three_servers();
  affinity::SnapshotBuilder builder;
  // Every user owned by pool2 in the table.
  std::vector<std::string> users;
  for (int i = 0; i < 200; ++i) users.push_back("user" + std::to_string(i));
  for (const auto& u : users) REQUIRE(builder.add({u, std::string_view("pool2"), 1}));
  auto state = proxy::RouteState::make(*runtime, builder.build(), nullptr, 1);
  const uint32_t pool2 = 1;
  size_t to_pool1 = 0;
  for (const auto& u : users) {
    std::vector<uint32_t> owner_route = route_slots(*state, u);
    REQUIRE(owner_route.size() == 3);
    REQUIRE(owner_route[0] == pool2);
    std::vector<uint32_t> early = proxy::takeover_slots(*state, u, affinity::hash_key(u), 0, pool2);
    // The router's retry order after the owner is its takeover order: the same survivors,
    // in the same order, and never the hung server.
    CHECK(early == std::vector<uint32_t>(owner_route.begin() + 1, owner_route.end()));
    if (!early.empty() && early[0] == 0) ++to_pool1;
  }
  // Rendezvous spreads the hung server's users over both survivors.
  CHECK(to_pool1 > 50);
  CHECK(to_pool1 < 150);
}

TEST_CASE("early re-send: users of other servers keep their owner, the hung server is left out") {
  auto runtime = three_servers();
  affinity::SnapshotBuilder builder;
  REQUIRE(builder.add({"alice", std::string_view("pool1"), 1}));
  auto state = proxy::RouteState::make(*runtime, builder.build(), nullptr, 1);
  std::vector<uint32_t> early = proxy::takeover_slots(*state, "alice", affinity::hash_key("alice"), 0, 2);
  REQUIRE(early.size() == 2);
  CHECK(early[0] == 0);
  CHECK(early[1] == 1);
  // A user the table does not know, and a request without a user: any server but the hung one.
  std::vector<uint32_t> fresh = proxy::takeover_slots(*state, "nobody", affinity::hash_key("nobody"), 0, 0);
  CHECK(fresh.size() == 2);
  for (uint32_t s : fresh) CHECK(s != 0);
  for (uint64_t spread = 0; spread < 4; ++spread) {
    std::vector<uint32_t> spreadout = proxy::takeover_slots(*state, "", std::nullopt, spread, 1);
    REQUIRE(spreadout.size() == 2);
    for (uint32_t s : spreadout) CHECK(s != 1);
  }
  // Nowhere else to go: no candidates, so the request waits for the verdict.
  auto config = std::make_shared<conf::Config>();
  conf::ServerConfig only;
  only.id = "pool1";
  only.address = {"127.0.0.1", 9};
  config->servers.push_back(only);
  proxy::Runtime single;
  single.config = config;
  std::string error;
  REQUIRE(proxy::resolve_servers(*config, single.servers, error));
  auto alone = proxy::RouteState::make(single, nullptr, nullptr, 1);
  CHECK(proxy::takeover_slots(*alone, "alice", affinity::hash_key("alice"), 0, 0).empty());
}

TEST_CASE("early re-send: parked Pings alone are no evidence of a hang; a request due at once is") {
  proxy::StallWatch pool;
  pool.on_request_sent(1000, /*long_poll=*/true);
  CHECK_FALSE(pool.hung(100000, 300));
  CHECK(pool.stalled(1300, 300));  // the stall watch still asks the check
  CHECK_FALSE(pool.stalled(1400, 300));  // once per silence
  pool.on_request_sent(2000, /*long_poll=*/false);
  CHECK_FALSE(pool.hung(2299, 300));
  CHECK(pool.hung(2300, 300));
  CHECK(pool.hung(2400, 300));  // every tick of the silence
  CHECK(pool.note_hang_logged());
  CHECK_FALSE(pool.note_hang_logged());  // logged once per silence
  // Any byte from the server is a sign of life.
  pool.on_bytes();
  CHECK_FALSE(pool.hung(5000, 300));
  CHECK(pool.note_hang_logged());
  // The earliest unanswered request counts.
  pool.on_request_sent(6000, false);
  pool.on_request_sent(6200, false);
  CHECK(pool.hung(6300, 300));
}
