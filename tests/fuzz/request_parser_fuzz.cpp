// libFuzzer target for the request parser: the input is a client's whole byte stream
// (pipelined requests, any bytes), fed the way a client connection feeds it (each read in a
// buffer of its own, the rest after a request's end fed again), once whole and again split:
// at every offset (short streams), one byte at a time, and in pieces whose sizes the fuzzer
// chooses. Invariants trap:
// - the split never changes what the handler sees: the same requests (heads, bodies, ends),
//   the same final outcome and, for a rejected head, the same status and reason (unless a
//   limit was reached: in pieces llhttp hands a field on before it sees a bad byte later);
// - after a reject nothing more comes out of the parser, whatever bytes follow;
// - a completed request's body is exactly what its framing says: Content-Length bytes, the
//   chunks decoded by a strict decoder (http_framing.h), or nothing;
// - a head that passed carries none of the framing the parser exists to refuse (two Hosts,
//   none on HTTP/1.1, Transfer-Encoding with Content-Length or on HTTP/1.0, a fragment);
// - body pieces lie inside the bytes given to that call.
// Input: byte 0 flags (small limits, check_host, a handler that refuses or stops), byte 1
// seeds the piece sizes, the rest is the stream.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/http/http_head.h"
#include "proxy/http/request_parser.h"
#include "tests/fuzz/http_framing.h"

namespace {

using namespace sprayer::proxy;

#define CHECK_OR_TRAP(cond)                                                       \
  do {                                                                            \
    if (!(cond)) {                                                                \
      std::fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond); \
      __builtin_trap();                                                           \
    }                                                                             \
  } while (0)

enum Flags : uint8_t {
  kSmallLimits = 1,
  kCheckHost = 2,
  kRefuseHandler = 4,  // heads whose target starts with /refuse get 403 from the handler
  kStopHandler = 8,    // heads whose target starts with /stop stop the parse
};

struct Request {
  bool head_seen = false;
  std::string head;  // everything the head gave the handler, as text
  bool chunked = false;
  bool has_length = false;
  uint64_t length = 0;
  std::string body;
  bool complete = false;
  size_t start = 0, end = 0;  // offsets in the stream (end: where its message_end said)
};

struct Trace {
  std::vector<Request> requests;
  RequestParser::Outcome outcome = RequestParser::Outcome::more;
  Reject reject;
};

bool starts_with(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

class Driver : public RequestParser::Handler {
 public:
  explicit Driver(uint8_t flags) : flags_(flags) {
    if (flags & kSmallLimits) {
      RequestLimits limits;
      limits.max_uri_length = 64;
      limits.max_header_bytes = 256;
      limits.max_header_count = 8;
      limits.max_body_bytes = 64;
      parser_.set_limits(limits);
    }
    if (flags & kCheckHost) {
      parser_.set_server_name("mail.example.com");
      parser_.set_check_host(true);
    }
  }

  // The stream in pieces of these sizes (the last piece takes the rest).
  Trace run(std::string_view stream, const std::vector<size_t>& sizes) {
    size_t at = 0;
    for (size_t i = 0; at < stream.size(); ++i) {
      size_t n = i < sizes.size() ? std::min(sizes[i], stream.size() - at) : stream.size() - at;
      if (n == 0) n = 1;
      if (!feed(stream, at, n)) return trace_;
      at += n;
    }
    return trace_;
  }

  void on_request_begin() override {
    CHECK_OR_TRAP(!ended_);
    // A request begins only after the previous one ended.
    CHECK_OR_TRAP(trace_.requests.empty() || trace_.requests.back().complete);
    trace_.requests.emplace_back();
    trace_.requests.back().start = request_start_;
  }

  Verdict on_request_head() override {
    CHECK_OR_TRAP(!ended_ && !trace_.requests.empty());
    Request& r = trace_.requests.back();
    CHECK_OR_TRAP(!r.head_seen);
    r.head_seen = true;
    const HttpHead& head = parser_.head();
    r.head = std::string(parser_.method_name()) + " " + std::string(parser_.target()) + " [" +
             std::string(head.start()) + "] host=" + std::string(parser_.host()) + " 1." +
             std::to_string(parser_.http_minor()) + (parser_.chunked() ? " chunked" : "") +
             (parser_.keep_alive() ? "" : " close") + (parser_.upgrade() ? " upgrade" : "") +
             (parser_.has_body() ? " body" : "") + "\n";
    size_t hosts = 0, lengths = 0, codings = 0;
    for (size_t i = 0; i < head.count(); ++i) {
      r.head.append(head.name(i)).append(": ").append(head.value(i)).append("\n");
      if (iequals(head.name(i), "host")) ++hosts;
      if (iequals(head.name(i), "content-length")) {
        ++lengths;
        r.has_length = true;
        r.length = 0;
        for (char c : head.value(i)) r.length = r.length * 10 + uint64_t(c - '0');
      }
      if (iequals(head.name(i), "transfer-encoding")) ++codings;
    }
    // What passed the rules carries none of what they refuse.
    CHECK_OR_TRAP(hosts <= 1);
    CHECK_OR_TRAP(hosts == 1 || parser_.http_minor() == 0);
    CHECK_OR_TRAP(lengths <= 1);
    CHECK_OR_TRAP(!(lengths && codings));
    CHECK_OR_TRAP(!(codings && parser_.http_minor() == 0));
    CHECK_OR_TRAP(!codings || parser_.chunked());
    CHECK_OR_TRAP(head.start().find('#') == std::string_view::npos);
    CHECK_OR_TRAP(parser_.method() != HTTP_CONNECT);
    if (hosts) CHECK_OR_TRAP(valid_host(parser_.host()));
    if (r.has_length) {
      for (char c : head.value(head.find(FieldKind::content_length))) CHECK_OR_TRAP(c >= '0' && c <= '9');
    }
    r.chunked = parser_.chunked();
    if ((flags_ & kRefuseHandler) && starts_with(parser_.target(), "/refuse"))
      return Verdict::refuse(403, RejectReason::bad_target);
    if ((flags_ & kStopHandler) && starts_with(parser_.target(), "/stop")) return Verdict::stop();
    return Verdict::proceed();
  }

  void on_request_body(const char* at, size_t len) override {
    CHECK_OR_TRAP(!ended_ && !trace_.requests.empty() && trace_.requests.back().head_seen);
    CHECK_OR_TRAP(!trace_.requests.back().complete);
    CHECK_OR_TRAP(len > 0 && at >= piece_ && at + len <= piece_ + piece_len_);
    trace_.requests.back().body.append(at, len);
  }

  void on_request_complete() override {
    CHECK_OR_TRAP(!ended_ && !trace_.requests.empty() && trace_.requests.back().head_seen);
    CHECK_OR_TRAP(!trace_.requests.back().complete);
    trace_.requests.back().complete = true;
  }

 private:
  // One read of n bytes at `at`, in a buffer of its own; false once the parse ended for good.
  bool feed(std::string_view stream, size_t at, size_t n) {
    std::unique_ptr<char[]> buffer(new char[n]);
    std::memcpy(buffer.get(), stream.data() + at, n);
    size_t offset = 0;
    for (;;) {
      piece_ = buffer.get() + offset;
      piece_len_ = n - offset;
      RequestParser::Result r = parser_.execute(piece_, piece_len_);
      CHECK_OR_TRAP(r.consumed <= piece_len_);
      switch (r.outcome) {
        case RequestParser::Outcome::more:
          CHECK_OR_TRAP(r.consumed == piece_len_);
          return true;
        case RequestParser::Outcome::message_end:
          CHECK_OR_TRAP(!trace_.requests.empty() && trace_.requests.back().complete);
          offset += r.consumed;
          request_start_ = at + offset;
          trace_.requests.back().end = request_start_;
          if (offset == n) return true;
          continue;
        case RequestParser::Outcome::reject:
          CHECK_OR_TRAP(r.reject.status >= 400 && r.reject.status < 600);
          CHECK_OR_TRAP(r.reject.reason != RejectReason::none);
          end(r);
          // Whatever follows (the connection would not feed it): nothing comes out.
          if (at + n < stream.size()) {
            std::string rest(stream.substr(at + n));
            RequestParser::Result again = parser_.execute(rest.data(), rest.size());
            CHECK_OR_TRAP(again.outcome == RequestParser::Outcome::reject);
          }
          return false;
        case RequestParser::Outcome::upgrade:
        case RequestParser::Outcome::stopped:
          end(r);
          return false;
      }
    }
  }

  void end(const RequestParser::Result& r) {
    trace_.outcome = r.outcome;
    trace_.reject = r.reject;
    ended_ = true;
  }

  uint8_t flags_;
  RequestParser parser_{*this};
  Trace trace_;
  bool ended_ = false;
  size_t request_start_ = 0;
  const char* piece_ = nullptr;
  size_t piece_len_ = 0;
};

void check_framing(std::string_view stream, const Request& r) {
  if (!r.complete) return;
  if (r.chunked) {
    std::string_view bytes = stream.substr(r.start, r.end - r.start);
    // Heads with bare LFs (accepted, RFC 9112 2.2) are not checked here; a CR followed by
    // another byte is refused (finding 5 in bench/results/fuzz-2026-12-01.md, unit-tested).
    const size_t body = sprayer::fuzz::crlf_head_end(bytes);
    if (body == std::string_view::npos) return;
    std::string decoded;
    CHECK_OR_TRAP(sprayer::fuzz::strict_dechunk(bytes.substr(body), decoded));
    CHECK_OR_TRAP(decoded == r.body);
  } else if (r.has_length) {
    CHECK_OR_TRAP(r.body.size() == r.length);
  } else {
    CHECK_OR_TRAP(r.body.empty());
  }
}

bool limit(RejectReason r) {
  return r == RejectReason::head_too_large || r == RejectReason::target_too_long || r == RejectReason::too_many_fields ||
         r == RejectReason::body_too_large;
}

bool body_phase(const Request& r) { return r.head_seen && r.chunked; }

// The same stream, split otherwise: the same events.
void check_same(const Trace& whole, const Trace& split) {
  CHECK_OR_TRAP(whole.outcome == split.outcome);
  CHECK_OR_TRAP(whole.requests.size() == split.requests.size());
  for (size_t i = 0; i < whole.requests.size(); ++i) {
    const Request& a = whole.requests[i];
    const Request& b = split.requests[i];
    const bool last = i + 1 == whole.requests.size();
    CHECK_OR_TRAP(a.head_seen == b.head_seen && a.head == b.head && a.complete == b.complete);
    if (last && whole.outcome == RequestParser::Outcome::reject && body_phase(a)) {
      // The chunk scanner reads the framing ahead of llhttp: a split may let body bytes out
      // before a bad byte further on refuses the request (the exchange is then aborted).
      const std::string& shorter = a.body.size() <= b.body.size() ? a.body : b.body;
      const std::string& longer = a.body.size() <= b.body.size() ? b.body : a.body;
      CHECK_OR_TRAP(longer.compare(0, shorter.size(), shorter) == 0);
    } else {
      CHECK_OR_TRAP(a.body == b.body);
    }
  }
  if (whole.outcome == RequestParser::Outcome::reject) {
    // A rejected head: the same answer. In a chunked body the scanner's look-ahead may find
    // a bad byte before llhttp counts the body over its limit, so only the fact of it holds.
    const bool in_body = !whole.requests.empty() && body_phase(whole.requests.back());
    // A limit counts what llhttp has handed on, which a split hands on sooner: in pieces a
    // long field may go over the limit before llhttp reaches a bad byte further on, which
    // the whole stream shows first (431 there, 400 here). Both refuse.
    if (!in_body && !limit(whole.reject.reason) && !limit(split.reject.reason)) {
      CHECK_OR_TRAP(whole.reject.status == split.reject.status);
      CHECK_OR_TRAP(whole.reject.reason == split.reject.reason);
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const uint8_t flags = data[0];
  uint32_t seed = 0x9e3779b9u ^ (uint32_t(data[1]) << 8) ^ flags;
  std::string_view stream(reinterpret_cast<const char*>(data + 2), size - 2);

  Trace whole = Driver(flags).run(stream, {});
  for (const Request& r : whole.requests) check_framing(stream, r);

  sprayer::fuzz::for_each_split(stream.size(), seed, data[1],
                                [&](const std::vector<size_t>& sizes) { check_same(whole, Driver(flags).run(stream, sizes)); });
  return 0;
}
