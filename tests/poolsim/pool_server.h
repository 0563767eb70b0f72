// PoolServer: the listening side of poolsim and the state its connections share (availability,
// counters, the error PRNG, the blob pattern, a read buffer, recycled write requests and, with
// --db, the pool membership).
#pragma once

#include <openssl/types.h>
#include <uv.h>

#include <array>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "tests/poolsim/exchange.h"
#include "tests/poolsim/options.h"
#include "affinity/extract.h"
#include "tests/poolsim/pool_membership.h"
#include "tests/poolsim/traveler_pool.h"

namespace poolsim {

class ClientConnection;

struct Stats {
  uint64_t requests = 0;
  std::array<uint64_t, kRouteCount> by_route{};
  uint64_t open_connections = 0;
  uint64_t total_connections = 0;
  uint64_t injected_errors = 0;
  uint64_t holds_started = 0;
  uint64_t holds_cancelled = 0;
  uint64_t bytes_in = 0;   // request body bytes
  uint64_t bytes_out = 0;  // everything written
};

// One queued write. `data` holds the bytes the write owns (heads, small bodies, chunk
// framing); blob bytes are referenced from the server's pattern instead of copied.
struct WriteRequest {
  uv_write_t req;
  ClientConnection* owner = nullptr;
  std::string data;
  size_t bytes = 0;
};

class PoolServer {
 public:
  // Blob bytes are written in pieces of this size; the pattern buffer covers any piece.
  static constexpr size_t kBlobPiece = 64 * 1024;

  PoolServer(uv_loop_t* loop, Options options);
  ~PoolServer();
  PoolServer(const PoolServer&) = delete;
  PoolServer& operator=(const PoolServer&) = delete;

  // Binds, listens, installs SIGTERM/SIGINT and prints the "listening" line.
  bool start(std::string& error);
  // Closes the listener, the signal handles and every connection; idempotent.
  void shutdown();

  uv_loop_t* loop() const { return loop_; }
  const Options& options() const { return options_; }
  Stats& stats() { return stats_; }
  bool available() const { return available_; }
  void set_available(bool value) { available_ = value; }
  bool draw_injected_error();
  PoolMembership& membership() { return membership_; }
  TravelerPool& traveler() { return traveler_; }
  // sprayer's own user extraction (default order), so poolsim finds users as sprayer does.
  const sprayer::affinity::Extractor& extractor() const { return extractor_; }
  SSL_CTX* tls_context() const { return tls_ctx_; }  // null = plain HTTP

  // Reads are consumed before the next read starts, so one buffer serves every connection.
  uv_buf_t read_buffer();
  WriteRequest* acquire_write();
  void release_write(WriteRequest* request);
  // Pattern bytes of a blob from `offset` on; valid for kBlobPiece bytes.
  const char* blob_bytes(uint64_t offset) const;
  uint64_t blob_fnv(uint64_t size);

  void adopt(ClientConnection* connection);
  void forget(ClientConnection* connection);  // from the connection's last close callback

 private:
  static void on_connection_cb(uv_stream_t* listener, int status) noexcept;
  static void on_signal_cb(uv_signal_t* handle, int signum) noexcept;
  void on_connection(int status);
  bool load_tls(std::string& error);

  uv_loop_t* loop_;
  Options options_;
  Stats stats_;
  bool available_;
  bool listening_ = false;
  bool signals_installed_ = false;
  bool shut_down_ = false;
  uint64_t prng_state_;
  PoolMembership membership_;  // after options_, which it reads
  TravelerPool traveler_;      // likewise
  sprayer::affinity::Extractor extractor_;
  SSL_CTX* tls_ctx_ = nullptr;
  uv_tcp_t listener_{};
  uv_signal_t sigterm_{};
  uv_signal_t sigint_{};
  ClientConnection* connections_ = nullptr;  // intrusive list through ClientConnection
  std::vector<char> read_buffer_;
  std::vector<char> blob_pattern_;
  std::vector<WriteRequest*> spare_writes_;
  std::unordered_map<uint64_t, uint64_t> blob_fnv_cache_;
};

}  // namespace poolsim
