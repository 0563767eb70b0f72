// Request parsing and validation: limits in the llhttp callbacks, the head's rules at its
// end, strict chunked framing; unit-tested byte by byte in tests/unit/http_request_parser_test.cpp.
#include "proxy/http/request_parser.h"

namespace sprayer::proxy {
namespace {

bool has_whitespace(std::string_view s) {
  for (char c : s)
    if (c == ' ' || c == '\t') return true;
  return false;
}

RejectReason chunk_reason(ChunkScanner::Error error) {
  switch (error) {
    case ChunkScanner::Error::none: return RejectReason::none;
    case ChunkScanner::Error::bad_chunk: return RejectReason::bad_chunk;
    case ChunkScanner::Error::extension_too_large: return RejectReason::chunk_extension_too_large;
    case ChunkScanner::Error::trailer_too_large: return RejectReason::trailer_too_large;
  }
  return RejectReason::bad_chunk;
}

// What llhttp refused by itself, named for the access log; anything else is bad_syntax.
RejectReason llhttp_reason(llhttp_errno_t err) {
  switch (err) {
    case HPE_INVALID_TRANSFER_ENCODING: return RejectReason::bad_transfer_encoding;
    case HPE_UNEXPECTED_CONTENT_LENGTH:
    case HPE_INVALID_CONTENT_LENGTH: return RejectReason::bad_content_length;
    case HPE_INVALID_CHUNK_SIZE: return RejectReason::bad_chunk;
    case HPE_INVALID_METHOD: return RejectReason::bad_method;
    case HPE_INVALID_URL: return RejectReason::bad_target;
    case HPE_INVALID_VERSION: return RejectReason::bad_version;
    case HPE_CR_EXPECTED:
    case HPE_LF_EXPECTED:
    case HPE_STRICT: return RejectReason::bad_line_ending;
    case HPE_INVALID_EOF_STATE: return RejectReason::incomplete_request;
    default: return RejectReason::bad_syntax;
  }
}

}  // namespace

std::string_view to_string(RejectReason reason) {
  switch (reason) {
    case RejectReason::none: return "none";
    case RejectReason::bad_syntax: return "bad_syntax";
    case RejectReason::target_too_long: return "target_too_long";
    case RejectReason::too_many_fields: return "too_many_fields";
    case RejectReason::head_too_large: return "head_too_large";
    case RejectReason::whitespace_in_name: return "whitespace_in_name";
    case RejectReason::empty_field_name: return "empty_field_name";
    case RejectReason::obs_fold: return "obs_fold";
    case RejectReason::http09: return "http09";
    case RejectReason::bad_version: return "bad_version";
    case RejectReason::missing_host: return "missing_host";
    case RejectReason::duplicate_host: return "duplicate_host";
    case RejectReason::bad_host: return "bad_host";
    case RejectReason::connect_method: return "connect_method";
    case RejectReason::host_not_sni: return "host_not_sni";
    case RejectReason::bad_target: return "bad_target";
    case RejectReason::fragment_in_target: return "fragment_in_target";
    case RejectReason::body_too_large: return "body_too_large";
    case RejectReason::bad_transfer_encoding: return "bad_transfer_encoding";
    case RejectReason::bad_chunk: return "bad_chunk";
    case RejectReason::chunk_extension_too_large: return "chunk_extension_too_large";
    case RejectReason::trailer_too_large: return "trailer_too_large";
    case RejectReason::no_host_to_redirect: return "no_host_to_redirect";
    case RejectReason::bad_content_length: return "bad_content_length";
    case RejectReason::bad_method: return "bad_method";
    case RejectReason::bad_line_ending: return "bad_line_ending";
    case RejectReason::incomplete_request: return "incomplete_request";
  }
  return "unknown";
}

const llhttp_settings_t RequestParser::settings_ = [] {
  llhttp_settings_t s;
  llhttp_settings_init(&s);
  s.on_message_begin = &RequestParser::on_message_begin;
  s.on_url = &RequestParser::on_url;
  s.on_header_field = &RequestParser::on_header_field;
  s.on_header_field_complete = &RequestParser::on_header_field_complete;
  s.on_header_value = &RequestParser::on_header_value;
  s.on_header_value_complete = &RequestParser::on_header_value_complete;
  s.on_headers_complete = &RequestParser::on_headers_complete;
  s.on_body = &RequestParser::on_body;
  s.on_message_complete = &RequestParser::on_message_complete;
  return s;
}();

RequestParser::RequestParser(Handler& handler) : handler_(handler) {
  llhttp_init(&parser_, HTTP_REQUEST, &settings_);
  parser_.data = this;
}

RequestParser::Result RequestParser::execute(const char* data, size_t len) {
  // A refusal is final: whatever bytes a caller feeds after it, nothing more comes out (the
  // chunk scanner refuses ahead of llhttp, which would otherwise read on from where it was).
  if (refused_.status != 0) return Result{Outcome::reject, 0, refused_};
  Result result = run(data, len);
  if (result.outcome == Outcome::reject) refused_ = result.reject;
  return result;
}

RequestParser::Result RequestParser::run(const char* data, size_t len) {
  size_t offset = 0;
  for (;;) {
    const char* at = data + offset;
    size_t n = len - offset;
    // The framing bytes are read ahead of llhttp: a bad one refuses the request before llhttp
    // could skip over it. A head's bad line ending is refused once llhttp has read the bytes
    // before it (the same events however the stream is split).
    bool bad_line_ending = false;
    if (head_lines_.active()) {
      const size_t good = head_lines_.scan(at, n);
      bad_line_ending = good < n;
      n = good;
    }
    if (chunks_.active()) {
      ChunkScanner::Scan scan = chunks_.scan(at, n, limits_.max_header_bytes, limits_.max_header_bytes);
      if (scan.error != ChunkScanner::Error::none)
        return Result{Outcome::reject, offset, Reject{400, chunk_reason(scan.error)}};
    }
    input_ = at;
    input_len_ = n;
    llhttp_errno_t err = llhttp_execute(&parser_, at, n);
    input_ = nullptr;
    input_len_ = 0;
    if (err == HPE_OK && bad_line_ending) return Result{Outcome::reject, offset + n, Reject{400, RejectReason::bad_line_ending}};
    if (err == HPE_OK) return Result{Outcome::more, len, {}};
    const char* pos = llhttp_get_error_pos(&parser_);
    const size_t used = offset + (pos ? static_cast<size_t>(pos - at) : n);
    if (err == HPE_PAUSED && body_start_pending_) {
      // The end of a chunked head: its body starts here.
      body_start_pending_ = false;
      llhttp_resume(&parser_);
      offset = used;
      continue;
    }
    if (err == HPE_PAUSED) {
      llhttp_resume(&parser_);
      return Result{Outcome::message_end, used, {}};
    }
    if (err == HPE_PAUSED_UPGRADE) {
      llhttp_resume_after_upgrade(&parser_);
      return Result{Outcome::upgrade, used, {}};
    }
    if (stopped_) return Result{Outcome::stopped, used, {}};
    // A callback that rejected the request recorded why; llhttp reports a rejection from
    // on_headers_complete as HPE_CB_HEADERS_COMPLETE rather than HPE_USER.
    if (reject_.status != 0) return Result{Outcome::reject, used, reject_};
    llhttp_error_ = llhttp_errno_name(err);
    return Result{Outcome::reject, used, Reject{400, llhttp_reason(err)}};
  }
}

int RequestParser::reject(int status, RejectReason reason) {
  reject_ = Reject{status, reason};
  return HPE_USER;
}

int RequestParser::on_message_begin(llhttp_t* p) noexcept {
  RequestParser* self = from(p);
  self->head_.clear();
  self->target_.clear();
  self->host_ = {};
  self->reject_ = {};
  self->llhttp_error_ = "";
  self->body_bytes_ = 0;
  self->value_complete_ = false;
  self->name_seen_ = false;
  self->in_value_ = false;
  self->has_body_ = false;
  self->upgrade_ = false;
  self->keep_alive_ = true;
  self->stopped_ = false;
  self->handler_.on_request_begin();
  return 0;
}

int RequestParser::on_url(llhttp_t* p, const char* at, size_t len) noexcept {
  RequestParser* self = from(p);
  if (self->head_.start().size() + len > self->limits_.max_uri_length)
    return self->reject(414, RejectReason::target_too_long);
  self->head_.append_start(at, len);
  return 0;
}

int RequestParser::on_header_field(llhttp_t* p, const char* at, size_t len) noexcept {
  RequestParser* self = from(p);
  if (p->flags & F_TRAILING) return 0;  // trailers are dropped (and counted by the chunk scanner)
  const RequestLimits& limits = self->limits_;
  if (self->value_complete_ && self->head_.count() >= limits.max_header_count)
    return self->reject(431, RejectReason::too_many_fields);
  self->value_complete_ = false;
  self->in_value_ = false;
  if (len > 0) self->name_seen_ = true;  // llhttp reports ": value" as an empty name
  if (self->head_.bytes() + len > limits.max_header_bytes) return self->reject(431, RejectReason::head_too_large);
  self->head_.append_name(at, len);
  return 0;
}

int RequestParser::on_header_field_complete(llhttp_t* p) noexcept {
  RequestParser* self = from(p);
  if (p->flags & F_TRAILING) return 0;
  if (!self->name_seen_) return self->reject(400, RejectReason::empty_field_name);
  // "Host : x" would be read as another field by some servers: a classic smuggling lever.
  if (self->head_.count() > 0 && has_whitespace(self->head_.name(self->head_.count() - 1)))
    return self->reject(400, RejectReason::whitespace_in_name);
  return 0;
}

int RequestParser::on_header_value(llhttp_t* p, const char* at, size_t len) noexcept {
  RequestParser* self = from(p);
  if (p->flags & F_TRAILING) return 0;
  // ": value": llhttp would hand the value to the previous field.
  if (!self->name_seen_) return self->reject(400, RejectReason::empty_field_name);
  if (self->in_value_) {
    const char* expected = self->value_at_input_end_ ? self->input_ : self->value_end_;
    if (at != expected) return self->reject(400, RejectReason::obs_fold);
  }
  self->in_value_ = true;
  self->value_end_ = at + len;
  self->value_at_input_end_ = self->value_end_ == self->input_ + self->input_len_;
  if (self->head_.bytes() + len > self->limits_.max_header_bytes)
    return self->reject(431, RejectReason::head_too_large);
  self->head_.append_value(at, len);
  return 0;
}

int RequestParser::on_header_value_complete(llhttp_t* p) noexcept {
  RequestParser* self = from(p);
  if (p->flags & F_TRAILING) return 0;
  if (!self->name_seen_) return self->reject(400, RejectReason::empty_field_name);
  self->value_complete_ = true;
  self->name_seen_ = false;
  return 0;
}

int RequestParser::on_headers_complete(llhttp_t* p) noexcept { return from(p)->headers_complete(); }

Reject RequestParser::check_head() {
  if (parser_.http_major != 1) {
    if (parser_.http_major == 0) return {400, RejectReason::http09};
    return {505, RejectReason::bad_version};
  }
  // RFC 9112 6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing, whatever
  // else it says (an HTTP/1.0 recipient would read the chunks as the body).
  if (parser_.http_minor == 0 &&
      ((parser_.flags & F_TRANSFER_ENCODING) || head_.find(FieldKind::transfer_encoding) != HttpHead::npos))
    return {400, RejectReason::bad_transfer_encoding};
  // RFC 9112 6.3: a request whose last coding is not chunked has no length one can trust.
  // llhttp refuses it too, but only after the head was handed on: refused here, before.
  // An empty Transfer-Encoding sets no llhttp flag: the field counts all the same.
  if (((parser_.flags & F_TRANSFER_ENCODING) || head_.find(FieldKind::transfer_encoding) != HttpHead::npos) &&
      !(parser_.flags & F_CHUNKED))
    return {400, RejectReason::bad_transfer_encoding};
  size_t host_index = head_.find(FieldKind::host);
  if (host_index != HttpHead::npos) {
    host_ = head_.value(host_index);
    if (head_.find(FieldKind::host, host_index + 1) != HttpHead::npos) return {400, RejectReason::duplicate_host};
    if (!valid_host(host_)) return {400, RejectReason::bad_host};
  } else if (parser_.http_minor >= 1) {
    return {400, RejectReason::missing_host};
  }
  if (parser_.method == HTTP_CONNECT) return {405, RejectReason::connect_method};
  if (check_host_ && !sni_.empty()) {
    std::string_view host = host_;
    size_t colon = host.rfind(':');
    std::string_view name = colon == std::string_view::npos || host.back() == ']' ? host : host.substr(0, colon);
    if (!iequals(name, sni_)) return {421, RejectReason::host_not_sni};
  }
  // A fragment is for the user agent (RFC 9110 4.2.5) and never sent; one that arrives is a
  // probe. Refused rather than stripped: what reaches the pool is then exactly what came.
  if (head_.start().find('#') != std::string_view::npos) return {400, RejectReason::fragment_in_target};
  std::string_view origin;
  if (check_target(head_.start(), host_, method_name(), origin) == TargetCheck::bad)
    return {400, RejectReason::bad_target};
  target_.assign(origin);
  const bool chunked = (parser_.flags & F_CHUNKED) != 0;
  has_body_ = chunked || ((parser_.flags & F_CONTENT_LENGTH) && parser_.content_length > 0);
  if (limits_.max_body_bytes != 0 && (parser_.flags & F_CONTENT_LENGTH) &&
      parser_.content_length > limits_.max_body_bytes)
    return {413, RejectReason::body_too_large};
  upgrade_ = (parser_.flags & F_UPGRADE) != 0 && head_.find(FieldKind::upgrade) != HttpHead::npos;
  keep_alive_ = llhttp_should_keep_alive(&parser_) != 0;
  return {};
}

int RequestParser::headers_complete() {
  Reject r = check_head();
  if (r.status != 0) return reject(r.status, r.reason);
  Handler::Verdict verdict = handler_.on_request_head();
  if (verdict.kind == Handler::Verdict::Kind::reject) return reject(verdict.reject.status, verdict.reject.reason);
  if (verdict.kind == Handler::Verdict::Kind::stop) {
    stopped_ = true;
    return HPE_USER;
  }
  if ((parser_.flags & F_CHUNKED) && !(parser_.flags & F_SKIPBODY)) {
    // Pause where the body starts, so the chunk scanner starts there.
    chunks_.start();
    body_start_pending_ = true;
    return HPE_PAUSED;
  }
  return 0;
}

int RequestParser::on_body(llhttp_t* p, const char* at, size_t len) noexcept {
  RequestParser* self = from(p);
  // Chunked bodies announce no length: the limit is checked as they arrive.
  self->body_bytes_ += len;
  uint64_t max_body = self->limits_.max_body_bytes;
  if (max_body != 0 && self->body_bytes_ > max_body) return self->reject(413, RejectReason::body_too_large);
  self->handler_.on_request_body(at, len);
  return 0;
}

int RequestParser::on_message_complete(llhttp_t* p) noexcept {
  RequestParser* self = from(p);
  self->head_lines_.start();  // the next request's head
  self->handler_.on_request_complete();
  return HPE_PAUSED;
}

}  // namespace sprayer::proxy
