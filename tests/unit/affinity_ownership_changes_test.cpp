// Change detection without the database: the change column, the delta parameter, the
// watermark's de-duplication and the full scan's diff.
#include <doctest/doctest.h>

#include <string>

#include "affinity/ownership_changes.h"
#include "affinity/ownership_sql.h"

using namespace sprayer::affinity;
using namespace std::chrono_literals;

namespace {

std::shared_ptr<OwnershipRowBlock> block(std::initializer_list<OwnershipRow> rows) {
  auto b = std::make_shared<OwnershipRowBlock>();
  for (const auto& r : rows) b->add(r);
  return b;
}

std::string owner_of(const OwnershipSnapshot& s, std::string_view user) {
  const auto o = s.find(user);
  return o ? s.server_ids()[o->server] : "-";
}

constexpr std::int64_t kT = 1764619200000000;  // 2025-12-01 20:00:00 UTC in microseconds

}  // namespace

TEST_CASE("change values: epoch integers, watermark timestamps as UTC microseconds, nothing for full_scan") {
  CHECK(change_value(ChangeDetection::epoch, "42") == 42);
  CHECK(!change_value(ChangeDetection::epoch, "4x"));
  CHECK(!change_value(ChangeDetection::epoch, std::nullopt));
  CHECK(change_value(ChangeDetection::watermark, "2025-12-01 20:00:00.000001") == kT + 1);
  CHECK(change_value(ChangeDetection::watermark, "2025-12-01T20:00:00Z") == kT);
  CHECK(change_value(ChangeDetection::watermark, "2025-12-01 21:00:00+01") == kT);  // PostgreSQL timestamptz
  CHECK(!change_value(ChangeDetection::watermark, "yesterday"));
  CHECK(!change_value(ChangeDetection::watermark, std::nullopt));
  CHECK(change_value(ChangeDetection::full_scan, std::nullopt) == 0);
}

TEST_CASE("the delta parameter: the epoch, or the watermark minus the overlap as timestamp text") {
  CHECK(format_timestamp_micros(kT + 123456) == "2025-12-01 20:00:00.123456");
  CHECK(format_timestamp_micros(-1) == "1969-12-31 23:59:59.999999");
  const DeltaParameter e = delta_parameter(ChangeDetection::epoch, 17, 2s);
  CHECK(e.integer == 17);
  const DeltaParameter w = delta_parameter(ChangeDetection::watermark, kT + 500000, 2s);
  CHECK(!w.integer);
  CHECK(w.text == "2025-12-01 19:59:58.500000");
  // The text round-trips: what the database compares is what sprayer parsed.
  CHECK(change_value(ChangeDetection::watermark, w.text) == kT - 1500000);
}

TEST_CASE("default queries per mode") {
  CHECK(default_queries(ChangeDetection::epoch).delta.find("epoch > $1") != std::string::npos);
  CHECK(default_queries(ChangeDetection::watermark).delta.find("changed_at > $1") != std::string::npos);
  CHECK(default_queries(ChangeDetection::watermark).change.empty());
  CHECK(default_queries(ChangeDetection::full_scan).full == "SELECT user_key, server_id FROM user_owner");
}

TEST_CASE("watermark: rows read again inside the overlap change nothing; new ones, late ones and moves apply") {
  const auto full = apply_read(ChangeDetection::watermark, true, nullptr,
                               block({{"ann", "s1", kT}, {"bob", "s1", kT}, {"cid", "s2", kT + 10}}));
  REQUIRE(full.snapshot);
  CHECK(full.full);
  CHECK(full.snapshot->epoch() == kT + 10);

  SUBCASE("the overlap read again: same owner, same timestamp -> no snapshot at all") {
    const auto out = apply_read(ChangeDetection::watermark, false, full.snapshot,
                                block({{"bob", "s1", kT}, {"cid", "s2", kT + 10}}));
    CHECK(!out.snapshot);
    CHECK(out.skipped == 2);
  }
  SUBCASE("a commit sharing the newest timestamp, and one that landed late, are both applied") {
    const auto out = apply_read(ChangeDetection::watermark, false, full.snapshot,
                                block({{"cid", "s2", kT + 10}, {"dan", "s2", kT + 10}, {"eve", "s1", kT - 5}}));
    REQUIRE(out.snapshot);
    CHECK(out.skipped == 1);
    CHECK(out.rows->size() == 2);
    CHECK(owner_of(*out.snapshot, "dan") == "s2");
    CHECK(owner_of(*out.snapshot, "eve") == "s1");
    CHECK(out.snapshot->epoch() == kT + 10);
  }
  SUBCASE("a move, and an unassignment, apply") {
    const auto out = apply_read(ChangeDetection::watermark, false, full.snapshot,
                                block({{"ann", "s2", kT + 20}, {"bob", std::nullopt, kT + 21}}));
    REQUIRE(out.snapshot);
    CHECK(owner_of(*out.snapshot, "ann") == "s2");
    CHECK(owner_of(*out.snapshot, "bob") == "-");
    CHECK(out.snapshot->epoch() == kT + 21);
  }
  SUBCASE("an old tombstone for a user never held is skipped; a new one moves the watermark") {
    CHECK(!apply_read(ChangeDetection::watermark, false, full.snapshot, block({{"zed", std::nullopt, kT}})).snapshot);
    const auto out = apply_read(ChangeDetection::watermark, false, full.snapshot, block({{"zed", std::nullopt, kT + 99}}));
    REQUIRE(out.snapshot);
    CHECK(out.snapshot->epoch() == kT + 99);
  }
}

TEST_CASE("full_scan: only the differences are applied; lost rows rebuild the base") {
  const auto first = apply_read(ChangeDetection::full_scan, true, nullptr,
                                block({{"ann", "s1", 0}, {"bob", "s1", 0}, {"cid", "s2", 0}}));
  REQUIRE(first.snapshot);
  CHECK(first.full);

  SUBCASE("nothing changed: no snapshot") {
    const auto out = apply_read(ChangeDetection::full_scan, true, first.snapshot,
                                block({{"cid", "s2", 0}, {"ann", "s1", 0}, {"bob", "s1", 0}}));
    CHECK(!out.snapshot);
    CHECK(out.skipped == 3);
  }
  SUBCASE("a move, a new user and an unassignment come out as a three-row delta") {
    const auto out = apply_read(ChangeDetection::full_scan, true, first.snapshot,
                                block({{"ann", "s2", 0}, {"bob", std::nullopt, 0}, {"cid", "s2", 0}, {"dan", "s3", 0}}));
    REQUIRE(out.snapshot);
    CHECK(!out.full);
    CHECK(out.rows->size() == 3);
    CHECK(owner_of(*out.snapshot, "ann") == "s2");
    CHECK(owner_of(*out.snapshot, "bob") == "-");
    CHECK(owner_of(*out.snapshot, "dan") == "s3");
    CHECK(out.snapshot->epoch() == first.snapshot->epoch() + 1);
    // The next scan against the result finds nothing new.
    const auto again = apply_read(ChangeDetection::full_scan, true, out.snapshot,
                                  block({{"ann", "s2", 0}, {"bob", std::nullopt, 0}, {"cid", "s2", 0}, {"dan", "s3", 0}}));
    CHECK(!again.snapshot);
  }
  SUBCASE("a deleted row: the scan becomes the new base") {
    const auto out = apply_read(ChangeDetection::full_scan, true, first.snapshot, block({{"ann", "s1", 0}, {"cid", "s2", 0}}));
    REQUIRE(out.snapshot);
    CHECK(out.full);
    CHECK(out.snapshot->size() == 2);
    CHECK(owner_of(*out.snapshot, "bob") == "-");
  }
}

TEST_CASE("placeholders and rows from a SQL client") {
  CHECK(find_placeholder("SELECT a FROM t WHERE e > $1")->offset == 26);
  CHECK(find_placeholder("SELECT a FROM t WHERE e > ?")->length == 1);
  CHECK(find_placeholder("SELECT '?', \"$1\" FROM t -- ?\n WHERE e > ?")->offset == 40);
  CHECK(!find_placeholder("SELECT a FROM t WHERE e > $10"));

  OwnershipRowBlock rows;
  std::string error;
  const std::optional<std::string_view> good[] = {"ann", "s1", "2025-12-01 20:00:00"};
  CHECK(add_owner_row(ChangeDetection::watermark, good, "delta", rows, error));
  const std::optional<std::string_view> bad[] = {"bob", "s1", "soon"};
  CHECK(!add_owner_row(ChangeDetection::watermark, bad, "delta", rows, error));
  CHECK(error == "delta query: changed_at of user 'bob' is not a timestamp ('soon')");
  const std::optional<std::string_view> two[] = {"cid", std::nullopt};
  CHECK(add_owner_row(ChangeDetection::full_scan, two, "full", rows, error));
  CHECK(!add_owner_row(ChangeDetection::epoch, two, "full", rows, error));
  CHECK(error == "full query must return user_key, server_id, epoch");

  PoolServerRow server;
  const std::optional<std::string_view> srv[] = {"s1", "10.0.0.1:80", "-200", "2025-12-01 20:00:00.5"};
  REQUIRE(parse_server_row(srv, server, error));
  CHECK(server.availability == -200);
  REQUIRE(server.heartbeat_at);
  const auto at = *server.heartbeat_at;
  CHECK(!heartbeat_stale(server, at + 10s, 0s));
  CHECK(!heartbeat_stale(server, at + 10s, 30s));
  CHECK(heartbeat_stale(server, at + 31s, 30s));
  server.heartbeat_at.reset();
  CHECK(heartbeat_stale(server, at, 30s));
}
