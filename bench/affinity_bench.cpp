// Micro-benchmark of the affinity hot path: snapshot build/memory/lookup for 1M users,
// delta application, user extraction, routing. Run a -O2 build: `affinity_bench [users]`.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <string>
#include <vector>

#include "affinity/extract.h"
#include "affinity/rendezvous.h"
#include "affinity/router.h"
#include "affinity/snapshot.h"

namespace {

using namespace sprayer::affinity;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

std::uint64_t splitmix(std::uint64_t& state) {
  std::uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

std::string key_of(std::size_t i, const char* prefix) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%s%08zu", prefix, i);  // 12 characters
  return buf;
}

long peak_rss_kib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss;
}

// Runs f(i) for i in [0, n) `rounds` times and returns the best ns per call.
template <class F>
double ns_per_call(std::size_t n, int rounds, F&& f) {
  double best = 1e30;
  for (int r = 0; r < rounds; ++r) {
    const auto start = Clock::now();
    for (std::size_t i = 0; i < n; ++i) f(i);
    best = std::min(best, seconds_since(start) * 1e9 / static_cast<double>(n));
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  const std::size_t users = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 1000000;
  const std::vector<std::string> server_ids = {"traveler1.acme.com", "traveler2.acme.com",
                                               "traveler3.acme.com", "traveler4.acme.com"};
  std::printf("users: %zu, servers: %zu\n", users, server_ids.size());
  volatile std::uint64_t sink = 0;  // keeps results alive so the loops are not elided

  // ---- snapshot build ----
  std::vector<std::string> keys(users);
  for (std::size_t i = 0; i < users; ++i) keys[i] = key_of(i, "user");
  const long rss_before = peak_rss_kib();
  auto start = Clock::now();
  SnapshotBuilder builder(users);
  for (std::size_t i = 0; i < users; ++i) {
    builder.add({keys[i], server_ids[i % server_ids.size()], static_cast<std::int64_t>(i)});
  }
  std::shared_ptr<const OwnershipSnapshot> snapshot = builder.build();
  const double build_s = seconds_since(start);
  std::printf("snapshot build (size hint):   %.1f ms, %zu bytes (%.1f MiB, %.1f B/user), peak RSS +%.1f MiB\n",
              build_s * 1e3, snapshot->memory_bytes(), snapshot->memory_bytes() / 1048576.0,
              static_cast<double>(snapshot->memory_bytes()) / static_cast<double>(users),
              (peak_rss_kib() - rss_before) / 1024.0);

  start = Clock::now();
  SnapshotBuilder unsized;
  for (std::size_t i = 0; i < users; ++i) {
    unsized.add({keys[i], server_ids[i % server_ids.size()], static_cast<std::int64_t>(i)});
  }
  const auto grown = unsized.build();
  std::printf("snapshot build (no hint):     %.1f ms, %zu bytes\n", seconds_since(start) * 1e3, grown->memory_bytes());

  // ---- lookups: keys in random order so every probe is a cache miss ----
  std::uint64_t state = 1;
  std::vector<std::string> hits = keys;
  for (std::size_t i = hits.size(); i > 1; --i) std::swap(hits[i - 1], hits[splitmix(state) % i]);
  std::vector<std::string> misses(users);
  for (std::size_t i = 0; i < users; ++i) misses[i] = key_of(splitmix(state) % 100000000, "miss");
  std::vector<std::uint64_t> hit_hashes(users), miss_hashes(users);
  for (std::size_t i = 0; i < users; ++i) {
    hit_hashes[i] = hash_key(hits[i]);
    miss_hashes[i] = hash_key(misses[i]);
  }
  std::uint64_t found = 0;
  const double hit_ns = ns_per_call(users, 3, [&](std::size_t i) { found += snapshot->find(hits[i]).has_value(); });
  const double hit_hashed_ns =
      ns_per_call(users, 3, [&](std::size_t i) { found += snapshot->find(hits[i], hit_hashes[i]).has_value(); });
  const double miss_ns = ns_per_call(users, 3, [&](std::size_t i) { found += snapshot->find(misses[i]).has_value(); });
  const double miss_hashed_ns =
      ns_per_call(users, 3, [&](std::size_t i) { found += snapshot->find(misses[i], miss_hashes[i]).has_value(); });
  const double hash_ns = ns_per_call(users, 3, [&](std::size_t i) { found += hash_key(hits[i]); });
  // Latency of one lookup: the next key depends on the previous result, so lookups
  // cannot overlap in the memory system as they do in the loops above.
  const auto chained = [&](const std::vector<std::string>& keys_, const std::vector<std::uint64_t>& hashes) {
    std::size_t next = 0;
    return ns_per_call(users, 3, [&](std::size_t) {
      const auto owner = snapshot->find(keys_[next], hashes[next]);
      next += 1 + static_cast<std::size_t>(owner ? owner->epoch >> 62 : 0);
      if (next == users) next = 0;
    });
  };
  const double hit_latency_ns = chained(hits, hit_hashes);
  const double miss_latency_ns = chained(misses, miss_hashes);
  sink = found;
  std::printf("lookup hit:   %.1f ns (with hash_key), %.1f ns (hash precomputed)\n", hit_ns, hit_hashed_ns);
  std::printf("lookup miss:  %.1f ns (with hash_key), %.1f ns (hash precomputed)\n", miss_ns, miss_hashed_ns);
  std::printf("lookup latency (dependent chain, hash precomputed): hit %.1f ns, miss %.1f ns\n", hit_latency_ns,
              miss_latency_ns);
  std::printf("hash_key of a 12-byte key: %.1f ns\n", hash_ns);

  // ---- deltas ----
  std::vector<std::string> delta_keys(100);
  std::vector<OwnershipRow> delta;
  for (std::size_t i = 0; i < delta_keys.size(); ++i) delta_keys[i] = keys[splitmix(state) % users];
  for (std::size_t i = 0; i < delta_keys.size(); ++i) {
    delta.push_back({delta_keys[i], server_ids[i % 2], static_cast<std::int64_t>(users + i)});
  }
  auto current = snapshot;
  start = Clock::now();
  constexpr int kDeltas = 50;
  for (int d = 0; d < kDeltas; ++d) current = current->with_delta(delta);
  std::printf("with_delta (100 rows, overlay %zu rows): %.2f ms each\n", current->overlay_rows(),
              seconds_since(start) * 1e3 / kDeltas);
  DeltaPolicy compact_now;
  compact_now.compact_min_rows = 0;
  compact_now.compact_divisor = 1000000000;
  start = Clock::now();
  const auto compacted = current->with_delta(delta, compact_now);
  std::printf("with_delta forcing compaction: %.1f ms (overlay %zu rows after)\n", seconds_since(start) * 1e3,
              compacted->overlay_rows());

  // ---- extraction ----
  const Extractor extractor{ExtractorConfig{}};
  const Header plain_headers[] = {
      {"Host", "mail.acme.com"},
      {"User-Agent", "Apple-iPhone14C2/2006.100"},
      {"Content-Type", "application/vnd.ms-sync.wbxml"},
      {"MS-ASProtocolVersion", "16.1"},
      {"X-MS-PolicyKey", "1307199584"},
      {"Authorization", "Basic QUNNRVxqZG9lOnNlY3JldC1wYXNzd29yZA=="},
      {"Content-Length", "13"},
  };
  const RequestView plain{"POST",
                          "/Microsoft-Server-ActiveSync?Cmd=Ping&User=ACME%5Cjdoe&DeviceId="
                          "ApplF17XK0QZHG7F&DeviceType=iPhone",
                          plain_headers};
  const RequestView base64_request{"POST", "/Microsoft-Server-ActiveSync?jAAJBAp2MTQwRGV2aWNlAApTbWFydFBob25l",
                                   plain_headers};
  const RequestView status_probe{"GET", "/traveler?action=getStatus", std::span<const Header>(plain_headers, 2)};
  constexpr std::size_t kRequests = 1000000;
  std::uint64_t acc = 0;
  const double plain_ns = ns_per_call(kRequests, 3, [&](std::size_t) { acc += extractor.extract(plain).key_hash; });
  const double b64_ns =
      ns_per_call(kRequests, 3, [&](std::size_t) { acc += extractor.extract(base64_request).key_hash; });
  const double probe_ns =
      ns_per_call(kRequests, 3, [&](std::size_t) { acc += static_cast<std::uint64_t>(extractor.extract(status_probe).status); });
  sink = acc;
  std::printf("extract ActiveSync plain query (User=, 7 headers): %.1f ns\n", plain_ns);
  std::printf("extract ActiveSync base64 query + Basic fallback:  %.1f ns\n", b64_ns);
  std::printf("extract user-less status probe:                   %.1f ns\n", probe_ns);

  // ---- routing ----
  std::vector<ServerView> views;
  for (const auto& id : server_ids) views.push_back(ServerView{id, 1, ServerState::up, 100});
  std::vector<std::string> many_ids;
  for (int i = 0; i < 16; ++i) many_ids.push_back("traveler" + std::to_string(i) + ".acme.com");
  std::vector<ServerView> many;
  for (const auto& id : many_ids) many.push_back(ServerView{id, 1, ServerState::up, 100});
  views[1].state = ServerState::down;
  const ServerIndexMap index_map(snapshot->server_ids(), views);
  acc = 0;
  const double route_owner_ns = ns_per_call(kRequests, 3, [&](std::size_t i) {
    acc += route(hit_hashes[i % users], static_cast<std::uint16_t>(i & 3), views, i).candidates[0];
  });
  const double route_new_ns = ns_per_call(kRequests, 3, [&](std::size_t i) {
    acc += route(hit_hashes[i % users], std::nullopt, views, i).candidates[0];
  });
  const double route_none_ns =
      ns_per_call(kRequests, 3, [&](std::size_t i) { acc += route(std::nullopt, std::nullopt, views, i).candidates[0]; });
  const double route_16_ns = ns_per_call(kRequests, 3, [&](std::size_t i) {
    acc += route(hit_hashes[i % users], std::nullopt, many, i).candidates[0];
  });
  // The whole per-request affinity path: extract, look up, map, route.
  const double pipeline_ns = ns_per_call(kRequests, 3, [&](std::size_t i) {
    const ExtractResult r = extractor.extract(plain);
    std::optional<std::uint16_t> owner;
    if (const auto o = snapshot->find(r.user_key, r.key_hash)) owner = index_map.to_view(o->server);
    acc += route(r.key_hash, owner, views, i).candidates.size();
  });
  sink = acc;
  std::printf("route, owner known (4 servers, one down): %.1f ns\n", route_owner_ns);
  std::printf("route, new user (4 servers):              %.1f ns\n", route_new_ns);
  std::printf("route, no user (4 servers):               %.1f ns\n", route_none_ns);
  std::printf("route, new user (16 servers):             %.1f ns\n", route_16_ns);
  std::printf("extract + find + route per request:       %.1f ns\n", pipeline_ns);

  // ---- rendezvous evenness, for the record ----
  std::vector<WeightedServer> weighted;
  for (const auto& id : server_ids) weighted.push_back({hash_key(id), 1});
  std::vector<std::size_t> wins(server_ids.size());
  for (std::size_t i = 0; i < users; ++i) ++wins[rank(hit_hashes[i], weighted)[0]];
  std::printf("rendezvous wins over 4 equal servers:");
  for (std::size_t w : wins) std::printf(" %zu", w);
  std::printf("\n(checksum %llu)\n", static_cast<unsigned long long>(sink));
  return 0;
}
