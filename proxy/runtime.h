// What the control thread publishes to workers: the config and the resolved server list,
// immutable and shared; a worker swaps its pointer at a loop boundary.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "affinity/extract.h"
#include "conf/config.h"

namespace sprayer::proxy {

class TlsClientContext;
class TlsContext;
class AccessLog;

// A server's backend TLS context, replaced in place by a reload (SIGHUP): connections that
// start afterwards use the new one, established ones keep theirs.
struct ServerTls {
  std::atomic<std::shared_ptr<const TlsClientContext>> context;
};

struct ServerTarget {
  std::string id;
  std::string host_port;            // for the Host header when preserve_host is off, and logs
  sockaddr_storage addr{};
  uint32_t weight = 1;
  // Stable for the process's life: the index of this server's upstream pools in every
  // worker. A reload keeps it for a server whose id and address stay; a new or moved
  // server gets a new one, so requests in flight never switch servers under them.
  uint32_t slot = 0;
  std::shared_ptr<ServerTls> tls;  // null = plain HTTP to this server
};

struct Runtime {
  std::shared_ptr<const conf::Config> config;
  std::vector<ServerTarget> servers;
  affinity::ExtractorConfig extractor;  // how users are found in requests
  std::vector<std::shared_ptr<const TlsContext>> listener_tls;  // per listener; null = plain
  std::shared_ptr<AccessLog> access_log;  // null = off; thread-safe hand-off to its writer
};

// Loads the certificates, keys and ticket keys of every TLS listener (control thread). An
// error names the listener and the file.
// `previous` (optional, same order): a reload keeps each listener's in-memory ticket keys.
bool load_listener_tls(const conf::Config& config, std::vector<std::shared_ptr<const TlsContext>>& out,
                       std::string& error,
                       const std::vector<std::shared_ptr<const TlsContext>>* previous = nullptr);

// Loads each server's client TLS settings into out[i].tls (control thread). An error names the
// server and the file. Servers with verify: false are logged as a warning.
bool load_server_tls(const conf::Config& config, std::vector<ServerTarget>& out, std::string& error);
// Reload: loads every TLS server's files again; only when all load are they swapped in.
bool reload_server_tls(const conf::Config& config, const std::vector<ServerTarget>& servers, std::string& error);

// The extractor settings a Config asks for (conf keeps its own plain types).
affinity::ExtractorConfig extractor_config(const conf::AffinityConfig& config);

// Resolve every server address (blocking; control thread only). Errors name the server.
bool resolve_servers(const conf::Config& config, std::vector<ServerTarget>& out, std::string& error);

// A latency histogram a single worker fills with relaxed atomics; the control thread sums
// the workers' buckets at scrape time. Bounds in seconds, shared by every histogram.
inline constexpr double kLatencyBounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                            0.25,   0.5,   1,      2.5,   5,    10,   30,    60};
inline constexpr size_t kLatencyBuckets = sizeof(kLatencyBounds) / sizeof(kLatencyBounds[0]);

struct LatencyHistogram {
  std::atomic<uint64_t> buckets[kLatencyBuckets + 1]{};  // non-cumulative; the last is +Inf
  std::atomic<uint64_t> sum_ns{0};
  std::atomic<uint64_t> count{0};

  void observe(uint64_t ns) {
    const double seconds = static_cast<double>(ns) / 1e9;
    size_t i = 0;
    while (i < kLatencyBuckets && seconds > kLatencyBounds[i]) ++i;
    buckets[i].fetch_add(1, std::memory_order_relaxed);
    sum_ns.fetch_add(ns, std::memory_order_relaxed);
    count.fetch_add(1, std::memory_order_relaxed);
  }
};

// Request outcome labels beyond affinity::RouteReason: a request that needed a second
// upstream attempt, and one sprayer answered itself (an HTTPS redirect).
inline constexpr size_t kReasonRetry = 5;
inline constexpr size_t kReasonLocal = 6;
inline constexpr size_t kRequestReasons = 7;
inline constexpr size_t kStatusClasses = 6;   // none, 1xx..5xx
inline constexpr size_t kStatServers = 64;    // server indexes past this count as "other"
inline constexpr size_t kStatNoServer = kStatServers + 1;  // row for requests no server answered
inline constexpr size_t kStatRows = kStatServers + 2;     // servers, "other", "none"

// Counters a worker bumps without locks (relaxed atomics, one cache-line-padded block per
// worker); the control thread sums them when /metrics is scraped.
struct alignas(64) WorkerStats {
  // Finished requests by [server row][status class][reason] (see kStat* above).
  std::atomic<uint64_t> finished[kStatRows][kStatusClasses][kRequestReasons]{};
  LatencyHistogram request_seconds;   // head received → response queued
  LatencyHistogram connect_seconds;   // new upstream connection: connect started → connected
  LatencyHistogram ttfb_seconds;      // request sent upstream → response head received
  std::atomic<uint64_t> upstream_bytes_in{0};   // response bytes read from pool servers
  std::atomic<uint64_t> upstream_bytes_out{0};  // request bytes written to pool servers
  std::atomic<uint64_t> access_log_dropped{0};  // lines dropped: the log writer fell behind

  static size_t server_row(int server) {
    if (server < 0) return kStatNoServer;
    return static_cast<size_t>(server) < kStatServers ? static_cast<size_t>(server) : kStatServers;
  }

  std::atomic<uint64_t> downstream_accepted{0};
  std::atomic<int64_t> downstream_open{0};
  std::atomic<int64_t> upstream_open{0};
  std::atomic<uint64_t> requests{0};
  std::atomic<uint64_t> responses[6]{};  // by status class: [0] = none sent, [1..5] = 1xx..5xx
  std::atomic<uint64_t> upstream_connect_failures{0};
  std::atomic<uint64_t> upstream_retries{0};
  std::atomic<uint64_t> bad_requests{0};
  std::atomic<uint64_t> timeouts{0};
  std::atomic<uint64_t> bytes_in{0};
  std::atomic<uint64_t> bytes_out{0};
  std::atomic<uint64_t> accept_paused{0};
  std::atomic<uint64_t> routed[5]{};      // by affinity::RouteReason
  std::atomic<uint64_t> malformed_users{0};
  std::atomic<uint64_t> tls_handshakes{0};
  std::atomic<uint64_t> tls_failures{0};
  std::atomic<uint64_t> tls_own_records{0};  // TLS 1.3 connections handed to sprayer's record layer
  std::atomic<uint64_t> upstream_tls_handshakes{0};  // completed toward pool servers
  std::atomic<uint64_t> upstream_tls_resumed{0};     // of those, abbreviated (session reused)
  std::atomic<uint64_t> upstream_tls_failures{0};    // handshake or verification failed

  static void add(std::atomic<uint64_t>& c, uint64_t n = 1) { c.fetch_add(n, std::memory_order_relaxed); }
  static void add(std::atomic<int64_t>& c, int64_t n) { c.fetch_add(n, std::memory_order_relaxed); }
};

}  // namespace sprayer::proxy
