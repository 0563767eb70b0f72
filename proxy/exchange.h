// One request/response through the proxy: picks the upstream candidates, sends the request
// (re-framing chunked bodies), streams the response back with back-pressure both ways, and
// retries the next candidate when a connect fails before any byte was sent.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "affinity/router.h"
#include "proxy/buffer_pool.h"
#include "proxy/exchange_sides.h"
#include "proxy/health_events.h"
#include "proxy/http/response_parser.h"
#include "proxy/worker_context.h"

namespace sprayer::proxy {

class Exchange {
 public:
  enum class State { idle, connecting, active, tunnel, done };

  Exchange(ExchangeDownstream& downstream, WorkerContext& context) : ds_(downstream), ctx_(context) {}

  // Downstream side.
  void start(bool has_body, bool chunked, bool upgrade);
  void on_request_body(Slice data);
  void on_request_complete();
  void flush_upstream();
  void on_tunnel_data(Slice data);
  void abort();                    // the client went away or broke the protocol
  void on_downstream_drained();
  bool response_started() const { return response_started_; }
  State state() const { return state_; }
  const std::string& user_key() const { return user_key_; }
  // The directory answered (or the wait is over): route by `key` (empty = the normalised
  // name found at start) and send. Called by DirectoryWaiters, from the worker loop.
  void resume_route(std::string key);
  affinity::RouteReason reason() const { return reason_; }

  // Upstream side.
  void on_connected(ExchangeUpstream& up);
  void on_connect_failed(ExchangeUpstream& up, int status);
  ResponseParser::HeadAction on_response_head(ExchangeUpstream& up);
  void on_response_body(Slice data);
  void on_response_complete(ExchangeUpstream& up);
  void on_upstream_error(ExchangeUpstream& up, UpstreamError error);
  void on_upstream_tunnel_data(Slice data);
  void on_upstream_drained();
  void on_upstream_read_done();     // flush what the read produced toward the client

  // Once per request, when it ends (answered, failed, or the client left): counts the
  // request by server, status class and reason, observes its latency, writes its access
  // log line. Later calls for the same request do nothing.
  void record(int status);
  void uncount_long_poll();

  // Early re-send on a hung server (defined in early_resend.cpp).
  bool long_poll() const { return long_poll_; }
  bool user_found() const { return user_found_; }
  uint64_t key_hash() const { return key_hash_; }
  // Sent upstream at or before `sent_before_ns` (uv_hrtime) and no response byte back yet.
  bool awaits_first_byte(uint64_t sent_before_ns) const;
  // Safe to run twice, sent whole, nothing of the answer seen, not re-sent early before.
  bool early_resend_ready() const;
  // Leaves the stalled connection (closed) for `candidates` (server slots, in order).
  void resend_early(std::vector<uint32_t> candidates);
  // A parked Ping (request sent whole, no answer yet) gives back what a retry can rebuild:
  // the upstream head, the held-piece list (parked.cpp).
  void rest();

 private:
  struct Piece {
    Slice slice;
    std::string copy;
  };

  void route_and_send();
  void build_request_head(int slot);  // request_head_ for the server at `slot` (-1: none)
  void try_next_candidate();
  void attach(ExchangeUpstream* up);
  void send_request_start();
  void put(Slice data);
  void put_copy(std::string_view bytes);
  void finish(bool reuse_upstream);
  void release_upstream(bool reuse);
  void check_upstream_backpressure();
  void check_downstream_backpressure();
  void report(const ExchangeUpstream& up, UpstreamError error);
  void resend_from_replay();

  ExchangeDownstream& ds_;
  WorkerContext& ctx_;
  ExchangeUpstream* up_ = nullptr;
  State state_ = State::idle;
  std::string request_head_;
  std::vector<Piece> held_;        // request bytes that arrived before the upstream connected
  size_t held_bytes_ = 0;
  // A copy of the request body as sent, while small, so a request that died on a stale
  // keep-alive connection (no response byte) can be sent again. Dropped at the response.
  std::string replay_;
  bool replayable_ = true;
  std::vector<uint32_t> candidates_;  // server slots, in retry order
  std::string user_key_;
  uint64_t key_hash_ = 0;
  bool user_found_ = false;
  bool parked_ = false;            // waiting for the directory (DirectoryWaiters)
  affinity::RouteReason reason_ = affinity::RouteReason::no_user;
  size_t attempt_ = 0;
  bool has_body_ = false;
  bool chunked_request_ = false;
  bool upgrade_ = false;
  bool head_request_ = false;
  bool response_started_ = false;  // a response byte went to the client
  bool response_chunked_ = false;
  bool response_close_delimited_ = false;
  bool retried_stale_ = false;
  bool retried_next_ = false;
  bool early_resent_ = false;      // left a hung server before its verdict (resend_early)
  int status_ = 0;
  // Per-request accounting (record()).
  bool recorded_ = true;            // nothing to record before the first start()
  int server_ = -1;                 // the slot of the server of the last attempt
  bool long_poll_ = false;          // an ActiveSync Ping: its own histogram, counted as parked
  int long_poll_row_ = -1;             // the stats row counting it as parked, until record()
  uint64_t start_ns_ = 0;
  std::chrono::system_clock::time_point wall_start_{};
  uint64_t connect_begin_ns_ = 0;   // a new upstream connection is being opened
  int64_t connect_ns_ = -1;
  uint64_t sent_ns_ = 0;
  int64_t ttfb_ns_ = -1;
  uint64_t bytes_in_ = 0;
  uint64_t bytes_out_start_ = 0;
};

}  // namespace sprayer::proxy
