// HealthTracker: one ServerHealth per pool server on the control thread, the immutable
// HealthView it publishes to workers, and the jittered check schedule. Pure: time is passed in.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "health/check_result.h"
#include "health/clock.h"
#include "health/server_health.h"
#include "health/server_state.h"

namespace sprayer::health {

struct HealthEntry {
  std::string id;  // pool_server.server_id
  ServerState state = ServerState::up;
  int availability = kAvailabilityDefault;
  TimePoint last_transition{};
  Reason reason = Reason::none;  // of the last transition
};

// What workers route by. Shared as shared_ptr<const HealthView>; never changes once built.
// A new view (version + 1) is built only when routing would differ: the server list or
// its order, a server's state, or a server's availability class. The exact availability
// value of a server is the one at the last publication; /status reads the live one from
// HealthTracker::find().
struct HealthView {
  std::uint64_t version = 0;
  std::vector<HealthEntry> servers;  // in configuration order

  const HealthEntry* find(std::string_view id) const noexcept;
};

class HealthTracker {
 public:
  // `random` must outlive the tracker. The first view (version 1) has no servers.
  HealthTracker(const HealthSpec& spec, Random& random);

  // Reload: thresholds apply from each server's next event, the interval from its next
  // scheduled check.
  void set_spec(const HealthSpec& spec);
  const HealthSpec& spec() const noexcept { return spec_; }

  // Every event returns true when it published a new view (wake the workers). Events for
  // ids the tracker does not know are ignored (false).

  // Reload: the new list, in configuration order. Servers already known keep their state,
  // admin state and schedule; new ones start `checking` with a first check spread over
  // one interval; missing ones are dropped. Later duplicates of an id are ignored.
  bool set_servers(std::span<const std::string> ids, TimePoint now);
  bool add_server(std::string_view id, TimePoint now);  // false too when already known
  bool remove_server(std::string_view id);

  // A check for `id` is in flight: next_check_time() is empty until its result.
  void on_check_started(std::string_view id, TimePoint now);
  // Schedules the next check: one jittered interval after `now`, or, while the server is
  // suspected (ServerHealth::suspected), fast_interval after this check started (at once
  // when it took longer, as a timed-out check does), so the verdict on a hung server comes
  // about stall_after + (fall - 1) x timeout after it stopped answering.
  bool on_check_result(std::string_view id, const CheckResult& result, TimePoint now);
  bool on_passive_failure(std::string_view id, PassiveFailure kind, TimePoint now);
  bool on_passive_success(std::string_view id, TimePoint now);
  // A worker reported a stall (ServerHealth::on_stall): the server's next check is due now
  // (or fast_interval after the last one started, if that is later) unless one is in flight,
  // whose answer then schedules the next. True when the check schedule moved (the checker
  // re-arms).
  bool on_stall(std::string_view id, TimePoint now);
  bool set_admin_state(std::string_view id, AdminState admin, TimePoint now);
  bool set_availability(std::string_view id, int availability);  // from the pool table

  // When the next check of `id` should start; empty when unknown or a check is in flight.
  std::optional<TimePoint> next_check_time(std::string_view id) const;
  // The earliest of those: arm the one check timer for it.
  std::optional<TimePoint> earliest_check_time() const;
  // Ids whose check is due at `now`, in configuration order.
  std::vector<std::string> due_checks(TimePoint now) const;

  std::shared_ptr<const HealthView> view() const noexcept { return view_; }
  std::uint64_t version() const noexcept { return view_->version; }

  // Live per-server details (counters, streaks, liveness) for /status and metrics.
  const ServerHealth* find(std::string_view id) const noexcept;
  std::size_t size() const noexcept { return slots_.size(); }

 private:
  struct Slot {
    std::string id;
    ServerHealth health;
    std::optional<TimePoint> next_check;     // empty while a check is in flight
    std::optional<TimePoint> check_started;  // of the check in flight or the last one
  };
  Slot* find_slot(std::string_view id) noexcept;
  const Slot* find_slot(std::string_view id) const noexcept;
  Slot make_slot(std::string_view id, TimePoint now);
  Duration jittered_interval();
  Duration fast_interval() const;
  TimePoint next_check_after(const Slot& slot, TimePoint now);
  // Publishes a new view when routing would differ from the current one.
  bool publish();

  HealthSpec spec_;
  Random& random_;
  std::vector<Slot> slots_;
  std::shared_ptr<const HealthView> view_;
};

}  // namespace sprayer::health
