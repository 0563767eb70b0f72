// The per-server health state machine (server_health.h): streak counting, hold-down
// back-off and the precedence maintenance > down > draining > up.
#include "health/server_health.h"

#include <algorithm>
#include <limits>

namespace sprayer::health {
namespace {

// Streaks saturate instead of overflowing on a server that stays up for years.
void bump(int& streak) noexcept {
  if (streak < std::numeric_limits<int>::max()) ++streak;
}

Reason check_reason(CheckResult::Outcome outcome) noexcept {
  switch (outcome) {
    case CheckResult::Outcome::pass: return Reason::check_passed;
    case CheckResult::Outcome::fail_status: return Reason::check_status;
    case CheckResult::Outcome::fail_body: return Reason::check_body;
    case CheckResult::Outcome::fail_timeout: return Reason::check_timeout;
    case CheckResult::Outcome::fail_connect: return Reason::check_connect;
    case CheckResult::Outcome::fail_reset: return Reason::check_reset;
  }
  return Reason::check_connect;
}

Reason passive_reason(PassiveFailure kind) noexcept {
  switch (kind) {
    case PassiveFailure::connect: return Reason::passive_connect;
    case PassiveFailure::reset: return Reason::passive_reset;
    case PassiveFailure::timeout: return Reason::passive_timeout;
    case PassiveFailure::status_5xx: return Reason::passive_5xx;
  }
  return Reason::passive_connect;
}

Reason admin_reason(AdminState admin) noexcept {
  switch (admin) {
    case AdminState::ready: return Reason::admin_ready;
    case AdminState::drain: return Reason::admin_drain;
    case AdminState::maintenance: return Reason::admin_maintenance;
  }
  return Reason::admin_ready;
}

}  // namespace

std::string_view validate(const PassiveSpec& spec) noexcept {
  if (spec.consecutive_failures < 0) return "passive consecutive_failures must not be negative";
  if (spec.min_hold.count() < 0) return "passive min_hold must not be negative";
  if (spec.max_hold < spec.min_hold) return "passive max_hold must not be below min_hold";
  if (spec.hold_window.count() < 0) return "passive hold_window must not be negative";
  return {};
}

std::string_view validate(const HealthSpec& spec) noexcept {
  if (auto error = validate(spec.check); !error.empty()) return error;
  return validate(spec.passive);
}

ServerHealth::ServerHealth(const HealthSpec& spec, TimePoint now) : last_transition_(now) {
  set_spec(spec);
}

void ServerHealth::set_spec(const HealthSpec& spec) {
  // validate() rejects these in config; clamping keeps a bad spec from wedging a server.
  rise_ = std::max(spec.check.rise, 1);
  fall_ = std::max(spec.check.fall, 1);
  passive_ = spec.passive;
  passive_.consecutive_failures = std::max(passive_.consecutive_failures, 0);
  passive_.min_hold = std::max(passive_.min_hold, std::chrono::milliseconds{0});
  passive_.max_hold = std::max(passive_.max_hold, passive_.min_hold);
}

int ServerHealth::availability() const noexcept {
  if (table_availability_ && check_availability_) return std::min(*table_availability_, *check_availability_);
  if (table_availability_) return *table_availability_;
  if (check_availability_) return *check_availability_;
  return kAvailabilityDefault;
}

ServerHealth::RoutingKey ServerHealth::routing_key() const noexcept {
  return {state_, classify_availability(availability())};
}

ServerState ServerHealth::compute_state() const noexcept {
  if (admin_ == AdminState::maintenance) return ServerState::maintenance;
  if (liveness_ == Liveness::down) return ServerState::down;
  if (admin_ == AdminState::drain) return ServerState::draining;
  return ServerState::up;
}

bool ServerHealth::settle(RoutingKey before, Reason reason, TimePoint now) {
  state_ = compute_state();
  if (state_ != before.state) {
    ++counters_.transitions;
    last_transition_ = now;
    transition_reason_ = reason;
  }
  const RoutingKey after = routing_key();
  return after.state != before.state || after.availability != before.availability;
}

void ServerHealth::go_down(Reason reason, TimePoint now, bool ejection) {
  liveness_ = Liveness::down;
  pass_streak_ = 0;
  fail_streak_ = 0;
  stall_counted_ = false;
  passive_streak_ = 0;
  ++counters_.downs;
  if (ejection) ++counters_.ejections;

  if (last_down_ && now - *last_down_ <= passive_.hold_window) {
    hold_level_ = std::min(hold_level_ + 1, 30);
  } else {
    hold_level_ = 0;
  }
  last_down_ = now;
  auto hold = passive_.min_hold;
  for (int i = 0; i < hold_level_ && hold < passive_.max_hold; ++i) hold *= 2;
  hold_until_ = now + std::min(hold, passive_.max_hold);
}

bool ServerHealth::on_check_result(const CheckResult& result, TimePoint now) {
  const RoutingKey before = routing_key();
  const auto outcome_index = static_cast<std::size_t>(result.outcome);
  if (outcome_index < counters_.check_outcomes.size()) ++counters_.check_outcomes[outcome_index];

  if (result.passed()) {
    ++counters_.checks_passed;
    fail_streak_ = 0;
    stall_counted_ = false;
    bump(pass_streak_);
    check_availability_ = result.availability ? std::optional<int>(clamp_availability(*result.availability))
                                              : std::nullopt;
    if (liveness_ == Liveness::checking) {
      liveness_ = Liveness::up;
    } else if (liveness_ == Liveness::down && pass_streak_ >= rise_ && now >= hold_until_) {
      liveness_ = Liveness::up;
      passive_streak_ = 0;  // failures from before the outage say nothing about now
    }
    return settle(before, Reason::check_passed, now);
  }

  ++counters_.checks_failed;
  pass_streak_ = 0;
  bump(fail_streak_);
  const Reason reason = check_reason(result.outcome);
  last_failure_ = reason;
  last_failure_at_ = now;
  if (liveness_ != Liveness::down && fail_streak_ >= fall_) go_down(reason, now, false);
  return settle(before, reason, now);
}

void ServerHealth::on_stall(TimePoint now) {
  ++counters_.stalls;
  last_failure_at_ = now;
  if (liveness_ == Liveness::down || stall_counted_) return;
  if (fail_streak_ + 1 < fall_) {
    ++fail_streak_;
    pass_streak_ = 0;
    stall_counted_ = true;
  }
}

bool ServerHealth::on_passive_failure(PassiveFailure kind, TimePoint now) {
  const RoutingKey before = routing_key();
  const auto kind_index = static_cast<std::size_t>(kind);
  if (kind_index < counters_.passive_failures.size()) ++counters_.passive_failures[kind_index];
  bump(passive_streak_);
  const Reason reason = passive_reason(kind);
  last_failure_ = reason;
  last_failure_at_ = now;
  if (liveness_ != Liveness::down && passive_.consecutive_failures > 0 &&
      passive_streak_ >= passive_.consecutive_failures) {
    go_down(reason, now, true);
  }
  return settle(before, reason, now);
}

bool ServerHealth::on_passive_success(TimePoint now) {
  ++counters_.passive_successes;
  passive_streak_ = 0;
  return false;
}

bool ServerHealth::set_admin_state(AdminState admin, TimePoint now) {
  const RoutingKey before = routing_key();
  admin_ = admin;
  return settle(before, admin_reason(admin), now);
}

bool ServerHealth::set_table_availability(int availability) {
  const RoutingKey before = routing_key();
  table_availability_ = clamp_availability(availability);
  const RoutingKey after = routing_key();
  return after.availability != before.availability;
}

}  // namespace sprayer::health
