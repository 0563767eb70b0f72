// ClientConnection: parses, routes and answers the requests of one poolsim connection.
// Requests are answered strictly one at a time: parsing pauses at each message end until its
// response is fully queued, which keeps pipelined responses in order without a queue.
#include "tests/poolsim/client_connection.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <algorithm>
#include <cstdio>

#include "tests/poolsim/pool_server.h"
#include "tests/poolsim/text.h"

namespace poolsim {

namespace {

// poolsim's own limits sit well above sprayer's defaults so that sprayer's limits are what
// the integration tests observe.
constexpr size_t kMaxUrl = 64 * 1024;
constexpr size_t kMaxHead = 128 * 1024;
constexpr size_t kMaxHeaders = 512;
constexpr size_t kMaxBufferedInput = 1024 * 1024;  // pipelined input held while answering
constexpr size_t kMaxQueuedOutput = 1024 * 1024;   // unsent responses before reading pauses
constexpr size_t kBlobHighWatermark = 512 * 1024;  // blob bytes in flight before pausing
constexpr uint64_t kLingerMs = 2000;

const char* reason_phrase(int status) {
  switch (status) {
    case 100: return "Continue";
    case 103: return "Early Hints";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 449: return "Retry With";
    case 451: return "Unavailable For Legal Reasons";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 507: return "Insufficient Storage";
    default: return "Status";
  }
}

bool body_allowed(int status) { return status >= 200 && status != 204 && status != 304; }

void trim_trailing_space(std::string& text) {
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.pop_back();
}

std::string lowercase(std::string_view text) {
  std::string out(text);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

void append_json_field(std::string& out, const char* name, uint64_t value) {
  out.push_back('"');
  out += name;
  out += "\":";
  append_uint(out, value);
}

}  // namespace

constexpr llhttp_settings_t ClientConnection::make_parser_settings() {
  llhttp_settings_t settings{};
  settings.on_message_begin = &on_message_begin_cb;
  settings.on_url = &on_url_cb;
  settings.on_header_field = &on_header_field_cb;
  settings.on_header_field_complete = &on_header_field_complete_cb;
  settings.on_header_value = &on_header_value_cb;
  settings.on_headers_complete = &on_headers_complete_cb;
  settings.on_body = &on_body_cb;
  settings.on_message_complete = &on_message_complete_cb;
  return settings;
}

const llhttp_settings_t ClientConnection::kParserSettings = make_parser_settings();

ClientConnection::ClientConnection(PoolServer& server) : server_(server) {
  uv_loop_t* loop = server_.loop();
  uv_tcp_init(loop, &tcp_);
  uv_timer_init(loop, &delay_timer_);
  uv_timer_init(loop, &linger_timer_);
  tcp_.data = this;
  delay_timer_.data = this;
  linger_timer_.data = this;
  open_handles_ = 3;
  llhttp_init(&parser_, HTTP_REQUEST, &kParserSettings);
  parser_.data = this;
  exchange_.reset();
  server_.adopt(this);
}

ClientConnection::~ClientConnection() { SSL_free(ssl_); }

void ClientConnection::accept(uv_stream_t* listener) {
  if (uv_accept(listener, reinterpret_cast<uv_stream_t*>(&tcp_)) != 0) {
    close();
    return;
  }
  if (SSL_CTX* ctx = server_.tls_context()) {
    ssl_ = SSL_new(ctx);
    tls_in_ = BIO_new(BIO_s_mem());
    tls_out_ = BIO_new(BIO_s_mem());
    if (!ssl_ || !tls_in_ || !tls_out_) {
      BIO_free(tls_in_);
      BIO_free(tls_out_);
      close();
      return;
    }
    BIO_set_mem_eof_return(tls_in_, -1);  // empty = "want more", not EOF
    SSL_set_bio(ssl_, tls_in_, tls_out_);
    SSL_set_accept_state(ssl_);
  }
  uv_tcp_nodelay(&tcp_, 1);
  resume_reading();
}

void ClientConnection::close() {
  if (state_ == State::closed) return;
  state_ = State::closed;
  reading_ = false;
  uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), on_close_cb);
  uv_close(reinterpret_cast<uv_handle_t*>(&delay_timer_), on_close_cb);
  uv_close(reinterpret_cast<uv_handle_t*>(&linger_timer_), on_close_cb);
}

// ---- trampolines ----

int ClientConnection::on_message_begin_cb(llhttp_t* parser) noexcept {
  return static_cast<ClientConnection*>(parser->data)->on_message_begin();
}
int ClientConnection::on_url_cb(llhttp_t* parser, const char* at, size_t length) noexcept {
  return static_cast<ClientConnection*>(parser->data)->on_url(at, length);
}
int ClientConnection::on_header_field_cb(llhttp_t* parser, const char* at, size_t length) noexcept {
  return static_cast<ClientConnection*>(parser->data)->on_header_field(at, length);
}
int ClientConnection::on_header_field_complete_cb(llhttp_t* parser) noexcept {
  return static_cast<ClientConnection*>(parser->data)->on_header_field_complete();
}
int ClientConnection::on_header_value_cb(llhttp_t* parser, const char* at, size_t length) noexcept {
  return static_cast<ClientConnection*>(parser->data)->on_header_value(at, length);
}
int ClientConnection::on_headers_complete_cb(llhttp_t* parser) noexcept {
  return static_cast<ClientConnection*>(parser->data)->on_headers_complete();
}
int ClientConnection::on_body_cb(llhttp_t* parser, const char* at, size_t length) noexcept {
  return static_cast<ClientConnection*>(parser->data)->on_body(at, length);
}
int ClientConnection::on_message_complete_cb(llhttp_t* parser) noexcept {
  return static_cast<ClientConnection*>(parser->data)->on_message_complete();
}

void ClientConnection::on_alloc_cb(uv_handle_t* handle, size_t, uv_buf_t* buf) noexcept {
  *buf = static_cast<ClientConnection*>(handle->data)->server_.read_buffer();
}
void ClientConnection::on_read_cb(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) noexcept {
  static_cast<ClientConnection*>(stream->data)->on_read(nread, buf->base);
}
void ClientConnection::on_write_cb(uv_write_t* req, int status) noexcept {
  auto* request = static_cast<WriteRequest*>(req->data);
  request->owner->on_write(request, status);
}
void ClientConnection::on_shutdown_cb(uv_shutdown_t* req, int status) noexcept {
  static_cast<ClientConnection*>(req->data)->on_shutdown(status);
}
void ClientConnection::on_delay_timer_cb(uv_timer_t* timer) noexcept {
  static_cast<ClientConnection*>(timer->data)->on_delay_timer();
}
void ClientConnection::on_linger_timer_cb(uv_timer_t* timer) noexcept {
  static_cast<ClientConnection*>(timer->data)->close();
}
void ClientConnection::on_close_cb(uv_handle_t* handle) noexcept {
  auto* self = static_cast<ClientConnection*>(handle->data);
  // Close callbacks run at a loop boundary, outside any other callback of this connection,
  // so the last one can free it directly.
  if (--self->open_handles_ == 0) {
    self->server_.forget(self);
    delete self;
  }
}

// ---- parser callbacks: collect only; responses are started outside llhttp_execute ----

int ClientConnection::on_message_begin() {
  exchange_.reset();
  reject_status_ = 0;
  return 0;
}

int ClientConnection::on_url(const char* at, size_t length) {
  exchange_.url.append(at, length);
  exchange_.head_bytes += length;
  if (exchange_.url.size() > kMaxUrl) {
    reject_status_ = 414;
    return HPE_USER;
  }
  return 0;
}

int ClientConnection::on_header_field(const char* at, size_t length) {
  Exchange& ex = exchange_;
  if (!ex.field_open) {
    if (ex.header_count >= kMaxHeaders) {
      reject_status_ = 431;
      return HPE_USER;
    }
    if (ex.headers.size() == ex.header_count) ex.headers.emplace_back();
    ex.headers[ex.header_count].name.clear();
    ex.headers[ex.header_count].value.clear();
    ex.field_open = true;
  }
  ex.headers[ex.header_count].name.append(at, length);
  ex.head_bytes += length;
  if (ex.head_bytes > kMaxHead) {
    reject_status_ = 431;
    return HPE_USER;
  }
  return 0;
}

int ClientConnection::on_header_field_complete() {
  // Counting the header here (not at value-complete) keeps empty values attached to their name.
  exchange_.field_open = false;
  ++exchange_.header_count;
  return 0;
}

int ClientConnection::on_header_value(const char* at, size_t length) {
  Exchange& ex = exchange_;
  if (ex.header_count == 0) return 0;
  ex.headers[ex.header_count - 1].value.append(at, length);
  ex.head_bytes += length;
  if (ex.head_bytes > kMaxHead) {
    reject_status_ = 431;
    return HPE_USER;
  }
  return 0;
}

int ClientConnection::on_headers_complete() {
  Exchange& ex = exchange_;
  ex.method = llhttp_get_method(&parser_);
  ex.http_minor = llhttp_get_http_minor(&parser_);
  ex.upgrade = llhttp_get_upgrade(&parser_) != 0;
  for (size_t i = 0; i < ex.header_count; ++i) trim_trailing_space(ex.headers[i].value);
  ex.split_url();
  ex.route = classify(ex.path, ex.query);
  bool has_body = (parser_.flags & F_CHUNKED) != 0 || parser_.content_length > 0;
  if (has_body && llhttp_get_http_major(&parser_) == 1 && ex.http_minor >= 1) {
    const std::string* expect = ex.header("Expect");
    if (expect != nullptr && iequals(*expect, "100-continue")) out_ += "HTTP/1.1 100 Continue\r\n\r\n";
  }
  return 0;
}

int ClientConnection::on_body(const char* at, size_t length) {
  exchange_.body_bytes += length;
  server_.stats().bytes_in += length;
  if (exchange_.route == Route::echo) exchange_.body_fnv = fnv1a64_update(exchange_.body_fnv, at, length);
  return 0;
}

int ClientConnection::on_message_complete() {
  message_done_ = true;
  return HPE_PAUSED;
}

// ---- input ----

void ClientConnection::on_read(ssize_t nread, const char* data) {
  if (state_ == State::closed) return;
  if (nread == UV_EOF) {
    on_peer_eof();
    return;
  }
  if (nread < 0) {
    close();
    return;
  }
  if (nread == 0) return;
  if (ssl_) {
    on_tls_read(data, static_cast<size_t>(nread));
    return;
  }
  on_plaintext(data, static_cast<size_t>(nread));
}

void ClientConnection::on_tls_read(const char* data, size_t length) {
  BIO_write(tls_in_, data, static_cast<int>(length));
  plain_.clear();
  bool peer_closed = false;
  for (;;) {
    char buffer[16 * 1024];
    ERR_clear_error();
    int n = SSL_read(ssl_, buffer, sizeof buffer);
    if (n > 0) {
      plain_.append(buffer, static_cast<size_t>(n));
      continue;
    }
    int error = SSL_get_error(ssl_, n);
    if (error == SSL_ERROR_WANT_READ) break;
    if (error == SSL_ERROR_ZERO_RETURN) {
      peer_closed = true;
      break;
    }
    if (server_.options().verbose) {
      char text[256];
      ERR_error_string_n(ERR_peek_error(), text, sizeof text);
      std::fprintf(stderr, "poolsim %s: TLS: %s\n", server_.options().id.c_str(), text);
    }
    ERR_clear_error();
    send_tls_output();  // the alert
    close();
    return;
  }
  if (!send_tls_output()) return;
  if (!plain_.empty()) {
    std::string plain = std::move(plain_);
    on_plaintext(plain.data(), plain.size());
  }
  if (peer_closed && state_ != State::closed) on_peer_eof();
}

bool ClientConnection::send_tls_output() {
  if (state_ == State::closed || BIO_ctrl_pending(tls_out_) == 0) return true;
  WriteRequest* request = server_.acquire_write();
  request->data.resize(BIO_ctrl_pending(tls_out_));
  int n = BIO_read(tls_out_, request->data.data(), static_cast<int>(request->data.size()));
  request->data.resize(n > 0 ? static_cast<size_t>(n) : 0);
  uv_buf_t buf = uv_buf_init(request->data.data(), static_cast<unsigned>(request->data.size()));
  return write_raw(request, &buf, 1);
}

std::string ClientConnection::tls_details() const {
  const char* sni = SSL_get_servername(ssl_, TLSEXT_NAMETYPE_host_name);
  std::string out = "X-Tls-Sni: ";
  out += sni ? sni : "-";
  out += "\r\nX-Tls-Version: ";
  out += SSL_get_version(ssl_);
  out += "\r\nX-Tls-Resumed: ";
  out += SSL_session_reused(ssl_) ? "1" : "0";
  out += "\r\nX-Tls-Client: ";
  X509* peer = SSL_get1_peer_certificate(ssl_);
  std::string subject = "-";
  if (peer) {
    char cn[256] = {0};
    if (X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName, cn, sizeof cn) > 0) subject = cn;
    X509_free(peer);
  }
  out += subject;
  out += "\r\n";
  return out;
}

void ClientConnection::on_plaintext(const char* data, size_t length) {
  if (state_ == State::closing || state_ == State::closed) return;  // closing: discard until EOF
  if (state_ == State::reading && in_.empty()) {
    size_t used = parse(data, length);
    if (used < length && (state_ == State::delaying || state_ == State::streaming)) {
      in_.append(data + used, length - used);
    }
  } else {
    in_.append(data, length);
  }
  settle();
}

size_t ClientConnection::parse(const char* data, size_t length) {
  size_t used = 0;
  while (state_ == State::reading && used < length) {
    llhttp_errno_t error = llhttp_execute(&parser_, data + used, length - used);
    if (error == HPE_OK) return length;
    if ((error == HPE_PAUSED || error == HPE_PAUSED_UPGRADE) && message_done_) {
      used = static_cast<size_t>(llhttp_get_error_pos(&parser_) - data);
      message_done_ = false;
      if (error == HPE_PAUSED) {
        llhttp_resume(&parser_);
      } else {
        // Upgrades are answered as plain requests and the connection closed: whatever the
        // client sends next would not be HTTP/1.1.
        exchange_.upgrade = true;
      }
      start_response();
      continue;
    }
    reject(error);
    return length;
  }
  return used;
}

void ClientConnection::parse_buffered() {
  if (in_.empty()) return;
  size_t used = parse(in_.data(), in_.size());
  if (state_ == State::closing || state_ == State::closed) {
    in_.clear();
  } else {
    in_.erase(0, used);
  }
}

void ClientConnection::reject(llhttp_errno_t error) {
  int status = error == HPE_USER && reject_status_ != 0 ? reject_status_ : 400;
  const char* reason = llhttp_get_error_reason(&parser_);
  Stats& stats = server_.stats();
  ++stats.requests;
  ++stats.by_route[static_cast<size_t>(Route::bad_request)];
  if (server_.options().verbose) {
    std::fprintf(stderr, "poolsim %s: rejected request: %d %s (%s)\n", server_.options().id.c_str(),
                 status, llhttp_errno_name(error), reason != nullptr ? reason : "");
  }
  Exchange& ex = exchange_;
  ex.reset();
  ex.keep_alive = false;
  ex.status = status;
  ex.content_type = "text/plain";
  ex.body = "bad request: ";
  ex.body += status == 414 ? "URI too long" : status == 431 ? "header section too large"
             : reason != nullptr ? reason : llhttp_errno_name(error);
  ex.body += "\n";
  append_head(ex.body.size());
  out_ += ex.body;
  begin_close();
}

void ClientConnection::on_peer_eof() {
  peer_eof_ = true;
  reading_ = false;  // libuv stops reading at EOF by itself
  switch (state_) {
    case State::reading:
      settle();  // answers any complete pipelined request, then closes
      break;
    case State::delaying:
      if (exchange_.hold) {
        // A device that gave up on its Ping: drop the held response, nothing to answer.
        ++server_.stats().holds_cancelled;
        close();
      }
      // A delayed ordinary response is still owed to a half-closed client.
      break;
    case State::streaming:
      break;  // finish_exchange sees peer_eof_ and closes after the blob
    case State::closing:
      // Before the shutdown completes, closing would cancel the response still queued.
      if (uv_is_active(reinterpret_cast<uv_handle_t*>(&linger_timer_))) close();
      break;
    case State::closed:
      break;
  }
}

// ---- responses ----

void ClientConnection::start_response() {
  Exchange& ex = exchange_;
  ex.keep_alive = llhttp_should_keep_alive(&parser_) != 0 && !ex.upgrade;
  Stats& stats = server_.stats();
  ++stats.requests;
  ++stats.by_route[static_cast<size_t>(ex.route)];
  plan_response();
  if (server_.options().verbose) {
    std::fprintf(stderr, "poolsim %s: %s %s -> %d%s\n", server_.options().id.c_str(),
                 llhttp_method_name(static_cast<llhttp_method_t>(ex.method)), ex.url.c_str(),
                 ex.status, ex.delay_ms > 0 ? " (delayed)" : "");
  }
  if (ex.early_hints) {
    out_ += "HTTP/1.1 103 Early Hints\r\nLink: </poolsim/style.css>; rel=preload; as=style\r\n\r\n";
  }
  if (ex.delay_ms > 0) {
    if (ex.hold) ++stats.holds_started;
    state_ = State::delaying;
    uv_timer_start(&delay_timer_, on_delay_timer_cb, ex.delay_ms, 0);
    return;
  }
  emit_response();
}

void ClientConnection::plan_response() {
  Exchange& ex = exchange_;
  const Options& options = server_.options();
  ex.delay_ms = options.latency_ms;
  ex.content_type = "application/json";
  switch (ex.route) {
    case Route::status:
      ex.content_type = "text/plain";
      if (server_.available()) {
        ex.body = "Traveler server is available.";
      } else {
        ex.status = 503;
        ex.body = "Traveler server is not available.";
      }
      break;
    case Route::activesync:
      plan_activesync();
      break;
    case Route::echo:
      if (ex.method != HTTP_POST && ex.method != HTTP_PUT) {
        ex.status = 405;
        ex.extra_headers = "Allow: POST, PUT\r\n";
        ex.body = "{\"error\":\"method not allowed\"}";
        break;
      }
      ex.body = "{";
      append_json_field(ex.body, "bytes", ex.body_bytes);
      ex.body += ",\"fnv1a64\":\"" + hex64(ex.body_fnv) + "\"}";
      break;
    case Route::blob: {
      if (ex.method != HTTP_GET && ex.method != HTTP_HEAD) {
        ex.status = 405;
        ex.extra_headers = "Allow: GET, HEAD\r\n";
        ex.body = "{\"error\":\"method not allowed\"}";
        break;
      }
      auto size = query_param(ex.query, "size");
      if (!size || !parse_uint(*size, ex.blob_size)) {
        ex.status = 400;
        ex.body = "{\"error\":\"size=N (bytes) is required\"}";
        break;
      }
      auto chunked = query_param(ex.query, "chunked");
      ex.blob = true;
      ex.blob_chunked = chunked && (*chunked == "1" || *chunked == "true");
      ex.content_type = "application/octet-stream";
      ex.extra_headers = "X-Blob-Fnv1a64: " + hex64(server_.blob_fnv(ex.blob_size)) + "\r\n";
      break;
    }
    case Route::early_hints:
      ex.early_hints = ex.http_minor >= 1;  // 1xx must not reach an HTTP/1.0 client
      ex.body = "{\"early_hints\":true}";
      break;
    case Route::available: {
      auto value = query_param(ex.query, "value");
      if (ex.method != HTTP_POST) {
        ex.status = 405;
        ex.extra_headers = "Allow: POST\r\n";
        ex.body = "{\"error\":\"method not allowed\"}";
      } else if (!value || (*value != "0" && *value != "1")) {
        ex.status = 400;
        ex.body = "{\"error\":\"value=0|1 is required\"}";
      } else {
        server_.set_available(*value == "1");
        ex.body = server_.available() ? "{\"available\":true}" : "{\"available\":false}";
      }
      break;
    }
    case Route::stats:
      plan_stats();
      break;
    case Route::owner:
    case Route::assign:
      plan_pool_admin();
      break;
    case Route::availability:
      plan_availability();
      break;
    case Route::headers:
      plan_headers();
      break;
    case Route::status_code: {
      uint64_t code = 0;
      ex.content_type = "text/plain";
      if (!parse_uint(ex.path.substr(sizeof("/poolsim/status/") - 1), code) || code < 200 || code > 599) {
        ex.status = 400;
        ex.body = "status must be 200..599\n";
        break;
      }
      ex.status = static_cast<int>(code);
      ex.body = "status " + std::to_string(code) + "\n";
      break;
    }
    case Route::not_found:
    case Route::bad_request:
      ex.status = 404;
      ex.content_type = "text/plain";
      ex.body = "not found\n";
      break;
  }
}

void ClientConnection::plan_activesync() {
  Exchange& ex = exchange_;
  const Options& options = server_.options();
  std::string user;
  if (auto value = query_param(ex.query, "User")) {
    user = percent_decode(*value);
  } else if (const std::string* auth = ex.header("Authorization"); auth != nullptr && istarts_with(*auth, "Basic ")) {
    std::string_view token = std::string_view(*auth).substr(6);
    while (!token.empty() && token.front() == ' ') token.remove_prefix(1);
    if (auto decoded = base64_decode(token)) user = decoded->substr(0, decoded->find(':'));
  }
  std::string cmd;
  if (auto value = query_param(ex.query, "Cmd")) cmd = percent_decode(*value);

  // Ownership is decided at arrival, before anything can fail: X-Owner is what the table said
  // then, so a test can tell a misroute (X-Owner names a live server other than X-Served-By).
  if (server_.traveler().enabled()) {
    plan_traveler(user);
  } else if (PoolMembership& membership = server_.membership(); membership.enabled()) {
    if (std::string key = normalise_user(user); !key.empty()) {
      ex.extra_headers = "X-Owner: " + header_safe(membership.on_request(key)) + "\r\n";
    }
  }

  if (options.error_rate > 0.0 && server_.draw_injected_error()) {
    ++server_.stats().injected_errors;
    ex.status = 503;
    ex.body = "{\"server\":";
    append_json_string(ex.body, options.id);
    ex.body += ",\"error\":\"injected\"}";
    return;
  }

  uint64_t hold_ms = 0;
  if (auto value = query_param(ex.query, "hold")) {
    if (!parse_duration_ms(percent_decode(*value), hold_ms)) {
      ex.status = 400;
      ex.body = "{\"error\":\"hold must be a duration such as 500ms or 60s\"}";
      return;
    }
  } else if (iequals(cmd, "Ping")) {
    hold_ms = options.ping_hold_ms;
  }
  if (hold_ms > 0) {
    ex.hold = true;
    ex.delay_ms += hold_ms;
  }
  ex.extra_headers += "X-User: " + header_safe(user) + "\r\n";
  ex.body = "{\"server\":";
  append_json_string(ex.body, options.id);
  ex.body += ",\"user\":";
  append_json_string(ex.body, user);
  ex.body += ",\"cmd\":";
  append_json_string(ex.body, cmd);
  ex.body += ",";
  append_json_field(ex.body, "bytes_in", ex.body_bytes);
  ex.body += "}";
}

void ClientConnection::plan_stats() {
  const Stats& stats = server_.stats();
  std::string& body = exchange_.body;
  body = "{\"server\":";
  append_json_string(body, server_.options().id);
  body += server_.available() ? ",\"available\":true," : ",\"available\":false,";
  append_json_field(body, "requests", stats.requests);
  body += ",";
  append_json_field(body, "open_connections", stats.open_connections);
  body += ",";
  append_json_field(body, "total_connections", stats.total_connections);
  body += ",";
  append_json_field(body, "injected_errors", stats.injected_errors);
  body += ",";
  append_json_field(body, "holds_started", stats.holds_started);
  body += ",";
  append_json_field(body, "holds_cancelled", stats.holds_cancelled);
  body += ",";
  append_json_field(body, "bytes_in", stats.bytes_in);
  body += ",";
  append_json_field(body, "bytes_out", stats.bytes_out);
  const PoolMembership& membership = server_.membership();
  const PoolStats& pool = membership.stats();
  body += ",\"availability\":";
  TravelerPool& traveler = server_.traveler();
  body += std::to_string(traveler.enabled() ? traveler.availability() : membership.availability());
  body += ",\"db\":";
  if (membership.enabled() || traveler.enabled()) {
    append_json_string(body, traveler.enabled() ? traveler.db_kind() : membership.db_kind());
  } else {
    body += "null";
  }
  body += membership.db_connected() || traveler.db_connected() ? ",\"db_connected\":true,"
                                                               : ",\"db_connected\":false,";
  append_json_field(body, "db_errors", pool.db_errors);
  body += ",";
  append_json_field(body, "heartbeats", pool.heartbeats);
  body += ",";
  append_json_field(body, "claims", pool.claims);
  body += ",";
  append_json_field(body, "takeovers", pool.takeovers);
  body += ",";
  append_json_field(body, "lost_races", pool.lost_races);
  body += ",";
  append_json_field(body, "assignments", pool.assignments);
  body += ",";
  append_json_field(body, "requests_owned", pool.requests_owned);
  body += ",";
  append_json_field(body, "requests_not_owned", pool.requests_not_owned);
  body += ",";
  append_json_field(body, "requests_unowned", pool.requests_unowned);
  body += ",";
  append_json_field(body, "cached_users", membership.cached_users());
  body += ",\"cached_epoch\":";
  body += std::to_string(membership.cached_epoch());
  if (traveler.enabled()) append_traveler_stats(body);
  body += ",\"by_class\":{";
  for (size_t i = 0; i < kRouteCount; ++i) {
    if (i > 0) body += ",";
    append_json_field(body, route_name(static_cast<Route>(i)), stats.by_route[i]);
  }
  body += "}}";
}

void ClientConnection::plan_pool_admin() {
  Exchange& ex = exchange_;
  PoolMembership& membership = server_.membership();
  bool assign = ex.route == Route::assign;
  auto user = query_param(ex.query, "user");
  auto server = query_param(ex.query, "server");
  std::string key = user ? normalise_user(percent_decode(*user)) : std::string();
  if (server_.traveler().enabled() && ex.method == HTTP_GET && !assign) {
    plan_traveler_owner(key);
    return;
  }
  if (ex.method != (assign ? HTTP_POST : HTTP_GET)) {
    ex.status = 405;
    ex.extra_headers = assign ? "Allow: POST\r\n" : "Allow: GET\r\n";
    ex.body = "{\"error\":\"method not allowed\"}";
    return;
  }
  if (!membership.enabled()) {
    ex.status = 404;
    ex.body = "{\"error\":\"no pool database: start poolsim with --db\"}";
    return;
  }
  if (key.empty() || (assign && !server)) {
    ex.status = 400;
    ex.body = assign ? "{\"error\":\"user=NAME and server=ID (empty: unassign) are required\"}"
                     : "{\"error\":\"user=NAME is required\"}";
    return;
  }
  OwnerRow row;
  bool found = true;
  std::string error;
  bool ok = assign ? membership.assign(key, percent_decode(*server), row, error)
                   : membership.fetch_owner(key, row, found, error);
  if (!ok) {
    ex.status = 503;
    ex.body = "{\"error\":";
    append_json_string(ex.body, error);
    ex.body += "}";
    return;
  }
  ex.body = "{\"user\":";
  append_json_string(ex.body, key);
  ex.body += ",\"owner\":";
  if (found && !row.server_id.empty()) {
    append_json_string(ex.body, row.server_id);
  } else {
    ex.body += "null";
  }
  ex.body += ",\"epoch\":";
  ex.body += found ? std::to_string(row.epoch) : std::string("null");
  ex.body += "}";
}

void ClientConnection::plan_availability() {
  Exchange& ex = exchange_;
  auto value = query_param(ex.query, "value");
  int64_t index = 0;
  if (ex.method != HTTP_POST && ex.method != HTTP_GET) {
    ex.status = 405;
    ex.extra_headers = "Allow: GET, POST\r\n";
    ex.body = "{\"error\":\"method not allowed\"}";
    return;
  }
  TravelerPool& traveler = server_.traveler();
  if (ex.method == HTTP_POST && traveler.enabled() && value && *value == "model") {
    traveler.unpin();
  } else if (ex.method == HTTP_POST) {
    if (!value || !parse_int(*value, index) || index < -200 || index > 100) {
      ex.status = 400;
      ex.body = "{\"error\":\"value=N (-200..100) is required\"}";
      return;
    }
    if (traveler.enabled()) {
      traveler.set_availability(index);
    } else {
      server_.membership().set_availability(index);
    }
  }
  int64_t now = traveler.enabled() ? traveler.availability() : server_.membership().availability();
  ex.body = "{\"availability\":" + std::to_string(now) + "}";
}

void ClientConnection::plan_headers() {
  // Object of arrays keyed by lower-cased name, in first-seen order, so repeated headers
  // (X-Forwarded-For, Via) show every occurrence.
  const Exchange& ex = exchange_;
  std::vector<std::string> names;
  names.reserve(ex.header_count);
  for (size_t i = 0; i < ex.header_count; ++i) {
    std::string name = lowercase(ex.headers[i].name);
    if (std::find(names.begin(), names.end(), name) == names.end()) names.push_back(std::move(name));
  }
  std::string& body = exchange_.body;
  body = "{";
  for (size_t n = 0; n < names.size(); ++n) {
    if (n > 0) body += ",";
    append_json_string(body, names[n]);
    body += ":[";
    bool first = true;
    for (size_t i = 0; i < ex.header_count; ++i) {
      if (!iequals(ex.headers[i].name, names[n])) continue;
      if (!first) body += ",";
      first = false;
      append_json_string(body, ex.headers[i].value);
    }
    body += "]";
  }
  body += "}";
}

void ClientConnection::on_delay_timer() {
  if (state_ != State::delaying) return;
  emit_response();
  settle();
}

void ClientConnection::emit_response() {
  Exchange& ex = exchange_;
  if (ex.blob) {
    append_head(ex.blob_size);
    if (!ex.is_head()) {
      state_ = State::streaming;
      pump_blob();
      return;
    }
  } else {
    append_head(ex.body.size());
    if (!ex.is_head() && body_allowed(ex.status)) out_ += ex.body;
  }
  finish_exchange();
}

void ClientConnection::append_head(uint64_t content_length) {
  const Exchange& ex = exchange_;
  out_ += "HTTP/1.1 ";
  append_uint(out_, static_cast<uint64_t>(ex.status));
  out_ += ' ';
  out_ += reason_phrase(ex.status);
  out_ += "\r\nServer: poolsim\r\nX-Served-By: ";
  out_ += server_.options().id;
  out_ += "\r\n";
  if (ex.content_type != nullptr && body_allowed(ex.status)) {
    out_ += "Content-Type: ";
    out_ += ex.content_type;
    out_ += "\r\n";
  }
  out_ += ex.extra_headers;
  if (ssl_) out_ += tls_details();
  if (ex.blob && ex.blob_chunked) {
    out_ += "Transfer-Encoding: chunked\r\n";
  } else if (body_allowed(ex.status)) {
    out_ += "Content-Length: ";
    append_uint(out_, content_length);
    out_ += "\r\n";
  }
  if (!ex.keep_alive) {
    out_ += "Connection: close\r\n";
  } else if (ex.http_minor == 0) {
    out_ += "Connection: keep-alive\r\n";
  }
  out_ += "\r\n";
}

void ClientConnection::pump_blob() {
  flush();  // the head goes out before the first piece
  Exchange& ex = exchange_;
  while (state_ == State::streaming && inflight_bytes_ < kBlobHighWatermark) {
    uint64_t remaining = ex.blob_size - ex.blob_sent;
    if (remaining == 0) {
      if (ex.blob_chunked) out_ += "0\r\n\r\n";
      finish_exchange();
      return;
    }
    auto n = static_cast<size_t>(std::min<uint64_t>(remaining, PoolServer::kBlobPiece));
    WriteRequest* request = server_.acquire_write();
    uv_buf_t bufs[3];
    unsigned count = 0;
    if (ex.blob_chunked) {
      append_hex(request->data, n);
      request->data += "\r\n";
      bufs[count++] = uv_buf_init(request->data.data(), static_cast<unsigned>(request->data.size()));
    }
    bufs[count++] = uv_buf_init(const_cast<char*>(server_.blob_bytes(ex.blob_sent)), static_cast<unsigned>(n));
    if (ex.blob_chunked) bufs[count++] = uv_buf_init(const_cast<char*>("\r\n"), 2);
    ex.blob_sent += n;
    if (!write(request, bufs, count)) return;
  }
}

void ClientConnection::finish_exchange() {
  ticket_due_ = ssl_ != nullptr && server_.options().tls_late_tickets;
  if (!exchange_.keep_alive) {
    begin_close();
    return;
  }
  state_ = State::reading;
}

// ---- output and lifecycle ----

void ClientConnection::settle() {
  if (state_ == State::reading) {
    parse_buffered();
    if (state_ == State::reading && peer_eof_) {
      begin_close();
      return;
    }
  }
  flush();
  if (ticket_due_ && state_ == State::reading && SSL_version(ssl_) == TLS1_3_VERSION) {
    // Queued behind the response: it reaches the client once the response is complete.
    ticket_due_ = false;
    if (SSL_new_session_ticket(ssl_) == 1) SSL_do_handshake(ssl_);
    ERR_clear_error();
    if (!send_tls_output()) return;
  }
  update_reading();
}

void ClientConnection::update_reading() {
  if (state_ == State::closing || state_ == State::closed) return;  // begin_close decides
  // A client that pipelines faster than it reads its answers is paused, not buffered. While
  // an answer is pending, reading goes on otherwise, so a disconnect cancels a held Ping.
  size_t queued = uv_stream_get_write_queue_size(reinterpret_cast<uv_stream_t*>(&tcp_));
  if (in_.size() >= kMaxBufferedInput || queued >= kMaxQueuedOutput) {
    pause_reading();
  } else {
    resume_reading();
  }
}

void ClientConnection::flush() {
  if (out_.empty() || state_ == State::closed) return;
  WriteRequest* request = server_.acquire_write();
  request->data.swap(out_);
  uv_buf_t buf = uv_buf_init(request->data.data(), static_cast<unsigned>(request->data.size()));
  write(request, &buf, 1);
}

bool ClientConnection::write(WriteRequest* request, const uv_buf_t* bufs, unsigned count) {
  if (!ssl_) return write_raw(request, bufs, count);
  // Encrypt into the request: the plaintext it referenced (pattern, framing) is not needed
  // once OpenSSL has it.
  for (unsigned i = 0; i < count; ++i) {
    if (bufs[i].len == 0) continue;
    ERR_clear_error();
    if (SSL_write(ssl_, bufs[i].base, static_cast<int>(bufs[i].len)) <= 0) {
      server_.release_write(request);
      close();
      return false;
    }
  }
  std::string cipher(BIO_ctrl_pending(tls_out_), '\0');
  int n = BIO_read(tls_out_, cipher.data(), static_cast<int>(cipher.size()));
  cipher.resize(n > 0 ? static_cast<size_t>(n) : 0);
  request->data = std::move(cipher);
  uv_buf_t buf = uv_buf_init(request->data.data(), static_cast<unsigned>(request->data.size()));
  return write_raw(request, &buf, 1);
}

bool ClientConnection::write_raw(WriteRequest* request, const uv_buf_t* bufs, unsigned count) {
  request->req.data = request;
  request->owner = this;
  request->bytes = 0;
  for (unsigned i = 0; i < count; ++i) request->bytes += bufs[i].len;
  int rc = uv_write(&request->req, reinterpret_cast<uv_stream_t*>(&tcp_), bufs, count, on_write_cb);
  if (rc != 0) {
    server_.release_write(request);
    close();
    return false;
  }
  inflight_bytes_ += request->bytes;
  server_.stats().bytes_out += request->bytes;
  return true;
}

void ClientConnection::on_write(WriteRequest* request, int status) {
  inflight_bytes_ -= request->bytes;
  server_.release_write(request);
  if (state_ == State::closed) return;
  if (status < 0) {
    close();
    return;
  }
  if (state_ == State::streaming) pump_blob();
  if (state_ != State::closing && state_ != State::closed) settle();
}

void ClientConnection::begin_close() {
  if (state_ == State::closing || state_ == State::closed) return;
  state_ = State::closing;
  in_.clear();
  uv_timer_stop(&delay_timer_);
  flush();
  if (state_ == State::closed) return;
  if (ssl_ && SSL_is_init_finished(ssl_)) {
    SSL_shutdown(ssl_);  // close_notify: the client knows the response was complete
    if (!send_tls_output()) return;
  }
  shutdown_req_.data = this;
  if (uv_shutdown(&shutdown_req_, reinterpret_cast<uv_stream_t*>(&tcp_), on_shutdown_cb) != 0) {
    close();
    return;
  }
  // Keep reading (and discarding) so unread input does not turn our close into a reset that
  // could destroy the response before the client reads it.
  if (!peer_eof_) resume_reading();
}

void ClientConnection::on_shutdown(int status) {
  if (state_ == State::closed) return;
  if (status < 0 || peer_eof_) {
    close();
    return;
  }
  uv_timer_start(&linger_timer_, on_linger_timer_cb, kLingerMs, 0);
}

void ClientConnection::pause_reading() {
  if (!reading_) return;
  uv_read_stop(reinterpret_cast<uv_stream_t*>(&tcp_));
  reading_ = false;
}

void ClientConnection::resume_reading() {
  if (reading_ || peer_eof_ || state_ == State::closed) return;
  if (uv_read_start(reinterpret_cast<uv_stream_t*>(&tcp_), on_alloc_cb, on_read_cb) == 0) reading_ = true;
}

}  // namespace poolsim
