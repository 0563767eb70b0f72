// Client-side HTTP/1.1: request validation (limits, smuggling defences), pipelining in
// order, client timeouts, and lingering close after an error so the client reads its 4xx.
#include "proxy/downstream_connection.h"

#include <arpa/inet.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cstring>

#include "proxy/access_log.h"
#include "proxy/config_adapters.h"
#include "proxy/log.h"
#include "proxy/overload.h"
#include "proxy/pause.h"
#include "proxy/tls/tls_engine.h"
#include "proxy/worker.h"

namespace sprayer::proxy {
namespace {

int status_class(int status) { return status >= 100 && status < 600 ? status / 100 : 0; }

}  // namespace

void DownstreamConnection::accept(Worker& worker, int fd, const sockaddr_storage& peer,
                                  const conf::ListenerConfig& listener, std::shared_ptr<const TlsContext> tls,
                                  uint16_t listener_slot) {
  accept(worker.context(), worker, fd, peer, listener, std::move(tls), listener_slot);
}

DownstreamConnection* DownstreamConnection::accept(WorkerContext& context, DownstreamRegistry& registry, int fd,
                                                   const sockaddr_storage& peer, const conf::ListenerConfig& listener,
                                                   std::shared_ptr<const TlsContext> tls, uint16_t listener_slot) {
  auto* connection = new DownstreamConnection(context, registry);
  connection->listener_slot_ = listener_slot;
  if (connection->init(fd, peer, listener, std::move(tls)) == 0) return connection;
  connection->close();
  return nullptr;
}

DownstreamConnection::DownstreamConnection(WorkerContext& context, DownstreamRegistry& registry)
    : Connection(context.loop, context.buffers, context.stats.bytes_in),
      ctx_(context),
      registry_(registry),
      exchange_(*this, context) {}

DownstreamConnection::~DownstreamConnection() {
  if (counted_) registry_.on_connection_closed(this);
}

int DownstreamConnection::init(int fd, const sockaddr_storage& peer, const conf::ListenerConfig& listener,
                               std::shared_ptr<const TlsContext> tls) {
  redirect_to_https_ = listener.redirect_to_https;
  https_port_ = listener.https_port;
  parser_.set_check_host(listener.tls.check_host);
  counted_ = true;
  registry_.on_connection_opened(this);
  if (peer.ss_family == AF_INET)
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&peer)->sin_addr, client_ip_, sizeof client_ip_);
  else if (peer.ss_family == AF_INET6)
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(&peer)->sin6_addr, client_ip_, sizeof client_ip_);
  int rc = uv_tcp_open(tcp(), fd);
  if (rc != 0) {
    ::close(fd);
    return rc;
  }
  writer_.set_budget(ctx_.buffers.budget());
  if (tls) {
    tls_ = std::make_unique<TlsEngine>(std::move(tls), ctx_.buffers);
    writer_.set_tls(tls_.get());
    set_read_phase(&DownstreamConnection::sniff_tls);
  } else {
    set_read_phase(&DownstreamConnection::read_clear);
  }
  set_state(State::idle);
  arm_timer(Timer::head);
  return 0;
}

void DownstreamConnection::set_state(State state) {
  state_ = state;
  switch (state) {
    case State::idle:
    case State::reading_head:
    case State::in_exchange:  // until the request is complete (then hold_pipelined)
      set_input_phase(&DownstreamConnection::parse_input);
      return;
    case State::tunnel:
      set_input_phase(&DownstreamConnection::tunnel_input);
      return;
    case State::closing:
      // Lingering: not even TLS records are decrypted any more.
      set_read_phase(&DownstreamConnection::discard_input);
      set_input_phase(&DownstreamConnection::discard_input);
      return;
    case State::closed:
      stop_phases();
      return;
  }
}

// ---- reading ---------------------------------------------------------------------------

void DownstreamConnection::on_resumed() {
  // Plaintext the engine holds but we did not take while paused: no socket read will come
  // for it. Never while parsing (whoever called the parser drains when it returns) and never
  // ahead of older pipelined bytes still held in pending_ (they are parsed first).
  if (tls_ && !draining_tls_ && !parsing_ && pending_.empty() && tls_->input_pending()) drain_tls();
}

void DownstreamConnection::sniff_tls(Slice data) {
  if (TlsEngine::looks_like_http(data.data(), data.size())) {
    // Plain HTTP on the TLS port: answer in plaintext, so whoever typed http:// sees why.
    WorkerStats::add(ctx_.stats.bad_requests);
    WorkerStats::add(ctx_.stats.tls_failures);
    WorkerStats::add(ctx_.stats.tls_failures_by[WorkerStats::listener_row(listener_slot_)]);
    writer_.set_tls(nullptr);
    tls_.reset();
    std::string response;
    build_explained_error("This port speaks HTTPS; use an https:// URL.\n", response);
    writer_.add_copy(response);
    set_state(State::closing);
    if (flush()) start_lingering_close();
    return;
  }
  set_read_phase(&DownstreamConnection::read_tls);
  read_tls(std::move(data));
}

void DownstreamConnection::read_tls(Slice data) {
  tls_->feed_ciphertext(std::move(data));
  drain_tls();
}

void DownstreamConnection::drain_tls() {
  draining_tls_ = true;
  TlsStatus status = TlsStatus::ok;
  while (tls_ && state_ != State::closed && state_ != State::closing && !paused()) {
    Slice plain;
    status = tls_->read_plaintext(plain);
    if (status != TlsStatus::ok) break;
    deliver(std::move(plain));
  }
  draining_tls_ = false;
  if (!tls_ || state_ == State::closed) return;
  if (!tls_counted_ && tls_->handshake_done()) {
    tls_counted_ = true;
    const size_t row = WorkerStats::listener_row(listener_slot_);
    WorkerStats::add(ctx_.stats.tls_handshakes);
    WorkerStats::add(ctx_.stats.tls_handshakes_by[row]);
    if (tls_->own_records()) {
      WorkerStats::add(ctx_.stats.tls_own_records);
      WorkerStats::add(ctx_.stats.tls_own_records_by[row]);
    }
  }
  // Handshake flights, session tickets and alerts go out even when no response is due.
  if (tls_->pending_ciphertext() > 0 && !flush()) return;
  if (status == TlsStatus::error) {
    WorkerStats::add(ctx_.stats.tls_failures);
    WorkerStats::add(ctx_.stats.tls_failures_by[WorkerStats::listener_row(listener_slot_)]);
    LOG_DEBUG("client %s: TLS: %.*s", client_ip_, static_cast<int>(tls_->error().size()), tls_->error().data());
    exchange_.abort();
    close();
    return;
  }
  if (status == TlsStatus::closed) {
    handle_tls_close();
    return;
  }
  // Output the client's own records provoke counts like any other: a client that sends them
  // without reading the answers is read no further until it does.
  if (writer_.queued() > ctx_.config().http.buffer_high_watermark) pause_reading(PauseReason::own_writes);
}

void DownstreamConnection::handle_tls_close() {
  // The client's close_notify closes its direction only (RFC 8446 6.1): a request it finished
  // before is still answered, then our close_notify follows (start_lingering_close).
  if (state_ == State::closing || state_ == State::closed) return;
  pause_reading(PauseReason::peer_closed);
  if (state_ == State::in_exchange && request_complete_) {
    close_after_response_ = true;
    return;
  }
  if (state_ == State::in_exchange || state_ == State::tunnel) exchange_.abort();
  start_lingering_close();
}

void DownstreamConnection::parse_input(Slice data) { feed(std::move(data)); }

void DownstreamConnection::hold_pipelined(Slice data) {
  // A pipelined request: keep it until the current response is done. One read's worth is
  // enough to hold; beyond that the client waits (TCP back-pressure).
  if (pending_.empty()) {
    pending_ = std::move(data);
  } else if (auto joined = ctx_.buffers.join(pending_, data); joined != BufferPool::Join::joined) {
    pause_reading(PauseReason::pipeline);
    if (joined == BufferPool::Join::no_memory)
      refuse_overloaded();
    else
      send_error_and_close(400);
    return;
  }
  pause_reading(PauseReason::pipeline);
}

void DownstreamConnection::tunnel_input(Slice data) { exchange_.on_tunnel_data(std::move(data)); }

void DownstreamConnection::discard_input(Slice) {}

void DownstreamConnection::feed(Slice data) {
  input_ = &data;
  parsing_ = true;
  // Read per call: a reload applies to the next request.
  parser_.set_limits(request_limits(ctx_.config().limits));
  if (tls_) parser_.set_server_name(tls_->sni());
  RequestParser::Result result = parser_.execute(data.data(), data.size());
  parsing_ = false;
  input_ = nullptr;
  if (state_ == State::closed || state_ == State::closing) return;
  if (state_ == State::reading_head && purpose_due_ == 0) arm_timer(Timer::head);
  switch (result.outcome) {
    case RequestParser::Outcome::more:
      exchange_.flush_upstream();
      return;
    case RequestParser::Outcome::message_end:
    case RequestParser::Outcome::upgrade:
      // End of one request: whatever follows belongs to the next one (or to the tunnel).
      exchange_.flush_upstream();
      if (result.consumed < data.size()) {
        Slice rest = data.sub(result.consumed, data.size() - result.consumed);
        if (state_ == State::idle && pause_has(PauseReason::own_writes))
          pending_ = std::move(rest);  // parsed once the client has read its answers
        else
          deliver(std::move(rest));  // to the tunnel, held as pipelined, or parsed (early answer)
      }
      return;
    case RequestParser::Outcome::stopped:
      return;
    case RequestParser::Outcome::reject:
      on_parse_error(result);
      return;
  }
}

void DownstreamConnection::on_parse_error(const RequestParser::Result& result) {
  int status = result.reject.status;
  if (reject_code_.empty()) reject_code_ = to_string(result.reject.reason);
  WorkerStats::add(ctx_.stats.bad_requests);
  LOG_DEBUG("client %s: bad request (%.*s%s%s) -> %d", client_ip_, static_cast<int>(to_string(result.reject.reason).size()),
            to_string(result.reject.reason).data(), *parser_.llhttp_error() ? ": " : "", parser_.llhttp_error(), status);
  if (state_ == State::in_exchange) {
    // The client gets this status, not the "went away" an abort alone would record.
    if (!exchange_.response_started()) exchange_.record(status);
    exchange_.abort();
    if (exchange_.response_started()) {
      close();
      return;
    }
  } else {
    record_local(status);
  }
  send_error_and_close(status);
}

void DownstreamConnection::record_local(int status) {
  WorkerStats& stats = ctx_.stats;
  WorkerStats::add(stats.finished[kStatNoServer][status_class(status)][kReasonLocal]);
  const uint64_t total = message_begin_ns_ ? uv_hrtime() - message_begin_ns_ : 0;
  stats.request_seconds.observe(total);
  AccessLogBuffer& log = ctx_.access_log;
  if (!log.enabled()) return;
  AccessRecord r;
  r.time = std::chrono::system_clock::now() -
           std::chrono::duration_cast<std::chrono::system_clock::duration>(std::chrono::nanoseconds(total));
  r.client_ip = client_ip_;
  // The method is known once the target started; a head broken before that has neither.
  bool started = !parser_.head().start().empty();
  r.method = started ? parser_.method_name() : std::string_view("-");
  r.target = !parser_.target().empty() ? parser_.target() : parser_.head().start();
  r.http_minor = parser_.http_minor();
  r.reason = "local";
  r.rejected = rejected();
  r.status = status;
  r.bytes_in = parser_.head().bytes();
  r.total_ns = static_cast<int64_t>(total);
  if (uint64_t dropped = log.add(r)) WorkerStats::add(stats.access_log_dropped, dropped);
}

void DownstreamConnection::on_eof(ssize_t) {
  // A client that hangs up mid-request or while its long-poll is parked: free the upstream
  // side too (the server would otherwise hold the Ping for nothing).
  if (state_ == State::in_exchange || state_ == State::tunnel) exchange_.abort();
  close();
}

// ---- requests (RequestParser::Handler) -----------------------------------------------

void DownstreamConnection::on_request_begin() {
  message_begin_ns_ = uv_hrtime();
  reject_code_ = {};
  request_complete_ = false;
  set_state(State::reading_head);
  // The head timer is armed at the end of feed(), and only for a head that did not arrive
  // whole: most heads come in one read and never touch the timer.
  timer_purpose_ = Timer::head;
  set_purpose_due(0);
}

RequestParser::Handler::Verdict DownstreamConnection::on_request_head() {
  bool upgrade = parser_.upgrade() && ctx_.config().http.allow_upgrade;
  client_asked_close_ = !parser_.keep_alive();
  if (client_asked_close_ || ctx_.draining) close_after_response_ = true;

  set_state(State::in_exchange);
  arm_timer(parser_.has_body() ? Timer::body : Timer::none);
  WorkerStats::add(ctx_.stats.requests);
  if (const Overload* budget = ctx_.buffers.budget(); budget && budget->refusing()) {
    refuse_overloaded();
    return Verdict::stop();
  }
  if (redirect_to_https_) {
    if (parser_.host().empty()) return Verdict::refuse(400, RejectReason::no_host_to_redirect);
    local_redirect_ = true;  // answered at message end; a body is read and dropped
    return Verdict::proceed();
  }
  exchange_.start(parser_.has_body(), parser_.chunked(), upgrade);
  if (state_ == State::closed || state_ == State::closing) return Verdict::stop();
  return Verdict::proceed();
}

void DownstreamConnection::on_request_body(const char* at, size_t len) {
  if (timer_purpose_ == Timer::body) arm_timer(Timer::body);
  if (state_ != State::in_exchange) return;
  const char* base = input_->data();
  exchange_.on_request_body(input_->sub(static_cast<size_t>(at - base), len));
}

void DownstreamConnection::on_request_complete() {
  request_complete_ = true;
  if (state_ == State::in_exchange) set_input_phase(&DownstreamConnection::hold_pipelined);
  if (timer_purpose_ == Timer::body) arm_timer(Timer::none);
  if (local_redirect_) {
    local_redirect_ = false;
    send_redirect();
    return;
  }
  if (state_ == State::in_exchange) exchange_.on_request_complete();
}

// ---- responses -------------------------------------------------------------------------

bool DownstreamConnection::closing_after_response() const { return close_after_response_ || ctx_.draining; }

bool DownstreamConnection::flush() {
  if (state_ == State::closed) return false;
  size_t before = writer_.in_flight();
  bytes_written_ += writer_.batch_bytes();
  WorkerStats::add(ctx_.stats.bytes_out, writer_.batch_bytes());
  int rc = writer_.flush();
  if (rc != 0) {
    LOG_DEBUG("client %s: write failed: %s", client_ip_, uv_strerror(rc));
    exchange_.abort();
    close();
    return false;
  }
  if (writer_.in_flight() > 0 && before == 0) watch_sending();
  return true;
}

void DownstreamConnection::on_exchange_done() {
  if (closing_after_response() || !request_complete_) {
    // Unread request body (the server answered early) or the client asked to close.
    set_state(State::closing);
    if (client_asked_close_ && request_complete_ && pending_.empty() && !tls_ && writer_.idle()) {
      // The client said this was its last request, it was read whole and the answer is
      // written: the FIN follows the response and no input can be lost, so no lingering
      // (saves a shutdown, a read and an epoll round trip per such connection).
      close();
      return;
    }
    start_lingering_close();
    return;
  }
  set_state(State::idle);
  if (writer_.queued() > ctx_.config().http.buffer_high_watermark) {
    // A client that does not read its answers gets no more of them: nothing is read or
    // parsed until it has (the send timeout watches that it does).
    pause_reading(PauseReason::own_writes);
    arm_timer(Timer::none);
    return;
  }
  resume_next_request();
}

void DownstreamConnection::resume_next_request() {
  if (pending_.empty() && !pause_has(PauseReason::pipeline) && !tls_) {
    // Nothing held back: wait for the next request.
    arm_timer(Timer::idle);
    return;
  }
  // Parse a pipelined request (or decrypted input the TLS engine holds) only from a fresh
  // loop turn: the upstream that just finished is still inside its own callback chain.
  arm_timer(Timer::next_request);
}

void DownstreamConnection::start_next_request() {
  if (pause_has(PauseReason::own_writes)) return;
  // Bytes that arrived first are parsed first: the held pipelined input, then whatever the
  // socket (or the TLS engine) has since.
  if (!pending_.empty()) {
    Slice next = std::move(pending_);
    feed(std::move(next));
    if (state_ == State::closed || state_ == State::closing) return;
  }
  if (pending_.empty()) resume_reading(PauseReason::pipeline);
  if (state_ == State::idle && timer_purpose_ == Timer::next_request) arm_timer(Timer::idle);
}

void DownstreamConnection::send_redirect() {
  std::string response;
  build_https_redirect(parser_.host(), https_port_, parser_.target(), closing_after_response(), response);
  writer_.add_copy(response);
  WorkerStats::add(ctx_.stats.responses[3]);
  bool flushed = flush();
  record_local(308);
  if (!flushed) return;
  on_exchange_done();
}

void DownstreamConnection::fail_exchange(int status) {
  WorkerStats::add(ctx_.stats.responses[status_class(status)]);
  send_error_and_close(status);
  exchange_.record(status);
}

void DownstreamConnection::send_error_and_close(int status) {
  if (state_ == State::closed || state_ == State::closing) return;
  std::string response;
  build_error_response(status, true, response);
  writer_.add_copy(response);
  set_state(State::closing);
  if (!flush()) return;
  start_lingering_close();
}

void DownstreamConnection::refuse_overloaded() {
  if (state_ == State::closed || state_ == State::closing) return;
  if (Overload* budget = ctx_.buffers.budget()) budget->count_refused_request();
  reject_code_ = "overloaded";
  std::string response;
  build_overload_response(response);
  writer_.add_copy(response);
  WorkerStats::add(ctx_.stats.responses[5]);
  record_local(503);
  set_state(State::closing);
  if (!flush()) return;
  start_lingering_close();
}

size_t DownstreamConnection::held_bytes() const {
  return writer_.queued() + pending_.size() + (tls_ ? tls_->buffered_ciphertext_in() : 0);
}

void DownstreamConnection::start_lingering_close() {
  // Half-close once the response is written, then read and drop what the client still
  // sends for a short while: closing with unread input would reset the connection and
  // could destroy the response before the client reads it.
  set_state(State::closing);
  pending_.reset();
  resume_reading(PauseReason::pipeline | PauseReason::peer_full | PauseReason::not_connected |
                 PauseReason::own_writes | PauseReason::peer_closed);
  arm_timer(Timer::linger);
  if (tls_ && tls_->handshake_done()) {
    tls_->shutdown();  // close_notify, so the client knows the response was not truncated
    if (!flush()) return;
  }
  if (writer_.idle()) shut_down_writes();
}

void DownstreamConnection::shut_down_writes() {
  // Allocated for the shutdown only: a parked connection never needs one. libuv calls back
  // even when the connection closes first (UV_ECANCELED, before the close callbacks), so the
  // callback always frees it.
  shutdown_started_ = true;
  auto* req = new uv_shutdown_t;
  req->data = this;
  if (uv_shutdown(req, stream(), &DownstreamConnection::on_shutdown) != 0) {
    delete req;
    close();
  }
}

void DownstreamConnection::on_shutdown(uv_shutdown_t* req, int status) noexcept {
  auto* self = static_cast<DownstreamConnection*>(req->data);
  delete req;
  if (status != 0 && status != UV_ECANCELED) self->close();
}

void DownstreamConnection::enter_tunnel() {
  set_state(State::tunnel);
  arm_timer(Timer::none);
}

void DownstreamConnection::on_write_done(int status) {
  if (state_ == State::closed) return;
  if (status != 0) {
    exchange_.abort();
    close();
    return;
  }
  if (writer_.in_flight() == 0)
    stop_watching_sending();
  else
    watch_sending();
  if (state_ == State::closing) {
    if (writer_.idle() && !handles_closing() && !shutdown_started_) shut_down_writes();
    return;
  }
  if (writer_.queued() > ctx_.config().http.buffer_low_watermark) return;
  const bool was_full = pause_has(PauseReason::own_writes);
  if (was_full) resume_reading(PauseReason::own_writes);
  if (state_ == State::closed) return;
  exchange_.on_downstream_drained();
  // Idle with no timer: the end of a response (or the next request) waited for the client to
  // read; an idle connection whose own TLS output filled the queue keeps its idle timer.
  if (was_full && state_ == State::idle && timer_purpose_ == Timer::none) resume_next_request();
}

// ---- shutdown --------------------------------------------------------------------------

void DownstreamConnection::begin_drain() {
  // Between requests the connection closes now, unless a request is on its way: one that
  // has not sent its first request yet (its head timer bounds the wait) or bytes that are in
  // the socket already. Closing those would reset a request the client just sent (seen in a
  // binary upgrade under load: a connection accepted just before the switch).
  if (state_ == State::idle && timer_purpose_ != Timer::head) {
    int waiting = 0;
    uv_os_fd_t fd = -1;
    if (uv_fileno(reinterpret_cast<uv_handle_t*>(tcp()), &fd) != 0 || ioctl(fd, FIONREAD, &waiting) != 0 ||
        waiting == 0) {
      close_between_requests();
      return;
    }
  }
  close_after_response_ = true;
}

void DownstreamConnection::close_between_requests() {
  if (state_ != State::closed && tls_ && tls_->handshake_done() && tls_->status() == TlsStatus::ok &&
      writer_.in_flight() == 0) {
    tls_->shutdown();
    flush();  // one try-write of the alert; whatever the socket does not take, close drops
  }
  close();
}

void DownstreamConnection::close() {
  if (state_ == State::closed) return;
  set_state(State::closed);
  exchange_.abort();
  pending_.reset();
  parser_.release();
  writer_.discard();
  close_handles();
}

}  // namespace sprayer::proxy
