// Change detection shared by every source: what the owner query's third column means, the
// delta query's parameter, and how a read (full, delta or full scan) turns into the next
// snapshot. Pure functions; the heavy ones run off the loop.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "affinity/ownership_rows.h"
#include "affinity/ownership_source.h"
#include "affinity/snapshot.h"

namespace sprayer::affinity {

// The default schema's queries (conf/sql/) for a mode: watermark reads changed_at, and
// full_scan has no delta. The change query (SQLite) is the epoch's, so "" unless epoch.
OwnershipQueries default_queries(ChangeDetection mode);

// The row's change value from the owner query's third column: epoch, the integer;
// watermark, changed_at as Unix microseconds (UTC); full_scan, ignored (0). nullopt: the
// value is missing or does not parse.
std::optional<std::int64_t> change_value(ChangeDetection mode, std::optional<std::string_view> text) noexcept;

// "YYYY-MM-DD HH:MM:SS.ffffff" (UTC) for Unix microseconds: the form SQLite stores and
// MariaDB, PostgreSQL, DB2 and SQL Server all accept for a timestamp parameter.
std::string format_timestamp_micros(std::int64_t micros);

// The delta query's one parameter: the snapshot's epoch, or for watermark the newest
// changed_at seen minus the overlap, as a timestamp text.
struct DeltaParameter {
  std::optional<std::int64_t> integer;  // epoch mode
  std::string text;                      // watermark mode
};
DeltaParameter delta_parameter(ChangeDetection mode, std::int64_t snapshot_epoch, SourceDuration overlap);

// What a read does to the snapshot being served. `base` is the database's snapshot being
// served (null before the first full read, or while serving the cache file).
//  - a full read: a new full snapshot, except in full_scan mode with a base, where only
//    the rows that differ from it are applied (as a delta, each with epoch base + 1); a
//    scan that lost users the base holds (rows deleted, not set to NULL) is rebuilt whole.
//  - a delta: applied; in watermark mode rows the base already holds with the same owner
//    and timestamp (the overlap read again) are dropped first.
// snapshot null: nothing changed. `rows` is what the cache log should append (full: all).
struct ReadOutcome {
  std::shared_ptr<const OwnershipSnapshot> snapshot;
  RowBlockPtr rows;
  bool full = false;
  std::size_t skipped = 0;  // rows that changed nothing (watermark overlap, unchanged scan rows)
};
ReadOutcome apply_read(ChangeDetection mode, bool full_read, const std::shared_ptr<const OwnershipSnapshot>& base,
                       RowBlockPtr rows);

}  // namespace sprayer::affinity
