// The client side of one TCP connection: reads requests through its RequestParser, hands
// each one to its Exchange, writes responses back in order, and enforces the client
// timeouts (head, idle, body, send) and limits.
#pragma once

#include <netinet/in.h>
#include <uv.h>

#include <memory>
#include <string>

#include "conf/config.h"

#include "proxy/buffer_pool.h"
#include "proxy/connection.h"
#include "proxy/pause.h"
#include "proxy/exchange.h"
#include "proxy/exchange_sides.h"
#include "proxy/worker_context.h"
#include "proxy/http/http_head.h"
#include "proxy/http/request_parser.h"

namespace sprayer::proxy {

class Worker;
class TlsContext;
class TlsEngine;

class DownstreamConnection final : public Connection, public ExchangeDownstream, private RequestParser::Handler {
 public:
  enum class State { idle, reading_head, in_exchange, tunnel, closing, closed };

  static void accept(Worker& worker, int fd, const sockaddr_storage& peer, const conf::ListenerConfig& listener,
                     std::shared_ptr<const TlsContext> tls, uint16_t listener_slot);
  // The same without a Worker (unit tests): null if the socket could not be taken.
  static DownstreamConnection* accept(WorkerContext& context, DownstreamRegistry& registry, int fd,
                                      const sockaddr_storage& peer, const conf::ListenerConfig& listener,
                                      std::shared_ptr<const TlsContext> tls, uint16_t listener_slot = 0);

  State state() const { return state_; }
  uint16_t listener_slot() const { return listener_slot_; }
  // Bytes this connection makes sprayer hold: queued towards the client, held pipelined
  // input, ciphertext not yet decrypted (what shedding frees first).
  size_t held_bytes() const;

  // ExchangeDownstream: what the Exchange sees of the client.
  const RequestParser& request() const override { return parser_; }
  std::string_view client_ip() const override { return client_ip_; }
  bool is_tls() const override { return Connection::is_tls(); }
  bool parsing() const override { return parsing_; }
  uint64_t bytes_written() const override { return bytes_written_; }
  bool request_complete() const override { return request_complete_; }
  // The client gets "Connection: close" and the connection ends after this response.
  bool closing_after_response() const override;
  void set_close_after_response() override { close_after_response_ = true; }
  // The rule that refused the current request (access log), empty if none did.
  std::string_view rejected() const override { return reject_code_; }
  void set_rejected(std::string_view code) override { reject_code_ = code; }
  StreamWriter& writer() override { return writer_; }
  bool flush() override;
  void on_exchange_done() override;
  void fail_exchange(int status) override;
  void enter_tunnel() override;
  void pause_reading(PauseReasons reasons) override { Connection::pause_reading(reasons); }
  void resume_reading(PauseReasons reasons) override { Connection::resume_reading(reasons); }
  void close() override;  // idempotent; frees itself after the last close callback

  // Drain (SIGTERM): idle connections close now, busy ones after their response.
  void begin_drain();
  // The worker's sweep (every second): a parked Ping gives back what it can rebuild.
  void rest_if_parked();

 private:
  enum class Timer { none, head, idle, body, linger, next_request };

  DownstreamConnection(WorkerContext& context, DownstreamRegistry& registry);
  ~DownstreamConnection() override;
  int init(int fd, const sockaddr_storage& peer, const conf::ListenerConfig& listener,
           std::shared_ptr<const TlsContext> tls);
  // The state, and with it what input means (see the input phases below).
  void set_state(State state);

  // Read phases (Connection): the socket's bytes.
  void sniff_tls(Slice data);   // the first bytes on a TLS port: plain HTTP gets a plaintext answer
  void read_tls(Slice data);    // TLS records: decrypted into the input phase
  // Input phases: the plaintext.
  void parse_input(Slice data);     // a request is read (idle, head, body)
  void hold_pipelined(Slice data);  // the next request waits for the current response
  void tunnel_input(Slice data);    // after an upgrade: straight to the server
  void discard_input(Slice data);   // lingering close: the client's bytes are dropped

  void drain_tls();
  void handle_tls_close();
  void send_redirect();
  void feed(Slice data);
  void on_parse_error(const RequestParser::Result& result);
  void send_error_and_close(int status);
  // Memory is over the budget's refuse mark: 503 with Retry-After, and close.
  void refuse_overloaded();
  // Counts and logs a request sprayer answered itself, before any routing (a rejected
  // head, an HTTPS redirect).
  void record_local(int status);
  void start_lingering_close();
  // Between requests (idle timeout, drain): close_notify first, so the client sees an orderly
  // TLS close rather than a truncation. Never mid-response, where it would hide one.
  void close_between_requests();
  void start_next_request();
  void resume_next_request();  // idle again: wait for the next request, or parse a held one
  void shut_down_writes();

  // Timeouts (downstream_timers.cpp). Both share the connection's one Deadline, armed for
  // whichever of their due times comes first.
  void arm_timer(Timer purpose);  // the purpose's deadline: head, idle, body, linger, next request
  void on_purpose_deadline(Timer purpose);
  // The send deadline: while writes are in flight, each must complete within
  // timeouts.client_send of the previous one (or of the flush that started them).
  void watch_sending();
  void stop_watching_sending();
  void on_send_timeout();
  void set_purpose_due(uint64_t due);
  void rearm_deadline();

  // Connection
  void on_eof(ssize_t status) override;
  void on_write_done(int status) override;
  void on_deadline() override;
  void on_resumed() override;

  static void on_shutdown(uv_shutdown_t* req, int status) noexcept;

  // RequestParser::Handler
  void on_request_begin() override;
  Verdict on_request_head() override;
  void on_request_body(const char* at, size_t len) override;
  void on_request_complete() override;

  friend class Worker;  // the worker's intrusive list of its connections

  WorkerContext& ctx_;
  DownstreamRegistry& registry_;
  DownstreamConnection* list_prev_ = nullptr;
  DownstreamConnection* list_next_ = nullptr;
  // Due times (loop ms, 0 = none) on the one timer; a uv timer of its own for the send timeout
  // was 152 B more per connection, times tens of thousands of parked Pings.
  uint64_t purpose_due_ = 0;
  uint64_t send_due_ = 0;
  RequestParser parser_{*this};
  Exchange exchange_;
  const Slice* input_ = nullptr;  // feed's read, while it is parsed: body pieces are slices of it
  Slice pending_;          // pipelined bytes that wait for the current response
  State state_ = State::idle;
  Timer timer_purpose_ = Timer::none;
  bool request_complete_ = false;
  bool shutdown_started_ = false;  // shut_down_writes ran (its request lives only while it runs)
  bool close_after_response_ = false;
  bool client_asked_close_ = false;  // Connection: close (or HTTP/1.0 without keep-alive)
  std::string_view reject_code_;     // why the current request was refused (a static name), for the access log
  uint64_t bytes_written_ = 0;
  uint64_t message_begin_ns_ = 0;  // when the current request's first byte was parsed
  // Re-entry guards, not phases: a callback from inside the TLS drain or the parser must not
  // start another one (whoever called it continues when it returns).
  bool draining_tls_ = false;
  bool parsing_ = false;          // inside parser_.execute
  bool tls_counted_ = false;
  bool redirect_to_https_ = false;
  bool local_redirect_ = false;   // this request is answered here with a 308
  uint16_t https_port_ = 443;
  uint16_t listener_slot_ = 0;  // which listener it came in on (per-listener stats)
  bool counted_ = false;
  char client_ip_[46] = {0};
};

}  // namespace sprayer::proxy
