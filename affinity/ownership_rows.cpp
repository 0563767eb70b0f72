// Compact row blocks: appending rows, building snapshots from them, and folding a full
// read plus deltas into one block for the cache file.
#include "affinity/ownership_rows.h"

#include <algorithm>
#include <functional>
#include <limits>

namespace sprayer::affinity {

namespace {
constexpr std::size_t kMaxKeyLength = 0xFFFF;
}  // namespace

void OwnershipRowBlock::reserve(std::size_t rows, std::size_t key_bytes) {
  records_.reserve(rows);
  keys_.reserve(key_bytes);
}

std::uint16_t OwnershipRowBlock::intern(std::string_view server_id) {
  if (last_server_ != kUnassigned && server_ids_[last_server_] == server_id) return last_server_;
  // A pool has a handful of servers: a scan beats hashing a fresh std::string per row.
  if (server_ids_.size() <= 16) {
    for (std::size_t i = 0; i < server_ids_.size(); ++i) {
      if (server_ids_[i] == server_id) return last_server_ = static_cast<std::uint16_t>(i);
    }
  }
  std::string id(server_id);
  if (const auto it = server_index_.find(id); it != server_index_.end()) return last_server_ = it->second;
  if (server_ids_.size() >= kUnassigned) return kUnassigned;
  const auto index = static_cast<std::uint16_t>(server_ids_.size());
  server_ids_.push_back(id);
  server_index_.emplace(std::move(id), index);
  return last_server_ = index;
}

void OwnershipRowBlock::add(std::string_view user_key, std::optional<std::string_view> server_id,
                            std::int64_t epoch) {
  max_epoch_ = std::max(max_epoch_, epoch);
  Record record;
  record.epoch = epoch;
  bool rejected = user_key.size() > kMaxKeyLength ||
                  keys_.size() + user_key.size() > std::numeric_limits<std::uint32_t>::max();
  if (!rejected && server_id && !server_id->empty()) {
    record.server = intern(*server_id);
    rejected = record.server == kUnassigned;
  }
  if (rejected) {
    // The snapshot rejects an empty key too, and still counts its epoch.
    record.server = kUnassigned;
    record.key_offset = static_cast<std::uint32_t>(std::min<std::size_t>(keys_.size(), 0xFFFFFFFFu));
    record.key_length = 0;
  } else {
    record.key_offset = static_cast<std::uint32_t>(keys_.size());
    record.key_length = static_cast<std::uint16_t>(user_key.size());
    keys_.append(user_key);
  }
  records_.push_back(record);
}

OwnershipRow OwnershipRowBlock::row(std::size_t i) const noexcept {
  const Record& r = records_[i];
  OwnershipRow out;
  out.user_key = r.key_length ? key(r) : std::string_view{};
  if (r.server != kUnassigned) out.server_id = server_ids_[r.server];
  out.epoch = r.epoch;
  return out;
}

std::size_t OwnershipRowBlock::memory_bytes() const noexcept {
  std::size_t bytes = sizeof(*this) + keys_.capacity() + records_.capacity() * sizeof(Record);
  for (const std::string& id : server_ids_) bytes += 2 * (sizeof(std::string) + id.capacity()) + 16;
  return bytes;
}

std::shared_ptr<const OwnershipSnapshot> build_snapshot(const OwnershipRowBlock& rows) {
  SnapshotBuilder builder(rows.size());
  for (std::size_t i = 0; i < rows.size(); ++i) builder.add(rows.row(i));
  return builder.build();
}

std::shared_ptr<const OwnershipSnapshot> apply_rows(const OwnershipSnapshot& base,
                                                    const OwnershipRowBlock& rows,
                                                    const DeltaPolicy& policy) {
  std::vector<OwnershipRow> views;
  views.reserve(rows.size());
  for (std::size_t i = 0; i < rows.size(); ++i) views.push_back(rows.row(i));
  return base.with_delta(views, policy);
}

RowBlockPtr compact_row_blocks(std::span<const RowBlockPtr> blocks) {
  // Sorting 16-byte references by (hash, key, position) groups each user's rows in input
  // order without a node-based map of a million entries.
  struct Ref {
    std::uint64_t hash;
    std::uint32_t block;
    std::uint32_t record;
  };
  std::size_t total = 0;
  for (const RowBlockPtr& b : blocks) total += b->size();
  std::vector<Ref> refs;
  refs.reserve(total);
  const std::hash<std::string_view> hasher;
  for (std::uint32_t b = 0; b < blocks.size(); ++b) {
    const auto records = blocks[b]->records();
    for (std::uint32_t r = 0; r < records.size(); ++r) {
      if (records[r].key_length == 0) continue;
      refs.push_back(Ref{hasher(blocks[b]->key(records[r])), b, r});
    }
  }
  const auto key_of = [&](const Ref& ref) { return blocks[ref.block]->key(blocks[ref.block]->records()[ref.record]); };
  std::sort(refs.begin(), refs.end(), [&](const Ref& a, const Ref& b) {
    if (a.hash != b.hash) return a.hash < b.hash;
    if (const int c = key_of(a).compare(key_of(b)); c != 0) return c < 0;
    if (a.block != b.block) return a.block < b.block;
    return a.record < b.record;
  });

  auto out = std::make_shared<OwnershipRowBlock>();
  std::size_t key_bytes = 0;
  for (const RowBlockPtr& b : blocks) key_bytes = std::max(key_bytes, b->key_bytes());
  out->reserve(refs.size(), key_bytes);  // at least the biggest block, usually the full read
  for (std::size_t i = 0; i < refs.size();) {
    const std::string_view key = key_of(refs[i]);
    std::size_t best = i;
    std::size_t j = i + 1;
    for (; j < refs.size() && refs[j].hash == refs[i].hash && key_of(refs[j]) == key; ++j) {
      const auto& candidate = blocks[refs[j].block]->records()[refs[j].record];
      const auto& current = blocks[refs[best].block]->records()[refs[best].record];
      if (candidate.epoch >= current.epoch) best = j;  // later wins on equal epochs
    }
    const OwnershipRowBlock& block = *blocks[refs[best].block];
    const auto& winner = block.records()[refs[best].record];
    if (winner.server != OwnershipRowBlock::kUnassigned) {
      out->add(key, block.server_ids()[winner.server], winner.epoch);
    }
    i = j;
  }
  return out;
}

}  // namespace sprayer::affinity
