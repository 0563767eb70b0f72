// Rows of user_owner in compact blocks: what sources read, what snapshots are built from off
// the loop, and what the cache file is written from (a snapshot cannot be enumerated).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "affinity/snapshot.h"

namespace sprayer::affinity {

// 16 bytes per row plus the key bytes. A row the snapshot would reject anyway (key over
// 65535 bytes, a 65536th server id) is kept as an empty-key row, so its epoch still counts.
class OwnershipRowBlock {
 public:
  static constexpr std::uint16_t kUnassigned = 0xFFFF;

  struct Record {
    std::uint32_t key_offset = 0;
    std::uint16_t key_length = 0;
    std::uint16_t server = kUnassigned;  // index into server_ids(), or kUnassigned
    std::int64_t epoch = 0;
  };

  void reserve(std::size_t rows, std::size_t key_bytes);
  void add(std::string_view user_key, std::optional<std::string_view> server_id, std::int64_t epoch);
  void add(const OwnershipRow& row) { add(row.user_key, row.server_id, row.epoch); }

  std::size_t size() const noexcept { return records_.size(); }
  bool empty() const noexcept { return records_.empty(); }
  OwnershipRow row(std::size_t i) const noexcept;
  std::span<const Record> records() const noexcept { return records_; }
  std::string_view key(const Record& r) const noexcept { return {keys_.data() + r.key_offset, r.key_length}; }
  std::span<const std::string> server_ids() const noexcept { return server_ids_; }
  std::int64_t max_epoch() const noexcept { return max_epoch_; }  // 0 when empty
  std::size_t key_bytes() const noexcept { return keys_.size(); }
  std::size_t memory_bytes() const noexcept;

 private:
  std::uint16_t intern(std::string_view server_id);

  std::string keys_;
  std::vector<Record> records_;
  std::vector<std::string> server_ids_;
  std::unordered_map<std::string, std::uint16_t> server_index_;
  std::uint16_t last_server_ = kUnassigned;  // rows usually come grouped by server
  std::int64_t max_epoch_ = 0;
};

using RowBlockPtr = std::shared_ptr<const OwnershipRowBlock>;

// A full snapshot of every row (the same result as feeding them to a SnapshotBuilder).
std::shared_ptr<const OwnershipSnapshot> build_snapshot(const OwnershipRowBlock& rows);
// base.with_delta(rows).
std::shared_ptr<const OwnershipSnapshot> apply_rows(const OwnershipSnapshot& base,
                                                    const OwnershipRowBlock& rows,
                                                    const DeltaPolicy& policy = {});

// The state a sequence of blocks stands for (the first a full read, the rest deltas):
// one row per user, the newest by epoch (the later on equal epochs), tombstones and
// rejected rows dropped. O(n log n); runs off the loop.
RowBlockPtr compact_row_blocks(std::span<const RowBlockPtr> blocks);

}  // namespace sprayer::affinity
