// The cached copy of the pool's ownership table (user_owner): immutable, O(1) lookup,
// built off the worker loops and shared with them as shared_ptr<const OwnershipSnapshot>.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace sprayer::affinity {

namespace detail {
class KeyTable;
struct BuildState;
}  // namespace detail

struct Owner {
  std::uint16_t server = 0;  // index into OwnershipSnapshot::server_ids()
  std::int64_t epoch = 0;    // user_owner.epoch of the row that named the owner
  friend bool operator==(const Owner&, const Owner&) = default;
};

// One user_owner row as read from a source; the strings only need to live for the call.
struct OwnershipRow {
  std::string_view user_key;                 // normalised, as in the table
  std::optional<std::string_view> server_id;  // nullopt (SQL NULL) or "" = unassigned
  std::int64_t epoch = 0;
};

// When with_delta folds the overlay into a new base: once the overlay holds more than
// max(compact_min_rows, base rows / compact_divisor) rows. Each delta copies the overlay
// (O(overlay)), so this bounds both per-delta cost and the number of full rebuilds.
struct DeltaPolicy {
  std::size_t compact_divisor = 16;
  std::size_t compact_min_rows = 4096;
};

// Rules for rows (full loads and deltas alike):
//  - For one user key the row with the highest epoch wins; on equal epochs the later row
//    wins. A delta row older than what the snapshot holds for that key is ignored.
//  - An unassigned row (tombstone) hides the user: find() returns nullopt. Tombstones
//    are dropped when a base table is built; in an overlay they hide the base entry.
//  - Rejected (counted in rejected_rows(), otherwise ignored): an empty key, a key over
//    65535 bytes, a 65536th distinct server id.
// epoch() is the highest epoch of any row seen, tombstones and rejected rows included,
// so "WHERE epoch > snapshot.epoch()" fetches exactly the rows not yet applied.
// Layout: linear probing over 32-byte slots (32-bit hash fingerprint, server, length,
// epoch, and the key itself when it has at most 16 bytes; longer keys in an arena), at
// most 70% full: a hit on a short key reads one cache line, and so does a typical miss.
// About 46 bytes per user (1,000,000 users: 44 MiB), plus the length of keys over 16.
class OwnershipSnapshot {
  struct Passkey {};

 public:
  OwnershipSnapshot(Passkey, std::shared_ptr<const detail::KeyTable> base,
                    std::shared_ptr<const detail::KeyTable> overlay,
                    std::vector<std::string> server_ids, std::int64_t epoch, std::size_t size,
                    std::size_t rejected_rows, std::vector<std::size_t> owned);

  static std::shared_ptr<const OwnershipSnapshot> empty();

  // key_hash must be hash_key(user_key) (rendezvous.h); pass it when already computed.
  std::optional<Owner> find(std::string_view user_key) const noexcept;
  std::optional<Owner> find(std::string_view user_key, std::uint64_t key_hash) const noexcept;

  std::span<const std::string> server_ids() const noexcept { return server_ids_; }
  std::optional<std::uint16_t> server_index(std::string_view server_id) const noexcept;
  std::int64_t epoch() const noexcept { return epoch_; }
  std::size_t size() const noexcept { return size_; }  // users with an owner
  std::size_t overlay_rows() const noexcept;            // rows (tombstones too) in the overlay
  std::size_t rejected_rows() const noexcept { return rejected_rows_; }
  // Users owned per server (same order as server_ids()). Counted when the snapshot is
  // built: O(rows) for a full build, O(overlay) for a delta.
  std::span<const std::size_t> owned_by_server() const noexcept { return owned_; }
  std::size_t owned_users(std::uint16_t server) const noexcept {
    return server < owned_.size() ? owned_[server] : 0;
  }
  std::size_t memory_bytes() const noexcept;            // heap bytes held (shared base included)

  // The next snapshot: this one plus `rows`. Shares the base table unless the overlay
  // grows past the policy, then builds a compacted base. Never modifies *this.
  std::shared_ptr<const OwnershipSnapshot> with_delta(std::span<const OwnershipRow> rows,
                                                      const DeltaPolicy& policy = {}) const;

 private:
  friend class SnapshotBuilder;

  std::shared_ptr<const detail::KeyTable> base_;
  std::shared_ptr<const detail::KeyTable> overlay_;  // null when there is none
  std::vector<std::string> server_ids_;
  std::int64_t epoch_ = 0;
  std::size_t size_ = 0;
  std::size_t rejected_rows_ = 0;
  std::vector<std::size_t> owned_;
};

// Builds a full snapshot from a complete read of the table. Not thread-safe; use one
// per load. expected_rows only presizes the table (for the first build()).
class SnapshotBuilder {
 public:
  explicit SnapshotBuilder(std::size_t expected_rows = 0);
  SnapshotBuilder(SnapshotBuilder&&) noexcept;
  SnapshotBuilder& operator=(SnapshotBuilder&&) noexcept;
  ~SnapshotBuilder();

  bool add(const OwnershipRow& row);  // false if the row was rejected
  std::size_t rejected() const noexcept;

  // The snapshot of every row added; the builder is left empty for reuse.
  std::shared_ptr<const OwnershipSnapshot> build();

 private:
  std::unique_ptr<detail::BuildState> state_;
};

}  // namespace sprayer::affinity
