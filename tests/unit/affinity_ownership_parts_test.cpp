// Unit tests for the pure parts of the ownership sources: row blocks and their compaction
// (against a reference model), backoff with jitter, database timestamp parsing.
#include <doctest/doctest.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "affinity/ownership_rows.h"
#include "affinity/ownership_source.h"

using namespace sprayer::affinity;

namespace {

std::uint64_t splitmix(std::uint64_t& state) {
  std::uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

std::optional<std::string> owner_of(const OwnershipSnapshot& s, std::string_view key) {
  const auto owner = s.find(key);
  if (!owner) return std::nullopt;
  return s.server_ids()[owner->server];
}

}  // namespace

TEST_CASE("row block: rows read back as added, servers interned, epochs tracked") {
  OwnershipRowBlock block;
  block.add("alice", std::string_view("s1"), 5);
  block.add("bob", std::nullopt, 7);
  block.add("carol", std::string_view("s2"), 3);
  block.add("dave", std::string_view("s1"), 4);
  block.add("erin", std::string_view(""), 6);  // "" = unassigned, like NULL
  REQUIRE(block.size() == 5);
  CHECK(block.server_ids().size() == 2);
  CHECK(block.max_epoch() == 7);
  CHECK(block.row(0).user_key == "alice");
  CHECK(*block.row(0).server_id == "s1");
  CHECK_FALSE(block.row(1).server_id.has_value());
  CHECK(*block.row(3).server_id == "s1");
  CHECK_FALSE(block.row(4).server_id.has_value());

  const auto snapshot = build_snapshot(block);
  CHECK(snapshot->size() == 3);
  CHECK(snapshot->epoch() == 7);
  CHECK(owner_of(*snapshot, "alice") == "s1");
  CHECK_FALSE(owner_of(*snapshot, "bob"));
  CHECK_FALSE(owner_of(*snapshot, "erin"));
}

TEST_CASE("row block: a key the snapshot rejects keeps its epoch") {
  OwnershipRowBlock block;
  block.add("alice", std::string_view("s1"), 5);
  block.add(std::string(70000, 'x'), std::string_view("s1"), 9);
  REQUIRE(block.size() == 2);
  CHECK(block.row(1).user_key.empty());
  const auto snapshot = build_snapshot(block);
  CHECK(snapshot->size() == 1);
  CHECK(snapshot->epoch() == 9);  // "epoch > 9" next time, not the same row again
  CHECK(snapshot->rejected_rows() == 1);
}

TEST_CASE("row blocks: apply_rows equals with_delta; compaction equals replaying every block") {
  std::uint64_t rng = 42;
  const std::vector<std::string> servers = {"s0", "s1", "s2", "s3"};
  std::map<std::string, std::pair<std::optional<std::string>, std::int64_t>> model;
  std::vector<RowBlockPtr> blocks;
  std::int64_t epoch = 0;

  auto full = std::make_shared<OwnershipRowBlock>();
  for (int i = 0; i < 5000; ++i) {
    const std::string key = "user" + std::to_string(i);
    const auto server = servers[splitmix(rng) % servers.size()];
    full->add(key, std::string_view(server), ++epoch);
    model[key] = {server, epoch};
  }
  blocks.push_back(full);
  auto snapshot = build_snapshot(*full);

  for (int round = 0; round < 40; ++round) {
    auto delta = std::make_shared<OwnershipRowBlock>();
    const int n = 1 + static_cast<int>(splitmix(rng) % 300);
    for (int i = 0; i < n; ++i) {
      const std::string key = "user" + std::to_string(splitmix(rng) % 6000);
      std::optional<std::string> server;
      if (splitmix(rng) % 5 != 0) server = servers[splitmix(rng) % servers.size()];
      // Same-epoch rows in one batch: the later wins.
      const std::int64_t e = (splitmix(rng) % 4 == 0) ? epoch : ++epoch;
      delta->add(key, server ? std::optional<std::string_view>(*server) : std::nullopt, e);
      if (e >= model[key].second) model[key] = {server, e};
    }
    blocks.push_back(delta);
    snapshot = apply_rows(*snapshot, *delta, DeltaPolicy{16, 512});
  }

  const auto compacted = compact_row_blocks(blocks);
  const auto rebuilt = build_snapshot(*compacted);
  std::size_t live = 0;
  for (const auto& entry : model) {
    const auto& key = entry.first;  // clang 14 cannot capture a structured binding
    const auto& value = entry.second;
    CAPTURE(key);
    CHECK(owner_of(*snapshot, key) == value.first);
    CHECK(owner_of(*rebuilt, key) == value.first);
    if (value.first) {
      ++live;
      CHECK(rebuilt->find(key)->epoch == value.second);
    }
  }
  CHECK(snapshot->size() == live);
  CHECK(rebuilt->size() == live);
  CHECK(compacted->size() == live);  // one row per user, no tombstones
}

TEST_CASE("backoff: doubles from min to max, jitter within [d/2, d], reset") {
  using std::chrono::milliseconds;
  Backoff backoff(milliseconds(500), milliseconds(30000));
  const std::uint64_t top = ~std::uint64_t{0};
  // Highest random value: the full ceiling (minus rounding).
  const std::int64_t expected[] = {500, 1000, 2000, 4000, 8000, 16000, 30000, 30000};
  for (const std::int64_t ceiling : expected) {
    const auto d = backoff.next(top).count();
    CHECK(d <= ceiling);
    CHECK(d >= ceiling - 1);
  }
  backoff.reset();
  CHECK(backoff.next(0).count() == 250);  // lowest random value: half the ceiling
  CHECK(backoff.next(0).count() == 500);

  std::uint64_t rng = 7;
  Backoff jittered(milliseconds(100), milliseconds(1000));
  for (int i = 0; i < 100; ++i) {
    const std::int64_t ceiling = std::min<std::int64_t>(1000, 100LL << std::min(i, 10));
    const auto d = jittered.next(splitmix(rng)).count();
    CHECK(d >= ceiling / 2);
    CHECK(d <= ceiling);
  }
}

TEST_CASE("parse_db_timestamp: SQLite text, PostgreSQL timestamptz, Unix seconds") {
  using namespace std::chrono;
  const auto at = [](int y, unsigned mo, unsigned d, int h, int mi, int s) {
    return system_clock::time_point(sys_days(year{y} / mo / d).time_since_epoch() + hours(h) + minutes(mi) + seconds(s));
  };
  CHECK(parse_db_timestamp("2024-05-01 12:34:56") == at(2024, 5, 1, 12, 34, 56));
  CHECK(parse_db_timestamp("2024-05-01T12:34:56Z") == at(2024, 5, 1, 12, 34, 56));
  CHECK(parse_db_timestamp("2024-05-01 12:34:56+00") == at(2024, 5, 1, 12, 34, 56));
  CHECK(parse_db_timestamp("2024-05-01 14:34:56+02") == at(2024, 5, 1, 12, 34, 56));
  CHECK(parse_db_timestamp("2024-05-01 07:04:56-05:30") == at(2024, 5, 1, 12, 34, 56));
  CHECK(parse_db_timestamp("2024-05-01 12:34:56.250+00") == at(2024, 5, 1, 12, 34, 56) + milliseconds(250));
  CHECK(parse_db_timestamp("2024-05-01 12:34") == at(2024, 5, 1, 12, 34, 0));
  CHECK(parse_db_timestamp("2024-05-01") == at(2024, 5, 1, 0, 0, 0));
  CHECK(parse_db_timestamp("1714566896") == at(2024, 5, 1, 12, 34, 56));
  CHECK(parse_db_timestamp("1714566896.5") == at(2024, 5, 1, 12, 34, 56) + milliseconds(500));
  CHECK_FALSE(parse_db_timestamp(""));
  CHECK_FALSE(parse_db_timestamp("yesterday"));
  CHECK_FALSE(parse_db_timestamp("2024-13-01 00:00:00"));
  CHECK_FALSE(parse_db_timestamp("2024-05-01 12:34:56 junk"));
  CHECK_FALSE(parse_db_timestamp("infinity"));
}

TEST_CASE("to_string(SourceState)") {
  CHECK(to_string(SourceState::connecting) == "connecting");
  CHECK(to_string(SourceState::ok) == "ok");
  CHECK(to_string(SourceState::degraded) == "degraded");
  CHECK(to_string(SourceState::from_cache) == "from_cache");
  CHECK(to_string(SourceState::none) == "none");
}
