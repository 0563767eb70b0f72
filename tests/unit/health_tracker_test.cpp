// Unit tests for HealthTracker/HealthView (health/health_view.h): publication on routing
// change only, reload, jittered scheduling, scenarios with hand-fired checks on a ManualClock.
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "health/health_view.h"
#include "tests/unit/health_results.h"

using namespace sprayer::health;
using namespace std::chrono_literals;
using Outcome = CheckResult::Outcome;

namespace {

using sprayer::test::kT0;
using sprayer::test::pass;

CheckResult fail() { return failed_check(Outcome::fail_connect, 10ms); }

std::vector<std::string> ids_of(const HealthView& view) {
  std::vector<std::string> ids;
  for (const auto& e : view.servers) ids.push_back(e.id);
  return ids;
}

const std::vector<std::string> kThree = {"t1", "t2", "t3"};

// Fires due checks by hand, like the control loop's timer would: each check's answer
// comes from `healthy(id, now)` after `latency`. Returns the view versions seen.
struct Driver {
  HealthTracker& tracker;
  ManualClock& clock;
  std::function<bool(const std::string&, TimePoint)> healthy;
  std::chrono::milliseconds latency = 5ms;

  void run_until(TimePoint end) {
    while (true) {
      auto next = tracker.earliest_check_time();
      REQUIRE(next.has_value());
      if (*next > end) break;
      if (*next > clock.now()) clock.set(*next);
      for (const auto& id : tracker.due_checks(clock.now())) {
        tracker.on_check_started(id, clock.now());
        const TimePoint done = clock.now() + latency;
        tracker.on_check_result(id, healthy(id, done) ? pass() : fail(), done);
      }
    }
    clock.set(end);
  }
};

}  // namespace

TEST_CASE("tracker: starts with an empty view, version 1") {
  SplitMix64 random(1);
  HealthTracker tracker(HealthSpec{}, random);
  REQUIRE(tracker.view());
  CHECK(tracker.version() == 1);
  CHECK(tracker.view()->version == 1);
  CHECK(tracker.view()->servers.empty());
  CHECK(tracker.size() == 0);
  CHECK_FALSE(tracker.earliest_check_time().has_value());
}

TEST_CASE("tracker: added servers appear in order, up, with one new version each") {
  SplitMix64 random(1);
  HealthTracker tracker(HealthSpec{}, random);
  CHECK(tracker.add_server("t1", kT0));
  CHECK(tracker.version() == 2);
  CHECK(tracker.add_server("t2", kT0));
  CHECK(tracker.add_server("t3", kT0));
  CHECK(tracker.version() == 4);
  CHECK_FALSE(tracker.add_server("t2", kT0));
  CHECK(tracker.version() == 4);
  const auto view = tracker.view();
  CHECK(ids_of(*view) == kThree);
  for (const auto& e : view->servers) {
    CHECK(e.state == ServerState::up);
    CHECK(e.availability == 100);
    CHECK(e.reason == Reason::none);
    CHECK(e.last_transition == kT0);
    REQUIRE(tracker.find(e.id));
    CHECK(tracker.find(e.id)->liveness() == Liveness::checking);
  }
  CHECK(view->find("t2") == &view->servers[1]);
  CHECK(view->find("t4") == nullptr);
  CHECK(tracker.find("t4") == nullptr);
}

TEST_CASE("tracker: removing a server publishes; unknown ids are ignored") {
  SplitMix64 random(1);
  HealthTracker tracker(HealthSpec{}, random);
  tracker.set_servers(kThree, kT0);
  const auto before = tracker.view();
  CHECK(tracker.remove_server("t2"));
  CHECK(tracker.version() == before->version + 1);
  CHECK(ids_of(*tracker.view()) == std::vector<std::string>{"t1", "t3"});
  CHECK_FALSE(tracker.next_check_time("t2").has_value());
  CHECK_FALSE(tracker.remove_server("t2"));
  CHECK(ids_of(*before) == kThree);  // a published view never changes

  const auto version = tracker.version();
  CHECK_FALSE(tracker.on_check_result("t2", fail(), kT0));
  CHECK_FALSE(tracker.on_passive_failure("t2", PassiveFailure::connect, kT0));
  CHECK_FALSE(tracker.on_passive_success("t2", kT0));
  CHECK_FALSE(tracker.set_admin_state("t2", AdminState::maintenance, kT0));
  CHECK_FALSE(tracker.set_availability("t2", -200));
  tracker.on_check_started("t2", kT0);
  CHECK(tracker.version() == version);
}

TEST_CASE("tracker: reload keeps known servers' state, adds new ones, drops missing ones") {
  SplitMix64 random(1);
  HealthTracker tracker(HealthSpec{}, random);
  CHECK(tracker.set_servers(kThree, kT0));
  for (int i = 0; i < 3; ++i) tracker.on_passive_failure("t2", PassiveFailure::reset, kT0);
  tracker.set_admin_state("t3", AdminState::drain, kT0);
  const auto t3_next = tracker.next_check_time("t3");
  REQUIRE(tracker.view()->find("t2")->state == ServerState::down);

  const std::vector<std::string> reloaded = {"t3", "t2", "t4"};
  CHECK(tracker.set_servers(reloaded, kT0 + 10s));
  const auto view = tracker.view();
  CHECK(ids_of(*view) == reloaded);
  CHECK(view->find("t1") == nullptr);
  CHECK(view->find("t2")->state == ServerState::down);
  CHECK(view->find("t2")->reason == Reason::passive_reset);
  CHECK(view->find("t3")->state == ServerState::draining);
  CHECK(view->find("t4")->state == ServerState::up);
  CHECK(tracker.find("t4")->liveness() == Liveness::checking);
  CHECK(tracker.next_check_time("t3") == t3_next);
  CHECK(tracker.find("t2")->counters().ejections == 1);

  // The same list again: nothing to publish. Duplicates are ignored.
  const auto version = tracker.version();
  CHECK_FALSE(tracker.set_servers(reloaded, kT0 + 11s));
  const std::vector<std::string> with_duplicates = {"t3", "t2", "t3", "t4", "t2"};
  CHECK_FALSE(tracker.set_servers(with_duplicates, kT0 + 11s));
  CHECK(tracker.version() == version);
  CHECK(tracker.size() == 3);
  // A new order is a routing change (user-less requests spread in list order).
  const std::vector<std::string> reordered = {"t2", "t3", "t4"};
  CHECK(tracker.set_servers(reordered, kT0 + 12s));
  CHECK(tracker.version() == version + 1);
  // Removed and added back: starts afresh.
  const std::vector<std::string> without_t2 = {"t3", "t4"};
  tracker.set_servers(without_t2, kT0 + 13s);
  tracker.set_servers(reordered, kT0 + 14s);
  CHECK(tracker.view()->find("t2")->state == ServerState::up);
  CHECK(tracker.find("t2")->counters().ejections == 0);
  CHECK(tracker.set_servers({}, kT0 + 15s));
  CHECK(tracker.view()->servers.empty());
}

TEST_CASE("tracker: the version moves only on routing-relevant change") {
  SplitMix64 random(1);
  HealthTracker tracker(HealthSpec{}, random);
  tracker.set_servers(kThree, kT0);
  auto view = tracker.view();
  auto unchanged = [&] {
    CHECK(tracker.view() == view);
    CHECK(tracker.version() == view->version);
  };
  auto changed = [&] {
    CHECK(tracker.version() == view->version + 1);
    view = tracker.view();
  };
  TimePoint t = kT0;

  // Not relevant: confirming passes, single failures, worker successes, a passive
  // failure below the threshold, availability within its class, the same admin state.
  CHECK_FALSE(tracker.on_check_result("t1", pass(), t));
  CHECK_FALSE(tracker.on_check_result("t1", pass(), t += 1s));
  unchanged();
  CHECK_FALSE(tracker.on_check_result("t1", fail(), t += 1s));
  unchanged();
  CHECK_FALSE(tracker.on_passive_success("t1", t));
  CHECK_FALSE(tracker.on_passive_failure("t1", PassiveFailure::status_5xx, t));
  CHECK_FALSE(tracker.set_availability("t1", 40));
  CHECK_FALSE(tracker.set_availability("t1", 0));
  CHECK_FALSE(tracker.on_check_result("t2", pass(55), t));
  CHECK_FALSE(tracker.set_admin_state("t1", AdminState::ready, t));
  unchanged();

  // Relevant: down, up, admin, availability class.
  CHECK(tracker.on_check_result("t1", fail(), t += 1s));
  changed();
  CHECK(view->find("t1")->state == ServerState::down);
  CHECK(view->find("t1")->reason == Reason::check_connect);
  CHECK(view->find("t1")->last_transition == t);
  CHECK_FALSE(tracker.on_check_result("t1", fail(), t += 1s));  // already down
  unchanged();
  CHECK_FALSE(tracker.on_check_result("t1", pass(), t += 1s));
  CHECK(tracker.on_check_result("t1", pass(), t += 1s));
  changed();
  CHECK(view->find("t1")->state == ServerState::up);
  CHECK(tracker.set_admin_state("t2", AdminState::drain, t));
  changed();
  CHECK(tracker.set_admin_state("t2", AdminState::maintenance, t));
  changed();
  CHECK(view->find("t2")->state == ServerState::maintenance);
  CHECK_FALSE(tracker.on_check_result("t2", fail(), t += 1s));
  CHECK_FALSE(tracker.on_check_result("t2", fail(), t += 1s));  // down, but maintenance wins
  unchanged();
  CHECK(tracker.set_availability("t3", -10));
  changed();
  CHECK(view->find("t3")->availability == -10);
  CHECK_FALSE(tracker.set_availability("t3", -90));
  unchanged();
  CHECK(view->find("t3")->availability == -10);        // the value at publication ...
  CHECK(tracker.find("t3")->availability() == -90);    // ... the live one
  CHECK(tracker.set_availability("t3", -200));
  changed();
  CHECK(tracker.set_availability("t3", 100));
  changed();
  for (int i = 0; i < 2; ++i) CHECK_FALSE(tracker.on_passive_failure("t3", PassiveFailure::connect, t));
  CHECK(tracker.on_passive_failure("t3", PassiveFailure::connect, t));
  changed();
  CHECK(view->find("t3")->state == ServerState::down);
  CHECK(view->find("t3")->reason == Reason::passive_connect);
}

TEST_CASE("tracker: first checks spread over one interval, deterministic for a seed") {
  HealthSpec spec;
  std::vector<TimePoint> first;
  for (std::uint64_t seed : {11u, 11u, 12u}) {
    SplitMix64 random(seed);
    HealthTracker tracker(spec, random);
    tracker.set_servers(kThree, kT0);
    std::set<TimePoint> distinct;
    for (const auto& id : kThree) {
      const auto next = tracker.next_check_time(id);
      REQUIRE(next.has_value());
      CHECK(*next >= kT0);
      CHECK(*next < kT0 + spec.check.interval);
      distinct.insert(*next);
      first.push_back(*next);
    }
    CHECK(distinct.size() == 3);  // not all at once
    CHECK(tracker.earliest_check_time() == *distinct.begin());
  }
  CHECK(std::equal(first.begin(), first.begin() + 3, first.begin() + 3));   // same seed
  CHECK_FALSE(std::equal(first.begin(), first.begin() + 3, first.begin() + 6));  // other seed
}

TEST_CASE("tracker: later checks come one interval +/- jitter after the result") {
  HealthSpec spec;  // 1 s, 10 %
  SplitMix64 random(99);
  HealthTracker tracker(spec, random);
  tracker.add_server("t1", kT0);
  TimePoint t = kT0;
  Duration lo = Duration::max(), hi = Duration::min();
  std::vector<TimePoint> schedule;
  for (int i = 0; i < 2000; ++i) {
    tracker.on_check_result("t1", pass(), t);
    const auto next = tracker.next_check_time("t1");
    REQUIRE(next.has_value());
    const auto gap = *next - t;
    REQUIRE(gap >= 900ms);
    REQUIRE(gap <= 1100ms);
    lo = std::min(lo, gap);
    hi = std::max(hi, gap);
    schedule.push_back(*next);
    t = *next;
  }
  CHECK(lo < 910ms);  // the whole range is used
  CHECK(hi > 1090ms);

  SplitMix64 again(99);
  HealthTracker replay(spec, again);
  replay.add_server("t1", kT0);
  t = kT0;
  for (int i = 0; i < 2000; ++i) {
    replay.on_check_result("t1", pass(), t);
    REQUIRE(replay.next_check_time("t1") == schedule[i]);
    t = schedule[i];
  }
}

TEST_CASE("tracker: jitter 0 gives the exact interval; set_spec changes it") {
  HealthSpec spec;
  spec.check.jitter = 0;
  SplitMix64 random(5);
  HealthTracker tracker(spec, random);
  tracker.add_server("t1", kT0);
  tracker.on_check_result("t1", pass(), kT0);
  CHECK(tracker.next_check_time("t1") == kT0 + 1s);
  spec.check.interval = 5s;
  tracker.set_spec(spec);
  CHECK(tracker.spec().check.interval == 5s);
  CHECK(tracker.next_check_time("t1") == kT0 + 1s);  // the pending check stays
  tracker.on_check_result("t1", pass(), kT0 + 1s);
  CHECK(tracker.next_check_time("t1") == kT0 + 6s);
}

TEST_CASE("tracker: a check in flight is not due again") {
  SplitMix64 random(3);
  HealthTracker tracker(HealthSpec{}, random);
  tracker.set_servers(kThree, kT0);
  const TimePoint late = kT0 + 2s;
  CHECK(tracker.due_checks(kT0 - 1ms).empty());
  CHECK(tracker.due_checks(late) == kThree);
  tracker.on_check_started("t2", late);
  CHECK_FALSE(tracker.next_check_time("t2").has_value());
  CHECK(tracker.due_checks(late) == std::vector<std::string>{"t1", "t3"});
  tracker.on_check_started("t1", late);
  tracker.on_check_started("t3", late);
  CHECK(tracker.due_checks(late).empty());
  CHECK_FALSE(tracker.earliest_check_time().has_value());
  tracker.on_check_result("t2", pass(), late + 10ms);
  REQUIRE(tracker.earliest_check_time().has_value());
  CHECK(*tracker.earliest_check_time() == *tracker.next_check_time("t2"));
}

TEST_CASE("tracker: scenario: a server dies, checks notice within fall intervals, it recovers") {
  SplitMix64 random(2024);
  ManualClock clock(kT0);
  HealthTracker tracker(HealthSpec{}, random);
  tracker.set_servers(kThree, clock.now());
  const TimePoint death = kT0 + 10s, revival = kT0 + 30s;
  Driver driver{tracker, clock, [&](const std::string& id, TimePoint t) {
                  return id != "t2" || t < death || t >= revival;
                }};
  driver.run_until(death - 1ms);
  for (const auto& e : tracker.view()->servers) CHECK(e.state == ServerState::up);
  const auto version_alive = tracker.version();

  // fall (2) checks of at most 1.1 s each, plus the latency.
  driver.run_until(death + 2200ms + driver.latency);
  const auto* t2 = tracker.view()->find("t2");
  CHECK(t2->state == ServerState::down);
  CHECK(t2->reason == Reason::check_connect);
  CHECK(t2->last_transition > death);
  CHECK(tracker.view()->find("t1")->state == ServerState::up);
  CHECK(tracker.version() == version_alive + 1);

  driver.run_until(revival - 1ms);
  CHECK(tracker.view()->find("t2")->state == ServerState::down);
  CHECK(tracker.version() == version_alive + 1);  // staying down publishes nothing
  driver.run_until(revival + 2200ms + driver.latency);
  CHECK(tracker.view()->find("t2")->state == ServerState::up);
  CHECK(tracker.version() == version_alive + 2);
  const auto* health = tracker.find("t2");
  CHECK(health->counters().downs == 1);
  CHECK(health->counters().checks_failed >= 18);
  CHECK(health->counters().checks_failed <= 23);
}

TEST_CASE("tracker: scenario: workers' failures eject before the next check") {
  SplitMix64 random(8);
  ManualClock clock(kT0);
  HealthTracker tracker(HealthSpec{}, random);
  tracker.set_servers(kThree, clock.now());
  bool t3_alive = true;
  Driver driver{tracker, clock, [&](const std::string& id, TimePoint) { return id != "t3" || t3_alive; }};
  driver.run_until(kT0 + 5s);
  t3_alive = false;
  const auto next_check = tracker.next_check_time("t3");
  REQUIRE(next_check.has_value());
  const TimePoint t = clock.now() + 1ms;
  REQUIRE(t < *next_check);
  tracker.on_passive_failure("t3", PassiveFailure::connect, t);
  tracker.on_passive_failure("t3", PassiveFailure::connect, t);
  CHECK(tracker.view()->find("t3")->state == ServerState::up);
  CHECK(tracker.on_passive_failure("t3", PassiveFailure::connect, t));
  CHECK(tracker.view()->find("t3")->state == ServerState::down);
  CHECK(tracker.view()->find("t3")->last_transition < *next_check);
  // Back after the hold once checks pass again.
  t3_alive = true;
  driver.run_until(t + 1500ms);
  CHECK(tracker.view()->find("t3")->state == ServerState::down);
  driver.run_until(t + 3500ms);
  CHECK(tracker.view()->find("t3")->state == ServerState::up);
}

TEST_CASE("tracker: scenario: flapping every 2 s is bounded by rise/fall, jitter included") {
  for (std::uint64_t seed = 1; seed <= 20; ++seed) {
    CAPTURE(seed);
    SplitMix64 random(seed);
    ManualClock clock(kT0);
    HealthSpec spec;  // interval 1 s, rise 2, fall 2, 10 % jitter
    HealthTracker tracker(spec, random);
    tracker.add_server("t1", clock.now());
    Driver driver{tracker, clock, [&](const std::string&, TimePoint t) {
                    return ((t - kT0) / 2s) % 2 == 0;
                  }};
    driver.run_until(kT0 + 120s);
    const auto& c = tracker.find("t1")->counters();
    const auto checks = c.checks_passed + c.checks_failed;
    CHECK(checks >= 108);
    CHECK(checks <= 134);
    // Each transition needs 2 checks in a row: at most checks / 2 transitions (about 60
    // here). The hold-down keeps the k-th down at least min(2 s * 2^k, 30 s) long, so only
    // as many downs as those holds fit into 120 s.
    CHECK(c.transitions <= checks / 2);
    CHECK(c.transitions >= 2);
    std::uint64_t max_downs = 0;
    for (auto held = 0s, hold = 2s; held < 120s; held += hold, hold = std::min<std::chrono::seconds>(hold * 2, 30s)) {
      ++max_downs;
    }
    CHECK(max_downs == 7);
    CHECK(c.transitions <= 2 * max_downs);
    CHECK(c.downs <= max_downs);
    CHECK(tracker.version() == 2 + c.transitions);
  }
}

TEST_CASE("tracker: scenario: drain and maintenance through the admin API") {
  SplitMix64 random(4);
  ManualClock clock(kT0);
  HealthTracker tracker(HealthSpec{}, random);
  tracker.set_servers(kThree, clock.now());
  Driver driver{tracker, clock, [](const std::string&, TimePoint) { return true; }};
  driver.run_until(kT0 + 3s);
  CHECK(tracker.set_admin_state("t1", AdminState::drain, clock.now()));
  CHECK(tracker.set_admin_state("t2", AdminState::maintenance, clock.now()));
  driver.run_until(kT0 + 10s);
  const auto view = tracker.view();
  CHECK(view->find("t1")->state == ServerState::draining);
  CHECK(view->find("t1")->reason == Reason::admin_drain);
  CHECK(view->find("t2")->state == ServerState::maintenance);
  CHECK(view->find("t3")->state == ServerState::up);
  CHECK(tracker.set_admin_state("t2", AdminState::ready, clock.now()));
  CHECK(tracker.view()->find("t2")->state == ServerState::up);
}

TEST_CASE("tracker: a stall makes the server's check due now, unless one is in flight or it is down") {
  SplitMix64 random(1);
  HealthTracker tracker(HealthSpec{}, random);
  tracker.set_servers(kThree, kT0);
  TimePoint now = kT0 + 10ms;
  REQUIRE(tracker.next_check_time("t1").has_value());
  if (*tracker.next_check_time("t1") <= now) {
    tracker.on_check_started("t1", now);
    tracker.on_check_result("t1", pass(), now);
    now += 200ms;  // a stall hurries no check sooner than fast_interval after the last one started
  }
  REQUIRE(*tracker.next_check_time("t1") > now);
  const auto version = tracker.version();
  CHECK(tracker.on_stall("t1", now));
  CHECK(*tracker.next_check_time("t1") == now);
  CHECK(tracker.due_checks(now) == std::vector<std::string>{"t1"});
  CHECK(tracker.version() == version);  // a hint, not a routing change
  CHECK_FALSE(tracker.on_stall("t1", now));  // already due

  tracker.on_check_started("t2", now);
  CHECK_FALSE(tracker.on_stall("t2", now));  // in flight: its answer decides
  CHECK_FALSE(tracker.on_stall("t9", now));  // unknown

  // Stall + a timed-out check = down with fall 2, one interval sooner than two checks.
  tracker.on_check_started("t1", now);
  CHECK(tracker.on_check_result("t1", failed_check(Outcome::fail_timeout, 800ms), now + 800ms));
  CHECK(tracker.view()->find("t1")->state == ServerState::down);
}
