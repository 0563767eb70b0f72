// One request/response: candidate order, connect retries, request re-framing, response
// streaming, and keep-alive reuse of the upstream connection.
#include "proxy/exchange.h"

#include <cstdio>

#include "affinity/rendezvous.h"
#include "affinity/request_view.h"
#include "proxy/access_log.h"
#include "proxy/health_events.h"
#include "proxy/log.h"
#include "proxy/pause.h"
#include "proxy/upstream_connection.h"
#include "proxy/upstream_pool.h"
#include "proxy/directory_waiters.h"

namespace sprayer::proxy {
namespace {

// ActiveSync's long-poll: the server holds it until mail arrives or the heartbeat ends.
bool is_long_poll(std::string_view cmd) {
  if (cmd.size() != 4) return false;
  for (size_t i = 0; i < 4; ++i)
    if ((cmd[i] | 0x20) != "ping"[i]) return false;
  return true;
}


int status_class(int status) { return status >= 100 && status < 600 ? status / 100 : 0; }

void chunk_header(size_t len, std::string& out) {
  char buf[24];
  int n = std::snprintf(buf, sizeof buf, "%zx\r\n", len);
  out.assign(buf, static_cast<size_t>(n));
}

}  // namespace

// ---- request ---------------------------------------------------------------------------

void Exchange::start(bool has_body, bool chunked, bool upgrade) {
  state_ = State::connecting;
  parked_ = false;
  has_body_ = has_body;
  chunked_request_ = chunked;
  upgrade_ = upgrade;
  response_started_ = false;
  response_chunked_ = false;
  response_close_delimited_ = false;
  retried_stale_ = false;
  retried_next_ = false;
  early_resent_ = false;
  status_ = 0;
  attempt_ = 0;
  held_.clear();
  held_bytes_ = 0;
  replay_.clear();
  replayable_ = true;
  recorded_ = false;
  user_key_.clear();
  reason_ = affinity::RouteReason::no_user;
  server_ = -1;
  long_poll_ = false;
  uncount_long_poll();
  start_ns_ = uv_hrtime();
  wall_start_ = std::chrono::system_clock::now();
  connect_begin_ns_ = 0;
  connect_ns_ = -1;
  sent_ns_ = 0;
  ttfb_ns_ = -1;
  bytes_in_ = ds_.request().head().bytes();
  bytes_out_start_ = ds_.bytes_written();

  const RequestParser& request = ds_.request();
  std::string_view method = request.method_name();
  head_request_ = request.method() == HTTP_HEAD;

  // Find the user, look up the owner, and take the router's candidate order.
  auto& headers = ctx_.header_scratch;
  headers.clear();
  const HttpHead& head = ds_.request().head();
  for (size_t i = 0; i < head.count(); ++i) headers.push_back(affinity::Header{head.name(i), head.value(i)});
  affinity::RequestView view{method, ds_.request().target(), headers};
  affinity::ExtractResult user = ctx_.extractor.extract(view);
  if (user.status == affinity::ExtractResult::Status::malformed) {
    WorkerStats::add(ctx_.stats.malformed_users);
    if (ctx_.extractor.config().reject_malformed) {
      state_ = State::done;
      WorkerStats::add(ctx_.stats.bad_requests);
      ds_.set_rejected("malformed_user");
      ds_.fail_exchange(400);
      return;
    }
  }
  if (user.disagreement) WorkerStats::add(ctx_.stats.user_key_disagreements);
  user_key_ = std::move(user.user_key);
  long_poll_ = is_long_poll(user.cmd);
  user_found_ = user.found();
  key_hash_ = user.key_hash;
  // The one hook for the directory: the key may change, and may take a short wait.
  if (user_found_) {
    const std::string normalised = user_key_;
    if (ctx_.directory_waiters.resolve(*this, user.raw_user, user_key_)) {
      parked_ = true;
      return;
    }
    if (user_key_ != normalised) key_hash_ = affinity::hash_key(user_key_);
  }
  route_and_send();
}

void Exchange::resume_route(std::string key) {
  if (!parked_) return;
  parked_ = false;
  if (!key.empty() && key != user_key_) {
    user_key_ = std::move(key);
    key_hash_ = affinity::hash_key(user_key_);
  }
  route_and_send();
}

void Exchange::route_and_send() {
  RouteResult route = route_user(ctx_.route_state(), user_key_,
                                 user_found_ ? std::optional<uint64_t>(key_hash_) : std::nullopt,
                                 ctx_.next_spread());
  reason_ = route.decision.reason;
  WorkerStats::add(ctx_.stats.routed[static_cast<size_t>(reason_)]);
  // Kept as slots (the worker's pool numbers), which a reload never reassigns: a retry after a
  // reload still goes to the server that was chosen.
  const RouteState& route_state = ctx_.route_state();
  candidates_.clear();
  for (uint16_t index : route.decision.candidates) candidates_.push_back(route_state.slots[index]);
  size_t n = candidates_.size();
  if (n > 0) {
    const size_t row = WorkerStats::server_row(candidates_[0]);
    if (reason_ == affinity::RouteReason::takeover) {
      WorkerStats::add(ctx_.stats.takeover_in[row]);
      if (route.owner) WorkerStats::add(ctx_.stats.takeover_out[WorkerStats::server_row(route_state.slots[*route.owner])]);
    }
    if (long_poll_) {
      long_poll_row_ = static_cast<int>(row);
      WorkerStats::add(ctx_.stats.parked[row], 1);
    }
  }

  try_next_candidate();
}

void Exchange::build_request_head(int slot) {
  const conf::Config& config = ctx_.config();
  const RequestParser& request = ds_.request();
  ForwardOptions options;
  options.method = request.method_name();
  options.target = ds_.request().target();
  options.http_minor = request.http_minor();
  options.x_forwarded = config.http.x_forwarded;
  options.client_ip = ds_.client_ip();
  options.proto = ds_.is_tls() ? "https" : "http";
  options.via = config.http.via;
  options.preserve_host = config.http.preserve_host;
  options.upgrade = upgrade_;
  request_head_.clear();
  if (!options.preserve_host && slot >= 0) {
    // The Host of the server the head is built for (the first candidate; a rebuilt head's own).
    options.upstream_host = ctx_.upstream_pool(static_cast<size_t>(slot)).target().host_port;
  }
  build_upstream_request(ds_.request().head(), options, request_head_);
}

void Exchange::try_next_candidate() {
  while (attempt_ < candidates_.size()) {
    UpstreamPool& pool = ctx_.upstream_pool(candidates_[attempt_++]);
    if (pool.retired()) continue;  // removed by a reload after this request was routed
    bool reused = false;
    int error = 0;
    UpstreamConnection* up = pool.acquire(reused, error);
    if (!up) {
      WorkerStats::add(ctx_.stats.upstream_connect_failures);
      LOG_DEBUG("upstream %s: cannot connect: %s", pool.target().id.c_str(), uv_strerror(error));
      continue;
    }
    attach(up);
    server_ = static_cast<int>(pool.slot());
    connect_begin_ns_ = reused ? 0 : uv_hrtime();
    if (reused) on_connected(*up);
    return;
  }
  state_ = State::done;
  if (candidates_.empty())
    LOG_WARN("no pool server can take requests (all down, in maintenance or unavailable)");
  else
    LOG_WARN("no pool server reachable for %s", ds_.request().target().data());
  ds_.fail_exchange(503);
}

void Exchange::attach(ExchangeUpstream* up) {
  up_ = up;
  up->attach(this);
}

void Exchange::on_connected(ExchangeUpstream& up) {
  if (&up != up_) return;
  state_ = State::active;
  sent_ns_ = uv_hrtime();
  if (connect_begin_ns_ != 0) {
    connect_ns_ = static_cast<int64_t>(sent_ns_ - connect_begin_ns_);
    ctx_.stats.connect_seconds.observe(static_cast<uint64_t>(connect_ns_));
    connect_begin_ns_ = 0;
  }
  up.begin_response(head_request_);
  ctx_.upstream_pool(up.slot()).on_request_sent(uv_now(ctx_.loop), long_poll_);
  // Built for this server, so a retry or an early re-send carries its own server's Host
  // (preserve_host off), and copied into the batch: the string is scratch space from here.
  build_request_head(static_cast<int>(up.slot()));
  up.writer().add_copy(request_head_);
  // A long-poll parks for minutes with nothing it can rebuild held: its capacity goes now.
  if (long_poll_) std::string().swap(request_head_);
  // Bytes that arrived while connecting.
  for (auto& piece : held_) {
    if (!piece.copy.empty())
      up.writer().add_copy(piece.copy);
    else
      up.writer().add(std::move(piece.slice));
  }
  held_.clear();
  held_bytes_ = 0;
  ds_.resume_reading(PauseReason::not_connected);
  // A pooled connection is attached while the request is still being parsed: its body
  // usually follows in the same read, and both go out in one write when parsing returns.
  if (!ds_.parsing()) flush_upstream();
}

void Exchange::report(const ExchangeUpstream& up, UpstreamError error) {
  PassiveOutcome outcome = PassiveOutcome::success;
  if (passive_outcome(error, outcome)) ctx_.passive.report(static_cast<uint16_t>(up.slot()), outcome);
}

void Exchange::on_connect_failed(ExchangeUpstream& up, int status) {
  if (&up != up_) return;
  report(up, UpstreamError::connect);
  up_ = nullptr;
  WorkerStats::add(ctx_.stats.upstream_connect_failures);
  if (attempt_ < candidates_.size()) WorkerStats::add(ctx_.stats.upstream_retries);
  try_next_candidate();
}

namespace {
constexpr size_t kReplayLimit = 64 * 1024;
}  // namespace

void Exchange::put(Slice data) {
  if (replayable_) {
    if (replay_.size() + data.size() <= kReplayLimit) {
      replay_.append(data.data(), data.size());
    } else {
      replayable_ = false;
      std::string().swap(replay_);
    }
  }
  if (state_ == State::active || state_ == State::tunnel) {
    if (up_) up_->writer().add(std::move(data));
    return;
  }
  held_bytes_ += data.size();
  held_.push_back(Piece{std::move(data), {}});
  if (held_bytes_ > ctx_.config().http.buffer_high_watermark) ds_.pause_reading(PauseReason::not_connected);
}

void Exchange::put_copy(std::string_view bytes) {
  if (replayable_) {
    if (replay_.size() + bytes.size() <= kReplayLimit) {
      replay_.append(bytes);
    } else {
      replayable_ = false;
      std::string().swap(replay_);
    }
  }
  if (state_ == State::active || state_ == State::tunnel) {
    if (up_) up_->writer().add_copy(bytes);
    return;
  }
  held_bytes_ += bytes.size();
  held_.push_back(Piece{Slice(), std::string(bytes)});
}

void Exchange::on_request_body(Slice data) {
  if (state_ == State::done || state_ == State::idle) return;
  bytes_in_ += data.size();
  if (chunked_request_) {
    // Re-frame: the server sees canonical chunks whatever framing the client used.
    std::string header;
    chunk_header(data.size(), header);
    put_copy(header);
    put(std::move(data));
    put_copy("\r\n");
  } else {
    put(std::move(data));
  }
}

void Exchange::on_request_complete() {
  if (state_ == State::done || state_ == State::idle) return;
  if (chunked_request_) put_copy("0\r\n\r\n");
  if (!ds_.parsing()) flush_upstream();
  // The server answered before the request ended: now the connection can be released.
  if (state_ == State::done) return;
}

void Exchange::flush_upstream() {
  if (!up_ || (state_ != State::active && state_ != State::tunnel)) return;
  if (!up_->flush()) return;
  check_upstream_backpressure();
}

void Exchange::check_upstream_backpressure() {
  if (!up_) return;
  if (up_->writer().queued() > ctx_.config().http.buffer_high_watermark) ds_.pause_reading(PauseReason::peer_full);
}

void Exchange::on_upstream_drained() {
  ds_.resume_reading(PauseReason::peer_full);
}

void Exchange::on_tunnel_data(Slice data) {
  if (!up_) return;
  up_->writer().add(std::move(data));
  flush_upstream();
}

// ---- response --------------------------------------------------------------------------

ResponseParser::HeadAction Exchange::on_response_head(ExchangeUpstream& up) {
  const ResponseParser& response = up.response();
  int status = response.status();
  const conf::Config& config = ctx_.config();
  if (ttfb_ns_ < 0 && sent_ns_ != 0 && (status >= 200 || status == 101)) {
    ttfb_ns_ = static_cast<int64_t>(uv_hrtime() - sent_ns_);
    ctx_.stats.ttfb_seconds.observe(static_cast<uint64_t>(ttfb_ns_));
  }
  if (status < 200) {
    if (status == 101) {
      if (!upgrade_) {
        on_upstream_error(up, UpstreamError::bad_response);
        return ResponseParser::HeadAction::fail;
      }
      ResponseOptions options;
      options.status = 101;
      options.reason = up.response().head().start();
      options.via = config.http.via;
      options.upgrade = true;
      std::string head;
      build_downstream_response(up.response().head(), options, head);
      ds_.writer().add_copy(head);
      response_started_ = true;
      status_ = 101;
      state_ = State::tunnel;
      ds_.enter_tunnel();
      up.enter_tunnel();
      ds_.flush();
      return ResponseParser::HeadAction::upgrade;
    }
    // Interim responses (100 Continue, 103 Early Hints) go to HTTP/1.1 clients as they come.
    if (ds_.request().http_minor() >= 1) {
      ResponseOptions options;
      options.status = status;
      options.reason = up.response().head().start();
      options.via = config.http.via;
      std::string head;
      build_downstream_response(up.response().head(), options, head);
      ds_.writer().add_copy(head);
      ds_.flush();
    }
    return ResponseParser::HeadAction::proceed;
  }
  status_ = status;
  bool no_body = head_request_ || status == 204 || status == 304;
  // A HEAD response may announce chunked framing; it still has no body to re-frame.
  response_chunked_ = !no_body && response.chunked();
  response_close_delimited_ = !no_body && !response_chunked_ && !response.has_content_length();
  if (response_close_delimited_ || !ds_.request_complete()) ds_.set_close_after_response();

  ResponseOptions options;
  options.status = status;
  options.reason = up.response().head().start();
  options.via = config.http.via;
  options.close = ds_.closing_after_response();
  std::string head;
  build_downstream_response(up.response().head(), options, head);
  ds_.writer().add_copy(head);
  response_started_ = true;
  WorkerStats::add(ctx_.stats.responses[status_class(status)]);
  return no_body ? ResponseParser::HeadAction::no_body : ResponseParser::HeadAction::proceed;
}

void Exchange::on_response_body(Slice data) {
  if (state_ != State::active) return;
  if (response_chunked_) {
    std::string header;
    chunk_header(data.size(), header);
    ds_.writer().add_copy(header);
    ds_.writer().add(std::move(data));
    ds_.writer().add_copy("\r\n");
  } else {
    ds_.writer().add(std::move(data));
  }
}

void Exchange::check_downstream_backpressure() {
  if (!up_) return;
  if (ds_.writer().queued() > ctx_.config().http.buffer_high_watermark) up_->pause_reading(PauseReason::peer_full);
}

void Exchange::on_downstream_drained() {
  if (up_) up_->resume_reading(PauseReason::peer_full);
}

void Exchange::on_response_complete(ExchangeUpstream& up) {
  if (state_ != State::active) return;
  if (response_chunked_) ds_.writer().add_copy("0\r\n\r\n");
  bool reuse = up.keep_alive() && ds_.request_complete() && !response_close_delimited_;
  finish(reuse);
}

void Exchange::finish(bool reuse_upstream) {
  state_ = State::done;
  release_upstream(reuse_upstream);
  // The connection ends after this response (on_exchange_done closes it or shuts its
  // writes down): the FIN goes out with the response's last bytes.
  if (ds_.closing_after_response()) ds_.writer().end_with_next_flush();
  bool flushed = ds_.flush();
  record(status_);
  if (!flushed) return;
  ds_.on_exchange_done();
}

void Exchange::release_upstream(bool reuse) {
  ExchangeUpstream* up = up_;
  up_ = nullptr;
  if (!up) return;
  up->detach();
  if (reuse)
    up->release_to_pool();
  else
    up->close();
}

void Exchange::on_upstream_error(ExchangeUpstream& up, UpstreamError error) {
  if (&up != up_) return;
  if (state_ == State::tunnel) {
    release_upstream(false);
    state_ = State::done;
    record(status_);
    ds_.flush();
    ds_.close();
    return;
  }
  report(up, error);
  // A pooled connection the server closed just as we reused it: the request never reached
  // the application, so send it again once on a fresh connection.
  if (!response_started_ && !up.response_byte_seen() && up.reused() && !retried_stale_ &&
      (error == UpstreamError::reset) && (!has_body_ || replayable_)) {
    retried_stale_ = true;
    size_t server = up.slot();
    release_upstream(false);
    // Its siblings in the pool are as suspect (a restarted or killed server): drop them so
    // the retry opens a fresh connection and learns the truth from the connect.
    ctx_.upstream_pool(server).close_idle();
    WorkerStats::add(ctx_.stats.upstream_retries);
    --attempt_;
    resend_from_replay();
    try_next_candidate();
    return;
  }
  // A server that died (reset, or marked down) before the first response byte: the request
  // goes once to the next candidate if we can send it again whole (small or no body). The
  // device would repeat it anyway after an error; this saves it the round trip and the error.
  if (!response_started_ && !up.response_byte_seen() && replayable_ && !retried_next_ &&
      (error == UpstreamError::reset || error == UpstreamError::server_down) && attempt_ < candidates_.size()) {
    retried_next_ = true;
    release_upstream(false);
    WorkerStats::add(ctx_.stats.upstream_retries);
    resend_from_replay();
    try_next_candidate();
    return;
  }
  release_upstream(false);
  state_ = State::done;
  if (response_started_) {
    // Part of the response is already with the client: all we can do is cut it short.
    record(status_);
    ds_.flush();
    ds_.close();
    return;
  }
  ds_.fail_exchange(error == UpstreamError::timeout ? 504 : error == UpstreamError::no_memory ? 503 : 502);
}

void Exchange::resend_from_replay() {
  // The next attempt sends the head and every body byte so far; later ones follow as usual.
  state_ = State::connecting;
  held_.clear();
  held_bytes_ = replay_.size();
  if (!replay_.empty()) held_.push_back(Piece{Slice(), replay_});
}

void Exchange::on_upstream_read_done() {
  if (state_ != State::active) return;
  if (!ds_.flush()) return;
  check_downstream_backpressure();
}

void Exchange::on_upstream_tunnel_data(Slice data) {
  ds_.writer().add(std::move(data));
  if (!ds_.flush()) return;
  check_downstream_backpressure();
}

void Exchange::abort() {
  if (parked_) {
    parked_ = false;
    ctx_.directory_waiters.cancel(*this);
  }
  if (state_ == State::idle || state_ == State::done) {
    state_ = State::idle;
    return;
  }
  held_.clear();
  held_bytes_ = 0;
  release_upstream(false);
  state_ = State::done;
  record(response_started_ ? status_ : 0);
}

void Exchange::uncount_long_poll() {
  if (long_poll_row_ < 0) return;
  WorkerStats::add(ctx_.stats.parked[long_poll_row_], -1);
  long_poll_row_ = -1;
}

void Exchange::record(int status) {
  if (recorded_) return;
  recorded_ = true;
  WorkerStats& stats = ctx_.stats;
  const uint64_t total = uv_hrtime() - start_ns_;
  const bool retried = attempt_ > 1 || retried_stale_ || retried_next_;
  const size_t reason = retried ? kReasonRetry : static_cast<size_t>(reason_);
  WorkerStats::add(stats.finished[WorkerStats::server_row(server_)][status_class(status)][reason]);
  uncount_long_poll();
  if (long_poll_) {
    stats.long_poll_seconds.observe(total);
  } else {
    stats.request_seconds.observe(total);
    stats.server_seconds[WorkerStats::server_row(server_)].observe(total);
  }
  AccessLogBuffer& log = ctx_.access_log;
  if (!log.enabled()) return;
  const HttpHead& head = ds_.request().head();
  auto header = [&head](std::string_view name) {
    size_t i = head.find(name);
    return i == HttpHead::npos ? std::string_view() : head.value(i);
  };
  AccessRecord r;
  r.time = wall_start_;
  r.client_ip = ds_.client_ip();
  r.method = ds_.request().method_name();
  r.target = ds_.request().target();
  r.http_minor = ds_.request().http_minor();
  r.user = user_key_;
  // server_ is a slot, not a position in runtime().servers (a reload reorders those): the
  // pool keeps its server's target, a removed server's included.
  if (server_ >= 0) r.server = ctx_.upstream_pool(static_cast<size_t>(server_)).target().id;
  r.reason = early_resent_ ? std::string_view("early_resend")
             : retried    ? std::string_view("retry")
                          : affinity::to_string(reason_);
  r.status = status;
  r.bytes_in = bytes_in_;
  r.bytes_out = ds_.bytes_written() - bytes_out_start_;
  r.total_ns = static_cast<int64_t>(total);
  r.connect_ns = connect_ns_;
  r.ttfb_ns = ttfb_ns_;
  r.referer = header("referer");
  r.user_agent = header("user-agent");
  r.rejected = ds_.rejected();
  if (uint64_t dropped = log.add(r)) WorkerStats::add(stats.access_log_dropped, dropped);
}

}  // namespace sprayer::proxy
