// The backend side: one TCP connection to a pool server. Connects, writes the request the
// Exchange gives it, parses the response with its ResponseParser and reports it piece by piece. When
// idle it sits in its UpstreamPool and any byte or EOF from the server closes it.
#pragma once

#include <openssl/types.h>

typedef struct ssl_session_st SSL_SESSION;  // <openssl/ssl.h> without the whole header
#include <uv.h>

#include <memory>

#include "proxy/buffer_pool.h"
#include "proxy/connection.h"
#include "proxy/health_events.h"
#include "proxy/pause.h"
#include "proxy/http/http_head.h"
#include "proxy/http/response_parser.h"

namespace sprayer::proxy {

class Exchange;
class TlsEngine;
class UpstreamPool;
class Worker;

class UpstreamConnection final : public Connection, private ResponseParser::Handler {
 public:
  // handshaking: TCP is up, TLS is not yet; the connection is not "connected" until it is.
  enum class State { connecting, handshaking, active, idle, tunnel, closed };

  UpstreamConnection(Worker& worker, UpstreamPool& pool);
  int connect(const sockaddr* addr);  // 0: the result comes to the exchange later

  void attach(Exchange* exchange);    // become active for one request
  void detach() { exchange_ = nullptr; }
  void begin_response(bool head_request);
  void enter_tunnel();
  bool flush();  // and writer(), pause_reading(), resume_reading() of the Connection
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
  ~UpstreamConnection() override;
  void fail(UpstreamError error);
  void arm_response_timer();

  // Read phases (Connection): the socket's bytes. None while connecting.
  void read_handshake(Slice ciphertext);  // TLS: until the handshake is done
  void read_tls(Slice ciphertext);        // TLS records, decrypted into the input phase
  // Input phases: the plaintext.
  void idle_input(Slice data);      // in the pool: the server says nothing unasked
  void response_input(Slice data);  // a response is parsed
  void tunnel_input(Slice data);    // after an upgrade: straight to the client

  static void on_connect(uv_connect_t* req, int status) noexcept;
  void handle_connect(int status);
  void decrypt();
  void advance_handshake();
  void connected();
  static void on_tls_session(void* self, SSL_SESSION* session) noexcept;

  // Connection
  void on_eof(ssize_t status) override;
  void on_write_done(int status) override;
  void on_deadline() override;

  // ResponseParser::Handler
  ResponseParser::HeadAction on_response_head() override;
  void on_response_body(const char* at, size_t len) override;
  void on_response_complete() override;

  enum class Timer { none, connect, response, idle };

  Worker& worker_;
  UpstreamPool& pool_;
  Exchange* exchange_ = nullptr;
  uv_connect_t connect_req_{};
  ResponseParser parser_{*this};
  Slice input_;
  State state_ = State::connecting;
  Timer timer_purpose_ = Timer::none;
  bool response_byte_seen_ = false;
  bool response_done_ = false;
  bool keep_alive_ = false;
  bool counted_ = false;
  uint32_t requests_ = 0;
};

}  // namespace sprayer::proxy
