// The response side of HTTP/1.1 on top of llhttp: the head (bounded), body pieces, interim
// responses, and the end of the response, whatever its framing. No socket, no loop.
#pragma once

#include <llhttp.h>

#include <cstddef>
#include <cstdint>

#include "proxy/http/chunk_scanner.h"
#include "proxy/http/head_scanner.h"
#include "proxy/http/http_head.h"

namespace sprayer::proxy {

class ResponseParser {
 public:
  // What the response head means for the rest of the message.
  enum class HeadAction : uint8_t {
    proceed,   // read the body its framing announces
    no_body,   // none follows whatever the head says (a HEAD request, 204, 304)
    upgrade,   // 101 accepted: the connection becomes a tunnel after the head
    fail,      // not acceptable (a 101 nobody asked for): the connection is unusable
  };
  class Handler {
   public:
    virtual HeadAction on_response_head() = 0;  // final and interim heads alike
    virtual void on_response_body(const char* at, size_t len) = 0;
    virtual void on_response_complete() = 0;    // a final response ended

   protected:
    ~Handler() = default;
  };

  enum class Outcome : uint8_t {
    more,          // every byte consumed, the response is not complete yet
    message_end,   // the response ended at `consumed`
    upgrade,       // a tunnel starts at `consumed`
    error,         // malformed (line ends and chunked framing read strictly), the head over the limit, or
                   // the handler refused it; final: every later call repeats it until begin()
  };
  struct Result {
    Outcome outcome = Outcome::more;
    size_t consumed = 0;
  };

  static constexpr size_t kMaxHeadBytes = 64 * 1024;
  // Each: the chunk extensions of one size line, and a chunked body's trailer section.
  static constexpr uint32_t kMaxChunkLineBytes = 64 * 1024;

  explicit ResponseParser(Handler& handler);
  ResponseParser(const ResponseParser&) = delete;
  ResponseParser& operator=(const ResponseParser&) = delete;

  void begin(bool head_request);  // a new response, for a request with this method
  Result execute(const char* data, size_t len);
  // EOF from the server: true if that ended a response delimited by the close.
  bool finish();

  const HttpHead& head() const { return head_; }
  void clear_head() { head_.clear(); }
  void release() { head_.release(); }
  int status() const { return parser_.status_code; }
  bool chunked() const { return (parser_.flags & F_CHUNKED) != 0; }
  bool has_content_length() const { return (parser_.flags & F_CONTENT_LENGTH) != 0; }
  bool keep_alive() const { return keep_alive_; }
  bool done() const { return done_; }
  const char* error_name() const { return error_name_; }

 private:
  static const llhttp_settings_t settings_;
  static ResponseParser* from(llhttp_t* p) { return static_cast<ResponseParser*>(p->data); }
  static int on_message_begin(llhttp_t* p) noexcept;
  static int on_status(llhttp_t* p, const char* at, size_t len) noexcept;
  static int on_header_field(llhttp_t* p, const char* at, size_t len) noexcept;
  static int on_header_value(llhttp_t* p, const char* at, size_t len) noexcept;
  static int on_headers_complete(llhttp_t* p) noexcept;
  static int on_body(llhttp_t* p, const char* at, size_t len) noexcept;
  static int on_message_complete(llhttp_t* p) noexcept;
  Result run(const char* data, size_t len);
  Result fail(size_t consumed, const char* name);

  Handler& handler_;
  llhttp_t parser_{};
  HttpHead head_;
  bool head_request_ = false;
  bool keep_alive_ = false;
  bool done_ = false;
  bool failed_ = false;
  bool body_start_pending_ = false;  // paused at the end of a chunked head: scan from there
  bool interim_end_pending_ = false;  // paused at the end of a 1xx: scan the next head from there
  HeadScanner head_lines_;
  ChunkScanner chunks_;
  const char* error_name_ = "";
};

}  // namespace sprayer::proxy
