// One pool server's health state machine (rise/fall checks, passive ejection with hold-down
// back-off, admin state, availability). Pure: each event carries its time; no clock, no I/O.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string_view>

#include "health/check_result.h"
#include "health/clock.h"
#include "health/server_state.h"

namespace sprayer::health {

struct PassiveSpec {
  // Consecutive failures reported by workers, with no success in between, that eject the
  // server before its next active check. 0 = passive ejection off (still counted).
  int consecutive_failures = 3;
  // After any health-driven down (`fall` checks or an ejection) the server stays down at
  // least this long, even if `rise` checks pass sooner. A down within hold_window of the
  // previous one doubles the hold, up to max_hold, so a flapping server is damped; a server
  // that stays healthy for hold_window starts again from min_hold.
  std::chrono::milliseconds min_hold{2000};
  std::chrono::milliseconds max_hold{30000};
  std::chrono::milliseconds hold_window{std::chrono::minutes(5)};
};

struct HealthSpec {
  CheckSpec check;
  PassiveSpec passive;
};

std::string_view validate(const PassiveSpec& spec) noexcept;
std::string_view validate(const HealthSpec& spec) noexcept;  // empty when usable

inline constexpr std::size_t kCheckOutcomes = 6;

struct HealthCounters {
  std::uint64_t checks_passed = 0;
  std::uint64_t checks_failed = 0;
  std::array<std::uint64_t, kCheckOutcomes> check_outcomes{};                // by CheckResult::Outcome
  std::array<std::uint64_t, kPassiveFailureKinds> passive_failures{};  // by PassiveFailure
  std::uint64_t passive_successes = 0;
  std::uint64_t ejections = 0;    // passive ejections
  std::uint64_t stalls = 0;       // stalls reported by workers
  std::uint64_t downs = 0;        // health-driven downs: `fall` failed checks plus ejections
  std::uint64_t transitions = 0;  // changes of state()
};

class ServerHealth {
 public:
  ServerHealth(const HealthSpec& spec, TimePoint now);

  // Reload: new thresholds apply from the next event; streaks and states are kept.
  void set_spec(const HealthSpec& spec);

  // Each returns true when something routing reads changed: state() or the
  // availability class (classify_availability(availability())).

  // Active check. A pass while `checking` confirms `up`; `rise` consecutive passes bring a
  // down server up, but not before hold_until(); `fall` consecutive failures take a
  // checking or up server down. A passing check's availability (or its absence) replaces
  // the previous one from the checks.
  bool on_check_result(const CheckResult& result, TimePoint now);
  // Passive accounting. Only active checks bring an ejected server back: a worker's
  // success on a down server is an old in-flight request, not proof of recovery. Active
  // passes do not clear the passive streak either, so a server whose status page works
  // while real traffic fails is still ejected.
  bool on_passive_failure(PassiveFailure kind, TimePoint now);
  bool on_passive_success(TimePoint now);
  // A worker saw a request wait on this server with nothing at all coming back from it for
  // a while: the server may be hung (SIGSTOP, a stuck JVM). That counts as one failed check
  // but never as the one that takes the server down: a quiet server holding long-polls looks
  // the same, so only a real check can confirm it. The caller hurries that check.
  // Only the first stall of a failure streak counts. Every worker reports the same silence
  // once, and a silence that goes on while checks time out is the span those checks already
  // observe: counting either again would let one pause of stall_after + timeout (a full GC,
  // a starved VM) take the server down whatever `fall` says, and how soon would depend on
  // the number of workers.
  void on_stall(TimePoint now);
  bool set_admin_state(AdminState admin, TimePoint now);
  // From the pool table; clamped to [-200, 100].
  bool set_table_availability(int availability);

  ServerState state() const noexcept { return state_; }
  Liveness liveness() const noexcept { return liveness_; }
  AdminState admin_state() const noexcept { return admin_; }
  // The more restrictive (lower) of the table's and the last passing check's value, so two
  // sources that disagree cannot make the server flip between classes; 100 when neither
  // has reported.
  int availability() const noexcept;
  std::optional<int> table_availability() const noexcept { return table_availability_; }
  std::optional<int> check_availability() const noexcept { return check_availability_; }

  TimePoint last_transition() const noexcept { return last_transition_; }  // construction time at first
  Reason last_transition_reason() const noexcept { return transition_reason_; }
  Reason last_failure() const noexcept { return last_failure_; }  // none until one happens
  std::optional<TimePoint> last_failure_time() const noexcept { return last_failure_at_; }
  // A down server does not come up before this (meaningless unless liveness() is down).
  TimePoint hold_until() const noexcept { return hold_until_; }
  // A failed check or a stall since the last pass, and not down yet: the checks that
  // confirm or clear it run at fast_interval (HealthTracker).
  bool suspected() const noexcept { return liveness_ != Liveness::down && fail_streak_ > 0; }
  int pass_streak() const noexcept { return pass_streak_; }
  int fail_streak() const noexcept { return fail_streak_; }
  int passive_streak() const noexcept { return passive_streak_; }
  const HealthCounters& counters() const noexcept { return counters_; }

 private:
  struct RoutingKey {
    ServerState state;
    AvailabilityClass availability;
  };
  RoutingKey routing_key() const noexcept;
  ServerState compute_state() const noexcept;
  void go_down(Reason reason, TimePoint now, bool ejection);
  // Recomputes state(), records a transition, reports whether routing is affected.
  bool settle(RoutingKey before, Reason reason, TimePoint now);

  int rise_ = 2;
  int fall_ = 2;
  PassiveSpec passive_;

  Liveness liveness_ = Liveness::checking;
  AdminState admin_ = AdminState::ready;
  ServerState state_ = ServerState::up;
  std::optional<int> table_availability_;
  std::optional<int> check_availability_;

  int pass_streak_ = 0;
  int fail_streak_ = 0;
  int passive_streak_ = 0;
  bool stall_counted_ = false;  // the current fail streak holds a stall (on_stall)

  int hold_level_ = 0;  // doublings of min_hold for the current down
  std::optional<TimePoint> last_down_;
  TimePoint hold_until_{};

  TimePoint last_transition_;
  Reason transition_reason_ = Reason::none;
  Reason last_failure_ = Reason::none;
  std::optional<TimePoint> last_failure_at_;
  HealthCounters counters_;
};

}  // namespace sprayer::health
