// Unit tests for the check schedule of a suspected server (health.fast_interval): checks fired
// by hand at chosen times, so every schedule and verdict time is exact and no wall clock is read.
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
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

CheckResult refused() { return failed_check(Outcome::fail_connect, 1ms); }
CheckResult timed_out() { return failed_check(Outcome::fail_timeout, 800ms); }

// interval 1 s (10 % jitter), fast_interval 200 ms, timeout 800 ms, rise 2, fall 3.
HealthSpec fall3() {
  HealthSpec spec;
  spec.check.fall = 3;
  return spec;
}

// One tracked server whose checks the test fires itself, like the checker's timer would.
struct Server {
  HealthTracker& tracker;
  std::string id = "t1";

  TimePoint next() const {
    auto next = tracker.next_check_time(id);
    REQUIRE(next.has_value());
    return *next;
  }
  // Starts the due check at its time, answers it `latency` later; returns when it started.
  TimePoint check(const CheckResult& result, Duration latency) {
    const TimePoint start = next();
    tracker.on_check_started(id, start);
    tracker.on_check_result(id, result, start + latency);
    return start;
  }
  const ServerHealth& health() const { return *tracker.find(id); }
  ServerState state() const { return tracker.view()->find(id)->state; }
};

bool within_interval(TimePoint next, TimePoint after) {
  return next - after >= 900ms && next - after <= 1100ms;
}

}  // namespace

TEST_CASE("fast checks: a failed check is confirmed fast_interval after it started, not an interval later") {
  SplitMix64 random(1);
  HealthTracker tracker(fall3(), random);
  tracker.add_server("t1", kT0);
  Server s{tracker};
  const TimePoint first = s.check(pass(), 5ms);
  CHECK(within_interval(s.next(), first + 5ms));

  const TimePoint a = s.check(refused(), 5ms);
  CHECK(s.health().suspected());
  CHECK(s.next() == a + 200ms);
  const TimePoint b = s.check(refused(), 5ms);
  CHECK(s.state() == ServerState::up);
  CHECK(s.next() == b + 200ms);
  s.check(refused(), 5ms);
  CHECK(s.state() == ServerState::down);
  CHECK(s.health().last_transition() == a + 400ms + 5ms);  // (fall - 1) x fast_interval after the first
  CHECK_FALSE(s.health().suspected());
}

TEST_CASE("fast checks: a hung server is down stall_after + (fall - 1) x timeout after it stopped") {
  SplitMix64 random(2);
  HealthTracker tracker(fall3(), random);
  tracker.add_server("t1", kT0);
  Server s{tracker};
  s.check(pass(), 5ms);
  const TimePoint hung = s.next() - 500ms;  // halfway to the next check
  const TimePoint stall = hung + 300ms;     // health.stall_after

  CHECK(tracker.on_stall("t1", stall));
  CHECK(s.next() == stall);
  CHECK(s.check(timed_out(), 800ms) == stall);
  // Waited out its timeout, longer than fast_interval: the next one starts at once.
  CHECK(s.next() == stall + 800ms);
  CHECK(s.state() == ServerState::up);
  CHECK(s.check(timed_out(), 800ms) == stall + 800ms);
  CHECK(s.state() == ServerState::down);
  CHECK(s.health().last_transition() == hung + 300ms + 2 * 800ms);
  CHECK(s.health().last_transition_reason() == Reason::check_timeout);
}

TEST_CASE("fast checks: without a stall, a hung server is down one interval + fall x timeout after it stopped") {
  SplitMix64 random(3);
  HealthTracker tracker(fall3(), random);
  tracker.add_server("t1", kT0);
  Server s{tracker};
  const TimePoint last_pass = s.check(pass(), 5ms);
  const TimePoint first_fail = s.check(timed_out(), 800ms);
  CHECK(within_interval(first_fail, last_pass + 5ms));
  s.check(timed_out(), 800ms);
  s.check(timed_out(), 800ms);
  CHECK(s.state() == ServerState::down);
  CHECK(s.health().last_transition() == first_fail + 3 * 800ms);
}

TEST_CASE("fast checks: two checks of one server never overlap, whatever the answers and latencies") {
  SplitMix64 random(4), dice(44);
  HealthSpec spec = fall3();
  spec.passive.min_hold = 0ms;
  HealthTracker tracker(spec, random);
  tracker.set_servers(std::vector<std::string>{"t1", "t2"}, kT0);
  Server s{tracker};
  int fast = 0;
  for (int i = 0; i < 2000; ++i) {
    const TimePoint start = s.next();
    tracker.on_check_started("t1", start);
    // In flight: not due, not hurried by a stall, not in the earliest time either.
    REQUIRE_FALSE(tracker.next_check_time("t1").has_value());
    REQUIRE(tracker.due_checks(start + 1h) == std::vector<std::string>{"t2"});
    REQUIRE_FALSE(tracker.on_stall("t1", start + 1ms));
    REQUIRE(tracker.earliest_check_time() == tracker.next_check_time("t2"));

    const auto latency = std::chrono::milliseconds(1 + dice.next() % 800);
    const bool ok = dice.next() % 3 == 0;
    const TimePoint done = start + latency;
    tracker.on_check_result("t1", ok ? pass() : timed_out(), done);
    REQUIRE(s.next() >= done);
    if (s.health().suspected()) {
      ++fast;
      REQUIRE(s.next() == std::max(start + 200ms, done));
    } else {
      REQUIRE(within_interval(s.next(), done));
    }
  }
  CHECK(fast > 100);  // the fast path was exercised, and so was the other
  CHECK(fast < 1900);
}

TEST_CASE("fast checks: several workers' stalls of one silence count once; a silence that goes on adds nothing") {
  SplitMix64 random(5);
  HealthTracker tracker(fall3(), random);
  tracker.add_server("t1", kT0);
  Server s{tracker};
  s.check(pass(), 5ms);
  const TimePoint stall = s.next() - 500ms;
  for (int worker = 0; worker < 4; ++worker) tracker.on_stall("t1", stall);
  CHECK(s.health().fail_streak() == 1);
  CHECK(s.health().counters().stalls == 4);
  s.check(timed_out(), 800ms);
  CHECK(s.health().fail_streak() == 2);
  tracker.on_stall("t1", stall + 900ms);  // the same request, still without an answer
  CHECK(s.health().fail_streak() == 2);
  CHECK(s.state() == ServerState::up);  // two timed-out checks are needed, as fall 3 says
  s.check(timed_out(), 800ms);
  CHECK(s.state() == ServerState::down);

  SUBCASE("after a pass, a new silence counts again") {
    SplitMix64 other(6);
    HealthTracker again(fall3(), other);
    again.add_server("t1", kT0);
    Server r{again};
    r.check(pass(), 5ms);
    again.on_stall("t1", r.next() - 500ms);
    r.check(pass(), 5ms);  // a quiet server holding Pings: the check clears it
    CHECK(r.health().fail_streak() == 0);
    CHECK_FALSE(r.health().suspected());
    again.on_stall("t1", r.next() - 500ms);
    CHECK(r.health().fail_streak() == 1);
  }
}

TEST_CASE("fast checks: a stall hurries a check at most to fast_interval after the last one started") {
  SplitMix64 random(7);
  HealthTracker tracker(fall3(), random);
  tracker.add_server("t1", kT0);
  Server s{tracker};
  s.check(pass(), 5ms);
  const TimePoint failed = s.check(refused(), 5ms);
  REQUIRE(s.next() == failed + 200ms);
  CHECK_FALSE(tracker.on_stall("t1", failed + 50ms));
  CHECK(s.next() == failed + 200ms);
  CHECK(s.health().fail_streak() == 2);  // the stall still counts (the first of this streak)

  SUBCASE("a check that started long ago does not hold a stall back") {
    s.check(pass(), 5ms);
    const TimePoint now = s.next() - 300ms;
    CHECK(tracker.on_stall("t1", now));
    CHECK(s.next() == now);
  }
}

TEST_CASE("fast checks: a pass ends the suspicion; rise checks after a down keep the interval") {
  SplitMix64 random(8);
  HealthSpec spec = fall3();
  spec.passive.min_hold = 0ms;
  HealthTracker tracker(spec, random);
  tracker.add_server("t1", kT0);
  Server s{tracker};
  s.check(pass(), 5ms);
  s.check(refused(), 5ms);
  const TimePoint cleared = s.check(pass(), 5ms);
  CHECK_FALSE(s.health().suspected());
  CHECK(within_interval(s.next(), cleared + 5ms));

  for (int i = 0; i < 3; ++i) s.check(refused(), 5ms);
  REQUIRE(s.state() == ServerState::down);
  for (int i = 0; i < 5; ++i) {  // failing while down: no hurry, it is out of rotation
    const TimePoint at = s.check(refused(), 5ms);
    CHECK(within_interval(s.next(), at + 5ms));
  }
  const TimePoint rise1 = s.check(pass(), 5ms);
  CHECK(within_interval(s.next(), rise1 + 5ms));
  s.check(pass(), 5ms);
  CHECK(s.state() == ServerState::up);
}

TEST_CASE("fast checks: fall 1 goes down on the first failure; no fast checks follow") {
  SplitMix64 random(9);
  HealthSpec spec;
  spec.check.fall = 1;
  HealthTracker tracker(spec, random);
  tracker.add_server("t1", kT0);
  Server s{tracker};
  s.check(pass(), 5ms);
  const TimePoint at = s.check(refused(), 5ms);
  CHECK(s.state() == ServerState::down);
  CHECK(within_interval(s.next(), at + 5ms));
}

TEST_CASE("fast checks: a flapping server is still damped by the hold-down") {
  // Dead for 1.5 s out of every 3 s for 10 minutes; fall 2, so fast checks take it down
  // within one fast_interval of a failed check. The hold doubles for downs within
  // hold_window (5 min) of the last, up to max_hold (30 s), whatever the check pace.
  SplitMix64 random(10);
  HealthTracker tracker(HealthSpec{}, random);
  tracker.add_server("t1", kT0);
  Server s{tracker};
  const auto alive = [](TimePoint t) { return (t - kT0) % 3s < 1500ms; };
  std::vector<TimePoint> downs;
  ServerState before = s.state();
  while (s.next() < kT0 + 10min) {
    const TimePoint start = s.next();
    s.check(alive(start) ? pass() : refused(), 5ms);
    if (s.state() == ServerState::down && before != ServerState::down) downs.push_back(start + 5ms);
    before = s.state();
  }
  REQUIRE(downs.size() >= 3);
  // Holds 2, 4, 8, 16 s, then 30 s each: about 4 + 570 / 31.5 downs in 10 min, far from
  // the 200 a server followed blindly would make.
  CHECK(downs.size() <= 24);
  CHECK(s.health().counters().downs == downs.size());
  for (std::size_t i = 5; i < downs.size(); ++i) CHECK(downs[i] - downs[i - 1] >= 30s);
}

TEST_CASE("fast checks: reload changes fast_interval from the next result; above the interval it is the interval") {
  SplitMix64 random(11);
  HealthSpec spec = fall3();
  HealthTracker tracker(spec, random);
  tracker.add_server("t1", kT0);
  Server s{tracker};
  s.check(pass(), 5ms);
  TimePoint at = s.check(refused(), 5ms);
  CHECK(s.next() == at + 200ms);
  spec.check.fast_interval = 50ms;
  tracker.set_spec(spec);
  CHECK(s.next() == at + 200ms);  // the pending check stays
  at = s.check(refused(), 5ms);
  CHECK(s.next() == at + 50ms);

  SplitMix64 other(12);
  HealthSpec odd = fall3();
  odd.check.interval = 100ms;
  odd.check.jitter = 0;
  odd.check.fast_interval = 2s;  // validate() refuses it; the schedule is not made slower
  CHECK_FALSE(validate(odd).empty());
  HealthTracker clamped(odd, other);
  clamped.add_server("t1", kT0);
  Server c{clamped};
  at = c.check(refused(), 5ms);
  CHECK(c.next() == at + 100ms);
}

TEST_CASE("fast checks: validation of fast_interval") {
  CheckSpec spec;
  CHECK(validate(spec).empty());
  spec.fast_interval = spec.interval;
  CHECK(validate(spec).empty());
  spec.fast_interval = spec.interval + 1ms;
  CHECK(validate(spec) == "health check fast_interval must not exceed the interval");
  spec.fast_interval = 0ms;
  CHECK(validate(spec) == "health check fast_interval must be positive");
}
