// The two sides of a request as an Exchange sees them: what it asks of the client connection
// and of the server connection, and nothing else. DownstreamConnection and UpstreamConnection
// implement them; unit tests put fakes in their place.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "proxy/http/http_head.h"
#include "proxy/http/request_parser.h"
#include "proxy/http/response_parser.h"
#include "proxy/pause.h"
#include "proxy/stream_writer.h"

namespace sprayer::proxy {

class Exchange;

class ExchangeDownstream {
 public:
  // The request as parsed so far (head complete when the Exchange starts).
  virtual const RequestParser& request() const = 0;
  virtual std::string_view client_ip() const = 0;
  virtual bool is_tls() const = 0;
  // Inside the parser: what the request adds upstream is flushed once when it returns.
  virtual bool parsing() const = 0;
  virtual uint64_t bytes_written() const = 0;  // to this client, all requests
  virtual bool request_complete() const = 0;
  virtual bool closing_after_response() const = 0;
  virtual void set_close_after_response() = 0;
  virtual std::string_view rejected() const = 0;
  virtual void set_rejected(std::string_view code) = 0;  // a static name

  virtual StreamWriter& writer() = 0;
  virtual bool flush() = 0;                 // false if the connection failed and is closing
  virtual void on_exchange_done() = 0;      // the response is fully queued
  virtual void fail_exchange(int status) = 0;  // answer an error (if nothing was sent yet) and close
  virtual void enter_tunnel() = 0;
  virtual void pause_reading(PauseReasons reasons) = 0;
  virtual void resume_reading(PauseReasons reasons) = 0;
  virtual void close() = 0;

 protected:
  ~ExchangeDownstream() = default;
};

class ExchangeUpstream {
 public:
  virtual void attach(Exchange* exchange) = 0;  // become active for one request
  virtual void detach() = 0;
  virtual void begin_response(bool head_request) = 0;
  virtual void enter_tunnel() = 0;
  virtual StreamWriter& writer() = 0;
  virtual bool flush() = 0;
  virtual void pause_reading(PauseReasons reasons) = 0;
  virtual void resume_reading(PauseReasons reasons) = 0;
  // Back to its pool for the next request (or closed if the pool keeps no more).
  virtual void release_to_pool() = 0;
  virtual void close() = 0;

  virtual const ResponseParser& response() const = 0;
  virtual bool reused() const = 0;
  virtual bool response_byte_seen() const = 0;
  virtual bool keep_alive() const = 0;
  virtual size_t slot() const = 0;  // the server's slot (see UpstreamPool::slot)

 protected:
  ~ExchangeUpstream() = default;
};

}  // namespace sprayer::proxy
