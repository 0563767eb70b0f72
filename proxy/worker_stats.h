// Counters and latency histograms a worker fills without locks; the control thread sums
// the workers' blocks when /metrics is scraped.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace sprayer::proxy {

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

// Long-polls (ActiveSync Ping) wait for minutes by design: their own histogram, with bounds
// up to well past any upstream_response timeout (the export stops at the configured one).
inline constexpr double kLongPollBounds[] = {1,   5,    15,   30,   60,   120,  300,  600,  900,
                                             1200, 1500, 1800, 2100, 2400, 2700, 3000, 3600};
inline constexpr size_t kLongPollBuckets = sizeof(kLongPollBounds) / sizeof(kLongPollBounds[0]);

struct LongPollHistogram {
  std::atomic<uint64_t> buckets[kLongPollBuckets + 1]{};  // non-cumulative; the last is +Inf
  std::atomic<uint64_t> sum_ns{0};

  void observe(uint64_t ns) {
    const double seconds = static_cast<double>(ns) / 1e9;
    size_t i = 0;
    while (i < kLongPollBuckets && seconds > kLongPollBounds[i]) ++i;
    buckets[i].fetch_add(1, std::memory_order_relaxed);
    sum_ns.fetch_add(ns, std::memory_order_relaxed);
  }
};

// Which timer fired (sprayer_timeouts_total{side,kind}); exported in this order.
enum class TimeoutKind : uint8_t {
  client_header, client_idle, client_body, client_send,
  upstream_connect, upstream_response, upstream_idle,
};
inline constexpr size_t kTimeoutKinds = 7;

// Request outcome labels beyond affinity::RouteReason: a request that needed a second
// upstream attempt, and one sprayer answered itself (an HTTPS redirect).
inline constexpr size_t kReasonRetry = 5;
inline constexpr size_t kReasonLocal = 6;
inline constexpr size_t kRequestReasons = 7;
inline constexpr size_t kStatusClasses = 6;   // none, 1xx..5xx
inline constexpr size_t kStatServers = 64;    // server indexes past this count as "other"
inline constexpr size_t kStatNoServer = kStatServers + 1;  // row for requests no server answered
inline constexpr size_t kStatRows = kStatServers + 2;     // servers, "other", "none"
inline constexpr size_t kStatListeners = 16;  // listener slots past this count as "other"
inline constexpr size_t kStatListenerRows = kStatListeners + 1;

// Counters a worker bumps without locks (relaxed atomics, one cache-line-padded block per
// worker); the control thread sums them when /metrics is scraped.
struct alignas(64) WorkerStats {
  // Finished requests by [server row][status class][reason] (see kStat* above).
  std::atomic<uint64_t> finished[kStatRows][kStatusClasses][kRequestReasons]{};
  LatencyHistogram request_seconds;   // head received → response queued
  LatencyHistogram connect_seconds;   // new upstream connection: connect started → connected
  LatencyHistogram ttfb_seconds;      // request sent upstream → response head received
  LongPollHistogram long_poll_seconds;  // Pings: head received → response queued (not in request_seconds)
  // Per server row, for the status page's rates and percentiles (long-polls excluded).
  LatencyHistogram server_seconds[kStatRows];
  std::atomic<int64_t> parked[kStatRows]{};          // long-polls in flight, by the server routed to
  std::atomic<uint64_t> takeover_in[kStatRows]{};    // requests routed here because their owner was unusable
  std::atomic<uint64_t> takeover_out[kStatRows]{};   // requests of users this server owns, routed elsewhere
  std::atomic<uint64_t> early_resends[kStatRows]{};  // safe requests moved off this hung server before its verdict
  std::atomic<uint64_t> timeouts_by[kTimeoutKinds]{};
  std::atomic<uint64_t> upstream_bytes_in{0};   // response bytes read from pool servers
  std::atomic<uint64_t> upstream_bytes_out{0};  // request bytes written to pool servers
  std::atomic<uint64_t> access_log_dropped{0};  // lines dropped: the log writer fell behind

  // By listener slot (Runtime::listener_slots): which listener a connection came in on.
  std::atomic<uint64_t> accepted_by[kStatListenerRows]{};
  std::atomic<int64_t> open_by[kStatListenerRows]{};
  std::atomic<uint64_t> tls_handshakes_by[kStatListenerRows]{};
  std::atomic<uint64_t> tls_failures_by[kStatListenerRows]{};
  std::atomic<uint64_t> tls_own_records_by[kStatListenerRows]{};

  static size_t listener_row(uint16_t slot) { return slot < kStatListeners ? slot : kStatListeners; }

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
  std::atomic<uint64_t> bytes_in{0};
  std::atomic<uint64_t> bytes_out{0};
  std::atomic<uint64_t> accept_paused{0};
  std::atomic<uint64_t> routed[5]{};      // by affinity::RouteReason
  std::atomic<uint64_t> malformed_users{0};
  std::atomic<uint64_t> user_key_disagreements{0};  // query user and Basic login differed; the login won
  std::atomic<uint64_t> directory_hits{0};          // cached answer (the user's key, or "no such user")
  std::atomic<uint64_t> directory_misses{0};
  std::atomic<uint64_t> directory_waits{0};         // requests parked for an answer
  std::atomic<uint64_t> directory_wait_timeouts{0}; // of those, went by the normalised name after directory.wait
  std::atomic<uint64_t> directory_degraded{0};      // not asked: the directory is down
  std::atomic<uint64_t> tls_handshakes{0};
  std::atomic<uint64_t> tls_failures{0};
  std::atomic<uint64_t> tls_own_records{0};  // TLS 1.3 connections handed to sprayer's record layer
  std::atomic<uint64_t> upstream_tls_handshakes{0};  // completed toward pool servers
  std::atomic<uint64_t> upstream_tls_resumed{0};     // of those, abbreviated (session reused)
  std::atomic<uint64_t> upstream_tls_failures{0};    // handshake or verification failed

  void timeout(TimeoutKind kind) {
    add(timeouts_by[static_cast<size_t>(kind)]);
  }

  static void add(std::atomic<uint64_t>& c, uint64_t n = 1) { c.fetch_add(n, std::memory_order_relaxed); }
  static void add(std::atomic<int64_t>& c, int64_t n) { c.fetch_add(n, std::memory_order_relaxed); }
};

}  // namespace sprayer::proxy
