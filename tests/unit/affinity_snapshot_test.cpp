// Unit tests for the ownership snapshot: full builds, tombstones, epochs, deltas with
// overlay and compaction (checked against a reference model), size and memory.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "affinity/rendezvous.h"
#include "affinity/snapshot.h"

using namespace sprayer::affinity;

namespace {

// Owns the strings a batch of OwnershipRow views point into.
struct Rows {
  struct Owned {
    std::string key;
    std::optional<std::string> server;
    std::int64_t epoch;
  };
  std::vector<Owned> owned;

  Rows& add(std::string key, std::optional<std::string> server, std::int64_t epoch) {
    owned.push_back({std::move(key), std::move(server), epoch});
    return *this;
  }
  std::vector<OwnershipRow> views() const {
    std::vector<OwnershipRow> out;
    for (const Owned& o : owned) {
      out.push_back(OwnershipRow{o.key, o.server ? std::optional<std::string_view>(*o.server) : std::nullopt, o.epoch});
    }
    return out;
  }
};

std::shared_ptr<const OwnershipSnapshot> build(const Rows& rows) {
  SnapshotBuilder builder;
  for (const OwnershipRow& row : rows.views()) builder.add(row);
  return builder.build();
}

std::optional<std::string> owner_id(const OwnershipSnapshot& snapshot, std::string_view key) {
  const auto owner = snapshot.find(key);
  if (!owner) return std::nullopt;
  REQUIRE(owner->server < snapshot.server_ids().size());
  return snapshot.server_ids()[owner->server];
}

std::uint64_t splitmix(std::uint64_t& state) {
  std::uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

}  // namespace

TEST_CASE("snapshot: empty") {
  const auto empty = OwnershipSnapshot::empty();
  CHECK(empty->size() == 0);
  CHECK(empty->epoch() == 0);
  CHECK(empty->server_ids().empty());
  CHECK_FALSE(empty->find("jdoe"));
  CHECK_FALSE(empty->find(""));
  CHECK(empty->overlay_rows() == 0);
  CHECK(SnapshotBuilder().build()->size() == 0);
}

TEST_CASE("snapshot: full build, lookup, interned servers, epoch") {
  Rows rows;
  rows.add("jdoe", "s1", 10).add("jane", "s2", 12).add("bob", "s1", 11).add("ghost", std::nullopt, 40);
  const auto snapshot = build(rows);
  CHECK(snapshot->size() == 3);
  CHECK(snapshot->epoch() == 40);  // the tombstone's epoch counts
  CHECK(snapshot->server_ids().size() == 2);
  CHECK(owner_id(*snapshot, "jdoe") == "s1");
  CHECK(owner_id(*snapshot, "bob") == "s1");
  CHECK(owner_id(*snapshot, "jane") == "s2");
  CHECK(snapshot->find("jdoe")->epoch == 10);
  CHECK(snapshot->find("jane") == Owner{*snapshot->server_index("s2"), 12});
  CHECK(snapshot->find("jdoe", hash_key("jdoe")) == snapshot->find("jdoe"));
  CHECK_FALSE(snapshot->find("ghost"));
  CHECK_FALSE(snapshot->find("nobody"));
  CHECK_FALSE(snapshot->find("JDOE"));  // keys are exact: normalise before looking up
  CHECK_FALSE(snapshot->find("jdo"));
  CHECK_FALSE(snapshot->find("jdoe "));
  CHECK_FALSE(snapshot->server_index("s3"));
}

TEST_CASE("snapshot: duplicate keys in a full load, highest epoch wins, ties go to the later row") {
  Rows rows;
  rows.add("a", "s1", 5).add("a", "s2", 3).add("b", "s1", 1).add("b", "s2", 2).add("c", "s1", 7).add("c", "s2", 7);
  rows.add("d", "s1", 1).add("d", std::nullopt, 2).add("e", std::nullopt, 1).add("e", "s3", 2);
  const auto snapshot = build(rows);
  CHECK(owner_id(*snapshot, "a") == "s1");
  CHECK(owner_id(*snapshot, "b") == "s2");
  CHECK(owner_id(*snapshot, "c") == "s2");
  CHECK_FALSE(snapshot->find("d"));
  CHECK(owner_id(*snapshot, "e") == "s3");
  CHECK(snapshot->size() == 4);
}

TEST_CASE("snapshot: rejected rows") {
  SnapshotBuilder builder;
  CHECK(builder.add({"ok", "s1", 1}));
  CHECK_FALSE(builder.add({"", "s1", 2}));
  const std::string long_key(70000, 'k');
  CHECK_FALSE(builder.add({long_key, "s1", 3}));
  const std::string max_key(65535, 'k');
  CHECK(builder.add({max_key, "s1", 3}));
  CHECK(builder.add({"unassigned", "", 4}));  // "" is unassigned, like NULL
  CHECK(builder.rejected() == 2);
  const auto snapshot = builder.build();
  CHECK(snapshot->rejected_rows() == 2);
  CHECK(snapshot->epoch() == 4);
  CHECK(snapshot->size() == 2);
  CHECK(owner_id(*snapshot, max_key) == "s1");
  CHECK_FALSE(snapshot->find("unassigned"));
  // The builder is reusable after build().
  CHECK(builder.rejected() == 0);
  builder.add({"again", "s9", 1});
  CHECK(owner_id(*builder.build(), "again") == "s9");
}

TEST_CASE("snapshot: keys that are prefixes of each other, binary and UTF-8 keys") {
  Rows rows;
  const std::vector<std::string> keys = {"a", "ab", "abc", "abcd", std::string("a\0b", 3), "j\xC3\xBCrgen", "jane doe"};
  for (std::size_t i = 0; i < keys.size(); ++i) rows.add(keys[i], "s" + std::to_string(i), 1);
  const auto snapshot = build(rows);
  for (std::size_t i = 0; i < keys.size(); ++i) {
    CAPTURE(i);
    CHECK(owner_id(*snapshot, keys[i]) == "s" + std::to_string(i));
  }
  CHECK_FALSE(snapshot->find(std::string("a\0", 2)));
}

TEST_CASE("snapshot: deltas reassign, add, hide, ignore stale rows and never touch the old snapshot") {
  Rows base_rows;
  base_rows.add("jdoe", "s1", 10).add("jane", "s2", 11).add("bob", "s1", 12);
  const auto v1 = build(base_rows);

  Rows delta;
  delta.add("jdoe", "s2", 20).add("new", "s3", 21).add("bob", std::nullopt, 22).add("jane", "s1", 5);
  const auto delta_rows = delta.views();
  const auto v2 = v1->with_delta(delta_rows);

  CHECK(owner_id(*v2, "jdoe") == "s2");
  CHECK(v2->find("jdoe")->epoch == 20);
  CHECK(owner_id(*v2, "new") == "s3");
  CHECK_FALSE(v2->find("bob"));              // tombstone hides the base entry
  CHECK(owner_id(*v2, "jane") == "s2");      // stale row (epoch 5 < 11) ignored
  CHECK(v2->size() == 3);                    // jdoe, jane, new
  CHECK(v2->epoch() == 22);
  CHECK(v2->overlay_rows() == 3);
  // Old server indices stay valid; new ids are appended.
  CHECK(v2->server_ids().size() == 3);
  CHECK(v2->server_ids()[0] == v1->server_ids()[0]);
  CHECK(v2->server_ids()[1] == v1->server_ids()[1]);
  CHECK(v2->server_ids()[2] == "s3");

  // v1 is immutable.
  CHECK(owner_id(*v1, "jdoe") == "s1");
  CHECK(owner_id(*v1, "bob") == "s1");
  CHECK_FALSE(v1->find("new"));
  CHECK(v1->size() == 3);
  CHECK(v1->epoch() == 12);

  // A later delta stacks on the overlay and can bring a hidden user back.
  Rows delta2;
  delta2.add("bob", "s3", 30).add("new", std::nullopt, 31).add("jdoe", "s1", 19);
  const auto v3 = v2->with_delta(delta2.views());
  CHECK(owner_id(*v3, "bob") == "s3");
  CHECK_FALSE(v3->find("new"));
  CHECK(owner_id(*v3, "jdoe") == "s2");  // 19 < 20: stale against the overlay
  CHECK(v3->size() == 3);                // jdoe, jane, bob
  CHECK(v3->epoch() == 31);

  // An empty delta keeps everything.
  const auto v4 = v3->with_delta({});
  CHECK(v4->size() == v3->size());
  CHECK(v4->epoch() == v3->epoch());
  CHECK(owner_id(*v4, "bob") == "s3");
}

TEST_CASE("snapshot: a tombstone for an unknown user only moves the epoch") {
  const auto v1 = build(Rows().add("a", "s1", 1));
  const auto v2 = v1->with_delta(Rows().add("zzz", std::nullopt, 9).views());
  CHECK(v2->size() == 1);
  CHECK(v2->epoch() == 9);
  CHECK_FALSE(v2->find("zzz"));
}

TEST_CASE("snapshot: the overlay is compacted into a new base past the policy") {
  Rows base_rows;
  for (int i = 0; i < 100; ++i) base_rows.add("u" + std::to_string(i), "s" + std::to_string(i % 3), i);
  const auto v1 = build(base_rows);
  const DeltaPolicy policy{4, 0};  // compact when the overlay exceeds base / 4

  Rows small;
  for (int i = 0; i < 10; ++i) small.add("u" + std::to_string(i), std::nullopt, 1000 + i);
  const auto v2 = v1->with_delta(small.views(), policy);
  CHECK(v2->overlay_rows() == 10);
  CHECK(v2->size() == 90);

  Rows more;
  for (int i = 10; i < 30; ++i) more.add("u" + std::to_string(i), "s9", 2000 + i);
  const auto v3 = v2->with_delta(more.views(), policy);
  CHECK(v3->overlay_rows() == 0);  // 30 > 100 / 4: compacted
  CHECK(v3->size() == 90);
  CHECK(v3->epoch() == 2029);
  for (int i = 0; i < 100; ++i) {
    CAPTURE(i);
    const std::string key = "u" + std::to_string(i);
    if (i < 10) {
      CHECK_FALSE(v3->find(key));
    } else if (i < 30) {
      CHECK(owner_id(*v3, key) == "s9");
    } else {
      CHECK(owner_id(*v3, key) == "s" + std::to_string(i % 3));
    }
  }
}

TEST_CASE("snapshot: owned users per server follow builds, deltas and compaction") {
  Rows rows;
  rows.add("a", "s1", 1).add("b", "s1", 1).add("c", "s2", 1).add("d", std::nullopt, 1);
  auto snapshot = build(rows);
  REQUIRE(snapshot->server_ids().size() == 2);
  CHECK(snapshot->owned_users(*snapshot->server_index("s1")) == 2);
  CHECK(snapshot->owned_users(*snapshot->server_index("s2")) == 1);
  CHECK(snapshot->owned_users(7) == 0);  // out of range: zero, not a crash

  Rows delta;
  delta.add("a", "s2", 2).add("b", std::nullopt, 2).add("e", "s3", 2).add("c", "s1", 0);  // c: stale
  auto next = snapshot->with_delta(delta.views());
  REQUIRE(next->overlay_rows() > 0);
  CHECK(next->owned_users(*next->server_index("s1")) == 0);
  CHECK(next->owned_users(*next->server_index("s2")) == 2);
  CHECK(next->owned_users(*next->server_index("s3")) == 1);
  // The old snapshot keeps its own counts.
  CHECK(snapshot->owned_users(*snapshot->server_index("s1")) == 2);

  DeltaPolicy compact_now;
  compact_now.compact_min_rows = 0;
  compact_now.compact_divisor = 1000000;
  Rows more;
  more.add("f", "s1", 3);
  auto compacted = next->with_delta(more.views(), compact_now);
  CHECK(compacted->overlay_rows() == 0);
  CHECK(compacted->owned_users(*compacted->server_index("s1")) == 1);
  CHECK(compacted->owned_users(*compacted->server_index("s2")) == 2);
  CHECK(compacted->owned_users(*compacted->server_index("s3")) == 1);
  CHECK(OwnershipSnapshot::empty()->owned_by_server().empty());
}

TEST_CASE("snapshot: random deltas agree with a reference model") {
  int compactions = 0;
  int overlays = 0;
  for (std::uint64_t seed = 1; seed <= 6; ++seed) {
    CAPTURE(seed);
    std::uint64_t state = seed;
    struct Model {
      std::optional<std::string> server;
      std::int64_t epoch;
    };
    std::map<std::string, Model> model;
    std::int64_t epoch = 0;
    const auto key_of = [](std::uint64_t n) { return "user" + std::to_string(n % 3000); };
    const auto server_of = [](std::uint64_t n) -> std::optional<std::string> {
      if (n % 5 == 0) return std::nullopt;
      return "srv" + std::to_string(n % 7);
    };
    const auto apply = [&](const Rows& rows) {
      for (const auto& row : rows.owned) {
        epoch = std::max(epoch, row.epoch);
        auto it = model.find(row.key);
        if (it != model.end() && row.epoch < it->second.epoch) continue;
        model[row.key] = Model{row.server, row.epoch};
      }
    };

    Rows initial;
    for (int i = 0; i < 2000; ++i) {
      // Separate statements: argument evaluation order would differ between compilers.
      const std::uint64_t k = splitmix(state);
      const std::uint64_t s = splitmix(state);
      initial.add(key_of(k), server_of(s), static_cast<std::int64_t>(splitmix(state) % 100));
    }
    apply(initial);
    auto snapshot = build(initial);
    DeltaPolicy policy;
    policy.compact_divisor = 1 + splitmix(state) % 8;
    policy.compact_min_rows = splitmix(state) % 200;

    for (int round = 0; round < 40; ++round) {
      Rows delta;
      const int n = static_cast<int>(splitmix(state) % 60);
      for (int i = 0; i < n; ++i) {
        // Mostly newer epochs, sometimes a stale or equal one.
        const std::int64_t e = epoch + static_cast<std::int64_t>(splitmix(state) % 20) - 3;
        const std::uint64_t k = splitmix(state);
        delta.add(key_of(k), server_of(splitmix(state)), e);
      }
      apply(delta);
      snapshot = snapshot->with_delta(delta.views(), policy);
      if (n > 0) (snapshot->overlay_rows() == 0 ? compactions : overlays)++;

      std::size_t live = 0;
      std::map<std::string, std::size_t> per_server;
      for (const auto& [key, m] : model) {
        if (m.server) ++live;
        if (m.server) ++per_server[*m.server];
        const auto got = owner_id(*snapshot, key);
        if (got != m.server) {
          FAIL_CHECK("mismatch for " << key << " round " << round);
          break;
        }
        if (got) REQUIRE(snapshot->find(key)->epoch == m.epoch);
      }
      REQUIRE(snapshot->size() == live);
      REQUIRE(snapshot->epoch() == epoch);
      REQUIRE(snapshot->owned_by_server().size() == snapshot->server_ids().size());
      for (std::size_t i = 0; i < snapshot->server_ids().size(); ++i) {
        const auto it = per_server.find(snapshot->server_ids()[i]);
        REQUIRE(snapshot->owned_by_server()[i] == (it == per_server.end() ? 0 : it->second));
      }
    }
    for (int i = 3000; i < 3100; ++i) CHECK_FALSE(snapshot->find("user" + std::to_string(i)));
  }
  CHECK(compactions > 0);  // both paths were exercised
  CHECK(overlays > 0);
}

TEST_CASE("snapshot: 1,000,000 users fit in 64 MiB and are all found") {
  constexpr int kUsers = 1000000;
  std::vector<std::string> servers = {"traveler1", "traveler2", "traveler3", "traveler4"};
  SnapshotBuilder builder(kUsers);
  char key[16];
  for (int i = 0; i < kUsers; ++i) {
    std::snprintf(key, sizeof key, "user%08d", i);  // 12 characters
    builder.add({key, servers[i % 4], i});
  }
  const auto snapshot = builder.build();
  CHECK(snapshot->size() == kUsers);
  MESSAGE("memory for 1M users: " << snapshot->memory_bytes() << " bytes");
  CHECK(snapshot->memory_bytes() <= 64u * 1024 * 1024);
  int found = 0;
  for (int i = 0; i < kUsers; i += 7) {
    std::snprintf(key, sizeof key, "user%08d", i);
    const auto owner = snapshot->find(key);
    if (owner && owner->server < 4 && snapshot->server_ids()[owner->server] == servers[i % 4] && owner->epoch == i) ++found;
  }
  CHECK(found == (kUsers + 6) / 7);
  for (int i = 0; i < 1000; ++i) {
    std::snprintf(key, sizeof key, "miss%08d", i);
    REQUIRE_FALSE(snapshot->find(key));
  }

  // Without a size hint the table grows and is then trimmed to the same footprint.
  SnapshotBuilder unsized;
  for (int i = 0; i < 100000; ++i) {
    std::snprintf(key, sizeof key, "user%08d", i);
    unsized.add({key, servers[i % 4], i});
  }
  const auto grown = unsized.build();
  CHECK(grown->size() == 100000);
  CHECK(grown->memory_bytes() <= 100000 * 56);
}

TEST_CASE("snapshot: many servers are interned; the 65536th distinct id is rejected") {
  SnapshotBuilder builder;
  std::size_t rejected = 0;
  for (int i = 0; i < 65540; ++i) {
    const std::string key = "u" + std::to_string(i);
    const std::string server = "s" + std::to_string(i);
    if (!builder.add({key, server, i})) ++rejected;
    // Every id seen again maps to its first index.
    if (i % 1000 == 0 && i > 0) builder.add({"again" + std::to_string(i), std::string("s1"), i});
  }
  CHECK(rejected == 5);
  const auto snapshot = builder.build();
  CHECK(snapshot->server_ids().size() == 65535);
  CHECK(owner_id(*snapshot, "u65534") == "s65534");
  CHECK_FALSE(snapshot->find("u65535"));
  CHECK(owner_id(*snapshot, "again5000") == "s1");
  CHECK(snapshot->find("again5000")->server == 1);
  CHECK(snapshot->server_index("s40000") == 40000);
}
