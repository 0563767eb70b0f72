// Check results and a fixed start time shared by the health unit tests.
#pragma once

#include <chrono>
#include <optional>

#include "health/check_result.h"
#include "health/clock.h"

namespace sprayer::test {

inline const health::TimePoint kT0 = health::TimePoint{} + std::chrono::hours(1);

inline health::CheckResult pass(std::optional<int> availability = std::nullopt) {
  health::CheckResult r;
  r.outcome = health::CheckResult::Outcome::pass;
  r.status = 200;
  r.availability = availability;
  return r;
}

}  // namespace sprayer::test
