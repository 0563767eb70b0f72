// poolsim's command line: which pool server it plays and how it misbehaves.
#pragma once

#include <cstdint>
#include <string>

namespace poolsim {

struct Options {
  std::string id;
  std::string listen;              // "HOST:PORT", "[::1]:PORT"; port 0 = pick one, printed
  uint64_t ping_hold_ms = 30'000;  // how long Cmd=Ping is held before its 200
  uint64_t latency_ms = 0;         // added before every response
  double error_rate = 0.0;         // fraction of ActiveSync requests answered 503
  bool unavailable = false;        // getStatus answers 503 from the start
  uint64_t seed = 1;               // PRNG seed for --error-rate
  bool verbose = false;            // one stderr line per request
  // HTTPS instead of HTTP (both files PEM). With a client CA, a client certificate it signed
  // is required. Responses then say what the handshake saw (X-Tls-* headers).
  std::string tls_cert;
  std::string tls_key;
  std::string tls_client_ca;
  bool tls_late_tickets = false;  // TLS 1.3: one more session ticket after every response

  // Pool duties (all inert without --db): registration, heartbeats, claims, takeovers.
  std::string db;                     // "sqlite:PATH" | "postgresql:CONNINFO"; empty = none
  std::string advertise;              // pool_server.address; empty = the bound listen address
  int64_t availability = 0;           // Traveler availability index, -200..100
  uint64_t heartbeat_ms = 1000;       // pool_server.heartbeat_at write period
  uint64_t stale_after_ms = 3000;     // an owner whose heartbeat is older is dead
  uint64_t refresh_ms = 200;          // ownership cache refresh (epoch deltas) period
  bool claim = true;                  // --no-claim: never claim or take over users

  // Traveler mode (--traveler): master monitors by availability index, hops (traveler_pool.h).
  bool traveler = false;
  bool pool_schema = false;                          // --table-schema pool: tr_user_monitor, tr_pool_server
  uint64_t assignment_ttl_ms = 24ULL * 3600 * 1000;  // idle time after which an assignment expires
  int64_t move_threshold = 50;                       // index points; 0 = never move
  uint64_t capacity = 0;                             // load model: users at which the index is 0; 0 = fixed
  uint64_t jitter = 0;                               // load model: +-N index points per heartbeat
  uint64_t hop_latency_ms = 0;                       // added to every handed-over request
};

enum class ParseOutcome { run, help, error };

// Fills `options`; on error, `message` says which argument is wrong.
ParseOutcome parse_options(int argc, char** argv, Options& options, std::string& message);

std::string usage();

}  // namespace poolsim
