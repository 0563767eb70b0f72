// Unit tests for the per-server health state machine (health/server_health.h): rise/fall
// exactly, passive ejection, hold-down back-off, flapping, admin precedence, availability.
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <optional>
#include <vector>

#include "health/server_health.h"
#include "tests/unit/health_results.h"

using namespace sprayer::health;
using namespace std::chrono_literals;
using Outcome = CheckResult::Outcome;

namespace {

using sprayer::test::kT0;
using sprayer::test::pass;

CheckResult fail(Outcome outcome = Outcome::fail_status) {
  CheckResult r = failed_check(outcome, 800ms);
  if (outcome == Outcome::fail_status) r.status = 503;
  if (outcome == Outcome::fail_body) r.status = 200;
  return r;
}

HealthSpec spec(int rise = 2, int fall = 2, int passive = 3, std::chrono::milliseconds min_hold = 2000ms) {
  HealthSpec s;
  s.check.rise = rise;
  s.check.fall = fall;
  s.passive.consecutive_failures = passive;
  s.passive.min_hold = min_hold;
  s.passive.max_hold = std::max(min_hold, std::chrono::milliseconds(30000));
  return s;
}

HealthSpec no_hold(int rise = 2, int fall = 2) { return spec(rise, fall, 3, 0ms); }

// Feeds `n` results one second apart; `t` moves past the last one.
void feed(ServerHealth& h, TimePoint& t, const CheckResult& r, int n) {
  for (int i = 0; i < n; ++i) {
    h.on_check_result(r, t);
    t += 1s;
  }
}

void eject(ServerHealth& h, TimePoint t, int n = 3, PassiveFailure kind = PassiveFailure::connect) {
  for (int i = 0; i < n; ++i) h.on_passive_failure(kind, t);
}

}  // namespace

TEST_CASE("server: starts checking, routed as up") {
  ServerHealth h(spec(), kT0);
  CHECK(h.liveness() == Liveness::checking);
  CHECK(h.state() == ServerState::up);
  CHECK(h.admin_state() == AdminState::ready);
  CHECK(h.availability() == 100);
  CHECK(h.last_transition() == kT0);
  CHECK(h.last_transition_reason() == Reason::none);
  CHECK(h.last_failure() == Reason::none);
  CHECK_FALSE(h.last_failure_time().has_value());
  CHECK(h.counters().transitions == 0);
}

TEST_CASE("server: the first pass confirms up without a routing change") {
  ServerHealth h(spec(), kT0);
  CHECK_FALSE(h.on_check_result(pass(), kT0 + 1s));
  CHECK(h.liveness() == Liveness::up);
  CHECK(h.state() == ServerState::up);
  CHECK(h.counters().transitions == 0);
  CHECK(h.last_transition() == kT0);
}

TEST_CASE("server: fall and rise are exact, from checking and from up") {
  for (int rise = 1; rise <= 6; ++rise) {
    for (int fall = 1; fall <= 6; ++fall) {
      CAPTURE(rise);
      CAPTURE(fall);
      for (bool confirmed_first : {false, true}) {
        ServerHealth h(no_hold(rise, fall), kT0);
        TimePoint t = kT0;
        if (confirmed_first) {
          feed(h, t, pass(), 1);
          REQUIRE(h.liveness() == Liveness::up);
        }
        // fall - 1 failures: still up.
        for (int i = 1; i < fall; ++i) {
          CHECK_FALSE(h.on_check_result(fail(), t));
          t += 1s;
          REQUIRE(h.state() == ServerState::up);
        }
        // fall: down.
        CHECK(h.on_check_result(fail(), t));
        CHECK(h.state() == ServerState::down);
        CHECK(h.liveness() == Liveness::down);
        CHECK(h.last_transition() == t);
        CHECK(h.last_transition_reason() == Reason::check_status);
        CHECK(h.counters().downs == 1);
        CHECK(h.counters().ejections == 0);
        t += 1s;
        // rise - 1 passes: still down.
        for (int i = 1; i < rise; ++i) {
          CHECK_FALSE(h.on_check_result(pass(), t));
          t += 1s;
          REQUIRE(h.state() == ServerState::down);
        }
        // rise: up.
        CHECK(h.on_check_result(pass(), t));
        CHECK(h.state() == ServerState::up);
        CHECK(h.liveness() == Liveness::up);
        CHECK(h.last_transition_reason() == Reason::check_passed);
        CHECK(h.counters().transitions == 2);
        t += 1s;
        // From up again: fall - 1 failures still up, fall down.
        feed(h, t, fail(), fall - 1);
        CHECK(h.state() == ServerState::up);
        feed(h, t, fail(), 1);
        CHECK(h.state() == ServerState::down);
        CHECK(h.counters().transitions == 3);
      }
    }
  }
}

TEST_CASE("server: a pass breaks the failure streak, a failure breaks the pass streak") {
  ServerHealth h(no_hold(3, 3), kT0);
  TimePoint t = kT0;
  for (int round = 0; round < 10; ++round) {
    feed(h, t, fail(), 2);
    feed(h, t, pass(), 1);
  }
  CHECK(h.state() == ServerState::up);
  CHECK(h.counters().checks_failed == 20);
  CHECK(h.counters().checks_passed == 10);
  feed(h, t, fail(), 3);
  REQUIRE(h.state() == ServerState::down);
  for (int round = 0; round < 10; ++round) {
    feed(h, t, pass(), 2);
    feed(h, t, fail(), 1);
  }
  CHECK(h.state() == ServerState::down);
  feed(h, t, pass(), 3);
  CHECK(h.state() == ServerState::up);
}

TEST_CASE("server: every failing outcome counts and is the reason") {
  const std::vector<std::pair<Outcome, Reason>> cases = {
      {Outcome::fail_status, Reason::check_status},   {Outcome::fail_body, Reason::check_body},
      {Outcome::fail_timeout, Reason::check_timeout}, {Outcome::fail_connect, Reason::check_connect},
      {Outcome::fail_reset, Reason::check_reset},
  };
  for (const auto& [outcome, reason] : cases) {
    ServerHealth h(spec(), kT0);
    TimePoint t = kT0;
    h.on_check_result(fail(outcome), t);
    CHECK(h.last_failure() == reason);
    CHECK(h.last_failure_time() == t);
    CHECK(h.state() == ServerState::up);
    t += 1s;
    h.on_check_result(fail(outcome), t);
    CHECK(h.state() == ServerState::down);
    CHECK(h.last_transition_reason() == reason);
    CHECK(h.counters().check_outcomes[static_cast<std::size_t>(outcome)] == 2);
    CHECK(h.counters().checks_failed == 2);
  }
}

TEST_CASE("server: a body mismatch judged by evaluate_response takes the server down") {
  ServerHealth h(spec(), kT0);
  const CheckSpec check;
  h.on_check_result(evaluate_response(200, "Traveler server is available.", check), kT0);
  h.on_check_result(evaluate_response(200, "Traveler server is not available.", check), kT0 + 1s);
  CHECK(h.state() == ServerState::up);
  h.on_check_result(evaluate_response(200, "<html>Error</html>", check), kT0 + 2s);
  CHECK(h.state() == ServerState::down);
  CHECK(h.last_transition_reason() == Reason::check_body);
}

TEST_CASE("server: default spec, 1 s checks: down after 2 failures, up after 2 passes") {
  ServerHealth h(spec(), kT0);
  TimePoint t = kT0;
  feed(h, t, pass(), 3);
  feed(h, t, fail(), 2);
  CHECK(h.state() == ServerState::down);
  feed(h, t, pass(), 1);
  CHECK(h.state() == ServerState::down);
  feed(h, t, pass(), 1);  // 2 s after the down: the first hold (2 s) has passed
  CHECK(h.state() == ServerState::up);
}

TEST_CASE("server: passive failures eject before the next active check") {
  for (int threshold = 1; threshold <= 6; ++threshold) {
    CAPTURE(threshold);
    ServerHealth h(spec(2, 2, threshold), kT0);
    h.on_check_result(pass(), kT0);
    for (int i = 1; i < threshold; ++i) {
      CHECK_FALSE(h.on_passive_failure(PassiveFailure::connect, kT0 + 100ms));
      REQUIRE(h.state() == ServerState::up);
    }
    CHECK(h.on_passive_failure(PassiveFailure::connect, kT0 + 200ms));
    CHECK(h.state() == ServerState::down);
    CHECK(h.last_transition() == kT0 + 200ms);
    CHECK(h.last_transition_reason() == Reason::passive_connect);
    CHECK(h.counters().ejections == 1);
    CHECK(h.counters().downs == 1);
    CHECK(h.counters().passive_failures[static_cast<std::size_t>(PassiveFailure::connect)] ==
          static_cast<std::uint64_t>(threshold));
  }
}

TEST_CASE("server: passive ejection works while still checking") {
  ServerHealth h(spec(), kT0);
  eject(h, kT0);
  CHECK(h.state() == ServerState::down);
}

TEST_CASE("server: every passive kind counts toward one streak; the last names the reason") {
  const std::vector<std::pair<PassiveFailure, Reason>> kinds = {
      {PassiveFailure::connect, Reason::passive_connect},
      {PassiveFailure::reset, Reason::passive_reset},
      {PassiveFailure::timeout, Reason::passive_timeout},
      {PassiveFailure::status_5xx, Reason::passive_5xx},
  };
  for (const auto& [kind, reason] : kinds) {
    ServerHealth h(spec(), kT0);
    h.on_passive_failure(PassiveFailure::reset, kT0);
    h.on_passive_failure(PassiveFailure::status_5xx, kT0);
    CHECK(h.state() == ServerState::up);
    h.on_passive_failure(kind, kT0 + 1ms);
    CHECK(h.state() == ServerState::down);
    CHECK(h.last_transition_reason() == reason);
    CHECK(h.last_failure() == reason);
    CHECK(h.counters().passive_failures[static_cast<std::size_t>(kind)] >= 1);
  }
}

TEST_CASE("server: a passive success resets the streak") {
  ServerHealth h(spec(), kT0);
  for (int round = 0; round < 50; ++round) {
    h.on_passive_failure(PassiveFailure::reset, kT0);
    h.on_passive_failure(PassiveFailure::timeout, kT0);
    CHECK_FALSE(h.on_passive_success(kT0));
    CHECK(h.passive_streak() == 0);
  }
  CHECK(h.state() == ServerState::up);
  CHECK(h.counters().passive_successes == 50);
  CHECK(h.counters().passive_failures[static_cast<std::size_t>(PassiveFailure::reset)] == 50);
  CHECK(h.counters().passive_failures[static_cast<std::size_t>(PassiveFailure::timeout)] == 50);
  eject(h, kT0);
  CHECK(h.state() == ServerState::down);
}

TEST_CASE("server: an active pass does not clear the passive streak") {
  ServerHealth h(spec(), kT0);
  h.on_passive_failure(PassiveFailure::status_5xx, kT0);
  h.on_passive_failure(PassiveFailure::status_5xx, kT0);
  h.on_check_result(pass(), kT0 + 1s);
  CHECK(h.state() == ServerState::up);
  h.on_passive_failure(PassiveFailure::status_5xx, kT0 + 1s);
  CHECK(h.state() == ServerState::down);
}

TEST_CASE("server: passive threshold 0 counts but never ejects") {
  ServerHealth h(spec(2, 2, 0), kT0);
  for (int i = 0; i < 100; ++i) CHECK_FALSE(h.on_passive_failure(PassiveFailure::connect, kT0));
  CHECK(h.state() == ServerState::up);
  CHECK(h.counters().passive_failures[0] == 100);
  CHECK(h.counters().ejections == 0);
}

TEST_CASE("server: an ejected server comes back only through rise checks after the hold") {
  ServerHealth h(spec(), kT0);
  TimePoint t = kT0;
  feed(h, t, pass(), 10);
  CHECK(h.pass_streak() == 10);
  eject(h, t);
  REQUIRE(h.state() == ServerState::down);
  CHECK(h.pass_streak() == 0);  // passes from before the ejection do not count
  CHECK(h.hold_until() == t + 2s);
  // Worker successes (old in-flight requests) do not bring it back.
  for (int i = 0; i < 10; ++i) CHECK_FALSE(h.on_passive_success(t + 100ms));
  CHECK(h.state() == ServerState::down);
  // rise passes inside the hold: still down.
  CHECK_FALSE(h.on_check_result(pass(), t + 1s));
  CHECK_FALSE(h.on_check_result(pass(), t + 1500ms));
  CHECK(h.state() == ServerState::down);
  // The next pass after the hold: up.
  CHECK(h.on_check_result(pass(), t + 2s));
  CHECK(h.state() == ServerState::up);
  CHECK(h.last_transition() == t + 2s);
  CHECK(h.last_transition_reason() == Reason::check_passed);
}

TEST_CASE("server: failures while down are counted but change nothing; the streak restarts on up") {
  ServerHealth h(spec(), kT0);
  eject(h, kT0);
  for (int i = 0; i < 10; ++i) CHECK_FALSE(h.on_passive_failure(PassiveFailure::connect, kT0 + 1s));
  CHECK(h.counters().ejections == 1);
  CHECK(h.counters().passive_failures[0] == 13);
  CHECK_FALSE(h.on_check_result(fail(), kT0 + 1s));
  CHECK(h.counters().downs == 1);
  h.on_check_result(pass(), kT0 + 2s);
  h.on_check_result(pass(), kT0 + 3s);
  REQUIRE(h.state() == ServerState::up);
  CHECK(h.passive_streak() == 0);
  h.on_passive_failure(PassiveFailure::connect, kT0 + 3s);
  h.on_passive_failure(PassiveFailure::connect, kT0 + 3s);
  CHECK(h.state() == ServerState::up);
  h.on_passive_failure(PassiveFailure::connect, kT0 + 3s);
  CHECK(h.state() == ServerState::down);
  CHECK(h.counters().ejections == 2);
}

TEST_CASE("server: repeated downs within the window double the hold up to the cap") {
  ServerHealth h(spec(), kT0);
  TimePoint t = kT0;
  const std::vector<std::chrono::milliseconds> expected = {2s, 4s, 8s, 16s, 30s, 30s, 30s, 30s};
  for (auto hold : expected) {
    CAPTURE(hold.count());
    eject(h, t);
    REQUIRE(h.state() == ServerState::down);
    CHECK(h.hold_until() - t == hold);
    // Passing all along; up exactly when the hold ends.
    h.on_check_result(pass(), h.hold_until() - 2s);
    h.on_check_result(pass(), h.hold_until() - 1ms);
    CHECK(h.state() == ServerState::down);
    t = h.hold_until();
    h.on_check_result(pass(), t);
    REQUIRE(h.state() == ServerState::up);
    t += 1s;
  }
  CHECK(h.counters().ejections == expected.size());
}

TEST_CASE("server: a quiet window resets the hold; the window boundary still doubles") {
  ServerHealth h(spec(), kT0);
  const auto window = HealthSpec{}.passive.hold_window;
  auto cycle = [&](TimePoint at) {
    eject(h, at);
    const auto hold = h.hold_until() - at;
    h.on_check_result(pass(), h.hold_until());
    h.on_check_result(pass(), h.hold_until());
    REQUIRE(h.state() == ServerState::up);
    return hold;
  };
  CHECK(cycle(kT0) == 2s);
  CHECK(cycle(kT0 + window) == 4s);              // exactly the window after the last down
  CHECK(cycle(kT0 + 2 * window + 1ms) == 2s);    // more than the window: back to the minimum
  CHECK(cycle(kT0 + 2 * window + 10s) == 4s);
}

TEST_CASE("server: active downs and ejections share one back-off ladder") {
  ServerHealth h(spec(), kT0);
  TimePoint t = kT0;
  feed(h, t, fail(), 2);
  CHECK(h.hold_until() == t - 1s + 2s);
  t = h.hold_until();
  feed(h, t, pass(), 2);
  REQUIRE(h.state() == ServerState::up);
  eject(h, t);
  CHECK(h.hold_until() - t == 4s);
  CHECK(h.counters().downs == 2);
  CHECK(h.counters().ejections == 1);
}

TEST_CASE("server: hold settings: none, and a cap equal to the minimum") {
  {
    ServerHealth h(no_hold(), kT0);
    for (int i = 0; i < 10; ++i) {
      eject(h, kT0 + i * 1s);
      CHECK(h.hold_until() == kT0 + i * 1s);
      h.on_check_result(pass(), kT0 + i * 1s);
      h.on_check_result(pass(), kT0 + i * 1s);
      REQUIRE(h.state() == ServerState::up);
    }
  }
  {
    HealthSpec s = spec();
    s.passive.max_hold = s.passive.min_hold;
    ServerHealth h(s, kT0);
    for (int i = 0; i < 10; ++i) {
      const TimePoint at = kT0 + i * 5s;
      eject(h, at);
      CHECK(h.hold_until() - at == 2s);
      h.on_check_result(pass(), at + 2s);
      h.on_check_result(pass(), at + 2s);
      REQUIRE(h.state() == ServerState::up);
    }
  }
}

// Reference for rise/fall without hold: down after `fall` failures in a row while up,
// up after `rise` passes in a row while down. Checked against every pass/fail sequence.
TEST_CASE("server: every sequence of 12 checks matches the rise/fall reference") {
  constexpr int kLength = 12;
  for (int rise = 1; rise <= 4; ++rise) {
    for (int fall = 1; fall <= 4; ++fall) {
      for (std::uint32_t bits = 0; bits < (1u << kLength); ++bits) {
        ServerHealth h(no_hold(rise, fall), kT0);
        bool down = false;
        int run = 0;  // length of the current run of equal results
        bool last = true;
        for (int i = 0; i < kLength; ++i) {
          const bool ok = (bits >> i) & 1u;
          run = (i > 0 && ok == last) ? run + 1 : 1;
          last = ok;
          if (!down && !ok && run >= fall) down = true;
          if (down && ok && run >= rise) down = false;
          const bool changed = h.on_check_result(ok ? pass() : fail(), kT0 + i * 1s);
          const bool now_down = h.state() == ServerState::down;
          if (now_down != down) {
            FAIL("rise " << rise << " fall " << fall << " bits " << bits << " step " << i);
          }
          if (changed != (h.counters().transitions > 0 && h.last_transition() == kT0 + i * 1s)) {
            FAIL("change report, bits " << bits << " step " << i);
          }
        }
      }
    }
  }
}

namespace {

struct FlapRun {
  std::vector<bool> results;          // per check
  std::vector<int> transition_steps;  // check index at which state() changed
  std::vector<bool> transition_down;  // direction
  std::vector<TimePoint> times;
};

// The server works for 2 s, fails for 2 s, and so on; checked every second.
FlapRun flap(const HealthSpec& s, int checks) {
  ServerHealth h(s, kT0);
  FlapRun run;
  ServerState previous = h.state();
  for (int i = 0; i < checks; ++i) {
    const TimePoint t = kT0 + i * 1s;
    const bool ok = (i / 2) % 2 == 0;
    run.results.push_back(ok);
    h.on_check_result(ok ? pass() : fail(), t);
    if (h.state() != previous) {
      run.transition_steps.push_back(i);
      run.transition_down.push_back(h.state() == ServerState::down);
      run.times.push_back(t);
      previous = h.state();
    }
  }
  return run;
}

// Each transition is backed by `fall` failures or `rise` passes in a row since the
// previous one, so no two transitions are closer than min(rise, fall) checks.
void check_rise_fall_bound(const FlapRun& run, int rise, int fall) {
  int previous = -1;
  for (std::size_t k = 0; k < run.transition_steps.size(); ++k) {
    const int step = run.transition_steps[k];
    const int need = run.transition_down[k] ? fall : rise;
    CHECK(step - previous >= need);
    for (int j = step - need + 1; j <= step; ++j) CHECK(run.results[j] == !run.transition_down[k]);
    if (k > 0) CHECK(run.transition_down[k] != run.transition_down[k - 1]);
    previous = step;
  }
  const int checks = static_cast<int>(run.results.size());
  CHECK(static_cast<int>(run.transition_steps.size()) <= checks / std::min(rise, fall));
}

}  // namespace

TEST_CASE("server: flapping every 2 s, interval 1 s, rise 2 fall 2, no hold: bounded by rise/fall") {
  const auto run = flap(no_hold(2, 2), 120);
  check_rise_fall_bound(run, 2, 2);
  // Without a hold it follows the flap as fast as rise/fall allow: one change per 2 checks,
  // starting with the first failure pair (checks 2 and 3).
  CHECK(run.transition_steps.size() == 59);
  CHECK(run.transition_steps.front() == 3);
}

TEST_CASE("server: flapping every 2 s with the default hold: damped, then held at the cap") {
  const auto run = flap(spec(2, 2), 300);
  check_rise_fall_bound(run, 2, 2);
  REQUIRE(run.transition_steps.size() >= 4);
  CHECK(run.transition_steps.size() < 30);
  // Downs last at least the hold: 2, 4, 8, 16, 30, 30 ... seconds.
  std::chrono::seconds hold = 2s;
  for (std::size_t k = 0; k + 1 < run.times.size(); k += 2) {
    REQUIRE(run.transition_down[k]);
    CHECK(run.times[k + 1] - run.times[k] >= hold);
    hold = std::min<std::chrono::seconds>(hold * 2, 30s);
  }
}

TEST_CASE("server: flapping with asymmetric rise 3 fall 2") {
  for (bool hold : {false, true}) {
    const auto run = flap(hold ? spec(3, 2) : no_hold(3, 2), 120);
    check_rise_fall_bound(run, 3, 2);
    // A 2-check pass window never reaches rise 3: down once, then stays down.
    CHECK(run.transition_steps.size() == 1);
  }
}

TEST_CASE("server: admin precedence over every liveness: maintenance, down, draining, up") {
  auto make = [](Liveness liveness) {
    ServerHealth h(spec(), kT0);
    if (liveness == Liveness::up) h.on_check_result(pass(), kT0);
    if (liveness == Liveness::down) eject(h, kT0);
    REQUIRE(h.liveness() == liveness);
    return h;
  };
  auto expected = [](Liveness liveness, AdminState admin) {
    if (admin == AdminState::maintenance) return ServerState::maintenance;
    if (liveness == Liveness::down) return ServerState::down;
    if (admin == AdminState::drain) return ServerState::draining;
    return ServerState::up;
  };
  for (Liveness liveness : {Liveness::checking, Liveness::up, Liveness::down}) {
    for (AdminState admin : {AdminState::ready, AdminState::drain, AdminState::maintenance}) {
      CAPTURE(to_string(liveness));
      CAPTURE(to_string(admin));
      // Admin state set after the liveness ...
      ServerHealth h = make(liveness);
      h.set_admin_state(admin, kT0 + 1s);
      CHECK(h.state() == expected(liveness, admin));
      CHECK(h.admin_state() == admin);
      // ... or before it.
      ServerHealth g(spec(), kT0);
      g.set_admin_state(admin, kT0);
      if (liveness == Liveness::up) g.on_check_result(pass(), kT0 + 1s);
      if (liveness == Liveness::down) eject(g, kT0 + 1s);
      CHECK(g.state() == expected(liveness, admin));
    }
  }
}

TEST_CASE("server: admin changes report only real routing changes") {
  ServerHealth h(spec(), kT0);
  CHECK(h.set_admin_state(AdminState::drain, kT0 + 1s));
  CHECK(h.state() == ServerState::draining);
  CHECK(h.last_transition() == kT0 + 1s);
  CHECK(h.last_transition_reason() == Reason::admin_drain);
  CHECK_FALSE(h.set_admin_state(AdminState::drain, kT0 + 2s));
  CHECK(h.last_transition() == kT0 + 1s);
  // Down wins over drain: the admin change is invisible to routing while down ...
  eject(h, kT0 + 3s);
  CHECK(h.state() == ServerState::down);
  CHECK(h.set_admin_state(AdminState::ready, kT0 + 4s) == false);
  CHECK(h.set_admin_state(AdminState::drain, kT0 + 4s) == false);
  // ... and shows again when it comes back.
  h.on_check_result(pass(), kT0 + 5s);
  h.on_check_result(pass(), kT0 + 6s);
  CHECK(h.state() == ServerState::draining);
  CHECK(h.set_admin_state(AdminState::maintenance, kT0 + 7s));
  CHECK(h.last_transition_reason() == Reason::admin_maintenance);
  CHECK(h.set_admin_state(AdminState::ready, kT0 + 8s));
  CHECK(h.state() == ServerState::up);
  CHECK(h.last_transition_reason() == Reason::admin_ready);
}

TEST_CASE("server: checks go on in maintenance; leaving it shows the true liveness") {
  ServerHealth h(spec(), kT0);
  TimePoint t = kT0;
  h.set_admin_state(AdminState::maintenance, t);
  feed(h, t, fail(), 5);
  CHECK(h.state() == ServerState::maintenance);
  CHECK(h.liveness() == Liveness::down);
  const auto transitions = h.counters().transitions;
  CHECK(h.set_admin_state(AdminState::ready, t));
  CHECK(h.state() == ServerState::down);
  CHECK(h.last_transition_reason() == Reason::admin_ready);
  CHECK(h.counters().transitions == transitions + 1);
}

TEST_CASE("server: availability from the pool table") {
  ServerHealth h(spec(), kT0);
  CHECK(h.availability() == 100);
  CHECK_FALSE(h.set_table_availability(80));  // still available
  CHECK(h.availability() == 80);
  CHECK(h.set_table_availability(0) == false);
  CHECK(h.set_table_availability(-1));  // constrained
  CHECK(h.availability() == -1);
  CHECK_FALSE(h.set_table_availability(-100));
  CHECK_FALSE(h.set_table_availability(-199));
  CHECK(h.set_table_availability(-200));  // bound users only
  CHECK_FALSE(h.set_table_availability(-5000));
  CHECK(h.availability() == -200);
  CHECK(h.set_table_availability(500));
  CHECK(h.availability() == 100);
  CHECK(h.state() == ServerState::up);  // availability never changes the state
  CHECK(h.counters().transitions == 0);
}

TEST_CASE("server: availability from the check header; the lower source wins") {
  ServerHealth h(spec(), kT0);
  CHECK_FALSE(h.on_check_result(pass(90), kT0));
  CHECK(h.check_availability() == 90);
  CHECK(h.availability() == 90);
  h.set_table_availability(70);
  CHECK(h.availability() == 70);
  CHECK(h.on_check_result(pass(-20), kT0 + 1s));  // class change through a check
  CHECK(h.availability() == -20);
  CHECK(h.set_table_availability(-200));
  CHECK(h.availability() == -200);
  // A failing check keeps the last value from the checks ...
  h.on_check_result(fail(), kT0 + 2s);
  CHECK(h.check_availability() == -20);
  // ... a passing one without the header drops it.
  h.set_table_availability(50);
  h.on_check_result(pass(), kT0 + 3s);
  CHECK_FALSE(h.check_availability().has_value());
  CHECK(h.availability() == 50);
  h.on_check_result(pass(1000), kT0 + 4s);
  CHECK(h.check_availability() == 100);
}

TEST_CASE("server: availability classes") {
  CHECK(classify_availability(100) == AvailabilityClass::available);
  CHECK(classify_availability(0) == AvailabilityClass::available);
  CHECK(classify_availability(-1) == AvailabilityClass::constrained);
  CHECK(classify_availability(-100) == AvailabilityClass::constrained);
  CHECK(classify_availability(-199) == AvailabilityClass::constrained);
  CHECK(classify_availability(-200) == AvailabilityClass::bound_only);
  CHECK(classify_availability(-201) == AvailabilityClass::bound_only);
  CHECK(clamp_availability(101) == 100);
  CHECK(clamp_availability(-201) == -200);
  CHECK(clamp_availability(-42) == -42);
}

TEST_CASE("server: reload keeps the state and applies new thresholds") {
  ServerHealth h(no_hold(2, 2), kT0);
  h.on_check_result(fail(), kT0);
  h.set_spec(no_hold(2, 1));
  CHECK(h.fail_streak() == 1);
  h.on_check_result(fail(), kT0 + 1s);
  CHECK(h.state() == ServerState::down);
  h.set_spec(no_hold(4, 1));
  for (int i = 0; i < 3; ++i) h.on_check_result(pass(), kT0 + 2s + i * 1s);
  CHECK(h.state() == ServerState::down);
  h.on_check_result(pass(), kT0 + 6s);
  CHECK(h.state() == ServerState::up);
}

TEST_CASE("server: nonsense thresholds are clamped, not trusted") {
  HealthSpec s = no_hold(0, -3);
  s.passive.consecutive_failures = -1;
  ServerHealth h(s, kT0);
  h.on_check_result(fail(), kT0);
  CHECK(h.state() == ServerState::down);  // fall clamped to 1
  h.on_check_result(pass(), kT0 + 1s);
  CHECK(h.state() == ServerState::up);    // rise clamped to 1
  for (int i = 0; i < 10; ++i) h.on_passive_failure(PassiveFailure::reset, kT0 + 2s);
  CHECK(h.state() == ServerState::up);    // negative threshold = off
  CHECK_FALSE(validate(s).empty());
  CHECK(validate(HealthSpec{}).empty());
}

TEST_CASE("server: passive spec validation") {
  PassiveSpec p;
  CHECK(validate(p).empty());
  p.max_hold = 1s;
  CHECK_FALSE(validate(p).empty());
  p = {};
  p.consecutive_failures = -1;
  CHECK_FALSE(validate(p).empty());
  p = {};
  p.min_hold = -1ms;
  CHECK_FALSE(validate(p).empty());
  p = {};
  p.hold_window = -1ms;
  CHECK_FALSE(validate(p).empty());
  p = {};
  p.consecutive_failures = 0;
  p.min_hold = 0ms;
  p.max_hold = 0ms;
  CHECK(validate(p).empty());
}

TEST_CASE("server: names") {
  CHECK(to_string(ServerState::up) == "up");
  CHECK(to_string(ServerState::down) == "down");
  CHECK(to_string(ServerState::draining) == "draining");
  CHECK(to_string(ServerState::maintenance) == "maintenance");
  CHECK(to_string(AdminState::ready) == "ready");
  CHECK(to_string(AdminState::drain) == "drain");
  CHECK(to_string(AdminState::maintenance) == "maintenance");
  CHECK(to_string(Liveness::checking) == "checking");
  CHECK(to_string(Liveness::up) == "up");
  CHECK(to_string(Liveness::down) == "down");
  CHECK(to_string(PassiveFailure::connect) == "connect");
  CHECK(to_string(PassiveFailure::reset) == "reset");
  CHECK(to_string(PassiveFailure::timeout) == "timeout");
  CHECK(to_string(PassiveFailure::status_5xx) == "5xx");
  for (int r = 0; r <= static_cast<int>(Reason::admin_maintenance); ++r) {
    CHECK(to_string(static_cast<Reason>(r)) != "?");
  }
  CHECK(to_string(Reason::passive_5xx) == "passive_5xx");
}

TEST_CASE("server: ServerState values match the router's enum") {
  // affinity::ServerState is { up, down, draining, maintenance } on uint8_t; the wiring
  // converts with a static_cast.
  CHECK(static_cast<int>(ServerState::up) == 0);
  CHECK(static_cast<int>(ServerState::down) == 1);
  CHECK(static_cast<int>(ServerState::draining) == 2);
  CHECK(static_cast<int>(ServerState::maintenance) == 3);
  CHECK(sizeof(ServerState) == 1);
}

TEST_CASE("server: a stall counts as a failed check but never as the last one of fall") {
  SUBCASE("fall 2: stall then one failed check takes the server down") {
    TimePoint t = kT0;
    ServerHealth h(no_hold(2, 2), t);
    feed(h, t, pass(), 1);
    REQUIRE(h.liveness() == Liveness::up);
    h.on_stall(t);
    CHECK(h.fail_streak() == 1);
    CHECK(h.liveness() == Liveness::up);
    h.on_stall(t);  // a second stall alone still does not take it down
    CHECK(h.fail_streak() == 1);
    CHECK(h.liveness() == Liveness::up);
    CHECK(h.counters().stalls == 2);
    feed(h, t, fail(Outcome::fail_timeout), 1);
    CHECK(h.liveness() == Liveness::down);
  }
  SUBCASE("a passing check after a stall clears it: a quiet server holding Pings stays up") {
    TimePoint t = kT0;
    ServerHealth h(no_hold(2, 2), t);
    feed(h, t, pass(), 1);
    h.on_stall(t);
    feed(h, t, pass(), 1);
    CHECK(h.fail_streak() == 0);
    feed(h, t, fail(Outcome::fail_timeout), 1);
    CHECK(h.liveness() == Liveness::up);
  }
  SUBCASE("fall 3: stalls count once per run of failures, however many workers report them") {
    TimePoint t = kT0;
    ServerHealth h(no_hold(2, 3), t);
    feed(h, t, pass(), 1);
    h.on_stall(t);
    h.on_stall(t);  // another worker, the same silence
    CHECK(h.fail_streak() == 1);
    feed(h, t, fail(Outcome::fail_timeout), 1);
    h.on_stall(t);  // the silence goes on: what the timed-out check saw
    CHECK(h.fail_streak() == 2);
    CHECK(h.liveness() == Liveness::up);
    feed(h, t, fail(Outcome::fail_timeout), 1);
    CHECK(h.liveness() == Liveness::down);
  }
  SUBCASE("fall 1: a stall counts nothing, only the check decides") {
    TimePoint t = kT0;
    ServerHealth h(no_hold(2, 1), t);
    feed(h, t, pass(), 1);
    h.on_stall(t);
    CHECK(h.fail_streak() == 0);
    CHECK(h.liveness() == Liveness::up);
  }
  SUBCASE("a down server ignores stalls") {
    TimePoint t = kT0;
    ServerHealth h(no_hold(2, 2), t);
    feed(h, t, fail(), 2);
    REQUIRE(h.liveness() == Liveness::down);
    feed(h, t, pass(), 1);
    h.on_stall(t);
    CHECK(h.pass_streak() == 1);
  }
}
