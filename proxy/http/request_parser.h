// The request side of HTTP/1.1 (RFC 9112) on top of llhttp: the head and body events, the
// limits, and every framing and smuggling rule, with a named reason for each rejection. No
// socket, no loop: bytes in, events and a result out.
#pragma once

#include <llhttp.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "proxy/http/chunk_scanner.h"
#include "proxy/http/head_scanner.h"
#include "proxy/http/http_head.h"

namespace sprayer::proxy {

struct RequestLimits {
  uint32_t max_uri_length = 8 * 1024;
  uint32_t max_header_bytes = 32 * 1024;  // the head; also, each, chunk extensions and trailers
  uint32_t max_header_count = 100;
  uint64_t max_body_bytes = 0;            // 0 = no limit
};

// Why a request was refused; to_string() gives the word the logs show.
enum class RejectReason : uint8_t {
  none,
  bad_syntax,            // llhttp refused the bytes (see RequestParser::llhttp_error())
  target_too_long,
  too_many_fields,
  head_too_large,
  whitespace_in_name,
  empty_field_name,
  obs_fold,
  http09,
  bad_version,
  missing_host,
  duplicate_host,
  bad_host,
  connect_method,
  host_not_sni,
  bad_target,
  fragment_in_target,
  body_too_large,
  bad_transfer_encoding,
  bad_chunk,
  chunk_extension_too_large,
  trailer_too_large,
  no_host_to_redirect,
  bad_content_length,    // llhttp: an invalid Content-Length, or one next to Transfer-Encoding
  bad_method,
  bad_line_ending,
  incomplete_request,    // the connection ended inside a request
};
std::string_view to_string(RejectReason reason);

struct Reject {
  int status = 0;  // 0 = not rejected
  RejectReason reason = RejectReason::none;
};

class RequestParser {
 public:
  // What the owner of the parser (the client connection) does with each request.
  class Handler {
   public:
    // A handler's answer to a head that passed every rule.
    struct Verdict {
      enum class Kind : uint8_t { proceed, reject, stop } kind = Kind::proceed;
      Reject reject;
      static Verdict proceed() { return {}; }
      static Verdict stop() { return {Kind::stop, {}}; }  // the handler answered or closed
      static Verdict refuse(int status, RejectReason reason) { return {Kind::reject, {status, reason}}; }
    };
    virtual void on_request_begin() = 0;
    virtual Verdict on_request_head() = 0;
    virtual void on_request_body(const char* at, size_t len) = 0;
    virtual void on_request_complete() = 0;

   protected:
    ~Handler() = default;
  };

  enum class Outcome : uint8_t {
    more,         // every byte consumed, the request is not complete yet
    message_end,  // a request ended at `consumed`; the rest belongs to the next one
    upgrade,      // the request switched protocols at `consumed` (101 expected)
    reject,       // answer `reject.status` and close
    stopped,      // the handler stopped the parse (it answered or closed)
  };
  struct Result {
    Outcome outcome = Outcome::more;
    size_t consumed = 0;
    Reject reject;
  };

  explicit RequestParser(Handler& handler);
  RequestParser(const RequestParser&) = delete;
  RequestParser& operator=(const RequestParser&) = delete;

  // Read at each call (a reload may change them between requests).
  void set_limits(const RequestLimits& limits) { limits_ = limits; }
  // TLS listeners with check_host: the Host must name the server name the client asked for.
  void set_server_name(std::string_view sni) { sni_ = sni; }
  void set_check_host(bool check) { check_host_ = check; }

  Result execute(const char* data, size_t len);

  // The request being parsed (valid from on_request_head until the next request begins).
  const HttpHead& head() const { return head_; }
  HttpHead& head() { return head_; }
  std::string_view target() const { return target_; }  // origin-form
  std::string_view host() const { return host_; }
  llhttp_method_t method() const { return static_cast<llhttp_method_t>(parser_.method); }
  std::string_view method_name() const { return llhttp_method_name(method()); }
  int http_minor() const { return parser_.http_minor; }
  bool chunked() const { return (parser_.flags & F_CHUNKED) != 0; }
  bool has_body() const { return has_body_; }
  bool upgrade() const { return upgrade_; }  // Upgrade asked for (the handler decides)
  bool keep_alive() const { return keep_alive_; }
  // The llhttp error name of the last bad_syntax rejection, for the debug log.
  const char* llhttp_error() const { return llhttp_error_; }
  // A parked request keeps its head, without the spare capacity (the Host view is re-pointed).
  void compact() {
    head_.shrink();
    size_t host = head_.find(FieldKind::host);
    host_ = host == HttpHead::npos ? std::string_view() : head_.value(host);
    target_.shrink_to_fit();
  }
  // Idle and parked connections: give the head's memory back.
  void release() {
    head_.release();
    std::string().swap(target_);
  }

 private:
  static const llhttp_settings_t settings_;
  static RequestParser* from(llhttp_t* p) { return static_cast<RequestParser*>(p->data); }
  static int on_message_begin(llhttp_t* p) noexcept;
  static int on_url(llhttp_t* p, const char* at, size_t len) noexcept;
  static int on_header_field(llhttp_t* p, const char* at, size_t len) noexcept;
  static int on_header_field_complete(llhttp_t* p) noexcept;
  static int on_header_value(llhttp_t* p, const char* at, size_t len) noexcept;
  static int on_header_value_complete(llhttp_t* p) noexcept;
  static int on_headers_complete(llhttp_t* p) noexcept;
  static int on_body(llhttp_t* p, const char* at, size_t len) noexcept;
  static int on_message_complete(llhttp_t* p) noexcept;
  Result run(const char* data, size_t len);
  int reject(int status, RejectReason reason);
  int headers_complete();
  Reject check_head();

  Handler& handler_;
  llhttp_t parser_{};
  HttpHead head_;
  std::string target_;
  std::string_view host_;
  RequestLimits limits_;
  std::string_view sni_;
  bool check_host_ = false;
  HeadScanner head_lines_;
  ChunkScanner chunks_;
  Reject reject_;
  Reject refused_;  // the refusal execute() returned, repeated by every later call
  const char* llhttp_error_ = "";
  const char* input_ = nullptr;  // the bytes of the current execute() call
  size_t input_len_ = 0;
  uint64_t body_bytes_ = 0;
  bool value_complete_ = false;  // the last header event finished a value
  bool name_seen_ = false;       // the current field line had a name
  bool in_value_ = false;
  // Where the next piece of the current value must start if it is the same line; any other
  // start means llhttp skipped a CRLF: obsolete line folding.
  const char* value_end_ = nullptr;
  bool value_at_input_end_ = false;
  bool has_body_ = false;
  bool upgrade_ = false;
  bool keep_alive_ = true;
  bool body_start_pending_ = false;  // paused at the end of a chunked head: scan from there
  bool stopped_ = false;
};

}  // namespace sprayer::proxy
