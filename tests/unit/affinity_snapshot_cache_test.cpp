// Unit tests for the last-known-good cache file: round trip of a large table with deltas,
// refusal of corrupt and truncated files, atomic replacement.
#include <doctest/doctest.h>

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <vector>

#include "affinity/ownership_rows.h"
#include "affinity/snapshot_cache.h"

using namespace sprayer::affinity;

namespace {

// A private directory, removed with its files at the end.
struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/sprayer-cache-test-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    path = tmpl;
  }
  ~TempDir() {
    for (const std::string& name : entries()) ::unlink((path + "/" + name).c_str());
    ::rmdir(path.c_str());
  }
  std::vector<std::string> entries() const {
    std::vector<std::string> out;
    if (DIR* d = ::opendir(path.c_str())) {
      while (dirent* e = ::readdir(d)) {
        const std::string name = e->d_name;
        if (name != "." && name != "..") out.push_back(name);
      }
      ::closedir(d);
    }
    return out;
  }
};

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_all(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
}

std::optional<std::string> owner_of(const OwnershipSnapshot& s, std::string_view key) {
  const auto owner = s.find(key);
  if (!owner) return std::nullopt;
  return s.server_ids()[owner->server];
}

// A full read of n users over five servers (every 50th a tombstone), then a delta that
// moves some users to a server the full read never named and unassigns others.
std::vector<RowBlockPtr> sample_blocks(int n) {
  auto full = std::make_shared<OwnershipRowBlock>();
  for (int i = 0; i < n; ++i) {
    const std::string key = "user" + std::to_string(i) + (i % 7 == 0 ? "@a-rather-long-domain.example.com" : "");
    const std::string server = "server-" + std::to_string(i % 5);
    full->add(key, i % 50 == 0 ? std::nullopt : std::optional<std::string_view>(server), 1 + i);
  }
  auto delta = std::make_shared<OwnershipRowBlock>();
  for (int i = 0; i < n; i += 97) {
    const std::string key = "user" + std::to_string(i) + (i % 7 == 0 ? "@a-rather-long-domain.example.com" : "");
    delta->add(key, i % 2 ? std::optional<std::string_view>("server-new") : std::nullopt, n + 1 + i);
  }
  return {full, delta};
}

std::shared_ptr<const OwnershipSnapshot> replay(const std::vector<RowBlockPtr>& blocks) {
  auto s = build_snapshot(*blocks[0]);
  for (std::size_t i = 1; i < blocks.size(); ++i) s = apply_rows(*s, *blocks[i]);
  return s;
}

}  // namespace

TEST_CASE("snapshot cache: 100,000 rows with a delta round-trip exactly") {
  TempDir dir;
  const std::string path = dir.path + "/owners.cache";
  const auto blocks = sample_blocks(100000);
  const auto expected = replay(blocks);

  const CacheWriteResult written = write_snapshot_cache(path, expected->epoch(), blocks);
  REQUIRE_MESSAGE(written.ok(), written.error);
  CHECK(written.bytes == read_all(path).size());
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);  // user names: not world-readable

  const LoadedSnapshotCache loaded = load_snapshot_cache(path);
  REQUIRE_MESSAGE(loaded.ok(), loaded.error);
  CHECK(loaded.epoch == expected->epoch());
  CHECK(loaded.rows == blocks[0]->size() + blocks[1]->size());
  CHECK(loaded.snapshot->epoch() == expected->epoch());
  CHECK(loaded.snapshot->size() == expected->size());
  for (int i = 0; i < 100000; ++i) {
    const std::string key = "user" + std::to_string(i) + (i % 7 == 0 ? "@a-rather-long-domain.example.com" : "");
    const auto want = expected->find(key);
    const auto got = loaded.snapshot->find(key);
    REQUIRE(want.has_value() == got.has_value());
    if (want) {
      REQUIRE(owner_of(*loaded.snapshot, key) == owner_of(*expected, key));
      REQUIRE(got->epoch == want->epoch);
    }
  }
  CHECK_FALSE(loaded.snapshot->find("nobody"));

  // A compacted log writes the same table.
  const RowBlockPtr compacted = compact_row_blocks(blocks);
  REQUIRE(write_snapshot_cache(path, expected->epoch(), *compacted).ok());
  const LoadedSnapshotCache again = load_snapshot_cache(path);
  REQUIRE(again.ok());
  CHECK(again.snapshot->size() == expected->size());
  CHECK(again.rows == expected->size());
  CHECK(owner_of(*again.snapshot, "user97") == "server-new");
  CHECK_FALSE(again.snapshot->find("user194"));
}

TEST_CASE("snapshot cache: corrupt, truncated and foreign files are refused") {
  TempDir dir;
  const std::string path = dir.path + "/owners.cache";
  const auto blocks = sample_blocks(2000);
  REQUIRE(write_snapshot_cache(path, 4242, blocks).ok());
  const std::string good = read_all(path);
  REQUIRE(load_snapshot_cache(path).ok());

  SUBCASE("a flipped bit anywhere") {
    for (const std::size_t pos : {std::size_t{0}, std::size_t{9}, std::size_t{20}, std::size_t{40}, good.size() / 2,
                                  good.size() - 17, good.size() - 12, good.size() - 3}) {
      CAPTURE(pos);
      std::string bad = good;
      bad[pos] = static_cast<char>(bad[pos] ^ 0x10);
      write_all(path, bad);
      const LoadedSnapshotCache loaded = load_snapshot_cache(path);
      CHECK_FALSE(loaded.ok());
      CHECK(loaded.error.find("refused") != std::string::npos);
    }
  }
  SUBCASE("truncated at any length") {
    for (const std::size_t size : {std::size_t{0}, std::size_t{7}, std::size_t{47}, good.size() / 3, good.size() - 16,
                                   good.size() - 1}) {
      CAPTURE(size);
      write_all(path, good.substr(0, size));
      const LoadedSnapshotCache loaded = load_snapshot_cache(path);
      CHECK_FALSE(loaded.ok());
      CHECK(loaded.error.find("refused") != std::string::npos);
    }
  }
  SUBCASE("bytes appended") {
    write_all(path, good + "x");
    CHECK_FALSE(load_snapshot_cache(path).ok());
  }
  SUBCASE("not a cache file") {
    write_all(path, std::string(200, 'A'));
    const LoadedSnapshotCache loaded = load_snapshot_cache(path);
    CHECK_FALSE(loaded.ok());
    CHECK(loaded.error.find("bad magic") != std::string::npos);
  }
  SUBCASE("missing file") {
    const LoadedSnapshotCache loaded = load_snapshot_cache(dir.path + "/nothing-here");
    CHECK_FALSE(loaded.ok());
    CHECK(loaded.error.find("nothing-here") != std::string::npos);
    CHECK(loaded.error.find("No such file") != std::string::npos);
  }
}

TEST_CASE("snapshot cache: replacement is atomic and leaves no temporary files") {
  TempDir dir;
  const std::string path = dir.path + "/owners.cache";
  OwnershipRowBlock a;
  a.add("alice", std::string_view("s1"), 1);
  OwnershipRowBlock b;
  b.add("alice", std::string_view("s2"), 2);
  b.add("bob", std::string_view("s2"), 3);

  REQUIRE(write_snapshot_cache(path, 1, a).ok());
  const std::string old_bytes = read_all(path);
  // A reader that opened the old file keeps reading the whole old file: the new one
  // arrives by rename, never by rewriting in place.
  const int reader = ::open(path.c_str(), O_RDONLY);
  REQUIRE(reader >= 0);

  REQUIRE(write_snapshot_cache(path, 3, b).ok());
  std::string seen(old_bytes.size() + 10, '\0');
  const ssize_t n = ::pread(reader, seen.data(), seen.size(), 0);
  ::close(reader);
  REQUIRE(n == static_cast<ssize_t>(old_bytes.size()));
  seen.resize(static_cast<std::size_t>(n));
  CHECK(seen == old_bytes);

  const LoadedSnapshotCache loaded = load_snapshot_cache(path);
  REQUIRE(loaded.ok());
  CHECK(loaded.epoch == 3);
  CHECK(owner_of(*loaded.snapshot, "alice") == "s2");
  CHECK(dir.entries() == std::vector<std::string>{"owners.cache"});

  SUBCASE("a failed write keeps the old file and removes its temporary file") {
    const std::string blocked = dir.path + "/blocked";
    REQUIRE(::mkdir(blocked.c_str(), 0700) == 0);  // rename() cannot replace a directory
    const CacheWriteResult failed = write_snapshot_cache(blocked, 4, a);
    CHECK_FALSE(failed.ok());
    CHECK(failed.error.find(blocked) != std::string::npos);
    ::rmdir(blocked.c_str());
    CHECK(dir.entries() == std::vector<std::string>{"owners.cache"});
    CHECK(load_snapshot_cache(path).epoch == 3);

    const CacheWriteResult no_dir = write_snapshot_cache(dir.path + "/missing/owners.cache", 4, a);
    CHECK_FALSE(no_dir.ok());
    CHECK(no_dir.error.find("missing") != std::string::npos);
  }
}
