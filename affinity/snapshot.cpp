// Ownership snapshot storage: an open-addressing table of 32-byte slots with short keys
// inline, its builder, and the base + overlay scheme that makes a delta cost O(overlay).
#include "affinity/snapshot.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <unordered_map>
#include <utility>

#include "affinity/rendezvous.h"

namespace sprayer::affinity {
namespace detail {
namespace {

constexpr std::uint16_t kTombstone = 0xFFFF;  // server index of an unassigned row
constexpr std::size_t kMaxKeyLength = 0xFFFF;
constexpr std::size_t kInlineKey = 16;

// Slots for n records at a load factor of at most 0.7: linear probing then averages
// about 1.7 slots for a hit and 6 (three cache lines, adjacent) for a miss.
std::size_t capacity_for(std::size_t n) noexcept { return std::max<std::size_t>(8, n + n * 3 / 7 + 1); }
std::size_t max_records(std::size_t capacity) noexcept { return capacity * 7 / 10; }

// Maps the hash onto [0, capacity) with a multiply instead of a modulo; uses the high
// bits, leaving the low 32 bits independent for the fingerprint.
std::size_t home_slot(std::uint64_t hash, std::size_t capacity) noexcept {
  return static_cast<std::size_t>((static_cast<unsigned __int128>(hash) * capacity) >> 64);
}

}  // namespace

struct Entry {
  std::uint16_t server = kTombstone;
  std::int64_t epoch = 0;
  bool live() const noexcept { return server != kTombstone; }
};

// A key of up to 16 bytes lives in its slot, so a hit costs one cache line: the
// latency of a lookup is one memory access, not two. Longer keys sit in an arena.
struct alignas(32) Slot {
  std::uint32_t fingerprint = 0;  // low 32 bits of the hash: most mismatches stop here
  std::uint16_t server = kTombstone;
  std::uint16_t length = 0;       // 0 = empty slot (empty keys are never stored)
  std::int64_t epoch = 0;
  char key[kInlineKey] = {};      // the key, or for longer keys its arena offset
};
static_assert(sizeof(Slot) == 32, "two slots per cache line");
using SlotArray = std::vector<Slot>;

class KeyTable {
 public:
  std::optional<Entry> find(std::string_view key, std::uint64_t hash) const noexcept {
    const std::size_t capacity = slots_.size();
    if (capacity == 0) return std::nullopt;
    const auto fingerprint = static_cast<std::uint32_t>(hash);
    std::size_t pos = home_slot(hash, capacity);
    while (true) {
      const Slot& slot = slots_[pos];
      if (slot.length == 0) return std::nullopt;
      if (slot.fingerprint == fingerprint && slot.length == key.size() && key_of(slot) == key) {
        return Entry{slot.server, slot.epoch};
      }
      if (++pos == capacity) pos = 0;
    }
  }

  template <class F>
  void for_each(F&& f) const {
    for (const Slot& slot : slots_) {
      if (slot.length != 0) f(key_of(slot), Entry{slot.server, slot.epoch});
    }
  }

  std::size_t records() const noexcept { return records_; }
  std::size_t live() const noexcept { return records_ - tombstones_; }
  // Live entries per server index; filled for base tables only (they are counted once,
  // when built, so that a delta snapshot's counts cost O(overlay)).
  const std::vector<std::size_t>& live_by_server() const noexcept { return live_by_server_; }
  std::size_t memory_bytes() const noexcept {
    return sizeof(*this) + slots_.capacity() * sizeof(Slot) + arena_.capacity();
  }

 private:
  friend class TableBuilder;

  std::string_view key_of(const Slot& slot) const noexcept {
    if (slot.length <= kInlineKey) return {slot.key, slot.length};
    std::uint64_t offset;
    std::memcpy(&offset, slot.key, sizeof offset);
    return {arena_.data() + offset, slot.length};
  }

  void count_live_by_server() {
    live_by_server_.clear();
    for (const Slot& slot : slots_) {
      if (slot.length == 0 || slot.server == kTombstone) continue;
      if (slot.server >= live_by_server_.size()) live_by_server_.resize(slot.server + 1u, 0);
      ++live_by_server_[slot.server];
    }
  }

  SlotArray slots_;
  std::vector<char> arena_;  // keys longer than kInlineKey, back to back
  std::size_t records_ = 0;
  std::size_t tombstones_ = 0;
  std::vector<std::size_t> live_by_server_;
};

class TableBuilder {
 public:
  enum class Put { inserted, replaced, stale, rejected };

  explicit TableBuilder(std::size_t expected_records) {
    table_.slots_.resize(capacity_for(expected_records));
  }

  std::optional<Entry> find(std::string_view key, std::uint64_t hash) const noexcept {
    return table_.find(key, hash);
  }

  // Inserts the key, or replaces its entry unless `entry` is older (lower epoch).
  Put put(std::string_view key, std::uint64_t hash, const Entry& entry) {
    if (key.empty() || key.size() > kMaxKeyLength) return Put::rejected;
    if (table_.records_ + 1 > max_records(table_.slots_.size())) {
      rehash(capacity_for(2 * (table_.records_ + 1)));
    }
    const std::size_t capacity = table_.slots_.size();
    const auto fingerprint = static_cast<std::uint32_t>(hash);
    std::size_t pos = home_slot(hash, capacity);
    while (true) {
      Slot& slot = table_.slots_[pos];
      if (slot.length == 0) {
        fill(table_, slot, key, fingerprint, entry);
        return Put::inserted;
      }
      if (slot.fingerprint == fingerprint && slot.length == key.size() && table_.key_of(slot) == key) {
        if (entry.epoch < slot.epoch) return Put::stale;
        table_.tombstones_ += static_cast<std::size_t>(!entry.live());
        table_.tombstones_ -= static_cast<std::size_t>(slot.server == kTombstone);
        slot.server = entry.server;
        slot.epoch = entry.epoch;
        return Put::replaced;
      }
      if (++pos == capacity) pos = 0;
    }
  }

  // The finished table, exactly sized. A base drops its tombstones (absent and
  // unassigned look the same to find()); an overlay keeps them to hide base entries.
  std::shared_ptr<const KeyTable> finish(bool drop_tombstones) && {
    const bool dropping = drop_tombstones && table_.tombstones_ > 0;
    const std::size_t keep = dropping ? table_.live() : table_.records_;
    if (!dropping && table_.slots_.size() <= capacity_for(keep) + capacity_for(keep) / 4) {
      table_.arena_.shrink_to_fit();
      if (drop_tombstones) table_.count_live_by_server();
      return std::make_shared<const KeyTable>(std::move(table_));
    }
    std::size_t arena_bytes = 0;
    table_.for_each([&](std::string_view key, const Entry& entry) {
      if ((!dropping || entry.live()) && key.size() > kInlineKey) arena_bytes += key.size();
    });
    KeyTable out;
    out.slots_.resize(capacity_for(keep));
    out.arena_.reserve(arena_bytes);
    table_.for_each([&](std::string_view key, const Entry& entry) {
      if (dropping && !entry.live()) return;
      const std::uint64_t hash = hash_key(key);
      fill(out, free_slot(out.slots_, hash), key, static_cast<std::uint32_t>(hash), entry);
    });
    if (drop_tombstones) out.count_live_by_server();
    return std::make_shared<const KeyTable>(std::move(out));
  }

 private:
  static void fill(KeyTable& table, Slot& slot, std::string_view key, std::uint32_t fingerprint,
                   const Entry& entry) {
    slot.fingerprint = fingerprint;
    slot.server = entry.server;
    slot.length = static_cast<std::uint16_t>(key.size());
    slot.epoch = entry.epoch;
    if (key.size() <= kInlineKey) {
      std::memcpy(slot.key, key.data(), key.size());
    } else {
      const std::uint64_t offset = table.arena_.size();
      table.arena_.insert(table.arena_.end(), key.begin(), key.end());
      std::memcpy(slot.key, &offset, sizeof offset);
    }
    ++table.records_;
    if (!entry.live()) ++table.tombstones_;
  }

  // For keys known to be absent (rehash, rebuild): no comparison needed.
  static Slot& free_slot(SlotArray& slots, std::uint64_t hash) noexcept {
    const std::size_t capacity = slots.size();
    std::size_t pos = home_slot(hash, capacity);
    while (slots[pos].length != 0) {
      if (++pos == capacity) pos = 0;
    }
    return slots[pos];
  }

  // Moves the slots (arena offsets stay valid) into a bigger array.
  void rehash(std::size_t capacity) {
    SlotArray slots(capacity);
    for (const Slot& slot : table_.slots_) {
      if (slot.length != 0) free_slot(slots, hash_key(table_.key_of(slot))) = slot;
    }
    table_.slots_ = std::move(slots);
  }

  KeyTable table_;
};

// Server ids to dense indices. Append-only, so indices stored in an older base table
// stay valid in every later snapshot.
class ServerInterner {
 public:
  ServerInterner() = default;
  explicit ServerInterner(const std::vector<std::string>& ids) : ids_(ids) {
    for (std::size_t i = 0; i < ids_.size(); ++i) index_.emplace(ids_[i], static_cast<std::uint16_t>(i));
  }

  // nullopt once kTombstone indices are in use.
  std::optional<std::uint16_t> intern(std::string_view id) {
    if (!ids_.empty() && id == ids_[last_]) return last_;
    if (ids_.size() <= kLinearScan) {  // a pool has a handful of servers: skip the hashing
      for (std::size_t i = 0; i < ids_.size(); ++i) {
        if (ids_[i] == id) {
          last_ = static_cast<std::uint16_t>(i);
          return last_;
        }
      }
    }
    std::string key(id);
    if (const auto it = index_.find(key); it != index_.end()) {
      last_ = it->second;
      return last_;
    }
    if (ids_.size() >= kTombstone) return std::nullopt;
    last_ = static_cast<std::uint16_t>(ids_.size());
    ids_.push_back(key);
    index_.emplace(std::move(key), last_);
    return last_;
  }

  std::vector<std::string> take() && { return std::move(ids_); }

 private:
  static constexpr std::size_t kLinearScan = 16;

  std::vector<std::string> ids_;
  std::unordered_map<std::string, std::uint16_t> index_;  // control thread only
  std::uint16_t last_ = 0;                                // rows come grouped by server
};

struct BuildState {
  explicit BuildState(std::size_t expected_rows) : table(expected_rows) {}

  TableBuilder table;
  ServerInterner servers;
  std::int64_t epoch = 0;
  std::size_t rejected = 0;
};

}  // namespace detail

namespace {

// The entry a row stands for, or nullopt if the row is rejected.
std::optional<detail::Entry> entry_for(const OwnershipRow& row, detail::ServerInterner& servers) {
  if (row.user_key.empty() || row.user_key.size() > detail::kMaxKeyLength) return std::nullopt;
  detail::Entry entry;
  entry.epoch = row.epoch;
  if (row.server_id && !row.server_id->empty()) {
    const auto index = servers.intern(*row.server_id);
    if (!index) return std::nullopt;
    entry.server = *index;
  }
  return entry;
}

std::shared_ptr<const detail::KeyTable> empty_table() {
  return std::move(detail::TableBuilder(0)).finish(true);
}

}  // namespace

OwnershipSnapshot::OwnershipSnapshot(Passkey, std::shared_ptr<const detail::KeyTable> base,
                                     std::shared_ptr<const detail::KeyTable> overlay,
                                     std::vector<std::string> server_ids, std::int64_t epoch,
                                     std::size_t size, std::size_t rejected_rows,
                                     std::vector<std::size_t> owned)
    : base_(std::move(base)),
      overlay_(std::move(overlay)),
      server_ids_(std::move(server_ids)),
      epoch_(epoch),
      size_(size),
      rejected_rows_(rejected_rows),
      owned_(std::move(owned)) {
  owned_.resize(server_ids_.size(), 0);
}

std::shared_ptr<const OwnershipSnapshot> OwnershipSnapshot::empty() {
  return std::make_shared<const OwnershipSnapshot>(Passkey{}, empty_table(), nullptr,
                                                   std::vector<std::string>{}, 0, 0, 0,
                                                   std::vector<std::size_t>{});
}

std::optional<Owner> OwnershipSnapshot::find(std::string_view user_key) const noexcept {
  return find(user_key, hash_key(user_key));
}

std::optional<Owner> OwnershipSnapshot::find(std::string_view user_key,
                                             std::uint64_t key_hash) const noexcept {
  std::optional<detail::Entry> entry;
  if (overlay_) entry = overlay_->find(user_key, key_hash);
  if (!entry) entry = base_->find(user_key, key_hash);
  if (!entry || !entry->live()) return std::nullopt;
  return Owner{entry->server, entry->epoch};
}

std::optional<std::uint16_t> OwnershipSnapshot::server_index(std::string_view server_id) const noexcept {
  for (std::size_t i = 0; i < server_ids_.size(); ++i) {
    if (server_ids_[i] == server_id) return static_cast<std::uint16_t>(i);
  }
  return std::nullopt;
}

std::size_t OwnershipSnapshot::overlay_rows() const noexcept { return overlay_ ? overlay_->records() : 0; }

std::size_t OwnershipSnapshot::memory_bytes() const noexcept {
  std::size_t bytes = sizeof(*this) + base_->memory_bytes() + (overlay_ ? overlay_->memory_bytes() : 0);
  for (const std::string& id : server_ids_) bytes += sizeof(std::string) + id.capacity();
  return bytes;
}

std::shared_ptr<const OwnershipSnapshot> OwnershipSnapshot::with_delta(
    std::span<const OwnershipRow> rows, const DeltaPolicy& policy) const {
  detail::ServerInterner servers(server_ids_);
  std::int64_t epoch = epoch_;
  std::size_t rejected = rejected_rows_;

  detail::TableBuilder next(overlay_rows() + rows.size());
  if (overlay_) {
    overlay_->for_each([&](std::string_view key, const detail::Entry& entry) {
      next.put(key, hash_key(key), entry);
    });
  }
  for (const OwnershipRow& row : rows) {
    epoch = std::max(epoch, row.epoch);
    const auto entry = entry_for(row, servers);
    if (!entry) {
      ++rejected;
      continue;
    }
    const std::uint64_t hash = hash_key(row.user_key);
    if (!next.find(row.user_key, hash)) {
      // Keeps the overlay's invariant that it never holds anything older than the base.
      const auto in_base = base_->find(row.user_key, hash);
      if (in_base && entry->epoch < in_base->epoch) continue;
    }
    if (next.put(row.user_key, hash, *entry) == detail::TableBuilder::Put::rejected) ++rejected;
  }
  std::shared_ptr<const detail::KeyTable> overlay = std::move(next).finish(false);

  const std::size_t divisor = std::max<std::size_t>(1, policy.compact_divisor);
  if (overlay->records() > std::max(policy.compact_min_rows, base_->records() / divisor)) {
    // Base first, then the overlay: its entries are never older, so they replace.
    detail::TableBuilder merged(base_->records() + overlay->records());
    const auto copy = [&merged](std::string_view key, const detail::Entry& entry) {
      merged.put(key, hash_key(key), entry);
    };
    base_->for_each(copy);
    overlay->for_each(copy);
    std::shared_ptr<const detail::KeyTable> base = std::move(merged).finish(true);
    const std::size_t size = base->live();
    std::vector<std::size_t> owned = base->live_by_server();
    return std::make_shared<const OwnershipSnapshot>(Passkey{}, std::move(base), nullptr,
                                                     std::move(servers).take(), epoch, size, rejected,
                                                     std::move(owned));
  }

  std::size_t size = base_->live();
  std::vector<std::size_t> owned = base_->live_by_server();
  auto count = [&owned](std::uint16_t server, int delta) {
    if (server >= owned.size()) owned.resize(server + 1u, 0);
    owned[server] = static_cast<std::size_t>(static_cast<std::ptrdiff_t>(owned[server]) + delta);
  };
  overlay->for_each([&](std::string_view key, const detail::Entry& entry) {
    // A base table holds no tombstones: an entry found there is a live owner.
    if (const auto in_base = base_->find(key, hash_key(key))) {
      --size;
      count(in_base->server, -1);
    }
    if (entry.live()) {
      ++size;
      count(entry.server, +1);
    }
  });
  if (overlay->records() == 0) overlay = nullptr;
  return std::make_shared<const OwnershipSnapshot>(Passkey{}, base_, std::move(overlay),
                                                   std::move(servers).take(), epoch, size, rejected,
                                                   std::move(owned));
}

SnapshotBuilder::SnapshotBuilder(std::size_t expected_rows)
    : state_(std::make_unique<detail::BuildState>(expected_rows)) {}
SnapshotBuilder::SnapshotBuilder(SnapshotBuilder&&) noexcept = default;
SnapshotBuilder& SnapshotBuilder::operator=(SnapshotBuilder&&) noexcept = default;
SnapshotBuilder::~SnapshotBuilder() = default;

std::size_t SnapshotBuilder::rejected() const noexcept { return state_->rejected; }

bool SnapshotBuilder::add(const OwnershipRow& row) {
  detail::BuildState& s = *state_;
  s.epoch = std::max(s.epoch, row.epoch);
  const auto entry = entry_for(row, s.servers);
  if (!entry || s.table.put(row.user_key, hash_key(row.user_key), *entry) ==
                    detail::TableBuilder::Put::rejected) {
    ++s.rejected;
    return false;
  }
  return true;
}

std::shared_ptr<const OwnershipSnapshot> SnapshotBuilder::build() {
  // The next build starts small: presizing it now would hold a second full-size table.
  auto state = std::exchange(state_, std::make_unique<detail::BuildState>(0));
  std::shared_ptr<const detail::KeyTable> base = std::move(state->table).finish(true);
  const std::size_t size = base->live();
  std::vector<std::size_t> owned = base->live_by_server();
  return std::make_shared<const OwnershipSnapshot>(OwnershipSnapshot::Passkey{}, std::move(base),
                                                   nullptr, std::move(state->servers).take(),
                                                   state->epoch, size, state->rejected, std::move(owned));
}

}  // namespace sprayer::affinity
