// RequestParser byte by byte: events and results for whole streams, pipelined requests, and
// the same stream split at every offset (which must not change anything), limits and the
// framing and smuggling rules.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "proxy/http/request_parser.h"

using namespace sprayer::proxy;

namespace {

// Writes every event as text: "begin", "head GET /t host=h", "body <bytes>" (adjacent pieces
// joined, so a split body reads the same), "complete", "end" (a message_end result),
// "upgrade", "reject 400 reason", "stopped".
class Recorder : public RequestParser::Handler {
 public:
  RequestParser parser{*this};
  std::vector<std::string> events;
  bool stop_at_head = false;

  void on_request_begin() override { events.push_back("begin"); }
  Verdict on_request_head() override {
    events.push_back("head " + std::string(parser.method_name()) + " " + std::string(parser.target()) +
                     " host=" + std::string(parser.host()) + (parser.chunked() ? " chunked" : "") +
                     (parser.keep_alive() ? "" : " close"));
    return stop_at_head ? Verdict::stop() : Verdict::proceed();
  }
  void on_request_body(const char* at, size_t len) override {
    if (events.empty() || events.back().rfind("body ", 0) != 0) events.push_back("body ");
    events.back().append(at, len);
  }
  void on_request_complete() override { events.push_back("complete"); }

  // Feeds one piece the way a connection does (each piece in a buffer of its own): after
  // the end of a request the rest is fed again. False once the parse ended for good.
  bool feed(std::string_view piece) {
    std::string buffer(piece);
    size_t offset = 0;
    for (;;) {
      RequestParser::Result r = parser.execute(buffer.data() + offset, buffer.size() - offset);
      switch (r.outcome) {
        case RequestParser::Outcome::more:
          return true;
        case RequestParser::Outcome::message_end:
          events.push_back("end");
          offset += r.consumed;
          if (offset == buffer.size()) return true;
          continue;
        case RequestParser::Outcome::upgrade:
          events.push_back("upgrade +" + std::to_string(buffer.size() - offset - r.consumed));
          return false;
        case RequestParser::Outcome::reject:
          events.push_back("reject " + std::to_string(r.reject.status) + " " + std::string(to_string(r.reject.reason)));
          return false;
        case RequestParser::Outcome::stopped:
          events.push_back("stopped");
          return false;
      }
    }
  }
};

std::string join(const std::vector<std::string>& events) {
  std::string out;
  for (const auto& e : events) out += e + "\n";
  return out;
}

RequestLimits small_limits() {
  RequestLimits limits;
  limits.max_uri_length = 64;
  limits.max_header_bytes = 256;
  limits.max_header_count = 8;
  limits.max_body_bytes = 32;
  return limits;
}

std::string parse_whole(std::string_view stream, const RequestLimits& limits = small_limits()) {
  Recorder r;
  r.parser.set_limits(limits);
  r.feed(stream);
  return join(r.events);
}

std::string parse_split(std::string_view stream, size_t at, const RequestLimits& limits = small_limits()) {
  Recorder r;
  r.parser.set_limits(limits);
  if (r.feed(stream.substr(0, at))) r.feed(stream.substr(at));
  return join(r.events);
}

// The events for the whole stream, checked to be the same for every split in two.
std::string parse(std::string_view stream, const RequestLimits& limits = small_limits()) {
  std::string whole = parse_whole(stream, limits);
  for (size_t at = 0; at <= stream.size(); ++at) {
    INFO("split at ", at, " of ", stream.size());
    REQUIRE(parse_split(stream, at, limits) == whole);
  }
  return whole;
}

// A stream refused in its body: pieces before the bad byte may reach the handler when it
// comes in parts, but every split ends with the same refusal and never completes.
std::string parse_refused(std::string_view stream) {
  std::string whole = parse_whole(stream);
  std::string last = whole.substr(whole.rfind('\n', whole.size() - 2) + 1);
  for (size_t at = 0; at <= stream.size(); ++at) {
    INFO("split at ", at, " of ", stream.size());
    std::string split = parse_split(stream, at);
    REQUIRE(split.size() >= last.size());
    REQUIRE(split.substr(split.size() - last.size()) == last);
    REQUIRE(split.find("complete") == std::string::npos);
  }
  return whole;
}

}  // namespace

TEST_CASE("a GET gives begin, head, complete and the end of the message") {
  CHECK(parse("GET /traveler?x=1 HTTP/1.1\r\nHost: pool.example\r\nUser-Agent: t\r\n\r\n") ==
        "begin\nhead GET /traveler?x=1 host=pool.example\ncomplete\nend\n");
  CHECK(parse("GET / HTTP/1.0\r\n\r\n") == "begin\nhead GET / host= close\ncomplete\nend\n");
}

TEST_CASE("a parked request's head gives its spare capacity back and reads the same") {
  Recorder r;
  r.parser.set_limits(small_limits());
  // Delivered in small pieces, as a slow client does, so the arena grew in steps.
  std::string request = "POST /as?Cmd=Ping HTTP/1.1\r\nHost: mail.example\r\nUser-Agent: Apple-iPhone\r\n"
                        "Content-Length: 4\r\n\r\nping";
  for (size_t at = 0; at < request.size(); at += 3) REQUIRE(r.feed(std::string_view(request).substr(at, 3)));
  REQUIRE(join(r.events) == "begin\nhead POST /as?Cmd=Ping host=mail.example\nbody ping\ncomplete\nend\n");
  r.parser.compact();
  const HttpHead& head = r.parser.head();
  REQUIRE(head.count() == 3);
  CHECK(head.name(0) == "Host");
  CHECK(head.value(1) == "Apple-iPhone");
  CHECK(head.value(2) == "4");
  CHECK(r.parser.host() == "mail.example");  // re-pointed into the moved arena
  CHECK(r.parser.target() == "/as?Cmd=Ping");
  r.parser.compact();  // twice is harmless
  CHECK(r.parser.host() == "mail.example");
}

TEST_CASE("pipelined requests come out in order with their bodies, whatever the split") {
  std::string stream =
      "GET /a HTTP/1.1\r\nHost: h\r\n\r\n"
      "POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
      "POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
      "GET /d HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n";
  CHECK(parse(stream) ==
        "begin\nhead GET /a host=h\ncomplete\nend\n"
        "begin\nhead POST /b host=h\nbody hello\ncomplete\nend\n"
        "begin\nhead POST /c host=h chunked\nbody abcde\ncomplete\nend\n"
        "begin\nhead GET /d host=h close\ncomplete\nend\n");
}

TEST_CASE("the parse of a stream fed a byte at a time is the same as the whole") {
  std::string stream =
      "POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n"
      "4;name=value\r\nwxyz\r\n0\r\nTrailer-A: 1\r\n\r\nGET /n HTTP/1.1\r\nHost: h\r\n\r\n";
  Recorder r;
  r.parser.set_limits(small_limits());
  for (char c : stream) REQUIRE(r.feed(std::string_view(&c, 1)));
  CHECK(join(r.events) == parse_whole(stream));
  CHECK(join(r.events) ==
        "begin\nhead POST /c host=h chunked\nbody wxyz\ncomplete\nend\nbegin\nhead GET /n host=h\ncomplete\nend\n");
}

TEST_CASE("limits: target, field count, head size, body size") {
  std::string long_target = "GET /" + std::string(80, 'a') + " HTTP/1.1\r\nHost: h\r\n\r\n";
  CHECK(parse(long_target) == "begin\nreject 414 target_too_long\n");
  std::string many = "GET / HTTP/1.1\r\nHost: h\r\n";
  for (int i = 0; i < 9; ++i) many += "X-" + std::to_string(i) + ": v\r\n";
  CHECK(parse(many + "\r\n") == "begin\nreject 431 too_many_fields\n");
  std::string big = "GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + std::string(300, 'b') + "\r\n\r\n";
  CHECK(parse(big) == "begin\nreject 431 head_too_large\n");
  CHECK(parse("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 33\r\n\r\n") == "begin\nreject 413 body_too_large\n");
  std::string chunked = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n21\r\n" +
                        std::string(33, 'x') + "\r\n0\r\n\r\n";
  std::string got = parse_whole(chunked);
  CHECK(got.find("reject 413 body_too_large") != std::string::npos);
  RequestLimits none;
  CHECK(parse_whole(chunked, none).find("complete") != std::string::npos);
}

TEST_CASE("smuggling levers are refused") {
  CHECK(parse("GET / HTTP/1.1\r\nHost: h\r\nX-Folded: a\r\n  b\r\n\r\n") == "begin\nreject 400 obs_fold\n");
  CHECK(parse("GET / HTTP/1.1\r\nHost : h\r\n\r\n").find("reject 400") != std::string::npos);
  CHECK(parse("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n") ==
        "begin\nreject 400 bad_content_length\n");
  CHECK(parse("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd") ==
        "begin\nreject 400 bad_content_length\n");
  CHECK(parse("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n")
            .find("reject 400") != std::string::npos);
  CHECK(parse("GET / HTTP/1.1\nHost: h\n\n") == "begin\nreject 400 bad_syntax\n");
  CHECK(parse("G@T / HTTP/1.1\r\nHost: h\r\n\r\n") == "begin\nreject 400 bad_method\n");
}

TEST_CASE("Host: required on HTTP/1.1, once, and the target must not name another host") {
  CHECK(parse("GET / HTTP/1.1\r\n\r\n") == "begin\nreject 400 missing_host\n");
  CHECK(parse("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n") == "begin\nreject 400 duplicate_host\n");
  CHECK(parse("GET http://other.example/x HTTP/1.1\r\nHost: h\r\n\r\n") == "begin\nreject 400 bad_target\n");
  CHECK(parse("GET http://h/x?y HTTP/1.1\r\nHost: h\r\n\r\n") == "begin\nhead GET /x?y host=h\ncomplete\nend\n");
  CHECK(parse("CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n") == "begin\nreject 405 connect_method\n");
}

TEST_CASE("with check_host the Host must be the TLS server name") {
  Recorder r;
  r.parser.set_limits(small_limits());
  r.parser.set_check_host(true);
  r.parser.set_server_name("pool.example");
  r.feed("GET / HTTP/1.1\r\nHost: POOL.example:443\r\n\r\nGET / HTTP/1.1\r\nHost: other.example\r\n\r\n");
  CHECK(join(r.events) == "begin\nhead GET / host=POOL.example:443\ncomplete\nend\nbegin\nreject 421 host_not_sni\n");
}

TEST_CASE("an upgrade ends the parse where the tunnel starts") {
  CHECK(parse_whole("GET /ws HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\nRAW") ==
        "begin\nhead GET /ws host=h\ncomplete\nend\nupgrade +3\n");
}

TEST_CASE("a handler that stops at the head stops the parse") {
  Recorder r;
  r.stop_at_head = true;
  r.feed("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
  CHECK(join(r.events) == "begin\nhead GET / host=h\nstopped\n");
}

// ---- strict framing (RFC 9112) ----------------------------------------------------------

TEST_CASE("HTTP/1.0 with Transfer-Encoding has faulty framing: 400") {
  CHECK(parse("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n") ==
        "begin\nreject 400 bad_transfer_encoding\n");
  CHECK(parse("POST / HTTP/1.0\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
            .find("reject 400") != std::string::npos);
}

TEST_CASE("Transfer-Encoding without chunked last is refused before the handler sees the head") {
  // RFC 9112 6.3: no trustworthy length. llhttp refuses it only after on_headers_complete,
  // when the connection has already counted the request and started its exchange (found by
  // tests/fuzz/request_parser_fuzz.cpp).
  CHECK(parse("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n40\r\n") ==
        "begin\nreject 400 bad_transfer_encoding\n");
  CHECK(parse("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n") ==
        "begin\nreject 400 bad_transfer_encoding\n");
  CHECK(parse("GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: x\r\n\r\n") ==
        "begin\nreject 400 bad_transfer_encoding\n");
  // An empty value: llhttp sets no flag and would read the request as bodiless.
  CHECK(parse("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: \r\n\r\n5\r\nhello\r\n0\r\n\r\n") ==
        "begin\nreject 400 bad_transfer_encoding\n");
}

TEST_CASE("after a refusal nothing more comes out, whatever bytes follow") {
  // The chunk scanner refuses ahead of llhttp, which has not seen the bad byte: fed on, it
  // read the next bytes as the rest of the chunk (found by tests/fuzz/request_parser_fuzz.cpp).
  Recorder r;
  r.parser.set_limits(small_limits());
  CHECK(r.feed("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nab"));
  CHECK_FALSE(r.feed("cdX"));
  CHECK_FALSE(r.feed("\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n"));
  CHECK(join(r.events) == "begin\nhead POST / host=h chunked\nbody ab\nreject 400 bad_chunk\nreject 400 bad_chunk\n");
}

TEST_CASE("a Host that is not uri-host [ \":\" port ] is refused") {
  for (std::string_view host : {"a@b", "a, b", "a,b", "a b", "[::1", "[::1]x", "h:80x", "h:123456", ":80", "a/b",
                                "a\"b", "[zz::1]", "h%zz"}) {
    INFO(host);
    CHECK(parse("GET / HTTP/1.1\r\nHost: " + std::string(host) + "\r\n\r\n") == "begin\nreject 400 bad_host\n");
  }
  for (std::string_view host : {"pool.example", "pool.example:8443", "10.0.0.1:80", "[::1]:443", "[2001:db8::7]",
                                "xn--bcher-kva.example", "h:", "my_host.internal", "a%20b"}) {
    INFO(host);
    CHECK(parse("GET / HTTP/1.1\r\nHost: " + std::string(host) + "\r\n\r\n").find("head GET / host=") !=
          std::string::npos);
  }
  CHECK(parse("GET / HTTP/1.1\r\nHost:\r\n\r\n") == "begin\nhead GET / host=\ncomplete\nend\n");
}

TEST_CASE("a field line with an empty name is refused") {
  CHECK(parse("GET / HTTP/1.1\r\nHost: h\r\n: value\r\n\r\n") == "begin\nreject 400 empty_field_name\n");
  CHECK(parse("GET / HTTP/1.1\r\n: value\r\nHost: h\r\n\r\n") == "begin\nreject 400 empty_field_name\n");
}

TEST_CASE("a fragment in the request target is refused") {
  CHECK(parse("GET /traveler#frag HTTP/1.1\r\nHost: h\r\n\r\n") == "begin\nreject 400 fragment_in_target\n");
  CHECK(parse("GET /a?b=c#d HTTP/1.1\r\nHost: h\r\n\r\n") == "begin\nreject 400 fragment_in_target\n");
}

TEST_CASE("chunk framing bytes that llhttp would skip are refused") {
  const std::string head = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
  CHECK(parse_refused(head + "5\r\nhelloXX0\r\n\r\n").find("reject 400 bad_chunk") != std::string::npos);
  CHECK(parse_refused(head + "5\rX\nhello\r\n0\r\n\r\n").find("reject 400 bad_chunk") != std::string::npos);
  CHECK(parse_refused(head + "5;a\rXhello\r\n0\r\n\r\n").find("reject 400 bad_chunk") != std::string::npos);
  CHECK(parse_refused(head + "5\r\nhello\r\n0\rX\r\n\r\n").find("reject 400 bad_chunk") != std::string::npos);
  CHECK(parse_refused(head + "5\r\nhello\r\n0\r\n\rX").find("reject 400 bad_chunk") != std::string::npos);
  CHECK(parse_refused(head + "5\nhello\r\n0\r\n\r\n").find("reject 400") != std::string::npos);
  // Nothing of a refused body reaches the handler after the bad byte.
  CHECK(parse_refused(head + "5\r\nhelloXX0\r\n\r\n").find("complete") == std::string::npos);
}

TEST_CASE("chunk extensions and trailers count against the limit") {
  const std::string head = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
  RequestLimits limits;  // defaults: 32 KiB of head, so of extensions and of trailers
  std::string huge = head + "5;" + std::string(1536 * 1024, 'x') + "\r\nhello\r\n0\r\n\r\n";
  CHECK(parse_whole(huge, limits) == "begin\nhead POST / host=h chunked\nreject 400 chunk_extension_too_large\n");
  CHECK(parse_split(huge, head.size() + 40000, limits) == parse_whole(huge, limits));
  std::string many = head;
  for (int i = 0; i < 8000; ++i) many += "1;e=" + std::to_string(i) + "\r\nx\r\n";
  CHECK(parse_whole(many + "0\r\n\r\n", limits).find("reject 400 chunk_extension_too_large") != std::string::npos);
  std::string trailers = head + "0\r\n";
  for (int i = 0; i < 4000; ++i) trailers += "X-T" + std::to_string(i) + ": value\r\n";
  CHECK(parse_whole(trailers + "\r\n", limits).find("reject 400 trailer_too_large") != std::string::npos);
  // Within the limit: accepted; trailers do not join the head.
  Recorder r;
  r.feed(head + "5;a=b\r\nhello\r\n0;last\r\nX-Checksum: 1\r\n\r\n");
  CHECK(join(r.events) == "begin\nhead POST / host=h chunked\nbody hello\ncomplete\nend\n");
  CHECK(r.parser.head().find("x-checksum") == HttpHead::npos);
}

TEST_CASE("in the head a CR is followed by LF: llhttp's loose build would end a line at any byte") {
  CHECK(parse_refused("GET / HTTP/1.1\r\nHost: h\r\n\r\x02").find("reject 400 bad_line_ending") != std::string::npos);
  CHECK(parse_refused("GET / HTTP/1.1\r\nHost: h\r\n\rXGET / HTTP/1.1\r\nHost: h\r\n\r\n").find("reject 400") !=
        std::string::npos);
  CHECK(parse_refused("GET / HTTP/1.1\r\nHost: h\rX-A: b\r\n\r\n").find("reject 400") != std::string::npos);
  CHECK(parse_refused("GET / HTTP/1.1\rXHost: h\r\n\r\n").find("reject 400") != std::string::npos);
  CHECK(parse_refused("\rGET / HTTP/1.1\r\nHost: h\r\n\r\n").find("reject 400") != std::string::npos);
  // Empty lines before a request, a CR inside a body and the next request's head are fine.
  const std::string ok = parse("\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n"
                               "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\na\rb"
                               "GET /next HTTP/1.1\r\nHost: h\r\n\r\n");
  CHECK(ok.find("reject") == std::string::npos);
  size_t completes = 0;
  for (size_t at = ok.find("complete"); at != std::string::npos; at = ok.find("complete", at + 1)) ++completes;
  CHECK(completes == 3);
}
