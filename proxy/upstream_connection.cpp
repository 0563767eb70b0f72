// Backend connection: connect (and TLS handshake) with a deadline, response parsing, idle
// keep-alive in the pool.
#include "proxy/upstream_connection.h"

#include <cstring>

#include "proxy/exchange.h"
#include "proxy/log.h"
#include "proxy/pause.h"
#include "proxy/tls/tls_engine.h"
#include "proxy/upstream_pool.h"
#include "proxy/worker_context.h"

namespace sprayer::proxy {

UpstreamConnection::UpstreamConnection(WorkerContext& context, UpstreamPool& pool)
    : Connection(context.loop, context.buffers, context.stats.upstream_bytes_in), ctx_(context), pool_(pool) {
  writer_.set_budget(ctx_.buffers.budget());
  counted_ = true;
  WorkerStats::add(ctx_.stats.upstream_open, 1);
}

UpstreamConnection::~UpstreamConnection() {
  if (counted_) WorkerStats::add(ctx_.stats.upstream_open, -1);
}

size_t UpstreamConnection::slot() const { return pool_.slot(); }

void UpstreamConnection::release_to_pool() { pool_.release(this); }

int UpstreamConnection::connect(const sockaddr* addr) {
  state_ = State::connecting;
  // The server's TLS settings as of the current configuration (a reload may have changed
  // them); the pool's own copy for a server a reload removed while requests still use it.
  const std::shared_ptr<ServerTls>* server_tls = &pool_.target().tls;
  for (const auto& s : ctx_.runtime().servers)
    if (s.slot == slot()) server_tls = &s.tls;
  if (const auto& tls = *server_tls) {
    std::shared_ptr<const TlsClientContext> context = tls->context.load();
    tls_ = std::make_unique<TlsEngine>(context, ctx_.buffers, pool_.tls_session(context));
    if (SSL* ssl = tls_->native_handle()) TlsClientContext::set_session_sink(ssl, &UpstreamConnection::on_tls_session, this);
    writer_.set_tls(tls_.get());
  }
  // Allocated for the connect only (a parked Ping's connection is long past it). libuv calls
  // back even when the connection closes first (UV_ECANCELED, before the close callbacks), so
  // the callback always frees it.
  auto* req = new uv_connect_t;
  req->data = this;
  int rc = uv_tcp_connect(req, tcp(), addr, &UpstreamConnection::on_connect);
  if (rc != 0) {
    delete req;
    return rc;
  }
  uv_tcp_nodelay(tcp(), 1);
  timer_purpose_ = Timer::connect;
  deadline().set_in(static_cast<uint64_t>(ctx_.config().timeouts.upstream_connect.count()));
  return 0;
}

void UpstreamConnection::on_connect(uv_connect_t* req, int status) noexcept {
  auto* self = static_cast<UpstreamConnection*>(req->data);
  delete req;
  self->handle_connect(status);
}

void UpstreamConnection::handle_connect(int status) {
  if (state_ == State::closed) return;
  if (status != 0) {
    LOG_DEBUG("upstream %s: connect failed: %s", pool_.target().id.c_str(),
              uv_strerror(status));
    fail(UpstreamError::connect);
    return;
  }
  if (!tls_) {
    connected();
    return;
  }
  // The connect deadline keeps running: it covers the handshake too.
  state_ = State::handshaking;
  set_input_phase(&UpstreamConnection::response_input);
  set_read_phase(&UpstreamConnection::read_handshake);
  advance_handshake();
}

void UpstreamConnection::connected() {
  deadline().clear();
  timer_purpose_ = Timer::none;
  state_ = State::active;
  set_input_phase(&UpstreamConnection::response_input);
  if (tls_)
    set_read_phase(&UpstreamConnection::read_tls);
  else
    set_read_phase(&UpstreamConnection::read_clear);
  if (exchange_) exchange_->on_connected(*this);
}

void UpstreamConnection::advance_handshake() {
  TlsStatus status = tls_->handshake();
  // The ClientHello, or our second flight (certificate, finished), or an alert.
  if (tls_->pending_ciphertext() > 0 && writer_.flush() != 0 && status == TlsStatus::ok) status = TlsStatus::error;
  if (status == TlsStatus::want_io) return;
  const std::string& id = pool_.target().id;
  if (status != TlsStatus::ok) {
    WorkerStats::add(ctx_.stats.upstream_tls_failures);
    std::string_view why = tls_->error().empty() ? std::string_view("connection closed during the handshake")
                                                 : tls_->error();
    LOG_WARN("upstream %s: TLS handshake failed: %.*s", id.c_str(), static_cast<int>(why.size()), why.data());
    // A session the server refuses would fail the same way again.
    pool_.drop_tls_session();
    fail(UpstreamError::connect);
    return;
  }
  WorkerStats::add(ctx_.stats.upstream_tls_handshakes);
  if (tls_->session_reused()) WorkerStats::add(ctx_.stats.upstream_tls_resumed);
  LOG_DEBUG("upstream %s: TLS %.*s %s", id.c_str(), static_cast<int>(tls_->protocol().size()),
            tls_->protocol().data(), tls_->session_reused() ? "resumed" : "full handshake");
  connected();
}

void UpstreamConnection::on_tls_session(void* self, SSL_SESSION* session) noexcept {
  auto* up = static_cast<UpstreamConnection*>(self);
  up->pool_.store_tls_session(session, up->tls_->client_context());
}

void UpstreamConnection::attach(Exchange* exchange) {
  exchange_ = exchange;
  if (state_ == State::idle) {
    state_ = State::active;
    set_input_phase(&UpstreamConnection::response_input);
  }
}

void UpstreamConnection::begin_response(bool head_request) {
  ++requests_;
  response_byte_seen_ = false;
  response_done_ = false;
  keep_alive_ = false;
  head_request_ = head_request;
  if (parser_) parser_->begin(head_request);
  clear_pause();
  arm_response_timer();
}

void UpstreamConnection::arm_response_timer() {
  timer_purpose_ = Timer::response;
  deadline().set_in(static_cast<uint64_t>(ctx_.config().timeouts.upstream_response.count()));
}

void UpstreamConnection::enter_tunnel() {
  state_ = State::tunnel;
  set_input_phase(&UpstreamConnection::tunnel_input);
  timer_purpose_ = Timer::none;
  deadline().clear();
}

bool UpstreamConnection::flush() {
  if (state_ == State::closed) return false;
  WorkerStats::add(ctx_.stats.upstream_bytes_out, writer_.batch_bytes());
  int rc = writer_.flush();
  if (rc != 0) {
    fail(UpstreamError::reset);
    return false;
  }
  return true;
}

void UpstreamConnection::make_idle() {
  state_ = State::idle;
  exchange_ = nullptr;
  if (parser_) parser_->clear_head();  // keeps its capacity for the next response
  set_input_phase(&UpstreamConnection::idle_input);
  clear_pause();
  timer_purpose_ = Timer::idle;
  deadline().set_in(static_cast<uint64_t>(ctx_.config().timeouts.upstream_idle.count()));
}

void UpstreamConnection::read_handshake(Slice ciphertext) {
  tls_->feed_ciphertext(std::move(ciphertext));
  advance_handshake();
  if (state_ != State::active) return;
  decrypt();  // what came with the server's last flight
}

void UpstreamConnection::read_tls(Slice ciphertext) {
  tls_->feed_ciphertext(std::move(ciphertext));
  decrypt();
}

void UpstreamConnection::decrypt() {
  // Everything fed is decrypted now: a pooled idle connection must read the session tickets
  // a TLS 1.3 server sends after the handshake (they yield no plaintext), and a response
  // split over records is parsed piece by piece.
  while (state_ != State::closed) {
    Slice plain;
    TlsStatus status = tls_->read_plaintext(plain);
    if (status == TlsStatus::ok) {
      deliver(std::move(plain));
      continue;
    }
    if (status == TlsStatus::closed) {
      on_eof(UV_EOF);  // close_notify: the server ends the connection
      return;
    }
    if (status == TlsStatus::error) {
      LOG_DEBUG("upstream %s: TLS: %.*s", pool_.target().id.c_str(),
                static_cast<int>(tls_->error().size()), tls_->error().data());
      if (state_ == State::idle) {
        close();
      } else {
        fail(UpstreamError::reset);
      }
      return;
    }
    break;
  }
  // Replies OpenSSL owes the server (a key update) go out now.
  if (state_ != State::closed && tls_->pending_ciphertext() > 0 && writer_.flush() != 0) fail(UpstreamError::reset);
}

void UpstreamConnection::on_eof(ssize_t nread) {
  if (state_ == State::idle) {
    close();
    return;
  }
  if (state_ == State::handshaking) {
    WorkerStats::add(ctx_.stats.upstream_tls_failures);
    LOG_WARN("upstream %s: TLS handshake failed: the server closed the connection (%s)",
             pool_.target().id.c_str(), uv_strerror(static_cast<int>(nread)));
    pool_.drop_tls_session();
    fail(UpstreamError::connect);
    return;
  }
  if (state_ == State::tunnel) {
    fail(UpstreamError::reset);
    return;
  }
  if (nread == UV_EOF && response_byte_seen_ && !response_done_) {
    // A response delimited by the close of the connection ends here.
    if (parser_ && parser_->finish() && response_done_) {
      if (exchange_) exchange_->on_upstream_read_done();
      close();
      return;
    }
  }
  if (!response_done_) fail(nread == UV_ENOBUFS ? UpstreamError::no_memory : UpstreamError::reset);
}

void UpstreamConnection::idle_input(Slice) {
  // A server says nothing unasked; whatever this is, the connection is not reusable.
  close();
}

void UpstreamConnection::tunnel_input(Slice data) {
  pool_.on_bytes();
  if (exchange_) exchange_->on_upstream_tunnel_data(std::move(data));
}

void UpstreamConnection::response_input(Slice data) {
  pool_.on_bytes();
  if (timer_purpose_ == Timer::response) arm_response_timer();
  response_byte_seen_ = true;
  if (!parser_) {
    parser_ = std::make_unique<ResponseParser>(static_cast<ResponseParser::Handler&>(*this));
    parser_->begin(head_request_);
  }
  input_ = &data;
  ResponseParser::Result result = parser_->execute(data.data(), data.size());
  input_ = nullptr;
  if (state_ == State::closed) return;
  switch (result.outcome) {
    case ResponseParser::Outcome::more:
      if (exchange_) exchange_->on_upstream_read_done();
      return;
    case ResponseParser::Outcome::message_end:
    case ResponseParser::Outcome::upgrade:
      if (state_ == State::tunnel) {
        if (result.consumed < data.size() && exchange_)
          exchange_->on_upstream_tunnel_data(data.sub(result.consumed, data.size() - result.consumed));
        return;
      }
      if (result.consumed < data.size()) {
        // Bytes after a complete response that nobody asked for.
        if (exchange_) exchange_->on_upstream_read_done();
        close();
      }
      return;
    case ResponseParser::Outcome::error:
      break;
  }
  LOG_DEBUG("upstream %s: bad response: %s", pool_.target().id.c_str(), parser_->error_name());
  fail(UpstreamError::bad_response);
}

void UpstreamConnection::on_write_done(int status) {
  if (state_ == State::closed) return;
  if (status != 0) {
    fail(UpstreamError::reset);
    return;
  }
  if (exchange_ && writer_.queued() <= ctx_.config().http.buffer_low_watermark) exchange_->on_upstream_drained();
}

void UpstreamConnection::on_deadline() {
  switch (timer_purpose_) {
    case Timer::none:
      return;
    case Timer::connect:
      ctx_.stats.timeout(TimeoutKind::upstream_connect);
      fail(UpstreamError::connect);
      return;
    case Timer::response:
      ctx_.stats.timeout(TimeoutKind::upstream_response);
      fail(UpstreamError::timeout);
      return;
    case Timer::idle:
      ctx_.stats.timeout(TimeoutKind::upstream_idle);
      close();
      return;
  }
}

void UpstreamConnection::fail(UpstreamError error) {
  Exchange* exchange = exchange_;
  exchange_ = nullptr;
  State was = state_;
  close();
  if (!exchange) return;
  if (error == UpstreamError::connect && (was == State::connecting || was == State::handshaking)) {
    exchange->on_connect_failed(*this, 0);
    return;
  }
  exchange->on_upstream_error(*this, error);
}

void UpstreamConnection::fail_server_down() { fail(UpstreamError::server_down); }

void UpstreamConnection::close() {
  if (state_ == State::closed) return;
  pool_.on_closed(this);
  bool tls_up = tls_ && tls_->handshake_done() && tls_->status() == TlsStatus::ok && state_ != State::handshaking;
  state_ = State::closed;
  exchange_ = nullptr;
  writer_.discard();
  if (tls_up) {
    // close_notify (idle timeout, pool full, draining): the server sees an orderly end, not a
    // truncation. Best effort: what the socket does not take at once is dropped by the close.
    tls_->shutdown();
    writer_.flush();
  }
  if (parser_) parser_->release();
  close_handles();
}

// ---- the response (ResponseParser::Handler) --------------------------------------------

ResponseParser::HeadAction UpstreamConnection::on_response_head() {
  if (!exchange_) return ResponseParser::HeadAction::fail;
  return exchange_->on_response_head(*this);
}

void UpstreamConnection::on_response_body(const char* at, size_t len) {
  if (!exchange_) return;
  const char* base = input_->data();
  exchange_->on_response_body(input_->sub(static_cast<size_t>(at - base), len));
}

void UpstreamConnection::on_response_complete() {
  response_done_ = true;
  keep_alive_ = parser_->keep_alive();
  deadline().clear();
  timer_purpose_ = Timer::none;
  if (exchange_) exchange_->on_response_complete(*this);
}

}  // namespace sprayer::proxy
