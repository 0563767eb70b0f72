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
#include "proxy/exchange_sides.h"
#include "proxy/health_events.h"
#include "proxy/pause.h"
#include "proxy/http/http_head.h"
#include "proxy/http/response_parser.h"

namespace sprayer::proxy {

class Exchange;
class TlsEngine;
class UpstreamPool;
struct WorkerContext;

class UpstreamConnection final : public Connection, public ExchangeUpstream, private ResponseParser::Handler {
 public:
  // handshaking: TCP is up, TLS is not yet; the connection is not "connected" until it is.
  enum class State { connecting, handshaking, active, idle, tunnel, closed };

  UpstreamConnection(WorkerContext& context, UpstreamPool& pool);
  int connect(const sockaddr* addr);  // 0: the result comes to the exchange later

  // ExchangeUpstream
  void attach(Exchange* exchange) override;  // become active for one request
  void detach() override { exchange_ = nullptr; }
  void begin_response(bool head_request) override;
  void enter_tunnel() override;
  StreamWriter& writer() override { return writer_; }
  bool flush() override;
  void pause_reading(PauseReasons reasons) override { Connection::pause_reading(reasons); }
  void resume_reading(PauseReasons reasons) override { Connection::resume_reading(reasons); }
  void release_to_pool() override;
  void close() override;              // idempotent; frees itself after the last close callback
  // Asked only from the parser's own callbacks (a response head), so the parser exists.
  const ResponseParser& response() const override { return *parser_; }
  bool reused() const override { return requests_ > 1; }
  bool response_byte_seen() const override { return response_byte_seen_; }
  bool keep_alive() const override { return keep_alive_; }
  size_t slot() const override;  // the server's slot (see UpstreamPool::slot)

  void make_idle();                   // back in the pool: read for EOF, arm the idle timer
  void fail_server_down();            // health says the server is gone: end the request now

  State state() const { return state_; }
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

  WorkerContext& ctx_;
  UpstreamPool& pool_;
  Exchange* exchange_ = nullptr;
  // Made at the first response byte and kept for the connection's next responses: a parked
  // Ping's connection has none (192 B with its llhttp state, tens of thousands at once).
  std::unique_ptr<ResponseParser> parser_;
  const Slice* input_ = nullptr;  // response_input's read, while it is parsed: body pieces are slices of it
  State state_ = State::connecting;
  Timer timer_purpose_ = Timer::none;
  bool head_request_ = false;  // the current request is a HEAD (for the parser, once made)
  bool response_byte_seen_ = false;
  bool response_done_ = false;
  bool keep_alive_ = false;
  bool counted_ = false;
  uint32_t requests_ = 0;
};

}  // namespace sprayer::proxy
