// The last-known-good ownership cache file, so a restart during a database outage still
// routes known users to their owners. Blocking file I/O: call it off the loop.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "affinity/ownership_rows.h"
#include "affinity/snapshot.h"

namespace sprayer::affinity {

// Format, version 1, little-endian:
//   "SPRYOWN\0" u32 version u32 reserved(0) i64 epoch u32 servers u64 rows
//   servers x (u16 length, bytes)
//   rows x (u16 key length, u16 server index or 0xFFFF, i64 epoch, key bytes)
//   u64 FNV-1a-64 of everything before it, "SPRYEND\0"
// Rows are in the order read (a full read, then deltas); the newest per user wins on load.
struct CacheWriteResult {
  std::string error;       // empty on success
  std::size_t bytes = 0;
  bool ok() const noexcept { return error.empty(); }
};

// Writes a temporary file next to `path`, fsyncs it, renames it over `path` and fsyncs the
// directory: a reader sees the old file or the new one, never a mix. The file is 0600.
CacheWriteResult write_snapshot_cache(const std::string& path, std::int64_t epoch,
                                      std::span<const RowBlockPtr> blocks);
CacheWriteResult write_snapshot_cache(const std::string& path, std::int64_t epoch,
                                      const OwnershipRowBlock& rows);

struct LoadedSnapshotCache {
  std::shared_ptr<const OwnershipSnapshot> snapshot;  // null on error
  std::int64_t epoch = 0;                             // as written
  std::size_t rows = 0;
  std::string error;                                  // why the file was refused
  bool ok() const noexcept { return snapshot != nullptr; }
};

// The whole file is checked (size, magic, version, checksum, bounds) before a snapshot is
// built: a torn or corrupt file is refused, never half-loaded.
LoadedSnapshotCache load_snapshot_cache(const std::string& path);

}  // namespace sprayer::affinity
