// Change detection: parsing the change column, the delta parameter, and the diff of a full
// scan or a watermark delta against the snapshot being served.
#include "affinity/ownership_changes.h"

#include <charconv>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <vector>

namespace sprayer::affinity {

std::string_view to_string(ChangeDetection mode) noexcept {
  switch (mode) {
    case ChangeDetection::epoch: return "epoch";
    case ChangeDetection::watermark: return "watermark";
    case ChangeDetection::full_scan: return "full_scan";
  }
  return "unknown";
}

OwnershipQueries default_queries(ChangeDetection mode) {
  OwnershipQueries q;
  switch (mode) {
    case ChangeDetection::epoch: break;
    case ChangeDetection::watermark:
      q.full = "SELECT user_key, server_id, changed_at FROM user_owner";
      q.delta = "SELECT user_key, server_id, changed_at FROM user_owner WHERE changed_at > $1 ORDER BY changed_at";
      q.change.clear();
      break;
    case ChangeDetection::full_scan:
      q.full = "SELECT user_key, server_id FROM user_owner";
      q.delta.clear();
      q.change.clear();
      break;
  }
  return q;
}

std::optional<std::int64_t> change_value(ChangeDetection mode, std::optional<std::string_view> text) noexcept {
  if (mode == ChangeDetection::full_scan) return 0;
  if (!text) return std::nullopt;
  if (mode == ChangeDetection::epoch) {
    std::int64_t v = 0;
    const auto [end, ec] = std::from_chars(text->data(), text->data() + text->size(), v);
    if (ec != std::errc() || end != text->data() + text->size()) return std::nullopt;
    return v;
  }
  const auto at = parse_db_timestamp(*text);
  if (!at) return std::nullopt;
  return std::chrono::duration_cast<std::chrono::microseconds>(at->time_since_epoch()).count();
}

std::string format_timestamp_micros(std::int64_t micros) {
  std::int64_t seconds = micros / 1000000;
  std::int64_t frac = micros % 1000000;
  if (frac < 0) frac += 1000000, --seconds;
  const std::time_t t = static_cast<std::time_t>(seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char out[96];
  std::snprintf(out, sizeof out, "%04d-%02d-%02d %02d:%02d:%02d.%06lld", tm.tm_year + 1900, tm.tm_mon + 1,
                tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<long long>(frac));
  return out;
}

DeltaParameter delta_parameter(ChangeDetection mode, std::int64_t snapshot_epoch, SourceDuration overlap) {
  DeltaParameter p;
  if (mode == ChangeDetection::watermark) {
    p.text = format_timestamp_micros(snapshot_epoch - std::chrono::duration_cast<std::chrono::microseconds>(overlap).count());
  } else {
    p.integer = snapshot_epoch;
  }
  return p;
}

namespace {

// rows.server_ids() index -> base.server_ids() index (nullopt: the base has no such server).
std::vector<std::optional<std::uint16_t>> map_servers(const OwnershipRowBlock& rows, const OwnershipSnapshot& base) {
  std::vector<std::optional<std::uint16_t>> map;
  map.reserve(rows.server_ids().size());
  for (const std::string& id : rows.server_ids()) map.push_back(base.server_index(id));
  return map;
}

bool same_owner(const OwnershipRowBlock::Record& r, const std::optional<Owner>& current,
                const std::vector<std::optional<std::uint16_t>>& map) {
  if (r.server == OwnershipRowBlock::kUnassigned) return !current;
  return current && map[r.server] && *map[r.server] == current->server;
}

ReadOutcome diff_scan(const OwnershipSnapshot& base, const RowBlockPtr& rows) {
  const auto map = map_servers(*rows, base);
  const std::int64_t epoch = base.epoch() + 1;
  auto changes = std::make_shared<OwnershipRowBlock>();
  std::size_t present = 0;  // rows whose user the base has an owner for
  std::size_t unchanged = 0;
  for (const auto& r : rows->records()) {
    if (r.key_length == 0) continue;  // rejected, as the snapshot would
    const std::string_view key = rows->key(r);
    const std::optional<Owner> current = base.find(key);
    if (current) ++present;
    if (same_owner(r, current, map)) {
      ++unchanged;
      continue;
    }
    std::optional<std::string_view> server;
    if (r.server != OwnershipRowBlock::kUnassigned) server = rows->server_ids()[r.server];
    changes->add(key, server, epoch);
  }
  ReadOutcome out;
  out.skipped = unchanged;
  if (present < base.size()) {
    // Users the scan no longer returns: the base cannot be enumerated to tombstone them,
    // so the scan becomes the new base.
    auto all = std::make_shared<OwnershipRowBlock>();
    all->reserve(rows->size(), rows->key_bytes());
    for (std::size_t i = 0; i < rows->size(); ++i) {
      OwnershipRow row = rows->row(i);
      all->add(row.user_key, row.server_id, epoch);
    }
    out.snapshot = build_snapshot(*all);
    out.rows = std::move(all);
    out.full = true;
    out.skipped = 0;
    return out;
  }
  if (changes->empty()) return out;
  out.snapshot = apply_rows(base, *changes);
  out.rows = std::move(changes);
  return out;
}

ReadOutcome drop_applied(const OwnershipSnapshot& base, const RowBlockPtr& rows) {
  const auto map = map_servers(*rows, base);
  auto fresh = std::make_shared<OwnershipRowBlock>();
  std::size_t skipped = 0;
  for (const auto& r : rows->records()) {
    const std::string_view key = rows->key(r);
    const std::optional<Owner> current = r.key_length ? base.find(key) : std::nullopt;
    // A row seen before comes back while it is inside the overlap: same owner, same
    // timestamp. A NULL owner for a user the base does not hold is news only when newer
    // than anything applied (its timestamp moves the watermark on).
    const bool seen = r.server == OwnershipRowBlock::kUnassigned
                          ? !current && r.epoch <= base.epoch()
                          : current && same_owner(r, current, map) && current->epoch == r.epoch;
    if (seen || r.key_length == 0) {
      ++skipped;
      continue;
    }
    std::optional<std::string_view> server;
    if (r.server != OwnershipRowBlock::kUnassigned) server = rows->server_ids()[r.server];
    fresh->add(key, server, r.epoch);
  }
  ReadOutcome out;
  out.skipped = skipped;
  if (fresh->empty()) return out;
  out.snapshot = apply_rows(base, *fresh);
  out.rows = std::move(fresh);
  return out;
}

}  // namespace

ReadOutcome apply_read(ChangeDetection mode, bool full_read, const std::shared_ptr<const OwnershipSnapshot>& base,
                       RowBlockPtr rows) {
  if (!rows) return {};
  if (full_read) {
    if (mode == ChangeDetection::full_scan && base) return diff_scan(*base, rows);
    ReadOutcome out;
    out.snapshot = build_snapshot(*rows);
    out.rows = std::move(rows);
    out.full = true;
    return out;
  }
  if (!base || rows->empty()) return {};
  if (mode == ChangeDetection::watermark) return drop_applied(*base, rows);
  ReadOutcome out;
  out.snapshot = apply_rows(*base, *rows);
  out.rows = std::move(rows);
  return out;
}

}  // namespace sprayer::affinity
