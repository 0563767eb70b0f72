// Response parsing for the upstream side; unit-tested in tests/unit/http_response_parser_test.cpp.
#include "proxy/http/response_parser.h"

namespace sprayer::proxy {

const llhttp_settings_t ResponseParser::settings_ = [] {
  llhttp_settings_t s;
  llhttp_settings_init(&s);
  s.on_message_begin = &ResponseParser::on_message_begin;
  s.on_status = &ResponseParser::on_status;
  s.on_header_field = &ResponseParser::on_header_field;
  s.on_header_value = &ResponseParser::on_header_value;
  s.on_headers_complete = &ResponseParser::on_headers_complete;
  s.on_body = &ResponseParser::on_body;
  s.on_message_complete = &ResponseParser::on_message_complete;
  return s;
}();

ResponseParser::ResponseParser(Handler& handler) : handler_(handler) {
  llhttp_init(&parser_, HTTP_RESPONSE, &settings_);
  parser_.data = this;
}

void ResponseParser::begin(bool head_request) {
  head_request_ = head_request;
  keep_alive_ = false;
  done_ = false;
  failed_ = false;
  body_start_pending_ = false;
  interim_end_pending_ = false;
  head_lines_.start();
  chunks_ = ChunkScanner();
  error_name_ = "";
  head_.clear();
  llhttp_init(&parser_, HTTP_RESPONSE, &settings_);
  parser_.data = this;
}

ResponseParser::Result ResponseParser::execute(const char* data, size_t len) {
  // An error is final (the scanners refuse ahead of llhttp, which would read on).
  if (failed_) return Result{Outcome::error, 0};
  Result result = run(data, len);
  failed_ = result.outcome == Outcome::error;
  return result;
}

ResponseParser::Result ResponseParser::run(const char* data, size_t len) {
  size_t offset = 0;
  for (;;) {
    const char* at = data + offset;
    size_t n = len - offset;
    // The head's line ends and a chunked body's framing are read ahead of llhttp, which gets
    // only the bytes before a bad one: the same events however the stream is split, and none
    // from a bad byte on.
    size_t good = head_lines_.active() ? head_lines_.scan(at, n) : n;
    const char* bad = good < n ? "bad_line_ending" : nullptr;
    if (chunks_.active()) {
      ChunkScanner::Scan scan = chunks_.scan(at, good, kMaxChunkLineBytes, kMaxChunkLineBytes);
      if (scan.error != ChunkScanner::Error::none) bad = ChunkScanner::name(scan.error);
      good = scan.good;
    }
    llhttp_errno_t err = llhttp_execute(&parser_, at, good);
    if (err == HPE_OK && bad) return fail(offset + good, bad);
    if (err == HPE_OK) return Result{Outcome::more, len};
    const char* pos = llhttp_get_error_pos(&parser_);
    const size_t consumed = offset + (pos ? static_cast<size_t>(pos - at) : good);
    if (err == HPE_PAUSED && (body_start_pending_ || interim_end_pending_)) {
      // The end of a chunked head (its body starts here) or of an interim response (the next
      // head does): the scanners start here.
      if (body_start_pending_) chunks_.start();
      else head_lines_.start();
      body_start_pending_ = false;
      interim_end_pending_ = false;
      llhttp_resume(&parser_);
      offset = consumed;
      continue;
    }
    if (err == HPE_PAUSED) return Result{Outcome::message_end, consumed};
    if (err == HPE_PAUSED_UPGRADE) return Result{Outcome::upgrade, consumed};
    return fail(consumed, llhttp_errno_name(err));
  }
}

ResponseParser::Result ResponseParser::fail(size_t consumed, const char* name) {
  error_name_ = name;
  return Result{Outcome::error, consumed};
}

bool ResponseParser::finish() {
  // llhttp_finish passes on on_message_complete's pause.
  llhttp_errno_t err = llhttp_finish(&parser_);
  return (err == HPE_OK || err == HPE_PAUSED) && done_;
}

int ResponseParser::on_message_begin(llhttp_t* p) noexcept {
  from(p)->head_.clear();
  return 0;
}

int ResponseParser::on_status(llhttp_t* p, const char* at, size_t len) noexcept {
  from(p)->head_.append_start(at, len);
  return 0;
}

int ResponseParser::on_header_field(llhttp_t* p, const char* at, size_t len) noexcept {
  ResponseParser* self = from(p);
  if (self->head_.bytes() + len > kMaxHeadBytes) return HPE_USER;
  self->head_.append_name(at, len);
  return 0;
}

int ResponseParser::on_header_value(llhttp_t* p, const char* at, size_t len) noexcept {
  ResponseParser* self = from(p);
  if (self->head_.bytes() + len > kMaxHeadBytes) return HPE_USER;
  self->head_.append_value(at, len);
  return 0;
}

int ResponseParser::on_headers_complete(llhttp_t* p) noexcept {
  ResponseParser* self = from(p);
  // status-code is 3DIGIT (RFC 9112 4); llhttp's loose build reads "HTTP/1.1  0" as status 0.
  if (p->status_code < 100) return HPE_USER;
  switch (self->handler_.on_response_head()) {
    case HeadAction::fail: return HPE_USER;
    case HeadAction::upgrade: return 2;
    case HeadAction::no_body: return 1;
    case HeadAction::proceed: break;
  }
  // An interim (1xx) response has no body whatever its fields say (RFC 9110 15.2: llhttp would
  // read one its Content-Length announces); a HEAD response announces a body it does not carry.
  if (p->status_code < 200 || self->head_request_) return 1;
  if (p->flags & F_CHUNKED) {
    // Pause where the body starts, so the chunk scanner starts there.
    self->body_start_pending_ = true;
    return HPE_PAUSED;
  }
  return 0;
}

int ResponseParser::on_body(llhttp_t* p, const char* at, size_t len) noexcept {
  from(p)->handler_.on_response_body(at, len);
  return 0;
}

int ResponseParser::on_message_complete(llhttp_t* p) noexcept {
  ResponseParser* self = from(p);
  if (p->status_code >= 100 && p->status_code < 200 && p->status_code != 101) {
    // An interim response: the final one follows on the same parser.
    self->head_.clear();
    self->interim_end_pending_ = true;
    return HPE_PAUSED;
  }
  self->done_ = true;
  self->keep_alive_ = llhttp_should_keep_alive(p) != 0;
  self->handler_.on_response_complete();
  return HPE_PAUSED;
}

}  // namespace sprayer::proxy
