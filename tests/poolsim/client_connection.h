// ClientConnection: one accepted connection to poolsim. Parses requests with llhttp, answers
// them in order (one at a time, pipelined input waits), holds, delays and streams responses.
#pragma once

#include <llhttp.h>
#include <openssl/types.h>
#include <uv.h>

#include <cstddef>
#include <string>

#include "tests/poolsim/exchange.h"

namespace poolsim {

class PoolServer;
struct WriteRequest;

class ClientConnection {
 public:
  explicit ClientConnection(PoolServer& server);
  ClientConnection(const ClientConnection&) = delete;
  ClientConnection& operator=(const ClientConnection&) = delete;

  // Accepts from `listener` and starts reading; on failure the connection closes itself.
  void accept(uv_stream_t* listener);
  // Closes every handle; the object deletes itself after the last close callback. Idempotent.
  void close();

 private:
  friend class PoolServer;  // links connections_ through prev_/next_
  enum class State {
    reading,    // parsing a request (head or body)
    delaying,   // response waits on delay_timer_ (hold, latency)
    streaming,  // blob body being produced under back-pressure
    closing,    // last response queued; write side shut down, input discarded until EOF
    closed,     // uv_close called
  };

  ~ClientConnection();

  static const llhttp_settings_t kParserSettings;
  static int on_message_begin_cb(llhttp_t* parser) noexcept;
  static int on_url_cb(llhttp_t* parser, const char* at, size_t length) noexcept;
  static int on_header_field_cb(llhttp_t* parser, const char* at, size_t length) noexcept;
  static int on_header_field_complete_cb(llhttp_t* parser) noexcept;
  static int on_header_value_cb(llhttp_t* parser, const char* at, size_t length) noexcept;
  static int on_headers_complete_cb(llhttp_t* parser) noexcept;
  static int on_body_cb(llhttp_t* parser, const char* at, size_t length) noexcept;
  static int on_message_complete_cb(llhttp_t* parser) noexcept;
  static constexpr llhttp_settings_t make_parser_settings();
  int on_message_begin();
  int on_url(const char* at, size_t length);
  int on_header_field(const char* at, size_t length);
  int on_header_field_complete();
  int on_header_value(const char* at, size_t length);
  int on_headers_complete();
  int on_body(const char* at, size_t length);
  int on_message_complete();

  static void on_alloc_cb(uv_handle_t* handle, size_t suggested, uv_buf_t* buf) noexcept;
  static void on_read_cb(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) noexcept;
  static void on_write_cb(uv_write_t* req, int status) noexcept;
  static void on_shutdown_cb(uv_shutdown_t* req, int status) noexcept;
  static void on_delay_timer_cb(uv_timer_t* timer) noexcept;
  static void on_linger_timer_cb(uv_timer_t* timer) noexcept;
  static void on_close_cb(uv_handle_t* handle) noexcept;

  void on_read(ssize_t nread, const char* data);
  void on_plaintext(const char* data, size_t length);
  void on_tls_read(const char* data, size_t length);
  bool send_tls_output();  // ciphertext OpenSSL produced (handshake, alerts, close_notify)
  bool write_raw(WriteRequest* request, const uv_buf_t* bufs, unsigned count);
  std::string tls_details() const;
  void on_write(WriteRequest* request, int status);
  void on_shutdown(int status);
  void on_delay_timer();
  void on_peer_eof();

  size_t parse(const char* data, size_t length);
  void parse_buffered();
  void reject(llhttp_errno_t error);
  void start_response();
  void plan_response();
  void plan_activesync();
  void plan_stats();
  void plan_headers();
  void plan_pool_admin();
  void plan_availability();
  // Traveler mode (client_traveler.cpp): the master monitor decision, stats and owner reads.
  void plan_traveler(std::string& user);
  void plan_traveler_owner(const std::string& key);
  void append_traveler_stats(std::string& body) const;
  void emit_response();
  void append_head(uint64_t content_length);
  void pump_blob();
  void finish_exchange();
  void begin_close();
  void settle();
  void flush();
  bool write(WriteRequest* request, const uv_buf_t* bufs, unsigned count);
  void update_reading();
  void pause_reading();
  void resume_reading();

  PoolServer& server_;
  ClientConnection* prev_ = nullptr;  // intrusive list of the server's live connections
  ClientConnection* next_ = nullptr;
  State state_ = State::reading;
  uv_tcp_t tcp_{};
  uv_timer_t delay_timer_{};
  uv_timer_t linger_timer_{};
  uv_shutdown_t shutdown_req_{};
  int open_handles_ = 0;
  llhttp_t parser_{};
  Exchange exchange_;
  bool message_done_ = false;
  int reject_status_ = 0;  // set by a callback returning HPE_USER
  bool peer_eof_ = false;
  bool reading_ = false;
  std::string in_;   // input waiting while a response is pending (pipelining)
  std::string out_;  // bytes to write at the next flush
  size_t inflight_bytes_ = 0;  // written but not yet completed
  // HTTPS (--tls-cert): the TLS session over memory BIOs; plain HTTP flows through it.
  SSL* ssl_ = nullptr;
  BIO* tls_in_ = nullptr;   // owned by ssl_
  BIO* tls_out_ = nullptr;  // owned by ssl_
  std::string plain_;       // decrypted bytes of the current read
  bool ticket_due_ = false;  // --tls-late-tickets: a response went out, a ticket follows it
};

}  // namespace poolsim
