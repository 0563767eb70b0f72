// Unit tests for the injected clock and random source (health/clock.h).
#include <doctest/doctest.h>

#include <chrono>
#include <cstdint>
#include <set>
#include <vector>

#include "health/clock.h"

using namespace sprayer::health;
using namespace std::chrono_literals;

TEST_CASE("clock: ManualClock moves only when told") {
  ManualClock clock(TimePoint{} + 1h);
  const Clock& as_clock = clock;
  CHECK(as_clock.now() == TimePoint{} + 1h);
  CHECK(as_clock.now() == TimePoint{} + 1h);
  clock.advance(250ms);
  CHECK(as_clock.now() == TimePoint{} + 1h + 250ms);
  clock.set(TimePoint{} + 5s);
  CHECK(as_clock.now() == TimePoint{} + 5s);
  CHECK(ManualClock().now() == TimePoint{});
}

TEST_CASE("clock: SteadyClock reads the process's steady clock, through the Clock interface") {
  // Bracketed by two reads of std::chrono::steady_clock: a SteadyClock that read another
  // clock (the wall clock, a cached or a fixed value) falls outside the bracket.
  SteadyClock steady;
  const Clock& clock = steady;
  const auto before = std::chrono::steady_clock::now();
  const auto read = clock.now();
  const auto after = std::chrono::steady_clock::now();
  CHECK(read >= before);
  CHECK(read <= after);
}

TEST_CASE("random: SplitMix64 matches the reference sequence") {
  // Reference outputs of splitmix64 seeded with 0 (Vigna's splitmix64.c).
  SplitMix64 random(0);
  CHECK(random.next() == 0xE220A8397B1DCDAFULL);
  CHECK(random.next() == 0x6E789E6AA1B965F4ULL);
  CHECK(random.next() == 0x06C45D188009454FULL);
}

TEST_CASE("random: same seed, same sequence; other seed, other sequence") {
  SplitMix64 a(42), b(42), c(43);
  std::vector<std::uint64_t> va, vb, vc;
  for (int i = 0; i < 100; ++i) {
    va.push_back(a.next());
    vb.push_back(b.next());
    vc.push_back(c.next());
  }
  CHECK(va == vb);
  CHECK(va != vc);
  CHECK(std::set<std::uint64_t>(va.begin(), va.end()).size() == va.size());
}

TEST_CASE("random: unit_interval stays in [0, 1) and spreads") {
  SplitMix64 random(7);
  double lo = 1.0, hi = 0.0, sum = 0.0;
  const int n = 10000;
  for (int i = 0; i < n; ++i) {
    const double u = unit_interval(random);
    REQUIRE(u >= 0.0);
    REQUIRE(u < 1.0);
    lo = std::min(lo, u);
    hi = std::max(hi, u);
    sum += u;
  }
  CHECK(lo < 0.01);
  CHECK(hi > 0.99);
  CHECK(sum / n == doctest::Approx(0.5).epsilon(0.02));
}

namespace {
// Returns the extremes, to pin the mapping from 64 bits to [0, 1).
class FixedRandom final : public Random {
 public:
  explicit FixedRandom(std::uint64_t value) : value_(value) {}
  std::uint64_t next() override { return value_; }

 private:
  std::uint64_t value_;
};
}  // namespace

TEST_CASE("random: unit_interval maps the extremes inside [0, 1)") {
  FixedRandom zero(0), max(~0ULL);
  CHECK(unit_interval(zero) == 0.0);
  CHECK(unit_interval(max) < 1.0);
  CHECK(unit_interval(max) > 0.9999999);
}
