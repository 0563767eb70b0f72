// Publishing HealthViews only on routing-relevant change, and scheduling jittered checks.
#include "health/health_view.h"

#include <algorithm>
#include <unordered_set>

namespace sprayer::health {
namespace {

bool same_routing(const HealthView& view, const std::vector<HealthEntry>& entries) noexcept {
  if (view.servers.size() != entries.size()) return false;
  for (std::size_t i = 0; i < entries.size(); ++i) {
    const HealthEntry& a = view.servers[i];
    const HealthEntry& b = entries[i];
    if (a.id != b.id || a.state != b.state ||
        classify_availability(a.availability) != classify_availability(b.availability)) {
      return false;
    }
  }
  return true;
}

Duration scale(std::chrono::milliseconds interval, double factor) {
  return std::chrono::duration_cast<Duration>(std::chrono::duration<double, std::milli>(
      static_cast<double>(interval.count()) * factor));
}

}  // namespace

const HealthEntry* HealthView::find(std::string_view id) const noexcept {
  // Pools are small (a handful of servers) and workers look up only when a view arrives.
  for (const auto& entry : servers) {
    if (entry.id == id) return &entry;
  }
  return nullptr;
}

HealthTracker::HealthTracker(const HealthSpec& spec, Random& random)
    : spec_(spec), random_(random), view_(std::make_shared<const HealthView>(HealthView{1, {}})) {}

void HealthTracker::set_spec(const HealthSpec& spec) {
  spec_ = spec;
  for (auto& slot : slots_) slot.health.set_spec(spec_);
}

HealthTracker::Slot* HealthTracker::find_slot(std::string_view id) noexcept {
  for (auto& slot : slots_) {
    if (slot.id == id) return &slot;
  }
  return nullptr;
}

const HealthTracker::Slot* HealthTracker::find_slot(std::string_view id) const noexcept {
  for (const auto& slot : slots_) {
    if (slot.id == id) return &slot;
  }
  return nullptr;
}

const ServerHealth* HealthTracker::find(std::string_view id) const noexcept {
  const Slot* slot = find_slot(id);
  return slot ? &slot->health : nullptr;
}

HealthTracker::Slot HealthTracker::make_slot(std::string_view id, TimePoint now) {
  // Anywhere in the first interval, so servers added together (start, reload) are not
  // checked in the same instant.
  const Duration first = scale(spec_.check.interval, unit_interval(random_));
  return Slot{std::string(id), ServerHealth(spec_, now), now + first, std::nullopt};
}

Duration HealthTracker::jittered_interval() {
  const double jitter = std::clamp(spec_.check.jitter, 0.0, 1.0);
  const double factor = 1.0 + jitter * (2.0 * unit_interval(random_) - 1.0);
  return scale(spec_.check.interval, factor);
}

Duration HealthTracker::fast_interval() const {
  // validate() keeps it within the interval; a spec that does not is not made slower by it.
  const Duration fast = std::min<Duration>(spec_.check.fast_interval, spec_.check.interval);
  return std::max<Duration>(fast, std::chrono::milliseconds(1));
}

TimePoint HealthTracker::next_check_after(const Slot& slot, TimePoint now) {
  if (!slot.health.suspected()) return now + jittered_interval();
  // Start to start, without jitter: the server is hit at most once per fast_interval, and a
  // check that outlasted it (a timeout on a hung server) is followed at once, never overlapped.
  return std::max(slot.check_started.value_or(now) + fast_interval(), now);
}

bool HealthTracker::publish() {
  std::vector<HealthEntry> entries;
  entries.reserve(slots_.size());
  for (const auto& slot : slots_) {
    entries.push_back(HealthEntry{slot.id, slot.health.state(), slot.health.availability(),
                                  slot.health.last_transition(), slot.health.last_transition_reason()});
  }
  if (same_routing(*view_, entries)) return false;
  view_ = std::make_shared<const HealthView>(HealthView{view_->version + 1, std::move(entries)});
  return true;
}

bool HealthTracker::set_servers(std::span<const std::string> ids, TimePoint now) {
  // Match every id against the old list before moving anything out of it.
  std::vector<std::string_view> wanted;
  std::vector<Slot*> old;
  std::unordered_set<std::string_view> seen;
  for (const auto& id : ids) {
    if (!seen.insert(id).second) continue;
    wanted.push_back(id);
    old.push_back(find_slot(id));
  }
  std::vector<Slot> next;
  next.reserve(wanted.size());
  for (std::size_t i = 0; i < wanted.size(); ++i) {
    next.push_back(old[i] ? std::move(*old[i]) : make_slot(wanted[i], now));
  }
  slots_ = std::move(next);
  return publish();
}

bool HealthTracker::add_server(std::string_view id, TimePoint now) {
  if (find_slot(id)) return false;
  slots_.push_back(make_slot(id, now));
  return publish();
}

bool HealthTracker::remove_server(std::string_view id) {
  auto it = std::find_if(slots_.begin(), slots_.end(), [&](const Slot& s) { return s.id == id; });
  if (it == slots_.end()) return false;
  slots_.erase(it);
  return publish();
}

void HealthTracker::on_check_started(std::string_view id, TimePoint now) {
  if (Slot* slot = find_slot(id)) {
    slot->next_check.reset();
    slot->check_started = now;
  }
}

bool HealthTracker::on_check_result(std::string_view id, const CheckResult& result, TimePoint now) {
  Slot* slot = find_slot(id);
  if (!slot) return false;
  const bool changed = slot->health.on_check_result(result, now);
  slot->next_check = next_check_after(*slot, now);
  return changed && publish();
}

bool HealthTracker::on_passive_failure(std::string_view id, PassiveFailure kind, TimePoint now) {
  Slot* slot = find_slot(id);
  return slot && slot->health.on_passive_failure(kind, now) && publish();
}

bool HealthTracker::on_stall(std::string_view id, TimePoint now) {
  Slot* slot = find_slot(id);
  if (!slot) return false;
  slot->health.on_stall(now);
  if (slot->health.liveness() == Liveness::down || !slot->next_check) return false;
  // Now, unless the last check started less than fast_interval ago: every worker reports
  // the silence, and the server still gets at most one check per fast_interval.
  const TimePoint due = slot->check_started ? std::max(now, *slot->check_started + fast_interval()) : now;
  if (*slot->next_check <= due) return false;
  slot->next_check = due;
  return true;
}

bool HealthTracker::on_passive_success(std::string_view id, TimePoint now) {
  Slot* slot = find_slot(id);
  return slot && slot->health.on_passive_success(now) && publish();
}

bool HealthTracker::set_admin_state(std::string_view id, AdminState admin, TimePoint now) {
  Slot* slot = find_slot(id);
  return slot && slot->health.set_admin_state(admin, now) && publish();
}

bool HealthTracker::set_availability(std::string_view id, int availability) {
  Slot* slot = find_slot(id);
  return slot && slot->health.set_table_availability(availability) && publish();
}

std::optional<TimePoint> HealthTracker::next_check_time(std::string_view id) const {
  const Slot* slot = find_slot(id);
  return slot ? slot->next_check : std::nullopt;
}

std::optional<TimePoint> HealthTracker::earliest_check_time() const {
  std::optional<TimePoint> earliest;
  for (const auto& slot : slots_) {
    if (slot.next_check && (!earliest || *slot.next_check < *earliest)) earliest = slot.next_check;
  }
  return earliest;
}

std::vector<std::string> HealthTracker::due_checks(TimePoint now) const {
  std::vector<std::string> due;
  for (const auto& slot : slots_) {
    if (slot.next_check && *slot.next_check <= now) due.push_back(slot.id);
  }
  return due;
}

}  // namespace sprayer::health
