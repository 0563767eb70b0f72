// The backend side: one TCP connection to a pool server. Connects, writes the request the
// Exchange gives it, parses the response with its ResponseParser and reports it piece by piece. When
// idle it sits in its UpstreamPool and any byte or EOF from the server closes it.
#pragma once

#include <openssl/types.h>

typedef struct ssl_session_st SSL_SESSION;  // <openssl/ssl.h> without the whole header
#include <uv.h>

#include <memory>

#include "proxy/buffer_pool.h"
#include "proxy/deadline.h"
#include "proxy/health_events.h"
#include "proxy/pause.h"
#include "proxy/http/http_head.h"
#include "proxy/http/response_parser.h"
#include "proxy/stream_writer.h"

namespace sprayer::proxy {

class Exchange;
class TlsEngine;
class UpstreamPool;
class Worker;

class UpstreamConnection final : private ResponseParser::Handler {
 public:
  // handshaking: TCP is up, TLS is not yet; the connection is not "connected" until it is.
  enum class State { connecting, handshaking, active, idle, tunnel, closed };

  UpstreamConnection(Worker& worker, UpstreamPool& pool);
  int connect(const sockaddr* addr);  // 0: the result comes to the exchange later

  void attach(Exchange* exchange);    // become active for one request
  void detach() { exchange_ = nullptr; }
  void begin_response(bool head_request);
  void enter_tunnel();
  StreamWriter& writer() { return writer_; }
  bool flush();
  void pause_reading(PauseReasons reasons);
  void resume_reading(PauseReasons reasons);
  void make_idle();                   // back in the pool: read for EOF, arm the idle timer
  void close();                       // idempotent; frees itself after the last close callback
  void fail_server_down();            // health says the server is gone: end the request now

  State state() const { return state_; }
  bool reused() const { return requests_ > 1; }
  bool response_byte_seen() const { return response_byte_seen_; }
  bool keep_alive() const { return keep_alive_; }
  int status() const { return parser_.status(); }
  const HttpHead& head() const { return parser_.head(); }
  const ResponseParser& response() const { return parser_; }
  size_t slot() const;  // the server's slot (see UpstreamPool::slot)
  const UpstreamPool& pool() const { return pool_; }
  uint32_t requests() const { return requests_; }
  Exchange* exchange() const { return exchange_; }

 private:
  ~UpstreamConnection();
  void fail(UpstreamError error);
  void arm_response_timer();
  void update_read_state();

  static void on_connect(uv_connect_t* req, int status) noexcept;
  static void on_alloc(uv_handle_t* handle, size_t suggested, uv_buf_t* buf) noexcept;
  static void on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) noexcept;
  static void on_timer(uv_timer_t* timer) noexcept;
  static void on_write_done(void* self, int status) noexcept;
  static void on_close(uv_handle_t* handle) noexcept;
  void handle_connect(int status);
  void handle_read(ssize_t nread, const uv_buf_t* buf);
  void handle_eof(ssize_t nread);
  void handle_data(Slice data);
  void handle_tls_input(Slice ciphertext);
  void advance_handshake();
  void connected();
  static void on_tls_session(void* self, SSL_SESSION* session) noexcept;
  void handle_timer();

  // ResponseParser::Handler
  ResponseParser::HeadAction on_response_head() override;
  void on_response_body(const char* at, size_t len) override;
  void on_response_complete() override;

  enum class Timer { none, connect, response, idle };

  Worker& worker_;
  UpstreamPool& pool_;
  Exchange* exchange_ = nullptr;
  uv_tcp_t tcp_{};
  uv_connect_t connect_req_{};
  Deadline timer_;
  ResponseParser parser_{*this};
  StreamWriter writer_;
  Slice input_;
  std::unique_ptr<TlsEngine> tls_;  // null = plain HTTP
  State state_ = State::connecting;
  Timer timer_purpose_ = Timer::none;
  PauseReasons pause_reasons_;
  bool reading_ = false;
  bool response_byte_seen_ = false;
  bool response_done_ = false;
  bool keep_alive_ = false;
  bool counted_ = false;
  int handles_open_ = 0;
  uint32_t requests_ = 0;
};

}  // namespace sprayer::proxy
